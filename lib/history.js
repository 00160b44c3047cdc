'use strict';
// Run history: one JSON file per Nx run, `<plugin data dir>/history/runs/<started ms>-<run id>.json`,
// written atomically (temp file + rename), with one record per cacheable task (outcome, bytes, time
// in cache calls, duration, time saved, Nx's hash inputs). Bounded by a count of runs and a size of
// runs + filesets together: the oldest runs go first, then the filesets (`history/filesets/`, the
// per-file hashes lib/inputs.js keeps) that no kept run references any more. A file that is not a
// history record of this format is skipped by readers, with one notice per process.
//
// An append costs one file write and one small index write, never a walk over the history: the
// index (`history/index-<n>.json`) keeps every run file's and fileset's size, and when each fileset was
// last referenced by a run. It is a cache of what is on disk: the run files are listed at every
// append and the filesets every SWEEP_EVERY appends (or when the index is missing or unreadable),
// so files written by another process, or an index update lost to a concurrent run, are picked up.

const fs = require('node:fs');
const path = require('node:path');

const { pluginDataDir } = require('./summary.js');
const { SAFE_HASH, writeAtomically } = require('./fs-util.js');
const { isFilesetNodeKey: isFilesetKey } = require('./inputs.js');

const HISTORY_FORMAT = 'nx-open-cache-history';
const HISTORY_VERSION = 1;
const INDEX_FORMAT = 'nx-open-cache-history-index';

/** Defaults of the bounds (NX_OPEN_CACHE_HISTORY_RUNS, NX_OPEN_CACHE_HISTORY_MB). */
const DEFAULT_MAX_RUNS = 1000;
const DEFAULT_MAX_MB = 50;
/** The filesets directory is listed again after this many appends. */
const SWEEP_EVERY = 50;
/** A temp file left by a writer that died is removed once it is this old. */
const STALE_TEMP_MS = 3_600_000;

/** A run file name: 13-digit start time in ms, `-`, the sanitized run id. */
const RUN_FILE = /^(\d{13})-[A-Za-z0-9_.-]+\.json$/;

/**
 * @typedef {'remote-hit' | 'local-hit' | 'stored' | 'not-stored' | 'refused' | 'failed' | 'not-run'} Outcome
 * @typedef {{ durationMs: number, nxVersion?: string, storedAt?: string, runId?: string, host?: string }} Producer
 * @typedef {{
 *   id: string, project?: string, target?: string, configuration: string | null, hash: string,
 *   cacheable: true, status: string, code?: number, outcome: Outcome, reason?: string,
 *   durationMs?: number, bytes?: number, cacheMs?: number, savedMs?: number, producer?: Producer,
 *   inputs?: unknown
 * }} TaskRecord
 * @typedef {{
 *   format: 'nx-open-cache-history', version: 1, runId: string, startedAt: string, endedAt: string,
 *   command?: string, nxVersion?: string, location?: string, mode?: string,
 *   cache?: Record<string, unknown>, savedMs: number, tasks: TaskRecord[]
 * }} RunRecord
 * @typedef {{ hash: string, op: string, outcome: string, bytes: number, millis: number, reason?: string }} CacheEvent
 * @typedef {{
 *   format: typeof INDEX_FORMAT, version: 1, appends: number,
 *   runs: Record<string, number>, filesets: Record<string, [number, number]>,
 *   absent: Record<string, 1>
 * }} HistoryIndex
 */

/** Messages already printed by this process. @type {Set<string>} */
const said = new Set();

/**
 * Prints a notice once per process (on stderr: a command's stdout may be JSON).
 * @param {string} key
 * @param {string} message
 */
function noticeOnce(key, message) {
  if (said.has(key)) return;
  said.add(key);
  console.error(`nx-open-cache: ${message}`);
}

/**
 * The history directory of a workspace.
 * @param {string} root  the workspace root
 */
function historyDir(root) {
  return path.join(pluginDataDir(root), 'history');
}

/**
 * Whether runs are recorded: NX_OPEN_CACHE_HISTORY=off (or false, 0, no) turns it off.
 * @param {NodeJS.ProcessEnv} [env]
 */
function historyEnabled(env = process.env) {
  const v = (env.NX_OPEN_CACHE_HISTORY ?? '').trim().toLowerCase();
  return !['off', 'false', '0', 'no'].includes(v);
}

