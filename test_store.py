"""The store interface, on MemoryStore and on real SQLite files (issue 10, issue 15 items 7 and 9-12).

    python3 -m pytest -q test_store.py

Sections: 1 the interface (reads, rule cache, ledger); 2 the SQLite file's modes;
3 write failures (a real file-size limit in a child process); 4 damaged files (a seeded
corruption fuzzer).  Every test uses the module's public names and real files in tmp_path.
"""

import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dsn_sync
from dsn_sync import MemoryStore, SQLiteStore, StoreError, View

ROOT = Path(__file__).resolve().parent
STORES = ["memory", "sqlite"]


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    if request.param == "memory":
        s = MemoryStore().open()
    else:
        s = SQLiteStore(str(tmp_path / "dsn.db")).open()
    s.set_table("notes", {"key": "id", "fields": None})
    s.set_table("other", {"key": "id", "fields": None})
    yield s
    s.check()
    s.close()


def user_view(store_rules, claims, tables=None):
    return View(tables, store_rules, claims.get("sub"), claims)


# =============================================================================
# 1. The interface
# =============================================================================

def test_read_visible_filters_like_a_pull(store):
    store.apply("notes", "mine", "create", {"owner": "ann", "text": "a"})
    store.apply("notes", "theirs", "create", {"owner": "bob", "text": "b"})
    store.apply("other", "x", "create", {"v": 1})
    rules = {"notes": lambda record, ctx: record["owner"] == ctx.sub}
    ann = user_view(rules, {"sub": "ann"}, tables=frozenset(["notes"]))
    assert store.read_visible("notes", "mine", ann) == {"owner": "ann", "text": "a"}
    assert store.read_visible("notes", "theirs", ann) is None, "the row rule hides it"
    assert store.read_visible("other", "x", ann) is None, "the view may not read the table"
    assert store.read_visible("notes", "nobody", ann) is None
    assert store.read_visible("nowhere", "x", ann) is None
    assert store.read_visible("other", "x") == {"v": 1}  # the app's view sees everything
    # the same answer a pull gives
    changes, _ = store.changes_since(0, 100, ann)
    pulled = {json.loads(c)[1]: json.loads(c)[2] for c in changes}
    assert pulled == {"mine": {"owner": "ann", "text": "a"}, "theirs": None}
    store.apply("notes", "mine", "delete")
    assert store.read_visible("notes", "mine", ann) is None


def test_forget_rule_answers_drops_the_cache_of_one_table(store):
    store.apply("notes", "a", "create", {"level": 1})
    store.apply("other", "b", "create", {"level": 1})
    strict = {"notes": lambda r, ctx: r["level"] > 1, "other": lambda r, ctx: r["level"] > 1}
    view = user_view(strict, {"sub": "u"})
    assert store.read_visible("notes", "a", view) is None and store.read_visible("other", "b", view) is None
    lenient = {"notes": lambda r, ctx: True, "other": lambda r, ctx: True}
    view2 = user_view(lenient, {"sub": "u"})  # same claims: the cached "no" answers would apply
    assert store.read_visible("notes", "a", view2) is None, "the cache is what this test relies on"
    store.forget_rule_answers("notes")
    assert store.read_visible("notes", "a", view2) == {"level": 1}
    assert store.read_visible("other", "b", view2) is None, "another table's answers were dropped"
    store.forget_rule_answers("nowhere")  # an unknown table is nothing to forget


