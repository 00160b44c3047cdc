#!/usr/bin/env node
'use strict';
/**
 * Cloud backends benchmark (issues 4 and 14): for each emulator (S3: moto_server, GCS: fake-gcs-server,
 * Azure Blob: Azurite), PUT and GET of 1 KiB, 1 MiB and 64 MiB artifacts through the nx-open-cache
 * proxy vs a plain single-stream client on the emulator's own API, both over the same shaped link
 * (benches/relay.js: a relay per emulator endpoint, RTT/2 each way, a per-connection cap), in rotated
 * rounds; on S3 also the AWS CLI (`aws s3 cp`, its default multipart and concurrency) when installed.
 *
 *   node benches/cloud.js [--profile 20ms|5ms|passthrough|none] [--kinds s3,gcs,azure] [--rounds 3]
 *                         [--repo <checkout>] [--label <what the proxy code is>] [--aws <aws binary>]
 *                         [--sizes 1KiB,1MiB,64MiB] [--no-aws] [--out benches/results/cloud.md]
 *
 * --profile: the link (benches/relay.js PROFILES; several comma-separated; `none`: no relay at all).
 * --repo: the checkout whose index.js (native addon) runs the proxy (default: this one), to measure
 *   another branch's data path with this bench; --label names it in the report (default: its git branch
 *   and commit).
 * --sizes: only the cells of these sizes (default: all; the report goes to
 *   benches/results/cloud-<sizes>.md unless --out is given); --no-aws: skip the AWS CLI.
 * --aws: the AWS CLI to time on S3 (default: `aws` in .venv, then /tmp/awscli-venv; skipped if none).
 *
 * Everything listens on 127.0.0.1; relays and emulators are stopped in `finally`. Loops are bounded by
 * fixed counts.
 */

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const REPO_ROOT = path.resolve(__dirname, '..');
const { start: startEmulator, sharedKeyAuthorization } = require('../scripts/emulators.js');
const { exactArtifact } = require('./validate-artifact.js');
const { spawnRelay, check: checkRelay, cpuSeconds, PROFILES } = require('./relay.js');

const KIB = 1024;
const MIB = 1024 * 1024;
const REQUEST_TIMEOUT_MS = 120_000;
/** From this size on, the issue's targets are those of artifacts (>= 1.5x GET, >= 1.0x PUT). */
const BIG = 64 * MIB;

/**
 * The cells: payload size, requests in flight, artifacts per round (each PUT once, then GET once).
 * @type {{ size: number, label: string, concurrency: number, count: number }[]}
 */
const CELLS = [
  { size: KIB, label: '1 KiB', concurrency: 1, count: 40 },
  { size: KIB, label: '1 KiB', concurrency: 16, count: 160 },
  { size: MIB, label: '1 MiB', concurrency: 1, count: 12 },
  { size: MIB, label: '1 MiB', concurrency: 16, count: 48 },
  { size: BIG, label: '64 MiB', concurrency: 1, count: 1 },
];

/**
 * A cell's size as `--sizes` names it (`64MiB`).
 * @param {{ label: string }} cell
 */
function sizeName(cell) {
  return cell.label.replace(' ', '');
}

/**
 * The cells `--sizes` selects (all by default).
 * @param {{ sizes?: string[] }} o
 */
function cellsOf(o) {
  return o.sizes ? CELLS.filter((c) => /** @type {string[]} */ (o.sizes).includes(sizeName(c))) : CELLS;
}

