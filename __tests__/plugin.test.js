'use strict';
// The plugin hooks and the CLI in-process, against the real native proxy and a temp directory.

const { test } = require('node:test');
const { hookSandbox } = require('./helpers/hook-sandbox.js');
const { sizedArtifact } = require('./helpers/hostile-tar.js');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const plugin = require('../lib/plugin.js');
const { formatBytes, formatSummary, formatSummaryTable, summaryMode, summaryFile } = require('../lib/summary.js');

const VARS = [
  'NX_SELF_HOSTED_REMOTE_CACHE_SERVER',
  'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN',
  'NX_OPEN_CACHE_PROXY_URL',
  'NX_OPEN_CACHE_MODE',
  'NX_SKIP_REMOTE_CACHE',
  'NX_OPEN_CACHE_SUMMARY',
  'CI',
];

const sb = hookSandbox({ prefix: 'nxoc-plugin-', vars: VARS, nxJson: '{}' });

/** @param {string} id */
const ctx = (id, argv = ['nx', 'run-many', '-t', 'build']) => ({ id, workspaceRoot: sb.root, argv });

test('pre starts a proxy Nx can use; post stops it, prints and saves the summary', async () => {
  const options = { backend: 'fs', path: 'store' };
  await plugin.preTasksExecution(options, ctx('run-1'));
  const url = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  const token = process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN;
  assert.match(String(url), /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.match(String(token), /^[0-9a-f]{64}$/);
  const auth = { authorization: `Bearer ${token}` };
  assert.equal((await fetch(`${url}/v1/cache/123`, { headers: auth })).status, 404);
  // A valid Nx artifact of 200 bytes: the proxy serves nothing else.
  const artifact = sizedArtifact(200);
  assert.equal((await fetch(`${url}/v1/cache/123`, { method: 'PUT', headers: auth, body: artifact })).status, 200);
  assert.equal((await fetch(`${url}/v1/cache/123`, { headers: auth })).status, 200);
  assert.equal((await fetch(`${url}/v1/cache/123`)).status, 401);

  await plugin.postTasksExecution(options, ctx('run-1'));
  const line = sb.printed.find((l) => l.startsWith('nx-open-cache: '));
  assert.ok(line, sb.printed.join('\n'));
  assert.match(line, /^nx-open-cache: 1 hit, 1 miss, 1 stored, 200 B down, 200 B up, 0 errors \(fs .*store, read-write\)$/);
  const saved = JSON.parse(fs.readFileSync(summaryFile(sb.root), 'utf8'));
  assert.equal(saved.hits, 1);
  assert.equal(saved.stored, 1);
  assert.equal(saved.runId, 'run-1');
  await assert.rejects(fetch(`${url}/v1/cache/123`, { headers: auth }), 'the proxy is stopped');
});

test('a second run in the same process (the daemon) starts again despite its own stale variables', async () => {
  await plugin.preTasksExecution({ path: 'store' }, ctx('a'));
  const first = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  await plugin.postTasksExecution({ path: 'store' }, ctx('a'));
  await plugin.preTasksExecution({ path: 'store' }, ctx('b'));
  const second = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  assert.notEqual(second, first);
  assert.equal((await fetch(`${second}/v1/cache/1`, {
    headers: { authorization: `Bearer ${process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN}` },
  })).status, 404);
  await plugin.postTasksExecution({ path: 'store' }, ctx('b'));
  assert.ok(!sb.printed.some((l) => l.includes('stays out of the way')), sb.printed.join('\n'));
});

test('concurrent runs keep their own proxies', async () => {
  await plugin.preTasksExecution({ path: 'store' }, ctx('x'));
  const x = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  await plugin.preTasksExecution({ path: 'store' }, ctx('y'));
  const y = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  await plugin.postTasksExecution({ path: 'store' }, ctx('x'));
  await assert.rejects(fetch(`${x}/v1/cache/1`));
  assert.equal((await fetch(`${y}/v1/cache/1`)).status, 401, 'run y still has its proxy');
  await plugin.postTasksExecution({ path: 'store' }, ctx('y'));
});

test('a server set by the user wins: the plugin stays out and says so once', async () => {
  process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER = 'http://127.0.0.1:1';
  await plugin.preTasksExecution({ path: 'store' }, ctx('u1'));
  await plugin.preTasksExecution({ path: 'store' }, ctx('u2'));
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, 'http://127.0.0.1:1');
  const notes = sb.printed.filter((l) => l.includes('stays out of the way'));
  assert.equal(notes.length, 1, sb.printed.join('\n'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('u1'));
  assert.ok(!sb.printed.some((l) => /\d+ hits?, /.test(l)), 'no summary for a run it did not serve');
});

test('--skip-remote-cache, NX_SKIP_REMOTE_CACHE and no-cache mode leave Nx alone', async () => {
  await plugin.preTasksExecution({ path: 'store' }, ctx('s1', ['nx', 'run-many', '-t', 'build', '--skip-remote-cache']));
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, undefined);
  process.env.NX_SKIP_REMOTE_CACHE = 'true';
  await plugin.preTasksExecution({ path: 'store' }, ctx('s2'));
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, undefined);
  delete process.env.NX_SKIP_REMOTE_CACHE;
  process.env.CI = 'true';
  await plugin.preTasksExecution({ path: 'store', ciMode: 'no-cache' }, ctx('s3'));
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, undefined);
  assert.ok(sb.printed.some((l) => l.includes('no-cache (ciMode (CI detected))')), sb.printed.join('\n'));
  assert.ok(!fs.existsSync(path.join(sb.root, 'store')), 'nothing created');
});

