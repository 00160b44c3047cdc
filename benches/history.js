#!/usr/bin/env node
'use strict';
/**
 * What recording the run history costs a run, and how large the history gets.
 *
 *   node benches/history.js [--appends 30] [--runs 10000] [--tasks 500] [--out benches/results/history.md]
 *
 * 1. Append time at `--tasks` tasks: building the run record from Nx's task results
 *    (buildRunRecord) + writing it and enforcing the bounds (appendRun), median / p95 / max of
 *    `--appends` appends, (a) to a history already holding 1,000 runs (the count bound) and their
 *    filesets, (b) to a history full by size of runs of the same size (the steady state of a
 *    workspace this large), and (c) the first append in a fresh process's state (no index read yet).
 * 2. Size: `--runs` runs of `--tasks` tasks appended one after the other (each changing 5 projects,
 *    whose new filesets are written first, as lib/inputs.js would): the history's size on disk
 *    (runs + filesets + index) after every 100 appends stays within NX_OPEN_CACHE_HISTORY_MB.
 * 3. Artifact metadata, apart (network work through the proxy, not the append): publishing the meta
 *    of `--tasks` stored tasks and fetching that of `--tasks` hits through a real in-process proxy
 *    with an fs store.
 * 4. The whole end of a run at `--tasks` tasks, as postTasksExecution does it: capturing the new
 *    fileset values from a real workspace on disk (lib/inputs.js captureFilesets: glob walks and
 *    file hashing, bounded by its deadline and walk count), building the run record and appending it
 *    (wall and CPU time), for the first run of a workspace (every value new), the runs after it
 *    (catching up on what the deadline left) and the steady state (5 projects changed per run);
 *    then the meta exchange (records built lazily with their file lists) through a real proxy.
 *    `--tail-only` runs this part alone.
 * Task records are synthetic but shaped like Nx 24's (hashDetails with ~25 nodes: the project's
 * own and 5 dependencies' filesets, configuration, tsconfig, npm packages, a workspace file).
 */

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const history = require('../lib/history.js');
const meta = require('../lib/meta.js');
const native = require('../index.js');

const args = process.argv.slice(2);
const opt = (/** @type {string} */ name, /** @type {string} */ dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const APPENDS = Number(opt('--appends', '30'));
const RUNS = Number(opt('--runs', '10000'));
const TASKS = Number(opt('--tasks', '500'));
const OUT = opt('--out', '');
const TAIL_ONLY = args.includes('--tail-only');
/** For a before figure: the capture without its deadline and walk count (as before review item 1). */
const UNBOUNDED = args.includes('--capture-unbounded');
/** Pause between timed appends: real runs end seconds apart, not back to back. */
const GAP_MS = Number(opt('--gap', '250'));
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** @param {number[]} xs @param {number} q */
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))];
};
/** @param {bigint} t0 */
const msSince = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

/** A 19-digit hash like Nx's, deterministic. @param {number} a @param {number} b */
const h = (a, b) => String(1e18 + ((a * 2654435761 + b * 40503) % 8e17)).slice(0, 19);

/**
 * The hook's task results of one run of `n` tasks; `version` changes the filesets of 5 projects.
 * @param {number} n
 * @param {number} version
 * @param {number} start
 */
function taskResults(n, version, start) {
  /** @type {Record<string, any>} */ const results = {};
  const changed = new Set(Array.from({ length: 5 }, (_, i) => (version * 7 + i * 97) % n));
  const fileset = (/** @type {number} */ p) => h(p, changed.has(p) ? version : 0);
  // The first run of a workspace brings every project's fileset; later ones, the changed ones.
  if (version === 0) for (let p = 0; p < n; p++) changed.add(p);
  const statuses = ['remote-cache', 'local-cache', 'success', 'success', 'remote-cache'];
  for (let p = 0; p < n; p++) {
    /** @type {Record<string, string>} */ const nodes = {
      AllExternalDependencies: h(1, 1),
      [`p${p}:ProjectConfiguration`]: h(p, 11),
      [`p${p}:TsConfig`]: h(p, 12),
      [`p${p}:packages/p${p}/**/*,!packages/p${p}/**/*.spec.ts`]: fileset(p),
      'workspace:[{workspaceRoot}/tools/build.js]': h(2, 2),
    };
    for (let d = 1; d <= 5; d++) {
      const q = (p + d * 13) % n;
      nodes[`p${q}:packages/p${q}/**/*,!packages/p${q}/**/*.spec.ts`] = fileset(q);
    }
    for (let k = 0; k < 12; k++) nodes[`npm:package-${(p + k) % 40}`] = h(k, 99);
    const id = `p${p}:build`;
    results[id] = {
      task: {
        id, target: { project: `p${p}`, target: 'build' }, hash: h(p, version + 1000), cache: true,
        outputs: [`{projectRoot}/dist`], projectRoot: `packages/p${p}`, startTime: start + p, endTime: start + p + 1200,
        hashDetails: { command: h(p, 5), nodes, implicitDeps: {}, runtime: {} },
      },
      status: statuses[p % statuses.length], code: 0,
    };
  }
  return { results, changed: [...changed].map(fileset) };
}

