'use strict';
/**
 * `nx-open-cache why` on a real Nx workspace (nx 24): real `taskResults` from Nx's
 * postTasksExecution, real file maps, real hashes.
 *
 * The run records are written in the run history's format (lib/history.js writes them in the
 * plugin) by a small local plugin of the test workspace, from the `taskResults` Nx hands it; it
 * calls the installed nx-open-cache's `captureFilesets` as the plugin does. A task Nx ran
 * and cached is recorded as `stored` (Nx kept its artifact), a restore as `local-hit`.
 *
 * What it shows: a change to one source file of lib-a makes `why lib-a:build` name exactly that
 * file, and `why lib-b:build` (lib-b depends on lib-a) name it as lib-a's file; an env input change
 * is named by the variable's name (its values appear nowhere); a command (overrides) and a project
 * configuration change are named as such; the captured file lists give Nx's own node hashes
 * (checked with Nx's native hasher); an artifact's metadata from "machine A" explains a miss on
 * "machine B" through explainAgainstMeta; the plugin itself keeps the file lists (its wiring).
 */

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { createWorkspace, disposePack, REPO_ROOT } = require('./helpers/nx-workspace.js');
const { explainAgainstMeta, historyFiles, historyRuns, whyCommand } = require('../lib/why.js');
const { filesForMeta, parseFilesetKey } = require('../lib/inputs.js');

const OFF = { NX_DAEMON: 'false', NX_OPEN_CACHE_HOST: 'off' };
const CLI = path.join(REPO_ROOT, 'lib', 'cli.js');

/** The local plugin that writes history run records from Nx's taskResults. */
const WRITER = `'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { captureFilesets } = require('nx-open-cache/lib/inputs.js');
const OUTCOMES = { success: 'stored', failure: 'failed', 'local-cache': 'local-hit', 'local-cache-kept-existing': 'local-hit', 'remote-cache': 'remote-hit' };
module.exports = {
  name: 'history-writer',
  async postTasksExecution(_options, context) {
    const dataDir = process.env.NX_WORKSPACE_DATA_DIRECTORY || path.join(context.workspaceRoot, '.nx', 'workspace-data');
    const historyDir = path.join(dataDir, 'nx-open-cache', 'history');
    await captureFilesets(context.workspaceRoot, context.taskResults, historyDir);
    const tasks = Object.values(context.taskResults).filter((r) => r.task.cache).map(({ task, status, code }) => ({
      id: task.id, project: task.target.project, target: task.target.target, configuration: task.target.configuration ?? null,
      hash: task.hash, cacheable: true, status, code, outcome: OUTCOMES[status] || 'not-run',
      durationMs: task.endTime - task.startTime, inputs: task.hashDetails,
    }));
    // Nx 20 gives no run id, start or end time.
    const start = context.startTime ?? Date.now();
    const runId = context.id ?? String(start);
    const run = { format: 'nx-open-cache-history', version: 1, runId, startedAt: new Date(start).toISOString(),
      endedAt: new Date(context.endTime ?? Date.now()).toISOString(), command: (context.argv || []).slice(2).join(' '), nxVersion: '24.0.6',
      location: 'local', mode: 'read-write', cache: {}, savedMs: 0, tasks };
    fs.mkdirSync(path.join(historyDir, 'runs'), { recursive: true });
    fs.writeFileSync(path.join(historyDir, 'runs', String(start).padStart(13, '0') + '-' + runId + '.json'), JSON.stringify(run));
  },
};
`;

/** @type {import('./helpers/nx-workspace.js').NxWorkspace} */
let ws;
let historyDir = '';

