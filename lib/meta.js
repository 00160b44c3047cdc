'use strict';
// Artifact metadata ("meta"): a small record beside each artifact a run stores, under the key
// `<hash>-nxoc-meta`, written and read through the run's own cache proxy with the Nx protocol. So it
// is signed, encrypted, namespaced and validated like the artifacts, on every backend. Its body is
// a valid Nx artifact (no outputs, exit code 0) whose terminal output is the meta JSON: which task
// produced the artifact, how long it ran, with which Nx, when, in which run and on which host, and
// its hash inputs. A hit uses it for the time it saved (the producer's duration minus its own
// restore time) and `why` for what the producer's inputs were. Missing or invalid meta (an artifact
// stored before meta existed, or by another client) is no producer information, never an error;
// every exchange is bounded in concurrency and total time.

const os = require('node:os');
const zlib = require('node:zlib');

const META_FORMAT = 'nx-open-cache-meta';
const META_VERSION = 1;
/** The key suffix of an artifact's metadata. */
const META_SUFFIX = '-nxoc-meta';
/** A whole meta record is at most this large; the per-file hashes are left out first, then the inputs. */
const MAX_META_BYTES = 1024 * 1024;
/** A meta body (gzipped) larger than this is not read. */
const MAX_BODY_BYTES = 2 * 1024 * 1024;
/** A producer's duration above this (7 days) is not believed: no time-saved figure from it. */
const MAX_DURATION_MS = 7 * 24 * 3_600_000;
/** The optional text fields of a meta record are kept only as strings of at most this many chars. */
const MAX_FIELD_CHARS = 256;
/** Requests in flight at once. */
const CONCURRENCY = 8;
/** The whole exchange of one run (publishing and fetching) ends within this. */
const TOTAL_MS = 3000;

/**
 * @typedef {{ url: string, token: string }} ProxyAddress
 * @typedef {{
 *   format: 'nx-open-cache-meta', version: 1, task: string, hash: string, durationMs: number,
 *   nxVersion?: string, storedAt: string, runId?: string, host?: string, inputs?: unknown,
 *   files?: Record<string, Record<string, string>>, inexact?: string[]
 * }} Meta
 * @typedef {{ status: number, bytes: number, op: 'get' | 'put' }} Exchange  one request's answer (status 0: no answer)
 */

/** @param {string} hash */
function metaKey(hash) {
  return `${hash}${META_SUFFIX}`;
}

/**
 * The meta record of a task this run stored. `files` (per-file hashes of its file inputs) is cut
 * when the record would pass MAX_META_BYTES: first the lists of other projects' filesets (its
 * dependencies'), then all of them, then the inputs. `inexact` names the file lists in `files`
 * that could not be checked against Nx's hash (they may be incomplete).
 * @param {{ task: { id: string, hash: string, hashDetails?: unknown, target?: { project?: string } }, durationMs: number, nxVersion?: string,
 *   runId?: string, files?: Record<string, Record<string, string>>, inexact?: string[], storedAt?: Date }} from
 * @returns {{ meta: Meta, json: string }}
 */
function buildMeta(from) {
  /** @type {Meta} */
  const meta = {
    format: META_FORMAT,
    version: META_VERSION,
    task: from.task.id,
    hash: from.task.hash,
    durationMs: Math.max(0, Math.round(from.durationMs)),
    nxVersion: from.nxVersion,
    storedAt: (from.storedAt || new Date()).toISOString(),
    runId: from.runId,
    host: os.hostname(),
    // `env:` inputs stay: `why --against` compares them; docs/insights.md says what their hashes reveal.
    inputs: from.task.hashDetails,
  };
  const setFiles = (/** @type {Record<string, Record<string, string>> | undefined} */ files) => {
    if (!files || Object.keys(files).length === 0) {
      delete meta.files;
      delete meta.inexact;
      return;
    }
    meta.files = files;
    // Always beside `files` (empty when every list was checked): a reader takes its absence for an
    // older writer that did not say.
    meta.inexact = (from.inexact || []).filter((k) => Object.hasOwn(files, k));
  };
  setFiles(from.files);
  let json = JSON.stringify(meta);
  if (Buffer.byteLength(json) > MAX_META_BYTES && meta.files) {
    // The task's own files first: what `why` names for the task itself.
    const project = from.task.target?.project ?? from.task.id.split(':')[0];
    /** @type {Record<string, Record<string, string>>} */ const own = {};
    for (const [k, v] of Object.entries(meta.files)) if (k.startsWith(`${project}:`) || k.startsWith('workspace:[')) own[k] = v;
    setFiles(own);
    json = JSON.stringify(meta);
  }
  if (Buffer.byteLength(json) > MAX_META_BYTES) {
    setFiles(undefined);
    json = JSON.stringify(meta);
  }
  if (Buffer.byteLength(json) > MAX_META_BYTES) {
    delete meta.inputs;
    json = JSON.stringify(meta);
  }
  return { meta, json };
}

/**
 * Whether `v` is a meta record of this format for `hash`.
 * @param {any} v
 * @param {string} hash
 * @returns {v is Meta}
 */
