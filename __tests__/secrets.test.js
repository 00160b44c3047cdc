'use strict';
/**
 * No output ever shows a secret. Distinctive secrets are planted everywhere a user can put them
 * (the signing and encryption keys, NX_OPEN_CACHE_TOKEN, cloud secret keys, a password in the
 * `http` URL or an S3 endpoint, a secret key pasted into nx.json's trustedKeys, the deprecated s3
 * block's secretAccessKey / encryptionKey), and every output of the CLI and the plugin is searched
 * for them: `nx-open-cache config`, `doctor`, `doctor --json`, resolveConfig's errors, and after
 * real Nx runs (nx 24, the plugin from `npm pack`, daemon off) the run's output with its summary
 * and last-run.json, with the fs backend, the http backend at a closed port and at `serve`.
 *
 * Run: node --test --test-concurrency=1 __tests__/secrets.test.js
 * Needs a native build (`node scripts/ensure-native.js`).
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { describe, test, before, after } = require('node:test');

const { createWorkspace, disposePack, isRemoteHit } = require('./helpers/nx-workspace.js');
const { startServe, serveEnv } = require('./helpers/serve-process.js');

/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

const native = require('../index.js');

const hex = () => crypto.randomBytes(12).toString('hex');
const signer = native.keygen();
/** A second key pair: its secret goes into trustedKeys by mistake. */
const misplaced = native.keygen();

/**
 * A secret key that cannot be a public key (15 in 16: no curve point, or one outside the
 * prime-order subgroup), or one that passes for a public key.
 * @param {boolean} validPoint
 */
function secretKey(validPoint) {
  for (let i = 0; i < 200; i += 1) {
    const k = native.keygen();
    let valid = true;
    try {
      native.resolveConfig('/tmp', { trustedKeys: [k.secretKey] }, { HOME: '/tmp' });
    } catch {
      valid = false;
    }
    if (valid === validPoint) return k;
  }
  throw new Error('no such key in 200 tries');
}
const notAPoint = secretKey(false);
const aPoint = secretKey(true);

/** Every planted secret, by name. */
const SECRETS = {
  signingKey: signer.secretKey,
  encryptionKey: native.encryptionKeygen().key,
  legacyEncryptionKey: native.encryptionKeygen().key,
  token: `planted-token-${hex()}`,
  wrongToken: `planted-wrong-token-${hex()}`,
  awsSecret: `planted/aws+secret${hex()}`,
  awsSession: `planted-aws-session-${hex()}`,
  legacyAwsSecret: `planted-legacy-aws-secret-${hex()}`,
  azureKey: crypto.randomBytes(64).toString('base64'),
  azureSas: `sv=2022-11-02&sig=planted${hex()}`,
  urlPassword: `planted-pw-${hex()}`,
  urlUser: `planted-user-token-${hex()}`,
  queryToken: `planted-query-${hex()}`,
  misplacedSecret: misplaced.secretKey,
  notAPointSecret: notAPoint.secretKey,
  aPointSecret: aPoint.secretKey,
};

/** What must never appear: each secret, and a distinctive piece of it (a truncated print). */
const NEEDLES = Object.entries(SECRETS).flatMap(([name, value]) => [
  [name, value],
  [`${name} (a piece)`, value.replace(/^planted[-/]/, '').slice(0, 16)],
]);

/**
 * @param {string} text
 * @param {string} where
 */
function assertNoSecret(text, where) {
  for (const [name, needle] of NEEDLES) {
    assert.ok(!text.includes(needle), `${where} shows ${name}:\n${text}`);
  }
}

/** The cloud variables of every test: planted secrets, metadata services on a closed port. */
let cloudEnv = /** @type {Record<string, string>} */ ({});

/** @type {NxWorkspace} */
let ws;
/** @type {number} */
let closedPort;

/** @returns {Promise<number>} a loopback port nothing listens on */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 9));
    });
  });
}

