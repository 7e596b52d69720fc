// dsn_client.js against a live dsn_sync.py server (test/fixture_server.py): every API
// call and error code, long-poll wake-up, resets, rollback, offline writes replayed
// exactly once, tokens refreshed after 401, endpoint rotation, path prefixes, streamed
// pulls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { fakeIndexedDB, startFixture, waitFor } from './helpers.mjs';
import { connectDSN, DSNError, _internals } from '../dsn_client.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..');
if (!existsSync(path.join(repoRoot, 'dsn_sync.py'))) throw new Error(`dsn_sync.py is missing from ${repoRoot}`);

// Fast retries keep outage tests short; the defaults (0.5 s doubling to 30 s) are for people.
const FAST = { retryMin: 30, retryMax: 300, wait: 5 };

const shared = await startFixture();

function connect(fixture = shared, options = {}, token = fixture.token) {
  const client = connectDSN(fixture.url, token, { ...FAST, ...options });
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  client.statuses = statuses;
  return client;
}

const isCode = (code) => (error) => {
  assert.ok(error instanceof DSNError, `expected a DSNError, got ${error}`);
  assert.equal(error.code, code, error.message);
  return true;
};

test('ready, getAll and get answer the backend records, without the key field', async (t) => {
  await shared.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada', email: 'ada@example.com' } });
  await shared.cmd({ cmd: 'sync', table: 'users', key: 'user_002', data: { name: 'Bob' } });
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  const all = await client.getAll('users');
  assert.deepEqual(all.user_001, { name: 'Ada', email: 'ada@example.com' });
  assert.deepEqual(all.user_002, { name: 'Bob' });
  assert.deepEqual(await client.get('users', 'user_001'), { name: 'Ada', email: 'ada@example.com' });
  assert.equal(await client.get('users', 'nobody'), undefined);
  assert.deepEqual(await client.getAll('no_such_table'), {});
  assert.equal(client.statuses.at(-1).state, 'online');
  assert.deepEqual(client.pending(), []);
});

test('create, update, delete resolve true and reach the backend; the data shape matches the server', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  assert.equal(await client.create('users', 'user_100', { name: 'Cy', cart: [1, 2], user_id: 'user_100' }), true);
  assert.deepEqual((await shared.cmd({ cmd: 'get', table: 'users', key: 'user_100' })).result, { name: 'Cy', cart: [1, 2] });
  assert.deepEqual(await client.get('users', 'user_100'), { name: 'Cy', cart: [1, 2] });
  assert.equal(await client.update('users', 'user_100', { status: 'vip' }), true);
  assert.deepEqual((await shared.cmd({ cmd: 'get', table: 'users', key: 'user_100' })).result, { name: 'Cy', cart: [1, 2], status: 'vip' });
  assert.deepEqual(await client.get('users', 'user_100'), { name: 'Cy', cart: [1, 2], status: 'vip' });
  assert.equal(await client.delete('users', 'user_100'), true);
  assert.equal((await shared.cmd({ cmd: 'get', table: 'users', key: 'user_100' })).result, null);
  assert.equal(await client.get('users', 'user_100'), undefined);
  const stamped = connect();
  t.after(() => stamped.close());
  assert.equal(await stamped.create('stamped', 's1', { label: 'x' }), true);
  assert.deepEqual(await stamped.get('stamped', 's1'), { label: 'x', server: 'stamped' }, 'the handler\'s record replaces the optimistic one');
});

test('writes are optimistic: the mirror and listeners see them before the ack', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  const seen = [];
  client.onDataChange('messages', (all) => seen.push(all));
  const write = client.create('messages', 'm1', { text: 'hi' });
  assert.deepEqual((await client.getAll('messages')).m1, { text: 'hi' });
  assert.deepEqual(client.pending().map(({ op, table, key, data }) => ({ op, table, key, data })), [{ op: 'create', table: 'messages', key: 'm1', data: { text: 'hi' } }]);
  assert.match(client.pending()[0].mid, /^[A-Za-z0-9_-]{16}$/);
  assert.equal(await write, true);
  assert.deepEqual(client.pending(), []);
  await waitFor(() => seen.some((all) => all.m1), 'the listener to see m1');
});

