#!/usr/bin/env node
'use strict';
/**
 * A shaped-network TCP relay (test infrastructure for the cloud benchmark, issue 14): listens on
 * 127.0.0.1 and forwards each accepted connection to one upstream (an emulator), modelling a link with
 * a round-trip time and a per-connection throughput cap. This machine's kernel has no netem, so the
 * link lives here, in user space.
 *
 * What it guarantees, per connection and per direction (a "lane"):
 * - delay: every chunk is forwarded no earlier than its arrival + RTT/2 (also a 1-byte message), in
 *   order. Node's timers count whole ms, so a timer only brings the lane within 1 ms of the due time
 *   and the rest is waited out with setImmediate: the delay is a lower bound, late by the event
 *   loop's (and the scheduler's) latency, never early;
 * - pacing: a token bucket per lane, starting empty, filled at the rate cap, at most `burstMs` worth of
 *   tokens (default 10 ms: 1 MB at 100 MB/s, so that a
 *   process descheduled for a few ms on a loaded machine catches up instead of losing the rate), spent in slices of at most QUANTUM bytes, so a lane never
 *   carries more than rate x elapsed bytes since the connection was accepted, plus one burst after idle;
 * - the TCP handshake: the client's connect completes at once on loopback, where a real one costs one
 *   RTT, so the client-to-upstream lane delivers nothing before accept + 1.5 RTT, when the first bytes
 *   of a real connection arrive (off with `handshake: false`);
 * - half-close: a FIN travels as a marker in its lane and ends the other side once due; an error (reset)
 *   on one socket travels the same way and resets the other side once due (data queued before it is
 *   delivered first, as a network would); a refused upstream resets the client after RTT/2;
 * - bounded buffers: a lane that holds more than `queueCap` bytes pauses its reading side and resumes
 *   it at half; the socket it writes to is waited on ('drain') before more is written.
 * Not modelled: loss, reordering, slow start, TLS, a shared bottleneck (each connection has its own cap).
 *
 * Module:
 *   const { startRelay, PROFILES } = require('./benches/relay.js');
 *   const relay = await startRelay({ upstream: { host: '127.0.0.1', port }, ...PROFILES['20ms'] });
 *   relay.url; relay.stats(); await relay.close();
 *
 * CLI:
 *   node benches/relay.js --upstream 127.0.0.1:9000 [--listen 127.0.0.1:0]
 *        (--profile 20ms|5ms|passthrough | --rtt-ms 20 --rate 100MB/s) [--burst-ms 4] [--no-handshake]
 *     prints one JSON line ({ url, port, pid, profile }) once listening; runs until SIGINT/SIGTERM.
 *   node benches/relay.js --check [--profile 20ms|5ms|all] [--out file.md]
 *     calibration: measured RTT and per-connection rate through the relay vs the profile (within 10%),
 *     and the passthrough relay's overhead vs a direct connection.
 */

const net = require('node:net');
const { performance } = require('node:perf_hooks');

/** MB = 10^6 bytes. */
const MB = 1e6;
const MIB = 1024 * 1024;
/** Largest slice written at once by a paced lane (a write of more would be a burst). */
const QUANTUM = 64 * 1024;

/**
 * The link profiles of issue 14: a cloud region's RTT and a per-connection cap of about 100 MB/s.
 * @type {Record<string, { rttMs: number, rate: number }>}
 */
const PROFILES = {
  '20ms': { rttMs: 20, rate: 100 * MB },
  '5ms': { rttMs: 5, rate: 100 * MB },
  passthrough: { rttMs: 0, rate: 0 },
};

/**
 * "100MB/s", "100 MiB/s", "800KB/s", "1GB/s", "none" / "0" (no cap) -> bytes per second.
 * @param {string} s
 * @returns {number}
 */
function parseRate(s) {
  const text = String(s).trim();
  if (text === 'none' || text === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)\/s$/.exec(text);
  if (!m) throw new Error(`relay: rate ${JSON.stringify(s)} is not of the form <number><B|KB|MB|GB|KiB|MiB|GiB>/s (or none)`);
  /** @type {Record<string, number>} */
  const unit = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 1024, MiB: MIB, GiB: 1024 * MIB };
  const rate = Number(m[1]) * unit[m[2]];
  if (!(rate > 0)) throw new Error(`relay: rate ${JSON.stringify(s)} must be above 0 (or none)`);
  return rate;
}

