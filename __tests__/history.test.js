'use strict';
// Run history (lib/history.js) and artifact metadata (lib/meta.js): the record of a run, the bounds,
// corrupt files, and the hooks in-process against the real native proxy: meta published by one
// "machine" and read by another through its own proxy, time saved in the summary.

const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { hookSandbox } = require('./helpers/hook-sandbox.js');
const { sizedArtifact } = require('./helpers/hostile-tar.js');
const plugin = require('../lib/plugin.js');
const { VERSION } = require('../lib/host.js');
const native = require('../index.js');
const history = require('../lib/history.js');
const meta = require('../lib/meta.js');
const { formatSaved, formatSummary, formatSummaryTable, pluginDataDir, readSummary } = require('../lib/summary.js');

const VARS = [
  'NX_SELF_HOSTED_REMOTE_CACHE_SERVER', 'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN', 'NX_OPEN_CACHE_PROXY_URL',
  'NX_OPEN_CACHE_MODE', 'NX_OPEN_CACHE_SUMMARY', 'NX_OPEN_CACHE_HOST', 'NX_WORKSPACE_DATA_DIRECTORY',
  'NX_OPEN_CACHE_HISTORY', 'NX_OPEN_CACHE_HISTORY_RUNS', 'NX_OPEN_CACHE_HISTORY_MB', 'CI',
  'NX_OPEN_CACHE_SIGNING_KEY', 'NX_OPEN_CACHE_ENCRYPTION_KEY', 'NX_OPEN_CACHE_REQUIRE_SIGNATURE',
];

const sb = hookSandbox({ prefix: 'nxoc-history-', vars: VARS, nxJson: '{}' });
/** Other workspace roots a test made (the "other machine"), removed after it. @type {string[]} */
let extraRoots = [];

afterEach(async () => {
  for (const root of [sb.root, ...extraRoots]) await native.hostStop(pluginDataDir(root), VERSION);
  for (const root of extraRoots) fs.rmSync(root, { recursive: true, force: true });
  extraRoots = [];
});

/**
 * A task as Nx gives it to postTasksExecution.
 * @param {string} project
 * @param {string} hash
 * @param {number} ms  its duration
 * @param {Record<string, unknown>} [extra]
 */
function task(project, hash, ms, extra = {}) {
  return {
    id: `${project}:build`, target: { project, target: 'build' }, hash, cache: true, outputs: [], projectRoot: `packages/${project}`,
    startTime: 1_700_000_000_000, endTime: 1_700_000_000_000 + ms,
    hashDetails: { command: `${hash}c`, nodes: { [`${project}:packages/${project}/**/*`]: `${hash}f`, AllExternalDependencies: '42' }, implicitDeps: {}, runtime: {} },
    ...extra,
  };
}

/**
 * @param {string} id
 * @param {string} root
 * @param {Record<string, { task: any, status: string, code?: number }>} [taskResults]
 */
function ctx(id, root, taskResults) {
  return {
    id, workspaceRoot: root, argv: [process.execPath, '/ws/node_modules/nx/bin/nx.js', 'run-many', '-t', 'build'],
    startTime: 1_700_000_000_000, endTime: 1_700_000_009_000, taskResults,
  };
}

/**
 * A proxy request as Nx's client makes it.
 * @param {'GET' | 'PUT'} method
 * @param {string} hash
 * @param {Buffer} [body]
 */
function nxRequest(method, hash, body) {
  return fetch(`${process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER}/v1/cache/${hash}`, {
    method, body, headers: { authorization: `Bearer ${process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN}` },
  });
}

/** A record with `n` tasks of `bytes`-ish each. @param {string} runId @param {number} startMs @param {number} n */
function syntheticRecord(runId, startMs, n, filesetHash = 'fs0') {
  const tasks = [];
  for (let i = 0; i < n; i++) {
    tasks.push({
      id: `p${i}:build`, hash: `h${startMs}-${i}`, cacheable: /** @type {true} */ (true), configuration: null, status: 'success',
      outcome: /** @type {const} */ ('stored'), durationMs: 10, inputs: { command: 'c', nodes: { [`p${i}:packages/p${i}/**/*`]: filesetHash }, implicitDeps: {}, runtime: {} },
    });
  }
  return {
    format: /** @type {const} */ ('nx-open-cache-history'), version: /** @type {const} */ (1), runId, startedAt: new Date(startMs).toISOString(),
    endedAt: new Date(startMs + 1000).toISOString(), savedMs: 0, tasks,
  };
}