/**
 * A positive number from the environment, or the default with a notice naming the variable.
 * @param {NodeJS.ProcessEnv} env
 * @param {string} name
 * @param {number} dflt
 * @param {boolean} whole
 */
function positive(env, name, dflt, whole) {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return dflt;
  const n = Number(raw.trim());
  if (Number.isFinite(n) && n > 0 && (!whole || Number.isInteger(n))) return n;
  noticeOnce(`bound ${name}=${raw}`, `${name}=${JSON.stringify(raw)} is not a ${whole ? 'whole ' : ''}number above 0: using ${dflt}`);
  return dflt;
}

/**
 * The history's bounds: at most `maxRuns` run files and `maxBytes` of runs + filesets.
 * @param {NodeJS.ProcessEnv} [env]
 */
function historyBounds(env = process.env) {
  return {
    maxRuns: positive(env, 'NX_OPEN_CACHE_HISTORY_RUNS', DEFAULT_MAX_RUNS, true),
    maxBytes: Math.round(positive(env, 'NX_OPEN_CACHE_HISTORY_MB', DEFAULT_MAX_MB, false) * 1024 * 1024),
  };
}

/**
 * The file name of a run: `<start ms, 13 digits>-<run id, sanitized>.json`.
 * @param {string} startedAt  ISO time
 * @param {string} runId
 */
function runFileName(startedAt, runId) {
  const ms = Date.parse(startedAt);
  const start = String(Number.isFinite(ms) && ms >= 0 ? ms : Date.now()).padStart(13, '0').slice(-13);
  const id = runId.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 100) || 'run';
  return `${start}-${id}.json`;
}

/* ------------------------------------------------------------------------------------------------ */
/* the index                                                                                         */
/* ------------------------------------------------------------------------------------------------ */

/** @returns {HistoryIndex} */
function emptyIndex() {
  return { format: INDEX_FORMAT, version: 1, appends: 0, runs: {}, filesets: {}, absent: {} };
}

/** An index file: `index-<sequence number, 12 digits>.json`; the highest number is the current one. */
const INDEX_FILE = /^index-(\d{12})\.json$/;

/**
 * The current index and its sequence number; no index when missing or not of this format (it is
 * then rebuilt from the disk).
 * @param {string} dir
 * @returns {{ index?: HistoryIndex, seq: number, files: string[] }}  files: every index file seen
 */
function readIndex(dir) {
  /** @type {string[]} */ let files = [];
  try {
    files = fs.readdirSync(dir).filter((f) => INDEX_FILE.test(f)).sort();
  } catch {
    return { seq: 0, files };
  }
  const newest = files[files.length - 1];
  if (!newest) return { seq: 0, files };
  const seq = Number(/** @type {RegExpExecArray} */ (INDEX_FILE.exec(newest))[1]);
  try {
    const v = JSON.parse(fs.readFileSync(path.join(dir, newest), 'utf8'));
    if (v && v.format === INDEX_FORMAT && v.version === 1 && v.runs && typeof v.runs === 'object'
      && v.filesets && typeof v.filesets === 'object' && Number.isInteger(v.appends)) {
      if (!v.absent || typeof v.absent !== 'object') v.absent = {};
      return { index: v, seq, files };
    }
  } catch {
    // Unreadable: rebuilt.
  }
  return { seq, files };
}

/**
 * Writes the index under the next sequence number, then removes the older index files. A new name
 * each time, never a file replaced: on ext4, replacing a file (rename over it, or truncating it)
 * makes the kernel write its data out at once, which costs a few milliseconds per append.
 * @param {string} dir
 * @param {HistoryIndex} index
 * @param {{ seq: number, files: string[] }} previous
 */
function writeIndex(dir, index, previous) {
  const name = `index-${String((previous.seq + 1) % 1e12).padStart(12, '0')}.json`;
  writeAtomically(path.join(dir, name), JSON.stringify(index));
  for (const f of previous.files) if (f !== name) fs.rmSync(path.join(dir, f), { force: true });
}

/**
 * Lists the run files and brings the index's run sizes in line with them (a run written by another
 * process is measured once).
 * @param {string} runsDir
 * @param {HistoryIndex} index
 * @param {number} now
 * @returns {string[]} run file names, oldest first
 */
