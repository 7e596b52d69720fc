// Subscriptions (PROTOCOL section 7) in dsn_client.js, against a live dsn_sync.py
// (test/subs_server.py: `messages` with a room and an author each, `rooms`, and the
// subscriptions `room` and `author`): subscribe() and ready after a full reset of the set
// and after a partial one, both paged; rows entering and leaving through updates of the
// filtered field; two subscriptions that overlap; close() dropping only the rows no other
// subscription holds, and shared handles; refusals; an optimistic write outside every
// subscription shown at once and gone after its ack; a reload while offline keeping the
// rows (IndexedDB, on fake-indexeddb), and a restored subscription the page no longer
// asks for released after restoreGrace; streamed pulls; a server without subscriptions.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { fakeIndexedDB, fakeServer, startFixture, waitFor } from './helpers.mjs';
import { connectDSN, DSNError, _internals } from '../dsn_client.js';

const FAST = { retryMin: 30, retryMax: 300, wait: 5 };
const IDBFactory = await fakeIndexedDB();

/** A fixture of test/subs_server.py with `messages` seeded: {key: {room, author, text}}. */
async function server(t, messages = {}, pageSize = 5000) {
  const fixture = await startFixture('subs_server.py', [pageSize], { t });
  for (const [key, data] of Object.entries(messages)) await fixture.cmd({ cmd: 'sync', table: 'messages', key, data });
  return fixture;
}

function connect(t, fixture, options = {}) {
  const client = connectDSN(fixture.url, fixture.token, { ...FAST, ...options });
  t.after(() => client.close());
  return client;
}

const keys = async (client, table = 'messages') => Object.keys(await client.getAll(table)).sort();
const isCode = (code) => (error) => {
  assert.ok(error instanceof DSNError, `expected a DSNError, got ${error}`);
  assert.equal(error.code, code, error.message);
  return true;
};

const SEED = {
  l1: { room: 'lobby', author: 'ada', text: 'hello' },
  l2: { room: 'lobby', author: 'bob', text: 'hi' },
  l3: { room: 'lobby', author: 'cy', text: 'hey' },
  d1: { room: 'dev', author: 'ada', text: 'build is green' },
  d2: { room: 'dev', author: 'bob', text: 'ship it' },
  o1: { room: 'ops', author: 'cy', text: 'pager' },
};

test('ids are derived from name and canonical params; a first visit loads the set by a paged full reset', async (t) => {
  const fixture = await server(t, SEED, 2);
  await fixture.cmd({ cmd: 'sync', table: 'rooms', key: 'lobby', data: { title: 'Lobby' } });
  await fixture.cmd({ cmd: 'sync', table: 'rooms', key: 'dev', data: { title: 'Dev' } });
  const { subscriptionId } = _internals;
  assert.equal(subscriptionId('room', { a: 1, b: [1, { y: 2, x: 1 }] }), subscriptionId('room', { b: [1, { x: 1, y: 2 }], a: 1 }));
  assert.notEqual(subscriptionId('room', { room: 'lobby' }), subscriptionId('room', { room: 'dev' }));
  assert.match(subscriptionId('room', {}), /^[A-Za-z0-9_-]{22}$/);

  const client = connect(t, fixture);
  const lobby = client.subscribe('room', { room: 'lobby' }); // before the first sync: a full reset of the set
  assert.equal(lobby.id, subscriptionId('room', { room: 'lobby' }));
  assert.equal(lobby.name, 'room');
  assert.deepEqual(lobby.params, { room: 'lobby' });
  assert.ok(Object.isFrozen(lobby) && Object.isFrozen(lobby.params));
  await lobby.ready;
  assert.deepEqual(await keys(client), ['l1', 'l2', 'l3'], 'three pages of two (page_size 2) made one mirror');
  assert.deepEqual(await client.getAll('rooms'), { lobby: { title: 'Lobby' } });
  assert.deepEqual(client._members.get('messages').get('l1'), [lobby.id]);

  // A second subscription after the first sync: a partial reset, paged too, the
  // cursor unmoved, the rest of the mirror untouched.
  const before = client.cursor;
  const seen = [];
  client.onDataChange('messages', (all) => seen.push(Object.keys(all).sort()));
  const dev = client.subscribe('room', { room: 'dev' });
  await dev.ready;
  assert.deepEqual(await keys(client), ['d1', 'd2', 'l1', 'l2', 'l3']);
  assert.deepEqual(await client.getAll('rooms'), { lobby: { title: 'Lobby' }, dev: { title: 'Dev' } });
  assert.ok(client.cursor.seq >= before.seq);
  assert.ok(!seen.some((keys) => keys.length && !keys.includes('l1')), 'the lobby rows never left while dev came in');
  // Another handle of the same name and params is the same subscription, ready at once.
  const again = client.subscribe('room', { room: 'dev' });
  assert.equal(again.id, dev.id);
  await again.ready;
  assert.equal(client._subs.size, 2);
});

