"""Tests for dsn_sync.py: vectors, the Python API, the wire protocol over real sockets,
a seeded stress test, TLS end to end and the Python client.

Run from the repository root: ``python3 -m pytest -q test_dsn_sync.py``.

Every server listens on port 0 (a free port), so tests never collide.  Frames are
built and answers opened by conftest.py's ``Raw`` with a small reference envelope
written from PROTOCOL.md alone (checked against protocol_v1.json first, below), so a
response that merely agrees with the module's own open() is not enough to pass.
"""

import hashlib
import hmac
import http.client
import json
import logging
import os
import queue
import random
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import dsn_sync
from conftest import (read_response, OMIT, REQ_LABEL, RES_LABEL, now_ms, private, ref_hkdf_expand, ref_hkdf_extract, ref_open,
                      ref_parse_token, ref_seal, ref_traffic_keys, wait_until)

VECTORS = Path(__file__).resolve().parent.parent / "shared" / "vectors"

CLIENT_JS_TYPES = ("text/javascript", "application/javascript")


def load_vectors(name):
    """A vector file from ../shared/vectors; a missing file is an error, never a skip."""
    path = VECTORS / name
    if not path.is_file():
        raise FileNotFoundError("test vectors missing: %s (the shared vectors live in ../shared/vectors "
                                "beside the repository)" % path)
    with path.open(encoding="utf-8") as f:
        return json.load(f)


HKDF = load_vectors("hkdf_sha256.json")
HKDF_RFC = load_vectors("hkdf_sha256_rfc5869.json")
HMAC = load_vectors("hmac_sha256.json")
HMAC_RFC = load_vectors("hmac_sha256_rfc4231.json")
SHAKE = load_vectors("shake256.json")
PROTO = load_vectors("protocol_v1.json")

H = bytes.fromhex


# =============================================================================
# 1. Vectors
# =============================================================================


def test_vector_files_are_complete():
    assert len(HKDF["cases"]) == 86
    assert sum(c["result"] == "invalid" for c in HKDF["cases"]) == 3
    assert len(HKDF_RFC["cases"]) == 3
    assert len(HMAC["cases"]) == 174
    assert sum(c["result"] == "invalid" for c in HMAC["cases"]) == 108
    assert len(HMAC_RFC["cases"]) == 7
    assert len(PROTO["must_fail"]) == 2 and len(PROTO["seal"]) == 4


@pytest.mark.parametrize("case", HKDF["cases"], ids=lambda c: "tc%d" % c["tcId"])
def test_hkdf_wycheproof(case):
    salt, ikm, info = H(case["salt"]), H(case["ikm"]), H(case["info"])
    prk = dsn_sync.hkdf_extract(salt, ikm)
    assert prk == ref_hkdf_extract(salt, ikm)
    if case["result"] == "invalid":
        assert case["size"] > 255 * 32
        with pytest.raises(ValueError):
            dsn_sync.hkdf_expand(prk, info, case["size"])
        return
    assert case["result"] == "valid"
    okm = dsn_sync.hkdf_expand(prk, info, case["size"])
    assert okm.hex() == case["okm"]


@pytest.mark.parametrize("case", HKDF_RFC["cases"], ids=lambda c: c["tcId"])
def test_hkdf_rfc5869(case):
    prk = dsn_sync.hkdf_extract(H(case["salt"]), H(case["ikm"]))
    assert prk.hex() == case["prk"]
    assert dsn_sync.hkdf_expand(prk, H(case["info"]), case["size"]).hex() == case["okm"]


def test_hkdf_empty_salt_is_32_zero_bytes_and_size_limits():
    ikm = b"\x0b" * 22
    assert dsn_sync.hkdf_extract(b"", ikm) == dsn_sync.hkdf_extract(bytes(32), ikm)
    # RFC 5869 A.3 (empty salt, empty info)
    a3 = HKDF_RFC["cases"][2]
    assert a3["salt"] == "" and dsn_sync.hkdf_extract(b"", H(a3["ikm"])).hex() == a3["prk"]
    prk = dsn_sync.hkdf_extract(b"salt", b"ikm")
    assert len(dsn_sync.hkdf_expand(prk, b"", 8160)) == 8160
    assert dsn_sync.hkdf_expand(prk, b"x", 0) == b""
    for size in (8161, 10 ** 6):
        with pytest.raises(ValueError):
            dsn_sync.hkdf_expand(prk, b"", size)


def _hmac_the_module_way(key, msg):
    """HMAC as SealKey uses it: keyed once, then copied and fed per message."""
    base = hmac.new(key, digestmod=hashlib.sha256)
    mac = base.copy()
    mac.update(msg)
    return mac.digest()


@pytest.mark.parametrize("case", HMAC["cases"] + HMAC_RFC["cases"],
                         ids=lambda c: ("rfc4231-%s" if "RFC 4231" in c.get("comment", "") else "tc%s") % c["tcId"])
def test_hmac_sha256_vectors(case):
    key, msg, n = H(case["key"]), H(case["msg"]), case["tagSize"] // 8
    expected = H(case["tag"])
    assert len(expected) == n
    via_hmac = _hmac_the_module_way(key, msg)[:n]
    # hkdf_extract(salt, ikm) is HMAC-SHA256(salt, ikm): the module's raw HMAC helper.
    via_module = dsn_sync.hkdf_extract(key, msg)[:n]
    assert via_module == via_hmac
    if len(key) == 32:
        # the module's own precomputed HMAC object, as SealKey.tag copies it per frame
        sealkey = dsn_sync.SealKey(bytes(32) + key)
        if hasattr(sealkey, "_hmac"):
            mac = sealkey._hmac.copy()
            mac.update(msg)
            assert mac.digest()[:n] == via_hmac
    if case["result"] == "valid":
        assert hmac.compare_digest(via_hmac, expected)
    else:
        assert case["result"] == "invalid"
        assert not hmac.compare_digest(via_hmac, expected)
        assert not hmac.compare_digest(via_module, expected)


def test_sealkey_tag_is_hmac_over_the_framed_message():
    rng = random.Random(5)
    for aad_len, ct_len in ((0, 0), (1, 5), (23, 64), (300, 1000)):
        key = bytes(rng.randrange(256) for _ in range(64))
        aad = bytes(rng.randrange(256) for _ in range(aad_len))
        nonce = bytes(rng.randrange(256) for _ in range(16))
        ct = bytes(rng.randrange(256) for _ in range(ct_len))
        want = hmac.new(key[32:], struct.pack(">I", len(aad)) + aad + nonce + ct, hashlib.sha256).digest()
        assert dsn_sync.SealKey(key).tag(aad, nonce, ct) == want
        # the precomputed-and-copied HMAC must not leak state between uses
        assert dsn_sync.SealKey(key).tag(aad, nonce, ct) == dsn_sync.SealKey(key).tag(aad, nonce, ct)


@pytest.mark.parametrize("case", SHAKE["cases"], ids=lambda c: str(c.get("tcId", c.get("comment", ""))))
def test_shake256_primitive(case):
    # The module's keystream is hashlib.shake_256; make sure this Python's matches FIPS 202.
    msg = H(case["input"]) * case.get("repeat", 1)
    out = H(case["output"])
    assert hashlib.shake_256(msg).digest(case["outputLen"]) == out


# -- protocol_v1.json ----------------------------------------------------------


def test_reference_envelope_matches_vectors():
    """The test's own envelope (used to open answers) agrees with the shared vectors."""
    for case in PROTO["seal"]:
        key, aad, pt, nonce = H(case["key"]), H(case["aad"]), H(case["plaintext"]), H(case["nonce"])
        assert ref_seal(key, aad, pt, nonce).hex() == case["sealed"]
        assert ref_open(key, aad, H(case["sealed"])) == pt
    tok = PROTO["token"]
    prk_t = ref_hkdf_extract(b"dsn-sync/v1 traffic", H(tok["token_secret"]))
    assert ref_hkdf_expand(prk_t, b"c2s", 64).hex() == tok["c2s"]
    assert ref_hkdf_expand(prk_t, b"s2c", 64).hex() == tok["s2c"]
    # the token parsing and traffic keys conftest.Raw speaks with
    kid, secret = ref_parse_token(tok["token"])
    assert kid == tok["kid"] and secret.hex() == tok["token_secret"]
    assert [k.hex() for k in ref_traffic_keys(secret)] == [tok["c2s"], tok["s2c"]]


def _sealkey_bytes(key):
    return key if isinstance(key, (bytes, bytearray)) else key.enc + key.mac


def test_protocol_server_derivations():
    srv = PROTO["server"]
    ring = dsn_sync.Keyring(H(srv["secret"]))
    assert ring.prk.hex() == srv["prk"]
    assert ring.instance == srv["instance"]
    assert bytes(_sealkey_bytes(ring.token_key)).hex() == srv["token_key"]
    # the same secret as hex text and as base64 text gives the same keyring
    assert dsn_sync.Keyring(srv["secret"]).instance == srv["instance"]
    import base64
    assert dsn_sync.Keyring(base64.b64encode(H(srv["secret"])).decode()).instance == srv["instance"]


def test_protocol_token_minting_and_traffic_keys():
    srv, tok = PROTO["server"], PROTO["token"]
    ring = dsn_sync.Keyring(H(srv["secret"]))
    claims = json.loads(tok["claims_json"])
    token = ring.mint(claims, H(tok["seal_nonce"]))
    assert token == tok["token"]
    kid, secret = dsn_sync.parse_token(token)
    assert kid == tok["kid"]
    assert secret.hex() == tok["token_secret"]
    assert ring.token_secret(kid).hex() == tok["token_secret"]
    c2s, s2c = dsn_sync.traffic_keys(secret)
    assert c2s.hex() == tok["c2s"] and s2c.hex() == tok["s2c"]
    # the kid opens to the claims under token_key (and resolves on the server side)
    blob = dsn_sync.b64u_decode(kid)
    assert ref_open(H(srv["token_key"]), b"dsn-sync/v1 token", blob) == tok["claims_json"].encode()
    state = ring.resolve(kid)
    assert state is not None and state.claims == claims
    assert dsn_sync.Keyring(os.urandom(32)).resolve(kid) is None


