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
- ``socketio_nodeflate``: python-socketio under the same uvicorn, permessage-deflate off.

    python3 bench_dsn_sync.py --mounts --no-micro --workloads w2 --reps 1   # once: sets up the harness copy
    python3 bench/pinned_w2.py [--reps 3] [--duration 5] [--harness /tmp/dsn-bench/harness]

Prints acks/s and server CPU per ack for each run, then the medians.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench_dsn_sync import wait_health  # noqa: E402


def peers(harness, python):
    return {
        "mount_nodehttp": ([python, os.path.join(HERE, "asgi_server.py"), "--port", "8740"],
                           os.path.join(HERE, "adapters", "dsnsync_native.mjs"), 8740),
        "mount_lean": ([python, os.path.join(HERE, "asgi_server.py"), "--port", "8741"],
                       os.path.join(HERE, "adapters", "dsnsync_lean.mjs"), 8741),
        "socketio_nodeflate": ([python, os.path.join(harness, "servers", "sio_server.py"), "--port", "8742",
                                "--ws-deflate", "off"], "socketio", 8742),
    }


def run_one(harness, cmd, adapter, port, duration):
    """One W2 run: (acks/s, server CPU us per ack)."""
    server = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=harness, env=dict(os.environ, BENCH_HARNESS=harness))
    url = "http://127.0.0.1:%d" % port
    try:
        wait_health(url, server)
        load = subprocess.run(["taskset", "-c", "1", "node", "w2_writes.mjs", "--adapter", adapter, "--url", url,
                               "--server-pid", str(server.pid), "--writers", "16", "--duration", str(duration)],
                              cwd=harness, capture_output=True, text=True, check=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    result = json.loads(load.stdout.strip().splitlines()[-1])
    acks = result["acks_per_s"]
    cpu = (result.get("server") or {}).get("cpu_s")
    return acks, (1e6 * cpu / (acks * duration) if cpu and acks else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--harness", default="/tmp/dsn-bench/harness", help="the harness copy bench_dsn_sync.py made")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    a = ap.parse_args()
    python = os.path.join(a.harness, ".venv", "bin", "python")
    spec = peers(a.harness, python)
    results = {name: [] for name in spec}
    for rep in range(a.reps):
        for name, (cmd, adapter, port) in spec.items():
            acks, us = run_one(a.harness, cmd, adapter, port, a.duration)
            results[name].append((acks, us))
            print("rep %d %-20s %8.0f acks/s  %s us of server CPU per ack  (loadavg %.2f)"
                  % (rep + 1, name, acks, "-" if us is None else "%.1f" % us, os.getloadavg()[0]), flush=True)
            time.sleep(2)
    print()
    for name, runs in results.items():
        acks = sorted(r[0] for r in runs)
        print("%-20s median %8.0f acks/s  (%s)" % (name, acks[len(acks) // 2], ", ".join("%.0f" % r[0] for r in runs)))


if __name__ == "__main__":
    main()