test('a wrong option throws before anything starts, naming option, value and choices', async () => {
  await assert.rejects(plugin.preTasksExecution({ backend: 'nope' }, ctx('e1')), (e) => {
    assert.match(e.message, /invalid value "nope" for option "backend": expected one of "fs"/);
    return true;
  });
  await assert.rejects(plugin.preTasksExecution({ localMode: 'read' }, ctx('e2')), /"localMode".*"read-write", "read-only", "no-cache"/);
  await assert.rejects(plugin.preTasksExecution({ pth: 'x' }, ctx('e3')), /unknown option "pth"/);
  process.env.NX_OPEN_CACHE_MODE = 'ro';
  await assert.rejects(plugin.preTasksExecution({}, ctx('e4')), /NX_OPEN_CACHE_MODE/);
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, undefined);
});

test('NX_OPEN_CACHE_SUMMARY=off prints nothing but still saves', async () => {
  process.env.NX_OPEN_CACHE_SUMMARY = 'off';
  await plugin.preTasksExecution({ path: 'store' }, ctx('q'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('q'));
  assert.ok(!sb.printed.some((l) => l.startsWith('nx-open-cache: 0 hits')), sb.printed.join('\n'));
  assert.ok(fs.existsSync(summaryFile(sb.root)));
});

test('summary formatting: units, faults listed once with counts', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(999), '999 B');
  assert.equal(formatBytes(21_700), '21.7 KB');
  assert.equal(formatBytes(1_500_000), '1.50 MB');
  const text = formatSummary({
    hits: 1, misses: 2, stored: 0, alreadyStored: 1, refusedWrites: 0, bytesDown: 10, bytesUp: 0,
    cacheMillis: 3, errorCount: 3, errors: [{ reason: 'write 1: disk full', count: 2 }, { reason: 'gone', count: 1 }],
    location: 'fs /x', mode: 'read-write', modeSource: 'default', startedAt: '', endedAt: '', runId: 'r',
  });
  const lines = text.split('\n');
  assert.equal(lines[0], 'nx-open-cache: 1 hit, 2 misses, 0 stored, 1 already stored, 10 B down, 0 B up, 3 errors (fs /x, read-write)');
  assert.equal(lines[1], '  ! 2x write 1: disk full');
  assert.equal(lines[2], '  ! gone');
});

test('NX_OPEN_CACHE_SUMMARY=table prints the table; a typo warns, names the choices and shows the line', async () => {
  process.env.NX_OPEN_CACHE_SUMMARY = 'table';
  await plugin.preTasksExecution({ path: 'store' }, ctx('t1'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('t1'));
  const out = sb.printed.join('\n');
  assert.match(out, /^nx-open-cache \(fs .*store, read-write from /m);
  assert.match(out, /^ {2}remote hits +0$/m);
  assert.match(out, /^ {2}time in cache calls +\d+\.\d\d s$/m);
  sb.printed.length = 0;
  process.env.NX_OPEN_CACHE_SUMMARY = 'tabel';
  await plugin.preTasksExecution({ path: 'store' }, ctx('t2'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('t2'));
  assert.ok(sb.printed.some((l) => l.includes('NX_OPEN_CACHE_SUMMARY="tabel" is not one of off, line, table')), sb.printed.join('\n'));
  assert.ok(sb.printed.some((l) => l.startsWith('nx-open-cache: 0 hits')), sb.printed.join('\n'));
});

test('summary table: every counter, faults grouped by reason', () => {
  assert.deepEqual(summaryMode(undefined), { mode: 'line' });
  assert.deepEqual(summaryMode(' TABLE '), { mode: 'table' });
  assert.equal(summaryMode('read').mode, 'line');
  const text = formatSummaryTable({
    hits: 4, misses: 2, stored: 2, alreadyStored: 1, refusedWrites: 3, bytesDown: 21_700, bytesUp: 1_500_000,
    cacheMillis: 1234, errorCount: 3, errors: [{ reason: 'write 1: disk full', count: 2 }, { reason: 'gone', count: 1 }],
    location: 'fs /x', mode: 'read-only', modeSource: 'ciMode (CI detected)', startedAt: '', endedAt: '', runId: 'r',
  });
  assert.deepEqual(text.split('\n'), [
    'nx-open-cache (fs /x, read-only from ciMode (CI detected))',
    '  remote hits             4',
    '  misses                  2',
    '  stored                  2',
    '  already stored          1',
    '  not stored (read-only)  3',
    '  downloaded              21.7 KB',
    '  uploaded                1.50 MB',
    '  time in cache calls     1.23 s',
    '  errors                  3',
    '  errors by reason:',
    '       2x  write 1: disk full',
    '       1x  gone',
    '  (cache faults never fail the build: affected tasks ran or were not stored)',
  ]);
});

test('CLI: summary shows the saved run, config shows the effective settings, errors are clear', async () => {
  const cli = path.join(__dirname, '..', 'lib', 'cli.js');
  const run = (/** @type {string[]} */ args) => spawnSync(process.execPath, [cli, ...args], { cwd: sb.root, encoding: 'utf8' });
  let r = run(['summary']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no run summary yet/);
  await plugin.preTasksExecution({ path: 'store' }, ctx('c'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('c'));
  r = run(['summary']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^nx-open-cache: 0 hits, 0 misses/);
  assert.equal(JSON.parse(run(['summary', '--json']).stdout).runId, 'c');
  r = run(['config']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /not in nx\.json/);
  fs.writeFileSync(path.join(sb.root, 'nx.json'), JSON.stringify({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'c', localMode: 'read-only' } }] }));
  r = run(['config']);
  assert.equal(r.status, 0, r.stderr);
  const cfg = JSON.parse(r.stdout);
  assert.equal(cfg.location, path.join(sb.root, 'c'));
  assert.equal(cfg.mode, 'read-only');
  r = run(['frobnicate']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});
