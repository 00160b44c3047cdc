'use strict';
/**
 * Replicas on one bucket: two `serve` processes (`node lib/cli.js serve`, and the standalone binary
 * target/release/nx-open-cache-server when it is built, else the CLI again) on ONE bucket of an S3
 * emulator (moto), of a GCS emulator (fake-gcs-server) and ONE container of an Azure emulator
 * (Azurite), as a team runs them behind a load
 * balancer when one server is not enough. What must hold across processes, with no state shared but
 * the storage:
 *  - first writer wins: concurrent PUTs of one hash split across the replicas store exactly one
 *    object; the others are answered 409 and every read, through either replica, returns the
 *    winner's bytes (the store's create-if-absent request is conditional on the storage service);
 *  - a replica reads what the other wrote;
 *  - a replica killed (SIGKILL) during an upload leaves no partial object;
 *  - a real Nx workspace (Nx's own remote-cache client) builds through a round-robin balancer that
 *    alternates replicas per request (both replicas store some of its uploads) and restores 100%
 *    through one replica alone and through the balancer (both replicas serve hits).
 * On S3 the replicas reach moto through a gate that serializes conditional writes (moto's are not
 * atomic; see conditionalGate).
 *
 * Run: node --test --test-concurrency=1 __tests__/replicas.e2e.test.js
 * Needs: a native build (`node scripts/ensure-native.js`) and the emulators
 * (`node scripts/emulators.js install`). Optional: `cargo build --release --bin nx-open-cache-server`
 * (replica B is then the standalone binary).
 */

const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const emulators = require('../scripts/emulators.js');
const { REPO_ROOT, startServe, serveEnv, request, metric, withTimeout } = require('./helpers/serve-process.js');
const { nxArtifact } = require('./helpers/hostile-tar.js');
const { NX_VERSION, NxWorkspace, cleanEnv, isRemoteHit } = require('./helpers/nx-workspace.js');

/** @typedef {import('../scripts/emulators.js').Emulator} Emulator */
/** @typedef {import('../scripts/emulators.js').EmulatorKind} EmulatorKind */
/** @typedef {import('./helpers/serve-process.js').Reply} Reply */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

const SERVER_BIN = path.join(REPO_ROOT, 'target', 'release', 'nx-open-cache-server');
const SECRET = `replicas-${crypto.randomBytes(12).toString('hex')}`;
/** The storage prefix both replicas use. */
const PREFIX = 'replicas';
/** Above the object store's 8 MiB in-memory limit: multipart upload to a temp key, then a copy. */
const LARGE = 9 * 1024 * 1024;
/** The envelope header every stored object starts with (length + SHA-256 of the payload). */
const ENVELOPE_HEADER = 48;
/** Bounds of the polling loops. */
const POLL_MS = 20;
const POLL_MAX = 1500;
const START_TIMEOUT_MS = 30_000;

/**
 * @typedef {{
 *   name: string,
 *   entry: 'cli' | 'bin',
 *   url: string,
 *   child: import('node:child_process').ChildProcess,
 *   exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>,
 *   stderr: () => string,
 *   stop: () => Promise<unknown>,
 * }} Replica
 */

/**
 * Starts the standalone server binary with `args --listen 127.0.0.1:0`; resolves on its startup line.
 * @param {string[]} args
 * @param {Record<string, string>} env
 * @returns {Promise<Omit<Replica, 'name' | 'entry'>>}
 */
function startBinary(args, env) {
  const child = spawn(SERVER_BIN, [...args, '--listen', '127.0.0.1:0'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { err += d; });
  /** @type {Promise<{ code: number | null, signal: NodeJS.Signals | null }>} */
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    return withTimeout(exited, START_TIMEOUT_MS, `${SERVER_BIN} did not exit after SIGTERM`, () => child.kill('SIGKILL'));
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${SERVER_BIN} printed no startup line within ${START_TIMEOUT_MS} ms\n${out}\n${err}`));
    }, START_TIMEOUT_MS);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^nx-open-cache serve: listening on (\S+) /m.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve({ url: m[1], child, exited, stderr: () => err, stop });
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${SERVER_BIN} exited (code ${code}, signal ${signal}) before starting\n${out}\n${err}`));
    });
  });
}

