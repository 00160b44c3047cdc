#!/usr/bin/env node
'use strict';
// `npx nx-open-cache <command>`.

const { formatAge, formatSummary, pluginDataDir, readSummary, summaryFile } = require('./summary.js');
const { commandArgs } = require('./args.js');
const { findWorkspaceRoot, inputNotes, readNxJson, workspaceInput } = require('./workspace.js');

const HELP = `Usage: nx-open-cache <command>

Commands:
  summary [--json]   Show the cache summary of the last Nx run in this workspace
                     (with the Nx daemon on, the summary line is printed to the daemon log;
                     this shows it)
  history [--limit <n>] [--tasks] [--json]
                     The recorded Nx runs of this workspace, newest first: task outcomes
                     (remote / local hit, stored, not stored and why, failed) and time saved
  config             Show the effective configuration (nx.json plugin options + environment) as
                     JSON, with the key ids (signing, trusted, encryption) and requireSignature;
                     notes and warnings on stderr
  doctor [--json]    Check that the configured cache works from this machine: setup, a lookup,
                     a write / read back / delete probe, each timed, with a fix per failure
                     (exit 0 when it works, also with warnings such as "reads work, writes are
                     refused"; 1 when it does not; 2 on a configuration mistake); \`doctor --help\`
                     for details
  report [--out <file>] [--open] [--text] [--json] [--runs <n>]
                     The cache's record from this workspace's run history: hit rate over runs,
                     time saved per project and target, the tasks that miss most and why, the
                     largest artifacts, errors and refusals; one self-contained HTML file
                     (\`report --help\` for details)
  serve [options]    Run an Nx remote-cache server (see \`nx-open-cache serve --help\`)
  gc [--max-size <size>] [--max-age <age>] [--path <dir>] [--dry-run] [--json]
                     Delete least recently used / expired objects of an fs cache directory
                     (default: this workspace's); \`gc --help\` for details
  why <project:target> [--run <id>] [--against <hash>] [--json]
                     Why a task missed the cache: the inputs that differ from the closest
                     earlier run with an artifact (files, env, command...); \`why --help\`
  host [status|stop] [--json]
                     The workspace's cache host (the process that serves the runs' caches):
                     its runs, or stop it (it also exits by itself once no run uses it)
  keygen [--encryption] [--json]
                     Print a new key pair for signed artifacts (trustedKeys /
                     NX_OPEN_CACHE_SIGNING_KEY), or an NX_OPEN_CACHE_ENCRYPTION_KEY
  help               This text
  --version          Print the version`;

/**
 * When and by which command a summary's run ended: `(nx run-many -t build, ended 2 min ago at
 * 2026-11-27T07:46:11.862Z)`.
 * @param {import('./summary.js').RunSummary} s
 */
function runLine(s) {
  const age = formatAge(s.endedAt);
  const ended = age ? `ended ${age} at ${s.endedAt}` : `ended ${s.endedAt}`;
  return `  (${s.command ? `nx ${s.command}, ` : ''}${ended})`;
}

/**
 * `summary [--json]`: the last run's summary, its age and command.
 * @param {string} root
 * @param {string[]} args
 * @returns {number}
 */
function summaryCommand(root, args) {
  const parsed = commandArgs({ command: 'summary', usage: HELP, errorCode: 1 }, args, { json: { type: 'boolean' } });
  if (typeof parsed === 'number') return parsed;
  const s = readSummary(root);
  if (!s) {
    console.error(`nx-open-cache: no run summary yet: no Nx run in this workspace has ended with the plugin (${summaryFile(root)} is missing): run an Nx command first`);
    return 1;
  }
  if (parsed.values.json === true) {
    console.log(JSON.stringify(s, null, 2));
    return 0;
  }
  // The run's configuration warnings, printed at its start (into the daemon's log when the daemon
  // ran the hooks).
  const warnings = (s.warnings || []).map((w) => `  warning: ${w}`);
  console.log([formatSummary(s), ...warnings, runLine(s)].join('\n'));
  return 0;
}

/**
 * `config`: the effective configuration, from the same input as the plugin's and doctor's; where it
 * came from (a deprecated block, duplicate entries) on stderr, so stdout stays JSON.
 * @param {string} root
 * @param {string[]} args
 * @returns {number}
 */
function configCommand(root, args) {
  const parsed = commandArgs({ command: 'config', usage: HELP, errorCode: 1 }, args, {});
  if (typeof parsed === 'number') return parsed;
  try {
    const input = workspaceInput(readNxJson(root));
    if (!input.configured) {
      console.error('nx-open-cache: the plugin is not in nx.json: run `npx nx g nx-open-cache:init`');
      return 1;
    }
    for (const note of inputNotes(input, 'this command')) console.error(`nx-open-cache: note: ${note}`);
    const c = require('../index.js').resolveConfig(root, input.options, input.env);
    if (c.keys) console.error(`nx-open-cache: keys: ${c.keys}`);
    for (const w of c.warnings) console.error(`nx-open-cache: warning: ${w}`);
    // The signing key id beside the trusted ones, null when unset (not left out): the output
    // always says whether this machine signs.
    const { signingKeyId, ...rest } = c;
    /** @type {Record<string, unknown>} */
    const shown = {};
    for (const [k, v] of Object.entries(rest)) {
      if (k === 'trustedKeyIds') shown.signingKeyId = signingKeyId ?? null;
      shown[k] = v;
    }
    console.log(JSON.stringify(shown, null, 2));
    return 0;
  } catch (e) {
    console.error(/** @type {Error} */ (e).message);
    return 1;
  }
}

/** @param {string[]} argv @returns {number | undefined | Promise<number>} */
function main(argv) {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    console.log(HELP);
    return command ? 0 : 1;
  }
  if (command === '--version' || command === '-v') {
    console.log(require('../package.json').version);
    return 0;
  }
  if (command === 'gc') return require('./gc.js').gcCommand(rest);
  if (command === 'keygen') return require('./keygen.js').keygenCommand(rest);
  if (command === 'serve') return require('./serve.js').run(rest);
  if (command === 'doctor') return require('./doctor.js').doctorCommand(rest, findWorkspaceRoot(process.cwd()));
  const root = findWorkspaceRoot(process.cwd());
  if (!root) {
    console.error(`nx-open-cache: no nx.json found in ${process.cwd()} or above: run this inside an Nx workspace`);
    return 1;
  }
  if (command === 'host') return require('./host.js').hostCommand(rest, pluginDataDir(root));
  if (command === 'report') return require('./report.js').reportCommand(rest, root);
  if (command === 'summary') return summaryCommand(root, rest);
  if (command === 'history') return require('./history.js').historyCommand(root, rest);
  if (command === 'why') return require('./why.js').whyCommand(root, rest);
  if (command === 'config') return configCommand(root, rest);
  console.error(`nx-open-cache: unknown command "${command}"\n\n${HELP}`);
  return 1;
}

const code = main(process.argv.slice(2));
if (code instanceof Promise) {
  code.then(
    (c) => {
      process.exitCode = c;
    },
    (e) => {
      console.error(e instanceof Error ? e.message : String(e));
      process.exitCode = 1;
    },
  );
} else {
  process.exitCode = code;
}
