'use strict';
/**
 * The report as one self-contained HTML file: inline CSS, charts as inline SVG drawn here, no
 * script, no font, image or style from anywhere else. A Content-Security-Policy in the page forbids
 * every fetch and every script as well, so that even a mistake in escaping could not load or run
 * anything.
 *
 * Every string from the history (task ids, reasons, commands, hashes) goes through `h`, whose
 * interpolations are escaped unless they are markup built by `h` itself.
 */

const { formatDuration, formatRate } = require('./model.js');
const { formatBytes } = require('../summary.js');

/** @typedef {import('./model.js').ReportModel} ReportModel */

/** Markup that `h` inserts as is. */
class Raw {
  /** @param {string} s */
  constructor(s) {
    this.s = s;
  }

  toString() {
    return this.s;
  }
}

/** @type {Record<string, string>} */
const ENTITIES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Text for an HTML text node or a quoted attribute: markup characters as entities, control
 * characters (none is valid in HTML text) as U+FFFD.
 * @param {unknown} v
 */
function esc(v) {
  return String(v).replace(/[&<>"']/g, (c) => ENTITIES[c]).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, '\ufffd');
}

/** @param {unknown} v @returns {string} */
function piece(v) {
  if (v instanceof Raw) return v.s;
  if (Array.isArray(v)) return v.map(piece).join('');
  if (v === undefined || v === null || v === false) return '';
  return esc(v);
}

/**
 * A template whose interpolations are escaped (arrays joined, `Raw` kept).
 * @param {TemplateStringsArray} strings
 * @param {...unknown} values
 * @returns {Raw}
 */
function h(strings, ...values) {
  let out = strings[0];
  for (let i = 0; i < values.length; i += 1) out += piece(values[i]) + strings[i + 1];
  return new Raw(out);
}

/**
 * A string cut to `max` characters, the whole in a tooltip.
 * @param {string} s
 * @param {number} max
 */
function clip(s, max) {
  if (s.length <= max) return h`${s}`;
  return h`<span title="${s}">${s.slice(0, max - 1)}…</span>`;
}

/** `2026-11-27 07:46 UTC` @param {string | null} iso */
function when(iso) {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return `${new Date(t).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

const COLORS = { remote: '#0f766e', local: '#5eb8ad', miss: '#e8a33d', bar: '#3b6fb6', bytes: '#7a5cc2', grid: '#e3e6ea', axis: '#6b7280' };

/**
 * The hit rate over runs: stacked areas (remote hits below, local hits above, their top is the hit
 * rate), one point per run with a tooltip.
 * @param {ReportModel} m
 */
function hitRateChart(m) {
  const runs = m.runs.filter((r) => r.lookups > 0);
  if (!runs.length) return h`<p class="empty">No run looked anything up in the cache yet.</p>`;
  const W = 960;
  const H = 240;
  const L = 48;
  const R = 16;
  const T = 14;
  const B = 34;
  const iw = W - L - R;
  const ih = H - T - B;
  const x = (/** @type {number} */ i) => L + (runs.length === 1 ? iw / 2 : (i * iw) / (runs.length - 1));
  const y = (/** @type {number} */ v) => T + ih - v * ih;
  const f = (/** @type {number} */ v) => v.toFixed(1);
  const remote = runs.map((r) => r.remoteHits / r.lookups);
  const total = runs.map((r) => r.hits / r.lookups);
  /** @param {number[]} top @param {number[] | null} bottom */
  const area = (top, bottom) => {
    const up = top.map((v, i) => `${f(x(i))},${f(y(v))}`);
    const down = (bottom ?? top.map(() => 0)).map((v, i) => `${f(x(i))},${f(y(v))}`).reverse();
    if (runs.length === 1) {
      const w = 14;
      const [t] = top;
      const b = bottom ? bottom[0] : 0;
      return `${f(x(0) - w)},${f(y(t))} ${f(x(0) + w)},${f(y(t))} ${f(x(0) + w)},${f(y(b))} ${f(x(0) - w)},${f(y(b))}`;
    }
    return [...up, ...down].join(' ');
  };
  const grid = [0, 0.25, 0.5, 0.75, 1].map((v) => h`<line x1="${L}" x2="${W - R}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="${COLORS.grid}"/><text x="${L - 8}" y="${f(y(v) + 4)}" text-anchor="end" class="tick">${v * 100}%</text>`);
  const labelIdx = runs.length === 1 ? [0] : [...new Set([0, Math.floor((runs.length - 1) / 2), runs.length - 1])];
  const xlabels = labelIdx.map((i) => {
    const anchor = runs.length === 1 ? 'middle' : i === 0 ? 'start' : i === runs.length - 1 ? 'end' : 'middle';
    return h`<text x="${f(x(i))}" y="${H - 10}" text-anchor="${anchor}" class="tick">${when(runs[i].startedAt)}</text>`;
  });
  const dots = runs.length <= 80
    ? runs.map((r, i) => h`<circle cx="${f(x(i))}" cy="${f(y(total[i]))}" r="3.5" fill="#fff" stroke="${COLORS.remote}" stroke-width="2"><title>${when(r.startedAt)}${r.command ? ` - nx ${r.command}` : ''}
hit rate ${formatRate(r.hitRate)}: ${r.remoteHits} remote + ${r.localHits} local hits of ${r.lookups}; saved ${formatDuration(r.savedMs)}</title></circle>`)
    : '';
  const line = total.map((v, i) => `${f(x(i))},${f(y(v))}`).join(' ');
  return h`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Hit rate over ${runs.length} runs" data-chart="hit-rate">
${grid}
<polygon points="${area(total, remote)}" fill="${COLORS.local}" fill-opacity="0.55"/>
<polygon points="${area(remote, null)}" fill="${COLORS.remote}" fill-opacity="0.75"/>
${runs.length > 1 ? h`<polyline points="${line}" fill="none" stroke="${COLORS.remote}" stroke-width="2"/>` : ''}
${dots}
${xlabels}
</svg>
<div class="legend"><span><i style="background:${COLORS.remote}"></i>remote hits</span><span><i style="background:${COLORS.local}"></i>local hits</span><span>top edge: hit rate per run (${runs.length} runs)</span></div>`;
}

/**
 * A horizontal bar for a table cell, `value / max` of its width.
 * @param {number} value @param {number} max @param {string} color
 */
function cellBar(value, max, color) {
  const w = max > 0 ? Math.max(value > 0 ? 1 : 0, (value / max) * 200) : 0;
  return h`<svg class="bar wide" viewBox="0 0 200 14" width="200" height="14" preserveAspectRatio="none" aria-hidden="true"><rect x="0" y="1" width="200" height="12" rx="2" fill="${COLORS.grid}" fill-opacity="0.5"/><rect x="0" y="1" width="${w.toFixed(1)}" height="12" rx="2" fill="${color}"/></svg>`;
}

/**
 * A hit rate as a small stacked bar (hits / misses) and the number.
 * @param {{ hits: number, misses: number, lookups: number, hitRate: number | null }} r
 */
function rateCell(r) {
  const w = r.lookups ? (r.hits / r.lookups) * 60 : 0;
  return h`<svg class="bar" viewBox="0 0 60 10" width="60" height="10" aria-hidden="true"><rect width="60" height="10" rx="2" fill="${COLORS.miss}" fill-opacity="${r.lookups ? 0.8 : 0}"/><rect width="${w.toFixed(1)}" height="10" rx="2" fill="${COLORS.remote}"/></svg> <span class="hit-rate">${formatRate(r.hitRate)}</span>`;
}

/**
 * Time saved and hit rate per project or target.
 * @param {string} kind  `project` or `target`
 * @param {import('./model.js').GroupRow[]} rows
 * @param {number} more
 */
function groupTable(kind, rows, more) {
  if (!rows.length) return h`<p class="empty">Nothing looked up yet.</p>`;
  const max = Math.max(...rows.map((r) => r.savedMs));
  return h`<table class="groups" data-table="${kind}s"><thead><tr><th>${kind}</th><th>time saved</th><th></th><th>hit rate</th><th class="n">hits</th><th class="n">misses</th></tr></thead><tbody>
${rows.map((r) => h`<tr data-${kind}="${r.name}"><td class="name">${clip(r.name, 40)}</td><td>${cellBar(r.savedMs, max, COLORS.bar)}</td><td class="n saved">${formatDuration(r.savedMs)}</td><td class="rate">${rateCell(r)}</td><td class="n hits">${r.hits}</td><td class="n misses">${r.misses}</td></tr>
`)}</tbody></table>${more ? h`<p class="more">and ${more} more ${kind}s</p>` : ''}`;
}

/** @param {ReportModel} m */
function missTable(m) {
  if (!m.missing.length) return h`<p class="empty">No task missed.</p>`;
  return h`<table data-table="misses"><thead><tr><th>task</th><th class="n">misses</th><th>hit rate</th><th>most frequent changed input</th><th>last miss</th></tr></thead><tbody>
${m.missing.map((r) => {
    let cause;
    if (r.topInput && r.topInput.count >= r.unchanged) {
      cause = h`<span title="${r.topInput.key}">${clip(r.topInput.label, 70)}</span> <span class="dim">in ${r.topInput.count} of ${r.compared} misses${r.otherInputs ? ` · ${r.otherInputs} other input${r.otherInputs === 1 ? '' : 's'}` : ''}</span>`;
    } else if (r.unchanged) {
      cause = h`no input changed <span class="dim">in ${r.unchanged} of ${r.compared} misses: the artifact was not available (not stored, refused or removed)</span>`;
    } else {
      cause = h`<span class="dim">first run of this task in the history</span>`;
    }
    return h`<tr data-task="${r.task}"><td class="name">${clip(r.task, 48)}</td><td class="n misses">${r.misses} / ${r.lookups}</td><td class="rate">${rateCell({ ...r, hits: r.lookups - r.misses })}</td><td>${cause}</td><td class="dim when">${when(r.lastMiss)}</td></tr>
`;
  })}</tbody></table>`;
}

/** @param {ReportModel} m */
function artifactTable(m) {
  if (!m.artifacts.length) return h`<p class="empty">No artifact sizes recorded yet.</p>`;
  const max = m.artifacts[0].bytes;
  return h`<table data-table="artifacts"><thead><tr><th>task</th><th></th><th class="n">largest</th><th class="n">latest</th><th class="n">artifacts</th><th>largest hash</th></tr></thead><tbody>
${m.artifacts.map((a) => h`<tr data-task="${a.task}"><td class="name">${clip(a.task, 48)}</td><td>${cellBar(a.bytes, max, COLORS.bytes)}</td><td class="n bytes" data-bytes="${a.bytes}">${formatBytes(a.bytes)}</td><td class="n">${formatBytes(a.latestBytes)}</td><td class="n">${a.artifacts}</td><td class="mono dim">${clip(a.hash, 24)}</td></tr>
`)}</tbody></table>`;
}

/** @param {ReportModel} m */
function problemTable(m) {
  if (!m.problems.length) return h`<p class="empty">No cache errors and no refusals.</p>`;
  return h`<table data-table="problems"><thead><tr><th>kind</th><th>reason</th><th class="n">count</th><th>last seen</th><th>e.g.</th></tr></thead><tbody>
${m.problems.map((p) => h`<tr><td><span class="tag tag-${p.kind.replace(/\W+/g, '-')}">${p.kind}</span></td><td class="reason">${clip(p.reason, 160)}</td><td class="n count">${p.count} ${p.count === 1 ? p.unit : `${p.unit}s`}</td><td class="dim when">${when(p.lastSeen)}</td><td class="name">${clip(p.example, 40)}</td></tr>
`)}</tbody></table>${m.problemsMore ? h`<p class="more">and ${m.problemsMore} more reason${m.problemsMore === 1 ? '' : 's'}</p>` : ''}`;
}

/** @param {ReportModel} m */
function runTable(m) {
  const recent = m.runs.slice(-15).reverse();
  return h`<table data-table="runs"><thead><tr><th>started</th><th>command</th><th>hit rate</th><th class="n">hits</th><th class="n">misses</th><th class="n">saved</th><th class="n">took</th></tr></thead><tbody>
${recent.map((r) => h`<tr><td class="dim when">${when(r.startedAt)}</td><td class="mono">${clip(r.command ? `nx ${r.command}` : '-', 60)}</td><td class="rate">${rateCell(r)}</td><td class="n">${r.hits}</td><td class="n">${r.misses}</td><td class="n">${formatDuration(r.savedMs)}</td><td class="n">${r.durationMs === null ? '-' : formatDuration(r.durationMs)}</td></tr>
`)}</tbody></table>${m.runs.length > recent.length ? h`<p class="more">the last ${recent.length} of ${m.runs.length} runs</p>` : ''}`;
}

/**
 * @param {string} key  for tests and styling
 * @param {string} label
 * @param {string} value
 * @param {string} [sub]
 */
function card(key, label, value, sub) {
  return h`<div class="card" data-total="${key}"><div class="label">${label}</div><div class="value">${value}</div>${sub ? h`<div class="sub">${sub}</div>` : ''}</div>`;
}

const CSS = `
:root{--fg:#1f2937;--dim:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--accent:#0f766e}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 24px 40px}
header h1{margin:0;font-size:22px;font-weight:650}
header p{margin:4px 0 0;color:var(--dim)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(120px,1fr));gap:12px;margin:20px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 12px}
.card .label{color:var(--dim);font-size:12px;text-transform:uppercase;letter-spacing:.04em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.card .value{font-size:24px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .sub{color:var(--dim);font-size:12px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 18px;margin:14px 0}
section h2{margin:0 0 4px;font-size:16px}
section .note{margin:0 0 10px;color:var(--dim);font-size:13px}
.chart{width:100%;height:auto;display:block}
.tick{font-size:11px;fill:#6b7280}
.legend{display:flex;gap:16px;flex-wrap:wrap;color:var(--dim);font-size:12px;margin-top:4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;color:var(--dim);font-weight:600;font-size:12px;border-bottom:1px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid #f0f1f3;padding:5px 8px;vertical-align:middle}
tr:last-child td{border-bottom:0}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.name{font-weight:550;white-space:nowrap}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.dim{color:var(--dim);font-size:12px}
.when{white-space:nowrap}
.rate{white-space:nowrap}
.bar{vertical-align:middle;max-width:100%}
.groups td:nth-child(2){width:45%}
.groups .wide{width:100%}
.reason{word-break:break-word}
.tag{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;white-space:nowrap;background:#eef2f7}
.tag-cache-error{background:#fde8e8;color:#9b1c1c}
.tag-refused{background:#fdf3e1;color:#8a4b08}
.empty,.more{color:var(--dim);margin:6px 0 0}
footer{color:var(--dim);font-size:12px;margin-top:18px}
`;

/**
 * The whole page.
 * @param {ReportModel} m
 * @param {{ version: string }} o
 * @returns {string}
 */
function renderHtml(m, o) {
  const t = m.totals;
  const range = m.first ? `${when(m.first)} to ${when(m.last)}` : 'no runs';
  const page = h`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>nx-open-cache report: ${m.workspace}</title>
<style>${new Raw(CSS)}</style></head>
<body><main>
<header><h1>Cache report: ${clip(m.workspace, 60)}</h1><p>${t.runs} run${t.runs === 1 ? '' : 's'}, ${range}</p></header>
<div class="cards">
${card('hit-rate', 'hit rate', formatRate(t.hitRate), `${t.hits} of ${t.lookups} lookups`)}
${card('saved', 'time saved', formatDuration(t.savedMs), t.timedHits === t.hits ? `by ${t.hits} hit${t.hits === 1 ? '' : 's'}` : `from ${t.timedHits} of ${t.hits} hits`)}
${card('runs', 'runs', String(t.runs), `${t.tasks} task records`)}
${card('hits', 'hits', String(t.hits), `${t.remoteHits} remote, ${t.localHits} local`)}
${card('misses', 'misses', String(t.misses), `${t.failed} failed, ${t.notRun} not run`)}
${card('transfer', 'transferred', formatBytes(t.bytesDown), `down, ${formatBytes(t.bytesUp)} up`)}
${card('errors', 'errors', String(t.cacheErrors), `cache request${t.cacheErrors === 1 ? '' : 's'} failed`)}
${card('refused', 'refused', String(t.refused), t.refused === 1 ? 'task not stored' : 'tasks not stored')}
</div>
<section><h2>Hit rate over runs</h2><p class="note">Share of cacheable tasks restored from the cache in each run.</p>${hitRateChart(m)}</section>
<section><h2>Time saved per project</h2><p class="note">The producer's run time minus the restore time, summed over the project's hits (hits whose artifact has no producer time count 0).</p>${groupTable('project', m.projects, m.projectsMore)}</section>
<section><h2>Time saved per target</h2><p class="note">Summed over all projects.</p>${groupTable('target', m.targets, m.targetsMore)}</section>
<section><h2>Tasks that miss most</h2><p class="note">Each miss compared with the same task's previous record: the hash input that changed most often. <code>nx-open-cache why &lt;task&gt;</code> explains one miss file by file.</p>${missTable(m)}</section>
<section><h2>Largest artifacts</h2><p class="note">Per task: its largest artifact (bytes downloaded on a hit or uploaded when stored), its latest, and how many different artifacts it had.</p>${artifactTable(m)}</section>
<section><h2>Errors and refusals by reason</h2><p class="note">Cache errors never fail a build: the task ran, or was not stored.</p>${problemTable(m)}</section>
<section><h2>Recent runs</h2>${runTable(m)}</section>
<footer>Generated by nx-open-cache ${o.version} at ${when(m.generatedAt)} from the workspace's run history${m.ignoredFiles ? ` (${m.ignoredFiles} unreadable history file${m.ignoredFiles === 1 ? '' : 's'} ignored)` : ''}. This file loads nothing from the network.</footer>
</main></body></html>
`;
  return page.s;
}

module.exports = { renderHtml, esc, h };
