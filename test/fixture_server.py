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
    {"cmd": "exit"}                   (stops the server, exits)

``serve()`` is the command loop; test/browser_fixture.py and test/durable_server.py run
it too, with their own tables and extra commands.

Tables: ``users`` (key user_id; name, email, cart, status; every handler
accepts), ``guarded`` (any fields; create/update refuse when data.reject is
true), ``boom`` (every handler raises), ``readonly`` (no handlers),
``stamped`` (create returns the record with a server field), ``messages`` and
``metrics`` (any fields, create accepts).
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsn_sync  # noqa: E402

SECRET = os.urandom(32).hex()
calls = []


PAGE_SIZE = 5000  # main() takes another from the command line


def recording_handlers(sync, table, calls):
    """Create, update and delete handlers for ``table`` that accept every write and note
    ``[op, table, key, mid]`` in ``calls`` (what the ``calls`` command answers)."""
    def recorder(op):
        def handler(data, ctx):
            calls.append([op, ctx.table, ctx.key, ctx.mid])
        return handler

    for op in ("create", "update", "delete"):
        getattr(sync, "on_" + op)(table)(recorder(op))


def build(port):
    sync = dsn_sync.DSNSync(port=port, secret=SECRET, page_size=PAGE_SIZE)
    sync.define_table("users", {"key": "user_id", "fields": ["name", "email", "cart", "status"]})
    for name in ("guarded", "boom", "readonly", "stamped", "messages", "metrics"):
        sync.define_table(name, {"key": "id", "fields": None})

    recording_handlers(sync, "users", calls)
    recording_handlers(sync, "messages", calls)

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
        getattr(sync, "on_" + op)("boom")(explode)

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


_out_lock = threading.Lock()


def emit(obj):
    """One JSON line on stdout, flushed (whole, even when threads emit at once)."""
    line = json.dumps(obj) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def serve(build, calls, define=None, secret=SECRET, commands=None, hello=None, started=None):
    """The JSON-lines command loop shared by the live fixtures (the commands are listed above).

    ``build(port)`` makes the DSNSync (called again on ``start`` with ``fresh``);
    ``calls`` is what the ``calls`` command answers; ``define(sync, name, schema)``
    defines a table for ``define_table`` (default: just define it); ``secret`` is the
    one ``build`` gives the server (tokens are minted with it). A fixture may add:
    ``commands``, ``{name: fn(sync, command) -> reply}``, tried before the built-in
    ones; ``hello(sync)``, more fields for the first line; ``started(sync)``, called
    once that line is out.
    """
    sync = build(0)
    sync.start()
    port = sync.port
    first = {"ok": True, "url": sync.get_url(), "token": sync.get_token(), "port": port, "secret": secret,
             "epoch": sync.stats()["epoch"]}
    first.update(hello(sync) if hello else {})
    emit(first)
    if started:
        started(sync)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "exit":
                break
            if commands and cmd in commands:
                emit(commands[cmd](sync, command))
            elif cmd == "sync":
                sync.sync(command["table"], command["key"], command["data"])
                emit({"ok": True})
            elif cmd == "remove":
                emit({"ok": True, "result": sync.remove(command["table"], command["key"])})
            elif cmd == "get":
                emit({"ok": True, "result": sync.get(command["table"], command["key"])})
            elif cmd == "get_all":
                emit({"ok": True, "result": sync.get_all(command["table"])})
            elif cmd == "define_table":
                (define or (lambda s, name, schema: s.define_table(name, schema)))(sync, command["name"], command["schema"])
                emit({"ok": True})
            elif cmd == "bulk":
                with sync.batch():
                    for i in range(command["count"]):
                        sync.sync(command["table"], "r%05d" % i, {"n": i})
                emit({"ok": True})
            elif cmd == "calls":
                emit({"ok": True, "result": calls})
            elif cmd == "mint":
                claims = {"v": 1, "jti": os.urandom(8).hex(), "iat": int(time.time()), "exp": None,
                          "sub": None, "read": "*", "write": "*"}
                claims.update(command.get("claims", {}))
                emit({"ok": True, "token": dsn_sync.Keyring(secret).mint(claims)})
            elif cmd == "revoke":
                sync.revoke(command["token"])
                emit({"ok": True})
            elif cmd == "stop":
                sync.stop()
                emit({"ok": True})
            elif cmd == "start":
                if command.get("fresh"):
                    sync.stop()
                    sync = build(port)
                sync.start()
                emit({"ok": True, "url": sync.get_url(), "epoch": sync.stats()["epoch"]})
            elif cmd == "epoch":
                emit({"ok": True, "result": sync.stats()["epoch"]})
            else:
                emit({"ok": False, "error": "unknown command %r" % cmd})
        except Exception as e:  # a test's mistake must not kill the fixture
            emit({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    sync.stop()


def main():
    global PAGE_SIZE
    if len(sys.argv) > 1:
        PAGE_SIZE = int(sys.argv[1])
    serve(build, calls)


if __name__ == "__main__":
    main()
