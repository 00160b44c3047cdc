'use strict';
/**
 * `nx g nx-open-cache:init` (also what `nx add nx-open-cache` runs).
 *
 * Adds the nx-open-cache plugin entry to nx.json, or updates an existing one in place:
 *   {"plugin": "nx-open-cache", "options": {"backend": "fs", "path": "~/.cache/nx-open-cache"}}
 *   {"plugin": "nx-open-cache", "options": {"backend": "s3", "bucket": "my-cache", "region": "eu-west-1"}}
 *   {"plugin": "nx-open-cache", "options": {"backend": "http", "url": "https://cache.example.com"}}
 *
 * Its flags, their types, choices and backends, and the backends themselves come from the native
 * option schema (`optionSchema()`, through ./options.js; schema.json is generated from it), and the
 * options it writes are checked by the addon's `resolveConfig`, so the generator and the plugin
 * never disagree. Secrets are never written: credentials come from
 * each cloud's standard chain (environment, profiles, workload identity, ...); the http backend's token
 * from NX_OPEN_CACHE_TOKEN.
 *
 * A top-level `s3` / `gcs` / `azure` block of the deprecated @nx/*-cache plugins is migrated into the
 * plugin options (`--migrate`, the default when no flag conflicts with it); its accessKeyId /
 * secretAccessKey are never copied.
 *
 * `--trust=ci-split` sets trust namespaces for CI that also builds pull requests: by default a run
 * writes only to `untrusted/` and reads `trusted/` then `untrusted/`; trusted builds (main-branch CI)
 * opt in with NX_OPEN_CACHE_WRITE_PREFIX=trusted NX_OPEN_CACHE_READ_PREFIXES=trusted, so they never
 * restore what an untrusted build stored.
 *
 * `--signing` sets up signed artifacts: a new key pair from the addon's keygen, its public key
 * added to `trustedKeys` (and `requireSignature` on), the secret key printed once, never written.
 *
 * nx.json keeps its formatting: indentation, line endings, a final newline and the order of its
 * keys are those of the file. With `--check`, doctor runs on the new configuration before anything
 * is written: when the cache does not work, nx.json and .gitignore stay unchanged.
 *
 * Idempotent: with the same options a second run writes nothing, except with `--signing`, which
 * makes another key pair each run and adds its public key. Only the `nx` package is used at
 * runtime (no @nx/devkit).
 */
const os = require('node:os');
const path = require('node:path');
const { readNxJson, updateNxJson, logger, parseJson } = require('nx/src/devkit-exports');
const { legacyBlock } = require('../../lib/legacy.js');
const { isOurEntry, PLUGIN_NAME } = require('../../lib/workspace.js');
const { MAY_BE_EMPTY, flagOptions, flagTypes, forAllBackends, optionSchema } = require('./options.js');
const DEFAULT_BACKEND = 'fs';
const DEFAULT_PATH = '~/.cache/nx-open-cache';
/** Trust presets (`--trust`) and the plugin options each one writes. */
const TRUST_PRESETS = /** @type {Record<string, { writePrefix: string, readPrefixes: string[] }>} */ ({
  'ci-split': { writePrefix: 'untrusted', readPrefixes: ['trusted', 'untrusted'] },
});
/** The options a trust preset sets; not for the http backend (the server's tokens do that). */
const TRUST_OPTIONS = /** @type {const} */ (['writePrefix', 'readPrefixes']);
/** What a trusted build (main-branch CI) sets to opt in, with the ci-split preset. */
const TRUSTED_ENV = 'NX_OPEN_CACHE_WRITE_PREFIX=trusted NX_OPEN_CACHE_READ_PREFIXES=trusted';

