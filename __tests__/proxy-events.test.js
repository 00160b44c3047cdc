'use strict';
// The proxy's per-request events and meta-key counts through the real addon, in-process
// (CacheProxy.stats()/stop()) and through the cache host (hostEnd's ended.stats); the run report
// (lib/run-report.js) sent through a proxy and straight from the addon to a small local server.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const native = require('../index.js');
const { nxArtifact } = require('./helpers/hostile-tar.js');
const { buildRunReport, recordOfRun, runReportEnabled, sendRunReport, MAX_BYTES } = require('../lib/run-report.js');

function tmp() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-events-'));
}

/** @param {{ url: string, token: string }} p @param {string} hash */
async function get(p, hash) {
  const r = await fetch(`${p.url}/v1/cache/${hash}`, { headers: { authorization: `Bearer ${p.token}` } });
  await r.arrayBuffer();
  return r.status;
}

/** @param {{ url: string, token: string }} p @param {string} hash @param {Buffer} body */
async function put(p, hash, body) {
  const r = await fetch(`${p.url}/v1/cache/${hash}`, { method: 'PUT', headers: { authorization: `Bearer ${p.token}` }, body });
  await r.arrayBuffer();
  return r.status;
}

/**
 * Misses, stores, a second store and a hit of `hash`, plus a meta object beside it.
 * @param {{ url: string, token: string }} p
 * @param {string} hash
 */
async function traffic(p, hash) {
  const artifact = nxArtifact({ 'dist/a.txt': 'built' });
  assert.equal(await get(p, hash), 404);
  assert.equal(await put(p, hash, artifact), 200);
  assert.equal(await put(p, hash, artifact), 409);
  assert.equal(await get(p, hash), 200);
  assert.equal(await put(p, `${hash}-nxoc-meta`, nxArtifact({}, { terminalOutput: '{"format":"nx-open-cache-meta"}' })), 200);
  assert.equal(await get(p, `${hash}-nxoc-meta`), 200);
  return artifact.length;
}

/** @param {any} stats @param {string} hash @param {number} len */
function assertEvents(stats, hash, len) {
  assert.deepEqual(
    stats.events.map((/** @type {any} */ e) => [e.hash, e.op, e.outcome, e.bytes]),
    [[hash, 'get', 'miss', 0], [hash, 'put', 'stored', len], [hash, 'put', 'already-stored', 0], [hash, 'get', 'hit', len]],
  );
  for (const e of stats.events) assert.ok(Number.isInteger(e.millis) && e.millis >= 0);
  assert.equal(stats.eventsDropped, 0);
  assert.deepEqual([stats.metaReads, stats.metaWrites], [1, 1]);
  assert.deepEqual([stats.hits, stats.misses, stats.stored, stats.alreadyStored], [1, 1, 1, 1]);
}

