'use strict';
/**
 * The standalone server binary `nx-open-cache-server` is `nx-open-cache serve` without Node: for the
 * same input both entry points print the same startup line (text and JSON), the same `--help` option
 * list and the same configuration errors (only the `--help` hint names the program). Also: the
 * binary's `--version` and `healthcheck` against a server started by the other entry point. The
 * server scenarios themselves run against both entry points in serve.test.js.
 *
 * `cargo install --path . --bin nx-open-cache-server --root <dir> --target-dir target --locked` is not
 * run here: after `cargo build --release --bin nx-open-cache-server` it copies the build (5 s), but
 * after `cargo test --release` (npm test) it compiles the crate again (the test build unifies the
 * dev-dependencies' features), minutes on CI.
 *
 * Run: node --test --test-concurrency=1 __tests__/server-bin.test.js
 * Needs the native addon (`node scripts/ensure-native.js`); builds the binary when missing.
 */

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const {
  REPO_ROOT, ENTRIES, ensureServerBin, serveEnv, runServeSync, startServe, request,
} = require('./helpers/serve-process.js');

const RW = 'rw-0123456789abcdef-secret';
const RO = 'ro-fedcba9876543210-secret';
const TOKENS = `ci:read-write:${RW},dev:read-only:${RO}`;
/** The line `nx-open-cache serve` adds after a configuration error; the binary names itself. */
const HINTS = {
  node: 'Run `nx-open-cache serve --help` for the options.',
  bin: 'Run `nx-open-cache-server --help` for the options.',
};

/** @type {string} */
let tmp;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-server-bin-'));
  ensureServerBin();
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

/**
 * The option names of a `--help` text, in order: every `--flag` that begins an option line.
 * @param {string} help
 */
function optionList(help) {
  return help.split('\n').flatMap((l) => {
    const m = /^ {2}(--[a-z0-9-]+)/.exec(l);
    return m ? [m[1]] : [];
  });
}

/**
 * Runs the binary itself (not as `serve`): `--version`, `healthcheck`.
 * @param {string[]} args
 * @param {Record<string, string>} [extra]
 */
function runBin(args, extra = {}) {
  const r = spawnSync(ensureServerBin(), args, { cwd: REPO_ROOT, env: serveEnv(extra), encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('nx-open-cache-server and `nx-open-cache serve` say the same for the same input', () => {
  test('--help: the same text after the usage lines, the same options in the same order', () => {
    const node = runServeSync(['--help']);
    const bin = runServeSync(['--help'], { entry: 'bin' });
    assert.equal(node.code, 0, node.stderr);
    assert.equal(bin.code, 0, bin.stderr);
    const options = optionList(node.stdout);
    assert.ok(options.length >= 25, `too few options parsed:\n${node.stdout}`);
    assert.deepEqual(optionList(bin.stdout), options);
    const body = node.stdout.slice(node.stdout.indexOf('Runs an Nx remote-cache server')).trimEnd();
    assert.ok(body.length > 1000 && bin.stdout.includes(body), `the binary's --help differs from serve's:\n${bin.stdout}`);
    assert.match(bin.stdout, /^Usage: nx-open-cache-server --storage <url> \[options\]$/m);
    assert.match(bin.stdout, /^nx-open-cache-server healthcheck \[<url>\]$/m);
  });

  test('the startup line (text and JSON) for the same options, environment and config file', async () => {
    const d = dir('banner');
    fs.writeFileSync(path.join(d, 'pr.secret'), 'pr-secret-0123456789abcdef\n');
    const config = path.join(d, 'server.toml');
    fs.writeFileSync(config, [
      'storage = "fs:store"',
      'max_size = "2GiB"',
      'max_age = "30d"',
      '[[tokens]]', 'name = "pr"', 'role = "read-write"', 'secret_file = "pr.secret"', 'write_prefix = "pr"', 'read_prefixes = ["pr", ""]',
      '',
    ].join('\n'));
    const env = serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS, NX_OPEN_CACHE_SERVER_UPLOAD_TIMEOUT: '2m', NX_OPEN_CACHE_SERVER_CHECK_ARTIFACTS: 'uploads' });
    for (const log of ['text', 'json']) {
      /** @type {string[]} */
      const banners = [];
      for (const entry of ENTRIES) {
        const s = await startServe(['--config', config, '--log', log, '--max-concurrent-uploads', '7', '--allow-anonymous'], { env, cwd: d, entry });
        try {
          assert.equal((await request(`${s.url}/healthz`)).status, 200);
          banners.push(s.banner.split(s.url).join('<url>'));
        } finally {
          const exit = await s.stop();
          assert.deepEqual(exit, { code: 0, signal: null }, s.stderr());
        }
      }
      assert.equal(banners[1], banners[0], `${log}: the startup lines differ`);
      assert.ok(banners[0].includes('pr') && banners[0].includes('7'), banners[0]);
    }
  });

  test('configuration errors: the same message and exit status; only the --help hint names the program', async () => {
    const d = dir('errors');
    const store = path.join(d, 'store');
    fs.writeFileSync(path.join(d, 'bad.toml'), `storage = "fs:${store}"\nmax_artifact_sise = "1GiB"\n`);
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(0, '127.0.0.1', () => resolve(undefined)));
    const port = /** @type {net.AddressInfo} */ (blocker.address()).port;
    /** @type {[string, string[], Record<string, string>, number][]} */
    const cases = [
      ['bad storage URL', ['--storage', 'ftp://x/y'], { NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }, 2],
      ['bad size in the environment', ['--storage', `fs:${store}`], { NX_OPEN_CACHE_SERVER_TOKENS: TOKENS, NX_OPEN_CACHE_SERVER_MAX_ARTIFACT_SIZE: '2 gigs' }, 2],
      ['unknown config-file key', ['--config', path.join(d, 'bad.toml')], { NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }, 2],
      ['unknown option', ['--storage', `fs:${store}`, '--max-sise', '1GiB'], { NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }, 2],
      ['no token', ['--storage', `fs:${store}`], {}, 2],
      ['short secret', ['--storage', `fs:${store}`], { NX_OPEN_CACHE_SERVER_TOKENS: 'ci:read-write:tiny-secret' }, 2],
      ['port taken', ['--storage', `fs:${store}`, '--listen', `127.0.0.1:${port}`], { NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }, 1],
    ];
    try {
      for (const [what, args, extra, code] of cases) {
        /** @type {string[]} */
        const messages = [];
        for (const entry of ENTRIES) {
          const r = runServeSync(args, { env: serveEnv(extra), entry });
          assert.equal(r.code, code, `${what} (${entry}): ${r.stderr}`);
          assert.equal(r.stdout, '', `${what} (${entry})`);
          const lines = r.stderr.trimEnd().split('\n');
          if (code === 2) assert.equal(lines.pop(), HINTS[entry], `${what} (${entry})`);
          messages.push(lines.join('\n'));
        }
        assert.equal(messages[1], messages[0], `${what}: the messages differ`);
        assert.match(messages[0], /^nx-open-cache serve: /, what);
        assert.ok(!messages[0].includes('tiny-secret'), messages[0]);
      }
    } finally {
      blocker.close();
    }
  });
});

