// The live inspector (dsn_inspect.html) in headless Chromium, one check per fault once
// found in it (issue 14, "Inspector"):
//   - the chart's value labels were cut at the left edge (1,796,284,269 read "84,270");
//   - time fields (ts, sent, at, a number that is a moment near now) were charted as values;
//   - an append-only table (one row per sample) charted as one-point stubs, one per row;
//   - at 1100 px, a table card pushed its last columns out of sight;
//   - a malformed token got one wording from the page and another from the client.
// Served by the real Python server (test/fixture_server.py) at <sync URL>/inspect, driven
// as a person would. Skipped, loudly, where Chromium or playwright-core is missing; CI
// sets REQUIRE_BROWSER=1 so that it fails there instead.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { browserSupport, launchChromium, watchConsole } from './browser/harness.mjs';
import { startFixture, waitFor } from './helpers.mjs';
import { openInspector } from './screenshots.mjs';

const support = await browserSupport();
if (!support.ok) {
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
  process.stderr.write(`\n*** SKIPPING the inspector browser tests: ${support.reason} ***\n\n`);
}
const skip = support.ok ? false : `SKIPPED, no real browser: ${support.reason}`;

let browser;
let fixture;
before(async () => {
  if (skip) return;
  browser = await launchChromium();
  fixture = await startFixture();
});
after(async () => {
  await browser?.close();
});

const sync = (table, key, data) => fixture.cmd({ cmd: 'sync', table, key, data });
const define = (name) => fixture.cmd({ cmd: 'define_table', name, schema: { key: 'id', fields: null } });
const inspectorUrl = () => `${fixture.url}/inspect`;

/** Runs `body(page)` on the inspector, connected, in a fresh context of `width` px (en-US,
 * so that numbers group with commas), then checks that the page logged no error. */
async function withInspector(width, tables, body) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, locale: 'en-US' });
  const console_ = watchConsole(context);
  try {
    const page = await context.newPage();
    await openInspector(page, inspectorUrl(), fixture.token, tables);
    await body(page);
  } finally {
    await context.close();
  }
  assert.deepEqual(console_.unexpected().map((e) => `${e.kind}: ${e.text}`), []);
}

/** Picks `table` (and `field`) in the chart's menus and waits for a line to be drawn. */
async function chartOf(page, table, field) {
  await page.selectOption('#chart-table', table);
  if (field) await page.selectOption('#chart-field', field);
  await page.waitForSelector('#chart path.line', { state: 'attached' }); // a flat line has no height: never "visible"
}

const options = (page, selector) => page.$$eval(`${selector} option`, (nodes) => nodes.map((n) => n.value));
const number = (label) => Number(label.replace(/,/g, ''));

/** The value labels of the chart: their text and where they lie, relative to the SVG.
 * Read in one evaluation: the chart redraws ten times a second, and a node found in one
 * step and measured in another may be gone (measured as an empty box at 0, 0). */
const yLabels = (page) => page.evaluate(() => {
  const svg = document.getElementById('chart').getBoundingClientRect();
  const values = [...document.querySelectorAll('#chart text.axis')]
    .filter((node) => node.getAttribute('text-anchor') === 'end' && /^[-−]?[\d,.]+$/.test(node.textContent));
  return values.map((node) => {
    const box = node.getBoundingClientRect();
    return { text: node.textContent, left: box.left - svg.left, right: box.right - svg.left, svgWidth: svg.width };
  });
});

for (const width of [1280, 390]) {
  test(`chart at ${width} px: large values get whole, distinct labels inside the chart, read as the legend reads them`, { skip, timeout: 60000 }, async () => {
    const table = `big${width}`;
    await define(table);
    await sync(table, 'disk-a', { bytes: 9876543210 });
    await withInspector(width, [table], async (page) => {
      await chartOf(page, table, 'bytes');
      await waitFor(async () => /disk-a\s*9,876,543,210/.test(await page.textContent('#legend')), 'the value in the legend');

      // One flat line of 9,876,543,210: the labels around it are whole and inside the SVG.
      let labels = await waitFor(async () => ((await yLabels(page)).length >= 3 ? yLabels(page) : null), 'value labels');
      for (const label of labels) {
        assert.ok(label.left >= 0 && label.right <= label.svgWidth, `label ${label.text} lies inside the chart (${label.left}..${label.right} of ${label.svgWidth})`);
        assert.match(label.text, /^\d{1,3}(,\d{3})+$/, 'a large value is labelled in full, grouped as in the legend');
      }
      assert.equal(new Set(labels.map((l) => l.text)).size, labels.length, 'no two labels read the same');
      let values = labels.map((l) => number(l.text));
      assert.ok(Math.min(...values) <= 9876543210 && Math.max(...values) >= 9876543210, `the labels ${values} bracket the value`);

      // A second row far below: the labels span both, still whole and inside.
      await sync(table, 'disk-b', { bytes: 3456789012 });
      await waitFor(async () => /disk-b\s*3,456,789,012/.test(await page.textContent('#legend')), 'the second row in the legend');
      await waitFor(async () => Math.min(...(await yLabels(page)).map((l) => number(l.text))) < 6e9, 'labels down towards the second row');
      labels = await yLabels(page);
      for (const label of labels) assert.ok(label.left >= 0 && label.right <= label.svgWidth, `label ${label.text} lies inside the chart`);
      values = labels.map((l) => number(l.text)).sort((a, b) => b - a);
      const step = values[0] - values[1];
      assert.ok(step > 0, `labels ${values} differ`);
      values.slice(1).forEach((v, i) => assert.equal(values[i] - v, step, `labels ${values} are evenly spaced`));
      assert.ok(Math.max(...values) + step > 9876543210 && Math.min(...values) - step < 3456789012, `the labels ${values} span both values`);
    });
  });
}

