'use strict';
/**
 * OIDC identity end to end: `nx-open-cache serve --config server.toml` with `[[oidc_issuers]]` and
 * `[[oidc_rules]]`, local OIDC issuers on 127.0.0.1 with real keys made per run
 * (helpers/oidc-issuer.js), and a stand-in for GitHub Actions' ID-token endpoint. Nothing leaves
 * the machine.
 *
 * - A real Nx workspace (nx from npm, nx-open-cache from `npm pack`) through the plugin's `http`
 *   backend: main (NX_OPEN_CACHE_TOKEN = a JWT) stores in trusted/; a PR (the GitHub stand-in via
 *   ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN + NX_OPEN_CACHE_OIDC_AUDIENCE) restores main's artifacts and
 *   writes in pr/; main with the PR's change never restores the PR's artifacts (it rebuilds); main
 *   restores its own. A run longer than the tokens' lifetime (5 s) keeps every write: the plugin
 *   fetched fresh tokens. A wrong request token is a store fault, never a broken build.
 * - Direct HTTP against serve (GET/PUT /v1/cache/<hash>, Authorization: Bearer <jwt>): RS256, ES256
 *   and EdDSA accepted; expired, not yet valid, issued in the future, no exp, wrong audience, wrong
 *   issuer, lifetime above max_lifetime, alg none, HS256 keyed with the RSA public key, a tampered
 *   payload, an alg the issuer does not allow: 401 `nx-open-cache: OIDC token refused: <reason>`
 *   that never holds the token. Other repositories: a deny rule and no rule (401), a read-only
 *   rule (GET yes, PUT 403). Key rotation (a new kid is fetched and accepted; further unknown kids
 *   within the minute are refused without a fetch), the JWKS down (cached keys keep working; an
 *   issuer whose keys were never fetched: 401 saying so), keys from a file (never fetched), static
 *   tokens beside OIDC.
 * - `--explain-token` (argument and stdin, both entry points): the matching rule shown, the token
 *   never printed, exit 0 accepted / 1 refused / 2 config mistake.
 *
 * Run: node --test --test-concurrency=1 __tests__/oidc.e2e.test.js
 * Needs a native build (`node scripts/ensure-native.js`) and npm (nx from the registry cache); the
 * binary case builds target/release/nx-open-cache-server when it is missing or stale.
 */

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const { startIssuer, decode, nowSeconds } = require('./helpers/oidc-issuer.js');
const { serveEnv, startServe, request, serveCommand, withTimeout } = require('./helpers/serve-process.js');
const { createWorkspace, disposePack, storeObjects, isRemoteHit, summaryLines } = require('./helpers/nx-workspace.js');
const { nxArtifact } = require('./helpers/hostile-tar.js');

/** @typedef {import('./helpers/oidc-issuer.js').Issuer} Issuer */
/** @typedef {import('./helpers/serve-process.js').ServeProcess} ServeProcess */
/** @typedef {import('./helpers/serve-process.js').Reply} Reply */
/** @typedef {import('./helpers/nx-workspace.js').NxWorkspace} NxWorkspace */
/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** The audience the server expects (its URL, in real life). */
const AUD = 'https://cache.nx-open-cache.test';
const REPO = 'acme/monorepo';
/** A static token beside OIDC. */
const OPS_SECRET = `ops-${crypto.randomBytes(12).toString('hex')}`;
/** Nothing may reach a cloud credential chain. */
const NO_CLOUD = { AWS_METADATA_ENDPOINT: 'http://127.0.0.1:9', AWS_EC2_METADATA_DISABLED: 'true' };
const REFUSED = 'nx-open-cache: OIDC token refused: ';
/** Upper bound for one --explain-token run. */
const EXPLAIN_TIMEOUT_MS = 30_000;

/** @type {string} */
let tmp;
/** The issuer GitHub Actions stands for ("gha"): the rules, the Nx runs, the GitHub stand-in. */
/** @type {Issuer} */
let gha;
/** An issuer whose keys rotate ("rotating"; RS256 and ES256 only). @type {Issuer} */
let rotating;
/** An issuer that is down from the start ("cold": connections dropped). @type {Issuer} */
let cold;
/** An issuer whose keys come from a file ("airgap"; its HTTP server is closed). @type {Issuer} */
let airgap;
/** @type {ServeProcess} */
let serve;
/** @type {string} */
let configFile;
/** @type {string} */
let store;
/** Every token handed to the server or the plugin: none may appear in any output. @type {Set<string>} */
const issued = new Set();

/**
 * GitHub Actions' claims for a job of `repository` at `ref` (a push unless `event_name` says).
 * @param {{ repository?: string, ref?: string, event_name?: string } & Record<string, unknown>} [c]
 */
