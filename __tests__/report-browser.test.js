'use strict';
// The HTML report in a real browser: headless Chromium from Debian (/usr/bin/chromium, installed by
// `node scripts/system-deps.js`) driven by playwright-core. The page is loaded from the file the
// command writes; the rendered numbers are checked against the history; every request the page
// makes is recorded and refused, and there must be none besides the file itself; a history with
// hostile strings runs no script. Screenshots: docs/images/report.png (the whole page) and
// docs/images/report-top.png (its first screen, for the README).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { syntheticHistory, writeHistory, expectedFigures } = require('./helpers/report-history.js');
const { reportCommand } = require('../lib/report.js');
const { formatDuration } = require('../lib/report/model.js');

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const IMAGES = path.join(__dirname, '..', 'docs', 'images');
/** A fixed "now", so that the screenshot does not change from one run to the next. */
const NOW = new Date('2026-11-26T18:00:00Z');

/** playwright-core, or why the browser test cannot run here. */
function browserOrReason() {
  if (!fs.existsSync(CHROMIUM)) return { reason: `${CHROMIUM} is missing (\`node scripts/system-deps.js\` installs the Debian package chromium)` };
  try {
    return { chromium: require('playwright-core').chromium };
  } catch {
    return { reason: 'playwright-core is not installed (`npm install`)' };
  }
}

/** @type {string[]} */
const temps = [];
test.after(() => {
  for (const d of temps) fs.rmSync(d, { recursive: true, force: true });
});

/**
 * A workspace named `acme-shop` with `runs` in its history, and its report written by the command.
 * @param {any[]} runs
 */
async function reportOf(runs) {
  const temp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-report-browser-'));
  temps.push(temp);
  const root = path.join(temp, 'acme-shop');
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, 'nx.json'), '{}');
  writeHistory(path.join(root, '.nx', 'workspace-data', 'nx-open-cache'), runs);
  const out = path.join(root, 'report.html');
  const log = console.log;
  console.log = () => {};
  try {
    assert.equal(await reportCommand(['--out', out], root, { now: NOW, env: {} }), 0);
  } finally {
    console.log = log;
  }
  return out;
}

/**
 * Opens `file` in a fresh context that refuses every request but the file's own, and records them.
 * @param {any} browser
 * @param {string} file
 */
