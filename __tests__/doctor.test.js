'use strict';
// `nx-open-cache doctor`: the CLI in a workspace directory, against real fs stores.

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, after } = require('node:test');

const CLI = path.join(__dirname, '..', 'lib', 'cli.js');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-doctor-'));
after(() => fs.rmSync(base, { recursive: true, force: true }));

let n = 0;
/**
 * A workspace dir with the given nx.json.
 * @param {unknown} nxJson
 */
function workspace(nxJson) {
  const dir = path.join(base, `ws${n++}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'nx.json'), JSON.stringify(nxJson));
  return dir;
}

/**
 * @param {string} cwd
 * @param {string[]} args
 * @param {Record<string, string>} [env]
 */
function doctor(cwd, args = [], env = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NX_OPEN_CACHE_') && k !== 'CI'));
  const r = spawnSync(process.execPath, [CLI, 'doctor', ...args], { cwd, env: { ...clean, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** @param {string} dir @returns {string[]} */
function files(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
}

test('a working fs store: every step ok, exit 0, the probe is removed', () => {
  const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store' } }] });
  const r = doctor(ws);
  assert.equal(r.code, 0, r.out + r.err);
  for (const step of ['setup', 'read', 'write', 'read back', 'delete']) {
    assert.match(r.out, new RegExp(`^  ok +${step} .*\\(\\d+ ms\\)$`, 'm'), r.out);
  }
  assert.match(r.out, /mode read-write \(default\)/);
  assert.match(r.out, /the cache works from this machine/);
  assert.deepEqual(files(path.join(ws, 'store')), [], 'no probe left behind');
});

test('read-only mode (CI + ciMode): lookups checked, nothing written, exit 0, the reason shown', () => {
  const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store', ciMode: 'read-only' } }] });
  const r = doctor(ws, ['--json'], { CI: 'true' });
  assert.equal(r.code, 0, r.out + r.err);
  const report = JSON.parse(r.out);
  assert.equal(report.mode, 'read-only');
  assert.match(report.modeSource, /ciMode/);
  assert.deepEqual(
    report.checks.map((/** @type {any} */ c) => [c.name, c.outcome]),
    [['setup', 'ok'], ['read', 'ok'], ['write', 'skipped'], ['read back', 'skipped'], ['delete', 'skipped']],
  );
  assert.equal(report.works, true);
});

test('an unusable directory: failures with a fix, exit 1', () => {
  const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'blocked/cache' } }] });
  fs.writeFileSync(path.join(ws, 'blocked'), 'a file where the directory should be');
  const r = doctor(ws);
  assert.equal(r.code, 1, r.out + r.err);
  assert.match(r.out, /^ {2}FAIL setup .*blocked/m, r.out);
  assert.match(r.out, /fix: create .*blocked\/cache/, r.out);
  assert.match(r.out, /the cache does NOT work/);
});

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

test('a directory this user may not even read (0700, doctor as nobody): setup and read fail, no read-only advice, exit 1', { skip: !asRoot && 'needs root to run doctor as nobody' }, (t) => {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-doctor-closed-'));
  t.after(() => fs.rmSync(parent, { recursive: true, force: true }));
  fs.chmodSync(parent, 0o755);
  const store = path.join(parent, 'store');
  fs.mkdirSync(store, { mode: 0o700 });
  fs.chmodSync(store, 0o700);
  const ws = path.join(parent, 'ws');
  fs.mkdirSync(ws, { mode: 0o755 });
  fs.writeFileSync(path.join(ws, 'nx.json'), JSON.stringify({ plugins: [{ plugin: 'nx-open-cache', options: { path: store } }] }), { mode: 0o644 });
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NX_OPEN_CACHE_') && k !== 'CI'));
  const nobody = ['--reuid', '65534', '--regid', '65534', '--clear-groups', '--', process.execPath, CLI, 'doctor'];
  const r = spawnSync('setpriv', nobody, { cwd: ws, env: clean, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^ {2}FAIL setup {2}.*Permission denied.*\(\d+ ms\)$/m, r.stdout);
  assert.ok(
    r.stdout.includes(`fix: this user may not read ${store} either: make it readable (and writable, to store) for this user, or point \`path\` at a directory that is\n`),
    r.stdout,
  );
  assert.match(r.stdout, /^ {2}FAIL read /m, r.stdout);
  assert.ok(r.stdout.includes(`fix: make ${store} readable and writable for this user (readable is enough in read-only mode)`), r.stdout);
  assert.ok(!r.stdout.includes('reads work'), `no read-only advice when reads fail too:\n${r.stdout}`);
  assert.match(r.stdout, /^the cache does NOT work from this machine/m, r.stdout);
});

