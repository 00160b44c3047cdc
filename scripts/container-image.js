#!/usr/bin/env node
'use strict';
/**
 * Builds the nx-open-cache-server image from the repository's Containerfile with Podman, on a machine
 * that cannot pull images: stand-ins for the two base images the recipe names are made locally,
 * tagged under localhost/nxoc-standin/ (never with the public names, so no other build on this
 * machine takes them for the real images), and passed as the RUNTIME_IMAGE / RUST_IMAGE build args.
 *
 * - Runtime stand-in for `gcr.io/distroless/cc-debian12:nonroot`: what distroless "cc" is, assembled from
 *   this (Debian bookworm) host's own files: glibc (libc, libm, the loader, ...), libgcc_s, the CA
 *   bundle, /etc/passwd and /etc/group with `nonroot` (65532), /tmp (1777), /home/nonroot; no
 *   shell. A few MB, made in about a second; rebuilt when those host files change. The CA bundle is
 *   Debian's own (Mozilla's set from /usr/share/ca-certificates), not the host's local additions.
 * - Builder stand-in for `docker.io/library/rust:1.95-slim-bookworm` (--full only, as root): `debootstrap
 *   --variant=minbase bookworm` (from deb.debian.org) with gcc and libc6-dev, plus this host's Rust
 *   toolchain (rustc/cargo 1.95) copied in at the official image's paths (/usr/local/rustup,
 *   /usr/local/cargo), and the host's CA bundle (crates.io is reached through this host's egress,
 *   which may inspect TLS with its own CA). A few minutes, once.
 * Both stay in Podman's storage (/var/lib/containers/storage for root) between runs; remove them
 * with `podman rmi <name>`. Podman runs rootful: as root, or through `sudo -n` for another user
 * with password-less sudo (GitHub's runners); otherwise this script fails and says so.
 *
 * CLI:
 *   node scripts/container-image.js [--tag <name>]         fast path: `cargo build --release --locked
 *       --bin nx-open-cache-server` on the host, then the Containerfile's stage `runtime-prebuilt`
 *       (--target; target/release/nx-open-cache-server in place of the build stage). Refused when the
 *       binary needs a glibc newer than the runtime base's 2.36.
 *   node scripts/container-image.js --full [--tag <name>]  the default multi-stage build (last stage
 *       `runtime`): the binary compiled in the Rust build stage (crates from crates.io, cache mounts)
 *   node scripts/container-image.js --bases                 only make the base images
 *
 * Module: { buildImage, ensureRuntimeBase, ensureRustBase, podman, podmanProblems, runOptions, ... }.
 */

const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..');
const CONTAINERFILE = path.join(REPO_ROOT, 'Containerfile');
const BINARY = path.join(REPO_ROOT, 'target', 'release', 'nx-open-cache-server');

/** The public names the Containerfile's ARGs default to (keep in sync with it). */
const RUNTIME_PUBLIC = 'gcr.io/distroless/cc-debian12:nonroot';
const RUST_PUBLIC = 'docker.io/library/rust:1.95-slim-bookworm';
/** The local stand-ins' names (passed as RUNTIME_IMAGE / RUST_IMAGE). */
const RUNTIME_BASE = 'localhost/nxoc-standin/distroless-cc-debian12:nonroot';
const RUST_BASE = 'localhost/nxoc-standin/rust:1.95-slim-bookworm';
/** glibc of the runtime base (distroless cc-debian12 = Debian 12's glibc 2.36). */
const RUNTIME_GLIBC = '2.36';
const RUST_VERSION = '1.95';
/** The image name the docs and the Kubernetes manifests use. */
const IMAGE = 'ghcr.io/nx-open-cache/nx-open-cache-server:0.1.0';
/** Label on the bases this script made (never on a pulled image): what they were made from. */
const LOCAL_BASE_LABEL = 'org.nx-open-cache.local-base';
/** Bump when the runtime base's recipe below changes. */
const RUNTIME_RECIPE = 'host-files-2';

/** Upper bounds. */
const PODMAN_TIMEOUT_MS = 600_000;
const FULL_BUILD_TIMEOUT_MS = 3_600_000;
const DEBOOTSTRAP_TIMEOUT_MS = 1_200_000;

/**
 * Podman's global options that work on this machine's cgroup v1 setup: runc (crun fails here) and
 * the cgroupfs manager (no systemd).
 */
