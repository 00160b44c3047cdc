'use strict';
// The Nx plugin: preTasksExecution registers the run at the workspace's cache host (lib/host.js),
// which starts the run's cache proxy, and points Nx's own remote-cache client at it;
// postTasksExecution exchanges artifact metadata through that proxy (lib/meta.js), ends the run
// there, reports it and records it in the workspace's history (lib/history.js). Where the hooks
// run in Nx's own process (the daemon is off), or no host can serve, the proxy runs in this
// process instead.

const { formatSummary, formatSummaryTable, pluginDataDir, summaryMode, unusedRunSummary, writeSummary, STAYED_OUT } = require('./summary.js');
const { inputNotes, isWinningEntry, pluginEntry, readNxJson, truthy, workspaceInput } = require('./workspace.js');
const { attachRun, endRun } = require('./host.js');
const { fallbackPlan } = require('./fallback.js');
const { appendRun, buildRunRecord, hasSavedFigure, historyDir, historyEnabled, nxVersionOf, redactCommand } = require('./history.js');
const { buildMeta, exchangeMeta, producerOf, withoutMetaTraffic } = require('./meta.js');
const { reportRun } = require('./run-report.js');

/** @type {typeof import('../index') | undefined} */
let nativeModule;
/**
 * The native addon, loaded on first use. A platform without a build must not stop Nx from running:
 * the caller turns a load failure into a warning and runs without the remote cache.
 * @returns {typeof import('../index')}
 */
function native() {
  if (!nativeModule) nativeModule = require('../index.js');
  return nativeModule;
}

/** Set alongside Nx's variable so a later run in the same process (the daemon) knows it is ours. */
const OWN_URL = 'NX_OPEN_CACHE_PROXY_URL';
const SERVER = 'NX_SELF_HOSTED_REMOTE_CACHE_SERVER';
const TOKEN = 'NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN';

/**
 * A run whose proxy runs in this process (no host could serve it).
 * @typedef {{ proxy: import('../index').CacheProxy, modeSource: string, startedAt: Date }} LocalRun
 */

/** In-process proxies by Nx run id (the daemon may serve several runs at once). @type {Map<string, LocalRun>} */
const runs = new Map();
/**
 * `no-cache` runs, and runs the plugin stayed out of (`note`: why), by Nx run id: no proxy, but a
 * summary of their own at their end (so `summary` never shows an older run in their place).
 * @type {Map<string, { location: string, modeSource: string, startedAt: Date, note?: string }>}
 */
const unusedRuns = new Map();
/**
 * The configuration warnings of runs that have them, by Nx run id: kept in the run's summary so
 * `nx-open-cache summary` shows them when the daemon swallowed the line printed at the start.
 * @type {Map<string, string[]>}
 */
const runWarnings = new Map();
/** Runs this process registered at the host, by Nx run id (to report a host that vanished). @type {Set<string>} */
const hostRuns = new Set();
/**
 * Where the host's proxy of a run this process registered listens, by Nx run id: the end of the
 * run exchanges artifact metadata through it before ending the run there. Runs without an id (an
 * Nx before 21) share the key 'default', one address each (any of them serves until they end).
 * @type {Map<string, { url: string, token: string, mode: string }[]>}
 */
const hostAddresses = new Map();

/**
 * Forgets one host address under `key` (the oldest).
 * @param {string} key
 */
function dropHostAddress(key) {
  const list = hostAddresses.get(key);
  if (!list) return;
  list.shift();
  if (list.length === 0) hostAddresses.delete(key);
}
/**
 * Runs without an id (an Nx before 21) this process registered and has not ended: only those may
 * end one at the host (a run that stayed out must not end another's).
 */
let anonymousHostRuns = 0;
/** Notices already printed in this process. @type {Set<string>} */
const said = new Set();

/** @param {string} message */
function noticeOnce(message) {
  if (said.has(message)) return;
  said.add(message);
  console.log(`nx-open-cache: ${message}`);
}

/**
 * Why the plugin should stay out of this run, if it should.
 * @param {readonly string[] | undefined} argv
 * @param {NodeJS.ProcessEnv} env
 * @returns {string | undefined}
 */
