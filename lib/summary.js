'use strict';
// The run summary: one short line for the terminal, and the file the CLI shows when the daemon
// swallowed the line.

const fs = require('node:fs');
const path = require('node:path');

/** @typedef {import('../index').CacheStats} CacheStats */

/**
 * @typedef {CacheStats & {
 *   location: string, mode: string, modeSource: string,
 *   startedAt: string, endedAt: string, runId: string, command?: string, runs?: number,
 *   note?: string, warnings?: string[], savedMs?: number, metaReads?: number, metaWrites?: number,
 *   eventsDropped?: number
 * }} RunSummary
 */

/** Said for a `no-cache` run, whose summary has zero counts. */
const NOT_USED = 'remote cache not used';
/** The mode of a run the plugin stayed out of (its `note` says why). */
const STAYED_OUT = 'stayed out';

/**
 * The summary of a run that did not use the remote cache: a `no-cache` run, or one the plugin
 * stayed out of (`note` says why: --skip-remote-cache, a server already set, a proxy that could
 * not start). Zero counts, the mode and why, so that `summary` never shows an older run in its
 * place.
 * @param {{ location: string, modeSource: string, runId: string, startedAt: Date, note?: string }} run
 * @returns {RunSummary}
 */
function unusedRunSummary(run) {
  return {
    hits: 0, misses: 0, stored: 0, alreadyStored: 0, refusedWrites: 0, bytesDown: 0, bytesUp: 0,
    cacheMillis: 0, errorCount: 0, errors: [], refusedCount: 0, routineCount: 0, refusals: [],
    metaReads: 0, metaWrites: 0, events: [], eventsDropped: 0,
    location: run.location, mode: run.note ? STAYED_OUT : 'no-cache', modeSource: run.modeSource, runId: run.runId,
    startedAt: run.startedAt.toISOString(), endedAt: new Date().toISOString(), note: run.note || NOT_USED,
  };
}

/**
 * @param {number} n
 * @param {string} one
 * @param {string} [many]
 */
function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * The faults in the line: causes, and the requests they concerned when that differs
 * (`1 error (8 requests)`, `0 errors`).
 * @param {RunSummary} s
 */
function errorsClause(s) {
  const causes = (s.errors || []).length;
  if (!s.errorCount || causes === s.errorCount) return count(s.errorCount, 'error');
  return `${count(causes, 'error')} (${count(s.errorCount, 'request')})`;
}

/**
 * The table's errors cell: `1 (8 requests)`, `0`.
 * @param {RunSummary} s
 */
function errorsCell(s) {
  const causes = (s.errors || []).length;
  if (!s.errorCount || causes === s.errorCount) return String(s.errorCount);
  return `${causes} (${count(s.errorCount, 'request')})`;
}

/**
 * One fault cause as the line shows it: `S3 bucket x does not exist: 8 requests, store skipped
 * for this run`.
 * @param {{ reason: string, count: number, skipped?: boolean }} e
 */
function causeText(e) {
  return `${e.reason}: ${count(e.count, 'request')}${e.skipped ? ', store skipped for this run' : ''}`;
}

/**
 * Refusals that are part of normal operation, and the others.
 * @param {RunSummary} s
 */
function splitRefusals(s) {
  const all = s.refusals || [];
  return { routine: all.filter((r) => r.routine), refused: all.filter((r) => !r.routine) };
}

/**
 * A byte count as everything nx-open-cache shows one: the native formatter (src/units.rs), e.g.
 * `21.2 KiB`. A count that is not a whole number (never from the native counters) is shown as is.
 * @param {number} bytes
 * @returns {string}
 */
function formatBytes(bytes) {
  if (!Number.isSafeInteger(bytes) || bytes < 0) return `${bytes} B`;
  return /** @type {typeof import('../index')} */ (require('../index.js')).formatBytes(bytes);
}

/**
 * Time saved by this run's hits, rounded as people say it: `~45 s` under a minute, `~12 min` under
 * an hour, then `~1.5 h`.
 * @param {number} ms
 */
function formatSaved(ms) {
  const s = Math.max(0, ms) / 1000;
  if (s < 59.5) return `~${Math.round(s)} s`;
  if (s < 3570) return `~${Math.round(s / 60)} min`;
  return `~${(s / 3600).toFixed(1)} h`;
}

/**
 * The summary: one line, then one indented line per fault cause (with its request count) and per
 * refusal reason. Routine refusals are one clause of the line.
 * @param {RunSummary} s
 * @returns {string}
 */
