// dsn_client.js in a real browser: headless Chromium (Debian's `chromium`) driven by
// playwright-core, against a live dsn_sync.py server (test/browser_fixture.py) started on
// a free port. The page (test/browser/app.html) is served from another origin (a static
// server on another port) and imports the client from the sync server's /dsn_client.js:
// a cross-origin module import that needs CORS, and after a reload with the server down,
// the HTTP cache. Each test has its own server (so its own IndexedDB database) and its
// own browser context (its own storage and cache). Every page must log no errors but
// the network failures Chromium itself reports while the sync server is down.
//
// Needs /usr/bin/chromium (`apt-get install -y chromium`) and `npm install`; without
// either the tests are skipped, loudly (or fail, with REQUIRE_BROWSER=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  browserSupport,
  launchChromium,
  screenshot,
  serveStatic,
  watchConsole,
} from './browser/harness.mjs';
import { startFixture, waitFor } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

// Short backoff so that outages cost seconds; the defaults (0.5 s doubling to 30 s) are for people.
const FAST = { retryMin: 100, retryMax: 800 };
const TEST_TIMEOUT = 30000;

const support = await browserSupport();
if (!support.ok) {
  console.error(`\n!!!!!!!! SKIPPING the real-browser tests (test/browser.test.mjs): ${support.reason} !!!!!!!!\n`);
}

let browser;
let site;

before(async () => {
  if (!support.ok) return;
  browser = await launchChromium();
  site = await serveStatic(path.join(here, 'browser'));
});

after(async () => {
  await browser?.close();
  await site?.close();
});

/** A test that needs Chromium; skipped with the reason when it is not here. */
function browserTest(name, body) {
  test(name, { timeout: TEST_TIMEOUT }, async (t) => {
    if (!support.ok) {
      // CI sets REQUIRE_BROWSER=1, so that a machine without Chromium fails instead.
      if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
      t.skip(`SKIPPED, no real browser: ${support.reason}`);
      return;
    }
    await body(t);
  });
}

/** A live server, a fresh browser context with its console watched, and helpers; all
 * torn down after the test, which fails if a page logged an error not allowed. */
async function setup(t) {
  const fixture = await startFixture('browser_fixture.py');
  const syncOrigin = new URL(fixture.url).origin;
  assert.notEqual(syncOrigin, site.origin, 'the page must come from another origin than the sync server');
  const context = await browser.newContext();
  const console_ = watchConsole(context);
  t.after(async () => {
    await context.close();
    await fixture.kill();
    assert.deepEqual(console_.unexpected().map(({ kind, text, url }) => ({ kind, text, url })), [], 'the pages logged errors');
  });

  const appUrl = site.url('app.html') + '#' + new URLSearchParams({ url: fixture.url, token: fixture.token, options: JSON.stringify(FAST) });

  /** Opens the app in a new tab and waits for its script to have run. */
  async function open() {
    const page = await context.newPage();
    await page.goto(appUrl);
    await started(page);
    return page;
  }

  return {
    fixture,
    context,
    console: console_,
    syncOrigin,
    instance: fixture.url.split('/sync/')[1],
    open,
    /** While the sync server is down, Chromium logs each refused request as a console
     * error ("Failed to load resource: net::ERR_CONNECTION_REFUSED" and the like); those,
     * for the sync server's own URLs, are expected. */
    allowOutageErrors() {
      console_.allow((entry) => entry.kind === 'console' && /net::ERR_/.test(entry.text) && entry.url.startsWith(syncOrigin + '/sync/'));
    },
    /** After a restart with a new state, the client's rotated endpoint is unknown to the
     * server: the protocol's 404, after which the client says hello at the base path.
     * Chromium logs that answer as a console error. */
    allowRotated404() {
      console_.allow((entry) => entry.kind === 'console' && /status of 404/.test(entry.text) && entry.url.startsWith(fixture.url + '/'));
    },
    async backendCalls(table, key) {
      const { result } = await fixture.cmd({ cmd: 'calls' });
      return result.filter(([, t2, k]) => t2 === table && (key === undefined || k === key));
    },
  };
}

/** Waits for the page's module script to have run, and fails with what it reported if
 * it could not import the client. */
