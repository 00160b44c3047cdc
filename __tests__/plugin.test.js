'use strict';
// The plugin hooks and the CLI in-process, against the real native proxy and a temp directory.

const { test, afterEach } = require('node:test');
const { hookSandbox } = require('./helpers/hook-sandbox.js');
const { sizedArtifact } = require('./helpers/hostile-tar.js');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const plugin = require('../lib/plugin.js');
const { VERSION } = require('../lib/host.js');
const native = require('../index.js');
const { formatAge, formatBytes, formatSummary, formatSummaryTable, pluginDataDir, runSummaryFile, summaryMode, summaryFile } = require('../lib/summary.js');

const VARS = [
  'NX_SELF_HOSTED_REMOTE_CACHE_SERVER',
  'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN',
  'NX_OPEN_CACHE_PROXY_URL',
  'NX_OPEN_CACHE_MODE',
  'NX_SKIP_REMOTE_CACHE',
  'NX_OPEN_CACHE_SUMMARY',
  'NX_OPEN_CACHE_HOST',
  'NX_WORKSPACE_DATA_DIRECTORY',
  'NX_OPEN_CACHE_TOKN',
  'NX_OPEN_CACHE_SIGNING_KEY',
  'NX_OPEN_CACHE_TOKEN',
  'CI',
];

/** The sandbox workspace's cache host, stopped after each test (before the sandbox is removed). */
const hostDir = () => pluginDataDir(sb.root);
afterEach(async () => {
  await native.hostStop(hostDir(), VERSION);
});

const sb = hookSandbox({ prefix: 'nxoc-plugin-', vars: VARS, nxJson: '{}' });

/** @param {string} id */
const ctx = (id, argv = [process.execPath, '/ws/node_modules/nx/bin/nx.js', 'run-many', '-t', 'build']) => ({ id, workspaceRoot: sb.root, argv });

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
  assert.equal(saved.command, 'run-many -t build');
  assert.deepEqual(JSON.parse(fs.readFileSync(runSummaryFile(sb.root, 'run-1'), 'utf8')), saved, 'the run keeps its own summary');
  await assert.rejects(fetch(`${url}/v1/cache/123`, { headers: auth }), 'the proxy is stopped');
  const host = await native.hostStatus(hostDir(), VERSION);
  assert.ok(host, 'the proxy ran in the cache host');
  assert.notEqual(host.pid, process.pid);
  assert.deepEqual(host.runs, []);
});

