'use strict';
/**
 * The load generator of benches/serve.js, run in its own process (child_process.fork) so that the
 * client's event loop shares nothing with the orchestrating process or the server under test.
 *
 * Protocol over the IPC channel: the parent sends `{ id, spec }` (a {@link CellSpec}); this process
 * answers `{ id, event: 'start' }` when the timed phase begins (after the warm-up requests), then
 * `{ id, result }` (a {@link CellResult}) or `{ id, error }`. Every request is bounded: a fixed count,
 * a timeout each. Every response's status and byte length are checked; the SHA-256 of the first
 * warm-up GET body and of every `verifyEvery`-th timed one is compared to the expected digest.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');

const REQUEST_TIMEOUT_MS = 120_000;
const WRITE_SLICE = 1024 * 1024;

/**
 * @typedef {object} Artifact
 * @property {string} hash
 * @property {number} length
 * @property {string} sha256
 */

/**
 * @typedef {object} CellSpec
 * @property {string} baseUrl          `http://127.0.0.1:<port>`
 * @property {string | null} token     Bearer token, or null for none
 * @property {'GET' | 'PUT'} method
 * @property {number} connections      requests in flight = keep-alive sockets
 * @property {number} requests         timed requests
 * @property {number} warmup           untimed requests first, over the same agent
 * @property {number} expectStatus     every response must carry this status
 * @property {Artifact[]} [artifacts]  GET: fetched round robin
 * @property {string[]} [bodies]       PUT: files whose bytes are uploaded round robin
 * @property {string[]} [hashes]       PUT: explicit hashes (warm-up first, then timed); else `hashPrefix` + counter
 * @property {string} [hashPrefix]     PUT: fresh hashes `<prefix>w<i>` (warm-up) and `<prefix>m<i>` (timed)
 * @property {number} [verifyEvery]    GET: check the SHA-256 of timed request 0 and every n-th after it;
 *                                     0: none in the timed phase (the first warm-up GET is always checked)
 */

/**
 * @typedef {object} CellResult
 * @property {number} requests
 * @property {number} bytes      body bytes moved in the timed phase (both directions counted once)
 * @property {number} seconds    wall time of the timed phase
 * @property {number} p50Ms
 * @property {number} ttfbP50Ms  median time to the response headers
 * @property {number} p99Ms
 * @property {number} maxMs
 * @property {number} clientCpuS user + system CPU of this process during the timed phase
 * @property {number} verified   GET bodies whose SHA-256 was compared (warm-up included)
 */

/** @type {Map<string, Buffer>} */
const fileCache = new Map();
/** @param {string} file */
function bytesOf(file) {
  let b = fileCache.get(file);
  if (!b) {
    b = fs.readFileSync(file);
    fileCache.set(file, b);
  }
  return b;
}

/**
 * One request. Resolves with the status, the response body's length and (when asked) its SHA-256.
 * @param {http.Agent} agent
 * @param {CellSpec} spec
 * @param {string} hash
 * @param {Buffer | undefined} body  PUT body
 * @param {boolean} digest
 * @returns {Promise<{status: number, length: number, sha256: string, headersAt: bigint}>}
 */
