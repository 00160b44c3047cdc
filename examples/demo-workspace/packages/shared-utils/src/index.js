// @demo/shared-utils: small helpers used across the workspace.
const { chunk, uniqueBy, groupBy } = require('./collections');
const { slugify, padTable } = require('./strings');

function describe() {
  return `helpers: chunk, uniqueBy, groupBy, slugify, padTable`;
}

module.exports = { chunk, uniqueBy, groupBy, slugify, padTable, describe };
