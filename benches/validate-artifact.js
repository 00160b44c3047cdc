'use strict';
/**
 * Valid Nx artifacts of an exact size for the HTTP benchmarks: the proxy and `nx-open-cache serve`
 * only serve (and serve only stores) structurally valid Nx artifacts, so benchmark bodies are
 * tar.gz files like Nx's, made of incompressible noise so that their bytes cost what random bodies
 * of the same size cost.
 *
 * - Up to 64 KiB: Nx's layout alone (a few dozen compressed bytes) with a gzip extra field of noise
 *   filling the size.
 * - Larger: one file of noise inside a gzip member of stored (uncompressed) deflate blocks, the
 *   extra field absorbing the last bytes; made chunk by chunk, never whole in memory.
 */
const crypto = require('node:crypto');
const zlib = require('node:zlib');

const BLOCK = 512;
/** Largest stored deflate block. */
const STORED = 65535;
/** gzip header with FEXTRA (10) and its length field (2), then the trailer (8). */
const GZIP_FIXED = 10 + 2 + 8;

/**
 * A tar header (GNU magic), fields written byte for byte, then its checksum.
 * @param {string} name
 * @param {number} size
 * @param {boolean} [old] Nx's old-style header for `terminalOutput` and `code` (name, size only)
 */
function tarHeader(name, size, old = false) {
  const b = Buffer.alloc(BLOCK);
  b.write(name, 0, 'latin1');
  if (!old) {
    b.write('0000644\0', 100, 'latin1');
    b[156] = 0x30;
    b.write('ustar  \0', 257, 'latin1');
  }
  b.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

/** `terminalOutput`, `code` (0) and the end-of-archive blocks: the tar stream's tail. */
function tarTail() {
  const pad = (/** @type {Buffer} */ d) => Buffer.concat([d, Buffer.alloc((BLOCK - (d.length % BLOCK)) % BLOCK)]);
  const out = Buffer.from('bench\n');
  return Buffer.concat([
    tarHeader('terminalOutput', out.length, true), pad(out),
    tarHeader('code', 4, true), pad(Buffer.alloc(4)),
    Buffer.alloc(2 * BLOCK),
  ]);
}

/**
 * A gzip header whose extra field holds `extra` bytes of noise.
 * @param {number} extra
 */
function gzipHead(extra) {
  const h = Buffer.from([0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 0xff, extra & 0xff, extra >> 8]);
  return Buffer.concat([h, crypto.randomBytes(extra)]);
}

/** @param {number} crc @param {number} length */
function gzipTrailer(crc, length) {
  const t = Buffer.alloc(8);
  t.writeUInt32LE(crc >>> 0, 0);
  t.writeUInt32LE(length % 2 ** 32, 4);
  return t;
}

/**
 * A valid artifact of exactly `size` bytes, whole in memory (`size` from about 100 bytes).
 * @param {number} size
 * @returns {Buffer}
 */
function exactArtifact(size) {
  const chunks = [];
  for (const c of artifactChunks(size)) chunks.push(c);
  return Buffer.concat(chunks);
}

/**
 * The bytes of a valid artifact of exactly `size` bytes, in pieces of at most about 1 MiB.
 * @param {number} size
 * @returns {Generator<Buffer>}
 */
function* artifactChunks(size) {
  const tail = tarTail();
  const small = zlib.deflateRawSync(tail, { level: 9 });
  const smallExtra = size - GZIP_FIXED - small.length;
  if (smallExtra >= 0 && smallExtra <= 0xffff) {
    yield gzipHead(smallExtra);
    yield small;
    yield gzipTrailer(zlib.crc32(tail), tail.length);
    return;
  }
  // One file of `data` bytes (a multiple of the block size) in stored deflate blocks: one for its
  // header, full ones for the data (the last one partial), one for the tail; 5 bytes each.
  const bytes = (/** @type {number} */ d) => BLOCK + d + tail.length + 5 * (2 + Math.ceil(d / STORED));
  let data = Math.max(0, Math.floor((size - GZIP_FIXED - bytes(0) - 2 * STORED) / BLOCK) * BLOCK);
  let extra = size - GZIP_FIXED - bytes(data);
  while (extra > 0xffff) {
    data += BLOCK;
    extra = size - GZIP_FIXED - bytes(data);
  }
  if (extra < 0) throw new Error(`cannot make a valid artifact of exactly ${size} bytes`);
  yield gzipHead(extra);
  const total = BLOCK + data + tail.length;
  let crc = 0;
  let written = 0;
  /** Stored blocks of `piece` (the last one final when the stream ends with it). @param {Buffer} piece */
  const storedBlocks = (piece) => {
    const out = [];
    for (let at = 0; at < piece.length; at += STORED) {
      const part = piece.subarray(at, at + STORED);
      written += part.length;
      const h = Buffer.alloc(5);
      h[0] = written === total ? 1 : 0;
      h.writeUInt16LE(part.length, 1);
      h.writeUInt16LE(~part.length & 0xffff, 3);
      out.push(h, part);
    }
    crc = zlib.crc32(piece, crc);
    return Buffer.concat(out);
  };
  yield storedBlocks(tarHeader('dist/blob.bin', data));
  const noise = crypto.randomBytes(16 * STORED);
  for (let left = data; left > 0; left -= noise.length) {
    const piece = noise.subarray(0, Math.min(left, noise.length));
    piece.writeUInt32BE(left >>> 0, 0);
    yield storedBlocks(piece);
  }
  yield storedBlocks(tail);
  yield gzipTrailer(crc, total);
}

module.exports = { exactArtifact, artifactChunks };
