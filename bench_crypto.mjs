// Throughput of the client's crypto in Node: SHAKE256 (absorb and squeeze), seal and open
// of 1 MiB (HMAC through crypto.subtle, and the pure-JS path), and js-sha3's SHAKE256 for
// comparison when it can be found (a dev-only tool: NODE_PATH=/path/to/node_modules).
//
//     node bench_crypto.mjs
//
// Not a test: under `node --test test/` it says so and exits.
import { createRequire } from 'node:module';
import { _internals } from './dsn_client.js';

const { shake256, Shake256, seal, open, sealSync, openSync, randomBytes } = _internals;

if (process.env.NODE_TEST_CONTEXT) {
  console.log('bench_crypto.mjs is a benchmark, not a test; run it with: node test/bench_crypto.mjs');
  process.exit(0);
}

const MiB = 1 << 20;

/** MB/s of `fn` (one call handles `bytesPerRun` bytes): the best of several 300 ms rounds,
 * so that other work on the machine costs as little as possible of the figure. */
async function measure(fn, bytesPerRun) {
  let runs = 0;
  const start = performance.now();
  while (performance.now() - start < 300) {
    await fn();
    runs++;
  }
  return (runs * bytesPerRun) / ((performance.now() - start) / 1000) / 1e6;
}

/** Measures the contenders in alternating rounds (so that each sees the same machine) and
 * prints the best round of each. */
async function compare(contenders, bytesPerRun = MiB, rounds = 7) {
  const best = contenders.map(() => 0);
  for (const [, fn] of contenders) for (let i = 0; i < 3; i++) await fn();
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < contenders.length; i++) best[i] = Math.max(best[i], await measure(contenders[i][1], bytesPerRun));
  }
  contenders.forEach(([label], i) => console.log(`${label.padEnd(44)} ${best[i].toFixed(1).padStart(7)} MB/s`));
}

const data = randomBytes(MiB);
const key = randomBytes(64);
const aad = new TextEncoder().encode('dsn-sync/v1 req\n/sync/0123456789abcdef');
const out = new Uint8Array(MiB);

let jsSha3 = null;
try {
  jsSha3 = createRequire(import.meta.url)('js-sha3');
} catch {
  jsSha3 = null;
}

console.log(`node ${process.version} on ${process.platform}/${process.arch}; MB = 10^6 bytes; best of 7 alternating 300 ms rounds`);
const squeeze = [['dsn_client SHAKE256 squeeze (1 MiB output)', () => new Shake256().update(aad).squeezeXor(null, out)]];
const absorb = [['dsn_client SHAKE256 absorb (1 MiB input)', () => shake256(data, 32)]];
if (jsSha3) {
  squeeze.push(['js-sha3 SHAKE256 squeeze (1 MiB output)', () => jsSha3.shake256.array(aad, MiB * 8)]);
  absorb.push(['js-sha3 SHAKE256 absorb (1 MiB input)', () => jsSha3.shake256.array(data, 256)]);
} else {
  console.log('js-sha3 not found (NODE_PATH=<dir with node_modules/js-sha3> to compare)');
}
await compare(squeeze);
await compare(absorb);
const sealed = await seal(key, aad, data);
await compare([
  ['seal 1 MiB (HMAC by crypto.subtle)', () => seal(key, aad, data)],
  ['open 1 MiB (HMAC by crypto.subtle)', () => open(key, aad, sealed)],
  ['seal 1 MiB (pure JS, no crypto.subtle)', () => sealSync(key, aad, data)],
  ['open 1 MiB (pure JS, no crypto.subtle)', () => openSync(key, aad, sealed)],
]);
