'use strict';
/**
 * The README's first 200 lines, run as a new user would: every shell command in them (code blocks
 * marked sh / bash / shell) runs in a fresh Nx workspace, in README order, and exits 0. The package is
 * the `npm pack` tarball of this repository (as in the other end-to-end suites). The first run stores
 * every task and its summary line says so. A second fresh clone on the same machine gets every task
 * from Nx's local cache under ~/.nx/ (Nx 24 shares it between clones, as the README warns), and with
 * the README's fresh local cache (NX_CACHE_DIRECTORY) restores every task from the remote cache.
 *
 * What the test changes in a command so that it can run here, and the commands it cannot run, are
 * listed below (SUBSTITUTIONS, SKIPPED) with the reason; a command that is in neither list runs as
 * written. A README change that adds a command therefore runs it, or fails here until it is listed.
 *
 * Run: node --test --test-concurrency=1 __tests__/readme.test.js
 * Needs a native build (*.node) in the repository root: `node scripts/ensure-native.js` first.
 */

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { describe, test, before, after } = require('node:test');

const {
  NX_VERSION,
  REPO_ROOT,
  NxWorkspace,
  packPlugin,
  disposePack,
  cleanEnv,
  runProcess,
  storeObjects,
  isRemoteHit,
  taskLines,
} = require('./helpers/nx-workspace.js');
const { startServe, serveEnv } = require('./helpers/serve-process.js');

/** @typedef {import('./helpers/nx-workspace.js').RunResult} RunResult */

/** How much of the README a user reads before the first run; every command in it is run here. */
const README_LINES = 200;
/** The shared mount of the README's examples; a temp directory stands for it. */
const README_MOUNT = '/mnt/nx-cache';
/** Upper bound for one README command (an npm install or an nx run). */
const COMMAND_TIMEOUT_MS = 240_000;

/**
 * Commands of the first 200 lines that this test does not run, and why.
 * @type {Map<string, string>}
 */
const SKIPPED = new Map([
  ['npm ci && npm run demo', 'runs in a clone of this repository, not in a user workspace (builds the addon and the demo workspace): .ci/run and examples/run-demo.js cover it'],
  ['npm test', "this repository's whole test suite, of which this test is part: .ci/run runs it"],
]);

/**
 * The command that starts the second clone's part: "on another machine" (here: a second clone on
 * the same machine, with the fresh local cache the README gives for that case).
 */
const SECOND_CLONE_COMMAND = /^NX_CACHE_DIRECTORY=/;

/**
 * @typedef {{ line: number, text: string, section: string }} ReadmeCommand
 */

/**
 * The shell commands in the first `maxLines` lines of a markdown text: every line of a fenced block
 * whose info string is sh, bash, shell or console (the fence opening within those lines), without
 * comment-only lines; a line ending in `\` continues on the next.
 * @param {string} markdown
 * @param {number} maxLines
 * @returns {ReadmeCommand[]}
 */
