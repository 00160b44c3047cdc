'use strict';
/**
 * Does a changed NX_OPEN_CACHE_* variable reach the plugin on the next run while the Nx daemon stays
 * up? (The README's daemon paragraph states the answer; this is how it was checked.)
 *
 * One real workspace (the packed package, nx from npm), daemon on, five runs without stopping the
 * daemon, each with a different environment, each after changing one source file so that two tasks
 * miss: a variable set, one removed and another set, a value changed, the last one removed. For each
 * run, the mode and write prefix in the run's summary and where its objects were written show whether
 * the plugin saw that run's environment. The daemon's process id is the same after every run.
 *
 * Standalone: node __tests__/helpers/daemon-env.js [nx version ...]   (default: 24.0.6 and 20.8.4)
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { NX_VERSION, NX_OLDEST, createWorkspace, storeObjects } = require('./nx-workspace.js');

/** @typedef {import('./nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./nx-workspace.js').RunResult} RunResult */

/**
 * @param {NxWorkspace} ws
 * @returns {number | null} the running daemon's pid, from Nx's own server-process.json
 */
function daemonPid(ws) {
  const file = path.join(ws.root, '.nx', 'workspace-data', 'd', 'server-process.json');
  if (!fs.existsSync(file)) return null;
  const pid = JSON.parse(fs.readFileSync(file, 'utf8')).processId;
  return typeof pid === 'number' ? pid : null;
}

/** @param {number} pid */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n${r.output}`;
}

/**
 * Runs the five runs on a workspace that has nx and the packed plugin installed, and records for
 * each whether the plugin saw the run's environment. Asserts only what must hold on every Nx: each
 * run is green, a daemon ran, and it was the same daemon process throughout.
 * @param {NxWorkspace} ws
 * @returns {Promise<{ nxVersion: string, daemonPid: number, runs: { label: string, pickedUp: boolean, expected: string, seen: string }[] }>}
 */
async function daemonEnvRuns(ws) {
  const nxVersion = JSON.parse(fs.readFileSync(path.join(ws.nxPackageDir, 'package.json'), 'utf8')).version;
  const store = ws.newStorePath('daemon-env');
  ws.setPluginOptions({ backend: 'fs', path: store });
  await ws.nxReset();
  // Each step: the variables set for that run, and what the plugin must see if it got them (a
  // variable of an earlier run that is not set now must be gone).
  const steps = [
    { label: 'nothing set', env: {}, mode: 'read-write', prefix: '' },
    { label: 'NX_OPEN_CACHE_MODE=read-only (set)', env: { NX_OPEN_CACHE_MODE: 'read-only' }, mode: 'read-only', prefix: '' },
    { label: 'NX_OPEN_CACHE_MODE unset, NX_OPEN_CACHE_WRITE_PREFIX=trusted (set)', env: { NX_OPEN_CACHE_WRITE_PREFIX: 'trusted' }, mode: 'read-write', prefix: 'trusted' },
    { label: 'NX_OPEN_CACHE_WRITE_PREFIX=untrusted (changed)', env: { NX_OPEN_CACHE_WRITE_PREFIX: 'untrusted' }, mode: 'read-write', prefix: 'untrusted' },
    { label: 'NX_OPEN_CACHE_WRITE_PREFIX unset', env: {}, mode: 'read-write', prefix: '' },
  ];
  /** @type {number | null} */ let pid = null;
  const runs = [];
  const source = path.join(ws.root, 'packages', 'lib-a', 'src', 'index.txt');
  for (const [i, step] of steps.entries()) {
    // One changed input per run: lib-a (and lib-b, which depends on it) miss and are written.
    fs.appendFileSync(source, `change ${i}\n`);
    const before = new Set(storeObjects(store));
    ws.removeLastRun();
    const r = await ws.runBuild({ env: { NX_DAEMON: 'true', ...step.env } });
    assert.equal(r.code, 0, `run ${i + 1} (${step.label}) failed${show(r)}`);
    const now = daemonPid(ws);
    assert.ok(now && alive(now), `run ${i + 1} (${step.label}): no daemon running${show(r)}`);
    if (pid === null) pid = now;
    assert.equal(now, pid, `run ${i + 1} (${step.label}): the daemon was restarted (${pid} -> ${now})`);
    const summary = ws.readLastRun();
    assert.ok(summary, `run ${i + 1} (${step.label}): no last-run.json${show(r)}`);
    const written = storeObjects(store).filter((f) => !before.has(f));
    // The write prefix the plugin used: from the location line ("...; writes trusted/, reads ...").
    const m = /; writes ([^,]*)\/,/.exec(summary.location);
    const prefix = m ? m[1] : '';
    const modeOk = summary.mode === step.mode;
    const prefixOk = prefix === step.prefix;
    const writesOk = step.mode === 'read-only'
      ? written.length === 0
      : written.length > 0 && written.every((f) => (step.prefix ? f.startsWith(`${step.prefix}/`) : !/^(un)?trusted\//.test(f)));
    runs.push({
      label: step.label,
      pickedUp: modeOk && prefixOk && writesOk,
      expected: `mode ${step.mode}, write prefix ${step.prefix || '(root)'}`,
      seen: `mode ${summary.mode} (${summary.modeSource}), write prefix ${prefix || '(root)'}, ${written.length} objects written${written.length ? ` under ${[...new Set(written.map((f) => (/^(un)?trusted\//.test(f) ? f.split('/')[0] : '(root)')))].join(', ')}` : ''}`,
    });
  }
  return { nxVersion, daemonPid: /** @type {number} */ (pid), runs };
}

module.exports = { daemonEnvRuns, daemonPid };

if (require.main === module) {
  (async () => {
    const versions = process.argv.slice(2);
    for (const nxVersion of versions.length ? versions : [NX_VERSION, NX_OLDEST]) {
      const ws = await createWorkspace({ nxVersion });
      try {
        const result = await daemonEnvRuns(ws);
        console.log(JSON.stringify(result, null, 2));
        for (const run of result.runs) {
          console.log(`nx ${result.nxVersion} (daemon pid ${result.daemonPid} throughout): ${run.label}: ${run.pickedUp ? 'seen' : 'NOT seen'}; expected ${run.expected}; got ${run.seen}`);
        }
      } finally {
        await ws.dispose();
      }
    }
  })().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
