'use strict';
/**
 * The server's container image (Containerfile) built and run with Podman:
 * - built from the repository's Containerfile by scripts/container-image.js: by default the fast
 *   path (`--target runtime-prebuilt`: the host's target/release/nx-open-cache-server in place of
 *   the Rust build stage); with NXOC_CONTAINER_BUILD=full the default target `runtime` (the binary
 *   compiled in the build stage; about 15 minutes here). Stand-ins for the base images are made
 *   locally (no registry here), named localhost/nxoc-standin/..., kept in Podman's storage.
 * - run as it is deployed: non-root, read-only root filesystem with a tmpfs /tmp, all capabilities
 *   dropped, the port published on 127.0.0.1 only, fs storage on a bind mount (and a named volume),
 *   tokens from the environment and from a mounted tokens file; /healthz, /readyz and the image's
 *   HEALTHCHECK; a token in the build's environment is nowhere in the saved image (config, history,
 *   layers), and no token is in the container's logs.
 * - object storage from the container (moto S3 on the host's loopback): a 9 MiB upload spooled to
 *   /tmp (the only writable path besides none: no /data volume) is stored in the bucket and read back.
 * - a real Nx workspace (nx from npm, no plugin: Nx's own self-hosted cache client) stores every task
 *   through the container, and a second copy of the workspace, with its own empty Nx cache, restores
 *   every task from it.
 *
 * Podman (and runc) come from scripts/system-deps.js; Podman runs rootful, as root or through
 * `sudo -n` (GitHub's runners). Where it cannot (not installed, neither root nor password-less sudo),
 * this file fails and says why: it is never skipped. Containers carry the label nxoc-test; ones left
 * by an interrupted run are removed at the start of the next.
 */

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { after, before, describe, test } = require('node:test');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const image = require('../scripts/container-image.js');
const emulators = require('../scripts/emulators.js');
const { request } = require('./helpers/serve-process.js');
const { nxArtifact } = require('./helpers/hostile-tar.js');
const {
  NxWorkspace,
  createWorkspace,
  disposePack,
  isRemoteHit,
  storeObjects,
} = require('./helpers/nx-workspace.js');

const FULL = process.env.NXOC_CONTAINER_BUILD === 'full';
const RUN_ID = crypto.randomBytes(4).toString('hex');
const TAG = `localhost/nxoc-test-${RUN_ID}:test`;
/** Tokens of this run (never in the image; checked to be absent from it and from the logs). */
const RW = `rw-${crypto.randomBytes(16).toString('hex')}`;
const RO = `ro-${crypto.randomBytes(16).toString('hex')}`;
const FILE_RW = `file-${crypto.randomBytes(16).toString('hex')}`;
/** In the environment of `podman build` only: must not end up anywhere in the image. */
const BUILD_SECRET = `build-${crypto.randomBytes(16).toString('hex')}`;
/** Label of every container and image this file makes (stale ones are removed in before()). */
const LABEL = 'nxoc-test';
const NONROOT = 65532;
/** Upper bound (count x 250 ms) for a container to answer /healthz. */
const READY_ATTEMPTS = 120;
/** The image must stay small: distroless cc (~3.5 MB) + the ~15 MB binary. */
const MAX_IMAGE_BYTES = 64 * 1024 * 1024;

const problem = image.podmanProblems();

/** @type {string[]} */ const containers = [];
/** @type {string[]} */ const volumes = [];
/** @type {string[]} */ const newDangling = [];
let built = false;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-container-'));

/** @returns {string[]} ids of dangling images (left by the build's intermediate stages) */
function danglingImages() {
  return image.podman(['images', '-q', '--no-trunc', '--filter', 'dangling=true']).stdout.split('\n').filter(Boolean);
}

/** @returns {Promise<number>} a free TCP port on 127.0.0.1 */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = addr && typeof addr === 'object' ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts the image as it is deployed; resolves once /healthz answers 200.
 * @param {{ env?: Record<string, string>, mounts?: string[], label: string, hostNetwork?: boolean, tmpMount?: boolean }} opts
 *   tmpMount: /tmp is one of `mounts` (not a tmpfs)
 * @returns {Promise<{ name: string, url: string, logs: () => string }>}
 */
