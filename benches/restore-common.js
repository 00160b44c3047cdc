'use strict';
/**
 * What the restore benchmarks share (benches/run.js: proxy + fs vs nginx on loopback;
 * benches/restore-link.js: proxy on a cloud backend vs `serve`, over a shaped link): the fresh-machine
 * `nx run-many -t build` runs, timed and checked, and small report helpers.
 *
 * Paths come from `benchPaths(benchDir)`: the workspace `<benchDir>/ws`, its Nx cache and workspace
 * data (`NX_CACHE_DIRECTORY`, `NX_WORKSPACE_DATA_DIRECTORY`, emptied for every fresh machine), the
 * project-graph template every fresh machine starts from, and the run logs.
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const ws = require('./workspace.js');
const cpu = require('./cpu.js');

const NX_TIMEOUT_MS = 180_000;

/** A functional failure of a bench (wrong hits, differing outputs): reported without a stack. */
class BenchError extends Error {}

/**
 * @typedef {object} BenchPaths
 * @property {string} benchDir
 * @property {string} wsDir        the generated workspace
 * @property {string} logDir       one log per nx run
 * @property {string} cacheDir     NX_CACHE_DIRECTORY
 * @property {string} wsDataDir    NX_WORKSPACE_DATA_DIRECTORY
 * @property {string} wsDataTemplate  workspace data with the project graph only
 */

/** @param {string} benchDir @returns {BenchPaths} */
function benchPaths(benchDir) {
  const wsDir = path.join(benchDir, 'ws');
  return {
    benchDir,
    wsDir,
    logDir: path.join(benchDir, 'logs'),
    cacheDir: path.join(wsDir, '.nx', 'cache'),
    wsDataDir: path.join(wsDir, '.nx', 'workspace-data'),
    wsDataTemplate: path.join(benchDir, 'workspace-data-template'),
  };
}

/** @param {string} s */
function stripAnsi(s) {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/\r/g, '');
}

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** @param {number[]} xs */
const stats = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length });

/** Machine description for the report. */
function machine() {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  const nprocRun = spawnSync('nproc', { encoding: 'utf8' });
  const nproc = nprocRun.status === 0 ? nprocRun.stdout.trim() : String(os.availableParallelism());
  const meminfo = fs.existsSync('/proc/meminfo') ? fs.readFileSync('/proc/meminfo', 'utf8') : '';
  const kb = Number(/^MemTotal:\s*(\d+)\s*kB/m.exec(meminfo)?.[1] ?? 0);
  const memory = kb ? `${(kb / 1024 / 1024).toFixed(1)} GiB` : `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`;
  return { model, nproc, memory, kernel: `${os.type()} ${os.release()} ${os.arch()}`, node: process.version };
}

/** Environment for Nx: inherited minus every NX_* setting. */
function baseEnv() {
  /** @type {Record<string, string>} */
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('NX_') || typeof v !== 'string') continue;
    env[k] = v;
  }
  return env;
}

/**
 * The environment of a bench nx run: no daemon, no Nx Cloud, no TUI, the bench's cache and
 * workspace-data directories, plus `extra`.
 * @param {BenchPaths} p
 * @param {Record<string, string>} [extra]
 */
function nxEnv(p, extra = {}) {
  return {
    ...baseEnv(),
    NX_DAEMON: 'false',
    NX_NO_CLOUD: 'true',
    NX_TUI: 'false',
    NX_CACHE_DIRECTORY: p.cacheDir,
    NX_WORKSPACE_DATA_DIRECTORY: p.wsDataDir,
    FORCE_COLOR: '0',
    ...extra,
  };
}

/**
 * @typedef {object} NxRun
 * @property {string} label
 * @property {number | null} code
 * @property {number} wallMs
 * @property {number} cpuS  CPU seconds of nx and everything it waited for (the in-process proxy included)
 * @property {number} tasks
 * @property {number} remoteHits
 * @property {number} localHits
 * @property {string[]} pluginLines  lines starting with `nx-open-cache:`
 * @property {string} output
 * @property {string} logFile
 */