function parseArgs() {
  const args = process.argv.slice(2);
  const o = {
    kinds: ['s3', 'gcs', 'azure'],
    profiles: ['20ms'],
    rounds: 3,
    repo: REPO_ROOT,
    /** @type {string | undefined} */
    aws: undefined,
    /** @type {string | undefined} */
    label: undefined,
    /** @type {string | undefined} */
    out: undefined,
    /** @type {string[] | undefined} */
    sizes: undefined,
    noAws: false,
  };
  const value = (/** @type {number} */ i) => {
    if (i >= args.length) throw new Error(`cloud bench: ${args[i - 1]} needs a value`);
    return String(args[i]);
  };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--kinds') o.kinds = value(++i).split(',').filter(Boolean);
    else if (args[i] === '--profile') o.profiles = value(++i).split(',').filter(Boolean);
    else if (args[i] === '--rounds') o.rounds = Number(value(++i));
    else if (args[i] === '--repo') o.repo = path.resolve(value(++i));
    else if (args[i] === '--aws') o.aws = path.resolve(value(++i));
    else if (args[i] === '--out') o.out = path.resolve(value(++i));
    else if (args[i] === '--label') o.label = value(++i);
    else if (args[i] === '--sizes') o.sizes = value(++i).split(',').filter(Boolean);
    else if (args[i] === '--no-aws') o.noAws = true;
    else throw new Error(`cloud bench: unknown argument ${args[i]}`);
  }
  for (const p of o.profiles) {
    if (p !== 'none' && !PROFILES[p]) {
      throw new Error(`cloud bench: unknown --profile ${JSON.stringify(p)}; expected none or one of ${Object.keys(PROFILES).join(', ')}`);
    }
  }
  if (!(Number.isInteger(o.rounds) && o.rounds >= 1 && o.rounds <= 9)) throw new Error(`cloud bench: --rounds ${o.rounds} must be 1 to 9`);
  if (o.sizes) {
    const labels = CELLS.map(sizeName);
    const bad = o.sizes.filter((s) => !labels.includes(s));
    if (bad.length) throw new Error(`cloud bench: --sizes ${bad.join(',')}: expected some of ${[...new Set(labels)].join(', ')}`);
  }
  // A partial (profiling) run never overwrites the committed full results unless --out says so.
  const outName = o.sizes ? `cloud-${o.sizes.join('-')}.md` : 'cloud.md';
  const out = o.out ?? path.join(REPO_ROOT, 'benches', 'results', outName);
  if (!fs.existsSync(path.join(o.repo, 'index.js'))) throw new Error(`cloud bench: --repo ${o.repo} has no index.js`);
  return { ...o, out };
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
/** The proxy's faults when the last backend failed (for the report). */
let lastFaults = '';
const RUN_ID = String(Date.now());
/** A fresh decimal hash (the form Nx uses). */
function freshHash() {
  hashCounter += 1;
  return `${RUN_ID}${String(hashCounter).padStart(6, '0')}`;
}

/**
 * @typedef {object} Meter  CPU seconds so far of the processes on the data path, by role
 * @property {() => { relay: number, emulator: number, bench: number }} read  bench: this process
 *   (the client, the in-process proxy's native threads and, for GCS, the XML front)
 */

/**
 * @typedef {{ relay: number, emulator: number, bench: number }} CpuShare  % of one core over a phase
 * @typedef {{ s: number, cpu: CpuShare }} Phase
 */

/**
 * Runs `op` on every item with `concurrency` in flight; returns the seconds taken and the CPU share
 * of each process on the path meanwhile.
 * @template T
 * @param {T[]} items
 * @param {number} concurrency
 * @param {Meter} meter
 * @param {(item: T) => Promise<void>} op
 * @returns {Promise<Phase>}
 */
async function timed(items, concurrency, meter, op) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      await op(item);
    }
  };
  const c0 = meter.read();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = meter.read();
  const share = (/** @type {'relay' | 'emulator' | 'bench'} */ k) => (100 * (c1[k] - c0[k])) / s;
  return { s, cpu: { relay: share('relay'), emulator: share('emulator'), bench: share('bench') } };
}

/**
 * PUT `count` fresh artifacts, then GET them all, with `concurrency` in flight over keep-alive.
 * The first artifact's GET is then repeated untimed with a sha256 check.
 * @param {Client} client
 * @param {Buffer} payload
 * @param {string} payloadSha
 * @param {{ count: number, concurrency: number, size: number }} cell
 * @param {Meter} meter
 * @returns {Promise<{ put: Phase, get: Phase }>}
 */
