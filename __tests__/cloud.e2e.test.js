'use strict';
/**
 * Cloud backends end to end: a real Nx workspace (nx 24 from npm, nx-open-cache from `npm pack`),
 * Nx's own remote-cache client talking to the plugin's proxy, the proxy talking to a real emulator of
 * each cloud on 127.0.0.1 (scripts/emulators.js): moto_server for S3, fake-gcs-server for GCS,
 * Azurite for Azure Blob.
 *
 * Run: node --test --test-concurrency=1 __tests__/cloud.e2e.test.js
 * Needs: a native build (`node scripts/ensure-native.js`) and the emulators
 * (`node scripts/emulators.js install`, which this file also runs: quick when already installed).
 *
 * A backend this build of the addon does not accept yet (resolveConfig says "not available") is
 * skipped with `SKIPPED: backend <x> not available in this build`; an emulator that does not start
 * is a failure.
 */

const assert = require('node:assert/strict');
const os = require('node:os');
const { describe, test, before, after } = require('node:test');

const emulators = require('../scripts/emulators.js');
const { createWorkspace, disposePack, isRemoteHit, summaryLines } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('./helpers/nx-workspace.js').RunSummary} RunSummary */
/** @typedef {import('../scripts/emulators.js').EmulatorKind} EmulatorKind */

const KINDS = /** @type {EmulatorKind[]} */ (['s3', 'gcs', 'azure']);

/** Options that make resolveConfig accept each backend when the build supports it. */
const PROBE = {
  s3: { backend: 's3', bucket: 'probe', region: 'us-east-1' },
  gcs: { backend: 'gcs', bucket: 'probe' },
  azure: { backend: 'azure', container: 'probe', accountName: 'probe' },
};

/**
 * Why `backend` cannot be tested with this build, or null when it can.
 * @param {EmulatorKind} backend
 * @returns {string | null}
 */
