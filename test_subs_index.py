"""Secondary indexes for subscriptions: built outside the store lock while writes go on, and kept exact."""

import threading

from conftest import private


def test_an_index_built_during_writes_matches_its_rows(make_server, make_raw):
    sync = make_server()
    sync.define_table("messages", {"key": "id", "fields": None})

    @sync.subscription("room")
    def room(ctx, params):
        return {"messages": {"room": params["room"], "n": params["n"]}}  # two fields: two indexes

    with sync.batch():
        for i in range(60000):
            sync.sync("messages", "m%d" % i, {"room": "r%d" % (i % 50), "n": i % 2})
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set():
            key = "m%d" % (i * 7919 % 60000)
            if i % 5 == 4:
                if sync.get("messages", key) is not None:
                    sync.remove("messages", key)
            else:
                sync.sync("messages", key, {"room": "r%d" % (i % 3), "n": i % 2})
            written.append(key)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        raw = make_raw(sync)
        first = raw.ok("pull", since=None, subs={"a": {"name": "room", "params": {"room": "r1", "n": 1}}})
    finally:
        stop.set()
        t.join()
    assert written, "the writer wrote nothing while the index was built"
    store = private(sync, "store")
    assert store.check()  # check() rebuilds every built index from the rows and compares
    want = {k: r for k, r in sync.get_all("messages").items() if r.get("room") == "r1" and r.get("n") == 1}
    got = dict(first["records"]["messages"])
    # The page is the snapshot at its seq; rows written after it arrive as changes.
    cursor = {"epoch": first["epoch"], "seq": first["seq"], "sv": first["sv"], "subs": ["a"]}
    later = raw.ok("pull", since=cursor, subs={"a": {"name": "room", "params": {"room": "r1", "n": 1}}})
    for table, key, record, ids in later["changes"]:
        if ids:
            got[key] = record
        else:
            got.pop(key, None)
    assert got == want


def test_in_filters_and_key_filters_load_from_their_index(make_server, make_raw):
    sync = make_server(page_size=2)
    sync.define_table("t", {"key": "id", "fields": None})

    @sync.subscription("some")
    def some(ctx, params):
        return {"t": {"f": params["f"]}} if "f" in params else {"t": {"id": params["ids"]}}

    for i in range(10):
        sync.sync("t", "k%d" % i, {"f": i})
    raw = make_raw(sync)
    seen = []
    answer = raw.ok("pull", since=None, subs={"a": {"name": "some", "params": {"f": [1, 2, 7]}}})
    seen.append(answer["records"])
    while answer["more"]:
        answer = raw.ok("pull", since=None, next=answer["next"],
                        subs={"a": {"name": "some", "params": {"f": [1, 2, 7]}}})
        seen.append(answer["records"])
    assert seen == [{"t": {"k1": {"f": 1}, "k2": {"f": 2}}}, {"t": {"k7": {"f": 7}}}]
    answer = raw.ok("pull", since=None, subs={"b": {"name": "some", "params": {"ids": ["k3", "k9", "zz"]}}})
    assert answer["records"] == {"t": {"k3": {"f": 3}, "k9": {"f": 9}}} and not answer["more"]
    assert private(sync, "store").check()
