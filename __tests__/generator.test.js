'use strict';
// Tests for the `nx-open-cache:init` generator, run against nx's own Tree implementation
// (in memory, and once on a real directory through FsTree + flushChanges).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { createTree } = require('nx/src/devkit-testing-exports');
const { FsTree, flushChanges } = require('nx/src/generators/tree');
const { logger } = require('nx/src/devkit-exports');
const { getGeneratorInformation } = require('nx/src/command-line/generate/generator-utils');
const { spawnSync } = require('node:child_process');

const initGenerator = require('../generators/init/index.js');
const native = require('../index.js');

const REPO_ROOT = path.resolve(__dirname, '..');

/**
 * Runs the generator and returns what it printed through nx's logger.
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {Record<string, unknown>} options
 * @returns {Promise<string[]>}
 */
async function run(tree, options = {}) {
  /** @type {string[]} */
  const printed = [];
  const { info, warn } = logger;
  logger.info = (/** @type {string} */ s) => printed.push(String(s));
  logger.warn = (/** @type {string} */ s) => printed.push(`WARN ${s}`);
  try {
    await initGenerator(tree, options);
  } finally {
    logger.info = info;
    logger.warn = warn;
  }
  return printed;
}

/**
 * @param {unknown} nxJson
 * @param {Record<string, string>} [files]
 */
function treeWith(nxJson, files = {}) {
  const tree = createTree();
  if (nxJson !== undefined) tree.write('nx.json', typeof nxJson === 'string' ? nxJson : JSON.stringify(nxJson, null, 2) + '\n');
  for (const [p, c] of Object.entries(files)) tree.write(p, c);
  return tree;
}

/** @param {import('nx/src/generators/tree').Tree} tree */
function readNx(tree) {
  return JSON.parse(/** @type {string} */ (tree.read('nx.json', 'utf-8')));
}

test('generators.json resolves to this init generator through nx itself', () => {
  const info = getGeneratorInformation(path.join(REPO_ROOT, 'generators.json'), 'init', REPO_ROOT, {});
  assert.equal(info.normalizedGeneratorName, 'init');
  assert.equal(info.isNxGenerator, true);
  assert.equal(info.implementationFactory(), initGenerator);
  // `nx add` passes --keepExistingVersions when the schema declares it.
  assert.ok(info.schema.properties.keepExistingVersions);
  // `nx g` passes its own --skipProjectGraph on to the generator's options.
  assert.ok(info.schema.properties.skipProjectGraph);
  for (const key of ['backend', 'path', 'prefix', 'localMode', 'ciMode', 'trust']) {
    assert.ok(info.schema.properties[key], `schema declares ${key}`);
  }
});

test('fresh add writes the plugin entry with backend and default path only', async () => {
  const tree = treeWith({ targetDefaults: { build: { cache: true } } });
  const printed = await run(tree, { keepExistingVersions: true });
  const nx = readNx(tree);
  assert.deepEqual(nx.plugins, [
    { plugin: 'nx-open-cache', options: { backend: 'fs', path: '~/.cache/nx-open-cache' } },
  ]);
  assert.deepEqual(nx.targetDefaults, { build: { cache: true } });
  assert.deepEqual(printed, ['nx-open-cache: added plugin to nx.json (backend fs, path ~/.cache/nx-open-cache)']);
});

test('fresh add writes only the options given, in a stable order', async () => {
  const tree = treeWith({});
  await run(tree, { ciMode: 'read-only', prefix: 'team-a/', path: '/mnt/cache', localMode: 'no-cache' });
  const entry = readNx(tree).plugins[0];
  assert.deepEqual(entry, {
    plugin: 'nx-open-cache',
    options: { backend: 'fs', path: '/mnt/cache', prefix: 'team-a/', localMode: 'no-cache', ciMode: 'read-only' },
  });
  assert.deepEqual(Object.keys(entry.options), ['backend', 'path', 'prefix', 'localMode', 'ciMode']);
});