test('configuration mistakes: exit 2, naming the option, the value and the choices', () => {
  const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 's4' } }] });
  const r = doctor(ws);
  assert.equal(r.code, 2, r.out + r.err);
  assert.match(r.err, /invalid value "s4" for option "backend": expected one of "fs", "s3", "gcs", "azure", "http"/);
  const r2 = doctor(workspace({ plugins: ['nx-open-cache'] }), [], { NX_OPEN_CACHE_MODE: 'read' });
  assert.equal(r2.code, 2, r2.out + r2.err);
  assert.match(r2.err, /invalid value "read" for option "NX_OPEN_CACHE_MODE": expected one of "read-write", "read-only", "no-cache"/);
  const r3 = doctor(ws, ['--fix']);
  assert.equal(r3.code, 2);
  assert.match(r3.err, /unknown option "--fix" for doctor \(allowed: --json\)/);
});

test('no plugin in nx.json: says how to add it, exit 1; --help documents the steps', () => {
  const r = doctor(workspace({ plugins: [] }));
  assert.equal(r.code, 1);
  assert.match(r.err, /nx g nx-open-cache:init/);
  const h = doctor(base, ['--help']);
  assert.equal(h.code, 0);
  assert.match(h.out, /write, read back, delete/);
});

/**
 * @param {string} cwd
 * @param {string[]} args
 * @param {Record<string, string>} [env]
 */
