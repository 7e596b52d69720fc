// dsn-sync mounted in an app, in a real browser: each recipe of examples/ run as written
// (FastAPI under uvicorn, Django's WSGI wrapper under gunicorn, Flask under waitress;
// dsn-sync at /dsn of the app's own origin), driven by headless Chromium (Debian's
// `chromium`) through playwright-core. The page (examples/mounted.html) comes from the
// app and imports /dsn/dsn_client.js from the same origin; it logs in through the app's
// toy login and syncs. Then the app is stopped and the page opened again: the page and
// the client come from the HTTP cache (both are served with max-age), the notes from the
// IndexedDB mirror, and a note written then waits in the outbox. The app comes back with
// a new secret: a login in a new tab starts the first tab too, and the note reaches the
// backend once.
//
// Needs /usr/bin/chromium, `npm install`, and the Python test dependencies (fastapi,
// uvicorn, django, gunicorn, flask, waitress); without Chromium or playwright-core the
// test is skipped, loudly (or fails, with REQUIRE_BROWSER=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { browserSupport, launchChromium, waitFor, watchConsole } from './browser/harness.mjs';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const PYTHON = process.env.PYTHON || 'python3';

const support = await browserSupport();
if (!support.ok) {
  console.error(`\n!!!!!!!! SKIPPING the mounted-app browser test (test/mounts_browser.test.mjs): ${support.reason} !!!!!!!!\n`);
}