/**
 * @typedef {object} RelayOptions
 * @property {{ host: string, port: number }} upstream
 * @property {number} [rttMs]      round-trip time added (each direction RTT/2); 0 = none
 * @property {number} [rate]       bytes/s per connection and direction; 0 = no cap
 * @property {number} [burstMs]    token bucket depth, in ms of the rate (default 4)
 * @property {number} [queueCap]   bytes a lane holds before it pauses its reader (default: 1 MiB + 2 x rate x RTT/2, 8 MiB uncapped with a delay)
 * @property {boolean} [handshake] hold the client's first bytes until accept + RTT (default true when rttMs > 0)
 * @property {string} [host]       listen address (default 127.0.0.1)
 * @property {number} [port]       listen port (default 0: a free one)
 */

/**
 * @typedef {object} RelayStats
 * @property {number} accepted     connections accepted
 * @property {number} open         connections with a socket still open
 * @property {number} refused      upstream connects that failed
 * @property {number} bytesUp      client -> upstream bytes forwarded
 * @property {number} bytesDown    upstream -> client bytes forwarded
 * @property {number} pauses       times a lane paused its reader (queue over the cap)
 * @property {number} maxQueued    most bytes one lane held at once
 */

/**
 * @typedef {{ kind: 'data', buf: Buffer, due: number } | { kind: 'end', due: number } | { kind: 'reset', due: number }} Item
 */

/**
 * The setTimeout delay that wakes before `waitMs` from now, within 1 ms of it; 0 when no timer can.
 * libuv counts whole ms and starts a timer's wait at the actual time of its poll, so a timer of
 * floor(wait) ms wakes at or before the due time (earlier if its loop clock was stale, which the
 * caller re-checks when it fires); the rest is spun.
 * @param {number} waitMs
 */
function timerMs(waitMs) {
  return Math.floor(waitMs);
}

/** One direction of one connection: reads `src`, writes `dst`, delayed and paced. */
class Lane {
  /**
   * @param {net.Socket} src
   * @param {net.Socket} dst
   * @param {{ delayMs: number, rate: number, burst: number, queueCap: number, holdUntil: number, count: (n: number) => void, onPause: () => void, onQueued: (n: number) => void }} o
   */
  constructor(src, dst, o) {
    this.src = src;
    this.dst = dst;
    this.o = o;
    /** @type {Item[]} */
    this.queue = [];
    this.head = 0;
    this.queued = 0;
    this.paused = false;
    this.tokens = 0;
    this.refilledAt = performance.now();
    /** @type {NodeJS.Timeout | NodeJS.Immediate | undefined} */
    this.timer = undefined;
    this.timerIsImmediate = false;
    this.waitingDrain = false;
    /** No more items: ended, reset or abandoned. */
    this.done = false;
  }

  /** @param {Buffer} buf */
  push(buf) {
    if (this.done) return;
    this.queue.push({ kind: 'data', buf, due: this.dueAt() });
    this.queued += buf.length;
    this.o.onQueued(this.queued);
    if (this.queued > this.o.queueCap && !this.paused) {
      this.paused = true;
      this.src.pause();
      this.o.onPause();
    }
    this.pump();
  }

  /** @param {'end' | 'reset'} kind */
  mark(kind) {
    if (this.done) return;
    this.queue.push({ kind, due: this.dueAt() });
    this.pump();
  }

  /** Its destination is gone: drop what is queued, stop. */
  abandon() {
    this.done = true;
    this.queue = [];
    this.head = 0;
    this.queued = 0;
    this.clearTimer();
  }

  dueAt() {
    return Math.max(performance.now() + this.o.delayMs, this.o.holdUntil);
  }

  clearTimer() {
    if (this.timer === undefined) return;
    if (this.timerIsImmediate) clearImmediate(/** @type {NodeJS.Immediate} */ (this.timer));
    else clearTimeout(/** @type {NodeJS.Timeout} */ (this.timer));
    this.timer = undefined;
  }

