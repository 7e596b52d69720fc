#!/usr/bin/env python3
"""Benchmark of dsn-sync, one command, one table (issue 6: measure before optimising).

    python3 bench_dsn_sync.py                 # micro + W1/W2/W3 against the peers, ~20 min
    python3 bench_dsn_sync.py --quick         # short smoke version, ~2 min
    python3 bench_dsn_sync.py --micro-only    # envelope, sync(), memory: ~20 s
    python3 bench_dsn_sync.py --profile       # the server's CPU by function under W1 C=1000 and W2
    python3 bench_dsn_sync.py --at HEAD~3 ... # the same, on dsn_sync.py/dsn_client.js of another revision

Micro numbers (in this process unless said): seal+open of 1 MiB, one small seal, raw
SHAKE256 and HMAC-SHA256 for reference, ``sync()`` calls/s on the memory store and on the
SQLite store inside ``sync.batch()``, and the memory held at rest by 100,000 records of
~200 B (RSS delta, in a fresh subprocess, next to the stdlib ceiling server's store).

Workloads: the shared load harness (``../shared/bench``, read-only, so it is copied to
``--workdir`` with its Python venv and npm modules set up there on first use), driven
through its own ``run.py`` with dsn-sync added as peers by ``bench/peers.json``
(``BENCH_PEERS_FILE``): W1 fan-out at C=100 and C=1000 (200 updates/s, 10 s), W2 write
acks (16 writers, 10 s), W3 initial sync (100,000 records); peers alternate within each
repetition, a fresh server per run. Peers: ``ref_http`` (the stdlib ceiling, node:http
client), ``dsnsync_native`` (our server; adapter with node:crypto SHAKE256/HMAC, so the
generator stays light), ``dsnsync`` (the same with dsn_client.js's JS crypto, what a
browser runs), and python-socketio (default and deflate off) when its venv is there.
Everything listens on 127.0.0.1; every run has a time cap. The exact commands are printed.

Profile (--profile): the server under W1 C=1000 and W2, recorded with ``perf record
--call-graph dwarf`` on a Python >= 3.12 run with ``-X perf`` (so perf names each Python
function; every thread, kernel time included) when both are here, else ``py-spy record
--gil``.  py-spy 0.4.3 with this machine's shared-library CPython 3.11 finds the GIL holder
in only ~1 % of samples, and without --gil it reports the idle workers parked in
``queue.get`` as busy: so perf is the default.
"""
import argparse
import gc
import glob
import hashlib
import hmac
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(REPO, "bench")
sys.path.insert(0, REPO)

import dsn_sync  # noqa: E402  (this repository's module)

MiB = 1 << 20
ISSUE_CEILING_RSS_MB = 112  # issue 6: the ceiling server's memory at rest with 100,000 records


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().strip()


def timed(fn, seconds, min_runs=3, rounds=3):
    """(runs, elapsed s) of the fastest of `rounds` rounds, each calling fn() for at least
    seconds/rounds (after one warm-up call): the best round is the one least disturbed by
    other processes on the machine, as timeit does."""
    fn()
    best = None
    for _ in range(rounds):
        runs, t0 = 0, time.perf_counter()
        while True:
            fn()
            runs += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds / rounds and runs >= min_runs:
                break
        if best is None or runs / elapsed > best[0] / best[1]:
            best = (runs, elapsed)
    return best


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    s = f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 or a == 0 else f"{v:.3f}"
    return s + unit


def print_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(flush=True)


# =============================================================================
# Micro numbers
# =============================================================================

MEMORY_CHILD = r"""
import gc, json, os, sys
sys.path[:0] = [%(repo)r, %(bench)r]
which, n = sys.argv[1], int(sys.argv[2])
def rss_kb():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])
if which == "dsn":
    import dsn_sync, dsn_server
    preload_record = dsn_server.preload_record
    gc.collect(); before = rss_kb()
    sync = dsn_sync.DSNSync(port=0)
    sync.define_table("items", {"key": "key", "fields": None})
    with sync.batch():
        for i in range(n):
            sync.sync("items", str(i), preload_record(i))
    held = sync.stats()["records"]
else:  # the harness's stdlib ceiling: its Store and preload_record, loaded from its file
    import importlib.util
    spec = importlib.util.spec_from_file_location("ref_longpoll", which)
    ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
    gc.collect(); before = rss_kb()
    for i in range(n):
        ref.STORE.write("items", str(i), ref.preload_record(i))
    held = len(ref.STORE.recs)
gc.collect(); after = rss_kb()
print(json.dumps({"records": held, "rss_before_mb": before / 1024, "rss_after_mb": after / 1024,
                  "delta_mb": (after - before) / 1024}))
"""


