'use strict';
/**
 * Concurrent Nx runs in one workspace, daemon on: five `nx run-many -t build` at once, round after
 * round, with plugin isolation on (Nx's default) and off. Every round changes one project of each
 * run's pair and empties the local cache, so every run looks up both tasks remotely: one remote hit
 * and one miss that builds and stores. Every run must be green and its own summary (the per-run file)
 * must count its own traffic only. Afterwards nothing of ours may be left: no cache host process, no
 * listening socket, no lock held.
 *
 * Run: node --test --test-concurrency=1 __tests__/concurrent.e2e.test.js
 * Rounds: NXOC_E2E_CONCURRENT_ROUNDS (default 10: about 2.5 minutes for both configurations).
 */

const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const { cleanEnv, createWorkspace, disposePack, storeObjects } = require('./helpers/nx-workspace.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

const RUNS = 5;
const ROUNDS = Math.max(1, Number(process.env.NXOC_E2E_CONCURRENT_ROUNDS) || 10);
/** How long the task of the run that is killed would take. */
const SLOW_MS = 60_000;
/** Upper bound for the cache host to exit once the last run ended (its grace is a few seconds). */
const HOST_EXIT_WAIT_MS = 30_000;

/** @type {NxWorkspace} */
let ws;

/** @param {number} k */
const pair = (k) => ({ x: `g${k}-x`, y: `g${k}-y`, dir: `groups/g${k}` });

/**
 * A build step that takes a while (so that runs overlap) and writes dist/out.txt from the source.
 * @returns {string}
 */
function slowBuildScript() {
  return `'use strict';
const fs = require('node:fs');
const path = require('node:path');
const [name, dir, ms] = process.argv.slice(2);
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(ms));
const root = path.join(__dirname, '..', dir);
fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
fs.mkdirSync(path.join(root, 'dist'), { recursive: true });
fs.writeFileSync(path.join(root, 'dist', 'out.txt'), 'built ' + name + '\\n' + fs.readFileSync(path.join(root, 'src', 'index.txt'), 'utf8'));
fs.appendFileSync(path.join(__dirname, '..', '..', 'concurrent-build-log.txt'), name + '\\n');
console.log('built ' + name);
`;
}

/** Adds the run pairs (g<k>-x, g<k>-y) to the workspace and commits them. */
function addPairs() {
  fs.writeFileSync(path.join(ws.root, 'tools', 'slow-build.js'), slowBuildScript());
  for (let k = 0; k < RUNS; k++) {
    const p = pair(k);
    for (const [name, sub, ms] of [[p.x, 'x', 600 + 250 * k], [p.y, 'y', 100]]) {
      const dir = `${p.dir}/${sub}`;
      fs.mkdirSync(path.join(ws.root, dir, 'src'), { recursive: true });
      fs.writeFileSync(path.join(ws.root, dir, 'src', 'index.txt'), `source of ${name}\n`);
      fs.writeFileSync(path.join(ws.root, dir, 'project.json'), JSON.stringify({
        name,
        targets: {
          build: {
            executor: 'nx:run-commands',
            cache: true,
            inputs: ['{projectRoot}/src/**/*'],
            outputs: ['{projectRoot}/dist'],
            options: { command: `node tools/slow-build.js ${name} ${dir} ${ms}` },
          },
        },
      }, null, 2));
    }
  }
  // A task that takes a minute: the run interrupted before its postTasksExecution.
  fs.mkdirSync(path.join(ws.root, 'slow', 'src'), { recursive: true });
  fs.writeFileSync(path.join(ws.root, 'slow', 'src', 'index.txt'), 'slow\n');
  fs.writeFileSync(path.join(ws.root, 'slow', 'project.json'), JSON.stringify({
    name: 'slow',
    targets: { build: { executor: 'nx:run-commands', cache: true, outputs: ['{projectRoot}/dist'], options: { command: `node tools/slow-build.js slow slow ${SLOW_MS}` } } },
  }, null, 2));
  for (const args of [['add', '-A'], ['commit', '-q', '-m', 'pairs']]) {
    const r = spawnSync('git', args, { cwd: ws.root, encoding: 'utf8' });
    assert.equal(r.status, 0, `git ${args.join(' ')}: ${r.stderr}`);
  }
}

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/** The plugin's files under the workspace data directory. */
function pluginDataDir() {
  return path.join(ws.root, '.nx', 'workspace-data', 'nx-open-cache');
}

/**
 * The per-run summaries written since `since` (ms), by the command they belong to.
 * @param {number} since
 * @returns {Map<string, any[]>}
 */
function runSummariesSince(since) {
  const dir = path.join(pluginDataDir(), 'runs');
  /** @type {Map<string, any[]>} */ const byCommand = new Map();
  if (!fs.existsSync(dir)) return byCommand;
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.json')) continue;
    const s = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    if (Date.parse(s.endedAt) < since) continue;
    const list = byCommand.get(s.command) || [];
    list.push(s);
    byCommand.set(s.command, list);
  }
  return byCommand;
}