test('every refusal rejects with its DSNError code, and the optimistic change is rolled back', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  await client.create('users', 'user_200', { name: 'Dee' });
  await assert.rejects(client.create('users', 'user_200', { name: 'again' }), isCode('exists'));
  assert.deepEqual(await client.get('users', 'user_200'), { name: 'Dee' });
  await assert.rejects(client.update('users', 'nobody', { name: 'x' }), isCode('not_found'));
  await assert.rejects(client.delete('users', 'nobody'), isCode('not_found'));
  await assert.rejects(client.create('users', 'user_201', { age: 3 }), (e) => isCode('invalid')(e) && /age/.test(e.message));
  assert.equal(await client.get('users', 'user_201'), undefined);
  await assert.rejects(client.create('nonexistent', 'k', {}), isCode('unknown_table'));
  await assert.rejects(client.create('readonly', 'k', { a: 1 }), isCode('no_handler'));
  await assert.rejects(client.create('boom', 'k', { a: 1 }), (e) => isCode('handler_error')(e) && !/internal detail/.test(e.message));

  const seen = [];
  const off = client.onDataChange('guarded', (all) => seen.push(structuredClone(all)));
  await waitFor(() => seen.length === 1, 'the first call');
  await assert.rejects(client.create('guarded', 'g1', { reject: true }), isCode('rejected'));
  assert.deepEqual(seen.map((all) => 'g1' in all), [false, true, false], 'optimistic, then rolled back');
  assert.equal(await client.get('guarded', 'g1'), undefined);
  assert.equal((await shared.cmd({ cmd: 'get', table: 'guarded', key: 'g1' })).result, null);
  await client.create('guarded', 'g2', { v: 1 });
  await assert.rejects(client.update('guarded', 'g2', { v: 2, reject: true }), isCode('rejected'));
  assert.deepEqual(await client.get('guarded', 'g2'), { v: 1 });
  off();

  // The client's own checks, before anything is queued.
  await assert.rejects(client.create('bad name!', 'k', {}), isCode('invalid'));
  await assert.rejects(client.create('users', '', {}), isCode('invalid'));
  await assert.rejects(client.create('users', 'x'.repeat(257), {}), isCode('invalid'));
  await assert.rejects(client.create('users', 'k', null), isCode('invalid'));
  await assert.rejects(client.create('users', 'k', { user_id: 'other' }), isCode('invalid'));
  // What JSON would change silently (a newcomer's NaN arrived as null, a Map as {}), refused
  for (const [value, said] of [[NaN, /"n" is NaN/], [Infinity, /"n" is Infinity/], [new Map([['a', 1]]), /Map.*Object.fromEntries/],
    [new Set([1]), /Set/], [() => 1, /"n" is a function/], [new Uint8Array(2), /binary \(Uint8Array\)/],
    [new Date(NaN), /"n" is an invalid Date/], [new Number(NaN), /"n" is NaN/], [Buffer.from('ab'), /binary \(Buffer\)/]]) {
    await assert.rejects(client.create('users', 'k', { n: value }), (e) => isCode('invalid')(e) && said.test(e.message), String(value));
  }
  await assert.rejects(client.update('users', 'k', { deep: { list: [1, -Infinity] } }), (e) => isCode('invalid')(e) && /item 1 is -Infinity/.test(e.message));
  assert.deepEqual(client.pending(), []);
});

test('a key such as "__proto__" is an ordinary key in getAll and onDataChange', async (t) => {
  await shared.cmd({ cmd: 'sync', table: 'metrics', key: '__proto__', data: { polluted: false } });
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  const all = await client.getAll('metrics');
  assert.ok(Object.hasOwn(all, '__proto__'));
  assert.deepEqual(all.__proto__, { polluted: false });
  assert.equal(Object.getPrototypeOf(all), Object.prototype);
  assert.equal(await client.create('messages', 'constructor', { text: 'also fine' }), true);
  assert.deepEqual((await client.getAll('messages')).constructor, { text: 'also fine' });
});

test('forbidden: a token that may not write the table', async (t) => {
  const { token } = await shared.cmd({ cmd: 'mint', claims: { write: ['messages'] } });
  const client = connect(shared, {}, token);
  t.after(() => client.close());
  await client.ready;
  await assert.rejects(client.create('users', 'user_300', { name: 'x' }), isCode('forbidden'));
  assert.equal(await client.create('messages', 'm300', { text: 'allowed' }), true);
});

test('long-poll wake-up: a backend sync() reaches onDataChange within a few ms', async (t) => {
  const client = connect(shared, { wait: 25 });
  t.after(() => client.close());
  await client.ready;
  await new Promise((resolve) => setTimeout(resolve, 200)); // the client is now parked in a long poll
  const delays = [];
  for (let i = 0; i < 5; i++) {
    const arrived = new Promise((resolve) => {
      const off = client.onDataChange('metrics', (all) => {
        if (all[`point_${i}`]) {
          off();
          resolve();
        }
      });
    });
    const start = performance.now();
    await shared.cmd({ cmd: 'sync', table: 'metrics', key: `point_${i}`, data: { value: i } });
    await arrived;
    delays.push(performance.now() - start);
  }
  delays.sort((a, b) => a - b);
  t.diagnostic(`sync() -> onDataChange: ${delays.map((d) => d.toFixed(1)).join(', ')} ms`);
  assert.ok(delays[2] < 200, `median delay ${delays[2]} ms`);
  await shared.cmd({ cmd: 'remove', table: 'metrics', key: 'point_0' });
  await waitFor(async () => (await client.get('metrics', 'point_0')) === undefined, 'the removal');
});

test('onDataChange: once at once, never for unchanged data, a throwing callback does not stop others; off() stops', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  const good = [];
  const originalError = console.error;
  const logged = [];
  console.error = (...args) => logged.push(args);
  t.after(() => {
    console.error = originalError;
  });
  client.onDataChange('messages', () => {
    throw new Error('listener bug');
  });
  const off = client.onDataChange('messages', (all) => good.push(all));
  await waitFor(() => good.length === 1, 'the first call');
  await client.create('messages', 'm500', { text: 'a' });
  await waitFor(() => good.length === 2, 'the second call');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(good.length, 2, 'the ack and the pull of the same record change nothing the listener can see');
  assert.ok(logged.length >= 2);
  off();
  await client.create('messages', 'm501', { text: 'b' });
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(good.length, 2);
});