async function started(page) {
  await page.waitForFunction(() => window.started === true, null, { timeout: 10000 });
  const loadError = await page.evaluate(() => window.loadError ?? null);
  assert.equal(loadError, null, `the page could not import ${await page.evaluate(() => window.moduleUrl)}: ${loadError}`);
}

const ready = (page) => page.evaluate(() => window.dsn.ready.then(() => true));
const getAll = (page, table) => page.evaluate((table) => window.dsn.getAll(table), table);
const latest = (page, table) => page.evaluate((table) => window.latest(table) ?? null, table);
const pending = (page) => page.evaluate(() => window.dsn.pending());
const write = (page, name, op, table, key, data) =>
  page.evaluate(([name, op, table, key, data]) => window.track(name, window.dsn[op](table, key, ...(data === null ? [] : [data]))), [name, op, table, key, data ?? null]);
const writeState = (page, name) => page.evaluate((name) => window.writes[name] ?? null, name);
async function settled(page, name, timeout = 10000) {
  return waitFor(async () => {
    const state = await writeState(page, name);
    return state && state.state !== 'pending' && state;
  }, `write ${name} to settle`, timeout);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The IndexedDB databases this page's origin holds, each with its object stores; for
 * `table`, also its records as {key: record}. Every database is closed at once again so
 * that it never blocks the client's upgrades. */
function inspectIndexedDB(page, table) {
  return page.evaluate(async (table) => {
    const request = (r) => new Promise((resolve, reject) => {
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const out = {};
    for (const { name } of await indexedDB.databases()) {
      const db = await request(indexedDB.open(name));
      try {
        const stores = [...db.objectStoreNames].sort();
        const entry = { version: db.version, stores };
        if (stores.includes('#meta')) entry.cursor = await request(db.transaction('#meta').objectStore('#meta').get('cursor'));
        if (stores.includes(table)) {
          const store = db.transaction(table).objectStore(table);
          const [keys, values] = await Promise.all([request(store.getAllKeys()), request(store.getAll())]);
          entry.records = Object.fromEntries(keys.map((key, i) => [key, values[i]]));
        }
        out[name] = entry;
      } finally {
        db.close();
      }
    }
    return out;
  }, table);
}

browserTest('one IndexedDB database per server instance, one object store per table', async (t) => {
  const env = await setup(t);
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada', email: 'ada@example.com' } });
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_002', data: { name: 'Brian', email: 'brian@example.com' } });
  // A table the backend makes by syncing into it (no define_table) gets a store too.
  await env.fixture.cmd({ cmd: 'sync', table: 'adhoc', key: 'a1', data: { n: 1 } });

  const page = await env.open();
  assert.equal(await ready(page), true);
  const databases = await inspectIndexedDB(page, 'users');
  assert.deepEqual(Object.keys(databases), [`dsn-sync/${env.instance}`], 'one database, named after the server instance');
  const db = databases[`dsn-sync/${env.instance}`];
  const tables = Object.keys(db.cursor.tables).sort();
  for (const name of ['users', 'messages', 'adhoc']) assert.ok(tables.includes(name), `the schema the server sent lists ${name}: ${tables}`);
  assert.deepEqual(db.stores, ['#meta', '#outbox', ...tables].sort(), 'exactly one store per table, plus #meta and #outbox');
  assert.deepEqual(db.records, {
    user_001: { name: 'Ada', email: 'ada@example.com' },
    user_002: { name: 'Brian', email: 'brian@example.com' },
  }, "the users store holds the server's records under their keys (key field left out)");
  assert.equal(db.cursor.epoch, (await env.fixture.cmd({ cmd: 'epoch' })).result);
});

browserTest('getAll, create, update, delete and onDataChange across origins; a refusal rolls back', async (t) => {
  const env = await setup(t);
  const page = await env.context.newPage();
  const moduleResponse = page.waitForResponse((response) => response.url() === `${env.syncOrigin}/dsn_client.js`);
  await page.goto(site.url('app.html') + '#' + new URLSearchParams({ url: env.fixture.url, token: env.fixture.token, options: JSON.stringify(FAST) }));
  await started(page);

  // The module came cross-origin, with what a page on another origin and a later offline
  // reload need.
  const response = await moduleResponse;
  const headers = await response.allHeaders();
  assert.equal(response.status(), 200);
  assert.match(headers['content-type'], /javascript/);
  assert.ok(headers['access-control-allow-origin'] === '*' || headers['access-control-allow-origin'] === site.origin, `Access-Control-Allow-Origin: ${headers['access-control-allow-origin']}`);
  assert.ok(Number(/max-age=(\d+)/.exec(headers['cache-control'] ?? '')?.[1]) >= 3600, `Cache-Control: ${headers['cache-control']}`);
  assert.ok(headers.etag, 'an ETag');
  assert.notEqual(new URL(page.url()).origin, env.syncOrigin);

  assert.equal(await ready(page), true);
  assert.deepEqual(await getAll(page, 'users'), {});

  // A backend sync() reaches onDataChange with the whole table.
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada', status: 'active' } });
  await waitFor(async () => (await latest(page, 'users'))?.user_001, 'the backend sync in onDataChange');
  assert.deepEqual(await latest(page, 'users'), { user_001: { name: 'Ada', status: 'active' } });
  assert.deepEqual(await getAll(page, 'users'), { user_001: { name: 'Ada', status: 'active' } });
  assert.deepEqual(await page.evaluate(() => window.dsn.get('users', 'user_001')), { name: 'Ada', status: 'active' });

  // A page create reaches the backend handler, once, with the mid the page queued.
  await write(page, 'create', 'create', 'users', 'user_002', { name: 'Brian', email: 'brian@example.com' });
  const optimistic = await latest(page, 'users');
  assert.deepEqual(Object.keys(optimistic).sort(), ['user_001', 'user_002'], 'the create shows at once');
  assert.deepEqual(await settled(page, 'create'), { state: 'fulfilled', value: true });
  assert.deepEqual((await env.fixture.cmd({ cmd: 'get', table: 'users', key: 'user_002' })).result, { name: 'Brian', email: 'brian@example.com' });
  const creates = await env.backendCalls('users', 'user_002');
  assert.equal(creates.length, 1, JSON.stringify(creates));
  assert.equal(creates[0][0], 'create');

  await write(page, 'update', 'update', 'users', 'user_002', { status: 'away' });
  assert.deepEqual(await settled(page, 'update'), { state: 'fulfilled', value: true });
  assert.deepEqual((await env.fixture.cmd({ cmd: 'get', table: 'users', key: 'user_002' })).result, { name: 'Brian', email: 'brian@example.com', status: 'away' });
  await write(page, 'delete', 'delete', 'users', 'user_001', null);
  assert.deepEqual(await settled(page, 'delete'), { state: 'fulfilled', value: true });
  assert.equal((await env.fixture.cmd({ cmd: 'get', table: 'users', key: 'user_001' })).result, null);
  assert.deepEqual(await getAll(page, 'users'), { user_002: { name: 'Brian', email: 'brian@example.com', status: 'away' } });
  assert.deepEqual(await latest(page, 'users'), await getAll(page, 'users'));

  // A handler that says no: the promise rejects with a DSNError (the module's own class,
  // across origins) and the optimistic record is rolled back in onDataChange.
  await page.evaluate(() => window.watch('guarded'));
  await write(page, 'refused', 'create', 'guarded', 'g1', { reject: true });
  const refused = await settled(page, 'refused');
  assert.equal(refused.state, 'rejected');
  assert.equal(refused.name, 'DSNError');
  assert.equal(refused.code, 'rejected');
  await waitFor(async () => {
    const seen = await page.evaluate(() => window.deliveries.guarded.map((all) => Object.keys(all)));
    return seen.some((keys) => keys.includes('g1')) && seen.at(-1).length === 0;
  }, 'the refused create to show, then roll back');
  assert.deepEqual(await getAll(page, 'guarded'), {});

  // The page renders what onDataChange gave; the harness's screenshot helper sizes the
  // viewport and writes a PNG of that size.
  await waitFor(() => page.evaluate(() => document.querySelectorAll('#records tbody tr').length === 1), 'the page to render the table');
  const shot = path.join(os.tmpdir(), `dsn-browser-${process.pid}.png`);
  try {
    await screenshot(page, shot, { width: 640, height: 360 });
    const png = readFileSync(shot);
    assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [640, 360]);
  } finally {
    rmSync(shot, { force: true });
  }
});

browserTest('a reload with the sync server stopped imports the client from the HTTP cache and answers from IndexedDB', async (t) => {
  const env = await setup(t);
  env.allowOutageErrors();
  const page = await env.open();
  assert.equal(await ready(page), true);
  const users = {
    user_001: { name: 'Ada', email: 'ada@example.com' },
    user_002: { name: 'Brian', cart: ['apple', 'pear'] },
    user_003: { name: 'Chen', status: 'away' },
  };
  for (const [key, data] of Object.entries(users)) await env.fixture.cmd({ cmd: 'sync', table: 'users', key, data });
  await waitFor(async () => Object.keys((await latest(page, 'users')) ?? {}).length === 3, 'the three users in the page');

  // stop() keeps the same DSNSync (its records and epoch) and frees the port.
  await env.fixture.cmd({ cmd: 'stop' });
  await assert.rejects(fetch(`${env.syncOrigin}/dsn_client.js`), 'the sync server is down');
  const pageLoads = site.requests.filter((line) => line.startsWith('GET /app.html')).length;
  await page.reload();
  await started(page); // fails with the import error if Chromium did not use its cache
  assert.equal(site.requests.filter((line) => line.startsWith('GET /app.html')).length, pageLoads + 1, 'the page itself was fetched again');

  const began = Date.now();
  assert.deepEqual(await getAll(page, 'users'), users, 'getAll answers from IndexedDB');
  assert.ok(Date.now() - began < 2000, `getAll took ${Date.now() - began} ms with the server down`);
  assert.deepEqual(await page.evaluate(() => window.dsn.get('users', 'user_002')), users.user_002);
  await waitFor(async () => (await latest(page, 'users'))?.user_003, 'onDataChange from IndexedDB');
  assert.deepEqual(await latest(page, 'users'), users);
  await waitFor(() => page.evaluate(() => window.statuses.some((s) => s.state === 'offline')), "the status 'offline'");

  // A new tab opened while the server is still down (a plain navigation, not a reload)
  // imports from the cache too, and reads the same mirror.
  const other = await env.open();
  assert.deepEqual(await getAll(other, 'users'), users);
  await other.close();

  // The backend changes a record while its port is closed; the page catches up when the
  // server is back (same epoch: changes, no reset).
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_004', data: { name: 'Dana' } });
  await env.fixture.cmd({ cmd: 'start' });
  await waitFor(async () => (await latest(page, 'users'))?.user_004, 'the change made during the outage', 10000);
  assert.deepEqual(await getAll(page, 'users'), { ...users, user_004: { name: 'Dana' } });
  const statuses = await page.evaluate(() => window.statuses);
  assert.equal(statuses.at(-1).state, 'online');
  assert.ok(!statuses.some((s) => s.reset), `no reset after a restart of the same server: ${JSON.stringify(statuses)}`);
});

browserTest('the browser going offline shows at once, not when the long-poll in flight times out', async (t) => {
  // A newcomer's walkthrough: after context.setOffline(true) every tab said "online" for 24 s.
  const env = await setup(t);
  env.allowOutageErrors();
  const page = await env.open();
  assert.equal(await ready(page), true);
  await new Promise((r) => setTimeout(r, 500));  // a long-poll is in flight now
  const began = Date.now();
  await env.context.setOffline(true);
  await waitFor(() => page.evaluate(() => window.statuses.at(-1)?.state === 'offline'), "the status 'offline'", 5000);
  assert.ok(Date.now() - began < 5000, `offline after ${Date.now() - began} ms`);
  await env.context.setOffline(false);
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'back', data: { name: 'Back' } });
  await waitFor(async () => (await latest(page, 'users'))?.back, 'a change after coming back', 15000);
  assert.equal(await page.evaluate(() => window.statuses.at(-1).state), 'online');
});

