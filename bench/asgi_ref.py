#!/usr/bin/env python3
"""The harness's reference protocol as a bare ASGI app under uvicorn: the bench peer ``ref_asgi``.

What one HTTP request per write costs on this server stack with nothing of dsn-sync in it: no
crypto, no validation, no handlers, no change feed beyond a dict and a sequence number. It
speaks what the harness's ``ref`` adapters speak (its README: POST /write, POST /pull
long-polls, /_bench/health, /_bench/produce), so ``ref_http`` drives it, and it runs under the
same uvicorn as ``bench/asgi_server.py`` and python-socketio (its defaults: uvloop and
httptools when installed). Beside them in ``bench_dsn_sync.py --mounts`` it is the ceiling of
the mount's architecture, as ``servers/ref_longpoll.py`` is the standalone server's:

  python3 bench/asgi_ref.py --port 8707 [--preload 100000]
"""
import argparse
import asyncio
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from dsn_server import PRELOAD_SOURCE, preload_record  # noqa: E402  (the harness's records, same bytes)

MAX_WAIT = 25.0  # seconds a pull may be held, as the harness's reference server


class Store:
    """Records by (table, key) in write order, one sequence number, and the pulls waiting for the next."""

    def __init__(self):
        self.seq = 0
        self.records = {}  # (table, key) -> {"table", "key", "data", "seq"}; moved to the end on write
        self.waiting = []  # futures of parked pulls, woken by the next write

    def write(self, table, key, data):
        self.seq += 1
        self.records.pop((table, key), None)
        self.records[(table, key)] = {"table": table, "key": key, "data": data, "seq": self.seq}
        waiting, self.waiting = self.waiting, []
        for future in waiting:
            if not future.done():
                future.set_result(None)
        return self.seq

    def since(self, seq):
        out = []
        for record in reversed(self.records.values()):  # newest first, up to the first the caller has
            if record["seq"] <= seq:
                break
            out.append(record)
        out.reverse()
        return out

    async def pull(self, since, timeout):
        if self.seq <= since:
            future = asyncio.get_running_loop().create_future()
            self.waiting.append(future)
            try:
                await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                pass
        return {"seq": self.seq, "changes": self.since(since)}


STORE = Store()


async def produce(rate, duration, table, key):
    """The W1 producer: one record `rate` times a second for `duration` seconds, on the loop."""
    loop = asyncio.get_running_loop()
    n, i, t0, first = int(rate * duration), 0, loop.time(), time.time()
    while i < n and loop.time() - t0 < duration:
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        STORE.write(table, key, {"i": i, "ts": time.time()})
        i += 1
    return {"produced": i, "t_first": first, "t_last": time.time(), "elapsed_s": loop.time() - t0}


async def read_body(receive):
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def answer(send, obj, status=200):
    body = json.dumps(obj, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if method == "GET" and path == "/_bench/health":
        return await answer(send, {"ok": True, "seq": STORE.seq, "records": len(STORE.records), "pid": os.getpid(),
                                   "preload_source": PRELOAD_SOURCE})
    if method != "POST":
        return await answer(send, {"error": "not found"}, 404)
    raw = await read_body(receive)
    body = json.loads(raw) if raw else {}
    if path == "/write":
        return await answer(send, {"ok": True, "seq": STORE.write(body["table"], body["key"], body.get("data"))})
    if path == "/pull":
        since = body.get("since")
        if since is None:
            return await answer(send, {"seq": STORE.seq, "changes": []})
        return await answer(send, await STORE.pull(int(since), min(float(body.get("timeout", MAX_WAIT)), MAX_WAIT)))
    if path == "/_bench/produce":
        return await answer(send, await produce(float(body.get("rate", 200)), float(body.get("duration", 10)),
                                                body.get("table", "w1"), body.get("key", "hot")))
    return await answer(send, {"error": "not found"}, 404)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8707)
    ap.add_argument("--preload", type=int, default=0, help="records items/<i> to hold at start (W3)")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the bench server listens on loopback only")
    for i in range(args.preload):
        STORE.write("items", str(i), preload_record(i))
    import socket
    import uvicorn
    sock = socket.create_server((args.host, args.port), backlog=2048)  # bound first: --port 0 picks one
    print("asgi_ref listening on %s:%d records=%d" % (args.host, sock.getsockname()[1], len(STORE.records)), flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