@pytest.mark.parametrize("index", range(len(PROTO["seal"])))
def test_protocol_seal_cases(index):
    case = PROTO["seal"][index]
    key, aad, pt, nonce = H(case["key"]), H(case["aad"]), H(case["plaintext"]), H(case["nonce"])
    sealed = dsn_sync.seal(key, aad, pt, nonce)
    assert sealed.hex() == case["sealed"]
    assert dsn_sync.seal(dsn_sync.SealKey(key), aad, pt, nonce) == sealed
    assert dsn_sync.open(key, aad, sealed) == pt
    prefix = H(case["keystream_prefix"])
    assert dsn_sync.SealKey(key).stream(nonce, len(prefix)) == prefix
    ct = sealed[16:-32]
    assert bytes(a ^ b for a, b in zip(ct, pt))[:len(prefix)] == prefix
    # a random nonce seals to something else that still opens
    other = dsn_sync.seal(key, aad, pt)
    assert other != sealed and len(other) == len(pt) + 48
    assert dsn_sync.open(key, aad, other) == pt
    # must-fail variants: any flipped bit, another aad, another key, truncation
    for i in (0, 16, len(sealed) - 1) if pt else (0, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[i] ^= 1
        assert dsn_sync.open(key, aad, bytes(bad)) is None
    assert dsn_sync.open(key, aad + b"x", sealed) is None
    assert dsn_sync.open(bytes(64), aad, sealed) is None
    assert dsn_sync.open(key, aad, sealed[:47]) is None
    assert dsn_sync.open(key, aad, sealed[:-1]) is None


def _vector_frame():
    tok, req = PROTO["token"], PROTO["request"]
    kid = tok["kid"].encode("ascii")
    sealed = dsn_sync.seal(H(tok["c2s"]), REQ_LABEL + req["path"].encode("ascii"),
                           req["body_json"].encode("utf-8"), H(req["nonce"]))
    return b"\x01" + struct.pack(">H", len(kid)) + kid + sealed


def test_protocol_request_frame_bytes():
    assert _vector_frame().hex() == PROTO["request"]["frame"]
    # and with keys derived through the module from the token
    _, secret = dsn_sync.parse_token(PROTO["token"]["token"])
    c2s, _ = dsn_sync.traffic_keys(secret)
    assert c2s.hex() == PROTO["token"]["c2s"]


def test_protocol_response_frame_bytes():
    res, tok = PROTO["response"], PROTO["token"]
    frame = b"\x01" + dsn_sync.seal(H(tok["s2c"]), RES_LABEL + H(res["request_nonce"]),
                                    res["body_json"].encode("utf-8"), H(res["nonce"]))
    assert frame.hex() == res["frame"]
    assert dsn_sync.open(H(tok["s2c"]), RES_LABEL + H(res["request_nonce"]), frame[1:]) == res["body_json"].encode()
    # bound to the request: another request nonce does not open it
    assert dsn_sync.open(H(tok["s2c"]), RES_LABEL + bytes(16), frame[1:]) is None


def _split_frame(frame):
    assert frame[0] == 1
    n = struct.unpack(">H", frame[1:3])[0]
    return frame[3:3 + n].decode("ascii"), frame[3 + n:]


@pytest.mark.parametrize("index", range(len(PROTO["must_fail"])))
def test_protocol_must_fail_frames(index):
    case = PROTO["must_fail"][index]
    kid, sealed = _split_frame(H(case["frame"]))
    assert kid == PROTO["token"]["kid"]
    c2s = H(PROTO["token"]["c2s"])
    assert dsn_sync.open(c2s, REQ_LABEL + case["path"].encode("ascii"), sealed) is None
    assert ref_open(c2s, REQ_LABEL + case["path"].encode("ascii"), sealed) is None


def test_protocol_vector_frames_on_a_live_server():
    """The vector frame authenticates on a server with the vector secret; its t (2026-01-01) is stale."""
    srv, req = PROTO["server"], PROTO["request"]
    with dsn_sync.DSNSync(port=0, secret=H(srv["secret"])) as sync:
        assert urlsplit(sync.get_url()).path == req["path"]
        conn = http.client.HTTPConnection("127.0.0.1", sync.port, timeout=10)
        try:
            conn.request("POST", req["path"], body=H(req["frame"]), headers={"Content-Type": "text/plain"})
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200
            assert body[:1] == b"\x01"
            plain = ref_open(H(PROTO["token"]["s2c"]), RES_LABEL + H(req["nonce"]), body[1:])
            assert plain is not None, "the answer is not sealed to the request's nonce with s2c"
            answer = json.loads(plain)
            assert answer["ok"] is False and answer["error"]["code"] == "clock"
            assert abs(answer["now"] - now_ms()) < 5000
            assert answer["ep"].startswith("/sync/")
            # the must-fail frames: a flipped bit is 401; the other path is not a live one (404)
            for case, status in zip(PROTO["must_fail"], (401, 404)):
                conn.request("POST", case["path"], body=H(case["frame"]), headers={"Content-Type": "text/plain"})
                r = conn.getresponse()
                r.read()
                assert r.status == status, case["why"]
        finally:
            conn.close()


# =============================================================================
# Fixtures and a raw protocol client
# =============================================================================


@pytest.fixture
def server(make_server):
    return make_server()


def base_path(sync):
    return urlsplit(sync.get_url()).path


@pytest.fixture
def raw(server, make_raw):
    return make_raw(server)


def read_http_response(sock):
    """(status, headers, body) from a raw socket; status None if the peer closed first."""
    with sock.makefile("rb") as f:
        return read_response(f)


def raw_exchange(port, data, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_http_response(sock)


def http_request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


# =============================================================================
# 2. The Python API (issue 2)
# =============================================================================


@pytest.mark.parametrize("name, schema", [
    ("1users", {"key": "id", "fields": ["a"]}),
    ("", {"key": "id", "fields": ["a"]}),
    ("a" * 64, {"key": "id", "fields": ["a"]}),
    ("has space", {"key": "id", "fields": ["a"]}),
    ("dots.not.ok", {"key": "id", "fields": ["a"]}),
    (5, {"key": "id", "fields": ["a"]}),
    ("users", ["id", "a"]),
    ("users", None),
    ("users", {"key": "id", "fields": ["a"], "index": ["a"]}),
    ("users", {"key": "", "fields": ["a"]}),
    ("users", {"key": 7, "fields": ["a"]}),
    ("users", {"key": "id", "fields": "a"}),
    ("users", {"key": "id", "fields": ["a", 3]}),
    ("users", {"key": "id", "fields": ["a", ""]}),
    ("users", {"key": "id", "fields": ["a", "a"]}),
    ("users", {"key": "id", "fields": ["id", "a"]}),
    ("users", {"key": "id", "fields": 12}),
])
def test_define_table_rejects_bad_schemas(name, schema):
    sync = dsn_sync.DSNSync(port=0)
    with pytest.raises(ValueError):
        sync.define_table(name, schema)
    assert name not in sync.tables


def test_define_table_accepts_good_schemas():
    sync = dsn_sync.DSNSync(port=0)
    assert sync.define_table("users", {"key": "user_id", "fields": ["name", "email", "cart", "status"]}) is True
    assert sync.define_table("a" * 63, {"key": "id", "fields": None}) is True
    assert sync.define_table("_x-9", {"key": "k", "fields": []}) is True
    tables = sync.tables
    assert tables["users"] == {"key": "user_id", "fields": ["name", "email", "cart", "status"]}
    assert tables["a" * 63] == {"key": "id", "fields": None}
    assert sync.sync("users", "u1", {"name": "Ann", "user_id": "u1"}) is True
    assert sync.get("users", "u1") == {"name": "Ann"}  # the key field is not stored in the record


def test_sync_into_an_undefined_table_creates_it(server, raw):
    assert "jobs" not in server.tables
    assert server.sync("jobs", "j1", {"anything": 1, "goes": [1, 2]}) is True
    assert server.tables["jobs"] == {"key": "id", "fields": None}
    hello = raw.hello()
    assert hello["tables"]["jobs"] == {"key": "id", "fields": None}
    assert server.get("jobs", "j1") == {"anything": 1, "goes": [1, 2]}
    server.sync("jobs", "j1", {"more": True})
    assert server.get("jobs", "j1") == {"anything": 1, "goes": [1, 2], "more": True}


def test_sync_unknown_fields_raise_naming_them():
    sync = dsn_sync.DSNSync(port=0)
    sync.define_table("users", {"key": "user_id", "fields": ["name", "email"]})
    with pytest.raises(ValueError) as info:
        sync.sync("users", "u1", {"name": "x", "colour": "red", "shoe_size": 9})
    assert "colour" in str(info.value) and "shoe_size" in str(info.value)
    assert sync.get("users", "u1") is None
    with pytest.raises(ValueError):  # the key field repeated with another value
        sync.sync("users", "u1", {"user_id": "u2"})
    assert sync.get("users", "u1") is None


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", float("nan"), float("inf"), {"nested": object()},
                                   [1, object()], complex(1, 2)])
def test_sync_non_json_data_raises_at_the_call(value):
    sync = dsn_sync.DSNSync(port=0)
    with pytest.raises((ValueError, TypeError)):
        sync.sync("things", "k", {"v": value})
    if "things" in sync.tables:
        assert sync.get_all("things") == {}
    assert sync.stats()["seq"] == 0, "nothing may reach the feed"


def _nest(levels, leaf=1):
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def test_record_nesting_limit_by_depth_not_by_brackets():
    # The record is one level; MAX_DEPTH levels in all are allowed, one more is not, and neither a
    # structure deep enough to exhaust the encoder's recursion nor a cycle gets past as anything but
    # a ValueError that says which. Brackets inside strings are not nesting.
    sync = dsn_sync.DSNSync(port=0)
    sync.sync("deep", "ok", {"v": _nest(dsn_sync.MAX_DEPTH - 1)})
    assert sync.get("deep", "ok")["v"] == _nest(dsn_sync.MAX_DEPTH - 1)
    sync.sync("deep", "brackets", {"v": "[{" * 500, "w": [["[" * 100]]})
    for levels in (dsn_sync.MAX_DEPTH, 5000):
        with pytest.raises(ValueError, match="nests deeper than %d levels" % dsn_sync.MAX_DEPTH):
            sync.sync("deep", "no", {"v": _nest(levels)})
    loop = {"v": []}
    loop["v"].append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        sync.sync("deep", "loop", loop)
    assert sync.get("deep", "no") is None and sync.get("deep", "loop") is None
    assert sync.stats()["seq"] == 2, "only the two good records reach the feed"


def test_the_fast_json_encoder_writes_what_the_checked_one_writes():
    """_json_dumps runs the C encoder built once (two calls a write); _json_checked is the stdlib's
    own path. Their text must be the same for every value, and their refusals too."""
    assert dsn_sync._json_dumps is not dsn_sync._json_checked, "the fast encoder was not built here"
    rng = random.Random(7)
    texts = ["", "plain", "\u00e9\u4e2d\U0001f600", "quote\" back\\ slash", "\x00\x1f\x7f ctrl", "\u2028\u2029", "</script>"]
    scalars = [0, -1, 2 ** 70, -2 ** 70, 0.1, -0.0, 1e300, 5e-324, 1.0, True, False, None] + texts

    def value(depth):
        kind = rng.random()
        if depth > 4 or kind < 0.5:
            return rng.choice(scalars)
        if kind < 0.75:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        keys = texts + [1, -5, 2.5, True, None]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(4))}
    for _ in range(2000):
        v = value(0)
        assert dsn_sync._json_dumps(v) == dsn_sync._json_checked(v) == json.dumps(
            v, separators=(",", ":"), ensure_ascii=False), v
    loop = []
    loop.append(loop)
    for bad, error in ((float("nan"), ValueError), ({"a": float("inf")}, ValueError), ({"s": {1}}, TypeError),
                       ({(1, 2): 3}, TypeError), (loop, ValueError), (_nest(5000), RecursionError)):
        with pytest.raises(error) as fast:
            dsn_sync._json_dumps(bad)
        with pytest.raises(error) as checked:
            dsn_sync._json_checked(bad)
        assert str(fast.value) == str(checked.value)


def test_a_cycle_in_app_data_is_refused_without_copying_it_down_the_stack():
    """Encoded without the cycle check, a cyclic record was copied a thousand levels deep
    before the error (a 1 MB string in it: +939 MiB at peak). App data is encoded with the
    checked encoder, which stops at the cycle."""
    import tracemalloc
    sync = dsn_sync.DSNSync(port=0)
    loop = {"big": "x" * (1 << 20)}
    loop["self"] = loop
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="Circular reference"):
            sync.sync("deep", "loop", loop)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, "refusing a cyclic record took %d MiB" % (peak >> 20)


def test_sync_stores_what_clients_receive():
    sync = dsn_sync.DSNSync(port=0)
    for data in ({1: "int key"}, {"t": (1, 2)}, {"n": {2: "x"}}):
        try:
            sync.sync("lossy", "k", data)
        except (ValueError, TypeError):
            continue
        stored = sync.get("lossy", "k")
        wire = json.loads(json.dumps(stored))
        assert stored == wire, "stored %r but clients receive %r" % (stored, wire)


@pytest.mark.parametrize("key", ["", "x" * 257, 5, None, b"k"])
def test_sync_bad_keys_raise(key):
    sync = dsn_sync.DSNSync(port=0)
    with pytest.raises((ValueError, TypeError)):
        sync.sync("t", key, {"a": 1})


def test_sync_rejects_non_dict_data_and_bad_table_names():
    sync = dsn_sync.DSNSync(port=0)
    for data in (None, [("a", 1)], "text", 3):
        with pytest.raises((ValueError, TypeError)):
            sync.sync("t", "k", data)
    for table in ("", "bad name", "9x", "a" * 64, "t\n", "evil\n"):  # "$" alone would pass a final newline
        with pytest.raises(ValueError):
            sync.sync(table, "k", {"a": 1})
        with pytest.raises(ValueError):
            sync.define_table(table, {"key": "id"})
    assert sync.sync("t", "x" * 256, {"a": 1}) is True


def test_open_writes_create_tables_only_up_to_max_tables(make_server, make_raw):
    # The quick server's development mode makes a table for a client's first write to it:
    # max_tables bounds those too, and a name with a final newline is no table name.
    sync = make_server(open_writes=True, max_tables=3)
    raw = make_raw(sync)
    for table in ("t0", "t1", "t2"):
        raw.ok("create", table=table, key="k", data={"a": 1}, mid=table)
    answer = raw.err("create", "invalid", table="t3", key="k", data={"a": 1}, mid="t3")
    assert "max_tables" in answer["error"]["message"]
    raw.err("create", "unknown_table", table="evil\n", key="k", data={"a": 1}, mid="evil")
    assert sorted(sync._store.tables) == ["t0", "t1", "t2"]


def test_sync_is_a_shallow_merge():
    sync = dsn_sync.DSNSync(port=0)
    sync.sync("t", "k", {"a": 1, "b": {"x": 1}, "c": [1]})
    sync.sync("t", "k", {"b": {"y": 2}, "d": None})
    assert sync.get("t", "k") == {"a": 1, "b": {"y": 2}, "c": [1], "d": None}


def test_get_get_all_remove():
    sync = dsn_sync.DSNSync(port=0)
    sync.define_table("users", {"key": "user_id", "fields": ["name"]})
    assert sync.get("users", "nobody") is None
    assert sync.get_all("users") == {}
    sync.sync("users", "u1", {"name": "Ann"})
    sync.sync("users", "u2", {"name": "Bob"})
    assert sync.get_all("users") == {"u1": {"name": "Ann"}, "u2": {"name": "Bob"}}
    # results are copies: changing them changes nothing stored
    got = sync.get("users", "u1")
    got["name"] = "Mallory"
    everything = sync.get_all("users")
    everything["u2"]["name"] = "Eve"
    everything.pop("u1")
    assert sync.get_all("users") == {"u1": {"name": "Ann"}, "u2": {"name": "Bob"}}
    assert sync.remove("users", "u1") is True
    assert sync.remove("users", "u1") is False
    assert sync.get("users", "u1") is None
    assert sync.get_all("users") == {"u2": {"name": "Bob"}}
    sync.sync("users", "u1", {"name": "Ann again"})
    assert sync.get("users", "u1") == {"name": "Ann again"}


def test_remove_reaches_clients(server, raw):
    server.sync("t", "a", {"v": 1})
    _, cursor, _ = raw.reset()
    server.remove("t", "a")
    answer = raw.ok("pull", since=cursor, wait=0)
    assert answer["changes"] == [["t", "a", None]]


def test_port_zero_get_url_and_token(server):
    url = server.get_url()
    m = re.match(r"^http://127\.0\.0\.1:(\d+)/sync/([0-9a-f]{16})$", url)
    assert m, url
    assert int(m.group(1)) == server.port != 0
    token = server.get_token()
    assert re.match(r"^dsn1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$", token)
    assert server.get_token() == token
    kid, secret = dsn_sync.parse_token(token)
    assert len(secret) == 32
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass


def test_secret_option_forms_and_environment(monkeypatch):
    secret = os.urandom(32)
    import base64
    want = dsn_sync.Keyring(secret).instance
    forms = [secret, secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
             base64.urlsafe_b64encode(secret).decode().rstrip("=")]
    for form in forms:
        assert base_path(dsn_sync.DSNSync(port=0, secret=form)) == "/sync/" + want, form
    monkeypatch.setenv("DSN_SYNC_SECRET", secret.hex())
    assert base_path(dsn_sync.DSNSync(port=0)) == "/sync/" + want
    monkeypatch.delenv("DSN_SYNC_SECRET")
    a, b = dsn_sync.DSNSync(port=0), dsn_sync.DSNSync(port=0)
    assert base_path(a) != base_path(b), "without a secret each process draws a random one"
    for bad in (b"short", "zz" * 32, os.urandom(33), "not a secret"):
        with pytest.raises(ValueError):
            dsn_sync.DSNSync(port=0, secret=bad)


def test_constructor_rejects_bad_options():
    for kwargs in ({"port": -1}, {"port": 70000}, {"port": "3000"}, {"rotate_every": -1},
                   {"max_body": 0}, {"page_size": 0}, {"certfile": "only-cert.pem"}):
        with pytest.raises((ValueError, TypeError)):
            dsn_sync.DSNSync(**kwargs)


