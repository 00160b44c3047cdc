'use strict';
// Retention benchmark: how long `gc` takes on an fs cache of N objects (scan only / dry run, then
// evicting half by size), and how long a GET-hit's access bookkeeping costs. Writes
// benches/results/retention.md. Usage: node benches/retention.js [objects=100000]

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const native = require('../index.js');
const { rng } = require('../__tests__/helpers/random.js');

const N = Number(process.argv[2] || 100_000);
const HEADER = 48;
const PAYLOAD = 256;

/**
 * The store's fan-out directory of a hash: the first two bytes (hex) of its xxh3, which
 * `hashArray([h])` gives in decimal.
 * @param {string} hash
 */
function fanOut(hash) {
  const hex = BigInt(native.hashArray([hash])).toString(16).padStart(16, '0');
  return [hex.slice(0, 2), hex.slice(2, 4)];
}

function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-bench-retention-'));
  try {
    fs.mkdirSync(path.join(root, '.tmp'));
    const random = rng(42);
    const body = Buffer.alloc(HEADER + PAYLOAD, 1);
    const now = Date.now() / 1000;
    let t = process.hrtime.bigint();
    for (let i = 0; i < N; i += 1) {
      const hash = String(1_000_000_000 + i);
      const [aa, bb] = fanOut(hash);
      const dir = path.join(root, aa, bb);
      fs.mkdirSync(dir, { recursive: true });
      const file = path.join(dir, hash);
      fs.writeFileSync(file, body);
      const age = now - random() * 60 * 86400;
      fs.utimesSync(file, age, age);
    }
    const fillS = Number(process.hrtime.bigint() - t) / 1e9;

    t = process.hrtime.bigint();
    const dry = native.gc({ path: root, maxSize: (N / 2) * (HEADER + PAYLOAD), dryRun: true });
    const dryS = Number(process.hrtime.bigint() - t) / 1e9;

    t = process.hrtime.bigint();
    const real = native.gc({ path: root, maxSize: (N / 2) * (HEADER + PAYLOAD) });
    const realS = Number(process.hrtime.bigint() - t) / 1e9;

    const lines = [
      '## Retention (fs `gc`)',
      '',
      `${N} objects of ${HEADER + PAYLOAD} B in 65,536 fan-out directories, last access spread over 60 days; budget = half.`,
      `Filling took ${fillS.toFixed(1)} s. Page cache warm (numbers for a cold cache or a network mount are higher);`,
      `${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(1)} when measured.`,
      '',
      '| Run | Objects scanned | Deleted | Time | Objects/s scanned |',
      '|---|---|---|---|---|',
      `| dry run | ${dry.scanned.files} | ${dry.deletedBySize.files} (would) | ${dryS.toFixed(2)} s | ${Math.round(dry.scanned.files / dryS)} |`,
      `| evict half | ${real.scanned.files} | ${real.deletedBySize.files} | ${realS.toFixed(2)} s | ${Math.round(real.scanned.files / realS)} |`,
      '',
      `Directories removed: ${real.removedDirs}; errors: ${real.errorCount}.`,
      '',
    ];
    fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
    fs.writeFileSync(path.join(__dirname, 'results', 'retention.md'), lines.join('\n'));
    console.log(lines.join('\n'));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main();
