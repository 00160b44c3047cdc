'use strict';
/**
 * Test harness: a real Nx workspace (nx from npm) with nx-open-cache installed from the tarball that
 * `npm pack` makes of this repository. Used by the end-to-end suites.
 *
 * One workspace per test file, reused across scenarios; `resetScenario()` brings it back to a cold
 * state between them (daemon stopped, Nx cache and workspace data gone, dist outputs deleted, build
 * log emptied, nx.json back to its baseline).
 */

const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/** The Nx the end-to-end suites use (the newest supported); compat.e2e.test.js also runs the oldest. */
const NX_VERSION = '24.0.6';
/** The oldest Nx nx-open-cache supports: task hooks and the self-hosted remote cache client. */
const NX_OLDEST = '20.8.4';
const REPO_ROOT = path.resolve(__dirname, '..', '..');
const NATIVE_FILE = 'nx-open-cache.linux-x64-gnu.node';
/** Upper bound for one nx invocation. */
const NX_TIMEOUT_MS = 180_000;
/** Upper bound for npm pack / npm install / git. */
const TOOL_TIMEOUT_MS = 300_000;

/**
 * @typedef {{ name: string, dir: string, dependsOnBuild?: string }} ProjectSpec
 * @typedef {{ code: number | null, signal: NodeJS.Signals | null, timedOut: boolean,
 *   stdout: string, stderr: string, output: string, command: string }} RunResult
 * @typedef {{ kind: 'file', sha256: string, mode: number, size: number } | { kind: 'dir', mode: number }} SnapshotEntry
 * @typedef {import('../../lib/summary.js').RunSummary} RunSummary
 */

/** The projects of the test workspace. `lib-b` builds after `lib-a` (`dependsOn: ["^build"]`). */
const PROJECTS = /** @type {ProjectSpec[]} */ ([
  { name: 'lib-a', dir: 'packages/lib-a' },
  { name: 'lib-b', dir: 'packages/lib-b', dependsOnBuild: 'lib-a' },
  { name: 'app-c', dir: 'apps/app-c' },
  { name: 'tool-d', dir: 'tools/tool-d' },
]);

/* ------------------------------------------------------------------------------------------------ */
/* process helpers                                                                                   */
/* ------------------------------------------------------------------------------------------------ */

/**
 * Runs a command synchronously and throws with its output when it fails.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd: string, env?: NodeJS.ProcessEnv, timeoutMs?: number }} opts
 * @returns {string} stdout
 */
function mustRun(cmd, args, opts) {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: opts.env || process.env,
    encoding: 'utf8',
    timeout: opts.timeoutMs || TOOL_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (r.error || r.status !== 0) {
    throw new Error(
      `command failed: ${cmd} ${args.join(' ')} (cwd ${opts.cwd})\n` +
        `status=${r.status} signal=${r.signal} error=${r.error && r.error.message}\n` +
        `--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`,
    );
  }
  return r.stdout;
}

/**
 * Spawns a process in its own process group and collects its output. Never waits longer than
 * `timeoutMs`: on timeout the whole group is killed and `timedOut` is set.
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd: string, env: NodeJS.ProcessEnv, timeoutMs?: number }} opts
 * @returns {Promise<RunResult>}
 */
function runProcess(cmd, args, opts) {
  const timeoutMs = opts.timeoutMs || NX_TIMEOUT_MS;
  const command = `${cmd} ${args.join(' ')}`;
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    /** @type {Buffer[]} */ const out = [];
    /** @type {Buffer[]} */ const err = [];
    /** @type {Buffer[]} */ const all = [];
    child.stdout.on('data', (b) => { out.push(b); all.push(b); });
    child.stderr.on('data', (b) => { err.push(b); all.push(b); });
    let timedOut = false;
    let settled = false;
    /** @type {NodeJS.Timeout | undefined} */ let drainTimer;
    const killGroup = () => {
      try { process.kill(-/** @type {number} */ (child.pid), 'SIGKILL'); } catch { /* gone */ }
    };
    const timer = setTimeout(() => { timedOut = true; killGroup(); }, timeoutMs);
    /** @param {number | null} code @param {NodeJS.Signals | null} signal */
    const finish = (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (drainTimer) clearTimeout(drainTimer);
      resolve({
        code, signal, timedOut, command,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        output: Buffer.concat(all).toString('utf8'),
      });
    };
    child.on('error', (e) => { err.push(Buffer.from(String(e))); finish(null, null); });
    child.on('close', (code, signal) => finish(code, signal));
    // A grandchild that inherited our pipes (it should not: the Nx daemon is detached with its
    // own log file) must not keep us waiting: after exit, give the pipes a bounded time to drain.
    child.on('exit', (code, signal) => {
      drainTimer = setTimeout(() => finish(code, signal), 10_000);
    });
  });
}

