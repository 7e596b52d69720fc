// The IndexedDB mirror, on fake-indexeddb (a dev-only dependency: `npm install`): one
// object store per table, reads from IndexedDB after a reload with the server down, a
// write made offline surviving a reload and sent exactly once, two "tabs" on one
// database through a schema upgrade. The same code runs on a browser's IndexedDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { startFixture, waitFor } from './helpers.mjs';
import { connectDSN } from '../dsn_client.js';

let IDBFactory = null;
try {
  ({ IDBFactory } = await import('fake-indexeddb'));
} catch {
  IDBFactory = null;
}
const skip = IDBFactory ? false : 'fake-indexeddb is not installed (run `npm install` for the dev dependency)';

const FAST = { retryMin: 30, retryMax: 300, wait: 5 };

function openDatabase(factory, name) {
  return new Promise((resolve, reject) => {
    const request = factory.open(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

test('one database per instance, one object store per table, plus #meta and #outbox', { skip }, async (t) => {
  const fixture = await startFixture();
  const indexedDB = new IDBFactory();
  const client = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  await client.ready;
  client.close();
  const instance = fixture.url.split('/').pop();
  const db = await openDatabase(indexedDB, `dsn-sync/${instance}`);
  t.after(() => db.close());
  assert.deepEqual([...db.objectStoreNames].sort(), ['#meta', '#outbox', 'boom', 'guarded', 'messages', 'metrics', 'readonly', 'stamped', 'users']);
});

test('reload with the server down: reads answer from IndexedDB; an offline write survives the reload and is sent once', { skip }, async () => {
  const fixture = await startFixture();
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada' } });
  const indexedDB = new IDBFactory();

  const first = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  await first.ready;
  assert.deepEqual(await first.get('users', 'user_001'), { name: 'Ada' });
  first.close();

  await fixture.cmd({ cmd: 'stop' });
  const second = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.deepEqual(await second.getAll('users'), { user_001: { name: 'Ada' } }, 'answered from IndexedDB, offline');
  const offline = second.create('users', 'user_002', { name: 'Written offline' });
  offline.catch(() => {});
  assert.deepEqual(await second.get('users', 'user_002'), { name: 'Written offline' });
  await waitFor(() => second.pending().length === 1 && second._outbox[0].id !== undefined, 'the write to reach the outbox store');
  const [{ mid }] = second.pending();
  second.close(); // the page goes away with the write unsent

  const third = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.deepEqual(await third.get('users', 'user_002'), { name: 'Written offline' }, 'still optimistic after the reload');
  assert.equal(third.pending()[0].mid, mid);
  await fixture.cmd({ cmd: 'start' });
  await third.ready;
  await waitFor(() => third.pending().length === 0, 'the outbox to drain');
  assert.deepEqual((await fixture.cmd({ cmd: 'get', table: 'users', key: 'user_002' })).result, { name: 'Written offline' });
  const calls = (await fixture.cmd({ cmd: 'calls' })).result.filter((call) => call[3] === mid);
  assert.equal(calls.length, 1, 'sent exactly once');
  third.close();

  const fourth = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.deepEqual(fourth.pending(), []);
  await fourth.ready;
  assert.deepEqual(fourth.pending(), [], 'nothing left in the outbox store');
  assert.deepEqual(await fourth.getAll('users'), { user_001: { name: 'Ada' }, user_002: { name: 'Written offline' } });
  fourth.close();
});

test('a reset (new epoch) replaces the stored tables atomically', { skip }, async () => {
  const fixture = await startFixture();
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'old', data: { name: 'Old' } });
  const indexedDB = new IDBFactory();
  const first = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  await first.ready;
  first.close();
  await fixture.cmd({ cmd: 'start', fresh: true });
  await fixture.cmd({ cmd: 'sync', table: 'users', key: 'new', data: { name: 'New' } });
  const second = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.deepEqual(await second.getAll('users'), { old: { name: 'Old' } }, 'the stored mirror first');
  await second.ready;
  assert.deepEqual(await second.getAll('users'), { new: { name: 'New' } });
  second.close();
  const third = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.deepEqual(await third.getAll('users'), { new: { name: 'New' } }, 'and so is IndexedDB');
  third.close();
});

test('two tabs on one database: a new table upgrades the database and neither wedges', { skip }, async () => {
  const fixture = await startFixture();
  const indexedDB = new IDBFactory();
  const a = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  const b = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  await Promise.all([a.ready, b.ready]);
  await fixture.cmd({ cmd: 'define_table', name: 'late', schema: { key: 'id', fields: null } });
  await fixture.cmd({ cmd: 'sync', table: 'late', key: 'x', data: { v: 1 } });
  await waitFor(async () => (await a.get('late', 'x')) && (await b.get('late', 'x')), 'both tabs to see the new table');
  assert.equal(await a.create('messages', 'from_a', { text: 'a' }), true);
  assert.equal(await b.create('messages', 'from_b', { text: 'b' }), true);
  await waitFor(async () => (await a.get('messages', 'from_b')) && (await b.get('messages', 'from_a')), 'each tab to see the other\'s write');
  a.close();
  b.close();
  const instance = fixture.url.split('/').pop();
  const db = await openDatabase(indexedDB, `dsn-sync/${instance}`);
  assert.ok(db.objectStoreNames.contains('late'));
  db.close();
  const c = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.deepEqual(await c.get('late', 'x'), { v: 1 }, 'the new table\'s records were stored');
  c.close();
});

// IndexedDB that exists but refuses to open, as a browser's does in a sandboxed or
// third-party frame, in private browsing or on a full disk: the open request fails
// (asynchronously, with a DOMException), or open() throws at once.
function refusingFactory(name, { throwAtOnce = false } = {}) {
  const factory = {
    opens: 0,
    open() {
      factory.opens++;
      const error = new DOMException(`refused for the test (${name})`, name);
      if (throwAtOnce) throw error;
      const request = { result: undefined, error: null };
      setTimeout(() => {
        request.error = error;
        request.onerror?.({ target: request });
      }, 1);
      return request;
    },
  };
  return factory;
}

function statusesOf(client) {
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  return statuses;
}

const refusals = [
  ['UnknownError', {}],            // Chrome: storage denied to a third-party frame, or no backing store
  ['InvalidStateError', {}],       // Firefox's private browsing before 115
  ['QuotaExceededError', {}],
  ['SecurityError', { throwAtOnce: true }], // an opaque origin: open() throws
];

for (const [name, how] of refusals) {
  test(`IndexedDB refuses to open (${name}${how.throwAtOnce ? ', thrown at once' : ''}): the mirror is kept in memory, said once through onStatus`, async (t) => {
    const fixture = await startFixture();
    await fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada' } });
    const indexedDB = refusingFactory(name, how);
    const client = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
    t.after(() => client.close());
    const statuses = statusesOf(client);
    const progress = [];
    client.onSync((p) => progress.push(p));
    await client.ready;
    const notices = statuses.filter((s) => s.code === 'no_persistence');
    assert.equal(notices.length, 1, JSON.stringify(statuses));
    assert.equal(notices[0].state, 'connecting', 'a notice, not a state of its own');
    assert.match(notices[0].message, new RegExp(`${name}.*memory`));
    const noticeAt = statuses.findIndex((s) => s.code === 'no_persistence');
    assert.ok(noticeAt < statuses.findIndex((s) => s.state === 'online'), 'said before the first answer');
    assert.ok(!statuses.some((s) => s.state === 'error'), JSON.stringify(statuses));
    assert.equal(statuses.at(-1).state, 'online');
    assert.equal(indexedDB.opens, 1, 'asked once, not retried in a loop');

    // Everything else works as with no IndexedDB at all.
    assert.deepEqual(await client.get('users', 'user_001'), { name: 'Ada' });
    assert.equal(await client.create('users', 'user_002', { name: 'In memory' }), true);
    assert.deepEqual((await fixture.cmd({ cmd: 'get', table: 'users', key: 'user_002' })).result, { name: 'In memory' });
    await fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_003', data: { name: 'Pulled' } });
    await waitFor(async () => (await client.get('users', 'user_003'))?.name === 'Pulled', 'a pulled change');
    assert.ok(client.cursor.seq > 0);
    assert.equal(progress.at(-1).pending, 0);
    assert.equal(indexedDB.opens, 1, 'and never again');
    assert.equal(statuses.filter((s) => s.code === 'no_persistence').length, 1, 'said once');
  });
}

test('reading globalThis.indexedDB throws (storage blocked): memory, said once, not a crash of connectDSN', async (t) => {
  const fixture = await startFixture();
  Object.defineProperty(globalThis, 'indexedDB', {
    configurable: true,
    get() {
      throw new DOMException('The operation is insecure.', 'SecurityError');
    },
  });
  t.after(() => delete globalThis.indexedDB);
  const client = connectDSN(fixture.url, fixture.token, FAST);
  t.after(() => client.close());
  const statuses = statusesOf(client);
  await client.ready;
  assert.deepEqual(statuses.filter((s) => s.code === 'no_persistence').map((s) => s.message.includes('SecurityError')), [true]);
  assert.equal(await client.create('messages', 'blocked_1', { text: 'kept in memory' }), true);
});

test('a factory that fails otherwise (a TypeError: a bug, not a refusal) still stops the client in state error', async (t) => {
  const fixture = await startFixture();
  const broken = {
    open() {
      throw new TypeError('this is not an IndexedDB factory');
    },
  };
  const client = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB: broken });
  t.after(() => client.close());
  const statuses = statusesOf(client);
  await assert.rejects(client.ready, TypeError);
  assert.deepEqual([statuses.at(-1).state, statuses.at(-1).code], ['error', 'TypeError']);
  assert.match(statuses.at(-1).message, /could not be opened: this is not an IndexedDB factory/);
  assert.ok(!statuses.some((s) => s.code === 'no_persistence'));
});