/**
 * @typedef {object} InitSchema
 * @property {string} [backend]   storage backend: fs, s3, gcs, azure, http
 * @property {string} [path]      fs backend: shared directory (absolute, relative to the workspace root, or `~/...`)
 * @property {string} [bucket]    s3, gcs: the bucket
 * @property {string} [region]    s3: the region
 * @property {string} [endpoint]  s3 (S3-compatible stores: MinIO, R2, Ceph, ...), gcs, azure: the service URL
 * @property {boolean} [forcePathStyle] s3: path-style URLs (most S3-compatible stores want them)
 * @property {string} [container] azure: the blob container
 * @property {string} [accountName] azure: the storage account
 * @property {string} [url]       http: the Nx-protocol server's base URL, e.g. https://cache.example.com
 * @property {string} [oidcAudience] http: on GitHub Actions, the audience of the OIDC token fetched for the server
 * @property {string} [prefix]    key prefix inside the store
 * @property {string} [localMode] `read-write` | `read-only` | `no-cache`
 * @property {string} [ciMode]    `read-write` | `read-only` | `no-cache`
 * @property {number} [maxArtifactEntries] the artifact check: most paths in an artifact read (default 1000000)
 * @property {string | number} [maxExpandedSize] the artifact check: most bytes its tar stream inflates to, e.g. `8GiB` (default 32GiB)
 * @property {number} [maxExpansionRatio] the artifact check: most times its compressed size, above 256 MiB (default 200)
 * @property {string | number} [timeout] the cloud / http requests' timeout
 * @property {string | number} [connectTimeout] their connect timeout
 * @property {boolean} [requireSignature] refuse artifacts without a trusted signature
 * @property {string | string[]} [trustedKeys] public keys whose signatures are accepted (comma-separated or repeated)
 * @property {boolean} [signing] make a key pair: public key to trustedKeys, secret key printed once
 * @property {string} [trust]     trust preset: `ci-split` (untrusted builds write untrusted/ only)
 * @property {boolean} [migrate]  move a deprecated top-level s3/gcs/azure block into the plugin options
 * @property {boolean} [check]    after writing, run doctor; fail when the cache does not work
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

/** How the messages name a JSON type. */
const TYPE_WORDS = /** @type {Record<string, string>} */ ({ string: 'a string', number: 'a number', boolean: 'true or false', array: 'a list' });

/** @param {unknown} v */
function jsonType(v) {
  return Array.isArray(v) ? 'array' : typeof v;
}

/**
 * Backend-specific options (every option the native table does not apply to all backends), and
 * the backends each applies to.
 * @returns {Record<string, readonly string[]>}
 */
function backendOptions() {
  return Object.fromEntries(optionSchema().options.filter((o) => !forAllBackends(o)).map((o) => [o.name, o.backends]));
}

/**
 * One flag that is a plugin option, checked against the native table: its JSON type, its choices,
 * a non-empty string; an option of every backend (limits, timeouts) also by the addon itself, in
 * its own words.
 * @param {import('./options.js').OptionInfo} option
 * @param {unknown} value
 */
function checkFlag(option, value) {
  const { name } = option;
  const types = flagTypes(option);
  if (!types.includes(jsonType(value))) {
    throw new Error(`nx-open-cache: invalid value ${JSON.stringify(value)} for --${name}; expected ${types.map((t) => TYPE_WORDS[t] ?? t).join(' or ')}`);
  }
  if (option.choices.length > 0) checkEnum(name, value, option.choices);
  else if (typeof value === 'string' && value.trim() === '' && !MAY_BE_EMPTY.includes(name)) {
    throw new Error(`nx-open-cache: invalid value ${JSON.stringify(value)} for --${name}; expected a non-empty string`);
  }
  if (forAllBackends(option) && option.choices.length === 0) {
    validateWithAddon(os.tmpdir(), { backend: DEFAULT_BACKEND, path: os.tmpdir(), [name]: value });
  }
}

/**
 * Validates the flags and returns only the plugin options the user actually gave, in the native
 * table's order (the order a new entry is written in).
 * @param {InitSchema} schema
 * @returns {Record<string, unknown>}
 */
function normalizeOptions(schema) {
  const flags = /** @type {Record<string, unknown>} */ (schema);
  /** @type {Record<string, unknown>} */
  const given = {};
  for (const option of flagOptions()) {
    const v = flags[option.name];
    if (v === undefined) continue;
    checkFlag(option, v);
    given[option.name] = option.type === 'array' ? listFlag(option.name, v) : v;
  }
  if (given.trustedKeys !== undefined) checkNotSecret(/** @type {string[]} */ (given.trustedKeys));
  for (const key of /** @type {const} */ (['migrate', 'check', 'signing'])) {
    const v = schema[key];
    if (v !== undefined && typeof v !== 'boolean') {
      throw new Error(`nx-open-cache: invalid value ${JSON.stringify(v)} for --${key}; expected true or false`);
    }
  }
  checkEnum('trust', schema.trust, Object.keys(TRUST_PRESETS));
  if (schema.trust !== undefined) {
    const preset = TRUST_PRESETS[schema.trust];
    given.writePrefix = preset.writePrefix;
    given.readPrefixes = [...preset.readPrefixes];
  }
  return given;
}

