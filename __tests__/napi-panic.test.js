'use strict';
// No panic crosses the N-API boundary: a panic inside the addon is a JS error (thrown, or a
// rejected promise) and the process goes on. Proven with the test-only exports that panic on
// purpose (`__panicForTest*`, not part of the API, not in index.d.ts), each in a child process so
// that an abort would show as a signal instead of taking the test runner down; then every form
// again in this process, followed by real calls that still work.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

/** @type {any} the test-only exports are not in the typings */
const native = require('../index.js');

const ROOT = path.join(__dirname, '..');

test('the test-only panicking exports exist but are not in the typings', () => {
  for (const name of ['__panicForTest', '__panicForTestAsync', '__panicForTestFuture']) {
    assert.equal(typeof native[name], 'function', name);
  }
  const dts = require('node:fs').readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8');
  assert.ok(!dts.includes('panicForTest'), 'hidden from index.d.ts');
});

for (const [form, call] of [
  ['sync', "try { n.__panicForTest('planted panic'); console.log('NO ERROR') } catch (e) { console.log('caught', e instanceof Error, e.message) }"],
  ['AsyncTask (libuv pool)', "n.__panicForTestAsync('planted panic').then(() => console.log('NO ERROR'), (e) => console.log('caught', e instanceof Error, e.message))"],
  ['async fn (tokio task)', "n.__panicForTestFuture('planted panic').then(() => console.log('NO ERROR'), (e) => console.log('caught', e instanceof Error, e.message))"],
]) {
  test(`a panic in the ${form} form is a JS error and the process lives on`, () => {
    const script = `const n = require(${JSON.stringify(path.join(ROOT, 'index.js'))});
${call};
setTimeout(() => console.log('alive', n.hashArray(['a', 'b'])), 50);`;
    const r = spawnSync(process.execPath, ['-e', script], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, RUST_BACKTRACE: '0' },
    });
    const shown = `status=${r.status} signal=${r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
    assert.equal(r.signal, null, `the process was killed: ${shown}`);
    assert.equal(r.status, 0, shown);
    assert.match(r.stdout, /^caught true /m, shown);
    assert.ok(!r.stdout.includes('NO ERROR'), shown);
    assert.match(r.stdout, new RegExp(`^alive ${native.hashArray(['a', 'b'])}$`, 'm'), shown);
    if (form !== 'async fn (tokio task)') assert.match(r.stdout, /^caught true planted panic$/m, shown);
  });
}

test('in this process too: every form, repeatedly, then real calls still work', async () => {
  for (let i = 0; i < 3; i += 1) {
    assert.throws(() => native.__panicForTest(`sync ${i}`), (e) => e instanceof Error && e.message === `sync ${i}`);
    await assert.rejects(native.__panicForTestAsync(`async ${i}`), (e) => e instanceof Error && e.message === `async ${i}`);
    await assert.rejects(native.__panicForTestFuture(`future ${i}`), (e) => e instanceof Error);
  }
  assert.equal(native.hashArray(['x']), await native.hashArrayAsync(['x']));
  assert.equal(typeof native.keygen().publicKey, 'string');
});
