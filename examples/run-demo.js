#!/usr/bin/env node
'use strict';
/**
 * `npm run demo`: two "machines" share one nx-open-cache directory.
 *
 *   .demo/machine-a   fresh copy of examples/demo-workspace, cold build (fills the shared cache)
 *   .demo/machine-b   another fresh copy, empty local cache: every task should come from the
 *                     shared cache ([remote cache]) with byte-identical outputs and file modes
 *   .demo/shared-cache  the plugin's `path` in both copies
 *
 * Each copy is its own git repo (Nx wants one) with node_modules/nx and
 * node_modules/nx-open-cache symlinked to this repository's nx and to the repository itself.
 * Nx runs with the daemon, Nx Cloud and the TUI off, and with its local cache and workspace
 * data pinned inside each copy (nx 24 otherwise shares a per-user cache between checkouts of
 * the same repository, which would turn machine-b's remote hits into local ones).
 *
 * Exits non-zero if a build fails, if machine-b's outputs differ from machine-a's (bytes or
 * file modes), or if machine-b had fewer remote cache hits than tasks.
 */
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..');
const WORKSPACE_SRC = path.join(__dirname, 'demo-workspace');
const DEMO_DIR = path.join(REPO_ROOT, '.demo');
const SHARED_CACHE = path.join(DEMO_DIR, 'shared-cache');
const MACHINES = ['machine-a', 'machine-b'];
const NX_TIMEOUT_MS = 180_000;
const PLUGIN_NAME = 'nx-open-cache';

/** Strips ANSI escape sequences. @param {string} s */
function stripAnsi(s) {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/\r/g, '');
}

/** @param {string} msg */
function fail(msg) {
  console.error(`\nrun-demo: FAILED: ${msg}`);
  process.exitCode = 1;
}

/** @param {string} title */
function banner(title) {
  const line = '='.repeat(Math.max(20, title.length + 4));
  console.log(`\n${line}\n  ${title}\n${line}`);
}

const { run, locateNx } = require('../scripts/dev-tools.js');

/**
 * What is missing for Nx to load the plugin (informational; the nx step reports the real error).
 * @returns {string[]}
 */
function pluginPrerequisites() {
  const missing = [];
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
  const main = pkg.main || 'index.js';
  if (!fs.existsSync(path.join(REPO_ROOT, main))) missing.push(`${main} (the package main Nx loads as the plugin)`);
  if (!fs.readdirSync(REPO_ROOT).some((f) => f.endsWith('.node'))) missing.push('a built native addon (*.node) in the repo root');
  return missing;
}

/**
 * Copies the demo workspace to `dir` and makes it a standalone Nx workspace.
 * @param {string} name
 * @param {{dir: string}} nx
 */
function prepareMachine(name, nx) {
  const dir = path.join(DEMO_DIR, name);
  const skip = new Set(['node_modules', 'dist', '.nx', '.shared-cache']);
  fs.cpSync(WORKSPACE_SRC, dir, {
    recursive: true,
    filter: (src) => !skip.has(path.basename(src)) || src === WORKSPACE_SRC,
  });

  const nxJsonPath = path.join(dir, 'nx.json');
  const nxJson = JSON.parse(fs.readFileSync(nxJsonPath, 'utf8'));
  const entry = (nxJson.plugins ?? []).find(
    (/** @type {any} */ p) => p && typeof p === 'object' && p.plugin === PLUGIN_NAME,
  );
  if (!entry) throw new Error(`examples/demo-workspace/nx.json has no {"plugin": "${PLUGIN_NAME}"} entry`);
  entry.options = { ...entry.options, path: SHARED_CACHE };
  fs.writeFileSync(nxJsonPath, JSON.stringify(nxJson, null, 2) + '\n');

  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(nx.dir, path.join(dir, 'node_modules', 'nx'), 'dir');
  fs.symlinkSync(REPO_ROOT, path.join(dir, 'node_modules', PLUGIN_NAME), 'dir');

  run('git', ['-c', 'init.defaultBranch=main', 'init', '-q'], dir);
  run('git', ['add', '-A'], dir);
  run(
    'git',
    [
      '-c', 'user.name=nx-open-cache demo',
      '-c', 'user.email=demo@nx-open-cache.invalid',
      '-c', 'commit.gpgsign=false',
      'commit', '-q', '--no-verify', '-m', `demo workspace (${name})`,
    ],
    dir,
  );
  return dir;
}

