'use strict';
// Small file helpers shared by the history (lib/history.js) and the fileset store (lib/inputs.js).

const fs = require('node:fs');

/** A node hash usable as a file name (and as an object key: never `__proto__`). */
const SAFE_HASH = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/**
 * Writes `text` to `file` atomically (a unique temp file beside it, then rename); the temp file is
 * removed when the write fails.
 * @param {string} file
 * @param {string} text
 */
function writeAtomically(file, text) {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`;
  try {
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

module.exports = { SAFE_HASH, writeAtomically };
