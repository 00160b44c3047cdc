'use strict';
/**
 * The init generator's flags, from the native option schema (`optionSchema()`, the table
 * `resolveConfig` validates with): which plugin options it takes, their JSON types, backends and
 * choices; plus the flags of the generator itself. `schema.json` is generated from this
 * (`node scripts/schema.js --write`; a test fails when it drifts).
 */

/** @typedef {import('../../index').OptionInfo} OptionInfo */
/** @typedef {import('../../index').OptionSchema} OptionSchema */

/** Plugin options that are not flags: the trust namespaces come from `--trust` presets. */
const NOT_FLAGS = /** @type {readonly string[]} */ (['writePrefix', 'readPrefixes']);
/** String flags that may be empty (an empty prefix is the store's root). */
const MAY_BE_EMPTY = /** @type {readonly string[]} */ (['prefix']);

/** What the generator adds to an option's description. */
const GENERATOR_NOTES = /** @type {Record<string, string>} */ ({
  backend: 'A new entry gets fs; an existing entry keeps its backend unless this flag is given.',
  path: 'A new fs entry gets ~/.cache/nx-open-cache; an existing entry keeps its path unless this flag is given. A path inside the workspace is added to .gitignore. A path under the home directory, in a temporary directory or inside the workspace is on this machine only (the generator warns): for a team cache give a shared mount every machine sees at the same path.',
  trustedKeys: 'Comma-separated, or the flag repeated; replaces the list in nx.json (--signing adds its new key to it). Public keys only: a secret key belongs in NX_OPEN_CACHE_SIGNING_KEY of the trusted CI, never in nx.json.',
  requireSignature: 'Needs trustedKeys (or --signing, which turns this on unless --requireSignature=false is given).',
});

/** The generator's own flags (not plugin options), as schema.json declares them. */
const GENERATOR_FLAGS = {
  trust: {
    type: 'string',
    description:
      'Trust preset for CI that also builds pull requests. Allowed values: ci-split (writes "writePrefix": "untrusted", "readPrefixes": ["trusted", "untrusted"]: any build not explicitly trusted writes only to untrusted/ and reads trusted/ first; trusted builds, main-branch CI only, set NX_OPEN_CACHE_WRITE_PREFIX=trusted NX_OPEN_CACHE_READ_PREFIXES=trusted). Not for the http backend: there the server\'s token namespaces make the split. Enforce the split with storage credentials too (README: Trusted and untrusted builds).',
  },
  migrate: {
    type: 'boolean',
    description:
      'Move a top-level s3 / gcs / azure block of the deprecated @nx/*-cache plugins into the plugin options and remove it. Default: yes when such a block exists and no flag conflicts with it. accessKeyId / secretAccessKey are never copied: credentials come from the environment. --no-migrate keeps the block, which the plugin then keeps reading.',
  },
  signing: {
    type: 'boolean',
    default: false,
    description:
      'Set up signed artifacts: makes a new Ed25519 key pair, adds its public key to trustedKeys and turns requireSignature on (unless --requireSignature=false), and prints the secret key once, with where it goes: the CI secret NX_OPEN_CACHE_SIGNING_KEY of the trusted CI only (main-branch builds). The secret key is never written to a file. Not idempotent: each run makes another key pair and adds it to trustedKeys. Not for the http backend.',
  },
  check: {
    type: 'boolean',
    default: false,
    description:
      'Before writing the configuration, run `nx-open-cache doctor` on it from this machine: setup, a lookup, a write / read back / delete probe, each timed, with a fix per failure. When the cache does not work the generator fails; nx.json and .gitignore stay unchanged.',
  },
  keepExistingVersions: {
    type: 'boolean',
    description: 'Passed by `nx add`. This generator installs no packages, so it has no effect.',
    'x-priority': 'internal',
    default: false,
  },
  skipProjectGraph: {
    type: 'boolean',
    description:
      "Nx's own `nx g` flag, which Nx also passes on to the generator. This generator never reads the project graph, so `--skipProjectGraph` lets you re-run it even when a plugin listed in nx.json fails to load.",
    'x-priority': 'internal',
  },
};

/** @type {OptionSchema | undefined} */
let cached;
/**
 * The native option schema (the addon is loaded on first use).
 * @returns {OptionSchema}
 */
function optionSchema() {
  if (!cached) cached = /** @type {typeof import('../../index')} */ (require('../../index.js')).optionSchema();
  return cached;
}

/**
 * The plugin options the generator takes as flags, in the table's order (the order a new entry is
 * written in).
 * @param {OptionSchema} [schema]
 * @returns {OptionInfo[]}
 */
function flagOptions(schema = optionSchema()) {
  return schema.options.filter((o) => !NOT_FLAGS.includes(o.name));
}

/**
 * Whether `option` applies to every backend.
 * @param {OptionInfo} option
 */
function forAllBackends(option) {
  return option.backends.length === 1 && option.backends[0] === 'all';
}

/**
 * The JSON types a flag may be given as: a boolean option as a boolean (Nx parses the flag), the
 * others as the table says.
 * @param {OptionInfo} option
 * @returns {readonly string[]}
 */
function flagTypes(option) {
  if (option.type === 'boolean') return ['boolean'];
  // A list flag: Nx splits `--x=a,b` and collects a repeated flag; given directly, a string is split.
  if (option.type === 'array') return ['array', 'string'];
  return option.accepts;
}

/**
 * The description schema.json gives a plugin option.
 * @param {OptionInfo} o
 */
function describeOption(o) {
  const scoped = forAllBackends(o) || o.description.startsWith(`${o.backends[0]}:`);
  const parts = [scoped ? o.description : `${o.backends.join(', ')}: ${o.description}`];
  if (o.choices.length > 0) parts.push(`Allowed values: ${o.choices.join(', ')}.`);
  if (o.default !== null) parts.push(`Plugin default: ${o.default}.`);
  if (o.env) parts.push(`${o.env} overrides it.`);
  if (GENERATOR_NOTES[o.name]) parts.push(GENERATOR_NOTES[o.name]);
  return parts.join(' ');
}

/**
 * schema.json: the plugin options the generator takes, then its own flags.
 * @param {OptionSchema} [schema]
 */
function schemaJson(schema = optionSchema()) {
  /** @type {Record<string, Record<string, unknown>>} */
  const properties = {};
  for (const o of flagOptions(schema)) {
    properties[o.name] = o.type === 'array'
      ? { type: 'array', items: { type: 'string' }, description: describeOption(o) }
      : { type: o.type, description: describeOption(o) };
  }
  Object.assign(properties, GENERATOR_FLAGS);
  return {
    $schema: 'https://json-schema.org/schema',
    $id: 'NxOpenCacheInit',
    title: 'nx-open-cache init',
    description:
      "Adds (or updates) the nx-open-cache plugin entry in nx.json. Running it again with the same options changes nothing. Secrets are never written to nx.json: credentials come from each cloud's standard chain (environment variables, profiles, workload identity), the http backend's token from NX_OPEN_CACHE_TOKEN. Generated from the plugin's option schema by scripts/schema.js.",
    type: 'object',
    properties,
    additionalProperties: false,
    required: [],
  };
}

module.exports = { NOT_FLAGS, MAY_BE_EMPTY, GENERATOR_FLAGS, optionSchema, flagOptions, forAllBackends, flagTypes, schemaJson };