/**
 * A list flag's values: `--x=a,b`, the flag repeated, or both; trimmed, without empty items or
 * repeats.
 * @param {string} name
 * @param {unknown} value  a string or a list (checked by checkFlag)
 * @returns {string[]}
 */
function listFlag(name, value) {
  const items = (Array.isArray(value) ? value : [value]).flatMap((v) => {
    if (typeof v !== 'string') {
      throw new Error(`nx-open-cache: invalid value ${JSON.stringify(v)} in --${name}; expected strings`);
    }
    return v.split(',');
  });
  const list = [...new Set(items.map((v) => v.trim()).filter((v) => v !== ''))];
  if (list.length === 0) {
    throw new Error(`nx-open-cache: invalid value ${JSON.stringify(value)} for --${name}; expected at least one value`);
  }
  return list;
}

/** The variable holding the signing (secret) key of trusted builds. */
const SIGNING_ENV = 'NX_OPEN_CACHE_SIGNING_KEY';

/**
 * Refuses a secret key given as a trusted (public) key: the one in NX_OPEN_CACHE_SIGNING_KEY here,
 * named by its position, never shown.
 * @param {string[]} keys
 */
function checkNotSecret(keys) {
  const secret = process.env[SIGNING_ENV]?.trim();
  const at = secret ? keys.indexOf(secret) : -1;
  if (at !== -1) {
    throw new Error(
      `nx-open-cache: --trustedKeys entry ${at + 1} is the SECRET key in ${SIGNING_ENV}, not a public key: ` +
        'nx.json is committed, so it must hold only public keys (`nx-open-cache keygen` prints both; ' +
        '`--signing` makes a pair and writes the right one). Nothing was written to nx.json',
    );
  }
}

/** @param {unknown} v */
function show(v) {
  return v === undefined ? '(unset)' : typeof v === 'string' ? v : JSON.stringify(v);
}

/**
 * Computes the new options for our entry.
 * @param {PluginOptions | undefined} existing  current options (undefined for a new or string-form entry)
 * @param {ReturnType<typeof normalizeOptions>} given
 * @param {{ defaultBackend?: boolean }} [opts]  defaultBackend false: leave `backend` unset when
 *   neither the flags nor the entry name one (a kept legacy block then configures the cache)
 * @returns {PluginOptions}
 */
function mergeOptions(existing, given, opts = {}) {
  /** @type {PluginOptions} */
  const next = existing ? { ...existing } : {};
  const current = next.backend;
  const defaultBackend = opts.defaultBackend !== false;
  const backend = given.backend ?? (current === undefined ? (defaultBackend ? DEFAULT_BACKEND : undefined) : current);
  const effective = backend === undefined ? DEFAULT_BACKEND : String(backend);
  if (effective === 'http' && TRUST_OPTIONS.some((k) => given[k] !== undefined)) {
    throw new Error(
      `nx-open-cache: --trust does not apply to the http backend: the server's token namespaces do that ` +
        '(give pull-request and main-branch builds different tokens with their own write_prefix / read_prefixes; ' +
        'README: "Tokens, roles and namespaces")',
    );
  }
  const perBackend = backendOptions();
  for (const [key, backends] of Object.entries(perBackend)) {
    if (given[key] === undefined || backends.includes(effective)) continue;
    const source = given.backend !== undefined ? 'you chose' : 'nx.json already configures';
    throw new Error(
      `nx-open-cache: ${source} backend ${show(effective)}; --${key} applies to the ${backends.join(', ')} backend${backends.length > 1 ? 's' : ''} only ` +
        `(pass --backend ${backends[0]} to switch to it)`,
    );
  }
  if (backend !== undefined) next.backend = backend;
  if (given.backend !== undefined && given.backend !== current) {
    // Switching backends: options that do not apply to the new one no longer mean anything.
    for (const [key, backends] of Object.entries(perBackend)) {
      if (!backends.includes(effective)) delete next[key];
    }
  }
  if (effective === 'fs' && backend !== undefined) {
    next.path = given.path ?? (next.path === undefined ? DEFAULT_PATH : next.path);
  }
  for (const [key, v] of Object.entries(given)) if (key !== 'backend' && key !== 'path') next[key] = v;
  if (existing) return next;
  // A new entry gets the keys in the native table's order.
  /** @type {PluginOptions} */
  const ordered = {};
  for (const { name } of optionSchema().options) if (next[name] !== undefined) ordered[name] = next[name];
  return ordered;
}