async function measure(client, payload, payloadSha, cell, meter) {
  const hashes = Array.from({ length: cell.count }, freshHash);
  const agent = new http.Agent({ keepAlive: true, maxSockets: cell.concurrency });
  try {
    const put = await timed(hashes, cell.concurrency, meter, (h) => client.put(agent, h, payload));
    const get = await timed(hashes, cell.concurrency, meter, async (h) => {
      await client.get(agent, h, cell.size);
    });
    const sha = await client.get(agent, hashes[0], cell.size, true);
    if (sha !== payloadSha) throw new Error(`${client.name}: GET of ${hashes[0]} returned other bytes than were PUT`);
    return { put, get };
  } finally {
    agent.destroy();
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* the AWS CLI (S3)                                                                                  */
/* ------------------------------------------------------------------------------------------------ */

/**
 * The AWS CLI to time, if one is installed: --aws, then .venv's, then /tmp/awscli-venv's.
 * @param {string | undefined} given
 * @returns {{ bin: string, version: string } | undefined}
 */
function findAws(given) {
  const candidates = given ? [given] : [path.join(REPO_ROOT, '.venv', 'bin', 'aws'), '/tmp/awscli-venv/bin/aws'];
  for (const bin of candidates) {
    if (!fs.existsSync(bin)) continue;
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 60_000 });
    if (r.status === 0) return { bin, version: `${r.stdout}${r.stderr}`.trim().split(/\s+/)[0] };
  }
  if (given) throw new Error(`cloud bench: --aws ${given} does not run`);
  return undefined;
}

/**
 * Times one `aws` command (wall seconds, the process's start included).
 * @param {string} bin
 * @param {string[]} args
 * @param {Record<string, string>} env
 */
function awsTimed(bin, args, env) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: REQUEST_TIMEOUT_MS, env: { ...process.env, ...env } });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`cloud bench: aws ${args.join(' ')}: exit ${r.status}: ${(r.stderr || '').slice(0, 500)}`);
  return s;
}

/**
 * `aws s3 cp` up and down of one artifact file (default multipart threshold, part size and
 * concurrency), plus the same CLI's cost of starting and one request (`aws s3api head-bucket`).
 * @param {string} bin
 * @param {{ endpoint: string, bucket: string, env: Record<string, string> }} s3
 * @param {string} file
 * @param {number} size
 * @param {string} sha
 * @param {string} dir
 */
