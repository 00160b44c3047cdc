'use strict';
/**
 * lib/why.js without Nx: the ranking and wording of differing inputs, the choice of the earlier run,
 * and the messages when there is nothing to compare. Real Nx data: why.e2e.test.js.
 */

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { compareInputs, explainAgainstMeta, explainFromHistory, formatExplanation, historyRuns, nearestIds, WhyError } = require('../lib/why.js');
const { historyDir } = require('../lib/history.js');
const { clean } = require('../lib/text.js');

const none = () => undefined;
const ctx = { task: 'lib-b:build', project: 'lib-b', projects: ['lib-a', 'lib-b'] };

test('causes come most likely first, in plain words', () => {
  const before = {
    command: '1',
    nodes: {
      AllExternalDependencies: '1', 'npm:react': '1', 'env:FOO': '1', 'runtime:node -v': '1', 'lib-b:ProjectConfiguration': '1',
      'lib-a:packages/lib-a/**/*': '1', 'lib-b:packages/lib-b/**/*': '1', 'workspace:[{workspaceRoot}/nx.json]': '1', 'lib-b:TsConfig': '1', 'env:OLD': '1',
    },
    implicitDeps: { 'lib-c': '1' },
  };
  const now = {
    command: '2',
    nodes: { ...Object.fromEntries(Object.keys(before.nodes).filter((k) => k !== 'env:OLD').map((k) => [k, '2'])), 'env:NEW': '2' },
    implicitDeps: { 'lib-c': '2' },
  };
  const causes = compareInputs(ctx, { inputs: now, lookup: none }, { inputs: before, lookup: none });
  assert.deepEqual(causes.map((c) => c.kind), [
    'command', 'files', 'env', 'env', 'env', 'runtime', 'project-configuration', 'dependency-files', 'external', 'lockfile', 'workspace-files', 'tsconfig', 'implicit',
  ]);
  const text = causes.map((c) => c.text);
  assert.ok(text.includes('environment variable FOO changed value'));
  assert.ok(text.includes('environment variable NEW is a new input'));
  assert.ok(text.includes('environment variable OLD is no longer an input'));
  assert.ok(text.includes('files of lib-a (a dependency of lib-b) changed (which files: not recorded for either run)'));
  assert.ok(text.includes('external dependency react changed (its version in the lockfile)'));
  assert.ok(text.includes('dependencies in the lockfile changed'));
  assert.ok(text.includes('implicit dependency lib-c changed'));
});

test('file lists: per file, and a list that could not be checked is said to be so', () => {
  /** @type {Record<string, { files: Record<string, string>, exact: boolean }>} */
  const values = {
    1: { files: { 'packages/lib-b/a.ts': '1', 'packages/lib-b/gone.ts': '1' }, exact: true },
    2: { files: { 'packages/lib-b/a.ts': '2', 'packages/lib-b/new.ts': '1' }, exact: false },
  };
  const lookup = (/** @type {string} */ _k, /** @type {string} */ h) => values[h];
  const causes = compareInputs(ctx, { inputs: { nodes: { 'lib-b:packages/lib-b/**/*': '2' } }, lookup }, { inputs: { nodes: { 'lib-b:packages/lib-b/**/*': '1' } }, lookup });
  assert.deepEqual(causes[0].files, { added: ['packages/lib-b/new.ts'], removed: ['packages/lib-b/gone.ts'], changed: ['packages/lib-b/a.ts'], exact: false });
  const text = formatExplanation({
    format: 'nx-open-cache-why', version: 1, task: 'lib-b:build', miss: { hash: '9', runId: 'r2' },
    baseline: { source: 'history', runId: 'r1', startedAt: new Date().toISOString(), hash: '8', outcome: 'stored' },
    identical: false, causes, notes: ["some file lists could not be checked against Nx's hash of them: files shown may be incomplete"],
  });
  assert.match(text, /1\. files of lib-b changed:\n {7}changed {2}packages\/lib-b\/a\.ts\n {7}added {4}packages\/lib-b\/new\.ts\n {7}removed {2}packages\/lib-b\/gone\.ts/);
  assert.match(text, /note: some file lists could not be checked/);
});

test('many external dependencies changed are one cause naming them', () => {
  const names = ['a', 'b', 'c', 'd', 'e'];
  const nodes = (/** @type {string} */ v) => Object.fromEntries(names.map((n) => [`npm:${n}`, v]));
  const causes = compareInputs(ctx, { inputs: { nodes: nodes('2') }, lookup: none }, { inputs: { nodes: nodes('1') }, lookup: none });
  assert.equal(causes.length, 1);
  assert.equal(causes[0].text, '5 external dependencies changed (their versions in the lockfile): a, b, c and 2 more');
});