  /**
   * @param {number} waitMs
   * @param {boolean} precise  spin the last stretch (delays); token waits are rounded up instead
   */
  wake(waitMs, precise) {
    const fire = () => {
      this.timer = undefined;
      this.pump();
    };
    const t = precise ? timerMs(waitMs) : Math.max(1, Math.ceil(waitMs));
    this.timerIsImmediate = t < 1;
    this.timer = t < 1 ? setImmediate(fire) : setTimeout(fire, t);
  }

  /** @param {number} now */
  refill(now) {
    const { rate, burst } = this.o;
    this.tokens = Math.min(burst, this.tokens + ((now - this.refilledAt) * rate) / 1000);
    this.refilledAt = now;
  }

  /** Forwards every item that is due and paid for; arms one timer for the next. */
  pump() {
    if (this.timer !== undefined || this.waitingDrain) return;
    while (!this.done && this.head < this.queue.length) {
      const item = this.queue[this.head];
      const now = performance.now();
      if (item.due > now) {
        this.wake(item.due - now, true);
        return;
      }
      if (item.kind !== 'data') {
        this.done = true;
        if (item.kind === 'end') this.dst.end();
        else if (this.dst.connecting) this.dst.destroy();
        else this.dst.resetAndDestroy();
        return;
      }
      let n = item.buf.length;
      if (this.o.rate > 0) {
        this.refill(now);
        const want = Math.min(n, QUANTUM);
        if (this.tokens < want) {
          this.wake(((want - this.tokens) * 1000) / this.o.rate, false);
          return;
        }
        n = Math.min(n, Math.floor(this.tokens), QUANTUM);
        this.tokens -= n;
      }
      const slice = n === item.buf.length ? item.buf : item.buf.subarray(0, n);
      if (n === item.buf.length) this.shift();
      else item.buf = item.buf.subarray(n);
      this.queued -= n;
      this.o.count(n);
      if (this.paused && this.queued <= this.o.queueCap / 2) {
        this.paused = false;
        this.src.resume();
      }
      if (!this.dst.write(slice)) {
        this.waitingDrain = true;
        this.dst.once('drain', () => {
          this.waitingDrain = false;
          this.pump();
        });
        return;
      }
    }
  }