/** Per-run summary counters, as the proxy reports them. */
const SUMMARY = /** @type {any} */ ({
  hits: 200, misses: 200, stored: 200, alreadyStored: 0, refusedWrites: 0, bytesDown: 1e8, bytesUp: 1e8, cacheMillis: 4000,
  errorCount: 0, errors: [], refusedCount: 0, routineCount: 0, refusals: [], location: 'fs /cache', mode: 'read-write',
  modeSource: 'default', runId: 'x', startedAt: '', endedAt: '',
});

/**
 * Writes the filesets a run introduces (as lib/inputs.js would: per-file hashes of 60 files).
 * @param {string} root
 * @param {string[]} hashes
 */
function writeFilesets(root, hashes) {
  const dir = path.join(history.historyDir(root), 'filesets');
  fs.mkdirSync(dir, { recursive: true });
  for (const fh of hashes) {
    const files = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`packages/p/src/file-${i}.ts`, h(i, Number(fh.slice(-6)))]));
    fs.writeFileSync(path.join(dir, `${fh}.json`), JSON.stringify(files));
  }
}

/**
 * One timed append of a run: record + append.
 * @param {string} root
 * @param {number} i
 * @param {NodeJS.ProcessEnv} env
 */
function timedAppend(root, i, env) {
  const start = 1_800_000_000_000 + i * 60_000;
  const { results, changed } = taskResults(TASKS, i, start);
  writeFilesets(root, changed);
  const context = { id: `run-${i}`, workspaceRoot: root, argv: ['node', 'nx', 'run-many', '-t', 'build'], startTime: start, endTime: start + 60_000, taskResults: results };
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const record = history.buildRunRecord(context, SUMMARY, { nxVersion: '24.0.6', now: start + 60_000 });
  const t1 = process.hrtime.bigint();
  const out = history.appendRun(root, record, { env, now: start + 60_000 });
  const append = msSince(t1);
  const cpu = process.cpuUsage(cpu0);
  return { build: Number(t1 - t0) / 1e6, append, cpu: (cpu.user + cpu.system) / 1000, bytes: out.bytes };
}

/** Bytes of every file under `dir`. @param {string} dir */
function du(dir) {
  let total = 0;
  for (const f of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (f.isFile()) total += fs.statSync(path.join(f.parentPath ?? /** @type {any} */ (f).path, f.name)).size;
  }
  return total;
}

/** @param {string} label @param {{ build: number, append: number, cpu: number }[]} xs */
function row(label, xs) {
  const tot = xs.map((x) => x.build + x.append);
  const cpu = xs.map((x) => x.cpu);
  const f = (/** @type {number} */ v) => `${v.toFixed(1)} ms`;
  return `| ${label} | ${xs.length} | ${f(quantile(xs.map((x) => x.build), 0.5))} | ${f(quantile(xs.map((x) => x.append), 0.5))} | ${f(quantile(tot, 0.5))} | ${f(quantile(tot, 0.95))} | ${f(Math.max(...tot))} | ${f(quantile(cpu, 0.5))} | ${f(quantile(cpu, 0.95))} |`;
}


/** Files per project in the end-of-run workspace. */
const FILES_PER_PROJECT = 20;

/**
 * The end of a run (capture + record + append, then the meta exchange) at TASKS tasks, on a real
 * workspace on disk. Returns its markdown section.
 * @param {string} base
 * @param {NodeJS.ProcessEnv} env
 */