/* ------------------------------------------------------------------------------------------------ */
/* packing the plugin                                                                                */
/* ------------------------------------------------------------------------------------------------ */

/** @type {string | undefined} */
let packedTarball;
/** @type {string | undefined} */
let packDir;

/**
 * Checks that the repository holds what `npm pack` needs to make a working package.
 * @returns {string[]} the problems found (empty when ready)
 */
function packPrerequisiteProblems() {
  /** @type {string[]} */ const problems = [];
  const nodeFiles = fs.readdirSync(REPO_ROOT).filter((f) => f.endsWith('.node'));
  if (nodeFiles.length === 0) {
    problems.push(
      `no native build (*.node, expected ${NATIVE_FILE}) in ${REPO_ROOT}: ` +
        'run `node scripts/ensure-native.js` (or `npm run build`) before the e2e tests',
    );
  }
  if (!fs.existsSync(path.join(REPO_ROOT, 'lib', 'plugin.js'))) {
    problems.push(`missing ${path.join(REPO_ROOT, 'lib', 'plugin.js')}`);
  }
  return problems;
}

/**
 * `npm pack`s the repository once per process into a temp dir and returns the tarball path.
 * @returns {string}
 */
function packPlugin() {
  if (packedTarball && fs.existsSync(packedTarball)) return packedTarball;
  const problems = packPrerequisiteProblems();
  if (problems.length) throw new Error(`cannot pack nx-open-cache:\n- ${problems.join('\n- ')}`);
  packDir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-pack-'));
  const stdout = mustRun(
    'npm',
    ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir],
    { cwd: REPO_ROOT },
  );
  const start = stdout.indexOf('[');
  /** @type {{ filename: string, files: { path: string }[] }[]} */
  const info = JSON.parse(stdout.slice(start));
  const tarball = path.join(packDir, info[0].filename);
  assert.ok(fs.existsSync(tarball), `npm pack did not produce ${tarball}`);
  const files = info[0].files.map((f) => f.path);
  assert.ok(files.some((f) => f.endsWith('.node')), `the tarball holds no *.node file: ${files.join(', ')}`);
  assert.ok(files.includes('lib/plugin.js'), `the tarball holds no lib/plugin.js: ${files.join(', ')}`);
  packedTarball = tarball;
  return tarball;
}

/* ------------------------------------------------------------------------------------------------ */
/* files                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

/**
 * @param {string} file
 * @param {string} content
 */
function writeFile(file, content) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
}

/**
 * @param {string} file
 * @param {unknown} value
 */
