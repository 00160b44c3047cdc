'use strict';
/**
 * Signed and encrypted artifacts end to end, with a real Nx workspace (nx 24 from npm,
 * nx-open-cache from `npm pack`), on the fs backend and on S3 (moto_server).
 *
 * Signatures, one nx.json for every run (committed): `trustedKeys: [<main CI's public key>]`,
 * `requireSignature: true`. Only main-branch CI has NX_OPEN_CACHE_SIGNING_KEY.
 *   1. A "PR" run (no signing key) with an altered build (POISON=1: an environment variable Nx does
 *      not hash, so the task hashes are the same) writes first: unsigned artifacts.
 *   2. The "main" run (signing key) never restores them: every project rebuilds, outputs are the
 *      honest ones, the summary names the refused hashes ("unsigned"); it replaces them with signed
 *      artifacts.
 *   3. A third run on a fresh machine (no signing key) restores the signed, honest artifacts.
 *
 * Encryption (NX_OPEN_CACHE_ENCRYPTION_KEY): the stored objects do not give away a known random
 * marker file, verbatim or through gunzip (a plain store does: the control), a fresh machine with the key
 * restores, one with a wrong key rebuilds with a refusal in the summary, one without any key (a fork's
 * pull request) rebuilds too ("encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here"), one with "new,old"
 * restores.
 *
 * Run: node --test --test-concurrency=1 __tests__/signing.e2e.test.js
 * Needs a native build (`node scripts/ensure-native.js`) and, for S3, the emulators
 * (`node scripts/emulators.js install`, which this file also runs).
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { describe, test, before, after } = require('node:test');

const emulators = require('../scripts/emulators.js');
const { keygenCommand } = require('../lib/keygen.js');
const { legacyBlock } = require('../lib/legacy.js');
const { createWorkspace, disposePack, isRemoteHit, storeObjects, summaryLines } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

const native = require('../index.js');

const VICTIM = 'lib-a';
const POISON_TEXT = 'POISONED by an untrusted build';
const BASE_ENV = { NX_DAEMON: 'false' };
/** The envelope header of a stored fs object (src/envelope.rs). */
const ENVELOPE_LEN = 48;

/**
 * Appended to the workspace's build script: the altered build (POISON=1) and, for every project,
 * a random marker file copied into dist/.
 */
const HOOKS = `
// --- signing test: an altered build, selected by an environment variable Nx does not hash ---
if (process.env.POISON === '1' && projectName === ${JSON.stringify(VICTIM)}) {
  fs.writeFileSync(path.join(dist, 'index.txt'), ${JSON.stringify(`${POISON_TEXT}\n`)});
  console.log('altered build ran for ' + projectName);
}
fs.copyFileSync(path.join(workspaceRoot, 'tools', 'marker.bin'), path.join(dist, 'marker.bin'));
`;

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/** @param {RunResult} r @param {string} what */
function assertGreen(r, what) {
  assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
  assert.equal(r.code, 0, `${what}: nx failed${show(r)}`);
}

/* ---------------------------------------------------------------------------------------------- */
/* keygen and the legacy encryptionKey: no workspace needed                                        */
/* ---------------------------------------------------------------------------------------------- */

