// Wake-up latency: a subscriber long-polls node SUB; the producer on node PROD (the same or
// another node) calls sync() RATE times/s for DURATION s with {i, ts: time.time()}; each
// change's latency is its arrival here minus its ts.  Prints one JSON line.
//   node bench/pg_wake.mjs --adapter A.mjs --sub http://..:8722 --prod http://..:8721 --rate 20 --duration 5
const arg = (name, dflt) => { const i = process.argv.indexOf('--' + name); return i > 0 ? process.argv[i + 1] : dflt; };
const { connect, produce } = await import(arg('adapter'));
const sub = arg('sub'), prod = arg('prod'), rate = Number(arg('rate', 20)), duration = Number(arg('duration', 5));
const key = 'wake-' + process.pid;
const lat = [];
const c = await connect(sub, { since: null });
await c.onChange((rec) => { if (rec.table === 'w1' && rec.key === key) lat.push(Date.now() - rec.data.ts * 1000); });
await new Promise((r) => setTimeout(r, 300));
const p = await produce(prod, { rate, duration, table: 'w1', key });
const end = Date.now() + 5000;
while (lat.length < p.produced && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
const s = [...lat].sort((a, b) => a - b), pct = (q) => (s.length ? s[Math.min(s.length - 1, Math.ceil(q / 100 * s.length) - 1)] : null);
console.log(JSON.stringify({ produced: p.produced, received: lat.length, p50_ms: pct(50), p99_ms: pct(99), max_ms: s.at(-1) ?? null,
                             errors: c.state?.errors ?? 0 }));
c.close();
setTimeout(() => process.exit(0), 100);