test('outcomes: from Nx status and the proxy events; without events, from the status and the run counts, saying so', () => {
  const results = {
    'a:build': { task: task('a', '1', 100), status: 'remote-cache', code: 0 },
    'b:build': { task: task('b', '2', 100), status: 'local-cache', code: 0 },
    'c:build': { task: task('c', '3', 100), status: 'success', code: 0 },
    'd:build': { task: task('d', '4', 100), status: 'failure', code: 1 },
    'e:build': { task: task('e', '5', 100), status: 'success', code: 0 },
    'f:build': { task: task('f', '6', 100), status: 'skipped' },
    'g:build': { task: task('g', '7', 100, { cache: false }), status: 'success', code: 0 },
    'h:build': { task: task('h', '8', 100), status: 'local-cache-kept-existing', code: 0 },
  };
  const summary = /** @type {any} */ ({ hits: 1, misses: 3, stored: 1, alreadyStored: 0, mode: 'read-write', location: 'fs /x', runId: 'r', startedAt: '', endedAt: '' });
  const events = [
    { hash: '1', op: 'get', outcome: 'hit', bytes: 500, millis: 3 },
    { hash: '3', op: 'get', outcome: 'miss', bytes: 0, millis: 1 },
    { hash: '3', op: 'put', outcome: 'stored', bytes: 900, millis: 4 },
    { hash: '5', op: 'get', outcome: 'miss', bytes: 0, millis: 1 },
    { hash: '5', op: 'put', outcome: 'refused', bytes: 0, millis: 1, reason: 'not a valid artifact' },
  ];
  const producers = new Map([['1', { durationMs: 5000, nxVersion: '24.0.6', storedAt: '2026-01-01T00:00:00.000Z', runId: 'ci-1', host: 'ci' }]]);
  const r = history.buildRunRecord(ctx('r', sb.root, results), summary, { events, producers, nxVersion: '24.0.6' });
  const by = Object.fromEntries(r.tasks.map((t) => [t.id, t]));
  assert.equal(r.tasks.length, 7, 'the task that is not cacheable is left out');
  assert.equal(by['g:build'], undefined);
  assert.deepEqual(
    Object.fromEntries(r.tasks.map((t) => [t.id, t.outcome])),
    { 'a:build': 'remote-hit', 'b:build': 'local-hit', 'c:build': 'stored', 'd:build': 'failed', 'e:build': 'refused', 'f:build': 'not-run', 'h:build': 'local-hit' },
  );
  assert.equal(by['a:build'].bytes, 500);
  assert.equal(by['a:build'].cacheMs, 3);
  assert.equal(by['a:build'].savedMs, 4900, 'producer 5000 ms - restore 100 ms');
  assert.equal(by['a:build'].producer?.host, 'ci');
  assert.equal(by['c:build'].bytes, 900);
  assert.equal(by['c:build'].cacheMs, 5);
  assert.equal(by['e:build'].reason, 'not a valid artifact');
  assert.equal(by['d:build'].code, 1);
  assert.deepEqual(by['c:build'].inputs, results['c:build'].task.hashDetails);
  assert.equal(r.savedMs, 4900);
  assert.equal(r.command, 'run-many -t build');
  assert.equal(r.startedAt, new Date(1_700_000_000_000).toISOString());
  assert.equal(r.cache?.stored, 1);
  assert.ok(history.isRunRecord(r));

  // Without events: a read-write run that stored something marks its tasks that ran as stored
  // (and says it assumed so); a run that stored nothing marks them not stored.
  const noEvents = history.buildRunRecord(ctx('r', sb.root, results), summary, {});
  const c = noEvents.tasks.find((t) => t.id === 'c:build');
  assert.equal(c?.outcome, 'stored');
  assert.match(String(c?.reason), /assumed.*no per-task results/);
  const none = history.buildRunRecord(ctx('r', sb.root, results), { ...summary, stored: 0 }, {});
  assert.equal(none.tasks.find((t) => t.id === 'c:build')?.outcome, 'not-stored');
  const ro = history.buildRunRecord(ctx('r', sb.root, results), { ...summary, mode: 'read-only' }, {});
  assert.match(String(ro.tasks.find((t) => t.id === 'c:build')?.reason), /read-only/);
  // A hit restored slower than it ran saves nothing, never a negative figure.
  const slow = history.buildRunRecord(ctx('r', sb.root, results), summary, { producers: new Map([['1', { durationMs: 50 }]]) });
  assert.equal(slow.tasks.find((t) => t.id === 'a:build')?.savedMs, 0);
});