def memory_at_rest(which, n):
    code = MEMORY_CHILD % {"repo": REPO, "bench": BENCH}
    out = subprocess.run([sys.executable, "-c", code, which, str(n)], capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def micro(a, harness):
    """Rows of (metric, value, target, verdict, command)."""
    t = a.micro_time
    cmd = "python3 bench_dsn_sync.py --micro-only" + (" --quick" if a.quick else "")
    rows = []
    big = os.urandom(MiB)
    key = os.urandom(64)
    aad = b"dsn-sync/v1 res\n" + os.urandom(16)
    seal, open_ = dsn_sync.seal, dsn_sync.open

    blob = seal(key, aad, big)
    assert open_(key, aad, blob) == big
    runs, el = timed(lambda: open_(key, aad, seal(key, aad, big)), t)
    so = runs * MiB / el / 1e6
    rows.append(("Python seal+open, 1 MiB (MB/s of plaintext through both)", fmt(so), ">= 100", so >= 100, cmd))
    runs, el = timed(lambda: seal(key, aad, big), t)
    rows.append(("  seal alone, 1 MiB (MB/s)", fmt(runs * MiB / el / 1e6), "", None, cmd))
    runs, el = timed(lambda: open_(key, aad, blob), t)
    rows.append(("  open alone, 1 MiB (MB/s)", fmt(runs * MiB / el / 1e6), "", None, cmd))

    small = os.urandom(100)
    n_small = max(1000, int(20000 * t))
    r = timed(lambda: [seal(key, aad, small) for _ in range(n_small)], t / 2)
    us = r[1] / (r[0] * n_small) * 1e6
    rows.append(("Python seal of 100 B, key as 64 bytes (us)", fmt(us), "<= 15", us <= 15, cmd))
    sealkey = getattr(dsn_sync, "SealKey", None)
    if sealkey is not None:
        sk = sealkey(key)
        r = timed(lambda: [seal(sk, aad, small) for _ in range(n_small)], t / 2)
        us2 = r[1] / (r[0] * n_small) * 1e6
        rows.append(("  same with a prepared SealKey, as the server does (us)", fmt(us2), "<= 15", us2 <= 15, cmd))
    sblob = seal(key, aad, small)
    r = timed(lambda: [open_(key, aad, sblob) for _ in range(n_small)], t / 2)
    rows.append(("  open of 100 B, key as 64 bytes (us)", fmt(r[1] / (r[0] * n_small) * 1e6), "", None, cmd))

    runs, el = timed(lambda: hashlib.shake_256(b"dsn-sync/v1 stream" + key + aad[:16]).digest(MiB), t)
    rows.append(("raw hashlib.shake_256 squeeze, 1 MiB (MB/s, reference)", fmt(runs * MiB / el / 1e6), "", None, cmd))
    runs, el = timed(lambda: hashlib.shake_256(big).digest(32), t)
    rows.append(("raw hashlib.shake_256 absorb, 1 MiB (MB/s, reference)", fmt(runs * MiB / el / 1e6), "", None, cmd))
    runs, el = timed(lambda: hmac.new(key[32:], big, hashlib.sha256).digest(), t)
    rows.append(("raw HMAC-SHA256, 1 MiB (MB/s, reference)", fmt(runs * MiB / el / 1e6), "", None, cmd))
    xor = getattr(dsn_sync, "_xor", None)
    if xor is not None:
        other = os.urandom(MiB)
        runs, el = timed(lambda: xor(big, other), t)
        rows.append(("dsn_sync._xor of 1 MiB (MB/s, the envelope's third part)", fmt(runs * MiB / el / 1e6), "", None, cmd))

    n = a.sync_calls
    keys = ["k%d" % (i % 10000) for i in range(10000)]
    datas = [{"n": i, "name": "user-%d" % i, "score": i * 0.5} for i in range(10000)]

    def sync_rate(sync, batch):
        s = sync.sync
        t0 = time.perf_counter()
        if batch:
            with sync.batch():
                for i in range(n):
                    s("bench", keys[i % 10000], datas[i % 10000])
        else:
            for i in range(n):
                s("bench", keys[i % 10000], datas[i % 10000])
        return n / (time.perf_counter() - t0)

    mem = dsn_sync.DSNSync(port=0)
    sync_rate(mem, False)  # warm: the keys exist, later calls merge into them
    r1 = max(sync_rate(mem, False) for _ in range(3))
    rows.append(("sync() calls/s, memory store (%s calls, small dict, best of 3)" % f"{n:,}", fmt(r1), ">= 200,000", r1 >= 200000, cmd))
    r2 = max(sync_rate(mem, True) for _ in range(3))
    rows.append(("  same inside sync.batch()", fmt(r2), "", None, cmd))
    del mem
    with tempfile.TemporaryDirectory(prefix="dsn-bench-") as tmp:
        sq = dsn_sync.DSNSync(port=0, db_connection_string="sqlite:///" + os.path.join(tmp, "bench.db"))
        sync_rate(sq, True)
        r3 = max(sync_rate(sq, True) for _ in range(3))
        rows.append(("sync() calls/s, SQLite store inside sync.batch() (incl. commit)", fmt(r3), ">= 100,000", r3 >= 100000, cmd))
        one = a.sqlite_single
        t0 = time.perf_counter()
        for i in range(one):
            sq.sync("bench", keys[i], datas[i])
        r4 = one / (time.perf_counter() - t0)
        rows.append(("  SQLite, each sync() its own commit (%d calls, synchronous=FULL)" % one, fmt(r4), "", None, cmd))
        sq._store.close()
    gc.collect()

    nrec = a.mem_records
    d = memory_at_rest("dsn", nrec)
    rows.append(("memory at rest, %s records of ~200 B: RSS delta (MB), fresh subprocess" % f"{nrec:,}",
                 fmt(d["delta_mb"]), "<= %d (half of %d)" % (ISSUE_CEILING_RSS_MB // 2, ISSUE_CEILING_RSS_MB) if nrec == 100000 else "",
                 d["delta_mb"] <= ISSUE_CEILING_RSS_MB / 2 if nrec == 100000 else None, cmd))
    rows.append(("  whole process RSS after the preload (MB)", fmt(d["rss_after_mb"]), "", None, cmd))
    ref_path = harness and os.path.join(harness, "servers", "ref_longpoll.py")
    if ref_path and os.path.exists(ref_path):
        c = memory_at_rest(ref_path, nrec)
        rows.append(("  stdlib ceiling's store, same records: RSS delta (MB)", fmt(c["delta_mb"]), "", None, cmd))
        r = d["delta_mb"] / c["delta_mb"]
        rows.append(("  ratio dsn-sync / ceiling (delta)", fmt(r) + "x", "<= 0.5x", r <= 0.5, cmd))
    return rows


# =============================================================================
# Workloads through the shared harness
# =============================================================================

def harness_ready(workdir, shared, setup, want_socketio):
    """Copy the shared harness to workdir/harness (refreshing its files, keeping .venv and
    node_modules); returns (harness dir, BENCH_VENV, socketio available, setup commands run)."""
    harness = os.path.join(workdir, "harness")
    os.makedirs(harness, exist_ok=True)
    for name in os.listdir(shared):
        if name in (".venv", "node_modules", "results"):
            continue
        src, dst = os.path.join(shared, name), os.path.join(harness, name)
        if os.path.isdir(src):
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
    for root, dirs, files in os.walk(harness):  # the shared copy is read-only; ours need not be
        if ".venv" in dirs:
            dirs.remove(".venv")
        if "node_modules" in dirs:
            dirs.remove("node_modules")
        for n in dirs + files:
            p = os.path.join(root, n)
            os.chmod(p, os.stat(p).st_mode | 0o200)
    venv_py = os.path.join(harness, ".venv", "bin", "python")
    ran = []

    def have_sio():
        if not os.path.exists(venv_py) or not os.path.isdir(os.path.join(harness, "node_modules", "socket.io-client")):
            return False
        return subprocess.run([venv_py, "-c", "import socketio, uvicorn"], capture_output=True).returncode == 0

    if want_socketio and setup and not have_sio():
        for cmd in ([sys.executable, "-m", "venv", ".venv"], [venv_py, "-m", "pip", "install", "-q", "-r", "requirements.txt"],
                    ["npm", "install", "--no-audit", "--no-fund"]):
            print("$ (cd %s && %s)" % (harness, shlex.join(cmd)), flush=True)
            ran.append(shlex.join(cmd))
            r = subprocess.run(cmd, cwd=harness, timeout=900)
            if r.returncode:
                print("setup step failed (rc=%d); python-socketio is left out" % r.returncode, flush=True)
                break
    sio = want_socketio and have_sio()
    if os.path.exists(venv_py):
        venv = os.path.join(harness, ".venv")
    else:  # ref_longpoll.py is stdlib only: a stand-in venv whose python is this one
        venv = os.path.join(workdir, "stdlib-venv")
        os.makedirs(os.path.join(venv, "bin"), exist_ok=True)
        link = os.path.join(venv, "bin", "python")
        if not os.path.exists(link):
            os.symlink(sys.executable, link)
    return harness, venv, sio, ran


def run_workloads(a, harness, venv, peers, out_dir, peers_file=None, skip=()):
    env = dict(os.environ, BENCH_RESULTS=out_dir, BENCH_PEERS_FILE=peers_file or os.path.join(BENCH, "peers.json"),
               BENCH_VENV=venv, BENCH_HARNESS=harness)
    d = str(a.duration)
    plan = [("w1_c%d" % a.subs_small, ["w1", "--subs", str(a.subs_small), "--rate", str(a.rate), "--duration", d]),
            ("w1_c%d" % a.subs_large, ["w1", "--subs", str(a.subs_large), "--rate", str(a.rate), "--duration", d]),
            ("w2_w%d" % a.writers, ["w2", "--writers", str(a.writers), "--duration", d]),
            ("w3_n%d" % a.records, ["w3", "--records", str(a.records)])]
    plan = [p for i, p in enumerate(plan) if i not in skip]  # indices of the full plan, before --workloads picks
    plan = [p for p in plan if p[1][0] in a.workloads.split(",") or p[0].split("_")[0] in a.workloads.split(",")]
    commands = []
    for tag, args in plan:
        cmd = ["python3", "run.py"] + args + ["--reps", str(a.reps), "--peers", ",".join(peers),
                                               "--cooldown", str(a.cooldown), "--timeout", str(a.run_timeout), "--tag", tag]
        shown = "cd %s && BENCH_PEERS_FILE=%s BENCH_RESULTS=%s BENCH_VENV=%s %s" % (
            harness, env["BENCH_PEERS_FILE"], out_dir, venv, shlex.join(cmd))
        commands.append(shown)
        print("$ " + shown, flush=True)
        cap = a.reps * len(peers) * (a.run_timeout + 90)  # run.py's own cap per run, plus server start and cooldown
        try:
            subprocess.run([sys.executable] + cmd[1:], cwd=harness, env=env, timeout=cap)
        except subprocess.TimeoutExpired:
            print("run.py %s passed its cap of %d s and was stopped" % (tag, cap), flush=True)
    return plan, commands


def load_runs(out_dir, tag):
    path = os.path.join(out_dir, tag + ".jsonl")
    by = {}
    if os.path.exists(path):
        for line in open(path):
            r = json.loads(line)
            by.setdefault(r["peer"], []).append(r)
    return by


def dig(r, path):
    for k in path.split("."):
        if not isinstance(r, dict):
            return None
        r = r.get(k)
    return r


def stderr_json(r, prefix):
    """A JSON line the dsnsync adapter wrote to stderr (run.py keeps its last 500 chars)."""
    for line in (r.get("stderr_tail") or "").splitlines():
        if line.startswith(prefix + " "):
            try:
                return json.loads(line[len(prefix) + 1:])
            except ValueError:
                return None
    return None


def values(runs, path):
    out = []
    for r in runs:
        if "error" in r:
            continue
        v = path(r) if callable(path) else dig(r, path)
        if v is not None:
            out.append(v)
    return out


def med(runs, path):
    vs = values(runs, path)
    return statistics.median(vs) if vs else None


def cell(runs, path, unit=""):
    vs = values(runs, path)
    if not vs:
        return "-"
    if isinstance(vs[0], bool):
        return "%d/%d" % (sum(vs), len(vs))
    m = statistics.median(vs)
    return fmt(m, unit) if len(vs) == 1 or min(vs) == max(vs) else "%s (%s–%s)" % (fmt(m, unit), fmt(min(vs)), fmt(max(vs)))


def peer_name(peer, runs):
    bad = sum(1 for r in runs if "error" in r)
    return peer + (" (%d failed)" % bad if bad else "")


def report_workloads(a, out_dir, plan):
    """Prints the workload tables; returns {tag: {peer: runs}}."""
    data = {tag: load_runs(out_dir, tag) for tag, _ in plan}
    for tag, args in plan:
        by = data[tag]
        if not by:
            continue
        if tag.startswith("w1"):
            print("### W1 fan-out, C=%s subscribers, %s updates/s for %s s\n" % (args[2], a.rate, a.duration))
            print_table(["peer", "last-value p50 ms", "last-value p99 ms", "last-value max ms", "delivery p50 ms", "delivery p99 ms",
                         "produced/s", "sync() p99 ms", "deliveries/s", "all converged", "server CPU %", "gen_elu", "gen_elu peak 1 s",
                         "connect s", "errors"],
                        [[peer_name(p, rs), cell(rs, "final_value_latency_ms.p50"),
                          cell(rs, lambda r: (stderr_json(r, "dsn_w1_last_value") or {}).get("p99")),
                          cell(rs, "final_value_latency_ms.max"), cell(rs, "latency_ms.p50"), cell(rs, "latency_ms.p99"),
                          cell(rs, "produced_per_s"), cell(rs, lambda r: dig(stderr_json(r, "dsn_produce"), "sync_ms.p99")),
                          cell(rs, "deliveries_per_s"), cell(rs, "all_converged"),
                          cell(rs, "server_during_produce.cpu_pct_of_core"), cell(rs, "gen_elu"), cell(rs, "gen_elu_peak_1s"),
                          cell(rs, "connect_s"), cell(rs, lambda r: r.get("errors", 0) + r.get("disconnects", 0))]
                         for p, rs in by.items()])
        elif tag.startswith("w2"):
            print("### W2 write acks, %s writers, %s s\n" % (args[2], a.duration))
            print_table(["peer", "acks/s", "p50 ms", "p90 ms", "p99 ms", "server CPU %", "server peak RSS MB", "gen CPU %",
                         "gen_elu", "gen_elu peak 1 s", "errors"],
                        [[peer_name(p, rs), cell(rs, "acks_per_s"), cell(rs, "latency_ms.p50"), cell(rs, "latency_ms.p90"),
                          cell(rs, "latency_ms.p99"), cell(rs, "server.cpu_pct_of_core"), cell(rs, "server.peak_rss_mb"),
                          cell(rs, "generator.cpu_pct_of_core"), cell(rs, "gen_elu"), cell(rs, "gen_elu_peak_1s"), cell(rs, "errors")]
                         for p, rs in by.items()])
        else:
            print("### W3 initial sync, %s records of ~200 B\n" % f"{a.records:,}")
            print_table(["peer", "time to all s", "first record s", "MB server→client", "server CPU s", "server RSS at rest MB",
                         "server peak RSS MB", "gen CPU s", "complete"],
                        [[peer_name(p, rs), cell(rs, "time_to_all_s"), cell(rs, "first_record_s"), cell(rs, "wire_mb_server_to_client"),
                          cell(rs, "server.cpu_s"), cell(rs, "server.rss_mb_before"), cell(rs, "server.peak_rss_mb"),
                          cell(rs, "generator.cpu_s"), cell(rs, "complete")]
                         for p, rs in by.items()])
        rs_all = [r for rs in by.values() for r in rs if "error" not in r]
        if rs_all:
            la = [r["loadavg_before_run"][0] for r in rs_all]
            oc = [r.get("other_cpu_pct_of_core", 0) for r in rs_all]
            print("Noise: %d runs; 1-min loadavg before each run %.2f–%.2f; CPU of other processes during a run %.0f–%.0f %% "
                  "of a core (median %.0f).\n" % (len(rs_all), min(la), max(la), min(oc), max(oc), statistics.median(oc)))
        hot = [(p, r.get("gen_elu")) for p, rs in by.items() for r in rs if (r.get("gen_elu") or 0) >= 0.9]
        if hot:
            print("gen_elu >= 0.9 (load generator saturated; that row measures the client too): %s\n"
                  % ", ".join("%s %.2f" % h for h in hot))
    return data


def ratio(x, y):
    return x / y if x is not None and y else None


def targets(a, data, micro_rows):
    """The issue's workload targets as ratios within this run, judged on the dsn peer whose
    generator stayed below saturation (dsnsync_native unless it is missing)."""
    rows = []

    def pick(by):
        for p in ("dsnsync_native", "dsnsync"):
            if p in by:
                return p, by[p]
        return None, []

    def sio(by, path, best=max):
        vs = [med(by[p], path) for p in ("socketio", "socketio_nodeflate") if p in by]
        vs = [v for v in vs if v is not None]
        return best(vs) if vs else None

    w2 = data.get("w2_w%d" % a.writers, {})
    p, rs = pick(w2)
    if rs:
        acks, ceil = med(rs, "acks_per_s"), med(w2.get("ref_http", []), "acks_per_s")
        s = sio(w2, "acks_per_s")
        r = ratio(acks, ceil)
        rows.append(("W2 acks/s >= 0.8x ceiling", "%s: %s vs ref_http %s = %sx" % (p, fmt(acks), fmt(ceil), fmt(r)),
                     "met" if r and r >= 0.8 else "MISSED" if r else "?"))
        rows.append(("W2 acks/s > python-socketio (best variant)", "%s vs %s" % (fmt(acks), fmt(s)),
                     "met" if s and acks > s else "MISSED" if s else "no socketio run"))
    big = data.get("w1_c%d" % a.subs_large, {})
    p, rs = pick(big)
    if rs:
        prod = med(rs, "produced_per_s")
        rows.append(("W1 C=%d producer >= 190 of 200 updates/s" % a.subs_large, "%s: %s/s" % (p, fmt(prod)),
                     "met" if prod and prod >= 190 * a.rate / 200 else "MISSED"))
        conv = values(rs, "all_converged")
        rows.append(("W1 C=%d no subscriber ends stale" % a.subs_large, "%d/%d runs all converged" % (sum(conv), len(conv)),
                     "met" if conv and all(conv) else "MISSED"))
        p50 = med(rs, "final_value_latency_ms.p50")
        p99 = med(rs, lambda r: (stderr_json(r, "dsn_w1_last_value") or {}).get("p99"))
        rows.append(("W1 C=%d last-value p50 <= 100 ms" % a.subs_large, "%s ms (ref_http %s)" % (
            fmt(p50), fmt(med(big.get("ref_http", []), "final_value_latency_ms.p50"))), "met" if p50 is not None and p50 <= 100 else "MISSED"))
        rows.append(("W1 C=%d last-value p99 <= 300 ms" % a.subs_large, "%s ms" % fmt(p99), "met" if p99 is not None and p99 <= 300 else "MISSED"))
        sp = med(rs, lambda r: dig(stderr_json(r, "dsn_produce"), "sync_ms.p99"))
        small = data.get("w1_c%d" % a.subs_small, {})
        p_s, rs_s = pick(small)
        sp_small = med(rs_s, lambda r: dig(stderr_json(r, "dsn_produce"), "sync_ms.p99"))
        rows.append(("W1 sync() latency unaffected by waiting clients", "sync() p99 %s ms at C=%d vs %s ms at C=%d" % (
            fmt(sp), a.subs_large, fmt(sp_small), a.subs_small), "see numbers"))
    small = data.get("w1_c%d" % a.subs_small, {})
    p, rs = pick(small)
    if rs:
        p50 = med(rs, "final_value_latency_ms.p50")
        s = sio(small, "final_value_latency_ms.p50", best=min)
        rows.append(("W1 C=%d last-value p50 <= python-socketio's (best variant)" % a.subs_small,
                     "%s ms vs %s ms" % (fmt(p50), fmt(s)), "met" if s and p50 is not None and p50 <= s else "MISSED" if s else "no socketio run"))
    w3 = data.get("w3_n%d" % a.records, {})
    p, rs = pick(w3)
    if rs:
        t, ceil = med(rs, "time_to_all_s"), med(w3.get("ref_http", []), "time_to_all_s")
        s = sio(w3, "time_to_all_s", best=min)
        r = ratio(t, ceil)
        rows.append(("W3 within 1.5x of the ceiling", "%s: %s s vs ref_http %s s = %sx" % (p, fmt(t), fmt(ceil), fmt(r)),
                     "met" if r and r <= 1.5 else "MISSED" if r else "?"))
        rows.append(("W3 faster than python-socketio (best variant)", "%s s vs %s s" % (fmt(t), fmt(s)),
                     "met" if s and t < s else "MISSED" if s else "no socketio run"))
        rest = med(rs, "server.rss_mb_before")
        ref_rest = med(w3.get("ref_http", []), "server.rss_mb_before")
        rows.append(("Server RSS at rest with the W3 records <= half the ceiling's", "%s MB vs ref_http %s MB = %sx" % (
            fmt(rest), fmt(ref_rest), fmt(ratio(rest, ref_rest))), "met" if rest and ref_rest and rest <= ref_rest / 2 else "MISSED"))
        rows.append(("W3 into Chromium's IndexedDB <= 3 s", "not measured by this benchmark", "-"))
    for name, value, target, ok, _ in micro_rows:
        if target:
            rows.append((name, "%s (target %s)" % (value, target), "met" if ok else "MISSED" if ok is False else "-"))
    return rows


# =============================================================================
# Profile: py-spy on the server under W1 C=1000 and W2
# =============================================================================

def wait_health(url, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            with urllib.request.urlopen(url + "/_bench/health", timeout=2) as r:
                return json.load(r)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not ready")


def summarize_raw(path, top=25):
    """py-spy --format raw (collapsed stacks, one "frame;frame;... count" per line, a frame
    being "function (file:line)") -> (samples, functions of dsn_sync.py by inclusive time,
    hottest lines anywhere by self time).  Percentages are of all samples taken."""
    total, incl, self_f, self_l = 0, {}, {}, {}

    def split(frame):
        name, _, where = frame.rpartition(" (")
        file, _, line = where.rstrip(")").rpartition(":")
        return name, os.path.basename(file), line

    for row in open(path):
        stack, _, n = row.rstrip("\n").rpartition(" ")
        if not n.isdigit() or not stack:
            continue
        n = int(n)
        total += n
        frames = [split(f) for f in stack.split(";")]
        for fn in {(name, file) for name, file, _ in frames}:
            incl[fn] = incl.get(fn, 0) + n
        name, file, line = frames[-1]
        self_f[(name, file)] = self_f.get((name, file), 0) + n
        self_l[(name, file, line)] = self_l.get((name, file, line), 0) + n
    pct = lambda c: 100.0 * c / max(1, total)
    source = {}
    try:
        with open(os.path.join(REPO, "dsn_sync.py")) as f:
            source = dict(enumerate(f.read().splitlines(), 1))
    except OSError:
        pass
    ours = sorted(((pct(c), pct(self_f.get(fn, 0)), "%s (%s)" % fn) for fn, c in incl.items() if fn[1] == "dsn_sync.py"),
                  reverse=True)[:top]
    lines = []
    for (name, file, line), c in sorted(self_l.items(), key=lambda kv: -kv[1])[:top]:
        text = source.get(int(line), "").strip() if file == "dsn_sync.py" and line.isdigit() else ""
        lines.append((pct(c), "%s:%s %s" % (file, line, name), text[:90]))
    return total, ours, lines


def perf_python(a):
    """A Python >= 3.12 whose -X perf works (perf then sees each Python function), or None."""
    found = [a.profile_python] if a.profile_python else []
    found += [shutil.which("python3.12"), shutil.which("python3.13")]  # the closest to the harness's 3.11 first
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    for py in found:
        if py and os.path.exists(py) and subprocess.run(
                [py, "-X", "perf", "-c", "import sys; assert sys.version_info >= (3, 12) and sys.is_stack_trampoline_active()"],
                capture_output=True).returncode == 0:
            return py
    return None


def summarize_perf(text, top=25):
    """`perf script` of a DWARF call-graph recording of a ``-X perf`` Python ->
    (samples, [(% of samples, % of them in the kernel, innermost Python function)], [(%, leaf symbol)]).

    Each on-CPU sample is charged to the innermost Python function on its stack, with
    everything it called in C and in the kernel (a socket send, a futex wait, SHAKE256):
    "where the server's CPU goes, by Python function".  (perf cannot unwind past the
    first Python frame, so there are no inclusive times here; py-spy has the callers.)"""
    samples, by_fn, kernel_fn, leaf = 0, {}, {}, {}
    for block in text.split("\n\n"):
        frames = [ln.strip() for ln in block.strip().splitlines()[1:] if ln.strip()]
        if not frames:
            continue
        samples += 1
        parts = frames[0].split(" ", 1)
        sym = parts[1].rsplit(" (", 1)[0] if len(parts) > 1 else "?"
        leaf[sym] = leaf.get(sym, 0) + 1
        py = next((f for f in frames if " py::" in f), None)
        if py is None:
            name = "[no Python frame: interpreter start-up, GC or a C thread]"
        else:
            fn, _, where = py.split(" py::", 1)[1].rsplit(" (", 1)[0].partition(":")
            name = "%s (%s)" % (fn, os.path.basename(where))
        by_fn[name] = by_fn.get(name, 0) + 1
        if "[kernel.kallsyms]" in frames[0]:
            kernel_fn[name] = kernel_fn.get(name, 0) + 1
    pct = lambda c: 100.0 * c / max(1, samples)
    kernel_total = pct(sum(kernel_fn.values()))
    fns = [(pct(c), 100.0 * kernel_fn.get(n, 0) / c, n) for n, c in sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]]
    leaves = [(pct(c), n) for n, c in sorted(leaf.items(), key=lambda kv: -kv[1])[:15]]
    return samples, fns, leaves, kernel_total


def profile(a, harness, out_dir):
    """Profile the server under W1 C=large and W2: perf on a ``-X perf`` Python when there is
    one (on-CPU samples of every thread, kernel included), else py-spy --gil."""
    perf, py = shutil.which("perf"), perf_python(a)
    use_perf = a.profiler in ("auto", "perf") and perf and py
    pyspy = shutil.which("py-spy")
    if not use_perf and not pyspy:
        print("neither perf with a Python >= 3.12 nor py-spy (pip install py-spy) is here", flush=True)
        return
    server_py = py if use_perf else sys.executable
    adapter = os.path.join(BENCH, "adapters", "dsnsync_native.mjs")
    port, url = 8713, "http://127.0.0.1:8713"
    # Profilers start once the clients are connected (W1: connect + 1 s settle; W2: its 1 s
    # warm-up) and record the measured window.
    jobs = [("w1_c%d" % a.subs_large, 2.5 + a.subs_large / 1000.0, ["node", "w1_fanout.mjs", "--subs", str(a.subs_large),
                                                                   "--rate", str(a.rate), "--duration", str(a.duration)]),
            ("w2_w%d" % a.writers, 1.5, ["node", "w2_writes.mjs", "--writers", str(a.writers), "--duration", str(a.duration)])]
    env = dict(os.environ, BENCH_HARNESS=harness)
    rec_s = max(1, int(a.duration) - 1)
    for tag, delay, load in jobs:
        srv_cmd = [server_py] + (["-X", "perf"] if use_perf else []) + [os.path.join(BENCH, "dsn_server.py"), "--port", str(port)]
        srv = subprocess.Popen(srv_cmd, env=env, stdout=subprocess.DEVNULL)
        try:
            wait_health(url, srv)
            load = load + ["--adapter", adapter, "--url", url, "--server-pid", str(srv.pid)]
            if use_perf:
                data = os.path.join(out_dir, "perf_%s.data" % tag)
                rec = [perf, "record", "-F", str(a.perf_freq), "--call-graph", "dwarf,8192", "-o", data, "-p", str(srv.pid),
                       "--", "sleep", str(rec_s)]
            else:
                # --gil: only the thread holding the GIL, where the Python CPU goes.  On builds where
                # py-spy cannot see the GIL holder, few samples come back: the header says how many.
                data = os.path.join(out_dir, "pyspy_%s.txt" % tag)
                rec = [pyspy, "record", "--gil", "--rate", str(a.spy_rate), "--duration", str(rec_s), "--format", "raw",
                       "-o", data, "--pid", str(srv.pid)]
            print("$ " + shlex.join(srv_cmd) + " &  # PID", flush=True)
            print("$ (cd %s && %s) &" % (harness, shlex.join(load).replace("--server-pid %d" % srv.pid, "--server-pid PID")), flush=True)
            print("$ sleep %s; %s" % (delay, shlex.join(rec).replace(str(srv.pid), "PID")), flush=True)
            node = subprocess.Popen(load, cwd=harness, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(delay)
            recorded = subprocess.run(rec, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=rec_s + 60)
            try:
                stdout, _ = node.communicate(timeout=a.run_timeout)
            except subprocess.TimeoutExpired:
                node.kill()
                stdout, _ = node.communicate()
            try:
                r = json.loads((stdout.strip().splitlines() or ["{}"])[-1])
            except ValueError:
                r = {}
            print("result: %s; server CPU %s %% of a core; loadavg %s" % (
                json.dumps({k: r.get(k) for k in ("acks_per_s", "produced_per_s", "final_value_latency_ms", "latency_ms",
                                                  "gen_elu") if k in r}),
                dig(r, "server.cpu_pct_of_core"), loadavg()), flush=True)
            if not os.path.exists(data):
                print("the profiler wrote nothing: %s" % recorded.stderr[-500:], flush=True)
                continue
            if use_perf:
                script = subprocess.run([perf, "script", "-i", data, "-F", "tid,period,ip,sym,dso"], capture_output=True,
                                        text=True, timeout=600).stdout
                samples, fns, leaves, kernel_total = summarize_perf(script)
                print("\n### Server CPU under %s, by innermost Python function (perf, %d on-CPU samples at %d Hz "
                      "over %d s, all threads; Python %s -X perf; data %s)\n" % (
                          tag, samples, a.perf_freq, rec_s, subprocess.run([py, "-c", "import sys; print(sys.version.split()[0])"],
                                                                           capture_output=True, text=True).stdout.strip(), data))
                print("A function's share includes what it ran in C and in the kernel (sends, futex waits, hashing); "
                      "%.0f %% of all samples were in the kernel.\n" % kernel_total)
                print_table(["% of CPU samples", "of which in the kernel", "innermost Python function"],
                            [[fmt(c), "%.0f %%" % k, f] for c, k, f in fns])
                print("Leaf symbols (where the samples landed):\n")
                print_table(["%", "symbol"], [[fmt(c), "`%s`" % n] for c, n in leaves])
                try:
                    os.remove("/tmp/perf-%d.map" % srv.pid)  # the -X perf symbol map of our server
                except OSError:
                    pass
            else:
                total, ours, lines = summarize_raw(data)
                print("\n### Server profile under %s: %d samples with the GIL held, of %d taken in %d s; raw stacks: %s\n"
                      % (tag, total, a.spy_rate * rec_s, rec_s, data))
                print("dsn_sync.py functions by inclusive time (% of the samples; self = in its own lines):\n")
                print_table(["incl %", "self %", "function"], [[fmt(i), fmt(sf), f] for i, sf, f in ours])
                print("Hottest lines by self time, anywhere (stdlib included):\n")
                print_table(["self %", "where", "source (dsn_sync.py at this run)"],
                            [[fmt(c), w, "`%s`" % t if t else ""] for c, w, t in lines])
        finally:
            srv.send_signal(signal.SIGINT)
            try:
                srv.wait(10)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait()
        time.sleep(a.cooldown)


# =============================================================================
# Mounts (issue 12): the ASGI mount under uvicorn beside the standalone server and python-socketio
# =============================================================================

def mount_python(venv):
    """The Python that runs the ASGI peer: the harness venv's (the uvicorn python-socketio runs
    under) when it has uvicorn, else this one."""
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py) and subprocess.run([py, "-c", "import uvicorn"], capture_output=True).returncode == 0:
        return py
    if subprocess.run([sys.executable, "-c", "import uvicorn"], capture_output=True).returncode == 0:
        return sys.executable
    raise SystemExit("--mounts needs uvicorn: pip install uvicorn (the harness venv has it once set up)")


def asgi_runtime(py, harness):
    """Start bench/asgi_server.py once on a free port and return its health answer (which loop,
    which HTTP parser, which uvicorn) and the command."""
    cmd = [py, os.path.join(BENCH, "asgi_server.py"), "--port", "0"]
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, BENCH_HARNESS=harness))
    try:
        line = srv.stdout.readline()
        port = line.split("127.0.0.1:")[1].split()[0] if "127.0.0.1:" in line else None
        if port is None:
            raise RuntimeError("bench/asgi_server.py did not start: %s %s" % (line, srv.stderr.read()[-2000:]))
        with urllib.request.urlopen("http://127.0.0.1:%s/_bench/health" % port, timeout=20) as r:
            return json.load(r)
    finally:
        srv.send_signal(signal.SIGINT)
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def write_peers(path, peers):
    """A BENCH_PEERS_FILE with absolute paths: {name: (server command, adapter file, port)}."""
    spec = {name: {"server": cmd, "adapter": adapter, "url": "http://127.0.0.1:%d" % port, "cwd": BENCH}
            for name, (cmd, adapter, port) in peers.items()}
    with open(path, "w") as f:
        json.dump(spec, f, indent=1)
    return path