def test_port_in_use_and_constructor_forms():
    with dsn_sync.DSNSync(port=0) as first:
        second = dsn_sync.DSNSync(port=first.port)
        with pytest.raises(OSError):
            second.start()
        assert second.stop() is True  # never started: still fine
    positional = dsn_sync.DSNSync(0, None)
    assert positional.start() is True
    try:
        assert positional.get_url().startswith("http://127.0.0.1:")
    finally:
        positional.stop()
    with pytest.raises(ValueError):
        dsn_sync.DSNSync(0, "nonsense://somewhere")
    anywhere = dsn_sync.DSNSync(port=0, host="0.0.0.0")
    assert anywhere.start() is True
    try:
        assert re.match(r"^http://127\.0\.0\.1:%d/sync/[0-9a-f]{16}$" % anywhere.port, anywhere.get_url())
        status, _, _ = http_request(anywhere.port, "OPTIONS", base_path(anywhere))
        assert status == 204
    finally:
        anywhere.stop()


def test_context_manager_starts_and_stops():
    with dsn_sync.DSNSync(port=0) as sync:
        assert isinstance(sync, dsn_sync.DSNSync)
        port = sync.port
        assert port != 0
        status, headers, _ = http_request(port, "OPTIONS", base_path(sync))
        assert status == 204
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_start_stop_return_true_and_restart_on_the_same_port(make_raw):
    sync = dsn_sync.DSNSync(port=0, secret=os.urandom(32))
    assert sync.start() is True
    port = sync.port
    sync.sync("t", "k", {"v": 1})
    raw = make_raw(sync)
    raw.hello()  # leaves a keep-alive connection open across stop()
    assert sync.stop() is True
    assert sync.stop() is True
    raw.close()
    again = dsn_sync.DSNSync(port=port)
    try:
        assert again.start() is True
        assert again.port == port
        r2 = make_raw(again)
        r2.hello()
        r2.close()
    finally:
        assert again.stop() is True
    # the same object starts again on the same port, data intact
    assert sync.start() is True
    try:
        assert sync.port == port
        r3 = make_raw(sync)
        records, _, _ = r3.reset()
        assert records["t"] == {"k": {"v": 1}}
        r3.close()
    finally:
        sync.stop()


def test_stats_counts(server, raw):
    before = server.stats()
    for field in ("connections", "requests", "seq", "changes", "bytes_in", "bytes_out"):
        assert field in before, field
    raw.hello()
    server.sync("t", "a", {"v": 1})
    server.sync("t", "b", {"v": 2})
    raw.ok("pull", since=None, wait=0)
    after = server.stats()
    assert after["requests"] >= before["requests"] + 2
    assert after["seq"] == before["seq"] + 2
    assert after["changes"] >= before["changes"] + 2
    assert after["bytes_in"] > before["bytes_in"]
    assert after["bytes_out"] > before["bytes_out"]
    assert after["connections"] >= 1  # raw's keep-alive connection is open
    raw.close()
    wait_until(lambda: server.stats()["connections"] == 0, what="the closed connection to be dropped")


def test_every_runs_survives_an_exception_and_stops(make_server, caplog):
    sync = dsn_sync.DSNSync(port=0)
    runs = []
    enough = threading.Event()

    @sync.every(0.02)
    def tick():
        runs.append(threading.current_thread().name)
        if len(runs) == 1:
            raise RuntimeError("tick failed once")
        if len(runs) >= 3:
            enough.set()

    assert tick is not None and callable(tick)
    assert runs == [], "tasks run only while the server runs"
    with caplog.at_level(logging.ERROR, logger="dsn_sync"):
        sync.start()
        try:
            assert enough.wait(5), "the task did not keep running after raising"
            assert threading.current_thread().name not in runs
        finally:
            assert sync.stop() is True
    assert any(r.exc_info and "tick failed once" in str(r.exc_info[1]) for r in caplog.records), \
        "the exception must be logged with its traceback to the dsn_sync logger"
    count = len(runs)
    time.sleep(0.15)  # several periods: proving a negative needs some wall time
    assert len(runs) == count, "the task kept running after stop()"


def test_every_registered_after_start(server):
    fired = threading.Event()
    server.every(0.01)(fired.set)
    assert fired.wait(5)
    with pytest.raises(ValueError):
        server.every(0)
    with pytest.raises(ValueError):
        server.every(-1)


# -- write handlers ------------------------------------------------------------


@pytest.fixture
def users(server):
    """A `users` table (key user_id) whose handlers record their calls and do what `verdict` says."""
    server.define_table("users", {"key": "user_id", "fields": ["name", "email", "cart", "status"]})
    seen = {"calls": [], "verdict": True}

    @server.on_create("users")
    def on_create(data):  # the one-argument form
        seen["calls"].append(("create", dict(data), None))
        return seen["verdict"]

    @server.on_update("users")
    def on_update(data, ctx):  # the two-argument form
        seen["calls"].append(("update", dict(data), ctx))
        return seen["verdict"]

    @server.on_delete("users")
    def on_delete(data, ctx):
        seen["calls"].append(("delete", dict(data), ctx))
        return seen["verdict"]
    return seen


def test_handlers_get_the_documented_data_and_ctx(server, raw, users):
    created = raw.ok("create", table="users", key="u1", data={"name": "Ann", "email": "a@x"}, mid="m1")
    assert created["record"] == {"name": "Ann", "email": "a@x"}
    assert isinstance(created["seq"], int)
    op, data, ctx = users["calls"][-1]
    assert (op, data, ctx) == ("create", {"user_id": "u1", "name": "Ann", "email": "a@x"}, None)

    updated = raw.ok("update", table="users", key="u1", data={"status": "gold"}, mid="m2")
    assert updated["record"] == {"name": "Ann", "email": "a@x", "status": "gold"}
    assert updated["seq"] > created["seq"]
    op, data, ctx = users["calls"][-1]
    assert op == "update" and data == {"user_id": "u1", "status": "gold"}, "update gets the changed fields only"
    assert (ctx.op, ctx.table, ctx.key) == ("update", "users", "u1")
    assert isinstance(ctx.claims, dict) and ctx.claims.get("v") == 1 and ctx.claims.get("sub") is None

    deleted = raw.ok("delete", table="users", key="u1", mid="m3")
    assert deleted["record"] is None and deleted["seq"] > updated["seq"]
    op, data, ctx = users["calls"][-1]
    assert op == "delete" and data == {"user_id": "u1"} and ctx.op == "delete"
    assert server.get("users", "u1") is None


@pytest.mark.parametrize("verdict", [True, None, "truthy but not a dict"])
def test_handler_true_or_none_applies(server, raw, users, verdict):
    users["verdict"] = verdict
    raw.ok("create", table="users", key="u1", data={"name": "Ann"}, mid="c")
    assert server.get("users", "u1") == {"name": "Ann"}
    raw.ok("update", table="users", key="u1", data={"name": "Bea"}, mid="u")
    assert server.get("users", "u1") == {"name": "Bea"}
    raw.ok("delete", table="users", key="u1", mid="d")
    assert server.get("users", "u1") is None


def test_handler_false_rejects_and_changes_nothing(server, raw, users):
    server.sync("users", "u1", {"name": "Ann"})
    seq = server.stats()["seq"]
    users["verdict"] = False
    raw.err("create", "rejected", table="users", key="u2", data={"name": "X"}, mid="1")
    raw.err("update", "rejected", table="users", key="u1", data={"name": "X"}, mid="2")
    raw.err("delete", "rejected", table="users", key="u1", mid="3")
    assert server.get("users", "u2") is None and server.get("users", "u1") == {"name": "Ann"}
    assert server.stats()["seq"] == seq


def test_handler_dict_is_the_stored_record(server, raw, users):
    users["verdict"] = {"user_id": "u1", "name": "Ann", "status": "new"}
    answer = raw.ok("create", table="users", key="u1", data={"name": "ann"}, mid="1")
    assert answer["record"] == {"name": "Ann", "status": "new"}
    assert server.get("users", "u1") == {"name": "Ann", "status": "new"}
    users["verdict"] = {"status": "checked"}
    answer = raw.ok("update", table="users", key="u1", data={"email": "a@x"}, mid="2")
    stored = server.get("users", "u1")
    assert stored["status"] == "checked" and answer["record"] == stored
    # a dict that breaks the schema is the backend's fault: handler_error, nothing stored
    users["verdict"] = {"not_a_field": 1}
    raw.err("create", "handler_error", table="users", key="u9", data={"name": "x"}, mid="3")
    assert server.get("users", "u9") is None


def test_handler_raising_is_handler_error_without_internals(server, raw, caplog):
    server.define_table("boom", {"key": "id", "fields": None})

    @server.on_create("boom")
    def explode(data):
        raise KeyError("secret-internal-detail /etc/passwd")

    with caplog.at_level(logging.ERROR, logger="dsn_sync"):
        answer = raw.err("create", "handler_error", table="boom", key="k", data={"a": 1}, mid="1")
    message = answer["error"]["message"]
    for leak in ("secret-internal-detail", "passwd", "Traceback", "KeyError", "explode", ".py"):
        assert leak not in message, message
    assert server.get("boom", "k") is None
    logged = [r for r in caplog.records if r.name == "dsn_sync" and r.exc_info]
    assert logged and "secret-internal-detail" in str(logged[-1].exc_info[1]), "full traceback goes to the logger"


def test_handler_raising_dsnerror_sends_its_code(server, raw):
    server.define_table("guarded", {"key": "id", "fields": None})

    @server.on_create("guarded")
    def guard(data):
        raise dsn_sync.DSNError("no more than three", "rejected")

    answer = raw.err("create", "rejected", table="guarded", key="k", data={}, mid="1")
    assert answer["error"]["message"] == "no more than three"


def test_write_error_codes(server, raw, users):
    server.define_table("readonly", {"key": "id", "fields": ["v"]})
    server.sync("readonly", "r1", {"v": 1})
    server.sync("users", "u1", {"name": "Ann"})
    # no handler: writes are opt-in per table and per op
    raw.err("create", "no_handler", table="readonly", key="r2", data={"v": 2}, mid="a")
    raw.err("update", "no_handler", table="readonly", key="r1", data={"v": 2}, mid="b")
    raw.err("delete", "no_handler", table="readonly", key="r1", mid="c")
    assert server.get("readonly", "r1") == {"v": 1}
    server.define_table("halfopen", {"key": "id", "fields": None})
    server.on_create("halfopen")(lambda data: True)
    raw.ok("create", table="halfopen", key="h", data={}, mid="d")
    raw.err("update", "no_handler", table="halfopen", key="h", data={"x": 1}, mid="e")
    # exists / not_found
    raw.err("create", "exists", table="users", key="u1", data={"name": "X"}, mid="f")
    raw.err("update", "not_found", table="users", key="ghost", data={"name": "X"}, mid="g")
    raw.err("delete", "not_found", table="users", key="ghost", mid="h")
    # invalid: unknown fields (named), a different key field, data not an object, bad keys
    answer = raw.err("create", "invalid", table="users", key="u2", data={"name": "x", "colour": "red"}, mid="i")
    assert "colour" in answer["error"]["message"]
    raw.err("update", "invalid", table="users", key="u1", data={"hat": 1}, mid="j")
    raw.err("create", "invalid", table="users", key="u2", data={"user_id": "u3"}, mid="k")
    raw.err("create", "invalid", table="users", key="u2", data=["name", "x"], mid="l")
    raw.err("create", "invalid", table="users", key="", data={"name": "x"}, mid="m")
    raw.err("create", "invalid", table="users", key="x" * 257, data={"name": "x"}, mid="n")
    raw.err("create", "invalid", table="users", key=17, data={"name": "x"}, mid="o")
    # the key field repeated with the same value is dropped
    answer = raw.ok("create", table="users", key="u2", data={"user_id": "u2", "name": "B"}, mid="p")
    assert answer["record"] == {"name": "B"}
    # unknown table
    raw.err("create", "unknown_table", table="nowhere", key="k", data={}, mid="q")
    # bad_request: unknown op, missing or oversized mid
    raw.err("upsert", "bad_request", table="users", key="u1", data={}, mid="r")
    raw.err("create", "bad_request", table="users", key="u5", data={"name": "x"})
    raw.err("create", "bad_request", table="users", key="u5", data={"name": "x"}, mid="m" * 65)
    raw.err("create", "bad_request", table="users", key="u5", data={"name": "x"}, mid="")
    raw.ok("create", table="users", key="u5", data={"name": "x"}, mid="m" * 64)
    assert server.get("users", "u1") == {"name": "Ann"}
    assert sorted(server.get_all("users")) == ["u1", "u2", "u5"]


def test_writes_to_one_key_are_never_interleaved(server, users, make_raw):
    inside, overlaps = [0], []
    lock = threading.Lock()
    server.sync("users", "u1", {"cart": []})

    @server.on_update("users")
    def slow_update(data, ctx):
        with lock:
            inside[0] += 1
            if inside[0] > 1:
                overlaps.append(data)
        threading.Event().wait(0.03)  # hold the key long enough for a racing write to try to enter
        with lock:
            inside[0] -= 1
        return True

    def writer(n):
        r = make_raw(server)
        r.ok("update", table="users", key="u1", data={"name": "w%d" % n}, mid="w%d" % n)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlaps, "two handlers for the same key ran at once"
    assert server.get("users", "u1")["name"] in {"w0", "w1", "w2", "w3"}


def test_schema_change_after_start_reaches_clients(server, raw, make_client):
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5)
    _, cursor, _ = raw.reset()
    server.define_table("late", {"key": "id", "fields": ["x"]})
    answer = raw.ok("pull", since=cursor, wait=0)
    assert answer["sv"] > cursor["sv"] and answer["tables"]["late"] == {"key": "id", "fields": ["x"]}
    assert answer["changes"] == []
    wait_until(lambda: "late" in client.schema, what="the schema change to reach the Python client")
    assert client.schema["late"] == {"key": "id", "fields": ["x"]}
    server.define_table("late", {"key": "id", "fields": ["x", "y"]})
    wait_until(lambda: client.schema["late"]["fields"] == ["x", "y"], what="a redefinition to reach the client")
    # a changes answer carries sv and tables only when the schema changed
    cursor = {"epoch": answer["epoch"], "seq": answer["seq"], "sv": raw.hello()["sv"]}
    server.sync("late", "k", {"x": 1})
    answer = raw.ok("pull", since=cursor, wait=0)
    assert "tables" not in answer and answer["changes"] == [["late", "k", {"x": 1}]]


