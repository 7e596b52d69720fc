// examples/chat_rooms (subscriptions, PROTOCOL section 7) in real Chromium, run as
// written: `python examples/chat_rooms/app.py --port 0`, its page opened at the address it
// prints. A page switches rooms by subscribing to the new one and closing the old; after
// each switch, the page's IndexedDB (read directly, in the page) holds the messages of the
// room shown and nothing else. Two tabs of one profile showing two rooms share one
// connection: each shows its room live (a message from Bob's window arrives), the shared
// IndexedDB holds the union, and closing one tab releases its room from the mirror;
// closing the leading tab hands over, and the new leader releases the rooms no tab shows.
//
// Needs /usr/bin/chromium and playwright-core (`npm install`); skipped loudly without
// them, and fails instead with REQUIRE_BROWSER=1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { browserSupport, launchChromium, watchConsole } from './browser/harness.mjs';
import { waitFor } from './helpers.mjs';
import { startExample } from './screenshots.mjs';

const support = await browserSupport();
if (!support.ok) {
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
  process.stderr.write(`\n!!!!!!!! SKIPPING the chat rooms browser test (test/chat_rooms_browser.test.mjs): ${support.reason} !!!!!!!!\n\n`);
}
const skip = support.ok ? false : `SKIPPED, no real browser: ${support.reason}`;

let browser;
let app;
before(async () => {
  if (skip) return;
  browser = await launchChromium();
  app = await startExample('chat_rooms/app');
});
after(async () => {
  await browser?.close();
  await app?.stop();
});

/** A fresh browser context watched for console errors, closed (and checked) when `t` ends. */
async function newContext(t) {
  const context = await browser.newContext();
  const console_ = watchConsole(context);
  t.after(async () => {
    await context.close();
    assert.deepEqual(console_.unexpected().map(({ kind, text }) => `${kind}: ${text}`), [], 'the pages logged errors');
  });
  return context;
}

/** Opens the page of `user` (0: alice, 1: bob) showing `room`, and waits until it shows it. */
async function openRoom(context, user, room) {
  const page = await context.newPage();
  await page.goto(`${app.info.pages[user]}#${room}`);
  await page.waitForSelector(`body[data-shown="${room}"]`, { timeout: 20000 });
  return page;
}

/** What the page's IndexedDB holds, read in the page with the raw IndexedDB API:
 * {messages: {key: [record, ids]}, subs: {id: {name, params}}, held: [ids]}. */
const storedInPage = (page) => page.evaluate(async () => {
  const cfg = await (await fetch('config' + location.search)).json();
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open(`chat-rooms/${cfg.user}/${cfg.url}`);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  // One transaction over both stores: one consistent state, even while the leader is
  // removing a released room's rows (two transactions could see keys without their values).
  const tx = db.transaction(['messages', '#meta'], 'readonly');
  const messages = tx.objectStore('messages'), meta = tx.objectStore('#meta');
  const asked = [messages.getAllKeys(), messages.getAll(), meta.get('subs'), meta.get('cursor')];
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
  const [keys, values, subs, cursor] = asked.map((request) => request.result);
  const chunked = db.objectStoreNames.contains('#chunks');
  db.close();
  return { messages: Object.fromEntries(keys.map((key, i) => [key, values[i]])), subs, held: cursor?.subs ?? [], chunked };
});

/** Waits until the stored messages are exactly those of `rooms`, and answers what is stored. */
async function storedRooms(page, rooms, what) {
  let stored;
  await waitFor(async () => {
    stored = await storedInPage(page);
    const all = Object.values(stored.messages);
    return all.length > 0 && all.every((row) => row !== null && rooms.includes(row[0].room))
      && rooms.every((room) => all.some((row) => row[0].room === room));
  }, what, 15000);
  return stored;
}

const shownIds = (page) => page.$$eval('#messages .msg', (nodes) => nodes.map((node) => node.dataset.id));
const roomSubs = (stored) => Object.values(stored.subs).filter(({ name }) => name === 'room').map(({ params }) => params.room).sort();