browserTest('writes made while the server is down survive a reload and reach the backend exactly once', async (t) => {
  const env = await setup(t);
  env.allowOutageErrors();
  let page = await env.open();
  assert.equal(await ready(page), true);
  await page.evaluate(() => window.watch('messages'));

  await env.fixture.cmd({ cmd: 'stop' });
  await write(page, 'first', 'create', 'messages', 'm1', { text: 'written offline' });
  assert.deepEqual(await latest(page, 'messages'), { m1: { text: 'written offline' } }, 'shown at once (optimistic)');
  const queued = await waitFor(async () => (await pending(page)).length === 1 && pending(page), 'the write in the outbox');
  assert.equal(queued[0].key, 'm1');
  await sleep(300); // let the sender try (and fail) at least once
  assert.equal((await writeState(page, 'first')).state, 'pending');

  // Reload, still offline: the outbox comes back from IndexedDB, with the same mid.
  await page.reload();
  await started(page);
  await page.evaluate(() => window.watch('messages'));
  assert.deepEqual(await getAll(page, 'messages'), { m1: { text: 'written offline' } });
  assert.deepEqual(await pending(page), queued, 'the outbox survived the reload');
  await write(page, 'second', 'create', 'messages', 'm2', { text: 'also offline' });
  await write(page, 'third', 'update', 'messages', 'm1', { text: 'edited offline' });
  assert.deepEqual(await getAll(page, 'messages'), { m1: { text: 'edited offline' }, m2: { text: 'also offline' } });
  const mids = (await pending(page)).map((entry) => [entry.op, entry.key, entry.mid]);
  assert.equal(mids.length, 3);
  assert.deepEqual(await env.backendCalls('messages'), [], 'nothing reached the backend while it was down');

  await env.fixture.cmd({ cmd: 'start' });
  assert.deepEqual(await settled(page, 'second'), { state: 'fulfilled', value: true });
  assert.deepEqual(await settled(page, 'third'), { state: 'fulfilled', value: true });
  await waitFor(async () => (await pending(page)).length === 0, 'the outbox to empty');
  await sleep(1000); // long enough for a duplicate send to show up
  const calls = (await env.backendCalls('messages')).map(([op, , key, mid]) => [op, key, mid]);
  assert.deepEqual(calls, mids, 'each queued write reached its handler exactly once, in order, with its mid');
  const backend = (await env.fixture.cmd({ cmd: 'get_all', table: 'messages' })).result;
  assert.deepEqual(backend, { m1: { text: 'edited offline' }, m2: { text: 'also offline' } });
  assert.deepEqual(await getAll(page, 'messages'), backend);

  // And a new page load (online) finds the same, with an empty outbox.
  page = await env.open();
  assert.equal(await ready(page), true);
  assert.deepEqual(await getAll(page, 'messages'), backend);
  assert.deepEqual(await pending(page), []);
});

