// The client against a scripted stand-in server (built from the same frame functions),
// for orderings a real server produces only by chance: an ack overtaking an older pull,
// a pull overtaking an ack, answers that do not open, 5xx, a forgotten reset page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { connectDSN } from '../dsn_client.js';
import { fakeServer, waitFor } from './helpers.mjs';

const FAST = { retryMin: 10, retryMax: 50, wait: 25 };
const BASE = '/sync/00112233445566ff'; // where helpers.mjs's fakeServer answers
const SCHEMA = { t: { key: 'id', fields: null } };

const hello = { instance: '00112233445566ff', epoch: 'e1', seq: 0, sv: 1, tables: SCHEMA };
const emptyReset = { reset: true, epoch: 'e1', seq: 0, sv: 1, tables: SCHEMA, records: {}, more: false, next: null };

test('an ack at seq 2 wins over a pull answered at seq 1 that arrives after it', async (t) => {
  const server = fakeServer((request) => {
    if (request.op === 'hello') return hello;
    if (request.op === 'pull' && request.since === null) return emptyReset;
    if (request.op === 'create') return { seq: 2, record: { v: 'mine' } };
    return undefined; // long polls wait for the test
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  assert.equal(await client.create('t', 'k', { v: 'mine' }), true);
  server.release({ epoch: 'e1', seq: 1, changes: [['t', 'k', { v: 'older' }], ['t', 'other', { v: 1 }]] });
  await waitFor(async () => (await client.get('t', 'other')) !== undefined, 'the pull to be applied');
  assert.deepEqual(await client.get('t', 'k'), { v: 'mine' }, 'the older state is ignored');
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  assert.deepEqual(server.requests.at(-1).since, { epoch: 'e1', seq: 1, sv: 1 });
  server.release({ epoch: 'e1', seq: 3, changes: [['t', 'k', { v: 'newer, from the backend' }]] });
  await waitFor(async () => (await client.get('t', 'k'))?.v === 'newer, from the backend', 'a later state to win');
});

test('a pull that already passed an ack\'s seq is not undone by the late ack', async (t) => {
  let ackNow;
  const ackGate = new Promise((resolve) => {
    ackNow = resolve;
  });
  const server = fakeServer(async (request) => {
    if (request.op === 'hello') return hello;
    if (request.op === 'pull' && request.since === null) return emptyReset;
    if (request.op === 'create') {
      await ackGate;
      return { seq: 2, record: { v: 'mine' } };
    }
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  const write = client.create('t', 'k', { v: 'mine' });
  server.release({ epoch: 'e1', seq: 3, changes: [['t', 'k', { v: 'changed by the backend at seq 3' }]] });
  await waitFor(() => client._cursor.seq === 3, 'the pull');
  ackNow();
  assert.equal(await write, true);
  assert.deepEqual(await client.get('t', 'k'), { v: 'changed by the backend at seq 3' });
});

test('an answer that does not open is an error (status bad_response), then retried', async (t) => {
  let garbage = 2;
  const server = fakeServer((request) => {
    if (request.op === 'hello') return garbage-- > 0 ? { raw: new Uint8Array(80) } : hello;
    if (request.op === 'pull' && request.since === null) return emptyReset;
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  t.after(() => client.close());
  await client.ready;
  assert.ok(statuses.some((s) => s.state === 'error' && s.code === 'bad_response'));
});

test('503, 500, 413 and network failures: offline with backoff, then online', async (t) => {
  const failures = [503, 500, 413, 'network'];
  const server = fakeServer((request) => {
    const failure = failures.shift();
    if (failure === 'network') throw new TypeError('fetch failed');
    if (failure) return { status: failure };
    if (request.op === 'hello') return hello;
    if (request.op === 'pull' && request.since === null) return emptyReset;
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  t.after(() => client.close());
  await client.ready;
  const codes = statuses.filter((s) => s.state === 'offline').map((s) => s.code);
  assert.deepEqual(codes, ['http_503', 'http_500', 'http_413', 'offline']);
  assert.ok(statuses.filter((s) => s.state === 'offline').every((s) => s.retryIn >= 5 && s.retryIn <= 50));
  assert.deepEqual(statuses.at(-2), { state: 'connecting', reset: { pages: 1, records: {}, done: true } });
  assert.equal(statuses.at(-1).state, 'online');
});

test('a reset whose `next` the server forgot starts over from the fresh first page', async (t) => {
  const page = (seq, records, more, next) => ({ reset: true, epoch: 'e1', seq, sv: 1, tables: SCHEMA, records, more, next });
  const server = fakeServer((request) => {
    if (request.op === 'hello') return hello;
    if (request.op !== 'pull') return undefined;
    if (request.since === null && !request.next) return page(5, { t: { a: { n: 1 } } }, true, 'p2');
    if (request.next === 'p2') return page(7, { t: { b: { n: 2 } } }, true, 'p3'); // forgot: a fresh reset at seq 7
    if (request.next === 'p3') return page(7, { t: { c: { n: 3 } } }, false, null);
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  assert.deepEqual(await client.getAll('t'), { b: { n: 2 }, c: { n: 3 } });
  assert.equal(client._cursor.seq, 7);
});

test('onSync, call by call: the first answer, a pull, an ack, a refusal, a pull that brought nothing, a reset', async (t) => {
  let refuse = false;
  const server = fakeServer((request) => {
    if (request.op === 'hello') return hello;
    if (request.op === 'pull' && request.since === null) return emptyReset;
    if (request.op === 'create') return refuse ? { ok: false, error: { code: 'rejected', message: 'no' } } : { seq: 2, record: { v: 'mine' } };
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  const events = [];
  client.onSync((progress) => events.push(progress));
  const seqs = () => events.map(({ cursor, pending }) => `${cursor ? `${cursor.epoch}/${cursor.seq}/${cursor.sv}` : null} ${pending}`);
  await client.ready;
  assert.deepEqual(seqs(), ['null 0', 'e1/0/1 0'], 'once soon, then the first answer (a reset)');
  assert.equal(events[1].cursor, client.cursor);

  await waitFor(() => server.parked.length === 1, 'the long poll');
  server.release({ epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] });
  await waitFor(() => events.length === 3, 'the pull');
  assert.equal(events[2].cursor.seq, 1);

  assert.equal(await client.create('t', 'k', { v: 'mine' }), true);
  assert.deepEqual(seqs().slice(3), ['e1/1/1 1', 'e1/1/1 0'], 'queued, then acknowledged (the ack moves no cursor)');
  refuse = true;
  await assert.rejects(client.create('t', 'k2', { v: 'no' }), (error) => error.code === 'rejected');
  assert.deepEqual(seqs().slice(5), ['e1/1/1 1', 'e1/1/1 0'], 'queued, then refused');

  // A long poll that ends with nothing new is a sync too: the mirror is current at seq 2.
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  server.release({ epoch: 'e1', seq: 2, changes: [] });
  await waitFor(() => events.length === 8, 'the empty pull');
  assert.equal(seqs()[7], 'e1/2/1 0');

  // A reset to a new epoch and schema version: one call, when the reset is applied.
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  server.release({ reset: true, epoch: 'e2', seq: 9, sv: 2, tables: { t: SCHEMA.t, u: { key: 'id', fields: ['x'] } }, records: { t: { z: { n: 26 } } }, more: false, next: null });
  await waitFor(() => events.length === 9, 'the reset');
  assert.equal(seqs()[8], 'e2/9/2 0');
  assert.deepEqual(client.schema, { t: { key: 'id', fields: null }, u: { key: 'id', fields: ['x'] } });
  assert.deepEqual(await client.getAll('t'), { z: { n: 26 } });
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(events.length, 9, 'nothing more while the long poll waits');
});

test('onStatus: a status that changes before the first call is delivered once, not twice', async (t) => {
  const server = fakeServer((request) => {
    if (request.op === 'hello') return hello;
    if (request.op === 'pull' && request.since === null) return emptyReset;
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  client._setStatus({ state: 'connecting', code: 'no_persistence', message: 'before the first call' });
  await client.ready;
  assert.deepEqual(statuses.map((s) => s.code ?? s.state), ['no_persistence', 'connecting', 'online']);
});

/** mulberry32: the same "random" piece sizes on every run, so a failure can be replayed. */
function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Writes `bytes` in pieces of 1 to `most` bytes, yielding to the event loop between them. */
async function writeInPieces(write, bytes, random, most = 7) {
  for (let at = 0; at < bytes.length;) {
    const size = 1 + Math.floor(random() * most);
    write(bytes.slice(at, at + size));
    at += size;
    await new Promise((resolve) => setTimeout(resolve, random() < 0.2 ? 1 : 0));
  }
}

const streamHello = (request) => {
  if (request.op === 'hello') return hello;
  if (request.op === 'pull' && request.since === null) return emptyReset;
  return undefined;
};

test('stream: a streamed pull written in tiny random pieces is reassembled, each message applied as it arrives', async (t) => {
  const server = fakeServer(streamHello);
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, stream: true, fetch: server.fetch });
  t.after(() => client.close());
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  const seen = [];
  client.onDataChange('t', (all) => seen.push(all.k?.n));
  const synced = [];
  client.onSync(({ cursor }) => synced.push(cursor?.seq));
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  assert.equal(server.requests.at(-1).stream, true, 'a long poll asks for a stream');
  assert.equal(server.requests.at(-1).wait, 25);

  let more;
  const gate = new Promise((resolve) => {
    more = resolve;
  });
  const random = prng(20240611);
  server.release({
    async stream({ message, write }) {
      // Messages 0..2 in pieces of 1..7 bytes (prefixes and frames split anywhere), then a
      // pause with the stream open; then 3..5 in one piece with 6's first half, then the rest.
      const first = [];
      for (let i = 0; i < 3; i++) first.push(...await message(i, { epoch: 'e1', seq: i + 1, changes: [['t', 'k', { n: i + 1 }]] }));
      await writeInPieces(write, Uint8Array.from(first), random);
      await gate;
      const rest = [];
      for (let i = 3; i < 7; i++) rest.push(...await message(i, { epoch: 'e1', seq: i + 1, changes: [['t', 'k', { n: i + 1 }], ['t', `x${i}`, { n: i }]] }));
      const cut = rest.length - 40;
      write(Uint8Array.from(rest.slice(0, cut)));
      await new Promise((resolve) => setTimeout(resolve, 5));
      await writeInPieces(write, Uint8Array.from(rest.slice(cut)), random, 3);
    },
  });
  await waitFor(() => client.cursor.seq === 3, 'the first three messages, with the stream still open');
  assert.deepEqual(seen.filter((n) => n !== undefined), [1, 2, 3], 'one onDataChange per message');
  assert.equal(server.parked.length, 0, 'no new pull while the stream is open');
  more();
  await waitFor(() => client.cursor.seq === 7, 'the rest of the stream');
  assert.deepEqual(seen.filter((n) => n !== undefined), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(Object.keys(await client.getAll('t')).sort(), ['k', 'x3', 'x4', 'x5', 'x6']);
  assert.deepEqual(synced.slice(-7), [1, 2, 3, 4, 5, 6, 7], 'onSync after every message');
  // The stream ended: the client pulls again, from where the last message left it.
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  assert.deepEqual(server.requests.at(-1).since, { epoch: 'e1', seq: 7, sv: 1 });
  assert.equal(server.requests.at(-1).stream, true);
  assert.deepEqual(statuses.filter((s) => s.state !== 'connecting' && s.state !== 'online'), [], 'no error on the way');
});

test('stream: many messages in one piece, and a plain answer to a streamed pull, both work', async (t) => {
  const server = fakeServer(streamHello);
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, stream: true, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  server.release({ epoch: 'e1', seq: 1, changes: [['t', 'plain', { n: 1 }]] }); // changes were already waiting
  await waitFor(() => client.cursor.seq === 1, 'the plain answer');
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  server.release({
    async stream({ message, write }) {
      const all = [];
      for (let i = 0; i < 50; i++) all.push(...await message(i, { epoch: 'e1', seq: i + 2, changes: [['t', `m${i}`, { n: i }]] }));
      write(Uint8Array.from(all));
    },
  });
  await waitFor(() => client.cursor.seq === 51, 'fifty messages');
  assert.equal(Object.keys(await client.getAll('t')).length, 51);
});

test('stream: a fetch without streaming bodies reads the whole stream at its end and splits it', async (t) => {
  const server = fakeServer(streamHello);
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, stream: true, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  server.release({ fallback: [1, 2, 3].map((n) => ({ epoch: 'e1', seq: n, changes: [['t', `f${n}`, { n }]] })) });
  await waitFor(() => client.cursor.seq === 3, 'the three messages');
  assert.deepEqual(await client.getAll('t'), { f1: { n: 1 }, f2: { n: 2 }, f3: { n: 3 } });
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  assert.deepEqual(server.requests.at(-1).since, { epoch: 'e1', seq: 3, sv: 1 });
});

for (const [what, script] of [
  ['a message missing (a gap: 0 then 2)', async ({ message, write }) => {
    write(await message(0, { epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] }));
    write(await message(2, { epoch: 'e1', seq: 3, changes: [['t', 'c', { n: 3 }]] }));
    await new Promise(() => {}); // and the stream stays open: the client must drop it
  }],
  ['a tampered message', async ({ message, write }) => {
    write(await message(0, { epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] }));
    const bad = await message(1, { epoch: 'e1', seq: 2, changes: [['t', 'b', { n: 2 }]] });
    bad[bad.length - 40] ^= 1;
    write(bad);
    await new Promise(() => {});
  }],
  ['two messages swapped', async ({ message, write }) => {
    write(await message(0, { epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] }));
    const second = await message(1, { epoch: 'e1', seq: 2, changes: [['t', 'b', { n: 2 }]] });
    write(await message(2, { epoch: 'e1', seq: 3, changes: [['t', 'c', { n: 3 }]] }));
    write(second);
  }],
  ['a stream cut inside a message', async ({ message, write }) => {
    write(await message(0, { epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] }));
    write((await message(1, { epoch: 'e1', seq: 2, changes: [['t', 'b', { n: 2 }]] })).slice(0, 30));
  }],
]) {
  test(`stream: ${what} is refused (bad_response); the client drops the stream and pulls again from its cursor`, async (t) => {
    let streams = 0;
    const server = fakeServer(async (request) => {
      if (request.op === 'pull' && request.stream && request.since?.seq === 0 && streams++ === 0) return { stream: script };
      if (request.op === 'pull' && request.since?.seq === 1 && request.wait === 0) {
        return { epoch: 'e1', seq: 3, changes: [['t', 'b', { n: 2 }], ['t', 'c', { n: 3 }]] };
      }
      return streamHello(request);
    });
    const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, stream: true, fetch: server.fetch });
    const statuses = [];
    client.onStatus((status) => statuses.push(status));
    t.after(() => client.close());
    await client.ready;
    await waitFor(() => client.cursor.seq === 3, 'the pull after the refused stream');
    assert.deepEqual(await client.getAll('t'), { a: { n: 1 }, b: { n: 2 }, c: { n: 3 } });
    assert.ok(statuses.some((s) => s.state === 'error' && s.code === 'bad_response'), JSON.stringify(statuses));
    const again = server.requests.filter((r) => r.op === 'pull' && r.since?.seq === 1);
    assert.equal(again[0].wait, 0, 'after the error, the pull from the cursor does not wait');
    await waitFor(() => server.parked.length === 1, 'a long poll again');
    assert.equal(statuses.at(-1).state, 'online');
  });
}

test('stream: false (the default) never asks for a stream', async (t) => {
  const server = fakeServer(streamHello);
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  server.release({ epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] });
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  assert.ok(server.requests.filter((r) => r.op === 'pull').every((r) => !('stream' in r)));
});

/** The scripted server behind a real node:http socket: each answer's body goes out as it
 * is produced, one HTTP chunk per piece (Transfer-Encoding: chunked), so the client's own
 * fetch reads a stream whose chunk boundaries cut messages anywhere. */
async function overHttp(server) {
  const listener = http.createServer(async (req, res) => {
    const parts = [];
    for await (const part of req) parts.push(part);
    const controller = new AbortController();
    res.on('close', () => controller.abort());
    try {
      const response = await server.fetch(`http://127.0.0.1${req.url}`, { body: new Uint8Array(Buffer.concat(parts)), signal: controller.signal });
      const headers = {};
      response.headers.forEach((value, name) => {
        headers[name] = value;
      });
      res.writeHead(response.status, headers);
      res.socket.setNoDelay(true);
      if (response.body) for await (const piece of response.body) res.write(piece);
      res.end();
    } catch {
      res.destroy();
    }
  });
  await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${listener.address().port}${BASE}`, close: () => listener.close() };
}

test('stream: over a real socket with the platform fetch, chunks that cut messages anywhere are reassembled', async (t) => {
  const random = prng(7);
  let streams = 0;
  const server = fakeServer((request) => {
    if (request.op === 'pull' && request.stream && streams++ === 0) {
      return {
        async stream({ message, write }) {
          for (let i = 0; i < 12; i++) {
            const bytes = await message(i, { epoch: 'e1', seq: i + 1, changes: [['t', 'k', { n: i + 1, pad: 'x'.repeat(Math.floor(random() * 300)) }]] });
            await writeInPieces(write, bytes, random, 13);
          }
        },
      };
    }
    return streamHello(request);
  });
  const remote = await overHttp(server);
  t.after(() => remote.close());
  const client = connectDSN(remote.url, server.token, { ...FAST, stream: true });
  t.after(() => client.close());
  const seen = [];
  client.onDataChange('t', (all) => {
    if (all.k) seen.push(all.k.n);
  });
  await client.ready;
  await waitFor(() => client.cursor?.seq === 12, 'twelve messages');
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  await waitFor(() => server.parked.length === 1, 'the next long poll, once the stream ended');
  assert.deepEqual(server.requests.at(-1).since, { epoch: 'e1', seq: 12, sv: 1 });
});

test('a server asking for pacing: an empty answer whose cursor moved is pulled on at once, not paced', async (t) => {
  // A changes answer may stop after max_walk log slots with nothing this token may read; its
  // cursor moved, so the client is catching up, not idle. Pacing it (30 s here) stalled it.
  const server = fakeServer((request) => {
    if (request.op === 'hello') return { ...hello, poll: 30 };
    if (request.op === 'pull' && request.since === null) return emptyReset;
    if (request.op === 'pull' && request.since.seq < 1000) return { epoch: 'e1', seq: request.since.seq + 500, changes: [] };
    if (request.op === 'pull' && request.since.seq === 1000) return { epoch: 'e1', seq: 1001, changes: [['t', 'k', { v: 1 }]] };
    if (request.op === 'pull' && request.since.seq === 1001) return { epoch: 'e1', seq: 1001, changes: [] };
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(async () => (await client.get('t', 'k'))?.v === 1, 'the change after two empty answers that moved the cursor', 5000);
  // ...while an empty answer that left the cursor where it was is still paced
  await new Promise((resolve) => setTimeout(resolve, 300));
  const at1001 = server.requests.filter((r) => r.op === 'pull' && r.since?.seq === 1001).length;
  assert.equal(at1001, 1, 'pulled again at once after an answer that did not move the cursor');
});

test('an endless body from whoever answers at the URL is cut at maxAnswer, not read into memory', async (t) => {
  // An attack run: a server without the token's keys answered every request with an endless
  // body, and the client read it all before opening it (690 MiB in Node after 1 s; a crashed
  // tab in a browser). It now reads at most maxAnswer bytes, refuses the answer unread, and
  // retries as it does for any answer that does not open.
  let sent = 0;
  const hostile = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/plain' });
    const chunk = Buffer.alloc(1 << 16, 120);
    const more = () => {
      while (!response.destroyed && response.write(chunk)) sent += chunk.length;
      if (!response.destroyed) response.once('drain', more);
    };
    response.on('close', () => response.removeAllListeners('drain'));
    more();
  });
  await new Promise((resolve) => hostile.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    hostile.closeAllConnections();
    hostile.close();
  });
  const { token } = fakeServer(() => undefined);
  const client = connectDSN(`http://127.0.0.1:${hostile.address().port}${BASE}`, token,
    { ...FAST, retryMin: 1000, retryMax: 1000, maxAnswer: 1 << 20, indexedDB: null });
  t.after(() => client.close());
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  await waitFor(() => statuses.some((s) => s.code === 'bad_response' && /maxAnswer/.test(s.message)), 'the refused answer');
  assert.ok(sent < 32 << 20, `${sent} bytes sent into an answer capped at 1 MiB`);
  const big = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Length': String(1e12) });
    response.write(Buffer.alloc(1000));
  });
  await new Promise((resolve) => big.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    big.closeAllConnections();
    big.close();
  });
  const said = connectDSN(`http://127.0.0.1:${big.address().port}${BASE}`, token, { ...FAST, indexedDB: null });
  t.after(() => said.close());
  const bigStatuses = [];
  said.onStatus((status) => bigStatuses.push(status));
  await waitFor(() => bigStatuses.some((s) => s.code === 'bad_response' && /1000000000000 bytes/.test(s.message)),
    'a Content-Length over maxAnswer refused before reading');
});

test('stream: a message announced longer than maxAnswer is refused before its bytes are held', async (t) => {
  let streams = 0;
  const server = fakeServer(async (request) => {
    if (request.op === 'pull' && request.stream && request.since?.seq === 0 && streams++ === 0) {
      return {
        async stream({ message, write }) {
          write(await message(0, { epoch: 'e1', seq: 1, changes: [['t', 'a', { n: 1 }]] }));
          write(Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 1, 2, 3));  // "2 GiB follow"
          await new Promise(() => {});
        },
      };
    }
    return streamHello(request);
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, stream: true, fetch: server.fetch, maxAnswer: 1 << 20 });
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => statuses.some((s) => s.code === 'bad_response' && /2147483647 bytes/.test(s.message)), 'the refused message');
  assert.deepEqual(await client.getAll('t'), { a: { n: 1 } }, 'the message before it was applied');
});