test('bounds: the oldest runs go first, by count and by size, with the filesets only they referenced', () => {
  const dir = history.historyDir(sb.root);
  const filesets = path.join(dir, 'filesets');
  fs.mkdirSync(filesets, { recursive: true });
  // fsOld is referenced by the first runs only; fsKeep by every run.
  fs.writeFileSync(path.join(filesets, 'fsOld.json'), JSON.stringify({ 'a.txt': '1' }));
  fs.writeFileSync(path.join(filesets, 'fsKeep.json'), JSON.stringify({ 'b.txt': '2' }));
  const env = { NX_OPEN_CACHE_HISTORY_RUNS: '5' };
  const t0 = 1_800_000_000_000;
  for (let i = 0; i < 12; i++) {
    const rec = syntheticRecord(`run-${i}`, t0 + i * 1000, 3, i < 3 ? 'fsOld' : 'fsKeep');
    history.appendRun(sb.root, rec, { env, now: t0 + i * 1000 + 500 });
  }
  const runs = fs.readdirSync(path.join(dir, 'runs')).sort();
  assert.equal(runs.length, 5, runs.join(', '));
  assert.ok(runs[0].endsWith('-run-7.json'), `the newest five are kept: ${runs.join(', ')}`);
  assert.equal(fs.existsSync(path.join(filesets, 'fsOld.json')), false, 'a fileset no kept run references is dropped');
  assert.equal(fs.existsSync(path.join(filesets, 'fsKeep.json')), true, 'a fileset a kept run references stays');
  assert.deepEqual(history.readRuns(sb.root, { limit: 2 }).map((r) => r.runId), ['run-11', 'run-10'], 'newest first');

  // By size: 60 KiB allowed, runs of ~20 KiB each: at most 3 kept, whatever the count bound.
  const sizeEnv = { NX_OPEN_CACHE_HISTORY_MB: String(60 / 1024) };
  for (let i = 12; i < 20; i++) history.appendRun(sb.root, syntheticRecord(`run-${i}`, t0 + i * 1000, 90, 'fsKeep'), { env: sizeEnv, now: t0 + i * 1000 + 500 });
  const sizes = fs.readdirSync(path.join(dir, 'runs')).map((f) => fs.statSync(path.join(dir, 'runs', f)).size);
  const total = sizes.reduce((a, b) => a + b, 0) + fs.statSync(path.join(filesets, 'fsKeep.json')).size;
  assert.ok(sizes.length >= 1 && sizes[0] > 15 * 1024, `runs of about 20 KiB: ${sizes}`);
  assert.ok(total <= 60 * 1024, `runs + filesets within 60 KiB: ${total} B in ${sizes.length} runs`);
  assert.equal(history.readRuns(sb.root)[0].runId, 'run-19');

  // The index is a cache: without it, the next append measures the disk again and still bounds.
  const indexes = fs.readdirSync(dir).filter((f) => /^index-\d{12}\.json$/.test(f));
  assert.equal(indexes.length, 1, `one index file: ${fs.readdirSync(dir)}`);
  fs.rmSync(path.join(dir, indexes[0]));
  history.appendRun(sb.root, syntheticRecord('run-20', t0 + 20_000, 90, 'fsKeep'), { env: sizeEnv, now: t0 + 20_500 });
  const after = fs.readdirSync(path.join(dir, 'runs')).reduce((a, f) => a + fs.statSync(path.join(dir, 'runs', f)).size, 0);
  assert.ok(after <= 60 * 1024, `bounded after the index was lost: ${after}`);
  // A single run larger than the whole bound is still kept (the newest run always is).
  history.appendRun(sb.root, syntheticRecord('big', t0 + 30_000, 400, 'fsKeep'), { env: sizeEnv, now: t0 + 30_500 });
  assert.deepEqual(history.readRuns(sb.root).map((r) => r.runId), ['big']);
});

test('bad bound values fall back to the defaults with one notice naming the variable', (t) => {
  const errors = captureStderr(t);
  assert.deepEqual(history.historyBounds({ NX_OPEN_CACHE_HISTORY_RUNS: '1.5', NX_OPEN_CACHE_HISTORY_MB: '-3' }), { maxRuns: 1000, maxBytes: 50 * 1024 * 1024 });
  history.historyBounds({ NX_OPEN_CACHE_HISTORY_RUNS: '1.5' });
  assert.equal(errors.filter((l) => l.includes('NX_OPEN_CACHE_HISTORY_RUNS="1.5"')).length, 1, errors.join('\n'));
  assert.ok(errors.some((l) => l.includes('NX_OPEN_CACHE_HISTORY_MB="-3"')), errors.join('\n'));
  assert.deepEqual(history.historyBounds({ NX_OPEN_CACHE_HISTORY_RUNS: '20', NX_OPEN_CACHE_HISTORY_MB: '0.5' }), { maxRuns: 20, maxBytes: 512 * 1024 });
});

/**
 * Captures console.error for the rest of the test.
 * @param {import('node:test').TestContext} t
 */
function captureStderr(t) {
  /** @type {string[]} */ const lines = [];
  const real = console.error;
  console.error = (...args) => lines.push(args.join(' '));
  t.after(() => { console.error = real; });
  return lines;
}

test('corrupt and foreign files in the history are skipped with one notice per process', (t) => {
  const errors = captureStderr(t);
  const t0 = 1_800_000_000_000;
  history.appendRun(sb.root, syntheticRecord('good-1', t0, 2), { now: t0 });
  history.appendRun(sb.root, syntheticRecord('good-2', t0 + 2000, 2), { now: t0 + 2000 });
  const runs = path.join(history.historyDir(sb.root), 'runs');
  fs.writeFileSync(path.join(runs, `${t0 + 1000}-cut.json`), '{"format":"nx-open-cache-history","version":1,"ru');
  fs.writeFileSync(path.join(runs, `${t0 + 1500}-foreign.json`), JSON.stringify({ format: 'something-else', tasks: [] }));
  fs.writeFileSync(path.join(runs, `${t0 + 1600}-future.json`), JSON.stringify({ ...syntheticRecord('future', t0, 1), version: 2 }));
  fs.writeFileSync(path.join(runs, 'notes.json'), '[]');
  assert.deepEqual(history.readRuns(sb.root).map((r) => r.runId), ['good-2', 'good-1']);
  assert.deepEqual(history.readRuns(sb.root).map((r) => r.runId), ['good-2', 'good-1']);
  const notices = errors.filter((l) => l.includes('not nx-open-cache run history'));
  assert.equal(notices.length, 1, errors.join('\n'));
  assert.match(notices[0], /ignoring 4 files in .*runs/);
  // Appending goes on, and counts the foreign files against the bounds like any other run file.
  history.appendRun(sb.root, syntheticRecord('good-3', t0 + 3000, 2), { env: { NX_OPEN_CACHE_HISTORY_RUNS: '2' }, now: t0 + 3000 });
  assert.deepEqual(fs.readdirSync(runs).filter((f) => f.endsWith('.json')).sort(), [`${t0 + 2000}-good-2.json`, `${t0 + 3000}-good-3.json`, 'notes.json']);
});

