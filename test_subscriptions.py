"""Subscriptions, server side (README: the proposed protocol section 7), over every store.

One suite, parametrised over the memory store, SQLite and PostgreSQL (a throwaway
cluster from test/pg_cluster.py; without its binaries or psycopg those cases skip
loudly, and fail when CI is set).  Everything goes through ``Raw`` frames, so what is
checked is what a client receives.  ``Mirror`` is a sec7 client written from the text:
it walks resets, applies tagged changes and keeps each row's membership; a test compares
what it holds with what the subscriptions select in the store, worked out here in plain
Python.  Every server's store passes ``check()`` (which also checks the indexes) after
each test.

The big case (a table of 100,000 rows, 1,000,000 with ``DSN_SLOW=1``) prints its
figures: ``python3 -m pytest -q -s test_subscriptions.py -k rows_of``.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "test"))

import dsn_sync  # noqa: E402
from conftest import Raw, private, wait_until  # noqa: E402

STORES = ["memory", "sqlite", "postgres"]


# =============================================================================
# Stores and the chat app
# =============================================================================


@pytest.fixture(params=STORES)
def connection(request, tmp_path):
    """The db_connection_string of this case's store: None (memory), a SQLite file, a fresh PostgreSQL database."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "subs.db")
    return request.getfixturevalue("cluster").create_database()


def chat(sync, rules=False):
    """The chat app every test uses: messages and rooms, and the subscriptions over them."""
    sync.define_table("messages", {"key": "id", "fields": None})
    sync.define_table("rooms", {"key": "id", "fields": None})
    sync.define_table("audit", {"key": "id", "fields": None})

    @sync.subscription("room")
    def room(ctx, params):
        wanted = params["room"]  # KeyError -> invalid
        if not isinstance(wanted, (str, list)):
            raise ValueError("room is a room id or a list of them, got %r" % (wanted,))
        if wanted == "secret" or (isinstance(wanted, list) and "secret" in wanted):
            raise PermissionError("the secret room is for staff only")
        return {"messages": {"room": wanted}, "rooms": {"id": wanted}}

    @sync.subscription("value")
    def value(ctx, params):
        return {"messages": {"room": params["room"]}}

    @sync.subscription("kind")
    def kind(ctx, params):
        return {"messages": {"room": params["room"], "kind": params["kind"]}}

    @sync.subscription("hot")
    def hot(ctx, params):
        least = params["n"]
        return {"messages": lambda record: isinstance(record.get("n"), int) and record["n"] >= least}

    @sync.subscription("everything")
    def everything(ctx, params):
        return {"messages": True, "rooms": True}

    @sync.subscription("keys")
    def keys(ctx, params):
        return {"messages": {"id": params["ids"]}}

    @sync.subscription("audit")
    def audit(ctx, params):
        return {"audit": True}

    @sync.subscription("fragile")
    def fragile(ctx, params):
        return {"messages": lambda record: 60 / record["n"] > 10}  # raises for n == 0 and for no n

    @sync.subscription("broken")
    def broken(ctx, params):
        return {"messages": {"room": {"nested": "object"}}}  # not a filter value: the app's mistake

    @sync.subscription("nowhere")
    def nowhere(ctx, params):
        return {"no_such_table": True}

    @sync.subscription("listy")
    def listy(ctx, params):
        return ["messages"]

    @sync.subscription("crash")
    def crash(ctx, params):
        raise RuntimeError("connection to 10.0.0.7 refused, password hunter2")

    if rules:
        @sync.can_read("messages")
        def can_read(record, ctx):
            return not record.get("private") or record.get("owner") == ctx.sub


@pytest.fixture
def server(connection, make_server):
    """``server(rules=False, **options)``: a started DSNSync on this case's store with the chat app.

    Every store made here is checked (``check()``, indexes included) after the test.
    """
    made = []

    def make(rules=False, **options):
        sync = make_server(start=False, db_connection_string=connection, **options)
        chat(sync, rules)
        assert sync.start() is True
        made.append(sync)
        return sync
    yield make
    for sync in made:
        assert private(sync, "store").check()


def room_sub(room):
    return {"name": "room", "params": {"room": room}}


def fill(sync, rooms):
    """Messages m0.. spread over ``rooms`` in turn (n = their number), and a row per room."""
    with sync.batch():
        for room in sorted(set(rooms)):
            sync.sync("rooms", room, {"title": room.title()})
        for i, room in enumerate(rooms):
            sync.sync("messages", "m%d" % i, {"room": room, "n": i, "text": "message %d" % i})


def lobby_mirror(sync, make_raw):
    """Messages in rooms lobby and dev (``fill``), and a client subscribed to the lobby, reset."""
    fill(sync, ["lobby", "dev"])
    m = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    m.reset()
    return m


def selected(sync, table, test):
    """``{(table, key): record}`` of the rows of ``table`` for which ``test(key, record)`` holds."""
    return {(table, k): r for k, r in sync.get_all(table).items() if test(k, r)}


def in_room(*rooms):
    return lambda key, record: record.get("room") in rooms


# =============================================================================
# A sec7 client by hand
# =============================================================================


class Mirror:
    """What a client of section 7 holds, built from Raw answers: rows, membership and the cursor.

    ``reset()`` walks a full reset of the set; ``pull(wait)`` sends one pull and applies
    its answer (a partial reset is walked to its last page; changes are applied entry by
    entry); ``settle()`` pulls until the cursor reaches the server's seq with nothing new
    to add; ``close(id)`` drops a subscription as the client does, without asking;
    ``long_poll(wait)`` sends a pull from the cursor in another thread (``started_pull``),
    applying nothing. ``answers`` keeps every answer in order.
    """

    def __init__(self, raw, subs):
        self.raw, self.subs = raw, dict(subs)
        self.rows, self.member = {}, {}
        self.cursor = None
        self.answers = []
        self.expect_reset = False  # a test that lets more than a page of changes pile up says so

    def ask(self, **fields):
        answer = self.raw.ok("pull", subs=self.subs, **fields)
        self.answers.append(answer)
        return answer

    def long_poll(self, wait):
        return started_pull(self.raw, since=self.cursor, subs=self.subs, wait=wait)

    def reset(self):
        """The full reset of the set: its pages (each checked against sec7's rules)."""
        return self.walk_full(self.ask(since=None, wait=0))

    def walk_full(self, first):
        """The pages of the full reset that ``first`` begins; the mirror becomes their union."""
        pages = [first]
        while pages[-1]["more"]:
            pages.append(self.next_page(pages[-1]))
        return self.adopt(pages)

    def next_page(self, page):
        """The page after ``page`` of a full reset."""
        assert isinstance(page["next"], str), page
        return self.ask(since=None, next=page["next"], wait=0)

    def adopt(self, pages):
        """The mirror becomes the union of a full reset's ``pages``, checked."""
        first = pages[0]
        self.resets = getattr(self, "resets", 0) + 1
        assert pages[-1]["next"] is None and not pages[-1]["more"]
        rows, member = {}, {}
        for page in pages:
            assert page["reset"] is True and "partial" not in page, page
            assert (page["epoch"], page["seq"], page["sv"]) == (first["epoch"], first["seq"], first["sv"])
            for table, records in page["records"].items():
                for key, record in records.items():
                    rows[(table, key)] = record
                    member.setdefault((table, key), set()).add(page["sub"])
        ids = [page["sub"] for page in pages]
        assert ids == sorted(ids, key=lambda i: (i is not None, i)), "pages walk the ids in order: %r" % ids
        if self.subs:
            assert sorted(set(ids)) == sorted(self.subs), "every subscription gets a page: %r" % ids
        else:
            assert ids == [None]
        self.rows, self.member = rows, member
        self.cursor = {"epoch": first["epoch"], "seq": first["seq"], "sv": first["sv"],
                       "subs": sorted(i for i in set(ids) if i is not None)}
        return pages

    def walk_partial(self, page):
        """The pages of the partial reset that ``page`` begins; the rows are added, the cursor keeps its seq."""
        pages = [page]
        while pages[-1]["more"]:
            pages.append(self.ask(since=self.cursor, next=pages[-1]["next"], wait=0))
        sid = page["sub"]
        for p in pages:
            assert p["reset"] is True and p["partial"] is True and p["sub"] == sid, p
            assert p["seq"] == page["seq"] and p["seq"] >= self.cursor["seq"], (p, self.cursor)
            assert "sv" not in p and "tables" not in p, "a partial reset leaves the schema alone"
            for table, records in p["records"].items():
                for key, record in records.items():
                    self.rows[(table, key)] = record
                    self.member.setdefault((table, key), set()).add(sid)
        self.cursor["subs"] = sorted(self.cursor["subs"] + [sid])
        return pages

    def apply(self, answer):
        if answer.get("reset") and answer.get("partial"):
            self.walk_partial(answer)
            return answer
        if answer.get("reset"):  # sec7: too far behind for changes (more than a page due): the set again
            assert self.expect_reset, "an unexpected full reset: %r" % (str(answer)[:300],)
            self.walk_full(answer)
            return answer
        assert answer["seq"] >= self.cursor["seq"], "the cursor went back"
        for change in answer["changes"]:
            assert len(change) == 4, "a change in subscription mode is [table, key, record, ids]: %r" % (change,)
            table, key, record, ids = change
            assert all(i in self.cursor["subs"] for i in ids), (ids, self.cursor)
            if ids:
                assert isinstance(record, dict), change
                self.rows[(table, key)] = record
                self.member[(table, key)] = set(ids)
            else:
                assert record is None, change
                self.rows.pop((table, key), None)
                self.member.pop((table, key), None)
        self.cursor["seq"] = answer["seq"]
        if "sv" in answer:
            self.cursor["sv"] = answer["sv"]
        return answer

    def pull(self, wait=0):
        return self.apply(self.ask(since=self.cursor, wait=wait))

    def settle(self, sync, rounds=50):
        """Pull until every subscription is held and the cursor is the server's seq."""
        for _ in range(rounds):
            answer = self.pull()
            if (not answer.get("reset") and set(self.cursor["subs"]) == set(self.subs)
                    and self.cursor["seq"] == sync.stats()["seq"]):
                return answer
        raise AssertionError("the mirror did not catch up in %d pulls: cursor %r, server seq %d"
                             % (rounds, self.cursor, sync.stats()["seq"]))

    def close(self, sid):
        del self.subs[sid]
        self.cursor["subs"].remove(sid)
        for row in list(self.member):
            self.member[row].discard(sid)
            if not self.member[row]:
                del self.member[row], self.rows[row]

    def table(self, name):
        return {k: r for k, r in self.rows.items() if k[0] == name}


