'use strict';
/**
 * The plugin without its native addon, in real Nx runs: a workspace (nx from npm, nx-open-cache from
 * `npm pack`) whose installed nx-open-cache has its .node file replaced by random bytes (the repo's
 * own build is never touched), against a real `nx-open-cache serve` on 127.0.0.1 with a read-write
 * and a read-only token (`--log json`: every request with its status and token name).
 *
 * - http backend: Nx's own client stores every task (PUTs in the server's log; no plugin summary),
 *   fresh machines (own NX_CACHE_DIRECTORY and NX_WORKSPACE_DATA_DIRECTORY) restore every task as
 *   `[remote cache]` hits with the daemon off and on, plugin isolation on and off; one warning.
 * - read-only token: restores work, Nx's upload of a task that ran is refused (403 in the server's
 *   log), the build passes.
 * - a refused token or a server that does not answer (Nx's own client would fail the run): green,
 *   uncached, the warning says why; a user's own NX_SELF_HOSTED_REMOTE_CACHE_SERVER wins.
 * - fs backend: one warning naming the platform and suggesting the http backend; green, uncached;
 *   the same with the binary missing.
 * - the oldest supported Nx (20.8): stores and restores through its own client.
 *
 * Run: node --test --test-concurrency=1 __tests__/fallback.e2e.test.js
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const { NX_OLDEST, REPO_ROOT, NATIVE_FILE, createWorkspace, disposePack, storeObjects, isRemoteHit, summaryLines } = require('./helpers/nx-workspace.js');
const { startServe, serveEnv } = require('./helpers/serve-process.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('./helpers/serve-process.js').ServeProcess} ServeProcess */
/** @typedef {{ method: string, route: string, hash: string | null, status: number, token: string | null }} LogEntry */

const RW = crypto.randomBytes(16).toString('hex');
const RO = crypto.randomBytes(16).toString('hex');
const TOKENS = `machine-a:read-write:${RW},machine-b:read-only:${RO}`;
/** What the probe asks for (lib/fallback.js): never a task's hash. */
const PROBE_HASH = '00000000000000000000';
/** This machine's platform as the warning names it. */
const PLATFORM = `${process.platform}-${process.arch}`;

/** @type {NxWorkspace} */
let ws;
/** @type {ServeProcess | undefined} */
let server;
/** @type {string} */
let storage;
/** The repo's own addon, to check that the test never touches it. */
const ownAddon = path.join(REPO_ROOT, NATIVE_FILE);
/** @type {string | undefined} */
let ownAddonHash;

/** @param {string} file */
function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/**
 * Replaces every .node file of the workspace's installed nx-open-cache with random bytes (a
 * corrupt download); with `remove`, deletes them (no prebuilt binary for the platform).
 * @param {NxWorkspace} w
 * @param {{ remove?: boolean }} [o]
 * @returns {string[]} the files
 */
function breakAddon(w, o = {}) {
  const dir = path.join(w.root, 'node_modules', 'nx-open-cache');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.node')).map((f) => path.join(dir, f));
  assert.ok(o.remove || files.length > 0, `no .node file in ${dir}`);
  for (const f of files) {
    assert.notEqual(path.resolve(f), path.resolve(ownAddon), 'the test must never touch the repo\'s own addon');
    if (o.remove) fs.rmSync(f);
    else fs.writeFileSync(f, crypto.randomBytes(64 * 1024));
  }
  return files;
}

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * @param {RunResult} r
 * @param {string} what
 */
function assertGreen(r, what) {
  assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
  assert.equal(r.code, 0, `${what}: nx failed${show(r)}`);
}

/** @param {RunResult} r */
function warnings(r) {
  return r.output.split(/\r?\n/).filter((l) => l.startsWith('nx-open-cache: warning:'));
}

/**
 * The run printed the fallback's warning exactly once, naming the platform, and no summary line.
 * @param {RunResult} r
 * @param {string} what
 * @returns {string} the warning
 */
function oneWarning(r, what) {
  const w = warnings(r);
  assert.equal(w.length, 1, `${what}: one warning${show(r)}`);
  assert.ok(w[0].includes(PLATFORM), `${what}: the warning names the platform ${PLATFORM}: ${w[0]}`);
  if (process.platform === 'linux') assert.match(w[0], new RegExp(`${PLATFORM}-(gnu|musl)`), `${what}: and the C library`);
  assert.deepEqual(summaryLines(r.output).filter((l) => !l.startsWith('nx-open-cache: warning:')), [], `${what}: no other plugin line (no summary)${show(r)}`);
  return w[0];
}

