'use strict';
/**
 * The HTTP path alone: a Node client GETs the same artifacts from a server over keep-alive
 * connections, with a fixed number of requests in flight.
 */
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const http = require('node:http');
const path = require('node:path');

const REQUEST_TIMEOUT_MS = 30_000;

/**
 * @typedef {object} Artifact
 * @property {string} hash
 * @property {number} length
 * @property {string} sha256
 */

/**
 * One GET over `agent`; resolves with the body's length (and its sha256 when `verify`).
 * @param {http.Agent} agent
 * @param {string} url
 * @param {string} token
 * @param {boolean} verify
 * @returns {Promise<{status: number, length: number, sha256: string}>}
 */
function get(agent, url, token, verify) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: { authorization: `Bearer ${token}` }, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      let length = 0;
      const hash = verify ? crypto.createHash('sha256') : undefined;
      res.on('data', (/** @type {Buffer} */ c) => {
        length += c.length;
        if (hash) hash.update(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, length, sha256: hash ? hash.digest('hex') : '' }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

/**
 * GETs every artifact `passes` times with `concurrency` requests in flight over keep-alive
 * connections (a fresh agent per call). Any status other than 200 or a wrong length throws; with
 * `verify` every body's sha256 is checked too (slower: use it for a check pass, not a timed one).
 * @param {{baseUrl: string, token: string, artifacts: Artifact[], passes: number, concurrency: number, verify?: boolean}} o
 * @returns {Promise<{requests: number, bytes: number, seconds: number}>}
 */
async function fetchAll(o) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });
  /** @type {Artifact[]} */
  const queue = [];
  for (let p = 0; p < o.passes; p++) queue.push(...o.artifacts);
  let next = 0;
  let bytes = 0;
  const worker = async () => {
    while (next < queue.length) {
      const a = queue[next++];
      const url = `${o.baseUrl}/v1/cache/${a.hash}`;
      const r = await get(agent, url, o.token, Boolean(o.verify));
      if (r.status !== 200) throw new Error(`GET ${url} answered ${r.status}`);
      if (r.length !== a.length) throw new Error(`GET ${url} returned ${r.length} bytes, expected ${a.length}`);
      if (o.verify && r.sha256 !== a.sha256) throw new Error(`GET ${url} returned other bytes than stored`);
      bytes += r.length;
    }
  };
  const started = process.hrtime.bigint();
  try {
    await Promise.all(Array.from({ length: o.concurrency }, worker));
  } finally {
    agent.destroy();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { requests: queue.length, bytes, seconds };
}


/**
 * @typedef {object} ProxyProcess
 * @property {string} url
 * @property {string} token
 * @property {number} pid
 * @property {() => Promise<import('../index').CacheStats>} stop  closes stdin, resolves with the counters
 * @property {() => void} killSync  for exit handlers
 */

/**
 * Starts benches/proxy-server.js (CacheProxy on the fs store) and waits for its URL and token.
 * @param {{workspaceRoot: string, storePath: string, env: Record<string, string>}} o
 * @returns {Promise<ProxyProcess>}
 */
function startProxyProcess(o) {
  const child = spawn(process.execPath, [path.join(__dirname, 'proxy-server.js'), o.workspaceRoot, o.storePath], {
    env: o.env,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  /** @type {string[]} */
  const lines = [];
  let buffered = '';
  /** @type {((line: string) => void)[]} */
  const waiting = [];
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (/** @type {string} */ c) => {
    buffered += c;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  let exited = false;
  /** @type {Promise<number | null>} */
  const exit = new Promise((resolve) => child.on('exit', (code) => ((exited = true), resolve(code))));
  /** @param {number} ms @returns {Promise<any>} */
  const nextLine = (ms) =>
    new Promise((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(JSON.parse(l));
      const timer = setTimeout(() => reject(new Error(`proxy-server: no answer within ${ms} ms`)), ms);
      waiting.push((line) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line));
        } catch (e) {
          reject(e);
        }
      });
      exit.then((code) => {
        clearTimeout(timer);
        reject(new Error(`proxy-server exited with ${code}`));
      });
    });
  return nextLine(15_000).then((info) => ({
    url: String(info.url),
    token: String(info.token),
    pid: Number(child.pid),
    stop: async () => {
      child.stdin.end();
      const stats = await nextLine(15_000);
      await exit;
      return stats;
    },
    killSync: () => {
      if (!exited) child.kill('SIGKILL');
    },
  }));
}

module.exports = { fetchAll, startProxyProcess };
