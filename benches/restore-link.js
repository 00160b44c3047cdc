#!/usr/bin/env node
'use strict';
/**
 * Workspace restore over a shaped link (issue 14, goal 4, last bullet): a whole Nx workspace (40
 * projects, artifacts from about 1 KiB to 16 MiB) restored as a fresh machine
 *
 *   A. through nx-open-cache's in-process proxy on a cloud backend (S3 on moto, GCS on fake-gcs-server
 *      behind scripts/gcs-xml-front.js, Azure Blob on Azurite), the emulator reached through
 *      benches/relay.js, against
 *   B. `nx-open-cache serve` (fs storage) reached through the same relay profile, read by Nx's own
 *      client (NX_SELF_HOSTED_REMOTE_CACHE_SERVER + token; the plugin steps aside),
 *
 * on the same link profile (20ms and 5ms: RTT/2 each way, 100 MB/s per connection, one RTT per TCP
 * handshake). Target: time A / time B <= 1.0.
 *
 *   node benches/restore-link.js [--backends s3,gcs,azure] [--profiles 20ms,5ms] [--rounds 3]
 *                                [--trace] [--out benches/results/restore-link.md] [--no-write]
 *
 * Per backend: one emulator, one `serve`; the workspace's nx.json names the backend (the endpoint
 * comes from the environment, so nx.json stays the same for every run of that backend). Both stores
 * are filled by a cold run each (A: the plugin stores through the proxy; B: Nx's client PUTs to
 * serve), and must then hold the same 40 task hashes. Per profile: one untimed warm-up of each side,
 * then `--rounds` rounds (A first in odd rounds, B first in even ones). Every run gets a relay process
 * of its own, so the relay's counters (connections accepted, bytes each way) are that run's. A run
 * counts only if all 40 tasks are `[remote cache]` hits (A: the plugin's summary agrees, no errors; B:
 * the plugin stepped aside) and every output file equals the cold run's; otherwise the bench stops
 * and exits 1. `--trace`: one more untimed restore of each side per profile with per-request logs
 * (the proxy's NX_OPEN_CACHE_DEBUG lines; a second serve with `--log json` on the same storage).
 *
 * Nothing leaves loopback: inherited AWS_*, AZURE_*, GOOGLE_*, GCE_* and proxy variables are dropped,
 * the metadata endpoints point at a closed 127.0.0.1 port. Emulators, relays and serve are stopped
 * at the end (and killed if this process exits); serve's filled store is removed after its backend;
 * the workspace and the run logs in .bench/restore-link stay for inspection and are wiped at the
 * next run. Results: stdout and benches/results/restore-link.md (unless --no-write).
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const ws = require('./workspace.js');
const cpu = require('./cpu.js');
const common = require('./restore-common.js');
const { spawnRelay, PROFILES } = require('./relay.js');
const emulators = require('../scripts/emulators.js');
const { startServe, serveEnv } = require('../__tests__/helpers/serve-process.js');

const { BenchError, median, stats, sec, secRange, ratio, mdTable, table, loadavg } = common;

const REPO_ROOT = ws.REPO_ROOT;
const BENCH_DIR = path.join(REPO_ROOT, '.bench', 'restore-link');
const P_ = common.benchPaths(BENCH_DIR);
const REPORT = path.join(__dirname, 'results', 'restore-link.md');
const PROJECTS = 40;
const MIB = 1024 * 1024;
/** Projects whose build writes one small file (an artifact of about 1 KiB). */
const TINY = [0, 1, 2, 3];
/** Projects whose build adds one incompressible file of this size to the usual 200 files. */
const BIG = new Map([
  [4, 1 * MIB],
  [5, 2 * MIB],
  [6, 4 * MIB],
  [7, 8 * MIB],
  [8, 12 * MIB],
  [9, 16 * MIB],
]);
const SERVE_TOKEN = crypto.randomBytes(16).toString('hex');
/** Whole bench: no new backend or round starts after this (a bound, not a target). */
const BUDGET_MS = 40 * 60_000;

/** @param {string} msg */
function log(msg) {
  console.log(`restore-link: ${msg}`);
}