function formatSummary(s) {
  if (s.mode === 'no-cache') {
    return `nx-open-cache: ${s.note || NOT_USED} (${s.location}, no-cache${s.modeSource ? ` from ${s.modeSource}` : ''})`;
  }
  if (s.mode === STAYED_OUT) return `nx-open-cache: ${s.note}${s.location ? ` (${s.location})` : ''}`;
  const { routine, refused } = splitRefusals(s);
  const parts = [
    `${s.hits} ${s.hits === 1 ? 'hit' : 'hits'}`,
    `${s.misses} ${s.misses === 1 ? 'miss' : 'misses'}`,
    `${s.stored} stored`,
  ];
  if (s.alreadyStored) parts.push(`${s.alreadyStored} already stored`);
  if (s.refusedWrites) parts.push(`${s.refusedWrites} not stored (${s.mode})`);
  parts.push(`${formatBytes(s.bytesDown)} down`, `${formatBytes(s.bytesUp)} up`);
  // Only when a hit's artifact carried metadata (the producer's duration): old artifacts have none.
  if (s.savedMs !== undefined) parts.push(`saved ${formatSaved(s.savedMs)}`);
  parts.push(errorsClause(s));
  if (s.refusedCount) parts.push(`${s.refusedCount} refused`);
  if (s.routineCount) parts.push(`${s.routineCount} routine (${routine.map((r) => r.reason).join('; ') || 'not errors'})`);
  const lines = [`nx-open-cache: ${parts.join(', ')} (${s.location}, ${s.mode})`];
  for (const e of s.errors || []) lines.push(`  ! ${causeText(e)}`);
  for (const r of refused) {
    lines.push(`  - refused ${r.count > 1 ? `${r.count}x ` : ''}(${refusedHashes(r)}): ${r.reason}`);
  }
  if (s.errorCount) {
    lines.push('  (cache faults never fail the build: affected tasks ran or were not stored)');
  }
  return lines.join('\n');
}

/**
 * The hashes of one refusal reason, as listed in the summary: the first few, then how many more.
 * @param {{ count: number, hashes: string[] }} r
 * @returns {string}
 */
function refusedHashes(r) {
  const more = r.count - r.hashes.length;
  return r.hashes.join(', ') + (more > 0 ? `, ${more} more` : '');
}

/**
 * The summary as a small table: counts, bytes, time in cache calls, then faults grouped by reason.
 * @param {RunSummary} s
 * @returns {string}
 */
function formatSummaryTable(s) {
  /** @type {[string, string][]} */
  const rows = [
    ['remote hits', String(s.hits)],
    ['misses', String(s.misses)],
    ['stored', String(s.stored)],
  ];
  if (s.alreadyStored) rows.push(['already stored', String(s.alreadyStored)]);
  if (s.refusedWrites) rows.push([`not stored (${s.mode})`, String(s.refusedWrites)]);
  rows.push(
    ['downloaded', formatBytes(s.bytesDown)],
    ['uploaded', formatBytes(s.bytesUp)],
    ['time in cache calls', `${((s.cacheMillis || 0) / 1000).toFixed(2)} s`],
    ...(s.savedMs !== undefined ? [/** @type {[string, string]} */ (['time saved by hits', `${(s.savedMs / 1000).toFixed(1)} s (${formatSaved(s.savedMs)})`])] : []),
    ['errors', errorsCell(s)],
  );
  if (s.refusedCount) rows.push(['refused', String(s.refusedCount)]);
  if (s.routineCount) rows.push(['routine (not errors)', String(s.routineCount)]);
  const width = Math.max(...rows.map(([k]) => k.length));
  if (s.mode === STAYED_OUT) return `nx-open-cache (${s.location ? `${s.location}, ` : ''}${STAYED_OUT})\n  ${s.note}`;
  const lines = [`nx-open-cache (${s.location}, ${s.mode}${s.modeSource ? ` from ${s.modeSource}` : ''})`];
  if (s.mode === 'no-cache') {
    lines.push(`  ${s.note || NOT_USED}`);
    return lines.join('\n');
  }
  for (const [k, v] of rows) lines.push(`  ${k.padEnd(width)}  ${v}`);
  const { routine, refused } = splitRefusals(s);
  if ((s.errors || []).length) {
    lines.push('  errors by cause (requests):');
    for (const e of s.errors) {
      lines.push(`    ${String(e.count).padStart(4)}x  ${e.reason}${e.skipped ? ' (store skipped for this run)' : ''}`);
    }
    lines.push('  (cache faults never fail the build: affected tasks ran or were not stored)');
  }
  if (refused.length) {
    lines.push('  refused by reason (each a miss or a write not stored):');
    for (const r of refused) lines.push(`    ${String(r.count).padStart(4)}x  ${r.reason} (${refusedHashes(r)})`);
  }
  if (routine.length) {
    lines.push('  routine (each a miss, not an error):');
    for (const r of routine) lines.push(`    ${String(r.count).padStart(4)}x  ${r.reason}`);
  }
  return lines.join('\n');
}