function request(agent, spec, hash, body, digest) {
  return new Promise((resolve, reject) => {
    const url = `${spec.baseUrl}/v1/cache/${hash}`;
    /** @type {Record<string, string>} */
    const headers = {};
    if (spec.token) headers.authorization = `Bearer ${spec.token}`;
    if (body) headers['content-length'] = String(body.length);
    const req = http.request(url, { method: spec.method, agent, headers, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const headersAt = process.hrtime.bigint();
      let length = 0;
      const h = digest ? crypto.createHash('sha256') : undefined;
      res.on('data', (/** @type {Buffer} */ c) => {
        length += c.length;
        if (h) h.update(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, length, sha256: h ? h.digest('hex') : '', headersAt }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${spec.method} ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    if (!body) {
      req.end();
    } else if (body.length <= WRITE_SLICE) {
      req.end(body);
    } else {
      // Large bodies go out in slices with backpressure, as a streaming client would send them.
      let off = 0;
      const pump = () => {
        while (off < body.length) {
          const slice = body.subarray(off, Math.min(off + WRITE_SLICE, body.length));
          off += slice.length;
          if (!req.write(slice)) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    }
  });
}

/** @param {Float64Array} sorted @param {number} q */
function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/**
 * Runs one cell: the warm-up, then the timed phase.
 * @param {CellSpec} spec
 * @param {() => void} onStart called when the timed phase begins
 * @returns {Promise<CellResult>}
 */
async function runCell(spec, onStart) {
  if (!Number.isInteger(spec.connections) || spec.connections < 1) throw new Error(`connections must be >= 1, got ${spec.connections}`);
  if (!Number.isInteger(spec.requests) || spec.requests < 1) throw new Error(`requests must be >= 1, got ${spec.requests}`);
  const artifacts = spec.artifacts || [];
  const bodies = (spec.bodies || []).map(bytesOf);
  if (spec.method === 'GET' && artifacts.length === 0) throw new Error('a GET cell needs artifacts');
  if (spec.method === 'PUT' && bodies.length === 0) throw new Error('a PUT cell needs bodies');
  if (spec.hashes && spec.hashes.length !== spec.warmup + spec.requests) {
    throw new Error(`hashes: ${spec.hashes.length} given, warm-up + requests = ${spec.warmup + spec.requests}`);
  }
  const verifyEvery = spec.verifyEvery === undefined ? 1 : spec.verifyEvery;
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections });
  const latencies = new Float64Array(spec.requests);
  const ttfb = new Float64Array(spec.requests);
  let bytes = 0;
  let verified = 0;

  /**
   * @param {number} count
   * @param {boolean} timed
   */
  const phase = async (count, timed) => {
    let next = 0;
    const worker = async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        const k = timed ? spec.warmup + i : i; // overall index, for explicit hashes
        /** @type {string} */
        let hash;
        /** @type {Buffer | undefined} */
        let body;
        /** @type {Artifact | undefined} */
        let expected;
        if (spec.method === 'GET') {
          expected = artifacts[k % artifacts.length];
          hash = expected.hash;
        } else {
          body = bodies[k % bodies.length];
          hash = spec.hashes ? spec.hashes[k] : `${spec.hashPrefix}${timed ? 'm' : 'w'}${i}`;
        }
        const check = expected !== undefined && (timed ? verifyEvery > 0 && i % verifyEvery === 0 : i === 0);
        const t0 = process.hrtime.bigint();
        const r = await request(agent, spec, hash, body, check);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (r.status !== spec.expectStatus) {
          throw new Error(`${spec.method} ${spec.baseUrl}/v1/cache/${hash} answered ${r.status}, expected ${spec.expectStatus}`);
        }
        if (expected && r.length !== expected.length) {
          throw new Error(`GET ${spec.baseUrl}/v1/cache/${hash} returned ${r.length} bytes, expected ${expected.length}`);
        }
        if (expected && check) {
          if (r.sha256 !== expected.sha256) throw new Error(`GET ${spec.baseUrl}/v1/cache/${hash} returned other bytes than stored (SHA-256 differs)`);
          verified++;
        }
        if (timed) {
          latencies[i] = ms;
          ttfb[i] = Number(r.headersAt - t0) / 1e6;
          bytes += expected ? r.length : /** @type {Buffer} */ (body).length;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(spec.connections, count) }, worker));
  };

  try {
    if (spec.warmup > 0) await phase(spec.warmup, false);
    onStart();
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await phase(spec.requests, true);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const sorted = Float64Array.from(latencies).sort();
    return {
      requests: spec.requests,
      bytes,
      seconds,
      p50Ms: quantile(sorted, 0.5),
      ttfbP50Ms: quantile(ttfb.sort(), 0.5),
      p99Ms: quantile(sorted, 0.99),
      maxMs: sorted[sorted.length - 1],
      clientCpuS: (cpu.user + cpu.system) / 1e6,
      verified,
    };
  } finally {
    agent.destroy();
  }
}

if (require.main === module) {
  if (typeof process.send !== 'function') {
    console.error('benches/load.js is started by benches/serve.js (child_process.fork), not on its own');
    process.exit(2);
  }
  const send = /** @type {(m: unknown) => boolean} */ (process.send.bind(process));
  process.on('message', (/** @type {{id: number, spec?: CellSpec, exit?: boolean}} */ m) => {
    if (m.exit) {
      process.exit(0);
    }
    if (!m.spec) return;
    runCell(m.spec, () => send({ id: m.id, event: 'start' })).then(
      (result) => send({ id: m.id, result }),
      (/** @type {Error} */ e) => send({ id: m.id, error: e && e.message ? e.message : String(e) }),
    );
  });
  // The parent going away ends this process too.
  process.on('disconnect', () => process.exit(0));
}

module.exports = { runCell };