function measureAws(bin, s3, file, size, sha, dir) {
  const env = { ...s3.env, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', AWS_PAGER: '' };
  const common = ['--endpoint-url', s3.endpoint, '--no-progress', '--only-show-errors'];
  const key = `s3://${s3.bucket}/cli/${freshHash()}`;
  const startS = awsTimed(bin, ['s3api', 'head-bucket', '--bucket', s3.bucket, '--endpoint-url', s3.endpoint], env);
  const putS = awsTimed(bin, ['s3', 'cp', file, key, ...common], env);
  const back = path.join(dir, 'aws-get');
  const getS = awsTimed(bin, ['s3', 'cp', key, back, ...common], env);
  const got = fs.readFileSync(back);
  fs.rmSync(back, { force: true });
  if (got.length !== size || crypto.createHash('sha256').update(got).digest('hex') !== sha) {
    throw new Error(`cloud bench: aws s3 cp of ${key} came back with other bytes`);
  }
  return { putS, getS, startS };
}

/* ------------------------------------------------------------------------------------------------ */
/* the shaped link                                                                                   */
/* ------------------------------------------------------------------------------------------------ */

/**
 * @param {string} url
 * @returns {string} host:port
 */
function hostPort(url) {
  const u = new URL(url);
  return `${u.hostname}:${u.port}`;
}

/**
 * Puts a relay (own process) in front of each endpoint of the emulator that the proxy or the plain
 * client reaches, and returns the emulator description and proxy options / env pointed at them.
 * `none`: no relay, the emulator as it is.
 * @param {any} emu
 * @param {string} profile
 * @param {string} ws  a directory for the GCS key file that names the relayed endpoint
 * @returns {Promise<{ emu: any, options: Record<string, unknown>, env: Record<string, string>, relays: import('./relay.js').RelayProcess[] }>}
 */
async function shapedLink(emu, profile, ws) {
  if (profile === 'none') return { emu, options: emu.options, env: emu.env, relays: [] };
  /** @type {import('./relay.js').RelayProcess[]} */
  const relays = [];
  const relayTo = async (/** @type {string} */ url) => {
    const r = await spawnRelay(['--upstream', hostPort(url), '--profile', profile]);
    relays.push(r);
    return r.url;
  };
  try {
    if (emu.kind === 's3') {
      const endpoint = await relayTo(emu.endpoint);
      return {
        emu: { ...emu, endpoint },
        options: { ...emu.options, endpoint },
        env: { ...emu.env, AWS_ENDPOINT_URL: endpoint, AWS_ENDPOINT: endpoint },
        relays,
      };
    }
    if (emu.kind === 'gcs') {
      // The proxy reaches the XML front (then fake-gcs-server, unshaped: both are "the emulator");
      // the plain client reaches fake-gcs-server's JSON API: one relay each, same profile.
      const front = await relayTo(emu.endpoint);
      const server = await relayTo(emu.server);
      const key = JSON.parse(fs.readFileSync(emu.env.GOOGLE_SERVICE_ACCOUNT, 'utf8'));
      const keyFile = path.join(ws, 'gcs-service-account-relayed.json');
      fs.writeFileSync(keyFile, JSON.stringify({ ...key, gcs_base_url: front }));
      return {
        emu: { ...emu, endpoint: front, server },
        options: emu.options,
        env: { ...emu.env, GOOGLE_SERVICE_ACCOUNT: keyFile, GOOGLE_SERVICE_ACCOUNT_PATH: keyFile, STORAGE_EMULATOR_HOST: front },
        relays,
      };
    }
    const account = new URL(emu.endpoint).pathname; // /devstoreaccount1
    const server = await relayTo(emu.endpoint);
    const endpoint = `${server}${account}`;
    return {
      emu: { ...emu, endpoint },
      options: { ...emu.options, endpoint },
      env: {
        ...emu.env,
        AZURITE_BLOB_STORAGE_URL: server,
        AZURE_STORAGE_CONNECTION_STRING: emu.env.AZURE_STORAGE_CONNECTION_STRING.replace(/BlobEndpoint=[^;]*;/, `BlobEndpoint=${endpoint};`),
      },
      relays,
    };
  } catch (e) {
    for (const r of relays) await r.stop();
    throw e;
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

/**
 * @typedef {{ put: Phase, get: Phase }} Sample
 * @typedef {{ profile: string, kind: string, cell: typeof CELLS[0], proxy: Sample[], direct: Sample[] }} Row
 * @typedef {{ profile: string, kind: string, size: number, putS: number[], getS: number[], startS: number[] }} AwsRow
 */

/**
 * One backend on one link: the emulator, its relays, the proxy; every cell for `rounds` rounds,
 * proxy and plain client alternating which goes first (by round and cell).
 * @param {ReturnType<typeof parseArgs>} o
 * @param {string} kind
 * @param {string} profile
 * @param {Map<number, { buf: Buffer, sha: string, file: string }>} payloads
 * @param {{ bin: string, version: string } | undefined} aws
 * @param {Row[]} rows  the cells' rows are added here as they start, so a failure keeps the rounds done
 * @returns {Promise<{ aws?: AwsRow, note: string, version: string }>}
 */
async function runBackend(o, kind, profile, payloads, aws, rows) {
  const { CacheProxy } = require(path.join(o.repo, 'index.js'));
  const emu0 = await startEmulator(/** @type {any} */ (kind));
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), `nxoc-bench-cloud-${kind}-`));
  /** @type {any} */
  let proxy;
  /** @type {import('./relay.js').RelayProcess[]} */
  let relays = [];
  try {
    const link = await shapedLink(emu0, profile, ws);
    relays = link.relays;
    const emu = link.emu;
    /** @type {Meter} */
    const meter = {
      read: () => {
        const u = process.cpuUsage();
        return {
          relay: relays.reduce((sum, r) => sum + r.cpuSeconds(), 0),
          emulator: cpuSeconds(emu0.pid),
          bench: (u.user + u.system) / 1e6,
        };
      },
    };
    proxy = CacheProxy.start(ws, { ...link.options, prefix: 'bench' }, {
      ...process.env,
      ...link.env,
      NX_OPEN_CACHE_MODE: 'read-write',
    });
    console.error(`${profile} ${kind}: ${emu0.version}; proxy ${proxy.url} -> ${proxy.location} (${proxy.mode}); relays ${relays.map((r) => r.url).join(', ') || 'none'}`);
    const viaProxy = proxyClient(proxy.url, proxy.token);
    const direct = directClient(emu);
    /** @type {Row[]} */
    const mine = cellsOf(o).map((cell) => ({ profile, kind, cell, proxy: [], direct: [] }));
    rows.push(...mine);
    /** @type {AwsRow | undefined} */
    const awsRow = aws && kind === 's3' ? { profile, kind, size: BIG, putS: [], getS: [], startS: [] } : undefined;
    let puts = 0;
    let gets = 0;
    for (let round = 0; round < o.rounds; round++) {
      for (const [i, row] of mine.entries()) {
        const { cell } = row;
        const { buf, sha } = /** @type {{ buf: Buffer, sha: string }} */ (payloads.get(cell.size));
        const sides = /** @type {const} */ (['proxy', 'direct']);
        /** @type {Partial<Record<'proxy' | 'direct', { put: Phase, get: Phase }>>} */
        const got = {};
        for (const side of (round + i) % 2 === 0 ? sides : [...sides].reverse()) {
          got[side] = await measure(side === 'proxy' ? viaProxy : direct, buf, sha, cell, meter);
        }
        // Both sides or neither: a round counts only as a pair.
        row.proxy.push(/** @type {{ put: Phase, get: Phase }} */ (got.proxy));
        row.direct.push(/** @type {{ put: Phase, get: Phase }} */ (got.direct));
        puts += cell.count;
        gets += cell.count + 1;
        const last = (/** @type {'proxy' | 'direct'} */ side, /** @type {'put' | 'get'} */ ph) => row[side][row[side].length - 1][ph].s;
        console.error(
          `${profile} ${kind} round ${round + 1} ${cell.label} x${cell.concurrency} n=${cell.count}: ` +
            `PUT proxy/plain ${fmt(last('direct', 'put') / last('proxy', 'put'), 2)}, GET ${fmt(last('direct', 'get') / last('proxy', 'get'), 2)}`,
        );
      }
      if (awsRow && aws) {
        const big = /** @type {{ file: string, sha: string }} */ (payloads.get(BIG));
        const r = measureAws(aws.bin, { endpoint: emu.endpoint, bucket: emu.bucket, env: emu.env }, big.file, BIG, big.sha, ws);
        awsRow.putS.push(r.putS);
        awsRow.getS.push(r.getS);
        awsRow.startS.push(r.startS);
        console.error(`${profile} ${kind} round ${round + 1} aws s3 cp 64 MiB: PUT ${fmt(r.putS, 2)} s, GET ${fmt(r.getS, 2)} s (head-bucket ${fmt(r.startS, 2)} s)`);
      }
    }
    const stats = await proxy.stop();
    proxy = undefined;
    const ok = stats.stored === puts && stats.hits === gets && stats.errorCount === 0 && stats.refusedWrites === 0;
    const relayed = [];
    for (const r of relays) {
      const rs = await r.stop();
      if (rs) relayed.push(`${r.url}: ${rs.accepted} connections, ${fmt(rs.bytesUp / 1e6, 0)} MB up, ${fmt(rs.bytesDown / 1e6, 0)} MB down`);
    }
    relays = [];
    const note =
      `${profile} ${kind}: proxy counters stored ${stats.stored} (sent ${puts}), hits ${stats.hits} (sent ${gets}), ` +
      `misses ${stats.misses}, alreadyStored ${stats.alreadyStored}, errorCount ${stats.errorCount}` +
      (stats.errors.length ? ` (${stats.errors.map((/** @type {any} */ e) => `${e.reason} x${e.count}`).join('; ')})` : '') +
      (relayed.length ? `; relays ${relayed.join('; ')}` : '');
    console.error(note);
    if (!ok) throw new Error(`cloud bench: proxy counters do not match the traffic: ${note}`);
    return { aws: awsRow, note, version: emu0.version };
  } finally {
    if (proxy) {
      // A failed cell: the proxy's own account of the fault (its run summary) goes out with the error.
      const stats = await proxy.stop().catch(() => undefined);
      if (stats && stats.errors.length) {
        lastFaults = stats.errors.map((/** @type {any} */ e) => `${e.reason} x${e.count}`).join('; ');
        console.error(`${profile} ${kind}: proxy faults: ${lastFaults}`);
      }
    }
    for (const r of relays) await r.stop();
    await emu0.stop();
    fs.rmSync(ws, { recursive: true, force: true });
  }
}