test('two clients: a write of one reaches the other', async (t) => {
  const a = connect();
  const b = connect();
  t.after(() => {
    a.close();
    b.close();
  });
  await Promise.all([a.ready, b.ready]);
  await a.create('messages', 'chat_1', { from: 'a', text: 'hello b' });
  await waitFor(async () => (await b.get('messages', 'chat_1'))?.text === 'hello b', 'b to receive the message');
});

test('endpoint rotation: 250 requests carry on across many rotated paths', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  await client.create('messages', 'counter', { n: 0 });
  for (let n = 1; n <= 250; n++) await client.update('messages', 'counter', { n });
  assert.deepEqual((await shared.cmd({ cmd: 'get', table: 'messages', key: 'counter' })).result, { n: 250 });
  assert.match(client._ep, /^\/sync\/[0-9a-f]{16}\/[A-Za-z0-9_-]+$/);
});

test('404 on a stale endpoint: hello again at the base path and carry on', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  client._ep = `${new URL(shared.url).pathname}/retiredlongago`;
  assert.equal(await client.create('messages', 'after_404', { ok: 1 }), true);
});

test('clock: a client clock 10 minutes off is corrected from `now` and the request retried', async (t) => {
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  client._offset = -600000;
  assert.equal(await client.create('messages', 'clock_1', { ok: 1 }), true);
  assert.ok(Math.abs(client._offset) < 5000, `offset ${client._offset}`);
});

test('replay: a frame the server already accepted gets `replay`; the write goes again and is applied once', async (t) => {
  let replayed = false;
  const replaying = async (url, init) => {
    const first = await fetch(url, init);
    if (replayed || !init.body || !(await first.clone().arrayBuffer()).byteLength) return first;
    const length = init.body.length;
    if (length < 400) return first; // only a write's frame (hello and pulls are small)
    replayed = true;
    return fetch(url, init); // the same frame again: answered with `replay`
  };
  const client = connect(shared, { fetch: replaying });
  t.after(() => client.close());
  await client.ready;
  assert.equal(await client.create('messages', 'replay_1', { padding: 'x'.repeat(300) }), true);
  assert.ok(replayed);
  const calls = (await shared.cmd({ cmd: 'calls' })).result.filter(([, table, key]) => table === 'messages' && key === 'replay_1');
  assert.equal(calls.length, 1);
});

test('a path prefix (a proxy mounting /api/sync/...) is sent in the URL but not in the frame', async (t) => {
  const seen = [];
  const proxy = (url, init) => {
    seen.push(new URL(url).pathname);
    return fetch(url.replace('/api/sync/', '/sync/'), init);
  };
  const prefixed = shared.url.replace('/sync/', '/api/sync/');
  const client = connectDSN(prefixed, shared.token, { ...FAST, fetch: proxy });
  t.after(() => client.close());
  await client.ready;
  assert.equal(await client.create('messages', 'via_proxy', { ok: 1 }), true);
  assert.ok(seen.length >= 3 && seen.every((p) => p.startsWith('/api/sync/')), seen.join(' '));
});

test('wrong URL: a 404 on hello is reported as status error wrong_url', async (t) => {
  const wrong = shared.url.replace(/[0-9a-f]{16}$/, '0000000000000000');
  const client = connectDSN(wrong, shared.token, FAST);
  t.after(() => client.close());
  const status = await new Promise((resolve) => client.onStatus((s) => s.state === 'error' && resolve(s)));
  assert.equal(status.code, 'wrong_url');
  // dsn-sync answers at that address: the instance is the stale part
  assert.match(status.message, /dsn-sync answers at http:\/\/127\.0\.0\.1:\d+, but this instance is not there/);
});

