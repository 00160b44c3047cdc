'use strict';
/**
 * `nx g nx-open-cache:init` (also what `nx add nx-open-cache` runs).
 *
 * Adds the nx-open-cache plugin entry to nx.json, or updates an existing one in place:
 *   {"plugin": "nx-open-cache", "options": {"backend": "fs", "path": "~/.cache/nx-open-cache"}}
 *
 * Idempotent: with the same options a second run writes nothing. Only the `nx` package is
 * used at runtime (no @nx/devkit).
 */
const path = require('node:path');
const { readNxJson, updateNxJson, writeJson, logger } = require('nx/src/devkit-exports');

const PLUGIN_NAME = 'nx-open-cache';
const BACKENDS = ['fs'];
const MODES = ['read-write', 'read-only', 'no-cache'];
const DEFAULT_BACKEND = 'fs';
const DEFAULT_PATH = '~/.cache/nx-open-cache';
/** Options this generator writes, in the order they are written for a new entry. */
const OPTION_KEYS = /** @type {const} */ (['backend', 'path', 'prefix', 'localMode', 'ciMode']);

/**
 * @typedef {object} InitSchema
 * @property {string} [backend]   storage backend; only `fs` for now
 * @property {string} [path]      fs backend: shared directory (absolute, relative to the workspace root, or `~/...`)
 * @property {string} [prefix]    key prefix inside the store
 * @property {string} [localMode] `read-write` | `read-only` | `no-cache`
 * @property {string} [ciMode]    `read-write` | `read-only` | `no-cache`
 * @property {boolean} [keepExistingVersions] passed by `nx add`; no effect (nothing is installed)
 */

/**
 * @typedef {Record<string, unknown>} PluginOptions
 * @typedef {string | {plugin: string, options?: PluginOptions, [key: string]: unknown}} PluginEntry
 */

/**
 * @param {string} flag
 * @param {unknown} value
 * @param {readonly string[]} allowed
 */
function checkEnum(flag, value, allowed) {
  if (value === undefined) return;
  if (typeof value !== 'string' || !allowed.includes(value)) {
    throw new Error(
      `nx-open-cache: invalid value ${JSON.stringify(value)} for --${flag}; allowed values: ${allowed.join(', ')}`,
    );
  }
}

/**
 * @param {string} flag
 * @param {unknown} value
 */
function checkNonEmptyString(flag, value) {
  if (value === undefined) return;
  if (typeof value !== 'string' || value.trim() === '') {
    throw new Error(`nx-open-cache: invalid value ${JSON.stringify(value)} for --${flag}; expected a non-empty string`);
  }
}

/**
 * Validates the flags and returns only the options the user actually gave.
 * @param {InitSchema} schema
 * @returns {Partial<Record<typeof OPTION_KEYS[number], string>>}
 */
function normalizeOptions(schema) {
  checkEnum('backend', schema.backend, BACKENDS);
  checkNonEmptyString('path', schema.path);
  if (schema.prefix !== undefined && typeof schema.prefix !== 'string') {
    throw new Error(`nx-open-cache: invalid value ${JSON.stringify(schema.prefix)} for --prefix; expected a string`);
  }
  checkEnum('localMode', schema.localMode, MODES);
  checkEnum('ciMode', schema.ciMode, MODES);
  /** @type {Partial<Record<typeof OPTION_KEYS[number], string>>} */
  const given = {};
  for (const key of OPTION_KEYS) {
    if (schema[key] !== undefined) given[key] = schema[key];
  }
  return given;
}

/** @param {unknown} entry */
function isOurEntry(entry) {
  if (typeof entry === 'string') return entry === PLUGIN_NAME;
  return !!entry && typeof entry === 'object' && /** @type {any} */ (entry).plugin === PLUGIN_NAME;
}

/** @param {unknown} v */
function show(v) {
  return v === undefined ? '(unset)' : typeof v === 'string' ? v : JSON.stringify(v);
}

/**
 * Computes the new options for our entry.
 * @param {PluginOptions | undefined} existing  current options (undefined for a new or string-form entry)
 * @param {ReturnType<typeof normalizeOptions>} given
 * @returns {PluginOptions}
 */
function mergeOptions(existing, given) {
  /** @type {PluginOptions} */
  const next = existing ? { ...existing } : {};
  const backend = given.backend ?? (next.backend === undefined ? DEFAULT_BACKEND : next.backend);
  if (backend !== DEFAULT_BACKEND && given.path !== undefined) {
    throw new Error(
      `nx-open-cache: nx.json already configures backend ${show(backend)}; --path applies to the fs backend only ` +
        `(pass --backend fs to switch to it)`,
    );
  }
  next.backend = backend;
  if (backend === 'fs') {
    next.path = given.path ?? (next.path === undefined ? DEFAULT_PATH : next.path);
  }
  for (const key of /** @type {const} */ (['prefix', 'localMode', 'ciMode'])) {
    if (given[key] !== undefined) next[key] = given[key];
  }
  if (existing) return next;
  // A new entry gets the keys in a stable, readable order.
  /** @type {PluginOptions} */
  const ordered = {};
  for (const key of OPTION_KEYS) if (next[key] !== undefined) ordered[key] = next[key];
  return ordered;
}

