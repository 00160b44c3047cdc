'use strict';
// Synthetic run histories in the SPEC format (history run record, version 1) for the report's
// tests: a small workspace whose files, env and lockfile change between runs, with a CI machine
// that fills the remote cache. Deterministic for a seed.

const fs = require('node:fs');
const path = require('node:path');
const { rng } = require('./random.js');

/** project -> its dependencies */
const GRAPH = {
  shop: ['feature-cart', 'feature-search', 'ui'],
  admin: ['ui', 'data-access'],
  'feature-cart': ['data-access', 'ui'],
  'feature-search': ['data-access', 'ui'],
  'data-access': ['utils'],
  ui: ['utils'],
  utils: [],
};
const TARGETS = { build: [18_000, 70_000], test: [6_000, 40_000], lint: [2_000, 9_000] };
const SIZES = { build: [300_000, 14_000_000], test: [8_000, 90_000], lint: [600, 3_000] };

/** @param {string} p @returns {string[]} p and everything it depends on */
function closure(p) {
  const seen = new Set([p]);
  const stack = [p];
  while (stack.length) {
    for (const d of /** @type {Record<string, string[]>} */ (GRAPH)[/** @type {string} */ (stack.pop())] ?? []) {
      if (!seen.has(d)) {
        seen.add(d);
        stack.push(d);
      }
    }
  }
  return [...seen].sort();
}