test('second run with the same flags leaves nx.json byte-identical and says so', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'noc-gen-'));
  try {
    fs.writeFileSync(path.join(dir, 'nx.json'), '{\n  "plugins": ["@nx/js/typescript"]\n}\n');
    const flags = { path: '/srv/nx-cache', localMode: 'read-only' };

    const first = new FsTree(dir, false);
    const printedFirst = await run(first, flags);
    flushChanges(dir, first.listChanges());
    const afterFirst = fs.readFileSync(path.join(dir, 'nx.json'));
    assert.match(printedFirst[0], /^nx-open-cache: added plugin to nx.json/);

    const second = new FsTree(dir, false);
    const printedSecond = await run(second, flags);
    assert.deepEqual(second.listChanges(), [], 'second run records no change');
    flushChanges(dir, second.listChanges());
    assert.ok(fs.readFileSync(path.join(dir, 'nx.json')).equals(afterFirst), 'nx.json byte-identical');
    assert.deepEqual(printedSecond, [
      'nx-open-cache: already configured, nothing changed (backend fs, path /srv/nx-cache, localMode read-only)',
    ]);

    // A bare re-run (as `nx add` does on an upgrade) keeps the user's settings.
    const third = new FsTree(dir, false);
    const printedThird = await run(third, { keepExistingVersions: true });
    assert.deepEqual(third.listChanges(), []);
    assert.match(printedThird[0], /already configured, nothing changed/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an existing object entry is updated in place, keeping other keys and options', async () => {
  const tree = treeWith({
    plugins: [
      '@nx/js/typescript',
      {
        plugin: 'nx-open-cache',
        include: ['packages/**'],
        options: { backend: 'fs', path: '/old/cache', prefix: 'p1/' },
      },
      { plugin: '@nx/eslint/plugin', options: { targetName: 'lint' } },
    ],
  });
  const printed = await run(tree, { path: '/new/cache', ciMode: 'read-only' });
  const nx = readNx(tree);
  assert.equal(nx.plugins.length, 3);
  assert.equal(nx.plugins[0], '@nx/js/typescript');
  assert.deepEqual(nx.plugins[1], {
    plugin: 'nx-open-cache',
    include: ['packages/**'],
    options: { backend: 'fs', path: '/new/cache', prefix: 'p1/', ciMode: 'read-only' },
  });
  assert.deepEqual(nx.plugins[2], { plugin: '@nx/eslint/plugin', options: { targetName: 'lint' } });
  assert.deepEqual(printed, ['nx-open-cache: updated options: path /old/cache -> /new/cache, ciMode (unset) -> read-only']);
});

test('an object entry without options gets backend and path', async () => {
  const tree = treeWith({ plugins: [{ plugin: 'nx-open-cache' }] });
  const printed = await run(tree, {});
  assert.deepEqual(readNx(tree).plugins, [
    { plugin: 'nx-open-cache', options: { backend: 'fs', path: '~/.cache/nx-open-cache' } },
  ]);
  assert.deepEqual(printed, [
    'nx-open-cache: updated options: backend (unset) -> fs, path (unset) -> ~/.cache/nx-open-cache',
  ]);
});

test('a string-form entry becomes an object entry at the same position, not a duplicate', async () => {
  const tree = treeWith({ plugins: ['@nx/js/typescript', 'nx-open-cache', '@nx/vite/plugin'] });
  const printed = await run(tree, { path: '/cache' });
  const nx = readNx(tree);
  assert.deepEqual(nx.plugins, [
    '@nx/js/typescript',
    { plugin: 'nx-open-cache', options: { backend: 'fs', path: '/cache' } },
    '@nx/vite/plugin',
  ]);
  assert.match(printed[0], /converted the "nx-open-cache" entry in nx\.json to object form \(backend fs, path \/cache\)/);
  // and it is stable from then on
  const before = tree.read('nx.json', 'utf-8');
  const again = await run(tree, { path: '/cache' });
  assert.equal(tree.read('nx.json', 'utf-8'), before);
  assert.match(again[0], /already configured/);
});

