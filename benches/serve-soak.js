#!/usr/bin/env node
'use strict';
/**
 * Soak of `nx-open-cache serve` (fs storage): a bounded run of mixed load from wrk (PUTs of fresh
 * 1 KiB and 64 KiB artifacts, GETs of a 1 KiB and a 1 MiB artifact, 16 connections, in 20-second
 * slices), sampling the server's RSS (anonymous and file-backed), thread count and open
 * descriptors every 5 s; says whether the RSS stayed flat (the median of the last fifth of the run
 * within 10% of the median of the second fifth: the first fifth is warm-up) and what its peak was,
 * and what each kind of slice served: requests, and answers other than 2xx (a GET slice must
 * serve hits only: it fails the run otherwise).
 *
 * The two GET objects stay in the store although retention evicts the least recently accessed
 * objects and fresh PUTs keep coming: the server records a GET's access at most once an hour, so
 * every 5 s the bench sets their mtime (retention's "last access") to now, as the server would
 * after an hour of hits (not the one a slice is serving: a response streamed from a file whose
 * mtime changes is cut, as after a write); before each GET slice it checks they are there
 * (placing one again if not, which is counted and reported).
 *
 *   node benches/serve-soak.js [--minutes 10] [--connections 16] [--entry node|bin] [--samples]
 *
 * --entry bin runs the standalone binary target/release/nx-open-cache-server (`cargo build --release
 * --bin nx-open-cache-server`) instead of `node lib/cli.js serve`, with the same options.
 *
 * --samples also prints every sample (time, RSS, anonymous, file-backed, threads, descriptors).
 *
 * Opt-in (not part of `npm run bench`): it takes the whole run time. Needs wrk (Debian: wrk).
 * Storage is a temp directory with --max-size 512MiB (retention bounds the disk used), removed at
 * the end.
 */
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const MAX_MINUTES = 120;
const SAMPLE_MS = 5000;
const SLICE_S = 20;
const TOKEN = 'soak-bench-token-0123456789abcdef';

/** @param {string} name @param {string} fallback */
function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

const minutes = Number(arg('--minutes', '10'));
const connections = Number(arg('--connections', '16'));
const entry = arg('--entry', 'node');
const SERVER_BIN = path.join(__dirname, '..', 'target', 'release', 'nx-open-cache-server');
if (entry !== 'node' && entry !== 'bin') {
  console.error(`serve-soak: --entry must be node or bin, got ${JSON.stringify(entry)}`);
  process.exit(2);
}
if (entry === 'bin' && !fs.existsSync(SERVER_BIN)) {
  console.error(`serve-soak: --entry bin: ${SERVER_BIN} is missing: run \`cargo build --release --bin nx-open-cache-server\``);
  process.exit(2);
}
if (!(minutes > 0 && minutes <= MAX_MINUTES)) {
  console.error(`serve-soak: --minutes must be a number above 0 and at most ${MAX_MINUTES}, got ${arg('--minutes', '')}`);
  process.exit(2);
}
if (!(Number.isInteger(connections) && connections >= 1 && connections <= 256)) {
  console.error(`serve-soak: --connections must be an integer from 1 to 256, got ${arg('--connections', '')}`);
  process.exit(2);
}
if (spawnSync('wrk', ['--version']).error) {
  console.error('serve-soak: wrk not found (Debian: apt-get install wrk)');
  process.exit(2);
}

const base = fs.mkdtempSync(path.join(os.tmpdir(), 'nx-open-cache-soak-'));
/** Set on SIGINT/SIGTERM (the exit code, 128 + the signal): the run stops, its handler exits. @type {number | undefined} */
let stopping;

/** Removes the run's directory (a failure is reported, never thrown: the exit code stays). */
function removeBase() {
  try {
    fs.rmSync(base, { recursive: true, force: true });
  } catch (e) {
    console.error(`serve-soak: could not remove ${base}: ${/** @type {Error} */ (e).message}`);
  }
}

/**
 * A small valid Nx artifact (tar.gz) with `len` random bytes in it.
 * @param {number} len @param {string} name @returns {string} its path
 */
