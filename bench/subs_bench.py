#!/usr/bin/env python3
"""Per-change server cost of subscriptions: 1,000 long-polling clients, each subscribed to its own
room of one messages table, beside W1's shape (1,000 clients mirroring the whole table).

    python3 bench/subs_bench.py                       # both, 1,000 clients, 200 changes/s for 10 s (~1 min)
    python3 bench/subs_bench.py --clients 200 --duration 5

What runs: the standalone server (``DSNSync(...).start()``, its own socket server) in a child
process with ``messages`` holding 10 rows per room; this process drives ``--clients`` raw
protocol clients (one keep-alive socket and one user token each, sealed with dsn_sync's own
``request_frame``/``open_response``) from one thread with ``selectors``, each a long-poll
(``wait`` 25 s) sent again as soon as its answer lands.  The child's producer thread calls
``sync.sync()`` at ``--rate``, round-robin over the rooms, stamping each record with the
wall clock; a client records the delay to each change it receives.

  subs:  each client pulls in subscription mode (README, protocol section 7) with one subscription,
         ``room`` = its own room: a change concerns one client.
  whole: each client pulls whole tables (protocol section 4), like W1: a change concerns all.

Figures per mode, over the producing window plus one second of drain: the server process's
CPU time (utime + stime from /proc, every thread) per change, bytes the clients received
(HTTP heads and sealed bodies) per change, deliveries, and the delay from ``sync()`` to a
client's receipt (p50/p99; in ``whole`` mode over every client's receipts).  A fresh server
per mode.  Linux only (/proc).  Nothing is asserted; the table is printed.
"""
import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import dsn_sync  # noqa: E402  (this repository's module)

ROWS_PER_ROOM = 10


# =============================================================================
# The server child
# =============================================================================