test('other plugins and the rest of nx.json are preserved exactly, in order', async () => {
  const others = [
    '@nx/js/typescript',
    { plugin: '@nx/jest/plugin', options: { targetName: 'test' }, exclude: ['e2e/**'] },
    { plugin: './tools/local-plugin.js' },
  ];
  const rest = { $schema: './node_modules/nx/schemas/nx-schema.json', namedInputs: { default: ['{projectRoot}/**/*'] } };
  const tree = treeWith({ ...rest, plugins: others });
  await run(tree, {});
  const nx = readNx(tree);
  assert.deepEqual(nx.plugins.slice(0, 3), others);
  assert.equal(nx.plugins.length, 4);
  assert.equal(nx.plugins[3].plugin, 'nx-open-cache');
  assert.equal(nx.$schema, rest.$schema);
  assert.deepEqual(nx.namedInputs, rest.namedInputs);
  assert.deepEqual(Object.keys(nx), ['$schema', 'namedInputs', 'plugins']);
});

test('a workspace without nx.json gets one', async () => {
  const tree = treeWith(undefined);
  await run(tree, { path: '/c' });
  assert.deepEqual(readNx(tree), { plugins: [{ plugin: 'nx-open-cache', options: { backend: 'fs', path: '/c' } }] });
});

test('an unknown backend is an error naming the flag, the value and the allowed values (the native table\'s)', async () => {
  const tree = treeWith({});
  const before = tree.read('nx.json', 'utf-8');
  const allowed = native.optionSchema().backends;
  assert.deepEqual(allowed, ['fs', 's3', 'gcs', 'azure', 'http']);
  await assert.rejects(run(tree, { backend: 'ftp' }), {
    message: `nx-open-cache: invalid value "ftp" for --backend; allowed values: ${allowed.join(', ')}`,
  });
  assert.equal(tree.read('nx.json', 'utf-8'), before, 'nothing written on error');
});

test('schema.json is generated from the native option schema: no drift, every flag option declared with its type', () => {
  const { expected, FILE } = require('../scripts/schema.js');
  assert.equal(fs.readFileSync(FILE, 'utf8'), expected(), 'generators/init/schema.json drifted: run `node scripts/schema.js --write`');
  const check = spawnSync(process.execPath, [path.join(REPO_ROOT, 'scripts', 'schema.js')], { encoding: 'utf8' });
  assert.equal(check.status, 0, check.stderr);
  const { properties } = JSON.parse(fs.readFileSync(FILE, 'utf8'));
  for (const option of native.optionSchema().options) {
    if (['writePrefix', 'readPrefixes', 'trustedKeys'].includes(option.name)) {
      assert.equal(properties[option.name], undefined, `${option.name} is set by a preset or by hand, not a flag`);
      continue;
    }
    assert.equal(properties[option.name]?.type, option.type, option.name);
    for (const choice of option.choices) assert.ok(properties[option.name].description.includes(choice), `${option.name}: ${choice}`);
  }
  // An option the native table gains is a flag at once: the drift test above fails until
  // schema.json is regenerated.
});

test('a flag that applies to other backends only is refused with the native table\'s backends', async () => {
  for (const option of native.optionSchema().options) {
    if (option.backends.includes('all') || option.backends.includes('fs') || option.type !== 'string') continue;
    await assert.rejects(run(treeWith({}), { [option.name]: 'x' }), {
      message: `nx-open-cache: nx.json already configures backend fs; --${option.name} applies to the ${option.backends.join(', ')} backend${option.backends.length > 1 ? 's' : ''} only (pass --backend ${option.backends[0]} to switch to it)`,
    });
  }
});