IDLE_CALLS = ("<method 'get' of '_queue.SimpleQueue' objects>", "<method 'acquire' of '_thread.lock' objects>",
              "<method 'acquire' of '_thread.RLock' objects>", "<built-in method time.sleep>",
              "<method 'run_until_complete' of 'uvloop.loop.Loop' objects>", "<method 'poll' of 'select.epoll' objects>",
              "<method 'select' of 'select.epoll' objects>", "<built-in method select.select>")


def summarize_pstats(path, top=18):
    """cProfile's wall time per function, less the calls where a thread only waits (a worker
    parked in queue.get, a lock, the loop's epoll): (busy s, idle s, rows of (self %, cumulative
    %, calls, function), groups of (share %, where)), shares of the busy time."""
    import pstats
    st = pstats.Stats(path)
    idle = sum(v[2] for k, v in st.stats.items() if k[2] in IDLE_CALLS)
    busy = (sum(v[2] for v in st.stats.values()) - idle) or 1.0
    live = [(k, v) for k, v in st.stats.items() if k[2] not in IDLE_CALLS]
    rows = sorted(live, key=lambda kv: -kv[1][2])[:top]
    out = [(100 * v[2] / busy, 100 * v[3] / busy, v[1], "%s:%d %s" % (os.path.basename(k[0]), k[1], k[2])) for k, v in rows]
    groups = {}
    for k, v in live:
        f, name = k[0], k[2]
        if f == "~":  # C functions: name the ones that matter by what they are
            g = ("C: hashing (hmac/sha/shake)" if any(x in name for x in ("hmac", "_hashlib", "sha", "shake", "digest", "update"))
                 else "C: json" if "json" in name or "encode" in name or "scanner" in name
                 else "C: loop/thread hand-offs (call_soon_threadsafe, queue put, futures)" if any(
                     x in name for x in ("call_soon", "put", "set_result", "_call_set_state", "run_in_executor"))
                 else "C: other builtins")
        else:
            g = ("dsn_sync.py (Python)" if f.endswith("dsn_sync.py") else "uvicorn (Python)" if "/uvicorn/" in f
                 else "bench/ (control routes, mount dispatch)" if f.endswith(("asgi_server.py", "dsn_server.py"))
                 else "asyncio/concurrent.futures/threading (Python)" if "/asyncio/" in f or "/concurrent/" in f
                 or f.endswith(("threading.py", "queue.py")) else "json (Python)" if "/json/" in f
                 else "hmac.py/hashlib (Python)" if f.endswith(("hmac.py", "hashlib.py")) else "other Python")
        groups[g] = groups.get(g, 0) + v[2]
    return busy, idle, out, sorted(((100 * t / busy, g) for g, t in groups.items()), reverse=True)[:12]