function isMeta(v, hash) {
  return !!v && typeof v === 'object' && v.format === META_FORMAT && v.version === META_VERSION
    && v.hash === hash && typeof v.task === 'string' && v.task.length <= MAX_FIELD_CHARS
    && typeof v.durationMs === 'number' && Number.isFinite(v.durationMs) && v.durationMs >= 0;
}

/**
 * A meta record from another writer, made safe to keep: the optional text fields (`nxVersion`,
 * `storedAt`, `runId`, `host`) only when strings of at most MAX_FIELD_CHARS chars, `durationMs`
 * only when at most MAX_DURATION_MS (else no producer duration is believed: undefined), `files`
 * only as an object, `inexact` only as a list of strings.
 * @param {Meta} v
 * @returns {Meta | undefined}
 */
function sanitizeMeta(v) {
  if (v.durationMs > MAX_DURATION_MS) return undefined;
  /** @type {any} */ const out = { ...v };
  for (const k of ['nxVersion', 'storedAt', 'runId', 'host']) {
    if (out[k] !== undefined && !(typeof out[k] === 'string' && out[k].length <= MAX_FIELD_CHARS)) delete out[k];
  }
  if (out.files !== undefined && (!out.files || typeof out.files !== 'object' || Array.isArray(out.files))) delete out.files;
  if (out.inexact !== undefined && !(Array.isArray(out.inexact) && out.inexact.every((/** @type {unknown} */ k) => typeof k === 'string'))) delete out.inexact;
  return out;
}

/**
 * One entry of a tar archive (ustar / GNU / pax headers), or undefined when absent or cut short.
 * @param {Buffer} tar
 * @param {string} wanted
 * @returns {Buffer | undefined}
 */