async function main() {
  const o = parseArgs();
  const started = Date.now();
  const loadStart = loadAvg();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-bench-cloud-payloads-'));
  const aws = o.kinds.includes('s3') && !o.noAws && cellsOf(o).some((c) => c.size === BIG) ? findAws(o.aws) : undefined;
  try {
    /** @type {Map<number, { buf: Buffer, sha: string, file: string }>} */
    const payloads = new Map();
    for (const size of new Set(cellsOf(o).map((c) => c.size))) {
      // A valid Nx artifact of noise: the proxy serves nothing else.
      const buf = exactArtifact(size);
      const file = path.join(tmp, `payload-${size}`);
      if (size === BIG) fs.writeFileSync(file, buf);
      payloads.set(size, { buf, sha: crypto.createHash('sha256').update(buf).digest('hex'), file });
    }
    // The link itself first: RTT and per-connection rate of each profile, and the relay's own cost.
    const shaped = o.profiles.filter((p) => p !== 'none' && p !== 'passthrough');
    const calibration = shaped.length ? await checkRelay(shaped) : undefined;
    if (calibration) console.error(calibration.lines.join('\n'));
    /** @type {Row[]} */ const rows = [];
    /** @type {AwsRow[]} */ const awsRows = [];
    /** @type {string[]} */ const notes = [];
    /** @type {Set<string>} */ const versions = new Set();
    let failures = 0;
    for (const profile of o.profiles) {
      for (const kind of o.kinds) {
        try {
          const r = await runBackend(o, kind, profile, payloads, aws, rows);
          if (r.aws) awsRows.push(r.aws);
          notes.push(r.note);
          versions.add(`${kind}: ${r.version}`);
        } catch (e) {
          // Reported, not hidden: the rounds done so far stay in the tables, the failure in the notes.
          const msg = e instanceof Error ? e.message : String(e);
          notes.push(`${profile} ${kind}: FAILED: ${msg.split('\n')[0]}${lastFaults ? `; proxy faults: ${lastFaults}` : ''}`);
          failures += 1;
        }
      }
    }
    const seconds = (Date.now() - started) / 1000;
    const md = report(o, rows, awsRows, notes, { seconds, loadStart, loadEnd: loadAvg(), versions: [...versions], aws, calibration });
    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(o.out, md);
    console.log(md);
    if (failures) process.exitCode = 1;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** @param {string} repo @returns {string} branch and commit of the checkout */
function codeLabel(repo) {
  const git = (/** @type {string[]} */ args) => spawnSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).stdout.trim();
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) ? ', with uncommitted changes' : '';
  return `${git(['rev-parse', '--abbrev-ref', 'HEAD'])} ${git(['rev-parse', '--short', 'HEAD'])}${dirty}`;
}