function artifact(len, name) {
  const d = path.join(base, `a-${name}`);
  fs.mkdirSync(path.join(d, 'dist'), { recursive: true });
  fs.writeFileSync(path.join(d, 'dist', 'blob.bin'), crypto.randomBytes(len));
  fs.writeFileSync(path.join(d, 'terminalOutput'), 'soak\n');
  fs.writeFileSync(path.join(d, 'code'), Buffer.alloc(4));
  const out = path.join(base, `${name}.tgz`);
  const r = spawnSync('tar', ['czf', out, '-C', d, 'terminalOutput', 'code', 'dist']);
  if (r.status !== 0) throw new Error(`tar failed: ${r.stderr}`);
  return out;
}

const LUA = `
local counter = 0
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  local f = assert(io.open(os.getenv("SOAK_BODY"), "rb")); body = f:read("*a"); f:close()
  run = os.getenv("SOAK_RUN")
  hdrs = { ["Content-Length"] = tostring(#body), ["Authorization"] = "Bearer " .. os.getenv("SOAK_TOKEN") }
end
function request()
  counter = counter + 1
  return wrk.format("PUT", "/v1/cache/" .. run .. "-" .. tostring(tid) .. "-" .. tostring(counter), hdrs, body)
end
`;

/**
 * @typedef {{rss: number, hwm: number, anon: number, file: number, threads: number, fds: number}} Sample
 * sizes in MiB
 */

/** @param {number} pid @returns {Sample | undefined} */
function sample(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (/** @type {string} */ k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, anon: kb('RssAnon') / 1024, file: kb('RssFile') / 1024, threads: kb('Threads'), fds };
  } catch {
    return undefined;
  }
}

/**
 * The path of the object file named `hash` below `store` (the fs store's fan-out directories).
 * @param {string} store @param {string} hash @returns {string | undefined}
 */
function findObject(store, hash) {
  for (const a of fs.readdirSync(store)) {
    if (a.length !== 2) continue;
    for (const b of fs.readdirSync(path.join(store, a))) {
      const p = path.join(store, a, b, hash);
      if (fs.existsSync(p)) return p;
    }
  }
  return undefined;
}

/** @param {number[]} a */
const median = (a) => {
  const s = a.slice().sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
};