test('an IndexedDB that opens says nothing of persistence; a reload finds the stored cursor and outbox before any answer', { skip }, async () => {
  const fixture = await startFixture();
  const indexedDB = new IDBFactory();
  const first = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  const statuses = statusesOf(first);
  await first.ready;
  assert.ok(!statuses.some((s) => s.code === 'no_persistence'), JSON.stringify(statuses));
  const stored = first.cursor;
  first.close();

  await fixture.cmd({ cmd: 'stop' });
  const second = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  second.create('users', 'queued_1', { name: 'Queued' }).catch(() => {});
  await waitFor(() => second._outbox[0]?.id !== undefined, 'the write to reach the outbox store');
  second.close();

  const third = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  const progress = [];
  third.onSync((p) => progress.push(p));
  await third.getAll('users');
  assert.deepEqual(third.cursor, stored, 'the stored cursor, with the server still down');
  assert.deepEqual(third.schema.users, { key: 'user_id', fields: ['name', 'email', 'cart', 'status'] });
  assert.ok(Object.isFrozen(third.cursor) && Object.isFrozen(third.schema.users));
  await waitFor(() => progress.length === 1, 'the first onSync call');
  assert.deepEqual(progress[0], { cursor: stored, pending: 1 });
  await fixture.cmd({ cmd: 'start' });
  await waitFor(() => progress.at(-1).pending === 0, 'the outbox to drain');
  third.close();
});
