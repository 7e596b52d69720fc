"""A dsn-sync server in a child process, for test_durability.py (SIGKILL, restarts, big resets).

    python3 test/durable_server.py --port P --secret HEX [--db sqlite:///path | --db memory]
                                   [--gen G] [--backend] [--page-size N] [--max-tombstones N]

It imports dsn_sync from the repository root, defines two tables, ``items`` (clients
write it: create/update/delete handlers accept, and count their calls per key; the
update handler stamps ``applied``, how many updates were applied to the record, so a
write applied twice shows) and ``feed`` (the backend's), starts the server on the given
port and prints one JSON line ``{"ok": true, url, token, port, secret, epoch, seq, floor,
pid, instance}``.

``--backend`` runs a thread that calls ``sync('feed', 'g<gen>-<n>', {"n": n, "gen": gen})``
in a loop and prints ``{"synced": key, "n": n, "gen": gen}`` (flushed) after each call
returned: a printed line is a sync() that returned, so the store must hold it.

Then it answers JSON-line commands on stdin with one JSON line each, through
test/fixture_server.py's ``serve()`` (its commands, and these):

    {"cmd": "check"}                      the store's invariants (_store.check())
    {"cmd": "dump", "tables": [...]}      {table: get_all(table)}
    {"cmd": "calls"}                      {"op:key": handler calls} in this process
    {"cmd": "state"}                      epoch, seq, sv, floor, tombstones, records, max_tombstones
    {"cmd": "backend_stop"}               stop the backend loop; how many syncs it made
    {"cmd": "fill", "table": t, "count": n, "start": i}
                                          n records inside one sync.batch(); seconds taken
    {"cmd": "remove", "table": t, "keys": [...]}
    {"cmd": "sync", "table": t, "key": k, "data": {...}}
    {"cmd": "stop"}                       the backend loop, then the server (clean: the store is closed)
    {"cmd": "exit"}                       exit
"""

import argparse
import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dsn_sync  # noqa: E402
from fixture_server import emit, serve  # noqa: E402  (the shared command loop)


def store_of(sync):
    """The store, for what only it shows (floor, tombstones, the invariant check): a private name."""
    return sync._store


def build(args, count):
    db = None if args.db in (None, "", "memory") else args.db
    sync = dsn_sync.DSNSync(port=args.port, db_connection_string=db, secret=args.secret,
                            page_size=args.page_size)
    if args.max_tombstones is not None:
        store_of(sync).max_tombstones = args.max_tombstones
    sync.define_table("items", {"key": "id", "fields": None})
    sync.define_table("feed", {"key": "id", "fields": None})

    @sync.on_create("items")
    def on_create(data, ctx):
        count("create", ctx.key)

    @sync.on_update("items")
    def on_update(data, ctx):
        count("update", ctx.key)
        current = sync.get("items", ctx.key) or {}  # the key's writes are serialised around the handler
        stamped = {k: v for k, v in data.items() if k != "id"}
        stamped["applied"] = current.get("applied", 0) + 1
        return stamped

    @sync.on_delete("items")
    def on_delete(data, ctx):
        count("delete", ctx.key)

    return sync


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--db", default="memory")
    parser.add_argument("--gen", type=int, default=1)
    parser.add_argument("--backend", action="store_true")
    parser.add_argument("--backend-pause", type=float, default=0.002)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--max-tombstones", type=int, default=None)
    args = parser.parse_args()

    calls = collections.Counter()
    calls_lock = threading.Lock()

    def count(op, key):
        with calls_lock:
            calls["%s:%s" % (op, key)] += 1

    backend_stop = threading.Event()
    made = [0]
    backend_thread = []

    def backend(sync):
        n = 0
        while not backend_stop.is_set():
            key = "g%d-%06d" % (args.gen, n)
            sync.sync("feed", key, {"n": n, "gen": args.gen})
            emit({"synced": key, "n": n, "gen": args.gen})
            n += 1
            made[0] = n
            if args.backend_pause:
                time.sleep(args.backend_pause)

    def start_backend(sync):
        if args.backend:
            thread = threading.Thread(target=backend, args=(sync,), name="backend", daemon=True)
            backend_thread.append(thread)
            thread.start()

    def stop_backend():
        backend_stop.set()
        for thread in backend_thread:
            thread.join(10)

    def hello(sync):
        store = store_of(sync)
        return {"seq": store.seq, "floor": store.floor, "pid": os.getpid(), "instance": sync.instance}

    def check(sync, command):
        return {"ok": bool(store_of(sync).check())}

    def dump(sync, command):
        return {"ok": True, "result": {t: sync.get_all(t) for t in command["tables"]}}

    def calls_so_far(sync, command):
        with calls_lock:
            return {"ok": True, "result": dict(calls)}

    def state(sync, command):
        store = store_of(sync)
        with store.lock:
            return {"ok": True, "epoch": store.epoch, "seq": store.seq, "sv": store.sv, "floor": store.floor,
                    "tombstones": store._tombstones, "records": store.count(), "max_tombstones": store.max_tombstones}

    def backend_stopped(sync, command):
        stop_backend()
        return {"ok": True, "made": made[0]}

    def fill(sync, command):
        table, n, start = command["table"], command["count"], command.get("start", 0)
        began = time.monotonic()
        with sync.batch():
            for i in range(start, start + n):
                sync.sync(table, "k%07d" % i, {"n": i, "text": "record number %d" % i})
        return {"ok": True, "seconds": time.monotonic() - began, "seq": sync.stats()["seq"]}

    def remove(sync, command):
        return {"ok": True, "result": [sync.remove(command["table"], k) for k in command["keys"]]}

    def stop(sync, command):
        stop_backend()
        sync.stop()
        return {"ok": True}

    serve(lambda port: build(args, count), calls, secret=args.secret, hello=hello, started=start_backend,
          commands={"check": check, "dump": dump, "calls": calls_so_far, "state": state,
                    "backend_stop": backend_stopped, "fill": fill, "remove": remove, "stop": stop})
    stop_backend()


if __name__ == "__main__":
    main()