/** @param {string[]} argv */
function parseArgs(argv) {
  const o = { backends: ['s3'], profiles: ['20ms', '5ms'], rounds: 3, trace: false, write: true, out: REPORT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--backends') o.backends = value().split(',').filter(Boolean);
    else if (a === '--profiles') o.profiles = value().split(',').filter(Boolean);
    else if (a === '--rounds') o.rounds = Number(value());
    else if (a === '--trace') o.trace = true;
    else if (a === '--no-write') o.write = false;
    else if (a === '--out') o.out = path.resolve(value());
    else throw new Error(`unknown argument ${a} (known: --backends s3,gcs,azure, --profiles 20ms,5ms, --rounds N, --trace, --out FILE, --no-write)`);
  }
  for (const b of o.backends) if (!emulators.KINDS.includes(/** @type {any} */ (b))) throw new Error(`--backends: unknown ${JSON.stringify(b)} (s3, gcs, azure)`);
  for (const p of o.profiles) if (!PROFILES[p] || p === 'passthrough') throw new Error(`--profiles: unknown ${JSON.stringify(p)} (20ms, 5ms)`);
  if (!(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 9)) throw new Error(`--rounds ${o.rounds} must be 1 to 9`);
  return o;
}

/** @returns {Promise<number>} a loopback port nothing listens on (bound, then closed) */
function closedPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = /** @type {net.AddressInfo} */ (s.address()).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The inherited environment minus cloud credentials, endpoints and HTTP proxies, plus the metadata
 * endpoints pointed at a closed loopback port: no credential chain may leave the machine.
 * @param {number} port
 * @param {Record<string, string>} env
 */
function loopbackOnly(port, env) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [k, v] of Object.entries(env)) {
    if (/^(AWS_|AZURE_|AZURITE_|GOOGLE_|GCE_|GCS_|STORAGE_EMULATOR_HOST)/.test(k)) continue;
    if (/^(https?_proxy|all_proxy|no_proxy)$/i.test(k)) continue;
    out[k] = v;
  }
  return {
    ...out,
    AWS_METADATA_ENDPOINT: `http://127.0.0.1:${port}`,
    AWS_EC2_METADATA_DISABLED: 'true',
    GCE_METADATA_HOST: `127.0.0.1:${port}`,
    GCE_METADATA_IP: `127.0.0.1:${port}`,
    NO_PROXY: '127.0.0.1,localhost',
  };
}

/**
 * Turns the generated workspace into the mixed-size one: TINY projects build one small file, BIG
 * projects add one large incompressible file; nx.json's sharedGlobals include the extra build script.
 * @returns {{ files: number, note: string }} the number of output files a cold run makes
 */
function mixSizes() {
  fs.copyFileSync(path.join(__dirname, 'restore-mixed-build.js'), path.join(P_.wsDir, 'tools', 'build-mixed.js'));
  let files = 0;
  for (let i = 0; i < PROJECTS; i++) {
    const name = `p${String(i).padStart(2, '0')}`;
    const file = path.join(P_.wsDir, 'packages', name, 'project.json');
    const project = JSON.parse(fs.readFileSync(file, 'utf8'));
    const big = BIG.get(i);
    if (TINY.includes(i)) {
      project.targets.build.options.command = 'node tools/build-mixed.js {projectRoot} tiny';
      files += 1;
    } else if (big) {
      project.targets.build.options.command = `node tools/build.js {projectRoot} && node tools/build-mixed.js {projectRoot} big ${big}`;
      files += 201;
    } else {
      files += 200;
    }
    fs.writeFileSync(file, JSON.stringify(project, null, 2) + '\n');
  }
  const note =
    `${TINY.length} tiny projects (one file of about 1 KiB), ${BIG.size} projects with the usual 200 files plus one ` +
    `incompressible file of ${[...BIG.values()].map((b) => b / MIB).join(', ')} MiB, ` +
    `${PROJECTS - TINY.length - BIG.size} projects with the usual 200 files`;
  return { files, note };
}