test('CacheProxy: stats() and stop() carry the events; meta keys are counted apart', async () => {
  const root = tmp();
  const proxy = native.CacheProxy.start(root, { path: 'cache' }, {});
  try {
    const len = await traffic(proxy, '4242');
    assert.equal(proxy.stats().events.length, 4);
    assertEvents(await proxy.stop(), '4242', len);
  } finally {
    await proxy.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('cache host: hostEnd carries the events of the run', async () => {
  const root = tmp();
  const dir = path.join(root, '.nx', 'workspace-data', 'nx-open-cache');
  fs.mkdirSync(dir, { recursive: true });
  const version = `events-test-${process.pid}`;
  const host = native.openCacheHost(dir, version);
  assert.ok(host, 'a host starts');
  try {
    const attached = await native.hostAttach(dir, version, { id: 'run-1', workspaceRoot: root, options: { path: 'cache' }, env: {}, argv: [] });
    assert.ok(attached.run, attached.reason ?? 'attached');
    const len = await traffic(attached.run, '777');
    const ended = await native.hostEnd(dir, version, 'run-1');
    assert.equal(ended.outcome, 'ended');
    assertEvents(ended.ended.stats, '777', len);
    assert.ok(ended.ended.stats.events.every((/** @type {any} */ e) => !('reason' in e)), 'no reason where there is none');
  } finally {
    host.stop();
    await host.wait();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

/**
 * A small upstream on 127.0.0.1 recording run reports; answers `status` to them, 404 to the rest.
 * @param {number} status
 */
async function upstream(status) {
  /** @type {{ headers: http.IncomingHttpHeaders, body: string }[]} */
  const reports = [];
  const server = http.createServer((req, res) => {
    /** @type {Buffer[]} */
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'POST' && req.url === '/nx-open-cache/v1/runs') {
        reports.push({ headers: req.headers, body: Buffer.concat(chunks).toString() });
        res.writeHead(status).end();
      } else {
        res.writeHead(404).end();
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${address.port}`, reports, close: () => new Promise((r) => server.close(r)) };
}

const RECORD = {
  runId: 'r-1', startedAt: '2026-11-27T10:00:00.000Z', endedAt: '2026-11-27T10:01:00.000Z', nxVersion: '24.0.6',
  command: 'run-many -t build',
  tasks: [
    { id: 'lib-a:build', hash: '11', outcome: 'remote-hit', durationMs: 40, savedMs: 900, bytes: 1234, inputs: { command: 'x' } },
    { id: 'lib-b:build', hash: '22', outcome: 'stored', durationMs: 950.4, bytes: 99 },
    { id: 'broken' },
  ],
};

test('buildRunReport: the SPEC format, only the fields the server takes, within its bounds', () => {
  const report = buildRunReport(RECORD);
  assert.deepEqual(report, {
    format: 'nx-open-cache-run-report', version: 1, runId: 'r-1', startedAt: RECORD.startedAt, endedAt: RECORD.endedAt,
    nxVersion: '24.0.6', command: 'run-many -t build',
    tasks: [
      { id: 'lib-a:build', hash: '11', outcome: 'remote-hit', durationMs: 40, savedMs: 900, bytes: 1234 },
      { id: 'lib-b:build', hash: '22', outcome: 'stored', durationMs: 950, bytes: 99 },
    ],
  });
  // Ids of 190 bytes (serve takes up to 200): 6,000 of them are more than 1 MiB.
  const many = { ...RECORD, tasks: Array.from({ length: 6000 }, (_, i) => ({ id: `p${i}:build`.padEnd(190, 'x'), hash: `${i}`, outcome: 'stored' })) };
  const bounded = buildRunReport(many);
  assert.ok(bounded.tasks.length <= 5000 && bounded.tasks.length > 0);
  assert.ok(Buffer.byteLength(JSON.stringify(bounded)) <= MAX_BYTES);
  // Ids serve would refuse (over 200 bytes, control characters) are left out, not sent to fail the report.
  const odd = buildRunReport({ ...RECORD, tasks: [{ id: 'x'.repeat(201), hash: '1', outcome: 'stored' }, { id: 'a\u0007:b', hash: '2', outcome: 'stored' }, { id: 'ok:build', hash: '3', outcome: 'stored' }] });
  assert.deepEqual(odd.tasks.map((t) => t.id), ['ok:build']);
});

test('runReportEnabled: http only, off by option or variable', () => {
  assert.equal(runReportEnabled('http', {}, {}), true);
  assert.equal(runReportEnabled('fs', {}, {}), false);
  assert.equal(runReportEnabled('http', { runReport: false }, {}), false);
  assert.equal(runReportEnabled('http', {}, { NX_OPEN_CACHE_RUN_REPORT: 'off' }), false);
  assert.equal(runReportEnabled('http', { runReport: true }, { NX_OPEN_CACHE_RUN_REPORT: 'on' }), true);
});

test('recordOfRun: outcomes from Nx statuses and the proxy events', () => {
  const task = (/** @type {string} */ hash) => ({ hash, startTime: 1000, endTime: 1500 });
  const record = recordOfRun(
    {
      id: 'r', taskResults: {
        'a:build': { status: 'remote-cache', task: task('1') }, 'b:build': { status: 'success', task: task('2') },
        'c:build': { status: 'success', task: task('3') }, 'd:build': { status: 'failure', task: task('4') },
        'e:build': { status: 'local-cache-kept-existing', task: task('5') }, 'f:build': { status: 'skipped', task: task('6') },
      },
    },
    { runId: 'r', events: [{ hash: '1', op: 'get', outcome: 'hit', bytes: 10 }, { hash: '2', op: 'put', outcome: 'stored', bytes: 20 }, { hash: '3', op: 'put', outcome: 'read-only', bytes: 0 }] },
  );
  assert.deepEqual(record.tasks.map((t) => [t.id, t.outcome, t.bytes, t.durationMs]), [
    ['a:build', 'remote-hit', 10, 500], ['b:build', 'stored', 20, 500], ['c:build', 'not-stored', undefined, 500],
    ['d:build', 'failed', undefined, 500], ['e:build', 'local-hit', undefined, 500], ['f:build', 'not-run', undefined, 500],
  ]);
});

test('sendRunReport: through a running proxy and straight from the addon, with the upstream token', async () => {
  const root = tmp();
  const up = await upstream(202);
  const env = { NX_OPEN_CACHE_TOKEN: 'upstream-token-for-test' };
  const options = { backend: 'http', url: up.url };
  const proxy = native.CacheProxy.start(root, options, env);
  try {
    const base = { addon: native, workspaceRoot: root, options, env, backend: 'http', record: RECORD };
    assert.deepEqual(await sendRunReport({ ...base, proxy }), { forwarded: true, status: 202, reason: undefined });
    const direct = await sendRunReport(base);
    assert.equal(direct?.forwarded, true);
    assert.equal(direct?.status, 202);
    assert.equal(up.reports.length, 2);
    for (const r of up.reports) {
      assert.equal(r.headers.authorization, 'Bearer upstream-token-for-test');
      assert.deepEqual(JSON.parse(r.body), buildRunReport(RECORD));
    }
    // Turned off, or another backend: nothing sent.
    assert.equal(await sendRunReport({ ...base, options: { ...options, runReport: false } }), undefined);
    assert.equal(await sendRunReport({ ...base, env: { ...env, NX_OPEN_CACHE_RUN_REPORT: 'off' } }), undefined);
    assert.equal(await sendRunReport({ ...base, backend: 'fs' }), undefined);
    assert.equal(up.reports.length, 2);
    // The proxy takes no report without its token.
    const denied = await fetch(`${proxy.url}/nx-open-cache/v1/run-report`, { method: 'POST', body: '{}' });
    assert.equal(denied.status, 401);
  } finally {
    await proxy.stop();
    await up.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('sendRunReport: a server without run reports (404) is asked once per process', async () => {
  const root = tmp();
  const up = await upstream(404);
  const options = { backend: 'http', url: up.url };
  try {
    const base = { addon: native, workspaceRoot: root, options, env: {}, backend: 'http', record: RECORD };
    for (let i = 0; i < 3; i++) {
      const sent = await sendRunReport(base);
      assert.equal(sent?.forwarded, false);
      assert.match(sent?.reason ?? '', /404/);
    }
    assert.equal(up.reports.length, 1);
  } finally {
    await up.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('reportRun (the plugin call): an http run sends its record built from Nx results and proxy events', async () => {
  const { reportRun } = require('../lib/run-report.js');
  const root = tmp();
  const up = await upstream(201);
  const saved = process.env.NX_OPEN_CACHE_TOKEN;
  process.env.NX_OPEN_CACHE_TOKEN = 'plugin-run-token';
  try {
    const options = { backend: 'http', url: up.url };
    const context = {
      id: 'run-9', workspaceRoot: root, nxJsonConfiguration: { plugins: [{ plugin: 'nx-open-cache', options }] },
      taskResults: { 'a:build': { status: 'success', task: { hash: '91', startTime: 10, endTime: 30 } } },
    };
    const summary = {
      location: `http ${up.url}`, mode: 'read-write', runId: 'run-9', startedAt: '2026-11-27T10:00:00.000Z', endedAt: '2026-11-27T10:00:01.000Z',
      events: [{ hash: '91', op: 'put', outcome: 'stored', bytes: 77 }],
    };
    const sent = await reportRun(context, options, summary);
    assert.equal(sent?.forwarded, true);
    assert.equal(up.reports.length, 1);
    assert.equal(up.reports[0].headers.authorization, 'Bearer plugin-run-token');
    const report = JSON.parse(up.reports[0].body);
    assert.equal(report.runId, 'run-9');
    assert.deepEqual(report.tasks, [{ id: 'a:build', hash: '91', outcome: 'stored', durationMs: 20, bytes: 77 }]);
    // Not http, or no cache used: nothing sent.
    assert.equal(await reportRun(context, options, { ...summary, location: 'fs /x' }), undefined);
    assert.equal(await reportRun(context, options, { ...summary, mode: 'no-cache' }), undefined);
    assert.equal(up.reports.length, 1);
  } finally {
    if (saved === undefined) delete process.env.NX_OPEN_CACHE_TOKEN;
    else process.env.NX_OPEN_CACHE_TOKEN = saved;
    await up.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
