#!/usr/bin/env python3
"""dsn-sync mounted in an ASGI app under uvicorn: the bench peer ``dsnsync_asgi``.

The app is what a FastAPI/Starlette user writes by hand: ``sync.asgi_app()`` mounted under
``/dsn`` (path kept, ``root_path`` set, as Starlette's Mount does), beside the harness's
control routes, answered by this file as plain ASGI:

  GET  /_bench/health   -> {"ok", "seq", "records", "url", "pid", "loop", "http", ...}
  GET  /_bench/token    -> {"url": sync URL under /dsn, "token": a token for one client}
  POST /_bench/produce  {"rate","duration","table","key"} -> the W1 producer (through
                        ``sync.sync()``, in a worker thread as an app's own code would run it)

  python3 bench/asgi_server.py --port 8704 [--preload 100000] [--db postgresql://...]
          [--loop auto|asyncio|uvloop] [--http auto|h11|httptools] [--cprofile OUT.pstats] [--join-head]

uvicorn's defaults are used unless told: ``loop=auto`` is uvloop and ``http=auto`` is
httptools when they are installed (the health answer says which ran).  ``--cprofile``
records every thread of the process that runs Python (the event loop, and the executor
threads where the mount opens frames and runs the engine) from start to SIGINT and
writes one merged pstats file.

``--join-head`` is an experiment, not a way to run anything: it patches uvicorn's
HTTP protocol (httptools or h11) in this process so that an answer's head is held back and goes out in
the same ``transport.write`` as its first body message (aiohttp's server does this for
small answers since its PR 10991). Stock uvicorn writes the two apart: two system calls
and two TCP segments per answer, where a WebSocket message is one. bench/pinned_w2.py
``--joined-head`` compares the two.
"""
import argparse
import asyncio
import concurrent.futures
import cProfile
import inspect
import json
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dsn_server  # noqa: E402  (the Bench peer: tables, tokens, preload, producer)

MOUNT = "/dsn"


class AsgiBench(dsn_server.Bench):
    base = None  # "http://127.0.0.1:PORT/dsn", once the port is known

    def public_url(self):
        return self.sync.get_url(self.base)

    def health(self):
        out = super().health()
        out.update(RUNTIME)
        return out


RUNTIME = {}


def make_app(bench):
    # W2's handler is `lambda data: True`, one that never blocks: the case inline_handlers is for
    # (by default a frame with a handler takes a worker thread; docs/PERFORMANCE.md has both).
    door = bench.sync.asgi_app(inline_handlers=os.environ.get("DSN_INLINE_HANDLERS", "1") == "1")

    async def control(scope, receive, send):
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        req = json.loads(body) if body else {}
        path, method = scope["path"], scope["method"]
        code = 200
        if method == "GET" and path == "/_bench/health":
            res = bench.health()
        elif method == "GET" and path == "/_bench/token":
            res = {"url": bench.public_url(), "token": bench.token()}
        elif method == "POST" and path == "/_bench/produce":
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(None, bench.produce, float(req.get("rate", 200)),
                                             float(req.get("duration", 10)), req.get("table", "w1"), req.get("key", "hot"))
        else:
            res, code = {"error": "not found"}, 404
        out = json.dumps(res).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await door(scope, receive, send)
        path = scope.get("path", "")
        if path == MOUNT or path.startswith(MOUNT + "/"):
            return await door(dict(scope, root_path=scope.get("root_path", "") + MOUNT), receive, send)
        if scope["type"] == "http" and path.startswith("/_bench/"):
            return await control(scope, receive, send)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})

    return app


