'use strict';
/**
 * The plugin without its native addon: a platform with no prebuilt binary, or a binary that fails
 * to load. Nothing here needs native code.
 *
 * - The `http` backend needs none: Nx's own remote-cache client is pointed at the server
 *   (`NX_SELF_HOSTED_REMOTE_CACHE_SERVER` = the `url` option, `..._ACCESS_TOKEN` = NX_OPEN_CACHE_TOKEN).
 *   What only the plugin does is lost for the run, and one warning says what. Nx's client fails the
 *   whole run on a request that gets no HTTP answer (Nx 20.8 to 24: "Failed to send request"), so
 *   the server is probed first, trusting what Nx's client trusts; one that does not answer leaves
 *   the run uncached instead.
 * - Every other backend is the addon's own code: the run goes on without the remote cache, and one
 *   warning names the platform, the reason and the way out (the `http` backend and a central
 *   `nx-open-cache serve`, which runs on a platform that has a binary).
 *
 * The options are checked here only as far as handing them to Nx needs; the addon's configuration
 * (src/config.rs) stays the one full check, and `doctor` on a machine with the binary runs it.
 */

/** Where a user reads about it (the docs ship in the package). */
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const tls = require('node:tls');

const DOCS = 'node_modules/nx-open-cache/docs/backends.md, "The `http` backend"';
const MODES = ['read-write', 'read-only', 'no-cache'];
const BACKENDS = ['fs', 's3', 'gcs', 'azure', 'http'];
/** The http backend's options that Nx's own client can do without (the others are refused by it). */
const HTTP_OPTIONS = ['backend', 'url', 'localMode', 'ciMode', 'timeout', 'connectTimeout', 'maxArtifactEntries', 'maxExpandedSize', 'maxExpansionRatio'];
/** Of those, the ones only the plugin applies: named in the warning when set. */
const PLUGIN_ONLY = ['timeout', 'connectTimeout', 'maxArtifactEntries', 'maxExpandedSize', 'maxExpansionRatio'];

/**
 * This machine's platform as the prebuilt packages name it: `linux-x64-gnu`, `linux-arm64-musl`,
 * `darwin-arm64`, `win32-x64`, ... (on Linux with the C library's version when Node knows it).
 * @returns {string}
 */
function platformName() {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform !== 'linux') return base;
  /** @type {any} */
  let header;
  try {
    const report = /** @type {any} */ (process.report);
    if (report) report.excludeNetwork = true;
    header = report?.getReport()?.header;
  } catch {
    header = undefined;
  }
  const glibc = header?.glibcVersionRuntime;
  return glibc ? `${base}-gnu (glibc ${glibc})` : `${base}-musl`;
}

/**
 * The errors of a load failure: the loader's error and its `cause` chain (the loader chains the
 * error of every candidate it tried), bounded in length.
 * @param {unknown} error
 * @returns {{ message: string, code?: string }[]}
 */
function errorChain(error) {
  const out = [];
  let e = /** @type {any} */ (error);
  for (let i = 0; e && i < 32; i += 1, e = e.cause) {
    out.push({ message: typeof e.message === 'string' ? e.message : String(e), code: typeof e.code === 'string' ? e.code : undefined });
  }
  return out;
}

/**
 * Why the addon did not load, in one line, naming the platform: the error of a binary that is there
 * but does not load (a corrupt file, a wrong C library, a missing system library), else that no
 * prebuilt binary is installed for this platform.
 * @param {unknown} error  what requiring the addon threw
 * @param {string} [platform]  default: this machine's (platformName())
 * @returns {string}
 */
function loadFailure(error, platform = platformName()) {
  const chain = errorChain(error);
  const firstLine = (/** @type {string} */ m) => m.split('\n')[0].trim();
  // The loader's own wrapper says "Cannot find native binding" for every failure: the causes tell.
  const broken = chain.slice(1).find((e) => e.code !== 'MODULE_NOT_FOUND' && !/^Cannot find module /.test(e.message));
  if (broken) return `the native addon does not load on ${platform} (${firstLine(broken.message)})`;
  if (chain.length > 1) return `no prebuilt native addon for ${platform} is installed`;
  return `the native addon does not load on ${platform} (${firstLine(chain[0]?.message ?? 'unknown error')})`;
}

