'use strict';
/**
 * Raw tar.gz making for tests: headers written field by field (whatever they hold, as a hostile
 * writer would), Nx's layout (`terminalOutput`, `code`), valid artifacts of an exact size, and the
 * envelope the fs store keeps in front of every payload (see src/envelope.rs).
 */

const crypto = require('node:crypto');
const zlib = require('node:zlib');

const BLOCK = 512;
/** The envelope's length: magic, version, digest algorithm, header length, payload length, SHA-256. */
const ENVELOPE_LEN = 48;

/**
 * @typedef {{
 *   name: string | Buffer, type?: string | number, mode?: number, size?: number,
 *   link?: string | Buffer, magic?: 'gnu' | 'ustar' | 'v7', prefix?: string,
 *   devmajor?: number, devminor?: number,
 * }} HeaderSpec
 */

/**
 * @param {Buffer} b
 * @param {number} at
 * @param {number} width field width; the number is written as width-1 octal digits and a NUL
 * @param {number} value
 */
function octal(b, at, width, value) {
  b.write(`${value.toString(8).padStart(width - 1, '0')}\0`, at, 'latin1');
}

/**
 * One 512-byte header block, fields written byte for byte, then its checksum.
 * @param {HeaderSpec} h
 * @returns {Buffer}
 */
function header(h) {
  const b = Buffer.alloc(BLOCK);
  Buffer.from(h.name).copy(b, 0, 0, 100);
  const magic = h.magic || 'gnu';
  if (magic !== 'v7' || h.mode !== undefined) octal(b, 100, 8, h.mode ?? 0o644);
  if (magic !== 'v7') {
    octal(b, 108, 8, 0);
    octal(b, 116, 8, 0);
    octal(b, 136, 12, 0);
  }
  octal(b, 124, 12, h.size || 0);
  const type = h.type ?? '0';
  b[156] = typeof type === 'number' ? type : type.charCodeAt(0);
  if (h.link) Buffer.from(h.link).copy(b, 157, 0, 100);
  if (magic === 'gnu') b.write('ustar  \0', 257, 'latin1');
  if (magic === 'ustar') b.write('ustar\x0000', 257, 'latin1');
  if (h.devmajor !== undefined) octal(b, 329, 8, h.devmajor);
  if (h.devminor !== undefined) octal(b, 337, 8, h.devminor);
  if (h.prefix) b.write(h.prefix, 345, 'latin1');
  return checksum(b);
}

/**
 * Writes the header checksum (the byte sum with the checksum field read as spaces).
 * @param {Buffer} b
 * @returns {Buffer}
 */
function checksum(b) {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

/** @param {number} n @returns {Buffer} zeros up to the next block boundary */
function padding(n) {
  return Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK);
}

/**
 * A header and its data (padded to the block size).
 * @param {HeaderSpec} h
 * @param {Buffer | string} [data]
 * @returns {Buffer}
 */
function entry(h, data = Buffer.alloc(0)) {
  const d = Buffer.from(data);
  return Buffer.concat([header({ ...h, size: h.size ?? d.length }), d, padding(d.length)]);
}

/** @param {string} name @param {Buffer | string} data */
const file = (name, data, mode = 0o644) => entry({ name, mode }, data);
/** @param {string} name */
const dir = (name, mode = 0o755) => entry({ name, type: '5', mode });
/** @param {string} name @param {string} target */
const symlink = (name, target) => entry({ name, type: '2', mode: 0o777, link: target });

/**
 * A GNU long-name (`L`) header carrying `name`, then the entry itself (its name field cut).
 * @param {string} name
 * @param {HeaderSpec} h
 * @param {Buffer | string} [data]
 */
function longName(name, h, data) {
  const n = Buffer.concat([Buffer.from(name), Buffer.from([0])]);
  return Buffer.concat([
    entry({ name: '././@LongLink', type: 'L', mode: 0o644 }, n),
    entry({ ...h, name: Buffer.from(name).subarray(0, 100) }, data),
  ]);
}

/**
 * A PAX extended header (`x`) with these records, to put right before an entry.
 * @param {Record<string, string>} records
 */
function pax(records) {
  const body = Object.entries(records).map(([k, v]) => {
    const rest = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(rest) + 1;
    while (String(len).length + Buffer.byteLength(rest) !== len) len += 1;
    return `${len}${rest}`;
  }).join('');
  return entry({ name: 'PaxHeaders/0', type: 'x', magic: 'ustar' }, body);
}

/**
 * `terminalOutput` and `code` as Nx's client writes them: old-style headers with only the name,
 * size and checksum set.
 * @param {string} [text]
 * @param {number} [code]
 */
function nxLayout(text = 'done\n', code = 0) {
  const c = Buffer.alloc(4);
  c.writeUInt32BE(code);
  return Buffer.concat([
    entry({ name: 'terminalOutput', magic: 'v7' }, text),
    entry({ name: 'code', magic: 'v7' }, c),
  ]);
}

/**
 * A tar stream: the entries, then the two end-of-archive blocks.
 * @param {Buffer[]} entries
 */
function tarOf(entries) {
  return Buffer.concat([...entries, Buffer.alloc(2 * BLOCK)]);
}

/**
 * @param {Buffer} data
 * @param {number} [level] gzip level (Nx's client uses 6; 0 stores, fast for large noise)
 */
function gzip(data, level = 6) {
  return zlib.gzipSync(data, { level });
}

/**
 * A valid Nx artifact: these files (path -> content, directories implied) plus Nx's layout.
 * @param {Record<string, Buffer | string>} files
 * @param {{ terminalOutput?: string, code?: number, level?: number }} [opts]
 */
function nxArtifact(files, opts = {}) {
  const entries = Object.entries(files).map(([p, data]) => file(p, data));
  return gzip(tarOf([...entries, nxLayout(opts.terminalOutput, opts.code)]), opts.level);
}

/**
 * A valid Nx artifact of exactly `size` bytes (at least 100): Nx's layout alone (no outputs), its
 * gzip header carrying an extra field of the missing length.
 * @param {number} size
 * @param {number} [seed] varies the content (it is the exit code)
 */
function sizedArtifact(size, seed = 0) {
  const core = zlib.gzipSync(tarOf([nxLayout('', seed >>> 0)]), { level: 9 });
  const extra = size - core.length - 2;
  if (extra < 0 || extra > 0xffff) throw new Error(`cannot make an artifact of exactly ${size} bytes`);
  const head = Buffer.from(core.subarray(0, 10));
  head[3] |= 0x04; // FEXTRA
  const xlen = Buffer.alloc(2);
  xlen.writeUInt16LE(extra);
  return Buffer.concat([head, xlen, Buffer.alloc(extra, 0x58), core.subarray(10)]);
}

/**
 * A stored object: the 48-byte envelope (magic NXOC, version 1, SHA-256, header length, payload
 * length, digest) and the payload.
 * @param {Buffer} payload
 */
function envelope(payload) {
  const h = Buffer.alloc(ENVELOPE_LEN);
  h.write('NXOC', 0, 'latin1');
  h[4] = 1;
  h[5] = 1;
  h.writeUInt16BE(ENVELOPE_LEN, 6);
  h.writeBigUInt64BE(BigInt(payload.length), 8);
  crypto.createHash('sha256').update(payload).digest().copy(h, 16);
  return Buffer.concat([h, payload]);
}

module.exports = {
  BLOCK,
  ENVELOPE_LEN,
  header,
  checksum,
  entry,
  file,
  dir,
  symlink,
  longName,
  pax,
  nxLayout,
  tarOf,
  gzip,
  nxArtifact,
  sizedArtifact,
  envelope,
};