function writeJson(file, value) {
  writeFile(file, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Lists the regular files under `dir` (relative paths, '/'-separated), skipping `skip` top-level
 * entries. Bounded by the tree itself; symlinks are listed, never followed.
 * @param {string} dir
 * @param {string[]} [skipTop]
 * @returns {string[]}
 */
function listFiles(dir, skipTop = []) {
  /** @type {string[]} */ const result = [];
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) return result;
  /** @type {string[]} */ const stack = [''];
  while (stack.length) {
    const rel = /** @type {string} */ (stack.pop());
    for (const ent of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const childRel = rel ? `${rel}/${ent.name}` : ent.name;
      if (!rel && skipTop.includes(ent.name)) continue;
      if (ent.isDirectory()) stack.push(childRel);
      else result.push(childRel);
    }
  }
  return result.sort();
}

/**
 * The artifacts of an fs store: every file under `storeDir` except the `.tmp` area and the artifact
 * metadata beside them (`<hash>-nxoc-meta`, lib/meta.js; `storeMetaObjects` lists those).
 * @param {string} storeDir
 * @returns {string[]} relative paths
 */
function storeObjects(storeDir) {
  return listFiles(storeDir, ['.tmp']).filter((f) => !f.endsWith('-nxoc-meta'));
}

/**
 * The artifact metadata objects of an fs store (`<hash>-nxoc-meta`).
 * @param {string} storeDir
 * @returns {string[]} relative paths
 */
function storeMetaObjects(storeDir) {
  return listFiles(storeDir, ['.tmp']).filter((f) => f.endsWith('-nxoc-meta'));
}

/**
 * Flips one byte in the middle of a file.
 * @param {string} file
 */
function flipMiddleByte(file) {
  const buf = fs.readFileSync(file);
  assert.ok(buf.length > 0, `cannot corrupt empty file ${file}`);
  const i = Math.floor(buf.length / 2);
  buf[i] ^= 0xff;
  fs.writeFileSync(file, buf);
}

/* ------------------------------------------------------------------------------------------------ */
/* workspace content                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/**
 * The build script every project's `build` target runs (tools/build.js in the workspace; plain
 * node, so the workspace needs nothing else).
 * @returns {string}
 */
function buildScript() {
  return `'use strict';
// Test build step: writes a varied dist/ (text, nested dir, binary, empty, executable), prints the
// project's marker (to check terminal-output replay) and appends to ../build-log.txt (to count
// real executions: a cache hit must not run this).
const fs = require('node:fs');
const path = require('node:path');

const [projectName, projectRoot, upstreamRoot] = process.argv.slice(2);
const workspaceRoot = path.resolve(__dirname, '..');
const root = path.join(workspaceRoot, projectRoot);
const dist = path.join(root, 'dist');

if (process.env.NXOC_E2E_SABOTAGE_PROJECT === projectName && process.env.NXOC_E2E_SABOTAGE_STORE) {
  const store = process.env.NXOC_E2E_SABOTAGE_STORE;
  // Other tasks' uploads may be writing into the store right now: move it away atomically (so
  // the path is gone at once), then delete the moved tree as far as possible.
  const gone = store + '.gone-' + process.pid;
  fs.renameSync(store, gone);
  try { fs.rmSync(gone, { recursive: true, force: true, maxRetries: 5 }); } catch { /* still being written: left for cleanup */ }
  if (process.env.NXOC_E2E_SABOTAGE_KIND === 'file') fs.writeFileSync(store, 'not a directory\\n');
  console.log('sabotaged store ' + store + ' (' + (process.env.NXOC_E2E_SABOTAGE_KIND || 'removed') + ')');
}

const marker = fs.readFileSync(path.join(root, 'src', 'marker.txt'), 'utf8').trim();
const source = fs.readFileSync(path.join(root, 'src', 'index.txt'), 'utf8');
let upstream = '';
if (upstreamRoot) {
  // dependsOn ^build: the upstream project's output must already be there.
  upstream = fs.readFileSync(path.join(workspaceRoot, upstreamRoot, 'dist', 'index.txt'), 'utf8');
}

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(path.join(dist, 'nested', 'deeper'), { recursive: true });
fs.mkdirSync(path.join(dist, 'bin'), { recursive: true });

function emit(rel, content, mode) {
  const file = path.join(dist, rel);
  fs.writeFileSync(file, content);
  fs.chmodSync(file, mode);
}

emit('index.txt', 'built ' + projectName + '\\n' + source + (upstream ? '--- upstream ---\\n' + upstream : ''), 0o644);
emit('nested/info.json', JSON.stringify({ project: projectName, files: 6 }, null, 2) + '\\n', 0o644);
emit('nested/deeper/notes.md', '# ' + projectName + '\\n\\nünïcödé ✓\\n', 0o600);
emit('nested/empty.txt', '', 0o644);
// Binary: every byte value, then 96 KiB of deterministic noise seeded by the project name.
const bin = Buffer.alloc(256 + 96 * 1024);
for (let i = 0; i < 256; i++) bin[i] = i;
let seed = 2166136261;
for (const ch of projectName) seed = Math.imul(seed ^ ch.charCodeAt(0), 16777619) >>> 0;
for (let i = 256; i < bin.length; i++) {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  bin[i] = seed >>> 24;
}
emit('blob.bin', bin, 0o644);
emit('bin/' + projectName, '#!/bin/sh\\necho "hello from ' + projectName + '"\\n', 0o755);

fs.appendFileSync(path.join(workspaceRoot, '..', 'build-log.txt'), projectName + '\\n');
console.log(marker);
`;
}

/* ------------------------------------------------------------------------------------------------ */
/* the workspace                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

const BASE_NX_JSON = {
  $schema: './node_modules/nx/schemas/nx-schema.json',
  namedInputs: {
    default: ['{projectRoot}/**/*', 'sharedGlobals'],
    sharedGlobals: ['{workspaceRoot}/tools/build.js'],
    production: ['default'],
  },
};

