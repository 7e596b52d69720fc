// Regenerates the screenshots in docs/ from the real thing: `node test/screenshots.mjs`.
//
//   docs/inspector.png        the live inspector at 1280x800 (python -m dsn_sync --demo)
//   docs/inspector-phone.png  the same at 390x844
//   docs/chat.png             examples/chat.py, Alice's window after a short exchange
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

async function main() {
  const support = await browserSupport();
  if (!support.ok) {
    console.error(`cannot take screenshots: ${support.reason}`);
    process.exit(1);
  }
  const only = process.argv.slice(2);
  const want = (name) => !only.length || only.includes(name);
  const docs = path.join(repoRoot, 'docs');
  const browser = await launchChromium();
  const scheme = process.env.SCREENSHOT_SCHEME || 'light';
  try {
    if (want('inspector')) {
      const demo = await startDemo();
      try {
        for (const [file, viewport, scale] of [['inspector.png', { width: 1280, height: 800 }, 1], ['inspector-phone.png', { width: 390, height: 844 }, 2]]) {
          if (!want('inspector')) continue;
          const context = await browser.newContext({ viewport, deviceScaleFactor: scale, colorScheme: scheme });
          const page = await context.newPage();
          await openInspector(page, demo.info.inspector, demo.info.token, ['users', 'metrics']);
          await waitFor(async () => (await chartPoints(page)) >= 12, 'a dozen points on the chart', 30000);
          await page.waitForTimeout(2500);
          await screenshot(page, path.join(docs, file));
          console.log(`wrote docs/${file}`);
          await context.close();
        }
      } finally {
        await demo.stop();
      }
    }
    if (want('chat')) {
      const chat = await startExample('chat');
      try {
        const context = await browser.newContext({ viewport: { width: 900, height: 620 }, deviceScaleFactor: 1, colorScheme: scheme });
        const [alice, bob] = await Promise.all([context.newPage(), context.newPage()]);
        await alice.goto(chat.info.pages[0]);
        await bob.goto(chat.info.pages[1]);
        await alice.waitForSelector('#status[data-state="online"]');
        await bob.waitForSelector('#status[data-state="online"]');
        const say = async (page, text) => {
          await page.fill('#text', text);
          await page.press('#text', 'Enter');
          await page.waitForTimeout(400);
        };
        await say(alice, 'Hi Bob! Did the new build go out?');
        await say(bob, 'It did, 10 minutes ago. All green.');
        await say(alice, 'Great. The dashboard shows it already 🎉');
        await alice.waitForFunction(() => document.querySelectorAll('.msg:not(.sending)').length >= 4);
        await alice.waitForTimeout(800);
        await screenshot(alice, path.join(docs, 'chat.png'));
        console.log('wrote docs/chat.png');
        await context.close();
      } finally {
        await chat.stop();
      }
    }
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