/** @param {Record<string, unknown>} pluginOptions  written to nx.json, committed */
function setPluginOptions(pluginOptions) {
  const file = path.join(P_.wsDir, 'nx.json');
  const nxJson = JSON.parse(fs.readFileSync(file, 'utf8'));
  nxJson.plugins = [{ plugin: ws.PLUGIN_NAME, options: pluginOptions }];
  nxJson.namedInputs.sharedGlobals = ['{workspaceRoot}/tools/build.js', '{workspaceRoot}/tools/build-mixed.js'];
  fs.writeFileSync(file, JSON.stringify(nxJson, null, 2) + '\n');
  ws.run('git', ['add', '-A'], P_.wsDir);
  ws.run(
    'git',
    ['-c', 'user.name=nx-open-cache bench', '-c', 'user.email=bench@nx-open-cache.invalid', '-c', 'commit.gpgsign=false',
      'commit', '-q', '--no-verify', '--allow-empty', '-m', `plugin options: ${pluginOptions.backend}`],
    P_.wsDir,
  );
}

/** @param {string} url @returns {string} host:port */
function hostPort(url) {
  const u = new URL(url);
  return `${u.hostname}:${u.port}`;
}

/**
 * How the plugin reaches a backend: nx.json options without an endpoint (the same for every run),
 * the relay to start per run, and the environment that points the store at a relay URL.
 * @param {any} emu
 * @param {string} tmp  where GCS key files go
 */
function backendLink(emu, tmp) {
  if (emu.kind === 's3') {
    return {
      options: { backend: 's3', bucket: emu.bucket, region: emu.env.AWS_REGION, forcePathStyle: true },
      upstream: hostPort(emu.endpoint),
      env: (/** @type {string} */ url) => ({ ...emu.env, AWS_ENDPOINT_URL: url, AWS_ENDPOINT: url }),
    };
  }
  if (emu.kind === 'gcs') {
    const key = JSON.parse(fs.readFileSync(emu.env.GOOGLE_SERVICE_ACCOUNT, 'utf8'));
    return {
      options: { backend: 'gcs', bucket: emu.bucket },
      upstream: hostPort(emu.endpoint),
      env: (/** @type {string} */ url) => {
        const keyFile = path.join(tmp, `gcs-key-${hostPort(url).replace(':', '-')}.json`);
        fs.writeFileSync(keyFile, JSON.stringify({ ...key, gcs_base_url: url }));
        return { GOOGLE_SERVICE_ACCOUNT: keyFile, GOOGLE_SERVICE_ACCOUNT_PATH: keyFile, STORAGE_EMULATOR_HOST: url };
      },
    };
  }
  const account = new URL(emu.endpoint).pathname; // /devstoreaccount1
  return {
    options: { backend: 'azure', container: emu.container, accountName: emu.env.AZURE_STORAGE_ACCOUNT_NAME },
    upstream: hostPort(emu.endpoint),
    env: (/** @type {string} */ url) => ({
      ...emu.env,
      AZURITE_BLOB_STORAGE_URL: url,
      AZURE_STORAGE_CONNECTION_STRING: emu.env.AZURE_STORAGE_CONNECTION_STRING.replace(/BlobEndpoint=[^;]*;/, `BlobEndpoint=${url}${account};`),
    }),
  };
}

/**
 * @typedef {object} Restore
 * @property {number} wallMs
 * @property {number} cpuS      nx (the in-process proxy included) + the store's process (emulator or serve)
 * @property {number} conns     TCP connections the relay accepted during the run
 * @property {number} up        bytes client -> store
 * @property {number} down      bytes store -> client
 * @property {number} relayCpuS
 */

/**
 * @typedef {object} Cell  one backend on one profile
 * @property {string} backend
 * @property {string} profile
 * @property {Restore[]} proxy
 * @property {Restore[]} serve
 * @property {string[]} trace  per-request summary lines of the --trace runs
 */