function reasonToStayOut(argv, env) {
  const args = argv || [];
  if (args.some((a) => a === '--skip-remote-cache' || a === '--skipRemoteCache' || a === '--skip-remote-cache=true')) {
    return 'remote cache skipped (--skip-remote-cache): not starting';
  }
  if (truthy(env.NX_SKIP_REMOTE_CACHE)) {
    return 'remote cache skipped (NX_SKIP_REMOTE_CACHE): not starting';
  }
  if (truthy(env.NX_DISABLE_REMOTE_CACHE)) {
    return 'remote cache disabled (NX_DISABLE_REMOTE_CACHE): not starting';
  }
  const server = env[SERVER];
  if (server && server !== env[OWN_URL]) {
    return `${SERVER} is already set (${server}): nx-open-cache stays out of the way and Nx uses that server`;
  }
  return undefined;
}

/**
 * Whether this run goes to the workspace's cache host, from NX_OPEN_CACHE_HOST: `on` always, `off`
 * never (the proxy runs in this process), `auto` (default) unless this process is the run's Nx
 * command itself or a plugin worker of its own (the daemon is off), where the process lives as
 * long as the run. Under the daemon, or when that cannot be told (an Nx without `context.argv`,
 * a system without /proc), the host.
 * @param {typeof import('../index')} addon
 * @param {string | undefined} value
 * @param {readonly string[] | undefined} argv  Nx's process.argv
 */
function useHost(addon, value, argv) {
  const v = (value ?? '').trim().toLowerCase();
  if (v === 'off') return false;
  if (v === 'on') return true;
  if (v !== '' && v !== 'auto') {
    noticeOnce(`NX_OPEN_CACHE_HOST=${JSON.stringify(value)} is not one of auto, on, off: using auto`);
  }
  // The daemon (its parent may be the Nx command that started it) and its plugin workers.
  if (/** @type {any} */ (globalThis).NX_DAEMON || process.env.NX_DAEMON_PROCESS === 'true') return true;
  if (!argv || argv.length < 2) return true;
  const here = argv.length === process.argv.length && argv.every((a, i) => a === process.argv[i]);
  return !(here || addon.hookInNxCommand([...argv]));
}

/**
 * nx.json, from the hook's context or, for an Nx that does not pass it, from the workspace;
 * undefined when unreadable (the deprecated blocks and other entries are then not looked at).
 * @param {{ workspaceRoot: string, nxJsonConfiguration?: unknown }} context
 * @returns {unknown}
 */
function contextNxJson(context) {
  if (context.nxJsonConfiguration !== undefined) return context.nxJsonConfiguration;
  try {
    return readNxJson(context.workspaceRoot);
  } catch {
    return undefined;
  }
}

/**
 * This run's configuration input, found once: the entry's options, a deprecated top-level block
 * of nx.json under them (its secrets go into the returned env, this run's proxy only), the
 * environment. Undefined when nx.json lists the plugin more than once and these options are not
 * the first entry's: that entry's hooks serve the run (a notice says so once).
 * @param {Record<string, unknown> | undefined} pluginOptions
 * @param {{ workspaceRoot: string, nxJsonConfiguration?: unknown }} context
 * @param {NodeJS.ProcessEnv} hookEnv
 */
function runInput(pluginOptions, context, hookEnv) {
  const nxJson = contextNxJson(context);
  const input = workspaceInput(nxJson, { env: hookEnv, entryOptions: pluginOptions });
  for (const note of inputNotes(input, "this run's proxy")) noticeOnce(note);
  return input.entry && !isWinningEntry(input.entry, pluginOptions) ? undefined : input;
}

/**
 * Records a run the plugin stays out of, so that its end writes the run's own summary with `note`
 * (the notice was printed at its start) and `summary` never shows an older run in its place.
 * @param {{ id?: string }} context
 * @param {string} note
 * @param {string} [location]
 */
function stayedOut(context, note, location = '') {
  unusedRuns.set(context.id ?? 'default', { location, modeSource: '', startedAt: new Date(), note });
}

/**
 * Starts this run's proxy in this process, from the run's one resolution of its options;
 * undefined (with a notice) when it cannot start.
 * @param {import('../index').RunConfig} run
 */
function startLocalProxy(run) {
  try {
    return run.startProxy();
  } catch (e) {
    // A cache that cannot start must not fail the build.
    noticeOnce(`cannot start the cache proxy (${/** @type {Error} */ (e).message}): running without the remote cache`);
    return undefined;
  }
}