function syncRuns(runsDir, index, now) {
  /** @type {string[]} */ let names = [];
  try {
    names = fs.readdirSync(runsDir);
  } catch {
    names = [];
  }
  /** @type {Record<string, number>} */ const runs = {};
  /** @type {string[]} */ const kept = [];
  for (const name of names) {
    if (!RUN_FILE.test(name)) {
      if (name.endsWith('.tmp')) removeStaleTemp(path.join(runsDir, name), now);
      continue;
    }
    let bytes = index.runs[name];
    if (bytes === undefined) {
      const st = fs.statSync(path.join(runsDir, name), { throwIfNoEntry: false });
      if (!st) continue;
      bytes = st.size;
    }
    runs[name] = bytes;
    kept.push(name);
  }
  index.runs = runs;
  return kept.sort();
}

/**
 * @param {string} file
 * @param {number} now
 */
function removeStaleTemp(file, now) {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (st && now - st.mtimeMs > STALE_TEMP_MS) fs.rmSync(file, { force: true });
}

/**
 * Lists the filesets and brings the index in line. One it did not know (written since the last
 * sweep) is measured and counted as referenced now: which runs reference it is not known, and
 * dating it later than it is only keeps it longer, never drops it while a kept run needs it.
 * @param {string} filesetsDir
 * @param {HistoryIndex} index
 * @param {number} now
 */
function sweepFilesets(filesetsDir, index, now) {
  /** @type {string[]} */ let names = [];
  try {
    names = fs.readdirSync(filesetsDir);
  } catch {
    names = [];
  }
  /** @type {Record<string, [number, number]>} */ const filesets = {};
  for (const name of names) {
    if (!name.endsWith('.json')) {
      if (name.endsWith('.tmp')) removeStaleTemp(path.join(filesetsDir, name), now);
      continue;
    }
    const hash = name.slice(0, -'.json'.length);
    if (!SAFE_HASH.test(hash)) continue;
    const known = Object.hasOwn(index.filesets, hash) ? index.filesets[hash] : undefined;
    if (Array.isArray(known)) {
      filesets[hash] = known;
      continue;
    }
    const st = fs.statSync(path.join(filesetsDir, name), { throwIfNoEntry: false });
    if (st) filesets[hash] = [st.size, now];
  }
  index.filesets = filesets;
  index.absent = {};
}

/** Filesets an append measures at most (the rest are found by the next sweep). */
const MEASURE_PER_APPEND = 64;

/**
 * Marks the filesets a new run references as referenced now. One the index does not know yet
 * (written by this run) is measured, MEASURE_PER_APPEND at most; one that is not there is not
 * looked for again until the next sweep.
 * @param {string} filesetsDir
 * @param {HistoryIndex} index
 * @param {RunRecord} record
 * @param {number} now
 */
function touchFilesets(filesetsDir, index, record, now) {
  const known = index.filesets;
  const absent = index.absent;
  let budget = MEASURE_PER_APPEND;
  for (const t of record.tasks) {
    const nodes = /** @type {any} */ (t.inputs)?.nodes;
    if (!nodes || typeof nodes !== 'object') continue;
    for (const k in nodes) {
      const v = nodes[k];
      const entry = known[v];
      if (Array.isArray(entry)) {
        if (isFilesetKey(k)) entry[1] = now;
      } else if (budget > 0 && typeof v === 'string' && !Object.hasOwn(absent, v) && isFilesetKey(k) && SAFE_HASH.test(v)) {
        budget -= 1;
        const st = fs.statSync(path.join(filesetsDir, `${v}.json`), { throwIfNoEntry: false });
        if (st) known[v] = [st.size, now];
        else absent[v] = 1;
      }
    }
  }
}

/**
 * Drops the oldest runs until both bounds hold (the newest run is always kept), and with them the
 * filesets no kept run references: a fileset last referenced before the oldest kept run started.
 * @param {{ runsDir: string, filesetsDir: string }} dirs
 * @param {HistoryIndex} index
 * @param {string[]} names  run file names, oldest first
 * @param {{ maxRuns: number, maxBytes: number }} bounds
 * @returns {{ runs: number, filesets: number }} how many were dropped
 */