def serve(a):
    """The child: a DSNSync with rooms, a token per client on the first stdout line, then commands."""
    sync = dsn_sync.DSNSync(port=0, host="127.0.0.1", max_waiting=a.clients + 100)
    sync.define_table("messages", {"key": "id", "fields": None})

    @sync.subscription("room")
    def room(ctx, params):
        return {"messages": {"room": params["room"]}}

    text = "x" * 80
    with sync.batch():
        for r in range(a.clients):
            for j in range(ROWS_PER_ROOM):
                sync.sync("messages", "m%d-%d" % (r, j), {"room": "r%d" % r, "t": 0, "text": text})
    sync.start()
    tokens = [sync.issue_token(sub="u%d" % i) for i in range(a.clients)]
    out = sys.stdout
    out.write(json.dumps({"url": sync.get_url(), "port": sync.port, "pid": os.getpid(), "tokens": tokens}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "produce":
            out.write(json.dumps(produce(sync, a.clients, cmd["rate"], cmd["duration"], text)) + "\n")
            out.flush()
    sync.stop()


def produce(sync, rooms, rate, duration, text):
    """sync() at ``rate`` per second for ``duration`` s, round-robin over the rooms; {produced, seconds}."""
    began = time.monotonic()
    n = 0
    while True:
        due = began + n / float(rate)
        now = time.monotonic()
        if due - began >= duration:
            break
        if due > now:
            time.sleep(due - now)
        r = n % rooms
        sync.sync("messages", "m%d-%d" % (r, (n // rooms) % ROWS_PER_ROOM), {"room": "r%d" % r, "t": time.time(), "text": text})
        n += 1
    return {"produced": n, "seconds": time.monotonic() - began}


def cpu_seconds(pid):
    """utime + stime of a process, every thread (Linux /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


# =============================================================================
# The clients: raw protocol, one socket each, one thread for all
# =============================================================================


class Client:
    """One client: its token's keys, socket, endpoint and cursor; ``pull()`` sends its next long-poll."""

    def __init__(self, i, token, port, mode):
        self.i, self.mode = i, mode
        self.kid, secret = dsn_sync.parse_token(token)
        self.c2s, self.s2c = dsn_sync.traffic_keys(secret)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.nonce = None
        self.cursor = None
        self.subs = {"s": {"name": "room", "params": {"room": "r%d" % i}}} if mode == "subs" else None

    def send(self, obj):
        obj["t"] = int(time.time() * 1000)
        body = json.dumps(obj, separators=(",", ":")).encode()
        frame = dsn_sync.request_frame(self.kid, self.c2s, self.ep, body)
        self.nonce = frame[3 + len(self.kid):][:16]
        head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (self.ep, len(frame))
        self.sock.sendall(head.encode("latin-1") + frame)

    def answer(self):
        """A whole answer parsed from the buffer (None if not all here yet): (answer, bytes it took)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buf[:end].decode("latin-1").lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0])
        if len(self.buf) < end + 4 + length:
            return None
        status = int(head.split()[1])
        body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
        if status != 200:
            raise RuntimeError("client %d: HTTP %d" % (self.i, status))
        plain = dsn_sync.open_response(self.s2c, self.nonce, body)
        if plain is None:
            raise RuntimeError("client %d: an answer that does not open" % self.i)
        answer = json.loads(plain)
        self.ep = answer["ep"]
        if not answer["ok"]:
            raise RuntimeError("client %d: %r" % (self.i, answer["error"]))
        return answer, end + 4 + length

    def blocking(self, obj):
        self.send(obj)
        while True:
            got = self.answer()
            if got:
                return got[0]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("client %d: the server closed the connection" % self.i)
            self.buf += chunk

    def setup(self, base):
        self.ep = base
        hello = self.blocking({"op": "hello"})
        cursor = {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}
        if self.mode == "subs":
            page = self.blocking({"op": "pull", "since": None, "subs": self.subs, "wait": 0})
            assert page["sub"] == "s" and not page["more"] and len(page["records"]["messages"]) == ROWS_PER_ROOM, page
            cursor = {"epoch": page["epoch"], "seq": page["seq"], "sv": page["sv"], "subs": ["s"]}
        self.cursor = cursor

    def pull(self):
        request = {"op": "pull", "since": self.cursor, "wait": 25}
        if self.subs is not None:
            request["subs"] = self.subs
        self.send(request)


def run_mode(a, mode):
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", "--clients", str(a.clients)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        started = json.loads(child.stdout.readline())
        base = started["url"][started["url"].index("/sync/"):]
        began = time.monotonic()
        clients = [Client(i, token, started["port"], mode) for i, token in enumerate(started["tokens"])]
        for c in clients:
            c.setup(base)
        setup_s = time.monotonic() - began
        sel = selectors.DefaultSelector()
        for c in clients:
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
            c.pull()
        time.sleep(0.5)  # every long-poll parked

        delays, received, deliveries, wrong = [], [0], [0], [0]
        measuring = [False]

        def on_readable(c, now):
            try:
                chunk = c.sock.recv(262144)
            except BlockingIOError:
                return
            if not chunk:
                raise RuntimeError("client %d: the server closed the connection" % c.i)
            c.buf += chunk
            while True:
                got = c.answer()
                if got is None:
                    return
                answer, size = got
                if measuring[0]:
                    received[0] += size
                for change in answer.get("changes", ()):
                    record = change[2]
                    if record is None or not record.get("t"):
                        continue
                    if mode == "subs" and record["room"] != "r%d" % c.i:
                        wrong[0] += 1
                    if measuring[0]:
                        deliveries[0] += 1
                        delays.append(now - record["t"])
                c.cursor["seq"] = answer["seq"]
                if "sv" in answer:
                    c.cursor["sv"] = answer["sv"]
                c.sock.setblocking(True)
                c.pull()
                c.sock.setblocking(False)

        def loop_until(done):
            while not done():
                for key, _ in sel.select(0.05):
                    on_readable(key.data, time.time())

        pid = started["pid"]
        cpu0 = cpu_seconds(pid)
        measuring[0] = True
        result = {}

        def produce():
            child.stdin.write(json.dumps({"cmd": "produce", "rate": a.rate, "duration": a.duration}) + "\n")
            child.stdin.flush()
            result.update(json.loads(child.stdout.readline()))
        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        loop_until(lambda: not producer.is_alive())
        drain_until = time.monotonic() + 1.0
        loop_until(lambda: time.monotonic() >= drain_until)
        measuring[0] = False
        cpu = cpu_seconds(pid) - cpu0
        for c in clients:
            sel.unregister(c.sock)
            c.sock.close()
        delays.sort()

        def pct(p):
            return delays[min(len(delays) - 1, int(len(delays) * p / 100.0))] * 1000 if delays else float("nan")
        n = result["produced"]
        return {"mode": mode, "clients": a.clients, "setup_s": setup_s, "produced": n, "seconds": result["seconds"],
                "cpu_s": cpu, "cpu_ms_per_change": 1000.0 * cpu / n, "bytes_per_change": received[0] / float(n),
                "deliveries": deliveries[0], "p50_ms": pct(50), "p99_ms": pct(99), "wrong_room": wrong[0]}
    finally:
        child.stdin.close()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description="per-change server cost: room subscriptions vs whole-table mirrors")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=200.0, help="changes per second (W1: 200)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of changes per mode (W1: 10)")
    ap.add_argument("--modes", default="subs,whole")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        return serve(a)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * a.clients + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * a.clients + 100), hard))
    print("subs_bench: %d clients, %g changes/s for %g s per mode, standalone server in a child process, "
          "load average %.2f" % (a.clients, a.rate, a.duration, os.getloadavg()[0]))
    print("command: python3 bench/subs_bench.py %s\n" % " ".join(argv if argv is not None else sys.argv[1:]))
    rows = [run_mode(a, mode) for mode in a.modes.split(",")]
    header = ("mode", "changes", "server CPU ms/change", "bytes sent/change", "deliveries", "delay p50 ms",
              "delay p99 ms", "setup s")
    table = [header] + [(
        {"subs": "subs: 1 room each", "whole": "whole table (W1)"}[r["mode"]], "%d in %.1f s" % (r["produced"], r["seconds"]),
        "%.3f" % r["cpu_ms_per_change"], "%.0f" % r["bytes_per_change"], "%d" % r["deliveries"],
        "%.1f" % r["p50_ms"], "%.1f" % r["p99_ms"], "%.1f" % r["setup_s"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        if r["wrong_room"]:
            print("!! %s: %d changes reached a client of another room" % (r["mode"], r["wrong_room"]))
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()
