'use strict';
/**
 * The report's reader of the run history (`<pluginDataDir>/history/runs/*.json`, the version 1
 * record of lib/history.js). It reads one file at a time as the runs are iterated (the report
 * never holds the whole history), and says which files were ignored and why. Whether a file is a
 * run is lib/history.js's rule (`isRunRecord`, the one its readRuns applies): JSON with `format:
 * "nx-open-cache-history"`, `version: 1`, a string `runId` and `startedAt`, and a `tasks` array
 * whose every task has a string `id`, `hash` and `outcome` (else the whole run is left out); the
 * report also needs `startedAt` to be a time. Anything else (a partial write, another tool's file,
 * a newer version) is ignored and counted, never an error. Optional fields of a run or a task may
 * be missing: the report model checks every value it uses.
 */

const fs = require('node:fs');
const path = require('node:path');
const { HISTORY_FORMAT: FORMAT, HISTORY_VERSION: VERSION, isRunRecord } = require('../history.js');

/** `<startedAtMs 13 digits>-<sanitized run id>.json` (lib/history.js's runFileName): the name sorts in start order. */
const RUN_FILE = /^\d{13}-[A-Za-z0-9_.-]+\.json$/;

/**
 * @typedef {{
 *   id: string, project?: string, target?: string, configuration?: string | null, hash?: string,
 *   cacheable?: boolean, status?: string, code?: number, outcome?: string, reason?: string,
 *   durationMs?: number, bytes?: number, cacheMs?: number, savedMs?: number,
 *   producer?: { durationMs?: number, nxVersion?: string, storedAt?: string, runId?: string, host?: string },
 *   inputs?: { command?: string, nodes?: Record<string, string>, implicitDeps?: Record<string, string>,
 *     runtime?: Record<string, string> }
 * }} HistoryTask
 * @typedef {{
 *   format: string, version: number, runId: string, startedAt: string, endedAt?: string,
 *   command?: string, nxVersion?: string, location?: string, mode?: string,
 *   cache?: { errors?: { reason: string, count: number }[], [k: string]: unknown },
 *   savedMs?: number, tasks: HistoryTask[]
 * }} HistoryRun
 * @typedef {{ file: string, reason: string }} IgnoredFile
 */

/**
 * The history's runs directory.
 * @param {string} dataDir  the plugin data dir (lib/summary.js pluginDataDir)
 */
function runsDir(dataDir) {
  return path.join(dataDir, 'history', 'runs');
}

/**
 * Why `value` is not a version 1 run record, or undefined when it is one.
 * @param {unknown} value
 * @returns {string | undefined}
 */
function notARun(value) {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return 'not a JSON object';
  const v = /** @type {Record<string, unknown>} */ (value);
  if (v.format !== FORMAT) return `format is ${String(JSON.stringify(v.format)).slice(0, 40)}, not "${FORMAT}"`;
  if (v.version !== VERSION) return `version ${String(JSON.stringify(v.version)).slice(0, 40)} is not ${VERSION}`;
  if (typeof v.startedAt !== 'string' || Number.isNaN(Date.parse(v.startedAt))) return 'startedAt is not a time';
  if (!Array.isArray(v.tasks)) return 'tasks is not an array';
  if (typeof v.runId !== 'string') return 'runId is not a string';
  if (!isRunRecord(value)) return 'a task is not an object with a string id, hash and outcome';
  return undefined;
}

/**
 * The last `limit` runs of the history in start order (oldest first), read one file at a time as
 * `runs` is iterated (it can be iterated once), and the files ignored (filled while iterating).
 * @param {string} dataDir  the plugin data dir
 * @param {{ limit?: number }} [o]  at most this many runs (the newest), default all
 * @returns {{ runs: Iterable<HistoryRun>, ignored: IgnoredFile[], dir: string }}
 */
function readHistoryRuns(dataDir, o = {}) {
  const dir = runsDir(dataDir);
  /** @type {string[]} */
  let names;
  try {
    // The name starts with the start time in ms, 13 digits: name order is start order.
    names = fs.readdirSync(dir).filter((n) => RUN_FILE.test(n)).sort();
  } catch {
    names = [];
  }
  if (o.limit !== undefined && names.length > o.limit) names = names.slice(names.length - o.limit);
  /** @type {IgnoredFile[]} */
  const ignored = [];
  /** @returns {Generator<HistoryRun>} */
  function* runs() {
    for (const name of names) {
      const file = path.join(dir, name);
      /** @type {unknown} */
      let value;
      try {
        value = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch (e) {
        ignored.push({ file, reason: e instanceof SyntaxError ? 'not valid JSON' : /** @type {Error} */ (e).message });
        continue;
      }
      const why = notARun(value);
      if (why) {
        ignored.push({ file, reason: why });
        continue;
      }
      yield /** @type {HistoryRun} */ (value);
    }
  }
  return { runs: runs(), ignored, dir };
}

module.exports = { readHistoryRuns, runsDir, FORMAT, VERSION };
