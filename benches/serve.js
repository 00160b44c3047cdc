#!/usr/bin/env node
'use strict';
/**
 * `nx-open-cache serve` against nginx on loopback, wrk as the load generator (issue 14: "serve GET
 * >= 0.9x nginx at 1 KiB and 1 MiB, 1 and 16 connections, p99 no worse; PUT >= 0.9x nginx at 64 KiB
 * x16 and 1 KiB x1/x16; peak RSS <= 64 MiB and flat over a soak").
 *
 *   node benches/serve.js [--quick] [--seconds N] [--rounds N] [--only get|put] [--soak MINUTES]
 *     [--serve-args '<flags>'] (extra flags for our serve, split on spaces, e.g. '--durability data')
 *     [--entry node|bin] [--no-nice] [--dir DIR] [--repo DIR] [--out FILE] [--oidc]
 *
 * --oidc: every request to our server carries an OIDC token (RS256, the algorithm of GitHub's
 * tokens, signed by a key made for the run; a local issuer in this process serves the discovery
 * document and JWKS on 127.0.0.1) instead of the static token; the server verifies it once and
 * keeps it (by SHA-256) until it expires. Compare the ours/nginx ratios of a run with and
 * without it for the cost of OIDC identity on each request.
 *
 * - The server under test: `node lib/cli.js serve --storage fs:<tmp>/store --listen 127.0.0.1:<port>
 *   --log off` in its own process, one read-write token (NX_OPEN_CACHE_SERVER_TOKENS); every request
 *   carries it. `--entry bin`: the standalone binary `target/release/nx-open-cache-server` (of
 *   --repo; `cargo build --release --bin nx-open-cache-server`) with the same options instead: the
 *   same server without Node (its RSS goal is 32 MiB, issue 14 goal 3).
 * - The reference: nginx (benches/nginx.js finds or installs it) with a config of our own: files
 *   under <tmp>/nginx-root/v1/cache/<hash> for GET, WebDAV PUT (dav_methods PUT) for PUT,
 *   worker_processes 2, sendfile on, access_log off, no authentication.
 * - Both serve the same bytes: valid Nx artifacts of noise (serve validates uploads and stores nothing
 *   else), 16 per size (1 KiB, 64 KiB, 1 MiB), PUT into our server through its API (untimed) and
 *   written under nginx's root. Before any timing, every one of them is fetched once from each server
 *   (Node fetch) and its SHA-256 compared with the original's.
 * - The load generator: wrk (benches/wrk.js finds or installs it), 1 thread at 1 connection, 2 at 16.
 *   GETs cycle through the 16 objects of their size; PUTs upload one artifact under a fresh hash per
 *   request (a Lua script: thread id + counter). A cell fails (no verdict, exit status 1 at the end)
 *   on any wrk error in a timed run (connect, read, write, timeout, a status >= 400; in the soak they
 *   are reported, not fatal). After each PUT run, the store must hold at least as many of the run's
 *   objects as wrk counted 2xx uploads, one of them is fetched back and its SHA-256 compared; then the
 *   run's uploads are deleted from both stores (untimed) so that the disk does not fill.
 * - Cells: GET 1 KiB, 64 KiB and 1 MiB (16 connections), 1 KiB and 1 MiB also at 1 connection; PUT
 *   1 KiB at 1 and 16 connections, 64 KiB at 16. Each cell runs `--seconds` (5) per server and round,
 *   `--rounds` (3) rounds; a round is one pass over all cells, the servers' order alternating per
 *   round. Reported: every round, and the median of req/s, MB/s, p50 and p99 per cell and server;
 *   ratios are of medians, ours/nginx.
 * - CPU: each server's CPU time per request (ours: the serve process; nginx: master + workers), wrk's
 *   own CPU and the whole machine's busy share.
 * - Memory: VmRSS and thread count of the serve process every 250 ms for the whole run (max per cell),
 *   VmHWM at the end; nginx's RSS (master + workers) beside it. `--soak MINUTES` (1-60, opt-in) then
 *   runs mixed GET/PUT load on our server alone for that long and compares the first half's max RSS
 *   with the second half's.
 * - Niceness -10 for both servers and wrk when permitted (`--no-nice`: 0).
 *
 * --quick: 1 round of 2 s cells, no warm-up (about a minute); results go to stdout only, unless --out
 * is given. --repo DIR: the checkout whose `lib/cli.js serve` is measured (default: this one), e.g.
 * `node /work/wt-bench/benches/serve.js --quick --repo .` from another worktree. --dir DIR: where
 * the objects and both stores live (default: the OS temp directory; its filesystem is reported).
 * Figures are reported, never asserted; the exit status is non-zero only when something is
 * functionally wrong (a server that does not start, a wrong digest, a wrk error).
 */

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { ensureNginx, version: nginxVersionOf, freePort } = require('./nginx.js');
const { processCpu, processTreeCpu } = require('./cpu.js');
const { exactArtifact } = require('./validate-artifact.js');
const wrk = require('./wrk.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const KIB = 1024;
const MIB = 1024 * KIB;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const SAMPLE_MS = 250;
const STATIC_SECRET = crypto.randomBytes(24).toString('hex');
/** What every request to our server carries: the static secret, or an OIDC token (--oidc). */
let TOKEN_SECRET = STATIC_SECRET;
/** Distinct GET objects per size, cycled through by wrk. */
const OBJECTS_PER_SIZE = 16;
/** The issue's goals, as ratios ours/nginx (nginx stands in for the Go server on PUT: see COMMON14). */
const GOAL_GET = 0.9;
const GOAL_PUT = 0.9;
const GOAL_RSS_MIB = 64;
/** The standalone binary's peak RSS goal (issue 14 goal 3). */
const GOAL_RSS_MIB_BIN = 32;
const DEFAULT_NICE = -10;
const DEFAULT_OUT = path.join(REPO_ROOT, 'benches', 'results', 'serve.md');
const SOAK_MAX_MINUTES = 60;
/** The soak runs in slices of this many seconds; each slice's uploads are deleted after it. */
const SOAK_SLICE_S = 30;
/** Soak upload pace: each of SOAK_PUT_CONNECTIONS connections waits this long before each PUT. */
const SOAK_PUT_DELAY_MS = 10;
const SOAK_PUT_CONNECTIONS = 2;

/**
 * @typedef {object} CellDef
 * @property {'GET' | 'PUT'} method
 * @property {number} size
 * @property {number} connections
 * @property {boolean} goal   the issue sets a goal for this cell
 */
/** @type {CellDef[]} */
const CELLS = [
  { method: 'GET', size: KIB, connections: 1, goal: true },
  { method: 'GET', size: KIB, connections: 16, goal: true },
  { method: 'GET', size: 64 * KIB, connections: 16, goal: false },
  { method: 'GET', size: MIB, connections: 1, goal: true },
  { method: 'GET', size: MIB, connections: 16, goal: true },
  { method: 'PUT', size: KIB, connections: 1, goal: true },
  { method: 'PUT', size: KIB, connections: 16, goal: true },
  { method: 'PUT', size: 64 * KIB, connections: 16, goal: true },
];

/** @param {string} msg */
function log(msg) {
  console.log(`bench ${new Date().toISOString().slice(11, 19)}: ${msg}`);
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const USAGE = 'allowed: --quick, --seconds <1-600>, --rounds <1-20>, --only get|put, --soak <1-60 minutes>, --entry node|bin, --no-nice, --dir <dir>, --repo <dir>, --out <file>, --serve-args \'<serve flags>\', --oidc';

function parseArgs() {
  const args = process.argv.slice(2);
  const o = {
    quick: false,
    /** @type {number | undefined} */ seconds: undefined,
    /** @type {number | undefined} */ rounds: undefined,
    /** @type {'get' | 'put' | undefined} */ only: undefined,
    soakMinutes: 0,
    nice: DEFAULT_NICE,
    dir: os.tmpdir(),
    repo: REPO_ROOT,
    /** @type {string | undefined} */ out: undefined,
    /** @type {string[]} */ serveArgs: [],
    /** @type {'node' | 'bin'} */ entry: 'node',
    oidc: false,
  };
  /** @param {string} name @param {string | undefined} v @param {number} lo @param {number} hi */
  const int = (name, v, lo, hi) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`serve bench: ${name} must be a whole number from ${lo} to ${hi}, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--quick') o.quick = true;
    else if (a === '--no-nice') o.nice = 0;
    else if (a === '--oidc') o.oidc = true;
    else if (a === '--seconds') o.seconds = int('--seconds', args[++i], 1, 600);
    else if (a === '--rounds') o.rounds = int('--rounds', args[++i], 1, 20);
    else if (a === '--soak') o.soakMinutes = int('--soak', args[++i], 1, SOAK_MAX_MINUTES);
    else if (a === '--serve-args') {
      const v = args[++i];
      if (!v || !v.trim().startsWith('--')) throw new Error(`serve bench: --serve-args needs serve flags such as '--durability data', got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
      o.serveArgs = v.trim().split(/\s+/);
    }
    else if (a === '--entry') {
      const v = args[++i];
      if (v !== 'node' && v !== 'bin') throw new Error(`serve bench: --entry must be node or bin, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
      o.entry = v;
    } else if (a === '--only') {
      const v = args[++i];
      if (v !== 'get' && v !== 'put') throw new Error(`serve bench: --only must be get or put, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
      o.only = v;
    } else if (a === '--dir' || a === '--out' || a === '--repo') {
      const v = args[++i];
      if (!v) throw new Error(`serve bench: ${a} needs a path`);
      if (a === '--dir') o.dir = path.resolve(v);
      else if (a === '--out') o.out = path.resolve(v);
      else {
        o.repo = path.resolve(v);
        if (!fs.existsSync(path.join(o.repo, 'lib', 'cli.js'))) throw new Error(`serve bench: --repo ${v}: no lib/cli.js there (give a checkout of nx-open-cache with its addon built)`);
      }
    } else throw new Error(`serve bench: unknown argument ${a} (${USAGE})`);
  }
  return {
    ...o,
    seconds: o.seconds ?? (o.quick ? 2 : 5),
    rounds: o.rounds ?? (o.quick ? 1 : 3),
    // --quick writes nowhere unless asked; a full run writes the results file.
    out: o.out ?? (o.quick ? undefined : DEFAULT_OUT),
  };
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
 * @property {() => number} rssKib  resident memory now (nginx: master + workers), KiB
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

/** @param {number} pid @param {string} field @returns {number} KiB (or a count), NaN when unreadable */
function statusField(pid, field) {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+)`));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** The direct children of `pid` (nginx's workers). @param {number} pid @returns {number[]} */
function childrenOf(pid) {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * The command of our server: `node <repo>/lib/cli.js serve` or `<repo>/target/release/nx-open-cache-server`.
 * @param {string} repo
 * @param {'node' | 'bin'} entry
 * @returns {[string, string[]]}
 */
function oursCommand(repo, entry) {
  if (entry === 'node') return [process.execPath, [path.join(repo, 'lib', 'cli.js'), 'serve']];
  const bin = path.join(repo, 'target', 'release', 'nx-open-cache-server');
  if (!fs.existsSync(bin)) throw new Error(`serve bench: --entry bin: ${bin} is missing: run \`cargo build --release --bin nx-open-cache-server\` in ${repo}`);
  return [bin, []];
}

