// The README's React and Vue recipes, as the files in examples/ ship them, in headless
// Chromium against a live dsn_sync.py (test/browser_fixture.py): each page must show the
// backend's records, then follow the backend's changes live (a new record, an edit, a
// removal), without a console error. React's page is examples/react_app.jsx bundled
// here with esbuild, as an app would bundle it (React ships no browser build); Vue's is
// examples/vue_app.html as it is, loading Vue's browser build through its import map.
// React, react-dom, vue and esbuild are devDependencies; the client has no dependency.
//
// Skipped, loudly, where Chromium or playwright-core is missing (failing instead with
// REQUIRE_BROWSER=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { browserSupport, launchChromium, serveStatic, watchConsole } from './browser/harness.mjs';
import { startFixture, waitFor } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.dirname(here);

const support = await browserSupport();
if (!support.ok) {
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but no real browser: ${support.reason}`);
  process.stderr.write(`\n!!!!!!!! SKIPPING the React and Vue recipe tests (test/recipes_browser.test.mjs): ${support.reason} !!!!!!!!\n\n`);
}
const skip = support.ok ? false : `SKIPPED, no real browser: ${support.reason}`;

let browser;
let reactSite; // a temporary folder: react_app.html beside its bundle
let repoSite; // the repository, for examples/vue_app.html and what its import map names
let bundleDir;

before(async () => {
  if (skip) return;
  bundleDir = mkdtempSync(path.join(os.tmpdir(), 'dsn-react-'));
  const esbuild = await import('esbuild');
  // The command line given at the top of examples/react_app.jsx, through esbuild's API.
  await esbuild.build({
    entryPoints: [path.join(root, 'examples', 'react_app.jsx')],
    bundle: true,
    format: 'esm',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
    outfile: path.join(bundleDir, 'react_app.js'),
    logLevel: 'error',
  });
  copyFileSync(path.join(root, 'examples', 'react_app.html'), path.join(bundleDir, 'react_app.html'));
  browser = await launchChromium();
  reactSite = await serveStatic(bundleDir);
  repoSite = await serveStatic(root);
});

after(async () => {
  await browser?.close();
  await reactSite?.close();
  await repoSite?.close();
  if (bundleDir) rmSync(bundleDir, { recursive: true, force: true });
});

/** The page's list as [[key, name]], sorted; null while it says "Loading…". */
const listed = (page) => page.evaluate(() => {
  const list = document.getElementById('users');
  if (!list) return null;
  return [...list.querySelectorAll('li')].map((item) => [item.dataset.id, item.textContent]).sort();
});

async function checkRecipe(pageUrl) {
  const fixture = await startFixture('browser_fixture.py');
  const context = await browser.newContext();
  const console_ = watchConsole(context);
  try {
    const sync = (key, data) => fixture.cmd({ cmd: 'sync', table: 'users', key, data });
    await sync('user_001', { name: 'Ada Lovelace', email: 'ada@example.com' });
    await sync('user_002', { name: 'Grace Hopper', email: 'grace@example.com' });

    const page = await context.newPage();
    await page.goto(`${pageUrl}#${new URLSearchParams({ url: fixture.url, token: fixture.token })}`);
    const expect = (rows, what) => waitFor(async () => {
      const seen = await listed(page);
      return JSON.stringify(seen) === JSON.stringify(rows) && seen;
    }, what, 15000);

    await expect([['user_001', 'Ada Lovelace'], ['user_002', 'Grace Hopper']], 'the backend records on the page');

    await sync('user_003', { name: 'Katherine Johnson', email: 'kj@example.com' });
    await expect([['user_001', 'Ada Lovelace'], ['user_002', 'Grace Hopper'], ['user_003', 'Katherine Johnson']], 'a record the backend added, live');

    await sync('user_001', { name: 'Ada King', email: 'ada@example.com' });
    await fixture.cmd({ cmd: 'remove', table: 'users', key: 'user_002' });
    await expect([['user_001', 'Ada King'], ['user_003', 'Katherine Johnson']], 'an edit and a removal by the backend, live');
  } finally {
    await context.close();
    await fixture.kill();
  }
  assert.deepEqual(console_.unexpected().map((entry) => `${entry.kind}: ${entry.text} (${entry.url || entry.page})`), [], 'the page logged errors');
}

test('React recipe (examples/react_app.jsx): useSyncExternalStore over onDataChange shows the records and follows the backend', { skip, timeout: 60000 }, async () => {
  await checkRecipe(reactSite.url('react_app.html'));
});

test('Vue recipe (examples/vue_app.html): a shallowRef fed by onDataChange shows the records and follows the backend', { skip, timeout: 60000 }, async () => {
  await checkRecipe(repoSite.url('examples/vue_app.html'));
});
