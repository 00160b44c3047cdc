'use strict';
// Tests for the `nx-open-cache:init` generator, run against nx's own Tree implementation
// (in memory, and once on a real directory through FsTree + flushChanges).
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { stripVTControlCharacters } = require('node:util');

const { createTree } = require('nx/src/devkit-testing-exports');
const { FsTree, flushChanges } = require('nx/src/generators/tree');
const { logger } = require('nx/src/devkit-exports');
const { getGeneratorInformation } = require('nx/src/command-line/generate/generator-utils');
const { spawnSync } = require('node:child_process');

const initGenerator = require('../generators/init/index.js');
const native = require('../index.js');

const REPO_ROOT = path.resolve(__dirname, '..');

/**
 * The generator's warning for a fs path on this machine only.
 * @param {string} p  the path as written
 * @param {string} why
 */
const HOME_WARNING = (p, why) =>
  `nx-open-cache: path ${p} is ${why}: only this machine uses it, other machines and CI never see its artifacts. ` +
  'For a team cache pass --path=<a shared mount every machine sees at the same path> (e.g. --path=/mnt/nx-cache on NFS or SMB), ' +
  'or use another backend (--backend s3 --bucket <bucket>, gcs, azure, or http for `nx-open-cache serve`)';

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
  assert.deepEqual(printed, [
    'nx-open-cache: added plugin to nx.json (backend fs, path ~/.cache/nx-open-cache)',
    `WARN ${HOME_WARNING('~/.cache/nx-open-cache', 'under your home directory')}`,
  ]);
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
    `WARN ${HOME_WARNING('~/.cache/nx-open-cache', 'under your home directory')}`,
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
    if (['writePrefix', 'readPrefixes'].includes(option.name)) {
      assert.equal(properties[option.name], undefined, `${option.name} is set by a preset, not a flag`);
      continue;
    }
    assert.equal(properties[option.name]?.type, option.type, option.name);
    if (option.type === 'array') assert.deepEqual(properties[option.name].items, { type: 'string' }, option.name);
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
    `WARN ${HOME_WARNING('./.cache//nx-open-cache/', 'inside the workspace (this clone only)')}`,
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
    assert.equal(printed.filter((l) => !l.startsWith('WARN ')).length, 1, `path ${p}`);
  }
  const tree = treeWith({});
  await run(tree, { path: 'local-cache' });
  assert.equal(tree.exists('.gitignore'), false, 'no .gitignore is created');
});

/**
 * A scratch Nx workspace that uses this package (symlinked) with `nx.json` as given, and the
 * real `nx g nx-open-cache:init` CLI in it.
 * @param {string} nxJson  the file's text
 */
