#!/usr/bin/env node
'use strict';
/**
 * `node benches/validate-restore.js [--projects 16] [--rounds 3] [--no-write]` (opt-in, not part of
 * `npm run bench`: it writes several GB): what the artifact check costs on a restore.
 *
 *   1. .bench/validate/ws: a generated workspace of 16 projects whose `build` writes realistic
 *      mixed outputs: 6 incompressible 4 MiB assets, 260 text chunks of 500 KiB (pseudo-JavaScript
 *      slices of a per-project pool, about 3.3x compressible by gzip), 300 small JSON files. Nx
 *      packs each into a tar.gz of about 64 MiB: 1 GiB of artifacts in all.
 *   2. `nx-open-cache serve` (fs storage .bench/validate/store) is filled by a cold Nx run reading
 *      and writing it directly (NX_SELF_HOSTED_REMOTE_CACHE_SERVER).
 *   3. Rounds (default 3), alternating which goes first: serve started with `--check-artifacts on`
 *      (every object read is checked) and with `--check-artifacts off`; each time two restores as
 *      fresh machines (empty Nx cache and workspace data, outputs deleted): the first with a
 *      freshly started server (every object verified against its SHA-256 and, when on, checked:
 *      what the plugin's per-run proxy does), the second with the same server again (the fs store
 *      skips the SHA-256 pass for a large file it verified before, and the check remembers by
 *      SHA-256 what passed: neither runs again).
 *   4. Per restore: the server's CPU (/proc/<pid>/stat), Nx's CPU (everything it ran and waited
 *      for: the remote-cache client, extraction, copying the outputs into the workspace) and the
 *      wall time; medians, and the ratios on/off. A restore counts only if every task is a remote
 *      hit and every output file equals the cold run's.
 *
 * Written to benches/results/validate.md (unless --no-write) and stdout.
 */
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { run, locateNx } = require('../scripts/dev-tools.js');
const { processCpu, reapedChildrenCpu } = require('./cpu.js');
const { snapshotOutputs, diffSnapshots, deleteOutputs } = require('./workspace.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const BENCH_DIR = path.join(REPO_ROOT, '.bench', 'validate');
const WS_DIR = path.join(BENCH_DIR, 'ws');
const STORE_DIR = path.join(BENCH_DIR, 'store');
const REPORT = path.join(__dirname, 'results', 'validate.md');
const TOKEN = `bench-${crypto.randomBytes(16).toString('hex')}`;
const NX_TIMEOUT_MS = 900_000;

/** The build every project runs: deterministic sizes, content from a per-project PRNG. */
const BUILD_SCRIPT = `'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const root = path.resolve(__dirname, '..', process.argv[2]);
const dist = path.join(root, 'dist');
const seed = crypto.createHash('sha256').update(fs.readFileSync(path.join(root, 'src', 'index.js'))).digest();
let a = seed.readUInt32LE(0) | 1, b = seed.readUInt32LE(4) | 2, c = seed.readUInt32LE(8) | 4, d = seed.readUInt32LE(12) | 8;
const rnd = () => { const t = a ^ (a << 11); a = b; b = c; c = d; d = (d ^ (d >>> 19) ^ (t ^ (t >>> 8))) >>> 0; return d; };
const WORDS = 'const let var function return if else for while break continue switch case default new this class extends super import export from async await yield try catch finally throw typeof instanceof null undefined true false value result index length count items options config context state props render update create remove insert select filter reduce map keys values entries assign module require exports prototype'.split(' ');
const parts = [];
let len = 0;
while (len < 8 * 1024 * 1024) {
  const r = rnd();
  const w = WORDS[r % WORDS.length];
  const s = (r & 0x300) === 0 ? w + '_' + ((r >>> 12) & 0xffff) : w;
  const sep = (r & 0x7000) === 0 ? ';\\n' : ' ';
  parts.push(s, sep);
  len += s.length + sep.length;
}
const pool = Buffer.from(parts.join(''));
fs.rmSync(dist, { recursive: true, force: true });
for (const dir of ['assets', 'js', 'meta']) fs.mkdirSync(path.join(dist, dir), { recursive: true });
for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(dist, 'assets', 'asset-' + i + '.bin'), crypto.randomBytes(4 * 1024 * 1024));
for (let i = 0; i < 260; i++) {
  const at = rnd() % (pool.length - 512 * 1024);
  fs.writeFileSync(path.join(dist, 'js', 'chunk-' + i + '.js'), pool.subarray(at, at + 500 * 1024));
}
for (let i = 0; i < 300; i++) {
  fs.writeFileSync(path.join(dist, 'meta', 'm' + i + '.json'), JSON.stringify({ i, v: rnd(), name: WORDS[rnd() % WORDS.length] }) + '\\n');
}
`;

/** @param {string[]} argv */
function parseArgs(argv) {
  const o = { projects: 16, rounds: 3, write: true };
  for (let i = 0; i < argv.length; i++) {
    const whole = () => {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 1 || n > 100) throw new Error(`${argv[i - 1]} needs a whole number from 1 to 100`);
      return n;
    };
    if (argv[i] === '--projects') o.projects = whole();
    else if (argv[i] === '--rounds') o.rounds = whole();
    else if (argv[i] === '--no-write') o.write = false;
    else throw new Error(`unknown argument ${argv[i]} (known: --projects N, --rounds N, --no-write)`);
  }
  return o;
}