/**
 * @param {Record<string, unknown> | undefined} pluginOptions
 * @param {{ id?: string, workspaceRoot: string, argv?: readonly string[], nxJsonConfiguration?: unknown }} context
 */
async function preTasksExecution(pluginOptions, context) {
  // Nx records the variables this hook sets through the process.env it installed for this call;
  // another run's hook may install its own while this one waits for the host, so every read and
  // write goes through the one seen on entry.
  const hookEnv = process.env;
  const stayOut = reasonToStayOut(context.argv, hookEnv);
  if (stayOut) {
    noticeOnce(stayOut);
    stayedOut(context, stayOut);
    return;
  }
  const input = runInput(pluginOptions, context, hookEnv);
  if (!input) return;
  const { options, env } = input;
  let addon;
  try {
    addon = native();
  } catch (e) {
    await withoutAddon(context, options, env, hookEnv, e);
    return;
  }
  // Throws, before any task runs, on a wrong option: the message names option, value and choices.
  const run = addon.resolveRun(context.workspaceRoot, options, env);
  const config = run.config;
  // Every run: a warning is about this run's environment, which may differ from the last one's.
  for (const w of config.warnings) console.log(`nx-open-cache: warning: ${w}`);
  if (config.warnings.length) runWarnings.set(context.id ?? 'default', config.warnings);
  if (config.mode === 'no-cache') {
    // The run's summary says so at its end.
    unusedRuns.set(context.id ?? 'default', { location: `${config.backend} ${config.location}`, modeSource: config.modeSource, startedAt: new Date() });
    return;
  }
  const served = useHost(addon, hookEnv.NX_OPEN_CACHE_HOST, context.argv)
    ? await serveFromHost(addon, context, options, env)
    : undefined;
  const proxy = served ?? startLocalProxy(run);
  if (!proxy) {
    stayedOut(context, `cannot start the cache proxy: running without the remote cache`, `${config.backend} ${config.location}`);
    return;
  }
  if (!served) runs.set(context.id ?? 'default', { proxy: /** @type {import('../index').CacheProxy} */ (proxy), modeSource: config.modeSource, startedAt: new Date() });
  hookEnv[SERVER] = proxy.url;
  hookEnv[TOKEN] = proxy.token;
  hookEnv[OWN_URL] = proxy.url;
  if (config.debug) {
    console.error(`nx-open-cache: proxy ${proxy.url} -> ${proxy.location} (${proxy.mode}, ${config.modeSource}${served ? ', cache host' : ''}${config.tokenSource ? `, token: ${config.tokenSource}` : ''})`);
  }
}

/**
 * A run without the native addon (lib/fallback.js): with the `http` backend, Nx's own client is
 * pointed at the server through the hook's environment (Nx applies what the hook sets, daemon or
 * not); otherwise the run goes on uncached. One warning per process and reason, kept in the run's
 * summary.
 * @param {{ id?: string }} context
 * @param {Record<string, unknown> | null} options
 * @param {Record<string, string>} env  the run's environment (with a deprecated block's secrets)
 * @param {NodeJS.ProcessEnv} hookEnv  the process.env Nx installed for this call
 * @param {unknown} loadError
 */
async function withoutAddon(context, options, env, hookEnv, loadError) {
  const plan = await fallbackPlan(options, env, loadError);
  if (plan.warning) {
    noticeOnce(`warning: ${plan.warning}`);
    runWarnings.set(context.id ?? 'default', [plan.warning]);
  }
  for (const [k, v] of Object.entries(plan.set)) hookEnv[k] = v;
  if (plan.set[SERVER]) hookEnv[OWN_URL] = plan.set[SERVER];
  const note = plan.set[SERVER]
    ? "no native addon: Nx's own client used the server directly (no counts)"
    : 'no native addon: ran without the remote cache';
  stayedOut(context, note, plan.location);
}

/**
 * Registers the run at the workspace's cache host; undefined (with a notice) when no host can serve
 * it, and the proxy then runs in this process.
 * @param {typeof import('../index')} addon
 * @param {{ id?: string, workspaceRoot: string, argv?: readonly string[] }} context
 * @param {Record<string, unknown> | null} options
 * @param {Record<string, string>} env
 */
