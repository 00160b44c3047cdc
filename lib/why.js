'use strict';
/**
 * `npx nx-open-cache why <project:target> [--run <id>] [--against <hash>] [--json]`: why a task
 * missed the cache. The task's latest miss in the run history (or the one of `--run`) is compared
 * with the closest earlier run of that task whose artifact exists (stored, or restored from a
 * cache): the one whose inputs differ least, the latest of equals. The inputs Nx hashed
 * (`task.hashDetails`) that differ are listed, most likely cause first: the command, the task's
 * own files, env and runtime inputs, the project's configuration, its dependencies' files, external
 * dependencies, workspace files. Files are named from the per-file hashes kept by lib/inputs.js.
 * An artifact's metadata (produced on another machine, e.g. CI) explains a miss the same way
 * (`explainAgainstMeta`). Env inputs are named, never their values (Nx gives only hashes).
 */

const path = require('node:path');
const { commandArgs } = require('./args.js');
const { formatAge } = require('./summary.js');
const { parseFilesetKey, readFileset, readFileMap } = require('./inputs.js');
const history = require('./history.js');
const { clean } = require('./text.js');

/**
 * @typedef {import('./inputs.js').HashDetails} HashDetails
 * @typedef {{ id: string, project?: string, target?: string, configuration?: string | null, hash: string,
 *   cacheable?: boolean, status?: string, outcome?: string, reason?: string, inputs?: HashDetails }} HistoryTask
 * @typedef {{ format: string, version: number, runId: string, startedAt: string, endedAt?: string,
 *   command?: string, location?: string, mode?: string, tasks: HistoryTask[], file?: string }} HistoryRun
 * @typedef {{ added: string[], removed: string[], changed: string[] }} FileChanges
 * @typedef {{ kind: string, key: string, change: 'changed' | 'added' | 'removed', text: string,
 *   project?: string, dependency?: boolean, name?: string, files?: FileChanges & { exact: boolean },
 *   filesUnknown?: boolean }} Cause
 * @typedef {{ source: 'history', runId: string, startedAt: string, hash: string, outcome?: string, command?: string,
 *   location?: string, mode?: string }
 *   | { source: 'meta', hash: string, runId?: string, storedAt?: string, host?: string, nxVersion?: string }} Baseline
 * @typedef {{ format: 'nx-open-cache-why', version: 1, task: string,
 *   miss: { runId?: string, startedAt?: string, hash: string, outcome?: string, command?: string },
 *   baseline: Baseline, identical: boolean, causes: Cause[], notes: string[] }} Explanation
 * @typedef {(nodeKey: string, nodeHash: string) => { files: Record<string, string>, exact: boolean } | undefined} FilesLookup
 */

const RUN_FORMAT = 'nx-open-cache-history';
const META_FORMAT = 'nx-open-cache-meta';
/** Outcomes of a task that ran (its hash was not found in any cache). */
const MISSES = new Set(['stored', 'not-stored', 'refused', 'failed']);
/** Outcomes after which the task's artifact existed. */
const WITH_ARTIFACT = new Set(['stored', 'remote-hit', 'local-hit']);
/** Earlier artifacts compared at most, newest first (the closest wins). */
const MAX_CANDIDATES = 200;
/** Files listed per cause in the text output (all of them in --json). */
const FILES_SHOWN = 20;
/** The longest line of the text output (a line holds values from the history or a cache). */
const LINE_MAX = 2000;

/* ------------------------------------------------------------------------------------------------ */
/* reading the history                                                                               */
/* ------------------------------------------------------------------------------------------------ */

/**
 * The history's runs, oldest first, through lib/history.js's reader (it skips files that are not
 * run records, with its own notice). Each run carries its file name (`file`), which `--run` also
 * accepts.
 * @param {string} root  the workspace root
 * @returns {HistoryRun[]}
 */
function historyRuns(root) {
  return /** @type {HistoryRun[]} */ (history.readRuns(root)).reverse()
    .map((r) => ({ ...r, file: history.runFileName(r.startedAt, r.runId) }));
}

/* ------------------------------------------------------------------------------------------------ */
/* comparing inputs                                                                                  */
/* ------------------------------------------------------------------------------------------------ */

/** How likely each kind of difference is the cause a user looks for, first first. */
const RANK = ['command', 'files', 'env', 'runtime', 'inputs', 'project-configuration', 'dependency-files',
  'external', 'lockfile', 'workspace-files', 'tsconfig', 'implicit', 'input'];

/**
 * The per-file differences of two values of one fileset.
 * @param {Record<string, string>} now
 * @param {Record<string, string>} before
 * @returns {FileChanges}
 */