test('nearest task ids: a project\'s tasks, else the closest by spelling', () => {
  const known = ['app-c:build', 'lib-a:build', 'lib-a:test', 'lib-b:build'];
  assert.deepEqual(nearestIds('lib-a', known), ['lib-a:build', 'lib-a:test']);
  assert.deepEqual(nearestIds('lib-a:biuld', known), ['lib-a:build', 'lib-b:build']);
  assert.deepEqual(nearestIds('zzzzzzzzzzzz:zzzz', known), []);
});

/**
 * A workspace root whose run history holds these runs (a run is its tasks, or the record's fields
 * with `tasks`), read through lib/history.js like the command reads it.
 * @param {any[]} runs
 */
function history(runs) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-why-'));
  const runsDir = path.join(historyDir(dir), 'runs');
  fs.mkdirSync(runsDir, { recursive: true });
  runs.forEach((r, i) => {
    const startedAt = new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString();
    const fields = Array.isArray(r) ? { tasks: r } : r;
    fs.writeFileSync(path.join(runsDir, `${String(Date.parse(startedAt)).padStart(13, '0')}-r${i}.json`), JSON.stringify({
      format: 'nx-open-cache-history', version: 1, runId: `r${i}`, startedAt, command: 'run-many -t build', ...fields,
    }));
  });
  fs.writeFileSync(path.join(runsDir, 'foreign.json'), 'not a run');
  return dir;
}

/** @param {string} hash @param {string} outcome @param {Record<string, string>} nodes */
const task = (hash, outcome, nodes) => ({ id: 'lib-a:build', project: 'lib-a', hash, outcome, inputs: { command: '1', nodes } });

test('the closest earlier artifact: fewest differing inputs, the latest of equals; identical inputs said so', (t) => {
  const dir = history([
    [task('1', 'stored', { 'env:A': '1', 'env:B': '1' })],
    [task('2', 'remote-hit', { 'env:A': '2', 'env:B': '2' })],
    [task('3', 'not-stored', { 'env:A': '1', 'env:B': '3' })],
    [task('1', 'failed', { 'env:A': '1', 'env:B': '1' })],
  ]);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // r2 (B changed) against r0 (one input apart), not the later r1 (two apart).
  const e = explainFromHistory(dir, 'lib-a:build', { runId: 'r2' }).explanation;
  assert.equal(e?.baseline.runId, 'r0');
  assert.deepEqual(e?.causes.map((c) => c.text), ['environment variable B changed value']);
  // r3: the same hash as r0's stored artifact: nothing changed, the artifact was not found.
  const same = explainFromHistory(dir, 'lib-a:build').explanation;
  assert.equal(same?.miss.runId, 'r3');
  assert.equal(same?.identical, true);
  assert.match(same?.notes[0] ?? '', /the inputs are identical: the artifact of that run was not found/);
  assert.match(formatExplanation(/** @type {any} */ (same)), /No input changed\./);
  assert.throws(() => explainFromHistory(dir, 'lib-a:build', { runId: 'r1' }), (e) => e instanceof WhyError && /did not miss in run r1: restored from the remote cache/.test(e.message));
});

test('explainAgainstMeta refuses what is not artifact metadata, naming what it got', () => {
  const miss = task('2', 'stored', { 'env:A': '2' });
  assert.throws(() => explainAgainstMeta(miss, { format: 'other', version: 1 }, none), /not artifact metadata of format nx-open-cache-meta version 1 \(format "other", version 1\)/);
  const meta = { format: 'nx-open-cache-meta', version: 1, task: 'lib-a:build', hash: '1', inputs: { command: '1', nodes: { 'env:A': '1' } } };
  assert.deepEqual(explainAgainstMeta(miss, meta, none).causes.map((c) => c.name), ['A']);
});

test('--run takes a run id or the run file name (with or without .json)', (t) => {
  const dir = history([[task('1', 'stored', { 'env:A': '1' })], [task('2', 'not-stored', { 'env:A': '2' })], [task('1', 'remote-hit', { 'env:A': '1' })]]);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const runs = historyRuns(dir);
  assert.deepEqual(runs.map((r) => r.runId), ['r0', 'r1', 'r2']);
  const file = /** @type {string} */ (runs[1].file);
  assert.ok(fs.existsSync(path.join(historyDir(dir), 'runs', file)), file);
  for (const want of ['r1', file, file.replace(/\.json$/, '')]) {
    assert.equal(explainFromHistory(dir, 'lib-a:build', { runId: want }).explanation?.miss.runId, 'r1', want);
  }
  assert.throws(() => explainFromHistory(dir, 'lib-a:build', { runId: 'r9' }), /no run "r9" in the history \(latest: r2\)/);
});

