// The quick server on its own, as a newcomer meets it (issue 14, "The quick server is
// useful on its own"): start `python3 -m dsn_sync --port 0`, copy the snippet its banner
// prints VERBATIM into a page on another origin, open it in Chromium, see the note it
// creates in the console log, find that row in the inspector with the printed token,
// edit it there and see the edit reach the first page. Then `--no-open-writes`: the same
// create is refused and the banner does not claim open writes. Skipped, loudly, where
// Chromium or playwright-core is missing; REQUIRE_BROWSER=1 makes that a failure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { browserSupport, launchChromium, serveStatic, watchConsole, waitFor } from './browser/harness.mjs';
import { openInspector, startPython } from './screenshots.mjs';

const support = await browserSupport();
if (!support.ok) {
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
  process.stderr.write(`\n*** SKIPPING the quick server browser test: ${support.reason} ***\n\n`);
}
const skip = support.ok ? false : `SKIPPED, no real browser: ${support.reason}`;

const servers = new Set();
const folder = mkdtempSync(path.join(os.tmpdir(), 'dsn-quickserver-'));
let browser;
let site;
before(async () => {
  if (skip) return;
  browser = await launchChromium();
  site = await serveStatic(folder);
});
after(async () => {
  await browser?.close();
  await site?.close();
  await Promise.all([...servers].map((server) => server.stop()));
  rmSync(folder, { recursive: true, force: true });
});

/** `python3 -m dsn_sync --port 0 ...args`, once its banner has printed the snippet:
 * info = {banner, url, token, inspector, origin, snippet}. */
async function startQuickServer(args = []) {
  const server = await startPython(['-m', 'dsn_sync', '--port', '0', ...args], (lines) => {
    const end = lines.findIndex((line) => line.trim() === '</script>');
    if (end < 0) return null;
    const banner = lines.slice(0, end + 1).join('\n');
    const start = lines.findIndex((line) => line.startsWith('<script type="module">'));
    const field = (name) => banner.match(new RegExp(`^  ${name}:\\s+(\\S+)`, 'm'))?.[1];
    const url = field('URL');
    return { banner, url, token: field('Token'), inspector: field('Inspector'), origin: url && new URL(url).origin, snippet: lines.slice(start, end + 1).join('\n') };
  });
  servers.add(server);
  return server;
}

/** A page on the static origin holding `snippet` as printed; before it, a plain script
 * records what the snippet's module throws or rejects with (its top-level await). */
