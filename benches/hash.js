#!/usr/bin/env node
'use strict';
// Benchmark: hashFiles (walk + xxh3 of every file, native threads) against Nx's own native file
// hashing of the same tree (a fresh WorkspaceContext: Nx's parallel walk + hash of every file, as
// when Nx starts without a file-hash archive), and against the raw read rate of the tree
// (`find -print0 | xargs -0 -P2 cat > /dev/null`: bytes read, no hashing).
//
// Tree: 50,000 files / 1 GiB under .bench/hash-tree (generated once, reused), warm page cache.
// Usage: node benches/hash.js [--runs N]   (writes benches/results/hash.md)

const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const repo = path.join(__dirname, '..');
const ours = require('../index.js');
const nx = require('nx/src/native');

const TREE = path.join(repo, '.bench', 'hash-tree');
const FILES = 50_000;
const TOTAL = 2 ** 30;
const LARGE = 50; // files of 4 MiB, the rest small
const LARGE_SIZE = 4 * 2 ** 20;
const MARKER = path.join(TREE, '.complete');
const SPEC = `${FILES} files, ${TOTAL} bytes, ${LARGE}x${LARGE_SIZE}, v1`;

const argRuns = process.argv.indexOf('--runs');
const RUNS = argRuns > 0 ? Math.max(1, Number(process.argv[argRuns + 1]) || 5) : 5;

const { rng } = require('../__tests__/helpers/random.js');

function generate() {
  if (fs.existsSync(MARKER) && fs.readFileSync(MARKER, 'utf8') === SPEC) return false;
  fs.rmSync(TREE, { recursive: true, force: true });
  const r = rng(2024);
  const pool = crypto.randomBytes(64 * 2 ** 20);
  const smallCount = FILES - LARGE;
  const avgSmall = Math.floor((TOTAL - LARGE * LARGE_SIZE) / smallCount);
  let written = 0;
  for (let i = 0; i < FILES; i++) {
    const dir = path.join(TREE, `pkg-${i % 50}`, `dir-${Math.floor(i / 50) % 20}`);
    if (i < 1000) fs.mkdirSync(dir, { recursive: true });
    let size;
    if (i % (FILES / LARGE) === 0) size = LARGE_SIZE;
    else if (i === FILES - 1) size = Math.max(0, TOTAL - written);
    else size = Math.floor(r() * 2 * avgSmall);
    const off = Math.floor(r() * (pool.length - size));
    fs.writeFileSync(path.join(dir, `file-${i}.${['ts', 'js', 'json', 'md'][i % 4]}`), pool.subarray(off, off + size));
    written += size;
  }
  fs.writeFileSync(MARKER, SPEC);
  return true;
}

