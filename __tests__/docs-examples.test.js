'use strict';
/**
 * The configuration examples of the README and docs/*.md, checked as a reader would use them:
 * - every ```toml and ```yaml block parses (Python's tomllib and PyYAML from the project's venv,
 *   one run for all);
 * - every `[[oidc_issuers]]` / `[[oidc_rules]]` example uses only the keys `serve` reads, with their
 *   required keys, allowed values and unique names (docs/serve.md "OIDC identity");
 * - the rule sets of the README and docs/serve.md give the access their text says to tokens with
 *   GitHub's claims (first match wins; equality, globs, lists), in particular that no pull-request
 *   event (pull_request_target included, which carries main's `ref`) reaches the trusted namespace;
 * - the GitHub Actions workflows pass actionlint (with shellcheck), ask for `id-token: write` and
 *   the audience the server expects; the GitLab CI job's `id_tokens` audience is the server's too.
 *
 * No server runs here: what `serve` does with such a file is tested by the server's own tests.
 *
 * Run: node --test __tests__/docs-examples.test.js (needs the venv: `node scripts/emulators.js install`)
 */

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');
const emulators = require('../scripts/emulators.js');

const REPO_ROOT = path.resolve(__dirname, '..');
const VENV_BIN = path.join(emulators.VENV, process.platform === 'win32' ? 'Scripts' : 'bin');
const EXE = process.platform === 'win32' ? '.exe' : '';
const PYTHON = path.join(VENV_BIN, `python${EXE}`);
const ACTIONLINT = path.join(VENV_BIN, `actionlint${EXE}`);
const SHELLCHECK = path.join(VENV_BIN, `shellcheck${EXE}`);
/** Upper bound for one tool run (they take well under a second). */
const RUN_TIMEOUT_MS = 60_000;

/** The keys `serve` reads (docs/serve.md "OIDC identity"), and which are required. */
const ISSUER_KEYS = new Set(['name', 'issuer', 'audience', 'jwks_url', 'jwks_file', 'algorithms', 'clock_skew', 'max_lifetime']);
const ISSUER_REQUIRED = ['name', 'issuer', 'audience'];
const RULE_KEYS = new Set(['name', 'issuer', 'claims', 'role', 'write_prefix', 'read_prefixes', 'deny']);
const ROLES = new Set(['read-write', 'read-only', 'admin']);
const ALGORITHMS = new Set(['RS256', 'ES256', 'EdDSA']);
const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * @typedef {{ page: string, line: number, lang: string, text: string }} Block
 * @typedef {{ name: string, issuer?: string, claims?: Record<string, string | string[]>, role?: string, write_prefix?: string, read_prefixes?: string[], deny?: boolean }} Rule
 * @typedef {{ name: string, issuer: string, audience: string | string[] }} Issuer
 * @typedef {{ oidc_issuers?: Issuer[], oidc_rules?: Rule[], tokens?: { name: string }[], [key: string]: unknown }} ServerConfig
 */

