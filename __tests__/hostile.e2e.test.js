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
 * Sealed objects, made by the plugin itself on this workspace (a writer run with a signing key
 * the readers do not trust, one with an encryption key; keys from the addon's keygen):
 *   - through the plugin, three readers: one with `trustedKeys` + `requireSignature` reads objects
 *     signed by an unknown key, one with another NX_OPEN_CACHE_ENCRYPTION_KEY and one with none
 *     read encrypted objects. Each run is green, rebuilds with the correct outputs, and its
 *     summary names every hash with the seal layer's reason; the objects stay (a reader never
 *     deletes what it refuses: a reader with the keys accepts them).
 *   - through `serve` (which never opens seals), a signed and an encrypted payload are two more
 *     shapes of the serve loop: not valid Nx artifacts (never handed to Nx as a hit), refused,
 *     logged, removed.
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

const native = require('../index.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('./helpers/hostile.js').Shape} Shape */

/** The projects each run builds (no dependency between them). */
const PROJECTS = ['app-c', 'lib-a'];
const RW = 'rw-secret-0123456789abcdef';
const CANARY_TEXT = 'canary: nothing may change here\n';
/** The envelope header of a stored fs object (src/envelope.rs). */
const ENVELOPE_LEN = 48;

/**
 * The seal flags of a stored object's payload (1 signed, 2 encrypted), -1 when it is not sealed.
 * @param {Buffer} payload
 */
const sealFlags = (payload) => (payload.subarray(0, 4).toString('latin1') === 'NXOS' ? payload[5] : -1);

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
   * The summary the last build saved (in its own workspace data directory).
   * @returns {any}
   */
  function lastRun() {
    const file = path.join(workspace().base, `data-${run}`, 'nx-open-cache', 'last-run.json');
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  }

  /**
   * @typedef {{ options: Record<string, unknown>, store: string, payload: Buffer }} SealedStore
   * @typedef {{ signed: SealedStore, encrypted: SealedStore, signer: { keyId: string },
   *   trusted: { publicKey: string }, key1: { key: string, keyId: string },
   *   key2: { key: string, keyId: string } }} Sealed
   */
  /** @type {Promise<Sealed> | undefined} */
  let sealedOnce;

  /**
   * Two fs stores filled by the plugin: signed by a key nobody trusts (nx.json trusts another
   * one and requires signatures), and encrypted with `key1`. Made once, on first use.
   * @returns {Promise<Sealed>}
   */
  function sealedStores() {
    sealedOnce ??= (async () => {
      const w = workspace();
      const [signer, trusted] = [native.keygen(), native.keygen()];
      const [key1, key2] = [native.encryptionKeygen(), native.encryptionKeygen()];
      /** @param {string} label @param {Record<string, unknown>} extra @param {Record<string, string>} env @param {number} flags */
      const fill = async (label, extra, env, flags) => {
        const store = w.newStorePath(label);
        const options = { path: store, ...extra };
        w.setPluginOptions(options);
        const r = await build(env);
        assert.equal(r.code, 0, `${label} writer${show(r)}`);
        const payloads = storeObjects(store).map((o) => fs.readFileSync(path.join(store, o)).subarray(ENVELOPE_LEN));
        assert.equal(payloads.length, PROJECTS.length, `${label}: one object per task`);
        for (const p of payloads) assert.equal(sealFlags(p), flags, `${label}: sealed objects`);
        return { options, store, payload: payloads[0] };
      };
      const signed = await fill(
        'signed-unknown-key',
        { trustedKeys: [trusted.publicKey], requireSignature: true },
        { NX_OPEN_CACHE_SIGNING_KEY: signer.secretKey },
        1,
      );
      const encrypted = await fill('encrypted', {}, { NX_OPEN_CACHE_ENCRYPTION_KEY: key1.key }, 2);
      return { signed, encrypted, signer, trusted, key1, key2 };
    })();
    return sealedOnce;
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
   * @param {{ name: string }} shape
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

  test('through the plugin: sealed objects this reader cannot trust or open are misses, rebuilt, named, kept', async (t) => {
    const w = workspace();
    const { signed, encrypted, signer, key1, key2 } = await sealedStores();
    /** @type {{ name: string, from: typeof signed, env: Record<string, string>, reason: RegExp }[]} */
    const shapes = [
      {
        name: 'signed with an unknown key, the reader has trustedKeys + requireSignature',
        from: signed,
        env: {},
        reason: new RegExp(`^signature by an untrusted key ${signer.keyId} \\(not among trustedKeys\\)`),
      },
      {
        name: 'encrypted with another key than the reader\'s',
        from: encrypted,
        env: { NX_OPEN_CACHE_ENCRYPTION_KEY: key2.key },
        reason: new RegExp(`^cannot decrypt: encrypted with key ${key1.keyId}, not among NX_OPEN_CACHE_ENCRYPTION_KEY's keys`),
      },
      {
        name: 'encrypted, the reader has no NX_OPEN_CACHE_ENCRYPTION_KEY',
        from: encrypted,
        env: {},
        reason: new RegExp(`^encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here \\(encrypted with key ${key1.keyId}\\)`),
      },
    ];
    for (const shape of shapes) {
      const { store, options } = shape.from;
      const before = new Map(storeObjects(store).map((o) => [o, fs.readFileSync(path.join(store, o))]));
      w.setPluginOptions(options);
      const r = await build(shape.env);
      assertSafe(r, shape);
      const summary = lastRun();
      const named = (summary.refusals || []).find((/** @type {{ reason: string }} */ x) => shape.reason.test(x.reason));
      assert.ok(named, `${shape.name}: ${JSON.stringify(summary.refusals)}${show(r)}`);
      const hashes = [...before.keys()].map((o) => path.basename(o)).sort();
      assert.deepEqual([...named.hashes].sort(), hashes, shape.name);
      assert.equal(summary.refusedCount, hashes.length, shape.name);
      assert.equal(summary.hits, 0, shape.name);
      assert.equal(summary.errorCount, 0, `${shape.name}: a refusal is no fault: ${JSON.stringify(summary.errors)}`);
      const line = r.output.split('\n').find((l) => l.includes('- refused') && l.includes(named.reason));
      assert.ok(line, `${shape.name}: not in the printed summary${show(r)}`);
      // Never deleted by a reader (one with the keys accepts them); first writer wins for the rebuild.
      assert.deepEqual([...storeObjects(store)].sort(), [...before.keys()].sort(), shape.name);
      for (const [o, bytes] of before) assert.ok(fs.readFileSync(path.join(store, o)).equals(bytes), `${shape.name}: ${o} changed`);
      t.diagnostic(`${shape.name}: ${line.trim().slice(0, 160)}`);
    }
  });

  test('through serve, read by Nx directly: each shape is a miss, rebuilt, logged and counted', async (t) => {
    const w = workspace();
    // serve never opens seals: to it, sealed objects are two more shapes that are not artifacts.
    const { signed, encrypted } = await sealedStores();
    /** @type {Shape[]} */
    const sealedShapes = [
      ['signed by the plugin', signed.payload],
      ['encrypted by the plugin', encrypted.payload],
    ].map(([name, payload]) => ({
      name: `${name} (serve has no keys)`,
      reason: /not gzip: it starts with 4e 58 .*sealed by the plugin \(signed or encrypted\), which only the plugin opens/,
      payload: () => /** @type {Buffer} */ (payload),
    }));
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
      for (const shape of [...SHAPES, ...sealedShapes]) {
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
