'use strict';
/**
 * The report's figures, computed from history runs (lib/report/history.js) and rendered by
 * lib/report/html.js and lib/report/text.js. Pure: no I/O, no clock (the caller passes `now`).
 *
 * Definitions (the docs say the same):
 * - a lookup is a cacheable task that Nx looked up in the cache: every outcome except `not-run`;
 * - a hit is a `remote-hit` or a `local-hit`; a miss is `stored`, `not-stored`, `refused` or
 *   `failed` (the task ran);
 * - the hit rate is hits / lookups;
 * - time saved is the sum of the hits' `savedMs` (the producer's run time minus the restore time);
 * - a miss's changed inputs are the hash inputs (`inputs.nodes`, the command, runtime inputs,
 *   implicit dependencies) that differ from the same task's previous record in the history; a miss
 *   whose hash equals the previous record's had no changed input: that artifact was not available
 *   (not stored, refused, or removed since).
 *
 * Every value read from the history is checked (a run may lack optional fields, a file may have
 * been edited): numbers must be finite and >= 0, strings strings; anything else counts as absent.
 */

/** @typedef {import('./history.js').HistoryRun} HistoryRun */
/** @typedef {import('./history.js').HistoryTask} HistoryTask */

const HITS = new Set(['remote-hit', 'local-hit']);
const MISSES = new Set(['stored', 'not-stored', 'refused', 'failed']);
/** Rows kept per table / chart. */
const TOP = 12;

/**
 * @typedef {{ lookups: number, hits: number, remoteHits: number, localHits: number, misses: number,
 *   failed: number, savedMs: number, timedHits: number }} Counts  timedHits: hits with a savedMs
 * @typedef {Counts & { name: string, hitRate: number | null }} GroupRow
 * @typedef {Counts & { runId: string, startedAt: string, command: string, durationMs: number | null,
 *   hitRate: number | null, tasks: number }} RunRow
 * @typedef {{ key: string, label: string, count: number }} InputCount
 * @typedef {{ task: string, records: number, lookups: number, misses: number, hitRate: number | null,
 *   lastMiss: string, compared: number, unchanged: number, topInput: InputCount | null,
 *   otherInputs: number }} MissRow
 * @typedef {{ task: string, hash: string, bytes: number, latestBytes: number, artifacts: number,
 *   lastSeen: string }} ArtifactRow  a task's largest artifact, its latest, how many it had
 * @typedef {{ kind: string, reason: string, count: number, unit: string, lastSeen: string,
 *   example: string }} ProblemRow
 * @typedef {{
 *   workspace: string, generatedAt: string, first: string | null, last: string | null,
 *   totals: Counts & { runs: number, tasks: number, hitRate: number | null, notRun: number,
 *     bytesDown: number, bytesUp: number, cacheMs: number, cacheErrors: number, refused: number },
 *   runs: RunRow[], projects: GroupRow[], targets: GroupRow[], projectsMore: number,
 *   targetsMore: number, missing: MissRow[], artifacts: ArtifactRow[], problems: ProblemRow[], problemsMore: number,
 *   ignoredFiles: number
 * }} ReportModel
 */

