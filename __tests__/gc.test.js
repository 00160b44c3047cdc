'use strict';
// `nx-open-cache gc` end to end: a store filled through the native proxy, ages set on the object
// files, the CLI run as a child process (output, exit codes, bad options named), and the native
// gc / gcAsync API it is built on.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const native = require('../index.js');
const { sizedArtifact } = require('./helpers/hostile-tar.js');

const CLI = path.join(__dirname, '..', 'lib', 'cli.js');
const DAY = 24 * 3600;
/** Our envelope header before every payload on disk. */
const HEADER = 48;

/** @type {string} */
let ws;

before(() => {
  ws = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-gc-'));
  fs.chmodSync(ws, 0o755);
  fs.writeFileSync(
    path.join(ws, 'nx.json'),
    JSON.stringify({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'cache' } }] }),
  );
});

after(() => {
  fs.rmSync(ws, { recursive: true, force: true });
});

/**
 * Stores artifacts through the native proxy (the real write path) into `<ws>/<dir>`.
 * @param {string} dir relative to the workspace
 * @param {Record<string, number>} sizes hash -> payload size
 */
async function fill(dir, sizes) {
  const proxy = native.CacheProxy.start(ws, { path: dir }, {});
  try {
    for (const [hash, size] of Object.entries(sizes)) {
      const res = await fetch(`${proxy.url}/v1/cache/${hash}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${proxy.token}`, 'content-length': String(size) },
        body: sizedArtifact(size, Number(hash)),
      });
      assert.equal(res.status, 200, `PUT ${hash}`);
    }
  } finally {
    await proxy.stop();
  }
}

/**
 * Object files below `root` by hash (the file name), temp files excluded.
 * @param {string} root
 * @returns {Map<string, string>}
 */
function objects(root) {
  /** @type {Map<string, string>} */
  const out = new Map();
  const stack = [root];
  while (stack.length > 0) {
    const dir = /** @type {string} */ (stack.pop());
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name === '.tmp') continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) stack.push(p);
      else out.set(e.name, p);
    }
  }
  return out;
}

/**
 * Sets an object's last access `days` ago.
 * @param {string} file
 * @param {number} days
 */
function age(file, days) {
  const t = Date.now() / 1000 - days * DAY;
  fs.utimesSync(file, t, t);
}

/**
 * @param {string[]} args
 * @param {import('node:child_process').SpawnSyncOptions} [extra]
 */
function cli(args, extra = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ws, encoding: 'utf8', timeout: 60_000, ...extra });
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

test('gc --max-age in the workspace: the effective fs path, old objects gone, report printed', async () => {
  await fill('cache', { 1001: 1000, 1002: 1000, 1003: 1000, 1004: 1000 });
  const root = path.join(ws, 'cache');
  const files = objects(root);
  assert.equal(files.size, 4);
  age(/** @type {string} */ (files.get('1001')), 100);
  age(/** @type {string} */ (files.get('1002')), 40);
  age(/** @type {string} */ (files.get('1003')), 10);
  const r = cli(['gc', '--max-age', '30d']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], `nx-open-cache gc: ${root}`);
  assert.match(r.stdout, /scanned {2}4 objects, 4\.1 KiB/);
  assert.match(r.stdout, /deleted {2}2 objects, 2 KiB \(by age: 2 objects, 2 KiB; by size: 0 objects, 0 B\)/);
  assert.match(r.stdout, /kept {5}2 objects/);
  assert.match(r.stdout, /errors {3}0/);
  assert.deepEqual([...objects(root).keys()].sort(), ['1003', '1004']);
  // The store still serves what is left and misses what went.
  const proxy = native.CacheProxy.start(ws, { path: 'cache' }, {});
  try {
    const auth = { authorization: `Bearer ${proxy.token}` };
    assert.equal((await fetch(`${proxy.url}/v1/cache/1003`, { headers: auth })).status, 200);
    assert.equal((await fetch(`${proxy.url}/v1/cache/1001`, { headers: auth })).status, 404);
  } finally {
    await proxy.stop();
  }
});

test('gc --path --max-size --json: least recently accessed go first; --dry-run deletes nothing', async () => {
  await fill('lru', { 2001: 1000, 2002: 1000, 2003: 1000, 2004: 1000 });
  const root = path.join(ws, 'lru');
  const files = objects(root);
  ['2001', '2002', '2003', '2004'].forEach((h, i) => age(/** @type {string} */ (files.get(h)), 10 - i));
  const budget = String(2 * (1000 + HEADER));

  let r = cli(['gc', '--path', root, `--max-size=${budget}B`, '--dry-run']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\(dry run: nothing deleted\)/);
  assert.match(r.stdout, /would delete {2}2 objects/);
  assert.equal(objects(root).size, 4);

  r = cli(['gc', '--path', root, '--max-size', `${budget}B`, '--json']);
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.path, root);
  assert.equal(report.dryRun, false);
  assert.deepEqual(report.scanned, { files: 4, bytes: 4 * (1000 + HEADER) });
  assert.deepEqual(report.deletedBySize, { files: 2, bytes: 2 * (1000 + HEADER) });
  assert.deepEqual(report.kept, { files: 2, bytes: 2 * (1000 + HEADER) });
  assert.equal(report.errorCount, 0);
  assert.deepEqual([...objects(root).keys()].sort(), ['2003', '2004']);
});

