'use strict';
// The deprecated plugins' top-level s3 / gcs / azure blocks: the mapping, and how the plugin uses it.
// The full run against a real S3 emulator is in cloud.e2e.test.js.

const { test } = require('node:test');
const { hookSandbox } = require('./helpers/hook-sandbox.js');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { legacyBlock, withLegacy } = require('../lib/legacy.js');
const plugin = require('../lib/plugin.js');

const S3_BLOCK = {
  bucket: 'my-cache',
  region: 'eu-west-1',
  // A closed local port: nothing here may reach beyond this machine.
  endpoint: 'http://127.0.0.1:9',
  forcePathStyle: true,
  accessKeyId: 'AKIA-LEGACY-TEST',
  secretAccessKey: 'legacy-secret-value',
  cacheKeyPrefix: 'team-a/',
  localMode: 'read-only',
  ciMode: 'read-write',
};

test('s3 block: every non-secret key maps to an option, cacheKeyPrefix -> prefix, secrets go to env only', () => {
  const m = legacyBlock({ plugins: [], s3: S3_BLOCK });
  assert.ok(m);
  assert.equal(m.kind, 's3');
  assert.deepEqual(m.options, {
    backend: 's3',
    bucket: 'my-cache',
    region: 'eu-west-1',
    // A closed local port: nothing here may reach beyond this machine.
  endpoint: 'http://127.0.0.1:9',
    forcePathStyle: true,
    prefix: 'team-a/',
    localMode: 'read-only',
    ciMode: 'read-write',
  });
  assert.deepEqual(m.secretEnv, { AWS_ACCESS_KEY_ID: 'AKIA-LEGACY-TEST', AWS_SECRET_ACCESS_KEY: 'legacy-secret-value' });
  assert.deepEqual(m.secrets, ['accessKeyId', 'secretAccessKey']);
  assert.ok(!JSON.stringify(m.options).includes('legacy-secret-value'));
  assert.ok(!m.moved.join(' ').includes('legacy-secret-value'));
  assert.deepEqual(m.ignored, []);
  assert.deepEqual(m.others, []);
});

test('gcs and azure blocks map to their own options; unknown keys are reported, not copied', () => {
  const g = legacyBlock({ gcs: { bucket: 'gb', cacheKeyPrefix: 'p', region: 'x' } });
  assert.deepEqual(g?.options, { backend: 'gcs', bucket: 'gb', prefix: 'p' });
  assert.deepEqual(g?.ignored, ['gcs.region']);
  const a = legacyBlock({ azure: { container: 'c', accountName: 'acct', ciMode: 'read-only', accessKeyId: 'k' } });
  assert.deepEqual(a?.options, { backend: 'azure', container: 'c', accountName: 'acct', ciMode: 'read-only' });
  assert.deepEqual(a?.secretEnv, {}, 'AWS keys are only S3 credentials');
  assert.deepEqual(a?.ignored, ['azure.accessKeyId']);
});

test('no block, or a non-object block: nothing; several blocks: the first of s3, gcs, azure, others reported', () => {
  assert.equal(legacyBlock({}), null);
  assert.equal(legacyBlock(null), null);
  assert.equal(legacyBlock({ s3: 'bucket' }), null);
  assert.equal(legacyBlock({ s3: ['b'] }), null);
  const m = legacyBlock({ azure: { container: 'c' }, gcs: { bucket: 'g' } });
  assert.equal(m?.kind, 'gcs');
  assert.deepEqual(m?.others, ['azure']);
});

test('withLegacy: a plugin entry that names a backend wins; other options override the block', () => {
  const nxJson = { s3: S3_BLOCK };
  const own = { backend: 'fs', path: 'store' };
  assert.deepEqual(withLegacy(own, nxJson), { options: own, legacy: null });
  const merged = withLegacy({ prefix: 'mine', localMode: 'read-write' }, nxJson);
  assert.equal(merged.legacy?.kind, 's3');
  assert.equal(merged.options?.backend, 's3');
  assert.equal(merged.options?.prefix, 'mine');
  assert.equal(merged.options?.localMode, 'read-write');
  assert.equal(merged.options?.bucket, 'my-cache');
  assert.deepEqual(withLegacy(undefined, {}), { options: undefined, legacy: null });
});

/* ---- the plugin ------------------------------------------------------------------------------- */

const VARS = [
  'NX_SELF_HOSTED_REMOTE_CACHE_SERVER',
  'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN',
  'NX_OPEN_CACHE_PROXY_URL',
  'NX_OPEN_CACHE_MODE',
  'NX_SKIP_REMOTE_CACHE',
  'NX_DISABLE_REMOTE_CACHE',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_METADATA_ENDPOINT',
  'GOOGLE_SERVICE_ACCOUNT',
  'GOOGLE_APPLICATION_CREDENTIALS',
  'CI',
];