/** Processes to kill if this process exits early. @type {Set<{ stop: () => Promise<unknown> }>} */
const running = new Set();

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const nx = ws.locateNx();
  const host = common.machine();
  const loadStart = loadavg();
  const metadataPort = await closedPort();
  const base = loopbackOnly(metadataPort, common.baseEnv());
  log(`nx ${nx.version}, node ${process.version}, ${host.nproc} CPUs; load ${loadStart}`);

  fs.rmSync(BENCH_DIR, { recursive: true, force: true });
  fs.mkdirSync(P_.logDir, { recursive: true });
  const tmp = path.join(BENCH_DIR, 'tmp');
  fs.mkdirSync(tmp);
  ws.generateWorkspace({ dir: P_.wsDir, projects: PROJECTS, storePath: path.join(BENCH_DIR, 'unused-store'), nxDir: nx.dir });
  const mix = mixSizes();

  /** @type {Cell[]} */
  const cells = [];
  /** @type {string[]} */
  const notes = [];
  /** @type {{ files: number, bytes: number, artifacts: number[] } | undefined} */
  let shape;
  let stoppedEarly = false;
  let failed = false;
  for (const backend of o.backends) {
    if (Date.now() - started > BUDGET_MS) {
      stoppedEarly = true;
      notes.push(`${backend}: not run, the bench's ${BUDGET_MS / 60_000} min budget was used up`);
      continue;
    }
    try {
      await runBackend(backend);
    } catch (e) {
      // Reported, not hidden: the rounds done so far stay in the table, the failure in the notes and
      // the exit code.
      failed = true;
      const msg = e instanceof BenchError ? e.message : e instanceof Error ? e.stack || e.message : String(e);
      console.error(`\nrestore-link: ${backend} FAILED: ${msg}`);
      notes.push(`${backend}: FAILED: ${msg.split('\n')[0]}`);
      await stopAll();
    }
  }

  /** @param {string} backend */
  async function runBackend(backend) {
    const emu = await emulators.start(/** @type {any} */ (backend));
    running.add(emu);
    const serveDir = path.join(BENCH_DIR, `serve-${backend}`);
    fs.mkdirSync(serveDir, { recursive: true });
    const srvEnv = serveEnv({ ...base, NX_OPEN_CACHE_SERVER_TOKENS: `b:read-write:${SERVE_TOKEN}` });
    const serve = await startServe(['--storage', `fs:${serveDir}`, '--log', 'off'], { env: srvEnv });
    running.add(serve);
    const servePid = /** @type {number} */ (serve.child.pid);
    try {
      const link = backendLink(emu, tmp);
      setPluginOptions(link.options);
      common.prepareWorkspaceData(P_, nx, PROJECTS);
      /**
       * The environment of a run through relay `url`.
       * @param {'proxy' | 'serve'} side
       * @param {string} url
       * @param {Record<string, string>} [extra]
       */
      const envFor = (side, url, extra = {}) =>
        side === 'proxy'
          ? common.nxEnv(P_, { ...base, ...link.env(url), NX_OPEN_CACHE_HOST: 'off', NX_OPEN_CACHE_MODE: 'read-write', ...extra })
          : common.nxEnv(P_, { ...base, NX_SELF_HOSTED_REMOTE_CACHE_SERVER: url, NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: SERVE_TOKEN, ...extra });
      /**
       * One nx run through a relay of its own (started before, stopped after the timing).
       * @param {'proxy' | 'serve'} side
       * @param {string} profile
       * @param {string} label
       * @param {{ kind: 'cold' | 'restore', expected?: Map<string, string>, upstream?: string, extra?: Record<string, string> }} k
       */
      const runVia = async (side, profile, label, k) => {
        common.freshMachine(P_);
        const relay = await spawnRelay(['--upstream', k.upstream ?? (side === 'proxy' ? link.upstream : hostPort(serve.url)), '--profile', profile]);
        running.add(relay);
        const storePid = side === 'proxy' ? emu.pid : servePid;
        const store0 = cpu.processTreeCpu(storePid);
        const r = await common.runNx(P_, label, nx, envFor(side, relay.url, k.extra));
        const storeCpu = cpu.processTreeCpu(storePid) - store0;
        const relayCpuS = relay.cpuSeconds();
        const rs = await relay.stop();
        running.delete(relay);
        common.verifyRun(P_, r, { projects: PROJECTS, kind: k.kind, via: side === 'proxy' ? 'plugin' : 'server', expected: k.expected });
        if (!rs || rs.accepted === 0) throw new BenchError(`${label}: the relay carried nothing (${JSON.stringify(rs)}): the run did not cross the link`);
        return { r, restore: { wallMs: r.wallMs, cpuS: r.cpuS + storeCpu, conns: rs.accepted, up: rs.bytesUp, down: rs.bytesDown, relayCpuS } };
      };

      // Fill: a cold run each; then both stores must hold the same task hashes.
      const profile0 = o.profiles[0];
      const coldA = await runVia('proxy', profile0, `${backend}-cold-proxy`, { kind: 'cold' });
      const expected = ws.snapshotOutputs(P_.wsDir);
      if (expected.files.size !== mix.files) throw new BenchError(`cold run produced ${expected.files.size} files, expected ${mix.files}`);
      const coldB = await runVia('serve', profile0, `${backend}-cold-serve`, { kind: 'cold', expected: expected.files });
      const served = ws.readStore(serveDir);
      const keys = await emu.listObjects();
      const cloudHashes = new Set(keys.map((/** @type {string} */ k) => k.split('/').pop()));
      const missing = served.filter((s) => !cloudHashes.has(s.hash)).map((s) => s.hash);
      if (served.length !== PROJECTS || keys.length !== PROJECTS || missing.length) {
        throw new BenchError(
          `after the cold runs serve holds ${served.length} objects and the ${backend} bucket ${keys.length} (expected ${PROJECTS} each, ` +
            `the same hashes); in serve only: ${missing.slice(0, 5).join(', ') || 'none'}`,
        );
      }
      const sizes = served.map((s) => s.payload.length).sort((a, b) => a - b);
      shape = { files: expected.files.size, bytes: expected.bytes, artifacts: sizes };
      log(
        `${backend}: cold runs ${sec(coldA.r.wallMs)} (proxy) and ${sec(coldB.r.wallMs)} (serve); ${PROJECTS} artifacts, ` +
          `${(sizes.reduce((n, s) => n + s, 0) / 1e6).toFixed(1)} MB, ${sizes[0]} B to ${(sizes[sizes.length - 1] / MIB).toFixed(1)} MiB`,
      );
      notes.push(
        `${backend}: cold runs ${sec(coldA.r.wallMs)} through the proxy (${coldA.restore.conns} connections) and ` +
          `${sec(coldB.r.wallMs)} by Nx's client to serve (${coldB.restore.conns} connections), on ${profile0}`,
      );

      for (const profile of o.profiles) {
        /** @type {Cell} */
        const cell = { backend, profile, proxy: [], serve: [], trace: [] };
        cells.push(cell);
        if (profile === profile0) {
          log(`${backend}: warm-up (one restore each, not counted)`);
          await runVia('proxy', profile, `${backend}-${profile}-warmup-proxy`, { kind: 'restore', expected: expected.files });
          await runVia('serve', profile, `${backend}-${profile}-warmup-serve`, { kind: 'restore', expected: expected.files });
        }
        for (let i = 0; i < o.rounds; i++) {
          if (i >= 3 && Date.now() - started > BUDGET_MS) {
            stoppedEarly = true;
            break;
          }
          const order = /** @type {('proxy' | 'serve')[]} */ (i % 2 === 0 ? ['proxy', 'serve'] : ['serve', 'proxy']);
          const parts = [];
          for (const side of order) {
            const { restore } = await runVia(side, profile, `${backend}-${profile}-round${i + 1}-${side}`, { kind: 'restore', expected: expected.files });
            cell[side].push(restore);
            parts.push(`${side} ${sec(restore.wallMs)} (${restore.conns} conns)`);
          }
          const last = (/** @type {'proxy' | 'serve'} */ s) => cell[s][cell[s].length - 1].wallMs;
          log(`${backend} ${profile} round ${i + 1}/${o.rounds}: ${parts.join(', ')}; A/B ${ratio(last('proxy') / last('serve'))}`);
        }
        if (o.trace && profile === profile0) cell.trace = await traceRuns({ backend, profile, runVia, serveDir, srvEnv, expected: expected.files });
      }
    } finally {
      await serve.stop();
      running.delete(serve);
      await emu.stop();
      running.delete(emu);
      // The filled store (tens of MB); the workspace and the logs stay for inspection.
      fs.rmSync(serveDir, { recursive: true, force: true });
    }
  }

  fs.rmSync(tmp, { recursive: true, force: true });
  const load = { start: loadStart, end: loadavg() };
  const seconds = (Date.now() - started) / 1000;
  const rows = resultRows(cells);
  console.log(`\n${table(rows)}\n`);
  for (const c of cells) for (const t of c.trace) console.log(t);
  const reading = readingText(cells);
  console.log(`\n${reading}\n`);
  log(`whole bench ${seconds.toFixed(0)} s; load average ${load.start} at the start, ${load.end} at the end`);
  if (o.write) {
    fs.writeFileSync(o.out, report({ o, host, nx, rows, cells, notes, reading, seconds, load, mix: mix.note, shape, stoppedEarly }));
    log(`wrote ${path.relative(REPO_ROOT, o.out)}`);
  }
  if (failed) {
    console.error('restore-link: FAILED (see above): a restore was not all remote hits, or a store or server misbehaved');
    process.exitCode = 1;
  }
}