/** @param {string} url @param {string} file @returns {Promise<number>} */
async function put(url, file) {
  const body = fs.readFileSync(file);
  const r = await fetch(url, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}`, 'content-length': String(body.length) }, body });
  return r.status;
}

/** @param {string} url @returns {Promise<number>} the status of a GET (body read and dropped) */
async function get(url) {
  const r = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
  await r.arrayBuffer();
  return r.status;
}

async function main() {
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let server;
  process.once('exit', () => server?.kill('SIGTERM'));
  const lua = path.join(base, 'put.lua');
  fs.writeFileSync(lua, LUA);
  const bodies = { put1k: artifact(1024, 'k'), put64k: artifact(64 << 10, 's'), get1m: artifact(1 << 20, 'm') };
  const port = 20000 + Math.floor(Math.random() * 20000);
  const cli = path.join(__dirname, '..', 'lib', 'cli.js');
  const [bin, pre] = entry === 'bin' ? [SERVER_BIN, []] : [process.execPath, [cli, 'serve']];
  const serve = spawn(bin, [...pre, '--storage', `fs:${path.join(base, 'store')}`, '--listen', `127.0.0.1:${port}`, '--log', 'off', '--max-size', '512MiB'], {
    env: { ...process.env, NX_OPEN_CACHE_SERVER_TOKENS: `soak:read-write:${TOKEN}` },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  server = serve;
  /** How serve ended, once it has (an `exit` that fired before anyone waits is kept here). @type {string | undefined} */
  let exited;
  const serveExit = new Promise((resolve) =>
    serve.once('exit', (code, signal) => {
      exited = signal ? `signal ${signal}` : `code ${code}`;
      resolve(undefined);
    }),
  );
  /** Fails the run when serve is gone. */
  const alive = () => {
    if (exited) throw new Error(`serve exited (${exited}) at t=${((Date.now() - started) / 1000).toFixed(0)}s`);
  };
  const started = Date.now();
  /** Stops serve and waits for it (at most 10 s, then it is killed with SIGKILL). */
  const stop = async () => {
    if (!exited) serve.kill('SIGTERM');
    await Promise.race([serveExit, new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
    if (!exited) {
      console.error('serve-soak: serve did not stop within 10 s of SIGTERM: killed');
      serve.kill('SIGKILL');
      await Promise.race([serveExit, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
    }
  };
  /** The running wrk, killed with serve on a signal. @type {import('node:child_process').ChildProcess | undefined} */
  let wrk;
  for (const [signal, number] of /** @type {const} */ ([['SIGINT', 2], ['SIGTERM', 15]])) {
    process.on(signal, async () => {
      if (stopping) return;
      stopping = 128 + number;
      wrk?.kill('SIGTERM');
      await stop();
      removeBase();
      process.exit(stopping);
    });
  }
  await new Promise((resolve, reject) => {
    serve.stdout.once('data', resolve);
    serve.once('exit', (c) => reject(new Error(`serve exited with ${c} before it listened`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const store = path.join(base, 'store');
  /** @type {Record<string, {file: string, path?: string}>} */
  const gets = { 'soak-get-1k': { file: bodies.put1k }, 'soak-get-1m': { file: bodies.get1m } };
  for (const [hash, g] of Object.entries(gets)) {
    const status = await put(`${url}/v1/cache/${hash}`, g.file);
    if (status !== 200) {
      await stop();
      throw new Error(`could not place the GET object ${hash}: PUT answered ${status}`);
    }
    g.path = findObject(store, hash);
  }
  let replaced = 0;
  /** The GET object the running slice serves. @type {string | undefined} */
  let serving;
  /** @type {string[]} */
  const notReplaced = [];
  /** Marks the GET objects accessed now (see the module doc). */
  const touch = () => {
    const now = new Date();
    for (const [hash, g] of Object.entries(gets)) {
      // Not while its slice serves it: a response streamed from the file ends with an error
      // when the file's mtime changes under it (the server takes that for a write).
      if (hash === serving) continue;
      try {
        if (g.path) fs.utimesSync(g.path, now, now);
      } catch {
        // evicted all the same: placed again before its next slice
      }
    }
  };
  /** Places a GET object again if it is gone (counted; a failure is reported and its slice runs on). @param {string} hash */
  const keep = async (hash) => {
    const g = gets[hash];
    if ((await get(`${url}/v1/cache/${hash}`)) === 200) return;
    const status = await put(`${url}/v1/cache/${hash}`, g.file);
    if (status !== 200) {
      notReplaced.push(`${hash}: PUT answered ${status}`);
      return;
    }
    replaced++;
    g.path = findObject(store, hash);
  };
  const pid = /** @type {number} */ (serve.pid);
  /** @type {(Sample & {t: number})[]} */
  const samples = [];
  const t0 = Date.now();
  const timer = setInterval(() => {
    const s = sample(pid);
    if (s) samples.push({ t: (Date.now() - t0) / 1000, ...s });
    touch();
  }, SAMPLE_MS);
  const slices = [
    { name: 'PUT 1 KiB', args: ['-s', lua, url], env: { SOAK_BODY: bodies.put1k } },
    { name: 'GET 1 KiB', get: 'soak-get-1k', args: ['-H', `Authorization: Bearer ${TOKEN}`, `${url}/v1/cache/soak-get-1k`], env: {} },
    { name: 'PUT 64 KiB', args: ['-s', lua, url], env: { SOAK_BODY: bodies.put64k } },
    { name: 'GET 1 MiB', get: 'soak-get-1m', args: ['-H', `Authorization: Bearer ${TOKEN}`, `${url}/v1/cache/soak-get-1m`], env: {} },
  ];
  const deadline = t0 + minutes * 60_000;
  let i = 0;
  /** @type {Record<string, number[]>} */
  const rates = {};
  /** @type {Record<string, {requests: number, other: number, errors: number}>} */
  const served = {};
  while (Date.now() < deadline) {
    // Stopping on a signal: its handler stops serve and exits; no new wrk.
    if (stopping) return;
    alive();
    const slice = slices[i % slices.length];
    if (slice.get) await keep(slice.get);
    if (stopping) return;
    serving = slice.get;
    const secs = Math.max(1, Math.min(SLICE_S, Math.round((deadline - Date.now()) / 1000)));
    const env = { ...process.env, ...slice.env, SOAK_RUN: `s${process.pid}x${i}`, SOAK_TOKEN: TOKEN };
    const child = (wrk = spawn('wrk', ['-t', '2', '-c', String(connections), '-d', `${secs}s`, ...slice.args], { env, stdio: ['ignore', 'pipe', 'inherit'] }));
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    await new Promise((resolve) => child.once('exit', resolve));
    if (stopping) return;
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
    (rates[slice.name] ??= []).push(rps);
    const cell = (served[slice.name] ??= { requests: 0, other: 0, errors: 0 });
    const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    if (errs) cell.errors += errs.slice(1).reduce((a, b) => a + Number(b), 0);
    cell.requests += Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
    cell.other += Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
    i++;
  }
  clearInterval(timer);
  if (stopping) return;
  alive();
  const last = sample(pid);
  await stop();

  const n = samples.length;
  if (n < 5) throw new Error(`only ${n} RSS samples: run longer`);
  const warm = samples.slice(Math.floor(n / 5), Math.floor((2 * n) / 5)).map((s) => s.rss);
  const end = samples.slice(Math.floor((4 * n) / 5)).map((s) => s.rss);
  const [early, late] = [median(warm), median(end)];
  const flat = late <= early * 1.1;
  const range = (/** @type {(s: Sample) => number} */ f, digits = 1) =>
    `${Math.min(...samples.map(f)).toFixed(digits)}-${Math.max(...samples.map(f)).toFixed(digits)}`;
  console.log(`serve soak (${entry === 'bin' ? 'nx-open-cache-server' : 'node lib/cli.js serve'}): ${minutes} min, ${connections} connections, ${n} RSS samples every ${SAMPLE_MS / 1000} s; load average at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  let missed = 0;
  for (const [name, r] of Object.entries(rates)) {
    const c = served[name];
    if (name.startsWith('GET')) missed += c.other;
    console.log(`  ${name}: median ${median(r).toFixed(0)} req/s over ${r.length} slices; ${c.requests} requests, ${c.other} answered other than 2xx, ${c.errors} socket errors`);
  }
  console.log(`  GET objects placed again after an eviction: ${replaced}${notReplaced.length ? `; could not be placed again: ${notReplaced.join(', ')}` : ''}`);
  console.log(`  RSS: min ${Math.min(...samples.map((s) => s.rss)).toFixed(1)} MiB, max ${Math.max(...samples.map((s) => s.rss)).toFixed(1)} MiB, peak (VmHWM) ${last ? last.hwm.toFixed(1) : '?'} MiB; anonymous ${range((s) => s.anon)} MiB, file-backed ${range((s) => s.file)} MiB; threads ${range((s) => s.threads, 0)}, descriptors ${range((s) => s.fds, 0)}`);
  console.log(`  RSS median 2nd fifth ${early.toFixed(1)} MiB, last fifth ${late.toFixed(1)} MiB: ${flat ? 'FLAT' : 'GROWING'} (flat: last within 10% of 2nd)`);
  if (missed) console.log(`  FAILED: ${missed} GETs answered other than 2xx (the GET slices must serve hits only)`);
  if (process.argv.includes('--samples')) for (const s of samples) console.log(`  t=${s.t.toFixed(0)}s rss=${s.rss.toFixed(1)} anon=${s.anon.toFixed(1)} file=${s.file.toFixed(1)} threads=${s.threads} fds=${s.fds}`);
  process.exitCode = flat && !missed ? 0 : 1;
  removeBase();
}

main().catch((e) => {
  // Stopping on a signal (serve killed under a request, say): the signal's handler exits.
  if (stopping) return;
  console.error(`serve-soak: ${e.message}`);
  removeBase();
  process.exit(1);
});
