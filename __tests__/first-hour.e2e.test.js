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
    assert.match(summary.output, /4 hits/, show(summary));

    const doctor = await cli(['doctor']);
    assert.equal(doctor.code, 0, show(doctor));
  });
});

describe('five common mistakes', () => {
  test('a misspelled bucket: the summary names the cause once, with a request count', async (t) => {
    const emu = await emulators.start('s3');
    try {
      await ws.resetScenario();
      ws.setPluginOptions({ ...emu.options, bucket: `${emu.options.bucket}-typo` });
      const r = await freshBuild(emu.env);
      assert.equal(r.code, 0, show(r));
      t.diagnostic(summaryLines(r.output).join('\n'));
      const table = await freshBuild({ ...emu.env, NX_OPEN_CACHE_SUMMARY: 'table' });
      t.diagnostic(table.output.split('\n').filter((l) => /nx-open-cache|^\s{2}/.test(l)).join('\n'));
    } finally {
      await emu.stop();
    }
  });

  test('a missing NX_OPEN_CACHE_TOKEN: the summary says the server wants a token', async (t) => {
    const store = ws.newStorePath('served');
    const s = await startServe(['--storage', `fs:${store}`], { env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: 'ci:read-write:rw-secret-0123456789' }) });
    try {
      await ws.resetScenario();
      ws.setPluginOptions({ backend: 'http', url: s.url });
      const r = await freshBuild();
      assert.equal(r.code, 0, show(r));
      t.diagnostic(summaryLines(r.output).join('\n'));
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
    } finally {
      await s.stop();
    }
  });

  test('the secret key pasted into trustedKeys: refused at once, naming the entry, never the value', async (t) => {
    const keys = await cli(['keygen', '--json']);
    assert.equal(keys.code, 0, show(keys));
    t.diagnostic(keys.stdout);
    const { publicKey, secretKey } = JSON.parse(keys.stdout);
    await ws.resetScenario();
    const shared = ws.newStorePath('signed');
    ws.setPluginOptions({ backend: 'fs', path: shared, trustedKeys: [secretKey] });
    const r = await freshBuild({ NX_OPEN_CACHE_SIGNING_KEY: secretKey });
    t.diagnostic(`${r.code}\n${r.output.split('\n').filter((l) => l.includes('nx-open-cache')).join('\n')}`);
    assert.ok(!r.output.includes(secretKey), 'the secret key is never shown');
    const config = await cli(['config'], { NX_OPEN_CACHE_SIGNING_KEY: secretKey });
    t.diagnostic(`${config.code}\n${config.output}`);
    assert.ok(!config.output.includes(secretKey), 'the secret key is never shown');
    assert.ok(publicKey);
  });

  test('a misspelled variable (NX_OPEN_CACHE_TOKN): a warning with the right name', async (t) => {
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'fs', path: ws.newStorePath('typo') });
    const r = await freshBuild({ NX_OPEN_CACHE_TOKN: 'x' });
    assert.equal(r.code, 0, show(r));
    t.diagnostic(r.output.split('\n').filter((l) => l.includes('nx-open-cache')).join('\n'));
  });
});