/**
 * Checks the final options the way the plugin will before a run (the addon's resolveConfig), so a
 * missing bucket or an invalid prefix is reported now, not at the next build. Skipped when the addon
 * does not load (the plugin then reports that itself).
 * @param {string} root
 * @param {PluginOptions} options
 */
function validateWithAddon(root, options) {
  if (options.backend === undefined) return;
  let addon;
  try {
    addon = require('../../index.js');
  } catch {
    return;
  }
  try {
    addon.resolveConfig(root, options, { HOME: os.homedir() });
  } catch (e) {
    throw new Error(`${/** @type {Error} */ (e).message} (nothing was written to nx.json)`);
  }
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
 * nx.json as the generator sees it: its `plugins` and our (first) entry there.
 * @param {import('nx/src/generators/tree').Tree} tree
 */
function readWorkspace(tree) {
  const hasNxJson = tree.exists('nx.json');
  /** @type {Record<string, any>} */
  const nxJson = (hasNxJson ? readNxJson(tree) : null) ?? {};
  if (nxJson.plugins !== undefined && !Array.isArray(nxJson.plugins)) {
    throw new Error('nx-open-cache: "plugins" in nx.json is not an array; fix nx.json and run the generator again');
  }
  /** @type {PluginEntry[]} */
  const plugins = nxJson.plugins ?? [];
  const index = plugins.findIndex(isOurEntry);
  const entry = index === -1 ? undefined : plugins[index];
  /** @type {PluginOptions | undefined} */
  const existingOptions = entry && typeof entry === 'object' ? entry.options ?? undefined : undefined;
  return { hasNxJson, nxJson, plugins, index, entry, existingOptions };
}

/**
 * Stage 1: a deprecated top-level s3 / gcs / azure block. Migrated into the flags (and removed
 * from `nxJson`) unless something conflicts with it or --no-migrate; else kept (it still
 * configures the cache when no backend is named) or reported as unused.
 * @param {Record<string, any>} nxJson  changed in place when the block is migrated
 * @param {ReturnType<typeof normalizeOptions>} given
 * @param {PluginOptions | undefined} existingOptions
 * @param {InitSchema} schema
 * @returns {{ given: ReturnType<typeof normalizeOptions>, keepLegacy: boolean, changed: boolean, messages: string[] }}
 */
function legacyStage(nxJson, given, existingOptions, schema) {
  const legacy = legacyBlock(nxJson);
  if (!legacy) return { given, keepLegacy: false, changed: false, messages: [] };
  /** @type {string[]} */
  const messages = [];
  /** @type {string[]} */
  const conflicts = [];
  if (given.backend !== undefined && given.backend !== legacy.kind) conflicts.push(`--backend ${given.backend}`);
  if (given.path !== undefined) conflicts.push('--path');
  const existingBackend = existingOptions?.backend;
  if (existingBackend !== undefined && existingBackend !== legacy.kind) {
    conflicts.push(`the plugin entry's backend ${show(existingBackend)}`);
  }
  if (schema.migrate === true && conflicts.length > 0) {
    throw new Error(
      `nx-open-cache: --migrate: the top-level "${legacy.kind}" block of nx.json cannot be migrated: ${conflicts.join('; ')}`,
    );
  }
  let keepLegacy = false;
  let changed = false;
  if (schema.migrate ?? conflicts.length === 0) {
    // The entry's own options win over the block's, the flags over both.
    /** @type {Record<string, unknown>} */
    const fromBlock = { ...legacy.options };
    for (const key of Object.keys(existingOptions ?? {})) if (key !== 'backend') delete fromBlock[key];
    given = /** @type {typeof given} */ ({ ...fromBlock, ...given });
    delete nxJson[legacy.kind];
    changed = true;
    messages.push(...migrationMessages(legacy));
  } else if (given.backend === undefined && existingOptions?.backend === undefined) {
    keepLegacy = true;
    messages.push(
      `nx-open-cache: the top-level "${legacy.kind}" block of nx.json still configures the cache ` +
        '(pass --migrate to move it into the plugin options)',
    );
  } else {
    messages.push(
      `nx-open-cache: the top-level "${legacy.kind}" block of nx.json is not used by nx-open-cache ` +
        `(${conflicts.join('; ') || '--no-migrate'}); remove it once the deprecated plugin is gone`,
    );
  }
  if (legacy.others.length > 0) {
    messages.push(`nx-open-cache: nx.json also has top-level ${legacy.others.map((k) => `"${k}"`).join(', ')} block(s); left as they are`);
  }
  return { given, keepLegacy, changed, messages };
}

/**
 * What a migration of `legacy` says: what moved, what has no equivalent, which secrets were not copied.
 * @param {import('../../lib/legacy.js').LegacyMapping} legacy
 * @returns {string[]}
 */
function migrationMessages(legacy) {
  const messages = [
    `nx-open-cache: migrated the top-level "${legacy.kind}" block of nx.json into the plugin options ` +
      `(${legacy.moved.join(', ') || 'no settings'}) and removed the block`,
  ];
  if (legacy.ignored.length > 0) {
    messages.push(`nx-open-cache: not migrated, no equivalent option: ${legacy.ignored.join(', ')}`);
  }
  if (legacy.secrets.length > 0) {
    const fixes = [];
    if (legacy.secrets.some((k) => k !== 'encryptionKey')) {
      fixes.push('set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or use an AWS profile, web identity or an instance role');
    }
    if (legacy.secrets.includes('encryptionKey')) fixes.push('set NX_OPEN_CACHE_ENCRYPTION_KEY in the environment');
    messages.push(
      `nx-open-cache: ${legacy.secrets.map((k) => `${legacy.kind}.${k}`).join(' and ')} were NOT copied (secrets are never ` +
        `written to nx.json): ${fixes.join('; ')}`,
    );
  }
  return messages;
}

/**
 * Stage 2: our plugin entry added, converted to object form, or its options updated.
 * @param {ReturnType<typeof readWorkspace>} ws
 * @param {ReturnType<typeof normalizeOptions>} given
 * @param {{ defaultBackend: boolean }} mergeOpts
 * @param {boolean} changedBefore  whether an earlier stage changed nx.json
 * @returns {{ plugins: PluginEntry[], finalOptions: PluginOptions, changed: boolean, messages: string[] }}
 */
function entryStage(ws, given, mergeOpts, changedBefore) {
  const { plugins, index, entry } = ws;
  if (index === -1 || entry === undefined) {
    const finalOptions = mergeOptions(undefined, given, mergeOpts);
    return {
      plugins: [...plugins, { plugin: PLUGIN_NAME, options: finalOptions }],
      finalOptions,
      changed: true,
      messages: [`nx-open-cache: added plugin to nx.json (${describe(finalOptions)})`],
    };
  }
  if (plugins.slice(index + 1).some(isOurEntry)) {
    logger.warn(`nx-open-cache: nx.json lists ${PLUGIN_NAME} more than once; only the first entry is used (by the plugin, doctor and the CLI) and was checked`);
  }
  if (typeof entry === 'string') {
    const finalOptions = mergeOptions(undefined, given, mergeOpts);
    return {
      plugins: plugins.map((e, i) => (i === index ? { plugin: PLUGIN_NAME, options: finalOptions } : e)),
      finalOptions,
      changed: true,
      messages: [`nx-open-cache: converted the "${PLUGIN_NAME}" entry in nx.json to object form (${describe(finalOptions)})`],
    };
  }
  const before = ws.existingOptions;
  const finalOptions = mergeOptions(before ?? {}, given, mergeOpts);
  /** @type {string[]} */
  const diffs = [];
  for (const key of new Set([...Object.keys(before ?? {}), ...Object.keys(finalOptions)])) {
    const a = before?.[key];
    const b = finalOptions[key];
    if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`${key} ${show(a)} -> ${show(b)}`);
  }
  if (diffs.length > 0) {
    return {
      plugins: plugins.map((e, i) => (i === index ? { ...entry, options: finalOptions } : e)),
      finalOptions,
      changed: true,
      messages: [`nx-open-cache: updated options: ${diffs.join(', ')}`],
    };
  }
  const messages = changedBefore ? [] : [`nx-open-cache: already configured, nothing changed (${describe(finalOptions)})`];
  return { plugins, finalOptions, changed: false, messages };
}