def profile_asgi_w2(a, harness, py, out_dir):
    """cProfile of bench/asgi_server.py (every Python thread) under W2: where the time goes."""
    data = os.path.join(out_dir, "asgi_w2.pstats")
    port = 8714
    srv_cmd = [py, os.path.join(BENCH, "asgi_server.py"), "--port", str(port), "--cprofile", data]
    load = ["node", "w2_writes.mjs", "--adapter", os.path.join(BENCH, "adapters", "dsnsync_lean.mjs"), "--url",
            "http://127.0.0.1:%d" % port, "--writers", str(a.writers), "--duration", str(a.duration)]
    print("$ %s &\n$ (cd %s && %s)\n$ kill -INT %%1" % (shlex.join(srv_cmd), harness, shlex.join(load)), flush=True)
    srv = subprocess.Popen(srv_cmd, stdout=subprocess.DEVNULL, env=dict(os.environ, BENCH_HARNESS=harness))
    try:
        wait_health("http://127.0.0.1:%d" % port, srv)
        out = subprocess.run(load, cwd=harness, capture_output=True, text=True, timeout=a.run_timeout)
        r = json.loads((out.stdout.strip().splitlines() or ["{}"])[-1] or "{}")
    finally:
        srv.send_signal(signal.SIGINT)
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
    print("\nW2 under cProfile (slower than without): %s acks/s, p50 %s ms; loadavg %s\n" % (
        fmt(r.get("acks_per_s")), fmt(dig(r, "latency_ms.p50")), loadavg()))
    if not os.path.exists(data):
        print("no profile written (%s)" % data)
        return
    busy, idle, rows, groups = summarize_pstats(data)
    print("### Where the ASGI server's time goes under W2 (cProfile, every Python thread; %.1f s busy, %.1f s of waiting "
          "left out; %s)\n" % (busy, idle, data))
    print_table(["share of profiled time", "where"], [["%.0f %%" % p, g] for p, g in groups])
    print_table(["self %", "cumulative %", "calls", "function"], [[fmt(t), fmt(c), n, "`%s`" % f] for t, c, n, f in rows])


