'use strict';
/**
 * The http backend end to end: a real Nx workspace (nx from npm, nx-open-cache from `npm pack`)
 * whose plugin proxy forwards to an upstream Nx-protocol server, `nx-open-cache serve` over an fs
 * storage on 127.0.0.1 (plain http, and https with a certificate of a test CA trusted through
 * NODE_EXTRA_CA_CERTS). Machine A stores every task upstream with a read-write token, machine B
 * restores every task as remote hits with a read-only token. The init generator writes
 * `--backend=http --url=...` and never a token.
 *
 * Run: node --test --test-concurrency=1 __tests__/http-backend.test.js
 * Needs a native build (`node scripts/ensure-native.js`) and the openssl CLI (TLS test).
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');

const { createWorkspace, disposePack, storeObjects, isRemoteHit } = require('./helpers/nx-workspace.js');
const { startServe, serveEnv } = require('./helpers/serve-process.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */
/** @typedef {import('./helpers/serve-process.js').ServeProcess} ServeProcess */

const RW = crypto.randomBytes(16).toString('hex');
const RO = crypto.randomBytes(16).toString('hex');
const TOKENS = `machine-a:read-write:${RW},machine-b:read-only:${RO}`;
/** Daemon off: the plugin's summary is printed and the runs are independent. */
const OFF = { NX_DAEMON: 'false' };

/** @type {NxWorkspace} */
let ws;
/** @type {ServeProcess | undefined} */
let upstream;
/** @type {string} */
let storage;

