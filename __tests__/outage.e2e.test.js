'use strict';
/**
 * A dead store must cost a build seconds, not minutes. A real Nx workspace (nx 24) with the plugin
 * pointed at two broken Nx-protocol servers on 127.0.0.1: one that accepts connections and never
 * answers, one that answers 500 to everything. The run must be green with every task built, the
 * summary must say why the store was skipped, and the dead server must see only the start-up check
 * (its attempts), not one request per task: that is what bounds the cost to one `timeout` per run.
 * Wall times are reported next to an uncached run of the same workspace (not asserted: shared
 * machines are noisy).
 *
 * Run: node --test --test-concurrency=1 __tests__/outage.e2e.test.js
 */

const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { test, before, after } = require('node:test');

const { createWorkspace, disposePack } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** The `timeout` the tests configure: the start-up check's limit. */
const TIMEOUT_S = 3;

/** @type {NxWorkspace} */
let ws;
/** @type {(() => Promise<void>)[]} */
const cleanups = [];

before(async () => {
  ws = await createWorkspace();
});

after(async () => {
  for (const c of cleanups) await c();
  if (ws) await ws.dispose();
  disposePack();
});

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * A server that accepts connections and never answers; counts them.
 * @returns {Promise<{ url: string, count: () => number }>}
 */
async function hangingServer() {
  let connections = 0;
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  const server = net.createServer((s) => {
    connections += 1;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    s.resume();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(() => resolve(undefined)));
  });
  const addr = /** @type {net.AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${addr.port}`, count: () => connections };
}

/**
 * A server that answers 500 to every request; counts them.
 * @returns {Promise<{ url: string, count: () => number }>}
 */
async function failingServer() {
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests += 1;
    req.resume();
    req.on('end', () => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error (test server)');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(() => resolve(undefined)));
  });
  const addr = /** @type {net.AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${addr.port}`, count: () => requests };
}

/**
 * A cold build from scratch; returns the run and its wall time in seconds.
 * @param {Record<string, string>} env
 */
async function coldBuild(env) {
  await ws.nxReset();
  ws.cleanOutputs();
  ws.clearBuildLog();
  const t0 = process.hrtime.bigint();
  const r = await ws.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TIMEOUT: `${TIMEOUT_S}s`, ...env } });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { r, seconds };
}

/**
 * @param {RunResult} r
 * @param {string} what
 */
function assertBuiltGreen(r, what) {
  assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
  assert.equal(r.code, 0, `${what}: nx failed${show(r)}`);
  assert.deepEqual(ws.builtProjects().sort(), ws.projects.map((p) => p.name).sort(), `${what}: every task built${show(r)}`);
}

test('a store that accepts and never answers, and one that answers 500: green runs, the store skipped after its start-up check', async (t) => {
  // Reference: the same cold build without a remote cache.
  ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('unused') });
  const uncached = await coldBuild({ NX_OPEN_CACHE_MODE: 'no-cache' });
  assertBuiltGreen(uncached.r, 'uncached run');

  const cases = [
    { label: 'never answers', server: await hangingServer(), reason: /did not answer within 3 s|timed out|timeout/i },
    { label: 'answers 500', server: await failingServer(), reason: /500/ },
  ];
  for (const c of cases) {
    ws.setPluginOptions({ backend: 'http', url: c.server.url });
    const run = await coldBuild({ NX_OPEN_CACHE_TOKEN: 'test-token-for-a-dead-server' });
    assertBuiltGreen(run.r, c.label);
    const s = ws.readLastRun();
    assert.ok(s, `${c.label}: no run summary${show(run.r)}`);
    assert.equal(s.hits, 0, JSON.stringify(s));
    assert.equal(s.stored, 0, JSON.stringify(s));
    const reasons = s.errors.map((/** @type {{ reason: string }} */ e) => e.reason);
    assert.ok(
      s.errors.some((/** @type {{ skipped: boolean, count: number }} */ e) => e.skipped && e.count === 2 * ws.projects.length),
      `${c.label}: every read and write skipped under one cause: ${JSON.stringify(s.errors)}`,
    );
    assert.ok(reasons.some((/** @type {string} */ r) => c.reason.test(r)), `${c.label}: the cause named: ${JSON.stringify(reasons)}`);
    // The start-up check (and its retries on 5xx) reached the server; no task's lookup or upload
    // did: each of the 4 tasks would otherwise add a GET and a PUT.
    assert.ok(c.server.count() >= 1, `${c.label}: the server was never contacted`);
    assert.ok(c.server.count() <= 3, `${c.label}: ${c.server.count()} requests reached the dead server`);
    t.diagnostic(
      `${c.label}: ${run.seconds.toFixed(1)} s vs uncached ${uncached.seconds.toFixed(1)} s ` +
        `(+${(run.seconds - uncached.seconds).toFixed(1)} s; timeout ${TIMEOUT_S} s); ${c.server.count()} request(s) reached it`,
    );
  }
});