/** The pages whose examples are checked: the README and every docs/*.md. */
function pages() {
  const docs = fs.readdirSync(path.join(REPO_ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`);
  return ['README.md', ...docs];
}

/**
 * The fenced blocks of a markdown text whose info string is toml or yaml / yml.
 * @param {string} page
 * @returns {Block[]}
 */
function blocksOf(page) {
  const lines = fs.readFileSync(path.join(REPO_ROOT, page), 'utf8').split('\n');
  /** @type {Block[]} */ const out = [];
  /** @type {{ lang: string, line: number, body: string[] } | null} */ let open = null;
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```\s*([\w-]*)/.exec(lines[i]);
    if (!fence) {
      if (open) open.body.push(lines[i]);
      continue;
    }
    if (open) {
      if (['toml', 'yaml', 'yml'].includes(open.lang)) out.push({ page, line: open.line, lang: open.lang === 'yml' ? 'yaml' : open.lang, text: open.body.join('\n') });
      open = null;
    } else {
      open = { lang: fence[1], line: i + 1, body: [] };
    }
  }
  return out;
}

/**
 * Parses every block with the venv's Python (tomllib, PyYAML), in one run.
 * @param {Block[]} blocks
 * @returns {{ value?: any, error?: string }[]}
 */
function parseAll(blocks) {
  const script = [
    'import json, sys, tomllib, yaml, datetime',
    'out = []',
    'for b in json.load(sys.stdin):',
    '    try:',
    "        v = tomllib.loads(b['text']) if b['lang'] == 'toml' else list(yaml.safe_load_all(b['text']))",
    "        out.append({'value': v})",
    '    except Exception as e:',
    "        out.append({'error': f'{type(e).__name__}: {e}'})",
    'print(json.dumps(out, default=str))',
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify(blocks), encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
  assert.equal(r.status, 0, `python: ${r.error ? r.error.message : r.stderr}`);
  return JSON.parse(r.stdout);
}

/**
 * A claim pattern as serve matches it: a glob when it holds `*`, `?` or `[` (`*` within one
 * `/`-segment, `**` across), else equality.
 * @param {string} pattern
 * @returns {(value: string) => boolean}
 */
function matcher(pattern) {
  if (!/[*?[]/.test(pattern)) return (v) => v === pattern;
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*' && pattern[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      assert.ok(end > i, `unclosed [ in ${pattern}`);
      re += `[${pattern.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  const rx = new RegExp(`^${re}$`);
  return (v) => rx.test(v);
}

/**
 * The rule a token's claims meet first (first match wins), or null.
 * @param {ServerConfig} config
 * @param {string} issuerName
 * @param {Record<string, unknown>} claims
 * @returns {Rule | null}
 */
function firstMatch(config, issuerName, claims) {
  for (const rule of config.oidc_rules || []) {
    if (rule.issuer !== undefined && rule.issuer !== issuerName) continue;
    const all = Object.entries(rule.claims || {}).every(([name, pattern]) => {
      const value = claims[name];
      if (value === undefined || value === null || typeof value === 'object') return false;
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      return (Array.isArray(pattern) ? pattern : [pattern]).some((p) => matcher(p)(text));
    });
    if (all) return rule;
  }
  return null;
}

/**
 * What a token gets: `refused` (no rule or a deny rule) or the rule's name, role and namespaces.
 * @param {ServerConfig} config
 * @param {string} issuerName
 * @param {Record<string, unknown>} claims
 */
function access(config, issuerName, claims) {
  const rule = firstMatch(config, issuerName, claims);
  if (!rule || rule.deny) return { rule: rule ? rule.name : null, refused: true };
  return { rule: rule.name, refused: false, role: rule.role, write: rule.write_prefix ?? '', read: rule.read_prefixes ?? [rule.write_prefix ?? ''] };
}

/**
 * The claims of a GitHub Actions token (docs.github.com, "OpenID Connect reference").
 * @param {{ repository?: string, ref?: string, event?: string }} o
 */
function githubClaims({ repository = 'acme/monorepo', ref = 'refs/heads/main', event = 'push' } = {}) {
  const [owner] = repository.split('/');
  return {
    iss: 'https://token.actions.githubusercontent.com',
    aud: 'https://cache.example.com',
    sub: event.startsWith('pull_request') && event !== 'pull_request_target' ? `repo:${repository}:pull_request` : `repo:${repository}:ref:${ref}`,
    repository,
    repository_owner: owner,
    repository_id: 123456,
    ref,
    ref_type: 'branch',
    event_name: event,
    workflow: 'CI',
    job_workflow_ref: `${repository}/.github/workflows/ci.yml@${ref}`,
    repository_visibility: 'private',
    runner_environment: 'github-hosted',
  };
}

/**
 * The claims of a GitLab CI ID token (docs.gitlab.com, "OpenID Connect (OIDC) Authentication Using
 * ID Tokens"): `ref` is the bare branch name, `ref_protected` and ids are strings.
 * @param {{ project?: string, ref?: string, source?: string, protectedRef?: boolean }} o
 */
function gitlabClaims({ project = 'acme/monorepo', ref = 'main', source = 'push', protectedRef = true } = {}) {
  const [namespace] = project.split('/');
  return {
    iss: 'https://gitlab.com',
    aud: 'https://cache.example.com',
    sub: `project_path:${project}:ref_type:branch:ref:${ref}`,
    project_path: project,
    namespace_path: namespace,
    project_id: '4242',
    ref,
    ref_type: 'branch',
    ref_protected: String(protectedRef),
    pipeline_source: source,
    user_login: 'dev',
    ci_config_ref_uri: `gitlab.com/${project}//.gitlab-ci.yml@refs/heads/${ref}`,
  };
}

/** @type {Block[]} */ let blocks;
/** @type {{ value?: any, error?: string }[]} */ let parsed;
/** @type {string} */ let tmp;

/** @param {Block} b */
const where = (b) => `${b.page}:${b.line}`;

/**
 * The parsed TOML blocks of one page that configure OIDC.
 * @param {string} page
 * @returns {{ block: Block, config: ServerConfig }[]}
 */
function oidcConfigs(page) {
  return blocks
    .map((block, i) => ({ block, config: /** @type {ServerConfig} */ (parsed[i].value) }))
    .filter(({ block, config }) => block.page === page && block.lang === 'toml' && config && (config.oidc_issuers || config.oidc_rules));
}

/**
 * The parsed YAML documents of every page that are GitHub Actions workflows (`jobs` with
 * `runs-on`) or GitLab CI jobs (a job with `id_tokens`).
 */
function ciExamples() {
  /** @type {{ block: Block, doc: any }[]} */ const github = [];
  /** @type {{ block: Block, job: string, doc: any }[]} */ const gitlab = [];
  blocks.forEach((block, i) => {
    if (block.lang !== 'yaml' || !parsed[i].value) return;
    for (const doc of parsed[i].value) {
      if (!doc || typeof doc !== 'object') continue;
      if (doc.jobs && Object.values(doc.jobs).some((j) => j && j['runs-on'])) github.push({ block, doc });
      for (const [job, body] of Object.entries(doc)) if (body && typeof body === 'object' && body.id_tokens) gitlab.push({ block, job, doc: body });
    }
  });
  return { github, gitlab };
}

before(() => {
  assert.ok(fs.existsSync(PYTHON), `${PYTHON} is missing: run \`node scripts/emulators.js install\` (npm test does)`);
  blocks = pages().flatMap(blocksOf);
  parsed = parseAll(blocks);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-docs-examples-'));
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('docs examples', () => {
  test('every toml and yaml block of the README and docs/*.md parses', () => {
    assert.ok(blocks.filter((b) => b.lang === 'toml').length >= 3, `only ${blocks.filter((b) => b.lang === 'toml').length} toml blocks found`);
    const broken = blocks.flatMap((b, i) => (parsed[i].error ? [`${where(b)} (${b.lang}): ${parsed[i].error}`] : []));
    assert.deepEqual(broken, []);
  });

  test('every [[oidc_issuers]] / [[oidc_rules]] example uses the keys serve reads, with valid values and unique names', () => {
    const configs = [...oidcConfigs('README.md'), ...oidcConfigs('docs/serve.md')];
    assert.ok(configs.length >= 2, 'the README and docs/serve.md each have an OIDC example');
    for (const { block, config } of configs) {
      const at = where(block);
      const issuers = config.oidc_issuers || [];
      for (const iss of issuers) {
        for (const k of Object.keys(iss)) assert.ok(ISSUER_KEYS.has(k), `${at}: [[oidc_issuers]] has no key ${k}`);
        for (const k of ISSUER_REQUIRED) assert.ok(iss[/** @type {keyof Issuer} */ (k)] !== undefined, `${at}: [[oidc_issuers]] ${iss.name} lacks ${k}`);
        assert.match(iss.name, NAME, `${at}: issuer name`);
        assert.match(iss.issuer, /^https:\/\//, `${at}: issuer ${iss.name}: https`);
        for (const a of /** @type {any} */ (iss).algorithms || []) assert.ok(ALGORITHMS.has(a), `${at}: algorithm ${a}`);
      }
      const names = [...(config.oidc_rules || []).map((r) => r.name), ...(config.tokens || []).map((t) => t.name)];
      assert.deepEqual(names.filter((n, i) => names.indexOf(n) !== i), [], `${at}: rule and token names are unique`);
      for (const rule of config.oidc_rules || []) {
        for (const k of Object.keys(rule)) assert.ok(RULE_KEYS.has(k), `${at}: [[oidc_rules]] ${rule.name} has no key ${k}`);
        assert.match(rule.name, NAME, `${at}: rule name`);
        if (rule.issuer !== undefined) assert.ok(issuers.some((i) => i.name === rule.issuer), `${at}: rule ${rule.name} names issuer ${rule.issuer}, which the example does not define`);
        if (rule.deny) {
          for (const k of ['role', 'write_prefix', 'read_prefixes']) assert.equal(rule[/** @type {keyof Rule} */ (k)], undefined, `${at}: deny rule ${rule.name} has ${k}`);
        } else {
          assert.ok(ROLES.has(/** @type {string} */ (rule.role)), `${at}: rule ${rule.name}: role ${rule.role}`);
        }
        for (const [claim, p] of Object.entries(rule.claims || {})) {
          const ok = typeof p === 'string' || (Array.isArray(p) && p.length > 0 && p.every((e) => typeof e === 'string'));
          assert.ok(ok, `${at}: rule ${rule.name}: claim ${claim} is a string or a list of strings`);
        }
      }
    }
  });

  test("the README's GitHub rules: main pushes write trusted/; pull requests (pull_request_target too) and everything else never do", () => {
    const [{ config }] = oidcConfigs('README.md');
    const mainPush = access(config, 'github', githubClaims());
    assert.deepEqual(mainPush, { rule: 'main', refused: false, role: 'read-write', write: 'trusted', read: ['trusted'] });
    const pr = access(config, 'github', githubClaims({ ref: 'refs/pull/42/merge', event: 'pull_request' }));
    assert.deepEqual(pr, { rule: 'pr', refused: false, role: 'read-write', write: 'pr', read: ['trusted', 'pr'] });
    const prTarget = access(config, 'github', githubClaims({ ref: 'refs/heads/main', event: 'pull_request_target' }));
    assert.equal(prTarget.rule, 'pr', 'pull_request_target carries main\'s ref and must not be trusted');
    for (const event of ['issue_comment', 'workflow_run', 'workflow_dispatch', 'schedule']) {
      const r = access(config, 'github', githubClaims({ event }));
      assert.notEqual(r.write, 'trusted', `${event} on main must not write trusted/`);
    }
    assert.equal(access(config, 'github', githubClaims({ repository: 'evil/monorepo' })).refused, true, 'another repository\'s main');
    assert.equal(access(config, 'github', githubClaims({ repository: 'acme/monorepo', ref: 'main' })).refused, true, 'ref without refs/heads/ never matches');
  });

  test("docs/serve.md's rules: main and release branches trusted, every other job of the repository in pr/, a deny before a broader rule", () => {
    const [{ config }] = oidcConfigs('docs/serve.md');
    assert.equal(access(config, 'github', githubClaims()).write, 'trusted');
    assert.equal(access(config, 'github', githubClaims({ ref: 'refs/heads/release/1.2' })).rule, 'release');
    assert.equal(access(config, 'github', githubClaims({ ref: 'refs/heads/release/1.2/hotfix' })).rule, 'release', '** crosses segments');
    for (const [ref, event] of [['refs/pull/42/merge', 'pull_request'], ['refs/heads/main', 'pull_request_target'], ['refs/heads/main', 'issue_comment'], ['refs/heads/feature/x', 'push'], ['refs/heads/release/1.2', 'workflow_dispatch']]) {
      const r = access(config, 'github', githubClaims({ ref, event }));
      assert.deepEqual([r.rule, r.write], ['pr', 'pr'], `${event} on ${ref}`);
    }
    assert.deepEqual(access(config, 'github', githubClaims({ repository: 'acme/sandbox' })), { rule: 'sandbox', refused: true });
    const other = access(config, 'github', githubClaims({ repository: 'acme/tools' }));
    assert.deepEqual([other.rule, other.role, other.read], ['acme-read', 'read-only', ['trusted']]);
    assert.equal(access(config, 'github', githubClaims({ repository: 'someone/monorepo' })).refused, true);
    // Claim matching as documented: lists, numbers by their JSON text, missing or object claims never.
    assert.equal(matcher('refs/heads/release/*')('refs/heads/release/1.2/hotfix'), false, '* stays within a segment');
    const withId = { oidc_rules: [{ name: 'id', claims: { repository_id: '123456', ref_protected: 'true' }, role: 'read-only' }] };
    assert.equal(firstMatch(withId, 'x', { repository_id: 123456, ref_protected: true })?.name, 'id');
    assert.equal(firstMatch(withId, 'x', { repository_id: '123456', ref_protected: 'true' })?.name, 'id');
    assert.equal(firstMatch(withId, 'x', { repository_id: ['123456'], ref_protected: 'true' }), null);
    assert.equal(firstMatch(withId, 'x', { ref_protected: 'true' }), null);
  });

  test("docs/serve.md's GitLab rules: protected main pipelines trusted; merge requests, other branches, a GitHub-style ref and other projects not", () => {
    const gitlab = oidcConfigs('docs/serve.md').find(({ config }) => (config.oidc_issuers || []).some((i) => i.issuer === 'https://gitlab.com'));
    assert.ok(gitlab, 'docs/serve.md has a GitLab example');
    const { config } = gitlab;
    assert.deepEqual(access(config, 'gitlab', gitlabClaims()), { rule: 'gitlab-main', refused: false, role: 'read-write', write: 'trusted', read: ['trusted'] });
    for (const claims of [
      gitlabClaims({ ref: 'feature-x', source: 'merge_request_event', protectedRef: false }),
      gitlabClaims({ ref: 'main', source: 'merge_request_event' }),
      gitlabClaims({ protectedRef: false }),
      gitlabClaims({ ref: 'refs/heads/main' }),
    ]) {
      assert.equal(access(config, 'gitlab', claims).write, 'pr', JSON.stringify(claims));
    }
    assert.equal(access(config, 'gitlab', gitlabClaims({ project: 'someone/monorepo' })).refused, true);
    assert.equal(access(config, 'gitlab', { ...gitlabClaims(), ref_protected: true }).rule, 'gitlab-main', 'a boolean claim by its JSON text');
  });

  test('the GitHub Actions workflows pass actionlint and ask for id-token: write and the audience of the server examples', () => {
    const { github } = ciExamples();
    assert.ok(github.length >= 1, 'a GitHub Actions workflow example');
    const audiences = new Set([...oidcConfigs('README.md'), ...oidcConfigs('docs/serve.md')]
      .flatMap(({ config }) => (config.oidc_issuers || []).flatMap((i) => [i.audience].flat())));
    const dir = path.join(tmp, '.github', 'workflows');
    fs.mkdirSync(dir, { recursive: true });
    spawnSync('git', ['init', '-q'], { cwd: tmp });
    const files = github.map(({ block, doc }, n) => {
      const jobs = Object.values(doc.jobs);
      const perms = (/** @type {any} */ j) => ({ ...(doc.permissions || {}), ...(j.permissions || {}) });
      for (const j of jobs) {
        assert.equal(perms(j)['id-token'], 'write', `${where(block)}: id-token: write`);
        assert.equal(perms(j).contents, 'read', `${where(block)}: contents: read`);
        const aud = { ...(doc.env || {}), ...(j.env || {}) }.NX_OPEN_CACHE_OIDC_AUDIENCE;
        assert.ok(audiences.has(aud), `${where(block)}: NX_OPEN_CACHE_OIDC_AUDIENCE ${aud} is an audience of the server examples (${[...audiences]})`);
      }
      const file = path.join(dir, `example-${n}.yml`);
      fs.writeFileSync(file, block.text);
      return file;
    });
    const r = spawnSync(ACTIONLINT, ['-shellcheck', SHELLCHECK, '-pyflakes', '', ...files], { cwd: tmp, encoding: 'utf8', timeout: RUN_TIMEOUT_MS });
    assert.equal(r.status, 0, `actionlint: ${r.error ? r.error.message : ''}${r.stdout}${r.stderr}\n(blocks: ${github.map((g) => where(g.block)).join(', ')})`);
  });

  test("the GitLab CI job's id_tokens fill NX_OPEN_CACHE_TOKEN with the server's audience", () => {
    const { gitlab } = ciExamples();
    assert.ok(gitlab.length >= 1, 'a GitLab CI example');
    const audiences = new Set(oidcConfigs('README.md').flatMap(({ config }) => (config.oidc_issuers || []).flatMap((i) => [i.audience].flat())));
    for (const { block, job, doc } of gitlab) {
      assert.deepEqual(Object.keys(doc.id_tokens), ['NX_OPEN_CACHE_TOKEN'], `${where(block)}: ${job}`);
      assert.ok(audiences.has(doc.id_tokens.NX_OPEN_CACHE_TOKEN.aud), `${where(block)}: ${job}: aud ${doc.id_tokens.NX_OPEN_CACHE_TOKEN.aud}`);
      assert.ok(Array.isArray(doc.script) && doc.script.length > 0, `${where(block)}: ${job}: script`);
    }
  });
});
