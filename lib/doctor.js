'use strict';
// `npx nx-open-cache doctor` (and `nx g nx-open-cache:init --check`): does the configured cache
// work on this machine? The effective configuration (plugin options, environment, a deprecated
// top-level s3/gcs/azure block), which backend and mode apply and why, then the native checks
// (setup, lookup, write / read back / delete probe), each timed, with a fix for every failure,
// and the warnings (WARN): the configuration's, and writes refused while reads work (the fix is
// read-only mode). Exit 0 when the cache works (also with warnings), 1 when not, 2 on a mistake.

const { commandArgs } = require('./args.js');
const { count } = require('./plural.js');
const { inputNotes, readNxJson, workspaceInput } = require('./workspace.js');

/** @typedef {import('../index').DoctorReport} DoctorReport */

const HELP = `Usage: nx-open-cache doctor [--json]

Checks the cache this workspace is configured for, from this machine:
  - the effective configuration (nx.json plugin options + NX_OPEN_CACHE_* environment, or a
    deprecated top-level s3/gcs/azure block), the backend and the mode, and why that mode applies;
  - setup: the storage client (credentials found, directory usable);
  - read: a lookup of a hash that is never stored is answered;
  - write, read back, delete: a 4 KB probe under a unique hash (skipped in read-only / no-cache
    mode; the http backend cannot delete, its probe stays).
Every step is timed; every failure comes with a fix. Warnings (WARN): writes refused while reads
work on a developer machine in the default mode (a read-only token or credentials: set localMode
"read-only", or NX_OPEN_CACHE_MODE=read-only), unknown NX_OPEN_CACHE_* variables, a signing key
whose public key is not in trustedKeys. Writes refused on CI, or with read-write mode set
explicitly, are a failure: that machine is meant to write (use a read-write token or credentials).
Exit code: 0 when the cache works (also with warnings), 1 when it does not, 2 on a configuration
mistake.

Options:
  --json   Print the report as JSON`;

/**
 * @param {DoctorReport} r
 * @param {string[]} notes
 * @returns {string}
 */
function format(r, notes) {
  const lines = [`nx-open-cache doctor: ${r.backend} backend, ${r.location}`, `  mode ${r.mode} (${r.modeSource})`];
  for (const n of notes) lines.push(`  note: ${n}`);
  for (const w of r.warnings) lines.push(`  WARN ${w}`);
  const width = Math.max(...r.checks.map((c) => c.name.length));
  /** @type {Record<string, string>} */
  const marks = { ok: 'ok  ', failed: 'FAIL', warning: 'WARN', skipped: 'skip' };
  for (const c of r.checks) {
    const time = c.outcome === 'skipped' ? '' : ` (${c.millis} ms)`;
    lines.push(`  ${marks[c.outcome] ?? c.outcome} ${c.name.padEnd(width)}  ${c.detail}${time}`);
    if (c.fix) lines.push(`       ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  lines.push(verdict(r));
  return lines.join('\n');
}

/**
 * The last line: works, works with warnings (which), or does not work.
 * @param {DoctorReport} r
 */
function verdict(r) {
  if (!r.works) return 'the cache does NOT work from this machine: Nx runs would go uncached';
  if (r.status !== 'warning') return 'the cache works from this machine';
  const refused = r.checks.some((c) => c.outcome === 'warning');
  const warnings = r.warnings.length + (refused ? 1 : 0);
  const what = refused ? 'reads work, writes are refused (see the fix above)' : 'see above';
  return `the cache works from this machine, with ${count(warnings, 'warning')}: ${what}`;
}

/**
 * Runs the doctor in the workspace at `root`.
 * @param {string} root
 * @param {{ json?: boolean, log?: (s: string) => void, error?: (s: string) => void, nxJson?: unknown }} [o]
 *   nxJson: the configuration to check instead of the file's (the init generator checks what it
 *   is about to write)
 * @returns {Promise<number>} exit code: 0 works (also with warnings), 1 does not, 2 configuration mistake
 */
async function runDoctor(root, o = {}) {
  const log = o.log || ((/** @type {string} */ s) => console.log(s));
  const error = o.error || ((/** @type {string} */ s) => console.error(s));
  let input;
  try {
    input = workspaceInput(o.nxJson ?? readNxJson(root));
  } catch (e) {
    error(`nx-open-cache doctor: ${/** @type {Error} */ (e).message}`);
    return 2;
  }
  const notes = inputNotes(input, 'this check');
  if (!input.configured) {
    error('nx-open-cache doctor: the plugin is not in nx.json: run `npx nx g nx-open-cache:init` (or `nx add nx-open-cache`)');
    return 1;
  }
  const native = require('../index.js');
  /** @type {DoctorReport} */
  let report;
  try {
    report = await native.doctorAsync(root, input.options, input.env);
  } catch (e) {
    error(`nx-open-cache doctor: ${/** @type {Error} */ (e).message.replace(/^nx-open-cache: /, '')}`);
    return 2;
  }
  log(o.json ? JSON.stringify({ ...report, notes }, null, 2) : format(report, notes));
  return report.works ? 0 : 1;
}

/**
 * The `doctor` command.
 * @param {string[]} args
 * @param {string | undefined} root
 * @returns {Promise<number>}
 */
async function doctorCommand(args, root) {
  const parsed = commandArgs({ command: 'doctor', usage: HELP, errorCode: 2 }, args, { json: { type: 'boolean' } });
  if (typeof parsed === 'number') return parsed;
  if (!root) {
    console.error(`nx-open-cache doctor: no nx.json found in ${process.cwd()} or above: run it inside an Nx workspace`);
    return 2;
  }
  return runDoctor(root, { json: parsed.values.json === true });
}

module.exports = { runDoctor, doctorCommand, format, HELP };