def test_quick_server_command(tmp_path):
    import sys
    root = str(Path(dsn_sync.__file__).resolve().parent)
    helped = subprocess.run([sys.executable, "-m", "dsn_sync", "--help"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=30)
    assert helped.returncode == 0 and b"--port" in helped.stdout and b"--secret-file" in helped.stdout
    secret_file = tmp_path / "secret"
    proc = subprocess.Popen([sys.executable, "-m", "dsn_sync", "--port", "0", "--secret-file", str(secret_file)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = token = None
        lines = []
        deadline = time.monotonic() + 20
        while (url is None or token is None) and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            m = re.search(r"(https?://127\.0\.0\.1:\d+/sync/[0-9a-f]{16})\s*$", line)
            url = url or (m.group(1) if m else None)
            m = re.search(r"(dsn1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43})", line)
            token = token or (m.group(1) if m else None)
        assert url and token, "".join(lines)
        assert secret_file.is_file()
        assert urlsplit(url).path == "/sync/" + dsn_sync.Keyring(secret_file.read_text().strip()).instance
        client = dsn_sync.connect(url, token)
        try:
            assert client.wait_ready(5)
        finally:
            client.close()
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_sync_refuses_text_that_is_not_utf8_encodable(server, raw):
    for table, key, data in (("t", "k", {"v": "\ud800"}), ("t", "\udfff", {"v": 1}), ("t", "k2", {"\ud800": 1})):
        with pytest.raises(ValueError):
            server.sync(table, key, data)
    server.sync("t", "fine", {"v": "héllo ✓ 日本 😀"})
    records, _, _ = raw.reset()
    assert records["t"] == {"fine": {"v": "héllo ✓ 日本 😀"}}


# =============================================================================
# 3. The protocol over sockets
# =============================================================================


def test_hello(server, raw):
    server.define_table("users", {"key": "user_id", "fields": ["name"]})
    server.sync("users", "u1", {"name": "Ann"})
    hello = raw.hello()
    assert hello["instance"] == base_path(server).rsplit("/", 1)[1]
    assert isinstance(hello["epoch"], str) and hello["epoch"]
    assert hello["seq"] == 1 and isinstance(hello["sv"], int)
    assert hello["tables"] == {"users": {"key": "user_id", "fields": ["name"]}}
    assert abs(hello["now"] - now_ms()) < 5000
    # rotation is on by default: the first request already moves the token to a random path
    assert re.match(r"^%s/[A-Za-z0-9_-]{12}$" % re.escape(raw.base), hello["ep"]), hello["ep"]
    assert raw.last_headers.get("access-control-allow-origin")


def test_pull_reset_then_changes(server, raw):
    server.sync("t", "a", {"v": 1})
    server.sync("u", "b", {"v": 2})
    records, cursor, pages = raw.reset()
    assert len(pages) == 1 and pages[0]["more"] is False
    assert records == {"t": {"a": {"v": 1}}, "u": {"b": {"v": 2}}}
    assert set(pages[0]["tables"]) == {"t", "u"}
    assert cursor["seq"] == 2
    empty = raw.ok("pull", since=cursor, wait=0)
    assert empty["changes"] == [] and empty["seq"] == 2 and empty["epoch"] == cursor["epoch"]
    assert "reset" not in empty or empty["reset"] is False
    # one entry per key, its latest state, in sequence order
    server.sync("t", "a", {"v": 10})
    server.sync("t", "c", {"v": 3})
    server.sync("t", "a", {"w": 1})
    server.remove("u", "b")
    server.sync("t", "d", {"v": 4})
    answer = raw.ok("pull", since=cursor, wait=0)
    assert answer["changes"] == [["t", "c", {"v": 3}], ["t", "a", {"v": 10, "w": 1}], ["u", "b", None],
                                 ["t", "d", {"v": 4}]]
    assert answer["seq"] == 7
    # a long-poll that expires answers an empty change list at the same cursor
    cursor = {"epoch": answer["epoch"], "seq": answer["seq"], "sv": cursor["sv"]}
    expired = raw.ok("pull", since=cursor, wait=0.2)
    assert expired["changes"] == [] and expired["seq"] == 7


def test_pull_resets_when_the_cursor_cannot_be_served(server, raw):
    server.sync("t", "a", {"v": 1})
    _, cursor, _ = raw.reset()
    for since in ({"epoch": "another-epoch", "seq": 1, "sv": cursor["sv"]},
                  {"epoch": cursor["epoch"], "seq": cursor["seq"] + 5, "sv": cursor["sv"]},
                  {"epoch": cursor["epoch"], "seq": cursor["seq"], "sv": cursor["sv"] + 1},
                  None):
        answer = raw.ok("pull", since=since, wait=0)
        assert answer.get("reset") is True, since
        assert answer["records"]["t"] == {"a": {"v": 1}}
        assert answer["seq"] == 1 and answer["epoch"] == cursor["epoch"]
    # older than the oldest change the server still remembers (tombstones compacted)
    old = dict(cursor)
    server.sync("t", "b", {"v": 2})
    server.remove("t", "b")
    assert private(server, "store").compact() >= 1
    answer = raw.ok("pull", since=old, wait=0)
    assert answer.get("reset") is True and answer["records"]["t"] == {"a": {"v": 1}}


@pytest.mark.parametrize("wait", [31, -1, "5", None, [1]])
def test_pull_bad_wait_is_bad_request(raw, wait):
    raw.err("pull", "bad_request", since=None, wait=wait)


def test_reset_pages(make_server, make_raw):
    sync = make_server(page_size=3)
    keys = ["k%02d" % i for i in range(10)]
    for i, k in enumerate(keys):
        sync.sync("t", k, {"n": i})
    sync.define_table("empty", {"key": "id", "fields": None})
    raw = make_raw(sync)
    first = raw.ok("pull", since=None, wait=0)
    assert first["reset"] is True and first["more"] is True and isinstance(first["next"], str)
    assert len(first["records"]["t"]) == 3
    snap = first["seq"]
    assert snap == 10
    sent = set(first["records"]["t"])
    assert sorted(sent) == keys[:3], "pages walk the records in sequence order"
    later = [k for k in keys if k not in sent]
    # changes while the client walks the pages: skipped there, delivered after seq
    sync.sync("t", later[0], {"n": 100})
    sync.remove("t", later[1])
    sync.sync("t", "new", {"n": 200})
    sync.sync("t", sorted(sent)[0], {"n": 300})
    pages = [first]
    page = first
    while page["more"]:
        page = raw.ok("pull", since=None, next=page["next"], wait=0)
        pages.append(page)
        assert len(pages) < 20
    for p in pages:
        assert p["reset"] is True
        assert (p["epoch"], p["seq"], p["sv"]) == (first["epoch"], snap, first["sv"]), "pages repeat the snapshot"
        assert set(p["tables"]) == {"t", "empty"}
        assert len(p["records"].get("t", {})) <= 3
    assert pages[-1]["more"] is False and not pages[-1].get("next")
    assert len(pages) >= 3
    seen = [k for p in pages for k in p.get("records", {}).get("t", {})]
    assert len(seen) == len(set(seen)), "a record appears on two pages"
    assert later[0] not in seen and later[1] not in seen and "new" not in seen
    mirror = {}
    for p in pages:
        mirror.update(p["records"].get("t", {}))
    # then the changes after the snapshot's seq bring the mirror to the store
    # (a changes answer may stop early too: pull again from its seq until nothing is left)
    cursor = {"epoch": first["epoch"], "seq": snap, "sv": first["sv"]}
    for _ in range(10):
        answer = raw.ok("pull", since=cursor, wait=0)
        for table, key, record in answer["changes"]:
            if record is None:
                mirror.pop(key, None)
            else:
                mirror[key] = record
        if answer["seq"] == cursor["seq"]:
            break
        assert answer["seq"] > cursor["seq"]
        cursor["seq"] = answer["seq"]
    assert cursor["seq"] == sync.stats()["seq"]
    assert mirror == sync.get_all("t")
    # a `next` the server does not know gets the first page of a fresh reset
    for bogus in ("garbage", "%s.5.2" % "other-epoch", first["next"].rsplit(".", 2)[0] + ".999.0", 17):
        fresh = raw.ok("pull", since=None, next=bogus, wait=0)
        assert fresh["reset"] is True and fresh["seq"] == sync.stats()["seq"], bogus
        assert len(fresh["records"]["t"]) <= 3
    records, _, _ = raw.reset()
    assert records["t"] == sync.get_all("t")


def test_default_reset_page_size(server, raw):
    for i in range(6000):
        server.sync("many", "r%05d" % i, {"i": i})
    first = raw.ok("pull", since=None, wait=0)
    assert first["more"] is True, "6,000 records do not fit one default page (about 5,000)"
    assert 1000 <= len(first["records"]["many"]) <= 5500
    records, _, pages = raw.reset()
    assert len(records["many"]) == 6000 and len(pages) == 2


def test_long_poll_wakes_on_a_change(store_server, make_raw):
    server = store_server()
    server.sync("t", "a", {"v": 1})
    waiter = make_raw(server)
    _, cursor, _ = waiter.reset()
    result = {}

    def pull():
        started = time.monotonic()
        result["answer"] = waiter.ok("pull", since=cursor, wait=5)
        result["elapsed"] = time.monotonic() - started
    thread = threading.Thread(target=pull)
    thread.start()
    try:
        wait_until(lambda: server.stats()["waiting"] == 1, what="the pull to be held")
        writer = threading.Thread(target=server.sync, args=("t", "b", {"v": 2}))
        writer.start()
        writer.join(5)
        thread.join(10)
        assert not thread.is_alive()
        assert result["answer"]["changes"] == [["t", "b", {"v": 2}]]
        assert result["elapsed"] < 4.5, "answered by the wait's expiry, not by the change"
    finally:
        thread.join(10)


def test_long_poll_wakes_on_a_schema_change(server, make_raw):
    waiter = make_raw(server)
    cursor = waiter.cursor()
    result = {}
    thread = threading.Thread(target=lambda: result.update(a=waiter.ok("pull", since=cursor, wait=5)))
    thread.start()
    try:
        wait_until(lambda: server.stats()["waiting"] == 1, what="the pull to be held")
        server.define_table("fresh", {"key": "id", "fields": None})
        thread.join(10)
        assert "fresh" in result["a"]["tables"] and result["a"]["changes"] == []
    finally:
        thread.join(10)


def test_stop_wakes_long_polls_and_closes_keep_alive_connections(make_server, make_raw):
    sync = make_server()
    idle = make_raw(sync)
    idle.hello()
    waiter = make_raw(sync)
    cursor = waiter.cursor()
    outcome = []

    def pull():
        try:
            outcome.append(waiter.call("pull", since=cursor, wait=30))
        except (OSError, http.client.HTTPException) as e:
            outcome.append(e)
    thread = threading.Thread(target=pull)
    thread.start()
    wait_until(lambda: sync.stats()["waiting"] == 1, what="the pull to be held")
    assert sync.stop() is True
    thread.join(5)
    assert not thread.is_alive(), "stop() left a long-poll hanging"
    # the idle keep-alive connection was closed by the server
    idle.sock.settimeout(5)
    assert idle.sock.recv(1) == b""


def mint(secret, **claims):
    """A token for the server holding ``secret``, minted by an independent Keyring."""
    body = {"v": 1, "jti": dsn_sync.b64u_encode(os.urandom(8)), "iat": int(time.time()), "exp": None,
            "sub": None, "read": "*", "write": "*"}
    body.update(claims)
    return dsn_sync.Keyring(secret).mint(body)


def strip_fresh(answer):
    return {k: v for k, v in answer.items() if k not in ("now", "ep")}


def test_batch(server, raw, users):
    server.sync("users", "u1", {"name": "Ann"})
    mutations = [
        {"op": "create", "table": "users", "key": "b1", "data": {"name": "B"}, "mid": "b-1"},
        {"op": "create", "table": "users", "key": "u1", "data": {"name": "X"}, "mid": "b-2"},
        {"op": "update", "table": "users", "key": "b1", "data": {"status": "s"}, "mid": "b-3"},
        {"op": "delete", "table": "users", "key": "ghost", "mid": "b-4"},
        {"op": "create", "table": "users", "key": "b2", "data": {"hat": 1}, "mid": "b-5"},
        {"op": "create", "table": "nowhere", "key": "k", "data": {}, "mid": "b-6"},
        {"op": "create", "table": "users", "key": "b3", "data": {}},
        {"op": "delete", "table": "users", "key": "u1", "mid": "b-7"},
    ]
    answer = raw.ok("batch", mutations=mutations)
    results = answer["results"]
    assert len(results) == len(mutations)
    assert results[0]["ok"] is True and results[0]["record"] == {"name": "B"} and isinstance(results[0]["seq"], int)
    codes = [r["error"]["code"] if not r["ok"] else None for r in results]
    assert codes == [None, "exists", None, "not_found", "invalid", "unknown_table", "bad_request", None]
    assert results[2]["record"] == {"name": "B", "status": "s"} and results[2]["seq"] > results[0]["seq"]
    assert results[7]["record"] is None
    assert server.get_all("users") == {"b1": {"name": "B", "status": "s"}}
    calls, seq = len(users["calls"]), server.stats()["seq"]
    # the same batch again (a new frame, the same mids): the same answers, nothing applied twice
    again = raw.ok("batch", mutations=mutations)
    for i, (first, second) in enumerate(zip(results, again["results"])):
        if i == 6:
            continue  # the mutation with no mid: refused each time, never remembered
        # The ledger keeps answers, not records (issue 15, item 7): a repeat carries the
        # key's current state as this token may read it, and the rest of the first answer.
        assert {k: v for k, v in first.items() if k != "record"} == {k: v for k, v in second.items() if k != "record"}
        if second["ok"]:
            assert second["record"] == server.get("users", mutations[i]["key"])
    assert len(users["calls"]) == calls and server.stats()["seq"] == seq
    raw.err("batch", "bad_request", mutations=[])
    raw.err("batch", "bad_request", mutations={"op": "create"})
    raw.err("batch", "bad_request")


def test_mid_idempotency(server, raw, users, make_raw):
    first = raw.ok("create", table="users", key="k", data={"name": "A"}, mid="same")
    calls, seq = len(users["calls"]), server.stats()["seq"]
    again = raw.ok("create", table="users", key="k", data={"name": "DIFFERENT"}, mid="same")
    assert strip_fresh(again) == strip_fresh(first)
    assert again["now"] >= first["now"]
    other_op = raw.ok("delete", table="users", key="k", mid="same")
    assert strip_fresh(other_op) == strip_fresh(first)
    assert len(users["calls"]) == calls and server.stats()["seq"] == seq
    assert server.get("users", "k") == {"name": "A"}
    # error answers are remembered the same way
    refused = raw.err("create", "exists", table="users", key="k", data={"name": "B"}, mid="err")
    server.remove("users", "k")
    assert strip_fresh(raw.err("create", "exists", table="users", key="k", data={"name": "B"}, mid="err")) == \
        strip_fresh(refused)
    assert server.get("users", "k") is None
    # mids belong to a token: the app token of another server process would differ, and so
    # does a second token here (its own jti)
    second = make_raw(server, token=server.issue_token(write=["users"]))
    answer = second.ok("create", table="users", key="k", data={"name": "C"}, mid="same")
    assert answer["record"] == {"name": "C"}


def test_tampered_frames_are_401(server, raw):
    path = raw.base
    frame, nonce = raw.frame(path, {"op": "hello", "t": now_ms()})
    kid_end = 3 + len(raw.kid)
    positions = {"kid": 3 + 5, "nonce": kid_end + 1, "ciphertext": kid_end + 20, "tag": len(frame) - 1}
    for where, i in positions.items():
        bad = bytearray(frame)
        bad[i] ^= 0x01
        status, answer = raw.send(path, bytes(bad), nonce)
        assert status == 401, where
        assert raw.last_headers.get("access-control-allow-origin")
    # truncated / extended seal
    assert raw.send(path, frame[:-1], nonce)[0] == 401
    assert raw.send(path, frame + b"\x00", nonce)[0] == 401
    # a frame sealed for one path and sent to another live path
    raw.hello()
    assert raw.ep != path
    status, _ = raw.send(raw.ep, frame, nonce)
    assert status == 401
    # the untouched frame still works
    status, answer = raw.send(path, frame, nonce)
    assert status == 200 and answer["ok"] is True


def test_another_servers_token_is_401(make_server, make_raw):
    a, b = make_server(), make_server()
    raw = make_raw(a, token=b.get_token())
    assert raw.call("hello")[0] == 401
    assert raw.call("pull", path=base_path(a), since=None, wait=0)[0] == 401
    # and a kid forged from nothing
    forged = "dsn1." + dsn_sync.b64u_encode(os.urandom(120)) + "." + dsn_sync.b64u_encode(os.urandom(32))
    raw = make_raw(a, token=forged)
    assert raw.call("hello")[0] == 401


def test_expired_token_is_a_sealed_expired_error(make_server, make_raw):
    secret = os.urandom(32)
    sync = make_server(secret=secret)
    expired = make_raw(sync, token=mint(secret, exp=int(time.time()) - 10))
    fine = make_raw(sync, token=mint(secret, exp=int(time.time()) + 3600))
    expired.err("hello", "expired")
    fine.hello()
    fine.ok("pull", since=None, wait=0)


def test_revoke_makes_a_token_401(server, make_raw):
    token = server.issue_token(sub="ann", write=["t"])
    raw = make_raw(server, token=token)
    raw.hello()
    server.revoke(token)
    assert raw.call("hello")[0] == 401
    assert raw.call("pull", since=None, wait=0)[0] == 401
    make_raw(server).hello()  # other tokens are unaffected


def test_write_rights_are_enforced(make_server, make_raw):
    secret = os.urandom(32)
    sync = make_server(secret=secret)
    sync.define_table("t", {"key": "id", "fields": None})
    sync.define_table("other", {"key": "id", "fields": None})
    sync.on_create("t")(lambda data: True)
    sync.on_create("other")(lambda data: True)
    raw = make_raw(sync, token=mint(secret, write=["other"]))
    refused = raw.err("create", "forbidden", table="t", key="k", data={}, mid="1")
    # says what the token may do, and where the backend grants more (a newcomer's question)
    assert refused["error"]["message"] == ("this token may not write to table 't' (it may write to 'other'; the "
                                           "backend grants writes when it issues a token: "
                                           "issue_token(sub=..., write=['t']))"), refused
    raw.ok("create", table="other", key="k", data={}, mid="2")
    assert sync.get("t", "k") is None and sync.get("other", "k") == {}


def test_read_rights_filter_resets_and_changes(make_server, make_raw):
    secret = os.urandom(32)
    sync = make_server(secret=secret)
    sync.sync("mine", "a", {"v": 1})
    sync.sync("secret", "s", {"v": 2})
    raw = make_raw(sync, token=mint(secret, read=["mine"], write=["mine"]))
    records, cursor, pages = raw.reset()
    assert records == {"mine": {"a": {"v": 1}}}
    assert "secret" not in pages[0]["tables"]
    sync.sync("secret", "s2", {"v": 3})
    sync.sync("mine", "b", {"v": 4})
    answer = raw.ok("pull", since=cursor, wait=0)
    assert answer["changes"] == [["mine", "b", {"v": 4}]]


def test_replayed_frame_is_refused(server, raw, users):
    raw.hello()
    path = raw.ep
    frame, nonce = raw.frame(path, {"op": "create", "t": now_ms(), "table": "users", "key": "r",
                                    "data": {"name": "once"}, "mid": "replay-me"})
    status, first = raw.send(path, frame, nonce)
    assert status == 200 and first["ok"] is True
    seq = server.stats()["seq"]
    status, second = raw.send(path, frame, nonce)
    assert status == 200 and second["ok"] is False and second["error"]["code"] == "replay"
    assert server.stats()["seq"] == seq
    # a read replayed too
    frame, nonce = raw.frame(raw.base, {"op": "hello", "t": now_ms()})
    assert raw.send(raw.base, frame, nonce)[1]["ok"] is True
    assert raw.send(raw.base, frame, nonce)[1]["error"]["code"] == "replay"


def test_skewed_clock_is_refused(server, raw, users):
    for skew in (-61000, 61000, -3600 * 1000, 10 ** 13):
        answer = raw.err("hello", "clock", t=now_ms() + skew)
        assert abs(answer["now"] - now_ms()) < 5000, "the answer carries the server's clock"
    for bad in (OMIT, None, "now", True, [now_ms()]):
        status, answer = raw.call("hello", t=bad)
        assert status == 200 and answer["ok"] is False and answer["error"]["code"] in ("clock", "bad_request")
    raw.err("create", "clock", table="users", key="k", data={"name": "x"}, mid="late", t=now_ms() - 120000)
    assert server.get("users", "k") is None
    # the refusal is not remembered: the same mid with a good clock goes through
    raw.ok("create", table="users", key="k", data={"name": "x"}, mid="late")
    # 50 s behind is inside the window, but before this in-memory server started: a frame the
    # previous process may have accepted, so `clock` (PROTOCOL.md 4's replay promise across restarts)
    raw.err("hello", "clock", t=now_ms() - 50000)
    raw.ok("hello", t=now_ms() + 50000)


def test_wrong_paths_are_404(server, raw):
    base = raw.base
    frame, _ = raw.frame(base, {"op": "hello", "t": now_ms()})
    for path in ("/sync/0000000000000000", "/", "/sync", "/sync/", base + "/made-up", base + "x",
                 "/api" + base, base + "/AAAAAAAAAAAA", "/dsn_client.js"):
        status, _ = raw.post(path, frame)
        assert status == 404, path
        assert raw.last_headers.get("access-control-allow-origin"), path
    # after authentication: a non-hello op at the base path
    frame, nonce = raw.frame(base, {"op": "pull", "t": now_ms(), "since": None, "wait": 0})
    assert raw.send(base, frame, nonce)[0] == 404
    # a query string is not part of the path
    frame, nonce = raw.frame(base, {"op": "hello", "t": now_ms()})
    assert raw.send(base + "?x=1", frame, nonce)[0] == 200


def test_methods_other_than_post(server):
    base = base_path(server)
    for method, path in (("GET", base), ("GET", "/sync/x"), ("GET", "/favicon.ico"),
                         ("PUT", base), ("DELETE", base), ("PATCH", base), ("HEAD", base)):
        status, headers, body = http_request(server.port, method, path)
        assert status == 405, (method, path)
        assert headers.get("access-control-allow-origin")
        # an unknown GET says what this server is in a line of text (issue 14); HEAD has no body
        assert (b"POST frames" in body) if method == "GET" else not body, (method, body)
        if method == "GET":  # it echoes the path: text, and only text, to a browser
            assert headers.get("x-content-type-options") == "nosniff", headers
    # GET / is a short page naming the server and where the client and inspector are (issue 14)
    status, headers, body = http_request(server.port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"dsn-sync" in body and b"dsn_client.js" in body and b"inspect" in body
    status, headers, body = http_request(server.port, "OPTIONS", base,
                                         headers={"Origin": "https://app.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert status == 204 and body == b""
    assert headers.get("access-control-allow-origin") in ("*", "https://app.example")
    assert "POST" in headers.get("access-control-allow-methods", "")
    assert "content-type" in headers.get("access-control-allow-headers", "").lower()


def test_allow_origins_list(make_server):
    sync = make_server(allow_origins=["https://good.example"])
    status, headers, _ = http_request(sync.port, "OPTIONS", base_path(sync), headers={"Origin": "https://good.example"})
    assert headers.get("access-control-allow-origin") == "https://good.example"
    status, headers, _ = http_request(sync.port, "OPTIONS", base_path(sync), headers={"Origin": "https://evil.example"})
    assert headers.get("access-control-allow-origin") != "https://evil.example"
    assert headers.get("access-control-allow-origin") != "*"


@pytest.mark.parametrize("limit", [None, 1000])
def test_oversized_content_length_is_413_before_the_body(make_server, limit):
    sync = make_server() if limit is None else make_server(max_body=limit)
    over = (16 << 20 if limit is None else limit) + 1
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
            % (base_path(sync), over)).encode()
    started = time.monotonic()
    status, headers, _ = raw_exchange(sync.port, head, timeout=5)  # no body is ever sent
    assert status == 413
    assert time.monotonic() - started < 4, "the server waited for the body"
    assert headers.get("access-control-allow-origin")
    # an unknown path is 404 first, and the limit itself is allowed through to frame checks
    status, _, _ = raw_exchange(sync.port, head.replace(base_path(sync).encode(), b"/nowhere"))
    assert status == 404
    if limit is not None:
        status, _, _ = raw_exchange(sync.port, ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                                                % (base_path(sync), limit)).encode() + b"\x00" * limit)
        assert status == 400


def test_garbage_bodies_then_a_good_client(server, raw, make_raw):
    good_kid = raw.kid.encode()
    kid_head = b"\x01" + struct.pack(">H", len(good_kid)) + good_kid
    cases = {
        b"": 400,
        b"\x01": 400,
        b"\x01\x00": 400,
        b"\x02" + kid_head[1:] + os.urandom(80): 400,
        b"\x01\x00\x00" + os.urandom(100): 400,
        b"\x01\xff\xff" + os.urandom(100): 400,
        b"\x01\x00\x04\xff\xfe\xfd\xfc" + os.urandom(64): 400,
        kid_head + os.urandom(47): 400,
        kid_head + os.urandom(64): 401,
        b"\x01\x00\x40" + b"A" * 64 + os.urandom(64): 401,
        b"\x01\x00\x04!!!!" + os.urandom(64): (400, 401),
        b"GET / HTTP/1.1\r\n\r\n": (400, 401),
        b"{\"op\":\"hello\"}": 400,
        os.urandom(5000): (400, 401),
    }
    for body, want in cases.items():
        status, data = raw.post(raw.base, body)
        assert status in (want if isinstance(want, tuple) else (want,)), (body[:20], status)
        assert data == b""
    # a sealed body that is not a JSON object is a sealed bad_request
    for plain in (b"[1,2]", b"not json", b"{\"op\":\"hello\",\"t\":NaN}", b"\xff\xfe"):
        frame, nonce = raw.frame(raw.base, plain)
        status, answer = raw.send(raw.base, frame, nonce)
        assert status == 200 and answer["ok"] is False and answer["error"]["code"] == "bad_request", plain
    # garbage at the HTTP level
    for junk in (b"NONSENSE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40) + b"\r\n\r\n",
                 b"POST / HTTP/1.1\r\nbroken header line\r\n\r\n"):
        try:
            status, _, _ = raw_exchange(server.port, junk, timeout=5)
        except ConnectionResetError:
            status = None
        assert status in (None, 400), junk[:20]
    # a body that stops early is abandoned, not waited on forever by everyone else
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(("POST %s HTTP/1.1\r\nContent-Length: 500\r\n\r\n" % raw.base).encode() + b"\x01\x00")
        good = make_raw(server)
        good.hello()
    # and the server still serves a good client
    fresh = make_raw(server)
    fresh.hello()
    server.sync("t", "k", {"v": 1})
    records, _, _ = fresh.reset()
    assert records["t"] == {"k": {"v": 1}}


def test_endpoint_rotation_across_250_requests(make_server, make_raw):
    secret = os.urandom(32)
    sync = make_server(secret=secret)
    raw = make_raw(sync)
    cursor = raw.cursor()
    eps = [raw.ep]
    for _ in range(250):
        answer = raw.ok("pull", since=cursor, wait=0)
        eps.append(answer["ep"])
    distinct = []
    for ep in eps:
        if not distinct or distinct[-1] != ep:
            distinct.append(ep)
    assert len(distinct) == len(set(distinct)) == 3, "251 requests at 100 per path: three paths"
    for ep in distinct:
        assert re.match(r"^%s/[A-Za-z0-9_-]{12}$" % re.escape(raw.base), ep), ep
    middle = eps.index(distinct[2]) - eps.index(distinct[1])
    assert middle == 100, "a path serves 100 requests of its token"
    # a retired path still answers within the grace period, pointing at the current one
    for old in distinct[:2]:
        answer = raw.ok("pull", path=old, since=cursor, wait=0)
        assert answer["ep"] == raw.ep
    # a made-up path under the instance is 404
    frame, nonce = raw.frame(raw.base + "/AAAAAAAAAAAA", {"op": "pull", "t": now_ms(), "since": cursor, "wait": 0})
    assert raw.send(raw.base + "/AAAAAAAAAAAA", frame, nonce)[0] == 404
    # another token's live path is 404 for this token, and this token's for it
    other = make_raw(sync, token=mint(secret))
    other.hello()
    assert other.ep not in distinct
    assert raw.call("pull", path=other.ep, since=cursor, wait=0)[0] == 404
    assert other.call("pull", path=raw.ep, since=cursor, wait=0)[0] == 404
    other.ok("pull", since=cursor, wait=0)
    # hello at the base path always works and hands back the current path
    assert raw.hello()["ep"] == raw.ep


def test_rotation_off(make_server, make_raw):
    sync = make_server(rotate_every=0)
    raw = make_raw(sync)
    assert raw.hello()["ep"] == raw.base
    cursor = raw.cursor()
    for _ in range(5):
        assert raw.ok("pull", path=raw.base, since=cursor, wait=0)["ep"] == raw.base
    assert raw.call("pull", path=raw.base + "/AAAAAAAAAAAA", since=cursor, wait=0)[0] == 404


def test_connection_limit_is_503(make_server, make_raw):
    sync = make_server(max_connections=1)
    first = make_raw(sync)
    first.hello()  # holds the one allowed keep-alive connection
    status, headers, _ = raw_exchange(sync.port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 503
    assert headers.get("access-control-allow-origin")
    first.close()

    def admitted():
        status, _, _ = raw_exchange(sync.port, b"OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return status == 204
    wait_until(admitted, what="a free connection slot after the first client left")


def test_full_replay_memory_is_503(make_server, make_raw):
    sync = make_server(max_nonces=8)  # a share of 2 for each user (a quarter), of which 1 light
    users = [make_raw(sync, token=sync.issue_token(sub="u%d" % i)) for i in range(5)]
    for raw in users[:4]:
        raw.hello()
        raw.hello()
    status, _ = users[4].call("hello")
    assert status == 503


def test_one_user_filling_the_replay_memory_gets_503_alone(make_server, make_raw):
    """Each accepted frame is remembered up to two minutes (its t may be 60 s ahead): one user's
    tokens, however many, may hold a quarter of the memory, and past it only they get 503."""
    sync = make_server(max_nonces=8)
    mallory = [make_raw(sync, token=sync.issue_token(sub="mallory")) for _ in range(2)]
    mallory[0].hello()
    mallory[1].hello()
    assert mallory[0].call("hello")[0] == 503 and mallory[1].call("hello")[0] == 503
    ann = make_raw(sync, token=sync.issue_token(sub="ann"))
    ann.hello()
    app = make_raw(sync)  # the app's own token (no user): a share of its own
    app.hello()
    app.hello()
    assert app.call("hello")[0] == 503
    assert ann.call("pull", since=None, wait=0)[0] == 200


def test_an_expired_token_cannot_spend_its_users_share_of_the_replay_memory(make_server, make_raw):
    """An attack run: a leaked expired token of a user, flooding hellos, filled the user's share of
    the replay memory (its frames were remembered before the expiry check), and the user's live
    tokens got 503. An expired token's frames are refused without being remembered."""
    sync = make_server(max_nonces=16)  # a share of 4 for each user
    old = make_raw(sync, token=sync.issue_token(sub="ann", ttl=2))  # iat is a whole second: it lives 1 to 2 s
    old.hello()
    frame, nonce = old.frame(old.base, {"op": "hello", "t": now_ms()})
    assert old.send(old.base, frame, nonce)[1]["ok"] is True  # accepted while it lived
    time.sleep(2.1)
    for _ in range(6):
        assert old.err("hello", "expired")
    assert old.send(old.base, frame, nonce)[1]["error"]["code"] == "replay"  # still a replay, expired or not
    live = make_raw(sync, token=sync.issue_token(sub="ann"))
    status, answer = live.call("hello")
    assert status == 200 and answer["ok"] is True, (status, answer)


def test_four_flooding_users_cannot_fill_the_replay_memory_for_the_rest():
    """With a quarter each as the only bound, four users' tokens flooding hellos with t 59 s ahead
    filled the memory, and every other user got 503 for two minutes (an attack run). Past its
    first thousandth, an owner now draws on a half of the room that heavy owners share."""
    memory = dsn_sync._ReplayMemory(4000)
    now = 10 ** 12
    taken = {}
    for owner in ("m0", "m1", "m2", "m3", "m4"):
        taken[owner] = 0
        with pytest.raises(dsn_sync._HTTPFault):
            for _ in range(2000):
                memory.add(os.urandom(16), now + 59000, now, owner)
                taken[owner] += 1
    assert taken["m0"] == taken["m1"] == memory.share == 1000, taken
    assert sum(taken.values()) == memory.heavy_room + 5 * memory.light, taken
    # Everyone else still has room for what honest clients send: their first `light` nonces each.
    for user in range(400):
        for _ in range(memory.light):
            assert memory.add(os.urandom(16), now, now, "u%d" % user)
    assert len(memory) == 2020 + 400 * memory.light
    # As the flood's nonces expire, its owners' heavy parts go back to the room.
    later = now + 59000 + memory.window_ms + 2000
    assert memory.add(os.urandom(16), later, later, "m0")
    assert len(memory) == 1 and memory._heavy == 0


# -- GET /dsn_client.js --------------------------------------------------------


def get_full(port, path, headers=None):
    """(status, {header: [values]}, body) keeping repeated headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        multi = {}
        for name, value in r.getheaders():
            multi.setdefault(name.lower(), []).append(value)
        return r.status, multi, body
    finally:
        conn.close()


def test_client_js_is_served_cacheable_with_cors(server, tmp_path, monkeypatch):
    script = b"// a stand-in client\nexport function connectDSN() { return 42; }\n"
    (tmp_path / "dsn_client.js").write_bytes(script)
    monkeypatch.setattr(dsn_sync, "__file__", str(tmp_path / "dsn_sync.py"))
    status, headers, body = get_full(server.port, "/dsn_client.js", {"Origin": "https://app.example"})
    assert status == 200 and body == script
    assert headers["content-type"][0].split(";")[0].strip() in CLIENT_JS_TYPES
    assert headers["access-control-allow-origin"][0] in ("*", "https://app.example")
    etag = headers["etag"][0]
    assert etag
    cache = ", ".join(headers["cache-control"])
    m = re.search(r"max-age=(\d+)", cache)
    assert m and int(m.group(1)) >= 3600, cache
    assert "no-store" not in cache and "no-cache" not in cache
    # a query string (cache busting) is not part of the path
    status, _, body = get_full(server.port, "/dsn_client.js?v=2")
    assert status == 200 and body == script


def test_client_js_revalidation_keeps_it_cacheable(server, tmp_path, monkeypatch):
    (tmp_path / "dsn_client.js").write_bytes(b"export const x = 1;\n")
    monkeypatch.setattr(dsn_sync, "__file__", str(tmp_path / "dsn_sync.py"))
    _, headers, _ = get_full(server.port, "/dsn_client.js")
    status, again, body = get_full(server.port, "/dsn_client.js", {"If-None-Match": headers["etag"][0]})
    assert status in (200, 304)
    if status == 304:
        assert body == b"" and again.get("etag") == headers["etag"]
    assert again.get("access-control-allow-origin")
    cache = ", ".join(again.get("cache-control", []))
    assert "no-store" not in cache, cache
    m = re.search(r"max-age=(\d+)", cache)
    assert m and int(m.group(1)) >= 3600, cache


def test_vendored_module_serves_its_embedded_client_and_inspector(server, tmp_path, monkeypatch):
    """Issue 14: dsn_sync.py copied alone into a folder still serves both files, byte for byte."""
    monkeypatch.setattr(dsn_sync, "__file__", str(tmp_path / "dsn_sync.py"))  # an empty folder
    here = Path(__file__).resolve().parent
    for path, name in (("/dsn_client.js", "dsn_client.js"), (base_path(server) + "/inspect", "dsn_inspect.html")):
        status, headers, body = get_full(server.port, path)
        assert status == 200 and body == (here / name).read_bytes(), name


def test_client_js_missing_is_404_with_a_log_line(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dsn_sync, "__file__", str(tmp_path / "dsn_sync.py"))  # an empty folder
    monkeypatch.setattr(dsn_sync, "_EMBEDDED", {})  # and nothing embedded
    with caplog.at_level(logging.WARNING, logger="dsn_sync"):
        status, headers, body = get_full(server.port, "/dsn_client.js")
    assert status == 404 and body == b""
    assert headers.get("access-control-allow-origin")
    assert any("dsn_client.js" in r.getMessage() for r in caplog.records if r.name == "dsn_sync")


def test_client_js_shipped_in_this_checkout(server):
    beside = Path(dsn_sync.__file__).resolve().parent / "dsn_client.js"
    status, headers, body = get_full(server.port, "/dsn_client.js")
    if beside.is_file():
        assert status == 200 and body == beside.read_bytes()
        assert headers["content-type"][0].split(";")[0].strip() in CLIENT_JS_TYPES
    else:
        assert status == 404


def test_only_the_client_and_the_inspector_answer_get(server):
    """PROTOCOL.md section 3 names one GET; issue 7 adds the inspector page at <sync URL>/inspect (noted as
    a proposed spec amendment). Everything else answers 405."""
    status, headers, body = http_request(server.port, "GET", base_path(server) + "/inspect")
    assert status in (200, 404)  # 404 only where dsn_inspect.html is not shipped beside the module
    for path in (base_path(server) + "/inspect/x", base_path(server) + "/anything", "/index.html"):
        status, headers, _ = http_request(server.port, "GET", path)
        assert status == 405, (path, status)


# -- Server limits and HTTP details (issue 2, "Server") ------------------------


def test_keep_alive_round_trip_has_no_nagle_stall(server, raw):
    raw.hello()
    times = []
    for _ in range(30):
        started = time.perf_counter()
        raw.ok("pull", since=None, wait=0)
        times.append(time.perf_counter() - started)
    times.sort()
    # a Nagle / delayed-ACK stall costs about 40 ms per round trip; well under 2 ms is the goal
    assert times[len(times) // 2] < 0.02, "median keep-alive round trip %.1f ms" % (times[len(times) // 2] * 1000)


def test_pipelined_requests_are_answered_in_order(server, raw):
    frames = []
    for i in range(3):
        frame, nonce = raw.frame(raw.base, {"op": "hello", "t": now_ms()})
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                % (raw.base, len(frame))).encode()
        frames.append((head + frame, nonce))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"".join(f for f, _ in frames))
        with sock.makefile("rb") as f:
            for _, nonce in frames:
                status, _, body = read_response(f)
                assert status == 200
                assert raw.open_answer(nonce, body)["ok"] is True


def test_oversized_headers_are_refused(server, raw):
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\nContent-Length: 0\r\n\r\n"
            % (raw.base, "a" * 40000)).encode()
    try:
        status, _, _ = raw_exchange(server.port, head)
    except (ConnectionResetError, BrokenPipeError):
        status = None
    assert status in (None, 400, 431)
    raw.hello()


def _closed_within(sock, seconds):
    """True if the server closes ``sock`` (EOF or reset) within ``seconds``; any answer is read and skipped."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_idle_header_and_body_timeouts(make_server, make_raw):
    sync = make_server(idle_timeout=0.3, header_timeout=0.3, body_timeout=0.3)
    base = base_path(sync)
    with socket.create_connection(("127.0.0.1", sync.port)) as idle:
        assert _closed_within(idle, 5), "an idle connection was kept past idle_timeout"
    with socket.create_connection(("127.0.0.1", sync.port)) as slow:
        slow.sendall(("POST %s HTTP/1.1\r\nHost: x\r\n" % base).encode())  # headers never finish
        assert _closed_within(slow, 5), "a trickled request head was kept past header_timeout"
    with socket.create_connection(("127.0.0.1", sync.port)) as short:
        short.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" % base).encode() + b"\x01")
        assert _closed_within(short, 5), "a short body was waited on past body_timeout"
    raw = make_raw(sync)
    raw.hello()


def test_long_poll_cap_is_503(make_server, make_raw):
    sync = make_server(max_waiting=1)
    holder, second = make_raw(sync), make_raw(sync)
    cursor = holder.cursor()
    thread = threading.Thread(target=lambda: holder.call("pull", since=cursor, wait=5))
    thread.start()
    try:
        wait_until(lambda: sync.stats()["waiting"] == 1, what="the first long-poll")
        second.hello()
        assert second.call("pull", since=cursor, wait=5)[0] == 503
        assert second.ok("pull", since=cursor, wait=0)["changes"] == []  # a plain pull still works
    finally:
        sync.sync("t", "wake", {})
        thread.join(10)


def test_record_and_batch_limits(make_server, make_raw):
    sync = make_server(max_record=200, max_batch=3)
    sync.define_table("t", {"key": "id", "fields": None})
    sync.on_create("t")(lambda data: True)
    with pytest.raises(ValueError):
        sync.sync("t", "big", {"blob": "x" * 300})
    assert sync.get("t", "big") is None
    raw = make_raw(sync)
    raw.err("create", "invalid", table="t", key="big", data={"blob": "x" * 300}, mid="1")
    raw.ok("create", table="t", key="small", data={"blob": "x" * 50}, mid="2")
    raw.err("batch", "bad_request", mutations=[{"op": "create", "table": "t", "key": "k%d" % i, "data": {},
                                                "mid": "b%d" % i} for i in range(4)])
    assert sorted(sync.get_all("t")) == ["small"]


def test_retired_path_stops_working_after_the_grace(make_server, monkeypatch, make_raw):
    sync = make_server(rotate_every=2)
    monkeypatch.setattr(private(sync, "endpoints"), "grace", 0.2)  # 120 s in production
    raw = make_raw(sync)
    cursor = raw.cursor()
    first = raw.ep
    for _ in range(3):
        raw.ok("pull", since=cursor, wait=0)
    assert raw.ep != first
    wait_until(lambda: raw.call("pull", path=first, since=cursor, wait=0)[0] == 404, timeout=5,
               what="the retired path to expire")
    raw.ok("pull", since=cursor, wait=0)


def test_pull_behind_on_schema_answers_at_once(server, raw):
    cursor = raw.cursor()
    server.define_table("x", {"key": "id", "fields": None})
    started = time.monotonic()
    answer = raw.ok("pull", since=cursor, wait=5)  # same seq, older sv: nothing to wait for
    assert time.monotonic() - started < 4.5
    assert "x" in answer["tables"] and answer["sv"] > cursor["sv"]


def test_client_write_with_a_lone_surrogate_is_invalid(server, raw, make_raw):
    server.define_table("t", {"key": "id", "fields": None})
    server.on_create("t")(lambda data: True)
    status, answer = raw.call("create", table="t", key="k", data={"v": "\ud800"}, mid="1")
    assert status == 200 and answer["ok"] is False and answer["error"]["code"] == "invalid"
    status, answer = raw.call("create", table="t", key="\udfff", data={"v": 1}, mid="2")
    assert status == 200 and answer["ok"] is False and answer["error"]["code"] == "invalid"
    other = make_raw(server)
    records, _, _ = other.reset()
    assert records.get("t", {}) == {}


def test_unicode_records_and_keys_round_trip(server, raw, make_client):
    server.define_table("u", {"key": "id", "fields": None})
    server.on_create("u")(lambda data: True)
    server.sync("u", "ключ", {"name": "héllo ✓ 日本 😀", "nested": {"ß": ["ü"]}})
    records, cursor, _ = raw.reset()
    assert records["u"] == {"ключ": {"name": "héllo ✓ 日本 😀", "nested": {"ß": ["ü"]}}}
    raw.ok("create", table="u", key="😀", data={"t": "ok ✓"}, mid="1")
    assert server.get("u", "😀") == {"t": "ok ✓"}
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5)
    assert client.get_all("u") == server.get_all("u")


def test_pages_are_capped_in_bytes_as_well_as_records(make_server, make_client):
    """A reset page or a changes answer stops past page_bytes of record JSON, and nothing is lost."""
    sync = make_server(start=False)
    store = private(sync, "store")
    store.page_bytes = 50000
    sync.define_table("big", {"key": "id", "fields": None})
    for i in range(20):
        sync.sync("big", "k%02d" % i, {"blob": "x" * 10000})
    sync.start()
    client = make_client(sync.get_url(), sync.get_token())
    assert client.wait_ready(10)
    assert client.get_all("big") == sync.get_all("big")
    blob, last, more = store.snapshot_page(store.seq, 0, 5000)
    assert more and len(blob) < 80000
    changes, cursor = store.changes_since(0, 5000)
    assert len(changes) < 20 and cursor < store.seq
    for i in range(20):
        sync.sync("big", "k%02d" % i, {"blob": "y" * 10000})
    wait_until(lambda: client.get_all("big") == sync.get_all("big"), 10, "the mirror to converge")


# =============================================================================
# 4. Seeded random stress test
# =============================================================================


@pytest.mark.parametrize("shared_keys", [False, True], ids=["own-keys", "shared-keys"])
def test_seeded_stress(make_server, make_client, shared_keys):
    """Backend threads sync()/remove() while clients write and pull; every mirror ends equal to the store.

    own-keys: each client writes keys no one else writes (backend threads share theirs);
    shared-keys: everyone writes the same keys, the harder case.
    """
    seed = 20261127
    sync = make_server(page_size=4)
    private(sync, "store").max_tombstones = 12  # compaction runs, so cursors below the floor must reset
    sync.define_table("a", {"key": "id", "fields": ["n", "who", "extra"]})
    sync.sync("b", "seed", {"n": -1})  # b: created by syncing into it
    for op in ("create", "update", "delete"):
        getattr(sync, "on_" + op)("a")(lambda data, ctx: True)
    url, token = sync.get_url(), sync.get_token()
    clients = [make_client(url, token, wait=2) for _ in range(3)]
    for client in clients:
        assert client.wait_ready(5)
    keys = ["k%d" % i for i in range(10)]
    client_keys = [keys if shared_keys else ["c%d-%d" % (i, j) for j in range(6)] for i in range(len(clients))]
    failures = []

    def backend(i):
        rng = random.Random(seed * 10 + i)
        try:
            for n in range(150):
                table, key = rng.choice("ab"), rng.choice(keys)
                if rng.random() < 0.3:
                    sync.remove(table, key)
                else:
                    data = {"n": n, "who": "backend%d" % i}
                    if rng.random() < 0.3:
                        data["extra"] = [n, {"deep": rng.random()}]
                    sync.sync(table, key, data)
        except Exception as e:  # pragma: no cover - reported below
            failures.append(repr(e))

    def writer(i):
        rng = random.Random(seed * 100 + i)
        client = clients[i]
        try:
            for n in range(50):
                key = rng.choice(client_keys[i])
                op = rng.choice(("create", "update", "delete"))
                try:
                    if op == "create":
                        client.create("a", key, {"n": n, "who": "client%d" % i})
                    elif op == "update":
                        client.update("a", key, {"n": n})
                    else:
                        client.delete("a", key)
                except dsn_sync.DSNError as e:
                    if e.code not in ("exists", "not_found"):
                        failures.append("%s %s: %s %s" % (op, key, e.code, e))
        except Exception as e:  # pragma: no cover
            failures.append(repr(e))

    threads = [threading.Thread(target=backend, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures[:5]
    late = make_client(url, token, wait=2)  # a fresh client: a paged reset over the tombstones
    assert late.wait_ready(5)
    everyone = clients + [late]

    def converged():
        want = {t: sync.get_all(t) for t in "ab"}
        return all(c.get_all(t) == want[t] for c in everyone for t in "ab")
    try:
        wait_until(converged, timeout=8, what="every client's mirror to equal the store")
    except AssertionError:
        want = {t: sync.get_all(t) for t in "ab"}
        diffs = [(i, t, k, c.get(t, k), want[t].get(k)) for i, c in enumerate(everyone) for t in "ab"
                 for k in set(want[t]) | set(c.get_all(t)) if c.get(t, k) != want[t].get(k)]
        raise AssertionError("mirrors differ from the store (client, table, key, mirror, store): %r" % diffs[:10])
    assert private(sync, "store").check() is True
    assert sync.stats()["seq"] > 300


# =============================================================================
# 5. TLS end to end
# =============================================================================


def test_tls_end_to_end(make_server, make_client, certificate, make_raw):
    certfile, keyfile = certificate
    sync = make_server(certfile=certfile, keyfile=keyfile)
    url = sync.get_url()
    assert url.startswith("https://127.0.0.1:%d/sync/" % sync.port)
    sync.define_table("notes", {"key": "id", "fields": ["text"]})
    sync.on_create("notes")(lambda data: True)
    sync.sync("notes", "n1", {"text": "over TLS"})
    # a connection that never says anything must not hold up the accept loop
    silent = socket.create_connection(("127.0.0.1", sync.port), timeout=5)
    try:
        context = ssl.create_default_context(cafile=certfile)
        client = make_client(url, sync.get_token(), ssl_context=context, wait=5)
        assert client.wait_ready(5)
        assert client.get_all("notes") == {"n1": {"text": "over TLS"}}
        assert client.create("notes", "n2", {"text": "from the client"}) == {"text": "from the client"}
        assert sync.get("notes", "n2") == {"text": "from the client"}
        sync.sync("notes", "n3", {"text": "pushed"})
        wait_until(lambda: client.get("notes", "n3") == {"text": "pushed"}, what="a change over TLS")
        # the raw protocol over TLS too
        raw = make_raw(sync, ssl_context=context)
        records, _, _ = raw.reset()
        assert records["notes"] == sync.get_all("notes")
    finally:
        silent.close()
    # plain HTTP to the TLS port is refused promptly and the server carries on
    with socket.create_connection(("127.0.0.1", sync.port), timeout=5) as plain:
        plain.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % base_path(sync)).encode())
        try:
            while plain.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("plain HTTP on the TLS port was left hanging")
    # a client that does not trust the certificate fails the handshake
    untrusting = http.client.HTTPSConnection("127.0.0.1", sync.port, timeout=5,
                                             context=ssl.create_default_context())
    with pytest.raises(ssl.SSLError):
        untrusting.request("OPTIONS", base_path(sync))
    untrusting.close()
    sync.sync("notes", "n4", {"text": "still serving"})
    wait_until(lambda: client.get("notes", "n4") == {"text": "still serving"}, what="TLS service after bad clients")


# =============================================================================
# 6. The Python client
# =============================================================================


def test_client_api(server, make_client, users):
    server.sync("users", "u1", {"name": "Ann"})
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5) is True
    assert client.get_all("users") == {"u1": {"name": "Ann"}}
    assert client.get("users", "u1") == {"name": "Ann"}
    assert client.get("users", "nobody") is None
    assert client.get_all("no_such_table") == {}
    # copies, not the mirror itself
    client.get("users", "u1")["name"] = "Mallory"
    client.get_all("users")["u1"]["name"] = "Eve"
    assert client.get("users", "u1") == {"name": "Ann"}

    assert client.create("users", "u2", {"name": "Bob"}) == {"name": "Bob"}
    assert server.get("users", "u2") == {"name": "Bob"}
    assert client.get("users", "u2") == {"name": "Bob"}, "an acknowledged write is in the mirror at once"
    assert users["calls"][-1][:2] == ("create", {"user_id": "u2", "name": "Bob"})
    assert client.update("users", "u2", {"email": "b@x"}) == {"name": "Bob", "email": "b@x"}
    assert server.get("users", "u2") == {"name": "Bob", "email": "b@x"}
    assert client.delete("users", "u2") is None
    assert server.get("users", "u2") is None and client.get("users", "u2") is None

    for call, code in ((lambda: client.create("users", "u1", {"name": "x"}), "exists"),
                       (lambda: client.update("users", "ghost", {"name": "x"}), "not_found"),
                       (lambda: client.delete("users", "ghost"), "not_found"),
                       (lambda: client.create("users", "u3", {"hat": 1}), "invalid"),
                       (lambda: client.create("nowhere", "k", {}), "unknown_table")):
        with pytest.raises(dsn_sync.DSNError) as info:
            call()
        assert info.value.code == code
    users["verdict"] = False
    with pytest.raises(dsn_sync.DSNError) as info:
        client.create("users", "u4", {"name": "no"})
    assert info.value.code == "rejected"
    server.define_table("readonly", {"key": "id", "fields": None})
    with pytest.raises(dsn_sync.DSNError) as info:
        client.create("readonly", "k", {})
    assert info.value.code == "no_handler"
    # backend changes reach the mirror
    server.sync("users", "u5", {"name": "Eve"})
    server.remove("users", "u1")
    wait_until(lambda: client.get_all("users") == {"u5": {"name": "Eve"}}, what="backend changes in the mirror")


def test_client_on_data_change(server, make_client):
    server.sync("todos", "a", {"title": "A"})
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5)
    calls = queue.Queue()
    client.on_data_change("todos", calls.put)
    assert calls.qsize() == 1, "called once at once"
    assert calls.get_nowait() == {"a": {"title": "A"}}
    server.sync("todos", "b", {"title": "B"})
    assert calls.get(timeout=5) == {"a": {"title": "A"}, "b": {"title": "B"}}
    server.remove("todos", "a")
    assert calls.get(timeout=5) == {"b": {"title": "B"}}
    # a change to another table does not call it
    other = queue.Queue()
    client.on_data_change("other", other.put)
    assert other.get_nowait() == {}
    server.sync("todos", "c", {"title": "C"})
    assert calls.get(timeout=5) == {"b": {"title": "B"}, "c": {"title": "C"}}
    assert other.empty()
    # a callback that raises does not stop the feed
    client.on_data_change("todos", lambda records: 1 / 0 if "d" in records else None)
    server.sync("todos", "d", {"title": "D"})
    assert "d" in calls.get(timeout=5)
    server.sync("todos", "e", {"title": "E"})
    assert "e" in calls.get(timeout=5)


def test_client_own_write_calls_on_data_change_once(server, make_client):
    """The ack put the record in the mirror and called back; the feed then carried the same change
    and called back again with the same records (a newcomer saw two calls per update and delete)."""
    server.define_table("todos", {"key": "id", "fields": None})
    server.on_create("todos")(lambda data: True)
    server.on_update("todos")(lambda data: True)
    server.on_delete("todos")(lambda data: True)
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5)
    calls = queue.Queue()
    client.on_data_change("todos", calls.put)
    calls.get_nowait()
    for write in (lambda: client.create("todos", "t1", {"title": "A"}),
                  lambda: client.update("todos", "t1", {"title": "B"}),
                  lambda: client.delete("todos", "t1")):
        write()
        wait_until(lambda: client.cursor["seq"] == server.stats()["seq"], what="the feed past the write")
        time.sleep(0.2)
        got = []
        while not calls.empty():
            got.append(calls.get_nowait())
        assert len(got) == 1, got


def test_client_wait_ready_times_out_and_close(make_client):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = dsn_sync.DSNSync(port=0).get_token()
    client = make_client("http://127.0.0.1:%d/sync/0123456789abcdef" % port, token)
    assert client.wait_ready(0.3) is False
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 5
    with pytest.raises(dsn_sync.DSNError):
        client.create("t", "k", {})
    with pytest.raises(ValueError):
        dsn_sync.connect("ftp://127.0.0.1/sync/x", token)
    with pytest.raises(ValueError):
        dsn_sync.connect("http://127.0.0.1:1/sync/x", "not a token")


def test_client_close_drops_its_connections(server, make_client):
    client = make_client(server.get_url(), server.get_token(), wait=1)
    assert client.wait_ready(5)
    server.on_create("t")(lambda data: True)
    server.define_table("t", {"key": "id", "fields": None})
    client.create("t", "k", {})
    wait_until(lambda: server.stats()["waiting"] == 1, what="the client's long-poll")
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2
    # (the server notices the dropped long-poll only when its wait ends: wait=1 here)
    wait_until(lambda: server.stats()["connections"] == 0, what="the client's connections to close")
    assert server.stats()["waiting"] == 0
    requests = server.stats()["requests"]
    with pytest.raises(dsn_sync.DSNError):
        client.create("t", "k2", {})
    assert server.get("t", "k2") is None
    assert server.stats()["requests"] == requests, "a closed client sent requests"


def test_client_reconnects_after_a_restart_and_resets_once(make_client):
    secret = os.urandom(32)
    first = dsn_sync.DSNSync(port=0, secret=secret)
    second = None
    try:
        first.start()
        port, url, token = first.port, first.get_url(), first.get_token()
        first.sync("t", "old", {"v": 1})
        client = make_client(url, token, wait=5)
        assert client.wait_ready(5)
        assert client.get_all("t") == {"old": {"v": 1}}
        resets = client.resets
        epoch = first.stats()["epoch"]
        assert first.stop() is True
        second = dsn_sync.DSNSync(port=port, secret=secret)
        assert second.start() is True
        assert second.get_url() == url and second.stats()["epoch"] != epoch
        second.sync("t", "new", {"v": 2})
        wait_until(lambda: client.get_all("t") == {"new": {"v": 2}}, timeout=10,
                   what="the client to reset onto the restarted server")
        assert client.resets == resets + 1
        second.sync("t", "newer", {"v": 3})
        wait_until(lambda: client.get("t", "newer") == {"v": 3}, what="changes after the reset")
        assert client.resets == resets + 1, "one reset per epoch change"
        second.on_create("t")(lambda data: True)
        assert client.create("t", "mine", {"v": 4}) == {"v": 4}
        assert second.get("t", "mine") == {"v": 4}
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_client_token_of_another_server_reports_an_error(make_server, make_client):
    a, b = make_server(), make_server()
    statuses = queue.Queue()
    client = make_client(a.get_url(), b.get_token(), on_status=lambda status, detail: statuses.put(status))
    with pytest.raises(dsn_sync.AuthError):
        client.wait_ready(5)
    assert client.status == "error"
    with pytest.raises(dsn_sync.DSNError):
        client.create("t", "k", {})


def test_client_ack_does_not_overwrite_a_newer_pulled_state(server, make_client):
    server.define_table("t", {"key": "id", "fields": ["v"]})
    server.on_update("t")(lambda data: True)
    server.sync("t", "k", {"v": "start"})
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5)
    original = client._exchange
    hit = []

    def exchange(conn, op, fields, *args, **kwargs):
        answer = original(conn, op, fields, *args, **kwargs)
        if op == "update" and not hit:
            hit.append(answer)
            # after the server applied the client's write, and before the client has its answer,
            # the backend writes the same key and the pull thread delivers it
            server.sync("t", "k", {"v": "backend"})
            wait_until(lambda: client.get("t", "k") == {"v": "backend"}, what="the pull to deliver the newer state")
        return answer
    client._exchange = exchange
    client.update("t", "k", {"v": "client"})
    assert hit, "the interception point was not reached"
    assert server.get("t", "k") == {"v": "backend"}
    wait_until(lambda: client.get("t", "k") == server.get("t", "k"), timeout=1.5,
               what="the mirror to hold the store's latest state")


def test_client_recovers_from_clock_offset_and_follows_rotation(server, make_client):
    server.define_table("t", {"key": "id", "fields": None})
    server.on_create("t")(lambda data: True)
    client = make_client(server.get_url(), server.get_token(), wait=5)
    assert client.wait_ready(5)
    client._offset = 10 ** 7  # its estimate of the server's clock is off by hours: `clock`, re-learn, retry
    assert client.create("t", "skewed", {"v": 1}) == {"v": 1}
    # more writes than one endpoint path serves (rotate_every=100): the client follows `ep`
    for i in range(120):
        client.create("t", "r%03d" % i, {"i": i})
    assert len(server.get_all("t")) == 121
    server.sync("t", "last", {"v": 2})
    wait_until(lambda: client.get_all("t") == server.get_all("t"), what="the mirror after 120 writes")


def test_a_url_that_is_not_a_sync_url_is_refused_by_connect(server):
    """The inspector's URL passed the Python client's check, and its first hello then said the
    server had a new URL; the JS client refuses it at once, as this one now does."""
    for url in (server.get_url() + "/inspect", server.get_url() + "/x/y", "http://127.0.0.1:1/sync/"):
        with pytest.raises(ValueError, match=r"must end in /sync/<instance>"):
            dsn_sync.connect(url, server.get_token())
    # a mount whose prefix holds /sync/ (app.mount('/sync', ...)): the last /sync/ starts the path
    assert dsn_sync._split_url("https://h.example/sync/sync/00aa") == ("https", "h.example", None, "/sync", "/sync/00aa")
    # get_url('/dsn') gives a path, which a page resolves against its own origin; here it needs the host
    path = server.get_url("/dsn")
    assert path.startswith("/dsn/sync/")
    with pytest.raises(ValueError, match=r"needs the whole sync URL, with its host, got the path '/dsn/sync/"):
        dsn_sync.connect(path, server.get_token())


def _wrong_url(sync):
    return "http://127.0.0.1:%d/sync/0000000000000000" % sync.port


def test_client_backs_off_and_reports_a_wrong_url(server, make_client):
    """wait_ready says why at once (a newcomer's wait_ready(4) returned False after 4 s, the reason
    left for a later write to tell); the feed goes on trying, backed off."""
    statuses = []
    client = make_client(_wrong_url(server), server.get_token(), on_status=lambda s, d: statuses.append(s))
    began = time.monotonic()
    with pytest.raises(dsn_sync.DSNError) as refused:
        client.wait_ready(30)
    assert refused.value.code == "wrong_url" and "this instance is not there" in str(refused.value), refused.value
    assert time.monotonic() - began < 10, "wait_ready waited for its timeout"
    with pytest.raises(dsn_sync.DSNError, match="this instance is not there"):
        client.wait_ready(30)  # a later call waits for the feed's next try, which says it again
    before = server.stats()["bytes_in"]
    time.sleep(1)
    received = server.stats()["bytes_in"] - before
    client.close()
    # a hello frame is a few hundred bytes: a backed-off client sends a handful in a second
    assert received < 20000, "the client sent %d bytes of hellos in a second" % received
    assert client.status in ("error", "offline") and statuses, "the wrong URL was not reported"


def test_client_write_to_a_wrong_url_fails_at_once_with_wrong_url(server, make_client):
    """404 on hello means no such instance (PROTOCOL.md 5): nothing to wait out for write_timeout."""
    client = make_client(_wrong_url(server), server.get_token(), write_timeout=30)
    began = time.monotonic()
    with pytest.raises(dsn_sync.DSNError) as refused:
        client.create("t", "k", {})
    assert refused.value.code == "wrong_url", refused.value
    # dsn-sync answers at that address (its client file is there): the instance is what is stale
    assert "dsn-sync answers at http://127.0.0.1:%d/, but this instance is not there" % server.port in str(refused.value)
    assert time.monotonic() - began < 10, "create() waited out its write_timeout"


def test_client_write_to_a_server_that_does_not_answer_gives_up_within_write_timeout(make_client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts, never answers
    url = "http://127.0.0.1:%d/sync/0000000000000000" % listener.getsockname()[1]
    client = make_client(url, dsn_sync.DSNSync(port=0).get_token(), write_timeout=0.5)
    outcome = []

    def write():
        try:
            outcome.append(client.create("t", "k", {}))
        except dsn_sync.DSNError as e:
            outcome.append(e)
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(2.5)
    hung = thread.is_alive()
    client.close()  # ends the loop either way
    thread.join(5)
    listener.close()
    assert not hung, "create() was still retrying after 2.5 s with write_timeout=0.5"
    assert isinstance(outcome[0], dsn_sync.DSNError) and outcome[0].code == "offline", outcome


@pytest.mark.parametrize("dead", ["expired", "revoked"])
def test_wait_ready_ends_when_the_feed_stops_on_a_dead_token(make_server, make_client, dead):
    """With no token function a refused token stops the feed for good: wait_ready() raised nothing
    and blocked for its whole timeout (for ever with none), where the JS client's ready rejects."""
    sync = make_server()
    if dead == "expired":
        token = sync.issue_token(sub="ann", ttl=1)
        time.sleep(1.1)
    else:
        token = sync.issue_token(sub="ann")
        sync.revoke(token)
    client = make_client(sync.get_url(), token)
    began = time.monotonic()
    with pytest.raises(dsn_sync.DSNError) as stopped:
        client.wait_ready(30)
    assert time.monotonic() - began < 10, "wait_ready() waited out its timeout"
    assert stopped.value.code == ("expired" if dead == "expired" else "unauthorized"), stopped.value
    with pytest.raises(dsn_sync.DSNError) as again:
        client.wait_ready()  # no timeout: returns at once all the same
    assert again.value.code == stopped.value.code


def test_a_token_given_as_the_url_is_never_echoed():
    sync = dsn_sync.DSNSync(port=0)
    token = sync.get_token()
    with pytest.raises(ValueError) as refused:
        dsn_sync.connect(token, sync.get_url())  # the two swapped
    assert "takes the URL first" in str(refused.value)
    assert token.split(".")[2] not in str(refused.value), "the token's secret half is in the message"


def test_wait_ready_after_close_is_false_at_once(make_client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    client = make_client("http://127.0.0.1:%d/sync/0000000000000000" % listener.getsockname()[1],
                         dsn_sync.DSNSync(port=0).get_token())
    client.close()
    began = time.monotonic()
    assert client.wait_ready() is False
    assert time.monotonic() - began < 5
    listener.close()


# =============================================================================
# Write answers as a pull would carry them (issue 15, item 8)
# =============================================================================


def test_write_answers_carry_the_record_only_as_the_token_may_read_it(make_server, make_raw):
    """A write-only token, and a user whose careless handler rewrites someone else's row, get
    `record: null` (still ok), now and when the same mid is repeated; a reader gets the row."""
    sync = make_server()
    sync.define_table("profiles", {"key": "id", "fields": ["owner", "email", "note"]})
    sync.sync("profiles", "bob", {"owner": "bob", "email": "bob@example.com", "note": ""})

    @sync.can_read("profiles")
    def own(record, ctx):
        return record.get("owner") == ctx.sub

    @sync.on_update("profiles")
    def careless(data, ctx):
        return True  # no owner check: Alice may touch Bob's row, but must never read it back

    blind = make_raw(sync, sync.issue_token("drop-box", read=[], write=["profiles"]))
    answer = blind.ok("update", table="profiles", key="bob", data={"note": "from the drop box"}, mid="w1")
    assert answer["record"] is None and isinstance(answer["seq"], int)
    assert blind.ok("update", table="profiles", key="bob", data={"note": "again"}, mid="w1")["record"] is None

    alice = make_raw(sync, sync.issue_token("alice", write=["profiles"]))
    answer = alice.ok("update", table="profiles", key="bob", data={"note": "hi from alice"}, mid="a1")
    assert answer["record"] is None, "Alice got Bob's row back: %r" % (answer["record"],)
    assert alice.ok("update", table="profiles", key="bob", data={"note": "hi"}, mid="a1")["record"] is None

    bob = make_raw(sync, sync.issue_token("bob", write=["profiles"]))
    answer = bob.ok("update", table="profiles", key="bob", data={"note": "mine"}, mid="b1")
    assert answer["record"] == {"owner": "bob", "email": "bob@example.com", "note": "mine"}


def test_a_failing_store_is_a_503_that_is_not_remembered(make_server, make_raw, tmp_path, caplog):
    """Issue 15, item 11: a write whose own answer is an error (not_found) and whose ledger entry
    then cannot be written gets a bare 503, never a sealed `store` error naming the file; the
    same mid, once the store works again, is answered for real."""
    sync = make_server(db_connection_string="sqlite:///%s" % (tmp_path / "dsn.db"))
    sync.define_table("items", {"key": "id", "fields": None})

    @sync.on_update("items")
    def accept(data):
        return True
    raw = make_raw(sync, sync.issue_token("u1", write=["items"]))
    raw.ok("hello")
    db = private(sync, "store")._db
    db.execute("PRAGMA query_only = 1")  # every write to the file now fails, as on a full disk
    try:
        with caplog.at_level(logging.ERROR, logger="dsn_sync"):
            status, answer = raw.call("update", table="items", key="missing", data={"v": 1}, mid="m1")
        assert status == 503 and answer is None, (status, answer)
        assert any("store failed" in r.getMessage() for r in caplog.records)
    finally:
        db.execute("PRAGMA query_only = 0")
    raw.err("update", "not_found", table="items", key="missing", data={"v": 1}, mid="m1")


def test_python_client_writes_of_values_json_has_not_say_what_and_how(server, make_client):
    """A newcomer's create(..., {'name': datetime.now()}) raised json's bare TypeError, and NaN its
    bare ValueError; now a DSNError with code invalid names the write and what to send instead."""
    import datetime
    client = make_client(server.get_url(), server.get_token())
    for data, said in (({"name": datetime.datetime(2026, 1, 2)}, r"create\('t', 'k', data\): data is not JSON: .*datetime.*"
                                                                 r"isoformat"),
                       ({"n": float("nan")}, r"NaN or Infinity"), ({"s": {1, 2}}, r"list\(\) a set")):
        with pytest.raises(dsn_sync.DSNError, match=said) as refused:
            client.create("t", "k", data)
        assert refused.value.code == "invalid"


def test_get_url_without_base_warns_once_a_mount_exists_even_before_its_first_request(caplog):
    """A newcomer's FastAPI app mounted asgi_app() without the recipe's lifespan: the engine starts
    at the first request, so get_url() called before it named 127.0.0.1:3000, where nothing
    listens, and said nothing.  It now warns once the app has made a door."""
    sync = dsn_sync.DSNSync(port=0)
    try:
        with caplog.at_level(logging.WARNING, logger="dsn_sync"):
            sync.get_url()
            assert "get_url() without base" not in caplog.text, "a server that will listen on its own port"
            sync.asgi_app()
            sync.get_url()
            sync.get_url()
        assert caplog.text.count("get_url() without base") == 1, caplog.text
        assert sync.get_url("https://example.com/dsn").startswith("https://example.com/dsn/sync/")
    finally:
        sync.stop()


def test_a_taken_port_is_one_clear_error_without_a_chained_traceback():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        sync = dsn_sync.DSNSync(host="127.0.0.1", port=holder.getsockname()[1])
        with pytest.raises(OSError, match="dsn-sync cannot listen on 127.0.0.1:%d" % holder.getsockname()[1]) as refused:
            sync.start()
        assert refused.value.__suppress_context__ and refused.value.__cause__ is None, "the socket's error chained"
    finally:
        holder.close()


@pytest.mark.parametrize("given, said", [
    ("dsn.db", r"for a SQLite file at that path: sqlite:///dsn\.db"),
    ("sqlite://dsn.db", r"three slashes before a relative path"),
    ("mysql://x", r"leave out --db"),
])
def test_a_db_connection_string_it_cannot_use_says_what_would_work(given, said):
    with pytest.raises(ValueError, match=said):
        dsn_sync.DSNSync(port=0, db_connection_string=given)
