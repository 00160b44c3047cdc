// Renders the task board as a text table.
const { createHandlers } = require('@demo/api');
const { formatList, formatBytes } = require('@demo/shared-format');

function renderBoard() {
  const api = createHandlers();
  const tasks = api.list().body;
  const rows = [['state', 'id', 'title'], ...tasks.map((t) => [t.state, t.id, t.title])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const table = rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
  const states = [...new Set(tasks.map((t) => t.state))];
  const csvSize = formatBytes(Buffer.byteLength(api.exportCsv().body));
  return `${table}\n${tasks.length} tasks in ${formatList(states)}; CSV export ${csvSize}`;
}

module.exports = { renderBoard };