for (const flag of ['localMode', 'ciMode']) {
  test(`an unknown ${flag} is an error naming the flag, the value and the allowed values`, async () => {
    const tree = treeWith({});
    await assert.rejects(run(tree, { [flag]: 'readonly' }), {
      message: `nx-open-cache: invalid value "readonly" for --${flag}; allowed values: read-write, read-only, no-cache`,
    });
    assert.deepEqual(tree.listChanges().map((c) => c.path), ['.prettierrc', 'nx.json'], 'only the fixture files');
  });
}

test('the artifact check\'s bounds are written as given, on a new or an existing entry', async () => {
  const tree = treeWith({});
  await run(tree, { path: '/mnt/cache', maxArtifactEntries: 5000, maxExpandedSize: '8GiB', maxExpansionRatio: 50 });
  const { options } = readNx(tree).plugins[0];
  assert.deepEqual(options, {
    backend: 'fs', path: '/mnt/cache', maxArtifactEntries: 5000, maxExpandedSize: '8GiB', maxExpansionRatio: 50,
  });
  const existing = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 's3', bucket: 'b' } }] });
  const printed = await run(existing, { maxExpandedSize: 1048576 });
  assert.deepEqual(readNx(existing).plugins[0].options, { backend: 's3', bucket: 'b', maxExpandedSize: 1048576 });
  assert.deepEqual(printed, ['nx-open-cache: updated options: maxExpandedSize (unset) -> 1048576']);
});

test('a bound out of range or in the wrong form is refused with the addon\'s words, nothing written', async () => {
  for (const [flag, value, words] of [
    ['maxArtifactEntries', 0, 'invalid value 0 for option "maxArtifactEntries" (NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES): expected a whole number from 1 to 100000000'],
    ['maxExpansionRatio', 2.5, 'invalid value 2.5 for option "maxExpansionRatio"'],
    ['maxExpandedSize', '32', 'invalid value "32" for option "maxExpandedSize" (NX_OPEN_CACHE_MAX_EXPANDED_SIZE): expected a size such as 500MB or 2GiB'],
    ['maxExpandedSize', true, 'invalid value true for --maxExpandedSize; expected a number or a string'],
  ]) {
    const tree = treeWith({});
    const before = tree.read('nx.json', 'utf-8');
    await assert.rejects(
      run(tree, { [String(flag)]: value }),
      (/** @type {Error} */ e) => e.message.includes(String(words)),
      `${flag}=${JSON.stringify(value)}`,
    );
    assert.equal(tree.read('nx.json', 'utf-8'), before, 'nothing written on error');
  }
});

test('every allowed mode is accepted', async () => {
  for (const mode of native.optionSchema().modes) {
    const tree = treeWith({});
    await run(tree, { localMode: mode, ciMode: mode });
    const { options } = readNx(tree).plugins[0];
    assert.equal(options.localMode, mode);
    assert.equal(options.ciMode, mode);
  }
});

test('an empty --path is rejected', async () => {
  await assert.rejects(run(treeWith({}), { path: '  ' }), /invalid value "  " for --path; expected a non-empty string/);
});

test('--path on an entry that uses another backend asks for --backend fs', async () => {
  const tree = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 's3', bucket: 'b' } }] });
  await assert.rejects(run(tree, { path: 'x' }), /backend s3; --path applies to the fs backend only/);
  // a bare run leaves such an entry alone
  const printed = await run(tree, {});
  assert.match(printed[0], /already configured, nothing changed \(backend s3, bucket b\)/);
  assert.deepEqual(readNx(tree).plugins[0].options, { backend: 's3', bucket: 'b' });
});

