#!/usr/bin/env node
'use strict';
/**
 * The demo workspace's build: `node tools/build.js <projectRoot>`.
 *
 * Bundles `<projectRoot>/src/*.js` into `<projectRoot>/dist`, the way a small bundler would:
 *   dist/index.js        CommonJS bundle (module registry + the sources)
 *   dist/index.min.js    the same bundle without comments and indentation
 *   dist/index.js.br     brotli-compressed bundle (binary)
 *   dist/fingerprint.bin 64-byte PBKDF2-SHA512 fingerprint of sources + dependency digests (binary)
 *   dist/manifest.json   name, dependency digests, every file's size, sha256 and mode
 *   dist/bin/<name>      executable (0755) that loads the bundle and prints what it exports
 *
 * Dependencies (project.json `implicitDependencies`) must be built first: their manifests are
 * read from `packages/<dep>/dist/manifest.json` and folded into this build's fingerprint. The
 * fingerprint (many PBKDF2 rounds) is the deliberate CPU cost that makes a cache hit worth
 * having: roughly half a second per project. Output is deterministic: the same sources give
 * byte-identical files. Node built-ins only.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

const FINGERPRINT_ROUNDS = 1_200_000;
const workspaceRoot = path.resolve(__dirname, '..');

/** @param {number} n */
function kib(n) {
  return `${(n / 1024).toFixed(1)} KiB`;
}

/** @param {string | Buffer} data */
function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/**
 * @param {string} file
 * @param {string | Buffer} content
 * @param {number} mode
 */
function writeFile(file, content, mode) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  fs.chmodSync(file, mode); // explicit, whatever the umask
}

/**
 * Very small "minifier": drops comment-only lines, indentation and blank lines. Good enough
 * for this workspace's sources (no multi-line strings or template literals).
 * @param {string} code
 */
function minify(code) {
  return code
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('//') && !l.startsWith('*') && !l.startsWith('/*'))
    .join('\n');
}