browserTest('two tabs at once see each other\'s writes and survive schema upgrades', async (t) => {
  const env = await setup(t);
  const a = await env.open();
  const b = await env.open();
  assert.equal(await ready(a), true);
  assert.equal(await ready(b), true);
  for (const page of [a, b]) await page.evaluate(() => window.watch('messages'));

  await write(a, 'fromA', 'create', 'messages', 'from-a', { text: 'hello from A' });
  assert.deepEqual(await settled(a, 'fromA'), { state: 'fulfilled', value: true });
  await waitFor(async () => (await latest(b, 'messages'))?.['from-a'], "A's write in tab B");
  await write(b, 'fromB', 'create', 'messages', 'from-b', { text: 'hello from B' });
  assert.deepEqual(await settled(b, 'fromB'), { state: 'fulfilled', value: true });
  await waitFor(async () => (await latest(a, 'messages'))?.['from-b'], "B's write in tab A");

  // Both at once, on each other's records.
  await Promise.all([
    write(a, 'editB', 'update', 'messages', 'from-b', { text: 'edited by A' }),
    write(b, 'dropA', 'delete', 'messages', 'from-a', null),
  ]);
  assert.deepEqual(await settled(a, 'editB'), { state: 'fulfilled', value: true });
  assert.deepEqual(await settled(b, 'dropA'), { state: 'fulfilled', value: true });
  const expected = { 'from-b': { text: 'edited by A' } };
  assert.deepEqual((await env.fixture.cmd({ cmd: 'get_all', table: 'messages' })).result, expected);
  for (const page of [a, b]) {
    await waitFor(async () => JSON.stringify(await latest(page, 'messages')) === JSON.stringify(expected), 'both tabs to converge');
  }

  // New tables while both tabs hold the database open: each needs a versioned upgrade,
  // which the other tab must not block forever.
  for (const page of [a, b]) await page.evaluate(() => window.watch('notes'));
  await env.fixture.cmd({ cmd: 'define_table', name: 'notes', schema: { key: 'id', fields: null } });
  await env.fixture.cmd({ cmd: 'define_table', name: 'tags', schema: { key: 'id', fields: null } });
  await env.fixture.cmd({ cmd: 'sync', table: 'notes', key: 'n1', data: { text: 'from the backend' } });
  for (const page of [a, b]) await waitFor(async () => (await latest(page, 'notes'))?.n1, 'the new table in both tabs', 10000);
  await write(a, 'note2', 'create', 'notes', 'n2', { text: 'from A' });
  assert.deepEqual(await settled(a, 'note2'), { state: 'fulfilled', value: true });
  await waitFor(async () => (await latest(b, 'notes'))?.n2, "A's note in tab B");

  // A second upgrade right after the first, a write from B in between.
  await write(b, 'note3', 'create', 'notes', 'n3', { text: 'from B' });
  await env.fixture.cmd({ cmd: 'sync', table: 'later', key: 'l1', data: { n: 1 } });
  assert.deepEqual(await settled(b, 'note3'), { state: 'fulfilled', value: true });
  for (const page of [a, b]) {
    await waitFor(async () => (await getAll(page, 'later')).l1 && (await getAll(page, 'notes')).n3, 'the second upgrade in both tabs', 10000);
  }

  const databases = await inspectIndexedDB(a, 'notes');
  const db = databases[`dsn-sync/${env.instance}`];
  for (const name of ['notes', 'tags', 'later']) assert.ok(db.stores.includes(name), `a store for ${name}: ${db.stores}`);
  assert.deepEqual(db.records, { n1: { text: 'from the backend' }, n2: { text: 'from A' }, n3: { text: 'from B' } });

  // Tab B reloads while A stays open: it reads the new stores from IndexedDB and goes on.
  await b.reload();
  await started(b);
  assert.deepEqual(await getAll(b, 'notes'), db.records);
  assert.equal(await ready(b), true);
  await write(b, 'note4', 'create', 'notes', 'n4', { text: 'after the reload' });
  assert.deepEqual(await settled(b, 'note4'), { state: 'fulfilled', value: true });
  await waitFor(async () => (await latest(a, 'notes'))?.n4, "B's note in tab A after B's reload");
  for (const page of [a, b]) {
    const statuses = await page.evaluate(() => window.statuses);
    assert.ok(!statuses.some((s) => s.state === 'error'), `no error status: ${JSON.stringify(statuses)}`);
  }
});