def test_row_rule_answers_are_not_shared_between_claim_sets_of_one_sub(store):
    # Issue 15 item 9: carol's admin token pulled first; her user token then saw the admin's rows.
    for i in range(3):
        store.apply("notes", "hidden%d" % i, "create", {"secret": True})
    store.apply("notes", "open", "create", {"secret": False})
    rules = {"notes": lambda r, ctx: not r["secret"] or ctx.claims.get("role") == "admin"}
    admin = user_view(rules, {"sub": "carol", "role": "admin", "jti": "a1"})
    user = user_view(rules, {"sub": "carol", "jti": "u1"})
    blob, _, _ = store.snapshot_page(store.seq, 0, 100, admin)
    assert set(json.loads(blob)["notes"]) == {"hidden0", "hidden1", "hidden2", "open"}
    blob, _, _ = store.snapshot_page(store.seq, 0, 100, user)
    assert set(json.loads(blob)["notes"]) == {"open"}, "the user token saw rows only the admin may see"
    changes, _ = store.changes_since(0, 100, user)
    assert sorted(json.loads(c)[1] for c in changes if json.loads(c)[2] is not None) == ["open"]
    assert store.read_visible("notes", "hidden0", user) is None
    # the same claims in another order, or in another token of the user (its own
    # jti, iat, exp), share answers: the key is the canonical form of what a rule sees
    calls = []
    counting = {"notes": lambda r, ctx: calls.append(dict(ctx.claims)) or True}
    store.apply("notes", "open", "update", {"n": 1})
    first = user_view(counting, {"sub": "dan", "role": "x", "jti": "t1", "iat": 1, "exp": 9})
    second = user_view(counting, {"role": "x", "sub": "dan", "jti": "t2", "iat": 2, "exp": None})
    store.read_visible("notes", "open", first)
    store.read_visible("notes", "open", second)
    assert calls == [{"sub": "dan", "role": "x"}]
    store.read_visible("notes", "open", user_view(counting, {"sub": "dan", "role": "y"}))
    assert len(calls) == 2


def test_a_row_rule_sees_all_claims_through_a_running_server():
    sync = dsn_sync.DSNSync(port=0)
    sync.define_table("notes", {"key": "id", "fields": None})
    for i in range(3):
        sync.sync("notes", "hidden%d" % i, {"secret": True})
    sync.sync("notes", "open", {"secret": False})

    @sync.can_read("notes")
    def rule(record, ctx):
        return not record["secret"] or ctx.claims.get("role") == "admin"

    sync.start()
    clients = []
    try:
        admin = dsn_sync.connect(sync.get_url(), sync.issue_token(sub="carol", role="admin"))
        clients.append(admin)
        assert admin.wait_ready(10) and len(admin.get_all("notes")) == 4
        user = dsn_sync.connect(sync.get_url(), sync.issue_token(sub="carol"))
        clients.append(user)
        assert user.wait_ready(10)
        assert set(user.get_all("notes")) == {"open"}, "carol's user token saw her admin token's rows"
    finally:
        for c in clients:
            c.close()
        sync.stop()


def test_memory_store_save_secret_is_a_harmless_no_op():
    s = MemoryStore().open()
    assert s.save_secret(os.urandom(32)) is None
    assert s.secret is None and s.durable is False


def test_the_ledger_answers_with_the_keys_current_state(store):
    seq, record = store.apply("notes", "k", "create", {"v": 1}, ledger=("jti", "m1"))
    first = store.recall("jti", "m1")
    assert first == {"ok": True, "seq": seq, "epoch": store.epoch, "record": {"v": 1}}
    store.apply("notes", "k", "update", {"w": 2}, ledger=("jti", "m2"))
    again = store.recall("jti", "m1")
    assert again["seq"] == seq and again["epoch"] == store.epoch, "the first seq and epoch are kept"
    assert again["record"] == {"v": 1, "w": 2}, "a repeated mid gets the key's current state"
    again["record"]["mutated"] = True
    assert store.recall("jti", "m1")["record"] == {"v": 1, "w": 2}, "recall hands out fresh dicts"
    # a view that may not read the row gets no record, still ok
    hidden = user_view({"notes": lambda r, ctx: False}, {"sub": "u"})
    assert store.recall("jti", "m1", hidden) == {"ok": True, "seq": seq, "epoch": store.epoch, "record": None}
    assert store.recall("jti", "m1", user_view(None, {"sub": "u"}, tables=frozenset())) ["record"] is None
    store.apply("notes", "k", "delete", ledger=("jti", "m3"))
    assert store.recall("jti", "m1")["record"] is None, "deleted since"
    assert store.recall("jti", "m3")["ok"] is True and store.recall("jti", "m3")["record"] is None
    # error answers come back as they were; unknown mids and other tokens' mids are None
    error = {"ok": False, "error": {"code": "exists", "message": "notes/k already exists"}}
    store.remember("jti", "m4", error)
    assert store.recall("jti", "m4") == error
    assert store.recall("jti", "nope") is None and store.recall("other-jti", "m1") is None


