'use strict';
/**
 * Terminal-safe text. Strings that come from files or from a cache (run history, artifact
 * metadata: host names, times, run ids, task ids, file paths, reasons) are printed through
 * `clean`, so that a hostile or broken value cannot drive the terminal (ANSI/OSC escape sequences,
 * carriage returns, line breaks) or flood it.
 */

/** Control characters (C0, DEL, C1) and the Unicode line and paragraph separators. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** The longest string printed by default (a file path or a reason is rarely longer). */
const MAX_CHARS = 300;

/**
 * `s` with every control character shown as `?` (an escape sequence `ESC [ 31 m` becomes
 * `?[31m`: printable, inert), cut to `max` characters with `…` as the last one. A value that is
 * not a string is shown as `?`.
 * @param {unknown} s
 * @param {number} [max]  at most this many characters (default MAX_CHARS); below 1, ''
 * @returns {string}
 */
function clean(s, max = MAX_CHARS) {
  if (max < 1) return '';
  const str = typeof s === 'string' ? s : typeof s === 'number' && Number.isFinite(s) ? String(s) : '?';
  const safe = str.replace(CONTROL, '?');
  return safe.length <= max ? safe : `${safe.slice(0, Math.max(0, max - 1))}…`;
}

module.exports = { clean, MAX_CHARS };
