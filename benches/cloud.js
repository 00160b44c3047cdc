#!/usr/bin/env node
'use strict';
/**
 * Cloud backends benchmark (issue 4): for each emulator (S3: moto_server, GCS: fake-gcs-server,
 * Azure Blob: Azurite), artifacts/s and MB/s of PUT and GET for 1 KiB, 1 MiB and 256 MiB artifacts
 * at 1 and 16 requests in flight (256 MiB: 4 in flight, see below), through the nx-open-cache proxy
 * vs the emulator reached directly with a plain Node `http` client on the same payloads.
 *
 *   node benches/cloud.js [--kinds s3,gcs,azure] [--out benches/results/cloud.md]
 *
 * Everything listens on 127.0.0.1; emulators are stopped in `finally`. Loops are bounded by fixed
 * counts, and the 256 MiB cells are skipped (and reported as skipped) once the bench has run
 * for BIG_CELLS_DEADLINE_S seconds.
 */

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..');
const { start: startEmulator, sharedKeyAuthorization } = require('../scripts/emulators.js');
const { CacheProxy } = require('../index.js');
const { exactArtifact } = require('./validate-artifact.js');

const KIB = 1024;
const MIB = 1024 * 1024;
const REQUEST_TIMEOUT_MS = 120_000;
/** The 256 MiB cells start only while the whole bench is younger than this. */
const BIG_CELLS_DEADLINE_S = 170;

/**
 * The cells: payload size, requests in flight, artifacts (each PUT once, then GET once).
 * 256 MiB: at most 4 in flight, not 16 (16 x 256 MiB in flight, twice over for the proxy's spool and the
 * emulator's in-memory copy, on a 2-CPU machine, would blow the 4-minute budget and much memory).
 * @type {{ size: number, label: string, concurrency: number, count: number }[]}
 */
const CELLS = [
  { size: KIB, label: '1 KiB', concurrency: 1, count: 100 },
  { size: KIB, label: '1 KiB', concurrency: 16, count: 320 },
  { size: MIB, label: '1 MiB', concurrency: 1, count: 16 },
  { size: MIB, label: '1 MiB', concurrency: 16, count: 64 },
  { size: 256 * MIB, label: '256 MiB', concurrency: 1, count: 1 },
  { size: 256 * MIB, label: '256 MiB', concurrency: 4, count: 4 },
];

function parseArgs() {
  const args = process.argv.slice(2);
  const o = { kinds: ['s3', 'gcs', 'azure'], out: path.join(REPO_ROOT, 'benches', 'results', 'cloud.md') };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--kinds') o.kinds = String(args[++i] || '').split(',').filter(Boolean);
    else if (args[i] === '--out') o.out = path.resolve(String(args[++i] || ''));
    else throw new Error(`cloud bench: unknown argument ${args[i]}`);
  }
  return o;
}

/* ------------------------------------------------------------------------------------------------ */
/* HTTP                                                                                              */
/* ------------------------------------------------------------------------------------------------ */

/**
 * One request; the response body is counted (and hashed when `verify`), not kept.
 * @param {http.Agent} agent
 * @param {string} method
 * @param {string} url
 * @param {Record<string, string>} headers
 * @param {Buffer | undefined} body
 * @param {boolean} [verify]
 * @returns {Promise<{ status: number, length: number, sha256: string, text: string }>}
 */