/**
 * Starts one replica on the emulator's bucket / container.
 * @param {string} name
 * @param {'cli' | 'bin'} entry
 * @param {Emulator} emu
 * @param {Gate} [gate]  S3 only: the replica talks to moto through this gate
 * @returns {Promise<Replica>}
 */
async function startReplica(name, entry, emu, gate) {
  const s3Endpoint = gate ? gate.url : emu.endpoint;
  const storage = {
    s3: ['--storage', `s3://${emu.bucket}/${PREFIX}`, '--s3-endpoint', s3Endpoint, '--s3-force-path-style'],
    gcs: ['--storage', `gs://${emu.bucket}/${PREFIX}`],
    azure: ['--storage', `az://${emu.container}/${PREFIX}`, '--az-endpoint', emu.endpoint],
  }[emu.kind];
  const env = replicaEnv(emu);
  if (gate) Object.assign(env, { AWS_ENDPOINT_URL: gate.url, AWS_ENDPOINT: gate.url });
  if (entry === 'bin') return { name, entry, ...(await startBinary(storage, env)) };
  const s = await startServe(storage, { env });
  return { name, entry, url: s.url, child: s.child, exited: s.exited, stderr: s.stderr, stop: s.stop };
}

/** @typedef {{ url: string, gated: () => number, close: () => Promise<void> }} Gate */

/**
 * A pass-through HTTP proxy on 127.0.0.1 in front of moto that sends requests carrying
 * `If-None-Match: *` one at a time (the next only after the previous one's answer has ended).
 * moto checks the condition of PutObject and CompleteMultipartUpload, then stores, unlocked: two
 * conditional writes that overlap can both succeed (the checking and the writing are separate steps
 * in moto/s3/responses.py and models.py). Real S3 decides atomically; serializing the conditional
 * requests gives moto that atomicity, so every S3 race below is strict (exactly one 200) and a lost
 * condition (a replica sending an unconditional write) would still show as two 200s. Requests
 * without the header pass straight through, concurrently.
 * @param {string} upstream  moto's URL
 * @returns {Promise<Gate>}
 */
async function conditionalGate(upstream) {
  const u = new URL(upstream);
  let chain = Promise.resolve();
  let gated = 0;
  const server = http.createServer((req, res) => {
    const forward = () => new Promise((resolve) => {
      const up = http.request(
        { host: u.hostname, port: u.port, method: req.method, path: req.url, headers: req.headers, agent: false },
        (r) => {
          res.writeHead(r.statusCode || 502, r.headers);
          r.pipe(res);
          r.on('end', resolve);
          r.on('error', resolve);
        },
      );
      up.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
        resolve(undefined);
      });
      res.on('close', () => resolve(undefined));
      req.pipe(up);
    });
    if (req.headers['if-none-match'] === '*') {
      gated++;
      req.pause();
      chain = chain.then(forward);
    } else {
      forward();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${addr.port}`,
    gated: () => gated,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/**
 * A replica's environment: the caller's, without any cloud credential, cloud setting or proxy, plus
 * the emulator's credentials. A credential chain that falls through stays on loopback (object_store
 * reads AWS_METADATA_ENDPOINT, GCE_METADATA_HOST and AZURE_MSI_ENDPOINT; it ignores
 * AWS_EC2_METADATA_DISABLED).
 * @param {Emulator} emu
 * @returns {Record<string, string>}
 */
function replicaEnv(emu) {
  const env = serveEnv();
  for (const k of Object.keys(env)) {
    if (/^(AWS_|GOOGLE_|AZURE_|GCE_)/.test(k) || /_proxy$/i.test(k)) delete env[k];
  }
  return {
    ...env,
    ...emu.env,
    NO_PROXY: '127.0.0.1,localhost',
    AWS_METADATA_ENDPOINT: 'http://127.0.0.1:9',
    GCE_METADATA_HOST: '127.0.0.1:9',
    GCE_METADATA_IP: '127.0.0.1:9',
    AZURE_MSI_ENDPOINT: 'http://127.0.0.1:9',
    NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${SECRET}`,
    NX_OPEN_CACHE_SERVER_REQUIRE_READY: 'true',
  };
}

/** @param {string} label */
const newHash = (label) => `${label}-${crypto.randomBytes(6).toString('hex')}`;