/** @param {() => unknown} fn @returns {Promise<number>} milliseconds */
async function time(fn) {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const t0 = Date.now();
  const fresh = generate();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'nx-open-cache-hash-bench-'));
  let n = 0;

  const ourRun = () => ours.hashFiles(TREE, ['**/*']);
  const ourRunAsync = () => ours.hashFilesAsync(TREE, ['**/*']);
  // The same walk (a glob without a literal prefix) selecting no file: the walk's share.
  const walkOnly = () => ours.hashFiles(TREE, ['**/*.no-such-extension']);
  const nxRun = async () => {
    // A fresh cache dir each time, so Nx hashes every file instead of reusing its archive.
    const ctx = new nx.WorkspaceContext(TREE, path.join(scratch, `nx-${n++}`));
    await ctx.ready();
    return ctx.allFileData();
  };
  const rawRun = () => {
    const r = spawnSync('sh', ['-c', 'find . -type f -print0 | xargs -0 -P2 -n 1000 cat > /dev/null'], {
      cwd: TREE,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    if (r.status !== 0) throw new Error(`raw read failed: ${r.stderr}`);
  };

  // Warm the page cache and check that both sides hash the same files to the same values.
  rawRun();
  const mine = ourRun();
  const theirs = await nxRun();
  const nxByPath = new Map(theirs.map((f) => [f.file, f.hash]));
  const compared = mine.files.filter((f) => f.path !== '.complete');
  if (compared.length !== FILES || theirs.filter((f) => f.file !== '.complete').length !== FILES) {
    throw new Error(`file counts differ: ours ${compared.length}, nx ${theirs.length}, expected ${FILES}`);
  }
  for (const f of mine.files) {
    if (nxByPath.get(f.path) !== f.hash) throw new Error(`hash differs for ${f.path}`);
  }
  const bytes = Number(
    spawnSync('sh', ['-c', 'find . -type f -printf "%s\\n" | awk "{s+=\\$1} END {print s}"'], { cwd: TREE })
      .stdout.toString()
      .trim(),
  );

  /** @type {Record<string, number[]>} */
  const samples = { ours: [], oursAsync: [], walk: [], nx: [], raw: [] };
  const loadBefore = os.loadavg().map((x) => x.toFixed(2)).join(', ');
  for (let i = 0; i < RUNS; i++) {
    samples.ours.push(await time(ourRun));
    samples.oursAsync.push(await time(ourRunAsync));
    samples.walk.push(await time(walkOnly));
    samples.nx.push(await time(nxRun));
    samples.raw.push(await time(rawRun));
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  const loadAfter = os.loadavg().map((x) => x.toFixed(2)).join(', ');

  const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
  const gbps = (ms) => (bytes / 2 ** 30 / (ms / 1000)).toFixed(2);
  const fps = (ms) => Math.round(FILES / (ms / 1000)).toLocaleString('en-US');
  const rows = [
    ['nx-open-cache hashFiles (sync)', m.ours],
    ['nx-open-cache hashFilesAsync', m.oursAsync],
    ['nx-open-cache hashFiles, walk only (no file selected)', m.walk],
    ['Nx WorkspaceContext (walk + hash all)', m.nx],
    ['raw read: find \\| xargs -P2 cat (no hash)', m.raw],
  ];
  const table = [
    '| what | median ms | GiB/s | files/s |',
    '|---|---:|---:|---:|',
    ...rows.map(([name, ms]) =>
      ms === m.walk ? `| ${name} | ${ms.toFixed(0)} | - | - |` : `| ${name} | ${ms.toFixed(0)} | ${gbps(ms)} | ${fps(ms)} |`,
    ),
  ].join('\n');
  const vsNx = m.nx / m.ours;
  const vsRaw = m.ours / m.raw;
  const ratios = [
    `- hashFiles vs Nx: **${vsNx.toFixed(2)}x** as fast (Nx ${m.nx.toFixed(0)} ms / ours ${m.ours.toFixed(0)} ms; target >= 1.0)`,
    `- hashFiles vs raw read: **${vsRaw.toFixed(2)}x** the raw read time (ours ${m.ours.toFixed(0)} ms / raw ${m.raw.toFixed(0)} ms; target <= 1.5)`,
  ].join('\n');

  const cpu = os.cpus();
  const machine = `${os.type()} ${os.release()}, ${cpu.length} x ${cpu[0] ? cpu[0].model : 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}, nx ${require('nx/package.json').version}`;
  const reading =
    `All four read the same ${FILES.toLocaleString('en-US')} files (${(bytes / 2 ** 30).toFixed(2)} GiB) from a warm page cache, ` +
    `so the figures measure CPU work (syscalls, copying, hashing, walking) rather than the disk. ` +
    `Before timing, every one of our per-file hashes was checked equal to Nx's for the same path. ` +
    `The Nx figure is a fresh WorkspaceContext per run (new cache dir, so no file-hash archive is reused): ` +
    `the one native entry of nx 24.0.6 that hashes a whole tree without a project graph (its hashFilesMatchingGlob(s) and allFileData only read the hashes this walk computed; TaskHasher needs a graph). It also builds its file map and writes its archive, a small cost on its side. ` +
    `The raw reference is \`cat\` through \`xargs -P2\` (no hashing, but process start-up and a copy to /dev/null); ` +
    `no native raw-read helper was added to keep the public API clean. ` +
    `hashFiles is ${vsNx >= 1 ? 'at least as fast as' : 'slower than'} Nx (${vsNx.toFixed(2)}x) and takes ${vsRaw.toFixed(2)}x the raw read time ` +
    `(${vsRaw <= 1.5 ? 'within' : 'outside'} the 1.5x target). ` +
    (vsRaw < 1
      ? `That \`cat\` is slower than hashing shows the reference is weak (a process per 1,000 files, 128 KiB reads, a pipe-less copy to /dev/null on only two workers), so this ratio says hashFiles adds no measurable cost over a shell-level read, not how close it is to the kernel's copy rate; a profile of hashFiles shows the kernel's page-cache copy (\`_copy_to_iter\`) and path lookups on open as the largest costs and xxh3 itself under a tenth. `
      : '') +
    `The walk alone takes ${((m.walk / m.ours) * 100).toFixed(0)}% of hashFiles' time. ` +
    `The machine was shared with other builds (see the load average), which makes the absolute figures noisy; ` +
    `all measurements are interleaved run by run, so the ratios are the figures to read.`;

  const md = [
    '## Hashing: hashFiles vs Nx native file hashing vs raw read',
    '',
    `Command: \`node benches/hash.js --runs ${RUNS}\` (median of ${RUNS} runs each, after one warm-up run).`,
    '',
    `Machine: ${machine}; load average (1, 5, 15 min) ${loadBefore} before, ${loadAfter} after.`,
    '',
    `Tree: \`.bench/hash-tree\`, ${FILES.toLocaleString('en-US')} files in 1,000 directories, ${bytes.toLocaleString('en-US')} bytes ` +
      `(${LARGE} files of 4 MiB, the rest 0-${Math.round((2 * (TOTAL - LARGE * LARGE_SIZE)) / (FILES - LARGE) / 1024)} KiB), random contents.`,
    '',
    table,
    '',
    ratios,
    '',
    reading,
    '',
  ].join('\n');

  console.log(table);
  console.log(ratios);
  console.log(`(tree ${fresh ? 'generated' : 'reused'}; total ${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'results', 'hash.md'), md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
