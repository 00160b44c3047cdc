'use strict';
/**
 * The run report client (lib/run-report.js) against a real `nx-open-cache serve` on 127.0.0.1:
 * what `buildRunReport(recordOfRun(..))` makes of a run with skipped and stopped tasks (no times)
 * and a long command is accepted, from a read-only token too, and shows up in /ui/api/summary.
 * Then a real Nx run (nx from npm, the plugin from `npm pack`, the http backend) against serve:
 * its tasks appear in the summary.
 *
 * Run: CI=true node --test --test-concurrency=1 __tests__/run-report-serve.test.js
 * Needs a native build (`node scripts/ensure-native.js`).
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, after } = require('node:test');

const { startServe, serveEnv, request } = require('./helpers/serve-process.js');
const { buildRunReport, recordOfRun } = require('../lib/run-report.js');

const RW = `rw-${crypto.randomBytes(12).toString('hex')}`;
const RO = `ro-${crypto.randomBytes(12).toString('hex')}`;
const ADMIN = `admin-${crypto.randomBytes(12).toString('hex')}`;
const TOKENS = `ci:read-write:${RW},dev:read-only:${RO},lead:admin:${ADMIN}`;
const dirs = /** @type {string[]} */ ([]);
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** @param {string} base */
async function summary(base) {
  const r = await request(`${base}/ui/api/summary?range=1h`, { token: ADMIN });
  assert.equal(r.status, 200, r.body.toString());
  return JSON.parse(r.body.toString());
}

/**
 * @param {string} base
 * @param {string} token
 * @param {unknown} report
 */
function post(base, token, report) {
  return request(`${base}/nx-open-cache/v1/runs`, {
    method: 'POST',
    token,
    headers: { 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify(report)),
  });
}

test('buildRunReport output of a run with skipped tasks and a long command is accepted by serve', { timeout: 60_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-run-report-'));
  dirs.push(dir);
  const s = await startServe(['--storage', `fs:${dir}/store`, '--log', 'off'], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
  try {
    const task = (/** @type {string} */ hash, /** @type {boolean} */ timed) => (timed ? { hash, startTime: 1000, endTime: 1500 } : { hash });
    const context = {
      id: undefined,
      taskResults: {
        'lib-a:build': { status: 'remote-cache', task: task('101', true) },
        'lib-b:build': { status: 'failure', task: task('102', true) },
        'app:build': { status: 'skipped', task: task('103', false) },
        'app:e2e': { status: 'stopped', task: task('104', false) },
      },
    };
    const command = `run-many -t build --projects=${Array.from({ length: 120 }, (_, i) => `project-${i}`).join(',')}`;
    const record = recordOfRun(context, { command, events: [{ hash: '101', op: 'get', outcome: 'hit', bytes: 10 }] }, '24.0.6');
    const report = buildRunReport(record);
    assert.ok(report.tasks.some((t) => t.outcome === 'not-run' && !('durationMs' in t)), JSON.stringify(report.tasks));
    assert.equal(report.command?.length, 512, 'the client cuts the command at 512');
    assert.match(report.runId, /^run-[0-9a-f-]{36}$/, 'a random run id when Nx gives none');
    // From a read-only token (a developer machine), then a second run without an id from the same token.
    const r = await post(s.url, RO, report);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(JSON.parse(r.body.toString()).accepted, true);
    const second = buildRunReport(record);
    assert.notEqual(second.runId, report.runId);
    const r2 = await post(s.url, RO, second);
    assert.equal(JSON.parse(r2.body.toString()).accepted, true, 'a second run without an id is not taken for the first');
    // The server cuts what a client did not: a 2,000-character command is accepted.
    const r3 = await post(s.url, RW, { ...report, runId: 'long', command: 'x'.repeat(2000) });
    assert.equal(r3.status, 200, r3.body.toString());
    const v = await summary(s.url);
    assert.equal(v.runs.reports, 3);
    const byId = Object.fromEntries(v.tasks.map((/** @type {any} */ t) => [t.id, t]));
    assert.equal(byId['app:build'].notRun, 3);
    assert.equal(byId['app:e2e'].notRun, 3);
    assert.equal(byId['lib-a:build'].hits, 3);
    assert.equal(byId['lib-b:build'].failed, 3);
    assert.equal(v.runs.recent[0].command.length, 512);
    assert.deepEqual(v.runs.recent.map((/** @type {any} */ x) => x.token), ['ci', 'dev', 'dev']);
  } finally {
    await s.stop();
  }
});

test('a real Nx run with the http backend reports its tasks to serve', { timeout: 300_000 }, async () => {
  const { createWorkspace, disposePack } = require('./helpers/nx-workspace.js');
  const ws = await createWorkspace();
  const s = await startServe(['--storage', `fs:${path.join(ws.base, 'upstream-storage')}`, '--log', 'off'], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
  try {
    ws.setPluginOptions({ backend: 'http', url: s.url });
    const started = Date.now();
    const r = await ws.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: RO } });
    assert.equal(r.code, 0, r.output);
    const v = await summary(s.url);
    const ids = v.tasks.map((/** @type {any} */ t) => t.id).sort();
    assert.deepEqual(ids, ws.projects.map((p) => `${p.name}:build`).sort(), JSON.stringify(v.tasks));
    assert.equal(v.runs.reports, 1);
    assert.equal(v.runs.recent[0].token, 'dev', 'reported with the read-only token');
    // The run itself, not the workspace set-up: the figure the brief bounds at 60 s.
    console.log(`real Nx run + report: ${Date.now() - started} ms`);
  } finally {
    await s.stop();
    await ws.dispose();
    disposePack();
  }
});