test('time fields (ts, sent, at, a moment near now) are shown as times and never charted as values', { skip, timeout: 60000 }, async () => {
  const now = Date.now();
  await define('events');
  await define('pings');
  await sync('events', 'e-1', {
    ts: now / 1000, sent: now, at: new Date(now).toISOString(), created_at: now - 5000, checkpoint: now + 1,
    latency_ms: 84.2, count: 3,
  });
  await sync('pings', 'p-1', { ts: now / 1000, sent: now }); // numbers, all of them times
  await withInspector(1280, ['events', 'pings'], async (page) => {
    const tables = await options(page, '#chart-table');
    assert.ok(tables.includes('events'), `events has values to chart (tables offered: ${tables})`);
    assert.ok(!tables.includes('pings'), `a table whose only numbers are times is not offered (tables offered: ${tables})`);
    await chartOf(page, 'events');
    assert.deepEqual((await options(page, '#chart-field')).sort(), ['count', 'latency_ms']);
    assert.equal(await page.$eval('#chart-field', (s) => s.value), 'latency_ms');
    // One line (the one row's latency_ms); the chart redraws on its next frame.
    await waitFor(async () => (await page.$eval('#chart', (svg) => svg.dataset.series)) === '1', 'one line drawn for events');
    assert.match(await page.textContent('#legend'), /^e-1\s*84\.2$/);
    // In the grid, the epoch numbers read as clock times (the raw number in the title).
    const cell = (column) => page.evaluate((name) => {
      const card = document.querySelector('section[data-table="events"]');
      const index = [...card.querySelectorAll('th')].findIndex((th) => th.textContent === name);
      const td = card.querySelector('tbody tr').children[index];
      return { text: td.textContent, title: td.title };
    }, column);
    for (const column of ['ts', 'sent', 'created_at', 'checkpoint']) {
      const { text, title } = await cell(column);
      assert.match(text, /^\d{1,2}:\d{2}:\d{2}/, `${column} reads as a clock time, not ${text}`);
      assert.match(title, /\d{4}-\d{2}-\d{2}T/, `${column}'s title gives the moment in full`);
    }
    assert.equal((await cell('latency_ms')).text, '84.2');
  });
});

test('an append-only table (one row per sample) is one line over its time field, and grows by one point per sample', { skip, timeout: 60000 }, async () => {
  await define('samples');
  const t0 = Date.now() / 1000 - 30;
  for (let i = 0; i < 12; i++) await sync('samples', `s${String(i).padStart(3, '0')}`, { ts: t0 + i * 2, visitors: 100 + (i % 5) * 7 });
  await withInspector(1280, ['samples'], async (page) => {
    await chartOf(page, 'samples', 'visitors');
    const shape = () => page.$eval('#chart', (svg) => ({
      series: Number(svg.dataset.series),
      points: Number(svg.dataset.points),
      paths: [...svg.querySelectorAll('path.line')].map((p) => p.getAttribute('d').split(/[ML]/).filter(Boolean).length),
    }));
    await waitFor(async () => (await shape()).points === 12, 'twelve samples on the chart');
    await waitFor(async () => (await shape()).paths[0] === 12, 'twelve points in the line');
    assert.deepEqual(await shape(), { series: 1, points: 12, paths: [12] });
    assert.equal(await page.$eval('#chart-mode', (s) => s.value), 'over:ts', 'the mode its rows suggest');
    assert.match(await page.textContent('#legend'), /visitors\s*107\s*12 rows over ts/);

    await sync('samples', 's012', { ts: t0 + 24, visitors: 150 });
    await waitFor(async () => (await shape()).paths[0] === 13, 'the new sample in the line');
    assert.deepEqual(await shape(), { series: 1, points: 13, paths: [13] });

    // The menu still offers one line per row.
    await page.selectOption('#chart-mode', 'rows');
    await waitFor(async () => (await shape()).series === 8, 'one line per row, the eight latest');
  });
});

test('a table of current values (one row per thing) stays one line per row, even with a time field', { skip, timeout: 60000 }, async () => {
  await define('gauges');
  const now = Date.now() / 1000;
  await sync('gauges', 'cpu', { value: 40, ts: now });
  await sync('gauges', 'mem', { value: 70, ts: now });
  await withInspector(1280, ['gauges'], async (page) => {
    await chartOf(page, 'gauges', 'value');
    assert.equal(await page.$eval('#chart-mode', (s) => s.value), 'rows');
    await waitFor(async () => (await page.$eval('#chart', (svg) => svg.dataset.series)) === '2', 'two lines');
  });
});