function cli(cwd, args, env = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NX_OPEN_CACHE_') && k !== 'CI'));
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, env: { ...clean, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('config, doctor and gc see the configuration the plugin uses: the deprecated block, the first of two entries', () => {
  // The plugin entry names no backend: the deprecated s3 block configures the cache, the entry's
  // options override it. `config` used to ignore the block and show the default fs backend.
  const legacy = workspace({
    plugins: [{ plugin: 'nx-open-cache', options: { timeout: 2, connectTimeout: 1 } }],
    s3: { bucket: 'legacy-bucket', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true, accessKeyId: 'AKIA-TEST', secretAccessKey: 'not-shown-secret' },
  });
  const config = cli(legacy, ['config'], { AWS_EC2_METADATA_DISABLED: 'true' });
  assert.equal(config.code, 0, config.err);
  const c = JSON.parse(config.out);
  assert.equal(c.backend, 's3');
  assert.match(c.location, /legacy-bucket/);
  assert.match(config.err, /using the deprecated top-level "s3" block/);
  assert.ok(!(config.out + config.err).includes('not-shown-secret'));
  const d = cli(legacy, ['doctor', '--json'], { AWS_EC2_METADATA_DISABLED: 'true' });
  assert.equal(d.code, 1, d.out + d.err);
  assert.match(JSON.parse(d.out).location, /^s3 legacy-bucket\b/);
  const gc = cli(legacy, ['gc', '--max-age', '1d']);
  assert.equal(gc.code, 2);
  assert.match(gc.err, /this workspace caches in .*legacy-bucket.* \(s3\): gc works on fs cache directories/);

  // Two entries: the first wins everywhere (doctor used to take the last).
  const twice = workspace({
    plugins: [
      { plugin: 'nx-open-cache', options: { path: 'first' } },
      { plugin: 'nx-open-cache', options: { path: 'second' } },
    ],
  });
  const config2 = cli(twice, ['config']);
  assert.equal(config2.code, 0, config2.err);
  assert.equal(JSON.parse(config2.out).location, path.join(twice, 'first'));
  assert.match(config2.err, /lists nx-open-cache 2 times: the first entry is used/);
  const d2 = cli(twice, ['doctor', '--json']);
  assert.equal(d2.code, 0, d2.out + d2.err);
  const report = JSON.parse(d2.out);
  assert.equal(report.location, `fs ${path.join(twice, 'first')}`);
  assert.match(report.notes.join('\n'), /the first entry is used/);
  const gc2 = cli(twice, ['gc', '--max-age', '1d', '--json']);
  assert.equal(gc2.code, 0, gc2.err);
  assert.equal(JSON.parse(gc2.out).path, path.join(twice, 'first'));
});

test('every JS command names a bad argument and the allowed ones; --help anywhere shows the usage', () => {
  const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store' } }] });
  /** @type {[string[], RegExp][]} */
  const cases = [
    [['summary', '--jsn'], /nx-open-cache summary: unknown option "--jsn" for summary \(allowed: --json\)/],
    [['config', '--json'], /nx-open-cache config: unknown option "--json" for config \(it takes no options\)/],
    [['host', 'restart'], /nx-open-cache host: unexpected argument "restart" for host: expected at most one of status, stop/],
    [['host', '--json=yes'], /nx-open-cache host: option --json takes no value \(got "yes"\)/],
    [['keygen', '--encrypt'], /nx-open-cache keygen: unknown option "--encrypt" for keygen \(allowed: --encryption, --json\)/],
    [['doctor', 'now'], /nx-open-cache doctor: unexpected argument "now" for doctor: it takes options only/],
  ];
  for (const [args, message] of cases) {
    const r = cli(ws, args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.err, message);
  }
  for (const [command, usage] of [['host', /Usage: nx-open-cache host/], ['keygen', /Usage: nx-open-cache keygen/], ['gc', /Usage: nx-open-cache gc/]]) {
    const r = cli(ws, [/** @type {string} */ (command), '--bogus', '-h']);
    assert.equal(r.code, 0, `${command}: ${r.err}`);
    assert.match(r.out, /** @type {RegExp} */ (usage));
  }
});

test('a read-only token of a real serve: reads work, writes are refused: a warning that says read-only mode, exit 0, on a developer machine in the default mode; broken (exit 1) on CI or with read-write set', async () => {
  const { startServe, serveEnv } = require('./helpers/serve-process.js');
  const crypto = require('node:crypto');
  const ro = crypto.randomBytes(16).toString('hex');
  const rw = crypto.randomBytes(16).toString('hex');
  const upstream = await startServe(['--storage', `fs:${path.join(base, 'serve-storage')}`, '--log', 'off'], {
    env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `dev:read-only:${ro},ci:read-write:${rw}` }),
  });
  try {
    const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 'http', url: upstream.url } }] });
    // serve is another process: the synchronous doctor runs below do not block it.
    const dev = doctor(ws, [], { NX_OPEN_CACHE_TOKEN: ro });
    assert.equal(dev.code, 0, dev.out + dev.err);
    assert.match(dev.out, /^ {2}ok {3}read {7}a lookup was answered/m, dev.out);
    assert.match(dev.out, /^ {2}WARN write {6}.*403.*\(\d+ ms\)$/m, dev.out);
    assert.match(dev.out, /fix: reads work, writes are refused: set localMode "read-only" in the nx-open-cache plugin options \(or NX_OPEN_CACHE_MODE=read-only\) on this machine; to store from here, use a read-write token in NX_OPEN_CACHE_TOKEN$/m, dev.out);
    assert.match(dev.out, /^the cache works from this machine, with 1 warning: reads work, writes are refused \(see the fix above\)$/m, dev.out);
    assert.ok(!(dev.out + dev.err).includes(ro), 'the token is never shown');
    const json = JSON.parse(doctor(ws, ['--json'], { NX_OPEN_CACHE_TOKEN: ro }).out);
    assert.equal(json.status, 'warning');
    assert.equal(json.works, true);
    // Already read-only: the write is skipped (and says so), and that passes without a warning.
    const ro2 = doctor(ws, [], { NX_OPEN_CACHE_TOKEN: ro, NX_OPEN_CACHE_MODE: 'read-only' });
    assert.equal(ro2.code, 0, ro2.out + ro2.err);
    assert.match(ro2.out, /^ {2}skip write {6}mode is read-only: nothing is written$/m, ro2.out);
    assert.match(ro2.out, /^the cache works from this machine$/m, ro2.out);
    // On CI, or with read-write mode set explicitly, this machine is meant to write: refused
    // writes are a broken cache (exit 1), and the fix is a read-write token first.
    const writers = /** @type {[Record<string, string>, string, string][]} */ ([
      [{ CI: 'true' }, 'default (CI detected)', 'ciMode'],
      [{ NX_OPEN_CACHE_MODE: 'read-write' }, 'NX_OPEN_CACHE_MODE', 'localMode'],
    ]);
    for (const [env, source, option] of writers) {
      const w = doctor(ws, [], { NX_OPEN_CACHE_TOKEN: ro, ...env });
      assert.equal(w.code, 1, w.out + w.err);
      assert.match(w.out, /^ {2}ok {3}read {7}a lookup was answered/m, w.out);
      assert.match(w.out, /^ {2}FAIL write {6}.*403.*\(\d+ ms\)$/m, w.out);
      assert.ok(
        w.out.includes(
          `fix: reads work, writes are refused, and this machine is meant to write (mode read-write from ${source}): ` +
            `use a read-write token in NX_OPEN_CACHE_TOKEN; if it should only read, set ${option} "read-only" in the nx-open-cache plugin options (or NX_OPEN_CACHE_MODE=read-only)\n`,
        ),
        w.out,
      );
      assert.match(w.out, /^the cache does NOT work from this machine/m, w.out);
      const report = JSON.parse(doctor(ws, ['--json'], { NX_OPEN_CACHE_TOKEN: ro, ...env }).out);
      assert.equal(report.status, 'broken');
      assert.equal(report.works, false);
    }
    // On CI with ciMode read-write given explicitly: the same.
    const ciWs = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 'http', url: upstream.url, ciMode: 'read-write' } }] });
    const ci = doctor(ciWs, [], { NX_OPEN_CACHE_TOKEN: ro, CI: 'true' });
    assert.equal(ci.code, 1, ci.out + ci.err);
    assert.match(ci.out, /meant to write \(mode read-write from ciMode \(CI detected\)\): use a read-write token/, ci.out);
    // A read-write token: no warning.
    const writer = doctor(ws, [], { NX_OPEN_CACHE_TOKEN: rw });
    assert.equal(writer.code, 0, writer.out + writer.err);
    assert.match(writer.out, /^the cache works from this machine$/m, writer.out);
  } finally {
    await upstream.stop();
  }
});

