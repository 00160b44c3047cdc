'use strict';
/**
 * Test harness for `nx-open-cache serve`: the real CLI in a child process on 127.0.0.1 (port 0, the
 * bound URL read from its startup line), plain HTTP(S) requests with Node's own clients, and a
 * self-signed certificate made with the openssl CLI.
 *
 * Two entry points run the same server (`opts.entry`): `node` (default), `node lib/cli.js serve`;
 * `bin`, the standalone binary `target/release/nx-open-cache-server` (built by `cargo test
 * --release` in `npm test`; built here when missing or older than the sources).
 */

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(REPO_ROOT, 'lib', 'cli.js');
/** Upper bound for a server to print its startup line, and for one CLI error run. */
const START_TIMEOUT_MS = 30_000;
/** Upper bound for a server to exit after a signal. */
const EXIT_TIMEOUT_MS = 30_000;
/** The standalone server binary. */
const SERVER_BIN = path.join(REPO_ROOT, 'target', 'release', `nx-open-cache-server${process.platform === 'win32' ? '.exe' : ''}`);
/** Upper bound for building it. */
const BUILD_TIMEOUT_MS = 60 * 60_000;

/**
 * @typedef {'node' | 'bin'} Entry `node lib/cli.js serve` or the standalone binary
 */
/** Both entry points, for tests that run against each. @type {readonly Entry[]} */
const ENTRIES = ['node', 'bin'];

/** @type {string | undefined} */
let binChecked;

/**
 * The newest modification time (ms) of the files the binary is built from.
 * @returns {number}
 */
function newestSource() {
  let newest = 0;
  /** @param {string} p */
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) {
      for (const e of fs.readdirSync(p)) visit(path.join(p, e));
    } else if (p.endsWith('.rs') || p.endsWith('.toml') || p.endsWith('.lock')) {
      newest = Math.max(newest, st.mtimeMs);
    }
  };
  for (const p of ['src', 'build.rs', 'Cargo.toml', 'Cargo.lock']) {
    const full = path.join(REPO_ROOT, p);
    if (fs.existsSync(full)) visit(full);
  }
  return newest;
}

/**
 * The path of the standalone server binary, built first (`cargo build --release --bin
 * nx-open-cache-server`) when it is missing or older than the sources. Throws when the build fails:
 * a test of the binary never skips.
 * @returns {string}
 */
function ensureServerBin() {
  if (binChecked) return binChecked;
  const fresh = fs.existsSync(SERVER_BIN) && fs.statSync(SERVER_BIN).mtimeMs >= newestSource();
  if (!fresh) {
    const r = spawnSync('cargo', ['build', '--release', '--bin', 'nx-open-cache-server'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: BUILD_TIMEOUT_MS,
    });
    if (r.error || r.status !== 0) {
      throw new Error(`cargo build --release --bin nx-open-cache-server failed (${r.error ? r.error.message : `exit ${r.status}`})`);
    }
    if (!fs.existsSync(SERVER_BIN)) throw new Error(`the build did not produce ${SERVER_BIN}`);
  }
  binChecked = SERVER_BIN;
  return SERVER_BIN;
}

/**
 * The command that runs the server (the words before its options).
 * @param {Entry} [entry]
 * @returns {string[]}
 */
function serveCommand(entry = 'node') {
  return entry === 'bin' ? [ensureServerBin()] : [process.execPath, CLI, 'serve'];
}

/**
 * The test process's environment without NX_OPEN_CACHE_* / NX_SELF_HOSTED_* variables, plus `extra`.
 * @param {Record<string, string>} [extra]
 * @returns {Record<string, string>}
 */
function serveEnv(extra = {}) {
  /** @type {Record<string, string>} */ const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(NX_OPEN_CACHE|NX_SELF_HOSTED)/.test(k) || k.startsWith('NODE_TEST')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * Runs `nx-open-cache serve <args>` (or the binary with `opts.entry: 'bin'`) expecting it to end by
 * itself (errors, --help).
 * @param {string[]} args
 * @param {{ env?: Record<string, string>, cwd?: string, entry?: Entry }} [opts]
 * @returns {{ code: number | null, stdout: string, stderr: string }}
 */
function runServeSync(args, opts = {}) {
  const [bin, ...pre] = serveCommand(opts.entry);
  const r = spawnSync(bin, [...pre, ...args], {
    cwd: opts.cwd || REPO_ROOT,
    env: opts.env || serveEnv(),
    encoding: 'utf8',
    timeout: START_TIMEOUT_MS,
    killSignal: 'SIGKILL',
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * @typedef {{ code: number | null, signal: NodeJS.Signals | null }} Exit
 * @typedef {{
 *   child: import('node:child_process').ChildProcess,
 *   url: string,
 *   banner: string,
 *   stdout: () => string,
 *   stderr: () => string,
 *   exited: Promise<Exit>,
 *   waitForStderr: (pattern: RegExp) => Promise<void>,
 *   stop: () => Promise<Exit>,
 * }} ServeProcess
 */

/**
 * Starts `nx-open-cache serve <args> --listen 127.0.0.1:0` and resolves once the startup line is
 * printed (rejects with the output when it exits first or takes longer than START_TIMEOUT_MS).
 * `opts.wrapper` runs it through another command, e.g. `['prlimit', '--nofile=256:256', '--']`;
 * `opts.entry: 'bin'` runs the standalone binary instead of `node lib/cli.js serve`.
 * @param {string[]} args
 * @param {{ env?: Record<string, string>, cwd?: string, listen?: boolean, wrapper?: string[], entry?: Entry }} [opts]
 * @returns {Promise<ServeProcess>}
 */
function startServe(args, opts = {}) {
  const listen = opts.listen === false ? [] : ['--listen', '127.0.0.1:0'];
  const command = [...(opts.wrapper || []), ...serveCommand(opts.entry), ...args, ...listen];
  const child = spawn(command[0], command.slice(1), {
    cwd: opts.cwd || REPO_ROOT,
    env: opts.env || serveEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  /** @type {{ pattern: RegExp, resolve: () => void }[]} */
  let stderrWaiters = [];
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    err += d;
    stderrWaiters = stderrWaiters.filter((w) => {
      if (!w.pattern.test(err)) return true;
      w.resolve();
      return false;
    });
  });
  /** @type {Promise<Exit>} */
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  const show = () => `\n--- stdout ---\n${out}\n--- stderr ---\n${err}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not print its startup line within ${START_TIMEOUT_MS} ms${show()}`));
    }, START_TIMEOUT_MS);
    let started = false;
    child.stdout.on('data', (d) => {
      out += d;
      const found = startupLine(out);
      if (found && !started) {
        started = true;
        clearTimeout(timer);
        resolve({
          child,
          url: found.url,
          banner: found.line,
          stdout: () => out,
          stderr: () => err,
          exited,
          waitForStderr: (pattern) =>
            pattern.test(err)
              ? Promise.resolve()
              : new Promise((res, rej) => {
                  const t = setTimeout(() => rej(new Error(`stderr never matched ${pattern}${show()}`)), EXIT_TIMEOUT_MS);
                  stderrWaiters.push({ pattern, resolve: () => { clearTimeout(t); res(); } });
                }),
          stop: () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
            return withTimeout(exited, EXIT_TIMEOUT_MS, `serve did not exit after SIGTERM${show()}`, () => child.kill('SIGKILL'));
          },
        });
      }
    });
    exited.then(({ code, signal }) => {
      if (started) return;
      clearTimeout(timer);
      reject(new Error(`serve exited (code ${code}, signal ${signal}) before starting${show()}`));
    });
  });
}

