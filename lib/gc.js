'use strict';
// `nx-open-cache gc`: retention for the fs cache directory, on demand (the logic is native:
// src/retention.rs). Exit codes: 0 done, 1 done with errors (or the directory unusable), 2 bad
// options.

const { parseCommandArgs } = require('./args.js');
const { count } = require('./plural.js');
const { formatBytes } = require('./summary.js');
const { findWorkspaceRoot, readNxJson, workspaceInput } = require('./workspace.js');

const GC_HELP = `Usage: nx-open-cache gc [--path <dir>] [--max-size <size>] [--max-age <age>] [--dry-run] [--json]

Deletes cache objects of an fs cache directory: first those not accessed for longer than
--max-age, then the least recently accessed until the total (objects and temp files) fits
--max-size; also temp files of writers that are gone (killed on this machine, or not written
to for an hour) and empty directories. Never follows a symbolic link inside the directory.
Safe while builds or a server use the cache. At least one of --max-size / --max-age is required.

  --path <dir>       The fs cache directory (default: the workspace's effective fs path,
                     as \`nx-open-cache config\` shows it). Every prefix below it counts.
  --max-size <size>  e.g. 50GiB, 500MB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)
  --max-age <age>    e.g. 30d, 12h (units s, m, h, d, w); age = time since last access
  --dry-run          Show what would be deleted, delete nothing
  --json             Print the report as JSON

Exit codes: 0 done, 1 done but some files could not be handled, 2 bad options.`;

/** Seconds between progress lines when stderr is not a terminal. */
const PLAIN_PROGRESS_SECONDS = 5;

/**
 * @param {string[]} argv
 * @returns {{ error: string } | { help: true } | { path?: string, maxSize?: string, maxAge?: string, dryRun: boolean, json: boolean }}
 */
