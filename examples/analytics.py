"""A live analytics dashboard: ``python examples/analytics.py``, then open the address
it prints.

Every second the backend measures (here: simulates) a few metrics and syncs one record
per sample into ``samples``, dropping samples older than two minutes.  The page draws
whatever its mirror holds: a full chart at once on load (even offline, from
IndexedDB), then one more point with every sync.  The page's token may read and not
write: a dashboard only watches.
"""

import math
import random
import time

from _app import dsn_sync, options, serve

KEEP = 120  # samples kept (and charted)

args = options("A live analytics chart on dsn-sync.", port=8004,
               interval=(1.0, "seconds between samples (default 1)"))
sync = dsn_sync.DSNSync(port=args.sync_port)
sync.define_table("samples", {"key": "id", "fields": ["ts", "visitors", "signups", "latency_ms"]})
state = {"visitors": 140.0}


def measure(ts):
    """One sample; a real app reads its own counters here."""
    wave = 40 * math.sin(ts / 20)
    state["visitors"] = max(20.0, state["visitors"] + random.uniform(-8, 8) + (140 + wave - state["visitors"]) * 0.1)
    spike = random.random() < 0.05
    return {"ts": round(ts, 3), "visitors": round(state["visitors"]),
            "signups": sum(random.random() < 0.15 for _ in range(10)),
            "latency_ms": round(random.gauss(85, 8) + (random.uniform(80, 160) if spike else 0), 1)}


def record(ts):
    sync.sync("samples", "s%015d" % int(ts * 1000), measure(ts))  # keys sort by time


with sync.batch():  # two minutes of history, so the chart is full from the first look
    now = time.time()
    for i in range(KEEP, 0, -1):
        record(now - i * args.interval)


@sync.every(args.interval)
def sample():
    with sync.batch():  # one wake-up for the new sample and the dropped one
        record(time.time())
        keys = sorted(sync.get_all("samples"))
        for key in keys[:-KEEP]:
            sync.remove("samples", key)


def token_for(user):
    return sync.issue_token(sub=user, read=["samples"], write=[])


serve(sync, "analytics.html", token_for, args.port, ["viewer"], "Analytics")