/** @param {unknown} v @returns {number | undefined} */
function num(v) {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

/** @param {unknown} v @returns {string | undefined} */
function str(v) {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** @returns {Counts} */
function zero() {
  return { lookups: 0, hits: 0, remoteHits: 0, localHits: 0, misses: 0, failed: 0, savedMs: 0, timedHits: 0 };
}

/** @param {Counts} c */
function rate(c) {
  return c.lookups ? c.hits / c.lookups : null;
}

/**
 * The task's outcome; derived from Nx's status for a record without one.
 * @param {HistoryTask} t
 * @returns {string}
 */
function outcomeOf(t) {
  const o = str(t.outcome);
  if (o) return o;
  const s = str(t.status) ?? '';
  if (s === 'remote-cache') return 'remote-hit';
  if (s.startsWith('local-cache')) return 'local-hit';
  if (s === 'failure') return 'failed';
  if (s === 'success') return 'not-stored';
  return 'not-run';
}

/**
 * `lib-a:build:production` -> project and target, from the record or its id.
 * @param {HistoryTask} t
 */
function projectTarget(t) {
  const [p, tg] = t.id.split(':');
  return { project: str(t.project) ?? p ?? t.id, target: str(t.target) ?? tg ?? '(no target)' };
}

/**
 * Adds one task record to a group's counts.
 * @param {Counts} c
 * @param {HistoryTask} t
 * @param {string} outcome
 */
function count(c, t, outcome) {
  if (t.cacheable === false || outcome === 'not-run' || (!HITS.has(outcome) && !MISSES.has(outcome))) return;
  c.lookups += 1;
  if (HITS.has(outcome)) {
    c.hits += 1;
    if (outcome === 'remote-hit') c.remoteHits += 1;
    else c.localHits += 1;
    const saved = num(t.savedMs);
    if (saved !== undefined) {
      c.savedMs += saved;
      c.timedHits += 1;
    }
  } else {
    c.misses += 1;
    if (outcome === 'failed') c.failed += 1;
  }
}

/**
 * A hash input key in words: `npm:react` -> `npm package react`, `lib-a:packages/lib-a/**` ->
 * `lib-a files (packages/lib-a/**)`.
 * @param {string} key
 */
function describeInput(key) {
  if (key === 'command') return 'the command';
  if (key === '(unrecorded)') return 'an input the history does not record (e.g. a dependency\'s outputs)';
  if (key === 'AllExternalDependencies') return 'external dependencies (the lockfile)';
  const colon = key.indexOf(':');
  if (colon < 0) return key;
  const head = key.slice(0, colon);
  const rest = key.slice(colon + 1);
  if (head === 'npm') return `npm package ${rest}`;
  if (head === 'env') return `environment variable ${rest}`;
  if (head === 'runtime') return `runtime input \`${rest}\``;
  if (head === 'implicitDep') return `implicit dependency ${rest}`;
  if (head === 'workspace') return `workspace files ${rest}`;
  if (rest === 'ProjectConfiguration') return `${head} project configuration`;
  if (rest === 'TsConfig') return `${head} tsconfig paths`;
  return `${head} files (${rest})`;
}

/**
 * The hash inputs of `a` and `b` that differ (keys of `inputs.nodes`, `command`, `runtime:<k>`,
 * `implicitDep:<k>`); undefined when either record has no inputs.
 * @param {HistoryTask} a
 * @param {HistoryTask} b
 * @returns {string[] | undefined}
 */
function changedInputs(a, b) {
  const ia = a.inputs;
  const ib = b.inputs;
  if (!ia || !ib || typeof ia !== 'object' || typeof ib !== 'object') return undefined;
  /** @type {string[]} */
  const changed = [];
  if (ia.command !== ib.command) changed.push('command');
  /** @type {[string, unknown, unknown][]} */
  const maps = [['', ia.nodes, ib.nodes], ['runtime:', ia.runtime, ib.runtime], ['implicitDep:', ia.implicitDeps, ib.implicitDeps]];
  for (const [prefix, ma, mb] of maps) {
    const oa = ma && typeof ma === 'object' ? /** @type {Record<string, unknown>} */ (ma) : {};
    const ob = mb && typeof mb === 'object' ? /** @type {Record<string, unknown>} */ (mb) : {};
    const keys = new Set([...Object.keys(oa), ...Object.keys(ob)]);
    for (const k of keys) {
      const has = Object.prototype.hasOwnProperty;
      const va = has.call(oa, k) ? oa[k] : undefined;
      const vb = has.call(ob, k) ? ob[k] : undefined;
      if (va !== vb) changed.push(prefix + k);
    }
  }
  return changed.sort();
}

/**
 * @param {Map<string, Counts>} groups
 * @returns {{ rows: GroupRow[], more: number }}
 */
function groupRows(groups) {
  const rows = [...groups].map(([name, c]) => ({ name, ...c, hitRate: rate(c) }))
    .filter((r) => r.lookups > 0)
    .sort((a, b) => b.savedMs - a.savedMs || b.lookups - a.lookups || (a.name < b.name ? -1 : 1));
  return { rows: rows.slice(0, TOP), more: Math.max(0, rows.length - TOP) };
}

/**
 * @template V
 * @param {Map<string, V>} map
 * @param {string} key
 * @param {() => V} make
 * @returns {V}
 */
function entry(map, key, make) {
  let v = map.get(key);
  if (v === undefined) {
    v = make();
    map.set(key, v);
  }
  return v;
}

/**
 * The report's figures.
 * @param {Iterable<HistoryRun>} runs  in start order; read once, so a generator keeps only one run
 *   in memory at a time
 * @param {{ workspace: string, now: Date, ignoredFiles?: number }} o
 * @returns {ReportModel}
 */
function buildReport(runs, o) {
  const totals = { ...zero(), runs: 0, tasks: 0, notRun: 0, bytesDown: 0, bytesUp: 0, cacheMs: 0, cacheErrors: 0, refused: 0 };
  /** @type {RunRow[]} */
  const runRows = [];
  /** @type {Map<string, Counts>} */
  const projects = new Map();
  /** @type {Map<string, Counts>} */
  const targets = new Map();
  /**
   * @typedef {{ records: number, c: Counts, lastMiss: string, compared: number, unchanged: number,
   *   inputs: Map<string, number>, prev?: HistoryTask }} TaskAcc
   * @type {Map<string, TaskAcc>}
   */
  const tasks = new Map();
  /** @type {Map<string, ArtifactRow & { hashes: Set<string> }>} */
  const artifacts = new Map();
  /** @type {Map<string, ProblemRow>} */
  const problems = new Map();

  /**
   * @param {string} kind @param {string} reason @param {number} n @param {string} unit
   * @param {string} when @param {string} example
   */
  const problem = (kind, reason, n, unit, when, example) => {
    const p = entry(problems, `${kind}\u0000${reason}`, () => ({ kind, reason, count: 0, unit, lastSeen: when, example }));
    p.count += n;
    p.lastSeen = when;
  };

  for (const run of runs) {
    totals.runs += 1;
    const when = run.startedAt;
    const rc = zero();
    for (const t of run.tasks) {
      const outcome = outcomeOf(t);
      const { project, target } = projectTarget(t);
      totals.tasks += 1;
      if (outcome === 'not-run') totals.notRun += 1;
      count(totals, t, outcome);
      count(rc, t, outcome);
      count(entry(projects, project, zero), t, outcome);
      count(entry(targets, target, zero), t, outcome);
      totals.cacheMs += num(t.cacheMs) ?? 0;
      const bytes = num(t.bytes);
      if (bytes !== undefined) {
        if (HITS.has(outcome)) totals.bytesDown += bytes;
        if (outcome === 'stored') totals.bytesUp += bytes;
        const hash = str(t.hash);
        if (hash && bytes > 0) {
          const a = entry(artifacts, t.id, () => ({ task: t.id, hash, bytes, latestBytes: bytes, artifacts: 0, lastSeen: when, hashes: new Set() }));
          if (bytes > a.bytes) {
            a.bytes = bytes;
            a.hash = hash;
          }
          a.latestBytes = bytes;
          a.lastSeen = when;
          a.hashes.add(hash);
        }
      }
      const reason = str(t.reason);
      if (outcome === 'refused') {
        totals.refused += 1;
        problem('refused', reason ?? 'no reason recorded', 1, 'task', when, t.id);
      } else if (outcome === 'not-stored' && reason) {
        problem('not stored', reason, 1, 'task', when, t.id);
      }
      if (t.cacheable === false) continue;
      const tr = entry(tasks, t.id, () => /** @type {TaskAcc} */ ({ records: 0, c: zero(), lastMiss: '', compared: 0, unchanged: 0, inputs: new Map() }));
      tr.records += 1;
      count(tr.c, t, outcome);
      if (MISSES.has(outcome)) {
        tr.lastMiss = when;
        if (tr.prev) {
          const same = str(t.hash) !== undefined && t.hash === tr.prev.hash;
          const changed = same ? [] : changedInputs(tr.prev, t);
          if (same) {
            tr.compared += 1;
            tr.unchanged += 1;
          } else if (changed) {
            tr.compared += 1;
            for (const k of changed.length ? changed : ['(unrecorded)']) tr.inputs.set(k, (tr.inputs.get(k) ?? 0) + 1);
          }
        }
      }
      if (outcome !== 'not-run') tr.prev = t;
    }
    for (const e of Array.isArray(run.cache?.errors) ? run.cache.errors : []) {
      const n = num(e?.count) ?? 0;
      const reason = str(e?.reason);
      if (!reason || !n) continue;
      totals.cacheErrors += n;
      problem('cache error', reason, n, 'request', when, str(run.command) ?? str(run.runId) ?? '');
    }
    const started = Date.parse(run.startedAt);
    const ended = typeof run.endedAt === 'string' ? Date.parse(run.endedAt) : NaN;
    runRows.push({
      ...rc, runId: str(run.runId) ?? '', startedAt: run.startedAt, command: str(run.command) ?? '',
      durationMs: ended >= started ? ended - started : null, hitRate: rate(rc), tasks: run.tasks.length,
    });
  }

  /** @type {MissRow[]} */
  const missing = [...tasks].filter(([, r]) => r.c.misses > 0).map(([task, r]) => {
    const ranked = [...r.inputs].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const top = ranked[0];
    return {
      task, records: r.records, lookups: r.c.lookups, misses: r.c.misses, hitRate: rate(r.c), lastMiss: r.lastMiss,
      compared: r.compared, unchanged: r.unchanged,
      topInput: top ? { key: top[0], label: describeInput(top[0]), count: top[1] } : null,
      otherInputs: Math.max(0, ranked.length - 1),
    };
  }).sort((a, b) => b.misses - a.misses || (a.task < b.task ? -1 : 1)).slice(0, TOP);

  const p = groupRows(projects);
  const tg = groupRows(targets);
  // Reasons that carry per-object detail can make one row per task: the most frequent TOP only.
  const problemRows = [...problems.values()].sort((a, b) => b.count - a.count || (a.reason < b.reason ? -1 : 1));
  return {
    workspace: o.workspace, generatedAt: o.now.toISOString(),
    first: runRows.length ? runRows[0].startedAt : null, last: runRows.length ? runRows[runRows.length - 1].startedAt : null,
    totals: { ...totals, hitRate: rate(totals) },
    runs: runRows, projects: p.rows, projectsMore: p.more, targets: tg.rows, targetsMore: tg.more, missing,
    artifacts: [...artifacts.values()].map(({ hashes, ...a }) => ({ ...a, artifacts: hashes.size }))
      .sort((a, b) => b.bytes - a.bytes || (a.task < b.task ? -1 : 1)).slice(0, TOP),
    problems: problemRows.slice(0, TOP), problemsMore: Math.max(0, problemRows.length - TOP),
    ignoredFiles: o.ignoredFiles ?? 0,
  };
}

/**
 * A duration for people: `0.4 s`, `12 s`, `4.2 min`, `1.5 h`.
 * @param {number} ms
 */
function formatDuration(ms) {
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 60_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/**
 * A rate as a percentage, `-` when there was nothing to count.
 * @param {number | null} r
 */
function formatRate(r) {
  return r === null ? '-' : `${(r * 100).toFixed(r === 1 || r === 0 ? 0 : 1)}%`;
}

module.exports = { buildReport, changedInputs, describeInput, formatDuration, formatRate, outcomeOf, TOP };
