#!/usr/bin/env node
'use strict';
/**
 * One replica vs two on one S3 bucket (moto): GET and PUT throughput and latency of
 * `nx-open-cache serve`, the same load sent to replica A alone, then alternated per request between
 * A and B, in the same run. Also the CPU time each process used during each phase, to show which one
 * is the bottleneck (on an emulator, usually the emulator: moto is one Python process).
 *
 * Run: node benches/replicas.js [--requests 400] [--concurrency 16] [--size 65536]
 * Needs: `node scripts/emulators.js install`; the replicas are target/release/nx-open-cache-server
 * when built, else `node lib/cli.js serve`.
 */

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

const emulators = require('../scripts/emulators.js');
const { serveEnv } = require('../__tests__/helpers/serve-process.js');
const { nxArtifact } = require('../__tests__/helpers/hostile-tar.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const SERVER_BIN = path.join(REPO_ROOT, 'target', 'release', 'nx-open-cache-server');
const SECRET = `bench-${crypto.randomBytes(12).toString('hex')}`;
const START_TIMEOUT_MS = 30_000;

/**
 * A positive integer option `--<name> <n>`; exits naming the bad value otherwise.
 * @param {string} name
 * @param {number} dflt
 */
function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const raw = process.argv[i + 1];
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) {
    console.error(`benches/replicas.js: --${name} ${raw === undefined ? '(missing)' : JSON.stringify(raw)}: want a positive integer`);
    process.exit(2);
  }
  return n;
}
const REQUESTS = arg('requests', 400);
const CONCURRENCY = arg('concurrency', 16);
const SIZE = arg('size', 65536);

/**
 * CPU seconds (user + system) a process has used so far, from /proc (0 where there is none).
 * @param {number} pid
 */