describe('nx-open-cache keygen', () => {
  test('prints a fresh key pair (text and --json) and an encryption key', () => {
    /** @type {string[]} */ const lines = [];
    assert.equal(keygenCommand([], native, (l) => lines.push(l)), 0);
    const keys = lines.filter((l) => !l.startsWith('#'));
    assert.equal(keys.length, 2, lines.join('\n'));
    for (const k of keys) assert.equal(Buffer.from(k, 'base64').length, 32, k);
    assert.match(lines.join('\n'), /trustedKeys[\s\S]*NX_OPEN_CACHE_SIGNING_KEY/);
    /** @type {string[]} */ const json = [];
    assert.equal(keygenCommand(['--json'], native, (l) => json.push(l)), 0);
    const parsed = JSON.parse(json.join('\n'));
    assert.equal(Buffer.from(parsed.publicKey, 'base64').length, 32);
    assert.equal(Buffer.from(parsed.secretKey, 'base64').length, 32);
    assert.match(parsed.keyId, /^[0-9a-f]{16}$/);
    assert.equal(parsed.keyId, Buffer.from(parsed.publicKey, 'base64').subarray(0, 8).toString('hex'));
    assert.notEqual(parsed.secretKey, keys[1], 'a new key every time');
    /** @type {string[]} */ const enc = [];
    assert.equal(keygenCommand(['--encryption', '--json'], native, (l) => enc.push(l)), 0);
    const e = JSON.parse(enc.join('\n'));
    assert.equal(Buffer.from(e.encryptionKey, 'base64').length, 32);
    assert.equal(keygenCommand(['--bogus'], native, () => undefined), 1);
  });

  test('the deprecated plugins\' encryptionKey maps to NX_OPEN_CACHE_ENCRYPTION_KEY, never to an option', () => {
    const m = legacyBlock({ s3: { bucket: 'b', encryptionKey: 'legacy-key-value' } }, {});
    assert.deepEqual(m?.options, { backend: 's3', bucket: 'b' });
    assert.deepEqual(m?.secretEnv, { NX_OPEN_CACHE_ENCRYPTION_KEY: 'legacy-key-value' });
    assert.deepEqual(m?.secrets, ['encryptionKey']);
    assert.ok(!JSON.stringify(m?.options).includes('legacy-key-value'));
    const g = legacyBlock({ gcs: { bucket: 'b', encryptionKey: 'k2' } }, {});
    assert.deepEqual(g?.secretEnv, { NX_OPEN_CACHE_ENCRYPTION_KEY: 'k2' });
    // The environment's key wins.
    const w = legacyBlock({ s3: { bucket: 'b', encryptionKey: 'k3' } }, { NX_OPEN_CACHE_ENCRYPTION_KEY: 'env' });
    assert.deepEqual(w?.secretEnv, {});
    // A wrong key is a configuration error naming the variable, without the value.
    assert.throws(
      () => native.resolveConfig('/tmp', { backend: 'fs', path: '/tmp/x' }, { NX_OPEN_CACHE_ENCRYPTION_KEY: 'legacy-key-value' }),
      (err) => {
        const msg = /** @type {Error} */ (err).message;
        return msg.includes('NX_OPEN_CACHE_ENCRYPTION_KEY') && !msg.includes('legacy-key-value');
      },
    );
  });
});

/* ---------------------------------------------------------------------------------------------- */
/* a real Nx workspace                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/**
 * A storage the scenarios run against.
 * @typedef {{ label: string, options: Record<string, unknown>, env: Record<string, string>,
 *   payloads: () => Promise<Buffer[]> }} Storage
 */

