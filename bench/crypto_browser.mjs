#!/usr/bin/env node
// The client's crypto in a real browser (issue 6): bench_crypto.mjs's figures measured
// inside headless Chromium instead of Node. In one page, through dsn_client.js's
// `_internals`: SHAKE256 squeeze (1 MiB output) and absorb (1 MiB input), then seal and
// open of 1 MiB with HMAC by crypto.subtle (async `seal`/`open`) and by the pure-JS path
// (`sealSync`/`openSync`). js-sha3's shake256 is measured in the same page, alternating
// with ours, when it can be found (a dev-only tool, never a dependency of the repo):
//
//     npm install --prefix /tmp/jssha3 js-sha3      # optional; or JS_SHA3=<dir of js-sha3>
//     node bench/crypto_browser.mjs [--rounds 5] [--round-ms 300] [--timeout 180]
//
// Method (the same as bench_crypto.mjs): each contender is called 3 times to warm up,
// then the contenders of a group run in alternating rounds of ~300 ms each, and the best
// round of each is printed (MB = 10^6 bytes), so that other work on the machine costs as
// little as possible of the figure. Every line is also checked once for correctness
// (open(seal(x)) == x both ways; js-sha3 and dsn_client agree on SHAKE256) before timing.
//
// What it starts (loopback only), and closes at the end, on failure or after --timeout:
// harness's static server on 127.0.0.1 serving a temporary folder (an empty page, a copy
// of ../dsn_client.js, and js-sha3's build/sha3.mjs when found), and headless
// /usr/bin/chromium through test/browser/harness.mjs (its flags). A benchmark, not a test.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { browserSupport, launchChromium, serveStatic, CHROMIUM_PATH } from '../test/browser/harness.mjs';