function ghClaims(c = {}) {
  const { repository = REPO, ref = 'refs/heads/main', event_name = 'push', ...rest } = c;
  const owner = repository.split('/')[0];
  return {
    sub: event_name.startsWith('pull_request') ? `repo:${repository}:pull_request` : `repo:${repository}:ref:${ref}`,
    repository,
    repository_owner: owner,
    repository_id: '1296269',
    repository_owner_id: '1342004',
    repository_visibility: 'private',
    ref,
    ref_type: 'branch',
    sha: crypto.randomBytes(20).toString('hex'),
    workflow: 'CI',
    job_workflow_ref: `${repository}/.github/workflows/ci.yml@${ref}`,
    event_name,
    actor: 'octocat',
    run_id: String(1e9 + Math.floor(Math.random() * 1e6)),
    run_number: '7',
    run_attempt: '1',
    runner_environment: 'github-hosted',
    ...rest,
  };
}

const MAIN = () => ghClaims();
const PR = () => ghClaims({ ref: 'refs/pull/42/merge', event_name: 'pull_request', head_ref: 'feature', base_ref: 'main' });

/**
 * A token of `issuer` (default gha), remembered as issued.
 * @param {Record<string, unknown>} claims
 * @param {import('./helpers/oidc-issuer.js').TokenOptions & { issuer?: Issuer }} [o]
 */
function jwt(claims, o = {}) {
  const t = (o.issuer || gha).token(claims, { aud: AUD, ...o });
  issued.add(t);
  return t;
}

/** @param {string} t */
function remember(t) {
  issued.add(t);
  return t;
}

function newHash() {
  return `h${crypto.randomBytes(12).toString('hex')}`;
}

/** @param {string} hash */
function cacheUrl(hash) {
  return `${serve.url}/v1/cache/${hash}`;
}

/**
 * @param {string} token
 * @param {string} [hash]
 * @returns {Promise<Reply & { hash: string }>}
 */
async function put(token, hash = newHash()) {
  const body = nxArtifact({ 'dist/out.bin': crypto.randomBytes(512) });
  const r = await request(cacheUrl(hash), { method: 'PUT', token, body });
  return { ...r, hash };
}

/**
 * @param {string} token
 * @param {string} hash
 */
function get(token, hash) {
  return request(cacheUrl(hash), { token });
}

/**
 * The parts of a token long enough to be recognised in a text.
 * @param {string} t
 */
function tokenParts(t) {
  return [t, ...t.split('.').filter((p) => p.length >= 16)];
}

/**
 * Asserts `text` holds none of the tokens (nor their payload/signature parts).
 * @param {string} text
 * @param {string} what
 * @param {Iterable<string>} [tokens]
 */
function assertNoToken(text, what, tokens = issued) {
  for (const t of tokens) {
    for (const part of tokenParts(t)) {
      assert.ok(!text.includes(part), `${what} holds a token (or part of one): ${JSON.stringify(part.slice(0, 24))}...\n${text}`);
    }
  }
}

/**
 * A 401 for an OIDC token: the body says why (matching `reason`) and never holds the token.
 * @param {Reply} r
 * @param {string} token
 * @param {RegExp} reason
 * @param {string} what
 */
function assertRefused(r, token, reason, what) {
  const body = r.body.toString('utf8');
  assert.equal(r.status, 401, `${what}: expected 401, got ${r.status}: ${body}`);
  assert.ok(body.startsWith(REFUSED), `${what}: the body does not start with ${JSON.stringify(REFUSED)}: ${body}`);
  assert.match(body, reason, `${what}: the reason`);
  assertNoToken(body, `${what}: the 401 body`, [token]);
}

/**
 * Runs `serve --config <file> <args>` (or the standalone binary) to its end, with `input` on stdin.
 * Asynchronous: the issuers answer from this process meanwhile.
 * @param {string[]} args
 * @param {{ input?: string, entry?: import('./helpers/serve-process.js').Entry }} [o]
 * @returns {Promise<{ code: number | null, stdout: string, stderr: string, output: string }>}
 */