  shift() {
    this.head += 1;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * @typedef {object} Relay
 * @property {string} url        http://127.0.0.1:<port>
 * @property {string} host
 * @property {number} port
 * @property {() => RelayStats} stats
 * @property {() => Promise<void>} whenIdle  resolves once no connection has a socket open
 * @property {() => Promise<void>} close  stops listening and destroys every open connection
 */

/**
 * Starts a relay on `host:port` (default 127.0.0.1, a free port) to `upstream`.
 * @param {RelayOptions} opts
 * @returns {Promise<Relay>}
 */
function startRelay(opts) {
  const rttMs = opts.rttMs || 0;
  const rate = opts.rate || 0;
  if (!(rttMs >= 0) || !Number.isFinite(rttMs)) throw new Error(`relay: rttMs ${opts.rttMs} must be a finite number >= 0`);
  if (!(rate >= 0) || !Number.isFinite(rate)) throw new Error(`relay: rate ${opts.rate} must be a finite number of bytes/s >= 0`);
  const up = opts.upstream;
  if (!up || !up.host || !(up.port > 0 && up.port < 65536)) throw new Error(`relay: upstream ${JSON.stringify(up)} must be { host, port }`);
  const delayMs = rttMs / 2;
  const burstMs = opts.burstMs ?? 10;
  if (!(burstMs > 0)) throw new Error(`relay: burstMs ${opts.burstMs} must be above 0`);
  const burst = rate > 0 ? Math.max(QUANTUM, (rate * burstMs) / 1000) : 0;
  const queueCap =
    opts.queueCap ?? (rate > 0 ? MIB + Math.ceil((2 * rate * delayMs) / 1000) : delayMs > 0 ? 8 * MIB : MIB);
  const handshake = opts.handshake ?? rttMs > 0;
  /** @type {RelayStats} */
  const st = { accepted: 0, open: 0, refused: 0, bytesUp: 0, bytesDown: 0, pauses: 0, maxQueued: 0 };
  /** @type {(() => void)[]} */
  let idleWaiters = [];
  /** @type {Set<net.Socket>} */
  const sockets = new Set();

  /** @param {net.Socket} s */
  const track = (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };

  /** @param {net.Socket} client */
  const onConnection = (client) => {
    st.accepted += 1;
    st.open += 1;
    const acceptedAt = performance.now();
    const upstream = net.connect({ host: up.host, port: up.port, allowHalfOpen: true, noDelay: true });
    track(client);
    track(upstream);
    client.setNoDelay(true);
    const onPause = () => {
      st.pauses += 1;
    };
    const onQueued = (/** @type {number} */ n) => {
      if (n > st.maxQueued) st.maxQueued = n;
    };
    const lane = { delayMs, rate, burst, queueCap, onPause, onQueued };
    const toUp = new Lane(client, upstream, {
      ...lane,
      // Real: SYN out, SYN-ACK back (one RTT), then the first bytes travel RTT/2.
      holdUntil: handshake ? acceptedAt + rttMs + delayMs : 0,
      count: (n) => {
        st.bytesUp += n;
      },
    });
    const toClient = new Lane(upstream, client, {
      ...lane,
      holdUntil: 0,
      count: (n) => {
        st.bytesDown += n;
      },
    });
    let closed = 0;
    const onClose = () => {
      closed += 1;
      if (closed !== 2) return;
      st.open -= 1;
      if (st.open === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const w of waiters) w();
      }
    };
    let connected = false;
    upstream.on('connect', () => {
      connected = true;
    });
    client.on('data', (/** @type {Buffer} */ b) => toUp.push(b));
    upstream.on('data', (/** @type {Buffer} */ b) => toClient.push(b));
    client.on('end', () => toUp.mark('end'));
    upstream.on('end', () => toClient.mark('end'));
    // A socket's error: its peer is reset once the error is due (what it sent before arrives
    // first); what was queued toward the failed socket is dropped.
    client.on('error', () => {
      toClient.abandon();
      toUp.mark('reset');
    });
    upstream.on('error', () => {
      if (!connected) st.refused += 1;
      toUp.abandon();
      toClient.mark('reset');
    });
    // A closed socket takes nothing more: the lane writing to it stops (after a normal close it has
    // already delivered its 'end'); the lane reading from it still delivers what it holds.
    client.on('close', () => {
      toClient.abandon();
      onClose();
    });
    upstream.on('close', () => {
      toUp.abandon();
      onClose();
    });
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port || 0, opts.host || '127.0.0.1', () => {
      server.off('error', reject);
      const addr = /** @type {net.AddressInfo} */ (server.address());
      resolve({
        host: addr.address,
        port: addr.port,
        url: `http://${addr.address}:${addr.port}`,
        stats: () => ({ ...st }),
        whenIdle: () => (st.open === 0 ? Promise.resolve() : new Promise((done) => idleWaiters.push(done))),
        close: () =>
          new Promise((done) => {
            server.close(() => done(undefined));
            for (const s of sockets) s.destroy();
          }),
      });
    });
  });
}

/* ------------------------------------------------------------------------------------------------ */
/* calibration (--check)                                                                             */
/* ------------------------------------------------------------------------------------------------ */

/**
 * A TCP server for the calibration: 'e' echoes each byte back; 's<n>' sends n bytes; 'r<n>' reads n
 * bytes then answers one byte. Commands are one line.
 * @returns {Promise<{ port: number, close: () => Promise<void> }>}
 */
function startCalibrationServer() {
  /** @type {Set<net.Socket>} */
  const sockets = new Set();
  const chunk = Buffer.alloc(QUANTUM, 0x61);
  const server = net.createServer({ noDelay: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let line = '';
    /** @param {Buffer} b */
    const onLine = (b) => {
      line += b.toString('latin1');
      const nl = line.indexOf('\n');
      if (nl < 0) return;
      const cmd = line.slice(0, nl);
      const rest = Buffer.from(line.slice(nl + 1), 'latin1');
      line = '';
      s.off('data', onLine);
      if (cmd === 'e') {
        s.on('data', (d) => s.write(d));
        if (rest.length) s.write(rest);
      } else if (cmd[0] === 's') {
        let left = Number(cmd.slice(1));
        const more = () => {
          while (left > 0) {
            const n = Math.min(left, chunk.length);
            left -= n;
            if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', more);
          }
          s.end();
        };
        more();
      } else if (cmd[0] === 'r') {
        let left = Number(cmd.slice(1)) - rest.length;
        const check = () => {
          if (left <= 0) s.end('k');
        };
        s.on('data', (d) => {
          left -= d.length;
          check();
        });
        check();
      } else s.destroy();
    };
    s.on('data', onLine);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      resolve({
        port,
        close: () =>
          new Promise((done) => {
            server.close(() => done(undefined));
            for (const s of sockets) s.destroy();
          }),
      });
    });
  });
}

