'use strict';
/**
 * Generates the benchmark workspace and inspects what Nx and the cache left behind: output
 * snapshots, stored objects (envelope + payload), and the nginx export of the same payloads.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const REPO_ROOT = path.resolve(__dirname, '..');
const PLUGIN_NAME = 'nx-open-cache';
/** Envelope header in front of every stored object (src/envelope.rs, version 1). */
const HEADER_LEN = 48;
const MAGIC = Buffer.from('NXOC');

const { run, locateNx } = require('../scripts/dev-tools.js');

/** @param {number} i */
const projectName = (i) => `p${String(i).padStart(2, '0')}`;

/**
 * Writes an Nx workspace with `projects` projects into `dir` (a git repo with one commit), whose
 * nx.json enables the plugin with the fs store at `storePath`.
 * @param {{dir: string, projects: number, storePath: string, nxDir: string}} o
 */
function generateWorkspace(o) {
  const { dir, projects, storePath, nxDir } = o;
  fs.mkdirSync(path.join(dir, 'tools'), { recursive: true });
  fs.copyFileSync(path.join(__dirname, 'fixture', 'build.js'), path.join(dir, 'tools', 'build.js'));
  const nxJson = {
    $schema: './node_modules/nx/schemas/nx-schema.json',
    namedInputs: {
      default: ['{projectRoot}/**/*', 'sharedGlobals'],
      sharedGlobals: ['{workspaceRoot}/tools/build.js'],
      production: ['default', '!{projectRoot}/dist/**'],
    },
    plugins: [{ plugin: PLUGIN_NAME, options: { backend: 'fs', path: storePath } }],
  };
  fs.writeFileSync(path.join(dir, 'nx.json'), JSON.stringify(nxJson, null, 2) + '\n');
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({ name: '@bench/source', version: '0.0.0', private: true }, null, 2) + '\n',
  );
  fs.writeFileSync(path.join(dir, '.gitignore'), 'node_modules\ndist\n.nx\n');
  for (let i = 0; i < projects; i++) {
    const name = projectName(i);
    const root = `packages/${name}`;
    fs.mkdirSync(path.join(dir, root, 'src'), { recursive: true });
    const project = {
      name,
      $schema: '../../node_modules/nx/schemas/project-schema.json',
      projectType: 'library',
      sourceRoot: `${root}/src`,
      targets: {
        build: {
          executor: 'nx:run-commands',
          options: { command: 'node tools/build.js {projectRoot}' },
          cache: true,
          inputs: ['production'],
          outputs: ['{projectRoot}/dist'],
        },
      },
    };
    fs.writeFileSync(path.join(dir, root, 'project.json'), JSON.stringify(project, null, 2) + '\n');
    fs.writeFileSync(
      path.join(dir, root, 'src', 'index.js'),
      `'use strict';\n// Benchmark project ${name}: its build output is derived from this file.\n` +
        `module.exports = { name: '${name}', seed: ${1000 + i * 7919} };\n`,
    );
  }
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(nxDir, path.join(dir, 'node_modules', 'nx'), 'dir');
  fs.symlinkSync(REPO_ROOT, path.join(dir, 'node_modules', PLUGIN_NAME), 'dir');
  run('git', ['-c', 'init.defaultBranch=main', 'init', '-q'], dir);
  run('git', ['add', '-A'], dir);
  run(
    'git',
    [
      '-c', 'user.name=nx-open-cache bench',
      '-c', 'user.email=bench@nx-open-cache.invalid',
      '-c', 'commit.gpgsign=false',
      'commit', '-q', '--no-verify', '-m', 'benchmark workspace',
    ],
    dir,
  );
}

/**
 * Every file under `packages/<project>/dist`: relative path -> `<mode> <sha256>`.
 * @param {string} dir workspace
 * @returns {{files: Map<string, string>, bytes: number}}
 */
