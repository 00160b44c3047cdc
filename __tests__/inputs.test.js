'use strict';
/**
 * lib/inputs.js: reading fileset node keys, and the capture's choices (Nx's file map first, the
 * disk when it is missing or stale, `exact` only when Nx's node hash is reproduced, one capture per
 * node hash). The node hashes here are computed the way Nx does; why.e2e.test.js checks that
 * formula against Nx itself on a real workspace.
 */

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const addon = require('../index.js');
const { captureFilesets, filesForMeta, metaFiles, metaFilesRun, parseFilesetKey, splitGlobs, readFileset } = require('../lib/inputs.js');

test('splitGlobs keeps commas inside braces and groups', () => {
  assert.deepEqual(splitGlobs('a/**/*.{ts,tsx},!a/**/*.spec.ts'), ['a/**/*.{ts,tsx}', '!a/**/*.spec.ts']);
  assert.deepEqual(splitGlobs('!**/?(*.)+(spec|test).[jt]s?(x)?(.snap),**/*'), ['!**/?(*.)+(spec|test).[jt]s?(x)?(.snap)', '**/*']);
  assert.deepEqual(splitGlobs(''), []);
});

test('parseFilesetKey reads project and workspace filesets, and nothing else', () => {
  assert.deepEqual(parseFilesetKey('lib-a:packages/lib-a/**/*'), { kind: 'project', project: 'lib-a', globs: ['packages/lib-a/**/*'] });
  assert.deepEqual(parseFilesetKey('lib-a:packages/lib-a/**/*,!packages/lib-a/**/*.spec.ts'),
    { kind: 'project', project: 'lib-a', globs: ['packages/lib-a/**/*', '!packages/lib-a/**/*.spec.ts'] });
  assert.deepEqual(parseFilesetKey('workspace:[{workspaceRoot}/nx.json,!{workspaceRoot}/docs/**,tools/x.js]'),
    { kind: 'workspace', globs: ['nx.json', '!docs/**'] }, 'entries without {workspaceRoot}/ are ignored, as Nx does');
  assert.deepEqual(parseFilesetKey('@acme/a:b:libs/a/**/*', ['@acme/a', '@acme/a:b']), { kind: 'project', project: '@acme/a:b', globs: ['libs/a/**/*'] });
  for (const key of ['lib-a:ProjectConfiguration', 'lib-a:TsConfig', 'env:FOO', 'npm:react', 'AllExternalDependencies', 'runtime:node -v', 'lib-a:build']) {
    assert.equal(parseFilesetKey(key), undefined, key);
  }
});

/**
 * A workspace on disk (no Nx): files, and the file map Nx would write for them.
 * @param {Record<string, string>} files
 */
function workspace(files) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-inputs-'));
  for (const [f, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), c);
  }
  const all = addon.hashFiles(root, []).files.map((f) => ({ file: f.path, hash: f.hash }));
  const fileMap = {
    projectFileMap: { 'lib-a': all.filter((f) => f.file.startsWith('libs/a/')) },
    nonProjectFiles: all.filter((f) => !f.file.startsWith('libs/a/')),
  };
  const writeMap = () => {
    fs.mkdirSync(path.join(root, '.nx', 'workspace-data'), { recursive: true });
    fs.writeFileSync(path.join(root, '.nx', 'workspace-data', 'file-map.json'), JSON.stringify({ version: '6.0', fileMap }));
  };
  return { root, fileMap, writeMap, historyDir: path.join(root, '.nx', 'workspace-data', 'nx-open-cache', 'history') };
}

/** Nx's hash of project files (hash then path) and workspace files (path then hash). */
const projectHash = (/** @type {{ file: string, hash: string }[]} */ fs) => addon.hashArray([fs.map((f) => f.hash + f.file).join('')]);
const workspaceHash = (/** @type {{ file: string, hash: string }[]} */ fs) => addon.hashArray([fs.map((f) => f.file + f.hash).join('')]);

/** No deadline that a loaded test machine could reach. */
const SLOW = { deadlineMs: 600_000 };

/**
 * The counts of a capture, without the list of files it wrote.
 * @param {{ written?: unknown }} r
 */
function counts(r) {
  const { written, ...rest } = r;
  assert.ok(Array.isArray(written));
  return rest;
}

/** @param {Record<string, string>} nodes */
function results(nodes) {
  return { 'lib-a:build': { task: { hashDetails: { command: '1', nodes, implicitDeps: {}, runtime: {} } } } };
}