async function tailPhase(base, env) {
  const { captureFilesets } = require('../lib/inputs.js');
  const root = path.join(base, 'tail');
  for (let p = 0; p < TASKS; p++) {
    const dir = path.join(root, 'packages', `p${p}`, 'src');
    fs.mkdirSync(dir, { recursive: true });
    for (let i = 0; i < FILES_PER_PROJECT; i++) fs.writeFileSync(path.join(dir, `file-${i}.ts`), `export const v${i} = ${p * 1000 + i};\n`.repeat(20));
  }
  fs.mkdirSync(path.join(root, 'tools'), { recursive: true });
  fs.writeFileSync(path.join(root, 'tools', 'build.js'), 'module.exports = 1;\n');
  fs.writeFileSync(path.join(root, 'nx.json'), '{}');
  /** @type {{ capture: number, rest: number, total: number, cpu: number, stored: number, skipped: number }[]} */
  const runs = [];
  let last;
  const STEADY = Math.max(APPENDS, 10);
  for (let v = 0; v < 4 + STEADY; v++) {
    await sleep(GAP_MS);
    const start = 1_900_000_000_000 + v * 60_000;
    const { results } = taskResults(TASKS, v, start);
    last = results;
    const context = { id: `tail-${v}`, workspaceRoot: root, argv: ['node', 'nx', 'run-many', '-t', 'build'], startTime: start, endTime: start + 60_000, taskResults: results };
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const cap = await captureFilesets(root, results, history.historyDir(root), UNBOUNDED ? { deadlineMs: Infinity, maxNew: Infinity } : {});
    const t1 = process.hrtime.bigint();
    const record = history.buildRunRecord(context, SUMMARY, { nxVersion: '24.0.6', now: start + 60_000 });
    history.appendRun(root, record, { env, now: start + 60_000, filesets: cap.written });
    const cpu = process.cpuUsage(cpu0);
    runs.push({ capture: Number(t1 - t0) / 1e6, rest: msSince(t1), total: msSince(t0), cpu: (cpu.user + cpu.system) / 1000, stored: cap.stored, skipped: cap.skipped });
  }
  // The meta exchange of the last run: publish its successful tasks' meta (built lazily, with file
  // lists), fetch its remote hits'.
  const proxy = native.CacheProxy.start(root, { backend: 'fs', path: path.join(base, 'tail-store') }, {});
  const inputs = require('../lib/inputs.js');
  const tasks = Object.values(/** @type {Record<string, any>} */ (last));
  const filesRun = inputs.metaFilesRun(root, history.historyDir(root));
  let withFiles = 0;
  const publish = tasks.filter((r) => r.status === 'success').map((r) => ({
    hash: r.task.hash,
    json: () => {
      const f = inputs.metaFiles(filesRun, r.task.hashDetails);
      if (Object.keys(f.files).length) withFiles += 1;
      return meta.buildMeta({ task: r.task, durationMs: 1200, nxVersion: '24.0.6', runId: 'bench', files: f.files, inexact: f.inexact }).json;
    },
  }));
  const fetchHashes = tasks.filter((r) => r.status === 'remote-cache').map((r) => r.task.hash);
  const pack = (/** @type {string} */ json) => native.packAsync({ root, terminalOutput: json, code: 0, format: 'nx' }).then((x) => /** @type {Buffer} */ (x));
  // The hits' meta exists (stored by "another machine") before the timed exchange.
  await meta.exchangeMeta(proxy, { publish: fetchHashes.map((hash) => ({ hash, json: JSON.stringify({ format: 'nx-open-cache-meta', version: 1, task: 't', hash, durationMs: 1000 }) })), fetch: [] }, { pack, totalMs: 60_000 });
  const cpu0 = process.cpuUsage();
  const ex = await meta.exchangeMeta(proxy, { publish, fetch: fetchHashes }, { pack });
  const exCpu = process.cpuUsage(cpu0);
  await proxy.stop();

  const f = (/** @type {number} */ v) => `${v.toFixed(0)} ms`;
  const line = (/** @type {string} */ label, /** @type {typeof runs} */ xs) => `| ${label} | ${xs.length} | ${f(quantile(xs.map((x) => x.capture), 0.5))} | ${f(quantile(xs.map((x) => x.rest), 0.5))} | ${f(quantile(xs.map((x) => x.total), 0.5))} | ${f(quantile(xs.map((x) => x.total), 0.95))} | ${f(quantile(xs.map((x) => x.cpu), 0.5))} | ${f(quantile(xs.map((x) => x.cpu), 0.95))} | ${xs.map((x) => x.stored).join('/')}${xs.length > 4 ? '' : ` (left: ${xs.map((x) => x.skipped).join('/')})`} |`;
  const steady = runs.slice(4);
  return `## The end of a run at ${TASKS} tasks (capture + record + append; then the meta exchange)

Command: ${TAIL_ONLY ? `\`node benches/history.js --tail-only --tasks ${TASKS}${APPENDS !== 30 ? ` --appends ${APPENDS}` : ''}${UNBOUNDED ? ' --capture-unbounded' : ''}\`` : 'part 4 of the command above'}.