function shellCommands(markdown, maxLines) {
  const lines = markdown.split('\n');
  /** @type {ReadmeCommand[]} */ const commands = [];
  let section = '';
  let inShell = false;
  let inFence = false;
  let pending = '';
  let pendingLine = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = /^```\s*([\w-]*)/.exec(line);
    if (fence) {
      if (!inFence) {
        if (i >= maxLines) break;
        inFence = true;
        inShell = ['sh', 'bash', 'shell', 'console'].includes(fence[1]);
      } else {
        inFence = false;
        inShell = false;
      }
      continue;
    }
    if (!inFence) {
      const heading = /^#{1,6}\s+(.*)$/.exec(line);
      if (heading) section = heading[1].trim();
      continue;
    }
    if (!inShell) continue;
    const text = line.replace(/^\$\s+/, '');
    if (!pending && (text.trim() === '' || text.trim().startsWith('#'))) continue;
    if (!pending) pendingLine = i + 1;
    if (text.endsWith('\\')) {
      pending += `${text.slice(0, -1)} `;
      continue;
    }
    commands.push({ line: pendingLine, text: (pending + text).trim(), section });
    pending = '';
  }
  return commands;
}

/**
 * The command without its trailing comment (`cmd   # what it does`), as matched against SKIPPED.
 * @param {string} text
 */
function withoutComment(text) {
  return text.replace(/\s+#\s.*$/, '').trim();
}

/** @param {RunResult} r */
function show(r) {
  return `\n$ ${r.command}\nexit=${r.code} signal=${r.signal} timedOut=${r.timedOut}\n--- output ---\n${r.output}\n--------------`;
}

/**
 * Where Nx 24 keeps the local cache of a workspace that has no Nx Cloud id and no git remote:
 * `~/.nx/<first 16 hex of sha256(sha256(<first commit> + '#' + <path below the git root>))>/cache`
 * (nx/src/utils/cache-directory.js and workspace-id.js of nx 24.0.6).
 * @param {string} root a workspace at its git root
 * @returns {string}
 */
function sharedNxCacheDir(root) {
  const r = spawnSync('git', ['rev-list', '--max-parents=0', 'HEAD'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `git rev-list: ${r.stderr}`);
  const sha256 = (/** @type {string} */ s) => crypto.createHash('sha256').update(s).digest('hex');
  const repoKey = sha256(`${r.stdout.trim()}#`);
  return path.join(os.homedir(), '.nx', sha256(repoKey).slice(0, 16), 'cache');
}

/**
 * GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped, spaces as `-`.
 * @param {string} heading
 */
function anchorOf(heading) {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

/**
 * The anchors of a markdown file's headings (outside code blocks), with GitHub's -1, -2 for repeats.
 * @param {string} markdown
 * @returns {Set<string>}
 */
function anchorsOf(markdown) {
  /** @type {Set<string>} */ const anchors = new Set();
  let inFence = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) inFence = !inFence;
    const heading = !inFence && /^#{1,6}\s+(.*)$/.exec(line);
    if (!heading) continue;
    const base = anchorOf(heading[1]);
    let anchor = base;
    for (let n = 1; anchors.has(anchor); n++) anchor = `${base}-${n}`;
    anchors.add(anchor);
  }
  return anchors;
}

/** The README as a user sees it, and its commands. */
const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const commands = shellCommands(readme, README_LINES);

/** @type {string} */ let base;
/** @type {string} */ let tarball;
/** @type {string} */ let store;
/** @type {NxWorkspace} */ let first;
/** @type {NxWorkspace} */ let second;
/** @type {NodeJS.ProcessEnv} */ let userEnv;
/** Nx's local cache of the test workspace under ~/.nx/. @type {string | undefined} */ let nxShared;
/** What each README command printed, by README line. @type {Map<number, RunResult>} */
const results = new Map();

/**
 * What the test changes in a command so that it runs here; each change says why.
 * @param {string} text
 * @returns {string}
 */
function adapt(text) {
  let out = text;
  // The package under test is this repository's `npm pack` tarball, not the registry's package.
  out = out.replace(/^npm install -D nx-open-cache$/, `npm install -D --prefer-offline --no-audit --no-fund ${tarball}`);
  // A temp directory stands for the shared mount.
  out = out.split(README_MOUNT).join(store);
  return out;
}

/**
 * Runs one README command with bash in `cwd`, with the user's environment.
 * @param {ReadmeCommand} cmd
 * @param {string} cwd
 * @returns {Promise<RunResult>}
 */
async function runReadmeCommand(cmd, cwd) {
  const r = await runProcess('bash', ['-c', adapt(cmd.text)], { cwd, env: userEnv, timeoutMs: COMMAND_TIMEOUT_MS });
  results.set(cmd.line, r);
  assert.equal(r.timedOut, false, `README line ${cmd.line} (${cmd.section}) timed out${show(r)}`);
  assert.equal(r.code, 0, `README line ${cmd.line} (${cmd.section}) failed${show(r)}`);
  return r;
}

/**
 * `npx nx-open-cache summary` in a workspace (the summary of its latest run, whether the daemon
 * printed it or not).
 * @param {string} cwd
 */
async function summaryOf(cwd) {
  const r = await runProcess('npx', ['nx-open-cache', 'summary'], { cwd, env: userEnv, timeoutMs: 60_000 });
  assert.equal(r.code, 0, `nx-open-cache summary failed${show(r)}`);
  return r;
}

/** @param {string} cwd */
async function stopNx(cwd) {
  if (!fs.existsSync(path.join(cwd, 'node_modules', 'nx'))) return;
  await runProcess('npx', ['nx', 'daemon', '--stop'], { cwd, env: { ...userEnv, NX_DAEMON: 'true' }, timeoutMs: 60_000 }).catch(() => undefined);
}

before(async () => {
  tarball = packPlugin();
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-readme-'));
  store = path.join(base, 'mnt', 'nx-cache');
  // The user's home as it is: Nx 24 shares a workspace's local cache between its clones only under a
  // home outside the shared temp dir. The workspace's own directory there is removed afterwards.
  userEnv = cleanEnv({ npm_config_update_notifier: 'false' });
  // The README starts in an existing Nx workspace: four projects, nx installed, one git commit.
  first = new NxWorkspace(base);
  first.scaffold();
  const nxInstall = await runProcess(
    'npm',
    ['install', '--prefer-offline', '--no-audit', '--no-fund', '--save-dev', `nx@${NX_VERSION}`],
    { cwd: first.root, env: userEnv, timeoutMs: COMMAND_TIMEOUT_MS },
  );
  assert.equal(nxInstall.code, 0, `installing nx failed${show(nxInstall)}`);
  nxShared = sharedNxCacheDir(first.root);
});

after(async () => {
  for (const ws of [first, second]) if (ws) await stopNx(ws.root);
  // This workspace's own directory under ~/.nx (its local cache and database), never another's.
  if (nxShared) fs.rmSync(path.dirname(nxShared), { recursive: true, force: true, maxRetries: 3 });
  if (base) fs.rmSync(base, { recursive: true, force: true, maxRetries: 3 });
  disposePack();
});

describe("the README's first 200 lines", () => {
  test('hold the get-started commands; every command is run here or listed as skipped with its reason', () => {
    const texts = commands.map((c) => withoutComment(c.text));
    for (const expected of ['npm install -D nx-open-cache', `npx nx g nx-open-cache:init --path=${README_MOUNT}`, 'npx nx run-many -t build', 'npx nx-open-cache summary']) {
      assert.ok(texts.includes(expected), `the first ${README_LINES} lines of README.md have no \`${expected}\`: ${JSON.stringify(texts)}`);
    }
    for (const skipped of SKIPPED.keys()) {
      assert.ok(texts.includes(skipped), `SKIPPED lists \`${skipped}\`, which is no longer in the README's first ${README_LINES} lines`);
    }
    assert.equal(commands.filter((c) => SECOND_CLONE_COMMAND.test(c.text)).length, 1,
      `exactly one command for the second clone (${SECOND_CLONE_COMMAND}): ${JSON.stringify(texts)}`);
  });

  test('every command exits 0 in a fresh workspace; the first run stores and sums up every task; a second clone hits Nx\'s shared local cache, and with a fresh one the remote cache', async () => {
    const names = first.projects.map((p) => p.name).sort();
    let cwd = first.root;
    let firstRunChecked = false;
    for (const cmd of commands) {
      const plain = withoutComment(cmd.text);
      if (SKIPPED.has(plain)) continue;
      if (SECOND_CLONE_COMMAND.test(cmd.text)) {
        // "Commit nx.json. On another machine or CI job ...": the second machine is a fresh clone.
        const git = (/** @type {string[]} */ ...args) => spawnSync('git', args, { cwd: first.root, encoding: 'utf8', env: userEnv });
        assert.equal(git('add', '-A').status, 0);
        assert.equal(git('commit', '-q', '-m', 'nx-open-cache').status, 0, 'commit of the generator changes');
        second = new NxWorkspace(base);
        second.root = path.join(base, 'clone');
        const clone = spawnSync('git', ['clone', '-q', first.root, second.root], { encoding: 'utf8', env: userEnv });
        assert.equal(clone.status, 0, `git clone failed: ${clone.stderr}`);
        const ci = await runProcess('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: second.root, env: userEnv, timeoutMs: COMMAND_TIMEOUT_MS });
        assert.equal(ci.code, 0, `npm ci in the second clone failed${show(ci)}`);
        cwd = second.root;
        // The README: "The second clone shows [local cache], not [remote cache]: Nx 24 keeps its
        // local cache per repository in your home directory (~/.nx/<workspace id>/cache)".
        const local = await runProcess('npx', ['nx', 'run-many', '-t', 'build'], { cwd, env: userEnv, timeoutMs: COMMAND_TIMEOUT_MS });
        assert.equal(local.code, 0, `plain run in the second clone failed${show(local)}`);
        for (const p of names) {
          assert.ok(taskLines(local.output, p).some((l) => l.includes('[local cache]')), `second clone, ${p}: not a local cache hit${show(local)}`);
        }
        const shared = /** @type {string} */ (nxShared);
        assert.ok(fs.existsSync(shared) && fs.readdirSync(shared).length > 0, `Nx's local cache is not at ${shared}`);
        second.cleanOutputs();
      }
      const r = await runReadmeCommand(cmd, cwd);
      if (plain === 'npx nx run-many -t build' && cwd === first.root && !firstRunChecked) {
        firstRunChecked = true;
        assert.deepEqual(first.builtProjects().sort(), names, `the first run builds every project${show(r)}`);
        assert.equal(storeObjects(store).length, names.length, `the first run stores one object per task in ${store}${show(r)}`);
      }
      if (plain === 'npx nx-open-cache summary' && cwd === first.root) {
        const line = r.stdout.split('\n').find((l) => l.startsWith('nx-open-cache: '));
        assert.ok(line, `no summary line${show(r)}`);
        assert.match(line, new RegExp(`^nx-open-cache: 0 hits, ${names.length} misses, ${names.length} stored, 0 B down, [0-9.]+ KiB up, 0 errors \\(fs ${store.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}, read-write\\)$`), `summary line${show(r)}`);
      }
      if (SECOND_CLONE_COMMAND.test(cmd.text)) {
        for (const p of names) {
          assert.ok(isRemoteHit(r.output, p), `second clone, ${p}: not a remote cache hit: ${JSON.stringify(taskLines(r.output, p))}${show(r)}`);
        }
        const summary = await summaryOf(second.root);
        const line = summary.stdout.split('\n').find((l) => l.startsWith('nx-open-cache: '));
        assert.match(line || '', new RegExp(`^nx-open-cache: ${names.length} hits, 0 misses, 0 stored, `), `second clone's summary${show(summary)}`);
      }
    }
    assert.ok(second, 'the second clone ran');
  });

  test("Nx's own client pointed directly at `serve` fails the run on a wrong token, as the README says (the plugin's http backend does not: http-backend.test.js)", async () => {
    const storage = path.join(base, 'serve-storage');
    const server = await startServe(['--storage', `fs:${storage}`], {
      env: serveEnv({ NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${crypto.randomBytes(24).toString('hex')}` }),
    });
    try {
      const r = await runProcess('npx', ['nx', 'run-many', '-t', 'build'], {
        cwd: first.root,
        env: {
          ...userEnv,
          NX_CACHE_DIRECTORY: fs.mkdtempSync(path.join(base, 'nx-cache-')),
          NX_SELF_HOSTED_REMOTE_CACHE_SERVER: server.url,
          NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: 'not-a-token-of-this-server',
        },
        timeoutMs: COMMAND_TIMEOUT_MS,
      });
      assert.equal(r.timedOut, false, `timed out${show(r)}`);
      assert.notEqual(r.code, 0, `Nx's own client with a wrong token: the run was green${show(r)}`);
      assert.match(r.output, /401|unauthori[sz]ed/i, `Nx's own client with a wrong token: the failure is not the 401${show(r)}`);
    } finally {
      await server.stop();
    }
  });

  test('every relative link of the README and docs/*.md names a file of this repository and, with #, one of its headings', () => {
    const docsDir = path.join(REPO_ROOT, 'docs');
    const pages = ['README.md', ...fs.readdirSync(docsDir).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
    /** @type {string[]} */ const broken = [];
    let links = 0;
    for (const page of pages) {
      const text = fs.readFileSync(path.join(REPO_ROOT, page), 'utf8').replace(/^```[\s\S]*?^```/gm, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/i.test(target)) continue;
        links += 1;
        const [file, anchor] = target.split('#');
        const resolved = file ? path.join(path.dirname(path.join(REPO_ROOT, page)), file) : path.join(REPO_ROOT, page);
        if (!fs.existsSync(resolved)) {
          broken.push(`${page}: ${target} (no such file)`);
          continue;
        }
        if (anchor && !anchorsOf(fs.readFileSync(resolved, 'utf8')).has(anchor)) broken.push(`${page}: ${target} (no such heading)`);
      }
    }
    assert.ok(links > 20, `only ${links} relative links found`);
    assert.deepEqual(broken, []);
  });
});
