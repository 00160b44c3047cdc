'use strict';
/**
 * The dashboard of `serve` (/ui) in a real browser: headless Chromium from Debian
 * (/usr/bin/chromium, scripts/system-deps.js) driven by playwright-core. A serve on 127.0.0.1
 * (fs storage) gets uploads, reads and a run report; the page is opened, the admin token entered,
 * and the numbers it renders are checked against /ui/api/summary and /metrics; no request leaves
 * the server's origin and the policy blocks nothing. serve is restarted on the same storage and
 * the counts come back from the snapshot. Saves a screenshot (docs/images/ui.png with
 * NX_OPEN_CACHE_TEST_SCREENSHOTS=1).
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, after } = require('node:test');
const { startServe, serveEnv, request, metric, REPO_ROOT } = require('./helpers/serve-process.js');
const { nxArtifact } = require('./helpers/hostile-tar.js');

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// The README's picture only on request (its clock and counts change every run): otherwise a temp file.
const SCREENSHOT = process.env.NX_OPEN_CACHE_TEST_SCREENSHOTS === '1'
  ? path.join(REPO_ROOT, 'docs', 'images', 'ui.png')
  : path.join(os.tmpdir(), `nx-open-cache-ui-${process.pid}.png`);
after(() => {
  if (process.env.NX_OPEN_CACHE_TEST_SCREENSHOTS !== '1') fs.rmSync(SCREENSHOT, { force: true });
});

/** @type {any} */
let playwright = null;
try {
  playwright = require('playwright-core');
} catch {
  playwright = null;
}
const missing = !playwright ? 'playwright-core is not installed (npm ci)' : !fs.existsSync(CHROMIUM) ? `${CHROMIUM} is missing (node scripts/system-deps.js)` : '';

const RW = `rw-${crypto.randomBytes(12).toString('hex')}`;
const ADMIN = `admin-${crypto.randomBytes(12).toString('hex')}`;
const dirs = /** @type {string[]} */ ([]);
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** @param {string} text */
const int = (text) => Number(text.replace(/,/g, ''));

/**
 * @param {string} base
 * @param {string} token
 */
async function summary(base, token) {
  const r = await request(`${base}/ui/api/summary?range=1h`, { token });
  assert.equal(r.status, 200, r.body.toString());
  return JSON.parse(r.body.toString());
}

/**
 * Opens /ui in `browser`, signs in with `token`, and returns the page and every URL it requested.
 * @param {any} browser
 * @param {string} base
 * @param {string} token
 */
async function openDashboard(browser, base, token) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  /** @type {string[]} */ const urls = [];
  /** @type {string[]} */ const problems = [];
  page.on('request', (/** @type {any} */ r) => urls.push(r.url()));
  page.on('console', (/** @type {any} */ m) => {
    // The first summary request, made before the token is asked for, is answered 401 (expected).
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (/** @type {any} */ e) => problems.push(String(e)));
  await page.goto(`${base}/ui`);
  await page.waitForSelector('#login:not(.hidden)', { timeout: 30_000 });
  await page.fill('#token', token);
  await page.click('#loginform button');
  await page.waitForSelector('body[data-loaded]', { timeout: 30_000 });
  return { context, page, urls, problems };
}