/** Environment for Nx: inherited, minus NX_* settings that would change what the demo measures. */
function nxEnv(/** @type {string} */ dir) {
  /** @type {NodeJS.ProcessEnv} */
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('NX_') && !k.startsWith('NX_OPEN_CACHE_') && k !== 'NX_VERBOSE_LOGGING') continue;
    env[k] = v;
  }
  Object.assign(env, {
    NX_DAEMON: 'false',
    NX_NO_CLOUD: 'true',
    NX_TUI: 'false',
    // Each machine keeps its local cache to itself.
    NX_CACHE_DIRECTORY: path.join(dir, '.nx', 'cache'),
    NX_WORKSPACE_DATA_DIRECTORY: path.join(dir, '.nx', 'workspace-data'),
  });
  if (process.stdout.isTTY && env.FORCE_COLOR === undefined && env.NO_COLOR === undefined) env.FORCE_COLOR = '1';
  return env;
}

/**
 * @typedef {object} RunResult
 * @property {string} name
 * @property {number | null} code
 * @property {number} wallMs
 * @property {number} tasks
 * @property {number} remoteHits
 * @property {number} localHits
 * @property {string} summary  last `nx-open-cache:` line, or ''
 * @property {string} output
 */

/**
 * Runs `nx run-many -t build` in `dir`, streaming its output.
 * @param {string} name
 * @param {string} dir
 * @param {{bin: string}} nx
 * @returns {Promise<RunResult>}
 */
function runBuild(name, dir, nx) {
  const args = [path.join('node_modules', 'nx', nx.bin), 'run-many', '-t', 'build', '--output-style=static'];
  console.log(`$ (cd ${path.relative(REPO_ROOT, dir)} && node ${args.join(' ')})\n`);
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { cwd: dir, env: nxEnv(dir), stdio: ['ignore', 'pipe', 'pipe'] });
    /** @type {Buffer[]} */
    const chunks = [];
    child.stdout.on('data', (c) => {
      chunks.push(c);
      process.stdout.write(c);
    });
    child.stderr.on('data', (c) => {
      chunks.push(c);
      process.stderr.write(c);
    });
    const timer = setTimeout(() => {
      console.error(`\nrun-demo: nx did not finish within ${NX_TIMEOUT_MS / 1000} s on ${name}; stopping it`);
      child.kill('SIGKILL');
    }, NX_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      const output = stripAnsi(Buffer.concat(chunks).toString('utf8'));
      const lines = output.split('\n');
      const headers = lines.filter((l) => /^> nx run \S+/.test(l));
      const summaries = lines.map((l) => l.trim()).filter((l) => l.startsWith(`${PLUGIN_NAME}:`));
      resolve({
        name,
        code,
        wallMs,
        output,
        tasks: headers.length,
        remoteHits: headers.filter((l) => l.includes('[remote cache]')).length,
        localHits: headers.filter((l) => l.includes('[local cache]') || l.includes('[existing outputs match the cache')).length,
        summary: summaries.length > 0 ? summaries[summaries.length - 1] : '',
      });
    });
  });
}

/**
 * Every entry under the projects' dist folders: relative path -> {type, mode, sha256}.
 * @param {string} dir workspace copy
 */