const PODMAN_GLOBAL = ['--runtime', 'runc', '--cgroup-manager', 'cgroupfs'];

/**
 * `--ulimit` options for `podman run` / `podman build`: Podman's defaults for root (nofile 1048576,
 * nproc 4194304) are above this host's hard limits, and runc then refuses to start the container.
 * @returns {string[]}
 */
function runOptions() {
  const hard = (/** @type {string} */ flag, /** @type {number} */ cap) => {
    const r = spawnSync('sh', ['-c', `ulimit -H${flag}`], { encoding: 'utf8' });
    const n = Number(String(r.stdout).trim());
    return Number.isFinite(n) && n > 0 ? Math.min(n, cap) : cap; // "unlimited" -> NaN -> cap
  };
  const nofile = hard('n', 65536);
  const nproc = hard('u', 4096);
  return ['--ulimit', `nofile=${nofile}:${nofile}`, '--ulimit', `nproc=${nproc}:${nproc}`];
}

/**
 * @typedef {{ code: number | null, stdout: string, stderr: string }} Ran
 */

/**
 * Runs a command; throws with its output unless it exits 0 (or `allowFail`).
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd?: string, input?: string | Buffer, timeoutMs?: number, allowFail?: boolean, inherit?: boolean }} [opts]
 * @returns {Ran}
 */
function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd || REPO_ROOT,
    input: opts.input,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    timeout: opts.timeoutMs || PODMAN_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    stdio: opts.inherit ? ['ignore', 'inherit', 'inherit'] : ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (r.error) throw new Error(`container-image: cannot run ${cmd}: ${r.error.message}`);
  const ran = { code: r.status, stdout: r.stdout || '', stderr: r.stderr || '' };
  if (!opts.allowFail && r.status !== 0) {
    throw new Error(
      `container-image: \`${cmd} ${args.join(' ')}\` exited with ${r.status ?? r.signal}\n${ran.stdout}${ran.stderr}`,
    );
  }
  return ran;
}

/** Whether this process runs as root. */
const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

/**
 * Runs a command as root: directly when this process is root, else through `sudo -n` (password-less
 * sudo, as on GitHub's runners; podmanProblems() says when there is none).
 * @param {string} cmd
 * @param {string[]} args
 * @param {{ cwd?: string, input?: string | Buffer, timeoutMs?: number, allowFail?: boolean, inherit?: boolean }} [opts]
 * @returns {Ran}
 */
function runAsRoot(cmd, args, opts = {}) {
  return IS_ROOT ? run(cmd, args, opts) : run('sudo', ['-n', cmd, ...args], opts);
}

/**
 * `podman <global options> <args>` (rootful: as root or through `sudo -n`).
 * @param {string[]} args
 * @param {{ input?: string | Buffer, timeoutMs?: number, allowFail?: boolean, inherit?: boolean }} [opts]
 */
function podman(args, opts = {}) {
  return runAsRoot('podman', [...PODMAN_GLOBAL, ...args], opts);
}

/**
 * Gives a file or directory to the image's user (uid/gid 65532), as a bind mount into the image needs.
 * @param {string} file
 */
function chownNonroot(file) {
  if (IS_ROOT) fs.chownSync(file, 65532, 65532);
  else runAsRoot('chown', ['65532:65532', file]);
}

/**
 * Removes a directory tree that may hold files owned by another user (65532, from a container).
 * @param {string} dir
 */
function removeTree(dir) {
  if (IS_ROOT) fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  else runAsRoot('rm', ['-rf', '--', dir], { allowFail: true });
}

/**
 * Why Podman cannot build and run images here, or null when it can: missing commands (installed
 * by scripts/system-deps.js), or neither root nor password-less sudo (rootful Podman: the bases
 * hold files owned by 65532, and runc with cgroupfs needs root on a cgroup v1 host).
 * @returns {string | null}
 */
