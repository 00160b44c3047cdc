'use strict';
// Absurd numbers through the real entry points: every one is an error naming the option, the
// value and the allowed range, never a panic (which would abort the process: Nx then reports
// "Plugin worker exited unexpectedly"). resolveConfig, CacheProxy.start and doctor with timeouts
// and the artifact check's bounds from nx.json options and from the environment; gc's maxSize /
// maxAge. (pack's code, level and
// threads: archive.test.js.)

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const native = require('../index.js');

const BASE_ENV = { HOME: os.tmpdir() };
const RANGE = /between 1 s and 1 h/;

/** Values of the timeout variables and string options. */
const STRINGS = ['1e300', '99999999999999999999', '1e309', '-1e309', '-5', '0', 'NaN', 'Infinity', '-Infinity', 'inf', '3601', '99999999999999999999999w'];
/** Values of the timeout options as JS numbers (what JSON.parse gives for nx.json), as shown. */
const NUMBERS = /** @type {[number, string][]} */ ([
  [1e300, '1e+300'],
  [Number.MAX_VALUE, '1.7976931348623157e+308'],
  [JSON.parse('{"t": 1e309}').t, 'Infinity'],
  [-Infinity, '-Infinity'],
  [NaN, 'NaN'],
  [-1, '-1'],
  [0, '0'],
  [0.5, '0.5'],
  [7200, '7200'],
  [2 ** 64, '1.8446744073709552e+19'],
]);

/** @param {unknown} e @param {string} option @param {string} value */
function namesAll(e, option, value) {
  assert.ok(e instanceof Error);
  assert.equal(/** @type {any} */ (e).code, 'InvalidArg', e.message);
  assert.ok(e.message.includes(`option "${option}"`), e.message);
  assert.ok(e.message.includes(value), `${value}: ${e.message}`);
  assert.match(e.message, RANGE);
  return true;
}