let browser;
before(async () => {
  if (support.ok) browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Each recipe under a server its docstring names: ASGI, and WSGI under two servers.
const RECIPES = {
  'FastAPI under uvicorn': (port) => ['uvicorn', '--port', port, 'fastapi_app:app'],
  'Django (WSGI) under gunicorn': (port) => ['gunicorn', '-k', 'gthread', '--threads', '16', '-b', `127.0.0.1:${port}`, 'django_app:wsgi'],
  'Flask under waitress': (port) => ['waitress', '--threads', '16', '--listen', `127.0.0.1:${port}`, 'flask_app:app'],
};

/** A recipe of examples/ served as its docstring says; resolves once it answers. */
async function startApp(recipe, port) {
  port ??= await freePort();
  const env = { ...process.env };  // as the README runs it: nothing installed, no secret set
  delete env.DSN_SYNC_SECRET;
  delete env.PYTHONPATH;
  const child = spawn(PYTHON, ['-m', ...RECIPES[recipe](String(port))],
    { cwd: path.join(root, 'examples'), env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const origin = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`${recipe} exited:\n${log}`);
    try {
      return (await fetch(origin + '/')).ok;
    } catch {
      return false;
    }
  }, `${recipe} to answer`, 30000, 100);
  return {
    origin,
    log: () => log,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function logIn(page, origin, user, password) {
  await page.goto(origin + '/');
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.click('#login button');
  await waitFor(async () => (await page.getAttribute('#status', 'data-state')) === 'online', `${user} online`, 15000);
}

const noteTexts = (page) => page.$$eval('#notes li', (items) => items.map((li) => li.textContent));

for (const recipe of Object.keys(RECIPES)) {
test(`${recipe} with dsn-sync mounted: first sync, a write, an offline reopen from the cache, a write made offline kept`, { timeout: 90000 }, async (t) => {
  if (!support.ok) {
    if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
    t.skip(`SKIPPED, no real browser: ${support.reason}`);
    return;
  }
  const app = await startApp(recipe);
  const context = await browser.newContext();
  const console_ = watchConsole(context);
  t.after(async () => {
    await context.close();
    await app.stop();
  });
  const page = await context.newPage();
  const clientFetches = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/dsn/dsn_client.js') clientFetches.push(request.url());
  });

  // 1. First sync: the login's token, the seeded note, all from one origin.
  await logIn(page, app.origin, 'alice', 'wonderland');
  assert.deepEqual(clientFetches, [app.origin + '/dsn/dsn_client.js'], 'the client is imported from the app\'s own origin');
  await waitFor(async () => (await noteTexts(page)).includes('Welcome, Alice'), 'the first sync');

  // 2. A write, acknowledged by the backend's handler.
  await page.fill('#text', 'written in Chromium');
  await page.click('#add button');
  const id = await waitFor(() => page.getAttribute('#add', 'data-acked'), 'the write to be acknowledged');
  assert.ok(await page.$(`#notes li[data-id="${id}"]`), 'the acknowledged note is shown');
  // Stored on the server: a fresh context (an empty IndexedDB) of the same user syncs it down.
  const other = await browser.newContext();
  t.after(() => other.close());
  const second = await other.newPage();
  await logIn(second, app.origin, 'alice', 'wonderland');
  await waitFor(async () => (await noteTexts(second)).includes('written in Chromium'), 'the note in a second browser');

  // 3. The app stops; the page is opened again, with nothing to answer it but the cache.
  await app.stop();
  await assert.rejects(fetch(app.origin + '/'), 'the app is down');
  console_.allow(/Failed to load resource|ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE/);
  clientFetches.length = 0;
  await page.goto(app.origin + '/');
  assert.deepEqual(clientFetches, [app.origin + '/dsn/dsn_client.js'], 'the page imported the client again');
  await waitFor(async () => {
    const texts = await noteTexts(page);
    return texts.includes('Welcome, Alice') && texts.includes('written in Chromium');
  }, 'the notes from the IndexedDB mirror, offline');
  await waitFor(async () => ['offline', 'connecting'].includes(await page.getAttribute('#status', 'data-state')),
    'the client to say it is not online');
  assert.doesNotMatch(app.log(), /Traceback/);
  // A note written while the app is down waits in the page's IndexedDB outbox.
  await page.fill('#text', 'written offline');
  await page.click('#add button');
  await waitFor(async () => (await noteTexts(page)).includes('written offline'), 'the offline note in the mirror');

  // 4. The app comes back on the same origin without a secret set: a new sync URL, so the saved
  // session is stale. The page says so, shows the login again, and a new login syncs.
  const again = await startApp(recipe, Number(new URL(app.origin).port));
  t.after(() => again.stop());
  // The open tab finds the new URL refused, and drops the saved session: a tab opened now asks for the login.
  await waitFor(async () => (await page.getAttribute('#login', 'hidden')) === null, 'the login form again', 30000);
  assert.equal(await page.textContent('#error'), 'wrong_url: please log in again');
  // The same in the tab that logged in before the restart and stayed open (it blamed the login's URL).
  await waitFor(async () => (await second.textContent('#error')) === 'wrong_url: please log in again',
    'the message in the tab that logged in', 30000);
  const tab = await context.newPage();
  await tab.goto(again.origin + '/');
  await waitFor(async () => (await tab.getAttribute('#login', 'hidden')) === null, 'the login form in a new tab');
  // Logging in in the new tab starts the first one too, and the note written offline reaches the backend.
  await logIn(tab, again.origin, 'alice', 'wonderland');
  await waitFor(async () => (await page.getAttribute('#status', 'data-state')) === 'online', 'the first tab online with the new login');
  await waitFor(async () => (await noteTexts(tab)).includes('Welcome, Alice'), 'the fresh sync after a new login');
  const fresh = await browser.newContext();
  t.after(() => fresh.close());
  const elsewhere = await fresh.newPage();
  await logIn(elsewhere, again.origin, 'alice', 'wonderland');
  await waitFor(async () => (await noteTexts(elsewhere)).includes('written offline'), 'the offline note on the backend');
  assert.equal((await noteTexts(elsewhere)).filter((text) => text === 'written offline').length, 1);
  assert.equal(await tab.textContent('#error'), '');
  assert.deepEqual(console_.unexpected(), [], 'the pages logged errors');
  assert.doesNotMatch(again.log(), /Traceback/);
});
}

test('the page says so when it cannot load the client (dsn-sync not mounted where the page imports it)', { skip: !support.ok && support.reason }, async (t) => {
  // A newcomer's walkthrough: with dsn-sync mounted elsewhere, the module import failed, nothing
  // ran, and "Log in" reloaded the page with nothing said but a 404 in the console.
  const http = await import('node:http');
  const fs = await import('node:fs');
  const page = fs.readFileSync(path.join(root, 'examples', 'mounted.html'));
  const server = http.createServer((req, res) => {
    if (req.url === '/') res.writeHead(200, { 'Content-Type': 'text/html' }).end(page);
    else res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const context = await browser.newContext();
  t.after(() => context.close());
  const tab = await context.newPage();
  await tab.goto(`http://127.0.0.1:${server.address().port}/`);
  await waitFor(async () => (await tab.textContent('#error')).includes('could not load /dsn/dsn_client.js'), 'the message');
  await tab.click('#login button');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(new URL(tab.url()).search, '', 'the login form was sent as a page load');
  assert.match(await tab.textContent('#error'), /is dsn-sync mounted at \/dsn\?/);
});