function snapshotOutputs(dir) {
  /** @type {Map<string, {type: string, mode: string, sha256: string}>} */
  const out = new Map();
  const packagesDir = path.join(dir, 'packages');
  /** @param {string} abs */
  const walk = (abs) => {
    const st = fs.lstatSync(abs);
    const rel = path.relative(dir, abs).split(path.sep).join('/');
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    if (st.isDirectory()) {
      out.set(rel + '/', { type: 'dir', mode, sha256: '' });
      for (const e of fs.readdirSync(abs).sort()) walk(path.join(abs, e));
    } else if (st.isSymbolicLink()) {
      out.set(rel, { type: 'symlink', mode: '', sha256: fs.readlinkSync(abs) });
    } else {
      out.set(rel, {
        type: 'file',
        mode,
        sha256: crypto.createHash('sha256').update(fs.readFileSync(abs)).digest('hex'),
      });
    }
  };
  for (const project of fs.readdirSync(packagesDir).sort()) {
    const dist = path.join(packagesDir, project, 'dist');
    if (fs.existsSync(dist)) walk(dist);
  }
  return out;
}

/**
 * @param {ReturnType<typeof snapshotOutputs>} a
 * @param {ReturnType<typeof snapshotOutputs>} b
 * @returns {string[]} differences
 */
function diffOutputs(a, b) {
  const diffs = [];
  for (const [p, ea] of a) {
    const eb = b.get(p);
    if (!eb) diffs.push(`missing on machine-b: ${p}`);
    else if (ea.type !== eb.type) diffs.push(`${p}: ${ea.type} on machine-a, ${eb.type} on machine-b`);
    else if (ea.type === 'file' && ea.sha256 !== eb.sha256) diffs.push(`${p}: content differs`);
    else if (ea.type === 'symlink' && ea.sha256 !== eb.sha256) diffs.push(`${p}: symlink target differs`);
    // Directory modes follow the umask of whoever creates them; file modes are what must survive.
    if (eb && ea.type === 'file' && eb.type === 'file' && ea.mode !== eb.mode) {
      diffs.push(`${p}: mode ${ea.mode} on machine-a, ${eb.mode} on machine-b`);
    }
  }
  for (const p of b.keys()) if (!a.has(p)) diffs.push(`only on machine-b: ${p}`);
  return diffs;
}

/** @param {string} dir */
function dirStats(dir) {
  let files = 0;
  let bytes = 0;
  /** @param {string} d */
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        files++;
        bytes += fs.statSync(p).size;
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return { files, bytes };
}

/** @param {string[][]} rows */
function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const fmt = (/** @type {string[]} */ r) => r.map((c, i) => c.padEnd(widths[i])).join(' | ').trimEnd();
  return [fmt(rows[0]), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.slice(1).map(fmt)].join('\n');
}