function podmanProblems() {
  const missing = ['podman', 'runc'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
  if (missing.length) {
    return `${missing.join(' and ')} not installed: run \`node scripts/system-deps.js\` (Debian packages podman, runc)`;
  }
  if (!IS_ROOT && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore', timeout: 30_000 }).status !== 0) {
    return `building and running the image here needs root or password-less sudo (rootful Podman; uid ${process.getuid ? process.getuid() : '?'} has neither)`;
  }
  const info = podman(['info', '--format', '{{.Host.OCIRuntime.Name}}'], { allowFail: true, timeoutMs: 60_000 });
  if (info.code !== 0) return `\`podman info\` fails: ${info.stderr.trim()}`;
  return null;
}

/** @param {string} name */
function imageExists(name) {
  return podman(['image', 'exists', name], { allowFail: true }).code === 0;
}

/**
 * A label of a local image, or undefined.
 * @param {string} name
 * @param {string} label
 */
function imageLabel(name, label) {
  const r = podman(['image', 'inspect', '--format', '{{json .Labels}}', name], { allowFail: true });
  if (r.code !== 0) return undefined;
  try {
    const labels = JSON.parse(r.stdout.trim() || 'null');
    return labels && typeof labels[label] === 'string' ? labels[label] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Imports a directory as an image (its files' owners and modes as they are).
 * @param {string} rootfs
 * @param {string} name
 * @param {string[]} changes  Containerfile instructions for `podman import --change`
 */
function importRootfs(rootfs, name, changes) {
  const tarball = `${rootfs}.tar`;
  try {
    runAsRoot('tar', ['--numeric-owner', '-C', rootfs, '-cf', tarball, '.']);
    podman(['import', ...changes.flatMap((c) => ['--change', c]), tarball, name]);
  } finally {
    removeTree(tarball);
  }
}

/** @returns {{ multiarch: string, loader: string }} this host's Debian multiarch triple and ELF loader */
function hostAbi() {
  if (process.arch === 'x64') return { multiarch: 'x86_64-linux-gnu', loader: '/lib64/ld-linux-x86-64.so.2' };
  if (process.arch === 'arm64') return { multiarch: 'aarch64-linux-gnu', loader: '/lib/ld-linux-aarch64.so.1' };
  throw new Error(`container-image: no local runtime base recipe for the architecture ${process.arch}`);
}

/**
 * The host files of the runtime base: image path -> host path.
 * @returns {Map<string, string>}
 */
function runtimeFiles() {
  const { multiarch, loader } = hostAbi();
  /** @type {Map<string, string>} */ const files = new Map();
  files.set(loader, loader);
  for (const lib of ['libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1', 'libresolv.so.2', 'libgcc_s.so.1']) {
    files.set(`/lib/${multiarch}/${lib}`, `/lib/${multiarch}/${lib}`);
  }
  files.set('/etc/os-release', '/etc/os-release');
  for (const [, host] of files) {
    if (!fs.existsSync(host)) {
      throw new Error(
        `container-image: ${host} is missing on this host: the local runtime base is made from a Debian ` +
          'host\'s glibc, libgcc_s and ca-certificates',
      );
    }
  }
  return files;
}

/**
 * Debian's CA bundle as the ca-certificates package makes it (Mozilla's set, sorted), without what
 * this host added locally (/usr/local/share/ca-certificates): the image trusts the public CAs only.
 * @returns {Buffer}
 */
function debianCaBundle() {
  const dir = '/usr/share/ca-certificates/mozilla';
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.endsWith('.crt')).sort() : [];
  if (names.length === 0) throw new Error(`container-image: no CA certificates in ${dir} (Debian package ca-certificates)`);
  return Buffer.concat(names.map((n) => {
    const pem = fs.readFileSync(path.join(dir, n));
    return pem.length && pem[pem.length - 1] !== 0x0a ? Buffer.concat([pem, Buffer.from('\n')]) : pem;
  }));
}

/**
 * Makes the runtime stand-in (RUNTIME_BASE) from the host's files unless it exists and was made
 * from the same files (remade when they changed).
 * @returns {{ made: boolean, name: string }}
 */
function ensureRuntimeBase() {
  const files = runtimeFiles();
  const ca = debianCaBundle();
  const digest = crypto.createHash('sha256').update(RUNTIME_RECIPE).update(ca);
  for (const [image, host] of [...files].sort()) digest.update(image).update(fs.readFileSync(host));
  const want = `${RUNTIME_RECIPE}:${digest.digest('hex').slice(0, 16)}`;
  // An earlier version of this script tagged its stand-in with the public name: drop that name.
  if (imageExists(RUNTIME_PUBLIC) && imageLabel(RUNTIME_PUBLIC, LOCAL_BASE_LABEL) !== undefined) {
    podman(['untag', RUNTIME_PUBLIC, RUNTIME_PUBLIC]);
  }
  if (imageExists(RUNTIME_BASE) && imageLabel(RUNTIME_BASE, LOCAL_BASE_LABEL) === want) {
    return { made: false, name: RUNTIME_BASE };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-runtime-base-'));
  const rootfs = path.join(dir, 'rootfs');
  try {
    for (const [image, host] of files) {
      const to = path.join(rootfs, image);
      fs.mkdirSync(path.dirname(to), { recursive: true });
      fs.copyFileSync(host, to); // follows symlinks: the image gets the files themselves
      fs.chmodSync(to, fs.statSync(host).mode & 0o777);
    }
    /** @type {[string, string | Buffer][]} */
    const etc = [
      ['etc/passwd', 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n'],
      ['etc/group', 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n'],
      ['etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n'],
      ['etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'],
      ['etc/ssl/certs/ca-certificates.crt', ca],
    ];
    for (const [rel, text] of etc) {
      fs.mkdirSync(path.dirname(path.join(rootfs, rel)), { recursive: true });
      fs.writeFileSync(path.join(rootfs, rel), text, { mode: 0o644 });
    }
    for (const d of ['tmp', 'root', 'home/nonroot', 'usr/local/bin', 'var']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
    fs.chmodSync(path.join(rootfs, 'tmp'), 0o1777);
    fs.chmodSync(path.join(rootfs, 'root'), 0o700);
    fs.chmodSync(path.join(rootfs, 'home/nonroot'), 0o700);
    chownNonroot(path.join(rootfs, 'home/nonroot'));
    importRootfs(rootfs, RUNTIME_BASE, [
      'USER 65532:65532',
      'WORKDIR /home/nonroot',
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt',
      `LABEL ${LOCAL_BASE_LABEL}=${want}`,
    ]);
  } finally {
    removeTree(dir);
  }
  return { made: true, name: RUNTIME_BASE };
}

/**
 * Makes the builder stand-in (RUST_BASE: debootstrap + the host's Rust toolchain) unless it exists.
 * An earlier version of this script tagged it with the public name; such an image (one with this
 * script's label) is renamed instead of made again.
 * @returns {{ made: boolean, name: string }}
 */
function ensureRustBase() {
  if (imageExists(RUST_BASE)) return { made: false, name: RUST_BASE };
  if (imageExists(RUST_PUBLIC) && imageLabel(RUST_PUBLIC, LOCAL_BASE_LABEL) !== undefined) {
    podman(['tag', RUST_PUBLIC, RUST_BASE]);
    podman(['untag', RUST_PUBLIC, RUST_PUBLIC]);
    return { made: false, name: RUST_BASE };
  }
  if (!IS_ROOT) {
    throw new Error('container-image: the builder stand-in is made with debootstrap and written as root: run `sudo node scripts/container-image.js --bases --full` once');
  }
  const version = run('rustc', ['--version']).stdout.trim();
  if (!version.startsWith(`rustc ${RUST_VERSION}.`)) {
    throw new Error(`container-image: the builder base needs the host's Rust ${RUST_VERSION}.x toolchain, found "${version}"`);
  }
  const sysroot = run('rustc', ['--print', 'sysroot']).stdout.trim();
  const triple = (/^host: (.+)$/m.exec(run('rustc', ['-vV']).stdout) || [])[1];
  if (!triple) throw new Error('container-image: `rustc -vV` names no host triple');
  if (spawnSync('sh', ['-c', 'command -v debootstrap']).status !== 0) {
    throw new Error('container-image: debootstrap is not installed: run `node scripts/system-deps.js --full`');
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-rust-base-'));
  const rootfs = path.join(dir, 'rootfs');
  try {
    run(
      'debootstrap',
      ['--variant=minbase', '--include=ca-certificates,gcc,libc6-dev', 'bookworm', rootfs, 'http://deb.debian.org/debian'],
      { timeoutMs: DEBOOTSTRAP_TIMEOUT_MS, inherit: true },
    );
    fs.rmSync(path.join(rootfs, 'var/cache/apt/archives'), { recursive: true, force: true });
    fs.mkdirSync(path.join(rootfs, 'var/cache/apt/archives/partial'), { recursive: true });
    fs.rmSync(path.join(rootfs, 'var/lib/apt/lists'), { recursive: true, force: true });
    // The builder fetches crates from crates.io: it trusts what this host trusts (a host behind a
    // TLS-inspecting egress proxy adds that proxy's CA to its bundle). Local stand-in only.
    fs.copyFileSync('/etc/ssl/certs/ca-certificates.crt', path.join(rootfs, 'etc/ssl/certs/ca-certificates.crt'));
    const toolchain = path.join(rootfs, 'usr/local/rustup/toolchains', `${version.split(' ')[1]}-${triple}`);
    fs.mkdirSync(toolchain, { recursive: true });
    for (const sub of ['bin', 'lib', 'libexec']) {
      if (fs.existsSync(path.join(sysroot, sub))) run('cp', ['-a', path.join(sysroot, sub), toolchain]);
    }
    const bin = path.join(rootfs, 'usr/local/cargo/bin');
    fs.mkdirSync(bin, { recursive: true });
    for (const tool of ['cargo', 'rustc', 'rustdoc']) {
      fs.symlinkSync(path.join('/usr/local/rustup/toolchains', path.basename(toolchain), 'bin', tool), path.join(bin, tool));
    }
    importRootfs(rootfs, RUST_BASE, [
      'ENV RUSTUP_HOME=/usr/local/rustup',
      'ENV CARGO_HOME=/usr/local/cargo',
      'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      `ENV RUST_VERSION=${version.split(' ')[1]}`,
      `LABEL ${LOCAL_BASE_LABEL}=debootstrap-bookworm+host-${version.split(' ')[1]}`,
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { made: true, name: RUST_BASE };
}

/**
 * The highest GLIBC_x.y symbol version in `readelf --dyn-syms --version-info` (or `objdump -T`)
 * output, or null when it names none.
 * @param {string} text
 * @returns {string | null}
 */
function highestGlibc(text) {
  /** @type {number[] | null} */ let best = null;
  for (const m of text.matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)) {
    const v = [Number(m[1]), Number(m[2]), Number(m[3] || 0)];
    if (!best || compareVersions(v, best) > 0) best = v;
  }
  return best ? (best[2] ? best.join('.') : `${best[0]}.${best[1]}`) : null;
}

/** @param {number[]} a @param {number[]} b */
function compareVersions(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] || 0) - (b[i] || 0);
    if (d) return d;
  }
  return 0;
}

/** @returns {string} this host's glibc version (that of the runtime stand-in made from its files) */
function hostGlibc() {
  const m = /(\d+\.\d+)/.exec(run('getconf', ['GNU_LIBC_VERSION']).stdout);
  if (!m) throw new Error('container-image: `getconf GNU_LIBC_VERSION` names no glibc version');
  return m[1];
}

/**
 * Refuses a prebuilt binary that asks for a glibc newer than the runtime base's `limit` (it would
 * not start in the image: "version `GLIBC_2.38' not found").
 * @param {string} binary
 * @param {string} [limit]  the runtime base's glibc (default: distroless cc-debian12's 2.36)
 * @returns {string | null} the highest GLIBC_ version the binary needs
 */
function checkGlibc(binary, limit = RUNTIME_GLIBC) {
  const r = run('readelf', ['--dyn-syms', '--wide', binary]);
  const need = highestGlibc(r.stdout);
  if (need && compareVersions(need.split('.').map(Number), limit.split('.').map(Number)) > 0) {
    throw new Error(
      `container-image: ${binary} needs GLIBC_${need}, newer than the runtime image's glibc ${limit}` +
        `${limit === RUNTIME_GLIBC ? ' (distroless cc-debian12)' : ''}: build it on a host with glibc <= ${limit} ` +
        '(Debian 12, Ubuntu 22.04 for the real distroless base), or build the default target `runtime`, ' +
        'which compiles in the Rust bookworm image',
    );
  }
  return need;
}

/** @returns {string} the checked-out commit, or "unknown" */
function revision() {
  const r = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

/**
 * Builds the image from the Containerfile.
 * @param {{ full?: boolean, tag?: string, quiet?: boolean, labels?: string[], log?: (line: string) => void }} [opts]
 *   full: the binary compiled in the builder stage; else the host's release build (fast path);
 *   quiet: the output of cargo and podman build only in the error when they fail
 * @returns {{ tag: string, id: string, seconds: number }}
 */
function buildImage(opts = {}) {
  const log = opts.log || ((line) => console.log(line));
  const tag = opts.tag || IMAGE;
  const started = Date.now();
  const rb = ensureRuntimeBase();
  log(`container-image: runtime base ${rb.name} ${rb.made ? 'made from this host\'s files' : 'present'}`);
  // TARGETPLATFORM keys the build stage's target cache; BuildKit sets it, Buildah 1.28 does not.
  const platform = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;
  /** @type {string[]} */ const args = ['--build-arg', `RUNTIME_IMAGE=${RUNTIME_BASE}`, '--build-arg', `TARGETPLATFORM=${platform}`];
  if (opts.full) {
    const b = ensureRustBase();
    log(`container-image: builder base ${b.name} ${b.made ? 'made (debootstrap + host toolchain)' : 'present'}`);
    // The default target: the last stage, `runtime`, with the binary of the `build` stage.
    args.push('--build-arg', `RUST_IMAGE=${RUST_BASE}`);
  } else {
    run('cargo', ['build', '--release', '--locked', '--bin', 'nx-open-cache-server'], { timeoutMs: FULL_BUILD_TIMEOUT_MS, inherit: !opts.quiet });
    if (!fs.existsSync(BINARY)) throw new Error(`container-image: ${BINARY} is missing after cargo build`);
    // The image gets the runtime stand-in, i.e. this host's glibc: the binary must not need more.
    // Above 2.36 it would not start on the real distroless base (a release builds `runtime`).
    const limit = hostGlibc();
    const need = checkGlibc(BINARY, limit);
    const real = need === null || compareVersions(need.split('.').map(Number), RUNTIME_GLIBC.split('.').map(Number)) <= 0;
    log(
      `container-image: ${BINARY} needs GLIBC_${need}: fits the stand-in (glibc ${limit})` +
        (real ? ` and the real distroless base (${RUNTIME_GLIBC})` : `, NOT the real distroless base (${RUNTIME_GLIBC}): do not ship this image`),
    );
    args.push('--target', 'runtime-prebuilt');
  }
  const version = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version;
  podman(
    [
      'build', '--format', 'docker', '--network=host', ...runOptions(), '--pull=never', '-f', CONTAINERFILE,
      '--force-rm', ...(opts.labels || []).flatMap((l) => ['--label', l]),
      '--build-arg', `VERSION=${version}`, '--build-arg', `REVISION=${revision()}`, ...args, '-t', tag, REPO_ROOT,
    ],
    { timeoutMs: opts.full ? FULL_BUILD_TIMEOUT_MS : PODMAN_TIMEOUT_MS, inherit: !opts.quiet },
  );
  const id = podman(['image', 'inspect', '--format', '{{.Id}}', tag]).stdout.trim();
  const seconds = (Date.now() - started) / 1000;
  log(`container-image: built ${tag} (${id.slice(0, 12)}) in ${seconds.toFixed(1)} s (${opts.full ? 'full multi-stage build' : 'prebuilt binary'})`);
  return { tag, id, seconds };
}

function main() {
  const argv = process.argv.slice(2);
  const tagAt = argv.indexOf('--tag');
  const tag = tagAt >= 0 ? argv[tagAt + 1] : undefined;
  if (tagAt >= 0 && !tag) throw new Error('container-image: --tag needs a value');
  const known = new Set(['--full', '--bases', '--tag', tag]);
  const unknown = argv.filter((a) => !known.has(a));
  if (unknown.length) throw new Error(`container-image: unknown argument(s) ${unknown.join(' ')} (known: --full, --bases, --tag <name>)`);
  const problem = podmanProblems();
  if (problem) throw new Error(`container-image: ${problem}`);
  if (argv.includes('--bases')) {
    console.log(ensureRuntimeBase());
    if (argv.includes('--full')) console.log(ensureRustBase());
    return;
  }
  buildImage({ full: argv.includes('--full'), tag });
}

if (require.main === module) {
  try {
    main();
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 1;
  }
}

module.exports = {
  IMAGE,
  RUNTIME_BASE,
  RUST_BASE,
  RUNTIME_PUBLIC,
  RUST_PUBLIC,
  RUNTIME_GLIBC,
  IS_ROOT,
  checkGlibc,
  chownNonroot,
  hostGlibc,
  highestGlibc,
  removeTree,
  revision,
  LOCAL_BASE_LABEL,
  PODMAN_GLOBAL,
  buildImage,
  ensureRuntimeBase,
  ensureRustBase,
  imageExists,
  podman,
  podmanProblems,
  runOptions,
};
