"""One dsn-sync node of a cluster on a shared PostgreSQL database, for test_cluster.py.

    python3 test/cluster_node.py --port P --db postgresql://... --name NAME
                                 [--secret HEX] [--rotate-every S] [--schema v1|v2]
                                 [--every S] [--handler-delay S]

It imports dsn_sync from the repository root, starts a DSNSync on ``--port`` (0: a free
one; a fixed port lets a restarted node come back where the proxy expects it) and prints
one JSON line ``{"ok": true, url, token, port, secret, epoch, name, pid, seq, sv}``.
Without ``--secret`` the node adopts the one already in the database (the first node
chose it).

Tables: ``items`` (clients write it: create/update/delete handlers accept and count their
calls per key in this process; the update handler stamps ``applied``, how many updates
were applied to the record, so an update applied twice shows), ``feed`` (the backend's),
``ticks`` (the ``@every`` task's, with ``--every``: each run syncs one record
``<name>-<n>`` with ``{"node", "n", "at"}``) and ``notes``: with ``--schema v1`` its
fields are ``["text"]``, with ``v2`` ``["text", "tag"]`` (a rolling restart changes it).
``--handler-delay`` makes the create and update handlers sleep first (so a retry can
reach another node while the first is still in its handler).

Then it answers JSON-line commands on stdin (test/fixture_server.py's ``serve()``, its
commands and these), one JSON line each:

    {"cmd": "calls"}                        {"op:key": handler calls} in this process
    {"cmd": "state"}                        epoch, seq, sv, records
    {"cmd": "check"}                        the store's invariants
    {"cmd": "dump", "tables": [...]}        {table: get_all(table)}
    {"cmd": "syncs", "table": t, "prefix": p, "count": n}
                                            n sync() calls, keys p0..p(n-1), {"n": i}; returns
                                            [perf_counter() after each returned] (a clock every
                                            process on the host shares); with "retry": true a
                                            sync() refused with StoreError is tried again
                                            ("refused": how many times)
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
from fixture_server import emit, serve  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--secret", default=None)
    parser.add_argument("--rotate-every", type=int, default=100)
    parser.add_argument("--schema", default="v1", choices=("v1", "v2"))
    parser.add_argument("--every", type=float, default=None)
    parser.add_argument("--handler-delay", type=float, default=0.0)
    args = parser.parse_args()

    calls = collections.Counter()
    calls_lock = threading.Lock()

    def count(op, key):
        with calls_lock:
            calls["%s:%s" % (op, key)] += 1

    def build(port):
        sync = dsn_sync.DSNSync(port=args.port, db_connection_string=args.db, secret=args.secret,
                                rotate_every=args.rotate_every)
        for name in ("items", "feed", "ticks"):
            sync.define_table(name, {"key": "id", "fields": None})
        sync.define_table("notes", {"key": "id", "fields": ["text"] if args.schema == "v1" else ["text", "tag"]})

        @sync.on_create("items")
        def on_create(data, ctx):
            count("create", ctx.key)
            if args.handler_delay:
                time.sleep(args.handler_delay)

        @sync.on_update("items")
        def on_update(data, ctx):
            count("update", ctx.key)
            if args.handler_delay:
                time.sleep(args.handler_delay)
            current = sync.get("items", ctx.key) or {}
            stamped = {k: v for k, v in data.items() if k != "id"}
            stamped["applied"] = current.get("applied", 0) + 1
            return stamped

        @sync.on_delete("items")
        def on_delete(data, ctx):
            count("delete", ctx.key)

        @sync.on_create("notes")
        def on_note(data, ctx):
            return True

        if args.every:
            ran = [0]

            @sync.every(args.every)
            def tick():
                ran[0] += 1
                sync.sync("ticks", "%s-%d" % (args.name, ran[0]), {"node": args.name, "n": ran[0], "at": time.time()})
        return sync

    def store_of(sync):
        return sync._store  # what only the store shows: seq, sv, its invariant check

    def hello(sync):
        store = store_of(sync)
        return {"name": args.name, "pid": os.getpid(), "seq": store.seq, "sv": store.sv,
                "secret": sync._keyring.secret.hex()}

    def calls_so_far(sync, command):
        with calls_lock:
            return {"ok": True, "result": dict(calls)}

    def state(sync, command):
        store = store_of(sync)
        with store.lock:
            return {"ok": True, "epoch": store.epoch, "seq": store.seq, "sv": store.sv, "records": store.count()}

    def check(sync, command):
        return {"ok": bool(store_of(sync).check())}

    def dump(sync, command):
        return {"ok": True, "result": {t: sync.get_all(t) for t in command["tables"]}}

    def syncs(sync, command):
        times, refused = [], 0
        for i in range(command["count"]):
            while True:
                try:
                    sync.sync(command["table"], "%s%d" % (command["prefix"], i), {"n": i})
                    break
                except dsn_sync.StoreError:  # PostgreSQL down: the backend retries, as an app would
                    if not command.get("retry"):
                        raise
                    refused += 1
                    time.sleep(0.05)
            times.append(time.perf_counter())
            if command.get("pause"):
                time.sleep(command["pause"])
        return {"ok": True, "result": times, "refused": refused}

    serve(build, calls, hello=hello, secret=args.secret,
          commands={"calls": calls_so_far, "state": state, "check": check, "dump": dump, "syncs": syncs})
    emit({"bye": True})


if __name__ == "__main__":
    main()
