#!/usr/bin/env node
'use strict';
/**
 * `npm run bench` (node benches/run.js [--rounds N] [--projects N] [--no-write]):
 * restoring a scaled-up Nx workspace from the remote cache, through nx-open-cache's proxy and fs
 * store, against Nx's own client reading the same artifacts from nginx on loopback (reference).
 *
 *   1. .bench/restore/ws: a generated workspace, 40 projects x 200 output files (200 B - 20 KB text, 5 binary
 *      files each), one cacheable `build` target per project. Wiped and regenerated on every run.
 *   2. Cold run with the plugin (fs store .bench/restore/store): every task runs and is stored.
 *   3. The stored payloads (the envelope header stripped) exported to .bench/restore/nginx-root/v1/cache/<hash>
 *      and served by nginx (our own minimal config, 127.0.0.1, worker_processes 2, sendfile on).
 *   4. N rounds (default 5), alternating the order: `nx run-many -t build` as a fresh machine (empty
 *      local cache, outputs deleted) through the plugin/proxy and against nginx, then the same run
 *      with every task a local cache hit (the floor: Nx's own cost without remote traffic).
 *   5. The HTTP path alone: a Node client GETs all artifacts 20 times, 8 in flight, keep-alive, from
 *      a proxy started in-process and from nginx; 3 repetitions, alternating.
 *   6. A table on stdout and benches/results/restore.md (unless --no-write); benches/report.js
 *      assembles BENCHMARKS.md from benches/results/.
 *
 * Times are reported, never asserted. The bench exits non-zero only when something is functionally
 * wrong: a run without all remote (or local) hits, outputs that differ from the cold run, a store
 * without one object per task, a server that does not start.
 */
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const ws = require('./workspace.js');
const nginx = require('./nginx.js');
const { fetchAll, startProxyProcess } = require('./http-bench.js');
const cpu = require('./cpu.js');
const common = require('./restore-common.js');

const { BenchError, median, stats, machine, baseEnv, settle, loadavg, sec, secRange, ratio, table, mdTable } = common;

const REPO_ROOT = ws.REPO_ROOT;
const BENCH_DIR = path.join(REPO_ROOT, '.bench', 'restore');
const PATHS = common.benchPaths(BENCH_DIR);
const WS_DIR = PATHS.wsDir;
const STORE_DIR = path.join(BENCH_DIR, 'store');
const NGINX_ROOT = path.join(BENCH_DIR, 'nginx-root');
const NGINX_WORK = path.join(BENCH_DIR, 'nginx');
const LOG_DIR = PATHS.logDir;
const REPORT = path.join(__dirname, 'results', 'restore.md');

const HTTP_PASSES = 20;
const HTTP_CONCURRENCY = 8;
const HTTP_REPS = 3;
const NGINX_TOKEN = 'bench-token-nginx-ignores-it';
/** After this long in the timed rounds, no new round starts (once MIN_ROUNDS are done): keeps a bench
 * on a heavily loaded machine near five minutes. */
const ROUNDS_BUDGET_MS = 170_000;
const MIN_ROUNDS = 3;

/** @param {string} msg */
function log(msg) {
  console.log(`bench: ${msg}`);
}

/** @param {string[]} argv */
function parseArgs(argv) {
  const opts = { rounds: 5, projects: 40, write: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 1000) throw new Error(`${flag} needs a whole number from 1 to 1000, got ${v}`);
      return n;
    };
    if (flag === '--rounds') opts.rounds = value();
    else if (flag === '--projects') opts.projects = value();
    else if (flag === '--no-write') opts.write = false;
    else throw new Error(`unknown argument ${a} (known: --rounds N, --projects N, --no-write)`);
  }
  return opts;
}

/** @param {Record<string, string>} [extra] */
const nxEnv = (extra = {}) => common.nxEnv(PATHS, extra);
const freshMachine = () => common.freshMachine(PATHS);
/**
 * @param {string} label
 * @param {{bin: string}} nx
 * @param {Record<string, string>} env
 */
const runNx = (label, nx, env) => common.runNx(PATHS, label, nx, env);

/**
 * Checks one run (see restore-common.js verifyRun); kind `proxy`: a restore through the plugin,
 * `nginx`: a restore by Nx's own client from nginx.
 * @param {import('./restore-common.js').NxRun} r
 * @param {{projects: number, kind: 'cold' | 'proxy' | 'nginx' | 'floor', expected?: Map<string, string>}} o
 */