def started_pull(raw, **fields):
    """Send a pull on ``raw`` from another thread; ``result()`` -> (answer, seconds it took)."""
    out = {}

    def run():
        began = time.monotonic()
        try:
            out["answer"] = raw.ok("pull", **fields)
        except BaseException as e:  # handed to the test's thread
            out["error"] = e
        out["took"] = time.monotonic() - began
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout=20):
        thread.join(timeout)
        assert not thread.is_alive(), "the pull was not answered in %d s" % timeout
        if "error" in out:
            raise out["error"]
        return out["answer"], out["took"]
    return result


def parked(sync, count=1):
    wait_until(lambda: sync.stats()["waiting"] >= count, 10, "%d parked pull(s)" % count)


# =============================================================================
# Full reset of the set
# =============================================================================


def test_a_full_reset_pages_every_subscription_in_id_order_and_a_shared_row_comes_in_both(server, make_raw):
    sync = server(page_size=2)
    fill(sync, ["lobby", "dev", "lobby", "ops", "lobby", "dev", "lobby", "lobby"])
    subs = {"b": room_sub("dev"), "a": room_sub("lobby"), "c": room_sub("empty"),
            "both": room_sub(["dev", "ops"])}
    m = Mirror(make_raw(sync), subs)
    pages = m.reset()
    by_sub = {}
    for page in pages:
        by_sub.setdefault(page["sub"], []).append(page)
        assert sum(len(r) for r in page["records"].values()) <= 2, "page_size is 2"
        assert page["more"] == (page is not pages[-1])
    assert [p["sub"] for p in pages] == sorted(p["sub"] for p in pages)
    assert sorted(by_sub) == ["a", "b", "both", "c"], "every subscription gets at least one page"
    assert len(by_sub["a"]) == 3 and len(by_sub["c"]) == 1, [(p["sub"], p["records"]) for p in pages]
    assert all(not r for r in by_sub["c"][0]["records"].values()), "an empty subscription: one empty page"

    def rows_of(sid):
        return {(t, k) for p in by_sub[sid] for t, recs in p["records"].items() for k in recs}
    assert rows_of("a") == set(selected(sync, "messages", in_room("lobby"))) | {("rooms", "lobby")}
    assert rows_of("b") == set(selected(sync, "messages", in_room("dev"))) | {("rooms", "dev")}
    assert rows_of("both") == set(selected(sync, "messages", in_room("dev", "ops"))) | {("rooms", "dev"), ("rooms", "ops")}
    assert rows_of("b") & rows_of("both") == rows_of("b"), "a row selected by two subscriptions comes in each"
    assert m.member[("messages", "m1")] == {"b", "both"}
    assert m.cursor["subs"] == ["a", "b", "both", "c"]
    assert pages[0]["seq"] == sync.stats()["seq"] and pages[0]["tables"]["messages"]["key"] == "id"
    assert m.table("messages") == selected(sync, "messages", in_room("lobby", "dev", "ops"))
    assert set(m.table("rooms")) == {("rooms", "lobby"), ("rooms", "dev"), ("rooms", "ops")}
    assert "audit" not in {t for t, _ in m.rows}
    # and the mirror is then in step: nothing has changed
    assert m.pull()["changes"] == []


def test_a_subscription_page_walks_a_bounded_part_of_the_log(server, make_raw):
    """A predicate, or a value most rows share, made every page of a reset collect the whole
    table's log under the store's lock (a rare predicate: one page holding the lock for all
    of it; a common value: the same set rebuilt for each page).  A page now walks at most
    page_scan log slots; it may hold few rows, or none, and say more, and the reset still
    brings every row selected."""
    sync = server(page_size=400)
    calls = []

    @sync.subscription("rare")
    def rare(ctx, params):
        def pred(record):
            calls.append(record["n"])
            return record["n"] % 1000 == 999
        return {"messages": pred}
    fill(sync, ["lobby", "dev", "dev"] * 1000)
    private(sync, "store").page_scan = 500
    m = Mirror(make_raw(sync), {"l": room_sub("lobby"), "r": {"name": "rare", "params": {}}})
    walked, ask = [], m.ask

    def counted(**fields):
        before = len(calls)
        answer = ask(**fields)
        walked.append(len(calls) - before)
        return answer
    m.ask = counted
    pages = m.walk_full(m.ask(since=None, wait=0))
    assert max(walked) <= 500, "messages judged per page: %r" % walked
    by_sub = {}
    for page in pages:
        by_sub.setdefault(page["sub"], []).append(page)
    assert len(by_sub["r"]) >= 3000 // 500, "a page walked the whole log before: %d pages" % len(by_sub["r"])
    assert len(by_sub["l"]) >= 3000 // 500, "the 1,000 lobby rows are more than page_scan: walked too"
    assert m.table("messages") == selected(sync, "messages", lambda k, r: r["room"] == "lobby" or r["n"] % 1000 == 999)
    assert {k for (t, k), ids in m.member.items() if "r" in ids} == {"m999", "m1999", "m2999"}
    assert len(calls) <= 3000 + len(sync.get_all("rooms")), "each message is judged once in the reset"
    # a value few rows share is still served from its index, in pages of page_size
    sync.sync("rooms", "ops", {"title": "Ops"})
    sync.sync("messages", "ops1", {"room": "ops", "n": 1})
    ops = Mirror(make_raw(sync), {"o": room_sub("ops")})
    assert len(ops.reset()) == 1 and set(ops.rows) == {("rooms", "ops"), ("messages", "ops1")}
    assert ops.pull()["changes"] == []


def test_many_subscriptions_make_a_shorter_walk_of_the_log_not_a_longer_hold_of_the_lock(server, make_raw, monkeypatch):
    """One token's pull named 64 subscriptions and a cursor far back: the change walk (under
    the store's lock) tested each of max_walk log slots against every filter, twice for a
    row that might have left, so other users' requests waited seconds.  Now a slot whose
    states, now and at the cursor, are on none of the set's routes costs no filter test,
    and the walk's budget counts the tests it makes."""
    sync = server()
    fill(sync, ["lobby"])
    store = private(sync, "store")
    tests = []
    real = dsn_sync._Filter.matches

    def counted(self, *args, **kwargs):
        tests.append(self.table)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(dsn_sync._Filter, "matches", counted)
    # 64 rooms nobody writes in: the lobby's 3,000 changes are on none of their routes
    quiet = Mirror(make_raw(sync), {"q%d" % i: room_sub("empty%d" % i) for i in range(64)})
    quiet.reset()
    with sync.batch():
        for i in range(3000):
            sync.sync("messages", "x%d" % i, {"room": "lobby", "n": i})
    del tests[:]
    answer = quiet.pull()
    assert answer["changes"] == [] and quiet.cursor["seq"] == sync.stats()["seq"], "not carried, not reset"
    assert tests == [], "%d filter tests for changes no subscription's route touches" % len(tests)

    # Predicates route nothing: each is tested, and the budget counts the tests
    @sync.subscription("counted")
    def counted_sub(ctx, params):
        return {"messages": lambda record: record.get("n") == params["n"]}
    store.max_walk = 2000
    busy = Mirror(make_raw(sync), {"p%d" % i: {"name": "counted", "params": {"n": -1 - i}} for i in range(20)})
    busy.reset()
    with sync.batch():
        for i in range(1500):
            sync.sync("messages", "y%d" % i, {"room": "dev", "n": i})
    walks, walk = [], store._changes_for

    def measured(*args):
        before = len(tests)
        found = walk(*args)
        walks.append((len(tests) - before, found[0] is None))
        return found
    monkeypatch.setattr(store, "_changes_for", measured)
    busy.expect_reset = True
    assert busy.pull()["reset"] is True, "too far behind: the set again, from the indexes and page_scan"
    assert walks == [(walks[0][0], True)] and walks[0][0] <= store.max_walk, \
        "%d filter tests in one walk of max_walk %d" % (walks[0][0], store.max_walk)
    busy.settle(sync)
    assert busy.rows == {}, "no row has a negative n"


def test_a_large_selection_of_a_value_few_rows_share_comes_in_full_pages(server, make_raw):
    """A value more rows hold than page_scan, but a small share of the table (1,000 lobby
    messages of 8,000), was paged by walking the log: a page per page_scan slots, each
    holding the few lobby rows among them.  Its rows are now kept in seq order for the
    walk (the store's _selection), so every page but the last is full; a row changed
    between pages is left to the changes after the snapshot.  One list serves later resets
    (with the log since it was built) until that walk would pass page_scan slots; it stays
    until unused for selection_idle seconds, the kept lists stay within max_selected rows,
    and only a reset's first page at the current seq builds one (a forged cursor cannot make
    the server sort a list per snapshot it names)."""
    sync = server(page_size=100)
    fill(sync, (["lobby", "ops"] + ["dev"] * 6) * 1000)
    store = private(sync, "store")
    store.page_scan = 500
    m = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    first = m.ask(since=None, wait=0)
    paged = first_key(first)
    sync.remove("messages", paged)  # paged already: the changes remove it
    assert "m7992" not in first["records"]["messages"] and first["more"]
    sync.sync("messages", "m7992", {"text": "changed while paging"})  # a lobby row not paged yet
    sync.sync("messages", "m7984", {"room": "dev"})  # another leaves the lobby
    sync.sync("messages", "m1", {"room": "lobby"})  # enters it
    pages = m.walk_full(first)
    sizes = page_sizes(pages)
    assert sizes[:-1] == [100] * (len(pages) - 1) and 0 < sizes[-1] <= 100, \
        "pages of a large selection are full: %r" % sizes
    assert sum(sizes) == 1000 + 1 - 2, "the lobby row and its messages, m7992 and m7984 left to the changes"
    assert ("messages", "m7992") not in m.rows and ("messages", "m7984") not in m.rows
    m.settle(sync)
    assert m.table("messages") == selected(sync, "messages", in_room("lobby"))
    assert m.rows[("messages", "m7992")]["text"] == "changed while paging"
    kept = private(sync, "selections")
    [(name, (_, _, _, built))] = kept.items()
    assert built == first["seq"], "one list, built at the first page's snapshot"

    # a later reset uses that list, and the log from where it was built for rows that joined since
    later = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    sizes = page_sizes(later.reset())
    assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == 1000, sizes
    assert later.table("messages") == selected(sync, "messages", in_room("lobby")), "m1 joined after the build"
    assert list(kept) == [name] and kept[name][3] == built, "the same list, not one per snapshot"

    # a first page whose walk from the list's seq would pass page_scan slots builds it again
    with sync.batch():
        for i in range(2, 8000, 8):  # 1,000 ops messages rewritten: 1,000 log slots past the build
            sync.sync("messages", "m%d" % i, {"n": -i})
    fresh = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    sizes = page_sizes(fresh.reset())
    assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == 1000, sizes
    assert list(kept) == [name] and kept[name][3] == store.seq > built, "built again at the new seq"

    # past max_selected the least recently used list goes; a reset reading it walks the log on
    store.max_selected = 1500
    lobby = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    first_lobby = lobby.ask(since=None, wait=0)
    ops = Mirror(make_raw(sync), {"o": room_sub("ops")})
    first_ops = ops.ask(since=None, wait=0)
    assert len(kept) == 1 and name not in kept, "the lobby's list dropped for the ops list"
    lobby_sizes = page_sizes(lobby.walk_full(first_lobby))
    assert sum(lobby_sizes) == 1000 and len(lobby_sizes) > 10, "walked, in thin pages: %r" % lobby_sizes
    assert len(kept) == 1, "a later page does not build a list again"
    ops_sizes = page_sizes(ops.walk_full(first_ops))
    assert ops_sizes[:-1] == [100] * (len(ops_sizes) - 1) and sum(ops_sizes) == 1000, ops_sizes
    assert store.check()
    assert lobby.table("messages") == selected(sync, "messages", in_room("lobby"))
    assert ops.table("messages") == selected(sync, "messages", in_room("ops"))

    # a forged cursor at an older snapshot walks the log too: no list per snapshot a client names;
    # and a list no page has read for selection_idle seconds goes at the next such page
    store.selection_idle = 0
    forged = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    epoch, snap, _, sid = first_lobby["next"].split(".")
    for old in range(int(snap) - 5, int(snap)):
        page = forged.ask(since=None, wait=0, next="%s.%d.0.%s" % (epoch, old, sid))
        assert page["seq"] == old and page["more"]
    assert not kept


