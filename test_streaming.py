"""Streamed pulls (README "Streamed pulls"): many sealed answers down one chunked response."""

import threading
import time

import pytest

import dsn_sync
from conftest import private


@pytest.fixture
def server(make_server):
    sync = make_server(start=False)
    sync.define_table("t", {"key": "id", "fields": None})
    sync.start()
    return sync


def test_a_streamed_pull_carries_every_change_then_ends_and_the_connection_carries_on(server, make_raw):
    c = make_raw(server)
    hello = c.hello()
    cursor = {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}
    c.start("pull", since=cursor, wait=2, stream=True)
    time.sleep(0.1)
    server.sync("t", "a", {"n": 1})
    status, headers = c.head()
    assert status == 200 and headers["content-type"] == dsn_sync.STREAM_TYPE
    assert headers["transfer-encoding"] == "chunked" and headers["access-control-allow-origin"] == "*"
    seen, index = {}, 0
    first = c.message(0)
    assert first["ok"] and first["changes"] == [["t", "a", {"n": 1}]]
    seq = first["seq"]
    for n in range(2, 5):
        server.sync("t", "a", {"n": n})
        server.sync("t", "b%d" % n, {"n": n})
    while True:
        index += 1
        message = c.message(index)
        if message is None:
            break
        assert message["seq"] > seq, "cursor moves forward message by message"
        seq = message["seq"]
        for table, key, record in message["changes"]:
            seen[key] = record
    assert seen["a"] == {"n": 4} and seen["b4"] == {"n": 4} and seq == server.stats()["seq"]
    # the stream ended with its wait; the same connection serves the next request
    assert c.ok("pull", since={"epoch": hello["epoch"], "seq": seq, "sv": hello["sv"]}, wait=0)["changes"] == []


def test_a_stream_with_nothing_to_say_ends_as_a_plain_empty_answer(server, make_raw):
    c = make_raw(server)
    hello = c.hello()
    c.start("pull", since={"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}, wait=0.5, stream=True)
    status, headers = c.head()
    assert status == 200 and "content-length" in headers
    assert c.whole(headers)["changes"] == []


def test_a_stream_with_changes_already_waiting_is_answered_plainly(server, make_raw):
    c = make_raw(server)
    hello = c.hello()
    server.sync("t", "x", {"v": 1})
    c.start("pull", since={"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}, wait=5, stream=True)
    status, headers = c.head()
    assert "content-length" in headers and c.whole(headers)["changes"] == [["t", "x", {"v": 1}]]


def test_a_departed_stream_client_does_not_stop_the_others(server, make_raw):
    gone, stays = make_raw(server), make_raw(server)
    for c in (gone, stays):
        hello = c.hello()
        c.start("pull", since={"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}, wait=3, stream=True)
    time.sleep(0.1)
    gone.close()
    server.sync("t", "k", {"v": 1})
    server.sync("t", "k", {"v": 2})
    status, headers = stays.head()
    assert status == 200
    got = {}
    index = 0
    while True:
        message = stays.message(index)
        if message is None:
            break
        index += 1
        got.update({k: r for _, k, r in message["changes"]})
    assert got["k"] == {"v": 2}


def test_stream_messages_are_spaced_and_coalesced_to_the_latest_state(server, monkeypatch, make_raw):
    monkeypatch.setattr(private(server, "feed"), "stream_spacing", 0.1)  # 0.1 s per parked pull: one pull here
    c = make_raw(server)
    hello = c.hello()
    c.start("pull", since={"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}, wait=1.5, stream=True)
    time.sleep(0.1)
    for n in range(40):  # 40 changes in about 0.4 s
        server.sync("t", "hot", {"n": n})
        time.sleep(0.01)
    c.head()
    messages, index, last = 0, 0, None
    while True:
        message = c.message(index)
        if message is None:
            break
        index += 1
        messages += 1
        for _, key, record in message["changes"]:
            last = record
    assert last == {"n": 39}, "the stream ends on the latest state"
    assert messages <= 8, "40 changes spaced at 0.1 s come as a few coalesced messages, got %d" % messages


def test_streams_that_one_write_made_ready_together_spread_over_the_next_round(server, monkeypatch, make_raw):
    # Ten streams at 20 ms per parked pull: a round of 0.2 s. The first write readies all ten in
    # one pass; after that each stream keeps its own phase of the round, so messages go out a
    # few at a time all through it instead of ten at once every 0.2 s (the last one waiting for
    # the other nine, and every new value waiting up to a round for the next burst). A quiet
    # spell longer than a round readies them all at once again, and they spread again.
    monkeypatch.setattr(private(server, "feed"), "stream_spacing", 0.02)
    clients = [make_raw(server) for _ in range(10)]
    arrivals = {id(c): [] for c in clients}

    def read(c):
        c.head()
        index = 0
        while c.message(index) is not None:
            arrivals[id(c)].append(time.monotonic())
            index += 1

    for c in clients:
        hello = c.hello()
        c.start("pull", since={"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}, wait=3.5, stream=True)
    time.sleep(0.2)
    readers = [threading.Thread(target=read, args=(c,)) for c in clients]
    for t in readers:
        t.start()
    t0 = time.monotonic()
    n = 0
    for start, end in ((0, 1.2), (1.7, 3.0)):  # a change every 10 ms: every stream always has news
        while time.monotonic() < t0 + start:
            time.sleep(0.01)
        while time.monotonic() < t0 + end:
            server.sync("t", "hot", {"n": n})
            n += 1
            time.sleep(0.01)
    for t in readers:
        t.join(5)
    assert not any(t.is_alive() for t in readers), "every stream ends with its wait"
    assert all(arrivals.values())
    for start, end in ((0.4, 1.2), (2.1, 2.9)):  # a round after each first write, to its last
        steady = sorted(a for times in arrivals.values() for a in times if t0 + start <= a <= t0 + end)
        gaps = [b - a for a, b in zip(steady, steady[1:])]
        assert len(steady) > 10
        assert max(gaps) < 0.1, "messages bunch up: %.0f ms without one in a round of 200 ms" % (
            1000 * max(gaps))
        for times in arrivals.values():
            mine = [a for a in times if t0 + start <= a <= t0 + end]
            assert 2 <= len(mine) <= 6, "about one message per 0.2 s round in 0.8 s, got %d" % len(mine)
