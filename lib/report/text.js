'use strict';
/**
 * The report for a terminal or a CI log (`report --text`): the same figures as the HTML page, as
 * plain lines no wider than the terminal (80 columns when it is not one). Colors only on a TTY
 * without NO_COLOR. Control characters in strings from the history are shown as `?`, so a hostile
 * task id cannot drive the terminal.
 */

const { formatDuration, formatRate } = require('./model.js');
const { formatBytes } = require('../summary.js');
const { count } = require('../plural.js');
const { clean } = require('../text.js');

/** @typedef {import('./model.js').ReportModel} ReportModel */

const SPARKS = '▁▂▃▄▅▆▇█';

/**
 * A history string made safe and short for one terminal cell.
 * @param {string} s
 * @param {number} max
 */
function cell(s, max) {
  return clean(s, max);
}

/**
 * @param {number} value @param {number} max @param {number} width
 */
function bar(value, max, width) {
  const n = max > 0 ? Math.round((value / max) * width) : 0;
  return '█'.repeat(n) + '░'.repeat(width - n);
}

/**
 * Clauses joined by `, ` into lines of at most `width` columns. A clause is its text, or its plain
 * text (for the width) and its painted text.
 * @param {(string | [string, string])[]} clauses
 * @param {number} width
 * @param {string} indent
 * @returns {string[]}
 */
function wrap(clauses, width, indent) {
  const lines = [];
  let line = '';
  let plain = 0;
  for (const c of clauses) {
    const [p, painted] = typeof c === 'string' ? [c, c] : c;
    // + 1: the comma that ends a line which another follows.
    if (line && plain + 2 + p.length + 1 > width) {
      lines.push(`${line},`);
      line = '';
    }
    if (!line) {
      line = indent + painted;
      plain = indent.length + p.length;
    } else {
      line += `, ${painted}`;
      plain += 2 + p.length;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/**
 * `YYYY-MM-DD HH:MM`
 * @param {string | null} iso
 */
function when(iso) {
  if (!iso) return '-';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? iso : new Date(t).toISOString().slice(0, 16).replace('T', ' ');
}

/**
 * The report as text.
 * @param {ReportModel} m
 * @param {{ width?: number, color?: boolean }} [o]
 * @returns {string}
 */
function renderText(m, o = {}) {
  const width = Math.max(50, Math.min(o.width || 80, 160));
  const paint = (/** @type {string} */ code, /** @type {string} */ s) => (o.color ? `\u001b[${code}m${s}\u001b[0m` : s);
  const head = (/** @type {string} */ s) => paint('1', s);
  const dim = (/** @type {string} */ s) => paint('2', s);
  /** @param {number | null} r */
  const rateColor = (r) => (r === null ? formatRate(r) : paint(r >= 0.7 ? '32' : r >= 0.4 ? '33' : '31', formatRate(r)));
  const t = m.totals;
  /** @type {string[]} */
  const out = [];
  out.push(head(cell(`nx-open-cache report: ${m.workspace}`, width)));
  /** @type {(string | [string, string])[]} */
  const clauses = [
    `${count(t.runs, 'run')}${m.first ? ` from ${when(m.first)} to ${when(m.last)} UTC` : ''}`,
    [`hit rate ${formatRate(t.hitRate)} (${t.hits} of ${t.lookups})`, `hit rate ${rateColor(t.hitRate)} (${t.hits} of ${t.lookups})`],
    count(t.remoteHits, 'remote hit'),
    count(t.localHits, 'local hit'),
    `saved ${formatDuration(t.savedMs)}`,
    `${count(t.misses, 'miss', 'misses')} (${t.failed} failed)`,
    `${t.notRun} not run`,
    `${formatBytes(t.bytesDown)} down`,
    `${formatBytes(t.bytesUp)} up`,
    `cache errors: ${count(t.cacheErrors, 'request')}`,
    `refused: ${count(t.refused, 'task')}`,
  ];
  out.push(...wrap(clauses, width, '  '));

  const looked = m.runs.filter((r) => r.lookups > 0);
  if (looked.length) {
    const shown = looked.slice(-(width - 4));
    out.push('', head(`Hit rate per run (${SPARKS[0]} 0% to ${SPARKS[7]} 100%), last ${shown.length}`));
    out.push(`  ${shown.map((r) => SPARKS[Math.min(7, Math.floor(((r.hitRate ?? 0) * 8)))]).join('')}`);
  }

  /**
   * @param {string} title @param {string} kind
   * @param {import('./model.js').GroupRow[]} rows @param {number} more
   */
  const groups = (title, kind, rows, more) => {
    if (!rows.length) return;
    out.push('', head(title));
    const tail = (/** @type {import('./model.js').GroupRow} */ r) => `${formatDuration(r.savedMs).padStart(9)}  ${formatRate(r.hitRate).padStart(6)} of ${r.lookups}`;
    const tailW = Math.max(...rows.map((r) => tail(r).length));
    const nameW = Math.min(28, width - 2 - 2 - 8 - 2 - tailW, Math.max(kind.length, ...rows.map((r) => r.name.length)));
    const barW = Math.max(8, width - 2 - nameW - 2 - 2 - tailW);
    const max = Math.max(...rows.map((r) => r.savedMs));
    for (const r of rows) out.push(`  ${cell(r.name, nameW).padEnd(nameW)}  ${bar(r.savedMs, max, barW)}  ${tail(r)}`);
    if (more) out.push(dim(`  and ${more} more ${kind}s`));
  };
  groups('Time saved per project (saved, hit rate)', 'project', m.projects, m.projectsMore);
  groups('Time saved per target', 'target', m.targets, m.targetsMore);

  if (m.missing.length) {
    out.push('', head('Tasks that miss most (misses/lookups: what changed)'));
    for (const r of m.missing) {
      let cause;
      if (r.topInput && r.topInput.count >= r.unchanged) cause = `${r.topInput.count} of ${r.compared} misses: ${r.topInput.label}`;
      else if (r.unchanged) cause = `${r.unchanged} of ${r.compared} misses: no input changed, the artifact was not available`;
      else cause = 'first run in the history';
      const left = `  ${r.misses}/${r.lookups}`.padEnd(10);
      const line = `${left}${r.task}: ${cause}`;
      if (line.length <= width) out.push(cell(line, width));
      else out.push(cell(`${left}${r.task}`, width), cell(`${' '.repeat(left.length + 2)}${cause}`, width));
    }
  }

  if (m.artifacts.length) {
    out.push('', head('Largest artifacts (largest, latest, how many)'));
    for (const a of m.artifacts) {
      const sizes = `${formatBytes(a.bytes).padStart(10)}  ${formatBytes(a.latestBytes).padStart(10)}  ${String(a.artifacts).padStart(4)}  `;
      out.push(`  ${sizes}${cell(a.task, width - 2 - sizes.length)}`);
    }
  }

  if (m.problems.length) {
    out.push('', head('Errors and refusals by reason'));
    for (const p of m.problems) {
      out.push(cell(`  ${`${p.count} ${p.count === 1 ? p.unit : `${p.unit}s`}`.padStart(12)}  ${p.kind}: ${p.reason}`, width));
    }
    if (m.problemsMore) out.push(dim(`  and ${m.problemsMore} more reason${m.problemsMore === 1 ? '' : 's'}`));
  }
  if (m.ignoredFiles) out.push('', dim(`(${m.ignoredFiles} unreadable history file${m.ignoredFiles === 1 ? '' : 's'} ignored)`));
  return out.join('\n');
}

module.exports = { renderText, cell };