/** What NX_OPEN_CACHE_SUMMARY accepts. */
const SUMMARY_MODES = ['off', 'line', 'table'];

/**
 * The summary display chosen by NX_OPEN_CACHE_SUMMARY (default `line`), and a warning when the
 * value is not one of SUMMARY_MODES (then `line`).
 * @param {string | undefined} value
 * @returns {{ mode: 'off' | 'line' | 'table', warning?: string }}
 */
function summaryMode(value) {
  const v = (value ?? '').trim().toLowerCase();
  if (v === '') return { mode: 'line' };
  if (v === 'off' || v === 'line' || v === 'table') return { mode: v };
  return {
    mode: 'line',
    warning: `nx-open-cache: NX_OPEN_CACHE_SUMMARY=${JSON.stringify(value)} is not one of ${SUMMARY_MODES.join(', ')}; showing the line`,
  };
}

/**
 * The plugin's directory under the workspace data directory (NX_WORKSPACE_DATA_DIRECTORY, default
 * `.nx/workspace-data`): run summaries, and the cache host's lock, host file and log.
 * @param {string} workspaceRoot
 */
function pluginDataDir(workspaceRoot) {
  const dataDir = process.env.NX_WORKSPACE_DATA_DIRECTORY
    ? path.resolve(workspaceRoot, process.env.NX_WORKSPACE_DATA_DIRECTORY)
    : path.join(workspaceRoot, '.nx', 'workspace-data');
  return path.join(dataDir, 'nx-open-cache');
}

/**
 * Where the last run's summary is kept.
 * @param {string} workspaceRoot
 */
function summaryFile(workspaceRoot) {
  return path.join(pluginDataDir(workspaceRoot), 'last-run.json');
}

/** Per-run summaries kept in `runs/` (the oldest go first). */
const MAX_RUN_SUMMARIES = 100;

/**
 * Where one run's summary is kept: `runs/<run id>.json` (a run id is Nx's hash of the command line
 * and start time; anything else in it is replaced).
 * @param {string} workspaceRoot
 * @param {string} runId
 */
function runSummaryFile(workspaceRoot, runId) {
  const name = runId.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 128) || 'run';
  return path.join(pluginDataDir(workspaceRoot), 'runs', `${name}.json`);
}

/**
 * Writes `value` as JSON atomically (temp file + rename).
 * @param {string} file
 * @param {unknown} value
 */
function writeJsonAtomically(file, value) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

/**
 * Removes the oldest per-run summaries beyond MAX_RUN_SUMMARIES.
 * @param {string} dir
 */
function pruneRunSummaries(dir) {
  const files = fs.readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => {
      try {
        return { f, t: fs.statSync(path.join(dir, f)).mtimeMs };
      } catch {
        return { f, t: 0 };
      }
    })
    .sort((a, b) => b.t - a.t);
  for (const { f } of files.slice(MAX_RUN_SUMMARIES)) fs.rmSync(path.join(dir, f), { force: true });
}

/**
 * Writes the run's own summary (`runs/<run id>.json`) and `last-run.json`, atomically. Never
 * throws: a summary must not fail a build.
 * @param {string} workspaceRoot
 * @param {RunSummary} summary
 * @returns {string | undefined} the error message, if writing failed
 */
function writeSummary(workspaceRoot, summary) {
  const own = runSummaryFile(workspaceRoot, summary.runId);
  const last = summaryFile(workspaceRoot);
  // The per-request events (up to 10,000) live on in the run history, task by task.
  const { events, ...kept } = summary;
  for (const file of [own, last]) {
    try {
      writeJsonAtomically(file, kept);
    } catch (e) {
      return `cannot write ${file}: ${/** @type {Error} */ (e).message}`;
    }
  }
  try {
    pruneRunSummaries(path.dirname(own));
  } catch {
    // Old summaries left: harmless.
  }
  return undefined;
}

/**
 * @param {string} workspaceRoot
 * @returns {RunSummary | undefined}
 */
function readSummary(workspaceRoot) {
  try {
    return JSON.parse(fs.readFileSync(summaryFile(workspaceRoot), 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * How long ago `then` was, in the largest whole unit: `just now`, `2 min ago`, `3 h ago`,
 * `4 days ago`; undefined for a time that cannot be read.
 * @param {string} then  an ISO time
 * @param {number} [now]  ms since the epoch
 * @returns {string | undefined}
 */
function formatAge(then, now = Date.now()) {
  const t = Date.parse(then);
  if (Number.isNaN(t)) return undefined;
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${count(Math.floor(s / 86_400), 'day')} ago`;
}

module.exports = {
  formatBytes, formatSaved, formatSummary, formatSummaryTable, summaryMode, SUMMARY_MODES, formatAge, unusedRunSummary, STAYED_OUT,
  pluginDataDir, summaryFile, runSummaryFile, writeSummary, readSummary,
};
