'use strict';
/**
 * `nx-open-cache serve` as users run it: the real CLI in child processes on 127.0.0.1 (random
 * ports), configuration errors, tokens from the environment / a tokens file / a config file, TLS,
 * graceful SIGTERM, kill -9 mid-upload, a real Nx workspace through NX_SELF_HOSTED_REMOTE_CACHE_SERVER
 * (no plugin), and schemathesis against /openapi.json.
 *
 * Run: node --test --test-concurrency=1 __tests__/serve.test.js
 * Needs a native build (`node scripts/ensure-native.js`); the Nx test needs npm (nx from the
 * registry cache), the TLS test the openssl CLI, the schemathesis test `.venv` (scripts/emulators.js).
 */

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const {
  REPO_ROOT, serveEnv, runServeSync, startServe, request, testCertificate, metric, withTimeout,
} = require('./helpers/serve-process.js');
const { storeObjects, createWorkspace, disposePack, isRemoteHit } = require('./helpers/nx-workspace.js');
const { nxArtifact } = require('./helpers/hostile-tar.js');

/** Secrets of at least 16 characters (the server's minimum). */
const RW = 'rw-0123456789abcdef-secret';
const RO = 'ro-fedcba9876543210-secret';
const TOKENS = `ci:read-write:${RW},dev:read-only:${RO}`;

/** @type {string} */
let tmp;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-serve-'));
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
});

