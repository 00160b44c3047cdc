'use strict';
/**
 * Hostile and foreign objects in the store never fail a build, with a real Nx workspace (nx 24
 * from npm, nx-open-cache from `npm pack`).
 *
 * A run fills the store; then, for each of 30 shapes (helpers/hostile.js: garbage, an empty body,
 * truncated gzip, gzip of something else, tar without Nx's layout, traversal, absolute paths,
 * symlink escapes direct, chained and by directory swap, hard links, devices, FIFOs, setuid,
 * duplicates, a million entries, a decompression bomb, ...), every stored object's payload is
 * replaced by the shape inside a correct envelope (length and SHA-256: what anyone who can write
 * the store can do), and Nx runs again on a fresh machine (no local cache, no outputs). Each time:
 * the build is green, every task ran (the objects were misses) and produced the correct outputs,
 * nothing appeared in the canary directory the payloads aim at nor anywhere else outside the
 * outputs, and the refusal of each object is reported: in the plugin's run summary, and in the
 * log and metrics of `nx-open-cache serve` when Nx reads the server directly. The refused objects
 * are removed, so each run stores the correct artifacts again.
 *
 * Two shapes are not here: an object sealed with an unknown key, and one sealed while this reader
 * has no key (the seal layer decides those, tested with it).
 *
 * Run: node --test --test-concurrency=1 __tests__/hostile.e2e.test.js
 * Needs: a native build (`node scripts/ensure-native.js`).
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const { createWorkspace, disposePack, storeObjects, isRemoteHit } = require('./helpers/nx-workspace.js');
const { serveEnv, startServe, request } = require('./helpers/serve-process.js');
const { envelope } = require('./helpers/hostile-tar.js');
const { SHAPES } = require('./helpers/hostile.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('./helpers/hostile.js').Shape} Shape */

/** The projects each run builds (no dependency between them). */
const PROJECTS = ['app-c', 'lib-a'];
const RW = 'rw-secret-0123456789abcdef';
const CANARY_TEXT = 'canary: nothing may change here\n';

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * Names of files and directories below `dir` that a payload aimed at, skipping node_modules and
 * .git (bounded by the tree; symlinks are not followed).
 * @param {string} dir
 * @returns {string[]}
 */
function planted(dir) {
  /** @type {string[]} */ const found = [];
  /** @type {string[]} */ const stack = [dir];
  while (stack.length) {
    const d = /** @type {string} */ (stack.pop());
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name === 'node_modules' || e.name === '.git') continue;
      const p = path.join(d, e.name);
      if (/pwned|bomb\.bin|^many$|^esc$|^up\d$/.test(e.name)) found.push(p);
      if (e.isDirectory()) stack.push(p);
    }
  }
  return found;
}