- Date: ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC; ${os.cpus().length} CPUs, Node ${process.version}; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}
- Workspace on disk: ${TASKS} projects of ${FILES_PER_PROJECT} files, no Nx file map (every new fileset value is a glob walk + file hashing); each task has its own and 5 dependencies' filesets and a workspace file (${TASKS + 1} fileset values)
- Capture bounds: ${UNBOUNDED ? 'none (--capture-unbounded: the before figure)' : `${inputs.CAPTURE_DEADLINE_MS} ms deadline (no walk starts after it), ${inputs.MAX_NEW_PER_RUN} walks per run`}

| run | runs | capture (median) | record + append (median) | total wall (median) | total wall (p95) | CPU (median) | CPU (p95) | values stored per run |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
${line('first run of the workspace (all values new)', runs.slice(0, 1))}
${line('runs 2-4 (catching up on what the bounds left)', runs.slice(1, 4))}
${line('steady state (5 projects changed per run)', steady)}

Meta exchange of the last run (in-process proxy, fs store; records built inside the pool, file lists
read once per run): ${publish.length} published (${withFiles} with file lists), ${fetchHashes.length} fetched:
**${ex.millis} ms** wall, ${(exCpu.user + exCpu.system) / 1000 | 0} ms CPU in this process (the proxy's own work is
in the same process here), ${ex.published} stored, ${ex.producers.size} read${ex.timedOut ? ', cut at the 3 s bound' : ''}.
`;
}

async function main() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-bench-history-'));
  const env = { NX_OPEN_CACHE_HISTORY_RUNS: '1000', NX_OPEN_CACHE_HISTORY_MB: '50' };
  const lines = [];
  try {
    if (TAIL_ONLY) {
      const md = await tailPhase(base, env);
      console.log(md);
      if (OUT) fs.writeFileSync(OUT, md);
      return;
    }
    // (a) 1,000 small runs held (10 tasks each), then appends of TASKS tasks.
    const rootA = path.join(base, 'a');
    for (let i = 0; i < 1000; i++) {
      const start = 1_700_000_000_000 + i * 60_000;
      const { results, changed } = taskResults(10, i, start);
      if (i % 10 === 0) writeFilesets(rootA, changed.slice(0, 1));
      history.appendRun(rootA, history.buildRunRecord({ id: `small-${i}`, workspaceRoot: rootA, startTime: start, endTime: start + 1, taskResults: results }, SUMMARY, {}), { env, now: start + 1 });
    }
    const heldA = fs.readdirSync(path.join(history.historyDir(rootA), 'runs')).length;
    // (c) the first append with the index not yet read by this process: every append reads it.
    await sleep(GAP_MS);
    const first = [timedAppend(rootA, 0, env)];
    const a = [];
    for (let i = 1; i <= APPENDS; i++) {
      await sleep(GAP_MS);
      a.push(timedAppend(rootA, i, env));
    }
    const runsA = fs.readdirSync(path.join(history.historyDir(rootA), 'runs')).length;

    // (b) + size: RUNS runs of TASKS tasks, bounded by size.
    const rootB = path.join(base, 'b');
    const sizes = [];
    const b = [];
    let maxBytes = 0;
    let maxRuns = 0;
    const t0 = process.hrtime.bigint();
    /** @type {number[]} */ const backToBack = [];
    const before = os.loadavg()[0];
    for (let i = 0; i < RUNS; i++) {
      const r = timedAppend(rootB, i, env);
      backToBack.push(r.build + r.append);
      if ((i + 1) % 100 === 0 || i === RUNS - 1) {
        const bytes = du(history.historyDir(rootB));
        const runs = fs.readdirSync(path.join(history.historyDir(rootB), 'runs')).length;
        maxBytes = Math.max(maxBytes, bytes);
        maxRuns = Math.max(maxRuns, runs);
        if ((i + 1) % Math.max(100, Math.floor(RUNS / 10)) === 0 || i === RUNS - 1) sizes.push({ after: i + 1, bytes, runs, runBytes: r.bytes });
        process.stderr.write(`\r${i + 1}/${RUNS} runs appended, ${(bytes / 1048576).toFixed(1)} MiB, ${runs} run files`);
      }
    }
    process.stderr.write('\n');
    const sizeSecs = msSince(t0) / 1000;
    for (let i = RUNS; i < RUNS + APPENDS; i++) {
      await sleep(GAP_MS);
      b.push(timedAppend(rootB, i, env));
    }

    // 3. meta through a real proxy.
    const rootM = path.join(base, 'm');
    fs.mkdirSync(rootM, { recursive: true });
    const proxy = native.CacheProxy.start(rootM, { backend: 'fs', path: path.join(base, 'store') }, {});
    const { results } = taskResults(TASKS, 1, Date.now());
    const publish = Object.values(results).map((r) => ({ hash: r.task.hash, json: meta.buildMeta({ task: r.task, durationMs: 1200, nxVersion: '24.0.6', runId: 'bench' }).json }));
    const pack = (/** @type {string} */ json) => native.packAsync({ root: rootM, terminalOutput: json, code: 0, format: 'nx' }).then((x) => /** @type {Buffer} */ (x));
    const pub = await meta.exchangeMeta(proxy, { publish, fetch: [] }, { pack, totalMs: 60_000 });
    const got = await meta.exchangeMeta(proxy, { publish: [], fetch: publish.map((p) => p.hash) }, { pack, totalMs: 60_000 });
    const pubBounded = await meta.exchangeMeta(proxy, { publish, fetch: publish.map((p) => p.hash) }, { pack });
    await proxy.stop();

    const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
    const mib = (/** @type {number} */ x) => `${(x / 1048576).toFixed(1)} MiB`;
    lines.push(`## Run history: append time and size

