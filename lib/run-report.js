'use strict';
// The run report: after each run with the `http` backend, a small JSON account of the run (task
// ids, hashes, outcomes, durations) for the server's dashboard (`nx-open-cache serve`'s /ui). It
// is built from the run's history record and sent either through the run's proxy while it runs
// (`POST <proxy>/nx-open-cache/v1/run-report`, which forwards it) or, once the proxy has stopped,
// by the addon straight to the server (`POST <url>/nx-open-cache/v1/runs`): the same token, TLS
// settings and 2 s bound either way. A server that answers 404 (not an nx-open-cache serve) is
// not asked again in this process. Nothing here ever fails a run; nothing in the report is
// trusted by the server for access decisions. Opt out: option `runReport: false` or
// NX_OPEN_CACHE_RUN_REPORT=off.

const crypto = require('node:crypto');
const { readNxJson, truthy, workspaceInput } = require('./workspace.js');

const FORMAT = 'nx-open-cache-run-report';
const VERSION = 1;
/** Tasks in one report at most (the server refuses more). */
const MAX_TASKS = 5000;
/** Bytes of one report at most (the server refuses larger with 413). */
const MAX_BYTES = 1024 * 1024;
/** Longest display string serve keeps (it cuts longer ones). */
const MAX_TEXT = 512;
/** Longest id (run id, task id) serve accepts, in bytes. */
const MAX_ID_BYTES = 200;

/** @param {unknown} v @returns {v is string} */
function validId(v) {
  // eslint-disable-next-line no-control-regex
  return typeof v === 'string' && v.length > 0 && Buffer.byteLength(v) <= MAX_ID_BYTES && !/[\u0000-\u001f\u007f-\u009f]/.test(v);
}

/** Where the run's proxy takes the report. */
const PROXY_ROUTE = '/nx-open-cache/v1/run-report';
/** How long the plugin waits for the proxy's answer (the proxy's own bound is 2 s). */
const PROXY_WAIT_MS = 3000;
const OFF_VALUES = ['off', 'false', '0', 'no'];

/**
 * @typedef {{ id: string, hash: string, outcome: string, durationMs?: number, savedMs?: number,
 *   bytes?: number }} ReportTask
 * @typedef {{ format: string, version: number, runId: string, startedAt: string, endedAt: string,
 *   nxVersion?: string, command?: string, tasks: ReportTask[] }} RunReport
 * @typedef {{ forwarded: boolean, status?: number | null, reason?: string | null }} SendResult
 */

/**
 * Whether this run sends a report: the `http` backend, not turned off by the option or the
 * variable.
 * @param {string | undefined} backend the resolved backend (`fs`, `s3`, ..., `http`)
 * @param {Record<string, unknown> | null | undefined} options the plugin's options
 * @param {Record<string, string | undefined>} env
 */
function runReportEnabled(backend, options, env) {
  if (backend !== 'http') return false;
  const option = options ? options.runReport : undefined;
  if (option === false || (typeof option === 'string' && OFF_VALUES.includes(option.trim().toLowerCase()))) return false;
  const variable = env.NX_OPEN_CACHE_RUN_REPORT;
  if (typeof variable === 'string' && OFF_VALUES.includes(variable.trim().toLowerCase())) return false;
  return true;
}

/** @param {unknown} v @returns {number | undefined} */
function whole(v) {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : undefined;
}

/**
 * The report of a run from its history record (lib/history.js's format, version 1): at most
 * 5,000 tasks and 1 MiB (tasks past either bound are left out).
 * @param {{ runId?: unknown, startedAt?: unknown, endedAt?: unknown, nxVersion?: unknown,
 *   command?: unknown, tasks?: unknown }} record
 * @returns {RunReport}
 */