function verifyRun(r, o) {
  const kind = o.kind === 'proxy' || o.kind === 'nginx' ? 'restore' : o.kind;
  common.verifyRun(PATHS, r, { projects: o.projects, kind, via: o.kind === 'nginx' ? 'server' : 'plugin', expected: o.expected });
}

/** @param {string} file */
function countLines(file) {
  if (!fs.existsSync(file)) return 0;
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0).length;
}

/** @param {{median: number, min: number, max: number}} s */
const cpuRange = (s) =>
  !Number.isFinite(s.median)
    ? 'n/a'
    : s.min === s.max
      ? s.median.toFixed(2)
      : `${s.median.toFixed(2)} (${s.min.toFixed(2)}-${s.max.toFixed(2)})`;
/**
 * Server (or client) CPU seconds per GB served, over all repetitions.
 * @param {{bytes: number, serverCpu: number, clientCpu: number}[]} runs
 * @param {'serverCpu' | 'clientCpu'} key
 */
const cpuPerGb = (runs, key) => runs.reduce((n, r) => n + r[key], 0) / (runs.reduce((n, r) => n + r.bytes, 0) / 1e9);

/** @type {nginx.RunningNginx | undefined} */
let runningNginx;
/** @type {import('./http-bench.js').ProxyProcess | undefined} */
let runningProxy;