async function main() {
  const nx = locateNx();
  banner(`nx-open-cache demo: nx ${nx.version}, node ${process.version}`);

  const missing = pluginPrerequisites();
  if (missing.length > 0) {
    console.log(`note: the plugin is not ready yet; missing: ${missing.join('; ')}.`);
    console.log('      Nx will fail to load it below. Build it first (npm run prepare-native).');
  }

  fs.rmSync(DEMO_DIR, { recursive: true, force: true });
  fs.mkdirSync(SHARED_CACHE, { recursive: true });
  /** @type {Record<string, string>} */
  const dirs = {};
  for (const m of MACHINES) dirs[m] = prepareMachine(m, nx);
  console.log(`prepared ${MACHINES.map((m) => path.relative(REPO_ROOT, dirs[m])).join(' and ')}`);
  console.log(`shared cache: ${SHARED_CACHE}`);

  /** @type {RunResult[]} */
  const results = [];
  for (const [i, m] of MACHINES.entries()) {
    banner(i === 0 ? `${m}: cold build (empty shared cache)` : `${m}: fresh machine, same shared cache`);
    const r = await runBuild(m, dirs[m], nx);
    results.push(r);
    if (r.code !== 0) {
      fail(`nx run-many -t build exited with ${r.code} on ${m}`);
      if (missing.length > 0) console.error(`run-demo: expected: the plugin is not built yet (missing: ${missing.join('; ')})`);
      return;
    }
    if (i === 0) {
      const s = dirStats(SHARED_CACHE);
      console.log(`\nrun-demo: shared cache after ${m}: ${s.files} files, ${(s.bytes / 1024).toFixed(1)} KiB`);
    }
  }

  banner('results');
  const rows = [['run', 'wall time', 'tasks', 'executed', 'remote hits', 'local hits', 'nx-open-cache summary']];
  for (const r of results) {
    rows.push([
      r.name,
      `${(r.wallMs / 1000).toFixed(2)} s`,
      String(r.tasks),
      String(r.tasks - r.remoteHits - r.localHits),
      String(r.remoteHits),
      String(r.localHits),
      r.summary || '(none printed)',
    ]);
  }
  console.log(table(rows));
  const [a, b] = results;
  if (b.wallMs > 0) console.log(`\nmachine-b took ${((b.wallMs / a.wallMs) * 100).toFixed(0)}% of machine-a's wall time.`);

  // Verification.
  /** @type {string[]} */
  const problems = [];
  if (a.tasks === 0) problems.push('machine-a ran no tasks (could not read Nx output)');
  if (a.remoteHits + a.localHits > 0) {
    problems.push(`machine-a was not cold: ${a.remoteHits} remote and ${a.localHits} local cache hits`);
  }
  if (b.tasks !== a.tasks) problems.push(`machine-b ran ${b.tasks} tasks, machine-a ${a.tasks}`);
  if (b.remoteHits < b.tasks) {
    problems.push(`machine-b had ${b.remoteHits} remote cache hits for ${b.tasks} tasks (expected every task from the shared cache)`);
  }
  const snapA = snapshotOutputs(dirs['machine-a']);
  const snapB = snapshotOutputs(dirs['machine-b']);
  const fileCount = [...snapA.values()].filter((e) => e.type === 'file').length;
  if (fileCount === 0) problems.push('machine-a produced no output files');
  const diffs = diffOutputs(snapA, snapB);
  if (diffs.length > 0) {
    problems.push(`outputs differ between machines (${diffs.length}):\n    ${diffs.slice(0, 20).join('\n    ')}`);
  } else if (fileCount > 0) {
    const execs = [...snapA.values()].filter((e) => e.type === 'file' && /[1357]/.test(e.mode.slice(-3))).length;
    console.log(`\noutputs: ${fileCount} files identical on both machines (bytes and modes; ${execs} executable)`);
  }
  // The restored executable must actually run on machine-b (exec bit + shebang).
  const cliBin = path.join('packages', 'cli', 'dist', 'bin', 'cli');
  if (fs.existsSync(path.join(dirs['machine-b'], cliBin))) {
    const outA = spawnSync(path.join(dirs['machine-a'], cliBin), { encoding: 'utf8' });
    const outB = spawnSync(path.join(dirs['machine-b'], cliBin), { encoding: 'utf8' });
    if (outB.error || outB.status !== 0) {
      problems.push(`machine-b's restored ${cliBin} does not run: ${outB.error?.message ?? outB.stderr}`);
    } else if (outB.stdout !== outA.stdout) {
      problems.push(`machine-b's ${cliBin} prints something else than machine-a's`);
    } else {
      console.log(`machine-b's restored ${cliBin} runs and prints the same as machine-a's:\n${outB.stdout.trimEnd()}`);
    }
  }

  if (problems.length > 0) {
    for (const p of problems) fail(p);
    return;
  }
  console.log('\nrun-demo: OK: machine-b restored every task from the shared cache, outputs identical.');
}

if (require.main === module) {
  main().catch((err) => {
    fail(err instanceof Error ? err.stack ?? err.message : String(err));
  });
}

module.exports = { snapshotOutputs, diffOutputs, stripAnsi };
