// @demo/shared-format: number, size and duration formatting.
const { formatBytes, formatDuration } = require('./units');
const { formatList } = require('./lists');

function describe() {
  return `formatters: ${formatList(['formatBytes', 'formatDuration', 'formatList'])}`;
}

module.exports = { formatBytes, formatDuration, formatList, describe };