test('switching rooms subscribes and closes: IndexedDB holds the shown room\'s messages and nothing else', { skip, timeout: 90000 }, async (t) => {
  const context = await newContext(t);
  const alice = await openRoom(context, 0, 'lobby');
  await waitFor(async () => (await shownIds(alice)).includes('welcome'), 'the lobby\'s welcome message');
  assert.deepEqual(await alice.$$eval('#rooms button', (nodes) => nodes.map((node) => node.dataset.room)), ['dev', 'lobby', 'random'], 'the room list, from the `rooms` subscription');
  let stored = await storedRooms(alice, ['lobby'], 'the lobby alone in IndexedDB');
  assert.deepEqual(Object.keys(stored.messages), ['welcome']);
  assert.deepEqual(roomSubs(stored), ['lobby']);

  // Say something in the lobby, then switch to dev by clicking: the lobby leaves IndexedDB.
  await alice.fill('#text', 'anyone here?');
  await alice.press('#text', 'Enter');
  await waitFor(async () => (await shownIds(alice)).length === 2, 'the message shown');
  await alice.click('#rooms button[data-room="dev"]');
  await alice.waitForSelector('body[data-shown="dev"]');
  await waitFor(async () => (await shownIds(alice)).join() === 'build', 'dev\'s messages shown');
  stored = await storedRooms(alice, ['dev'], 'dev alone in IndexedDB after the switch');
  assert.deepEqual(Object.keys(stored.messages), ['build']);
  assert.deepEqual(roomSubs(stored), ['dev']);
  assert.equal(stored.held.length, 2, 'held: the room list and dev');
  const [record, ids] = stored.messages.build;
  assert.equal(record.text, 'The build is green.');
  assert.deepEqual(ids, stored.held.filter((id) => stored.subs[id].name === 'room'));
  assert.equal(stored.chunked, false);

  // And on to a room with nothing in it yet: no message at all stays behind.
  await alice.click('#rooms button[data-room="random"]');
  await alice.waitForSelector('body[data-shown="random"]');
  await waitFor(async () => Object.keys((await storedInPage(alice)).messages).length === 0, 'no message left in IndexedDB');
  assert.deepEqual(roomSubs(await storedInPage(alice)), ['random']);
  // A reload keeps the room (the hash) and finds its rows at once.
  await alice.click('#rooms button[data-room="lobby"]');
  await alice.waitForSelector('body[data-shown="lobby"]');
  await alice.reload();
  await alice.waitForSelector('body[data-shown="lobby"]');
  await waitFor(async () => (await shownIds(alice)).length === 2, 'the lobby\'s two messages after the reload');
  await storedRooms(alice, ['lobby'], 'the lobby alone after the reload');
});

test('two tabs on two rooms share one connection; closing one releases its room', { skip, timeout: 90000 }, async (t) => {
  const context = await newContext(t);
  const lobbyTab = await openRoom(context, 0, 'lobby');
  const devTab = await openRoom(context, 0, 'dev');
  const leaders = await Promise.all([lobbyTab, devTab].map((page) => page.evaluate(() => window.chat.client._leading)));
  assert.equal(leaders.filter(Boolean).length, 1, 'one tab holds the connection');
  // The shared mirror holds both rooms; each tab shows its own.
  await storedRooms(lobbyTab, ['lobby', 'dev'], 'both rooms in the shared IndexedDB');
  await waitFor(async () => (await shownIds(devTab)).includes('build'), 'dev\'s messages in the dev tab');
  assert.ok(!(await shownIds(devTab)).includes('welcome'));

  // Bob (another profile) writes in dev: the dev tab shows it, whichever tab leads.
  const bobContext = await newContext(t);
  const bob = await openRoom(bobContext, 1, 'dev');
  await bob.fill('#text', 'deploying now');
  await bob.press('#text', 'Enter');
  await waitFor(async () => (await devTab.$$eval('.bubble', (nodes) => nodes.map((node) => node.textContent))).includes('deploying now'), 'Bob\'s message in Alice\'s dev tab', 15000);

  // The dev tab goes: its room leaves the mirror (released by the leader, or by the new
  // leader after restoreGrace when the dev tab was the leader).
  await devTab.close();
  const stored = await storedRooms(lobbyTab, ['lobby'], 'the lobby alone once the dev tab closed');
  assert.deepEqual(roomSubs(stored), ['lobby']);
  assert.equal(await lobbyTab.evaluate(() => window.chat.client._leading), true);
  // The remaining tab is live: a new message in the lobby reaches it.
  await bob.click('#rooms button[data-room="lobby"]');
  await bob.waitForSelector('body[data-shown="lobby"]');
  await bob.fill('#text', 'hello lobby');
  await bob.press('#text', 'Enter');
  await waitFor(async () => (await lobbyTab.$$eval('.bubble', (nodes) => nodes.map((node) => node.textContent))).includes('hello lobby'), 'Bob\'s lobby message in the lobby tab', 15000);
  // Now the leader goes: the tab left takes over, restores the stored set, keeps its own
  // room and releases the lobby, which no tab asks for, after restoreGrace (3 s).
  const randomTab = await openRoom(context, 0, 'random');
  assert.equal(await randomTab.evaluate(() => window.chat.client._leading), false);
  await lobbyTab.close();
  await waitFor(() => randomTab.evaluate(() => window.chat.client._leading), 'the random tab to lead', 15000);
  await waitFor(async () => Object.keys((await storedInPage(randomTab)).messages).length === 0, 'the lobby released by the new leader', 15000);
  assert.deepEqual(roomSubs(await storedInPage(randomTab)), ['random']);
});
