'use strict';
// Archives through the Node bindings, and interop with Nx's own remote-cache client
// (require('nx/src/native').HttpRemoteCache) talking to a loopback HTTP server started here:
// - an archive we pack in `nx` format is restored by Nx's `retrieve`;
// - what Nx's `store` uploads is unpacked by ours to the same files, terminal output and code.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const ours = require('../index.js');
const nx = require('nx/src/native');

/** @type {string} */
let tmp;
/** @type {http.Server} */
let server;
/** @type {Map<string, Buffer>} */
const stored = new Map();
/** @type {string} */
let url;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nxoc-archive-'));
  server = http.createServer((req, res) => {
    const m = /^\/v1\/cache\/([A-Za-z0-9_-]+)$/.exec(req.url || '');
    if (!m) {
      res.writeHead(400).end();
      return;
    }
    const hash = m[1];
    if (req.method === 'GET') {
      const body = stored.get(hash);
      if (!body) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' }).end(body);
    } else if (req.method === 'PUT') {
      /** @type {Buffer[]} */
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        if (stored.has(hash)) {
          res.writeHead(409).end();
          return;
        }
        stored.set(hash, Buffer.concat(chunks));
        res.writeHead(200).end();
      });
    } else {
      res.writeHead(405).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('no server address');
  url = `http://127.0.0.1:${addr.port}`;
});