class NxWorkspace {
  /**
   * @param {string} base temp dir holding the workspace, the build log and the stores
   */
  constructor(base) {
    /** Temp dir that holds everything of this workspace (removed by dispose). */
    this.base = base;
    /** The workspace root. */
    this.root = path.join(base, 'ws');
    /** Unique per workspace: part of every project's marker. */
    this.token = crypto.randomBytes(8).toString('hex');
    this.projects = PROJECTS;
    this.buildLogFile = path.join(base, 'build-log.txt');
    this.nxPackageDir = path.join(this.root, 'node_modules', 'nx');
    this.storeCounter = 0;
  }

  /** @returns {string} the workspace's nx CLI entry (from nx's package.json `bin`) */
  get nxBin() {
    const pkgFile = path.join(this.nxPackageDir, 'package.json');
    if (!fs.existsSync(pkgFile)) return path.join(this.nxPackageDir, 'bin', 'nx.js');
    const bin = JSON.parse(fs.readFileSync(pkgFile, 'utf8')).bin;
    return path.join(this.nxPackageDir, typeof bin === 'string' ? bin : bin.nx);
  }

  /** @param {string} project */
  marker(project) {
    return `NXOC-E2E-MARKER ${project} ${this.token}`;
  }

  /** Writes the workspace files, makes the first git commit. */
  scaffold() {
    const r = this.root;
    writeJson(path.join(r, 'package.json'), {
      name: 'nxoc-e2e-workspace',
      version: '0.0.0',
      private: true,
      license: 'MIT',
    });
    writeJson(path.join(r, 'nx.json'), BASE_NX_JSON);
    writeFile(path.join(r, '.gitignore'), 'node_modules\ndist\n.nx\n');
    writeFile(path.join(r, 'tools', 'build.js'), buildScript());
    for (const p of this.projects) {
      const upstream = p.dependsOnBuild && this.projects.find((q) => q.name === p.dependsOnBuild);
      /** @type {Record<string, unknown>} */
      const build = {
        executor: 'nx:run-commands',
        cache: true,
        inputs: ['default', '^default'],
        outputs: ['{projectRoot}/dist'],
        options: { command: `node tools/build.js ${p.name} ${p.dir}${upstream ? ` ${upstream.dir}` : ''}` },
      };
      if (upstream) build.dependsOn = ['^build'];
      writeJson(path.join(r, p.dir, 'project.json'), {
        name: p.name,
        $schema: `${path.relative(path.join(r, p.dir), path.join(r, 'node_modules/nx/schemas/project-schema.json'))}`,
        sourceRoot: `${p.dir}/src`,
        projectType: 'library',
        ...(upstream ? { implicitDependencies: [upstream.name] } : {}),
        targets: { build },
      });
      writeFile(path.join(r, p.dir, 'src', 'marker.txt'), `${this.marker(p.name)}\n`);
      writeFile(path.join(r, p.dir, 'src', 'index.txt'), `source of ${p.name}\n`);
    }
    const git = (/** @type {string[]} */ ...args) => mustRun('git', args, { cwd: r });
    git('init', '-q', '-b', 'main');
    git('config', 'user.email', 'e2e@nx-open-cache.invalid');
    git('config', 'user.name', 'nx-open-cache e2e');
    git('config', 'commit.gpgsign', 'false');
    git('add', '-A');
    git('commit', '-q', '-m', 'workspace');
  }

  /**
   * Installs nx and the packed plugin with npm.
   * @param {string} tarball
   * @param {string} [nxVersion]
   */
  install(tarball, nxVersion = NX_VERSION) {
    mustRun(
      'npm',
      [
        'install', '--prefer-offline', '--no-audit', '--no-fund', '--save-dev',
        `nx@${nxVersion}`, tarball,
      ],
      { cwd: this.root, env: cleanEnv({}) },
    );
    assert.ok(fs.existsSync(this.nxBin), `nx not installed: ${this.nxBin}`);
    assert.ok(
      fs.existsSync(path.join(this.root, 'node_modules', 'nx-open-cache', 'package.json')),
      'nx-open-cache not installed in the workspace',
    );
    // Install changed package.json / package-lock.json: commit so `git status` stays meaningful.
    mustRun('git', ['add', '-A'], { cwd: this.root });
    mustRun('git', ['commit', '-q', '-m', 'install'], { cwd: this.root });
  }

  /**
   * Runs nx (the workspace's own copy) with a clean environment plus `env`.
   * @param {string[]} args
   * @param {{ env?: Record<string, string | undefined>, timeoutMs?: number }} [opts]
   * @returns {Promise<RunResult>}
   */
  nx(args, opts = {}) {
    return runProcess(process.execPath, [this.nxBin, ...args], {
      cwd: this.root,
      env: cleanEnv(opts.env || {}),
      timeoutMs: opts.timeoutMs,
    });
  }

