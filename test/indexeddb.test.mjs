// The IndexedDB mirror, on fake-indexeddb (a dev-only dependency: `npm install`): one
// object store per table, reads from IndexedDB after a reload with the server down, a
// write made offline surviving a reload and sent exactly once, two "tabs" on one
// database through a schema upgrade. The same code runs on a browser's IndexedDB.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { connectDSN } from '../dsn_client.js';

let IDBFactory = null;
try {
  ({ IDBFactory } = await import('fake-indexeddb'));
} catch {
  IDBFactory = null;
}
const skip = IDBFactory ? false : 'fake-indexeddb is not installed (run `npm install` for the dev dependency)';

const here = path.dirname(fileURLToPath(import.meta.url));
const FAST = { retryMin: 30, retryMax: 300, wait: 5 };
const fixtures = [];
after(() => {
  for (const fixture of fixtures) fixture.kill();
});

async function startFixture() {
  const child = spawn(process.env.PYTHON || 'python3', [path.join(here, 'fixture_server.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const nextLine = async () => JSON.parse((await lines.next()).value);
  const hello = await nextLine();
  let queue = Promise.resolve();
  const fixture = {
    ...hello,
    cmd(command) {
      const reply = queue.then(() => {
        child.stdin.write(JSON.stringify(command) + '\n');
        return nextLine();
      });
      queue = reply.catch(() => {});
      return reply;
    },
    kill() {
      child.stdin.end();
      child.kill();
    },
  };
  fixtures.push(fixture);
  return fixture;
}

async function waitFor(condition, what, timeout = 10000) {
  const start = Date.now();
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

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
