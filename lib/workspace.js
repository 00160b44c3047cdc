'use strict';
/**
 * What an Nx workspace configures for nx-open-cache, found once for the plugin, the CLI (`config`,
 * `gc`), doctor and the init generator: the workspace root, nx.json, the plugin's entry, the
 * deprecated top-level s3/gcs/azure block (lib/legacy.js) and the environment.
 *
 * One rule decides which entry wins: the FIRST entry of `nx-open-cache` in nx.json's `plugins`
 * (a string or an object with `plugin`). A deprecated block applies when that entry names no
 * backend (its options then override the block's). Nx runs the hooks of every entry; the plugin's
 * hooks for a later entry with other options stay out (lib/plugin.js), so every command reports the
 * configuration that the runs use.
 */

const fs = require('node:fs');
const path = require('node:path');
const { withLegacy, ENCRYPTION_KEY_VAR, ENCRYPTION_KEY_FROM_VAR } = require('./legacy.js');

const PLUGIN_NAME = 'nx-open-cache';

/**
 * @typedef {import('./legacy.js').LegacyMapping} LegacyMapping
 * @typedef {Record<string, unknown>} PluginOptions
 */

/**
 * The plugin's entry in nx.json.
 * @typedef {object} PluginEntry
 * @property {number} index  its position in `plugins`
 * @property {PluginOptions} options  its options (`{}` for the string form)
 * @property {number} count  how many entries name the plugin (only the first is used)
 * @property {string[]} later  the other entries' options, as JSON
 */

/**
 * The effective input of the native configuration (`resolveConfig`, `doctor`, the proxy).
 * @typedef {object} WorkspaceInput
 * @property {PluginEntry | undefined} entry  the winning entry, undefined when nx.json has none
 * @property {LegacyMapping | null} legacy  the deprecated block, when it applies
 * @property {PluginOptions | null} options  the entry's options, with the block's under them
 * @property {Record<string, string>} env  the environment, plus the block's secrets (never written anywhere)
 * @property {boolean} configured  whether nx.json configures the cache at all (an entry or a block)
 */

/**
 * Whether an environment value switches something on (`1`, `true`, `yes`, `on`, any case).
 * @param {string | undefined} value
 */
function truthy(value) {
  return value !== undefined && ['1', 'true', 'yes', 'on'].includes(value.trim().toLowerCase());
}

/**
 * The nearest directory at or above `from` that has an nx.json, bounded in depth.
 * @param {string} from
 * @returns {string | undefined}
 */
