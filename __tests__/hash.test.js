'use strict';
// Differential tests of the hashing bindings against Nx's own native functions
// (require('nx/src/native'): hashArray, hashFile, matchGlobPaths) on generated inputs, and of the
// hashFiles walk against a reference listing done here in JS with the same rules (the `ignore` npm
// package that Nx ships for .gitignore/.nxignore, Nx's hardcoded ignore list, Nx's matchGlobPaths
// for the globs).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ours = require('../index.js');
const nx = require('nx/src/native');
const ignore = require('ignore');

const { rng } = require('./helpers/random.js');

const PIECES = ['a', 'b', 'xyz', ',', ',,', ' ', 'é', '日本', '😀', '\0', '\n', 'null', '\\', '"', 'ﬃ', '\u{10FFFF}'];

/** @param {() => number} r @returns {string} */
function randomString(r) {
  const n = Math.floor(r() * 6);
  let s = '';
  for (let i = 0; i < n; i++) {
    if (r() < 0.15) s += String.fromCharCode(32 + Math.floor(r() * 95));
    else s += PIECES[Math.floor(r() * PIECES.length)];
  }
  return s;
}

/** @type {string} */
let tmp;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nx-open-cache-hash-'));
});

after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('hashArray: the issue vectors', () => {
  assert.equal(ours.hashArray(['a', 'b', 'c']), '380853340397997038');
  assert.equal(ours.hashArray(['a', null, 'b']), '15731061398198237182');
  assert.equal(ours.hashArray([]), '3244421341483603138');
  assert.equal(ours.hashArray(['', '']), '3660690302424466814');
  assert.equal(ours.hashArray(['é', '日本']), '356086936988031197');
  assert.equal(ours.hashArray(['']), ours.hashArray([]));
  assert.equal(ours.hashArray([null]), ours.hashArray([]));
  assert.equal(ours.hashArray([undefined]), ours.hashArray([]));
});

test('hashArray and hashArrayAsync agree with Nx on 600 generated arrays', async () => {
  const r = rng(0x5eed);
  for (let i = 0; i < 600; i++) {
    const len = Math.floor(r() * 9);
    /** @type {(string | null | undefined)[]} */
    const arr = [];
    for (let j = 0; j < len; j++) {
      const p = r();
      if (p < 0.1) arr.push(null);
      else if (p < 0.15) arr.push(undefined);
      else if (p < 0.25) arr.push('');
      else arr.push(randomString(r));
    }
    const expected = nx.hashArray(arr);
    assert.equal(ours.hashArray(arr), expected, JSON.stringify(arr));
    if (i % 10 === 0) assert.equal(await ours.hashArrayAsync(arr), expected, JSON.stringify(arr));
  }
  // A long array and a long string.
  const big = Array.from({ length: 20000 }, (_, i) => (i % 7 === 0 ? null : `item-${i},é`));
  assert.equal(ours.hashArray(big), nx.hashArray(big));
  const long = ['x'.repeat(5_000_000)];
  assert.equal(ours.hashArray(long), nx.hashArray(long));
});

test('hashFile and hashFileAsync agree with Nx on generated files', async () => {
  const dir = path.join(tmp, 'files');
  fs.mkdirSync(dir);
  const r = rng(42);
  const names = ['empty', 'hello.txt', 'é.txt', '日本語 ファイル', '😀,x', 'spaces and, commas', 'ﬃ'];
  /** @type {string[]} */
  const files = [];
  fs.writeFileSync(path.join(dir, 'empty'), '');
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hello world\n');
  for (const name of names.slice(2)) {
    fs.writeFileSync(path.join(dir, name), `${name}\n${randomString(r)}`);
  }
  files.push(...names);
  const sizes = [1, 15, 16, 17, 128, 129, 240, 241, 1023, 1024, 4096, 65535, 65536, 1048575, 1048576, 1048577, 3_333_333];
  for (const size of sizes) {
    const buf = Buffer.alloc(size);
    for (let i = 0; i < size; i++) buf[i] = Math.floor(r() * 256);
    fs.writeFileSync(path.join(dir, `bin-${size}`), buf);
    files.push(`bin-${size}`);
  }
  fs.symlinkSync(path.join(dir, 'hello.txt'), path.join(dir, 'link-to-file'));
  fs.symlinkSync(dir, path.join(dir, 'link-to-dir'));
  fs.symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'dangling'));
  fs.mkdirSync(path.join(dir, 'subdir'));
  files.push('link-to-file', 'link-to-dir', 'dangling', 'subdir', 'missing', 'hello.txt/inside');

  assert.equal(ours.hashFile(path.join(dir, 'hello.txt')), '15289578712018480094');
  for (const f of files) {
    const p = path.join(dir, f);
    const expected = nx.hashFile(p);
    assert.equal(ours.hashFile(p), expected, f);
    assert.equal(await ours.hashFileAsync(p), expected, f);
  }
  // The cases where Nx answers null, and we do too.
  for (const f of ['link-to-dir', 'dangling', 'subdir', 'missing']) {
    assert.equal(ours.hashFile(path.join(dir, f)), null, f);
  }
  assert.equal(ours.hashFile(path.join(dir, 'link-to-file')), ours.hashFile(path.join(dir, 'hello.txt')));
});