test('at 1100 px (and 1280), a wide table card shows every column: long text gives way, nothing is pushed out', { skip, timeout: 60000 }, async () => {
  await define('wide');
  const now = Date.now();
  for (let i = 0; i < 3; i++) {
    await sync('wide', `row-${i}`, {
      sender: 'alice@example.com', to: 'bob@example.com',
      text: `Message ${i}: ${'a long line of text that goes on and on, '.repeat(6)}`,
      sent: now, ts: now / 1000, tags: { kind: 'chat', labels: ['one', 'two', 'three'] }, latency_ms: 12.5 + i, status: 'delivered',
    });
  }
  const measure = (page) => page.$eval('section[data-table="wide"]', (card) => {
    const scroll = card.querySelector('.scroll');
    const edge = scroll.getBoundingClientRect().right;
    return {
      scroll: [scroll.scrollWidth, scroll.clientWidth],
      page: [document.documentElement.scrollWidth, innerWidth],
      cut: [...card.querySelectorAll('th')].filter((th) => th.getBoundingClientRect().right > edge + 0.5).map((th) => th.textContent),
      columns: card.querySelectorAll('th').length,
      text: card.querySelector('tr[data-key="row-0"] td:nth-child(4)').title,
      // Each header aligned as its column's cells are (numbers and times to the right).
      misaligned: [...card.querySelectorAll('th')].filter((th, i) => {
        const td = card.querySelector('tbody tr').children[i];
        const side = (node) => ({ start: 'left', end: 'right' })[getComputedStyle(node).textAlign] ?? getComputedStyle(node).textAlign;
        return side(th) !== side(td);
      }).map((th) => th.textContent),
    };
  });
  for (const width of [1100, 1280]) {
    await withInspector(width, ['wide'], async (page) => {
      const fit = await measure(page);
      assert.equal(fit.columns, 9); // the key and eight fields
      assert.deepEqual(fit.cut, [], `${width} px: no column beyond the card's edge`);
      assert.ok(fit.scroll[0] <= fit.scroll[1], `${width} px: the card does not scroll sideways (${fit.scroll})`);
      assert.ok(fit.page[0] <= fit.page[1], `${width} px: the page does not scroll sideways (${fit.page})`);
      assert.match(fit.text, /^Message 0: a long line/, 'the full text is in the cell\'s title');
      assert.deepEqual(fit.misaligned, [], `${width} px: headers aligned as their cells`);
    });
  }
  // A phone cannot show ten columns: the card scrolls inside itself, the page never does.
  await withInspector(390, ['wide'], async (page) => {
    const fit = await measure(page);
    assert.ok(fit.page[0] <= fit.page[1], `390 px: the page does not scroll sideways (${fit.page})`);
  });
});

test('a table with declared fields, drawn before its first row, aligns its number headers once rows come', { skip, timeout: 60000 }, async () => {
  await fixture.cmd({ cmd: 'define_table', name: 'declared', schema: { key: 'id', fields: ['label', 'amount'] } });
  await withInspector(1280, [], async (page) => {
    await page.waitForSelector('section[data-table="declared"] th');
    await sync('declared', 'd-1', { label: 'first', amount: 12.5 });
    await page.waitForSelector('section[data-table="declared"] tbody tr');
    const align = await page.$eval('section[data-table="declared"]', (card) => [...card.querySelectorAll('th')].map((th, i) =>
      `${th.textContent}:${getComputedStyle(th).textAlign}/${getComputedStyle(card.querySelector('tbody tr').children[i]).textAlign}`));
    assert.deepEqual(align, ['id:left/start', 'label:left/start', 'amount:right/right']);
  });
});

test('a malformed token gets one wording, whether the page, the client or a saved token finds it', { skip, timeout: 60000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const console_ = watchConsole(context);
  try {
    const page = await context.newPage();
    const attempt = async (token) => {
      await page.goto(inspectorUrl());
      await page.fill('#token', token);
      await page.click('#login button[type=submit]');
      return waitFor(async () => (await page.textContent('#login-error')).trim() || null, `an error for ${token}`);
    };
    const byPage = await attempt('not a token'); // fails the page's own shape check
    const byClient = await attempt('dsn1.abc.def'); // right shape, but the client finds no 32-byte secret
    assert.match(byPage, /dsn1\.<kid>\.<secret>/);
    assert.equal(byClient, byPage);

    // A token kept in this tab's storage that turns out malformed: the same words.
    await page.evaluate((url) => sessionStorage.setItem('dsn-inspect/token', JSON.stringify({ url, token: 'dsn1.abc.def' })), fixture.url);
    await page.reload();
    const bySaved = await waitFor(async () => (await page.textContent('#login-error')).trim() || null, 'an error for the saved token');
    assert.equal(bySaved, byPage);
  } finally {
    await context.close();
  }
  assert.deepEqual(console_.unexpected().map((e) => `${e.kind}: ${e.text}`), []);
});
