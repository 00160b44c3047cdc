// Minimal RFC 4180 CSV for flat records.
const { uniqueBy } = require('@demo/shared-utils');

function quote(value) {
  const s = String(value ?? '');
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function toCsv(records) {
  const columns = uniqueBy(records.flatMap((r) => Object.keys(r)), (k) => k);
  const lines = [columns.map(quote).join(',')];
  for (const r of records) lines.push(columns.map((c) => quote(r[c])).join(','));
  return lines.join('\n') + '\n';
}

function parseLine(line) {
  const cells = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      cells.push(cell);
      cell = '';
    } else cell += ch;
  }
  cells.push(cell);
  return cells;
}

function fromCsv(text) {
  const [header, ...rows] = text.trimEnd().split('\n');
  const columns = parseLine(header);
  return rows.map((row) => Object.fromEntries(parseLine(row).map((v, i) => [columns[i], v])));
}

module.exports = { toCsv, fromCsv };