test('wrong URL: a mount prefix left out (the app answers 404 there) is named as the likely cause', async (t) => {
  // A real app in front of a real server: it passes /dsn/... on without the prefix, and answers 404 elsewhere.
  const target = new URL(shared.url);
  const app = http.createServer(async (request, response) => {
    if (!request.url.startsWith('/dsn/')) return response.writeHead(404).end('not found');
    try {
      const body = [];
      for await (const chunk of request) body.push(chunk);
      const answer = await fetch(`${target.origin}${request.url.slice(4)}`, { method: request.method,
        headers: { 'Content-Type': 'text/plain' }, body: request.method === 'POST' ? Buffer.concat(body) : undefined });
      response.writeHead(answer.status, { 'Content-Type': answer.headers.get('content-type') ?? 'application/octet-stream' });
      response.end(Buffer.from(await answer.arrayBuffer()));
    } catch {
      response.destroy();  // the client left (its long poll, at the test's end)
    }
  });
  await new Promise((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.after(() => app.close());
  const origin = `http://127.0.0.1:${app.address().port}`;
  const right = connectDSN(`${origin}/dsn${target.pathname}`, shared.token, FAST);
  t.after(() => right.close());
  await right.ready;  // through the prefix it works
  const client = connectDSN(`${origin}${target.pathname}`, shared.token, FAST);  // the prefix left out
  t.after(() => client.close());
  const status = await new Promise((resolve) => client.onStatus((s) => s.state === 'error' && resolve(s)));
  assert.equal(status.code, 'wrong_url');
  assert.match(status.message, /no dsn-sync answers at http:\/\/127\.0\.0\.1:\d+\/: if dsn-sync is mounted in an app, the URL must include the mount's prefix/);
});

test('bad arguments fail at once with DSNError', () => {
  assert.throws(() => connectDSN('http://127.0.0.1:1/nothing', shared.token), isCode('bad_url'));
  assert.throws(() => connectDSN('not a url', shared.token), isCode('bad_url'));
  assert.throws(() => connectDSN(`${shared.url}/inspect`, shared.token), isCode('bad_url'));
  // a mount whose prefix holds /sync/ (app.mount('/sync', ...)): the last /sync/ starts the path
  assert.deepEqual(_internals.parseSyncUrl('https://h.example/sync/sync/00aa'),
    { origin: 'https://h.example', prefix: '/sync', basePath: '/sync/00aa', instance: '00aa' });
  assert.throws(() => connectDSN(shared.url, 'dsn1.nope'), isCode('bad_token'));
  assert.throws(() => connectDSN(shared.url, 42), isCode('bad_token'));
});

test('in a page, a path is a sync URL of the page\'s origin (get_url(\'/dsn\') under a mount); elsewhere it is bad_url', (t) => {
  assert.throws(() => _internals.parseSyncUrl('/dsn/sync/00aa'), isCode('bad_url'));  // Node: no page to resolve it against
  const had = Object.getOwnPropertyDescriptor(globalThis, 'location');
  t.after(() => (had ? Object.defineProperty(globalThis, 'location', had) : delete globalThis.location));
  Object.defineProperty(globalThis, 'location', { value: { href: 'https://app.example/notes/today?x=1' }, configurable: true });
  assert.deepEqual(_internals.parseSyncUrl('/dsn/sync/00aa'),
    { origin: 'https://app.example', prefix: '/dsn', basePath: '/sync/00aa', instance: '00aa' });
  assert.deepEqual(_internals.parseSyncUrl('http://other.example:3000/sync/00bb').origin, 'http://other.example:3000');
  Object.defineProperty(globalThis, 'location', { value: { href: 'file:///home/me/page.html' }, configurable: true });
  assert.throws(() => _internals.parseSyncUrl('/dsn/sync/00aa'), isCode('bad_url'));  // a file: page has no server to ask
});

test('401: a revoked string token stops the client, keeps the queued writes, rejects ready', async (t) => {
  const { token } = await shared.cmd({ cmd: 'mint', claims: {} });
  await shared.cmd({ cmd: 'revoke', token });
  const client = connect(shared, {}, token);
  t.after(() => client.close());
  await assert.rejects(client.ready, isCode('unauthorized'));
  assert.equal(client.statuses.at(-1).state, 'error');
  assert.equal(client.statuses.at(-1).code, 'unauthorized');
});

test('401 then a token function: it is asked again and the client carries on', async (t) => {
  const { token: revoked } = await shared.cmd({ cmd: 'mint', claims: {} });
  await shared.cmd({ cmd: 'revoke', token: revoked });
  const given = [];
  const tokenFunction = async () => {
    const token = given.length === 0 ? revoked : shared.token;
    given.push(token);
    return token;
  };
  const client = connect(shared, {}, tokenFunction);
  t.after(() => client.close());
  await client.ready;
  assert.deepEqual(given, [revoked, shared.token]);
  assert.ok(client.statuses.some((s) => s.state === 'error' && s.code === 'unauthorized'));
  assert.equal(await client.create('messages', 'after_401', { ok: 1 }), true);
});

test('expired: a token past its exp is answered `expired`; the token function gives a fresh one', async (t) => {
  const { token: old } = await shared.cmd({ cmd: 'mint', claims: { exp: Math.floor(Date.now() / 1000) - 60 } });
  let asked = 0;
  const client = connect(shared, {}, () => (asked++ === 0 ? old : shared.token));
  t.after(() => client.close());
  await client.ready;
  assert.equal(asked, 2);
  // Without a token function the client stops and says why, as the Python client does.
  const stuck = connect(shared, {}, old);
  t.after(() => stuck.close());
  await assert.rejects(stuck.ready, (error) => error.code === 'expired' && !/the write stays/.test(error.message));
  assert.equal(stuck.statuses.at(-1).code, 'expired');
  // A write made now is refused, not queued, and says so (it said it "stays queued").
  await assert.rejects(stuck.create('messages', 'after_expiry', { ok: 1 }),
    (error) => error.code === 'expired' && /this write was not queued/.test(error.message));
  assert.deepEqual(await stuck.pending(), []);
});

test('offline: writes made while the server is down are queued, then sent exactly once when it returns', async (t) => {
  const fixture = await startFixture();
  const client = connect(fixture);
  t.after(() => client.close());
  await client.ready;
  await fixture.cmd({ cmd: 'stop' });
  await waitFor(() => client.statuses.at(-1).state === 'offline', 'status offline');
  const writes = [
    client.create('users', 'user_off', { name: 'Offline' }),
    client.update('users', 'user_off', { status: 'queued' }),
    client.create('messages', 'off_1', { text: 'one' }),
    client.create('messages', 'off_2', { text: 'two' }),
  ];
  let settled = false;
  Promise.allSettled(writes).then(() => {
    settled = true;
  });
  assert.deepEqual(await client.get('users', 'user_off'), { name: 'Offline', status: 'queued' });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(settled, false);
  assert.deepEqual(client.pending().map((w) => `${w.op} ${w.table}/${w.key}`), ['create users/user_off', 'update users/user_off', 'create messages/off_1', 'create messages/off_2']);
  const mids = client.pending().map((w) => w.mid);
  await fixture.cmd({ cmd: 'start' });
  assert.deepEqual(await Promise.all(writes), [true, true, true, true]);
  assert.deepEqual((await fixture.cmd({ cmd: 'get', table: 'users', key: 'user_off' })).result, { name: 'Offline', status: 'queued' });
  const calls = (await fixture.cmd({ cmd: 'calls' })).result;
  for (const mid of mids) assert.equal(calls.filter((call) => call[3] === mid).length, 1, `mid ${mid} applied once`);
  await waitFor(() => client.statuses.at(-1).state === 'online', 'status online again');
  assert.deepEqual(client.pending(), []);
});

test('reset: a server restarted with a new epoch (empty store) replaces the mirror; queued writes are re-sent', async (t) => {
  const fixture = await startFixture();
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_old', data: { name: 'Old' } });
  const client = connect(fixture);
  t.after(() => client.close());
  await client.ready;
  const epoch = client._cursor.epoch;
  assert.deepEqual(await client.get('users', 'user_old'), { name: 'Old' });
  await fixture.cmd({ cmd: 'stop' });
  await waitFor(() => client.statuses.at(-1).state === 'offline', 'status offline');
  const queued = client.create('messages', 'across_restart', { text: 'sent after the restart' });
  const { epoch: newEpoch } = await fixture.cmd({ cmd: 'start', fresh: true });
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_new', data: { name: 'New' } });
  assert.equal(await queued, true);
  await waitFor(async () => (await client.get('users', 'user_new')) !== undefined, 'the new epoch\'s record');
  assert.notEqual(newEpoch, epoch);
  assert.equal(client._cursor.epoch, newEpoch);
  assert.equal(await client.get('users', 'user_old'), undefined, 'the old epoch\'s records are gone');
  assert.deepEqual(await client.get('messages', 'across_restart'), { text: 'sent after the restart' });
  assert.ok(client.statuses.some((s) => s.reset?.done), 'reset progress was reported');
});

test('a paged reset (12,000 records, pages of 5,000) is applied only when complete', async (t) => {
  const fixture = await startFixture('fixture_server.py', [5000]);
  await fixture.cmd({ cmd: 'bulk', table: 'metrics', count: 12000 });
  const client = connect(fixture);
  t.after(() => client.close());
  const sizes = [];
  client.onDataChange('metrics', (all) => sizes.push(Object.keys(all).length));
  await client.ready;
  const progress = client.statuses.filter((s) => s.reset).map((s) => s.reset.pages);
  assert.deepEqual(progress, [1, 2, 3]);
  assert.deepEqual(client.statuses.find((s) => s.reset?.done).reset.records.metrics, 12000);
  await waitFor(() => sizes.at(-1) === 12000, 'all records');
  assert.ok(sizes.every((n) => n === 0 || n === 12000), `never a half-loaded snapshot: ${sizes}`);
  assert.deepEqual(await client.get('metrics', 'r11999'), { n: 11999 });
});

test('schema changes reach the client: a table defined after connecting can be written', async (t) => {
  const fixture = await startFixture();
  const client = connect(fixture);
  t.after(() => client.close());
  await client.ready;
  await fixture.cmd({ cmd: 'define_table', name: 'late', schema: { key: 'id', fields: ['x'] } });
  await waitFor(() => client._schema.late, 'the new schema');
  await fixture.cmd({ cmd: 'sync', table: 'late', key: 'a', data: { x: 1 } });
  await waitFor(async () => (await client.get('late', 'a'))?.x === 1, 'the record');
});

test('close(): queued writes reject with `closed`, the feed stops', async (t) => {
  const fixture = await startFixture();
  const client = connect(fixture);
  await client.ready;
  await fixture.cmd({ cmd: 'stop' });
  await waitFor(() => client.statuses.at(-1).state === 'offline', 'status offline');
  const write = client.create('messages', 'never', { x: 1 });
  await new Promise((resolve) => setTimeout(resolve, 50));
  client.close();
  await assert.rejects(write, (error) => isCode('closed')(error) && error.queued === false &&
    /goes with the in-memory outbox/.test(error.message));
  await assert.rejects(client.create('messages', 'after_close', {}), isCode('closed'));
});

for (const atOnce of [false, true]) {
  test(`close() with IndexedDB ${atOnce ? 'at once after a write (nothing awaited between)' : 'with a write in the outbox'}: ` +
       'the write rejects with `queued`, and the next client on the database has it', async (t) => {
    const IDBFactory = await fakeIndexedDB();
    if (!IDBFactory) return t.skip('fake-indexeddb is not installed (npm ci installs it)');
    const indexedDB = new IDBFactory();
    const fixture = await startFixture();
    const name = atOnce ? 'closed-at-once' : 'queued-at-close';
    const client = connect(fixture, { indexedDB, name });
    await client.ready;
    await fixture.cmd({ cmd: 'stop' });
    await waitFor(() => client.statuses.at(-1).state === 'offline', 'status offline');
    const write = client.create('messages', name, { x: 1 });
    if (!atOnce) await waitFor(() => client.pending().length === 1, 'the write in the outbox');
    client.close();
    await assert.rejects(write, (error) => isCode('closed')(error) && error.queued === true &&
      /stays queued in IndexedDB, and the next connectDSN with this database sends it/.test(error.message));
    const next = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB, name });
    t.after(() => next.close());
    await next._loaded;
    assert.deepEqual(next.pending().map((w) => w.key), [name], 'what the rejection said is in the database');
  });
}

test('without crypto.subtle (a page on plain http:// over a LAN): the pure-JS HMAC talks to the same server', async (t) => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  const webcrypto = globalThis.crypto;
  Object.defineProperty(globalThis, 'crypto', { value: { getRandomValues: (array) => webcrypto.getRandomValues(array) }, configurable: true });
  t.after(() => Object.defineProperty(globalThis, 'crypto', saved));
  assert.equal(globalThis.crypto.subtle, undefined);
  const client = connect();
  t.after(() => client.close());
  await client.ready;
  assert.equal(await client.create('messages', 'no_subtle', { text: 'js only' }), true);
  assert.deepEqual((await shared.cmd({ cmd: 'get', table: 'messages', key: 'no_subtle' })).result, { text: 'js only' });
});

