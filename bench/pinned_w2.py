#!/usr/bin/env python3
"""W2 with the server pinned to CPU 0 and the load generator to CPU 1 (Linux ``taskset``).

On a 2-core machine the unpinned W2 runs of ``bench_dsn_sync.py --mounts`` let the
generator and the server take CPU from each other, and their ratios move by 20 % or more
from run to run. Pinned, each side has its own core, and what is compared is the
server's cost per acknowledged write. Peers alternate within each repetition:

- ``mount_nodehttp``: ``sync.asgi_app()`` under uvicorn (bench/asgi_server.py), driven
  through node:http (adapters/dsnsync_native.mjs);
- ``mount_lean``: the same server, driven through the minimal HTTP client
  (adapters/dsnsync_lean.mjs);
- ``socketio_nodeflate``: python-socketio under the same uvicorn, permessage-deflate off;
- with ``--joined-head``, also ``joined_nodehttp`` and ``joined_lean``: the mount with
  uvicorn patched in process (``asgi_server.py --join-head``, an experiment, never for
  production) to send an answer's head in the same write as its body.

    python3 bench_dsn_sync.py --mounts --no-micro --workloads w2 --reps 1   # once: sets up the harness copy
    python3 bench/pinned_w2.py [--reps 3] [--duration 5] [--joined-head] [--perf DIR] [--harness /tmp/dsn-bench/harness]

Prints, for each run, acks/s and where the server's time per ack goes, measured over the
middle of the run: CPU in user space and in the kernel (``/proc/PID/stat``); the
server's write- and read-family system calls (``/proc/PID/io``'s syscw and syscr:
write, writev, read and the like, which is uvloop's path; send and recv are not
counted, so under ``--loop asyncio`` these read about 0); TCP segments sent on the
whole machine (``/proc/net/snmp``: both directions of loopback, the generator's
requests and ACKs included, other traffic too); and how busy the server's and the
generator's cores were (w2_writes.mjs's own figures, over its whole run). Then the
medians of each column, each over its own repetitions. The segments and the writes are
what tell the peers apart: uvicorn writes an HTTP answer's head and body in two system
calls, two segments, and a WebSocket message in one.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench_dsn_sync import wait_health  # noqa: E402


def peers(harness, python, joined_head=False):
    spec = {
        "mount_nodehttp": ([python, os.path.join(HERE, "asgi_server.py"), "--port", "8740"],
                           os.path.join(HERE, "adapters", "dsnsync_native.mjs"), 8740),
        "mount_lean": ([python, os.path.join(HERE, "asgi_server.py"), "--port", "8741"],
                       os.path.join(HERE, "adapters", "dsnsync_lean.mjs"), 8741),
        "socketio_nodeflate": ([python, os.path.join(harness, "servers", "sio_server.py"), "--port", "8742",
                                "--ws-deflate", "off"], "socketio", 8742),
    }
    if joined_head:
        for name, port in (("nodehttp", 8743), ("lean", 8744)):
            spec["joined_" + name] = ([python, os.path.join(HERE, "asgi_server.py"), "--port", str(port), "--join-head"],
                                      spec["mount_" + name][1], port)
    return spec


TICK = os.sysconf("SC_CLK_TCK")


def counters(pid):
    """(user s, kernel s, write calls, read calls, TCP segments sent) of the server and the machine, now."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    with open("/proc/%d/io" % pid) as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    with open("/proc/net/snmp") as f:
        tcp = [line.split() for line in f if line.startswith("Tcp:")]
    segs = int(dict(zip(tcp[0][1:], tcp[1][1:]))["OutSegs"])
    return (int(fields[11]) / TICK, int(fields[12]) / TICK, int(io["syscw"]), int(io["syscr"]), segs)


def wake_share(perf_out):
    """Of the server core's (CPU 0) busy kernel samples in ``perf_out``, the share spent with interrupts
    off at the end of a wake-up (``_raw_spin_unlock_irqrestore``, reached from ``sock_def_readable`` when
    a send wakes the generator's epoll: on a VM, where a cross-CPU wake-up of a halted vCPU lands)."""
    out = subprocess.run(["perf", "report", "-i", perf_out, "--cpu", "0", "-n", "--no-children", "--sort", "sym",
                          "--dsos", "[kernel.kallsyms]", "--stdio", "-g", "none"],
                         capture_output=True, text=True, check=True).stdout
    samples = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("#") and fields[2] == "[k]":
            samples[fields[3]] = int(fields[1])
    busy = sum(samples.values()) - samples.get("pv_native_safe_halt", 0)  # the idle loop is not kernel work
    return samples.get("_raw_spin_unlock_irqrestore", 0) / busy if busy else 0.0


