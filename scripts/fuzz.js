#!/usr/bin/env node
'use strict';
// `npm run fuzz -- [target...] [--seconds N] [--sanitizer address|none] [--update-corpus]`
//
// Runs the cargo-fuzz targets in fuzz/ one after another (one job, one worker each), N seconds
// each (default 60), and prints libFuzzer's final numbers per target: runs, exec/s, coverage,
// corpus size, crashes. Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler, or
// a stable one with RUSTC_BOOTSTRAP=1 (set here unless already set).
//
// Inputs found while fuzzing go to fuzz/target/corpus/<target>/, libFuzzer's output to
// fuzz/target/logs/<target>.log; --update-corpus merges them into the committed corpus
// fuzz/corpus/<target>/ and minimizes it (libFuzzer's set-cover merge). A crash is
// kept in fuzz/artifacts/<target>/ and makes the exit code 1; `cargo fuzz run <target> <file>`
// replays it. The seeds (tests/fuzz_corpus.rs write_seeds) go into the working corpus first.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const fuzzDir = path.join(root, 'fuzz');

/** The targets, in order, with the largest input libFuzzer may make for each. */
const TARGETS = {
  envelope: 8192,
  unpack: 65536,
  seal_open: 150000,
  config: 4096,
  router: 65536,
  validate: 65536,
};

/**
 * @param {string[]} argv
 * @returns {{ targets: string[], seconds: number, sanitizer: string, update: boolean }}
 */
function parseArgs(argv) {
  const opts = { targets: /** @type {string[]} */ ([]), seconds: 60, sanitizer: 'address', update: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--seconds' || a.startsWith('--seconds=')) {
      opts.seconds = Number(value());
      if (!Number.isInteger(opts.seconds) || opts.seconds < 1) throw new Error('--seconds: a whole number of seconds, at least 1');
    } else if (a === '--sanitizer' || a.startsWith('--sanitizer=')) {
      opts.sanitizer = value();
      if (!['address', 'none'].includes(opts.sanitizer)) throw new Error('--sanitizer: address or none');
    } else if (a === '--update-corpus') {
      opts.update = true;
    } else if (Object.hasOwn(TARGETS, a)) {
      opts.targets.push(a);
    } else {
      throw new Error(`unknown argument ${a}; targets: ${Object.keys(TARGETS).join(', ')}`);
    }
  }
  if (!opts.targets.length) opts.targets = Object.keys(TARGETS);
  return opts;
}

/** @returns {NodeJS.ProcessEnv} */
function fuzzEnv() {
  const tmp = path.join(fuzzDir, 'target', 'tmp');
  fs.mkdirSync(tmp, { recursive: true });
  return { ...process.env, RUSTC_BOOTSTRAP: process.env.RUSTC_BOOTSTRAP ?? '1', TMPDIR: tmp };
}

/**
 * @param {string} cmd @param {string[]} args @param {string} cwd
 * @param {NodeJS.ProcessEnv} [env] default: the fuzzing environment
 */
function run(cmd, args, cwd, env = fuzzEnv()) {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit', env });
  if (r.status !== 0) throw new Error(`${cmd} ${args[0]} failed (exit ${r.status})`);
}

/**
 * libFuzzer's closing numbers, from its output.
 * @param {string} log
 */