for (const stream of [false, true]) test(`rows enter and leave a subscription through updates of the filtered field${stream ? ' (streamed pulls)' : ''}`, async (t) => {
  const fixture = await server(t, SEED);
  const client = connect(t, fixture, { stream });
  await client.ready;
  const lobby = client.subscribe('room', { room: 'lobby' });
  await lobby.ready;
  let latest = null;
  client.onDataChange('messages', (all) => {
    latest = all;
  });
  await waitFor(() => latest, 'the first onDataChange call');

  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'd1', data: { room: 'lobby', author: 'ada', text: 'moved in' } });
  await waitFor(() => latest.d1, 'd1 to enter with its move into the lobby');
  assert.deepEqual(latest.d1, { room: 'lobby', author: 'ada', text: 'moved in' }, 'the whole record came');

  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l2', data: { room: 'ops', author: 'bob', text: 'moved out' } });
  await waitFor(() => !latest.l2, 'l2 to leave with its move out of the lobby');
  await fixture.cmd({ cmd: 'remove', table: 'messages', key: 'l3' });
  await waitFor(() => !latest.l3, 'l3 to leave with its deletion');
  // A change outside the subscription changes nothing here, yet the cursor moves past it.
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'o1', data: { room: 'ops', author: 'cy', text: 'still ops' } });
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l1', data: { room: 'lobby', author: 'ada', text: 'edited' } });
  await waitFor(() => latest.l1.text === 'edited', 'the edit of l1');
  assert.deepEqual(Object.keys(latest).sort(), ['d1', 'l1']);
  assert.equal(await client.get('messages', 'o1'), undefined);
});

test('two overlapping subscriptions: a row both select comes once, with both ids, and close() drops only what no other holds', async (t) => {
  const fixture = await server(t, SEED);
  const client = connect(t, fixture);
  await client.ready;
  const lobby = client.subscribe('room', { room: 'lobby' });
  const ada = client.subscribe('author', { author: 'ada' });
  await Promise.all([lobby.ready, ada.ready]);
  assert.deepEqual(await keys(client), ['d1', 'l1', 'l2', 'l3']);
  assert.deepEqual([...client._members.get('messages').get('l1')].sort(), [ada.id, lobby.id].sort());
  assert.deepEqual(client._members.get('messages').get('d1'), [ada.id]);

  // A change to the shared row keeps both ids; one that moves it out of the lobby keeps ada's.
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l1', data: { room: 'ops', author: 'ada', text: 'now in ops' } });
  await waitFor(() => client._tables.get('messages').get('l1')?.room === 'ops', 'l1 in ops');
  assert.deepEqual(client._members.get('messages').get('l1'), [ada.id]);
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l1', data: { room: 'lobby', author: 'ada', text: 'back' } });
  await waitFor(() => client._members.get('messages').get('l1')?.length === 2, 'l1 back in both');

  // A second handle of the lobby: closing one of the two releases nothing.
  const lobbyAgain = client.subscribe('room', { room: 'lobby' });
  await lobbyAgain.ready;
  lobby.close();
  lobby.close(); // twice is once
  assert.deepEqual(await keys(client), ['d1', 'l1', 'l2', 'l3']);
  // The last handle of the lobby: its rows leave, except l1, which ada's holds.
  lobbyAgain.close();
  await waitFor(async () => (await keys(client)).join() === 'd1,l1', 'the unshared lobby rows to leave');
  assert.deepEqual(client._members.get('messages').get('l1'), [ada.id]);
  assert.deepEqual(await client.getAll('rooms'), {});
  // The feed goes on without the lobby: its changes no longer come.
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l9', data: { room: 'lobby', author: 'bob', text: 'unseen' } });
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'd9', data: { room: 'dev', author: 'ada', text: 'seen' } });
  await waitFor(async () => (await keys(client)).includes('d9'), 'ada\'s new message');
  assert.deepEqual(await keys(client), ['d1', 'd9', 'l1']);
  ada.close();
  await waitFor(async () => (await keys(client)).length === 0, 'every row to leave with the last subscription');
  assert.equal(client._subMode, true, 'subscription mode stays: the union of nothing is empty');
});