/**
 * If `cachePath` is a relative path inside the workspace, returns its .gitignore line
 * (`/dir`), else null.
 * @param {string} cachePath
 * @returns {string | null}
 */
function gitignoreEntryFor(cachePath) {
  const p = cachePath.replace(/\\/g, '/');
  if (p.startsWith('~') || path.posix.isAbsolute(p) || path.win32.isAbsolute(cachePath)) return null;
  const norm = path.posix.normalize(p).replace(/\/+$/, '');
  if (norm === '' || norm === '.' || norm === '..' || norm.startsWith('../')) return null;
  return `/${norm}`;
}

/**
 * Appends `entry` to .gitignore unless an equivalent line is already there.
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {string} entry  `/dir`
 * @returns {boolean} whether .gitignore was changed
 */
function addToGitignore(tree, entry) {
  const current = tree.read('.gitignore', 'utf-8') ?? '';
  const bare = entry.slice(1);
  const present = current
    .split(/\r?\n/)
    .map((l) => l.trim().replace(/^\//, '').replace(/\/+$/, ''))
    .some((l) => l === bare);
  if (present) return false;
  const sep = current === '' || current.endsWith('\n') ? '' : '\n';
  tree.write('.gitignore', `${current}${sep}${entry}\n`);
  return true;
}

/**
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {InitSchema} schema
 * @returns {Promise<void>}
 */
async function initGenerator(tree, schema) {
  const given = normalizeOptions(schema ?? {});
  const hasNxJson = tree.exists('nx.json');
  /** @type {Record<string, any>} */
  const nxJson = (hasNxJson ? readNxJson(tree) : null) ?? {};
  if (nxJson.plugins !== undefined && !Array.isArray(nxJson.plugins)) {
    throw new Error('nx-open-cache: "plugins" in nx.json is not an array; fix nx.json and run the generator again');
  }
  /** @type {PluginEntry[]} */
  const plugins = nxJson.plugins ?? [];
  const index = plugins.findIndex(isOurEntry);

  /** @type {string[]} */
  const messages = [];
  let changed = false;
  /** @type {PluginOptions} */
  let finalOptions;

  if (index === -1) {
    finalOptions = mergeOptions(undefined, given);
    nxJson.plugins = [...plugins, { plugin: PLUGIN_NAME, options: finalOptions }];
    changed = true;
    messages.push(`nx-open-cache: added plugin to nx.json (${describe(finalOptions)})`);
  } else {
    const entry = plugins[index];
    if (plugins.slice(index + 1).some(isOurEntry)) {
      logger.warn(`nx-open-cache: nx.json lists ${PLUGIN_NAME} more than once; only the first entry was checked`);
    }
    if (typeof entry === 'string') {
      finalOptions = mergeOptions(undefined, given);
      nxJson.plugins = plugins.map((e, i) => (i === index ? { plugin: PLUGIN_NAME, options: finalOptions } : e));
      changed = true;
      messages.push(`nx-open-cache: converted the "${PLUGIN_NAME}" entry in nx.json to object form (${describe(finalOptions)})`);
    } else {
      const before = entry.options ?? undefined;
      finalOptions = mergeOptions(before ?? {}, given);
      /** @type {string[]} */
      const diffs = [];
      for (const key of Object.keys(finalOptions)) {
        const a = before?.[key];
        const b = finalOptions[key];
        if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`${key} ${show(a)} -> ${show(b)}`);
      }
      if (diffs.length > 0) {
        nxJson.plugins = plugins.map((e, i) => (i === index ? { ...entry, options: finalOptions } : e));
        changed = true;
        messages.push(`nx-open-cache: updated options: ${diffs.join(', ')}`);
      } else {
        messages.push(`nx-open-cache: already configured, nothing changed (${describe(finalOptions)})`);
      }
    }
  }

  if (changed) {
    if (hasNxJson) updateNxJson(tree, /** @type {any} */ (nxJson));
    else writeJson(tree, 'nx.json', nxJson);
  }

  if (typeof finalOptions.path === 'string' && tree.exists('.gitignore')) {
    const entry = gitignoreEntryFor(finalOptions.path);
    if (entry && addToGitignore(tree, entry)) {
      messages.push(`nx-open-cache: added ${entry} to .gitignore`);
    }
  }

  for (const m of messages) logger.info(m);
}

/** @param {PluginOptions} options */
function describe(options) {
  return Object.entries(options)
    .map(([k, v]) => `${k} ${show(v)}`)
    .join(', ');
}

module.exports = initGenerator;
module.exports.default = initGenerator;
module.exports.initGenerator = initGenerator;
module.exports.BACKENDS = BACKENDS;
module.exports.MODES = MODES;
module.exports.DEFAULT_PATH = DEFAULT_PATH;