browserTest('a server restarted without its state (new epoch): the page resets its mirror and sends its queued write once', async (t) => {
  const env = await setup(t);
  env.allowOutageErrors();
  env.allowRotated404();
  const page = await env.open();
  assert.equal(await ready(page), true);
  await page.evaluate(() => window.watch('messages'));
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada' } });
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_002', data: { name: 'Brian' } });
  await waitFor(async () => Object.keys((await latest(page, 'users')) ?? {}).length === 2, 'the users in the page');
  const oldEpoch = (await env.fixture.cmd({ cmd: 'epoch' })).result;

  await env.fixture.cmd({ cmd: 'stop' });
  await write(page, 'queued', 'create', 'messages', 'm1', { text: 'queued across the restart' });
  const [{ mid }] = await pending(page);
  // An in-memory server that restarts has lost everything: same URL and token, new epoch.
  const restarted = await env.fixture.cmd({ cmd: 'start', fresh: true });
  assert.equal(restarted.url, env.fixture.url);
  assert.notEqual(restarted.epoch, oldEpoch);
  await env.fixture.cmd({ cmd: 'sync', table: 'users', key: 'user_003', data: { name: 'Chen' } });

  assert.deepEqual(await settled(page, 'queued'), { state: 'fulfilled', value: true });
  await waitFor(async () => JSON.stringify(await latest(page, 'users')) === JSON.stringify({ user_003: { name: 'Chen' } }), 'the reset to replace the users');
  assert.deepEqual(await getAll(page, 'messages'), { m1: { text: 'queued across the restart' } });
  const statuses = await page.evaluate(() => window.statuses);
  assert.ok(statuses.some((s) => s.reset?.done), `a reset was reported: ${JSON.stringify(statuses)}`);
  assert.equal(statuses.at(-1).state, 'online');
  await sleep(500);
  assert.deepEqual((await env.backendCalls('messages')).map(([op, , key, m]) => [op, key, m]), [['create', 'm1', mid]]);

  // IndexedDB holds the new epoch's records only.
  const db = (await inspectIndexedDB(page, 'users'))[`dsn-sync/${env.instance}`];
  assert.equal(db.cursor.epoch, restarted.epoch);
  assert.deepEqual(db.records, { user_003: { name: 'Chen' } });
});

