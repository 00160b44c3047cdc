'use strict';
/**
 * Hostile and foreign payloads for the store: what a writer of a shared store (or a server) could
 * put in place of an artifact. Each shape is a payload generator and the words the refusal must
 * hold. Paths aim at a canary directory outside the workspace and the restore directory, so a
 * test can check that nothing was written there.
 *
 * Layout the traversal paths assume: `<base>/canary` (the canary), `<base>/ws` (the workspace),
 * `<base>/<cache>` (NX_CACHE_DIRECTORY, Nx extracts into `<base>/<cache>/<hash>/`). From the
 * restore directory `../../canary` is the canary; from a project's `dist/` in the workspace
 * (`<base>/ws/packages/<p>/dist/`) it is `../../../../canary`.
 */

const crypto = require('node:crypto');
const zlib = require('node:zlib');
const t = require('./hostile-tar.js');

/**
 * @typedef {{ canary: string, project: string }} ShapeContext  the canary's absolute path; a
 *   project directory relative to the workspace (e.g. packages/lib-a)
 * @typedef {{ name: string, reason: RegExp, payload: (ctx: ShapeContext) => Buffer }} Shape
 */

/** @param {ShapeContext} ctx @param {string} rel */
const out = (ctx, rel) => `${ctx.project}/dist/${rel}`;

/** A correct artifact of the project, the base of the truncated and extended shapes. @param {ShapeContext} ctx */
function honest(ctx) {
  return t.nxArtifact({
    [out(ctx, 'index.txt')]: 'built\n',
    [out(ctx, 'blob.bin')]: crypto.randomBytes(64 * 1024),
  });
}

/** @param {ShapeContext} ctx @param {Buffer[]} entries an artifact of these entries and Nx's layout */
function withLayout(ctx, entries) {
  return t.gzip(t.tarOf([t.dir(`${ctx.project}/dist/`), ...entries, t.nxLayout()]));
}

/**
 * A gzip member built from independent deflate pieces (each ends with a full flush, which resets
 * the compressor): `count` copies of `repeated` between `head` and `tail` cost one compressed
 * copy each, so a huge inflated size is quick to make and small to keep.
 * @param {Buffer} head
 * @param {Buffer} repeated
 * @param {number} count
 * @param {Buffer} tail
 */
function repeatedGzip(head, repeated, count, tail) {
  const flush = { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH };
  const one = zlib.deflateRawSync(repeated, flush);
  const parts = [
    Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]),
    zlib.deflateRawSync(head, flush),
  ];
  let crc = zlib.crc32(head);
  for (let i = 0; i < count; i++) {
    parts.push(one);
    crc = zlib.crc32(repeated, crc);
  }
  parts.push(zlib.deflateRawSync(tail, { level: 9 }));
  crc = zlib.crc32(tail, crc);
  return Buffer.concat([...parts, trailer(crc, head.length + repeated.length * count + tail.length)]);
}

/**
 * A gzip trailer: CRC-32 and length modulo 2^32, little-endian.
 * @param {number} crc
 * @param {number} length
 */
function trailer(crc, length) {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(crc >>> 0, 0);
  b.writeUInt32LE(length % 2 ** 32, 4);
  return b;
}

/** 1 GiB of zeros in one file: about 1 MB compressed. @param {ShapeContext} ctx */
function bomb(ctx) {
  const MIB = 1024 * 1024;
  const head = t.header({ name: out(ctx, 'bomb.bin'), size: 1024 * MIB });
  return repeatedGzip(head, Buffer.alloc(MIB), 1024, t.tarOf([t.nxLayout()]));
}

/**
 * More paths than the default bound (1,000,000): 1,001,000 empty files in 1001 directories, made
 * a thousand headers at a time (only the name and the checksum change between headers).
 * @param {ShapeContext} ctx
 */
