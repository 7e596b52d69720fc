// Throughput of the client's crypto in Node: SHAKE256 (absorb and squeeze), seal and open
// of 1 MiB (HMAC through crypto.subtle, and the pure-JS path), and js-sha3's SHAKE256 for
// comparison when it can be found (a dev-only tool: NODE_PATH=/path/to/node_modules).
//
//     node test/bench_crypto.mjs
//
// Not a test: under `node --test test/` it says so and exits.
import { createRequire } from 'node:module';
import { _internals } from '../dsn_client.js';

const { shake256, Shake256, seal, open, sealSync, openSync, randomBytes } = _internals;

if (process.env.NODE_TEST_CONTEXT) {
  console.log('bench_crypto.mjs is a benchmark, not a test; run it with: node test/bench_crypto.mjs');
  process.exit(0);
}

const MiB = 1 << 20;

async function rate(label, fn, bytesPerRun = MiB) {
  for (let i = 0; i < 3; i++) await fn();
  let runs = 0;
  const start = performance.now();
  while (performance.now() - start < 1500) {
    await fn();
    runs++;
  }
  const seconds = (performance.now() - start) / 1000;
  const mbps = (runs * bytesPerRun) / seconds / 1e6;
  console.log(`${label.padEnd(44)} ${mbps.toFixed(1).padStart(7)} MB/s   (${runs} x ${bytesPerRun} bytes)`);
  return mbps;
}

const data = randomBytes(MiB);
const key = randomBytes(64);
const aad = new TextEncoder().encode('dsn-sync/v1 req\n/sync/0123456789abcdef');
const out = new Uint8Array(MiB);

console.log(`node ${process.version} on ${process.platform}/${process.arch}; 1 MiB = ${MiB} bytes, MB = 10^6 bytes`);
await rate('dsn_client SHAKE256 squeeze (1 MiB output)', () => new Shake256().update(aad).squeezeXor(null, out));
await rate('dsn_client SHAKE256 absorb (1 MiB input)', () => shake256(data, 32));

let jsSha3 = null;
try {
  jsSha3 = createRequire(import.meta.url)('js-sha3');
} catch {
  console.log('js-sha3 not found (NODE_PATH=<dir with node_modules/js-sha3> to compare)');
}
if (jsSha3) {
  await rate('js-sha3 SHAKE256 squeeze (1 MiB output)', () => jsSha3.shake256.array(aad, MiB * 8));
  await rate('js-sha3 SHAKE256 absorb (1 MiB input)', () => jsSha3.shake256.array(data, 256));
}

const sealed = await seal(key, aad, data);
await rate('seal 1 MiB (HMAC by crypto.subtle)', () => seal(key, aad, data));
await rate('open 1 MiB (HMAC by crypto.subtle)', () => open(key, aad, sealed));
await rate('seal 1 MiB (pure JS, no crypto.subtle)', () => sealSync(key, aad, data));
await rate('open 1 MiB (pure JS, no crypto.subtle)', () => openSync(key, aad, sealed));