async function startContainer(opts) {
  const name = `nxoc-test-${RUN_ID}-${opts.label}`;
  const port = await freePort();
  containers.push(name);
  image.podman([
    'run', '-d', '--name', name,
    ...image.runOptions(),
    '--read-only', '--read-only-tmpfs=false',
    ...(opts.tmpMount ? [] : ['--tmpfs', '/tmp:rw,size=64m,mode=1777']),
    '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
    // The health check is run on demand below (`podman healthcheck run`); Podman's own timer for
    // it needs systemd, which this host does not run.
    '--health-interval', 'disable',
    '--label', `${LABEL}=${RUN_ID}`,
    // Host network (to reach an emulator on the host's loopback): the server listens on 127.0.0.1.
    ...(opts.hostNetwork ? ['--network', 'host', '-e', `NX_OPEN_CACHE_SERVER_LISTEN=127.0.0.1:${port}`] : ['-p', `127.0.0.1:${port}:3000`]),
    ...Object.entries(opts.env || {}).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    ...(opts.mounts || []).flatMap((m) => ['-v', m]),
    TAG,
  ]);
  const url = `http://127.0.0.1:${port}`;
  const logs = () => {
    const r = image.podman(['logs', name], { allowFail: true });
    return `${r.stdout}${r.stderr}`;
  };
  for (let i = 0; i < READY_ATTEMPTS; i++) {
    const state = image.podman(['inspect', '--format', '{{.State.Status}}', name], { allowFail: true }).stdout.trim();
    if (state !== 'running' && state !== 'created') assert.fail(`container ${name} is ${state}:\n${logs()}`);
    const ok = await request(`${url}/healthz`).then((r) => r.status === 200, () => false);
    if (ok) return { name, url, logs };
    await new Promise((r) => setTimeout(r, 250));
  }
  return assert.fail(`container ${name} did not answer /healthz on ${url}:\n${logs()}`);
}

/** @param {string} name */
function removeContainer(name) {
  image.podman(['rm', '-f', '-v', '-t', '10', name], { allowFail: true });
}

/** A directory under the test's temp dir owned by the image's user (as a bind mount needs). */
function nonrootDir(/** @type {string} */ label) {
  const d = path.join(tmp, label);
  fs.mkdirSync(d, { recursive: true });
  image.chownNonroot(d);
  return d;
}

describe('prebuilt binary: glibc no newer than the runtime image\'s', () => {
  test('highestGlibc reads readelf symbol versions (the build refuses above 2.36)', () => {
    const sample = [
      '    12: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND strtol@GLIBC_2.2.5 (2)',
      '    13: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND __isoc23_strtol@GLIBC_2.38 (9)',
      '    14: 0000000000000000     0 FUNC    GLOBAL DEFAULT  UND _dl_x@GLIBC_PRIVATE (5)',
    ].join('\n');
    assert.equal(image.highestGlibc(sample), '2.38');
    assert.equal(image.highestGlibc('strtol@GLIBC_2.2.5\nx@GLIBC_2.17'), '2.17');
    assert.equal(image.highestGlibc('no versions'), null);
    assert.equal(image.RUNTIME_GLIBC, '2.36');
    // A binary needing more than the runtime's glibc is refused, naming both versions (node's own
    // executable as the binary: it needs some GLIBC_2.x; a limit of 2.0 is below any).
    const node = process.execPath;
    const need = image.checkGlibc(node, '99.0');
    assert.ok(need, `${node} has no GLIBC_ symbol versions`);
    assert.throws(() => image.checkGlibc(node, '2.0'), (/** @type {Error} */ e) => e.message.includes(`GLIBC_${need}`) && e.message.includes('2.0'));
  });
});

