// Issue 13 part 1: the README's snippets run as written on a first visit. A client with
// no stored cursor answers getAll and get only once the first sync has come (no
// `await client.ready` in the snippet); with a stored cursor it answers at once, server
// up or down; with the server unreachable it answers within options.firstSyncTimeout
// and the status says why; onDataChange never calls back with {} before the first sync.
// Against the live Python server of test/fixture_server.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';

import { fakeIndexedDB, startFixture, waitFor } from './helpers.mjs';
import { connectDSN } from '../dsn_client.js';

const IDBFactory = await fakeIndexedDB();

const shared = await startFixture();
await shared.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada', email: 'ada@example.com' } });
await shared.cmd({ cmd: 'sync', table: 'users', key: 'user_002', data: { name: 'Bob' } });
await shared.cmd({ cmd: 'sync', table: 'messages', key: 'prod_001', data: { title: 'Lamp' } });

/** Settles with `promise`, or rejects after `ms`: a bound for a promise the test needs
 * to end, not a measurement (generous, far above what the option asks). */
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/** A port where nothing listens (bound, then closed). */
async function deadPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('the README snippet as written: connectDSN, then getAll answers the server\'s records', async (t) => {
  const url = shared.url;
  const token = shared.token;
  // --- the snippet, unchanged ---
  const client = connectDSN(url, token);
  const allUsers = await client.getAll('users');
  // ---
  t.after(() => client.close());
  assert.deepEqual(allUsers, { user_001: { name: 'Ada', email: 'ada@example.com' }, user_002: { name: 'Bob' } });
});

test('the e-commerce snippet as written: get of one record on a first visit', async (t) => {
  const client = connectDSN(shared.url, shared.token);
  t.after(() => client.close());
  const product = await client.get('messages', 'prod_001');
  assert.deepEqual(product, { title: 'Lamp' });
  assert.deepEqual(await client.get('messages', 'nothing_here'), undefined);
});

test('onDataChange on a first visit: the first call carries the server\'s data, never {} before it', async (t) => {
  const client = connectDSN(shared.url, shared.token);
  t.after(() => client.close());
  const calls = [];
  client.onDataChange('users', (all) => calls.push(all));
  await waitFor(() => calls.length > 0, 'the first onDataChange call');
  assert.deepEqual(Object.keys(calls[0]).sort(), ['user_001', 'user_002']);
  await shared.cmd({ cmd: 'sync', table: 'users', key: 'user_003', data: { name: 'Cy' } });
  await waitFor(() => calls.at(-1).user_003, 'a later change to reach the listener');
  assert.ok(calls.every((all) => Object.keys(all).length >= 2), `no call with fewer records: ${JSON.stringify(calls)}`);
  await shared.cmd({ cmd: 'remove', table: 'users', key: 'user_003' });
});

test('server unreachable on a first visit: getAll and get answer within firstSyncTimeout, the status says why, listeners stay silent', async (t) => {
  const port = await deadPort();
  const instance = shared.url.split('/sync/')[1];
  const client = connectDSN(`http://127.0.0.1:${port}/sync/${instance}`, shared.token, { firstSyncTimeout: 300, retryMin: 50, retryMax: 200 });
  t.after(() => client.close());
  const calls = [];
  client.onDataChange('users', (all) => calls.push(all));
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  assert.deepEqual(await within(client.getAll('users'), 5000, 'getAll'), {});
  assert.equal(await within(client.get('users', 'user_001'), 5000, 'get'), undefined);
  const last = client._status;
  assert.equal(last.state, 'offline', JSON.stringify(last));
  assert.match(last.message, /cannot be reached/);
  // Well past the timeout, the listener has still not been called with an empty table.
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(calls, []);
});

test('a server that takes the connection but never answers: getAll answers after firstSyncTimeout, status first_sync_timeout', async (t) => {
  const sockets = new Set();
  const silent = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    silent.close();
  });
  const instance = shared.url.split('/sync/')[1];
  const client = connectDSN(`http://127.0.0.1:${silent.address().port}/sync/${instance}`, shared.token, { firstSyncTimeout: 300 });
  t.after(() => client.close());
  assert.deepEqual(await within(client.getAll('users'), 5000, 'getAll'), {});
  assert.equal(client._status.state, 'connecting');
  assert.equal(client._status.code, 'first_sync_timeout');
  assert.match(client._status.message, /firstSyncTimeout/);
});

