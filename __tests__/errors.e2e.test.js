'use strict';
/**
 * The run summary of a misconfigured remote cache, in a real Nx workspace (nx from npm,
 * nx-open-cache from `npm pack`): faults are grouped by their root cause, with a request count
 * and no hash, and a cause that cannot fix itself within the run skips the store at once.
 * - S3 on moto (scripts/emulators.js) with a misspelled bucket;
 * - the http backend against `nx-open-cache serve` without NX_OPEN_CACHE_TOKEN;
 * - a `no-cache` run writes its own summary, and `nx-open-cache summary` shows its age and command.
 *
 * Run: node --test --test-concurrency=1 __tests__/errors.e2e.test.js
 * Needs a native build (`node scripts/ensure-native.js`) and the emulators
 * (`node scripts/emulators.js install`); without moto the S3 case is skipped with the reason.
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');

const { createWorkspace, disposePack, summaryLines, cleanEnv } = require('./helpers/nx-workspace.js');
const { startServe, serveEnv, request, metric } = require('./helpers/serve-process.js');
const emulators = require('../scripts/emulators.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** Daemon off: the plugin's summary is printed in the run's own output. */
const OFF = { NX_DAEMON: 'false' };
const MISSPELLED = 'acme-nx-cahce';

/** @type {NxWorkspace} */
let ws;