/**
 * A local OIDC issuer for --oidc: an RSA key made for the run, the discovery document and JWKS on
 * 127.0.0.1, the serve config that trusts it (one rule: the bench's repository, read-write at the
 * root) and a token for that rule, valid for an hour.
 * @returns {Promise<{config: string, token: string, close: () => void}>}
 */
async function startIssuer() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench', alg: 'RS256', use: 'sig' };
  /** @type {string} */
  let iss = '';
  const server = http.createServer((req, res) => {
    const body = req.url === '/.well-known/openid-configuration' ? { issuer: iss, jwks_uri: `${iss}/jwks` } : req.url === '/jwks' ? { keys: [jwk] } : null;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
    res.end(body ? JSON.stringify(body) : '');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  iss = `http://127.0.0.1:${addr.port}`;
  const b64 = (/** @type {string | Buffer} */ x) => Buffer.from(x).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid: 'bench' }))}.${b64(JSON.stringify({ iss, aud: 'bench', repository: 'acme/bench', ref: 'refs/heads/main', iat: now, nbf: now, exp: now + 3600 }))}`;
  const token = `${input}.${crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
  const config = `[[oidc_issuers]]\nname = "bench"\nissuer = "${iss}"\naudience = "bench"\n\n[[oidc_rules]]\nname = "bench-main"\nclaims = { repository = "acme/bench", ref = "refs/heads/main" }\nrole = "read-write"\n`;
  return { config, token, close: () => server.close() };
}

/**
 * `nx-open-cache serve` in its own process, fs storage, one read-write token, request log off.
 * @param {string} repo  the checkout whose lib/cli.js (or server binary) runs
 * @param {string} storeDir
 * @param {number} nice
 * @param {string[]} [serveArgs] extra flags (--serve-args)
 * @param {'node' | 'bin'} [entry]
 * @returns {Promise<Server>}
 */