test('a file named toString or constructor that was added is "added", not "changed"', () => {
  /** @type {Record<string, { files: Record<string, string>, exact: boolean }>} */
  const values = {
    1: { files: { 'a.ts': '1' }, exact: true },
    2: { files: { 'a.ts': '1', toString: '1', constructor: '1' }, exact: true },
  };
  const lookup = (/** @type {string} */ _k, /** @type {string} */ h) => values[h];
  const key = 'lib-b:packages/lib-b/**/*';
  let causes = compareInputs(ctx, { inputs: { nodes: { [key]: '2' } }, lookup }, { inputs: { nodes: { [key]: '1' } }, lookup });
  assert.deepEqual(causes[0].files, { added: ['constructor', 'toString'], removed: [], changed: [], exact: true });
  causes = compareInputs(ctx, { inputs: { nodes: { [key]: '1' } }, lookup }, { inputs: { nodes: { [key]: '2' } }, lookup });
  assert.deepEqual(causes[0].files, { added: [], removed: ['constructor', 'toString'], changed: [], exact: true });
  // An input named like an Object.prototype member is an input like any other.
  causes = compareInputs(ctx, { inputs: { nodes: { 'env:A': '1' }, runtime: { toString: '1' } }, lookup: none }, { inputs: { nodes: { 'env:A': '1' } }, lookup: none });
  assert.deepEqual(causes.map((c) => [c.kind, c.change]), [['runtime', 'added']]);
});

test('a meta file list is exact only when the meta says so (inexact names the others; none said: an older writer)', () => {
  const key = 'lib-a:packages/lib-a/**/*';
  const miss = { ...task('2', 'stored', { [key]: '2' }), runId: 'r1' };
  const mine = () => ({ files: { 'packages/lib-a/a.ts': '2' }, exact: true });
  const base = { format: 'nx-open-cache-meta', version: 1, task: 'lib-a:build', hash: '1', inputs: { command: '1', nodes: { [key]: '1' } }, files: { [key]: { 'packages/lib-a/a.ts': '1' } } };
  let e = explainAgainstMeta(miss, { ...base, inexact: [] }, mine);
  assert.equal(e.causes[0].files?.exact, true);
  assert.deepEqual(e.notes, []);
  e = explainAgainstMeta(miss, { ...base, inexact: [key] }, mine);
  assert.equal(e.causes[0].files?.exact, false);
  assert.deepEqual(e.notes, ["some file lists could not be checked against Nx's hash of them: files shown may be incomplete"]);
  e = explainAgainstMeta(miss, base, mine);
  assert.equal(e.causes[0].files?.exact, false);
  assert.match(e.notes.join('\n'), /files shown may be incomplete/);
  assert.match(e.notes.join('\n'), /the metadata does not say which of its file lists were checked \(written by an older nx-open-cache\)/);
  assert.match(formatExplanation(e), /note: some file lists could not be checked/);
});

test('the closest earlier artifact in the miss\'s cache location first; another location or mode is named', (t) => {
  const dir = history([
    { location: 'fs /mnt/a', mode: 'read-write', tasks: [task('1', 'stored', { 'env:A': '1', 'env:B': '1' })] },
    { location: 'fs /mnt/b', mode: 'read-write', tasks: [task('3', 'stored', { 'env:A': '1', 'env:B': '2' })] },
    { location: 'fs /mnt/a', mode: 'read-only', tasks: [task('4', 'not-stored', { 'env:A': '2', 'env:B': '2' })] },
    { location: 'fs /mnt/c', mode: 'read-write', tasks: [task('5', 'not-stored', { 'env:A': '2', 'env:B': '2' })] },
  ]);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // r2 is one input from r1 (location b) and two from r0 (location a, its own): r0 is the baseline.
  const e = explainFromHistory(dir, 'lib-a:build', { runId: 'r2' }).explanation;
  assert.equal(e?.baseline.runId, 'r0');
  assert.equal(e?.baseline.source === 'history' && e.baseline.location, 'fs /mnt/a');
  assert.deepEqual(e?.notes, ["the earlier run used the cache in mode read-write, the miss's run in mode read-only"]);
  // r3 (location c): no artifact there; the closest elsewhere (r1), with both locations named.
  const f = explainFromHistory(dir, 'lib-a:build', { runId: 'r3' }).explanation;
  assert.equal(f?.baseline.runId, 'r1');
  assert.deepEqual(f?.notes, ["the earlier run used the cache at fs /mnt/b, the miss's run the cache at fs /mnt/c: an artifact stored there cannot be found here"]);
  assert.match(formatExplanation(/** @type {any} */ (f)), /note: the earlier run used the cache at fs \/mnt\/b/);
});

