'use strict';
/**
 * Cache poisoning end to end (CREEP, CVE-2025-36852), with a real Nx workspace (nx 24 from npm,
 * nx-open-cache from `npm pack`), on the fs backend and on S3 (moto_server, scripts/emulators.js).
 *
 * The "altered build" of a malicious pull request: lib-a's build writes different output when
 * POISON=1 is set. Nx does not hash environment variables unless a target declares them as inputs
 * (these targets do not), so the PR run and the main-branch run compute the same task hash: the
 * first writer decides what everyone restores.
 *
 * (a) Without trust settings, the PR run stores first and the main run restores the poisoned output
 *     (shown, to prove the attack is real in this setup).
 * (b) With `--trust=ci-split` (PR runs: nx.json's writePrefix "untrusted", readPrefixes
 *     ["trusted", "untrusted"]; main runs: NX_OPEN_CACHE_WRITE_PREFIX=trusted
 *     NX_OPEN_CACHE_READ_PREFIXES=trusted), the PR run stores first under untrusted/, the main run
 *     never restores it (it rebuilds: clean outputs, no remote hit) and stores the clean artifacts
 *     under trusted/; a later PR run reads trusted/ first and restores the clean artifacts.
 *
 * Run: node --test --test-concurrency=1 __tests__/poisoning.e2e.test.js
 * Needs: a native build (`node scripts/ensure-native.js`) and, for S3, the emulators
 * (`node scripts/emulators.js install`, which this file also runs: quick when already installed).
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const emulators = require('../scripts/emulators.js');
const { createWorkspace, disposePack, isRemoteHit, storeObjects, summaryLines } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** The project whose build a malicious PR alters. */
const VICTIM = 'lib-a';
const POISON_TEXT = 'POISONED by an untrusted build';
/** The environment of the runs (the daemon off, as in CI). */
const BASE_ENV = { NX_DAEMON: 'false' };
/** What a trusted build (main-branch CI) sets with the ci-split preset. */
const TRUSTED_ENV = { NX_OPEN_CACHE_WRITE_PREFIX: 'trusted', NX_OPEN_CACHE_READ_PREFIXES: 'trusted' };

/**
 * Appended to the workspace's build script: the malicious change. With POISON=1 the victim's
 * output is replaced; the task hash does not change (env vars are not inputs).
 */
const POISON_HOOK = `
// --- poisoning test: an altered build, selected by an environment variable Nx does not hash ---
if (process.env.POISON === '1' && projectName === ${JSON.stringify(VICTIM)}) {
  fs.writeFileSync(path.join(dist, 'index.txt'), ${JSON.stringify(`${POISON_TEXT}\n`)});
  console.log('altered build ran for ' + projectName);
}
`;

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

/**
 * A storage the scenario runs against: its plugin options and how to list its keys.
 * @typedef {{ label: string, options: Record<string, unknown>, env: Record<string, string>,
 *   keys: () => Promise<string[]> }} Storage
 */

