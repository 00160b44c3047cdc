'use strict';
// Output collection against Nx's own native functions (the oracle): expandOutputs and
// getFilesForOutputsBatch from nx/src/native, on generated trees with generated entry lists.
// Reproduce a run with OUTPUTS_SEED=<seed> (printed at the start); OUTPUTS_TREES and
// OUTPUTS_CASES scale it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const ours = require(root);
const nx = require(require.resolve('nx/src/native', { paths: [root] }));

const SEED = Number(process.env.OUTPUTS_SEED || 20261121);
const TREES = Number(process.env.OUTPUTS_TREES || 60);
const CASES = Number(process.env.OUTPUTS_CASES || 120);

const { rng } = require('./helpers/random.js');

const DIR_NAMES = ['a', 'b', 'c', 'dist', 'out', 'sub', 'x', 'lib', 'cache', '.next', 'a+b', '@scope', 'a,b', 'p(q)'];
const IGNORED = ['node_modules', '.git', '.nx/cache', '.nx/workspace-data', '.yarn/cache', '.nx'];
const FILE_NAMES = ['f.js', 'g.map', 'index.js', 'index.js.map', 'x.js', 'a.ts', 'h.d.ts', 'README.md', '1.js', 'b', '.env'];

/**
 * Builds a random tree under dir.
 * @param {() => number} r
 * @param {string} dir
 * @returns {{dirs: string[], files: string[], links: string[]}} relative paths
 */
function makeTree(r, dir) {
  /** @param {string[]} list */
  const pick = (list) => list[Math.floor(r() * list.length)];
  /** @type {string[]} */ const dirs = [];
  /** @type {string[]} */ const files = [];
  /** @type {string[]} */ const links = [];
  /** @param {string} rel @param {number} depth */
  function fill(rel, depth) {
    const abs = path.join(dir, rel);
    fs.mkdirSync(abs, { recursive: true });
    const nFiles = Math.floor(r() * 4);
    for (let i = 0; i < nFiles; i++) {
      const name = pick(FILE_NAMES);
      const p = path.join(abs, name);
      if (fs.existsSync(p)) continue;
      fs.writeFileSync(p, name);
      files.push(rel ? `${rel}/${name}` : name);
    }
    if (depth >= 4) return;
    const nDirs = Math.floor(r() * (depth === 0 ? 4 : 3));
    for (let i = 0; i < nDirs; i++) {
      const name = r() < 0.15 ? pick(IGNORED) : pick(DIR_NAMES);
      const child = rel ? `${rel}/${name}` : name;
      if (fs.existsSync(path.join(dir, child))) continue;
      dirs.push(child);
      fill(child, depth + 1);
    }
  }
  fill('', 0);
  // Symlinks: to a directory, to a file, dangling.
  const nLinks = Math.floor(r() * 4);
  for (let i = 0; i < nLinks && dirs.length; i++) {
    const at = pick(dirs);
    const kind = r();
    const name = kind < 0.4 ? 'dlink' : kind < 0.8 ? 'flink.js' : 'dangle.js';
    const p = path.join(dir, at, name);
    if (fs.existsSync(p) || fs.lstatSync(path.join(dir, at)).isSymbolicLink()) continue;
    let target;
    if (kind < 0.4) target = path.relative(path.join(dir, at), path.join(dir, pick(dirs)));
    else if (kind < 0.8 && files.length) target = path.relative(path.join(dir, at), path.join(dir, pick(files)));
    else target = 'nowhere';
    try {
      fs.symlinkSync(target || '.', p);
      links.push(`${at}/${name}`);
    } catch {
      // An unlucky name clash; the tree is random anyway.
    }
  }
  return { dirs, files, links };
}

/**
 * One random entry list from a grammar of Nx output patterns.
 * @param {() => number} r
 * @param {{dirs: string[], files: string[], links: string[]}} t
 * @returns {string[]}
 */
