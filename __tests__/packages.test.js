'use strict';
/**
 * The npm packages a release publishes (scripts/npm-packages.js; .github/workflows/release.yml runs
 * the same checks before `npm publish`): each npm/<platform> package packs exactly the binary its
 * package.json promises, and the main package packs the JavaScript, README and docs and nothing
 * else: no build output, sources, tests, secrets, nor another platform's binary. Every check runs
 * `npm pack --dry-run` on the real directory or on a temporary copy; nothing is written into the
 * repository.
 */

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { describe, test } = require('node:test');

const pkgs = require('../scripts/npm-packages.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const VERSION = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version;
const PLATFORMS = pkgs.platformPackages();

/** @param {import('node:test').TestContext} t @returns {string} a temp dir removed after the test */
function tempDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-packages-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A copy of npm/<platform> in a temp dir, with a stand-in for its binary unless `binary` is false.
 * @param {import('node:test').TestContext} t
 * @param {pkgs.PlatformPackage} p
 * @param {{ binary?: boolean }} [opts]
 */
function platformCopy(t, p, opts = {}) {
  const dir = path.join(tempDir(t), p.platform);
  fs.cpSync(path.join(REPO_ROOT, p.dir), dir, { recursive: true });
  if (opts.binary !== false) fs.writeFileSync(path.join(dir, p.binary), 'not a real addon: npm pack only lists it\n');
  return dir;
}

/**
 * A copy of the repository's tracked files (what a clean clone has) in a temp dir.
 * @param {import('node:test').TestContext} t
 */
function checkoutCopy(t) {
  const dir = tempDir(t);
  const r = spawnSync('git', ['ls-files', '-z'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, `git ls-files failed: ${r.stderr}`);
  for (const f of r.stdout.split('\0').filter(Boolean)) {
    const from = path.join(REPO_ROOT, f);
    if (!fs.existsSync(from)) continue; // deleted in the working tree, not yet committed
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.copyFileSync(from, path.join(dir, f));
  }
  return dir;
}

describe('platform packages', () => {
  test('napi.targets names the seven release targets, and npm/ holds exactly their directories', () => {
    assert.deepEqual(PLATFORMS.map((p) => p.target).sort(), [
      'aarch64-apple-darwin',
      'aarch64-unknown-linux-gnu',
      'aarch64-unknown-linux-musl',
      'x86_64-apple-darwin',
      'x86_64-pc-windows-msvc',
      'x86_64-unknown-linux-gnu',
      'x86_64-unknown-linux-musl',
    ]);
    const dirs = fs.readdirSync(path.join(REPO_ROOT, 'npm')).sort();
    assert.deepEqual(dirs, PLATFORMS.map((p) => p.platform).sort());
  });

  for (const p of PLATFORMS) {
    test(`${p.dir}: npm pack holds exactly ${p.binary}, README.md and package.json; os/cpu/libc match ${p.target}`, (t) => {
      assert.deepEqual(pkgs.checkPlatformPackage(p, platformCopy(t, p), VERSION), []);
    });
  }

  test('musl and glibc packages are told apart by libc, as npm and the loader (index.js) tell them apart', () => {
    const byName = Object.fromEntries(PLATFORMS.map((p) => [p.platform, p]));
    assert.equal(byName['linux-x64-musl'].libc, 'musl');
    assert.equal(byName['linux-arm64-musl'].libc, 'musl');
    assert.equal(byName['linux-x64-gnu'].libc, 'glibc');
    assert.equal(byName['linux-arm64-gnu'].libc, 'glibc');
    const loader = fs.readFileSync(path.join(REPO_ROOT, 'index.js'), 'utf8');
    for (const p of PLATFORMS) {
      assert.ok(loader.includes(`require('./${p.binary}')`), `index.js does not load ./${p.binary}`);
      assert.ok(loader.includes(`require('${p.name}')`), `index.js does not load the package ${p.name}`);
    }
  });

  const HOST = pkgs.hostPlatform();
  const HOST_ADDON = path.join(REPO_ROOT, `nx-open-cache.${HOST}.node`);
  test(
    'the loader (index.js) takes the installed platform package that matches the C library: musl on musl, glibc on glibc, never the other',
    { skip: (process.platform !== 'linux' && 'musl and glibc exist only on Linux') || (!fs.existsSync(HOST_ADDON) && `no local build ${HOST_ADDON} to install as a package`) },
    (t) => {
      const arch = process.arch;
      /**
       * Loads a copy of index.js, in a directory whose node_modules holds `installed` (platform
       * package names, each carrying this host's real addon), with the C library the loader
       * detects (from /usr/bin/ldd) faked to `libc`.
       * @param {'musl' | 'glibc'} libc
       * @param {string[]} installed
       * @returns {{ ok: boolean, loaded: string[], error: string }}
       */
      const load = (libc, installed) => {
        const dir = tempDir(t);
        fs.copyFileSync(path.join(REPO_ROOT, 'index.js'), path.join(dir, 'index.js'));
        for (const name of installed) {
          const p = PLATFORMS.find((q) => q.name === name);
          assert.ok(p, name);
          const pkgDir = path.join(dir, 'node_modules', name);
          fs.mkdirSync(pkgDir, { recursive: true });
          fs.writeFileSync(path.join(pkgDir, 'package.json'), JSON.stringify({ name, version: VERSION, main: p.binary }));
          // A hard link when the temp dir is on the same file system (a symlink would be
          // resolved to the repository's file in require.cache), else a copy.
          try {
            fs.linkSync(HOST_ADDON, path.join(pkgDir, p.binary));
          } catch {
            fs.copyFileSync(HOST_ADDON, path.join(pkgDir, p.binary));
          }
        }
        const ldd = libc === 'musl' ? 'musl libc (x86_64)\nVersion 1.2.5\n' : '#! /bin/bash\n# ldd (GNU libc) 2.36\n';
        const preload = path.join(dir, 'fake-ldd.js');
        fs.writeFileSync(
          preload,
          `const fs = require('fs'); const real = fs.readFileSync;
           fs.readFileSync = function (p, ...rest) { return p === '/usr/bin/ldd' ? ${JSON.stringify(ldd)} : real.call(this, p, ...rest); };`,
        );
        const script = `try { require(${JSON.stringify(path.join(dir, 'index.js'))});
            console.log(JSON.stringify({ ok: true, loaded: Object.keys(require.cache).filter((k) => k.endsWith('.node')), error: '' })); }
          catch (e) { const c = []; for (let x = e; x; x = x.cause) c.push(String(x.message)); console.log(JSON.stringify({ ok: false, loaded: [], error: c.join(' | ') })); }`;
        const env = { ...process.env };
        delete env.NAPI_RS_NATIVE_LIBRARY_PATH;
        const r = spawnSync(process.execPath, ['-r', preload, '-e', script], { cwd: dir, encoding: 'utf8', env, timeout: 60_000 });
        assert.equal(r.status, 0, r.stderr);
        return JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
      };
      const musl = `nx-open-cache-linux-${arch}-musl`;
      const gnu = `nx-open-cache-linux-${arch}-gnu`;

      /** @param {string[]} files @returns {string[]} node_modules/<package>/<file> of each */
      const installedPath = (files) => files.map((f) => f.split(path.sep).slice(-3).join('/'));

      const onMusl = load('musl', [gnu, musl]);
      assert.ok(onMusl.ok, onMusl.error);
      assert.deepEqual(installedPath(onMusl.loaded), [`node_modules/${musl}/nx-open-cache.linux-${arch}-musl.node`]);

      const onGlibc = load('glibc', [gnu, musl]);
      assert.ok(onGlibc.ok, onGlibc.error);
      assert.deepEqual(installedPath(onGlibc.loaded), [`node_modules/${gnu}/nx-open-cache.linux-${arch}-gnu.node`]);

      const wrongOnly = load('glibc', [musl]);
      assert.equal(wrongOnly.ok, false, 'a glibc machine loaded the musl package');
      assert.match(wrongOnly.error, new RegExp(`Cannot find module '${gnu}'`));
    },
  );

  test('a package without its binary, or whose files promise more than the binary, is refused', (t) => {
    const p = PLATFORMS[0];
    const missing = pkgs.checkPlatformPackage(p, platformCopy(t, p, { binary: false }), VERSION);
    assert.ok(missing.some((m) => m.includes(`${p.binary} is missing`)), missing.join('\n'));

    const dir = platformCopy(t, p);
    const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    pj.files.push('extra.js');
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pj));
    fs.writeFileSync(path.join(dir, 'extra.js'), '\n');
    const more = pkgs.checkPlatformPackage(p, dir, VERSION);
    assert.ok(more.some((m) => m.includes('"files"')), more.join('\n'));
    assert.ok(more.some((m) => m.includes('npm pack holds') && m.includes('extra.js')), more.join('\n'));

    assert.ok(pkgs.checkPlatformPackage(p, platformCopy(t, p), '9.9.9').some((m) => m.includes('"version"')));
  });
});