/** The server's request log so far (`--log json` on stderr). @returns {LogEntry[]} */
function serverLog() {
  /** @type {LogEntry[]} */ const out = [];
  for (const line of /** @type {ServeProcess} */ (server).stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const e = JSON.parse(line);
      if (e.route === 'cache') out.push(e);
    } catch {
      // a partial last line
    }
  }
  return out;
}

/**
 * The cache requests logged since `from` entries, without the fallback's probe.
 * @param {number} from
 */
function requestsSince(from) {
  return serverLog().slice(from).filter((e) => e.hash !== PROBE_HASH);
}

/**
 * A machine of its own: Nx's cache and workspace data in fresh directories, outputs and build log gone.
 * @param {string} name
 * @returns {Record<string, string>}
 */
function freshMachine(name) {
  ws.cleanOutputs();
  ws.clearBuildLog();
  const dir = path.join(ws.base, 'machines', `${name}-${crypto.randomBytes(4).toString('hex')}`);
  return { NX_CACHE_DIRECTORY: path.join(dir, 'cache'), NX_WORKSPACE_DATA_DIRECTORY: path.join(dir, 'workspace-data') };
}

function allProjects() {
  return ws.projects.map((p) => p.name).sort();
}

/** A 127.0.0.1 port with nothing listening (bound, then closed). @returns {Promise<number>} */
function closedPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  ownAddonHash = fs.existsSync(ownAddon) ? sha256(ownAddon) : undefined;
  ws = await createWorkspace();
  breakAddon(ws);
  storage = path.join(ws.base, 'server-storage');
  server = await startServe(['--storage', `fs:${storage}`, '--log', 'json'], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
});

after(async () => {
  if (server) await server.stop();
  if (ws) await ws.dispose();
  disposePack();
  if (ownAddonHash) assert.equal(sha256(ownAddon), ownAddonHash, "the repo's own addon changed");
});

