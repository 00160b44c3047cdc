#!/usr/bin/env node
'use strict';
/**
 * Soak of `nx-open-cache serve` (fs storage): a bounded run of mixed load from wrk (PUTs of fresh
 * 1 KiB and 64 KiB artifacts, GETs of a 1 KiB and a 1 MiB artifact, 16 connections, in 20-second
 * slices), sampling the server's RSS and thread count every 5 s; says whether the RSS stayed flat
 * (the median of the last fifth of the run within 10% of the median of the second fifth: the first
 * fifth is warm-up) and what its peak was.
 *
 *   node benches/serve-soak.js [--minutes 10] [--connections 16]
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

/** @param {number} pid @returns {{rss: number, hwm: number, threads: number} | undefined} MiB */
function sample(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (/** @type {string} */ k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
    return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, threads: kb('Threads') };
  } catch {
    return undefined;
  }
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

async function main() {
  const lua = path.join(base, 'put.lua');
  fs.writeFileSync(lua, LUA);
  const bodies = { put1k: artifact(1024, 'k'), put64k: artifact(64 << 10, 's'), get1m: artifact(1 << 20, 'm') };
  const port = 20000 + Math.floor(Math.random() * 20000);
  const cli = path.join(__dirname, '..', 'lib', 'cli.js');
  const serve = spawn(process.execPath, [cli, 'serve', '--storage', `fs:${path.join(base, 'store')}`, '--listen', `127.0.0.1:${port}`, '--log', 'off', '--max-size', '512MiB'], {
    env: { ...process.env, NX_OPEN_CACHE_SERVER_TOKENS: `soak:read-write:${TOKEN}` },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = () => serve.kill('SIGTERM');
  process.on('SIGINT', () => {
    stop();
    process.exit(130);
  });
  await new Promise((resolve, reject) => {
    serve.stdout.once('data', resolve);
    serve.once('exit', (c) => reject(new Error(`serve exited with ${c} before it listened`)));
  });
  const url = `http://127.0.0.1:${port}`;
  for (const [hash, file] of [['soak-get-1k', bodies.put1k], ['soak-get-1m', bodies.get1m]]) {
    const status = await put(`${url}/v1/cache/${hash}`, file);
    if (status !== 200) {
      stop();
      throw new Error(`could not place the GET object ${hash}: PUT answered ${status}`);
    }
  }
  const pid = /** @type {number} */ (serve.pid);
  /** @type {{t: number, rss: number, threads: number}[]} */
  const samples = [];
  const t0 = Date.now();
  const timer = setInterval(() => {
    const s = sample(pid);
    if (s) samples.push({ t: (Date.now() - t0) / 1000, rss: s.rss, threads: s.threads });
  }, SAMPLE_MS);
  const slices = [
    { name: 'PUT 1 KiB', args: ['-s', lua, url], env: { SOAK_BODY: bodies.put1k } },
    { name: 'GET 1 KiB', args: ['-H', `Authorization: Bearer ${TOKEN}`, `${url}/v1/cache/soak-get-1k`], env: {} },
    { name: 'PUT 64 KiB', args: ['-s', lua, url], env: { SOAK_BODY: bodies.put64k } },
    { name: 'GET 1 MiB', args: ['-H', `Authorization: Bearer ${TOKEN}`, `${url}/v1/cache/soak-get-1m`], env: {} },
  ];
  const deadline = t0 + minutes * 60_000;
  let i = 0;
  /** @type {Record<string, number[]>} */
  const rates = {};
  while (Date.now() < deadline) {
    const slice = slices[i % slices.length];
    const secs = Math.max(1, Math.min(SLICE_S, Math.round((deadline - Date.now()) / 1000)));
    const env = { ...process.env, ...slice.env, SOAK_RUN: `s${process.pid}x${i}`, SOAK_TOKEN: TOKEN };
    const child = spawn('wrk', ['-t', '2', '-c', String(connections), '-d', `${secs}s`, ...slice.args], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    await new Promise((resolve) => child.once('exit', resolve));
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
    (rates[slice.name] ??= []).push(rps);
    i++;
  }
  clearInterval(timer);
  const last = sample(pid);
  stop();
  await new Promise((resolve) => serve.once('exit', resolve));
  fs.rmSync(base, { recursive: true, force: true });

  const n = samples.length;
  if (n < 5) throw new Error(`only ${n} RSS samples: run longer`);
  const warm = samples.slice(Math.floor(n / 5), Math.floor((2 * n) / 5)).map((s) => s.rss);
  const end = samples.slice(Math.floor((4 * n) / 5)).map((s) => s.rss);
  const [early, late] = [median(warm), median(end)];
  const flat = late <= early * 1.1;
  console.log(`serve soak: ${minutes} min, ${connections} connections, ${n} RSS samples every ${SAMPLE_MS / 1000} s`);
  for (const [name, r] of Object.entries(rates)) console.log(`  ${name}: median ${median(r).toFixed(0)} req/s over ${r.length} slices`);
  console.log(`  RSS: min ${Math.min(...samples.map((s) => s.rss)).toFixed(1)} MiB, max ${Math.max(...samples.map((s) => s.rss)).toFixed(1)} MiB, peak (VmHWM) ${last ? last.hwm.toFixed(1) : '?'} MiB; threads max ${Math.max(...samples.map((s) => s.threads))}`);
  console.log(`  RSS median 2nd fifth ${early.toFixed(1)} MiB, last fifth ${late.toFixed(1)} MiB: ${flat ? 'FLAT' : 'GROWING'} (flat: last within 10% of 2nd)`);
  process.exitCode = flat ? 0 : 1;
}

main().catch((e) => {
  console.error(`serve-soak: ${e.message}`);
  fs.rmSync(base, { recursive: true, force: true });
  process.exit(1);
});
