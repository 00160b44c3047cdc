'use strict';
// Helpers shared by the demo runner and the benchmarks (development scripts, not the package).

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO_ROOT = path.join(__dirname, '..');

/**
 * Runs a command synchronously, throwing with its output on failure.
 * @param {string} cmd
 * @param {string[]} args
 * @param {string} cwd
 * @returns {string} its stdout
 */
function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/**
 * The nx package this repository uses, and its CLI entry relative to the package.
 * @returns {{ dir: string, version: string, bin: string }}
 */
function locateNx() {
  const pkgJson = require.resolve('nx/package.json', { paths: [REPO_ROOT] });
  const pkg = JSON.parse(fs.readFileSync(pkgJson, 'utf8'));
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin.nx;
  return { dir: path.dirname(pkgJson), version: String(pkg.version), bin: String(bin) };
}

module.exports = { run, locateNx };