test('key ids and config warnings: doctor (WARN, exit 0) and config (stderr, JSON fields) show them, never a secret', () => {
  const native = require('../index.js');
  const signer = native.keygen();
  const other = native.keygen();
  const enc = native.encryptionKeygen();
  const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store', trustedKeys: [other.publicKey], requireSignature: true } }] });
  const env = { NX_OPEN_CACHE_SIGNING_KEY: signer.secretKey, NX_OPEN_CACHE_ENCRYPTION_KEY: enc.key, NX_OPEN_CACHE_TOKN: 'typo-value' };
  const d = doctor(ws, [], env);
  assert.equal(d.code, 0, d.out + d.err);
  assert.match(d.out, new RegExp(`signs with key ${signer.keyId}, trusts ${other.keyId} \\(requires signatures\\), encrypts with key ${enc.keyId}`), d.out);
  assert.match(d.out, /^ {2}WARN unknown environment variable NX_OPEN_CACHE_TOKN \(ignored\): did you mean NX_OPEN_CACHE_TOKEN\?$/m, d.out);
  assert.match(d.out, new RegExp(`^ {2}WARN NX_OPEN_CACHE_SIGNING_KEY signs with key ${signer.keyId}, but "trustedKeys" lists ${other.keyId}: other machines will refuse what this one signs`, 'm'), d.out);
  assert.match(d.out, /^the cache works from this machine, with 2 warnings: see above$/m, d.out);
  const c = cli(ws, ['config'], env);
  assert.equal(c.code, 0, c.err);
  const shown = JSON.parse(c.out);
  assert.equal(shown.signingKeyId, signer.keyId);
  assert.deepEqual(shown.trustedKeyIds, [other.keyId]);
  assert.deepEqual(shown.encryptionKeyIds, [enc.keyId]);
  assert.equal(shown.requireSignature, true);
  assert.equal(shown.warnings.length, 2);
  assert.match(c.err, new RegExp(`^nx-open-cache: keys: signs with key ${signer.keyId}, trusts ${other.keyId}`, 'm'), c.err);
  assert.match(c.err, /^nx-open-cache: warning: unknown environment variable NX_OPEN_CACHE_TOKN \(ignored\): did you mean NX_OPEN_CACHE_TOKEN\?$/m, c.err);
  for (const out of [d.out + d.err, c.out + c.err]) {
    for (const secret of [signer.secretKey, enc.key, 'typo-value']) assert.ok(!out.includes(secret), `${secret} shown`);
  }
  // Its public key listed: no warning.
  const fine = workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store', trustedKeys: [other.publicKey, signer.publicKey] } }] });
  const ok = doctor(fine, [], { NX_OPEN_CACHE_SIGNING_KEY: signer.secretKey });
  assert.equal(ok.code, 0, ok.out + ok.err);
  assert.ok(!ok.out.includes('WARN'), ok.out);
  assert.equal(native.publicKeyId(signer.publicKey), signer.keyId);
});