test('a refused subscription: ready rejects with the code, it is dropped with its rows, and the feed goes on without it', async (t) => {
  const fixture = await server(t, SEED);
  const client = connect(t, fixture);
  await client.ready;
  const lobby = client.subscribe('room', { room: 'lobby' });
  const vault = client.subscribe('room', { room: 'vault' });
  const bad = client.subscribe('room', { room: 5 });
  const unknown = client.subscribe('no_such_subscription', {});
  await assert.rejects(vault.ready, isCode('forbidden'));
  await assert.rejects(bad.ready, isCode('invalid'));
  await assert.rejects(unknown.ready, (error) => isCode('invalid')(error) && /no subscription/.test(error.message));
  await lobby.ready;
  assert.deepEqual([...client._subs.keys()], [lobby.id]);
  assert.deepEqual(await keys(client), ['l1', 'l2', 'l3']);
  vault.close(); // a refused handle's close() does nothing
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l4', data: { room: 'lobby', author: 'ada', text: 'still live' } });
  await waitFor(async () => (await keys(client)).includes('l4'), 'a change after the refusals');
  assert.equal(client.cursor !== null, true);
  assert.throws(() => client.subscribe('room', 'lobby'), TypeError);
  assert.throws(() => client.subscribe('', {}), TypeError);
});

test('an optimistic write outside every subscription shows at once, is confirmed, then leaves the mirror', async (t) => {
  const fixture = await server(t, SEED);
  const client = connect(t, fixture, { wait: 20 }); // a long poll in flight must not hold the departure back
  await client.ready;
  const lobby = client.subscribe('room', { room: 'lobby' });
  await lobby.ready;
  let latest = null;
  client.onDataChange('messages', (all) => {
    latest = all;
  });
  await waitFor(() => latest, 'the first onDataChange call');
  const outside = client.create('messages', 'w1', { room: 'dev', author: 'ada', text: 'to dev' });
  const inside = client.create('messages', 'w2', { room: 'lobby', author: 'ada', text: 'to lobby' });
  assert.deepEqual(await client.get('messages', 'w1'), { room: 'dev', author: 'ada', text: 'to dev' }, 'shown at once');
  assert.ok(latest.w1 && latest.w2, 'listeners saw both writes at once');
  assert.equal(await outside, true);
  assert.equal(await inside, true);
  await waitFor(() => !latest.w1, 'w1 to leave once the feed passed its ack');
  assert.deepEqual(latest.w2, { room: 'lobby', author: 'ada', text: 'to lobby' });
  assert.deepEqual(client._members.get('messages').get('w2'), [lobby.id]);
  assert.deepEqual((await fixture.cmd({ cmd: 'get', table: 'messages', key: 'w1' })).result, { room: 'dev', author: 'ada', text: 'to dev' });
  assert.equal(client._probation.size, 0);
});