function enforceBounds(dirs, index, names, bounds) {
  let total = 0;
  for (const n of names) total += index.runs[n];
  const filesets = Object.entries(index.filesets).sort((a, b) => a[1][1] - b[1][1]);
  for (const [, [bytes]] of filesets) total += bytes;
  let dropRuns = 0;
  let dropSets = 0;
  while (names.length - dropRuns > 1 && (names.length - dropRuns > bounds.maxRuns || total > bounds.maxBytes)) {
    const name = names[dropRuns];
    fs.rmSync(path.join(dirs.runsDir, name), { force: true });
    total -= index.runs[name];
    delete index.runs[name];
    dropRuns += 1;
    const cutoff = Number(/** @type {RegExpExecArray} */ (RUN_FILE.exec(names[dropRuns]))[1]);
    while (dropSets < filesets.length && filesets[dropSets][1][1] < cutoff) {
      const [hash, [bytes]] = filesets[dropSets];
      fs.rmSync(path.join(dirs.filesetsDir, `${hash}.json`), { force: true });
      total -= bytes;
      delete index.filesets[hash];
      dropSets += 1;
    }
  }
  return { runs: dropRuns, filesets: dropSets };
}

/* ------------------------------------------------------------------------------------------------ */
/* writing and reading                                                                               */
/* ------------------------------------------------------------------------------------------------ */

/** The index lock is taken over from a writer that holds it longer than this (it died). */
const STALE_LOCK_MS = 5_000;
/** An append waits at most this long for another process's index update, then leaves the index alone. */
const LOCK_WAIT_MS = 1_000;

/**
 * Takes the history's index lock (`history/index.lock`, created exclusively); false when another
 * process holds it for longer than `waitMs`. A lock older than STALE_LOCK_MS is removed first.
 * @param {string} lockFile
 * @param {number} waitMs
 */
function takeLock(lockFile, waitMs) {
  const until = Date.now() + waitMs;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let tries = 0; tries < 10_000; tries++) {
    try {
      fs.closeSync(fs.openSync(lockFile, 'wx'));
      return true;
    } catch (e) {
      if (/** @type {NodeJS.ErrnoException} */ (e).code !== 'EEXIST') throw e;
    }
    const st = fs.statSync(lockFile, { throwIfNoEntry: false });
    if (st && Date.now() - st.mtimeMs > STALE_LOCK_MS) {
      fs.rmSync(lockFile, { force: true });
      continue;
    }
    if (Date.now() >= until) return false;
    Atomics.wait(sleeper, 0, 0, 5);
  }
  return false;
}

/**
 * Appends one run to the workspace's history and enforces the bounds. The index (read, updated,
 * written) is changed under an exclusive lock file; when another process holds it too long, the
 * run file is still written and the index left to the next append (`indexed: false`). `filesets`:
 * the fileset files this run wrote (lib/inputs.js captureFilesets), counted without a stat.
 * Throws on a failed write (the plugin turns that into one notice; recording never fails a run).
 * @param {string} root  the workspace root
 * @param {RunRecord} record
 * @param {{ env?: NodeJS.ProcessEnv, now?: number, filesets?: readonly { hash: string, bytes: number }[], lockWaitMs?: number }} [opts]
 * @returns {{ file: string, bytes: number, dropped: { runs: number, filesets: number }, indexed: boolean }}
 */
function appendRun(root, record, opts = {}) {
  const env = opts.env || process.env;
  const now = opts.now ?? Date.now();
  const dir = historyDir(root);
  const runsDir = path.join(dir, 'runs');
  const filesetsDir = path.join(dir, 'filesets');
  fs.mkdirSync(runsDir, { recursive: true });
  const name = runFileName(record.startedAt, record.runId);
  const file = path.join(runsDir, name);
  const text = JSON.stringify(record);
  writeAtomically(file, text);
  const bytes = Buffer.byteLength(text);

  const lockFile = path.join(dir, 'index.lock');
  if (!takeLock(lockFile, opts.lockWaitMs ?? LOCK_WAIT_MS)) return { file, bytes, dropped: { runs: 0, filesets: 0 }, indexed: false };
  try {
    const current = readIndex(dir);
    const index = current.index || emptyIndex();
    index.runs[name] = bytes;
    const names = syncRuns(runsDir, index, now);
    if (!current.index || index.appends % SWEEP_EVERY === 0) {
      sweepFilesets(filesetsDir, index, now);
      sweepTemp(dir, now);
    }
    for (const f of opts.filesets || []) {
      if (SAFE_HASH.test(f.hash) && Number.isFinite(f.bytes)) {
        index.filesets[f.hash] = [f.bytes, now];
        delete index.absent[f.hash];
      }
    }
    touchFilesets(filesetsDir, index, record, now);
    const dropped = enforceBounds({ runsDir, filesetsDir }, index, names, historyBounds(env));
    index.appends += 1;
    writeIndex(dir, index, current);
    return { file, bytes, dropped, indexed: true };
  } finally {
    fs.rmSync(lockFile, { force: true });
  }
}