test('gc: bad options exit 2 and are named; help; a missing directory exits 1', () => {
  /** @type {[string[], RegExp][]} */
  const cases = [
    [['gc', '--max-size', '50'], /invalid value "50" for --max-size: the unit is missing; expected .*KiB, MiB, GiB, TiB/],
    [['gc', '--max-size', '5XB'], /invalid value "5XB" for --max-size: unknown unit "XB"/],
    [['gc', '--max-age', '3y'], /invalid value "3y" for --max-age: unknown unit "y"; expected .*s \(seconds\), m \(minutes\)/],
    [['gc', '--max-age=30'], /invalid value "30" for --max-age: the unit is missing/],
    [['gc'], /give --max-size and\/or --max-age/],
    [['gc', '--max-age'], /option --max-age needs a value/],
    [['gc', '--frob', '--max-age', '1d'], /unknown option "--frob" for gc \(allowed: --path, --max-size, --max-age, --dry-run, --json\)/],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  let r = cli(['gc', '--help']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /Usage: nx-open-cache gc/);
  r = cli(['help']);
  assert.match(r.stdout, /gc \[--max-size <size>\] \[--max-age <age>\]/);
  r = cli(['gc', '--path', path.join(ws, 'nope'), '--max-age', '1d']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /cache path .*nope is not usable/);
  // Outside a workspace, without --path: nothing to work on.
  r = cli(['gc', '--max-age', '1d'], { cwd: os.tmpdir() });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no --path given and no nx\.json found/);
});

test('gc: files it may not delete are listed and the exit code is 1', async () => {
  await fill('locked', { 3001: 100, 3002: 100 });
  const root = path.join(ws, 'locked');
  for (const f of objects(root).values()) age(f, 100);
  // Run as a user that can read the store but not change it (root ignores permission bits).
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  /** @type {string[]} */
  const fanDirs = [];
  if (!asRoot) {
    for (const f of objects(root).values()) fanDirs.push(path.dirname(f));
    for (const d of fanDirs) fs.chmodSync(d, 0o555);
  }
  try {
    const r = cli(['gc', '--path', root, '--max-age', '30d'], asRoot ? { uid: 65534, gid: 65534 } : {});
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /errors {3}2/);
    for (const f of objects(root).values()) {
      assert.match(r.stderr, new RegExp(`${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot delete: .*(denied|not permitted)`));
    }
  } finally {
    for (const d of fanDirs) fs.chmodSync(d, 0o755);
  }
  assert.equal(objects(root).size, 2);
});

test('native gc / gcAsync: progress phases, report, option errors with code InvalidArg', async () => {
  await fill('api', { 4001: 100, 4002: 100, 4003: 100 });
  const root = path.join(ws, 'api');
  for (const f of objects(root).values()) age(f, 50);
  /** @type {string[]} */
  const phases = [];
  const dry = native.gc({ path: root, maxAge: 40 * DAY, dryRun: true }, (p) => phases.push(p.phase));
  assert.equal(phases[0], 'scan');
  assert.equal(phases[phases.length - 1], 'done');
  assert.equal(dry.dryRun, true);
  assert.equal(dry.deletedByAge.files, 3);
  assert.match(dry.summary, /would delete 3 objects/);
  assert.equal(objects(root).size, 3);

  assert.throws(() => native.gc({ path: root, maxSize: '12 parsecs' }), (/** @type {any} */ e) => {
    assert.equal(e.code, 'InvalidArg');
    assert.match(e.message, /invalid value "12 parsecs" for maxSize/);
    return true;
  });
  assert.throws(() => native.gc({ path: root, maxSize: -1 }), /invalid value -1 for maxSize/);
  await assert.rejects(native.gcAsync({ path: root, maxAge: 'soon' }), /invalid value "soon" for maxAge/);

  /** @type {(v?: unknown) => void} */
  let sawDone = () => {};
  const done = new Promise((resolve) => {
    sawDone = resolve;
  });
  const report = await native.gcAsync({ path: root, maxSize: '1KiB', maxAge: '40d' }, (p) => {
    if (p.phase === 'done') sawDone();
  });
  await done;
  assert.equal(report.deletedByAge.files, 3);
  assert.equal(report.kept.files, 0);
  assert.equal(report.errorCount, 0);
  assert.equal(objects(root).size, 0);
});

/**
 * Waits (bounded) until `dir` holds a file.
 * @param {string} dir
 * @returns {Promise<string>}
 */
