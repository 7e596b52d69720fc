"""A live dsn-sync server for the real-browser tests (test/browser.test.mjs).

Run: ``python3 test/browser_fixture.py``.  It starts a DSNSync on a free port with
an explicit secret (so a restart on the same port gives the same URL and tokens),
prints one JSON line ``{"url", "token", "port", "epoch"}`` and answers JSON-line
commands on stdin, one JSON line each::

    {"cmd": "sync", "table": t, "key": k, "data": {...}}  -> {"ok": true}
    {"cmd": "remove", "table": t, "key": k}               -> {"ok": true, "result": bool}
    {"cmd": "get", "table": t, "key": k}                  -> {"ok": true, "result": record|null}
    {"cmd": "get_all", "table": t}                        -> {"ok": true, "result": {...}}
    {"cmd": "define_table", "name": t, "schema": {...}}   -> {"ok": true}: with handlers that
                                                             accept and record every write
    {"cmd": "calls"}   -> {"ok": true, "result": [[op, table, key, mid], ...]}: every handler call
    {"cmd": "stop"}    -> {"ok": true}: the port closed, the same DSNSync kept (records, epoch)
    {"cmd": "start", "fresh": bool} -> {"ok": true, "url", "epoch"}; fresh: a new DSNSync on
                        the same port and secret (same URL and tokens, new epoch, empty store,
                        the same tables and handlers), as after a restart of an in-memory server
    {"cmd": "epoch"}   -> {"ok": true, "result": epoch}
    {"cmd": "exit"}

Tables: ``users`` (key ``user_id``; name, email, cart, status) and ``messages``
(any fields), every write accepted and recorded; ``guarded`` (any fields; a
create or update whose data has ``"reject": true`` is refused, and recorded).
Only the public API of dsn_sync is used.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsn_sync  # noqa: E402
from fixture_server import SECRET, serve  # noqa: E402  (the shared command loop; this fixture's own tables)

calls = []
tables = [
    ("users", {"key": "user_id", "fields": ["name", "email", "cart", "status"]}),
    ("messages", {"key": "id", "fields": None}),
    ("guarded", {"key": "id", "fields": None}),
]


def recorder(op, verdict=None):
    def handler(data, ctx):
        calls.append([op, ctx.table, ctx.key, ctx.mid])
        return verdict(data) if verdict else True
    return handler


def define(sync, name, schema):
    sync.define_table(name, schema)
    accept_unless_asked = (lambda data: not data.get("reject")) if name == "guarded" else None
    sync.on_create(name)(recorder("create", accept_unless_asked))
    sync.on_update(name)(recorder("update", accept_unless_asked))
    sync.on_delete(name)(recorder("delete"))


def build(port):
    sync = dsn_sync.DSNSync(port=port, secret=SECRET)
    for name, schema in tables:
        define(sync, name, schema)
    return sync


def define_and_remember(sync, name, schema):
    define(sync, name, schema)
    tables.append((name, schema))  # a fresh start defines it again


def main():
    serve(build, calls, define_and_remember)


if __name__ == "__main__":
    main()