test('.gitignore: a relative path inside the workspace is added once', async () => {
  const tree = treeWith({}, { '.gitignore': 'node_modules\ndist' });
  const printed = await run(tree, { path: './.cache//nx-open-cache/' });
  assert.equal(tree.read('.gitignore', 'utf-8'), 'node_modules\ndist\n/.cache/nx-open-cache\n');
  assert.deepEqual(printed, [
    'nx-open-cache: added plugin to nx.json (backend fs, path ./.cache//nx-open-cache/)',
    'nx-open-cache: added /.cache/nx-open-cache to .gitignore',
  ]);
  const again = await run(tree, { path: './.cache//nx-open-cache/' });
  assert.equal(tree.read('.gitignore', 'utf-8'), 'node_modules\ndist\n/.cache/nx-open-cache\n');
  assert.equal(again.length, 1);
});

test('.gitignore: an equivalent existing line is recognised', async () => {
  const tree = treeWith({}, { '.gitignore': 'node_modules/\n.cache/nx-open-cache/\n' });
  await run(tree, { path: '.cache/nx-open-cache' });
  assert.equal(tree.read('.gitignore', 'utf-8'), 'node_modules/\n.cache/nx-open-cache/\n');
});

test('.gitignore: absolute, home paths and a missing .gitignore are left alone; a relative path out of the workspace is refused', async () => {
  const outside = treeWith({}, { '.gitignore': 'dist\n' });
  await assert.rejects(run(outside, { path: '../shared-cache' }), /a relative path must stay inside the workspace; for a directory outside it use an absolute path/);
  assert.equal(outside.read('.gitignore', 'utf-8'), 'dist\n');
  for (const p of ['/var/cache/nx', '~/.cache/nx-open-cache', '.']) {
    const tree = treeWith({}, { '.gitignore': 'dist\n' });
    const printed = await run(tree, { path: p });
    assert.equal(tree.read('.gitignore', 'utf-8'), 'dist\n', `path ${p}`);
    assert.equal(printed.length, 1, `path ${p}`);
  }
  const tree = treeWith({});
  await run(tree, { path: 'local-cache' });
  assert.equal(tree.exists('.gitignore'), false, 'no .gitignore is created');
});