browserTest('streamed pulls in real Chromium: changes arrive as messages of one open answer, in every tab of two profiles', async (t) => {
  const env = await setup(t);
  const options = { ...FAST, stream: true, wait: 10 };
  const appUrl = site.url('app.html') + '#' + new URLSearchParams({ url: env.fixture.url, token: env.fixture.token, options: JSON.stringify(options) });
  // Each page notes the Content-Type of every answer from the sync server, and when it came.
  const noteAnswers = (syncPrefix) => {
    window.syncAnswers = [];
    const fetch_ = window.fetch.bind(window);
    window.fetch = async (input, init) => {
      const answer = await fetch_(input, init);
      if (String(input?.url ?? input).startsWith(syncPrefix)) window.syncAnswers.push(answer.headers.get('content-type'));
      return answer;
    };
  };
  const syncPrefix = env.syncOrigin + '/sync/';
  const other = await browser.newContext();
  t.after(() => other.close());
  const otherConsole = watchConsole(other);
  const pages = [];
  for (const [context, tabs] of [[env.context, 3], [other, 1]]) {
    await context.addInitScript(noteAnswers, syncPrefix);
    for (let i = 0; i < tabs; i++) {
      const page = await context.newPage();
      await page.goto(appUrl);
      await started(page);
      pages.push(page);
    }
  }
  for (const page of pages) {
    assert.equal(await ready(page), true);
    await page.evaluate(() => window.watch('messages'));
  }
  const leaders = await Promise.all(pages.map((page) => page.evaluate(() => window.dsn._leading === true)));
  assert.deepEqual(leaders.slice(3), [true], 'the second profile holds its own connection');
  assert.equal(leaders.slice(0, 3).filter(Boolean).length, 1, 'one tab of the first profile leads');
  const streaming = pages.filter((_, i) => leaders[i]);
  const before = await Promise.all(streaming.map((page) => page.evaluate(() => window.syncAnswers.length)));

  // 40 backend changes of one record, 25 ms apart: each leader's stream carries them.
  for (let n = 0; n < 40; n++) {
    await env.fixture.cmd({ cmd: 'sync', table: 'messages', key: 'hot', data: { n } });
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  const last = Date.now();
  for (const page of pages) await waitFor(async () => (await latest(page, 'messages'))?.hot?.n === 39, 'the last change in every tab', 10000);
  const took = Date.now() - last;
  t.diagnostic(`the last of 40 changes in all ${pages.length} tabs after ${took} ms`);
  assert.ok(took <= 2000, `the last change took ${took} ms to reach every tab`);
  for (const [i, page] of streaming.entries()) {
    const { answers, seen } = await page.evaluate(() => ({
      answers: window.syncAnswers,
      seen: new Set(window.deliveries.messages.map((all) => all.hot?.n)).size,
    }));
    const during = answers.length - before[i];
    assert.ok(answers.includes('application/x-dsn-stream'), `a streamed answer among ${answers.length}: ${[...new Set(answers)]}`);
    assert.ok(seen >= 5 && during < seen, `${seen} values seen through ${during} answers: more than one change per answer`);
  }

  // A write from a following tab reaches the other profile through its stream.
  const follower = pages[leaders.indexOf(false)];
  await write(follower, 'streamed', 'create', 'messages', 'from-follower', { text: 'through the leader' });
  assert.deepEqual(await settled(follower, 'streamed'), { state: 'fulfilled', value: true });
  await waitFor(async () => (await latest(pages[3], 'messages'))?.['from-follower'], 'the write in the other profile');
  assert.deepEqual(otherConsole.unexpected().map(({ kind, text }) => ({ kind, text })), [], 'the other profile logged errors');
});