/**
 * @param {Replica} r
 * @param {string} hash
 * @param {Buffer} body
 */
const put = (r, hash, body) => request(`${r.url}/v1/cache/${hash}`, { method: 'PUT', token: SECRET, body });

/**
 * @param {Replica} r
 * @param {string} hash
 */
const get = (r, hash) => request(`${r.url}/v1/cache/${hash}`, { token: SECRET });

/**
 * A counter or gauge of a replica's /metrics.
 * @param {Replica} r
 * @param {string} name
 */
async function metricOf(r, name) {
  return metric((await request(`${r.url}/metrics`)).body.toString('utf8'), name);
}

/**
 * A valid Nx artifact, different for each `seed` (its output file and terminal output).
 * @param {string} seed
 * @param {number} [size]  bytes of random output (stored uncompressed): the artifact is a little larger
 */
function artifact(seed, size = 0) {
  const out = size ? Buffer.concat([Buffer.from(`${seed}\n`), crypto.randomBytes(size)]) : `output of ${seed}\n`;
  return nxArtifact({ 'dist/out.bin': out }, { terminalOutput: `built by ${seed}\n`, level: size ? 0 : 6 });
}

/**
 * Bounded polling: resolves with the first truthy value of `probe`, or throws naming `what`.
 * @template T
 * @param {string} what
 * @param {() => Promise<T>} probe
 * @returns {Promise<T>}
 */
async function until(what, probe) {
  for (let i = 0; i < POLL_MAX; i++) {
    const v = await probe();
    if (v) return v;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  throw new Error(`gave up waiting for ${what} (${POLL_MAX} polls)`);
}

/**
 * The S3 emulator's incomplete multipart uploads (keys), read with ListMultipartUploads.
 * (moto runs without authentication here, so the request is unsigned.)
 * @param {Emulator} emu
 * @returns {Promise<string[]>}
 */
async function multipartUploads(emu) {
  const r = await request(`${emu.endpoint}/${emu.bucket}?uploads`);
  assert.equal(r.status, 200, `ListMultipartUploads: ${r.body}`);
  return [...r.body.toString('utf8').matchAll(/<Upload>[\s\S]*?<Key>([^<]+)<\/Key>/g)].map((m) => m[1]);
}

/**
 * Sends `hash` concurrently from writers 0..n-1, writer i through replica i % 2, and checks that one
 * writer won: exactly one object, every other writer 409, both replicas serve the winner's bytes.
 * @param {Emulator} emu
 * @param {Replica[]} reps
 * @param {string} hash
 * @param {Buffer[]} bodies  one per writer
 * @param {{ strict: boolean }} opts  `strict`: exactly one 200 (see the large-upload test on moto)
 * @returns {Promise<{ statuses: number[], winners: number[], stored: number }>} `stored`: the writer whose bytes are served
 */
async function race(emu, reps, hash, bodies, opts) {
  const storedBefore = (await metricOf(reps[0], 'nx_open_cache_stored_total')) + (await metricOf(reps[1], 'nx_open_cache_stored_total'));
  const replies = await Promise.all(bodies.map((b, i) => put(reps[i % 2], hash, b)));
  const statuses = replies.map((r) => r.status);
  for (const [i, r] of replies.entries()) {
    assert.ok(r.status === 200 || r.status === 409, `writer ${i} via ${reps[i % 2].name}: ${r.status} ${r.body}\n${reps[i % 2].stderr().slice(-2000)}`);
  }
  const winners = statuses.flatMap((s, i) => (s === 200 ? [i] : []));
  assert.ok(winners.length >= 1, `nobody stored ${hash}: ${statuses}`);
  if (opts.strict) assert.equal(winners.length, 1, `first writer wins: one 200, the rest 409: ${statuses}`);
  const objects = (await emu.listObjects()).filter((k) => k.includes(hash));
  assert.deepEqual(objects, [`${PREFIX}/${hash}`], 'exactly one object for the hash, no temp key left');
  if (emu.kind === 's3') assert.deepEqual((await multipartUploads(emu)).filter((k) => k.includes(hash)), [], 'no multipart upload left');
  const reads = [await get(reps[0], hash), await get(reps[1], hash)];
  for (const [i, r] of reads.entries()) assert.equal(r.status, 200, `GET via ${reps[i].name}: ${r.status}`);
  assert.ok(reads[0].body.equals(reads[1].body), 'both replicas serve the same bytes');
  const stored = winners.find((w) => bodies[w].equals(reads[0].body));
  assert.ok(stored !== undefined, `the stored bytes are those of a writer answered 200 (${winners}): writer ${bodies.findIndex((b) => b.equals(reads[0].body))}'s`);
  const storedAfter = (await metricOf(reps[0], 'nx_open_cache_stored_total')) + (await metricOf(reps[1], 'nx_open_cache_stored_total'));
  assert.equal(storedAfter - storedBefore, winners.length, 'stored_total of the two replicas');
  return { statuses, winners, stored };
}

/**
 * A fresh Nx workspace with nx from npm (no plugin: Nx's own client talks to the replicas).
 * @returns {Promise<NxWorkspace>}
 */
async function nxWorkspace() {
  const ws = new NxWorkspace(fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-replicas-')));
  try {
    ws.scaffold();
    const r = spawnSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--save-dev', `nx@${NX_VERSION}`], {
      cwd: ws.root, env: cleanEnv({}), encoding: 'utf8', timeout: 300_000, killSignal: 'SIGKILL',
    });
    assert.equal(r.status, 0, `npm install nx@${NX_VERSION}: ${r.error || ''}\n${r.stdout}\n${r.stderr}`);
  } catch (e) {
    await ws.dispose();
    throw e;
  }
  return ws;
}

