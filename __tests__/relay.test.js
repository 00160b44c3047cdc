'use strict';
/**
 * The shaped-network relay of the cloud benchmark (benches/relay.js): bytes pass intact both ways, a
 * request/response never takes less than the RTT, a transfer is never faster than the cap, half-close
 * and a refused upstream are passed on, a slow reader pauses the other side (bounded queue), and every
 * socket is closed at the end. Timing is only ever asserted as a lower bound (what the relay
 * guarantees), never as an upper one.
 *
 * Run: node --test --test-concurrency=1 __tests__/relay.test.js
 */

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const { performance } = require('node:perf_hooks');
const { describe, test } = require('node:test');

const { startRelay, parseRate, PROFILES } = require('../benches/relay.js');

const MIB = 1024 * 1024;

/**
 * A TCP server on 127.0.0.1 running `onSocket` for each connection; closed (with its sockets) by close().
 * @param {(s: net.Socket) => void} onSocket
 * @returns {Promise<{ port: number, close: () => Promise<void> }>}
 */
function startServer(onSocket) {
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    onSocket(s);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: /** @type {net.AddressInfo} */ (server.address()).port,
        close: () =>
          new Promise((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done(undefined));
          }),
      });
    });
  });
}

/** Echoes every byte; ends its side when the client ends its. */
function startEcho() {
  return startServer((s) => {
    s.pipe(s);
  });
}

/** @param {number} port @returns {Promise<net.Socket>} */
function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Everything the socket sends until it ends.
 * @param {net.Socket} s
 * @returns {Promise<Buffer>}
 */