/**
 * The startup line in `out`: text (`nx-open-cache serve: listening on <url> | ...`) or, with
 * `--log json`, a JSON object with `"msg":"nx-open-cache serve started"`.
 * @param {string} out
 * @returns {{ url: string, line: string } | null}
 */
function startupLine(out) {
  for (const line of out.split('\n')) {
    const m = /^nx-open-cache serve: listening on (\S+) /.exec(line);
    if (m) return { url: m[1], line };
    if (line.startsWith('{') && line.includes('"nx-open-cache serve started"')) {
      try {
        const j = JSON.parse(line);
        if (typeof j.url === 'string') return { url: j.url, line };
      } catch { /* not complete yet */ }
    }
  }
  return null;
}

/**
 * @template T
 * @param {Promise<T>} p
 * @param {number} ms
 * @param {string} message
 * @param {() => void} [onTimeout]
 * @returns {Promise<T>}
 */
function withTimeout(p, ms, message, onTimeout) {
  /** @type {NodeJS.Timeout | undefined} */ let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => {
      t = setTimeout(() => {
        if (onTimeout) onTimeout();
        reject(new Error(message));
      }, ms);
    }),
  ]);
}

/**
 * @typedef {{ status: number, headers: import('node:http').IncomingHttpHeaders, body: Buffer }} Reply
 */

/**
 * One HTTP(S) request (a fresh connection each time).
 * @param {string} url full URL
 * @param {{ method?: string, token?: string, body?: Buffer, ca?: string | Buffer, headers?: Record<string, string> }} [opts]
 * @returns {Promise<Reply>}
 */
function request(url, opts = {}) {
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  /** @type {Record<string, string | number>} */
  const headers = { ...(opts.headers || {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body) headers['content-length'] = opts.body.length;
  return withTimeout(
    new Promise((resolve, reject) => {
      const req = mod.request(
        u,
        { method: opts.method || 'GET', headers, agent: false, ...(opts.ca ? { ca: opts.ca } : {}) },
        (res) => {
          /** @type {Buffer[]} */ const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode || 0, headers: res.headers, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(opts.body);
    }),
    120_000,
    `${opts.method || 'GET'} ${url} took longer than 120 s`,
  );
}

/**
 * A private CA and a server certificate for 127.0.0.1 signed by it, made by the openssl CLI, or
 * null when openssl is missing. (A lone self-signed certificate is not enough for every client:
 * rustls-based ones such as Nx's refuse a CA certificate used as the server's own.)
 * @param {string} dir
 * @returns {{ ca: string, cert: string, key: string } | null}
 */
function testCertificate(dir) {
  const ca = path.join(dir, 'ca.pem');
  const caKey = path.join(dir, 'ca-key.pem');
  const csr = path.join(dir, 'server.csr');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const ext = path.join(dir, 'server.ext');
  fs.writeFileSync(ext, [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=IP:127.0.0.1',
    '',
  ].join('\n'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const steps = [
    ['req', '-x509', ...ec, '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=nx-open-cache test CA'],
    ['req', ...ec, '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1'],
    ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext],
  ];
  for (const args of steps) {
    const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: START_TIMEOUT_MS });
    if (r.error || r.status !== 0) return null;
  }
  return fs.existsSync(cert) ? { ca, cert, key } : null;
}

/**
 * A counter of the server's Prometheus `/metrics` (0 when absent).
 * @param {string} text
 * @param {string} name e.g. `nx_open_cache_stored_total`
 */
function metric(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^(\S+?)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}

module.exports = {
  REPO_ROOT,
  CLI,
  SERVER_BIN,
  ENTRIES,
  ensureServerBin,
  serveCommand,
  serveEnv,
  runServeSync,
  startServe,
  request,
  testCertificate,
  metric,
  withTimeout,
};