/**
 * Removes temp files a writer that died left in `history/` (index writes) once STALE_TEMP_MS old.
 * @param {string} dir
 * @param {number} now
 */
function sweepTemp(dir, now) {
  /** @type {string[]} */ let names = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) if (n.endsWith('.tmp')) removeStaleTemp(path.join(dir, n), now);
}

/**
 * Whether `v` is a run record of this format and version.
 * @param {any} v
 * @returns {v is RunRecord}
 */
function isRunRecord(v) {
  return !!v && typeof v === 'object' && v.format === HISTORY_FORMAT && v.version === HISTORY_VERSION
    && typeof v.runId === 'string' && typeof v.startedAt === 'string' && Array.isArray(v.tasks)
    && v.tasks.every((/** @type {any} */ t) => t && typeof t === 'object' && typeof t.id === 'string'
      && typeof t.hash === 'string' && typeof t.outcome === 'string');
}

/**
 * The workspace's recorded runs, newest first (at most `limit`). Files that are not run records of
 * this format (corrupt, cut short, another version, anything else in the directory) are skipped,
 * with one notice per process.
 * @param {string} root
 * @param {{ limit?: number }} [opts]
 * @returns {RunRecord[]}
 */
function readRuns(root, opts = {}) {
  const limit = opts.limit ?? Infinity;
  const runsDir = path.join(historyDir(root), 'runs');
  /** @type {string[]} */ let names;
  try {
    names = fs.readdirSync(runsDir);
  } catch {
    return [];
  }
  /** @type {RunRecord[]} */ const out = [];
  /** @type {string[]} */ const skipped = [];
  for (const name of names.filter((n) => n.endsWith('.json')).sort().reverse()) {
    if (out.length >= limit) break;
    let value;
    try {
      value = RUN_FILE.test(name) ? JSON.parse(fs.readFileSync(path.join(runsDir, name), 'utf8')) : undefined;
    } catch {
      value = undefined;
    }
    if (isRunRecord(value)) out.push(value);
    else skipped.push(name);
  }
  if (skipped.length) {
    noticeOnce('skipped', `ignoring ${skipped.length === 1 ? 'a file' : `${skipped.length} files`} in ${runsDir} that ${skipped.length === 1 ? 'is' : 'are'} not nx-open-cache run history (${skipped.slice(0, 3).join(', ')}${skipped.length > 3 ? ', ...' : ''})`);
  }
  return out;
}

/* ------------------------------------------------------------------------------------------------ */
/* building a record                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/**
 * The proxy's events of one hash, gathered: the last lookup and the last upload, with the time
 * spent in both.
 * @param {readonly CacheEvent[]} events
 * @returns {Map<string, { get?: CacheEvent, put?: CacheEvent, millis: number }>}
 */
function eventsByHash(events) {
  /** @type {Map<string, { get?: CacheEvent, put?: CacheEvent, millis: number }>} */ const m = new Map();
  for (const e of events) {
    if (!e || typeof e.hash !== 'string') continue;
    let entry = m.get(e.hash);
    if (!entry) m.set(e.hash, (entry = { millis: 0 }));
    if (e.op === 'get') entry.get = e;
    else if (e.op === 'put') entry.put = e;
    if (Number.isFinite(e.millis)) entry.millis += e.millis;
  }
  return m;
}

/**
 * Why a task that ran was not stored when the proxy has no upload of it.
 * @param {{ mode?: string, note?: string } | undefined} summary
 * @param {boolean} eventsDropped
 */
function notUploadedReason(summary, eventsDropped) {
  if (!summary) return 'no summary of this run: its cache proxy was gone';
  if (summary.mode === 'no-cache') return 'remote cache not used (no-cache)';
  if (summary.mode === 'stayed out') return summary.note || 'the plugin stayed out of this run';
  if (summary.mode === 'read-only') return 'read-only mode: nothing is stored';
  if (eventsDropped) return "beyond the proxy's per-task record limit: not known";
  return 'Nx did not upload it';
}

