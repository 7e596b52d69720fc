// Adapter for bench/dsn_server.py: dsn-sync protocol v1 (PROTOCOL.md) over node:http with a
// keep-alive Agent, for the shared load harness (../shared/bench, adapters/ref_http.mjs is
// its model). Not Node's fetch: undici costs about 0.8 ms of CPU per request here, which
// would measure the load generator instead of the server.
//
// The envelope and frames come from this repository's dsn_client.js (_internals), so what
// runs here is the browser client's own crypto. DSN_BENCH_CRYPTO=native swaps in node:crypto
// (SHAKE256 and HMAC in C) to show how much of a result is the client's JS crypto; the
// dsnsync_native peer in bench/peers.json sets it through adapters/dsnsync_native.mjs.
//
// The harness URL is the bench server's origin (http://127.0.0.1:PORT): GET /_bench/token
// there gives the sync URL and a token per client; the frames then go to /sync/<instance>.
//
// Streamed pulls (README "Streamed pulls") are on by default here, as there is no proxy
// between the generator and the server to hold chunks back; DSN_STREAM=0 turns them off
// (plain long polls, one request per change). A long poll asks with stream: true; an
// answer of Content-Type application/x-dsn-stream is read as it arrives ('data' events),
// its u32be-length-prefixed messages reassembled across chunk boundaries, each opened
// with its index and its changes handed to onChange at once; when the stream ends (its
// wait ran out) the subscriber pulls again from its cursor.
// DSN_BENCH_HTTP=raw (the dsnsync_lean peer) sends the calls that are not streamed pulls
// (hello, writes, plain pulls) over a minimal HTTP/1.1 keep-alive client on node:net: one
// request line and three headers written with the body in one write, the answer read by its
// Content-Length (or chunked). node:http spends about 45 us of CPU per request more on this
// machine (measured against a trivial uvicorn app: 69 against 26 us), which in W2, where the
// generator shares two cores with the server, is CPU the server lacks. Streamed pulls are read
// by the same client, chunk by chunk (RawConn).
import http from 'node:http';
import net from 'node:net';
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { _internals } from '../../dsn_client.js';

const { sealSync, openSync, open: openAsync, parseToken, deriveTrafficKeys, utf8, concatBytes, randomBytes } = _internals;

export const name = 'dsnsync';
// maxFreeSockets: Infinity, or with 1,000 long-polls the pool closes sockets past its default
// 256 free ones and reconnects them moments later (connect/close churn in the generator).
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: Infinity });
const REQ_LABEL = utf8('dsn-sync/v1 req\n');
const RES_LABEL = utf8('dsn-sync/v1 res\n');
const STREAM_LABEL = utf8('dsn-sync/v1 stream');
const RETRY = new Set(['clock', 'replay']);
const STREAM_TYPE = 'application/x-dsn-stream';
const STREAMED = Symbol('streamed');  // what call() answers once a streamed pull has ended
// Above this many bytes a response's tag is checked through crypto.subtle (what the
// browser client does for every frame); below it the synchronous JS HMAC is cheaper
// than subtle's promise round trip.
const SUBTLE_ABOVE = 4096;
const TRACE = !!process.env.DSN_BENCH_TRACE;  // per-call timings to stderr
const nowMs = () => performance.timeOrigin + performance.now();  // the harness's clock (lib/common.mjs)

// W1's last-value latency per subscriber, to give its p99 (the harness reports p50 and max):
// each client notes when it got its highest `i` of table w1; when the harness closes the
// last client, the spread against the producer's t_last goes to stderr (run.py keeps it).
const w1 = { produced: null, tLast: null, open: 0, clients: [] };
function reportW1() {
  if (w1.produced === null) return;
  const last = w1.produced - 1;
  const lat = w1.clients.filter((c) => c.maxI === last).map((c) => c.maxAt - w1.tLast * 1000).sort((a, b) => a - b);
  const pct = (p) => (lat.length ? +lat[Math.min(lat.length - 1, Math.ceil((p / 100) * lat.length) - 1)].toFixed(2) : null);
  console.error(`dsn_w1_last_value ${JSON.stringify({ p50: pct(50), p90: pct(90), p99: pct(99), max: pct(100), converged: lat.length, subs: w1.clients.length })}`);
}

