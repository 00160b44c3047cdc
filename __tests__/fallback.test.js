'use strict';
/**
 * lib/fallback.js without Nx: the reason a load failure is reported with, the options checked before
 * Nx's own client is pointed at a server, and the probe (statuses Nx's client takes or fails the run
 * on, a closed port, TLS trusted as Nx's client trusts it: SSL_CERT_FILE yes, NODE_EXTRA_CA_CERTS no).
 * The real Nx runs are in fallback.e2e.test.js.
 *
 * Run: node --test --test-concurrency=1 __tests__/fallback.test.js   (TLS case: the openssl CLI)
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { execFile, spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');

const { loadFailure, badUrl, resolveMode, probeServer, fallbackPlan } = require('../lib/fallback.js');

/**
 * An error chained like the napi-rs loader's: the wrapper, with the candidates' errors as causes.
 * @param {Error[]} causes
 */
function loaderError(causes) {
  const wrapper = new Error('Cannot find native binding. npm has a bug related to optional dependencies');
  /** @type {any} */ let at = wrapper;
  for (const c of causes) {
    at.cause = c;
    at = c;
  }
  return wrapper;
}

/** @param {string} message @param {string} code */
function coded(message, code) {
  return Object.assign(new Error(message), { code });
}

/** @type {http.Server} */
let server;
/** @type {string} */
let url;
/** Status the test server answers with, by hash. @type {Record<string, number>} */
let answer = {};
/** Authorization headers the test server saw. @type {(string | undefined)[]} */
const seen = [];

before(async () => {
  server = http.createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.statusCode = answer.status ?? 404;
    res.end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  url = `http://127.0.0.1:${/** @type {net.AddressInfo} */ (server.address()).port}`;
});

after(() => new Promise((resolve) => server.close(() => resolve(undefined))));

describe('fallback: why the addon did not load', () => {
  test('a binary that is there but does not load is named with its error', () => {
    const e = loaderError([
      coded('/x/nx-open-cache.linux-x64-gnu.node: invalid ELF header', 'ERR_DLOPEN_FAILED'),
      coded("Cannot find module 'nx-open-cache-linux-x64-gnu'", 'MODULE_NOT_FOUND'),
    ]);
    assert.equal(loadFailure(e, 'linux-x64-gnu'), 'the native addon does not load on linux-x64-gnu (/x/nx-open-cache.linux-x64-gnu.node: invalid ELF header)');
  });

  test('only missing candidates: no prebuilt binary for the platform', () => {
    const e = loaderError([
      coded("Cannot find module './nx-open-cache.darwin-x64.node'", 'MODULE_NOT_FOUND'),
      coded("Cannot find module 'nx-open-cache-darwin-x64'", 'MODULE_NOT_FOUND'),
    ]);
    assert.equal(loadFailure(e, 'darwin-x64'), 'no prebuilt native addon for darwin-x64 is installed');
  });
});