/**
 * Runs `nx run-many -t build --output-style=static` in the bench workspace and times it.
 * @param {BenchPaths} p
 * @param {string} label
 * @param {{bin: string}} nx
 * @param {Record<string, string>} env
 * @returns {Promise<NxRun>}
 */
function runNx(p, label, nx, env) {
  const args = [path.join('node_modules', 'nx', nx.bin), 'run-many', '-t', 'build', '--output-style=static'];
  return new Promise((resolve, reject) => {
    const cpuBefore = cpu.reapedChildrenCpu();
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { cwd: p.wsDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    /** @type {Buffer[]} */
    const chunks = [];
    child.stdout.on('data', (c) => chunks.push(c));
    child.stderr.on('data', (c) => chunks.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), NX_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      const cpuS = cpu.reapedChildrenCpu() - cpuBefore;
      clearTimeout(timer);
      const output = stripAnsi(Buffer.concat(chunks).toString('utf8'));
      fs.mkdirSync(p.logDir, { recursive: true });
      const logFile = path.join(p.logDir, `${label}.log`);
      fs.writeFileSync(logFile, output);
      const lines = output.split('\n');
      const headers = lines.filter((l) => /^> nx run \S+/.test(l));
      resolve({
        label,
        code,
        wallMs,
        cpuS,
        output,
        logFile,
        tasks: headers.length,
        remoteHits: headers.filter((l) => l.includes('[remote cache]')).length,
        localHits: headers.filter((l) => l.includes('[local cache]') || l.includes('[existing outputs match the cache')).length,
        pluginLines: lines.map((l) => l.trim()).filter((l) => l.startsWith('nx-open-cache:')),
      });
    });
  });
}

/**
 * Computes the project graph once (`nx show projects`, expecting `projects` projects named pNN) and
 * keeps the workspace data as the template every fresh machine starts from.
 * @param {BenchPaths} p
 * @param {{bin: string}} nx
 * @param {number} projects
 */
function prepareWorkspaceData(p, nx, projects) {
  const show = spawnSync(process.execPath, [path.join('node_modules', 'nx', nx.bin), 'show', 'projects'], {
    cwd: p.wsDir,
    env: nxEnv(p),
    encoding: 'utf8',
  });
  const shown = (show.stdout || '').split('\n').filter((l) => /^p\d+$/.test(l.trim())).length;
  if (show.status !== 0 || shown !== projects) {
    throw new BenchError(`nx show projects found ${shown} projects (expected ${projects}):\n${show.stdout}${show.stderr}`);
  }
  fs.rmSync(p.wsDataTemplate, { recursive: true, force: true });
  fs.cpSync(p.wsDataDir, p.wsDataTemplate, { recursive: true });
}

/** Flushes dirty pages (the previous run's writes and deletes) so they do not land in the next timing. */
function settle() {
  spawnSync('sync', { stdio: 'ignore' });
}

/**
 * A fresh "machine": empty local cache, workspace data with the project graph only, no outputs.
 * @param {BenchPaths} p
 */
function freshMachine(p) {
  fs.rmSync(p.cacheDir, { recursive: true, force: true });
  fs.rmSync(p.wsDataDir, { recursive: true, force: true });
  fs.cpSync(p.wsDataTemplate, p.wsDataDir, { recursive: true });
  ws.deleteOutputs(p.wsDir);
  settle();
}

