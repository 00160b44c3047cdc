#!/usr/bin/env node
'use strict';
/**
 * What the cache host costs a run: the time of preTasksExecution + postTasksExecution (the plugin's
 * hooks, called in this process as Nx calls them) with the proxy in this process
 * (NX_OPEN_CACHE_HOST=off, the reference), with a host already running (warm: back-to-back runs),
 * and with no host running (cold: the hook starts one, as every nx command of a CI job with the
 * daemon off does when runs are more than a few seconds apart). Also the host's resident memory.
 *
 *   node benches/host.js [--rounds 15] [--out benches/results/host.md]
 *
 * Rounds alternate the three kinds; medians and ratios to the reference are printed.
 */

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const plugin = require('../lib/plugin.js');
const { VERSION } = require('../lib/host.js');
const { pluginDataDir } = require('../lib/summary.js');
const native = require('../index.js');

const args = process.argv.slice(2);
const opt = (/** @type {string} */ name, /** @type {string} */ dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const ROUNDS = Number(opt('--rounds', '15'));
const OUT = opt('--out', '');

/** @param {number[]} xs */
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits (bounded) until no host answers for `dir`. @param {string} dir */
async function noHost(dir) {
  await native.hostStop(dir, VERSION);
  for (let i = 0; i < 200 && (await native.hostStatus(dir, VERSION)); i++) await sleep(50);
  if (await native.hostStatus(dir, VERSION)) throw new Error('the host did not stop');
}

/** One run's hooks, timed; console output of the hooks is swallowed. @param {string} root @param {string} id */
async function timedRun(root, id) {
  const log = console.log;
  console.log = () => {};
  try {
    const ctx = { id, workspaceRoot: root, argv: [process.execPath, path.join(root, 'nx.js'), 'run-many', '-t', 'build'] };
    const t0 = process.hrtime.bigint();
    await plugin.preTasksExecution({ path: 'store' }, ctx);
    const t1 = process.hrtime.bigint();
    await plugin.postTasksExecution({ path: 'store' }, ctx);
    const t2 = process.hrtime.bigint();
    return { pre: Number(t1 - t0) / 1e6, post: Number(t2 - t1) / 1e6 };
  } finally {
    console.log = log;
    delete process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER;
    delete process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN;
    delete process.env.NX_OPEN_CACHE_PROXY_URL;
  }
}

/** VmRSS of a pid in MiB. @param {number} pid */
function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-bench-host-'));
  fs.writeFileSync(path.join(root, 'nx.json'), '{}');
  const dir = pluginDataDir(root);
  /** @type {Record<string, { pre: number[], post: number[] }>} */
  const times = { local: { pre: [], post: [] }, warm: { pre: [], post: [] }, cold: { pre: [], post: [] } };
  let hostRss = NaN;
  try {
    // Untimed warm-up of each kind (loads the addon, fills the OS caches).
    process.env.NX_OPEN_CACHE_HOST = 'off';
    await timedRun(root, 'warmup-local');
    delete process.env.NX_OPEN_CACHE_HOST;
    await timedRun(root, 'warmup-host');
    for (let round = 0; round < ROUNDS; round++) {
      const kinds = round % 2 ? ['cold', 'warm', 'local'] : ['local', 'cold', 'warm'];
      for (const kind of kinds) {
        if (kind === 'local') process.env.NX_OPEN_CACHE_HOST = 'off';
        else delete process.env.NX_OPEN_CACHE_HOST;
        if (kind === 'cold') await noHost(dir);
        if (kind === 'warm' && !(await native.hostStatus(dir, VERSION))) await timedRun(root, `prime-${round}`);
        const t = await timedRun(root, `${kind}-${round}`);
        times[kind].pre.push(t.pre);
        times[kind].post.push(t.post);
      }
    }
    const status = await native.hostStatus(dir, VERSION);
    if (status) hostRss = rssMiB(status.pid);
  } finally {
    delete process.env.NX_OPEN_CACHE_HOST;
    await noHost(dir).catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true });
  }
  const ref = median(times.local.pre) + median(times.local.post);
  const row = (/** @type {string} */ label, /** @type {string} */ kind) => {
    const pre = median(times[kind].pre);
    const post = median(times[kind].post);
    return `| ${label} | ${pre.toFixed(1)} ms | ${post.toFixed(1)} ms | ${(pre + post).toFixed(1)} ms | ${((pre + post) / ref).toFixed(2)} |`;
  };
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  const md = `## The cache host: what it costs a run

Command: \`node benches/host.js --rounds ${ROUNDS}\`.

- Date: ${new Date().toISOString().replace('T', ' ').slice(0, 19)} UTC
- Machine: ${os.cpus().length} CPUs, Node ${process.version}; load average at the end ${load}

preTasksExecution + postTasksExecution of the plugin, called in one Node process as Nx calls them,
fs store in a temp directory, ${ROUNDS} rounds alternating the order; medians.

| hooks of one run | pre | post | total | vs in-process |
| --- | --- | --- | --- | --- |
${row('proxy in the hook\'s process (NX_OPEN_CACHE_HOST=off, reference)', 'local')}
${row('cache host already running (warm)', 'warm')}
${row('no host running: the hook starts one (cold)', 'cold')}

The host process, idle between runs: ${hostRss.toFixed(0)} MiB resident.
`;
  console.log(md);
  if (OUT) fs.writeFileSync(OUT, md);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