/** @param {string} label */
function dir(label) {
  const d = path.join(tmp, `${label}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

function newHash() {
  return `h${crypto.randomBytes(12).toString('hex')}`;
}

/**
 * @param {import('./helpers/serve-process.js').ServeProcess} s
 */
async function stopOk(s) {
  const exit = await s.stop();
  assert.deepEqual(exit, { code: 0, signal: null }, `serve did not exit 0 after SIGTERM\n${s.stderr()}`);
}

/* ------------------------------------------------------------------------------------------------ */

describe('serve: configuration errors exit 2 with a message naming the option, value and allowed values', () => {
  test('--help documents every option and its environment variable', () => {
    const r = runServeSync(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const word of [
      '--storage', '--listen', '--tls-cert', '--tls-key', '--tokens-file', '--allow-anonymous',
      '--max-artifact-size', '--upload-timeout', '--max-concurrent-uploads', '--max-size', '--max-age',
      '--log', '--config', 'NX_OPEN_CACHE_SERVER_', 'TOKENS', 'SIGTERM', '0.0.0.0:3000',
    ]) {
      assert.ok(r.stdout.includes(word), `--help lacks ${word}:\n${r.stdout}`);
    }
  });

  test('bad storage URL', () => {
    const r = runServeSync(['--storage', 'ftp://x/y'], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--storage/);
    assert.match(r.stderr, /"ftp:\/\/x\/y"/);
    assert.match(r.stderr, /s3:\/\/bucket/);
  });

  test('bad size (env)', () => {
    const r = runServeSync(['--storage', `fs:${dir('s')}`], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS, NX_OPEN_CACHE_SERVER_MAX_ARTIFACT_SIZE: '2 gigs' }),
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /NX_OPEN_CACHE_SERVER_MAX_ARTIFACT_SIZE/);
    assert.match(r.stderr, /"2 gigs"/);
    assert.match(r.stderr, /GiB/);
  });

  test('unknown config-file key', () => {
    const d = dir('cfg');
    const file = path.join(d, 'server.toml');
    fs.writeFileSync(file, `storage = "fs:${d}/store"\nmax_artifact_sise = "1GiB"\n`);
    const r = runServeSync(['--config', file], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /"max_artifact_sise"/);
    assert.match(r.stderr, /max_artifact_size/);
  });

  test('no token and no --allow-anonymous: refused', () => {
    const r = runServeSync(['--storage', `fs:${dir('s')}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /refusing to start without any access token/);
    assert.match(r.stderr, /--allow-anonymous/);
  });

  test('a token secret that is too short is a config error that does not print the secret', () => {
    const r = runServeSync(['--storage', `fs:${dir('s')}`], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: 'ci:read-write:tiny-secret' }),
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /NX_OPEN_CACHE_SERVER_TOKENS/);
    assert.ok(!r.stderr.includes('tiny-secret'), r.stderr);
  });

  test('the port is taken: exit 1 naming --listen', async () => {
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(0, '127.0.0.1', () => resolve(undefined)));
    const port = /** @type {net.AddressInfo} */ (blocker.address()).port;
    try {
      const r = runServeSync(['--storage', `fs:${dir('s')}`, '--listen', `127.0.0.1:${port}`], {
        env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
      });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`--listen 127.0.0.1:${port}`));
    } finally {
      blocker.close();
    }
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('serve: tokens', () => {
  test('tokens from the environment: roles, 401, startup line names tokens and roles, never secrets', async () => {
    const store = dir('store');
    const s = await startServe(['--storage', `fs:${store}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
    try {
      assert.match(s.banner, /ci \(read-write\)/);
      assert.match(s.banner, /dev \(read-only\)/);
      assert.match(s.banner, /anonymous read off/);
      assert.match(s.banner, new RegExp(`storage fs ${store.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      assert.ok(!s.banner.includes(RW) && !s.banner.includes(RO), s.banner);
      const hash = newHash();
      const body = nxArtifact({ 'dist/blob.bin': crypto.randomBytes(4096) });
      const url = `${s.url}/v1/cache/${hash}`;
      assert.equal((await request(url, { token: RO })).status, 404);
      assert.equal((await request(url, { method: 'PUT', token: RO, body })).status, 403);
      const noAuth = await request(url);
      assert.equal(noAuth.status, 401);
      assert.equal(noAuth.headers['content-type'], 'text/plain');
      assert.equal((await request(url, { token: 'wrong-wrong-wrong-wrong' })).status, 401);
      assert.equal((await request(url, { method: 'PUT', token: RW, body })).status, 200);
      const got = await request(url, { token: RO });
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(body));
      assert.equal((await request(`${s.url}/healthz`)).status, 200);
      assert.equal((await request(`${s.url}/readyz`)).status, 200);
      assert.ok(!s.stdout().includes(RW) && !s.stderr().includes(RW), 'a secret was printed');
    } finally {
      await stopOk(s);
    }
  });

  test('tokens from a tokens file and the config file (namespaces), anonymous read', async () => {
    const d = dir('cfg');
    fs.writeFileSync(path.join(d, 'tokens.txt'), `# simple form\nci:read-write:${RW}\n`);
    fs.writeFileSync(path.join(d, 'pr.secret'), 'pr-secret-0123456789abcdef\n');
    const config = path.join(d, 'server.json');
    fs.writeFileSync(config, JSON.stringify({
      storage: 'fs:store',
      tokens_file: 'tokens.txt',
      allow_anonymous: true,
      tokens: [
        { name: 'pr', role: 'read-write', secret_file: 'pr.secret', write_prefix: 'pr', read_prefixes: ['pr', ''] },
        { name: 'reader', role: 'read-only', secret_env: 'READER_SECRET' },
      ],
    }));
    const s = await startServe(['--config', config], {
      env: serveEnv({ READER_SECRET: RO }),
      cwd: tmp,
    });
    try {
      assert.match(s.banner, /ci \(read-write\)/);
      assert.match(s.banner, /pr \(read-write\) writes "pr"/);
      assert.match(s.banner, /reader \(read-only\)/);
      assert.match(s.banner, /anonymous read on/);
      const main = newHash();
      const prOnly = newHash();
      const a = nxArtifact({ 'dist/a.bin': crypto.randomBytes(1000) });
      const b = nxArtifact({ 'dist/b.bin': crypto.randomBytes(1000) });
      const url = (/** @type {string} */ h) => `${s.url}/v1/cache/${h}`;
      assert.equal((await request(url(main), { method: 'PUT', token: RW, body: a })).status, 200);
      assert.equal((await request(url(prOnly), { method: 'PUT', token: 'pr-secret-0123456789abcdef', body: b })).status, 200);
      // The PR token reads its own area, then main's; the others never see the PR's artifacts.
      assert.equal((await request(url(main), { token: 'pr-secret-0123456789abcdef' })).status, 200);
      assert.equal((await request(url(prOnly), { token: 'pr-secret-0123456789abcdef' })).status, 200);
      assert.equal((await request(url(prOnly), { token: RO })).status, 404);
      assert.equal((await request(url(prOnly), { token: RW })).status, 404);
      // Anonymous: reads main, never writes.
      assert.equal((await request(url(main))).status, 200);
      assert.equal((await request(url(newHash()), { method: 'PUT', body: a })).status, 401);
      const objects = storeObjects(path.join(d, 'store'));
      assert.ok(objects.some((o) => o.startsWith('pr/') && o.endsWith(prOnly)), objects.join('\n'));
      assert.ok(objects.some((o) => !o.startsWith('pr/') && o.endsWith(main)), objects.join('\n'));
    } finally {
      await stopOk(s);
    }
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('serve: TLS', () => {
  test('GET/PUT over https with a private CA; a silent client does not block others', async (t) => {
    const d = dir('tls');
    const pair = testCertificate(d);
    if (!pair) {
      t.skip('the openssl CLI is not available to make a test certificate');
      return;
    }
    const s = await startServe(['--storage', `fs:${d}/store`, '--tls-cert', pair.cert, '--tls-key', pair.key], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
    });
    // A client that connects and never starts its handshake.
    const port = Number(new URL(s.url).port);
    const silent = net.connect(port, '127.0.0.1');
    await new Promise((resolve, reject) => { silent.once('connect', resolve); silent.once('error', reject); });
    try {
      assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const ca = fs.readFileSync(pair.ca);
      const hash = newHash();
      const body = nxArtifact({ 'dist/blob.bin': crypto.randomBytes(300_000) });
      const put = await request(`${s.url}/v1/cache/${hash}`, { method: 'PUT', token: RW, body, ca });
      assert.equal(put.status, 200);
      const got = await request(`${s.url}/v1/cache/${hash}`, { token: RO, ca });
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(body));
      // Without the CA the client refuses the certificate.
      await assert.rejects(request(`${s.url}/healthz`), /self.signed|certificate|issuer/i);
      // Plain HTTP on the TLS port gets no HTTP answer.
      await assert.rejects(request(`http://127.0.0.1:${port}/healthz`));
    } finally {
      silent.destroy();
      await stopOk(s);
    }
  });

  test('a key that does not match the certificate: exit 2 naming both files', (t) => {
    const d1 = dir('tls1');
    const d2 = dir('tls2');
    const a = testCertificate(d1);
    const b = testCertificate(d2);
    if (!a || !b) {
      t.skip('the openssl CLI is not available to make a test certificate');
      return;
    }
    const r = runServeSync(['--storage', `fs:${d1}/store`, '--tls-cert', a.cert, '--tls-key', b.key], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
    });
    assert.equal(r.code, 2, r.stderr);
    assert.ok(r.stderr.includes(a.cert) && r.stderr.includes(b.key), r.stderr);
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('serve: stopping', () => {
  test('SIGTERM during a download lets it finish, then exits 0', async () => {
    const store = dir('store');
    const s = await startServe(['--storage', `fs:${store}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
    let stopped = false;
    try {
      const hash = newHash();
      const body = nxArtifact({ 'dist/blob.bin': crypto.randomBytes(64 * 1024 * 1024) }, { level: 0 });
      assert.equal((await request(`${s.url}/v1/cache/${hash}`, { method: 'PUT', token: RW, body })).status, 200);
      const digest = crypto.createHash('sha256').update(body).digest('hex');
      const download = new Promise((resolve, reject) => {
        const req = http.get(`${s.url}/v1/cache/${hash}`, { headers: { authorization: `Bearer ${RO}` }, agent: false }, (res) => {
          const h = crypto.createHash('sha256');
          let n = 0;
          let signalled = false;
          res.on('data', (c) => {
            h.update(c);
            n += c.length;
            if (!signalled) {
              // First bytes are here: stop reading, signal the server, read on once it is stopping.
              signalled = true;
              res.pause();
              s.child.kill('SIGTERM');
              s.waitForStderr(/SIGTERM: stopping/).then(() => res.resume(), reject);
            }
          });
          res.on('end', () => resolve({ status: res.statusCode, n, digest: h.digest('hex') }));
          res.on('error', reject);
        });
        req.on('error', reject);
      });
      const r = /** @type {{ status: number, n: number, digest: string }} */ (
        await withTimeout(download, 120_000, 'download did not finish'));
      assert.equal(r.status, 200);
      assert.equal(r.n, body.length);
      assert.equal(r.digest, digest);
      const exit = await withTimeout(s.exited, 60_000, 'serve did not exit');
      stopped = true;
      assert.deepEqual(exit, { code: 0, signal: null }, s.stderr());
      assert.match(s.stderr(), /stopped/);
    } finally {
      if (!stopped) await s.stop().catch(() => undefined);
    }
  });

  test('kill -9 during a large upload: after a restart the hash is a miss and no partial object is visible', async () => {
    const store = dir('store');
    const env = serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS });
    const s = await startServe(['--storage', `fs:${store}`], { env });
    const hash = newHash();
    // A valid artifact (serve checks uploads as they stream in), sent a MiB at a time.
    const artifact = nxArtifact({ 'dist/blob.bin': crypto.randomBytes(64 * 1024 * 1024) }, { level: 0 });
    const total = artifact.length;
    const MIB = 1024 * 1024;
    const tmpDir = path.join(store, '.tmp');
    const upload = new Promise((resolve) => {
      const req = http.request(`${s.url}/v1/cache/${hash}`, {
        method: 'PUT',
        agent: false,
        headers: { authorization: `Bearer ${RW}`, 'content-length': total },
      });
      req.on('error', (e) => resolve(e));
      req.on('response', (res) => resolve(new Error(`unexpected answer ${res.statusCode}`)));
      let sent = 0;
      let killed = false;
      const tmpSize = () => fs.existsSync(tmpDir)
        ? fs.readdirSync(tmpDir).reduce((sum, f) => sum + fs.statSync(path.join(tmpDir, f)).size, 0)
        : 0;
      const pump = () => {
        if (killed) return;
        // Slowly: one MiB per tick; once the server has written part of it to its temp file, kill it.
        if (sent >= 16 * 1024 * 1024 && tmpSize() > 0) {
          killed = true;
          s.child.kill('SIGKILL');
          return;
        }
        if (sent + MIB >= total) {
          resolve(new Error('the whole body was sent before the server wrote anything'));
          return;
        }
        const chunk = artifact.subarray(sent, sent + MIB);
        sent += chunk.length;
        if (req.write(chunk)) setTimeout(pump, 5);
        else req.once('drain', () => setTimeout(pump, 5));
      };
      pump();
    });
    const exit = await withTimeout(s.exited, 120_000, 'serve was not killed');
    assert.equal(exit.signal, 'SIGKILL');
    const err = /** @type {Error} */ (await withTimeout(upload, 60_000, 'upload did not end'));
    assert.ok(!/unexpected answer|whole body/.test(err.message), err.message);

    const again = await startServe(['--storage', `fs:${store}`], { env });
    try {
      assert.equal((await request(`${again.url}/v1/cache/${hash}`, { token: RO })).status, 404);
      const visible = storeObjects(store);
      assert.deepEqual(visible.filter((f) => f.includes(hash)), [], visible.join('\n'));
    } finally {
      await stopOk(again);
    }
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('serve: a real Nx workspace through NX_SELF_HOSTED_REMOTE_CACHE_SERVER (no plugin)', () => {
  /** @type {import('./helpers/nx-workspace.js').NxWorkspace | undefined} */
  let ws;

  after(async () => {
    if (ws) await ws.dispose();
    disposePack();
  });

  test('read-write token stores every task; read-only token hits every task; a read-only miss never writes', async (t) => {
    ws = await createWorkspace();
    await ws.resetScenario();
    const store = dir('nx-store');
    const s = await startServe(['--storage', `fs:${store}`, '--log', 'json'], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
    });
    /** @param {string} token */
    const nxEnv = (token) => ({
      NX_SELF_HOSTED_REMOTE_CACHE_SERVER: s.url,
      NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: token,
      NX_DAEMON: 'false',
    });
    const projects = ws.projects.map((p) => p.name).sort();
    const metrics = async () => (await request(`${s.url}/metrics`)).body.toString('utf8');
    try {
      // Machine A, cold, read-write: every task runs and is stored.
      const a = await ws.runBuild({ env: nxEnv(RW) });
      assert.equal(a.code, 0, a.output);
      assert.deepEqual([...ws.builtProjects()].sort(), projects, a.output);
      const objects = storeObjects(store);
      assert.equal(objects.length, projects.length, objects.join('\n'));
      assert.equal(metric(await metrics(), 'nx_open_cache_stored_total'), projects.length);
      const outputsA = ws.snapshotOutputs();

      // Machine B: nothing local, read-only token: every task is a remote hit, nothing runs.
      await ws.nxReset();
      ws.cleanOutputs();
      ws.clearBuildLog();
      const b = await ws.runBuild({ env: nxEnv(RO) });
      assert.equal(b.code, 0, b.output);
      assert.deepEqual(ws.builtProjects(), [], b.output);
      for (const p of projects) assert.ok(isRemoteHit(b.output, p), `${p} not a remote hit\n${b.output}`);
      assert.deepEqual(ws.snapshotOutputs(), outputsA);
      assert.deepEqual(storeObjects(store), objects);

      // Machine B changes a source: that task misses and runs; its upload is refused, the store
      // is unchanged, and the build is green.
      const changed = ws.projects.find((p) => p.name === 'app-c') || ws.projects[0];
      const src = path.join(ws.root, changed.dir, 'src', 'index.txt');
      const original = fs.readFileSync(src);
      fs.appendFileSync(src, 'changed on machine B\n');
      t.after(() => fs.writeFileSync(src, original));
      await ws.nxReset();
      ws.clearBuildLog();
      const before = await metrics();
      const c = await ws.runBuild({ env: nxEnv(RO) });
      assert.equal(c.code, 0, c.output);
      assert.deepEqual(ws.builtProjects(), [changed.name], c.output);
      assert.deepEqual(storeObjects(store), objects);
      const afterText = await metrics();
      assert.equal(metric(afterText, 'nx_open_cache_stored_total'), projects.length);
      const refusedPuts = (/** @type {string} */ text) => text.split('\n')
        .filter((l) => l.startsWith('nx_open_cache_requests_total{') && /method="PUT"/.test(l) && /status="403"/.test(l))
        .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
      assert.ok(refusedPuts(afterText) > refusedPuts(before), `no refused PUT in /metrics:\n${afterText}`);
      // The JSON request log names the token, never its secret.
      assert.match(s.stderr(), /"token":"dev"/);
      assert.ok(!s.stderr().includes(RW) && !s.stderr().includes(RO));
    } finally {
      await stopOk(s);
    }
  });

  test('over TLS: Nx (its Rust client) trusts a private CA through SSL_CERT_FILE; stores, then hits', async (t) => {
    const d = dir('nx-tls');
    const pair = testCertificate(d);
    if (!pair) {
      t.skip('the openssl CLI is not available to make a test certificate');
      return;
    }
    if (!ws) ws = await createWorkspace();
    await ws.resetScenario();
    const store = path.join(d, 'store');
    const s = await startServe(['--storage', `fs:${store}`, '--tls-cert', pair.cert, '--tls-key', pair.key], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
    });
    const nxEnv = {
      NX_SELF_HOSTED_REMOTE_CACHE_SERVER: s.url,
      NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: RW,
      // Nx 24's cache client reads its trust store from SSL_CERT_FILE (NODE_EXTRA_CA_CERTS is not
      // enough for it); on loopback the test CA alone will do.
      SSL_CERT_FILE: pair.ca,
      NX_DAEMON: 'false',
    };
    const projects = ws.projects.map((p) => p.name).sort();
    try {
      const a = await ws.runBuild({ env: nxEnv });
      assert.equal(a.code, 0, a.output);
      assert.equal(storeObjects(store).length, projects.length, `${a.output}\n${s.stderr()}`);
      await ws.nxReset();
      ws.cleanOutputs();
      ws.clearBuildLog();
      const b = await ws.runBuild({ env: nxEnv });
      assert.equal(b.code, 0, b.output);
      assert.deepEqual(ws.builtProjects(), [], b.output);
      for (const p of projects) assert.ok(isRemoteHit(b.output, p), `${p} not a remote hit\n${b.output}`);
    } finally {
      await stopOk(s);
    }
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('serve: schemathesis against /openapi.json', () => {
  test('no server errors', async (t) => {
    const bin = path.join(REPO_ROOT, '.venv', 'bin', 'schemathesis');
    if (!fs.existsSync(bin)) {
      t.skip(`${bin} is missing: run \`node scripts/emulators.js install\``);
      return;
    }
    // Schemathesis sends Content-Length values that do not match its bodies; a body shorter than
    // announced keeps the server waiting for the rest until the upload timeout (then 408): short here.
    const s = await startServe(['--storage', `fs:${dir('st-store')}`, '--log', 'off', '--max-artifact-size', '1MiB', '--upload-timeout', '2s'], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }),
    });
    try {
      const args = [
        'run', `${s.url}/openapi.json`,
        '--url', s.url,
        '--header', `Authorization: Bearer ${RW}`,
        '--checks', 'not_a_server_error',
        '--max-examples', '40',
        '--seed', '20261121',
        '--generation-database', 'none',
        '--workers', '1',
        '--request-timeout', '30',
        '--no-color',
      ];
      const r = await withTimeout(new Promise((resolve) => {
        const child = spawn(bin, args, { cwd: tmp, env: { ...serveEnv(), SCHEMATHESIS_TELEMETRY: 'false' }, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d) => { out += d; });
        child.stderr.on('data', (d) => { out += d; });
        child.on('close', (code) => resolve({ code, out }));
        child.on('error', (e) => resolve({ code: -1, out: String(e) }));
      }), 600_000, 'schemathesis took longer than 10 minutes');
      const result = /** @type {{ code: number, out: string }} */ (r);
      assert.equal(result.code, 0, `schemathesis failed:\n${result.out}\n--- server stderr ---\n${s.stderr()}`);
    } finally {
      await stopOk(s);
    }
  });
});
