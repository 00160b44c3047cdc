#!/usr/bin/env node
'use strict';
// Builds the native addon (release) when it is missing or older than the Rust sources, so that a
// fresh clone runs `npm ci && npm test` / `npm run demo` with nothing else to install.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');

/** @param {string} p @returns {number} newest mtime below p (files only) */
function newest(p) {
  let stat;
  try {
    stat = fs.statSync(p);
  } catch {
    return 0;
  }
  if (!stat.isDirectory()) return stat.mtimeMs;
  let max = 0;
  for (const name of fs.readdirSync(p)) max = Math.max(max, newest(path.join(p, name)));
  return max;
}

const addons = fs.readdirSync(root).filter((f) => f.startsWith('nx-open-cache.') && f.endsWith('.node'));
const built = addons.length ? Math.min(...addons.map((f) => fs.statSync(path.join(root, f)).mtimeMs)) : 0;
const sources = Math.max(...['src', 'Cargo.toml', 'Cargo.lock', 'build.rs'].map((p) => newest(path.join(root, p))));

if (built && built >= sources && !process.argv.includes('--force')) {
  process.exit(0);
}
console.log(`nx-open-cache: building the native addon (release)${built ? ': sources changed' : ''}...`);
const cli = require.resolve('@napi-rs/cli/package.json', { paths: [root] });
const bin = path.join(path.dirname(cli), JSON.parse(fs.readFileSync(cli, 'utf8')).bin.napi);
const r = spawnSync(process.execPath, [bin, 'build', '--platform', '--release', '--features', 'node', '--', '--lib'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('nx-open-cache: native build failed (needs a Rust toolchain: https://rustup.rs)');
  process.exit(r.status || 1);
}
