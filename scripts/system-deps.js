'use strict';
// Debian packages the test suite needs beyond npm and PyPI: installed when missing, so a fresh
// machine (and CI) runs every test instead of skipping one. `node scripts/system-deps.js`.
//
// - wrk: the native load generator that measures `serve`'s latency under hostile clients
//   (__tests__/serve.test.js).
// - podman, runc: build the server's image from the Containerfile and run it (__tests__/container.test.js,
//   scripts/container-image.js). Rootful Podman (root, or `sudo -n`) with runc (crun fails on cgroup
//   v1 hosts without systemd): no uidmap, slirp4netns or fuse-overlayfs. Its bridge network (`-p`)
//   comes from containernetworking-plugins and iptables, which podman's dependencies
//   (containers-common) pull in.
// - chromium: the headless browser that loads the HTML report (`nx-open-cache report`,
//   __tests__/report-browser.test.js) and serve's dashboard (__tests__/ui.test.js), driven by
//   playwright-core (npm) with executablePath /usr/bin/chromium.
// - debootstrap (only with --full): the locally made Rust builder stand-in of the full image build
//   (`node scripts/container-image.js --full`); the default test suite does not need it.
//
// `node scripts/system-deps.js [--full]`.

const { spawnSync } = require('node:child_process');

/** Command -> the Debian package that provides it. */
const PACKAGES = { wrk: 'wrk', prlimit: 'util-linux', podman: 'podman', runc: 'runc', chromium: 'chromium' };
/** What `--full` adds (the full image build). */
const FULL_PACKAGES = { debootstrap: 'debootstrap' };

/**
 * @param {string} cmd
 * @param {string[]} args
 */
function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.error) throw new Error(`system-deps: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`system-deps: ${cmd} ${args.join(' ')} exited with ${r.status}`);
}

/** @param {string} cmd */
function present(cmd) {
  return !spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status;
}

function main() {
  const argv = process.argv.slice(2);
  const unknown = argv.filter((a) => a !== '--full');
  if (unknown.length) throw new Error(`system-deps: unknown argument(s) ${unknown.join(' ')} (known: --full)`);
  /** @type {Record<string, string>} */
  const wanted = argv.includes('--full') ? { ...PACKAGES, ...FULL_PACKAGES } : { ...PACKAGES };
  const missing = Object.keys(wanted).filter((c) => !present(c));
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((c) => wanted[c]))];
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const sudo = root ? [] : ['sudo', '-n'];
  if (!present('apt-get') || (!root && !present('sudo'))) {
    throw new Error(
      `system-deps: missing ${missing.join(', ')}; install the Debian package(s) ${packages.join(', ')} ` +
        '(apt-get is not available to this user here)',
    );
  }
  console.log(`system-deps: installing ${packages.join(', ')} (for ${missing.join(', ')})`);
  const [cmd, ...pre] = [...sudo, 'apt-get'];
  run(cmd, [...pre, 'update', '-qq']);
  run(cmd, [...pre, 'install', '-y', '-qq', '--no-install-recommends', ...packages]);
  const still = missing.filter((c) => !present(c));
  if (still.length) throw new Error(`system-deps: ${still.join(', ')} still missing after apt-get install`);
}

main();
