'use strict';
// `nx-open-cache report`: the figures from synthetic histories in the SPEC format (lib/history.js's
// run record), hostile strings, empty and partial histories, corrupt files, and the command's
// options. The real-browser checks are in report-browser.test.js.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { syntheticHistory, writeHistory, expectedFigures } = require('./helpers/report-history.js');
const { buildReport, changedInputs, describeInput } = require('../lib/report/model.js');
const { readHistoryRuns } = require('../lib/report/history.js');
const { renderHtml } = require('../lib/report/html.js');
const { renderText } = require('../lib/report/text.js');
const { openerFor, useColor } = require('../lib/report.js');

const CLI = path.join(__dirname, '..', 'lib', 'cli.js');
const NOW = new Date('2026-12-01T00:00:00Z');

/** @type {string[]} */
const temps = [];
test.after(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

/** A temporary workspace (an nx.json) and its plugin data dir. */
function workspace() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-report-'));
  temps.push(root);
  fs.writeFileSync(path.join(root, 'nx.json'), '{}');
  return { root, dataDir: path.join(root, '.nx', 'workspace-data', 'nx-open-cache') };
}

/**
 * Runs the CLI in `cwd`.
 * @param {string} cwd @param {string[]} args @param {NodeJS.ProcessEnv} [env]
 */