describe('fallback: options', () => {
  test('urls Nx cannot be given are refused with the reason, good ones pass', () => {
    assert.equal(badUrl('https://cache.example.com'), undefined);
    assert.equal(badUrl('http://127.0.0.1:3000/nx'), undefined);
    assert.match(/** @type {string} */ (badUrl(undefined)), /needs option "url"/);
    assert.match(/** @type {string} */ (badUrl('https://cache.example.com/')), /ends with a slash/);
    assert.match(/** @type {string} */ (badUrl('ftp://cache.example.com')), /scheme must be http or https/);
    // As src/config.rs: the base URL, never the protocol's path (the probe would get 404 and pass).
    for (const u of ['https://cache.example.com/v1/cache', 'https://cache.example.com/nx/v1/cache/']) {
      assert.match(/** @type {string} */ (badUrl(u)), /without \/v1\/cache/, u);
    }
    assert.match(/** @type {string} */ (badUrl('cache.example.com')), /not a valid URL|scheme/);
    const creds = /** @type {string} */ (badUrl('https://user:secret@cache.example.com'));
    assert.match(creds, /credentials do not belong in the URL/);
    assert.ok(!creds.includes('secret'), creds);
    assert.match(/** @type {string} */ (badUrl('https://cache.example.com?x=1')), /query or a fragment/);
  });

  test('urls in errors never show a password (the cases of config.rs urls_in_errors_never_show_a_password and more)', () => {
    for (const url of [
      'https://ci:hunter2-pw@cache.example.com',
      'https://ci:hunter2-pw@cache.example.com:99999',
      'https://cache.example.com/?token=hunter2-pw',
      'https://cache.example.com#hunter2-pw',
      'https://u:p@hunter2-pw@cache.example.com',
      'https://u:hunter2/pw@cache.example.com',
      'https://hunter2-pw@cache.example.com',
      'ftp://ci:hunter2-pw@cache.example.com',
    ]) {
      const message = /** @type {string} */ (badUrl(url));
      assert.ok(message, url);
      assert.ok(!message.includes('hunter2'), message);
      assert.ok(message.includes('***'), message);
    }
  });

  test('the mode: NX_OPEN_CACHE_MODE, else ciMode on CI, else localMode, else read-write; a bad value is named', () => {
    assert.deepEqual(resolveMode({}, {}), { mode: 'read-write', source: 'localMode' });
    assert.deepEqual(resolveMode({ localMode: 'read-only' }, {}), { mode: 'read-only', source: 'localMode' });
    assert.deepEqual(resolveMode({ localMode: 'read-only', ciMode: 'no-cache' }, { CI: 'true' }), { mode: 'no-cache', source: 'ciMode' });
    assert.deepEqual(resolveMode({ ciMode: 'no-cache' }, { CI: 'false' }), { mode: 'read-write', source: 'localMode' });
    assert.deepEqual(resolveMode({ localMode: 'no-cache' }, { NX_OPEN_CACHE_MODE: 'read-only' }), { mode: 'read-only', source: 'NX_OPEN_CACHE_MODE' });
    assert.match(/** @type {string} */ (resolveMode({ localMode: 'read' }, {}).bad), /invalid value "read" for localMode/);
  });

  test('options the http backend refuses, a bad backend, no-cache: nothing is set for Nx', async () => {
    const err = new Error('x');
    const signing = await fallbackPlan({ backend: 'http', url, trustedKeys: [] }, {}, err);
    assert.deepEqual(signing.set, {});
    assert.match(/** @type {string} */ (signing.warning), /option "trustedKeys" does not apply to the "http" backend/);
    const bad = await fallbackPlan({ backend: 's4' }, {}, err);
    assert.deepEqual(bad.set, {});
    assert.match(/** @type {string} */ (bad.warning), /invalid value "s4" for option "backend"/);
    const off = await fallbackPlan({ backend: 'http', url, localMode: 'no-cache' }, {}, err);
    assert.deepEqual(off, { warning: undefined, set: {}, location: 'http' });
  });

  test('http: the server and the token go to Nx; the token is never in the warning', async () => {
    answer = { status: 404 };
    const p = await fallbackPlan({ backend: 'http', url, timeout: '30s' }, { NX_OPEN_CACHE_TOKEN: 'tok-123' }, new Error('x'));
    assert.deepEqual(p.set, { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: url, NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: 'tok-123' });
    assert.match(/** @type {string} */ (p.warning), /lost for this run: .*the option "timeout"/);
    assert.ok(!p.warning?.includes('tok-123'));
    assert.equal(seen.at(-1), 'Bearer tok-123', 'the probe sends the token as Nx will');
    const ro = await fallbackPlan({ backend: 'http', url }, { NX_OPEN_CACHE_TOKEN: 't', CI: '1', NX_OPEN_CACHE_MODE: 'read-only' }, new Error('x'));
    assert.match(/** @type {string} */ (ro.warning), /read-only \(NX_OPEN_CACHE_MODE\) cannot be kept: Nx's client uploads every task it runs/);
  });
});

describe('fallback: the probe', () => {
  test('200 and 404 are what Nx takes; 401, 403 and 5xx would fail Nx\'s run', async () => {
    for (const status of [200, 404]) {
      answer = { status };
      assert.equal(await probeServer(url, {}, 5), undefined, `status ${status}`);
    }
    answer = { status: 401 };
    assert.match(/** @type {string} */ (await probeServer(url, { NX_OPEN_CACHE_TOKEN: 't' }, 5)), /refused the token in NX_OPEN_CACHE_TOKEN/);
    assert.match(/** @type {string} */ (await probeServer(url, {}, 5)), /NX_OPEN_CACHE_TOKEN is not set/);
    for (const status of [403, 500, 503]) {
      answer = { status };
      assert.match(/** @type {string} */ (await probeServer(url, {}, 5)), new RegExp(`answered ${status}`));
    }
  });

  test('a server that trickles its answer is given up on at the bound, not held until it ends', async () => {
    /** @type {Set<net.Socket>} */
    const sockets = new Set();
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.write('HTTP/1.1 200 OK\r\n');
      // One header line every 200 ms: never idle long enough for the idle timer.
      let n = 0;
      const tick = setInterval(() => {
        if (socket.destroyed || n++ > 100) return clearInterval(tick);
        socket.write(`X-Slow-${n}: a\r\n`);
      }, 200);
      socket.on('close', () => clearInterval(tick));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
    const port = /** @type {net.AddressInfo} */ (server.address()).port;
    try {
      const why = await probeServer(`http://127.0.0.1:${port}`, {}, 1);
      assert.match(/** @type {string} */ (why), /no complete answer within 1 s/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve(undefined)));
    }
  });

  test('a closed port is named with the error', async () => {
    const port = await new Promise((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = /** @type {net.AddressInfo} */ (s.address()).port;
        s.close(() => resolve(p));
      });
    });
    assert.match(/** @type {string} */ (await probeServer(`http://127.0.0.1:${port}`, {}, 5)), /ECONNREFUSED/);
  });

  test('https: trusted through SSL_CERT_FILE (as Nx\'s client), not through NODE_EXTRA_CA_CERTS alone', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-fallback-tls-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const f = (/** @type {string} */ n) => path.join(dir, n);
    fs.writeFileSync(f('leaf.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    for (const args of [
      ['req', '-x509', ...ec, '-days', '2', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', '/CN=fallback test CA',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
      ['req', ...ec, '-keyout', f('leaf.key'), '-out', f('leaf.csr'), '-subj', '/CN=127.0.0.1'],
      ['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-out', f('leaf.pem'), '-extfile', f('leaf.ext')],
    ]) {
      const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 0, `openssl ${args[0]}: ${r.stderr}`);
    }
    const tlsServer = https.createServer({ cert: fs.readFileSync(f('leaf.pem')), key: fs.readFileSync(f('leaf.key')) }, (_req, res) => {
      res.statusCode = 404;
      res.end();
    });
    await new Promise((resolve) => tlsServer.listen(0, '127.0.0.1', () => resolve(undefined)));
    t.after(() => new Promise((resolve) => tlsServer.close(() => resolve(undefined))));
    const tlsUrl = `https://127.0.0.1:${/** @type {net.AddressInfo} */ (tlsServer.address()).port}`;
    assert.equal(await probeServer(tlsUrl, { SSL_CERT_FILE: f('ca.pem') }, 5), undefined);
    // NODE_EXTRA_CA_CERTS is read by Node at start: a process of its own, which does trust the CA
    // for its own requests, still probes as Nx's client, which does not.
    const script = `
      const https = require('node:https');
      const { probeServer } = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'fallback.js'))});
      https.get(process.argv[1] + '/v1/cache/1', (res) => {
        res.resume();
        probeServer(process.argv[1], { ...process.env }, 5).then((why) => console.log(JSON.stringify({ node: res.statusCode, probe: why ?? null })));
      }).on('error', (e) => console.log(JSON.stringify({ node: e.message })));`;
    /** @type {NodeJS.ProcessEnv} */
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: f('ca.pem') };
    delete env.SSL_CERT_FILE;
    delete env.SSL_CERT_DIR;
    // Asynchronously: the server answering it runs in this process.
    const child = await new Promise((resolve) => {
      execFile(process.execPath, ['-e', script, tlsUrl], { env, encoding: 'utf8', timeout: 30_000 }, (_e, stdout, stderr) => resolve({ stdout, stderr }));
    });
    const seenByChild = JSON.parse(child.stdout.trim() || '{}');
    assert.equal(seenByChild.node, 404, `Node itself trusts NODE_EXTRA_CA_CERTS: ${child.stdout}${child.stderr}`);
    assert.match(String(seenByChild.probe), /certificate/i, `the probe does not: ${child.stdout}${child.stderr}`);
    const extraOnly = { NODE_EXTRA_CA_CERTS: f('ca.pem'), SSL_CERT_FILE: '/nonexistent/bundle.pem' };
    const plan = await fallbackPlan({ backend: 'http', url: tlsUrl }, extraOnly, new Error('x'));
    assert.deepEqual(plan.set, {});
    assert.match(/** @type {string} */ (plan.warning), /Nx's own client does not read NODE_EXTRA_CA_CERTS/);
    assert.equal(await probeServer(tlsUrl, { NODE_TLS_REJECT_UNAUTHORIZED: '0', SSL_CERT_FILE: '/nonexistent/bundle.pem' }, 5), undefined);
  });
});