function runServe(args, o = {}) {
  const [bin, ...pre] = serveCommand(o.entry);
  const child = spawn(bin, [...pre, ...args], { cwd: tmp, env: serveEnv({ ...NO_CLOUD, OPS_SECRET }), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  child.stdin.on('error', () => undefined);
  child.stdin.end(o.input ?? '');
  /** @type {Promise<{ code: number | null, stdout: string, stderr: string, output: string }>} */
  const done = new Promise((resolve) => {
    child.on('close', (code) => resolve({ code, stdout, stderr, output: `${stdout}${stderr}` }));
  });
  return withTimeout(done, EXPLAIN_TIMEOUT_MS, `serve ${args.join(' ')} did not end within ${EXPLAIN_TIMEOUT_MS} ms`, () => child.kill('SIGKILL'));
}

/** @param {string} s */
const toml = (s) => JSON.stringify(s);

/**
 * The server's config file (the SPEC's format).
 * @returns {string}
 */
function serverToml() {
  return `# written by oidc.e2e.test.js
storage = ${toml(`fs:${store}`)}

[[tokens]]
name = "ops"
role = "read-write"
secret_env = "OPS_SECRET"

[[oidc_issuers]]
name = "gha"
issuer = ${toml(gha.url)}
audience = [${toml(AUD)}, "https://old-name.nx-open-cache.test"]
clock_skew = "1s"
max_lifetime = "1h"

[[oidc_issuers]]
name = "rotating"
issuer = ${toml(rotating.url)}
audience = ${toml(AUD)}
algorithms = ["RS256", "ES256"]

[[oidc_issuers]]
name = "cold"
issuer = ${toml(cold.url)}
audience = ${toml(AUD)}

[[oidc_issuers]]
name = "airgap"
issuer = ${toml(airgap.url)}
audience = ${toml(AUD)}
jwks_file = "airgap-jwks.json"
algorithms = ["EdDSA", "ES256"]

[[oidc_rules]]
name = "main"
issuer = "gha"
claims = { repository = ${toml(REPO)}, ref = "refs/heads/main" }
role = "read-write"
write_prefix = "trusted"
read_prefixes = ["trusted"]

[[oidc_rules]]
name = "pr"
issuer = "gha"
claims = { repository = ${toml(REPO)}, event_name = ["pull_request", "pull_request_target"] }
role = "read-write"
write_prefix = "pr"
read_prefixes = ["trusted", "pr"]

[[oidc_rules]]
name = "release"
issuer = "gha"
claims = { repository = ${toml(REPO)}, ref = "refs/heads/release/**" }
role = "read-write"
write_prefix = "trusted"
read_prefixes = ["trusted"]

[[oidc_rules]]
name = "forks"
issuer = "gha"
claims = { repository = "evil/*" }
deny = true

[[oidc_rules]]
name = "acme-readers"
issuer = "gha"
claims = { repository_owner = "acme" }
role = "read-only"
read_prefixes = ["trusted"]

[[oidc_rules]]
name = "internal"
claims = { repository = ${toml(REPO)} }
role = "read-write"
write_prefix = "trusted"
read_prefixes = ["trusted"]
`;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-oidc-'));
  [gha, rotating, cold, airgap] = await Promise.all([startIssuer(), startIssuer(), startIssuer(), startIssuer({ path: '/airgap' })]);
  cold.setDown('close');
  fs.writeFileSync(path.join(tmp, 'airgap-jwks.json'), `${JSON.stringify(airgap.jwks(), null, 2)}\n`);
  await airgap.close(); // keys from the file only: nothing to fetch from
  store = path.join(tmp, 'store');
  configFile = path.join(tmp, 'server.toml');
  fs.writeFileSync(configFile, serverToml());
  serve = await startServe(['--config', configFile], { cwd: tmp, env: serveEnv({ ...NO_CLOUD, OPS_SECRET }) });
});

after(async () => {
  let output = '';
  if (serve) {
    await serve.stop();
    output = `${serve.stdout()}\n${serve.stderr()}`;
  }
  await Promise.all([gha, rotating, cold].filter(Boolean).map((i) => i.close()));
  fs.rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
  // The server's own output (startup, warnings, refusals) never held a token.
  if (output) assertNoToken(output, 'the server output');
});

/** The objects of the server's storage, by namespace. */
function namespaces() {
  /** @type {Record<string, string[]>} */
  const by = {};
  // [<prefix>/]<aa>/<bb>/<hash> (docs/storage-layout.md)
  for (const o of storeObjects(store)) {
    const parts = o.split('/');
    const ns = parts.slice(0, -3).join('/');
    (by[ns] ||= []).push(/** @type {string} */ (parts.pop()));
  }
  for (const v of Object.values(by)) v.sort();
  return by;
}

/* ------------------------------------------------------------------------------------------------ */

describe('a real Nx workspace through the plugin (http backend, tokens from the environment and the GitHub stand-in)', () => {
  /** @type {NxWorkspace} */
  let ws;
  let machines = 0;
  /** @type {string} */
  let dataDir = '';

  before(async () => {
    ws = await createWorkspace();
    // Each build sleeps NXOC_OIDC_SLEEP_MS (not a task input: the hashes do not depend on it).
    fs.appendFileSync(path.join(ws.root, 'tools', 'build.js'), `
if (process.env.NXOC_OIDC_SLEEP_MS) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(process.env.NXOC_OIDC_SLEEP_MS));
`);
    ws.setPluginOptions({ backend: 'http', url: serve.url });
  });

  after(async () => {
    if (ws) await ws.dispose();
    disposePack();
  });

  /** @param {RunResult} r */
  const show = (r) => `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;

  /**
   * `nx run-many -t build` on a fresh machine (own Nx cache and workspace data, no outputs, empty
   * build log, the daemon off); green or throws.
   * @param {string} what
   * @param {Record<string, string>} env
   * @param {import('node:test').TestContext} t
   * @param {string[]} [extraArgs]
   */
  async function build(what, env, t, extraArgs = []) {
    machines += 1;
    const base = path.join(ws.base, `machine-${machines}`);
    dataDir = path.join(base, 'workspace-data');
    ws.cleanOutputs();
    ws.clearBuildLog();
    const r = await ws.runBuild({
      env: { NX_DAEMON: 'false', NX_CACHE_DIRECTORY: path.join(base, 'nx-cache'), NX_WORKSPACE_DATA_DIRECTORY: dataDir, ...NO_CLOUD, ...env },
      extraArgs,
    });
    assert.equal(r.timedOut, false, `${what}: nx timed out${show(r)}`);
    assert.equal(r.code, 0, `${what}: nx failed${show(r)}`);
    t.diagnostic(`${what}: ${summaryLines(r.output).join(' | ') || '(no summary line)'}`);
    return r;
  }

  /** @returns {any} the last build's summary (last-run.json in its workspace data) */
  function lastRun() {
    const f = path.join(dataDir, 'nx-open-cache', 'last-run.json');
    assert.ok(fs.existsSync(f), `no ${f}`);
    return JSON.parse(fs.readFileSync(f, 'utf8'));
  }

  const all = () => ws.projects.map((p) => p.name).sort();
  const authorizedGhRequests = () => gha.github.requests.filter((r) => r.authorized).length;

  test('main stores in trusted/; a PR restores main\'s artifacts and writes pr/; main never restores the PR\'s; main restores its own', async (t) => {
    const libA = path.join(ws.root, 'packages', 'lib-a', 'src', 'index.txt');
    const original = fs.readFileSync(libA, 'utf8');
    try {
      // main: a JWT in NX_OPEN_CACHE_TOKEN (as GitLab's id_tokens fill it).
      const main = await build('main', { NX_OPEN_CACHE_TOKEN: jwt(MAIN(), { lifetime: 900 }) }, t);
      assert.deepEqual(ws.builtProjects().sort(), all(), `main: every project builds${show(main)}`);
      const s1 = lastRun();
      assert.equal(s1.stored, 4, `main: stored ${JSON.stringify(s1)}${show(main)}`);
      assert.equal(s1.errorCount, 0, `main: errors ${JSON.stringify(s1.errors)}${show(main)}`);
      const trusted1 = namespaces().trusted || [];
      assert.equal(trusted1.length, 4, `main: trusted/ ${JSON.stringify(namespaces())}`);
      assert.equal((namespaces().pr || []).length, 0);

      // The PR changes lib-a (lib-b depends on it); its job has id-token: write.
      fs.writeFileSync(libA, `${original}changed by the pull request\n`);
      const ghBefore = authorizedGhRequests();
      gha.github.mint = () => ({ claims: PR(), lifetime: 600 });
      const pr = await build('PR (GitHub stand-in)', gha.github.env(AUD), t);
      assert.ok(authorizedGhRequests() > ghBefore, `PR: the plugin never asked the GitHub stand-in for a token${show(pr)}`);
      assert.deepEqual([...new Set(gha.github.requests.map((r) => r.audience))], [AUD], 'PR: the audience asked for');
      assert.deepEqual(ws.builtProjects().sort(), ['lib-a', 'lib-b'], `PR: only the changed projects build${show(pr)}`);
      for (const p of ['app-c', 'tool-d']) assert.ok(isRemoteHit(pr.output, p), `PR: ${p} not restored from trusted/${show(pr)}`);
      const s2 = lastRun();
      assert.equal(s2.hits, 2, `PR: hits ${JSON.stringify(s2)}`);
      assert.equal(s2.stored, 2, `PR: stored ${JSON.stringify(s2)}${show(pr)}`);
      assert.equal(s2.errorCount, 0, `PR: errors ${JSON.stringify(s2.errors)}${show(pr)}`);
      const afterPr = namespaces();
      assert.equal((afterPr.pr || []).length, 2, `PR: writes land in pr/: ${JSON.stringify(afterPr)}`);
      assert.deepEqual(afterPr.trusted, trusted1, 'PR: trusted/ unchanged');
      assertNoToken(pr.output, 'PR: the nx output');

      // main with the PR's change (merged): the same hashes as the PR's; never restored from pr/.
      const merged = await build('main after the merge', { NX_OPEN_CACHE_TOKEN: jwt(MAIN(), { lifetime: 900 }) }, t);
      for (const p of ['lib-a', 'lib-b']) assert.ok(!isRemoteHit(merged.output, p), `main: ${p} restored the PR's artifact${show(merged)}`);
      assert.deepEqual(ws.builtProjects().sort(), ['lib-a', 'lib-b'], `main: rebuilds what only pr/ holds${show(merged)}`);
      const s3 = lastRun();
      assert.equal(s3.hits, 2, `main after the merge: hits ${JSON.stringify(s3)}`);
      assert.equal(s3.stored, 2, `main after the merge: stored ${JSON.stringify(s3)}`);
      const afterMerge = namespaces();
      assert.equal((afterMerge.trusted || []).length, 6, JSON.stringify(afterMerge));
      assert.deepEqual(
        afterMerge.pr,
        (afterMerge.trusted || []).filter((h) => !trusted1.includes(h)),
        'the hashes main rebuilt are the PR\'s (same task hashes, two namespaces)',
      );
      const built = ws.snapshotOutputs();

      // main again on a fresh machine: its own artifacts, all four restored.
      const again = await build('main, fresh machine', { NX_OPEN_CACHE_TOKEN: jwt(MAIN(), { lifetime: 900 }) }, t);
      assert.deepEqual(ws.builtProjects(), [], `main again: a build ran${show(again)}`);
      for (const p of all()) assert.ok(isRemoteHit(again.output, p), `main again: ${p} not a remote hit${show(again)}`);
      assert.deepEqual(ws.snapshotOutputs(), built, 'main again: restored outputs differ');
      assertNoToken(`${main.output}${merged.output}${again.output}`, 'the nx output');
    } finally {
      fs.writeFileSync(libA, original);
    }
  });

  test('a run longer than the token lifetime: tokens of 5 s fetched again, every write accepted', async (t) => {
    // New task hashes (tools/build.js is a shared input), sequential tasks of 2 s each.
    const script = path.join(ws.root, 'tools', 'build.js');
    const original = fs.readFileSync(script, 'utf8');
    fs.appendFileSync(script, `// refresh run ${crypto.randomBytes(4).toString('hex')}\n`);
    try {
      const before = authorizedGhRequests();
      gha.github.mint = ({ n }) => ({ claims: MAIN(), lifetime: 5, alg: n % 2 ? 'ES256' : 'EdDSA' });
      const trustedBefore = (namespaces().trusted || []).length;
      const started = Date.now();
      const r = await build('long run, 5 s tokens', { ...gha.github.env(AUD), NXOC_OIDC_SLEEP_MS: '2000' }, t, ['--parallel=1']);
      const took = Date.now() - started;
      assert.ok(took > 6000, `the run must outlast a token (5 s) for this test to mean anything: ${took} ms`);
      assert.deepEqual(ws.builtProjects().sort(), all(), `long run: every project builds${show(r)}`);
      const s = lastRun();
      assert.equal(s.stored, 4, `long run: stored ${JSON.stringify(s)}${show(r)}`);
      assert.equal(s.errorCount, 0, `long run: errors ${JSON.stringify(s.errors)}${show(r)}`);
      assert.equal((namespaces().trusted || []).length, trustedBefore + 4, JSON.stringify(namespaces()));
      const fetched = authorizedGhRequests() - before;
      t.diagnostic(`long run: ${took} ms, ${fetched} tokens fetched`);
      assert.ok(fetched >= 2, `long run: the plugin fetched ${fetched} token(s) in ${took} ms; tokens live 5 s${show(r)}`);
      assertNoToken(r.output, 'long run: the nx output');
    } finally {
      fs.writeFileSync(script, original);
    }
  });

  test('a wrong request token: a store fault naming the source, the build goes on, no token printed', async (t) => {
    const refusedBefore = gha.counts.githubRefused;
    const wrong = `wrong-request-token-${crypto.randomBytes(8).toString('hex')}`;
    gha.github.mint = () => ({ claims: MAIN(), lifetime: 600 });
    const r = await build('wrong request token', gha.github.env(AUD, { requestToken: wrong }), t, ['--projects=app-c']);
    assert.ok(gha.counts.githubRefused > refusedBefore, `the stand-in saw no request${show(r)}`);
    const s = lastRun();
    assert.equal(s.hits, 0, JSON.stringify(s));
    assert.ok(s.errorCount > 0, `a store fault is reported: ${JSON.stringify(s)}${show(r)}`);
    const reasons = s.errors.map((/** @type {{ reason: string }} */ e) => e.reason).join('\n');
    assert.match(reasons, /ACTIONS_ID_TOKEN_REQUEST|GitHub/i, `the fault names the token source:\n${reasons}`);
    assert.match(reasons, /401/, `the fault names the status:\n${reasons}`);
    t.diagnostic(`wrong request token: ${reasons}`);
    for (const text of [r.output, JSON.stringify(s)]) {
      assert.ok(!text.includes(wrong) && !text.includes(gha.github.requestToken), `a request token was printed:\n${text}`);
    }
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('direct HTTP: verification, rules, keys', () => {
  test('RS256, ES256 and EdDSA tokens are accepted; main writes trusted/, the PR reads it and writes pr/; static tokens still work', async () => {
    /** @type {string[]} */ const mainHashes = [];
    for (const alg of /** @type {const} */ (['RS256', 'ES256', 'EdDSA'])) {
      const token = jwt(MAIN(), { alg });
      const w = await put(token);
      assert.equal(w.status, 200, `${alg}: PUT ${w.status} ${w.body}`);
      assert.equal((await get(token, w.hash)).status, 200, `${alg}: GET`);
      mainHashes.push(w.hash);
    }
    const pr = jwt(PR(), { alg: 'ES256' });
    assert.equal((await get(pr, mainHashes[0])).status, 200, 'PR reads trusted/');
    const prWrite = await put(pr);
    assert.equal(prWrite.status, 200, `PR PUT: ${prWrite.body}`);
    assert.equal((await get(jwt(MAIN()), prWrite.hash)).status, 404, 'main never reads pr/');
    assert.equal((await get(pr, prWrite.hash)).status, 200, 'the PR reads pr/');
    const ns = namespaces();
    assert.ok(mainHashes.every((h) => (ns.trusted || []).includes(h)), JSON.stringify(ns));
    assert.ok((ns.pr || []).includes(prWrite.hash), JSON.stringify(ns));
    // A second audience of the issuer, and aud as an array holding ours.
    assert.equal((await put(jwt(MAIN(), { aud: 'https://old-name.nx-open-cache.test' }))).status, 200);
    assert.equal((await put(jwt(MAIN(), { aud: ['https://elsewhere.test', AUD] }))).status, 200);
    // A glob rule: refs/heads/release/** crosses segments.
    assert.equal((await put(jwt(ghClaims({ ref: 'refs/heads/release/2026/q4' })))).status, 200, 'release/** rule');
    // The static token beside the issuers (no prefix: the store root, not trusted/).
    const ops = await put(OPS_SECRET);
    assert.equal(ops.status, 200, `static token: ${ops.body}`);
    assert.equal((await get(OPS_SECRET, ops.hash)).status, 200);
    assert.equal((await get(OPS_SECRET, mainHashes[0])).status, 404, 'the static token reads the root only');
    assert.ok((namespaces()[''] || []).includes(ops.hash), JSON.stringify(namespaces()));
  });

  test('time and audience: expired, not yet valid, issued in the future, no exp, lifetime above max_lifetime, wrong audience, wrong issuer', async (t) => {
    const now = nowSeconds();
    /** @type {[string, string, RegExp][]} */
    const cases = [
      ['expired', jwt(MAIN(), { now: now - 1200, lifetime: 600 }), /exp|expired/i],
      ['not yet valid', jwt({ ...MAIN(), nbf: now + 600, exp: now + 900 }), /nbf|not (yet )?valid/i],
      ['issued in the future', jwt({ ...MAIN(), nbf: undefined, iat: now + 600, exp: now + 900 }), /iat|future/i],
      ['no exp', jwt({ ...MAIN(), exp: undefined }), /exp/],
      ['lifetime 2 h > max_lifetime 1 h', jwt(MAIN(), { lifetime: 7200 }), /lifetime|max_lifetime/i],
      ['wrong audience', jwt(MAIN(), { aud: 'https://another-service.test' }), /aud/i],
      ['no audience', jwt({ ...MAIN(), aud: undefined }), /aud/i],
      ['wrong issuer', jwt({ ...MAIN(), iss: 'https://token.actions.githubusercontent.com' }), /iss/i],
      ['an issuer URL with a trailing slash', jwt({ ...MAIN(), iss: `${gha.url}/` }), /iss/i],
    ];
    for (const [what, token, reason] of cases) {
      const r = await put(token);
      assertRefused(r, token, reason, `${what} (PUT)`);
      assertRefused(await get(token, newHash()), token, reason, `${what} (GET)`);
      t.diagnostic(`${what}: ${r.body.toString().trim()}`);
    }
  });

  test('forged tokens: alg none, HS256 keyed with the RSA public key, a tampered payload', async (t) => {
    const claims = gha.standardClaims({ aud: AUD });
    /** @type {[string, string, RegExp][]} */
    const cases = [
      ['alg none', remember(gha.algNone({ ...claims, ...MAIN() })), /alg|none/i],
      ['alg None, RS256 signature kept', remember(gha.algNone({ ...claims, ...MAIN() }, { withSignature: true, algText: 'None' })), /alg|none/i],
      ['HS256, the public key PEM as secret', remember(gha.hs256WithPublicKey({ ...claims, ...MAIN() })), /alg|HS256/i],
      ['HS256, the public JWK as secret', remember(gha.hs256WithPublicKey({ ...claims, ...MAIN() }, { secret: 'jwk' })), /alg|HS256/i],
      ['tampered payload (acme/other -> main)', remember(gha.tampered({ ...claims, ...ghClaims({ repository: 'acme/other' }) }, { repository: REPO })), /signature/i],
    ];
    for (const [what, token, reason] of cases) {
      const r = await put(token);
      assertRefused(r, token, reason, `${what} (PUT)`);
      assertRefused(await get(token, newHash()), token, reason, `${what} (GET)`);
      t.diagnostic(`${what}: ${r.body.toString().trim()}`);
    }
  });

  test('other repositories: a deny rule and no rule refuse (401, naming why); a read-only rule reads trusted/, never writes', async () => {
    const stored = await put(jwt(MAIN()));
    assert.equal(stored.status, 200);
    const fork = jwt(ghClaims({ repository: 'evil/monorepo', event_name: 'pull_request_target' }));
    assertRefused(await get(fork, stored.hash), fork, /forks/, 'deny rule');
    assertRefused(await put(fork), fork, /forks/, 'deny rule (PUT)');
    const stranger = jwt(ghClaims({ repository: 'someone/else' }));
    assertRefused(await get(stranger, stored.hash), stranger, /rule/i, 'no rule matches');
    const sibling = jwt(ghClaims({ repository: 'acme/other' }));
    assert.equal((await get(sibling, stored.hash)).status, 200, 'read-only rule: GET');
    const w = await put(sibling);
    assert.equal(w.status, 403, `read-only rule: PUT ${w.status} ${w.body}`);
    assertNoToken(w.body.toString(), 'the 403 body', [sibling]);
    // A feature branch of the repository itself: not main, not a PR: the owner's read-only rule.
    assert.equal((await put(jwt(ghClaims({ ref: 'refs/heads/feature/x' })))).status, 403, 'feature branch: read-only');
    // A missing claim never matches: no repository at all.
    const bare = jwt({ sub: 'repo:acme/monorepo:ref:refs/heads/main', ref: 'refs/heads/main' });
    assertRefused(await get(bare, stored.hash), bare, /rule/i, 'no repository claim');
  });

  test('key rotation: a new kid is fetched and accepted; more unknown kids within the minute are refused without a fetch', async () => {
    const first = jwt(MAIN(), { issuer: rotating });
    assert.equal((await put(first)).status, 200, 'the keys fetched at start');
    const fetchesBefore = rotating.counts.jwks;
    const kids = rotating.rotate(['RS256', 'ES256']);
    const rotated = jwt(MAIN(), { issuer: rotating, alg: 'ES256' });
    assert.equal(decode(rotated).header.kid, kids.ES256);
    const ok = await put(rotated);
    assert.equal(ok.status, 200, `the rotated key: ${ok.status} ${ok.body}`);
    assert.equal(rotating.counts.jwks, fetchesBefore + 1, 'one fetch of the keys for the new kid');
    assert.equal((await put(jwt(MAIN(), { issuer: rotating }))).status, 200, 'the new RS256 key came with it');
    // A kid nobody published, then a second rotation: both refused, no further fetch (rate limit).
    const madeUp = rotating.unknownKid({ ...rotating.standardClaims({ aud: AUD }), ...MAIN() });
    remember(madeUp.jwt);
    assertRefused(await put(madeUp.jwt), madeUp.jwt, new RegExp(`kid|${madeUp.key.kid}`), 'unknown kid');
    rotating.rotate(['RS256']);
    const tooSoon = jwt(MAIN(), { issuer: rotating });
    assertRefused(await put(tooSoon), tooSoon, /kid|minute/i, 'a second rotation within the minute');
    assert.equal(rotating.counts.jwks, fetchesBefore + 1, 'unknown kids within the minute cause no fetch');
    // The keys fetched for the new kid keep serving.
    assert.equal((await put(jwt(MAIN(), { issuer: rotating, alg: 'ES256' }))).status, 200);
  });

  test('JWKS down: cached keys keep working after a failed fetch; an issuer never reached answers 401 saying its keys cannot be fetched', async () => {
    const before = { ...gha.counts };
    gha.setDown(true);
    try {
      const madeUp = gha.unknownKid({ ...gha.standardClaims({ aud: AUD }), ...MAIN() });
      remember(madeUp.jwt);
      const r = await put(madeUp.jwt);
      assertRefused(r, madeUp.jwt, /kid|keys/i, 'unknown kid while the JWKS is down');
      assert.ok(gha.counts.refusedWhileDown > before.refusedWhileDown, 'the server tried to fetch the keys');
      const token = jwt(MAIN());
      const w = await put(token);
      assert.equal(w.status, 200, `cached keys after a failed fetch: ${w.status} ${w.body}`);
      assert.equal((await get(token, w.hash)).status, 200);
    } finally {
      gha.setDown(false);
    }
    // "cold" was down (connections dropped) since before the server started.
    const token = jwt(MAIN(), { issuer: cold });
    assertRefused(await put(token), token, /cold.*keys.*cannot be fetched|keys.*cold.*cannot be fetched/i, 'no keys ever fetched');
    assertRefused(await get(token, newHash()), token, /cannot be fetched/i, 'no keys ever fetched (GET)');
    assert.ok(cold.counts.refusedWhileDown >= 1, 'the server tried');
  });

  test('keys from a file (jwks_file): accepted with the issuer unreachable; an alg the issuer does not allow is refused', async () => {
    const token = jwt(MAIN(), { issuer: airgap, alg: 'EdDSA' });
    const w = await put(token);
    assert.equal(w.status, 200, `airgap: ${w.status} ${w.body}`);
    assert.equal(airgap.counts.discovery + airgap.counts.jwks, 0);
    const unknown = airgap.unknownKid({ ...airgap.standardClaims({ aud: AUD }), ...MAIN() }, { alg: 'EdDSA' });
    remember(unknown.jwt);
    assertRefused(await put(unknown.jwt), unknown.jwt, /kid/i, 'airgap: a kid not in the file');
    // RS256: its key is in the file, the issuer allows EdDSA and ES256 only.
    const rs = jwt(MAIN(), { issuer: airgap, alg: 'RS256' });
    assertRefused(await put(rs), rs, /alg|RS256/, 'airgap: an alg the issuer does not allow');
  });
});

/* ------------------------------------------------------------------------------------------------ */

describe('--explain-token', () => {
  test('an accepted token: the issuer, the rules in order, the access; exit 0; the token never printed (argument and stdin)', async () => {
    const token = jwt(MAIN());
    const r = await runServe(['--config', configFile, '--explain-token', token]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /issuer: .*"gha"/, r.output);
    assert.match(r.output, /signature: valid/, r.output);
    assert.match(r.output, /1\. "main" \(read-write, writes "trusted", reads "trusted"\): MATCHES/, r.output);
    assert.match(r.output, /accepted: rule "main"/, r.output);
    assert.doesNotMatch(r.output, /"pr" \(/, `the rules after the match are not tried:\n${r.output}`);
    assertNoToken(r.output, '--explain-token output', [token]);
    const pr = jwt(PR(), { alg: 'EdDSA' });
    const viaStdin = await runServe(['--config', configFile, '--explain-token', '-'], { input: `${pr}\n` });
    assert.equal(viaStdin.code, 0, viaStdin.output);
    // The rule "main" is shown as not matching, with the claim at fault; "pr" matches.
    assert.match(viaStdin.output, /1\. "main" [^\n]*does not match\n[^\n]*ref = "refs\/heads\/main": no \(the token has "refs\/pull\/42\/merge"\)/, viaStdin.output);
    assert.match(viaStdin.output, /2\. "pr" [^\n]*MATCHES/, viaStdin.output);
    assert.match(viaStdin.output, /accepted: rule "pr": read-write, writes "pr", reads "trusted", "pr"/, viaStdin.output);
    assertNoToken(viaStdin.output, '--explain-token - output', [pr]);
  });

  test('refused tokens exit 1 with the reason; a config mistake exits 2', async () => {
    const fork = jwt(ghClaims({ repository: 'evil/monorepo' }));
    const denied = await runServe(['--config', configFile, '--explain-token', fork]);
    assert.equal(denied.code, 1, denied.output);
    assert.match(denied.output, /"forks" \(deny\): MATCHES/, denied.output);
    assert.match(denied.output, /refused: rule "forks" denies this token/, denied.output);
    assertNoToken(denied.output, 'denied', [fork]);
    const expired = jwt(MAIN(), { now: nowSeconds() - 1200, lifetime: 600 });
    const late = await runServe(['--config', configFile, '--explain-token', expired]);
    assert.equal(late.code, 1, late.output);
    assert.match(late.output, /refused: .*expired/, late.output);
    assertNoToken(late.output, 'expired', [expired]);
    const none = remember(gha.algNone({ ...gha.standardClaims({ aud: AUD }), ...MAIN() }));
    const unsigned = await runServe(['--config', configFile, '--explain-token', none]);
    assert.equal(unsigned.code, 1, unsigned.output);
    assert.match(unsigned.output, /refused: .*none/, unsigned.output);
    const garbage = await runServe(['--config', configFile, '--explain-token', 'not-a-jwt']);
    assert.equal(garbage.code, 1, garbage.output);

    const bad = path.join(tmp, 'bad.toml');
    fs.writeFileSync(bad, serverToml().replace('algorithms = ["RS256", "ES256"]', 'algorithms = ["HS256"]'));
    const mistake = await runServe(['--config', bad, '--explain-token', jwt(MAIN())]);
    assert.equal(mistake.code, 2, mistake.output);
    assert.match(mistake.output, /HS256/, mistake.output);
  });

  test('the standalone binary: the same answer', async () => {
    const token = jwt(MAIN(), { alg: 'ES256' });
    const r = await runServe(['--config', configFile, '--explain-token', token], { entry: 'bin' });
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /accepted: rule "main"/, r.output);
    assertNoToken(r.output, 'the binary\'s --explain-token output', [token]);
    const fork = jwt(ghClaims({ repository: 'evil/monorepo' }));
    const denied = await runServe(['--config', configFile, '--explain-token', fork], { entry: 'bin' });
    assert.equal(denied.code, 1, denied.output);
  });
});
