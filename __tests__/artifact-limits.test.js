'use strict';
/**
 * The artifact check's bounds in the plugin (`maxArtifactEntries`, `maxExpandedSize`,
 * `maxExpansionRatio` and their NX_OPEN_CACHE_MAX_* variables), with a real Nx workspace (nx 24
 * from npm, nx-open-cache from `npm pack`).
 *
 * nx.json has `maxArtifactEntries: 5` and `maxExpandedSize: "32GiB"` for every run (Nx hashes
 * nx.json: another plugin option would be other task hashes). A run fills an fs store with Nx's
 * own, valid artifacts (the proxy does not check Nx's uploads). Then, each time on a fresh machine
 * (no local cache, no outputs):
 *   - nx.json's `maxArtifactEntries: 5`: each artifact (a dozen paths) is a miss, the task runs
 *     and makes the correct outputs, the build is green, the summary names each hash with the
 *     bound, and the objects stay in the store untouched (bounds below the defaults are this
 *     machine's choice, not proof of junk);
 *   - NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES=1000000 and NX_OPEN_CACHE_MAX_EXPANDED_SIZE=64KiB (the
 *     variables win over nx.json): the same, for the expanded size (each artifact holds 96 KiB of
 *     noise);
 *   - NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES=1000000 alone (every bound at its default): every task is
 *     a remote hit from those same objects.
 *
 * Run: node --test --test-concurrency=1 __tests__/artifact-limits.test.js
 * Needs: a native build (`node scripts/ensure-native.js`).
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const { createWorkspace, disposePack, storeObjects, isRemoteHit } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

const native = require('../index.js');

/** The projects each run builds (no dependency between them). */
const PROJECTS = ['app-c', 'lib-a'];

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

describe('the resolved configuration', () => {
  test('has the bounds: defaults, options, variables over options', () => {
    const root = fs.realpathSync(require('node:os').tmpdir());
    const base = { backend: 'fs', path: root };
    const d = native.resolveConfig(root, base, {});
    assert.deepEqual(
      [d.maxArtifactEntries, d.maxExpandedSize, d.maxExpansionRatio],
      [1_000_000, 32 * 2 ** 30, 200],
    );
    const c = native.resolveConfig(
      root,
      { ...base, maxArtifactEntries: 5000, maxExpandedSize: '2GiB', maxExpansionRatio: 50 },
      { NX_OPEN_CACHE_MAX_EXPANSION_RATIO: '7' },
    );
    assert.deepEqual([c.maxArtifactEntries, c.maxExpandedSize, c.maxExpansionRatio], [5000, 2 ** 31, 7]);
    // JavaScript numbers JSON cannot hold are named like any other mistake.
    for (const [option, value, shown] of [
      ['maxExpandedSize', Infinity, 'Infinity'],
      ['maxArtifactEntries', 1e300, '1e+300'],
      ['maxExpansionRatio', -1, '-1'],
    ]) {
      assert.throws(
        () => native.resolveConfig(root, { ...base, [option]: value }, {}),
        (/** @type {Error} */ e) => e.message.includes(`invalid value ${shown} for option "${option}"`),
        `${option}: ${shown}`,
      );
    }
  });
});

