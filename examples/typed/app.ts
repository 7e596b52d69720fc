// A typed dsn-sync app: the tables are named once, and tsc --strict checks every table
// name, every field written and every record read. Checked by test/types.test.mjs with
// `tsc -p examples/typed` (no emit); the imports resolve as an app's do, through the
// package name and its "exports".
import { connectDSN, DSNError, newId } from 'dsn-sync-client';
import type { DSNStatus } from 'dsn-sync-client';

// Records without their key field: the key is the map's key (users are keyed by user_id).
interface User {
  name: string;
  email: string;
  status?: 'active' | 'away';
}

interface Message {
  room: string;
  author: string;
  text: string;
  at: number;
}

type Tables = { users: User; messages: Message };

const client = connectDSN<Tables>('http://127.0.0.1:3000/sync/0123456789abcdef', () => fetchToken(), {
  firstSyncTimeout: 5000,
  retryMax: 10000,
});

async function fetchToken(): Promise<string> {
  const answer = await fetch('/dsn-token', { credentials: 'same-origin' });
  return answer.text();
}

// Reads: Record<string, User> and User | undefined.
const users = await client.getAll('users');
for (const [userId, user] of Object.entries(users)) console.log(userId, user.name.toUpperCase());

const ada = await client.get('users', 'user_001');
if (ada) console.log(ada.email);

// Writes: create takes the whole record, update a part of it.
await client.create('users', 'user_004', { name: 'Dana', email: 'dana@example.com' });
await client.update('users', 'user_004', { status: 'active' });

try {
  await client.delete('users', 'user_004');
} catch (error) {
  // error.code is a union of the protocol's codes and the client's own.
  if (error instanceof DSNError && error.code === 'not_found') console.log('already deleted');
  else if (error instanceof DSNError && error.code === 'unauthorized') console.log('log in again');
  else throw error;
}

// Live data: the callback gets the table as Record<string, Message>.
const off = client.onDataChange('messages', (all) => {
  const lobby = Object.values(all).filter((m) => m.room === 'lobby').sort((a, b) => a.at - b.at);
  for (const message of lobby) console.log(`${message.author}: ${message.text}`);
});
await client.create('messages', newId(), { room: 'lobby', author: 'alice', text: 'hi bob', at: Date.now() });
off();

// Status: the notices first (they carry the state unchanged), then the state.
function describe(status: DSNStatus): string {
  if ('reset' in status) return `loading: ${status.reset.pages} pages${status.reset.done ? ', done' : ''}`;
  if ('blocked' in status) return 'waiting for another tab to let the database upgrade';
  if (status.code === 'no_persistence' || status.code === 'first_sync_timeout') return status.message;
  switch (status.state) {
    case 'connecting':
      return 'connecting';
    case 'online':
      return `online at ${status.epoch}/${status.seq}`;
    case 'offline':
      return `offline (${status.code}), retrying in ${Math.round(status.retryIn / 1000)} s`;
    case 'error':
      return `error ${status.code}: ${status.message}`;
  }
}
client.onStatus((status) => console.log(describe(status)));

client.onSync(({ cursor, pending }) => {
  if (cursor) console.log(`at seq ${cursor.seq} (schema v${cursor.sv}), ${pending} writes queued`);
});
for (const write of client.pending()) {
  if (write.op !== 'delete' && write.table === 'messages') console.log('queued message:', write.data.text);
}
for (const [table, { key, fields }] of Object.entries(client.schema)) console.log(table, key, fields ?? 'any fields');

await client.ready;
client.close();
