'use strict';
// The cache host: one process per workspace data directory and package version that runs the cache
// proxy of every Nx run there, so a run's proxy outlives whatever process Nx called the hooks in
// (src/host/ holds the logic). `node lib/host.js <dir> <version>` is the host itself; the rest is
// the hooks' side: find or start the host, register a run, end it; and `nx-open-cache host`.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');

const { commandArgs } = require('./args.js');

const VERSION = require('../package.json').version;

const HOST_HELP = `Usage: nx-open-cache host [status|stop] [--json]

The workspace's cache host: the process that serves the cache proxies of the Nx runs here.
  status   its pid, version, log file and runs (the default); --json prints them as JSON
  stop     stop it (runs still registered finish their requests in flight first); it also
           exits by itself a few seconds after its last run ends`;

/** How long preTasksExecution waits for a host (one starting takes a fraction of a second). */
const ATTACH_TIMEOUT_MS = 15_000;
/** How long `nx-open-cache host stop` waits for the host to be gone. */
const STOP_WAIT_MS = 20_000;
/** Hosts one hook starts at most (one that finds another host holding the lock exits). */
const MAX_SPAWNS = 3;

/** @typedef {typeof import('../index')} Addon */
/** @typedef {import('../index').HostRun} HostRun */

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The host's environment: the hook's, without NODE_OPTIONS (an `--inspect` or `--require` meant for
 * Nx must not follow a background process). Runs get their own environment with each registration.
 * @returns {NodeJS.ProcessEnv}
 */
function hostEnv() {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  return env;
}

/**
 * Starts a host process, detached, its output appended to the host log; it holds none of the
 * caller's pipes, so it never keeps a CI step or a terminal waiting.
 * @param {string} dir
 * @param {string} logFile
 * @returns {{ exited: boolean }}
 */
function spawnHost(dir, logFile) {
  fs.mkdirSync(dir, { recursive: true });
  const state = { exited: false };
  const fd = fs.openSync(logFile, 'a', 0o600);
  try {
    const child = spawn(process.execPath, [__filename, dir, VERSION], {
      detached: true,
      stdio: ['ignore', fd, fd],
      cwd: os.tmpdir(),
      env: hostEnv(),
      windowsHide: true,
    });
    child.on('exit', () => { state.exited = true; });
    child.on('error', () => { state.exited = true; });
    child.unref();
  } finally {
    fs.closeSync(fd);
  }
  return state;
}

/**
 * Registers a run at the workspace's host, starting one when none runs (or the one found is
 * exiting). Throws with the reason when no host could serve the run within ATTACH_TIMEOUT_MS.
 * @param {Addon} addon
 * @param {string} dir  the plugin data directory
 * @param {{ id?: string, workspaceRoot: string, options: unknown, env: Record<string, string>, argv: readonly string[] }} request
 * @returns {Promise<HostRun>}
 */
async function attachRun(addon, dir, request) {
  const { log } = addon.hostPaths(dir, VERSION);
  const deadline = Date.now() + ATTACH_TIMEOUT_MS;
  /** @type {{ exited: boolean } | undefined} */ let child;
  let spawned = 0;
  for (let attempt = 0; ; attempt += 1) {
    const r = await addon.hostAttach(dir, VERSION, /** @type {any} */ (request));
    if (r.run) return r.run;
    const reason = r.reason || 'no answer';
    if (!r.retry) throw new Error(reason);
    if (!child || child.exited) {
      if (spawned >= MAX_SPAWNS) throw new Error(`${reason} (${spawned} hosts started; their log: ${log})`);
      child = spawnHost(dir, log);
      spawned += 1;
    }
    if (Date.now() >= deadline) {
      throw new Error(`no cache host answered within ${ATTACH_TIMEOUT_MS / 1000} s (${reason}; host log: ${log})`);
    }
    await sleep(Math.min(10 * 2 ** attempt, 100));
  }
}

/**
 * Ends a run at the workspace's host (`id` undefined: a run of an Nx without run ids).
 * @param {Addon} addon
 * @param {string} dir
 * @param {string | undefined} id
 */
function endRun(addon, dir, id) {
  return addon.hostEnd(dir, VERSION, id ?? null);
}

/**
 * `nx-open-cache host [status|stop] [--json]`: the workspace's cache host, its runs; stop it.
 * @param {string[]} args
 * @param {string} dir
 * @returns {Promise<number>}
 */
async function hostCommand(args, dir) {
  const usage = { command: 'host', usage: HOST_HELP, errorCode: 1, positionals: ['status', 'stop'] };
  const parsed = commandArgs(usage, args, { json: { type: 'boolean' } });
  if (typeof parsed === 'number') return parsed;
  const addon = require('../index.js');
  const json = parsed.values.json === true;
  const [sub = 'status'] = parsed.positionals;
  const { log } = addon.hostPaths(dir, VERSION);
  if (sub === 'stop') {
    if (!(await addon.hostStop(dir, VERSION))) {
      console.log('nx-open-cache: no cache host running');
      return 0;
    }
    // Runs still registered finish their requests in flight first (bounded by the proxies' grace).
    const deadline = Date.now() + STOP_WAIT_MS;
    while ((await addon.hostStatus(dir, VERSION)) && Date.now() < deadline) await sleep(100);
    const gone = !(await addon.hostStatus(dir, VERSION));
    console.log(gone ? 'nx-open-cache: the cache host stopped' : `nx-open-cache: the cache host is still stopping (log: ${log})`);
    return gone ? 0 : 1;
  }
  const status = await addon.hostStatus(dir, VERSION);
  if (json) {
    console.log(JSON.stringify(status, null, 2));
    return 0;
  }
  if (!status) {
    console.log(`nx-open-cache: no cache host running (log: ${log})`);
    return 0;
  }
  console.log(`nx-open-cache host: pid ${status.pid}, version ${status.version}, since ${new Date(status.startedAt).toISOString()}, log ${log}`);
  for (const r of status.runs) {
    console.log(`  run ${r.runId}: ${r.location} (${r.mode}), Nx command ${r.command}, last cache request ${r.silentSeconds} s ago`);
  }
  if (status.runs.length === 0) console.log('  no runs (it exits in a few seconds)');
  return 0;
}

/**
 * The host process: serves until it is idle (or told to stop), then exits.
 * @param {string} dir
 * @param {string} version
 */
async function main(dir, version) {
  const addon = require('../index.js');
  const host = addon.openCacheHost(dir, version);
  // Another host holds the lock: it serves this directory.
  if (!host) return;
  for (const signal of /** @type {const} */ (['SIGTERM', 'SIGINT', 'SIGHUP'])) process.on(signal, () => host.stop());
  await host.wait();
}

if (require.main === module) {
  const [dir, version] = process.argv.slice(2);
  main(dir, version || VERSION).then(
    () => process.exit(0),
    (e) => {
      console.error(`nx-open-cache host: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}

module.exports = { VERSION, attachRun, endRun, hostCommand };