function parseGcArgs(argv) {
  const parsed = parseCommandArgs('gc', argv, {
    path: { type: 'string' },
    'max-size': { type: 'string' },
    'max-age': { type: 'string' },
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (!('values' in parsed)) return parsed;
  const v = parsed.values;
  /** @param {string | boolean | undefined} x */
  const str = (x) => (typeof x === 'string' ? x : undefined);
  const out = { path: str(v.path), maxSize: str(v['max-size']), maxAge: str(v['max-age']), dryRun: v['dry-run'] === true, json: v.json === true };
  if (out.maxSize === undefined && out.maxAge === undefined) {
    return { error: 'give --max-size and/or --max-age (e.g. --max-size 50GiB --max-age 30d)' };
  }
  return out;
}

/**
 * The workspace's effective fs cache directory (the plugin's configuration, lib/workspace.js).
 * @returns {{ path: string } | { error: string }}
 */
function workspacePath() {
  const root = findWorkspaceRoot(process.cwd());
  if (!root) return { error: `no --path given and no nx.json found in ${process.cwd()} or above` };
  /** @type {{ backend: string, location: string }} */
  let c;
  try {
    const input = workspaceInput(readNxJson(root));
    if (!input.configured) return { error: 'no --path given and the nx-open-cache plugin is not in nx.json' };
    c = require('../index.js').resolveConfig(root, input.options, input.env);
  } catch (e) {
    return { error: /** @type {Error} */ (e).message };
  }
  if (c.backend !== 'fs') {
    return {
      error: `this workspace caches in ${c.location} (${c.backend}): gc works on fs cache directories; ` +
        'for cloud storage use a bucket lifecycle rule (see "Retention" in the README)',
    };
  }
  return { path: c.location };
}

/**
 * Runs `nx-open-cache gc`.
 * @param {string[]} argv the arguments after `gc`
 * @returns {number} the exit code
 */
function gcCommand(argv) {
  const args = parseGcArgs(argv);
  if ('help' in args) {
    console.log(GC_HELP);
    return 0;
  }
  if ('error' in args) {
    console.error(`nx-open-cache gc: ${args.error}\n\n${GC_HELP}`);
    return 2;
  }
  let dir = args.path;
  if (dir === undefined) {
    const found = workspacePath();
    if ('error' in found) {
      console.error(`nx-open-cache gc: ${found.error}`);
      return 2;
    }
    dir = found.path;
  }
  const native = require('../index.js');
  const tty = Boolean(process.stderr.isTTY);
  let lastPlain = Date.now();
  let shown = false;
  /** @param {{ phase: string, scanned: number, deleted: number }} p */
  const onProgress = (p) => {
    const verb = args.dryRun ? 'to delete' : 'deleted';
    const line = `nx-open-cache gc: ${p.phase}: ${count(p.scanned, 'object', 'objects')} scanned, ${p.deleted} ${verb}`;
    if (tty) {
      process.stderr.write(`\r${line}\x1b[K`);
      shown = true;
    } else if (Date.now() - lastPlain >= PLAIN_PROGRESS_SECONDS * 1000) {
      lastPlain = Date.now();
      process.stderr.write(`${line}\n`);
    }
  };
  /** @type {import('../index.js').GcReport} */
  let report;
  try {
    report = native.gc({ path: dir, maxSize: args.maxSize, maxAge: args.maxAge, dryRun: args.dryRun }, onProgress);
  } catch (e) {
    if (shown) process.stderr.write('\r\x1b[K');
    const err = /** @type {Error & { code?: string }} */ (e);
    // The native API names its options maxSize/maxAge; here they are flags.
    const message = err.message.replace(/ for maxSize:/, ' for --max-size:').replace(/ for maxAge:/, ' for --max-age:');
    console.error(`nx-open-cache gc: ${message}`);
    return err.code === 'InvalidArg' ? 2 : 1;
  }
  if (shown) process.stderr.write('\r\x1b[K');
  if (args.json) {
    console.log(JSON.stringify({ path: dir, ...report }, null, 2));
  } else {
    console.log(formatReport(dir, report));
  }
  for (const e of report.errors) console.error(`nx-open-cache gc: ${e.path}: ${e.reason}`);
  if (report.errorCount > report.errors.length) {
    console.error(`nx-open-cache gc: ... and ${report.errorCount - report.errors.length} more errors`);
  }
  return report.errorCount > 0 ? 1 : 0;
}

/**
 * @param {string} dir
 * @param {import('../index.js').GcReport} r
 */
function formatReport(dir, r) {
  /** @param {{ files: number, bytes: number }} c @param {string} one @param {string} [many] */
  const c = (c, one, many = `${one}s`) => `${count(c.files, one, many)}, ${formatBytes(c.bytes)}`;
  const deleted = {
    files: r.deletedByAge.files + r.deletedBySize.files,
    bytes: r.deletedByAge.bytes + r.deletedBySize.bytes,
  };
  const temp = r.dryRun ? ['would be removed', 'would be removed'] : ['was removed', 'were removed'];
  return [
    `nx-open-cache gc: ${dir}${r.dryRun ? ' (dry run: nothing deleted)' : ''}`,
    `  scanned  ${c(r.scanned, 'object')}`,
    `  ${r.dryRun ? 'would delete' : 'deleted'}  ${c(deleted, 'object')} (by age: ${c(r.deletedByAge, 'object')}; by size: ${c(r.deletedBySize, 'object')})`,
    `  temp     ${c(r.deletedTemp, 'leftover temp file')} ${r.deletedTemp.files === 1 ? temp[0] : temp[1]}; ${c(r.keptTemp, 'in progress', 'in progress')}`,
    `  kept     ${c(r.kept, 'object')}`,
    `  dirs     ${count(r.removedDirs, 'empty directory', 'empty directories')} ${r.dryRun ? 'would be removed' : 'removed'}`,
    `  errors   ${r.errorCount}`,
    `  took     ${(r.durationMs / 1000).toFixed(2)} s`,
    ...(r.incomplete
      ? [`  incomplete: stopped at the walk limit with more to delete; ${r.dryRun ? 'a real run deletes more than shown (run gc again after it)' : 'run gc again to go on'}`]
      : []),
  ].join('\n');
}

module.exports = { gcCommand, parseGcArgs, GC_HELP };