test('resolveRun: one resolution gives the shown configuration and the proxy; a bad option throws naming it', async () => {
  const options = { path: path.join(sb.root, 'store-run') };
  const env = { HOME: sb.root };
  const run = native.resolveRun(sb.root, options, env);
  assert.deepEqual(run.config, native.resolveConfig(sb.root, options, env));
  const proxy = run.startProxy();
  try {
    assert.match(proxy.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(proxy.location, `fs ${options.path}`);
    const res = await fetch(`${proxy.url}/v1/cache/123`, { headers: { authorization: `Bearer ${proxy.token}` } });
    assert.equal(res.status, 404);
  } finally {
    const stats = await proxy.stop();
    assert.equal(stats.misses, 1);
  }
  assert.throws(() => native.resolveRun(sb.root, { localMode: 'sometimes' }, env), /"sometimes" for option "localMode"/);
});

test('a run registered by one process is ended by another (a restarted plugin worker) with its own counters', async () => {
  await plugin.preTasksExecution({ path: 'store' }, ctx('w-1'));
  const url = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  const auth = { authorization: `Bearer ${process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN}` };
  assert.equal((await fetch(`${url}/v1/cache/5`, { method: 'PUT', headers: auth, body: 'x' })).status, 200);
  const script = `require(${JSON.stringify(require.resolve('../lib/plugin.js'))})` +
    `.postTasksExecution({}, { id: 'w-1', workspaceRoot: ${JSON.stringify(sb.root)}, argv: ['node', 'nx', 'run-many'] })`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^nx-open-cache: 0 hits, 0 misses, 1 stored, 0 B down, 1 B up, 0 errors \(fs /m);
  await assert.rejects(fetch(`${url}/v1/cache/5`, { headers: auth }), 'the proxy is stopped');
  // This process's own post for the run finds nothing left to end, and says so.
  await plugin.postTasksExecution({}, ctx('w-1'));
  assert.ok(sb.printed.some((l) => l.includes('no summary for this run')), sb.printed.join('\n'));
});

test('NX_OPEN_CACHE_HOST=off: the proxy runs in this process and no host starts', async () => {
  process.env.NX_OPEN_CACHE_HOST = 'off';
  await plugin.preTasksExecution({ path: 'store' }, ctx('h-off'));
  const url = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  assert.equal((await fetch(`${url}/v1/cache/1`)).status, 401);
  assert.equal(await native.hostStatus(hostDir(), VERSION), null);
  await plugin.postTasksExecution({ path: 'store' }, ctx('h-off'));
  assert.ok(sb.printed.some((l) => l.startsWith('nx-open-cache: 0 hits')), sb.printed.join('\n'));
  await assert.rejects(fetch(`${url}/v1/cache/1`));
});

test('auto: hooks in the Nx command itself (daemon off) run the proxy in that process, no host', async () => {
  const here = { id: 'in-nx', workspaceRoot: sb.root, argv: [...process.argv] };
  await plugin.preTasksExecution({ path: 'store' }, here);
  const url = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  assert.equal((await fetch(`${url}/v1/cache/1`)).status, 401);
  assert.equal(await native.hostStatus(hostDir(), VERSION), null, 'no host started');
  await plugin.postTasksExecution({ path: 'store' }, here);
  assert.ok(sb.printed.some((l) => l.startsWith('nx-open-cache: 0 hits')), sb.printed.join('\n'));
});

test('auto: in the daemon, whose parent may be the Nx command that started it, the host serves', async () => {
  const here = { id: 'in-daemon', workspaceRoot: sb.root, argv: [...process.argv] };
  /** @type {any} */ (globalThis).NX_DAEMON = true;
  try {
    await plugin.preTasksExecution({ path: 'store' }, here);
  } finally {
    delete (/** @type {any} */ (globalThis).NX_DAEMON);
  }
  const host = await native.hostStatus(hostDir(), VERSION);
  assert.deepEqual(host && host.runs.map((/** @type {any} */ r) => r.runId), ['in-daemon']);
  await plugin.postTasksExecution({ path: 'store' }, here);
});

test('auto: hooks in a child of the Nx command (its own plugin worker) run the proxy there on Linux', async () => {
  // This process stands in for Nx; the child for its plugin worker, which gets Nx's argv.
  const script = `const plugin = require(${JSON.stringify(require.resolve('../lib/plugin.js'))});
    const ctx = { id: 'worker', workspaceRoot: ${JSON.stringify(sb.root)}, argv: ${JSON.stringify(process.argv)} };
    (async () => {
      await plugin.preTasksExecution({ path: 'store' }, ctx);
      console.log('URL ' + process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER);
      await plugin.postTasksExecution({ path: 'store' }, ctx);
    })();`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^URL http:\/\/127\.0\.0\.1:\d+$/m);
  assert.match(r.stdout, /^nx-open-cache: 0 hits/m);
  const log = native.hostPaths(hostDir(), VERSION).log;
  assert.equal(fs.existsSync(log), process.platform !== 'linux', `a host was started: ${log}`);
});