/**
 * The issue's target for a cell (proxy/plain throughput).
 * @param {number} size
 * @param {'put' | 'get'} ph
 */
function target(size, ph) {
  if (size >= BIG) return ph === 'get' ? 1.5 : 1.0;
  return 0.9;
}

/**
 * @param {ReturnType<typeof parseArgs>} o
 * @param {Row[]} allRows
 * @param {AwsRow[]} awsRows
 * @param {string[]} notes
 * @param {{ seconds: number, loadStart: string, loadEnd: string, versions: string[], aws: { bin: string, version: string } | undefined, calibration: { lines: string[], ok: boolean } | undefined }} run
 */
function report(o, allRows, awsRows, notes, run) {
  // Cells a failed backend never reached have no rounds: they are left out (the failure is in the notes).
  const rows = allRows.filter((r) => r.proxy.length > 0);
  const cpu = os.cpus()[0];
  const lines = [];
  const code = o.label || codeLabel(o.repo);
  lines.push(`## Cloud backends over a shaped link: proxy vs a plain client (proxy code: ${code})`);
  lines.push('');
  lines.push(`Command: \`node benches/cloud.js ${process.argv.slice(2).join(' ')}\``.replace(/ `$/, '`'));
  lines.push('');
  lines.push(`- Date: ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC`);
  lines.push(
    `- Machine: ${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB memory, CPU: ${cpu ? cpu.model.trim() : 'unknown'}; ` +
      `${os.type()} ${os.release()} ${os.arch()}; Node ${process.version}`,
  );
  lines.push(`- Emulators: ${run.versions.join('; ')}`);
  lines.push(`- AWS CLI: ${run.aws ? `${run.aws.version} (${run.aws.bin})` : 'not installed: no CLI-style parallel reference'}`);
  lines.push(`- Whole bench: ${run.seconds.toFixed(0)} s; load average (1, 5, 15 min) ${run.loadStart} at the start, ${run.loadEnd} at the end`);
  lines.push('');
  lines.push(
    'The link: `benches/relay.js` (one relay process per emulator endpoint, between the proxy and the emulator and ' +
      'between the plain client and the emulator, so both cross the same link): RTT/2 added each way, a token-bucket cap per ' +
      'connection and direction, one RTT for the TCP handshake of a new connection; profiles ' +
      `${Object.entries(PROFILES).map(([k, v]) => `\`${k}\` (RTT ${v.rttMs} ms, ${v.rate ? `${v.rate / 1e6} MB/s` : 'no cap'})`).join(', ')}. ` +
      'Each cell PUTs `n` fresh artifacts (a valid Nx artifact of noise under fresh decimal hashes) with `c` requests in ' +
      'flight over a keep-alive `http.Agent`, then GETs them all; one GET is repeated untimed with a SHA-256 check. "proxy": ' +
      'the Nx self-hosted cache API of `CacheProxy.start` in this process (the client-to-proxy hop is local, unshaped, as ' +
      'in an Nx run); "plain": a single-stream Node `http` client on the emulator\'s own API (S3: SigV4 path-style PUT/GET, ' +
      'one request per object; GCS: JSON media upload / `alt=media` to fake-gcs-server, while the proxy goes through ' +
      '`scripts/gcs-xml-front.js`, in this process; Azure: SharedKey Put Blob / Get Blob). ' +
      `${o.rounds} rounds; the side that goes first alternates by round and cell; figures are medians over the rounds, ` +
      'ratios the median of the per-round ratios (min-max in brackets). MB = 10^6 bytes.',
  );
  lines.push('');
  if (run.calibration) {
    lines.push(
      'The link measured at the start of this run (`node benches/relay.js --check`: a 1-byte ping-pong and 64 MiB one ' +
        'way over one connection through a relay process; then the relay with no delay and no cap against a direct connection):',
    );
    lines.push('');
    lines.push(...run.calibration.lines);
    lines.push('');
  }
  /** @type {{ cells: number, met: number, missed: string[] }} */
  const tally = { cells: 0, met: 0, missed: [] };
  for (const profile of o.profiles) {
    const mine = rows.filter((r) => r.profile === profile);
    lines.push(`### Link \`${profile}\``);
    lines.push('');
    lines.push('| backend | size | c | n x rounds | PUT proxy | PUT plain | PUT proxy/plain | GET proxy | GET plain | GET proxy/plain | target PUT / GET |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const r of mine) {
      const { cell } = r;
      const unit = (/** @type {number} */ s) =>
        cell.size >= MIB ? `${fmt((cell.count * cell.size) / 1e6 / s, 1)} MB/s` : `${fmt(cell.count / s, 0)} art/s`;
      const ratioCell = (/** @type {'put' | 'get'} */ ph) => {
        const ratios = r.proxy.map((p, i) => r.direct[i][ph].s / p[ph].s);
        const m = median(ratios);
        const t = target(cell.size, ph);
        tally.cells += 1;
        if (m >= t) tally.met += 1;
        else tally.missed.push(`${profile} ${r.kind} ${cell.label} x${cell.concurrency} ${ph.toUpperCase()} ${fmt(m, 2)} (< ${t})`);
        const range = ratios.length > 1 ? ` (${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)})` : '';
        return `**${fmt(m, 2)}**${m >= t ? '' : ' ✗'}${range}`;
      };
      const med = (/** @type {'proxy' | 'direct'} */ side, /** @type {'put' | 'get'} */ ph) => median(r[side].map((x) => x[ph].s));
      lines.push(
        `| ${r.kind} | ${cell.label} | ${cell.concurrency} | ${cell.count} x ${r.proxy.length} | ` +
          `${unit(med('proxy', 'put'))} | ${unit(med('direct', 'put'))} | ${ratioCell('put')} | ` +
          `${unit(med('proxy', 'get'))} | ${unit(med('direct', 'get'))} | ${ratioCell('get')} | ` +
          `${target(cell.size, 'put')} / ${target(cell.size, 'get')} |`,
      );
    }
    lines.push('');
    const awsMine = awsRows.filter((a) => a.profile === profile);
    if (awsMine.length) {
      lines.push(
        `AWS CLI on S3, 64 MiB (\`aws s3 cp\`, default 8 MiB parts and 10 requests in flight; wall time of the command, and ` +
          'the same minus the time of `aws s3api head-bucket`, i.e. without the CLI\'s start and one request):',
      );
      lines.push('');
      lines.push('| backend | size | PUT aws MB/s (wall) | PUT aws MB/s (minus start) | GET aws MB/s (wall) | GET aws MB/s (minus start) | aws start + 1 request s |');
      lines.push('| --- | --- | --- | --- | --- | --- | --- |');
      for (const a of awsMine) {
        const mbs = (/** @type {number} */ s) => fmt(a.size / 1e6 / s, 1);
        const put = median(a.putS);
        const get = median(a.getS);
        const st = median(a.startS);
        lines.push(`| ${a.kind} | 64 MiB | ${mbs(put)} | ${mbs(put - st)} | ${mbs(get)} | ${mbs(get - st)} | ${fmt(st, 2)} |`);
      }
      lines.push('');
    }
    lines.push(
      'CPU while each phase ran, in % of one core (medians over the rounds; proxy / plain): the relay processes, the ' +
        'emulator process, and this process (the client, the in-process proxy\'s native threads and, for GCS, the XML front).',
    );
    lines.push('');
    lines.push('| backend | size | c | PUT relay % | PUT emulator % | PUT bench % | GET relay % | GET emulator % | GET bench % |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const r of mine) {
      const c = (/** @type {'put' | 'get'} */ ph, /** @type {'relay' | 'emulator' | 'bench'} */ k) =>
        `${fmt(median(r.proxy.map((x) => x[ph].cpu[k])), 0)} / ${fmt(median(r.direct.map((x) => x[ph].cpu[k])), 0)}`;
      lines.push(
        `| ${r.kind} | ${r.cell.label} | ${r.cell.concurrency} | ${c('put', 'relay')} | ${c('put', 'emulator')} | ${c('put', 'bench')} | ` +
          `${c('get', 'relay')} | ${c('get', 'emulator')} | ${c('get', 'bench')} |`,
      );
    }
    lines.push('');
  }
  lines.push(`Targets (issue 14): met in ${tally.met} of ${tally.cells} cells${tally.missed.length ? `; missed: ${tally.missed.join('; ')}` : ''}.`);
  lines.push('');
  /** @type {Record<string, { v: number, where: string }>} */
  const peak = {};
  for (const r of rows) {
    for (const side of /** @type {const} */ (['proxy', 'direct'])) {
      for (const ph of /** @type {const} */ (['put', 'get'])) {
        for (const k of /** @type {const} */ (['relay', 'emulator', 'bench'])) {
          const v = median(r[side].map((x) => x[ph].cpu[k]));
          if (!peak[k] || v > peak[k].v) {
            peak[k] = { v, where: `${r.profile} ${r.kind} ${r.cell.label} x${r.cell.concurrency} ${ph.toUpperCase()} ${side === 'direct' ? 'plain' : 'proxy'}` };
          }
        }
      }
    }
  }
  if (peak.relay) {
    lines.push(
      `Bottlenecks: the highest CPU share of a phase (median over the rounds) was ${fmt(peak.relay.v, 0)}% of one core for the ` +
        `relays (${peak.relay.where}), ${fmt(peak.emulator.v, 0)}% for the emulator (${peak.emulator.where}; moto and Azurite ` +
        `run their requests on one core, Python's GIL and Node's event loop, so 100% would mean a saturated emulator) and ` +
        `${fmt(peak.bench.v, 0)}% for this process (${peak.bench.where}). With no process near a full core, what bounds the ` +
        'cells is the link (RTT, handshakes, cap) and the CPU the shared machine leaves (see the load average).',
    );
    lines.push('');
  }
  lines.push(
    'Reading: moto (werkzeug) answers every request with `Connection: close`, so on S3 every request of both the proxy ' +
      'and the plain client opens a new connection and pays the handshake RTT (the relay counts the connections, below); ' +
      'GCS and Azurite keep connections alive. The 64 MiB cells move one artifact per round, so they are three samples. ' +
      'The AWS CLI\'s figures include a Python start of several seconds on this machine; the "minus start" column ' +
      'takes off one `head-bucket` command (start plus one request).',
  );
  lines.push('');
  lines.push('Proxy counters checked after each backend (`await proxy.stop()`), and what each relay carried:');
  lines.push('');
  for (const n of notes) lines.push(`- ${n}`);
  lines.push('');
  return lines.join('\n');
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack || e.message : String(e));
  process.exit(1);
});
