#!/usr/bin/env node
'use strict';
/**
 * The npm packages a release publishes, following the napi-rs layout: the main package
 * `nx-open-cache` (JavaScript, no binary) and one package per native target,
 * `npm/<platform>/` = `nx-open-cache-<platform>` holding exactly `nx-open-cache.<platform>.node`,
 * which the main package lists in `optionalDependencies` so npm installs only the one whose
 * os/cpu/libc match. The generated loader (index.js) tries `./nx-open-cache.<platform>.node` first
 * (a local `npm run build`), then the package `nx-open-cache-<platform>`, telling musl from glibc.
 *
 * The repository's package.json lists no optionalDependencies: they are written at publish time
 * (`prepare`), as `napi pre-publish` does. Listing them in the repository would make `npm ci`
 * refuse the lockfile ("Missing: nx-open-cache-linux-x64-gnu from lock file") until every version
 * is on the registry, and would make every developer's `npm ci` fetch whatever the registry serves
 * under those names.
 *
 * CLI (used by .github/workflows/release.yml; the checks also run in __tests__/packages.test.js):
 *   node scripts/npm-packages.js check-tag <tag>      the tag is v<version> of package.json and of
 *                                                     every npm/<platform>; prints `version=` and
 *                                                     `npm-tag=` lines (for $GITHUB_OUTPUT)
 *   node scripts/npm-packages.js prepare --repository <url>
 *                                                     writes the publish-time fields: the main
 *                                                     package's optionalDependencies, no `*.node` in
 *                                                     its files, `repository` everywhere (npm
 *                                                     provenance requires it to name the source repo)
 *   node scripts/npm-packages.js check               every package as it would be published: each
 *                                                     npm/<platform> packs exactly its binary, the
 *                                                     main package packs no binary (after `prepare`
 *                                                     and `napi artifacts`)
 */

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..');
/** Upper bound for one `npm pack --dry-run`. */
const PACK_TIMEOUT_MS = 120_000;

/**
 * @typedef {object} PlatformPackage
 * @property {string} target   Rust target triple (package.json napi.targets)
 * @property {string} platform napi's platform-arch-abi name, e.g. linux-x64-musl
 * @property {string} dir      npm/<platform>, relative to the repository
 * @property {string} name     npm package name, `<packageName>-<platform>`
 * @property {string} binary   the one file it carries, `<binaryName>.<platform>.node`
 * @property {string} os       npm `os`
 * @property {string} cpu      npm `cpu`
 * @property {string | null} libc  npm `libc` (glibc or musl; null off Linux)
 */

/** @param {string} file @returns {any} */
function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** @param {string} file @param {unknown} value */
function writeJson(file, value) {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}

/**
 * The platform packages package.json's `napi` block configures, named as napi-rs names them.
 * @param {string} [root]
 * @returns {PlatformPackage[]}
 */
function platformPackages(root = REPO_ROOT) {
  const pkg = readJson(path.join(root, 'package.json'));
  const napi = pkg.napi || {};
  if (!Array.isArray(napi.targets) || napi.targets.length === 0) {
    throw new Error(`npm-packages: package.json napi.targets must list the release targets, found ${JSON.stringify(napi.targets)}`);
  }
  const { parseTriple } = require('@napi-rs/cli');
  const packageName = String(napi.packageName || pkg.name);
  const binaryName = String(napi.binaryName || pkg.name);
  return napi.targets.map((/** @type {string} */ target) => {
    const t = parseTriple(target);
    /** @type {string | null} */
    let libc = null;
    if (t.platform === 'linux') {
      if (t.abi === 'gnu') libc = 'glibc';
      else if (t.abi === 'musl') libc = 'musl';
      else throw new Error(`npm-packages: ${target}: no npm libc value for the ABI ${t.abi}`);
    }
    return {
      target,
      platform: t.platformArchABI,
      dir: path.join('npm', t.platformArchABI),
      name: `${packageName}-${t.platformArchABI}`,
      binary: `${binaryName}.${t.platformArchABI}.node`,
      os: t.platform,
      cpu: t.arch,
      libc,
    };
  });
}

/**
 * This host's napi platform name (the one a local `npm run build` produces), e.g. linux-x64-gnu.
 * @returns {string}
 */
