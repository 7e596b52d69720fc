// Regenerates the screenshots in docs/ from the real thing: `node test/screenshots.mjs`.
//
//   docs/inspector.png        the live inspector at 1280x800 (python -m dsn_sync --demo)
//   docs/inspector-phone.png  the same at 390x844
//   docs/chat.png             examples/chat.py, Alice's and Bob's windows after a short exchange
//
// `node test/screenshots.mjs shop analytics notifications` takes the other examples too
// (docs/<name>.png); SCREENSHOT_DIR=/tmp/shots writes elsewhere, SCREENSHOT_SCHEME=dark
// takes them in dark mode.
//
// Headless Chromium through test/browser/harness.mjs. The helpers below (starting a
// backend and reading the addresses it prints, connecting the inspector) are shared
// with test/examples.test.mjs, so the pictures and the tests drive the same pages.
import { spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { browserSupport, launchChromium, screenshot, waitFor } from './browser/harness.mjs';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const python = process.env.PYTHON || 'python3';

/** Runs `python3 <args>` in the repository and collects what it prints. Resolves once
 * `ready(lines)` answers something truthy (that answer becomes `app.info`); rejects if
 * the process exits first or after `timeout` ms. `app.lines` keeps growing (handlers
 * print there); `app.waitForLine(regexp)` waits for a matching line; `app.stop()`. */
export function startPython(args, ready, { timeout = 15000 } = {}) {
  const child = spawn(python, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
  const lines = [];
  const stderr = [];
  const app = {
    child,
    lines,
    info: null,
    waitForLine: (re, what = String(re), ms = 10000) => waitFor(() => lines.find((line) => re.test(line)), `${what} in the output of ${args.join(' ')}`, ms),
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.kill('SIGTERM');
    }),
  };
  readline.createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { app.stop(); reject(new Error(`${args.join(' ')} printed no address in ${timeout} ms:\n${[...lines, ...stderr].join('\n')}`)); }, timeout);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${args.join(' ')} exited with ${code}:\n${[...lines, ...stderr].join('\n')}`)); });
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line);
      if (app.info) return;
      app.info = ready(lines);
      if (app.info) { clearTimeout(timer); resolve(app); }
    });
  });
}

/** `python -m dsn_sync --demo` on a free port: info = {inspector, token, url}. */
export function startDemo() {
  return startPython(['-m', 'dsn_sync', '--demo', '--port', '0'], (lines) => {
    const text = lines.join('\n');
    const inspector = text.match(/Inspector:\s+(\S+)/)?.[1];
    const token = text.match(/Token:\s+(dsn1\.\S+)/)?.[1];
    const url = text.match(/URL:\s+(\S+)/)?.[1];
    return inspector && token && url ? { inspector, token, url } : null;
  });
}

/** `python examples/<name>.py --port 0 [args]`: info = {pages: [every page address
 * printed, in order], inspector, token}. The examples print their page addresses
 * first and the inspector line last. */
export function startExample(name, args = []) {
  return startPython([path.join('examples', `${name}.py`), '--port', '0', ...args], (lines) => {
    const text = lines.join('\n');
    const inspector = text.match(/Inspector:\s+(\S+)/)?.[1];
    const token = text.match(/token, to paste there: (dsn1\.[\w-]+\.[\w-]+)/)?.[1];
    if (!inspector || !token) return null;
    const pages = [...text.matchAll(/^\s+(http:\/\/\S+)\s*$/gm)].map((m) => m[1]);
    return { pages, inspector, token };
  });
}

/** Opens the inspector in `page`, enters `token`, and waits until it is live with the
 * given tables drawn. */
export async function openInspector(page, inspector, token, tables = []) {
  await page.goto(inspector);
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#status[data-state="online"]', { timeout: 15000 });
  for (const table of tables) await page.waitForSelector(`section[data-table="${table}"] tbody tr`, { timeout: 15000 });
}

/** The number of points the inspector's chart has gathered. */
export const chartPoints = (page, selector = '#chart') => page.$eval(selector, (svg) => Number(svg.dataset.points));

/** Each picture: what it needs running, and how to get the page there. */
const SHOTS = {
  async inspector(browser, scheme) {
    const demo = await startDemo();
    try {
      for (const [file, viewport, scale] of [['inspector.png', { width: 1280, height: 800 }, 1], ['inspector-phone.png', { width: 390, height: 844 }, 2]]) {
        const context = await browser.newContext({ viewport, deviceScaleFactor: scale, colorScheme: scheme });
        const page = await context.newPage();
        await openInspector(page, demo.info.inspector, demo.info.token, ['users', 'metrics']);
        await waitFor(async () => (await chartPoints(page)) >= 40, 'twenty seconds of the metric on the chart', 60000);
        await save(page, file);
        await context.close();
      }
    } finally {
      await demo.stop();
    }
  },

  async chat(browser, scheme) {
    const chat = await startExample('chat');
    try {
      const context = await browser.newContext({ viewport: { width: 600, height: 660 }, deviceScaleFactor: 1, colorScheme: scheme });
      const [alice, bob] = await Promise.all([context.newPage(), context.newPage()]);
      await alice.goto(chat.info.pages[0]);
      await bob.goto(chat.info.pages[1]);
      const say = async (page, text) => {
        await page.waitForSelector('#status[data-state="online"]');
        await page.fill('#text', text);
        await page.press('#text', 'Enter');
        await page.waitForSelector('.msg.sending', { state: 'detached' });
        await page.waitForTimeout(300);
      };
      await say(alice, 'Hi Bob! Did the new build go out?');
      await say(bob, 'It did, ten minutes ago. All green.');
      await say(alice, 'Great, the dashboard shows it already.');
      await say(bob, 'Same here: your message was on my screen before you let go of Enter.');
      // Both windows side by side, as the example is meant to be opened: two shots, laid
      // out in one more page (an iframe would be third-party, without IndexedDB).
      await bob.waitForFunction(() => document.querySelectorAll('.msg:not(.sending)').length >= 5);
      await alice.waitForFunction(() => document.querySelectorAll('.msg:not(.sending)').length >= 5);
      const shots = [];
      for (const page of [alice, bob]) {
        await page.setViewportSize({ width: 600, height: 660 });
        await page.waitForTimeout(300);
        shots.push((await page.screenshot()).toString('base64'));
      }
      const both = await context.newPage();
      await both.setViewportSize({ width: 1201, height: 660 });
      await both.setContent(`<body style="margin:0;display:flex;background:#d0d5dd;gap:1px">${shots.map((png) =>
        `<img style="display:block" src="data:image/png;base64,${png}">`).join('')}</body>`);
      await both.waitForFunction(() => [...document.images].every((img) => img.complete));
      await save(both, 'chat.png');
      await context.close();
    } finally {
      await chat.stop();
    }
  },

  // On request only (node test/screenshots.mjs shop analytics notifications): not in docs/ by default.
  async shop(browser, scheme) {
    await simple(browser, scheme, 'shop', { width: 1200, height: 720 }, async (page) => {
      await page.waitForSelector('.product');
      await page.click('.product:nth-child(1) button');
      await page.click('.product:nth-child(3) button');
      await page.waitForSelector('#cart .line');
      await page.click('#place');
      await page.waitForSelector('#orders .line .status:not(.placing)');
      await page.click('.product:nth-child(2) button');
      await page.waitForTimeout(1500);
    }, ['--interval', '0.5']);
  },
  async analytics(browser, scheme) {
    await simple(browser, scheme, 'analytics', { width: 1100, height: 640 }, async (page) => {
      await page.waitForSelector('#chart path.line');
      await page.waitForTimeout(1500);
    });
  },
  async notifications(browser, scheme) {
    await simple(browser, scheme, 'notifications', { width: 900, height: 700 }, async (page) => {
      await page.waitForSelector('li.unread');
      await page.waitForTimeout(2500);
    }, ['--interval', '1']);
  },
};
const DEFAULT_SHOTS = ['inspector', 'chat'];
let docs = path.join(repoRoot, 'docs');

async function simple(browser, scheme, name, viewport, ready, args = []) {
  const app = await startExample(name, args);
  try {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1, colorScheme: scheme });
    const page = await context.newPage();
    await page.goto(app.info.pages[0]);
    await page.waitForSelector('#status[data-state="online"]');
    await ready(page);
    await save(page, `${name}.png`);
    await context.close();
  } finally {
    await app.stop();
  }
}

async function save(page, file) {
  await screenshot(page, path.join(docs, file));
  console.log(`wrote ${path.relative(process.cwd(), path.join(docs, file))}`);
}

async function main() {
  const support = await browserSupport();
  if (!support.ok) {
    console.error(`cannot take screenshots: ${support.reason}`);
    process.exit(1);
  }
  // SCREENSHOT_DIR writes elsewhere (to compare before committing); SCREENSHOT_SCHEME=dark.
  docs = process.env.SCREENSHOT_DIR ? path.resolve(process.env.SCREENSHOT_DIR) : docs;
  const names = process.argv.slice(2).length ? process.argv.slice(2) : DEFAULT_SHOTS;
  const unknown = names.filter((n) => !SHOTS[n]);
  if (unknown.length) {
    console.error(`unknown screenshot ${unknown.join(', ')}; known: ${Object.keys(SHOTS).join(', ')}`);
    process.exit(2);
  }
  const browser = await launchChromium();
  try {
    for (const name of names) await SHOTS[name](browser, process.env.SCREENSHOT_SCHEME || 'light');
  } finally {
    await browser.close();
  }
}

const runDirectly = process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (runDirectly && process.env.NODE_TEST_CONTEXT) {
  // `node --test test/` runs every module under test/: this one is a command, not a test.
  console.log('# test/screenshots.mjs is a command (node test/screenshots.mjs), not a test: skipped');
} else if (runDirectly) {
  await main();
}