Command: \`node benches/history.js --appends ${APPENDS} --runs ${RUNS} --tasks ${TASKS}\`.

- Date: ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC
- Machine: ${os.cpus().length} CPUs, Node ${process.version}; load average (1 min) ${before.toFixed(2)} before the size phase, at the end ${load} (other work shares the machine)
- Bounds: NX_OPEN_CACHE_HISTORY_RUNS=1000, NX_OPEN_CACHE_HISTORY_MB=50 (the defaults)
- A run record of ${TASKS} tasks (Nx's hash inputs included, ~25 nodes per task): ${mib(b[b.length - 1].bytes)}

### Append time at ${TASKS} tasks (what recording adds to the end of a run)

build: buildRunRecord from the hook's task results; append: appendRun (write the run file,
update the size index, drop the oldest runs and their filesets). Timed in one process, ${GAP_MS} ms
apart. Wall-clock times (build, append, total) and the CPU time the process spent (user + system):
on a loaded machine the wall clock includes waiting for a CPU; the CPU time is the work itself.

| history before the append | appends | build (median) | append (median) | total (median) | total (p95) | total (max) | CPU (median) | CPU (p95) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
${row(`${heldA} runs of 10 tasks held (count bound), their filesets`, a)}
${row('first append in this process', first)}
${row(`full by size: ${RUNS} runs of ${TASKS} tasks held`, b)}

After the appends to the history of 1,000 runs it holds ${runsA} run files (the count bound).

### Size under ${RUNS} runs of ${TASKS} tasks

Each run changes 5 projects (5 new filesets of 60 files written first, as lib/inputs.js would).
Sizes on disk (runs + filesets + index), sampled after every 100 appends: the largest seen was
**${mib(maxBytes)}** (bound: 50 MiB) with at most ${maxRuns} run files. ${RUNS} appends back to back
took ${sizeSecs.toFixed(0)} s (record + append: median ${quantile(backToBack, 0.5).toFixed(1)} ms, p95 ${quantile(backToBack, 0.95).toFixed(1)} ms, max ${Math.max(...backToBack).toFixed(1)} ms).

| after runs | size on disk | run files |
| --- | --- | --- |
${sizes.map((s) => `| ${s.after} | ${mib(s.bytes)} | ${s.runs} |`).join('\n')}

### Artifact metadata (network work through the run's proxy, not part of the append)

In-process proxy, fs store, ${TASKS} tasks, concurrency ${meta.CONCURRENCY}:

| | time | done |
| --- | --- | --- |
| publish the meta of ${TASKS} stored tasks (pack + PUT) | ${pub.millis} ms | ${pub.published} stored |
| fetch the meta of ${TASKS} hits (GET + parse) | ${got.millis} ms | ${got.producers.size} read |
| both at once within the run's ${meta.TOTAL_MS} ms bound (meta already stored) | ${pubBounded.millis} ms | ${pubBounded.producers.size} read${pubBounded.timedOut ? ', cut at the bound' : ''} |
`);
    lines.push(await tailPhase(base, env));
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
  const md = lines.join('\n');
  console.log(md);
  if (OUT) fs.writeFileSync(OUT, md);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