/** @param {number} port @returns {Promise<net.Socket>} */
function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Median round trip of a 1-byte ping-pong over one connection (after `warm` unmeasured ones).
 * @param {number} port
 * @param {number} count
 */
async function pingPong(port, count, warm = 3) {
  const s = await connect(port);
  /** @type {((e?: Error) => void) | undefined} */
  let waiter;
  s.on('data', () => waiter && waiter());
  s.on('error', (e) => waiter && waiter(e));
  s.on('close', () => waiter && waiter(new Error('relay check: the echo connection closed')));
  s.write('e\n');
  /** @type {number[]} */
  const times = [];
  try {
    for (let i = 0; i < count + warm; i++) {
      const t0 = performance.now();
      await new Promise((resolve, reject) => {
        waiter = (e) => {
          waiter = undefined;
          if (e) reject(e);
          else resolve(undefined);
        };
        s.write('x');
      });
      if (i >= warm) times.push(performance.now() - t0);
    }
  } finally {
    s.destroy();
  }
  return median(times);
}

/**
 * Bytes/s of a server-to-client transfer of `bytes` over a fresh connection, timed at the client from
 * the first byte to the last (the first slice, which may ride a full token bucket, left out).
 * @param {number} port
 * @param {number} bytes
 */
async function download(port, bytes) {
  const s = await connect(port);
  try {
    s.write(`s${bytes}\n`);
    let got = 0;
    let first = 0;
    await new Promise((resolve, reject) => {
      s.on('data', (d) => {
        if (got === 0) first = performance.now();
        got += d.length;
      });
      s.on('end', resolve);
      s.on('error', reject);
    });
    if (got !== bytes) throw new Error(`relay check: received ${got} bytes, expected ${bytes}`);
    return ((got - QUANTUM) * 1000) / (performance.now() - first);
  } finally {
    s.destroy();
  }
}

/**
 * Milliseconds from the first byte of a client-to-server transfer of `bytes` (fresh connection) to
 * the server's one-byte answer after the last.
 * @param {number} port
 * @param {number} bytes
 */
async function upload(port, bytes) {
  const s = await connect(port);
  try {
    s.write(`r${bytes}\n`);
    const chunk = Buffer.alloc(QUANTUM, 0x62);
    const t0 = performance.now();
    const answered = new Promise((resolve, reject) => {
      s.on('data', resolve);
      s.on('error', reject);
    });
    let left = bytes;
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await new Promise((r) => s.once('drain', r));
    }
    await answered;
    return performance.now() - t0;
  } finally {
    s.destroy();
  }
}

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere.
 * @param {number} pid
 */
function cpuSeconds(pid) {
  try {
    const stat = require('node:fs').readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at field 3; utime, stime are 14, 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * @typedef {object} RelayProcess
 * @property {string} url
 * @property {number} port
 * @property {number} pid
 * @property {() => number} cpuSeconds  CPU seconds the relay process has used so far
 * @property {() => Promise<RelayStats | undefined>} stop  the relay's last counters (a relay; not the calibration server)
 */

/**
 * Runs a relay (or, with `args` ['--calibration-server'], the calibration server) in a child process
 * of its own, so that its CPU can be read and it does not share an event loop with the bench.
 * @param {string[]} args  CLI arguments of this script
 * @returns {Promise<RelayProcess>}
 */
function spawnRelay(args) {
  const { spawn } = require('node:child_process');
  // stdin is a pipe from this process: when it ends (this process is gone), the child stops too.
  const child = spawn(process.execPath, [__filename, ...args, '--exit-with-stdin'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (b) => {
    err = (err + b).slice(-4000);
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  /** @type {RelayStats | undefined} */
  let last;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    const lines = out.split('\n').filter(Boolean);
    if (lines.length > 1) last = JSON.parse(lines[lines.length - 1]);
    return last;
  };
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      stop();
      reject(new Error(`relay: the child ${args.join(' ')} printed no address within 10 s: ${err}`));
    }, 10_000);
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`relay: the child ${args.join(' ')} exited (${code}) before it listened: ${err}`));
    });
    let listening = false;
    child.stdout.on('data', (b) => {
      out += b;
      const nl = out.indexOf('\n');
      if (nl < 0 || listening) return;
      listening = true;
      clearTimeout(t);
      const info = JSON.parse(out.slice(0, nl));
      const pid = /** @type {number} */ (child.pid);
      resolve({ url: info.url, port: info.port, pid, cpuSeconds: () => cpuSeconds(pid), stop });
    });
  });
}