/**
 * What happened to one task, from Nx's status and the proxy's events of its hash.
 * @param {string} status
 * @param {{ get?: CacheEvent, put?: CacheEvent } | undefined} ev
 * @param {{ events: boolean, eventsDropped: boolean, summary?: { mode?: string, note?: string, stored?: number, alreadyStored?: number } }} run
 * @returns {{ outcome: Outcome, reason?: string, bytes?: number }}
 */
function taskOutcome(status, ev, run) {
  switch (status) {
    case 'remote-cache':
      return { outcome: 'remote-hit', bytes: ev?.get?.bytes };
    case 'local-cache':
    case 'local-cache-kept-existing':
      return { outcome: 'local-hit' };
    case 'failure':
      return { outcome: 'failed' };
    case 'skipped':
    case 'stopped':
      return { outcome: 'not-run' };
    case 'success':
      break;
    default:
      return { outcome: 'not-run', reason: `Nx status ${JSON.stringify(status)}` };
  }
  if (!run.events) {
    const s = run.summary;
    if (s && s.mode === 'read-write' && (s.stored || 0) + (s.alreadyStored || 0) > 0) {
      return { outcome: 'stored', reason: 'assumed from the run counts: this proxy gives no per-task results' };
    }
    const why = notUploadedReason(s, false);
    return { outcome: 'not-stored', reason: why === 'Nx did not upload it' ? 'this proxy gives no per-task results and the run stored nothing' : why };
  }
  const put = ev?.put;
  if (!put) return { outcome: 'not-stored', reason: notUploadedReason(run.summary, run.eventsDropped) };
  switch (put.outcome) {
    case 'stored':
      return { outcome: 'stored', bytes: put.bytes };
    case 'already-stored':
      return { outcome: 'stored', reason: 'already stored by another run' };
    case 'refused':
      return { outcome: 'refused', reason: put.reason || 'refused by the proxy' };
    case 'read-only':
      return { outcome: 'not-stored', reason: put.reason || 'read-only mode: nothing is stored' };
    default:
      return { outcome: 'not-stored', reason: put.reason || `upload ${put.outcome}` };
  }
}

/** The summary's counters kept in a run record (the per-hash events are in its tasks). */
const CACHE_FIELDS = [
  'hits', 'misses', 'stored', 'alreadyStored', 'refusedWrites', 'bytesDown', 'bytesUp', 'cacheMillis',
  'errorCount', 'refusedCount', 'routineCount', 'errors', 'refusals', 'metaReads', 'metaWrites', 'eventsDropped',
];

/** Options whose value is a secret: `--token`, `--*-token`, anything with `secret` or `password`. */
const SECRET_OPTION = /(--?(?:[A-Za-z0-9_-]*token|[A-Za-z0-9_-]*secret[A-Za-z0-9_-]*|[A-Za-z0-9_-]*password[A-Za-z0-9_-]*))(=|\s+)(?:"[^"]*"|'[^']*'|\S+)/gi;

/**
 * A command line as kept (history, summaries): the values of secret-looking options replaced by
 * `***` (`--token=abc` -> `--token=***`, `--db-password abc` -> `--db-password ***`).
 * @template {string | undefined} T
 * @param {T} command
 * @returns {T}
 */
function redactCommand(command) {
  if (typeof command !== 'string') return command;
  return /** @type {T} */ (command.replace(SECRET_OPTION, (_m, opt, sep) => `${opt}${sep === '=' ? '=' : ' '}***`));
}

/**
 * @param {unknown} start
 * @param {unknown} end
 */
function duration(start, end) {
  return typeof start === 'number' && typeof end === 'number' && end >= start ? Math.round(end - start) : undefined;
}

/**
 * A run's history record, from the hook's context (its `taskResults`: only cacheable tasks, those
 * with `task.cache !== false`), the run's summary (undefined when there is none) and what the end
 * of the run learned: the proxy's per-hash events (optional: without them a task's outcome comes
 * from Nx's status and the run's counts, and `reason` says so) and the producers of the artifacts
 * this run restored (from their metadata, lib/meta.js).
 * @param {{ id?: string, argv?: readonly string[], startTime?: number, endTime?: number, taskResults?: Record<string, any> }} context
 * @param {(import('./summary.js').RunSummary & { events?: CacheEvent[], eventsDropped?: number }) | undefined} summary
 * @param {{ events?: readonly CacheEvent[], producers?: Map<string, Producer>, nxVersion?: string, now?: number }} [extras]
 * @returns {RunRecord}
 */