process.on('exit', () => {
  runningNginx?.killSync();
  runningProxy?.killSync();
});
for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.on(sig, () => process.exit(130));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const P = opts.projects;
  const benchStarted = Date.now();
  const nx = ws.locateNx();
  const host = machine();
  const loadBefore = loadavg();
  const nginxBin = nginx.ensureNginx();
  const nginxVersion = nginx.version(nginxBin);
  log(`nx ${nx.version}, ${nginxVersion}, node ${process.version}, ${host.nproc} CPUs (${host.model}), ${host.memory}`);

  // 1. Workspace.
  fs.rmSync(BENCH_DIR, { recursive: true, force: true });
  for (const d of [STORE_DIR, LOG_DIR]) fs.mkdirSync(d, { recursive: true });
  ws.generateWorkspace({ dir: WS_DIR, projects: P, storePath: STORE_DIR, nxDir: nx.dir });
  // The project graph, computed once: every fresh machine starts from this workspace data (no
  // cache records), so all timed runs pay the same, small, graph cost.
  common.prepareWorkspaceData(PATHS, nx, P);
  log(`generated ${path.relative(REPO_ROOT, WS_DIR)}: ${P} projects`);

  // 2. Cold run.
  freshMachine();
  const cold = await runNx('cold', nx, nxEnv());
  verifyRun(cold, { projects: P, kind: 'cold' });
  const expected = ws.snapshotOutputs(WS_DIR);
  if (expected.files.size !== P * 200) throw new BenchError(`cold run produced ${expected.files.size} files, expected ${P * 200}`);
  const objects = ws.readStore(STORE_DIR);
  if (objects.length !== P) throw new BenchError(`the store holds ${objects.length} objects after the cold run, expected ${P}`);
  const storedBytes = objects.reduce((n, o) => n + o.payload.length, 0);
  log(
    `cold run ${sec(cold.wallMs)}: ${expected.files.size} output files (${(expected.bytes / 1e6).toFixed(1)} MB), ` +
      `store: ${objects.length} objects, ${(storedBytes / 1e6).toFixed(1)} MB of Nx tar.gz`,
  );

  // 3. nginx with the same payloads.
  ws.exportForNginx(objects, NGINX_ROOT);
  runningNginx = await nginx.startNginx({
    bin: nginxBin,
    root: NGINX_ROOT,
    workDir: NGINX_WORK,
    probePath: `/v1/cache/${objects[0].hash}`,
  });
  const accessLog = path.join(NGINX_WORK, 'access.log');
  const nginxPid = runningNginx.pid;
  log(`nginx (pid ${runningNginx.pid}) serving ${path.relative(REPO_ROOT, NGINX_ROOT)} at ${runningNginx.url}`);
  const nginxEnv = nxEnv({
    NX_SELF_HOSTED_REMOTE_CACHE_SERVER: runningNginx.url,
    NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: NGINX_TOKEN,
  });

  /**
   * One fresh-machine restore, verified.
   * @param {'proxy' | 'nginx'} kind
   * @param {string} label
   */
  const restore = async (kind, label) => {
    freshMachine();
    const before = countLines(accessLog);
    const nginxCpu = cpu.processTreeCpu(nginxPid);
    const r = await runNx(label, nx, kind === 'proxy' ? nxEnv() : nginxEnv);
    // The proxy runs inside nx (counted in cpuS); nginx is a process of its own.
    if (kind === 'nginx') r.cpuS += cpu.processTreeCpu(nginxPid) - nginxCpu;
    verifyRun(r, { projects: P, kind, expected: expected.files });
    const served = countLines(accessLog) - before;
    if (kind === 'nginx' && served !== P) throw new BenchError(`${label}: nginx logged ${served} requests, expected ${P}`);
    if (kind === 'proxy' && served !== 0) throw new BenchError(`${label}: nginx saw ${served} requests during a proxy run`);
    return r;
  };
  /** Same workspace state, every task a local cache hit (outputs deleted, local cache kept). */
  const floor = async (/** @type {string} */ label) => {
    ws.deleteOutputs(WS_DIR);
    settle();
    const r = await runNx(label, nx, nxEnv());
    verifyRun(r, { projects: P, kind: 'floor', expected: expected.files });
    return r;
  };

  // 4. Timed restores (one untimed warm-up of each first).
  log('warm-up: one restore through the proxy, one from nginx (not counted)');
  await restore('proxy', 'warmup-proxy');
  await restore('nginx', 'warmup-nginx');
  /** @type {{proxy: number[], nginx: number[], floor: number[]}} */
  const times = { proxy: [], nginx: [], floor: [] };
  /** @type {{proxy: number[], nginx: number[], floor: number[]}} */
  const cpuTimes = { proxy: [], nginx: [], floor: [] };
  const roundsStarted = Date.now();
  let stoppedEarly = false;
  for (let i = 0; i < opts.rounds; i++) {
    if (i >= MIN_ROUNDS && Date.now() - roundsStarted > ROUNDS_BUDGET_MS) {
      stoppedEarly = true;
      log(`time budget for the rounds (${ROUNDS_BUDGET_MS / 1000} s) used up: stopping after ${i} of ${opts.rounds} rounds`);
      break;
    }
    const order = /** @type {('proxy' | 'nginx')[]} */ (i % 2 === 0 ? ['proxy', 'nginx'] : ['nginx', 'proxy']);
    const parts = [];
    for (const kind of order) {
      const r = await restore(kind, `round${i + 1}-${kind}`);
      times[kind].push(r.wallMs);
      cpuTimes[kind].push(r.cpuS);
      parts.push(`${kind} ${sec(r.wallMs)}`);
    }
    const f = await floor(`round${i + 1}-floor`);
    times.floor.push(f.wallMs);
    cpuTimes.floor.push(f.cpuS);
    parts.push(`floor ${sec(f.wallMs)}`);
    log(`round ${i + 1}/${opts.rounds}: ${parts.join(', ')} (all ${P} tasks restored, outputs identical)`);
  }

  // 5. HTTP path alone.
  const artifacts = objects.map((o) => ({
    hash: o.hash,
    length: o.payload.length,
    sha256: crypto.createHash('sha256').update(o.payload).digest('hex'),
  }));
  const proxy = await startProxyProcess({ workspaceRoot: WS_DIR, storePath: STORE_DIR, env: baseEnv() }).catch((e) => {
    throw new BenchError(`could not start the proxy for the HTTP bench: ${e.message}`);
  });
  runningProxy = proxy;
  const servers = {
    proxy: { baseUrl: proxy.url, token: proxy.token, cpu: () => cpu.processCpu(proxy.pid) },
    nginx: { baseUrl: runningNginx.url, token: NGINX_TOKEN, cpu: () => cpu.processTreeCpu(nginxPid) },
  };
  for (const [name, s] of Object.entries(servers)) {
    // Check pass: every artifact once, bytes compared with the store (untimed).
    await fetchAll({ ...s, artifacts, passes: 1, concurrency: HTTP_CONCURRENCY, verify: true }).catch((e) => {
      throw new BenchError(`HTTP check against ${name}: ${e.message}`);
    });
  }
  /** @typedef {{mbps: number, rps: number, bytes: number, serverCpu: number, clientCpu: number}} HttpRun */
  /** @type {{proxy: HttpRun[], nginx: HttpRun[]}} */
  const httpRuns = { proxy: [], nginx: [] };
  for (let rep = 0; rep < HTTP_REPS; rep++) {
    const order = /** @type {('proxy' | 'nginx')[]} */ (rep % 2 === 0 ? ['proxy', 'nginx'] : ['nginx', 'proxy']);
    const parts = [];
    for (const name of order) {
      const server = servers[name];
      const serverCpu = server.cpu();
      const clientCpu = process.cpuUsage();
      const r = await fetchAll({ ...server, artifacts, passes: HTTP_PASSES, concurrency: HTTP_CONCURRENCY }).catch((e) => {
        throw new BenchError(`HTTP bench against ${name}: ${e.message}`);
      });
      const client = process.cpuUsage(clientCpu);
      const m = {
        mbps: r.bytes / 1e6 / r.seconds,
        rps: r.requests / r.seconds,
        bytes: r.bytes,
        serverCpu: server.cpu() - serverCpu,
        clientCpu: (client.user + client.system) / 1e6,
      };
      httpRuns[name].push(m);
      parts.push(`${name} ${m.mbps.toFixed(0)} MB/s ${m.rps.toFixed(0)} req/s`);
    }
    log(`HTTP repetition ${rep + 1}/${HTTP_REPS}: ${parts.join(', ')}`);
  }
  const proxyStats = await proxy.stop();
  runningProxy = undefined;
  const expectedHits = artifacts.length * (1 + HTTP_PASSES * HTTP_REPS);
  if (proxyStats.hits !== expectedHits || proxyStats.misses !== 0 || proxyStats.errorCount !== 0) {
    throw new BenchError(
      `in-process proxy counters: ${proxyStats.hits} hits (expected ${expectedHits}), ${proxyStats.misses} misses, ` +
        `${proxyStats.errorCount} errors ${JSON.stringify(proxyStats.errors)}`,
    );
  }
  await runningNginx.stop();
  runningNginx = undefined;

  // 6. Report.
  const s = { proxy: stats(times.proxy), nginx: stats(times.nginx), floor: stats(times.floor) };
  const wallRatio = s.proxy.median / s.nginx.median;
  const paired = median(times.proxy.map((p, i) => p / times.nginx[i]));
  const proxyPath = s.proxy.median - s.floor.median;
  const nginxPath = s.nginx.median - s.floor.median;
  const cachePathRatio = nginxPath > 20 ? proxyPath / nginxPath : NaN;
  const coldRatio = cold.wallMs / s.proxy.median;
  const h = {
    proxyMbps: median(httpRuns.proxy.map((r) => r.mbps)),
    nginxMbps: median(httpRuns.nginx.map((r) => r.mbps)),
    proxyRps: median(httpRuns.proxy.map((r) => r.rps)),
    nginxRps: median(httpRuns.nginx.map((r) => r.rps)),
    /** server CPU seconds per GB served, over all repetitions */
    proxyCpuPerGb: cpuPerGb(httpRuns.proxy, 'serverCpu'),
    nginxCpuPerGb: cpuPerGb(httpRuns.nginx, 'serverCpu'),
    proxyClientCpuPerGb: cpuPerGb(httpRuns.proxy, 'clientCpu'),
    nginxClientCpuPerGb: cpuPerGb(httpRuns.nginx, 'clientCpu'),
  };
  const c = { proxy: stats(cpuTimes.proxy), nginx: stats(cpuTimes.nginx), floor: stats(cpuTimes.floor) };
  const cpuRatio = c.proxy.median / c.nginx.median;
  const httpTimeRatio = h.nginxMbps / h.proxyMbps; // proxy time / nginx time for the same bytes
  const benchSeconds = (Date.now() - benchStarted) / 1000;
  const load = { before: loadBefore, after: loadavg() };

  const nxRows = [
    [`nx run-many -t build (${P} tasks)`, 'wall: median (min-max)', 'CPU s: median (min-max)', 'runs'],
    ['cold (every task runs, stored via proxy)', sec(cold.wallMs), cpuRange(stats([cold.cpuS])), '1'],
    ['restore through nx-open-cache proxy + fs', secRange(s.proxy), cpuRange(c.proxy), String(s.proxy.n)],
    ['restore from nginx (reference)', secRange(s.nginx), cpuRange(c.nginx), String(s.nginx.n)],
    ['floor: every task a local cache hit', secRange(s.floor), cpuRange(c.floor), String(s.floor.n)],
  ];
  const ratioRows = [
    ['ratio', 'value', 'meaning'],
    ['proxy / nginx, wall time (medians)', ratio(wallRatio), 'target <= 1.10'],
    ['proxy / nginx, per round (median of pairs)', ratio(paired), 'same, robust to drift between rounds'],
    [
      'cache path: (proxy - floor) / (nginx - floor)',
      ratio(cachePathRatio),
      `${(proxyPath / 1000).toFixed(2)} s vs ${(nginxPath / 1000).toFixed(2)} s of remote restore work`,
    ],
    ['cold / remote-hit restore (proxy), wall', `${coldRatio.toFixed(2)}x`, 'how much faster a restore is than building'],
    ['proxy / nginx, CPU time (medians)', ratio(cpuRatio), 'nx + server CPU seconds (leaves out waiting for a CPU)'],
  ];
  const httpRows = [
    ['HTTP GET, Node client, 8 in flight', 'MB/s (median)', 'req/s (median)', 'reps (MB/s)', 'server CPU s/GB', 'client CPU s/GB'],
    [
      'nx-open-cache proxy + fs',
      h.proxyMbps.toFixed(0),
      h.proxyRps.toFixed(0),
      httpRuns.proxy.map((r) => r.mbps.toFixed(0)).join(', '),
      h.proxyCpuPerGb.toFixed(2),
      h.proxyClientCpuPerGb.toFixed(2),
    ],
    [
      'nginx (reference)',
      h.nginxMbps.toFixed(0),
      h.nginxRps.toFixed(0),
      httpRuns.nginx.map((r) => r.mbps.toFixed(0)).join(', '),
      h.nginxCpuPerGb.toFixed(2),
      h.nginxClientCpuPerGb.toFixed(2),
    ],
    ['proxy / nginx time for the same bytes', ratio(httpTimeRatio), '', 'target <= 1.10', ratio(h.proxyCpuPerGb / h.nginxCpuPerGb), ''],
  ];

  console.log(`\n${table(nxRows)}\n\n${table(ratioRows)}\n\n${table(httpRows)}\n`);
  log(`total bench time ${benchSeconds.toFixed(0)} s; load average ${load.before} at the start, ${load.after} at the end`);

  const reading = readingParagraph({ P, objectsMb: (storedBytes / 1e6).toFixed(1), load, s, c, cpuRatio, wallRatio, paired, cachePathRatio, proxyPath, nginxPath, coldRatio, h, httpTimeRatio, host });
  console.log(`\n${reading}\n`);
  if (opts.write) {
    const md = report({
      nx,
      nginxVersion,
      host,
      P,
      rounds: times.proxy.length,
      roundsNote: stoppedEarly
        ? ` (${opts.rounds} were asked for; the bench stops starting new rounds after ${ROUNDS_BUDGET_MS / 1000} s ` +
          `once ${MIN_ROUNDS} are done, which only happens on a heavily loaded machine)`
        : '',
      expected,
      objects: objects.length,
      storedBytes,
      nxRows,
      ratioRows,
      httpRows,
      reading,
      benchSeconds,
      load,
    });
    fs.writeFileSync(REPORT, md);
    log(`wrote ${path.relative(REPO_ROOT, REPORT)}`);
  }
}

