'use strict';
/**
 * `nx-open-cache why --against <hash>` across machines, through the real plugin on a real Nx
 * workspace (nx 24): "machine A" (CI) builds and stores every task with its artifact metadata in an
 * fs cache; "machine B" (a teammate: no history, no Nx cache) changes one file of lib-b and builds.
 * B's history has no earlier run of lib-b:build, so `why` alone has nothing to compare with; with
 * the hash A's log shows, `why` fetches the metadata beside A's artifact from the cache and names
 * the file.
 *
 * Needs the run history and artifact metadata (lib/history.js, lib/meta.js): skipped, saying so,
 * in a build without them.
 */

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { createWorkspace, disposePack } = require('./helpers/nx-workspace.js');
const { whyCommand } = require('../lib/why.js');

const HAS_META = fs.existsSync(path.join(__dirname, '..', 'lib', 'meta.js')) && fs.existsSync(path.join(__dirname, '..', 'lib', 'history.js'));
const OFF = { NX_DAEMON: 'false', NX_OPEN_CACHE_HOST: 'off' };

/** @type {import('./helpers/nx-workspace.js').NxWorkspace} */
let ws;

before(async () => {
  if (HAS_META) ws = await createWorkspace();
});

after(async () => {
  if (ws) await ws.dispose();
  disposePack();
});

/**
 * `why` in this process, its output captured.
 * @param {string[]} args
 */
async function why(args) {
  /** @type {string[]} */ const out = [];
  /** @type {string[]} */ const err = [];
  const { log, error } = console;
  console.log = (/** @type {unknown[]} */ ...a) => { out.push(a.join(' ')); };
  console.error = (/** @type {unknown[]} */ ...a) => { err.push(a.join(' ')); };
  try {
    const code = await whyCommand(ws.root, args);
    return { code, stdout: out.join('\n'), stderr: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
  }
}

test('an artifact CI stored explains a teammate\'s miss: why --against <hash> reads its metadata from the cache', { skip: HAS_META ? false : 'no lib/meta.js in this build (artifact metadata comes with the run history)' }, async () => {
  const store = ws.newStorePath('ci');
  ws.setPluginOptions({ backend: 'fs', path: store });
  const historyDir = path.join(ws.root, '.nx', 'workspace-data', 'nx-open-cache', 'history');
  // Machine A.
  const a = await ws.runBuild({ env: OFF });
  assert.equal(a.code, 0, a.output);
  const runsA = fs.readdirSync(path.join(historyDir, 'runs'));
  assert.equal(runsA.length, 1);
  const recordA = JSON.parse(fs.readFileSync(path.join(historyDir, 'runs', runsA[0]), 'utf8'));
  const libB = recordA.tasks.find((/** @type {any} */ t) => t.id === 'lib-b:build');
  assert.equal(libB.outcome, 'stored', JSON.stringify(libB));
  // Machine B: nothing local (daemon off: nothing holds .nx), one file of lib-b changed.
  fs.rmSync(path.join(ws.root, '.nx'), { recursive: true, force: true });
  ws.cleanOutputs();
  fs.writeFileSync(path.join(ws.root, 'packages/lib-b/src/index.txt'), 'source of lib-b, edited on machine B\n');
  const b = await ws.runBuild({ env: OFF });
  assert.equal(b.code, 0, b.output);
  const alone = await why(['lib-b:build']);
  assert.equal(alone.code, 1);
  assert.match(alone.stderr, /no earlier run in the history \(0 before it\) has an artifact of lib-b:build/);
  const r = await why(['lib-b:build', '--against', libB.hash]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /compared with the artifact stored by \S+ at \S+ in run \S+ \(hash \d+, from its metadata\)/);
  assert.match(r.stdout, /1\. files of lib-b changed:\n\s+changed\s+packages\/lib-b\/src\/index\.txt/);
  const j = JSON.parse((await why(['lib-b:build', '--against', libB.hash, '--json'])).stdout);
  assert.equal(j.baseline.source, 'meta');
  assert.deepEqual(j.causes.map((/** @type {any} */ c) => c.kind), ['files']);
  // The plugin's metadata says which file lists it could not check (`inexact`): this one was checked.
  assert.ok(!j.notes.some((/** @type {string} */ n) => /written by an older nx-open-cache/.test(n)), j.notes.join('\n'));
  assert.deepEqual(j.causes[0].files, { added: [], removed: [], changed: ['packages/lib-b/src/index.txt'], exact: true });
});