/**
 * Stage 3: what else the written options call for: a .gitignore line for a cache directory inside
 * the workspace (written here), the http token, the trust preset's opt-in for trusted builds.
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {PluginOptions} finalOptions
 * @param {InitSchema} schema
 * @returns {string[]}
 */
function followUps(tree, finalOptions, schema) {
  const messages = [];
  if (typeof finalOptions.path === 'string' && tree.exists('.gitignore')) {
    const entry = gitignoreEntryFor(finalOptions.path);
    if (entry && addToGitignore(tree, entry)) {
      messages.push(`nx-open-cache: added ${entry} to .gitignore`);
    }
  }
  if (finalOptions.backend === 'http' && !process.env.NX_OPEN_CACHE_TOKEN) {
    messages.push(
      'nx-open-cache: the http backend sends the token in NX_OPEN_CACHE_TOKEN (never written to nx.json): ' +
        'set it in the environment of every machine and CI job that uses the cache (without it, requests are anonymous)',
    );
  }
  if (schema.trust === 'ci-split') {
    messages.push(
      'nx-open-cache: trust namespaces (ci-split): every build that is not explicitly trusted writes only to ' +
        '"untrusted/" and reads "trusted/" first, then "untrusted/". In the CI job of trusted builds only ' +
        `(main branch, never pull requests) set: ${TRUSTED_ENV}. ` +
        'Client settings alone can be bypassed by a malicious pull request: give PR builds storage credentials ' +
        'that cannot write to "trusted/" (README: "Trusted and untrusted builds (cache poisoning)")',
    );
  }
  return messages;
}