/** @returns {string} the 1, 5 and 15 minute load averages */
function loadavg() {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

/**
 * Checks one run; throws a BenchError naming what is wrong.
 *
 * kind: `cold` (every task runs and is stored), `restore` (every task a remote cache hit), `floor`
 * (every task a local cache hit). via: `plugin` (nx-open-cache's proxy serves Nx; its summary line must
 * agree) or `server` (NX_SELF_HOSTED_REMOTE_CACHE_SERVER is set: the plugin must step aside and Nx's
 * own client talk to the server). `expected`: the cold run's output snapshot, compared file by file.
 * @param {BenchPaths} p
 * @param {NxRun} r
 * @param {{projects: number, kind: 'cold' | 'restore' | 'floor', via: 'plugin' | 'server', expected?: Map<string, string>}} o
 */
function verifyRun(p, r, o) {
  const problems = [];
  if (r.code !== 0) problems.push(`nx exited with ${r.code}`);
  if (r.tasks !== o.projects) problems.push(`${r.tasks} tasks in the output, expected ${o.projects}`);
  if (o.kind === 'cold' && r.remoteHits + r.localHits > 0) {
    problems.push(`cold run had ${r.remoteHits} remote and ${r.localHits} local hits`);
  }
  if (o.kind === 'restore' && r.remoteHits !== o.projects) {
    problems.push(`${r.remoteHits} of ${r.tasks} tasks were remote cache hits, expected all ${o.projects}`);
  }
  if (o.kind === 'floor' && r.localHits !== o.projects) {
    problems.push(`${r.localHits} of ${r.tasks} tasks were local cache hits, expected all ${o.projects}`);
  }
  const summary = r.pluginLines.find((l) => /^nx-open-cache: \d+ hits?,/.test(l));
  if (o.via === 'plugin' && o.kind === 'restore') {
    const m = summary && /^nx-open-cache: (\d+) hits?, (\d+) miss(?:es)?, (\d+) stored.*, (\d+) errors?/.exec(summary);
    if (!m) problems.push(`no nx-open-cache summary line (plugin did not serve this run?)`);
    else if (Number(m[1]) !== o.projects || Number(m[2]) !== 0 || Number(m[4]) !== 0) {
      problems.push(`plugin summary says: ${summary}`);
    }
  }
  if (o.via === 'plugin' && o.kind === 'cold') {
    const m = summary && /^nx-open-cache: \d+ hits?, \d+ miss(?:es)?, (\d+) stored.*, (\d+) errors?/.exec(summary);
    if (!m || Number(m[1]) !== o.projects || Number(m[2]) !== 0) problems.push(`plugin summary says: ${summary ?? '(none)'}`);
  }
  if (o.via === 'server' && !r.pluginLines.some((l) => l.includes('stays out of the way'))) {
    problems.push('the plugin did not step aside for NX_SELF_HOSTED_REMOTE_CACHE_SERVER');
  }
  if (o.expected) {
    const diffs = ws.diffSnapshots(o.expected, ws.snapshotOutputs(p.wsDir).files);
    if (diffs.length) problems.push(`outputs differ from the cold run:\n      ${diffs.join('\n      ')}`);
  }
  if (problems.length) {
    const tail = r.output.split('\n').slice(-25).join('\n');
    throw new BenchError(
      `${r.label}: ${problems.join('; ')}\n  (full output: ${path.relative(ws.REPO_ROOT, r.logFile)})\n--- last lines ---\n${tail}`,
    );
  }
}

/** @param {number} ms */
const sec = (ms) => `${(ms / 1000).toFixed(2)} s`;
/** @param {{median: number, min: number, max: number}} s */
const secRange = (s) => `${sec(s.median)} (${(s.min / 1000).toFixed(2)}-${(s.max / 1000).toFixed(2)})`;
/** @param {number} x */
const ratio = (x) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');

/** @param {string[][]} rows */
function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const fmt = (/** @type {string[]} */ r) => r.map((c, i) => c.padEnd(widths[i])).join(' | ').trimEnd();
  return [fmt(rows[0]), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.slice(1).map(fmt)].join('\n');
}

/** @param {string[][]} rows */
function mdTable(rows) {
  const line = (/** @type {string[]} */ r) => `| ${r.join(' | ')} |`;
  return [line(rows[0]), line(rows[0].map(() => '---')), ...rows.slice(1).map(line)].join('\n');
}

module.exports = {
  BenchError,
  benchPaths,
  stripAnsi,
  median,
  stats,
  machine,
  baseEnv,
  nxEnv,
  runNx,
  prepareWorkspaceData,
  settle,
  freshMachine,
  loadavg,
  verifyRun,
  sec,
  secRange,
  ratio,
  table,
  mdTable,
};
