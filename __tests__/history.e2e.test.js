'use strict';
/**
 * End-to-end: run history and artifact metadata with a real Nx workspace (nx 24 from npm, the
 * plugin from `npm pack`, daemon off, an fs store). Two "machines" share the store: each has its own
 * Nx cache (NX_CACHE_DIRECTORY) and workspace data (NX_WORKSPACE_DATA_DIRECTORY, where the history
 * lives), so machine B's hits are `[remote cache]` hits of what machine A stored.
 *
 * Run: node --test --test-concurrency=1 __tests__/history.e2e.test.js  (needs a native build)
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test, before, after } = require('node:test');

const { createWorkspace, disposePack, isRemoteHit, runProcess, cleanEnv, storeObjects, storeMetaObjects, summaryLines } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('../lib/history.js').RunRecord} RunRecord */

/** @type {NxWorkspace} */
let ws;

before(async () => {
  ws = await createWorkspace();
  // Every build takes at least 400 ms (the test build is otherwise faster than some restores), so
  // a hit's time saved is the producer's duration minus a much shorter restore.
  const build = path.join(ws.root, 'tools', 'build.js');
  fs.appendFileSync(build, '\nconst until = Date.now() + 400;\nwhile (Date.now() < until) { /* a build that takes a while */ }\n');
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * A machine: its own Nx cache and workspace data under the test's temp dir.
 * @param {string} name
 * @param {Record<string, string>} [extra]
 */
function machine(name, extra = {}) {
  return {
    NX_DAEMON: 'false',
    NX_CACHE_DIRECTORY: path.join(ws.base, name, 'nx-cache'),
    NX_WORKSPACE_DATA_DIRECTORY: path.join(ws.base, name, 'workspace-data'),
    ...extra,
  };
}

/**
 * The CLI of the installed plugin, in the workspace.
 * @param {string[]} args
 * @param {Record<string, string>} env
 */
function cli(args, env) {
  return runProcess(process.execPath, [path.join(ws.root, 'node_modules', 'nx-open-cache', 'lib', 'cli.js'), ...args], {
    cwd: ws.root, env: cleanEnv(env), timeoutMs: 60_000,
  });
}

/**
 * The machine's recorded runs, newest first (through the CLI, as a user reads them).
 * @param {Record<string, string>} env
 * @returns {Promise<RunRecord[]>}
 */
async function runsOf(env) {
  const r = await cli(['history', '--json', '--limit', '50'], env);
  assert.equal(r.code, 0, show(r));
  return JSON.parse(r.stdout);
}

/** @param {RunRecord} run */
function outcomes(run) {
  return Object.fromEntries(run.tasks.map((t) => [t.id, t.outcome]));
}

test('history per task on two machines: stored, local hit, failed; remote hits with time saved and the producer from meta; an artifact without meta still restores; bounds', async (t) => {
  const store = ws.newStorePath('history');
  ws.setPluginOptions({ backend: 'fs', path: store });
  const a = machine('a', { NX_OPEN_CACHE_HISTORY_RUNS: '3' });
  const b = machine('b');

  // Machine A, cold: every task runs and is stored, with its meta beside it.
  ws.cleanOutputs();
  const first = await ws.runBuild({ env: a });
  assert.equal(first.code, 0, show(first));
  const [runA] = await runsOf(a);
  assert.deepEqual(outcomes(runA), { 'lib-a:build': 'stored', 'lib-b:build': 'stored', 'app-c:build': 'stored', 'tool-d:build': 'stored' }, show(first));
  for (const t of runA.tasks) {
    assert.ok(/** @type {number} */ (t.durationMs) >= 400, `${t.id} ran for ${t.durationMs} ms`);
    assert.equal(typeof t.hash, 'string');
    assert.ok(t.inputs && typeof t.inputs === 'object' && 'nodes' in t.inputs, `${t.id}: Nx's hash inputs recorded`);
  }
  assert.equal(runA.mode, 'read-write');
  assert.match(String(runA.nxVersion), /^\d+\.\d+\.\d+/);
  const objects = storeObjects(store);
  const metas = storeMetaObjects(store);
  assert.equal(objects.length, 4, `four artifacts: ${objects.join(', ')}`);
  assert.deepEqual(metas.map((m) => path.basename(m)).sort(), objects.map((o) => `${path.basename(o)}-nxoc-meta`).sort(), 'one meta object beside each artifact');
  assert.match(summaryLines(first.output).join('\n'), /0 hits, 4 misses, 4 stored,/, 'meta writes are not counted as stores');

  // Machine A again: Nx's own local cache.
  const second = await ws.runBuild({ env: a });
  assert.equal(second.code, 0, show(second));
  assert.deepEqual(Object.values(outcomes((await runsOf(a))[0])), ['local-hit', 'local-hit', 'local-hit', 'local-hit']);

  // Machine A, tool-d broken: it fails (the others are local hits).
  const marker = path.join(ws.root, 'tools', 'tool-d', 'src', 'marker.txt');
  const markerText = fs.readFileSync(marker, 'utf8');
  fs.rmSync(marker);
  const third = await ws.runBuild({ env: a });
  fs.writeFileSync(marker, markerText);
  assert.notEqual(third.code, 0, show(third));
  const runsA = await runsOf(a);
  const failed = runsA[0].tasks.find((t) => t.id === 'tool-d:build');
  assert.equal(failed?.outcome, 'failed', show(third));
  assert.notEqual(failed?.code, 0);
  // NX_OPEN_CACHE_HISTORY_RUNS=3: the three newest runs, nothing older.
  assert.equal(runsA.length, 3);
  assert.equal(fs.readdirSync(path.join(a.NX_WORKSPACE_DATA_DIRECTORY, 'nx-open-cache', 'history', 'runs')).filter((f) => f.endsWith('.json')).length, 3);
  const fourth = await ws.runBuild({ env: a });
  assert.equal(fourth.code, 0, show(fourth));
  const keptA = await runsOf(a);
  assert.equal(keptA.length, 3, 'bounded by count');
  assert.ok(!keptA.some((r) => r.runId === runA.runId), 'the oldest run was dropped');

  // lib-b's meta goes missing (an artifact stored before meta existed): it must still restore.
  const libB = /** @type {import('../lib/history.js').TaskRecord} */ (runA.tasks.find((t) => t.id === 'lib-b:build'));
  const libBMeta = metas.find((o) => path.basename(o) === `${libB.hash}-nxoc-meta`);
  assert.ok(libBMeta, `lib-b's meta ${libB.hash}-nxoc-meta in ${metas.join(', ')}`);
  fs.rmSync(path.join(store, libBMeta));

  // Machine B: a fresh machine (its own empty Nx cache and workspace data), outputs gone.
  ws.cleanOutputs();
  ws.clearBuildLog();
  const onB = await ws.runBuild({ env: b });
  assert.equal(onB.code, 0, show(onB));
  assert.deepEqual(ws.builtProjects(), [], `nothing rebuilt on machine B${show(onB)}`);
  for (const p of ['lib-a', 'lib-b', 'app-c', 'tool-d']) assert.ok(isRemoteHit(onB.output, p), `${p}: [remote cache]${show(onB)}`);
  const line = summaryLines(onB.output).join('\n');
  t.diagnostic(`machine B: ${line}`);
  assert.match(line, /4 hits, 0 misses, 0 stored, .* saved ~\d+ s/, `the line says the time saved${show(onB)}`);
  const [runB] = await runsOf(b);
  assert.deepEqual(Object.values(outcomes(runB)), ['remote-hit', 'remote-hit', 'remote-hit', 'remote-hit']);
  let savedSum = 0;
  for (const t of runB.tasks) {
    if (t.id === 'lib-b:build') {
      assert.equal(t.producer, undefined, 'no meta: no producer');
      assert.equal(t.savedMs, undefined, 'no meta: no saved figure');
      continue;
    }
    const produced = /** @type {import('../lib/history.js').TaskRecord} */ (runA.tasks.find((x) => x.id === t.id));
    assert.equal(t.producer?.runId, runA.runId, `${t.id}: produced by machine A's first run`);
    assert.equal(t.producer?.durationMs, produced.durationMs, `${t.id}: the producer's duration`);
    assert.ok(/** @type {number} */ (t.savedMs) > 0, `${t.id}: saved ${t.savedMs} ms (produced in ${produced.durationMs}, restored in ${t.durationMs})`);
    savedSum += /** @type {number} */ (t.savedMs);
  }
  assert.equal(runB.savedMs, savedSum);
  const summary = await cli(['summary', '--json'], b);
  assert.equal(JSON.parse(summary.stdout).savedMs, savedSum, `summary --json carries savedMs${show(summary)}`);

  // A corrupt file in machine B's history: skipped with one notice; the listing goes on.
  const runsB = path.join(b.NX_WORKSPACE_DATA_DIRECTORY, 'nx-open-cache', 'history', 'runs');
  fs.writeFileSync(path.join(runsB, '0000000000001-corrupt.json'), '{"format":"nx-open-cache-history",');
  fs.writeFileSync(path.join(runsB, '0000000000002-other.json'), '{"hello":"world"}');
  const listed = await cli(['history', '--tasks'], b);
  assert.equal(listed.code, 0, show(listed));
  t.diagnostic(`history --tasks on machine B:\n${listed.stdout}${listed.stderr}`);
  assert.equal(listed.stderr.split('\n').filter((l) => l.includes('not nx-open-cache run history')).length, 1, show(listed));
  assert.match(listed.stdout, /4 tasks \(4 remote hits\), saved ~\d+ s/, show(listed));
  assert.match(listed.stdout, /lib-a:build {2}remote-hit, [\d.]+ s, saved [\d.]+ s, produced in [\d.]+ s on /, show(listed));
  // A run after it appends as usual.
  const again = await ws.runBuild({ env: b });
  assert.equal(again.code, 0, show(again));
  assert.equal((await runsOf(b)).length, 2);
});