test('meta: a valid Nx artifact holding the record; read back by parsing, checked against the hash; size bounded', async () => {
  const { json } = meta.buildMeta({ task: task('a', '77', 1234), durationMs: 1234, nxVersion: '24.0.6', runId: 'r1' });
  const body = /** @type {Buffer} */ (native.pack({ root: sb.root, terminalOutput: json, code: 0, format: 'nx' }));
  const parsed = meta.parseMetaArtifact(body, '77');
  assert.equal(parsed?.durationMs, 1234);
  assert.equal(parsed?.task, 'a:build');
  assert.equal(parsed?.nxVersion, '24.0.6');
  assert.deepEqual(parsed?.inputs, task('a', '77', 1).hashDetails);
  assert.equal(meta.parseMetaArtifact(body, '78'), undefined, 'the meta of another hash is not taken');
  const unpacked = native.unpack(body, path.join(sb.root, 'unpacked'));
  assert.deepEqual(unpacked.files, [], 'no outputs');
  assert.equal(unpacked.terminalOutput, json);
  assert.equal(meta.parseMetaArtifact(sizedArtifact(300), '77'), undefined, 'an ordinary artifact is no meta');
  assert.equal(meta.parseMetaArtifact(Buffer.from('junk'), '77'), undefined);
  const files = { 'a:packages/a/**/*': Object.fromEntries(Array.from({ length: 30_000 }, (_, i) => [`packages/a/src/file-${i}.ts`, String(i).repeat(5)])) };
  const big = meta.buildMeta({ task: task('a', '77', 1), durationMs: 1, files });
  assert.equal(big.meta.files, undefined, 'per-file hashes left out past 1 MiB');
  assert.ok(Buffer.byteLength(big.json) <= meta.MAX_META_BYTES);
  assert.ok(meta.buildMeta({ task: task('a', '77', 1), durationMs: 1, files: { x: { 'a.ts': '1' } } }).meta.files, 'kept when small');
});

