#!/usr/bin/env python3
"""dsn-sync on PostgreSQL, several nodes (issue 11): the runs behind ``bench_dsn_sync.py --postgres``.

On a throwaway cluster (test/pg_cluster.py: initdb in a temp folder, 127.0.0.1, fsync off),
a fresh database per run, node processes started as ``bench/dsn_server.py --db postgresql://...``:

  (a) changes/s reaching every node's feed: one producer process calling ``sync()`` N times
      (in ``with sync.batch()`` of B, and one by one) while one subscriber per node
      (bench/pg_feed.mjs) counts the keys its node's feed delivers; rate = N / (last arrival
      at the slowest node - producer's first call).  1 and 2 node processes.
  (b) W2 write acks (the harness's w2_writes.mjs) on 1 node of the memory store, 1 node and
      2 nodes of PostgreSQL (2 nodes: writers split in two generators, one per node; acks summed).
  (c) wake-up latency (bench/pg_wake.mjs): a long-poll on node B, sync() on node A (cross-node),
      beside A to A on PostgreSQL and on the memory store.
  (d) W3 from PostgreSQL: 100,000 records written by one node, then a fresh node started on that
      database (its start = loading them) and the harness's w3_sync.mjs against it, beside a
      memory-store node; plus a cProfile of a node's open on that database.

  python3 bench/pg_bench.py run --harness DIR --out DIR [--reps 2] [--duration 5] [--records 100000]
  python3 bench/pg_bench.py produce --db URL --n N [--batch-size B]     (one producer; JSON line)
  python3 bench/pg_bench.py coldload --db URL [--profile OUT]           (open a node; JSON line)
"""
import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ADAPTER = os.path.join(HERE, "adapters", "dsnsync_native.mjs")
SPEC = {"key": "id", "fields": None}  # w1's spec in dsn_server.py


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


# -- subcommands run in their own process --------------------------------------

def cmd_produce(a):
    sys.path.insert(0, REPO)
    import dsn_sync
    sync = dsn_sync.DSNSync(port=0, db_connection_string=a.db)
    sync.define_table("w1", SPEC)
    keys = ["%s%d" % (a.prefix, i) for i in range(a.n)]
    s = sync.sync
    t0 = time.time()
    if a.batch_size:
        for start in range(0, a.n, a.batch_size):
            with sync.batch():
                for i in range(start, min(a.n, start + a.batch_size)):
                    s("w1", keys[i], {"i": i})
    else:
        for i in range(a.n):
            s("w1", keys[i], {"i": i})
    t1 = time.time()
    print(json.dumps({"n": a.n, "t_start_ms": t0 * 1000, "t_end_ms": t1 * 1000, "commit_rate": a.n / (t1 - t0)}), flush=True)
    sync.stop()


def cmd_coldload(a):
    sys.path.insert(0, REPO)
    import dsn_sync
    prof = None
    if a.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    sync = dsn_sync.DSNSync(port=0, db_connection_string=a.db)
    t1 = time.perf_counter()
    if prof:
        prof.disable()
        prof.dump_stats(a.profile)
    print(json.dumps({"open_s": t1 - t0, "records": sync.stats()["records"]}), flush=True)
    sync.stop()


# -- the orchestrator ----------------------------------------------------------

