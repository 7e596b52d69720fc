// What a new user hit (issue 13 part 5) and the client side of protocol 1.1 (issue 10):
// close() lets Node exit at once; after a 401 a write says `unauthorized`; https against a
// plain-http server says so; a token with whitespace around it works; newId(); hello says
// pv 1.1; acks are judged by the epoch the server puts in write answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { fakeServer, startFixture, waitFor } from './helpers.mjs';
import { connectDSN, newId, DSNError } from '../dsn_client.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientUrl = pathToFileURL(path.join(here, '..', 'dsn_client.js')).href;
const FAST = { retryMin: 30, retryMax: 300, wait: 5 };

const shared = await startFixture();

const isCode = (code) => (error) => {
  assert.ok(error instanceof DSNError, `expected a DSNError, got ${error}`);
  assert.equal(error.code, code, error.message);
  return true;
};

/** Runs `source` (an ES module) in a child Node process; resolves {code, stdout, stderr, ms}. */
function runNode(source, args) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', source, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const killer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

test('close() releases everything: the Node process exits at once, not after the 25 s long poll', async () => {
  await shared.cmd({ cmd: 'sync', table: 'users', key: 'user_001', data: { name: 'Ada' } });
  const source = `
    import { connectDSN } from ${JSON.stringify(clientUrl)};
    const [url, token] = process.argv.slice(-2);
    const client = connectDSN(url, token);
    await client.ready;
    const all = await client.getAll('users');
    // As the issue's user did: close at once, while the next long poll (wait 25 s, the
    // default) is being sealed and sent.
    client.close();
    console.log(JSON.stringify(Object.keys(all)));
  `;
  const result = await runNode(source, [shared.url, shared.token]);
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(JSON.parse(result.stdout), ['user_001']);
  // The long poll would hold the process for 25 s; 5 s is a generous bound for "at once"
  // on a loaded machine, not a measurement.
  assert.ok(result.ms < 5000, `the process took ${result.ms} ms to exit after close()`);
});

test('after a 401, a later create rejects with `unauthorized`, not `closed`', async (t) => {
  const { token } = await shared.cmd({ cmd: 'mint', claims: {} });
  const client = connectDSN(shared.url, token, FAST);
  t.after(() => client.close());
  await client.ready;
  await shared.cmd({ cmd: 'revoke', token });
  await assert.rejects(client.create('users', 'user_401', { name: 'x' }), isCode('unauthorized'));
  await waitFor(() => client._status.code === 'unauthorized', 'the status to say unauthorized');
  await assert.rejects(client.create('users', 'user_402', { name: 'y' }), isCode('unauthorized'));
  await assert.rejects(client.update('users', 'user_001', { name: 'z' }), isCode('unauthorized'));
  client.close();
  await assert.rejects(client.delete('users', 'user_001'), isCode('unauthorized'), 'close() after the 401 keeps its reason');
});

test('an https URL pointed at a plain-http server: the status says the server may be speaking http', async (t) => {
  // A plain-http server that answers at once (the TLS hello is no request line: 400).
  const plain = http.createServer((request, response) => response.end('hi'));
  await new Promise((resolve) => plain.listen(0, '127.0.0.1', resolve));
  t.after(() => plain.close());
  const instance = shared.url.split('/sync/')[1];
  const client = connectDSN(`https://127.0.0.1:${plain.address().port}/sync/${instance}`, shared.token, { ...FAST, firstSyncTimeout: 100 });
  t.after(() => client.close());
  await waitFor(() => client._status.state === 'offline', 'the status to go offline');
  assert.match(client._status.message, /speaks plain http/);
  assert.match(client._status.message, new RegExp(`use http://127\\.0\\.0\\.1:${plain.address().port}`));
});

test('the same against the real dsn-sync server (it drops the TLS hello after its 10 s header timeout)', async (t) => {
  const client = connectDSN(shared.url.replace(/^http:/, 'https:'), shared.token, { ...FAST, firstSyncTimeout: 100 });
  t.after(() => client.close());
  await waitFor(() => client._status.state === 'offline', 'the status to go offline', 30000);
  assert.match(client._status.message, /speaks plain http/);
});

test('a refused connection on http gives no https hint', async (t) => {
  const client = connectDSN('http://127.0.0.1:9/sync/00112233445566ff', shared.token, { ...FAST, firstSyncTimeout: 100 });
  t.after(() => client.close());
  await waitFor(() => client._status.state === 'offline', 'the status to go offline');
  assert.doesNotMatch(client._status.message, /plain http/);
});