function manyEntries(ctx) {
  const PER = 1000;
  const template = t.header({ name: '' });
  template.fill(0x20, 148, 156);
  let templateSum = 0;
  for (const byte of template) templateSum += byte;
  const piece = Buffer.alloc(PER * t.BLOCK);
  const flush = { level: 1, finishFlush: zlib.constants.Z_FULL_FLUSH };
  const parts = [Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])];
  let crc = 0;
  let total = 0;
  for (let d = 0; d < 1001; d++) {
    for (let i = 0; i < PER; i++) {
      const h = piece.subarray(i * t.BLOCK, (i + 1) * t.BLOCK);
      template.copy(h);
      const name = Buffer.from(out(ctx, `many/d${String(d).padStart(4, '0')}/f${String(i).padStart(4, '0')}`));
      name.copy(h);
      let sum = templateSum;
      for (const byte of name) sum += byte;
      h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    }
    parts.push(zlib.deflateRawSync(piece, flush));
    crc = zlib.crc32(piece, crc);
    total += piece.length;
  }
  const tail = t.tarOf([t.nxLayout()]);
  parts.push(zlib.deflateRawSync(tail, { level: 9 }));
  crc = zlib.crc32(tail, crc);
  total += tail.length;
  return Buffer.concat([...parts, trailer(crc, total)]);
}