/**
 * The `nx run-many` arguments of run k.
 * @param {number} k
 */
function runArgs(k) {
  const p = pair(k);
  return ['run-many', '-t', 'build', '-p', `${p.x},${p.y}`, '--output-style=static'];
}

/* ------------------------------------------------------------------------------------------------ */
/* what must be left behind: nothing                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/** @returns {{ pid: number, cmdline: string }[]} live processes whose command line mentions `needle` */
function processesMentioning(/** @type {string} */ needle) {
  /** @type {{ pid: number, cmdline: string }[]} */ const found = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline;
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline.includes(needle)) found.push({ pid: Number(entry), cmdline });
  }
  return found;
}

/** @returns {Set<string>} inodes of listening TCP sockets (IPv4 and IPv6) */
function listeningSocketInodes() {
  /** @type {Set<string>} */ const inodes = new Set();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!fs.existsSync(table)) continue;
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[3] === '0A') inodes.add(cols[9]);
    }
  }
  return inodes;
}

/**
 * Listening TCP sockets held by process `pid`.
 * @param {number} pid
 * @param {Set<string>} listening
 */
function listeningSocketsOf(pid, listening) {
  /** @type {string[]} */ const held = [];
  let fds = [];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return held;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m && listening.has(m[1])) held.push(m[1]);
    } catch { /* closed meanwhile */ }
  }
  return held;
}

/** @returns {string[]} the flock()s held on the plugin's lock files, as /proc/locks lines */
function heldPluginLocks() {
  const dir = pluginDataDir();
  if (!fs.existsSync(dir)) return [];
  const inodes = fs.readdirSync(dir)
    .filter((f) => f.endsWith('.lock'))
    .map((f) => String(fs.statSync(path.join(dir, f)).ino));
  return fs.readFileSync('/proc/locks', 'utf8').split('\n')
    .filter((l) => inodes.some((ino) => l.split(/\s+/).some((c) => c.endsWith(`:${ino}`))));
}

/**
 * Waits (bounded) until no cache host of this workspace runs, then checks that nothing of ours is
 * left: no host process, no listening socket in the workspace's processes (the Nx daemon and its
 * plugin workers included), no lock held.
 */
