'use strict';
/**
 * `npx nx-open-cache report [--out <file>] [--open] [--text] [--json] [--runs <n>]`: the workspace's
 * run history as one self-contained HTML file (lib/report/html.js), as text for a CI log
 * (lib/report/text.js) or as JSON (the model, lib/report/model.js).
 */

const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { commandArgs } = require('./args.js');
const { pluginDataDir } = require('./summary.js');
const { readHistoryRuns } = require('./report/history.js');
const { buildReport } = require('./report/model.js');
const { renderHtml } = require('./report/html.js');
const { renderText } = require('./report/text.js');
const { clean } = require('./text.js');
const { writeAtomically } = require('./fs-util.js');

const USAGE = `Usage: nx-open-cache report [--out <file>] [--open] [--text] [--json] [--runs <n>]

The cache's record in this workspace, from its run history: hit rate over runs, time saved per
project and target, the tasks that miss most and the input that changed most often, the largest
artifacts, errors and refusals by reason.

  --out <file>  Write the HTML report there (default: <workspace data>/nx-open-cache/report.html).
                One self-contained file: it loads nothing from the network.
  --open        Open the HTML report in the default browser (xdg-open, open or start).
  --text        Print the report as text (for CI logs) instead of writing HTML; with --out or
                --open, both.
  --json        Print the report's figures as JSON instead of writing HTML.
  --runs <n>    Only the last <n> runs (default: all the history keeps, up to 1,000).`;

/** How long `--open` waits for the opener to say it failed before leaving it running. */
const OPEN_WAIT_MS = 3000;

/**
 * The command that opens `file` in the default browser on `platform`.
 * @param {string} file
 * @param {NodeJS.Platform} platform
 * @returns {[string, string[]]}
 */
function openerFor(file, platform) {
  if (platform === 'darwin') return ['open', [file]];
  // Passed verbatim: `/s` strips the outer quotes, leaving `start "" "<file>"` (a path with spaces
  // stays one argument; the empty title keeps start from taking the path for a window title).
  if (platform === 'win32') return ['cmd', ['/d', '/s', '/c', `"start "" "${file}""`]];
  return ['xdg-open', [file]];
}

/**
 * Opens `file` in the browser; resolves with undefined when the opener started (and did not fail
 * within OPEN_WAIT_MS), or with why it could not.
 * @param {string} file
 * @returns {Promise<string | undefined>}
 */
function openInBrowser(file) {
  const [cmd, args] = openerFor(file, process.platform);
  return new Promise((resolve) => {
    /** @type {import('node:child_process').ChildProcess} */
    let child;
    try {
      child = spawn(cmd, args, { stdio: 'ignore', detached: process.platform !== 'win32', windowsVerbatimArguments: process.platform === 'win32' });
    } catch (e) {
      resolve(`cannot run ${cmd}: ${/** @type {Error} */ (e).message}`);
      return;
    }
    const timer = setTimeout(() => {
      child.unref();
      resolve(undefined);
    }, OPEN_WAIT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve(/** @type {NodeJS.ErrnoException} */ (e).code === 'ENOENT' ? `${cmd} is not installed` : `cannot run ${cmd}: ${e.message}`);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code === 0 ? undefined : `${cmd} exited with ${signal ?? code}`);
    });
  });
}

/**
 * Whether the terminal gets colors: a TTY, NO_COLOR unset or empty, TERM not `dumb`.
 * @param {NodeJS.WriteStream} stream
 * @param {NodeJS.ProcessEnv} env
 */
function useColor(stream, env) {
  return Boolean(stream.isTTY) && !env.NO_COLOR && env.TERM !== 'dumb';
}

/**
 * `report`.
 * @param {string[]} args
 * @param {string} root  the workspace root
 * @param {{ now?: Date, env?: NodeJS.ProcessEnv }} [o]
 * @returns {Promise<number>}
 */
async function reportCommand(args, root, o = {}) {
  const env = o.env ?? process.env;
  const parsed = commandArgs({ command: 'report', usage: USAGE, errorCode: 1 }, args, {
    out: { type: 'string' }, open: { type: 'boolean' }, text: { type: 'boolean' }, json: { type: 'boolean' }, runs: { type: 'string' },
  });
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  /** @type {number | undefined} */
  let limit;
  if (typeof v.runs === 'string') {
    limit = Number(v.runs);
    if (!/^\d+$/.test(v.runs) || !Number.isSafeInteger(limit) || limit < 1) {
      console.error(`nx-open-cache report: --runs ${JSON.stringify(v.runs)} is not a whole number of runs (1 or more)`);
      return 1;
    }
  }
  if (v.text === true && v.json === true) {
    console.error('nx-open-cache report: --text and --json both print to stdout: choose one');
    return 1;
  }
  const dataDir = pluginDataDir(root);
  const { runs, ignored, dir } = readHistoryRuns(dataDir, { limit });
  const model = buildReport(runs, { workspace: path.basename(root), now: o.now ?? new Date() });
  model.ignoredFiles = ignored.length;
  if (ignored.length) {
    const first = ignored[0];
    console.error(`nx-open-cache report: ignored ${ignored.length} file${ignored.length === 1 ? '' : 's'} in ${dir} that ${ignored.length === 1 ? 'is' : 'are'} not a history run (${clean(path.basename(first.file))}: ${clean(first.reason)})`);
  }
  if (!model.totals.runs) {
    const off = /^(off|false|0|no)$/i.test((env.NX_OPEN_CACHE_HISTORY ?? '').trim()) ? ' (NX_OPEN_CACHE_HISTORY is off here: unset it to record runs)' : '';
    console.error(`nx-open-cache report: no history yet: no Nx run with the plugin has been recorded in ${dir}: run an Nx command (e.g. \`nx run-many -t build\`) first${off}`);
    return 1;
  }
  const toStdout = v.text === true || v.json === true;
  if (v.json === true) console.log(JSON.stringify(model, null, 2));
  if (v.text === true) {
    const width = process.stdout.isTTY ? process.stdout.columns : Number(env.COLUMNS) || 80;
    console.log(renderText(model, { width, color: useColor(process.stdout, env) }));
  }
  if (toStdout && typeof v.out !== 'string' && v.open !== true) return 0;

  const out = typeof v.out === 'string' ? path.resolve(v.out) : path.join(dataDir, 'report.html');
  try {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    writeAtomically(out, renderHtml(model, { version: require('../package.json').version }));
  } catch (e) {
    console.error(`nx-open-cache report: cannot write ${out}: ${/** @type {Error} */ (e).message}`);
    return 1;
  }
  const say = toStdout ? console.error : console.log;
  say(`nx-open-cache: report of ${model.totals.runs} run${model.totals.runs === 1 ? '' : 's'} written to ${out}`);
  if (v.open === true) {
    const failed = await openInBrowser(out);
    if (failed) console.error(`nx-open-cache report: cannot open a browser (${failed}): open ${out} yourself`);
  }
  return 0;
}

module.exports = { reportCommand, openerFor, useColor, USAGE };