function buildRunRecord(context, summary, extras = {}) {
  const eventList = extras.events ?? summary?.events;
  const byHash = eventsByHash(eventList || []);
  const run = { events: Array.isArray(eventList), eventsDropped: (summary?.eventsDropped || 0) > 0, summary };
  /** @type {TaskRecord[]} */ const tasks = [];
  let savedMs = 0;
  for (const [id, result] of Object.entries(context.taskResults || {})) {
    const task = result?.task;
    if (!task || task.cache === false || typeof task.hash !== 'string') continue;
    const ev = byHash.get(task.hash);
    const { outcome, reason, bytes } = taskOutcome(String(result.status), ev, run);
    const durationMs = duration(task.startTime, task.endTime);
    /** @type {TaskRecord} */
    const t = {
      id: typeof task.id === 'string' ? task.id : id,
      project: task.target?.project,
      target: task.target?.target,
      configuration: task.target?.configuration ?? null,
      hash: task.hash,
      cacheable: true,
      status: String(result.status),
      code: typeof result.code === 'number' ? result.code : undefined,
      outcome,
      reason,
      durationMs,
      bytes,
      cacheMs: ev ? ev.millis : undefined,
    };
    const producer = outcome === 'remote-hit' ? extras.producers?.get(task.hash) : undefined;
    if (producer) {
      t.producer = producer;
      if (durationMs !== undefined) {
        t.savedMs = Math.max(0, Math.round(producer.durationMs - durationMs));
        savedMs += t.savedMs;
      }
    }
    t.inputs = task.hashDetails;
    tasks.push(t);
  }
  const now = extras.now ?? Date.now();
  /** @type {Record<string, unknown> | undefined} */ let cache;
  if (summary) {
    cache = {};
    for (const k of CACHE_FIELDS) if (/** @type {any} */ (summary)[k] !== undefined) cache[k] = /** @type {any} */ (summary)[k];
  }
  return {
    format: HISTORY_FORMAT,
    version: HISTORY_VERSION,
    runId: context.id ?? summary?.runId ?? 'default',
    startedAt: typeof context.startTime === 'number' ? new Date(context.startTime).toISOString() : summary?.startedAt ?? new Date(now).toISOString(),
    endedAt: typeof context.endTime === 'number' ? new Date(context.endTime).toISOString() : summary?.endedAt ?? new Date(now).toISOString(),
    command: redactCommand(context.argv ? context.argv.slice(2).join(' ') : summary?.command),
    nxVersion: extras.nxVersion,
    location: summary?.location,
    mode: summary?.mode,
    cache,
    savedMs,
    tasks,
  };
}

/** The workspace's Nx version by root, read once per process. @type {Map<string, string | undefined>} */
const nxVersions = new Map();

/**
 * The version of the Nx installed in a workspace (its `nx/package.json`), undefined when not found.
 * @param {string} root
 * @returns {string | undefined}
 */
function nxVersionOf(root) {
  if (!nxVersions.has(root)) {
    let version;
    try {
      const file = require.resolve('nx/package.json', { paths: [root] });
      const v = JSON.parse(fs.readFileSync(file, 'utf8')).version;
      version = typeof v === 'string' ? v : undefined;
    } catch {
      version = undefined;
    }
    nxVersions.set(root, version);
  }
  return nxVersions.get(root);
}

/**
 * Whether any task of the record has a time-saved figure (a remote hit whose artifact carried
 * metadata): the summary shows "saved" only then.
 * @param {RunRecord} record
 */
function hasSavedFigure(record) {
  return record.tasks.some((t) => t.savedMs !== undefined);
}

/* ------------------------------------------------------------------------------------------------ */
/* `nx-open-cache history`                                                                           */
/* ------------------------------------------------------------------------------------------------ */

const HISTORY_HELP = `Usage: nx-open-cache history [--limit <n>] [--tasks] [--json]

The workspace's recorded Nx runs, newest first (default: the last 10): when, the command, the
outcome of their cacheable tasks and the time their hits saved.
  --limit <n>  how many runs (default 10)
  --tasks      one line per task: outcome, duration, time saved, why not stored
  --json       the run records as JSON (every field, the tasks' hash inputs included)
Recorded under <workspace data>/nx-open-cache/history/ (at most NX_OPEN_CACHE_HISTORY_RUNS runs,
default ${DEFAULT_MAX_RUNS}, and NX_OPEN_CACHE_HISTORY_MB, default ${DEFAULT_MAX_MB}); NX_OPEN_CACHE_HISTORY=off stops recording.`;

