// Counts the changes that reach each node's feed: one subscriber (since: null) per node URL,
// each counting distinct keys of TABLE with PREFIX; prints "ready" once all are subscribed,
// then one JSON line when every node saw EXPECT keys or TIMEOUT s passed.
//   node bench/pg_feed.mjs --adapter A.mjs --urls http://..:8721,http://..:8722 --table w1 --prefix p- --expect N --timeout 120
const arg = (name, dflt) => { const i = process.argv.indexOf('--' + name); return i > 0 ? process.argv[i + 1] : dflt; };
const { connect } = await import(arg('adapter'));
const urls = arg('urls').split(','), table = arg('table', 'w1'), prefix = arg('prefix', 'p-');
const expect = Number(arg('expect')), timeout = Number(arg('timeout', 120));
const nodes = urls.map((url) => ({ url, keys: new Set(), first: null, last: null, client: null }));
for (const n of nodes) n.client = await connect(n.url, { since: null });
await Promise.all(nodes.map((n) => n.client.onChange((rec) => {
  if (rec.table !== table || !String(rec.key).startsWith(prefix) || n.keys.has(rec.key)) return;
  const now = Date.now();
  if (n.first === null) n.first = now;
  n.keys.add(rec.key);
  if (n.keys.size === expect) n.last = now;
})));
console.log('ready');
const end = Date.now() + timeout * 1000;
while (Date.now() < end && nodes.some((n) => n.last === null)) await new Promise((r) => setTimeout(r, 5));
console.log(JSON.stringify({ nodes: nodes.map((n) => ({ url: n.url, count: n.keys.size, first_ms: n.first, last_ms: n.last,
                                                        errors: n.client.state?.errors ?? 0 })) }));
for (const n of nodes) n.client.close();
setTimeout(() => process.exit(0), 100);