function findWorkspaceRoot(from) {
  let dir = path.resolve(from);
  for (let i = 0; i < 100; i += 1) {
    if (fs.existsSync(path.join(dir, 'nx.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}

/**
 * The parsed nx.json of `root`; throws naming the file and the reason.
 * @param {string} root
 * @returns {unknown}
 */
function readNxJson(root) {
  const file = path.join(root, 'nx.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read ${file}: ${/** @type {Error} */ (e).message}`);
  }
}

/**
 * Whether a `plugins` entry of nx.json is nx-open-cache's.
 * @param {unknown} entry
 */
function isOurEntry(entry) {
  if (typeof entry === 'string') return entry === PLUGIN_NAME;
  return !!entry && typeof entry === 'object' && /** @type {{ plugin?: unknown }} */ (entry).plugin === PLUGIN_NAME;
}

/**
 * The winning (first) plugin entry of `nxJson`, or undefined when there is none.
 * @param {unknown} nxJson
 * @returns {PluginEntry | undefined}
 */
function pluginEntry(nxJson) {
  const plugins = nxJson && typeof nxJson === 'object' ? /** @type {{ plugins?: unknown }} */ (nxJson).plugins : undefined;
  if (!Array.isArray(plugins)) return undefined;
  const index = plugins.findIndex(isOurEntry);
  if (index === -1) return undefined;
  /** @param {unknown} e */
  const optionsOf = (e) => (e && typeof e === 'object' && /** @type {{ options?: unknown }} */ (e).options && typeof /** @type {{ options?: unknown }} */ (e).options === 'object'
    ? /** @type {PluginOptions} */ (/** @type {{ options?: unknown }} */ (e).options)
    : {});
  const ours = plugins.filter(isOurEntry);
  return { index, options: optionsOf(plugins[index]), count: ours.length, later: ours.slice(1).map((e) => JSON.stringify(optionsOf(e))) };
}

/**
 * Whether `options` (given by Nx to a hook) are the winning entry's: with several entries Nx runs
 * the hooks once per entry, and only the first entry's run uses the cache. Options that are no
 * later entry's (Nx passed them otherwise than nx.json holds them) are taken as the first's, so
 * the cache is never left off without a word.
 * @param {PluginEntry} entry
 * @param {PluginOptions | null | undefined} options
 */
function isWinningEntry(entry, options) {
  const given = JSON.stringify(options ?? {});
  return entry.count <= 1 || JSON.stringify(entry.options) === given || !entry.later.includes(given);
}

/**
 * The string-valued variables of an environment.
 * @param {NodeJS.ProcessEnv} source
 * @returns {Record<string, string>}
 */
function envObject(source) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [k, v] of Object.entries(source)) if (typeof v === 'string') out[k] = v;
  return out;
}

/**
 * The configuration input of a workspace: the winning entry (or `entryOptions`, the options Nx
 * gave a hook), the deprecated block under it, the environment with the block's secrets.
 * @param {unknown} nxJson  the parsed nx.json (undefined when unreadable: no block is looked at)
 * @param {{ env?: NodeJS.ProcessEnv, entryOptions?: PluginOptions | null }} [o]
 * @returns {WorkspaceInput}
 */
function workspaceInput(nxJson, o = {}) {
  const entry = pluginEntry(nxJson);
  const own = 'entryOptions' in o ? o.entryOptions ?? undefined : entry?.options;
  const { options, legacy } = withLegacy(own, nxJson);
  const env = envObject(o.env ?? process.env);
  if (legacy) {
    Object.assign(env, legacy.secretEnv);
    // Tells the native side that the encryption key came from nx.json (for its error message).
    if (legacy.secretEnv[ENCRYPTION_KEY_VAR]) env[ENCRYPTION_KEY_FROM_VAR] = legacy.kind;
  }
  return { entry, legacy, options: options ?? null, env, configured: entry !== undefined || legacy !== null };
}

/**
 * What a user should know about where the configuration came from: the deprecated block, other
 * blocks, secrets in nx.json, duplicate entries.
 * @param {WorkspaceInput} input
 * @param {string} user  who uses the block's secrets, e.g. "this run's proxy"
 * @returns {string[]}
 */
function inputNotes(input, user) {
  const notes = [];
  const { legacy, entry } = input;
  if (entry && entry.count > 1) {
    notes.push(`nx.json lists ${PLUGIN_NAME} ${entry.count} times: the first entry is used, the others are ignored`);
  }
  if (!legacy) return notes;
  notes.push(
    `using the deprecated top-level "${legacy.kind}" block of nx.json (${legacy.moved.join(', ') || 'no settings'}); ` +
      '`nx g nx-open-cache:init` migrates it into the plugin options',
  );
  if (legacy.others.length > 0) {
    notes.push(`nx.json also has top-level ${legacy.others.map((k) => `"${k}"`).join(', ')} block(s): ignored, "${legacy.kind}" is used`);
  }
  if (legacy.secrets.length > 0) {
    const fixes = [];
    if (legacy.secrets.some((k) => k !== 'encryptionKey')) {
      fixes.push('set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment (or use web identity or an instance role)');
    }
    if (legacy.secrets.includes('encryptionKey')) fixes.push('set NX_OPEN_CACHE_ENCRYPTION_KEY in the environment');
    notes.push(
      `credentials from nx.json: ${legacy.secrets.map((k) => `${legacy.kind}.${k}`).join(' and ')} are used for ${user} only; ` +
        `keep secrets out of nx.json: ${fixes.join(', and ')}, and remove them from nx.json`,
    );
  }
  return notes;
}

module.exports = {
  PLUGIN_NAME,
  truthy,
  findWorkspaceRoot,
  readNxJson,
  isOurEntry,
  pluginEntry,
  isWinningEntry,
  envObject,
  workspaceInput,
  inputNotes,
};