/** Writes the workspace: nx linked from this repository, no plugin (Nx reads the server itself). @param {number} projects */
function generateWorkspace(projects) {
  const nx = locateNx();
  fs.mkdirSync(path.join(WS_DIR, 'tools'), { recursive: true });
  fs.writeFileSync(path.join(WS_DIR, 'tools', 'build.js'), BUILD_SCRIPT);
  fs.writeFileSync(path.join(WS_DIR, 'package.json'), `${JSON.stringify({ name: '@bench/validate', private: true })}\n`);
  fs.writeFileSync(path.join(WS_DIR, '.gitignore'), 'node_modules\ndist\n.nx\n');
  fs.writeFileSync(path.join(WS_DIR, 'nx.json'), `${JSON.stringify({
    namedInputs: { default: ['{projectRoot}/**/*', '{workspaceRoot}/tools/build.js'] },
  }, null, 2)}\n`);
  for (let i = 0; i < projects; i++) {
    const name = `v${String(i).padStart(2, '0')}`;
    const root = path.join(WS_DIR, 'packages', name);
    fs.mkdirSync(path.join(root, 'src'), { recursive: true });
    fs.writeFileSync(path.join(root, 'src', 'index.js'), `module.exports = ${JSON.stringify({ name, seed: i * 7919 })};\n`);
    fs.writeFileSync(path.join(root, 'project.json'), `${JSON.stringify({
      name,
      targets: {
        build: {
          executor: 'nx:run-commands',
          options: { command: `node tools/build.js packages/${name}` },
          cache: true,
          inputs: ['default'],
          outputs: ['{projectRoot}/dist'],
        },
      },
    }, null, 2)}\n`);
  }
  fs.mkdirSync(path.join(WS_DIR, 'node_modules'));
  fs.symlinkSync(nx.dir, path.join(WS_DIR, 'node_modules', 'nx'), 'dir');
  run('git', ['-c', 'init.defaultBranch=main', 'init', '-q'], WS_DIR);
  run('git', ['add', '-A'], WS_DIR);
  run('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@invalid', '-c', 'commit.gpgsign=false',
    'commit', '-q', '--no-verify', '-m', 'bench'], WS_DIR);
  return nx;
}

/** @returns {Promise<number>} a free port on 127.0.0.1 */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `nx-open-cache serve` on the bench storage.
 * @param {'on' | 'off'} check
 * @returns {Promise<{ url: string, pid: number, stop: () => Promise<void> }>}
 */