/**
 * Calibration of one profile: RTT (1-byte ping-pong) and per-connection rate each way, through a
 * relay process.
 * @param {string} name
 * @param {number} upstreamPort
 * @param {number} bytes
 */
async function checkProfile(name, upstreamPort, bytes) {
  const p = PROFILES[name];
  const relay = await spawnRelay(['--upstream', `127.0.0.1:${upstreamPort}`, '--profile', name]);
  try {
    const directRtt = await pingPong(upstreamPort, 30);
    const rtt = await pingPong(relay.port, 30);
    /** @type {number[]} */ const down = [];
    /** @type {number[]} */ const upRates = [];
    for (let i = 0; i < 3; i++) {
      down.push(await download(relay.port, bytes));
      // The upload's time includes the handshake hold (one RTT), the way there and the answer's way
      // back (one RTT together): two RTTs off.
      upRates.push((bytes * 1000) / ((await upload(relay.port, bytes)) - 2 * rtt));
    }
    return { rttMs: p.rttMs, rate: p.rate, measuredRtt: rtt, directRtt, down: median(down), up: median(upRates) };
  } finally {
    await relay.stop();
  }
}

/**
 * @param {string[]} names
 * @returns {Promise<{ lines: string[], ok: boolean }>}
 */
async function check(names) {
  const srv = await spawnRelay(['--calibration-server']);
  const lines = [];
  let ok = true;
  const within = (/** @type {number} */ got, /** @type {number} */ want) => Math.abs(got - want) <= 0.1 * want;
  try {
    lines.push(
      '| profile | RTT target ms | RTT through the relay ms (median of 30) | RTT direct ms (same endpoints) | ' +
        'rate target MB/s | down MB/s (64 MiB, median of 3) | up MB/s | within 10% |',
    );
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const name of names) {
      const r = await checkProfile(name, srv.port, 64 * MIB);
      const good = within(r.measuredRtt, r.rttMs) && within(r.down, r.rate) && within(r.up, r.rate);
      ok = ok && good;
      lines.push(
        `| ${name} | ${r.rttMs} | ${r.measuredRtt.toFixed(2)} | ${r.directRtt.toFixed(2)} | ${(r.rate / MB).toFixed(0)} | ${(r.down / MB).toFixed(1)} | ` +
          `${(r.up / MB).toFixed(1)} | ${good ? 'yes' : 'NO'} |`,
      );
    }
    // Passthrough (no delay, no cap) vs direct: what the relay itself costs, and its CPU per GB.
    const pass = await spawnRelay(['--upstream', `127.0.0.1:${srv.port}`, '--profile', 'passthrough']);
    try {
      const bytes = 256 * MIB;
      /** @type {Record<string, { rtt: number, rate: number, cpu: number }>} */
      const r = {};
      for (const [label, port] of /** @type {[string, number][]} */ ([['direct', srv.port], ['relay', pass.port]])) {
        const cpu0 = pass.cpuSeconds();
        const rtt = await pingPong(port, 200);
        /** @type {number[]} */ const xs = [];
        for (let i = 0; i < 3; i++) xs.push(await download(port, bytes));
        r[label] = { rtt, rate: median(xs), cpu: pass.cpuSeconds() - cpu0 };
      }
      lines.push('');
      lines.push('| path | 1-byte RTT ms (median of 200) | one connection MB/s (256 MiB, median of 3) | relay CPU s per GB |');
      lines.push('| --- | --- | --- | --- |');
      lines.push(`| direct | ${r.direct.rtt.toFixed(3)} | ${(r.direct.rate / MB).toFixed(0)} | |`);
      lines.push(
        `| relay, passthrough profile | ${r.relay.rtt.toFixed(3)} | ${(r.relay.rate / MB).toFixed(0)} | ` +
          `${(r.relay.cpu / ((3 * bytes) / 1e9)).toFixed(2)} |`,
      );
    } finally {
      await pass.stop();
    }
  } finally {
    await srv.stop();
  }
  return { lines, ok };
}