function writePage(name, snippet) {
  const recorder = `<script>
  window.failures = [];
  const keep = (reason) => window.failures.push({ code: reason && reason.code, message: String(reason && reason.message || reason) });
  addEventListener('error', (event) => keep(event.error));
  addEventListener('unhandledrejection', (event) => keep(event.reason));
</script>`;
  writeFileSync(path.join(folder, name), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>${name}</title>\n${recorder}\n${snippet}\n`);
  return site.url(name);
}

/** Every `console.log('notes', notes)` of `page`, as the notes object. */
function notesLog(page) {
  const seen = [];
  page.on('console', async (message) => {
    if (message.type() !== 'log' || message.text().split(' ')[0] !== 'notes') return;
    const args = message.args();
    if (args.length === 2) seen.push(await args[1].jsonValue());
  });
  return seen;
}

const text = (page, selector) => page.$eval(selector, (node) => node.textContent.trim());

let openSnippet; // the create snippet, as the open server printed it (reused below)
let openInfo;

test('quick server: the printed snippet creates a note, the inspector shows and edits it, GET / explains', { skip, timeout: 90000 }, async () => {
  const server = await startQuickServer();
  const info = server.info;
  openInfo = info;
  openSnippet = info.snippet;
  assert.match(info.url, /^http:\/\/127\.0\.0\.1:\d+\/sync\/[0-9a-f]{16}$/);
  assert.match(info.token, /^dsn1\./);
  assert.equal(info.inspector, `${info.url}/inspect`);
  assert.match(info.banner, /Writes:\s+open/, 'the banner says writes are open');
  assert.match(info.snippet, /import \{ connectDSN, newId \} from '[^']+\/dsn_client\.js'/);
  assert.match(info.snippet, /client\.create\('notes'/);

  const context = await browser.newContext();
  const console_ = watchConsole(context);
  try {
    const page = await context.newPage();
    const notes = notesLog(page);
    const pageUrl = writePage('open.html', info.snippet);
    assert.notEqual(new URL(pageUrl).origin, info.origin, 'the page lives on another origin');
    await page.goto(pageUrl);
    const created = await waitFor(() => notes.find((n) => Object.keys(n).length === 1), 'the created note in the console log', 15000);
    const [id] = Object.keys(created);
    assert.equal(created[id].text, 'hello from the browser');
    assert.deepEqual(await page.evaluate(() => window.failures), [], 'the create succeeded');

    // The inspector, with the printed token: the notes table with that row; edit it.
    const inspector = await context.newPage();
    await openInspector(inspector, info.inspector, info.token, ['notes']);
    const row = `section[data-table="notes"] tr[data-key="${id}"]`;
    await inspector.waitForSelector(row, { timeout: 15000 });
    assert.match(await text(inspector, row), /hello from the browser/);
    await inspector.click(row);
    await inspector.fill('#editor-json', JSON.stringify({ text: 'edited in the inspector' }));
    await inspector.click('#editor-save');
    await inspector.waitForSelector('#editor', { state: 'hidden', timeout: 15000 });
    await waitFor(async () => /edited in the inspector/.test(await text(inspector, row)), 'the edit in the grid', 15000);

    // ...and it reaches the first page's onDataChange log; the update kept the other field.
    const edited = await waitFor(() => notes.find((n) => n[id]?.text === 'edited in the inspector'), 'the edit in the first page\'s log', 15000);
    assert.equal(edited[id].at, created[id].at, 'an update keeps the fields it leaves out');
  } finally {
    await context.close();
  }
  assert.deepEqual(console_.unexpected().map((e) => `${e.kind}: ${e.text} (${e.page})`), []);

  // GET / on the server port: a short page that says what this is.
  const home = await fetch(`${info.origin}/`);
  assert.equal(home.status, 200);
  assert.match(home.headers.get('content-type'), /text\/html/);
  const body = await home.text();
  assert.match(body, /dsn-sync/);
  assert.match(body, /inspect/);
  assert.ok(body.length < 4000, 'a short page');
});

test('quick server --no-open-writes: the snippet\'s create is refused, the banner claims no open writes', { skip, timeout: 60000 }, async (t) => {
  const server = await startQuickServer(['--no-open-writes']);
  const info = server.info;
  assert.doesNotMatch(info.banner, /Writes:\s+open|open writes|may create/i, 'no claim of open writes');
  assert.match(info.token, /^dsn1\./);

  // The newcomer's create snippet (as the open server printed it), now pointing at this
  // server: with --no-open-writes the banner prints a read-only snippet without a create.
  if (!openSnippet) {
    const open = await startQuickServer();
    [openSnippet, openInfo] = [open.info.snippet, open.info];
    await open.stop();
  }
  assert.doesNotMatch(info.snippet, /create\(/, 'this banner\'s own snippet only reads');
  const snippet = openSnippet.split(openInfo.url).join(info.url).split(openInfo.token).join(info.token).split(openInfo.origin).join(info.origin);
  assert.match(snippet, /client\.create\('notes'/);

  const context = await browser.newContext();
  const console_ = watchConsole(context);
  // The refusal is expected: the snippet's top-level await rejects, uncaught.
  console_.allow((entry) => entry.kind === 'pageerror' && /^DSNError: (no table 'notes'|.*(unknown_table|no_handler))/.test(entry.text));
  try {
    const page = await context.newPage();
    await page.goto(writePage('closed.html', snippet));
    const [failure] = await waitFor(async () => (await page.evaluate(() => window.failures)).length && page.evaluate(() => window.failures), 'the create refused', 15000);
    assert.ok(['unknown_table', 'no_handler'].includes(failure.code), `refused with ${JSON.stringify(failure)}`);
    t.diagnostic(`refused: ${JSON.stringify(failure)}`);
    await waitFor(() => console_.expected().length, 'the refusal on the console', 15000);

    // The snippet this server prints itself runs without an error.
    const own = await context.newPage();
    const usersLogged = [];
    own.on('console', (message) => { if (message.type() === 'log' && message.text().startsWith('users')) usersLogged.push(message.text()); });
    await own.goto(writePage('closed-own.html', info.snippet));
    await waitFor(() => usersLogged.length, 'the read-only snippet\'s users log', 15000);
    assert.deepEqual(await own.evaluate(() => window.failures), []);
  } finally {
    await context.close();
  }
  assert.deepEqual(console_.unexpected().map((e) => `${e.kind}: ${e.text} (${e.page})`), []);
});