before(async () => {
  ws = await createWorkspace();
  historyDir = path.join(ws.root, '.nx', 'workspace-data', 'nx-open-cache', 'history');
  const file = path.join(ws.root, 'tools', 'history-writer', 'index.js');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, WRITER);
  // lib-a's build takes no forwarded arguments: an override changes its command hash only.
  editProject('lib-a', (j) => { j.targets.build.options.forwardAllArgs = false; });
  write('packages/lib-a/src/old.txt', 'removed later\n');
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/**
 * @param {string} project
 * @param {(j: any) => void} edit
 */
function editProject(project, edit) {
  const dir = /** @type {{ dir: string }} */ (ws.projects.find((p) => p.name === project)).dir;
  const file = path.join(ws.root, dir, 'project.json');
  const j = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(j);
  fs.writeFileSync(file, `${JSON.stringify(j, null, 2)}\n`);
}

/** @param {'writer' | 'plugin'} which */
function usePlugins(which) {
  const nxJson = ws.readNxJson();
  nxJson.plugins = which === 'writer'
    ? ['./tools/history-writer/index.js']
    : [{ plugin: 'nx-open-cache', options: { backend: 'fs', path: ws.newStorePath('why') } }];
  ws.writeNxJson(nxJson);
}

/**
 * @param {string[]} args  nx arguments
 * @param {Record<string, string>} [env]
 */
async function nx(args, env = {}) {
  const r = await ws.nx([...args, '--output-style=static'], { env: { ...OFF, ...env } });
  assert.equal(r.code, 0, `nx ${args.join(' ')} failed\n${r.output}`);
  return r;
}

/**
 * `nx-open-cache why ...` in the workspace: the command itself, in this process, its output
 * captured (the CLI's wiring is checked by `whyCli`).
 * @param {string[]} args
 */
async function whyAsync(args) {
  /** @type {string[]} */ const out = [];
  /** @type {string[]} */ const err = [];
  const { log, error } = console;
  console.log = (/** @type {unknown[]} */ ...a) => { out.push(a.join(' ')); };
  console.error = (/** @type {unknown[]} */ ...a) => { err.push(a.join(' ')); };
  try {
    const code = await whyCommand(ws.root, args);
    return { code, stdout: out.join('\n'), stderr: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
  }
}

/**
 * `node lib/cli.js why ...` in the workspace.
 * @param {string[]} args
 */
function whyCli(args) {
  const r = spawnSync(process.execPath, [CLI, 'why', ...args], { cwd: ws.root, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** @param {string} task @param {string[]} extra */
async function whyJson(task, ...extra) {
  const r = await whyAsync([task, '--json', ...extra]);
  assert.equal(r.code, 0, `why ${task} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** @param {string} rel @param {string} content */
function write(rel, content) {
  fs.writeFileSync(path.join(ws.root, rel), content);
}

test('the plugin keeps the file lists of every fileset input, each giving Nx\'s own node hash', async () => {
  usePlugins('plugin');
  await nx(['run-many', '-t', 'build']);
  const files = fs.readdirSync(path.join(historyDir, 'filesets'));
  // 4 projects' filesets, tools/build.js, and nx.json/.gitignore/.nxignore.
  assert.equal(files.length, 6, files.join(', '));
  for (const f of files) {
    const r = JSON.parse(fs.readFileSync(path.join(historyDir, 'filesets', f), 'utf8'));
    assert.equal(r.exact, true, `${r.node} not exact`);
  }
  // The run records are lib/history.js's: start the next tests from no runs.
  fs.rmSync(path.join(historyDir, 'runs'), { recursive: true, force: true });
});

test('with no history of a task, why says what it knows', async () => {
  let r = whyCli(['lib-a:build']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no run history yet/);
  usePlugins('writer');
  await nx(['run-many', '-t', 'build']);
  r = await whyAsync(['lib-a:biuld']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no task "lib-a:biuld" in the history of the last 1 run\(s\); did you mean lib-a:build\b/);
  r = await whyAsync(['lib-b']);
  assert.match(r.stderr, /did you mean lib-b:build\?/);
  r = await whyAsync(['lib-a:build']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /lib-a:build missed in run .*, but no earlier run in the history \(0 before it\) has an artifact/);
  r = await whyAsync(['lib-a:build', '--run', 'nope']);
  assert.match(r.stderr, /no run "nope" in the history/);
  r = await whyAsync([]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /which task\? give <project:target>; tasks that missed in the latest run: (\S+:build, ){3}\S+:build\n/);
  r = await whyAsync(['lib-a:build', '--bogus']);
  assert.match(r.stderr, /unknown option "--bogus" for why/);
});

test('Nx\'s own hashes are the oracle: the stored files give the node hashes Nx reported, file by file', async () => {
  const nxNative = require(require.resolve('nx/src/native', { paths: [ws.root] }));
  const runs = historyRuns(ws.root);
  const lookup = historyFiles(historyDir);
  let checked = 0;
  for (const t of runs[runs.length - 1].tasks) {
    for (const [key, hash] of Object.entries((t.inputs && t.inputs.nodes) || {})) {
      const node = parseFilesetKey(key);
      if (!node) continue;
      const got = lookup(key, hash);
      assert.ok(got, `no file list for ${key}`);
      assert.equal(got.exact, true, key);
      const files = Object.entries(got.files);
      // Each file's hash as Nx's native hashFile gives it from disk (nothing changed since).
      for (const [f, h] of files) assert.equal(nxNative.hashFile(path.join(ws.root, f)), h, f);
      // The node hash, as Nx computes it (project: hash then path; workspace: path then hash).
      const joined = files.map(([f, h]) => (node.kind === 'project' ? h + f : f + h)).join('');
      assert.equal(nxNative.hashArray([joined]), hash, key);
      checked += 1;
    }
  }
  // 4 tasks x (own fileset, tools/build.js, nx.json + .gitignore + .nxignore) + lib-b's of lib-a.
  assert.equal(checked, 13, `checked ${checked} fileset nodes`);
});

test('a change to one file of lib-a: why names exactly that file, for lib-a and as lib-a\'s for lib-b', async () => {
  write('packages/lib-a/src/index.txt', 'source of lib-a, edited\n');
  await nx(['run-many', '-t', 'build']);
  const a = await whyJson('lib-a:build');
  assert.equal(a.baseline.source, 'history');
  assert.equal(a.causes.length, 1, JSON.stringify(a.causes));
  assert.equal(a.causes[0].kind, 'files');
  assert.equal(a.causes[0].project, 'lib-a');
  assert.deepEqual(a.causes[0].files, { added: [], removed: [], changed: ['packages/lib-a/src/index.txt'], exact: true });
  const b = await whyJson('lib-b:build');
  assert.equal(b.causes.length, 1, JSON.stringify(b.causes));
  assert.equal(b.causes[0].kind, 'dependency-files');
  assert.equal(b.causes[0].project, 'lib-a');
  assert.equal(b.causes[0].dependency, true);
  assert.deepEqual(b.causes[0].files.changed, ['packages/lib-a/src/index.txt']);
  const cli = whyCli(['lib-b:build']);
  assert.equal(cli.code, 0, cli.stderr);
  const text = cli.stdout;
  assert.match(text, /lib-b:build missed in run/);
  assert.match(text, /1\. files of lib-a \(a dependency of lib-b\) changed:\n\s+changed\s+packages\/lib-a\/src\/index\.txt/);
  // app-c was restored in this run: nothing to explain in it; its latest miss is its first run.
  const runs = historyRuns(ws.root);
  let c = await whyAsync(['app-c:build', '--run', runs[runs.length - 1].runId]);
  assert.equal(c.code, 1);
  assert.match(c.stderr, /app-c:build did not miss in run \S+: restored from the local cache/);
  c = await whyAsync(['app-c:build']);
  assert.match(c.stderr, /app-c:build missed in run \S+ .*, but no earlier run in the history \(0 before it\) has an artifact/);
  // A file added, one removed, one changed.
  write('packages/lib-a/src/added.txt', 'new\n');
  fs.rmSync(path.join(ws.root, 'packages/lib-a/src/old.txt'));
  write('packages/lib-a/src/marker.txt', `${ws.marker('lib-a')}\nchanged\n`);
  await nx(['run', 'lib-a:build']);
  const d = await whyJson('lib-a:build');
  assert.deepEqual(d.causes.map((/** @type {any} */ c) => c.kind), ['files']);
  assert.deepEqual(d.causes[0].files, {
    added: ['packages/lib-a/src/added.txt'], removed: ['packages/lib-a/src/old.txt'], changed: ['packages/lib-a/src/marker.txt'], exact: true,
  });
});

test('an env input is named by its variable, never its value', async () => {
  editProject('lib-a', (j) => { j.targets.build.inputs = ['default', '^default', { env: 'FOO' }]; });
  await nx(['run', 'lib-a:build'], { FOO: 'first-secret-value' });
  const added = await whyJson('lib-a:build');
  const kinds = added.causes.map((/** @type {any} */ c) => c.kind);
  // project.json changed (the file) and the new env input.
  assert.deepEqual(kinds, ['files', 'env'], kinds.join());
  assert.ok(added.causes.some((/** @type {any} */ c) => c.kind === 'env' && c.name === 'FOO' && c.change === 'added'), JSON.stringify(added.causes));
  assert.ok(added.causes.some((/** @type {any} */ c) => c.kind === 'files' && c.files.changed.includes('packages/lib-a/project.json')));
  await nx(['run', 'lib-a:build'], { FOO: 'second-secret-value' });
  const r = await whyAsync(['lib-a:build']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /1\. environment variable FOO changed value/);
  assert.doesNotMatch(r.stdout + (await whyAsync(['lib-a:build', '--json'])).stdout, /secret-value/);
  const j = await whyJson('lib-a:build');
  assert.deepEqual(j.causes.map((/** @type {any} */ c) => [c.kind, c.name]), [['env', 'FOO']]);
  // --run: the earlier miss of the run that added the input.
  const runs = historyRuns(ws.root);
  const earlier = await whyJson('lib-a:build', '--run', runs[runs.length - 2].runId);
  assert.ok(earlier.causes.some((/** @type {any} */ c) => c.kind === 'env' && c.change === 'added'));
});

test('a command (overrides) change and a project configuration change are named as such', async () => {
  await nx(['run', 'lib-a:build', '--mode=fast'], { FOO: 'second-secret-value' });
  const cmd = await whyJson('lib-a:build');
  assert.deepEqual(cmd.causes.map((/** @type {any} */ c) => c.kind), ['command']);
  assert.match((await whyAsync(['lib-a:build'])).stdout, /1\. the command changed/);
  editProject('lib-a', (j) => { j.targets.build.options.command = 'node ./tools/build.js lib-a packages/lib-a'; });
  await nx(['run', 'lib-a:build'], { FOO: 'second-secret-value' });
  const conf = await whyJson('lib-a:build');
  const kinds = conf.causes.map((/** @type {any} */ c) => c.kind);
  // Compared with the closest earlier artifact (no --mode): the configuration and project.json.
  assert.deepEqual(kinds, ['files', 'project-configuration'], JSON.stringify(conf.causes));
  assert.deepEqual(conf.causes[0].files.changed, ['packages/lib-a/project.json']);
  assert.match((await whyAsync(['lib-a:build'])).stdout, /the project configuration of lib-a changed/);
  // --against an artifact of the history: the run with --mode, whatever is closest.
  const runs = historyRuns(ws.root);
  const withMode = runs.find((r) => (r.command || '').includes('--mode=fast'));
  const modeTask = withMode && withMode.tasks.find((t) => t.id === 'lib-a:build');
  assert.ok(modeTask);
  const against = await whyJson('lib-a:build', '--against', modeTask.hash);
  assert.equal(against.baseline.hash, modeTask.hash);
  assert.deepEqual(against.causes.map((/** @type {any} */ c) => c.kind), ['command', 'files', 'project-configuration']);
  const unknown = await whyAsync(['lib-a:build', '--against', '42']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no run in the history had lib-a:build with hash 42/);
});

test('an artifact produced on machine A explains a miss on machine B (explainAgainstMeta)', async () => {
  // Machine A: builds lib-b and stores it, with its metadata as the plugin writes it.
  await nx(['run', 'lib-b:build'], { FOO: 'second-secret-value' });
  const runsA = historyRuns(ws.root);
  const taskA = runsA[runsA.length - 1].tasks.find((t) => t.id === 'lib-b:build');
  assert.ok(taskA && taskA.outcome === 'stored', JSON.stringify(taskA));
  const meta = {
    format: 'nx-open-cache-meta', version: 1, task: 'lib-b:build', hash: taskA.hash, durationMs: 100,
    nxVersion: '24.0.6', storedAt: new Date().toISOString(), runId: 'run-on-a', host: 'machine-a',
    inputs: taskA.inputs, files: filesForMeta(ws.root, taskA.inputs, historyDir),
    // Every list is exact here (checked against Nx's hashes above): the writer says so.
    inexact: [],
  };
  assert.ok(Object.keys(meta.files).some((k) => k.startsWith('lib-a:')), Object.keys(meta.files).join());
  // Machine B: no history, no Nx cache (daemon off: nothing holds .nx); lib-b's own file changed.
  fs.rmSync(path.join(ws.root, '.nx'), { recursive: true, force: true });
  write('packages/lib-b/src/index.txt', 'source of lib-b, edited on machine B\n');
  await nx(['run', 'lib-b:build'], { FOO: 'second-secret-value' });
  const r = await whyAsync(['lib-b:build']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no earlier run in the history \(0 before it\)/);
  const runsB = historyRuns(ws.root);
  const run = runsB[runsB.length - 1];
  const missB = /** @type {any} */ (run.tasks.find((t) => t.id === 'lib-b:build'));
  const e = explainAgainstMeta({ ...missB, runId: run.runId, startedAt: run.startedAt }, meta, historyFiles(historyDir));
  assert.equal(e.baseline.source, 'meta');
  assert.equal(e.baseline.host, 'machine-a');
  assert.deepEqual(e.causes.map((c) => c.kind), ['files'], JSON.stringify(e.causes));
  assert.deepEqual(e.causes[0].files, { added: [], removed: [], changed: ['packages/lib-b/src/index.txt'], exact: true });
  assert.throws(() => explainAgainstMeta(missB, { ...meta, task: 'lib-a:build' }, historyFiles(historyDir)), /the metadata is of task lib-a:build, not lib-b:build/);
});
