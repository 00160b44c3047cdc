'use strict';
/**
 * Compatibility: the end-to-end scenario on the oldest supported Nx (NX_OLDEST, from npm), daemon
 * off and on. The newest supported Nx (NX_VERSION) runs the whole suite in e2e.test.js.
 *
 * Run: node --test --test-concurrency=1 __tests__/compat.e2e.test.js
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const { NX_OLDEST, createWorkspace, disposePack, storeObjects, isRemoteHit, summaryLines } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** @type {NxWorkspace} */
let ws;

before(async () => {
  ws = await createWorkspace({ nxVersion: NX_OLDEST });
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/** @param {RunResult} r */
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

describe(`nx ${NX_OLDEST} (the oldest supported)`, () => {
  test('the installed nx is the oldest supported version', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ws.root, 'node_modules', 'nx', 'package.json'), 'utf8'));
    assert.equal(pkg.version, NX_OLDEST);
  });

  for (const daemon of [false, true]) {
    test(`daemon ${daemon ? 'on' : 'off'}: nx add's generator, a cold run stores every task, another machine restores all of them`, async () => {
      await ws.resetScenario();
      const env = { NX_DAEMON: String(daemon) };
      const store = ws.newStorePath(`compat-${daemon ? 'd' : 'nod'}`);
      const g = await ws.nx(['g', 'nx-open-cache:init', '--path', store, '--no-interactive'], { env });
      assertGreen(g, 'generator');
      const entry = (ws.readNxJson().plugins || []).find((/** @type {any} */ p) => p && p.plugin === 'nx-open-cache');
      assert.ok(entry, `generator: no nx-open-cache entry in nx.json${show(g)}`);

      await ws.nxReset();
      ws.clearBuildLog();
      const cold = await ws.runBuild({ env });
      assertGreen(cold, 'cold run');
      const names = ws.projects.map((p) => p.name).sort();
      assert.deepEqual(ws.builtProjects().sort(), names, `cold run: not every project built${show(cold)}`);
      assert.equal(storeObjects(store).length, ws.projects.length, `cold run: one object per task${show(cold)}`);
      const coldSummary = ws.readLastRun();
      assert.ok(coldSummary, `cold run: no summary file${show(cold)}`);
      assert.equal(coldSummary.stored, ws.projects.length, JSON.stringify(coldSummary));
      assert.equal(coldSummary.errorCount, 0, JSON.stringify(coldSummary));
      if (!daemon) assert.equal(summaryLines(cold.output).length, 1, `cold run: one summary line${show(cold)}`);
      const built = ws.snapshotOutputs();

      await ws.nxReset();
      ws.cleanOutputs();
      ws.clearBuildLog();
      const warm = await ws.runBuild({ env });
      assertGreen(warm, 'warm run');
      assert.deepEqual(ws.builtProjects(), [], `warm run: a task was rebuilt${show(warm)}`);
      for (const p of names) assert.ok(isRemoteHit(warm.output, p), `warm run: ${p} not a remote hit${show(warm)}`);
      assert.deepEqual(ws.snapshotOutputs(), built, 'warm run: restored outputs differ from the built ones');
      const warmSummary = ws.readLastRun();
      assert.ok(warmSummary, `warm run: no summary file${show(warm)}`);
      assert.equal(warmSummary.hits, ws.projects.length, JSON.stringify(warmSummary));
      assert.equal(warmSummary.errorCount, 0, JSON.stringify(warmSummary));
    });
  }
});
