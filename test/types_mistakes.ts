// Deliberate mistakes that dsn_client.d.ts must refuse: test/types.test.mjs compiles this
// file with tsc --strict and expects exactly one error on each line marked
// `// mistake: <name>`, of the kind its table names, and no error anywhere else. If the
// types became too loose (an `any`, a string where a union belongs), a mistake would
// compile and the test would fail.
import { connectDSN, DSNError } from '../dsn_client.js';
import { _internals } from '../dsn_client.js'; // mistake: internals-are-private

interface User {
  name: string;
  email: string;
  status?: 'active' | 'away';
}
interface Message {
  room: string;
  text: string;
  at: number;
}

const client = connectDSN<{ users: User; messages: Message }>('http://127.0.0.1:3000/sync/0123456789abcdef', 'dsn1.kid.secret');

await client.getAll('user'); // mistake: misspelt-table
client.onDataChange('mesages', () => {}); // mistake: misspelt-table-listener

await client.create('users', 'user_001', { name: 42, email: 'ada@example.com' }); // mistake: wrong-field-type
await client.create('users', 'user_002', { name: 'Grace' }); // mistake: missing-field
await client.update('users', 'user_001', { nmae: 'Ada' }); // mistake: unknown-field
await client.update('users', 'user_001', { status: 'gone' }); // mistake: wrong-literal

const users = await client.getAll('users');
const age: number = users['user_001'].name; // mistake: record-type
const one = await client.get('users', 'user_001');
console.log(one.email); // mistake: get-may-be-undefined

client.onDataChange('messages', (all) => {
  const wrong: Record<string, User> = all; // mistake: listener-record-type
  console.log(wrong, age);
});

try {
  await client.delete('users', 'user_001');
} catch (error) {
  if (error instanceof DSNError && error.code === 'rejcted') console.log('refused'); // mistake: wrong-error-code
}

client.onStatus((status) => {
  if (status.state === 'onlin') console.log('up'); // mistake: wrong-state
});

connectDSN('http://127.0.0.1:3000/sync/0123456789abcdef', 'dsn1.kid.secret', { firstSyncTimout: 5000 }); // mistake: misspelt-option

console.log(_internals);

const lobby = client.subscribe('room', { room: 'lobby' });
await lobby.ready;
const room: string = lobby.params.room;
lobby.close();
client.subscribe('room', 'lobby'); // mistake: subscribe-params-not-object
console.log(room, lobby.id.length);