describe('signed and encrypted artifacts with a real Nx workspace', () => {
  /** @type {NxWorkspace | undefined} */
  let ws;
  /** @type {Record<string, import('./helpers/nx-workspace.js').SnapshotEntry>} */
  let clean = {};
  /** 16 KiB of random bytes: the marker file every build copies into dist/. */
  const marker = crypto.randomBytes(16 * 1024);
  const signing = native.keygen();
  const key1 = native.encryptionKeygen().key;
  const key2 = native.encryptionKeygen().key;

  before(async () => {
    emulators.install({ log: () => undefined });
    ws = await createWorkspace();
    fs.writeFileSync(path.join(ws.root, 'tools', 'marker.bin'), marker);
    fs.appendFileSync(path.join(ws.root, 'tools', 'build.js'), HOOKS);
    await ws.resetScenario();
    const honest = await ws.runBuild({ env: BASE_ENV, extraArgs: ['--skip-nx-cache'] });
    assertGreen(honest, 'honest build');
    clean = ws.snapshotOutputs();
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

  function victimOutput() {
    const w = workspace();
    const dir = /** @type {{ dir: string }} */ (w.projects.find((p) => p.name === VICTIM)).dir;
    const file = path.join(w.root, dir, 'dist', 'index.txt');
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  }

  async function freshMachine() {
    const w = workspace();
    await w.nxReset();
    w.cleanOutputs();
    w.clearBuildLog();
  }

  /**
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

  /** @param {Buffer} payload */
  const sealFlags = (payload) => (payload.subarray(0, 4).toString('latin1') === 'NXOS' ? payload[5] : -1);
  /** A 64-byte window of the marker file. */
  const window = marker.subarray(4096, 4096 + 64);
  const GZIP_MAGIC = Buffer.from([0x1f, 0x8b, 0x08]);
  /**
   * Whether stored bytes give the marker away: verbatim, or through any gzip stream that starts in
   * them (Nx's artifacts are tar.gz; deflate may or may not keep random data verbatim).
   * @param {Buffer} stored
   */
  function reveals(stored) {
    if (stored.includes(window)) return true;
    for (let i = stored.indexOf(GZIP_MAGIC); i !== -1; i = stored.indexOf(GZIP_MAGIC, i + 1)) {
      try {
        if (zlib.gunzipSync(stored.subarray(i)).includes(window)) return true;
      } catch {
        // not a gzip stream from here
      }
    }
    return false;
  }

  /**
   * @param {Storage} storage
   * @param {import('node:test').TestContext} t
   */
  async function signatures(storage, t) {
    const w = workspace();
    const n = w.projects.length;
    const all = w.projects.map((p) => p.name).sort();
    await w.resetScenario();
    w.setPluginOptions({ ...storage.options, trustedKeys: [signing.publicKey], requireSignature: true });

    // 1. PR run: no signing key, altered build, first writer of every hash (unsigned objects).
    const pr = await build('PR run (altered build, no signing key)', { ...storage.env, POISON: '1' }, t);
    assert.match(pr.output, /altered build ran for lib-a/, show(pr));
    assert.equal(w.readLastRun()?.stored, n, `PR run stored ${JSON.stringify(w.readLastRun())}`);
    let payloads = await storage.payloads();
    assert.equal(payloads.length, n);
    assert.ok(payloads.every((p) => sealFlags(p) === -1), 'PR run: unsigned (plain) objects');

    // 2. Main run with the signing key: never restores them; rebuilds, replaces with signed ones.
    await freshMachine();
    const main = await build('main run (signing key)', { ...storage.env, NX_OPEN_CACHE_SIGNING_KEY: signing.secretKey }, t);
    for (const p of all) assert.ok(!isRemoteHit(main.output, p), `main run: ${p} restored${show(main)}`);
    assert.deepEqual(w.builtProjects().sort(), all, `main run: every project rebuilt${show(main)}`);
    assert.ok(!victimOutput().includes(POISON_TEXT), `main run: poisoned output${show(main)}`);
    assert.deepEqual(w.snapshotOutputs(), clean, 'main run: honest outputs');
    // The summary names the keys by id, as keygen prints them.
    assert.match(
      summaryLines(main.output).join('\n'),
      new RegExp(`signs with key ${signing.keyId}, trusts ${signing.keyId} \\(requires signatures\\)`),
      show(main),
    );
    assert.doesNotMatch(main.output, /nx-open-cache: warning:/, show(main));
    const s = w.readLastRun();
    assert.equal(s?.hits, 0, JSON.stringify(s));
    assert.equal(s?.stored, n, `main run replaces the unsigned objects: ${JSON.stringify(s)}`);
    const unsigned = (s?.refusals || []).find((r) => /^unsigned/.test(r.reason));
    assert.equal(unsigned?.count, n, `main run: every hash refused as unsigned: ${JSON.stringify(s?.refusals)}`);
    assert.equal(s?.errorCount, 0, `main run: refusals are no faults: ${JSON.stringify(s?.errors)}`);
    // Routine: counted apart, one clause of the line, no warning line.
    assert.equal(unsigned?.routine, true, JSON.stringify(s?.refusals));
    assert.deepEqual([s?.routineCount, s?.refusedCount], [n, 0], JSON.stringify(s));
    const line = main.output.split(/\r?\n/).find((l) => l.startsWith('nx-open-cache: 0 hits'));
    assert.ok(line?.includes(`, 0 errors, ${n} routine (unsigned, replaced by this signing run) (`), `main run: the line${show(main)}`);
    assert.ok(!/^ {2}- refused/m.test(main.output), `main run: no refusal warning line${show(main)}`);
    payloads = await storage.payloads();
    assert.equal(payloads.length, n);
    assert.ok(payloads.every((p) => sealFlags(p) === 1), 'main run: signed objects');

    // 3. A later run without the signing key restores the signed, honest artifacts.
    await freshMachine();
    const later = await build('later run (no signing key)', storage.env, t);
    for (const p of all) assert.ok(isRemoteHit(later.output, p), `later run: ${p} not restored${show(later)}`);
    assert.deepEqual(w.builtProjects(), [], `later run: a build ran${show(later)}`);
    assert.deepEqual(w.snapshotOutputs(), clean, 'later run: honest outputs restored');
    assert.equal(w.readLastRun()?.errorCount, 0, JSON.stringify(w.readLastRun()));

    // 4. An attacker with write access and their own key: a signature by an untrusted key.
    const attacker = native.keygen();
    await freshMachine();
    w.setPluginOptions({ ...storage.options, prefix: 'attacked', trustedKeys: [signing.publicKey], requireSignature: true });
    const own = await build('attacker run (own key)', { ...storage.env, POISON: '1', NX_OPEN_CACHE_SIGNING_KEY: attacker.secretKey }, t);
    // A signing key whose public key is not trusted: the run says so before it starts.
    assert.match(
      own.output,
      new RegExp(`nx-open-cache: warning: NX_OPEN_CACHE_SIGNING_KEY signs with key ${attacker.keyId}, but "trustedKeys" lists ${signing.keyId}: other machines will refuse what this one signs`),
      show(own),
    );
    await freshMachine();
    const victim = await build('trusted reader after the attacker', storage.env, t);
    for (const p of all) assert.ok(!isRemoteHit(victim.output, p), `${p} restored from an untrusted signer${show(victim)}`);
    assert.ok(!victimOutput().includes(POISON_TEXT));
    const refused = w.readLastRun()?.refusals || [];
    assert.ok(refused.some((r) => r.reason.includes(`untrusted key ${attacker.keyId}`)), JSON.stringify(refused));
  }

  /**
   * @param {Storage} storage
   * @param {import('node:test').TestContext} t
   */
  async function encryption(storage, t) {
    const w = workspace();
    const n = w.projects.length;
    const all = w.projects.map((p) => p.name).sort();

    // Control: a plain store holds the marker verbatim (so its absence below means something).
    await w.resetScenario();
    w.setPluginOptions({ ...storage.options, prefix: 'control' });
    await build('plain run (control)', storage.env, t);
    const plain = await storage.payloads();
    assert.equal(plain.length, n, 'control: stored');
    assert.ok(plain.every((p) => reveals(p)), 'control: every plain object reveals the marker (gunzip)');

    await w.resetScenario();
    w.setPluginOptions({ ...storage.options, prefix: 'secret' });
    await build('encrypted run', { ...storage.env, NX_OPEN_CACHE_ENCRYPTION_KEY: key1 }, t);
    assert.equal(w.readLastRun()?.stored, n, JSON.stringify(w.readLastRun()));
    const sealed = (await storage.payloads()).filter((p) => sealFlags(p) === 2);
    assert.equal(sealed.length, n, 'encrypted objects');
    for (const p of sealed) assert.ok(!reveals(p), 'an encrypted object reveals the marker');

    await freshMachine();
    const same = await build('fresh machine, same key', { ...storage.env, NX_OPEN_CACHE_ENCRYPTION_KEY: key1 }, t);
    for (const p of all) assert.ok(isRemoteHit(same.output, p), `same key: ${p} not restored${show(same)}`);
    assert.deepEqual(w.snapshotOutputs(), clean, 'same key: outputs restored');

    await freshMachine();
    const wrong = await build('fresh machine, wrong key', { ...storage.env, NX_OPEN_CACHE_ENCRYPTION_KEY: key2 }, t);
    for (const p of all) assert.ok(!isRemoteHit(wrong.output, p), `wrong key: ${p} restored${show(wrong)}`);
    assert.deepEqual(w.builtProjects().sort(), all, 'wrong key: everything rebuilt');
    assert.deepEqual(w.snapshotOutputs(), clean);
    const refused = w.readLastRun()?.refusals || [];
    assert.ok(
      refused.some((r) => /cannot decrypt: encrypted with key [0-9a-f]{16}, not among NX_OPEN_CACHE_ENCRYPTION_KEY's keys/.test(r.reason)),
      `wrong key: the summary says why: ${JSON.stringify(refused)}`,
    );

    // A machine without any key (a fork's pull request gets no secrets): misses with the reason,
    // never the ciphertext handed to Nx.
    await freshMachine();
    const keyless = await build('fresh machine, no key', storage.env, t);
    for (const p of all) assert.ok(!isRemoteHit(keyless.output, p), `no key: ${p} restored${show(keyless)}`);
    assert.deepEqual(w.builtProjects().sort(), all, 'no key: everything rebuilt');
    assert.deepEqual(w.snapshotOutputs(), clean);
    const none = w.readLastRun();
    assert.equal(none?.errorCount, 0, JSON.stringify(none?.errors));
    assert.ok(
      (none?.refusals || []).some((r) => r.reason.startsWith('encrypted; no NX_OPEN_CACHE_ENCRYPTION_KEY here') && r.count === n),
      `no key: the summary says why: ${JSON.stringify(none?.refusals)}`,
    );

    await freshMachine();
    const rotated = await build('fresh machine, rotated keys', { ...storage.env, NX_OPEN_CACHE_ENCRYPTION_KEY: `${key2},${key1}` }, t);
    for (const p of all) assert.ok(isRemoteHit(rotated.output, p), `rotation: ${p} not restored${show(rotated)}`);
    assert.deepEqual(w.snapshotOutputs(), clean);
  }

  /**
   * An fs store; its payloads are the objects under the prefix nx.json names now.
   * @param {string} label
   * @returns {Storage}
   */
  function fsStorage(label) {
    const store = workspace().newStorePath(label);
    return { label, options: { backend: 'fs', path: store }, env: {}, payloads: async () => latestPrefix(store) };
  }

  test('fs: a PR run\'s unsigned artifacts are never restored by requireSignature; the signed rebuild is', async (t) => {
    await signatures(fsStorage('fs-signed'), t);
  });

  test('fs: encrypted artifacts: no plaintext stored, same key restores, wrong key rebuilds with a warning, rotation', async (t) => {
    await encryption(fsStorage('fs-enc'), t);
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
      payloads: async () => {
        const keys = (await emu.listObjects()).filter((k) => k.startsWith(`${prefix}/`) && !k.includes('/.tmp/') && !k.endsWith('-nxoc-meta'));
        const objects = await Promise.all(keys.map((k) => emu.getObject(k)));
        return objects.map((o, i) => {
          assert.ok(o, `object ${keys[i]} vanished`);
          return o.subarray(ENVELOPE_LEN);
        });
      },
    };
  }

  test('s3 (moto): a PR run\'s unsigned artifacts are never restored by requireSignature; the signed rebuild is', async (t) => {
    const emu = await emulators.start('s3');
    try {
      t.diagnostic(`${emu.version} on ${emu.endpoint}`);
      await signatures(s3Storage(emu, 'team'), t);
    } finally {
      await emu.stop();
    }
  });

  /**
   * The objects under the prefix the workspace's nx.json names now (fs: `<store>/<prefix>/...`).
   * @param {string} store
   */
  function latestPrefix(store) {
    const prefix = /** @type {string} */ (
      (workspace().readNxJson().plugins || []).find((/** @type {any} */ p) => p && p.plugin === 'nx-open-cache')?.options?.prefix || ''
    );
    return storeObjects(store)
      .filter((rel) => (prefix ? rel.startsWith(`${prefix}/`) : true))
      .map((rel) => fs.readFileSync(path.join(store, rel)).subarray(ENVELOPE_LEN));
  }
});