test('a token with spaces and a newline around it (copied from a terminal) is trimmed', async (t) => {
  const client = connectDSN(shared.url, `  ${shared.token}\n`, FAST);
  t.after(() => client.close());
  await client.ready;
  assert.equal(await client.create('messages', newId(), { text: 'trimmed' }), true);
  const fromFunction = connectDSN(shared.url, async () => `${shared.token}\r\n`, FAST);
  t.after(() => fromFunction.close());
  await fromFunction.ready;
  assert.throws(() => connectDSN(shared.url, ' dsn1.a b.c '), isCode('bad_token'), 'inner whitespace is still an error');
});

test('newId(): 22 URL-safe characters, random, and it works where crypto.randomUUID is missing', () => {
  const ids = new Set();
  for (let i = 0; i < 2000; i++) {
    const id = newId();
    assert.match(id, /^[A-Za-z0-9_-]{22}$/);
    ids.add(id);
  }
  assert.equal(ids.size, 2000);
  // A page on plain http:// over a LAN is not a secure context: no randomUUID there.
  Object.defineProperty(globalThis.crypto, 'randomUUID', { value: undefined, configurable: true });
  try {
    assert.match(newId(), /^[A-Za-z0-9_-]{22}$/);
  } finally {
    delete globalThis.crypto.randomUUID;
  }
  assert.equal(typeof globalThis.crypto.randomUUID, 'function', 'the prototype\'s randomUUID is back');
});

/* ---------------- protocol 1.1 against a scripted server ---------------- */

const BASE = '/sync/00112233445566ff'; // where helpers.mjs's fakeServer answers
const SCHEMA = { t: { key: 'id', fields: null } };