describe('hostile objects in the store', () => {
  /** @type {NxWorkspace | undefined} */
  let ws;
  let canary = '';
  /** @type {Record<string, import('./helpers/nx-workspace.js').SnapshotEntry>} */
  let clean = {};
  let run = 0;

  /** @returns {NxWorkspace} */
  const workspace = () => {
    assert.ok(ws, 'workspace not created');
    return ws;
  };

  before(async () => {
    ws = await createWorkspace();
    canary = path.join(ws.base, 'canary');
    fs.mkdirSync(canary);
    fs.writeFileSync(path.join(canary, 'canary.txt'), CANARY_TEXT);
    await ws.resetScenario();
    const honest = await build({}, ['--skip-nx-cache']);
    assert.equal(honest.code, 0, show(honest));
    clean = ws.snapshotOutputs();
    assert.equal(Object.keys(clean).length > 10, true, 'the honest build made outputs');
  });

  after(async () => {
    if (ws) await ws.dispose();
    disposePack();
  });

  /**
   * `nx run-many -t build` of PROJECTS on a fresh machine: its own Nx cache and workspace data
   * directories (`<base>/cache-<n>`), no outputs, an empty build log, the daemon off.
   * @param {Record<string, string>} env
   * @param {string[]} [extraArgs]
   */
  async function build(env, extraArgs = []) {
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
      extraArgs: [`--projects=${PROJECTS.join(',')}`, ...extraArgs],
    });
  }

  /**
   * Puts `shape`'s payload, in a correct envelope, in place of every object of the fs store.
   * @param {string} store
   * @param {Shape} shape
   * @returns {string[]} the hashes replaced
   */
  function poison(store, shape) {
    const objects = storeObjects(store);
    assert.equal(objects.length, PROJECTS.length, `the store holds one object per task: ${objects.join(', ')}`);
    const stored = envelope(shape.payload({ canary, project: 'packages/lib-a' }));
    for (const o of objects) fs.writeFileSync(path.join(store, o), stored);
    return objects.map((o) => path.basename(o));
  }

  /**
   * The build is green, every task ran (a miss) with the honest outputs, and nothing was written
   * where a payload aimed.
   * @param {RunResult} r
   * @param {Shape} shape
   */
  function assertSafe(r, shape) {
    const w = workspace();
    const what = `${shape.name}:${show(r)}`;
    assert.equal(r.timedOut, false, what);
    assert.equal(r.code, 0, what);
    assert.deepEqual([...w.builtProjects()].sort(), PROJECTS, what);
    for (const p of PROJECTS) assert.ok(!isRemoteHit(r.output, p), what);
    assert.deepEqual(w.snapshotOutputs(), clean, `${shape.name}: the outputs are not the honest ones`);
    assert.deepEqual(fs.readdirSync(canary), ['canary.txt'], `${shape.name}: the canary directory changed`);
    assert.equal(fs.readFileSync(path.join(canary, 'canary.txt'), 'utf8'), CANARY_TEXT);
    assert.deepEqual(planted(w.base), [], `${shape.name}: a payload's path exists`);
  }

  test('through the plugin: each shape is a miss, rebuilt, named in the run summary', async (t) => {
    const w = workspace();
    const store = w.newStorePath('plugin');
    w.setPluginOptions({ path: store });
    const fill = await build({});
    assert.equal(fill.code, 0, show(fill));
    for (const shape of SHAPES) {
      const hashes = poison(store, shape);
      const r = await build({ NX_OPEN_CACHE_SUMMARY: 'table' });
      assertSafe(r, shape);
      const lines = r.output.split('\n').filter((l) => l.includes('not a valid Nx artifact'));
      for (const h of hashes) {
        const line = lines.find((l) => l.includes(h));
        assert.ok(line, `${shape.name}: ${h} not named in the summary${show(r)}`);
        assert.match(line, shape.reason, `${shape.name}: ${line}`);
        assert.match(line, /removed from the store/, line);
      }
      assert.match(r.output, new RegExp(`refused\\s+${hashes.length}\\b`), `${shape.name}${show(r)}`);
      // The refused objects were removed and the rebuilt artifacts stored in their place.
      assert.equal(storeObjects(store).length, PROJECTS.length, shape.name);
      t.diagnostic(`${shape.name}: ${(lines[0] || '').trim().slice(0, 160)}`);
    }
  });

  test('through serve, read by Nx directly: each shape is a miss, rebuilt, logged and counted', async (t) => {
    const w = workspace();
    w.setPluginOptions(null);
    const store = w.newStorePath('serve');
    const s = await startServe(['--storage', `fs:${store}`, '--log', 'json'], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${RW}` }),
    });
    const env = {
      NX_SELF_HOSTED_REMOTE_CACHE_SERVER: s.url,
      NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: RW,
    };
    const refusedGets = async () => {
      const text = (await request(`${s.url}/metrics`)).body.toString('utf8');
      const line = text.split('\n').find((l) => l.startsWith('nx_open_cache_refused_total{operation="get"} '));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    try {
      // Nx's own uploads pass serve's check.
      const fill = await build(env);
      assert.equal(fill.code, 0, show(fill));
      assert.equal(storeObjects(store).length, PROJECTS.length, s.stderr());
      for (const shape of SHAPES) {
        const hashes = poison(store, shape);
        const before = await refusedGets();
        const logged = s.stderr().length;
        const r = await build(env);
        assertSafe(r, shape);
        assert.equal(await refusedGets(), before + hashes.length, shape.name);
        const warnings = s.stderr().slice(logged).split('\n')
          .filter((l) => l.startsWith('{') && l.includes('"level":"warn"'))
          .map((l) => String(JSON.parse(l).message));
        for (const h of hashes) {
          const m = warnings.find((x) => x.startsWith(`${h} not served: not a valid Nx artifact: `));
          assert.ok(m, `${shape.name}: no refusal of ${h} in the log:\n${warnings.join('\n')}`);
          assert.match(m, shape.reason, `${shape.name}: ${m}`);
        }
        assert.equal(storeObjects(store).length, PROJECTS.length, shape.name);
        t.diagnostic(`${shape.name}: ${(warnings[0] || '').slice(0, 160)}`);
      }
    } finally {
      await s.stop();
    }
  });
});