/**
 * One more restore of each side with per-request logs: the proxy's (NX_OPEN_CACHE_DEBUG, in nx's
 * output) and a second serve's (`--log json`, same storage), summarised.
 * @param {{ backend: string, profile: string, runVia: Function, serveDir: string, srvEnv: Record<string, string>, expected: Map<string, string> }} t
 * @returns {Promise<string[]>}
 */
async function traceRuns(t) {
  const lines = [];
  const a = await t.runVia('proxy', t.profile, `${t.backend}-${t.profile}-trace-proxy`, {
    kind: 'restore',
    expected: t.expected,
    extra: { NX_OPEN_CACHE_DEBUG: '1' },
  });
  const proxyReqs = [...a.r.output.matchAll(/nx-open-cache: (\w+) \S+ -> (\d+) (\d+) B (\d+) ms/g)].map((m) => ({
    method: m[1],
    status: Number(m[2]),
    bytes: Number(m[3]),
    ms: Number(m[4]),
  }));
  lines.push(traceLine(`${t.backend} ${t.profile} proxy (A)`, proxyReqs, a.restore));
  const traced = await startServe(['--storage', `fs:${t.serveDir}`, '--log', 'json'], { env: t.srvEnv });
  running.add(traced);
  try {
    const b = await t.runVia('serve', t.profile, `${t.backend}-${t.profile}-trace-serve`, {
      kind: 'restore',
      expected: t.expected,
      upstream: hostPort(traced.url),
    });
    const serveReqs = traced
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return {};
        }
      })
      .filter((j) => j.method)
      .map((j) => ({ method: j.method, status: j.status, bytes: j.bytes, ms: j.ms }));
    lines.push(traceLine(`${t.backend} ${t.profile} serve (B)`, serveReqs, b.restore));
  } finally {
    await traced.stop();
    running.delete(traced);
  }
  return lines;
}