test('the real `nx g nx-open-cache:init` CLI in a scratch workspace: add, no-op re-run, bad flag', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'noc-gen-cli-'));
  try {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(path.dirname(require.resolve('nx/package.json')), path.join(dir, 'node_modules', 'nx'), 'dir');
    fs.symlinkSync(REPO_ROOT, path.join(dir, 'node_modules', 'nx-open-cache'), 'dir');
    fs.writeFileSync(path.join(dir, 'package.json'), '{"name":"scratch","private":true}\n');
    fs.writeFileSync(path.join(dir, 'nx.json'), '{}\n');
    fs.writeFileSync(path.join(dir, '.gitignore'), 'node_modules\n');
    spawnSync('git', ['init', '-q'], { cwd: dir });
    const nxBin = path.join(dir, 'node_modules', 'nx', require('nx/package.json').bin.nx);
    const env = {
      ...process.env,
      NX_DAEMON: 'false',
      NX_NO_CLOUD: 'true',
      NX_TUI: 'false',
      // keep Nx's cache and workspace data inside the scratch dir (nx 24 defaults to ~/.nx/<repo id>)
      NX_CACHE_DIRECTORY: path.join(dir, '.nx', 'cache'),
      NX_WORKSPACE_DATA_DIRECTORY: path.join(dir, '.nx', 'workspace-data'),
    };
    /** @param {string[]} args */
    const nx = (args) => {
      // --skipProjectGraph: the generator must not depend on the plugin itself being loadable.
      const r = spawnSync(process.execPath, [nxBin, 'g', 'nx-open-cache:init', '--skipProjectGraph', ...args], {
        cwd: dir,
        env,
        encoding: 'utf8',
      });
      return { code: r.status, out: `${r.stdout}${r.stderr}` };
    };

    const first = nx(['--path', 'shared-cache', '--local-mode', 'read-only']);
    assert.equal(first.code, 0, first.out);
    assert.match(first.out, /nx-open-cache: added plugin to nx\.json \(backend fs, path shared-cache, localMode read-only\)/);
    assert.match(first.out, /nx-open-cache: added \/shared-cache to \.gitignore/);
    const nxJson = fs.readFileSync(path.join(dir, 'nx.json'));
    assert.deepEqual(JSON.parse(nxJson.toString()).plugins, [
      { plugin: 'nx-open-cache', options: { backend: 'fs', path: 'shared-cache', localMode: 'read-only' } },
    ]);
    assert.equal(fs.readFileSync(path.join(dir, '.gitignore'), 'utf8'), 'node_modules\n/shared-cache\n');

    // what `nx add` runs on an already configured workspace
    const second = nx(['--keepExistingVersions']);
    assert.equal(second.code, 0, second.out);
    assert.match(second.out, /nx-open-cache: already configured, nothing changed/);
    assert.ok(fs.readFileSync(path.join(dir, 'nx.json')).equals(nxJson), 'nx.json byte-identical');

    const bad = nx(['--backend', 'ftp']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.out, /invalid value "ftp" for --backend; allowed values: fs\b/);
    assert.ok(fs.readFileSync(path.join(dir, 'nx.json')).equals(nxJson), 'nx.json untouched after an error');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/* ---- cloud backends and the deprecated top-level s3 / gcs / azure blocks ------------------------ */

const CLOUD_FLAGS = {
  s3: { backend: 's3', bucket: 'my-cache', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9000', forcePathStyle: true },
  gcs: { backend: 'gcs', bucket: 'my-cache' },
  azure: { backend: 'azure', container: 'my-cache', accountName: 'myaccount' },
};

for (const [backend, flags] of Object.entries(CLOUD_FLAGS)) {
  test(`--backend ${backend} with its options: written as given`, async () => {
    const tree = treeWith({});
    const printed = await run(tree, { ...flags, prefix: 'team-a' });
    assert.deepEqual(readNx(tree).plugins, [{ plugin: 'nx-open-cache', options: { ...flags, prefix: 'team-a' } }]);
    assert.match(printed[0], new RegExp(`added plugin to nx.json \\(backend ${backend}, `));
    const again = await run(tree, { ...flags, prefix: 'team-a' });
    assert.match(again[0], /already configured, nothing changed/);
  });
}

test('a cloud flag that does not apply to the backend is an error naming the flag and its backends', async () => {
  await assert.rejects(run(treeWith({}), { bucket: 'b' }), {
    message: 'nx-open-cache: nx.json already configures backend fs; --bucket applies to the s3, gcs backends only (pass --backend s3 to switch to it)',
  });
  await assert.rejects(run(treeWith({}), { backend: 'fs', container: 'c' }), {
    message: 'nx-open-cache: you chose backend fs; --container applies to the azure backend only (pass --backend azure to switch to it)',
  });
  await assert.rejects(run(treeWith({}), { backend: 'fs', forcePathStyle: true }), /--forcePathStyle applies to the s3 backend only/);
  await assert.rejects(run(treeWith({}), { bucket: '' }), /invalid value "" for --bucket; expected a non-empty string/);
});

test('switching an entry to fs drops the options of the old backend', async () => {
  const tree = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 's3', bucket: 'b', region: 'r', prefix: 'p' } }] });
  const printed = await run(tree, { backend: 'fs', path: '/shared/cache' });
  assert.deepEqual(readNx(tree).plugins[0].options, { backend: 'fs', prefix: 'p', path: '/shared/cache' });
  assert.match(printed[0], /updated options: backend s3 -> fs, bucket b -> \(unset\), region r -> \(unset\), path \(unset\) -> \/shared\/cache/);
});

const LEGACY_S3 = {
  bucket: 'legacy-bucket',
  region: 'eu-west-1',
  endpoint: 'http://127.0.0.1:9000',
  forcePathStyle: true,
  accessKeyId: 'AKIA-GENERATOR-TEST',
  secretAccessKey: 'generator-secret-value',
  cacheKeyPrefix: 'legacy-prefix',
  ciMode: 'read-only',
};