async function startOurs(repo, storeDir, nice, serveArgs = [], entry = 'node') {
  fs.mkdirSync(storeDir, { recursive: true });
  const [bin, pre] = oursCommand(repo, entry);
  let lastError = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await freePort();
    const child = spawn(
      ...niced(nice, bin, [...pre, '--storage', `fs:${storeDir}`, '--listen', `127.0.0.1:${port}`, '--log', 'off', ...serveArgs]),
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NX_OPEN_CACHE_SERVER_TOKENS: `bench:read-write:${STATIC_SECRET}` } },
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
      rssKib: () => statusField(pid, 'VmRSS'),
      stop: () => stopChild(child, false),
      killSync: () => {
        if (child.exitCode === null) child.kill('SIGKILL');
      },
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
      rssKib: () => [pid, ...childrenOf(pid)].reduce((s, p) => s + statusField(p, 'VmRSS'), 0),
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

/** The whole machine's busy and total jiffies (/proc/stat), for its busy share. */
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

/** @param {number} bytes */
function sizeLabel(bytes) {
  return bytes >= MIB ? `${bytes / MIB} MiB` : `${bytes / KIB} KiB`;
}

/** @param {CellDef} c */
const cellName = (c) => `${c.method} ${sizeLabel(c.size)} x${c.connections}`;

/** @param {number} x @param {number} [d] */
const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
/** @param {number} x */
const fmtMs = (x) => (!Number.isFinite(x) ? 'n/a' : x < 1 ? x.toFixed(3) : x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0));
/** @param {number} kib */
const fmtMib = (kib) => fmt(kib / 1024, 1);

/** @param {number[]} xs */
function median(xs) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** @param {Uint8Array} b */
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * GETs `url` (Node fetch) and checks status 200 and the body's SHA-256.
 * @param {string} url
 * @param {string | null} token
 * @param {string} want  hex SHA-256
 * @param {string} what  for the error
 */
async function verifyGet(url, token, want, what) {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: AbortSignal.timeout(30_000) });
  const body = new Uint8Array(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`${what}: GET ${url} answered ${res.status}, expected 200`);
  const got = sha256(body);
  if (got !== want) throw new Error(`${what}: GET ${url} returned ${body.length} bytes with SHA-256 ${got}, expected ${want}`);
}

/**
 * PUTs `body` to our server (Node fetch), expecting 200.
 * @param {string} baseUrl @param {string} hash @param {Buffer} body
 */
async function seedPut(baseUrl, hash, body) {
  const res = await fetch(`${baseUrl}/v1/cache/${hash}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${TOKEN_SECRET}`, 'content-type': 'application/octet-stream' },
    body,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`seeding ${hash} (${body.length} bytes): PUT answered ${res.status}: ${text.slice(0, 300)}`);
}

/**
 * Every file under `root` named `<prefix><thread>x<n>` (a run's uploads: ours stores an object under
 * its hash as file name, nginx under the request path), outside dot directories (ours' temp files).
 * @param {string} root @param {string} prefix @returns {string[]}
 */
function findUploads(root, prefix) {
  /** @type {string[]} */
  const found = [];
  /** @param {string} dir */
  const walk = (dir) => {
    let entries;
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (!e.name.startsWith('.')) walk(p); // not ours' .tmp: uploads in flight when wrk stopped
      } else if (e.isFile() && e.name.startsWith(prefix) && /^\d+x\d+$/.test(e.name.slice(prefix.length))) found.push(p);
    }
  };
  walk(root);
  return found;
}

/**
 * After a PUT run: at least as many objects stored under `prefix` as wrk counted successful uploads,
 * one of them (the first by name) fetched back through the server and its SHA-256 compared; then all
 * of them deleted, so that the disk does not fill (untimed).
 * @param {{root: string, prefix: string, uploads: number, url: string, token: string | null, sha256: string, what: string}} o
 */
async function checkAndDeleteUploads(o) {
  const files = findUploads(o.root, o.prefix).sort();
  if (files.length < o.uploads) throw new Error(`${o.what}: wrk counted ${o.uploads} successful uploads but only ${files.length} objects named ${o.prefix}* are stored`);
  if (files.length > 0) await verifyGet(`${o.url}/v1/cache/${path.basename(files[0])}`, o.token, o.sha256, `${o.what}: an uploaded object`);
  for (const f of files) fs.rmSync(f, { force: true });
  return files.length;
}

/** @param {string} repo */
function gitDescribe(repo) {
  const { spawnSync } = require('node:child_process');
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, encoding: 'utf8' });
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repo, encoding: 'utf8' });
  const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8'));
  const changed = dirty.status === 0 && dirty.stdout.trim() ? ', with uncommitted changes' : '';
  return `${pkg.version}${r.status === 0 ? ` (commit ${r.stdout.trim()}${changed})` : ''}`;
}

/** The filesystem type of `dir` (from /proc/mounts, the longest mount point containing it). @param {string} dir */
function fsTypeOf(dir) {
  try {
    let best = { mnt: '', type: 'unknown' };
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mnt, type] = line.split(' ');
      if (mnt && (dir === mnt || dir.startsWith(mnt.endsWith('/') ? mnt : `${mnt}/`)) && mnt.length > best.mnt.length) best = { mnt, type };
    }
    return best.type;
  } catch {
    return 'unknown';
  }
}

/**
 * @typedef {object} Run
 * @property {number} round
 * @property {import('./wrk.js').WrkResult} r
 * @property {number} rps
 * @property {number} mbps        artifact body bytes, 10^6 bytes/s
 * @property {number} serverCpuS
 * @property {number} machinePct  busy share of the machine, 100% per CPU
 * @property {number} rssMaxKib   the server's max sampled RSS during the run
 * @property {string} errors      wrk's errors in this run ('' when none): the cell is marked failed
 */
/** @typedef {{hash: string, sha256: string, bytes: Buffer}} GetObject */
/** @typedef {{file: string, sha256: string}} PutBody */
/** @typedef {{t: number, kib: number, threads: number, label: string}} Sample */
/** @typedef {{i: number, getRps: number, putRps: number, putMaxMs: number, rssMaxKib: number, threadsMax: number, errors: string}} SoakSlice */

/**
 * The GET objects (OBJECTS_PER_SIZE per size, written under nginx's root) and one PUT body per PUT
 * size (a file wrk reads), for the cells to run and the soak.
 * @param {{cells: CellDef[], soak: boolean, nginxCache: string, srcDir: string}} a
 */
function makeArtifacts(a) {
  const getSizes = [...new Set(a.cells.filter((c) => c.method === 'GET').map((c) => c.size))];
  const putSizes = [...new Set(a.cells.filter((c) => c.method === 'PUT').map((c) => c.size))];
  if (a.soak) {
    for (const s of [KIB, 64 * KIB]) if (!getSizes.includes(s)) getSizes.push(s);
    if (!putSizes.includes(64 * KIB)) putSizes.push(64 * KIB);
  }
  /** @type {Map<number, GetObject[]>} */
  const objects = new Map();
  for (const size of getSizes) {
    const list = [];
    for (let i = 0; i < OBJECTS_PER_SIZE; i++) {
      const bytes = exactArtifact(size);
      const hash = `g${size / KIB}k${String(i).padStart(2, '0')}`;
      fs.writeFileSync(path.join(a.nginxCache, hash), bytes);
      list.push({ hash, sha256: sha256(bytes), bytes });
    }
    objects.set(size, list);
  }
  /** @type {Map<number, PutBody>} */
  const putBodies = new Map();
  for (const size of putSizes) {
    const bytes = exactArtifact(size);
    const file = path.join(a.srcDir, `put-${size / KIB}k`);
    fs.writeFileSync(file, bytes);
    putBodies.set(size, { file, sha256: sha256(bytes) });
  }
  return { objects, putBodies };
}