def test_the_ledger_does_not_keep_records(tmp_path):
    # Issue 15 item 7: 500 updates of a 256 KiB record kept every version in the ledger.
    big = "x" * (64 << 10)
    path = tmp_path / "dsn.db"
    s = SQLiteStore(str(path)).open()
    s.set_table("t", {"key": "id", "fields": None})
    s.apply("t", "k", "create", {"blob": big, "n": 0}, ledger=("j", "m0"))
    for i in range(1, 200):
        s.apply("t", "k", "update", {"n": i}, ledger=("j", "m%d" % i))
    s.check()
    s.close()
    db = sqlite3.connect(str(path))
    try:
        count, size = db.execute("SELECT count(*), sum(length(answer)) FROM dsn_mids").fetchone()
    finally:
        db.close()
    assert count == 200
    assert size < 200 * 200, "the ledger holds %d bytes for 200 answers: records are in it" % size
    memory = MemoryStore()
    memory.set_table("t", {"key": "id", "fields": None})
    memory.apply("t", "k", "create", {"blob": big, "n": 0}, ledger=("j", "m0"))
    import tracemalloc
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1, 200):
        memory.apply("t", "k", "update", {"n": i}, ledger=("j", "m%d" % i))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 10 * len(big), "199 updates of a 64 KiB record grew memory by %d bytes" % grown
    assert memory.recall("j", "m0")["record"]["n"] == 199


def test_wide_records_cost_about_their_json_and_still_merge(store):
    # Issue 15 item 7: a tuple of field names per record made records of many small
    # fields cost 12-21x their JSON.  1,500 fields is past what the shared shapes keep.
    import tracemalloc
    texts = [json.dumps({"f%d_%d" % (j, i): j for j in range(1500)}, separators=(",", ":")).encode()
             for i in range(40)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, text in enumerate(texts):  # as a client write arrives: decoded from its own JSON
        store.apply("notes", "w%d" % i, "create", json.loads(text), encoded=bytes(bytearray(text)))
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    ratio = grown / sum(map(len, texts))
    assert ratio < 2, "40 records of 1,500 fields cost %.1fx their JSON size" % ratio
    # merging into a record whose shape is not shared keeps every field
    store.apply("notes", "w0", "upsert", {"f0_0": "changed", "extra": 1})
    merged = store.get("notes", "w0")
    assert len(merged) == 1501 and merged["f0_0"] == "changed" and merged["f1499_0"] == 1499
    store.apply("notes", "w1", "update", json.loads(texts[1]))  # every field rewritten
    assert store.get("notes", "w1") == json.loads(texts[1])
    store.apply("notes", "w1", "replace", {"only": 1})
    assert store.get("notes", "w1") == {"only": 1}
    assert store.check()


def test_a_reopened_file_recalls_answers_and_old_format_answers(tmp_path):
    path = str(tmp_path / "dsn.db")
    s = SQLiteStore(path).open()
    s.set_table("t", {"key": "id", "fields": None})
    seq, _ = s.apply("t", "k", "create", {"v": 1}, ledger=("j", "m1"))
    epoch = s.epoch
    s.close()
    db = sqlite3.connect(path)  # an answer written before answers lost their records
    db.execute("INSERT INTO dsn_mids VALUES ('j', 'old', ?, ?)",
               (int(time.time()), json.dumps({"ok": True, "seq": 1, "record": {"v": 0}})))
    db.commit()
    db.close()
    s = SQLiteStore(path).open()
    try:
        assert s.recall("j", "m1") == {"ok": True, "seq": seq, "epoch": epoch, "record": {"v": 1}}
        assert s.recall("j", "old") == {"ok": True, "seq": 1, "record": {"v": 0}}
    finally:
        s.close()


def test_a_closed_sqlite_store_raises_store_error(tmp_path):
    s = SQLiteStore(str(tmp_path / "dsn.db")).open()
    s.set_table("t", {"key": "id", "fields": None})
    s.close()
    for call in (lambda: s.apply("t", "k", "create", {"v": 1}), lambda: s.recall("j", "m"), s.revoked,
                 lambda: s.revoke("j", None), lambda: s.save_secret(b"s" * 32),
                 lambda: s.set_table("u", {"key": "id", "fields": None})):
        with pytest.raises(StoreError):
            call()


def test_a_held_name_makes_only_that_name_wait(store):
    # A handler that blocks holds its write's mid and key; other writes must not queue behind it
    # because their names hash alike (64 shared stripes made one write in 64 wait).
    import threading
    with store.hold(("mid", "jti-a", "m1")), store.hold(("key", "notes", "a1")):
        got = []

        def other_writes():
            for i in range(400):
                for name in (("key", "notes", "b%d" % i), ("mid", "jti-b", "m%d" % i)):
                    lock = store.hold(name)
                    got.append(lock.acquire(timeout=0.05) and (lock.release() or True))
            got.append(store.hold(("key", "notes", "a1")).acquire(timeout=0.05))  # the held name itself
        t = threading.Thread(target=other_writes)
        t.start()
        t.join(120)
        assert got[:-1] == [True] * 800, "%d of 800 free names waited for a held one" % got[:-1].count(False)
        assert got[-1] is False, "a held name must make its own writers wait"
    # Released: the name is free again, and no lock is kept for names nobody holds.
    lock = store.hold(("key", "notes", "a1"))
    assert lock.acquire(timeout=1)
    assert list(store._held_names) == [("key", "notes", "a1")]  # the one just acquired
    lock.release()
    assert not store._held_names


def test_holds_of_one_name_exclude_each_other_under_contention(store):
    # Eight threads on three names, each a read-yield-write of that name's counter under its hold:
    # a lost update means two threads were inside one name's hold at once.
    import threading
    counts = {n: 0 for n in ("x", "y", "z")}
    done = []

    def worker(seed):
        names = ["x", "y", "z"]
        for i in range(1500):
            name = names[(seed + i) % 3]
            with store.hold(("key", "notes", name)):
                value = counts[name]
                time.sleep(0) if i % 7 == 0 else None
                counts[name] = value + 1
        done.append(seed)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(done) == 8 and sum(counts.values()) == 8 * 1500, counts
    assert not store._held_names, "every hold was given back"


# =============================================================================
# 2. File modes: the file holds the server secret
# =============================================================================

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_file_wal_and_shm_are_created_owner_only(tmp_path, umask_022):
    path = str(tmp_path / "dsn.db")
    s = SQLiteStore(path).open()
    try:
        s.save_secret(os.urandom(32))
        s.set_table("t", {"key": "id", "fields": None})
        s.apply("t", "k", "create", {"v": 1})
        for name in (path, path + "-wal", path + "-shm"):
            assert os.path.exists(name), name
            assert mode(name) == 0o600, "%s is %o under umask 022" % (name, mode(name))
    finally:
        s.close()
    # a server made through DSNSync gets the same
    other = str(tmp_path / "app.db")
    sync = dsn_sync.DSNSync(port=0, db_connection_string="sqlite:///" + other)
    try:
        sync.sync("t", "k", {"v": 1})
        assert mode(other) == 0o600 and mode(other + "-wal") == 0o600
    finally:
        sync.stop()


def test_an_existing_file_readable_by_others_is_warned_about(tmp_path, caplog):
    path = str(tmp_path / "dsn.db")
    SQLiteStore(path).open().close()
    os.chmod(path, 0o644)
    caplog.set_level(logging.WARNING, logger="dsn_sync")
    s = SQLiteStore(path).open()
    s.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "dsn_sync" and r.levelno == logging.WARNING]
    assert any(path in m and "644" in m and "chmod 600" in m for m in warned), warned
    caplog.clear()
    os.chmod(path, 0o600)
    SQLiteStore(path).open().close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a 0600 file was warned about"
    assert mode(path) == 0o600