function scratchWorkspace(nxJson) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'noc-gen-cli-'));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(path.dirname(require.resolve('nx/package.json')), path.join(dir, 'node_modules', 'nx'), 'dir');
  fs.symlinkSync(REPO_ROOT, path.join(dir, 'node_modules', 'nx-open-cache'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), '{"name":"scratch","private":true}\n');
  fs.writeFileSync(path.join(dir, 'nx.json'), nxJson);
  fs.writeFileSync(path.join(dir, '.gitignore'), 'node_modules\n');
  spawnSync('git', ['init', '-q'], { cwd: dir });
  const nxBin = path.join(dir, 'node_modules', 'nx', require('nx/package.json').bin.nx);
  /** @type {Record<string, string | undefined>} */
  const env = {
    ...process.env,
    NX_DAEMON: 'false',
    NX_NO_CLOUD: 'true',
    NX_TUI: 'false',
    // keep Nx's cache and workspace data inside the scratch dir (nx 24 defaults to ~/.nx/<repo id>)
    NX_CACHE_DIRECTORY: path.join(dir, '.nx', 'cache'),
    NX_WORKSPACE_DATA_DIRECTORY: path.join(dir, '.nx', 'workspace-data'),
  };
  for (const k of Object.keys(env)) if (k.startsWith('NX_OPEN_CACHE_')) delete env[k];
  return {
    dir,
    /** @param {string} file */
    read: (file = 'nx.json') => fs.readFileSync(path.join(dir, file)),
    /**
     * @param {string[]} args
     * @param {Record<string, string>} [extraEnv]
     */
    nx: (args, extraEnv = {}) => {
      // --skipProjectGraph: the generator must not depend on the plugin itself being loadable.
      const r = spawnSync(process.execPath, [nxBin, 'g', 'nx-open-cache:init', '--skipProjectGraph', ...args], {
        cwd: dir,
        env: { ...env, ...extraEnv },
        encoding: 'utf8',
        timeout: 120_000,
      });
      // Nx colours its messages when CI is set: compare the text a person reads.
      return { code: r.status, out: stripVTControlCharacters(`${r.stdout}${r.stderr}`) };
    },
    dispose: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

test('the real `nx g nx-open-cache:init` CLI in a scratch workspace: add, no-op re-run, bad flag', () => {
  const w = scratchWorkspace('{}\n');
  try {
    const first = w.nx(['--path', 'shared-cache', '--local-mode', 'read-only']);
    assert.equal(first.code, 0, first.out);
    assert.match(first.out, /nx-open-cache: added plugin to nx\.json \(backend fs, path shared-cache, localMode read-only\)/);
    assert.match(first.out, /nx-open-cache: added \/shared-cache to \.gitignore/);
    assert.match(first.out, /path shared-cache is inside the workspace \(this clone only\): only this machine uses it/);
    const nxJson = w.read();
    assert.deepEqual(JSON.parse(nxJson.toString()).plugins, [
      { plugin: 'nx-open-cache', options: { backend: 'fs', path: 'shared-cache', localMode: 'read-only' } },
    ]);
    assert.equal(w.read('.gitignore').toString(), 'node_modules\n/shared-cache\n');

    // what `nx add` runs on an already configured workspace
    const second = w.nx(['--keepExistingVersions']);
    assert.equal(second.code, 0, second.out);
    assert.match(second.out, /nx-open-cache: already configured, nothing changed/);
    assert.ok(w.read().equals(nxJson), 'nx.json byte-identical');

    const bad = w.nx(['--backend', 'ftp']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.out, /invalid value "ftp" for --backend; allowed values: fs\b/);
    assert.ok(w.read().equals(nxJson), 'nx.json untouched after an error');
  } finally {
    w.dispose();
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

/* ---- signing, nx.json formatting, --check, machine-local paths ---------------------------------- */

/**
 * The public key of a base64 Ed25519 secret key (its 32-byte seed), derived by Node's crypto: an
 * independent check that a printed secret belongs to the written public key.
 * @param {string} secret
 */
function publicKeyOf(secret) {
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(secret, 'base64')]);
  const pub = crypto.createPublicKey(crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }));
  return /** @type {Buffer} */ (pub.export({ format: 'der', type: 'spki' })).subarray(-32).toString('base64');
}

/**
 * Every regular file below `dir` (symbolic links not followed: node_modules points at this repo).
 * @param {string} dir
 * @returns {string[]}
 */
