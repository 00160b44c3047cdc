#!/usr/bin/env node
'use strict';
// generators/init/schema.json from the native option schema (generators/init/options.js):
//   node scripts/schema.js           exit 1 when the committed file differs (what would change)
//   node scripts/schema.js --write   write it
// The addon must be built (`node scripts/ensure-native.js`).

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const { schemaJson } = require('../generators/init/options.js');

const FILE = path.join(__dirname, '..', 'generators', 'init', 'schema.json');

/** The file's expected text. */
function expected() {
  return `${JSON.stringify(schemaJson(), null, 2)}\n`;
}

/** @param {string[]} argv @returns {number} */
function main(argv) {
  const { values } = parseArgs({ args: argv, options: { write: { type: 'boolean' } } });
  const want = expected();
  const have = fs.existsSync(FILE) ? fs.readFileSync(FILE, 'utf8') : '';
  if (values.write) {
    if (have !== want) fs.writeFileSync(FILE, want);
    console.log(`${path.relative(process.cwd(), FILE)}: ${have === want ? 'up to date' : 'written'}`);
    return 0;
  }
  if (have === want) return 0;
  const a = have.split('\n');
  const b = want.split('\n');
  const differs = a.findIndex((l, i) => l !== b[i]);
  const line = differs === -1 ? a.length : differs;
  console.error(
    `${FILE} differs from the option schema (first at line ${line + 1}: ${JSON.stringify(a[line])} -> ${JSON.stringify(b[line])}); ` +
      'run `node scripts/schema.js --write`',
  );
  return 1;
}

module.exports = { expected, FILE };
if (require.main === module) process.exitCode = main(process.argv.slice(2));
