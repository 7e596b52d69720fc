"""A live dsn-sync server for the JavaScript client's tests (test/client.test.mjs).

Run from anywhere: ``python3 test/fixture_server.py [page_size]``.  It imports dsn_sync from
the repository root, starts a DSNSync on a free port with the tables below,
prints one JSON line ``{"url", "token", "port", "secret", "epoch"}`` and then
answers JSON-line commands on stdin, one JSON line each::

    {"cmd": "sync", "table": t, "key": k, "data": {...}}   -> {"ok": true}
    {"cmd": "remove", "table": t, "key": k}                -> {"ok": true, "result": bool}
    {"cmd": "get", "table": t, "key": k}                   -> {"ok": true, "result": record|null}
    {"cmd": "get_all", "table": t}                         -> {"ok": true, "result": {...}}
    {"cmd": "define_table", "name": t, "schema": {...}}    -> {"ok": true}
    {"cmd": "bulk", "table": t, "count": n}                -> {"ok": true}: n records r00000..
    {"cmd": "calls"}        -> {"ok": true, "result": [[op, table, key, mid], ...]} handler calls so far
    {"cmd": "mint", "claims": {...}}  -> {"ok": true, "token": ...} (v, jti, iat filled in)
    {"cmd": "revoke", "token": ...}   -> {"ok": true}  (the token then gets 401)
    {"cmd": "stop"}                   -> {"ok": true}  (port closed)
    {"cmd": "start", "fresh": bool}   -> {"ok": true, "url", "epoch"}; fresh: a new server
                                         process state on the same port and secret (same URL,
                                         same tokens, new epoch, empty store)
    {"cmd": "epoch"}                  -> {"ok": true, "result": epoch}
    {"cmd": "exit"}

Tables: ``users`` (key user_id; name, email, cart, status; every handler
accepts), ``guarded`` (any fields; create/update refuse when data.reject is
true), ``boom`` (every handler raises), ``readonly`` (no handlers),
``stamped`` (create returns the record with a server field), ``messages`` and
``metrics`` (any fields, create accepts).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsn_sync  # noqa: E402

SECRET = os.urandom(32).hex()
calls = []


PAGE_SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 5000


def build(port):
    sync = dsn_sync.DSNSync(port=port, secret=SECRET, page_size=PAGE_SIZE)
    sync.define_table("users", {"key": "user_id", "fields": ["name", "email", "cart", "status"]})
    for name in ("guarded", "boom", "readonly", "stamped", "messages", "metrics"):
        sync.define_table(name, {"key": "id", "fields": None})

    def record_call(op):
        def handler(data, ctx):
            calls.append([op, ctx.table, ctx.key, ctx.mid])
        return handler

    for op in ("create", "update", "delete"):
        sync._on(op, "users")(record_call(op))
        sync._on(op, "messages")(record_call(op))

    @sync.on_create("guarded")
    def guarded_create(data, ctx):
        calls.append(["create", ctx.table, ctx.key, ctx.mid])
        return not data.get("reject")

    @sync.on_update("guarded")
    def guarded_update(data, ctx):
        calls.append(["update", ctx.table, ctx.key, ctx.mid])
        return not data.get("reject")

    @sync.on_delete("guarded")
    def guarded_delete(data, ctx):
        calls.append(["delete", ctx.table, ctx.key, ctx.mid])

    def explode(data):
        raise RuntimeError("internal detail that must not reach the client")

    for op in ("create", "update", "delete"):
        sync._on(op, "boom")(explode)

    @sync.on_create("stamped")
    def stamped_create(data, ctx):
        calls.append(["create", ctx.table, ctx.key, ctx.mid])
        record = {k: v for k, v in data.items() if k != "id"}
        record["server"] = "stamped"
        return record

    @sync.on_create("metrics")
    def metrics_create(data):
        return True

    return sync


def serve(build, calls, define=None):
    """The JSON-lines command loop shared by the live fixtures (the commands are listed above).

    ``build(port)`` makes the DSNSync (called again on ``start`` with ``fresh``),
    ``calls`` is the list the ``calls`` command answers, ``define(sync, name,
    schema)`` defines a table for ``define_table`` (default: just define it).
    """
    sync = build(0)
    sync.start()
    port = sync.port

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ok": True, "url": sync.get_url(), "token": sync.get_token(), "port": port, "secret": SECRET,
           "epoch": sync._store.epoch})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "exit":
                break
            if cmd == "sync":
                sync.sync(command["table"], command["key"], command["data"])
                reply({"ok": True})
            elif cmd == "remove":
                reply({"ok": True, "result": sync.remove(command["table"], command["key"])})
            elif cmd == "get":
                reply({"ok": True, "result": sync.get(command["table"], command["key"])})
            elif cmd == "get_all":
                reply({"ok": True, "result": sync.get_all(command["table"])})
            elif cmd == "define_table":
                (define or (lambda s, name, schema: s.define_table(name, schema)))(sync, command["name"], command["schema"])
                reply({"ok": True})
            elif cmd == "bulk":
                with sync.batch():
                    for i in range(command["count"]):
                        sync.sync(command["table"], "r%05d" % i, {"n": i})
                reply({"ok": True})
            elif cmd == "calls":
                reply({"ok": True, "result": calls})
            elif cmd == "mint":
                claims = {"v": 1, "jti": os.urandom(8).hex(), "iat": int(time.time()), "exp": None,
                          "sub": None, "read": "*", "write": "*"}
                claims.update(command.get("claims", {}))
                reply({"ok": True, "token": sync._keyring.mint(claims)})
            elif cmd == "revoke":
                sync.revoke(command["token"])
                reply({"ok": True})
            elif cmd == "stop":
                sync.stop()
                reply({"ok": True})
            elif cmd == "start":
                if command.get("fresh"):
                    sync.stop()
                    sync = build(port)
                sync.start()
                reply({"ok": True, "url": sync.get_url(), "epoch": sync._store.epoch})
            elif cmd == "epoch":
                reply({"ok": True, "result": sync._store.epoch})
            else:
                reply({"ok": False, "error": "unknown command %r" % cmd})
        except Exception as e:  # a test's mistake must not kill the fixture
            reply({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    sync.stop()


def main():
    serve(build, calls)


if __name__ == "__main__":
    main()