function readAll(s) {
  return new Promise((resolve, reject) => {
    /** @type {Buffer[]} */ const chunks = [];
    s.on('data', (/** @type {Buffer} */ c) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

/**
 * Reads exactly `n` bytes (the first `n` the socket delivers after the call).
 * @param {net.Socket} s
 * @param {number} n
 * @returns {Promise<Buffer>}
 */
function readN(s, n) {
  return new Promise((resolve, reject) => {
    /** @type {Buffer[]} */ const chunks = [];
    let got = 0;
    const onData = (/** @type {Buffer} */ c) => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        s.off('data', onData);
        s.off('error', reject);
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

/** @param {Buffer} b */
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * Runs `body` with a relay to `upstreamPort`, then checks that every connection it carried closed.
 * @param {number} upstreamPort
 * @param {Omit<import('../benches/relay.js').RelayOptions, 'upstream'>} shape
 * @param {(relay: import('../benches/relay.js').Relay) => Promise<void>} body
 */
async function withRelay(upstreamPort, shape, body) {
  const relay = await startRelay({ upstream: { host: '127.0.0.1', port: upstreamPort }, ...shape });
  try {
    await body(relay);
    await relay.whenIdle();
    assert.equal(relay.stats().open, 0, 'every connection through the relay is closed');
  } finally {
    await relay.close();
  }
}

describe('relay', () => {
  test('8 MiB of random bytes pass intact both ways, and the half-close ends the echo', async () => {
    const echo = await startEcho();
    try {
      await withRelay(echo.port, PROFILES['5ms'], async (relay) => {
        const payload = crypto.randomBytes(8 * MIB);
        const s = await connect(relay.port);
        const back = readAll(s);
        s.end(payload);
        const got = await back;
        assert.equal(got.length, payload.length);
        assert.equal(sha(got), sha(payload));
        assert.equal(relay.stats().bytesUp, payload.length);
        assert.equal(relay.stats().bytesDown, payload.length);
        s.destroy();
      });
    } finally {
      await echo.close();
    }
  });

  test('a request/response takes at least the RTT; the first one also pays the handshake', async () => {
    const echo = await startEcho();
    const rttMs = 20;
    try {
      await withRelay(echo.port, { rttMs, rate: 100e6 }, async (relay) => {
        const t0 = performance.now();
        const s = await connect(relay.port);
        const first = readN(s, 1);
        s.write('a');
        await first;
        const firstMs = performance.now() - t0;
        // Connect (one RTT) and the exchange (one RTT).
        assert.ok(firstMs >= 2 * rttMs, `first exchange took ${firstMs.toFixed(2)} ms, at least ${2 * rttMs} expected`);
        for (let i = 0; i < 5; i++) {
          const t = performance.now();
          const one = readN(s, 1);
          s.write('b');
          assert.equal((await one).toString(), 'b');
          const ms = performance.now() - t;
          assert.ok(ms >= rttMs, `exchange ${i} took ${ms.toFixed(2)} ms, at least the RTT (${rttMs} ms) expected`);
        }
        s.end();
        await new Promise((resolve) => s.on('close', resolve).resume());
      });
    } finally {
      await echo.close();
    }
  });

  test('a transfer is never faster than the cap, in either direction', async () => {
    const rate = 20e6;
    const bytes = 4 * MIB;
    /** @type {number} */
    let upstreamDoneAt = 0;
    // Upstream: "d" sends `bytes` and ends; anything else counts what the client sends until its end.
    const server = await startServer((s) => {
      s.once('data', (first) => {
        if (first[0] === 0x64) {
          s.end(Buffer.alloc(bytes, 1));
          return;
        }
        let got = first.length;
        s.on('data', (c) => {
          got += c.length;
        });
        s.on('end', () => {
          upstreamDoneAt = performance.now();
          s.end(String(got));
        });
      });
    });
    try {
      await withRelay(server.port, { rttMs: 0, rate }, async (relay) => {
        const t0 = performance.now();
        const down = await connect(relay.port);
        const body = readAll(down);
        down.end('d');
        assert.equal((await body).length, bytes);
        const downMs = performance.now() - t0;
        const floor = (bytes / rate) * 1000;
        assert.ok(downMs >= floor, `${bytes} bytes down in ${downMs.toFixed(1)} ms, at least ${floor.toFixed(1)} ms expected`);

        const t1 = performance.now();
        const up = await connect(relay.port);
        const answer = readAll(up);
        up.end(Buffer.alloc(bytes, 2));
        assert.equal((await answer).toString(), String(bytes));
        const upMs = upstreamDoneAt - t1;
        assert.ok(upMs >= floor, `${bytes} bytes up in ${upMs.toFixed(1)} ms, at least ${floor.toFixed(1)} ms expected`);
      });
    } finally {
      await server.close();
    }
  });

  test('half-close: the client ends its side and still gets the answer the upstream sends after it', async () => {
    /** @type {string[]} */
    const seen = [];
    const server = await startServer((s) => {
      let got = '';
      s.on('data', (c) => {
        got += c;
      });
      s.on('end', () => {
        seen.push(`upstream got ${got} then end`);
        s.end(`bye ${got}`);
      });
    });
    try {
      await withRelay(server.port, PROFILES['5ms'], async (relay) => {
        const s = await connect(relay.port);
        const reply = readAll(s);
        s.end('hello');
        assert.equal((await reply).toString(), 'bye hello');
        assert.ok(seen.includes('upstream got hello then end'));
      });
    } finally {
      await server.close();
    }
  });

  test('a refused upstream resets the client; nothing stays open', async () => {
    // A port that was free a moment ago: nothing listens there.
    const gone = await startServer(() => undefined);
    const port = gone.port;
    await gone.close();
    await withRelay(port, PROFILES['5ms'], async (relay) => {
      const s = await connect(relay.port);
      const outcome = new Promise((resolve) => {
        s.on('error', (e) => resolve(/** @type {NodeJS.ErrnoException} */ (e).code));
        s.on('close', () => resolve('closed'));
        s.resume();
      });
      s.write('anyone there?');
      assert.ok(['ECONNRESET', 'closed', 'EPIPE'].includes(String(await outcome)));
      assert.equal(relay.stats().refused, 1);
    });
  });

  test('a reader that does not read pauses the other side: the queue stays bounded', async () => {
    const bytes = 16 * MIB;
    const queueCap = 256 * 1024;
    const server = await startServer((s) => {
      s.end(crypto.randomBytes(bytes));
    });
    try {
      await withRelay(server.port, { rttMs: 0, rate: 0, queueCap }, async (relay) => {
        const s = await connect(relay.port);
        s.pause();
        // Wait (bounded in count) until the relay has paused the upstream at least once.
        for (let i = 0; i < 500 && relay.stats().pauses === 0; i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(relay.stats().pauses >= 1, 'the relay paused the upstream while the client did not read');
        const body = readAll(s);
        s.resume();
        assert.equal((await body).length, bytes);
        // One read (at most 64 KiB in Node) may land after the cap was crossed.
        assert.ok(relay.stats().maxQueued <= queueCap + 64 * 1024, `queue reached ${relay.stats().maxQueued} bytes`);
        s.destroy();
      });
    } finally {
      await server.close();
    }
  });

  test('rates parse in decimal and binary units, and a bad one is named', () => {
    assert.equal(parseRate('100MB/s'), 100e6);
    assert.equal(parseRate('1 MiB/s'), 1024 * 1024);
    assert.equal(parseRate('none'), 0);
    assert.throws(() => parseRate('fast'), /rate "fast" is not of the form/);
  });
});