test('a 401 on a first visit: getAll answers at once (the client has stopped), the status says unauthorized', async (t) => {
  const { token } = await shared.cmd({ cmd: 'mint', claims: {} });
  await shared.cmd({ cmd: 'revoke', token });
  const client = connectDSN(shared.url, token, { firstSyncTimeout: 60000 });
  t.after(() => client.close());
  await assert.rejects(client.ready, (error) => error.code === 'unauthorized');
  assert.deepEqual(await within(client.getAll('users'), 5000, 'getAll after a 401'), {});
  assert.equal(client._status.code, 'unauthorized');
});

test('a stale URL on a first visit: getAll answers at once, and a page listening to no status gets a console warning', async (t) => {
  // A newcomer's page with the quick start's URL from before a restart: getAll waited the
  // whole firstSyncTimeout, and nothing said why (the client's message went to onStatus,
  // which the page never registered). The 404 on hello now ends the wait.
  const stale = shared.url.replace(/\/sync\/[^/]+$/, '/sync/0000000000000000');
  const warned = [];
  const warn = console.warn;
  console.warn = (...args) => warned.push(args.join(' '));
  t.after(() => {
    console.warn = warn;
  });
  const { token } = await shared.cmd({ cmd: 'mint', claims: {} });
  const client = connectDSN(stale, token, { firstSyncTimeout: 60000, indexedDB: null });
  t.after(() => client.close());
  assert.deepEqual(await within(client.getAll('users'), 10000, 'getAll at a stale URL'), {});
  assert.equal(client._status.code, 'wrong_url');
  assert.equal(warned.length, 1, warned.join('\n'));
  assert.match(warned[0], /dsn-sync: no dsn-sync instance at .*this instance is not there/);
  // With a status listener, the page hears it there instead
  const heard = [];
  const listened = connectDSN(stale, token, { firstSyncTimeout: 60000, indexedDB: null });
  t.after(() => listened.close());
  listened.onStatus((status) => heard.push(status));
  await within(listened.getAll('users'), 10000, 'getAll at a stale URL, listened');
  assert.ok(heard.some((status) => status.code === 'wrong_url'));
  assert.equal(warned.length, 1, 'no second warning');
});

test('a stored cursor (a reload): getAll answers at once from IndexedDB, with the server up and with it down', { skip: IDBFactory ? false : 'fake-indexeddb is not installed (npm install)' }, async () => {
  const fixture = await startFixture();
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'u1', data: { name: 'Stored' } });
  const indexedDB = new IDBFactory();
  const first = connectDSN(fixture.url, fixture.token, { indexedDB });
  assert.deepEqual(await first.getAll('users'), { u1: { name: 'Stored' } });
  first.close();

  // Server up: the reload answers from the stored mirror before any pull answer.
  const up = connectDSN(fixture.url, fixture.token, { indexedDB, firstSyncTimeout: 60000 });
  let pulled = false;
  up.ready.then(() => {
    pulled = true;
  }, () => {});
  assert.deepEqual(await within(up.getAll('users'), 5000, 'getAll from the stored mirror'), { u1: { name: 'Stored' } });
  assert.equal(pulled, false, 'answered before the first pull of this visit');
  up.close();

  // Server down: the same, at once rather than after firstSyncTimeout (a minute here).
  await fixture.cmd({ cmd: 'stop' });
  const down = connectDSN(fixture.url, fixture.token, { indexedDB, firstSyncTimeout: 60000, retryMin: 50, retryMax: 200 });
  const calls = [];
  down.onDataChange('users', (all) => calls.push(all));
  assert.deepEqual(await within(down.getAll('users'), 5000, 'getAll with the server down'), { u1: { name: 'Stored' } });
  assert.deepEqual(await within(down.get('users', 'u1'), 5000, 'get with the server down'), { name: 'Stored' });
  await waitFor(() => calls.length, 'the listener\'s first call from the stored mirror');
  assert.deepEqual(calls[0], { u1: { name: 'Stored' } });
  down.close();
});