async function firstFile(dir) {
  for (let i = 0; i < 500; i += 1) {
    const names = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
    if (names.length > 0) return path.join(dir, names[0]);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no file appeared in ${dir}`);
}

/**
 * Starts `serve` on `storage`, begins an upload that never finishes, waits for its temp file and
 * kills the server with SIGKILL. Returns the temp file left behind.
 * @param {string} storage
 * @param {string} secret
 */
async function killedMidUpload(storage, secret) {
  const { startServe, serveEnv } = require('./helpers/serve-process.js');
  const server = await startServe(['--storage', `fs:${storage}`, '--log', 'off'], {
    env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${secret}` }),
  });
  const http = require('node:http');
  const { nxArtifact } = require('./helpers/hostile-tar.js');
  // The start of a valid artifact (the server checks uploads as they arrive), never finished.
  const artifact = nxArtifact({ 'dist/blob.bin': Buffer.alloc(1 << 20, 7) }, { level: 0 });
  const req = http.request(`${server.url}/v1/cache/777`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${secret}`, 'content-length': String(artifact.length) },
    agent: false,
  });
  req.on('error', () => {});
  req.write(artifact.subarray(0, 64 * 1024));
  try {
    return await firstFile(path.join(storage, '.tmp'));
  } finally {
    server.child.kill('SIGKILL');
    await server.exited;
    req.destroy();
  }
}

test('gc output counts in the grammatical number: 1 object, 0 objects, 1 empty directory', async () => {
  await fill('plural', { 5001: 100, 5002: 100 });
  const root = path.join(ws, 'plural');
  const files = objects(root);
  age(/** @type {string} */ (files.get('5001')), 100);
  // The expired object's fan-out directories are emptied by the deletion and removed.
  const r = cli(['gc', '--path', root, '--max-age', '30d']);
  assert.equal(r.status, 0, r.stderr);
  const line = (/** @type {string} */ label) => r.stdout.split('\n').find((l) => l.startsWith(`  ${label} `))?.replace(/ {2,}/g, ' ').trim();
  assert.match(String(line('scanned')), /^scanned 2 objects, /);
  assert.match(String(line('deleted')), /^deleted 1 object, \S+ \S+ \(by age: 1 object, \S+ \S+; by size: 0 objects, 0 B\)$/);
  assert.match(String(line('kept')), /^kept 1 object, /);
  assert.match(String(line('temp')), /^temp 0 leftover temp files, 0 B were removed; 0 in progress, 0 B$/);
  assert.match(String(line('dirs')), /^dirs [12] empty director(y|ies) removed$/);
  const again = cli(['gc', '--path', root, '--max-age', '30d']);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /scanned {2}1 object, /);
  assert.match(again.stdout, /kept {5}1 object, /);
  assert.match(again.stdout, /dirs {5}0 empty directories removed/);
  assert.ok(!/\b1 (objects|empty directories|leftover temp files)\b|\b[02-9] (object|empty directory)\b/.test(again.stdout + r.stdout), r.stdout + again.stdout);
});

test('temp files of a serve killed mid-upload (kill -9) go at the next start and with gc', async () => {
  const storage = path.join(ws, 'killed');
  fs.mkdirSync(storage);
  const secret = 'rw-secret-0123456789abcdef';
  let temp = await killedMidUpload(storage, secret);
  assert.ok(fs.existsSync(temp), 'left behind by the killed server');
  // gc: removed at once (its writer ran on this machine and is gone), not after an hour.
  const r = cli(['gc', '--path', storage, '--max-age', '30d']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /temp {5}1 leftover temp file, .* was removed; 0 in progress/);
  assert.ok(!fs.existsSync(temp));
  // A restarted server removes them when it opens the store.
  temp = await killedMidUpload(storage, secret);
  assert.ok(fs.existsSync(temp));
  const { startServe, serveEnv } = require('./helpers/serve-process.js');
  const again = await startServe(['--storage', `fs:${storage}`, '--log', 'off'], {
    env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${secret}` }),
  });
  try {
    assert.ok(!fs.existsSync(temp), 'removed at start');
  } finally {
    await again.stop();
  }
});

test('gc never follows a symbolic link inside the directory: reported, the target untouched', async () => {
  await fill('linked', { 5001: 100, 5002: 100 });
  const root = path.join(ws, 'linked');
  const files = objects(root);
  const target = /** @type {string} */ (files.get('5001'));
  const aa = path.dirname(path.dirname(target));
  // Outside the cache: a copy of the fan-out tree, old enough to be deleted if it were followed.
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-gc-outside-'));
  try {
    fs.cpSync(aa, outside, { recursive: true });
    fs.rmSync(aa, { recursive: true });
    fs.symlinkSync(outside, aa);
    const copied = path.join(outside, path.basename(path.dirname(target)), '5001');
    age(copied, 100);
    for (const f of objects(root).values()) age(f, 100);
    const r = cli(['gc', '--path', root, '--max-age', '30d']);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`${aa.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: a symbolic link: not followed`));
    assert.ok(fs.existsSync(copied), 'nothing outside the directory is deleted');
    assert.ok(fs.lstatSync(aa).isSymbolicLink(), 'the link itself stays for the operator');
  } finally {
    fs.rmSync(outside, { recursive: true, force: true });
  }
});