// Nonces from a pool filled by the CSPRNG 64 KiB at a time: one getRandomValues call per
// 4,096 requests instead of one per request (measured: ~2.5 % of the generator's CPU in W2).
let pool = new Uint8Array(0), poolAt = 0;
function nonce16() {
  if (poolAt + 16 > pool.length) { pool = randomBytes(65536); poolAt = 0; }
  poolAt += 16;
  return pool.subarray(poolAt - 16, poolAt);
}

function u32(n) { return Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255); }

// Reassembles u32be(len) || frame messages from a body read in pieces. The common case, a
// 'data' chunk that holds whole messages, is split without a copy (subarrays of the chunk,
// which Node does not reuse); only a message cut across chunks is gathered in a buffer.
class Splitter {
  constructor() { this.held = null; }
  push(chunk) {
    let bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length);
    if (this.held) { bytes = concatBytes(this.held, bytes); this.held = null; }
    const frames = [];
    let at = 0;
    while (bytes.length - at >= 4) {
      const n = ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
      if (bytes.length - at - 4 < n) break;
      frames.push(bytes.subarray(at + 4, at + 4 + n));
      at += 4 + n;
    }
    if (at < bytes.length) this.held = bytes.slice(at);
    return frames;
  }
  get pending() { return this.held ? this.held.length : 0; }
}

// One keep-alive HTTP/1.1 connection that carries one request at a time (RawPool hands them
// out). An answer is read by its Content-Length or its chunked coding, incrementally; with
// `onFrame` and Content-Type application/x-dsn-stream (a streamed pull), each chunk's bytes go
// through a Splitter and every whole message to onFrame as it arrives, in order (a promise it
// returns is awaited before the next), and the call resolves {status, streamed: n} at the
// last chunk. Anything else, or a socket error, fails the call and drops the connection.
class RawConn {
  constructor(host, port, pool) {
    this.pool = pool;
    this.sock = net.connect(port, host);
    this.sock.setNoDelay(true);
    this.buf = null;
    this.call = null;  // the request in flight: {resolve, reject, onFrame, ...parser state}
    this.dead = false;
    this.sock.on('data', (c) => {
      try { this.onData(c); } catch (e) { this.fail(e); }
    });
    const fail = (e) => this.fail(e || new Error('connection closed'));
    this.sock.on('error', fail);
    this.sock.on('close', () => fail(null));
  }
  fail(error) {
    if (this.dead) return;
    this.dead = true;
    this.pool.drop(this);
    this.sock.destroy();
    const c = this.call;
    this.call = null;
    if (c && !c.settled) { c.settled = true; c.reject(error || new Error('connection closed')); }
  }
  request(head, body, onFrame) {
    return new Promise((resolve, reject) => {
      this.call = { resolve, reject, onFrame, status: 0, length: -1, chunked: false, parts: null, splitter: null,
                    index: 0, chain: null, close: false, settled: false };
      this.sock.write(body ? Buffer.concat([head, body]) : head);
    });
  }
  onData(chunk) {
    const c = this.call;
    if (!c) throw new Error('raw HTTP: bytes with no request in flight');
    let buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    let at = 0;
    if (!c.status) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) { this.buf = buf; return; }
      const head = buf.latin1Slice(0, end).toLowerCase();
      c.status = +head.slice(9, 12);
      c.close = head.includes('\r\nconnection: close');
      const cl = head.indexOf('\r\ncontent-length:');
      if (cl >= 0) c.length = parseInt(head.slice(cl + 17), 10);
      else if (head.includes('\r\ntransfer-encoding: chunked')) c.chunked = true;
      else throw new Error('raw HTTP: an answer without Content-Length or chunked coding');
      if (c.onFrame && c.status === 200 && c.chunked && head.includes('\r\ncontent-type: ' + STREAM_TYPE)) c.splitter = new Splitter();
      else if (c.chunked) c.parts = [];
      at = end + 4;
    }
    if (!c.chunked) {
      if (buf.length - at < c.length) { this.buf = buf.subarray(at); return; }
      if (buf.length - at > c.length) throw new Error('raw HTTP: bytes after the answer');
      this.buf = null;
      this.finish(c, { status: c.status, body: buf.subarray(at) });
      return;
    }
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol < 0) break;
      const size = parseInt(buf.latin1Slice(at, eol), 16);
      if (!(size >= 0)) throw new Error('raw HTTP: a bad chunk size');
      if (buf.length < eol + 2 + size + 2) break;
      at = eol + 2 + size + 2;
      if (size === 0) {
        if (at !== buf.length) throw new Error('raw HTTP: bytes after the answer');
        this.buf = null;
        if (!c.splitter) { this.finish(c, { status: c.status, body: Buffer.concat(c.parts) }); return; }
        const done = () => {
          if (c.settled) return;
          if (c.splitter.pending) this.fail(new Error('pull: the stream ended inside a message'));
          else this.finish(c, { status: 200, streamed: c.index });
        };
        if (c.chain) c.chain.then(done); else done();
        return;
      }
      const payload = buf.subarray(eol + 2, eol + 2 + size);
      if (c.splitter) this.frames(c, payload); else c.parts.push(payload);
    }
    this.buf = at < buf.length ? buf.subarray(at) : null;
  }
  // A streamed pull's messages, handled in order: synchronously while nothing is pending.
  frames(c, payload) {
    for (const frame of c.splitter.push(payload)) {
      const index = c.index++;
      const take = () => (c.settled ? null : c.onFrame(frame, index));
      if (c.chain) { c.chain = c.chain.then(take).catch((e) => this.fail(e)); continue; }
      const out = take();
      if (out && typeof out.then === 'function') c.chain = out.catch((e) => this.fail(e));
    }
  }
  finish(c, result) {
    this.call = null;
    c.settled = true;
    if (c.close) this.fail(null); else this.pool.release(this);
    c.resolve(result);
  }
}