before(async () => {
  ws = await createWorkspace();
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * The run went green and every task built (a cache fault never fails a build).
 * @param {RunResult} r
 * @param {string} what
 */
function assertBuiltGreen(r, what) {
  assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
  assert.equal(r.code, 0, `${what}: nx failed${show(r)}`);
  assert.deepEqual(ws.builtProjects().sort(), ws.projects.map((p) => p.name).sort(), `${what}: every task built${show(r)}`);
}

/**
 * The plugin's summary as printed: its first line and the indented lines after it.
 * @param {string} output
 */
function printedSummary(output) {
  const lines = output.split(/\r?\n/);
  const start = lines.findIndex((l) => l.startsWith('nx-open-cache: ') && / hits?, /.test(l));
  if (start < 0) return [];
  const out = [lines[start]];
  for (const l of lines.slice(start + 1)) {
    if (!l.startsWith('  ')) break;
    out.push(l);
  }
  return out;
}

/** Whether moto can run here, or why not. */
function s3Unavailable() {
  try {
    emulators.install({ log: () => undefined });
    return null;
  } catch (e) {
    return `SKIPPED: the S3 emulator cannot be installed: ${/** @type {Error} */ (e).message}`;
  }
}

describe('the run summary groups faults by root cause', () => {
  test('S3 with a misspelled bucket: one cause, 8 requests, store skipped for this run', async (t) => {
    const why = s3Unavailable();
    if (why) {
      t.skip(why);
      return;
    }
    await ws.resetScenario();
    const emu = await emulators.start('s3');
    try {
      ws.setPluginOptions({ ...emu.options, bucket: MISSPELLED });
      const r = await ws.runBuild({ env: { ...OFF, ...emu.env } });
      assertBuiltGreen(r, 'misspelled bucket');
      const n = ws.projects.length;
      assert.deepEqual(printedSummary(r.output), [
        `nx-open-cache: 0 hits, ${n} misses, 0 stored, 0 B down, 0 B up, 1 error (${2 * n} requests) (s3 ${MISSPELLED} (us-east-1, ${emu.endpoint}), read-write)`,
        `  ! S3 bucket ${MISSPELLED} does not exist: ${2 * n} requests, store skipped for this run`,
        '  (cache faults never fail the build: affected tasks ran or were not stored)',
      ], show(r));

      // Another machine (no local cache), the table this time.
      await ws.nxReset();
      ws.cleanOutputs();
      ws.clearBuildLog();
      const table = await ws.runBuild({ env: { ...OFF, ...emu.env, NX_OPEN_CACHE_SUMMARY: 'table' } });
      assert.equal(table.code, 0, show(table));
      const out = table.output;
      assert.match(out, new RegExp(`^ {2}errors by cause \\(requests\\):\\n {7}${2 * n}x {2}S3 bucket ${MISSPELLED} does not exist \\(store skipped for this run\\)$`, 'm'), show(table));
    } finally {
      await emu.stop();
    }
  });

  test('http backend without NX_OPEN_CACHE_TOKEN: one cause naming the variable, one request reached serve', async () => {
    await ws.resetScenario();
    const storage = path.join(ws.base, 'serve-storage');
    const token = crypto.randomBytes(16).toString('hex');
    const serve = await startServe(['--storage', `fs:${storage}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${token}` }) });
    try {
      ws.setPluginOptions({ backend: 'http', url: serve.url });
      const r = await ws.runBuild({ env: { ...OFF } });
      assertBuiltGreen(r, 'missing token');
      const n = ws.projects.length;
      assert.deepEqual(printedSummary(r.output), [
        `nx-open-cache: 0 hits, ${n} misses, 0 stored, 0 B down, 0 B up, 1 error (${2 * n} requests) (http ${serve.url}, read-write)`,
        `  ! server ${serve.url} requires a token (401 Unauthorized): NX_OPEN_CACHE_TOKEN is not set: ${2 * n} requests, store skipped for this run`,
        '  (cache faults never fail the build: affected tasks ran or were not stored)',
      ], show(r));
      const s = ws.readLastRun();
      assert.ok(s, 'last-run.json');
      // Only the proxy's start-up check reached the server: the store was skipped at once.
      const metrics = (await request(`${serve.url}/metrics`)).body.toString('utf8');
      const cacheRequests = metrics.split('\n').filter((l) => l.startsWith('nx_open_cache_requests_total{') && l.includes('route="cache"')).join('\n');
      assert.equal(metric(cacheRequests, 'nx_open_cache_requests_total'), 1, metrics);
      assert.deepEqual(s.errors, [{
        reason: `server ${serve.url} requires a token (401 Unauthorized): NX_OPEN_CACHE_TOKEN is not set`,
        count: 2 * n,
        skipped: true,
      }]);
    } finally {
      await serve.stop();
    }
  });

  test('a no-cache run writes its own summary; `summary` shows its age and command', async () => {
    await ws.resetScenario();
    const store = ws.newStorePath('errors-no-cache');
    ws.setPluginOptions({ backend: 'fs', path: store });
    const cached = await ws.runBuild({ env: { ...OFF } });
    assert.equal(cached.code, 0, show(cached));
    const none = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_MODE: 'no-cache' } });
    assert.equal(none.code, 0, show(none));
    const line = `nx-open-cache: remote cache not used (fs ${store}, no-cache from NX_OPEN_CACHE_MODE)`;
    assert.ok(summaryLines(none.output).includes(line), `the no-cache run's summary line: ${line}${show(none)}`);
    const s = ws.readLastRun();
    assert.ok(s, 'last-run.json');
    assert.equal(s.mode, 'no-cache');
    assert.deepEqual([s.hits, s.misses, s.stored, s.errorCount], [0, 0, 0, 0]);

    const cli = path.join(ws.root, 'node_modules', 'nx-open-cache', 'lib', 'cli.js');
    const r = spawnSync(process.execPath, [cli, 'summary'], { cwd: ws.root, env: cleanEnv({}), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0], /^nx-open-cache: remote cache not used \(fs .*, no-cache from NX_OPEN_CACHE_MODE\)$/);
    assert.match(lines[1], /^ {2}\(nx run-many -t build.*, ended just now at \d{4}-\d\d-\d\dT[\d:.]+Z\)$/, r.stdout);

    ws.removeLastRun();
    const empty = spawnSync(process.execPath, [cli, 'summary'], { cwd: ws.root, env: cleanEnv({}), encoding: 'utf8' });
    assert.equal(empty.status, 1);
    assert.match(empty.stderr, /no run summary yet: no Nx run in this workspace has ended with the plugin/);
  });
});
