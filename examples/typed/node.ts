// The same tables from a Node script: options typed too. A fetch of the platform's (or
// a wrapper around it) and an IndexedDB factory such as fake-indexeddb's fit as they
// are; `indexedDB: null` keeps the mirror in memory.
import { indexedDB } from 'fake-indexeddb';
import { connectDSN, type DSNFetch } from 'dsn-sync-client';

interface Metric {
  value: number;
  at: number;
}

// The tables may be an interface as well as a type literal.
interface Tables {
  metrics: Metric;
}

const url = 'http://127.0.0.1:3000/sync/0123456789abcdef';
const token = async () => (await fetch('http://127.0.0.1:8000/dsn-token')).text();

const logged: DSNFetch = async (address, init) => {
  const started = Date.now();
  const answer = await fetch(address, init);
  console.log(`${init.method} ${address}: ${answer.status} in ${Date.now() - started} ms`);
  return answer;
};

const inMemory = connectDSN<Tables>(url, token, { indexedDB: null, fetch: logged, stream: true });
const stored = connectDSN<Tables>(url, token, { indexedDB, fetch: globalThis.fetch, name: 'dsn-sync/node-test' });

const cpu = await inMemory.get('metrics', 'cpu');
console.log(cpu ? cpu.value.toFixed(2) : 'no cpu figure yet');
const all = await stored.getAll('metrics');
console.log(Object.keys(all).length, 'metrics');
inMemory.close();
stored.close();