  /**
   * `nx run-many -t build` over all projects, static output (task output printed, cache labels).
   * @param {{ env?: Record<string, string | undefined>, extraArgs?: string[] }} [opts]
   */
  runBuild(opts = {}) {
    return this.nx(
      ['run-many', '-t', 'build', '--output-style=static', ...(opts.extraArgs || [])],
      { env: opts.env },
    );
  }

  /**
   * Stops the daemon and wipes Nx's cache and workspace data (`nx reset`). NX_DAEMON=true: `nx reset`
   * only stops a daemon when it considers the daemon enabled (not so in CI / docker otherwise).
   */
  async nxReset() {
    const r = await this.nx(['reset'], { env: { NX_DAEMON: 'true' } });
    assert.equal(r.code, 0, `nx reset failed\n${r.output}`);
    return r;
  }

  /** Deletes every project's dist/. */
  cleanOutputs() {
    for (const p of this.projects) fs.rmSync(path.join(this.root, p.dir, 'dist'), { recursive: true, force: true });
  }

  /** Empties the build log. */
  clearBuildLog() {
    fs.rmSync(this.buildLogFile, { force: true });
  }

  /** @returns {string[]} project names whose build script really ran since the last clear */
  builtProjects() {
    if (!fs.existsSync(this.buildLogFile)) return [];
    return fs.readFileSync(this.buildLogFile, 'utf8').split('\n').filter(Boolean);
  }

  /**
   * A fresh, not yet existing, store path (under the workspace's temp dir, outside the workspace).
   * @param {string} label
   */
  newStorePath(label) {
    this.storeCounter += 1;
    return path.join(this.base, 'stores', `${String(this.storeCounter).padStart(2, '0')}-${label}`);
  }

  /** @returns {any} */
  readNxJson() {
    return JSON.parse(fs.readFileSync(path.join(this.root, 'nx.json'), 'utf8'));
  }

  /** @param {unknown} value */
  writeNxJson(value) {
    writeJson(path.join(this.root, 'nx.json'), value);
  }

  /**
   * Sets nx.json to the baseline, plus the plugin entry with `options` unless null.
   * @param {Record<string, unknown> | null} options
   */
  setPluginOptions(options) {
    const nxJson = JSON.parse(JSON.stringify(BASE_NX_JSON));
    if (options) nxJson.plugins = [{ plugin: 'nx-open-cache', options }];
    this.writeNxJson(nxJson);
  }

  /** @returns {string} */
  lastRunFile() {
    return path.join(this.root, '.nx', 'workspace-data', 'nx-open-cache', 'last-run.json');
  }

  /** @returns {RunSummary | null} the plugin's last-run.json, or null when absent */
  readLastRun() {
    const f = this.lastRunFile();
    if (!fs.existsSync(f)) return null;
    return JSON.parse(fs.readFileSync(f, 'utf8'));
  }

  removeLastRun() {
    fs.rmSync(this.lastRunFile(), { force: true });
  }

  /** @returns {boolean} whether the Nx daemon left its log in this workspace (it ran). */
  daemonLogExists() {
    return fs.existsSync(path.join(this.root, '.nx', 'workspace-data', 'd', 'daemon.log'));
  }