function finalStats(log) {
  const done = [...log.matchAll(/^#(\d+)\s+DONE\s+(.*)$/gm)].pop();
  const stat = (/** @type {string} */ name) => log.match(new RegExp(`^stat::${name}:\\s*(\\d+)`, 'm'))?.[1];
  const field = (/** @type {string} */ name) => done?.[2].match(new RegExp(`${name}: (\\S+)`))?.[1];
  return {
    runs: stat('number_of_executed_units') ?? done?.[1] ?? '?',
    execPerSec: stat('average_exec_per_sec') ?? field('exec/s') ?? '?',
    cov: field('cov') ?? '?',
    corpus: field('corp') ?? '?',
    doneLine: done ? done[0] : '(no DONE line)',
  };
}

/**
 * Fuzzes one target; resolves with its numbers.
 * @param {string} target @param {{ seconds: number, sanitizer: string }} opts
 */
function fuzzOne(target, opts) {
  const work = path.join(fuzzDir, 'target', 'corpus', target);
  const artifacts = path.join(fuzzDir, 'artifacts', target);
  fs.mkdirSync(work, { recursive: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const args = ['fuzz', 'run', '-O', '-a', '--sanitizer', opts.sanitizer, target, work, path.join('corpus', target), '--',
    `-max_total_time=${opts.seconds}`, `-max_len=${TARGETS[/** @type {keyof TARGETS} */ (target)]}`,
    '-jobs=1', '-workers=1', '-timeout=60', '-rss_limit_mb=2048', '-print_final_stats=1',
    `-artifact_prefix=${artifacts}${path.sep}`];
  const dict = path.join(fuzzDir, 'dict', `${target}.dict`);
  if (fs.existsSync(dict)) args.push(`-dict=${dict}`);
  console.log(`$ cargo ${args.join(' ')}`);
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn('cargo', args, { cwd: fuzzDir, env: fuzzEnv(), stdio: ['ignore', 'inherit', 'pipe'] });
    let log = '';
    child.stderr.on('data', (chunk) => {
      log += chunk;
      if (log.length > 1 << 22) log = log.slice(-(1 << 21));
      process.stderr.write(chunk);
    });
    child.on('close', (code) => {
      // With -jobs, libFuzzer runs the fuzzing in a child whose output goes to fuzz-0.log (in the
      // working directory): keep it per target and read the numbers from it.
      const jobLog = path.join(fuzzDir, 'fuzz-0.log');
      if (fs.existsSync(jobLog)) {
        const kept = path.join(fuzzDir, 'target', 'logs', `${target}.log`);
        fs.mkdirSync(path.dirname(kept), { recursive: true });
        fs.renameSync(jobLog, kept);
        log += fs.readFileSync(kept, 'utf8');
      }
      const crashes = fs.readdirSync(artifacts).filter((f) => /^(crash|leak|oom|timeout|slow-unit)-/.test(f)
        && fs.statSync(path.join(artifacts, f)).mtimeMs >= started - 1000);
      resolve({ target, code, crashes, ...finalStats(log) });
    });
  });
}

/**
 * Merges the new inputs into the committed corpus and minimizes it: libFuzzer's set-cover merge
 * keeps the fewest files that hold every feature (about half the files of `cargo fuzz cmin`).
 * @param {string} target @param {string} sanitizer
 */
function updateCorpus(target, sanitizer) {
  const committed = path.join(fuzzDir, 'corpus', target);
  const work = path.join(fuzzDir, 'target', 'corpus', target);
  const merged = path.join(fuzzDir, 'target', 'merged', target);
  fs.rmSync(merged, { recursive: true, force: true });
  fs.mkdirSync(merged, { recursive: true });
  run('cargo', ['fuzz', 'run', '-O', '-a', '--sanitizer', sanitizer, target, merged, committed, work, '--',
    '-set_cover_merge=1', `-max_len=${TARGETS[/** @type {keyof TARGETS} */ (target)]}`], fuzzDir);
  for (const f of fs.readdirSync(committed)) fs.rmSync(path.join(committed, f));
  for (const f of fs.readdirSync(merged)) fs.copyFileSync(path.join(merged, f), path.join(committed, f));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const version = spawnSync('cargo', ['fuzz', '--version'], { encoding: 'utf8' });
  if (version.status !== 0) throw new Error('cargo-fuzz is missing: cargo install cargo-fuzz');
  // The caller's environment: RUSTC_BOOTSTRAP would invalidate the release build `npm test` uses.
  run('cargo', ['test', '--release', '--test', 'fuzz_corpus', '--', '--ignored', '--exact', 'write_seeds'], root, process.env);
  run('cargo', ['fuzz', 'build', '-O', '-a', '--sanitizer', opts.sanitizer], fuzzDir);
  const results = [];
  for (const target of opts.targets) {
    results.push(await fuzzOne(target, opts));
    if (opts.update) updateCorpus(target, opts.sanitizer);
  }
  fs.rmSync(path.join(fuzzDir, 'target', 'tmp'), { recursive: true, force: true });
  console.log(`\nfuzzing, ${opts.seconds} s per target, sanitizer ${opts.sanitizer}:`);
  for (const r of results) {
    console.log(`  ${r.target.padEnd(10)} runs ${String(r.runs).padStart(10)}  exec/s ${String(r.execPerSec).padStart(6)}  cov ${r.cov}  corpus ${r.corpus}  crashes ${r.crashes.length}${r.crashes.length ? ` (${r.crashes.join(', ')})` : ''}`);
    console.log(`             ${r.doneLine}`);
  }
  const failed = results.filter((r) => r.crashes.length || r.code !== 0);
  if (failed.length) {
    console.error(`\nfailed: ${failed.map((r) => r.target).join(', ')} (inputs in fuzz/artifacts/<target>/)`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(`nx-open-cache fuzz: ${e.message}`);
  process.exit(2);
});