for (const where of ['cache host', 'in-process proxy']) {
  test(`${where}: machine A stores and publishes meta; machine B restores, shows time saved and the producer; an artifact without meta still restores`, async () => {
    if (where === 'in-process proxy') process.env.NX_OPEN_CACHE_HOST = 'off';
    const store = path.join(sb.root, '..', `${path.basename(sb.root)}-store`);
    extraRoots.push(store);
    const options = { backend: 'fs', path: store };
    // Machine A: lib-a and lib-b run and Nx uploads them.
    const a = ctx('run-a', sb.root);
    await plugin.preTasksExecution(options, a);
    for (const h of ['111', '222']) {
      assert.equal((await nxRequest('GET', h)).status, 404);
      assert.equal((await nxRequest('PUT', h, sizedArtifact(400))).status, 200);
    }
    await plugin.postTasksExecution(options, ctx('run-a', sb.root, {
      'lib-a:build': { task: task('lib-a', '111', 30_000), status: 'success', code: 0 },
      'lib-b:build': { task: task('lib-b', '222', 8_000), status: 'success', code: 0 },
    }));
    const lineA = sb.printed.find((l) => l.startsWith('nx-open-cache: '));
    // The meta writes are not stores.
    assert.match(String(lineA), /^nx-open-cache: 0 hits, 2 misses, 2 stored, 0 B down, 800 B up, 0 errors/, sb.printed.join('\n'));
    const metaObjects = fs.readdirSync(store, { recursive: true }).map(String).filter((f) => f.endsWith('-nxoc-meta'));
    assert.deepEqual(metaObjects.map((f) => path.basename(f)).sort(), ['111-nxoc-meta', '222-nxoc-meta'], 'one meta object beside each artifact');
    assert.doesNotMatch(String(lineA), /saved/, 'no hits: no saved figure');
    const runA = history.readRuns(sb.root)[0];
    assert.deepEqual(runA.tasks.map((t) => [t.id, t.outcome, t.durationMs]), [['lib-a:build', 'stored', 30_000], ['lib-b:build', 'stored', 8_000]]);
    const summaryA = /** @type {any} */ (readSummary(sb.root));
    // Both 2 meta writes apart from the counters: a proxy that counts them apart says so, for an
    // older one the plugin takes its own meta traffic out.
    assert.equal(summaryA.metaWrites, 2, JSON.stringify(summaryA));
    if (summaryA.eventsDropped !== undefined) {
      // A proxy with per-hash events: outcomes, bytes and time in cache calls from them.
      for (const t of runA.tasks) {
        assert.equal(t.bytes, 400, `${t.id}: bytes up from the proxy's events`);
        assert.equal(typeof t.cacheMs, 'number');
        assert.equal(t.reason, undefined);
      }
    } else {
      for (const t of runA.tasks) assert.match(String(t.reason), /assumed from the run counts/);
    }
    // An artifact stored by some other client (no meta), e.g. before nx-open-cache kept any.
    await plugin.preTasksExecution(options, ctx('run-x', sb.root));
    assert.equal((await nxRequest('PUT', '333', sizedArtifact(400))).status, 200);
    await plugin.postTasksExecution(options, ctx('run-x', sb.root, {}));

    // Machine B: its own workspace (no history, no local cache), the same store.
    const rootB = fs.mkdtempSync(path.join(path.dirname(sb.root), 'nxoc-history-b-'));
    extraRoots.push(rootB);
    fs.writeFileSync(path.join(rootB, 'nx.json'), '{}');
    sb.printed.length = 0;
    await plugin.preTasksExecution(options, ctx('run-b', rootB));
    for (const h of ['111', '222', '333']) assert.equal((await nxRequest('GET', h)).status, 200, `hash ${h} restores`);
    await plugin.postTasksExecution(options, ctx('run-b', rootB, {
      'lib-a:build': { task: task('lib-a', '111', 400), status: 'remote-cache', code: 0 },
      'lib-b:build': { task: task('lib-b', '222', 300), status: 'remote-cache', code: 0 },
      'tool-c:build': { task: task('tool-c', '333', 200), status: 'remote-cache', code: 0 },
    }));
    const lineB = String(sb.printed.find((l) => l.startsWith('nx-open-cache: ')));
    // 29.6 s + 7.7 s saved: the meta reads are neither hits nor misses.
    assert.match(lineB, /^nx-open-cache: 3 hits, 0 misses, 0 stored, 1\.2 KiB down, 0 B up, saved ~37 s, 0 errors/, sb.printed.join('\n'));
    const summaryB = /** @type {any} */ (readSummary(rootB));
    assert.equal(summaryB.savedMs, 29_600 + 7_700);
    assert.equal(summaryB.metaReads, 2, 'two meta found (the third artifact has none), not hits or misses');
    assert.equal(summaryB.events, undefined, 'per-hash events stay out of the summary file');
    const runB = history.readRuns(rootB)[0];
    const byId = Object.fromEntries(runB.tasks.map((t) => [t.id, t]));
    assert.equal(byId['lib-a:build'].outcome, 'remote-hit');
    assert.equal(byId['lib-a:build'].savedMs, 29_600);
    assert.equal(byId['lib-a:build'].producer?.durationMs, 30_000);
    assert.equal(byId['lib-a:build'].producer?.runId, 'run-a');
    assert.equal(typeof byId['lib-a:build'].producer?.host, 'string');
    assert.equal(byId['tool-c:build'].outcome, 'remote-hit', 'no meta: still a hit');
    assert.equal(byId['tool-c:build'].savedMs, undefined, 'no meta: no saved figure');
    assert.equal(byId['tool-c:build'].producer, undefined);
    assert.equal(runB.savedMs, 37_300);
  });
}