/**
 * VmRSS and threads of our server every SAMPLE_MS, each sample labelled with the phase; nginx's RSS
 * (master + workers) tracked as a maximum.
 * @param {Server} ours
 * @param {number} t0
 */
function startSampler(ours, t0) {
  /** @type {Sample[]} */
  const samples = [];
  /** @type {Server | undefined} */
  let nginx;
  const m = {
    samples,
    label: 'idle',
    nginxRssMaxKib: NaN,
    /** @param {Server} n */
    watchNginx(n) {
      nginx = n;
    },
    sample() {
      const kib = ours.rssKib();
      if (Number.isFinite(kib)) samples.push({ t: Date.now() - t0, kib, threads: statusField(ours.pid, 'Threads'), label: m.label });
      const n = nginx ? nginx.rssKib() : NaN;
      if (Number.isFinite(n) && !(n <= m.nginxRssMaxKib)) m.nginxRssMaxKib = n;
    },
    stop() {
      clearInterval(timer);
    },
  };
  m.sample();
  const timer = setInterval(() => m.sample(), SAMPLE_MS);
  return m;
}

/** @param {{kib: number}[]} xs */
const maxKib = (xs) => xs.reduce((m, s) => Math.max(m, s.kib), -Infinity);
/** @param {{threads: number}[]} xs */
const maxThreads = (xs) => xs.reduce((m, s) => Math.max(m, s.threads), -Infinity);

/**
 * Seeds our server with the GET objects through its API, then fetches every object from both
 * servers and compares its SHA-256 (untimed). Returns the number of bodies checked.
 * @param {Map<number, GetObject[]>} objects @param {Server} ours @param {Server} nginx
 */
async function seedAndVerify(objects, ours, nginx) {
  for (const list of objects.values()) for (const x of list) await seedPut(ours.url, x.hash, x.bytes);
  let verified = 0;
  for (const [size, list] of objects) {
    for (const x of list) {
      await verifyGet(`${ours.url}/v1/cache/${x.hash}`, TOKEN_SECRET, x.sha256, `nx-open-cache, ${sizeLabel(size)} object ${x.hash}`);
      await verifyGet(`${nginx.url}/v1/cache/${x.hash}`, null, x.sha256, `nginx, ${sizeLabel(size)} object ${x.hash}`);
      verified += 2;
    }
  }
  return verified;
}

/**
 * What a measurement needs: options, binaries, servers, artifacts, scripts, the sampler.
 * @typedef {object} Ctx
 * @property {ReturnType<typeof parseArgs>} o
 * @property {string} wrkBin
 * @property {{ours: Server, nginx: Server}} servers
 * @property {Map<number, GetObject[]>} objects
 * @property {Map<number, PutBody>} putBodies
 * @property {Map<string, string>} getScripts  `<size> <ours|nginx>` -> Lua file
 * @property {string} scriptDir
 * @property {{ours: string, nginx: string}} roots  where each server's uploads land
 * @property {ReturnType<typeof startSampler>} mem
 * @property {{ours: number, nginx: number, wrk: number}} nices
 */

/** @param {Ctx} ctx @param {number} size @param {'ours' | 'nginx'} which */
const getScriptOf = (ctx, size, which) => /** @type {string} */ (ctx.getScripts.get(`${size} ${which}`));
/** @param {Ctx} ctx @param {number} size */
const putBodyOf = (ctx, size) => /** @type {PutBody} */ (ctx.putBodies.get(size));
/** @param {'ours' | 'nginx'} which */
const tokenOf = (which) => (which === 'ours' ? TOKEN_SECRET : null);

/**
 * One wrk run of one cell against one server; throws on any wrk error or a wrong stored upload.
 * @param {Ctx} ctx @param {CellDef} c @param {'ours' | 'nginx'} which @param {number} round
 * @returns {Promise<Run>}
 */
async function runOne(ctx, c, which, round) {
  const srv = ctx.servers[which];
  const token = tokenOf(which);
  const prefix = `p${round}${which[0]}${c.size / KIB}k${c.connections}t`;
  let scriptFile = getScriptOf(ctx, c.size, which);
  if (c.method === 'PUT') {
    scriptFile = path.join(ctx.scriptDir, `${prefix}.lua`);
    fs.writeFileSync(scriptFile, wrk.putScript({ prefix, bodyFile: putBodyOf(ctx, c.size).file, token }));
  }
  const label = `${which} r${round} ${cellName(c)}`;
  if (which === 'ours') ctx.mem.label = label;
  const samplesBefore = ctx.mem.samples.length;
  const cpu0 = srv.cpu();
  const m0 = machineJiffies();
  const r = await wrk.runWrk({
    bin: ctx.wrkBin,
    baseUrl: srv.url,
    scriptFile,
    connections: c.connections,
    seconds: ctx.o.seconds,
    nice: ctx.o.nice,
    onSpawn: (pid) =>
      setTimeout(() => {
        if (Number.isNaN(ctx.nices.wrk)) ctx.nices.wrk = niceOf(pid);
      }, 200).unref(),
  });
  const cpu1 = srv.cpu();
  const m1 = machineJiffies();
  ctx.mem.label = 'idle';
  // wrk's errors fail the cell (marked in the report, exit status 1 at the end), not the whole bench.
  const errors = r.requests === 0 ? `no request completed in ${ctx.o.seconds} s` : wrk.errorText(r);
  if (c.method === 'PUT') {
    // With status errors wrk's count includes refused uploads: then only the stored bytes are checked.
    const uploads = r.errors.status > 0 ? 0 : r.requests;
    await checkAndDeleteUploads({ root: ctx.roots[which], prefix, uploads, url: srv.url, token, sha256: putBodyOf(ctx, c.size).sha256, what: label });
  }
  const run = {
    round,
    r,
    rps: r.requests / r.seconds,
    mbps: (r.requests * c.size) / r.seconds / 1e6,
    serverCpuS: cpu1 - cpu0,
    machinePct: ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100 * os.cpus().length,
    rssMaxKib: which === 'ours' ? maxKib(ctx.mem.samples.slice(samplesBefore)) : NaN,
    errors,
  };
  log(
    `${which.padEnd(5)} ${cellName(c).padEnd(16)} r${round} ${fmt(run.rps).padStart(7)} req/s ${fmt(run.mbps, 1).padStart(7)} MB/s ` +
      `p50 ${fmtMs(r.p50Ms)} ms p99 ${fmtMs(r.p99Ms)} ms | server CPU ${fmt((run.serverCpuS / r.seconds) * 100)}%, wrk ${fmt((r.clientCpuS / r.seconds) * 100)}%, machine ${fmt(run.machinePct)}%${errors ? ` | FAILED: ${errors}` : ''}`,
  );
  return run;
}