/**
 * The mode as the addon resolves it: NX_OPEN_CACHE_MODE, else ciMode on CI, else localMode, else
 * read-write. Undefined for a value that is not a mode (the addon would refuse it).
 * @param {Record<string, unknown>} options
 * @param {Record<string, string>} env
 * @returns {{ mode: string, source: string, bad?: string } }
 */
function resolveMode(options, env) {
  const ci = env.CI !== undefined && !['', '0', 'false'].includes(env.CI.trim().toLowerCase());
  const [value, source] = env.NX_OPEN_CACHE_MODE
    ? [env.NX_OPEN_CACHE_MODE, 'NX_OPEN_CACHE_MODE']
    : ci
      ? [options.ciMode ?? 'read-write', 'ciMode']
      : [options.localMode ?? 'read-write', 'localMode'];
  if (typeof value !== 'string' || !MODES.includes(value)) {
    return { mode: 'no-cache', source, bad: `invalid value ${JSON.stringify(value)} for ${source}: expected one of ${MODES.join(', ')}` };
  }
  return { mode: value, source };
}

/**
 * `url` safe to print: as redact_url in src/store/http.rs (the password, or a user without a password,
 * shown as ***; a query or fragment shown as ?*** / #***).
 * @param {string} url
 * @returns {string}
 */