before(async () => {
  ws = await createWorkspace();
  storage = path.join(ws.base, 'upstream-storage');
  upstream = await startServe(['--storage', `fs:${storage}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
});

after(async () => {
  if (upstream) await upstream.stop();
  if (ws) await ws.dispose();
  disposePack();
});

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

function allProjects() {
  return ws.projects.map((p) => p.name).sort();
}

/** A machine without local cache or outputs. */
async function otherMachine() {
  await ws.nxReset();
  ws.cleanOutputs();
  ws.clearBuildLog();
}

/**
 * @param {RunResult} r
 * @param {string} what
 */
function lastRun(r, what) {
  const s = ws.readLastRun();
  assert.ok(s, `${what}: no last-run.json${show(r)}`);
  return s;
}

/** @returns {string} */
function upstreamUrl() {
  return /** @type {ServeProcess} */ (upstream).url;
}

describe('http backend with a real Nx workspace and nx-open-cache serve upstream', () => {
  test('init generator: --backend=http --url writes the options and no token; a bad url writes nothing', async () => {
    await ws.resetScenario();
    const env = { ...OFF, NX_OPEN_CACHE_TOKEN: RW };
    const before = fs.readFileSync(path.join(ws.root, 'nx.json'), 'utf8');
    for (const bad of [`${upstreamUrl()}/`, upstreamUrl().replace(/^https?:\/\//, '')]) {
      const r = await ws.nx(['g', 'nx-open-cache:init', '--backend=http', `--url=${bad}`, '--no-interactive'], { env });
      assert.notEqual(r.code, 0, `generator with url ${bad}: exited 0${show(r)}`);
      assert.ok(r.output.includes('"url"') && r.output.includes(JSON.stringify(bad)), `generator: the error names the option and the value${show(r)}`);
      assert.match(r.output, /https:\/\/cache\.example\.com/, `generator: the error shows the expected form${show(r)}`);
      assert.equal(fs.readFileSync(path.join(ws.root, 'nx.json'), 'utf8'), before, 'generator: nothing written on error');
    }
    const g = await ws.nx(['g', 'nx-open-cache:init', '--backend=http', `--url=${upstreamUrl()}`, '--no-interactive'], { env });
    assertGreen(g, 'generator');
    const text = fs.readFileSync(path.join(ws.root, 'nx.json'), 'utf8');
    const entry = JSON.parse(text).plugins.find((/** @type {any} */ p) => p && p.plugin === 'nx-open-cache');
    assert.deepEqual(entry.options, { backend: 'http', url: upstreamUrl() });
    assert.ok(!text.includes(RW) && !/token/i.test(text), `nx.json must not carry a token:\n${text}`);
    const again = await ws.nx(['g', 'nx-open-cache:init', '--backend=http', `--url=${upstreamUrl()}`, '--no-interactive'], { env });
    assertGreen(again, 'generator (2nd run)');
    assert.equal(fs.readFileSync(path.join(ws.root, 'nx.json'), 'utf8'), text, 'generator: the 2nd run changed nx.json');
    const noToken = await ws.nx(['g', 'nx-open-cache:init', '--backend=http', `--url=${upstreamUrl()}`, '--no-interactive'], { env: OFF });
    assertGreen(noToken, 'generator without NX_OPEN_CACHE_TOKEN');
    assert.match(noToken.output, /NX_OPEN_CACHE_TOKEN/, `generator: says where the token comes from${show(noToken)}`);
  });

  test('machine A stores every task upstream (read-write token), machine B restores all (read-only token)', async () => {
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'http', url: upstreamUrl() });
    const a = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: RW } });
    assertGreen(a, 'machine A');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `machine A: not every project built${show(a)}`);
    const sa = lastRun(a, 'machine A');
    assert.equal(sa.location, `http ${upstreamUrl()}`, JSON.stringify(sa));
    assert.equal(sa.stored, ws.projects.length, `machine A: stored ${JSON.stringify(sa)}${show(a)}`);
    assert.equal(sa.errorCount, 0, `machine A: errors ${JSON.stringify(sa)}${show(a)}`);
    const objects = storeObjects(storage);
    assert.equal(objects.length, ws.projects.length, `upstream storage: one object per task: ${JSON.stringify(objects)}`);
    const built = ws.snapshotOutputs();

    await otherMachine();
    const b = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: RO } });
    assertGreen(b, 'machine B');
    assert.deepEqual(ws.builtProjects(), [], `machine B: a build ran although every task is upstream${show(b)}`);
    for (const p of allProjects()) assert.ok(isRemoteHit(b.output, p), `machine B: ${p} not a remote hit${show(b)}`);
    assert.deepEqual(ws.snapshotOutputs(), built, 'machine B: restored outputs differ from the built ones');
    const sb = lastRun(b, 'machine B');
    assert.equal(sb.hits, ws.projects.length, `machine B: hits ${JSON.stringify(sb)}`);
    assert.equal(sb.stored, 0, `machine B: stored ${JSON.stringify(sb)}`);
    assert.equal(sb.errorCount, 0, `machine B: errors ${JSON.stringify(sb)}${show(b)}`);
    assert.deepEqual(storeObjects(storage), objects, 'machine B: the upstream storage changed');
  });

  test('a refused token never fails the build: tasks run, the summary names NX_OPEN_CACHE_TOKEN', async () => {
    await otherMachine();
    ws.setPluginOptions({ backend: 'http', url: upstreamUrl() });
    const r = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: 'not-a-token-of-this-server' } });
    assertGreen(r, 'wrong token');
    assert.deepEqual(ws.builtProjects().sort(), allProjects(), `wrong token: every task runs${show(r)}`);
    const s = lastRun(r, 'wrong token');
    assert.equal(s.hits, 0, JSON.stringify(s));
    assert.ok(s.errorCount > 0, `wrong token: errors reported ${JSON.stringify(s)}`);
    assert.ok(
      s.errors.every((/** @type {{reason: string}} */ e) => e.reason.includes('NX_OPEN_CACHE_TOKEN')),
      `wrong token: every reason names NX_OPEN_CACHE_TOKEN: ${JSON.stringify(s.errors)}`,
    );
    assert.ok(!JSON.stringify(s).includes('not-a-token-of-this-server'), 'the token is never printed');
  });

  test('an http url with a trailing slash or no scheme fails before any task, naming option, value and form', async () => {
    for (const bad of [`${upstreamUrl()}/`, 'cache.example.com']) {
      await otherMachine();
      ws.setPluginOptions({ backend: 'http', url: bad });
      const r = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: RW } });
      assert.equal(r.timedOut, false, show(r));
      assert.notEqual(r.code, 0, `url ${bad}: nx exited 0${show(r)}`);
      assert.ok(r.output.includes('option "url"'), `url ${bad}: the option is named${show(r)}`);
      assert.ok(r.output.includes(JSON.stringify(bad)), `url ${bad}: the value is named${show(r)}`);
      assert.ok(r.output.includes('https://cache.example.com'), `url ${bad}: the expected form is shown${show(r)}`);
      assert.deepEqual(ws.builtProjects(), [], `url ${bad}: tasks ran${show(r)}`);
    }
    ws.setPluginOptions(null);
  });

  test('https upstream: trusted through NODE_EXTRA_CA_CERTS, stores and restores every task; refused without it', async (t) => {
    const dir = fs.mkdtempSync(path.join(ws.base, 'tls-'));
    const certs = testCa(dir);
    assert.ok(certs, 'the openssl CLI is needed to make the test certificates');
    // Same storage, served over TLS by a second server.
    const tls = await startServe(['--storage', `fs:${storage}`, '--tls-cert', certs.cert, '--tls-key', certs.key], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
    });
    try {
      assert.match(tls.url, /^https:\/\/127\.0\.0\.1:\d+$/, tls.banner);
      // nx.json (the url) is part of the task hashes: machine A stores them under this url first.
      await otherMachine();
      ws.setPluginOptions({ backend: 'http', url: tls.url });
      const a = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: RW, NODE_EXTRA_CA_CERTS: certs.ca } });
      assertGreen(a, 'https, machine A');
      const sa = lastRun(a, 'https, machine A');
      assert.equal(sa.stored, ws.projects.length, `https, machine A: stored ${JSON.stringify(sa)}${show(a)}`);
      assert.equal(sa.errorCount, 0, `https, machine A: errors ${JSON.stringify(sa)}${show(a)}`);
      await otherMachine();
      const r = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: RO, NODE_EXTRA_CA_CERTS: certs.ca } });
      assertGreen(r, 'https');
      assert.deepEqual(ws.builtProjects(), [], `https: a build ran${show(r)}`);
      for (const p of allProjects()) assert.ok(isRemoteHit(r.output, p), `https: ${p} not a remote hit${show(r)}`);
      const s = lastRun(r, 'https');
      assert.equal(s.hits, ws.projects.length, JSON.stringify(s));
      assert.equal(s.errorCount, 0, `https: errors ${JSON.stringify(s)}${show(r)}`);

      // Without the extra CA the certificate is refused: the build still passes, nothing restored.
      await otherMachine();
      const u = await ws.runBuild({ env: { ...OFF, NX_OPEN_CACHE_TOKEN: RO } });
      assertGreen(u, 'https, untrusted');
      const su = lastRun(u, 'https, untrusted');
      assert.equal(su.hits, 0, JSON.stringify(su));
      assert.ok(
        su.errors.some((/** @type {{reason: string}} */ e) => e.reason.includes('NODE_EXTRA_CA_CERTS')),
        `https, untrusted: the fault points at NODE_EXTRA_CA_CERTS: ${JSON.stringify(su.errors)}`,
      );
      t.diagnostic(`untrusted: ${su.errors[0]?.reason}`);
    } finally {
      await tls.stop();
      ws.setPluginOptions(null);
    }
  });
});

/**
 * A test CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a CA certificate
 * as a server's own), made with the openssl CLI; null when openssl is missing.
 * @param {string} dir
 * @returns {{ ca: string, cert: string, key: string } | null}
 */
function testCa(dir) {
  const f = (/** @type {string} */ n) => path.join(dir, n);
  fs.writeFileSync(
    f('leaf.ext'),
    'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n',
  );
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const steps = [
    ['req', '-x509', ...ec, '-days', '2', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', '/CN=nx-open-cache test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ['req', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=127.0.0.1'],
    ['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '2', '-out', f('leaf.pem'), '-extfile', f('leaf.ext')],
  ];
  for (const args of steps) {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 30_000 });
    if (r.error || r.status !== 0) return null;
  }
  return { ca: f('ca.pem'), cert: f('leaf.pem'), key: f('leaf.key') };
}
