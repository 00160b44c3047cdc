'use strict';
/**
 * A team's first hour, scripted: what a new user does (install, `nx g nx-open-cache:init`, build,
 * build again on a "fresh machine", look at the summary, run doctor) and five mistakes new teams
 * make, each checked by the lines the user sees. Real Nx (nx 24 from npm), nx-open-cache from
 * `npm pack`, `nx-open-cache serve` and moto_server (S3) on 127.0.0.1.
 *
 * Run: node --test --test-concurrency=1 __tests__/first-hour.e2e.test.js
 * Needs a native build (`node scripts/ensure-native.js`) and the emulators
 * (`node scripts/emulators.js install`, which this file also runs).
 */

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const emulators = require('../scripts/emulators.js');
const { createWorkspace, disposePack, isRemoteHit, runProcess, cleanEnv, summaryLines } = require('./helpers/nx-workspace.js');
const { startServe, serveEnv } = require('./helpers/serve-process.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** A closed loopback port: where cloud credential chains would look for instance metadata. */
const NO_METADATA = 'http://127.0.0.1:9';
/** Environment every run gets: nothing may reach a non-loopback address. */
const LOOPBACK_ONLY = {
  AWS_METADATA_ENDPOINT: NO_METADATA,
  AWS_EC2_METADATA_DISABLED: 'true',
  GCE_METADATA_HOST: '127.0.0.1:9',
  NX_DAEMON: 'false',
};

/** @type {NxWorkspace} */
let ws;

before(async () => {
  emulators.install({ log: () => undefined });
  ws = await createWorkspace();
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/**
 * @param {RunResult} r
 */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * The workspace's own `nx-open-cache` command (installed from the packed tarball).
 * @param {string[]} args
 * @param {Record<string, string | undefined>} [env]
 * @returns {Promise<RunResult>}
 */
function cli(args, env = {}) {
  const bin = path.join(ws.root, 'node_modules', 'nx-open-cache', 'lib', 'cli.js');
  return runProcess(process.execPath, [bin, ...args], { cwd: ws.root, env: cleanEnv({ ...LOOPBACK_ONLY, ...env }) });
}

/**
 * A build as a fresh machine sees it: Nx's local cache and workspace data wiped, outputs gone.
 * @param {Record<string, string | undefined>} [env]
 */
async function freshBuild(env = {}) {
  await ws.nxReset();
  ws.cleanOutputs();
  return ws.runBuild({ env: { ...LOOPBACK_ONLY, ...env } });
}

/** @returns {string[]} */
function projects() {
  return ws.projects.map((p) => p.name);
}

describe('the happy path', () => {
  test('init with a shared path, build, rebuild on a fresh machine from the remote cache, summary, doctor', async () => {
    await ws.resetScenario();
    const shared = ws.newStorePath('shared');
    const init = await ws.nx(['g', 'nx-open-cache:init', `--path=${shared}`], { env: LOOPBACK_ONLY });
    assert.equal(init.code, 0, show(init));
    assert.match(init.output, /nx-open-cache: added plugin to nx\.json \(backend fs, path /, show(init));

    const first = await freshBuild();
    assert.equal(first.code, 0, show(first));
    const [line1] = summaryLines(first.output);
    assert.match(line1 ?? '', /^nx-open-cache: 0 hits, 4 misses, 4 stored, .* 0 errors/, show(first));

    const second = await freshBuild();
    assert.equal(second.code, 0, show(second));
    for (const p of projects()) assert.ok(isRemoteHit(second.output, p), `${p} from the remote cache${show(second)}`);
    const [line2] = summaryLines(second.output);
    assert.match(line2 ?? '', /^nx-open-cache: 4 hits, 0 misses, 0 stored, .* 0 errors/, show(second));

    const summary = await cli(['summary']);
    assert.equal(summary.code, 0, show(summary));
    assert.equal(summary.stdout.split('\n')[0], line2, `summary shows the last run's line${show(summary)}`);
    assert.match(summary.stdout, /^ {2}\(nx run-many -t build --output-style=static, ended (just now|1 min ago) at \d{4}-\d\d-\d\dT/m, show(summary));

    // a run without the remote cache has a summary of its own: `summary` never shows an older run
    const noCache = await freshBuild({ NX_OPEN_CACHE_MODE: 'no-cache' });
    assert.equal(noCache.code, 0, show(noCache));
    const after = await cli(['summary']);
    assert.match(after.stdout, /^nx-open-cache: remote cache not used \(fs .*, no-cache from NX_OPEN_CACHE_MODE\)$/m, show(after));

    const doctor = await cli(['doctor']);
    assert.equal(doctor.code, 0, show(doctor));
  });
});

describe('five common mistakes', () => {
  test('a misspelled bucket: the summary names the cause once, with a request count', async () => {
    const emu = await emulators.start('s3');
    try {
      await ws.resetScenario();
      const bucket = `${emu.options.bucket}-typo`;
      ws.setPluginOptions({ ...emu.options, bucket });
      const r = await freshBuild(emu.env);
      assert.equal(r.code, 0, `a cache fault never fails the build${show(r)}`);
      assert.deepEqual(summaryLines(r.output).slice(0, 1).map((l) => l.replace(/ \(s3 .*$/, '')), [
        'nx-open-cache: 0 hits, 4 misses, 0 stored, 0 B down, 0 B up, 1 error (8 requests)',
      ], show(r));
      const detail = r.output.split('\n').filter((l) => l.startsWith('  ! ') || l.startsWith('  (cache faults'));
      assert.deepEqual(detail, [
        `  ! S3 bucket ${bucket} does not exist: 8 requests, store skipped for this run`,
        '  (cache faults never fail the build: affected tasks ran or were not stored)',
      ], show(r));
      assert.ok(!/<\?xml|<Code>|\b[0-9a-f]{20}\b/.test(r.output.slice(r.output.indexOf('nx-open-cache: 0 hits'))), `no raw XML, no hash${show(r)}`);

      const table = await freshBuild({ ...emu.env, NX_OPEN_CACHE_SUMMARY: 'table' });
      assert.equal(table.code, 0, show(table));
      assert.match(table.output, /^ {2}errors +1 \(8 requests\)$/m, show(table));
      assert.ok(table.output.includes(`       8x  S3 bucket ${bucket} does not exist (store skipped for this run)`), show(table));
    } finally {
      await emu.stop();
    }
  });

  test('a missing NX_OPEN_CACHE_TOKEN: the summary says the server wants a token', async () => {
    const store = ws.newStorePath('served');
    const s = await startServe(['--storage', `fs:${store}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: 'ci:read-write:rw-secret-0123456789' }) });
    try {
      await ws.resetScenario();
      ws.setPluginOptions({ backend: 'http', url: s.url });
      const r = await freshBuild();
      assert.equal(r.code, 0, `a cache fault never fails the build${show(r)}`);
      const lines = r.output.split('\n').filter((l) => l.startsWith('nx-open-cache:') || l.startsWith('  ! '));
      assert.deepEqual(lines, [
        `nx-open-cache: 0 hits, 4 misses, 0 stored, 0 B down, 0 B up, 1 error (8 requests) (http ${s.url}, read-write)`,
        `  ! server ${s.url} requires a token (401 Unauthorized): NX_OPEN_CACHE_TOKEN is not set: 8 requests, store skipped for this run`,
      ], show(r));
    } finally {
      await s.stop();
    }
  });

  test('a read-only developer token: builds hit, doctor passes with a note on read-only mode', async (t) => {
    const store = ws.newStorePath('served-ro');
    const tokens = 'ci:read-write:rw-secret-0123456789,dev:read-only:ro-secret-0123456789';
    const s = await startServe(['--storage', `fs:${store}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: tokens }) });
    try {
      await ws.resetScenario();
      ws.setPluginOptions({ backend: 'http', url: s.url });
      const ci = await freshBuild({ NX_OPEN_CACHE_TOKEN: 'rw-secret-0123456789' });
      assert.equal(ci.code, 0, show(ci));
      const dev = await freshBuild({ NX_OPEN_CACHE_TOKEN: 'ro-secret-0123456789' });
      assert.equal(dev.code, 0, show(dev));
      for (const p of projects()) assert.ok(isRemoteHit(dev.output, p), `${p} from the remote cache${show(dev)}`);
      const doctor = await cli(['doctor'], { NX_OPEN_CACHE_TOKEN: 'ro-secret-0123456789' });
      t.diagnostic(`doctor exit ${doctor.code}\n${doctor.output}`);
      assert.equal(doctor.code, 0, `a read-only token is a warning, not a failure${show(doctor)}`);
      assert.match(doctor.output, /^ {2}ok {3}read {7}a lookup was answered/m, show(doctor));
      assert.match(doctor.output, /^ {2}WARN write {6}.*403 Forbidden/m, show(doctor));
      assert.match(doctor.output, /^ {18}fix: reads work, writes are refused: set localMode "read-only" in the nx-open-cache plugin options \(or NX_OPEN_CACHE_MODE=read-only\)/m, show(doctor));
      assert.match(doctor.output, /^the cache works from this machine, with 1 warning: reads work, writes are refused/m, show(doctor));
      assert.ok(!doctor.output.includes('ro-secret'), 'the token is never shown');

      // following the fix: read-only mode, doctor skips the write and passes without a warning
      const readOnly = await cli(['doctor'], { NX_OPEN_CACHE_TOKEN: 'ro-secret-0123456789', NX_OPEN_CACHE_MODE: 'read-only' });
      assert.equal(readOnly.code, 0, show(readOnly));
      assert.match(readOnly.output, /mode is read-only: nothing is written/, show(readOnly));
      assert.match(readOnly.output, /^the cache works from this machine$/m, show(readOnly));
    } finally {
      await s.stop();
    }
  });

  test('the secret key pasted into trustedKeys: refused at once, naming the entry (and, when provable, the public key to list), never the value', async (t) => {
    const { publicKeyId } = require('../index.js');
    // 15 in 16 secret keys can be told from a public key (the rest look exactly like one: covered
    // by the warning for a signing key whose public key is not trusted, src/seal/keys.rs tests)
    /** @type {{ publicKey: string, secretKey: string, keyId: string } | undefined} */
    let pair;
    for (let i = 0; i < 64 && !pair; i++) {
      const keys = await cli(['keygen', '--json']);
      assert.equal(keys.code, 0, show(keys));
      const k = JSON.parse(keys.stdout);
      try {
        publicKeyId(k.secretKey);
      } catch {
        pair = k;
      }
    }
    assert.ok(pair, 'keygen gave 64 secret keys that look like public keys');
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('signed'), trustedKeys: [pair.secretKey] });
    // Alone, the value may be a mistyped public key as well: the message hedges and shows no key.
    // Beside the same value in NX_OPEN_CACHE_SIGNING_KEY it is provably the secret key: the
    // message says so and names the public key to list.
    const hedged = `trustedKeys entry 1 is not a valid public key (value not shown): a mistyped or truncated public key, or a secret key pasted by mistake (a secret key's public key would have key id ${pair.keyId}: if so, list the public key \`nx-open-cache keygen\` printed beside it`;
    const firm = `trustedKeys entry 1 is a secret key, not a public key (value not shown): it is the value of NX_OPEN_CACHE_SIGNING_KEY, whose public key is ${pair.publicKey} (key id ${pair.keyId}): list that in "trustedKeys" instead`;
    for (const [env, expected] of /** @type {[Record<string, string>, string][]} */ ([[{}, hedged], [{ NX_OPEN_CACHE_SIGNING_KEY: pair.secretKey }, firm]])) {
      const r = await freshBuild(env);
      t.diagnostic(r.output.split('\n').filter((l) => l.includes('nx-open-cache')).join('\n'));
      assert.notEqual(r.code, 0, `a wrong option stops the run before any task${show(r)}`);
      assert.ok(r.output.includes(expected), show(r));
      assert.ok(!r.output.includes(pair.secretKey), 'the secret key is never shown');
      if (expected === hedged) assert.ok(!r.output.includes(pair.publicKey), 'no key is offered to list on a guess');
      assert.deepEqual(ws.builtProjects(), [], 'no task ran');
      const config = await cli(['config'], env);
      assert.notEqual(config.code, 0, show(config));
      assert.ok(config.output.includes(expected), show(config));
      assert.ok(!config.output.includes(pair.secretKey), 'the secret key is never shown');
    }

    // following the fix: the public key listed, the secret key on the signing machine only
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('signed-right'), trustedKeys: [pair.publicKey] });
    const config = await cli(['config'], { NX_OPEN_CACHE_SIGNING_KEY: pair.secretKey });
    assert.equal(config.code, 0, show(config));
    const shown = JSON.parse(config.stdout);
    assert.equal(shown.signingKeyId, pair.keyId);
    assert.deepEqual(shown.trustedKeyIds, [pair.keyId]);
    assert.deepEqual(shown.warnings, []);
    const signed = await freshBuild({ NX_OPEN_CACHE_SIGNING_KEY: pair.secretKey });
    assert.equal(signed.code, 0, show(signed));
    const [line] = summaryLines(signed.output);
    assert.ok((line ?? '').includes(`signs with key ${pair.keyId}, trusts ${pair.keyId}`), show(signed));
  });

  test('a signing key whose public key is not trusted: a warning in the run, in config and in doctor', async () => {
    const other = JSON.parse((await cli(['keygen', '--json'])).stdout);
    const mine = JSON.parse((await cli(['keygen', '--json'])).stdout);
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('untrusted'), trustedKeys: [other.publicKey] });
    const env = { NX_OPEN_CACHE_SIGNING_KEY: mine.secretKey };
    const warning = `nx-open-cache: warning: NX_OPEN_CACHE_SIGNING_KEY signs with key ${mine.keyId}, but "trustedKeys" lists ${other.keyId}: other machines will refuse what this one signs`;
    const r = await freshBuild(env);
    assert.equal(r.code, 0, show(r));
    assert.equal(r.output.split(warning).length - 1, 1, `the warning once per run${show(r)}`);
    const config = await cli(['config'], env);
    assert.equal(config.code, 0, show(config));
    assert.equal(JSON.parse(config.stdout).warnings.length, 1, show(config));
    const doctor = await cli(['doctor'], env);
    assert.equal(doctor.code, 0, show(doctor));
    assert.match(doctor.output, new RegExp(`WARN .*signs with key ${mine.keyId}, but "trustedKeys" lists ${other.keyId}`), show(doctor));
    for (const out of [r.output, config.output, doctor.output]) assert.ok(!out.includes(mine.secretKey), 'the secret key is never shown');
  });

  test('a misspelled variable (NX_OPEN_CACHE_TOKN): a warning with the right name', async (t) => {
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('typo') });
    const r = await freshBuild({ NX_OPEN_CACHE_TOKN: 'x' });
    assert.equal(r.code, 0, show(r));
    const warning = 'nx-open-cache: warning: unknown environment variable NX_OPEN_CACHE_TOKN (ignored): did you mean NX_OPEN_CACHE_TOKEN?';
    assert.equal(r.output.split('\n').filter((l) => l === warning).length, 1, show(r));
    assert.ok(!r.output.includes('did you mean NX_OPEN_CACHE_TOKEN?', r.output.indexOf(warning) + warning.length), `once per run${show(r)}`);
    // kept with the run's summary (with the daemon on, the line printed at the start goes to its log)
    const summary = await cli(['summary']);
    assert.ok(summary.stdout.includes('  warning: unknown environment variable NX_OPEN_CACHE_TOKN (ignored): did you mean NX_OPEN_CACHE_TOKEN?'), show(summary));
  });

  test('a misspelled option in nx.json: the run stops before any task, naming the option the user meant', async () => {
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('typo-option'), requireSignatures: true });
    const r = await freshBuild();
    assert.notEqual(r.code, 0, show(r));
    assert.match(r.output, /unknown option "requireSignatures" in the nx-open-cache plugin options \(did you mean "requireSignature"\?\)/, show(r));
    assert.deepEqual(ws.builtProjects(), [], 'no task ran');
  });
});