async function assertNothingLeft() {
  const hostScript = path.join(ws.root, 'node_modules', 'nx-open-cache', 'lib', 'host.js');
  const deadline = Date.now() + HOST_EXIT_WAIT_MS;
  while (processesMentioning(hostScript).length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.deepEqual(processesMentioning(hostScript), [], 'a cache host process is still running');
  const listening = listeningSocketInodes();
  for (const p of processesMentioning(ws.root)) {
    assert.deepEqual(listeningSocketsOf(p.pid, listening), [], `process ${p.pid} (${p.cmdline}) still listens on TCP`);
  }
  assert.deepEqual(heldPluginLocks(), [], 'a lock of the plugin is still held');
}

/**
 * Every run went through the cache host (none fell back to a proxy in the daemon or its workers).
 * @param {string} label
 */
function assertServedByTheHost(label) {
  const daemonLog = path.join(ws.root, '.nx', 'workspace-data', 'd', 'daemon.log');
  const daemon = fs.existsSync(daemonLog) ? fs.readFileSync(daemonLog, 'utf8') : '';
  assert.ok(!daemon.includes('cannot use the cache host'), `${label}: a run fell back to an in-process proxy:\n${daemon}`);
  const version = JSON.parse(fs.readFileSync(path.join(ws.root, 'node_modules', 'nx-open-cache', 'package.json'), 'utf8')).version;
  const hostLog = fs.readFileSync(path.join(pluginDataDir(), `host-${version}.log`), 'utf8');
  const registered = hostLog.split('\n').filter((l) => / run \d+ registered /.test(l)).length;
  assert.equal(registered, RUNS * (ROUNDS + 1), `${label}: runs registered at the host:\n${hostLog}`);
}

/* ------------------------------------------------------------------------------------------------ */
/* the rounds                                                                                        */
/* ------------------------------------------------------------------------------------------------ */

/**
 * One round: change every x, empty the local cache, run the five commands at once, check each.
 * @param {number} round
 * @param {Record<string, string>} env
 * @param {string} label
 */
async function oneRound(round, env, label) {
  for (let k = 0; k < RUNS; k++) {
    fs.writeFileSync(path.join(ws.root, pair(k).dir, 'x', 'src', 'index.txt'), `${label} round ${round} of g${k}-x\n`);
  }
  fs.rmSync(env.NX_CACHE_DIRECTORY, { recursive: true, force: true });
  const since = Date.now();
  const results = await Promise.all(Array.from({ length: RUNS }, (_, k) => ws.nx(runArgs(k), { env })));
  results.forEach((r, k) => {
    assert.equal(r.timedOut, false, `${label} round ${round} run ${k}: nx timed out${show(r)}`);
    assert.equal(r.code, 0, `${label} round ${round} run ${k}: nx failed${show(r)}`);
  });
  const summaries = runSummariesSince(since);
  for (let k = 0; k < RUNS; k++) {
    const command = runArgs(k).join(' ');
    const mine = summaries.get(command) || [];
    assert.equal(mine.length, 1, `${label} round ${round} run ${k}: expected one summary for "${command}", got ${JSON.stringify([...summaries.keys()])}`);
    const s = mine[0];
    const what = `${label} round ${round} run ${k}: summary ${JSON.stringify(s)}`;
    assert.equal(s.hits + s.misses, 2, `${what}: hits + misses must be its 2 cacheable tasks`);
    assert.equal(s.misses, 1, `${what}: the changed project is a miss`);
    assert.equal(s.stored, 1, `${what}: the changed project was built and stored`);
    assert.equal(s.errorCount, 0, `${what}: errors`);
  }
}

/** The environment of every nx command of a configuration. */
function configEnv(/** @type {boolean} */ isolate) {
  return {
    NX_DAEMON: 'true',
    NX_ISOLATE_PLUGINS: String(isolate),
    NX_CACHE_DIRECTORY: path.join(ws.base, `nx-cache-${isolate ? 'iso' : 'noiso'}`),
  };
}

before(async () => {
  ws = await createWorkspace();
  addPairs();
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

describe(`${RUNS} concurrent nx runs in one workspace, daemon on, ${ROUNDS} round(s)`, () => {
  for (const isolate of [true, false]) {
    const label = `NX_ISOLATE_PLUGINS=${isolate}`;
    test(`${label}: every run green, each summary counts its own traffic, nothing left behind`, async (t) => {
      await ws.resetScenario();
      const env = configEnv(isolate);
      const store = ws.newStorePath(isolate ? 'iso' : 'noiso');
      ws.setPluginOptions({ backend: 'fs', path: store });
      // Fill the store with every y (and the first x) sequentially.
      for (let k = 0; k < RUNS; k++) {
        const r = await ws.nx(runArgs(k), { env });
        assert.equal(r.code, 0, `${label} warm-up run ${k}${show(r)}`);
      }
      assert.equal(storeObjects(store).length, 2 * RUNS, `${label}: warm-up stored both tasks of every pair`);
      for (let round = 1; round <= ROUNDS; round++) {
        const started = Date.now();
        await oneRound(round, env, label);
        t.diagnostic(`${label} round ${round}: ${RUNS} runs green in ${Date.now() - started} ms`);
      }
      assert.equal(storeObjects(store).length, 2 * RUNS + RUNS * ROUNDS, `${label}: one new object per run and round`);
      assertServedByTheHost(label);
      // The daemon (and its plugin workers) still run: none of them may hold a proxy now.
      await assertNothingLeft();
      await ws.nx(['daemon', '--stop'], { env });
      await assertNothingLeft();
    });
  }

  test('a run killed before its postTasksExecution ends at the host soon after, and the host exits', async () => {
    await ws.resetScenario();
    const env = configEnv(true);
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('killed') });
    const nx = spawn(process.execPath, [ws.nxBin, 'run-many', '-t', 'build', '-p', 'slow', '--output-style=static'], {
      cwd: ws.root, env: cleanEnv(env), stdio: 'ignore', detached: true,
    });
    const cli = path.join(ws.root, 'node_modules', 'nx-open-cache', 'lib', 'cli.js');
    const hostRuns = () => {
      const r = spawnSync(process.execPath, [cli, 'host', '--json'], { cwd: ws.root, encoding: 'utf8' });
      return r.status === 0 ? (JSON.parse(r.stdout) || { runs: [] }).runs : [];
    };
    try {
      let runs = [];
      for (let i = 0; i < 240 && runs.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 250));
        runs = hostRuns();
      }
      assert.equal(runs.length, 1, 'the run registered at the host');
      assert.equal(runs[0].command, 'running', `the host watches the run's nx command: ${JSON.stringify(runs)}`);
    } finally {
      // nx, as Ctrl-C or a crash would end it: no postTasksExecution. Its task may run in a group
      // of its own: it goes too, by its command line (unique to this test).
      try { process.kill(-(/** @type {number} */ (nx.pid)), 'SIGKILL'); } catch { /* gone */ }
      for (const p of processesMentioning(`slow-build.js slow slow ${SLOW_MS}`)) {
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    await assertNothingLeft();
    const version = JSON.parse(fs.readFileSync(path.join(ws.root, 'node_modules', 'nx-open-cache', 'package.json'), 'utf8')).version;
    const hostLog = fs.readFileSync(path.join(pluginDataDir(), `host-${version}.log`), 'utf8');
    assert.match(hostLog, /ended \(its Nx command ended without postTasksExecution\)/);
    assert.match(hostLog, /exiting: no run for/);
    await ws.nx(['daemon', '--stop'], { env });
  });
});