function send(agent, method, url, headers, body, verify) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body) h['content-length'] = String(body.length);
    else if (method === 'PUT' || method === 'POST') h['content-length'] = '0';
    const req = http.request(url, { method, agent, headers: h, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      let length = 0;
      let text = '';
      const hash = verify ? crypto.createHash('sha256') : undefined;
      res.on('data', (/** @type {Buffer} */ c) => {
        length += c.length;
        if (hash) hash.update(c);
        if (text.length < 500) text += c.subarray(0, 500).toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode || 0, length, sha256: hash ? hash.digest('hex') : '', text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** @param {string} s RFC 3986 encoding, as SigV4 wants it */
function rfc3986(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * SigV4 headers (path-style, UNSIGNED-PAYLOAD, no query) for the S3 emulator, with the emulator's
 * test credentials from its env.
 * @param {string} method
 * @param {URL} url
 * @param {Record<string, string>} env
 * @param {Record<string, string>} extra  lower-case names
 */
function sigV4Headers(method, url, env, extra) {
  const now = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = now.slice(0, 8);
  const region = env.AWS_REGION;
  /** @type {Record<string, string>} */
  const headers = { ...extra, host: url.host, 'x-amz-date': now, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
  const names = Object.keys(headers).sort();
  const canonical = [
    method,
    url.pathname,
    [...url.searchParams].map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`).sort().join('&'),
    names.map((n) => `${n}:${headers[n].trim()}\n`).join(''),
    names.join(';'),
    'UNSIGNED-PAYLOAD',
  ].join('\n');
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', now, scope, crypto.createHash('sha256').update(canonical).digest('hex')].join('\n');
  const hmac = (/** @type {crypto.BinaryLike} */ k, /** @type {string} */ d) => crypto.createHmac('sha256', k).update(d).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${env.AWS_SECRET_ACCESS_KEY}`, day), region), 's3'), 'aws4_request');
  const signature = crypto.createHmac('sha256', key).update(toSign).digest('hex');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${env.AWS_ACCESS_KEY_ID}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  delete headers.host;
  return headers;
}

/**
 * @typedef {object} Client
 * @property {string} name
 * @property {(agent: http.Agent, hash: string, body: Buffer) => Promise<void>} put
 * @property {(agent: http.Agent, hash: string, size: number, verify?: boolean) => Promise<string>} get  sha256 when verify
 */

/**
 * @param {string} what
 * @param {{ status: number, text: string }} r
 * @param {number[]} ok
 */
function expectStatus(what, r, ok) {
  if (!ok.includes(r.status)) throw new Error(`${what}: HTTP ${r.status}: ${r.text.slice(0, 300)}`);
}

/**
 * @param {{ status: number, length: number, text: string }} r
 * @param {string} what
 * @param {number} size
 */
function expectBody(r, what, size) {
  expectStatus(what, r, [200]);
  if (r.length !== size) throw new Error(`${what}: ${r.length} bytes, expected ${size}`);
}

/**
 * The plain client that reaches the emulator directly (its own API, no proxy).
 * @param {any} emu
 * @returns {Client}
 */
function directClient(emu) {
  const key = (/** @type {string} */ hash) => `direct/${hash}`;
  if (emu.kind === 's3') {
    const base = `${emu.endpoint}/${emu.bucket}`;
    return {
      name: 'direct S3 REST (SigV4, one PUT)',
      async put(agent, hash, body) {
        const url = `${base}/${key(hash)}`;
        const headers = sigV4Headers('PUT', new URL(url), emu.env, { 'content-type': 'application/octet-stream' });
        expectStatus(`PUT ${url}`, await send(agent, 'PUT', url, headers, body), [200]);
      },
      async get(agent, hash, size, verify) {
        const url = `${base}/${key(hash)}`;
        const r = await send(agent, 'GET', url, sigV4Headers('GET', new URL(url), emu.env, {}), undefined, verify);
        expectBody(r, `GET ${url}`, size);
        return r.sha256;
      },
    };
  }
  if (emu.kind === 'gcs') {
    // fake-gcs-server itself (not the XML front the proxy goes through), JSON API media upload/download.
    const server = emu.server;
    return {
      name: 'direct GCS JSON API (media upload / alt=media) to fake-gcs-server',
      async put(agent, hash, body) {
        const url = `${server}/upload/storage/v1/b/${emu.bucket}/o?uploadType=media&name=${encodeURIComponent(key(hash))}`;
        expectStatus(`POST ${url}`, await send(agent, 'POST', url, { 'content-type': 'application/octet-stream' }, body), [200]);
      },
      async get(agent, hash, size, verify) {
        const url = `${server}/storage/v1/b/${emu.bucket}/o/${encodeURIComponent(key(hash))}?alt=media`;
        const r = await send(agent, 'GET', url, {}, undefined, verify);
        expectBody(r, `GET ${url}`, size);
        return r.sha256;
      },
    };
  }
  const base = `${emu.endpoint}/${emu.container}`;
  /** @param {string} method @param {string} url @param {Record<string, string>} extra @param {number} len */
  const azHeaders = (method, url, extra, len) => {
    /** @type {Record<string, string>} */
    const headers = { ...extra, 'x-ms-date': new Date().toUTCString(), 'x-ms-version': '2021-08-06' };
    headers.authorization = sharedKeyAuthorization(method, new URL(url), headers, len);
    return headers;
  };
  return {
    name: 'direct Azure Blob REST (SharedKey, one Put Blob)',
    async put(agent, hash, body) {
      const url = `${base}/${key(hash)}`;
      const headers = azHeaders('PUT', url, { 'x-ms-blob-type': 'BlockBlob', 'content-type': 'application/octet-stream' }, body.length);
      expectStatus(`PUT ${url}`, await send(agent, 'PUT', url, headers, body), [201]);
    },
    async get(agent, hash, size, verify) {
      const url = `${base}/${key(hash)}`;
      const r = await send(agent, 'GET', url, azHeaders('GET', url, {}, 0), undefined, verify);
      expectBody(r, `GET ${url}`, size);
      return r.sha256;
    },
  };
}

/**
 * The Nx self-hosted cache API of the proxy.
 * @param {string} baseUrl
 * @param {string} token
 * @returns {Client}
 */
function proxyClient(baseUrl, token) {
  const auth = { authorization: `Bearer ${token}` };
  return {
    name: 'nx-open-cache proxy',
    async put(agent, hash, body) {
      const url = `${baseUrl}/v1/cache/${hash}`;
      expectStatus(`PUT ${url}`, await send(agent, 'PUT', url, { ...auth, 'content-type': 'application/octet-stream' }, body), [200]);
    },
    async get(agent, hash, size, verify) {
      const url = `${baseUrl}/v1/cache/${hash}`;
      const r = await send(agent, 'GET', url, auth, undefined, verify);
      expectBody(r, `GET ${url}`, size);
      return r.sha256;
    },
  };
}

/* ------------------------------------------------------------------------------------------------ */
/* measurement                                                                                       */
/* ------------------------------------------------------------------------------------------------ */

let hashCounter = 0;
const RUN_ID = String(Date.now());
/** A fresh decimal hash (the form Nx uses). */
function freshHash() {
  hashCounter += 1;
  return `${RUN_ID}${String(hashCounter).padStart(6, '0')}`;
}

/**
 * Runs `op` on every item with `concurrency` in flight; returns the seconds taken.
 * @template T
 * @param {T[]} items
 * @param {number} concurrency
 * @param {(item: T) => Promise<void>} op
 */
async function timed(items, concurrency, op) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      await op(item);
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/**
 * PUT `count` fresh artifacts, then GET them all, with `concurrency` in flight over keep-alive.
 * The first artifact's GET is then repeated untimed with a sha256 check.
 * @param {Client} client
 * @param {Buffer} payload
 * @param {string} payloadSha
 * @param {{ count: number, concurrency: number, size: number }} cell
 */
async function measure(client, payload, payloadSha, cell) {
  const hashes = Array.from({ length: cell.count }, freshHash);
  const agent = new http.Agent({ keepAlive: true, maxSockets: cell.concurrency });
  try {
    const putS = await timed(hashes, cell.concurrency, (h) => client.put(agent, h, payload));
    const getS = await timed(hashes, cell.concurrency, async (h) => {
      await client.get(agent, h, cell.size);
    });
    const sha = await client.get(agent, hashes[0], cell.size, true);
    if (sha !== payloadSha) throw new Error(`${client.name}: GET of ${hashes[0]} returned other bytes than were PUT`);
    return { putS, getS };
  } finally {
    agent.destroy();
  }
}

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** @param {number} n @param {number} [d] */
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-');

function loadAvg() {
  return os.loadavg().map((x) => x.toFixed(2)).join(' ');
}

async function main() {
  const o = parseArgs();
  const started = Date.now();
  const loadStart = loadAvg();
  const payloads = new Map();
  for (const size of new Set(CELLS.map((c) => c.size))) {
    // A valid Nx artifact of noise: the proxy serves nothing else.
    const buf = exactArtifact(size);
    payloads.set(size, { buf, sha: crypto.createHash('sha256').update(buf).digest('hex') });
  }
  /** @type {{ kind: string, version: string, cell: typeof CELLS[0], proxy?: { putS: number, getS: number }, direct?: { putS: number, getS: number }, skipped?: string }[]} */
  const rows = [];
  /** @type {string[]} */
  const notes = [];
  for (const kind of o.kinds) {
    const emu = await startEmulator(/** @type {any} */ (kind));
    const ws = fs.mkdtempSync(path.join(os.tmpdir(), `nxoc-bench-cloud-${kind}-`));
    /** @type {any} */
    let proxy;
    try {
      proxy = CacheProxy.start(ws, { ...emu.options, prefix: 'bench' }, {
        ...process.env,
        ...emu.env,
        NX_OPEN_CACHE_MODE: 'read-write',
      });
      console.error(`${kind}: ${emu.version}; proxy ${proxy.url} -> ${proxy.location} (${proxy.mode})`);
      const viaProxy = proxyClient(proxy.url, proxy.token);
      const direct = directClient(emu);
      let puts = 0;
      let gets = 0;
      for (const cell of CELLS) {
        const row = { kind, version: emu.version, cell };
        if (cell.size >= 256 * MIB && (Date.now() - started) / 1000 > BIG_CELLS_DEADLINE_S) {
          rows.push({ ...row, skipped: `bench older than ${BIG_CELLS_DEADLINE_S} s` });
          console.error(`${kind} ${cell.label} x${cell.concurrency}: skipped (time budget)`);
          continue;
        }
        const { buf, sha } = payloads.get(cell.size);
        // Alternate which side goes first, so drift (emulator memory growth, load) is shared.
        const proxyFirst = rows.length % 2 === 0;
        /** @type {any} */ const r = { ...row };
        for (const side of proxyFirst ? ['proxy', 'direct'] : ['direct', 'proxy']) {
          r[side] = await measure(side === 'proxy' ? viaProxy : direct, buf, sha, cell);
        }
        puts += cell.count;
        gets += cell.count + 1;
        rows.push(r);
        console.error(
          `${kind} ${cell.label} x${cell.concurrency} n=${cell.count}: ` +
            `PUT proxy ${fmt(cell.count / r.proxy.putS)}/s direct ${fmt(cell.count / r.direct.putS)}/s; ` +
            `GET proxy ${fmt(cell.count / r.proxy.getS)}/s direct ${fmt(cell.count / r.direct.getS)}/s`,
        );
      }
      const stats = await proxy.stop();
      proxy = undefined;
      const ok = stats.stored === puts && stats.hits === gets && stats.errorCount === 0 && stats.refusedWrites === 0;
      const line =
        `${kind}: proxy counters stored ${stats.stored} (sent ${puts}), hits ${stats.hits} (sent ${gets}), ` +
        `misses ${stats.misses}, alreadyStored ${stats.alreadyStored}, errorCount ${stats.errorCount}` +
        (stats.errors.length ? ` (${stats.errors.map((/** @type {any} */ e) => `${e.reason} x${e.count}`).join('; ')})` : '');
      console.error(line);
      if (!ok) throw new Error(`cloud bench: proxy counters do not match the traffic: ${line}`);
      notes.push(line);
    } finally {
      if (proxy) await proxy.stop().catch(() => undefined);
      await emu.stop();
      fs.rmSync(ws, { recursive: true, force: true });
    }
  }
  const seconds = (Date.now() - started) / 1000;
  const md = report(rows, notes, { seconds, loadStart, loadEnd: loadAvg() });
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, md);
  console.log(md);
}

/**
 * @param {any[]} rows
 * @param {string[]} notes
 * @param {{ seconds: number, loadStart: string, loadEnd: string }} run
 */
function report(rows, notes, run) {
  const cpu = os.cpus()[0];
  const lines = [];
  lines.push('## Cloud backends: proxy vs the emulator reached directly');
  lines.push('');
  lines.push('Command: `node benches/cloud.js` (`--kinds s3,gcs,azure`).');
  lines.push('');
  lines.push(`- Date: ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC`);
  lines.push(
    `- Machine: ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB memory, CPU: ${cpu ? cpu.model.trim() : 'unknown'}; ` +
      `${os.type()} ${os.release()} ${os.arch()}; Node ${process.version}`,
  );
  lines.push(`- Emulators: ${[...new Set(rows.map((r) => `${r.kind}: ${r.version}`))].join('; ')}`);
  lines.push(`- Whole bench: ${run.seconds.toFixed(0)} s; load average (1, 5, 15 min) ${run.loadStart} at the start, ${run.loadEnd} at the end`);
  lines.push('');
  lines.push(
    'Each cell PUTs `n` fresh artifacts of one size (the same random payload under fresh decimal hashes) with `c` requests ' +
      'in flight over a keep-alive `http.Agent`, then GETs them all the same way; the first GET is repeated untimed with a ' +
      'SHA-256 check of the body. "proxy" is the Nx self-hosted cache API of `CacheProxy.start` (in this process, on its ' +
      'native threads, prefix `bench`) on the emulator; "direct" is a plain Node `http` client on the emulator\'s own API ' +
      '(S3: SigV4-signed path-style PUT/GET with UNSIGNED-PAYLOAD; GCS: JSON API media upload / `alt=media` straight to ' +
      'fake-gcs-server; Azure: SharedKey-signed Put Blob / Get Blob). Proxy and direct alternate which goes first. ' +
      '256 MiB runs with 1 and 4 in flight (not 16: 16 x 256 MiB held by the client, the proxy\'s spool and the in-memory ' +
      'emulator, on this 2-CPU machine, would not fit the 4-minute budget), and with 1 and 4 artifacts only, so those figures ' +
      'are single samples. MB = 10^6 bytes.',
  );
  lines.push('');
  lines.push('| backend | size | c | n | PUT proxy art/s | PUT direct art/s | PUT proxy MB/s | PUT direct MB/s | PUT proxy/direct | GET proxy art/s | GET direct art/s | GET proxy MB/s | GET direct MB/s | GET proxy/direct |');
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const { cell } = r;
    if (r.skipped) {
      lines.push(`| ${r.kind} | ${cell.label} | ${cell.concurrency} | ${cell.count} | skipped: ${r.skipped} | | | | | | | | | |`);
      continue;
    }
    const rate = (/** @type {number} */ s) => cell.count / s;
    const mbs = (/** @type {number} */ s) => (cell.count * cell.size) / 1e6 / s;
    const d = cell.size >= MIB ? 1 : 0;
    lines.push(
      `| ${r.kind} | ${cell.label} | ${cell.concurrency} | ${cell.count} | ` +
        `${fmt(rate(r.proxy.putS), d)} | ${fmt(rate(r.direct.putS), d)} | ${fmt(mbs(r.proxy.putS), 2)} | ${fmt(mbs(r.direct.putS), 2)} | ` +
        `**${fmt(r.direct.putS / r.proxy.putS, 2)}** | ` +
        `${fmt(rate(r.proxy.getS), d)} | ${fmt(rate(r.direct.getS), d)} | ${fmt(mbs(r.proxy.getS), 2)} | ${fmt(mbs(r.direct.getS), 2)} | ` +
        `**${fmt(r.direct.getS / r.proxy.getS, 2)}** |`,
    );
  }
  lines.push('');
  lines.push('Ratios are proxy throughput / direct throughput (1.00 = as fast as the plain client; below 1 = the proxy is slower).');
  lines.push('');
  lines.push('Proxy counters checked after each backend (`await proxy.stop()`):');
  lines.push('');
  for (const n of notes) lines.push(`- ${n}`);
  lines.push('');
  const summary = [...new Set(rows.map((r) => r.kind))].map((kind) => {
    const mine = rows.filter((r) => r.kind === kind && !r.skipped);
    const ratios = (/** @type {'putS' | 'getS'} */ f) => mine.map((r) => r.direct[f] / r.proxy[f]);
    const range = (/** @type {number[]} */ xs) => `${fmt(median(xs), 2)} (${fmt(Math.min(...xs), 2)}-${fmt(Math.max(...xs), 2)})`;
    return `${kind} PUT ${range(ratios('putS'))}, GET ${range(ratios('getS'))}`;
  });
  lines.push(`Median (min-max) proxy/direct over the cells: ${summary.join('; ')}.`);
  lines.push('');
  const big = rows.filter((r) => !r.skipped && r.cell.size >= 256 * MIB);
  if (big.length) {
    const mb = (/** @type {any} */ r, /** @type {'putS' | 'getS'} */ f, /** @type {'proxy' | 'direct'} */ side) =>
      (r.cell.count * r.cell.size) / 1e6 / r[side][f];
    const span = (/** @type {number[]} */ xs) => `${fmt(Math.min(...xs), 0)}-${fmt(Math.max(...xs), 0)} MB/s`;
    lines.push(
      `256 MiB artifacts, all backends: PUT through the proxy ${span(big.map((r) => mb(r, 'putS', 'proxy')))} vs direct ` +
        `${span(big.map((r) => mb(r, 'putS', 'direct')))}; GET through the proxy ${span(big.map((r) => mb(r, 'getS', 'proxy')))} ` +
        `vs direct ${span(big.map((r) => mb(r, 'getS', 'direct')))}.`,
    );
  }
  lines.push('');
  lines.push(
    'Reading: the two paths do not do the same work, and the ratios should be read with that in mind. The proxy ' +
      'spools every upload (memory up to 8 MiB, then an unlinked temp file) and computes the SHA-256 of the envelope ' +
      'before sending anything, writes with a create-if-absent condition, and uploads artifacts above 8 MiB with ' +
      'multipart to a temp key followed by a conditional copy and a delete (three or more emulator round trips and a ' +
      'second full copy inside the emulator, where the direct client does one Put); on GET it spools the whole object ' +
      'and verifies its digest before the first byte goes to the client, where the direct client streams. For GCS the ' +
      'proxy (object_store speaks the XML API) goes through `scripts/gcs-xml-front.js`, a test-only Node translation ' +
      'front in front of fake-gcs-server, while the direct client talks JSON to fake-gcs-server itself, so GCS ratios ' +
      'include the front\'s cost and say little about real GCS. The emulators are single processes on the same 2 CPUs ' +
      'as the client and the proxy (moto is Python, Azurite is Node), so they are the bottleneck for small artifacts and ' +
      'the ratios there measure the proxy\'s extra round trips and CPU next to a slow server, not a cloud round trip. ' +
      'None of this is a statement about latency to a real cloud region, where network round trips dominate both paths. ' +
      'Each cell is one run (no repetitions) on a shared, loaded machine (load average near 2-6 on 2 CPUs): ' +
      'the small-artifact cells moved by up to 2x between two runs of this bench (e.g. Azure 1 MiB PUT at 1 in flight ' +
      'went from 0.70 to 1.98), so ratios above 1 and single odd cells are noise, not findings. What the figures do show: for small and 1 MiB ' +
      'artifacts on S3 and Azure the proxy is within a small factor of the plain client, and for 256 MiB artifacts the ' +
      'proxy\'s spool-then-digest-then-multipart write and spool-then-verify read cost a factor of about 2-8 ' +
      '(consistently in both runs; worst on GCS with the translating front) against a single in-memory Put/Get on an emulator on the same host.',
  );
  lines.push('');
  return lines.join('\n');
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack || e.message : String(e));
  process.exit(1);
});