function diffFiles(now, before) {
  const added = Object.keys(now).filter((f) => !Object.hasOwn(before, f)).sort();
  const removed = Object.keys(before).filter((f) => !Object.hasOwn(now, f)).sort();
  const changed = Object.keys(now).filter((f) => Object.hasOwn(before, f) && before[f] !== now[f]).sort();
  return { added, removed, changed };
}

/**
 * A plain-words list of file changes: `src/a.ts (changed), src/b.ts (added)`.
 * @param {FileChanges} c
 */
function filesPhrase(c) {
  const all = [
    ...c.changed.map((f) => `${f} (changed)`),
    ...c.added.map((f) => `${f} (added)`),
    ...c.removed.map((f) => `${f} (removed)`),
  ];
  const shown = all.slice(0, 3).join(', ');
  return all.length > 3 ? `${shown} and ${all.length - 3} more` : shown;
}

/**
 * One differing input, in plain words.
 * @param {string} key
 * @param {'changed' | 'added' | 'removed'} change
 * @param {{ task: string, project?: string, projects: string[] }} ctx
 * @param {{ now?: string, before?: string, lookupNow: FilesLookup, lookupBefore: FilesLookup }} values
 * @returns {Cause}
 */
function describe(key, change, ctx, values) {
  const verb = change === 'changed' ? 'changed' : change === 'added' ? 'is a new input' : 'is no longer an input';
  if (key.startsWith('env:')) {
    const name = key.slice(4);
    return { kind: 'env', key, change, name, text: `environment variable ${name} ${change === 'changed' ? 'changed value' : verb}` };
  }
  if (key.startsWith('runtime:')) {
    const name = key.slice(8);
    return { kind: 'runtime', key, change, name, text: change === 'changed' ? `the output of the runtime input \`${name}\` changed` : `runtime input \`${name}\` ${verb}` };
  }
  if (key === 'AllExternalDependencies') {
    return { kind: 'lockfile', key, change, text: change === 'changed' ? 'dependencies in the lockfile changed' : `all external dependencies ${verb}` };
  }
  if (key.startsWith('npm:')) {
    const name = key.slice(4);
    return { kind: 'external', key, change, name, text: change === 'changed' ? `external dependency ${name} changed (its version in the lockfile)` : `external dependency ${name} ${verb}` };
  }
  const fileset = parseFilesetKey(key, ctx.projects);
  if (fileset) {
    const project = fileset.kind === 'project' ? fileset.project : undefined;
    const dependency = project !== undefined && project !== ctx.project;
    const kind = fileset.kind === 'workspace' ? 'workspace-files' : dependency ? 'dependency-files' : 'files';
    const owner = fileset.kind === 'workspace' ? 'workspace files' : dependency ? `files of ${project} (a dependency of ${ctx.project})` : `files of ${project}`;
    /** @type {Cause} */
    const cause = { kind, key, change, text: '', ...(project ? { project, dependency } : {}) };
    if (change !== 'changed') {
      const globs = fileset.globs.join(', ');
      cause.text = change === 'added' ? `new file input: ${owner} matching ${globs}` : `no longer an input: ${owner} matching ${globs}`;
      return cause;
    }
    const now = values.now !== undefined ? values.lookupNow(key, values.now) : undefined;
    const before = values.before !== undefined ? values.lookupBefore(key, values.before) : undefined;
    if (!now || !before) {
      cause.filesUnknown = true;
      cause.text = `${owner} changed (which files: not recorded for ${!now && !before ? 'either run' : !now ? 'the miss' : 'the earlier run'})`;
      return cause;
    }
    const files = { ...diffFiles(now.files, before.files), exact: now.exact && before.exact };
    cause.files = files;
    const n = files.added.length + files.removed.length + files.changed.length;
    cause.text = n ? `${owner} changed: ${filesPhrase(files)}` : `${owner} changed (which files: could not be told)`;
    return cause;
  }
  const colon = key.lastIndexOf(':');
  const project = colon > 0 ? key.slice(0, colon) : undefined;
  const what = colon > 0 ? key.slice(colon + 1) : key;
  const of = project && project !== ctx.project ? `${project} (a dependency of ${ctx.project})` : project;
  if (what === 'ProjectConfiguration' && project) {
    return { kind: 'project-configuration', key, change, project, dependency: project !== ctx.project, text: `the project configuration of ${of} ${verb} (project.json, package.json or inferred targets)` };
  }
  if (what === 'TsConfig' && project) {
    return { kind: 'tsconfig', key, change, project, dependency: project !== ctx.project, text: `the TypeScript configuration of ${of} ${verb} (tsconfig compiler options or paths)` };
  }
  return { kind: 'input', key, change, text: `input ${key} ${verb}` };
}