/**
 * @param {string} what
 * @param {{ method: string, status: number, bytes: number, ms: number }[]} reqs
 * @param {Restore} r
 */
function traceLine(what, reqs, r) {
  const by = new Map();
  for (const q of reqs) by.set(`${q.method} ${q.status}`, (by.get(`${q.method} ${q.status}`) || 0) + 1);
  const ms = reqs.map((q) => q.ms);
  const bigMs = reqs.filter((q) => q.bytes >= MIB).map((q) => q.ms);
  const smallMs = reqs.filter((q) => q.bytes < 64 * 1024).map((q) => q.ms);
  return (
    `trace ${what}: wall ${sec(r.wallMs)}, ${r.conns} connections through the relay, ${(r.down / 1e6).toFixed(1)} MB down, ` +
    `${(r.up / 1e3).toFixed(0)} kB up; requests seen by the cache server: ${[...by].map(([k, n]) => `${k} x${n}`).join(', ') || 'none'}; ` +
    `ms per request median ${median(ms).toFixed(1)} (sum ${ms.reduce((n, x) => n + x, 0).toFixed(0)}), < 64 KiB median ${median(smallMs).toFixed(1)}, ` +
    `>= 1 MiB median ${median(bigMs).toFixed(1)}`
  );
}

/** @param {Cell[]} cells */
function resultRows(cells) {
  const rows = [
    ['backend', 'link', 'rounds', 'A: proxy on backend (median, min-max)', 'B: Nx client + serve', 'A/B medians', 'A/B per round (median, min-max)', 'CPU s A / B', 'connections A / B', 'MB down A / B'],
  ];
  for (const c of cells) {
    if (!c.proxy.length || c.proxy.length !== c.serve.length) continue;
    const a = stats(c.proxy.map((r) => r.wallMs));
    const b = stats(c.serve.map((r) => r.wallMs));
    const pairs = c.proxy.map((r, i) => r.wallMs / c.serve[i].wallMs);
    const med = (/** @type {Restore[]} */ xs, /** @type {(r: Restore) => number} */ f) => median(xs.map(f));
    rows.push([
      c.backend,
      c.profile,
      String(c.proxy.length),
      secRange(a),
      secRange(b),
      `**${ratio(a.median / b.median)}**${a.median / b.median <= 1 ? '' : ' ✗'}`,
      `${ratio(median(pairs))} (${ratio(Math.min(...pairs))}-${ratio(Math.max(...pairs))})`,
      `${med(c.proxy, (r) => r.cpuS).toFixed(1)} / ${med(c.serve, (r) => r.cpuS).toFixed(1)}`,
      `${med(c.proxy, (r) => r.conns)} / ${med(c.serve, (r) => r.conns)}`,
      `${(med(c.proxy, (r) => r.down) / 1e6).toFixed(1)} / ${(med(c.serve, (r) => r.down) / 1e6).toFixed(1)}`,
    ]);
  }
  return rows;
}