async function startServe(check) {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'lib', 'cli.js'), 'serve',
    '--storage', `fs:${STORE_DIR}`, '--listen', `127.0.0.1:${port}`, '--log', 'off', '--check-artifacts', check], {
    env: { ...process.env, NX_OPEN_CACHE_SERVER_TOKENS: `bench:read-write:${TOKEN}` },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`serve did not start:\n${out}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) {
        clearTimeout(timer);
        resolve(undefined);
      }
    });
    exited.then(() => reject(new Error(`serve exited:\n${out}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    pid: Number(child.pid),
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * `nx run-many -t build` against the server as a fresh machine; CPU of Nx and of the server, wall.
 * @param {{ dir: string, bin: string }} nx
 * @param {{ url: string, pid: number }} server
 * @param {string} label
 */
async function nxRun(nx, server, label) {
  const scratch = fs.mkdtempSync(path.join(BENCH_DIR, 'machine-'));
  deleteOutputs(WS_DIR);
  /** @type {Record<string, string>} */
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('NX_') && typeof v === 'string') env[k] = v;
  Object.assign(env, {
    NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false',
    NX_CACHE_DIRECTORY: path.join(scratch, 'cache'),
    NX_WORKSPACE_DATA_DIRECTORY: path.join(scratch, 'data'),
    NX_SELF_HOSTED_REMOTE_CACHE_SERVER: server.url,
    NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: TOKEN,
  });
  const serverBefore = processCpu(server.pid);
  const nxBefore = reapedChildrenCpu();
  const started = process.hrtime.bigint();
  const r = await new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(nx.dir, nx.bin), 'run-many', '-t', 'build', '--output-style=static'],
      { cwd: WS_DIR, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), NX_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const measured = { wall, nx: reapedChildrenCpu() - nxBefore, server: processCpu(server.pid) - serverBefore };
  fs.rmSync(scratch, { recursive: true, force: true });
  if (r.code !== 0) throw new Error(`${label}: nx failed (${r.code}):\n${r.output}`);
  return { ...measured, output: String(r.output) };
}

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** @param {number} x */
const f2 = (x) => x.toFixed(2);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const began = Date.now();
  const loadStart = os.loadavg().map(f2).join(' ');
  fs.rmSync(BENCH_DIR, { recursive: true, force: true });
  fs.mkdirSync(BENCH_DIR, { recursive: true });
  const nx = generateWorkspace(o.projects);

  // Fill: every task runs and is uploaded (serve checks the uploads).
  let server = await startServe('on');
  const fill = await nxRun(nx, server, 'fill');
  await server.stop();
  const expected = snapshotOutputs(WS_DIR);
  const objects = fs.readdirSync(STORE_DIR, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && !e.parentPath.includes('.tmp'))
    .map((e) => fs.statSync(path.join(e.parentPath, e.name)).size);
  if (objects.length !== o.projects) throw new Error(`the store holds ${objects.length} objects, expected ${o.projects}`);
  const storedBytes = objects.reduce((x, y) => x + y, 0);
  console.error(`filled: ${objects.length} objects, ${(storedBytes / 2 ** 20).toFixed(0)} MiB in ${f2(fill.wall)} s`);

  /** @type {Record<string, { wall: number[], nx: number[], server: number[] }>} */
  const cells = {};
  for (let round = 0; round < o.rounds; round++) {
    for (const check of round % 2 ? ['off', 'on'] : ['on', 'off']) {
      server = await startServe(/** @type {'on' | 'off'} */ (check));
      try {
        for (const phase of ['fresh server', 'same server again']) {
          const label = `${check}, ${phase}`;
          const m = await nxRun(nx, server, label);
          const hits = (m.output.match(/\[remote cache\]/g) || []).length;
          if (hits !== o.projects) throw new Error(`${label}: ${hits} remote hits, expected ${o.projects}:\n${m.output}`);
          const diffs = diffSnapshots(expected.files, snapshotOutputs(WS_DIR).files);
          if (diffs.length) throw new Error(`${label}: outputs differ from the cold run:\n${diffs.join('\n')}`);
          const c = (cells[label] ||= { wall: [], nx: [], server: [] });
          c.wall.push(m.wall);
          c.nx.push(m.nx);
          c.server.push(m.server);
          console.error(`round ${round + 1} ${label}: wall ${f2(m.wall)} s, nx ${f2(m.nx)} s, server ${f2(m.server)} s CPU`);
        }
      } finally {
        await server.stop();
      }
    }
  }
  const report = render(o, cells, { storedBytes, expectedBytes: expected.bytes, files: expected.files.size, began, loadStart });
  console.log(report);
  if (o.write) fs.writeFileSync(REPORT, `${report}\n`);
  fs.rmSync(BENCH_DIR, { recursive: true, force: true });
}

/**
 * @param {{ projects: number, rounds: number }} o
 * @param {Record<string, { wall: number[], nx: number[], server: number[] }>} cells
 * @param {{ storedBytes: number, expectedBytes: number, files: number, began: number, loadStart: string }} info
 */