/**
 * An honest, data-driven reading of this run's figures (the wording follows the numbers).
 * @param {any} d
 */
function readingParagraph(d) {
  const { load, s, c, cpuRatio, wallRatio, paired, cachePathRatio, proxyPath, nginxPath, coldRatio, h, httpTimeRatio, host } = d;
  const spread = (/** @type {{median: number, min: number, max: number}} */ x) => (x.max - x.min) / x.median;
  const noise = Math.max(spread(s.proxy), spread(s.nginx));
  const diff = wallRatio - 1;
  const pct = (/** @type {number} */ x) => `${(x * 100).toFixed(0)}%`;
  const target = (/** @type {number} */ r) => (r <= 1.1 ? 'inside' : 'outside');
  const parts = [];
  parts.push(
    `These figures come from one run on a shared, noisy machine: ${host.nproc} CPUs that other jobs were using at the ` +
      `same time (load average ${load.before.split(' ')[0]} at the start and ${load.after.split(' ')[0]} at the end), so ` +
      `runs of the same kind spread by up to ${pct(noise)} of their median (min to max), and that spread, not the ` +
      `third decimal of a ratio, is the measure of what can be told apart.`,
  );
  parts.push(
    `Restoring the ${d.P}-project workspace through the proxy took ${sec(s.proxy.median)} against ` +
      `${sec(s.nginx.median)} from nginx (ratio ${ratio(wallRatio)}; ${ratio(paired)} as the median of the per-round ` +
      `pairs): ${Math.abs(diff) <= noise ? `a ${pct(Math.abs(diff))} difference, within the noise` : `a ${pct(Math.abs(diff))} ${diff > 0 ? 'cost' : 'gain'}, larger than the noise`}. ` +
      `The medians are ${target(wallRatio)} the 10% target` +
      (noise > 0.1 ? `, but with this much noise a 10% difference cannot be resolved by this run.` : '.'),
  );
  if (Number.isFinite(cpuRatio)) {
    parts.push(
      `CPU time, which leaves out waiting for a CPU (though contention inflates it too on this VM), gives ${c.proxy.median.toFixed(2)} s for a proxy ` +
        `restore (nx with the proxy inside it) against ${c.nginx.median.toFixed(2)} s for an nginx restore (nx plus ` +
        `nginx's processes), a ratio of ${ratio(cpuRatio)}.`,
    );
  }
  parts.push(
    `${s.floor.median >= s.proxy.median / 2 ? 'Most of the wall time is Nx itself' : 'Nx itself accounts for less than half of the wall time here'}: ` +
      `with every task a local hit the same run takes ${sec(s.floor.median)}, so ` +
      `the remote part is ${(proxyPath / 1000).toFixed(2)} s through the proxy and ${(nginxPath / 1000).toFixed(2)} s ` +
      `from nginx (cache-path ratio ${ratio(cachePathRatio)}), and that part is mostly Nx's client unpacking ` +
      `${d.objectsMb} MB of tar.gz into its local cache (the floor run copies the files out of the local cache too); as a difference of ` +
      `medians of noisy runs this ratio is far less precise than the plain wall-time ratio.`,
  );
  parts.push(
    `On the HTTP path alone the proxy served ${h.proxyMbps.toFixed(0)} MB/s against nginx's ${h.nginxMbps.toFixed(0)} ` +
      `MB/s (time ratio ${ratio(httpTimeRatio)}, ${target(httpTimeRatio)} the 10% target there) and spent ` +
      `${h.proxyCpuPerGb.toFixed(2)} CPU s per GB served against nginx's ${h.nginxCpuPerGb.toFixed(2)}: the proxy reads ` +
      `every object into memory and checks its sha256 digest on every GET (by design: a corrupt object must be a miss), ` +
      `while nginx hands the file to sendfile` +
      (httpTimeRatio > 1.1
        ? `; on ${host.nproc} CPUs shared with the Node client, that CPU shows up as lower throughput.`
        : `; on this run the extra CPU did not cost throughput.`) +
      ` In the Nx runs above it amounts to about ` +
      `${Math.round(h.proxyCpuPerGb * Number(d.objectsMb))} ms of proxy CPU for the ${d.objectsMb} MB ` +
      `of one restore.`,
  );
  parts.push(
    coldRatio >= 0.9 && coldRatio <= 1.1
      ? `A remote-cache restore took about as long as the cold build (${coldRatio.toFixed(2)}x): these builds are ` +
          `deliberately cheap (a Node process and a few tens of ms of work per task), and a restore, like a build, ` +
          `writes every file twice (Nx's local cache and the outputs) and must download and unpack them as well, so for ` +
          `such tasks the cache saves little time.`
      : coldRatio > 1.1
      ? `A remote-cache restore took ${(100 / coldRatio).toFixed(0)}% of the cold build's wall time ` +
          `(${coldRatio.toFixed(2)}x faster), although these builds are deliberately cheap (a Node process and a few ` +
          `tens of ms of work per task) and a restore writes as many files as a build does.`
      : `A remote-cache restore was slower than the cold build (${coldRatio.toFixed(2)}x): these builds are deliberately ` +
          `cheap (a Node process and a few tens of ms of work per task), and a restore, like a build, writes every file ` +
          `twice (Nx's local cache and the outputs) and must download and unpack them as well, so for such tasks on a ` +
          `busy machine the cache does not pay off.`,
  );
  return parts.join(' ');
}