test('cursor and schema: public read-only getters; null and {} before the first sync', async (t) => {
  const fixture = await startFixture();
  const client = connect(fixture);
  t.after(() => client.close());
  assert.equal(client.cursor, null, 'no cursor before the first sync');
  assert.deepEqual(client.schema, {});
  assert.ok(Object.isFrozen(client.schema), 'read-only from the start');
  await client.ready;
  const cursor = client.cursor;
  assert.deepEqual(Object.keys(cursor).sort(), ['epoch', 'seq', 'sv']);
  assert.equal(cursor.epoch, (await fixture.cmd({ cmd: 'epoch' })).result);
  assert.ok(Number.isInteger(cursor.seq) && Number.isInteger(cursor.sv), JSON.stringify(cursor));
  assert.deepEqual(client.schema.users, { key: 'user_id', fields: ['name', 'email', 'cart', 'status'] });
  assert.deepEqual(client.schema.messages, { key: 'id', fields: null });
  assert.deepEqual(Object.keys(client.schema).sort(), ['boom', 'guarded', 'messages', 'metrics', 'readonly', 'stamped', 'users']);

  // Read-only: no setter, and what they answer is frozen all the way down.
  assert.throws(() => {
    client.cursor = null;
  }, TypeError);
  assert.throws(() => {
    client.schema = {};
  }, TypeError);
  assert.throws(() => {
    cursor.seq = 0;
  }, TypeError);
  assert.throws(() => {
    client.schema.users.fields.push('hacked');
  }, TypeError);
  assert.throws(() => {
    client.schema.evil = { key: 'id' };
  }, TypeError);
  assert.ok(!Object.keys(Object.getOwnPropertyDescriptors(client)).includes('cursor'), 'a getter on the class, not a field');

  // The mirror moves: a new cursor, and the one kept from before still says what it said.
  const seen = { ...cursor };
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_cursor', data: { name: 'Moves' } });
  await waitFor(() => client.cursor.seq > seen.seq, 'the cursor to move');
  assert.deepEqual(cursor, seen);
  assert.equal(client.cursor.epoch, seen.epoch);

  // A schema change arrives with the next pull; the old schema object is left as it was.
  const schemaBefore = client.schema;
  await fixture.cmd({ cmd: 'define_table', name: 'late', schema: { key: 'id', fields: ['x'] } });
  await waitFor(() => client.schema.late, 'the new table in the schema');
  assert.deepEqual(client.schema.late, { key: 'id', fields: ['x'] });
  assert.equal(schemaBefore.late, undefined);
  assert.ok(client.cursor.sv > seen.sv, 'the schema version moved with it');
  assert.ok(Object.isFrozen(client.schema) && Object.isFrozen(client.schema.late) && Object.isFrozen(client.cursor));
});