const sb = hookSandbox({ prefix: 'nxoc-legacy-', vars: VARS });

test('plugin: no backend in the entry + a legacy s3 block -> the s3 backend is configured from it', async () => {
  const nxJson = { plugins: [{ plugin: 'nx-open-cache' }], s3: S3_BLOCK };
  fs.writeFileSync(path.join(sb.root, 'nx.json'), JSON.stringify(nxJson));
  const context = { id: 'legacy-1', workspaceRoot: sb.root, argv: ['nx', 'run-many', '-t', 'build'], nxJsonConfiguration: nxJson };
  process.env.AWS_METADATA_ENDPOINT = 'http://127.0.0.1:9';
  // The proxy starts (no request is made before a task asks for an artifact).
  await plugin.preTasksExecution(undefined, context);
  assert.match(String(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER), /^http:\/\/127\.0\.0\.1:\d+$/);
  await plugin.postTasksExecution(undefined, context);
  const out = sb.printed.join('\n');
  assert.match(out, /deprecated top-level "s3" block/);
  assert.match(out, /s3\.cacheKeyPrefix -> prefix/);
  assert.match(out, /s3\.accessKeyId and s3\.secretAccessKey are used for this run's proxy only/);
  assert.ok(!out.includes('legacy-secret-value'), 'the secret was sb.printed');
  assert.equal(process.env.AWS_ACCESS_KEY_ID, undefined, 'the secret leaked into process.env');
  assert.equal(process.env.AWS_SECRET_ACCESS_KEY, undefined, 'the secret leaked into process.env');
});

test('plugin: nx.json read from the workspace when the context does not carry it', async () => {
  // Credentials that send the GCS client to a closed local port (no metadata server lookup).
  const key = path.join(sb.root, 'sa.json');
  fs.writeFileSync(key, JSON.stringify({ gcs_base_url: 'http://127.0.0.1:9', disable_oauth: true, client_email: 'x', private_key: '', private_key_id: '' }));
  process.env.GOOGLE_SERVICE_ACCOUNT = key;
  const nxJson = { plugins: [{ plugin: 'nx-open-cache' }], gcs: { bucket: 'gb' } };
  fs.writeFileSync(path.join(sb.root, 'nx.json'), JSON.stringify(nxJson));
  const context = { id: 'legacy-2', workspaceRoot: sb.root, argv: ['nx', 'run-many', '-t', 'build'] };
  await plugin.preTasksExecution(undefined, context);
  await plugin.postTasksExecution(undefined, context);
  assert.match(sb.printed.join('\n'), /deprecated top-level "gcs" block/);
});

test('plugin: an entry naming a backend ignores the legacy block', async () => {
  const nxJson = { plugins: [{ plugin: 'nx-open-cache', options: { backend: 'fs', path: 'store' } }], s3: S3_BLOCK };
  fs.writeFileSync(path.join(sb.root, 'nx.json'), JSON.stringify(nxJson));
  const context = { id: 'legacy-3', workspaceRoot: sb.root, argv: ['nx', 'run-many', '-t', 'build'], nxJsonConfiguration: nxJson };
  await plugin.preTasksExecution({ backend: 'fs', path: 'store' }, context);
  assert.match(String(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER), /^http:\/\/127\.0\.0\.1:\d+$/);
  await plugin.postTasksExecution(undefined, context);
  assert.ok(!sb.printed.join('\n').includes('deprecated'), sb.printed.join('\n'));
});

test('plugin: nx.json lists the plugin twice: the first entry serves the run, the other entry\'s hooks do nothing', async () => {
  const first = { path: 'first' };
  const second = { path: 'second' };
  const nxJson = { plugins: [{ plugin: 'nx-open-cache', options: first }, { plugin: 'nx-open-cache', options: second }] };
  fs.writeFileSync(path.join(sb.root, 'nx.json'), JSON.stringify(nxJson));
  const context = { id: 'twice-1', workspaceRoot: sb.root, argv: ['nx', 'run-many', '-t', 'build'], nxJsonConfiguration: nxJson };
  // Nx runs the hooks of each entry; the second entry's first.
  await plugin.preTasksExecution(second, context);
  assert.equal(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER, undefined, 'the second entry started a proxy');
  await plugin.preTasksExecution(first, context);
  assert.match(String(process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER), /^http:\/\/127\.0\.0\.1:\d+$/);
  await plugin.postTasksExecution(second, context);
  assert.ok(!sb.printed.some((l) => /\d+ hits?, /.test(l)), 'the second entry ended the run');
  await plugin.postTasksExecution(first, context);
  const out = sb.printed.join('\n');
  assert.match(out, /nx-open-cache: 0 hits, 0 misses, 0 stored.*first/, out);
  assert.equal(out.match(/lists nx-open-cache 2 times: the first entry is used/g)?.length, 1, out);
});