/**
 * An untimed 1 s warm-up per GET cell and server (not with --quick), then `rounds` passes over the
 * cells, the servers' order alternating per round.
 * @param {Ctx} ctx @param {CellDef[]} cells
 */
async function runRounds(ctx, cells) {
  for (const c of cells.filter((x) => x.method === 'GET' && !ctx.o.quick)) {
    for (const which of /** @type {const} */ (['ours', 'nginx'])) {
      const r = await wrk.runWrk({ bin: ctx.wrkBin, baseUrl: ctx.servers[which].url, scriptFile: getScriptOf(ctx, c.size, which), connections: c.connections, seconds: 1, nice: ctx.o.nice });
      if (wrk.errorCount(r) > 0) throw new Error(`warm-up ${which} ${cellName(c)}: wrk reported errors (${wrk.errorText(r)})`);
    }
  }
  /** @type {Map<string, {ours: Run[], nginx: Run[]}>} */
  const runs = new Map(cells.map((c) => [cellName(c), { ours: [], nginx: [] }]));
  for (let round = 0; round < ctx.o.rounds; round++) {
    /** @type {('ours' | 'nginx')[]} */
    const order = round % 2 === 0 ? ['ours', 'nginx'] : ['nginx', 'ours'];
    for (const c of cells) {
      const byServer = /** @type {{ours: Run[], nginx: Run[]}} */ (runs.get(cellName(c)));
      for (const which of order) byServer[which].push(await runOne(ctx, c, which, round));
    }
  }
  return runs;
}

/**
 * The soak: GET 1 + 64 KiB x16 and paced PUT 64 KiB on our server alone for `--soak` minutes, in
 * slices of SOAK_SLICE_S whose uploads are checked and deleted after each.
 * @param {Ctx} ctx
 * @returns {Promise<{slices: SoakSlice[], seconds: number}>}
 */
async function runSoak(ctx) {
  const srv = ctx.servers.ours;
  const totalS = ctx.o.soakMinutes * 60;
  const nSlices = Math.max(2, Math.round(totalS / SOAK_SLICE_S));
  const sliceS = Math.max(1, Math.round(totalS / nSlices));
  const mixed = path.join(ctx.scriptDir, 'soak-get.lua');
  const soakObjects = [...(ctx.objects.get(KIB) ?? []), ...(ctx.objects.get(64 * KIB) ?? [])];
  fs.writeFileSync(mixed, wrk.getScript({ paths: soakObjects.map((x) => `/v1/cache/${x.hash}`), token: TOKEN_SECRET }));
  const body = putBodyOf(ctx, 64 * KIB);
  /** @type {SoakSlice[]} */
  const slices = [];
  const ts = Date.now();
  log(`soak: ${nSlices} slices of ${sliceS} s: GET 1 + 64 KiB x16 and PUT 64 KiB x${SOAK_PUT_CONNECTIONS} (each connection waits ${SOAK_PUT_DELAY_MS} ms before each PUT), our server alone`);
  for (let i = 0; i < nSlices; i++) {
    const prefix = `soak${i}t`;
    const putFile = path.join(ctx.scriptDir, `${prefix}.lua`);
    fs.writeFileSync(putFile, wrk.putScript({ prefix, bodyFile: body.file, token: TOKEN_SECRET, delayMs: SOAK_PUT_DELAY_MS }));
    ctx.mem.label = `soak ${i}`;
    const before = ctx.mem.samples.length;
    const [g, p] = await Promise.all([
      wrk.runWrk({ bin: ctx.wrkBin, baseUrl: srv.url, scriptFile: mixed, connections: 16, threads: 1, seconds: sliceS, nice: ctx.o.nice }),
      wrk.runWrk({ bin: ctx.wrkBin, baseUrl: srv.url, scriptFile: putFile, connections: SOAK_PUT_CONNECTIONS, threads: 1, seconds: sliceS, nice: ctx.o.nice }),
    ]);
    ctx.mem.label = 'idle';
    // Errors are reported, not fatal: the soak measures memory over its whole length.
    const errors = [['GET', g], ['PUT', p]]
      .filter(([, r]) => wrk.errorCount(/** @type {import('./wrk.js').WrkResult} */ (r)) > 0)
      .map(([what, r]) => `${what}: ${wrk.errorText(/** @type {import('./wrk.js').WrkResult} */ (r))}`)
      .join('; ');
    await checkAndDeleteUploads({ root: ctx.roots.ours, prefix, uploads: p.errors.status > 0 ? 0 : p.requests, url: srv.url, token: TOKEN_SECRET, sha256: body.sha256, what: `soak slice ${i}` });
    const ss = ctx.mem.samples.slice(before);
    const slice = { i, getRps: g.requests / g.seconds, putRps: p.requests / p.seconds, putMaxMs: p.maxMs, rssMaxKib: maxKib(ss), threadsMax: maxThreads(ss), errors };
    slices.push(slice);
    log(`soak ${i + 1}/${nSlices}: GET ${fmt(slice.getRps)} req/s, PUT ${fmt(slice.putRps)} req/s, max RSS ${fmtMib(slice.rssMaxKib)} MiB, threads ${slice.threadsMax}${errors ? ` | wrk errors: ${errors}` : ''}`);
  }
  return { slices, seconds: (Date.now() - ts) / 1000 };
}