describe('no native addon: a corrupt binary in a real Nx workspace (nx 24)', () => {
  test('http backend: Nx\'s own client stores every task; fresh machines restore all as [remote cache] hits (daemon off/on, isolation on/off)', async () => {
    ws.setPluginOptions({ backend: 'http', url: /** @type {ServeProcess} */ (server).url });
    const from = serverLog().length;
    const a = await ws.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: RW, ...freshMachine('a') } });
    assertGreen(a, 'machine A');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `machine A: every task runs${show(a)}`);
    const w = oneWarning(a, 'machine A');
    assert.match(w, /the native addon does not load on .*invalid ELF header/, w);
    assert.ok(w.includes(`Nx's own remote-cache client talks to ${/** @type {ServeProcess} */ (server).url} directly`), w);
    assert.ok(!w.includes(RW), 'the token is never printed');
    const puts = requestsSince(from).filter((e) => e.method === 'PUT');
    assert.equal(puts.length, ws.projects.length, `machine A: one PUT per task from Nx's client: ${JSON.stringify(puts)}`);
    assert.ok(puts.every((e) => e.status === 200 && e.token === 'machine-a'), JSON.stringify(puts));
    assert.equal(storeObjects(storage).length, ws.projects.length, 'one object per task in the server\'s storage');
    const built = ws.snapshotOutputs();

    const combos = [
      { daemon: false, isolate: true },
      { daemon: false, isolate: false },
      { daemon: true, isolate: true },
      { daemon: true, isolate: false },
    ];
    for (const { daemon, isolate } of combos) {
      const label = `fresh machine, daemon ${daemon ? 'on' : 'off'}, NX_ISOLATE_PLUGINS=${isolate}`;
      const machine = freshMachine(`b-${daemon}-${isolate}`);
      const env = { NX_DAEMON: String(daemon), NX_ISOLATE_PLUGINS: String(isolate), NX_OPEN_CACHE_TOKEN: RO, ...machine };
      const at = serverLog().length;
      try {
        const b = await ws.runBuild({ env });
        assertGreen(b, label);
        assert.deepEqual(ws.builtProjects(), [], `${label}: a task ran${show(b)}`);
        for (const p of allProjects()) assert.ok(isRemoteHit(b.output, p), `${label}: ${p} not a [remote cache] hit${show(b)}`);
        assert.deepEqual(ws.snapshotOutputs(), built, `${label}: restored outputs differ`);
        const gets = requestsSince(at).filter((e) => e.method === 'GET' && e.status === 200 && e.token === 'machine-b');
        assert.equal(gets.length, ws.projects.length, `${label}: Nx's client read every task: ${JSON.stringify(requestsSince(at))}`);
        if (daemon) {
          // The hooks ran in the daemon, whose output Nx does not show: the warning is in the run's summary.
          const file = path.join(machine.NX_WORKSPACE_DATA_DIRECTORY, 'nx-open-cache', 'last-run.json');
          assert.ok(fs.existsSync(file), `${label}: no ${file}${show(b)}`);
          const s = JSON.parse(fs.readFileSync(file, 'utf8'));
          assert.equal(s.warnings?.length, 1, JSON.stringify(s));
          assert.ok(s.warnings[0].includes(PLATFORM), JSON.stringify(s));
          assert.match(s.location, /\(Nx's own client\)$/, JSON.stringify(s));
        } else {
          oneWarning(b, label);
        }
      } finally {
        if (daemon) await ws.nx(['daemon', '--stop'], { env: { NX_DAEMON: 'true', ...machine }, timeoutMs: 60_000 });
      }
    }
  });

  test('read-only token: restores work, Nx\'s upload of a task that ran is refused with 403 by the server, the build passes', async () => {
    ws.setPluginOptions({ backend: 'http', url: /** @type {ServeProcess} */ (server).url });
    const changed = path.join(ws.root, 'apps', 'app-c', 'src', 'index.txt');
    const original = fs.readFileSync(changed, 'utf8');
    fs.appendFileSync(changed, `changed ${crypto.randomBytes(4).toString('hex')}\n`);
    try {
      const objects = storeObjects(storage);
      const from = serverLog().length;
      const r = await ws.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: RO, NX_OPEN_CACHE_MODE: 'read-only', ...freshMachine('ro') } });
      assertGreen(r, 'read-only');
      assert.deepEqual(ws.builtProjects(), ['app-c'], `read-only: only the changed task runs${show(r)}`);
      for (const p of allProjects().filter((p) => p !== 'app-c')) assert.ok(isRemoteHit(r.output, p), `read-only: ${p} not a remote hit${show(r)}`);
      const w = oneWarning(r, 'read-only');
      assert.ok(w.includes('read-only (NX_OPEN_CACHE_MODE) cannot be kept'), w);
      const puts = requestsSince(from).filter((e) => e.method === 'PUT');
      assert.equal(puts.length, 1, `read-only: Nx's client tried to upload the task that ran: ${JSON.stringify(puts)}`);
      assert.equal(puts[0].status, 403, JSON.stringify(puts));
      assert.equal(puts[0].token, 'machine-b', JSON.stringify(puts));
      assert.deepEqual(storeObjects(storage), objects, 'read-only: nothing stored');
    } finally {
      fs.writeFileSync(changed, original);
    }
  });

  test('a refused token or a server that does not answer (Nx\'s own client would fail the run): green and uncached, the warning says why', async () => {
    ws.setPluginOptions({ backend: 'http', url: /** @type {ServeProcess} */ (server).url });
    const refused = await ws.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: 'not-a-token-of-this-server', ...freshMachine('bad-token') } });
    assertGreen(refused, 'refused token');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `refused token: every task runs${show(refused)}`);
    const w1 = oneWarning(refused, 'refused token');
    assert.ok(w1.includes('running without the remote cache: ') && w1.includes('refused the token in NX_OPEN_CACHE_TOKEN'), w1);
    assert.ok(!w1.includes('not-a-token-of-this-server'), 'the token is never printed');

    const url = `http://127.0.0.1:${await closedPort()}`;
    ws.setPluginOptions({ backend: 'http', url });
    const down = await ws.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: RW, ...freshMachine('down') } });
    assertGreen(down, 'server down');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `server down: every task runs${show(down)}`);
    const w2 = oneWarning(down, 'server down');
    assert.ok(w2.includes(`Nx's own client would fail the run on the server ${url}`) && w2.includes('ECONNREFUSED'), w2);

    // The user's own server variable wins over the plugin's options (here: that closed port).
    const from = serverLog().length;
    const own = await ws.runBuild({
      env: {
        NX_DAEMON: 'false', ...freshMachine('own-server'),
        NX_SELF_HOSTED_REMOTE_CACHE_SERVER: /** @type {ServeProcess} */ (server).url, NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: RW,
      },
    });
    assertGreen(own, 'own server variable');
    assert.deepEqual(warnings(own), [], `own server variable: no fallback warning${show(own)}`);
    assert.match(own.output, /NX_SELF_HOSTED_REMOTE_CACHE_SERVER is already set/, show(own));
    assert.ok(requestsSince(from).some((e) => e.token === 'machine-a'), `own server variable: Nx used the user's server${show(own)}`);
  });

  test('fs backend: one warning naming the platform and suggesting the http backend; every task runs, green; the same with no binary at all', async () => {
    const store = ws.newStorePath('fs-fallback');
    ws.setPluginOptions({ backend: 'fs', path: store });
    const r = await ws.runBuild({ env: { NX_DAEMON: 'false', ...freshMachine('fs') } });
    assertGreen(r, 'fs backend');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `fs backend: every task runs${show(r)}`);
    const w = oneWarning(r, 'fs backend');
    assert.match(w, /invalid ELF header/, w);
    assert.ok(w.includes('the "fs" backend needs the addon') && w.includes('"http" backend') && w.includes('nx-open-cache serve'), w);
    assert.ok(w.includes('running without the remote cache: '), w);
    assert.ok(!fs.existsSync(store) || storeObjects(store).length === 0, 'fs backend: nothing stored');

    breakAddon(ws, { remove: true });
    const none = await ws.runBuild({ env: { NX_DAEMON: 'false', ...freshMachine('fs-none') } });
    assertGreen(none, 'no binary');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `no binary: every task runs${show(none)}`);
    const w2 = oneWarning(none, 'no binary');
    assert.ok(w2.includes(`no prebuilt native addon for ${PLATFORM}`) && w2.includes('"http" backend'), w2);
  });
});