async function open(browser, file) {
  const url = pathToFileURL(file).href;
  const context = await browser.newContext({ viewport: { width: 1200, height: 1000 }, deviceScaleFactor: 1, javaScriptEnabled: true });
  /** @type {string[]} */
  const requests = [];
  /** @type {string[]} */
  const refused = [];
  /** @type {string[]} */
  const consoleErrors = [];
  context.on('request', (/** @type {any} */ r) => requests.push(r.url()));
  await context.route('**/*', (/** @type {any} */ route) => {
    if (route.request().url() === url) return route.continue();
    refused.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  page.on('console', (/** @type {any} */ m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  return { page, context, url, requests, refused, consoleErrors };
}

test('the report in headless Chromium: numbers, no network, no script from the history, screenshots', { timeout: 180_000 }, async (t) => {
  const found = browserOrReason();
  if (!found.chromium) {
    assert.ok(!process.env.CI, `${found.reason}`);
    t.skip(found.reason);
    return;
  }
  const browser = await found.chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 });
  try {
    await t.test('the rendered numbers are the history\'s', async () => {
      const runs = syntheticHistory();
      const want = expectedFigures(runs);
      const { page, context, url, requests, refused, consoleErrors } = await open(browser, await reportOf(runs));
      const card = async (/** @type {string} */ key) => (await page.locator(`[data-total="${key}"] .value`).textContent())?.trim();
      assert.equal(await card('hit-rate'), `${((want.hits / want.lookups) * 100).toFixed(1)}%`);
      assert.equal(await card('saved'), formatDuration(want.savedMs));
      assert.equal(await card('runs'), String(runs.length));
      assert.equal(await card('hits'), String(want.hits));
      assert.equal(await card('misses'), String(want.lookups - want.hits));
      for (const [name, p] of want.projects) {
        const row = page.locator(`table[data-table="projects"] tr[data-project="${name}"]`);
        assert.equal(await row.locator('td.hits').textContent(), String(p.hits), `${name} hits`);
        assert.equal(await row.locator('td.misses').textContent(), String(p.misses), `${name} misses`);
        assert.equal(await row.locator('td.saved').textContent(), formatDuration(p.savedMs), `${name} saved`);
        const rate = p.hits + p.misses ? (p.hits / (p.hits + p.misses)) * 100 : 0;
        assert.equal(await row.locator('.hit-rate').textContent(), rate === 100 ? '100%' : `${rate.toFixed(1)}%`, `${name} hit rate`);
      }
      // One point per run in the hit rate chart, drawn (non-zero size) by the browser.
      assert.equal(await page.locator('svg[data-chart="hit-rate"] circle').count(), runs.length);
      const box = await page.locator('svg[data-chart="hit-rate"]').boundingBox();
      assert.ok(box && box.width > 900 && box.height > 200, JSON.stringify(box));
      // The tasks that miss most, first the one with most misses in the history.
      /** @type {Map<string, number>} */
      const misses = new Map();
      for (const r of runs) for (const tk of r.tasks) if (!['remote-hit', 'local-hit', 'not-run'].includes(tk.outcome)) misses.set(tk.id, (misses.get(tk.id) ?? 0) + 1);
      const most = Math.max(...misses.values());
      const firstRow = page.locator('table[data-table="misses"] tbody tr').first();
      assert.equal(await firstRow.locator('td.misses').textContent(), `${most} / ${runs.length}`);
      assert.equal(misses.get(/** @type {string} */ (await firstRow.getAttribute('data-task'))), most);

      assert.deepEqual(requests, [url], 'the page requested nothing but itself');
      assert.deepEqual(refused, []);
      assert.deepEqual(consoleErrors, [], 'no blocked load, no error');

      fs.mkdirSync(IMAGES, { recursive: true });
      await page.screenshot({ path: path.join(IMAGES, 'report.png'), fullPage: true });
      await page.screenshot({ path: path.join(IMAGES, 'report-top.png'), clip: { x: 0, y: 0, width: 1200, height: 1000 } });
      await context.close();
    });

    await t.test('hostile strings in the history run nothing and load nothing', async () => {
      const hostile = '<script>window.__pwned=1</script><img src="http://127.0.0.1:9/x.png" onerror="window.__pwned=2">';
      const runs = syntheticHistory({ runs: 3 });
      for (const r of runs) {
        r.command = `${hostile} run-many`;
        r.cache.errors = [{ reason: `<iframe src="http://127.0.0.1:9/"></iframe>${hostile}`, count: 1 }];
        r.tasks[0] = { ...r.tasks[0], id: `${hostile}:build`, project: `<style>body{background:url(http://127.0.0.1:9/bg)}</style>`, outcome: 'refused', reason: hostile };
      }
      const { page, context, url, requests, refused, consoleErrors } = await open(browser, await reportOf(runs));
      assert.equal(await page.evaluate(() => /** @type {any} */ (globalThis).__pwned), undefined, 'no script ran');
      assert.equal(await page.locator('script, img, iframe').count(), 0);
      const text = /** @type {string} */ (await page.locator('body').textContent());
      // Long ids are cut in the tables, whole in the tooltip and the row's data attribute.
      const id = `${hostile}:build`;
      assert.ok(text.includes(id.slice(0, 47)), 'the task id is shown as text');
      const whole = await page.evaluate((/** @type {string} */ s) => [.../** @type {any} */ (globalThis).document.querySelectorAll('[title], [data-task]')]
        .filter((/** @type {any} */ e) => e.getAttribute('title') === s || e.getAttribute('data-task') === s).length, id);
      assert.ok(whole >= 2, `the whole id in ${whole} attributes`);
      assert.ok(text.includes('<iframe src="http://127.0.0.1:9/"></iframe>'), 'the reason is shown as text');
      assert.deepEqual(requests, [url]);
      assert.deepEqual(refused, []);
      assert.deepEqual(consoleErrors, []);
      await context.close();
    });
  } finally {
    await browser.close();
  }
});