def test_first_pages_that_build_one_selection_at_once_keep_one_list(server, make_raw):
    """Eight clients ask for the first page of one large selection at the same snapshot: each
    may build the list outside the lock, and the ones that finish last find it kept. They
    use the one already kept, not a second copy counted twice against max_selected, and
    every client's pages come from it, full, until the last."""
    sync = server(page_size=100)
    fill(sync, (["lobby", "ops"] + ["dev"] * 6) * 5000)
    private(sync, "store").page_scan = 500
    mirrors = [Mirror(make_raw(sync), {"l": room_sub("lobby")}) for _ in range(8)]
    start, firsts = threading.Barrier(len(mirrors)), [None] * len(mirrors)

    def first(i):
        start.wait()
        firsts[i] = mirrors[i].ask(since=None, wait=0)
    threads = [threading.Thread(target=first, args=(i,)) for i in range(len(mirrors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    kept = private(sync, "selections")
    assert [len(v[0]) for v in kept.values()] == [5001], "one list, counted once"
    assert {page["seq"] for page in firsts} == {next(iter(kept.values()))[3]}
    assert private(sync, "store").check()
    for mirror, page in zip(mirrors, firsts):
        sizes = page_sizes(mirror.walk_full(page))
        assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == 5001, sizes
    assert len(kept) == 1 and private(sync, "store").check()


def test_a_full_reset_with_no_subscriptions_is_one_empty_page(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev"])
    page = make_raw(sync).ok("pull", since=None, subs={}, wait=0)
    assert page["reset"] is True and page["sub"] is None and page["more"] is False and page["next"] is None
    assert all(not rows for rows in page["records"].values()), page["records"]


def test_a_full_reset_page_survives_a_subscription_dropped_between_pages(server, make_raw):
    sync = server(page_size=1)
    fill(sync, ["lobby", "lobby", "dev", "dev"])
    raw = make_raw(sync)
    subs = {"a": room_sub("lobby"), "b": room_sub("dev"), "c": room_sub("ops")}
    first = raw.ok("pull", since=None, subs=subs, wait=0)
    assert first["sub"] == "a" and first["more"]
    del subs["b"]  # the client closed b while paging: the walk passes over it
    seen = [first["sub"]]
    page = first
    while page["more"]:
        page = raw.ok("pull", since=None, subs=subs, next=page["next"], wait=0)
        assert page["seq"] == first["seq"]
        seen.append(page["sub"])
    assert "b" not in seen and seen[-1] == "c", seen


# =============================================================================
# Partial reset of a new subscription
# =============================================================================


def test_a_new_subscription_is_a_partial_reset_and_the_cursor_stays(server, make_raw):
    sync = server(page_size=2)
    fill(sync, ["lobby", "dev", "dev", "dev", "lobby", "dev", "dev"])
    m = Mirror(make_raw(sync), {"a": room_sub("lobby")})
    m.reset()
    before = dict(m.cursor)
    sync.sync("messages", "m0", {"text": "edited after the cursor"})  # in lobby: comes with the changes
    sync.sync("messages", "m1", {"text": "dev, edited after the cursor"})  # in dev: not yet subscribed
    m.subs["b"] = room_sub("dev")
    first = m.ask(since=m.cursor, wait=0)
    assert first["reset"] is True and first["partial"] is True and first["sub"] == "b", first
    assert first["seq"] == sync.stats()["seq"] and first["more"] is True
    pages = m.walk_partial(first)
    assert len(pages) == 3, "five dev messages and its room row, two to a page: %r" % [p["records"] for p in pages]
    assert m.cursor["seq"] == before["seq"], "a partial reset does not move the cursor"
    assert m.cursor["subs"] == ["a", "b"]
    assert m.rows[("messages", "m1")]["text"] == "dev, edited after the cursor"
    # the changes after the (unmoved) cursor then come, tagged with the new membership
    answer = m.pull()
    assert [c[:2] for c in answer["changes"]] == [["messages", "m0"], ["messages", "m1"]], answer["changes"]
    assert answer["changes"][1][3] == ["b"] and answer["changes"][0][3] == ["a"]
    assert m.table("messages") == selected(sync, "messages", in_room("lobby", "dev"))
    assert m.member[("messages", "m2")] == {"b"}


def test_two_new_subscriptions_are_loaded_one_at_a_time_smallest_id_first(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev", "ops"])
    m = Mirror(make_raw(sync), {"m": room_sub("lobby")})
    m.reset()
    m.subs.update({"z": room_sub("ops"), "k": room_sub("dev")})
    first = m.pull()
    assert first["sub"] == "k" and first["partial"] is True
    second = m.pull()
    assert second["sub"] == "z" and second["partial"] is True
    m.settle(sync)
    assert m.cursor["subs"] == ["k", "m", "z"]
    assert m.table("messages") == selected(sync, "messages", in_room("lobby", "dev", "ops"))


def test_a_changed_schema_is_answered_before_a_new_subscription(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev"])
    m = Mirror(make_raw(sync), {"a": room_sub("lobby")})
    m.reset()
    sync.define_table("extra", {"key": "id", "fields": None})
    m.subs["b"] = room_sub("dev")
    answer = m.pull()
    assert "reset" not in answer and "extra" in answer["tables"] and answer["sv"] == m.cursor["sv"]
    assert m.pull()["partial"] is True


def test_closing_a_subscription_needs_no_request_and_the_server_stops_sending_its_rows(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev", "lobby"])
    m = Mirror(make_raw(sync), {"a": room_sub("lobby"), "b": room_sub(["dev", "lobby"])})
    m.reset()
    m.close("b")
    assert m.table("messages") == selected(sync, "messages", in_room("lobby"))
    sync.sync("messages", "m1", {"text": "dev row, no longer subscribed"})
    assert m.pull()["changes"] == []


def test_changes_between_reset_pages_still_reach_the_mirror(server, make_raw):
    # Pages of 5: both resets take two pages, and the five changes made meanwhile still fit
    # one changes answer (more would be a reset of the set: sec7 never cuts one).
    sync = server(page_size=5)
    fill(sync, ["lobby", "dev"] * 8)
    m = Mirror(make_raw(sync), {"a": room_sub("lobby")})
    first = m.ask(since=None, wait=0)  # a full reset, its first page only
    sync.sync("messages", "m8", {"text": "changed while paging"})  # not paged yet
    sync.remove("messages", first_key(first))  # paged already
    sync.sync("messages", "m1", {"room": "lobby"})  # enters
    pages = [first]
    while pages[-1]["more"]:
        pages.append(m.ask(since=None, next=pages[-1]["next"], wait=0))
    assert {p["seq"] for p in pages} == {first["seq"]}, "one snapshot for the whole walk"
    m.rows, m.member = {}, {}
    for p in pages:
        for t, recs in p["records"].items():
            for k, r in recs.items():
                m.rows[(t, k)], m.member[(t, k)] = r, {"a"}
    m.cursor = {"epoch": first["epoch"], "seq": first["seq"], "sv": first["sv"], "subs": ["a"]}
    # now a partial reset of a new subscription, with changes between its pages too
    m.subs["b"] = room_sub("dev")
    p1 = m.ask(since=m.cursor, wait=0)
    assert p1["partial"] is True and p1["more"] is True
    sync.sync("messages", "m9", {"text": "dev, changed while paging"})
    sync.sync("messages", "m3", {"room": "ops"})  # leaves dev
    m.walk_partial(p1)
    m.settle(sync)
    assert m.table("messages") == selected(sync, "messages", in_room("lobby", "dev"))


def page_sizes(pages):
    """The rows each page of a reset carries, all tables together."""
    return [sum(map(len, page["records"].values())) for page in pages]


def first_key(page):
    return sorted(page["records"]["messages"])[0]


# =============================================================================
# Rows entering and leaving, deletions
# =============================================================================


def test_rows_enter_and_leave_through_updates_of_the_filtered_field(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev"])
    lobby = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    dev = Mirror(make_raw(sync), {"d": room_sub("dev")})
    lobby.reset(), dev.reset()

    sync.sync("messages", "m0", {"room": "dev"})  # leaves lobby, enters dev
    assert lobby.pull()["changes"] == [["messages", "m0", None, []]]
    entered = dev.pull()["changes"]
    assert entered == [["messages", "m0", {"room": "dev", "n": 0, "text": "message 0"}, ["d"]]], \
        "a row entering through an update comes whole"
    sync.sync("messages", "m0", {"text": "edited in dev"})
    assert lobby.pull()["changes"] == [], "a row that left is not followed"
    assert dev.pull()["changes"][0][2]["text"] == "edited in dev"
    sync.sync("messages", "m0", {"room": "lobby"})  # and back
    assert lobby.pull()["changes"] == [["messages", "m0", {"room": "lobby", "n": 0, "text": "edited in dev"}, ["l"]]]
    assert dev.pull()["changes"] == [["messages", "m0", None, []]]
    sync.sync("messages", "m0", {"room": None})  # a null value: in no room
    sync.sync("messages", "m1", {"room": ["dev"]})  # a list never equals a filter value
    assert lobby.pull()["changes"] == [["messages", "m0", None, []]]
    assert dev.pull()["changes"] == [["messages", "m1", None, []]]
    assert lobby.table("messages") == selected(sync, "messages", in_room("lobby")) == {}
    assert dev.table("messages") == {}


def test_deletions_reach_only_the_clients_whose_set_held_the_row(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev", "lobby"])
    lobby = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    dev = Mirror(make_raw(sync), {"d": room_sub("dev")})
    whole = make_raw(sync)
    lobby.reset(), dev.reset()
    _, plain, _ = whole.reset()
    sync.remove("messages", "m2")
    assert lobby.pull()["changes"] == [["messages", "m2", None, []]]
    answer = dev.pull()
    assert answer["changes"] == [] and answer["seq"] == sync.stats()["seq"], "the cursor covers what it skipped"
    assert "m2" not in json.dumps(answer), "a client of another room learns nothing of the key"
    # outside subscription mode, section 4 is unchanged: every reader hears of it
    assert whole.ok("pull", since=plain, wait=0)["changes"] == [["messages", "m2", None]]
    # a deletion of a row moved away earlier does not reach the room it left
    sync.sync("messages", "m0", {"room": "dev"})
    lobby.pull(), dev.pull()
    sync.remove("messages", "m0")
    assert lobby.pull()["changes"] == []
    assert dev.pull()["changes"] == [["messages", "m0", None, []]]


def test_a_long_poll_of_another_room_is_not_answered_by_a_deletion(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev"])
    dev = Mirror(make_raw(sync), {"d": room_sub("dev")})
    dev.reset()
    result = dev.long_poll(20)
    parked(sync)
    sync.remove("messages", "m0")  # lobby's
    sync.sync("messages", "m1", {"text": "dev news"})
    answer, took = result()
    assert answer["changes"] == [["messages", "m1", {"room": "dev", "n": 1, "text": "dev news"}, ["d"]]], answer


# =============================================================================
# Filters: overlap, in, key field, several fields, predicate, True
# =============================================================================


def test_overlapping_subscriptions_tag_a_row_with_both_and_it_stays_while_one_holds_it(server, make_raw):
    sync = server()
    fill(sync, ["lobby", "dev", "ops"])
    m = Mirror(make_raw(sync), {"one": room_sub(["lobby", "dev"]), "two": room_sub(["dev", "ops"])})
    m.reset()
    assert m.member[("messages", "m1")] == {"one", "two"} and m.member[("messages", "m0")] == {"one"}
    sync.sync("messages", "m1", {"text": "both see this"})
    assert m.pull()["changes"] == [["messages", "m1", {"room": "dev", "n": 1, "text": "both see this"}, ["one", "two"]]]
    sync.sync("messages", "m1", {"room": "ops"})  # leaves one, still in two
    assert m.pull()["changes"] == [["messages", "m1", {"room": "ops", "n": 1, "text": "both see this"}, ["two"]]]
    sync.sync("messages", "m0", {"room": "ops"})  # from one to two
    assert m.pull()["changes"][0][3] == ["two"]
    m.close("two")  # the client drops what only two held
    assert m.table("messages") == {}
    sync.sync("messages", "m1", {"room": "lobby"})
    assert m.pull()["changes"][0][3] == ["one"]


def test_an_in_filter_selects_any_of_its_values(server, make_raw):
    sync = server()
    fill(sync, ["a", "b", "c", "d", "a"])
    m = Mirror(make_raw(sync), {"s": room_sub(["a", "c", "zzz"])})
    m.reset()
    assert m.table("messages") == selected(sync, "messages", in_room("a", "c"))
    assert set(m.table("rooms")) == {("rooms", "a"), ("rooms", "c")}
    sync.sync("messages", "m1", {"room": "c"})
    sync.sync("messages", "m3", {"room": "zzz"})
    sync.sync("messages", "m4", {"room": "b"})
    m.settle(sync)
    assert m.table("messages") == selected(sync, "messages", in_room("a", "c", "zzz"))


def test_a_key_field_filter_selects_those_keys(server, make_raw):
    sync = server()
    fill(sync, ["a", "b", "c", "d"])
    m = Mirror(make_raw(sync), {"k": {"name": "keys", "params": {"ids": ["m1", "m3", "m9"]}}})
    m.reset()
    assert sorted(k for _, k in m.table("messages")) == ["m1", "m3"]
    sync.sync("messages", "m9", {"room": "x"})  # a selected key comes into being
    sync.sync("messages", "m2", {"room": "x"})
    sync.remove("messages", "m1")
    answer = m.pull()
    assert [c[1] for c in answer["changes"]] == ["m9", "m1"], answer["changes"]
    assert sorted(k for _, k in m.table("messages")) == ["m3", "m9"]
    # one key as a string, too
    single = Mirror(make_raw(sync), {"k": {"name": "keys", "params": {"ids": "m3"}}})
    single.reset()
    assert list(single.table("messages")) == [("messages", "m3")]


def test_a_filter_on_two_fields_needs_both(server, make_raw):
    sync = server()
    with sync.batch():
        for i, (room, kind) in enumerate([("lobby", "text"), ("lobby", "image"), ("dev", "text"), ("lobby", "text")]):
            sync.sync("messages", "m%d" % i, {"room": room, "kind": kind})
    m = Mirror(make_raw(sync), {"k": {"name": "kind", "params": {"room": "lobby", "kind": ["text"]}}})
    m.reset()
    want = lambda key, r: r.get("room") == "lobby" and r.get("kind") == "text"  # noqa: E731
    assert m.table("messages") == selected(sync, "messages", want)
    sync.sync("messages", "m1", {"kind": "text"})  # in through the second field
    sync.sync("messages", "m0", {"room": "dev"})  # out through the first
    sync.sync("messages", "m2", {"room": "lobby", "kind": "video"})  # one of two: stays out
    m.settle(sync)
    assert m.table("messages") == selected(sync, "messages", want) and len(m.table("messages")) == 2


def test_filter_values_compare_as_json(server, make_raw):
    sync = server()
    with sync.batch():
        for key, value in [("int", 1), ("float", 1.5), ("true", True), ("str", "1"), ("null", None), ("whole", 1.0)]:
            sync.sync("messages", key, {"room": value})
        sync.sync("messages", "missing", {"text": "no room field"})
    m = Mirror(make_raw(sync), {"x": {"name": "value", "params": {"room": [1, "1"]}}})
    m.reset()
    assert sorted(k for _, k in m.table("messages")) == ["int", "str"], "1 is not 1.0, 1.5 or true"
    m2 = Mirror(make_raw(sync), {"x": {"name": "value", "params": {"room": [None, True]}}})
    m2.reset()
    assert sorted(k for _, k in m2.table("messages")) == ["null", "true"], "null matches null, not a missing field"


def test_a_predicate_filter_selects_by_any_rule_and_follows_changes(server, make_raw):
    sync = server(page_size=3)
    fill(sync, ["lobby"] * 10)
    m = Mirror(make_raw(sync), {"h": {"name": "hot", "params": {"n": 6}}})
    m.reset()
    hot = lambda key, r: isinstance(r.get("n"), int) and r["n"] >= 6  # noqa: E731
    assert m.table("messages") == selected(sync, "messages", hot) and len(m.table("messages")) == 4
    sync.sync("messages", "m1", {"n": 100})
    sync.sync("messages", "m9", {"n": 2})
    sync.sync("messages", "m2", {"n": "not a number"})
    sync.remove("messages", "m8")
    sync.sync("messages", "m3", {"n": 3})  # not selected before or after: not sent
    answer = m.pull()
    assert [c[1] for c in answer["changes"]] == ["m1", "m9", "m8"], answer["changes"]
    assert m.table("messages") == selected(sync, "messages", hot)


def test_a_predicate_that_raises_leaves_the_row_out_and_the_pull_goes_on(server, make_raw):
    sync = server()
    fill(sync, ["lobby"] * 8)  # n = 0 .. 7: 60 / 0 raises, 60 / n > 10 for n = 1 .. 5
    sync.sync("messages", "no_n", {"room": "lobby"})
    m = Mirror(make_raw(sync), {"f": {"name": "fragile", "params": {}}})
    m.reset()
    assert sorted(k for _, k in m.table("messages")) == ["m1", "m2", "m3", "m4", "m5"]
    sync.sync("messages", "m1", {"n": 0})  # now raises: it leaves
    sync.sync("messages", "m7", {"n": 2})  # enters
    answer = m.pull()
    assert [c[1] for c in answer["changes"]] == ["m1", "m7"] and answer["changes"][0][3] == []


def test_a_true_filter_selects_the_whole_table(server, make_raw):
    sync = server(page_size=4)
    fill(sync, ["lobby", "dev", "ops"] * 3)
    m = Mirror(make_raw(sync), {"all": {"name": "everything", "params": {}}})
    m.reset()
    assert m.table("messages") == selected(sync, "messages", lambda k, r: True)
    assert len(m.table("rooms")) == 3
    sync.sync("messages", "new", {"room": "anywhere"})
    sync.remove("messages", "m0")
    m.settle(sync)
    assert m.table("messages") == selected(sync, "messages", lambda k, r: True)
    sync.sync("audit", "x", {"what": "not subscribed"})
    assert m.pull()["changes"] == []


def test_row_rules_apply_on_top_of_subscriptions(server, make_raw):
    sync = server(rules=True)
    with sync.batch():
        sync.sync("messages", "public", {"room": "lobby"})
        sync.sync("messages", "mine", {"room": "lobby", "private": True, "owner": "ann"})
        sync.sync("messages", "theirs", {"room": "lobby", "private": True, "owner": "bob"})
    ann = Mirror(make_raw(sync, sync.issue_token(sub="ann")), {"l": room_sub("lobby")})
    bob = Mirror(make_raw(sync, sync.issue_token(sub="bob")), {"l": room_sub("lobby")})
    ann.reset(), bob.reset()
    assert sorted(k for _, k in ann.table("messages")) == ["mine", "public"]
    assert sorted(k for _, k in bob.table("messages")) == ["public", "theirs"]
    sync.sync("messages", "public", {"private": True, "owner": "ann"})  # hidden from bob now
    assert bob.pull()["changes"] == [["messages", "public", None, []]], "hidden by a rule: it leaves"
    assert ann.pull()["changes"][0][3] == ["l"]
    sync.sync("messages", "theirs", {"private": False})  # shown to ann now
    assert ann.pull()["changes"][0][:2] == ["messages", "theirs"]
    ann.settle(sync), bob.settle(sync)
    visible = lambda who: lambda k, r: r.get("room") == "lobby" and (not r.get("private") or r.get("owner") == who)  # noqa: E731
    assert ann.table("messages") == selected(sync, "messages", visible("ann"))
    assert bob.table("messages") == selected(sync, "messages", visible("bob"))


def test_a_deletion_of_a_row_hidden_by_a_rule_does_not_reach_the_client(server, make_raw):
    sync = server(rules=True)
    sync.sync("messages", "theirs", {"room": "lobby", "private": True, "owner": "bob"})
    ann = Mirror(make_raw(sync, sync.issue_token(sub="ann")), {"l": room_sub("lobby")})
    ann.reset()
    sync.sync("messages", "theirs", {"text": "still private"})  # ann's cursor is past the previous state
    ann.pull()
    assert ann.table("messages") == {}
    sync.remove("messages", "theirs")
    answer = ann.pull()
    assert "theirs" not in json.dumps(answer["changes"]), answer["changes"]


# =============================================================================
# Refusals and malformed subscriptions
# =============================================================================


@pytest.mark.parametrize("name,params,code,says", [
    ("nope", {}, "invalid", "no subscription 'nope'"),
    ("room", {"room": "secret"}, "forbidden", "the secret room is for staff only"),
    ("room", {"room": 7}, "invalid", "room is a room id or a list of them"),
    ("room", {}, "invalid", "missing parameter"),
    ("broken", {}, "invalid", "failed on the server"),
    ("nowhere", {}, "invalid", "failed on the server"),
    ("listy", {}, "invalid", "failed on the server"),
    ("crash", {}, "invalid", "failed on the server"),
])
def test_a_refused_subscription_fails_the_pull_with_its_id(server, make_raw, name, params, code, says):
    sync = server()
    fill(sync, ["lobby"])
    raw = make_raw(sync)
    subs = {"fine": room_sub("lobby"), "bad": {"name": name, "params": params}}
    for since in (None, raw.cursor()):
        if since is not None:
            since["subs"] = ["fine"]
        answer = raw.err("pull", code, since=since, subs=subs, wait=0)
        assert answer["error"]["sub"] == "bad", answer
        message = answer["error"]["message"]
        assert says in message, message
        for internal in ("hunter2", "10.0.0.7", "nested", "no_such_table", "Traceback", "TypeError"):
            assert internal not in message, "the refusal leaks %r: %s" % (internal, message)
    # the client drops it and carries on
    del subs["bad"]
    assert raw.ok("pull", since=None, subs=subs, wait=0)["sub"] == "fine"


def test_an_unknown_subscription_tells_the_log_not_the_client_which_names_exist(server, make_raw, caplog):
    sync = server()
    raw = make_raw(sync, sync.issue_token(sub="ann", read=["messages"]))
    with caplog.at_level("WARNING", logger="dsn_sync"):
        for _ in range(3):
            answer = raw.err("pull", "invalid", since=None, subs={"s": {"name": "xyzzy", "params": {}}}, wait=0)
    message = answer["error"]["message"]
    assert "no subscription 'xyzzy'" in message and "log" in message, message
    defined = sorted(sync._engine.subscriptions)
    assert len(defined) >= 2
    for name in defined:
        assert not re.search(r"\b%s\b" % re.escape(name), message), "the refusal names %r: %s" % (name, message)
    logged = [r.getMessage() for r in caplog.records if "xyzzy" in r.getMessage()]
    assert len(logged) == 1, "logged once per unknown name, got %r" % logged
    assert all(re.search(r"\b%s\b" % re.escape(name), logged[0]) for name in defined), logged[0]


def test_unknown_subscription_names_are_kept_short_and_few(server, make_raw, caplog):
    # A token holder picks the names: the server keeps and logs only the first 64, each cut to 64 characters.
    sync = server()
    raw = make_raw(sync, sync.issue_token(sub="ann", read=["messages"]))
    with caplog.at_level("WARNING", logger="dsn_sync"):
        for i in range(70):
            name = "%02d" % i + "x" * 5000
            answer = raw.err("pull", "invalid", since=None, subs={"s": {"name": name, "params": {}}}, wait=0)
            assert len(answer["error"]["message"]) < 200, answer["error"]["message"]
    logged = [r.getMessage() for r in caplog.records if "does not define" in r.getMessage()]
    assert len(logged) == 64, len(logged)
    assert "further unknown names are not logged" in logged[-1] and "further" not in logged[-2]
    assert all(len(m) < 1000 for m in logged)
    kept = sync._engine._unknown_subs
    assert len(kept) == 64 and max(map(len, kept)) == 64


def test_long_params_resolved_for_every_pull_do_not_pile_up_in_the_server(server, make_raw):
    # Params over max_cached_params are resolved anew for every pull; each pull's set of routes
    # was kept for reuse (4,096 of them), so a token could make the server hold gigabytes.
    sync = server()
    fill(sync, ["lobby", "dev"])
    engine = sync._engine
    engine.max_held_routes = 5000
    rooms = ["lobby"] + ["room-%04d" % i for i in range(299)]  # about 3,600 characters: not cached
    m = Mirror(make_raw(sync, sync.issue_token(sub="ann", read=["messages", "rooms"])), {"big": room_sub(rooms)})
    m.reset()
    for _ in range(40):
        m.pull(0)
    kept = sum(len(held.routes) for held in engine._held_sets.values())
    assert kept <= 5000, "%d routes kept in %d sets" % (kept, len(engine._held_sets))
    assert engine._held_routes <= 5000
    assert {key for key, row in m.rows.items() if key[0] == "messages"} == {("messages", "m0")}, m.rows
    sync.sync("messages", "late", {"room": "room-0007", "n": 99, "text": "late"})
    m.pull(0)  # the changes still reach the subscriber whatever the cache dropped
    assert ("messages", "late") in m.rows


def test_kept_subscription_sets_are_bounded_by_all_their_values(server, make_raw):
    # Only one field of a filter is its route (the one with the fewest values): a set kept for
    # reuse is counted by every value of every field, or a filter of one room and thousands of
    # kinds would count as one.
    sync = server()
    fill(sync, ["lobby", "dev"])
    engine = sync._engine
    engine.max_held_routes = 500
    kinds = ["k%d" % i for i in range(100)]  # short enough to cache: each token keeps its filters
    for user in range(10):
        m = Mirror(make_raw(sync, sync.issue_token(sub="u%d" % user, read=["messages"])),
                   {"k": {"name": "kind", "params": {"room": "lobby", "kind": kinds}}})
        m.reset()
        m.pull(0)
        m.pull(0)
    values = sum(sum(len(f.keys) if f.keys is not None else sum(map(len, f.fields.values())) for f in filters.values())
                 for held in engine._held_sets.values() for _, filters in held.items)
    assert 0 < values <= 500, "%d filter values kept in %d sets" % (values, len(engine._held_sets))


def test_kept_subscriptions_are_bounded_by_the_text_of_their_values_not_only_their_count(server, make_raw):
    """An attack run: one token named 64 new subscriptions per pull, each a room of about 930
    characters (under the 1,024 that are cached), and held them all: the kept sets counted
    200,000 values whatever their length, and the server grew by 350 MB in 20 s.  Kept sets
    are now bounded by their values' characters too, and one token's resolved
    subscriptions by the characters of their (name, params)."""
    sync = server()
    fill(sync, ["lobby"])
    engine = sync._engine
    engine.max_held_text = 200000
    mallory = sync.issue_token(sub="mallory", read=["messages", "rooms"])
    raw = make_raw(sync, mallory)
    for pull in range(20):
        subs = {"s%d" % i: room_sub("%02d-%02d-" % (pull, i) + "x" * 900) for i in range(64)}
        m = Mirror(raw, subs)
        m.reset()
        m.pull(0)
        assert engine._held_text <= 200000
        kept = sum(len(v) for held in engine._held_sets.values() for _, filters in held.items
                   for f in filters.values() for values in ((f.keys,) if f.keys is not None else f.fields.values())
                   for v in values)
        assert kept <= 200000, "%d characters of values kept" % kept
    sync.sync("messages", "late", {"room": "19-63-" + "x" * 900, "n": 1})
    m.pull(0)  # whatever the caches dropped, the changes still come
    assert ("messages", "late") in m.rows
    # Many tokens of one user (a login that mints one per call): all their caches together are bounded
    engine.max_subs_text = 150000
    for i in range(8):
        other = Mirror(make_raw(sync, sync.issue_token(sub="mallory", read=["messages", "rooms"])),
                       {"s%d" % j: room_sub("%d-%02d-" % (i, j) + "y" * 900) for j in range(40)})
        other.reset()
        other.pull(0)
    states = list(engine.keyring._cache.values())
    cached = sum(sum(map(len, state.subs or ())) for state in states)
    assert cached == engine._subs_text <= 150000, (cached, engine._subs_text)
    engine.keyring.cache_size = 2
    make_raw(sync, sync.issue_token(sub="eve")).ok("hello")  # the keyring lets go of all but two states
    states = list(engine.keyring._cache.values())
    assert engine._subs_text == sum(sum(map(len, state.subs or ())) for state in states), "an evicted token still counts"


def test_a_pull_still_running_when_its_token_is_evicted_leaves_nothing_counted(server, make_raw):
    """A pull resolves its token's state, the keyring lets go of that state (other tokens came), then
    the pull resolves its subscriptions: what it would cache is never given back (no later eviction
    of that state), so the all-tokens count drifted up until every pull was resolved afresh."""
    sync = server()
    fill(sync, ["lobby"])
    engine = sync._engine
    raw = make_raw(sync, sync.issue_token(sub="slow", read=["messages", "rooms"]))
    raw.ok("hello")
    (state,) = [s for s in engine.keyring._cache.values() if s.sub == "slow"]
    engine.keyring.cache_size = 1
    make_raw(sync, sync.issue_token(sub="next")).ok("hello")  # evicts "slow" while its pull would be running
    assert state.kid not in engine.keyring._cache
    before = engine._subs_text
    resolved = engine._resolve_subs(state, {"a": room_sub("lobby"), "b": room_sub("other")})
    assert set(resolved) == {"a", "b"}  # the pull itself is answered as before
    live = list(engine.keyring._cache.values())
    assert engine._subs_text == before == sum(sum(map(len, s.subs or ())) for s in live)


def test_a_client_with_the_most_subscriptions_a_pull_may_name_is_not_resolved_again_each_pull(server, make_raw):
    """The review of the bound above: at 8,192 characters per token, 64 subscriptions of about 150
    characters each were all resolved again (the app's functions called) on every pull."""
    sync = server()
    fill(sync, ["lobby"])
    calls = []

    @sync.subscription("counted_room")
    def counted_room(ctx, params):
        calls.append(params["room"])
        return {"messages": {"room": params["room"]}}
    m = Mirror(make_raw(sync, sync.issue_token(sub="ann", read=["messages"])),
               {"s%d" % i: {"name": "counted_room", "params": {"room": "%02d" % i + "r" * 150}} for i in range(64)})
    m.reset()
    first = len(calls)
    for _ in range(3):
        m.pull(0)
    assert first == 64 and len(calls) == 64, "%d calls for 64 subscriptions over 4 pulls" % len(calls)


def test_a_bad_filter_built_from_params_logs_a_short_line(server, make_raw, caplog):
    # The app's function puts the client's value into its filter; a value no filter can hold is
    # the app's bug, logged, and the client chose its size.
    sync = server()
    raw = make_raw(sync, sync.issue_token(sub="ann", read=["messages"]))
    with caplog.at_level("ERROR", logger="dsn_sync"):
        raw.err("pull", "invalid", since=None, subs={"s": {"name": "value", "params": {"room": {"x": "y" * 50000}}}},
                wait=0)
    logged = [r.getMessage() for r in caplog.records if "bad filter" in r.getMessage()]
    assert len(logged) == 1 and len(logged[0]) < 600, [m[:200] for m in logged]


def test_a_table_the_token_may_not_read_is_forbidden(server, make_raw):
    sync = server()
    fill(sync, ["lobby"])
    raw = make_raw(sync, sync.issue_token(sub="ann", read=["rooms"]))
    answer = raw.err("pull", "forbidden", since=None, subs={"r": room_sub("lobby")}, wait=0)
    assert answer["error"]["sub"] == "r" and "messages" in answer["error"]["message"]
    # a subscription to what it may read is fine
    raw2 = make_raw(sync, sync.issue_token(sub="ann", read=["audit"]))
    assert raw2.ok("pull", since=None, subs={"x": {"name": "audit", "params": {}}}, wait=0)["sub"] == "x"


def test_a_refusal_is_not_remembered_for_the_next_token(server, make_raw):
    sync = server()
    calls = []

    @sync.subscription("staff")
    def staff(ctx, params):
        calls.append(ctx.sub)
        if not ctx.claims.get("staff"):
            raise PermissionError("staff only")
        return {"messages": True}
    raw = make_raw(sync, sync.issue_token(sub="ann"))
    raw.err("pull", "forbidden", since=None, subs={"s": {"name": "staff", "params": {}}}, wait=0)
    boss = make_raw(sync, sync.issue_token(sub="boss", staff=True))
    assert boss.ok("pull", since=None, subs={"s": {"name": "staff", "params": {}}}, wait=0)["sub"] == "s"
    assert calls == ["ann", "boss"]


@pytest.mark.parametrize("subs,since_subs,says", [
    (["room"], None, "`subs` is an object"),
    ("room", None, "`subs` is an object"),
    ({"s%d" % i: {"name": "room", "params": {"room": "r"}} for i in range(65)}, None, "at most 64"),
    ({"a b": {"name": "room", "params": {"room": "r"}}}, None, "a subscription id is 1 to 40"),
    ({"": {"name": "room", "params": {"room": "r"}}}, None, "a subscription id is 1 to 40"),
    ({"x" * 41: {"name": "room", "params": {"room": "r"}}}, None, "a subscription id is 1 to 40"),
    ({"é": {"name": "room", "params": {"room": "r"}}}, None, "a subscription id is 1 to 40"),
    ({"a": "room"}, None, "must be {\"name\": string, \"params\": object}"),
    ({"a": {"name": 7, "params": {}}}, None, "must be {\"name\": string, \"params\": object}"),
    ({"a": {"name": "room", "params": ["lobby"]}}, None, "must be {\"name\": string, \"params\": object}"),
    ({"a": {"name": "room", "params": {"room": "r"}}}, ["b"], "`since.subs` lists the ids in `subs`"),
    ({"a": {"name": "room", "params": {"room": "r"}}}, "a", "`since.subs` lists the ids in `subs`"),
    ({"a": {"name": "room", "params": {"room": "r"}}}, [1], "`since.subs` lists the ids in `subs`"),
])
def test_a_malformed_subs_is_bad_request(server, make_raw, subs, since_subs, says):
    sync = server()
    raw = make_raw(sync)
    since = None
    if since_subs is not None:
        since = raw.cursor()
        since["subs"] = since_subs
    answer = raw.err("pull", "bad_request", since=since, subs=subs, wait=0)
    assert says in answer["error"]["message"], answer
    assert "sub" not in answer["error"]


def test_sixty_four_subscriptions_are_fine(server, make_raw):
    sync = server()
    fill(sync, ["r%d" % i for i in range(64)])
    m = Mirror(make_raw(sync), {"s%02d" % i: room_sub("r%d" % i) for i in range(64)})
    pages = m.reset()
    assert len(pages) == 64 and m.table("messages") == selected(sync, "messages", lambda k, r: True)


# =============================================================================
# Long-polls and streams
# =============================================================================


def test_a_subscription_pull_parks_and_a_change_it_selects_wakes_it(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    result = m.long_poll(25)
    parked(sync)
    began = time.monotonic()
    sync.sync("messages", "m0", {"text": "wake up"})
    answer, _ = result()
    latency = time.monotonic() - began
    assert answer["changes"] == [["messages", "m0", {"room": "lobby", "n": 0, "text": "wake up"}, ["l"]]]
    print("\na subscription long-poll answered %.1f ms after the change" % (latency * 1000))


@pytest.mark.parametrize("sub,unselected,selected_change", [
    ({"name": "keys", "params": {"ids": ["m1", "m3"]}}, ("m2", {"text": "not a chosen key"}), ("m3", {"text": "chosen"})),
    ({"name": "room", "params": {"room": ["dev", "ops"]}}, ("m0", {"text": "lobby"}), ("m2", {"text": "ops"})),
    ({"name": "kind", "params": {"room": "lobby", "kind": "text"}}, ("m1", {"kind": "text"}), ("m0", {"kind": "text"})),
    ({"name": "hot", "params": {"n": 2}}, ("m0", {"n": 1}), ("m1", {"n": 50})),
    ({"name": "audit", "params": {}}, ("m0", {"text": "a message"}), ("a1", {"what": "audited"})),
])
def test_each_kind_of_filter_wakes_its_long_poll_with_its_own_change_only(server, make_raw, sub, unselected, selected_change):
    sync = server()
    fill(sync, ["lobby", "dev", "ops", "lobby"])
    m = Mirror(make_raw(sync), {"s": sub})
    m.reset()
    result = m.long_poll(25)
    parked(sync)
    sync.sync("messages", *unselected)
    time.sleep(0.3)
    key, data = selected_change
    sync.sync("audit" if key.startswith("a") else "messages", key, data)
    answer, _ = result()
    assert [c[1] for c in answer["changes"]] == [key], answer["changes"]


def test_a_subscription_pull_keeps_waiting_through_changes_it_does_not_select(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    before = m.cursor["seq"]
    result = m.long_poll(25)
    parked(sync)
    for i in range(5):
        sync.sync("messages", "m1" if i == 0 else "dev%d" % i, {"text": "dev chatter %d" % i, "room": "dev"})
        sync.sync("messages", "new%d" % i, {"room": "dev"})
        sync.sync("audit", "a%d" % i, {"what": "unrelated table"})
        time.sleep(0.05)
    time.sleep(0.3)
    assert sync.stats()["waiting"] == 1, "the pull was answered for changes it does not select"
    sync.sync("messages", "m0", {"text": "lobby news"})
    answer, took = result()
    # Answered for the dev changes, it would have come back with no changes before m0 moved.
    assert answer["changes"] == [["messages", "m0", {"room": "lobby", "n": 0, "text": "lobby news"}, ["l"]]], answer
    assert answer["seq"] == sync.stats()["seq"] > before + 15
    print("\nthe pull waited %.2f s through 15 unselected changes and was answered by the one it selects" % took)


def test_a_subscription_pull_with_nothing_selected_ends_at_its_wait_with_the_cursor_past_the_skipped(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    result = m.long_poll(1)
    parked(sync)
    sync.sync("messages", "m1", {"text": "dev only"})
    answer, took = result()
    assert answer["changes"] == [] and answer["seq"] == sync.stats()["seq"]
    assert '"m1"' not in json.dumps(answer)  # as a key or value: the random epoch and ep may hold the letters m1
    print("\nan unselected change: the 1 s long-poll answered empty after %.2f s" % took)


def test_a_pull_with_unselected_changes_already_there_parks_at_the_newer_cursor(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    sync.sync("messages", "m1", {"text": "dev only, before the pull"})
    result = m.long_poll(25)
    parked(sync)
    sync.sync("messages", "m0", {"text": "lobby"})
    answer, _ = result()
    assert [c[1] for c in answer["changes"]] == ["m0"]


def test_every_long_poll_gets_only_its_room(server, make_raw):
    sync = server()
    rooms = ["r%d" % i for i in range(8)]
    fill(sync, rooms)
    mirrors = [Mirror(make_raw(sync), {"s": room_sub(r)}) for r in rooms]
    for m in mirrors:
        m.reset()
    results = [m.long_poll(25) for m in mirrors]
    parked(sync, len(rooms))
    sync.sync("messages", "m3", {"text": "for r3"})
    answer, _ = results[3]()
    assert [c[1] for c in answer["changes"]] == ["m3"]
    time.sleep(0.2)
    assert sync.stats()["waiting"] == len(rooms) - 1, "a change to r3 answered other rooms' pulls"
    with sync.batch():
        for i in range(len(rooms)):
            if i != 3:
                sync.sync("messages", "m%d" % i, {"text": "for r%d" % i})
    for i, result in enumerate(results):
        if i != 3:
            answer, _ = result()
            assert [c[1] for c in answer["changes"]] == ["m%d" % i], (i, answer["changes"])


def test_a_streamed_pull_in_subscription_mode_carries_only_what_it_selects(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    raw = m.raw
    raw.start("pull", since=m.cursor, subs=m.subs, wait=1.5, stream=True)
    parked(sync)
    sync.sync("messages", "m1", {"text": "dev"})
    sync.sync("messages", "m0", {"text": "lobby 1"})
    status, headers = raw.head()
    assert status == 200 and headers["content-type"] == dsn_sync.STREAM_TYPE
    seen = []
    index = 0
    message = raw.message(index)
    while message is not None:
        assert message["ok"] is True
        for change in message["changes"]:
            assert len(change) == 4 and change[1] == "m0", change
            seen.append(change[2]["text"])
        if index == 0:
            sync.sync("messages", "m1", {"text": "dev again"})
            time.sleep(0.05)
            sync.sync("messages", "m0", {"text": "lobby 2"})
        last = message
        index += 1
        message = raw.message(index)
    assert seen[0] == "lobby 1" and seen[-1] == "lobby 2", seen
    assert last["seq"] == sync.stats()["seq"]


def test_a_streamed_subscription_pull_too_far_behind_ends_and_the_next_pull_resets(server, make_raw):
    """sec7: a changes answer in subscription mode is never cut.  A burst of more than a page
    ends the stream (or answers it plainly); the next pull is a reset of the set, holding the burst."""
    sync = server(page_size=2)
    m = lobby_mirror(sync, make_raw)
    raw = m.raw
    raw.start("pull", since=m.cursor, subs=m.subs, wait=2, stream=True)
    parked(sync)
    began = time.monotonic()
    with sync.batch():
        for i in range(7):
            sync.sync("messages", "burst%d" % i, {"room": "lobby", "n": i})
    status, headers = raw.head()
    assert status == 200
    if headers.get("content-type") == "application/x-dsn-stream":
        assert raw.message(0) is None, "the stream ends with no message: none may be cut"
        answer = None
    else:
        answer = raw.whole(headers)
        assert answer["changes"] == [] and answer["seq"] == m.cursor["seq"], answer
    took = time.monotonic() - began
    m.expect_reset = True
    m.pull()
    assert m.resets == 2
    assert m.table("messages") == selected(sync, "messages", in_room("lobby"))
    assert all(("messages", "burst%d" % i) in m.rows for i in range(7))
    print("\nburst of 7 over page_size 2: the wait ended after %.3f s, then one reset" % took)


# =============================================================================
# A client without subs, and the cursor rules
# =============================================================================


def test_a_client_without_subs_sees_whole_readable_tables_as_before(server, make_raw):
    sync = server(rules=True)
    fill(sync, ["lobby", "dev"])
    sync.sync("messages", "hidden", {"room": "lobby", "private": True, "owner": "bob"})
    subscribed = Mirror(make_raw(sync, sync.issue_token(sub="ann")), {"l": room_sub("lobby")})
    subscribed.reset()  # indexes and tracking are now in place
    raw = make_raw(sync, sync.issue_token(sub="ann"))
    assert raw.hello()["subs"] is True
    records, cursor, pages = raw.reset()
    assert "sub" not in pages[0]
    assert sorted(records["messages"]) == ["m0", "m1"] and sorted(records["rooms"]) == ["dev", "lobby"]
    sync.sync("messages", "m1", {"text": "dev"})
    sync.remove("messages", "hidden")
    answer = raw.ok("pull", since=cursor, wait=0)
    assert answer["changes"] == [["messages", "m1", {"room": "dev", "n": 1, "text": "dev"}], ["messages", "hidden", None]]


def test_an_old_epoch_cursor_brings_a_full_reset_of_the_set(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    stale = dict(m.cursor, epoch="not-this-one")
    answer = m.ask(since=stale, wait=0)
    assert answer["reset"] is True and "partial" not in answer and answer["sub"] == "l"
    assert set(answer["records"]["messages"]) == {"m0"}


def test_a_row_changed_within_its_kept_history_sends_nothing_and_only_a_cursor_older_may_learn_the_key(
        server, make_raw):
    """Section 7: the server keeps a row's last four states; a client whose cursor is within
    them is judged exactly, one older may learn that the key changed (a departure)."""
    sync = server()
    fill(sync, ["lobby", "dev"])
    dev = Mirror(make_raw(sync), {"d": room_sub("dev")})
    dev.reset()
    sync.sync("messages", "m0", {"text": "lobby 1"})
    sync.sync("messages", "m0", {"text": "lobby 2"})
    sync.remove("messages", "m0")
    assert dev.pull()["changes"] == []
    for i in range(6):
        sync.sync("messages", "m0", {"room": "lobby", "text": "again %d" % i})
    sync.remove("messages", "m0")
    changes = dev.pull()["changes"]
    assert changes in ([], [["messages", "m0", None, []]]), changes
    assert dev.table("messages") == selected(sync, "messages", in_room("dev"))


def test_a_departure_is_not_lost_when_a_changes_answer_is_cut(server, make_raw):
    sync = server(page_size=2)
    fill(sync, ["lobby", "lobby", "lobby", "lobby"])
    m = Mirror(make_raw(sync), {"l": room_sub("lobby")})
    m.reset()
    sync.sync("messages", "m0", {"room": "dev"})  # m0 leaves lobby ...
    for key in ("m1", "m2", "m3"):
        sync.sync("messages", key, {"text": "lobby news"})  # ... three lobby changes: more than a page ...
    sync.sync("messages", "m0", {"text": "edited in dev"})  # ... and m0's departure is coalesced into this change
    m.expect_reset = True  # more than a page of changes is due: sec7 answers a reset, never a cut
    m.settle(sync)
    assert m.resets == 2
    assert ("messages", "m0") not in m.rows, "m0 is in dev now but the lobby mirror still holds it"


def test_a_row_of_another_room_edited_twice_during_a_long_poll_is_not_sent(server, make_raw):
    sync = server()
    m = lobby_mirror(sync, make_raw)
    result = m.long_poll(25)
    parked(sync)
    with sync.batch():  # one wake-up of the feed for the three, so the outcome does not hang on timing
        sync.sync("messages", "m1", {"text": "dev, edit 1"})
        sync.sync("messages", "m1", {"text": "dev, edit 2"})
        sync.sync("messages", "m0", {"text": "lobby news"})
    answer, _ = result()
    assert "m1" not in json.dumps(answer["changes"]), answer["changes"]


def test_writes_while_the_first_subscription_builds_its_index_leave_index_and_mirror_right(server, make_raw):
    sync = server()
    count = 20000
    with sync.batch():
        for i in range(count):
            sync.sync("messages", "m%d" % i, {"room": "r%d" % (i % 50), "n": i})
    stop = threading.Event()
    moved = []

    def writer():  # rows into and out of r7, and deletions, while the index is built
        i = 0
        while not stop.is_set():
            key = "m%d" % ((i * 7919) % count)
            if i % 5 == 4:
                sync.remove("messages", key)
            else:
                sync.sync("messages", key, {"room": "r7" if i % 2 else "r8"})
            moved.append(key)
            i += 1
    writing = threading.Thread(target=writer, daemon=True)
    writing.start()
    try:
        wait_until(lambda: len(moved) > 20, 10, "the writer under way")
        m = Mirror(make_raw(sync), {"s": room_sub("r7")})
        m.reset()
        wait_until(lambda: len(moved) > 200, 20, "more writes after the first load")
    finally:
        stop.set()
        writing.join()
    assert private(sync, "store").check()  # the index of messages.room equals its rows
    m.settle(sync)
    assert m.table("messages") == selected(sync, "messages", in_room("r7"))
    print("\n%d writes raced the first load of a room over %d rows" % (len(moved), count))


def test_a_mirror_carries_on_across_a_server_restart(connection, make_server, make_raw):
    """A reload while offline: a durable store keeps its epoch, so the cursor stays good and the
    changes made after the restart bring the mirror level; the memory store's new epoch resets the set."""
    one = make_server(start=False, db_connection_string=connection, secret=b"k" * 32)
    chat(one)
    one.start()
    fill(one, ["lobby", "dev", "lobby", "dev"])
    m = Mirror(make_raw(one), {"l": room_sub("lobby"), "b": room_sub(["lobby", "dev"])})
    m.reset()
    epoch = m.cursor["epoch"]
    one.stop()
    two = make_server(start=False, db_connection_string=connection, secret=b"k" * 32)
    chat(two)
    two.start()
    if connection is None:
        fill(two, ["lobby", "dev", "ops"])
    two.sync("messages", "m0", {"room": "dev"})  # leaves l, stays in b
    two.sync("messages", "m2", {"room": "ops"})  # leaves both
    two.sync("messages", "m9", {"room": "lobby"})  # new, in both
    m.raw.close()
    m.raw = make_raw(two)
    answer = m.ask(since=m.cursor, wait=0)
    if connection is None:
        assert answer["reset"] is True and answer["epoch"] != epoch, "a new memory store: a full reset of the set"
        m.reset()
    else:
        assert answer["epoch"] == epoch and "reset" not in answer, answer
        m.apply(answer)
    m.settle(two)
    assert {k for _, k in m.table("messages")} == {k for _, k in selected(two, "messages", in_room("lobby", "dev"))}
    assert m.table("messages") == selected(two, "messages", in_room("lobby", "dev"))
    assert m.member.get(("messages", "m0")) == {"b"} and m.member.get(("messages", "m9")) == {"b", "l"}
    assert private(two, "store").check()


# =============================================================================
# A randomised run: many clients, many changes, every mirror equal to its selection
# =============================================================================


def random_change(sync, rng, keys, rooms, removals):
    """One change to one of messages m0..m<keys-1>: removed (a ``removals`` share of the
    time), moved to a room of ``rooms`` (the next 45 %), or given a new ``n``."""
    key = "m%d" % rng.randrange(keys)
    roll = rng.random()
    if roll < removals:
        sync.remove("messages", key)
    elif roll < removals + 0.45:
        sync.sync("messages", key, {"room": rng.choice(rooms)})
    else:
        sync.sync("messages", key, {"n": rng.randrange(60)})


@pytest.mark.parametrize("page_size", [5000, 7])  # 7: clients fall more than a page behind and get resets
def test_random_changes_keep_every_mirror_equal_to_what_it_selects(server, make_raw, page_size):
    import random
    rng = random.Random(16)
    sync = server(page_size=page_size)
    rooms = ["a", "b", "c", "d"]
    fill(sync, [rng.choice(rooms) for _ in range(40)])
    cases = [({"x": room_sub("a")}, in_room("a")),
             ({"x": room_sub("b"), "y": room_sub(["b", "c"])}, in_room("b", "c")),
             ({"h": {"name": "hot", "params": {"n": 30}}},
              lambda k, r: isinstance(r.get("n"), int) and r["n"] >= 30),
             ({"k": {"name": "keys", "params": {"ids": ["m%d" % i for i in range(0, 60, 3)]}}},
              lambda k, r: k in {"m%d" % i for i in range(0, 60, 3)})]
    mirrors = [(Mirror(make_raw(sync), subs), want) for subs, want in cases]
    for m, _ in mirrors:
        m.reset()
        m.expect_reset = page_size < 300
    for step in range(300):
        random_change(sync, rng, 60, rooms + ["e"], removals=0.15)
        if step % 37 == 0:
            m, _ = mirrors[step % len(mirrors)]
            m.pull()
    for m, want in mirrors:
        m.settle(sync)
        assert m.table("messages") == selected(sync, "messages", want), m.subs
    if page_size < 300:
        assert any(m.resets > 1 for m, _ in mirrors), "no client fell a page behind: the case did not run"


def test_random_changes_between_the_pages_of_large_selections(server, make_raw):
    """Resets of large selections (the store's kept lists) paged a step at a time while rows
    move between rooms, change and go: lists built, shared by later resets with the log
    since, built again, pushed out by max_selected and dropped when idle.  Every mirror
    ends equal to what it selects, and the store's invariants hold throughout."""
    import random
    rng = random.Random(7)
    sync = server(page_size=7)
    rooms = ["r%d" % i for i in range(12)]
    fill(sync, [rooms[i % 12] for i in range(480)])
    store = private(sync, "store")
    store.page_scan, store.max_selected = 20, 150
    walking, done = [], []
    for step in range(600):
        random_change(sync, rng, 500, rooms, removals=0.1)
        if step % 9 == 0:
            room = rng.choice(rooms[:4])
            m = Mirror(make_raw(sync), {"r": room_sub(room)})
            walking.append((m, [m.ask(since=None, wait=0)], room))
        if step % 101 == 0:
            store.selection_idle = 0 if step % 202 == 0 else 60.0
        for m, pages, room in list(walking):
            if rng.random() < 0.3:
                if pages[-1]["more"]:
                    pages.append(m.next_page(pages[-1]))
                else:
                    m.adopt(pages)
                    walking.remove((m, pages, room))
                    done.append((m, room))
        if step % 50 == 0:
            assert store.check()
    for m, pages, room in walking:
        while pages[-1]["more"]:
            pages.append(m.next_page(pages[-1]))
        m.adopt(pages)
        done.append((m, room))
    assert len(done) > 60
    for m, room in done:
        m.expect_reset = True
        m.settle(sync)
        assert m.table("messages") == selected(sync, "messages", in_room(room)), room
    assert store.check()


# =============================================================================
# PostgreSQL: a change on another node
# =============================================================================


def test_a_change_on_another_postgres_node_reaches_a_subscription(cluster, make_server, make_raw):
    url = cluster.create_database()
    one = make_server(start=False, db_connection_string=url)
    chat(one)
    one.start()
    two = make_server(start=False, db_connection_string=url)
    chat(two)
    two.start()
    fill(one, ["lobby", "dev"])
    m = Mirror(make_raw(one), {"l": room_sub("lobby")})
    wait_until(lambda: one.stats()["seq"] == two.stats()["seq"] == 4, 10, "both nodes level")
    m.reset()
    result = m.long_poll(25)
    parked(one)
    two.sync("messages", "m1", {"text": "dev, on node two"})
    time.sleep(0.5)
    assert one.stats()["waiting"] == 1, "a change on node two to another room answered node one's pull"
    began = time.monotonic()
    two.sync("messages", "m0", {"text": "lobby, on node two"})
    answer, _ = result()
    print("\na change on node two reached node one's subscription long-poll in %.0f ms"
          % ((time.monotonic() - began) * 1000))
    assert answer["changes"] == [["messages", "m0", {"room": "lobby", "n": 0, "text": "lobby, on node two"}, ["l"]]]
    two.remove("messages", "m0")
    wait_until(lambda: one.stats()["seq"] == two.stats()["seq"], 10, "node one caught up")
    assert m.pull()["changes"] == [["messages", "m0", None, []]]
    assert private(one, "store").check() and private(two, "store").check()


def test_reset_pages_served_by_alternate_postgres_nodes_make_one_snapshot(cluster, make_server, make_raw):
    url = cluster.create_database()
    one = make_server(start=False, db_connection_string=url, page_size=2)
    chat(one)
    one.start()
    two = make_server(start=False, db_connection_string=url, page_size=2)
    chat(two)
    two.start()
    fill(one, ["lobby", "dev"] * 4)
    at = [make_raw(one), make_raw(two, one.get_token())]  # one token, two nodes: a round-robin proxy's view
    subs = {"a": room_sub("lobby"), "b": room_sub("dev")}
    pages, n = [], 0
    one.sync("messages", "late", {"room": "lobby"})  # node two may not have it yet when it serves a page
    page = at[0].ok("pull", since=None, subs=subs, wait=0)
    while True:
        pages.append(page)
        assert page["seq"] == pages[0]["seq"], "every page of one reset is of one snapshot"
        if not page["more"]:
            break
        n += 1
        page = at[n % 2].ok("pull", since=None, subs=subs, next=page["next"], wait=0)
    got = {}
    for p in pages:
        for k in p["records"].get("messages", {}):
            got.setdefault(p["sub"], set()).add(k)
    assert got["a"] == {k for (_, k) in selected(one, "messages", in_room("lobby"))}
    assert got["b"] == {k for (_, k) in selected(one, "messages", in_room("dev"))}
    assert len(pages) >= 6


# =============================================================================
# The big table: a subscription to 1,000 of its rows
# =============================================================================


class CountingRaw(Raw):
    """A Raw that counts the bytes of every answer body it reads (``received``)."""

    received = 0

    def post(self, path, body, headers=None):
        status, data = Raw.post(self, path, body, headers)
        self.received += len(data)
        return status, data


def _big_table(make_server, make_raw, count):
    per_room = 1000
    sync = make_server(start=False)
    chat(sync)
    sync.start()
    began = time.monotonic()
    text = "x" * 120
    with sync.batch():
        for i in range(count):
            sync.sync("messages", "m%07d" % i, {"room": "r%d" % (i % (count // per_room)), "n": i, "text": text})
    filled = time.monotonic() - began
    lines = ["=" * 78, "subscription to %d of %d rows (memory store, fill %.1f s)" % (per_room, count, filled)]

    whole = CountingRaw(sync)
    try:
        began = time.monotonic()
        rows = [0]
        whole.reset(on_page=lambda page: rows.__setitem__(0, rows[0] + len(page["records"]["messages"])))
        whole_s, whole_bytes = time.monotonic() - began, whole.received
    finally:
        whole.close()
    assert rows[0] == count

    raw = CountingRaw(sync)
    try:
        m = Mirror(raw, {"r": room_sub("r7")})
        stalls, loading = [], threading.Event()
        loading.set()

        def writer():  # how long a write waits while the first load builds the room index
            while loading.is_set():
                t = time.monotonic()
                sync.sync("audit", "w", {"t": t})
                stalls.append(time.monotonic() - t)
                time.sleep(0.001)
        writing = threading.Thread(target=writer, daemon=True)
        writing.start()
        began = time.monotonic()
        m.reset()
        sub_s, sub_bytes = time.monotonic() - began, raw.received
        loading.clear()
        writing.join()
        assert len(m.table("messages")) == per_room
        assert m.table("messages") == {("messages", "m%07d" % i): {"room": "r7", "n": i, "text": text}
                                       for i in range(7, count, count // per_room)}
        lines.append("  first load: subscription %.3f s (its index built on this first use), %d bytes; "
                     "whole table %.2f s, %d bytes (%.2f %%)"
                     % (sub_s, sub_bytes, whole_s, whole_bytes, 100.0 * sub_bytes / whole_bytes))
        lines.append("  writes during that first load: %d sync() calls, the slowest %.1f ms"
                     % (len(stalls), 1000 * max(stalls or [0])))
        other = Mirror(make_raw(sync), {"r": room_sub("r8")})
        began = time.monotonic()
        other.reset()
        lines.append("  another room's first load, the index already built: %.3f s" % (time.monotonic() - began))
        assert len(other.table("messages")) == per_room
        assert sub_bytes < 0.02 * whole_bytes, "the subscription's pages are not proportional to its 1,000 rows"

        # changes to other rows: the long-poll answers carry nothing
        raw.received = 0
        result = started_pull(raw, since=m.cursor, subs=m.subs, wait=1)
        parked(sync)
        with sync.batch():
            for i in range(0, 2000):
                if i % (count // per_room) != 7:
                    sync.sync("messages", "m%07d" % i, {"text": "other rooms"})
        answer, took = result()
        m.apply(answer)
        assert answer["changes"] == [] and answer["seq"] == sync.stats()["seq"]
        other_bytes = raw.received
        lines.append("  %d changes to other rows: one long-poll answer of %d bytes, no changes (after %.2f s)"
                     % (2000 - 2000 // (count // per_room), other_bytes, took))
        assert other_bytes < 400, "an empty changes answer is a small header, got %d bytes" % other_bytes

        # a change to a subscribed row
        result = started_pull(raw, since=m.cursor, subs=m.subs, wait=25)
        parked(sync)
        began = time.monotonic()
        sync.sync("messages", "m%07d" % (7 + 5 * (count // per_room)), {"text": "in r7"})
        answer, _ = result()
        latency = time.monotonic() - began
        assert [c[1] for c in answer["changes"]] == ["m%07d" % (7 + 5 * (count // per_room))]
        lines.append("  a change to a subscribed row: answered %.1f ms after sync()" % (latency * 1000))

        # a large selection: every 20th message moves to one room, at the end of the log
        with sync.batch():
            for i in range(0, count, 20):
                sync.sync("messages", "m%07d" % i, {"room": "big"})
        big = Mirror(make_raw(sync), {"b": {"name": "value", "params": {"room": "big"}}})
        times = []
        ask = big.ask

        def timed(**fields):
            began = time.monotonic()
            answer = ask(**fields)
            times.append(time.monotonic() - began)
            return answer
        big.ask = timed
        pages = big.reset()
        assert len(big.table("messages")) == count // 20
        full = -(-(count // 20) // 5000)  # pages of page_size (5,000) rows
        lines.append("  a selection of %d rows (5 %%): %d pages (%d full ones would do), %.3f s, the longest page %.0f ms"
                     % (count // 20, len(pages), full, sum(times), 1000 * max(times)))
        assert len(pages) == full, "a large selection comes in full pages, not one per page_scan log slots"
    finally:
        raw.close()
    assert private(sync, "store").check() if count <= 100000 else True
    print("\n" + "\n".join(lines + ["=" * 78]))


def test_a_subscription_to_1000_rows_of_100000_rows(make_server, make_raw):
    _big_table(make_server, make_raw, 100000)


@pytest.mark.slow
def test_a_subscription_to_1000_rows_of_1000000_rows(make_server, make_raw):
    _big_table(make_server, make_raw, 1000000)


def test_the_subscription_benchmark_runs_and_each_change_reaches_its_one_room():
    """bench/subs_bench.py, small: it prints its table, and in `subs` mode every change reached
    exactly the client of its room (nothing is timed here)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, os.path.join(here, "bench", "subs_bench.py"), "--clients", "20",
                          "--rate", "50", "--duration", "1"], capture_output=True, text=True, timeout=120, cwd=here)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| subs: 1 room each " in out.stdout and "| whole table (W1) " in out.stdout, out.stdout
    subs, whole = json.loads(out.stdout.strip().splitlines()[-1])
    assert subs["wrong_room"] == 0 and subs["deliveries"] == subs["produced"] == 50, subs
    assert whole["deliveries"] == 20 * whole["produced"], whole
    assert subs["bytes_per_change"] < whole["bytes_per_change"] / 5