test('onSync: {cursor, pending} once soon, then after every pull, every write queued and every write answered; off() stops', async (t) => {
  const fixture = await startFixture();
  const client = connect(fixture);
  t.after(() => client.close());
  assert.throws(() => client.onSync('not a function'), TypeError);
  const events = [];
  const off = client.onSync((progress) => events.push(progress));
  const originalError = console.error;
  console.error = () => {};
  t.after(() => {
    console.error = originalError;
  });
  client.onSync(() => {
    throw new Error('listener bug');
  });
  await client.ready;
  assert.deepEqual(events[0], { cursor: null, pending: 0 }, 'the first call: where the mirror stands, before any answer');
  assert.equal(events.at(-1).cursor, client.cursor, 'the first pull, with the getter\'s cursor');
  assert.ok(Object.isFrozen(events.at(-1)));
  assert.equal(events.filter((e) => e.cursor === null).length, 1, 'the first call only once');

  // A backend change reaches onSync without anybody polling.
  const before = client.cursor.seq;
  await fixture.cmd({ cmd: 'sync', table: 'metrics', key: 'm_sync', data: { value: 1 } });
  await waitFor(() => events.at(-1).cursor.seq > before, 'a call for the pulled change');

  // A write: queued (pending 1, at once), answered (pending 0).
  let n = events.length;
  const write = client.create('messages', 'sync_1', { text: 'counted' });
  assert.equal(events.length, n + 1, 'called as the write is queued');
  assert.equal(events[n].pending, 1);
  assert.equal(await write, true);
  assert.equal(events.at(-1).pending, 0, 'answered before the promise resolves');

  // A refusal also empties the outbox, and says so.
  n = events.length;
  await assert.rejects(client.create('guarded', 'sync_2', { reject: true }), isCode('rejected'));
  assert.equal(events[n].pending, 1);
  assert.equal(events.at(-1).pending, 0, 'answered before the promise rejects');

  // Several writes queued together: the count climbs, then falls back to 0.
  n = events.length;
  await Promise.all([1, 2, 3].map((i) => client.create('messages', `sync_many_${i}`, { i })));
  const counts = events.slice(n).map((e) => e.pending);
  assert.deepEqual(counts.slice(0, 3), [1, 2, 3]);
  assert.equal(counts.at(-1), 0);
  assert.deepEqual(client.pending(), []);

  off();
  n = events.length;
  await client.create('messages', 'sync_after_off', { text: 'unseen' });
  await fixture.cmd({ cmd: 'sync', table: 'metrics', key: 'm_sync', data: { value: 2 } });
  await waitFor(async () => (await client.get('metrics', 'm_sync'))?.value === 2, 'the pull');
  assert.equal(events.length, n, 'nothing after off()');
});