before(async () => {
  ws = await createWorkspace();
  closedPort = await freePort();
  const closed = `http://127.0.0.1:${closedPort}`;
  cloudEnv = {
    AWS_ACCESS_KEY_ID: 'AKIAPLANTEDKEYID',
    AWS_SECRET_ACCESS_KEY: SECRETS.awsSecret,
    AWS_SESSION_TOKEN: SECRETS.awsSession,
    AWS_METADATA_ENDPOINT: closed,
    AWS_EC2_METADATA_DISABLED: 'true',
    AZURE_STORAGE_ACCOUNT_NAME: 'plantedacct',
    AZURE_STORAGE_ACCOUNT_KEY: SECRETS.azureKey,
    AZURE_STORAGE_SAS_TOKEN: SECRETS.azureSas,
    GCE_METADATA_HOST: `127.0.0.1:${closedPort}`,
    GOOGLE_APPLICATION_CREDENTIALS: path.join(ws.base, 'no-such-credentials.json'),
  };
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * The CLI installed in the workspace (from `npm pack`), in the workspace, with a clean environment
 * plus `env`.
 * @param {string[]} args
 * @param {Record<string, string>} env
 */
function cli(args, env) {
  const bin = path.join(ws.root, 'node_modules', 'nx-open-cache', 'lib', 'cli.js');
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd: ws.root,
    env: { ...serveEnv(), CI: '', ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}`, json: r.stdout };
}

/**
 * `config`, `doctor` and `doctor --json` with nx.json's plugin `options` (or a whole nx.json),
 * searched for secrets; returns the outputs.
 * @param {string} what
 * @param {Record<string, string>} env
 */
function cliOutputs(what, env) {
  const config = cli(['config'], env);
  const doctor = cli(['doctor'], env);
  const json = cli(['doctor', '--json'], env);
  assertNoSecret(config.out, `${what}: nx-open-cache config`);
  assertNoSecret(doctor.out, `${what}: nx-open-cache doctor`);
  assertNoSecret(json.out, `${what}: nx-open-cache doctor --json`);
  return { config, doctor, json };
}

/**
 * An Nx run (daemon off: the summary is printed) with `env`; its output and last-run.json are
 * searched for secrets.
 * @param {string} what
 * @param {Record<string, string>} env
 */
async function nxRun(what, env) {
  ws.removeLastRun();
  const r = await ws.runBuild({ env: { NX_DAEMON: 'false', ...env } });
  assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
  assertNoSecret(r.output, `${what}: the Nx run's output`);
  const file = ws.lastRunFile();
  const lastRun = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  assertNoSecret(lastRun, `${what}: last-run.json`);
  return { r, summary: lastRun ? JSON.parse(lastRun) : null };
}

/**
 * resolveConfig's error (through the native API as the plugin calls it), searched for secrets.
 * @param {Record<string, unknown> | null} options
 * @param {Record<string, string>} env
 */
function configError(options, env) {
  try {
    native.resolveConfig(ws.root, options, { HOME: ws.base, ...env });
  } catch (e) {
    const message = /** @type {Error} */ (e).message;
    assertNoSecret(message, `resolveConfig(${JSON.stringify(Object.keys(options || {}))})`);
    return message;
  }
  return undefined;
}

/** Another machine: no local cache, no outputs. */
async function otherMachine() {
  await ws.nxReset();
  ws.cleanOutputs();
  ws.clearBuildLog();
}

describe('secrets never shown', () => {
  test('fs backend, signing and encryption keys, token and cloud keys in the environment', async () => {
    await ws.resetScenario();
    ws.setPluginOptions({ path: ws.newStorePath('sealed'), trustedKeys: [signer.publicKey] });
    const env = {
      ...cloudEnv,
      NX_OPEN_CACHE_SIGNING_KEY: SECRETS.signingKey,
      NX_OPEN_CACHE_ENCRYPTION_KEY: SECRETS.encryptionKey,
      NX_OPEN_CACHE_TOKEN: SECRETS.token,
      NX_OPEN_CACHE_DEBUG: '1',
    };
    const { config, doctor, json } = cliOutputs('fs, keys set', env);
    assert.equal(config.code, 0, config.out);
    assert.equal(doctor.code, 0, doctor.out);
    assert.match(doctor.out, new RegExp(`signs with key ${signer.keyId}`), doctor.out);
    assert.equal(JSON.parse(json.json).works, true, json.out);

    const main = await nxRun('fs, keys set', env);
    assert.equal(main.r.code, 0, show(main.r));
    assert.equal(main.summary?.stored, ws.projects.length, JSON.stringify(main.summary));

    // A machine with the encryption key restores; one without refuses every object.
    await otherMachine();
    const again = await nxRun('fs, encryption key only', { ...cloudEnv, NX_OPEN_CACHE_ENCRYPTION_KEY: SECRETS.encryptionKey });
    assert.equal(again.r.code, 0, show(again.r));
    for (const p of ws.projects) assert.ok(isRemoteHit(again.r.output, p.name), `${p.name} not restored${show(again.r)}`);
    await otherMachine();
    const keyless = await nxRun('fs, no key', cloudEnv);
    assert.equal(keyless.r.code, 0, show(keyless.r));
    assert.equal(keyless.summary?.refusedCount, ws.projects.length, JSON.stringify(keyless.summary));
  });

  test('secret keys in trustedKeys: errors by position and key id, never the key', async () => {
    await ws.resetScenario();
    // Provably a secret key (its public key is entry 1), or no public key at all, which may be a
    // typo as well: both are said then.
    const cases = [
      { options: { trustedKeys: [misplaced.publicKey, misplaced.secretKey] }, said: /^trustedKeys entry 2 is a secret key, not a public key \(value not shown\)/ },
      {
        options: { trustedKeys: [signer.publicKey, notAPoint.secretKey] },
        said: /^trustedKeys entry 2 is not a valid public key \(value not shown\): a mistyped or truncated public key, or a secret key pasted by mistake/,
      },
    ];
    for (const { options, said } of cases) {
      const message = configError(options, {});
      assert.ok(message && said.test(message.replace(/^nx-open-cache: /, '')), String(message));
      ws.setPluginOptions({ path: ws.newStorePath('trusted'), ...options });
      const { config, doctor, json } = cliOutputs('a secret key in trustedKeys', cloudEnv);
      assert.equal(config.code, 1, config.out);
      assert.equal(doctor.code, 2, doctor.out);
      assert.equal(json.code, 2, json.out);
      assert.match(doctor.out, /trustedKeys/);
      const run = await nxRun('a secret key in trustedKeys', cloudEnv);
      assert.match(run.r.output, /trustedKeys/, show(run.r));
    }
    // A secret key that passes for a public key (1 in 16), alone: nothing can tell it apart; it
    // is accepted as a public key, and still shown nowhere.
    ws.setPluginOptions({ path: ws.newStorePath('trusted'), trustedKeys: [aPoint.secretKey] });
    const { doctor } = cliOutputs('a secret key alone in trustedKeys', cloudEnv);
    assert.equal(doctor.code, 0, doctor.out);
    // The signing key set to a trusted public key.
    const message = configError({ trustedKeys: [signer.publicKey] }, { NX_OPEN_CACHE_SIGNING_KEY: signer.publicKey });
    assert.match(String(message), new RegExp(`the value is a public key \\(key id ${signer.keyId}, entry 1`));
  });

  test('a password, a user name or a query in the http URL or an S3 endpoint is never shown', async () => {
    await ws.resetScenario();
    const closed = `127.0.0.1:${closedPort}`;
    for (const options of [
      { backend: 'http', url: `http://ci:${SECRETS.urlPassword}@${closed}` },
      { backend: 'http', url: `https://${SECRETS.urlUser}@${closed}/base` },
      { backend: 'http', url: `http://${closed}/?token=${SECRETS.queryToken}` },
      { backend: 's3', bucket: 'b', endpoint: `http://key:${SECRETS.urlPassword}@${closed}` },
    ]) {
      const message = configError(options, {});
      assert.ok(message && message.includes('***'), String(message));
      ws.setPluginOptions(options);
      const { config, doctor } = cliOutputs(`url ${options.backend}`, { ...cloudEnv, NX_OPEN_CACHE_TOKEN: SECRETS.token });
      assert.equal(config.code, 1, config.out);
      assert.equal(doctor.code, 2, doctor.out);
    }
    ws.setPluginOptions({ backend: 'http', url: `http://ci:${SECRETS.urlPassword}@${closed}` });
    const run = await nxRun('a password in the http url', { ...cloudEnv, NX_OPEN_CACHE_TOKEN: SECRETS.token });
    assert.match(run.r.output, /credentials do not belong in the URL/, show(run.r));
  });

  test('http backend at a closed port: the build passes, the summary names the fault, not the token', async () => {
    await ws.resetScenario();
    ws.setPluginOptions({ backend: 'http', url: `http://127.0.0.1:${closedPort}`, timeout: 2, connectTimeout: 1 });
    const env = { ...cloudEnv, NX_OPEN_CACHE_TOKEN: SECRETS.token, NX_OPEN_CACHE_DEBUG: '1' };
    const { doctor } = cliOutputs('http, closed port', env);
    assert.equal(doctor.code, 1, doctor.out);
    const run = await nxRun('http, closed port', env);
    assert.equal(run.r.code, 0, show(run.r));
    assert.ok((run.summary?.errorCount ?? 0) > 0, JSON.stringify(run.summary));
  });

  test('http backend at serve: stored with the token, refused with a wrong one; neither shown', async () => {
    await ws.resetScenario();
    const storage = path.join(ws.base, 'serve-storage');
    const upstream = await startServe(['--storage', `fs:${storage}`], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${SECRETS.token}` }),
    });
    try {
      ws.setPluginOptions({ backend: 'http', url: upstream.url });
      const good = { ...cloudEnv, NX_OPEN_CACHE_TOKEN: SECRETS.token, NX_OPEN_CACHE_DEBUG: '1' };
      const { doctor } = cliOutputs('http at serve', good);
      assert.equal(doctor.code, 0, doctor.out);
      const stored = await nxRun('http at serve', good);
      assert.equal(stored.r.code, 0, show(stored.r));
      assert.equal(stored.summary?.stored, ws.projects.length, JSON.stringify(stored.summary));
      await otherMachine();
      const wrong = { ...cloudEnv, NX_OPEN_CACHE_TOKEN: SECRETS.wrongToken };
      const refused = cliOutputs('http at serve, wrong token', wrong);
      assert.equal(refused.doctor.code, 1, refused.doctor.out);
      const run = await nxRun('http at serve, wrong token', wrong);
      assert.equal(run.r.code, 0, show(run.r));
      assert.ok(JSON.stringify(run.summary?.errors).includes('NX_OPEN_CACHE_TOKEN'), JSON.stringify(run.summary));
    } finally {
      await upstream.stop();
    }
  });

  test('cloud backends and the deprecated s3 block: doctor shows neither the keys nor the secrets of nx.json', async () => {
    await ws.resetScenario();
    const closed = `http://127.0.0.1:${closedPort}`;
    const fast = { timeout: 2, connectTimeout: 1 };
    for (const options of [
      { backend: 's3', bucket: 'planted-bucket', endpoint: closed, forcePathStyle: true, ...fast },
      { backend: 'azure', container: 'c', accountName: 'plantedacct', endpoint: `${closed}/plantedacct`, ...fast },
    ]) {
      ws.setPluginOptions(options);
      const { doctor } = cliOutputs(`${options.backend} at a closed port`, cloudEnv);
      assert.equal(doctor.code, 1, doctor.out);
    }
    const nxJson = ws.readNxJson();
    nxJson.plugins = ['nx-open-cache'];
    nxJson.s3 = {
      bucket: 'planted-bucket',
      endpoint: closed,
      forcePathStyle: true,
      accessKeyId: 'AKIAPLANTEDLEGACY',
      secretAccessKey: SECRETS.legacyAwsSecret,
      encryptionKey: SECRETS.legacyEncryptionKey,
    };
    ws.writeNxJson(nxJson);
    const { doctor } = cliOutputs('the deprecated s3 block', { AWS_METADATA_ENDPOINT: closed, AWS_EC2_METADATA_DISABLED: 'true' });
    assert.match(doctor.out, /credentials from nx\.json: s3\.accessKeyId and s3\.secretAccessKey and s3\.encryptionKey are used for this check only/, doctor.out);
  });
});