test('an unknown option gets a "did you mean" when a known one is close; the encryption-key error names encryptionKey only when nx.json has one', () => {
  const typo = doctor(workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store', trustedKey: [] } }] }));
  assert.equal(typo.code, 2, typo.out + typo.err);
  assert.match(typo.err, /unknown option "trustedKey" in the nx-open-cache plugin options \(did you mean "trustedKeys"\?\); known options: /);
  const far = doctor(workspace({ plugins: [{ plugin: 'nx-open-cache', options: { frobnicate: 1 } }] }));
  assert.equal(far.code, 2);
  assert.doesNotMatch(far.err, /did you mean/);

  const bad = 'bm90LWEta2V5';
  const plain = doctor(workspace({ plugins: [{ plugin: 'nx-open-cache', options: { path: 'store' } }] }), [], { NX_OPEN_CACHE_ENCRYPTION_KEY: bad });
  assert.equal(plain.code, 2, plain.out + plain.err);
  assert.match(plain.err, /NX_OPEN_CACHE_ENCRYPTION_KEY is not a valid encryption key: it decodes to 9 bytes, not 32/);
  assert.doesNotMatch(plain.err, /encryptionKey|deprecated/);
  const legacy = workspace({ plugins: ['nx-open-cache'], s3: { bucket: 'b', region: 'eu-west-1', encryptionKey: bad } });
  const l = doctor(legacy, [], { AWS_EC2_METADATA_DISABLED: 'true' });
  assert.equal(l.code, 2, l.out + l.err);
  assert.match(l.err, /NX_OPEN_CACHE_ENCRYPTION_KEY is not a valid encryption key \(it comes from "encryptionKey" of the deprecated top-level "s3" block of nx.json/);
  for (const out of [plain.out + plain.err, l.out + l.err]) assert.ok(!out.includes(bad), 'the key is never shown');
});

test('S3 credentials that may only read (moto with IAM users): reads work, writes are refused (AccessDenied), a warning, exit 0', async () => {
  const emulators = require('../scripts/emulators.js');
  emulators.install({ log: () => undefined });
  const emu = await emulators.start('s3', { auth: true });
  try {
    const ws = workspace({ plugins: [{ plugin: 'nx-open-cache', options: emu.options }] });
    const reader = { ...emu.env, ...emu.readOnlyEnv };
    const r = doctor(ws, [], reader);
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /^ {2}ok {3}setup /m, r.out);
    assert.match(r.out, /^ {2}ok {3}read {7}a lookup was answered/m, r.out);
    assert.match(r.out, /^ {2}WARN write {6}[^]*?AccessDenied/m, r.out);
    assert.match(r.out, /fix: reads work, writes are refused: set localMode "read-only" .*; to store from here, use credentials allowed to write$/m, r.out);
    assert.match(r.out, /^the cache works from this machine, with 1 warning: reads work, writes are refused \(see the fix above\)$/m, r.out);
    const secret = String(emu.readOnlyEnv?.AWS_SECRET_ACCESS_KEY);
    assert.ok(!(r.out + r.err).includes(secret), 'the secret key is never shown');
    // The writer's credentials: no warning.
    const w = doctor(ws, [], emu.env);
    assert.equal(w.code, 0, w.out + w.err);
    assert.match(w.out, /^the cache works from this machine$/m, w.out);
  } finally {
    await emu.stop();
  }
});