# =============================================================================
# 3. Write failures while serving: a real file-size limit (RLIMIT_FSIZE) in a child
# =============================================================================

FULL_DISK_CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys
    sys.path.insert(0, sys.argv[2])
    import dsn_sync
    path = sys.argv[1]
    out = {}
    s = dsn_sync.SQLiteStore(path).open()
    s.set_table("t", {"key": "id", "fields": None})
    s.apply("t", "small", "create", {"v": 1}, ledger=("j", "m0"))
    seq = s.seq
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    sizes = [os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 4096, hard))

    def attempt(name, call):
        try:
            call()
            out[name] = "ok"
        except dsn_sync.StoreError as e:
            out[name] = "StoreError"
            out[name + "_message"] = str(e)
        except BaseException as e:
            out[name] = "raw %s: %s" % (type(e).__name__, e)

    big = {"blob": "x" * (1 << 20)}
    attempt("apply", lambda: s.apply("t", "big", "create", big, ledger=("j", "m1")))
    out["after_apply"] = [s.seq == seq, s.get("t", "big") is None, s.recall("j", "m1") is None]
    attempt("set_table", lambda: s.set_table("wide", {"key": "id", "fields": ["f%d" % i for i in range(100000)]}))
    out["after_set_table"] = "wide" not in s.tables
    attempt("revoke", lambda: [s.revoke("x" * 200000 + str(i), None) for i in range(3)])
    attempt("remember", lambda: s.remember("j", "m2", {"ok": False, "error": {"code": "x", "message": "y" * (1 << 20)}}))

    def batch():
        s.begin_batch()
        try:
            for i in range(8):
                s.apply("t", "b%d" % i, "create", big)
        finally:
            s.end_batch()
    attempt("batch", batch)
    out["after_batch"] = [s.seq == seq, s.count("t") == 1]
    attempt("check", s.check)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    attempt("apply_again", lambda: s.apply("t", "big", "create", big, ledger=("j", "m1")))
    out["recall"] = s.recall("j", "m1")["ok"]
    s.close()
    s = dsn_sync.SQLiteStore(path).open()
    out["reopened"] = [s.check(), s.get("t", "big") == big, sorted(s.get_all("t"))]
    s.close()
    print(json.dumps(out))