describe('cache poisoning by an untrusted (PR) build', () => {
  /** @type {NxWorkspace | undefined} */
  let ws;
  /** The outputs of an honest build, made without any cache. */
  /** @type {Record<string, import('./helpers/nx-workspace.js').SnapshotEntry>} */
  let clean = {};

  before(async () => {
    emulators.install({ log: () => undefined });
    ws = await createWorkspace();
    fs.appendFileSync(path.join(ws.root, 'tools', 'build.js'), POISON_HOOK);
    // The honest outputs: no plugin, no cache.
    await ws.resetScenario();
    const honest = await ws.runBuild({ env: BASE_ENV, extraArgs: ['--skip-nx-cache'] });
    assertGreen(honest, 'honest build');
    clean = ws.snapshotOutputs();
    assert.ok(!victimOutput().includes(POISON_TEXT), 'the honest build is not poisoned');
  });

  after(async () => {
    if (ws) await ws.dispose();
    disposePack();
  });

  /** @returns {NxWorkspace} */
  const workspace = () => {
    assert.ok(ws, 'workspace not created');
    return ws;
  };

  /** @returns {string} the victim's dist/index.txt, or '' when absent */
  function victimOutput() {
    const w = workspace();
    const dir = /** @type {{ dir: string }} */ (w.projects.find((p) => p.name === VICTIM)).dir;
    const file = path.join(w.root, dir, 'dist', 'index.txt');
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  }

  /** Another machine: no local Nx cache, no outputs, empty build log. */
  async function freshMachine() {
    const w = workspace();
    await w.nxReset();
    w.cleanOutputs();
    w.clearBuildLog();
  }

  /**
   * Runs `nx run-many -t build` and logs the plugin's summary.
   * @param {string} what
   * @param {Record<string, string>} env
   * @param {import('node:test').TestContext} t
   */
  async function build(what, env, t) {
    const r = await workspace().runBuild({ env: { ...BASE_ENV, ...env } });
    assertGreen(r, what);
    t.diagnostic(`${what}: ${summaryLines(r.output).join(' | ') || '(no summary line)'}`);
    return r;
  }

  /**
   * The PR run: the altered build, first writer of every hash.
   * @param {Storage} storage
   * @param {import('node:test').TestContext} t
   */
  async function prRun(storage, t) {
    const w = workspace();
    const all = w.projects.map((p) => p.name).sort();
    const pr = await build('PR run (altered build)', { ...storage.env, POISON: '1' }, t);
    assert.deepEqual(w.builtProjects().sort(), all, `PR run: every project builds${show(pr)}`);
    assert.match(pr.output, /altered build ran for lib-a/, show(pr));
    assert.ok(victimOutput().includes(POISON_TEXT), 'PR run: the victim output is poisoned');
    const s = w.readLastRun();
    assert.equal(s?.stored, all.length, `PR run: stored ${JSON.stringify(s)}${show(pr)}`);
    return pr;
  }

  /**
   * (a) No trust settings: the main run restores what the PR stored.
   * @param {Storage} storage
   * @param {import('node:test').TestContext} t
   */
  async function withoutTrust(storage, t) {
    const w = workspace();
    await w.resetScenario();
    w.setPluginOptions(storage.options);
    await prRun(storage, t);
    const stored = await storage.keys();
    assert.equal(stored.length, w.projects.length, `stored keys: ${JSON.stringify(stored)}`);

    await freshMachine();
    const main = await build('main run, no trust settings', storage.env, t);
    assert.ok(isRemoteHit(main.output, VICTIM), `main run: ${VICTIM}:build should be a remote hit${show(main)}`);
    assert.ok(!w.builtProjects().includes(VICTIM), `main run: ${VICTIM} was rebuilt${show(main)}`);
    assert.ok(
      victimOutput().includes(POISON_TEXT),
      `main run: the poisoned output was expected to be restored (same hash: POISON is not an input)${show(main)}`,
    );
    assert.notDeepEqual(w.snapshotOutputs(), clean, 'main run: outputs are the poisoned ones');
  }

  /**
   * (b) ci-split: the main run never restores the PR's artifacts; a later PR restores the main run's.
   * @param {Storage} storage
   * @param {import('node:test').TestContext} t
   * @param {string} keyPrefix  where the namespaces live in the store's keys ('' or `<prefix>/`)
   */
  async function withCiSplit(storage, t, keyPrefix) {
    const w = workspace();
    const n = w.projects.length;
    const all = w.projects.map((p) => p.name).sort();
    await w.resetScenario();
    // The generator writes the preset; the untrusted side is the default.
    /** @type {string[]} */
    const flags = [];
    for (const [k, v] of Object.entries(storage.options)) flags.push(v === true ? `--${k}` : `--${k}=${v}`);
    const g = await w.nx(['g', 'nx-open-cache:init', ...flags, '--trust=ci-split', '--no-interactive'], {
      env: { ...BASE_ENV, ...storage.env },
    });
    assertGreen(g, 'generator --trust=ci-split');
    assert.match(g.output, /NX_OPEN_CACHE_WRITE_PREFIX=trusted NX_OPEN_CACHE_READ_PREFIXES=trusted/, show(g));
    const entries = (w.readNxJson().plugins || []).filter((/** @type {any} */ p) => p && p.plugin === 'nx-open-cache');
    assert.deepEqual(
      entries,
      [{ plugin: 'nx-open-cache', options: { ...storage.options, writePrefix: 'untrusted', readPrefixes: ['trusted', 'untrusted'] } }],
      `generator: nx.json${show(g)}`,
    );

    /** @param {string} ns */
    const keysIn = async (ns) => (await storage.keys()).filter((k) => k.startsWith(`${keyPrefix}${ns}/`));

    // The PR run stores first, under untrusted/ only.
    await prRun(storage, t);
    const afterPr = await storage.keys();
    assert.equal(afterPr.length, n, `after the PR run: ${JSON.stringify(afterPr)}`);
    assert.equal((await keysIn('untrusted')).length, n, `after the PR run: ${JSON.stringify(afterPr)}`);

    // The main run (trusted): never restores the PR's artifacts; rebuilds and stores under trusted/.
    await freshMachine();
    const main = await build('main run (trusted)', { ...storage.env, ...TRUSTED_ENV }, t);
    for (const p of all) {
      assert.ok(!isRemoteHit(main.output, p), `main run: ${p}:build restored from the remote cache${show(main)}`);
    }
    assert.deepEqual(w.builtProjects().sort(), all, `main run: every project rebuilt${show(main)}`);
    assert.ok(!victimOutput().includes(POISON_TEXT), `main run: poisoned output restored${show(main)}`);
    assert.deepEqual(w.snapshotOutputs(), clean, 'main run: outputs are the honest ones');
    const s = w.readLastRun();
    assert.equal(s?.hits, 0, `main run: hits ${JSON.stringify(s)}`);
    assert.equal(s?.stored, n, `main run: stored ${JSON.stringify(s)}`);
    assert.equal((await keysIn('trusted')).length, n, `after the main run: ${JSON.stringify(await storage.keys())}`);
    assert.equal((await storage.keys()).length, 2 * n, `after the main run: ${JSON.stringify(await storage.keys())}`);
    // Same hashes on both sides: the PR's poisoned artifacts are still there, under untrusted/.
    const hashes = async (/** @type {string} */ ns) => (await keysIn(ns)).map((k) => k.split('/').pop()).sort();
    assert.deepEqual(await hashes('trusted'), await hashes('untrusted'), 'the same task hashes in both namespaces');

    // A later PR run (no altered build) reads trusted/ first: the clean artifacts.
    await freshMachine();
    const later = await build('later PR run', storage.env, t);
    for (const p of all) {
      assert.ok(isRemoteHit(later.output, p), `later PR run: ${p}:build not a remote hit${show(later)}`);
    }
    assert.deepEqual(w.builtProjects(), [], `later PR run: a build ran${show(later)}`);
    assert.ok(!victimOutput().includes(POISON_TEXT), `later PR run: restored the poisoned artifact${show(later)}`);
    assert.deepEqual(w.snapshotOutputs(), clean, 'later PR run: restored outputs are the honest ones');
    assert.equal((await storage.keys()).length, 2 * n, 'later PR run: nothing new stored');
  }

  /** @returns {Storage} */
  function fsStorage(/** @type {string} */ label) {
    const store = workspace().newStorePath(label);
    return {
      label,
      options: { backend: 'fs', path: store },
      env: {},
      keys: async () => storeObjects(store),
    };
  }

  test('fs, no trust settings: the main run restores the PR\'s poisoned output (the attack is real)', async (t) => {
    await withoutTrust(fsStorage('fs-plain'), t);
  });

  test('fs, --trust=ci-split: the main run rebuilds clean and stores under trusted/; a later PR restores the clean artifacts', async (t) => {
    await withCiSplit(fsStorage('fs-split'), t, '');
  });

  /**
   * @param {import('../scripts/emulators.js').Emulator} emu
   * @param {string} prefix
   * @returns {Storage}
   */
  function s3Storage(emu, prefix) {
    return {
      label: `s3 ${prefix}`,
      options: { ...emu.options, prefix },
      env: emu.env,
      keys: async () => (await emu.listObjects()).filter((k) => k.startsWith(`${prefix}/`) && !k.endsWith('-nxoc-meta')),
    };
  }

  test('s3 (moto), no trust settings: the main run restores the PR\'s poisoned output', async (t) => {
    const emu = await emulators.start('s3');
    try {
      t.diagnostic(`${emu.version} on ${emu.endpoint}`);
      await withoutTrust(s3Storage(emu, 'plain'), t);
    } finally {
      await emu.stop();
    }
  });

  test('s3 (moto), --trust=ci-split: the main run rebuilds clean and stores under trusted/; a later PR restores the clean artifacts', async (t) => {
    const emu = await emulators.start('s3');
    try {
      t.diagnostic(`${emu.version} on ${emu.endpoint}`);
      await withCiSplit(s3Storage(emu, 'team'), t, 'team/');
    } finally {
      await emu.stop();
    }
  });
});