function hostPlatform() {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform === 'win32') return `${base}-msvc`;
  if (process.platform !== 'linux') return base;
  const report = /** @type {any} */ (process.report && process.report.getReport());
  return `${base}-${report && report.header && report.header.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/**
 * The files `npm pack` would put in the package at `dir` (read-only: `--dry-run`, no scripts).
 * @param {string} dir
 * @returns {string[]} sorted, '/'-separated
 */
function packFiles(dir) {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: dir,
    encoding: 'utf8',
    timeout: PACK_TIMEOUT_MS,
    // npm is npm.cmd on Windows, which only a shell starts; the arguments are fixed.
    shell: process.platform === 'win32',
  });
  if (r.error || r.status !== 0) {
    throw new Error(`npm-packages: npm pack --dry-run in ${dir} failed: ${r.error ? r.error.message : `exit ${r.status}`}\n${r.stderr}`);
  }
  /** @type {{ files: { path: string }[] }[]} */
  const info = JSON.parse(r.stdout);
  return info[0].files.map((f) => f.path.split(path.sep).join('/')).sort();
}

/**
 * Problems of one platform package as it would be published from `dir`: its package.json matches
 * the target (name, version, main, files, os, cpu, libc) and `npm pack` holds exactly its binary
 * plus package.json and README.md.
 * @param {PlatformPackage} p
 * @param {string} dir
 * @param {string} version  the main package's version
 * @returns {string[]}
 */
function checkPlatformPackage(p, dir, version) {
  const problems = [];
  const pj = readJson(path.join(dir, 'package.json'));
  /** @type {[string, unknown, unknown][]} */
  const fields = [
    ['name', pj.name, p.name],
    ['version', pj.version, version],
    ['main', pj.main, p.binary],
    ['files', pj.files, [p.binary]],
    ['os', pj.os, [p.os]],
    ['cpu', pj.cpu, [p.cpu]],
    ['libc', pj.libc, p.libc ? [p.libc] : undefined],
  ];
  for (const [field, actual, expected] of fields) {
    if (JSON.stringify(actual) !== JSON.stringify(expected)) {
      problems.push(`${p.dir}/package.json: "${field}" is ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
    }
  }
  for (const hook of ['preinstall', 'install', 'postinstall']) {
    if (pj.scripts && pj.scripts[hook]) problems.push(`${p.dir}/package.json: an install script ("${hook}") has no place in a binary package`);
  }
  if (!fs.existsSync(path.join(dir, 'README.md'))) problems.push(`${p.dir}: README.md is missing`);
  if (!fs.existsSync(path.join(dir, p.binary))) problems.push(`${p.dir}: ${p.binary} is missing (napi artifacts puts it there)`);
  const packed = packFiles(dir);
  const promised = [p.binary, 'README.md', 'package.json'].sort();
  if (JSON.stringify(packed) !== JSON.stringify(promised)) {
    problems.push(`${p.dir}: npm pack holds ${JSON.stringify(packed)}, its package.json promises ${JSON.stringify(promised)}`);
  }
  return problems;
}

/** Paths that never belong in the main package (build output, sources, tests, tooling, state). */
const NEVER_PACKED = /^(target|npm|src|tests|__tests__|benches|fuzz|examples|scripts|openapi|node_modules|\.venv|\.github|\.ci|\.nx|\.bench|\.demo)\//;
/** File names that hold secrets or credentials, wherever they are. */
const SECRET_NAMES = /(^|\/)(\.env(\..*)?|\.npmrc|\.netrc|id_(rsa|ed25519|ecdsa)[^/]*|[^/]*\.(pem|key|p12|pfx)|credentials(\.json)?)$/i;
/** Secret material in a packed text file. */
const SECRET_CONTENT = [
  /-----BEGIN [A-Z ]*PRIVATE KEY-----/,
  /\bnpm_[A-Za-z0-9]{36}\b/,
  /\bgh[pousr]_[A-Za-z0-9]{36,}\b/,
  /\bAKIA[0-9A-Z]{16}\b/,
];
/** What the main package must hold. */
const MAIN_REQUIRED = ['package.json', 'README.md', 'index.js', 'index.d.ts', 'lib/index.js', 'lib/plugin.js', 'lib/cli.js', 'generators.json'];

/**
 * Problems of the main package as `npm pack` would make it from `root`.
 * @param {string} root
 * @param {{ release: boolean }} opts  release: no binary at all (they are in the platform
 *   packages); otherwise only this host's own build may be there (the local package the
 *   end-to-end tests install)
 * @returns {string[]}
 */