test('no host can start (no usable data directory): the proxy runs in this process, with one notice', async () => {
  const notADir = path.join(sb.root, 'not-a-directory');
  fs.writeFileSync(notADir, '');
  process.env.NX_WORKSPACE_DATA_DIRECTORY = notADir;
  await plugin.preTasksExecution({ path: 'store' }, ctx('h-none'));
  const url = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  const auth = { authorization: `Bearer ${process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN}` };
  assert.equal((await fetch(`${url}/v1/cache/1`, { headers: auth })).status, 404);
  const notices = sb.printed.filter((l) => l.includes('cannot use the cache host'));
  assert.equal(notices.length, 1, sb.printed.join('\n'));
  assert.match(notices[0], /this run's proxy runs in this process/);
  await plugin.postTasksExecution({ path: 'store' }, ctx('h-none'));
  assert.ok(sb.printed.some((l) => l.startsWith('nx-open-cache: 0 hits, 1 miss')), sb.printed.join('\n'));
});

test('an Nx without run ids: every run keeps its proxy until the last ends, which reports them all', async () => {
  const noId = { workspaceRoot: sb.root };
  await plugin.preTasksExecution({ path: 'store' }, noId);
  const first = { url: process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, token: process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN };
  await plugin.preTasksExecution({ path: 'store' }, noId);
  const second = { url: process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, token: process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN };
  assert.notEqual(first.url, second.url);
  for (const [i, p] of [first, second].entries()) {
    const r = await fetch(`${p.url}/v1/cache/${i}`, { method: 'PUT', headers: { authorization: `Bearer ${p.token}` }, body: sizedArtifact(200, i) });
    assert.equal(r.status, 200);
  }
  await plugin.postTasksExecution({}, noId);
  assert.ok(sb.printed.some((l) => l.includes('1 other Nx run(s) in this workspace still use the cache')), sb.printed.join('\n'));
  const r = await fetch(`${first.url}/v1/cache/1`, { headers: { authorization: `Bearer ${first.token}` } });
  assert.equal(r.status, 200, 'the first run still serves');
  // The last run still has its proxy's address for its artifact metadata (the first run's end
  // forgot only its own): the meta of the task it stored is written.
  const stored = { id: 'x:build', target: { project: 'x', target: 'build' }, hash: '1', cache: true, startTime: 1, endTime: 5 };
  await plugin.postTasksExecution({}, { ...noId, taskResults: { 'x:build': { task: stored, status: 'success', code: 0 } } });
  assert.ok(sb.printed.some((l) => /^nx-open-cache: 1 hit, 0 misses, 2 stored/.test(l)), sb.printed.join('\n'));
  const merged = JSON.parse(fs.readFileSync(summaryFile(sb.root), 'utf8'));
  assert.equal(merged.runs, 2);
  assert.equal(merged.metaWrites, 1, JSON.stringify(merged));
  // A run that stayed out ends nobody's run.
  await plugin.preTasksExecution({ path: 'store' }, noId);
  const third = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
  process.env.NX_SKIP_REMOTE_CACHE = 'true';
  await plugin.preTasksExecution({ path: 'store' }, noId);
  await plugin.postTasksExecution({}, noId);
  assert.equal((await fetch(`${third}/v1/cache/1`)).status, 401, 'the registered run still serves');
  delete process.env.NX_SKIP_REMOTE_CACHE;
  await plugin.postTasksExecution({}, noId);
  await assert.rejects(fetch(`${third}/v1/cache/1`));
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
  await plugin.postTasksExecution({ path: 'store', ciMode: 'no-cache' }, ctx('s3'));
  assert.ok(sb.printed.some((l) => l.includes('remote cache not used (fs ') && l.endsWith('no-cache from ciMode (CI detected))')), sb.printed.join('\n'));
  assert.ok(!fs.existsSync(path.join(sb.root, 'store')), 'nothing created');
});

test('a wrong option throws before anything starts, naming option, value and choices', async () => {
  await assert.rejects(plugin.preTasksExecution({ backend: 'nope' }, ctx('e1')), (/** @type {Error} */ e) => {
    assert.match(e.message, /invalid value "nope" for option "backend": expected one of "fs"/);
    return true;
  });
  await assert.rejects(plugin.preTasksExecution({ localMode: 'read' }, ctx('e2')), /"localMode".*"read-write", "read-only", "no-cache"/);
  await assert.rejects(plugin.preTasksExecution({ pth: 'x' }, ctx('e3')), /unknown option "pth" in the nx-open-cache plugin options \(did you mean "path"\?\)/);
  process.env.NX_OPEN_CACHE_MODE = 'ro';
  await assert.rejects(plugin.preTasksExecution({}, ctx('e4')), /NX_OPEN_CACHE_MODE/);
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, undefined);
});