function buildRunReport(record) {
  const tasks = [];
  for (const t of Array.isArray(record.tasks) ? record.tasks : []) {
    if (tasks.length >= MAX_TASKS) break;
    if (!t || !validId(t.id) || typeof t.hash !== 'string' || typeof t.outcome !== 'string') continue;
    /** @type {ReportTask} */
    const task = { id: t.id, hash: t.hash, outcome: t.outcome };
    const durationMs = whole(t.durationMs);
    if (durationMs !== undefined) task.durationMs = durationMs;
    const savedMs = whole(t.savedMs);
    if (savedMs !== undefined) task.savedMs = savedMs;
    const bytes = whole(t.bytes);
    if (bytes !== undefined) task.bytes = bytes;
    tasks.push(task);
  }
  const text = (/** @type {unknown} */ v) => (typeof v === 'string' ? v : undefined);
  /** @type {RunReport} */
  const report = {
    format: FORMAT,
    version: VERSION,
    // Without a usable run id from Nx, a random one: serve takes a (token, run id) once.
    runId: validId(record.runId) ? record.runId : `run-${crypto.randomUUID()}`,
    startedAt: text(record.startedAt) ?? new Date(0).toISOString(),
    endedAt: text(record.endedAt) ?? new Date().toISOString(),
    tasks,
  };
  const nxVersion = text(record.nxVersion);
  if (nxVersion) report.nxVersion = nxVersion;
  const command = text(record.command);
  if (command) report.command = command.slice(0, MAX_TEXT);
  // Within 1 MiB: drop tasks from the end until it fits (a task is ~150 bytes: 5,000 fit).
  while (report.tasks.length > 0 && Buffer.byteLength(JSON.stringify(report)) > MAX_BYTES) {
    report.tasks = report.tasks.slice(0, Math.floor(report.tasks.length * 0.9));
  }
  return report;
}

/**
 * Posts `report` to a running proxy; never rejects.
 * @param {{ url: string, token: string }} proxy
 * @param {RunReport} report
 * @returns {Promise<SendResult>}
 */