function makeEntries(r, t) {
  /** @param {string[]} list */
  const pick = (list) => list[Math.floor(r() * list.length)];
  const dir = () => (t.dirs.length && r() < 0.85 ? pick(t.dirs) : pick(['dist', 'out', 'missing', 'a/b']));
  const file = () => (t.files.length && r() < 0.9 ? pick(t.files) : 'nope.js');
  const forms = [
    () => file(),
    () => dir(),
    () => `${dir()}/`,
    () => `./${dir()}`,
    () => `./${file()}`,
    () => `${dir()}/**`,
    () => `${dir()}/**/*`,
    () => '**/*.js',
    () => '**/*.map',
    () => '**',
    () => '**/*',
    () => '*/**',
    () => `${dir()}/*.{js,map}`,
    () => `${dir()}/*`,
    () => `${dir()}/**/*.js`,
    () => `!${dir()}/**/*.map`,
    () => `!${dir()}`,
    () => `!**/${pick(['*.map', '*.d.ts', 'sub', 'x', 'cache'])}`,
    () => `${dir()}/!(a|b)`,
    () => `${dir()}/!(${pick(['x', 'f', 'index'])}).js`,
    () => `${dir()}/!(sub)/**`,
    () => `${dir()}/?(a)`,
    () => `${dir()}/@(a|b)/**`,
    () => `${dir()}/+(index).js`,
    () => `${dir()}/*.(js|map)`,
    () => `${dir()}/*.js{,.map}`,
    () => '{dist,out}/**',
    () => `{${dir()},${dir()}}`,
    () => `${dir()}/[ab]*`,
    () => `${dir()}/!(a)*`,
    () => `${pick(t.links.length ? t.links : ['nowhere'])}`,
    () => `${pick(t.links.length ? t.links : ['nowhere'])}/**`,
    () => pick(['node_modules', 'node_modules/**', '.nx/cache', '.nx/cache/**', '**/node_modules/**', '.git']),
    () => `${dir()}//${pick(['a', 'b', 'sub'])}`,
    () => `missing/${pick(['x.js', '**', '*.js'])}`,
    () => `${dir()}/${pick(['?.js', '*.d.ts', 'index.*', '**/index.js'])}`,
    () => `${dir()}/?(sub)/**`,
    () => `${dir()}/*(a)/**`,
    () => `${dir()}/[!a]*`,
    () => `${dir()}/a!b`,
    () => `${dir()}/*.js?`,
    () => `{${dir()},${dir()}}/**`,
    () => `${dir()}/**/!(index).js`,
    () => `!${dir()}/!(a)`,
    () => `!${dir()}/*.{js,map}`,
    () => `${dir()}/../${dir()}/**`,
    () => `${file()}/`,
    () => `**/${pick(['a', 'b', 'sub', '.next'])}/**`,
    () => `${dir()}/\\*`,
    () => `${dir()}/{a,{b,c}}/**`,
    () => `${dir()}/x?(s)y`,
    () => `${dir()}/!(a)*/**`,
    () => `./${dir()}/**/*.js`,
    // Invalid globs: both sides must throw.
    () => pick(['dist/[a', 'out/{x', `${dir()}/!(a`]),
  ];
  const n = 1 + Math.floor(r() * 4);
  /** @type {string[]} */
  const entries = [];
  for (let i = 0; i < n; i++) {
    // Invalid globs rarely, and never as negations (Nx aborts the process on those).
    let f = forms[Math.floor(r() * forms.length)];
    if (f === forms[forms.length - 1] && r() < 0.7) f = forms[0];
    entries.push(f());
  }
  return entries;
}

/** @param {() => any} fn @returns {{ok: true, value: any} | {ok: false, error: string}} */
function attempt(fn) {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    return { ok: false, error: String(e && /** @type {Error} */ (e).message) };
  }
}

/** @param {string} dir @returns {string} the tree, one path per line, with its kind */
function listing(dir) {
  const out = [];
  (function walk(rel) {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(dir, r));
      if (st.isSymbolicLink()) out.push(`${r} -> ${fs.readlinkSync(path.join(dir, r))}`);
      else if (st.isDirectory()) {
        out.push(`${r}/`);
        walk(r);
      } else out.push(r);
    }
  })('');
  return out.join('\n');
}

/** @param {Iterable<string>} v */
const sorted = (v) => [...v].sort();

