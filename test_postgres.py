"""PostgresStore against a real, throwaway PostgreSQL cluster: several nodes on one database.

The cluster is started once for the session by test/pg_cluster.py (initdb in a temp
folder, 127.0.0.1, a free port) and every test gets a fresh database.  Each
PostgresStore opened in a test is a node; several in one process share the database
exactly as processes on different hosts would (each has its own connections and
listener).  Without PostgreSQL binaries or psycopg the tests skip, loudly, and fail
when the CI environment variable is set.  Figures (wake-up latency, writes/s) are
printed, never asserted beyond generous bounds: run with -s to see them.
"""

import json
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "test"))

import dsn_sync  # noqa: E402
from dsn_sync import DSNError, DSNSync, PostgresStore, StoreError  # noqa: E402
from conftest import tail_seqs, wait_until  # noqa: E402

SPEC = {"key": "id", "fields": None}


@pytest.fixture
def url(cluster):
    return cluster.create_database()


@pytest.fixture
def nodes(url):
    """open(name=None) -> a started node on the test's database; every node is checked and closed after."""
    opened = []

    def open_node(name=None, **attrs):
        node_url = url + ("?application_name=" + name if name else "")
        store = PostgresStore(node_url)
        for k, v in attrs.items():
            setattr(store, k, v)
        opened.append(store.open())
        return store

    yield open_node
    try:
        for store in opened:
            if store._pool is not None:
                assert store.check()
    finally:
        for store in opened:
            store.close()


def sql(url, query, args=()):
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else None


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


# -----------------------------------------------------------------------------
# Feed across nodes
# -----------------------------------------------------------------------------

def test_a_change_on_one_node_wakes_the_others(nodes):
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    a.set_table("t", SPEC)
    wait_until(lambda: "t" in b.tables and "t" in c.tables, 10, what="the schema on b and c")
    seen = {}  # seq -> perf_counter() when b's `changed` woke with it
    stop = threading.Event()

    def watch():
        with b.lock:
            while not stop.is_set():
                seen.setdefault(b.seq, time.perf_counter())
                b.changed.wait(0.5)

    watcher = threading.Thread(target=watch)
    watcher.start()
    latencies = []
    try:
        for i in range(300):
            t0 = time.perf_counter()
            seq, _ = a.apply("t", "k%d" % (i % 50), "upsert", {"n": i})
            wait_until(lambda: seq in seen, 10, "seq %d on node b" % seq)
            latencies.append(seen[seq] - t0)
    finally:
        stop.set()
        with b.lock:
            b.changed.notify_all()
        watcher.join()
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print("\ncross-node wake-up, apply() on a to `changed` on b, 300 changes: p50 %.2f ms, p99 %.2f ms" % (p50, p99))
    assert p99 < 2000, "a change took %.0f ms to reach another node" % p99
    wait_until(lambda: c.seq == a.seq, 10, what="node c level with a")
    changes, cursor = c.changes_since(0, 1000)
    assert cursor == a.seq and len(changes) == 50
    assert json.loads(changes[-1]) == ["t", "k49", {"n": 299}]
    assert b.get_all("t") == a.get_all("t") == c.get_all("t")


def test_commit_order_with_concurrent_writers_on_three_nodes(nodes, url):
    """Every seq a reader meets comes after every seq it met before: no late commit below the cursor."""
    stores = [nodes("w%d" % i) for i in range(3)]
    stores[0].set_table("t", SPEC)
    for s in stores:
        s.catch_up()
    per_thread, threads_per_node = 300, 2
    total = per_thread * threads_per_node * len(stores)
    acked = []
    errors = []
    stop = threading.Event()
    gaps = []
    db_seen = []

    def write(store, tid):
        try:
            for i in range(per_thread):
                seq, _ = store.apply("t", "%d-%d" % (tid, i), "create", {"tid": tid, "i": i})
                acked.append(seq)
        except Exception as e:  # reported below: a thread's exception would vanish otherwise
            errors.append(e)

    def tail_memory(store):
        """A node's log is always 1..n: it never holds a seq whose predecessor it lacks."""
        while not stop.is_set():
            with store.lock:
                seqs = store._log_seq
                if seqs and seqs[-1] != len(seqs):
                    gaps.append(("memory", len(seqs), seqs[-1]))
            time.sleep(0.001)

    def tail_feed(store, got):
        cursor = 0
        while True:
            done = stop.is_set()
            changes, cursor = store.changes_since(cursor, 500)
            got.extend(changes)
            if done and cursor == store.seq:
                return
            with store.lock:
                if store.seq == cursor and not stop.is_set():
                    store.changed.wait(0.2)

    feed = []
    readers = [threading.Thread(target=tail_seqs, args=(url, stop, gaps, db_seen)), threading.Thread(target=tail_memory, args=(stores[2],)),
               threading.Thread(target=tail_feed, args=(stores[1], feed))]
    writers = [threading.Thread(target=write, args=(s, n * threads_per_node + k))
               for n, s in enumerate(stores) for k in range(threads_per_node)]
    t0 = time.perf_counter()
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    elapsed = time.perf_counter() - t0
    wait_until(lambda: all(s.seq == total for s in stores), 30, "every node at seq %d" % total)
    stop.set()
    for t in readers:
        t.join()
    print("\n%d creates from %d threads on 3 nodes in %.2f s (%.0f/s)" % (total, len(writers), elapsed, total / elapsed))
    assert not errors, errors[:3]
    assert not gaps, gaps[:5]
    assert sorted(acked) == list(range(1, total + 1))
    assert db_seen == list(range(1, total + 1))
    assert len(feed) == total and len(set(feed)) == total
    for s in stores:
        assert s.count("t") == total


