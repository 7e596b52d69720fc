// The README's frontend examples ("Frontend: dsn_client.js"), run as written against a
// live server: get all, get one, create/update/delete, notifications, chat, live chart.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { connectDSN, DSNError } from '../dsn_client.js';
import { startFixture } from './helpers.mjs';

const server = await startFixture();
/** What the Python backend does in the examples: sync.sync(table, key, data). */
const backendSync = (table, key, data) => server.cmd({ cmd: 'sync', table, key, data });

const url = server.url;
const token = server.token;
const settle = () => new Promise((resolve) => setTimeout(resolve, 150));

test('README: connect, get all, get one', async () => {
  await backendSync('users', 'user_001', { name: 'Ada', email: 'ada@example.com' });

  const client = connectDSN(url, token);
  await client.ready;

  const users = await client.getAll('users');
  for (const [userId, user] of Object.entries(users)) console.log(userId, user.name);

  const user = await client.get('users', 'user_001');
  if (user) console.log(user.email);

  assert.deepEqual(users, { user_001: { name: 'Ada', email: 'ada@example.com' } });
  assert.equal(user.email, 'ada@example.com');
  client.close();
});

test('README: create, update, delete, and a refusal', async () => {
  const client = connectDSN(url, token);

  await client.create('users', 'user_004', { name: 'Dana', email: 'dana@example.com' });
  await client.update('users', 'user_004', { status: 'active' });
  console.log(await client.get('users', 'user_004')); // { name: 'Dana', email: ..., status: 'active' }
  await client.delete('users', 'user_004');

  try {
    await client.update('users', 'user_004', { status: 'gone' });
  } catch (error) {
    if (error instanceof DSNError && error.code === 'not_found') console.log('already deleted');
    else throw error;
  }

  assert.equal(await client.get('users', 'user_004'), undefined);
  client.close();
});

test('README: notifications', async () => {
  const client = connectDSN(url, token);
  const shown = [];
  const showToast = (text) => shown.push(text);

  const seen = new Set();
  client.onDataChange('notifications', (all) => {
    for (const [id, notification] of Object.entries(all)) {
      if (!seen.has(id)) {
        seen.add(id);
        showToast(notification.text);
      }
    }
  });

  await backendSync('notifications', 'n_1', { user: 'user_001', text: 'Your order shipped' });
  await settle();
  assert.deepEqual(shown, ['Your order shipped']);
  client.close();
});

test('README: chat', async () => {
  const alice = connectDSN(url, token);
  const bob = connectDSN(url, token);
  const rendered = [];
  const render = (messages) => rendered.push(messages.map((m) => `${m.author}: ${m.text}`));

  bob.onDataChange('messages', (all) => {
    const lobby = Object.values(all).filter((m) => m.room === 'lobby').sort((a, b) => a.at - b.at);
    render(lobby);
  });

  await alice.create('messages', crypto.randomUUID(), { room: 'lobby', author: 'alice', text: 'hi bob', at: Date.now() });

  await settle();
  assert.deepEqual(rendered.at(-1), ['alice: hi bob']);
  alice.close();
  bob.close();
});

test('README: live chart data', async () => {
  const client = connectDSN(url, token);
  const chart = { update: (points) => chart.points = points, points: [] };

  const points = [];
  client.onDataChange('metrics', ({ cpu }) => {
    if (!cpu) return;
    points.push({ x: cpu.at, y: cpu.value });
    chart.update(points.slice(-60));
  });

  for (let i = 0; i < 3; i++) {
    await backendSync('metrics', 'cpu', { value: 0.5 + i, at: 1000 + i });
    await settle();
  }
  assert.deepEqual(chart.points, [{ x: 1000, y: 0.5 }, { x: 1001, y: 1.5 }, { x: 1002, y: 2.5 }]);
  client.close();
});

test('README: status and the outbox', async () => {
  const client = connectDSN(url, token);
  const states = [];
  client.onStatus((status) => {
    states.push(status.state);
    if (status.state === 'error') console.error(status.code, status.message);
  });
  await client.ready;
  console.log(client.pending()); // [] when every write has been answered
  assert.equal(states.at(-1), 'online');
  client.close();
});