def run_one(harness, cmd, adapter, port, duration, perf_out=None):
    """One W2 run: {acks, user_us, sys_us, writes, reads, segs}, each cost per acknowledged write."""
    server = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=harness, env=dict(os.environ, BENCH_HARNESS=harness))
    url = "http://127.0.0.1:%d" % port
    try:
        wait_health(url, server)
        load = subprocess.Popen(["taskset", "-c", "1", "node", "w2_writes.mjs", "--adapter", adapter, "--url", url,
                                 "--server-pid", str(server.pid), "--writers", "16", "--duration", str(duration)],
                                cwd=harness, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The middle of the measured span: after the generator's 1 s warm-up, before its end.
        time.sleep(1.5)
        before, t0 = counters(server.pid), time.monotonic()
        if perf_out:  # both cores sampled over the same window (perf's own cost counts too)
            subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-a", "-g", "-o", perf_out, "--",
                            "sleep", str(max(duration - 1.0, 0.5))], check=True)
        else:
            time.sleep(max(duration - 1.0, 0.5))
        after, window = counters(server.pid), time.monotonic() - t0
        out, err = load.communicate()
        if load.returncode:
            raise SystemExit("w2_writes.mjs failed for %s:\n%s" % (adapter, err))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    result = json.loads(out.strip().splitlines()[-1])
    acks = result["acks_per_s"]
    if not acks:
        raise SystemExit("no write was acknowledged through %s on port %d:\n%s" % (adapter, port, err[-2000:]))
    n = acks * window  # acks in the window, at the run's steady rate
    d = [b - a for a, b in zip(before, after)]
    r = {"acks": acks, "user_us": 1e6 * d[0] / n, "sys_us": 1e6 * d[1] / n,
         "writes": d[2] / n, "reads": d[3] / n, "segs": d[4] / n,
         "server_pct": result["server"]["cpu_pct_of_core"], "gen_pct": result["generator"]["cpu_pct_of_core"]}
    if perf_out:
        r["wake_us"] = r["sys_us"] * wake_share(perf_out)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--harness", default="/tmp/dsn-bench/harness", help="the harness copy bench_dsn_sync.py made")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--joined-head", action="store_true",
                    help="also run the mount with uvicorn patched to write an answer's head with its body (experiment)")
    ap.add_argument("--perf", metavar="DIR",
                    help="record a profile of both cores over each run's window into DIR/<peer>-<rep>.data (Linux "
                         "perf, cpu-clock at 4 kHz; the server's core: perf report -i F --cpu 0) and print the server's "
                         "kernel time spent waking the generator; perf slows the window, so every per-ack figure "
                         "of such a run reads about a tenth low")
    a = ap.parse_args()
    if a.perf:
        os.makedirs(a.perf, exist_ok=True)
    python = os.path.join(a.harness, ".venv", "bin", "python")
    spec = peers(a.harness, python, a.joined_head)
    results = {name: [] for name in spec}
    for rep in range(a.reps):
        for name, (cmd, adapter, port) in spec.items():
            perf_out = os.path.join(a.perf, "%s-%d.data" % (name, rep + 1)) if a.perf else None
            r = run_one(a.harness, cmd, adapter, port, a.duration, perf_out)
            results[name].append(r)
            print("rep %d %-20s %8.0f acks/s | per ack: user %5.1f us, kernel %4.1f us, %.2f write calls, "
                  "%.2f read calls, %.2f loopback segments | cores busy: server %.0f %%, generator %.0f %%  "
                  "(loadavg %.2f)" % (rep + 1, name, r["acks"], r["user_us"], r["sys_us"], r["writes"], r["reads"],
                                      r["segs"], r["server_pct"], r["gen_pct"], os.getloadavg()[0]), flush=True)
            if perf_out:
                print("      kernel time waking the generator (perf, %s): %.1f us per ack" % (perf_out, r["wake_us"]),
                      flush=True)
            time.sleep(2)
    print()
    print("medians (each column over its own repetitions); per ack: user and kernel CPU, the server's write and read")
    print("calls, loopback TCP segments both ways; then the server's and the generator's cores busy")
    base = statistics.median([r["acks"] for r in results["socketio_nodeflate"]])
    for name, runs in results.items():
        m = {k: statistics.median([r[k] for r in runs]) for k in runs[0]}
        print("%-20s %8.0f acks/s (%.2fx python-socketio) | %5.1f us, %4.1f us, %.2f, %.2f, %.2f | %.0f %%, %.0f %%  (%s)"
              % (name, m["acks"], m["acks"] / base, m["user_us"], m["sys_us"], m["writes"], m["reads"], m["segs"],
                 m["server_pct"], m["gen_pct"], ", ".join("%.0f" % r["acks"] for r in runs)))


if __name__ == "__main__":
    main()
