// A large reset is stored in chunks (issue 13 part 4, a fast first load): the data stays
// readable after a reload (chunks, then the records changed since, deletes included), and
// a later reset replaces it whole. On fake-indexeddb against the live Python server; the
// speed itself is measured by bench/w3_browser.mjs in Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { fakeIndexedDB, startFixture, waitFor } from './helpers.mjs';
import { connectDSN, _internals } from '../dsn_client.js';

const IDBFactory = await fakeIndexedDB();
const skip = IDBFactory ? false : 'fake-indexeddb is not installed (run `npm install` for the dev dependency)';
const FAST = { retryMin: 30, retryMax: 300, wait: 5 };

function storeNames(factory, name) {
  return new Promise((resolve, reject) => {
    const request = factory.open(name);
    request.onsuccess = () => {
      const names = [...request.result.objectStoreNames];
      request.result.close();
      resolve(names);
    };
    request.onerror = () => reject(request.error);
  });
}

test('a reset of 3,000 records is stored in chunks, readable after a reload with changes and deletes over it', { skip }, async (t) => {
  const fixture = await startFixture('fixture_server.py', [], { t });
  await fixture.cmd({ cmd: 'bulk', table: 'metrics', count: 3000 });
  const indexedDB = new IDBFactory();
  const dbName = `dsn-sync/${fixture.url.split('/sync/')[1]}`;

  const first = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  assert.equal(Object.keys(await first.getAll('metrics')).length, 3000);
  assert.ok((await storeNames(indexedDB, dbName)).includes('#chunks'), 'a large reset made the #chunks store');
  // Changes after the reset go record by record over the chunks: an update, a delete, a new key.
  await fixture.cmd({ cmd: 'sync', table: 'metrics', key: 'r00007', data: { n: -7 } });
  await fixture.cmd({ cmd: 'remove', table: 'metrics', key: 'r00008' });
  assert.equal(await first.create('metrics', 'mine', { n: 'client' }), true);
  await fixture.cmd({ cmd: 'remove', table: 'metrics', key: 'mine' });
  await waitFor(async () => (await first.get('metrics', 'r00008')) === undefined && (await first.get('metrics', 'mine')) === undefined, 'the changes');
  first.close();

  // A reload with the server down reads chunks, then the changes over them.
  await fixture.cmd({ cmd: 'stop' });
  const reloaded = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  const all = await reloaded.getAll('metrics');
  reloaded.close();
  assert.equal(Object.keys(all).length, 2999);
  assert.deepEqual(all.r00007, { n: -7 });
  assert.equal(all.r00008, undefined, 'a delete over a chunk stays deleted');
  assert.equal(all.mine, undefined);
  assert.deepEqual(all.r02999, { n: 2999 });

  // A restart without state (new epoch, 10 records): the reset replaces everything,
  // chunks and overrides included.
  await fixture.cmd({ cmd: 'start', fresh: true });
  await fixture.cmd({ cmd: 'bulk', table: 'metrics', count: 10 });
  const fresh = connectDSN(fixture.url, fixture.token, { ...FAST, indexedDB });
  await fresh.ready;
  assert.equal(Object.keys(await fresh.getAll('metrics')).length, 10);
  fresh.close();
  const storage = new _internals.IndexedDBStorage(indexedDB, dbName);
  const loaded = await storage.load();
  storage.close();
  assert.deepEqual([...loaded.tables.get('metrics').keys()].sort(), Array.from({ length: 10 }, (_, i) => `r0000${i}`));
});