async function serveFromHost(addon, context, options, env) {
  const request = { id: context.id, workspaceRoot: context.workspaceRoot, options, env, argv: [...(context.argv || [])] };
  try {
    const run = await attachRun(addon, pluginDataDir(context.workspaceRoot), request);
    const key = context.id ?? 'default';
    hostAddresses.set(key, [...(hostAddresses.get(key) ?? []), { url: run.url, token: run.token, mode: run.mode }]);
    if (context.id) hostRuns.add(context.id);
    else anonymousHostRuns += 1;
    return run;
  } catch (e) {
    noticeOnce(`cannot use the cache host (${/** @type {Error} */ (e).message}): this run's proxy runs in this process`);
    return undefined;
  }
}

/**
 * The run's summary from its in-process proxy, or from the host.
 * @param {{ id?: string, workspaceRoot: string, argv?: readonly string[] }} context
 * @returns {Promise<import('./summary.js').RunSummary | undefined>}
 */
async function endOfRun(context) {
  const unused = unusedRuns.get(context.id ?? 'default');
  if (unused) {
    unusedRuns.delete(context.id ?? 'default');
    return unusedRunSummary({ ...unused, runId: context.id ?? 'default' });
  }
  const local = takeLocalRun(context.id);
  if (local) {
    const stats = await local.proxy.stop();
    return {
      ...stats,
      location: local.proxy.location,
      mode: local.proxy.mode,
      modeSource: local.modeSource,
      runId: context.id ?? 'default',
      startedAt: local.startedAt.toISOString(),
      endedAt: new Date().toISOString(),
    };
  }
  if (context.id === undefined) {
    // Without a run id, a run that stayed out must not end one that did not.
    if (anonymousHostRuns === 0 || reasonToStayOut(context.argv, process.env)) return undefined;
  }
  dropHostAddress(context.id ?? 'default');
  let addon;
  try {
    addon = native();
  } catch {
    if (context.id === undefined) anonymousHostRuns -= 1;
    else hostRuns.delete(context.id);
    return undefined;
  }
  if (context.id === undefined) anonymousHostRuns -= 1;
  const registeredHere = context.id !== undefined && hostRuns.delete(context.id);
  /** @type {import('../index').HostEndResult & { reason?: string }} */
  const r = await endRun(addon, pluginDataDir(context.workspaceRoot), context.id).catch((e) => ({ outcome: 'failed', reason: e.message }));
  if (r.outcome === 'ended' && r.ended) {
    const { stats, runId, location, mode, modeSource, startedAt, runs: merged } = r.ended;
    return {
      ...stats, location, mode, modeSource, runId,
      startedAt: new Date(startedAt).toISOString(),
      endedAt: new Date().toISOString(),
      ...(merged > 1 ? { runs: merged } : {}),
    };
  }
  if (r.outcome === 'deferred') {
    console.log(`nx-open-cache: ${r.open} other Nx run(s) in this workspace still use the cache, and this Nx gives no run ids: the last to end reports them all`);
  } else if (registeredHere || r.outcome === 'failed') {
    console.log(`nx-open-cache: no summary for this run: its cache host is gone (${r.reason ?? r.outcome})`);
  }
  return undefined;
}

/**
 * This run's in-process proxy, taken out of `runs`.
 * @param {string | undefined} id
 */
function takeLocalRun(id) {
  const key = id ?? 'default';
  let run = runs.get(key);
  if (!run && id === undefined && runs.size === 1) {
    // An Nx without run ids: the only proxy is this run's.
    const [only] = runs.keys();
    run = runs.get(only);
    runs.delete(only);
  } else {
    runs.delete(key);
  }
  return run;
}

/**
 * This run's proxy while it still serves: its address and mode, and its counters so far when it
 * runs in this process. Undefined for a run without a proxy (no-cache, stayed out).
 * @param {{ id?: string, argv?: readonly string[] }} context
 * @returns {{ url: string, token: string, mode: string, stats?: () => import('../index').CacheStats } | undefined}
 */