/**
 * Stage: `--signing`. A new key pair from the addon; its public key joins the trusted keys (the
 * flag's, else the entry's), requireSignature is turned on unless the flag says otherwise.
 * @param {ReturnType<typeof normalizeOptions>} given
 * @param {PluginOptions | undefined} existingOptions
 * @param {InitSchema} flags
 * @returns {{ given: ReturnType<typeof normalizeOptions>, pair?: { publicKey: string, secretKey: string, keyId: string } }}
 */
function signingStage(given, existingOptions, flags) {
  if (flags.signing !== true) return { given };
  const backend = given.backend ?? existingOptions?.backend;
  if (backend === 'http') {
    throw new Error(
      'nx-open-cache: --signing does not apply to the http backend: the server decides what it stores and serves ' +
        '(signatures work on the fs, s3, gcs and azure backends)',
    );
  }
  const pair = /** @type {typeof import('../../index')} */ (require('../../index.js')).keygen();
  const before = /** @type {unknown} */ (given.trustedKeys ?? existingOptions?.trustedKeys);
  const keys = Array.isArray(before) ? before.filter((k) => typeof k === 'string') : [];
  /** @type {Record<string, unknown>} */
  const next = { ...given, trustedKeys: [...keys, pair.publicKey] };
  if (next.requireSignature === undefined) next.requireSignature = true;
  return { given: next, pair };
}

/**
 * Whether a run of nx (this process) is a dry run: then nothing is written, so a secret key
 * printed now would belong to a public key nobody trusts.
 */
function isDryRun() {
  return process.argv.some((a) => /^(--dry-?run(=true)?|-d)$/i.test(a));
}

/**
 * What --signing says once nx.json is about to be written: the key id, where the public key
 * went, and the secret key with where it belongs (printed here only, never written).
 * @param {{ publicKey: string, secretKey: string, keyId: string }} pair
 * @param {PluginOptions} finalOptions
 * @returns {string[]}
 */
function signingMessages(pair, finalOptions) {
  const messages = [
    `nx-open-cache: signing: made a new Ed25519 key pair (key id ${pair.keyId}); its public key is in "trustedKeys" of nx.json (safe to commit)` +
      (finalOptions.requireSignature === true ? ' and "requireSignature" is on: unsigned artifacts are refused' : ''),
  ];
  if (isDryRun()) {
    messages.push('nx-open-cache: signing: dry run: nothing is written, so the secret key is not shown; run without --dry-run to make the key pair');
    return messages;
  }
  messages.push(
    `nx-open-cache: signing: the SECRET key (shown this once, written nowhere; make a new pair with --signing if it is lost):\n\n    ${pair.secretKey}\n`,
    `nx-open-cache: signing: store it as the CI secret ${SIGNING_ENV} of your trusted CI only (main-branch builds): ` +
      'never in a pull-request build, on a developer machine, in nx.json or in any file of the repository. ' +
      'Builds with it sign what they store; every build restores only artifacts signed by a key of "trustedKeys"',
  );
  if (finalOptions.requireSignature === true) {
    messages.push(
      'nx-open-cache: signing: until the trusted CI has run with the key, the cache has no signed artifacts: every build misses (and still runs)',
    );
  }
  return messages;
}

/**
 * What --trustedKeys sets, by key id (as `nx-open-cache keygen`, doctor and the run summary show
 * them): `nx-open-cache: trusts 9f1c..., a64d...`. The keys were checked by the addon already.
 * @param {PluginOptions} finalOptions
 * @returns {string}
 */