test('hello says pv 1.1; the server\'s answer without pv (1.0) works as before', async (t) => {
  const server = fakeServer((request) => {
    if (request.op === 'hello') return { instance: '00112233445566ff', epoch: 'e1', seq: 0, sv: 1, tables: SCHEMA };
    if (request.op === 'pull' && request.since === null) return { reset: true, epoch: 'e1', seq: 0, sv: 1, tables: SCHEMA, records: {}, more: false, next: null };
    if (request.op === 'create') return { seq: 1, record: { v: 1 } };
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  assert.equal(server.requests[0].op, 'hello');
  assert.equal(server.requests[0].pv, '1.1');
  assert.equal(client._serverVersion, '1.0');
  assert.equal(await client.create('t', 'k', { v: 1 }), true);
  assert.deepEqual(await client.get('t', 'k'), { v: 1 });
});

test('1.1: an ack from the server\'s new epoch (it restarted) is kept although its seq is below the old cursor\'s', async (t) => {
  // The cursor stands at e1/seq 50. The server restarts (epoch e2, empty) before the
  // write reaches it; the ack says e2/seq 1. Without the epoch, seq 1 <= 50 would look
  // like an old state the feed already carried, and the write would vanish from the
  // mirror until the reset; with it, the ack goes in and survives e2's reset at seq 0.
  let restarted = false;
  const server = fakeServer((request) => {
    if (request.op === 'hello') return { instance: '00112233445566ff', epoch: restarted ? 'e2' : 'e1', seq: restarted ? 0 : 50, sv: 1, tables: SCHEMA, pv: '1.1' };
    if (request.op === 'pull' && request.since === null) return { reset: true, epoch: 'e1', seq: 50, sv: 1, tables: SCHEMA, records: { t: { old: { v: 0 } } }, more: false, next: null };
    if (request.op === 'create') {
      restarted = true;
      return { epoch: 'e2', seq: 1, record: { v: 'mine' } };
    }
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  assert.equal(client._serverVersion, '1.1');
  await waitFor(() => server.parked.length === 1, 'the long poll');
  assert.equal(await client.create('t', 'k', { v: 'mine' }), true);
  assert.deepEqual(await client.get('t', 'k'), { v: 'mine' }, 'the ack from the new epoch is in the mirror');
  // The long poll now learns of e2: a reset taken at seq 0, before the write.
  server.release({ reset: true, epoch: 'e2', seq: 0, sv: 1, tables: SCHEMA, records: {}, more: false, next: null });
  await waitFor(() => client.cursor?.epoch === 'e2', 'the reset into e2');
  assert.deepEqual(await client.get('t', 'k'), { v: 'mine' }, 'the reset at seq 0 does not undo the ack at seq 1');
  assert.equal(await client.get('t', 'old'), undefined, 'the old epoch\'s records are gone');
  // A later pull of e2 that carries k past the ack's seq wins.
  await waitFor(() => server.parked.length === 1, 'the next long poll');
  server.release({ epoch: 'e2', seq: 2, changes: [['t', 'k', { v: 'backend' }]] });
  await waitFor(async () => (await client.get('t', 'k'))?.v === 'backend', 'the newer state');
});

test('1.1: an ack in the cursor\'s epoch at or below the cursor is stale (the feed already carried a newer state)', async (t) => {
  let ackNow;
  const gate = new Promise((resolve) => {
    ackNow = resolve;
  });
  const server = fakeServer(async (request) => {
    if (request.op === 'hello') return { instance: '00112233445566ff', epoch: 'e1', seq: 0, sv: 1, tables: SCHEMA, pv: '1.1' };
    if (request.op === 'pull' && request.since === null) return { reset: true, epoch: 'e1', seq: 0, sv: 1, tables: SCHEMA, records: {}, more: false, next: null };
    if (request.op === 'create') {
      await gate;
      return { epoch: 'e1', seq: 2, record: { v: 'mine' } };
    }
    return undefined;
  });
  const client = connectDSN(`http://127.0.0.1:9${BASE}`, server.token, { ...FAST, fetch: server.fetch });
  t.after(() => client.close());
  await client.ready;
  await waitFor(() => server.parked.length === 1, 'the long poll');
  const write = client.create('t', 'k', { v: 'mine' });
  server.release({ epoch: 'e1', seq: 3, changes: [['t', 'k', { v: 'backend at 3' }]] });
  await waitFor(() => client.cursor.seq === 3, 'the pull');
  ackNow();
  assert.equal(await write, true);
  assert.deepEqual(await client.get('t', 'k'), { v: 'backend at 3' });
});

for (const when of ['before the server reads it', 'after the server answered it']) {
test(`a write on a connection dropped under it (${when}) is sent again at once, applied once, not reported offline`, async (t) => {
  // A real proxy in front of the real server passes bytes both ways, except for the one write
  // it is armed for (the first request over 2000 bytes after it is armed): it either swallows the
  // request and closes the connection, as a server closes an idle kept-alive connection just as
  // the client reuses it, or passes it on and closes the connection instead of passing back the
  // answer, so the server has applied the write the client never heard about.
  const [host, port] = new URL(shared.url).host.split(':');
  let armed = false;
  let dropped = 0;
  const proxy = net.createServer((inbound) => {
    const outbound = net.connect(Number(port), host);
    let victim = false;
    inbound.on('data', (chunk) => {
      if (armed && chunk.length > 2000) {  // the write: its frame carries 3000 bytes of text; a pull's is some 600
        armed = false;
        dropped++;
        if (when.startsWith('before')) {
          inbound.destroy();
          outbound.destroy();
          return;
        }
        victim = true;
      }
      outbound.write(chunk);
    });
    outbound.on('data', (chunk) => {
      if (victim) {
        inbound.destroy();
        outbound.destroy();
      } else inbound.write(chunk);
    });
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
    inbound.on('close', () => outbound.destroy());
    outbound.on('close', () => inbound.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  t.after(() => proxy.close());
  const url = shared.url.replace(`:${port}/`, `:${proxy.address().port}/`);
  const client = connectDSN(url, shared.token, FAST);
  t.after(() => client.close());
  await client.ready;
  const states = [];
  client.onStatus((s) => states.push(s.state));
  const key = `dropped-${when.split(' ')[0]}`;
  const before = (await shared.cmd({ cmd: 'calls' })).result.filter((c) => c[2] === key).length;
  armed = true;
  await client.create('messages', key, { text: 'x'.repeat(3000) });
  assert.equal(dropped, 1, 'the proxy dropped one connection under the write');
  assert.ok(!states.includes('offline'), `the status went ${states.join(' -> ')}`);
  const row = await shared.cmd({ cmd: 'get', table: 'messages', key });
  assert.equal(row.result.text.length, 3000);
  const calls = (await shared.cmd({ cmd: 'calls' })).result.filter((c) => c[2] === key);
  assert.equal(calls.length - before, 1, 'the handler ran once: the retry was answered from the ledger');
});
}