/**
 * A reading that follows the figures.
 * @param {Cell[]} cells
 */
function readingText(cells) {
  const parts = [];
  for (const c of cells) {
    if (!c.proxy.length) continue;
    const a = median(c.proxy.map((r) => r.wallMs));
    const b = median(c.serve.map((r) => r.wallMs));
    const ca = median(c.proxy.map((r) => r.conns));
    const cb = median(c.serve.map((r) => r.conns));
    const rtt = PROFILES[c.profile].rttMs;
    const spread = Math.max(...c.proxy.map((r, i) => r.wallMs / c.serve[i].wallMs)) - Math.min(...c.proxy.map((r, i) => r.wallMs / c.serve[i].wallMs));
    parts.push(
      `${c.backend} on ${c.profile}: A/B ${ratio(a / b)} (${sec(a)} vs ${sec(b)}; single rounds spread over ${spread.toFixed(2)}, ` +
        `${Math.abs(a / b - 1) < spread / 2 ? 'more than the distance to 1.0, so this cell cannot tell which side of the target it is on' : `${a <= b ? 'within' : 'above'} the 1.0 target by more than half that spread`}). ` +
        `Connections per restore through the relay: ${ca} (proxy to the emulator) vs ${cb} (Nx's client to serve); Nx asks for all ` +
        `artifacts at once, so handshakes (${rtt} ms each) overlap rather than add up.`,
    );
  }
  return parts.join(' ');
}