function trustedKeysMessage(finalOptions) {
  const { publicKeyId } = /** @type {typeof import('../../index')} */ (require('../../index.js'));
  const keys = Array.isArray(finalOptions.trustedKeys) ? finalOptions.trustedKeys : [];
  return `nx-open-cache: trusts ${keys.map((k) => publicKeyId(String(k))).join(', ')} (key ids of "trustedKeys")`;
}

/**
 * The key `requireSignature` needs: refused early, saying how to get one.
 * @param {PluginOptions} finalOptions
 */
function checkSignatureKeys(finalOptions) {
  const on = finalOptions.requireSignature === true || finalOptions.requireSignature === 'true';
  const keys = finalOptions.trustedKeys;
  if (on && !(Array.isArray(keys) && keys.length > 0)) {
    throw new Error(
      'nx-open-cache: --requireSignature needs trusted keys: add --signing (makes a key pair, writes its public key, prints the secret key once) ' +
        'or --trustedKeys=<public key>[,<public key>...] (from `nx-open-cache keygen`). Nothing was written to nx.json',
    );
  }
}

/**
 * Why the fs `cachePath` is on this machine only, or null (an absolute path elsewhere is taken
 * for a shared mount).
 * @param {string} root  the workspace root
 * @param {string} cachePath
 * @returns {string | null}
 */
function machineLocal(root, cachePath) {
  const p = cachePath.replace(/\\/g, '/');
  if (p === '~' || p.startsWith('~/')) return 'under your home directory';
  if (!path.isAbsolute(cachePath)) return 'inside the workspace (this clone only)';
  const abs = path.resolve(cachePath);
  /** @param {string} dir */
  const under = (dir) => abs === dir || abs.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
  if (root && under(path.resolve(root))) return 'inside the workspace (this clone only)';
  if (['/tmp', '/var/tmp', os.tmpdir()].some((d) => under(path.resolve(d)))) return 'in a temporary directory';
  if (under(os.homedir())) return 'under your home directory';
  return null;
}

/**
 * The warning for a machine-local fs path, or none.
 * @param {string} root
 * @param {PluginOptions} finalOptions
 * @returns {string[]}
 */
function localPathWarning(root, finalOptions) {
  if ((finalOptions.backend ?? DEFAULT_BACKEND) !== 'fs' || typeof finalOptions.path !== 'string') return [];
  const why = machineLocal(root, finalOptions.path);
  if (!why) return [];
  return [
    `nx-open-cache: path ${finalOptions.path} is ${why}: only this machine uses it, other machines and CI never see its artifacts. ` +
      'For a team cache pass --path=<a shared mount every machine sees at the same path> (e.g. --path=/mnt/nx-cache on NFS or SMB), ' +
      'or use another backend (--backend s3 --bucket <bucket>, gcs, azure, or http for `nx-open-cache serve`)',
  ];
}

/**
 * The configuration warnings the addon gives for `options` with this process's environment
 * (e.g. a signing key whose public key is not in trustedKeys), when it gives any. A mistake in
 * the environment is the plugin's to report at the next run.
 * @param {string} root
 * @param {PluginOptions} options
 * @returns {string[]}
 */
function configWarnings(root, options) {
  try {
    const { workspaceInput } = require('../../lib/workspace.js');
    const input = workspaceInput({ plugins: [{ plugin: PLUGIN_NAME, options }] });
    const resolved = /** @type {{ warnings?: unknown }} */ (require('../../index.js').resolveConfig(root, input.options, input.env));
    return Array.isArray(resolved.warnings) ? resolved.warnings.map((w) => `nx-open-cache: ${String(w).replace(/^nx-open-cache: /, '')}`) : [];
  } catch {
    return [];
  }
}

/**
 * The text of a JSON file as its author formats it: indentation, line ending, final newline.
 * @param {string | null} original  the file as it is (null: a new file)
 */
function jsonStyle(original) {
  if (original === null) return { indent: '  ', eol: '\n', finalNewline: true };
  const indent = /^([ \t]+)\S/m.exec(original)?.[1] ?? '  ';
  const eol = original.includes('\r\n') ? '\r\n' : '\n';
  return { indent, eol, finalNewline: /\r?\n$/.test(original) };
}