after(async () => {
  await new Promise((resolve) => server.close(() => resolve(undefined)));
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Nx's client, reading the server address from the environment at construction. */
function nxClient() {
  process.env.NX_SELF_HOSTED_REMOTE_CACHE_SERVER = url;
  process.env.NX_SELF_HOSTED_REMOTE_CACHE_ACCESS_TOKEN = 'test-token';
  return new nx.HttpRemoteCache();
}

/**
 * Writes a small output tree: text, binary, modes, an empty dir, internal symlinks, long names.
 * @param {string} root
 */
function makeTree(root) {
  /** @param {string} rel @param {string | Buffer} data @param {number} [mode] */
  const w = (rel, data, mode) => {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, data);
    if (mode !== undefined) fs.chmodSync(p, mode);
  };
  w('dist/libs/a/index.js', 'export const a = 1;\n'.repeat(50));
  w('dist/libs/a/index.d.ts', 'export declare const a: number;\n');
  w('dist/libs/a/bin/cli.js', '#!/usr/bin/env node\n', 0o755);
  w('dist/libs/a/secret.bin', Buffer.from([0, 1, 2, 3, 255]), 0o600);
  w(`dist/libs/a/${'n'.repeat(110)}/${'é'.repeat(60)}.txt`, 'long');
  fs.mkdirSync(path.join(root, 'dist/libs/a/empty'), { recursive: true });
  fs.symlinkSync('index.js', path.join(root, 'dist/libs/a/main.js'));
  fs.symlinkSync('../a/bin', path.join(root, 'dist/libs/a/bin-link'));
}

/**
 * Sorted [relative path, description, mode] of everything below root.
 * @param {string} root
 */
function snapshot(root) {
  /** @type {[string, string, number][]} */
  const out = [];
  /** @param {string} dir */
  const walk = (dir) => {
    for (const name of fs.readdirSync(dir)) {
      const p = path.join(dir, name);
      const rel = path.relative(root, p);
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) out.push([rel, `link:${fs.readlinkSync(p)}`, 0]);
      else if (st.isDirectory()) {
        out.push([rel, 'dir', st.mode & 0o777]);
        walk(p);
      } else out.push([rel, `file:${fs.readFileSync(p).toString('base64')}`, st.mode & 0o777]);
    }
  };
  walk(root);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

test('our nx-format archive is restored by Nx\'s own HttpRemoteCache.retrieve', async () => {
  const src = path.join(tmp, 'src1');
  makeTree(src);
  const archive = ours.pack({ root: src, files: ['dist'], terminalOutput: 'built ✓\n', code: 1, format: 'nx' });
  assert.ok(Buffer.isBuffer(archive));
  assert.deepEqual([...archive.subarray(0, 2)], [0x1f, 0x8b]);
  stored.set('ourhash1', archive);
  const cacheDir = path.join(tmp, 'nx-cache1');
  fs.mkdirSync(cacheDir);
  const r = await nxClient().retrieve('ourhash1', cacheDir);
  assert.ok(r, 'Nx reports a hit');
  assert.equal(r.code, 1);
  assert.equal(r.terminalOutput, 'built ✓\n');
  assert.equal(r.outputsPath, path.join(cacheDir, 'ourhash1'));
  assert.deepEqual(snapshot(r.outputsPath), snapshot(src));
});

test('what Nx\'s HttpRemoteCache.store uploads unpacks with ours to the same files, output and code', async () => {
  const cacheDir = path.join(tmp, 'nx-cache2');
  const outputs = path.join(cacheDir, 'nxhash2');
  makeTree(outputs);
  const ok = await nxClient().store('nxhash2', cacheDir, 'hello from nx\n', 2);
  assert.equal(ok, true);
  const body = stored.get('nxhash2');
  assert.ok(body);
  const dest = path.join(tmp, 'restored2');
  const u = ours.unpack(body, dest);
  assert.equal(u.format, 'nx');
  assert.equal(u.code, 2);
  assert.equal(u.terminalOutput, 'hello from nx\n');
  assert.deepEqual(snapshot(dest), snapshot(outputs));
  assert.ok(u.files.includes('dist/libs/a/index.js'));
  assert.ok(u.files.includes('dist/libs/a/main.js'));

  // The same archive, read from a file by the Async form.
  const file = path.join(tmp, 'nxhash2.tar.gz');
  fs.writeFileSync(file, body);
  const u2 = await ours.unpackAsync(file, path.join(tmp, 'restored2b'));
  assert.deepEqual(u2, u);
  assert.deepEqual(snapshot(path.join(tmp, 'restored2b')), snapshot(outputs));
});

test('round trip through Nx: ours -> Nx retrieve -> Nx store -> ours', async () => {
  const src = path.join(tmp, 'src3');
  makeTree(src);
  stored.set('h3', /** @type {Buffer} */ (ours.pack({ root: src, entries: ['dist', 'not-built'], terminalOutput: '', code: 0, format: 'nx' })));
  const cacheDir = path.join(tmp, 'nx-cache3');
  fs.mkdirSync(cacheDir);
  const client = nxClient();
  const r = await client.retrieve('h3', cacheDir);
  assert.ok(r);
  fs.renameSync(path.join(cacheDir, 'h3'), path.join(cacheDir, 'h3b'));
  assert.equal(await client.store('h3b', cacheDir, r.terminalOutput ?? '', r.code), true);
  const u = ours.unpack(/** @type {Buffer} */ (stored.get('h3b')), path.join(tmp, 'restored3'));
  assert.equal(u.code, 0);
  assert.equal(u.terminalOutput, '');
  assert.deepEqual(snapshot(path.join(tmp, 'restored3')), snapshot(src));
});

test('zstd is the default format, reproducible, and packAsync/output write the same bytes', async () => {
  const src = path.join(tmp, 'src4');
  makeTree(src);
  const opts = { root: src, files: ['dist'], terminalOutput: 'x', code: 0 };
  const a = ours.pack(opts);
  assert.ok(a);
  assert.deepEqual([...a.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd]);
  assert.deepEqual(ours.pack({ ...opts, threads: 1, format: 'zstd' }), a);
  const b = await ours.packAsync(opts);
  assert.deepEqual(b, a);
  const out = path.join(tmp, 'out4.tar.zst');
  assert.equal(await ours.packAsync({ ...opts, output: out }), null);
  assert.deepEqual(fs.readFileSync(out), a);
  assert.equal(ours.pack({ ...opts, output: out + '2' }), null);
  assert.deepEqual(fs.readFileSync(out + '2'), a);
  const u = await ours.unpackAsync(a, path.join(tmp, 'restored4'));
  assert.equal(u.format, 'zstd');
  assert.deepEqual(snapshot(path.join(tmp, 'restored4')), snapshot(src));
});

/**
 * A one-entry forged tar (name written straight into the header), gzipped.
 * @param {string} name
 * @param {Buffer} body
 */
function forged(name, body) {
  const h = Buffer.alloc(512);
  h.write(name, 0, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
  h.write('00000000000\0', 136);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  h.fill(' ', 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return zlib.gzipSync(Buffer.concat([h, body, pad, Buffer.alloc(1024)]));
}

test('errors name the entry and the reason, and nothing is written', async () => {
  const dest = path.join(tmp, 'evil', 'out');
  assert.throws(() => ours.unpack(forged('../escape.txt', Buffer.from('PWNED')), dest), /`\.\.\/escape\.txt`.*\.\./);
  await assert.rejects(ours.unpackAsync(forged('/tmp/abs.txt', Buffer.from('PWNED')), dest), /absolute/);
  assert.deepEqual(fs.readdirSync(path.join(tmp, 'evil')), []);
  assert.ok(!fs.existsSync(path.join(tmp, 'escape.txt')));
  assert.throws(() => ours.unpack(Buffer.from('not an archive'), dest), /not a task-output archive/);
  const good = ours.pack({ root: tmp, files: [], terminalOutput: 'x', code: 0, format: 'nx' });
  assert.ok(good);
  assert.throws(() => ours.unpack(good.subarray(0, good.length - 6), dest));
  assert.deepEqual(fs.readdirSync(path.join(tmp, 'evil')), []);
  assert.throws(() => ours.pack({ root: tmp, files: ['missing'], terminalOutput: '', code: 0 }), /missing/);
  assert.throws(() => ours.pack({ root: tmp, files: [], terminalOutput: '', code: 0, format: 'zip' }), /`zip`/);
});

test('pack refuses numbers out of range instead of wrapping them: code, level, threads (sync and async)', async () => {
  const base = { root: tmp, files: [], terminalOutput: '' };
  /** @type {[Record<string, unknown>, RegExp][]} */
  const cases = [
    [{ code: 2 ** 40 }, /invalid value 1099511627776 for code: expected a whole number from 0 to 4294967295/],
    [{ code: 2 ** 32 }, /invalid value 4294967296 for code/],
    [{ code: -1 }, /invalid value -1 for code/],
    [{ code: 1.5 }, /invalid value 1\.5 for code/],
    [{ code: NaN }, /invalid value NaN for code/],
    [{ code: Infinity }, /invalid value Infinity for code/],
    [{ code: 0, level: 2 ** 40 }, /invalid value 1099511627776 for level: expected a whole number from 0 to 22/],
    [{ code: 0, level: 6.5 }, /invalid value 6\.5 for level/],
    [{ code: 0, level: -1 }, /invalid value -1 for level/],
    [{ code: 0, level: 0 }, /level: 0 is not a zstd level/],
    [{ code: 0, level: 12, format: 'nx' }, /level: 12 is not a gzip level/],
    [{ code: 0, threads: 2 ** 32 + 1 }, /invalid value 4294967297 for threads: expected a whole number from 1 to 256/],
    [{ code: 0, threads: 0 }, /invalid value 0 for threads/],
    [{ code: 0, threads: NaN }, /invalid value NaN for threads/],
  ];
  for (const [extra, expected] of cases) {
    const opts = /** @type {import('../index').PackOptions} */ (/** @type {unknown} */ ({ ...base, ...extra }));
    assert.throws(() => ours.pack(opts), expected, JSON.stringify(extra));
    await assert.rejects(ours.packAsync(opts), expected, JSON.stringify(extra));
  }
  // The bounds themselves pack and restore as given.
  for (const code of [0, 255, 4294967295]) {
    const a = ours.pack({ ...base, code, format: 'nx', level: 9 });
    assert.ok(a);
    assert.equal(ours.unpack(a, path.join(tmp, `code-${code}`)).code, code);
  }
});
