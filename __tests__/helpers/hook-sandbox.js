'use strict';
// A sandbox for tests that call the plugin hooks in-process: a fresh temp workspace root, the named
// environment variables cleared (and restored afterwards), console.log captured.

const { beforeEach, afterEach } = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/**
 * Registers beforeEach/afterEach hooks and returns the live state they maintain.
 * @param {{ prefix: string, vars: string[], nxJson?: string }} opts
 * @returns {{ root: string, printed: string[] }}
 */
function hookSandbox({ prefix, vars, nxJson }) {
  const state = { root: '', printed: /** @type {string[]} */ ([]) };
  /** @type {Record<string, string | undefined>} */
  let saved = {};
  /** @type {typeof console.log} */
  let realLog = console.log;
  beforeEach(() => {
    state.root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    if (nxJson !== undefined) fs.writeFileSync(path.join(state.root, 'nx.json'), nxJson);
    saved = Object.fromEntries(vars.map((k) => [k, process.env[k]]));
    for (const k of vars) delete process.env[k];
    state.printed = [];
    realLog = console.log;
    console.log = (...args) => state.printed.push(args.join(' '));
  });
  afterEach(() => {
    console.log = realLog;
    for (const k of vars) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    fs.rmSync(state.root, { recursive: true, force: true });
  });
  return state;
}

module.exports = { hookSandbox };
