"""Tests for dsn_sync.py: vectors, the Python API, the wire protocol over real sockets,
a seeded stress test, TLS end to end and the Python client.

Run from the repository root: ``python3 -m pytest -q test_dsn_sync.py``.

Every server listens on port 0 (a free port), so tests never collide.  Frames
are built here from PROTOCOL.md with the module's seal/traffic_keys/parse_token,
and answers are opened with a small reference envelope written in this file
from the spec alone (checked against protocol_v1.json first), so a response
that merely agrees with the module's own open() is not enough to pass.

A known bug is a test that asserts the correct behaviour and is marked
``xfail(strict=True, reason="BUG: ...")`` while the bug exists: fixing the bug
turns the test into an XPASS failure, and the mark must then go.
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
import shutil
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

VECTORS = Path(__file__).resolve().parent.parent / "shared" / "vectors"

REQ_LABEL = b"dsn-sync/v1 req\n"
RES_LABEL = b"dsn-sync/v1 res\n"
STREAM_LABEL = b"dsn-sync/v1 stream"
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
# Reference envelope: PROTOCOL.md section 1, written from the spec, not the module
# =============================================================================


def ref_hkdf_extract(salt, ikm):
    return hmac.new(salt if salt else bytes(32), ikm, hashlib.sha256).digest()


def ref_hkdf_expand(prk, info, length):
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def ref_stream(key, nonce, n):
    return hashlib.shake_256(STREAM_LABEL + key[:32] + nonce).digest(n)


def ref_tag(key, aad, nonce, ct):
    return hmac.new(key[32:64], struct.pack(">I", len(aad)) + aad + nonce + ct, hashlib.sha256).digest()


def ref_seal(key, aad, plaintext, nonce):
    ct = bytes(a ^ b for a, b in zip(plaintext, ref_stream(key, nonce, len(plaintext))))
    return nonce + ct + ref_tag(key, aad, nonce, ct)


def ref_open(key, aad, blob):
    if len(blob) < 48:
        return None
    nonce, ct, tag = blob[:16], blob[16:-32], blob[-32:]
    if not hmac.compare_digest(tag, ref_tag(key, aad, nonce, ct)):
        return None
    return bytes(a ^ b for a, b in zip(ct, ref_stream(key, nonce, len(ct))))


def now_ms():
    return int(time.time() * 1000)


def wait_until(predicate, timeout=5.0, what="a condition"):
    """Poll ``predicate`` (bounded); returns its first truthy value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.005)


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