test('config warnings are printed in every run, before it starts: an unknown variable, a signing key that is not trusted', async () => {
  const signer = native.keygen();
  const other = native.keygen();
  process.env.NX_OPEN_CACHE_TOKN = 'typo-value';
  process.env.NX_OPEN_CACHE_SIGNING_KEY = signer.secretKey;
  const options = { path: 'store', trustedKeys: [other.publicKey] };
  for (const id of ['w1', 'w2']) {
    await plugin.preTasksExecution(options, ctx(id));
    await plugin.postTasksExecution(options, ctx(id));
  }
  const warnings = sb.printed.filter((l) => l.startsWith('nx-open-cache: warning: '));
  const unknown = 'nx-open-cache: warning: unknown environment variable NX_OPEN_CACHE_TOKN (ignored): did you mean NX_OPEN_CACHE_TOKEN?';
  const untrusted = `nx-open-cache: warning: NX_OPEN_CACHE_SIGNING_KEY signs with key ${signer.keyId}, but "trustedKeys" lists ${other.keyId}: other machines will refuse what this one signs (this one trusts its own key); add the public key of ${signer.keyId} to "trustedKeys" (\`nx-open-cache keygen\` printed it with the secret key), or set NX_OPEN_CACHE_SIGNING_KEY to the secret key of a listed public key`;
  // Once per run: both in the first run, both again in the second.
  assert.deepEqual(warnings, [unknown, untrusted, unknown, untrusted]);
  // The summary names the keys by id.
  const line = sb.printed.find((l) => l.startsWith('nx-open-cache: 0 hits'));
  assert.match(String(line), new RegExp(`signs with key ${signer.keyId}, trusts ${other.keyId}`), sb.printed.join('\n'));
  assert.ok(!sb.printed.join('\n').includes(signer.secretKey) && !sb.printed.join('\n').includes('typo-value'));
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
  assert.equal(formatBytes(21_700), '21.2 KiB');
  assert.equal(formatBytes(1_500_000), '1.4 MiB');
  assert.equal(formatBytes(4 * 2 ** 30), '4 GiB', 'the native formatter (src/units.rs), as serve and gc show sizes');
  const text = formatSummary({
    hits: 1, misses: 2, stored: 0, alreadyStored: 1, refusedWrites: 0, bytesDown: 10, bytesUp: 0,
    cacheMillis: 3, errorCount: 3, errors: [{ reason: 'write 1: disk full', count: 2, skipped: false }, { reason: 'gone', count: 1, skipped: false }],
    refusedCount: 0, routineCount: 0, refusals: [], metaReads: 0, metaWrites: 0, events: [], eventsDropped: 0,
    location: 'fs /x', mode: 'read-write', modeSource: 'default', startedAt: '', endedAt: '', runId: 'r',
  });
  const lines = text.split('\n');
  assert.equal(lines[0], 'nx-open-cache: 1 hit, 2 misses, 0 stored, 1 already stored, 10 B down, 0 B up, 2 errors (3 requests) (fs /x, read-write)');
  assert.equal(lines[1], '  ! write 1: disk full: 2 requests');
  assert.equal(lines[2], '  ! gone: 1 request');
});

test('summary line: a lasting cause says once that the store was skipped; routine refusals are one clause, not errors', () => {
  const base = {
    hits: 0, misses: 4, stored: 0, alreadyStored: 0, refusedWrites: 0, bytesDown: 0, bytesUp: 0, cacheMillis: 0, metaReads: 0, metaWrites: 0, events: [], eventsDropped: 0,
    location: 's3 acme-nx-cahce (us-east-1)', mode: 'read-write', modeSource: 'default', startedAt: '', endedAt: '', runId: 'r',
  };
  const skipped = formatSummary({
    ...base, errorCount: 8, errors: [{ reason: 'S3 bucket acme-nx-cahce does not exist', count: 8, skipped: true }],
    refusedCount: 0, routineCount: 0, refusals: [],
  });
  assert.deepEqual(skipped.split('\n'), [
    'nx-open-cache: 0 hits, 4 misses, 0 stored, 0 B down, 0 B up, 1 error (8 requests) (s3 acme-nx-cahce (us-east-1), read-write)',
    '  ! S3 bucket acme-nx-cahce does not exist: 8 requests, store skipped for this run',
    '  (cache faults never fail the build: affected tasks ran or were not stored)',
  ]);
  const routine = formatSummary({
    ...base, misses: 3, stored: 3, errorCount: 0, errors: [], refusedCount: 0, routineCount: 3,
    refusals: [{ reason: 'unsigned, replaced by this signing run', count: 3, hashes: ['1', '2', '3'], routine: true }],
  });
  assert.deepEqual(routine.split('\n'), [
    'nx-open-cache: 0 hits, 3 misses, 3 stored, 0 B down, 0 B up, 0 errors, 3 routine (unsigned, replaced by this signing run) (s3 acme-nx-cahce (us-east-1), read-write)',
  ]);
  const table = formatSummaryTable({
    ...base, misses: 3, stored: 3, errorCount: 0, errors: [], refusedCount: 0, routineCount: 3,
    refusals: [{ reason: 'unsigned, replaced by this signing run', count: 3, hashes: ['1', '2', '3'], routine: true }],
  });
  assert.ok(!table.includes('errors by cause'), table);
  assert.match(table, /^ {2}routine \(each a miss, not an error\):\n {7}3x {2}unsigned, replaced by this signing run$/m);
});

