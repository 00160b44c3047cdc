#!/usr/bin/env node
'use strict';
/**
 * `nx-open-cache serve` against nginx on loopback (issue 5: "within 1.3x of nginx on GET, memory flat
 * under sustained load").
 *
 *   node benches/serve.js [--quick] [--out benches/results/serve.md]
 *
 * - The server under test: `node lib/cli.js serve --storage fs:<tmp>/store --listen 127.0.0.1:<port>
 *   --log off` in its own process, one read-write token (NX_OPEN_CACHE_SERVER_TOKENS).
 * - The reference: nginx (benches/nginx.js finds or installs it) with a config of our own: files under
 *   <tmp>/nginx-root/v1/cache/<hash> for GET, WebDAV PUT (dav_methods PUT, create_full_put_path) for
 *   PUT, worker_processes 2, sendfile on, access_log off.
 * - Both serve the same artifact bytes: random bodies generated here, PUT into our server (untimed
 *   seeding) and copied into nginx's root.
 * - The load generator (benches/load.js) is a separate Node process (keep-alive agent, maxSockets =
 *   connections, a fixed number of requests per cell after a few untimed warm-up requests). Every
 *   response's status and length are checked, and the SHA-256 of at least one GET body per cell.
 * - Cells: 1 KiB and 64 KiB GET and PUT at 1, 16 and 64 connections (requests/s, p50, p99);
 *   a 256 MiB artifact GET and PUT at 1 and 4 connections (MB/s = 10^6 bytes/s). PUTs always use
 *   fresh hashes. Each cell runs against our server, then against nginx.
 * - CPU: the server's CPU time per request (ours: the serve process; nginx: master + workers), the
 *   load generator's CPU and the whole machine's busy share, per cell; on 2 CPUs the client's CPU
 *   matters, and this shows when it is the bottleneck.
 * - Small cells run 5 rounds (alternating which server goes first) and report each server's best
 *   round; large cells 2 rounds at 1 connection, 1 at 4.
 * - Memory: VmRSS (and thread count) of the serve process every 250 ms for the whole run; start, max,
 *   end, VmHWM at the end; then a sustained phase on our server alone (64 KiB PUTs, then small GETs,
 *   64 connections) whose first-half and second-half maxima tell whether RSS stays flat.
 * - The servers and the load generator run at niceness -10 when permitted (--no-nice: 0), so that
 *   other jobs on a shared machine disturb the figures less.
 *
 * --quick: a fifth of the requests, a 64 MiB large artifact at 1 connection only (a smoke run); it
 * writes its results only where --out says.
 * Figures are reported, never asserted; the exit status is non-zero only when something is
 * functionally wrong (a server that does not start, a wrong status, length or digest).
 */

const { spawn, fork } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { ensureNginx, version: nginxVersionOf, freePort } = require('./nginx.js');
const { processCpu, processTreeCpu } = require('./cpu.js');
const { exactArtifact, artifactChunks } = require('./validate-artifact.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const KIB = 1024;
const MIB = 1024 * KIB;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const CELL_TIMEOUT_MS = 180_000;
const SAMPLE_MS = 250;
const TOKEN_SECRET = crypto.randomBytes(24).toString('hex');
const TARGET = 1.3;
/** Distinct small artifacts per size, fetched round robin. */
const SMALL_COUNT = 128;

/**
 * Timed requests per small cell (warm-up comes on top), by method, size and connections.
 * @type {Record<'GET' | 'PUT', Record<number, Record<number, number>>>}
 */
const SMALL_REQUESTS = {
  GET: { [KIB]: { 1: 1500, 16: 6000, 64: 6000 }, [64 * KIB]: { 1: 1000, 16: 4000, 64: 4000 } },
  PUT: { [KIB]: { 1: 200, 16: 600, 64: 600 }, [64 * KIB]: { 1: 200, 16: 600, 64: 600 } },
};
/** Rounds per small cell, alternating which server goes first. */
const SMALL_ROUNDS = 5;
/** Small GETs of the final sustained phase (our server alone), for the memory figure. */
const SUSTAINED_REQUESTS = 100000;
/** 64 KiB PUTs (fresh hashes) of the final sustained upload phase, for the memory figure. */
const SUSTAINED_PUTS = 6000;
/** Niceness of the servers and the load generator (when permitted), so that other jobs on a shared machine disturb less. */
const DEFAULT_NICE = -10;
const DEFAULT_OUT = path.join(REPO_ROOT, 'benches', 'results', 'serve.md');

/** @param {string} msg */
function log(msg) {
  console.log(`bench: ${msg}`);
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function parseArgs() {
  const args = process.argv.slice(2);
  const o = { quick: false, out: DEFAULT_OUT, nice: DEFAULT_NICE };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--quick') o.quick = true;
    else if (args[i] === '--no-nice') o.nice = 0;
    else if (args[i] === '--out') {
      const v = args[++i];
      if (!v) throw new Error('serve bench: --out needs a file name');
      o.out = path.resolve(v);
    } else throw new Error(`serve bench: unknown argument ${args[i]} (allowed: --quick, --no-nice, --out <file>)`);
  }
  return o;
}

/**
 * One GET with a fresh connection; resolves with the status (or -1 on a connection error).
 * @param {string} url
 * @returns {Promise<number>}
 */
function probe(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? -1));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(-1));
  });
}

/**
 * @typedef {object} Server
 * @property {string} url
 * @property {number} pid
 * @property {() => number} cpu   CPU seconds of the server's processes so far
 * @property {() => Promise<void>} stop
 * @property {() => void} killSync
 */

/**
 * Waits for a child to answer 200 on `url`, or to exit.
 * @param {import('node:child_process').ChildProcess} child
 * @param {string} url
 * @param {() => string} output what it printed so far (for the error)
 */