def test_merges_and_deletes_on_shared_keys_replay_serially_in_seq_order(nodes):
    """Writers on 3 nodes race on 8 keys (partial updates, creates, deletes): the final state, and every
    record apply() returned, equal a serial replay of the acknowledged changes in seq order."""
    import random
    stores = [nodes("m%d" % i) for i in range(3)]
    stores[0].set_table("t", SPEC)
    for s in stores:
        s.catch_up()
    log = []  # (seq, key, op, data, returned record)
    errors = []

    def work(store, tid):
        rnd = random.Random(tid)
        try:
            for i in range(250):
                key = "k%d" % rnd.randrange(8)
                op = rnd.choice(("upsert", "upsert", "upsert", "update", "create", "delete"))
                data = None if op == "delete" else {"f%d" % rnd.randrange(4): "%d-%d" % (tid, i)}
                try:
                    seq, record = store.apply("t", key, op, data)
                except (dsn_sync.NotFound, dsn_sync.Exists):
                    continue
                log.append((seq, key, op, data, record))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s, n * 2 + k)) for n, s in enumerate(stores) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    log.sort(key=lambda x: x[0])
    assert [x[0] for x in log] == list(range(1, len(log) + 1)), "a seq was handed out twice or lost"
    state = {}
    for seq, key, op, data, record in log:
        if op == "delete":
            assert key in state, "seq %d deleted %s, absent in the serial replay" % (seq, key)
            del state[key]
        else:
            assert not (op == "create" and key in state), "seq %d created %s over a record" % (seq, key)
            assert not (op == "update" and key not in state), "seq %d updated a missing %s" % (seq, key)
            state[key] = dict(state.get(key, {}), **data)
            assert record == state[key], "seq %d returned %r, the replay says %r" % (seq, record, state[key])
    for s in stores:
        s.catch_up()
        assert s.get_all("t") == state


def test_readers_catching_up_never_starve_a_writer_of_connections(nodes):
    """exists() catches up on a pooled connection; a writer holds the store lock while it takes one."""
    a, b = nodes("a", pool_size=2), nodes("b")
    a.set_table("t", SPEC)
    stop = threading.Event()
    errors = []

    def read():
        while not stop.is_set():
            try:
                a.exists("t", "k1")
            except Exception as e:
                errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(8)]
    for t in readers:
        t.start()
    try:
        t0 = time.monotonic()
        for i in range(200):
            (a if i % 2 else b).apply("t", "k%d" % (i % 5), "upsert", {"i": i})
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors[:3]
    assert elapsed < 30, "200 writes took %.0f s beside 8 readers" % elapsed


# -----------------------------------------------------------------------------
# Shared ledger, revocations, nonces, leadership, schema
# -----------------------------------------------------------------------------

