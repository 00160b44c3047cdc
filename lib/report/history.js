'use strict';
/**
 * The report's one reader of the run history (`<pluginDataDir>/history/runs/*.json`, the version 1
 * record of lib/history.js). Kept to one function so that it can be swapped for lib/history.js's
 * own reader: the report needs the run records in start order, and which files were ignored.
 *
 * A file is used when it is JSON with `format: "nx-open-cache-history"`, `version: 1`, a
 * `startedAt` time and a `tasks` array; anything else (a partial write, another tool's file, a
 * newer version) is ignored and counted, never an error. Optional fields of a run or a task may be
 * missing: the report model checks every value it uses.
 */

const fs = require('node:fs');
const path = require('node:path');

const FORMAT = 'nx-open-cache-history';
const VERSION = 1;
/** `<startedAtMs 13 digits>-<sanitized run id>.json`: the name sorts in start order. */
const RUN_FILE = /^\d{13}-.+\.json$/;

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
  if (v.format !== FORMAT) return `format is ${JSON.stringify(v.format)}, not "${FORMAT}"`;
  if (v.version !== VERSION) return `version ${JSON.stringify(v.version)} is not ${VERSION}`;
  if (typeof v.startedAt !== 'string' || Number.isNaN(Date.parse(v.startedAt))) return 'startedAt is not a time';
  if (!Array.isArray(v.tasks)) return 'tasks is not an array';
  return undefined;
}

/**
 * The last `limit` runs of the history in start order (oldest first), read one file at a time as
 * `runs` is iterated (it can be iterated once), and the files ignored (filled while iterating).
 * Tasks that are not objects with a string `id` are dropped from a run.
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
      const run = /** @type {HistoryRun} */ (value);
      run.tasks = run.tasks.filter((t) => t && typeof t === 'object' && typeof t.id === 'string');
      yield run;
    }
  }
  return { runs: runs(), ignored, dir };
}

module.exports = { readHistoryRuns, runsDir, FORMAT, VERSION };