async function waitReady(child, url, output) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${url}: the server exited (${child.exitCode ?? child.signalCode}) before answering: ${output().trim()}`);
    }
    if ((await probe(url)) === 200) return;
    await sleep(50);
  }
  throw new Error(`${url}: no 200 within ${START_TIMEOUT_MS} ms: ${output().trim()}`);
}

/**
 * Stops a child with SIGTERM, then SIGKILL (its process group when `group`) after STOP_TIMEOUT_MS.
 * @param {import('node:child_process').ChildProcess} child
 * @param {boolean} group
 */
async function stopChild(child, group) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(STOP_TIMEOUT_MS).then(() => true)]);
  if (timedOut && child.pid !== undefined) {
    try {
      if (group) process.kill(-child.pid, 'SIGKILL');
      else child.kill('SIGKILL');
    } catch {
      // already gone
    }
    await exited;
  }
}

/**
 * A command line run under `nice -n <nice>` (nice execs it: the pid stays the command's) unless nice is 0.
 * @param {number} nice
 * @param {string} bin
 * @param {string[]} args
 * @returns {[string, string[]]}
 */
function niced(nice, bin, args) {
  return nice === 0 ? [bin, args] : ['nice', ['-n', String(nice), bin, ...args]];
}

/**
 * The niceness of a process (field 19 of /proc/<pid>/stat), NaN when unreadable.
 * @param {number} pid
 */
function niceOf(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[16]);
  } catch {
    return NaN;
  }
}

/**
 * `nx-open-cache serve` in its own process, fs storage, one read-write token, request log off.
 * @param {string} storeDir
 * @param {number} nice
 * @returns {Promise<Server & {stderr: () => string}>}
 */
async function startOurs(storeDir, nice) {
  fs.mkdirSync(storeDir, { recursive: true });
  let lastError = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const child = spawn(
      ...niced(nice, process.execPath, [path.join(REPO_ROOT, 'lib', 'cli.js'), 'serve', '--storage', `fs:${storeDir}`, '--listen', `127.0.0.1:${port}`, '--log', 'off']),
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NX_OPEN_CACHE_SERVER_TOKENS: `bench:read-write:${TOKEN_SECRET}` } },
    );
    let out = '';
    child.stdout?.on('data', (c) => (out += c));
    child.stderr?.on('data', (c) => (out += c));
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitReady(child, `${url}/healthz`, () => out);
    } catch (e) {
      lastError = /** @type {Error} */ (e).message;
      await stopChild(child, false);
      continue; // a port taken between freePort() and the bind is worth another try
    }
    const pid = /** @type {number} */ (child.pid);
    return {
      url,
      pid,
      cpu: () => processCpu(pid),
      stop: () => stopChild(child, false),
      killSync: () => {
        if (child.exitCode === null) child.kill('SIGKILL');
      },
      stderr: () => out,
    };
  }
  throw new Error(`could not start nx-open-cache serve: ${lastError}`);
}

/**
 * nginx serving `root` for GET and accepting WebDAV PUTs of new files into it.
 * @param {string} bin
 * @param {string} root
 * @param {string} workDir
 * @param {string} probePath a path under root that exists
 * @param {number} nice
 * @returns {Promise<Server>}
 */
async function startNginxDav(bin, root, workDir, probePath, nice) {
  const w = (/** @type {string} */ f) => path.join(workDir, f);
  fs.mkdirSync(w('tmp/client_body'), { recursive: true });
  let lastError = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const conf = [
      '# nx-open-cache benchmark reference server (generated by benches/serve.js)',
      typeof process.getuid === 'function' && process.getuid() === 0 ? 'user root root;' : '',
      'daemon off;',
      'master_process on;',
      'worker_processes 2;',
      `pid ${w('nginx.pid')};`,
      `error_log ${w('error.log')} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  default_type application/octet-stream;',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  keepalive_timeout 65;',
      '  keepalive_requests 1000000;',
      '  access_log off;',
      // On the same filesystem as the root, so a finished upload is a rename.
      `  client_body_temp_path ${w('tmp/client_body')};`,
      '  client_max_body_size 0;',
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    root ${root};`,
      '    location /v1/cache/ {',
      '      dav_methods PUT;',
      '      create_full_put_path on;',
      '      dav_access user:rw;',
      '    }',
      '  }',
      '}',
      '',
    ].join('\n');
    fs.writeFileSync(w('nginx.conf'), conf);
    const child = spawn(...niced(nice, bin, ['-p', workDir, '-e', w('error.log'), '-c', w('nginx.conf')]), {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true, // its own process group: a last-resort SIGKILL reaches the workers too
    });
    let out = '';
    child.stderr?.on('data', (c) => (out += c));
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitReady(child, url + probePath, () => {
        let tail = '';
        try {
          tail = fs.readFileSync(w('error.log'), 'utf8').split('\n').slice(-5).join('\n');
        } catch {
          // no log yet
        }
        return `${out} ${tail}`;
      });
    } catch (e) {
      lastError = /** @type {Error} */ (e).message;
      await stopChild(child, true);
      continue;
    }
    const pid = /** @type {number} */ (child.pid);
    return {
      url,
      pid,
      cpu: () => processTreeCpu(pid),
      stop: () => stopChild(child, true),
      killSync: () => {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // gone
        }
      },
    };
  }
  throw new Error(`could not start nginx: ${lastError}`);
}

/**
 * Writes `count` artifacts of `size` bytes (valid Nx artifacts of noise: serve stores nothing else) to `srcDir` (the bytes the load generator uploads
 * and our server is seeded with) and copies them under nginx's root.
 * @param {{srcDir: string, nginxCache: string, size: number, count: number, tag: string}} o
 * @returns {{artifacts: import('./load.js').CellSpec['artifacts'] & object[], files: string[]}}
 */
function makeSmall(o) {
  const artifacts = [];
  const files = [];
  for (let i = 0; i < o.count; i++) {
    const bytes = exactArtifact(o.size);
    const hash = `${o.tag}${String(i).padStart(4, '0')}`;
    const file = path.join(o.srcDir, hash);
    fs.writeFileSync(file, bytes);
    fs.writeFileSync(path.join(o.nginxCache, hash), bytes);
    artifacts.push({ hash, length: o.size, sha256: crypto.createHash('sha256').update(bytes).digest('hex') });
    files.push(file);
  }
  return { artifacts, files };
}

/**
 * A large artifact (a valid Nx artifact of noise) written a piece at a time; copied under nginx's root.
 * @param {{srcDir: string, nginxCache: string, mib: number, hash: string}} o
 */
function makeLarge(o) {
  const file = path.join(o.srcDir, o.hash);
  const fd = fs.openSync(file, 'w');
  const h = crypto.createHash('sha256');
  try {
    for (const c of artifactChunks(o.mib * MIB)) {
      h.update(c);
      fs.writeSync(fd, c);
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.copyFileSync(file, path.join(o.nginxCache, o.hash));
  return { artifact: { hash: o.hash, length: o.mib * MIB, sha256: h.digest('hex') }, file };
}

/** @param {number} pid @param {string} field @returns {number} KiB, NaN when unreadable */
function statusKib(pid, field) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+)`));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
function machineJiffies() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = f[3] + (f[4] || 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

/**
 * The forked load generator.
 */
/** @param {number} nice */
function startLoad(nice) {
  const child = fork(path.join(__dirname, 'load.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  if (nice !== 0 && child.pid !== undefined) {
    try {
      os.setPriority(child.pid, nice); // its main thread, where the client runs
    } catch {
      // not permitted: the niceness reported in the results says so
    }
  }
  let nextId = 1;
  /** @type {Map<number, {onStart: () => void, resolve: (r: any) => void, reject: (e: Error) => void}>} */
  const pending = new Map();
  child.on('message', (/** @type {any} */ m) => {
    const p = pending.get(m.id);
    if (!p) return;
    if (m.event === 'start') return p.onStart();
    pending.delete(m.id);
    if (m.error) p.reject(new Error(m.error));
    else p.resolve(m.result);
  });
  child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`the load generator exited (${code ?? signal})`));
    pending.clear();
  });
  return {
    child,
    /**
     * @param {import('./load.js').CellSpec} spec
     * @param {() => void} onStart
     * @returns {Promise<import('./load.js').CellResult>}
     */
    run(spec, onStart) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`cell did not finish within ${CELL_TIMEOUT_MS} ms`));
        }, CELL_TIMEOUT_MS);
        pending.set(id, {
          onStart,
          resolve: (r) => {
            clearTimeout(timer);
            resolve(r);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        child.send({ id, spec });
      });
    },
    stop() {
      if (child.connected) child.send({ exit: true });
      if (child.exitCode === null) setTimeout(() => child.exitCode === null && child.kill('SIGKILL'), 2000).unref();
    },
  };
}