/** @type {Shape[]} */
const SHAPES = [
  { name: 'garbage', reason: /not gzip/, payload: () => crypto.randomBytes(4096) },
  { name: 'empty', reason: /empty \(0 bytes\)/, payload: () => Buffer.alloc(0) },
  {
    name: 'truncated gzip',
    reason: /truncated/,
    payload: (ctx) => {
      const a = honest(ctx);
      return a.subarray(0, Math.floor(a.length / 2));
    },
  },
  {
    name: 'gzip of something that is not tar',
    reason: /header checksum/,
    payload: () => t.gzip(Buffer.from('this is a log file, not a tar archive\n'.repeat(40))),
  },
  {
    name: 'plain tar, not compressed',
    reason: /not gzip: it starts with/,
    payload: (ctx) => t.tarOf([t.file(out(ctx, 'index.txt'), 'x'), t.nxLayout()]),
  },
  {
    name: 'a zip archive',
    reason: /not gzip: it starts with 50 4b/,
    payload: () => Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), crypto.randomBytes(200)]),
  },
  {
    name: 'tar without terminalOutput and code',
    reason: /no `terminalOutput` entry/,
    payload: (ctx) => t.gzip(t.tarOf([t.file(out(ctx, 'index.txt'), 'x')])),
  },
  {
    name: 'a code entry of 3 bytes',
    reason: /`code`: must be 4 bytes, not 3/,
    payload: () => t.gzip(t.tarOf([
      t.entry({ name: 'terminalOutput', magic: 'v7' }, 'x'),
      t.entry({ name: 'code', magic: 'v7' }, Buffer.from([0, 0, 0])),
    ])),
  },
  {
    name: 'terminalOutput that is not UTF-8',
    reason: /`terminalOutput`: not valid UTF-8/,
    payload: () => t.gzip(t.tarOf([
      t.entry({ name: 'terminalOutput', magic: 'v7' }, Buffer.from([0x41, 0xff, 0xfe])),
      t.entry({ name: 'code', magic: 'v7' }, Buffer.alloc(4)),
    ])),
  },
  {
    name: 'path traversal',
    reason: /`\.\.\/\.\.\/canary\/pwned-traversal`: `\.\.` components are not allowed/,
    payload: (ctx) => withLayout(ctx, [t.file('../../canary/pwned-traversal', 'pwned')]),
  },
  {
    name: 'absolute path',
    reason: /absolute paths are not allowed/,
    payload: (ctx) => withLayout(ctx, [t.longName(`${ctx.canary}/pwned-absolute`, { name: '' }, 'pwned')]),
  },
  {
    name: 'traversal in a PAX path',
    reason: /pwned-pax`: `\.\.` components/,
    payload: (ctx) => withLayout(ctx, [t.pax({ path: '../../canary/pwned-pax' }), t.file(out(ctx, 'innocent.txt'), 'pwned')]),
  },
  {
    name: 'traversal in a GNU long name',
    reason: /`\.\.` components are not allowed/,
    payload: (ctx) => withLayout(ctx, [
      t.longName(`${ctx.project}/dist/${'a'.repeat(120)}/../../../../../../canary/pwned-long`, { name: '' }, 'pwned'),
    ]),
  },
  {
    name: 'symlink to an absolute directory, then a file through it',
    reason: /symlink target `.*canary` is absolute/,
    payload: (ctx) => withLayout(ctx, [t.symlink(out(ctx, 'esc'), ctx.canary), t.file(out(ctx, 'esc/pwned-direct'), 'pwned')]),
  },
  {
    name: 'relative symlink out of the workspace, then a file through it',
    reason: /its parent `.*dist\/esc` is a symlink of the archive/,
    payload: (ctx) => withLayout(ctx, [
      t.symlink(out(ctx, 'esc'), '../../../../canary'),
      t.file(out(ctx, 'esc/pwned-relative'), 'pwned'),
    ]),
  },
  {
    name: 'relative symlink out of the restore directory',
    reason: /symlink to `\.\.\/\.\.\/\.\.\/\.\.\/canary`: it points outside the archive/,
    payload: (ctx) => withLayout(ctx, [t.symlink(out(ctx, 'esc'), '../../../../canary')]),
  },
  {
    name: 'chained symlinks, each harmless alone',
    reason: /it points outside the archive/,
    payload: (ctx) => withLayout(ctx, [
      t.symlink(out(ctx, 'up1'), '..'),
      t.symlink(out(ctx, 'up2'), 'up1/..'),
      t.symlink(out(ctx, 'up3'), 'up2/..'),
      t.symlink(out(ctx, 'esc'), 'up3/../canary'),
    ]),
  },
  {
    name: 'directory swapped for a symlink after its contents',
    reason: /dist\/sub`: duplicate entry \(already a directory\)/,
    payload: (ctx) => withLayout(ctx, [
      t.dir(out(ctx, 'sub/')),
      t.file(out(ctx, 'sub/ok.txt'), 'ok'),
      t.symlink(out(ctx, 'sub'), '../../../../canary'),
      t.file(out(ctx, 'sub/pwned-swap'), 'pwned'),
    ]),
  },
  {
    name: 'hard links out of the archive',
    reason: /hard links are not allowed/,
    payload: (ctx) => withLayout(ctx, [
      t.entry({ name: out(ctx, 'hostname'), type: '1', link: '/etc/hostname' }),
      t.entry({ name: out(ctx, 'canary'), type: '1', link: `${ctx.canary}/canary.txt` }),
    ]),
  },
  {
    name: 'character device',
    reason: /device files are not allowed/,
    payload: (ctx) => withLayout(ctx, [t.entry({ name: out(ctx, 'null'), type: '3', mode: 0o666, devmajor: 1, devminor: 3 })]),
  },
  {
    name: 'block device',
    reason: /device files are not allowed/,
    payload: (ctx) => withLayout(ctx, [t.entry({ name: out(ctx, 'sda'), type: '4', mode: 0o660, devmajor: 8, devminor: 0 })]),
  },
  {
    name: 'FIFO',
    reason: /FIFOs are not allowed/,
    payload: (ctx) => withLayout(ctx, [t.entry({ name: out(ctx, 'pipe'), type: '6' })]),
  },
  {
    name: 'setuid executable',
    reason: /setuid, setgid and sticky bits are not allowed \(mode 4755\)/,
    payload: (ctx) => withLayout(ctx, [t.file(out(ctx, 'su'), '#!/bin/sh\nid\n', 0o4755)]),
  },
  {
    name: 'duplicate entries',
    reason: /index\.txt`: duplicate entry \(already a file\)/,
    payload: (ctx) => withLayout(ctx, [t.file(out(ctx, 'index.txt'), 'first'), t.file(out(ctx, 'index.txt'), 'second')]),
  },
  {
    name: 'sparse file',
    reason: /sparse files are not supported/,
    payload: (ctx) => withLayout(ctx, [t.entry({ name: out(ctx, 'sparse'), type: 'S' })]),
  },
  {
    name: 'symlink to Nx\'s code entry',
    reason: /it points to `code`/,
    payload: (ctx) => withLayout(ctx, [t.symlink(out(ctx, 'c'), '../../../code')]),
  },
  {
    name: 'symlink loop',
    reason: /a symlink loop/,
    payload: (ctx) => withLayout(ctx, [t.symlink(out(ctx, 'a'), 'b'), t.symlink(out(ctx, 'b'), 'a')]),
  },
  {
    name: 'a second gzip member after the artifact',
    reason: /Nx reads only its first member/,
    payload: (ctx) => Buffer.concat([honest(ctx), t.gzip(t.tarOf([t.file('../../canary/pwned-member', 'pwned')]))]),
  },
  {
    name: 'more entries than the bound (1,001,000)',
    reason: /more than 1000000 paths/,
    payload: manyEntries,
  },
  {
    name: 'decompression bomb (1 GiB of zeros in about 1 MB)',
    reason: /inflates to more than 200 times its compressed size/,
    payload: bomb,
  },
];

module.exports = { SHAPES, repeatedGzip };
