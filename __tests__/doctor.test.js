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
