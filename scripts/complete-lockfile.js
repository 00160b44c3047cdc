#!/usr/bin/env node
'use strict';
// Completes package-lock.json with the platform-specific optional packages that npm could not
// resolve when the lockfile was written (a registry that serves only this machine's platform
// answers 404 for the others, and npm then leaves them out, after which `npm ci` refuses the
// lockfile as "out of sync"). Each missing optional dependency gets an entry with its exact
// version and the os/cpu/libc its name declares, so npm skips it on other platforms and fetches it
// on its own. Run after `npm install` whenever dependencies change:
//   node scripts/complete-lockfile.js && npm ci   (the check)

const fs = require('node:fs');
const path = require('node:path');

const file = path.join(__dirname, '..', 'package-lock.json');
const lock = JSON.parse(fs.readFileSync(file, 'utf8'));
const pkgs = lock.packages || {};

const OS = ['darwin', 'linux', 'win32', 'freebsd', 'android', 'openbsd', 'sunos', 'aix', 'netbsd'];
const CPU = ['x64', 'arm64', 'arm', 'ia32', 'ppc64', 's390x', 'riscv64', 'loong64', 'mips64el', 'wasm32'];

/** Platform fields from a package name such as `@nx/nx-linux-x64-musl`. @param {string} name */
function platformOf(name) {
  const parts = (name.split('/').pop() ?? name).split('-');
  /** @type {{os?: string[], cpu?: string[], libc?: string[]}} */
  const out = {};
  const os = parts.find((p) => OS.includes(p));
  const cpu = parts.find((p) => CPU.includes(p));
  if (os) out.os = [os];
  if (cpu) out.cpu = [cpu];
  if (parts.includes('musl')) out.libc = ['musl'];
  else if (parts.includes('gnu') || parts.includes('gnueabihf')) out.libc = ['glibc'];
  if (parts.includes('wasm32')) out.cpu = ['wasm32'];
  return out;
}

/**
 * Where npm would look up `dep` from the package at `at`: nested first, then up to the root.
 * @param {string} at
 * @param {string} dep
 */
function resolves(at, dep) {
  let base = at;
  for (;;) {
    const candidate = base ? `${base}/node_modules/${dep}` : `node_modules/${dep}`;
    if (pkgs[candidate]) return true;
    if (!base) return false;
    const idx = base.lastIndexOf('/node_modules/');
    base = idx === -1 ? '' : base.slice(0, idx);
  }
}

let added = 0;
for (const [at, meta] of Object.entries(pkgs)) {
  for (const [dep, spec] of Object.entries(meta.optionalDependencies || {})) {
    if (resolves(at, dep)) continue;
    if (!/^\d+\.\d+\.\d+(-[\w.]+)?$/.test(spec)) {
      console.error(`complete-lockfile: ${dep}@${spec} (wanted by ${at || 'the root'}) is not an exact version; left as is`);
      continue;
    }
    const key = `node_modules/${dep}`;
    pkgs[key] = { version: spec, ...(meta.dev ? { dev: true } : {}), optional: true, ...platformOf(dep) };
    added += 1;
  }
}
lock.packages = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)));
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
console.log(`complete-lockfile: added ${added} platform package entr${added === 1 ? 'y' : 'ies'}`);