function main() {
  const projectRootArg = process.argv[2];
  if (!projectRootArg) {
    console.error('usage: node tools/build.js <projectRoot>');
    process.exit(2);
  }
  const projectRoot = path.resolve(workspaceRoot, projectRootArg);
  /** @type {{name: string, implicitDependencies?: string[]}} */
  const project = JSON.parse(fs.readFileSync(path.join(projectRoot, 'project.json'), 'utf8'));
  const name = project.name;
  const deps = [...(project.implicitDependencies ?? [])].sort();
  const srcDir = path.join(projectRoot, 'src');
  const distDir = path.join(projectRoot, 'dist');

  const sources = fs
    .readdirSync(srcDir)
    .filter((f) => f.endsWith('.js'))
    .sort()
    .map((f) => ({ file: f, code: fs.readFileSync(path.join(srcDir, f), 'utf8') }));
  if (!sources.some((s) => s.file === 'index.js')) throw new Error(`${name}: src/index.js is missing`);
  const sourceBytes = sources.reduce((n, s) => n + Buffer.byteLength(s.code), 0);

  /** @type {Record<string, string>} */
  const depDigests = {};
  for (const dep of deps) {
    const manifestPath = path.join(workspaceRoot, 'packages', dep, 'dist', 'manifest.json');
    if (!fs.existsSync(manifestPath)) {
      throw new Error(`${name}: dependency ${dep} is not built (${path.relative(workspaceRoot, manifestPath)} missing)`);
    }
    depDigests[dep] = JSON.parse(fs.readFileSync(manifestPath, 'utf8')).fingerprint;
  }

  console.log(`build ${name}: ${sources.length} sources (${kib(sourceBytes)}), deps: ${deps.join(', ') || 'none'}`);

  // The bundle: a module registry; `./x` resolves inside the bundle, `@demo/<dep>` to the
  // dependency's own bundle next door.
  const modules = sources
    .map(
      (s) =>
        `  ${JSON.stringify('./' + s.file.replace(/\.js$/, ''))}: function (module, exports, require) {\n` +
        s.code
          .trimEnd()
          .split('\n')
          .map((l) => (l ? '    ' + l : l))
          .join('\n') +
        '\n  },',
    )
    .join('\n');
  const bundle = [
    `// @demo/${name} - bundled by tools/build.js`,
    `// dependencies: ${deps.map((d) => `${d}@${depDigests[d].slice(0, 12)}`).join(', ') || 'none'}`,
    `'use strict';`,
    `const __modules = {`,
    modules,
    `};`,
    `const __cache = {};`,
    `function __require(id) {`,
    `  if (id.startsWith('@demo/')) return require(require('path').join(__dirname, '..', '..', id.slice(6), 'dist', 'index.js'));`,
    `  const key = id.replace(/\\.js$/, '');`,
    `  if (!__modules[key]) throw new Error('module not found in bundle: ' + id);`,
    `  if (!__cache[key]) {`,
    `    const module = { exports: {} };`,
    `    __cache[key] = module;`,
    `    __modules[key](module, module.exports, __require);`,
    `  }`,
    `  return __cache[key].exports;`,
    `}`,
    `module.exports = __require('./index');`,
    ``,
  ].join('\n');
  const minified = minify(bundle) + '\n';
  const brotli = zlib.brotliCompressSync(Buffer.from(bundle), {
    params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bundle.length },
  });
  console.log(`  bundle      dist/index.js        ${kib(Buffer.byteLength(bundle))}`);
  console.log(`  minified    dist/index.min.js    ${kib(Buffer.byteLength(minified))}`);
  console.log(`  brotli      dist/index.js.br     ${kib(brotli.length)}`);

  // The expensive part: a key-stretched fingerprint of everything this build depends on.
  const material = JSON.stringify({ name, sources, depDigests });
  const fingerprint = crypto.pbkdf2Sync(material, `@demo/${name}`, FINGERPRINT_ROUNDS, 64, 'sha512');
  console.log(
    `  fingerprint ${FINGERPRINT_ROUNDS.toLocaleString('en-US')} rounds of PBKDF2-SHA512 -> ${fingerprint.toString('hex').slice(0, 16)}`,
  );

  const binName = name;
  const binScript = [
    '#!/usr/bin/env node',
    `// @demo/${name} command line entry (generated)`,
    `'use strict';`,
    `const api = require('../index.js');`,
    `const summary = typeof api.describe === 'function' ? api.describe() : Object.keys(api).sort().join(',');`,
    `console.log('@demo/${name}: ' + summary);`,
    '',
  ].join('\n');

  fs.rmSync(distDir, { recursive: true, force: true });
  /** @type {Array<{path: string, content: string | Buffer, mode: number}>} */
  const files = [
    { path: 'index.js', content: bundle, mode: 0o644 },
    { path: 'index.min.js', content: minified, mode: 0o644 },
    { path: 'index.js.br', content: brotli, mode: 0o644 },
    { path: 'fingerprint.bin', content: fingerprint, mode: 0o644 },
    { path: `bin/${binName}`, content: binScript, mode: 0o755 },
  ];
  for (const f of files) writeFile(path.join(distDir, f.path), f.content, f.mode);
  const manifest = {
    name: `@demo/${name}`,
    fingerprint: fingerprint.toString('hex'),
    dependencies: depDigests,
    files: files.map((f) => ({
      path: f.path,
      size: Buffer.byteLength(f.content),
      sha256: sha256(f.content),
      mode: f.mode.toString(8),
    })),
  };
  writeFile(path.join(distDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n', 0o644);
  console.log(`  wrote ${files.length + 1} files to ${path.relative(workspaceRoot, distDir)}/ (bin/${binName} is executable)`);
}

try {
  main();
} catch (err) {
  console.error(`build failed: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
