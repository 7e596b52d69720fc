"""A two-person chat: ``python examples/chat.py``, then open the two addresses it prints
(Alice's and Bob's windows) side by side and talk.

Each browser writes its messages with ``client.create('messages', ...)``; the backend's
``@on_create`` handler checks the sender and stamps the server time; every message
reaches the two people in it, and nobody else: ``@can_read`` shows a user only the
messages they sent or received, and each user's token speaks for that user only.
"""

import time

from _app import dsn_sync, options, serve

USERS = ["alice", "bob"]

args = options("Two-person chat on dsn-sync.", port=8002)
sync = dsn_sync.DSNSync(port=args.sync_port)
sync.define_table("messages", {"key": "id", "fields": ["sender", "to", "text", "sent", "ts"]})


@sync.can_read("messages")
def mine(message, ctx):
    return ctx.sub in (message.get("sender"), message.get("to"))


@sync.on_create("messages")
def send(message, ctx):
    """The sender is whoever the token speaks for; the server's clock orders messages."""
    text = str(message.get("text", "")).strip()
    if message.get("sender") != ctx.sub or message.get("to") not in USERS or message["to"] == ctx.sub:
        raise dsn_sync.DSNError("you can only send as yourself, to the other person", "forbidden")
    if not text or len(text) > 2000:
        raise dsn_sync.DSNError("a message has 1 to 2000 characters", "invalid")
    print("%s -> %s: %s" % (ctx.sub, message["to"], text), flush=True)
    return dict(message, text=text, ts=time.time())


sync.sync("messages", "welcome", {"sender": "bob", "to": "alice", "sent": time.time() * 1000, "ts": time.time(),
                                  "text": "Hi Alice! Open Bob's window too, and we can talk."})


def token_for(user):
    # Reads only what @can_read lets this user see; writes only messages.
    return sync.issue_token(sub=user, read=["messages"], write=["messages"])


serve(sync, "chat.html", token_for, args.port, USERS, "Chat")