def join_head(protocol_class):
    """Patch the RequestResponseCycle of uvicorn's HTTP protocol (httptools or h11) so that an
    answer's head waits for its first body write and goes out with it (--join-head)."""
    import importlib
    cycle = getattr(importlib.import_module(protocol_class.__module__), "RequestResponseCycle", None)
    if cycle is None or not inspect.iscoroutinefunction(getattr(cycle, "send", None)):
        raise SystemExit("--join-head: %s has no RequestResponseCycle.send to patch" % protocol_class.__module__)
    stock = cycle.send

    class Held:
        """The transport from an answer's start message to the end of its first body message.

        The start message's writes are kept (the head), then written in front of the first body
        write; a close before that (an app that fails after starting its answer) and a body
        message that writes nothing (httptools' answer to HEAD) write the head alone."""

        def __init__(self, real):
            self.real, self.head, self.parts = real, None, []

        def write(self, data):
            if self.head is None:  # still in the start message
                self.parts.append(data)
            elif not self.head:
                self.real.write(data)
            elif len(data) < 65536:  # one write, one segment, as aiohttp does for small answers
                self.real.write(self.head + data)
                self.head = b""
            else:  # no copy of a large body
                self.real.writelines((self.head, data))
                self.head = b""

        def flush(self):
            if self.head:
                self.real.write(self.head)
                self.head = b""

        def close(self):
            self.flush()
            self.real.close()

        def __getattr__(self, name):
            return getattr(self.real, name)

    async def send(self, message):
        kind = message["type"]
        if kind == "http.response.start" and not self.response_started:
            self.transport = held = Held(self.transport)  # until the first body message ends
            try:
                return await stock(self, message)
            finally:
                held.head = b"".join(held.parts)
        held = self.transport
        if kind == "http.response.body" and isinstance(held, Held):
            try:
                return await stock(self, message)
            finally:
                self.transport = held.real
                if not self.disconnected:  # stock send writes nothing to a gone client; neither do we
                    held.flush()
        return await stock(self, message)

    cycle.send = send


class Profiles:
    """One cProfile.Profile per thread that runs Python here (loop + executor threads)."""

    def __init__(self):
        self.all = []
        self.lock = threading.Lock()

    def start_here(self):
        p = cProfile.Profile()
        with self.lock:
            self.all.append(p)
        p.enable()

    def dump(self, out):
        import pstats
        stats = None
        for p in self.all:
            p.disable()
            try:
                stats = pstats.Stats(p) if stats is None else stats.add(p) or stats
            except TypeError:  # a thread that never ran a profiled call
                pass
        if stats is not None:
            stats.dump_stats(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8704)
    ap.add_argument("--preload", type=int, default=0, help="records items/<i> to hold at start (W3)")
    ap.add_argument("--tokens", choices=("per-client", "app"), default="per-client")
    ap.add_argument("--db", default=None, help="db_connection_string (default: in memory)")
    ap.add_argument("--rotate-every", type=int, default=100)
    ap.add_argument("--secret", default=None)
    ap.add_argument("--loop", default="auto", help="uvicorn --loop (default auto: uvloop if installed)")
    ap.add_argument("--http", default="auto", help="uvicorn --http (default auto: httptools if installed)")
    ap.add_argument("--cprofile", default=None, metavar="OUT", help="profile every Python thread; pstats file at exit")
    ap.add_argument("--join-head", action="store_true",
                    help="experiment: patch uvicorn's HTTP protocol to write an answer's head with its body")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the bench server listens on loopback only")
    import uvicorn
    config = uvicorn.Config(None, host=args.host, port=args.port, loop=args.loop, http=args.http, log_level="warning",
                            access_log=False, lifespan="on")
    bench = AsgiBench(args)
    load_s = bench.preload(args.preload) if args.preload else 0.0
    profiles = Profiles() if args.cprofile else None

    # The socket first, so the port (0 = any) is known before the URL is printed.
    import socket
    sock = socket.create_server((args.host, args.port), backlog=2048)
    port = sock.getsockname()[1]
    bench.public_port = port
    bench.base = "http://%s:%d%s" % (args.host, port, MOUNT)
    config.app = make_app(bench)
    config.load()
    http_name = getattr(config.http_protocol_class, "__name__", str(config.http_protocol_class))
    if args.join_head:
        join_head(config.http_protocol_class)
    RUNTIME.update({"http": http_name, "uvicorn": uvicorn.__version__, "join_head": args.join_head})
    try:
        import uvloop  # noqa: F401
        RUNTIME["uvloop_installed"] = True
    except ImportError:
        RUNTIME["uvloop_installed"] = False
    print("asgi_server listening on %s:%d url=%s records=%d preload_s=%.2f http=%s" % (
        args.host, port, bench.public_url(), args.preload, load_s, http_name), flush=True)
    server = uvicorn.Server(config)

    async def serve():
        RUNTIME["loop"] = "%s.%s" % (type(asyncio.get_running_loop()).__module__, type(asyncio.get_running_loop()).__name__)
        if profiles:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(initializer=profiles.start_here))
            profiles.start_here()
        await server.serve(sockets=[sock])

    # What uvicorn.Server.run does, with uvicorn's loop factory (uvloop when loop=auto finds it).
    factory = config.get_loop_factory() if hasattr(config, "get_loop_factory") else None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve())
    except KeyboardInterrupt:  # SIGINT during shutdown: uvicorn has stopped already
        pass
    finally:
        if profiles:
            profiles.dump(args.cprofile)

if __name__ == "__main__":
    main()
