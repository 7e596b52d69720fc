"""A chat with rooms, where each browser mirrors only the room it shows:
``python examples/chat_rooms/app.py``, then open the addresses it prints.

The backend defines two subscriptions (PROTOCOL section 7, subscriptions): ``rooms``,
the list of rooms, and ``room``, one room's messages.  The page subscribes to the list
and to the room it shows; switching rooms subscribes to the new one and closes the old,
so the browser's mirror (and its IndexedDB) holds one room's messages, however many
the server keeps.  ``@on_create`` checks the sender and the room and stamps the time.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _app import dsn_sync, options, serve  # noqa: E402

USERS = ["alice", "bob"]
ROOMS = {"lobby": "Lobby", "dev": "Development", "random": "Random"}

args = options("Chat with rooms on dsn-sync: each browser mirrors only its room.", port=8005)
sync = dsn_sync.DSNSync(port=args.sync_port)
sync.define_table("rooms", {"key": "id", "fields": ["title"]})
sync.define_table("messages", {"key": "id", "fields": ["room", "sender", "text", "sent", "ts"]})


@sync.subscription("rooms")
def rooms(ctx, params):
    """Every room: the list the page draws its tabs from."""
    return {"rooms": True}


@sync.subscription("room")
def room(ctx, params):
    """One room's messages. Raising refuses: ValueError -> `invalid` on the client."""
    if params.get("room") not in ROOMS:
        raise ValueError("no room %r (rooms: %s)" % (params.get("room"), ", ".join(ROOMS)))
    return {"messages": {"room": params["room"]}}


@sync.on_create("messages")
def send(message, ctx):
    """The sender is whoever the token speaks for; the server's clock orders messages."""
    text = str(message.get("text", "")).strip()
    if message.get("sender") != ctx.sub:
        raise dsn_sync.DSNError("you can only send as yourself", "forbidden")
    if message.get("room") not in ROOMS:
        raise dsn_sync.DSNError("no such room", "invalid")
    if not text or len(text) > 2000:
        raise dsn_sync.DSNError("a message has 1 to 2000 characters", "invalid")
    print("%s in %s: %s" % (ctx.sub, message["room"], text), flush=True)
    return dict(message, text=text, ts=time.time())


for key, title in ROOMS.items():
    sync.sync("rooms", key, {"title": title})
now = time.time()
sync.sync("messages", "welcome", {"room": "lobby", "sender": "bob", "text": "Welcome to the lobby!", "sent": now * 1000, "ts": now})
sync.sync("messages", "build", {"room": "dev", "sender": "alice", "text": "The build is green.", "sent": now * 1000, "ts": now})


def token_for(user):
    # Reads the two tables (what each page mirrors is up to its subscriptions); writes messages.
    return sync.issue_token(sub=user, read=["rooms", "messages"], write=["messages"])


serve(sync, os.path.join("chat_rooms", "index.html"), token_for, args.port, USERS, "Chat rooms")