function filesBelow(dir) {
  /** @type {string[]} */
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesBelow(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

test('--trustedKeys: comma-separated or a list, trimmed, repeats dropped; it replaces the entry\'s list', async () => {
  const [a, b, c] = [native.keygen(), native.keygen(), native.keygen()].map((k) => k.publicKey);
  const tree = treeWith({});
  await run(tree, { path: '/mnt/cache', trustedKeys: ` ${a},${b},,${a}` });
  assert.deepEqual(readNx(tree).plugins[0].options, { backend: 'fs', path: '/mnt/cache', trustedKeys: [a, b] });
  const printed = await run(tree, { trustedKeys: [c, `${a}`] });
  assert.deepEqual(readNx(tree).plugins[0].options.trustedKeys, [c, a]);
  assert.deepEqual(printed, [
    `nx-open-cache: updated options: trustedKeys ${JSON.stringify([a, b])} -> ${JSON.stringify([c, a])}`,
    `nx-open-cache: trusts ${native.publicKeyId(c)}, ${native.publicKeyId(a)} (key ids of "trustedKeys")`,
  ]);
  assert.match(printed[1], /^nx-open-cache: trusts [0-9a-f]{16}, [0-9a-f]{16} \(key ids of "trustedKeys"\)$/);
  await assert.rejects(run(treeWith({}), { trustedKeys: ' , ' }), /invalid value " , " for --trustedKeys; expected at least one value/);
  const bad = treeWith({});
  const before = bad.read('nx.json', 'utf-8');
  await assert.rejects(run(bad, { path: '/mnt/cache', trustedKeys: 'not-a-key' }), /trustedKeys/);
  assert.equal(bad.read('nx.json', 'utf-8'), before, 'nothing written on error');
});

test('--requireSignature without trusted keys says how to get one (--signing or --trustedKeys); nothing written', async () => {
  const tree = treeWith({});
  const before = tree.read('nx.json', 'utf-8');
  await assert.rejects(run(tree, { path: '/mnt/cache', requireSignature: true }), {
    message:
      'nx-open-cache: --requireSignature needs trusted keys: add --signing (makes a key pair, writes its public key, prints the secret key once) ' +
      'or --trustedKeys=<public key>[,<public key>...] (from `nx-open-cache keygen`). Nothing was written to nx.json',
  });
  assert.equal(tree.read('nx.json', 'utf-8'), before);
  const key = native.keygen().publicKey;
  await run(tree, { path: '/mnt/cache', requireSignature: true, trustedKeys: key });
  assert.deepEqual(readNx(tree).plugins[0].options, { backend: 'fs', path: '/mnt/cache', trustedKeys: [key], requireSignature: true });
});

test('the secret key of NX_OPEN_CACHE_SIGNING_KEY given as a trusted key is refused by position, never shown', async () => {
  const pair = native.keygen();
  const saved = process.env.NX_OPEN_CACHE_SIGNING_KEY;
  process.env.NX_OPEN_CACHE_SIGNING_KEY = pair.secretKey;
  try {
    const tree = treeWith({});
    const before = tree.read('nx.json', 'utf-8');
    await assert.rejects(run(tree, { path: '/mnt/cache', trustedKeys: [native.keygen().publicKey, pair.secretKey] }), (/** @type {Error} */ e) => {
      assert.match(e.message, /^nx-open-cache: --trustedKeys entry 2 is the SECRET key in NX_OPEN_CACHE_SIGNING_KEY, not a public key/);
      assert.ok(!e.message.includes(pair.secretKey), 'the secret is shown');
      return true;
    });
    assert.equal(tree.read('nx.json', 'utf-8'), before);
  } finally {
    if (saved === undefined) delete process.env.NX_OPEN_CACHE_SIGNING_KEY;
    else process.env.NX_OPEN_CACHE_SIGNING_KEY = saved;
  }
});

test('--signing: a new pair, its public key added to trustedKeys, requireSignature on, the secret printed once and written nowhere', async () => {
  const kept = native.keygen().publicKey;
  const tree = treeWith({ plugins: [{ plugin: 'nx-open-cache', options: { backend: 's3', bucket: 'b', trustedKeys: [kept] } }] });
  const printed = await run(tree, { signing: true });
  const { options } = readNx(tree).plugins[0];
  assert.equal(options.trustedKeys.length, 2);
  assert.equal(options.trustedKeys[0], kept, 'the keys already trusted stay');
  assert.equal(options.requireSignature, true);
  const secretLine = printed.find((l) => l.includes('the SECRET key'));
  const secret = /** @type {string} */ (/\n\n {4}(\S+)\n/.exec(String(secretLine))?.[1]);
  assert.equal(publicKeyOf(secret), options.trustedKeys[1], 'the printed secret belongs to the written public key');
  assert.equal(printed.filter((l) => l.includes(secret)).length, 1, 'the secret is printed once');
  assert.ok(!String(tree.read('nx.json', 'utf-8')).includes(secret));
  const all = printed.join('\n');
  assert.match(all, /key id [0-9a-f]{4,}/);
  assert.match(all, /CI secret NX_OPEN_CACHE_SIGNING_KEY of your trusted CI only \(main-branch builds\)/);
  assert.match(all, /never in a pull-request build, on a developer machine, in nx\.json or in any file of the repository/);
  // --requireSignature=false keeps it off; http refuses.
  const off = treeWith({});
  await run(off, { path: '/mnt/cache', signing: true, requireSignature: false });
  assert.equal(readNx(off).plugins[0].options.requireSignature, false);
  assert.equal(readNx(off).plugins[0].options.trustedKeys.length, 1);
  await assert.rejects(run(treeWith({}), { backend: 'http', url: 'https://c.example.com', signing: true }), /--signing does not apply to the http backend/);
});

test('machine-local paths: home directory, temporary directories and the workspace; a mount elsewhere is not', () => {
  const { machineLocal } = initGenerator;
  const root = path.join(os.tmpdir(), 'ws-root-for-test');
  assert.equal(machineLocal('/srv/ws', '~/.cache/nx-open-cache'), 'under your home directory');
  assert.equal(machineLocal('/srv/ws', path.join(os.homedir(), '.cache', 'x')), 'under your home directory');
  assert.equal(machineLocal('/srv/ws', '/tmp/nx-cache'), 'in a temporary directory');
  assert.equal(machineLocal('/srv/ws', '/var/tmp/nx-cache'), 'in a temporary directory');
  assert.equal(machineLocal('/srv/ws', 'cache'), 'inside the workspace (this clone only)');
  assert.equal(machineLocal('/srv/ws', '/srv/ws/.cache'), 'inside the workspace (this clone only)');
  assert.equal(machineLocal(root, path.join(root, 'c')), 'inside the workspace (this clone only)');
  for (const shared of ['/mnt/nx-cache', '/srv/nx-cache', '/srv/wsx', '/tmpfoo/cache']) assert.equal(machineLocal('/srv/ws', shared), null, shared);
});

test('the chosen path in /tmp is warned about with how to pass a shared mount; a shared mount and an unchanged entry are not', async () => {
  const tree = treeWith({});
  const printed = await run(tree, { path: '/tmp/nx-cache' });
  assert.deepEqual(printed.slice(1), [`WARN ${HOME_WARNING('/tmp/nx-cache', 'in a temporary directory')}`]);
  assert.deepEqual((await run(tree, { path: '/tmp/nx-cache' })).filter((l) => l.startsWith('WARN')), []);
  assert.deepEqual((await run(treeWith({}), { path: '/mnt/nx-cache' })).filter((l) => l.startsWith('WARN')), []);
  assert.deepEqual((await run(treeWith({}), { backend: 's3', bucket: 'b' })).filter((l) => l.startsWith('WARN')), []);
});

for (const [label, text, expectedOf] of /** @type {const} */ ([
  [
    '4-space indentation, no final newline',
    '{\n    "npmScope": "acme",\n    "targetDefaults": {\n        "build": { "cache": true }\n    },\n    "plugins": ["@nx/js/typescript"],\n    "defaultBase": "main"\n}',
    (/** @type {string} */ entry) =>
      `{\n    "npmScope": "acme",\n    "targetDefaults": {\n        "build": {\n            "cache": true\n        }\n    },\n    "plugins": [\n        "@nx/js/typescript",\n${entry}\n    ],\n    "defaultBase": "main"\n}`,
  ],
  [
    'tabs and CRLF line endings, final newline',
    '{\r\n\t"defaultBase": "main",\r\n\t"namedInputs": { "default": ["{projectRoot}/**/*"] }\r\n}\r\n',
    (/** @type {string} */ entry) =>
      `{\r\n\t"defaultBase": "main",\r\n\t"namedInputs": {\r\n\t\t"default": [\r\n\t\t\t"{projectRoot}/**/*"\r\n\t\t]\r\n\t},\r\n\t"plugins": [\r\n${entry}\r\n\t]\r\n}\r\n`,
  ],
])) {
  test(`nx.json keeps its formatting through the real CLI (${label}): indentation, line endings, final newline, key order`, () => {
    const w = scratchWorkspace(text);
    try {
      const r = w.nx(['--path=/mnt/nx-cache']);
      assert.equal(r.code, 0, r.out);
      const indent = label.startsWith('tabs') ? '\t' : '    ';
      const eol = label.startsWith('tabs') ? '\r\n' : '\n';
      const entry = [
        '{',
        `${indent}"plugin": "nx-open-cache",`,
        `${indent}"options": {`,
        `${indent}${indent}"backend": "fs",`,
        `${indent}${indent}"path": "/mnt/nx-cache"`,
        `${indent}}`,
        '}',
      ].map((l) => `${indent}${indent}${l}`).join(eol);
      assert.equal(w.read().toString(), expectedOf(entry));
    } finally {
      w.dispose();
    }
  });
}

test('init --check that fails writes nothing: nx.json and .gitignore byte-identical, and it says so', () => {
  const w = scratchWorkspace('{\n    "defaultBase": "main"\n}');
  try {
    const blocker = path.join(w.dir, 'not-a-directory');
    fs.writeFileSync(blocker, 'a file where the cache directory should be\n');
    const nxJson = w.read();
    const gitignore = w.read('.gitignore');
    const r = w.nx(['--path=not-a-directory', '--check']);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /FAIL/);
    assert.match(r.out, /--check: the cache does not work from this machine \(see the checks above\); nx\.json and \.gitignore unchanged$/m);
    assert.ok(w.read().equals(nxJson), 'nx.json byte-identical');
    assert.ok(w.read('.gitignore').equals(gitignore), '.gitignore byte-identical');

    const ok = w.nx(['--path=cache-dir', '--check']);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /the cache works from this machine/);
    assert.deepEqual(JSON.parse(w.read().toString()).plugins, [{ plugin: 'nx-open-cache', options: { backend: 'fs', path: 'cache-dir' } }]);
    assert.match(w.read().toString(), /^\{\n {4}"defaultBase": "main",\n {4}"plugins": \[/);
  } finally {
    w.dispose();
  }
});

test('the real CLI: --signing prints the secret once and no file of the workspace holds it; --trustedKeys comma-separated and repeated', () => {
  const w = scratchWorkspace('{}\n');
  try {
    const r = w.nx(['--signing', '--path=/mnt/nx-cache']);
    assert.equal(r.code, 0, r.out);
    const { options } = JSON.parse(w.read().toString()).plugins[0];
    assert.equal(options.requireSignature, true);
    assert.equal(options.trustedKeys.length, 1);
    const secret = /** @type {string} */ (/\n {4}([A-Za-z0-9+/]{43}=)\n/.exec(r.out)?.[1]);
    assert.ok(secret, r.out);
    assert.notEqual(secret, options.trustedKeys[0]);
    assert.equal(publicKeyOf(secret), options.trustedKeys[0]);
    assert.equal(r.out.split(secret).length - 1, 1, 'printed exactly once');
    for (const file of filesBelow(w.dir)) assert.ok(!fs.readFileSync(file).includes(secret), `${file} holds the secret key`);

    const [a, b, c] = [native.keygen(), native.keygen(), native.keygen()].map((k) => k.publicKey);
    const keys = w.nx([`--trustedKeys=${a},${b}`, `--trustedKeys=${c}`, '--requireSignature=false']);
    assert.equal(keys.code, 0, keys.out);
    const after = JSON.parse(w.read().toString()).plugins[0].options;
    assert.deepEqual(after.trustedKeys, [a, b, c]);
    assert.equal(after.requireSignature, false);
  } finally {
    w.dispose();
  }
});

test('a signing key in the environment whose public key is not in trustedKeys is warned about (the addon\'s config warning); a trusted one is not', async () => {
  const signer = native.keygen();
  const other = native.keygen();
  const saved = process.env.NX_OPEN_CACHE_SIGNING_KEY;
  process.env.NX_OPEN_CACHE_SIGNING_KEY = signer.secretKey;
  try {
    const printed = await run(treeWith({}), { path: '/mnt/cache', trustedKeys: other.publicKey });
    const warnings = printed.filter((l) => l.startsWith('WARN '));
    assert.equal(warnings.length, 1, printed.join('\n'));
    assert.match(warnings[0], new RegExp(`^WARN nx-open-cache: NX_OPEN_CACHE_SIGNING_KEY signs with key ${signer.keyId}, but "trustedKeys" lists ${other.keyId}: other machines will refuse what this one signs`));
    assert.ok(!printed.join('\n').includes(signer.secretKey), 'the secret is shown');
    const trusted = await run(treeWith({}), { path: '/mnt/cache', trustedKeys: `${other.publicKey},${signer.publicKey}` });
    assert.deepEqual(trusted.filter((l) => l.startsWith('WARN ')), []);
  } finally {
    if (saved === undefined) delete process.env.NX_OPEN_CACHE_SIGNING_KEY;
    else process.env.NX_OPEN_CACHE_SIGNING_KEY = saved;
  }
});

test('an nx.json with comments: written (keys and indentation kept) and the lost comments are said', async () => {
  const tree = treeWith('{\n   // where the team cache lives\n   "defaultBase": "main",\n}\n');
  const printed = await run(tree, { path: '/mnt/nx-cache' });
  assert.equal(
    tree.read('nx.json', 'utf-8'),
    '{\n   "defaultBase": "main",\n   "plugins": [\n      {\n         "plugin": "nx-open-cache",\n         "options": {\n            "backend": "fs",\n            "path": "/mnt/nx-cache"\n         }\n      }\n   ]\n}\n',
  );
  assert.ok(printed.includes('nx-open-cache: nx.json had comments or trailing commas, which a JSON writer cannot keep: put the comments back by hand if you need them'), printed.join('\n'));
});