/** A 19-digit decimal hash of a string, like Nx's. @param {string} s */
function hashOf(s) {
  let a = 0xcbf29ce484222325n;
  for (const ch of Buffer.from(s)) {
    a ^= BigInt(ch);
    a = (a * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return (a % 10_000_000_000_000_000_000n).toString().padStart(19, '1');
}

/**
 * A realistic history: `runs` runs, one every few hours, of build, test and lint for every project.
 * @param {{ runs?: number, seed?: number, start?: number }} [o]
 * @returns {any[]} run records, oldest first
 */
function syntheticHistory(o = {}) {
  const random = rng(o.seed ?? 7);
  const between = (/** @type {number} */ lo, /** @type {number} */ hi) => Math.round(lo + random() * (hi - lo));
  const nRuns = o.runs ?? 28;
  let now = o.start ?? Date.parse('2026-11-20T08:00:00Z');
  /** @type {Record<string, number>} */
  const fileVersion = Object.fromEntries(Object.keys(GRAPH).map((p) => [p, 0]));
  let lockVersion = 0;
  let nodeEnv = 'production';
  /** hash -> producer */
  const remote = new Map();
  /** task id -> last hash restored or produced on this machine */
  const local = new Map();
  const runs = [];
  for (let r = 0; r < nRuns; r += 1) {
    // What changed since the previous run.
    if (r > 0) {
      const edits = random() < 0.25 ? 0 : between(1, 2);
      for (let i = 0; i < edits; i += 1) {
        const ps = Object.keys(GRAPH);
        // Leaf apps and features change most, utils rarely.
        const p = ps[Math.min(ps.length - 1, Math.floor(random() * random() * ps.length))];
        fileVersion[p] += 1;
      }
      // Scripted events: new shop code whose build is too big to store (runs 6 and 15), a
      // read-only run with new admin code (12), a lockfile change (9), an env change (17, 18).
      if (r === 6 || r === 15) fileVersion.shop += 1;
      if (r === 12) fileVersion.admin += 1;
      if (r === 9) lockVersion += 1;
      if (r === 17) nodeEnv = 'staging';
      if (r === 18) nodeEnv = 'production';
    }
    // CI builds the main line now and then: its artifacts are in the remote cache.
    const ciAhead = random() < 0.45 && r !== 6 && r !== 12 && r !== 15;
    const startedAt = now;
    let clock = now + 1500;
    const tasks = [];
    const errors = [];
    for (const project of Object.keys(GRAPH)) {
      for (const target of Object.keys(TARGETS)) {
        const id = `${project}:${target}`;
        /** @type {Record<string, string>} */
        const nodes = {
          AllExternalDependencies: hashOf(`lock${lockVersion}`),
          'npm:react': hashOf(`react${lockVersion}`),
        };
        for (const dep of closure(project)) {
          nodes[`${dep}:ProjectConfiguration`] = hashOf(`${dep}-config`);
          nodes[`${dep}:TsConfig`] = hashOf('tsconfig');
          nodes[`${dep}:packages/${dep}/**/*`] = hashOf(`${dep}-files-${fileVersion[dep]}`);
        }
        if (target === 'build') nodes['env:NODE_ENV'] = hashOf(nodeEnv);
        const inputs = { command: hashOf(`nx run ${id}`), nodes, implicitDeps: {}, runtime: { 'node --version': hashOf('v20') } };
        const hash = hashOf(JSON.stringify(inputs) + id);
        const [lo, hi] = /** @type {Record<string, number[]>} */ (TARGETS)[target];
        const [blo, bhi] = /** @type {Record<string, number[]>} */ (SIZES)[target];
        const bytes = project === 'shop' && target === 'build' ? between(9_000_000, 21_000_000) : between(blo, bhi);
        if (ciAhead && !remote.has(hash) && random() < 0.8) {
          remote.set(hash, { durationMs: between(lo, hi), nxVersion: '24.0.6', storedAt: new Date(now - 600_000).toISOString(), runId: `ci-${r}`, host: 'ci-runner-3' });
        }
        /** @type {Record<string, any>} */
        const t = { id, project, target, configuration: null, hash, cacheable: true, inputs };
        // Mostly fresh CI runners: the local cache rarely has the task.
        if (local.get(id) === hash && random() < 0.3) {
          const d = between(40, 400);
          // As lib/history.js records them: a local hit reads no artifact metadata, so no savedMs.
          Object.assign(t, { status: 'local-cache-kept-existing', code: 0, outcome: 'local-hit', durationMs: d });
        } else if (remote.has(hash)) {
          const d = between(300, 2500);
          const producer = remote.get(hash);
          Object.assign(t, { status: 'remote-cache', code: 0, outcome: 'remote-hit', durationMs: d, bytes, cacheMs: between(40, 900), savedMs: Math.max(0, producer.durationMs - d), producer });
          local.set(id, hash);
        } else if (project === 'admin' && target === 'test' && random() < 0.5) {
          Object.assign(t, { status: 'failure', code: 1, outcome: 'failed', durationMs: between(lo, hi) });
        } else {
          const d = between(lo, hi);
          Object.assign(t, { status: 'success', code: 0, durationMs: d, bytes, cacheMs: between(60, 1500) });
          if (bytes > 16_777_216) {
            Object.assign(t, { outcome: 'refused', reason: 'artifact is larger than maxArtifactSize (16 MiB)' });
          } else if (r === 12) {
            Object.assign(t, { outcome: 'not-stored', reason: 'the cache is read-only for this run (NX_OPEN_CACHE_MODE=read-only)' });
            delete t.bytes;
          } else {
            t.outcome = 'stored';
            remote.set(hash, { durationMs: d, nxVersion: '24.0.6', storedAt: new Date(clock).toISOString(), runId: `run-${r}`, host: 'dev-laptop' });
          }
          local.set(id, hash);
        }
        clock += t.durationMs;
        tasks.push(t);
      }
    }
    if (r === 20) errors.push({ reason: 'S3 bucket team-cache: request timed out after 10 s', count: 6, skipped: true });
    if (r === 21) errors.push({ reason: 'S3 bucket team-cache: request timed out after 10 s', count: 2 });
    const hits = tasks.filter((t) => t.outcome === 'remote-hit').length;
    runs.push({
      format: 'nx-open-cache-history', version: 1, runId: `run-${r}`,
      startedAt: new Date(startedAt).toISOString(), endedAt: new Date(clock).toISOString(),
      command: r % 3 === 0 ? 'run-many -t build test lint' : 'affected -t build test lint', nxVersion: '24.0.6',
      location: 's3 team-cache', mode: r === 12 ? 'read-only' : 'read-write',
      cache: { hits, misses: tasks.length - hits, errors, cacheMillis: tasks.reduce((s, t) => s + (t.cacheMs ?? 0), 0) },
      savedMs: tasks.reduce((s, t) => s + (t.savedMs ?? 0), 0),
      tasks,
    });
    now += between(2, 9) * 3_600_000;
  }
  return runs;
}

/**
 * Writes runs as history run files under `<dataDir>/history/runs/`.
 * @param {string} dataDir  the plugin data dir
 * @param {any[]} runs
 */
function writeHistory(dataDir, runs) {
  const dir = path.join(dataDir, 'history', 'runs');
  fs.mkdirSync(dir, { recursive: true });
  for (const run of runs) {
    const ms = String(Date.parse(run.startedAt)).padStart(13, '0');
    const name = `${ms}-${String(run.runId).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64) || 'run'}.json`;
    fs.writeFileSync(path.join(dir, name), JSON.stringify(run));
  }
  return dir;
}

/**
 * The figures the report must show, computed here from the raw records (independently of
 * lib/report/model.js): hits / lookups / saved in total and per project.
 * @param {any[]} runs
 */
function expectedFigures(runs) {
  const lookups = (/** @type {any} */ t) => t.cacheable !== false && t.outcome !== 'not-run';
  const hit = (/** @type {any} */ t) => t.outcome === 'remote-hit' || t.outcome === 'local-hit';
  /** @type {Map<string, { hits: number, misses: number, savedMs: number }>} */
  const projects = new Map();
  let hits = 0;
  let total = 0;
  let savedMs = 0;
  for (const run of runs) {
    for (const t of run.tasks) {
      if (!lookups(t)) continue;
      const p = projects.get(t.project) ?? { hits: 0, misses: 0, savedMs: 0 };
      projects.set(t.project, p);
      total += 1;
      if (hit(t)) {
        hits += 1;
        p.hits += 1;
        savedMs += t.savedMs ?? 0;
        p.savedMs += t.savedMs ?? 0;
      } else {
        p.misses += 1;
      }
    }
  }
  return { hits, lookups: total, savedMs, projects };
}

module.exports = { syntheticHistory, writeHistory, expectedFigures, GRAPH };
