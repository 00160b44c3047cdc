'use strict';
/**
 * The deprecated bucket plugins (@nx/s3-cache, @nx/gcs-cache, @nx/azure-cache) were configured by a
 * top-level `s3` / `gcs` / `azure` block in nx.json. This module maps such a block onto
 * nx-open-cache's plugin options, for the plugin (a workspace that still has the block works
 * unchanged) and for the init generator (which offers to migrate it).
 *
 * Secrets (`accessKeyId`, `secretAccessKey`, `encryptionKey`) never become options: the plugin hands
 * them to its own proxy as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / NX_OPEN_CACHE_ENCRYPTION_KEY
 * (an encryption key already in the environment wins), the generator never copies them.
 */

/** The blocks, in the order they are looked at. */
const LEGACY_KINDS = /** @type {const} */ (['s3', 'gcs', 'azure']);

/** Keys of a legacy block that map to an option of the same name, per backend. */
const SAME_NAME = /** @type {const} */ ({
  s3: ['bucket', 'region', 'endpoint', 'forcePathStyle'],
  gcs: ['bucket'],
  azure: ['container', 'accountName'],
});
/** Keys common to every legacy block. */
const COMMON = /** @type {const} */ (['localMode', 'ciMode']);
/** Secret keys: never written anywhere. Maps to the variable of the cloud's standard chain. */
const SECRETS = /** @type {const} */ ({ accessKeyId: 'AWS_ACCESS_KEY_ID', secretAccessKey: 'AWS_SECRET_ACCESS_KEY' });
/** The deprecated plugins' artifact encryption key (every block): nx-open-cache's encryption key. */
const ENCRYPTION_KEY_VAR = 'NX_OPEN_CACHE_ENCRYPTION_KEY';
/** Set for the native side when NX_OPEN_CACHE_ENCRYPTION_KEY comes from a deprecated block of nx.json. */
const ENCRYPTION_KEY_FROM_VAR = 'NX_OPEN_CACHE_ENCRYPTION_KEY_FROM';

/**
 * @typedef {object} LegacyMapping
 * @property {'s3' | 'gcs' | 'azure'} kind     which block
 * @property {Record<string, unknown>} options  plugin options equivalent to the block (no secrets)
 * @property {Record<string, string>} secretEnv  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 *   NX_OPEN_CACHE_ENCRYPTION_KEY from the block
 * @property {string[]} moved    `key -> option` descriptions of what was mapped
 * @property {string[]} secrets  secret keys found in the block (names only)
 * @property {string[]} ignored  keys of the block that have no equivalent
 * @property {string[]} others   other legacy blocks present (not used)
 */

/**
 * The legacy block of `nxJson`, mapped, or null when there is none.
 * @param {unknown} nxJson  the parsed nx.json
 * @param {Record<string, string | undefined>} [env]  the environment (its encryption key wins)
 * @returns {LegacyMapping | null}
 */
function legacyBlock(nxJson, env = process.env) {
  if (!nxJson || typeof nxJson !== 'object') return null;
  const json = /** @type {Record<string, unknown>} */ (nxJson);
  const present = LEGACY_KINDS.filter((k) => json[k] && typeof json[k] === 'object' && !Array.isArray(json[k]));
  if (present.length === 0) return null;
  const kind = present[0];
  const block = /** @type {Record<string, unknown>} */ (json[kind]);
  /** @type {Record<string, unknown>} */ const options = { backend: kind };
  /** @type {Record<string, string>} */ const secretEnv = {};
  /** @type {string[]} */ const moved = [];
  /** @type {string[]} */ const secrets = [];
  /** @type {string[]} */ const ignored = [];
  const sameName = /** @type {readonly string[]} */ (SAME_NAME[kind]);
  for (const [key, value] of Object.entries(block)) {
    if (value === undefined || value === null) continue;
    if (sameName.includes(key) || /** @type {readonly string[]} */ (COMMON).includes(key)) {
      options[key] = value;
      moved.push(`${kind}.${key} -> ${key}`);
    } else if (key === 'cacheKeyPrefix') {
      options.prefix = value;
      moved.push(`${kind}.cacheKeyPrefix -> prefix`);
    } else if (key === 'encryptionKey') {
      secrets.push(key);
      if (typeof value === 'string' && value !== '' && !env[ENCRYPTION_KEY_VAR]) secretEnv[ENCRYPTION_KEY_VAR] = value;
    } else if (kind === 's3' && Object.prototype.hasOwnProperty.call(SECRETS, key)) {
      secrets.push(key);
      if (typeof value === 'string' && value !== '') secretEnv[SECRETS[/** @type {keyof typeof SECRETS} */ (key)]] = value;
    } else {
      ignored.push(`${kind}.${key}`);
    }
  }
  return { kind, options, secretEnv, moved, secrets, ignored, others: present.slice(1) };
}

/**
 * The plugin's effective options: `options` as given when they name a backend or there is no
 * legacy block; otherwise the legacy block's options, with anything set in `options` winning.
 * @param {Record<string, unknown> | undefined | null} options  the plugin entry's options
 * @param {unknown} nxJson
 * @returns {{ options: Record<string, unknown> | undefined | null, legacy: LegacyMapping | null }}
 */
function withLegacy(options, nxJson) {
  if (options && typeof options === 'object' && options.backend !== undefined) return { options, legacy: null };
  const legacy = legacyBlock(nxJson);
  if (!legacy) return { options, legacy: null };
  return { options: { ...legacy.options, ...(options || {}) }, legacy };
}

module.exports = { LEGACY_KINDS, SECRETS, ENCRYPTION_KEY_VAR, ENCRYPTION_KEY_FROM_VAR, legacyBlock, withLegacy };
