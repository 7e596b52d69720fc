#!/usr/bin/env python3
"""dsn-sync as a peer of the shared load harness (../shared/bench): the server entry.

Runs this repository's ``dsn_sync.DSNSync`` with the harness's control endpoints on the
same 127.0.0.1 port the clients use (so the harness's health check, its W1 producer call
and its W3 wire-byte count all see that one port):

  GET  /_bench/health   -> {"ok", "seq", "records", "url", "pid", "preload_source"}
  GET  /_bench/token    -> {"url": sync URL, "token": a token for one bench client}
  POST /_bench/produce  {"rate","duration","table","key"} -> runs the W1 producer here,
                        through ``sync.sync()``, and answers {produced, t_first, t_last,
                        elapsed_s} plus ``sync_ms`` (p50/p99/max of each sync() call) and
                        ``late`` (writes that started more than 5 ms behind schedule)

  python3 bench/dsn_server.py --port 8703 [--preload 100000] [--tokens per-client|app]
          [--db sqlite:///tmp/x.db] [--rotate-every 100] [--secret HEX]

How, without touching dsn_sync.py's internals: DSNSync listens on a free loopback port
of its own that nobody uses; this file listens on --port, peeks at the first bytes of
each new connection (MSG_PEEK: nothing is consumed), answers /_bench/ requests itself
(one request per connection, Connection: close), and hands every other connection, as
the accepted socket itself, to the DSNSync's socketserver through the standard
``process_request(socket, address)`` call, exactly as its own accept loop would.  So
the bytes of the sync traffic never pass through this file.  The one thing it relies
on is that DSNSync serves through a ``socketserver.BaseServer``.
"""
import argparse
import importlib.util
import json
import os
import selectors
import signal
import socket
import socketserver
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import dsn_sync  # noqa: E402  (this repository's module, not an installed one)