/**
 * A round-robin HTTP balancer on 127.0.0.1 in front of `targets`: each request (not each connection:
 * Nx's client keeps its connection alive) goes to the next replica.
 * @param {() => string[]} targets  the replicas' current URLs
 * @returns {Promise<{ url: string, served: string[], close: () => Promise<void> }>}
 */
async function roundRobin(targets) {
  /** @type {string[]} */ const served = [];
  let next = 0;
  const server = http.createServer((req, res) => {
    const urls = targets();
    const i = next++ % urls.length;
    served.push(`${req.method} ${i}`);
    const u = new URL(urls[i]);
    const up = http.request(
      { host: u.hostname, port: u.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (r) => {
        res.writeHead(r.statusCode || 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${addr.port}`,
    served,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** @param {RunResult} r */
const show = (r) => `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n${r.output}`;

const KINDS = /** @type {EmulatorKind[]} */ (['s3', 'gcs', 'azure']);
/** @type {Record<EmulatorKind, string>} */
const HOLDER = {
  s3: 'S3 bucket (moto)',
  gcs: 'GCS bucket (fake-gcs-server behind scripts/gcs-xml-front.js)',
  azure: 'Azure container (Azurite)',
};

for (const kind of KINDS) {
  describe(`two replicas on one ${HOLDER[kind]}`, () => {
    /** @type {Emulator} */ let emu;
    /** @type {Replica[]} */ const reps = [];
    /** @type {Gate | undefined} */ let gate;
    const entryB = fs.existsSync(SERVER_BIN) ? 'bin' : 'cli';
    /**
     * Starts replica `i` again after a kill test (also when the test failed: the next tests need it).
     * @param {number} i
     * @param {Replica} dead
     */
    const restart = async (i, dead) => {
      if (dead.child.exitCode === null && dead.child.signalCode === null) return;
      reps[i] = await startReplica(dead.name, dead.entry, emu, gate);
    };

    before(async () => {
      emulators.install({ log: () => undefined });
      emu = await emulators.start(kind);
      if (kind === 's3') gate = await conditionalGate(emu.endpoint);
      reps.push(await startReplica('A (node lib/cli.js serve)', 'cli', emu, gate));
      reps.push(await startReplica(entryB === 'bin' ? 'B (nx-open-cache-server)' : 'B (node lib/cli.js serve; no binary built)', entryB, emu, gate));
    });

    after(async () => {
      for (const r of reps) await r.stop().catch(() => undefined);
      if (gate) await gate.close();
      if (emu) await emu.stop();
    });

    /**
     * What storage holds for `hash` before anything reads it through a replica (a read of a damaged
     * object would quarantine it, and the listing would then show nothing): every key for the hash,
     * read straight from the emulator; the final key, if there, must hold the envelope of `body`
     * whole (48-byte header, then exactly `body`). Temp keys may exist (a kill before cleanup).
     * @param {string} hash
     * @param {Buffer} body
     * @returns {Promise<{ final: boolean, keys: string[] }>}
     */
    const storedFor = async (hash, body) => {
      const keys = (await emu.listObjects()).filter((k) => k.includes(hash));
      const final = keys.includes(`${PREFIX}/${hash}`);
      if (final) {
        const bytes = await emu.getObject(`${PREFIX}/${hash}`);
        assert.ok(bytes, `${PREFIX}/${hash} listed but not readable`);
        assert.equal(bytes.length, ENVELOPE_HEADER + body.length, `the object for ${hash} is whole (${bytes.length} bytes, want ${ENVELOPE_HEADER + body.length})`);
        assert.ok(bytes.subarray(ENVELOPE_HEADER).equals(body), `the object for ${hash} holds the uploaded bytes`);
      }
      for (const k of keys) assert.ok(k === `${PREFIX}/${hash}` || k.startsWith(`${PREFIX}/.tmp/${hash}.`), `unexpected key ${k}`);
      return { final, keys };
    };

    /**
     * A GET through `r` that must not count a storage error (no damaged object found and removed).
     * @param {Replica} r
     * @param {string} hash
     */
    const cleanGet = async (r, hash) => {
      const errors = await metricOf(r, 'nx_open_cache_storage_errors_total');
      const reply = await get(r, hash);
      assert.equal(await metricOf(r, 'nx_open_cache_storage_errors_total'), errors, `GET ${hash} via ${r.name} met a storage error: ${r.stderr().slice(-2000)}`);
      return reply;
    };

    test(`${kind}: 16 concurrent PUTs of the same artifact, 8 through each replica: one 200, fifteen 409, one object`, async (t) => {
      t.diagnostic(`${emu.version}; replicas: ${reps.map((r) => r.name).join(', ')}`);
      const hash = newHash('same');
      const body = artifact('the same bytes');
      const { statuses } = await race(emu, reps, hash, Array.from({ length: 16 }, () => body), { strict: true });
      assert.equal(statuses.filter((s) => s === 409).length, 15);
    });

    test(`${kind}: 16 concurrent PUTs of different artifacts for one hash: the first writer wins on both replicas`, async (t) => {
      for (let round = 0; round < 3; round++) {
        const hash = newHash(`diff${round}`);
        const bodies = Array.from({ length: 16 }, (_, i) => artifact(`writer ${i} of round ${round}`));
        const { winners } = await race(emu, reps, hash, bodies, { strict: true });
        t.diagnostic(`round ${round}: writer ${winners[0]} (via ${reps[winners[0] % 2].name}) won`);
      }
    });

    test(`${kind}: large artifacts (multipart to a temp key, then a create-if-absent copy) raced by 4 writers: one object, no temp key`, async (t) => {
      const hash = newHash('large');
      const bodies = Array.from({ length: 4 }, (_, i) => artifact(`large writer ${i}`, LARGE));
      // On S3 the gate serializes the conditional CompleteMultipartUpload of the copies (moto's is
      // not atomic; see conditionalGate): a copy that lost its condition would be a second 200.
      const gatedBefore = gate ? gate.gated() : 0;
      const { statuses } = await race(emu, reps, hash, bodies, { strict: true });
      t.diagnostic(`statuses ${statuses.join(',')}`);
      if (gate) assert.ok(gate.gated() - gatedBefore >= 1, `the copies went through the gate as conditional requests (${gate.gated() - gatedBefore})`);
      assert.deepEqual((await emu.listObjects()).filter((k) => k.includes('/.tmp/')), [], 'temp keys left');
      if (kind === 's3') assert.deepEqual(await multipartUploads(emu), [], 'incomplete multipart uploads left');
    });

    test(`${kind}: each replica reads what the other wrote; a miss is a miss on both`, async () => {
      for (const [w, r] of [[0, 1], [1, 0]]) {
        const hash = newHash(`cross${w}`);
        assert.equal((await get(reps[r], hash)).status, 404);
        const body = artifact(`written via ${reps[w].name}`);
        assert.equal((await put(reps[w], hash, body)).status, 200);
        const read = await get(reps[r], hash);
        assert.equal(read.status, 200, `GET via ${reps[r].name}`);
        assert.ok(read.body.equals(body), `${reps[r].name} serves what ${reps[w].name} stored`);
        assert.equal((await put(reps[r], hash, artifact('late'))).status, 409, 'the other replica sees it stored');
      }
    });

    test(`${kind}: a replica killed (SIGKILL) in the middle of an upload body leaves nothing; the other stores it later`, async () => {
      for (const victim of [0, 1]) {
        const other = 1 - victim;
        const hash = newHash(`killed${victim}`);
        const body = artifact(`killed upload via ${reps[victim].name}`, LARGE);
        const v = reps[victim];
        try {
          const u = new URL(`${v.url}/v1/cache/${hash}`);
          const req = http.request(u, {
            method: 'PUT',
            agent: false,
            headers: { authorization: `Bearer ${SECRET}`, 'content-length': body.length },
          });
          const ended = new Promise((resolve) => { req.on('error', resolve); req.on('response', resolve); });
          req.write(body.subarray(0, 1 << 20));
          await until(`${v.name} receiving the upload`, async () => (await metricOf(v, 'nx_open_cache_uploads_in_flight')) >= 1);
          v.child.kill('SIGKILL');
          assert.deepEqual(await v.exited, { code: null, signal: 'SIGKILL' });
          const answer = await withTimeout(ended, START_TIMEOUT_MS, 'the killed upload never ended');
          req.destroy();
          assert.ok(answer instanceof Error, `the connection died before an answer (got ${answer && /** @type {any} */ (answer).statusCode})`);

          // Storage first, straight from the emulator, before any read through a replica.
          assert.deepEqual((await storedFor(hash, body)).keys, [], 'nothing for the hash in storage');
          assert.deepEqual((await emu.listObjects()).filter((k) => k.includes('/.tmp/')), [], 'no temp key in storage');
          if (emu.kind === 's3') assert.deepEqual((await multipartUploads(emu)).filter((k) => k.includes(hash)), [], 'no multipart upload left');
          assert.equal((await cleanGet(reps[other], hash)).status, 404, `a miss through ${reps[other].name}`);
          assert.equal((await put(reps[other], hash, body)).status, 200, 'a later upload through the other replica');
          assert.deepEqual((await storedFor(hash, body)).keys, [`${PREFIX}/${hash}`]);
          const read = await cleanGet(reps[other], hash);
          assert.ok(read.status === 200 && read.body.equals(body), 'the later upload is served whole');
        } finally {
          await restart(victim, v);
        }
      }
    });

    if (kind === 's3') {
      test('s3: a replica killed while it publishes (body received, multipart upload under way): the hash is complete or absent, never partial', async (t) => {
        const victim = 0;
        const v = reps[victim];
        const hash = newHash('publishing');
        // Three parts of 8 MiB: long enough for the incomplete upload to be seen in the listing.
        const body = artifact('killed while publishing', 3 * LARGE);
        try {
          const sent = put(v, hash, body).catch((e) => e);
          await until('the multipart upload of the temp key', async () => (await multipartUploads(emu)).some((k) => k.includes(`/.tmp/${hash}.`)));
          v.child.kill('SIGKILL');
          await v.exited;
          const answer = await sent;
          assert.ok(answer instanceof Error, `the connection died before an answer (got ${answer && answer.status})`);

          // Storage first, straight from the emulator, before any read through a replica.
          const { final, keys } = await storedFor(hash, body);
          const uploads = (await multipartUploads(emu)).filter((k) => k.includes(hash));
          t.diagnostic(`after the kill: final object ${final}; left in the bucket: ${JSON.stringify({ keys, uploads })} (a lifecycle rule removes these: see docs)`);
          for (const k of uploads) assert.ok(k.startsWith(`${PREFIX}/.tmp/${hash}.`), `an incomplete upload of the final key: ${k}`);
          const read = await cleanGet(reps[1], hash);
          assert.equal(read.status, final ? 200 : 404, `GET via the other replica: ${read.status}, ${read.body.length} bytes`);
          if (final) assert.ok(read.body.equals(body));
          const again = await put(reps[1], hash, body);
          assert.equal(again.status, final ? 409 : 200, 'a later upload through the other replica');
          const after = await cleanGet(reps[1], hash);
          assert.ok(after.status === 200 && after.body.equals(body));
        } finally {
          await restart(victim, v);
        }
      });

      test('s3: a real Nx workspace builds through a per-request round-robin balancer (both replicas store), restores 100% through replica B and through the balancer', async (t) => {
        const ws = await nxWorkspace();
        const lb = await roundRobin(() => reps.map((r) => r.url));
        try {
          /**
           * One run as a fresh machine: its own Nx cache and workspace data, no outputs.
           * @param {string} label
           * @param {string} server
           */
          const run = async (label, server) => {
            ws.cleanOutputs();
            ws.clearBuildLog();
            const dirs = path.join(ws.base, label);
            const started = Date.now();
            const r = await ws.runBuild({
              env: {
                NX_DAEMON: 'false',
                NX_CACHE_DIRECTORY: path.join(dirs, 'cache'),
                NX_WORKSPACE_DATA_DIRECTORY: path.join(dirs, 'workspace-data'),
                NX_SELF_HOSTED_REMOTE_CACHE_SERVER: server,
                NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: SECRET,
              },
            });
            assert.equal(r.code, 0, `${label}: nx failed${show(r)}`);
            t.diagnostic(`${label}: ${Date.now() - started} ms`);
            return r;
          };
          /** Each replica's own counter. @param {string} name */
          const counts = async (name) => Promise.all(reps.map((r) => metricOf(r, name)));
          /** @param {number[]} a @param {number[]} b */
          const delta = (a, b) => a.map((x, i) => b[i] - x);
          const all = ws.projects.map((p) => p.name).sort();
          const before = (await emu.listObjects()).length;
          const storedBefore = await counts('nx_open_cache_stored_total');
          const putsBefore = lb.served.length;
          const cold = await run('cold run through the balancer', lb.url);
          assert.deepEqual(ws.builtProjects().sort(), all, `cold run: every task built${show(cold)}`);
          assert.equal((await emu.listObjects()).length - before, all.length, 'one object per task in the bucket');
          const stored = delta(storedBefore, await counts('nx_open_cache_stored_total'));
          t.diagnostic(`cold run: stored per replica ${stored.join(' + ')}; balancer: ${lb.served.slice(putsBefore).join(', ')}`);
          assert.equal(stored[0] + stored[1], all.length, 'every task stored once across the replicas');
          if (all.length >= 2) for (const [i, n] of stored.entries()) assert.ok(n >= 1, `replica ${reps[i].name} stored some of the cold run's uploads: ${stored}`);
          const outputs = ws.snapshotOutputs();
          assert.ok(Object.keys(outputs).length > 0, 'the cold run made outputs');

          for (const [label, server] of [['restore through B', reps[1].url], ['restore through the balancer', lb.url]]) {
            const served = lb.served.length;
            const hitsBefore = await counts('nx_open_cache_hits_total');
            const r = await run(label, server);
            const hits = delta(hitsBefore, await counts('nx_open_cache_hits_total'));
            t.diagnostic(`${label}: hits per replica ${hits.join(' + ')}`);
            assert.equal(hits[0] + hits[1], all.length, `${label}: one hit per task across the replicas`);
            if (server === reps[1].url) assert.equal(hits[0], 0, `${label}: A served nothing`);
            else if (all.length >= 2) for (const [i, n] of hits.entries()) assert.ok(n >= 1, `${label}: ${reps[i].name} served hits: ${hits}`);
            assert.deepEqual(ws.builtProjects(), [], `${label}: no task ran${show(r)}`);
            for (const p of all) assert.ok(isRemoteHit(r.output, p), `${label}: ${p} is a [remote cache] hit${show(r)}`);
            assert.deepEqual(ws.snapshotOutputs(), outputs, `${label}: restored outputs identical`);
            if (server === lb.url) {
              const gets = lb.served.slice(served).filter((s) => s.startsWith('GET '));
              t.diagnostic(`balancer: ${gets.join(', ')}`);
              assert.equal(gets.length, all.length, 'one GET per task through the balancer');
              for (let i = 1; i < gets.length; i++) assert.notEqual(gets[i], gets[i - 1], `consecutive GETs alternate replicas: ${gets}`);
            }
          }
          assert.equal((await emu.listObjects()).length - before, all.length, 'the restores stored nothing');
        } finally {
          await lb.close();
          await ws.dispose();
        }
      });
    }
  });
}