if (process.env.NODE_TEST_CONTEXT) {
  console.log('bench/crypto_browser.mjs is a benchmark, not a test; run it with: node bench/crypto_browser.mjs');
  process.exit(0);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} wants a positive number`);
  return value;
}
const ROUNDS = option('rounds', 5);
const ROUND_MS = option('round-ms', 300);
const TIMEOUT_S = option('timeout', 180);

/** js-sha3's folder: $JS_SHA3, else the temporary install the header suggests, else
 * whatever Node would resolve from NODE_PATH. Null when none has build/sha3.mjs. */
function findJsSha3() {
  const candidates = [];
  if (process.env.JS_SHA3) candidates.push(process.env.JS_SHA3);
  candidates.push('/tmp/jssha3/node_modules/js-sha3');
  for (const dir of (process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)) candidates.push(path.join(dir, 'js-sha3'));
  for (const dir of candidates) {
    if (existsSync(path.join(dir, 'build', 'sha3.mjs'))) {
      let version = '?';
      try {
        version = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
      } catch {}
      return { dir, version };
    }
  }
  return null;
}

/** Runs inside the page: everything is measured there, nothing crosses to Node but the
 * results. Mirrors bench_crypto.mjs. */
async function benchInPage({ rounds, roundMs, withJsSha3 }) {
  const { _internals } = await import('/dsn_client.js');
  const { shake256, Shake256, seal, open, sealSync, openSync, randomBytes, equalBytes } = _internals;
  const jsSha3 = withJsSha3 ? await import('/sha3.mjs') : null;
  const MiB = 1 << 20;

  async function measure(fn, bytesPerRun) {
    let runs = 0;
    const start = performance.now();
    while (performance.now() - start < roundMs) {
      await fn();
      runs++;
    }
    return (runs * bytesPerRun) / ((performance.now() - start) / 1000) / 1e6;
  }
  const lines = [];
  async function compare(contenders, bytesPerRun = MiB) {
    const best = contenders.map(() => 0);
    for (const [, fn] of contenders) for (let i = 0; i < 3; i++) await fn();
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < contenders.length; i++) best[i] = Math.max(best[i], await measure(contenders[i][1], bytesPerRun));
    }
    contenders.forEach(([label], i) => lines.push([label, best[i]]));
  }

  const data = randomBytes(MiB);
  const key = randomBytes(64);
  const aad = new TextEncoder().encode('dsn-sync/v1 req\n/sync/0123456789abcdef');
  const out = new Uint8Array(MiB);

  // Correctness first: a fast wrong answer is no figure.
  const sealed = await seal(key, aad, data);
  const sealedSync = sealSync(key, aad, data);
  if (!equalBytes(openSync(key, aad, sealed), data)) throw new Error('openSync(seal(x)) != x');
  if (!equalBytes(await open(key, aad, sealedSync), data)) throw new Error('open(sealSync(x)) != x');
  if (jsSha3) {
    const theirs = Uint8Array.from(jsSha3.shake256.array(data, 256));
    if (!equalBytes(shake256(data, 32), theirs)) throw new Error('js-sha3 and dsn_client disagree on SHAKE256(1 MiB)');
    const ours = new Uint8Array(4096);
    new Shake256().update(aad).squeezeXor(null, ours);
    if (!equalBytes(ours, Uint8Array.from(jsSha3.shake256.array(aad, 4096 * 8)))) throw new Error('js-sha3 and dsn_client disagree on a SHAKE256 squeeze');
  }

  const squeeze = [['dsn_client SHAKE256 squeeze (1 MiB output)', () => new Shake256().update(aad).squeezeXor(null, out)]];
  const absorb = [['dsn_client SHAKE256 absorb (1 MiB input)', () => shake256(data, 32)]];
  if (jsSha3) {
    squeeze.push(['js-sha3 SHAKE256 squeeze (1 MiB output)', () => jsSha3.shake256.array(aad, MiB * 8)]);
    absorb.push(['js-sha3 SHAKE256 absorb (1 MiB input)', () => jsSha3.shake256.array(data, 256)]);
  }
  await compare(squeeze);
  await compare(absorb);
  await compare([
    ['seal 1 MiB (HMAC by crypto.subtle)', () => seal(key, aad, data)],
    ['open 1 MiB (HMAC by crypto.subtle)', () => open(key, aad, sealed)],
    ['seal 1 MiB (pure JS, no crypto.subtle)', () => sealSync(key, aad, data)],
    ['open 1 MiB (pure JS, no crypto.subtle)', () => openSync(key, aad, sealed)],
  ]);
  return { lines, userAgent: navigator.userAgent, secure: globalThis.isSecureContext, subtle: !!globalThis.crypto?.subtle };
}

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').trim();
const command = ['node', path.relative(process.cwd(), fileURLToPath(import.meta.url)) || 'bench/crypto_browser.mjs', ...process.argv.slice(2)].join(' ');

const support = await browserSupport();
if (!support.ok) {
  console.error(`cannot run: ${support.reason}`);
  process.exit(2);
}

const folder = mkdtempSync(path.join(os.tmpdir(), 'dsn-crypto-browser-'));
let site = null;
let browser = null;
let closing = null;
async function cleanup() {
  closing ??= (async () => {
    await browser?.close().catch(() => {});
    await site?.close().catch(() => {});
    rmSync(folder, { recursive: true, force: true });
  })();
  return closing;
}
const deadline = setTimeout(async () => {
  console.error(`timed out after ${TIMEOUT_S} s; closing the browser`);
  await cleanup();
  process.exit(1);
}, TIMEOUT_S * 1000);

let exitCode = 0;
try {
  const jsSha3 = findJsSha3();
  copyFileSync(path.join(repo, 'dsn_client.js'), path.join(folder, 'dsn_client.js'));
  if (jsSha3) copyFileSync(path.join(jsSha3.dir, 'build', 'sha3.mjs'), path.join(folder, 'sha3.mjs'));
  writeFileSync(path.join(folder, 'index.html'), '<!doctype html><meta charset="utf-8"><title>dsn-sync crypto bench</title>\n');

  site = await serveStatic(folder); // 127.0.0.1, a free port
  browser = await launchChromium();
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  await page.goto(site.url('index.html'));

  console.log(`command: ${command}`);
  console.log(`chromium ${browser.version()} (${CHROMIUM_PATH}, headless); node ${process.version} drives it`);
  console.log(`loadavg before: ${loadavg()}`);
  console.log(`MB = 10^6 bytes; best of ${ROUNDS} alternating ${ROUND_MS} ms rounds, measured inside the page`);
  if (jsSha3) console.log(`js-sha3 ${jsSha3.version} (build/sha3.mjs from ${jsSha3.dir}) measured in the same page`);
  else console.log('js-sha3 not available (npm install --prefix /tmp/jssha3 js-sha3, or JS_SHA3=<dir>): not compared');

  const result = await page.evaluate(benchInPage, { rounds: ROUNDS, roundMs: ROUND_MS, withJsSha3: !!jsSha3 });
  if (!result.secure || !result.subtle) console.log(`warning: isSecureContext=${result.secure}, crypto.subtle=${result.subtle}`);
  for (const [label, mbps] of result.lines) console.log(`${label.padEnd(44)} ${mbps.toFixed(1).padStart(7)} MB/s`);
  console.log(`user agent: ${result.userAgent}`);
  console.log(`loadavg after: ${loadavg()}`);
  if (errors.length) {
    console.error(`page errors:\n  ${errors.join('\n  ')}`);
    exitCode = 1;
  }
} catch (error) {
  console.error(error?.stack || String(error));
  exitCode = 1;
} finally {
  clearTimeout(deadline);
  await cleanup();
}
process.exit(exitCode);