test('meta is signed and encrypted like the artifacts: an unsigned meta record is never taken under requireSignature, none is readable without the key', async () => {
  process.env.NX_OPEN_CACHE_HOST = 'off';
  const crypto = require('node:crypto');
  const store = path.join(sb.root, 'store');
  const ci = native.keygen();
  const encryption = crypto.randomBytes(32).toString('base64');
  const trusted = { backend: 'fs', path: store, trustedKeys: [ci.publicKey], requireSignature: true };
  // A writer without the signing key puts a meta record for 222 first (claiming 999 s).
  process.env.NX_OPEN_CACHE_ENCRYPTION_KEY = encryption;
  const rogue = native.CacheProxy.start(sb.root, { backend: 'fs', path: store }, { NX_OPEN_CACHE_ENCRYPTION_KEY: encryption });
  const pack = (/** @type {string} */ json) => native.packAsync({ root: sb.root, terminalOutput: json, code: 0, format: 'nx' }).then((b) => /** @type {Buffer} */ (b));
  const forged = meta.buildMeta({ task: task('lib-b', '222', 1), durationMs: 999_000 }).json;
  assert.equal((await meta.exchangeMeta(rogue, { publish: [{ hash: '222', json: forged }], fetch: [] }, { pack })).published, 1);
  await rogue.stop();
  // CI signs (and encrypts) its artifacts and their meta.
  process.env.NX_OPEN_CACHE_SIGNING_KEY = ci.secretKey;
  await plugin.preTasksExecution(trusted, ctx('ci', sb.root));
  for (const h of ['111', '222']) await nxRequest('PUT', h, sizedArtifact(400));
  await plugin.postTasksExecution(trusted, ctx('ci', sb.root, {
    'lib-a:build': { task: task('lib-a', '111', 30_000), status: 'success', code: 0 },
    'lib-b:build': { task: task('lib-b', '222', 8_000), status: 'success', code: 0 },
  }));
  delete process.env.NX_OPEN_CACHE_SIGNING_KEY;
  // Another machine: requires CI's signature, has the encryption key.
  const rootB = fs.mkdtempSync(path.join(path.dirname(sb.root), 'nxoc-history-b-'));
  extraRoots.push(rootB);
  fs.writeFileSync(path.join(rootB, 'nx.json'), '{}');
  await plugin.preTasksExecution(trusted, ctx('b', rootB));
  for (const h of ['111', '222']) assert.equal((await nxRequest('GET', h)).status, 200);
  const hits = {
    'lib-a:build': { task: task('lib-a', '111', 400), status: 'remote-cache', code: 0 },
    'lib-b:build': { task: task('lib-b', '222', 300), status: 'remote-cache', code: 0 },
  };
  await plugin.postTasksExecution(trusted, ctx('b', rootB, hits));
  const byId = Object.fromEntries(history.readRuns(rootB)[0].tasks.map((t) => [t.id, t]));
  assert.equal(byId['lib-a:build'].producer?.durationMs, 30_000, 'signed meta is read');
  // The signing run replaced the unsigned record with its own, as it replaces an unsigned artifact.
  assert.equal(byId['lib-b:build'].producer?.durationMs, 8_000, `the unsigned meta is never taken: ${JSON.stringify(byId['lib-b:build'])}`);
  assert.equal(byId['lib-b:build'].savedMs, 7_700);
  // Without the encryption key, neither the artifacts nor their meta can be read.
  delete process.env.NX_OPEN_CACHE_ENCRYPTION_KEY;
  const reader = native.CacheProxy.start(sb.root, { backend: 'fs', path: store }, {});
  const none = await meta.exchangeMeta(reader, { publish: [], fetch: ['111', '222'] }, { pack });
  await reader.stop();
  assert.equal(none.producers.size, 0);
  assert.ok(none.exchanges.every((e) => e.status !== 200), JSON.stringify(none.exchanges));
});

test('read-only runs publish no meta; NX_OPEN_CACHE_HISTORY=off records nothing', async () => {
  process.env.NX_OPEN_CACHE_HOST = 'off';
  const store = path.join(sb.root, 'store');
  process.env.NX_OPEN_CACHE_MODE = 'read-only';
  await plugin.preTasksExecution({ backend: 'fs', path: store }, ctx('ro', sb.root));
  await plugin.postTasksExecution({ backend: 'fs', path: store }, ctx('ro', sb.root, { 'a:build': { task: task('a', '9', 10), status: 'success', code: 0 } }));
  const objects = fs.existsSync(store) ? fs.readdirSync(store, { recursive: true }).filter((f) => String(f).includes('nxoc-meta')) : [];
  assert.deepEqual(objects, []);
  assert.equal(history.readRuns(sb.root)[0].tasks[0].outcome, 'not-stored');
  delete process.env.NX_OPEN_CACHE_MODE;
  process.env.NX_OPEN_CACHE_HISTORY = 'off';
  fs.rmSync(history.historyDir(sb.root), { recursive: true });
  await plugin.preTasksExecution({ backend: 'fs', path: store }, ctx('off', sb.root));
  assert.equal((await nxRequest('PUT', '10', sizedArtifact(300))).status, 200);
  await plugin.postTasksExecution({ backend: 'fs', path: store }, ctx('off', sb.root, { 'a:build': { task: task('a', '10', 5000), status: 'success', code: 0 } }));
  // Another run restores it: the time saved is still shown, nothing is recorded.
  sb.printed.length = 0;
  await plugin.preTasksExecution({ backend: 'fs', path: store }, ctx('off-2', sb.root));
  assert.equal((await nxRequest('GET', '10')).status, 200);
  await plugin.postTasksExecution({ backend: 'fs', path: store }, ctx('off-2', sb.root, { 'a:build': { task: task('a', '10', 1000), status: 'remote-cache', code: 0 } }));
  assert.match(String(sb.printed.find((l) => /^nx-open-cache: \d+ hits?,/.test(l))), /1 hit, 0 misses, .*saved ~4 s/, sb.printed.join('\n'));
  assert.ok(!sb.printed.some((l) => l.includes('unknown environment variable')), `NX_OPEN_CACHE_HISTORY is a known variable: ${sb.printed.join('\n')}`);
  assert.equal(fs.existsSync(history.historyDir(sb.root)), false);
});