def baseline_copy(rev, workdir):
    """dsn_sync.py as of git revision ``rev`` beside a copy of this tree's bench/ (workdir/base-<commit>),
    so bench/asgi_server.py there serves that revision's mount; returns (short commit, its bench dir)."""
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    snap = os.path.join(workdir, "base-" + commit)
    shutil.rmtree(snap, ignore_errors=True)
    os.makedirs(snap)
    archive = subprocess.run(["git", "-C", REPO, "archive", commit, "dsn_sync.py"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", snap], input=archive.stdout, check=True)
    shutil.copytree(BENCH, os.path.join(snap, "bench"), ignore=shutil.ignore_patterns("results", "__pycache__"))
    return commit, os.path.join(snap, "bench")


DOOR_CHILD = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
import dsn_sync as d
assert d.__file__.startswith(sys.argv[1]), "imported %s, not the one in %s" % (d.__file__, sys.argv[1])
n = int(sys.argv[2])
sync = d.DSNSync(port=0)
sync.define_table("w2", {"key": "id", "fields": None})
sync.on_create("w2")(lambda data: True)  # as bench/dsn_server.py: a handler that accepts
sync._start_engine()
# inline_handlers=True as bench/asgi_server.py: the W2 peer's path (the default sends handler frames to a worker)
engine, door = sync._engine, sync.asgi_app(inline_handlers=True) if "inline_handlers" in d._ASGIDoor.__init__.__code__.co_varnames else sync.asgi_app()
kid, secret = d.parse_token(sync.issue_token(sub="micro", ttl=3600, read="*", write="*"))
c2s, s2c = (d.SealKey(k) for k in d.traffic_keys(secret))
ep = [engine.base]

def frame(obj):
    obj["t"] = int(time.time() * 1000)
    return d.request_frame(kid, c2s, ep[0], json.dumps(obj).encode())

async def main():
    out = {}

    async def send(message):
        if message["type"] == "http.response.body":
            out["body"] = message["body"]

    async def call(body):
        sent = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return sent.pop() if sent else {"type": "http.disconnect"}
        await door({"type": "http", "method": "POST", "path": "/dsn" + ep[0], "root_path": "/dsn",
                    "headers": [(b"host", b"x"), (b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body)), (b"origin", b"http://x")]}, receive, send)
    hello = frame({"op": "hello"})
    await call(hello)
    ep[0] = json.loads(d.open_response(s2c, hello[3 + len(kid):][:16], out["body"]))["ep"]
    writes = [frame({"op": "create", "table": "w2", "key": "k%d" % i, "data": {"i": i, "s": "x" * 40},
                     "mid": "m%d" % i}) for i in range(n + 100)]
    for body in writes[:100]:  # warm-up (a handler earns the event loop after 32 quick runs in a worker)
        await call(body)
    t0 = time.perf_counter()
    for body in writes[100:]:
        await call(body)
    door_us = (time.perf_counter() - t0) / n * 1e6
    writes = [frame({"op": "create", "table": "w2", "key": "j%d" % i, "data": {"i": i, "s": "x" * 40},
                     "mid": "n%d" % i}) for i in range(n)]
    t0 = time.perf_counter()
    for body in writes:
        engine.handle(ep[0], body)
    engine_us = (time.perf_counter() - t0) / n * 1e6
    lanes = getattr(door, "lanes", None)
    print(json.dumps({"door_us": door_us, "engine_us": engine_us, "inline": getattr(lanes, "inline", None),
                      "offloaded": getattr(lanes, "offloaded", None)}))
asyncio.run(main())
sync.stop()
"""


def door_micro(repo, n=5000):
    """One small write through sync.asgi_app() in this process, one at a time, no HTTP: microseconds
    per write through the door, and per engine.handle() alone; {} if it failed."""
    repo = os.path.abspath(repo)
    out = subprocess.run([sys.executable, "-c", DOOR_CHILD, repo, str(n)], capture_output=True, text=True, timeout=300,
                         cwd=repo)
    if out.returncode:
        print("door micro failed for %s: %s" % (repo, out.stderr[-1500:]), flush=True)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def mounts(a, harness, venv, sio, out_dir):
    py = mount_python(venv)
    rt = asgi_runtime(py, harness)
    print("ASGI peer: %s bench/asgi_server.py: uvicorn %s, loop %s, HTTP %s (uvicorn defaults, loop=auto http=auto; "
          "uvloop installed: %s)\n" % (py, rt.get("uvicorn"), rt.get("loop"), rt.get("http"), rt.get("uvloop_installed")),
          flush=True)
    if sio:
        sio_rt = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                                 "import uvicorn, importlib.metadata as m; print(uvicorn.__version__, m.version('python-socketio'))"],
                                capture_output=True, text=True).stdout.split()
        print("python-socketio %s under uvicorn %s from the same venv (servers/sio_server.py, loop/http auto)\n"
              % (sio_rt[1] if len(sio_rt) > 1 else "?", sio_rt[0] if sio_rt else "?"), flush=True)
    adapter = os.path.join(BENCH, "adapters", "dsnsync_native.mjs")
    lean = os.path.join(BENCH, "adapters", "dsnsync_lean.mjs")
    # dsnsync_asgi_lean: the same server, with a load generator whose calls go over a minimal
    # HTTP/1.1 client (adapters/dsnsync_lean.mjs) instead of node:http, a control for how much of a
    # result is the generator's: on two shared cores, CPU it spends is CPU the server lacks.
    spec = {"dsnsync_native": ([sys.executable, os.path.join(BENCH, "dsn_server.py"), "--port", "8703"], adapter, 8703),
            "dsnsync_asgi": ([py, os.path.join(BENCH, "asgi_server.py"), "--port", "8704"], adapter, 8704),
            "dsnsync_asgi_lean": ([py, os.path.join(BENCH, "asgi_server.py"), "--port", "8706"], lean, 8706),
            # ref_asgi: the harness's reference protocol as a bare ASGI app under the same uvicorn (no
            # crypto, no validation, no handlers), driven by the harness's node:http adapter: what one
            # HTTP request per write costs on this stack, the ceiling of the mount's architecture.
            "ref_asgi": ([py, os.path.join(BENCH, "asgi_ref.py"), "--port", "8707"], "ref_http", 8707)}
    peers = ["dsnsync_asgi_lean", "dsnsync_asgi", "dsnsync_native", "ref_asgi"]
    base = None
    if a.baseline:
        commit, bench_dir = baseline_copy(a.baseline, a.workdir)
        base = "dsnsync_asgi_" + commit
        spec[base] = ([py, os.path.join(bench_dir, "asgi_server.py"), "--port", "8705"], lean, 8705)
        peers.insert(1, base)
        print("Baseline peer %s: the ASGI mount of dsn_sync.py as of %s (%s), same adapter and uvicorn\n"
              % (base, a.baseline, commit), flush=True)
    peers_file = write_peers(os.path.join(out_dir, "peers-mounts.json"), spec)
    repos = [("this tree", REPO)] + ([(a.baseline, os.path.dirname(os.path.dirname(spec[base][0][1])))] if base else [])
    print("### One small write through the mount, in process (no HTTP, no load generator; one at a time)\n")
    print_table(["dsn_sync.py", "us per write through the ASGI door", "of which engine.handle()", "door's own",
                 "frames on the loop / in a worker"],
                [[name, fmt(m.get("door_us")), fmt(m.get("engine_us")),
                  fmt(m["door_us"] - m["engine_us"]) if m else "-",
                  "%s / %s" % (m.get("inline"), m.get("offloaded")) if m.get("inline") is not None else "all in a worker"]
                 for name, m in ((name, door_micro(repo)) for name, repo in repos)])
    print("(`python3 -c <bench_dsn_sync.DOOR_CHILD> REPO 5000`: awaited one after another, so a frame in a "
          "worker pays the threads' wake-up latency too.)\n", flush=True)
    peers += ["socketio_nodeflate", "socketio"] if sio else []
    print("## Mounts: W1 C=%d, W2, W3 (peers alternating: %s; %d rep(s); results in %s)\n"
          % (a.subs_large, ", ".join(peers), a.reps, out_dir), flush=True)
    plan, commands = run_workloads(a, harness, venv, peers, out_dir, peers_file=peers_file, skip=(0,))
    print("\nloadavg after the workloads: %s\n" % loadavg())
    data = report_workloads(a, out_dir, plan)
    rows = []
    w2 = data.get("w2_w%d" % a.writers, {})
    std = med(w2.get("dsnsync_native", []), "acks_per_s")
    svals = [(p, med(w2[p], "acks_per_s")) for p in ("socketio", "socketio_nodeflate") if p in w2]
    svals = [x for x in svals if x[1] is not None]
    best = max(svals, key=lambda x: x[1]) if svals else (None, None)
    # The same mount behind two load generators (node:http, the lean client): each judged on its own.
    mounts_by = (("dsnsync_asgi", "node:http generator"), ("dsnsync_asgi_lean", "lean HTTP client generator"))
    for peer, how in mounts_by:
        acks = med(w2.get(peer, []), "acks_per_s")
        rows.append(("W2 acks/s, ASGI mount > python-socketio (best variant), same uvicorn; %s" % how,
                     "%s vs %s %s = %sx" % (fmt(acks), best[0], fmt(best[1]), fmt(ratio(acks, best[1]))),
                     "met" if acks and best[1] and acks > best[1] else "MISSED" if best[1] else "no socketio run"))
    acks = med(w2.get("dsnsync_asgi", []), "acks_per_s")
    ceiling = med(w2.get("ref_asgi", []), "acks_per_s")
    if ceiling:
        rows.append(("W2 acks/s against the ceiling: a bare ASGI app, no dsn-sync in it, same uvicorn (ref_asgi)",
                     "mount %sx, %s %sx of its %s" % (fmt(ratio(acks, ceiling)), best[0], fmt(ratio(best[1], ceiling)),
                                                     fmt(ceiling)), "-"))
    rows.append(("W2 acks/s, ASGI mount vs standalone server (node:http)", "%s vs %s = %sx" % (fmt(acks), fmt(std), fmt(ratio(acks, std))), "-"))
    if base:
        was, now = med(w2.get(base, []), "acks_per_s"), med(w2.get("dsnsync_asgi_lean", []), "acks_per_s")
        rows.append(("W2 acks/s, ASGI mount vs the mount as of %s (lean client)" % a.baseline,
                     "%s vs %s = %sx" % (fmt(now), fmt(was), fmt(ratio(now, was))), "-"))
        if was and best[1]:
            rows.append(("W2 acks/s, the mount as of %s vs python-socketio" % a.baseline,
                         "%s vs %s = %sx" % (fmt(was), fmt(best[1]), fmt(ratio(was, best[1]))), "-"))

    def per_ack(peer, path):  # CPU microseconds per ack: % of a core / acks per second
        pct, n = med(w2.get(peer, []), path), med(w2.get(peer, []), "acks_per_s")
        return 1e4 * pct / n if pct is not None and n else None
    shown = [p for p in ("dsnsync_asgi", "dsnsync_asgi_lean", base, best[0], "ref_asgi") if p and p in w2]
    if shown:
        rows.append(("W2 CPU per ack, server + load generator (2 cores shared: what one side spends, the other lacks)",
                     "; ".join("%s %s + %s us" % (p, fmt(per_ack(p, "server.cpu_pct_of_core")),
                                                   fmt(per_ack(p, "generator.cpu_pct_of_core"))) for p in shown), "-"))
    w1 = data.get("w1_c%d" % a.subs_large, {})
    for peer, how in mounts_by:
        big = w1.get(peer, [])
        if not big:
            continue
        prod, p50 = med(big, "produced_per_s"), med(big, "final_value_latency_ms.p50")
        rows.append(("W1 C=%d through the ASGI mount, %s: producer >= 190 of 200 updates/s" % (a.subs_large, how), fmt(prod),
                     "met" if prod and prod >= 190 * a.rate / 200 else "MISSED"))
        rows.append(("W1 C=%d through the ASGI mount, %s: last-value p50 <= 50 ms" % (a.subs_large, how), "%s ms" % fmt(p50),
                     "met" if p50 is not None and p50 <= 50 else "MISSED"))
    old = w1.get(base, []) if base else []
    if old:
        rows.append(("W1 C=%d last-value p50, the mount as of %s" % (a.subs_large, a.baseline),
                     "%s ms" % fmt(med(old, "final_value_latency_ms.p50")), "-"))
    w3 = data.get("w3_n%d" % a.records, {})
    t = med(w3.get("dsnsync_asgi", []), "time_to_all_s")
    tv = [(p, med(w3[p], "time_to_all_s")) for p in ("dsnsync_asgi_lean", "dsnsync_native", base, "socketio", "socketio_nodeflate")
          if p in w3]
    rows.append(("W3 time to all, ASGI mount vs the others", "%s s; %s" % (fmt(t), ", ".join("%s %s s" % (p, fmt(v)) for p, v in tv)), "-"))
    print("## Targets of issue 12 (ratios within this run)\n")
    print_table(["target", "measured", ""], rows)
    print("## Commands\n")
    for c in commands:
        print("- `%s`" % c)
    if a.mount_profile:
        print("\n## Profile of the ASGI server under W2\n", flush=True)
        profile_asgi_w2(a, harness, py, out_dir)
    return 0


# =============================================================================
# Main
# =============================================================================

def rerun_at(rev, a, argv):
    """Run this same benchmark on dsn_sync.py and dsn_client.js as of git revision `rev`:
    those two files come from `git archive rev`, the benchmark's own files from this tree,
    into workdir/at-<commit>; so two revisions can be measured by the same benchmark."""
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    snap = os.path.join(a.workdir, "at-" + commit)
    shutil.rmtree(snap, ignore_errors=True)
    os.makedirs(snap)
    archive = subprocess.run(["git", "-C", REPO, "archive", commit, "dsn_sync.py", "dsn_client.js"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", snap], input=archive.stdout, check=True)
    shutil.copytree(BENCH, os.path.join(snap, "bench"), ignore=shutil.ignore_patterns("results", "__pycache__"))
    shutil.copy(os.path.abspath(__file__), os.path.join(snap, "bench_dsn_sync.py"))
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--at":
            skip = True
        elif not arg.startswith("--at="):
            rest.append(arg)
    cmd = [sys.executable, os.path.join(snap, "bench_dsn_sync.py"), "--shared", os.path.abspath(a.shared),
           "--workdir", a.workdir, "--label", "%s (git %s)" % (rev, commit)] + rest
    print("$ " + shlex.join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main(argv=None):
    ap = argparse.ArgumentParser(description="dsn-sync benchmark: micro numbers and W1/W2/W3 against the shared harness's peers")
    ap.add_argument("--quick", action="store_true", help="short smoke version (1 rep, 3 s, small sizes)")
    ap.add_argument("--micro-only", action="store_true", help="only the micro numbers (no server, no harness)")
    ap.add_argument("--no-micro", action="store_true", help="skip the micro numbers")
    ap.add_argument("--profile", action="store_true", help="py-spy on the server under W1 C=large and W2 instead of the workloads")
    ap.add_argument("--shared", default=os.environ.get("BENCH_SHARED", os.path.join(os.path.dirname(REPO), "shared", "bench")),
                    help="the shared harness folder (read-only is fine)")
    ap.add_argument("--workdir", default=os.environ.get("DSN_BENCH_WORKDIR", "/tmp/dsn-bench"),
                    help="where the harness is copied and set up, and results go")
    ap.add_argument("--no-setup", action="store_true", help="never create the harness venv or run npm install")
    ap.add_argument("--no-socketio", action="store_true", help="leave the python-socketio peers out")
    ap.add_argument("--no-js-crypto-peer", action="store_true", help="leave out the dsnsync peer (dsn_client.js crypto in the generator)")
    ap.add_argument("--workloads", default="w1,w2,w3")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--subs-small", type=int, default=100)
    ap.add_argument("--subs-large", type=int, default=1000)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--cooldown", type=float, default=3)
    ap.add_argument("--run-timeout", type=float, default=180, help="cap for one workload run (s)")
    ap.add_argument("--micro-time", type=float, default=1.0, help="seconds per micro measurement")
    ap.add_argument("--sync-calls", type=int, default=200000)
    ap.add_argument("--sqlite-single", type=int, default=200)
    ap.add_argument("--mem-records", type=int, default=100000)
    ap.add_argument("--profiler", choices=("auto", "perf", "py-spy"), default="auto",
                    help="--profile with perf on a Python >= 3.12 -X perf (auto, when both are here) or py-spy --gil")
    ap.add_argument("--profile-python", default=None, help="the Python >= 3.12 to run the profiled server with")
    ap.add_argument("--perf-freq", type=int, default=400, help="perf samples per second per CPU (--profile)")
    ap.add_argument("--spy-rate", type=int, default=100, help="py-spy samples per second (--profile)")
    ap.add_argument("--mounts", action="store_true",
                    help="issue 12: W1 C=large, W2, W3 through sync.asgi_app() under uvicorn beside the standalone server "
                         "and python-socketio under the same uvicorn, with a bare ASGI app (bench/asgi_ref.py, no "
                         "dsn-sync in it) as the stack's ceiling (instead of the default workloads)")
    ap.add_argument("--postgres", action="store_true",
                    help="issue 11: on a throwaway PostgreSQL cluster (test/pg_cluster.py), changes/s reaching every node, "
                         "W2 on 1 and 2 nodes beside memory, cross-node wake-up p50/p99, W3 from PostgreSQL (bench/pg_bench.py)")
    ap.add_argument("--subs", action="store_true",
                    help="issue 16: per-change server cost with 1,000 clients each subscribed to its own room of one "
                         "table, beside the same clients mirroring the whole table as in W1 (bench/subs_bench.py)")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="with --mounts: also run the ASGI mount of dsn_sync.py as of this git revision, as peer "
                         "dsnsync_asgi_<commit> in the same runs (before/after ratios within one run)")
    ap.add_argument("--no-mount-profile", dest="mount_profile", action="store_false",
                    help="with --mounts: skip the cProfile of the ASGI server under W2")
    ap.add_argument("--at", default=None, metavar="REV", help="measure dsn_sync.py/dsn_client.js as of this git revision")
    ap.add_argument("--label", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.at:
        return rerun_at(a.at, a, list(argv if argv is not None else sys.argv[1:]))
    if a.quick:
        a.reps, a.duration, a.records, a.cooldown = 1, 3, 20000, 1
        a.micro_time, a.sync_calls, a.sqlite_single, a.mem_records = 0.1, 5000, 20, 5000
        if not (a.mounts or a.postgres):  # --mounts keeps C=1000 and python-socketio: they are what it compares
            a.subs_large = min(a.subs_large, 300)
            a.no_socketio = True
    t_start = time.time()
    print("# dsn-sync benchmark\n")
    print("Command: python3 bench_dsn_sync.py %s" % shlex.join(argv if argv is not None else sys.argv[1:]))
    print("Machine: nproc=%d, Python %s, %s; loadavg at start: %s" % (
        os.cpu_count(), sys.version.split()[0], subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node") else "no node", loadavg()))
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "dsn_sync.py", "dsn_client.js"],
                           capture_output=True, text=True).stdout.strip()
    if a.label:
        print("dsn_sync.py: %s, as of %s\n" % (dsn_sync.__file__, a.label), flush=True)
    else:
        print("dsn_sync.py: %s (commit %s%s)\n" % (dsn_sync.__file__, head or "?", ", with uncommitted changes" if dirty else ""),
              flush=True)

    harness = None
    if not a.micro_only:
        if not os.path.isdir(a.shared):
            raise SystemExit("the shared harness is not at %s (give --shared DIR)" % a.shared)
        os.makedirs(a.workdir, exist_ok=True)
        harness, venv, sio, _ = harness_ready(a.workdir, a.shared, not a.no_setup, not a.no_socketio)
    elif os.path.isdir(a.shared):
        harness = a.shared

    micro_rows = []
    if not a.no_micro and not a.profile:
        print("## Micro numbers\n", flush=True)
        micro_rows = micro(a, harness)
        print("Command: `%s` (in-process; memory in a fresh subprocess each)\n" % micro_rows[0][4])
        print_table(["metric", "value", "target", ""],
                    [[n, v, t, "met" if ok else "MISSED" if ok is False else ""] for n, v, t, ok, c in micro_rows])
        print("loadavg after the micro numbers: %s\n" % loadavg(), flush=True)
    if a.micro_only:
        return 0

    out_dir = os.path.join(a.workdir, "results-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    if a.profile:
        print("## Server profile (results in %s)\n" % out_dir, flush=True)
        profile(a, harness, out_dir)
        return 0

    if a.mounts:
        mounts(a, harness, venv, sio, out_dir)
    if a.postgres:
        cmd = [sys.executable, os.path.join(BENCH, "pg_bench.py"), "run", "--harness", harness, "--out", out_dir,
               "--reps", str(a.reps), "--duration", str(a.duration), "--writers", str(a.writers), "--records", str(a.records)]
        print("## PostgreSQL, several nodes (issue 11; results in %s)\n\n$ %s\n" % (out_dir, shlex.join(cmd)), flush=True)
        subprocess.run(cmd, timeout=a.reps * 1800)
        print("loadavg at the end: %s" % loadavg())
    if a.subs:
        cmd = [sys.executable, os.path.join(BENCH, "subs_bench.py")]
        print("## Subscriptions: 1,000 clients, one room each, beside W1 (issue 16)\n\n$ %s\n" % shlex.join(cmd), flush=True)
        subprocess.run(cmd, timeout=900)
    if a.mounts or a.postgres or a.subs:
        return 0

    peers = ["ref_http", "dsnsync_native"] + ([] if a.no_js_crypto_peer else ["dsnsync"])
    if sio:
        peers += ["socketio_nodeflate", "socketio"]
    print("## Workloads (peers alternating: %s; %d rep(s); results in %s)\n" % (", ".join(peers), a.reps, out_dir), flush=True)
    plan, commands = run_workloads(a, harness, venv, peers, out_dir)
    print("\nloadavg after the workloads: %s\n" % loadavg())
    data = report_workloads(a, out_dir, plan)

    print("## Targets of issue 6 (ratios within this run; dsn-sync judged on dsnsync_native, the lighter of its two "
          "adapters; a W1 row whose gen_elu is >= 0.9 above is bounded by the load generator, not the server)\n")
    print_table(["target", "measured", ""], targets(a, data, micro_rows))

    print("## Commands\n")
    for c in commands:
        print("- `%s`" % c)
    print("\nPer run (run.py starts a fresh server per run; it writes `.venv/bin/python` for the server's first word, "
          "whatever it really is — for dsn-sync that is `python3 bench/dsn_server.py`):\n")
    for tag, _ in plan:
        for peer, rs in data.get(tag, {}).items():
            r = next((r for r in rs if "cmd_load" in r), None)
            if r:
                print("- %s %s: `%s` then `%s`" % (tag, peer, r["cmd_server"], r["cmd_load"]))
    print("\nRaw runs: %s/*.jsonl. Took %.0f s; loadavg at the end: %s" % (out_dir, time.time() - t_start, loadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
