'use strict';
/**
 * End-to-end: a real Nx workspace (nx 24 from npm) with nx-open-cache installed from `npm pack`,
 * Nx's own remote-cache client talking to the plugin's in-process proxy, an fs store in a temp dir.
 *
 * Run: node --test --test-concurrency=1 __tests__/e2e.test.js
 * Needs a native build (*.node) in the repository root: `node scripts/ensure-native.js` first.
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, beforeEach, after } = require('node:test');

const {
  createWorkspace,
  disposePack,
  storeObjects,
  flipMiddleByte,
  isRemoteHit,
  summaryLines,
} = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('./helpers/nx-workspace.js').RunSummary} RunSummary */

/** @type {NxWorkspace} */
let ws;
/** The running test, for diagnostics (the printed summary of each checked run). @type {import('node:test').TestContext | undefined} */
let currentTest;

before(async () => {
  ws = await createWorkspace();
});

beforeEach((t) => {
  currentTest = /** @type {import('node:test').TestContext} */ (t);
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/* ------------------------------------------------------------------------------------------------ */
/* assertion helpers                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Context for assertion messages: the command and its output.
 * @param {RunResult} r
 */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * @param {RunResult} r
 * @param {string} what
 */
function assertGreen(r, what) {
  assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
  assert.equal(r.code, 0, `${what}: nx failed${show(r)}`);
}

/** @returns {string[]} all project names, sorted */
function allProjects() {
  return ws.projects.map((p) => p.name).sort();
}

/**
 * Reads last-run.json (right after the run: a later `nx reset` wipes it) and checks its shape.
 * @param {RunResult} r
 * @param {string} what
 * @returns {RunSummary}
 */
function lastRun(r, what) {
  const s = ws.readLastRun();
  assert.ok(s, `${what}: no ${ws.lastRunFile()} after the run${show(r)}`);
  if (currentTest) {
    const printed = summaryLines(r.output);
    currentTest.diagnostic(`${what}: ${printed.length ? printed.join(' | ') : JSON.stringify(s)}`);
  }
  for (const k of ['hits', 'misses', 'stored', 'bytesDown', 'bytesUp', 'errorCount']) {
    assert.equal(typeof s[/** @type {keyof typeof s} */ (k)], 'number', `${what}: last-run.json field ${k} is not a number: ${JSON.stringify(s)}`);
  }
  assert.ok(Array.isArray(s.errors), `${what}: last-run.json errors is not an array: ${JSON.stringify(s)}`);
  assert.equal(typeof s.mode, 'string', `${what}: last-run.json mode is not a string: ${JSON.stringify(s)}`);
  return s;
}

/**
 * The printed summary (daemon off): exactly one `nx-open-cache:` line, its counters equal to
 * last-run.json's.
 * @param {RunResult} r
 * @param {RunSummary} s
 * @param {string} what
 */
function assertPrintedSummary(r, s, what) {
  const lines = summaryLines(r.output);
  assert.equal(lines.length, 1, `${what}: expected exactly one "nx-open-cache:" summary line${show(r)}`);
  const line = lines[0];
  const num = (/** @type {RegExp} */ re) => {
    const m = re.exec(line);
    assert.ok(m, `${what}: summary line does not match ${re}: ${line}`);
    return Number(m[1]);
  };
  assert.equal(num(/(\d+) hits?\b/), s.hits, `${what}: printed hits vs last-run.json: ${line}`);
  assert.equal(num(/(\d+) miss(?:es)?\b/), s.misses, `${what}: printed misses vs last-run.json: ${line}`);
  assert.equal(num(/(\d+) stored\b/), s.stored, `${what}: printed stored vs last-run.json: ${line}`);
  // Errors are counted by cause; with fewer causes than failed requests, the requests follow.
  const causes = s.errors.length;
  assert.equal(num(/(\d+) errors?\b/), s.errorCount === causes ? s.errorCount : causes, `${what}: printed errors (causes) vs last-run.json: ${line}`);
  if (s.errorCount !== causes) {
    assert.equal(num(/\d+ errors? \((\d+) requests?\)/), s.errorCount, `${what}: printed failed requests vs last-run.json: ${line}`);
  }
}

/** @returns {number} how many runs the workspace's cache host registered (0: none ran) */
function hostRegistrations() {
  const dir = path.join(ws.root, '.nx', 'workspace-data', 'nx-open-cache');
  if (!fs.existsSync(dir)) return 0;
  return fs.readdirSync(dir)
    .filter((f) => /^host-.*\.log$/.test(f))
    .flatMap((f) => fs.readFileSync(path.join(dir, f), 'utf8').split('\n'))
    .filter((l) => / run \S+ registered /.test(l)).length;
}

/**
 * Store layout: `<aa>/<bb>/<name>` (two levels of 2-char fan-out).
 * @param {string[]} objects
 * @param {string} what
 */
function assertLayout(objects, what) {
  for (const o of objects) {
    assert.match(o, /^[0-9a-f]{2}\/[0-9a-f]{2}\/[^/]+$/i, `${what}: object outside the <aa>/<bb>/<hash> layout: ${o}`);
  }
}

/**
 * Every task a remote hit: nothing built, `[remote cache]` on every task, every marker replayed.
 * @param {RunResult} r
 * @param {string} what
 */
function assertAllRemoteHits(r, what) {
  assert.deepEqual(ws.builtProjects(), [], `${what}: a build script ran although every task should be a remote hit${show(r)}`);
  for (const p of allProjects()) {
    assert.ok(isRemoteHit(r.output, p), `${what}: ${p}:build not reported as [remote cache]${show(r)}`);
    assert.ok(r.output.includes(ws.marker(p)), `${what}: terminal output of ${p}:build (its marker) not replayed${show(r)}`);
  }
}

/**
 * Cold-state helper: `nx reset` (the "other machine": no local cache), dist deleted, build log empty.
 */
async function otherMachine() {
  await ws.nxReset();
  ws.cleanOutputs();
  ws.clearBuildLog();
}

/**
 * Configures the plugin in nx.json and runs a cold build that fills `store` (all tasks stored).
 * @param {string} store
 * @param {Record<string, string | undefined>} env
 * @param {Record<string, unknown>} [extraOptions]
 */
async function fillStore(store, env, extraOptions = {}) {
  ws.setPluginOptions({ backend: 'fs', path: store, ...extraOptions });
  const r = await ws.runBuild({ env });
  assertGreen(r, 'filling the store');
  assert.deepEqual(ws.builtProjects().sort(), allProjects(), `filling the store: not every project built${show(r)}`);
  const s = lastRun(r, 'filling the store');
  assert.equal(s.stored, ws.projects.length, `filling the store: stored ${JSON.stringify(s)}${show(r)}`);
  assert.equal(storeObjects(store).length, ws.projects.length, 'filling the store: object count');
  return { run: r, summary: s, snapshot: ws.snapshotOutputs() };
}

/* ------------------------------------------------------------------------------------------------ */
/* the 4 combos: daemon on/off x isolated plugins on/off                                            */
/* ------------------------------------------------------------------------------------------------ */

const COMBOS = [
  { daemon: false, isolate: false },
  { daemon: false, isolate: true },
  { daemon: true, isolate: false },
  { daemon: true, isolate: true },
];

describe('nx-open-cache with a real Nx workspace', () => {
  for (const { daemon, isolate } of COMBOS) {
    const label = `daemon ${daemon ? 'on' : 'off'}, NX_ISOLATE_PLUGINS=${isolate}`;
    const env = { NX_DAEMON: String(daemon), NX_ISOLATE_PLUGINS: String(isolate) };

    test(`${label}: init generator is idempotent, cold run stores every task, another machine restores them`, async () => {
      await ws.resetScenario();
      const store = ws.newStorePath(`${daemon ? 'd' : 'nod'}-${isolate ? 'iso' : 'noiso'}`);

      // --- generator, twice ---------------------------------------------------------------
      const g1 = await ws.nx(['g', 'nx-open-cache:init', '--path', store, '--no-interactive'], { env });
      assertGreen(g1, 'generator (1st run)');
      const nxJson = ws.readNxJson();
      const entries = (nxJson.plugins || []).filter(
        (/** @type {any} */ p) => p === 'nx-open-cache' || (p && p.plugin === 'nx-open-cache'),
      );
      assert.equal(entries.length, 1, `generator: expected one nx-open-cache entry in nx.json: ${JSON.stringify(nxJson.plugins)}`);
      const entry = entries[0];
      assert.equal(typeof entry, 'object', `generator: plugin entry without options: ${JSON.stringify(entry)}`);
      assert.equal(entry.options.backend, 'fs', `generator: backend: ${JSON.stringify(entry)}`);
      assert.equal(
        path.resolve(ws.root, String(entry.options.path)),
        store,
        `generator: path option does not point at the store: ${JSON.stringify(entry)}`,
      );
      const afterFirst = ws.snapshotSources();
      const g2 = await ws.nx(['g', 'nx-open-cache:init', '--path', store, '--no-interactive'], { env });
      assertGreen(g2, 'generator (2nd run)');
      assert.deepEqual(ws.snapshotSources(), afterFirst, `generator: the 2nd run changed workspace files${show(g2)}`);

      // --- cold run: every task built and stored -------------------------------------------
      await ws.nxReset(); // the generator runs may have started a daemon with the old nx.json
      ws.clearBuildLog();
      const cold = await ws.runBuild({ env });
      assertGreen(cold, 'cold run');
      const coldSummary = lastRun(cold, 'cold run');
      if (daemon) {
        assert.ok(ws.daemonLogExists(), `cold run: NX_DAEMON=true but the daemon did not run${show(cold)}`);
      } else {
        assertPrintedSummary(cold, coldSummary, 'cold run');
      }
      // Where the run's server ran: the cache host under the daemon, Nx's own process (or its own
      // plugin worker) without it.
      assert.equal(hostRegistrations() > 0, daemon, `cold run: served by the cache host should be ${daemon}${show(cold)}`);
      assert.deepEqual(ws.builtProjects().sort(), allProjects(), `cold run: not every project built${show(cold)}`);
      for (const p of allProjects()) {
        assert.ok(!isRemoteHit(cold.output, p), `cold run: ${p} reported as a remote hit on an empty store${show(cold)}`);
      }
      const objects = storeObjects(store);
      assert.equal(objects.length, ws.projects.length, `cold run: one object per task expected, got ${JSON.stringify(objects)}`);
      assertLayout(objects, 'cold run');
      assert.equal(coldSummary.mode, 'read-write', `cold run: mode ${JSON.stringify(coldSummary)}`);
      assert.equal(coldSummary.stored, ws.projects.length, `cold run: stored ${JSON.stringify(coldSummary)}`);
      assert.equal(coldSummary.hits, 0, `cold run: hits ${JSON.stringify(coldSummary)}`);
      assert.equal(coldSummary.misses, ws.projects.length, `cold run: misses ${JSON.stringify(coldSummary)}`);
      assert.equal(coldSummary.errorCount, 0, `cold run: errors ${JSON.stringify(coldSummary)}${show(cold)}`);
      assert.ok(coldSummary.bytesUp > 0, `cold run: bytesUp ${JSON.stringify(coldSummary)}`);
      const built = ws.snapshotOutputs();
      assert.equal(Object.keys(built).length > 0, true, 'cold run: no outputs');
      for (const p of ws.projects) {
        const exe = built[`${p.dir}/dist/bin/${p.name}`];
        assert.ok(exe && exe.kind === 'file' && exe.mode === 0o755, `cold run: executable of ${p.name}: ${JSON.stringify(exe)}`);
      }

      // --- another machine: no local cache, no outputs, same store ------------------------
      await otherMachine();
      const warm = await ws.runBuild({ env });
      assertGreen(warm, 'warm run');
      const warmSummary = lastRun(warm, 'warm run');
      if (!daemon) assertPrintedSummary(warm, warmSummary, 'warm run');
      assertAllRemoteHits(warm, 'warm run');
      assert.deepEqual(ws.snapshotOutputs(), built, 'warm run: restored outputs differ (content or mode) from the built ones');
      assert.equal(warmSummary.hits, ws.projects.length, `warm run: hits ${JSON.stringify(warmSummary)}`);
      assert.equal(warmSummary.misses, 0, `warm run: misses ${JSON.stringify(warmSummary)}`);
      assert.equal(warmSummary.stored, 0, `warm run: stored ${JSON.stringify(warmSummary)}`);
      assert.equal(warmSummary.errorCount, 0, `warm run: errors ${JSON.stringify(warmSummary)}${show(warm)}`);
      assert.ok(warmSummary.bytesDown > 0, `warm run: bytesDown ${JSON.stringify(warmSummary)}`);
      assert.deepEqual(storeObjects(store), objects, 'warm run: the store changed');
    });
  }

  /* ---------------------------------------------------------------------------------------------- */
  /* modes                                                                                          */
  /* ---------------------------------------------------------------------------------------------- */

  const OFF = { NX_DAEMON: 'false' };

  test('read-only (NX_OPEN_CACHE_MODE): writes nothing on a cold run, still hits a filled store', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('read-only');
    ws.setPluginOptions({ backend: 'fs', path: store });

    const cold = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_MODE: 'read-only' } });
    assertGreen(cold, 'read-only cold run');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `read-only cold run: not every project built${show(cold)}`);
    assert.deepEqual(storeObjects(store), [], 'read-only cold run: objects were written');
    const s1 = lastRun(cold, 'read-only cold run');
    assertPrintedSummary(cold, s1, 'read-only cold run');
    assert.equal(s1.mode, 'read-only', `read-only cold run: mode ${JSON.stringify(s1)}`);
    assert.equal(s1.stored, 0, `read-only cold run: stored ${JSON.stringify(s1)}`);
    assert.equal(s1.bytesUp, 0, `read-only cold run: bytesUp ${JSON.stringify(s1)}`);

    await otherMachine();
    const { snapshot } = await fillStore(store, OFF);
    const objects = storeObjects(store);

    await otherMachine();
    const warm = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_MODE: 'read-only' } });
    assertGreen(warm, 'read-only warm run');
    assertAllRemoteHits(warm, 'read-only warm run');
    assert.deepEqual(ws.snapshotOutputs(), snapshot, 'read-only warm run: restored outputs differ');
    const s2 = lastRun(warm, 'read-only warm run');
    assert.equal(s2.hits, ws.projects.length, `read-only warm run: hits ${JSON.stringify(s2)}`);
    assert.equal(s2.errorCount, 0, `read-only warm run: errors ${JSON.stringify(s2)}`);
    assert.deepEqual(storeObjects(store), objects, 'read-only warm run: the store changed');
  });

  test('ciMode read-only applies when CI is set; NX_OPEN_CACHE_MODE=no-cache neither reads nor writes', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('ci-mode');
    ws.setPluginOptions({ backend: 'fs', path: store, ciMode: 'read-only' });
    const ci = await ws.runBuild({ env: { ...OFF, CI: 'true' } });
    assertGreen(ci, 'ciMode read-only run');
    assert.deepEqual(storeObjects(store), [], 'ciMode read-only run (CI=true): objects were written');
    const s1 = lastRun(ci, 'ciMode read-only run');
    assert.equal(s1.mode, 'read-only', `ciMode read-only run: mode ${JSON.stringify(s1)}`);
    assert.equal(s1.stored, 0, `ciMode read-only run: stored ${JSON.stringify(s1)}`);

    // Same options without CI: the local mode (default read-write) applies and fills the store.
    await otherMachine();
    await fillStore(store, OFF, { ciMode: 'read-only' });
    const objects = storeObjects(store);

    await otherMachine();
    const none = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_MODE: 'no-cache' } });
    assertGreen(none, 'no-cache run');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `no-cache run: tasks were not rebuilt${show(none)}`);
    for (const p of allProjects()) {
      assert.ok(!isRemoteHit(none.output, p), `no-cache run: ${p} restored from the remote cache${show(none)}`);
    }
    assert.deepEqual(storeObjects(store), objects, 'no-cache run: the store changed');
    // The no-cache run's own summary, not the previous run's.
    const s2 = lastRun(none, 'no-cache run');
    assert.equal(s2.mode, 'no-cache', `no-cache run: mode ${JSON.stringify(s2)}`);
    assert.equal(s2.hits, 0, `no-cache run: hits ${JSON.stringify(s2)}`);
    assert.equal(s2.stored, 0, `no-cache run: stored ${JSON.stringify(s2)}`);
  });

  test('prefix namespaces the store: another prefix does not see the entries', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('prefix');
    await fillStore(store, OFF, { prefix: 'alpha-' });

    await otherMachine();
    ws.setPluginOptions({ backend: 'fs', path: store, prefix: 'beta-' });
    const beta = await ws.runBuild({ env: OFF });
    assertGreen(beta, 'prefix beta run');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `prefix beta run: entries of prefix alpha were used${show(beta)}`);
    const sb = lastRun(beta, 'prefix beta run');
    assert.equal(sb.hits, 0, `prefix beta run: hits ${JSON.stringify(sb)}`);
    assert.equal(sb.stored, ws.projects.length, `prefix beta run: stored ${JSON.stringify(sb)}`);
    assert.equal(storeObjects(store).length, 2 * ws.projects.length, 'prefix beta run: object count');

    await otherMachine();
    ws.setPluginOptions({ backend: 'fs', path: store, prefix: 'alpha-' });
    const alpha = await ws.runBuild({ env: OFF });
    assertGreen(alpha, 'prefix alpha run');
    assertAllRemoteHits(alpha, 'prefix alpha run');
  });

  /* ---------------------------------------------------------------------------------------------- */
  /* faults: a cache problem never fails the build                                                  */
  /* ---------------------------------------------------------------------------------------------- */

  test('a corrupted entry is a miss plus a reported error, the task is rebuilt', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('corrupt');
    const { snapshot } = await fillStore(store, OFF);
    const objects = storeObjects(store);
    flipMiddleByte(path.join(store, objects[0]));

    await otherMachine();
    const r = await ws.runBuild({ env: OFF });
    assertGreen(r, 'run over a corrupted entry');
    const rebuilt = ws.builtProjects();
    assert.equal(rebuilt.length, 1, `corrupted entry: expected exactly one task rebuilt, got ${JSON.stringify(rebuilt)}${show(r)}`);
    for (const p of allProjects()) {
      assert.equal(isRemoteHit(r.output, p), !rebuilt.includes(p), `corrupted entry: remote-hit status of ${p}${show(r)}`);
    }
    assert.deepEqual(ws.snapshotOutputs(), snapshot, 'corrupted entry: outputs differ after the rebuild');
    const s = lastRun(r, 'run over a corrupted entry');
    assertPrintedSummary(r, s, 'run over a corrupted entry');
    assert.equal(s.hits, ws.projects.length - 1, `corrupted entry: hits ${JSON.stringify(s)}`);
    assert.ok(s.errorCount >= 1, `corrupted entry: errorCount ${JSON.stringify(s)}${show(r)}`);
    assert.ok(
      s.errors.some((e) => /digest|corrupt/i.test(e.reason)),
      `corrupted entry: no error reason mentions digest/corrupt: ${JSON.stringify(s.errors)}`,
    );
    assert.match(r.output, /digest|corrupt/i, `corrupted entry: the printed summary does not mention it${show(r)}`);

    // The bad object must not stay in the way: after the rebuild the store serves every task again.
    assert.equal(storeObjects(store).length, ws.projects.length, 'corrupted entry: object count after the rebuild');
    await otherMachine();
    const again = await ws.runBuild({ env: OFF });
    assertGreen(again, 'run after the corrupted entry was rebuilt');
    assertAllRemoteHits(again, 'run after the corrupted entry was rebuilt');
    assert.deepEqual(ws.snapshotOutputs(), snapshot, 'after the rebuild: restored outputs differ');
    const s2 = lastRun(again, 'run after the corrupted entry was rebuilt');
    assert.equal(s2.errorCount, 0, `after the rebuild: errors ${JSON.stringify(s2)}`);
  });

  test('store path is a regular file: build green, errors reported', async () => {
    await ws.resetScenario();
    const file = path.join(ws.base, 'store-is-a-file');
    fs.writeFileSync(file, 'this is not a directory\n');
    ws.setPluginOptions({ backend: 'fs', path: file });
    const r = await ws.runBuild({ env: OFF });
    assertGreen(r, 'run with a file as store');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `file as store: not every project built${show(r)}`);
    const s = lastRun(r, 'run with a file as store');
    assertPrintedSummary(r, s, 'run with a file as store');
    assert.equal(s.hits, 0, `file as store: hits ${JSON.stringify(s)}`);
    assert.equal(s.stored, 0, `file as store: stored ${JSON.stringify(s)}`);
    assert.ok(s.errorCount >= 1, `file as store: errorCount ${JSON.stringify(s)}${show(r)}`);
    assert.ok(s.errors.length >= 1, `file as store: no error reasons ${JSON.stringify(s)}`);
    assert.equal(fs.readFileSync(file, 'utf8'), 'this is not a directory\n', 'file as store: the file was changed');
  });

  test('store directory removed mid-run (replaced by a file): build green, failure reported', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('removed-file');
    fs.mkdirSync(store, { recursive: true });
    ws.setPluginOptions({ backend: 'fs', path: store });
    const r = await ws.runBuild({
      env: { ...OFF, NXOC_E2E_SABOTAGE_PROJECT: 'lib-a', NXOC_E2E_SABOTAGE_STORE: store, NXOC_E2E_SABOTAGE_KIND: 'file' },
    });
    assertGreen(r, 'run with the store replaced by a file mid-run');
    assert.match(r.output, /sabotaged store/, `the sabotage did not run${show(r)}`);
    assert.ok(fs.statSync(store).isFile(), 'the store should be a file now');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `store replaced: not every project built${show(r)}`);
    const s = lastRun(r, 'run with the store replaced by a file mid-run');
    assertPrintedSummary(r, s, 'store replaced mid-run');
    // lib-a's and lib-b's uploads happen after the sabotage: they cannot be stored.
    assert.ok(s.stored <= ws.projects.length - 2, `store replaced: stored ${JSON.stringify(s)}`);
    assert.ok(s.errorCount >= 1, `store replaced: errorCount ${JSON.stringify(s)}${show(r)}`);
  });

  test('store directory removed mid-run: build green, failure reported', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('removed');
    fs.mkdirSync(store, { recursive: true });
    ws.setPluginOptions({ backend: 'fs', path: store });
    const r = await ws.runBuild({
      env: { ...OFF, NXOC_E2E_SABOTAGE_PROJECT: 'lib-a', NXOC_E2E_SABOTAGE_STORE: store },
    });
    assertGreen(r, 'run with the store removed mid-run');
    assert.match(r.output, /sabotaged store/, `the sabotage did not run${show(r)}`);
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `store removed: not every project built${show(r)}`);
    const s = lastRun(r, 'run with the store removed mid-run');
    assertPrintedSummary(r, s, 'store removed mid-run');
    assert.ok(s.errorCount >= 1, `store removed: errorCount ${JSON.stringify(s)}${show(r)}`);
  });

  test('--skip-remote-cache and NX_SKIP_REMOTE_CACHE: the plugin stays out of the way', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('skip');
    ws.setPluginOptions({ backend: 'fs', path: store });
    for (const [what, opts] of /** @type {[string, {env: Record<string,string>, extraArgs?: string[]}][]} */ ([
      ['--skip-remote-cache', { env: OFF, extraArgs: ['--skip-remote-cache'] }],
      ['NX_SKIP_REMOTE_CACHE=true', { env: { ...OFF, NX_SKIP_REMOTE_CACHE: 'true' } }],
    ])) {
      await otherMachine();
      const r = await ws.runBuild(opts);
      assertGreen(r, what);
      assert.deepEqual(ws.builtProjects().sort(), allProjects(), `${what}: not every project built${show(r)}`);
      assert.deepEqual(storeObjects(store), [], `${what}: objects were written`);
      for (const p of allProjects()) assert.ok(!isRemoteHit(r.output, p), `${what}: remote hit${show(r)}`);
      const s = ws.readLastRun();
      if (s) {
        assert.deepEqual(
          [s.hits, s.misses, s.stored, s.errorCount],
          [0, 0, 0, 0],
          `${what}: the plugin counted cache traffic: ${JSON.stringify(s)}`,
        );
      }
      currentTest?.diagnostic(`${what}: ${summaryLines(r.output).join(' | ') || '(no nx-open-cache line)'}`);
      for (const line of summaryLines(r.output)) {
        assert.doesNotMatch(line, /[1-9]\d* (hits?|miss(es)?|stored|errors?)\b/, `${what}: non-zero summary: ${line}`);
      }
    }
  });

  test('a wrong option fails before any task runs and names the option and the value', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('bad-option');
    ws.setPluginOptions({ backend: 'nope', path: store });
    const r = await ws.runBuild({ env: OFF });
    assert.equal(r.timedOut, false, `bad option: nx timed out${show(r)}`);
    assert.notEqual(r.code, 0, `bad option: nx exited 0${show(r)}`);
    currentTest?.diagnostic(`bad option: ${r.output.split('\n').filter((l) => /nope/.test(l)).join(' | ')}`);
    assert.match(r.output, /backend/, `bad option: the output does not name the option${show(r)}`);
    assert.match(r.output, /nope/, `bad option: the output does not name the value${show(r)}`);
    assert.deepEqual(ws.builtProjects(), [], `bad option: tasks ran${show(r)}`);
    assert.deepEqual(storeObjects(store), [], 'bad option: objects were written');
    ws.setPluginOptions(null);
  });

  test('NX_OPEN_CACHE_DEBUG=1 logs every request with hash, status, size and duration; table summary on request', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('debug');
    const env = { ...OFF, NX_OPEN_CACHE_DEBUG: '1', NX_OPEN_CACHE_SUMMARY: 'table' };
    ws.setPluginOptions({ backend: 'fs', path: store });
    const cold = await ws.runBuild({ env });
    assertGreen(cold, 'debug cold run');
    // Artifact requests (the metadata beside each artifact, `<hash>-nxoc-meta`, is logged too).
    const puts = cold.output.split('\n').filter((l) => /^nx-open-cache: PUT \d+ -> 200 \d+ B \d+ ms$/.test(l));
    const misses = cold.output.split('\n').filter((l) => /^nx-open-cache: GET \d+ -> 404 0 B \d+ ms$/.test(l));
    const metaPuts = cold.output.split('\n').filter((l) => /^nx-open-cache: PUT \d+-nxoc-meta -> 200 \d+ B \d+ ms$/.test(l));
    assert.equal(metaPuts.length, ws.projects.length, `one metadata PUT line per stored task${show(cold)}`);
    assert.equal(puts.length, ws.projects.length, `one PUT line per task${show(cold)}`);
    assert.equal(misses.length, ws.projects.length, `one GET miss line per task${show(cold)}`);
    assert.match(cold.output, /^ {2}stored +4$/m, `table summary${show(cold)}`);
    await otherMachine();
    const warm = await ws.runBuild({ env });
    assertGreen(warm, 'debug warm run');
    const hits = warm.output.split('\n').filter((l) => /^nx-open-cache: GET \d+ -> 200 [1-9]\d* B \d+ ms$/.test(l));
    assert.equal(hits.length, ws.projects.length, `one GET hit line per task${show(warm)}`);
    ws.setPluginOptions(null);
  });

  test('every configuration mistake stops the run before any task, naming option, value and choices', async () => {
    await ws.resetScenario();
    const cases = [
      { options: { backend: 's4' }, needle: /invalid value "s4" for option "backend": expected one of "fs", "s3", "gcs", "azure", "http"/ },
      { options: { backend: 's3' }, needle: /backend "s3" needs option "bucket"/ },
      { options: { path: '../outside-cache' }, needle: /"\.\.\/outside-cache" for option "path": a relative path must stay inside the workspace/ },
      { options: { localMode: 'read' }, needle: /invalid value "read" for option "localMode": expected one of "read-write", "read-only", "no-cache"/ },
      { options: { prefix: 'team a' }, needle: /invalid value "team a" for option "prefix"/ },
      { options: { backend: 'http', url: 'https://cache.example.com/' }, needle: /option "url".*trailing slash|trailing slash.*"url"/ },
      { options: { backend: 'http', url: 'cache.example.com' }, needle: /"url".*http:\/\/ or https:\/\/|http:\/\/ or https:\/\/.*"url"/ },
    ];
    for (const c of cases) {
      ws.setPluginOptions(c.options);
      const r = await ws.runBuild({ env: OFF });
      assert.notEqual(r.code, 0, `${JSON.stringify(c.options)}: nx exited 0${show(r)}`);
      assert.match(r.output, c.needle, `${JSON.stringify(c.options)}: message${show(r)}`);
      assert.deepEqual(ws.builtProjects(), [], `${JSON.stringify(c.options)}: tasks ran${show(r)}`);
    }
    ws.setPluginOptions(null);
  });

  test('nx g nx-open-cache:init --check runs doctor: exit 0 when the cache works, non-zero with the fix when not', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('check');
    const ok = await ws.nx(['g', 'nx-open-cache:init', '--path', store, '--check', '--no-interactive'], { env: OFF });
    assertGreen(ok, 'generator --check on a working store');
    assert.match(ok.output, /ok +write .*\(\d+ ms\)/, `--check: write probe${show(ok)}`);
    assert.match(ok.output, /the cache works from this machine/, `--check${show(ok)}`);
    assert.deepEqual(storeObjects(store), [], '--check: the probe was removed');
    fs.writeFileSync(path.join(ws.root, 'blocked'), 'a file where a directory should be');
    const bad = await ws.nx(['g', 'nx-open-cache:init', '--path', 'blocked/cache', '--check', '--no-interactive'], { env: OFF });
    assert.notEqual(bad.code, 0, `--check on an unusable path exited 0${show(bad)}`);
    assert.match(bad.output, /FAIL setup/, `--check${show(bad)}`);
    assert.match(bad.output, /fix: create .*blocked\/cache/, `--check${show(bad)}`);
    fs.rmSync(path.join(ws.root, 'blocked'), { force: true });
    ws.setPluginOptions(null);
  });
});
