// Real-browser test harness: Debian's Chromium driven by playwright-core (a dev-only
// dependency; it never downloads a browser of its own), a static server that puts pages
// on another origin than the sync server, console-error collection, screenshots, and a
// JSON-lines child process for live Python fixtures.
//
//     import { browserSupport, launchChromium, serveStatic, watchConsole } from './browser/harness.mjs';
//     const support = await browserSupport();           // {ok, reason}: skip loudly when !ok
//     const browser = await launchChromium();
//     const site = await serveStatic(folder);            // site.url('page.html'), site.close()
//     const context = await browser.newContext();
//     const console_ = watchConsole(context);             // every page of the context
//     ...
//     assert.deepEqual(console_.unexpected(), []);
//
// Used by test/browser.test.mjs; meant to be reused by other browser tests (the live
// inspector, the examples) and by scripts that take screenshots.
import { spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, statSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';

/** Where Debian's `chromium` package puts the browser; CHROMIUM overrides it. */
export const CHROMIUM_PATH = process.env.CHROMIUM || '/usr/bin/chromium';

/** The flags this machine needs: no sandbox as root, and no background traffic (the
 * network is closed, and Chromium would otherwise try to reach Google at every start). */
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let playwright;

/** playwright-core, or null when it is not installed (`npm install` brings it). */
export async function loadPlaywright() {
  if (playwright === undefined) {
    try {
      playwright = await import('playwright-core');
    } catch {
      playwright = null;
    }
  }
  return playwright;
}

/** Whether real-browser tests can run here: {ok: true} or {ok: false, reason}. */
export async function browserSupport() {
  if (!existsSync(CHROMIUM_PATH)) {
    return { ok: false, reason: `no Chromium at ${CHROMIUM_PATH}: install it with \`apt-get install -y chromium\` (or set CHROMIUM=/path/to/chrome)` };
  }
  if (!(await loadPlaywright())) {
    return { ok: false, reason: 'playwright-core is not installed: run `npm install` in the repository (a devDependency)' };
  }
  return { ok: true };
}

/** Launches headless Chromium with the machine's flags (extra `args` are appended). */
export async function launchChromium({ args = [], ...options } = {}) {
  const pw = await loadPlaywright();
  if (!pw) throw new Error('playwright-core is not installed: run `npm install`');
  return pw.chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    timeout: 30000,
    ...options,
  });
}

const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain; charset=utf-8',
};

/** Serves the files under `root` on `http://host:port` (port 0: a free one), so that a
 * page lives on another origin than the sync server. Every answer is `no-store` (a page
 * is always fetched afresh; only what the sync server allows is cached). `requests`
 * records "METHOD /path" of every request. Returns {origin, port, url(path), requests,
 * close()}. */
export function serveStatic(root, { host = '127.0.0.1', port = 0 } = {}) {
  const base = path.resolve(root);
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.resolve(base, '.' + (pathname.endsWith('/') ? pathname + 'index.html' : pathname));
    let found = false;
    try {
      found = (file === base || file.startsWith(base + path.sep)) && statSync(file).isFile();
    } catch {
      found = false;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
    } else if (!found) {
      res.writeHead(404, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' }).end('not found');
    } else {
      res.writeHead(200, {
        'Content-Type': CONTENT_TYPES[path.extname(file)] || 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const bound = server.address().port;
      const origin = `http://${host}:${bound}`;
      resolve({
        origin,
        port: bound,
        requests,
        url: (file = '') => `${origin}/${file.replace(/^\//, '')}`,
        close: () => new Promise((done) => {
          server.closeAllConnections?.();
          server.close(() => done());
        }),
      });
    });
  });
}

/** Collects what pages report as errors: `console.error` messages (Chromium also logs a
 * failed request there, e.g. "Failed to load resource: net::ERR_CONNECTION_REFUSED") and
 * uncaught exceptions or rejections ('pageerror'). `target` is a page or a browser
 * context (then every page it opens, now or later). `allow(test)` declares errors that
 * are expected, by RegExp over the text or by a function of the entry; `unexpected()`
 * answers the others. Entries: {kind: 'console' | 'pageerror', text, url, page}. */
export function watchConsole(target, { echo = !!process.env.BROWSER_CONSOLE } = {}) {
  const all = [];
  const allowed = [];
  const watched = new WeakSet();
  const watchPage = (page) => {
    if (watched.has(page)) return;
    watched.add(page);
    page.on('console', (message) => {
      if (echo) process.stderr.write(`[browser ${message.type()}] ${message.text()}\n`);
      if (message.type() !== 'error') return;
      all.push({ kind: 'console', text: message.text(), url: message.location()?.url || '', page: page.url() });
    });
    page.on('pageerror', (error) => {
      if (echo) process.stderr.write(`[browser pageerror] ${error.stack || error}\n`);
      all.push({ kind: 'pageerror', text: String(error?.stack || error), url: '', page: page.url() });
    });
  };
  if (typeof target.pages === 'function') {
    for (const page of target.pages()) watchPage(page);
    target.on('page', watchPage);
  } else {
    watchPage(target);
  }
  const isAllowed = (entry) => allowed.some((test) => (test instanceof RegExp ? test.test(entry.text) : test(entry)));
  return {
    all,
    allow(test) {
      allowed.push(test);
    },
    unexpected: () => all.filter((entry) => !isAllowed(entry)),
    expected: () => all.filter(isAllowed),
  };
}

/** Saves a PNG of `page` at `file` (folders made as needed). Width and height set the
 * viewport first (default: keep it); `fullPage` takes the whole scrollable page. */
export async function screenshot(page, file, { width, height, fullPage = false } = {}) {
  if (width || height) {
    const current = page.viewportSize() || { width: 1280, height: 720 };
    await page.setViewportSize({ width: width || current.width, height: height || current.height });
  }
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  return page.screenshot({ path: file, fullPage });
}

/** Polls `condition` (sync or async) until it returns something truthy, and returns it;
 * throws "timed out waiting for <what>" (with the last value seen) after `timeout` ms. */
export async function waitFor(condition, what, timeout = 10000, interval = 25) {
  const start = Date.now();
  let last;
  for (;;) {
    last = await condition();
    if (last) return last;
    if (Date.now() - start > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/** Starts a child process that prints one JSON line on start and then answers one JSON
 * line per JSON-line command on stdin (test/fixture_server.py speaks so). Returns the
 * first line's fields plus cmd(command) (rejects on {ok: false}) and kill(). */
export async function startJsonLinesProcess(command, args = [], { cwd } = {}) {
  const child = spawn(command, args, { cwd, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const nextLine = async () => {
    const { value, done } = await lines.next();
    if (done) {
      const { code, signal } = await exited;
      throw new Error(`${path.basename(args[0] || command)} exited (code ${code}, signal ${signal})`);
    }
    return JSON.parse(value);
  };
  const hello = await nextLine();
  let queue = Promise.resolve();
  return {
    ...hello,
    child,
    cmd(message) {
      const reply = queue.then(() => {
        child.stdin.write(JSON.stringify(message) + '\n');
        return nextLine();
      });
      queue = reply.catch(() => {});
      return reply.then((answer) => {
        if (!answer.ok) throw new Error(`${message.cmd}: ${answer.error}`);
        return answer;
      });
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin.end();
      const timer = setTimeout(() => child.kill(), 2000);
      await exited;
      clearTimeout(timer);
    },
  };
}