test('500 requests through the real proxy with two fault causes: the summary stays a handful of lines', async () => {
  // An upstream Nx-protocol server that answers every lookup 404, and fails uploads two ways.
  const upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.method !== 'PUT') return res.writeHead(404).end();
      if (Number(String(req.url).split('/').pop()) % 2 === 0) return res.writeHead(413).end('too large');
      return res.writeHead(500).end('internal error');
    });
  });
  await new Promise((resolve) => upstream.listen(0, '127.0.0.1', () => resolve(undefined)));
  try {
    const address = /** @type {import('node:net').AddressInfo} */ (upstream.address());
    const options = { backend: 'http', url: `http://127.0.0.1:${address.port}` };
    process.env.NX_OPEN_CACHE_TOKEN = 'upstream-token';
    await plugin.preTasksExecution(options, ctx('five-hundred'));
    const url = process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
    const auth = { authorization: `Bearer ${process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN}` };
    for (let i = 0; i < 250; i++) {
      assert.equal((await fetch(`${url}/v1/cache/${1000 + i}`, { headers: auth })).status, 404);
      assert.equal((await fetch(`${url}/v1/cache/${1000 + i}`, { method: 'PUT', headers: auth, body: 'x' })).status, 403);
    }
    await plugin.postTasksExecution(options, ctx('five-hundred'));
    const start = sb.printed.findIndex((l) => l.startsWith('nx-open-cache: 0 hits'));
    assert.ok(start >= 0, sb.printed.join('\n'));
    const lines = sb.printed.slice(start).join('\n').split('\n');
    assert.ok(lines.length <= 6, `at most 6 lines:\n${lines.join('\n')}`);
    assert.match(lines[0], /^nx-open-cache: 0 hits, 250 misses, 0 stored, 0 B down, 0 B up, 2 errors \(250 requests\) \(http /);
    assert.equal(lines.filter((l) => l.startsWith('  ! ')).length, 2, lines.join('\n'));
    assert.ok(lines.every((l) => !/\b1\d{3}\b/.test(l)), `no hash in the summary:\n${lines.join('\n')}`);
    assert.ok(lines.some((l) => l.endsWith(': 125 requests')), lines.join('\n'));
  } finally {
    await new Promise((resolve) => upstream.close(() => resolve(undefined)));
  }
});