async function sendThroughProxy(proxy, report) {
  try {
    const resp = await fetch(`${proxy.url}${PROXY_ROUTE}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${proxy.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(report),
      signal: AbortSignal.timeout(PROXY_WAIT_MS),
    });
    if (resp.status === 204) return { forwarded: false, reason: 'this backend takes no run reports' };
    const text = await resp.text();
    if (resp.status !== 200) return { forwarded: false, status: resp.status, reason: text.slice(0, 300) };
    const answer = JSON.parse(text);
    return { forwarded: answer.forwarded === true, status: answer.status, reason: answer.reason };
  } catch (e) {
    return { forwarded: false, reason: `the proxy did not take the run report: ${/** @type {Error} */ (e).message}` };
  }
}

/**
 * Sends the run's report to the `http` backend's server, through `proxy` while it runs, else
 * straight from the addon. Resolves with how it went, or undefined when this run sends none (not
 * the http backend, turned off); never rejects.
 * @param {{
 *   addon: { sendRunReport(root: string, options: any, env: Record<string, string>, report: string): Promise<SendResult | null> },
 *   workspaceRoot: string,
 *   options: Record<string, unknown> | null | undefined,
 *   env: Record<string, string>,
 *   backend: string | undefined,
 *   record: Parameters<typeof buildRunReport>[0],
 *   proxy?: { url: string, token: string },
 * }} run
 * @returns {Promise<SendResult | undefined>}
 */
async function sendRunReport(run) {
  try {
    if (!runReportEnabled(run.backend, run.options, run.env)) return undefined;
    const report = buildRunReport(run.record);
    if (run.proxy) return await sendThroughProxy(run.proxy, report);
    const sent = await run.addon.sendRunReport(run.workspaceRoot, run.options ?? null, run.env, JSON.stringify(report));
    return sent ?? undefined;
  } catch (e) {
    return { forwarded: false, reason: /** @type {Error} */ (e).message };
  }
}

/**
 * A run's record in the history's shape, for a run without one (no history): the outcome of each
 * task from Nx's status and the proxy's events for its hash.
 * @param {{ id?: string, argv?: readonly string[], taskResults?: Record<string, any> }} context
 * @param {{ runId?: string, startedAt?: string, endedAt?: string, command?: string,
 *   events?: { hash: string, op: string, outcome: string, bytes: number }[] }} summary
 * @param {string} [nxVersion]
 */
function recordOfRun(context, summary, nxVersion) {
  /** @type {Map<string, { get?: { outcome: string, bytes: number }, put?: { outcome: string, bytes: number } }>} */
  const byHash = new Map();
  for (const e of summary.events ?? []) {
    const seen = byHash.get(e.hash) ?? {};
    if (e.op === 'get' || e.op === 'put') seen[e.op] = e;
    byHash.set(e.hash, seen);
  }
  const tasks = [];
  for (const [id, result] of Object.entries(context.taskResults ?? {})) {
    const task = result && result.task;
    if (!task || typeof task.hash !== 'string') continue;
    const seen = byHash.get(task.hash) ?? {};
    const { outcome, bytes } = outcomeOf(result.status, seen);
    const durationMs = typeof task.endTime === 'number' && typeof task.startTime === 'number' ? task.endTime - task.startTime : undefined;
    tasks.push({ id, hash: task.hash, outcome, durationMs, bytes });
  }
  return { runId: summary.runId ?? context.id, startedAt: summary.startedAt, endedAt: summary.endedAt, command: summary.command, nxVersion, tasks };
}

/**
 * @param {string} status Nx's task status
 * @param {{ get?: { outcome: string, bytes: number }, put?: { outcome: string, bytes: number } }} seen
 * @returns {{ outcome: string, bytes?: number }}
 */
function outcomeOf(status, seen) {
  if (status === 'remote-cache') return { outcome: 'remote-hit', bytes: seen.get && seen.get.outcome === 'hit' ? seen.get.bytes : undefined };
  if (typeof status === 'string' && status.startsWith('local-cache')) return { outcome: 'local-hit' };
  if (status === 'failure') return { outcome: 'failed' };
  if (status === 'skipped' || status === 'stopped') return { outcome: 'not-run' };
  const put = seen.put;
  if (put && (put.outcome === 'stored' || put.outcome === 'already-stored')) return { outcome: 'stored', bytes: put.bytes || undefined };
  if (put && put.outcome === 'refused') return { outcome: 'refused' };
  return { outcome: 'not-stored' };
}

/** @param {string} root @returns {string | undefined} the workspace's Nx version */
function nxVersionOf(root) {
  try {
    return require(require.resolve('nx/package.json', { paths: [root] })).version;
  } catch {
    return undefined;
  }
}

/**
 * The plugin's call at the end of a run (postTasksExecution, after its summary): sends the run's
 * report when its backend is http and it used the cache. Silent (NX_OPEN_CACHE_DEBUG prints how it
 * went); never rejects.
 * @param {{ id?: string, workspaceRoot: string, nxJsonConfiguration?: unknown, argv?: readonly string[], taskResults?: Record<string, any> }} context
 * @param {Record<string, unknown> | undefined} pluginOptions the options Nx gave the hook
 * @param {{ location?: string, mode?: string, runId?: string, startedAt?: string, endedAt?: string, command?: string, events?: any[], errors?: { skipped?: boolean }[] }} summary
 * @param {Parameters<typeof buildRunReport>[0]} [record] the run's history record, when there is one
 * @returns {Promise<SendResult | undefined>}
 */
async function reportRun(context, pluginOptions, summary, record) {
  const backend = String(summary.location ?? '').split(' ')[0];
  if (backend !== 'http' || summary.mode === 'no-cache') return undefined;
  // A server the run gave up on (down, refusing the token...) is not asked again at its end.
  if ((summary.errors ?? []).some((e) => e.skipped)) return undefined;
  let sent;
  try {
    let nxJson = context.nxJsonConfiguration;
    if (nxJson === undefined) {
      try {
        nxJson = readNxJson(context.workspaceRoot);
      } catch {
        nxJson = undefined;
      }
    }
    const input = workspaceInput(nxJson, { env: process.env, entryOptions: /** @type {any} */ (pluginOptions ?? null) });
    sent = await sendRunReport({
      addon: require('../index.js'),
      workspaceRoot: context.workspaceRoot,
      options: /** @type {Record<string, unknown> | null} */ (input.options ?? null),
      env: input.env,
      backend,
      record: record ?? recordOfRun(context, summary, nxVersionOf(context.workspaceRoot)),
    });
  } catch (e) {
    sent = { forwarded: false, reason: /** @type {Error} */ (e).message };
  }
  if (sent && truthy(process.env.NX_OPEN_CACHE_DEBUG)) {
    console.log(`nx-open-cache: run report ${sent.forwarded ? 'sent' : `not sent (${sent.reason ?? sent.status})`}`);
  }
  return sent;
}

module.exports = { buildRunReport, recordOfRun, reportRun, runReportEnabled, sendRunReport, MAX_BYTES, MAX_TASKS, PROXY_ROUTE };