/** @param {number} bytes */
function sizeLabel(bytes) {
  return bytes >= MIB ? `${bytes / MIB} MiB` : `${bytes / KIB} KiB`;
}

/** @param {number} x @param {number} [d] */
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
/** @param {number} x */
const fmtMs = (x) => (!Number.isFinite(x) ? 'n/a' : x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0));

function gitDescribe() {
  const { spawnSync } = require('node:child_process');
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
  return `${pkg.version}${r.status === 0 ? ` (commit ${r.stdout.trim()})` : ''}`;
}

async function main() {
  const o = parseArgs();
  const startedAt = new Date();
  const load0 = os.loadavg();
  const nginxBin = ensureNginx();
  const nginxVersion = nginxVersionOf(nginxBin);
  const oursVersion = gitDescribe();
  const largeMib = o.quick ? 64 : 256;
  const largeConns = o.quick ? [1] : [1, 4];
  const scale = o.quick ? 0.2 : 1;
  log(`${os.cpus().length} CPUs, load average ${load0.map((x) => x.toFixed(2)).join(' ')}; nx-open-cache ${oursVersion}, ${nginxVersion}, node ${process.version}`);

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-serve-bench-'));
  const srcDir = path.join(tmp, 'src');
  const nginxRoot = path.join(tmp, 'nginx-root');
  const nginxCache = path.join(nginxRoot, 'v1', 'cache');
  fs.mkdirSync(srcDir, { recursive: true });
  fs.mkdirSync(nginxCache, { recursive: true });

  /** @type {(Server & {stderr?: () => string}) | undefined} */
  let ours;
  /** @type {Server | undefined} */
  let nginx;
  /** @type {ReturnType<typeof startLoad> | undefined} */
  let load;
  /** @type {NodeJS.Timeout | undefined} */
  let sampler;
  const onExit = () => {
    ours?.killSync();
    nginx?.killSync();
    load?.child.kill('SIGKILL');
  };
  process.on('exit', onExit);
  const t0 = Date.now();
  try {
    // Artifacts.
    /** @type {Record<number, {artifacts: any[], files: string[]}>} */
    const small = {};
    for (const size of [KIB, 64 * KIB]) {
      small[size] = makeSmall({ srcDir, nginxCache, size, count: SMALL_COUNT, tag: `s${size / KIB}k` });
    }
    const large = makeLarge({ srcDir, nginxCache, mib: largeMib, hash: 'large0' });
    log(`artifacts: ${SMALL_COUNT} x 1 KiB, ${SMALL_COUNT} x 64 KiB, 1 x ${largeMib} MiB (Nx artifacts of random bytes) in ${tmp}`);

    // Servers and the load generator.
    ours = await startOurs(path.join(tmp, 'store'), o.nice);
    log(`nx-open-cache serve on ${ours.url} (pid ${ours.pid})`);
    const oursPid = ours.pid;
    /** @type {{t: number, kib: number, threads: number, label: string}[]} */
    const samples = [];
    let memLabel = 'idle';
    const sample = () => {
      const kib = statusKib(oursPid, 'VmRSS');
      const threads = statusKib(oursPid, 'Threads');
      if (Number.isFinite(kib)) samples.push({ t: Date.now() - t0, kib, threads, label: memLabel });
    };
    sample();
    sampler = setInterval(sample, SAMPLE_MS);
    nginx = await startNginxDav(nginxBin, nginxRoot, path.join(tmp, 'nginx'), `/v1/cache/${small[KIB].artifacts[0].hash}`, o.nice);
    log(`nginx on ${nginx.url} (master pid ${nginx.pid})`);
    load = startLoad(o.nice);
    const nices = { ours: niceOf(ours.pid), nginx: niceOf(nginx.pid), load: niceOf(/** @type {number} */ (load.child.pid)) };
    log(`niceness: nx-open-cache ${nices.ours}, nginx ${nices.nginx}, load generator ${nices.load}`);

    // Seed our server with the same bytes (untimed).
    memLabel = 'seed';
    for (const size of [KIB, 64 * KIB]) {
      const s = small[size];
      await load.run(
        { baseUrl: ours.url, token: TOKEN_SECRET, method: 'PUT', connections: 4, requests: s.artifacts.length, warmup: 0, expectStatus: 200, bodies: s.files, hashes: s.artifacts.map((a) => a.hash) },
        () => {},
      );
    }
    await load.run(
      { baseUrl: ours.url, token: TOKEN_SECRET, method: 'PUT', connections: 1, requests: 1, warmup: 0, expectStatus: 200, bodies: [large.file], hashes: [large.artifact.hash] },
      () => {},
    );
    memLabel = 'idle';
    const memAfterSeed = statusKib(oursPid, 'VmRSS');

    /**
     * One measurement of one server in one round.
     * @typedef {object} Run
     * @property {import('./load.js').CellResult} r
     * @property {number} serverCpuS
     * @property {number} machinePct
     */
    /**
     * One cell and one server, over all rounds.
     * @typedef {object} Row
     * @property {string} cell
     * @property {'ours' | 'nginx'} server
     * @property {'GET' | 'PUT'} method
     * @property {boolean} isLarge
     * @property {number} connections
     * @property {Run[]} runs
     * @property {import('./load.js').CellResult} best   the round with the highest throughput
     * @property {number} rps            of the best round
     * @property {number} mbps           of the best round
     * @property {number[]} allRps       every round's requests/s (MB/s for large cells), in run order
     * @property {number} serverCpuUsPerReq  all rounds together
     * @property {number} serverCpuPct       all rounds together, share of one CPU
     * @property {number} clientCpuPct       all rounds together
     * @property {number} machinePct         mean over rounds
     * @property {number} verified
     */
    /** @type {Row[]} */
    const rows = [];
    let cellNo = 0;
    /**
     * Runs a cell `rounds` times against both servers, alternating which goes first.
     * @param {{method: 'GET' | 'PUT', size: number, connections: number, requests: number, warmup: number, isLarge: boolean, verifyEvery: number, rounds: number}} c
     */
    const runCell = async (c) => {
      cellNo++;
      const cell = `${c.method} ${sizeLabel(c.size)} x${c.connections}`;
      /** @type {Record<'ours' | 'nginx', Run[]>} */
      const runs = { ours: [], nginx: [] };
      for (let round = 0; round < c.rounds; round++) {
        /** @type {('ours' | 'nginx')[]} */
        const order = round % 2 === 0 ? ['ours', 'nginx'] : ['nginx', 'ours'];
        for (const which of order) {
          const srv = /** @type {Server} */ (which === 'ours' ? ours : nginx);
          const s = c.isLarge ? { artifacts: [large.artifact], files: [large.file] } : small[c.size];
          /** @type {import('./load.js').CellSpec} */
          const spec = {
            baseUrl: srv.url,
            token: which === 'ours' ? TOKEN_SECRET : null,
            method: c.method,
            connections: c.connections,
            requests: c.requests,
            warmup: c.warmup,
            expectStatus: c.method === 'GET' ? 200 : which === 'ours' ? 200 : 201,
            verifyEvery: c.verifyEvery,
          };
          if (c.method === 'GET') spec.artifacts = s.artifacts;
          else {
            spec.bodies = s.files;
            spec.hashPrefix = `c${cellNo}r${round}${which === 'ours' ? 'o' : 'n'}`;
          }
          let cpu0 = NaN;
          let m0 = machineJiffies();
          const r = await /** @type {ReturnType<typeof startLoad>} */ (load).run(spec, () => {
            cpu0 = srv.cpu();
            m0 = machineJiffies();
            if (which === 'ours') memLabel = `${c.isLarge ? 'large' : 'small'} ${c.method} r${round} ${cell}`;
          });
          const cpu1 = srv.cpu();
          const m1 = machineJiffies();
          memLabel = 'idle';
          const run = { r, serverCpuS: cpu1 - cpu0, machinePct: ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100 * os.cpus().length };
          runs[which].push(run);
          log(
            `${which.padEnd(5)} ${cell.padEnd(18)} r${round} ${fmt(r.requests / r.seconds).padStart(7)} req/s ${fmt(r.bytes / r.seconds / 1e6, 1).padStart(7)} MB/s ` +
              `p50 ${fmtMs(r.p50Ms)} ms p99 ${fmtMs(r.p99Ms)} ms | server CPU ${fmt((run.serverCpuS / r.seconds) * 100)}%, ` +
              `client ${fmt((r.clientCpuS / r.seconds) * 100)}%, machine ${fmt(run.machinePct)}% | ${r.requests} req`,
          );
        }
      }
      for (const which of /** @type {const} */ (['ours', 'nginx'])) {
        const rs = runs[which];
        const thr = (/** @type {Run} */ x) => (c.isLarge ? x.r.bytes / x.r.seconds / 1e6 : x.r.requests / x.r.seconds);
        const best = rs.reduce((a, b) => (thr(b) > thr(a) ? b : a));
        const sum = (/** @type {(x: Run) => number} */ f) => rs.reduce((a, x) => a + f(x), 0);
        const seconds = sum((x) => x.r.seconds);
        rows.push({
          cell,
          server: which,
          method: c.method,
          isLarge: c.isLarge,
          connections: c.connections,
          runs: rs,
          best: best.r,
          rps: best.r.requests / best.r.seconds,
          mbps: best.r.bytes / best.r.seconds / 1e6,
          allRps: rs.map(thr),
          serverCpuUsPerReq: (sum((x) => x.serverCpuS) / sum((x) => x.r.requests)) * 1e6,
          serverCpuPct: (sum((x) => x.serverCpuS) / seconds) * 100,
          clientCpuPct: (sum((x) => x.r.clientCpuS) / seconds) * 100,
          machinePct: sum((x) => x.machinePct) / rs.length,
          verified: sum((x) => x.r.verified),
        });
      }
    };

    const cells = [];
    for (const method of /** @type {const} */ (['GET', 'PUT'])) {
      for (const size of [KIB, 64 * KIB]) {
        for (const connections of [1, 16, 64]) {
          const requests = Math.max(connections * 4, Math.round(SMALL_REQUESTS[method][size][connections] * scale));
          cells.push({ method, size, connections, requests, warmup: Math.max(50, connections * 4), isLarge: false, verifyEvery: 500, rounds: SMALL_ROUNDS });
        }
      }
    }
    for (const method of /** @type {const} */ (['GET', 'PUT'])) {
      for (const connections of largeConns) {
        // GET: one untimed request (its SHA-256 checked) warms the page cache; the timed ones are only
        // length-checked, so that the client's digest does not slow the transfer it measures.
        const requests = method === 'GET' ? (connections === 1 ? 3 : connections * 2) : connections;
        cells.push({ method, size: largeMib * MIB, connections, requests, warmup: method === 'GET' ? 1 : 0, isLarge: true, verifyEvery: 0, rounds: connections === 1 ? 2 : 1 });
      }
    }
    for (const c of cells) await runCell(c);

    // Sustained uploads to our server alone, for the memory figure: 64 KiB PUTs at 64 connections.
    memLabel = 'sustained PUT';
    const sustainedPut = await load.run(
      {
        baseUrl: ours.url,
        token: TOKEN_SECRET,
        method: 'PUT',
        connections: 64,
        requests: Math.round(SUSTAINED_PUTS * scale),
        warmup: 0,
        expectStatus: 200,
        bodies: small[64 * KIB].files,
        hashPrefix: 'sustained',
      },
      () => {},
    );
    memLabel = 'idle';
    sample();
    log(`ours  sustained PUT 64 KiB x64: ${sustainedPut.requests} requests in ${fmt(sustainedPut.seconds, 1)} s (${fmt(sustainedPut.requests / sustainedPut.seconds)} req/s)`);

    // Sustained downloads from our server alone: small GETs (both sizes) at 64 connections.
    const sustainedRequests = Math.round(SUSTAINED_REQUESTS * scale);
    memLabel = 'sustained';
    const sustained = await load.run(
      {
        baseUrl: ours.url,
        token: TOKEN_SECRET,
        method: 'GET',
        connections: 64,
        requests: sustainedRequests,
        warmup: 0,
        expectStatus: 200,
        artifacts: [...small[KIB].artifacts, ...small[64 * KIB].artifacts],
        verifyEvery: 1000,
      },
      () => {},
    );
    memLabel = 'idle';
    log(`ours  sustained GET 1+64 KiB x64: ${sustained.requests} requests in ${fmt(sustained.seconds, 1)} s (${fmt(sustained.requests / sustained.seconds)} req/s)`);
    // One more sample at the very end of the sustained phase.
    sample();

    const memEnd = statusKib(oursPid, 'VmRSS');
    const hwmEnd = statusKib(oursPid, 'VmHWM');
    const threadsEnd = statusKib(oursPid, 'Threads');
    clearInterval(sampler);
    sampler = undefined;
    load.stop();
    load = undefined;
    await ours.stop();
    ours = undefined;
    await nginx.stop();
    nginx = undefined;
    const load1 = os.loadavg();
    const wallS = (Date.now() - t0) / 1000;

    // Memory figures.
    const mib = (/** @type {number} */ kib) => kib / 1024;
    const maxOf = (/** @type {{kib: number}[]} */ xs) => xs.reduce((m, s) => Math.max(m, s.kib), -Infinity);
    const sus = samples.filter((s) => s.label === 'sustained');
    const susPut = samples.filter((s) => s.label === 'sustained PUT');
    const half = Math.floor(sus.length / 2);
    const firstHalfMax = maxOf(sus.slice(0, half));
    const secondHalfMax = maxOf(sus.slice(half));
    const threadsMaxOf = (/** @type {{threads: number}[]} */ xs) => xs.reduce((m, x) => Math.max(m, x.threads), -Infinity);
    const susThreads = [threadsMaxOf(sus.slice(0, half)), threadsMaxOf(sus.slice(half))];
    /** Max VmRSS per small cell of `method`, in run order. @param {string} method */
    const cellMax = (method) =>
      rows
        .filter((r) => r.server === 'ours' && !r.isLarge && r.method === method)
        .map((r) => ({ cell: r.cell, kib: maxOf(samples.filter((s) => s.label.startsWith('small ') && s.label.endsWith(` ${r.cell}`))) }));
    const mem = {
      start: samples.length ? samples[0].kib : NaN,
      afterSeed: memAfterSeed,
      max: maxOf(samples),
      end: memEnd,
      hwm: hwmEnd,
      n: samples.length,
      susN: sus.length,
      putFirstMax: maxOf(susPut.slice(0, Math.floor(susPut.length / 2))),
      putSecondMax: maxOf(susPut.slice(Math.floor(susPut.length / 2))),
      putN: susPut.length,
      firstHalfMax,
      secondHalfMax,
      getCells: cellMax('GET'),
      putCells: cellMax('PUT'),
      largeMax: maxOf(samples.filter((s) => s.label.startsWith('large'))),
      threadsStart: samples.length ? samples[0].threads : NaN,
      threadsMax: samples.reduce((m, x) => Math.max(m, x.threads), -Infinity),
      threadsEnd,
    };
    // Flat: the second half of the sustained load peaks no more than max(2 MiB, 5%) above its first half.
    const flatMargin = Math.max(2048, firstHalfMax * 0.05);
    /** @type {boolean | undefined} undefined: too few samples to tell */
    const flat = sus.length >= 4 ? secondHalfMax <= firstHalfMax + flatMargin : undefined;
    const flatWord = flat === undefined ? 'too short to tell' : flat ? 'flat' : 'not flat';

    // Ratios: ours/nginx throughput (best round's requests/s for small cells, MB/s for large ones):
    // 1.00 = parity, higher is better for ours; the GET target "within 1.3x" is ours/nginx >= 1/1.3.
    // Latency and CPU ratios are ours/nginx: lower is better for ours.
    const ratios = [];
    for (let i = 0; i < rows.length; i += 2) {
      const a = rows[i];
      const b = rows[i + 1];
      const thr = a.isLarge ? a.mbps / b.mbps : a.rps / b.rps;
      const p99 = a.best.p99Ms / b.best.p99Ms;
      ratios.push({
        cell: a.cell,
        method: a.method,
        isLarge: a.isLarge,
        thr,
        p50: a.best.p50Ms / b.best.p50Ms,
        p99,
        cpu: a.serverCpuUsPerReq / b.serverCpuUsPerReq,
        met: a.method === 'GET' ? (thr >= 1 / TARGET ? 'yes' : 'no') : '-',
        p99met: a.method === 'GET' ? (p99 <= TARGET ? 'yes' : 'no') : '-',
      });
    }

    // Output.
    const table = [
      '| cell | server | req/s (best) | MB/s (best) | every round | p50 ms | p99 ms | first byte p50 ms | server CPU µs/req | server CPU % | client CPU % | machine busy % |',
      '|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${r.cell} | ${r.server === 'ours' ? 'nx-open-cache' : 'nginx'} | ${fmt(r.rps, r.isLarge ? 2 : 0)} | ${fmt(r.mbps, 1)} | ` +
          `${r.allRps.map((x) => fmt(x)).join(' / ')}${r.isLarge ? ' MB/s' : ''} | ${fmtMs(r.best.p50Ms)} | ${fmtMs(r.best.p99Ms)} | ${fmtMs(r.best.ttfbP50Ms)} | ` +
          `${fmt(r.serverCpuUsPerReq)} | ${fmt(r.serverCpuPct)} | ${fmt(r.clientCpuPct)} | ${fmt(r.machinePct)} |`,
      ),
    ].join('\n');
    const ratioTable = [
      '| cell | throughput ours/nginx | p50 ours/nginx | p99 ours/nginx | server CPU per request ours/nginx | GET within 1.3x (throughput) | GET within 1.3x (p99) |',
      '|---|---:|---:|---:|---:|---|---|',
      ...ratios.map((x) => `| ${x.cell} | ${fmt(x.thr, 2)} | ${fmt(x.p50, 2)} | ${fmt(x.p99, 2)} | ${fmt(x.cpu, 2)} | ${x.met} | ${x.p99met} |`),
    ].join('\n');
    const getRatios = ratios.filter((x) => x.method === 'GET');
    const getMet = getRatios.filter((x) => x.met === 'yes').length;
    const p99Met = getRatios.filter((x) => x.p99met === 'yes').length;
    const perCell = (/** @type {{cell: string, kib: number}[]} */ xs) => xs.map((x) => `${x.cell.replace(/^(GET|PUT) /, '')} ${fmt(mib(x.kib), 1)}`).join(', ');
    const memText = [
      `- VmRSS of the serve process, sampled every ${SAMPLE_MS} ms over the whole run (${mem.n} samples, ${fmt(wallS)} s): start ${fmt(mib(mem.start), 1)} MiB, ` +
        `after seeding ${fmt(mib(mem.afterSeed), 1)} MiB, max ${fmt(mib(mem.max), 1)} MiB, end ${fmt(mib(mem.end), 1)} MiB; VmHWM at the end ${fmt(mib(mem.hwm), 1)} MiB.`,
      `- Sustained load at the end (${sustained.requests} small GETs, 1 and 64 KiB, 64 connections, ${fmt(sustained.seconds, 1)} s, ${mem.susN} samples): ` +
        `max ${fmt(mib(firstHalfMax), 1)} MiB in the first half, ${fmt(mib(secondHalfMax), 1)} MiB in the second half (threads at most ${susThreads[0]}, then ${susThreads[1]}): **${flatWord}** ` +
        `(flat = second-half max at most max(2 MiB, 5%) above the first-half max).`,
      `- Sustained uploads before it (${sustainedPut.requests} PUTs of 64 KiB, fresh hashes, 64 connections, ${fmt(sustainedPut.seconds, 1)} s, ${mem.putN} samples): ` +
        `max ${fmt(mib(mem.putFirstMax), 1)} MiB in the first half, ${fmt(mib(mem.putSecondMax), 1)} MiB in the second half.`,
      `- Max VmRSS (MiB) per cell, in run order: small GETs ${perCell(mem.getCells)}; small PUTs ${perCell(mem.putCells)}; ` +
        `during the large (${largeMib} MiB) cells: ${fmt(mib(mem.largeMax), 1)} MiB.`,
      `- Threads of the serve process: ${mem.threadsStart} at start, at most ${mem.threadsMax} (sampled), ${mem.threadsEnd} at the end.`,
    ].join('\n');

    console.log('');
    console.log(table);
    console.log('');
    console.log(ratioTable);
    console.log('');
    console.log(memText);
    console.log(`\nGET cells within 1.3x of nginx: ${getMet} of ${getRatios.length} on throughput, ${p99Met} of ${getRatios.length} on p99. Whole bench ${fmt(wallS)} s, load average ${load1.map((x) => x.toFixed(2)).join(' ')} at the end.`);

    const cmd = `node benches/serve.js${o.quick ? ' --quick' : ''}`;
    const counts = (/** @type {'GET' | 'PUT'} */ m, /** @type {number} */ size) =>
      [1, 16, 64].map((c) => Math.max(c * 4, Math.round(SMALL_REQUESTS[m][size][c] * scale))).join('/');
    const md = `## Server: \`nx-open-cache serve\` vs nginx (\`benches/serve.js\`)

Command: \`${cmd}\`${o.quick ? ' (smoke run: a fifth of the requests, a 64 MiB large artifact, 1 connection)' : ''}.

- Date: ${startedAt.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}
- Machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() || 'unknown'}), ${fmt(os.totalmem() / 2 ** 30, 1)} GiB memory; Linux ${os.release()} ${os.arch()}
- Load average (1, 5, 15 min): ${load0.map((x) => x.toFixed(2)).join(' ')} at the start, ${load1.map((x) => x.toFixed(2)).join(' ')} at the end; whole bench ${fmt(wallS)} s
- nx-open-cache ${oursVersion}, ${nginxVersion}, Node ${process.version}
- Niceness (\`--no-nice\` keeps 0): nx-open-cache ${nices.ours}, nginx ${nices.nginx}, load generator ${nices.load} (raised priority, so that other jobs on a shared machine disturb the bench less)

### Setup

Both servers run on 127.0.0.1 and serve the same random artifact bytes: ${SMALL_COUNT} of 1 KiB, ${SMALL_COUNT} of 64 KiB, one of
${largeMib} MiB. **nx-open-cache**: \`node lib/cli.js serve --storage fs:<tmp>/store --listen 127.0.0.1:<port> --log off\` in its own
process, one read-write token from \`NX_OPEN_CACHE_SERVER_TOKENS\` (every request carries it), seeded through its own
PUTs before the timed cells. **nginx**: own config, \`worker_processes 2\`, \`sendfile on\`, \`access_log off\`, files under
\`<tmp>/nginx-root/v1/cache/<hash>\`, PUT through the WebDAV module (\`dav_methods PUT; create_full_put_path on;
client_max_body_size 0\`, body temp files on the same filesystem), no authentication.

The load generator (\`benches/load.js\`) is a separate Node process: one keep-alive \`http.Agent\` per cell with
\`maxSockets\` = connections and as many requests in flight, a fixed number of timed requests after untimed warm-up requests
(small: max(50, 4 x connections); large GET: 1). Every response's status (GET 200; PUT 200 from ours, 201 from nginx) and
byte length are checked, and the SHA-256 of GET bodies (small: every 500th timed one and the first warm-up one; large: the
warm-up one). PUTs always use fresh hashes. Timed requests per small cell at 1/16/64 connections: ${counts('GET', KIB)} (GET 1 KiB),
${counts('GET', 64 * KIB)} (GET 64 KiB), ${counts('PUT', KIB)} (PUT 1 KiB), ${counts('PUT', 64 * KIB)} (PUT 64 KiB); each small cell runs
${SMALL_ROUNDS} rounds, alternating which server goes first. Large cells: GET ${largeConns.map((c) => `${c === 1 ? 3 : c * 2} requests at ${c} connection${c > 1 ? 's' : ''}`).join(', ')};
PUT ${largeConns.map((c) => `${c} at ${c}`).join(', ')}; ${largeConns.includes(4) ? '2 rounds at 1 connection, 1 at 4' : '2 rounds'}.

Throughput, p50 and p99 are those of each server's best round (highest throughput; every round's figure is listed, in run
order). CPU columns cover all rounds: the server's user+system CPU time during the timed phases (ours: the serve process;
nginx: master and workers) per request and as a share of one CPU, the load generator's own CPU, and the whole machine's
busy time (200% = both CPUs busy, other jobs on this shared machine included). MB/s are 10^6 bytes/s of artifact bodies.
"First byte" is the time to the response headers (for a large GET: the time before the body starts).

### Results

${table}

Ratios (throughput = requests/s for small cells, MB/s for large ones; **throughput ours/nginx: 1.00 = parity, higher is
better for nx-open-cache**; latency and CPU ratios ours/nginx: lower is better for nx-open-cache). The issue's GET target
"within 1.3x of nginx" is read as throughput ours/nginx >= ${fmt(1 / TARGET, 2)}, and separately p99 ours/nginx <= 1.3:

${ratioTable}

GET cells meeting the target: ${getMet} of ${getRatios.length} on throughput, ${p99Met} of ${getRatios.length} on p99.

### Memory

${memText}

### Reading

READING_PLACEHOLDER
`;
    if (!o.quick || o.out !== DEFAULT_OUT) {
      fs.mkdirSync(path.dirname(o.out), { recursive: true });
      const reading = readingFrom(rows, ratios, mem, flatWord);
      fs.writeFileSync(o.out, md.replace('READING_PLACEHOLDER', reading));
      log(`wrote ${path.relative(process.cwd(), o.out)}`);
    } else {
      log('--quick: results not written to benches/results/serve.md (give --out <file> to keep them)');
    }
  } finally {
    if (sampler) clearInterval(sampler);
    load?.stop();
    if (ours) await ours.stop();
    if (nginx) await nginx.stop();
    process.off('exit', onExit);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The reading paragraph, from the figures of this run.
 * @param {any[]} rows
 * @param {any[]} ratios
 * @param {any} mem
 * @param {string} flatWord
 */
function readingFrom(rows, ratios, mem, flatWord) {
  const get = ratios.filter((x) => x.method === 'GET' && !x.isLarge);
  const put = ratios.filter((x) => x.method === 'PUT' && !x.isLarge);
  const lg = ratios.filter((x) => x.isLarge);
  const range = (/** @type {any[]} */ xs, /** @type {string} */ k) =>
    xs.length ? `${fmt(Math.min(...xs.map((x) => x[k])), 2)}-${fmt(Math.max(...xs.map((x) => x[k])), 2)}` : 'n/a';
  const busy = rows.filter((r) => r.machinePct >= 190).length;
  const others = rows.map((r) => r.machinePct - r.serverCpuPct - r.clientCpuPct).filter(Number.isFinite);
  const othersMean = others.length ? others.reduce((a, b) => a + b, 0) / others.length : NaN;
  const clientBusy = rows.filter((r) => r.clientCpuPct >= 90).map((r) => `${r.cell} against ${r.server === 'ours' ? 'nx-open-cache' : 'nginx'}`);
  const clientMax = Math.max(...rows.map((r) => r.clientCpuPct));
  const lgGet = rows.filter((r) => r.isLarge && r.method === 'GET' && r.connections === 1);
  const ttfb = lgGet.length === 2 ? `; a large GET's first byte comes after ${fmtMs(lgGet[0].best.ttfbP50Ms)} ms from nx-open-cache vs ${fmtMs(lgGet[1].best.ttfbP50Ms)} ms from nginx` : '';
  const getFail = get.filter((x) => x.met === 'no').map((x) => x.cell);
  const lgFail = lg.filter((x) => x.met === 'no').map((x) => x.cell);
  return (
    `Small GETs: nx-open-cache reaches ${range(get, 'thr')}x nginx's requests/s (best rounds; p99 ${range(get, 'p99')}x nginx's) ` +
    `and spends ${range(get, 'cpu')}x nginx's server CPU per request; the 1.3x GET target is missed on throughput in ` +
    `${getFail.length ? getFail.join(', ') : 'no small cell'}${lgFail.length ? ` and in ${lgFail.join(', ')}` : ''}. ` +
    `Large artifact: ${lg.map((x) => `${x.cell} ${fmt(x.thr, 2)}x`).join(', ')}${ttfb}. Small PUTs: ${range(put, 'thr')}x nginx's requests/s. ` +
    `The two do not do the same work: nx-open-cache checks a token on every request, reads each object and verifies its SHA-256 ` +
    `before the first byte goes out (a corrupted object is a miss, never served; a large object is read twice), and on PUT ` +
    `streams the body to a temp file, fsyncs it and its directory and publishes it only if absent; nginx serves files with ` +
    `sendfile (no copy through user space, no checksum) and its WebDAV PUT renames the body's temp file without fsync. ` +
    `The machine was shared: ${busy} of ${rows.length} measurements ran with both CPUs busy, other processes taking ${fmt(othersMean)}% ` +
    `of a CPU on average beside the server and the load generator (despite their niceness), so single rounds vary widely (every ` +
    `round is listed) and the server-CPU-per-request ratio is the steadier comparison. ` +
    (clientBusy.length
      ? `The Node load generator used >= 90% of a CPU in ${clientBusy.join(', ')}: it was the bottleneck there, so those figures understate that server's capacity. `
      : `The Node load generator used at most ${fmt(clientMax)}% of a CPU: not saturated by itself, but on 2 CPUs it competes with the servers for the same cores. `) +
    `Memory: the serve process's RSS went from ${fmt(mem.start / 1024, 1)} MiB to at most ${fmt(mem.max / 1024, 1)} MiB ` +
    `(VmHWM ${fmt(mem.hwm / 1024, 1)} MiB, ${fmt(mem.end / 1024, 1)} MiB at the end); it was ${flatWord} over the final sustained ` +
    `small-GET load, while uploads raised it (sustained PUTs: ${fmt(mem.putFirstMax / 1024, 1)} then ${fmt(mem.putSecondMax / 1024, 1)} MiB) ` +
    `together with the thread count (up to ${mem.threadsMax} threads: file I/O runs on tokio's blocking pool, which grows with ` +
    `concurrent requests; idle threads exit after 10 s).`
  );
}

main().catch((e) => {
  console.error(`bench: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