test('a reload while offline keeps the subscriptions and their rows; one not asked for again is released after restoreGrace', { skip: IDBFactory ? false : 'fake-indexeddb is not installed (`npm ci`)' }, async (t) => {
  const fixture = await server(t, SEED);
  const indexedDB = new IDBFactory();
  const first = connect(t, fixture, { indexedDB });
  const lobby = first.subscribe('room', { room: 'lobby' });
  const ada = first.subscribe('author', { author: 'ada' });
  await Promise.all([lobby.ready, ada.ready]);
  assert.deepEqual(await keys(first), ['d1', 'l1', 'l2', 'l3']);
  first.close();

  await fixture.cmd({ cmd: 'stop' });
  const second = connect(t, fixture, { indexedDB, restoreGrace: 200 });
  assert.deepEqual(await keys(second), ['d1', 'l1', 'l2', 'l3'], 'read from IndexedDB with the server down');
  assert.deepEqual([...second._members.get('messages').get('l1')].sort(), [ada.id, lobby.id].sort(), 'membership survived');
  const lobbyAgain = second.subscribe('room', { room: 'lobby' });
  await lobbyAgain.ready; // held already: ready offline
  // Offline, the grace passes without a sync: ada's rows stay readable.
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(await keys(second), ['d1', 'l1', 'l2', 'l3']);
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l5', data: { room: 'lobby', author: 'bob', text: 'while away' } });
  await fixture.cmd({ cmd: 'start' });
  // Back online: the lobby goes on from its stored cursor; ada's, never asked for again, goes.
  await waitFor(async () => (await keys(second)).join() === 'l1,l2,l3,l5', 'the lobby with l5, without ada\'s d1', 10000);
  assert.deepEqual([...second._subs.keys()], [lobbyAgain.id]);
  assert.deepEqual(second._members.get('messages').get('l1'), [lobby.id]);
  second.close();

  // What IndexedDB holds now: the lobby's rows alone, each with its membership.
  const third = connect(t, fixture, { indexedDB });
  const stored = await third._storage.load();
  assert.deepEqual(Object.keys(stored.subs), [lobby.id]);
  assert.deepEqual(stored.cursor.subs, [lobby.id]);
  assert.deepEqual([...stored.tables.get('messages').keys()].sort(), ['l1', 'l2', 'l3', 'l5']);
  assert.deepEqual(stored.tables.get('messages').get('l5'), [{ room: 'lobby', author: 'bob', text: 'while away' }, [lobby.id]]);
});

test('a server without subscriptions (no "subs": true in hello): ready rejects with unsupported, the status says why, no pull carries subs', async (t) => {
  const server = fakeServer((request) => {
    if (request.op === 'hello') return { instance: '00112233445566ff', epoch: 'e1', seq: 3, sv: 1, tables: { messages: { key: 'id', fields: null } }, pv: '1.1' };
    if (request.op === 'pull' && !request.subs) return { epoch: 'e1', seq: 3, sv: 1, tables: { messages: { key: 'id', fields: null } }, reset: true, more: false, records: { messages: { m1: { room: 'lobby' } } } };
    return { ok: false, error: { code: 'bad_request', message: 'this stand-in must never be asked with subs' } };
  });
  const client = connectDSN('http://127.0.0.1:9/sync/00112233445566ff', server.token, { ...FAST, fetch: server.fetch, retryMin: 5000 });
  t.after(() => client.close());
  await client.ready;
  const statuses = [];
  client.onStatus((status) => statuses.push(status));
  const lobby = client.subscribe('room', { room: 'lobby' });
  await assert.rejects(lobby.ready, (error) => isCode('unsupported')(error) && /does not implement subscriptions/.test(error.message));
  await waitFor(() => statuses.some((status) => status.code === 'unsupported'), 'the status to say why');
  assert.ok(!server.requests.some((request) => request.subs), 'no pull with subs went to a server that does not know them');
});

