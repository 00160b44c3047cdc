'use strict';
// The Nx plugin: preTasksExecution starts the native cache proxy and points Nx's own remote-cache
// client at it; postTasksExecution stops it and reports the run.

const fs = require('node:fs');
const path = require('node:path');

const { formatSummary, formatSummaryTable, summaryMode, writeSummary } = require('./summary.js');
const { withLegacy } = require('./legacy.js');

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
 * @typedef {{ proxy: import('../index').CacheProxy, modeSource: string, startedAt: Date }} Run
 */

/** Proxies by Nx run id (the daemon may serve several runs at once). @type {Map<string, Run>} */
const runs = new Map();
/** Notices already printed in this process. @type {Set<string>} */
const said = new Set();

/** @param {string} message */
function noticeOnce(message) {
  if (said.has(message)) return;
  said.add(message);
  console.log(`nx-open-cache: ${message}`);
}

/** @param {string | undefined} v */
function truthy(v) {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());
}

/**
 * nx.json, for an Nx that does not pass it in the hook's context; undefined when unreadable (the
 * legacy blocks are then simply not looked at).
 * @param {string} workspaceRoot
 * @returns {unknown}
 */
function readNxJson(workspaceRoot) {
  try {
    return JSON.parse(fs.readFileSync(path.join(workspaceRoot, 'nx.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** @returns {Record<string, string>} */
function envObject() {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (typeof v === 'string') out[k] = v;
  }
  return out;
}

/**
 * Why the plugin should stay out of this run, if it should.
 * @param {readonly string[] | undefined} argv
 * @returns {string | undefined}
 */
function reasonToStayOut(argv) {
  const args = argv || [];
  if (args.some((a) => a === '--skip-remote-cache' || a === '--skipRemoteCache' || a === '--skip-remote-cache=true')) {
    return 'remote cache skipped (--skip-remote-cache): not starting';
  }
  if (truthy(process.env.NX_SKIP_REMOTE_CACHE)) {
    return 'remote cache skipped (NX_SKIP_REMOTE_CACHE): not starting';
  }
  if (truthy(process.env.NX_DISABLE_REMOTE_CACHE)) {
    return 'remote cache disabled (NX_DISABLE_REMOTE_CACHE): not starting';
  }
  const server = process.env[SERVER];
  if (server && server !== process.env[OWN_URL]) {
    return `${SERVER} is already set (${server}): nx-open-cache stays out of the way and Nx uses that server`;
  }
  return undefined;
}

/**
 * @param {Record<string, unknown> | undefined} pluginOptions
 * @param {{ id?: string, workspaceRoot: string, argv?: readonly string[], nxJsonConfiguration?: unknown }} context
 */
async function preTasksExecution(pluginOptions, context) {
  const stayOut = reasonToStayOut(context.argv);
  if (stayOut) {
    noticeOnce(stayOut);
    return;
  }
  const env = envObject();
  // A workspace still configured for a deprecated @nx/*-cache plugin (top-level s3/gcs/azure block)
  // works unchanged when the plugin entry names no backend.
  const { options, legacy } = withLegacy(pluginOptions, context.nxJsonConfiguration ?? readNxJson(context.workspaceRoot));
  if (legacy) {
    noticeOnce(
      `using the deprecated top-level "${legacy.kind}" block of nx.json (${legacy.moved.join(', ') || 'no settings'}); ` +
        '`nx g nx-open-cache:init` migrates it into the plugin options',
    );
    if (legacy.others.length > 0) {
      noticeOnce(`nx.json also has top-level ${legacy.others.map((k) => `"${k}"`).join(', ')} block(s): ignored, "${legacy.kind}" is used`);
    }
    if (legacy.secrets.length > 0) {
      // Given to this run's proxy only: never written anywhere, never put in process.env.
      Object.assign(env, legacy.secretEnv);
      const fixes = [];
      if (legacy.secrets.some((k) => k !== 'encryptionKey')) {
        fixes.push('set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment (or use web identity or an instance role)');
      }
      if (legacy.secrets.includes('encryptionKey')) fixes.push('set NX_OPEN_CACHE_ENCRYPTION_KEY in the environment');
      noticeOnce(
        `nx.json's ${legacy.secrets.map((k) => `${legacy.kind}.${k}`).join(' and ')} are used for this run's proxy only; ` +
          `keep secrets out of nx.json: ${fixes.join(', and ')}, and remove them from nx.json`,
      );
    }
  }
  let addon;
  try {
    addon = native();
  } catch (e) {
    noticeOnce(`cannot load the native addon (${/** @type {Error} */ (e).message}): running without the remote cache`);
    return;
  }
  // Throws, before any task runs, on a wrong option: the message names option, value and choices.
  const config = addon.resolveConfig(context.workspaceRoot, options ?? null, env);
  if (config.mode === 'no-cache') {
    noticeOnce(`mode is no-cache (${config.modeSource}): remote cache not used`);
    return;
  }
  let proxy;
  try {
    proxy = addon.CacheProxy.start(context.workspaceRoot, options ?? null, env);
  } catch (e) {
    // A cache that cannot start must not fail the build.
    noticeOnce(`cannot start the cache proxy (${/** @type {Error} */ (e).message}): running without the remote cache`);
    return;
  }
  runs.set(context.id ?? 'default', { proxy, modeSource: config.modeSource, startedAt: new Date() });
  process.env[SERVER] = proxy.url;
  process.env[TOKEN] = proxy.token;
  process.env[OWN_URL] = proxy.url;
  if (config.debug) {
    console.error(`nx-open-cache: proxy ${proxy.url} -> ${proxy.location} (${proxy.mode}, ${config.modeSource})`);
  }
}

/**
 * @param {Record<string, unknown> | undefined} _options
 * @param {{ id?: string, workspaceRoot: string }} context
 */
async function postTasksExecution(_options, context) {
  const id = context.id ?? 'default';
  let run = runs.get(id);
  if (!run && runs.size === 1) {
    // An Nx without run ids: the only proxy is this run's.
    const [only] = runs.keys();
    run = runs.get(only);
    runs.delete(only);
  } else {
    runs.delete(id);
  }
  if (!run) return;
  const stats = await run.proxy.stop();
  const summary = {
    ...stats,
    location: run.proxy.location,
    mode: run.proxy.mode,
    modeSource: run.modeSource,
    runId: id,
    startedAt: run.startedAt.toISOString(),
    endedAt: new Date().toISOString(),
  };
  const writeError = writeSummary(context.workspaceRoot, summary);
  const { mode, warning } = summaryMode(process.env.NX_OPEN_CACHE_SUMMARY);
  if (warning) console.log(warning);
  if (mode !== 'off') {
    console.log(mode === 'table' ? formatSummaryTable(summary) : formatSummary(summary));
    if (writeError) console.log(`  (${writeError})`);
  }
}

module.exports = { preTasksExecution, postTasksExecution };