describe(`no native addon on the oldest supported Nx (${NX_OLDEST})`, () => {
  /** @type {NxWorkspace} */
  let old;
  before(async () => {
    old = await createWorkspace({ nxVersion: NX_OLDEST });
    breakAddon(old);
  });
  after(async () => {
    if (old) await old.dispose();
  });

  test('http backend: Nx\'s own client stores every task, a fresh machine restores all as [remote cache] hits', async () => {
    old.setPluginOptions({ backend: 'http', url: /** @type {ServeProcess} */ (server).url });
    const dirs = (/** @type {string} */ name) => {
      old.cleanOutputs();
      old.clearBuildLog();
      const dir = path.join(old.base, 'machines', name);
      return { NX_CACHE_DIRECTORY: path.join(dir, 'cache'), NX_WORKSPACE_DATA_DIRECTORY: path.join(dir, 'workspace-data') };
    };
    const from = serverLog().length;
    const a = await old.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: RW, ...dirs('a') } });
    assertGreen(a, `nx ${NX_OLDEST}, machine A`);
    assert.equal(warnings(a).length, 1, show(a));
    const puts = requestsSince(from).filter((e) => e.method === 'PUT' && e.status === 200 && e.token === 'machine-a');
    assert.equal(puts.length, old.projects.length, `nx ${NX_OLDEST}: one PUT per task: ${JSON.stringify(requestsSince(from))}`);
    const b = await old.runBuild({ env: { NX_DAEMON: 'false', NX_OPEN_CACHE_TOKEN: RO, ...dirs('b') } });
    assertGreen(b, `nx ${NX_OLDEST}, machine B`);
    assert.deepEqual(old.builtProjects(), [], `nx ${NX_OLDEST}, machine B: a task ran${show(b)}`);
    for (const p of old.projects) assert.ok(isRemoteHit(b.output, p.name), `nx ${NX_OLDEST}: ${p.name} not a remote hit${show(b)}`);
    assert.equal(warnings(b).length, 1, show(b));
  });
});
