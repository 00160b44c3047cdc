// English lists: ["a", "b", "c"] -> "a, b and c"

function formatList(items, conjunction = 'and') {
  if (items.length === 0) return '';
  if (items.length === 1) return String(items[0]);
  return `${items.slice(0, -1).join(', ')} ${conjunction} ${items[items.length - 1]}`;
}

module.exports = { formatList };