test('values from a cache\'s metadata or the history cannot drive the terminal: control characters are shown as ?', () => {
  assert.equal(clean('a\u001b]52;c;aGk=\u0007b\r\n\u009b31m\u2028'), 'a?]52;c;aGk=?b???31m?');
  assert.equal(clean('x'.repeat(400)).length, 300);
  assert.equal(clean('abcdef', 4), 'abc…');
  assert.equal(clean({ toString: () => '\u001b' }), '?');
  const key = 'lib-a:packages/lib-a/**/*';
  const miss = { ...task('2', 'stored', { [key]: '2' }), runId: 'r1\u001b[2J' };
  const meta = {
    format: 'nx-open-cache-meta', version: 1, task: 'lib-a:build', hash: '1', inexact: [],
    host: 'ci\u001b]0;pwned\u0007', storedAt: '2026-01-01\u001b[31m', runId: { not: 'a string' },
    inputs: { command: '1', nodes: { [key]: '1' } }, files: { [key]: { 'packages/lib-a/\u001b[1mx.ts': '1' } },
  };
  const e = explainAgainstMeta(miss, meta, () => ({ files: {}, exact: true }));
  assert.equal(e.baseline.source === 'meta' && e.baseline.runId, undefined);
  const text = formatExplanation(e);
  assert.doesNotMatch(text, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
  assert.match(text, /stored by ci\?\]0;pwned\? at 2026-01-01\?\[31m \(hash 1/);
  assert.match(text, /missed in run r1\?\[2J/);
  assert.match(text, /removed {2}packages\/lib-a\/\?\[1mx\.ts/);
});

test('history --tasks shows a producer host from a cache\'s metadata terminal-safe', (t) => {
  const { historyCommand } = require('../lib/history.js');
  const dir = history([[{ ...task('1', 'remote-hit', { 'env:A': '1' }), durationMs: 10, producer: { durationMs: 2000, host: 'ci\u001b]0;pwned\u0007\u001b[2J' } }]]);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  /** @type {string[]} */ const out = [];
  t.mock.method(console, 'log', (/** @type {string} */ s) => out.push(s));
  assert.equal(historyCommand(dir, ['--tasks']), 0);
  t.mock.restoreAll();
  const line = out.find((l) => l.includes('lib-a:build'));
  assert.match(line ?? '', /produced in 2\.0 s on ci\?\]0;pwned\?\?\[2J/);
  assert.doesNotMatch(out.join('\n'), /[\u001b\u0007]/);
});

test('--against a hash from the history says when no run is known to have left its artifact, and names another location', async (t) => {
  const { whyCommand } = require('../lib/why.js');
  const dir = history([
    { location: 'fs /mnt/b', tasks: [task('1', 'stored', { 'env:A': '1' })] },
    { location: 'fs /mnt/a', tasks: [task('3', 'not-stored', { 'env:A': '3' })] },
    { location: 'fs /mnt/a', tasks: [task('2', 'not-stored', { 'env:A': '2' })] },
  ]);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  /** @type {string[]} */ const out = [];
  t.mock.method(console, 'log', (/** @type {string} */ s) => out.push(s));
  assert.equal(await whyCommand(dir, ['lib-a:build', '--against', '3', '--json']), 0);
  assert.equal(await whyCommand(dir, ['lib-a:build', '--against', '1', '--json']), 0);
  t.mock.restoreAll();
  const [three, one] = out.map((s) => JSON.parse(s));
  assert.equal(three.baseline.runId, 'r1');
  assert.deepEqual(three.notes, ['in run r1 the task ran, not stored with this hash: no run in the history is known to have left its artifact in the cache']);
  assert.equal(one.baseline.runId, 'r0');
  assert.deepEqual(one.notes, ["the earlier run used the cache at fs /mnt/b, the miss's run the cache at fs /mnt/a: an artifact stored there cannot be found here"]);
  assert.deepEqual(one.causes.map((/** @type {any} */ c) => c.text), ['environment variable A changed value']);
});