test('captureFilesets: the file map\'s hashes (what Nx hashed), exact, one capture per node hash', async (t) => {
  const w = workspace({ 'libs/a/src/a.ts': 'a', 'libs/a/src/a.spec.ts': 's', 'libs/a/project.json': '{}', 'nx.json': '{}', 'tools/b.js': 'b' });
  t.after(() => fs.rmSync(w.root, { recursive: true, force: true }));
  w.writeMap();
  const own = w.fileMap.projectFileMap['lib-a'].filter((f) => !f.file.endsWith('.spec.ts'));
  const wsFiles = w.fileMap.nonProjectFiles.filter((f) => f.file === 'nx.json');
  const nodes = {
    'lib-a:libs/a/**/*,!libs/a/**/*.spec.ts': projectHash(own),
    'workspace:[{workspaceRoot}/nx.json,{workspaceRoot}/.nxignore]': workspaceHash(wsFiles),
    'env:FOO': '123',
    'lib-a:ProjectConfiguration': '456',
  };
  // The file changes on disk after Nx hashed it: the file map's hash is kept (Nx's view).
  fs.writeFileSync(path.join(w.root, 'libs/a/src/a.ts'), 'changed after hashing');
  const first = await captureFilesets(w.root, results(nodes), w.historyDir, SLOW);
  assert.deepEqual(counts(first), { nodes: 2, stored: 2, exact: 2, skipped: 0 });
  const rec = readFileset(w.historyDir, nodes['lib-a:libs/a/**/*,!libs/a/**/*.spec.ts']);
  assert.ok(rec);
  assert.equal(rec.exact, true);
  assert.equal(rec.source, 'file-map');
  assert.deepEqual(Object.keys(rec.files), ['libs/a/project.json', 'libs/a/src/a.ts']);
  assert.equal(rec.files['libs/a/src/a.ts'], own.find((f) => f.file === 'libs/a/src/a.ts')?.hash);
  // Seen before: nothing is read again (not the file map, not the disk).
  fs.writeFileSync(path.join(w.root, '.nx', 'workspace-data', 'file-map.json'), 'not json');
  fs.rmSync(path.join(w.root, 'libs'), { recursive: true });
  assert.deepEqual(counts(await captureFilesets(w.root, results(nodes), w.historyDir, SLOW)), { nodes: 2, stored: 0, exact: 0, skipped: 0 });
  // For the artifact's metadata: by task or by hashDetails, the history dir defaulting to the workspace's.
  const meta = filesForMeta(w.root, results(nodes)['lib-a:build'].task);
  assert.deepEqual(Object.keys(meta).sort(), ['lib-a:libs/a/**/*,!libs/a/**/*.spec.ts', 'workspace:[{workspaceRoot}/nx.json,{workspaceRoot}/.nxignore]']);
  assert.deepEqual(filesForMeta(w.root, results(nodes)['lib-a:build'].task.hashDetails, w.historyDir), meta);
});

test('captureFilesets: without a file map, the disk; a hash it cannot reproduce is kept with exact false', async (t) => {
  const w = workspace({ 'libs/a/src/a.ts': 'a', 'libs/a/b.ts': 'b' });
  t.after(() => fs.rmSync(w.root, { recursive: true, force: true }));
  const files = w.fileMap.projectFileMap['lib-a'];
  const good = projectHash(files);
  const r = await captureFilesets(w.root, {
    x: { task: { hashDetails: { nodes: { 'lib-a:libs/a/**/*': good, 'lib-a:libs/a/src/*': '999', 'lib-a:libs/a/[': '998' } } } },
  }, w.historyDir, SLOW);
  // '[' is an invalid glob: that value is skipped, never a failure.
  assert.deepEqual(counts(r), { nodes: 3, stored: 2, exact: 1, skipped: 1 });
  assert.equal(readFileset(w.historyDir, good)?.source, 'disk');
  const stale = readFileset(w.historyDir, '999');
  assert.equal(stale?.exact, false);
  assert.deepEqual(stale?.files, { 'libs/a/src/a.ts': files.find((f) => f.file === 'libs/a/src/a.ts')?.hash });
});

test('steady state: a run whose fileset values are all stored costs one existsSync per node', async (t) => {
  const w = workspace({ 'libs/a/x.ts': 'x' });
  t.after(() => fs.rmSync(w.root, { recursive: true, force: true }));
  fs.mkdirSync(path.join(w.historyDir, 'filesets'), { recursive: true });
  /** @type {Record<string, any>} */ const taskResults = {};
  for (let i = 0; i < 500; i++) {
    /** @type {Record<string, string>} */ const nodes = { [`p${i}:libs/p${i}/**/*`]: String(1000 + i), 'workspace:[{workspaceRoot}/nx.json]': '7', [`p${(i + 1) % 500}:libs/p${(i + 1) % 500}/**/*`]: String(1000 + ((i + 1) % 500)), 'env:X': '1' };
    taskResults[`p${i}:build`] = { task: { hashDetails: { nodes } } };
  }
  for (const h of ['7', ...Array.from({ length: 500 }, (_, i) => String(1000 + i))]) {
    fs.writeFileSync(path.join(w.historyDir, 'filesets', `${h}.json`), '{}');
  }
  const started = process.hrtime.bigint();
  const r = await captureFilesets(w.root, taskResults, w.historyDir, SLOW);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.deepEqual(counts(r), { nodes: 501, stored: 0, exact: 0, skipped: 0 });
  t.diagnostic(`500 tasks, 501 fileset values all stored: ${ms.toFixed(1)} ms`);
});