test('the dashboard shows the server\'s counts in Chromium and keeps them across a restart', { skip: missing || false, timeout: 180_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-ui-'));
  dirs.push(dir);
  const env = serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${RW},lead:admin:${ADMIN}` });
  const args = ['--storage', `fs:${dir}/store`, '--log', 'off', '--max-size', '256MiB'];
  let s = await startServe(args, { env });
  const browser = await playwright.chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    // Traffic: uploads of a few sizes, reads (hits and a miss), a refused upload, a run report.
    const projects = ['app-shell', 'feature-cart', 'feature-search', 'ui-kit', 'data-access', 'utils'];
    /** @type {{ id: string, hash: string, outcome: string, durationMs: number, savedMs?: number, bytes?: number }[]} */
    const tasks = [];
    let n = 0;
    for (const [i, p] of projects.entries()) {
      for (const [t, target] of ['build', 'test', 'lint'].entries()) {
        const hash = String(7_000_000_000 + (n++));
        const size = 2048 * (i + 1) * (target === 'build' ? 8 : 1);
        const body = nxArtifact({ [`dist/${p}/${target}.bin`]: crypto.randomBytes(size) }, { level: 0 });
        const put = await request(`${s.url}/v1/cache/${hash}`, { method: 'PUT', token: RW, body });
        assert.equal(put.status, 200);
        const reads = (i + t) % 4;
        for (let r = 0; r < reads; r++) assert.equal((await request(`${s.url}/v1/cache/${hash}`, { token: RW })).status, 200);
        const hit = reads > 0;
        tasks.push({
          id: `${p}:${target}`, hash, outcome: hit ? 'remote-hit' : 'stored',
          durationMs: hit ? 120 : 4000 + 1000 * i, ...(hit ? { savedMs: 3800 + 1000 * i, bytes: body.length } : { bytes: body.length }),
        });
      }
    }
    for (const h of ['123456', '123459', '123460', '123461']) assert.equal((await request(`${s.url}/v1/cache/${h}`, { token: RW })).status, 404);
    assert.equal((await request(`${s.url}/v1/cache/123457`, { method: 'PUT', token: RW, body: Buffer.from('not an artifact') })).status, 400);
    assert.equal((await request(`${s.url}/v1/cache/123458`)).status, 401);
    const report = {
      format: 'nx-open-cache-run-report', version: 1, runId: 'ui-test-run-1',
      startedAt: new Date(Date.now() - 60_000).toISOString(), endedAt: new Date().toISOString(),
      nxVersion: '24.0.6', command: 'run-many -t build test lint', tasks,
    };
    const posted = await request(`${s.url}/nx-open-cache/v1/runs`, {
      method: 'POST', token: RW, body: Buffer.from(JSON.stringify(report)), headers: { 'content-type': 'application/json' },
    });
    assert.equal(posted.status, 200, posted.body.toString());

    const { context, page, urls, problems } = await openDashboard(browser, s.url, ADMIN);
    // Switch to the last hour (per-minute bars) for the numbers and the picture.
    await page.click('#ranges button[data-range="1h"]');
    await page.waitForSelector('#ranges button.on[data-range="1h"]', { timeout: 30_000 });
    const api = await summary(s.url, ADMIN);
    const metrics = (await request(`${s.url}/metrics`)).body.toString();
    const kpi = async (/** @type {string} */ k) => page.textContent(`[data-value="${k}"]`);
    const c = api.totals.counts;
    assert.equal(int(await kpi('hits')), c.hits);
    assert.equal(int(await kpi('misses')), c.misses);
    assert.equal(int(await kpi('stored')), c.stored);
    assert.equal(int(await kpi('refused')), c.refused);
    assert.equal(c.hits, metric(metrics, 'nx_open_cache_hits_total'));
    assert.equal(c.misses, metric(metrics, 'nx_open_cache_misses_total'));
    assert.equal(c.stored, metric(metrics, 'nx_open_cache_stored_total'));
    assert.equal(c.stored, 18);
    assert.ok(c.hits > 0);
    assert.equal(await kpi('hitRate'), `${(api.totals.hitRate * 100).toFixed(1)}%`);
    // The tasks table: one row per project:target of the report, with its hits and misses.
    /** @type {string[][]} */
    const rows = await page.$$eval('#tasks tbody tr', (/** @type {any[]} */ trs) =>
      trs.map((tr) => Array.from(/** @type {any[]} */ (tr.children)).map((td) => td.textContent)));
    assert.equal(rows.length, 18);
    for (const t of api.tasks) {
      const row = rows.find((r) => r[0] === t.id);
      assert.ok(row, t.id);
      assert.deepEqual([int(row[2]), int(row[3])], [t.hits, t.misses], t.id);
    }
    // Storage used vs its limit (the size budget of --max-size), as the API says.
    const storage = await page.textContent('[data-storage="used"]');
    if (api.storage.usedBytes !== null) assert.match(storage || '', / used of 256 MiB /);
    else assert.match(storage || '', /not measured yet/);
    assert.equal(api.storage.maxBytes, 256 * 1024 * 1024);
    // Refusal reasons rendered as text (the reason quotes what the client sent).
    const reasons = await page.textContent('#reasons');
    assert.match(reasons || '', /not a valid Nx artifact/);
    // The token stays out of URLs; every request stayed on the server's origin; no CSP report.
    const origin = new URL(s.url).origin;
    assert.ok(urls.length >= 2);
    for (const u of urls) {
      assert.equal(new URL(u).origin, origin, u);
      assert.ok(!u.includes(ADMIN), u);
    }
    assert.deepEqual(problems, []);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('nx-open-cache-ui-token')), ADMIN);
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    await context.close();

    // A graceful stop writes the snapshot; a restart on the same storage shows the same counts.
    const stopped = await s.stop();
    assert.equal(stopped.code, 0);
    s = await startServe(args, { env });
    const again = await summary(s.url, ADMIN);
    assert.deepEqual(again.totals, api.totals);
    assert.deepEqual(again.tasks, api.tasks);
    assert.deepEqual(again.artifacts, api.artifacts);
    assert.ok(again.snapshot.loadedFrom > 0);
    assert.equal(metric((await request(`${s.url}/metrics`)).body.toString(), 'nx_open_cache_hits_total'), 0);
    const second = await openDashboard(browser, s.url, ADMIN);
    assert.equal(int((await second.page.textContent('[data-value="hits"]')) || ''), c.hits);
    await second.context.close();
  } finally {
    await browser.close();
    await s.stop();
  }
});

test('without a token the page asks for one and the API answers 401', { skip: missing || false, timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-ui-'));
  dirs.push(dir);
  const env = serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${RW},lead:admin:${ADMIN}` });
  const s = await startServe(['--storage', `fs:${dir}/store`, '--log', 'off'], { env });
  const browser = await playwright.chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    assert.equal((await request(`${s.url}/ui/api/summary`)).status, 401);
    assert.equal((await request(`${s.url}/ui/api/summary`, { token: RW })).status, 403);
    const page = await browser.newPage();
    await page.goto(`${s.url}/ui`);
    await page.waitForSelector('#login:not(.hidden)', { timeout: 30_000 });
    await page.fill('#token', RW);
    await page.click('#loginform button');
    await page.waitForSelector('#loginmsg:not(:empty)', { timeout: 30_000 });
    assert.equal(await page.textContent('#loginmsg'), 'This token is not an admin token.');
    assert.equal(await page.isHidden('#main'), true);
  } finally {
    await browser.close();
    await s.stop();
  }
});