test(`differential against Nx (seed ${SEED}, ${TREES} trees x ${CASES} entry lists)`, () => {
  console.log(`outputs differential: OUTPUTS_SEED=${SEED} OUTPUTS_TREES=${TREES} OUTPUTS_CASES=${CASES}`);
  const r = rng(SEED);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'outputs-diff-'));
  const failures = [];
  let cases = 0;
  let errorCases = 0;
  try {
    for (let ti = 0; ti < TREES && failures.length < 5; ti++) {
      const dir = path.join(base, `t${ti}`);
      const t = makeTree(r, dir);
      /** @type {string[][]} */
      const batch = [];
      for (let ci = 0; ci < CASES && failures.length < 5; ci++) {
        const entries = makeEntries(r, t);
        cases++;
        const theirsExpand = attempt(() => nx.expandOutputs(dir, entries));
        const oursExpand = attempt(() => ours.expandOutputs(dir, entries));
        const theirsFiles = attempt(() => nx.getFilesForOutputsBatch(dir, [entries])[0]);
        const oursFiles = attempt(() => ours.getFilesForOutputs(dir, entries));
        const problems = [];
        /** @type {[string, ReturnType<typeof attempt>, ReturnType<typeof attempt>, boolean][]} */
        const pairs = [
          ['expandOutputs', theirsExpand, oursExpand, entries.some((e) => /[!?@+*|,{}[\]()]/.test(e))],
          ['getFilesForOutputs', theirsFiles, oursFiles, false],
        ];
        for (const [what, a, b, order] of pairs) {
          if (a.ok !== b.ok) problems.push(`${what}: nx ${a.ok ? 'returned' : 'threw'}, ours ${b.ok ? 'returned' : 'threw'}`);
          else if (a.ok && b.ok) {
            const [x, y] = order ? [sorted(a.value), sorted(b.value)] : [a.value, b.value];
            if (JSON.stringify(x) !== JSON.stringify(y)) problems.push(`${what}: results differ`);
          }
        }
        if (!theirsExpand.ok || !theirsFiles.ok) errorCases++;
        else batch.push(entries);
        if (problems.length) {
          failures.push(
            [
              `seed ${SEED}, tree ${ti}, case ${ci}: ${problems.join('; ')}`,
              `entries: ${JSON.stringify(entries)}`,
              `tree (${dir}):\n${listing(dir)}`,
              `nx   expand: ${JSON.stringify(theirsExpand)}`,
              `ours expand: ${JSON.stringify(oursExpand)}`,
              `nx   files : ${JSON.stringify(theirsFiles)}`,
              `ours files : ${JSON.stringify(oursFiles)}`,
            ].join('\n'),
          );
        }
      }
      // The batch form, whole, against Nx's.
      const a = attempt(() => nx.getFilesForOutputsBatch(dir, batch));
      const b = attempt(() => ours.getFilesForOutputsBatch(dir, batch));
      if (JSON.stringify(a) !== JSON.stringify(b)) {
        failures.push(`seed ${SEED}, tree ${ti}: getFilesForOutputsBatch differs on ${batch.length} entry lists`);
      }
    }
  } finally {
    if (!failures.length) fs.rmSync(base, { recursive: true, force: true });
  }
  console.log(`outputs differential: ${cases} cases (${errorCases} where Nx throws), ${failures.length} mismatches`);
  assert.equal(failures.length, 0, `\n${failures.join('\n\n')}\n(trees kept under ${base})`);
  assert.ok(errorCases > 0, 'the grammar produced no invalid glob');
});

test('Async forms agree with the sync ones', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outputs-async-'));
  try {
    makeTree(rng(7), dir);
    const entries = ['**/*.js', '!**/sub', 'dist'];
    assert.deepEqual(await ours.expandOutputsAsync(dir, entries), ours.expandOutputs(dir, entries));
    assert.deepEqual(await ours.getFilesForOutputsAsync(dir, entries), ours.getFilesForOutputs(dir, entries));
    assert.deepEqual(
      await ours.getFilesForOutputsBatchAsync(dir, [entries, ['a']]),
      ours.getFilesForOutputsBatch(dir, [entries, ['a']]),
    );
    await assert.rejects(ours.expandOutputsAsync(dir, ['dist/[a']), /dist\/\[a/);
    await assert.rejects(ours.getFilesForOutputsAsync(dir, ['x', '!y/{z']), /!y\/\{z/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an invalid negation is an error naming it (Nx aborts the process instead)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'outputs-neg-'));
  try {
    assert.throws(() => ours.expandOutputs(dir, ['dist', '!dist/[a']), /!dist\/\[a/);
    assert.throws(() => ours.getFilesForOutputs(dir, ['!x(']), /invalid glob/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
