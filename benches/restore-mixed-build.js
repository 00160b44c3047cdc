#!/usr/bin/env node
'use strict';
/**
 * A build for the mixed-size projects of benches/restore-link.js (copied into the generated
 * workspace as tools/build-mixed.js):
 *
 *   node tools/build-mixed.js <projectRoot> tiny          one text file of a few hundred bytes in dist/
 *                                                         (its Nx artifact is about 1 KiB)
 *   node tools/build-mixed.js <projectRoot> big <bytes>   adds dist/big/blob.bin of <bytes> incompressible
 *                                                         bytes (run after tools/build.js, which writes
 *                                                         the usual 200 files)
 *
 * Content is a pure function of the project's sources (their sha256 keys an AES-128-CTR stream), so
 * the same sources give byte-identical outputs. Node built-ins only.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const MAX_BIG = 256 * 1024 * 1024;

const workspaceRoot = path.resolve(__dirname, '..');
const [projectRoot, mode, sizeArg] = process.argv.slice(2);
if (!projectRoot || (mode !== 'tiny' && mode !== 'big')) {
  console.error('usage: node tools/build-mixed.js <projectRoot> tiny | big <bytes>');
  process.exit(2);
}
const projectDir = path.resolve(workspaceRoot, projectRoot);
const srcDir = path.join(projectDir, 'src');
const dist = path.join(projectDir, 'dist');
const sources = fs
  .readdirSync(srcDir)
  .filter((f) => f.endsWith('.js'))
  .sort()
  .map((f) => fs.readFileSync(path.join(srcDir, f)));
const seed = crypto.createHash('sha256').update(Buffer.concat(sources)).digest();

if (mode === 'tiny') {
  fs.rmSync(dist, { recursive: true, force: true });
  fs.mkdirSync(dist, { recursive: true });
  const body = `'use strict';\n// ${projectRoot}: ${seed.toString('hex')}\nmodule.exports = ${JSON.stringify({ seed: seed.toString('base64') })};\n`;
  fs.writeFileSync(path.join(dist, 'index.js'), body.repeat(4));
  console.log(`built ${projectRoot}: 1 file, ${body.length * 4} B in dist/`);
} else {
  const size = Number(sizeArg);
  if (!Number.isInteger(size) || size < 1 || size > MAX_BIG) {
    console.error(`build-mixed: size ${JSON.stringify(sizeArg)} must be a whole number of bytes from 1 to ${MAX_BIG}`);
    process.exit(2);
  }
  const cipher = crypto.createCipheriv('aes-128-ctr', seed.subarray(0, 16), seed.subarray(16, 32));
  const blob = Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
  fs.mkdirSync(path.join(dist, 'big'), { recursive: true });
  fs.writeFileSync(path.join(dist, 'big', 'blob.bin'), blob);
  console.log(`built ${projectRoot}: dist/big/blob.bin, ${(size / 1024 / 1024).toFixed(1)} MiB`);
}
