'use strict';
/** Counts in words, for the CLI's messages. */

/**
 * A count with its noun in the grammatical number: `1 object`, `0 objects`.
 * @param {number} n
 * @param {string} one  the noun for one
 * @param {string} [many]  the noun for any other count (default: `one` + "s")
 * @returns {string}
 */
function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

module.exports = { count };