/**
 * The inputs that differ between a miss and an earlier run, most likely cause first.
 * @param {{ task: string, project?: string, projects: string[] }} ctx
 * @param {{ inputs: HashDetails, lookup: FilesLookup }} now
 * @param {{ inputs: HashDetails, lookup: FilesLookup }} before
 * @returns {Cause[]}
 */
function compareInputs(ctx, now, before) {
  /** @type {Cause[]} */ const causes = [];
  if ((now.inputs.command ?? '') !== (before.inputs.command ?? '')) {
    causes.push({ kind: 'command', key: 'command', change: 'changed', text: 'the command changed (arguments or overrides given to the task, or its configuration)' });
  }
  const a = now.inputs.nodes || {};
  const b = before.inputs.nodes || {};
  const values = { lookupNow: now.lookup, lookupBefore: before.lookup };
  for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])]) {
    const inA = Object.hasOwn(a, key);
    const inB = Object.hasOwn(b, key);
    if (inA && inB && a[key] === b[key]) continue;
    const change = !inB ? 'added' : !inA ? 'removed' : 'changed';
    const cause = describe(key, change, ctx, { ...values, now: inA ? a[key] : undefined, before: inB ? b[key] : undefined });
    // A fileset whose globs changed: the inputs of the target changed.
    if (change !== 'changed' && cause.kind.endsWith('files')) cause.kind = 'inputs';
    causes.push(cause);
  }
  for (const [field, kind] of /** @type {const} */ ([['runtime', 'runtime'], ['implicitDeps', 'implicit']])) {
    const x = now.inputs[field] || {};
    const y = before.inputs[field] || {};
    for (const key of [...new Set([...Object.keys(x), ...Object.keys(y)])]) {
      const inX = Object.hasOwn(x, key);
      const inY = Object.hasOwn(y, key);
      if (inX && inY && x[key] === y[key]) continue;
      const change = !inY ? 'added' : !inX ? 'removed' : 'changed';
      const verb = change === 'changed' ? 'changed' : change === 'added' ? 'is a new input' : 'is no longer an input';
      causes.push(kind === 'runtime'
        ? { kind, key, change, name: key, text: change === 'changed' ? `the output of the runtime input \`${key}\` changed` : `runtime input \`${key}\` ${verb}` }
        : { kind, key, change, name: key, text: `implicit dependency ${key} ${verb}` });
    }
  }
  groupExternal(causes);
  const rank = (/** @type {Cause} */ c) => {
    const i = RANK.indexOf(c.kind);
    return i < 0 ? RANK.length : i;
  };
  return causes
    .map((c, i) => ({ c, i }))
    .sort((x, y) => rank(x.c) - rank(y.c) || x.i - y.i)
    .map((x) => x.c);
}

/** External dependencies named one by one up to this many; more are one cause (a lockfile update). */
const EXTERNAL_SHOWN = 3;

/**
 * Folds many changed external dependencies (an `externalDependencies` input lists a package and
 * Nx hashes its whole dependency tree) into one cause naming them, in place.
 * @param {Cause[]} causes
 */
function groupExternal(causes) {
  const changed = causes.filter((c) => c.kind === 'external' && c.change === 'changed');
  if (changed.length <= EXTERNAL_SHOWN) return;
  const names = changed.map((c) => /** @type {string} */ (c.name)).sort();
  const at = causes.indexOf(changed[0]);
  for (const c of changed) causes.splice(causes.indexOf(c), 1);
  causes.splice(at, 0, {
    kind: 'external', key: 'npm:*', change: 'changed', name: names.join(', '),
    text: `${names.length} external dependencies changed (their versions in the lockfile): ${names.slice(0, EXTERNAL_SHOWN).join(', ')} and ${names.length - EXTERNAL_SHOWN} more`,
  });
}

/**
 * How many inputs differ (the distance used to pick the closest earlier run).
 * @param {HashDetails} a
 * @param {HashDetails} b
 */
function distance(a, b) {
  let d = (a.command ?? '') === (b.command ?? '') ? 0 : 1;
  for (const field of /** @type {const} */ (['nodes', 'runtime', 'implicitDeps'])) {
    const x = a[field] || {};
    const y = b[field] || {};
    for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) {
      if (!Object.hasOwn(x, k) || !Object.hasOwn(y, k) || x[k] !== y[k]) d += 1;
    }
  }
  return d;
}

/* ------------------------------------------------------------------------------------------------ */
/* explaining a miss                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/**
 * A files lookup over the history's stored fileset values.
 * @param {string} historyDir
 * @returns {FilesLookup}
 */
function historyFiles(historyDir) {
  return (_key, hash) => {
    const r = readFileset(historyDir, hash);
    return r ? { files: r.files, exact: r.exact === true } : undefined;
  };
}

/**
 * Project names the history knows (to read fileset keys whose project name holds a `:`).
 * @param {HistoryRun[]} runs
 * @param {string} [root]
 */