test('hashFile: a sparse file over 1 GiB hashes like Nx', async () => {
  const p = path.join(tmp, 'sparse.bin');
  try {
    const fd = fs.openSync(p, 'w');
    try {
      fs.writeSync(fd, Buffer.from('head é'), 0);
      fs.ftruncateSync(fd, 2 ** 30 + 12345);
      fs.writeSync(fd, Buffer.from('tail 日本'), 0, undefined, 2 ** 30 + 12000);
    } finally {
      fs.closeSync(fd);
    }
    const expected = nx.hashFile(p);
    assert.ok(expected);
    assert.equal(ours.hashFile(p), expected);
    assert.equal(await ours.hashFileAsync(p), expected);
  } finally {
    fs.rmSync(p, { force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// hashFiles

/** Nx's hardcoded ignores (getHardcodedIgnorePatterns), as one `ignore` matcher. */
const HARDCODED = ignore().add(nx.getHardcodedIgnorePatterns());

/**
 * The reference listing: every file below `root` (relative, `/`-separated) with the rules hashFiles
 * documents. Ignore files inside `root` apply to their subtree; a deeper file overrides a shallower
 * one, and `.nxignore` overrides `.gitignore` in the same directory; an ignored directory is not
 * entered. Symlinks to files count as files; other symlinks are left out and never entered.
 * @param {string} root @param {boolean} includeIgnored @returns {string[]}
 */
function referenceWalk(root, includeIgnored) {
  /** @type {string[]} */
  const out = [];
  /** @param {string} rel @param {{ dir: string, ig: ReturnType<typeof ignore> }[]} stack */
  function walk(rel, stack) {
    const abs = rel ? path.join(root, rel) : root;
    const here = [...stack];
    if (!includeIgnored) {
      for (const name of ['.gitignore', '.nxignore']) {
        const f = path.join(abs, name);
        if (fs.existsSync(f)) here.push({ dir: rel, ig: ignore().add(fs.readFileSync(f, 'utf8')) });
      }
    }
    for (const ent of fs.readdirSync(abs, { withFileTypes: true })) {
      const childRel = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.name === '.git') continue;
      let isDir = ent.isDirectory();
      let isFile = ent.isFile();
      if (ent.isSymbolicLink()) {
        isDir = false;
        try {
          isFile = fs.statSync(path.join(root, childRel)).isFile();
        } catch {
          isFile = false;
        }
      }
      if (!isDir && !isFile) continue;
      if (!includeIgnored && isIgnored(childRel, isDir, here)) continue;
      if (isDir) walk(childRel, here);
      else out.push(childRel);
    }
  }
  /** @param {string} rel @param {boolean} isDir @param {{ dir: string, ig: ReturnType<typeof ignore> }[]} stack */
  function isIgnored(rel, isDir, stack) {
    const probe = isDir ? `${rel}/` : rel;
    if (HARDCODED.ignores(probe)) return true;
    for (let i = stack.length - 1; i >= 0; i--) {
      const { dir, ig } = stack[i];
      const local = dir ? probe.slice(dir.length + 1) : probe;
      const r = ig.test(local);
      if (r.ignored) return true;
      if (r.unignored) return false;
    }
    return false;
  }
  walk('', []);
  return out;
}

/** @param {string[]} paths */
function byUtf8(paths) {
  return [...paths].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** @param {string} root @param {string} rel @param {string | Buffer} data */
function put(root, rel, data) {
  fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
  fs.writeFileSync(path.join(root, rel), data);
}

/**
 * Generates a workspace-like tree with ignore files, hardcoded-ignored dirs, symlinks, unicode.
 * @param {string} root
 * @param {number} seed
 */
function generateTree(root, seed) {
  const r = rng(seed);
  const dirs = ['', 'src', 'src/app', 'src/日本', 'lib', 'lib/build', 'lib/é dir', 'docs', 'tmp', 'apps/a/dist', 'apps/b'];
  const exts = ['.ts', '.spec.ts', '.js', '.json', '.md', '.log', '.css', ''];
  const stems = ['index', 'main', 'util', 'ä', '日本語', 'with space', 'comma,name', 'a', 'b', 'c'];
  for (let i = 0; i < 300; i++) {
    const dir = dirs[Math.floor(r() * dirs.length)];
    const name = stems[Math.floor(r() * stems.length)] + i + exts[Math.floor(r() * exts.length)];
    const size = r() < 0.1 ? 0 : Math.floor(r() * 3000);
    const buf = Buffer.alloc(size);
    for (let k = 0; k < size; k++) buf[k] = Math.floor(r() * 256);
    put(root, dir ? `${dir}/${name}` : name, buf);
  }
  put(root, '.gitignore', '*.log\n/tmp\ndist/\n!keep.log\nbuild\n');
  put(root, 'keep.log', 'kept');
  put(root, '.nxignore', 'docs/*.md\n');
  put(root, 'src/.gitignore', '*.css\n!app/*.css\n');
  put(root, 'lib/.nxignore', '/é dir/a*\n');
  put(root, 'node_modules/pkg/index.js', 'module');
  put(root, 'src/node_modules/x.js', 'nested module');
  put(root, '.nx/cache/abc', 'cache');
  put(root, '.nx/workspace-data/d', 'data');
  put(root, '.nx/project.json', '{}');
  put(root, '.yarn/cache/z.zip', 'zip');
  put(root, '.git/HEAD', 'ref: refs/heads/main');
  put(root, '.hidden/file', 'hidden');
  put(root, 'empty.ts', '');
  // Just over one 256 KiB read chunk, and over 1 MiB by an odd amount: both hashed through the
  // streaming state, with a short last chunk.
  /** @type {Array<[string, number]>} */
  const big = [
    ['src/big-256k+1.bin', 256 * 1024 + 1],
    ['lib/big-1m+7.bin', 1024 * 1024 + 7],
  ];
  for (const [rel, size] of big) {
    const buf = Buffer.alloc(size);
    for (let k = 0; k < size; k++) buf[k] = Math.floor(r() * 256);
    put(root, rel, buf);
  }
  fs.symlinkSync(path.join(root, 'keep.log'), path.join(root, 'src', 'link-to-file.ts'));
  fs.symlinkSync(path.join(root, 'lib'), path.join(root, 'src', 'link-to-dir'));
  fs.symlinkSync(path.join(root, 'gone'), path.join(root, 'src', 'dangling.ts'));
}

const GLOB_POOL = [
  '**/*.ts',
  '!**/*.spec.ts',
  'src/',
  'lib/**',
  '*.md',
  '**/*.{js,json}',
  '!lib/é dir/**',
  'src/*/[a-m]*',
  '**/日本/**',
  '!**/index*',
  'apps/**/*',
  '**/.hidden/*',
  '!src/app/',
  '**/*,name*',
  '**/?.ts',
  '**/+(index|main)*.ts',
  '!**/?(*.)+(spec|test).ts',
  'src/**/@(a|b|c)*',
  '{lib,docs}/**',
  'apps/*/',
];

test('hashFiles: walk, per-file hashes and combined hash match the reference and Nx', async () => {
  const root = path.join(tmp, 'tree');
  generateTree(root, 7);
  const r = rng(99);
  /** @type {string[][]} */
  const globSets = [[], ['**/*'], ['!**/*.ts']];
  for (let i = 0; i < 40; i++) {
    const n = 1 + Math.floor(r() * 4);
    const set = [];
    for (let k = 0; k < n; k++) set.push(GLOB_POOL[Math.floor(r() * GLOB_POOL.length)]);
    globSets.push(set);
  }
  const counts = [];
  for (const includeIgnored of [false, true]) {
    const walked = referenceWalk(root, includeIgnored);
    assert.ok(walked.length > 100);
    for (const globs of globSets) {
      const matches = nx.matchGlobPaths(globs, walked);
      const expected = byUtf8(walked.filter((_, i) => matches[i]));
      const res = ours.hashFiles(root, globs, { includeIgnored });
      const label = `${JSON.stringify(globs)} includeIgnored=${includeIgnored}`;
      assert.deepEqual(
        res.files.map((f) => f.path),
        expected,
        label,
      );
      for (const f of res.files) assert.equal(f.hash, nx.hashFile(path.join(root, f.path)), `${label} ${f.path}`);
      assert.equal(res.hash, nx.hashArray(res.files.map((f) => `${f.path}\0${f.hash}`)), label);
      counts.push(res.files.length);
    }
  }
  // The generated glob sets select many different subsets, so the comparison is not vacuous.
  assert.ok(new Set(counts).size > 15, `${counts}`);
  assert.ok(Math.min(...counts) <= 5 && Math.max(...counts) > 200, `${counts}`);
  // The Async form, the default options, and determinism.
  const sync = ours.hashFiles(root, ['**/*']);
  assert.deepEqual(await ours.hashFilesAsync(root, ['**/*']), sync);
  assert.deepEqual(ours.hashFiles(root, ['**/*'], {}), sync);
  assert.deepEqual(ours.hashFiles(root, ['**/*'], { includeIgnored: false }), sync);
  // Listed paths never include what the rules exclude.
  const paths = sync.files.map((f) => f.path);
  for (const bad of ['debug.log', 'tmp/', 'node_modules/', '.nx/cache/', '.git/', 'src/link-to-dir/', 'src/dangling.ts']) {
    assert.ok(!paths.some((p) => p === bad || p.startsWith(bad)), bad);
  }
  assert.ok(!paths.some((p) => /^docs\/[^/]*\.md$/.test(p)), 'docs/*.md is nxignored');
  assert.ok(!paths.some((p) => p.startsWith('lib/é dir/a')), 'lib/.nxignore applies');
  assert.ok(!paths.some((p) => /^src\/[^/]*\.css$/.test(p)), 'src/.gitignore applies');
  assert.ok(paths.some((p) => /^src\/app\/[^/]*\.css$/.test(p)), 'src/.gitignore negation re-includes');
  assert.ok(paths.includes('keep.log') && !paths.some((p) => p.endsWith('.log') && p !== 'keep.log'));
  assert.ok(paths.includes('src/link-to-file.ts'));
  assert.ok(paths.includes('.nx/project.json'));
  assert.ok(paths.includes('empty.ts'));
  assert.ok(paths.includes('src/big-256k+1.bin') && paths.includes('lib/big-1m+7.bin'));
});

test('hashFiles: an empty directory gives no files and the hash Nx gives for it', async () => {
  const root = path.join(tmp, 'empty-dir');
  fs.mkdirSync(root);
  // What Nx answers for an empty workspace: hashArray([]) (its WorkspaceContext, for any glob).
  const ctx = new nx.WorkspaceContext(root, path.join(tmp, 'empty-dir-nx-cache'));
  assert.equal(ctx.hashFilesMatchingGlob(['**/*']), nx.hashArray([]));
  const expected = { hash: nx.hashArray([]), files: [] };
  for (const globs of [[], ['**/*'], ['src/**']]) {
    assert.deepEqual(ours.hashFiles(root, globs), expected, JSON.stringify(globs));
    assert.deepEqual(await ours.hashFilesAsync(root, globs), expected, JSON.stringify(globs));
  }
});

test('hashFiles: the result builder is kept per environment and ignores later prototype patches', async () => {
  const root = path.join(tmp, 'builder');
  put(root, 'a.ts', 'a');
  put(root, 'b/c.ts', 'c');
  const first = ours.hashFiles(root, []);
  assert.deepEqual(
    first.files.map((f) => f.path),
    ['a.ts', 'b/c.ts'],
  );
  const { split } = String.prototype;
  const { push } = Array.prototype;
  try {
    String.prototype.split = () => ['patched'];
    Array.prototype.push = () => 0;
    for (let i = 0; i < 3; i++) assert.deepEqual(ours.hashFiles(root, []), first);
  } finally {
    String.prototype.split = split;
    Array.prototype.push = push;
  }
  // Worker threads are environments of their own (each compiles its builder; its cleanup hook
  // runs when the worker exits), one after the other and side by side.
  const { Worker } = require('node:worker_threads');
  const code = `const { parentPort, workerData } = require('node:worker_threads');
    const ours = require(workerData.addon);
    parentPort.postMessage([ours.hashFiles(workerData.root, []), ours.hashFiles(workerData.root, [])]);`;
  /** @returns {Promise<unknown>} */
  const inWorker = () =>
    new Promise((resolve, reject) => {
      const w = new Worker(code, { eval: true, workerData: { addon: require.resolve('../index.js'), root } });
      w.once('message', resolve);
      w.once('error', reject);
    });
  for (let i = 0; i < 2; i++) assert.deepEqual(await inWorker(), [first, first]);
  assert.deepEqual(await Promise.all([inWorker(), inWorker()]), [
    [first, first],
    [first, first],
  ]);
  assert.deepEqual(ours.hashFiles(root, []), first);
});

test('hashFiles: errors name the glob or the root', async () => {
  const root = path.join(tmp, 'errs');
  put(root, 'a.ts', 'a');
  assert.throws(() => ours.hashFiles(root, ['ok/**', 'bad/[x']), /invalid glob "bad\/\[x"/);
  await assert.rejects(ours.hashFilesAsync(root, ['bad/[x']), /bad\/\[x/);
  assert.throws(() => ours.hashFiles(path.join(root, 'a.ts'), []), /not a directory/);
  assert.throws(() => ours.hashFiles(path.join(root, 'missing'), []), /missing/);
});