class RawPool {
  constructor(host, port) { this.host = host; this.port = port; this.free = []; this.all = new Set(); }
  call(method, path, body, contentType, onFrame = null) {
    const conn = this.free.pop() || this.open();
    const head = Buffer.from(`${method} ${path} HTTP/1.1\r\nhost: ${this.host}:${this.port}\r\ncontent-type: ${contentType}\r\n`
                             + `content-length: ${body ? body.length : 0}\r\n\r\n`, 'latin1');
    return conn.request(head, body, onFrame);
  }
  open() { const c = new RawConn(this.host, this.port, this); this.all.add(c); return c; }
  release(conn) { if (!conn.dead) this.free.push(conn); }
  drop(conn) { this.all.delete(conn); const i = this.free.indexOf(conn); if (i >= 0) this.free.splice(i, 1); }
  close() { for (const c of [...this.all]) c.fail(new Error('closed')); }
}

// The same envelope (PROTOCOL.md section 1) with node:crypto's C SHAKE256 and HMAC. Per key,
// the sponge that has absorbed label || enc and the HMAC's inner and outer pad states are
// kept and copied per frame (Hash.copy), as dsn_sync.py's SealKey does.
const HASH_BLOCK = 64;
const keyStates = new WeakMap();
function keyState(key) {
  let st = keyStates.get(key);
  if (!st) {
    const pad = (byte) => { const k = new Uint8Array(HASH_BLOCK); k.set(key.subarray(32)); return k.map((b) => b ^ byte); };
    st = { sponge: createHash('shake256').update(STREAM_LABEL).update(key.subarray(0, 32)),
           inner: createHash('sha256').update(pad(0x36)), outer: createHash('sha256').update(pad(0x5c)) };
    keyStates.set(key, st);
  }
  return st;
}
const native = {
  xorStream(key, nonce, data) {
    const stream = keyState(key).sponge.copy({ outputLength: data.length }).update(nonce).digest();
    for (let i = 0; i < data.length; i++) stream[i] ^= data[i];
    return stream;
  },
  tag(key, aad, nonce, ct) {
    const st = keyState(key);
    const inner = st.inner.copy().update(u32(aad.length)).update(aad).update(nonce).update(ct).digest();
    return st.outer.copy().update(inner).digest();
  },
  seal(key, aad, plain, nonce) {
    const ct = native.xorStream(key, nonce, plain);
    return concatBytes(nonce, ct, native.tag(key, aad, nonce, ct));
  },
  open(key, aad, blob) {
    if (blob.length < 48) return null;
    const nonce = blob.subarray(0, 16), ct = blob.subarray(16, blob.length - 32);
    if (!timingSafeEqual(blob.subarray(blob.length - 32), native.tag(key, aad, nonce, ct))) return null;
    return native.xorStream(key, nonce, ct);
  },
};