  /**
   * Relative path -> content hash and mode, for every entry under every project's dist/.
   * @returns {Record<string, SnapshotEntry>}
   */
  snapshotOutputs() {
    /** @type {Record<string, SnapshotEntry>} */ const snap = {};
    for (const p of this.projects) {
      const dist = path.join(this.root, p.dir, 'dist');
      if (!fs.existsSync(dist)) continue;
      /** @type {string[]} */ const stack = [dist];
      while (stack.length) {
        const dir = /** @type {string} */ (stack.pop());
        for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
          const abs = path.join(dir, ent.name);
          const rel = path.relative(this.root, abs).split(path.sep).join('/');
          const st = fs.lstatSync(abs);
          if (st.isDirectory()) {
            snap[rel] = { kind: 'dir', mode: st.mode & 0o777 };
            stack.push(abs);
          } else {
            const data = fs.readFileSync(abs);
            snap[rel] = {
              kind: 'file',
              sha256: crypto.createHash('sha256').update(data).digest('hex'),
              mode: st.mode & 0o777,
              size: data.length,
            };
          }
        }
      }
    }
    return snap;
  }

  /**
   * Content hashes of every file git would see (tracked + untracked, not ignored): to check that
   * a command changed nothing.
   * @returns {Record<string, string>}
   */
  snapshotSources() {
    const list = mustRun('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: this.root })
      .split('\0')
      .filter(Boolean);
    /** @type {Record<string, string>} */ const snap = {};
    for (const rel of [...new Set(list)].sort()) {
      const abs = path.join(this.root, rel);
      snap[rel] = fs.existsSync(abs)
        ? crypto.createHash('sha256').update(fs.readFileSync(abs)).digest('hex')
        : '<deleted>';
    }
    return snap;
  }

  /**
   * Back to a cold state: daemon stopped, Nx cache + workspace data wiped, outputs deleted, build
   * log emptied, nx.json at the baseline (no plugin).
   */
  async resetScenario() {
    await this.nxReset();
    this.cleanOutputs();
    this.clearBuildLog();
    this.setPluginOptions(null);
  }

  /** Stops the daemon and removes the temp dir. Never throws. */
  async dispose() {
    if (fs.existsSync(this.nxBin)) {
      await this.nx(['daemon', '--stop'], { env: { NX_DAEMON: 'true' }, timeoutMs: 60_000 }).catch(() => undefined);
      await this.nx(['reset'], { env: { NX_DAEMON: 'true' }, timeoutMs: 60_000 }).catch(() => undefined);
    }
    fs.rmSync(this.base, { recursive: true, force: true, maxRetries: 3 });
  }
}

/**
 * The environment for nx: the test process's env without anything Nx/plugin related that could
 * leak in, plus the fixed test settings, plus `extra` (an undefined value deletes the key).
 * @param {Record<string, string | undefined>} extra
 * @returns {NodeJS.ProcessEnv}
 */
function cleanEnv(extra) {
  /** @type {NodeJS.ProcessEnv} */ const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(NX_|NXOC_)/.test(k)) continue; // NX_SELF_HOSTED_*, NX_DAEMON, NX_OPEN_CACHE_*, ...
    if (k === 'CI' || k === 'npm_config_prefix' || k.startsWith('NODE_TEST')) continue;
    if (k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  env.NX_NO_CLOUD = 'true';
  env.NX_TUI = 'false';
  env.NX_SKIP_NX_CACHE = undefined;
  env.FORCE_COLOR = '0';
  env.NO_COLOR = '1';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env;
}

/**
 * Creates, scaffolds and installs a workspace in a fresh temp dir.
 * @param {{ nxVersion?: string }} [opts]  default: NX_VERSION
 * @returns {Promise<NxWorkspace>}
 */
async function createWorkspace(opts = {}) {
  const tarball = packPlugin();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-e2e-'));
  const ws = new NxWorkspace(base);
  try {
    ws.scaffold();
    ws.install(tarball, opts.nxVersion);
  } catch (e) {
    await ws.dispose();
    throw e;
  }
  return ws;
}

/** Removes the per-process pack dir. */
function disposePack() {
  if (packDir) fs.rmSync(packDir, { recursive: true, force: true });
  packDir = undefined;
  packedTarball = undefined;
}

/**
 * The lines of an nx run's output that report `nx run <project>:build`, per project.
 * @param {string} output
 * @param {string} project
 * @returns {string[]}
 */
function taskLines(output, project) {
  return output.split(/\r?\n/).filter((l) => l.includes(`nx run ${project}:build`));
}

/**
 * Whether nx reported `<project>:build` as restored from the remote cache.
 * @param {string} output
 * @param {string} project
 */
function isRemoteHit(output, project) {
  return taskLines(output, project).some((l) => l.includes('[remote cache]'));
}

/**
 * The `nx-open-cache:` summary line(s) printed by the plugin.
 * @param {string} output
 * @returns {string[]}
 */
function summaryLines(output) {
  return output.split(/\r?\n/).filter((l) => l.startsWith('nx-open-cache:'));
}

module.exports = {
  NX_VERSION,
  NX_OLDEST,
  REPO_ROOT,
  NATIVE_FILE,
  PROJECTS,
  NxWorkspace,
  createWorkspace,
  packPlugin,
  packPrerequisiteProblems,
  disposePack,
  cleanEnv,
  runProcess,
  storeObjects,
  storeMetaObjects,
  listFiles,
  flipMiddleByte,
  taskLines,
  isRemoteHit,
  summaryLines,
};