describe('artifact limits with a real Nx workspace', () => {
  /** @type {NxWorkspace | undefined} */
  let ws;
  /** @type {Record<string, import('./helpers/nx-workspace.js').SnapshotEntry>} */
  let clean = {};
  let store = '';
  /** Relative path -> bytes of every object the filling run stored. */
  /** @type {Map<string, Buffer>} */
  const filled = new Map();
  let run = 0;

  /** @returns {NxWorkspace} */
  const workspace = () => {
    assert.ok(ws, 'workspace not created');
    return ws;
  };

  /**
   * `nx run-many -t build` of PROJECTS on a fresh machine: its own Nx cache and workspace data
   * directories, no outputs, an empty build log, the daemon off.
   * @param {Record<string, string>} env
   */
  async function build(env) {
    const w = workspace();
    run += 1;
    w.cleanOutputs();
    w.clearBuildLog();
    return w.runBuild({
      env: {
        NX_DAEMON: 'false',
        NX_CACHE_DIRECTORY: path.join(w.base, `cache-${run}`),
        NX_WORKSPACE_DATA_DIRECTORY: path.join(w.base, `data-${run}`),
        ...env,
      },
      extraArgs: [`--projects=${PROJECTS.join(',')}`],
    });
  }

  /**
   * The summary the last build saved (in its own workspace data directory).
   * @returns {any}
   */
  function lastRun() {
    const file = path.join(workspace().base, `data-${run}`, 'nx-open-cache', 'last-run.json');
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }

  /** The store holds exactly the objects the filling run stored, byte for byte. */
  function assertStoreUntouched() {
    const now = storeObjects(store);
    assert.deepEqual(now.sort(), [...filled.keys()].sort());
    for (const [rel, bytes] of filled) assert.ok(fs.readFileSync(path.join(store, rel)).equals(bytes), rel);
  }

  before(async () => {
    ws = await createWorkspace();
    await ws.resetScenario();
    const honest = await build({});
    assert.equal(honest.code, 0, show(honest));
    clean = ws.snapshotOutputs();
    store = ws.newStorePath('limits');
    ws.setPluginOptions({ path: store, maxArtifactEntries: 5, maxExpandedSize: '32GiB' });
    const fill = await build({});
    assert.equal(fill.code, 0, show(fill));
    for (const rel of storeObjects(store)) filled.set(rel, fs.readFileSync(path.join(store, rel)));
    assert.equal(filled.size, PROJECTS.length, `one object per task${show(fill)}`);
  });

  after(async () => {
    if (ws) await ws.dispose();
    disposePack();
  });

  /**
   * Every task ran (a miss) and made the honest outputs, the build is green, each stored hash is
   * named in the summary with `reason`, and the store is untouched.
   * @param {RunResult} r
   * @param {RegExp} reason
   */
  function assertRefusedAndKept(r, reason) {
    const w = workspace();
    assert.equal(r.timedOut, false, show(r));
    assert.equal(r.code, 0, show(r));
    assert.deepEqual([...w.builtProjects()].sort(), PROJECTS, show(r));
    for (const p of PROJECTS) assert.ok(!isRemoteHit(r.output, p), `${p} restored${show(r)}`);
    assert.deepEqual(w.snapshotOutputs(), clean, 'the rebuilt outputs are the honest ones');
    const last = lastRun();
    const refusals = /** @type {{ reason: string, count: number, hashes: string[] }[]} */ (last.refusals || []);
    assert.ok(refusals.length >= 1, JSON.stringify(last));
    for (const x of refusals) {
      assert.match(x.reason, reason);
      assert.match(x.reason, /; kept in the store \(over this machine's lowered limits only\)$/);
    }
    const named = refusals.flatMap((x) => x.hashes).sort();
    assert.deepEqual(named, [...filled.keys()].map((rel) => path.basename(rel)).sort(), JSON.stringify(refusals));
    assert.equal(last.refusedCount, PROJECTS.length, JSON.stringify(last));
    assert.equal(last.errorCount, 0, `a refusal is no fault: ${JSON.stringify(last.errors)}`);
    // The lines printed at the end of the run name them too: `  - refused [<n>x ](<hashes>): <reason>`.
    const printed = r.output.split('\n').filter((l) => l.startsWith('  - refused '));
    assert.equal(printed.length, refusals.length, show(r));
    for (const l of printed) assert.match(l.slice(l.indexOf('): ') + 3), reason, l);
    assertStoreUntouched();
  }

  test('maxArtifactEntries below an artifact\'s paths: a miss, rebuilt, named; the object stays', async (t) => {
    const r = await build({});
    assertRefusedAndKept(r, /^not a valid Nx artifact: entry `[^`]+`: the archive holds more than 5 paths/);
    t.diagnostic(r.output.split('\n').find((l) => l.includes('- refused')) || '');
  });

  test('NX_OPEN_CACHE_MAX_EXPANDED_SIZE wins over maxExpandedSize: a miss, rebuilt, named', async (t) => {
    const r = await build({ NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES: '1000000', NX_OPEN_CACHE_MAX_EXPANDED_SIZE: '64KiB' });
    assertRefusedAndKept(r, /^not a valid Nx artifact: it inflates to more than 65536 bytes/);
    t.diagnostic(r.output.split('\n').find((l) => l.includes('- refused')) || '');
  });

  test('the default bounds: the same objects are remote hits', async () => {
    const w = workspace();
    const r = await build({ NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES: '1000000' });
    assert.equal(r.code, 0, show(r));
    for (const p of PROJECTS) assert.ok(isRemoteHit(r.output, p), `${p} not restored${show(r)}`);
    assert.deepEqual(w.builtProjects(), [], show(r));
    assert.deepEqual(w.snapshotOutputs(), clean);
    assert.equal(lastRun().hits, PROJECTS.length, JSON.stringify(lastRun()));
    assertStoreUntouched();
  });
});