test('a large set goes into IndexedDB in chunks, membership included; closing it leaves nothing readable after a reload', { skip: IDBFactory ? false : 'fake-indexeddb is not installed (`npm ci`)' }, async (t) => {
  const fixture = await server(t, SEED);
  await fixture.cmd({ cmd: 'room_bulk', room: 'big', count: 2500 }); // over CHUNKED_RESET (2000)
  const indexedDB = new IDBFactory();
  const first = connect(t, fixture, { indexedDB });
  const big = first.subscribe('room', { room: 'big' }); // a first visit: a full reset of the set
  const lobby = first.subscribe('room', { room: 'lobby' });
  await Promise.all([big.ready, lobby.ready]);
  assert.equal((await keys(first)).length, 2503);
  first.close();

  const second = connect(t, fixture, { indexedDB });
  const stored = await second._storage.load();
  assert.ok(stored.tables.get('messages').size === 2503, 'read back through the chunks');
  assert.deepEqual(stored.tables.get('messages').get('m02499'), [{ room: 'big', author: 'bulk', text: '2499' }, [big.id]]);
  const bigAgain = second.subscribe('room', { room: 'big' });
  const lobbyAgain = second.subscribe('room', { room: 'lobby' });
  await Promise.all([bigAgain.ready, lobbyAgain.ready]);
  assert.equal((await keys(second)).length, 2503);
  bigAgain.close();
  await waitFor(async () => (await keys(second)).length === 3, 'the big room to leave');
  second.close();

  // The chunks still hold the big room; the tombstones over them must win after a reload.
  const third = connect(t, fixture, { indexedDB });
  assert.deepEqual(await keys(third), ['l1', 'l2', 'l3']);
});

test('a first subscribe() while a paged reset of whole tables is coming in: that reset is dropped, and the mirror is the subscription\'s', async (t) => {
  const fixture = await server(t, SEED, 1); // one record per page: six pages of messages
  const client = connect(t, fixture);
  let lobby = null;
  client.onStatus((status) => {
    if (status.reset && !lobby) lobby = client.subscribe('room', { room: 'lobby' });
  });
  await waitFor(() => lobby, 'the first reset page');
  await lobby.ready;
  await client.ready;
  assert.deepEqual(await keys(client), ['l1', 'l2', 'l3']);
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l4', data: { room: 'lobby', author: 'ada', text: 'later' } });
  await waitFor(async () => (await keys(client)).includes('l4'), 'a later lobby message');
  assert.deepEqual(await keys(client), ['l1', 'l2', 'l3', 'l4'], 'nothing of the whole-table reset stayed');
});

test('a client long away gets a full reset of its set instead of changes, and comes back right', { skip: IDBFactory ? false : 'fake-indexeddb is not installed (`npm ci`)' }, async (t) => {
  const fixture = await server(t, SEED, 2); // more than two changes due: a reset of the set
  const indexedDB = new IDBFactory();
  const first = connect(t, fixture, { indexedDB });
  const lobby = first.subscribe('room', { room: 'lobby' });
  const ada = first.subscribe('author', { author: 'ada' });
  await Promise.all([lobby.ready, ada.ready]);
  first.close();
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l1', data: { room: 'ops', author: 'cy', text: 'left both' } });
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l2', data: { room: 'lobby', author: 'bob', text: 'edited' } });
  await fixture.cmd({ cmd: 'remove', table: 'messages', key: 'l3' });
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'o1', data: { room: 'ops', author: 'ada', text: 'now ada\'s' } });
  await fixture.cmd({ cmd: 'sync', table: 'messages', key: 'l6', data: { room: 'lobby', author: 'ada', text: 'new, in both' } });

  const second = connect(t, fixture, { indexedDB });
  const resets = [];
  second.onStatus((status) => status.reset && resets.push(status.reset));
  second.subscribe('room', { room: 'lobby' });
  second.subscribe('author', { author: 'ada' });
  await waitFor(async () => (await keys(second)).join() === 'd1,l2,l6,o1', 'the mirror after the reset of the set', 10000);
  assert.ok(resets.some((reset) => reset.done && reset.pages > 1), 'a paged reset came');
  assert.deepEqual(await second.get('messages', 'l2'), { room: 'lobby', author: 'bob', text: 'edited' });
  assert.deepEqual([...second._members.get('messages').get('l6')].sort(), [ada.id, lobby.id].sort());
  assert.deepEqual(second._members.get('messages').get('o1'), [ada.id]);
});