/** @param {any} d */
function report(d) {
  const date = new Date().toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return `## Restore from the remote cache: proxy + fs vs nginx

Command: \`node benches/run.js\` (part of \`npm run bench\`; \`--rounds N\`, default 5).

- Date: ${date}
- Machine: ${d.host.nproc} CPUs (\`nproc\`), ${d.host.memory} memory, CPU: ${d.host.model}; ${d.host.kernel}
- Node ${d.host.node}, nx ${d.nx.version}, ${d.nginxVersion} (Debian package)
- Whole bench: ${d.benchSeconds.toFixed(0)} s; load average (1, 5, 15 min) ${d.load.before} at the start, ${d.load.after} at the end

### Scenario

A generated Nx workspace (\`.bench/restore/ws\`): ${d.P} projects, each with one cacheable \`build\` target
(\`outputs: ["{projectRoot}/dist"]\`) whose Node-only script (\`benches/fixture/build.js\`) writes 200 files:
195 text files of 200 B - 20 KB (log-uniform) and 5 incompressible binary files of 4 - 20 KB, derived
deterministically from the project's sources. In all ${d.expected.files.size} output files, ${(d.expected.bytes / 1e6).toFixed(1)} MB.
The cold run stored ${d.objects} objects, ${(d.storedBytes / 1e6).toFixed(1)} MB of Nx's tar.gz payloads, in the fs
store \`.bench/restore/store\`. nginx serves the same payloads (the 48-byte envelope header stripped) from
\`.bench/restore/nginx-root/v1/cache/<hash>\` on 127.0.0.1 (own config: worker_processes 2, sendfile on,
daemon off).

Every \`nx run-many -t build --output-style=static\` runs with \`NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false\`
as a fresh machine: empty \`NX_CACHE_DIRECTORY\`, outputs deleted, workspace data holding only the project
graph. It counts only if all ${d.P} tasks are \`[remote cache]\` hits and every output file (bytes and mode)
equals the cold run's. The proxy runs load the plugin, which starts the in-process proxy on the fs store;
the nginx runs set \`NX_SELF_HOSTED_REMOTE_CACHE_SERVER\` to nginx, so the plugin steps aside and Nx's own
client reads from nginx. After one untimed warm-up of each, ${d.rounds} rounds${d.roundsNote} alternate the order
(proxy first in odd rounds, nginx first in even ones). The floor is the same run with every task a local
cache hit (outputs deleted, local cache kept): Nx's own cost without remote traffic.

The HTTP-only measurement GETs all ${d.objects} artifacts ${HTTP_PASSES} times over (${HTTP_CONCURRENCY} requests in flight,
keep-alive \`http.Agent\`) from a Node client, against the proxy and against nginx; ${HTTP_REPS} repetitions in
alternating order, medians reported. The proxy is started with
\`require('index.js').CacheProxy.start(workspaceRoot, {path: store}, env)\` in a process of its own
(\`benches/proxy-server.js\`), like nginx, so neither shares the client's process; its counters from
\`stop()\` are checked (every GET a hit, no errors). An untimed pass first checks every body against the
stored bytes.

CPU time comes from /proc: for an nx run, the CPU of nx and everything it waited for (the in-process
proxy included), plus, for nginx runs, the CPU nginx's master and workers used during the run; for the
HTTP measurement, the server process(es) and the client, per GB served. It is a second view next to
wall time, not a noise-free one: it leaves out the time spent waiting for a CPU, but on a virtual machine
whose CPUs are contended the kernel time of the same file operations grows with the load too.

### Results

${mdTable(d.nxRows)}

${mdTable(d.ratioRows)}

${mdTable(d.httpRows)}

### Reading

${d.reading}
`;
}

main().catch(async (err) => {
  console.error(`\nbench: FAILED: ${err instanceof BenchError ? err.message : err instanceof Error ? err.stack : String(err)}`);
  process.exitCode = 1;
  try {
    await runningProxy?.stop();
  } catch {
    // ignore
  }
  try {
    await runningNginx?.stop();
  } catch {
    runningNginx?.killSync();
  }
});