/** The words of an outcome in the listing, one and many. @type {Record<string, [string, string]>} */
const OUTCOME_WORDS = {
  'remote-hit': ['remote hit', 'remote hits'],
  'local-hit': ['local hit', 'local hits'],
  stored: ['stored', 'stored'],
  'not-stored': ['not stored', 'not stored'],
  refused: ['refused', 'refused'],
  failed: ['failed', 'failed'],
  'not-run': ['not run', 'not run'],
};

/**
 * One run as the listing shows it.
 * @param {RunRecord} r
 * @param {(ms: number) => string} saved
 */
function runLine(r, saved) {
  /** @type {Map<string, number>} */ const counts = new Map();
  for (const t of r.tasks) counts.set(t.outcome, (counts.get(t.outcome) || 0) + 1);
  const parts = [...counts].map(([o, n]) => `${n} ${(OUTCOME_WORDS[o] || [o, o])[n === 1 ? 0 : 1]}`);
  const savedPart = hasSavedFigure(r) ? `, saved ${saved(r.savedMs)}` : '';
  return `${r.startedAt}  ${r.command ? `nx ${r.command}` : '(no command)'}: ${r.tasks.length} ${r.tasks.length === 1 ? 'task' : 'tasks'}${parts.length ? ` (${parts.join(', ')})` : ''}${savedPart}  [run ${r.runId}]`;
}

/**
 * One task as the listing shows it.
 * @param {TaskRecord} t
 */
function taskLine(t) {
  const secs = (/** @type {number} */ ms) => `${(ms / 1000).toFixed(1)} s`;
  /** @type {string[]} */ const parts = [t.outcome];
  if (t.durationMs !== undefined) parts.push(secs(t.durationMs));
  if (t.savedMs !== undefined) parts.push(`saved ${secs(t.savedMs)}`);
  if (t.producer) parts.push(`produced in ${secs(t.producer.durationMs)}${t.producer.host ? ` on ${require('./text.js').clean(t.producer.host)}` : ''}`);
  if (t.reason) parts.push(t.reason);
  return `    ${t.id}  ${parts.join(', ')}`;
}

/**
 * `history [--limit <n>] [--tasks] [--json]`: the recorded runs, newest first.
 * @param {string} root
 * @param {string[]} args
 * @returns {number}
 */
function historyCommand(root, args) {
  const { commandArgs } = require('./args.js');
  const { formatSaved } = require('./summary.js');
  const parsed = commandArgs({ command: 'history', usage: HISTORY_HELP, errorCode: 1 },
    args, { limit: { type: 'string' }, tasks: { type: 'boolean' }, json: { type: 'boolean' } });
  if (typeof parsed === 'number') return parsed;
  const rawLimit = parsed.values.limit;
  const limit = rawLimit === undefined ? 10 : Number(rawLimit);
  if (!Number.isInteger(limit) || limit < 1) {
    console.error(`nx-open-cache history: --limit ${JSON.stringify(rawLimit)} is not a whole number above 0`);
    return 1;
  }
  const runs = readRuns(root, { limit });
  if (parsed.values.json === true) {
    console.log(JSON.stringify(runs, null, 2));
    return 0;
  }
  if (runs.length === 0) {
    console.log(`nx-open-cache: no runs recorded yet in ${path.join(historyDir(root), 'runs')}${historyEnabled() ? '' : ' (NX_OPEN_CACHE_HISTORY=off)'}`);
    return 0;
  }
  for (const r of runs) {
    console.log(runLine(r, formatSaved));
    if (parsed.values.tasks === true) for (const t of r.tasks) console.log(taskLine(t));
  }
  return 0;
}

module.exports = {
  redactCommand,
  historyCommand,
  HISTORY_FORMAT, HISTORY_VERSION, DEFAULT_MAX_RUNS, DEFAULT_MAX_MB,
  historyDir, historyEnabled, historyBounds, runFileName,
  appendRun, readRuns, buildRunRecord, hasSavedFigure, nxVersionOf, isRunRecord, taskOutcome,
};