function checkMainPackage(root, opts) {
  const problems = [];
  const pj = readJson(path.join(root, 'package.json'));
  const binaryName = String((pj.napi && pj.napi.binaryName) || pj.name);
  const packed = packFiles(root);
  for (const f of MAIN_REQUIRED) if (!packed.includes(f)) problems.push(`main package: ${f} is missing`);
  if (!packed.some((f) => f.startsWith('docs/'))) problems.push('main package: docs/ is missing');
  const allowedNode = opts.release ? [] : [`${binaryName}.${hostPlatform()}.node`];
  for (const f of packed) {
    if (NEVER_PACKED.test(f)) problems.push(`main package: ${f} does not belong in it`);
    if (SECRET_NAMES.test(f)) problems.push(`main package: ${f} looks like a secret`);
    if (f.endsWith('.node') && !allowedNode.includes(f)) {
      problems.push(`main package: ${f}: ${opts.release ? 'binaries ship in the platform packages' : 'a binary of another platform'}`);
    }
    if (!f.endsWith('.node') && !f.endsWith('.wasm')) {
      const text = fs.readFileSync(path.join(root, f), 'utf8');
      for (const re of SECRET_CONTENT) if (re.test(text)) problems.push(`main package: ${f} holds secret material (${re.source})`);
    }
  }
  if (opts.release) {
    const want = Object.fromEntries(platformPackages(root).map((p) => [p.name, pj.version]));
    if (JSON.stringify(pj.optionalDependencies) !== JSON.stringify(want)) {
      problems.push(`main package: optionalDependencies are ${JSON.stringify(pj.optionalDependencies)}, expected ${JSON.stringify(want)}`);
    }
  }
  return problems;
}

/**
 * The main package.json as published: the platform packages as optionalDependencies (at its own
 * version), no binary in `files`, and `repository` when given.
 * @param {any} pj
 * @param {PlatformPackage[]} platforms
 * @param {string} [repository]
 */
function releaseManifest(pj, platforms, repository) {
  const out = { ...pj };
  out.files = (pj.files || []).filter((/** @type {string} */ f) => !f.endsWith('.node'));
  out.optionalDependencies = Object.fromEntries(platforms.map((p) => [p.name, pj.version]));
  if (repository) out.repository = repositoryField(repository);
  return out;
}

/** @param {string} url e.g. https://github.com/owner/repo */
function repositoryField(url) {
  if (!/^https:\/\/[^\s/]+\/[^\s/]+\/[^\s/]+$/.test(url)) {
    throw new Error(`npm-packages: --repository ${JSON.stringify(url)}: expected https://<host>/<owner>/<repo>`);
  }
  return { type: 'git', url: `git+${url}.git` };
}

/**
 * Writes the publish-time fields into package.json and every npm/<platform>/package.json.
 * @param {string} root
 * @param {string} [repository]
 */
function prepare(root, repository) {
  const platforms = platformPackages(root);
  const file = path.join(root, 'package.json');
  writeJson(file, releaseManifest(readJson(file), platforms, repository));
  if (!repository) return;
  for (const p of platforms) {
    const pfile = path.join(root, p.dir, 'package.json');
    writeJson(pfile, { ...readJson(pfile), repository: repositoryField(repository) });
  }
}

/**
 * The release's version and npm dist-tag from its git tag; throws when the tag and the versions of
 * the packages disagree.
 * @param {string} root
 * @param {string} tag
 * @returns {{ version: string, npmTag: string }}
 */
function checkTag(root, tag) {
  const version = String(readJson(path.join(root, 'package.json')).version);
  if (tag !== `v${version}`) throw new Error(`npm-packages: tag ${tag} does not match package.json version ${version} (expected v${version})`);
  for (const p of platformPackages(root)) {
    const v = readJson(path.join(root, p.dir, 'package.json')).version;
    if (v !== version) throw new Error(`npm-packages: ${p.dir}/package.json has version ${v}, package.json ${version} (run \`npx napi version\`)`);
  }
  return { version, npmTag: version.includes('-') ? 'next' : 'latest' };
}

function main() {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'check-tag' && args.length === 1) {
    const { version, npmTag } = checkTag(REPO_ROOT, args[0]);
    console.log(`version=${version}\nnpm-tag=${npmTag}`);
  } else if (cmd === 'prepare') {
    const i = args.indexOf('--repository');
    prepare(REPO_ROOT, i >= 0 ? args[i + 1] : undefined);
  } else if (cmd === 'check') {
    const version = String(readJson(path.join(REPO_ROOT, 'package.json')).version);
    const problems = [
      ...platformPackages().flatMap((p) => checkPlatformPackage(p, path.join(REPO_ROOT, p.dir), version)),
      ...checkMainPackage(REPO_ROOT, { release: true }),
    ];
    if (problems.length > 0) throw new Error(`npm-packages: not publishable:\n  ${problems.join('\n  ')}`);
    console.log('npm-packages: every package holds exactly what it promises');
  } else {
    throw new Error('usage: node scripts/npm-packages.js check-tag <tag> | prepare [--repository <url>] | check');
  }
}

if (require.main === module) {
  try {
    main();
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
}

module.exports = { platformPackages, hostPlatform, packFiles, checkPlatformPackage, checkMainPackage, releaseManifest, prepare, checkTag };