test('captureFilesets: keys that keep {projectRoot} (Nx 20) are resolved from the tasks\' roots; a whole project needs no walk', async (t) => {
  const w = workspace({ 'libs/a/src/a.ts': 'a', 'libs/a/project.json': '{}' });
  t.after(() => fs.rmSync(w.root, { recursive: true, force: true }));
  w.writeMap();
  const hash = projectHash(w.fileMap.projectFileMap['lib-a']);
  // All of the project's files: taken from the file map without walking the disk (gone here).
  fs.rmSync(path.join(w.root, 'libs'), { recursive: true });
  const r = await captureFilesets(w.root, {
    'lib-a:build': { task: { target: { project: 'lib-a' }, projectRoot: 'libs/a', hashDetails: { nodes: { 'lib-a:{projectRoot}/**/*': hash, 'lib-z:{projectRoot}/**/*': '5' } } } },
  }, w.historyDir, SLOW);
  // lib-z's root is known neither from the tasks nor from a project graph: skipped.
  assert.deepEqual(counts(r), { nodes: 2, stored: 1, exact: 1, skipped: 1 });
  assert.deepEqual(Object.keys(readFileset(w.historyDir, hash)?.files ?? {}), ['libs/a/project.json', 'libs/a/src/a.ts']);
});

test('captureFilesets: bounded by a deadline and a count; what it leaves is captured by the next run; it reports what it wrote', async (t) => {
  const w = workspace({ 'libs/a/src/a.ts': 'a', 'libs/a/b.ts': 'b' });
  t.after(() => fs.rmSync(w.root, { recursive: true, force: true }));
  const files = w.fileMap.projectFileMap['lib-a'];
  const tasks = { x: { task: { hashDetails: { nodes: { 'lib-a:libs/a/**/*': projectHash(files), 'lib-a:libs/a/src/*': '999' } } } } };
  // The deadline already passed: no walk starts, nothing is stored (so nothing is wrongly "seen").
  const none = await captureFilesets(w.root, tasks, w.historyDir, { deadlineMs: 0 });
  assert.deepEqual(none, { nodes: 2, stored: 0, exact: 0, skipped: 2, written: [] });
  // At most one new value per run.
  const one = await captureFilesets(w.root, tasks, w.historyDir, { ...SLOW, maxNew: 1 });
  assert.deepEqual(counts(one), { nodes: 2, stored: 1, exact: 1, skipped: 1 });
  // The next run captures the rest; `written` names each file with its size on disk.
  const rest = await captureFilesets(w.root, tasks, w.historyDir, SLOW);
  assert.deepEqual(counts(rest), { nodes: 2, stored: 1, exact: 0, skipped: 0 });
  for (const f of [...one.written, ...rest.written]) {
    assert.equal(fs.statSync(path.join(w.historyDir, 'filesets', `${f.hash}.json`)).size, f.bytes);
  }
  assert.deepEqual([...one.written, ...rest.written].map((f) => f.hash).sort(), [projectHash(files), '999'].sort());
});

test('metaFiles: each value read once per run, inexact lists named, a byte budget for the run', async (t) => {
  const w = workspace({ 'libs/a/src/a.ts': 'a', 'libs/a/b.ts': 'b' });
  t.after(() => fs.rmSync(w.root, { recursive: true, force: true }));
  const files = w.fileMap.projectFileMap['lib-a'];
  const nodes = { 'lib-a:libs/a/**/*': projectHash(files), 'lib-a:libs/a/src/*': '999', 'env:X': '1' };
  await captureFilesets(w.root, { x: { task: { hashDetails: { nodes } } } }, w.historyDir, SLOW);
  const run = metaFilesRun(w.root, w.historyDir);
  const first = metaFiles(run, { nodes });
  assert.deepEqual(Object.keys(first.files).sort(), ['lib-a:libs/a/**/*', 'lib-a:libs/a/src/*']);
  assert.deepEqual(first.inexact, ['lib-a:libs/a/src/*']);
  // Read once: removed from disk, still there for the next task of the run.
  fs.rmSync(path.join(w.historyDir, 'filesets'), { recursive: true });
  assert.deepEqual(metaFiles(run, { nodes }), first);
  // The budget: a run that may carry only the first list's bytes gets no more.
  const fresh = metaFilesRun(w.root, w.historyDir, 0);
  assert.deepEqual(metaFiles(fresh, { nodes }), { files: {}, inexact: [] });
});