function knownProjects(runs, root) {
  const names = new Set();
  for (const r of runs) for (const t of r.tasks) if (typeof t.project === 'string') names.add(t.project);
  const map = root ? readFileMap(root) : undefined;
  if (map) for (const p of Object.keys(map.projectFileMap)) names.add(p);
  return [...names];
}

/**
 * The task's project: its record's, else the id before the last `:`.
 * @param {HistoryTask} t
 */
function projectOf(t) {
  if (typeof t.project === 'string') return t.project;
  const i = t.id.lastIndexOf(':');
  return i > 0 ? t.id.slice(0, i) : t.id;
}

/**
 * The notes that go with a comparison: identical inputs, or file lists that may be incomplete.
 * @param {Cause[]} causes
 * @param {boolean} identical
 */
function notesFor(causes, identical) {
  /** @type {string[]} */ const notes = [];
  if (identical) {
    notes.push('the inputs are identical: the artifact of that run was not found when this one ran (evicted by retention, another cache location, prefix or namespace, a read-only or no-cache mode then, or written after this run looked it up)');
  }
  if (causes.some((c) => c.files && !c.files.exact)) {
    notes.push("some file lists could not be checked against Nx's hash of them: files shown may be incomplete");
  }
  return notes;
}

/**
 * Explains a miss against an artifact's metadata (written beside the artifact by the machine that
 * stored it, e.g. CI): the inputs there against the miss's. `filesetsLookup` finds the miss's file
 * hashes (this machine's history); the metadata's own `files` give the producer's.
 * @param {HistoryTask & { runId?: string, startedAt?: string, command?: string }} missTask
 * @param {any} meta  the artifact metadata JSON (format nx-open-cache-meta, version 1)
 * @param {FilesLookup} filesetsLookup
 * @param {{ projects?: string[] }} [o]
 * @returns {Explanation}
 */
function explainAgainstMeta(missTask, meta, filesetsLookup, o = {}) {
  if (!meta || meta.format !== META_FORMAT || meta.version !== 1 || typeof meta.hash !== 'string' || !meta.inputs) {
    throw new Error(`not artifact metadata of format ${META_FORMAT} version 1 (format ${JSON.stringify(meta && meta.format)}, version ${JSON.stringify(meta && meta.version)})`);
  }
  if (meta.task && meta.task !== missTask.id) {
    throw new Error(`the metadata is of task ${meta.task}, not ${missTask.id}`);
  }
  const metaFiles = meta.files && typeof meta.files === 'object' && !Array.isArray(meta.files) ? meta.files : {};
  // A list is exact only when the metadata says so: `inexact` names the lists that could not be
  // checked against Nx's hash. Metadata without `inexact` (an older writer) says nothing: every
  // list of it may be incomplete.
  const inexact = Array.isArray(meta.inexact) ? new Set(meta.inexact.filter((/** @type {unknown} */ k) => typeof k === 'string')) : undefined;
  /** @type {FilesLookup} */
  const lookupMeta = (key) => {
    const files = Object.hasOwn(metaFiles, key) ? metaFiles[key] : undefined;
    if (!files || typeof files !== 'object' || Array.isArray(files)) return undefined;
    return { files, exact: inexact !== undefined && !inexact.has(key) };
  };
  const ctx = { task: missTask.id, project: projectOf(missTask), projects: o.projects || [] };
  const causes = compareInputs(ctx, { inputs: missTask.inputs || {}, lookup: filesetsLookup }, { inputs: meta.inputs, lookup: lookupMeta });
  const identical = missTask.hash === meta.hash;
  return {
    format: 'nx-open-cache-why', version: 1, task: missTask.id,
    miss: missSummary(missTask),
    baseline: {
      source: 'meta', hash: meta.hash, runId: optionalString(meta.runId), storedAt: optionalString(meta.storedAt),
      host: optionalString(meta.host), nxVersion: optionalString(meta.nxVersion),
    },
    identical, causes,
    notes: [...notesFor(causes, identical), ...(inexact === undefined && causes.some((c) => c.files) ? ['the metadata does not say which of its file lists were checked (written by an older nx-open-cache)'] : [])],
  };
}

/**
 * A string field of outside data, or undefined when it is not a string.
 * @param {unknown} v
 */
function optionalString(v) {
  return typeof v === 'string' ? v : undefined;
}

/**
 * @param {HistoryTask & { runId?: string, startedAt?: string, command?: string }} t
 */
function missSummary(t) {
  return { runId: t.runId, startedAt: t.startedAt, hash: t.hash, outcome: t.outcome, command: t.command };
}

/**
 * Levenshtein distance (for "did you mean").
 * @param {string} a
 * @param {string} b
 */