def _harness_preload_record():
    """The harness's own ``preload_record`` (servers/ref_longpoll.py), so every peer holds
    the same bytes; found through BENCH_HARNESS or the shared folder beside the repo."""
    for root in (os.environ.get("BENCH_HARNESS"), os.path.join(REPO, "..", "shared", "bench")):
        path = root and os.path.join(root, "servers", "ref_longpoll.py")
        if path and os.path.exists(path):
            spec = importlib.util.spec_from_file_location("_bench_ref_longpoll", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.preload_record, os.path.abspath(path)
    return None, None


preload_record, PRELOAD_SOURCE = _harness_preload_record()
if preload_record is None:  # same shape: ~200 B of JSON in 5 fields
    PRELOAD_SOURCE = "bench/dsn_server.py (harness not found)"

    def preload_record(i):
        return {"id": i, "name": "user-%06d" % i, "email": "user-%06d@example.com" % i,
                "score": round((i * 7919 % 100003) / 100003, 6), "bio": ("lorem ipsum dolor sit amet " * 5)[:110]}


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, int(-(-p * len(sorted_values) // 100)) - 1))]


class Bench:
    """The peer: a DSNSync with the tables the three workloads use."""

    def __init__(self, args):
        self.args = args
        # Port 0: a free port nobody is told about; the public one is the Front's.
        self.sync = dsn_sync.DSNSync(port=0, host=args.host, db_connection_string=args.db,
                                     secret=args.secret, rotate_every=args.rotate_every)
        self.public_port = None
        sync = self.sync
        # W3 records carry an integer "id" field of their own, so the key lives in another field.
        sync.define_table("items", {"key": "key", "fields": None})
        sync.define_table("w1", {"key": "id", "fields": None})
        sync.define_table("w2", {"key": "id", "fields": None})
        sync.on_create("w2")(lambda data: True)  # W2 measures the write path, not a handler
        sync.on_update("w2")(lambda data: True)
        self.minted = 0
        self.mint_lock = threading.Lock()

    def preload(self, n):
        t0 = time.perf_counter()
        sync = self.sync
        with sync.batch():
            for i in range(n):
                sync.sync("items", str(i), preload_record(i))
        return time.perf_counter() - t0

    def token(self):
        if self.args.tokens == "app":
            return self.sync.get_token()
        with self.mint_lock:
            self.minted += 1
            n = self.minted
        # A browser's token: its own user and jti, reading and writing every table.
        return self.sync.issue_token(sub="bench-%d" % n, ttl=3600, read="*", write="*")

    def produce(self, rate, duration, table, key):
        """The harness's W1 producer (servers/ref_longpoll.py's loop), through sync.sync()."""
        sync = self.sync
        n, i, late = int(rate * duration), 0, 0
        calls = []
        t0, first = time.monotonic(), time.time()
        while i < n and time.monotonic() - t0 < duration:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.005:
                late += 1
            c0 = time.perf_counter()
            sync.sync(table, key, {"i": i, "ts": time.time()})
            calls.append(time.perf_counter() - c0)
            i += 1
        out = {"produced": i, "t_first": first, "t_last": time.time(), "elapsed_s": time.monotonic() - t0, "late": late}
        calls.sort()
        out["sync_ms"] = {"p50": round(1000 * percentile(calls, 50), 4), "p99": round(1000 * percentile(calls, 99), 4),
                          "max": round(1000 * calls[-1], 4)} if calls else None
        return out

    def public_url(self):
        """get_url() with the public port: the sync path is what clients need from it."""
        url = self.sync.get_url()
        return url.replace(":%d/" % self.sync.port, ":%d/" % self.public_port, 1)

    def health(self):
        stats = self.sync.stats()
        return {"ok": True, "seq": stats["seq"], "records": stats["records"], "url": self.public_url(),
                "pid": os.getpid(), "preload_source": PRELOAD_SOURCE, "dsn_sync": dsn_sync.__file__}


def _socketserver_of(sync):
    """The socketserver.BaseServer a started DSNSync serves through (found, not named)."""
    for value in vars(sync).values():
        if isinstance(value, socketserver.BaseServer):
            return value
    raise SystemExit("bench/dsn_server.py: this DSNSync serves through no socketserver.BaseServer; "
                     "the bench front needs a process_request(socket, address) to hand connections to")


BENCH_PREFIXES = (b"GET /_bench/", b"POST /_bench/")


class Front:
    """The public port: /_bench/ requests here, every other connection to dsn-sync's server."""

    peek_timeout = 10.0  # seconds a new connection may stay silent before it is dropped

    def __init__(self, bench, host, port, target):
        self.bench = bench
        self.target = target
        self.listener = socket.create_server((host, port), backlog=1024)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.pending = {}  # socket -> (address, accepted at)
        self.stopping = False

    def serve(self):
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._classify(key.fileobj)
            now = time.monotonic()
            for sock in [s for s, (_, t) in self.pending.items() if now - t > self.peek_timeout]:
                self._drop(sock)

    def _accept(self):
        for _ in range(256):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self.pending[sock] = (address, time.monotonic())
            self.selector.register(sock, selectors.EVENT_READ, True)

    def _classify(self, sock):
        try:
            first = sock.recv(16, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._drop(sock)
        if not first:
            return self._drop(sock)
        if any(p.startswith(first) and len(first) < len(p) for p in BENCH_PREFIXES):
            return  # too few bytes yet to tell; the selector says so again when more arrive
        address, _ = self.pending.pop(sock)
        self.selector.unregister(sock)
        sock.setblocking(True)
        if first.startswith(BENCH_PREFIXES):
            threading.Thread(target=self._control, args=(sock,), daemon=True).start()
        else:
            self.target.process_request(sock, address)  # what socketserver's accept loop does

    def _drop(self, sock):
        self.pending.pop(sock, None)
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _control(self, sock):
        """One /_bench/ request (plain JSON, no envelope), then close."""
        try:
            sock.settimeout(30)
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                body += chunk
            request = json.loads(body[:length] or b"{}")
            bench = self.bench
            status = "200 OK"
            if method == "GET" and path == "/_bench/health":
                answer = bench.health()
            elif method == "GET" and path == "/_bench/token":
                answer = {"url": bench.public_url(), "token": bench.token()}
            elif method == "POST" and path == "/_bench/produce":
                answer = bench.produce(float(request.get("rate", 200)), float(request.get("duration", 10)),
                                       request.get("table", "w1"), request.get("key", "hot"))
            else:
                status, answer = "404 Not Found", {"error": "not found"}
            data = json.dumps(answer).encode()
            sock.sendall(("HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          "Connection: close\r\n\r\n" % (status, len(data))).encode() + data)
        except (OSError, ValueError) as e:
            print("bench control request failed: %s" % e, file=sys.stderr, flush=True)
        finally:
            sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8703)
    ap.add_argument("--preload", type=int, default=0, help="records items/<i> to hold at start (W3)")
    ap.add_argument("--tokens", choices=("per-client", "app"), default="per-client",
                    help="per-client: each bench client gets its own issue_token() (like browsers); app: all share get_token()")
    ap.add_argument("--db", default=None, help="db_connection_string, e.g. sqlite:///tmp/bench.db (default: in memory)")
    ap.add_argument("--rotate-every", type=int, default=100, help="DSNSync(rotate_every=...); 0 turns rotation off")
    ap.add_argument("--secret", default=None, help="64 hex chars; default random per process")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the bench server listens on loopback only")
    bench = Bench(args)
    load_s = bench.preload(args.preload) if args.preload else 0.0
    bench.sync.start()
    front = Front(bench, args.host, args.port, _socketserver_of(bench.sync))
    bench.public_port = front.listener.getsockname()[1]
    thread = threading.Thread(target=front.serve, name="bench-front", daemon=True)
    thread.start()
    print("dsn_server listening on %s:%d url=%s records=%d preload_s=%.2f" % (
        args.host, bench.public_port, bench.public_url(), args.preload, load_s), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(0.5):
        pass
    front.stopping = True
    thread.join(2)
    front.listener.close()
    bench.sync.stop()


if __name__ == "__main__":
    main()
