#!/usr/bin/env node
'use strict';
/**
 * The part of the test suite that runs on every platform the release builds for (macOS, Windows,
 * Alpine/musl), where `npm test`'s Linux-only prerequisites are missing: Debian packages
 * (scripts/system-deps.js: wrk, prlimit), the cloud emulators' venv (moto, fake-gcs-server; their
 * wheels are Linux x86-64 builds), network namespaces. Used by .github/workflows/ci.yml and
 * release.yml; `npm test` on Linux runs everything.
 *
 *   node scripts/test-portable.js [--node-only]
 *
 * 1. `cargo test --release` (the core's whole suite; skipped with --node-only),
 * 2. the native addon, built when missing or stale (scripts/ensure-native.js),
 * 3. the node tests below, one file at a time.
 */

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..');

/** Node tests that need only Node, the addon and npm: every platform. */
const EVERYWHERE = [
  'numbers.test.js',
  'napi-panic.test.js',
  'relay.test.js',
  'legacy.test.js',
  'plugin.test.js',
  'outputs.test.js',
  'packages.test.js',
];

/**
 * Node tests that also rely on POSIX file semantics (modes such as 0o555 directories, symlinks
 * without privileges, signals) or spawn `npm`/`git` without a shell (which cannot start npm.cmd on
 * Windows): macOS and Linux (musl) only.
 */
const POSIX_ONLY = ['archive.test.js', 'hash.test.js', 'gc.test.js', 'e2e.test.js'];

/**
 * @param {string} cmd
 * @param {string[]} args
 */
/**
 * @param {string} cmd
 * @param {string[]} args
 * @param {Record<string, string>} [env] added to the environment
 */
function run(cmd, args, env = {}) {
  console.log(`test-portable: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: REPO_ROOT, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) throw new Error(`test-portable: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) process.exit(r.status || 1);
}

function main() {
  if (!process.argv.includes('--node-only')) run('cargo', ['test', '--release', '--quiet'], { NX_OPEN_CACHE_TEST_SKIP_CLOUD: '1' }); // no emulator venv here
  run(process.execPath, [path.join('scripts', 'ensure-native.js')]);
  const files = process.platform === 'win32' ? EVERYWHERE : [...EVERYWHERE, ...POSIX_ONLY];
  run(process.execPath, ['--test', '--test-concurrency=1', ...files.map((f) => path.join('__tests__', f))]);
}

main();