/* ------------------------------------------------------------------------------------------------ */
/* CLI                                                                                               */
/* ------------------------------------------------------------------------------------------------ */

/** @param {string} s @returns {{ host: string, port: number }} */
function parseHostPort(s) {
  const m = /^([^:]+):(\d+)$/.exec(String(s));
  if (!m || Number(m[2]) > 65535) throw new Error(`relay: ${JSON.stringify(s)} is not host:port`);
  return { host: m[1], port: Number(m[2]) };
}

async function main() {
  const args = process.argv.slice(2);
  /** @type {RelayOptions & { check?: boolean, calibrationServer?: boolean, profile?: string, listen?: { host: string, port: number } }} */
  const o = /** @type {any} */ ({});
  const value = (/** @type {number} */ i) => {
    if (i >= args.length) throw new Error(`relay: ${args[i - 1]} needs a value`);
    return args[i];
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--check') o.check = true;
    else if (a === '--calibration-server') o.calibrationServer = true;
    else if (a === '--exit-with-stdin') {
      process.stdin.on('end', () => process.exit(0));
      process.stdin.on('error', () => process.exit(0));
      process.stdin.resume();
    }
    else if (a === '--upstream') o.upstream = parseHostPort(value(++i));
    else if (a === '--listen') o.listen = parseHostPort(value(++i));
    else if (a === '--profile') o.profile = value(++i);
    else if (a === '--rtt-ms') o.rttMs = Number(value(++i));
    else if (a === '--rate') o.rate = parseRate(value(++i));
    else if (a === '--burst-ms') o.burstMs = Number(value(++i));
    else if (a === '--no-handshake') o.handshake = false;
    else throw new Error(`relay: unknown argument ${a}`);
  }
  if (o.profile && o.profile !== 'all' && !PROFILES[o.profile]) {
    throw new Error(`relay: unknown profile ${JSON.stringify(o.profile)}; expected one of ${Object.keys(PROFILES).join(', ')}`);
  }
  if (o.check) {
    const names = !o.profile || o.profile === 'all' ? ['20ms', '5ms'] : [o.profile];
    const { lines, ok } = await check(names);
    console.log(lines.join('\n'));
    if (!ok) {
      console.error('relay check: a profile is off by more than 10%');
      process.exitCode = 1;
    }
    return;
  }
  if (o.calibrationServer) {
    const srv = await startCalibrationServer();
    console.log(JSON.stringify({ url: `tcp://127.0.0.1:${srv.port}`, port: srv.port, pid: process.pid }));
    const stopServer = () => {
      srv.close().then(() => process.exit(0));
    };
    process.on('SIGINT', stopServer);
    process.on('SIGTERM', stopServer);
    return;
  }
  if (!o.upstream) throw new Error('relay: --upstream host:port is required (or --check)');
  const shape = o.profile ? PROFILES[o.profile] : { rttMs: o.rttMs ?? 0, rate: o.rate ?? 0 };
  const relay = await startRelay({
    upstream: o.upstream,
    ...shape,
    burstMs: o.burstMs,
    handshake: o.handshake,
    host: o.listen ? o.listen.host : '127.0.0.1',
    port: o.listen ? o.listen.port : 0,
  });
  console.log(JSON.stringify({ url: relay.url, port: relay.port, pid: process.pid, rttMs: shape.rttMs, rate: shape.rate }));
  // The counters go out as a last line, so that a parent can check the traffic went through.
  const stop = () => {
    const stats = relay.stats();
    relay.close().then(() => {
      process.stdout.write(`${JSON.stringify(stats)}\n`, () => process.exit(0));
    });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(1);
  });
}

module.exports = { startRelay, spawnRelay, check, cpuSeconds, parseRate, PROFILES, MB };