async function main() {
  const o = parseArgs();
  const startedAt = new Date();
  const load0 = os.loadavg();
  const nginxBin = ensureNginx();
  const wrkBin = wrk.ensureWrk();
  const versions = { nginx: nginxVersionOf(nginxBin), wrk: wrk.version(wrkBin), ours: gitDescribe(o.repo) };
  const cells = CELLS.filter((c) => !o.only || c.method.toLowerCase() === o.only);
  log(
    `${os.cpus().length} CPUs, load average ${load0.map((x) => x.toFixed(2)).join(' ')}; nx-open-cache ${versions.ours}, ${versions.nginx}, ${versions.wrk}, node ${process.version}; ` +
      `${cells.length} cells x ${o.rounds} round(s) x ${o.seconds} s${o.soakMinutes ? `, then a ${o.soakMinutes} min soak` : ''}`,
  );

  fs.mkdirSync(o.dir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(o.dir, 'nxoc-serve-bench-'));
  const dirs = { src: path.join(tmp, 'src'), store: path.join(tmp, 'store'), nginxRoot: path.join(tmp, 'nginx-root'), lua: path.join(tmp, 'lua') };
  const nginxCache = path.join(dirs.nginxRoot, 'v1', 'cache');
  for (const d of [dirs.src, dirs.lua, nginxCache]) fs.mkdirSync(d, { recursive: true });

  /** @type {Server | undefined} */
  let ours;
  /** @type {Server | undefined} */
  let nginx;
  /** @type {ReturnType<typeof startSampler> | undefined} */
  let mem;
  const onExit = () => {
    ours?.killSync();
    nginx?.killSync();
  };
  process.on('exit', onExit);
  /** @type {(() => void) | undefined} */
  let closeIssuer;
  const t0 = Date.now();
  try {
    const { objects, putBodies } = makeArtifacts({ cells, soak: o.soakMinutes > 0, nginxCache, srcDir: dirs.src });
    log(`artifacts: ${[...objects.keys()].map((s) => `${OBJECTS_PER_SIZE} x ${sizeLabel(s)}`).join(', ')} to GET; PUT bodies of ${[...putBodies.keys()].map(sizeLabel).join(', ')} (Nx artifacts of noise) in ${tmp} (${fsTypeOf(tmp)})`);

    const serveArgs = [...o.serveArgs];
    if (o.oidc) {
      const issuer = await startIssuer();
      closeIssuer = issuer.close;
      const config = path.join(dirs.store, '..', 'oidc.toml');
      fs.writeFileSync(config, issuer.config);
      serveArgs.push('--config', config);
      TOKEN_SECRET = issuer.token;
    }
    ours = await startOurs(o.repo, dirs.store, o.nice, serveArgs, o.entry);
    log(`nx-open-cache serve (${o.entry === 'bin' ? 'target/release/nx-open-cache-server' : 'node lib/cli.js serve'}) on ${ours.url} (pid ${ours.pid})`);
    mem = startSampler(ours, t0);
    const probeHash = objects.size ? /** @type {GetObject[]} */ (objects.values().next().value)[0].hash : 'probe';
    if (!objects.size) fs.writeFileSync(path.join(nginxCache, probeHash), 'probe');
    nginx = await startNginxDav(nginxBin, dirs.nginxRoot, path.join(tmp, 'nginx'), `/v1/cache/${probeHash}`, o.nice);
    mem.watchNginx(nginx);
    log(`nginx on ${nginx.url} (master pid ${nginx.pid}, workers ${childrenOf(nginx.pid).join(', ')})`);

    mem.label = 'seed';
    const verified = await seedAndVerify(objects, ours, nginx);
    mem.label = 'idle';
    const memAfterSeed = ours.rssKib();
    log(`verified ${verified} GET bodies by SHA-256 (every object on both servers) before timing`);

    /** @type {Map<string, string>} */
    const getScripts = new Map();
    for (const [size, list] of objects) {
      for (const which of /** @type {const} */ (['ours', 'nginx'])) {
        const file = path.join(dirs.lua, `get-${size}-${which}.lua`);
        fs.writeFileSync(file, wrk.getScript({ paths: list.map((x) => `/v1/cache/${x.hash}`), token: tokenOf(which) }));
        getScripts.set(`${size} ${which}`, file);
      }
    }
    /** @type {Ctx} */
    const ctx = {
      o,
      wrkBin,
      servers: { ours, nginx },
      objects,
      putBodies,
      getScripts,
      scriptDir: dirs.lua,
      roots: { ours: dirs.store, nginx: nginxCache },
      mem,
      nices: { ours: niceOf(ours.pid), nginx: niceOf(nginx.pid), wrk: NaN },
    };
    const runs = await runRounds(ctx, cells);
    const soak = o.soakMinutes ? await runSoak(ctx) : undefined;

    mem.sample();
    mem.stop();
    const end = { rssKib: ours.rssKib(), hwmKib: statusField(ours.pid, 'VmHWM'), threads: statusField(ours.pid, 'Threads') };
    await ours.stop();
    ours = undefined;
    await nginx.stop();
    nginx = undefined;
    log('servers stopped');
    const load1 = os.loadavg();
    const wallS = (Date.now() - t0) / 1000;

    const text = report({
      o, cells, runs, samples: mem.samples, memAfterSeed, memEnd: end.rssKib, hwmEnd: end.hwmKib, threadsEnd: end.threads, nginxRssMax: mem.nginxRssMaxKib,
      soak, versions, nices: ctx.nices, startedAt, load0, load1, wallS, verified, fsType: fsTypeOf(tmp),
    });
    console.log(`\n${text.summary}`);
    if (o.out) {
      fs.mkdirSync(path.dirname(o.out), { recursive: true });
      fs.writeFileSync(o.out, text.md);
      log(`wrote ${path.relative(process.cwd(), o.out)}`);
    } else {
      log('--quick: results not written (give --out <file> to keep them)');
    }
    if (text.failed) {
      log(`${text.failed} run(s) had wrk errors (see "Failed runs" above): exit status 1`);
      process.exitCode = 1;
    }
  } finally {
    mem?.stop();
    if (ours) await ours.stop();
    if (nginx) await nginx.stop();
    closeIssuer?.();
    process.off('exit', onExit);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * The figures as a markdown section (benches/results/serve.md) and a console summary.
 * @param {any} a
 * @returns {{md: string, summary: string, failed: number}}
 */
function report(a) {
  /** @type {ReturnType<typeof parseArgs>} */
  const o = a.o;
  /** @type {CellDef[]} */
  const cells = a.cells;
  /** @type {Map<string, {ours: Run[], nginx: Run[]}>} */
  const runs = a.runs;
  /** @type {{t: number, kib: number, threads: number, label: string}[]} */
  const samples = a.samples;

  const rows = cells.map((c) => {
    const r = /** @type {{ours: Run[], nginx: Run[]}} */ (runs.get(cellName(c)));
    /** @param {Run[]} xs */
    const med = (xs) => ({
      rps: median(xs.map((x) => x.rps)),
      mbps: median(xs.map((x) => x.mbps)),
      p50: median(xs.map((x) => x.r.p50Ms)),
      p99: median(xs.map((x) => x.r.p99Ms)),
      cpuUsPerReq: (xs.reduce((s, x) => s + x.serverCpuS, 0) / xs.reduce((s, x) => s + x.r.requests, 0)) * 1e6,
      clientPct: (xs.reduce((s, x) => s + x.r.clientCpuS, 0) / xs.reduce((s, x) => s + x.r.seconds, 0)) * 100,
      machinePct: median(xs.map((x) => x.machinePct)),
      rssMaxKib: xs.reduce((m, x) => Math.max(m, x.rssMaxKib), -Infinity),
    });
    const ours = med(r.ours);
    const nginx = med(r.nginx);
    const thr = ours.rps / nginx.rps;
    const p99 = ours.p99 / nginx.p99;
    const goalThr = c.method === 'GET' ? GOAL_GET : GOAL_PUT;
    const failed = /** @type {const} */ (['ours', 'nginx']).flatMap((w) => r[w].filter((x) => x.errors).map((x) => `${w === 'ours' ? 'nx-open-cache' : 'nginx'} round ${x.round}: ${x.errors}`));
    return {
      c,
      failed,
      name: cellName(c),
      runs: r,
      ours,
      nginx,
      thr,
      p50: ours.p50 / nginx.p50,
      p99,
      cpu: ours.cpuUsPerReq / nginx.cpuUsPerReq,
      thrMet: c.goal ? thr >= goalThr : undefined,
      p99Met: c.goal && c.method === 'GET' ? ours.p99 <= nginx.p99 : undefined,
      goalThr,
    };
  });
  const yn = (/** @type {boolean | undefined} */ b) => (b === undefined ? '-' : b ? '**met**' : 'not met');
  /** A goal verdict; a cell with wrk errors has none. @param {{failed: string[]}} x @param {boolean | undefined} b */
  const verdict = (x, b) => (b !== undefined && x.failed.length ? 'FAILED (wrk errors)' : yn(b));
  const failedRuns = rows.flatMap((x) => x.failed.map((f) => `${x.name}, ${f}`));

  const every = (/** @type {Run[]} */ xs) => `${xs.map((x) => fmt(x.rps)).join(' / ')}; p99 ${xs.map((x) => fmtMs(x.r.p99Ms)).join(' / ')}`;
  const table = [
    '| cell | server | req/s (median) | MB/s (median) | every round: req/s; p99 ms | p50 ms | p99 ms | server CPU µs/req | wrk CPU % | machine busy % |',
    '|---|---|---:|---:|---|---:|---:|---:|---:|---:|',
    ...rows.flatMap((x) =>
      /** @type {const} */ (['ours', 'nginx']).map((w) => {
        const m = x[w];
        return `| ${x.name} | ${w === 'ours' ? 'nx-open-cache' : 'nginx'} | ${fmt(m.rps)} | ${fmt(m.mbps, 1)} | ${every(x.runs[w])} | ${fmtMs(m.p50)} | ${fmtMs(m.p99)} | ${fmt(m.cpuUsPerReq, 1)} | ${fmt(m.clientPct)} | ${fmt(m.machinePct)} |`;
      }),
    ),
  ].join('\n');
  const ratioTable = [
    '| cell | req/s ours/nginx | req/s ours/nginx every round | p50 ours/nginx | p99 ours/nginx | server CPU per request ours/nginx | goal: throughput | goal: p99 <= nginx |',
    '|---|---:|---|---:|---:|---:|---|---|',
    ...rows.map((x) => `| ${x.name} | ${fmt(x.thr, 2)} | ${x.runs.ours.map((r, i) => fmt(r.rps / x.runs.nginx[i].rps, 2)).join(' / ')} | ${fmt(x.p50, 2)} | ${fmt(x.p99, 2)} | ${fmt(x.cpu, 2)} | ${x.c.goal ? `>= ${x.goalThr}x: ${verdict(x, x.thrMet)}` : '-'} | ${verdict(x, x.p99Met)} |`),
  ].join('\n');
  const goalRows = rows.filter((x) => x.c.goal);
  const thrMet = goalRows.filter((x) => x.thrMet && !x.failed.length).length;
  const p99Rows = goalRows.filter((x) => x.p99Met !== undefined);
  const p99Met = p99Rows.filter((x) => x.p99Met && !x.failed.length).length;

  // Memory.
  const peakKib = Math.max(a.hwmEnd, maxKib(samples));
  const goalRss = o.entry === 'bin' ? GOAL_RSS_MIB_BIN : GOAL_RSS_MIB;
  const rssMet = peakKib <= goalRss * 1024;
  const threadsMax = maxThreads(samples);
  const perCell = rows.map((x) => `${x.name} ${fmtMib(x.ours.rssMaxKib)}`).join(', ');
  const memLines = [
    `- VmRSS of the serve process, sampled every ${SAMPLE_MS} ms over the whole run (${samples.length} samples, ${fmt(a.wallS)} s): start ${fmtMib(samples[0]?.kib)} MiB, ` +
      `after seeding ${fmtMib(a.memAfterSeed)} MiB, max ${fmtMib(maxKib(samples))} MiB, end ${fmtMib(a.memEnd)} MiB; **VmHWM at the end ${fmtMib(a.hwmEnd)} MiB** ` +
      `(goal <= ${goalRss} MiB${o.entry === 'bin' ? ' for the standalone binary' : ''}: ${yn(rssMet)}). nginx (master + 2 workers, summed) at most ${fmtMib(a.nginxRssMax)} MiB.`,
    `- Max VmRSS (MiB) per cell over its rounds: ${perCell}.`,
    `- Threads of the serve process: ${samples[0]?.threads} at start, at most ${threadsMax} (sampled), ${a.threadsEnd} at the end.`,
  ];
  /** @type {boolean | undefined} */
  let flat;
  if (a.soak) {
    /** @type {SoakSlice[]} */
    const sl = a.soak.slices;
    const soakErrors = sl.filter((x) => x.errors).map((x) => `slice ${x.i + 1}: ${x.errors}`);
    const half = Math.floor(sl.length / 2);
    const first = sl.slice(0, half).reduce((/** @type {number} */ m, /** @type {any} */ s) => Math.max(m, s.rssMaxKib), -Infinity);
    const second = sl.slice(half).reduce((/** @type {number} */ m, /** @type {any} */ s) => Math.max(m, s.rssMaxKib), -Infinity);
    flat = second <= first + Math.max(2048, first * 0.05);
    const getRps = median(sl.map((/** @type {any} */ s) => s.getRps));
    const putRps = median(sl.map((/** @type {any} */ s) => s.putRps));
    memLines.push(
      `- Soak (\`--soak ${o.soakMinutes}\`, ${fmt(a.soak.seconds)} s, our server alone): GET 1 + 64 KiB x16 (median ${fmt(getRps)} req/s) together with PUT 64 KiB x${SOAK_PUT_CONNECTIONS} ` +
        `(paced, median ${fmt(putRps)} req/s), in ${sl.length} slices whose uploads are deleted after each. Max RSS per slice (MiB): ${sl.map((/** @type {any} */ s) => fmtMib(s.rssMaxKib)).join(', ')}. ` +
        `First half max ${fmtMib(first)} MiB, second half ${fmtMib(second)} MiB: **${flat ? 'flat' : 'not flat'}** (flat = second-half max at most max(2 MiB, 5%) above the first-half max). ` +
        `Slowest PUT per slice (ms): ${sl.map((x) => fmtMs(x.putMaxMs)).join(', ')}. ` +
        `wrk errors during the soak: ${soakErrors.length ? soakErrors.join('; ') : 'none'} (reported, not fatal: a timeout is a request slower than wrk's 10 s \`--timeout\`).`,
    );
  } else {
    memLines.push('- No soak in this run (`--soak <minutes>` adds one).');
  }
  const memText = memLines.join('\n');

  const withPath = ['--out', '--dir', '--repo'];
  const cmdArgs = process.argv.slice(2).filter((x, i, xs) => !withPath.includes(x) && !withPath.includes(xs[i - 1]));
  const cmd = `node benches/serve.js${cmdArgs.length ? ` ${cmdArgs.join(' ')}` : ''}`;
  const loadText = `${a.load0.map((/** @type {number} */ x) => x.toFixed(2)).join(' ')} at the start, ${a.load1.map((/** @type {number} */ x) => x.toFixed(2)).join(' ')} at the end`;
  const allRuns = rows.flatMap((x) => [...x.runs.ours, ...x.runs.nginx]);
  const busyRuns = allRuns.filter((x) => x.machinePct >= 190).length;
  const wrkMax = Math.max(...allRuns.map((x) => (x.r.clientCpuS / x.r.seconds) * 100));
  const reading =
    `Ours and nginx do not do the same work. nx-open-cache checks a token on every request, serves an object's bytes only ` +
    `after they were verified against its SHA-256 (at least on the first read; \`src/store/fs.rs\` says when again), and on PUT ` +
    `validates the artifact, writes a temp file, fsyncs it and its directory and publishes it only if the hash is absent; ` +
    `nginx serves files with sendfile, no checksum, and its WebDAV PUT renames the body's temp file without fsync. ` +
    `The machine was shared: ${busyRuns} of ${allRuns.length} runs had both CPUs busy (load average ${loadText}), so single rounds vary ` +
    `(every round is listed) and the server CPU per request is the steadier comparison. wrk used at most ${fmt(wrkMax)}% of a CPU in a run` +
    `${wrkMax >= 90 ? ': it was saturated there, so that cell understates the faster server' : ': it was not the bottleneck'}.` +
    (Math.max(a.load0[0], a.load1[0]) > 2 * os.cpus().length
      ? ` **The 1-minute load average exceeded twice the CPU count: other jobs took most of the machine, so these throughput figures are mostly noise; rerun on a quieter machine.**`
      : '');
  const goalLine =
    `Goals (issue 14; ratios of medians, ours/nginx): throughput met in ${thrMet} of ${goalRows.length} goal cells ` +
    `(GET >= ${GOAL_GET}x, PUT >= ${GOAL_PUT}x), GET p99 <= nginx's in ${p99Met} of ${p99Rows.length}; peak RSS ${fmtMib(peakKib)} MiB (<= ${goalRss} MiB: ${rssMet ? 'met' : 'not met'})` +
    `${flat === undefined ? '; no soak' : `; soak ${flat ? 'flat' : 'not flat'}`}.`;

  const md = `## Server: \`nx-open-cache serve\` vs nginx (\`benches/serve.js\`, wrk)

Command: \`${cmd}\`${o.quick ? ' (smoke run: 1 round of 2 s cells)' : ''}.

- Date: ${a.startedAt.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}
- Machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() || 'unknown'}), ${fmt(os.totalmem() / 2 ** 30, 1)} GiB memory; Linux ${os.release()} ${os.arch()}; files on ${a.fsType}
- Load average (1, 5, 15 min): ${loadText}; whole bench ${fmt(a.wallS)} s
- nx-open-cache ${a.versions.ours}, ${a.versions.nginx}, ${a.versions.wrk}, Node ${process.version}
- Niceness (\`--no-nice\` keeps 0): nx-open-cache ${a.nices.ours}, nginx ${a.nices.nginx}, wrk ${a.nices.wrk}

### Setup

Both servers run on 127.0.0.1 and serve the same bytes: valid Nx artifacts of noise (\`serve\` validates uploads and
stores nothing else), ${OBJECTS_PER_SIZE} per GET size. **nx-open-cache**: \`${o.entry === 'bin' ? 'target/release/nx-open-cache-server' : 'node lib/cli.js serve'} --storage fs:<tmp>/store --listen
127.0.0.1:<port> --log off\` in its own process, one read-write token from \`NX_OPEN_CACHE_SERVER_TOKENS\` (every request
carries it), seeded through its own PUTs. **nginx**: own config, \`worker_processes 2\`, \`sendfile on\`, \`access_log off\`,
files under \`<tmp>/nginx-root/v1/cache/<hash>\`, PUT through the WebDAV module (\`dav_methods PUT\`, body temp files on the
same filesystem, no fsync), no authentication. nginx stands in for the issue's Go server (measured on this machine at
~0.9x nginx on PUT 64 KiB and ~1.0x on GET 1 MiB), so the PUT goal is read as >= ${GOAL_PUT}x nginx.

The load generator is **wrk** (1 thread at 1 connection, 2 threads at 16; Lua scripts from \`benches/wrk.js\`): GETs cycle
through the ${OBJECTS_PER_SIZE} objects of their size; PUTs upload one artifact under a fresh hash per request (thread id + counter).
Before timing, all ${a.verified / 2} objects were fetched once from each server and their SHA-256 compared with the originals;
after each PUT run, the store had to hold at least as many of the run's objects as wrk counted successful uploads, one of
them was fetched back and compared, then the run's uploads were deleted (untimed).
Any wrk error in a timed run (connect, read, write, timeout after 10 s, status >= 400) fails its cell (no verdict, exit status 1). ${o.quick ? 'No warm-up (`--quick`),' : 'One untimed 1 s warm-up per GET cell and server,'}
then ${o.rounds} round(s) of ${o.seconds} s per cell and server; a round is one pass over all cells, the servers' order
alternating per round. Figures are medians over rounds (every round's req/s and p99 listed, in run order); p50/p99 are wrk's latency
percentiles. Server CPU: the serve process / nginx master + workers, user + system time per request. wrk CPU: its own share
of one CPU. Machine busy: 200% = both CPUs busy (other jobs on this shared machine included). MB/s: 10^6 bytes/s of artifact bodies.

### Results

${table}

Ratios of the medians (**req/s ours/nginx: 1.00 = parity, higher is better for nx-open-cache**; latency and CPU ratios:
lower is better for nx-open-cache), and each round's own ratio (the two servers measured back to back; their spread shows
how far the machine's noise moves a verdict):

${ratioTable}

${goalLine}
${failedRuns.length ? `
**Failed runs** (wrk errors; their cells have no verdict): ${failedRuns.join('; ')}.
` : ''}
### Memory

${memText}

### Reading

${reading}
`;
  const summary = `${table}\n\n${ratioTable}\n\n${memText}\n\n${goalLine}${failedRuns.length ? ` Failed runs: ${failedRuns.join('; ')}.` : ''} Load average ${loadText}; whole bench ${fmt(a.wallS)} s.`;
  return { md, summary, failed: failedRuns.length };
}

main().catch((e) => {
  console.error(`bench: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
