// What the JavaScript tests share: one wait, and a live dsn_sync.py fixture.
//
//     import { startFixture, waitFor } from './helpers.mjs';
//     const fixture = await startFixture();                 // test/fixture_server.py
//     const other = await startFixture('browser_fixture.py');
//     await fixture.cmd({ cmd: 'sync', table: 'users', key: 'u1', data: { name: 'Ada' } });
//     await waitFor(() => seen.length === 1, 'the first call');
//     const IDBFactory = await fakeIndexedDB();             // null without the dev dependency
//     const server = fakeServer((request) => ...);          // a scripted stand-in: {token, fetch, ...}
//
// A fixture is a child process that prints one JSON line ({url, token, port, secret,
// epoch}) and answers one JSON line per command (test/fixture_server.py lists them). Every
// fixture is killed when the test file ends; one given a test context `t` is killed when
// that test ends.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { startJsonLinesProcess, waitFor } from './browser/harness.mjs';
import { _internals } from '../dsn_client.js';

/** Polls `condition` (sync or async) until it returns something truthy, and returns it;
 * throws "timed out after <timeout> ms waiting for <what>" otherwise. Defined in the
 * browser harness, which browser scripts import on their own. */
export { waitFor };

const here = path.dirname(fileURLToPath(import.meta.url));
const started = new Set();
after(() => Promise.all([...started].map((fixture) => fixture.kill())));

/** Starts test/<script> (default fixture_server.py) with `args` under $PYTHON or python3;
 * answers the first line's fields plus cmd(command) and kill(). */
export async function startFixture(script = 'fixture_server.py', args = [], { t } = {}) {
  const fixture = await startJsonLinesProcess(process.env.PYTHON || 'python3', [path.join(here, script), ...args.map(String)]);
  started.add(fixture);
  if (t) t.after(() => fixture.kill());
  return fixture;
}

/** fake-indexeddb's IDBFactory, or null when the dev dependency is not installed (`npm install`). */
export async function fakeIndexedDB() {
  try {
    return (await import('fake-indexeddb')).IDBFactory;
  } catch {
    return null;
  }
}

const { b64uEncode, randomBytes, deriveTrafficKeys, openRequestFrame, buildResponseFrame, buildStreamMessage, STREAM_TYPE } = _internals;
const FAKE_BASE = '/sync/00112233445566ff';

/** A stand-in server for the client's `fetch` option, scripted by `answer(request) ->
 * response fields | {status} | {raw} | {stream} | {fallback}`; it opens each request with the
 * client's own frame functions (a frame that does not open fails the test) and answers under
 * `/sync/00112233445566ff`. Pulls that `answer` leaves undefined are parked until the test
 * calls `release(fields)`. `{stream: async ({message, write}) => ...}` answers a streamed
 * pull: `message(i, fields)` is message i with its length prefix (sealed with i, as the
 * server does), `write(bytes)` puts bytes on the body; the body ends when the function
 * returns. `{fallback: [fields, ...]}` is a streamed answer to a fetch without streaming
 * bodies (only arrayBuffer()). Returns {token, fetch, requests, release, parked}. */
export function fakeServer(answer) {
  const tokenSecret = randomBytes(32);
  const token = `dsn1.${b64uEncode(randomBytes(24))}.${b64uEncode(tokenSecret)}`;
  const { c2s, s2c } = deriveTrafficKeys(tokenSecret);
  const parked = [];
  const requests = [];
  const sealed = (fields) => JSON.stringify({ ok: true, now: Date.now(), ep: `${FAKE_BASE}/ep`, ...fields });
  const fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const opened = await openRequestFrame(c2s, path, init.body);
    assert.ok(opened, `a request frame that does not open at ${path}`);
    const request = JSON.parse(opened.json);
    requests.push(request);
    let fields = await answer(request);
    if (fields === undefined) {
      fields = await new Promise((resolve, reject) => {
        parked.push(resolve);
        init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      });
    }
    if (fields.status) return new Response(null, { status: fields.status });
    if (fields.stream) {
      const message = (index, msg) => buildStreamMessage(s2c, opened.nonce, index, sealed(msg));
      let cancelled = false;
      const body = new ReadableStream({
        start(controller) {
          const write = (bytes) => {
            if (cancelled) throw new Error('the client dropped the stream');
            controller.enqueue(bytes);
          };
          fields.stream({ message, write }).then(() => controller.close(), () => {});
        },
        cancel() {
          cancelled = true;
        },
      });
      return new Response(body, { status: 200, headers: { 'Content-Type': STREAM_TYPE } });
    }
    if (fields.fallback) {
      // A fetch without streaming bodies: no response.body, only arrayBuffer() of the whole.
      const bytes = [];
      for (const [index, msg] of fields.fallback.entries()) {
        bytes.push(...await buildStreamMessage(s2c, opened.nonce, index, sealed(msg)));
      }
      return { status: 200, headers: new Headers({ 'content-type': STREAM_TYPE }), arrayBuffer: async () => Uint8Array.from(bytes).buffer };
    }
    if (fields.raw) return new Response(fields.raw, { status: 200 });
    return new Response(await buildResponseFrame(s2c, opened.nonce, sealed(fields)), { status: 200 });
  };
  const release = (fields) => parked.shift()(fields);
  return { token, fetch, requests, release, parked };
}