function snapshotOutputs(dir) {
  /** @type {Map<string, string>} */
  const files = new Map();
  let bytes = 0;
  /** @param {string} abs */
  const walk = (abs) => {
    for (const e of fs.readdirSync(abs, { withFileTypes: true })) {
      const p = path.join(abs, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.lstatSync(p);
        const rel = path.relative(dir, p).split(path.sep).join('/');
        if (!st.isFile()) {
          files.set(rel, `not a regular file (mode ${st.mode.toString(8)})`);
          continue;
        }
        const data = fs.readFileSync(p);
        bytes += data.length;
        const mode = (st.mode & 0o777).toString(8);
        files.set(rel, `${mode} ${crypto.createHash('sha256').update(data).digest('hex')}`);
      }
    }
  };
  const packages = path.join(dir, 'packages');
  for (const project of fs.readdirSync(packages).sort()) {
    const dist = path.join(packages, project, 'dist');
    if (fs.existsSync(dist)) walk(dist);
  }
  return { files, bytes };
}

/**
 * @param {Map<string, string>} expected
 * @param {Map<string, string>} actual
 * @returns {string[]} differences (at most 10 listed, then a count)
 */
function diffSnapshots(expected, actual) {
  const diffs = [];
  for (const [p, e] of expected) {
    const a = actual.get(p);
    if (a === undefined) diffs.push(`missing: ${p}`);
    else if (a !== e) diffs.push(`differs: ${p} (expected ${e}, got ${a})`);
  }
  for (const p of actual.keys()) if (!expected.has(p)) diffs.push(`unexpected: ${p}`);
  if (diffs.length > 10) return [...diffs.slice(0, 10), `... and ${diffs.length - 10} more`];
  return diffs;
}

/** Deletes every project's dist folder. @param {string} dir workspace */
function deleteOutputs(dir) {
  const packages = path.join(dir, 'packages');
  for (const project of fs.readdirSync(packages)) {
    fs.rmSync(path.join(packages, project, 'dist'), { recursive: true, force: true });
  }
}

/**
 * @typedef {object} StoredObject
 * @property {string} hash
 * @property {string} file     the object file in the store
 * @property {Buffer} payload  the bytes Nx uploaded (Nx's tar.gz)
 */

/**
 * Reads every object of an fs store (`<root>/<aa>/<bb>/<hash>`), checks its envelope header (magic,
 * declared length, sha256 digest) and returns the payloads.
 * @param {string} root
 * @returns {StoredObject[]}
 */
function readStore(root) {
  /** @type {StoredObject[]} */
  const out = [];
  const fan = /^[0-9a-f]{2}$/;
  for (const aa of fs.readdirSync(root).filter((n) => fan.test(n)).sort()) {
    for (const bb of fs.readdirSync(path.join(root, aa)).filter((n) => fan.test(n)).sort()) {
      for (const hash of fs.readdirSync(path.join(root, aa, bb)).sort()) {
        const file = path.join(root, aa, bb, hash);
        const data = fs.readFileSync(file);
        if (data.length < HEADER_LEN || !data.subarray(0, 4).equals(MAGIC)) {
          throw new Error(`stored object ${file} does not start with a ${HEADER_LEN}-byte NXOC header`);
        }
        const payload = data.subarray(HEADER_LEN);
        const declared = data.readBigUInt64BE(8);
        if (declared !== BigInt(payload.length)) {
          throw new Error(`stored object ${file}: header declares ${declared} payload bytes, file has ${payload.length}`);
        }
        const digest = crypto.createHash('sha256').update(payload).digest();
        if (!digest.equals(data.subarray(16, 48))) throw new Error(`stored object ${file}: payload digest mismatch`);
        if (payload[0] !== 0x1f || payload[1] !== 0x8b) throw new Error(`stored object ${file}: payload is not gzip`);
        out.push({ hash, file, payload });
      }
    }
  }
  return out;
}

/**
 * Writes each payload to `<root>/v1/cache/<hash>`, the layout nginx serves.
 * @param {StoredObject[]} objects
 * @param {string} root
 */
function exportForNginx(objects, root) {
  const dir = path.join(root, 'v1', 'cache');
  fs.mkdirSync(dir, { recursive: true });
  for (const o of objects) fs.writeFileSync(path.join(dir, o.hash), o.payload);
}

module.exports = {
  REPO_ROOT,
  PLUGIN_NAME,
  locateNx,
  generateWorkspace,
  snapshotOutputs,
  diffSnapshots,
  deleteOutputs,
  readStore,
  exportForNginx,
  run,
};