function render(o, cells, info) {
  const med = (/** @type {string} */ label, /** @type {'wall' | 'nx' | 'server'} */ k) => median(cells[label][k]);
  const rows = [];
  for (const phase of ['fresh server', 'same server again']) {
    const on = `on, ${phase}`;
    const off = `off, ${phase}`;
    const total = (/** @type {string} */ l) => med(l, 'nx') + med(l, 'server');
    rows.push(`| ${phase} | ${f2(med(on, 'server'))} / ${f2(med(off, 'server'))} s | **${f2(med(on, 'server') / med(off, 'server'))}** | ` +
      `${f2(med(on, 'nx'))} / ${f2(med(off, 'nx'))} s | ${f2(total(on))} / ${f2(total(off))} s | **${f2(total(on) / total(off))}** | ` +
      `${f2(med(on, 'wall'))} / ${f2(med(off, 'wall'))} s | **${f2(med(on, 'wall') / med(off, 'wall'))}** |`);
  }
  const nxVersion = locateNx().version;
  return `## The artifact check on a restore: checked vs not checked

Command: \`node benches/validate-restore.js\` (opt-in: it writes several GB; \`--projects N\`, \`--rounds N\`).

- Date: ${new Date(info.began).toISOString().replace('T', ' ').slice(0, 19)} UTC
- Machine: ${os.cpus().length} CPUs, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB memory; ${os.type()} ${os.release()} ${os.arch()}
- Node ${process.version}, nx ${nxVersion}, release build of the addon
- Whole bench: ${((Date.now() - info.began) / 1000).toFixed(0)} s; load average (1, 5, 15 min) ${info.loadStart} at the start, ${os.loadavg().map(f2).join(' ')} at the end

${o.projects} projects, each \`build\` writing 566 files: 6 incompressible 4 MiB assets, 260 text chunks of
500 KiB (pseudo-JavaScript, about 3.3x compressible), 300 small JSON files; ${info.files} output files,
${(info.expectedBytes / 2 ** 30).toFixed(2)} GiB in all. Nx stored ${o.projects} artifacts of ${(info.storedBytes / o.projects / 2 ** 20).toFixed(0)} MiB on average,
${(info.storedBytes / 2 ** 30).toFixed(2)} GiB in all (its own tar.gz, envelope included).

A restore is \`nx run-many -t build --output-style=static\` as a fresh machine (\`NX_DAEMON=false\`, empty
\`NX_CACHE_DIRECTORY\` and \`NX_WORKSPACE_DATA_DIRECTORY\`, outputs deleted) with Nx's own client reading
\`nx-open-cache serve\` directly; it counts only if all ${o.projects} tasks are remote hits and every output
file equals the cold run's. The server runs with \`--check-artifacts on\` (every object read is checked
before it is served: the same \`ValidatingStore\` the plugin's proxy puts in front of its store) or
\`--check-artifacts off\`; ${o.rounds} rounds alternate which goes first. "Fresh server": the first restore
after the server starts, so every object is also verified against its SHA-256 (what the plugin's
proxy, started per run, does). "Same server again": a second restore from the same server, where the
fs store skips the SHA-256 pass for large files it verified before, and the check remembers the
artifacts that passed by their SHA-256: a long-running server checks an unchanged object once.

CPU from /proc: the server process (utime + stime), and Nx with everything it waited for (its
remote-cache client, the extraction into its cache, the copy into the workspace, the project graph).
Medians of ${o.rounds}; "on / off" and the ratio on/off.

| restore | server CPU | ratio | Nx CPU | whole restore CPU (server + Nx) | ratio | wall | ratio |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

${reading(cells, info.storedBytes)}`;
}

/**
 * The sentence on the first restore's wall time, which the machine's load can swamp.
 * @param {number} wall ratio on/off
 * @param {number} cpu ratio on/off of the whole restore's CPU
 */
function wallReading(wall, cpu) {
  if (wall > cpu) {
    return `The wall time grows more (x${f2(wall)}): the server checks an artifact before it sends its first byte, so the checks
are on the critical path, competing for 2 CPUs with Nx's extraction and with the other jobs of this
shared machine (see the load averages).`;
  }
  return `The wall time (x${f2(wall)}) says more about this shared machine's load than about the check (see the
load averages): the server checks an artifact before it sends its first byte, so on an idle machine
the check adds to the wall time.`;
}

/**
 * What the figures say, computed from them.
 * @param {Record<string, { wall: number[], nx: number[], server: number[] }>} cells
 * @param {number} storedBytes
 */
function reading(cells, storedBytes) {
  const med = (/** @type {string} */ label, /** @type {'wall' | 'nx' | 'server'} */ k) => median(cells[label][k]);
  const check = med('on, fresh server', 'server') - med('off, fresh server', 'server');
  const without = med('off, fresh server', 'server') + med('off, fresh server', 'nx');
  const gib = storedBytes / 2 ** 30;
  const pct = (/** @type {number} */ x) => `${Math.round(x * 100)}%`;
  return `Reading: the check cost ${f2(check)} s of server CPU for ${gib.toFixed(2)} GiB of artifacts
(${f2(check / gib)} s per GiB), ${pct(check / without)} of the whole restore's CPU without it: above the
10% aim. Nearly all of it is one more inflate of every artifact (zlib-rs; the tar header walk, the
path map and the symlink checks come on top of it), the same inflate Nx's own client does next to
extract, so its share cannot fall much below the share of inflating in a restore. ${wallReading(med('on, fresh server', 'wall') / med('off, fresh server', 'wall'), (med('on, fresh server', 'server') + med('on, fresh server', 'nx')) / without)} A long-running server checks an unchanged object once: it
remembers what passed by its SHA-256, so the second restore ("same server again") costs ${f2(med('on, same server again', 'server'))} s of server
CPU checked against ${f2(med('off, same server again', 'server'))} s unchecked (whole restore x${f2((med('on, same server again', 'server') + med('on, same server again', 'nx')) / (med('off, same server again', 'server') + med('off, same server again', 'nx')))}, wall x${f2(med('on, same server again', 'wall') / med('off, same server again', 'wall'))}). A server that is the only writer of its
storage can check uploads only (\`--check-artifacts uploads\`), which moves the first read's cost to
the upload.`;
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exitCode = 1;
});