describe('nx-open-cache-server on its own', () => {
  test('--version prints the package version', () => {
    const r = runBin(['--version']);
    assert.equal(r.code, 0, r.stderr);
    const { version } = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
    assert.equal(r.stdout, `nx-open-cache-server ${version}\n`);
  });

  test('healthcheck: 0 on a server answering 200 (started by the other entry point), 1 on 503, on a closed port and on a bad URL', async () => {
    const store = path.join(dir('hc'), 'store');
    const s = await startServe(['--storage', `fs:${store}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: TOKENS }) });
    const port = new URL(s.url).port;
    try {
      assert.equal(runBin(['healthcheck', `${s.url}/healthz`]).code, 0);
      // The default URL: this host, the port of NX_OPEN_CACHE_SERVER_LISTEN.
      assert.equal(runBin(['healthcheck'], { NX_OPEN_CACHE_SERVER_LISTEN: `0.0.0.0:${port}` }).code, 0);
      // ... or the config file's `listen` (what serve itself would resolve).
      const conf = path.join(dir('hc-conf'), 'server.toml');
      fs.writeFileSync(conf, `listen = "127.0.0.1:${port}"\n`);
      assert.equal(runBin(['healthcheck'], { NX_OPEN_CACHE_SERVER_CONFIG: conf }).code, 0);
      // A listen value serve would refuse: named, exit 1.
      const wrong = runBin(['healthcheck'], { NX_OPEN_CACHE_SERVER_LISTEN: 'port-3000' });
      assert.equal(wrong.code, 1, wrong.stderr);
      assert.match(wrong.stderr, /cannot tell where the server listens: .*"port-3000"/);
      // Storage made unusable: /readyz answers 503, the probe of it fails; /healthz still 200.
      fs.rmSync(store, { recursive: true, force: true });
      fs.writeFileSync(store, 'not a directory');
      const ready = runBin(['healthcheck', `${s.url}/readyz`]);
      assert.equal(ready.code, 1, ready.stderr);
      assert.match(ready.stderr, /status 503/);
      assert.equal(runBin(['healthcheck', `${s.url}/healthz`]).code, 0);
    } finally {
      const exit = await s.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, s.stderr());
    }
    const closed = runBin(['healthcheck', `http://127.0.0.1:${port}/healthz`]);
    assert.equal(closed.code, 1, closed.stderr);
    assert.match(closed.stderr, /^nx-open-cache-server healthcheck: GET http:\/\/127\.0\.0\.1:\d+\/healthz: no answer/);
    const bad = runBin(['healthcheck', 'localhost:3000']);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /invalid URL "localhost:3000"/);
  });
});