function editDistance(a, b) {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The known task ids nearest to `id`: the tasks of a project named `id`, else the closest by
 * edit distance.
 * @param {string} id
 * @param {string[]} known
 */
function nearestIds(id, known) {
  const ofProject = known.filter((k) => k.startsWith(`${id}:`));
  if (ofProject.length) return ofProject.slice(0, 5);
  return known
    .map((k) => ({ k, d: editDistance(id, k) }))
    .filter((x) => x.d <= Math.max(3, Math.floor(id.length / 3)))
    .sort((x, y) => x.d - y.d || (x.k < y.k ? -1 : 1))
    .slice(0, 3)
    .map((x) => x.k);
}

/**
 * The failure to explain, in plain words (the command prints it and exits 1).
 */
class WhyError extends Error {}

/**
 * Explains the latest miss of `taskId` (or its miss in run `runId`: a run id or the run's file
 * name, with or without `.json`) from the history.
 * @param {string} root  the workspace root
 * @param {string} taskId
 * @param {{ runId?: string, runs?: HistoryRun[] }} [o]  `runs`: the history, oldest first (read when absent)
 * @returns {{ explanation?: Explanation, miss: HistoryTask & { runId: string, startedAt: string, command?: string },
 *   projects: string[], noBaseline?: string }}
 */
function explainFromHistory(root, taskId, o = {}) {
  const historyDir = history.historyDir(root);
  const runs = o.runs ?? historyRuns(root);
  if (runs.length === 0) {
    throw new WhyError(`no run history yet (${path.join(historyDir, 'runs')} holds no runs): run an Nx command with the plugin first; \`why\` compares a task's runs`);
  }
  const known = [...new Set(runs.flatMap((r) => r.tasks.map((t) => t.id)))].sort();
  if (!known.includes(taskId)) {
    const near = nearestIds(taskId, known);
    const hint = near.length ? `; did you mean ${near.join(', ')}?` : `; tasks in it: ${known.slice(0, 8).join(', ')}${known.length > 8 ? ', ...' : ''}`;
    throw new WhyError(`no task "${taskId}" in the history of the last ${runs.length} run(s)${hint}`);
  }
  const projects = knownProjects(runs, root);
  let missIndex = -1;
  if (o.runId !== undefined) {
    const want = o.runId;
    const wantFile = want.replace(/\.json$/, '');
    for (let i = runs.length - 1; i >= 0 && missIndex < 0; i--) {
      const r = runs[i];
      if (r.runId === want || (r.file !== undefined && r.file.replace(/\.json$/, '') === wantFile)) missIndex = i;
    }
    if (missIndex < 0) throw new WhyError(`no run "${want}" in the history (latest: ${runs[runs.length - 1].runId})`);
    const t = runs[missIndex].tasks.find((x) => x.id === taskId);
    if (!t) throw new WhyError(`${taskId} did not take part in run ${want}`);
    if (!MISSES.has(t.outcome ?? '')) throw new WhyError(`${taskId} did not miss in run ${want}: ${outcomeWords(t)}`);
  } else {
    for (let i = runs.length - 1; i >= 0; i--) {
      const t = runs[i].tasks.find((x) => x.id === taskId);
      if (t && MISSES.has(t.outcome ?? '')) {
        missIndex = i;
        break;
      }
    }
    if (missIndex < 0) {
      const last = [...runs].reverse().map((r) => r.tasks.find((x) => x.id === taskId)).find(Boolean);
      throw new WhyError(`${taskId} has not missed in the last ${runs.length} run(s)${last ? ` (latest: ${outcomeWords(last)})` : ''}: nothing to explain`);
    }
  }
  const run = runs[missIndex];
  const task = /** @type {HistoryTask} */ (run.tasks.find((x) => x.id === taskId));
  const miss = { ...task, runId: run.runId, startedAt: run.startedAt, command: run.command };
  if (!task.inputs) throw new WhyError(`the history has no inputs of ${taskId} in run ${run.runId}: nothing to compare`);
  if (task.cacheable === false) {
    throw new WhyError(`${taskId} is not cacheable (\`cache: false\` on the target, or not cacheable for Nx): it always runs`);
  }
  const base = closestEarlier(runs.slice(0, missIndex), taskId, task, run);
  if (!base) {
    return { miss, projects, noBaseline: `no earlier run in the history (${missIndex} before it) has an artifact of ${taskId} to compare with` };
  }
  const lookup = historyFiles(historyDir);
  const ctx = { task: taskId, project: projectOf(task), projects };
  const causes = withCommandLines(compareInputs(ctx, { inputs: task.inputs || {}, lookup }, { inputs: base.task.inputs || {}, lookup }), run.command, base.run.command);
  const identical = base.task.hash === task.hash;
  return {
    miss, projects,
    explanation: {
      format: 'nx-open-cache-why', version: 1, task: taskId,
      miss: missSummary(miss),
      baseline: historyBaseline(base.run, base.task),
      identical, causes, notes: [...notesFor(causes, identical), ...whereNotes(run, base.run)],
    },
  };
}

/**
 * The command cause with the two runs' Nx command lines, when they differ (where arguments and
 * overrides come from).
 * @param {Cause[]} causes
 * @param {string | undefined} now
 * @param {string | undefined} before
 */
function withCommandLines(causes, now, before) {
  if (!now || !before || now === before) return causes;
  return causes.map((c) => (c.kind === 'command' ? { ...c, text: `${c.text}: \`nx ${now}\` now, \`nx ${before}\` then` } : c));
}

/**
 * The earlier run of the task whose artifact existed and whose inputs differ least from `miss`'s
 * (the latest of equals); undefined when there is none. Runs that used the same cache location as
 * the miss's run come first: an artifact stored in another location (bucket, directory, prefix)
 * could never have been found by the miss.
 * @param {HistoryRun[]} earlier  oldest first
 * @param {string} taskId
 * @param {HistoryTask} miss
 * @param {HistoryRun} [missRun]
 */
function closestEarlier(earlier, taskId, miss, missRun) {
  /** @type {{ run: HistoryRun, task: HistoryTask, d: number } | undefined} */
  let best;
  /** @type {{ run: HistoryRun, task: HistoryTask, d: number } | undefined} */
  let bestHere;
  const seen = new Set();
  const here = (/** @type {HistoryRun} */ r) => !missRun || missRun.location === undefined || r.location === missRun.location;
  for (let i = earlier.length - 1; i >= 0 && seen.size < MAX_CANDIDATES; i--) {
    const t = earlier[i].tasks.find((x) => x.id === taskId);
    if (!t || !t.inputs || !WITH_ARTIFACT.has(t.outcome ?? '')) continue;
    const isHere = here(earlier[i]);
    const key = `${isHere}\u0000${t.hash}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const d = distance(miss.inputs || {}, t.inputs || {});
    if (!best || d < best.d) best = { run: earlier[i], task: t, d };
    if (isHere && (!bestHere || d < bestHere.d)) bestHere = { run: earlier[i], task: t, d };
    if (isHere && d === 0) break;
  }
  return bestHere ?? best;
}

/**
 * The baseline of an explanation from a run of the history.
 * @param {HistoryRun} run
 * @param {HistoryTask} t
 * @returns {Baseline}
 */
function historyBaseline(run, t) {
  return {
    source: 'history', runId: run.runId, startedAt: run.startedAt, hash: t.hash, outcome: t.outcome, command: run.command,
    ...(run.location !== undefined ? { location: run.location } : {}), ...(run.mode !== undefined ? { mode: run.mode } : {}),
  };
}

/**
 * Notes when the baseline's run used another cache location or mode than the miss's run.
 * @param {HistoryRun} missRun
 * @param {HistoryRun} baseRun
 * @returns {string[]}
 */
function whereNotes(missRun, baseRun) {
  /** @type {string[]} */ const notes = [];
  const loc = (/** @type {string | undefined} */ l) => (l === undefined ? 'an unrecorded location' : clean(l));
  if (missRun.location !== baseRun.location && (missRun.location !== undefined || baseRun.location !== undefined)) {
    notes.push(`the earlier run used the cache at ${loc(baseRun.location)}, the miss's run the cache at ${loc(missRun.location)}: an artifact stored there cannot be found here`);
  }
  if (missRun.mode !== baseRun.mode && (missRun.mode !== undefined || baseRun.mode !== undefined)) {
    const mode = (/** @type {string | undefined} */ m) => (m === undefined ? 'an unrecorded mode' : `mode ${clean(m)}`);
    notes.push(`the earlier run used the cache in ${mode(baseRun.mode)}, the miss's run in ${mode(missRun.mode)}`);
  }
  return notes;
}

/**
 * @param {HistoryTask} t
 */
function outcomeWords(t) {
  /** @type {Record<string, string>} */
  const words = {
    'remote-hit': 'restored from the remote cache', 'local-hit': 'restored from the local cache',
    stored: 'ran and was stored', 'not-stored': 'ran, not stored', refused: 'ran, the cache refused it',
    failed: 'failed', 'not-run': 'did not run',
  };
  return (t.outcome && Object.hasOwn(words, t.outcome) && words[t.outcome]) || t.status || 'unknown outcome';
}

/* ------------------------------------------------------------------------------------------------ */
/* the command                                                                                       */
/* ------------------------------------------------------------------------------------------------ */

const USAGE = `Usage: nx-open-cache why <project:target> [--run <id>] [--against <hash>] [--json]

Why a task missed the cache: its latest miss in this workspace's run history (or its miss in run
<id>) is compared with the closest earlier run of the task whose artifact exists, and the inputs
that differ are listed, most likely cause first: the command, files added, removed or changed (per
project; a dependency's files for a dependent), environment variables (by name, never the value),
runtime inputs, the project configuration, external dependencies, workspace files.

  --run <id>        explain the task's miss in that run (a run id from the history)
  --against <hash>  compare with the artifact of this task hash instead (from the history, or the
                    metadata stored beside the artifact: works for artifacts CI produced)
  --json            the explanation as JSON`;

/**
 * When and where a run was: `run 177...-12 (nx run-many -t build, 3 min ago)`.
 * @param {{ runId?: string, startedAt?: string, command?: string }} r
 */
function runWords(r) {
  const age = r.startedAt ? formatAge(r.startedAt) : undefined;
  const parts = [r.command ? `nx ${r.command}` : undefined, age].filter(Boolean);
  return `run ${clean(r.runId ?? '?')}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

/**
 * The explanation as text.
 * @param {Explanation} e
 * @returns {string}
 */
function formatExplanation(e) {
  const b = e.baseline;
  const against = b.source === 'history'
    ? `${runWords(b)}, where it ${outcomeWords({ id: e.task, hash: b.hash, outcome: b.outcome })} (hash ${b.hash})`
    : `the artifact stored${b.host ? ` by ${clean(b.host)}` : ''}${b.storedAt ? ` at ${clean(b.storedAt)}` : ''}${b.runId ? ` in run ${clean(b.runId)}` : ''} (hash ${clean(b.hash)}, from its metadata)`;
  const lines = [
    `${e.task} missed in ${runWords(e.miss)}: hash ${e.miss.hash}`,
    `  compared with ${against}`,
  ];
  if (e.identical || e.causes.length === 0) {
    lines.push(e.identical ? 'No input changed.' : 'No input Nx reports differs (the task hash differs in what Nx does not report).');
  } else {
    lines.push(`What changed, most likely cause first:`);
    e.causes.forEach((c, i) => {
      lines.push(`  ${i + 1}. ${c.files ? c.text.replace(/: .*$/, ':') : c.text}`);
      if (c.files) {
        const all = [
          ...c.files.changed.map((f) => `changed  ${clean(f)}`),
          ...c.files.added.map((f) => `added    ${clean(f)}`),
          ...c.files.removed.map((f) => `removed  ${clean(f)}`),
        ];
        for (const l of all.slice(0, FILES_SHOWN)) lines.push(`       ${l}`);
        if (all.length > FILES_SHOWN) lines.push(`       ... and ${all.length - FILES_SHOWN} more (--json lists all)`);
      }
    });
  }
  for (const n of e.notes) lines.push(`  note: ${n}`);
  // Task ids, hashes, commands, input names and reasons come from the history or a cache's
  // metadata: every line is made terminal-safe (values cleaned above keep their own, shorter cap).
  return lines.map((l) => clean(l, LINE_MAX)).join('\n');
}

/**
 * Fetches the metadata stored beside the artifact of `hash` in the workspace's configured cache,
 * through a proxy started for this look-up and lib/meta.js; undefined when there is none (or no
 * cache is configured).
 * @param {string} root
 * @param {string} hash
 * @returns {Promise<any>}
 */
async function fetchMeta(root, hash) {
  const meta = require('./meta.js');
  const { readNxJson, workspaceInput } = require('./workspace.js');
  const input = workspaceInput(readNxJson(root));
  if (!input.configured) return undefined;
  const run = require('../index.js').resolveRun(root, input.options, input.env);
  if (run.config.mode === 'no-cache') return undefined;
  const proxy = run.startProxy();
  try {
    const r = await meta.exchangeMeta(proxy, { publish: [], fetch: [hash] }, {
      pack: async () => {
        throw new Error('why publishes nothing');
      },
    });
    return r.producers.get(hash);
  } finally {
    await proxy.stop();
  }
}

/**
 * `why <project:target> [--run <id>] [--against <hash>] [--json]`.
 * @param {string} root  the workspace root
 * @param {string[]} args
 * @returns {Promise<number>}
 */
async function whyCommand(root, args) {
  // The task id is the one free word (not an option's value); the rest is parsed as options.
  const taskAt = args.findIndex((a, i) => !a.startsWith('-') && !(i > 0 && (args[i - 1] === '--run' || args[i - 1] === '--against')));
  const taskId = taskAt >= 0 ? args[taskAt] : undefined;
  const parsed = commandArgs({ command: 'why', usage: USAGE, errorCode: 1 }, args.filter((_, i) => i !== taskAt), {
    run: { type: 'string' }, against: { type: 'string' }, json: { type: 'boolean' },
  });
  if (typeof parsed === 'number') return parsed;
  const runs = historyRuns(root);
  if (!taskId) {
    const last = runs[runs.length - 1];
    const missed = last ? last.tasks.filter((t) => MISSES.has(t.outcome ?? '')).map((t) => t.id) : [];
    const hint = missed.length
      ? `tasks that missed in the latest run: ${missed.slice(0, 10).map((id) => clean(id, 200)).join(', ')}${missed.length > 10 ? ', ...' : ''}`
      : 'e.g. `nx-open-cache why my-lib:build`';
    console.error(`nx-open-cache why: which task? give <project:target>; ${hint}\n\n${USAGE}`);
    return 1;
  }
  try {
    const found = explainFromHistory(root, taskId, { runId: /** @type {string | undefined} */ (parsed.values.run), runs });
    let explanation = found.explanation;
    const against = /** @type {string | undefined} */ (parsed.values.against);
    if (against !== undefined) explanation = await explainAgainst(root, found, against, runs);
    if (!explanation) {
      throw new WhyError(`${taskId} missed in ${runWords(found.miss)}, but ${found.noBaseline}: give --against <hash> with the hash of an artifact of it (Nx prints task hashes with --verbose; a CI log shows them) to compare with its metadata`);
    }
    console.log(parsed.values.json === true ? safeJson(explanation) : formatExplanation(explanation));
    return 0;
  } catch (e) {
    if (!(e instanceof WhyError)) throw e;
    console.error(`nx-open-cache why: ${clean(e.message, LINE_MAX)}`);
    return 1;
  }
}

/**
 * JSON for a terminal: JSON.stringify escapes C0 control characters; C1 ones and the line
 * separators are escaped here too (still the same JSON).
 * @param {unknown} v
 */
function safeJson(v) {
  return JSON.stringify(v, null, 2).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The miss against the artifact of `hash`: a run of the history that had it (one after which the
 * artifact existed, in the miss's cache location, first), else the metadata stored beside it.
 * @param {string} root
 * @param {ReturnType<typeof explainFromHistory>} found
 * @param {string} hash
 * @param {HistoryRun[]} runs  oldest first
 * @returns {Promise<Explanation>}
 */
async function explainAgainst(root, found, hash, runs) {
  const { miss, projects } = found;
  const historyDir = history.historyDir(root);
  const missRun = runs.find((r) => r.runId === miss.runId && r.startedAt === miss.startedAt);
  /** @type {{ run: HistoryRun, task: HistoryTask, score: number } | undefined} */
  let pick;
  for (let i = runs.length - 1; i >= 0; i--) {
    const t = runs[i].tasks.find((x) => x.id === miss.id && x.hash === hash && x.inputs);
    if (!t) continue;
    // 2: the artifact existed after that run, in the miss's location; 1: it existed elsewhere; 0: not known.
    const artifact = WITH_ARTIFACT.has(t.outcome ?? '');
    const score = artifact ? (!missRun || missRun.location === runs[i].location ? 2 : 1) : 0;
    if (!pick || score > pick.score) pick = { run: runs[i], task: t, score };
    if (score === 2) break;
  }
  if (pick) {
    const { run, task: t } = pick;
    const lookup = historyFiles(historyDir);
    const ctx = { task: miss.id, project: projectOf(miss), projects };
    const causes = compareInputs(ctx, { inputs: miss.inputs || {}, lookup }, { inputs: t.inputs || {}, lookup });
    const notes = [...notesFor(causes, hash === miss.hash), ...(missRun ? whereNotes(missRun, run) : [])];
    if (pick.score === 0) {
      notes.unshift(`in run ${clean(run.runId)} the task ${outcomeWords(t)} with this hash: no run in the history is known to have left its artifact in the cache`);
    }
    return {
      format: 'nx-open-cache-why', version: 1, task: miss.id, miss: missSummary(miss),
      baseline: historyBaseline(run, t),
      identical: hash === miss.hash, causes, notes,
    };
  }
  const meta = await fetchMeta(root, hash);
  if (!meta) {
    throw new WhyError(`no run in the history had ${miss.id} with hash ${hash}, and no metadata was found beside an artifact of that hash in the cache`);
  }
  try {
    return explainAgainstMeta(miss, meta, historyFiles(historyDir), { projects });
  } catch (e) {
    throw new WhyError(`the metadata beside the artifact ${hash}: ${/** @type {Error} */ (e).message}`);
  }
}

module.exports = {
  whyCommand, explainFromHistory, explainAgainstMeta, compareInputs, formatExplanation, historyRuns,
  historyFiles, nearestIds, WhyError, USAGE,
};
