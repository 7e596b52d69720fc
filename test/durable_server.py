"""A dsn-sync server in a child process, for test_durability.py (SIGKILL, restarts, big resets).

    python3 test/durable_server.py --port P --secret HEX [--db sqlite:///path | --db memory]
                                   [--gen G] [--backend] [--page-size N] [--max-tombstones N]

It imports dsn_sync from the repository root, defines two tables, ``items`` (clients
write it: create/update/delete handlers accept, and count their calls per key; the
update handler stamps ``applied``, how many updates were applied to the record, so a
write applied twice shows) and ``feed`` (the backend's), starts the server on the given
port and prints one JSON line ``{"hello": {url, token, port, epoch, seq, floor, pid,
instance}}``.

``--backend`` runs a thread that calls ``sync('feed', 'g<gen>-<n>', {"n": n, "gen": gen})``
in a loop and prints ``{"synced": key, "n": n, "gen": gen}`` (flushed) after each call
returned: a printed line is a sync() that returned, so the store must hold it.

Then it answers JSON-line commands on stdin with one ``{"reply": {...}}`` line each:

    {"cmd": "check"}                      the store's invariants (_store.check())
    {"cmd": "dump", "tables": [...]}      {table: get_all(table)}
    {"cmd": "calls"}                      {"op:key": handler calls} in this process
    {"cmd": "state"}                      epoch, seq, sv, floor, tombstones, records, max_tombstones
    {"cmd": "backend_stop"}               stop the backend loop; how many syncs it made
    {"cmd": "fill", "table": t, "count": n, "start": i}
                                          n records inside one sync.batch(); seconds taken
    {"cmd": "remove", "table": t, "keys": [...]}
    {"cmd": "sync", "table": t, "key": k, "data": {...}}
    {"cmd": "stop"}                       sync.stop() (clean: the store is closed), then exit
"""

import argparse
import collections
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsn_sync  # noqa: E402

_out_lock = threading.Lock()


def emit(obj):
    line = json.dumps(obj) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def build(args):
    db = None if args.db in (None, "", "memory") else args.db
    sync = dsn_sync.DSNSync(port=args.port, db_connection_string=db, secret=args.secret,
                            page_size=args.page_size)
    if args.max_tombstones is not None:
        sync._store.max_tombstones = args.max_tombstones
    sync.define_table("items", {"key": "id", "fields": None})
    sync.define_table("feed", {"key": "id", "fields": None})
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

    sync = build(args)
    calls = collections.Counter()
    calls_lock = threading.Lock()

    def count(op, key):
        with calls_lock:
            calls["%s:%s" % (op, key)] += 1

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

    sync.start()
    store = sync._store
    emit({"hello": {"url": sync.get_url(), "token": sync.get_token(), "port": sync.port, "epoch": store.epoch,
                    "seq": store.seq, "floor": store.floor, "pid": os.getpid(), "instance": sync.instance}})

    backend_stop = threading.Event()
    made = [0]

    def backend():
        n = 0
        while not backend_stop.is_set():
            key = "g%d-%06d" % (args.gen, n)
            sync.sync("feed", key, {"n": n, "gen": args.gen})
            emit({"synced": key, "n": n, "gen": args.gen})
            n += 1
            made[0] = n
            if args.backend_pause:
                time.sleep(args.backend_pause)

    thread = None
    if args.backend:
        thread = threading.Thread(target=backend, name="backend", daemon=True)
        thread.start()

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "check":
                reply = {"ok": bool(store.check())}
            elif cmd == "dump":
                reply = {"ok": True, "result": {t: sync.get_all(t) for t in command["tables"]}}
            elif cmd == "calls":
                with calls_lock:
                    reply = {"ok": True, "result": dict(calls)}
            elif cmd == "state":
                with store.lock:
                    reply = {"ok": True, "epoch": store.epoch, "seq": store.seq, "sv": store.sv,
                             "floor": store.floor, "tombstones": store._tombstones, "records": store.count(),
                             "max_tombstones": store.max_tombstones}
            elif cmd == "backend_stop":
                backend_stop.set()
                if thread is not None:
                    thread.join(10)
                reply = {"ok": True, "made": made[0]}
            elif cmd == "fill":
                table, n, start = command["table"], command["count"], command.get("start", 0)
                began = time.monotonic()
                with sync.batch():
                    for i in range(start, start + n):
                        sync.sync(table, "k%07d" % i, {"n": i, "text": "record number %d" % i})
                reply = {"ok": True, "seconds": time.monotonic() - began, "seq": store.seq}
            elif cmd == "remove":
                reply = {"ok": True, "result": [sync.remove(command["table"], k) for k in command["keys"]]}
            elif cmd == "sync":
                reply = {"ok": sync.sync(command["table"], command["key"], command["data"])}
            elif cmd == "stop":
                backend_stop.set()
                if thread is not None:
                    thread.join(10)
                sync.stop()
                emit({"reply": {"ok": True}})
                return
            else:
                reply = {"ok": False, "error": "unknown command %r" % (cmd,)}
        except Exception as e:  # a test's mistake must not kill the child
            reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        emit({"reply": reply})
    backend_stop.set()
    sync.stop()


if __name__ == "__main__":
    main()