test('legacy s3 block, no flags: migrated into the plugin options (secrets never copied)', async () => {
  const tree = treeWith({ targetDefaults: {}, s3: LEGACY_S3 });
  const printed = await run(tree, {});
  const nx = readNx(tree);
  const text = JSON.stringify(nx);
  assert.equal(nx.s3, undefined, 'block removed');
  assert.deepEqual(nx.plugins, [{
    plugin: 'nx-open-cache',
    options: {
      backend: 's3', bucket: 'legacy-bucket', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: true, prefix: 'legacy-prefix', ciMode: 'read-only',
    },
  }]);
  assert.ok(!text.includes('generator-secret-value') && !text.includes('AKIA-GENERATOR-TEST'), `secret written: ${text}`);
  const all = printed.join('\n');
  assert.match(all, /migrated the top-level "s3" block of nx\.json into the plugin options \(s3\.bucket -> bucket, .*s3\.cacheKeyPrefix -> prefix/);
  assert.match(all, /s3\.accessKeyId and s3\.secretAccessKey were NOT copied .*AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
  assert.ok(!all.includes('generator-secret-value'), 'secret printed');
  const again = await run(tree, {});
  assert.match(again[0], /already configured, nothing changed/);
});

test('legacy block with --no-migrate: block kept, the entry names no backend so the plugin keeps reading it', async () => {
  const tree = treeWith({ gcs: { bucket: 'g', cacheKeyPrefix: 'p' } });
  const printed = await run(tree, { migrate: false, localMode: 'read-only' });
  const nx = readNx(tree);
  assert.deepEqual(nx.gcs, { bucket: 'g', cacheKeyPrefix: 'p' });
  assert.deepEqual(nx.plugins, [{ plugin: 'nx-open-cache', options: { localMode: 'read-only' } }]);
  assert.match(printed.join('\n'), /"gcs" block of nx\.json still configures the cache \(pass --migrate/);
});

test('legacy block and a conflicting --backend: not migrated (said so); --migrate with a conflict is an error', async () => {
  const tree = treeWith({ azure: { container: 'c', accountName: 'a' } });
  const printed = await run(tree, { backend: 'fs', path: '/shared' });
  const nx = readNx(tree);
  assert.deepEqual(nx.azure, { container: 'c', accountName: 'a' });
  assert.deepEqual(nx.plugins[0].options, { backend: 'fs', path: '/shared' });
  assert.match(printed.join('\n'), /"azure" block of nx\.json is not used by nx-open-cache \(--backend fs/);

  const other = treeWith({ azure: { container: 'c', accountName: 'a' } });
  const before = other.read('nx.json', 'utf-8');
  await assert.rejects(run(other, { migrate: true, backend: 'fs' }), /--migrate: the top-level "azure" block of nx\.json cannot be migrated: --backend fs/);
  assert.equal(other.read('nx.json', 'utf-8'), before, 'nothing written on error');
});

test('--trust=ci-split writes the untrusted-by-default namespaces and says how trusted builds opt in', async () => {
  const tree = treeWith({});
  const printed = await run(tree, { trust: 'ci-split' });
  const entry = readNx(tree).plugins[0];
  assert.deepEqual(entry.options, {
    backend: 'fs', path: '~/.cache/nx-open-cache', writePrefix: 'untrusted', readPrefixes: ['trusted', 'untrusted'],
  });
  assert.deepEqual(Object.keys(entry.options), ['backend', 'path', 'writePrefix', 'readPrefixes']);
  const note = printed.find((l) => l.includes('trust namespaces (ci-split)'));
  assert.ok(note, printed.join('\n'));
  assert.ok(note.includes('NX_OPEN_CACHE_WRITE_PREFIX=trusted NX_OPEN_CACHE_READ_PREFIXES=trusted'), note);
  assert.match(note, /can be bypassed by a malicious pull request/);
  // The addon accepts what was written, and resolves it as the plugin will, with and without the
  // trusted build's variables.
  const { resolveConfig } = require('../index.js');
  const untrusted = resolveConfig(os.tmpdir(), entry.options, { HOME: os.homedir() });
  assert.equal(untrusted.writePrefix, 'untrusted');
  assert.deepEqual(untrusted.readPrefixes, ['trusted', 'untrusted']);
  const trusted = resolveConfig(os.tmpdir(), entry.options, {
    HOME: os.homedir(), NX_OPEN_CACHE_WRITE_PREFIX: 'trusted', NX_OPEN_CACHE_READ_PREFIXES: 'trusted',
  });
  assert.equal(trusted.writePrefix, 'trusted');
  assert.deepEqual(trusted.readPrefixes, ['trusted']);
  // Idempotent.
  const again = await run(tree, { trust: 'ci-split' });
  assert.match(again[0], /already configured, nothing changed/);
});

test('--trust=ci-split on an existing s3 entry adds the namespaces and keeps the rest', async () => {
  const tree = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 's3', bucket: 'b', region: 'r', prefix: 'p' } }] });
  const printed = await run(tree, { trust: 'ci-split' });
  assert.deepEqual(readNx(tree).plugins[0].options, {
    backend: 's3', bucket: 'b', region: 'r', prefix: 'p', writePrefix: 'untrusted', readPrefixes: ['trusted', 'untrusted'],
  });
  assert.match(printed[0], /updated options: writePrefix \(unset\) -> untrusted, readPrefixes \(unset\) -> \["trusted","untrusted"\]/);
});