function cpuSeconds(pid) {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

/**
 * Starts one replica on the emulator's bucket.
 * @param {import('../scripts/emulators.js').Emulator} emu
 * @returns {Promise<{ url: string, pid: number, stop: () => void }>}
 */
function startReplica(emu) {
  const useBin = fs.existsSync(SERVER_BIN);
  const args = ['--storage', `s3://${emu.bucket}/bench`, '--s3-endpoint', emu.endpoint, '--s3-force-path-style', '--listen', '127.0.0.1:0', '--log', 'off'];
  const cmd = useBin ? SERVER_BIN : process.execPath;
  const argv = useBin ? args : [path.join(REPO_ROOT, 'lib', 'cli.js'), 'serve', ...args];
  // The caller's environment without cloud credentials, cloud settings or proxies; a credential
  // chain that falls through stays on loopback (object_store ignores AWS_EC2_METADATA_DISABLED).
  const env = serveEnv();
  for (const k of Object.keys(env)) {
    if (/^(AWS_|GOOGLE_|AZURE_|GCE_)/.test(k) || /_proxy$/i.test(k)) delete env[k];
  }
  Object.assign(env, emu.env, {
    NO_PROXY: '127.0.0.1,localhost',
    AWS_METADATA_ENDPOINT: 'http://127.0.0.1:9',
    GCE_METADATA_HOST: '127.0.0.1:9',
    AZURE_MSI_ENDPOINT: 'http://127.0.0.1:9',
    NX_OPEN_CACHE_SERVER_TOKENS: `bench:read-write:${SECRET}`,
  });
  const child = spawn(cmd, argv, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no startup line: ${out}`)); }, START_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (\S+) /.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve({ url: m[1], pid: /** @type {number} */ (child.pid), stop: () => child.kill('SIGTERM') });
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`replica exited ${code}: ${out}`)); });
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

/**
 * @param {string} url
 * @param {'GET' | 'PUT'} method
 * @param {Buffer} [body]
 * @returns {Promise<number>} status
 */
function send(url, method, body) {
  return new Promise((resolve, reject) => {
    /** @type {Record<string, string | number>} */
    const headers = { authorization: `Bearer ${SECRET}` };
    if (body) headers['content-length'] = body.length;
    const req = http.request(url, { method, headers, agent }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => resolve(res.statusCode || 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Runs `n` requests with `CONCURRENCY` in flight; request i goes to urls[i % urls.length].
 * @param {string[]} urls
 * @param {(i: number, base: string) => Promise<number>} one
 * @param {number} want expected status
 */
async function load(urls, one, want) {
  /** @type {number[]} */ const ms = [];
  let next = 0;
  let bad = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < REQUESTS) {
      const i = next++;
      const s = process.hrtime.bigint();
      const status = await one(i, urls[i % urls.length]);
      ms.push(Number(process.hrtime.bigint() - s) / 1e6);
      if (status !== want) bad++;
    }
  }));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  ms.sort((a, b) => a - b);
  const q = (/** @type {number} */ p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
  return { rps: REQUESTS / secs, secs, p50: q(0.5), p99: q(0.99), bad };
}

/**
 * One table row: rate, latency, and the CPU moto and the two replicas used during the phase.
 * @param {string} phase
 * @param {string} label
 * @param {{ rps: number, secs: number, p50: number, p99: number, bad: number }} r
 * @param {number[]} cpu  seconds used by moto, replica A, replica B
 */
function report(phase, label, r, cpu) {
  const pct = (/** @type {number} */ s) => `${Math.round((100 * s) / r.secs)}%`;
  const perReq = (/** @type {number} */ s) => ((1000 * s) / REQUESTS).toFixed(2);
  console.log(`| ${phase} | ${label} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${pct(cpu[0])} | ${pct(cpu[1] + cpu[2])} | ${perReq(cpu[0])} | ${perReq(cpu[1] + cpu[2])} |${r.bad ? ` ${r.bad} unexpected statuses` : ''}`);
}

async function main() {
  emulators.install({ log: () => undefined });
  const emu = await emulators.start('s3');
  /** @type {{ url: string, pid: number, stop: () => void }[]} */ const started = [];
  try {
    started.push(await startReplica(emu));
    started.push(await startReplica(emu));
    const [a, b] = started;
    const body = nxArtifact({ 'dist/out.bin': crypto.randomBytes(SIZE) }, { level: 0 });
    const hashes = Array.from({ length: REQUESTS }, (_, i) => `bench-get-${i}`);
    for (let i = 0; i < hashes.length; i += CONCURRENCY) {
      await Promise.all(hashes.slice(i, i + CONCURRENCY).map((h) => send(`${a.url}/v1/cache/${h}`, 'PUT', body)));
    }
    const one = /** @type {[string, string[]]} */ (['1 replica', [a.url]]);
    const two = /** @type {[string, string[]]} */ (['2 replicas', [a.url, b.url]]);
    // 1, 2, 2, 1: an order effect (a warming emulator, a neighbour's load) shows as a difference
    // between the two runs of one setup.
    const setups = [one, two, two, one];
    // The same objects read and written straight in moto (SigV4-signed by the emulator harness,
    // a new connection per request), no replica: the emulator's own rate, the ceiling of the rows
    // above.
    const direct = 'bench';
    console.log(`moto ${emulators.PIP_PACKAGES.moto.version}, ${fs.existsSync(SERVER_BIN) ? 'nx-open-cache-server' : 'node lib/cli.js serve'} x2, ${REQUESTS} requests, ${CONCURRENCY} in flight, artifact ${body.length} B`);
    console.log('| phase | setup | req/s | p50 ms | p99 ms | moto CPU | replicas CPU | moto CPU ms/req | replicas CPU ms/req |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    for (const phase of ['GET', 'PUT']) {
      for (const [label, urls] of setups) {
        const cpu0 = [emu.pid, a.pid, b.pid].map(cpuSeconds);
        const run = `${phase}-${label.replace(' ', '')}-${crypto.randomBytes(3).toString('hex')}`;
        const r = phase === 'GET'
          ? await load(urls, (i, u) => send(`${u}/v1/cache/${hashes[i]}`, 'GET'), 200)
          : await load(urls, (i, u) => send(`${u}/v1/cache/${run}-${i}`, 'PUT', body), 200);
        const cpu = [emu.pid, a.pid, b.pid].map((p, i) => cpuSeconds(p) - cpu0[i]);
        report(phase, label, r, cpu);
      }
      const cpu0 = [emu.pid, a.pid, b.pid].map(cpuSeconds);
      const run = `${phase}-direct-${crypto.randomBytes(3).toString('hex')}`;
      const r = phase === 'GET'
        ? await load([direct], async (i, u) => ((await emu.getObject(`${u}/${hashes[i]}`)) ? 200 : 404), 200)
        : await load([direct], async (i, u) => { await emu.putObject(`${u}/${run}-${i}`, body); return 200; }, 200);
      report(phase, 'moto alone (no replica)', r, [emu.pid, a.pid, b.pid].map((p, i) => cpuSeconds(p) - cpu0[i]));
    }
  } finally {
    for (const r of started) r.stop();
    agent.destroy();
    await emu.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