test('a no-cache run writes its own summary: mode, zero counts, "remote cache not used"', async () => {
  await plugin.preTasksExecution({ path: 'store' }, ctx('cached'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('cached'));
  process.env.NX_OPEN_CACHE_MODE = 'no-cache';
  sb.printed.length = 0;
  await plugin.preTasksExecution({ path: 'store' }, ctx('uncached'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('uncached'));
  const s = JSON.parse(fs.readFileSync(summaryFile(sb.root), 'utf8'));
  assert.equal(s.runId, 'uncached');
  assert.equal(s.mode, 'no-cache');
  assert.equal(s.modeSource, 'NX_OPEN_CACHE_MODE');
  assert.deepEqual([s.hits, s.misses, s.stored, s.errorCount], [0, 0, 0, 0]);
  assert.equal(s.command, 'run-many -t build');
  assert.ok(fs.existsSync(runSummaryFile(sb.root, 'uncached')), 'the run has its own file');
  assert.deepEqual(sb.printed, [`nx-open-cache: remote cache not used (fs ${path.join(sb.root, 'store')}, no-cache from NX_OPEN_CACHE_MODE)`]);
});

test('runs the plugin stays out of write their own summary with the reason, printed once at their start', async () => {
  await plugin.preTasksExecution({ path: 'store' }, ctx('cached2'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('cached2'));
  const cases = /** @type {[string, string[] | undefined, Record<string, string>, string][]} */ ([
    ['skip', ['nx', 'run-many', '-t', 'build', '--skip-remote-cache'], {}, 'remote cache skipped (--skip-remote-cache): not starting'],
    ['skipenv', undefined, { NX_SKIP_REMOTE_CACHE: 'true' }, 'remote cache skipped (NX_SKIP_REMOTE_CACHE): not starting'],
    ['server', undefined, { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: 'http://127.0.0.1:1' }, 'NX_SELF_HOSTED_REMOTE_CACHE_SERVER is already set (http://127.0.0.1:1)'],
  ]);
  for (const [id, argv, env, note] of cases) {
    Object.assign(process.env, env);
    sb.printed.length = 0;
    await plugin.preTasksExecution({ path: 'store' }, argv ? ctx(id, argv) : ctx(id));
    await plugin.postTasksExecution({ path: 'store' }, argv ? ctx(id, argv) : ctx(id));
    for (const k of Object.keys(env)) delete process.env[k];
    const s = JSON.parse(fs.readFileSync(summaryFile(sb.root), 'utf8'));
    assert.equal(s.runId, id, 'the run has its own summary, not the older one');
    assert.equal(s.mode, 'stayed out');
    assert.ok(s.note.startsWith(note), s.note);
    assert.deepEqual([s.hits, s.misses, s.stored, s.errorCount], [0, 0, 0, 0]);
    assert.ok(fs.existsSync(runSummaryFile(sb.root, id)));
    assert.ok(!sb.printed.some((l) => l.startsWith('nx-open-cache: 0 hits')), sb.printed.join('\n'));
    assert.equal(require('../lib/summary.js').formatSummary(s), `nx-open-cache: ${s.note}`);
  }
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
    cacheMillis: 1234, errorCount: 3, errors: [{ reason: 'write 1: disk full', count: 2, skipped: false }, { reason: 'gone', count: 1, skipped: true }],
    refusedCount: 0, routineCount: 0, refusals: [], metaReads: 0, metaWrites: 0, events: [], eventsDropped: 0,
    location: 'fs /x', mode: 'read-only', modeSource: 'ciMode (CI detected)', startedAt: '', endedAt: '', runId: 'r',
  });
  assert.deepEqual(text.split('\n'), [
    'nx-open-cache (fs /x, read-only from ciMode (CI detected))',
    '  remote hits             4',
    '  misses                  2',
    '  stored                  2',
    '  already stored          1',
    '  not stored (read-only)  3',
    '  downloaded              21.2 KiB',
    '  uploaded                1.4 MiB',
    '  time in cache calls     1.23 s',
    '  errors                  2 (3 requests)',
    '  errors by cause (requests):',
    '       2x  write 1: disk full',
    '       1x  gone (store skipped for this run)',
    '  (cache faults never fail the build: affected tasks ran or were not stored)',
  ]);
});

test('CLI: summary shows the saved run, config shows the effective settings, errors are clear', async () => {
  const cli = path.join(__dirname, '..', 'lib', 'cli.js');
  const run = (/** @type {string[]} */ args) => spawnSync(process.execPath, [cli, ...args], { cwd: sb.root, encoding: 'utf8' });
  let r = run(['summary']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no run summary yet: no Nx run in this workspace has ended with the plugin/);
  await plugin.preTasksExecution({ path: 'store' }, ctx('c'));
  await plugin.postTasksExecution({ path: 'store' }, ctx('c'));
  r = run(['summary']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^nx-open-cache: 0 hits, 0 misses/);
  assert.match(r.stdout, /^ {2}\(nx run-many -t build, ended just now at \d{4}-\d\d-\d\dT[\d:.]+Z\)$/m);
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
  await plugin.preTasksExecution({ path: 'store' }, ctx('cli-host'));
  r = run(['host']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^nx-open-cache host: pid \d+, version /);
  assert.match(r.stdout, /run cli-host: fs .* \(read-write\), Nx command (running|unknown|gone), last cache request \d+ s ago/);
  assert.equal(JSON.parse(run(['host', '--json']).stdout).runs[0].runId, 'cli-host');
  r = run(['host', 'stop']);
  assert.match(r.stdout, /the cache host stopped/);
  await plugin.postTasksExecution({ path: 'store' }, ctx('cli-host'));
  r = run(['host']);
  assert.match(r.stdout, /no cache host running/);
  r = run(['frobnicate']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /unknown command "frobnicate"/);
});

test('summary age: just now, minutes, hours, days', () => {
  const now = Date.parse('2026-11-27T10:00:00Z');
  assert.equal(formatAge('2026-11-27T09:59:30Z', now), 'just now');
  assert.equal(formatAge('2026-11-27T09:58:00Z', now), '2 min ago');
  assert.equal(formatAge('2026-11-27T07:00:00Z', now), '3 h ago');
  assert.equal(formatAge('2026-11-26T09:00:00Z', now), '1 day ago');
  assert.equal(formatAge('2026-11-20T10:00:00Z', now), '7 days ago');
  assert.equal(formatAge('not a time', now), undefined);
});
