"""Notifications with an unread badge: ``python examples/notifications.py``, then open
the address it prints.

The backend adds a notification now and then (``@sync.every``) with one
``sync.sync()`` call; it reaches the user's browser within milliseconds and the badge
counts it.  Clicking one marks it read with ``client.update()``, which the backend's
``@on_update`` handler allows for the user's own notifications and only for ``read``.
Each user sees only their own (``@can_read``).
"""

import itertools
import random
import time

from _app import dsn_sync, options, serve

USERS = ["ada", "grace"]
EVENTS = [
    ("order", "Order shipped", "Order #{n} is on its way."),
    ("comment", "New comment", "Linus replied to your post."),
    ("mention", "You were mentioned", "Barbara mentioned you in #design."),
    ("payment", "Payment received", "$42.00 from Ken, invoice #{n}."),
    ("alert", "Disk almost full", "db-1 is at 91% capacity."),
]

args = options("Notifications with an unread badge, on dsn-sync.", port=8001,
               interval=(4.0, "seconds between new notifications (default 4)"))
sync = dsn_sync.DSNSync(port=args.sync_port)
sync.define_table("notifications", {"key": "id", "fields": ["user", "kind", "title", "body", "read", "ts"]})
numbers = itertools.count(1001)


def notify(user, read=False):
    kind, title, body = random.choice(EVENTS)
    n = next(numbers)
    sync.sync("notifications", "n%d" % n, {"user": user, "kind": kind, "title": title,
                                          "body": body.format(n=n), "read": read, "ts": time.time()})


@sync.can_read("notifications")
def own(notification, ctx):
    return notification.get("user") == ctx.sub


def check_owner(key, ctx):
    if (sync.get("notifications", key) or {}).get("user") != ctx.sub:
        raise dsn_sync.DSNError("not your notification", "forbidden")


@sync.on_update("notifications")
def mark(change, ctx):
    """A user may mark their own notifications read or unread, and change nothing else."""
    check_owner(change["id"], ctx)
    if set(change) != {"id", "read"} or not isinstance(change["read"], bool):
        raise dsn_sync.DSNError("only `read` (true or false) can change", "forbidden")
    print("%s marked %s %s" % (ctx.sub, change["id"], "read" if change["read"] else "unread"), flush=True)


@sync.on_delete("notifications")
def dismiss(change, ctx):
    check_owner(change["id"], ctx)


@sync.every(args.interval)
def something_happened():
    notify(random.choice(USERS))


for user in USERS:
    for read in (True, False, False):
        notify(user, read)


def token_for(user):
    return sync.issue_token(sub=user, read=["notifications"], write=["notifications"])


serve(sync, "notifications.html", token_for, args.port, USERS, "Notifications")