test('resolveConfig: absurd timeouts from the environment and from options are errors naming option, value and range', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-numbers-'));
  try {
    for (const [option, variable] of [
      ['timeout', 'NX_OPEN_CACHE_TIMEOUT'],
      ['connectTimeout', 'NX_OPEN_CACHE_CONNECT_TIMEOUT'],
    ]) {
      for (const v of STRINGS) {
        assert.throws(() => native.resolveConfig(root, {}, { ...BASE_ENV, [variable]: v }), (e) => namesAll(e, option, JSON.stringify(v)));
        assert.throws(() => native.resolveConfig(root, { [option]: v }, BASE_ENV), (e) => namesAll(e, option, JSON.stringify(v)));
      }
      for (const [n, value] of NUMBERS) {
        assert.throws(() => native.resolveConfig(root, { [option]: n }, BASE_ENV), (e) => namesAll(e, option, value));
        assert.throws(() => native.CacheProxy.start(root, { [option]: n }, BASE_ENV), (e) => namesAll(e, option, value));
        assert.throws(() => native.doctor(root, { [option]: n }, BASE_ENV), (e) => namesAll(e, option, value));
      }
    }
    // In range, they work.
    const c = native.resolveConfig(root, { timeout: 3600, connectTimeout: '1s' }, BASE_ENV);
    assert.equal(c.backend, 'fs');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('resolveConfig, CacheProxy.start, doctor: absurd artifact-check bounds are errors naming option, value and form', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-numbers-'));
  try {
    const numbers = NUMBERS.filter(([n]) => !Number.isSafeInteger(n) || n <= 0);
    const strings = [...STRINGS.filter((v) => v !== '3601'), '1.5', '0B'];
    /** @param {unknown} e @param {string} option @param {string} value */
    const named = (e, option, value) => {
      assert.ok(e instanceof Error);
      assert.equal(/** @type {any} */ (e).code, 'InvalidArg', e.message);
      assert.ok(e.message.includes(`invalid value ${value} for option "${option}"`), `${value}: ${e.message}`);
      assert.match(e.message, /expected (a whole number from 1 to|a size such as)/);
      return true;
    };
    for (const [option, variable] of [
      ['maxArtifactEntries', 'NX_OPEN_CACHE_MAX_ARTIFACT_ENTRIES'],
      ['maxExpandedSize', 'NX_OPEN_CACHE_MAX_EXPANDED_SIZE'],
      ['maxExpansionRatio', 'NX_OPEN_CACHE_MAX_EXPANSION_RATIO'],
    ]) {
      // A size needs its unit: a bare 32 is not 32 bytes.
      for (const v of option === 'maxExpandedSize' ? [...strings, '32'] : strings) {
        assert.throws(() => native.resolveConfig(root, {}, { ...BASE_ENV, [variable]: v }), (e) => named(e, option, JSON.stringify(v)));
        assert.throws(() => native.resolveConfig(root, { [option]: v }, BASE_ENV), (e) => named(e, option, JSON.stringify(v)));
      }
      // Shown as JavaScript prints them (2 ** 64 as 18446744073709552000).
      for (const value of numbers.map(([n]) => String(n))) {
        const n = Number(value);
        assert.throws(() => native.resolveConfig(root, { [option]: n }, BASE_ENV), (e) => named(e, option, value));
        assert.throws(() => native.CacheProxy.start(root, { [option]: n }, BASE_ENV), (e) => named(e, option, value));
        assert.throws(() => native.doctor(root, { [option]: n }, BASE_ENV), (e) => named(e, option, value));
      }
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('doctorAsync refuses an absurd timeout before any work, naming it', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-numbers-'));
  try {
    const attempt = async () => native.doctorAsync(root, { connectTimeout: Number.MAX_VALUE }, BASE_ENV);
    await assert.rejects(attempt, (e) => namesAll(e, 'connectTimeout', '1.7976931348623157e+308'));
    await assert.rejects(
      async () => native.doctorAsync(root, {}, { ...BASE_ENV, NX_OPEN_CACHE_TIMEOUT: '1e300' }),
      (e) => namesAll(e, 'timeout', '"1e300"'),
    );
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('gc: absurd maxSize / maxAge are errors naming the option and the value, never a panic', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-numbers-gc-'));
  try {
    /** @type {[Record<string, unknown>, RegExp][]} */
    const cases = [
      [{ maxSize: 2 ** 64 }, /invalid value 18446744073709552000 for maxSize: expected a whole number from 0 to 18446744073709551615/],
      [{ maxSize: -1 }, /invalid value -1 for maxSize/],
      [{ maxSize: 1.5 }, /invalid value 1\.5 for maxSize/],
      [{ maxSize: NaN }, /invalid value NaN for maxSize/],
      [{ maxSize: Infinity }, /invalid value Infinity for maxSize/],
      [{ maxAge: Number.MAX_VALUE }, /invalid value 1\.7976931348623157e\+308 for maxAge/],
      [{ maxAge: -Infinity }, /invalid value -Infinity for maxAge/],
      [{ maxSize: '1e309GiB' }, /invalid value "1e309GiB" for maxSize/],
      [{ maxSize: '99999999999999999999999TiB' }, /invalid value "99999999999999999999999TiB" for maxSize: too large/],
      [{ maxSize: '-1GiB' }, /invalid value "-1GiB" for maxSize/],
      [{ maxSize: 'NaNB' }, /invalid value "NaNB" for maxSize/],
      [{ maxAge: '99999999999999999999999w' }, /invalid value "99999999999999999999999w" for maxAge: too large/],
      [{ maxAge: '1e300s' }, /invalid value "1e300s" for maxAge/],
      [{ maxAge: 'Infinityd' }, /invalid value "Infinityd" for maxAge/],
    ];
    for (const [extra, expected] of cases) {
      const options = { path: root, dryRun: true, ...extra };
      assert.throws(() => native.gc(options), (/** @type {any} */ e) => e.code === 'InvalidArg' && expected.test(e.message), JSON.stringify(extra));
      await assert.rejects(native.gcAsync(options), expected, JSON.stringify(extra));
    }
    // The largest values that fit are accepted.
    const report = native.gc({ path: root, dryRun: true, maxSize: Number.MAX_SAFE_INTEGER, maxAge: '1000000w' });
    assert.equal(report.dryRun, true);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('formatBytes: binary units, one decimal at most; absurd numbers are errors naming the value', () => {
  assert.equal(native.formatBytes(0), '0 B');
  assert.equal(native.formatBytes(1536), '1.5 KiB');
  assert.equal(native.formatBytes(4 * 2 ** 30), '4 GiB');
  assert.equal(native.formatBytes(2 ** 20 - 1), '1 MiB');
  for (const [n, shown] of /** @type {[number, string][]} */ ([[-1, '-1'], [1.5, '1.5'], [NaN, 'NaN'], [Infinity, 'Infinity']])) {
    assert.throws(() => native.formatBytes(n), (/** @type {Error} */ e) => e.message.includes(`invalid value ${shown} for bytes`));
  }
});

test('optionSchema: every option, with the backends it applies to, as resolveConfig checks them', () => {
  const schema = native.optionSchema();
  assert.deepEqual(schema.backends, ['fs', 's3', 'gcs', 'azure', 'http']);
  assert.deepEqual(schema.modes, ['read-write', 'read-only', 'no-cache']);
  const byName = new Map(schema.options.map((o) => [o.name, o]));
  assert.deepEqual(byName.get('path'), {
    name: 'path', type: 'string', accepts: ['string'], backends: ['fs'], default: '~/.cache/nx-open-cache',
    choices: [], description: byName.get('path')?.description,
  });
  assert.equal(byName.get('timeout')?.env, 'NX_OPEN_CACHE_TIMEOUT');
  assert.equal(byName.get('maxArtifactEntries')?.default, 1000000);
  assert.deepEqual(byName.get('localMode')?.choices, schema.modes);
  // An option outside its backends is refused by name.
  for (const o of schema.options) {
    if (o.backends.includes('all')) continue;
    const other = schema.backends.find((b) => !o.backends.includes(b));
    if (!other) continue;
    const minimal = /** @type {Record<string, Record<string, unknown>>} */ ({
      fs: {}, s3: { bucket: 'b' }, gcs: { bucket: 'b' }, azure: { container: 'c' }, http: { url: 'https://h' },
    })[other];
    assert.throws(
      () => native.resolveConfig(os.tmpdir(), { backend: other, ...minimal, [o.name]: o.type === 'boolean' ? true : 'x' }, BASE_ENV),
      (/** @type {Error} */ e) => e.message.includes(`"${o.name}"`) && e.message.includes(`backend "${other}"`),
      `${o.name} with ${other}`,
    );
  }
});