function cli(cwd, args, env = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd, encoding: 'utf8', timeout: 60_000,
    env: { ...process.env, NX_WORKSPACE_DATA_DIRECTORY: '', NO_COLOR: '', COLUMNS: '', ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A run record with only the required fields, plus `extra`.
 * @param {number} i @param {any[]} tasks @param {Record<string, unknown>} [extra]
 */
function run(i, tasks, extra = {}) {
  return {
    format: 'nx-open-cache-history', version: 1, runId: `r${i}`,
    startedAt: new Date(Date.parse('2026-11-01T00:00:00Z') + i * 3_600_000).toISOString(), tasks, ...extra,
  };
}

/**
 * @param {string} id @param {string} outcome @param {Record<string, string>} nodes @param {Record<string, unknown>} [extra]
 */
function task(id, outcome, nodes, extra = {}) {
  const inputs = { command: 'c1', nodes, implicitDeps: {}, runtime: {} };
  return { id, project: id.split(':')[0], target: id.split(':')[1], hash: JSON.stringify(inputs), cacheable: true, outcome, inputs, ...extra };
}

test('the figures match the history: hits, lookups, time saved, per project', () => {
  const runs = syntheticHistory();
  const m = buildReport(runs, { workspace: 'ws', now: NOW });
  const want = expectedFigures(runs);
  assert.equal(m.totals.runs, runs.length);
  assert.equal(m.totals.hits, want.hits);
  assert.equal(m.totals.lookups, want.lookups);
  assert.equal(m.totals.savedMs, want.savedMs);
  assert.ok(want.hits > 0 && want.hits < want.lookups, 'the fixture has hits and misses');
  assert.equal(m.totals.hitRate, want.hits / want.lookups);
  assert.equal(m.projects.length, want.projects.size);
  for (const p of m.projects) {
    const w = want.projects.get(p.name);
    assert.ok(w, p.name);
    assert.deepEqual({ hits: p.hits, misses: p.misses, savedMs: p.savedMs }, w, p.name);
  }
  // Per target: the same lookups split differently.
  assert.equal(m.targets.reduce((s, t) => s + t.lookups, 0), want.lookups);
  assert.equal(m.runs.length, runs.length);
  assert.equal(m.runs.reduce((s, r) => s + r.hits, 0), want.hits);
  // Errors by reason: the fixture's two runs with S3 timeouts, 6 + 2 requests.
  const timeouts = m.problems.find((p) => p.kind === 'cache error');
  assert.equal(timeouts?.count, 8);
  assert.equal(m.totals.cacheErrors, 8);
});

test('the tasks that miss most name the input that changed most often, and misses with unchanged inputs', () => {
  const files = (/** @type {number} */ v) => ({ 'a:packages/a/**/*': `f${v}`, 'env:NODE_ENV': 'prod', 'npm:react': '18' });
  const runs = [
    run(0, [task('a:build', 'stored', files(1))]),
    run(1, [task('a:build', 'stored', files(2))]), // a file changed
    run(2, [task('a:build', 'remote-hit', files(2), { savedMs: 1000 })]),
    run(3, [task('a:build', 'stored', { ...files(3), 'env:NODE_ENV': 'dev' })]), // files + env
    run(4, [task('a:build', 'not-stored', { ...files(3), 'env:NODE_ENV': 'dev' }, { reason: 'read-only' })]),
    run(5, [task('a:build', 'stored', { ...files(3), 'env:NODE_ENV': 'dev' })]), // same hash again: not available
    run(6, [task('b:test', 'stored', { x: '1' }), task('a:build', 'not-run', {})]),
  ];
  const m = buildReport(runs, { workspace: 'ws', now: NOW });
  const a = m.missing.find((r) => r.task === 'a:build');
  assert.ok(a);
  assert.equal(a.misses, 5);
  assert.equal(a.lookups, 6, 'not-run is not a lookup');
  // Misses 1..5 compared with the record before each (the first has nothing before it).
  assert.equal(a.compared, 4);
  assert.equal(a.unchanged, 2, 'runs 4 and 5 had the same hash as the record before');
  assert.deepEqual(a.topInput, { key: 'a:packages/a/**/*', label: 'a files (packages/a/**/*)', count: 2 });
  assert.equal(a.otherInputs, 1, 'env:NODE_ENV changed once');
  const b = m.missing.find((r) => r.task === 'b:test');
  assert.equal(b?.compared, 0);
  assert.equal(b?.topInput, null);
  assert.equal(m.missing[0].task, 'a:build', 'most misses first');
  assert.equal(m.totals.notRun, 1);
  assert.deepEqual(m.problems.map((p) => [p.kind, p.reason, p.count]), [['not stored', 'read-only', 1]]);
});

test('changed inputs: nodes added, removed and changed, the command, runtime and implicit deps', () => {
  const a = { id: 'x', inputs: { command: 'c1', nodes: { k1: '1', k2: '2', gone: '3' }, runtime: { 'node -v': 'v1' }, implicitDeps: {} } };
  const b = { id: 'x', inputs: { command: 'c2', nodes: { k1: '1', k2: '9', added: '4' }, runtime: { 'node -v': 'v2' }, implicitDeps: { 'tools/x': 'h' } } };
  assert.deepEqual(changedInputs(a, b), ['added', 'command', 'gone', 'implicitDep:tools/x', 'k2', 'runtime:node -v']);
  assert.equal(changedInputs(a, { id: 'x' }), undefined, 'no inputs: not compared');
  // A key named like an Object.prototype member is an ordinary key.
  assert.deepEqual(changedInputs({ id: 'x', inputs: { nodes: { constructor: '1' } } }, { id: 'x', inputs: { nodes: {} } }), ['constructor']);
  assert.equal(describeInput('npm:react'), 'npm package react');
  assert.equal(describeInput('env:CI'), 'environment variable CI');
  assert.equal(describeInput('lib-a:TsConfig'), 'lib-a tsconfig paths');
  assert.equal(describeInput('AllExternalDependencies'), 'external dependencies (the lockfile)');
  assert.equal(describeInput('workspace:[{workspaceRoot}/tools/build.js]'), 'workspace files [{workspaceRoot}/tools/build.js]');
});

const HOSTILE_ID = '<script>window.__pwned=1</script>:build';
const HOSTILE_REASON = '"><img src=x onerror="window.__pwned=2"> & \u001b[31mred\u001b[0m';

/** A history whose strings try to break out of the page and the terminal. */
function hostileRuns() {
  return [
    run(0, [
      task(HOSTILE_ID, 'refused', { '</td><script>x</script>': '1' }, { project: '__proto__', target: '<b>t</b>', reason: HOSTILE_REASON, bytes: 10 }),
      task('constructor:build', 'stored', { k: '1' }, { bytes: 5 }),
    ], { command: '</title><script>window.__pwned=3</script>', runId: '"><svg onload=alert(1)>' }),
    run(1, [
      task(HOSTILE_ID, 'stored', { '</td><script>x</script>': '2' }, { project: '__proto__', target: '<b>t</b>', bytes: 12 }),
      task('constructor:build', 'remote-hit', { k: '1' }, { savedMs: 500, bytes: 5 }),
    ], { cache: { errors: [{ reason: '<iframe src="http://example.com">', count: 2 }] } }),
  ];
}

test('hostile strings are escaped in the HTML and made harmless in the text', () => {
  const m = buildReport(hostileRuns(), { workspace: '<ws onload=x>', now: NOW });
  assert.deepEqual(m.projects.map((p) => p.name).sort(), ['__proto__', 'constructor']);
  const html = renderHtml(m, { version: 'test' });
  assert.doesNotMatch(html, /<script/i, 'no script element at all');
  assert.doesNotMatch(html, /<img|<iframe|<svg onload|<b>|<ws /i);
  assert.match(html, /&lt;script&gt;window.__pwned=1&lt;\/script&gt;:build/);
  assert.match(html, /&quot;&gt;&lt;img src=x onerror=&quot;window.__pwned=2&quot;&gt; &amp; \ufffd\[31mred/);
  assert.match(html, /&lt;iframe src=&quot;http:\/\/example.com&quot;&gt;/);
  assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
  const text = renderText(m, { width: 100, color: false });
  assert.doesNotMatch(text, /\u001b/, 'no escape sequence from the history reaches the terminal');
  assert.match(text, /\?\[31mred/);
  assert.match(text, /<script>window.__pwned=1<\/script>:build/, 'text shows the id as it is');
});

test('the HTML is self-contained: no URL to load, no script', () => {
  const m = buildReport(syntheticHistory({ runs: 6 }), { workspace: 'ws', now: NOW });
  const html = renderHtml(m, { version: 'test' });
  assert.doesNotMatch(html, /<script|<link|<img|<iframe|@import|url\(/i);
  assert.doesNotMatch(html, /\s(src|href)=/i);
  assert.doesNotMatch(html, /https?:\/\//, 'no URL at all (the SVG namespace is implied in HTML)');
  assert.match(html, /<svg class="chart"/);
  assert.doesNotMatch(html, /NaN|undefined|Infinity/);
});

test('runs without optional fields and tasks with only an id and a status', () => {
  const runs = [
    run(0, [{ id: 'a:build', status: 'success' }, { id: 'b', status: 'remote-cache' }, { id: 'c:lint' }]),
    run(1, [{ id: 'a:build', status: 'local-cache' }, { id: 'a:test', outcome: 'failed', savedMs: 'lots', bytes: -5, durationMs: NaN }], { endedAt: 'never', cache: { errors: 'no' } }),
  ];
  const m = buildReport(runs, { workspace: 'ws', now: NOW });
  assert.equal(m.totals.tasks, 5);
  assert.equal(m.totals.lookups, 4, 'c:lint has no outcome and no status: not run');
  assert.equal(m.totals.hits, 2);
  assert.equal(m.totals.failed, 1);
  assert.equal(m.totals.savedMs, 0, 'no hit recorded a saved time');
  assert.equal(m.totals.bytesDown + m.totals.bytesUp, 0, 'a negative byte count is not a count');
  assert.equal(m.runs[1].durationMs, null);
  assert.deepEqual(m.projects.map((p) => p.name).sort(), ['a', 'b']);
  assert.deepEqual(m.targets.map((p) => p.name).sort(), ['(no target)', 'build', 'test']);
  const html = renderHtml(m, { version: 't' });
  assert.match(html, /data-total="hit-rate"><div class="label">hit rate<\/div><div class="value">50.0%/);
  assert.match(renderText(m), /hit rate 50.0% \(2 of 4\),\s+1 remote hit, 1 local hit/);
});

test('corrupt and foreign files are ignored with one notice; the good runs make the report', () => {
  const { root, dataDir } = workspace();
  const dir = writeHistory(dataDir, syntheticHistory({ runs: 3 }));
  fs.writeFileSync(path.join(dir, '1700000000000-broken.json'), '{"format": "nx-open-cache-history", "vers');
  fs.writeFileSync(path.join(dir, '1700000000001-other.json'), JSON.stringify({ format: 'something-else', version: 1, tasks: [] }));
  fs.writeFileSync(path.join(dir, '1700000000002-v2.json'), JSON.stringify({ ...run(0, []), version: 2 }));
  fs.writeFileSync(path.join(dir, '1700000000003-array.json'), '[]');
  fs.writeFileSync(path.join(dir, '1700000000004-tasks.json'), JSON.stringify({ ...run(0, []), tasks: {} }));
  fs.writeFileSync(path.join(dir, '1700000000005-nulltasks.json'), JSON.stringify(run(0, [null, 3, { id: 7 }, { id: 'ok:build', outcome: 'stored' }])));
  fs.writeFileSync(path.join(dir, 'README.txt'), 'not a run');
  fs.mkdirSync(path.join(dir, '1700000000006-dir.json'));

  const read = readHistoryRuns(dataDir);
  assert.equal(read.ignored.length, 0, 'files are read as the runs are iterated');
  const runs = [...read.runs];
  assert.equal(runs.length, 3);
  assert.equal(read.ignored.length, 7);
  // lib/history.js's rule (isRunRecord, as its readRuns): a run with a task that is not an object
  // with a string id, hash and outcome is left out whole.
  assert.deepEqual(read.ignored.find((x) => x.file.endsWith('-nulltasks.json'))?.reason, 'a task is not an object with a string id, hash and outcome');
  assert.deepEqual(runs.map((x) => x.runId), ['run-0', 'run-1', 'run-2'], 'in start order');

  const r = cli(root, ['report']);
  assert.equal(r.code, 0, r.stderr);
  const notices = r.stderr.trim().split('\n');
  assert.equal(notices.length, 1, r.stderr);
  assert.match(notices[0], /ignored 7 files in .*runs that are not a history run \(1700000000000-broken\.json: not valid JSON\)/);
  const out = path.join(dataDir, 'report.html');
  assert.equal(r.stdout.trim(), `nx-open-cache: report of 3 runs written to ${out}`);
  assert.match(fs.readFileSync(out, 'utf8'), /3 runs/);
});

test('no history yet: a clear message, exit 1, nothing written', () => {
  const { root, dataDir } = workspace();
  const r = cli(root, ['report']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no history yet: no Nx run with the plugin has been recorded in .*history[/\\]runs: run an Nx command/);
  assert.equal(fs.existsSync(path.join(dataDir, 'report.html')), false);
  const off = cli(root, ['report', '--text'], { NX_OPEN_CACHE_HISTORY: 'off' });
  assert.equal(off.code, 1);
  assert.match(off.stderr, /NX_OPEN_CACHE_HISTORY is off here/);
  // An empty runs directory is the same.
  fs.mkdirSync(path.join(dataDir, 'history', 'runs'), { recursive: true });
  assert.equal(cli(root, ['report', '--json']).code, 1);
});

test('--out, --runs, --json, --text and the data directory', () => {
  const { root } = workspace();
  const dataDir = path.join(root, 'custom-data', 'nx-open-cache');
  const runs = syntheticHistory({ runs: 12 });
  writeHistory(dataDir, runs);
  const env = { NX_WORKSPACE_DATA_DIRECTORY: 'custom-data' };

  const def = cli(root, ['report'], env);
  assert.equal(def.code, 0, def.stderr);
  assert.match(def.stdout, new RegExp(`written to ${path.join(dataDir, 'report.html').replace(/[\\.]/g, '\\$&')}`));

  const out = cli(root, ['report', '--out', 'out/r.html', '--runs', '5'], env);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /report of 5 runs written to .*out[/\\]r\.html/);
  assert.match(fs.readFileSync(path.join(root, 'out', 'r.html'), 'utf8'), /<!DOCTYPE html>/);

  const json = cli(root, ['report', '--json', '--runs', '4'], env);
  assert.equal(json.code, 0, json.stderr);
  const m = JSON.parse(json.stdout);
  assert.equal(m.totals.runs, 4);
  assert.equal(m.runs[0].runId, runs[8].runId, 'the last 4 runs');
  assert.equal(m.totals.hits, expectedFigures(runs.slice(8)).hits);

  const text = cli(root, ['report', '--text'], { ...env, COLUMNS: '60' });
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stderr, '');
  assert.doesNotMatch(text.stdout, /\u001b/, 'no color when stdout is not a terminal');
  for (const line of text.stdout.trimEnd().split('\n')) assert.ok([...line].length <= 60, `wider than 60: ${JSON.stringify(line)}`);
  assert.match(text.stdout, /^nx-open-cache report: /);
  assert.match(text.stdout, /Time saved per project/);
  assert.match(text.stdout, /Tasks that miss most/);

  for (const bad of ['0', '-1', 'abc', '1.5']) {
    const r = cli(root, ['report', `--runs=${bad}`], env);
    assert.equal(r.code, 1, bad);
    assert.match(r.stderr, /--runs .* is not a whole number of runs/);
  }
  assert.match(cli(root, ['report', '--bogus'], env).stderr, /unknown option "--bogus" for report/);
  assert.match(cli(root, ['report', '--text', '--json'], env).stderr, /choose one/);
  assert.match(cli(root, ['report', '--help'], env).stdout, /Usage: nx-open-cache report/);
  assert.match(cli(root, ['help']).stdout, /report \[--out <file>\]/);
});

test('colors only on a TTY without NO_COLOR, and the text has them then', () => {
  const tty = /** @type {any} */ ({ isTTY: true });
  assert.equal(useColor(tty, {}), true);
  assert.equal(useColor(tty, { NO_COLOR: '1' }), false);
  assert.equal(useColor(tty, { TERM: 'dumb' }), false);
  assert.equal(useColor(/** @type {any} */ ({ isTTY: false }), {}), false);
  const m = buildReport(syntheticHistory({ runs: 4 }), { workspace: 'ws', now: NOW });
  assert.match(renderText(m, { color: true }), /\u001b\[1m/);
  assert.doesNotMatch(renderText(m, { color: false }), /\u001b/);
});

test('--open runs the platform opener with the file, and says where the file is when it cannot', { skip: process.platform === 'win32' }, () => {
  assert.deepEqual(openerFor('/r.html', 'darwin'), ['open', ['/r.html']]);
  assert.deepEqual(openerFor('/r.html', 'linux'), ['xdg-open', ['/r.html']]);
  assert.deepEqual(openerFor('C:\\a b\\r.html', 'win32'), ['cmd', ['/d', '/s', '/c', '"start "" "C:\\a b\\r.html""']]);
  const { root, dataDir } = workspace();
  writeHistory(dataDir, syntheticHistory({ runs: 2 }));
  const bin = path.join(root, 'bin');
  fs.mkdirSync(bin);
  const opened = path.join(root, 'opened.txt');
  const opener = process.platform === 'darwin' ? 'open' : 'xdg-open';
  fs.writeFileSync(path.join(bin, opener), `#!/bin/sh\nprintf '%s' "$1" > '${opened}'\n`, { mode: 0o755 });
  const r = cli(root, ['report', '--open'], { PATH: `${bin}:${path.dirname(process.execPath)}` });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.readFileSync(opened, 'utf8'), path.join(dataDir, 'report.html'));
  assert.equal(r.stderr, '');

  const failing = path.join(root, 'failing');
  fs.mkdirSync(failing);
  fs.writeFileSync(path.join(failing, opener), '#!/bin/sh\nexit 3\n', { mode: 0o755 });
  const f = cli(root, ['report', '--open'], { PATH: `${failing}:${path.dirname(process.execPath)}` });
  assert.equal(f.code, 0);
  assert.match(f.stderr, new RegExp(`cannot open a browser \\(${opener} exited with 3\\): open .*report\\.html yourself`));

  const empty = path.join(root, 'empty');
  fs.mkdirSync(empty);
  const n = cli(root, ['report', '--open'], { PATH: empty });
  assert.equal(n.code, 0);
  assert.match(n.stderr, new RegExp(`cannot open a browser \\(${opener} is not installed\\): open .*report\\.html yourself`));
});

test('a large history is read and rendered within bounds', () => {
  // 300 runs of 21 tasks: the tables stay at their row limits and the page at a bounded size.
  const runs = syntheticHistory({ runs: 300, seed: 3 });
  const m = buildReport(runs, { workspace: 'ws', now: NOW });
  assert.equal(m.runs.length, 300);
  assert.ok(m.missing.length <= 12 && m.artifacts.length <= 12);
  const html = renderHtml(m, { version: 't' });
  assert.ok(html.length < 400_000, `${html.length} characters`);
  assert.equal((html.match(/<circle /g) || []).length, 0, 'no point markers beyond 80 runs');
});

test('one run draws one column; runs that looked nothing up draw no chart', () => {
  const one = buildReport([run(0, [task('a:build', 'remote-hit', { k: '1' }, { savedMs: 65_000 })])], { workspace: 'ws', now: NOW });
  const html = renderHtml(one, { version: 't' });
  assert.equal((html.match(/<circle /g) || []).length, 1);
  assert.match(html, /<div class="value">100%<\/div>/);
  assert.match(html, /<div class="value">1.1 min<\/div>/);
  assert.doesNotMatch(renderHtml(one, { version: 't' }), /NaN|undefined|Infinity/);

  const none = buildReport([run(0, [{ id: 'a:build', outcome: 'not-run' }]), run(1, [])], { workspace: 'ws', now: NOW });
  const page = renderHtml(none, { version: 't' });
  assert.match(page, /No run looked anything up in the cache yet/);
  assert.match(page, /<div class="value">-<\/div>/, 'no hit rate without lookups');
  assert.doesNotMatch(page, /NaN|undefined|Infinity/);
  const text = renderText(none);
  assert.match(text, /hit rate - \(0 of 0\)/);
  assert.doesNotMatch(text, /NaN|undefined|Infinity/);
});

test('the problems table shows the most frequent reasons only, and says how many more', () => {
  const { TOP } = require('../lib/report/model.js');
  // Reasons with per-object detail: one reason per task.
  const tasks = Array.from({ length: TOP + 5 }, (_, i) => task(`lib-${i}:build`, 'refused', { a: '1' }, { reason: `object packages/lib-${i}/x is too large`, bytes: 10 }));
  tasks.push(task('lib-0:test', 'refused', { a: '1' }, { reason: 'object packages/lib-0/x is too large' }));
  const m = buildReport([run(0, tasks)], { workspace: 'ws', now: NOW });
  assert.equal(m.problems.length, TOP);
  assert.equal(m.problemsMore, 5);
  assert.equal(m.problems[0].reason, 'object packages/lib-0/x is too large', 'most frequent first');
  assert.equal(m.problems[0].count, 2);
  const text = renderText(m);
  assert.match(text, /\n {2}and 5 more reasons$/);
  assert.equal(text.split('\n').filter((l) => / refused: object /.test(l)).length, TOP);
  const html = renderHtml(m, { version: 'test' });
  assert.match(html, /<p class="more">and 5 more reasons<\/p>/);
  const few = buildReport([run(0, tasks.slice(0, 2))], { workspace: 'ws', now: NOW });
  assert.equal(few.problemsMore, 0);
  assert.doesNotMatch(renderText(few), /more reason/);
});