function liveProxy(context) {
  const key = context.id ?? 'default';
  if (unusedRuns.has(key)) return undefined;
  const local = runs.get(key) ?? (context.id === undefined && runs.size === 1 ? [...runs.values()][0] : undefined);
  if (local) {
    const { proxy } = local;
    return { url: proxy.url, token: proxy.token, mode: proxy.mode, stats: () => proxy.stats() };
  }
  if (context.id === undefined && (anonymousHostRuns === 0 || reasonToStayOut(context.argv, process.env))) return undefined;
  return hostAddresses.get(key)?.at(-1);
}

/**
 * The hook's task results of cacheable tasks (`task.cache !== false`).
 * @param {{ taskResults?: Record<string, any> }} context
 * @returns {{ task: any, status: string }[]}
 */
function cacheableResults(context) {
  return Object.values(context.taskResults || {})
    .filter((r) => r && r.task && r.task.cache !== false && typeof r.task.hash === 'string');
}

/**
 * Publishes the meta of the artifacts this run stored and fetches that of the ones it restored
 * (lib/meta.js), through the run's proxy before it stops. Bounded in time; never throws.
 * @param {{ id?: string, workspaceRoot: string, taskResults?: Record<string, any> }} context
 * @param {NonNullable<ReturnType<typeof liveProxy>>} live
 * @returns {Promise<Awaited<ReturnType<typeof exchangeMeta>> | undefined>}
 */
async function exchangeRunMeta(context, live) {
  try {
    const results = cacheableResults(context);
    const fetch = results.filter((r) => r.status === 'remote-cache').map((r) => r.task.hash);
    /** @type {{ hash: string, json: () => string | undefined }[]} */ const publish = [];
    if (live.mode === 'read-write') {
      // With the proxy's per-hash events (a proxy in this process), only what it stored in this
      // run; otherwise every task that ran and succeeded (the first writer's meta wins).
      const events = live.stats ? /** @type {any} */ (live.stats()).events : undefined;
      const stored = Array.isArray(events)
        ? new Set(events.filter((e) => e.op === 'put' && e.outcome === 'stored').map((e) => e.hash))
        : undefined;
      const nxVersion = nxVersionOf(context.workspaceRoot);
      // Each record is built when its turn comes in the exchange's pool (bounded in number and
      // time); the fileset values are read once per run, and their lists share one byte budget.
      /** @type {import('./inputs.js').MetaFilesRun | undefined} */ let filesRun;
      const filesOf = (/** @type {any} */ task) => {
        try {
          const inputs = require('./inputs.js');
          if (!filesRun) filesRun = inputs.metaFilesRun(context.workspaceRoot, historyDir(context.workspaceRoot));
          return inputs.metaFiles(filesRun, task.hashDetails);
        } catch {
          return undefined;
        }
      };
      for (const r of results) {
        if (r.status !== 'success' || (stored && !stored.has(r.task.hash))) continue;
        const { task } = r;
        const { startTime, endTime } = task;
        const durationMs = typeof startTime === 'number' && typeof endTime === 'number' ? endTime - startTime : 0;
        publish.push({
          hash: task.hash,
          json: () => {
            const f = filesOf(task);
            return buildMeta({ task, durationMs, nxVersion, runId: context.id, files: f?.files, inexact: f?.inexact }).json;
          },
        });
      }
    }
    if (fetch.length === 0 && publish.length === 0) return undefined;
    const addon = native();
    const pack = (/** @type {string} */ json) => addon.packAsync({ root: context.workspaceRoot, terminalOutput: json, code: 0, format: 'nx' })
      .then((b) => /** @type {Buffer} */ (b));
    return await exchangeMeta(live, { publish, fetch }, { pack });
  } catch (e) {
    noticeOnce(`artifact metadata skipped (${/** @type {Error} */ (e).message})`);
    return undefined;
  }
}

/** Whether this process already said it could not record a run. */
let recordNoticeGiven = false;

/**
 * The run's history record; undefined when history is off or the record cannot be made.
 * @param {{ id?: string, workspaceRoot: string, argv?: readonly string[], taskResults?: Record<string, any> }} context
 * @param {import('./summary.js').RunSummary | undefined} summary
 * @param {Awaited<ReturnType<typeof exchangeRunMeta>>} meta
 */
function runRecord(context, summary, meta) {
  try {
    /** @type {Map<string, import('./history.js').Producer>} */ const producers = new Map();
    for (const [hash, m] of meta?.producers ?? []) producers.set(hash, producerOf(m));
    return buildRunRecord(context, summary, { producers, nxVersion: nxVersionOf(context.workspaceRoot) });
  } catch (e) {
    recordFailed(e);
    return undefined;
  }
}