/**
 * Writes nx.json in its author's formatting: the top-level keys in the file's order (new ones
 * last), its indentation, line endings and final newline. A file that `extends` another keeps
 * only what differs from it (Nx's own rule).
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {Record<string, any>} nxJson  the whole new configuration
 * @returns {string[]} what the user should know about the write
 */
function writeNxJson(tree, nxJson) {
  const original = tree.exists('nx.json') ? tree.read('nx.json', 'utf-8') : null;
  /** @type {Record<string, any>} */
  let next = nxJson;
  /** @type {string[]} */
  let order = [];
  if (original !== null) {
    updateNxJson(tree, /** @type {any} */ (nxJson));
    next = JSON.parse(/** @type {string} */ (tree.read('nx.json', 'utf-8')));
    order = Object.keys(parseJson(original));
  }
  /** @type {Record<string, any>} */
  const ordered = {};
  for (const k of order) if (k in next) ordered[k] = next[k];
  Object.assign(ordered, next);
  const style = jsonStyle(original);
  let text = JSON.stringify(ordered, null, style.indent);
  if (style.eol !== '\n') text = text.replace(/\n/g, style.eol);
  tree.write('nx.json', style.finalNewline ? `${text}${style.eol}` : text);
  if (original !== null && !isStrictJson(original)) {
    return ['nx-open-cache: nx.json had comments or trailing commas, which a JSON writer cannot keep: put the comments back by hand if you need them'];
  }
  return [];
}

/** @param {string} text */
function isStrictJson(text) {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * With --check: doctor on the configuration about to be written (before Nx writes anything);
 * throws when the cache does not work, so nx.json and .gitignore stay unchanged.
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {Record<string, any>} nxJson  the new nx.json
 */
async function doctorCheck(tree, nxJson) {
  const { runDoctor } = require('../../lib/doctor.js');
  const code = await runDoctor(tree.root, { nxJson, log: (s) => logger.info(s), error: (s) => logger.error(s) });
  if (code !== 0) {
    throw new Error(
      'nx-open-cache: --check: the cache does not work from this machine (see the checks above); nx.json and .gitignore unchanged',
    );
  }
}

/**
 * The generator: flags checked, then the stages (deprecated block, signing, plugin entry, checks,
 * write, follow-ups).
 * @param {import('nx/src/generators/tree').Tree} tree
 * @param {InitSchema} schema
 * @returns {Promise<void>}
 */
async function initGenerator(tree, schema) {
  const flags = schema ?? {};
  const given = normalizeOptions(flags);
  const ws = readWorkspace(tree);
  const legacy = legacyStage(ws.nxJson, given, ws.existingOptions, flags);
  const signing = signingStage(legacy.given, ws.existingOptions, flags);
  const entry = entryStage(ws, signing.given, { defaultBackend: !legacy.keepLegacy }, legacy.changed);
  const nxJson = entry.changed ? { ...ws.nxJson, plugins: entry.plugins } : ws.nxJson;
  const changed = legacy.changed || entry.changed;
  if (changed) {
    checkSignatureKeys(entry.finalOptions);
    validateWithAddon(tree.root, entry.finalOptions);
  }
  if (flags.check === true) await doctorCheck(tree, nxJson);
  const written = changed ? writeNxJson(tree, nxJson) : [];
  const messages = [...entry.messages, ...legacy.messages, ...written, ...followUps(tree, entry.finalOptions, flags)];
  if (signing.pair) messages.push(...signingMessages(signing.pair, entry.finalOptions));
  if (changed && given.trustedKeys !== undefined) messages.push(trustedKeysMessage(entry.finalOptions));
  for (const m of messages) logger.info(m);
  // The path is warned about when this run chose it (or the default), not on every later change.
  const pathChosen = entry.changed && ws.existingOptions?.path !== entry.finalOptions.path;
  const warnings = [...(pathChosen ? localPathWarning(tree.root, entry.finalOptions) : []), ...configWarnings(tree.root, entry.finalOptions)];
  for (const w of warnings) logger.warn(w);
}

/** @param {PluginOptions} options */
function describe(options) {
  const parts = Object.entries(options).map(([k, v]) => `${k} ${show(v)}`);
  return parts.length > 0 ? parts.join(', ') : 'no options';
}

module.exports = initGenerator;
module.exports.default = initGenerator;
module.exports.initGenerator = initGenerator;
module.exports.DEFAULT_PATH = DEFAULT_PATH;
module.exports.machineLocal = machineLocal;
module.exports.TRUST_PRESETS = TRUST_PRESETS;
module.exports.TRUSTED_ENV = TRUSTED_ENV;