test('onSync with the server down: the queued writes count up, and down to 0 when it returns', async (t) => {
  const fixture = await startFixture();
  const client = connect(fixture);
  t.after(() => client.close());
  await client.ready;
  const events = [];
  client.onSync((progress) => events.push(progress));
  await waitFor(() => events.length === 1, 'the first call');
  await fixture.cmd({ cmd: 'stop' });
  await waitFor(() => client.statuses.at(-1).state === 'offline', 'status offline');
  const writes = [client.create('messages', 'down_1', { n: 1 }), client.create('messages', 'down_2', { n: 2 })];
  assert.deepEqual(events.slice(-2).map((e) => e.pending), [1, 2]);
  await fixture.cmd({ cmd: 'start' });
  assert.deepEqual(await Promise.all(writes), [true, true]);
  assert.equal(events.at(-1).pending, 0);
  assert.ok(!client.statuses.some((s) => s.code === 'no_persistence'), 'no IndexedDB in Node is not a refusal');
});

/* ---------------- streamed pulls (option `stream`) ---------------- */

const { STREAM_TYPE, StreamSplitter, concatBytes, deriveTrafficKeys, parseToken, openRequestFrame } = _internals;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fetch that logs every request (opened with the token's keys: op, wait, stream) and
 * the Content-Type of its answer; `alter(response)` may replace the answer. */
function spyFetch(fixture, alter = (response) => response) {
  const { c2s } = deriveTrafficKeys(parseToken(fixture.token).tokenSecret);
  const log = [];
  const fetch = async (url, init) => {
    const opened = await openRequestFrame(c2s, new URL(url).pathname, init.body);
    const request = opened ? JSON.parse(opened.json) : {};
    const entry = { op: request.op, wait: request.wait, stream: request.stream, type: null };
    log.push(entry);
    const response = await globalThis.fetch(url, init);
    entry.type = response.headers.get('content-type');
    return alter(response);
  };
  return { fetch, log, pulls: () => log.filter((entry) => entry.op === 'pull').length };
}

/** Resolves when `client`'s view of metrics/`key` has value `value`. */
function arrival(client, key, value) {
  return new Promise((resolve) => {
    const off = client.onDataChange('metrics', (all) => {
      if (all[key]?.value === value) {
        off();
        resolve();
      }
    });
  });
}

test('streamed pulls: successive backend changes reach onDataChange during one stream, with few requests', async (t) => {
  const spy = spyFetch(shared);
  const client = connect(shared, { stream: true, wait: 10, fetch: spy.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => spy.log.some((entry) => entry.op === 'pull' && entry.stream === true && entry.wait === 10), 'a streamed long poll');
  await sleep(100); // parked at the server
  const pullsBefore = spy.pulls();
  const changes = 25;
  const delays = [];
  for (let i = 0; i < changes; i++) {
    const arrived = arrival(client, 'streamed', i);
    const start = performance.now();
    await shared.cmd({ cmd: 'sync', table: 'metrics', key: 'streamed', data: { value: i } });
    await arrived;
    delays.push(performance.now() - start);
  }
  const pulls = spy.pulls() - pullsBefore;
  delays.sort((a, b) => a - b);
  t.diagnostic(`${changes} changes, ${pulls} pull requests; sync() -> onDataChange median ${delays[changes >> 1].toFixed(1)} ms, max ${delays.at(-1).toFixed(1)} ms`);
  assert.ok(pulls <= 2, `${pulls} pull requests for ${changes} changes: one stream should carry them`);
  assert.ok(spy.log.some((entry) => entry.type === STREAM_TYPE), 'the answer was a stream');
  assert.ok(delays[changes >> 1] < 200, `median delay ${delays[changes >> 1]} ms: each change arrives as it happens, not at the stream's end`);
  assert.ok(client.statuses.every((status) => status.state === 'connecting' || status.state === 'online'), JSON.stringify(client.statuses));
});

test('streamed pulls: a stream ends with its wait, the client pulls again; its timeout never cuts a stream', async (t) => {
  const fixture = await startFixture();
  const spy = spyFetch(fixture);
  // pullGrace far below the default: the client's timeout for a stream is `wait` + pullGrace.
  const client = connect(fixture, { stream: true, wait: 1, pullGrace: 400, fetch: spy.fetch });
  t.after(() => client.close());
  await client.ready;
  const seen = [];
  client.onDataChange('metrics', (all) => {
    if (all.tick && seen.at(-1) !== all.tick.value) seen.push(all.tick.value);
  });
  const start = Date.now();
  let i = 0;
  while (Date.now() - start < 3500) {
    await fixture.cmd({ cmd: 'sync', table: 'metrics', key: 'tick', data: { value: i++ } });
    await sleep(100);
  }
  await waitFor(() => seen.at(-1) === i - 1, 'the last tick');
  const streams = spy.log.filter((entry) => entry.type === STREAM_TYPE).length;
  t.diagnostic(`${i} changes over 3.5 s with wait 1: ${spy.pulls()} pulls, ${streams} of them streamed, ${seen.length} deliveries`);
  assert.ok(streams >= 2, `${streams} streams: after one ends with its wait, the next pull streams again`);
  assert.ok(spy.pulls() < i / 2, `${spy.pulls()} pulls for ${i} changes`);
  assert.ok(seen.length > i / 2, `${seen.length} deliveries for ${i} changes`);
  assert.ok(client.statuses.every((status) => status.state === 'connecting' || status.state === 'online'),
    `no timeout, no error: ${JSON.stringify(client.statuses)}`);
});

test('streamed pulls: a tampered message is refused (bad_response), the stream dropped, and the client recovers from its cursor', async (t) => {
  const fixture = await startFixture();
  let tampered = 0;
  // The first stream's second message gets one bit of its tag flipped on the way.
  const spy = spyFetch(fixture, (response) => {
    if (response.headers.get('content-type') !== STREAM_TYPE || tampered++) return response;
    const splitter = new StreamSplitter();
    let index = 0;
    const body = response.body.pipeThrough(new TransformStream({
      transform(chunk, controller) {
        for (const frame of splitter.push(chunk)) {
          if (index++ === 1) frame[frame.length - 1] ^= 1;
          const n = frame.length;
          controller.enqueue(concatBytes(Uint8Array.of(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255), frame));
        }
      },
    }));
    return new Response(body, { status: response.status, headers: response.headers });
  });
  const client = connect(fixture, { stream: true, wait: 10, fetch: spy.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => spy.log.some((entry) => entry.stream === true), 'a streamed long poll');
  await sleep(100);
  for (let value = 0; value < 4; value++) {
    await sleep(150); // the next long poll parked, so that the change goes down a stream
    const arrived = arrival(client, 'tamper', value);
    await fixture.cmd({ cmd: 'sync', table: 'metrics', key: 'tamper', data: { value } });
    await arrived;
  }
  assert.equal(tampered >= 2, true, 'a second stream after the dropped one');
  const errors = client.statuses.filter((status) => status.state === 'error');
  assert.deepEqual(errors.map((status) => status.code), ['bad_response'], JSON.stringify(client.statuses));
  assert.match(errors[0].message, /message 1 of a streamed pull/);
  assert.equal(client.statuses.at(-1).state, 'online');
  const afterError = spy.log.slice(spy.log.findIndex((entry) => entry.type === STREAM_TYPE) + 1).find((entry) => entry.op === 'pull');
  assert.equal(afterError.wait, 0, 'pulled again at once, from the cursor');
  assert.deepEqual(await client.get('metrics', 'tamper'), { value: 3 });
});

test('streamed pulls off (stream: false, the default): plain long polls as before, one request per change', async (t) => {
  const spy = spyFetch(shared);
  const client = connect(shared, { wait: 10, fetch: spy.fetch });
  t.after(() => client.close());
  await client.ready;
  await sleep(200);
  const pullsBefore = spy.pulls();
  for (let i = 0; i < 5; i++) {
    const arrived = arrival(client, 'unstreamed', i);
    await shared.cmd({ cmd: 'sync', table: 'metrics', key: 'unstreamed', data: { value: i } });
    await arrived;
  }
  assert.ok(spy.pulls() - pullsBefore >= 4, 'a pull per change (the one after the last may not be out yet)');
  assert.ok(spy.log.every((entry) => entry.stream === undefined), 'no request asks for a stream');
  assert.ok(spy.log.every((entry) => entry.type !== STREAM_TYPE));
});