def test_the_mid_ledger_is_shared(nodes):
    a, b = nodes("a"), nodes("b")
    a.set_table("t", SPEC)
    seq, record = a.apply("t", "k", "create", {"v": 1}, ledger=("jti1", "m1"))
    assert b.recall("jti1", "m1") == {"ok": True, "epoch": a.epoch, "seq": seq, "record": {"v": 1}}
    # The same create retried on b is answered from the ledger, not refused as `exists` nor applied again.
    assert b.catch_up() == seq and b.exists("t", "k")
    assert b.apply("t", "k", "create", {"v": 1}, ledger=("jti1", "m1")) == (seq, {"v": 1})
    assert b.catch_up() == seq
    # An error answer remembered on a is the answer on b too.
    a.remember("jti1", "m2", {"ok": False, "error": {"code": "rejected", "message": "no"}})
    with pytest.raises(DSNError) as e:
        b.apply("t", "k2", "create", {"v": 2}, ledger=("jti1", "m2"))
    assert e.value.code == "rejected" and b.get("t", "k2") is None
    # A first answer is never replaced.
    b.remember("jti1", "m1", {"ok": False, "error": {"code": "rejected", "message": "late"}})
    assert a.recall("jti1", "m1")["ok"] is True
    # The same mid raced on two nodes: applied once.
    results, start = [], threading.Barrier(2)

    def race(store):
        start.wait()
        results.append(store.apply("t", "raced", "upsert", {"n": 1}, ledger=("jti1", "m3")))

    threads = [threading.Thread(target=race, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert sql(a.url, "SELECT count(*) FROM dsn_counter WHERE seq = %s", (results[0][0],)) == [(1,)]


def test_a_hold_is_cluster_wide_and_its_wait_is_bounded(nodes):
    """hold(name) on one node makes the same name wait on every node; other names and kinds do not."""
    a, b, c = nodes("a"), nodes("b", lock_timeout=1), nodes("c")
    got = threading.Event()

    def take_on_c():
        with c.hold(("key", "t", "k")):
            got.set()

    with a.hold(("key", "t", "k")):
        with b.hold(("mid", "t", "k")), b.hold(("key", "t", "other")):
            pass  # another name, and the same words under another kind: free
        with pytest.raises(StoreError, match=r"key hold of t/k"):
            with b.hold(("key", "t", "k")):
                pass
        waiter = threading.Thread(target=take_on_c)
        waiter.start()
        time.sleep(0.5)
        assert not got.is_set(), "node c took a name that node a holds"
    waiter.join(10)
    assert got.is_set(), "node c never got the name after node a let it go"
    with b.hold(("key", "t", "k")):  # the refused wait gave back b's connection and its own lock
        pass


def test_a_writer_inside_its_holds_still_gets_a_connection_to_apply(nodes):
    """A thread's mid and key holds share one connection of their own pool: with one connection in
    each pool, the write under both holds still recalls and applies (no wait for a connection)."""
    a = nodes("a", pool_size=1, hold_pool_size=1)
    a.set_table("t", SPEC)
    with a.hold(("mid", "jti1", "m1")):
        assert a.recall("jti1", "m1") is None
        with a.hold(("key", "t", "k")):
            assert not a.exists("t", "k")
            seq, _ = a.apply("t", "k", "create", {"v": 1}, ledger=("jti1", "m1"))
    assert a.recall("jti1", "m1")["seq"] == seq
    held = sql(a.url, "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = database "
                      "WHERE locktype = 'advisory' AND d.datname = current_database()")
    assert held == [(0,)], "a hold outlived its with"


def test_writes_queued_behind_one_users_slow_key_leave_the_hold_connections_to_others(url):
    """An attack run: one user's concurrent updates of their own row, behind a slow handler, each
    leased a hold connection (for the mid) before waiting for the key on this node, so with the
    pool used up another user's write waited lock_timeout and got 503.  The key's lock on this
    node now comes first: the queued writes hold no connection, and the other write goes through."""
    from conftest import Raw
    store = PostgresStore(url)
    store.hold_pool_size = 2
    sync = DSNSync(port=0, store=store)
    entered, release = threading.Event(), threading.Event()
    raws, writers = [], []
    try:
        sync.define_table("notes", SPEC)

        @sync.on_update("notes")
        def slow(data):
            if data["id"] == "mallory":
                entered.set()
                release.wait(30)
            return True
        sync.sync("notes", "mallory", {"v": 0})
        sync.sync("notes", "alice", {"v": 0})
        sync.start()
        mallory = sync.issue_token(sub="mallory", write=("notes",))
        alice = Raw(sync.get_url(), sync.issue_token(sub="alice", write=("notes",)))
        raws.append(alice)
        answers = []
        for i in range(4):
            raw = Raw(sync.get_url(), mallory)
            raws.append(raw)
            writers.append(threading.Thread(target=lambda raw=raw, i=i: answers.append(
                raw.call("update", table="notes", key="mallory", data={"v": i}, mid="m%d" % i))))
            writers[-1].start()
        assert entered.wait(10), "mallory's handler never ran"
        time.sleep(0.5)  # the other three reach the key's hold and wait there
        status, answer = alice.call("update", table="notes", key="alice", data={"v": 1}, mid="a1")
        assert status == 200 and answer["ok"], (status, answer)
        # a write the request alone refuses is answered at once, not queued behind mallory's key
        reader = Raw(sync.get_url(), sync.issue_token(sub="reader", write=()))
        raws.append(reader)
        status, answer = reader.call("update", table="notes", key="mallory", data={"v": 9}, mid="r1")
        assert status == 200 and answer["error"]["code"] == "forbidden", (status, answer)
        status, answer = alice.call("update", table="nope", key="mallory", data={"v": 9}, mid="a2")
        assert status == 200 and answer["error"]["code"] == "forbidden", (status, answer)  # rights come first
        assert not release.is_set() and len(answers) == 0, "alice's write went through while mallory's queue waited"
        release.set()
        for writer in writers:
            writer.join(20)
        assert sorted(a[0] for a in answers) == [200] * 4, answers
    finally:
        release.set()
        for raw in raws:
            raw.close()
        sync.stop()


def test_a_write_waiting_too_long_for_its_key_is_a_503_not_remembered(url):
    """Node one's handler holds key n; a write of n on node two waits lock_timeout, is answered 503 and
    remembered nowhere, so the client's retry with the same mid is applied once one has finished."""
    from conftest import Raw
    slow = PostgresStore(url)
    quick = PostgresStore(url)
    quick.lock_timeout = 1
    one, two = DSNSync(port=0, store=slow), DSNSync(port=0, store=quick)
    entered, release = threading.Event(), threading.Event()
    raws = []
    try:
        one.define_table("notes", SPEC)

        @one.on_update("notes")
        def held(data):
            entered.set()
            release.wait(20)
            return True

        two.on_update("notes")(lambda data: True)
        one.sync("notes", "n", {"v": 0})
        one.start()
        two.start()
        token = one.issue_token(sub="u1", write=("notes",))
        raws = [Raw(one.get_url(), token), Raw(two.get_url(), token)]
        first = []
        writer = threading.Thread(target=lambda: first.append(
            raws[0].call("update", table="notes", key="n", data={"v": 1}, mid="m1")))
        writer.start()
        assert entered.wait(10), "node one's handler never ran"
        status, _ = raws[1].call("update", table="notes", key="n", data={"v": 2}, mid="m2")
        assert status == 503
        release.set()
        writer.join(10)
        assert first[0][0] == 200 and first[0][1]["ok"], first
        status, answer = raws[1].call("update", table="notes", key="n", data={"v": 2}, mid="m2")
        assert status == 200 and answer["ok"] and answer["seq"] > first[0][1]["seq"], answer
        wait_until(lambda: one.get("notes", "n") == {"v": 2}, 10, what="the retried write on node one")
    finally:
        release.set()
        for raw in raws:
            raw.close()
        one.stop()
        two.stop()


def test_revocations_are_shared(nodes):
    a, b = nodes("a"), nodes("b")
    a.revoke("jti-gone", time.time() + 3600)
    wait_until(lambda: "jti-gone" in b.revoked_ids, 10, what="the revocation on b")
    assert "jti-gone" in b.revoked()
    c = nodes("c")  # a node started later loads it
    assert "jti-gone" in c.revoked_ids


def test_nonces_are_shared_and_purged(nodes):
    a, b = nodes("a", purge_interval=0.2), nodes("b")
    far = dsn_sync._now_ms() + 60000
    assert a.remember_nonce(b"\x01" * 24, far) is True
    assert b.remember_nonce(b"\x01" * 24, far) is False
    assert a.remember_nonce(b"\x01" * 24, far) is False
    assert b.remember_nonce(b"\x02" * 24, dsn_sync._now_ms() - 1) is True  # already expired: purged soon
    wait_until(lambda: sql(a.url, "SELECT count(*) FROM dsn_nonces")[0][0] == 1, 10, what="the expired nonce purged")
    assert a.remember_nonce(b"\x02" * 24, far) is True
    n, t0 = 500, time.perf_counter()
    for i in range(n):
        assert a.remember_nonce(os.urandom(24), far)
    print("\nremember_nonce: %.3f ms per request (one INSERT ... ON CONFLICT)" % ((time.perf_counter() - t0) / n * 1000))


def test_one_leader_and_failover(nodes):
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    assert a.try_lead("cleanup") is True
    assert b.try_lead("cleanup") is False and c.try_lead("cleanup") is False
    assert a.try_lead("cleanup") is True  # asked again: still the leader
    assert b.try_lead("report") is True  # another name, another lock
    a.close()
    wait_until(lambda: b.try_lead("cleanup") or c.try_lead("cleanup"), 10, what="a new leader")
    assert [b.try_lead("cleanup"), c.try_lead("cleanup")].count(True) == 1
    leader = b if b.try_lead("cleanup") else c
    # The leader's lock connection killed (its node "died" from PostgreSQL's view): another takes over.
    other = c if leader is b else b
    killed = sql(a.url, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                 (dsn_sync._pg_lock_key("cleanup") & 0xFFFFFFFF,))
    assert killed == [(True,)]
    wait_until(lambda: other.try_lead("cleanup"), 10, what="the lead moving after its connection died")
    assert leader.try_lead("cleanup") is False


def test_schema_is_shared_and_versioned_once(nodes):
    a = nodes("a")
    assert a.set_table("t", SPEC) == 1
    assert a.set_table("u", SPEC) == 2
    b = nodes("b")  # a rolling restart: a new node defines the same tables
    assert b.set_table("t", SPEC) == 2 and b.set_table("u", SPEC) == 2
    changed = {"key": "id", "fields": ["name"]}
    assert b.set_table("t", changed) == 3
    c = nodes("c")  # the next node restarted with the changed schema: no second bump
    assert c.set_table("t", changed) == 3 and c.set_table("u", SPEC) == 3
    wait_until(lambda: a.sv == 3 and a.tables["t"] == changed, 10, what="the new schema on a")
    assert sql(a.url, "SELECT max(sv) FROM dsn_tables") == [(3,)]


# -----------------------------------------------------------------------------
# Faults
# -----------------------------------------------------------------------------

def test_a_killed_listener_catches_up_with_nothing_missed(nodes, url):
    a, b = nodes("a"), nodes("b")
    a.set_table("t", SPEC)
    wait_until(lambda: "t" in b.tables, 10, what="the schema on b")
    for round_ in range(3):
        killed = sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'b'")
        assert killed, "no connection of node b found"
        for i in range(200):
            a.apply("t", "r%d-%d" % (round_, i), "upsert", {"i": i})
        a.apply("t", "r%d-0" % round_, "delete")
        wait_until(lambda: b.seq == a.seq, 15, "node b caught up after its connections were cut")
        assert b.get_all("t") == a.get_all("t")
        assert b.check()
    # Its own writes work again too (the pool reconnects).
    expected = a.seq + 1
    assert b.apply("t", "from-b", "create", {"x": 1})[0] == expected


NODE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import dsn_sync
store = dsn_sync.PostgresStore(sys.argv[2]).open()
store.set_table("t", {"key": "id", "fields": None})
print("lead", store.try_lead("every"), flush=True)
i = 0
while True:
    store.apply("t", "child-%d" % i, "upsert", {"i": i})
    print("ack", i, flush=True)
    i += 1
"""


def test_a_node_sigkilled_mid_write_loses_nothing_acknowledged(nodes, url):
    import signal
    import subprocess
    child = subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, os.path.dirname(os.path.abspath(__file__)), url],
                             stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        assert child.stdout.readline().split() == ["lead", "True"]
        survivor = nodes("survivor")
        assert survivor.try_lead("every") is False
        while len(acked) < 300:
            acked.append(int(child.stdout.readline().split()[1]))
        child.send_signal(signal.SIGKILL)
        acked += [int(line.split()[1]) for line in child.stdout if line.startswith("ack")]
    finally:
        child.kill()
        child.wait()
    wait_until(lambda: survivor.try_lead("every"), 10, what="the lead moving to the surviving node")
    survivor.catch_up()
    for i in acked:
        assert survivor.get("t", "child-%d" % i) == {"i": i}, "acknowledged write %d lost" % i
    seq = survivor.apply("t", "after", "create", {"x": 1})[0]
    assert seq == survivor.seq and survivor.check()


def test_postgresql_restart_mid_writes(nodes, cluster):
    a, b = nodes("a"), nodes("b")
    a.set_table("t", SPEC)
    acked, refused = {}, []
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            try:
                a.apply("t", "k%d" % i, "upsert", {"i": i})
                acked["k%d" % i] = i
            except StoreError as e:
                refused.append(str(e))
                time.sleep(0.01)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acked) >= 100, 10, what="writes before the restart")
        cluster.restart()
        after = len(acked)
        wait_until(lambda: len(acked) >= after + 100, 30, "writes after the restart")
    finally:
        stop.set()
        writer.join()
    print("\nPostgreSQL restart: %d writes acknowledged, %d refused with StoreError" % (len(acked), len(refused)))
    assert refused, "no write was refused while PostgreSQL was down"
    wait_until(lambda: b.seq == a.seq, 15, "node b back in step")
    for store in (a, b):
        store.catch_up()
        for key, i in acked.items():
            assert store.get("t", key) == {"i": i}, "acknowledged %s lost" % key
    on_disk = {k: json.loads(d) for k, d in sql(a.url, "SELECT key, data FROM dsn_records")}
    assert all(on_disk[k] == {"i": i} for k, i in acked.items())


def test_writes_refused_while_postgresql_is_down_reads_go_on(nodes, cluster):
    a = nodes("a")
    a.set_table("t", SPEC)
    a.apply("t", "k", "create", {"v": 1})
    cluster.stop_server("fast")
    try:
        with pytest.raises(StoreError):
            a.apply("t", "k", "update", {"v": 2})
        with pytest.raises(StoreError):
            a.recall("j", "m")
        with pytest.raises(StoreError):
            with dsn_sync._Batch(a):
                a.apply("t", "k2", "create", {"v": 1})
        assert a.get("t", "k") == {"v": 1} and a.get("t", "k2") is None  # memory serves, unchanged
        assert a.changes_since(0, 10)[1] == a.seq == 1
    finally:
        cluster.start()
    wait_until(lambda: _applies(a), 15, "writes working after PostgreSQL is back")
    assert a.get("t", "k") == {"v": 2}


def _applies(store, key="k"):
    try:
        store.apply("t", key, "upsert", {"v": 2} if key == "k" else {"v": 1})
        return True
    except StoreError:
        return False


def test_a_failed_batch_leaves_memory_as_it_was(nodes, url):
    a = nodes("a")
    a.set_table("t", SPEC)
    a.apply("t", "keep", "create", {"v": 1})
    before = (a.seq, a.get_all("t"))
    # The batch's connection is cut before its commit.
    with pytest.raises(StoreError):
        with dsn_sync._Batch(a):
            a.apply("t", "keep", "upsert", {"v": 2})
            a.apply("t", "new", "create", {"v": 3})
            a.apply("t", "gone", "create", {"v": 4})
            a.apply("t", "gone", "delete")
            a.set_table("u", SPEC)
            sql(url, "SELECT pg_terminate_backend(%s)", (a._tx.info.backend_pid,))
    assert (a.seq, a.get_all("t")) == before and "u" not in a.tables and a.sv == 1
    with pytest.raises(dsn_sync.Invalid):
        a.apply("t", "nul\x00key", "create", {"v": 1})
    assert a.check()
    assert a.apply("t", "new", "create", {"v": 3})[0] == before[0] + 1


def test_a_stalled_batch_cannot_hold_every_node_for_ever(nodes):
    a, b = nodes("a", tx_idle_timeout=4), nodes("b", lock_timeout=1)
    a.set_table("t", SPEC)
    b.catch_up()
    a.begin_batch()  # a holds the counter, then stalls
    started = time.monotonic()
    try:
        a.apply("t", "held", "create", {"v": 1})
        with pytest.raises(StoreError):
            b.apply("t", "waiting", "create", {"v": 1})  # waited lock_timeout, then refused
        assert time.monotonic() - started < 4, "too slow a machine to see the wait"
        # Past a's tx_idle_timeout PostgreSQL ends a's transaction, and b's writes go through.
        wait_until(lambda: _applies(b, "waiting"), 20, "b writing once a's transaction is ended")
        assert b.get("t", "waiting") == {"v": 1}
    finally:
        with pytest.raises(StoreError):
            a.end_batch()
    assert a.get("t", "held") is None
    a.catch_up()
    assert a.get_all("t") == {"waiting": {"v": 1}}


def test_a_newer_store_format_is_refused_untouched(nodes, url):
    a = nodes("a")
    a.set_table("t", SPEC)
    a.apply("t", "k", "create", {"v": 1})
    a.close()
    sql(url, "UPDATE dsn_meta SET v = '99' WHERE k = 'format'")
    snapshot = [sql(url, "SELECT * FROM %s ORDER BY 1" % t) for t in ("dsn_meta", "dsn_records", "dsn_tables", "dsn_counter")]
    with pytest.raises(StoreError, match="newer dsn-sync.*format 99"):
        PostgresStore(url).open()
    assert snapshot == [sql(url, "SELECT * FROM %s ORDER BY 1" % t) for t in ("dsn_meta", "dsn_records", "dsn_tables", "dsn_counter")]


def test_a_foreign_dsn_meta_is_refused(url):
    sql(url, "CREATE TABLE dsn_meta (k text, v text)")
    with pytest.raises(StoreError, match="not dsn-sync's"):
        PostgresStore(url).open()


def test_compaction_moves_the_shared_floor(nodes):
    a, b = nodes("a"), nodes("b")
    a.max_tombstones = 20
    a.set_table("t", SPEC)
    for i in range(30):
        a.apply("t", "k%d" % i, "create", {"i": i})
    for i in range(30):
        a.apply("t", "k%d" % i, "delete")
    assert a.floor > 0 and a._tombstones <= 20
    wait_until(lambda: b.floor == a.floor and b.seq == a.seq, 10, what="the floor on b")
    assert b.needs_reset({"epoch": b.epoch, "seq": 1, "sv": b.sv})
    assert not b.needs_reset({"epoch": b.epoch, "seq": b.seq, "sv": b.sv})
    assert a.check() and b.check()
    # A node that was closed below the new floor reloads instead of patching the gap.
    b.close()
    for i in range(30, 70):
        a.apply("t", "k%d" % i, "create", {"i": i})
        a.apply("t", "k%d" % i, "delete")
    b.open()
    assert b.floor == a.floor and b.get_all("t") == {}


def test_a_cursor_from_a_node_ahead_is_not_reset(nodes):
    a, b = nodes("a", safety_interval=60), nodes("b", safety_interval=60)
    a.set_table("t", SPEC)
    b.catch_up()
    b._stop.set()  # b's listener stops: b lags until asked
    b._tailer.join()
    seq, _ = a.apply("t", "k", "create", {"v": 1})
    assert b.seq < seq
    assert not b.needs_reset({"epoch": a.epoch, "seq": seq, "sv": a.sv})
    assert b.seq == seq


@pytest.fixture
def lagging_pair(url):
    """Two started nodes on one database, ``(one, two, stop_listening)``: ``stop_listening()`` stops
    node two's listener after it caught up, so it lags until something asks it to catch up."""
    one = DSNSync(port=0, store=PostgresStore(url))
    lagging = PostgresStore(url)
    lagging.safety_interval = 60
    two = DSNSync(port=0, store=lagging)

    def stop_listening():
        lagging.catch_up()
        lagging._stop.set()
        lagging._tailer.join()
    try:
        yield one, two, stop_listening
    finally:
        one.stop()
        two.stop()


def test_a_first_visit_on_a_lagging_node_sees_every_write_answered_before_it_asked(lagging_pair, make_raw):
    """A CI run: right after a client had every write, fresh pulls on the two workers of one
    app disagreed: the node whose listener had not caught up yet handed out a reset without the
    newest rows.  A reset's first page now reads what other nodes committed first."""
    one, two, stop_listening = lagging_pair
    one.define_table("notes", SPEC)
    one.sync("notes", "n0", {"v": 0})
    one.start()
    two.start()
    two.subscription("all")(lambda ctx, params: {"notes": True})
    stop_listening()
    one.sync("notes", "n1", {"v": 1})
    assert two._store.seq < one.stats()["seq"]
    raw = make_raw(two, two.issue_token(sub="u1"))
    page = raw.ok("pull", since=None, wait=0)
    assert set(page["records"]["notes"]) == {"n0", "n1"}, page["records"]
    one.sync("notes", "n2", {"v": 2})
    page = raw.ok("pull", since=None, subs={"a": {"name": "all", "params": {}}}, wait=0)
    assert set(page["records"]["notes"]) == {"n0", "n1", "n2"}, page["records"]


def test_a_node_that_caught_up_past_a_rows_middle_state_still_tells_its_departure(lagging_pair, make_raw):
    """Review: PostgreSQL keeps a key's latest state only, so a node that caught up two changes of a
    row in one step knew nothing of the middle one; a client whose cursor lay between them (served
    by the other node) held the row through a subscription, yet got no departure when it left."""
    one, two, stop_listening = lagging_pair
    one.define_table("messages", SPEC)
    one.sync("messages", "m0", {"room": "dev"})
    one.start()
    two.start()
    for sync in (one, two):
        sync.subscription("room")(lambda ctx, params: {"messages": {"room": params["room"]}})
    token = one.issue_token(sub="u1")
    subs = {"a": {"name": "room", "params": {"room": "lobby"}}}
    first, second = make_raw(one, token), make_raw(two, token)
    second.ok("pull", since=None, subs=subs, wait=0)  # node two tracks the table too
    stop_listening()
    page = first.ok("pull", since=None, subs=subs, wait=0)
    cursor = {"epoch": page["epoch"], "seq": page["seq"], "sv": page["sv"], "subs": ["a"]}
    one.sync("messages", "k", {"room": "lobby"})
    held = first.ok("pull", since=cursor, subs=subs, wait=0)
    assert held["changes"] == [["messages", "k", {"room": "lobby"}, ["a"]]]
    cursor["seq"] = held["seq"]
    one.sync("messages", "k", {"room": "dev"})  # k leaves the lobby
    one.sync("messages", "other", {"room": "dev"})
    answer = second.ok("pull", since=cursor, subs=subs, wait=0)  # the next pull lands on node two
    assert ["messages", "k", None, []] in answer["changes"], answer


def test_without_psycopg_the_module_imports_and_the_error_names_the_extra():
    import subprocess
    script = ("import sys; sys.modules['psycopg'] = None\n"
              "import dsn_sync\n"
              "dsn_sync.SQLiteStore(':memory:').open()\n"
              "try:\n"
              "    dsn_sync.PostgresStore('postgresql://nobody@127.0.0.1:1/x').open()\n"
              "except dsn_sync.StoreError as e:\n"
              "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.abspath(__file__)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "psycopg[binary]>=3.2"' in out.stdout and 'pip install ".[postgres]"' in out.stdout


# -----------------------------------------------------------------------------
# DSNSync on top, and figures
# -----------------------------------------------------------------------------

def test_dsnsync_nodes_share_data_and_secret(url):
    one = DSNSync(port=0, store=PostgresStore(url))
    two = DSNSync(port=0, store=PostgresStore(url))
    try:
        assert one._store.secret == two._store.secret  # the second adopted the first's
        one.define_table("notes", {"key": "id", "fields": ["text"]})
        one.sync("notes", "n1", {"text": "hello"})
        two.start()
        two.on_create("notes")(lambda data: True)
        token = two.issue_token(sub="u1", write=("notes",))
        client = dsn_sync.connect(two.get_url(), token)
        try:
            client.wait_ready(10)
            wait_until(lambda: (client.get("notes", "n1") or {}).get("text") == "hello", 10, what="n1 on node two's client")
            client.create("notes", "n3", {"text": "from the client"})
            wait_until(lambda: one.get("notes", "n3") == {"text": "from the client"}, 10, what="a client write on two in one")
            one.sync("notes", "n2", {"text": "from one"})
            wait_until(lambda: "n2" in client.get_all("notes"), 10, what="a change on node one reaching node two's client")
        finally:
            client.close()
        assert one.get_all("notes") == two.get_all("notes")
        assert one._store.check() and two._store.check()
    finally:
        one.stop()
        two.stop()


def test_write_throughput_figures(nodes):
    a, b = nodes("a"), nodes("b")
    a.set_table("t", SPEC)
    sync = DSNSync(port=0, store=a)
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        sync.sync("t", "k%d" % i, {"n": i, "text": "some text"})
    single = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with sync.batch():
        for i in range(n, 11 * n):
            sync.sync("t", "k%d" % i, {"n": i, "text": "some text"})
    batched = 10 * n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    wait_until(lambda: b.seq == a.seq, 60, "node b level")
    print("\nsync() on PostgreSQL: %.0f/s one by one, %.0f/s in `with sync.batch()`; node b level %.0f ms after"
          % (single, batched, (time.perf_counter() - t0) * 1000))
    t0 = time.perf_counter()
    for i in range(n):  # what a client write adds for its holds (the engine's mid, then key)
        with a.hold(("mid", "jti", "m%d" % i)), a.hold(("key", "t", "k%d" % i)):
            pass
    print("a client write's holds (mid, then key; uncontended): %.0f us per write"
          % ((time.perf_counter() - t0) / n * 1e6))
    assert b.count("t") == 11 * n