describe(`container image (${FULL ? 'full multi-stage build' : 'fast path: prebuilt binary'})`, () => {
  before(() => {
    // No skip: a machine that cannot build the image fails here, saying why.
    assert.equal(problem, null, `the container image cannot be built here: ${problem}`);
    // Containers and images an interrupted earlier run left behind.
    const stale = image.podman(['ps', '-aq', '--filter', `label=${LABEL}`]).stdout.split('\n').filter(Boolean);
    if (stale.length) image.podman(['rm', '-f', '-v', '-t', '0', ...stale], { allowFail: true });
    const staleImages = image.podman(['images', '-q', '--filter', `label=${LABEL}`]).stdout.split('\n').filter(Boolean);
    if (staleImages.length) image.podman(['rmi', '-f', ...new Set(staleImages)], { allowFail: true });
    const danglingBefore = new Set(danglingImages());
    // A token in the build's environment (as a careless pipeline might have): checked absent below.
    const had = process.env.NX_OPEN_CACHE_SERVER_TOKENS;
    process.env.NX_OPEN_CACHE_SERVER_TOKENS = `ci:read-write:${BUILD_SECRET}`;
    try {
      image.buildImage({ full: FULL, tag: TAG, quiet: true, labels: [`${LABEL}=${RUN_ID}`], log: () => undefined });
    } finally {
      if (had === undefined) delete process.env.NX_OPEN_CACHE_SERVER_TOKENS;
      else process.env.NX_OPEN_CACHE_SERVER_TOKENS = had;
      for (const id of danglingImages()) if (!danglingBefore.has(id)) newDangling.push(id);
    }
    built = true;
  });

  after(() => {
    for (const c of containers) removeContainer(c);
    for (const v of volumes) image.podman(['volume', 'rm', '-f', v], { allowFail: true });
    if (built) image.podman(['rmi', '-f', TAG], { allowFail: true });
    for (const id of newDangling) image.podman(['rmi', id], { allowFail: true });
    image.removeTree(tmp);
    disposePack();
  });

  test('the image: non-root, exec-form health check with the binary, no secret, OCI labels, small', (t) => {
    // The stand-ins scripts/container-image.js makes stand for the bases the recipe names.
    const recipe = fs.readFileSync(path.join(__dirname, '..', 'Containerfile'), 'utf8');
    assert.ok(recipe.includes(`ARG RUST_IMAGE=${image.RUST_PUBLIC}\n`), 'Containerfile RUST_IMAGE != scripts/container-image.js RUST_PUBLIC');
    assert.ok(recipe.includes(`ARG RUNTIME_IMAGE=${image.RUNTIME_PUBLIC}\n`), 'Containerfile RUNTIME_IMAGE != scripts/container-image.js RUNTIME_PUBLIC');
    const [info] = JSON.parse(image.podman(['image', 'inspect', TAG]).stdout);
    const config = info.Config;
    assert.equal(config.User, `${NONROOT}:${NONROOT}`);
    assert.deepEqual(config.Entrypoint, ['/usr/local/bin/nx-open-cache-server']);
    assert.ok(config.ExposedPorts && '3000/tcp' in config.ExposedPorts, JSON.stringify(config.ExposedPorts));
    assert.ok(config.Volumes && '/data' in config.Volumes, JSON.stringify(config.Volumes));
    assert.ok(config.Env.includes('NX_OPEN_CACHE_SERVER_LISTEN=0.0.0.0:3000'), config.Env.join('\n'));
    assert.ok(config.Env.includes('NX_OPEN_CACHE_SERVER_STORAGE=fs:/data'), config.Env.join('\n'));
    // No token of any kind is part of the image.
    assert.ok(!config.Env.some((/** @type {string} */ e) => /TOKEN|SECRET|PASSWORD|KEY/i.test(e.split('=')[0])), config.Env.join('\n'));
    const health = info.Healthcheck || config.Healthcheck;
    assert.ok(health, 'no HEALTHCHECK in the image');
    assert.deepEqual(health.Test, ['CMD', '/usr/local/bin/nx-open-cache-server', 'healthcheck']);
    const labels = info.Labels || config.Labels || {};
    for (const l of ['title', 'description', 'version', 'licenses', 'source']) {
      assert.ok(labels[`org.opencontainers.image.${l}`], `label org.opencontainers.image.${l} missing`);
    }
    assert.equal(labels['org.opencontainers.image.version'], require('../package.json').version);
    assert.equal(labels['org.opencontainers.image.revision'], image.revision());
    assert.equal(labels['org.opencontainers.image.base.name'], image.RUNTIME_BASE, 'base.name follows RUNTIME_IMAGE');
    const history = image.podman(['image', 'history', '--no-trunc', '--format', '{{.CreatedBy}}', TAG]).stdout;
    const everything = JSON.stringify(info) + history;
    assert.doesNotMatch(everything, /read-write:[^\s"]/, 'a token (name:role:secret) is in the image');
    // The whole image as saved (config, history and every layer's files): the token that was in
    // the build's environment is in none of it.
    const saved = path.join(tmp, 'image.tar');
    image.podman(['save', '--format', 'docker-archive', '-o', saved, TAG]);
    const bytes = fs.readFileSync(saved);
    assert.ok(bytes.length > 4 * 1024 * 1024, `saved image is ${bytes.length} bytes`);
    assert.ok(bytes.includes(Buffer.from('nx-open-cache-server')), 'the saved image does not hold the binary');
    assert.ok(!bytes.includes(Buffer.from(BUILD_SECRET)), 'the token of the build environment is in the image');
    image.removeTree(saved);
    assert.ok(info.Size < MAX_IMAGE_BYTES, `image is ${info.Size} bytes`);
    t.diagnostic(`image size: ${(info.Size / 1e6).toFixed(1)} MB (${info.Size} bytes; podman image inspect .Size)`);
  });

  test('without a token the server refuses to start (nothing baked in lets it serve)', () => {
    const name = `nxoc-test-${RUN_ID}-notoken`;
    containers.push(name);
    const r = image.podman(
      ['run', '--name', name, ...image.runOptions(), '--label', `${LABEL}=${RUN_ID}`, '--read-only', '--network', 'none', '--health-interval', 'disable', TAG],
      { allowFail: true, timeoutMs: 60_000 },
    );
    assert.equal(r.code, 2, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /token/i);
    removeContainer(name);
  });

  /** @type {{ name: string, url: string, logs: () => string } | undefined} */
  let main;
  let store = '';

  test('read-only root, tmpfs /tmp, non-root, tokens from the environment, fs storage on a bind mount', async () => {
    store = nonrootDir('store');
    main = await startContainer({
      label: 'env',
      env: { NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${RW},dev:read-only:${RO}` },
      mounts: [`${store}:/data`],
    });
    const [c] = JSON.parse(image.podman(['inspect', main.name]).stdout);
    assert.equal(c.HostConfig.ReadonlyRootfs, true);
    // The process runs as 65532 (host view and container view).
    const top = image.podman(['top', main.name, 'huser', 'user']).stdout.trim().split('\n').slice(1);
    assert.ok(top.length > 0, 'no process in the container');
    for (const line of top) assert.deepEqual(line.trim().split(/\s+/), [String(NONROOT), 'nonroot'], line);

    assert.equal((await request(`${main.url}/healthz`)).status, 200);
    assert.equal((await request(`${main.url}/readyz`)).status, 200);
    const hash = `h${crypto.randomBytes(12).toString('hex')}`;
    const small = nxArtifact({ 'dist/a.txt': 'from the container test\n' });
    const url = `${main.url}/v1/cache/${hash}`;
    assert.equal((await request(url, { method: 'PUT', body: small })).status, 401);
    assert.equal((await request(url, { method: 'PUT', token: RO, body: small })).status, 403);
    assert.equal((await request(url, { method: 'PUT', token: RW, body: small })).status, 200);
    const got = await request(url, { token: RO });
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(small));
    // Over 8 MiB: the upload is spooled to $TMPDIR (/tmp, the tmpfs) before it is stored.
    const bigHash = `h${crypto.randomBytes(12).toString('hex')}`;
    const big = nxArtifact({ 'dist/big.bin': crypto.randomBytes(9 * 1024 * 1024) }, { level: 0 });
    assert.equal((await request(`${main.url}/v1/cache/${bigHash}`, { method: 'PUT', token: RW, body: big })).status, 200);
    const gotBig = await request(`${main.url}/v1/cache/${bigHash}`, { token: RW });
    assert.equal(gotBig.status, 200);
    assert.ok(gotBig.body.equals(big));
    // Stored on the bind mount, owned by the image's user.
    const objects = storeObjects(store);
    assert.equal(objects.length, 2, objects.join('\n'));
    for (const o of objects) assert.equal(fs.statSync(path.join(store, o)).uid, NONROOT);
    // All that happened with only /data (the bind mount) and /tmp (the tmpfs) writable: Podman's own
    // tmpfs on /run and /var/tmp for read-only containers is off (--read-only-tmpfs=false).
    assert.deepEqual(c.Mounts.map((/** @type {{ Destination: string }} */ m) => m.Destination), ['/data']);
    assert.deepEqual(Object.keys(c.HostConfig.Tmpfs || {}), ['/tmp']);
  });

  test('HEALTHCHECK: `podman healthcheck run` and the binary\'s `healthcheck` exit 0', () => {
    assert.ok(main, 'the container did not start');
    const hc = image.podman(['healthcheck', 'run', main.name], { allowFail: true });
    assert.equal(hc.code, 0, `${hc.stdout}${hc.stderr}`);
    const exec = image.podman(['exec', main.name, '/usr/local/bin/nx-open-cache-server', 'healthcheck'], { allowFail: true });
    assert.equal(exec.code, 0, `${exec.stdout}${exec.stderr}`);
    // A port nothing listens on: the check fails (exit 1), so a dead server is reported unhealthy.
    const dead = image.podman(['exec', main.name, '/usr/local/bin/nx-open-cache-server', 'healthcheck', 'http://127.0.0.1:9/healthz'], { allowFail: true });
    assert.equal(dead.code, 1, `${dead.stdout}${dead.stderr}`);
  });

  test('a real Nx workspace stores every task through the container; a fresh copy restores 100% from it', async () => {
    assert.ok(main, 'the container did not start');
    const server = main;
    const ws = await createWorkspace();
    const copyBase = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-container-ws-'));
    try {
      // The second machine: a copy of the workspace as checked out (no dist/, no .nx), elsewhere.
      const cp = spawnSync('cp', ['-a', ws.root, path.join(copyBase, 'ws')], { encoding: 'utf8' });
      assert.equal(cp.status, 0, `cp -a ${ws.root}: ${cp.stderr}`);
      const wsB = new NxWorkspace(copyBase);
      wsB.token = ws.token;
      /** @param {string} base @param {string} label */
      const nxEnv = (base, label) => ({
        NX_SELF_HOSTED_REMOTE_CACHE_SERVER: server.url,
        NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN: label === 'a' ? RW : RO,
        NX_DAEMON: 'false',
        NX_CACHE_DIRECTORY: path.join(base, `nx-cache-${label}`),
        NX_WORKSPACE_DATA_DIRECTORY: path.join(base, `nx-data-${label}`),
      });
      const projects = ws.projects.map((p) => p.name).sort();
      const before = storeObjects(store).length;

      const a = await ws.runBuild({ env: nxEnv(ws.base, 'a') });
      assert.equal(a.code, 0, a.output);
      assert.deepEqual([...ws.builtProjects()].sort(), projects, a.output);
      assert.equal(storeObjects(store).length, before + projects.length, `${a.output}\n${server.logs()}`);
      const outputsA = ws.snapshotOutputs();

      const b = await wsB.runBuild({ env: nxEnv(copyBase, 'b') });
      assert.equal(b.code, 0, b.output);
      assert.deepEqual(wsB.builtProjects(), [], `a task ran on the fresh copy:\n${b.output}`);
      for (const p of projects) assert.ok(isRemoteHit(b.output, p), `${p} not a [remote cache] hit\n${b.output}`);
      assert.deepEqual(wsB.snapshotOutputs(), outputsA);
      assert.equal(storeObjects(store).length, before + projects.length);
    } finally {
      await ws.dispose();
      fs.rmSync(copyBase, { recursive: true, force: true, maxRetries: 3 });
    }
  });

  test('tokens from a mounted tokens file, fs storage on a named volume; no secret in inspect or logs; SIGTERM stops it cleanly', async () => {
    const secrets = path.join(tmp, 'secrets');
    fs.mkdirSync(secrets);
    const tokensFile = path.join(secrets, 'tokens');
    fs.writeFileSync(tokensFile, `# mounted read-only\nci:read-write:${FILE_RW}\n`, { mode: 0o400 });
    image.chownNonroot(tokensFile);
    const volume = `nxoc-test-${RUN_ID}-data`;
    volumes.push(volume);
    image.podman(['volume', 'create', volume]);
    const s = await startContainer({
      label: 'file',
      env: { NX_OPEN_CACHE_SERVER_TOKENS_FILE: '/run/secrets/nx-open-cache/tokens' },
      // A fresh named volume takes /data's owner (65532) from the image: writable without a chown.
      mounts: [`${volume}:/data`, `${secrets}:/run/secrets/nx-open-cache:ro`],
    });
    try {
      assert.equal((await request(`${s.url}/readyz`)).status, 200);
      const hash = `h${crypto.randomBytes(12).toString('hex')}`;
      const body = nxArtifact({ 'dist/b.txt': 'tokens file\n' });
      assert.equal((await request(`${s.url}/v1/cache/${hash}`, { method: 'PUT', token: RW, body })).status, 401);
      assert.equal((await request(`${s.url}/v1/cache/${hash}`, { method: 'PUT', token: FILE_RW, body })).status, 200);
      const got = await request(`${s.url}/v1/cache/${hash}`, { token: FILE_RW });
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(body));
      const inspect = image.podman(['inspect', s.name]).stdout;
      assert.ok(!inspect.includes(FILE_RW), 'the tokens file\'s secret shows in podman inspect');
      const logs = s.logs() + (main ? main.logs() : '');
      for (const secret of [RW, RO, FILE_RW]) assert.ok(!logs.includes(secret), `a secret is in the logs:\n${logs}`);
      assert.match(logs, /tokens: ci \(read-write\)/);
      // `podman stop` sends the image's STOPSIGNAL (SIGTERM): the server stops gracefully, exit 0.
      // -t 20: serve's own bound (10 s grace + 5 s) is above the engines' default 10 s.
      image.podman(['stop', '-t', '20', s.name]);
      const exit = image.podman(['inspect', '--format', '{{.State.ExitCode}}', s.name]).stdout.trim();
      assert.equal(exit, '0', s.logs());
    } finally {
      removeContainer(s.name);
    }
  });

  test('object storage from the container: moto S3 on the host, a 9 MiB upload spooled to /tmp, no /data volume', async () => {
    emulators.install({ log: () => undefined });
    const emu = await emulators.start('s3');
    try {
      // /tmp is a host directory here (not a tmpfs) so that the spool directory can be seen.
      const hostTmp = nonrootDir('s3-tmp');
      fs.chmodSync(hostTmp, 0o1777);
      const s = await startContainer({
        label: 's3',
        hostNetwork: true,
        tmpMount: true,
        mounts: [`${hostTmp}:/tmp`],
        env: {
          ...emu.env,
          // A credential chain that falls through stays on a closed loopback port.
          AWS_EC2_METADATA_DISABLED: 'true',
          AWS_METADATA_ENDPOINT: 'http://127.0.0.1:9',
          NX_OPEN_CACHE_SERVER_STORAGE: `s3://${emu.bucket}/img`,
          NX_OPEN_CACHE_SERVER_S3_ENDPOINT: emu.endpoint,
          NX_OPEN_CACHE_SERVER_S3_FORCE_PATH_STYLE: 'true',
          NX_OPEN_CACHE_SERVER_TOKENS: `ci:read-write:${RW}`,
        },
      });
      try {
        const [c] = JSON.parse(image.podman(['inspect', s.name]).stdout);
        assert.equal(c.HostConfig.ReadonlyRootfs, true);
        assert.equal((await request(`${s.url}/readyz`)).status, 200, s.logs());
        const hash = `h${crypto.randomBytes(12).toString('hex')}`;
        const big = nxArtifact({ 'dist/big.bin': crypto.randomBytes(9 * 1024 * 1024) }, { level: 0 });
        assert.equal((await request(`${s.url}/v1/cache/${hash}`, { method: 'PUT', token: RW, body: big })).status, 200, s.logs());
        const got = await request(`${s.url}/v1/cache/${hash}`, { token: RW });
        assert.equal(got.status, 200);
        assert.ok(got.body.equals(big));
        const objects = await emu.listObjects();
        assert.equal(objects.filter((k) => k.startsWith('img/')).length, 1, objects.join('\n'));
        // The upload went through the spool directory under $TMPDIR (/tmp), which is empty again.
        const spool = path.join(hostTmp, 'nx-open-cache-spool');
        assert.ok(fs.existsSync(spool), `no ${spool}: the upload was not spooled to /tmp`);
        assert.deepEqual(fs.readdirSync(spool), []);
        // Nothing but /tmp is mounted: the image's /data volume is not used with object storage
        // (Podman still gives it an anonymous volume, removed with the container by `rm -v`).
        assert.ok(c.Mounts.some((/** @type {{ Destination: string }} */ m) => m.Destination === '/tmp'));
      } finally {
        removeContainer(s.name);
      }
    } finally {
      await emu.stop();
    }
  });
});