test('an unknown --trust is an error naming the value and the allowed values; http refuses --trust', async () => {
  const tree = treeWith({});
  const before = tree.read('nx.json', 'utf-8');
  await assert.rejects(run(tree, { trust: 'split' }), {
    message: 'nx-open-cache: invalid value "split" for --trust; allowed values: ci-split',
  });
  await assert.rejects(run(tree, { trust: true }), /invalid value true for --trust; allowed values: ci-split/);
  assert.equal(tree.read('nx.json', 'utf-8'), before, 'nothing written on error');
  const http = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 'http', url: 'https://cache.example.com' } }] });
  await assert.rejects(run(http, { trust: 'ci-split' }), /--trust does not apply to the http backend: the server's token namespaces do that/);
  await assert.rejects(run(treeWith({}), { backend: 'http', url: 'https://c.example.com', trust: 'ci-split' }), /token namespaces/);
});

test('switching a ci-split entry to http drops the namespaces (the server\'s tokens make the split)', async () => {
  const tree = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 'fs', path: '/c', writePrefix: 'untrusted', readPrefixes: ['trusted', 'untrusted'] } }] });
  await run(tree, { backend: 'http', url: 'https://cache.example.com' });
  assert.deepEqual(readNx(tree).plugins[0].options, { backend: 'http', url: 'https://cache.example.com' });
});

test('every option of the native table is a flag: timeouts written as given, checked by the addon; backends from the table', async () => {
  const tree = treeWith({});
  await run(tree, { timeout: '30s', connectTimeout: 2 });
  assert.deepEqual(readNx(tree).plugins[0].options, { backend: 'fs', path: '~/.cache/nx-open-cache', timeout: '30s', connectTimeout: 2 });
  const bad = treeWith({});
  const before = bad.read('nx.json', 'utf-8');
  await assert.rejects(run(bad, { timeout: 'soon' }), /invalid value "soon" for option "timeout"/);
  assert.equal(bad.read('nx.json', 'utf-8'), before, 'nothing written on error');
  // prefix applies to the stores, not to http (the server's tokens choose the namespace).
  await assert.rejects(run(treeWith({}), { backend: 'http', url: 'http://127.0.0.1:1', prefix: 'p' }), {
    message: 'nx-open-cache: you chose backend http; --prefix applies to the fs, s3, gcs, azure backends only (pass --backend fs to switch to it)',
  });
});
