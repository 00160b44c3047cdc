'use strict';
/**
 * The JS commands' arguments, on Node's `util.parseArgs`. Node's strict mode reports a mistake with
 * a message of its own; here the tokens are checked instead, so every message names the argument
 * as the user typed it and the options the command allows. `serve` is not parsed here: its options
 * are the native core's (clap).
 */

const { parseArgs } = require('node:util');

/**
 * @typedef {Record<string, { type: 'string' | 'boolean', short?: string }>} OptionSpecs
 * @typedef {{ values: Record<string, string | boolean | undefined>, positionals: string[] }} Parsed
 */

/**
 * Parses `args` of `command`. `--help` / `-h` anywhere wins over any mistake.
 * @param {string} command  e.g. `gc`, for the messages
 * @param {string[]} args  the words after the command
 * @param {OptionSpecs} options  the options besides --help
 * @param {{ positionals?: readonly string[] }} [o]  the positionals allowed (at most one), if any
 * @returns {Parsed | { help: true } | { error: string }}
 */
function parseCommandArgs(command, args, options, o = {}) {
  const specs = { ...options, help: { type: /** @type {const} */ ('boolean'), short: 'h' } };
  const { values, positionals, tokens } = parseArgs({ args, options: specs, strict: false, allowPositionals: true, tokens: true });
  if (values.help === true) return { help: true };
  const allowed = Object.keys(options).map((name) => `--${name}`);
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const spec = /** @type {Record<string, { type: string } | undefined>} */ (options)[t.name];
    if (!spec) {
      const choices = allowed.length ? `allowed: ${allowed.join(', ')}` : 'it takes no options';
      return { error: `unknown option ${JSON.stringify(t.rawName)} for ${command} (${choices})` };
    }
    if (spec.type === 'string' && (t.value === undefined || t.value === '' || (!t.inlineValue && t.value.startsWith('-')))) {
      return { error: `option ${t.rawName} needs a value` };
    }
    if (spec.type === 'boolean' && t.inlineValue) {
      return { error: `option ${t.rawName} takes no value (got ${JSON.stringify(t.value)})` };
    }
  }
  const allowedPositionals = o.positionals ?? [];
  const extra = positionals.find((p, i) => i >= 1 || !allowedPositionals.includes(p));
  if (extra !== undefined) {
    const expected = allowedPositionals.length ? `expected at most one of ${allowedPositionals.join(', ')}` : 'it takes options only';
    return { error: `unexpected argument ${JSON.stringify(extra)} for ${command}: ${expected}` };
  }
  return { values, positionals };
}

/**
 * A command's arguments parsed; or, when it has printed the usage (`--help`, exit 0) or the mistake
 * (`nx-open-cache <command>: <mistake>`, then the usage when `usageOnError`), its exit code.
 * @param {{ command: string, usage: string, errorCode: number, usageOnError?: boolean,
 *   positionals?: readonly string[], log?: (line: string) => void }} c
 * @param {string[]} args
 * @param {OptionSpecs} options
 * @returns {Parsed | number}
 */
function commandArgs(c, args, options) {
  const parsed = parseCommandArgs(c.command, args, options, { positionals: c.positionals });
  if ('help' in parsed) {
    (c.log ?? ((line) => console.log(line)))(c.usage);
    return 0;
  }
  if ('error' in parsed) {
    console.error(`nx-open-cache ${c.command}: ${parsed.error}${c.usageOnError ? `\n\n${c.usage}` : ''}`);
    return c.errorCode;
  }
  return parsed;
}

module.exports = { parseCommandArgs, commandArgs };