function tarEntry(tar, wanted) {
  let off = 0;
  /** @type {string | undefined} */ let paxPath;
  while (off + 512 <= tar.length) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) return undefined;
    const field = (/** @type {number} */ a, /** @type {number} */ b) => header.subarray(a, b).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 136).trim() || '0', 8);
    if (!Number.isFinite(size) || size < 0) return undefined;
    const type = String.fromCharCode(header[156]);
    const prefix = field(257, 263).startsWith('ustar') ? field(345, 500) : '';
    const name = paxPath ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    const body = tar.subarray(off + 512, off + 512 + size);
    if (body.length < size) return undefined;
    paxPath = undefined;
    if (type === 'x') {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
      if (m) paxPath = m[1];
    } else if ((type === '0' || type === '\0') && name.replace(/^\.\//, '') === wanted) {
      return body;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return undefined;
}

/**
 * The meta record in an artifact body (Nx's tar.gz), or undefined when it holds none of this
 * format for `hash`.
 * @param {Buffer} body
 * @param {string} hash
 * @returns {Meta | undefined}
 */
function parseMetaArtifact(body, hash) {
  try {
    if (body.length < 2 || body[0] !== 0x1f || body[1] !== 0x8b) return undefined;
    const tar = zlib.gunzipSync(body, { maxOutputLength: 4 * MAX_META_BYTES });
    const entry = tarEntry(tar, 'terminalOutput');
    if (!entry) return undefined;
    const v = JSON.parse(entry.toString('utf8'));
    return isMeta(v, hash) ? sanitizeMeta(v) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs `jobs` with at most `limit` at once; a job not started when `signal` aborts is not started.
 * @param {(() => Promise<void>)[]} jobs
 * @param {number} limit
 * @param {AbortSignal} signal
 */
async function pool(jobs, limit, signal) {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length && !signal.aborted) {
      const job = jobs[next];
      next += 1;
      await job();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}

/**
 * A response body of at most `cap` bytes; undefined (and the rest not read) when it declares or
 * turns out to be larger.
 * @param {Response} res
 * @param {number} cap
 * @returns {Promise<Buffer | undefined>}
 */
async function readCapped(res, cap) {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > cap) {
    await res.body?.cancel().catch(() => {});
    return undefined;
  }
  if (!res.body) return Buffer.alloc(0);
  /** @type {Buffer[]} */ const chunks = [];
  let total = 0;
  for await (const chunk of /** @type {AsyncIterable<Uint8Array>} */ (/** @type {unknown} */ (res.body))) {
    total += chunk.length;
    if (total > cap) {
      await res.body.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/**
 * One request to the proxy; status 0 when it got no answer (refused, aborted).
 * @param {ProxyAddress} proxy
 * @param {string} hash
 * @param {'GET' | 'PUT'} method
 * @param {AbortSignal} signal
 * @param {Buffer} [body]
 * @returns {Promise<{ status: number, body?: Buffer }>}
 */
async function request(proxy, hash, method, signal, body) {
  try {
    const res = await fetch(`${proxy.url}/v1/cache/${encodeURIComponent(metaKey(hash))}`, {
      method,
      headers: {
        authorization: `Bearer ${proxy.token}`,
        ...(body ? { 'content-type': 'application/octet-stream', 'content-length': String(body.length) } : {}),
      },
      body,
      signal,
    });
    const data = await readCapped(res, MAX_BODY_BYTES);
    return data ? { status: res.status, body: data } : { status: res.status };
  } catch {
    return { status: 0 };
  }
}

/**
 * Publishes the meta of the tasks this run stored, and fetches that of the artifacts it restored,
 * through the run's proxy: CONCURRENCY requests at once, everything within `totalMs`. Never throws.
 * A record to publish may be given as a function that builds it (undefined: nothing to publish):
 * it is then called inside the pool, only when its turn comes before the time is up.
 * @param {ProxyAddress} proxy
 * @param {{ publish: { hash: string, json: string | (() => string | undefined) }[], fetch: string[] }} work
 * @param {{ totalMs?: number, pack: (json: string) => Promise<Buffer> }} opts
 * @returns {Promise<{ producers: Map<string, Meta>, published: number, exchanges: Exchange[], timedOut: boolean, millis: number }>}
 */
async function exchangeMeta(proxy, work, opts) {
  const started = Date.now();
  const signal = AbortSignal.timeout(opts.totalMs ?? TOTAL_MS);
  /** @type {Map<string, Meta>} */ const producers = new Map();
  /** @type {Exchange[]} */ const exchanges = [];
  let published = 0;
  /** @type {(() => Promise<void>)[]} */ const jobs = [];
  for (const hash of work.fetch) {
    jobs.push(async () => {
      const r = await request(proxy, hash, 'GET', signal);
      exchanges.push({ op: 'get', status: r.status, bytes: r.status === 200 && r.body ? r.body.length : 0 });
      const meta = r.status === 200 && r.body ? parseMetaArtifact(r.body, hash) : undefined;
      if (meta) producers.set(hash, meta);
    });
  }
  for (const item of work.publish) {
    jobs.push(async () => {
      let body;
      try {
        // Built here, in the pool: at most CONCURRENCY records at once, none after the time is up.
        const json = typeof item.json === 'function' ? item.json() : item.json;
        if (json === undefined || signal.aborted) return;
        body = await opts.pack(json);
      } catch {
        return;
      }
      const r = await request(proxy, item.hash, 'PUT', signal, body);
      exchanges.push({ op: 'put', status: r.status, bytes: body.length });
      if (r.status === 200) published += 1;
    });
  }
  await pool(jobs, CONCURRENCY, signal);
  return { producers, published, exchanges, timedOut: signal.aborted, millis: Date.now() - started };
}

/**
 * The producer information a run record keeps of a meta record.
 * @param {Meta} meta
 * @returns {import('./history.js').Producer}
 */
function producerOf(meta) {
  return { durationMs: meta.durationMs, nxVersion: meta.nxVersion, storedAt: meta.storedAt, runId: meta.runId, host: meta.host };
}

/**
 * Takes this run's own meta traffic out of counters from a proxy that counts `*-nxoc-meta` keys as
 * artifacts (one without `metaReads` / `metaWrites` in its counters): a meta read found is not a
 * hit, one not found not a miss, a meta stored not a store. Returns the counters as a proxy that
 * keeps meta apart reports them (`metaReads`: meta found, `metaWrites`: meta stored).
 * @template {{ hits: number, misses: number, stored: number, alreadyStored: number, refusedWrites: number, bytesDown: number, bytesUp: number, metaReads?: number, metaWrites?: number }} S
 * @param {S} stats
 * @param {Exchange[]} exchanges
 * @param {string} mode
 * @returns {S}
 */
function withoutMetaTraffic(stats, exchanges, mode) {
  if (stats.metaReads !== undefined || stats.metaWrites !== undefined) return stats;
  const s = { ...stats, metaReads: 0, metaWrites: 0 };
  const less = (/** @type {'hits' | 'misses' | 'stored' | 'alreadyStored' | 'refusedWrites' | 'bytesDown' | 'bytesUp'} */ k, /** @type {number} */ n) => {
    s[k] = Math.max(0, s[k] - n);
  };
  for (const e of exchanges) {
    if (e.op === 'get') {
      if (e.status === 200) {
        s.metaReads += 1;
        less('hits', 1);
        less('bytesDown', e.bytes);
      } else if (e.status === 404) {
        less('misses', 1);
      }
    } else {
      if (e.status === 200) {
        s.metaWrites += 1;
        less('stored', 1);
        less('bytesUp', e.bytes);
      } else if (e.status === 409) {
        less('alreadyStored', 1);
      } else if (e.status === 403 && mode === 'read-only') {
        less('refusedWrites', 1);
      }
    }
  }
  return s;
}

module.exports = {
  META_FORMAT, META_VERSION, META_SUFFIX, MAX_META_BYTES, MAX_BODY_BYTES, MAX_DURATION_MS, MAX_FIELD_CHARS, CONCURRENCY, TOTAL_MS,
  metaKey, buildMeta, isMeta, sanitizeMeta, parseMetaArtifact, exchangeMeta, producerOf, withoutMetaTraffic,
};