/** @param {unknown} e */
function recordFailed(e) {
  if (recordNoticeGiven) return;
  recordNoticeGiven = true;
  console.log(`nx-open-cache: this run is not in the history (${e instanceof Error ? e.message : String(e)}); the build is not affected`);
}

/**
 * Prints the run's summary (unless NX_OPEN_CACHE_SUMMARY=off or the plugin stayed out) and keeps it
 * for `nx-open-cache summary`.
 * @param {{ workspaceRoot: string, argv?: readonly string[] }} context
 * @param {import('./summary.js').RunSummary} summary
 * @param {string[] | undefined} warnings
 */
function reportSummary(context, summary, warnings) {
  // Printed at the start of the run already; kept for `nx-open-cache summary`.
  if (warnings) summary.warnings = warnings;
  if (context.argv) summary.command = redactCommand(context.argv.slice(2).join(' '));
  const writeError = writeSummary(context.workspaceRoot, summary);
  // A run the plugin stayed out of said why at its start: its summary is kept, not printed.
  if (summary.mode === STAYED_OUT) return;
  const { mode, warning } = summaryMode(process.env.NX_OPEN_CACHE_SUMMARY);
  if (warning) console.log(warning);
  if (mode !== 'off') {
    console.log(mode === 'table' ? formatSummaryTable(summary) : formatSummary(summary));
    if (writeError) console.log(`  (${writeError})`);
  }
}

/**
 * Keeps the per-file hashes of the run's fileset inputs (lib/inputs.js) for `nx-open-cache why`
 * and the artifacts' meta, unless the history is off. Never fails the run: one notice per process.
 * @param {{ workspaceRoot: string, taskResults?: Record<string, any> }} context
 * @returns {Promise<{ hash: string, bytes: number }[]>}  the fileset files it wrote
 */
async function captureInputs(context) {
  if (!historyEnabled(process.env) || !context.taskResults) return [];
  try {
    native();
  } catch {
    return []; // the run's start warned about the addon once: the file hashes need it
  }
  try {
    const { captureFilesets } = require('./inputs.js');
    const r = await captureFilesets(context.workspaceRoot, context.taskResults, historyDir(context.workspaceRoot));
    return r.written;
  } catch (e) {
    noticeOnce(`cannot keep the file hashes of this run's inputs (\`why\` will name fewer files): ${/** @type {Error} */ (e).message}`);
    return [];
  }
}

/**
 * @param {Record<string, unknown> | undefined} options
 * @param {{ id?: string, workspaceRoot: string, argv?: readonly string[], taskResults?: Record<string, any> }} context
 */
async function postTasksExecution(options, context) {
  const entry = pluginEntry(contextNxJson(context));
  if (entry && !isWinningEntry(entry, options)) return; // the first entry's hook ends the run
  const warnings = runWarnings.get(context.id ?? 'default');
  runWarnings.delete(context.id ?? 'default');
  // Before the meta: it carries the per-file hashes this keeps.
  const filesets = await captureInputs(context);
  // Artifact metadata goes through the run's proxy: before the run ends there.
  const live = liveProxy(context);
  const meta = live ? await exchangeRunMeta(context, live) : undefined;
  const ended = await endOfRun(context);
  // The counters of artifacts only, whether or not this proxy counts meta apart.
  const summary = ended && meta ? withoutMetaTraffic(ended, meta.exchanges, ended.mode) : ended;
  // The record gives the summary its time saved, also when the history is off. An Nx that gives
  // no task results has nothing for either.
  const record = context.taskResults ? runRecord(context, summary, meta) : undefined;
  if (summary) {
    if (record && hasSavedFigure(record)) summary.savedMs = record.savedMs;
    reportSummary(context, summary, warnings);
  }
  if (record && historyEnabled(process.env)) {
    try {
      appendRun(context.workspaceRoot, record, { filesets });
    } catch (e) {
      recordFailed(e);
    }
  }
  // http backend: the run report for the server's dashboard (at most 2 s; never fails the run).
  if (summary) await reportRun(context, options, summary, record);
}

module.exports = { preTasksExecution, postTasksExecution };