function unavailable(backend) {
  const { resolveConfig } = require('../index.js');
  try {
    resolveConfig(os.tmpdir(), PROBE[backend], { HOME: os.homedir() });
    return null;
  } catch (e) {
    const msg = String(/** @type {Error} */ (e).message);
    if (/not available/.test(msg)) return `SKIPPED: backend ${backend} not available in this build (${msg})`;
    throw e;
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* the emulator harness itself                                                                       */
/* ------------------------------------------------------------------------------------------------ */

describe('emulator harness', () => {
  before(() => emulators.install({ log: () => undefined }));

  for (const kind of KINDS) {
    test(`${kind}: starts on 127.0.0.1 with its bucket/container, objects round-trip, stop kills it`, async () => {
      const emu = await emulators.start(kind);
      try {
        assert.match(emu.endpoint, /^http:\/\/127\.0\.0\.1:\d+(\/|$)/, `endpoint ${emu.endpoint}`);
        assert.equal(emu.options.backend, kind);
        assert.deepEqual(await emu.listObjects(), [], 'a new bucket/container is empty');
        const data = Buffer.from([0, 1, 2, 253, 254, 255]);
        await emu.putObject('prefix/ab/object-1', data);
        await emu.putObject('other', Buffer.alloc(0));
        assert.deepEqual(await emu.listObjects(), ['other', 'prefix/ab/object-1']);
        assert.deepEqual(await emu.getObject('prefix/ab/object-1'), data);
        assert.equal(await emu.getObject('absent'), null);
      } finally {
        await emu.stop();
      }
      assert.throws(() => process.kill(emu.pid, 0), { code: 'ESRCH' }, `emulator pid ${emu.pid} still running after stop()`);
      await emu.stop(); // idempotent
    });
  }

  test('gcs: the XML-API front carries out object_store\'s calls on fake-gcs-server (create-if-absent, multipart, copy, list, delete)', async () => {
    const emu = await emulators.start('gcs');
    try {
      const B = `${emu.endpoint}/${emu.bucket}`;
      const put = (/** @type {string} */ key, /** @type {string} */ body, /** @type {Record<string, string>} */ headers = {}) =>
        fetch(`${B}/${encodeURIComponent(key)}`, { method: 'PUT', body, headers });
      const text = async (/** @type {string} */ key) => (await fetch(`${B}/${encodeURIComponent(key)}`)).text();

      // create-if-absent: the second writer gets 412 and the first write stays
      const first = await put('p/k1', 'one', { 'x-goog-if-generation-match': '0' });
      assert.equal(first.status, 200, await first.text());
      assert.match(String(first.headers.get('etag')), /^".+"$/);
      assert.match(String(first.headers.get('x-goog-generation')), /^\d+$/);
      const second = await put('p/k1', 'two', { 'x-goog-if-generation-match': '0' });
      assert.equal(second.status, 412);
      assert.match(await second.text(), /<Code>PreconditionFailed<\/Code>/);
      assert.equal(await text('p/k1'), 'one');
      // a plain PUT overwrites
      assert.equal((await put('p/k2', 'plain')).status, 200);
      assert.equal((await put('p/k2', 'plain2')).status, 200);
      assert.equal(await text('p/k2'), 'plain2');

      // reads: GET with a range, HEAD, a missing object
      const ranged = await fetch(`${B}/${encodeURIComponent('p/k2')}`, { headers: { Range: 'bytes=1-3' } });
      assert.equal(ranged.status, 206);
      assert.equal(await ranged.text(), 'lai');
      const head = await fetch(`${B}/${encodeURIComponent('p/k1')}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.ok(head.headers.get('last-modified'));
      assert.equal((await fetch(`${B}/absent`)).status, 404);

      // multipart: parts in temp files, one object on completion
      const init = await (await fetch(`${B}/${encodeURIComponent('p/big')}?uploads`, { method: 'POST' })).text();
      const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init)?.[1];
      assert.ok(uploadId, init);
      /** @type {string[]} */ const etags = [];
      for (const [i, body] of ['A'.repeat(1000), 'B'.repeat(10)].entries()) {
        const r = await fetch(`${B}/${encodeURIComponent('p/big')}?partNumber=${i + 1}&uploadId=${uploadId}`, { method: 'PUT', body });
        assert.equal(r.status, 200);
        etags.push(String(r.headers.get('etag')));
      }
      const parts = etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('');
      const done = await fetch(`${B}/${encodeURIComponent('p/big')}?uploadId=${uploadId}`, {
        method: 'POST',
        body: `<CompleteMultipartUpload>${parts}</CompleteMultipartUpload>`,
      });
      assert.equal(done.status, 200);
      assert.match(await done.text(), /<CompleteMultipartUploadResult.*<ETag>".+"<\/ETag>/);
      assert.equal(await text('p/big'), 'A'.repeat(1000) + 'B'.repeat(10));
      const bogus = await fetch(`${B}/${encodeURIComponent('p/big')}?uploadId=nope`, { method: 'POST', body: '<x/>' });
      assert.equal(bogus.status, 404);

      // copy with create-if-absent
      const copy = (/** @type {string} */ to) =>
        fetch(`${B}/${encodeURIComponent(to)}`, {
          method: 'PUT',
          headers: { 'x-goog-copy-source': `${emu.bucket}/${encodeURIComponent('p/big')}`, 'x-goog-if-generation-match': '0' },
        });
      assert.equal((await copy('p/k1')).status, 412);
      assert.equal(await text('p/k1'), 'one');
      assert.equal((await copy('p/k3')).status, 200);
      assert.equal(await text('p/k3'), 'A'.repeat(1000) + 'B'.repeat(10));

      // list (prefix, delimiter, pages) and delete
      const list = await (await fetch(`${emu.endpoint}/${emu.bucket}?list-type=2&prefix=p%2F`)).text();
      assert.deepEqual([...list.matchAll(/<Key>([^<]+)<\/Key>/g)].map((m) => m[1]), ['p/big', 'p/k1', 'p/k2', 'p/k3']);
      assert.match(list, /<Size>1010<\/Size>/);
      const page = await (await fetch(`${emu.endpoint}/${emu.bucket}?list-type=2&max-keys=2`)).text();
      assert.match(page, /<IsTruncated>true<\/IsTruncated>.*<NextContinuationToken>/);
      const dirs = await (await fetch(`${emu.endpoint}/${emu.bucket}?list-type=2&delimiter=%2F`)).text();
      assert.match(dirs, /<CommonPrefixes><Prefix>p\/<\/Prefix><\/CommonPrefixes>/);
      assert.equal((await fetch(`${B}/${encodeURIComponent('p/big')}`, { method: 'DELETE' })).status, 204);
      assert.deepEqual(await emu.listObjects(), ['p/k1', 'p/k2', 'p/k3']);
      const missing = await fetch(`${emu.endpoint}/no-such-bucket?list-type=2`);
      assert.equal(missing.status, 404);
    } finally {
      await emu.stop();
    }
  });
});

/* ------------------------------------------------------------------------------------------------ */
/* Nx end to end                                                                                    */
/* ------------------------------------------------------------------------------------------------ */

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

describe('cloud backends with a real Nx workspace', () => {
  /** @type {NxWorkspace | undefined} */
  let ws;
  const anyAvailable = KINDS.some((k) => unavailable(k) === null);

  before(async () => {
    emulators.install({ log: () => undefined });
    if (anyAvailable) ws = await createWorkspace();
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

  /** @returns {string[]} */
  const allProjects = () => workspace().projects.map((p) => p.name).sort();

  /**
   * last-run.json of the run just made, checked for shape.
   * @param {RunResult} r
   * @param {string} what
   * @param {import('node:test').TestContext} t
   * @returns {RunSummary}
   */
  function lastRun(r, what, t) {
    const s = workspace().readLastRun();
    assert.ok(s, `${what}: no last-run.json after the run${show(r)}`);
    const printed = summaryLines(r.output);
    t.diagnostic(`${what}: ${printed.length ? printed.join(' | ') : JSON.stringify(s)}`);
    return s;
  }

  /**
   * Cold run: every task built and stored in the emulator (under `prefix/`); then a fresh machine
   * (nx reset, outputs deleted) restores every task as a remote hit with identical outputs.
   * @param {import('node:test').TestContext} t
   * @param {import('../scripts/emulators.js').Emulator} emu
   * @param {Record<string, string | undefined>} env
   * @param {string} prefix
   */
  async function coldThenRestore(t, emu, env, prefix) {
    const w = workspace();
    const n = w.projects.length;

    const cold = await w.runBuild({ env });
    assertGreen(cold, 'cold run');
    assert.deepEqual(w.builtProjects().sort(), allProjects(), `cold run: not every project built${show(cold)}`);
    const s1 = lastRun(cold, 'cold run', t);
    assert.equal(s1.errorCount, 0, `cold run: errors ${JSON.stringify(s1.errors)}${show(cold)}`);
    assert.equal(s1.stored, n, `cold run: stored ${JSON.stringify(s1)}${show(cold)}`);
    // Artifacts; the metadata beside each (`<hash>-nxoc-meta`, lib/meta.js) is counted apart.
    const listed = await emu.listObjects();
    const objects = listed.filter((k) => !k.endsWith('-nxoc-meta'));
    assert.equal(objects.length, n, `cold run: objects in the ${emu.kind} emulator: ${JSON.stringify(listed)}`);
    assert.equal(listed.length, 2 * n, `cold run: one metadata object beside each artifact: ${JSON.stringify(listed)}`);
    for (const o of objects) {
      assert.ok(o.startsWith(`${prefix}/`), `object ${o} outside the prefix ${prefix}/`);
    }
    const snapshot = w.snapshotOutputs();
    assert.ok(Object.keys(snapshot).length > 0, 'cold run: no outputs to compare');

    // Another machine: no local cache, no outputs.
    await w.nxReset();
    w.cleanOutputs();
    w.clearBuildLog();
    const warm = await w.runBuild({ env });
    assertGreen(warm, 'fresh machine');
    assert.deepEqual(w.builtProjects(), [], `fresh machine: a build ran although every task should be a remote hit${show(warm)}`);
    for (const p of allProjects()) {
      assert.ok(isRemoteHit(warm.output, p), `fresh machine: ${p}:build not reported as [remote cache]${show(warm)}`);
      assert.ok(warm.output.includes(w.marker(p)), `fresh machine: terminal output of ${p}:build not replayed${show(warm)}`);
    }
    const s2 = lastRun(warm, 'fresh machine', t);
    assert.equal(s2.hits, n, `fresh machine: hits ${JSON.stringify(s2)}${show(warm)}`);
    assert.equal(s2.misses, 0, `fresh machine: misses ${JSON.stringify(s2)}${show(warm)}`);
    assert.equal(s2.errorCount, 0, `fresh machine: errors ${JSON.stringify(s2.errors)}${show(warm)}`);
    assert.deepEqual(w.snapshotOutputs(), snapshot, 'fresh machine: restored outputs differ from the built ones');
    assert.equal((await emu.listObjects()).length, 2 * n, 'fresh machine: the object count changed');
    return { cold, warm };
  }

  for (const kind of KINDS) {
    test(`${kind}: init generator configures it, cold run stores every task in the emulator, a fresh machine restores all`, async (t) => {
      const why = unavailable(kind);
      if (why) {
        t.skip(why);
        return;
      }
      const w = workspace();
      await w.resetScenario();
      const emu = await emulators.start(kind);
      try {
        t.diagnostic(`${emu.version} on ${emu.endpoint}`);
        const env = { NX_DAEMON: 'false', ...emu.env };
        const prefix = `e2e-${kind}`;
        /** @type {string[]} */
        const flags = [];
        for (const [k, v] of Object.entries(emu.options)) flags.push(v === true ? `--${k}` : `--${k}=${v}`);
        const g = await w.nx(['g', 'nx-open-cache:init', ...flags, `--prefix=${prefix}`, '--no-interactive'], { env });
        assertGreen(g, 'generator');
        const entries = (w.readNxJson().plugins || []).filter((/** @type {any} */ p) => p && p.plugin === 'nx-open-cache');
        assert.deepEqual(entries, [{ plugin: 'nx-open-cache', options: { ...emu.options, prefix } }], `generator: nx.json${show(g)}`);
        await coldThenRestore(t, emu, env, prefix);
      } finally {
        await emu.stop();
      }
    });
  }

  test('s3: a workspace still configured for @nx/s3-cache (top-level "s3" block, keys included) works unchanged', async (t) => {
    const why = unavailable('s3');
    if (why) {
      t.skip(why);
      return;
    }
    const w = workspace();
    await w.resetScenario();
    const emu = await emulators.start('s3');
    try {
      const nxJson = w.readNxJson();
      nxJson.plugins = [{ plugin: 'nx-open-cache' }];
      nxJson.s3 = {
        bucket: emu.bucket,
        region: emu.options.region,
        endpoint: emu.endpoint,
        forcePathStyle: true,
        accessKeyId: emu.env.AWS_ACCESS_KEY_ID,
        secretAccessKey: emu.env.AWS_SECRET_ACCESS_KEY,
        cacheKeyPrefix: 'legacy-prefix',
      };
      w.writeNxJson(nxJson);
      const before = JSON.stringify(w.readNxJson());
      // No AWS variable at all: the only credentials are the block's. The metadata endpoint points
      // at a closed local port, so a credential lookup never leaves the machine.
      /** @type {Record<string, string | undefined>} */
      const env = { NX_DAEMON: 'false', AWS_METADATA_ENDPOINT: 'http://127.0.0.1:9' };
      for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) env[k] = undefined;
      env.AWS_METADATA_ENDPOINT = 'http://127.0.0.1:9';
      const { cold } = await coldThenRestore(t, emu, env, 'legacy-prefix');
      assert.match(cold.output, /nx-open-cache: using the deprecated top-level "s3" block of nx\.json/, show(cold));
      assert.match(cold.output, /s3\.accessKeyId and s3\.secretAccessKey are used for this run's proxy only/, show(cold));
      assert.ok(!cold.output.includes(String(emu.env.AWS_SECRET_ACCESS_KEY)), 'the secret key was printed');
      assert.equal(JSON.stringify(w.readNxJson()), before, 'nx.json changed by a run');
    } finally {
      await emu.stop();
    }
  });
});