test('a history that cannot be written never fails the run: one notice, the summary still printed', async () => {
  process.env.NX_OPEN_CACHE_HOST = 'off';
  const store = path.join(sb.root, 'store');
  fs.mkdirSync(pluginDataDir(sb.root), { recursive: true });
  fs.writeFileSync(history.historyDir(sb.root), 'a file where the history directory should be');
  for (const id of ['w1', 'w2']) {
    await plugin.preTasksExecution({ backend: 'fs', path: store }, ctx(id, sb.root));
    await plugin.postTasksExecution({ backend: 'fs', path: store }, ctx(id, sb.root, { 'a:build': { task: task('a', '9', 10), status: 'success', code: 0 } }));
  }
  assert.equal(sb.printed.filter((l) => l.startsWith('nx-open-cache: 0 hits')).length, 2, sb.printed.join('\n'));
  assert.equal(sb.printed.filter((l) => l.includes('is not in the history')).length, 1, sb.printed.join('\n'));
});

test('summary: "saved" in the line and the table only with a figure; rounding', () => {
  const base = /** @type {any} */ ({
    hits: 2, misses: 0, stored: 0, alreadyStored: 0, refusedWrites: 0, bytesDown: 10, bytesUp: 0, cacheMillis: 5, errorCount: 0,
    errors: [], refusedCount: 0, routineCount: 0, refusals: [], location: 'fs /x', mode: 'read-write', modeSource: 'default',
    runId: 'r', startedAt: '', endedAt: '',
  });
  assert.doesNotMatch(formatSummary(base), /saved/);
  assert.doesNotMatch(formatSummaryTable(base), /saved/);
  assert.match(formatSummary({ ...base, savedMs: 150_000 }), /10 B down, 0 B up, saved ~3 min, 0 errors/);
  assert.match(formatSummaryTable({ ...base, savedMs: 150_000 }), /time saved by hits\s+150\.0 s \(~3 min\)/);
  assert.deepEqual([0, 400, 12_400, 59_000, 61_000, 3_600_000, 5_400_000].map(formatSaved), ['~0 s', '~0 s', '~12 s', '~59 s', '~1 min', '~1.0 h', '~1.5 h']);
});

test('meta from another writer is trusted only so far: bounded text fields, a producer duration of at most 7 days', () => {
  const packed = (/** @type {Record<string, unknown>} */ m) => /** @type {Buffer} */ (native.pack({
    root: sb.root, code: 0, format: 'nx',
    terminalOutput: JSON.stringify({ format: 'nx-open-cache-meta', version: 1, task: 'a:build', hash: '77', durationMs: 1000, ...m }),
  }));
  const hostile = meta.parseMetaArtifact(packed({
    nxVersion: { toString: 'x' }, host: 'h'.repeat(300), storedAt: 12, runId: 'r1', files: ['x'], inexact: [1],
  }), '77');
  assert.ok(hostile);
  assert.equal(hostile.nxVersion, undefined);
  assert.equal(hostile.host, undefined);
  assert.equal(hostile.storedAt, undefined);
  assert.equal(hostile.runId, 'r1');
  assert.equal(hostile.files, undefined);
  assert.equal(hostile.inexact, undefined);
  assert.deepEqual(meta.producerOf(hostile), { durationMs: 1000, nxVersion: undefined, storedAt: undefined, runId: 'r1', host: undefined });
  assert.equal(meta.parseMetaArtifact(packed({ durationMs: meta.MAX_DURATION_MS + 1 }), '77'), undefined, 'an inflated duration gives no producer');
  assert.ok(meta.parseMetaArtifact(packed({ durationMs: meta.MAX_DURATION_MS }), '77'));
  assert.equal(meta.parseMetaArtifact(packed({ task: 't'.repeat(300) }), '77'), undefined);
});

test('meta: a dependency\'s file lists go first when too large; inexact lists named', () => {
  const t = task('a', '77', 1);
  const own = { 'packages/a/x.ts': '1' };
  const dep = Object.fromEntries(Array.from({ length: 40_000 }, (_, i) => [`packages/b/src/file-${i}.ts`, String(i).repeat(5)]));
  const files = { 'a:packages/a/**/*': own, 'b:packages/b/**/*': dep, 'workspace:[{workspaceRoot}/nx.json]': { 'nx.json': '2' } };
  const built = meta.buildMeta({ task: t, durationMs: 1, files, inexact: ['a:packages/a/**/*', 'b:packages/b/**/*'] });
  assert.deepEqual(Object.keys(built.meta.files ?? {}).sort(), ['a:packages/a/**/*', 'workspace:[{workspaceRoot}/nx.json]']);
  assert.deepEqual(built.meta.inexact, ['a:packages/a/**/*'], 'only lists still in the record');
  assert.ok(Buffer.byteLength(built.json) <= meta.MAX_META_BYTES);
  const small = meta.buildMeta({ task: t, durationMs: 1, files: { 'a:packages/a/**/*': own } });
  assert.deepEqual(small.meta.inexact, [], 'all exact: an empty list (its absence means an older writer to why)');
});