function redactUrl(url) {
  const i = url.indexOf('://');
  if (i < 0) return url;
  const scheme = url.slice(0, i + 3);
  const rest = url.slice(i + 3);
  const cut = rest.search(/[?#]/);
  const place = cut < 0 ? rest : rest.slice(0, cut);
  const extra = cut < 0 ? '' : rest.slice(cut);
  let out = scheme;
  const at = place.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = place.slice(0, at);
    const colon = userinfo.indexOf(':');
    out += colon >= 0 ? `${userinfo.slice(0, colon)}:***` : '***';
    out += place.slice(at);
  } else {
    out += place;
  }
  if (extra.startsWith('?')) out += '?***';
  else if (extra.startsWith('#')) out += '#***';
  return out;
}

/**
 * Why `url` cannot be handed to Nx, if it cannot (the addon's rules: http or https, a host, no
 * credentials, query, fragment or trailing slash).
 * @param {unknown} url
 * @returns {string | undefined}
 */
function badUrl(url) {
  if (typeof url !== 'string' || url === '') return 'backend "http" needs option "url"';
  const bad = (/** @type {string} */ why) => `invalid value ${JSON.stringify(redactUrl(url))} for option "url": ${why}`;
  /** @type {URL} */
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return bad('it is not a valid URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return bad('the scheme must be http or https');
  if (!parsed.hostname) return bad('it has no host');
  if (parsed.username || parsed.password) return bad('credentials do not belong in the URL (the token comes from NX_OPEN_CACHE_TOKEN)');
  if (parsed.search || parsed.hash || /[?#]/.test(url)) return bad('it has a query or a fragment');
  if (parsed.pathname.replace(/\/+$/, '').endsWith('/v1/cache')) return bad("give the server's base URL, without /v1/cache (nx-open-cache appends it)");
  if (url.endsWith('/')) return bad('it ends with a slash (the paths /v1/cache/<hash> are appended to it)');
  if (/\s/.test(url)) return bad('it contains whitespace');
  return undefined;
}

/** System CA bundles, as openssl-probe (through rustls-native-certs, which Nx's client uses) finds them. */
const CA_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/ca-bundle.pem', '/etc/pki/tls/cacert.pem', '/etc/ssl/cert.pem'];
/** At most this many files are read from SSL_CERT_DIR. */
const MAX_CA_DIR_FILES = 4096;

/**
 * The certificates Nx's own client trusts (reqwest with the platform's roots): SSL_CERT_FILE /
 * SSL_CERT_DIR when set, else the system's (Node's view of it where it has one, else the system
 * bundle, else Node's bundled roots). Never NODE_EXTRA_CA_CERTS, which Nx's client does not read.
 * @param {Record<string, string>} env
 * @returns {string[]}
 */
function nxTrustedCas(env) {
  const read = (/** @type {string} */ f) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return undefined;
    }
  };
  if (env.SSL_CERT_FILE || env.SSL_CERT_DIR) {
    const out = [];
    if (env.SSL_CERT_FILE) out.push(read(env.SSL_CERT_FILE));
    if (env.SSL_CERT_DIR) {
      /** @type {string[]} */
      let names;
      try {
        names = fs.readdirSync(env.SSL_CERT_DIR).slice(0, MAX_CA_DIR_FILES);
      } catch {
        names = [];
      }
      for (const n of names) out.push(read(path.join(env.SSL_CERT_DIR, n)));
    }
    return /** @type {string[]} */ (out.filter((c) => c && c.includes('-----BEGIN CERTIFICATE-----')));
  }
  const system = /** @type {any} */ (tls).getCACertificates;
  if (typeof system === 'function') {
    try {
      return system('system');
    } catch {
      // an older Node: below
    }
  }
  for (const f of CA_BUNDLES) {
    const pem = read(f);
    if (pem && pem.includes('-----BEGIN CERTIFICATE-----')) return [pem];
  }
  return [...tls.rootCertificates];
}

/**
 * Seconds from a `timeout`-style value (a number of seconds, or `"30s"`, `"2m"`), else `fallback`.
 * @param {unknown} value
 * @param {number} fallback
 */
function seconds(value, fallback) {
  if (typeof value === 'number' && value >= 1 && value <= 3600) return value;
  const m = typeof value === 'string' ? /^\s*(\d{1,4})\s*(s|m)?\s*$/.exec(value) : null;
  if (!m) return fallback;
  const n = Number(m[1]) * (m[2] === 'm' ? 60 : 1);
  return n >= 1 && n <= 3600 ? n : fallback;
}

/** The hash the probe asks for: Nx's form (decimal digits), never one of a real task. */
const PROBE_HASH = '00000000000000000000';

/**
 * Whether Nx's own client can use the server for this run: one GET of a hash that does not exist,
 * as Nx's client sends it (the token, the trust of Nx's client), bounded by `timeoutSeconds`. Nx's
 * client takes 200 and 404 and fails the run on anything else (an error, 401, 403, 5xx), so those
 * are why not; undefined when the answer is one Nx takes.
 * @param {string} url
 * @param {Record<string, string>} env
 * @param {number} timeoutSeconds
 * @returns {Promise<string | undefined>}
 */
function probeServer(url, env, timeoutSeconds) {
  const target = `${url}/v1/cache/${PROBE_HASH}`;
  const secure = target.toLowerCase().startsWith('https:');
  const token = env.NX_OPEN_CACHE_TOKEN;
  /** @type {Record<string, string>} */
  const headers = { accept: 'application/octet-stream' };
  if (token) headers.authorization = `Bearer ${token}`;
  /** @type {import('node:https').RequestOptions} */
  const options = { method: 'GET', timeout: timeoutSeconds * 1000, headers };
  if (secure) {
    options.ca = nxTrustedCas(env);
    options.rejectUnauthorized = env.NODE_TLS_REJECT_UNAUTHORIZED !== '0';
    options.agent = false;
  }
  return new Promise((resolve) => {
    let done = false;
    /** @type {import('node:http').ClientRequest | undefined} */
    let req;
    // The whole probe is bounded, not only each idle gap: a server that trickles its answer
    // byte by byte must not hold the run.
    const deadline = setTimeout(() => {
      finish(`no complete answer within ${timeoutSeconds} s`);
      req?.destroy();
    }, timeoutSeconds * 1000);
    deadline.unref();
    const finish = (/** @type {string | undefined} */ why) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      resolve(why);
    };
    try {
      req = (secure ? https : http).request(target, options, (res) => {
        const status = res.statusCode ?? 0;
        res.resume();
        req?.destroy();
        if (status === 200 || status === 404) finish(undefined);
        else if (status === 401) finish(token ? 'it refused the token in NX_OPEN_CACHE_TOKEN: 401 Unauthorized' : 'it requires a token: 401 Unauthorized, NX_OPEN_CACHE_TOKEN is not set');
        else finish(`it answered ${status} ${res.statusMessage ?? ''}`.trim());
      });
    } catch (e) {
      finish(/** @type {Error} */ (e).message);
      return;
    }
    const sent = req;
    sent.on('timeout', () => {
      finish(`no answer within ${timeoutSeconds} s`);
      sent.destroy();
    });
    sent.on('error', (e) => {
      const code = /** @type {NodeJS.ErrnoException} */ (e).code;
      finish(`${e.message}${code && !e.message.includes(code) ? ` (${code})` : ''}`);
    });
    sent.end();
  });
}

/**
 * What a run does without the addon.
 * @typedef {object} FallbackPlan
 * @property {string | undefined} warning  the one warning of the run (undefined: nothing is lost)
 * @property {Record<string, string>} set  the variables to set for Nx (empty: the run goes uncached)
 * @property {string} location  for the run's summary, e.g. `http http://cache:3000 (Nx's own client)`
 */

/**
 * What this run does without the addon, from the run's configuration input.
 * @param {Record<string, unknown> | null} options  the plugin options (with a deprecated block under them)
 * @param {Record<string, string>} env  the run's environment
 * @param {unknown} loadError  what requiring the addon threw
 * @returns {Promise<FallbackPlan>}
 */
async function fallbackPlan(options, env, loadError) {
  const opts = options ?? {};
  const backend = typeof opts.backend === 'string' ? opts.backend : 'fs';
  const cannot = loadFailure(loadError);
  const uncached = (/** @type {string} */ why) => ({ warning: `${cannot}: running without the remote cache: ${why}`, set: {}, location: `${backend}` });
  if (!BACKENDS.includes(backend)) return uncached(`invalid value ${JSON.stringify(backend)} for option "backend": expected one of ${BACKENDS.join(', ')}`);
  const { mode, source, bad } = resolveMode(opts, env);
  if (bad) return uncached(bad);
  if (mode === 'no-cache') return { warning: undefined, set: {}, location: backend };
  if (backend !== 'http') {
    return uncached(
      `the "${backend}" backend needs the addon; without native code the "http" backend works: run \`nx-open-cache serve\` ` +
        `centrally (on a platform with a prebuilt binary, or its standalone server binary) and point the plugin at it ` +
        `({"backend": "http", "url": "https://cache.example.com"} and NX_OPEN_CACHE_TOKEN), see ${DOCS}`,
    );
  }
  const urlProblem = badUrl(opts.url);
  if (urlProblem) return uncached(urlProblem);
  const refused = Object.keys(opts).filter((k) => !HTTP_OPTIONS.includes(k));
  if (refused.length) {
    return uncached(`option${refused.length > 1 ? 's' : ''} ${refused.map((k) => `"${k}"`).join(', ')} do${refused.length > 1 ? '' : 'es'} not apply to the "http" backend`);
  }
  const url = /** @type {string} */ (opts.url);
  const unreachable = await probeServer(url, env, seconds(env.NX_OPEN_CACHE_CONNECT_TIMEOUT ?? opts.connectTimeout, 5));
  if (unreachable) {
    const ca = url.toLowerCase().startsWith('https:') && env.NODE_EXTRA_CA_CERTS
      ? "; Nx's own client does not read NODE_EXTRA_CA_CERTS: it trusts the system's store, or SSL_CERT_FILE / SSL_CERT_DIR when set"
      : '';
    return uncached(`Nx's own client would fail the run on the server ${url} (${unreachable}${ca})`);
  }
  /** @type {Record<string, string>} */
  const set = { NX_SELF_HOSTED_REMOTE_CACHE_SERVER: url };
  if (env.NX_OPEN_CACHE_TOKEN) set.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN = env.NX_OPEN_CACHE_TOKEN;
  const lost = ["nx-open-cache's timeouts, retries and artifact check", 'its run summary'];
  const ignored = PLUGIN_ONLY.filter((k) => opts[k] !== undefined || env[`NX_OPEN_CACHE_${k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`] !== undefined);
  if (ignored.length) lost.push(`the option${ignored.length > 1 ? 's' : ''} ${ignored.map((k) => `"${k}"`).join(', ')}`);
  const notes = [];
  if (mode === 'read-only') {
    notes.push(
      `read-only (${source}) cannot be kept: Nx's client uploads every task it runs; ` +
        'a read-only token makes the server refuse them (403, which Nx does not report; the build goes on), a read-write token stores them',
    );
  }
  if (!env.NX_OPEN_CACHE_TOKEN) notes.push('NX_OPEN_CACHE_TOKEN is not set: Nx sends no token');
  lost.push('the build going on when the server stops answering during the run (Nx fails the run on a request without an answer)');
  const warning =
    `${cannot}: Nx's own remote-cache client talks to ${url} directly (NX_SELF_HOSTED_REMOTE_CACHE_SERVER${set.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN ? ' and _ACCESS_TOKEN from NX_OPEN_CACHE_TOKEN' : ''}); ` +
    `lost for this run: ${lost.join(', ')}${notes.length ? `; ${notes.join('; ')}` : ''}`;
  return { warning, set, location: `http ${url} (Nx's own client)` };
}

module.exports = { platformName, loadFailure, resolveMode, badUrl, probeServer, nxTrustedCas, fallbackPlan };