class Runner:
    def __init__(self, a):
        self.a = a
        self.procs = []
        self.commands = []
        self.env = dict(os.environ, BENCH_HARNESS=a.harness)

    def show(self, cmd, note=""):
        line = shlex.join(cmd) + (("  # " + note) if note else "")
        if line not in self.commands:
            self.commands.append(line)

    def node(self, port, db, extra=()):
        cmd = [sys.executable, os.path.join(HERE, "dsn_server.py"), "--port", str(port)] + (["--db", db] if db else []) + list(extra)
        self.show([c if c != db else "$DB" for c in cmd])
        p = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        t0 = time.monotonic()
        line = p.stdout.readline()  # "dsn_server listening on ... preload_s=..." once serving
        end = time.monotonic() + 300
        while time.monotonic() < end:
            if p.poll() is not None:
                raise RuntimeError("a node exited early: %s" % shlex.join(cmd))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/_bench/health" % port, timeout=5):
                    break
            except OSError:
                time.sleep(0.1)
        p.start_s = time.monotonic() - t0
        p.preload_s = float(line.rsplit("preload_s=", 1)[1].split()[0]) if "preload_s=" in line else None
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        time.sleep(self.a.cooldown)

    def node_js(self, script, args, timeout):
        cmd = ["node", script] + [str(x) for x in args]
        self.show(cmd)
        out = subprocess.run(cmd, cwd=self.a.harness, capture_output=True, text=True, timeout=timeout)
        try:
            return json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"error": (out.stderr or out.stdout)[-600:]}

    # (a)
    def throughput(self, db_for, nodes, mode):
        a = self.a
        db = db_for()
        ports = [8721 + i for i in range(nodes)]
        for port in ports:
            self.node(port, db)
        n = a.changes_batch if mode == "batch" else a.changes_single
        feed_cmd = ["node", os.path.join(HERE, "pg_feed.mjs"), "--adapter", ADAPTER, "--urls",
                    ",".join("http://127.0.0.1:%d" % p for p in ports), "--table", "w1", "--prefix", "p-",
                    "--expect", str(n), "--timeout", str(a.timeout)]
        self.show(feed_cmd, "then, once it prints ready:")
        feed = subprocess.Popen(feed_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if feed.stdout.readline().strip() != "ready":
                return {"error": "feed subscribers did not connect: " + feed.stderr.read()[-500:]}
            prod_cmd = [sys.executable, os.path.abspath(__file__), "produce", "--db", db, "--n", str(n), "--prefix", "p-",
                        "--batch-size", str(a.batch_size if mode == "batch" else 0)]
            self.show([c if c != db else "$DB" for c in prod_cmd])
            prod = subprocess.run(prod_cmd, capture_output=True, text=True, timeout=a.timeout)
            if prod.returncode:
                return {"error": "producer failed: " + prod.stderr[-800:]}
            p = json.loads(prod.stdout.strip().splitlines()[-1])
            out, err = feed.communicate(timeout=a.timeout + 30)
            f = json.loads(out.strip().splitlines()[-1])
        finally:
            if feed.poll() is None:
                feed.kill()
                feed.wait()
        lasts = [x["last_ms"] for x in f["nodes"]]
        r = {"n": n, "producer_commit_rate": p["commit_rate"], "counts": [x["count"] for x in f["nodes"]],
             "loadavg": loadavg()}
        if all(lasts):
            r["every_node_rate"] = n / ((max(lasts) - p["t_start_ms"]) / 1000)
            r["lag_after_commit_ms"] = max(lasts) - p["t_end_ms"]
        return r

    # (b)
    def w2(self, db, nodes):
        a = self.a
        ports = [8731 + i for i in range(nodes)]
        procs = [self.node(port, db) for port in ports]
        per = max(1, a.writers // nodes)
        cmds = [["node", "w2_writes.mjs", "--adapter", ADAPTER, "--url", "http://127.0.0.1:%d" % port, "--server-pid", str(p.pid),
                 "--writers", str(per), "--duration", str(a.duration)] for port, p in zip(ports, procs)]
        for c in cmds:
            i = c.index("--server-pid") + 1
            self.show(c[:i] + ["PID"] + c[i + 1:], "PID: that node's process")
        gens = [subprocess.Popen(c, cwd=a.harness, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
        rs = []
        for g in gens:
            out, err = g.communicate(timeout=a.duration + 120)
            try:
                rs.append(json.loads(out.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                return {"error": err[-600:]}
        return {"acks_per_s": sum(r["acks_per_s"] for r in rs), "p50_ms": max(r["latency_ms"]["p50"] for r in rs),
                "p99_ms": max(r["latency_ms"]["p99"] for r in rs), "errors": sum(r["errors"] for r in rs),
                "server_cpu_pct": sum((r.get("server") or {}).get("cpu_pct_of_core") or 0 for r in rs), "loadavg": loadavg()}

    # (c)
    def wake(self, db, cross):
        a = self.a
        pa = self.node(8741, db)
        pb = self.node(8742, db) if cross else pa
        del pb
        sub = "http://127.0.0.1:%d" % (8742 if cross else 8741)
        r = self.node_js(os.path.join(HERE, "pg_wake.mjs"), ["--adapter", ADAPTER, "--sub", sub, "--prod", "http://127.0.0.1:8741",
                                                             "--rate", a.wake_rate, "--duration", a.duration], a.duration + 60)
        r["loadavg"] = loadavg()
        return r

    # (d)
    def w3(self, db):
        a = self.a
        res = {}
        if db:
            filler = self.node(8751, db, ["--preload", str(a.records)])
            res["write_to_pg_s"] = filler.preload_s
            self.stop_all()
            p = self.node(8752, db)
            res["node_start_s"] = p.start_s  # opening the node = reading every record from PostgreSQL
        else:
            p = self.node(8752, None, ["--preload", str(a.records)])
            res["node_start_s"] = p.start_s  # includes the in-memory preload
        r = self.node_js("w3_sync.mjs", ["--adapter", ADAPTER, "--url", "http://127.0.0.1:8752", "--records", a.records,
                                         "--server-pid", p.pid], 180)
        res.update({"time_to_all_s": r.get("time_to_all_s"), "complete": r.get("complete"),
                    "server_cpu_s": (r.get("server") or {}).get("cpu_s"), "rss_mb": (r.get("server") or {}).get("rss_mb_before"),
                    "error": r.get("error"), "loadavg": loadavg()})
        return res


def cell(vs, unit=""):
    vs = [v for v in vs if isinstance(v, (int, float))]
    if not vs:
        return "-"
    f = (lambda v: "{:,.0f}".format(v) if abs(v) >= 100 else "%.1f" % v if abs(v) >= 10 else "%.2f" % v)
    m = statistics.median(vs)
    return f(m) + unit if len(vs) == 1 else "%s%s (%s–%s)" % (f(m), unit, f(min(vs)), f(max(vs)))


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(flush=True)


def cmd_run(a):
    sys.path[:0] = [REPO, os.path.join(REPO, "test")]
    try:
        import psycopg  # noqa: F401  (only: is it installed)
    except ImportError:
        print('PostgreSQL runs NOT RUN: psycopg 3 is not installed (pip install "psycopg[binary]")')
        return 2
    import pg_cluster
    cluster = pg_cluster.PgCluster.find()
    if cluster is None:
        print("PostgreSQL runs NOT RUN: no initdb/pg_ctl (apt-get install postgresql, or set PG_BIN)")
        return 2
    cluster.start()
    version = subprocess.run([os.path.join(cluster.bin_dir, "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    print("Cluster: %s on 127.0.0.1:%d (test/pg_cluster.py: fsync=off, shared_buffers=64MB), a fresh database per run; "
          "loadavg %s\n" % (version, cluster.port, loadavg()), flush=True)
    R = Runner(a)
    res = {"a": {}, "b": {}, "c": {}, "d": {}}
    parts = a.parts.split(",")
    try:
        for rep in range(a.reps):
            order = [1, 2] if rep % 2 == 0 else [2, 1]  # alternate
            if "a" in parts:
                for nodes in order:
                    for mode in ("batch", "single"):
                        try:
                            r = R.throughput(cluster.create_database, nodes, mode)
                        finally:
                            R.stop_all()
                        print("(a) rep %d, %d node(s), %s: %s" % (rep + 1, nodes, mode, json.dumps(r)), flush=True)
                        res["a"].setdefault((nodes, mode), []).append(r)
            if "b" in parts:
                cfgs = [("memory", 1), ("pg", 1), ("pg", 2)]
                for store, nodes in (cfgs if rep % 2 == 0 else cfgs[::-1]):
                    try:
                        r = R.w2(cluster.create_database() if store == "pg" else None, nodes)
                    finally:
                        R.stop_all()
                    print("(b) rep %d, %s, %d node(s): %s" % (rep + 1, store, nodes, json.dumps(r)), flush=True)
                    res["b"].setdefault((store, nodes), []).append(r)
            if "c" in parts:
                cfgs = [("memory", False), ("pg", False), ("pg", True)]
                for store, cross in (cfgs if rep % 2 == 0 else cfgs[::-1]):
                    try:
                        r = R.wake(cluster.create_database() if store == "pg" else None, cross)
                    finally:
                        R.stop_all()
                    print("(c) rep %d, %s, %s: %s" % (rep + 1, store, "A->B" if cross else "A->A", json.dumps(r)), flush=True)
                    res["c"].setdefault((store, cross), []).append(r)
            if "d" in parts:
                for store in (("pg", "memory") if rep % 2 == 0 else ("memory", "pg")):
                    try:
                        r = R.w3(cluster.create_database() if store == "pg" else None)
                    finally:
                        R.stop_all()
                    print("(d) rep %d, %s: %s" % (rep + 1, store, json.dumps(r)), flush=True)
                    res["d"].setdefault(store, []).append(r)
        prof_rows = None
        if "d" in parts and a.profile_load:
            db = cluster.create_database()
            try:
                R.node(8751, db, ["--preload", str(a.records)])
            finally:
                R.stop_all()
            out = os.path.join(a.out, "pg_open_%d.pstats" % a.records)
            cmd = [sys.executable, os.path.abspath(__file__), "coldload", "--db", db, "--profile", out]
            R.show([c if c != db else "$DB" for c in cmd])
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            plain = subprocess.run([sys.executable, os.path.abspath(__file__), "coldload", "--db", db],
                                   capture_output=True, text=True, timeout=600)
            try:
                prof_rows = (json.loads(done.stdout.strip().splitlines()[-1]), json.loads(plain.stdout.strip().splitlines()[-1]), out)
            except (IndexError, ValueError):
                print("cold-load profile failed: %s" % done.stderr[-800:])
    finally:
        R.stop_all()
        cluster.stop()

    print("\n### (a) Backend sync() changes/s reaching every node's feed (target >= 6,000/s)\n")
    table(["nodes", "producer", "changes", "reached every node, changes/s", "producer's commit rate/s",
           "last arrival after the last commit ms", "counted per node"],
          [[n, "batch of %d" % a.batch_size if m == "batch" else "one by one", rs[0].get("n"),
            cell([r.get("every_node_rate") for r in rs]), cell([r.get("producer_commit_rate") for r in rs]),
            cell([r.get("lag_after_commit_ms") for r in rs]), "; ".join(str(r.get("counts", r.get("error"))) for r in rs)]
           for (n, m), rs in sorted(res["a"].items())])
    print("### (b) W2 write acks, %d writers, %s s\n" % (a.writers, a.duration))
    table(["store", "nodes", "acks/s", "p50 ms (worse node)", "p99 ms (worse node)", "server CPU % (all nodes)", "errors"],
          [[s, n, cell([r.get("acks_per_s") for r in rs]), cell([r.get("p50_ms") for r in rs]), cell([r.get("p99_ms") for r in rs]),
            cell([r.get("server_cpu_pct") for r in rs]), "; ".join(str(r.get("errors", r.get("error"))) for r in rs)]
           for (s, n), rs in res["b"].items()])
    mem = [r.get("acks_per_s") for r in res["b"].get(("memory", 1), [])]
    if mem and res["b"]:
        m = statistics.median([v for v in mem if v] or [0])
        for (s, n), rs in res["b"].items():
            v = [r.get("acks_per_s") for r in rs if r.get("acks_per_s")]
            if s == "pg" and v and m:
                print("- PostgreSQL, %d node(s) / memory, 1 node: %.2fx" % (n, statistics.median(v) / m))
        print()
    print("### (c) Wake-up latency: sync() on the producing node, long-poll answered on the subscriber's node, "
          "%s changes/s for %s s\n" % (a.wake_rate, a.duration))
    table(["store", "path", "p50 ms", "p99 ms", "max ms", "received/produced"],
          [[s, "node A -> node B (cross-node)" if c else "node A -> node A", cell([r.get("p50_ms") for r in rs]),
            cell([r.get("p99_ms") for r in rs]), cell([r.get("max_ms") for r in rs]),
            "; ".join("%s/%s" % (r.get("received"), r.get("produced")) if "produced" in r else str(r.get("error")) for r in rs)]
           for (s, c), rs in res["c"].items()])
    print("### (d) W3 initial sync of %s records\n" % "{:,}".format(a.records))
    table(["store", "writing them to PostgreSQL s (one batch)", "node start s (PostgreSQL: reading them all)",
           "W3 time to all s", "server CPU s during W3", "server RSS MB", "complete"],
          [[s, cell([r.get("write_to_pg_s") for r in rs]), cell([r.get("node_start_s") for r in rs]),
            cell([r.get("time_to_all_s") for r in rs]), cell([r.get("server_cpu_s") for r in rs]), cell([r.get("rss_mb") for r in rs]),
            "; ".join(str(r.get("complete") if r.get("error") is None else r.get("error")) for r in rs)]
           for s, rs in res["d"].items()])
    if prof_rows:
        import pstats
        prof, plain, path = prof_rows
        st = pstats.Stats(path)
        total = sum(v[2] for v in st.stats.values()) or 1
        rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:14]
        print("Opening a node on a database holding them: %.2f s (%.2f s under cProfile), %s records. "
              "Where the open's time goes (cProfile, %s):\n" % (plain["open_s"], prof["open_s"], plain["records"], path))
        table(["self %", "cumulative %", "calls", "function"],
              [["%.1f" % (100 * v[2] / total), "%.1f" % (100 * v[3] / total), v[1],
                "`%s:%d %s`" % (os.path.basename(k[0]), k[1], k[2])] for k, v in rows])
    print("Commands ($DB: a fresh database on the throwaway cluster; the harness's scripts run in %s):\n" % a.harness)
    for c in R.commands:
        print("- `%s`" % c)
    print()
    with open(os.path.join(a.out, "pg.json"), "w") as f:
        json.dump({k: {str(kk): vv for kk, vv in v.items()} for k, v in res.items()}, f, indent=1)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--db", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--prefix", default="p-")
    p.add_argument("--batch-size", type=int, default=0, help="0: one sync() per commit")
    p = sub.add_parser("coldload")
    p.add_argument("--db", required=True)
    p.add_argument("--profile", default=None)
    p = sub.add_parser("run")
    p.add_argument("--harness", required=True, help="the harness copy (w2_writes.mjs, w3_sync.mjs, node_modules)")
    p.add_argument("--out", required=True)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--parts", default="a,b,c,d")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--records", type=int, default=100000)
    p.add_argument("--changes-batch", type=int, default=20000)
    p.add_argument("--changes-single", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--wake-rate", type=float, default=20)
    p.add_argument("--timeout", type=float, default=180, help="cap of one run's wait (s)")
    p.add_argument("--cooldown", type=float, default=1)
    p.add_argument("--no-profile-load", dest="profile_load", action="store_false")
    a = ap.parse_args(argv)
    if a.cmd == "produce":
        return cmd_produce(a)
    if a.cmd == "coldload":
        return cmd_coldload(a)
    os.makedirs(a.out, exist_ok=True)
    return cmd_run(a)


if __name__ == "__main__":
    sys.exit(main())