describe('main package', () => {
  test('this checkout: lib/, index.js, README and docs; no build output, sources, tests, secrets or another platform\'s binary', () => {
    assert.deepEqual(pkgs.checkMainPackage(REPO_ROOT, { release: false }), []);
    const files = pkgs.packFiles(REPO_ROOT);
    for (const f of ['lib/index.js', 'lib/plugin.js', 'index.js', 'index.d.ts', 'README.md', 'package.json']) assert.ok(files.includes(f), f);
    assert.ok(files.some((f) => f.startsWith('docs/')));
    assert.deepEqual(files.filter((f) => /^(target|src|tests|__tests__|npm|scripts)\//.test(f)), []);
    assert.deepEqual(files.filter((f) => f.endsWith('.node') && f !== `nx-open-cache.${pkgs.hostPlatform()}.node`), []);
  });

  test('as published: every platform package an optional dependency at its version, no binary even with all seven and target/ beside it', (t) => {
    const dir = checkoutCopy(t);
    // What `napi artifacts` leaves in the package root, and what a build leaves around it.
    for (const p of PLATFORMS) fs.writeFileSync(path.join(dir, p.binary), 'stand-in\n');
    fs.mkdirSync(path.join(dir, 'target', 'release'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'target', 'release', 'nx-open-cache-server'), 'stand-in\n');
    fs.writeFileSync(path.join(dir, '.env'), 'NX_OPEN_CACHE_SERVER_TOKENS=ci:read-write:not-a-real-secret\n');

    pkgs.prepare(dir, 'https://github.com/example/nx-open-cache');
    assert.deepEqual(pkgs.checkMainPackage(dir, { release: true }), []);

    const main = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    assert.deepEqual(Object.keys(main.optionalDependencies).sort(), PLATFORMS.map((p) => p.name).sort());
    for (const [name, version] of Object.entries(main.optionalDependencies)) {
      const p = PLATFORMS.find((q) => q.name === name);
      assert.ok(p, `${name}: no npm/<platform> directory`);
      const pj = JSON.parse(fs.readFileSync(path.join(dir, p.dir, 'package.json'), 'utf8'));
      assert.equal(pj.name, name);
      assert.equal(pj.version, version, `${p.dir} has version ${pj.version}, the main package requires ${version}`);
      assert.deepEqual(pj.repository, { type: 'git', url: 'git+https://github.com/example/nx-open-cache.git' });
    }
    assert.deepEqual(main.repository, { type: 'git', url: 'git+https://github.com/example/nx-open-cache.git' });
    assert.deepEqual(pkgs.packFiles(dir).filter((f) => f.endsWith('.node') || f.startsWith('target/') || f === '.env'), []);
  });

  test('a release without prepare (binaries packed), or with key material in a packed file, is refused', (t) => {
    const dir = checkoutCopy(t);
    for (const p of PLATFORMS) fs.writeFileSync(path.join(dir, p.binary), 'stand-in\n');
    fs.writeFileSync(path.join(dir, 'docs', 'leak.md'), ['-----BEGIN ', 'PRIVATE KEY-----', '\nstand-in\n'].join(''));
    const problems = pkgs.checkMainPackage(dir, { release: true });
    for (const p of PLATFORMS) assert.ok(problems.some((m) => m.startsWith(`main package: ${p.binary}:`)), problems.join('\n'));
    assert.ok(problems.some((m) => m.includes('docs/leak.md holds secret material')), problems.join('\n'));
    assert.ok(problems.some((m) => m.includes('optionalDependencies')), problems.join('\n'));
  });
});

describe('release tag', () => {
  test('v<version> passes and names the npm dist-tag; any other tag is refused naming both', () => {
    assert.deepEqual(pkgs.checkTag(REPO_ROOT, `v${VERSION}`), { version: VERSION, npmTag: VERSION.includes('-') ? 'next' : 'latest' });
    assert.throws(() => pkgs.checkTag(REPO_ROOT, 'v99.0.0'), new RegExp(`tag v99\\.0\\.0 does not match package.json version ${VERSION.replace(/\./g, '\\.')}`));
  });
});
