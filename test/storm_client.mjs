// A Node client in a storm of writes, for test_durability.py (not a node:test suite).
//
//   node test/storm_client.mjs <url> <token> <name> [--updates] [--every ms]
//
// Connects with ../dsn_client.js (mirror in memory: indexedDB null), waits for the first
// sync, then writes without waiting for answers: creates of `items/<name>-<n>` with
// {by, v: n} every `--every` ms, and with --updates, every third step an update {u: n}
// of a key whose create was acknowledged. Writes made while the server is down wait in
// the outbox. One JSON line per event on stdout:
//   {"ready": true, "resets": r, "cursor": {...}}
//   {"ack": key, "op": "create"|"update", "value": n, "issued": ms, "acked": ms,
//    "visible": whether the mirror showed the acknowledged state right after, "epoch": cursor's}
//   {"fail": key, "op": ..., "value": n, "code": ..., "message": ...}
//   {"reset": {pages, records, done}, "resets": r}          each completed reset
// Commands on stdin, one JSON line each:
//   {"cmd": "stop"}    stop writing, wait (<= 60 s) for every write to be answered, then
//                      {"stopped": true, "unanswered": n, "pending": n, "resets": r}
//   {"cmd": "mirror"}  {"mirror": {items, feed}, "pending": n, "resets": r, "cursor": {...}}
//   {"cmd": "exit"}    close and exit
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const { connectDSN } = await import(pathToFileURL(path.join(here, '..', 'dsn_client.js')).href);

const [url, token, name, ...rest] = process.argv.slice(2);
const withUpdates = rest.includes('--updates');
const everyAt = rest.indexOf('--every');
const every = everyAt >= 0 ? Number(rest[everyAt + 1]) : 5;

const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const client = connectDSN(url, token, { indexedDB: null, retryMin: 30, retryMax: 300, wait: 5 });
let resets = 0;
client.onStatus((status) => {
  if (status.reset && status.reset.done) {
    resets++;
    print({ reset: status.reset, resets });
  }
});

await client.ready;
print({ ready: true, resets, cursor: client.cursor });

let writing = true;
const outstanding = new Set();
const acked = []; // keys whose create was acknowledged, for updates

function track(op, key, value) {
  const issued = Date.now();
  const promise = (op === 'create' ? client.create('items', key, { by: name, v: value }) : client.update('items', key, { u: value }))
    .then(
      async () => {
        const ackedAt = Date.now();
        if (op === 'create') acked.push(key);
        // Read your writes: is the acknowledged state in the mirror right away?
        const record = await client.get('items', key);
        // (a later update of the same key may already be in the outbox, and get() shows it)
        const visible = record !== undefined && (op === 'create' ? record.v === value : record.u >= value);
        print({ ack: key, op, value, issued, acked: ackedAt, visible, epoch: client.cursor?.epoch ?? null });
      },
      (error) => print({ fail: key, op, value, issued, code: error?.code ?? null, message: String(error?.message ?? error) }),
    )
    .finally(() => outstanding.delete(promise));
  outstanding.add(promise);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const writer = (async () => {
  for (let n = 0; writing; n++) {
    if (withUpdates && n % 3 === 2 && acked.length) {
      track('update', acked[(n * 7919) % acked.length], n);
    } else {
      track('create', `${name}-${String(n).padStart(6, '0')}`, n);
    }
    await sleep(every);
  }
})();

async function stop() {
  writing = false;
  await writer;
  const deadline = Date.now() + 60000;
  while (outstanding.size && Date.now() < deadline) await sleep(20);
  print({ stopped: true, unanswered: outstanding.size, pending: client.pending().length, resets });
}

const commands = readline.createInterface({ input: process.stdin });
for await (const line of commands) {
  if (!line.trim()) continue;
  const { cmd } = JSON.parse(line);
  if (cmd === 'stop') await stop();
  else if (cmd === 'mirror') {
    print({
      mirror: { items: await client.getAll('items'), feed: await client.getAll('feed') },
      pending: client.pending().length,
      resets,
      cursor: client.cursor,
    });
  } else if (cmd === 'exit') break;
  else print({ error: `unknown command ${cmd}` });
}
client.close();
process.exit(0);