/** @param {any} d */
function report(d) {
  const date = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  /** @type {number[]} */
  const sizes = d.shape ? d.shape.artifacts : [];
  const kib = (/** @type {number} */ n) => (n >= MIB ? `${(n / MIB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
  return `## Workspace restore over a shaped link: proxy on a cloud backend vs Nx's client on \`serve\`

Command: \`node benches/restore-link.js ${process.argv.slice(2).join(' ')}\``.replace(/ `$/, '`') + `

- Date: ${date}
- Machine: ${d.host.nproc} CPUs (\`nproc\`), ${d.host.memory} memory, CPU: ${d.host.model}; ${d.host.kernel}
- Node ${d.host.node}, nx ${d.nx.version}
- Whole bench: ${d.seconds.toFixed(0)} s; load average (1, 5, 15 min) ${d.load.start} at the start, ${d.load.end} at the end${d.stoppedEarly ? ' (the time budget stopped it early: fewer rounds or backends than asked)' : ''}

Target (issue 14, goal 4): time of a whole-workspace restore through the proxy / time of Nx's own client
against \`serve\` on the same shaped link <= 1.0.

### Scenario

A generated Nx workspace (\`.bench/restore-link/ws\`, from \`benches/workspace.js\`), ${PROJECTS} projects with one
cacheable \`build\` each: ${d.mix}. In all ${d.shape ? d.shape.files : '?'} output files, ${d.shape ? (d.shape.bytes / 1e6).toFixed(1) : '?'} MB;
the ${sizes.length} artifacts (Nx's tar.gz) range from ${sizes.length ? kib(sizes[0]) : '?'} to ${sizes.length ? kib(sizes[sizes.length - 1]) : '?'},
${(sizes.reduce((n, s) => n + s, 0) / 1e6).toFixed(1)} MB in all (median ${sizes.length ? kib(median(sizes)) : '?'}).

- A: the plugin's in-process proxy (\`NX_OPEN_CACHE_HOST=off\`) on the backend named in nx.json; the store
  reaches the emulator (S3: moto; GCS: fake-gcs-server behind \`scripts/gcs-xml-front.js\`; Azure: Azurite)
  through \`benches/relay.js\`.
- B: \`nx-open-cache serve --storage fs:<dir> --log off\`, reached through a relay with the same profile by
  Nx's own client (\`NX_SELF_HOSTED_REMOTE_CACHE_SERVER\` = the relay, plus the token); the plugin steps aside.
- The link: ${d.o.profiles.map((/** @type {string} */ p) => `\`${p}\` (RTT ${PROFILES[p].rttMs} ms, ${PROFILES[p].rate / 1e6} MB/s per connection and direction)`).join(', ')};
  RTT/2 each way, one RTT per TCP handshake (\`benches/relay.js\`; \`node benches/relay.js --check\` measures it).
  Every run gets a relay process of its own, so its counters (connections accepted, bytes) are that run's.

Both stores are filled by a cold run each (A stores through the proxy, B by Nx's client PUTting to serve) and
then hold the same ${PROJECTS} task hashes (checked). Every restore is \`nx run-many -t build --output-style=static\` as a
fresh machine (\`NX_DAEMON=false\`, empty \`NX_CACHE_DIRECTORY\` and \`NX_WORKSPACE_DATA_DIRECTORY\` holding the project graph
only, outputs deleted) and counts only if all ${PROJECTS} tasks are \`[remote cache]\` hits (A: the plugin's summary says ${PROJECTS}
hits, no miss, no error; B: the plugin stepped aside) and every output file equals the cold run's; otherwise the bench
exits 1. Per backend and link: one untimed warm-up of each side, then rounds with A first in odd rounds and B first in
even ones. Nothing leaves loopback (cloud credential and proxy variables dropped, metadata endpoints on a closed
127.0.0.1 port). CPU: nx (with the in-process proxy) plus the store's process (emulator or serve), median.

### Results

${mdTable(d.rows)}

${d.cells.some((/** @type {Cell} */ c) => c.trace.length) ? `Per-request traces (\`--trace\`: one more restore of each side, untimed, with the proxy's NX_OPEN_CACHE_DEBUG lines and a serve with \`--log json\`):\n\n${d.cells.flatMap((/** @type {Cell} */ c) => c.trace.map((t) => `- ${t}`)).join('\n')}\n\n` : ''}Notes:

${d.notes.map((/** @type {string} */ n) => `- ${n}`).join('\n')}

### Reading

${d.reading}
`;
}

/** Stops what is still running (an early failure), each by its own handle. */
async function stopAll() {
  for (const p of [...running].reverse()) {
    try {
      await p.stop();
    } catch {
      // ignore: best effort on the way out
    }
  }
  running.clear();
}

for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.on(sig, () => {
    stopAll().finally(() => process.exit(130));
  });
}

main().catch(async (err) => {
  console.error(`\nrestore-link: FAILED: ${err instanceof BenchError ? err.message : err instanceof Error ? err.stack : String(err)}`);
  process.exitCode = 1;
  await stopAll();
});
