"""A live dsn-sync server with one subscription, for test/subs.test.mjs and
test/chat_rooms_browser.test.mjs.

Run from anywhere: ``python3 test/subs_server.py [page_size]``.  Tables:
``messages`` (key id; any fields, a room each) and ``rooms`` (key id).  The
subscription ``room`` selects one room's messages and its ``rooms`` row; it
refuses a room that is not a string (``invalid``) and the room ``vault``
(``forbidden``).  The subscription ``author`` selects the messages of one
author, so that it overlaps with ``room``.  Every message write is accepted.  The commands are those of
test/fixture_server.py, and ``room_bulk`` (n messages in one room) (``sync``, ``remove``, ``get_all``, ``stop``, ``start``, ...).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixture_server  # noqa: E402
from fixture_server import dsn_sync, serve  # noqa: E402

PAGE_SIZE = 5000
calls = []


def build(port):
    sync = dsn_sync.DSNSync(port=port, secret=fixture_server.SECRET, page_size=PAGE_SIZE)
    sync.define_table("messages", {"key": "id", "fields": None})
    sync.define_table("rooms", {"key": "id", "fields": None})

    @sync.subscription("room")
    def room(ctx, params):
        if not isinstance(params.get("room"), str):
            raise ValueError("room must be a string")
        if params["room"] == "vault":
            raise PermissionError("the vault is closed to you")
        return {"messages": {"room": params["room"]}, "rooms": {"id": params["room"]}}

    @sync.subscription("author")
    def author(ctx, params):
        return {"messages": {"author": params["author"]}}

    fixture_server.recording_handlers(sync, "messages", calls)

    return sync


def room_bulk(sync, command):
    """``{"cmd": "room_bulk", "room": r, "count": n}``: n messages m00000.. in room r, in one batch."""
    with sync.batch():
        for i in range(command["count"]):
            sync.sync("messages", "m%05d" % i, {"room": command["room"], "author": "bulk", "text": str(i)})
    return {"ok": True}


def main():
    global PAGE_SIZE
    if len(sys.argv) > 1:
        PAGE_SIZE = int(sys.argv[1])
    serve(build, calls, commands={"room_bulk": room_bulk})


if __name__ == "__main__":
    main()