""")


def test_a_full_disk_raises_store_error_and_changes_nothing(tmp_path):
    path = str(tmp_path / "dsn.db")
    script = tmp_path / "child.py"
    script.write_text(FULL_DISK_CHILD)
    done = subprocess.run([sys.executable, str(script), path, str(ROOT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("apply", "set_table", "revoke", "remember", "batch"):
        assert out[name] == "StoreError", (name, out[name])
    assert path in out["apply_message"], "the operator's log names the file"
    assert out["after_apply"] == [True, True, True], "a failed write changed memory"
    assert out["after_set_table"] is True
    assert out["after_batch"] == [True, True], "a failed batch was half applied"
    assert out["check"] == "ok"
    assert out["apply_again"] == "ok" and out["recall"] is True, "the store did not recover once space was back"
    assert out["reopened"] == [True, True, ["big", "small"]]


# =============================================================================
# 4. Damaged files: StoreError at open, and the file left as it was
# =============================================================================

def make_reference(path):
    s = SQLiteStore(str(path)).open()
    s.save_secret(bytes(range(32)))
    s.set_table("users", {"key": "id", "fields": ["name", "age"]})
    s.set_table("notes", {"key": "id", "fields": None})
    rng = random.Random(7)
    for i in range(60):
        s.apply("users", "u%d" % i, "upsert", {"name": "n%d" % i, "age": i}, ledger=("jti", "m%d" % i))
        s.apply("notes", "n%d" % (i % 17), "upsert", {"text": "é" * rng.randrange(1, 40), "i": i})
    for i in range(0, 60, 7):
        s.apply("users", "u%d" % i, "delete")
    s.remember("jti", "err", {"ok": False, "error": {"code": "exists", "message": "m"}})
    s.revoke("revoked-jti", time.time() + 3600)
    s.revoke("forever", None)
    s.check()
    s.close()
    for extra in ("-wal", "-shm"):
        assert not os.path.exists(str(path) + extra)


def rebuild_records_without_constraints(db):
    db.executescript("""
        ALTER TABLE dsn_records RENAME TO dsn_old;
        CREATE TABLE dsn_records (tbl, key, seq, data);
        INSERT INTO dsn_records SELECT * FROM dsn_old;
        DROP TABLE dsn_old;""")


# Hand-broken rows: each is what a bug, a bad restore or a hand edit could leave.  The
# reference file's live rows: users u1..u59 but every 7th (deleted: tombstones), notes n0..n16.
BREAKS = [
    "UPDATE dsn_meta SET v = 'x' WHERE k = 'seq'",
    "UPDATE dsn_meta SET v = '-1' WHERE k = 'sv'",
    "UPDATE dsn_meta SET v = '00' WHERE k = 'floor'",
    "UPDATE dsn_meta SET v = '99999999999999999999' WHERE k = 'seq'",
    "UPDATE dsn_meta SET v = x'00ff' WHERE k = 'epoch'",
    "UPDATE dsn_meta SET v = 'not an epoch!' WHERE k = 'epoch'",
    "DELETE FROM dsn_meta WHERE k = 'epoch'",
    "DELETE FROM dsn_meta WHERE k = 'seq'",
    "UPDATE dsn_meta SET v = 'zz' WHERE k = 'secret'",
    "UPDATE dsn_meta SET v = 'two' WHERE k = 'format'",
    "UPDATE dsn_meta SET v = 'other' WHERE k = 'app'",
    "INSERT INTO dsn_meta VALUES (x'07', 'x')",
    "UPDATE dsn_tables SET spec = '{bad json' WHERE name = 'users'",
    "UPDATE dsn_tables SET spec = '[1, 2]' WHERE name = 'users'",
    "UPDATE dsn_tables SET spec = '{\"key\": 5, \"fields\": null}' WHERE name = 'users'",
    "UPDATE dsn_tables SET spec = '{\"key\": \"id\", \"fields\": [1]}' WHERE name = 'notes'",
    "UPDATE dsn_tables SET spec = x'7b7d' WHERE name = 'notes'",
    "UPDATE dsn_tables SET spec = CAST(x'7b22ff7d' AS TEXT) WHERE name = 'notes'",
    "UPDATE dsn_tables SET name = 'bad name' WHERE name = 'notes'",
    "DELETE FROM dsn_tables WHERE name = 'users'",
    "UPDATE dsn_records SET data = '{\"a\": ' WHERE key = 'u1'",
    "UPDATE dsn_records SET data = '[1, 2, 3]' WHERE key = 'u2'",
    "UPDATE dsn_records SET data = '\"text\"' WHERE key = 'u3'",
    "UPDATE dsn_records SET data = '{\"a\": NaN}' WHERE key = 'u4'",
    "UPDATE dsn_records SET data = 42 WHERE key = 'u5'",
    "UPDATE dsn_records SET data = x'7b7d' WHERE key = 'u6'",
    "UPDATE dsn_records SET data = CAST(x'7b2261223a22ff227d' AS TEXT) WHERE key = 'u8'",
    "UPDATE dsn_records SET data = '" + "[" * 100000 + "' WHERE key = 'u9'",
    "UPDATE dsn_records SET data = '{\"a\": " + "[" * 5000 + "]" * 5000 + "}' WHERE key = 'u10'",
    "UPDATE dsn_records SET key = '' WHERE key = 'u11'",
    "UPDATE dsn_records SET key = x'0f' WHERE key = 'u12'",
    "UPDATE dsn_records SET key = '" + "k" * 300 + "' WHERE key = 'u13'",
    "UPDATE dsn_records SET tbl = 'ghosts' WHERE key = 'n1'",
    "REBUILD; UPDATE dsn_records SET tbl = NULL WHERE key = 'n2'",
    "UPDATE dsn_records SET seq = 'nineteen' WHERE key = 'n3'",
    "UPDATE dsn_records SET seq = 2.5 WHERE key = 'n4'",
    "UPDATE dsn_records SET seq = -3 WHERE key = 'n5'",
    "UPDATE dsn_records SET seq = 0 WHERE key = 'n6'",
    "UPDATE dsn_meta SET v = (SELECT max(seq) FROM dsn_records) WHERE k = 'floor'",
    "REBUILD; UPDATE dsn_records SET seq = (SELECT seq FROM dsn_records WHERE key = 'u15') WHERE key = 'u16'",
    "REBUILD; INSERT INTO dsn_records SELECT tbl, key, seq + 1000, data FROM dsn_records WHERE key = 'n7'",
    "REBUILD; UPDATE dsn_records SET seq = NULL WHERE key = 'n8'",
    "UPDATE dsn_mids SET answer = 'not json' WHERE mid = 'm3'",
    "UPDATE dsn_mids SET answer = '[1]' WHERE mid = 'm4'",
    "UPDATE dsn_mids SET at = 'yesterday' WHERE mid = 'm5'",
    "UPDATE dsn_mids SET mid = x'06' WHERE mid = 'm6'",
    "UPDATE dsn_revoked SET exp = 'soon' WHERE jti = 'forever'",
    "UPDATE dsn_revoked SET jti = x'01' WHERE jti = 'forever'",
    "DROP TABLE dsn_records",
    "DROP TABLE dsn_tables",
    "DROP TABLE dsn_mids",
    "DROP TABLE dsn_revoked",
    "ALTER TABLE dsn_records DROP COLUMN data",
    "DELETE FROM dsn_meta",
]
HARMLESS = [  # not damage: the file must still open and pass check()
    "PRAGMA journal_mode=DELETE",
    "UPDATE dsn_meta SET v = '130' WHERE k = 'seq'",  # a seq ahead of the records: compaction leaves that
    "UPDATE dsn_meta SET v = '12' WHERE k = 'floor'",  # a floor below every tombstone: old cursors reset
    "INSERT INTO dsn_meta VALUES ('note', 'x')",
    "DELETE FROM dsn_mids WHERE mid = 'm1'",
    "UPDATE dsn_records SET data = '{ \"name\" : \"spaced\" }' WHERE key = 'u1'",
]


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def try_open(path):
    """'ok' if the file opens and passes check(), 'refused' if StoreError left it untouched; else the test fails."""
    before = digest(path)
    try:
        s = SQLiteStore(str(path)).open()
    except StoreError as e:
        assert digest(path) == before, "a refused open changed the file (%s)" % e
        assert str(path) in str(e), "the message does not name the file: %s" % e
        return "refused"
    try:
        assert s.check()
        for table in s.tables:
            s.get_all(table)
        s.changes_since(0, 1000)
        s.snapshot_page(s.seq, 0, 1000)
        s.revoked()
        s.recall("jti", "m1")
    finally:
        s.close()
    return "ok"


def corrupt(rng, reference, path, trial):
    """One seeded corruption of a copy of ``reference``; returns what was done."""
    shutil.copyfile(reference, path)
    os.chmod(path, 0o600)
    size = os.path.getsize(path)
    kind = trial % 3
    if kind == 0:
        data = bytearray(Path(path).read_bytes())
        spots = []
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(0, size) if rng.random() < 0.7 else rng.randrange(0, min(size, 200))  # header too
            length = rng.randrange(1, 17)
            data[at:at + length] = bytes(rng.randrange(256) for _ in range(length))[:max(0, size - at)]
            spots.append(at)
        Path(path).write_bytes(bytes(data[:size]))
        return "random bytes at %s" % spots
    if kind == 1:
        keep = rng.randrange(0, size)
        with open(path, "r+b") as f:
            f.truncate(keep)
        return "truncated to %d of %d bytes" % (keep, size)
    statements = BREAKS + HARMLESS
    statement = statements[(trial // 3) % len(statements)]
    break_file(path, statement)
    return statement[:120]


def break_file(path, statement):
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        for part in statement.split("; "):
            if part == "REBUILD":
                rebuild_records_without_constraints(db)
            else:
                before = db.total_changes
                db.execute(part)
                assert part.startswith(("PRAGMA", "DROP", "ALTER")) or db.total_changes > before, \
                    "%r changed no row of the reference file" % part
    finally:
        db.close()


def test_every_hand_broken_row_is_refused_and_harmless_edits_open(tmp_path):
    reference = tmp_path / "reference.db"
    make_reference(reference)
    assert try_open(reference) == "ok"
    opened = []
    for i, statement in enumerate(BREAKS):
        path = tmp_path / ("broken%d.db" % i)
        shutil.copyfile(reference, path)
        os.chmod(path, 0o600)
        break_file(path, statement)
        if try_open(path) != "refused":
            opened.append(statement[:80])
    assert not opened, "opened although damaged: %s" % opened
    for i, statement in enumerate(HARMLESS):
        path = tmp_path / ("edited%d.db" % i)
        shutil.copyfile(reference, path)
        os.chmod(path, 0o600)
        break_file(path, statement)
        assert try_open(path) == "ok", statement


def test_a_seeded_corruption_fuzzer_finds_no_raw_exception(tmp_path):
    reference = tmp_path / "reference.db"
    make_reference(reference)
    seed = int(os.environ.get("DSN_FUZZ_SEED", "20261203"))
    trials = int(os.environ.get("DSN_FUZZ_TRIALS", "150"))
    rng = random.Random(seed)
    counts = {"ok": 0, "refused": 0}
    path = tmp_path / "trial.db"
    for trial in range(trials):
        done = corrupt(rng, reference, path, trial)
        for extra in ("-wal", "-shm"):
            if os.path.exists(str(path) + extra):
                os.remove(str(path) + extra)
        try:
            counts[try_open(path)] += 1
        except AssertionError:
            raise
        except BaseException as e:
            pytest.fail("trial %d of seed %d (%s): %s: %s" % (trial, seed, done, type(e).__name__, e))
    print("corruption fuzzer, seed %d: %d trials, %d opened and passed check(), %d refused with StoreError"
          % (seed, trials, counts["ok"], counts["refused"]))
    assert counts["refused"] > trials // 3, counts