test('meta exchange: a body over 2 MiB is not read; a record is built only when its turn comes', async (t) => {
  const http = require('node:http');
  /** @type {string[]} */ const puts = [];
  const server = http.createServer((req, res) => {
    if (req.method === 'PUT') {
      puts.push(String(req.url));
      req.resume();
      req.on('end', () => res.end());
      return;
    }
    res.writeHead(200, { 'content-length': String(3 * 1024 * 1024) });
    res.write(Buffer.alloc(64 * 1024));
    // Never sends the rest: a reader that waited for it would hang until the time limit.
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', () => r(undefined)));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = /** @type {import('node:net').AddressInfo} */ (server.address()).port;
  let built = 0;
  const r = await meta.exchangeMeta({ url: `http://127.0.0.1:${port}`, token: 't' }, {
    fetch: ['77'],
    publish: [
      { hash: '88', json: () => { built += 1; return undefined; } },
      { hash: '99', json: () => { built += 1; return '{}'; } },
    ],
  }, { pack: async (json) => Buffer.from(json), totalMs: 60_000 });
  assert.equal(r.timedOut, false, 'the oversized body was refused, not waited for');
  assert.equal(r.producers.size, 0);
  assert.deepEqual(r.exchanges.find((e) => e.op === 'get'), { op: 'get', status: 200, bytes: 0 });
  assert.equal(built, 2);
  assert.deepEqual(puts, ['/v1/cache/99-nxoc-meta'], 'nothing to publish: no request');
});

test('stored command lines: secret-looking option values are redacted', () => {
  assert.equal(history.redactCommand('run-many -t build --token=abc'), 'run-many -t build --token=***');
  assert.equal(history.redactCommand('x --db-password hunter2 --y'), 'x --db-password *** --y');
  assert.equal(history.redactCommand('x --MY_SECRET="a b" --skip-nx-cache'), 'x --MY_SECRET=*** --skip-nx-cache');
  assert.equal(history.redactCommand('affected -t test --base=main'), 'affected -t test --base=main');
  const rec = history.buildRunRecord({ ...ctx('r', sb.root, {}), argv: ['node', 'nx', 'build', '--access-token=s3cr3t'] }, undefined);
  assert.equal(rec.command, 'build --access-token=***');
});

test('appendRun: the filesets a run wrote are counted in the index at once; a stale lock is taken over, a busy one skips the index', () => {
  const dir = history.historyDir(sb.root);
  const index = () => {
    const f = fs.readdirSync(dir).filter((n) => /^index-\d+\.json$/.test(n)).sort().pop();
    return JSON.parse(fs.readFileSync(path.join(dir, String(f)), 'utf8'));
  };
  const first = history.appendRun(sb.root, syntheticRecord('r1', 1_700_000_000_000, 1, 'fsA'), { filesets: [{ hash: 'fsA', bytes: 12_345 }] });
  assert.equal(first.indexed, true);
  assert.deepEqual(index().filesets.fsA[0], 12_345, 'counted without a stat (no such file here)');
  // A lock left by a writer that died (older than 5 s) is taken over.
  const lock = path.join(dir, 'index.lock');
  fs.writeFileSync(lock, '');
  const old = new Date(Date.now() - 60_000);
  fs.utimesSync(lock, old, old);
  assert.equal(history.appendRun(sb.root, syntheticRecord('r2', 1_700_000_001_000, 1)).indexed, true);
  assert.equal(fs.existsSync(lock), false);
  // A live lock: the run is written, the index left to the next append.
  fs.writeFileSync(lock, '');
  const busy = history.appendRun(sb.root, syntheticRecord('r3', 1_700_000_002_000, 1), { lockWaitMs: 0 });
  assert.equal(busy.indexed, false);
  assert.ok(fs.existsSync(busy.file));
  assert.equal(index().appends, 2);
  fs.rmSync(lock);
  history.appendRun(sb.root, syntheticRecord('r4', 1_700_000_003_000, 1));
  assert.equal(Object.keys(index().runs).length, 4, 'the next append lists the run the busy one left out');
});

test('appendRun from concurrent processes: no index update is lost', async () => {
  const { spawn } = require('node:child_process');
  const script = `
    const history = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'history.js'))});
    const [root, who] = process.argv.slice(1);
    let indexed = 0;
    for (let i = 0; i < 40; i++) {
      const start = 1_700_000_000_000 + Number(who) * 1_000_000 + i * 1000;
      const rec = { format: 'nx-open-cache-history', version: 1, runId: 'c' + who + '-' + i, startedAt: new Date(start).toISOString(),
        endedAt: new Date(start + 1).toISOString(), savedMs: 0, tasks: [] };
      if (history.appendRun(root, rec, { lockWaitMs: 5000 }).indexed) indexed += 1;
    }
    process.stdout.write(String(indexed));`;
  const children = [0, 1, 2, 3].map((who) => new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', script, sb.root, String(who)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`child ${who} exited ${code}`))));
  }));
  const indexed = /** @type {number[]} */ (await Promise.all(children));
  const dir = history.historyDir(sb.root);
  const f = fs.readdirSync(dir).filter((n) => /^index-\d+\.json$/.test(n)).sort();
  assert.equal(f.length, 1, 'one index file left');
  const idx = JSON.parse(fs.readFileSync(path.join(dir, f[0]), 'utf8'));
  assert.equal(idx.appends, indexed.reduce((a, b) => a + b, 0), 'every indexed append counted once');
  assert.equal(Object.keys(idx.runs).length, 160);
  assert.equal(fs.existsSync(path.join(dir, 'index.lock')), false);
});