export function makeAdapter({ crypto = process.env.DSN_BENCH_CRYPTO || 'js', stream = process.env.DSN_STREAM !== '0',
                               transport = process.env.DSN_BENCH_HTTP || 'node' } = {}) {
  const seal = crypto === 'native' ? native.seal : sealSync;
  // Synchronous where the open is (a value), a promise where it is not (crypto.subtle).
  const open = crypto === 'native' ? (k, a, b) => native.open(k, a, b)
    : (k, a, b) => (b.length > SUBTLE_ABOVE ? openAsync(k, a, b) : openSync(k, a, b));

  // /_bench/ calls go on a connection of their own (agent: false): the server answers them
  // with Connection: close, and the keep-alive pool stays for protocol traffic.
  // `onFrame(frame, index)`: a streamed pull; an answer of STREAM_TYPE is then split into
  // its messages as it arrives, each handed (in order, awaited) to onFrame, and the call
  // resolves {status, streamed: n} at the stream's end. A message onFrame refuses ends the
  // call with that error and drops the connection.
  function httpCall(host, port, method, path, body, inflight, contentType = 'text/plain', onFrame = null) {
    return new Promise((resolve, reject) => {
      const headers = body ? { 'content-type': contentType, 'content-length': body.length } : {};
      const req = http.request({ host, port, path, method, agent: path.startsWith('/_bench/') ? false : agent, headers }, (res) => {
        if (onFrame && res.statusCode === 200 && res.headers['content-type'] === STREAM_TYPE) {
          const splitter = new Splitter();
          let index = 0, chain = null, failed = null, settled = false;
          const settle = (error) => {
            if (settled) return;
            settled = true;
            inflight?.delete(req);
            if (error) reject(error); else resolve({ status: 200, streamed: index });
          };
          const fail = (error) => { if (!failed) { failed = error; req.destroy(); settle(error); } };
          const take = (frame) => {
            const out = onFrame(frame, index++);
            if (out && typeof out.then === 'function') return out;
            return null;
          };
          res.on('data', (c) => {
            if (failed) return;
            for (const frame of splitter.push(c)) {
              // Messages are handled in order: synchronously while nothing is pending.
              if (chain) chain = chain.then(() => (failed ? null : take(frame))).catch(fail);
              else {
                try {
                  const out = take(frame);
                  if (out) chain = out.catch(fail);
                } catch (e) { fail(e); return; }
              }
            }
          });
          res.on('end', () => {
            const done = () => {
              if (failed) return;
              if (splitter.pending) fail(new Error('pull: the stream ended inside a message'));
              else settle(null);
            };
            if (chain) chain.then(done); else done();
          });
          res.on('error', (e) => fail(e));
          res.on('close', () => { if (!res.complete) fail(new Error('pull: the stream was cut')); });
          return;
        }
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          inflight?.delete(req);
          resolve({ status: res.statusCode, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks) });
        });
        res.on('error', (e) => { inflight?.delete(req); reject(e); });
      });
      inflight?.add(req);
      req.on('error', (e) => { inflight?.delete(req); reject(e); });
      req.end(body);
    });
  }

  async function connect(url, { since = null } = {}) {
    const u = new URL(url);
    const host = u.hostname, port = Number(u.port);
    const grant = await httpCall(host, port, 'GET', '/_bench/token', null, null);
    if (grant.status !== 200) throw new Error(`/_bench/token: HTTP ${grant.status}`);
    const { url: syncUrl, token } = JSON.parse(grant.body.toString('utf8'));
    // PROTOCOL.md section 2: the sealed path starts at /sync/; a mount's prefix (e.g. /dsn
    // under an ASGI app) goes in front of it on the wire only.
    const full = new URL(syncUrl).pathname;
    const at = full.indexOf('/sync/');
    const prefix = at > 0 ? full.slice(0, at) : '';
    const base = at > 0 ? full.slice(at) : full;
    const { kid, tokenSecret } = parseToken(token);
    const { c2s, s2c } = deriveTrafficKeys(tokenSecret);
    const kidBytes = utf8(kid);
    const head = concatBytes(Uint8Array.of(1, kidBytes.length >> 8, kidBytes.length & 255), kidBytes);
    const state = { closed: false, errors: 0, disconnects: 0 };
    const inflight = new Set();
    const raw = transport === 'raw' ? new RawPool(host, port) : null;
    let ep = null, offset = 0, aadPath = null, aad = null;

    // One protocol call: frame, POST, open, JSON. A 404 (rotated or unknown path) says
    // hello again at the base path and retries; clock/replay answers are retried too.
    async function call(op, fields = {}, onMessage = null) {
      for (let attempt = 0; attempt < 4; attempt++) {
        if (op !== 'hello' && ep === null) await call('hello');
        const path = op === 'hello' ? base : ep;
        if (path !== aadPath) { aadPath = path; aad = concatBytes(REQ_LABEL, utf8(path)); }
        const nonce = nonce16();
        fields.op = op;
        fields.t = Date.now() + offset;
        const frame = concatBytes(head, seal(c2s, aad, utf8(JSON.stringify(fields)), nonce));
        const t0 = TRACE ? performance.now() : 0;
        let onFrame = null;
        if (onMessage) {
          // Message i of a streamed pull: 0x01 || seal(s2c, res label || nonce || u32(i), json).
          const resAad = concatBytes(RES_LABEL, nonce);
          onFrame = (bytes, index) => {
            if (bytes[0] !== 1) throw new Error(`pull: stream message ${index} is not a v1 frame`);
            const opened = open(s2c, concatBytes(resAad, u32(index)), bytes.subarray(1));
            const use = (text) => {
              if (text === null) throw new Error(`pull: stream message ${index} does not open with its index`);
              const answer = JSON.parse(Buffer.from(text.buffer, text.byteOffset, text.length).toString('utf8'));
              if (index === 0) ep = answer.ep ?? ep;
              if (typeof answer.now === 'number') offset = answer.now - Date.now();
              return onMessage(answer);
            };
            return opened && typeof opened.then === 'function' ? opened.then(use) : use(opened);
          };
        }
        const res = raw ? await raw.call('POST', prefix + path, frame, 'text/plain', onFrame)
          : await httpCall(host, port, 'POST', prefix + path, frame, inflight, 'text/plain', onFrame);
        const t1 = TRACE ? performance.now() : 0;
        if (res.streamed !== undefined) {
          if (!res.streamed) throw new Error('pull: a stream without a message');
          return STREAMED;
        }
        if (res.status === 404 && op !== 'hello') { ep = null; continue; }
        if (res.status !== 200) throw new Error(`${op}: HTTP ${res.status}`);
        const body = new Uint8Array(res.body.buffer, res.body.byteOffset, res.body.length);
        if (body[0] !== 1) throw new Error(`${op}: not a v1 frame`);
        const text = await open(s2c, concatBytes(RES_LABEL, nonce), body.subarray(1));
        if (text === null) throw new Error(`${op}: response does not authenticate`);
        const t2 = TRACE ? performance.now() : 0;
        const answer = JSON.parse(Buffer.from(text.buffer, text.byteOffset, text.length).toString('utf8'));
        if (TRACE) console.error(`trace ${op} ${res.body.length} B: http ${(t1 - t0).toFixed(2)} ms, open ${(t2 - t1).toFixed(2)} ms, parse ${(performance.now() - t2).toFixed(2)} ms`);
        ep = answer.ep ?? ep;
        if (typeof answer.now === 'number') offset = answer.now - Date.now();
        if (!answer.ok && RETRY.has(answer.error?.code)) continue;
        return answer;
      }
      throw new Error(`${op}: no answer after 4 attempts`);
    }

    const hello = await call('hello');
    if (!hello.ok) throw new Error(`hello: ${hello.error?.code}`);
    const known = new Set();  // keys this client created or saw, so write() picks create or update
    const mark = { maxI: -1, maxAt: 0 };
    const midPrefix = Buffer.from(randomBytes(9)).toString('base64url') + '-';
    let mids = 0;
    w1.open++;

    return {
      state,
      // Resolves once subscribed; cb({table, key, data, seq}) per changed record (data null = deleted).
      // since=null: changes after now (the cursor of hello); since=0: everything (a reset, paged).
      async onChange(cb) {
        w1.clients.push(mark);
        let cursor = since === null ? { epoch: hello.epoch, seq: hello.seq, sv: hello.sv } : null;
        (async () => {
          let failures = 0;
          const deliver = (answer) => {
            for (const [table, key, data] of answer.changes) {
              known.add(`${table}\0${key}`);
              if (table === 'w1' && data && data.i > mark.maxI) { mark.maxI = data.i; mark.maxAt = nowMs(); }
              cb({ table, key, data, seq: answer.seq });
            }
            cursor = { epoch: answer.epoch, seq: answer.seq, sv: answer.sv ?? cursor?.sv };
          };
          // One message of a streamed pull: an ordinary changes answer, delivered as it arrives.
          const onMessage = (answer) => {
            if (!answer.ok || !Array.isArray(answer.changes)) throw new Error(`pull: stream message ${answer.error?.code ?? 'without changes'}`);
            deliver(answer);
          };
          while (!state.closed) {
            try {
              const streamed = stream && cursor !== null;
              let answer = await call('pull', streamed ? { since: cursor, wait: 25, stream: true } : { since: cursor, wait: cursor ? 25 : 0 },
                                      streamed ? onMessage : null);
              if (answer === STREAMED) { failures = 0; continue; }
              if (!answer.ok) throw new Error(`pull: ${answer.error?.code}`);
              if (answer.reset) {
                // Applied only when the last page is in, as the client's mirror does.
                const pages = [answer];
                while (answer.more) {
                  answer = await call('pull', { since: null, next: answer.next, wait: 0 });
                  if (!answer.ok || !answer.reset) throw new Error('pull: reset page refused');
                  if (answer.seq !== pages[0].seq) pages.length = 0;  // the server began a fresh reset
                  pages.push(answer);
                }
                for (const page of pages) {
                  for (const [table, rows] of Object.entries(page.records)) {
                    for (const key in rows) { known.add(`${table}\0${key}`); cb({ table, key, data: rows[key], seq: page.seq }); }
                  }
                }
                cursor = { epoch: answer.epoch, seq: answer.seq, sv: answer.sv ?? cursor?.sv };
              } else {
                deliver(answer);
              }
              failures = 0;
            } catch (e) {
              if (state.closed) return;
              state.errors++;
              console.error('dsnsync pull:', e.message);
              if (++failures >= 10) return;  // bounded: a broken server ends the loop
              await new Promise((r) => setTimeout(r, 100 * failures));
            }
          }
        })();
      },
      // Resolves with the server's ack {ok, seq, record}; create for a key not seen yet, update after.
      async write(table, key, data) {
        const id = `${table}\0${key}`;
        let op = known.has(id) ? 'update' : 'create';
        for (let attempt = 0; attempt < 3; attempt++) {
          const mid = `${midPrefix}${++mids}`;  // unique per token, as the protocol asks
          const answer = await call(op, { table, key, data, mid });
          if (answer.ok) { known.add(id); return answer; }
          const code = answer.error?.code;
          if (code === 'exists') op = 'update';
          else if (code === 'not_found') op = 'create';
          else throw new Error(`${op} ${table}/${key}: ${code}: ${answer.error?.message}`);
        }
        throw new Error(`${op} ${table}/${key}: exists/not_found loop`);
      },
      close() {
        if (state.closed) return;
        state.closed = true;
        for (const r of inflight) r.destroy();
        raw?.close();
        if (--w1.open === 0) reportW1();
      },
    };
  }

  // W1's producer call, on the server's control endpoint; its sync() timings go to stderr,
  // which run.py keeps in the result line (stderr_tail).
  async function produce(url, body) {
    const u = new URL(url);
    const res = await httpCall(u.hostname, Number(u.port), 'POST', '/_bench/produce', Buffer.from(JSON.stringify(body)),
                               null, 'application/json');
    if (res.status !== 200) throw new Error(`/_bench/produce: HTTP ${res.status}`);
    const out = JSON.parse(res.body.toString('utf8'));
    w1.produced = out.produced;
    w1.tLast = out.t_last;
    console.error(`dsn_produce ${JSON.stringify({ sync_ms: out.sync_ms, late: out.late, produced: out.produced })}`);
    return out;
  }

  return { connect, produce };
}

export const { connect, produce } = makeAdapter();
