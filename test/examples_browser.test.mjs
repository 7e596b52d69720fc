// The live inspector (dsn_inspect.html) and every example in examples/, in headless
// Chromium, driven as a person would: enter the token and watch rows change; send a
// chat message from Alice's window and see it in Bob's; put something in the cart and
// place an order that reaches the backend's handler; watch the analytics chart and the
// unread badge move as the backend syncs. Every page must finish without a console
// error. Skipped, loudly, where Chromium or playwright-core is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { browserSupport, launchChromium, watchConsole } from './browser/harness.mjs';
import { startFixture, waitFor } from './helpers.mjs';
import { chartPoints, openInspector, startDemo, startExample } from './screenshots.mjs';

const support = await browserSupport();
if (!support.ok) {
  // CI sets REQUIRE_BROWSER=1, so that a machine without Chromium fails instead.
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
  process.stderr.write(`\n*** SKIPPING the inspector and examples browser tests: ${support.reason} ***\n\n`);
}
const skip = support.ok ? false : `SKIPPED, no real browser: ${support.reason}`;

let browser;
before(async () => {
  if (!skip) browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

/** Runs `body(context, app)` with a fresh browser context watched for console errors and
 * the backend `start()` gives; closes both (the pages first, so that no request fails
 * against a stopped server) and checks that no page logged an error. */
async function withApp(start, body) {
  const app = await start();
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const console_ = watchConsole(context);
  try {
    await body(context, app);
  } finally {
    await context.close();
    await app.stop();
  }
  assert.deepEqual(console_.unexpected().map((e) => `${e.kind}: ${e.text} (${e.page})`), []);
}

// Without a browser too: every example starts on a free port, prints its addresses,
// serves its page and hands each of its users a config with a token of their own.
test('every example starts, prints its addresses and serves its page and per-user configs', { timeout: 60000 }, async () => {
  for (const [name, users] of [['notifications', ['ada', 'grace']], ['chat', ['alice', 'bob']], ['shop', ['alice', 'bob']], ['analytics', ['viewer']]]) {
    const app = await startExample(name);
    try {
      assert.deepEqual(app.info.pages.map((url) => new URL(url).searchParams.get('user')), users, `${name}: one address per user`);
      const page = await fetch(app.info.pages[0]);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /import\(new URL\('\/dsn_client\.js', cfg\.url\)/);
      const tokens = new Set();
      for (const url of app.info.pages) {
        const config = await (await fetch(new URL(`config${new URL(url).search}`, url))).json();
        assert.match(config.url, /^http:\/\/127\.0\.0\.1:\d+\/sync\/[0-9a-f]{16}$/);
        assert.match(config.token, /^dsn1\./);
        assert.notEqual(config.token, app.info.token, `${name}: a user's token is not the app's`);
        tokens.add(config.token);
        const client = await fetch(new URL('/dsn_client.js', config.url));
        assert.equal(client.status, 200);
      }
      assert.equal(tokens.size, users.length);
      assert.equal((await fetch(new URL('config?user=mallory', app.info.pages[0]))).status, 403);
      assert.equal((await fetch(app.info.inspector)).status, 200);
    } finally {
      await app.stop();
    }
  }
});

const text = (page, selector) => page.$eval(selector, (node) => node.textContent.trim());
const count = (page, selector) => page.$$eval(selector, (nodes) => nodes.length);

test('inspector: token form, live rows with highlights, cursor, chart of a picked field, forget', { skip, timeout: 90000 }, async () => {
  const fixture = await startFixture();
  const sync = (table, key, data) => fixture.cmd({ cmd: 'sync', table, key, data });
  await sync('users', 'u-001', { name: 'Ada', email: 'ada@example.com' });
  await sync('metrics', 'cpu', { value: 10 });
  const inspector = `${fixture.url}/inspect`;
  await withApp(async () => ({ ...fixture, stop: () => fixture.kill() }), async (context) => {
    const page = await context.newPage();
    await page.goto(inspector);
    assert.equal(await page.getAttribute('#token', 'type'), 'password', 'the token field hides what is typed');
    await openInspector(page, inspector, fixture.token, ['users', 'metrics']);
    assert.equal(page.url(), inspector, 'the token never reaches the URL');
    assert.equal(await text(page, 'section[data-table="users"] tr[data-key="u-001"] td:nth-child(2)'), 'Ada');

    // A row synced by the backend appears, highlighted as new; a change flashes its cell.
    await sync('users', 'u-002', { name: 'Grace', email: 'grace@example.com' });
    await page.waitForSelector('section[data-table="users"] tr[data-key="u-002"].added');
    await sync('users', 'u-002', { name: 'Grace Hopper' });
    await page.waitForSelector('section[data-table="users"] tr[data-key="u-002"] td.changed');
    assert.equal(await text(page, 'section[data-table="users"] tr[data-key="u-002"] td:nth-child(2)'), 'Grace Hopper');
    assert.match(await text(page, 'section[data-table="users"] .count'), /^2 rows$/);
    await fixture.cmd({ cmd: 'remove', table: 'users', key: 'u-001' });
    await page.waitForSelector('section[data-table="users"] tr[data-key="u-001"]', { state: 'detached' });

    // The cursor follows the server's seq; nothing is pending.
    const { result: epoch } = await fixture.cmd({ cmd: 'epoch' });
    await waitFor(async () => (await text(page, '#epoch')).includes(epoch), 'the epoch on the page');
    assert.match(await text(page, '#seq'), /^\d+$/);
    await waitFor(async () => (await text(page, '#pending')) === '0', 'an empty outbox');

    // The chart: pick metrics.value, then every sync is a point.
    await sync('metrics', 'cpu', { value: 11, unit: 'percent' });
    await page.selectOption('#chart-table', 'metrics');
    await page.selectOption('#chart-field', 'value');
    const before = await chartPoints(page);
    for (let v = 12; v < 16; v++) {
      await sync('metrics', 'cpu', { value: v });
      await waitFor(async () => (await chartPoints(page)) > before + v - 12, `point ${v} on the chart`);
    }
    await waitFor(() => page.$('#chart path.line'), 'a line drawn');
    await waitFor(async () => /cpu\s*15/.test(await text(page, '#legend')), 'the latest value in the legend');

    // Writing through the inspector: an edit is an update that reaches the backend's
    // handler; a table without handlers refuses, and the refusal is shown.
    await page.click('section[data-table="users"] tr[data-key="u-002"]');
    await page.fill('#editor-json', JSON.stringify({ name: 'Grace B. Hopper' }));
    await page.click('#editor-save');
    await page.waitForSelector('#editor', { state: 'hidden' });
    assert.equal((await fixture.cmd({ cmd: 'get', table: 'users', key: 'u-002' })).result.name, 'Grace B. Hopper');
    assert.ok((await fixture.cmd({ cmd: 'calls' })).result.some(([op, table, key]) => op === 'update' && table === 'users' && key === 'u-002'));
    await waitFor(async () => (await text(page, 'section[data-table="users"] tr[data-key="u-002"] td:nth-child(2)')) === 'Grace B. Hopper', 'the edit in the grid');
    await sync('readonly', 'r-1', { note: 'no handlers here' });
    await page.click('section[data-table="readonly"] tr[data-key="r-1"]');
    await page.click('#editor-delete');
    await waitFor(async () => /^no_handler/.test(await text(page, '#editor-error')), 'the refusal in the editor');
    await page.click('#editor button[value=cancel]');
    assert.ok(await page.$('section[data-table="readonly"] tr[data-key="r-1"]'), 'the refused delete was rolled back');
    await waitFor(async () => (await text(page, '#pending')) === '0', 'an empty outbox');

    // Kept for this tab only: a reload reconnects without asking; "forget" forgets.
    assert.ok(await page.evaluate(() => sessionStorage.getItem('dsn-inspect/token')));
    await page.reload();
    await page.waitForSelector('#status[data-state="online"]');
    await page.waitForSelector('section[data-table="users"] tr[data-key="u-002"]');
    await page.click('#forget');
    await page.waitForSelector('#login:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('dsn-inspect/token')), null);
  });
});

test('python -m dsn_sync --demo: the inspector shows the demo tables and charts the metric', { skip, timeout: 60000 }, async () => {
  await withApp(startDemo, async (context, demo) => {
    const page = await context.newPage();
    await openInspector(page, demo.info.inspector, demo.info.token, ['users', 'notifications', 'metrics']);
    const start = await chartPoints(page);
    await waitFor(async () => (await chartPoints(page)) >= start + 2, 'the demo metric on the chart', 15000);
    assert.equal(await page.$eval('#chart-table', (s) => s.value), 'metrics');
  });
});

test('chat: a message from Alice arrives in Bob\'s window, and back', { skip, timeout: 60000 }, async () => {
  await withApp(() => startExample('chat'), async (context, chat) => {
    const [aliceUrl, bobUrl] = chat.info.pages;
    assert.match(aliceUrl, /user=alice/);
    const alice = await context.newPage();
    const bob = await context.newPage();
    await alice.goto(aliceUrl);
    await bob.goto(bobUrl);
    await alice.waitForSelector('#status[data-state="online"]');
    await bob.waitForSelector('#status[data-state="online"]');
    await alice.waitForSelector('.msg[data-id="welcome"]');

    const hello = `Hello Bob ${Date.now()}`;
    await alice.fill('#text', hello);
    await alice.press('#text', 'Enter');
    await bob.waitForSelector(`.msg:not(.mine) .bubble >> text="${hello}"`);
    await alice.waitForSelector(`.msg.mine:not(.sending) .bubble >> text="${hello}"`);
    await chat.waitForLine(new RegExp(`alice -> bob: ${hello}`));

    await bob.fill('#text', 'Hi Alice!');
    await bob.click('button[type=submit]');
    await alice.waitForSelector('.msg:not(.mine) .bubble >> text="Hi Alice!"');
    assert.equal(await count(alice, '.msg'), 3);
    assert.equal(await count(bob, '.msg'), 3);
  });
});

test('shop: the cart fills, an order reaches the backend handler, stock moves live', { skip, timeout: 60000 }, async () => {
  await withApp(() => startExample('shop', ['--interval', '0.3']), async (context, shop) => {
    const page = await context.newPage();
    await page.goto(shop.info.pages[0]);
    await page.waitForSelector('#status[data-state="online"]');
    await waitFor(async () => (await count(page, '.product')) === 6, 'six products');

    // The background task moves stock (other shoppers, deliveries) while we watch.
    const stockNow = () => page.$$eval('.product .stock', (nodes) => nodes.map((n) => n.textContent).join('|'));
    const stockBefore = await stockNow();
    await waitFor(async () => (await stockNow()) !== stockBefore, 'a stock update from the background task');

    const product = await page.$eval('.product:has(button:not([disabled]))', (node) => node.dataset.id);
    await page.click(`.product[data-id="${product}"] button`);
    await page.waitForSelector('#cart .line');
    await page.click('#place');
    const line = await shop.waitForLine(/^order (o-\S+) placed by alice: 1 items, \$\d+\.\d\d$/, 'the order in the backend');
    const orderId = line.split(' ')[1];
    await page.waitForSelector(`#orders .line[data-id="${orderId}"] .status:not(.placing)`);
    await page.waitForSelector('#cart .muted >> text=Empty');
    assert.equal(await text(page, '#total'), '$0.00');
  });
});

test('analytics: the chart gains a point with every sample the backend syncs', { skip, timeout: 60000 }, async () => {
  await withApp(() => startExample('analytics', ['--interval', '0.3']), async (context, analytics) => {
    const page = await context.newPage();
    await page.goto(analytics.info.pages[0]);
    await page.waitForSelector('#status[data-state="online"]');
    const received = () => page.$eval('#chart', (svg) => Number(svg.dataset.received));
    const first = await waitFor(received, 'the history');
    assert.ok(first >= 100, `the chart starts with the backend's history (got ${first} points)`);
    await waitFor(async () => (await received()) >= first + 3, 'three new points');
    assert.ok(await page.$('#chart path.line'));
    await page.click('.tab[data-field="latency_ms"]');
    assert.equal(await text(page, '#chart-title'), 'Latency');
  });
});

test('notifications: the badge counts unread ones, live and after marking read', { skip, timeout: 60000 }, async () => {
  await withApp(() => startExample('notifications', ['--interval', '0.3']), async (context, app) => {
    const page = await context.newPage();
    await page.goto(app.info.pages[0]);
    await page.waitForSelector('#status[data-state="online"]');
    const badge = () => page.$eval('#badge', (b) => Number(b.dataset.count));
    const unread = () => count(page, 'li.unread');
    const start = await waitFor(badge, 'the seeded unread ones');
    await waitFor(async () => (await badge()) > start, 'a new notification from the backend', 15000);

    const key = await page.$eval('li.unread', (li) => li.dataset.key);
    await page.click(`li[data-key="${key}"]`);
    await app.waitForLine(new RegExp(`^ada marked ${key} read$`), 'the read mark in the backend');
    await page.waitForSelector(`li[data-key="${key}"]:not(.unread)`);
    await waitFor(async () => (await badge()) === (await unread()), 'the badge equal to the unread rows');

    await page.click('#all-read');
    await waitFor(async () => (await badge()) === 0 || (await unread()) === (await badge()), 'all read');
  });
});
