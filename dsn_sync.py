"""dsn-sync: keep browser data in sync with a Python backend, in one file.

A backend calls ``sync.sync('users', 'user_123', {...})`` and every connected
browser gets that record in its own IndexedDB (through ``dsn_client.js``); the
browser's ``create``/``update``/``delete`` reach ``@sync.on_create`` and friends.
No REST endpoints, no WebSocket stack, no broker: plain HTTP/1.1 long-polling.

Why one file and no dependencies: people vendor this module, run it as
``python -m dsn_sync``, and embed it where installing packages is not an option.
Everything here is the standard library; optional extras import lazily.

Layers, low to high: the envelope and tokens; the store (MemoryStore,
SQLiteStore: one interface, written down on MemoryStore); the engine
(``_Engine``: frames in, sealed answers out, no sockets); the feed (``_Feed``:
parked pulls answered when the store changes, through a ``Transport``); the
socketserver transport (``_Server``); ``DSNSync``, the public face; the
Python client; the quick server.

Request lifecycle (one POST)::

    accept loop (socketserver) -> worker: read what the socket has, parse a
    complete request (capped, timed) -> transport checks (405/404/413, in
    PROTOCOL.md's order) -> _Engine.handle (kid -> claims -> traffic keys ->
    tag checked BEFORE any parsing; failure is 401) -> size and depth caps ->
    clock, replay and expiry -> op dispatch (hello, pull, writes, batch) ->
    answer sealed to the request's nonce -> sent without waiting (what the
    socket will not take, the reactor sends).  A pull with nothing new is
    parked with the feed instead.

Threading model (DSNSync starts every thread and stop() joins them all):
socketserver's accept loop hands connections to a pool of worker threads;
a connection between requests, with half a request, or with an answer the
client is slow to read waits in one reactor thread's selector, holding no
worker, and is cut at its deadline.  TLS handshakes run in the workers,
non-blocking.  Long-polls hold no thread either: one feed thread answers
every parked pull in one pass when the store changes, sharing each changes
list between pulls at the same cursor.  ``@every`` tasks have a thread each.
The store has one lock; client writes to the same key (and retries of the
same mid) are serialised by a lock per name held around the handler call.

The wire protocol (envelope, tokens, frames, messages, endpoint rotation,
the 1.1 additions) is specified in PROTOCOL.md (version 1.1); this module
follows it byte for byte and is tested against its vectors.
"""

__version__ = "0.2.0"

__all__ = [
    "DSNSync",
    "DSNError",
    "ProtocolError",
    "AuthError",
    "WriteContext",
    "MemoryStore",
    "SQLiteStore",
    "PostgresStore",
    "View",
    "StoreError",
    "Client",
    "connect",
    "seal",
    "request_frame",
    "open_response",
    "parse_token",
    "traffic_keys",
    "hkdf_extract",
    "hkdf_expand",
    "__version__",
]

import atexit
import base64
import binascii
import bisect
import collections
import contextlib
import errno
import hashlib
import hmac
import inspect
import io
import json
import logging
import math
import os
import queue
import re
import select
import selectors
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import weakref
import zlib

log = logging.getLogger("dsn_sync")

PROTOCOL_VERSION = 1  # the frame byte
PROTOCOL_MINOR = "1.1"  # what hello says as `pv` (PROTOCOL.md 6)
STREAM_TYPE = "application/x-dsn-stream"  # Content-Type of a streamed pull's answer (README: "Streamed pulls")

# =============================================================================
# Errors
# =============================================================================


class DSNError(Exception):
    """Root of every error this module raises on purpose.

    ``code`` is the protocol's error code (PROTOCOL.md section 4) when the error
    is one a client should see, e.g. ``not_found`` or ``rejected``.
    """

    code = "bad_request"

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self):
        return self.args[0] if self.args else ""


# Defined beside what raises them, all DSNError subclasses with a protocol code:
# NotFound (not_found), Exists (exists), Invalid (invalid), UnknownTable
# (unknown_table) under "Store and change feed"; StoreError there too (a store
# that cannot be opened or written: the engine answers 503, never its message).


class ProtocolError(DSNError):
    """A request that authenticated but breaks a rule; answered sealed, never raised to users."""


class AuthError(DSNError):
    """The token does not open, was revoked, or has expired (code ``expired``)."""

    code = "unauthorized"


class _HTTPFault(Exception):
    """A transport status with no sealed body (PROTOCOL.md section 3): 400, 401, 404, 503 ...

    The engine raises it; each transport turns it into a response in one place.
    """

    def __init__(self, status, reason=""):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


# =============================================================================
# Encoding and envelope (PROTOCOL.md sections 1 and 2)
# =============================================================================

_B64U_RE = re.compile(rb"[A-Za-z0-9_-]*")  # fullmatch: "$" would let a trailing newline in
_STREAM_LABEL = b"dsn-sync/v1 stream"
_REQ_LABEL = b"dsn-sync/v1 req\n"
_RES_LABEL = b"dsn-sync/v1 res\n"
_TOKEN_LABEL = b"dsn-sync/v1 token"
NONCE_SIZE = 16
TAG_SIZE = 32
OVERHEAD = NONCE_SIZE + TAG_SIZE


def b64u_encode(data):
    """Base64url without padding, as text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    """Inverse of b64u_encode; raises ValueError on anything else."""
    if isinstance(text, str):
        text = text.encode("ascii", "strict")
    if not _B64U_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


# Compact UTF-8 JSON; NaN and infinities are refused because JSON.parse refuses
# them.  One encoder built once: json.dumps() with options builds a new encoder
# per call (2.6 us versus 1.4 us for a small answer here).
_json_checked = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _fast_json():
    """_json_checked's output from the C encoder, built once rather than per call (0.7 us against
    1.9 us for a small answer here: two per write).  Without the cycle check, so it is for values
    that cannot hold one (parsed JSON, answers the server builds); the app's own data goes through
    _json_checked, which stops at a cycle at once.  A too deep nesting ends in RecursionError, and
    then _json_checked says so too.  None where the interpreter has no C encoder (or one called
    otherwise): _json_checked is used."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encode = make(None, _json_checked.__self__.default, json.encoder.encode_basestring, None, ":", ",",
                      False, False, False)
        if "".join(encode({"a": [1, 2.5, None, True, "\u00e9"]}, 0)) != '{"a":[1,2.5,null,true,"\u00e9"]}':
            return None
    except Exception:
        return None
    join = "".join

    def dumps(obj):
        try:
            return join(encode(obj, 0))
        except RecursionError:
            return _json_checked(obj)
    return dumps


_json_dumps = _fast_json() or _json_checked


def hkdf_extract(salt, ikm):
    """RFC 5869 HKDF-Extract with SHA-256; an empty salt means 32 zero bytes."""
    return hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    """RFC 5869 HKDF-Expand with SHA-256; refuses more than 255 * 32 bytes."""
    if not 0 <= length <= 255 * 32:
        raise ValueError("HKDF-Expand can give at most 8160 bytes, asked for %d" % length)
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


_U32 = struct.Struct(">I").pack


def _xor(data, stream):
    # One big-integer XOR runs at memory speed (about 1 GB/s here), versus about
    # 30 MB/s for a per-byte generator; this keeps seal/open bound by SHAKE256.
    n = len(data)
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


class SealKey:
    """A 64-byte envelope key split once into its halves, with the costly parts precomputed.

    Seal and open run on every request, so the sponge absorbing the label and
    ``enc`` and the HMAC inner/outer pads are prepared here once and copied per
    frame (copying is several microseconds cheaper than starting over).
    """

    __slots__ = ("enc", "mac", "_sponge", "_inner", "_outer")

    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)) or len(key) != 64:
            raise ValueError("an envelope key is 64 bytes, got %r" % (type(key).__name__ if not isinstance(key, (bytes, bytearray)) else len(key)))
        key = bytes(key)
        self.enc, self.mac = key[:32], key[32:]
        self._sponge = hashlib.shake_256(_STREAM_LABEL + self.enc)
        # HMAC-SHA256 (RFC 2104) as its two hashes with the padded key absorbed: copying
        # these is C, where hmac.HMAC.copy() is a Python-level object per frame.
        block = self.mac.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def stream(self, nonce, length):
        sponge = self._sponge.copy()
        sponge.update(nonce)
        return sponge.digest(length)

    def tag(self, aad, nonce, ct):
        inner = self._inner.copy()
        inner.update(_U32(len(aad)))
        inner.update(aad)
        inner.update(nonce)
        inner.update(ct)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _as_key(key):
    return key if isinstance(key, SealKey) else SealKey(key)


class _NoncePool:
    """16-byte nonces cut from 4 KiB reads of os.urandom.

    One urandom call per answer was a system call per response (about 5 % of the
    server's samples under load, nearly all in the kernel).  The lock makes
    every nonce a distinct slice, so no two seals ever share one.  A forked
    child drops what it inherited: else parent and child (gunicorn's and
    ``--workers`` processes, a ``--preload``ed app's restarted workers) would
    seal with the same nonces under the same key, the same keystream twice.
    """

    def __init__(self, chunk=4096):
        self._chunk = chunk
        self._buf = b""
        self._at = 0
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self):
        self._buf, self._at = b"", 0
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def take(self):
        with self._lock:
            at = self._at
            if at + NONCE_SIZE > len(self._buf):
                self._buf, at = os.urandom(self._chunk), 0
            self._at = at + NONCE_SIZE
            return self._buf[at:at + NONCE_SIZE]


_nonces = _NoncePool()


def seal(key, aad, plaintext, nonce=None):
    """Encrypt-then-MAC ``plaintext`` bound to ``aad``: nonce || ct || tag (48 bytes of overhead).

    ``key`` is 64 bytes (or a SealKey); ``nonce`` is for test vectors only and
    defaults to 16 bytes from os.urandom.  Cost: one SHAKE256 squeeze and one
    HMAC over the plaintext's length.
    """
    key = _as_key(key)
    if nonce is None:
        nonce = _nonces.take()
    elif len(nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 16 bytes, got %d" % len(nonce))
    ct = _xor(plaintext, key.stream(nonce, len(plaintext))) if plaintext else b""
    return nonce + ct + key.tag(aad, nonce, ct)


def open(key, aad, blob):  # noqa: A001 - the protocol's own word; builtins.open is io.open here
    """Check and decrypt a sealed blob; returns the plaintext, or None if it does not authenticate.

    The tag is compared in constant time before anything is decrypted, so a
    forged frame costs one HMAC and is never parsed.
    """
    key = _as_key(key)
    if len(blob) < OVERHEAD:
        return None
    blob = bytes(blob)
    nonce, ct, tag = blob[:NONCE_SIZE], blob[NONCE_SIZE:-TAG_SIZE], blob[-TAG_SIZE:]
    if not hmac.compare_digest(tag, key.tag(aad, nonce, ct)):
        return None
    return _xor(ct, key.stream(nonce, len(ct))) if ct else b""


# =============================================================================
# Tokens (PROTOCOL.md section 2)
# =============================================================================

_TOKEN_RE = re.compile(r"dsn1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")


def parse_token(token):
    """Split ``dsn1.<kid>.<secret>`` into (kid, secret bytes); raises ValueError with the reason."""
    if not isinstance(token, str):
        raise ValueError("a token is a string 'dsn1.<kid>.<secret>', got %s" % type(token).__name__)
    m = _TOKEN_RE.fullmatch(token.strip())
    if not m:
        raise ValueError("not a dsn-sync token: expected 'dsn1.<kid>.<secret>' (copy it whole from get_token())")
    secret = b64u_decode(m.group(2))
    if len(secret) != 32:
        raise ValueError("the token's secret half must be 32 bytes")
    return m.group(1), secret


def traffic_keys(token_secret):
    """(c2s, s2c) 64-byte envelope keys for one token, as PROTOCOL.md section 2 derives them."""
    prk = hkdf_extract(b"dsn-sync/v1 traffic", token_secret)
    return hkdf_expand(prk, b"c2s", 64), hkdf_expand(prk, b"s2c", 64)


def _parse_secret(secret):
    """Master secret from bytes, hex or base64 text; exactly 32 bytes."""
    if isinstance(secret, str):
        text = secret.strip()
        raw = None
        if re.match(r"^[0-9a-fA-F]{64}$", text):
            raw = bytes.fromhex(text)
        else:
            try:
                raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError):
                raw = None
        if raw is None:
            raise ValueError("secret text must be 64 hex characters or base64 of 32 bytes")
        secret = raw
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError("secret must be bytes or text, got %s" % type(secret).__name__)
    if len(secret) != 32:
        raise ValueError("secret must be 32 bytes, got %d (make one with: python -c \"import os; print(os.urandom(32).hex())\")" % len(secret))
    return bytes(secret)


def request_frame(kid, c2s, path, plaintext, nonce=None):
    """``0x01 || u16(len(kid)) || kid || seal(c2s, "dsn-sync/v1 req\\n" || path, plaintext)`` (PROTOCOL.md 3).

    ``kid`` is text, ``c2s`` a 64-byte key or SealKey, ``path`` the part from
    ``/sync/`` on.  The request nonce is ``frame[3 + len(kid):][:16]``.
    """
    kid = kid.encode("ascii") if isinstance(kid, str) else kid
    return b"\x01" + struct.pack(">H", len(kid)) + kid + seal(c2s, _REQ_LABEL + path.encode("ascii"), plaintext, nonce)


def open_response(s2c, request_nonce, body):
    """The plaintext of a response frame bound to ``request_nonce``, or None if it does not authenticate."""
    if not body or body[0] != PROTOCOL_VERSION:
        return None
    return open(s2c, _RES_LABEL + request_nonce, bytes(body[1:]))


class _TokenState:
    """What the server keeps per kid after the first successful open: claims and traffic keys."""

    __slots__ = ("kid", "claims", "jti", "c2s", "s2c", "read", "write", "sub", "exp", "view", "subs", "subs_text",
                 "owner")

    def __init__(self, kid, claims, token_secret):
        self.kid = kid
        self.claims = claims
        self.jti = str(claims.get("jti"))
        c2s, s2c = traffic_keys(token_secret)
        self.c2s, self.s2c = SealKey(c2s), SealKey(s2c)
        self.sub = claims.get("sub")
        # Whose share of the replay memory its frames count in: its user's, or its own with no user.
        self.owner = ("token", self.jti) if self.sub is None else ("user", self.sub)
        self.exp = claims.get("exp")
        self.read = _rights(claims.get("read", "*"))
        self.write = _rights(claims.get("write", "*"))
        self.view = None
        self.subs = None  # {name + params JSON: resolved filters}, filled by _Engine._resolve_subs
        self.subs_text = 0  # the characters of its keys, counted in the engine's total; -1 once evicted


def _rights(value):
    """'*' -> None (everything); a list -> frozenset of table names."""
    if value == "*" or value is None:
        return None
    return frozenset(str(v) for v in value)


class Keyring:
    """The server's master secret and everything derived from it.

    ``mint`` makes tokens statelessly (the claims are sealed inside the kid),
    ``resolve`` turns a kid back into claims and traffic keys.  Resolving costs
    an open and three HKDF calls (about 20 us), so results are cached per kid.
    """

    cache_size = 10000  # distinct live tokens whose keys stay precomputed
    evicted = None  # called with a state the cache lets go of (the engine counts what states hold)

    def __init__(self, secret):
        self.secret = _parse_secret(secret)
        self.prk = hkdf_extract(b"dsn-sync/v1", self.secret)
        self.instance = hkdf_expand(self.prk, b"instance", 8).hex()
        self.token_key = SealKey(hkdf_expand(self.prk, b"token", 64))
        self._cache = collections.OrderedDict()
        self._lock = threading.Lock()

    def token_secret(self, kid):
        return hkdf_expand(self.prk, b"token-secret " + kid.encode("ascii"), 32)

    def mint(self, claims, nonce=None):
        """A token string for ``claims`` (a dict); ``nonce`` only for test vectors."""
        claims_json = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
        kid = b64u_encode(seal(self.token_key, _TOKEN_LABEL, claims_json, nonce))
        return "dsn1." + kid + "." + b64u_encode(self.token_secret(kid))

    def resolve(self, kid):
        """_TokenState for a kid, or None if it does not open (forged, or another server's)."""
        with self._lock:
            state = self._cache.get(kid)
            if state is not None:
                self._cache.move_to_end(kid)
                return state
        try:
            blob = b64u_decode(kid)
        except ValueError:
            return None
        plain = open(self.token_key, _TOKEN_LABEL, blob)
        if plain is None:
            return None
        try:
            claims = json.loads(plain)
            if not isinstance(claims, dict) or claims.get("v") != 1:
                return None
        except ValueError:
            return None
        state = _TokenState(kid, claims, self.token_secret(kid))
        with self._lock:
            self._cache[kid] = state
            if len(self._cache) > self.cache_size:
                _, gone = self._cache.popitem(last=False)
                if self.evicted is not None:
                    self.evicted(gone)
        return state


# =============================================================================
# Store and change feed
# =============================================================================

_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")  # fullmatch: "$" would pass "x\n"
MAX_KEY_LENGTH = 256
MAX_MID_LENGTH = 64


class NotFound(DSNError, KeyError):
    """``update``/``delete``/``remove`` of a key that has no record."""

    code = "not_found"

    def __str__(self):  # KeyError would repr() the message
        return self.message


class Exists(DSNError, ValueError):
    """``create`` of a key that already has a record."""

    code = "exists"


class Invalid(DSNError, ValueError):
    """A record, key or field that breaks the table's schema or the protocol's limits."""

    code = "invalid"


class UnknownTable(DSNError, KeyError):
    """A table that was never defined nor synced into."""

    code = "unknown_table"

    def __str__(self):
        return self.message


def check_table_name(name):
    if not isinstance(name, str) or not _TABLE_RE.fullmatch(name):
        raise ValueError("table name %r must match [A-Za-z_][A-Za-z0-9_-]{0,62}" % (name,))
    return name


def check_key(key):
    if not isinstance(key, str) or not key:
        raise ValueError("a key is a non-empty string, got %r" % (key,))
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError("a key is at most %d characters, got %d" % (MAX_KEY_LENGTH, len(key)))
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a key must be valid Unicode text (it has a lone surrogate): %r" % (key,))
    return key


class _Entry:
    """The latest state of one key: its change seq and its record (None = tombstone).

    The record is kept as its UTF-8 JSON (``data``), exactly the bytes every
    pull and reset carries: a 200-byte record then costs one bytes object
    instead of a dict and its values (about 240 bytes instead of 530 here),
    pulls and resets splice it in without encoding, and the SQLite store
    writes it as it is.  ``shape`` is the record's field names as a tuple
    shared by every record of that shape (see _shape), so a sync() that
    rewrites every field needs no decode to merge; None when the shape is not
    shared (a merge into it then decodes the stored record).
    ``seen`` caches row-rule answers for this state, per claim set
    (``View.rules_key``); any change of the key or of its table's rule clears it.
    In a table that subscriptions filter (MemoryStore.track), ``vals`` caches
    the filtered fields' value keys ({field: _value_key}, None until needed)
    and ``prev`` lists the states before the current one, newest first, as
    ``(seq, data, vals)`` (None: unknown; past the newest, ``data`` is
    _DROPPED), so a change can tell which clients held the row before.
    """

    __slots__ = ("table", "key", "seq", "data", "shape", "seen", "vals", "prev")

    def __init__(self, table, key):
        self.table = table
        self.key = key
        self.seq = 0
        self.data = None
        self.shape = ()
        self.seen = None
        self.vals = None
        self.prev = None

    @property
    def record(self):
        """The record as a fresh dict, or None for a tombstone."""
        return _loads(self.data) if self.data is not None else None


_SHAPES = {}
_SHAPES_BUDGET = 8 << 20  # bytes the shared shapes may pin, all stores together (a 20-field shape: ~1.5 KB)


def _shape(record):
    """The record's field names as the one tuple shared by every record of that shape, or None.

    A tuple per record would pin its own field-name strings: 100 small fields
    cost about 6 KB beside 800 bytes of JSON (issue 15: records cost 12-21x
    their JSON size).  So only shared tuples are kept, while the cache stays
    under ``_SHAPES_BUDGET`` (field names come from clients too, and the cache
    outlives their records); past it, and for a shape of over about 1,000
    fields, it is None.
    """
    global _SHAPES_BUDGET
    shape = tuple(record)
    found = _SHAPES.get(shape)
    if found is None:
        cost = 120 + 64 * len(shape) + sum(map(len, shape))  # tuple slot, str header, dict slot per name
        if cost > 65536 or cost > _SHAPES_BUDGET:  # one shape of 1,000 fields at most
            return None
        _SHAPES_BUDGET -= cost
        found = _SHAPES.setdefault(shape, shape)
    return found


_PLAIN_KEY = re.compile(r'[^"\\\x00-\x1f]*')  # used with fullmatch: '$' would let a final newline in


def _key_json(text):
    """A JSON string literal for a key or table name, as UTF-8 bytes (no encoder call when plain)."""
    if _PLAIN_KEY.fullmatch(text):
        return ('"' + text + '"').encode("utf-8")
    return _json_dumps(text).encode("utf-8")


_PER_TOKEN_CLAIMS = frozenset(("jti", "iat", "exp"))  # what tells two tokens of one user apart


class View:
    """What one token may read: a table set (None = all) and row rules evaluated per claim set.

    A row rule sees the token's claims but its own id and times (``jti``,
    ``iat``, ``exp``), and runs at most once per change per distinct set of
    them: its answer is cached on the change's entry under ``rules_key``,
    the canonical JSON of exactly what the rule sees.  So a thousand clients
    of one user waiting on a change cost one evaluation, not a thousand,
    while an admin token and a user token of the same user (claims that
    differ in anything but those three) never share an answer.
    """

    __slots__ = ("tables", "rules", "sub", "claims", "rules_key")
    # Answers kept per entry, the oldest dropped first: with a token per user every user is
    # a claim set of its own, and a cache without a bound grew by rows x users (each
    # user's reset walks every row).  A change fanned out to many tabs of few users still
    # costs one evaluation each.
    max_answers = 8

    def __init__(self, tables=None, rules=None, sub=None, claims=None):
        self.tables = tables
        self.rules = rules if sub is not None else None  # the app's own token sees every row
        self.sub = sub
        self.claims = {k: v for k, v in (claims or {}).items() if k not in _PER_TOKEN_CLAIMS}
        # Computed once per view (a view lives as long as its token's state);
        # claims come from JSON, so they always encode.
        self.rules_key = json.dumps(self.claims, sort_keys=True, separators=(",", ":"), default=repr)

    def may_see_table(self, table):
        return self.tables is None or table in self.tables

    def row_visible(self, entry):
        """Does this token see ``entry``'s current record?  Called under the store lock."""
        rule = self.rules.get(entry.table) if self.rules else None
        if rule is None:
            return True
        seen = entry.seen
        if seen is None:
            seen = entry.seen = {}
        answer = seen.get(self.rules_key)
        if answer is None:
            try:
                answer = bool(rule(_loads(entry.data), ReadContext(entry.table, entry.key, self)))
            except Exception:
                log.exception("the @can_read('%s') rule raised for key %r; the row stays hidden", entry.table, entry.key)
                answer = False
            if len(seen) >= self.max_answers:
                del seen[next(iter(seen))]
            seen[self.rules_key] = answer
        return answer


class ReadContext:
    """A row rule's second argument: ``table``, ``key``, ``sub`` (the token's user) and ``claims``.

    ``claims`` leaves out ``jti``, ``iat`` and ``exp``: answers are shared by
    every token of a user with the same other claims (see View).
    """

    __slots__ = ("table", "key", "sub", "claims")

    def __init__(self, table, key, view):
        self.table, self.key, self.sub, self.claims = table, key, view.sub, view.claims


EVERYTHING = View()


# =============================================================================
# Subscriptions (README, proposed protocol section 7): which rows a client mirrors
# =============================================================================

_ABSENT = object()  # a field the record does not have
_UNINDEXED = object()  # a field whose value is a list or an object: no filter value equals it
_SUB_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_DROPPED = object()  # an older state of a row whose JSON is no longer kept (Entry.prev)
_UNSEEN = object()  # states this node may not have seen (Entry.prev): another node's changes it caught up past
_HISTORY = 4  # states of a subscribed row kept before its current one


def _value_key(value):
    """A field value as an index key: its JSON text for a scalar (so 1, 1.0 and true differ), else _UNINDEXED."""
    if value is None or type(value) in (str, int, float, bool):
        return _json_dumps(value)
    return _UNINDEXED


def _vals_of_data(data, fields):
    """``{field: value key}`` of a record (UTF-8 JSON) for ``fields``; _ABSENT where it has none."""
    record = _loads(data)
    return {f: (_value_key(record[f]) if f in record else _ABSENT) for f in fields}


def _index_rows(rows, fields):
    """``{field: {value key: {keys}}}`` of ``rows`` ([(key, JSON)]): a secondary index built in one pass."""
    built = {f: {} for f in fields}
    for key, data in rows:
        for field, value in _vals_of_data(data, fields).items():
            if isinstance(value, str):  # _ABSENT and _UNINDEXED are in no index
                built[field].setdefault(value, set()).add(key)
    return built


class _Filter:
    """One table's part of a subscription: every row, field equality (the indexed path), or a predicate.

    ``kind`` is ``all`` (True), ``eq`` (``{field: value or [values]}``: every
    field must equal one of its values; the table's key field matches the
    key) or ``pred`` (a callable given the record, the general path: one
    decode and one call per change per subscribed client).  ``fields`` maps
    each field to a frozenset of value keys (_value_key); ``by`` is the field
    whose index loads the rows (the key field when named, else the field with
    the fewest values).
    """

    __slots__ = ("table", "kind", "keys", "fields", "pred", "by")

    def __init__(self, table, spec, keyfield):
        self.table, self.keys, self.fields, self.pred, self.by = table, None, {}, None, None
        if spec is True:
            self.kind = "all"
        elif callable(spec):
            self.kind, self.pred = "pred", spec
        elif isinstance(spec, dict) and spec:
            self.kind = "eq"
            for field, wanted in spec.items():
                values = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
                if field == keyfield:
                    if not all(isinstance(v, str) for v in values):
                        raise TypeError("table %r: its key field %r is matched with strings, got %r" % (table, field, wanted))
                    self.keys = frozenset(values) if self.keys is None else self.keys & frozenset(values)
                    continue
                found = frozenset(_value_key(v) for v in values)
                if _UNINDEXED in found:
                    raise TypeError("table %r, field %r: filter values are strings, numbers, booleans or None, "
                                    "got %r" % (table, field, wanted))
                self.fields[str(field)] = found
            if self.keys is None:
                self.by = min(self.fields, key=lambda f: len(self.fields[f]))
        else:
            raise TypeError("table %r: a filter is True, a non-empty dict {field: value or [values]} or a callable, "
                            "got %r" % (table, spec))

    def matches(self, store, entry, data=None, vals=None):
        """Does this state of ``entry`` (its current one, or ``data``/``vals`` given) pass?  Under the store lock."""
        if data is None:
            data = entry.data
            if data is None:
                return False
        if self.kind == "all":
            return True
        if self.kind == "pred":
            try:
                return bool(self.pred(_loads(data)))
            except Exception:
                log.exception("a subscription predicate on table %r raised for key %r; the row is left out",
                              self.table, entry.key)
                return False
        if self.keys is not None and entry.key not in self.keys:
            return False
        if self.fields:
            if vals is None:
                vals = store._vals_of(entry)
            for field, wanted in self.fields.items():
                value = vals[field] if field in vals else _vals_of_data(data, (field,))[field]
                if value not in wanted:
                    return False
        return True


class _Resolved(dict):
    """A pull's ``{id: {table: _Filter}}``; ``fresh``: the ids resolved for this pull alone (params too long to cache)."""

    __slots__ = ("fresh",)

    def __init__(self):
        super().__init__()
        self.fresh = set()


class _Subscriptions:
    """A client's held subscriptions, resolved: ``[(id, {table: _Filter})]`` and the same by table."""

    __slots__ = ("items", "by_table", "routes")

    def __init__(self, items):
        self.items = items
        self.by_table = {}
        routes = set()
        for sid, filters in items:
            for table, f in filters.items():
                self.by_table.setdefault(table, []).append((sid, f))
                if f.kind != "eq":
                    routes.add((table,))
                elif f.keys is not None:
                    routes.update((table, "#", k) for k in f.keys)
                else:
                    routes.update((table, f.by, v) for v in f.fields[f.by])
        self.routes = routes  # what a change must touch to concern these (_Feed._touched)


def _state_at(entry, since):
    """``(seq, data, vals)`` of a subscribed row as it was at cursor ``since`` (Entry.prev), or None: unknown."""
    return next((p for p in entry.prev or () if p[0] <= since), None)


def _route_fields(held, table, routes):
    """The fields whose value keys route ``held``'s filters of ``table`` (each an equality filter), or
    None when one is not routed by values (``all`` or a predicate: every change of the table concerns it)."""
    if (table,) in routes:
        return None
    return frozenset(f.by for _, f in held if f.keys is None)


def _touched(routes, since, seq):
    """The routes touched by changes ``since < s <= seq`` in a store's ``routes`` log, or None if unknown."""
    if seq < since or (len(routes) == routes.maxlen and routes[0][0] > since + 1):
        return None  # the log no longer reaches back that far: every subscription pull is concerned
    touched = set()
    for s, table, key, old, new in reversed(routes):
        if s <= since:
            break
        touched.add((table,))
        touched.add((table, "#", key))
        for vals in (old, new):
            if vals:
                touched.update((table, f, v) for f, v in vals.items() if isinstance(v, str))
    return touched


def _concerns(w, seq, sv, touched, routed_to):
    """Has the store moved, since parked pull ``w``'s cursor, in a way that concerns it?

    A subscription pull whose routes no change since its cursor touched
    (``touched``: the routes of the changes after ``routed_to``; None when
    unknown) is not concerned: its cursor moves to ``seq`` instead.
    """
    if w.seq == seq and w.sv == sv:
        return False
    if w.subs is None or w.sv != sv or touched is None or w.seq < routed_to:
        return True
    if touched.isdisjoint(w.subs.routes):
        w.seq = seq  # it waits on from here
        return False
    return True


class SubscriptionContext:
    """A subscription function's first argument: ``name``, ``sub`` (the token's user) and ``claims``."""

    __slots__ = ("name", "sub", "claims")

    def __init__(self, name, state):
        self.name, self.sub, self.claims = name, state.sub, state.claims


_allocate_lock = threading.Lock  # a plain lock, made per held name


class _NameLock:
    """MemoryStore.hold(name): ``acquire``/``release`` (as threading.Lock), or ``with``.

    ``held`` maps each name someone holds to its lock.  The holder puts a
    lock it already holds there (dict.setdefault, one step under the GIL)
    and takes it out before releasing it; a writer that finds another's
    lock there waits on it, then tries again.  So a name's lock exists only
    while it is held, and two names never wait for each other.
    """

    __slots__ = ("held", "name", "lock")

    def __init__(self, held, name):
        self.held, self.name, self.lock = held, name, None

    def acquire(self, blocking=True, timeout=-1):
        mine = _allocate_lock()
        mine.acquire()
        if self.held.setdefault(self.name, mine) is mine:  # the usual case: nobody holds the name
            self.lock = mine
            return True
        return blocking and self._wait(mine, None if timeout < 0 else time.monotonic() + timeout)

    def _wait(self, mine, deadline):
        held, name = self.held, self.name
        while True:
            other = held.setdefault(name, mine)
            if other is mine:
                self.lock = mine
                return True
            if deadline is None:
                other.acquire()
            elif not other.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
            other.release()  # its holder took it out of ``held`` before letting go: try again

    def release(self):
        del self.held[self.name]
        self.lock.release()
        self.lock = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()
        return False


class MemoryStore:
    """The default store: dicts in memory, with a by-sequence change index.

    It is also the store interface: the engine (``_Hub``, ``DSNSync``, the
    feed) uses exactly what is listed here, and a new store (SQLiteStore,
    a PostgreSQL one) subclasses this class and overrides the hooks below.

    State the caller reads (under ``lock``; each is one attribute)::

        lock        an RLock; every method below takes it, and the engine takes
                    it to read several fields as one consistent snapshot
        changed     a Condition on ``lock``, notified after each change and
                    schema change (once at the end of a batch); long-polls and
                    the feed thread wait on it
        seq         the newest change's sequence number (0 when empty)
        sv          the schema version, bumped by every set_table() that changes a spec
        epoch       names this change history; a cursor of another epoch resets
        floor       cursors below it may have missed a deletion and must reset
        tables      {name: spec}; read it, never write it (use set_table)
        secret      the server secret kept in the store, or None
        durable     True if the store keeps changes across a restart

    Methods for the caller (all take ``lock``; ``StoreError`` means the store
    itself failed: nothing of that call was applied, and the message, which
    may name a file, is for the operator's log, never for a client)::

        open() / close()            start and stop; open() returns self.  StoreError
                                    if the store cannot be opened or is damaged
        save_secret(secret)         keep the server secret (a no-op in memory)
        set_table(name, spec)       define or replace a table; returns sv
        apply(table, key, op, data, ledger=None, encoded=None)
                                    one change -> (seq, record); NotFound, Exists,
                                    UnknownTable, StoreError.  With ``ledger`` the
                                    write's answer is remembered in the same step
        begin_batch() / end_batch(ok)
                                    hold the lock, wake-ups and (durable) the commit
                                    across many apply() calls; end_batch may raise
                                    StoreError, and then the batch is undone
        get / exists / get_all / count       the app's reads
        read_visible(table, key, view)       one record as a token may read it
        needs_reset(since)          is a client cursor unusable?
        changes_since(seq, limit, view)      a changes page (UTF-8 JSON fragments)
        snapshot_page(snap, after, limit, view)   a reset page
        recall(jti, mid, view) / remember(jti, mid, answer, user=None)   the mid ledger
        hold(name)                  a context manager: one writer at a time per
                                    ``name``, a tuple (kind, ...), on every node
                                    sharing the store; ("mid", jti, mid) and
                                    ("key", table, key) are the engine's.  Hold
                                    at most one name of a kind, kinds always in
                                    one order (mid, then key), so holds cannot
                                    deadlock.  StoreError if the wait is too long
        revoked() / revoke(jti, exp)         revoked token ids
        forget_rule_answers(table)  drop cached row-rule answers (a rule changed)
        compact(count)              drop the oldest tombstones, raising floor
        check()                     assert every invariant (tests); returns True

    Methods that may be overridden (a durable store's hooks; each runs under
    ``lock`` *before* memory changes, so one that raises StoreError leaves the
    store as it was; outside a batch each must be durable when it returns,
    inside one the store may buffer until end_batch())::

        _persist_change(table, key, seq, record, ledger)
                        a record's new state (UTF-8 JSON bytes, None = tombstone)
                        as ``seq``; ``ledger`` is None or (jti, mid, answer, user),
                        the write's answer to remember *without its record*: it
                        is re-read from (table, key) by recall()
        _persist_answer(jti, mid, answer, user=None)   an answer with no change (an error)
        _persist_table(name, spec, sv)      a schema change
        _persist_floor()                    compaction dropped tombstones <= floor
        open, close, save_secret, recall, revoked, revoke, begin_batch,
        end_batch, check      where the durable copy is involved

    Records live in ``{table: {key: _Entry}}``.  Every change gets the next
    ``seq`` and is appended to a log of ``(seq, entry)``; an entry whose current
    seq differs from the logged one is stale (superseded) and skipped.  Worked
    example::

        sync users/a   -> seq 1   log: [1:a]
        sync users/b   -> seq 2   log: [1:a, 2:b]
        sync users/a   -> seq 3   log: [1:a(stale), 2:b, 3:a]
        pull since 1   -> bisect to seq 2, walk: b, a  (latest states only)

    So a pull costs O(log n + changes since the cursor), not O(records).  The
    log is rebuilt without stale slots once they are half of it (amortised
    O(1) per change).  Deletions leave tombstones (``record is None``) so that
    pulls can carry them; past ``max_tombstones`` the oldest are dropped and
    ``floor`` moves up to the newest dropped seq: a cursor below ``floor``
    might have missed a deletion and gets a reset.

    Records are never mutated in place (a merge builds a new dict), so a
    record read under the lock can be used after releasing it.  Nothing
    outside the store writes its private fields.

    The in-memory store takes a new random epoch per process, so clients of a
    restarted server reset instead of silently missing changes, and it
    remembers mutation ids for the newest ``mid_capacity`` writes only.
    """

    durable = False
    shared = False  # True where several processes serve one store (PostgreSQL): the engine then
    # keeps replay memory and endpoint paths where every node sees them
    secret = None
    max_tombstones = 100000  # tombstones kept before the oldest are compacted
    mid_capacity = 100000  # newest (token, mid) answers remembered for idempotent retries
    page_bytes = 4 << 20  # a reset page or changes answer stops past this much record JSON, whatever page_size says
    page_scan = 20000  # log entries one reset page may walk under the lock, rows its reader may not see included
    max_walk = 20000  # log slots one changes answer walks under the lock (a few ms); past it the client pulls again
    max_selected = 1000000  # rows of large subscriptions kept in seq order for their next pages (see _selection)
    selection_idle = 60.0  # seconds a kept selection no page reads stays

    def __init__(self):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._reset_memory()
        self.epoch = b64u_encode(os.urandom(9))
        self._batch_depth = 0
        self._batch_dirty = False
        self._tracked = {}  # {table: frozenset(fields)} that subscriptions filter; outlives a reload
        # (seq, table, key, old vals, new vals) of the latest changes to tracked tables: the feed
        # wakes only the subscription pulls whose routes (_Subscriptions.routes) they touch
        self.routes = collections.deque(maxlen=65536)

    def _reset_memory(self):
        self.seq = 0
        self.sv = 0
        self.floor = 0
        self.tables = {}
        self._data = {}
        self._log_seq = []
        self._log_entry = []
        self._stale = 0
        self._tombstones = 0
        self._mids = collections.OrderedDict()
        self._mids_of = {}  # {share: deque of its (jti, mid) keys in _mids, oldest first}; see _remember_mid
        self._share_of = {}  # {jti: [its share, its entries in _mids]}
        self._indexes = {}  # {(table, field): {value key: {keys}}}, built when first needed
        self._building = {}  # {(table, field): keys written meanwhile} of indexes track() is building
        self._selections = collections.OrderedDict()  # see _selection(): {name: [seqs, entries, last used, built]}
        self._selected = 0  # slots in _selections, at most max_selected
        self._generation = getattr(self, "_generation", 0) + 1  # a build across a reload is dropped

    # -- lifecycle (a durable store opens files here) -------------------------
    def open(self):
        """Make the store ready; returns self.  Nothing to open in memory."""
        return self

    def close(self):
        """Release files and connections; the memory store keeps its contents."""

    def save_secret(self, secret):
        """Keep the server secret (32 bytes) across restarts: a no-op here, nothing outlives the process."""

    # -- persistence hooks (no-ops in memory, but for the mid ledger) ----------
    def _persist_change(self, table, key, seq, record, ledger):
        if ledger is not None:
            jti, mid, answer, user = ledger
            # An ok answer is kept as (table, key, seq, epoch), 88 bytes, never
            # with its record: recall() reads the key's current state instead.
            self._remember_mid(jti, mid, answer if table is None else (table, key, answer["seq"], answer["epoch"]), user)

    def _remember_mid(self, jti, mid, value, user=None):
        """File one ledger entry.  One user's tokens keep at most a quarter of ``mid_capacity``
        together (a token with no user: that token), their oldest dropped first: else one
        user's real writes, through one token or a token per login, could push everyone
        else's answers out, and an honest retry would be applied twice."""
        mids, key = self._mids, (jti, mid)
        if key in mids:
            mids[key] = value
            return
        mids[key] = value
        share = self._share_of.get(jti)
        if share is None:  # a token's user never changes: its share is fixed with its first entry
            share = self._share_of[jti] = [("user", user) if user is not None else ("token", jti), 0]
        share[1] += 1
        own = self._mids_of.get(share[0])
        if own is None:
            own = self._mids_of[share[0]] = collections.deque()
        own.append(key)
        if len(own) > max(1, self.mid_capacity // 4):
            self._forget_mid(own.popleft(), own)
        elif len(mids) > self.mid_capacity:
            oldest = next(iter(mids))  # the ledger's oldest entry is its share's oldest
            theirs = self._mids_of[self._share_of[oldest[0]][0]]
            self._forget_mid(theirs.popleft(), theirs)

    def _forget_mid(self, key, own):
        """Drop ledger entry ``key``, just taken from the front of its share's deque ``own``."""
        del self._mids[key]
        share = self._share_of[key[0]]
        share[1] -= 1
        if not share[1]:
            del self._share_of[key[0]]
        if not own:
            del self._mids_of[share[0]]

    def _persist_table(self, name, spec, sv):
        pass

    def _persist_answer(self, jti, mid, answer, user=None):
        self._persist_change(None, None, None, None, (jti, mid, answer, user))

    def _persist_floor(self):
        pass

    # -- schema ---------------------------------------------------------------
    def set_table(self, name, spec):
        """Define or replace a table's schema; bumps ``sv`` (clients upgrade their stores)."""
        with self.lock:
            if self.tables.get(name) == spec:
                return self.sv
            self._persist_table(name, spec, self.sv + 1)
            self.tables[name] = spec
            self._data.setdefault(name, {})
            self.sv += 1
            self._notify()
            return self.sv

    # -- reads ----------------------------------------------------------------
    def get(self, table, key):
        """The record of ``table``/``key`` as a fresh dict, or None (absent, deleted, or no such table)."""
        with self.lock:
            entry = self._data.get(table, {}).get(key)
            data = entry.data if entry is not None else None
        return _loads(data) if data is not None else None

    def exists(self, table, key):
        """True if ``table``/``key`` has a record (a tombstone does not count).  O(1)."""
        with self.lock:
            entry = self._data.get(table, {}).get(key)
            return entry is not None and entry.data is not None

    def get_all(self, table):
        """``{key: record}`` of every record in ``table`` (fresh dicts); UnknownTable if undefined.

        O(records in the table): the JSON is copied under the lock and decoded after.
        """
        with self.lock:
            if table not in self._data:
                raise UnknownTable("no table %r" % (table,))
            raw = [(k, e.data) for k, e in self._data[table].items() if e.data is not None]
        return {k: _loads(d) for k, d in raw}

    def count(self, table=None):
        """How many records ``table`` holds (all tables if None; 0 for an unknown one).  O(records)."""
        with self.lock:
            tables = [table] if table is not None else list(self._data)
            return sum(1 for t in tables for e in self._data.get(t, {}).values() if e.data is not None)

    def read_visible(self, table, key, view=EVERYTHING):
        """The record of ``table``/``key`` as ``view`` may read it (a fresh dict), or None.

        None when the key has no record, when the view may not read the table,
        or when the table's row rule hides the row; the rule's answer comes
        from (and goes to) the same cache as changes_since(), so it is exactly
        what a pull would show.  Write answers are filtered through this.
        """
        with self.lock:
            if not view.may_see_table(table):
                return None
            entry = self._data.get(table, {}).get(key)
            if entry is None or entry.data is None or (view.rules and not view.row_visible(entry)):
                return None
            data = entry.data
        return _loads(data)

    def forget_rule_answers(self, table):
        """Drop the cached row-rule answers of ``table`` (its rule was replaced).  O(records in the table)."""
        with self.lock:
            for entry in self._data.get(table, {}).values():
                entry.seen = None

    # -- writes ---------------------------------------------------------------
    def apply(self, table, key, op, data=None, ledger=None, encoded=None):
        """Apply one change atomically; returns (seq, record).

        ``op``: ``create`` (Exists if present), ``update`` (NotFound if absent;
        shallow merge), ``upsert`` (merge or create), ``replace`` (whole record),
        ``delete`` (NotFound if absent).  ``data`` must already be validated.
        ``ledger``: a client write's ``(jti, mid)`` or ``(jti, mid, user)``,
        remembered with its answer (``ok``, ``seq``, ``epoch``; not the record)
        in the same step, so a retry can never apply it twice; ``user`` (the
        token's, or None) is whose share of a bounded ledger it counts in.  ``encoded``:
        ``data`` as UTF-8 JSON when the caller has it already.  The record
        returned is a dict the caller may keep.
        """
        with self.lock:
            rows, entry, stored, shape, record = self._plan(table, key, op, data, encoded)
            seq = self.seq + 1
            if ledger is not None:  # PROTOCOL.md 6: a remembered answer keeps the epoch it was first given
                answer = {"ok": True, "seq": seq, "epoch": self.epoch}
                ledger = (ledger[0], ledger[1], answer, ledger[2] if len(ledger) > 2 else None)
            self._persist_change(table, key, seq, stored, ledger)
            self._put(rows, table, key, entry, stored, seq, shape)
            self._notify()
            return seq, record

    def _plan(self, table, key, op, data, encoded):
        """apply()'s checks and merge, on memory, changing nothing: (rows, entry, stored JSON, shape, record).

        Under ``lock``.  Raises UnknownTable, Exists, NotFound, ValueError.
        """
        rows = self._data.get(table)
        if rows is None:
            raise UnknownTable("no table %r" % (table,))
        entry = rows.get(key)
        present = entry is not None and entry.data is not None
        if op == "delete":
            if not present:
                raise NotFound("%s/%s does not exist" % (table, key))
            return rows, entry, None, (), None
        if op == "create" and present:
            raise Exists("%s/%s already exists" % (table, key))
        if op == "update" and not present:
            raise NotFound("%s/%s does not exist" % (table, key))
        if op not in ("create", "update", "upsert", "replace"):
            raise ValueError("unknown op %r" % (op,))
        shape = _shape(data)
        if present and op != "replace" and (entry.shape is None or (
                shape is not entry.shape and not all(f in data for f in entry.shape))):
            record = _loads(entry.data)  # a partial update: merge into the stored fields
            record.update(data)
            shape = _shape(record)
            stored = _json_dumps(record).encode("utf-8")
        else:  # new, or every stored field rewritten: the data is the record
            record = dict(data)
            stored = encoded if encoded is not None else _json_dumps(record).encode("utf-8")
        return rows, entry, stored, shape, record

    def _put(self, rows, table, key, entry, record, seq, shape=()):
        """File ``record`` (UTF-8 JSON bytes, or None for a deletion) as ``seq``."""
        self.seq = seq
        if entry is None:
            entry = rows[key] = _Entry(table, key)
        else:
            self._stale += 1
            if entry.data is None:
                self._tombstones -= 1
        fields = self._tracked.get(table)
        if fields is not None:
            self._reindex(entry, record, fields, seq)
        else:
            entry.vals = None
        entry.seq = seq
        entry.data = record
        entry.shape = shape
        entry.seen = None
        if record is None:
            self._tombstones += 1
        self._log_seq.append(seq)
        self._log_entry.append(entry)
        if self._stale > 1024 and self._stale * 2 > len(self._log_seq):
            self._compact_log()
        if self._tombstones > self.max_tombstones:
            self.compact(self._tombstones - self.max_tombstones // 2)

    def _compact_log(self):
        keep = [(s, e) for s, e in zip(self._log_seq, self._log_entry) if e.seq == s]
        self._log_seq = [s for s, _ in keep]
        self._log_entry = [e for _, e in keep]
        self._stale = 0

    def compact(self, count=None):
        """Drop the oldest ``count`` tombstones (all if None); returns how many were dropped.

        ``floor`` becomes the newest dropped seq: cursors below it get a reset.
        """
        with self.lock:
            dropped = 0
            for s, e in zip(self._log_seq, self._log_entry):
                if count is not None and dropped >= count:
                    break
                if e.seq == s and e.data is None:
                    del self._data[e.table][e.key]
                    e.seq = -1  # its log slot is stale from now on
                    self._stale += 1
                    self._tombstones -= 1
                    self.floor = max(self.floor, s)
                    dropped += 1
            if dropped:
                self._compact_log()
                self._persist_floor()
            return dropped

    def _notify(self):
        if self._batch_depth:
            self._batch_dirty = True
        else:
            self.changed.notify_all()

    def begin_batch(self):
        """Hold feed wake-ups (and, in a durable store, the commit) until end_batch()."""
        self.lock.acquire()
        self._batch_depth += 1

    def end_batch(self, ok=True):
        try:
            self._batch_depth -= 1
            if not self._batch_depth and self._batch_dirty:
                self._batch_dirty = False
                self.changed.notify_all()
        finally:
            self.lock.release()

    # -- feed -----------------------------------------------------------------
    def needs_reset(self, since):
        """True if a cursor ``{"epoch","seq","sv"}`` cannot be served from the change index."""
        if not isinstance(since, dict):
            return True
        seq, sv = since.get("seq"), since.get("sv")
        if since.get("epoch") != self.epoch or type(seq) is not int or type(sv) is not int:
            return True
        return seq < self.floor or seq > self.seq or sv > self.sv

    def changes_since(self, seq, limit, view=EVERYTHING, subs=None):
        """(changes as UTF-8 JSON fragments, new cursor seq) for changes after ``seq``.

        O(log n + changes since seq).  At most ``limit`` changes, from a walk
        of at most ``max_walk`` log slots (changes to tables the view may not
        read are walked too); the cursor then stops where the answer ends,
        and the client pulls again.  A row
        the view's rules hide is carried as a deletion (it may have been
        visible before this change).  With ``subs`` (a client's held
        _Subscriptions) only the changes those select, tagged (_changes_for).
        """
        with self.lock:
            if subs is not None:
                return self._changes_for(seq, limit, view, subs)
            seqs, entries = self._log_seq, self._log_entry
            out = []
            size = 0
            cursor = self.seq
            tables, rules = view.tables, view.rules
            start = bisect.bisect_right(seqs, seq)
            end = len(seqs)
            if end - start > self.max_walk:  # rows of tables it may not read are walked too: stop, it pulls again
                end = start + self.max_walk
                cursor = seqs[end - 1]
            for i in range(start, end):
                entry = entries[i]
                if entry.seq != seqs[i]:
                    continue
                if tables is not None and entry.table not in tables:
                    continue
                if len(out) >= limit or size >= self.page_bytes:
                    cursor = seqs[i] - 1
                    break
                data = entry.data
                if data is None or (rules and not view.row_visible(entry)):
                    data = b"null"
                out.append(b"".join((b"[", _key_json(entry.table), b",", _key_json(entry.key), b",", data, b"]")))
                size += len(data)
            return out, cursor

    def snapshot_page(self, snap_seq, after, limit, view=EVERYTHING):
        """One reset page: (``{table: {key: record}}`` as UTF-8 JSON, last seq walked, more).

        Walks the log in seq order from ``after`` up to ``snap_seq``; a record
        changed since the snapshot (its seq is past ``snap_seq``) is skipped
        here and reaches the client through the changes after ``snap_seq``.
        At most ``page_scan`` entries are walked per page: where a row rule
        hides most rows from this reader, a page may then hold few records or
        none and still say ``more`` (PROTOCOL.md allows it), so no reader holds
        the lock for a walk of the whole table.
        """
        with self.lock:
            seqs, entries = self._log_seq, self._log_entry
            records = {t: [] for t in self.tables if view.may_see_table(t)}
            rules = view.rules
            n = size = 0
            last = after
            i = bisect.bisect_right(seqs, after)
            end = bisect.bisect_right(seqs, snap_seq)
            budget = i + self.page_scan
            while i < end:
                if i >= budget:
                    last = seqs[i - 1]  # walked this far: the next page goes on from here
                    break
                entry = entries[i]
                s = seqs[i]
                i += 1
                if entry.seq != s or entry.data is None or entry.table not in records:
                    continue
                if rules and not view.row_visible(entry):
                    continue
                records[entry.table].append(b"".join((_key_json(entry.key), b":", entry.data)))
                last = s
                n += 1
                size += len(entry.data)
                if n >= limit or size >= self.page_bytes:
                    break
            more = i < end and i >= budget
            if not more and (n >= limit or size >= self.page_bytes):
                # Peek for one more record, so the last page is rarely empty (within the same budget:
                # past it, say more and let the next page look).
                for j in range(i, end):
                    if j >= budget:
                        more = True
                        break
                    entry = entries[j]
                    if (entry.seq == seqs[j] and entry.data is not None and entry.table in records
                            and (not rules or view.row_visible(entry))):
                        more = True
                        break
        # The page is spliced from the stored JSON, outside the lock: no record is decoded.
        blob = b"{" + b",".join(b"".join((_key_json(t), b":{", b",".join(rows), b"}")) for t, rows in records.items()) + b"}"
        return blob, (last if more else snap_seq), more

    # -- subscriptions: secondary indexes and filtered feeds ----------------------
    def track(self, table, fields=()):
        """Keep ``table`` ready for subscriptions: each row's previous state, and ``fields`` indexed.

        A missing index is built here, in one pass over the table's rows that
        decodes them *outside* the lock (about 5 us a row: seconds for a
        million, during which writes and pulls go on), then catches up with
        the keys written meanwhile.  Every change keeps it after that.  A
        tracked table keeps each row's previous state beside its current one,
        so a change can tell who held the row before.
        """
        with self.lock:
            have = self._tracked.get(table)
            wanted = frozenset(fields) | (have or frozenset())
            if have != wanted:
                self._tracked[table] = wanted
            missing = [f for f in fields if (table, f) not in self._indexes and (table, f) not in self._building]
            if not missing:
                return
            for field in missing:
                self._building[(table, field)] = set()  # keys written while we build
            generation = self._generation
            rows = [(k, e.data) for k, e in self._data.get(table, {}).items() if e.data is not None]
        built = None
        try:
            built = _index_rows(rows, missing)
        finally:
            with self.lock:
                for field in missing:
                    written = self._building.pop((table, field), ())
                    if built is None or generation != self._generation or (table, field) in self._indexes:
                        continue  # failed, memory was reloaded meanwhile, or _index() built it: _index() builds on use
                    index = built[field]
                    if written:
                        for value in list(index):
                            index[value] -= written
                            if not index[value]:
                                del index[value]
                        current = self._data.get(table, {})
                        for key in written:
                            entry = current.get(key)
                            if entry is not None and entry.data is not None:
                                value = self._vals_of(entry).get(field)
                                if isinstance(value, str):
                                    index.setdefault(value, set()).add(key)
                    self._indexes[(table, field)] = index

    def _vals_of(self, entry):
        """``entry``'s value keys of its table's tracked fields ({} for a tombstone), cached on it."""
        vals = entry.vals
        fields = self._tracked.get(entry.table, ())
        if vals is None or any(f not in vals for f in fields):
            vals = entry.vals = _vals_of_data(entry.data, fields) if entry.data is not None else {}
        return vals

    def _reindex(self, entry, record, fields, seq):
        """Before ``entry`` takes ``record`` (JSON bytes or None) as ``seq``: keep its previous state,
        move it in the indexes, and log what it touched for the feed (routes)."""
        old = self._vals_of(entry) if entry.data is not None else None
        # Its states before this change, newest first: the newest keeps its JSON, the
        # older ones (up to _HISTORY) only their value keys, enough for equality filters.
        older = [(s, _DROPPED if d is not None and d is not _UNSEEN else d, v)
                 for s, d, v in (entry.prev or ())[:_HISTORY - 1]]
        entry.prev = [(entry.seq, entry.data, old)] + older
        new = _vals_of_data(record, fields) if record is not None else None
        entry.vals = new
        self.routes.append((seq, entry.table, entry.key, old, new))
        for field in fields:
            index = self._indexes.get((entry.table, field))
            if index is None:
                written = self._building.get((entry.table, field))
                if written is not None:
                    written.add(entry.key)
                continue
            before = old.get(field) if old else None
            after = new.get(field) if new else None
            if before == after:
                continue
            if isinstance(before, str):
                keys = index.get(before)
                if keys is not None:
                    keys.discard(entry.key)
                    if not keys:
                        del index[before]
            if isinstance(after, str):
                index.setdefault(after, set()).add(entry.key)

    def _index(self, table, field):
        """``{value key: {keys}}`` of ``table``'s live rows by ``field`` (tracked), built now if missing."""
        index = self._indexes.get((table, field))
        if index is None:
            rows = [(k, e.data) for k, e in self._data.get(table, {}).items() if e.data is not None]
            index = self._indexes[(table, field)] = _index_rows(rows, (field,))[field]
        return index

    def _candidates(self, filters, after, snap):
        """(the live entries ``filters`` may select with ``after < seq <= snap``, in seq order; the seq searched to).

        From the indexes when every filter names its keys or an indexed field
        and they select at most ``page_scan`` rows: then the search reaches
        ``snap``.  Otherwise (a predicate, a whole table, a value most rows
        share) from a walk of at most ``page_scan`` log slots, so one page never
        holds the lock for a walk of the whole log; the next page goes on from
        the seq returned.
        """
        if all(f.kind == "eq" for f in filters.values()):
            sources, total = self._index_sources(filters)
            if total <= self.page_scan:
                found = []
                for rows, sets in sources:
                    for key in set().union(*sets):
                        entry = rows.get(key)
                        if entry is not None and entry.data is not None and after < entry.seq <= snap:
                            found.append(entry)
                found.sort(key=lambda e: e.seq)
                return found, snap
        return self._walk(filters, after, snap)

    def _index_sources(self, filters):
        """For equality ``filters``: ([(their table's rows, [key sets to unite])], the sets' sizes summed).

        The sets are the filters' own keys or the index's live sets, which
        writers change: use them under the lock, or copy them.
        """
        sources, total = [], 0
        for table, f in filters.items():
            if f.keys is not None:
                sets = [f.keys]
            else:
                index = self._index(table, f.by)
                sets = [index[v] for v in f.fields[f.by] if v in index]
            total += sum(map(len, sets))
            sources.append((self._data.get(table, {}), sets))
        return sources, total

    def _walk(self, filters, after, snap):
        """_candidates() from the log: the live entries of ``filters``' tables in at most ``page_scan`` slots past ``after``."""
        seqs, entries = self._log_seq, self._log_entry
        lo, hi = bisect.bisect_right(seqs, after), bisect.bisect_right(seqs, snap)
        stop = min(hi, lo + self.page_scan)
        found = [e for s, e in zip(seqs[lo:stop], entries[lo:stop]) if e.seq == s and e.data is not None and e.table in filters]
        return found, (snap if stop == hi else seqs[stop - 1])

    def _selection(self, filters, snap, after, limit):
        """The rows an equality subscription selects, in seq order, for a page at ``snap``: (seqs, entries, built), or None.

        For a selection of more than one page (over ``limit`` rows) and at most
        a quarter of its tables' rows, which neither _candidates() path pages
        well: sorting the whole selection for every page holds the lock for
        O(n log n) each time, and a walk of the log finds few of its rows per
        ``page_scan`` slots (a page then holds few rows, and a reset takes as
        many pages as the log has slots over ``page_scan``).  The index's key
        sets are copied under the lock, the rows looked up and sorted outside
        it, as of the seq ``built`` then; a page bisects to its cursor.

        One list per set of filters serves a page at any snapshot.  Its rows
        are those selected at ``built``: a row changed since has a new seq and
        is skipped (the entry is the row's, changed in place), rows past
        ``snap`` are left out, and for ``snap > built`` the page walks the log
        from ``built`` for rows that joined since.  What a page so leaves out
        changed after ``snap`` and reaches the client through the changes
        after it, so the list never needs updating.

        Built by a reset's first page at the store's current seq, when there is
        no list yet or that walk would pass ``page_scan`` log slots; any other
        page without a list walks the log (bounded).  So a client cannot make
        the server sort a list for every snapshot its cursor names, nor more
        than once per ``page_scan`` writes.  Kept until no page has read it for
        ``selection_idle`` seconds, or max_selected rows of lists used since
        push it out.  None for anything else, and when memory was reloaded or
        rolled back meanwhile.
        """
        if not filters or any(f.kind != "eq" for f in filters.values()):
            return None
        name = tuple((t, f.keys, frozenset(f.fields.items())) for t, f in sorted(filters.items(), key=lambda i: i[0]))
        with self.lock:
            generation, now, kept = self._generation, time.monotonic(), self._selections
            while kept and next(iter(kept.values()))[2] < now - self.selection_idle:
                self._selected -= len(kept.popitem(last=False)[1][0])
            name = (generation, name)
            found = kept.get(name)
            if found is not None:
                kept.move_to_end(name)
                found[2] = now
                if after or snap != self.seq or snap - found[3] <= self.page_scan:
                    return found[0], found[1], found[3]
            elif after or snap != self.seq:
                return None
            sources, total = self._index_sources(filters)
            if total <= limit or total * 4 > sum(len(rows) for rows, _ in sources):
                return None
            sources = [(rows, set().union(*sets)) for rows, sets in sources]  # a copy: writers change the index
        seqs, entries = [], []
        for rows, keys in sources:
            get = rows.get  # one step under the GIL; a row changed meanwhile is skipped by its page
            for key in keys:
                entry = get(key)
                if entry is not None:
                    seq = entry.seq  # read once: a writer changes it in place
                    if 0 < seq <= snap:
                        seqs.append(seq)
                        entries.append(entry)
        order = sorted(range(len(seqs)), key=seqs.__getitem__)  # no tuple per row: fewer objects for the GC
        found = [[seqs[i] for i in order], [entries[i] for i in order], now, snap]
        with self.lock:
            if generation != self._generation:
                return None
            kept = self._selections
            old = kept.get(name)
            if old is not None and old[3] >= snap:  # another first page built it as late meanwhile
                found = old
            else:
                if old is not None:
                    self._selected -= len(old[0])
                found[2] = time.monotonic()
                kept[name] = found
                kept.move_to_end(name)
                self._selected += len(order)
                while self._selected > self.max_selected and len(kept) > 1:
                    self._selected -= len(kept.popitem(last=False)[1][0])
        return found[0], found[1], found[3]

    def subscription_page(self, filters, snap, after, limit, view=EVERYTHING):
        """One page of a subscription's rows: (``{table: {key: record}}`` as UTF-8 JSON, last seq, more).

        ``filters`` is one subscription's ``{table: _Filter}``.  Like
        snapshot_page(): rows in seq order from ``after`` up to ``snap``, a row
        changed since ``snap`` left to the changes after it.  An equality
        filter is served from its index: O(rows selected), whatever the table's
        size, and a selection of several pages from its rows kept in seq
        order (_selection), O(rows on the page) each.  Otherwise a page walks at
        most ``page_scan`` log slots, and may then hold few rows, or none, and
        say ``more``.
        """
        filters = {t: f for t, f in filters.items() if view.may_see_table(t)}
        selection = self._selection(filters, snap, after, limit)
        with self.lock:
            filters = {t: f for t, f in filters.items() if t in self._data}
            records = {t: [] for t in filters}
            rules = view.rules
            n = size = 0
            if selection is None:
                found, searched = self._candidates(filters, after, snap)
            else:
                seqs, entries, built = selection
                lo, hi = bisect.bisect_right(seqs, after), bisect.bisect_right(seqs, snap)
                stop = min(hi, lo + self.page_scan)
                found = (e for s, e in zip(seqs[lo:stop], entries[lo:stop])
                         if e.seq == s and e.data is not None and e.table in filters)
                if stop < hi:
                    searched = seqs[stop - 1]
                elif snap > built:  # the rows that joined since the list was built, from the log
                    joined, searched = self._walk(filters, max(after, built), snap)
                    found = list(found) + joined
                else:
                    searched = snap
            last, more = searched, searched < snap
            for entry in found:
                if not filters[entry.table].matches(self, entry) or (rules and not view.row_visible(entry)):
                    continue
                if n >= limit or size >= self.page_bytes:
                    more = True  # one more row exists: the last page is rarely empty
                    break
                records[entry.table].append(b"".join((_key_json(entry.key), b":", entry.data)))
                last = entry.seq
                n += 1
                size += len(entry.data)
            else:
                last = searched
        blob = b"{" + b",".join(b"".join((_key_json(t), b":{", b",".join(rows), b"}")) for t, rows in records.items()) + b"}"
        return blob, (last if more else snap), more

    def _may_concern(self, entry, since, fields, routes):
        """False if neither ``entry``'s state now nor its state at cursor ``since`` is on one of ``routes``
        through its key or the value keys of ``fields``: then no equality filter there selects it, or did."""
        table = entry.table
        if (table, "#", entry.key) in routes:
            return True
        if entry.data is not None:
            vals = self._vals_of(entry)
            if any(f not in vals or (table, f, vals[f]) in routes for f in fields):
                return True
        state = _state_at(entry, since)
        if state is None:
            return True  # its state at the cursor is unknown: the filters decide
        _, data, vals = state
        return data is not None and (vals is None or any(f not in vals or (table, f, vals[f]) in routes
                                                         for f in fields))

    def _held_before(self, entry, held, since, view):
        """Might a client at cursor ``since`` hold ``entry`` through ``held`` ([(id, _Filter)]) under ``view``?"""
        state = _state_at(entry, since)
        if state is None:
            return True  # its state at that cursor is unknown: tell it the row left, to be safe
        _, data, vals = state
        if data is None:
            return False
        if data is _UNSEEN:
            return True  # unknown at that cursor: tell it the row left, to be safe
        if data is _DROPPED:  # only value keys are left of that state
            return any(f.kind != "eq" or any(field not in (vals or {}) for field in f.fields)
                       or f.matches(self, entry, b"{}", vals) for _, f in held)
        if not any(f.matches(self, entry, data, vals or {}) for _, f in held):
            return False
        rule = view.rules.get(entry.table) if view.rules else None
        if rule is None:
            return True
        try:  # that state passed the filter: did the row rule show it to this client?
            return bool(rule(_loads(data), ReadContext(entry.table, entry.key, view)))
        except Exception:
            log.exception("the @can_read('%s') rule raised for key %r; the row stays hidden", entry.table, entry.key)
            return False

    def _changes_for(self, seq, limit, view, subs):
        """changes_since() in subscription mode: ``[table, key, record, [ids]]`` or a departure ``[table, key, null, []]``.

        A change to a row that none of ``subs`` selected before or after it
        is not carried.  Such an answer is never cut: a departure is judged by
        the row's state before its latest change, which is what the client
        holds only if it has every change up to its cursor.  So when more than
        ``limit`` changes (or ``page_bytes``, or a walk of ``max_walk`` log
        slots) would be due, the changes are None: the client is too far
        behind, and the engine answers with a reset of its subscriptions
        (their rows only, from the indexes).
        """
        seqs, entries = self._log_seq, self._log_entry
        out = []
        size = walked = 0
        cursor = self.seq
        by_table, rules, routes = subs.by_table, view.rules, subs.routes
        screens = {}  # table -> the fields whose value keys route its filters, or None: no screen
        for i in range(bisect.bisect_right(seqs, seq), len(seqs)):
            entry = entries[i]
            if entry.seq != seqs[i]:
                continue
            walked += 1
            held = by_table.get(entry.table)
            if walked >= self.max_walk:
                return None, seq
            if held is None:
                continue
            table = entry.table
            if table not in screens:
                screens[table] = _route_fields(held, table, routes)
            fields = screens[table]
            if fields is not None and not self._may_concern(entry, seq, fields, routes):
                continue  # neither its state now nor at the cursor is on a route of these filters
            # Each filter costs a test, twice for a row that may have left: the walk's budget counts
            # them, so many subscriptions make a shorter walk, not a longer hold of the lock.
            walked += len(held)
            data = entry.data
            ids = ()
            if data is not None and (not rules or view.row_visible(entry)):
                ids = [sid for sid, f in held if f.matches(self, entry)]
            if not ids:
                walked += len(held)
                if not self._held_before(entry, held, seq, view):
                    continue
            if len(out) >= limit or size >= self.page_bytes:
                return None, seq
            if ids:
                out.append(b"".join((b"[", _key_json(entry.table), b",", _key_json(entry.key), b",", data,
                                     b',["', '","'.join(ids).encode("ascii"), b'"]]')))
                size += len(data)
            else:
                out.append(b"".join((b"[", _key_json(entry.table), b",", _key_json(entry.key), b",null,[]]")))
        return out, cursor

    # -- mutation-id ledger ---------------------------------------------------
    def recall(self, jti, mid, view=EVERYTHING):
        """The answer first given to token ``jti``'s write ``mid`` (a fresh dict), or None if unknown.

        An ok answer keeps its first ``seq`` and ``epoch``, but its ``record``
        is the key's *current* state as ``view`` may read it (None if deleted
        since or hidden): the ledger does not keep records, so a write of a
        large record costs its size once, not once per write.  That state is
        never older than the first answer's, and a client ignores states older
        than what it has anyway.  An error answer comes back as it was.
        """
        with self.lock:
            found = self._mids.get((jti, mid))
            if found is None:
                return None
            if isinstance(found, dict):
                return dict(found)
            table, key, seq, epoch = found
            return {"ok": True, "seq": seq, "epoch": epoch, "record": self.read_visible(table, key, view)}

    def remember(self, jti, mid, answer, user=None):
        """Remember ``answer`` (a JSON-able dict with no record: an error) for token ``jti``'s write ``mid``.

        An ok answer is remembered by apply() itself, in the same step as its
        change; this is for writes refused before any change.  ``user``: the
        token's user, whose tokens share a bounded ledger's room (_remember_mid).
        """
        with self.lock:
            self._persist_answer(jti, mid, answer, user)

    def hold(self, name):
        """One writer at a time for ``name`` (a tuple whose first item is its kind): an in-process lock of that name.

        One process is the whole server here, so a lock of this process is
        enough.  Each name has a lock of its own while anyone holds or waits
        for it, so a handler that blocks holding its mid and key makes only
        writes of that mid or key wait, never a write of another that happens
        to hash alike (64 shared stripes did that: one write in 64 stalled
        behind any slow handler).  Mid holds are taken before key holds, so
        the two never deadlock.
        """
        held = self.__dict__.get("_held_names")
        if held is None:
            with self.lock:
                held = self.__dict__.setdefault("_held_names", {})
        return _NameLock(held, name)

    # -- revocation -----------------------------------------------------------
    def revoked(self):
        """Token ids revoked and remembered by the store (a set; always empty in memory)."""
        return set()

    def revoke(self, jti, exp):
        """Remember that token ``jti`` (expiring at ``exp``, or None) is revoked; a no-op in memory."""

    # -- invariants -----------------------------------------------------------
    def check(self):
        """Assert the store's invariants (used by the stress tests); returns True."""
        with self.lock:
            seqs, entries = self._log_seq, self._log_entry
            assert all(a < b for a, b in zip(seqs, seqs[1:])), "log seqs not increasing"
            assert not seqs or seqs[-1] <= self.seq, "log ahead of seq"
            stale = sum(1 for s, e in zip(seqs, entries) if e.seq != s)
            assert stale == self._stale, "stale count %d != %d" % (stale, self._stale)
            tomb = 0
            for table, rows in self._data.items():
                assert table in self.tables, "rows for undefined table %r" % table
                for key, e in rows.items():
                    assert e.table == table and e.key == key, "entry filed under the wrong key"
                    assert 0 < e.seq <= self.seq, "entry seq out of range"
                    assert e.data is not None or e.seq > self.floor, "tombstone below the floor"
                    i = bisect.bisect_left(seqs, e.seq)
                    assert i < len(seqs) and seqs[i] == e.seq and entries[i] is e, "entry missing from the log"
                    assert e.data is None or isinstance(e.record, dict), "record is not a JSON object"
                    assert e.data is None or e.shape is None or e.shape == tuple(e.record), "shape differs from the record"
                    tomb += e.data is None
            assert tomb == self._tombstones, "tombstone count %d != %d" % (tomb, self._tombstones)
            for (table, field), index in self._indexes.items():
                rows = [(k, e.data) for k, e in self._data.get(table, {}).items() if e.data is not None]
                assert index == _index_rows(rows, (field,))[field], "the index of %s.%s differs from its rows" % (
                    table, field)
            by_share, counts = {}, {}
            for key in self._mids:
                by_share.setdefault(self._share_of[key[0]][0], []).append(key)
                counts[key[0]] = counts.get(key[0], 0) + 1
            assert by_share == {s: list(q) for s, q in self._mids_of.items()}, "the ledger's per-user order differs"
            assert counts == {j: n for j, (_, n) in self._share_of.items()}, "the ledger's per-token counts differ"
            kept = sum(len(v[0]) for v in self._selections.values())
            assert kept == self._selected, "the kept selections hold %d rows, counted %d" % (kept, self._selected)
            assert kept <= self.max_selected or len(self._selections) == 1, "the kept selections pass max_selected"
            for seqs, _, _, built in self._selections.values():
                assert all(a < b for a, b in zip(seqs, seqs[1:])), "a kept selection is out of seq order"
                assert not seqs or seqs[-1] <= built, "a kept selection holds a seq past the one it was built at"
            return True


class StoreError(DSNError):
    """A store that cannot be opened or used: a bad path, a foreign, newer or damaged file, a failed write.

    Its message may name the file and quote SQLite: it is for the operator's
    log, and the engine never sends it to a client (a client sees a 503).
    """

    code = "store"


def _unlock(fd):
    if fd is not None:
        try:
            os.close(fd)  # closing the descriptor releases its flock
        except OSError:
            pass


_EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_COUNTER_RE = re.compile(r"0|[1-9][0-9]{0,18}")  # seq, sv, floor: what an int64 column holds
_SECRET_RE = re.compile(r"[0-9a-f]{64}")


def _valid_spec(spec):
    """Is ``spec`` a table spec as set_table() stores it: {"key": name, "fields": None or [names]}?"""
    if not isinstance(spec, dict) or not isinstance(spec.get("key"), str) or not spec["key"]:
        return False
    fields = spec.get("fields")
    return fields is None or (isinstance(fields, list) and all(isinstance(f, str) for f in fields))


class _SQLiteFailure:
    """``with store._failing("writing to"):`` turns a sqlite3 error into StoreError naming the file.

    Inside a batch it also marks the batch failed: SQLite may have rolled the
    whole transaction back (SQLITE_FULL does), so end_batch() must undo it.
    """

    __slots__ = ("store", "doing")

    def __init__(self, store, doing):
        self.store, self.doing = store, doing

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is None:
            return False
        import sqlite3
        if issubclass(kind, (sqlite3.Error, UnicodeError, StoreError)):
            store = self.store
            if store._batch_depth:
                store._batch_failed = True
            if not issubclass(kind, StoreError):
                raise StoreError("%s %s failed: %s" % (self.doing, store.path, error)) from error
        return False


def _may_be_sqlite(path):
    """False for a file that cannot be an SQLite database (neither empty nor starting with its header)."""
    try:
        with io.open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return True  # unreadable here: let SQLite say what is wrong
    return not head or head == b"SQLite format 3\0"


class SQLiteStore(MemoryStore):
    """A durable store on the standard library's sqlite3, in WAL mode.

    It keeps what a restart must not lose: records with their change index
    and tombstones, the schema, the epoch and sequence, the server secret (so
    the URL and every token stay valid), the mutation-id ledger (24 hours)
    and revoked token ids.  The live state is also held in memory exactly as
    MemoryStore holds it (same change index, same pulls); SQLite is written
    through before memory changes, under the store lock, so nothing a client
    can see is missing from disk.

    Durability: every sync(), remove() and acknowledged client write is
    committed before it becomes visible, with ``PRAGMA synchronous=FULL`` by
    default (the WAL is fsynced at each commit: a power cut loses nothing
    acknowledged).  ``synchronous='NORMAL'`` skips that fsync: a crashed
    process still loses nothing, a crashed machine may lose the last commits.
    ``with sync.batch()`` makes many changes one commit.

    Failures: every method raises StoreError, never a sqlite3 exception; a
    failed write (disk full, I/O error, a locked file) changes nothing, in
    memory or on disk, and a batch with a failed write is undone whole.
    open() reads and checks every row before it writes a byte: a damaged file
    raises StoreError and is left as it was.

    The file holds the server secret: it and its ``-wal`` and ``-shm`` are
    created 0600 whatever the umask, and open() warns (logger ``dsn_sync``)
    when an existing one is readable by group or others.

    Tables (all prefixed ``dsn_``)::

        dsn_meta(k, v)                      format, epoch, seq, sv, floor, secret
        dsn_tables(name, spec)              the schema
        dsn_records(tbl, key, seq UNIQUE, data)   data NULL = tombstone
        dsn_mids(jti, mid, at, answer)      answers of client writes; an ok one
                                            holds "of": [table, key], not the record
        dsn_revoked(jti, exp)
    """

    durable = True
    format_version = 1
    mid_ttl = 86400  # seconds a mutation id's answer is kept (PROTOCOL.md: at least 24 h)
    file_mode = 0o600  # the file holds the server secret: owner only

    def __init__(self, path, synchronous="FULL"):
        super().__init__()
        if not isinstance(path, str) or not path:
            raise ValueError("the SQLite store needs a file path, got %r" % (path,))
        synchronous = str(synchronous).upper()
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA, got %r" % (synchronous,))
        self.path = path
        self.synchronous = synchronous
        self._db = None
        self._lock = None
        self._pending_rows = []
        self._pending_mids = []
        self._writes = 0
        self._batch_failed = False

    # -- lifecycle ------------------------------------------------------------
    def open(self):
        """Open (or create) the file and load it into memory; returns self.

        StoreError if the folder is missing, the file is another program's,
        a newer format's, damaged, or in use by another server.  A file that
        is refused is not written to.  O(rows in the file).
        """
        import sqlite3  # deferred: only the durable store needs it
        with self.lock:
            if self._db is not None:
                return self
            self._prepare_file()
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except sqlite3.Error as e:
                raise StoreError("cannot open the store %s: %s" % (self.path, e))
            lock = None
            try:
                fresh = self._check_foreign(db)  # before changing anything in a file that may not be ours
                lock = self._lock_file()
                if not fresh:
                    self._load(db)  # every row checked before a byte is written
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal" and self.path != ":memory:":
                    raise StoreError("the store %s cannot use WAL mode (got %s)" % (self.path, mode))
                db.execute("PRAGMA synchronous=%s" % self.synchronous)
                if fresh:
                    self._create(db)
                    self._load(db)
            except BaseException as e:
                db.close()
                _unlock(lock)
                # sqlite3 raises UnicodeDecodeError for text (even its own error
                # messages) that is not UTF-8; the rest is a check this code missed.
                if isinstance(e, (sqlite3.Error, UnicodeError)):
                    raise StoreError("%s is not a dsn-sync database, or it is damaged: %s" % (self.path, e)) from e
                if isinstance(e, (ValueError, TypeError, LookupError, AttributeError, RecursionError)):
                    raise StoreError("%s is damaged (%s: %s)" % (self.path, type(e).__name__, e)) from e
                raise
            self._db = db
            self._lock = lock
            self._expire_mids()
            return self

    def close(self):
        """Write what is buffered, checkpoint the WAL and close the file; StoreError if the last write fails."""
        with self.lock:
            if self._db is None:
                return
            try:
                with self._failing("writing to"):
                    self._flush()
            finally:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except Exception:
                    pass  # the WAL is replayed at the next open
                self._db.close()
                self._db = None
                _unlock(self._lock)
                self._lock = None

    def _failing(self, doing):
        return _SQLiteFailure(self, doing)

    def _prepare_file(self):
        """Create the file owner-only, or warn if an existing one (or its -wal, -shm) is readable by others.

        SQLite gives the -wal and -shm it creates the database file's own
        mode, so 0600 here makes all three 0600 whatever the umask.
        """
        if self.path == ":memory:":
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise StoreError("cannot open the store %s: folder %s does not exist" % (self.path, folder))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, self.file_mode)
        except FileExistsError:
            if not _may_be_sqlite(self.path):
                return  # not a database at all: open() refuses it, with no advice to chmod someone's file
            for path in (self.path, self.path + "-wal", self.path + "-shm"):
                try:
                    mode = os.stat(path).st_mode
                except OSError:
                    continue
                if mode & 0o077 and not os.path.isdir(path):
                    log.warning("%s is readable or writable by other users (mode %o) and it holds the server secret: "
                                "run chmod 600 %s", path, mode & 0o777, path)
            return
        except OSError as e:
            raise StoreError("cannot create the store %s: %s" % (self.path, e))
        try:
            os.fchmod(fd, self.file_mode)  # os.open's mode is masked by the umask; this is not
        finally:
            os.close(fd)

    def _lock_file(self):
        """Hold an exclusive flock on the database file while open: one server per file.

        Two servers on one file would hand out the same seqs and overwrite each
        other's records.  flock() does not interfere with SQLite's own fcntl()
        locks on Linux and the BSDs; where fcntl is missing (Windows) there is
        no such guard.  The descriptor stays open until close(): closing any
        descriptor of the file would drop SQLite's POSIX locks in this process.
        """
        if self.path == ":memory:":
            return None
        try:
            import fcntl  # deferred, and absent on Windows
        except ImportError:
            return None
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise StoreError("cannot open the store %s: %s" % (self.path, e))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            refusal = StoreError("the store %s is in use by another dsn-sync server (it holds the file's lock): "
                                 "stop that one, or give this one its own file.  Several worker processes of one "
                                 "app (uvicorn --workers, gunicorn -w) need a store they share: "
                                 "DSNSync(db_connection_string='postgresql://...')" % self.path)
            if _in_uvicorn_worker():
                # uvicorn starts a worker that fails as it loads the app again, for ever (gunicorn
                # stops); its startup-failure status makes it stop, as on the in-memory store.
                log.error("%s", refusal)
                raise SystemExit(3) from refusal
            raise refusal
        return fd

    def _damaged(self, what):
        return StoreError("%s is damaged: %s; restore it from a backup, or point --db at a new file" % (self.path, what))

    def _read_meta(self, db):
        meta = {}
        for k, v in db.execute("SELECT k, v FROM dsn_meta"):
            if not isinstance(k, str) or not isinstance(v, str):
                raise self._damaged("dsn_meta holds a %s key with a %s value" % (type(k).__name__, type(v).__name__))
            meta[k] = v
        return meta

    def _check_foreign(self, db):
        """True for an empty file (to be created); StoreError for anything that is not our format."""
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not names:
            return True
        if "dsn_meta" not in names:
            raise StoreError("%s is not a dsn-sync database (its tables: %s); point --db at a new file"
                             % (self.path, ", ".join(sorted(map(str, names)))))
        meta = self._read_meta(db)
        format_text = meta.get("format", "0")
        version = int(format_text) if _COUNTER_RE.fullmatch(format_text) else 0
        if version > self.format_version:
            raise StoreError("%s was written by a newer dsn-sync (store format %d; this version %s reads format %d): "
                             "upgrade dsn-sync" % (self.path, version, __version__, self.format_version))
        if version < 1 or meta.get("app") != "dsn-sync":
            raise StoreError("%s is not a dsn-sync database (bad dsn_meta)" % self.path)
        return False

    def _create(self, db):
        db.executescript("""
                BEGIN;
                CREATE TABLE dsn_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
                CREATE TABLE dsn_tables (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
                CREATE TABLE dsn_records (tbl TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL UNIQUE,
                                          data TEXT, PRIMARY KEY (tbl, key));
                CREATE TABLE dsn_mids (jti TEXT NOT NULL, mid TEXT NOT NULL, at INTEGER NOT NULL,
                                       answer TEXT NOT NULL, PRIMARY KEY (jti, mid));
                CREATE INDEX dsn_mids_at ON dsn_mids (at);
                CREATE TABLE dsn_revoked (jti TEXT PRIMARY KEY, exp REAL);
                COMMIT;""")
        db.executemany("INSERT INTO dsn_meta VALUES (?, ?)", [
            ("format", str(self.format_version)), ("epoch", self.epoch), ("seq", "0"), ("sv", "0"),
            ("floor", "0"), ("app", "dsn-sync")])

    def _load(self, db):
        """Read the file into memory, checking every row; StoreError names the first bad one.

        Memory is replaced only once the whole file has passed, so a refused
        file leaves the store as it was.  The ledger and revocations stay on
        disk (recall() and revoked() read them); their rows are checked here
        by one query each.
        """
        counters, epoch, secret, tables = self._read_header(db)
        floor = counters["floor"]
        data_by_table, seqs, entries, tombstones = self._read_records(db, tables, floor)
        self._check_rows(db)
        self._reset_memory()
        self.epoch = epoch
        self.sv = counters["sv"]
        self.floor = floor
        self.secret = bytes.fromhex(secret) if secret is not None else None
        self.tables = tables
        self._data = data_by_table
        self._log_seq, self._log_entry = seqs, entries
        self._tombstones = tombstones
        self.seq = max(counters["seq"], seqs[-1] if seqs else 0)

    def _read_header(self, db):
        """The file's integrity, counters, epoch, secret and table specs, checked: (counters, epoch, secret, tables)."""
        damaged = self._damaged
        # Pages and indexes first: a corrupt index would feed the ORDER BY of the records
        # seqs the table does not hold.  About 1 s per million records here.
        problems = db.execute("PRAGMA integrity_check(3)").fetchall()
        if problems != [("ok",)]:
            raise damaged("SQLite's integrity check says %s" % "; ".join(str(p[0]) for p in problems))
        meta = self._read_meta(db)
        counters = {}
        for name in ("seq", "sv", "floor"):
            text = meta.get(name)
            if text is None or not _COUNTER_RE.fullmatch(text):
                raise damaged("dsn_meta %s is %r, not a counter" % (name, text))
            counters[name] = int(text)
        epoch = meta.get("epoch")
        if epoch is None or not _EPOCH_RE.fullmatch(epoch):
            raise damaged("dsn_meta epoch is %r" % (epoch,))
        secret = meta.get("secret")
        if secret is not None and not _SECRET_RE.fullmatch(secret):
            raise damaged("dsn_meta secret is not 64 hex digits")
        tables = {}
        for name, spec in db.execute("SELECT name, spec FROM dsn_tables"):
            if not isinstance(name, str) or not _TABLE_RE.fullmatch(name):
                raise damaged("dsn_tables holds a bad table name %r" % (name,))
            tables[name] = spec = self._json(spec, "the spec of table %r" % name)
            if not _valid_spec(spec):
                raise damaged("the spec of table %r is %r" % (name, spec))
        return counters, epoch, secret, tables

    def _read_records(self, db, tables, floor):
        """Every record row in seq order, checked: ({table: {key: _Entry}}, seqs, entries, tombstones)."""
        damaged = self._damaged
        data_by_table = {name: {} for name in tables}
        seqs, entries = [], []
        tombstones = last = 0
        decode = _DECODER.decode
        # One pass, checks inlined: this loop is most of an open's time (about
        # 1.3 us per record here; check_key() and _json() per row cost 30 % more).
        for table, key, s, data in db.execute("SELECT tbl, key, seq, data FROM dsn_records ORDER BY seq"):
            if type(s) is not int or s <= last:
                raise damaged("dsn_records holds seq %r after %r (seqs are distinct positive integers)" % (s, last))
            last = s
            rows = data_by_table.get(table) if type(table) is str else None
            if rows is None:
                raise damaged("it holds records for table %r but not its schema" % (table,))
            if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH:  # a str from SQLite is valid UTF-8
                raise damaged("record %s of table %r has the key %r" % (s, table, key))
            if key in rows:
                raise damaged("key %r of table %r is there twice" % (key, table))
            entry = rows[key] = _Entry(table, key)
            entry.seq = s
            if data is None:
                if s <= floor:
                    raise damaged("a tombstone (seq %d) at or below the floor (%d)" % (s, floor))
                tombstones += 1
            else:
                try:
                    record = decode(data)
                except (ValueError, RecursionError, TypeError):
                    record = None  # TypeError: data is not text
                if type(record) is not dict:
                    raise damaged("record %s/%s is not a JSON object: %.60r" % (table, key, data))
                entry.data = data.encode("utf-8")
                entry.shape = _shape(record)
            seqs.append(s)
            entries.append(entry)
        return data_by_table, seqs, entries, tombstones

    def _check_rows(self, db):
        """Check the ledger's and the revocations' rows by type, one query each (they stay on disk)."""
        import sqlite3
        mids = ("SELECT count(*) FROM dsn_mids WHERE typeof(jti) != 'text' OR typeof(mid) != 'text' "
                "OR typeof(at) != 'integer' OR typeof(answer) != 'text'")
        try:
            bad = db.execute(mids + " OR NOT json_valid(answer) OR json_type(answer) != 'object'").fetchone()[0]
        except sqlite3.OperationalError as e:  # an SQLite built without JSON1: recall() checks each answer it reads
            if "no such function" not in str(e):
                raise
            bad = db.execute(mids).fetchone()[0]
        if bad:
            raise self._damaged("%d row(s) of dsn_mids are malformed" % bad)
        bad = db.execute("SELECT count(*) FROM dsn_revoked WHERE typeof(jti) != 'text' "
                         "OR typeof(exp) NOT IN ('null', 'real', 'integer')").fetchone()[0]
        if bad:
            raise self._damaged("%d row(s) of dsn_revoked are malformed" % bad)

    def _json(self, text, what):
        """A JSON value read from the file; StoreError if it is not JSON text."""
        if not isinstance(text, str):
            raise self._damaged("%s is a %s, not JSON text" % (what, type(text).__name__))
        try:
            return _loads(text)
        except (ValueError, RecursionError) as e:
            raise self._damaged("%s is not JSON (%s)" % (what, e.__class__.__name__))

    # -- persistence hooks ----------------------------------------------------
    def _persist_change(self, table, key, seq, record, ledger):
        self._require_open()  # before queueing: a refused change must never reach the file later
        if table is not None:
            self._pending_rows.append((table, key, seq, record.decode("utf-8") if record is not None else None))
        if ledger is not None:
            answer = ledger[2]
            if table is not None:  # an ok answer: its record is re-read from here by recall()
                answer = dict(answer, of=[table, key])
            self._pending_mids.append((ledger[0], ledger[1], int(time.time()), _json_dumps(answer)))
        if not self._batch_depth:
            self._commit()

    def _persist_table(self, name, spec, sv):
        self._require_open()
        with self._failing("writing the schema to"):
            self._flush()
            self._execute_in_tx([("INSERT OR REPLACE INTO dsn_tables VALUES (?, ?)", (name, _json_dumps(spec))),
                                 ("UPDATE dsn_meta SET v = ? WHERE k = 'sv'", (str(sv),))])

    def _persist_floor(self):
        try:
            with self._failing("compacting tombstones in"):
                self._flush()
                self._execute_in_tx([("DELETE FROM dsn_records WHERE data IS NULL AND seq <= ?", (self.floor,)),
                                     ("UPDATE dsn_meta SET v = ? WHERE k = 'floor'", (str(self.floor),)),
                                     ("UPDATE dsn_meta SET v = ? WHERE k = 'seq'", (str(self.seq),))])
        except StoreError:
            if self._batch_depth:
                raise  # the batch is undone at its end
            # The change that led here is committed; the file keeps its older
            # floor and tombstones (consistent), and the next compaction retries.
            log.warning("compacting tombstones failed; the file keeps them until the next compaction", exc_info=True)

    def save_secret(self, secret):
        """Keep the server secret (32 bytes) in the file, so tokens survive a restart; None removes it."""
        with self.lock:
            self._require_open()
            with self._failing("saving the secret to"):
                if secret is None:
                    self._execute_in_tx([("DELETE FROM dsn_meta WHERE k = 'secret'", ())])
                else:
                    self._execute_in_tx([("INSERT OR REPLACE INTO dsn_meta VALUES ('secret', ?)", (secret.hex(),))])
            self.secret = secret

    def _require_open(self):
        if self._db is None:
            raise StoreError("the store %s is closed" % self.path)

    def _execute_in_tx(self, statements):
        db = self._db
        own = not self._batch_depth
        if own:
            db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                db.execute(sql, args)
            if own:
                db.execute("COMMIT")
        except Exception:
            if own:
                self._rollback()
            raise

    def _rollback(self):
        """Roll back if a transaction is open (SQLite may have ended it already: SQLITE_FULL does)."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except Exception:
            log.warning("rolling back %s failed", self.path, exc_info=True)

    def _flush(self):
        """Write buffered rows inside the current transaction (or on their own)."""
        if self._pending_rows or self._pending_mids:
            rows, mids = self._pending_rows, self._pending_mids
            self._pending_rows, self._pending_mids = [], []
            self._execute_many(rows, mids)

    def _execute_many(self, rows, mids):
        db = self._db
        if rows:
            db.executemany("INSERT OR REPLACE INTO dsn_records VALUES (?, ?, ?, ?)", rows)
        if mids:
            db.executemany("INSERT OR REPLACE INTO dsn_mids VALUES (?, ?, ?, ?)", mids)

    def _commit(self):
        """Commit buffered changes as one transaction; on failure nothing is kept and it raises StoreError."""
        import sqlite3
        self._require_open()
        rows, mids = self._pending_rows, self._pending_mids
        self._pending_rows, self._pending_mids = [], []
        db = self._db
        try:
            if not db.in_transaction:
                db.execute("BEGIN IMMEDIATE")
            self._execute_many(rows, mids)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            raise StoreError("writing to %s failed, nothing was applied: %s" % (self.path, e)) from e
        self._writes += len(rows)
        if self._writes > 10000:
            self._writes = 0
            self._expire_mids()

    def begin_batch(self):
        import sqlite3
        super().begin_batch()
        if self._batch_depth == 1:
            self._batch_failed = False
            try:
                self._require_open()
                self._db.execute("BEGIN IMMEDIATE")
            except BaseException as e:
                super().end_batch(False)  # give the lock back: the batch never started
                if isinstance(e, sqlite3.Error):
                    raise StoreError("cannot start a batch on %s: %s" % (self.path, e)) from e
                raise

    def end_batch(self, ok=True):
        """Commit the batch's changes as one transaction (whatever ``ok`` says: memory has them already).

        If the commit, or any write of the batch, failed, the transaction is
        rolled back, memory is reloaded from the file, and StoreError is raised.
        """
        try:
            if self._batch_depth == 1:
                if self._batch_failed:
                    self._pending_rows, self._pending_mids = [], []
                    self._rollback()
                    self._reload()
                    raise StoreError("a write of this batch to %s failed: the whole batch was undone" % self.path)
                try:
                    self._commit()
                except StoreError:
                    self._reload()
                    raise
        finally:
            self._batch_failed = False
            super().end_batch(ok)

    def _reload(self):
        """Memory back to what is on disk (after a failed commit)."""
        try:
            with self._failing("reading back"):
                self._load(self._db)
        except StoreError:
            log.error("reading %s back after a failed write failed too; memory may be ahead of the file",
                      self.path, exc_info=True)

    def _expire_mids(self):
        """Drop ledger answers older than ``mid_ttl``; a failure only delays it (it is logged)."""
        try:
            self._db.execute("DELETE FROM dsn_mids WHERE at < ?", (int(time.time()) - self.mid_ttl,))
        except Exception:
            log.warning("expiring old mids in %s failed; retried later", self.path, exc_info=True)

    # -- ledger and revocation ------------------------------------------------
    def recall(self, jti, mid, view=EVERYTHING):
        """As MemoryStore.recall, from the file: an ok answer's record is re-read from its [table, key].

        StoreError if the file fails or the row is malformed.  One indexed lookup.
        """
        with self.lock:
            self._require_open()
            with self._failing("reading the mid ledger of"):
                row = self._db.execute("SELECT answer FROM dsn_mids WHERE jti = ? AND mid = ?", (jti, mid)).fetchone()
            if row is None:
                return None
            answer = self._json(row[0], "the answer of mid %r" % (mid,))
            if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
                raise self._damaged("the answer of mid %r is %r" % (mid, answer))
            of = answer.pop("of", None)
            if of is not None:  # an answer from before "of" keeps the record it was given
                if not (isinstance(of, list) and len(of) == 2 and all(isinstance(x, str) for x in of)):
                    raise self._damaged("the answer of mid %r names %r" % (mid, of))
                answer["record"] = self.read_visible(of[0], of[1], view)
            return answer

    def revoked(self):
        """Token ids revoked in the file and not yet expired (a set).  O(revocations)."""
        with self.lock:
            self._require_open()
            now = time.time()
            with self._failing("reading revocations from"):
                rows = self._db.execute("SELECT jti, exp FROM dsn_revoked").fetchall()
            return {jti for jti, exp in rows if exp is None or exp > now}

    def revoke(self, jti, exp):
        """Remember in the file that token ``jti`` (expiring at ``exp``, or None) is revoked."""
        with self.lock:
            self._require_open()
            with self._failing("writing a revocation to"):
                self._execute_in_tx([("INSERT OR REPLACE INTO dsn_revoked VALUES (?, ?)", (jti, exp))])

    def check(self):
        """MemoryStore's invariants, plus: the file holds exactly what memory holds."""
        with self.lock:
            super().check()
            with self._failing("reading"):
                self._flush()
                on_disk = {(t, k): (s, d) for t, k, s, d in self._db.execute("SELECT tbl, key, seq, data FROM dsn_records")}
            in_memory = {(t, k): (e.seq, e.data.decode("utf-8") if e.data is not None else None)
                         for t, rows in self._data.items() for k, e in rows.items()}
            assert set(on_disk) == set(in_memory), "keys on disk differ from memory"
            for k, (s, d) in on_disk.items():
                assert s == in_memory[k][0], "seq of %r differs on disk" % (k,)
                assert (d is None) == (in_memory[k][1] is None) and (d is None or json.loads(d) == json.loads(in_memory[k][1])), \
                    "record %r differs on disk" % (k,)
            return True


_psycopg_module = None


def _psycopg():
    """psycopg 3, imported only when a PostgreSQL store is opened; StoreError naming the extra if absent."""
    global _psycopg_module
    if _psycopg_module is not None:
        return _psycopg_module
    try:
        import psycopg
    except ImportError:
        # (The name dsn-sync on PyPI is another project's: the extra installs from a clone.)
        raise StoreError('the PostgreSQL store needs psycopg 3.2 or later: python3 -m pip install "psycopg[binary]>=3.2" '
                         '(or, in a clone of dsn-sync, python3 -m pip install ".[postgres]")')
    if tuple(int(p) for p in re.findall(r"\d+", psycopg.__version__)[:2]) < (3, 2):
        # notifies(timeout=, stop_after=), which the listener needs, came in 3.2.
        raise StoreError('the PostgreSQL store needs psycopg 3.2 or later, this is %s: python3 -m pip install -U '
                         '"psycopg[binary]>=3.2"' % psycopg.__version__)
    _psycopg_module = psycopg
    return psycopg


def _pg_lock_key(name):
    """A stable signed 32-bit key for an advisory lock named ``name`` (under dsn-sync's own class id)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big", signed=True)


_PG_LOCK_CLASS = 0x64736E  # 'dsn': the first key of every advisory lock this store takes
_PG_CHANNEL = "dsn_changes"
_AUTO = object()  # compact(): as many as MemoryStore would drop past max_tombstones


class _PgPool:
    """A few autocommit connections shared by threads: take() one, give() it back.

    A connection that broke, or that is left inside a transaction, is closed
    instead of being kept.  After a failed connect, take() refuses at once
    (StoreError) until a backoff has passed (0.1 s doubling to 1 s), so a
    PostgreSQL outage costs each request a refusal, not a connect timeout.
    """

    wait = 10.0  # seconds take() waits for a free connection before StoreError

    def __init__(self, connect, size, where):
        self._connect = connect
        self._where = where
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle = []
        self._down_until = 0.0
        self._backoff = 0.0
        self._closed = False

    def take(self):
        if not self._free.acquire(timeout=self.wait):
            raise StoreError("no free connection to %s for %.0f s" % (self._where, self.wait))
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
                down = self._down_until - time.monotonic()
            if conn is None:
                break
            if not _pg_stale(conn):
                return conn
            _pg_close(conn)
        if down > 0:
            self._free.release()
            raise StoreError("PostgreSQL at %s is unreachable; retrying in %.1f s" % (self._where, down))
        try:
            conn = self._connect()
        except BaseException as e:
            with self._lock:
                self._backoff = min(max(self._backoff * 2, 0.1), 1.0)
                self._down_until = time.monotonic() + self._backoff
            self._free.release()
            if isinstance(e, StoreError):
                raise
            raise StoreError("cannot connect to PostgreSQL at %s: %s" % (self._where, e))
        with self._lock:
            self._backoff = 0.0
        return conn

    def give(self, conn):
        psycopg = _psycopg()
        if (self._closed or conn.closed or conn.broken
                or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE):
            _pg_close(conn)
        else:
            with self._lock:
                self._idle.append(conn)
        self._free.release()

    def lease(self):
        return _PgLease(self)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            _pg_close(conn)


class _PgLease:
    """``with pool.lease() as conn:``; psycopg errors inside become StoreError (the connection is checked on return).

    Lock order: the store lock, then a connection.  Never wait for the store
    lock while holding a pooled connection (a writer holds the lock while it
    waits for one).
    """

    __slots__ = ("pool", "conn")

    def __init__(self, pool):
        self.pool = pool
        self.conn = None

    def __enter__(self):
        self.conn = self.pool.take()
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        conn, self.conn = self.conn, None
        self.pool.give(conn)
        if exc is not None and isinstance(exc, _psycopg().Error):
            raise StoreError("PostgreSQL at %s failed: %s" % (self.pool._where, str(exc).strip() or type(exc).__name__)) \
                from exc
        return False


class _PgHold:
    """PostgresStore.hold(name): ``with`` it, the name is held on this node and on PostgreSQL."""

    __slots__ = ("store", "name", "local", "conn", "outer", "args")

    def __init__(self, store, name, local):
        self.store = store
        self.name = name
        self.local = local
        self.conn = None
        self.outer = False
        self.args = (_pg_lock_key("dsn-sync hold " + name[0]), _pg_lock_key("\x00".join(map(str, name[1:]))))

    def _waited(self, where):
        return StoreError("waited over %d s for the %s hold of %s, held by another write of it (inside its handler) "
                          "on %s; answered 503, the client retries.  Look for a slow or stuck @on_ handler"
                          % (self.store.lock_timeout, self.name[0], "/".join(map(str, self.name[1:])), where))

    def __enter__(self):
        store = self.store
        if not self.local.acquire(timeout=store.lock_timeout):
            raise self._waited("this node")
        try:
            self.conn = getattr(store._held, "conn", None)
            if self.conn is None:
                self.conn = store._hold_pool.take()
                self.outer = True
                store._held.conn = self.conn
            try:
                self.conn.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", self.args)
            except _psycopg().errors.LockNotAvailable:
                raise self._waited("some node (a PostgreSQL advisory lock)")
            except _psycopg().Error as e:
                raise StoreError("PostgreSQL at %s failed to take the %s hold: %s"
                                 % (store._where, self.name[0], str(e).strip()))
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.outer:  # every lock this session took, the nested ones too: one round trip
            try:
                self.conn.execute("SELECT pg_advisory_unlock_all()")
            except Exception:
                _pg_close(self.conn)  # the session's locks end with it
        self._leave()
        return False

    def _leave(self):
        conn, self.conn = self.conn, None
        if self.outer and conn is not None:
            self.outer = False
            self.store._held.conn = None
            self.store._hold_pool.give(conn)
        self.local.release()


class _HeldHere:
    """The node-local part of a hold that the thread holds already (PostgresStore.hold_first)."""

    @staticmethod
    def acquire(blocking=True, timeout=-1):
        return True

    @staticmethod
    def release():
        pass


_HELD_HERE = _HeldHere()


class _HoldFirst:
    """PostgresStore.hold_first(name): ``with`` it, this node's lock for ``name``, marked on the thread."""

    __slots__ = ("store", "name", "local")

    def __init__(self, store, name):
        self.store, self.name = store, name
        self.local = MemoryStore.hold(store, name)

    def __enter__(self):
        store = self.store
        if not self.local.acquire(timeout=store.lock_timeout):
            raise StoreError("waited over %d s for the %s hold of %s on this node, held by another write of it "
                             "(inside its handler); answered 503, the client retries.  Look for a slow or stuck "
                             "@on_ handler" % (store.lock_timeout, self.name[0], "/".join(map(str, self.name[1:]))))
        store._held.first = self.name
        return self

    def __exit__(self, exc_type, exc, tb):
        self.store._held.first = None
        self.local.release()
        return False


def _pg_stale(conn):
    """True if an idle connection has something to read: the server's goodbye (it was terminated) or EOF.

    An idle connection receives nothing unasked, so this one select() (a
    microsecond) saves the request that would otherwise find it dead.
    """
    try:
        fd = conn.fileno()
        if hasattr(select, "poll"):  # select() refuses descriptors past 1023, common in a busy server
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except Exception:
        return True


def _pg_close(conn):
    try:
        conn.close()
    except Exception:
        pass


class PostgresStore(MemoryStore):
    """A store in a PostgreSQL database that any number of dsn-sync processes share as one server.

    ``PostgresStore('postgresql://user:pw@host:5432/app')``; needs psycopg 3
    (``python3 -m pip install "psycopg[binary]>=3.2"``), imported when the store opens.
    Every node (process, on any host) opened on the same database shares
    one epoch, one ``seq``, one schema version, the records, the mutation-id
    ledger, revocations, the tombstone horizon (``floor``), the server secret
    and a replay table of request nonces.

    Each node keeps the whole live state in memory exactly as MemoryStore
    does, so pulls, resets and the feed are the same code for every store.
    A write goes to PostgreSQL first and reaches this node's memory after its
    commit; other nodes learn of it from a NOTIFY on ``dsn_changes`` whose
    payload is only the new seq (never a record: payloads are capped at 8000
    bytes).  A listener thread per node LISTENs on its own connection; on a
    notification, after reconnecting, and every ``safety_interval`` seconds
    it reads ``dsn_records WHERE seq > <its seq>`` with the schema and the
    floor in one statement (one snapshot), applies them under the store lock
    and notifies ``changed``, so long-polls on this node wake.  A dropped
    listener reconnects with backoff and catches up from its position, so no
    change is missed; a node that fell below the floor (tombstones it never
    saw were compacted) reloads everything.

    Order is commit order.  Every write transaction first updates the one
    row of ``dsn_counter`` (``seq = seq + 1``): that row lock serialises the
    writers of every node, so seq N+1 is taken only after N's transaction
    committed, and a reader that has seen N+1 can never later meet a
    smaller seq.  A ``bigserial`` feed would not do: two transactions take
    5 and 6, 6 commits first, a reader moves its cursor to 6 and never sees
    5.  A single write is one statement (one round trip) that bumps the
    counter only if it still equals this node's seq, so its merge and its
    create/update checks were made on exact memory; when another node wrote
    meanwhile, the write takes the counter row lock in a transaction,
    catches up and decides again.  ``with sync.batch()`` holds the counter
    for the batch and commits every change at once.

    PostgreSQL down: writes, ``recall`` and ``remember_nonce`` raise
    StoreError (the engine answers 503, not remembered); reads of memory go
    on; connections come back with backoff.  A write is visible only after
    its commit, so nothing acknowledged is lost.  A node that stalls inside
    a batch would hold every node's writes: its transaction ends after
    ``tx_idle_timeout`` and a write waits at most ``lock_timeout``.

    Connect directly or through a pooler in session mode: LISTEN, writers' holds and the
    lead's advisory locks belong to a session.  The secret is stored in
    ``dsn_meta``: whoever can read the database can mint any token.

    Tables (all prefixed ``dsn_``)::

        dsn_meta(k, v)                       format, app, epoch, floor, secret
        dsn_counter(one, seq)                one row: the last seq handed out
        dsn_tables(name, spec, sv)           the schema; sv of the last change, so sv = max(sv)
        dsn_records(tbl, key, seq UNIQUE, data)   data (JSON text) NULL = tombstone
        dsn_mids(jti, mid, at, answer)       answers of client writes (24 h)
        dsn_revoked(jti, exp)
        dsn_nonces(nonce, expires_ms)        accepted request nonces, cluster-wide

    Methods for the engine, besides MemoryStore's:

    - ``remember_nonce(nonce, expires_ms)``: True if the nonce is new (now
      remembered for every node), False if any node accepted it already.
    - ``try_lead(name)``: True while this node holds the cluster-wide lead
      for ``name`` (an advisory lock on a connection of its own; it moves to
      another node when this one closes or dies).  ``release_lead(name)``.
    - ``catch_up()``: read what other nodes committed, now; returns ``seq``.
      ``needs_reset`` calls it for a cursor ahead of this node, ``exists``
      always (the engine's check before a write handler).
    - ``revoked_ids``: the live set of revoked token ids, updated in place
      when any node revokes one.
    - ``adopt_secret(secret)``: store ``secret`` unless the database has one
      already; returns the one every node must use.
    - ``recall``/``remember``: the shared ledger.  A write whose (token, mid)
      another node committed meanwhile is not applied again: ``apply``
      returns that write's seq and record, or raises its error.
    """

    durable = True
    shared = True  # the engine keeps replay memory here and derives endpoint paths
    format_version = 1
    mid_ttl = 86400  # seconds a mutation id's answer is kept (PROTOCOL.md: at least 24 h)
    pool_size = 4  # connections per node for writes and shared reads (the listener has two more)
    # Connections per node for hold(), one per write between its recall and its apply (in its
    # handler): more writes at once wait for one, up to lock_timeout, then 503.
    hold_pool_size = 16
    safety_interval = 1.0  # seconds between catch-ups when no notification came
    purge_interval = 10.0  # seconds between purges of expired nonces (and, each 600 s, mids)
    connect_timeout = 5  # seconds; the URL's own connect_timeout wins
    # A node that stops mid-batch (SIGSTOP, a hung handler) holds the counter, and so every
    # node's writes: PostgreSQL ends such a transaction after tx_idle_timeout, and a write
    # waits at most lock_timeout for the counter (then StoreError: 503, retried by the client).
    tx_idle_timeout = 60
    lock_timeout = 15

    def __init__(self, url, pool_size=None):
        super().__init__()
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("the PostgreSQL store needs a URL such as postgresql://user:pw@host:5432/db, got %r"
                             % (url,))
        self.url = url
        if pool_size is not None:
            self.pool_size = _positive("pool_size", pool_size, int)
        self.revoked_ids = set()
        self._params = None
        self._where = None
        self._pool = None
        self._hold_pool = None  # connections that hold writers' advisory locks (hold())
        self._held = threading.local()  # .conn: this thread's hold connection while it holds a name
        self._tailer = None
        self._stop = threading.Event()
        self._lead_lock = threading.Lock()
        self._lead_conn = None
        self._leading = set()
        self._tx = None  # the connection of the open batch transaction
        self._undo = None  # memory changes of the open batch, undone if it fails to commit
        self._batch_rows = None  # {(table, key): (seq, text)}: the batch's records for the database
        self._batch_mids = None
        self._batch_sv = None
        self._absorbing = False
        self._compact_due = False
        self._reload_needed = False

    # -- connections ----------------------------------------------------------
    def _connect(self, prepare=True):
        psycopg = _psycopg()
        conn = None
        try:
            conn = psycopg.connect(autocommit=True, **self._params)
            # Set here, not as startup options, which poolers such as PgBouncer refuse.
            conn.execute("SET idle_in_transaction_session_timeout = %d" % (self.tx_idle_timeout * 1000))
            conn.execute("SET lock_timeout = %d" % (self.lock_timeout * 1000))
            if prepare:  # planned once per connection: begin_batch() runs it under the counter lock
                conn.execute("PREPARE dsn_catch_up (bigint, bigint) AS " + self._CATCH_UP % {"sv": "$1", "seq": "$2"})
            return conn
        except psycopg.Error as e:
            if conn is not None:
                _pg_close(conn)
            raise StoreError("cannot connect to PostgreSQL at %s: %s" % (self._where, str(e).strip()))

    def _require_open(self):
        if self._pool is None:
            raise StoreError("the PostgreSQL store %s is closed" % self._where)

    # -- lifecycle ------------------------------------------------------------
    def open(self):
        psycopg = _psycopg()
        with self.lock:
            if self._pool is not None:
                return self
            try:
                params = psycopg.conninfo.conninfo_to_dict(self.url)
            except psycopg.Error as e:
                raise ValueError("bad PostgreSQL URL: %s" % e)
            params.setdefault("connect_timeout", str(self.connect_timeout))
            params.setdefault("application_name", "dsn-sync")
            # A peer that vanishes without a FIN (a cut cable) is noticed in about 20 s, not hours.
            for k, v in (("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "5"),
                         ("keepalives_count", "2")):
                params.setdefault(k, v)
            self._params = params
            self._where = "%s:%s/%s" % (params.get("host", "localhost"), params.get("port", "5432"),
                                        params.get("dbname", ""))
            conn = self._connect(prepare=False)  # the tables may not exist yet
            try:
                self._create_or_check(conn)
                self._reload(conn)
                self._load_revocations(conn)
            except psycopg.Error as e:
                raise StoreError("cannot open the PostgreSQL store %s: %s" % (self._where, str(e).strip()))
            finally:
                _pg_close(conn)
            self._pool = _PgPool(self._connect, self.pool_size, self._where)
            self._hold_pool = _PgPool(lambda: self._connect(prepare=False), self.hold_pool_size, self._where)
            self._hold_pool.wait = self.lock_timeout
            self._stop.clear()
            self._tailer = threading.Thread(target=self._tail, name="dsn-sync-pg-listener", daemon=True)
            self._tailer.start()
            return self

    def close(self):
        with self.lock:
            pool, self._pool = self._pool, None
            tailer, self._tailer = self._tailer, None
        if pool is None:
            return
        self._stop.set()
        tailer.join()
        pool.close()
        self._hold_pool.close()
        with self._lead_lock:
            if self._lead_conn is not None:
                _pg_close(self._lead_conn)
            self._lead_conn = None
            self._leading = set()

    def _create_or_check(self, conn):
        """Create the tables in an empty database; refuse a foreign or newer dsn_meta untouched."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_PG_LOCK_CLASS,))  # one creator at a time
            if conn.execute("SELECT to_regclass('dsn_meta')").fetchone()[0] is not None:
                meta = dict(conn.execute("SELECT k, v FROM dsn_meta"))
                try:
                    version = int(meta.get("format", "0"))
                except ValueError:
                    version = 0
                if version > self.format_version:
                    raise StoreError("the database %s was written by a newer dsn-sync (store format %d; this "
                                     "version %s reads format %d): upgrade dsn-sync on every node"
                                     % (self._where, version, __version__, self.format_version))
                if version < 1 or meta.get("app") != "dsn-sync":
                    raise StoreError("%s has a dsn_meta table that is not dsn-sync's; give dsn-sync its own "
                                     "database" % self._where)
                return
            conn.execute("""
                CREATE TABLE dsn_meta (k text PRIMARY KEY, v text NOT NULL);
                CREATE TABLE dsn_counter (one boolean PRIMARY KEY DEFAULT true CHECK (one), seq bigint NOT NULL);
                CREATE TABLE dsn_tables (name text PRIMARY KEY, spec text NOT NULL, sv bigint NOT NULL);
                CREATE TABLE dsn_records (tbl text NOT NULL, key text NOT NULL, seq bigint NOT NULL UNIQUE,
                                          data text, PRIMARY KEY (tbl, key));
                CREATE TABLE dsn_mids (jti text NOT NULL, mid text NOT NULL, at bigint NOT NULL,
                                       answer text NOT NULL, PRIMARY KEY (jti, mid));
                CREATE INDEX dsn_mids_at ON dsn_mids (at);
                CREATE TABLE dsn_revoked (jti text PRIMARY KEY, exp double precision);
                CREATE TABLE dsn_nonces (nonce bytea PRIMARY KEY, expires_ms bigint NOT NULL);
                CREATE INDEX dsn_nonces_expires ON dsn_nonces (expires_ms);
                INSERT INTO dsn_counter (seq) VALUES (0);""")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO dsn_meta VALUES (%s, %s)", [
                    ("format", str(self.format_version)), ("app", "dsn-sync"), ("floor", "0"),
                    ("epoch", b64u_encode(os.urandom(9)))])

    def _reload(self, conn):
        """Replace memory with the database's state, read in one snapshot.  Called under the lock.

        On a connection inside a write transaction (the counter row is ours, so
        no other writer can commit) the reads run in that transaction.
        """
        def read():
            return (dict(conn.execute("SELECT k, v FROM dsn_meta")),
                    conn.execute("SELECT seq FROM dsn_counter").fetchone()[0],
                    conn.execute("SELECT name, spec, sv FROM dsn_tables").fetchall(),
                    conn.execute("SELECT tbl, key, seq, data FROM dsn_records ORDER BY seq").fetchall())
        if conn.info.transaction_status == _psycopg().pq.TransactionStatus.INTRANS:
            meta, counter, tables, records = read()
        else:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                meta, counter, tables, records = read()
        self._reset_memory()
        self.epoch = meta["epoch"]
        self.secret = bytes.fromhex(meta["secret"]) if meta.get("secret") else None
        self.floor = int(meta["floor"])
        self._absorb_tables(tables)
        self._absorb_records(records)
        self.seq = max(self.seq, counter)
        self._reload_needed = False
        self.changed.notify_all()

    def _load_revocations(self, conn):
        now = time.time()
        self.revoked_ids.update(jti for jti, exp in conn.execute("SELECT jti, exp FROM dsn_revoked")
                                if exp is None or exp > now)

    # -- catching up with other nodes -----------------------------------------
    # One statement, so one snapshot: the schema, the counter and floor, and the records past a seq.
    _CATCH_UP = ("SELECT 0, name, spec, sv, NULL FROM dsn_tables WHERE sv > %(sv)s "
                 "UNION ALL SELECT 1, NULL, NULL, seq, (SELECT v FROM dsn_meta WHERE k = 'floor') FROM dsn_counter "
                 "UNION ALL SELECT 2, tbl, key, seq, data FROM dsn_records WHERE seq > %(seq)s "
                 "ORDER BY 1, 4")

    def catch_up(self):
        """Apply what other nodes committed past this node's seq, now; returns the new seq.

        One round trip, read outside the store lock.  Raises StoreError if
        PostgreSQL cannot be reached.
        """
        self._require_open()
        since, sv = self.seq, self.sv
        # The connection goes back before the lock is taken: a writer holds the lock while it
        # waits for a connection, so holding one while waiting for the lock could deadlock.
        with self._pool.lease() as conn:
            rows = conn.execute(self._CATCH_UP, {"sv": sv, "seq": since}).fetchall()
        self._apply_catch_up(None, rows, since, locked=False)
        return self.seq

    def _catch_up_on(self, conn, locked):
        """Read past this node's position on ``conn`` and apply it (under the lock; ``locked``: held already)."""
        since, sv = self.seq, self.sv
        rows = conn.execute(self._CATCH_UP, {"sv": sv, "seq": since}).fetchall()
        self._apply_catch_up(conn, rows, since, locked)

    def _apply_catch_up(self, conn, rows, since, locked):
        """File the rows of a _CATCH_UP read from ``since`` (``conn`` serves a reload if the floor passed us)."""
        with self.lock:
            counter = floor = 0
            tables, records = [], []
            for kind, a, b, n, d in rows:
                if kind == 1:
                    counter, floor = n, int(d)
                elif kind == 0:
                    tables.append((a, b, n))
                else:
                    records.append((a, b, n, d))
            if self._reload_needed or (floor > since and floor > self.floor):
                # Tombstones past our position were compacted away: the gap cannot be patched.
                if conn is not None:
                    self._reload(conn)
                else:
                    with self._pool.lease() as conn:
                        self._reload(conn)
                return
            before = (self.seq, self.sv, self.floor)
            self._absorb_tables([t for t in tables if t[2] > self.sv])
            self._absorb_records([r for r in records if r[2] > self.seq])
            if floor > self.floor:
                self._drop_tombstones(floor)
            self.seq = max(self.seq, counter)  # the snapshot holds every change up to its counter
            if (self.seq, self.sv, self.floor) != before:
                self._notify()
        if self._compact_due and not locked and not self._batch_depth:
            self._compact_later()

    def _absorb_tables(self, tables):
        for name, spec, sv in sorted(tables, key=lambda t: t[2]):
            self.tables[name] = json.loads(spec)
            self._data.setdefault(name, {})
            self.sv = max(self.sv, sv)

    def _absorb_records(self, records):
        data_of = self._data
        self._absorbing = True
        start = self.seq
        try:
            for table, key, seq, text in records:
                rows = data_of.get(table)
                if rows is None:
                    raise StoreError("%s holds records for table %r but not its schema" % (self._where, table))
                if text is None:
                    stored, shape = None, ()
                else:
                    stored = text.encode("utf-8")
                    shape = _shape(json.loads(text))
                self._put(rows, table, key, rows.get(key), stored, seq, shape)
                entry = rows.get(key)
                if seq > start + 1 and entry is not None and entry.prev is not None:
                    # dsn_records keeps a key's latest state only: between this node's seq and this
                    # one, other nodes may have given the row states this node never saw, and a
                    # client whose cursor lies there (served by one of them) may hold one.
                    entry.prev.insert(0, (start + 1, _UNSEEN, None))
        finally:
            self._absorbing = False

    def _drop_tombstones(self, floor):
        """Forget tombstones at or below ``floor`` (another node compacted them); floor moves up."""
        dropped = 0
        for s, e in zip(self._log_seq, self._log_entry):
            if s > floor:
                break
            if e.seq == s and e.data is None:
                del self._data[e.table][e.key]
                e.seq = -1
                self._stale += 1
                self._tombstones -= 1
                dropped += 1
        self.floor = max(self.floor, floor)
        if dropped:
            self._compact_log()

    def exists(self, table, key):
        """MemoryStore.exists, after catching up (one round trip).

        The engine asks it before calling a write handler: a client whose
        create landed on another node a moment ago must find its record here.
        If PostgreSQL cannot be reached, memory answers (the write that follows fails anyway).
        """
        try:
            self.catch_up()
        except StoreError:
            pass
        return super().exists(table, key)

    def needs_reset(self, since):
        """MemoryStore's answer, after catching up when the cursor is ahead of this node.

        A client whose last pull was answered by a node further along must not
        be reset here: one round trip brings this node level first.
        """
        if (isinstance(since, dict) and since.get("epoch") == self.epoch and type(since.get("seq")) is int
                and type(since.get("sv")) is int and (since["seq"] > self.seq or since["sv"] > self.sv)):
            try:
                self.catch_up()
            except StoreError:
                log.warning("cannot catch up with PostgreSQL for a cursor ahead of this node", exc_info=True)
        return super().needs_reset(since)

    # -- the listener thread --------------------------------------------------
    def _tail(self):
        """LISTEN on dsn_changes and catch up on each notification; reconnect with backoff.  Owned by open()/close()."""
        psycopg = _psycopg()
        backoff = 0.05
        last_purge = last_catch_up = 0.0
        purges = 0
        listen = reader = None
        while not self._stop.is_set():
            try:
                if listen is None:
                    listen = self._connect()
                    listen.execute("LISTEN " + _PG_CHANNEL)
                    reader = self._connect()
                    # LISTEN first, then catch up: a commit in between is either read now or notified.
                    self._tail_once(reader, refresh_revoked=True)
                    last_catch_up = time.monotonic()
                    backoff = 0.05
                due = False
                revoked = False
                for note in listen.notifies(timeout=0.25, stop_after=1):
                    if note.payload == "revoked":
                        revoked = True
                    elif not _DIGITS.fullmatch(note.payload) or int(note.payload) > self.seq:
                        due = True
                if due or revoked or time.monotonic() - last_catch_up >= self.safety_interval:
                    self._tail_once(reader, refresh_revoked=revoked)
                    last_catch_up = time.monotonic()
                if last_catch_up - last_purge >= self.purge_interval:
                    self._purge(reader, mids=purges % 60 == 0)  # mids: the first time, then every 60th
                    purges += 1
                    last_purge = last_catch_up
            except (psycopg.Error, StoreError) as e:
                if self._stop.is_set():
                    break
                log.warning("lost PostgreSQL at %s (%s); reconnecting in %.2f s", self._where,
                            str(e).strip(), backoff)
                for conn in (listen, reader):
                    if conn is not None:
                        _pg_close(conn)
                listen = reader = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("the PostgreSQL listener failed; it starts again")
                self._stop.wait(1.0)
        for conn in (listen, reader):
            if conn is not None:
                _pg_close(conn)

    def _tail_once(self, reader, refresh_revoked=False):
        self._catch_up_on(reader, locked=False)
        if refresh_revoked:
            self._load_revocations(reader)

    def _purge(self, conn, mids):
        """Forget expired nonces (and, with ``mids``, mutation ids past their 24 h): any node may, each is idempotent."""
        conn.execute("DELETE FROM dsn_nonces WHERE expires_ms < %s", (_now_ms(),))
        if mids:
            conn.execute("DELETE FROM dsn_mids WHERE at < %s", (int(time.time()) - self.mid_ttl,))

    # -- writes ---------------------------------------------------------------
    # One statement, one round trip: the counter moves only if it is still this node's seq.
    _WRITE_ONE = (
        "WITH c AS (UPDATE dsn_counter SET seq = seq + 1 WHERE seq = %(expect)s RETURNING seq), "
        "r AS (INSERT INTO dsn_records (tbl, key, seq, data) SELECT %(tbl)s, %(key)s, seq, %(data)s FROM c "
        "ON CONFLICT (tbl, key) DO UPDATE SET seq = EXCLUDED.seq, data = EXCLUDED.data), "
        "m AS (INSERT INTO dsn_mids (jti, mid, at, answer) SELECT %(jti)s, %(mid)s, %(at)s, %(answer)s FROM c "
        "WHERE %(answer)s::text IS NOT NULL) "
        "SELECT seq, pg_notify('" + _PG_CHANNEL + "', seq::text) FROM c")

    def apply(self, table, key, op, data=None, ledger=None, encoded=None):
        """MemoryStore.apply, committed to PostgreSQL before memory changes; StoreError if that fails.

        With ``ledger``, a (token, mid) that any node answered already is not
        applied again: its seq and record are returned, or its error raised.
        """
        psycopg = _psycopg()
        with self.lock:
            if self._batch_depth:
                return self._apply_in_batch(table, key, op, data, ledger, encoded)
            self._require_open()
            try:
                rows, entry, stored, shape, record = self._plan(table, key, op, data, encoded)
            except (UnknownTable, Exists, NotFound):
                pass  # memory may be behind: the locked path below decides on the database's state
            else:
                expect = self.seq
                seq = expect + 1
                answer = None
                if ledger is not None:  # the answer without its record, which recall() re-reads
                    answer = _json_dumps({"ok": True, "epoch": self.epoch, "seq": seq, "of": [table, key]})
                args = {"expect": expect, "tbl": table, "key": key,
                        "data": stored.decode("utf-8") if stored is not None else None,
                        "jti": ledger[0] if ledger else None, "mid": ledger[1] if ledger else None,
                        "at": int(time.time()), "answer": answer}
                try:
                    with self._pool.lease() as conn:
                        done = conn.execute(self._WRITE_ONE, args).fetchone()
                except StoreError as e:
                    if not isinstance(e.__cause__, psycopg.errors.UniqueViolation):
                        raise
                    done = None  # the mid is in the ledger: answered below
                if done is not None:
                    self._absorb(rows, table, key, entry, stored, seq, shape)
                    self._after_write()
                    return seq, record
            self.begin_batch()
            try:
                return self._apply_in_batch(table, key, op, data, ledger, encoded)
            finally:
                self.end_batch()

    def _plan(self, table, key, op, data, encoded):
        if "\x00" in key:
            raise Invalid("a key stored in PostgreSQL cannot hold the character U+0000")
        return super()._plan(table, key, op, data, encoded)

    def _apply_in_batch(self, table, key, op, data, ledger, encoded):
        """A change inside the open transaction (the counter is ours, memory exact): memory now, database at commit."""
        if self._tx is None:
            raise StoreError("this batch's transaction on PostgreSQL at %s failed; nothing of it was applied" % self._where)
        if ledger is not None:  # first: a create answered on another node would fail as `exists` below
            try:
                row = self._tx.execute("SELECT answer FROM dsn_mids WHERE jti = %s AND mid = %s", ledger[:2]).fetchone()
            except _psycopg().Error as e:
                self._fail_tx(e, "a write")
            if row is not None:
                return self._answered(json.loads(row[0]))
        rows, entry, stored, shape, record = self._plan(table, key, op, data, encoded)
        seq = self.seq + 1
        if entry is None:
            self._undo.append((rows, key, None))
        else:
            self._undo.append((rows, key, (entry, entry.seq, entry.data, entry.shape)))
        self._batch_rows[(table, key)] = (seq, stored.decode("utf-8") if stored is not None else None)
        if ledger is not None:
            answer = {"ok": True, "epoch": self.epoch, "seq": seq, "of": [table, key]}
            self._batch_mids.append((ledger[0], ledger[1], int(time.time()), _json_dumps(answer)))
        self._absorb(rows, table, key, entry, stored, seq, shape)
        self._notify()
        return seq, record

    def _absorb(self, rows, table, key, entry, stored, seq, shape):
        """_put a change committed (or to be, in a batch); a compaction waits until it is in memory."""
        self._absorbing = True
        try:
            self._put(rows, table, key, entry, stored, seq, shape)
        finally:
            self._absorbing = False

    def _fail_tx(self, error, what):
        """A statement of the open transaction failed: undo the batch's memory changes, end it, raise StoreError."""
        if self._undo is not None:
            self._undo_batch()
        self._end_tx(rollback=True)
        raise StoreError("%s on PostgreSQL at %s failed, nothing was applied: %s"
                         % (what, self._where, str(error).strip()))

    def _answered(self, answer):
        """A ledger answer as apply()'s result: (seq, record) of the write, or its error raised."""
        if answer.get("ok"):
            of = answer.get("of")  # the ledger keeps no record: the key's state now, as recall() gives it
            return answer["seq"], (self.get(of[0], of[1]) if of else answer.get("record"))
        error = answer.get("error") or {}
        raise DSNError(error.get("message", ""), error.get("code", "bad_request"))

    def begin_batch(self):
        """Open a transaction that holds the counter (other nodes' writes wait) and catch up: memory is exact."""
        super().begin_batch()
        if self._batch_depth > 1:
            return
        try:
            self._require_open()
            conn = self._tx = self._pool.take()
            try:
                # One round trip, one simple query of three statements: the server runs the catch-up
                # only once the counter is locked, so its snapshot holds every change committed before
                # ours.  (Not a pipeline: after one, idle_in_transaction_session_timeout is not armed,
                # measured on PostgreSQL 15, and a stalled batch must not hold the counter for ever.)
                since = self.seq
                cur = conn.cursor()
                cur.execute("BEGIN; SELECT seq FROM dsn_counter FOR UPDATE; EXECUTE dsn_catch_up (%d, %d)"
                            % (self.sv, since))
                rows = None
                while True:
                    if cur.description is not None:
                        rows = cur.fetchall()  # the last result set is the catch-up's
                    if not cur.nextset():
                        break
                self._apply_catch_up(conn, rows, since, locked=True)
            except _psycopg().Error as e:
                raise StoreError("cannot start a write on PostgreSQL at %s: %s" % (self._where, str(e).strip()))
            self._undo, self._batch_rows, self._batch_mids, self._batch_sv = [], {}, [], None
            self._batch_base = self.seq
        except BaseException:
            self._end_tx(rollback=True)
            super().end_batch(False)  # give the lock back: the batch never started
            raise

    def end_batch(self, ok=True):
        """Commit the batch (whatever ``ok`` says, like SQLiteStore); on failure undo memory and raise StoreError."""
        try:
            if self._batch_depth == 1 and self._tx is not None:
                self._commit_batch()
        finally:
            super().end_batch(ok)

    def _commit_batch(self):
        psycopg = _psycopg()
        conn = self._tx
        rows, mids = self._batch_rows, self._batch_mids
        try:
            with conn.pipeline(), conn.cursor() as cur:  # one round trip for the whole commit
                if rows:
                    cur.executemany(
                        "INSERT INTO dsn_records (tbl, key, seq, data) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (tbl, key) DO UPDATE SET seq = EXCLUDED.seq, data = EXCLUDED.data",
                        [(t, k, s, d) for (t, k), (s, d) in rows.items()])
                if mids:
                    cur.executemany("INSERT INTO dsn_mids (jti, mid, at, answer) VALUES (%s, %s, %s, %s)", mids)
                if rows:
                    cur.execute("UPDATE dsn_counter SET seq = %s", (self.seq,))
                if rows or self._batch_sv is not None:  # a schema change alone says so: its seq is not new
                    cur.execute("SELECT pg_notify(%s, %s)", (_PG_CHANNEL, str(self.seq) if rows else "sv"))
                cur.execute("COMMIT")
        except BaseException as e:
            self._undo_batch()
            self._end_tx(rollback=True)
            if isinstance(e, psycopg.Error):
                raise StoreError("writing to PostgreSQL at %s failed, nothing was applied: %s"
                                 % (self._where, str(e).strip()))
            raise
        self._end_tx(rollback=False)
        if rows:
            self._after_write()

    def _end_tx(self, rollback):
        conn, self._tx = self._tx, None
        self._undo = self._batch_rows = self._batch_mids = self._batch_sv = None
        if conn is None:
            return
        if rollback and not conn.closed and not conn.broken:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                _pg_close(conn)
        self._pool.give(conn) if self._pool is not None else _pg_close(conn)

    def _undo_batch(self):
        """Put memory back as it was when the batch began (after its catch-up): a failed commit shows nothing."""
        for rows, key, old in reversed(self._undo):
            if old is None:
                rows.pop(key, None)
            else:
                entry = old[0]
                entry.seq, entry.data, entry.shape, entry.seen = old[1], old[2], old[3], None
                entry.vals = entry.prev = None  # its previous state is unknown again
        self._indexes = {}  # rebuilt when next needed
        self._generation += 1
        if self._batch_sv is not None:
            for name, spec in reversed(self._batch_sv[1]):
                if spec is None:
                    self.tables.pop(name, None)
                    if not self._data.get(name):
                        self._data.pop(name, None)
                else:
                    self.tables[name] = spec
            self.sv = self._batch_sv[0]
        entries = sorted((e for rows in self._data.values() for e in rows.values()), key=lambda e: e.seq)
        self._log_seq = [e.seq for e in entries]
        self._log_entry = entries
        self._stale = 0
        self._tombstones = sum(1 for e in entries if e.data is None)
        self.seq = self._batch_base

    def _after_write(self):
        self._notify()
        if self._compact_due:
            self._compact_later()

    def _compact_later(self):
        self._compact_due = False
        try:
            self.compact(_AUTO)
        except StoreError:
            log.warning("compacting tombstones on PostgreSQL failed; tried again later", exc_info=True)
            self._compact_due = True

    def compact(self, count=None):
        """Drop the oldest ``count`` tombstones (all if None) on every node; returns how many.

        The new floor is written in the transaction that deletes them, under
        the counter lock; every node drops its own copies when it next catches up.
        """
        if self._absorbing:  # called from _put while a change is being filed: compact after it
            self._compact_due = True
            return 0
        with self.lock:
            if self._batch_depth:
                self._compact_due = True
                return 0
            self.begin_batch()  # the counter is ours and memory level with the database
            try:
                if count is _AUTO:
                    count = self._tombstones - self.max_tombstones // 2
                floor = n = 0
                for s, e in zip(self._log_seq, self._log_entry):
                    if count is not None and n >= count:
                        break
                    if e.seq == s and e.data is None:
                        floor = s
                        n += 1
                if n:
                    try:
                        self._tx.execute("DELETE FROM dsn_records WHERE data IS NULL AND seq <= %s", (floor,))
                        self._tx.execute("UPDATE dsn_meta SET v = %s WHERE k = 'floor'", (str(floor),))
                        self._tx.execute("SELECT pg_notify(%s, 'floor')", (_PG_CHANNEL,))
                    except _psycopg().Error as e:
                        self._fail_tx(e, "compacting")
            finally:
                self.end_batch()
            if not n:
                return 0
            before = self._tombstones
            self._drop_tombstones(floor)
            return before - self._tombstones

    # -- schema ---------------------------------------------------------------
    def set_table(self, name, spec):
        """Define or replace a table's schema for every node; an identical definition bumps nothing."""
        with self.lock:
            self.begin_batch()  # memory is now level with the database, under the counter lock
            try:
                if self.tables.get(name) == spec:
                    return self.sv
                sv = self.sv + 1
                try:
                    self._tx.execute("INSERT INTO dsn_tables VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
                                     "SET spec = EXCLUDED.spec, sv = EXCLUDED.sv", (name, _json_dumps(spec), sv))
                except _psycopg().Error as e:
                    self._fail_tx(e, "writing the schema")
                if self._batch_sv is None:
                    self._batch_sv = (self.sv, [])
                self._batch_sv[1].append((name, self.tables.get(name)))
                self.tables[name] = spec
                self._data.setdefault(name, {})
                self.sv = sv
                self._notify()
                return sv
            finally:
                self.end_batch()

    # -- shared state: secret, ledger, revocation, nonces, leadership ---------
    def save_secret(self, secret):
        with self.lock:
            self._require_open()
            with self._pool.lease() as conn:
                if secret is None:  # the nodes hold it from outside (DSN_SYNC_SECRET): none kept here
                    conn.execute("DELETE FROM dsn_meta WHERE k = 'secret'")
                else:
                    conn.execute("INSERT INTO dsn_meta VALUES ('secret', %s) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                                 (secret.hex(),))
            self.secret = secret

    def adopt_secret(self, secret):
        """Keep ``secret`` unless the database has one already; returns the secret every node uses.

        Two nodes starting at once on an empty database agree on the first one stored.
        """
        with self.lock:
            self._require_open()
            with self._pool.lease() as conn:
                conn.execute("INSERT INTO dsn_meta VALUES ('secret', %s) ON CONFLICT (k) DO NOTHING", (secret.hex(),))
                self.secret = bytes.fromhex(conn.execute("SELECT v FROM dsn_meta WHERE k = 'secret'").fetchone()[0])
            return self.secret

    def recall(self, jti, mid, view=EVERYTHING):
        """As MemoryStore.recall, from the shared ledger: an ok answer's record is re-read from [table, key]."""
        self._require_open()
        with self._pool.lease() as conn:
            row = conn.execute("SELECT answer FROM dsn_mids WHERE jti = %s AND mid = %s", (jti, mid)).fetchone()
        if row is None:
            return None
        answer = json.loads(row[0])
        of = answer.pop("of", None)
        if of is not None:
            self.catch_up()  # the write may have been answered on another node a moment ago
            answer["record"] = self.read_visible(of[0], of[1], view)
        return answer

    def remember(self, jti, mid, answer, user=None):
        """Keep a write's (error) answer for retries on any node; a first answer is never replaced.

        ``user`` is not needed: the database keeps every answer for ``mid_ttl``.
        """
        self._require_open()
        with self._pool.lease() as conn:
            conn.execute("INSERT INTO dsn_mids VALUES (%s, %s, %s, %s) ON CONFLICT (jti, mid) DO NOTHING",
                         (jti, mid, int(time.time()), _json_dumps(answer)))

    def hold(self, name):
        """MemoryStore.hold across nodes: this process's lock for ``name``, then a PostgreSQL advisory lock.

        A session advisory lock (class: the kind, key: ``_pg_lock_key`` of the
        rest) on a connection of a pool of its own (``hold_pool_size``), so a
        writer that holds a name never waits for the connection its apply()
        needs; one thread's nested holds (mid, then key) share one connection,
        and a nested name is let go on PostgreSQL with the outermost (one round
        trip fewer per write), so nest at most one name of each kind.
        Both waits are bounded by ``lock_timeout`` (then StoreError: the engine
        answers 503, remembers nothing, and the client's retry may succeed).
        A node that dies releases its locks with its sessions.
        """
        self._require_open()
        if getattr(self._held, "first", None) == name:
            return _PgHold(self, name, _HELD_HERE)  # this node's lock is held already (hold_first)
        return _PgHold(self, name, MemoryStore.hold(self, name))

    def hold_first(self, name):
        """This node's lock for ``name`` alone, taken before a hold that leases a connection.

        The engine takes a write's key here before its mid's hold: writes
        queued behind one key (a slow handler) then wait without holding a
        connection of the hold pool each, so one user's writes to their own row
        cannot take every connection from other users' writes.  The nested
        ``hold(name)`` then takes only the PostgreSQL lock.
        """
        return _HoldFirst(self, name)

    def revoked(self):
        """Token ids revoked on any node (read from the database now; also kept live in ``revoked_ids``)."""
        self._require_open()
        with self._pool.lease() as conn:
            self._load_revocations(conn)
        return set(self.revoked_ids)

    def revoke(self, jti, exp):
        """Revoke a token id on every node: stored, and announced so each node's ``revoked_ids`` gains it."""
        self._require_open()
        with self._pool.lease() as conn:
            conn.execute("INSERT INTO dsn_revoked VALUES (%s, %s) ON CONFLICT (jti) DO UPDATE SET exp = EXCLUDED.exp",
                         (jti, exp))
            conn.execute("SELECT pg_notify(%s, 'revoked')", (_PG_CHANNEL,))
        self.revoked_ids.add(jti)

    def remember_nonce(self, nonce, expires_ms):
        """True if no node accepted ``nonce`` before (it is now kept until ``expires_ms``), else False.

        One INSERT ... ON CONFLICT DO NOTHING (a round trip per request);
        expired nonces are purged by the listener every ``purge_interval``.
        """
        self._require_open()
        with self._pool.lease() as conn:
            return conn.execute("INSERT INTO dsn_nonces VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                                (bytes(nonce), int(expires_ms))).fetchone() is not None

    def try_lead(self, name):
        """True if this node leads ``name`` cluster-wide (``@every`` tasks run only where this is True).

        The lead is a session advisory lock on a connection kept for it: it
        is held until release_lead(), close(), or the connection's death,
        when another node's next try_lead() takes it.  Call it before each run.
        """
        psycopg = _psycopg()
        self._require_open()
        with self._lead_lock:
            try:
                if self._lead_conn is None or self._lead_conn.closed or self._lead_conn.broken:
                    self._leading = set()
                    if self._lead_conn is not None:
                        _pg_close(self._lead_conn)
                    self._lead_conn = None
                    self._lead_conn = self._connect()
                conn = self._lead_conn
                if name in self._leading:
                    conn.execute("SELECT 1")  # still connected, so still holding it
                    return True
                if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_PG_LOCK_CLASS, _pg_lock_key(name))).fetchone()[0]:
                    self._leading.add(name)
                    return True
                return False
            except (psycopg.Error, StoreError):
                if self._lead_conn is not None:
                    _pg_close(self._lead_conn)
                self._lead_conn = None
                self._leading = set()
                return False

    def release_lead(self, name):
        """Give up the lead for ``name`` (another node's next try_lead() takes it)."""
        with self._lead_lock:
            if name in self._leading:
                self._leading.discard(name)
                try:
                    self._lead_conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_PG_LOCK_CLASS, _pg_lock_key(name)))
                except Exception:
                    _pg_close(self._lead_conn)
                    self._lead_conn = None
                    self._leading = set()

    # -- invariants -----------------------------------------------------------
    def check(self):
        """MemoryStore's invariants, plus: after catching up, memory holds exactly the database's state.

        Call it when no node is writing (otherwise the two may differ by what
        was committed in between).
        """
        self.catch_up()
        with self.lock:
            super().check()
            with self._pool.lease() as conn:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    db = {(t, k): (s, d) for t, k, s, d in conn.execute("SELECT tbl, key, seq, data FROM dsn_records")}
                    counter = conn.execute("SELECT seq FROM dsn_counter").fetchone()[0]
                    floor = int(conn.execute("SELECT v FROM dsn_meta WHERE k = 'floor'").fetchone()[0])
                    tables = {n: (json.loads(s), v) for n, s, v in conn.execute("SELECT name, spec, sv FROM dsn_tables")}
            memory = {(t, k): (e.seq, e.data.decode("utf-8") if e.data is not None else None)
                      for t, rows in self._data.items() for k, e in rows.items()}
            assert set(db) == set(memory), "keys in PostgreSQL differ from memory: %d vs %d" % (len(db), len(memory))
            for k, (s, d) in db.items():
                assert s == memory[k][0], "seq of %r differs: %d in PostgreSQL, %d in memory" % (k, s, memory[k][0])
                assert (d is None) == (memory[k][1] is None) and (d is None or json.loads(d) == json.loads(memory[k][1])), \
                    "record %r differs from PostgreSQL" % (k,)
            assert counter == self.seq, "seq %d in memory, %d in PostgreSQL" % (self.seq, counter)
            assert floor == self.floor, "floor %d in memory, %d in PostgreSQL" % (self.floor, floor)
            assert {n: s for n, (s, _) in tables.items()} == self.tables, "schema differs from PostgreSQL"
            assert max([v for _, v in tables.values()] or [0]) == self.sv, "sv differs from PostgreSQL"
            return True


# =============================================================================
# Access rules, endpoint rotation, replay memory
# =============================================================================

_DIGITS = re.compile(r"[0-9]{1,19}")  # str.isdigit() also admits '²', which int() refuses
_HANDLER_CODES = frozenset(("rejected", "invalid", "forbidden", "exists", "not_found"))
_WRITE_OPS = ("create", "update", "delete")


class WriteContext:
    """What a write handler's second argument carries: ``op``, ``table``, ``key``,
    ``claims`` (the token's claims), ``sub`` (its user, None for the app token)
    and ``mid`` (the client's mutation id)."""

    __slots__ = ("op", "table", "key", "claims", "sub", "mid")

    def __init__(self, op, table, key, claims, mid=None):
        self.op, self.table, self.key, self.claims, self.mid = op, table, key, claims, mid
        self.sub = claims.get("sub") if claims else None

    def __repr__(self):
        return "WriteContext(op=%r, table=%r, key=%r, sub=%r)" % (self.op, self.table, self.key, self.sub)


class _Endpoints:
    """Per-token request paths (PROTOCOL.md section 5).

    Each token moves to a fresh random path every ``rotate_every`` requests;
    its old paths stay valid for ``grace`` seconds, then 404.  With rotation
    off every op uses the base path.
    """

    grace = 120.0
    max_tokens = 100000  # tokens whose rotation state is kept (least recently used dropped), and retired paths

    def __init__(self, base, rotate_every):
        self.base = base
        self.rotate_every = rotate_every
        self._lock = threading.Lock()
        self._tokens = collections.OrderedDict()  # jti -> [current path, requests on it]
        self._owner = {}  # path -> [jti, retired_at or None]
        self._retired = collections.deque()  # (retired_at, path)

    def known(self, path):
        """Pre-authentication check: the base path or some token's live path."""
        if path == self.base or not self.rotate_every:
            return path == self.base
        with self._lock:
            owner = self._owner.get(path)
            return owner is not None and (owner[1] is None or time.monotonic() - owner[1] < self.grace)

    def usable(self, path, jti, op):
        """After authentication: may this token use ``path`` for ``op``?  Counts nothing."""
        if not self.rotate_every:
            return path == self.base
        if path == self.base and op == "hello":
            return True
        owner = self._owner.get(path)  # one step under the GIL; a path retired meanwhile is still in its grace
        if owner is None or owner[0] != jti:
            return False
        return owner[1] is None or time.monotonic() - owner[1] < self.grace

    def ep(self, jti, admitted=True):
        """The ep for an answer to this token: its current path, made on its first request.  An
        admitted request (past the clock and replay checks) counts towards its rotation; a refused
        one does not, so a replayed frame never moves its token on."""
        if not self.rotate_every:
            return self.base
        now = time.monotonic()
        with self._lock:
            state = self._tokens.get(jti)
            if state is None:
                state = self._tokens[jti] = [self._fresh(jti), 0]
                if len(self._tokens) > self.max_tokens:
                    # Its path goes at once, not after a grace: fresh tokens by the hundred thousand
                    # (a login that mints one per call) would otherwise pile up retired paths.  Its
                    # next request gets 404 and says hello again.
                    _, (old_path, _) = self._tokens.popitem(last=False)
                    self._owner.pop(old_path, None)
            else:
                self._tokens.move_to_end(jti)
            state[1] += admitted
            if state[1] > self.rotate_every:
                self._retire(state[0], now)
                state[0], state[1] = self._fresh(jti), 1
            retired = self._retired
            while retired and (now - retired[0][0] >= self.grace or len(retired) > self.max_tokens):
                self._owner.pop(retired.popleft()[1], None)
            return state[0]

    def _fresh(self, jti):
        path = self.base + "/" + b64u_encode(os.urandom(9))
        self._owner[path] = [jti, None]
        return path

    def _retire(self, path, now):
        owner = self._owner.get(path)
        if owner is not None:
            owner[1] = now
            self._retired.append((now, path))


class _SharedEndpoints:
    """Endpoint paths that every node of a cluster checks without shared state (PROTOCOL.md 5).

    On a store that several processes share (``store.shared``), a token's
    next request may reach another node, which never saw the path it was
    given.  So the path is derived, not remembered::

        window = unix time // period                     (period: rotate_every seconds)
        path   = base "/" tag(window) b64u(HMAC(key, jti "|" window)[0:9])

    where ``tag`` is the window number mod 4096 in two base64url characters.
    Before authentication (``known``) a node checks the shape and that the tag
    names a window less than ``grace`` old; after it (``admit``) the HMAC for
    that token.  The path moves every ``period`` seconds instead of every N
    requests: a client cannot tell, and no node keeps per-token state.
    Cost: one HMAC-SHA256 per request (about a microsecond).
    """

    grace = 120.0
    _TAG = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

    def __init__(self, base, key, period):
        self.base, self.key, self.period = base, key, float(period)

    def _tag(self, window):
        return self._TAG[(window >> 6) & 63] + self._TAG[window & 63]

    def _path(self, jti, window):
        mac = hmac.new(self.key, ("%s|%d" % (jti, window)).encode("utf-8"), hashlib.sha256).digest()
        return "%s/%s%s" % (self.base, self._tag(window), b64u_encode(mac[:9]))

    def _windows(self):
        now = time.time()
        current = int(now // self.period)
        oldest = int((now - self.grace) // self.period)
        return range(current, oldest - 1, -1)

    def known(self, path):
        if path == self.base:
            return True
        if not path.startswith(self.base + "/") or len(path) != len(self.base) + 15 or not path.isascii():
            return False  # (a non-ASCII path would pass the tag and then fail to encode: a 500)
        tag = path[len(self.base) + 1:len(self.base) + 3]
        return any(self._tag(w) == tag for w in self._windows())

    def usable(self, path, jti, op):
        if path == self.base and op == "hello":
            return True
        tag = path[-14:-12]
        return any(hmac.compare_digest(path, self._path(jti, w)) for w in self._windows() if self._tag(w) == tag)

    def ep(self, jti, admitted=True):
        return self._path(jti, int(time.time() // self.period))


class _ReplayMemory:
    """Accepted request nonces, each kept until its ``t`` is more than 60 s in the past.

    Nonces are filed in one-second buckets by expiry, so forgetting is a dict
    pop per second.  Full means 503: PROTOCOL.md forbids forgetting early.

    A frame may carry a ``t`` up to 60 s ahead, so each nonce is kept up to
    two minutes, and one token sending hellos flat out (about 15,000 a second
    measured on two cores) would fill the memory and get everyone a 503 for
    those two minutes.  So the room is shared out by owner (a user's tokens
    together, or one token with no user):

    - any owner may hold its first ``light`` nonces (a thousandth of the room:
      an honest browser sends a few a minute) wherever there is room;
    - past those, owners together hold at most half the room (``heavy_room``),
      and one owner at most a quarter (``share``);

    so a few heavy senders, a backend's app token or users with tokens
    flooding hellos, get 503 among themselves, and it takes some five hundred
    owners, each at its full light part at once, to fill the half kept for the others.
    """

    window_ms = 60000

    def __init__(self, capacity):
        self.capacity = capacity
        self.light = max(1, capacity // 1000)
        self.share = max(1, capacity // 4)
        self.heavy_room = capacity // 2
        self._lock = threading.Lock()
        self._seen = set()
        self._buckets = {}  # expiry second -> {owner: [nonces]}
        self._held = {}  # owner -> nonces it holds now
        self._heavy = 0  # nonces held past their owners' first `light`
        self._purged_at = 0

    def add(self, nonce, t, now, owner=None):
        """True if new (and now remembered), False if already seen; _HTTPFault(503) if full, or
        ``owner`` holds its share, or is past its light part with the heavy room full."""
        with self._lock:
            second = now // 1000
            held, light = self._held, self.light
            if second != self._purged_at:
                self._purged_at = second
                for b in [b for b in self._buckets if b < second]:
                    for by, nonces in self._buckets.pop(b).items():
                        self._seen.difference_update(nonces)
                        had = held[by]
                        left = had - len(nonces)
                        if had > light:
                            self._heavy -= had - max(left, light)
                        if left:
                            held[by] = left
                        else:
                            del held[by]
            if nonce in self._seen:
                return False
            mine = held.get(owner, 0)
            heavy = mine >= light
            if len(self._seen) >= self.capacity or mine >= self.share or (heavy and self._heavy >= self.heavy_room):
                raise _HTTPFault(503, "replay memory full")
            self._seen.add(nonce)
            held[owner] = mine + 1
            self._heavy += heavy
            self._buckets.setdefault((int(t) + self.window_ms) // 1000 + 1, {}).setdefault(owner, []).append(nonce)
            return True

    def seen(self, nonce, t, now):
        """True if ``nonce`` was accepted before, for a frame refused anyway (its token expired).
        Remembers nothing here: storing its nonce would only charge its owner's share, so a
        leaked expired token could fill its user's share and refuse the user's live ones.
        (A set's membership test is one step under the GIL; ``t`` and ``now`` are for
        _SharedReplay.seen.)"""
        return nonce in self._seen

    def __len__(self):
        return len(self._seen)


class _SharedReplay:
    """Replay memory kept by a store that every node shares (``store.remember_nonce``).

    It has no capacity to fill, so no owner's share: a token sending as fast
    as it can grows the table by its rate times about two minutes (the
    listener purges the rest), and refuses nobody else.
    """

    window_ms = _ReplayMemory.window_ms

    def __init__(self, store):
        self.store = store

    def add(self, nonce, t, now, owner=None):
        try:
            return self.store.remember_nonce(nonce, int(t) + self.window_ms + 1000)
        except StoreError:
            raise _HTTPFault(503, "replay memory unavailable")  # never accept a frame it cannot remember

    def seen(self, nonce, t, now):
        """True if ``nonce`` was accepted before.  Unlike _ReplayMemory.seen it does remember the
        nonce (one INSERT is the lookup), which costs nothing here: no owner's share fills."""
        return not self.add(nonce, t, now)

    def __len__(self):
        return 0


# =============================================================================
# The protocol engine: frames in, sealed answers out (PROTOCOL.md sections 3-6)
# =============================================================================


def _refuse_constant(name):
    raise ValueError("%s is not JSON" % name)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # built once, like _json_dumps (4.8 -> 2.9 us)
_LARGE_OPS = frozenset(_WRITE_OPS + ("batch",))  # the ops a request over max_read_request may have
_LARGE_OP = re.compile(rb'"op"\s*:\s*"(?:%s)"' % "|".join(sorted(_LARGE_OPS)).encode())  # found before parsing
MAX_DEPTH = 64  # nesting of arrays and objects in any request or record; deeper is `invalid`/`bad_request`


_scan_json = _DECODER.scan_once  # the C scanner under JSONDecoder.decode, which wraps it in two regex steps


def _loads(data):
    """json.loads that refuses NaN and Infinity (Python accepts them, JSON.parse does not).

    ``data`` is UTF-8 bytes or text; bad UTF-8 raises ValueError like bad JSON.
    A text that is one JSON value and nothing else (every frame and stored
    record) goes straight to the C scanner; anything else, white space around
    it included, through ``decode``, which accepts or words the error as
    json.loads does (2.0 -> 1.4 us for a write request).
    """
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


def _too_deep(value, limit=MAX_DEPTH):
    """True if ``value`` nests arrays/objects deeper than ``limit``.  Visits containers only.

    Decoding 1,000 levels works, but re-encoding them raises RecursionError
    deep inside the encoder; this check runs first, iteratively.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        for child in children:
            if type(child) in (dict, list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _now_ms():
    return int(time.time() * 1000)


def _token_expired():
    """The error a request (or a waiting pull) of an expired token is answered with."""
    return AuthError("the token has expired; get a fresh one", "expired")


def _error_answer(error):
    """The one place a DSNError becomes an answer's ``{"ok": false, "error": ...}``."""
    answer = {"ok": False, "error": {"code": error.code, "message": error.message}}
    if isinstance(error, _SubRefused):
        answer["error"]["sub"] = error.sub
    return answer


class _SubRefused(ProtocolError):
    """A subscription the server does not know or whose function refused it; ``sub`` is its id."""

    def __init__(self, sub, message, code):
        ProtocolError.__init__(self, message, code)
        self.sub = sub


class _Wait:
    """A pull that found nothing new and asked to wait: everything needed to answer it later.

    ``transport`` answers it (see Transport) and ``conn`` is that transport's
    own handle on the waiting request; the engine and the feed never look
    inside it.  Several transports can share one feed.
    """

    __slots__ = ("state", "nonce", "ep", "seq", "sv", "deadline", "transport", "conn", "stream", "sent", "due", "phase",
                 "subs")

    def __init__(self, state, nonce, ep, seq, sv, deadline, stream=False, subs=None):
        self.state, self.nonce, self.ep, self.seq, self.sv, self.deadline = state, nonce, ep, seq, sv, deadline
        self.subs = subs  # the held _Subscriptions of a pull in subscription mode, else None
        self.transport = self.conn = None
        self.stream = stream  # a streamed pull (PROTOCOL.md 6): many answers down one response
        self.sent = 0  # stream messages sent so far; the next one's index
        self.due = 0.0  # a stream's next message waits until then (monotonic seconds)
        self.phase = 0.0  # where in each round of the feed's stream spacing its messages go (0..1)


class _Engine:
    """Everything between a POST body and its sealed answer; it knows nothing of sockets.

    Methods for a transport:

    - ``known_path(path)``: the pre-authentication 404 check (base or a live endpoint).
    - ``handle(path, body)``: one frame.  Returns the sealed answer (bytes), or a
      ``_Wait`` for a pull that should wait: the transport sets ``wait.conn``
      and gives it to ``_Feed.park``; if that says False (the store moved on
      meanwhile) it sends ``answer_wait(wait)`` at once.  Every transport status
      (400, 401, 404, 503) is raised as ``_HTTPFault``; nothing else escapes for
      bad input.
    - ``answer_wait(wait, found=None, index=None)``: the changes answer for a
      waiting pull (the feed's way to answer it).

    Protocol faults become sealed ``{"ok": false, ...}`` answers through
    ``_error_answer``; only the unexpected reaches the logger.
    """

    max_wait = 30  # seconds a pull may ask to be held (PROTOCOL.md: 0..30)
    clock_window_ms = 60000  # |t - now| allowed before `clock`
    max_kid = 4096  # bytes; a kid is a sealed claims object, a few hundred bytes in practice
    max_read_request = 65536  # bytes of request JSON from a token that may write nothing (hello, pull)
    max_fields = 1000  # fields in one record
    max_subscriptions = 64  # subscriptions one pull may hold
    max_cached_params = 1024  # characters of (name, params) above which a subscription is not cached per token
    max_held_routes = 200000  # routes of the resolved subscription sets kept for reuse (_held), all tokens together
    max_held_text = 16 << 20  # ... and characters of their values and keys: a value may be 1,000 characters long
    max_token_subs_text = 64 << 10  # characters of (name, params) one token keeps resolved: one full pull's
    max_subs_text = 32 << 20  # ... and all tokens together; past it, subscriptions are resolved for each pull

    def __init__(self, keyring, store, rotate_every=100, page_size=5000, max_batch=1000, max_record=1 << 20,
                 max_nonces=1000000):
        self.keyring = keyring
        keyring.evicted = self._forget_token
        self.store = store
        self.base = "/sync/" + keyring.instance
        if store.shared and rotate_every:
            # Several nodes: paths any node can check (rotate_every is then seconds per path).
            self.endpoints = _SharedEndpoints(self.base, hkdf_expand(keyring.prk, b"endpoints", 32), rotate_every)
        else:
            self.endpoints = _Endpoints(self.base, rotate_every)
        self.replay = _ReplayMemory(max_nonces) if not store.shared else _SharedReplay(store)
        self.page_size = page_size
        self.max_batch = max_batch
        self.max_record = max_record
        self.handlers = {}
        self.read_rules = {}
        self.subscriptions = {}  # name -> fn(ctx, params), from @sync.subscription
        self._unknown_subs = set()  # unknown subscription names already logged (at most 64)
        self._held_sets = {}  # see _held()
        self._held_routes = 0  # their routes, counted against max_held_routes
        self._held_text = 0  # and the characters of those routes' values, against max_held_text
        self._subs_text = 0  # characters of the tokens' cached (name, params), against max_subs_text
        self._held_lock = threading.Lock()
        self.any_table = False  # the quick server's development mode: writes to any table, no handler needed
        self.max_tables = 1000  # DSNSync's max_tables: also for the tables such writes create
        # A shared store keeps a live set that every node's revocations reach.
        self.revoked = store.revoked_ids if store.shared else set(store.revoked())
        # Frames sealed before this process started may have been accepted by the process
        # before it, whose replay memory is gone: they are refused as `clock` (PROTOCOL.md 4;
        # a client seals its request again at once).  A durable store's ledger answers a replayed
        # write, but not one refused on the request alone (a table that a deploy then adds), nor
        # a hello or pull.  Only a shared store (PostgreSQL) keeps its replay memory across restarts.
        self.started_ms = 0 if store.shared else _now_ms()
        self.requests = 0
        self._count_lock = threading.Lock()
        self._fieldsets = {}

    # -- one frame ------------------------------------------------------------
    def known_path(self, path):
        return self.endpoints.known(path)

    def open(self, path, body):
        """(token state, request nonce, request object, refusal) of one POST body.

        Raises _HTTPFault when the frame is not authentic (nothing of it is
        parsed then); a request that opens but is not a valid request object
        comes back as ``({}, ProtocolError)``, which ``handle`` answers sealed.
        A transport that must look at a request before choosing where to run
        it (the ASGI door) opens it here once and hands the result to
        ``handle(..., opened=...)``.
        """
        with self._count_lock:
            self.requests += 1
        state, nonce, plain = self._open_frame(path, body)
        try:
            return state, nonce, self._parse(state, plain), None
        except ProtocolError as e:
            return state, nonce, {}, e

    def handle(self, path, body, max_wait=None, poll=None, opened=None):
        """One POST body -> sealed answer bytes or a _Wait.  Raises _HTTPFault; never raises for bad input.

        A transport that cannot hold requests long (WSGI) passes ``max_wait``
        (seconds a pull may wait here) and ``poll`` (seconds a client should
        pause after a pull that came back empty at once); hello tells clients.
        ``opened`` is what ``open(path, body)`` gave for this body, if the
        transport opened it already.
        """
        state, nonce, request, refused = opened or self.open(path, body)
        op = request.get("op")
        # A request that is not one (refused) at the base path is answered there, whatever its op.
        if not (refused is not None and path == self.base) and not self.endpoints.usable(path, state.jti, op):
            raise _HTTPFault(404, "not this token's endpoint")
        try:
            if refused is not None:
                raise refused
            self._admit(state, nonce, request)
        except DSNError as e:  # malformed, clock, replay, expired: not one of the token's requests
            return self._seal(state, nonce, self.endpoints.ep(state.jti, admitted=False), _error_answer(e))
        ep = self.endpoints.ep(state.jti)
        try:
            if op == "pull":
                return self._pull(state, nonce, ep, request, max_wait)
            if op == "hello":
                result = self._hello(state)
                if max_wait is not None:
                    result.update(wait=max_wait, poll=poll)
            elif op in _WRITE_OPS:
                result = self._write(state, request)
            elif op == "batch":
                result = self._batch(state, request)
            else:
                raise ProtocolError("unknown op %r" % (op,))
        except DSNError as e:
            result = _error_answer(e)
        return self._seal(state, nonce, ep, result)

    def claimed(self, head, whole=True):
        """(token state, kid length) of the token a frame names, before its tag is checked; _HTTPFault 400/401.

        The kid is the server's own seal, so a made-up one is refused here;
        but that the sender holds the token's secret is known only once the
        tag checks (``_open_frame``).  ``head`` is the frame, or with
        ``whole=False`` its first bytes (a body still coming in): at least
        ``3 + max_kid`` of them, or all there are.
        """
        if len(head) < 3 or head[0] != PROTOCOL_VERSION:
            raise _HTTPFault(400, "not a frame")
        kid_len = (head[1] << 8) | head[2]
        if not 0 < kid_len <= self.max_kid or len(head) < 3 + kid_len + (OVERHEAD if whole else 0):
            raise _HTTPFault(400, "bad kid length")
        try:
            kid = bytes(head[3:3 + kid_len]).decode("ascii")
        except UnicodeDecodeError:
            raise _HTTPFault(400, "kid is not ASCII")
        state = self.keyring.resolve(kid)
        if state is None or state.jti in self.revoked:
            raise _HTTPFault(401, "unknown or revoked token")
        return state, kid_len

    def _open_frame(self, path, body):
        """(token state, request nonce, plaintext) of an authentic frame; _HTTPFault 400/401 otherwise."""
        state, kid_len = self.claimed(body)
        sealed = bytes(body[3 + kid_len:])
        plain = open(state.c2s, _REQ_LABEL + path.encode("ascii"), sealed)
        if plain is None:
            raise _HTTPFault(401, "tag mismatch")
        return state, sealed[:NONCE_SIZE], plain

    def _parse(self, state, plain):
        """The request object, after the caps that bound what parsing it may cost."""
        if len(plain) > self.max_read_request:
            # Only writes are ever this large (hello and pull are a few hundred bytes), and only
            # from a token that may write: anything else is refused before a byte is parsed.
            if state.write is not None and not state.write:
                raise ProtocolError("a request from a read-only token is at most %d bytes, got %d"
                                    % (self.max_read_request, len(plain)))
            if not _LARGE_OP.search(plain):
                raise ProtocolError("a request over %d bytes must be a write (create, update, delete or "
                                    "batch)" % self.max_read_request)
        try:
            request = _loads(plain)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise ProtocolError("the request is not JSON")
        if not isinstance(request, dict):
            raise ProtocolError("the request is not a JSON object")
        if len(plain) > self.max_read_request and request.get("op") not in _LARGE_OPS:
            # The search above only saw the words somewhere in the text (a nested "op": "batch").
            raise ProtocolError("a request over %d bytes must be a write (create, update, delete or batch)"
                                % self.max_read_request)
        # request -> mutations -> mutation -> data: 3 levels of wrapping.  A text with no more
        # brackets than that cannot nest deeper (the count is C; the walk is Python).
        if plain.count(b"[") + plain.count(b"{") > MAX_DEPTH + 3 and _too_deep(request, MAX_DEPTH + 3):
            raise ProtocolError("the request nests deeper than %d levels" % MAX_DEPTH)
        return request

    def _admit(self, state, nonce, request):
        """Clock, replay and expiry, in that order (PROTOCOL.md 4)."""
        now = _now_ms()
        t = request.get("t")
        if type(t) not in (int, float) or abs(t - now) > self.clock_window_ms or t < self.started_ms:
            raise ProtocolError("the request's clock is off by more than 60 s, or predates this server's "
                                "start; adjust to the server's `now`", "clock")
        exp = state.exp
        if exp is not None and (type(exp) not in (int, float) or now / 1000.0 >= exp):
            # Still `replay` for a frame accepted before the token expired; an expired token's own
            # frames are not remembered (not accepted), so they take no room in its user's share.
            if self.replay.seen(nonce, t, now):
                raise ProtocolError("this frame was already accepted", "replay")
            raise _token_expired()
        if not self.replay.add(nonce, t, now, state.owner):
            raise ProtocolError("this frame was already accepted", "replay")

    def _seal(self, state, nonce, ep, result, tail=None, index=None):
        """Seal an answer: ``result`` is a dict of ok fields, or an answer with its own ``ok``.

        ``tail`` is pre-encoded UTF-8 JSON for the last members (a pull's changes,
        a reset's records), spliced in from the stored JSON, never re-encoded.
        ``index`` numbers the messages of a streamed pull: it is sealed into the
        associated data after the request's nonce, so none can be dropped,
        reordered or replayed within the stream unnoticed.
        """
        if "ok" in result:
            obj = dict(result, now=_now_ms(), ep=ep)
        else:
            obj = {"ok": True, "now": _now_ms(), "ep": ep}
            obj.update(result)
        text = _json_dumps(obj).encode("utf-8")
        if tail is not None:
            text = b"".join((text[:-1], tail, b"}"))
        aad = _RES_LABEL + nonce if index is None else _RES_LABEL + nonce + struct.pack(">I", index)
        return b"\x01" + seal(state.s2c, aad, text)

    # -- reads ----------------------------------------------------------------
    def view(self, state):
        """The token's View (tables it may read, row rules), built once per token state."""
        view = state.view
        if view is None:
            view = state.view = View(state.read, self.read_rules, state.sub, state.claims)
        return view

    def _visible_tables(self, state):
        tables = self.store.tables
        if state.read is None or state.write is None:
            return dict(tables)
        return {n: s for n, s in tables.items() if n in state.read or n in state.write}

    def _hello(self, state):
        store = self.store
        with store.lock:
            return {"instance": self.keyring.instance, "pv": PROTOCOL_MINOR, "epoch": store.epoch,
                    "seq": store.seq, "sv": store.sv, "tables": self._visible_tables(state), "subs": True}

    def _pull(self, state, nonce, ep, request, max_wait=None):
        store = self.store
        since, wait, nxt = request.get("since"), request.get("wait", 0), request.get("next")
        if type(wait) not in (int, float) or not 0 <= wait <= self.max_wait:
            raise ProtocolError("`wait` is seconds from 0 to %d, got %r" % (self.max_wait, wait))
        if max_wait is not None:
            wait = min(wait, max_wait)
        if state.exp is not None:  # held no longer than the token lives: then answered `expired` (_Feed._answer)
            wait = min(wait, max(0.0, state.exp - time.time()))
        if request.get("subs") is not None:
            return self._sub_pull(state, nonce, ep, request, self._resolve_subs(state, request["subs"]), wait)
        if nxt is not None:
            return self._reset_page(state, nonce, ep, nxt)
        if store.needs_reset(since):
            return self._reset_page(state, nonce, ep, None)
        seq, sv = since["seq"], since["sv"]
        if seq == store.seq and sv == store.sv and wait > 0:
            return _Wait(state, nonce, ep, seq, sv, time.monotonic() + wait, request.get("stream") is True)
        return self._changes_answer(state, nonce, ep, seq, sv, store.changes_since(seq, self.page_size, self.view(state)))

    def answer_wait(self, wait, found=None, index=None):
        """The sealed answer for a parked (or never parked) pull; ``index`` for a stream message."""
        if found is None:
            found = self.store.changes_since(wait.seq, self.page_size, self.view(wait.state), wait.subs)
        return self._changes_answer(wait.state, wait.nonce, wait.ep, wait.seq, wait.sv, found, index)

    def answer_expired(self, wait):
        """The sealed ``expired`` answer for a pull whose token expired while it waited."""
        return self._seal(wait.state, wait.nonce, wait.ep, _error_answer(_token_expired()))

    def _changes_answer(self, state, nonce, ep, seq, sv, found, index=None):
        """The sealed changes answer for a cursor at ``seq``/``sv``, given changes_since()'s result."""
        store = self.store
        changes, cursor = found
        if changes is None:  # a subscription pull too far behind: it asks again and gets a reset (_sub_pull)
            changes = ()
        result = {"epoch": store.epoch, "seq": cursor}
        if sv != store.sv:
            with store.lock:
                result["sv"] = store.sv
                result["tables"] = self._visible_tables(state)
        return self._seal(state, nonce, ep, result, b',"changes":[' + b",".join(changes) + b"]", index)

    def _fresh_seq(self):
        """The seq a reset's first page is taken at.  Where several nodes share the store, this node
        first reads what the others committed: a first visit sees every write answered before it
        asked, wherever that write landed (one round trip per reset, none per page after it)."""
        store = self.store
        if store.shared:
            try:
                store.catch_up()
            except StoreError:
                log.warning("cannot catch up with the store before a reset; it is taken at this node's seq",
                            exc_info=True)
        return store.seq

    def _reset_page(self, state, nonce, ep, nxt):
        """A reset page (PROTOCOL.md: paged in seq order up to the snapshot's seq)."""
        store = self.store
        snap = after = None
        if isinstance(nxt, str):
            parts = nxt.split(".")
            if len(parts) == 3 and parts[0] == store.epoch and _DIGITS.fullmatch(parts[1]) and _DIGITS.fullmatch(parts[2]):
                snap, after = int(parts[1]), int(parts[2])
                if after > snap:
                    snap = None
                if snap is not None and snap > store.seq and store.shared:
                    store.catch_up()  # another node handed out that page: this one catches up first
                if snap is not None and snap > store.seq:
                    snap = None
        if snap is None:
            snap, after = self._fresh_seq(), 0
        records, last, more = store.snapshot_page(snap, after, self.page_size, self.view(state))
        with store.lock:
            result = {"reset": True, "epoch": store.epoch, "seq": snap, "sv": store.sv,
                      "tables": self._visible_tables(state), "more": more,
                      "next": "%s.%d.%d" % (store.epoch, snap, last) if more else None}
        return self._seal(state, nonce, ep, result, b',"records":' + records)

    # -- subscriptions (README: proposed protocol section 7) --------------------
    def _resolve_subs(self, state, wanted):
        """A pull's ``subs`` -> ``{id: {table: _Filter}}``; each (name, params) resolved once per token."""
        if not isinstance(wanted, dict) or len(wanted) > self.max_subscriptions:
            raise ProtocolError("`subs` is an object of at most %d subscriptions, {id: {\"name\": ..., \"params\": "
                                "{...}}}" % self.max_subscriptions)
        cache = state.subs
        if cache is None:
            cache = state.subs = {}
        resolved = _Resolved()
        for sid, asked in wanted.items():
            if not _SUB_ID.fullmatch(sid):
                raise ProtocolError("a subscription id is 1 to 40 of A-Z, a-z, 0-9, _ and -, got %r" % (sid[:60],))
            name = asked.get("name") if isinstance(asked, dict) else None
            params = asked.get("params", {}) if isinstance(asked, dict) else None
            if not isinstance(name, str) or not isinstance(params, dict):
                raise ProtocolError("subscription %s must be {\"name\": string, \"params\": object}" % sid)
            ck = name + "\n" + json.dumps(params, sort_keys=True, separators=(",", ":"))
            filters = cache.get(ck)
            if filters is None:
                filters = self._compile_sub(state, sid, name, params)
                if not self._cache_sub(state, cache, ck, filters):
                    resolved.fresh.add(sid)
            resolved[sid] = filters
        return resolved

    def _cache_sub(self, state, cache, ck, filters):
        """Keep ``filters`` in the token's cache under ``ck``, if short enough and within the budgets
        (a token's, and all tokens'): whatever its clients send, memory stays bounded.  False: not kept."""
        size = len(ck)
        if size > self.max_cached_params:
            return False
        with self._held_lock:
            if state.subs_text < 0:
                return False  # the keyring let go of it while this pull ran: nothing would give this back
            if len(cache) >= 256 or state.subs_text + size > self.max_token_subs_text:
                self._subs_text -= state.subs_text
                cache.clear()
                state.subs_text = 0
            if self._subs_text + size > self.max_subs_text:
                return False
            cache[ck] = filters
            state.subs_text += size
            self._subs_text += size
        return True

    def _forget_token(self, state):
        """The keyring let go of ``state``: its resolved subscriptions no longer count."""
        with self._held_lock:
            self._subs_text -= state.subs_text
            state.subs_text = -1  # gone: a pull of it still running keeps nothing more (_cache_sub)
            state.subs = None

    def _compile_sub(self, state, sid, name, params):
        """Call the app's subscription function and turn its answer into filters; _SubRefused if it says no."""
        fn = self.subscriptions.get(name)
        if fn is None:
            # The names the app defines are for its developers, not for whoever holds a token: the
            # log lists them (once per unknown name, for the first few), the client hears only no.
            shown = name[:64]  # kept and logged cut short: a token holder chooses the name's length
            if shown not in self._unknown_subs and len(self._unknown_subs) < 64:
                self._unknown_subs.add(shown)
                log.warning("a client asked for subscription %r, which this server does not define (it has: %s)%s",
                            shown, ", ".join(sorted(self.subscriptions)) or "none",
                            "; further unknown names are not logged" if len(self._unknown_subs) == 64 else "")
            raise _SubRefused(sid, "no subscription %r on this server (its log names the ones it has)" % shown,
                              "invalid")
        where = "the @subscription('%s') function" % name
        try:
            tables = fn(SubscriptionContext(name, state), params)
        except DSNError as e:
            raise _SubRefused(sid, e.message, e.code if e.code in ("forbidden", "invalid") else "invalid")
        except PermissionError as e:
            raise _SubRefused(sid, str(e) or "subscription %r refused" % name, "forbidden")
        except KeyError as e:
            raise _SubRefused(sid, "subscription %r: missing parameter %s" % (name, e), "invalid")
        except (ValueError, TypeError) as e:
            raise _SubRefused(sid, "subscription %r: %s" % (name, e), "invalid")
        except Exception:
            log.exception("%s raised", where)
            raise _SubRefused(sid, "subscription %r failed on the server" % name, "invalid")
        # What is logged here may be built from the client's params: cut short, so a client cannot
        # write 64 KiB into the log with every pull.
        if not isinstance(tables, dict) or not tables:
            log.error("%s returned %s; it must return {table: filter}", where, repr(tables)[:300])
            raise _SubRefused(sid, "subscription %r failed on the server" % name, "invalid")
        filters = {}
        for table, spec in tables.items():
            if state.read is not None and table not in state.read:
                raise _SubRefused(sid, "this token may not read table %r" % (table,), "forbidden")
            tspec = self.store.tables.get(table)
            try:
                if tspec is None:
                    raise TypeError("there is no table %r" % (table,))
                filters[table] = _Filter(table, spec, tspec["key"])
            except (TypeError, ValueError) as e:  # ValueError: NaN or infinity, which JSON cannot say
                log.error("%s returned a bad filter: %s", where, str(e)[:300])
                raise _SubRefused(sid, "subscription %r failed on the server" % name, "invalid")
            self.store.track(table, filters[table].fields)
        return filters

    def _sub_pull(self, state, nonce, ep, request, subs, wait):
        """A pull in subscription mode: full reset, schema, a new subscription's rows, or filtered changes."""
        store = self.store
        since, nxt = request.get("since"), request.get("next")
        if since is None or store.needs_reset(since):
            return self._sub_page(state, nonce, ep, subs, nxt if since is None else None, None)
        held = since.get("subs", [])
        if not isinstance(held, list) or not all(isinstance(h, str) and h in subs for h in held):
            raise ProtocolError("`since.subs` lists the ids in `subs` whose rows the client holds")
        seq, sv = since["seq"], since["sv"]
        if sv == store.sv:
            new = sorted(set(subs) - set(held))
            if new:
                return self._sub_page(state, nonce, ep, subs, nxt, new)
        held = self._held(subs, held)
        found = store.changes_since(seq, self.page_size, self.view(state), held)
        if found[0] is None:  # too far behind to be told change by change: its subscriptions again
            return self._sub_page(state, nonce, ep, subs, None, None)
        if not found[0] and wait > 0 and sv == store.sv and found[1] == store.seq:
            return _Wait(state, nonce, ep, found[1], sv, time.monotonic() + wait, request.get("stream") is True, held)
        return self._changes_answer(state, nonce, ep, seq, sv, found)

    def _held(self, subs, held):
        """The _Subscriptions of ``held``, one object per distinct set of resolved filters.

        Built once, not per pull (an ``in`` filter of a thousand values is a
        thousand routes), and shared: the feed answers waits with the same
        set, cursor and view with one changes_since().  The cache holds its
        filters, so their ids, its key, are not reused while it lives.

        A set with a subscription whose params were too long for the token's
        cache (max_cached_params) is not kept: resolved anew for every pull,
        its filters are new objects each time, and no later pull could find
        it (a few thousand such sets of thousands of values would hold
        gigabytes).  The rest are bounded by their filters' values: past
        ``max_held_routes`` in all the cache starts again, and a set larger
        than that is not kept.
        """
        key = tuple((h, id(subs[h])) for h in sorted(set(held)))
        found = self._held_sets.get(key)
        if found is None:
            found = _Subscriptions([(h, subs[h]) for h, _ in key])
            if getattr(subs, "fresh", None) and any(h in subs.fresh for h, _ in key):
                return found
            size, text = 1, 0
            for _, filters in found.items:
                for f in filters.values():
                    for values in ((f.keys,) if f.keys is not None else f.fields.values()):
                        size += len(values)
                        text += sum(map(len, values))
            if size <= self.max_held_routes and text <= self.max_held_text:
                with self._held_lock:
                    if (self._held_routes + size > self.max_held_routes or self._held_text + text > self.max_held_text
                            or len(self._held_sets) >= 4096):
                        self._held_sets.clear()
                        self._held_routes = self._held_text = 0
                    self._held_sets[key] = found
                    self._held_routes += size
                    self._held_text += text
        return found

    def _sub_page(self, state, nonce, ep, subs, nxt, new):
        """A page of a full reset of the set (``new`` None) or of the partial reset of ``new[0]``.

        ``next`` is ``epoch.snap.after.id``.  A full reset walks the ids in
        order, each at least one page; an id the client dropped meanwhile is
        passed over.
        """
        store = self.store
        order = new if new is not None else sorted(subs)
        snap = sid = None
        if isinstance(nxt, str):
            parts = nxt.split(".")
            if (len(parts) == 4 and parts[0] == store.epoch and _DIGITS.fullmatch(parts[1])
                    and _DIGITS.fullmatch(parts[2]) and int(parts[2]) <= int(parts[1])):
                snap, after, sid = int(parts[1]), int(parts[2]), parts[3]
                if snap > store.seq and store.shared:
                    store.catch_up()  # another node handed out that page
                if snap > store.seq:
                    snap = None
                elif sid not in order:  # dropped meanwhile: on to the next one
                    later = [i for i in order if i > sid]
                    sid, after = (later[0] if later else None), 0
                    if sid is None and new is not None:
                        snap = None
        if snap is None:
            snap, after, sid = self._fresh_seq(), 0, (order[0] if order else None)
        if sid is None:
            records, last, more = b"{}", snap, False
        else:
            records, last, more = store.subscription_page(subs[sid], snap, after, self.page_size, self.view(state))
        nxt = "%s.%d.%d.%s" % (store.epoch, snap, last, sid) if more else None
        if not more and new is None and sid is not None:
            later = [i for i in order if i > sid]
            if later:
                more, nxt = True, "%s.%d.0.%s" % (store.epoch, snap, later[0])
        with store.lock:
            result = {"reset": True, "sub": sid, "epoch": store.epoch, "seq": snap, "more": more, "next": nxt}
            if new is not None:
                result["partial"] = True
            else:
                result.update(sv=store.sv, tables=self._visible_tables(state))
        return self._seal(state, nonce, ep, result, b',"records":' + records)

    # -- writes ---------------------------------------------------------------
    def clean(self, table, key, data, spec, encode=_json_dumps):
        """Validate a write's data against the table's schema.

        Returns ``(data without the key field, its UTF-8 JSON)``: the JSON is
        what the store keeps, so it is encoded once, here.  ``encode`` is the
        backend's JSON encoder (``DSNSync(json_default=...)`` makes one that
        converts more types); client data is plain JSON already.
        """
        if not isinstance(data, dict):
            raise Invalid("data for %s/%s must be an object, got %s" % (table, key, type(data).__name__))
        keyfield = spec["key"]
        if keyfield in data:
            if data[keyfield] != key:
                raise Invalid("data repeats the key field %r as %r but the key is %r" % (keyfield, data[keyfield], key))
            data = {k: v for k, v in data.items() if k != keyfield}
        if len(data) > self.max_fields:
            raise Invalid("record %s/%s has %d fields; the limit is %d" % (table, key, len(data), self.max_fields))
        fields = spec["fields"]
        if fields is not None:
            allowed = self._fieldsets.get(table)
            if allowed is None or allowed[0] is not fields:
                allowed = self._fieldsets[table] = (fields, frozenset(fields))
            unknown = [k for k in data if k not in allowed[1]]
            if unknown:
                raise Invalid("unknown field%s %s for table %r (its fields: %s)" % (
                    "s" if len(unknown) > 1 else "", ", ".join(map(repr, sorted(unknown))), table, ", ".join(fields)))
        for field in data:
            if not isinstance(field, str):
                raise Invalid("field names are strings; %s/%s has %r" % (table, key, field))
        try:
            # A lone surrogate cannot be UTF-8: refused here.
            encoded = encode(data).encode("utf-8")
        except RecursionError:  # the C encoder stops a thousand levels down (or at a cycle), unharmed
            raise Invalid("record %s/%s nests deeper than %d levels" % (table, key, MAX_DEPTH))
        except (TypeError, ValueError) as e:
            if isinstance(e, ValueError) and "Out of range float" in str(e):
                raise Invalid("record %s/%s holds NaN or Infinity, which JSON (and JSON.parse in the browser) "
                              "has no value for: store None or a string instead" % (table, key))
            raise Invalid("record %s/%s is not JSON-serialisable: %s. Convert the value first (str() a "
                          "datetime, list() a set), or pass DSNSync(json_default=dsn_sync.json_default)"
                          % (table, key, e))
        # Nesting deeper than MAX_DEPTH takes more brackets than that: the walk (Python) runs only
        # when the text (counted in C) has them.
        if encoded.count(b"[") + encoded.count(b"{") > MAX_DEPTH and _too_deep(data):
            raise Invalid("record %s/%s nests deeper than %d levels" % (table, key, MAX_DEPTH))
        if encode is not _json_dumps and encode is not _json_checked:
            data = _loads(encoded)  # the record as clients will see it, converted values included
        if len(encoded) > self.max_record:
            raise Invalid("record %s/%s is %d bytes of JSON; the limit is %d (max_record)"
                          % (table, key, len(encoded), self.max_record))
        return data, encoded

    def _write(self, state, m):
        """One client write, applied at most once per (token, mid); its answer dict."""
        mid = m.get("mid")
        if not isinstance(mid, str) or not 0 < len(mid) <= MAX_MID_LENGTH:
            raise ProtocolError("every write needs `mid`, a string of 1 to %d characters" % MAX_MID_LENGTH)
        if not mid.isascii():
            try:
                mid.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate, which no store can file
                raise ProtocolError("`mid` is not valid Unicode (it holds a lone surrogate)")
        store = self.store
        view = self.view(state)
        table, key = m.get("table"), m.get("key")
        try:
            # On PostgreSQL the key's lock on this node comes first, before the mid's hold leases
            # a connection: writes queued behind one key's slow handler hold no connection each.
            # Only for a write the request alone does not refuse: a token that may not write
            # there is answered at once, never queued behind another user's key.
            first = (store.shared and type(table) is str and type(key) is str and 0 < len(key) <= MAX_KEY_LENGTH
                     and (state.write is None or table in state.write) and table in store.tables
                     and ((table, m.get("op")) in self.handlers or self.any_table))
            with store.hold_first(("key", table, key)) if first else contextlib.nullcontext():
                return self._write_held(state, m, mid, view)
        except StoreError:
            # Not the write's answer: nothing was applied, nothing is remembered, and a retry
            # with the same mid may succeed.  The details (paths, SQLite's words) stay here.
            log.exception("the store failed a client write; answering 503")
            raise _HTTPFault(503, "store failure")

    def _write_held(self, state, m, mid, view):
        """_write() under its mid's hold."""
        store = self.store
        # Held across recall -> handler -> apply on every node: a retry of this mid waits for
        # the first attempt (wherever it runs), then finds its answer.  One recall, under the
        # hold, is enough: a twin that finished before is found, and none can finish after.
        with store.hold(("mid", state.jti, mid)):
            answer = store.recall(state.jti, mid, view)  # its record as this token may read it now
            if answer is None:
                try:
                    checked = self._check_write(state, m)
                except DSNError as e:
                    if isinstance(e, StoreError):
                        raise
                    # Refused on the request alone (rights, table, key, data): a retry gets the same
                    # answer without a ledger entry, so a token that may write nothing writes nothing,
                    # not even there (it could otherwise push others' answers out of the ledger).
                    return _error_answer(e)
                try:
                    answer = self._apply_write(state, mid, *checked)
                except DSNError as e:
                    if isinstance(e, StoreError):
                        raise
                    answer = _error_answer(e)
                    store.remember(state.jti, mid, answer, state.sub)
        return answer

    def _closed_hint(self):
        """For a server with no handlers at all (the quick server with writes closed): how to open them."""
        if self.handlers or self.any_table:
            return ""
        return ("; client writes are closed on this server, which has no handlers (in development, "
                "python3 -m dsn_sync --open-writes, or DSNSync(open_writes=True), accepts them)")

    def _check_write(self, state, m):
        """A client write's checks on the request alone: (op, table, key, spec, handler, data, its JSON)."""
        op, table, key = m.get("op"), m.get("table"), m.get("key")
        if op not in _WRITE_OPS:
            raise ProtocolError("unknown write op %r" % (op,))
        if not isinstance(table, str):
            raise Invalid("`table` must be a string")
        if state.write is not None and table not in state.write:
            raise ProtocolError("this token may not write to table %r (it may write to %s; the backend grants "
                                "writes when it issues a token: issue_token(sub=..., write=[%r]))"
                                % (table, ", ".join(map(repr, sorted(state.write))) or "no table", table), "forbidden")
        spec = self.store.tables.get(table)
        if spec is None and self.any_table and _TABLE_RE.fullmatch(table):
            with self.store.lock:  # the count and the new table in one step, whatever other writes do
                if table not in self.store.tables:
                    if len(self.store.tables) >= self.max_tables:
                        raise Invalid("this server already has %d tables (max_tables): a write cannot add table %r"
                                      % (self.max_tables, table))
                    self.store.set_table(table, {"key": "id", "fields": None})
            spec = self.store.tables.get(table)
        if spec is None:
            raise UnknownTable("no table %r on this server (the backend makes its tables with define_table() "
                               "or sync())%s" % (table, self._closed_hint()))
        handler = self.handlers.get((table, op))
        if handler is None and not self.any_table:
            raise ProtocolError("table %r accepts no %s from clients: the backend has no @on_%s('%s') handler%s"
                                % (table, op, op, table, self._closed_hint()), "no_handler")
        try:
            check_key(key)
        except ValueError as e:
            raise Invalid(str(e))
        data, encoded = self.clean(table, key, m.get("data"), spec) if op != "delete" else (None, None)
        return op, table, key, spec, handler, data, encoded

    def _apply_write(self, state, mid, op, table, key, spec, handler, data, encoded):
        """A checked write, under its key's hold: the handler, then the store; its answer dict."""
        with self.store.hold(("key", table, key)):  # after the mid's hold, never before: no deadlock
            present = self.store.exists(table, key)
            if op == "create" and present:
                raise Exists("%s/%s already exists" % (table, key))
            if op != "create" and not present:
                raise NotFound("%s/%s does not exist" % (table, key))
            if handler is not None:
                given = {spec["key"]: key}
                if data:
                    given.update(data)
                result = self._call_handler(handler, given, WriteContext(op, table, key, state.claims, mid))
                if isinstance(result, dict) and op != "delete":
                    try:
                        data, encoded = self.clean(table, key, result, spec)
                    except Invalid as e:
                        log.error("the @on_%s('%s') handler returned a bad record: %s", op, table, e)
                        raise ProtocolError("the backend's handler failed", "handler_error")
            seq, record = self.store.apply(table, key, op, data, ledger=(state.jti, mid, state.sub), encoded=encoded)
        # The stored record goes back only as a pull would carry it: a token that may not read
        # the row (its read rights, a @can_read rule) gets `record: null`, still ok.  Without a
        # rule the record apply() returned is that already (no second decode on the hot path).
        view = self.view(state)
        if not view.may_see_table(table):
            record = None
        elif view.rules and table in view.rules:
            record = self.store.read_visible(table, key, view)
        return {"ok": True, "epoch": self.store.epoch, "seq": seq, "record": record}

    def _call_handler(self, handler, data, ctx):
        fn, wants_ctx = handler
        try:
            result = fn(data, ctx) if wants_ctx else fn(data)
        except DSNError as e:
            if e.code in _HANDLER_CODES:
                raise ProtocolError(e.message, e.code)
            log.error("the @on_%s('%s') handler raised DSNError with code %r for key %r; a handler may use only "
                      "%s, so the client gets handler_error", ctx.op, ctx.table, e.code, ctx.key,
                      ", ".join(sorted(_HANDLER_CODES)))
            raise ProtocolError("the backend's handler failed", "handler_error")
        except Exception:
            log.exception("the @on_%s('%s') handler raised for key %r", ctx.op, ctx.table, ctx.key)
            raise ProtocolError("the backend's handler failed", "handler_error")
        if result is False:
            raise ProtocolError("the backend refused this %s of %s/%s" % (ctx.op, ctx.table, ctx.key), "rejected")
        return result

    def _batch(self, state, request):
        mutations = request.get("mutations")
        if not isinstance(mutations, list) or not mutations:
            raise ProtocolError("`mutations` must be a non-empty list")
        if len(mutations) > self.max_batch:
            raise ProtocolError("a batch holds at most %d mutations, got %d" % (self.max_batch, len(mutations)))
        results = []
        for m in mutations:  # one at a time: a mutation's holds are given back before the next takes its own
            try:
                if not isinstance(m, dict):
                    raise ProtocolError("a mutation is an object")
                results.append(self._write(state, m))
            except DSNError as e:
                results.append(_error_answer(e))
        return {"results": results}


# =============================================================================
# The feed: parked pulls, answered when the store changes
# =============================================================================


class Transport:
    """What the feed needs from a transport (the socket server; the WSGI and ASGI mounts).

    A transport turns requests into ``_Engine.handle`` calls and sends what
    comes back.  For a ``_Wait`` it sets ``wait.transport`` to itself and
    ``wait.conn`` to its own handle, and calls ``_Feed.park(wait)``; from then
    on the feed thread owns the wait and answers it through these methods,
    each called from the feed thread only and each of which must return at
    once (never wait on a client):

    - ``deliver(wait, body)``: send ``body`` as the whole 200 answer, then the
      request is over (the connection carries on or closes, the transport's choice).
    - ``chunk(wait, body)``: send one message of a streamed pull (PROTOCOL.md 6);
      the first call sends the headers.  True if it was taken; False if the
      client cannot take more now (the feed tries again later, with the
      latest state) or is gone (the transport then closes it).
    - ``room(wait)``: False if ``chunk`` would refuse a message now (the client is
      behind, or a budget is full): the feed then neither builds nor seals one.
    - ``end(wait)``: finish a streamed pull whose ``wait`` ran out.
    - ``alive(wait)``: False if the client went away (the feed drops the wait).
    - ``close_wait(wait)``: abandon the request after an unexpected error.
    - ``closing()``: True once the server the transport runs in has begun to shut
      down; its pulls are then answered at once, as if their waits had run out
      (asked before a pull parks and four times a second while pulls wait).

    A transport may rely on: one feed thread; each wait answered exactly once
    (``deliver``, or ``chunk``s then ``end``, or ``close_wait``), or dropped
    after ``alive`` said False or ``_Feed.stop``.
    """

    def deliver(self, wait, body):
        raise NotImplementedError

    def chunk(self, wait, body):
        raise NotImplementedError

    def room(self, wait):
        return True

    def end(self, wait):
        raise NotImplementedError

    def alive(self, wait):
        raise NotImplementedError

    def close_wait(self, wait):
        raise NotImplementedError

    def closing(self):
        return False


def _server_exiting():
    """True once the server that runs this process's mount has begun a graceful shutdown.

    Such a server waits for every request to end before it tells the app
    (the ASGI lifespan's shutdown comes after), so pulls held up to 25 s
    would hold a Ctrl-C, a reload or a deploy that long.  It is read, never
    patched, from the SIGTERM handler the server installed: uvicorn's Server
    sets ``should_exit``, a gunicorn worker clears ``alive``.  Any other
    server: False (its pulls end when their waits run out).
    """
    server = _sigterm_owner()
    if server is None:
        return False
    return getattr(server, "should_exit", None) is True or getattr(server, "alive", None) is False


def _sigterm_owner():
    """The object whose method is this process's SIGTERM handler, or None: the server that runs the
    app installs one (uvicorn's Server, a gunicorn worker), and what it holds tells the mount about
    it (_server_exiting, _server_threads, _in_uvicorn_worker).  Read, never patched."""
    import signal
    try:
        return getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    except (ValueError, AttributeError):  # no SIGTERM here
        return None


class _Feed:
    """Parked long-polls and the one thread that answers them.

    Waking a thousand threads on a Condition costs a thousand GIL hand-offs
    and starves the producer; one thread walking a list does not.  Each pass
    (``run``): wait for work, take the ready pulls, answer them, re-park the
    streams.  Pulls at the same cursor with the same view share one
    ``changes_since()`` and its pre-encoded fragments; each answer is then a
    small JSON header, a seal bound to its request's nonce, and a hand-off to
    the transport.  A streamed pull stays parked after each message, at its
    new cursor, until its ``wait`` runs out.

    Capped twice: ``max_waiting`` in all, ``max_waiting_per_user`` for the tokens
    of one ``sub`` together (one user's tabs and devices, however many tokens the
    app has issued them); over a cap ``park`` raises _HTTPFault(503).
    """

    # Seconds between two messages of one streamed pull, per parked pull: about what
    # one message costs the feed thread here (seal, send: 30-50 us), so a thousand
    # streams are answered about every 50 ms each (a round), coalesced to their latest
    # state, and a hundred every 5 ms; each stream at its own phase of the round, so
    # they go a few at a time all through it.  0 sends every change to every stream.
    stream_spacing = 0.00005
    sweep_every = 0.25  # how late an expired long-poll may be answered, at most
    liveness_every = 2.0  # how often departed clients give their slot back
    retry_busy = 0.05  # seconds before a stream whose client is behind is offered the latest state again
    # Seconds at least between two passes that only the spacing calls for: every pass reads
    # every parked pull and wakes the transports, so passes of a few streams each are spent
    # on that; with a hundred streams, a pass every 0.6 ms cost up to a fifth of a core more.
    pass_gap = 0.002

    def __init__(self, engine, max_waiting=10000, max_waiting_per_user=16):
        self.engine = engine
        self.store = engine.store
        self.max_waiting = max_waiting
        self.max_waiting_per_user = max_waiting_per_user
        self.stopping = False
        self._parked = []
        self._by_user = collections.Counter()  # parked pulls per sub (the app's own tokens, sub None, are not counted)
        self._have_parked = threading.Condition(self.store.lock)
        self._routed_to = 0  # the store seq up to which the routes log has been read
        self._streams = 0  # streamed pulls parked so far (their phases)
        self._transports = set()  # every transport that has parked a pull (asked whether it is closing)

    # -- for transports -------------------------------------------------------
    def park(self, wait):
        """Hold a pull until a change, a schema change, stop() or its deadline; False if already stale
        (or its transport is closing: answered at once, as if its wait had run out)."""
        if wait.transport.closing():
            return False
        store = self.store
        with store.lock:
            if self.stopping or store.seq != wait.seq or store.sv != wait.sv:
                return False
            if len(self._parked) >= self.max_waiting:
                raise _HTTPFault(503, "too many long-polls held")
            user = wait.state.sub
            if user is not None:
                if self._by_user[user] >= self.max_waiting_per_user:
                    raise _HTTPFault(503, "too many long-polls held for one user")
                self._by_user[user] += 1
            if wait.stream:
                # Phases by the golden ratio spread any number of streams evenly over a round.
                self._streams += 1
                wait.phase = self._streams * 0.6180339887498949 % 1.0
            self._parked.append(wait)
            self._transports.add(wait.transport)
            if len(self._parked) == 1:
                self._have_parked.notify()
            return True

    @property
    def waiting(self):
        return len(self._parked)

    def stop(self):
        """Drop every parked pull, each closed by its transport, and wake the feed thread to return."""
        with self.store.lock:
            self.stopping = True
            parked, self._parked = self._parked, []
            self._by_user.clear()
            self.store.changed.notify_all()
            self._have_parked.notify_all()
        for w in parked:  # a WSGI thread blocked on its wait must be let go
            try:
                w.transport.close_wait(w)
            except Exception:
                log.exception("closing a long-poll at stop")

    # -- the feed thread ------------------------------------------------------
    def run(self):
        """The feed thread's body; an unexpected error is logged and the loop carries on."""
        while not self.stopping:
            try:
                return self._loop()
            except Exception:
                log.exception("the feed thread hit an unexpected error; it carries on")
                time.sleep(0.05)

    def _loop(self):
        now = time.monotonic()
        next_sweep, next_liveness = now + self.sweep_every, now + self.sweep_every + self.liveness_every
        next_due = None  # when the earliest stream with news, held back by its spacing, may send again
        not_before = now  # spacing wakes the feed at most once per spacing / 8 or pass_gap (a write may sooner)
        with self.store.lock:
            seen = (self.store.seq, self.store.sv)
        while True:
            wake = next_sweep if next_due is None else min(next_sweep, max(next_due, not_before))
            if not self._wait_for_work(seen, wake):
                return
            if time.monotonic() >= next_sweep:
                self._expire_closing()
            ready, next_due, seen, spacing, now = self._take_ready()
            not_before = now + max(spacing / 8, self.pass_gap)
            if now >= next_sweep:
                next_sweep = now + self.sweep_every
                if now >= next_liveness:
                    next_liveness = now + self.liveness_every
                    self.drop_departed()
            again = self._answer(ready, seen, spacing, now)
            if again:
                due = self._repark(again)  # None once stopping
                if due is not None:
                    next_due = due if next_due is None else min(next_due, due)

    def _wait_for_work(self, seen, wake):
        """Sleep until the store moves past ``seen`` or ``wake`` (monotonic) comes; False on stop."""
        store = self.store
        with store.lock:
            while not self.stopping:
                if not self._parked:
                    # Nothing to answer: sleep where changes do not wake us (a write-only
                    # load would otherwise wake this thread for every write).
                    self._have_parked.wait(1.0)
                    return True if self._parked and (store.seq, store.sv) != seen else not self.stopping
                if (store.seq, store.sv) != seen:
                    return True
                now = time.monotonic()
                if now >= wake:
                    return True
                store.changed.wait(wake - now)
            return False

    def _take_ready(self):
        """Unpark the pulls to answer now: expired, or behind the store and not held by spacing."""
        store = self.store
        with store.lock:
            seq, sv, now = store.seq, store.sv, time.monotonic()
            routed_to = self._routed_to
            touched = _touched(store.routes, routed_to, seq)
            self._routed_to = seq
            ready, keep = [], []
            next_due = None
            for w in self._parked:
                moved = _concerns(w, seq, sv, touched, routed_to)
                if w.deadline <= now or (moved and w.due <= now):
                    ready.append(w)
                else:
                    keep.append(w)
                    if moved and (next_due is None or w.due < next_due):  # held by its spacing (due > now)
                        next_due = w.due  # (one with nothing new waits for a write, which wakes the feed)
            self._parked = keep
            # A stream's messages are spaced by stream_spacing per parked pull: the
            # server answers each pass within its means, and a subscriber gets the
            # latest state at that pace instead of a backlog of every change.
            spacing = self.stream_spacing * (len(keep) + len(ready))
            for w in ready:
                self._uncount(w)
        return ready, next_due, (seq, sv), spacing, now

    def _answer(self, ready, seen, spacing, now):
        """Answer each ready pull; returns the streams to park again."""
        engine, store = self.engine, self.store
        now_s = time.time()
        shared = {}
        again = []
        revoked = engine.revoked
        for w in ready:
            transport = w.transport
            try:
                exp = w.state.exp
                if w.state.jti in revoked:
                    # Revoked while it waited: it is told nothing more (its next request gets 401).
                    transport.close_wait(w)
                    continue
                if exp is not None and now_s >= exp:
                    # Expired while it waited: told so, sealed, as its next request would be (PROTOCOL.md
                    # 4), not cut off as if the server were down. A stream that has sent messages ends
                    # (its messages are changes answers); the pull after it gets `expired`.
                    if w.stream and w.sent:
                        transport.end(w)
                    else:
                        transport.deliver(w, engine.answer_expired(w))
                    continue
                if w.stream and w.deadline <= now and w.sent:
                    transport.end(w)
                    continue
                view = engine.view(w.state)
                # Rules see every claim but the token's id and times (rules_key, as the answers
                # cached on each row): only pulls of the same claims share their answers.
                group = (w.seq, view.tables, view.rules_key if view.rules else None, id(w.subs))
                found = shared.get(group)
                if found is None:
                    found = shared[group] = store.changes_since(w.seq, engine.page_size, view, w.subs)
                if w.subs is not None and found[0] is None:  # too far behind: its next pull gets a reset
                    if w.stream and w.sent:
                        transport.end(w)
                    else:
                        transport.deliver(w, engine.answer_wait(w, found))
                    continue
                if (w.subs is not None and not found[0] and w.deadline > now
                        and found[1] == seen[0] and w.sv == seen[1]):
                    w.seq = found[1]  # nothing it subscribes to: it waits on, at the newer cursor
                    w.due = now
                    again.append(w)
                    continue
                if not w.stream or w.deadline <= now:
                    transport.deliver(w, engine.answer_wait(w, found))
                    continue
                if transport.room(w) and transport.chunk(w, engine.answer_wait(w, found, w.sent)):
                    w.sent += 1
                    w.seq, w.sv = found[1], seen[1]
                    # Its next turn: a round after its last one while it keeps its place; else (its
                    # first message, or after a quiet spell or a late pass) at its phase of the
                    # round after half a round from now. The streams that one write made ready
                    # all at once then spread over the next round, in passes of a few, instead
                    # of staying one burst whose last message waits for all the others; a feed
                    # that falls behind spaces them by about a round plus its delay.
                    t = time.monotonic()
                    due = w.due + spacing
                    w.due = due if due >= t + spacing / 2 else t + spacing * (0.5 + w.phase)
                elif transport.alive(w):
                    w.due = now + self.retry_busy  # the client is behind: the latest state, later
                else:
                    continue
                again.append(w)
            except Exception:
                log.exception("unexpected error answering a long-poll")
                transport.close_wait(w)
        return again

    def _repark(self, again):
        with self.store.lock:
            stopping = self.stopping
            if not stopping:
                for w in again:
                    if w.state.sub is not None:
                        self._by_user[w.state.sub] += 1
                self._parked.extend(again)
        if stopping:  # stop() emptied the list while these were out being answered: closed like the rest
            for w in again:
                try:
                    w.transport.close_wait(w)
                except Exception:
                    log.exception("closing a long-poll at stop")
            return None
        return min(w.due for w in again)

    def _expire_closing(self):
        """Let the pulls of transports whose server is shutting down go now (``Transport.closing``)."""
        with self.store.lock:
            transports = list(self._transports)
        closing = [transport for transport in transports if transport.closing()]
        if closing:
            with self.store.lock:
                for w in self._parked:
                    if w.transport in closing:
                        w.deadline = 0.0  # answered by this pass: a long-poll empty, a stream ended

    def drop_departed(self):
        """Give back the slots of parked pulls whose clients left (their transport's ``alive`` says False)."""
        with self.store.lock:
            parked = list(self._parked)
        dead = {id(w) for w in parked if not w.transport.alive(w)}
        if dead:
            with self.store.lock:
                gone = [w for w in self._parked if id(w) in dead]
                self._parked = [w for w in self._parked if id(w) not in dead]
                for w in gone:
                    self._uncount(w)
            log.debug("dropped %d long-polls whose clients left", len(gone))

    def _uncount(self, w):
        user = w.state.sub
        if user is not None:
            self._by_user[user] -= 1
            if not self._by_user[user]:
                del self._by_user[user]


# =============================================================================
# HTTP handler and server: the socketserver transport
# =============================================================================

_REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Payload Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_TOKEN_CHARS = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2: a header name is a token
_OPTIONS_HEADERS = ("Access-Control-Allow-Methods: POST\r\nAccess-Control-Allow-Headers: Content-Type\r\n"
                    "Access-Control-Max-Age: 86400\r\n")
_FRAME_TYPE = "application/octet-stream"
_HOME = """<!doctype html><meta charset="utf-8"><title>dsn-sync</title>
<body style="font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em">
<h1>dsn-sync %s</h1>
<p>This is a dsn-sync server: browsers mirror its tables into IndexedDB through
<a href="dsn_client.js"><code>dsn_client.js</code></a> (beside this page, under any mount prefix), over
sealed POSTs to its sync URL.</p>
<p>The live inspector is at <code>&lt;sync URL&gt;/inspect</code>; the server printed both when it started.</p>
</body>"""


def _ready(sock, write, timeout):
    """Wait up to ``timeout`` s for one socket to be readable (or writable); True if it is.

    poll(), not select(): select() cannot watch a descriptor above 1023, and a
    server with a thousand clients has those.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(int(timeout * 1000)))
    ready = select.select([], [sock], [], timeout) if write else select.select([sock], [], [], timeout)
    return bool(ready[0] or ready[1])


_LENGTH = re.compile(r"[0-9]+")


def _content_length(headers):
    """Content-Length as an int; ValueError unless it is plain digits (int() would take '1_0' or '+1').
    Digits past 19 are a length over any limit (413, PROTOCOL.md 3), not a malformed one."""
    value = headers.get("content-length", "")
    if not _LENGTH.fullmatch(value):
        raise ValueError("bad Content-Length %r" % value)
    digits = value.lstrip("0")  # 1*DIGIT: leading zeros are allowed, and say nothing of the size
    return int(digits or "0") if len(digits) <= 19 else 1 << 63


def _parse_head(head):
    """(method, path, headers, keep_alive) of a request head, strictly (RFC 9112); _HTTPFault(400) otherwise.

    Anything a proxy in front could read differently is refused, never
    guessed at: a bare CR or LF, a folded line, white space before a colon,
    a second Content-Length, a missing Host.
    """
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    if "\r" in text.replace("\r\n", "") or any("\n" in line for line in lines):
        raise _HTTPFault(400, "bare CR or LF in the head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _HTTPFault(400, "bad request line")
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_CHARS.fullmatch(name):  # also a folded line, or a space before the colon
            raise _HTTPFault(400, "bad header line")
        name, value = name.lower(), value.strip(" \t")
        if name in headers and (name in ("content-length", "host", "transfer-encoding")):
            raise _HTTPFault(400, "repeated %s" % name)  # smuggling, or a broken client
        headers[name] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise _HTTPFault(400, "no Host")
    if target.startswith(("http://", "https://")):  # absolute form (RFC 9112 3.2.2)
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    elif not target.startswith("/") and not (method == "OPTIONS" and target == "*"):
        raise _HTTPFault(400, "bad request target")
    conn = headers.get("connection", "").lower()
    keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
    return method, target.split("?", 1)[0], headers, keep_alive


def _prefix_left(base, path):
    """The mount prefix still in front of a mounted door's ``path`` (``/dsn`` of ``/dsn/sync/<instance>``
    or ``/dsn/dsn_client.js``), or None: the app in front did not hand it over as root_path or SCRIPT_NAME."""
    at = path.rfind(base)
    if at > 0 and path[at + len(base):at + len(base) + 1] in ("", "/"):
        return path[:at]
    if path.endswith("/dsn_client.js") and len(path) > len("/dsn_client.js"):
        return path[:-len("/dsn_client.js")]
    return None


def _refusal(engine, static, max_body, method, path, headers):
    """The transport answer for a request that never reaches the engine, in PROTOCOL.md's order; None to go on.

    (status, body, extra headers, content type).  Shared by every transport:
    ``static(path, method, headers)`` answers GET and HEAD.
    """
    if method == "OPTIONS":
        return 204, b"", _OPTIONS_HEADERS, None
    if method in ("GET", "HEAD"):
        return static(path, method, headers)
    if method != "POST":
        return 405, b"", "Allow: GET, HEAD, POST, OPTIONS\r\n", None
    if not engine.known_path(path):
        return 404, b"", "", None
    if "transfer-encoding" in headers:
        return 411, b"", "", None
    try:
        length = _content_length(headers)
    except ValueError:
        return 411, b"", "", None
    if length > max_body:
        return 413, b"", "", None
    return None


def _origins(allow_origins):
    if allow_origins in ("*", None):
        return None
    return [allow_origins] if isinstance(allow_origins, str) else list(allow_origins)


def _cors(origins, origin):
    """The CORS header pairs for an answer.

    Nothing here rides on cookies or ambient credentials: every frame is
    sealed with the token's keys, so "*" exposes nothing a caller without
    the token could use.  A list narrows which pages may read answers.
    """
    if origins is None:
        return (("Access-Control-Allow-Origin", "*"),)
    return (("Access-Control-Allow-Origin", origin if origin in origins else origins[0]), ("Vary", "Origin"))


class _Conn:
    """One client connection: its socket, unparsed bytes, unsent bytes, and where it is in a request.

    One owner at a time: a worker, the reactor, or (while it waits) the feed.
    ``out`` is what the socket has not taken yet; the reactor writes it when
    the socket is ready, then does ``then``: "read" (keep-alive), "close",
    or "stream" (a streamed pull: the feed still owns the request).
    """

    __slots__ = ("sock", "raw", "tls", "buf", "deadline", "head", "started", "bytes_in", "served",
                 "lock", "out", "then", "reserved", "peer")

    def __init__(self, sock, tls, peer=None):
        self.sock = self.raw = sock
        self.tls = tls  # True until the TLS handshake is done (False without TLS)
        self.buf = bytearray()
        self.deadline = None
        self.head = None
        self.started = None  # when the request being read (or the TLS handshake) began
        self.bytes_in = 0
        self.served = 0  # requests answered on this connection
        self.lock = threading.Lock()  # guards out/then: the feed and the reactor both write streams
        self.out = None
        self.then = None
        self.reserved = 0  # bytes of the unread body counted against the server's body budget
        self.peer = peer  # the client's address (an IPv6 one by its /64): its share of that budget


def _peer(client_address):
    """The part of a client's address that one client may be assumed to own: an IPv4 address, an IPv6 /64."""
    host = client_address[0] if isinstance(client_address, tuple) and client_address else ""
    if ":" in host and not host.startswith("::ffff:"):
        try:
            return socket.inet_pton(socket.AF_INET6, host.split("%")[0])[:8]
        except (OSError, ValueError):
            pass
    return host


def _is_loopback(peer):
    """Is ``peer`` (as _peer gives it) this host: 127.0.0.0/8, ::1 (its /64), or an IPv4-mapped 127.x?"""
    if isinstance(peer, bytes):
        return peer == bytes(8)  # ::1's /64 is all zeros (so is ::/64, never a client's)
    return peer.startswith("127.") or peer.startswith("::ffff:127.")


def _within_descriptors(max_connections, reserve=64):
    """``max_connections``, within what the process's descriptor limit (ulimit -n) leaves room for.

    A connection over that limit could not even be accepted to be told 503:
    its client would hang.  The soft limit is raised toward the hard one as far
    as ``max_connections`` needs (as Go's runtime does at start); if that is
    not enough, fewer connections are served, with a warning.  ``reserve``
    descriptors stay for files, the store and pipes.
    """
    try:
        import resource  # Unix only
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return max_connections
    if soft != resource.RLIM_INFINITY and soft < max_connections + reserve:
        want = max_connections + reserve if hard == resource.RLIM_INFINITY else min(hard, max_connections + reserve)
        if want > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (OSError, ValueError):
                pass
    if soft == resource.RLIM_INFINITY or max_connections <= soft - reserve:
        return max_connections
    room = max(1, soft - reserve)
    log.warning("max_connections=%d is more than this process's descriptor limit (ulimit -n %d) allows; serving at "
                "most %d connections (raise the hard limit for more)", max_connections, soft, room)
    return room


class _Server(socketserver.TCPServer, Transport):
    """HTTP/1.1 keep-alive on socketserver; no thread is held by an idle, slow or waiting client.

    Remember (who runs what)::

        accept thread   serve_forever -> process_request     files each new connection for a worker
        workers (32)    worker -> _service -> _read_available -> _next_request:
                            _read_head -> _refusal (PROTOCOL.md order) -> _dispatch
                            -> engine.handle -> _send (or feed.park)
        reactor (1)     reactor: idle and half-read connections wait for bytes; unsent
                            answers wait for the socket to take them; deadlines cut both
        feed (1)        _Feed.run -> wait.transport.deliver / chunk / end / alive  (this class)

    A worker never waits on a client: it reads what a socket has, answers
    complete requests, and hands what the socket would not take to the
    reactor (``_send``), which cuts a connection that does not drain within
    ``body_timeout``.  Deadlines: ``header_timeout`` from a request's (or a TLS
    handshake's) first byte to the end of its headers, never renewed by partial
    progress; ``body_timeout`` for the body; ``idle_timeout`` between requests.
    Unread request bodies are bounded across all connections by
    ``max_buffered`` bytes (503 past it).  Every read is capped (``max_header``;
    ``max_body`` judged from Content-Length before the body is read).
    """

    allow_reuse_address = True
    request_queue_size = 1024
    max_header = 16384  # bytes of request line plus headers; frames carry everything else
    recv_size = 65536
    linger = 0.002  # seconds a worker waits for a keep-alive client's next request before handing it on
    max_pipeline = 16  # requests answered per worker turn; then the connection queues again behind others
    max_buffered = 64 << 20  # bytes of request bodies being received, across every connection
    max_buffered_per_address = 16 << 20  # of which one client address may hold (a proxy in front is one address)
    max_unsent = 256 << 20  # bytes of answers waiting for slow readers, across every connection
    max_unsent_per_address = 64 << 20  # of which one client address may hold
    # Connections one client address may hold: a quarter of max_connections, so one host holding
    # idle connections cannot take every slot (they close only at header_timeout); a loopback
    # address (a proxy on this host) is not capped. A proxy on another host is one address: there,
    # set this to max_connections.
    max_connections_per_address = None  # None: max_connections // 4

    def __init__(self, address, engine, feed, static, ssl_context, max_connections, max_body, allow_origins,
                 idle_timeout, header_timeout, body_timeout, workers=32, ipv6=False, reuse_port=False):
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.reuse_port = reuse_port
        self.engine = engine
        self.feed = feed
        self.static = static  # callable(path, method, headers) -> (status, body, extra, type) or None
        self.ssl_context = ssl_context
        self.max_connections = _within_descriptors(max_connections)
        if self.max_connections_per_address is None:
            self.max_connections_per_address = max(1, self.max_connections // 4)
        self._conns_by = {}  # {peer: its connections}, loopback peers not counted
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.workers = workers
        self.bytes_in = self.bytes_out = 0
        self._buffered = self._unsent = 0
        self._buffered_by = {}  # {peer: bytes of max_buffered it holds}
        self._unsent_by = {}  # {peer: bytes of max_unsent it holds}
        self._conns = set()
        self._lock = threading.Lock()
        self._work = queue.SimpleQueue()
        self._handed = collections.deque()  # connections handed to the reactor
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._wake_pending = False
        self._stopping = False
        self._origins = _origins(allow_origins)
        super().__init__(address, None)

    def server_bind(self):
        if self.reuse_port:  # several processes share the port; the kernel spreads connections
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    # -- the accept thread ----------------------------------------------------
    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors (the process's other files count too): the listening socket
                # stays readable, so retrying at once would spin; the next try comes shortly.
                time.sleep(0.1)
            raise  # socketserver skips this accept

    def process_request(self, request, client_address):
        """Called by the accept loop: file the connection for a worker; never blocks on the peer."""
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        request.setblocking(False)
        peer = _peer(client_address)
        counted = not _is_loopback(peer)
        with self._lock:
            by = self._conns_by
            full = len(self._conns) >= self.max_connections or (
                counted and by.get(peer, 0) >= self.max_connections_per_address)
            if not full:
                conn = _Conn(request, self.ssl_context is not None, peer)
                self._conns.add(conn)
                if counted:
                    by[peer] = by.get(peer, 0) + 1
        if full:
            try:
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                             + self.cors(None).encode() + b"Connection: close\r\n\r\n")
            except OSError:
                pass
            request.close()
            return
        conn.started = time.monotonic()  # a TLS handshake or first request must finish by header_timeout
        conn.deadline = conn.started + self.header_timeout
        self._work.put(conn)

    def handle_error(self, request, client_address):
        log.exception("unexpected error accepting a connection from %s", client_address)

    def stop(self):
        """Tell the reactor and the workers to return (DSNSync.stop joins them)."""
        self._stopping = True
        for _ in range(self.workers):
            self._work.put(None)
        self._wake()

    # -- the reactor thread ---------------------------------------------------
    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _to_reactor(self, conn):
        """Hand a connection to the reactor: to wait for bytes, or to drain ``conn.out``."""
        if conn.started is None and conn.out is None:
            conn.deadline = time.monotonic() + self.idle_timeout  # between requests
        self._handed.append(conn)  # append first, then look at the flag: the reactor clears it before draining
        if not self._wake_pending:
            # One wake-up byte per reactor turn, not per connection: the socketpair
            # send was 7 % of the server's samples under a write load.
            self._wake_pending = True
            self._wake()

    def reactor(self):
        selector = self._selector
        watched = {}
        next_sweep = time.monotonic() + 0.5
        while not self._stopping:
            try:
                events = selector.select(timeout=0.5)
            except (OSError, ValueError):
                if self._stopping:
                    return
                raise
            for key, mask in events:
                conn = key.data
                if conn is None:
                    self._drain_wake()
                    continue
                if mask & selectors.EVENT_WRITE:
                    sent = self._flush(conn)
                    if sent is None and (conn.deadline is None or conn.deadline > time.monotonic()):
                        continue  # more to send: keep watching
                selector.unregister(key.fileobj)
                del watched[conn]
                if conn.deadline is not None and conn.deadline <= time.monotonic():
                    self._close(conn)  # a trickle of bytes never renews a deadline
                elif mask & selectors.EVENT_WRITE:
                    self._after_flush(conn, *sent)
                else:
                    self._work.put(conn)
            now = time.monotonic()
            while self._handed:
                conn = self._handed.popleft()
                if conn.deadline is not None and conn.deadline <= now:
                    # A trickler's own bytes may hand it to a worker and back between two sweeps
                    # every time: its deadline is checked here too, not only by the sweep.
                    self._close(conn)
                    continue
                try:
                    selector.register(conn.sock, selectors.EVENT_WRITE if conn.out else selectors.EVENT_READ, conn)
                    watched[conn] = True
                except (ValueError, KeyError, OSError):
                    self._close(conn)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.5
                for conn in [c for c in watched if c.deadline is not None and c.deadline <= now]:
                    try:
                        selector.unregister(conn.sock)
                    except (ValueError, KeyError, OSError):
                        pass
                    del watched[conn]
                    self._close(conn)

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        self._wake_pending = False

    def _flush(self, conn):
        """Send what ``conn.out`` holds: None while some remains, else (all sent?, what to do next)."""
        with conn.lock:
            out, ok = conn.out, True
            while out:
                try:
                    sent = conn.sock.send(out[0])
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    return None
                except OSError:
                    ok = False
                    break
                with self._lock:
                    self.bytes_out += sent
                    self._count_unsent(conn.peer, -sent)
                if sent == len(out[0]):
                    out.popleft()
                else:
                    out[0] = memoryview(out[0])[sent:]
            if out:
                left = sum(map(len, out))
                with self._lock:
                    self._count_unsent(conn.peer, -left)
            then, conn.out, conn.then = conn.then, None, None
            return ok, then

    def _after_flush(self, conn, ok, then):
        """The reactor's next step for a connection whose answer is out (or whose peer left)."""
        if not ok or then == "close":
            return self._close(conn)
        if then == "stream":
            return None  # the feed owns the request still; a failed send shows in alive()
        if conn.buf:
            self._work.put(conn)
        else:
            self._to_reactor(conn)

    # -- the workers ----------------------------------------------------------
    def worker(self):
        while True:
            conn = self._work.get()
            if conn is None or self._stopping:
                return
            try:
                self._service(conn)
            except Exception:
                log.exception("unexpected error on a connection")
                self._close(conn)

    def _service(self, conn):
        """One turn of a connection in a worker: handshake, read, answer; never waits on the peer."""
        if conn.tls and not self._handshake(conn):
            return None
        sock = conn.sock
        for _ in range(self.max_pipeline):
            got = self._read_available(conn, sock)
            if got is None:
                return None
            if not got and conn.started is None:
                # Readable, yet nothing decoded: a partial TLS record.  It starts the
                # header deadline like a first byte does; trickling more never renews it.
                conn.started = time.monotonic()
                conn.deadline = conn.started + self.header_timeout
            outcome = self._answer_buffered(conn)
            if outcome is not True:
                return None
            # Answered, nothing buffered.  A busy client usually sends its next request
            # within a fraction of a millisecond: waiting briefly here (no GIL held)
            # saves the hand-off to the reactor and back (about a third of the server's
            # time under a write load), unless other connections are queued for a worker.
            if not self.linger or not self._work.empty() or not _ready(sock, False, self.linger):
                break
        return self._to_reactor(conn)

    def _handshake(self, conn):
        if conn.sock is conn.raw:
            conn.sock = self.ssl_context.wrap_socket(conn.raw, server_side=True, do_handshake_on_connect=False)
        try:
            conn.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self._to_reactor(conn)  # the deadline set at accept still runs: no renewal per step
            return False
        except (ssl.SSLError, OSError) as e:
            log.debug("TLS handshake failed: %s", e)
            self._close(conn)
            return False
        conn.tls = False
        return True

    def _read_available(self, conn, sock):
        """Read what the socket has without waiting: bytes read, or None if the connection closed."""
        got = 0
        limit = self.max_header + (self.max_body if conn.head is not None else 0)
        while len(conn.buf) <= limit:
            try:
                # Never more than the limit allows: a head is at most max_header bytes
                # until it parses, whatever the connection count.
                chunk = sock.recv(min(self.recv_size, limit + 1 - len(conn.buf)))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                self._close(conn)
                return None
            if not chunk:
                self._close(conn)
                return None
            conn.buf += chunk
            got += len(chunk)
            if conn.head is not None and not self._reserve(conn):
                break  # the body budget is spent: _next_request answers 503
            if len(chunk) < self.recv_size and not (self.ssl_context is not None and sock.pending()):
                break
        conn.bytes_in += got
        if got and conn.started is None:
            conn.started = time.monotonic()
            conn.deadline = conn.started + self.header_timeout
        return got

    def _answer_buffered(self, conn):
        """Answer the complete requests in the buffer.

        True when all were answered and the connection stays with this worker
        with nothing buffered; otherwise it was handed on (to the reactor for
        more bytes or to drain, to the feed, or closed) and it returns None.
        """
        for _ in range(self.max_pipeline):
            if self._stopping:
                return self._close(conn)
            try:
                outcome = self._next_request(conn)
            except _HTTPFault as fault:
                self._respond(conn, fault.status, b"", False)
                return None
            if outcome is None:  # incomplete: wait for more bytes
                return self._to_reactor(conn)
            if outcome is not True:  # closed, parked, or handed to the reactor to drain
                return None
            if not conn.buf:
                return True
        self._work.put(conn)  # more pipelined requests: queue again behind other connections
        return None

    # -- one request: head, transport checks, body, dispatch ------------------
    def _next_request(self, conn):
        """Answer the next complete request in the buffer.

        Returns None (incomplete), True (answered, keep going), or False (the
        connection was handed on: closed, parked, or draining in the reactor).
        """
        if conn.head is None and not self._read_head(conn):
            return None
        method, path, headers, keep_alive = conn.head
        origin = headers.get("origin")
        refusal = self._refusal(method, path, headers)
        if refusal is not None:
            return self._refuse(conn, refusal, method == "HEAD", headers, keep_alive, origin)
        length = _content_length(headers)
        buf = conn.buf
        if len(buf) < length:
            if not self._reserve(conn):
                raise _HTTPFault(503, "too many request bodies in flight")
            return None
        if len(buf) == length:  # the usual case: the body is the whole buffer, taken without a copy
            body, conn.buf = buf, bytearray()
        else:
            with memoryview(buf) as view:
                body = view[:length].tobytes()
            del buf[:length]
        reserved, conn.reserved = conn.reserved, 0  # held until the body is answered, not just read
        self._finish_request(conn)
        try:
            return self._dispatch(conn, path, body, keep_alive, origin)
        finally:
            if reserved:
                self._unreserve(conn.peer, reserved)

    def _read_head(self, conn):
        """Parse the head once it is complete; False while it is not.  _HTTPFault(431/400) on a bad one."""
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_header:
                raise _HTTPFault(431)
            if buf.find(b"\n\n") >= 0:
                raise _HTTPFault(400)  # a head ended by bare LFs: refused now, not at header_timeout
            return False
        if end > self.max_header:
            raise _HTTPFault(431)
        conn.head = _parse_head(bytes(buf[:end]))
        del buf[:end + 4]
        conn.deadline = time.monotonic() + self.body_timeout
        return True

    def _refusal(self, method, path, headers):
        return _refusal(self.engine, self.static, self.max_body, method, path, headers)

    def _refuse(self, conn, refusal, head_only, headers, keep_alive, origin):
        """Send a transport answer; read a small refused body first so the connection can carry on."""
        status, body, extra, content_type = refusal
        try:
            length = _content_length(headers) if "content-length" in headers else 0
        except ValueError:
            length = -1
        keep = keep_alive and "transfer-encoding" not in headers and 0 <= length <= self.max_body
        if keep and length:
            # A stale endpoint is routine (rotation): read the small body and keep the
            # connection, rather than make the client reconnect to say hello.
            if len(conn.buf) < length:
                if not self._reserve(conn):
                    raise _HTTPFault(503, "too many request bodies in flight")
                return None
            del conn.buf[:length]
        self._finish_request(conn)
        # Otherwise a body we did not read would be taken for the next request: close.
        return self._respond(conn, status, body, keep, origin, extra, content_type, head_only=head_only)

    def _dispatch(self, conn, path, body, keep_alive, origin):
        """engine.handle, then send the answer, or park the pull with the feed."""
        status, reply = 200, None
        try:
            reply = self.engine.handle(path, body)
            if isinstance(reply, _Wait):
                reply.transport, reply.conn = self, (conn, keep_alive, origin)
                if self.feed.park(reply):
                    return False
                reply = self.engine.answer_wait(reply)
        except _HTTPFault as fault:
            status, reply = fault.status, None
        except Exception:
            log.exception("unexpected error answering %s", path)
            status, reply = 500, None
        return self._respond(conn, status, reply or b"", keep_alive, origin,
                             content_type=_FRAME_TYPE if reply else None)

    def _finish_request(self, conn):
        conn.head = conn.started = None
        conn.served += 1
        self._release_reservation(conn)

    def _reserve(self, conn):
        """Count the body bytes ``conn`` holds against ``max_buffered``; False if that is full.

        What is counted is what has arrived, not what Content-Length promises,
        so heads alone cannot fill the budget.
        """
        more = len(conn.buf) - conn.reserved
        if more <= 0:
            return True
        peer = conn.peer
        with self._lock:
            held = self._buffered_by.get(peer, 0) + more
            # Never less than one whole body, however large max_body is set.
            if (self._buffered + more > max(self.max_buffered, self.max_body)
                    or held > max(self.max_buffered_per_address, self.max_body)):
                return False
            self._buffered += more
            self._buffered_by[peer] = held
        conn.reserved += more
        return True

    def _release_reservation(self, conn):
        if conn.reserved:
            self._unreserve(conn.peer, conn.reserved)
            conn.reserved = 0

    def _count_unsent(self, peer, size):
        """Add ``size`` (negative: sent or dropped) to the unsent bytes, the peer's share too; under _lock."""
        self._unsent += size
        left = self._unsent_by.get(peer, 0) + size
        if left:
            self._unsent_by[peer] = left
        else:
            self._unsent_by.pop(peer, None)

    def _unreserve(self, peer, size):
        with self._lock:
            self._buffered -= size
            left = self._buffered_by.pop(peer) - size
            if left:
                self._buffered_by[peer] = left

    # -- Transport: the feed's calls ------------------------------------------
    def deliver(self, wait, body):
        conn, keep_alive, origin = wait.conn
        self._respond(conn, 200, body, keep_alive, origin, content_type=_FRAME_TYPE, release=True)

    def chunk(self, wait, body):
        conn, keep_alive, origin = wait.conn
        message = struct.pack(">I", len(body)) + body
        data = b"%x\r\n%s\r\n" % (len(message), message)
        if not wait.sent:
            head = ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: %s\r\n"
                    "Cache-Control: no-store\r\n%s%s\r\n") % (
                STREAM_TYPE, self.cors(origin), "" if keep_alive else "Connection: close\r\n")
            data = head.encode("latin-1") + data
        with conn.lock:
            if conn.out is not None:
                return False  # still sending the last message: the feed offers the latest state later
        self._write(conn, data, "stream")  # what the socket would not take, the reactor sends
        return conn.sock.fileno() >= 0

    def room(self, wait):
        return wait.conn[0].out is None

    def end(self, wait):
        conn, keep_alive, _ = wait.conn
        self._write(conn, b"0\r\n\r\n", "read" if keep_alive else "close", release=True)

    def alive(self, wait):
        """Is a parked long-poll's client still there?  Peeks without consuming; closes it if gone."""
        conn = wait.conn[0]
        if conn.sock.fileno() < 0:
            return False
        try:
            # socket.socket.recv on the raw descriptor: SSLSocket refuses flags, and a
            # peeked TLS record or pipelined byte both mean the peer is still there.
            if socket.socket.recv(conn.sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return True
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            pass
        self._close(conn)
        return False

    def close_wait(self, wait):
        if wait.conn is not None:
            self._close(wait.conn[0])

    # -- writing --------------------------------------------------------------
    def _respond(self, conn, status, body, keep_alive, origin=None, extra="", content_type=None,
                 release=False, head_only=False):
        """Send one whole answer.  True if it went out and this thread keeps the connection."""
        head = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s%s%s%s\r\n" % (
            status, _REASONS.get(status, "Error"), len(body), self.cors(origin),
            "Content-Type: %s\r\n" % content_type if content_type else "",
            "Cache-Control: no-store\r\n" if status not in (200, 304) or content_type == _FRAME_TYPE else "",
            extra + ("" if keep_alive else "Connection: close\r\n"))
        with self._lock:
            self.bytes_in += conn.bytes_in
        conn.bytes_in = 0
        head = head.encode("latin-1")
        if head_only or not body:
            data = head
        elif len(body) <= 262144:
            data = head + body  # one send, one segment with TCP_NODELAY: a small answer is never split
        else:
            data = (head, body)  # a large body (the client file) is sent as it is, not copied

        return self._write(conn, data, "read" if keep_alive else "close", release)

    def _write(self, conn, data, then, release=False):
        """Send ``data`` (bytes, or a tuple of parts) without waiting; the reactor takes what is left.

        Returns True if all went out and the caller keeps the connection
        (``then`` "read"), False if it was handed on or closed.  ``release``:
        the caller is the feed, which never keeps a connection: a finished
        answer goes back to reading (or closes) from here.
        """
        parts = list(data) if isinstance(data, tuple) else [data]
        sock = conn.sock
        with conn.lock:
            if conn.out is not None:  # the reactor is still sending earlier parts: queue behind them
                pending = sum(map(len, parts))
                with self._lock:
                    self._count_unsent(conn.peer, pending)
                conn.out.extend(parts)
                conn.then = then
                return False
            while parts:
                try:
                    sent = sock.send(parts[0])
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    break
                except OSError:
                    parts = None
                    break
                with self._lock:
                    self.bytes_out += sent
                if sent == len(parts[0]):
                    parts.pop(0)
                else:
                    parts[0] = memoryview(parts[0])[sent:]
            if parts:
                pending = sum(map(len, parts))
                with self._lock:
                    held = self._unsent_by.get(conn.peer, 0)  # an address holding nothing may queue one answer, however large
                    over = self._unsent + pending > self.max_unsent or (held and held + pending > self.max_unsent_per_address)
                    if not over:
                        self._count_unsent(conn.peer, pending)
                if over:  # answers nobody reads may not pile up: this one is dropped, and it pulls again
                    parts = None
                else:
                    conn.out = collections.deque(parts)
                    conn.then = then
                    conn.deadline = time.monotonic() + self.body_timeout  # a reader that stops is cut then
        if parts is None:
            self._close(conn)
            return False
        if parts:
            self._to_reactor(conn)
            return False
        if then == "close":
            self._close(conn)
            return False
        if then == "stream":
            return True
        if release:
            if conn.buf:
                self._work.put(conn)
            else:
                self._to_reactor(conn)
            return False
        return True

    def _close(self, conn):
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
                left = self._conns_by.get(conn.peer)
                if left is not None:
                    if left > 1:
                        self._conns_by[conn.peer] = left - 1
                    else:
                        del self._conns_by[conn.peer]
            self.bytes_in += conn.bytes_in
        conn.bytes_in = 0
        self._release_reservation(conn)
        with conn.lock:
            out, conn.out = conn.out, None
        if out:
            left = sum(map(len, out))
            with self._lock:
                self._count_unsent(conn.peer, -left)
        try:
            conn.sock.close()
        except OSError:
            pass

    # -- bookkeeping ----------------------------------------------------------
    def connections(self):
        with self._lock:
            return len(self._conns)

    def cors(self, origin):
        return "".join("%s: %s\r\n" % pair for pair in _cors(self._origins, origin))

    def close_all(self):
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            for sock in {conn.sock, conn.raw}:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._close(conn)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


# =============================================================================
# Mounting in an app: the WSGI and ASGI transports
# =============================================================================


def _mount_path(path, prefix):
    """The path below the mount point (PATH_INFO, or an ASGI path less its root_path)."""
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    return path or "/"


def _server_threads():
    """(the WSGI server, its threads per process, how to give it more) where this thread can tell:
    waitress names its fixed pool ``waitress-N``; a gunicorn gthread worker (_sigterm_owner) runs
    ``cfg.threads``.  (None, 0, None)
    for any other server."""
    if threading.current_thread().name.startswith("waitress-"):
        return ("waitress", sum(1 for t in threading.enumerate() if t.name.startswith("waitress-")),
                "waitress-serve --threads 16, or serve(app, threads=16)")
    worker = _sigterm_owner()
    threads = getattr(getattr(worker, "cfg", None), "threads", None)
    # Only gthread's pool is its thread count: the async workers (gevent, eventlet) hold no thread
    # per request, and a sync worker is never held (wsgi.multithread false).
    if type(worker).__module__ == "gunicorn.workers.gthread" and type(threads) is int:
        return "gunicorn", threads, "gunicorn -k gthread --threads 16"
    return None, 0, None


class _WSGIDoor(Transport):
    """``sync.wsgi_app()``: the protocol as a WSGI callable, on the app's own server.

    A WSGI server gives each request a thread until it returns, so a
    long-poll holds one of its threads.  Two rules keep that from starving
    the app: a pull waits at most ``max_wait`` seconds here (hello says so,
    and clients ask for no more), and at most ``max_held`` requests wait at
    once; past that a pull is answered at once, and hello's ``poll`` tells
    clients how long to pause before the next.  A server with one thread per
    worker (gunicorn's sync workers: ``wsgi.multithread`` false) is never held:
    hello says ``wait`` 0, and clients poll every ``poll`` seconds.  Threaded
    servers (gthread, waitress) or the ASGI mount deliver changes at once.

    A streamed pull whose client stops reading must not hold its thread for
    good: the feed queues at most ``max_queued`` messages for it (then offers
    the latest state later, as the ASGI door does), and an answer ends after
    ``max_stream_bytes`` (the client pulls again from its cursor), so a server
    that buffers what the app yields (waitress, up to 16 MiB before it blocks
    the thread) never blocks on one stream.  A server that writes each chunk
    to the socket itself (gunicorn) waits as long as the client does not read:
    there, put a buffering proxy in front (README, "Limits under a mount").
    """

    max_queued = 8  # stream messages waiting for the thread that writes them
    max_stream_bytes = 8 << 20  # bytes of one streamed answer (plus its last message, at most a 4 MiB page)

    def __init__(self, sync, max_wait, poll, max_held):
        self.sync = sync
        self.max_wait, self.poll, self.max_held = max_wait, poll, max_held
        # One user's tokens (a user token: one with a sub) may hold a quarter of the slots, so
        # one user's devices, or one user looping pulls, cannot take every other user's.
        self.max_held_per_user = max(1, max_held // 4)
        self._fitted = False  # max_held checked against the server's threads, where it can tell (_fit)
        self._held = 0
        self._by_user = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        self.sync._start_engine()
        engine = self.sync._engine
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        headers = {"content-length": environ.get("CONTENT_LENGTH") or "", "origin": environ.get("HTTP_ORIGIN")}
        for key, name in (("HTTP_TRANSFER_ENCODING", "transfer-encoding"), ("HTTP_IF_NONE_MATCH", "if-none-match")):
            if key in environ:
                headers[name] = environ[key]
        refusal = _refusal(engine, self.sync._static, self.sync._max_body, method, path, headers)
        if refusal is not None:
            status, body, extra, content_type = refusal
            if status in (404, 405):
                self.sync._prefix_hint(path, "SCRIPT_NAME")
            return self._respond(start_response, status, b"" if method == "HEAD" else body,
                                 extra, content_type, headers["origin"], len(body))
        body = self._read(environ["wsgi.input"], int(headers["content-length"]))
        if body is None:
            return self._respond(start_response, 400, b"", "", None, headers["origin"])
        try:
            threaded = environ.get("wsgi.multithread", True)
            reply = engine.handle(path, body, self.max_wait if threaded else 0, self.poll)
            if isinstance(reply, _Wait):
                return self._wait(reply, start_response, headers["origin"], threaded)
        except _HTTPFault as fault:
            return self._respond(start_response, fault.status, b"", "", None, headers["origin"])
        except Exception:
            log.exception("unexpected error answering %s", path)
            return self._respond(start_response, 500, b"", "", None, headers["origin"])
        return self._respond(start_response, 200, reply, "", _FRAME_TYPE, headers["origin"])

    def _fit(self):
        """Where the server's thread count can be told (_server_threads), hold at most half of its
        threads when ``max_held`` would let waiting pulls take them all: with waitress's default
        of 4 threads (or ``gunicorn --threads 4``) and the default ``max_held`` of 8, the app's
        own pages would wait up to ``max_wait`` seconds for a thread.  Says so once.  Under _lock."""
        self._fitted = True
        server, threads, advice = _server_threads()
        if threads >= 2 and self.max_held >= threads:
            fitted = threads // 2
            log.warning("%s runs %d threads, and wsgi_app(max_held=%d) would let waiting pulls hold all of them: "
                        "holding at most %d, so the app's own requests find a thread.  Give it more threads (%s) "
                        "or pass a max_held below its thread count", server, threads, self.max_held, fitted, advice)
            self.max_held = fitted
            self.max_held_per_user = max(1, fitted // 4)

    @staticmethod
    def _read(stream, length):
        parts, left = [], length
        while left > 0:
            chunk = stream.read(min(left, 65536))
            if not chunk:
                return None  # the client sent less than it said
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def _respond(self, start_response, status, body, extra, content_type, origin, length=None):
        headers = [("Content-Length", str(len(body) if length is None else length))]
        headers += list(_cors(self.sync._origins, origin))
        if content_type:
            headers.append(("Content-Type", content_type))
        if status not in (200, 304) or content_type == _FRAME_TYPE:
            headers.append(("Cache-Control", "no-store"))
        for line in extra.split("\r\n"):
            if line:
                name, _, value = line.partition(": ")
                headers.append((name, value))
        start_response("%d %s" % (status, _REASONS.get(status, "Error")), headers)
        return [body]

    def _wait(self, wait, start_response, origin, threaded):
        engine, feed = self.sync._engine, self.sync._feed
        user = wait.state.sub  # every token of one user counts together (None: the app's own tokens)
        with self._lock:
            if threaded and not self._fitted:
                self._fit()
            # A server with one thread per worker (gunicorn's sync workers) is never held:
            # the app's own pages would wait behind a long-poll.  hello's `poll` paces clients.
            hold = threaded and self._held < self.max_held and (
                user is None or self._by_user[user] < self.max_held_per_user)
            if hold:
                self._held += 1
                if user is not None:
                    self._by_user[user] += 1
        if not hold:
            return self._respond(start_response, 200, engine.answer_wait(wait), "", _FRAME_TYPE, origin)
        streaming = False
        try:
            wait.transport, wait.conn = self, _WSGIHeld()
            if not feed.park(wait):
                return self._respond(start_response, 200, engine.answer_wait(wait), "", _FRAME_TYPE, origin)
            first = self._next(wait.conn)
            if first[0] == "body":
                return self._respond(start_response, 200, first[1], "", _FRAME_TYPE, origin)
            if first[0] != "chunk":
                return self._respond(start_response, 503, b"", "", None, origin)
            headers = [("Content-Type", STREAM_TYPE), ("Cache-Control", "no-store")]
            start_response("200 OK", headers + list(_cors(self.sync._origins, origin)))
            streaming = True
            return _WSGIStream(self, wait.conn, first[1], user)
        finally:
            if not streaming:  # a stream gives its slot back when it ends (_WSGIStream.close)
                if wait.conn is not None:
                    wait.conn.cut = True  # answered otherwise (or timed out): the feed is to drop it
                self._release(user)

    def _release(self, user):
        with self._lock:
            self._held -= 1
            if user is not None:
                self._by_user[user] -= 1
                if not self._by_user[user]:
                    del self._by_user[user]

    def _next(self, held):
        """The feed's next word on a held request; ("close",) if none comes well past max_wait."""
        try:
            item = held.queue.get(timeout=self.max_wait + 5)
        except queue.Empty:
            return ("close", None)
        if item[0] == "chunk":
            with self._lock:
                held.queued -= 1
                held.queued_bytes -= len(item[1])
        return item

    # -- Transport: the feed thread's calls -----------------------------------
    def deliver(self, wait, body):
        wait.conn.queue.put(("body", body))

    def chunk(self, wait, body):
        held = wait.conn
        message = struct.pack(">I", len(body)) + body
        with self._lock:
            if not self._room(held):
                return False  # behind (the latest state later), or its answer has ended (alive says so)
            held.queued += 1
            held.queued_bytes += len(message)
        held.queue.put(("chunk", message))
        return True

    def room(self, wait):
        return self._room(wait.conn)

    def _room(self, held):
        # Bytes too: the answer ends at max_stream_bytes anyway, so no more than that is queued.
        return not held.cut and held.queued < self.max_queued and held.queued_bytes < self.max_stream_bytes

    def end(self, wait):
        wait.conn.queue.put(("end", None))

    def alive(self, wait):
        # Whether its client still listens WSGI cannot tell; the wait's deadline (at most
        # max_wait) bounds it.  A streamed answer that has ended is gone.
        return not wait.conn.cut

    def close_wait(self, wait):
        wait.conn.queue.put(("close", None))

    def closing(self):
        return _server_exiting()  # gunicorn after SIGTERM: held threads go at once, not after max_wait


class _WSGIHeld:
    """The WSGI door's handle on a held pull (``_Wait.conn``): the feed's words for the request's thread."""

    __slots__ = ("queue", "queued", "queued_bytes", "cut")

    def __init__(self):
        self.queue = queue.SimpleQueue()
        self.queued = 0  # stream messages in the queue, counted against _WSGIDoor.max_queued
        self.queued_bytes = 0  # ... and their bytes, against max_stream_bytes
        self.cut = False  # its streamed answer has ended: the feed is to drop it


class _WSGIStream:
    """The body of a streamed pull under WSGI: its messages as the feed queues them, to the end of
    its wait or ``max_stream_bytes``.  An iterable with ``close()``, not a generator: a server
    that closes it before the first item (a client gone at once) still gives the slot back."""

    def __init__(self, door, held, first, user):
        self.door, self.held, self.first, self.user = door, held, first, user
        self.sent = 0
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.closed:
            raise StopIteration
        if self.first is not None:
            item, self.first = ("chunk", self.first), None
        elif self.sent >= self.door.max_stream_bytes:
            item = ("end", None)  # enough for one answer: the client pulls on from its cursor
        else:
            item = self.door._next(self.held)
        if item[0] != "chunk":
            self.close()
            raise StopIteration
        self.sent += len(item[1])
        return item[1]

    def close(self):
        if not self.closed:
            self.closed = True
            self.held.cut = True  # whatever ends the answer (the server closing it too): the feed drops the wait
            self.door._release(self.user)


class _LoopPost:
    """The feed thread's hand-offs to one event loop, in batches.

    ``call_soon_threadsafe`` wakes the loop (a write to its wake-up pipe) and
    queues one callback; a feed pass answering a thousand pulls made a
    thousand of each.  Here the first hand-off of a burst schedules one
    ``_drain`` and the rest join its list, so a pass costs the loop a few
    wake-ups, whatever its size.
    """

    __slots__ = ("loop", "items", "lock", "scheduled")

    def __init__(self, loop):
        self.loop = loop
        self.items = []
        self.lock = threading.Lock()
        self.scheduled = False

    def post(self, handle, item):
        """Queue ``item`` for ``handle`` (any thread); False if the loop is closed (the server went away)."""
        with self.lock:
            self.items.append((handle, item))
            if self.scheduled:
                return True
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed; `scheduled` stays set: nothing will drain again
            return False
        return True

    def _drain(self):
        with self.lock:
            items, self.items = self.items, []
            self.scheduled = False
        for handle, item in items:
            handle.take(item)


class _Deadlines:
    """Deadlines for the ASGI door's reads and long sends, checked by one timer of the loop.

    An ASGI server gives the app no socket to time out, and uvicorn closes
    no connection whose body trickles in, or that stops reading an answer.
    A request task that reads its body or sends a large answer registers
    here for the span of a ``with book.bound(task, seconds):`` block (a dict
    entry, not a timer per request); once a second the timer cancels the
    tasks past their deadline.  Such a cancellation ends its block quietly
    (the code after it handles the cut); any other, a shutdown's, goes on.
    """

    __slots__ = ("loop", "due", "expired", "timer")

    def __init__(self, loop):
        self.loop = loop
        self.due = {}  # task -> loop time it must be done by
        self.expired = set()
        self.timer = None

    def bound(self, task, seconds):
        self.due[task] = self.loop.time() + seconds
        if self.timer is None:
            self.timer = self.loop.call_later(1.0, self._check)
        return _Bound(self, task)

    def _check(self):
        now = self.loop.time()
        for task in [t for t, due in self.due.items() if due <= now]:
            del self.due[task]
            self.expired.add(task)
            task.cancel()
        self.timer = self.loop.call_later(1.0, self._check) if self.due else None


class _Bound:
    """``_Deadlines.bound()``: the span of one deadline; swallows only the cancellation it caused."""

    __slots__ = ("book", "task")

    def __init__(self, book, task):
        self.book, self.task = book, task

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        book, task = self.book, self.task
        book.due.pop(task, None)
        if task not in book.expired:
            return False
        book.expired.discard(task)
        import asyncio
        if kind is None or not issubclass(kind, asyncio.CancelledError):
            return False
        if hasattr(task, "uncancel"):  # 3.11+: so the server's own timeouts still work on the task
            task.uncancel()
        return True


class _ASGIHandle:
    """One waiting ASGI request: the feed thread's words for it, queued on its loop.

    The feed thread calls ``put``; the request's coroutine awaits ``get``.
    ``put_n`` is written by the feed thread only and ``taken`` by the loop
    only, so their difference (messages not yet sent) needs no lock.
    """

    __slots__ = ("post", "items", "waiter", "gone", "put_n", "taken", "held_bytes", "peer")

    def __init__(self, post):
        self.post = post
        self.items = collections.deque()
        self.waiter = None
        self.gone = False
        self.put_n = self.taken = 0
        self.held_bytes = 0  # its stream messages counted against the door's max_unsent (under its stream lock)
        self.peer = None  # its client's address (_peer): its share of that budget

    def put(self, item):
        self.put_n += 1
        if not self.post.post(self, item):
            self.gone = True

    def take(self, item):
        """On the loop: queue ``item`` and wake the coroutine waiting in ``get``."""
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self):
        items = self.items
        while not items:
            self.waiter = self.post.loop.create_future()
            await self.waiter
        self.taken += 1
        return items.popleft()


class _ASGILanes:
    """Which frames the ASGI door answers on the event loop, and which in a worker thread.

    A worker thread costs every frame two hand-offs between threads (about as
    much as answering a small frame); the loop costs none, but whatever runs
    there holds up every request of the app until it returns.  So a frame is
    answered on the loop only when all of this holds:

    - the store keeps everything in memory (no disk or network wait: SQLite
      and PostgreSQL frames always go to a worker);
    - it is short: a body of at most ``small`` bytes, a batch of at most
      ``max_batch`` writes, and a pull that is neither a reset page nor more
      than ``max_lag`` changes behind nor a subscription pull;
    - the store's lock is free at that moment (a backend's ``sync.batch()``
      holds it for as long as it runs);
    - every handler it may call (``@on_<op>`` of its tables) has earned the
      loop: its last ``trust_after`` runs in a worker each took under ``fast``
      seconds, and no frame with a handler, or too big to open on the loop,
      is in a worker right now (an inline write could otherwise wait on the
      locks such a frame holds).

    A handler whose frame then takes over ``slow`` seconds on the loop goes
    back to the workers, with a warning, until it has been quick there
    ``trust_after`` times in a row again; each ``forgive_after`` quick runs
    on the loop take one such strike back, and at ``max_strikes`` it stays in
    the workers for good.  A handler that starts to block stalls the loop
    once; one that blocks now and then, at most ``max_strikes`` times in a
    row.  ``slow`` is well above a frame's usual 0.1 ms because the OS and
    the garbage collector pause a busy process for tens of milliseconds, and
    those pauses are not the handler's; a handler that is slower than ``fast``
    on every call never earns the loop at all.  All this only with
    ``sync.asgi_app(inline_handlers=True)``; by default every frame with a
    handler runs in the workers.  Row rules are not judged: they already run under the
    store's lock in the feed thread, so they must be quick wherever they run.
    """

    small = 16384
    max_batch = 16
    max_lag = 64
    trust_after = 32
    fast = 0.002
    slow = 0.1
    max_strikes = 5
    forgive_after = 1000

    def __init__(self, engine):
        self.engine = engine
        self.runs = {}  # handler key (table, op) -> (handler, fast runs in a row in a worker)
        self.trusted = {}  # handler key -> the handler that earned the loop
        self.strikes = {}  # handler key -> times it was slow on the loop, less those forgiven
        self.quick = {}  # handler key -> quick runs on the loop since its last strike was forgiven
        self.banned = set()  # handler keys slow on the loop max_strikes times: workers only, for good
        self.held = 0  # frames with a handler, or not opened, in workers now (counted on the loop)
        self.inline = self.offloaded = 0  # frames answered each way (for tests and the benchmark)
        self._lock = threading.Lock()

    def route(self, path, body, handlers_inline):
        """(on the loop?, the handler keys the frame may call, the frame as ``engine.open`` gave it or None).

        A frame is opened here, on the loop, when it is small (a forged one is
        refused here, and the door knows whose frame it sends to a worker);
        ``handle`` then takes it as opened, wherever it runs, so no frame is
        opened twice.  Only on a store that keeps everything in memory may it
        be answered on the loop.
        """
        engine = self.engine
        store = engine.store
        if len(body) > self.small:
            return False, (), None
        opened = engine.open(path, body)  # _HTTPFault (not a frame, unknown token, bad tag): the door answers it
        if store.durable or store.shared:
            return False, (), opened
        request = opened[2]
        if opened[3] is not None:
            return True, (), opened  # answered with its refusal
        op = request.get("op")
        keys = ()
        if op == "pull":
            since = request.get("since")
            # A subscription pull (README, protocol section 7) may call the app's subscription functions and page
            # a new subscription's rows: a worker's, until its costs are known.
            if (request.get("subs") is not None or request.get("next") is not None or store.needs_reset(since)
                    or store.seq - since["seq"] > self.max_lag):
                return False, (), opened
        elif op == "batch" or op in _WRITE_OPS:
            writes = request.get("mutations") if op == "batch" else (request,)
            if not isinstance(writes, (list, tuple)):
                writes = ()  # handle() answers the error
            if len(writes) > self.max_batch:
                return False, (), opened
            handlers = engine.handlers
            if op != "batch":
                k = (request.get("table"), op)
                keys = (k,) if type(k[0]) is str and k in handlers else ()
            else:
                keys = tuple({k for k in ((m.get("table"), m.get("op")) for m in writes if isinstance(m, dict))
                              if type(k[0]) is str and type(k[1]) is str and k in handlers})
            # Every write takes the store's mid and key holds, which a frame in a worker keeps
            # while its handler runs: none goes on the loop while such a frame is out there.
            if self.held or (keys and (not handlers_inline or
                                       any(self.trusted.get(k) is not handlers[k] for k in keys))):
                return False, keys, opened
        if not store.lock.acquire(blocking=False):
            return False, keys, opened
        store.lock.release()
        return True, keys, opened

    def run(self, path, body, keys, opened):
        """In a worker thread: answer the frame and learn how long its handlers took."""
        t0 = time.perf_counter()
        try:
            return self.engine.handle(path, body, opened=opened)
        finally:
            if keys:
                self._learn(keys, time.perf_counter() - t0)

    def _learn(self, keys, elapsed):
        handlers = self.engine.handlers
        with self._lock:
            for k in keys:
                handler = handlers.get(k)
                if handler is None or k in self.banned:
                    continue
                seen, n = self.runs.get(k, (None, 0))
                n = n + 1 if seen is handler and elapsed < self.fast else int(elapsed < self.fast)
                self.runs[k] = (handler, n)
                if n >= self.trust_after:
                    self.trusted[k] = handler

    def ran_inline(self, keys, elapsed):
        """After a frame with handlers on the loop: over ``slow`` seconds sends its handlers back to
        the workers; ``forgive_after`` quick runs on the loop take one strike back."""
        if elapsed <= self.slow:
            quick = self.quick
            for k in keys:
                n = quick[k] = quick.get(k, 0) + 1
                if n >= self.forgive_after:
                    quick[k] = 0
                    if self.strikes.get(k):
                        self.strikes[k] -= 1
            return
        with self._lock:
            for k in keys:
                if self.trusted.pop(k, None) is None:
                    continue
                self.runs.pop(k, None)
                self.quick.pop(k, None)
                strikes = self.strikes[k] = self.strikes.get(k, 0) + 1
                if strikes >= self.max_strikes:
                    self.banned.add(k)
                log.warning("the @on_%s('%s') handler held the event loop for %.0f ms; it runs in a worker "
                            "thread %s", k[1], k[0], elapsed * 1000, "from now on" if strikes >= self.max_strikes
                            else "until it is quick again (%d of %d strikes)" % (strikes, self.max_strikes))


_ASGI_POST_HEADERS = frozenset((b"content-length", b"origin", b"transfer-encoding"))


def _asgi_headers(scope, method):
    """An ASGI request's headers as {lower-case name: value}; for a POST (the hot path) only
    what _refusal and CORS read."""
    headers = {}
    if method == "POST":
        for name, value in scope.get("headers", ()):
            name = name.lower()
            if name in _ASGI_POST_HEADERS:
                headers[name.decode("latin-1")] = value.decode("latin-1")
    else:
        for name, value in scope.get("headers", ()):
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
    return headers


class _Turn:
    """One user's (or address's) frames in an ASGI door's worker threads: ``slots`` bounds how many
    run at once; ``waiting`` counts those running or waiting, so the door forgets it at 0."""

    __slots__ = ("slots", "waiting")

    def __init__(self, size):
        import asyncio  # deferred, as in the door: made on the loop, by a request's coroutine
        self.slots = asyncio.Semaphore(size)
        self.waiting = 0


class _NoTurn:
    """``async with`` that waits for nothing: an app token's frames take no turn."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


_NO_TURN = _NoTurn()


class _ASGIDoor(Transport):
    """``sync.asgi_app()``: the protocol as an ASGI 3 application (uvicorn, hypercorn, Daphne).

    No thread is held while a pull waits: the request's coroutine awaits a
    handle that the feed thread fills in batches (``_LoopPost``), and a
    streamed pull's messages go out as ``more_body`` chunks.  Short frames
    (hello, pulls that answer or park at once, small writes whose handlers
    have shown they are quick) are answered on the event loop; the rest,
    and every handler not yet known to be quick, run in the loop's default
    executor, so a slow handler never blocks the loop twice (``_ASGILanes``).
    ``lifespan`` starts and stops the engine; without it (a mounted sub-app)
    the first request starts it.
    """

    max_queued = 8  # stream messages waiting for a slow client before the feed holds back
    # Frames of one user in the loop's worker threads at once (a user token's, by its sub: all its
    # tokens together; a frame too large to open on the loop, by the sub its kid names); the rest
    # wait their turn, so one user's long batches or slow handlers cannot take every worker.
    max_offloaded_per_user = max(2, min(32, (os.cpu_count() or 1) + 4) // 3)  # a third of asyncio's default pool
    max_buffered = _Server.max_buffered  # bytes of request bodies being received, across the door's requests
    max_buffered_per_address = _Server.max_buffered_per_address  # of which one user (or, with an app token, address) may hold
    max_unsent = _Server.max_unsent  # bytes of large answers and stream messages being sent, across the door's requests
    max_unsent_per_address = _Server.max_unsent_per_address  # of those, what one client address may hold
    piece = 65536  # a larger answer goes out in pieces of this size, so the server's flow control applies

    def __init__(self, sync, inline_handlers=False):
        self.sync = sync
        self.inline_handlers = inline_handlers  # True: a handler that has proved quick may run on the loop
        self.lanes = None  # _ASGILanes, made with the engine on the first request
        self._post = None  # _LoopPost of the loop this door last served
        self._deadlines = None  # _Deadlines of that loop
        self._cors_for = (None, ())  # (origins it was made for, the CORS header pairs for "*")
        self.buffered = self.unsent = 0  # bytes counted against max_buffered and max_unsent (on the loop)
        self._buffered_by = {}  # {("user", sub) or ("address", client address, an IPv6 one by its /64): its part of buffered} (on the loop)
        # Stream messages queued for, or just handed to, clients: counted against max_unsent too.
        # The feed thread adds, the loop takes away: under a lock of their own.
        self.streamed = 0
        self._streamed_by = {}  # {client address: its part of streamed}, at most max_unsent_per_address
        self._unsent_by = {}  # {client address: its part of unsent} (on the loop)
        self._stream_lock = threading.Lock()
        self._turns = {}  # user or address -> _Turn (on the loop)

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                return await self._lifespan(receive, send)
            return None  # websocket and others: not ours; the server closes them
        import asyncio  # deferred: WSGI and standalone users never load it
        sync = self.sync
        if not sync.running:
            await asyncio.get_running_loop().run_in_executor(None, sync._start_engine)
        method = scope["method"]
        path = _mount_path(scope.get("path") or "/", scope.get("root_path", ""))
        headers = _asgi_headers(scope, method)
        origin = headers.get("origin")
        engine = sync._engine
        peer = _peer(tuple(scope.get("client") or ()))
        refusal = _refusal(engine, sync._static, sync._max_body, method, path, headers)
        if refusal is not None:
            status, body, extra, content_type = refusal
            if status in (404, 405):
                sync._prefix_hint(path, "root_path")
            return await self._respond(send, status, body, extra, content_type, origin, head_only=method == "HEAD",
                                       peer=peer)
        body = await self._read(receive, _content_length(headers), peer, engine)
        if body is None:
            return None  # the client left
        if body.__class__ is int:  # 408: not all within body_timeout; 503: max_buffered is full; 400, 401: no token
            return await self._respond(send, body, b"", "Connection: close\r\n", None, origin)
        try:
            reply = await self._handle(engine, path, body, peer)
            if isinstance(reply, _Wait):
                return await self._wait(reply, receive, send, origin, peer)
        except _HTTPFault as fault:
            return await self._respond(send, fault.status, b"", "", None, origin)
        except Exception:
            log.exception("unexpected error answering %s", path)
            return await self._respond(send, 500, b"", "", None, origin)
        if len(reply) > self.piece:  # counted against max_unsent first: 503 if it has no room
            return await self._respond(send, 200, reply, "", _FRAME_TYPE, origin, peer=peer)
        headers = [(b"content-length", b"%d" % len(reply)), (b"content-type", b"application/octet-stream"),
                   (b"cache-control", b"no-store")]
        headers += self._cors(origin)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})

    async def _handle(self, engine, path, body, peer):
        """``engine.handle()`` on the event loop or in a worker thread, as _ASGILanes decides."""
        lanes = self.lanes
        if lanes is None or lanes.engine is not engine:
            lanes = self.lanes = _ASGILanes(engine)
        inline, keys, opened = lanes.route(path, body, self.inline_handlers)
        if not inline:
            import asyncio
            # Whose turn: an opened frame's user (authenticated: a forged frame never got this far); an
            # app token's frames (no sub: the app's own, or shared by design) take none.  A frame too
            # large to open on the loop takes the turn of the user its kid names (a made-up kid is
            # refused here), so one user's large frames from many addresses still take only theirs;
            # one naming an app token, its client address's.
            if opened is not None:
                who = opened[0].owner
            else:
                who = engine.claimed(body)[0].owner
                if who[0] == "token":
                    who = ("address", peer)
            turn = None
            if who[0] != "token":
                turn = self._turns.get(who)
                if turn is None:
                    turn = self._turns[who] = _Turn(self.max_offloaded_per_user)
                turn.waiting += 1
            try:
                async with (turn.slots if turn is not None else _NO_TURN):
                    lanes.offloaded += 1
                    # A frame sent out unopened (too big for the loop) may call a handler as well: while it
                    # is out there, writes stay off the loop as for one known to (they may need its holds).
                    holds = bool(keys) or opened is None
                    lanes.held += holds
                    try:
                        return await asyncio.get_running_loop().run_in_executor(None, lanes.run, path, body, keys, opened)
                    finally:
                        lanes.held -= holds
            finally:
                if turn is not None:
                    turn.waiting -= 1
                    if not turn.waiting:
                        del self._turns[who]
        lanes.inline += 1
        if not keys:
            return engine.handle(path, body, opened=opened)
        t0 = time.perf_counter()
        try:
            return engine.handle(path, body, opened=opened)
        finally:
            lanes.ran_inline(keys, time.perf_counter() - t0)

    def _cors(self, origin):
        """The CORS header pairs (bytes) for an answer; the same list for every request under "*"."""
        origins = self.sync._origins
        if origins is None:
            made_for, pairs = self._cors_for
            if made_for is not origins or not pairs:
                pairs = [(n.lower().encode(), v.encode("latin-1")) for n, v in _cors(None, origin)]
                self._cors_for = (origins, pairs)
            return pairs
        return [(n.lower().encode(), v.encode("latin-1")) for n, v in _cors(origins, origin)]

    async def _lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.sync._start_engine()
                except Exception as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.sync.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _bounded(self, seconds):
        """``with self._bounded(s):`` this request's task is cut after ``s`` seconds, ending the block."""
        import asyncio
        loop = asyncio.get_running_loop()
        book = self._deadlines
        if book is None or book.loop is not loop:
            book = self._deadlines = _Deadlines(loop)
        return book.bound(asyncio.current_task(), seconds)

    async def _read(self, receive, length, peer, engine):
        """The body (at most ``length`` bytes, else b"": not a frame), None if the client left, or a
        status: 408 when it is not all here within ``body_timeout``, 503 when ``max_buffered`` is full
        or the sender holds its share of it, 400 or 401 when a body that comes in pieces does not name
        a token of this server in its first bytes (then nothing more of it is read).

        What a body in pieces holds counts against ``max_buffered`` as the user's its kid names, or
        the client address's for an app token's (behind a proxy every client is the proxy, which
        should buffer bodies itself): so neither one user from many hosts nor many hosts without a
        token can refuse everyone's large writes."""
        counted = 0
        by = self._buffered_by
        share = max(self.max_buffered_per_address, self.sync._max_body)
        who = None  # whose share the body counts in, once its kid is known
        try:
            with self._bounded(self.sync._server_options["body_timeout"]):
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                body = message.get("body", b"")
                if not message.get("more_body"):  # the usual case: the whole body in one message, kept as it is
                    return body if len(body) <= length else b""
                parts, size = [body], len(body)
                while True:
                    if size > length:
                        return b""  # more than it said: not a frame (400 from the engine)
                    if who is None:
                        head = parts[0] if len(parts) == 1 else b"".join(parts)
                        if len(head) >= 3 and len(head) >= 3 + min((head[1] << 8) | head[2], engine.max_kid):
                            try:
                                owner = engine.claimed(head, whole=False)[0].owner
                            except _HTTPFault as fault:
                                return fault.status
                            who = owner if owner[0] == "user" else ("address", peer)
                    if who is not None:  # until then at most a kid's bytes, not counted
                        more = size - counted
                        if self.buffered + more > self.max_buffered or by.get(who, 0) + more > share:
                            return 503
                        self.buffered += more
                        by[who] = by.get(who, 0) + more
                        counted = size
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    parts.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(parts) if size <= length else b""
            return 408  # the block returns unless body_timeout cut it
        finally:
            if counted:
                self.buffered -= counted
                left = by.pop(who) - counted
                if left:
                    by[who] = left

    def _reserve(self, size, peer):
        """Count an answer of ``size`` bytes against ``max_unsent`` and ``peer``'s share of it, before its
        head goes out; False (answer 503 instead) when either is full.  As in the standalone server,
        an address that holds nothing may send one answer however large; one client address's
        answers and streams together hold at most ``max_unsent_per_address``, so one host that
        stops reading many large answers cannot cut everyone else's."""
        held = self._unsent_by.get(peer, 0) + self._streamed_by.get(peer, 0)
        if self.unsent + self.streamed + size > self.max_unsent or (held and held + size > self.max_unsent_per_address):
            return False
        self.unsent += size
        self._unsent_by[peer] = self._unsent_by.get(peer, 0) + size
        return True

    async def _send_large(self, send, body, peer):
        """A body over ``piece`` bytes that ``_reserve`` counted, in pieces: the server's flow control
        holds each until the client reads, and ``body_timeout`` bounds the whole.  Cut, the response
        is left incomplete and the server closes the connection."""
        size = len(body)
        view = memoryview(body)
        try:
            with self._bounded(self.sync._server_options["body_timeout"]):
                for at in range(0, size, self.piece):
                    await send({"type": "http.response.body", "body": bytes(view[at:at + self.piece]),
                                "more_body": at + self.piece < size})
        finally:
            self.unsent -= size
            left = self._unsent_by.pop(peer) - size
            if left:
                self._unsent_by[peer] = left

    async def _respond(self, send, status, body, extra, content_type, origin, head_only=False, peer=None):
        if not head_only and len(body) > self.piece and not self._reserve(len(body), peer):
            status, body, extra, content_type = 503, b"", "Connection: close\r\n", None
        headers = [(b"content-length", b"%d" % len(body))]
        headers += self._cors(origin)
        if content_type:
            headers.append((b"content-type", content_type.encode()))
        if status not in (200, 304) or content_type == _FRAME_TYPE:
            headers.append((b"cache-control", b"no-store"))
        for line in extra.split("\r\n"):
            if line:
                name, _, value = line.partition(": ")
                headers.append((name.lower().encode(), value.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if head_only or len(body) <= self.piece:
            return await send({"type": "http.response.body", "body": b"" if head_only else body})
        await self._send_large(send, body, peer)

    def _loop_post(self, loop):
        post = self._post
        if post is None or post.loop is not loop:
            post = self._post = _LoopPost(loop)
        return post

    async def _wait(self, wait, receive, send, origin, peer):
        import asyncio
        loop = asyncio.get_running_loop()
        handle = wait.conn = _ASGIHandle(self._loop_post(loop))
        handle.peer = peer
        wait.transport = self
        if not self.sync._feed.park(wait):
            return await self._respond(send, 200, self.sync._engine.answer_wait(wait), "", _FRAME_TYPE, origin, peer=peer)

        async def watch():  # the only way an ASGI app learns that its client left
            while (await receive())["type"] != "http.disconnect":
                pass
            handle.gone = True
            handle.take(("gone", None))
        watcher = loop.create_task(watch())
        try:
            kind, data = await handle.get()
            if kind == "body":
                return await self._respond(send, 200, data, "", _FRAME_TYPE, origin, peer=peer)
            if kind == "close":  # stop(), or its token was revoked: as WSGI answers it (the client asks again)
                return await self._respond(send, 503, b"", "", None, origin)
            if kind != "chunk":
                return None
            headers = [(b"content-type", STREAM_TYPE.encode()), (b"cache-control", b"no-store")]
            headers += self._cors(origin)
            # The stream ends with its wait; a client that stops reading is cut body_timeout after that
            # (its send waits on the server's flow control meanwhile), the response left incomplete.
            with self._bounded(wait.deadline - time.monotonic() + self.sync._server_options["body_timeout"]):
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                items = handle.items
                while kind == "chunk":
                    if items and items[0][0] == "chunk":  # several messages already here: one write
                        parts = [data]
                        while items and items[0][0] == "chunk":
                            parts.append(items.popleft()[1])
                            handle.taken += 1
                        data = b"".join(parts)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    if len(data) > self.piece:
                        # An empty chunk writes nothing, but the server first waits for its buffer to
                        # drain (uvicorn does): then these bytes have left it, and are given back.  A
                        # small message is given back at once: the server's buffer holds about that
                        # much per connection anyway (its high-water mark) before it waits.
                        await send({"type": "http.response.body", "body": b"", "more_body": True})
                    self._unstream(handle, len(data))
                    kind, data = await handle.get()
                if kind == "end":
                    await send({"type": "http.response.body", "body": b""})
        finally:
            with self._stream_lock:
                handle.gone = True
                self._count_streamed(handle, -handle.held_bytes)  # what is still queued or unsent goes with it
            watcher.cancel()

    def _unstream(self, handle, size):
        with self._stream_lock:
            self._count_streamed(handle, -size)

    def _count_streamed(self, handle, size):
        """Add ``size`` (negative: given back) to the stream bytes, its handle's and its address's; under _stream_lock."""
        handle.held_bytes += size
        self.streamed += size
        left = self._streamed_by.get(handle.peer, 0) + size
        if left:
            self._streamed_by[handle.peer] = left
        else:
            self._streamed_by.pop(handle.peer, None)

    # -- Transport: the feed thread's calls -----------------------------------
    def deliver(self, wait, body):
        wait.conn.put(("body", body))

    def room(self, wait):
        handle = wait.conn
        return (not handle.gone and handle.put_n - handle.taken < self.max_queued
                and self.streamed + self.unsent < self.max_unsent
                and self._streamed_by.get(handle.peer, 0) < self.max_unsent_per_address)

    def chunk(self, wait, body):
        handle = wait.conn
        message = struct.pack(">I", len(body)) + body
        with self._stream_lock:
            if handle.gone:
                return False
            held = self._streamed_by.get(handle.peer, 0)
            if (handle.put_n - handle.taken >= self.max_queued
                    or self.streamed + self.unsent + len(message) > self.max_unsent
                    or (held and held + len(message) > self.max_unsent_per_address)):
                return False  # the client is behind, or slow readers (of its address) hold the budget: later
            self._count_streamed(handle, len(message))
        handle.put(("chunk", message))
        return True

    def end(self, wait):
        wait.conn.put(("end", None))

    def alive(self, wait):
        return not wait.conn.gone

    def close_wait(self, wait):
        wait.conn.put(("close", None))

    def closing(self):
        return _server_exiting()  # uvicorn after Ctrl-C, SIGTERM or a reload: pulls end now, not after 25 s


_CLAIMS = {}  # lock path -> [descriptor, holders in this process, pid]
_CLAIMS_LOCK = threading.Lock()


def _listen_hint(error, host):
    """What to do about a bind() that failed, by its cause."""
    if isinstance(error, socket.gaierror):
        return " (is the host name %r right? 127.0.0.1 is this machine only, 0.0.0.0 every interface)" % host
    if error.errno == errno.EADDRINUSE:
        return " (another server there? port=0, or --port 0 on the command line, picks a free one)"
    if error.errno == errno.EADDRNOTAVAIL:
        return " (%s is not an address of this machine: 127.0.0.1 is this machine only, 0.0.0.0 every interface)" % host
    if error.errno == errno.EACCES:
        return " (ports below 1024 need privileges: use one from 1024 up, or put a proxy in front)"
    return ""


def _did_you_mean(name, names):
    """"; is it 'x'?" for a table name close to ``name`` (a typo in a decorator), else ""."""
    import difflib  # deferred: only a warning needs it
    close = difflib.get_close_matches(name, list(names), n=1)
    return "; is it '%s'?" % close[0] if close else ""


def _is_file_at(fd, path):
    """True if ``path`` names the file open as ``fd`` (not removed, nor replaced by another)."""
    try:
        mine, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


def _release_claim(path):
    with _CLAIMS_LOCK:
        claim = _CLAIMS.get(path)
        if claim is not None:
            claim[1] -= 1
            if not claim[1]:
                del _CLAIMS[path]
                # Removed while still locked, so no file is left behind per server run; a process
                # that opened it meanwhile finds, once it has the lock, that the path is no longer
                # its file, and claims a new one (_claim_one_process).  Only by the process that
                # took it, and only while the path is still its file: a forked child holds its
                # parent's claim (its descriptor is a copy), and the path may be another's by now.
                if claim[2] == os.getpid() and _is_file_at(claim[0], path):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                os.close(claim[0])  # closing the descriptor releases the flock (a child's copy: not the parent's)


def _listening_addresses():
    """The addresses of the stream sockets this process holds bound but not connected (listening,
    or about to: uvicorn's workers call listen() after the app's startup), sorted.

    The workers of a pre-fork server (gunicorn, uvicorn --workers) inherit
    its sockets, so they share these; two servers never do.  Empty in a
    server that binds after the app starts (uvicorn, waitress in one
    process): that process has no sibling workers.
    """
    import stat  # deferred: only _claim_one_process needs it
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        fds = [int(n) for n in os.listdir(folder)]
    except (OSError, ValueError):
        return []
    found = []
    for fd in fds:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:  # closed meanwhile (the listing's own descriptor), or not a socket Python knows
            continue
        try:
            if sock.type != socket.SOCK_STREAM:
                continue
            address = sock.getsockname()
            if not address or (isinstance(address, tuple) and not address[1]):
                continue  # not bound
            try:
                sock.getpeername()
                continue  # connected: a client's, not a server's
            except OSError:
                pass
            found.append("%s:%s" % address[:2] if isinstance(address, tuple) else str(address))
        except OSError:
            continue
        finally:
            sock.detach()  # the descriptor stays the process's
    return sorted(found)


def _in_uvicorn_worker():
    """True in a worker process of ``uvicorn --workers N`` (N > 1) as it loads the app: uvicorn's
    Server has installed its SIGTERM handler by then (_sigterm_owner)."""
    if "uvicorn.supervisors.multiprocess" not in sys.modules:
        return False
    server = _sigterm_owner()
    workers = getattr(getattr(server, "config", None), "workers", None)
    return type(server).__module__ == "uvicorn.server" and type(workers) is int and workers > 1


_UNSERVED = weakref.WeakSet()  # DSNSync objects whose get_url() was handed out before they served
_UNSERVED_LOCK = threading.Lock()


@atexit.register
def _unserved_urls():
    """At exit: a script that handed out its URL but never served it (no start(), no mount) says so.
    An object the script dropped before the end is not named (it is gone from the set)."""
    for sync in list(_UNSERVED):
        if not sync._served:
            log.warning("this process handed out %s (get_url()) but never served it: nothing listened there.  "
                        "Call sync.start() to serve in the background, or sync.serve_forever(), before the script "
                        "ends", sync._url_given)


def _claim_one_process(app_file):
    """Refuse a second worker process of one app on a store only one process can serve.

    Workers of gunicorn or uvicorn are children of one parent that share its
    listening sockets: the first to start the engine takes a lock named after
    the parent, those sockets' addresses, the folder and the file that made
    the DSNSync; another finds it taken.  A process that holds no listening
    socket yet (its server binds after the app starts) is no pre-fork worker
    and claims nothing, so two servers started by one script both run.
    Returns the lock's path for ``_release_claim`` (None where flock does not
    exist, or nothing was claimed).  Several DSNSync of one process share a
    claim, also when two threads start them at once: the claim is looked up
    and taken under one lock (flock is held per open file, so a second
    descriptor in this process would be refused).
    """
    try:
        import fcntl  # deferred: POSIX only, and only mounted in-memory apps need it
    except ImportError:
        return None
    import tempfile
    listening = _listening_addresses()
    if not listening:
        return None
    key = "%d|%s|%s|%s" % (os.getppid(), "|".join(listening), os.getcwd(), app_file)
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), "dsn-sync-%s.lock" % name)
    with _CLAIMS_LOCK:  # held across the flock, which does not wait (LOCK_NB)
        claim = _CLAIMS.get(path)
        if claim is not None and claim[2] == os.getpid():
            claim[1] += 1
            return path
        for _ in range(8):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 32).decode("ascii", "replace").strip()
                finally:
                    os.close(fd)
                break
            if not _is_file_at(fd, path):  # a file its holder removed as it let go: try the path again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, b"%d\n" % os.getpid())  # named in the refusal of the next one
            _CLAIMS[path] = [fd, 1, os.getpid()]
            return path
        else:
            raise RuntimeError("dsn-sync: the lock file %s was removed under this process 8 times in a row as it "
                               "claimed it; is something deleting files in %s?" % (path, tempfile.gettempdir()))
    raise RuntimeError(
        "dsn-sync: another worker process of this app (pid %s, serving %s; lock %s) already serves it on the "
        "in-memory store, which one process holds: several workers would each keep their own data.  Run one "
        "worker (uvicorn --workers 1, gunicorn -w 1 --threads N), or use a store they can share: "
        "DSNSync(db_connection_string='postgresql://...')." % (holder or "?", ", ".join(listening), path))


# =============================================================================
# DSNSync: the public face
# =============================================================================


def _open_store(db_connection_string):
    if db_connection_string is None or db_connection_string in ("memory", "memory://", ":memory:"):
        return MemoryStore()
    if not isinstance(db_connection_string, str):
        raise TypeError("db_connection_string must be a string such as 'sqlite:///path/to/dsn.db', got %s"
                        % type(db_connection_string).__name__)
    if db_connection_string.startswith(("postgresql://", "postgres://")):
        return PostgresStore(db_connection_string)
    if db_connection_string.startswith("sqlite:///"):
        path, _, query = db_connection_string[len("sqlite:///"):].partition("?")
        options = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        unknown = sorted(set(options) - {"synchronous"})
        if unknown:
            raise ValueError("unknown option(s) %s in %r (known: synchronous)" % (unknown, db_connection_string))
        return SQLiteStore(path, **options)
    hint = ""
    if db_connection_string.startswith("sqlite:/"):
        hint = " (a SQLite URL has three slashes before a relative path: sqlite:///dsn.db; four before an absolute one)"
    elif "://" not in db_connection_string:
        hint = " (for a SQLite file at that path: sqlite:///%s)" % db_connection_string
    raise ValueError("unsupported db_connection_string %r%s: use sqlite:///path/to/dsn.db, "
                     "postgresql://user:password@host:5432/dbname, or nothing for the in-memory store (None; on the "
                     "command line, leave out --db)" % (db_connection_string, hint))


def _tls_context(certfile, keyfile):
    """A server TLS context: TLS 1.2+, AEAD suites only; errors that name the file and what to check."""
    for option, path in (("certfile", certfile), ("keyfile", keyfile)):
        if not os.path.isfile(path):
            raise ValueError("%s %r: no such file (give the PEM file's path; the quick server's flags are "
                             "--tls-cert and --tls-key)" % (option, path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2 offers only forward-secret AEAD suites (no CBC); TLS 1.3 suites are AEAD by definition.
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as e:
        raise ValueError("cannot use certfile %r with keyfile %r: %s. Check that both are PEM files, that "
                         "the key is the certificate's own (openssl x509 -noout -pubkey -in CERT and "
                         "openssl pkey -pubout -in KEY print the same key), and that the key has no "
                         "passphrase" % (certfile, keyfile, e.reason or e))
    return context


def json_default(value):
    """``DSNSync(json_default=json_default)``: how sync() stores values JSON has no type for.

    datetime, date and time become ISO 8601 text; Decimal and UUID their
    text; set and frozenset a sorted list; bytes base64url text.  Anything
    else raises TypeError, naming the type.
    """
    import datetime, decimal, uuid  # deferred: only backends that opt in pay for them
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=lambda v: (type(v).__name__, v))
    if isinstance(value, (bytes, bytearray)):
        return b64u_encode(bytes(value))
    raise TypeError("Object of type %s is not JSON serializable" % type(value).__name__)


_STATIC = {"/dsn_client.js": ("dsn_client.js", "text/javascript; charset=utf-8"),
           "inspect": ("dsn_inspect.html", "text/html; charset=utf-8")}


def _static_body(name):
    """A shipped file's bytes: beside the module if it is there, else the copy embedded below; None if neither."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    try:
        with io.open(path, "rb") as f:
            return f.read()
    except OSError:
        blob = _EMBEDDED.get(name)
        return zlib.decompress(base64.b64decode(blob)) if blob else None


def _keyring_for(store, secret):
    """The server's Keyring: the secret given (argument, else DSN_SYNC_SECRET), else the store's, else new.

    A secret given from outside is never written to the store (and one kept
    there before is removed): whoever can read the database could otherwise
    mint any token.  One chosen here is kept, so URL and tokens survive
    restarts; on a shared store the first node's wins, so nodes agree.
    """
    if secret is None:
        secret = os.environ.get("DSN_SYNC_SECRET") or None
    stored = store.secret
    if secret is None and store.shared:
        stored = store.adopt_secret(stored or os.urandom(32))
    keyring = Keyring(secret if secret is not None else stored or os.urandom(32))
    if secret is not None and stored is not None:
        if stored != keyring.secret:
            log.warning("the given secret replaces the one kept in the store: tokens minted before stop working")
        store.save_secret(None)
    elif secret is None and stored is None:
        store.save_secret(keyring.secret)
    return keyring


def _positive(name, value, kind=(int, float), zero=False):
    if isinstance(value, bool) or not isinstance(value, kind) or value < 0 or (value == 0 and not zero):
        raise ValueError("%s must be a %snumber, got %r" % (name, "non-negative " if zero else "positive ", value))
    return value


class DSNSync:
    """A sync server: tables of records that every connected client mirrors.

    ``DSNSync(port=3000)`` then ``define_table``, handlers, ``start()``.  Keyword
    options (all optional):

    - ``host`` ('127.0.0.1'): address to listen on ('0.0.0.0' for every interface).
    - ``secret``: the 32-byte master secret (bytes, hex or base64 text); else
      the ``DSN_SYNC_SECRET`` environment variable; else random per process
      (every token and the URL then change on restart).
    - ``certfile``/``keyfile``: serve HTTPS.
    - ``rotate_every`` (100): requests per endpoint path before a token moves
      to a fresh one; 0 turns rotation off.
    - ``workers`` (32): threads that parse requests and run handlers; idle
      and long-polling connections hold none.
    - ``max_body`` (2 MiB): the largest request body, judged from its
      Content-Length before a byte of it is read.  A write of the largest
      record (``max_record``, 1 MiB of JSON) fits with room for its frame,
      and the clients send batches of queued writes up to 1 MiB; an attacker
      without a token makes the server buffer at most this per connection,
      and at most 64 MiB across all of them.
    - ``max_connections`` (10000), ``max_waiting``
      (10000 long-polls held at once), ``max_waiting_per_user`` (16 held by the
      tokens of one user, one ``sub``, together), ``max_tables`` (1000), ``max_record`` (1 MiB of JSON),
      ``max_batch`` (1000 mutations), ``page_size`` (5000 records per reset
      page), ``idle_timeout``/``header_timeout``/``body_timeout`` (75/10/30 s).
    - ``allow_origins`` ('*'): CORS origins allowed to read answers.
    - ``store``: a store object to use instead of ``db_connection_string``.
    - ``json_default``: converts values sync() meets that JSON has no type
      for; ``dsn_sync.json_default`` handles datetime, date, Decimal, UUID,
      set and bytes.  Without it such a value raises ValueError at sync().
    - ``reuse_port`` (False): bind with SO_REUSEPORT, so several processes on a
      shared store serve one port (``python -m dsn_sync --workers N``).
    - ``open_writes`` (False): accept client writes to any table, creating it,
      with no handler: the quick server's development mode.  Never with
      browsers you do not trust.

    Threads (all started by start() and stopped and joined by stop(), in
    ``_threads``): the accept loop, the reactor, ``workers`` workers, the
    feed, and one per ``@every`` task.  The accept loop is not a daemon: a
    script whose last line is ``start()`` keeps serving until stop(),
    Ctrl-C or SIGTERM.
    """

    def __init__(self, port=3000, db_connection_string=None, *, host="127.0.0.1", secret=None,
                 certfile=None, keyfile=None, rotate_every=100, max_body=2 << 20, max_connections=10000,
                 max_waiting=10000, max_record=1 << 20, max_batch=1000, page_size=5000,
                 allow_origins="*", idle_timeout=75.0, header_timeout=10.0, body_timeout=30.0,
                 max_nonces=1000000, max_waiting_per_user=16, max_tables=1000, workers=32, store=None,
                 json_default=None, open_writes=False, reuse_port=False):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be an integer from 0 to 65535 (0 = any free port), got %r" % (port,))
        if not isinstance(host, str):
            raise TypeError("host must be a string such as '127.0.0.1', got %r" % (host,))
        if (certfile is None) != (keyfile is None):
            raise ValueError("TLS needs both certfile and keyfile")
        for name, value in (("rotate_every", rotate_every),):
            _positive(name, value, int, zero=True)
        for name, value in (("max_body", max_body), ("max_connections", max_connections),
                            ("max_waiting", max_waiting), ("max_record", max_record),
                            ("max_batch", max_batch), ("page_size", page_size), ("max_nonces", max_nonces),
                            ("max_waiting_per_user", max_waiting_per_user), ("max_tables", max_tables),
                            ("workers", workers)):
            _positive(name, value, int)
        if max_body < max_record + 65536:
            log.warning("max_body (%d bytes) leaves no room for a record of max_record (%d bytes): the largest "
                        "writes will be refused with 413", max_body, max_record)
        for name, value in (("idle_timeout", idle_timeout), ("header_timeout", header_timeout),
                            ("body_timeout", body_timeout)):
            _positive(name, value)
        self.port = port
        self.host = host
        self.certfile, self.keyfile = certfile, keyfile
        if json_default is not None and not callable(json_default):
            raise TypeError("json_default must be a function such as dsn_sync.json_default, got %r" % (json_default,))
        self._ssl_context = _tls_context(certfile, keyfile) if certfile is not None else None
        # The app's own data may hold a cycle: the checked encoder stops at it at once (the fast
        # one would first copy the record a thousand levels down).  Client data is parsed JSON.
        self._encode = _json_checked if json_default is None else json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=json_default).encode
        self._store = store if store is not None else _open_store(db_connection_string)
        self._store.open()
        self._keyring = _keyring_for(self._store, secret)
        self._engine = _Engine(self._keyring, self._store, rotate_every=rotate_every, page_size=page_size,
                               max_batch=max_batch, max_record=max_record, max_nonces=max_nonces)
        self._engine.any_table = bool(open_writes)
        self._engine.max_tables = max_tables
        self._feed = _Feed(self._engine, max_waiting=max_waiting, max_waiting_per_user=max_waiting_per_user)
        self.max_tables = max_tables
        self.workers = workers
        self._max_body = max_body
        self._origins = _origins(allow_origins)
        self._app_file = sys._getframe(1).f_code.co_filename  # names the app for _claim_one_process
        self._warned_url = False  # get_url() without base on a mounted server: said once
        self._served = False  # listened on a port, or made a door (asgi_app/wsgi_app): _unserved_urls() stays quiet
        self._mounted = False  # made a door: get_url() without base names no address of this server's
        self._url_given = None  # the URL get_url() without base first gave, for _unserved_urls() at exit
        self._server_options = dict(max_connections=max_connections, max_body=max_body,
                                    allow_origins=allow_origins, idle_timeout=idle_timeout,
                                    header_timeout=header_timeout, body_timeout=body_timeout, workers=workers,
                                    reuse_port=reuse_port)
        self._server = None
        self._threads = _Threads()
        self._tasks = []
        self._task_stop = threading.Event()
        self._stopped = threading.Event()
        self._signals = {}
        self._app_token = None
        self._static_cache = {}
        self._seq_at_start = self._store.seq
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------
    def start(self, listen=True):
        """Bind and serve in background threads; returns True.  Raises OSError if the port is taken.

        The process keeps running after the calling code ends, until stop(),
        Ctrl-C or SIGTERM (both stop the server cleanly when the program has
        not set its own handlers).  Starts every thread the server uses.

        ``start(listen=False)`` starts the engine alone (the feed and the
        ``@every`` tasks) with no port of its own: for ``asgi_app()`` and
        ``wsgi_app()``, which call it themselves on their first request.
        """
        if not listen:
            return self._start_engine()
        with self._lock:
            if self._server is not None:
                return True
            if self._running:
                raise RuntimeError("this DSNSync already runs mounted in an app (asgi_app/wsgi_app); "
                                   "stop() it before start() binds a port")
            self._store.open()
            try:
                server = _Server((self.host, self.port), self._engine, self._feed, self._static,
                                 self._ssl_context, ipv6=":" in self.host, **self._server_options)
            except OSError as e:
                raise OSError(e.errno, "dsn-sync cannot listen on %s:%s: %s%s"
                              % (self.host, self.port, e.strerror or e, _listen_hint(e, self.host))) from None
            self._server = server
            self._served = True
            self.port = server.server_address[1]
            self._start_common()
            threads = self._threads
            threads.start("dsn-sync-reactor", server.reactor)
            for i in range(self.workers):
                threads.start("dsn-sync-worker-%d" % i, server.worker)
            # Not a daemon: a script that ends after start() keeps serving (issue: seed backends).
            threads.start("dsn-sync-accept", server.serve_forever, 0.05, daemon=False)
            self._catch_signals()
        log.info("dsn-sync serving %s", self.get_url())
        return True

    def _start_engine(self):
        """start(listen=False): the feed and the tasks, no socket; for the WSGI and ASGI mounts."""
        if self._running and self._pid == os.getpid():
            return True
        with self._lock:
            if self._running and self._pid != os.getpid():
                # Started, then forked (gunicorn --preload): the threads stayed in the parent.
                log.info("dsn-sync engine started before a fork: starting its threads again in process %d",
                         os.getpid())
                self._running, self._threads, self._process_lock = False, _Threads(), None
            if self._running:
                return True
            self._claim_process()
            self._store.open()
            self._start_common()
        log.info("dsn-sync engine running, mounted in the app (no port of its own)")
        return True

    def _claim_process(self):
        """On a store only one process can serve, claim this process's right to it (_claim_one_process),
        once per process: a claim made before a fork (gunicorn --preload) is the parent's."""
        if not self._store.durable and (self._process_lock is None or self._claimed_in != os.getpid()):
            self._process_lock = _claim_one_process(self._app_file)
            self._claimed_in = os.getpid()

    def _start_common(self):
        tables = self._store.tables
        for table, op in sorted({k for k in self._engine.handlers if k[0] not in tables}):
            log.warning("@on_%s('%s') is for a table this server does not have yet: clients' writes to it get "
                        "unknown_table until define_table('%s', ...) or sync('%s', ...) makes it%s",
                        op, table, table, table, _did_you_mean(table, tables))
        for table in sorted(set(self._engine.read_rules) - set(tables)):
            # A misspelt rule hides nothing, and the table it was meant for shows every row to every user.
            log.warning("@can_read('%s') is for a table this server does not have yet: it hides nothing until "
                        "define_table('%s', ...) or sync('%s', ...) makes it%s",
                        table, table, table, _did_you_mean(table, tables))
        self._running = True
        self._pid = os.getpid()
        self._stopped.clear()
        self._task_stop.clear()
        self._feed.stopping = False
        self._threads.start("dsn-sync-feed", self._feed.run)
        for seconds, fn in self._tasks:
            self._start_task(seconds, fn)

    def stop(self):
        """Stop accepting, drop every long-poll, close every connection, join every thread; returns True."""
        with self._lock:
            server, self._server = self._server, None
            running, self._running = self._running, False
            if not running:
                if self._process_lock is not None and self._claimed_in == os.getpid():
                    _release_claim(self._process_lock)  # a mount made (so claimed) but never started
                    self._process_lock = None
                self._store.close()
                return True
            self._task_stop.set()
            if server is not None:
                server.shutdown()  # 1. the accept loop returns: no new connections
            self._feed.stop()  # 2. parked pulls dropped; the feed thread returns
            if server is not None:
                server.stop()  # 3. the reactor and the workers return
            self._threads.join_all()  # 4. ... and every thread is joined (tasks too)
            if server is not None:
                server.close_all()  # 5. what is still connected is closed, the port freed
                server.server_close()
            self._release_signals()
            if self._process_lock is not None:
                _release_claim(self._process_lock)
                self._process_lock = None
            self._stopped.set()
        self._store.close()
        log.info("dsn-sync stopped")
        return True

    def serve_forever(self):
        """start() if needed, then wait until stop(), Ctrl-C or SIGTERM; returns True.

        For scripts with nothing else to do: ``sync.serve_forever()`` as the last line.
        """
        self.start()
        self._serving = True
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self._serving = False
        return True

    _serving = False

    def _catch_signals(self):
        """Ctrl-C and SIGTERM stop the server, where the program left their handlers at the defaults."""
        if threading.current_thread() is not threading.main_thread():
            return
        import signal  # deferred: embedded uses never get here from another thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
                self._signals[signum] = signal.signal(signum, self._on_signal)

    def _release_signals(self):
        if self._signals and threading.current_thread() is threading.main_thread():
            import signal
            for signum, handler in self._signals.items():
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, handler)
            self._signals = {}

    def _on_signal(self, signum, frame):
        # stop() joins threads and takes locks: not from inside a signal handler's frame.
        threading.Thread(target=self.stop, name="dsn-sync-stop", daemon=True).start()
        if self._serving or not threading.main_thread().is_alive():
            return  # serve_forever(), or the script has ended: stopping is all there is to do
        import signal
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(0)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self):
        """True between start() (or the first request of a mount) and stop()."""
        return self._running

    _running = False
    _process_lock = None
    _claimed_in = None  # the pid that made _process_lock
    _pid = None

    # -- mounting in an app ---------------------------------------------------
    def asgi_app(self, inline_handlers=False):
        """An ASGI 3 application speaking the whole protocol: mount it under any prefix.

        ``app.mount('/dsn', sync.asgi_app())`` (FastAPI, Starlette); clients then
        use ``get_url('https://example.com/dsn')``.  Long-polls and streamed
        pulls hold no thread.  The engine starts with the ASGI lifespan, or
        on the first request.  Short frames are answered on the event loop;
        a frame that calls an ``@on_<op>`` handler runs in a worker thread, as
        Starlette runs a plain ``def`` endpoint, unless ``inline_handlers=True``:
        then a handler that has proved quick may run on the loop too (see
        ``_ASGILanes``; for handlers that never block: no I/O, no locks).
        """
        self._served = self._mounted = True
        return _ASGIDoor(self, inline_handlers)

    def wsgi_app(self, max_wait=10, poll=2.0, max_held=8):
        """A WSGI callable speaking the whole protocol (Flask, Django, gunicorn, waitress).

        A waiting pull holds one of the WSGI server's threads for at most
        ``max_wait`` seconds, and at most ``max_held`` pulls wait at once;
        past that they are answered at once and clients pause ``poll``
        seconds between pulls (hello tells them both).  Keep ``max_held``
        below the server's thread count so requests of the app itself always
        find a thread (under waitress and gunicorn, whose thread counts it can
        read, the mount holds at most half of them, and warns).
        """
        _positive("max_wait", max_wait)
        _positive("poll", poll)
        _positive("max_held", max_held, int, zero=True)
        # Claimed now, not at the first request: a second worker process of this app then fails
        # as it loads (gunicorn stops with "Worker failed to boot"), instead of answering 500.
        with self._lock:
            try:
                self._claim_process()
            except RuntimeError as refusal:
                if not _in_uvicorn_worker():
                    raise
                # An app that makes its WSGI door as uvicorn loads it (Django's recipe serves both):
                # uvicorn starts a worker that fails as it loads again, for ever, unless it exits
                # with its startup-failure status, which stops the server (as the lifespan's does).
                log.error("%s", refusal)
                raise SystemExit(3) from refusal
        self._served = self._mounted = True
        return _WSGIDoor(self, max_wait, poll, max_held)

    # -- addresses and tokens -------------------------------------------------
    @property
    def instance(self):
        return self._keyring.instance

    def get_url(self, base=None):
        """The sync URL clients connect to: ``http://127.0.0.1:3000/sync/<instance>``.

        ``base`` is the public address where the app serves dsn-sync when it
        is mounted or behind a proxy (``'https://example.com/dsn'``); the sync
        path is appended to it.
        """
        if base is not None:
            if not isinstance(base, str) or not base.startswith(("http://", "https://", "/")):
                raise ValueError("base must be an absolute URL or path such as 'https://example.com/dsn', got %r" % (base,))
            return base.rstrip("/") + self._engine.base
        if (self._running or self._mounted) and self._server is None and not self._warned_url:
            self._warned_url = True  # once: a page may call it per request
            log.warning("get_url() without base names %s:%s, where this mounted server (no port of its own) does "
                        "not listen: pass the public address of the mount, get_url('https://example.com/dsn')",
                        self.host, self.port)
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = "[%s]" % host
        scheme = "https" if self._ssl_context is not None else "http"
        url = "%s://%s:%d%s" % (scheme, host, self.port, self._engine.base)
        if self._url_given is None and not self._served:
            with _UNSERVED_LOCK:
                if self._url_given is None:
                    self._url_given = url
                    _UNSERVED.add(self)
        return url

    def get_token(self):
        """The app's full-access token (reads and writes every table).

        Anyone holding it can do anything a client can: give it to trusted
        backends and to single-user tools, and mint narrow per-user tokens
        for browsers.  Its id is derived from the secret, so after a restart
        with the same secret a fresh get_token() speaks as the same token:
        writes resent from an outbox are still recognised by their mids.
        """
        with self._lock:
            if self._app_token is None:
                jti = b64u_encode(hkdf_expand(self._keyring.prk, b"app token jti", 9))
                self._app_token = self._keyring.mint({"v": 1, "jti": jti, "iat": int(time.time()),
                                                      "exp": None, "sub": None, "read": "*", "write": "*"})
            return self._app_token

    def issue_token(self, sub=None, ttl=3600, read="*", write=(), **claims):
        """Mint a token that speaks for one user, with an expiry and table rights.

        ``sub``: the user id (row rules and handlers see it as ``ctx.sub``).
        ``ttl``: seconds until it expires (None: never).  ``read``/``write``:
        ``'*'`` or a list of table names; by default it reads every table
        (narrowed per row by @can_read rules) and writes none.  Extra keyword
        claims are sealed in too and reach handlers in ``ctx.claims``.
        Stateless: nothing is stored; ``revoke()`` refuses it later.
        """
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise ValueError("sub must be a non-empty string (the user id) or None, got %r" % (sub,))
        if ttl is not None:
            _positive("ttl", ttl)
        reserved = sorted(set(claims) & {"v", "jti", "iat", "exp"})
        if reserved:
            raise ValueError("claims %s are set by issue_token itself" % reserved)
        now = int(time.time())
        body = dict(claims)
        body.update({"v": 1, "jti": b64u_encode(os.urandom(9)), "iat": now,
                     "exp": now + ttl if ttl is not None else None, "sub": sub,
                     "read": _rights_claim("read", read), "write": _rights_claim("write", write)})
        return self._keyring.mint(body)

    def revoke(self, token_or_jti):
        """Refuse a token from now on (401); kept in the store when it is durable.  Returns its jti."""
        jti, exp = token_or_jti, None
        if isinstance(token_or_jti, str) and token_or_jti.startswith("dsn1."):
            kid, _ = parse_token(token_or_jti)
            state = self._keyring.resolve(kid)
            if state is None:
                raise ValueError("that token was not minted by this server")
            jti, exp = state.jti, state.exp
        if not isinstance(jti, str) or not jti:
            raise ValueError("revoke() takes a token or its jti, got %r" % (token_or_jti,))
        self._store.revoke(jti, exp)
        self._engine.revoked.add(jti)
        return jti

    def subscription(self, name):
        """Decorator: ``fn(ctx, params) -> {table: filter}`` defines what ``client.subscribe(name, params)`` mirrors.

        ``ctx.sub`` and ``ctx.claims`` are the token's; ``params`` is the
        client's object: validate it, and raise to refuse (PermissionError ->
        ``forbidden``; ValueError, KeyError, TypeError -> ``invalid``, with
        your message).  Per table the filter is ``True`` (every row),
        ``{field: value}`` (equality; a list means "any of"; several fields must
        all match; the key field matches the key; values are strings,
        numbers, booleans or None, compared as JSON: 1 is not 1.0 or true) or
        a callable ``record -> bool``.  Equality filters are served from an
        index on each named field (built on first use, kept in memory by
        every store); a callable costs a decode and a call per change per
        subscribed client.  ``@can_read`` rules still apply on top.  The
        function runs once per token and distinct (name, params): keep it
        pure, and issue a new token when what it answers must change.
        """
        if not isinstance(name, str) or not _SUB_ID.fullmatch(name):
            raise ValueError("a subscription name is 1 to 40 of A-Z, a-z, 0-9, _ and -, got %r" % (name,))

        def register(fn):
            if not callable(fn):
                raise TypeError("@subscription('%s') decorates a function fn(ctx, params)" % name)
            self._engine.subscriptions[name] = fn
            return fn
        return register

    def can_read(self, table):
        """Decorator: ``rule(record, ctx) -> bool`` decides which rows of ``table`` a user's token sees.

        ``ctx.sub`` is the token's user.  Pulls and resets carry only the rows
        the rule admits; a change that moves a row out of a user's view
        reaches that user as a deletion, into view as an upsert.  The rule
        runs once per change per distinct user and under the store lock:
        keep it quick and pure.  Tokens without ``sub`` (the app's) see all.
        """
        check_table_name(table)

        def register(fn):
            if not callable(fn):
                raise TypeError("@can_read('%s') decorates a function" % table)
            self._engine.read_rules[table] = fn
            self._store.forget_rule_answers(table)  # answers cached under an older rule are void
            return fn
        return register

    # -- schema ---------------------------------------------------------------
    def define_table(self, name, schema):
        """Define (or redefine) a table: ``{'key': 'user_id', 'fields': ['name', 'email']}``.

        ``fields`` lists the allowed fields besides the key (None allows any).
        Raises ValueError for a bad name or schema.  After start(), connected
        clients receive the new schema with their next pull.
        """
        check_table_name(name)
        if not isinstance(schema, dict):
            raise ValueError("schema for %r must be a dict like {'key': 'id', 'fields': ['name']}" % name)
        extra = sorted(set(schema) - {"key", "fields"})
        if extra:
            raise ValueError("schema for %r has unknown entries %s (only 'key' and 'fields')" % (name, extra))
        keyfield = schema.get("key", "id")
        if not isinstance(keyfield, str) or not keyfield:
            raise ValueError("schema 'key' for %r must be a non-empty field name, got %r" % (name, keyfield))
        fields = schema.get("fields")
        if fields is not None:
            if isinstance(fields, str) or not isinstance(fields, (list, tuple)):
                raise ValueError("schema 'fields' for %r must be a list of field names, got %r" % (name, fields))
            fields = list(fields)
            bad = [f for f in fields if not isinstance(f, str) or not f]
            if bad:
                raise ValueError("schema 'fields' for %r must be non-empty strings, got %r" % (name, bad))
            if len(set(fields)) != len(fields):
                raise ValueError("schema 'fields' for %r repeats a field: %r" % (name, fields))
            if keyfield in fields:
                raise ValueError("schema for %r lists its key %r in 'fields'; the key is not a field" % (name, keyfield))
        self._check_table_count(name)
        self._store.set_table(name, {"key": keyfield, "fields": fields})
        return True

    def _check_table_count(self, name):
        if name not in self._store.tables and len(self._store.tables) >= self.max_tables:
            raise ValueError("cannot add table %r: this server already has %d tables (max_tables)"
                             % (name, self.max_tables))

    @property
    def tables(self):
        """The schema: ``{name: {'key': ..., 'fields': [...] or None}}`` (a copy)."""
        with self._store.lock:
            return {n: dict(s) for n, s in self._store.tables.items()}

    # -- records --------------------------------------------------------------
    def sync(self, table, key, data):
        """Upsert ``data`` into ``table``/``key``, shallow-merging into an existing record; returns True.

        Every connected client receives the new record.  A table never
        defined is created on the fly with open fields.  Raises ValueError for
        unknown fields, a bad key, or data that is not JSON-serialisable (at
        this call, not later on the wire).  Thread-safe; O(1) plus encoding.
        """
        spec = self._table_spec(table, create=True)
        check_key(key)
        if not isinstance(data, dict):
            raise TypeError("sync() data must be a dict, got %s" % type(data).__name__)
        data, encoded = self._engine.clean(table, key, data, spec, self._encode)
        self._store.apply(table, key, "upsert", data, encoded=encoded)
        return True

    def remove(self, table, key):
        """Delete a record (clients receive the deletion); True if it existed, False if not."""
        self._table_spec(table)
        check_key(key)
        try:
            self._store.apply(table, key, "delete")
        except NotFound:
            return False
        return True

    def get(self, table, key):
        """The record (a fresh dict, without the key field), or None if absent (also for a table never made)."""
        return self._store.get(table, key)

    def get_all(self, table):
        """``{key: record}`` for every record of ``table`` (copies; {} for a table never made).  O(records)."""
        if table not in self._store.tables:
            return {}
        return self._store.get_all(table)

    def batch(self):
        """``with sync.batch(): ...``: many sync()/remove() calls, one feed wake-up (one commit when durable)."""
        return _Batch(self._store)

    def _table_spec(self, table, create=False):
        spec = self._store.tables.get(table)
        if spec is None:
            check_table_name(table)
            if not create:
                raise UnknownTable("no table %r: define_table() it or sync() into it first" % (table,))
            self._check_table_count(table)
            self._store.set_table(table, {"key": "id", "fields": None})
            spec = self._store.tables[table]
        return spec

    # -- handlers and tasks ---------------------------------------------------
    def _on(self, op, table):
        check_table_name(table)

        def register(fn):
            if not callable(fn):
                raise TypeError("@on_%s('%s') decorates a function" % (op, table))
            self._engine.handlers[(table, op)] = (fn, _handler_arity(fn, "@on_%s('%s')" % (op, table)))
            return fn
        return register

    def on_create(self, table):
        """Decorator: ``fn(data)`` or ``fn(data, ctx)`` decides on a client's create.

        ``data`` holds the key field and every field.  Return True/None to
        apply it, False to refuse (``rejected``), a dict to store instead of
        the client's data; raise to refuse with ``handler_error`` (logged with
        its traceback here, never sent), or raise ``DSNError(msg, 'rejected')``
        (or invalid/forbidden/exists/not_found) to send ``msg``.
        """
        return self._on("create", table)

    def on_update(self, table):
        """Decorator like on_create; ``data`` holds the key field and the changed fields only."""
        return self._on("update", table)

    def on_delete(self, table):
        """Decorator like on_create; ``data`` holds the key field only."""
        return self._on("delete", table)

    def every(self, seconds):
        """Decorator: run ``fn()`` every ``seconds`` in a daemon thread while the server runs.

        An exception is logged and the task carries on; stop() ends it.
        """
        _positive("every() seconds", seconds)

        def register(fn):
            self._tasks.append((seconds, fn))
            if self.running:
                self._start_task(seconds, fn)
            return fn
        return register

    def _start_task(self, seconds, fn):
        self._threads.start("dsn-sync-every-%s" % getattr(fn, "__name__", "task"), self._task_loop, seconds, fn)

    def _task_loop(self, seconds, fn):
        lead = "every:%s:%s" % (getattr(fn, "__module__", ""), getattr(fn, "__qualname__", fn))
        while not self._task_stop.wait(seconds):
            try:
                # On a shared store the task runs on one node of the cluster: the one that
                # holds its lock (a PostgreSQL advisory lock, released when that node dies).
                if self._store.shared and not self._store.try_lead(lead):
                    continue
                fn()
            except Exception:
                log.exception("background task %s raised; it runs again in %s s", getattr(fn, "__name__", fn), seconds)

    # -- introspection --------------------------------------------------------
    def stats(self):
        """Counters: connections, requests, waiting long-polls, seq, changes, records, bytes in/out."""
        server, store = self._server, self._store
        with store.lock:
            seq, epoch = store.seq, store.epoch
        return {"connections": server.connections() if server else 0, "requests": self._engine.requests,
                "waiting": self._feed.waiting, "epoch": epoch, "seq": seq,
                "changes": seq - self._seq_at_start, "records": store.count(),
                "tables": len(store.tables), "bytes_in": server.bytes_in if server else 0,
                "bytes_out": server.bytes_out if server else 0}

    _prefix_warned = False

    def _prefix_hint(self, path, name):
        """Once: requests reach a mount with its prefix still in their path (an app that routes by prefix
        but does not hand it over), so every client URL under the prefix misses."""
        prefix = None if self._prefix_warned else _prefix_left(self._engine.base, path)
        if prefix:
            self._prefix_warned = True
            log.warning("dsn-sync got %s with its mount's prefix %s still in the path: the app in front must pass "
                        "the prefix as %s and strip it from the path, or every client URL under %s gets 404 "
                        "(README: Mounting in your app)", path[:200], prefix[:100], name, prefix[:100])

    def _static(self, path, method, headers):
        """A GET or HEAD: (status, body, extra headers, content type) for the transport to send.

        The client file and the inspector (PROTOCOL.md 3 and 6), cached for an
        hour with an ETag; ``/`` a short page saying what this is; any other
        path a 405 with a line of text.
        """
        if path == "/":
            return 200, (_HOME % __version__).encode("utf-8"), "", "text/html; charset=utf-8"
        name, content_type = _STATIC.get("inspect" if path == self._engine.base + "/inspect" else path, (None, None))
        if name is None:
            text = ("dsn-sync: %s is not a page. Sync URLs take POST frames from dsn_client.js; "
                    "GET /dsn_client.js (under the mount's prefix, if any) is the client, <sync URL>/inspect "
                    "the inspector.\n" % path)
            prefix = _prefix_left(self._engine.base, path) if self._mounted else None
            if prefix:
                text += ("This path still starts with its mount's prefix, %s: the app in front must pass the prefix "
                         "as the ASGI scope's root_path or WSGI's SCRIPT_NAME, and strip it from the path (README: "
                         "Mounting in your app).\n" % prefix)
            elif path.startswith("/sync/") and not path.startswith(self._engine.base + "/") and path != self._engine.base:
                # An old bookmark: an in-memory server (or one given a new secret) has a new instance per start.
                text += ("This URL's instance is not this server's: a URL from before a restart with a new secret "
                         "(an in-memory server without one makes a new one each start). Get the sync URL again.\n")
            # The path is the caller's: nosniff keeps a browser from reading it as anything but text.
            return 405, text.encode("utf-8"), "Allow: POST, OPTIONS\r\nX-Content-Type-Options: nosniff\r\n", \
                "text/plain; charset=utf-8"
        found = self._static_file(name)
        if found is None:
            return 404, b"", "", None
        body, etag = found
        extra = "Cache-Control: public, max-age=3600\r\nETag: %s\r\n" % etag
        if name.endswith(".html"):  # the inspector: no framing by other sites, no referrer leaks
            extra += "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\n"
        if headers.get("if-none-match") == etag:
            return 304, b"", extra, None
        return 200, body, extra, content_type

    def _static_file(self, name):
        """(bytes, etag) of a shipped file, read once; None (and a warning) if it is nowhere."""
        found = self._static_cache.get(name)
        if found is None:
            body = _static_body(name)
            if body is None:
                log.warning("GET %s: not beside the module and not embedded in it", name)
                return None
            found = self._static_cache[name] = (body, '"%s"' % hashlib.sha256(body).hexdigest()[:32])
        return found

    def inspector_url(self):
        """Where the live inspector is served: ``<sync URL>/inspect`` (it asks for a token)."""
        return self.get_url() + "/inspect"


class _Batch:
    def __init__(self, store):
        self._store = store

    def __enter__(self):
        self._store.begin_batch()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._store.end_batch(ok=exc_type is None)


def _rights_claim(name, value):
    if value == "*":
        return "*"
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError("%s must be '*' or a list of table names, got %r" % (name, value))
    return sorted(check_table_name(t) for t in value)


def _handler_arity(fn, where):
    """True if ``fn`` takes (data, ctx), False if (data); TypeError at decoration time for anything else."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False  # a builtin without a signature: called as fn(data)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    required_kw = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return True
    if required_kw or len(required) > 2 or not positional:
        raise TypeError("%s handler %s must take (data) or (data, ctx); its signature is %s"
                        % (where, getattr(fn, "__name__", fn), inspect.signature(fn)))
    return len(positional) >= 2


class _Threads:
    """Every thread a DSNSync runs, started here and joined here (socketserver's ThreadingMixIn idea)."""

    def __init__(self):
        self._threads = []
        self._lock = threading.Lock()

    def start(self, name, target, *args, daemon=True):
        thread = threading.Thread(target=target, args=args, name=name, daemon=daemon)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def join_all(self, timeout=5.0):
        """Join every thread started so far (not the caller's own); they must have been told to return."""
        with self._lock:
            threads, self._threads = self._threads, []
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


# =============================================================================
# Python client
# =============================================================================


class _Transient(Exception):
    """A failure worth retrying after a backoff: network, 5xx, 400, 413, unreadable answer."""


class _Clock(_Transient):
    """Error ``clock``: the offset was just re-learned from ``now``; retry at once with a new frame."""


class _Gone(Exception):
    """404: the endpoint path is no longer live; say hello again at the base path."""


def _split_url(url):
    from urllib.parse import urlsplit  # deferred: only clients need it
    if isinstance(url, str) and _TOKEN_RE.fullmatch(url.strip()):  # never echoed: a token is a key
        raise ValueError("got a token where the sync URL goes: connect(url, token) takes the URL first")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if isinstance(url, str) and url.startswith("/") and not parts.netloc:
            raise ValueError("the Python client needs the whole sync URL, with its host, got the path %r (a browser "
                             "takes a path as its page's; here use get_url('https://example.com/<prefix>'), or "
                             "'http://host:port' + that path)" % (url,))
        raise ValueError("a sync URL looks like http://host:3000/sync/<instance>, or under a mount "
                         "https://example.com/<prefix>/sync/<instance>, got %r" % (url,))
    at = parts.path.rfind("/sync/")  # a mount's prefix may hold /sync/ too
    instance = parts.path[at + 6:].rstrip("/")
    if at < 0 or not instance or "/" in instance:
        raise ValueError("the sync URL must end in /sync/<instance> (copy it from get_url()), got %r" % (url,))
    return parts.scheme, parts.hostname, parts.port, parts.path[:at], parts.path[at:].rstrip("/")


class Client:
    """A Python mirror of a dsn-sync server, for services, scripts, tests and benchmarks.

    A background thread says hello, then long-polls; the mirror (``get``,
    ``get_all``) follows the server, and ``on_data_change`` callbacks run on
    that thread after each change.  Writes (``create``/``update``/``delete``)
    block until the server answers, retrying network failures with the same
    ``mid`` (so a retry never applies twice), and raise DSNError with the
    protocol's code when refused.  Use ``connect(url, token)``.
    """

    max_answer = 64 << 20  # bytes of one answer read before it is authenticated; past it, refused unread

    def __init__(self, url, token, wait=25, write_timeout=30.0, ssl_context=None, on_status=None, max_answer=None):
        import http.client  # deferred: the server never needs it
        self._http = http.client
        self.url = url
        self._scheme, self._host, self._port, self._prefix, self._base = _split_url(url)
        self._token_source = token if callable(token) else None
        self._set_token(token() if callable(token) else token)
        self.wait = wait
        self.write_timeout = write_timeout
        if max_answer is not None:
            self.max_answer = _positive("max_answer", max_answer, int)
        self._ssl_context = ssl_context
        self._on_status = on_status
        self._ep = self._base
        self._offset = 0
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._write_conn = None
        self._pull_conn = None
        self._tables = {}
        self.schema = {}
        self.cursor = None
        self._acked = {}
        self._listeners = collections.defaultdict(list)
        self._ready = threading.Event()
        self._settled = threading.Event()  # ready, closed, or the feed stopped (_stopped_by): wait_ready returns
        self._stopped_by = None  # the AuthError that stopped the feed (a refused token with no token function)
        self._no_instance = None  # before the first sync, a 404 on hello: why (wait_ready raises it; the feed retries)
        self._closed = threading.Event()
        self._wake = threading.Event()  # cuts the feed's backoff short: a write got through, or close()
        self._epoch = None  # the server's epoch as last heard (hello, pull), for judging acks
        # Subscription mode (README, protocol section 7): None until the first subscribe()
        self._subs = None  # {id: {"name", "params"}} wanted
        self._handles = {}  # {id: [Subscription]}
        self._held = set()  # ids whose rows the mirror holds as of the cursor
        self._members = {}  # {(table, key): {ids}} selecting each mirrored row
        self._pending = {}  # {(table, key): ack seq}: acked rows not yet placed in a subscription
        self._interrupted = False  # the pull was cut short on purpose (a new subscription)
        self.status = "connecting"
        self.resets = 0
        self._thread = threading.Thread(target=self._run, name="dsn-sync-client", daemon=True)
        self._thread.start()

    def _set_token(self, token):
        kid, secret = parse_token(token)
        c2s, s2c = traffic_keys(secret)
        self._kid = kid.encode("ascii")
        self._c2s, self._s2c = SealKey(c2s), SealKey(s2c)

    # -- public ---------------------------------------------------------------
    def wait_ready(self, timeout=None):
        """Block until the first sync is in: True if it is, False on timeout or after close().

        Raises the DSNError (``unauthorized`` or ``expired``) that stopped the
        feed: a refused token with no token function to ask for a fresh one;
        and ``wrong_url`` when no instance answered at the URL before the first
        sync (saying whether it is stale or lacks a mount's prefix; the feed
        keeps trying, and a later call waits again).
        """
        self._settled.wait(timeout)
        if self._ready.is_set():
            return True
        if self._stopped_by is not None:
            raise self._stopped_by
        if self._no_instance is not None:
            error, self._no_instance = self._no_instance, None
            self._settled.clear()
            if self._ready.is_set() or self._closed.is_set() or self._stopped_by is not None:
                self._settled.set()  # settled meanwhile: a later call must not wait for it again
            raise error
        return False

    def get_all(self, table):
        with self._lock:
            return {k: dict(r) for k, r in self._tables.get(table, {}).items()}

    def get(self, table, key):
        with self._lock:
            record = self._tables.get(table, {}).get(key)
            return dict(record) if record is not None else None

    def subscribe(self, name, params=None):
        """Mirror the rows that the server's ``@sync.subscription(name)`` selects for ``params``.

        Returns a Subscription: ``wait_ready(timeout)`` blocks until its rows
        are in (and raises the server's DSNError if it refused), ``close()``
        releases it.  From the first call on, the mirror holds the union of
        the subscriptions only; the same name and params share one.
        """
        params = dict(params or {})
        canon = json.dumps([name, params], sort_keys=True, separators=(",", ":"))
        sid = b64u_encode(hashlib.sha256(canon.encode("utf-8")).digest()[:12])
        handle = Subscription(self, sid, name, params)
        with self._lock:
            if self._subs is None:  # from whole tables to subscriptions: the next pull is a full reset
                self._subs, self.cursor = {}, None
            self._handles.setdefault(sid, []).append(handle)
            if sid in self._held:
                handle._ready.set()
            self._subs[sid] = {"name": name, "params": params}
        self._interrupt()
        return handle

    def _unsubscribe(self, handle):
        with self._lock:
            handles = self._handles.get(handle.id, [])
            if handle not in handles:
                return
            handles.remove(handle)
            if handles:
                return
            del self._handles[handle.id]
            self._subs.pop(handle.id, None)
            self._held.discard(handle.id)
            touched = set()
            for (table, key), ids in list(self._members.items()):
                ids.discard(handle.id)
                if not ids:
                    del self._members[(table, key)]
                    self._tables.get(table, {}).pop(key, None)
                    touched.add(table)
        self._notify(touched)

    def _interrupt(self):
        """Cut a waiting pull short so the feed asks again at once (with the new subscription set)."""
        if self._ready.is_set() and self._pull_conn is not None:
            self._interrupted = True
            _abort(self._pull_conn, close=False)

    def _since(self):
        if self.cursor is None or self._subs is None:
            return self.cursor
        return dict(self.cursor, subs=sorted(self._held))

    def _refused(self, error):
        """The server refused subscription ``error["sub"]``: drop it and fail its handles."""
        sid = error.get("sub")
        with self._lock:
            handles = self._handles.pop(sid, [])
            if self._subs is not None:
                self._subs.pop(sid, None)
            self._held.discard(sid)
        for h in handles:
            h.error = DSNError(error.get("message", "refused"), error.get("code", "invalid"))
            h._ready.set()
        if not handles:
            raise _Transient("%s: %s" % (error.get("code"), error.get("message")))

    def on_data_change(self, table, callback):
        """Call ``callback(all_records)`` now and after every change to ``table``; returns an unsubscribe function."""
        with self._lock:
            self._listeners[table].append(callback)
            snapshot = {k: dict(r) for k, r in self._tables.get(table, {}).items()}
        self._call(callback, snapshot)

        def off():
            with self._lock:
                if callback in self._listeners[table]:
                    self._listeners[table].remove(callback)
        return off

    def create(self, table, key, data):
        """Create a record; returns the stored record.  DSNError(code) if refused (e.g. ``exists``)."""
        return self._write("create", table, key, data)

    def update(self, table, key, data):
        """Merge ``data`` into a record; returns the stored record."""
        return self._write("update", table, key, data)

    def delete(self, table, key):
        """Delete a record; returns None."""
        return self._write("delete", table, key, None)

    def close(self):
        self._closed.set()
        self._settled.set()
        self._wake.set()
        for conn in (self._pull_conn, self._write_conn):
            _abort(conn, close=False)  # the client's own thread closes what it reads
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport ------------------------------------------------------------
    def _connection(self, timeout):
        if self._scheme == "https":
            return self._http.HTTPSConnection(self._host, self._port or 443, timeout=timeout, context=self._ssl_context)
        return self._http.HTTPConnection(self._host, self._port or 80, timeout=timeout)

    def _wrong_url(self):
        """Why hello found no instance at the URL: whether dsn-sync answers at its prefix at all
        (it serves dsn_client.js there) tells a stale URL from a wrong prefix."""
        said = "no dsn-sync instance at %s (HTTP 404 on hello)" % self.url
        conn = self._connection(10)
        try:
            conn.request("HEAD", self._prefix + "/dsn_client.js")
            served = conn.getresponse().status == 200
        except (OSError, self._http.HTTPException):
            return said + ": is the URL right?"
        finally:
            conn.close()
        where = "%s://%s%s%s" % (self._scheme, self._host, ":%d" % self._port if self._port else "", self._prefix or "/")
        if served:
            return ("%s: dsn-sync answers at %s, but this instance is not there: the server has a new URL (a server "
                    "without a fixed secret gets one at every start); ask the backend for the current one" % (said, where))
        return ("%s, and no dsn-sync answers at %s: if dsn-sync is mounted in an app, the URL must include the "
                "mount's prefix, as get_url('https://host/prefix') gives it" % (said, where))

    def _exchange(self, conn, op, fields, at_base=False):
        """One request/answer on ``conn``; returns the answer dict (ok or not).

        Raises _Gone on 404, AuthError on 401, _Transient on anything retryable.
        """
        path = self._base if at_base else self._ep
        body = {"op": op, "t": _now_ms() + self._offset}
        body.update(fields)
        frame = request_frame(self._kid, self._c2s, path, _json_checked(body).encode("utf-8"))  # the app's data
        nonce = frame[3 + len(self._kid):][:NONCE_SIZE]
        sent = time.time()
        try:
            conn.request("POST", self._prefix + path, body=frame, headers={"Content-Type": "text/plain"})
            sock = conn.sock  # an answer with Connection: close takes it from conn, yet is read from it
            response = conn.getresponse()
            data = self._read_answer(conn, sock, response, time.monotonic() + (conn.timeout or 60))
        except (OSError, self._http.HTTPException) as e:
            conn.close()
            raise _Transient("network: %s" % (e,))
        except _Transient:
            conn.close()
            raise
        if response.status == 404:
            raise _Gone()
        if response.status == 401:
            raise AuthError("the server refused the token (401): it is revoked, forged, or from another server")
        if response.status != 200:
            raise _Transient("HTTP %d" % response.status)
        plain = open_response(self._s2c, nonce, data)
        if plain is None:
            raise _Transient("an answer that does not authenticate")
        answer = _loads(plain)
        now = answer.get("now")
        if type(now) is int:
            self._offset = int(now - (sent + time.time()) * 500)
        if isinstance(answer.get("ep"), str) and answer["ep"].startswith(self._base):
            self._ep = answer["ep"]
        if not answer.get("ok") and answer.get("error", {}).get("code") == "clock":
            raise _Clock("clock adjusted")
        return answer

    def _read_answer(self, conn, sock, response, deadline):
        """An answer's body, read within ``deadline`` as a whole and at most ``max_answer`` bytes.

        Nothing is authenticated before it is read, so whoever answers at the
        URL (a wrong host, a proxy, a man in the middle of plain http) could
        otherwise send an endless body into memory, or one byte at a time to
        hold a write past ``write_timeout``.  Either is a network failure here:
        the connection is closed and the request retried.
        """
        limit = self.max_answer
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise _Transient("an answer of %s bytes, over max_answer (%d): not read" % (length.strip(), limit))
        parts, size = [], 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Transient("the answer did not arrive whole within %g s" % (conn.timeout or 60))
                if sock is not None:
                    sock.settimeout(left)
                part = response.read1(65536) if response.length != 0 else b""
                if not part:
                    response.close()  # as read() does at the end: the kept-alive connection may send again
                    return b"".join(parts)
                size += len(part)
                if size > limit:
                    raise _Transient("an answer over max_answer (%d bytes): cut off" % limit)
                parts.append(part)
        finally:
            if sock is not None and conn.sock is sock:
                sock.settimeout(conn.timeout)  # the kept-alive connection's next request: the whole timeout

    def _refresh_token(self):
        if self._token_source is None:
            return False
        try:
            self._set_token(self._token_source())
        except Exception as e:
            log.warning("the token function failed: %s", e)
            return False
        self._ep = self._base
        return True

    def _set_status(self, status, detail=None):
        if status != self.status:
            self.status = status
            if self._on_status is not None:
                self._call(self._on_status, status, detail)

    def _call(self, fn, *args):
        try:
            fn(*args)
        except Exception:
            log.exception("a dsn-sync client callback raised")

    # -- feed -----------------------------------------------------------------
    def _run(self):
        backoff = 0.5
        need_hello, pages = True, None
        wait, poll = self.wait, 0.0
        while not self._closed.is_set():
            if self._pull_conn is None:
                self._pull_conn = self._connection(self.wait + 15)
            try:
                if need_hello:
                    hello = _raise_for(self._exchange(self._pull_conn, "hello", {}, at_base=True))
                    self._epoch = hello.get("epoch")
                    # A server mounted in a WSGI app holds pulls briefly, and may say to pace them.
                    wait = min(self.wait, hello.get("wait", self.wait))
                    poll = hello.get("poll") or 0.0
                    need_hello = False
                fields = self._pull_fields(pages, wait)
                began = time.monotonic()
                answer = self._exchange(self._pull_conn, "pull", fields)
                if not answer.get("ok") and (answer.get("error") or {}).get("sub") is not None:
                    self._refused(answer["error"])
                    pages = None
                    continue
                answer = _raise_for(answer)
                since = fields.get("since")
                if poll and not answer.get("changes") and not answer.get("reset") \
                        and not (isinstance(since, dict) and answer.get("seq") != since.get("seq")) \
                        and (not fields.get("wait") or time.monotonic() - began < fields["wait"] / 2):
                    # Answered at once with nothing, its cursor where it was: the server asks for
                    # pacing. (A cursor that moved is catching up past changes it may not read.)
                    self._pause(poll)
                pages = self._on_pull(answer, pages)
                backoff = 0.5
                if pages is None:
                    self._set_status("online")
                    self._ready.set()
                    self._settled.set()
            except _Clock:
                continue
            except _Gone:
                if need_hello:  # 404 on hello itself: a wrong URL (PROTOCOL.md 5: back off, report it)
                    if not self._ready.is_set() and self._no_instance is None:  # wait_ready raises it, at once
                        self._no_instance = DSNError(self._wrong_url(), "wrong_url")
                        self._settled.set()
                    self._set_status("error", "wrong_url")
                    self._pause(backoff)
                    backoff = min(backoff * 2, 30.0)
                need_hello = True
            except AuthError as e:
                self._set_status("error", e.code)
                if not self._refresh_token():
                    self._stopped_by = e
                    self._settled.set()
                    break  # a 401 is final for this token (PROTOCOL.md 5); writes keep raising AuthError
                need_hello = True
            except (_Transient, ValueError) as e:
                if self._closed.is_set():
                    break
                self._pull_conn = None
                if self._interrupted:  # cut short by subscribe(): ask again at once
                    self._interrupted = False
                    continue
                self._set_status("offline", str(e))
                self._pause(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as e:  # anything else (an answer this client cannot file, MemoryError): it carries on
                if self._closed.is_set():
                    break
                log.exception("the dsn-sync client's feed failed; it says hello again after %.1f s", backoff)
                _abort(self._pull_conn)
                self._pull_conn = None
                need_hello, pages = True, None
                self._set_status("offline", "%s: %s" % (type(e).__name__, e))
                self._pause(backoff)
                backoff = min(backoff * 2, 30.0)
        _abort(self._pull_conn)

    def _pull_fields(self, pages, wait):
        """The next pull: a reset's next page, or the cursor (with the subscription set, if any)."""
        if pages is not None:
            fields = {"since": pages.get("since"), "next": pages["next"], "wait": 0}
        else:
            # A pending ack (subscription mode) asks once without waiting: the answer's
            # cursor passes it, and the row leaves if no subscription placed it.
            waits = self._ready.is_set() and not self._pending
            fields = {"since": self._since(), "wait": wait if waits else 0}
        with self._lock:
            if self._subs is not None:
                fields["subs"] = dict(self._subs)
        return fields

    def _pause(self, seconds):
        """Back off with jitter, unless a write proves the server is back (or the client closes)."""
        self._wake.wait(seconds * (0.5 + _jitter()))
        self._wake.clear()

    def _on_pull(self, answer, pages):
        """Apply one pull answer; returns the pending reset pages (None when none)."""
        self._epoch = answer.get("epoch", self._epoch)
        if answer.get("reset") and "sub" in answer:
            return self._on_sub_page(answer, pages)
        if answer.get("reset"):
            if pages is None or pages.get("epoch") != answer["epoch"] or pages.get("seq") != answer["seq"]:
                pages = {"epoch": answer["epoch"], "seq": answer["seq"], "records": {}}
            for table, rows in answer.get("records", {}).items():
                pages["records"].setdefault(table, {}).update(rows)
            if answer.get("more"):
                pages["next"] = answer["next"]
                return pages
            with self._lock:
                touched = set(self._tables) | set(pages["records"])
                self._tables = {t: dict(rows) for t, rows in pages["records"].items()}
                self.schema = answer.get("tables", self.schema)
                self.cursor = {"epoch": answer["epoch"], "seq": answer["seq"], "sv": answer["sv"]}
                self._acked.clear()
                self.resets += 1
            self._notify(touched)
            return None
        touched = set()
        with self._lock:
            seq = answer["seq"]
            for change in answer.get("changes", ()):
                table, key, record = change[:3]
                if len(change) > 3:  # subscription mode: the held subscriptions selecting the row
                    ids = set(change[3]) & self._held
                    self._pending.pop((table, key), None)
                    if ids and record is not None:
                        self._members[(table, key)] = ids
                    else:
                        self._members.pop((table, key), None)
                        record = None
                acked = self._acked.get((table, key))
                if acked is not None:
                    if acked > seq and record is not None:
                        continue  # our own write's ack is newer than this state
                    del self._acked[(table, key)]
                rows = self._tables.setdefault(table, {})
                # The change our own write's ack put in the mirror already: no news for the callbacks.
                if record is None:
                    if rows.pop(key, None) is None:
                        continue
                elif rows.get(key) == record:
                    continue
                else:
                    rows[key] = record
                touched.add(table)
            for (table, key), acked in list(self._pending.items()):
                if acked <= seq:  # the feed passed the ack and never placed the row: outside every subscription
                    del self._pending[(table, key)]
                    self._tables.get(table, {}).pop(key, None)
                    touched.add(table)
            if "tables" in answer:
                self.schema = answer["tables"]
            self.cursor = {"epoch": answer["epoch"], "seq": seq, "sv": answer.get("sv", self.cursor["sv"])}
        self._notify(touched)
        return None

    def _on_sub_page(self, answer, pages):
        """One page of a full or partial reset in subscription mode; the mirror changes on the last."""
        partial = answer.get("partial", False)
        if (pages is None or pages.get("epoch") != answer["epoch"] or pages.get("seq") != answer["seq"]
                or pages.get("partial") != partial):
            pages = {"epoch": answer["epoch"], "seq": answer["seq"], "partial": partial, "rows": {}, "seen": set(),
                     "since": self._since() if partial else None}
        sid = answer.get("sub")
        for table, rows in answer.get("records", {}).items():
            for key, record in rows.items():
                slot = pages["rows"].setdefault((table, key), [record, set()])
                slot[0] = record
                slot[1].add(sid)
        if sid is not None:
            pages["seen"].add(sid)
        if answer.get("more"):
            pages["next"] = answer["next"]
            return pages
        with self._lock:
            wanted = set(self._subs or ())
            if not partial:
                touched = set(self._tables)
                self._tables, self._members, self._pending = {}, {}, {}
                self._acked.clear()
                self._held = pages["seen"] & wanted
                self.schema = answer.get("tables", self.schema)
                self.cursor = {"epoch": answer["epoch"], "seq": answer["seq"], "sv": answer["sv"]}
                self.resets += 1
            else:
                touched = set()
                self._held |= pages["seen"] & wanted
            for (table, key), (record, ids) in pages["rows"].items():
                ids &= self._held
                if not ids:
                    continue
                acked = self._acked.get((table, key))
                if acked is None or acked <= answer["seq"]:
                    self._tables.setdefault(table, {})[key] = record
                self._members[(table, key)] = self._members.get((table, key), set()) | ids
                self._pending.pop((table, key), None)
                touched.add(table)
            ready = [h for sid in self._held for h in self._handles.get(sid, ())]
        for h in ready:
            h._ready.set()
        self._notify(touched)
        return None

    def _notify(self, tables):
        for table in tables:
            with self._lock:
                listeners = list(self._listeners.get(table, ()))
                snapshot = {k: dict(r) for k, r in self._tables.get(table, {}).items()} if listeners else None
            for fn in listeners:
                self._call(fn, snapshot)

    # -- writes ---------------------------------------------------------------
    def _write(self, op, table, key, data):
        m = {"op": op, "table": table, "key": key, "mid": b64u_encode(os.urandom(12))}
        if data is not None:
            try:
                _json_checked(data)
            except RecursionError:
                raise DSNError("%s(%r, %r, data): data nests deeper than %d levels" % (op, table, key, MAX_DEPTH),
                               "invalid")
            except (TypeError, ValueError) as e:
                if isinstance(e, ValueError) and "Out of range float" in str(e):
                    raise DSNError("%s(%r, %r, data): data holds NaN or Infinity, which JSON has no value for: "
                                   "send None or a string instead" % (op, table, key), "invalid")
                raise DSNError("%s(%r, %r, data): data is not JSON: %s. Convert the value first (str() or "
                               ".isoformat() a datetime, list() a set)" % (op, table, key, e), "invalid")
            m["data"] = data
        answer, answer_epoch = self._send_write(op, m)
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise DSNError(err.get("message", "refused"), err.get("code", "bad_request"))
        return self._apply_ack(table, key, answer, answer.get("epoch", answer_epoch))

    def _send_write(self, op, m):
        """Send one write until it is answered: (answer, the epoch known when it came)."""
        deadline = time.monotonic() + self.write_timeout
        backoff = 0.1
        interrupted = False  # the server may have restarted (a new epoch) since we last heard
        with self._write_lock:
            while True:
                if self._closed.is_set():
                    raise DSNError("the client is closed")
                if self._write_conn is None:
                    self._write_conn = self._connection(self.write_timeout)
                try:
                    answer = self._exchange(self._write_conn, op, m)
                    answer_epoch = self._epoch  # the epoch as we knew it when the answer came
                    if answer.get("ok") or (answer.get("error") or {}).get("code") != "expired":
                        break
                    if interrupted:
                        # An earlier attempt may have been applied with its answer lost; the
                        # mid ledger is per token, so resending under a fresh token could
                        # apply it twice.  Say so rather than guess.
                        raise DSNError("the token expired while this write's outcome was unknown; it may have "
                                       "been applied: check the record before writing it again", "uncertain")
                    if not self._refresh_token():  # expired answers are not in the mid ledger: retry is safe
                        raise AuthError(answer["error"].get("message", "the token has expired"), "expired")
                except _Clock:
                    continue
                except AuthError:
                    if not self._refresh_token():
                        raise
                except (_Transient, _Gone) as e:
                    interrupted = True
                    if isinstance(e, _Gone):  # the endpoint rotated away: hello at the base path, then retry
                        try:
                            _raise_for(self._exchange(self._write_conn, "hello", {}, at_base=True))
                            continue
                        except _Gone:  # 404 on hello itself: no such instance (PROTOCOL.md 5), not a failure to wait out
                            raise DSNError(self._wrong_url(), "wrong_url")
                        except _Transient as t:
                            e = t
                    else:
                        self._write_conn = None
                    if time.monotonic() > deadline:
                        raise DSNError("no answer from the server within %s s: %s" % (self.write_timeout, e), "offline")
                    time.sleep(backoff * (0.5 + _jitter()))
                    backoff = min(backoff * 2, 2.0)
            if interrupted:
                self._wake.set()  # the server answers again: the feed need not sit out its backoff
                try:  # the server may have restarted: learn its epoch, so the feed's view is current
                    self._epoch = _raise_for(self._exchange(self._write_conn, "hello", {}, at_base=True)).get("epoch")
                    answer_epoch = self._epoch
                except (_Transient, _Gone, AuthError):
                    pass
        return answer, answer_epoch

    def _apply_ack(self, table, key, answer, answer_epoch):
        """Put an ok write answer's record in the mirror unless the feed is already past it."""
        record, seq = answer.get("record"), answer.get("seq", 0)
        pending = False
        with self._lock:
            # The feed may already have applied this key at or past the ack's seq
            # (PROTOCOL.md 4, order): then the ack is old news and must not win.
            cursor = self.cursor
            # Stale: the feed already carried this key past the ack's seq in the ack's
            # epoch, or the feed learned of another epoch after the answer came (its
            # reset is the truth; the ack's record may not exist there).
            moved = self._epoch != answer_epoch
            stale = moved or (cursor is not None and cursor["epoch"] == answer_epoch and seq <= cursor["seq"])
            if not stale:
                rows = self._tables.setdefault(table, {})
                if record is None:
                    rows.pop(key, None)
                    self._members.pop((table, key), None)
                else:
                    rows[key] = record
                    if self._subs is not None and (table, key) not in self._members:
                        self._pending[(table, key)] = seq  # kept until the feed says which subscription holds it
                        pending = True
                self._acked[(table, key)] = seq
        if not stale:
            self._notify({table})
        if pending:
            self._interrupt()
        return dict(record) if record is not None else None


class Subscription:
    """What Client.subscribe() returns: ``id``, ``name``, ``params``, ``error``, ``wait_ready()``, ``close()``."""

    def __init__(self, client, sid, name, params):
        self.client, self.id, self.name, self.params = client, sid, name, params
        self.error = None
        self._ready = threading.Event()

    def wait_ready(self, timeout=None):
        """True once its rows are in the mirror (False on timeout); raises DSNError if the server refused it."""
        done = self._ready.wait(timeout)
        if self.error is not None:
            raise self.error
        return done

    def close(self):
        """Release it: rows that no other subscription holds leave the mirror."""
        self.client._unsubscribe(self)


def _raise_for(answer):
    """The answer if ok; AuthError for ``expired``, _Transient for any other refusal of a read."""
    if answer.get("ok"):
        return answer
    err = answer.get("error") or {}
    if err.get("code") == "expired":
        raise AuthError(err.get("message", "the token has expired"), "expired")
    raise _Transient("%s: %s" % (err.get("code"), err.get("message")))


def _jitter():
    return int.from_bytes(os.urandom(2), "big") / 65535.0


def _abort(conn, close=True):
    """Shut an http.client connection down, interrupting a thread blocked reading it.

    ``close=False`` from another thread than the reader's: closing under a
    reader makes http.client fail inside its own read.
    """
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    if conn is not None and close:
        conn.close()


def connect(url, token, **options):
    """A Client mirroring the server at ``url`` with ``token`` (or a function returning a fresh token)."""
    return Client(url, token, **options)


# =============================================================================
# Embedded copies of the client and the inspector
# =============================================================================
# A vendored dsn_sync.py alone still serves GET /dsn_client.js and the inspector:
# these are zlib-compressed, base64 copies of dsn_client.js and dsn_inspect.html,
# written by ``python3 dsn_sync.py --embed`` (run it after changing either file;
# test_dsn_sync.py fails while they differ).  A file beside the module wins.

_EMBED_NAMES = ("dsn_client.js", "dsn_inspect.html")
# -- embedded: begin
_EMBEDDED = {
    "dsn_client.js": (
        "eNrcvet2G0eyJvrfT1HWeIyCBUKoAgiSgGUt6uK22pKoTdLt3ltNCwWgSJYJAmgUIIpNc69zfp1XOvMSM6904ouIvFShQNG3"
        "mbWPvJaJqqy8RUZGRkTG5dFXnwVfBeN8+n40ydLpsvlz3guW52kwXMyu8nQRJNNx8GY2TgMpD2an+Horv56OGkE+T5OLbHoW"
        "XGWLNJgvZsvZaDZBix/SRZ7NpkHUjBrcRtRs0VfLc3oIZpMxtUyt01dB+Pbw4Pjg2cGr5uU4yKbcuekhWKTzWZ4tZ4vrfpAt"
        "8+BiOruaUhP5FbUfJNRpNpXuRvRR/sgM4f2HiGYym9abVIoP8C+7nM8Wy+AmGM2mU6rw/OhNcBucLmaXQa35qACDWt9Uom/z"
        "pZn8Y69qWDtfLue9R4+ieKfZov+iXrvVaj3CuB99nVGtZDpKv6k1guXsIp3WXYvSyWz6PFkmz86T6Vka1lYEjZy+DZPJpB48"
        "/oZmPiUg8aOrmlwlmRlMc7RIk6VXlX+8b7U69PsmmCaXaS+o7Y+TWnDLLaCRl8vgIk3nBLrgMlssZgusJyC+TIaTNJefGG5w"
        "mVzTGJJxIzhNx8HwmmpMZtOzrflsMqFfs3kQYjnRqAeT1WKi88UY8iW1cEn4tFilNIgGmpF31OR8NZkQrs2maTCbp2ZRg1Gy"
        "WGQ0kgQt52kyoU8v0zxPzgjBUM4AC1bTZTZhlBgAJoNgsZrmwWy17FOllOcxmy8JA+uCfgmjCZUPZx8x56tFtuT5JktGo2Q+"
        "J6iOaexcV4FDhTNaxCBEW5dZvsxGtCDXdW4yB0YI+s0WtFaNIE1G54rkNE9ANLhcLRMMI8gIkjJo3l3JiGBEwxqN0jlNgvpa"
        "pKe0gLwEl01eK4KJ3Yb+oKgez08mM8k+YBfQ5+P0Yzp+/pRGSzAdE3INk1yAJlsNjRq8bAjghz/TwtFYZwv5kAdNIMtnvPi5"
        "WRUDiOR0iScqnMyAG+mHlAHAk8agdFOPaZsK4BXQlwmRkNnp6SSjbgFwhl76MRktJ9fS9tU5YQGh9yJdrhbTnGFwABicZgva"
        "gh8yIgSN4Cxd7hMGomn6GfCGOJ0JgORDJhyhrH7e5HdH9Oo4u0wJZEwRgtfJ9BqTzYELgAStf5CfY2B4UoymBgRB6ctgwvAI"
        "f0yHwavZ6CInKPEq0P8WOdo8pZ0xu8IMZh8YSE8XBKNRki+xyafpxNCiHwGsfDXMR4tMRhmEuqf17TANsX8bwTxZJJemKyJu"
        "RA0JSQ3FJCDyIIOdOtr1cOScSCzNbUqwxdvVFF/pVgdG8Q+acy0vDSRPJ9RmI5jOCLbUSsoNM3Ho0ZSm6VWhQgA0yHkfcrPA"
        "AwIybaPV6BwHA3eY5tTiaEKUnN4wctJMcjNkrjidCSRl5A2L5DmtMX7z1qIvacCX6eWQQH6ezQWRgLxji4FoVYDAWExviOas"
        "Fh+wSwRrc27Q4CJhfTYbC7b9SANIvY2UUWdZzqMOcQbqOiiMqfSCNi/2Hg2JjqimNpABsYlY5MFwtUS7dmvPhNSFRB5oDLR7"
        "aeCMu9livEVrvbym40gWfpF9IOou+58G0MA+IIoZjLP8ot4oLffaUKirmQBxNj0iCrSilU2uc0Bkxrvf0O4bIgdLeh7R9Oi4"
        "mM7ez3Fy58uUPqODREnvbQ9bfXG95EW9mi0ucsYRflTw5pYuWERncGCcen6C9mB1sWEJm88IMwhIyUKWhMY8AT7SSieCoUSt"
        "5nyy97xj3Bx/q0VOzQTBDfEIo3Na7fSf9L8PNNRz2oanSYFonlOLskHTsUeoarlptfxPz5nTNB33gykgb44cbgtEBovHpwPj"
        "nkWbhpxdVf8EPESnCAoyCkFenQvandGm0tm7xUWtdFwvQSAf0VGRAAK8QXvBzUV6TcDNUtpCt7emGSXJEyJEwTgV8kKcFp2U"
        "N7fBMKW1SNdYExDMMDRLxAxJs9ms0yd22R4HNzJsQlY6yggRbu0vKtStWPVvusIGBjn65ypdpeaM6Ac4XA1QAQjeblM9dBj/"
        "mGvY1K45q+Qob2gNblzL0rEQE69AhtDfvGJ8GIFchHVFwqeE9zh8loYHxVG5BWLbE3qjAyHO8l80fDlkCeuvzrPRub8diLud"
        "JKOUcXCRMPkjhmSquJc3ZLumsreZT02TBVWlA51QcSJb+gosDGFlnmSM2VOz+w7BERFFUBaCDpmE+b7ZeDWhHZ9MqHVuNJkK"
        "6Z0tsrNsqjudBkegIZTJUOnZweER2nyQExM9SU3hA+GEqBMWEaK9h0Iog2hXCPLWVvoRFPaSpptMts4msyH9uUqHo8X1fDlr"
        "yLlJXB0/Ngmoh9Tg7PJvyYTarzeJAcCxjvHSCTFOgV9EmbKUyY9y9LmZ8avkmubZCHAMT2gWE+EI6EV2QXToKk2X02Q06REf"
        "Cp4EQ19wd1NC6L6escTnLUHNGowgS+FvGE5Uni2EhiWLcS7HCwHfW1EGKpNHsDOEGjoxOjOXBDbAcgjOB23SKTAHV0sbntCA"
        "YKjyhGEfXu2/qfeCo+/2t+LtbhB++/LtEcG1tdWhY+i71/vPtqiISw6/fRbEUasjx8J33z//tlC0vdvdoyrfp6NRcrF1+i7q"
        "tlonPHn66vsXrvG4FdcFCumUgEdHFb6S6dOhlBdFNeU98iDaams1JVhM1OhrOYoajjLqZ3QUQjZkGDB3BXmBDnZFKmI0iI4R"
        "/Gmt57NsKrzD6KIRnKdEwBvYkwvGAJElcm1WloBbdYNpeKyy8LyofS0SDDMVlnlMlTrIEKfM0eszGmXGSNkoj0fEcULcYXJJ"
        "whFxudNrZjAfffbZo6++Cl7oTqLjPxGe9TTJJis+FMFc8FZkIZewuB8MmjiGB0AT5fdYmCXQpAxYlPL8Bov0Z+570AgG2fRD"
        "Msn4p7Ad9IuJNaQ7MPmnHnioLUjQ4WA1TVbEqy2yf6EVtDoAhyZNDpPxe14VPBBPILvElNDizmnhUzwTjVnNMXyqSNt1v8Ad"
        "yulqp4+9YcS7AbYENQDOMRs3ATGiFBDPR3RQ5QEJky94zulH2oK02eTp5jOVyBcrsAUhIGKZlDoXBzQEIjmhERp/+YXhBhGY"
        "/gHuTfDWdETVTCc1rwzfspw/TvH29rNbLGXw+A/8x2dIBQXC+z+uF0ZC0V4sCYgvppjSgqYGHv7YvQkJMu6z52n5M30T1lbL"
        "061d1i2ckmw5sWJ9/7PPTldT2Rv0zW6IdmQt5PT0+2+m/Fe+6QO4ti4NYpQsGTAh4S/Y4VyamZAQMEmnZ3SgPA5aWBZs2lBG"
        "je+A4/q9fvfwMb9oymPfoA0ogc7tB6Isu/uLRXIdykeMIeiKznqIHZ/sSrCNWmzS5yFeNrSuIps2tD6WWwcbqCwKYFhF3XBa"
        "AJ8baXN2Gk6Db775Jtil8y/4Moi3t0tQXLXje1SPO41Af0bdujRk3+zaF9VdLGffpR9DPkPd+ghgazULMrzMGIj052s5cg0I"
        "guzhwzpXIdhIS++yE/oq6gZPglqrFpAsUqsHDwNT1lzOjojqT89CGm//DvDhpMbwztOPMrjsNMCDdh389yAGSXj07qfW1l6y"
        "dbq/9e3JoyZ1suQqdaICxC8J9l/PU6YP4QDiMBX3gi9u/np08KaZ81iy02tuOp9kozRsNYJOq16/HdQ/gW7eaB4FcX0TxIBY"
        "ZXgBSoxNefpyupTOieAuF2EM5U6DmmsE1RCSAT3tdn54v//q7Xf7T18cY8H2nz57/uLbv3z38q/fv3r95uDtvx0eHf/wtx//"
        "/u//kQxH4/T07Dz7+WJyOZ3N/0ms1OrD1cfrf7WiuN3Z7u7s7m29r/X9lv+2/+qHF0c6ZRph1JUpR/FuvUl83CTcimhwVdPt"
        "dnSaXkPvCsNtEl+8eEbUY38ZZnUAIuvLOQtFV7ezWkysAmKejFkQYQ6o0+3sWl3JNjSCxQPWKKkuMlUOXNIPPpMsWg2peSFh"
        "vxPxgfFtQzsEctOgsAm+5i35SxCad7QNopPgyZOgVUfpLhe6sljL+l6TgBREtNckVTQvs2lI+51/j9JsEmrLBgm3gqxO2EPt"
        "Pgq6dW3HTmUkUxnRVLhV+ult3sICvVMCEhL7vxV0oRqug5Z02ycbqB4WD/t6tOwFUMmhh2QEcY++yLOxaA+Syfw8GaYgr2CM"
        "ddjMe5MQgLkEsiEhmqtuhLVKidvD68spB5t3WoFS4MmRig7O4yCqJgo1EAWLeT0WRoixhdZXGqh9ihDwipwSK7oICx1/RctA"
        "a7Fbt0fSEHySHkh4/gD5yH8xKxxXJRT02tY95qOfcjz8UWGH+Qj1QXki0Oh4l4i0v0tRcEIkeyuSKgDkB/qydQc19QC3RlMx"
        "FNoK9Vvonb+4yZSkBnbaYSi/aDfwVvkALGt9POV/8ilDjBC064bEr755DESX+etXW/Sqry9AY2cPH4K4aB9AaHymh6J8eLsZ"
        "nZ+dr6YXrFfubje2210hAHKpBuXxM5YIg/23L61e8HLGF1kiViSTCeOqwP1w/83zg9fvn333w5vvaUzdbWpRid5gOlBB1kin"
        "kCOXhACXxOU/O3p7+OYvfbMTDKsLrFV2ns5XQy2pY942w3SU0Iig6GUljKoHjNovTS5oZ17NVpNxMCTR66IgLBZ3mPQh3Jzy"
        "I4puPP8DuXl4HIhK4JhZby7p6078vPAhHdlLQiCCqv+6rDAIPqftWjNjqJl1dkhYBYZGULP3jVMSAvMN2gjeWsAXho3VUZOw"
        "ZsDOmsEpVrEWPFSEqhmFSA9XVPfTioDMgXFcgw3BC0JytkjDB1NobOX1g3rTVq4L1bm9m/JMN3IdUz2jfMSr3wn0kDng1TDh"
        "lrOGO3SmDbRVbKpexZsAnfcVZUgc5IHJZcOCiPRiXIN++7oXxHHww+GrrTw5Td1RkdPOtuc/IUikW87qbaqXs8GEjHd2w6py"
        "REgmDEhwA3qRsibC3hXodkHDSX5hrjdEv9oMflxX+8iMfvjh5fPCXcIGxQ/fJFrdD2qAUCbgXKAyoOXks6oZHN9nTydKAnzZ"
        "2u5OAu3LcVgQEzwOx9+7EXMEf44QXKXb+hOE4EePgiNl/jrNuBn3vMvCdixngCpJToFS9GEyESHPKk9WQ1xUzewbNCotdDus"
        "NCR2Skm26N7eg1wTB9yOrehFsG597MS7SXy6R/Jb6+NO1N7pdPYi/B5uj1qnw9Epfqd7w+3xMNnG7/bedncUbw/xe3vvNIqi"
        "U/5+L26f7sZJB7+TYTTaTsfbDe5hvNvaSRLpgVC8vT1scY240452t4cpt7TdGu2MR20eRTxMt8c73NJua5wOo1P+Zm84HrW6"
        "yQ5+j6K94WlE33APaWdv2N0bcavp6TDt7Ox28bt1St+NR13prTVKotGIf4/TvXjU5bl1kp3ObidJeBSjYSuhCjyKLgFld5xI"
        "D3u77XQ72o55drvtaNTtjhlKrVY73hnx3Ian23s7pyMZXzdttYanPJ/xdrKzF3X4fas7SrrtbR5p1In34r3ujvQQ7wx3Wsku"
        "wzhOo2EctbnVzphGOj7lMW232wSQiFvtbreSnfZ2R8baTVrJkNdkNxrFo71YIBbvxPFoV9chiYen6W4SyRyipNvtcI1R3Bnu"
        "Uuf8e6c72o4SGXdEzexGe/y7u7fX6sbc22mnlba3ZaQRLUjSorrcQ7SXdEZRxPCO0ja11eI5xATinZ0Oz6HdGbaGo6HiUjRq"
        "jYbcWycd7yZJR9ZhuDcaJR1en+5unHZPCZLcAzVEWJby7HZ2k+1uW1ZxtzPa3dmNBGdGo51WLD3vtYYpsWDcatLZJvCnPGd6"
        "u5e0T3WtdqKd3VMIvv7W3G62m+3fsDXzf674DqZyc+5W783vWtWbk5Z1L+12eZjDYXcnSQXsbcKv0/aOoON25/R0uy2Ai1rp"
        "drxzKtultd3d3WWgR6e77fFeIpt2mLZGtLaYbmEQT18dPGOeriOAOIbSWpWWuNpj3TBNyAiuXdCuhlgpsEWO3NNIa71gMJpd"
        "znEzN8CFyYQFWTQrdhzZ0jCY4HPo/JjOVjkzm3z4kRi1vJoFzI3iCJokc7WbAU9zTmdPzowPccDdLZyuaJkqz0aJ0YnzUkG1"
        "jLsJPjxzbhNmJUZBW1qGH52iQFci7Hbqyt6+nI4WqXBI5qCgSeJzqR3Wm6v5GBZQif01rDfH2Rl0OfWBMNGsTNbbkLLy2LGH"
        "xGB9R2Ox2KEaHV9nPFydnlq9qMdJ+Yu5/j0tlMpl+rqoxqRjNQiY+ZnS8pjrLQMfYw2XQ13N9/Q9ue0DmzlMcTM6zGcL3Obi"
        "Ki9Z6P0Sv0KXX+llvzWgGM3m18HZDIs8tVIDbR5eM2GyYJlFCFNn8AVcIyzKi8urbKpwMCuhE6SC5nesDBWQ+u8FHq5Qnte/"
        "YIgVIOh9YqHnwVKKjaaZvrKAVaSAJZSZgWN215aEeF58WWiVNQL+WJzkqLAAj+ipWQpbe6s4j4bfft0InN4nDBz+xnLTdEig"
        "CzY88YdRUZsAR1PA16YQEy08l2dD7H4BfS0U6aNCD4a0+NUbVuW0EeNvnSaJpYoi5fu6CHARO4rjKXaOr0miWN9lFYDL6m58"
        "5dF5vUL3VUQgnbrdme54ipqRUysmQYTTqRH8K13Mcrll7Ha26JWl4doDbuBFyLD3yQEb4qmp4RB3m4GBKRs84DWTXdFAfAd9"
        "JZ+GZ1uwryDZRPR3fGSoDV+WS7v5nO+hYTJxhVtq3ceGLBZ2sqVpHoT6dp9MqzeiPL2bipIELKPbK9Pgm6C0BXxliywWq4EJ"
        "saf1ahxbR69pGaXKLTXWe/UHy/iBixFP4eZv/UfgmVryr16/b2OFJr7+Glpd6Ipa6w106oULxg3zvENcb8dlraxcT9Gfr4Nd"
        "+uN0eqadKxKbzQJ+92554iu4OtCQYvX4I7kP6rsS0Td7pVG3WBoXSneLhW1T6C+YL+9XbK6uiGVgT7CJoNCVbUGH3UBu0Qbg"
        "MQaM9wN7NhlI4q29eyug+I/uWP/RB/N3FjabAYtpV0D2Z/rC3OwFPGsD2x/fMVRVN/8z6/Ljjqeu/1lA61T87nV8YnX77mX7"
        "ZI2QmjHy4PTapGr5o236iAZE6Bdt29XXwtiWxaWiPDu7TFqsYkUTWN8dHimeMJ3tej34ySuNdv3iqCPFprRdr2g+kuZjqa/N"
        "x1zdtq6Fe35hW9vWMkcfDNy19Yc6t50T+qkTMu+i7gmaLFATgDSh+t+9a500giH/iujXiH/F9GvMv9r0K+VfHfp1yr+26dcZ"
        "/+rSr3P+tXOyGac2LNeRg4tonAU9WMMddxUoUhJFXlFUKKLFsUU79RLon2FwVPZlcMp1/hM/z0ofHfMYznFUG1g+O3cH9/cA"
        "NIPSh2JhEoI7iYyHh5MwcWzpSKWE1tIW0SL7RbFXi9a4NMDXCbYflX4ZDLkWfo3415B/leYDTA+PDA5Q7cK4AZKzPi/gaZ9X"
        "NO3zEofETBEwCh8DCUZ9xophn9Ek6TPehMeA03G8hlhAKJTz34dBIh8wdsnrCK+H9nWsr2O8HtnXbX3dxuux1wsQUYo6KEpt"
        "jW19vY3Xp/Z1V1938frMvt7R17xfzm37t4V7dRI7weo7ZlpJepVAxh9ZSezP0h5W28CxsFNtA/dnqBa/Ko5jBbMxtdm8Fuum"
        "OVucG0ENAlkzMKO1sj39Wp0BXJDUe8a62xxwbNdgLjVgJ5evJkuW4SwDmQff0x7IqDMGAB5meIAieygWpAU/DR6elQsNy8rc"
        "J0maUK8Y8RD+OyTGG20LPD78gbGanQoTmtC2HN1sLUjjXCZnzpAfYKh5KgNiTF+nSb4CS27sR+OWMNKsQZidsp6d6IE2i5fZ"
        "dE780RVYXB5ft9mCVX1Mf1Z5ELaJRV/lbpYMe3Y9Ydch6r1nzPnglGAmdQYlPMnOA0HZAQ96YNiGgR01Mf7G5h3tMeDVvwh2"
        "/TCa3gANGW3Uam5juN0mYQoB4Ps0nTOyoDVaEbmDoIGs4OWRYFh9a35oTDLHEN/DwWUygmF/enA6qHuqju/wnrfq99ReWeNB"
        "fZQkAOay7qPU4C+Z96VGDNdb4vafGCrB/bAZZ5lv9W6a/Kp6Lc2dwAjiJ0gW7a7HNmfTqVW/lOmNLMTv6on2C/TRXofEq96r"
        "QwGMiCL1AncLNA6/bwRiYUCcQRiafVnHhaY+Z+aZv4OcyDqZAR6NLajIdmIhl06tzm3AmtABndgkLcpGYotyEomgHIT2JkvH"
        "RpdDqBEWTNcEBwxkHZibovXxAFpp/ybfKkjwrr4mSgsUtT3zqdQzx4N/UFh7yyJVNZcwm6YvVHdA6DZo+PrNBgDy1yNstGum"
        "U7yvxGcDR0SNJnE24+vh1dl5ALAX7Z9ZJUZ7VCy/B4XNNSjed5/bspBpa9GC0TssC43wTmm6hSnasonVuBgMqOj+6FGwzxbk"
        "1kCmeDvIXlrVZuUFW//zGbRX53CLRJugbxN+B93i+r3zcMWmNgVr9qab11qFJ/qNZ3kmL7ASuql+TJOL18k8NApfKDNkriBd"
        "QDsQue95UcXQ3yyeIZei+iiug3TzndQM5akRyKMz2kLtx96QcDkc6kfWAMGjlv73TRkMmq8tkquaad3zumV1aoN1OPSk2uta"
        "cEtSQzLJaTzvaiSXTGF6QNs0O72uneje8YaU2yE1LCX1bE7oVb9qsxhsLnoeXJU800Lsog9pIAbUONUXySRY4q7EnDj5HBbx"
        "uvf+eiS25NNgkizO7EUF1FopzSgYOPynjXGY5rPJB/F4g+JKtFW0TAlbWVRsmn0UyM5xLKaPOBb8Zjv0BXM9kxpjTkMsT3o5"
        "X14LHwE4OYYLR/kVmKymWWVtnuivd7CBv2tZfWh5b/MI+8Vt7Z2e4qWtyIJ1Dg1C+CVlFMUSa9N1Z0xEjFYCZwpcBdDiCIcg"
        "FwXq36lcoAw8N5Sf3sqSi4XQOGPVVWGnpP9cJRO55E8akEKMDZxVjsKaZmgU1mayjMHG7Ezaha/gXfZnSdH4zKv0CwlRfAoH"
        "Q/rjgdRv+DE3fVu6Pnv14s1fjqHGacdKQAyjb7lqViq9PcQlG++Q72g/hnkyWTaCl9+/rvcdpuCleifyDPDlK3H9gYJXoRja"
        "2xhm1mbcar10DlyMT198XOKyUrvKLi4Lh4CHTfjAAPuJDKK3gReT6dalOYsfFVNu94LjMKsX5kwwaODtVsSMRjY9nfFfau7g"
        "+9firSc3puwIIiMy1mVEAY5DqXgcxvyXDrc+dHOXODHi7W1IYwIxA6lDeLCxdUolfOYE6XC+uGjwWBqBwTGDgp+/YR/BZpa/"
        "pGPtLF0YG330blSuQct7+kbHUQTXmgGYG1c48KVEOk0hWVyuwBSnQavZ/OKmosHbQHWNsMz54kb6VvNEz+Tq4vKTTgbH61+0"
        "1o2yoobvjWB+fx14+6nhuRlUTh49eTjHUD82gC86B2RG3UIz4PPnuHAVVb7mkn7M6gVbRgNbL/hB+HaSF5dFDgfYEBJGNwLd"
        "K2vYYDaNQ5vqHVaq+2cpHe7nRffnGDEdn+s1MISCeJtO4qlsz26Hr5ga/CYIPzYChKhY8pXyx+Bj8DDYvtboFOxKmvDNPJps"
        "x3xldZ7waR3SKS8mjETl2bSJSzPZgnm9x56V9PEpWo8z4nAy8M32BdTbTbQr7k3EpmoEmUmafBBbbhn0JFvSoWdusyzgLBl7"
        "2ozqTZ704Yy4e9lXyVQsPP7n/3AWr4tRSLLVq2+PDlFi29mfnM0W2fL8MtjuBYfP3mWLE7k1z5ZoNP7pZ+iC2cgSjMMohLZ9"
        "J8gWdXFOh5KRaEAXooMALKSpy3zrxF8TqTS2DN+/ePZs//v3h89Y8cmu0o53WUBbiBHqW72EhRcKEZcilxG5q7dDvllrRX1w"
        "OGwEc/iOhrNzYtixxMyvj5IT4zEI9/acrcXXZeGIz2Ii9dJ5wRA8oB6//vqxGYIZ/eEuRn/onIJs+SHkZir+hYp3oamVWw75"
        "ve397tZdlS8fs412xb3QoWn71lnMuyVfMxLp7JYo5UJ5jUXwNV9lZQs3N/vVz/LRzwBCl/6ua+GB7DThCAP/uQ4M8a/OLZZ8"
        "BTypuwG+Y9+bBZXBxBwW5sTzPiH06tHqnoDH4Ra58L8H9i6vZENumyPSVQ/VOKpEblixBXSwu5/4wu2WiG/Bh2SRSRgf68a6"
        "RKwf1kctsI/QpN5C80Uj04vhNf/FbTKhkWLS+QziPvWmCGfVT6FYHYnThYTnmS3QLjRg9MDWJUYGyZaqHvvbrgToAfdbkDVA"
        "Z9jtnfq9Sq7F/x1+6my6NON4AOyrq4axMAIfB3wiwcF4TYHYC6LWdvD66SOetiXNcryz0RK0auBaduQr4/7LbB0DKdd+6z2P"
        "YNHSXKObRXqG4BgasYJhISPVMD/jTOLriNu8WVO5qbcfyeFI/bwDqT7hGAKWdB1z3KBYfZrh8YtFg1RO8F0kEIId9RMAjdPT"
        "bJpx0+yOT9+uksW4ZCUmkJBIWcY4jMrLIbOa7nS+YOz7FrgXeh5PSas1gTjG12X0cM4PET9EUhLLg5S0+SGWko48SMk2P7Sl"
        "pCsPUrLDDx0p2ZUHKdk76dtxbEt5JAPZ1oHISLpaJkPpapmMZUfLZDA7Wiaj2dUyGc6ulsl49rRMBrSnZd6IIoVMzCOKFDQx"
        "jygysInlSct4RJFCJ+7Ik5bxiCKFT9yVJy3jEUUKoXhXnrTMH5HCqC0jUhi1ZUQKo7aMSGHUlhEpjNoyIoVRW0akMGrLiBRG"
        "bRmRwqgtI1IYtb0RxQqjDo8oVhh1eESxwqgTy5OW8Yhig0EdedIyHlGsMOp05UnLeESxwqizK09aJiOqElc7u2qMFJsDgnbK"
        "//x/e8Gzdx9xVbZP27YFmZXEIPo/Hjsn/eC5lNJHWxFKDw+OQ3p4iImBm/E8rhgCvI1+Eiz+SVDnJ1mvnxhIBX8+hhLvtZ8E"
        "038S9PpJ1pRrnBdqRNJHJH10pXF5iuSJgF2sIX1E0kdXGpenSJ5oQQo1Yukjlj52pHF5iuSJFq1YQ/qIpY8daVyeInmihS3U"
        "aEsfbeljVxqXp0ieaPGLNaSPtvSxK43LUyRPhCCFGh3poyN97Enj8hTJEyFRsYb00ZE+9qRxeYrkiRDNrzHmNR9xoyEWB9fb"
        "xCcB6mwpEUH7w8s84nZClNiPJuajQpu8xqOWtBm7NmO/TV7WUUvajF2bcXWbvKajSNpsuzbbfpu8jKNI2my7NtvVbfIajmJp"
        "s+Pa7Pht8rKNYmmz49rsVLfJazZqS5st12bLb5OXadSWNluuzVapTdrg/+v/5sPzf/1fEhyLNnwtD54jaNSYOYxe8PQdSVHx"
        "x4fta+xzbG9s/Wvsdez9Bp/n1ye61TloAUkMytW7DU+Y0A+87TwubtyhnK5UdShHK4n5GN/iXavB5gQtr0FeJkID0yCvyLi4"
        "S4dyKFkIGfg0UMIdmBIDFNNhJB1GXoe8hoQjpkNernFxyw6FwotRXMu2GzdQcm6GwiUylth0GEuH3djrkVeYMMj0yIs5bpdg"
        "tm2nGO/adjuA4badIpfIWDqmx7b0GO96PfIeJfwyPfJ2HHdKQPV63LE9bgOoXo87tsdt02NHe9zxetwu4cV2FV7Iac3tdhxQ"
        "d9Fj10K144C66/CG7U3aXa/HbglxulWII9ycoEfsumwBrJHtkou0z5ZDHe6z0/H63Cnhzk4V7giXxA13XbtdzDKycO26wXQd"
        "7nCP/iR3S6izW4U6sZtk3Lbt7gFZ3Ry5RMay51CHO9ze9nrcK6HOXhXqCGsq7bpNEGF/CJ96bosmWuSQh/uMPRoQlYhKVE1U"
        "dmyfbioxZins77kpUbDuOeRhq6S212GJ6ETVRMd1GHk7HZOMXI+RRx5ihzvcZeRPskR3okq6IzKGNOzoWQxKJxLHxBbpcCKH"
        "Pdxnx59nifJElZRHOHdZzG3b8A6mGbu13Laj2XHowz3GHvpEJcoTVVKe2M3SkZcYlCd2k3QkKfYojyzlntdjifJElZRHuGvu"
        "cc/12EaPbdvjnuux7ZCHbdc63gkSlShPVE15dt1KOqyMGF933Uo6VI72HPZInz5cS5QnqqY8uw5j3UpGvJS7DmPdUkY7Dnu4"
        "z8jvs0R8okriI7KvYI9Dy4gxtu3QxyFzFDn84T5jH7Yl8hNVkp/I9emOSrgaDiPXpTsq447DH+7ROyrjEu2JK2mPCKkCWNdj"
        "xD12HGBdl1HHIRBbOEZ+nyXyE1eSn9j16Y6nNk6u2HXpzrS2d3Bxjx4HEpdoT1xNe/bcMeI2CfaI6AkmtkTH4nCHO+x66xiX"
        "KE9cTXm8Hh1DwPyA16NjCHYd5nCP295RGZcoT1xJeVreQrp2I3TZ8hbSDSbadbgjC9mx7Pb/0wuUfX5MnLXy0eF/PoXEjIcv"
        "8fZh7BhqVTsNhYsO/5PZky+Z6uMqV5jlofDUXHoupcbXSpVTQ2Ga8UUs9dtSP5L6kakfS/22qx9L/djUb0v9jtSPpX5s6rel"
        "fsfVb0v9tqnfkfotqd+W+m1TvyP1W65+R+p3TP2W1I+kfkfqd0z9ltSPXP1tqb9t6nel/o7U35b626Z+V+rvuPpdqd819Xek"
        "/q7U70r9rqm/I/V3Xf0dqb9j6u9K/T2pvyP1d0z9Xam/5+rvSv1dU39P6m9L/V2pv2vq70n9bVd/T+rvmfrbUr8r9fek/p6p"
        "vy31u7a+yFHDyOBfJPgXCf6JLDWMDP5Fgn+Rwz9hbYeRwb9I8C8S/BP2dhgZ/IsE/yKHf8JqDCODf5HgXyT4J+zGMDL4Fwn+"
        "RQ7/hPAPI4N/keBfJPgnxH8YGfyLBP8ih39Cx4eRwb9I8C8S/BNSPowM/kWCf5HDPxGZhpHBv0jwLxL8E7FpGBn8iwT/Iod/"
        "IgANI4N/keBfJPgnQtAwMvgXCf5FDv+EJR1GBv8iwb9I8E+40mFk8C8S/Isc/gmDMIwM/kWCf5Hgn/AIw8jgXyT4Fzn8E4I9"
        "jAz+RYJ/keCfEO1hZPAvEvyLHP6JWD2MDf7Fgn+x4J+I1sPY4F8s+Bc7/BNJZxgb/IsF/2LBP5F2hrHBv1jwL3b4J4znMDb4"
        "Fwv+xYJ/wnwOY4N/seBf7PBP2MhhbPAvFvyLBf+ElRzGBv9iwb/Y4Z+c6cPY4F8s+BcL/sm5PowN/sWCf7HFPyhx/4c7SX56"
        "7K5uYXuk6pjCW3bXMjYMuXhzoHKf7ztUhdPn+w5Vx/T5vkN1MX2+71C9SZ/vO1Rp0uf7DtVv9Pm+Q5Ubfb7vUD1En+87VAnR"
        "5zFEOohtGYSOYpvrRTqMrpTpOLpSpgPZkTIdyY6U6VB2pUzHsitlOpg9KdPR7OloYhlNJCCJI30SmMhoIgFK3NYnKZPRRAKW"
        "eFufpExGEwlg4h19kjIZTSSgiff0SUfT1tEIbNo6GoFNW0cjsGnraAQ2bR2NwKatoxHYtHU0Apu2jkZg09bRCGzaOhoDm46M"
        "JhbYdCJ9EqyQ0cQCm05bn6RMRhMLbDrb+iRlMppYYNPZ0Scpk9HEApvOnj6dW2MxvoOE+Yh/M5pNTYAyXPPBIzD4ClEe2OzA"
        "C0RmKrw/3D9+AU7OxiGzTXF4cYQGPkt7wUCNvesDdX7J1bl5kP9zlab/Qskj8/vviMYw4FAVxvpUDbIkxHMQSgx4iaBufDA4"
        "bJo6uBgHG98X4ug8uUg/Gfgh9wyxjIHBdsF1fD7LSyEDZNgS6N7aQ26KOWDd7m0tPyyeRnAyY+2ZFuoa9t5WqhXU37kx2M/7"
        "pUiSa0EMoIiWKZjZ9KtiIRBsJ2kQcgwwZxiBwXNlmKoEX35JXWxRrW8eFxHCVfCu1K7kSu1KPDA87HkE/esVTNf4mq3j18bO"
        "uWK3DEwEtqG/BKH8tM6z4nJqX8a+R6192zbut33b9q39VbzZdl/Aij6brmzIBFMjfwcgQBr2hgYPeNh1MIC+hP83e4H7NiMP"
        "HxrgbQTXpqEUsM6M5LaMlXY1N8UvmCfjqPVVJHcaPIhaHoxnl/AMyFenp9nHIKJ/FTZYXVjPvoaJJT6Q3St+KNpm3aY0mJ2l"
        "7FWQaLoPtg5pfYy+ZZ8KvldBoAAT0IRTUeAbdUyB9UJ+XgpOUMbw/J2dtl0HRNqRJbBl5XXI34VF5NtCPE+vBRoWt1D1Wbmx"
        "qrW6B4lAoOzCovwo8WYH7M4m9s9C6Oj3QEJDDIQADmhHss8b8nERnUMmEk3QJslvUAuB/wPNpKCRg+c2eLDG8Rl/gFmKyTqC"
        "Wgp8jwRzTw2t7pOvz9fpV4bUSrJs96NLhUH9wZTpj9lcv4nawSFHMiWJJ1hPAiMMr/lvw24HtkdiE0w2umKbyYIVZPMPI6Au"
        "YitIad8rwfx4kYsVAl0ciS7tIeWHfuVXJkCEfimPPyHmq1gKbqwVF2vFXq2ou7lau1it7VUr0HdaSPFG2Ty5T8xIZ3D3BMyA"
        "7x6vGV9heBVHkaBiYX0/fR6pQg5k9nHhcOLwyxsOpLVFDp74i82tSW4Ue4Q9fGh+UpPm4ZOHkHRkKZ5h+Hyz7qKXoEeDQOAa"
        "G2znix6CBmQaF2hcL1gA83kHl/1dy0y+4lZK7mLKd2kj/ofrbu7m25Kju5lfofKfZYB+XDDGrEjIEuBc5uQdage6SOiUH0kk"
        "09D6iUiyGJPYxbxu1/+0JBTfv/h357ODmHfy+s3Bm2cvXAF2lYZu2P9L0cdH5ZAX+6/eH/ztxeF3L/afU0mh/kOvlq1wfPhi"
        "//X7V/tPX7yi7zlDhQ34++hDpKdhzabBOHzxbz+8ODq+o8Yi/ec/pn6Fo7cHb45e3Fkj92t8e7j/+sV7msTRy4M3xtbbT4Vx"
        "no4uNHYyp4PjQFAVbjIao9pkdaQN4HbNplwGX9ygzVvr65J4dYxji0b6ZdtQmNza9AtNONFLrybTAQbiOYzBGZc4g3SM85M/"
        "9N3JzAzuNTLrYFP0uvEb5TEoQeB40tiSwd8PDh15eLC+2A/A1abTEf5wNOeSkxL2Cn/4d3Gab8hXvm/inXTBxzn7Eu6FvjdN"
        "O67bMhkE00WfGApRKhFDP4pcyWH4Mhm9hR9xmCA5p455VEzG8g6xq6jcNEH8YeHjk4K+gFoUXoWNyE1wJri/hRqMqcF2zvNr"
        "CAOz3HfhhTW577fLtIUNlJG2tehM3dAMoevuvb0iBQPXS0ILwhTCbhx0zjSrPu+cPM35wiMpkboaNwopu9iVhtkybng64wS3"
        "1AJ7iZ/N/HgZlw0kFeT2Lzl1qNDX0exSpJuzmacqMaEZKhyd/ZXS8A0uKANYPvHveezaYM/kC98tmT8phXG4lt4YxTh0ZTtu"
        "BF3DG5lGb8w+gjtYr8IbXVNb3Eo1NwYN+9CQlspeXfzSYg2cAuRjxiv2QZcICFvfaFh5pGSSkO6IEMI++kFCwKe1GvAXHPYA"
        "bDDne5b15ZR6yNOS99WdKJNoaZxduktHWZqfmxjimuCNcAWLWTryaYBH1tu4OEjdB4iz7sXA9s+YuromOwpdo3ZqDYmo4g45"
        "yf3gfcUN1+xGK7Tpeb0sZRmryY8DZr/gOGLzJtld3ChjWBNrzpEGNhEJz+14n/anAdOg4eKpsEO1H1O92ru8ytV7E1r8l4K4"
        "CfoJoV58ucse7GWo64Yr5ba6awk+ta7Uu1soON14UCUJdMj7zAMv7SJOX3plIkviI+yv/Bwh4TWnAebEkWXoiOUUuslydN7X"
        "1OBn+JwhS4SRBEjr18JOPHVNIuoSRdDX45QxpLz3TJictTHff4U5kwfVsZEXiyyhdafDpN2aGSTjmv4pfBdWFD/2v5RhuyCi"
        "ju1cw5NiI3dWY/LuueUzefwN+3gNBi5kRDWWj5bFvW+Wyd/7mI3BgeF1KRSIRLG4Dx2oxNhfsb8/FRLCi+lgwbAJ6/5/jk5+"
        "vpXvOYDJXfEnKimXA2kxqoWst41rYftoyJF+b3L3+1D1aD4B7QKDHzW/vsjG3zS/RhoLiMLUzjcPXJRdKoSUO+Uw6OISx7Jv"
        "3fpKwhUagc0Rew3cnTYShMJWom4dGb6huZ0TX0ncBbsmE1BCzlXCKUIk4pLG2iF2ZXGZTZNJncPzfsV5z+egiWsZPGzGzVpJ"
        "FOFcb8coCbncj4wicfAfm8w4MmxI3TXJpVQLnsjLJj1ekniSA2BhrVlDdK531iVLZ/rYLgLrQdG4Hw+lDYGO3/JFOLoB4Gvu"
        "dXRib9YW11YJZ1v3km7J9/GJ1U2tlUWm7DYY4Sxab84M1nnSyt6XcuIu5Zcvfbbju1ICuTVoBLUksEmBBK6T2ewil0zCBYSz"
        "uBbyolNzIDXNLM9XqTQXcipW4uPd49TLHONl7FHkvwG69ixQVZ1zxB31DABuvZAox4f733778tn7o/1Xx5X6BxWhaibW0tvD"
        "798DhhwCwwRTeFBR44F2/l56rfeDUSx6pTweMYOtMqFNPSxRGlSTprH4OODIA6r5gKs+oLoPimg+JoLyIT2WThH+KPTmvH5A"
        "+Du0VoBPwzhY6xZZILydHzLCh1Whps973WCavbVgJQJYKqrVCydTA9DY9DkVlT7XtcNCmCzbogMC1iL/5wRnZDauc7gTkC7G"
        "ZmKgqetG8GBNF8X6DLhrNwK48HIK4uBQU5dr8gyVVNltWDudavp6m5fcZPYFBzdk6rac1atO8eEqm4wPpZlv0baMjIba0HFo"
        "H3/Nkcb9viw+Lxk18lTlWQYgAOEd/eJzbs8yCxX/zCmo8HQdMCxEJuEHb3R1HV5x+RlgvUKjxVApBRUemqVlMyN3qhXzpqHj"
        "Np0VMEBh7lCAJ0Vos7bUuS61Dv+9nomy5v6CY/2RVC8oygCcV8tw6RJKSnl+5pEIFRZIY01ECaE9GyIicESMs5RPbpYNfjj+"
        "dmu3vom5O9T5CFrwLHS4b2S0eu4aHSY/Ou4LoXSLOl6aL3+DUwdEvAj5av7Myj8WUZjv5NEUEcVX3RZHWtehOm4rKshnrg86"
        "AMd8dv1AuHWweENDCX3B0dOnPUOYvulyC1pP0akJmwN9FlWr5UbTQUPbf/76RfDgyC/PH9QR4G+EHIMpp2YfzsbXaMgEZNM4"
        "L6t2POQbF4GvUBKZjmfTI2rK439/C4ueWjIn9kCisz76uMWYJ6pxPTRea5TYAceVGQTgd6MG/Pok3fjabHpKdyxmc1i5X4Xc"
        "TBF5Ltxp3SI7gCnxbbKpiZeb5PlslHGIBFYDX6YETCj2THxbNRZSNgzLPVuMOSsEbYxFSmuG/CerKSF6NkrHPYlAe5bMTT4b"
        "6mSKFTcNIp07IsgAuwobsGL3bdowssAK3KoNw9P8r7NvGpyDWpbrT9lDwjbRVoFiumfXwqDlOh66uCkKrvkiPc0+8g3Y5o3C"
        "aYIJAhzRZIzURqw9of228US871Iamv8bTseq8+/3LI8eh248Veeh3zZqA9lkIO6ou/t41OPPaRmmSuhqOYO0YcPJDSbZZbYc"
        "GKtEY+yHeCormCAtQaKggxClU8YBk2E5CO0+6+zPZyyxSft5oOr+Hw5fQVCTEw6hTnFxMV/MPqJvaPWNddJlNh5L5i0XP5Wv"
        "Lkac+JTjp15lOfAQhjUkTk7p+1zmIRLnZXo5WxCaHGAcGfHsEppy7MJhE0SncufqyYUSYBA3bAyXZEinb+U5i+k+S1DFLl0j"
        "YLgJ++UjzHI2e5qdSXqEf6UciWpd7DGtEC89SMzSiBT7xQ1avAU8vrhBE/Y2bibXIR/39cT64oaHcEtH1EDzn3KOZDbrDIkM"
        "W4lKdjADEFEs0z7hPiDqGiMKdz1bLTT/Z66WZclSwo/W/dTKeZJhP0jEQAuP5jn1Ssv/BBcoT5rEtevJa3IzW9UG1/9GwOeM"
        "E7QVrOmT5giXqxNqpd5kYdTE+bq1NmCQJgXS3F4pIGBOU5Et7rdrBqDiu3zE4z3ksW/IZlu88qmMPWq7YZr7lBPNhCa2H2u8"
        "/Pzfdu6FafifFAM7c0lxggsZ8GOdhJtD6Mtiqq7wFA+EToXAof1+cZY35uZ7jOizt5bsSX9N/Am9aeGruqQm1psvdPDwsd5D"
        "Y+CvSum9+IvS6gemfVn3TateWvcB2yNzACuzEwZ132JGNCrzVX6uF+h9T2+xpm6J7BFtdC4OkhsWnze4jbOzLEC2MoK3TFdW"
        "Gnd8eA1KbDwuOKgkXpZA5+kqFBlMPNKUeLD0koOQ8cmq221LTlwicYZPNSoyJppMIXBhm6Ujkyv7u+Pjt0x1bT5tc6ozMQBh"
        "QQ4CUBJWSJ+mtEQNpugZrnWJvMxGFynCIuYzkHq0zWaU57MJs84St7DEE9j4ZI6h5mTE+khkuWi9qqbmPDDWR8Jou2xwTnTN"
        "MM+Pg+cvvt3/4dXxUdNSOyHaYMGdVqhWMFIvNOAexLsyMRfXhZnIscjHjjsrc+9m9DydjD1LLhkB/twj62HBPp4TRpTMX3E0"
        "riU5HBMhV6uBvuKPp54Ap37FqSUIfZlXCpg7D0KWaMTKwMs0acLa84bSm+uSxT1G8TAoETs/cVzRJM1sL0DGGKWiiS1vnr51"
        "N3/3q9o3PZwtwE+ugVUCrCYfw05rr9tgV4yqTup1z+iRmyrnVXT8tht5w06o7idXK680t2ftDcv2lH4fWI8fM7BnnKewqqOy"
        "3WIVvhQwBrNdszL0Eq8p61HqwC324wKgfBtkxTFz/FhSWpX+Ti2OKxEA1sCdMsY4s2cfR6TMJq0Mw+G7vJAU7F2+lhCMX/nJ"
        "wPhF+0STy/noV8Q4RxXqhfWq1nMXGL6StKRsnyULt8QPTmfEhiDyohW3mB8s2WcNbNp7/BusM4ilkYJVNBzioF5lje0tQY5M"
        "ejb2ceGYD3R15XAdqg0MANchgs5p2h4GvhHpGi4WP/Ix0LnvyKePHWGoF9soEz57RsrgCrRQNJy8t1UPx4DgnPOJ2pMbSF/j"
        "FmqSni41COZSI3KOYRq14pwYNsfHGUzqYVA+PQurLG2ryNntRuFaguGy0Y1ILrPZJJcBc7B00GjWKWq1HqsL4AamEqe1MRW5"
        "6IYVxJ7W8vaT2pF1JbPol+/WhrR/k/aDRvfKblap7TkcyQtJmFfZ5UOvgYf3uka+YMllTe9RUpm0G8XG6x5PzcYcj8tKluLn"
        "n1Tv/Cr9ub0512yItIrgG+6tyLH4KDUfy0Weueiwz0/kT08uwxRpenr9zdu7fNsuGOVp1it0RVBDCHqq0t2q6QRBvRKnLK2+"
        "+/iElvv/pIrnt6h17q++8e7sSsvsMWHuAthQH4KxXPAumlIxdBYGxTve0lZh8vRnmdJfZjgTawjwO1skcFwlkibqGyZN9PQS"
        "qrJ0/PzpnxPV/elseW6zDEkYYjq0U/yfiLgKQ6PVIocUd5POZ5By8vSf9L8PMLeArHXbU9MbXP1QmzIrk9Ai82+ba7layJLA"
        "5CukkHH+Mqk39B5QtC5wWTIhjrmnIExyrzGRhdisQoxkoWiFTSY+mc2XJATny2zEMac5V4zpjb4Zzj6iWVZ5STmfgDjsRP2E"
        "0RkZQBX+o0mGvgCt3BMIEiIULBfgLgDT5/WTztLJxDi98QJLBnU1Eu6zTCnvOZkKYsRDf4djWDKm84dodLxaMATYm245u8xG"
        "iHSPkpecdSgfLbK52PYiFLV1zbB+GTsNMW/mm4r5nPtiXd/YVB+mIRvt09zRLoeQPp2tFmyBRcggi1PoCxHswxtYC9yIpwBJ"
        "68llfksHq2bFwucDxQEBzlImnepiK24RYZwR+l3n6tQpgb8vVSXK+ATBGbnn0GQveJeN8xOYf+dodpBnSG0oval9w1XGnTDE"
        "AvChmewz8JEkCb4TNKNVRkM9D/MMnjAUBA85KDnYJX/6hhdJJ5wCm0AB2ZCWf5gu8vNsXuc9XOiogTa9bXR7MtBr0SAZwdyY"
        "1gPm44yS0jyosAsUjm0DHCFQYdOJ3+uUt0hpZTAovkGoxAXxAeVrW6fi5ONI7N5NKh8OWg66nKv5esr5GGk4l8Af3FXhTgs7"
        "LYFRBMbJqMuK6qYchT8ydbCUDAtBFWjJzpyGPV8tPmQf9JZrvpiNiP1syP6XD1gUZBzwNB+vea8d6Sa609MeN2cHvPFfjgNN"
        "NsAMsRywkxmUecUz4EaxsxeIX5iQOzFdZ5P6hpISmDM1AkFMZhxuS60TW7papBxcPUcvXlGefEif8T6vKqGTPl1WvD+ivkqv"
        "k/FY5lfJevvTF1c6v8UUrqCuNheNJrM8lSdr6vP6xfH++6Pjg0O+sv1v2M0141Z08MPx04O/e6UCGyoHDrzixF1QmS0F2XQr"
        "wp5XdGxhnnpIomvatECoe1fHz7774c33Xk/Sgh2JFr/8Dw4V0Wq1ZAj70j3fV0MhZc4ZVpouNf1AeVhMpC/5UoRzkCmJGF7r"
        "r/KoXjx/T8zRi2OOk2l6dmc9XwInkytQumEqakOTbZN3GJtDE6OWJyOhMdAZ5heZHNCnExIxaf/ztU2WX+idjdBQOuwI9Uaz"
        "y0s0IqcEDfzaWdHqjOt97xjkDmgXehM5fPFq/+8vnrPPBh882SRbXveC2iKdJLQ6NeC348Sy8VDlJGPZsuak9JaE+oywCUwh"
        "crOBYwSZ8VKTaNUmjWA1wu6HGMTlWsc03pQMtPZWwFRLGb6uEtq3dbhQuL0SH0mjP3bwfk7thB78f8tMvOo0LKNSXJuO0R4V"
        "vq6chP+Jm0i5Kl/YfbIqO51BIXPw+sXHUcqnRVjzPpOLP1rkRlDbx0/W2+iN1a27Qz2gzQA7h2GSi9OUMmXGG7AvKfv4NJFd"
        "JT5ToIENTlXI57AYd9M7oHRotqRwD5L4ku1vwdbN4LM+xZk+p20QDJj8DPwtIPa0A6U8A26y9t9q2Nc4qDj9nmxu4ScxCnuw"
        "Xdu0pZNJNk7ZjA0t7GvSQSEefB+veUMskejxXAccMQGTVCIxmkF14c49guyK0/lcrkbnaNr7VkGhTyBEIDpB+OwcCLe6JOkR"
        "7l47nGoYJ2wj2AmELyAK1yBSU5erBk0v7NE5pm9F4mTgXGSJlI4OkDppkYl3mqOl0rDUC29gIt0wz7e6YO/M6p5wRiwnU+Cs"
        "J3j7aMbMzWiSJgs2Thar6KVlcnlYucci8uymM3PZp2bRaW4uUvJpMs/PQcewYLQ8cn3DwkaBrluMq7EiX0pMMJErQl9RdHHP"
        "9ggYp7yHJQrJV+ICRhDDYT8QnhnX+0Ryh9Qc4yhzpK4Vpc7CxLqVbvKphBkxsoILIR7cmvvIADR2kR24AY4Z52UzOGJsMfsx"
        "V1SGPo4Rwi2t7ETOijWbXWDZ5Xqm559uxgcSianZPUegxXU97qt8WK8xYKcJ/lzLdocA8hRBKkiU9xkz/YiDGfEvT6s+FQMu"
        "/PGTI5t2ENjD/PbKhU8z2ZPTZegr6sfDgvW2NDhPpxIspVTAPNDYj7OkBVfJdPlM+BZT6EJyJAWKkeQXjn/XdRBQ+irZY5ZZ"
        "aZXNGqrzi0pLwljzHmGvRFmTZnCgIzeib2LMJyUmy5llqWkTLThxL+wdslODQuDElBdvMAZodRiizc8W8IpNcHEmQq40Khi3"
        "r7l8aSDMQtjPl27bXxLJoj7Dv0mjfJLojab2w2RAmpUNMkmQTt7IiD3BfEFV8EiqaDZACtcu3cZDq+3Uo7ppDlxT3i9FltHV"
        "dxcXJZywj7huOmK4hXXEnwFz5SVdq6zsEEpOz7XsY/73Jba83Gc5p1iyXCKBqMRp6ZtHP7OYBYsgcr3yRkbKcN4vnZYDOZ+0"
        "oF68UZqSCMp74p2TBhoF7p9NMr2dyM9hed88Cd55fPwJ+4TUbcAYzu86tGpICyVFpdA6+jd0QIXIV/KqyRsmDAWXsEzjYVM4"
        "EgbpG761gWkOsnLpZ84piPtMxrP5MrRYY+PbKPo+RpPm4aFL2UZvVX6yFz6eU0pw59SsAXRpYsHdAzNqzFBYRK8zQIRfPhGC"
        "ypY9/p6sgSs02IRECgZRuNZ6EDDG0cohC1kpCaD35JudOY/xSrBQLkR2eFI4Nxh0oT0t4Ft0R3HDtGnB5gQIpWAWv8s7W1O/"
        "DNmSyhdF+sXgSapHZ7I9Oy2BxK2IfICp+XunHBuJydR90JZRjliJZXrgPg2VubnBcf42WSIhOByMktVy9nJKn4M+80VeGtxW"
        "xTK6f/fFYW8eTP3ukES3phihrbwjRhgnYmSREWdhMUNMnw9W/JFSLCgAB/qBMICDhmuUmX1iCOewFYJFClicdHKqKe+E+i1S"
        "RI5g9RnMuPlGvrmGMEPLhQiqFJkTGOytI9mvEm5/g3hrThln9+IB8YozWrK/oAdDcSAUjoJOXIFhshR9sYlZIZau7IOBw1qn"
        "LurVRSr+G3z0J5Y4Wk8zNlpf5SbgnqVcBWM7dvNYrm27dULqHfW8e9BQFWenmATknRawARwbd+Z9IJMuFqwdnpvH9DuO1dsS"
        "azoeFm7v5dGu5iHyWA5gtlbQUrCKHeybL2GxeDAQ8jPoS62B3DSwf2AuS6k4lLORrOAKH0y5lYnY8hgHMksgXg+iayJxdDG5"
        "dvcrGqZRCL7qFnMXAcBvgG8huBHjrG94H+8roRs0HFxtNNRge6YqeO9g+A38kUfSvcPYcZc+N+KNqPpM9yfGfMHmOejo73F2"
        "E8V6JkKIiNgrJlmWfza3aWzO6HZ6z+xJ7OHmRkaA3WhfTj8kk2zM7tfKDXz5pYOdZAkuH1732YDVQeR8or+RybArA5x+/Ckd"
        "Xb/EPoCCwuO3vEvMd7LUaNuRWd5s/nF+e8f9wP3QxjjOE1l9Y6y/iBGuOE1PSJqYLNNFGAoLQ/Tv8ynbVMBKJocMAD2WsR7y"
        "uAxeRlxQ2V7qvgxMXOJY2izkDxQHLkHSzSe7x50XqgMUXPt33o/IthoZKbpoGQfitcjGVozXEEZu+WSW3g77hDhiASTSiIFB"
        "tRTSgK6bzimilUTAiwph73DyNN8FXazH87hB1TmYUk1ARmvZhGgbhkZzWWA1BcRNVew/Nhr+J08q5cnfNhAshxsGnqoHgRIJ"
        "dpH/rgEUuFwMYX8yCW3/qnKsHoLeVDw2ismK/okm6ZKu27sqpx1sGtk6ouOfUR8g5Nw7b36iBZPxs6847JI2lFPZiZnhO1GZ"
        "svF9flKaaOD2AT5rXhK6S+SJjL9EZc54LNXfZScnfmjpNevFT5CIXwshj4T8iaBRbfI6bCwxYCtckePKdTZD4/Z+ZFNxTQmn"
        "68hSn/VmjL6bxSs3mOD2BI3LihaVMZ8XeyH+JxS+u6p/o00vDcAedAji8bhU78zUsx9XJRlmHFNrU8RZrXNjJtIa0MtOhn4X"
        "OFV/+pUrwXO3K1bmtTYOuoBi9xtzUcPhxmvt+HRaorw3M/MwhUXce8y8GABdmQWZQoE7F0VdMJAGBsYIhhpmBl148QHfFIhK"
        "ve7dLYQyYr1aSFTXam4U1MRKva/lVtjeKBQuFCSuNpK9j4L5aikGHj5VbphLOKYvUq0U/fwT5MBHMAd61ivJJGSjU++hMX4x"
        "QQQDp1fwW783I+K3LVxHqWUpdktelIaP3b13Yi6FGqxTgAiaLfJlT2y0LCudB0S7VvjK6PAncgNFZQWJBfhQMsAABpu7NMfg"
        "bOJf/APyD+RA7j53EyxXgdy6AScVquuiM553HhdArLdt1rgLCLzRfNBaYUP5cJ4iUibiJqUSNg7rYO8djBWFNZOEUmLpOuQo"
        "jqU1ecaDKKyJ5ascM/NppvJ/J1Mo0ynrH82odbIbmLHSEkmtu+yRpj5PoEFE5UpIr97yCvHEFzJwinGJf7WiTVgnJBnOxpNY"
        "P7+H9PIpsQu9m85xZ+6P+k4yI1Oo/wGqp+Cu8d36m+WgqLNRe1sNImvdj43bttrhShoG9smwREzUL26jrNlpXkn6G7HHzPlm"
        "cOpC0sL0HJsF2TD0glq2mrSYfqTxTa7N5Z4OBObhdFgVFTe+PZu5uZcJ5SICVqlsvGMnL98skbRm7nG1HeGOhfkSZlF5qLsJ"
        "rFHB8C5mC8u7tnEFm+edl8rg8XDq61Zr9z93CwKMioL3IRs4/wx4LfnwG2NQF0Ji379h1KVmRUJUrG0Ys7D1A3UN1wzBr7AM"
        "rq8hC5syivh5U14+H5nktDeKhOIo1raRb04i3Exod5Gy5Wx7ko5Vg00UbuJZpAvamw1nzdTvs6lohq+rzW6MvlV29dkMxxgU"
        "oJ79o6iKYVwBtahE/SvBS0xCzdqbG9ZNO4s1l7NlMnF+YR5me6b2SnJFvmRLcK718LH5qAkH72o1knz6TXG2jhqbD7/8Us8N"
        "dwtcunQvmFWYxDW/RlH76fuqIjPp38iWqf2vofe+fPBrtIN0dNr5/iZl3NTTLHpH58n9VWWgr04v5gZ0p2bsk+STPZRNW/V7"
        "qV6avCPDohBY5BKmf4j6QkSEUm9OfSxb4nGwSThVLDPGtBUabi6vUEcVT5XycWIbvEt6+rRS3duc+a9WeoFccEB6J66Y10IZ"
        "Kgqmvjf1Pafow4QFe/adLU9TupSy0nlpwOxpBXiLOnvF8pW0QITBWtLX9Mzc6JBTncb04cOTUkqgCrC4Ma4VVCXbKY23/iuH"
        "dLLu0P5fhFEoOyhAbLz2T6hs/OtF40+SIBPEZTYvcl6S1+IyG3NIFx7Lb1ZjQ0K5swcr0k1L0hw7304/IbxlRf3SIcm8rBya"
        "Wi81dRXiC0DPqJ84lqIFboEPdca1Pkviu9YVvJHCgZpRAMsreGEnwBeZFd+rBF600soGnl9vMunUKd7dyPt3rRM+gQqI8Ady"
        "+5ybbHzfbVDEAdU1ZSVmXid7X9mADl+tsmbGYT1xKgxTHZOkjMmTIhuzzq7c/km5oV4h6BABnKCXrCbqsy9W7OfpZI5gaOpJ"
        "l6c5G55YjpxtI/603E/H+09fvXj/Zv813IEe/fRuf+s/kq1/vT/RH62tvfdbJzetRje+/eKR8SF6vf/394WkUfF2V5x5NH2i"
        "CefNlv9D3N4PRBwwIXxgWiuqQ3FRsB6wMN8dJXMIDGwnvPBdm9Dv0/3jZ9+J65J0SSIQogcrCHW3srdexSh6wRVUZ9aFwnWs"
        "K4OgGO858lEYB6+zp5Xdv3/678cvjjAIDhmiA3khPkwz3Mv6SXEtmRFqlCl42GQXWX9Zlwp5SGMC9UyYWCU3NhAsLNLgPyne"
        "n1w/X5rAeAUXpePDf3//7OA5j9HoB97B6GZ0UeNdj3ia+JV+nGdEKGsnNgHWj4cvj1+8P3hbqsr2aqghaZHwS7Y2VxVHRqMA"
        "EWsedlhFkD4C+Ayq/KjZsn4wZ1OmbBmH+ouakSWtGhlQAwl5kzKOml5urhpVrDknMuH2dRv5Ljwa6lpWw3mcCLhzEyRULxGM"
        "07GEhfc9Y0DH8fghySag8wWjODbFFu9ndnQtqWKbBEfiL7LlNWOJhC+FhV5Cu4Bazs4ytjXLadvTicBx6lkxx65rMiJjUTe8"
        "5o5p7ItmsGagwk1/S4t6OvtIaD1fZB+QYmiImxxoLTXglLFvi6LtZvDDlO3mpX7AXjWpi3d7pX4dDjK0WaaZbN1sMd5CGLJr"
        "E8VH/enc+9FsdgGV+dC4N8ykScCJw+TSccpOrktNGq1us1gTqM/+bUUCNNYSlqdqJe98r3rs9jKjA15vINj7z7oJaA4Va38v"
        "7lsw0Pc9ZwnwNteZjX624EDmainLDkkwimQvGWOhJH7gw9UZex2fz64axj1nnvvIkWkmJtpvbEPkofWbg/dvgdBHxy8Qc+LF"
        "4eHBYXHrFRAH+27dJole+kuI53WolXzWTkzA+YO5hoyQk6kXDMAz8J1cTsQUGk+PRIM4s+knbfZ2q97HvR0iFA3Euwx3Quxa"
        "lhMejM7TnD6wYYYGNqV538Q0Z9hc+tnMTQw2mNBwAuJFvkTY/uPsMiX+rcc+qy3YrGKYPTp68HtpS7e1FPGS/kIHQ+rVkKH2"
        "xCelIb6Li+vX2bQXbMsX8iL52KPJaSVMSayA5QPGU225rd/YKfaCbodmH7Vi86fx2a2N7F92Ne+5cDxKvUyoVbbC5XxmBaf6"
        "0mF09MPTI03ZyD3wqccbUFR8wpbRTmbxLGfcd2ptTmejukfWzukbjrmCez72cUeOzoWeltcB2Go+x5bYwNNipgDau7Mp3GoR"
        "1UQDKdowQBLAJMslnJoUWm+CwTuTOxDa60I79ebPs2wa1hq1+u3JwET4keSK5k4VyjMN1SkFbLunsy/Z2w9ubA5FQEVH0gRw"
        "wrooz+2VyOCLG4C0KTk7kFaFi257X9xUzJVF0RPkXvSGfDsoRWUsNWjCTZrgu4X1ppWDljiOweh7TA5SciAp9hZSG7L65wEi"
        "dNsx6aLW6ybwrqy3UfvyVpWntYsNZlSI2Tf3ueKh6I1JtcBX6maNyGzqOpUb71DjnAWWfcSqqfinragdl5K9eY2+HIe+Jrzg"
        "WIzJvphyWJqc03mFHEHHpKT8x7S8GNoGrQPJlzYgURw7KDOr8p6DBKuJuXABGG055BqscOlDTq/FESw0SGYygex0HXBodhPl"
        "yw/ezj7iimmnC05DS8LwhZIS24vnYIB4Ejy0NzRZWnt2gA/gzZONsrqJAEIbL/GCFAccqVcYWkdNMon9AgJzQUzQFh0YHzhm"
        "h1fRI+rnhAM/I7WniE7N4CnYBWAbAylfcZRH07hwrmBC8xSwaxrSfXjw9i1P251eP7x5jkPt/dHBs+9fHPNJpW+evTo4evEc"
        "b148O3jzhtXi/PT25dsXcjy5eEYShfmZHbxvC2yu28tOPN5hBwKho+MLWf12lBATRX8I3D5ymMghhgHK8opkAIwNfs4ARd6U"
        "N6kwuONSxqAsl2ikclbYIFCFmNDIPuBFI94UKxnf1fyIUSbTENf3Ew0pbTQZhvq1+rvWiUk7tJy9It528UzcBTlhu8s8sJbN"
        "icTwRxLC9BEnB/ja+LObfE5XRgawdvNwGKpIm4QT/YfFJFwtJi7DJpewUsfZjksQn4TKzlIOC45gqGrXMJeorxAZhYPGsjx4"
        "NM6na8PrcZIf6i2soZwOBbNjLmcrXCR5Wpe5xHI9m8yGyeQYKgLiXDn3wpPmOc2+b0IGi5KBA4UevsJUGmYVpInSKjz6CfHK"
        "8ye9R03E7QvnHBDyiXzc81Qr63G3XGdWT2FGy8GEtfyJ/uDYkGwjjShQLPEcnNLMGSqcYWorMgFqef4sKHBoWhOFN5CPEVfQ"
        "RbQjLHkrwWip16+DFnVYqwW9tV6F6CYEVpY06fejfzx6+MUj2t1+eHCzPDBH16a1qhmqH+Sa7w10or/8EnxuwfmFhaeMApmR"
        "6STidAGf2z7owfxuZtPRZDVGtiKCxqfyTtG6SihOGyMd8er9nFMYR+/RI0Su78E1ag37WA4pIJxUyqlW+jFBDAwiQpePvpZF"
        "+GZ9dxUzWBlcrtdN4uUSVyEZoXl3mVzQhSRWsl3swsljQ3Fg03q2OP50w65Vwy2gi+xXHEgtDxQDFhqNUvQzakcm/Cp70KiG"
        "M89oxZfshONF5s9NGhE9rozkjgBOb5I3zJG8nNLmITFJ2xumnAFY7sUTmIiKazWdSsHNLV5hq3KwaQ7hxNK4xONAvDJWEuT4"
        "zNItafdDMs3y8zpCEzyHRMchLxIR+l8eHQjzzGG1WGZ2jpmnGUJkQa3F4UJXS05iwRA4l/gWl0U6iRBdfwN36Cca948K0VeI"
        "FZIQG2SVqzlzR2zNItsNsQIkZ5AtUwSSZQ5qQJ8NZHgb+N2B27N8i69+38Lw9kFHvDDWyxnaAOcBAAGEEuVet3C4zqhPOT8A"
        "+9muJU2X3AF1vh6X3zSZb7HSaah5BVSWWN/HNnc5Q+oWwFcx49a4bzH8VecwIkS4xrmuS02PEIpocVh9PygEhRc4eANlbKBR"
        "2kESYspX2K6QXsN7jpHzXbCIrxD8nUNdB7hNXMCZnteK8+vL4WxSu99gEY7Ya+FekNVNVBzm2tJjz1ahxJHkEFx7r8m8N5Yd"
        "pct7T0mEUS9cB/OVvxJtbvx8G0FQgwLJSQSzyxdiIBqS0MlaMZgp5OnypFbKUTHMpgnHAHmnKRcYreAXNR2H4QcWVfddOgnC"
        "vb9l6RUKAAofDN5XPCgqN+hxdA6DH++DMqoQbhfaWqvg8nbIgO8FbJ1b+MWN/FqHeX0j0Hsk+4B3FzVyzgdTtyMkmISltXOP"
        "oVcKcJW/RQBcWRRfZeFXuZ+egUlUlZbDE+7HCCZqY2PKjHRNfY2NHCB8LHGUGegk/8W+3GvIg0PGBN188P49Mz/v3z/gCDU4"
        "0og3pnfzdLG8Lh4v0uQzGktZU+OmZsL/Fub8eUG3UgStNbDAFB8HVdCg08dpetwg6owqvartoa/UnNoobMTMUY5GnGZi66gv"
        "vMmhrH5SSG1VFMox1nXpD4EcEcepp2fpbfCB9lTuPApYMWJDPpkfCGjGhnNDVhlnY2RFWl5rkCLR3GcLXviSbIj2NN5kKKdp"
        "Q26R3MJ8Lu8t0G3cHQ1ZLTYYvnJLGjDb0jcHwSr6X2rTJYtk14VnuALUImxANT/CzOfaHHEzB1dTOweYraw3p3SCv4EhjEQC"
        "5+HKI22mEivifVznr0vlrnJFfx4VkEthLxC1uxEy0ZZIkiX+smf0/M3MfqHmxVMJY8WXB0AGkRXZwl7yeyYI8655z1BxwLEN"
        "JZiCEsTydZO930Eg34W0wOGpIH1O9IJ8wLeBHPonWcphxcwwdR7e6PCNx6nyz7cqJCTWcH3/7cuSXsIM81tpIbQXHAb11iFR"
        "sgZw6TnNINaqNNwFp/NzXYtG7bXgSeB3N1LtIb7eYAEuPdEYmXCkvmow0atavnnVNNUm+NxSlaUuyA7E4WFuzVEtVKEZvOYL"
        "cWuqxs06qPJjczaXc0TvWC0spRR3Wf3K7/Umtu4ctHmE5Xgw7jcithOLYQZDP10XAgZtyVbp/0nmEMfO0EFiq0lyZ9BPDkeR"
        "qASkoTlF7Pszgnzj2t6F0ZUYhMtkwheSuvDSuai9TUBe/dA6AohrgqQ+Zk+Dr0ysUiRNVus1TQ0xn2UI+zVI5wPCxdlSUuZd"
        "+2mnNfoz6AFR2tMcuZMliRInR8KFekND0olG1mZRxP0VLlvDTqvTCAbcBHUzkBt/hIQmHiQZy1C1H764FXuDqbAeHCJVdJ9y"
        "C9tYU4tzXiiTBoNGrz9NXMjXdIrOxi60m1yE9syAQxiFscgJuMjdHWakyUcQIPAMydkbRl+djsM6T15ikIR1JIe7FlCoPlpF"
        "UBtTxYRbbcitLzt2BSE0yaJ8QEhbltFPJ9nZOb4T2yClIaGavhOpUN6MAycWQT7gjweS1blsAEF81wd20g8H59AWDYhs84BD"
        "gW1dLhwQT1CXlK21XFIoxK52MUhE1TCb9mXxniPB2ogDZijsmVFOp1WKkgJ2ahhz4CinYJUCS7aQayHXiHJ9a0qHeAVi1CLA"
        "UPTgY8jc1LucW2rDVA55eBOwktQIEY2gqHjyVUs8KIP1DkVcypqqbF2wr2RQF8zBqE8Y/y/82IWe6tHGZPVCHoo9xmMdn1ei"
        "WtLHOmI/H5dTjpqfftRFhvFjmZb3Xq54Hss8/e9lwqghv/qFjGMWBvZ33wREkSxi8DKepjZjsT5qkjaDL7KJXbZOzhDj+mFI"
        "IvET/nr9g5q9IQZGtdGeuS/it3NKEE5bksejW2OOYyIs8vyLTam//Hp8SRKV1rsw/fhbHNprgDsQ5swRBjYe8CaElxu7E0Ir"
        "LtVr3RnjBybJWwGzZPJEOOnBjElNMbqma4QvpHBltJghZLa1VbKXJcjZw8SobMv49HodFEj8gBOFmRhzm6uUguOI825Ve8ey"
        "V1JhPWAgkGlkf+/E6kt0Tkc7nGoSZEbDCIpRK8sQa/EmFVPuDjppPipHnvRwo+QIU8SaUAxqqwPS2X2nt2PeXixqN54UTGXx"
        "RWij5Xmb1jedZkznsqOUeLclW0yz6vyY68sZW0rm5jaPNoCgNyk0RscCeg4N4bVad1HfijEOtSVnJP2puJubNttdsTe9OkVn"
        "ftxF6+krh56EugYBXE05525iTVnpmCGsTIaTLD+3GOMd7Gu5AecbMWYNS/w9XUKT0nZ37z4FqI104i5I+ZUKoPqWOZa8wP71"
        "1tgUud33yJaCyfI7N1WE0e/nx3NL9mYr5lXd/YxLtNyzmTHsdZaXjRmMnx5xCRs+igl8yOYEC5hJUK33wt80f86Fk6hrKhew"
        "iMlE0jmrEZ2kdJYWC+bvXIAL4JLBuyQMHvgZif1JaJo6OstvgxBpSAPicxFJjydeH7jISZJ9tOCRZwmvkucSOWZSjQMU0JOg"
        "37C/shYVuYgAoxVSjHp01ZIaOqjZAV20/XRmK3a5juV4COuNwiHvG6PL+cGeE66ajWjvAqppclVQP0e2mImAetVjYm5NtkBe"
        "g9tHhfUbIDrLJbPqvaCGbGg1w3r3/GHLK/bXmGlev+L9tLOu+uIGa3jbM3f0QIYFjrQnA1NR955zRYGvmQEZQ7GYCFBhop4E"
        "a2ApbEWBi9Z+4g2nCtvvAhTxois1w7MIqJHyGel7RfOZvJBgsZYYqwC26ZWPXBRqSbeby6HBtIF5NWOhxXHN6nz6KmUdXcAK"
        "x8pSLlp1Tbvs2ZkaOfXXThhq3tqjGhbu1Nt7uVxXi9lrwjqNYi7JmlnkyxXf6PPFukjGqPgPa1nQMFH8dTooMffY/6iZ23Dc"
        "oauJyT9qdQ3RnS1rJW8pJeOek5TMsv9rYxwWgxQmhq32vaxprGGBw2+w2xRtGB4F7Zj5h966efpt5Sa/VyRiRLZbrnJmUYi+"
        "VQemZgqqxgnecB1hLXAeNpRgse3IxAt2ImVtNU1WhKmL7F+Iwxn0qkMQYrACLiIJpQjJpQSg3qfG7gqXNsyAGf8Dm+G8NBhb"
        "XvBh9hwc2JxrvfV6YQwuXejndsyVUK0Y5pMnQTkta/ErowTBh3L+qoKx5jErWsWSkoL2lENKVnxQkFR95uZubBj4rmrFM9On"
        "Zl/clPos5UT3kIolwGZBd7EWYcCY3XDiNBU+NDPYZNbjc9pjcTSnjyqoxHZcdVRscih8h5BRyVLKNugqoxnby9GMKCF4yHpR"
        "seXSChCxpYU7V818wKpHjrJ1yl4IRmEjKYyGHF6f+mD2pW8p5w2sNvkq4dZasbDOvcDS3KHaMtznuqbLj0pgjt7fGbbVWzeP"
        "x/aDtfq08teRwHTeUJ9REltkkkzoNmvwfjvZ8wOtfh20ix7L63zwrwyp+kfRQcNbgqAFjiDaHKnrFKXgB/n7CGGZDjLlW4Nb"
        "GSLKKvlYUAi7s6+byCMjxE9oIntOv9IzAalx8W7cCSr0BLifyi9S3c2l/eiUlbr9jO5aaAdEEWxI2o59n3fSthteIBJ1ssFV"
        "zWQswgo8cBp8Mc6afOv7y0n9XHZ7UZ6wop+Artu5qF4txX6y23Z96YzxlQCB7cZNSU9KClrZsQcxI8tE9dpmRdtnmxDfM/Lx"
        "FByfFxQcdZ+Sb1Ig98uJCewBs/6dRZe3B0fHwsEKoQYtl1zTnE5T8N+Q3cQ2qQp03Ycm06OsKEPDXEA4/8i41aIjgxACma4G"
        "a8pu5zq2QA4oDVgjLQ78I9yllfSU2NbLkqPmcy2p+iOP01I2jlBYuAvh6FJ2uKcFo3DfnFpsGhMd0frdiZgRqv0Q8jsiVaTN"
        "6c46dnfRwxeiDGuCzJjzXupMCyMtXihYpYOOhISMTF0XfT8I67+A+wkvapaAObWuIgwEWEKaQa4DMgiZUoxx68puRBxRcKqt"
        "mgtpq4Kuu4smFrSJNYE/iU1tr/lx9AtDFYxPhjSa5aXV1rhhzvEBDoziUOC8rIUEYTlzvU9iFQb7KLpoR5LrdqDn3UBENVPB"
        "4SMPD5mtwZHY9UQCMjN0l9lngaD1nMUUB4bxvTNJqlTb4G6V4Lpo3BiR2RWH7ICnUwhZoI4a2HCGBxHrtNA1haRVhYytuOoC"
        "Psy424RJfjCfGS2QxEKznNUUJHXMt5c2A6WLbkAcg2SD17HcySQUSKyasXj8hyiXfd3OdLkPFgjmkc3p7KoYNggZsW2qBE0J"
        "7mWqZysYvqDgX6yElaGWDEr0stwMvxe8hoH6AuqhUIfw0L86qENB4kZ5I/TQZBi/LWYN1w/hkaMBDNjyPvkATIWvOLJquOtZ"
        "zo0wTNlPlhN+i9+rWWc9MZtVqRmeXhd4CvPyV6rGXLysX6Xm+nUaLo64wijxpKk4Xq9o1w9oar4ej198oDV5leVEe2nENf4W"
        "US02Du4mkMT1hQQvmKK4qDp04xNqXQeHMkNkqplp9SeZ5ctiGhRR1PlXjQ8L14sPFSF9jteq6XDe1hpeiboIwbqj5p89NXAd"
        "RO0fzWHiWCNG3auEEAc9xVDv9UblX6MignR5uoEFh8V1zN0PI7VZDDDhyTZ5ev3yy/qgDJKwjWIVxhdYdnML53nEFd3hTHY2"
        "e9cHJk02YibZSbIxEq2fraYZiZ5T+ST/rHwnd6kbMg7yhpqKqNseiCn2sLKs2OnC5dZJvswmuX8daM8I1/YiZb6RNjqJ3Lg/"
        "10Q0DaH0TliG9RE/uvn1rFVTljMEik2Lwh4WS8wwX2WjVNP/ILiEyRTOph8ztVdgijVMhcXXDHQ+Km2i0vIv/AR9XAtmdV+S"
        "dl9M9CKeiSTonO78HW8xM/QkRuJEIWY5MZ4eNjn3QRXFd/JmJOC8niXAcvtRo3SzLyfSPYRnDwqrKbO9iEwR+imPijo7Hcrj"
        "Ch3DJ3Txwe8h/b7c6Q52QEKA5kFCjKWmgtdCBz2OYe3MsOEF/5x7BUlGxgv/uSx8OWg7Nu5KHHF8iWlNv1BUKEAkhNIb+joW"
        "d764kRq3shW/uMHUrUouMN1YvUVQRFJBBP1o0x1lMkJElFAgLKCV1QCrfqgr4HFJeTyyK8GIA4dy3tYNPjXXo52KQG2UZI6O"
        "8cg4BjWTuCuiHOE0XV7NFhdqnwXOn+PujDib8alhKNfRunxd7GiCP9ciUbBKpoLLjq5VveBCLLeAfBNp9Iyh27L+jd/VOcwy"
        "1n2JoQpeVw57ZxE4B6dJKF3YrcuxvQAeE9e3A8szHr86Cmi1WEsDqYJP+C3gkzm95DhJxECYEx5jSVBPzUQNNNjZ3LTLVJ5j"
        "miBA04NvZdGoC+ZYHnD8DvUM7xs1KEKZF2Qrk2op5xSDxbWSORZS98jVT01cvB6pL/i3Pxy9eP7LizcHx98e/PCGfu2/fL//"
        "l/2Xb35hZHmUicvnQABD8PG8v+H4b/eoAfNDgrMIP7isEk00d4yxead+Pk8TknAYoPwFn63qeCmyrdo3SNI38QMDXP1bscEM"
        "siTW8DzjgxMfzBezj9cNlrIKK+6cZH/Sa7CG0AYCyi3jK0T1QX8tiuoGylNTDUmtrNgxJIRR1WBuQefj0Q8vrl4yrnKAlyBZ"
        "iMvLkRRov/7IFu0ss7BZG0EQHcklHokr0gKbtXOaPG6AxRg9d/EG3nKHzNGC9IiaBjLlFrEuCw5ZzPXg6kaIuyU9nSd53dMI"
        "Xp3PzHeq6SgL56LF4GA98G1nHUjP3Cc0JA8c7D1LGv7fc1wVDR3Q69LKW9Lqkb4M72AGOCAk635sXFGTSuuCmR0xhuLgmRUB"
        "Hw0nIokyPFr4QzZd7rKfDh1VXGqRuVflXKYdPJGLbltZ3jeH/G0j0Cfq9EDNmN2bV+pp0qtsoirQrfK2pxZ6EvxUTqb1wLc/"
        "55xrzp1wAmVdm/UTjsHa0MBbReZPmrIZPIo3EdVu49594cAQoS9uuI9b8f4qGlT7p34wzsZOhVbS+VVq1BasgMV1vaYKGFSy"
        "ukTi2dzdkkX40WVqIJzOSwaJfdkHvKFhksQMP4JssuN1YjLJu7ZZq89qJmIucS6xebsVrowAcolQXDZ1aL1ZWjd7BbWJZ8Fq"
        "NNSZQ/cCJ+Lz1gxvHz50LxQJzMb0bzE9FtLfT0QI0kxsbHRPzY2VmberigJwgcOdO1uwP4yHL4wwn60Wo0KwEFC8dT2Fdz0g"
        "VZ44Glsyg1zfRAv9TKu6muEdagDes/3+WpBhNZxUj0fOX3jriUUC8FC6ZOGgJAbKXFCvZGJQuPkkQmg9LytjDt+hg9C+R6CK"
        "E/2gyZ8bU8FiJuBKNYNN1+vS+ehaOf9RefHuiF2tm4xhL3HAEc908slFsfGr72rFX6DKBbnncmgcZtwbVEjlGxbjjqUoQefm"
        "s4o6FRhxP4m5Xin0uvOCjn1NpPJpqn0nhZaQUOX7iUHhetanTX9Uj+4mtNTlJqyuUJ+CVLMfTPFeRINynM4Q7zJXz2MnjJDA"
        "R5zo+LMNiF+QNs0NUinZsrnFMm4J7P8MFaUNkmwiQxZOQEl9JCmVl/bSGJYjwu4ZFyl7vcVmyDYvhQjMMi3WnQ1Ehh2ov0BS"
        "8otoSKuiZ5ewWM5HAlpAVOfrHPaTwvVOMjH2jkO2v19BQMCmG0xnVwPDRG46yYxIjaP1xXzdqq14AezRWltc4E+c8QFfaLBF"
        "OnMw9WrTzYpOPIOpooe88VxyTuHGwGEuF84m3hFi79iigrxnohDdbdC0tjXsDesnGCU22bRuDQzr2cKYbibBh8gel0Vzp+Kp"
        "X6m4BDzKMUh0jvSVNyFI6P51fyIudeI9grRL4vs7TJdXKQdFZqqkyVYwAHrqm8C+bDDuGq7GsyT45yqjxhMlhnz1rpgp5fYy"
        "r1kQCMST5bHR1vqRDjxYbJlyRDtuIe6TuwFzn9WDR0Ec9Lw3BX2bdbBxMDOuNGWsk53Ax2XBEOLxY3U7d2YQFsn6Jc+lpnNd"
        "K8i4zu7FUqbnfH1a9KGxvjisNbhm0RhSp8eiMWZZJ1XJkq4sg+5453h4U84u4925GbsNUUhuuvHyBHJx6vuUV6Io7c3VMAZn"
        "52R8MHyHx5tKpyOPwrsx8pSs2/Sf5iFsnEadn23DM+VR59XUu8XHRgL2c+BUxG39k1yGj/Ta39zjyMYVsyIJjQuJko0r9HjN"
        "Tb4BXPac8R2ycZUN4Joo24SDgoV53Q8m9k7NoU8qooo5zZQLCWZtpqVtsQVC2+N8GjW/vsjG3zS/FttzDUzmxbgKWdLBO/yo"
        "i9hmZoaU4KL1kqYdIwnjifGaFYQq1KBqc5ZOHDya6GEIpTgOSLWRGtSlUZO63sUkwAFVEaMhNAHbq6IEGFdACb7dL43X+8e+"
        "5zLJQjBwU7VhYpnWprP3CNPP98ujtKZsRb3UNMfiMjTPDy1hQlLLF3bwD4ypvb+wfV7DzYNmwyCE/1Y9wrlEHBHFrEYYmV1N"
        "y2MTVZlcvlUAj4vLdZgPN+mmp2dbOEBcWGjTSrxdrqcclfupLK1XiQ1q6z3/aNKrAo6voK72m6EAfoEgRtjFh7+zOBZdhQSU"
        "a3i0QbwwOEHB3QihnJ/RkcBBW8PTjRFPx0Z/UYZkNV1mk80tqkkP2/mw/QvbAQ1X+bUQr9EsVw8QQ8TRodTa3KqqhY2jrxtj"
        "Mzg4PcXVrYHzMBV9byIK6GC22Nzqs+dvZA1EgZdbE+hwepZNJZ48tfFeiml5GszObG5wNFsQEUNoNFTMYAaFEDmLVAy/iL0Z"
        "T1IEvKdjTzRHJsDO5jZtCF7QUoF+WbPbCFZzbGWFvSLs5iZxiBLDxVllQLw1OIsEGcX57oeCkEDwOW/DO2bOGlZcxMtpQIif"
        "qXKZRB1AU0hLCaAQZu7ATtaH/31rn0SJydZTU4mNgcQMhFgP5tftysEGNsA9252bKc34yuYquS59Y6zHAPe8dLHnmWb6m9ju"
        "cI7FzlmcUbi5c6ll6YTkWRCDKNZqF1cxmE9InLPh3Tc368aBUO4Bwkp7dpB6dMtpSdiCu6tlqTETHr5h48IHxiZZ3ARzCV/v"
        "ukIYeQkdv0Z9S4Hsg0I9HmLd+GwLz0BHu7opIPqZ5CY20UWq/52lfHfBLmaggR+yHJpaQg7NR6HJca9TWFoybTdOZeoqv6ll"
        "HFF9a2cmseB9ecxLPyxWrDjLcETADP1aQndU/2Nz4emRCOka4vpa7tzTwF5lASk0eYLluDe3qddYvNVqRsEBqZSr8hVtjSf8"
        "HvN6rzhes7zLHXAQCrAkAaNsVQp/wfNE5UwVPXApJvyDQP4OoibA8wGrhKNJ/ydJNJFUnwgLLucb3GywhLwrNzfsTkTMFfEx"
        "rtiyFFuyp1amtIF5nTQnqNV2lGkBEn6X9habASi5/DEdBq9IxCXy+3QxS8ajJF9i1NN0oiFalRu6AxsQ9oQZgXSRCofPveox"
        "Z3gcIpqnMMuaSXIfE5X3biyzLFg64TCvHHbIBXRzSymiN1M3oze64yAW9p/jpAvrJSwGazVWZ+d8V4Jb0gfo0MOXO1fNSjAP"
        "aDWof0Ik5pe85K1OtGDSxXGwP4OIQhw1yQ2OqXfkRGNUS2gVw2k/hk7bj3moiphnTCCrqki0PAn1Yj9cC/Zyd19FrwXnsFCK"
        "Wl4srFCJb9IdiQaoYbd/cfYIoMbNXop2T3SAfPwW5KGy/FNbsw0qDNKP+F3fFArCZt7bGPvGhVU2ASX8cOn93xPZ5r23EjBv"
        "NjF02KHLlN16QRbCQrUmnxnfPA5aVjdTLPr6MbLCVC3PIaiXBgAtVEFI5DXRgg+VFvZnuyVmG8a/sIao25fsKiChr/3Gbqt0"
        "eibGjvlQnp88WRN+njSHiKjqXtfX/Guk7rprzToSkrzIHwMHp2pAQ9K5+I7PJYlx5b680U5u6zV/rd+baBomtgw//e6QSr3S"
        "Kq5HWip/UYi2ZNZZvTytfthYOr8vOI0aI2Lrf9QLSp5FruLGIFcFrTWMozzD6vdeuCqbKLCw61R9YKMA8h7bGP+wAH+JwHio"
        "9R6bFvg6BTyLE/ZHLMnovYnEMF/CzIXpMgsDyLqidymF1hEKymSc0hgGWO1ynsTQTsOsCqsVCKcHVqEAYwPj2NsoAClPl8Jv"
        "EfYwn9Wzg8BbNjGExZ/Eo7QG8nUbbABDes36ETMeA2ZpR1ODVweIIigA//L0n/S/D7cmWGvPk7kst5ooi200fT7ARufpZbKe"
        "YuVW7rdumJXpcQxX4497azsL1iLPKtJxVmPdYq+TuQ3fBMNu5o22vuH3iIFKPzXvbq+YSlB41wQZDNkdxY949V5zkHJK3HKU"
        "KeUcgDjXqeMiOVkp23rQfDamU6WvxrdeR8nowuan8KeCjh5wC/9oUQsPMA9vUdg4ZbZayOALqU7FemM5Y87Q9sMuZosKoFE/"
        "yPKK5tW7DLsOi2XDgknq0dzYSnitTtSRY61dfyUQCZxaAivMvtv/X3lf2x23caT7Xb8CzPFZDuLRRPImPndnQvPIthzrxrJ8"
        "RSW+uQoPB+SAJFZDgBkMRWmZ+e+36627qrsxHMrOftl8iKkB0Gj0S3W9PPWUen5RA75/lY6Afh66YEl+QY8Kr8YhuOjWZp/C"
        "Fvkh6h0xfSW34SnLO8zYIRtzr9utAw2quyhvlmuaRutmtKpLn+utuIUwiOzz8WCirMTBFLgDzcrLl5Z1fb3l626dVX6EvvY0"
        "N/Xk6maN6LQMdVO4i3C11DzfOBpFq8QCbbBtvuM1P83/nEX3wMPhFviXrR8cepBAOwgEW9y03SlT7AjIEjVFpB5fVT1YdICb"
        "hYV75g6mR49U2C9YWzp0gYZGH9UcBeJVAp8xYRIb6CxAR9Ujn/kBJwayxHt7m96DcywWI9WigoKO7BTDopLKGeC0JnIkaMQv"
        "ZHJ7ZwByqXMVOvKtJZ6Lqz5xVEyi9ZxfV76lgZkfnvHv1JNm1s2chheA4gCOAxPFlSwrr8rEX+bx1T9mubOQVTWwTU0j27q4"
        "bdxU4BLpIK+l7zD022M2Og6w2/t6oNruRVDWHzYeP+pHtwzIbbVq64W5O5kVlP05qkVmGPTLlW6Uc+2yrlaLYsTUpdeIxqMT"
        "gl2PpVFeoY2/ctFR9S5+h2cPkbqkJoLULHwh2WL0m6eTJ7/xOBG8iHTckWijJPPoq1hT01VqSQoy9oUPYK5MzH4QEiHoO9Ij"
        "C7e+Zu5t/Rp8R2gLwY60XQxFiYhfxDn5FxQjBEWFLyj1GdD0P6DemJvFpVwJ/7RCm27Ig9l4W7SvWt40Wl0Eae8jvoW2muKs"
        "SyhQ1rWMPbdthnxXEJHix1l2PZHOcS6IRIPIGAwheMqNdeY5SSTkVmZhNPriD0Uvif6ocyBFvvL09sq32HeT4htILF/HxyQn"
        "TPiEOvDpYHCJPJATO070YzRQ0A5mzh7aTNX7RszD9aPmrQLgVtBVjp0Uc4iBawtKC2Em6GVz3ZPXvUNIL7j3qpVb74QSrjEU"
        "EtYFk9XLmrLbH+Am1ak6vJQHa1Qtb2lQPSwNXFZ6J56x+y/HXpr4CDnKwmEF1xITGlOA0yzls3c/YtWjqFmWJuKINP5D/Bbv"
        "A4T5BZEO0ajaySz0xoVuV1fXVXPR0riod6Qsrr5p1zBosozlQagPB0oeafHthruvs+PhiRWE4G2JgfKlkEdikxdd6ZWNI5O9"
        "P0rry84KdDyaLH/vUNTy8ub0JTHY5JaA12AYenTTQuOAYbXvJ92ltO3mjCnCMZFloMt+bsSOWitoh/ANZJq/hJJVGapdah4C"
        "CQB6Qd6RRA+rekVN3If2Cfao30I11/P2Tc4mfOtefVxOOWyDfbQD1ZP/GdDxt+o97gg8JbB8arFss9emmCKDxh56oTrzOgxJ"
        "nC2r5oriPvrDSILtOjtjkjIUN3IDspnqdc/vPAUmA2AkWda9tauPsmvBvYqE1jRse3k5lL6162PDSdoikOwbfq7Iz2dfseUN"
        "2Z1ca1UYS7+a7curJF516i18h53zMCs8Qm4FLpwamkwKv+ENp9rGxhWpRDyWoUwDax1E7Ep6EipGuPV/Qx4cvdTkoMroRwOD"
        "gmdkhp8aBv4FjIcq07ty899dfQ1pOaP/KGO7OMKzFY+j/7lXnS6bM6hSkl4DBBah4GI/0hQiW05+rcxerySAUy+sLsuADpQx"
        "I8/ywm2itCXfzT/EqKJf2evEWmpJOCOvleD72PzB0B21+h36mmZSCtE1xeQu2AcUOXiBUXlgjpFQGkWlTLR3zUAC896uqZx/"
        "SwxHCS4WtSmwTDwlJyva8MnU40VNS3VBdAYjKg/YE2KaUQAk+zSrKYg6cJ64YbnbKA2M6b/QUBI+KBoTCZKB7fWQ4aFpyA8P"
        "XbPIcyxYQRWa3HqeY9fn+PnW/ePrOHl9BiN6INnx86gWZUSIhBuWKjiWHDp0u94ZcuvmTKwAJkZdAH0P4TKisLmAzrvCncCd"
        "1zqLN1AURhWgwZMLJu8x5GaZ9EQy7Ef4cTIyKtn+BFepN6QjVCzdAjWuuIEktZvzhmH83HjMYVr8QHJ5UxRGk+JnjEpXvWAW"
        "wAMV93QUfJi795UYV6jKjfHYTnyLJSY3wVlczmLILVmngrZlT2xp8qSoIA4tbYjm0V//9m9cjAcWAoOQy9CTwUI/mcwIuiHC"
        "8wr1FvjZMTygaX/xrMDUAZZh2PaMrcZeAIoSefIZsE71mWM6+lwUNy/8JP9iXn9wq7SnAjH/id5D+JurT84xKCh1P8KyV6ub"
        "peglkhMBi1iHSFDo+sSdwYtaFvKYcieaAISl0Rd+cYXwLKkEDaVZJHDSpufWCcCMJZNGsT88Kxdw2EZSZSl1otsV/wx0jnXj"
        "bHsqsyTOHqS8pKRvlleMrfapkzC/wl2Ajz6oe1zUaVv3mLAi3UC59uhm05790G8qQGXOxYfubLplOQ+odkqlpm0wMsKyDEtV"
        "a9axeBQ350hwcNbTSY/OEtTSOAZ0snxEDAudD7TwB6ArJacK6Zo1vFpH9HjThrOJcIiMMlEckTEU4Kb1WpxINA3OkTmRwcxA"
        "HeTSlhgycDdJJv+2xqehsQBjCC3GlRJCSAW5QklalnG4BQqQypu8imvp1bR1AQT0kBENJDB6BdED+lbKAVK+K1A2T9pu3Zx/"
        "FERlg2R3wccTkE65yJAS+kgnpt+W9wpPYElENR+yA6SPExgs0zTmNmlXt/CHzExmDcCYDvLnavReH6vKTEy4piYmjPDgGFOV"
        "Q+055pbMt+imNlYhGGXYA3RQbnjIPNWwXDsUjp3MDPFAqHv75r/q9Ou10JMOb5VjjM93KqvbVqO+g4kjrKGVBuIF8G4tCeBO"
        "STTc5eJ3/yzEz4l/Ckjxn4JRHCPI8NCjFg4ZQfqiPRwLRaObz0OnsV8DlHks2t3Uq/JobG8oLXezUSKp1VLI73c2NV613t+J"
        "xSFhfzmZu6o0VJe/iL4MChmypj22H9kwG+v1qjqDVkr6qmmSC+E/czNm7yme2gEP4QlvKbmCyb0ZmB+cS8BKhoBahBYIxN3L"
        "WcYsxMIVlELOQDFu8by04mVh1rY8rPdMvI5mOv8+GwoekkFIOceLDcvUUdIfqnXML3SKRtDaOP+o9SlVnAA6NnLYJVHVQZnG"
        "n+VxWnF3E7lWbhUUupFtEiP/siEBMLh978jKHYtDdeN2MqoPsJOdni5qYVg9FN/gc5+XmDr8M3FSOLvA1pIcIJmGtuP5mqbe"
        "T24ZUBHIvXQaZoxTDqjj81JKOpPVwSElWPT6Z4F4sB7s9fzOs0Q7bUSaJD5tKjhbI3uM5HrNijmPk1f2W0xUlQRpeT+boyO+"
        "200ZSF42Xu8XMn4rglH2K2o5tr2dFJuHbfvrVXcBSScP2Pj+kdzW15CN7coHh9123qWm5U/ao9Jxr7dtBP51t23Hmhffu1/B"
        "I2DWlBP9ywVkhaC2NS3eDiOVNse8kMIqzBgwZCBSnW+qOZBtzEkh+IiRVMVlg6c4LNKH8HYsg7utOfuhR17hl/gUG+YRfXIx"
        "B1c1W05zclgjVziSHHBd90D7bBsKWG3gOehLk1FasUNdgpNTRU6uE7lPTwHwwjTRwdu8v+q6q33AlcIf7vTGO/dFev9WcW/g"
        "FULGcOABa8oicfuqFsud5GF4lp5iGmMFMsPnnCxlNjg9VhQCwYDl+zpuVOp0eGyFcpxf33AwTEj/W9vwFYSxMpEwJ43Ppc8X"
        "XUdVApperFBv7lI3SiP40Y6kqJHnQ8Jv827jXHxnzL5DjJaNBWfzDFASF/WaVdFg3WGkjm3MoM4pHI/6aOpXz7Y5TBfavuQK"
        "Iy5YDMxOouHkZeQ++w7ggja4g7MuNXBLp3DOm8Wc0nVXyIOEdnvLDP+sGfKzvY1unOFZjmNa/+OG6qL36OTx8eSOif2ROu0W"
        "UfcEkRDtmOBOGPmlFA8j6Ci2htxuGE9V/G6ETfFfSqnsPJxz/Mh5ILv3Hgzd/P7Qkg8+DOIM/MhaBmtxFWSs1JOLiawq8nSE"
        "4Ls4NpSDlxj4rSuPWg11EmJX3tyt5NNmsajbOWZQi7sujIG4DlX533ShghLFo4gLjJmXx2HPM/FYyKHFaAmXIRYXOZPug8Nl"
        "DjrD9TVSMqflGTwOsbm6XtZXqOPqfYNe5DnN11y8mNwEz6cpJh1mVwomaib101qO9yuKQgBfvQ/JUPPPeJ1hjmTvY89SARvH"
        "YOS3l8wYFDzIxPgi2Q5mXfhkvTvWUrAaBhCc6Bzyw2zGuckK/HdMCmx6vylorXNAQKTjGSAQz2+WBEITt1klJA/h3XrDD6Xi"
        "4AZPmFzg11xSR1Di5vnXOEmKLQY9ru3ax+SxoxdIGkdEvo9vjNI5Mnw0/JbygX3iMfC9avmAHugMP+e7g7pnd53hWoNf3dAq"
        "4p18U/eQNv2ir4E3ToUSVRhos5kxWGxTL+IXC24bvkN9LIX8LT3eAwG81AQioqPbRLUOyuluyFwuwnUPMtfz7RLaIUAf0GPV"
        "LPSUkjTJmBMsf5JkA9Hko9N0WoT0ghEOpZyvnpq6g1y+uPosloTCTsQuxSJ0ThsrhQ+XhcUBnbnCkAsNeWBEG5th9py8ggRX"
        "nGG5d1FrE5qzUQS0LKPiUjRgyeaFftmAm5oPcPxBbtnLZ//35OgvXx9ZXvLs19s+2QQsPhaRPIrxzJ/dSdubSGfzSfoZ1XHK"
        "1D6YgErxBRlt5MrvXLvCO5ywneuBCKR0vBjvolUDS4VhNtPiiUfaTIMnPhSD1gOHC5lm3exyvIrNCRcm/sLNot1q1ghSL/ln"
        "0J56WiosF6mqEa7UvX29rL8nzE8UVQ5fH+ypNZeqyVP3UEkF/EmwepPi/xjnBZB+mOgNp9REUUTJbEeIZ0Cqz1gv55ST3qBv"
        "Rf0w/Ej6lNyLdkz4Z7T6qCFI/lMay20lKst+qb2DihbV0M3BtwKmnAu/oNIxNWMj40VaKehEE+0FcU8QhNGY1OfNEliGR4Qv"
        "rydwDMT1KN2qcqbZoiT7W+7E32LRbKNDPo/N5LWp+i7Up8mS6X/FoemUNblmfJrcgNiXpviLvbQVVKS0+C2gIoBXS3ErE56k"
        "3LTYo+1UtR9fnfwEFV+P3jz/8ZvnJ89fv371+gg85USsywu0VW5tMu1BS+6JbOTMskwzdFt5t8mFNEDsmslNNMUxoms+OCNw"
        "cY26kAHV4PEtvJL92nv2mSiMMBO5dEmnRWaHCl1cirzdhIVsohIooiv7hYZ41X6DWhS5LMtsCqO5NSRJmkoh+WRJRdCajZA8"
        "ishrpsV8MDxSjCyd/TTQ24syV3LZxUC6wWLUunk1JT1UpXZL2MZYmE4AmZaQJKanutdMvuTOudV7dDFXbCr5Lwk0uLuvJC8D"
        "JBUB3drxkrorLLJvLAg2yNQ1T9oJ80mnkY4WNad6HiWSKp2N33h4GFymm1yaKGdaApLzCAUGf1oQ7j/TTPAgxR4Byem+6Mia"
        "G/O5BgRekO85ySWO8hho/6g7XFYfyQ+Kaf34b0gIdRMMf06AZRRk9zQNIIWqZUmSSVC2wm6USWP9o1q9O8Ig+L1KgXEdb8+J"
        "m0q2FCdQweoOseeLjuWleXtcFSQbm48S1ML35ZPNoo7/DO65wMNj8uam6anBEzWWsLNl5YlwkQRsQWQlK6u7pN0hNUKb0PEE"
        "N0SGk2ccM+MK6Y54NlDYemZDXzw+PahikF4Gx6ePrnhqfNWuoE7puWK3dn3uyydn0vseZ0la8aGvClWqx1eusxgN4P3aJfcu"
        "W/vIm7HwumBl+b9oHPx+gwofb6PvGGMPxkk+4LFvZLCI0eZTxtQJJEldwkikpNmvUZnxZbWd7sK0/1wPBEADzHyEAHymP/Il"
        "DLezIJGbv/drDiMZGmowhTUIuVmJYRqOWIruaHxCFNmm0jsUcEy5ncooj3LL8a5fkhzsmaZzh3vb6cRQpiw2PB6+3A+7AeXy"
        "UG7qBj2DQ1edkRod9pGc2p2sKxFVZcC3Y8G6RAcw1aMtoDqgrbMcCT7uYvUWyWMmOfb1TQNEU0ynVEFuB36WP+e7q+ctlo4O"
        "xagrxGz3N5Sv+puTE0wwPTn5jfemgs/vtgUz0Clq7quXzTvYFB85XAUv8ORY5BwknoJ1B55SOYEUsMvUdyHwl2SiDECVfzFC"
        "eU8QymmRb09nnUCUXdewDx7RXFq4Mr1GnrSF4uBZDg2Hx+UxtMngjl63LtCmHBg6nUEPHgzoaODNnENli3kcpiMqir5enk+l"
        "NiFZyoLvwHJWmBxFF4TYHXQTmd6mdUcqxSGrs1XX96x/ofQWkOdJ/eFsedM7VXgEPbFzvbppg2MRyA/IfMUbc8QI7v58Fq5A"
        "xG/aDDQGY1teB3JLBFlgOQkDQ0RnVPuzWDTE3Yl7/ZarWn40ZBYANaFxwd3innT7/QpxH3HuAkNhPCErNXZWQRC3FqJrxnGy"
        "3pxhu15zCKWwd+SAhW+d/joaRheCUv72uDz2Xgy5CcdS/iFIyAGUofc+5LfNDtBNIIB9TZi9UYxVDJ0lfGX6mh2xnWoApesw"
        "hv4zYjSIXDCwTotq98gaLneKQS7vQUemgkB+RxW4xFcncy1vk6bGVEHEM4jrcIiAaXQRkG0ehW5ZT2ryoAmREext1etVfbs/"
        "LnRxnE2ioxOgSJsM9Vp88hgfB1cuQzLAycYEyh9x4gkQeiVfG9A0FqQSW5lkF02NMerRa1PrgKPVx+dnsItq2edJ/31tWjZy"
        "eVbYJPSVo4E2f2G3pNHMtQfTwH0Ic5tq3/LxfjeE0UjOLr1CYQ9n3nM8vGAN2gqHRKloAtrUUpd9pAdGB8xS8OhLWAIVnyR1"
        "EZXK21XXXgB7OuqUiTYZLpsKDz9VyF3ADBhB2WUgg9uAU6tH7fdszqbEqxy61SV0P4UiZGeSEKu76SqnWtlmvtVoTDJDFqHh"
        "1SA9yw4AK6OIzM4Zor7cMPjqcO3TQgEIVmgbKwrSg+glB0sJCfinnrAFPegVV2pYAkUUqQ8Q3kB1DjjyJtsJVkY5yH6Mb8XY"
        "VRiJmHalTKYoQ8xiQ1siDeHG0TwIQ6kT632BzigQ+lxxKyPMJkBNqUSEAOLjkmKRzcV0ELJTsWzyHXJxTgETAG04+csDr2OJ"
        "vK3C+jELyo1NvO/0ooKh439TuVL4gR8IP/AdTExnBdb9kshO2RZZpEDOg/EEsVTYlcKSeEto4eekAl5IcLJcNAYOpKQ5RcFG"
        "w9lewkbjNKQoPGv1ScQYhlTCsRBF9QSurvosstpXG1cQEwLkCQTIpvZFAP9JkudIRWrO3oVUxq6VoL58NmWx5dCaGYef9Xgo"
        "T6eKWKtxTNk9g1Vl0C9vnn39w/OTH5+9fE5VZyVD587GvKP3DUej+T0EjAFVyI3J22eP/1/1+L9OjvmPJ4//4+Tx8d2T8Zdf"
        "bAZQKdSNEHVOSGnBBE4+Bn50/3X/ETXkK4y4//n5305+eP7jn958/ws+DBrnvBOL8kEaGhOFD+/bgIkBOSascWY+FczM+ENp"
        "r6N7G0PpGbDvdIiV4OkXZalpbjuuXsXgYWtxR5AjXHzlQ8cGeGo3aSbolJIjdwUi4TMaZ2ArL7pDEdHG7mDVrhBUvmm/N6ta"
        "SrqRl49ojzC6iS6Pzu9iisiH4pwUSMDubgM4EZIaXvRX1Pl3KGL/qw4lV/oaAkFlTz8jSn38Q6Ro3aJ3SoIs00Fgf+52pc9G"
        "7fxK4ou2gRuG7xqiw9FRrbc0aThWx4fgjlHl0MN8urPVN7AXIwH8FbcuwjN2i4Tf38rtx9gSXVA5yp8w39Ds5LM7aXgDU5zs"
        "jFwPyg26o2Exs2AaeMyKlwDTIXFQ5NpOJZG4lXbAxBniVDT+6RXI4prBx9kAHRuRWPuY1tLMkAqiJ8bMfOYGTatAt2J8MMZt"
        "AEboFb6PX8XrvVkYw4NaQDhhs7BOjsAVejjJqtJbFU761v1groy9/FCvR8bGdbG4WZFQcKIPvRlUPQxKiEBmcYX18ZDWjWpM"
        "VMW3r14+/wApV4gqP/2IZ3JpDQIebqgh6owB8xvyRr8656EZF0+j0PKWuRiejYhXF71JfnmUh7JdbHlg+wi7aMNTs8GqnekS"
        "2Oqb5EWexHPpsEC/fn09DXUpvMZLqXLk5kdrrPd0Z5Q3ZEOLcPXINZVzXRgnSpArFG7b2UY2HLYDxvE9fLeFMUA2SfDzfAlb"
        "NEonij47Tszr2pqHx9kkFVYcrIr5KUzJvORKEzAFvXZS8aDx+/hTwfpmjQv0ra+fvfnme222VKcQVPaXTr7+25vnR6Cn0THa"
        "mpJUoxC8CZS0BIGqCvB0Fx0609dAePnhBH4ZF18UL5uvVSmqksAlzBpYIcFdT4U4KFzgEU9Spt5UuK8pRBCj2Xrcl0/G4VPK"
        "gHBjHIRZAdT45wdGozGn3mHx5e+lfGruiClFdf7c3RghXxsq+As6Nr3ojwfxINutZ8PEAIPjD42hHWqP2sP/6mYtxHH/vZly"
        "mpWndxPcW+0CvoEHiqGkMdIHGncGOtOqAMBHvkUaePvkWGGL8SUQIzBYIw6o8lpFa5FaLOWYtqWmozLz29rax52H2XPSs35a"
        "6AmSn0slNWAAmOiqewc61Gjv2WpVuROyx//KRf4gZJSwP8m4iQ4VhrJMS8ffV1QavwF2tlOHTVsbkQcATPUOTIyyfXZnO3To"
        "H+Ef5om2FKYnfPth9F2FHTw6ZLg6hBaj6Dp8OnmiOIvAZ0E2S9sRpmsaV8Ll1OccT7EziTQyln480AzIs0R+h6BfVD3ByV9Z"
        "n2P57DG1qb0KMpdQIm/E/8KG9uhvXhyvn795/beTb159+5zQkHyRIX9gu5bbiyXLe6Bw4sB7SmpuQrU09vWZjDRL6Hrez4aM"
        "MJZKAytoIIjq8/fPpzQz686UaWU3Tq8ZofAQaSQlPSGRWjQ9lHivVr2P814FvAKHwmMtYetUmHjBurtxJtEipbSny0CzQUUZ"
        "gjcRBFtDlLtN8cdoH7rfPv88lmjijRDh1RzH8XjoICkc0FN1Ayo4D14XSWQR81hoQK2qAhcCeaW6EFYqv3fP14940R+B95wv"
        "+xWu8zLkVVrHHQezT+ZkwniCQ6pNfjxToBvuEzVlHeBYS/cATH7V/ObvT+Tf7g2b+czkz/gC3S/adX1Ry+5wVtY/fPY8sqWi"
        "3VWtxwI4nUpXSXy4nuLnInDUXwNCyE1p32g5dN0A0pe8/eLYlNPe3rG7R4YLOE1DGTOUdEoQ3lD2EtMomECJPaqghwPaVfgq"
        "QrsXsMxv2iVIy2qYKJaImMgtfILYEUr96MvJI11azvDW/ioDqhbE4JIKFmq9eN3djobu8/NQqvW2iU6tHGqZ5Iq2eydgmTMD"
        "sd449IoyHA2ECRg5pYYvzX4FY5JEF+brqG/110F2kTvgLSu8smGpD8cZCLMANqhpdWhhY2JbDdmoeDyHip+BqP3WVz4Cm8lY"
        "gDExMXMATIsz5GMf64oUlpodk5QAzQmmfK/j4NdwwPOiz+VuyaYpY2ShWrSKbmqIwD0al4A8ZHrzGFwYBc3IZt7359OUZgwV"
        "oKEZYyz3VYBwo3Ooezct9sIxwUAIv5tQ40KBEzYfRnFY7kr74FKKQsAqfmb7dIw2YacT9xisJhmd2/wVD3RQ4CnIOWnJ2WZO"
        "qjIk/xGQHStRGizaluzA9CyFIYp1Z3uX1IOGG1Veu8/e8PWMyjwwpWYOLhbZeQKophcBjmFT3D+u50TdH5z6Hj3uSXKQJwp2"
        "s4m5vVjjUVBc1RUwUzhFlEBcSGTRUN1IFtZSgoPafTp5KvF4IAkYzfEuZH1N+YvKmbCQBpXdWR4o7ueo9il65Ugx9zn+bI+d"
        "Yao5a/Ko1ruvaNWml0IkY2FKYFkA0UklEeCrLxHeis9XLeE6qQsjM3/CmseSh2H5MkcwsBSCprK5Im4g0IATg9wCWvntAZZI"
        "PAlYiHnhQacXN+6TXbtyers+Y4cQGQGv8ESIMzmlzXqhIXP7kcqD4Sfpoe0bIbRQozkWIvyamfVbt97cIqC23bYJUeZBnU97"
        "4bYpMoobURJF2C+S5FRL2RkOVhpdQRfSdBLNXJtSl5SrwT+iX0x3lznqbFQ6vjpQKkiGCplaBQWOBt3L/HDBm41+kwP9Hphn"
        "TCooIXRJt5rl+WqYZ6MvuNTAZXMN7Cs9s2CMvGNqWniuPkzWoCS/itcaZYJG7QiZRTjweKqDrqK9O8JfDOUTDPI38cIymjll"
        "rOQLEY8oEvIb29jji+Fgik/QBCstR4YGHJv6DIazc/DmMAx8izMtglGB5kQ57Nwd6ltPjNMR1Bk+E8fRYqh1s2o85TPSAZUr"
        "W0Z0aCRCz1xH7k+QRTmzBcNCWGxw8c+ZwwQdycRmcgkFmT3BD0R1nKIjhY+kihrHYXoqc4+rG8oVt04TaKrlmBFMSOMnjzLB"
        "iRepPhUpxB0MQQ2fi0D6ctvxTuyTFNvuegTfEfkIqMROqLcTHJz8AcopTR8cZYQHMUFtgVByf6jlbQL2ZHz0GOgIJkr6rm3R"
        "82yirOrDnu/DqVM23qWvEW6A2BqCiXp1fk5vHPvbMxF0XFQ8tKBDZ1PBxLXqCxUqY+IolomhEgzOOXFJeR5HwgfO8bSbazXF"
        "zXZIraMClCrPMEfuEGIOIJeTRDUy6sscW3AoxWEcInS2SfEx45lV9EjgmFU6SLWW/J+b1XJzL1USVqzgOh9R2g+BHHXdj1mR"
        "5bQgovFi0beI25xcf5Si6x1wNRGhCuChFXfRvl6kwV5ANguftIIEEgg5AQZCk91CBoO7U9NQlJGebgObu7/IUFtg2pzeU5l8"
        "8Y1iUNZpwyEZRYEH3T3HbLFRkN6QKW3IYBu4lHq2I+Ioryn4iceq9B9rzriiKKAQ0qMe59F4M137zFcCIu1csmjPFYrfqZq3"
        "cPKSpY5WurPMlS1/Dv+GskXSaJa5D2jBOAWd9W/BMIGR3pIe3qx9IQ3uirR5v61OM45Czz33l2tmKsJoSs6Gh3xPkHx2zsAR"
        "5FbHMfvgGbawF+pH4XnrfjZ8HLwrESZMBUiq4uejP72AxCKpH8X5Rm6dnDtTikDgbmzn8KEcqQVcvjDOrqV1RFBy9cIe8xkQ"
        "Eb3igZuxAGtD5SuYeWdhqnfARM1LTyUMPTG8Hyh1D0zhWDcyaiwP3VhNnQbhNH+3bTI13sem3hAU9ACz90XrdJhm/dF4zk/r"
        "i6o1dTYNH0jD4Gado+/m8C6EcGKdnR2EscYOyfvxr+81iI9eBWh1lMn4zwlv7rAqLgN6h+Z67WYAfJ7kauqYzJN+njtBSQo1"
        "mv40Tz67rOfE6xUQJI4pIYvqw/BedPusaauVrIKZ4sTD5qnkGwpzWjfFCp66WZdc8K27psnVqQHCs4INHEQVTflnKFgCc/aV"
        "jaBznBWrEjdE1A136THEoaP7ZOzswUhvCPf4fnj0ehAZxAYJlJ2VkjCESvSru0UkxAoP+9EJaNDtmdOs8GDVX1xxwapRpoaV"
        "O2ajulVeNV765NeUQGW3EDC8aV9Cyjxkvy2ePnnyJCkoC7cij99YxTdwgA6LUVrjHj3rP4HCxNd84LqYBpNhTJ/upNxFWy3v"
        "SaLC0LO6nRyZpJjubckMz2GDXGdcC8sc4Ywafade4jvKoeJiEThZBt09d/Tm9fNnL59/a7uiJyOMED3mByjsYJ93w+h01BU5"
        "WZHILFnqEIcP1qHpdTZyWIvX1RlQExWjZz6znR7FJYvZVcg6yYIUGL/xnJMUyajGFnmOKme2o2xxa6rUqI2O8HZfd51TVloS"
        "XyXME4fMwUsByjsLMvFSKO0Uu/9TR/GlvRBp53QJ/oF7d6i813v0cjhL6awQyIoqlvyYJfsfZcX/4cmTMoZbqXrhaadok+Sc"
        "oeAnUYTsqHNCZEpcrIAWt5J5auqwtVjebgLcmbhJ2VPCXkPcsH3YsERzug4+tguk/bquqwh1lq42bt/4Pzy6Icp0MnqSeIVP"
        "P1IlEyF4HmGpLKSPB8SycK6KARtEfmiZLW21vLsbyjzLKVGcBBIideRtwc84nIgKxU43/hR2cLuLxvNWJpbqNlwEffFIN5ny"
        "4cW6dwbNYPs05Jq3d2nXPK4rHv79TOSL9CFD8qhyJqTdxA1ZRtWy9Y2zSLiFPcj/ZtU9siNjopSf6K5k8VnxyGCm+G33tP26"
        "xujsLi3ndnh+ynVkmNsuMyOuuDY8x4YvE/1QNTAqcJ7GJrcTE3G06DWEXUYJE6bU9/T5fEoefnVgS3R+CynPu2wLZO19zS2P"
        "yrjOmBweNH5TW51GdE2GY4KnaKz4wNnycsIcoyQZkmd0MKNmStgU5qUTEvN97SweIzUV3iZSxr2UyYR86BX92zfMCu2sTTc6"
        "y3pxETCsJmIBOZ4Y1FiEUpGZbiLwgNkFrpgWfquNmMrtaB1qiZ0F3/G4U8giiWmEM9iQCw/C7PYrU2FEvlUmFxG9/9i3ptH7"
        "IEbc3z5rj2bVieP35m6hKeMnhKJM05aZSyFTJVTEZI0J41eYGnTZXCA5v9tXHMZqfHquDXAJkYRc5eLoj3yZ6AqzUCi0huRl"
        "oP/gUS7zOLla+Kn8vdHtc0I1HRAlawPMSeEN+QeP/n0bIhvHmWpW5Ck5MJggcJ3fGxIo9kb0LAh4fCwcF/SXv4CRJqXQRZVz"
        "Mp7G8FUcMncr6aXfogw46cc+Bho3PYR2k8EhHxbnIqCY0lw0OTRM3fY3q/oNLip0iUmT8Dd7zdDNQuusREgvd+C4PDb92oGk"
        "b6q+yRD2BYJRnafCsKvDIvOBaVCL/XT6aowmGnjSfYjbUPyS4cECeLZIIt3yN1TQV3gh/FAZTJHGYAx9AGwoL7ruPjm4FQOW"
        "hr46Pc0tuIW7AvbxCqqLWPoL+7ljv7jtGe4XhaZ1jMgZtQzL8cpk1mH5K4UrWW3sVkCpdfauH+XyrTSQKq4dE4c1JJEBrRx7"
        "/INTaXDquXQchoYRNcWg20yNecgjEdJsicx50b1euUWKsFz2/AqIAGmfufpMFaLLLaoe7Pi96JBhKeomgYveHh/PSDuBJ1CT"
        "YDCFmzFyjyX6AoMT6AQKuAVIJ3FWOuIVySUdgxW5yx6xOCZg5MhEuzEtBRcCNOSe8onl28UqYhl0aBAO84OHyBh71lxSbqZV"
        "RGB/OcHl/uOPLHZQZ/zTTvi8PY7OoSiIjpoMPsSW/uHAJEFbuc4r36gVui3a4eEwcaORjAF9dkbkZIQboEQXN/VxCOb4GbN2"
        "DL4YxwDIBtz3jdxjueMWfqbDllS2PLGT7i7oDWtEYq5H+39/EmJbEXXajnWmQ02FcHbnoAnyFPFYybMwoIjgzPGu4bzCKuFp"
        "df8Mo+CBKA+ebVyqGVY2KMZuTRQ0MKfsOLnAWpIexDSH+ipYlwYNaim7Kz7yNVeEpGLJnoONjBwuKyyECNUp5iJ4zL9UPHdt"
        "I5dAiUiuvHkjBYmgGrUnlUVyKyrqG5W+gWIaUKKPfEOnNYTZmPgt2EPMP+grtlcIKsTPozdh2oyvQzEitvvFLOu8L1OSb7LJ"
        "mfg38jQt2VEFjgq4IS6A3it6QSqOQWP4+Cv8CTRx9yfjUUIRDPq2nZ51+xzj6U5IjbO4pRA5hyCUzqvwNkEdHUtSGadHYJqU"
        "5PIfqxAPKC1ms61MDPAIJxYMmXHXBOfe3YgLLkJvw8mAWxuuoB4H8IQvPIjpHXl/G3UncrO5jet/nyapGe7XEkdYygzm2OFk"
        "f8OCP1bqEGsadqRi8MgeXzDKkfy2RS/K6OTyVFoM2HZXyaFcd+EzXB/EF5NFV/ne4wDF4l7qjWRAVTvAqWJpnsrx7GfBxolU"
        "Uf4Snd1BC5mHG06CEjUA/5Vx1W0pMdP7oyNZCWlWA1tbqM8NYxt4uo7tWY6LyNhJ8Au6xI5Dp9z+flMt33EFlBBN4ex71iul"
        "ahYUeEfaYQQe+7JrwtgRaM9kQREx8xANsBRfPgx/Wt7eQS5/anosR9pdEddfpjGjusvTYg93DpYQ20QJnuFShKzKx1qnfCBD"
        "WgMdpRP4k+KJ0+JJqOySOOzjgCxfnITArNfTIGfiIeFM+0XwOCeBDUkwvOXXjBeEBjPVc5SPPqxt3dWsWNd9HIof6Ht09EDJ"
        "/yiGoF9Md7kTB//lvfs7HTE9eI5McZprH/JiaM9F571b9u3Ua6/34Sqif0pfJGjoDz7DuzKgOYRQKFi57uVzaGtOdAMCji8o"
        "cIJdVIzXqUIRQt+xXuCvRId9mNtrqc7xYT0bIujZEosgjeoaI+n8teNoKUO2O/d6TD3c8Kkbe+a12seuC5B2PrRM2BxaCm72"
        "qBonu2UJ44DAEGbtD5z8aVXTEQWli7A2iPqO65AmOJDU+Z39cP8KSfnMkA6FrMW9cHsOtA+OYwLuRrkUPv2hb6vr/rIDYsWe"
        "ot8YJCeeiWY9SaxAQMuhm1TZgRUx+2F0S7lW7Wq3eZzs7PJZRJG/XPnHsYVMbQ/lS8osZdVlpGxDKXi/B1R0IUag6RTu4HIi"
        "qKBWm6jUIuRrRUrJ5h6wrIG61h+qszXXqt1JBQdMHmWFth/FcQRJQ+g8KhncBNLNc3CDaoTTBu4bXO/kIkJnjM21X6o6g6fI"
        "r6EHMFyYwH48zjtDEM3nwXo+tgGNGy6MIYHkCW1PhSsjukHgT7IF7jJqNk+XaNkxmbXVGjMSMVUWUQ0D9UqWidEVhVmKx5XJ"
        "sdWAac0UV07sYCiT4TRepVmkmMqrfAaoUU3lqnkMY8b4CZmsiyDZC6N400A2iz7LxxYLiTt0D25SMaGNQ7jlj/rg28kF1Cx+"
        "TRcQOZwzruZ7nczbWPd3SobBadg1NSWYTrIlnf6Qf3kuCfPT7aptKSqjXZ1mgd8HbT+9puGHMlNDLIRGvD/V5q03i3ESReEC"
        "oRnWyTS8FgCmPAe0nykWpn85Hj5VJIaQLCPc2WV6bsTju1P0LtubXaJzU3UCc6RONhthc+lf7w0xUAjX4Wu3i9rATxGLzk8Q"
        "wpQZcK8cTnwRaLJnpPDiBjRTuzrmXPkzja9tcyFkBbV+kLoedga82t2jHLfsPp+aH4+zYld5UWjkqPWs4B2KaJJ6eW88kyII"
        "cVQzFzZErXk/igOGsmo7rBUjLMIAD6T76Zmzt7B2EvSIzS+ITD44VLhLEVVBViuHvEkFGShaGxQ99oDDPtC64Ni78jkTT2En"
        "JbeK8qzcQ3MGTAo/FOqDZCaW4vNfLKiIYdBGuYw7O1KvuvcM8eHxnOR86+T57zH3RcgkTsFqapseZC70WGqYiO99zJVmiVpQ"
        "2bNivSI7HXY85MDDiaksLI4gDJlZGqCXd9lrBzBVpHd/zz7Bm/8vcYBjViD5cKCLewN+mx2hTmb95bzleECgy/zmdD+hCvuf"
        "7rre7O5HfIBLz3savYOQkjxg/06N13CbG3LQJfg/xAOYWduJJxCc3wNOs6n1lAkVANQLijLpQDT1KJkgh+9jaFoqkAkKjxxN"
        "2NjKZCQAwJKQ/CDN+44hiLqMSMZnuaedlsFxyEIBVerc4Hv/Y+xi9E3kXTWDEm7Q27cj8FiksevxuDCur3LLAWqg/sMtBBLV"
        "bzSKBsEl3nviTxsPd6XZWHfWR0ZAf+8W0UnE4tXAYfeJ28aegZ+Vp3cvIro4tEwXRp/3WELDazcgeKNPf5iW/MmQyiDnOBVr"
        "CFmphiCCV/qFGJLvU1Ndom35CJ8qOvYQ+5NdKs3Cbx2UtkqZF8QQ0XMZfAZ+8OEgqYR/57TI6vibHazSXxH06QGds9S1lxrB"
        "cIGGovxkrKSFEmqtW+yMR3aM/3XIz0/FZz4MZTlgkOxsPz3MvgjmhFSD4aMF5BhD9tuaQIIYAEXyIsyPIwidNnPSin/suAve"
        "gvv8d9tofDCrl/x7cT7I9ljAZhvlSQSZzFhRg2Qovyuec/lFCbLDyQAFRXVch4wSN5r1yp79TmCM5khgMC+JyMS19CgA6ZE9"
        "haH0FDAPCra7060s96rec2T4I8hnMrrW0WobU6Nsj5Oxc9MiMPLcd7nhEtvem4/GHZ1f8IUI9W+IlKCnBkd3Qm7n3rK/8QnS"
        "Yw6DuV5RNVZI/O1RcfH2I3wMEx24EVpdOZl57c74RwEzRDq5u4/IEJDsCmqsh+pqXI4evlNydmAkbfow01xRwzwgZJ9WaxoF"
        "wJrDZJDp2ugInOTbjcg+TKkOG274THJhLGmh2xo9qwtKnyxn/EYEtnJd5Dnu+flYEZABvzqA19wQ0TwkGF8PyKVkGc0/5hNt"
        "+ndsb/MqQHUViKNgVoXH4Of6tPihO3unV4QoOwWUxuoZ0ObWpOsI8tX3HDfy67WDMpDEe+ZG8WJVIXGCRKG8XQ/vhQRaVKnG"
        "QPl7RoRoWIaaciEfKRbICpc7BBTNVoUsfM6rwgFDbfd3v6MnJdMq3t56VTGsOdqsevqFSU1mGXouZa9xKErsBZ1z0FlI9GUw"
        "OiJexoKP5PWJaeFzKOIMpRqpUZayXOwOVg10AgmP6gXQfXGmFwKkscYdltWWraBGYVIcdZhYha1K1Tz/eb0kkUq5Z7A83tX1"
        "NS1RXGqh+q1sLp2whe1a/pGWtrLKjQZkpSi+q667KgOhCbxMyh5QtMiXj/CZZTxDtIynSewSRR3yagR6syFc4m+LEX1Ubz2k"
        "sNCsH9W7BY/L4I7agqX0VHkwC0eU00elgHwBVBNZPyisz4bLBiGuZ2bv75OS0SG7JXIz6FYQGZ5TIUQtk7t9YhniILKabC7W"
        "mqEYS4251N+aCa/uRblObJ9JJSXl9d05Ih9HA0xbMWPpFlP0nuhxzhjqbrOWUCbj0N2iIenhRJYqpn0a0kc+Tzmt9/sYxKNc"
        "S92tLpJg46z+jqfHEW4SfvzCF0G0wbAkrEFtfHGcOLCGoAwDHH3hPv4lhz8P68BW9RURAeKNZBcjcLrbqcKLo1E+LBesOBh5"
        "7kU/AuNIQNwFFXbjBgCBNJSY4qkU77MgNJXimANJuWBjLnlCQXYSzkQesAAZ3rLJ6OE8VAK66LMtd01a4Haj2JSHVsXxKb5w"
        "nJYOop0g9ZOJpUMBWqA+KswDTj+bf8hqOTjFQzlR80AJNOeJDGecD0noOc1GuaIaa2OxgoPsNcnHEQ9qmKzIAe2jrJkk+JgF"
        "yfMfcW2Wfip92wwmlopLOhAiqXQfKe+E95gpClU7cYcBWzEUn8f8DbJvJINrgNMMMsBR11TMo9oWTalFpQLfYIFXtC3Bejq2"
        "bHBRsMQwwmFGf2CntblVMcjhIaR1xD4dEA6DNHRRJXYePNKFp6hKAcvXOZE9nxdzNA+B/XXJ9JegHJ4CYlHIRQJAS8YWKAZF"
        "pZVBGhdCqB1G2vSSjWa+q9zGm71P3fX0hXrOP7vDVvHkSCvt4TXixCs3iHZklBkfgV4PBcfqvEwSpPF5RmSgt40mPGZTffwY"
        "b0SjHOiv7B2qqdhTEDQfckktIi/JG2Y2xdoK4lpdTLVp5I1PZzFVbg0tlx2mW/q67nSf3wf6XcO7IHiFs8RNg5Wbh2IuykAe"
        "laVUewtF9aTwdE0THipPewRsCioEblBcFSaMQ5CkHCM+OA1QdE2D+/PFQiJVYZa+rc9BQmyGp8LahX1xB4T5d5qBcbORAVct"
        "mhLKW5kfUcz8IuZHc9qR88U7bPpLjHE7uxNkztTz5+7r+t1kUIEpTpd8Dita2SMbf6YflQYbWQ7x4GZ8m3hEeMHqXglrRTFt"
        "5uID8P1Ow8mFRNFISTRk6qeIYHDwRWV26/NSRR3dP1Gy2Myp3FMiZEoeCg/vgha3VH+lu5MJ472tGNPR49YFQgxwyOHTgEGs"
        "+Rb0ILpZPOuugL+1nAYqFXFPIJeL2LQo+tbdBRYJIIeLCJCe7fGZYdGLHFHIg7+W7EQjlxFZDg4uC2iIJEEqgFie3CN/olUn"
        "dR5aRfCr1kmzCAtLHHeEd4vWQzipjTEaPTqA/SZ3Hik53K7wgEb2bu4dpiwUEXQZBknDKxq3ly7rvajL9jVE1oSzo+jZ+LUe"
        "hZsOOAJaDnheuZwM8XlWH6QY4tFfvj4qHitFkLWgx0XUfjk0UZQ9byFXpHw8B8mEujruLVMG3NT5hk5sYjktheSvOjxOwPF6"
        "fb3f01bKw5lQW0AtCRE083wt8BqLjR8U1giaWXxO1s/SD40BDnFZ0PCxKCFJPxUJw2rJRIv/5KKcCkPv4TnhN+UX9tZ4W7IY"
        "c24ciFzIMCXmExlZJpHloouCBhETgzQKPnrJ054Ur0CK3TZ9bdKwMeOPN5RdEEvKIaivxAfu/i0tL+vztZA6tpAtjmXK72c4"
        "Ll3fJ58cDNdR2eyJx/h9hd2PjzhZjhGYdDggLAn7MYg0ymzdZCPYD2UcUImolhvZsiJn3k9vxWk5yJFXDCQYBHOKtmgOmL0d"
        "J6BHDl6v+BCk2YgDAWdHvn+MfU7oENJh36QMdt6ZG2huI/P9Xx+E/hcG0vkzJKA+oBDHJOig7wXtF/+lj7Ww/uOpNmbxf0tQ"
        "PaEy/pVi7bsCLe4H+2LGm9IDttck01hgxXeZY7qgwp/IdzHl+JwI4dof4mNvfwfILnLq6MoaVIsBNErPQQohEzi/sFhB69Xj"
        "hngxqqVUjYhVTwT+GepifxQeFL7Hs0G4FOuCCfAvVDnNQf7o6n1koVvUnKj5oPQkLc8zFcIib0mz8OLtHq1W7/lIbTeL4bmw"
        "qlBQDhSQHuiikJ5lDZE3/J0WAfdqitRGdDo3Kw7cq0KtjGHYZ98fOYW8LZEfJqoy6/mu7x5qYNL3421OtBxv25o0c7Dho9dG"
        "+9W19ZpuzvRwyLsg+A3wxsEo+iHTY9HTJllW4CZELXUU4p6XCi+ztQtmF2Cdi4MidXypDZG6v7Y4t7ZUJUlHoggbEA/4REw/"
        "vI7HkFNUEUIDw6g4l5ZImq1Cwrnwv47nU6idA+My3qf1RdMyGiA4SeDlb5qr2q16S/oKP66y+1Fp3IkFmHvgWwzwKOrYmCZe"
        "QwISGWc4aHMzrPsLZ1q9lu8ZGeYxpzu/QnKMqcAEsAp2pJxLNjoWWTq/WdJ5cgtgg1EgxDZs0tY94EGXgzQdNr/gIVS5D/BO"
        "0sPQoVUeAJL3UXptb7xljso4IpJrP4cpEagGHI1ujiLIhj0So29P/TG7LoyF1a92PTyUswuekOoMHga2T9AggvoIpzrBnBjf"
        "Q2gdBAABeYoPxrW7IXmCW9PN+ZvqFBS7lLHA/fgz3CApH9pVBH37EfPncx6qNVLMZmtFRFlo9ALOHxnTo3zPxdIpsUs4I5y1"
        "/765qNyIT+C9vU/HmHMpJ9+dDQ4LmjYQSoc0DSjNMKWGuVADrEC7fzPfzGYdBUCoW0kVB/MAHwTwTHLHkfIz6Bv++yIKYc9W"
        "Eg1yHfl7skryW3eTeZUBlFJuB3qNMd0Jpx1Pvf1yuFO3Ut0Baenid2t2xMDzue6u+/Agwpxk2zCME4YSd4Ybvhb25EfJHThb"
        "NljgC9ooLbbWbYIstpbWslagaLaDBkUryxQxju41MsKuCXNplwNzEGGLLKTMyuR0XviEKyCYwHEZxtY+g4K4t057xuECW+Ky"
        "owowN1BR6EPx/Zs3P/0OStSGxlkN88SC+31wllOrBHhEWidSzt1MrAnDi6QmWN2JymK5sQ/a21EX3PycSulM2XO3LBQCsr/E"
        "0kDIaHUKRy2B+lC4/+X1DwWCNQsGfS4kGRHaFfxlXzz76QXyZH2kdpu1ZCMCDQ+UCoJ6viqciGsMa0hB9WD3tq9XXbU4q/r1"
        "N1SXmmIUrh2mY2Tsric7Rcu2FxJpz+BOxiAd5+WMixyBJhAymSjLE9gSJc8TOix1TscMIH0BJc3rxbdfK05GrDdLZ8tyCVhU"
        "CXOA2w59elw4l17ByFUY3UVBldKLkW93HGqn9oTZg2LSoZoGDbU3fjocRqyuy5hGvgOnECVQD0TGkPWOfH9gK3uM6rJecxgX"
        "0LIX3TggfvHYc2dj08qaQFAjGNAQueHpot772eTZAe1VJiDY22Q6Aj1/A29eEEcvAGNxKntfVl3KQSOwkj/n0skaKS2NlJqe"
        "dU0DZSkFFR94/BXMxrQo7rK0zoNEzpvin/4RcpNsQtvx/8KtmYrob++4vjkLWnnF5ni3FnGx7o951ep+0Se6S0us0uW/hG4c"
        "brwAEuXYKvHQI6FSBoQ71mUrd+nmFnt1A+nMuRIyqmFYZm6q6IvUbNHK2scmaFUgShvCaP4eKh63YbZVSYzeqdchXE8R+g3X"
        "z07V34Ard5ZGKcfjD34LGIQvp41LpdglFjinOk1tIZQ3EiIi+Wt1ZvwGfz6awl5R9ZN6sb1q1nCdErxxn+ZqWmiVAhxA7IDd"
        "97M4JccPQ59MAnt3XWMJ58/ubNLpZq5ybkOgNaqDmRYjTuq+5rRe1Eyd1ptTWw9JbzXebJKzcVU5PPqUnUcYzKYFaN4ZROe9"
        "QD6ia9zpEL7HNx2KikzWodRE2lf3qX4mh5l9SNnN1Ot4NmFdjbaMH33xnVtxzUXTAhC8Pm8+jAs4vX+q3KmyCUA/SriOGbHd"
        "9bnojVK/1fvkBQZFzW8+u6P23R/ygs3ch+SUzynYWOictpkY03wmBtaM7OB3wDG47fNIMfAqk8xZ9GJcOU3ze2if0VdyI6b6"
        "OA2NVB9lP4LZ9JM7Cpreaf+EcVTqdmIAtdrsCQgfMH+skVPgZ47SxG/zQjYRoycL6zdwX4V5/PgPFS4Llv4WgyHtx6CBwGP1"
        "dzVZeSshvDtT70P2bBxcl085nIzurUR+JjsDRyveMMQzM0vvn3StOEkPnCgENdiMxTZrr2td317S0/ToBFTeB5l9lffRItW3"
        "8jEMWXr6I8Sqhq92/xl2DtOJF9eaqK6uK2dwj3S9V6IIxOz6CjNorwPGHHRLXN5TNEb8BkQbbozILcqtwRMb5mmiXte136E2"
        "mR9otFJxDKHLLODw/n3watCla6fjN/0aicB46dTX37qVN8qNTgcez5urB7xwhfdve2E8ZpvEFbLozm4A5nQI1MTPoZUfoIW2"
        "dofMSD5pHI1J6lHJPQxTcdksdnl8ey/4O8fRQO3ei/6yu80/HqJxkn8pq2QWDIamJ4mOuhNU1ob66vuYeABCrnDqATlbSOSz"
        "70UcAmEOUg7PuOx7AtySh7H5DE0AXw7FVdUD95RX3cEfZret9n/JaxIXmD7BS16722T3L3D3iGr59/17JLl0g4uijkaZPmRG"
        "z/VE/l0W2dFVhO+RX+n1TavKqQXTsIXjn2Ieu/uWZuSPXSk8f1uMyJEbm7ZxsQKciKGFl1tS63oFRYE//5wPf/dPI8N5haZ4"
        "Csa1Rac/djlzRklc40A+a+i45ZNPHbfKWiCaDzQMbq7Jo+DBncuqX4vCxSAJdmlD5XQ4HIL1zu6TyRDFUA66AdYJwzSiBC1+"
        "DGq0slt/K/8H7HbPOvSPzF1UBUFrTzsVL3T9e4nWjCFP2mRpfjDc8QqN0fA1QzbXNg2LjG5cC7GKkO5My/hmVABj+0+ZZWyT"
        "8XTjesUxc3/kferCukSu2VFksklV0bCeN480U9BQHBOPBNnKBvsdPHz7sE07djlo1V6+z+tT4lRsIByLs8GoOsy/DwEtyjzu"
        "taZio6WzR7sukF/g/Id3PSSfYKfpktPGWdC6o+BJjaK1yT0gWI+cchXxaSJDkxbLf2okH8orguBWCVqk01cW7i9QGsopSV9P"
        "M9ePE2nLkhk8IuArYOE45gc1xBEAN3NSZObwornoJXOiftC8dUpPDGRGP3Nj7KycMnsAOCp7JkbwH8KGYwsudYRC1Avf60lG"
        "pXbtHuZCDkPHXQo1z86kPyoUG5XmWaQgiYljuEUhdVns3sXePYOVoK/eOlGe/fEIT9pgiZlDR37GZUFyJwJz6DPGHEOHE7hd"
        "rCiLvRgSl8PC0pk5mahTPm5llNUFeOU67ZvGY081Qm5EWC3BlU+yiURVyO8Hr1/ES68PA0uReN+BaI8QxttCyewEiUH9Jtgd"
        "1pvD7Yx/Ta4C/nRZh6QAtYxUSO2uaJ2UvOZ8SkYTgmU7Rg/8BiI/kq6grSnsFsair7KZhB6Z7tbCgXsB2VwUdd3HYgTxS+l1"
        "08wV1R17+PAoIDD2DhiH8X3gZJ7CZwE81P3F+lRIWVQnoQxOfHx5VGLsqIjwj6x5ZOfBQiCHCzdv23mbGKnAHlYfcuICY1Rx"
        "3ZLIoGyWZLzAH4MkFlR3XpAKbvGfu91UnDqLs10wMw9vjfCmfl197BP0htKTzGIn9/OWxT66p3DrNmZpw3YQUTrHnLpBQ7Os"
        "FUEYG5qImDtBUzlBErJkHqOb1DxpZ3OHiq+mymvCr6vqN2RKN2x2478aKhO+jRfLkw6I+u+mfewr27llFpbVDKXiLR+ffq31"
        "73zeg0n95FVjfGnR2ZE17yP6V3nk3oRQLbD4IeUA4uhReb8q7wvPp42Qs63cRQvfUxrz2Of9W5A6ReemBlmmlsiWjmCwSkUU"
        "/B3V6T25g3Jnkq9o0REAC1KN+tCPpnTRwozBTOoRddM94Cxt3+QjQOkA+MJB2WgYLU5JFohVjy3jSuHdfKNW/EWGEe0GL+a2"
        "vkQCw/FpQ40c0VX/HAePd2qY4sPDET8/iYx62GVAGDUetxlgvvIQZuLz3yboO7ETMJiFfk9XeIOVGvr5DA8QFl2gpSCZWA6D"
        "9xEKoYEWWfCEwpG436eIT0TxEvhwsJ/pknbWQyxHuIYEfQYIhdjiliOHD48N8rvj7boJvgoeEkMWuMVDEog0Bj0kuy7se9bO"
        "4Pq32RsagMIqC8fw90NNaHe2LBrFFlR9xPS9TgjkMGuPnmEWc/Yp3wZzTyJ8RNflXloA37N/0ocIffVVg7nh0tOce+f3KaQ3"
        "O8UDIFKceczf407Julr142ApXN+skdrskr1kBbi/maoLIUWI3AnBTETqoD07GwLE8Pj0AUslnMlravhCmPEI5AwQ3HFglqOq"
        "1vAhXBWJ9eMkS1qt4GGYPuvgkgsXK8FMERtq+vpwusDiwYZIDJfAYzKcCpyA1Ef32VXlvQaT6K4Qqyf0fvpheyqhOTSw44cp"
        "04uMIwQJAJm+H6+8yuysEf4M6olWX/t1nDxl9BBWdFI6iVotWypbHJVlnwbkG9ITNQS9DBRFXbcIzEW0+FgoA4JsMfPV0Jpz"
        "Tr8RfBZWYBDdm80TrXTS5Dbrkr1EeAyMQgjVLdmeQnURvAZewnq5WdFWA7jbDvByY2WWPHbWys2ogMwKAg4HdKNbCvBfReIc"
        "k7riZWRxPtCy2V95r5/q388MrRK+im+F/6LoSt8JP2fe6C+ZKon/4mzEe60iZ9TJobeDQcT15mbbTPMdUxOHLSWlesio764G"
        "bh4NHYW5/QfART4eJKgyZaCpcPeZ+iJj7TRH4lJ8mP2plNeGnKZ0iHFTLOh7lv6LALrWWqZol2b9p+Z5mXEl5aGM5ESKmmVN"
        "Bm9IbY6wrGBd0E3KwqDOYDlguqiJAG0p4GqdnlTtAr162YMAt8dVYwuGuUbcPn1i+qn6oJt/W62PJ3EdDfN+Jq2o1uPi6UCn"
        "OdHsIDpQIPyiu2avckZD3Pc9IcHKFTSDMhIRoRd4wqy9uYUW655SE5kqE5n00KDFlb/MueF2ltcvFbpaCkRWvfy68Aob4BCQ"
        "17DxVaOrXm8uODuEWJWTHymOPPZK5gpJqy+60td3XtWUCWyp9YIYSHOcLFmeyWusVu/gE4Mm7ZMRoB+voVOj7dkINOYYCYDk"
        "zq57N5yEQBRt4NSwksgfkPA3HSoJZNvJl3V31i2L94Ck6Vo4/Dm5/reQEwCnNAoMn6ywrGcRfbR3rMPo2gMcezWiXukhpF88"
        "9enwqWFvVF4j8pjw5XCAhuouHAqkK+ZG61SDgfgrf/xBYdu9fm/9MIfqglPSnk6e7KeNHVH+Pt9J2fwH2l2tb4Ygl7vZ10L6"
        "rmndrpLPhgFFLVX9G8Va6An+NA3KevqKn4CCafAVkHOiX4GETV/hG4ijp2n1rePiyyfA4vtkx3IMuuKsnmUb3owj0sropKF3"
        "svtd3RYZSTSagySbT4v5TVvdrC+7lTP6F3PmW/39k6fjYl5/uG6QdZ0CnLy6ATPng1HkOKeHqDf4RpED+I9vAVqSTYXeDZOt"
        "kdef3QmkeiaRK1EmVgDnu16nnZlH+EB84DVVFcunSqvXTDXIBqm7mcOcgqlN71lqaC9Tp2bFnI+Vz33NesYQoiFr+ufOJsqC"
        "klQn1xvITMNrAoYuLXUBwsc/reczGTEeP/Y4ROPHz6nP+PSOx0W3xYYXuLxang05DXB0EbeEkWmsjt30TJDeL3kFdufnwRZz"
        "SxEO3gsSqrcqzYY8ywh7pmxlf3gR6ArY6knn9cTffBxkAVFJBjSRwXvRGYWaBx7dU8nTwZ4O7i7tQd8liYGbGgvDbFpgg3lm"
        "4+IaxWYo/la3i+uuadd+JM+WVEPgHONqiIGs+zVDWbpuyXmQfP76+hVXAjWDlLsTwF5YbkYbv6+v/Wrp+f7ran0Ziwy5Gao+"
        "usv+GXwHdXH7e+ge+y5+7qrPv40ug7ek36qEMCFKP8a17J4inMc2ReS1m6IVQ0b4cQah4Wrvp4UTxl3r1ijQ86MV7L5q9fEl"
        "uP06/rv6QMlytCH+s1mDZi2Yjyuq+g27uneqBworHhgh3gbfB2V8ROoIfMar8/MR2zryfQ+CC54SiM8fjnEqvnxA7nf3kb8t"
        "vijcOI3k3cVjZ1JYHr96WX2UN6ycgrsY4TvdQ08mf3ASjC64xdpduaXxu+IL+/zaXephFoSehpV9s8nBwSymAAsWt1mZTIP+"
        "DTvbnZ8Dv/9+6wHOYyk92Wnjc89M/pK887CYX67X1yeckMQ/b+aFedAfr4biZkyr6kU75aHdpM6CmiP0PktIjqNPzLuaROf9"
        "gzr0SzO95Kp/+xHqUKPUtCO8zXB/Uh0PNvEI71KAIvo1SJt8WkwKjBXL+R2mAEQYZZvMrQhP1NDAew0r9LvaZOdEfNcbG7NZ"
        "p6wk0IIbuNgF5l8ErgP1FuWdDcdlLgf+HRbNVryc3OBxiRc1Oksl1O0mlmzoPWNouCvPmU4H203Q8KsaaqIkiQT+KJY0AqJo"
        "KXd+3m9M3wD9sg2idj9Sz+ag2fjgRSdZ1oHKAHzly55TzpCc3MeNJPf+7F05GaKU9TpNElJ8EFH03SbS3ocQgbm0qgiRx8xN"
        "sV7ms038LsomnAzM1vbMl13m+770l4f1Z3sOzK79GU6EiVgTWTWiodU4xE/EXYLZS46etDEWTN9BpE97rxmAzWYNGQkRa2gT"
        "IomA7ZJoKdmvU6qGJhFVtBT6bixtY4kzTBfzHhsYHvCeEQIzTdRHJ48yipBrCcKdk+JVy4WepPnTGiO9jB6nd5OFQlGkkRCO"
        "UbIaMqwKAwVYUCFLpC01GWrTviQw28FwUi/dwRm9KVcjOrnJJ6oYUz0Z2N2uzlkOYqJ6NiKzE/gjPsZHF97GGl5smWv9YC76"
        "THAGfHbn2jNcol4/0QqY9/eUnraQrx4YzUkVhubb2Fo+EAvf32B9xnz70NmJFrYc2m5A0Ac9Bl+x9yQg9jAHy41K0JnlhcFx"
        "oLKQlUH0E816v8zDVJM4wWhESkY9GBqQBVVixxFja3suPhBLdYEWuQ/fN+1jxlgKJi0BfGEXDyfcCxNO50uIdtUhCopp4M8T"
        "2AgjGOdxwZ+kujtX3TWp+7z/Rm5lkUq4wTT+kMJfquJ3wdEzVyRj9AXwZhsZUzsK4QSmnsl2zv2H0/DdX53EqUs+JFd9BIl4"
        "Wi+dOAveojFm3S5ESIqvm0mX+6zp/wjsrIoq+TyGuj3oz3ErwLXenl2Ca7/EEDnWmPMls4nR5dlPL9DgBBt3teaVetIAuWzr"
        "5g0q54CJfll98Ycvx8XR98/wv99fVWdH+NufIRJ76f+p/34GFqz74d3i/PkHZ1idreUf166n9DeEcs/OqnffPf3yyZNx8efn"
        "33zz7M8nr79xr7p0RxW22MtfriNkQ379EXl0+rpa0v8f4ZtAJNP/07/d5zqtBFxiwJ+7at7Xb1bV+Xlz5jrdQ2unN81y8ZoS"
        "Kb9bUclp9/Rrji2Zn/RN/Jy+y7V29Ob182cvT9787afn3Iv1qq6uXooJhU9Fv9E/j66X6DGAVm7W5/8LzKT2rFrzd6677+sP"
        "xBWDf5x++fub5y3JY/j725r+dn2slvTMo4K+HgbiLys3SkekLYztuTNOuCXcq6u2a5uzavm/e6x7rrRVpxs+clL1/wN4MiW+"
    ),
    "dsn_inspect.html": (
        "eNrNfdt220iS4Lu/Is1xD4EyCZHUxRJ18birXNM1Xa6aU/Zs7YxKa4EkKKIFAmwA1KVkntOP+7y73zC/sO/7Kf0lG7dMZAKg"
        "LFfP7Nm6iGQiMzIyMjJuGZk4eT7LpuX9KlKLcpmcPTvBD5WE6dVpJ0o7WBCFM/hYRmWoposwL6LytLMu5/3Dji5Ow2V02rmJ"
        "o9tVlpcdNc3SMkqh2m08Kxens+gmnkZ9+tFTcRqXcZj0i2mYRKfDGpBplmQ5PFtEy8gClMRXi1LNwvy6Vj+P5lGeR7lVN836"
        "phQqJ3F6rfIoOe3EUKWjFvDwtDMLy3Dcw+dlXCbR2axI+8V9OgX0ilU0LbP8ZIefPDt53u8/U+rDIlJJfBNVNVQ2V7pdTxVR"
        "fhPN1ORelVCTfuUqLosomauwVCcE/V9++v5sRwAEAPTHNFLzOIl6Ks0A+iQP8zgqxtBOxUskZoE9fJwmMQwt+FOh5nm25A5g"
        "+NJLD8eeAsRC3cblAsBihTK7jlK1CosSsIpTREXNs3ypvDQi1FKqBhgdq+toVWJBERVFnKXvYXDhVYRoL7Oi7GE7ghoXqgwn"
        "KkuTe7+nwnSmikV2WygEeI+PksjqexneA+HDmQoLFTLtrvJ41sMqAE6Qhv6oRE3XeZHBYFZROovTK3Wbx2VUUC/SGtmvRKrD"
        "7K+XUR5PgXhRMhsDRjg5KYJdwdjy7LanEBYgDgBUuEKgfcRbsPSwBVSj6kDLVRL5jEaOA8qQQvArhr/xEsFSR4H6AL/4e6G8"
        "ssBpT4FAUxgn0PljCN+jVTZdIIKTKC9UGoU5TO6tr8I8Ukx6Gkc0C4SrlnGeA55AXD0Py2iZ5fdjRL3itiQKb4AewCjTbHWP"
        "ZEB0kZFh+GoWF9fBs34f+LUo75FvlRrnWVaqB/imVL8/uRqrv5vvzw/mh8fws1jn83AaYdl8bhX0R1h0NA/nEyydZPksyqEo"
        "2o0OIioqo7sSCoZ7w3C0dyzQl2sYEZQeHLwaHO5jtXkYp1jv6DAcTXaxJJxOIyram+8dRPtVUb/I5lgeRfMBICMgs2vsZRQO"
        "9wdY9TbMUyiYHR2OBgeEWogdRvt7h3sz/J1Gt/R8/ophA5nTK0IKRjicjrDsCuYdC2bRKBrpjopFOMug7UANV3dqBP/nVxNv"
        "eKBGe2pvoHbUwe+AOfjpbvPp4e98Q4UszcZqHdOXYgXk7KnO+2/VO/jZga9fhyD2ZnFoCv4pKn+fA6EKXfIuSpOsp77O0iJL"
        "QmAwA8lgG6GM6A8cOkrhEAoHUbgfHVmFNKH7R9FgYhXuIm0Hk6PDYQ3uHtJ0vgf/WLX3oTA83N+fv7IKD7DmdO/wyO7sFfLA"
        "3qu9wwnC3cD//7CMcMTeiqRy0bdF/Jhkui88avOr4djBdDgYvnI5drg7PBrt1pl2eDicj1ymHe2Pot2ZxbTRq2gyl4m32fYw"
        "OjoKJzbb7s8ODl+FDtseTo52ea24bAvd7u1ZQIlxd2ez6eGexbjz/cne3m7FuPP5weRgUjHucLR7NApdxt2d7I6Gexbj7s6G"
        "4XBWddXOugOF/+4Ae2rWrDFONRKLcXYPJzORDRbjTIBeezXG2d2b7cKs1yEj68wPXw1fDWusMx0c7s2nNdaZ770aTQ5qrHO0"
        "F+5ODhnyRhjoK/WgJtldv4h/Bb0wVjy7MMl3x/QcTZYelM7uoeIyzK9iIDeIjEk4vb7Ks3UKlLwJcw8Zyj9WxH+6BNnCZzAC"
        "YJ7hXA/3Vnc7w2BvXxX3oEGX/XXcU33QI0nU5xJc2NFVBhr0O1i2P2WTrIR1W4RpQeNB4t5Gk+u47CPEfrEE3l4Q/mGKBlAc"
        "FtGMez5fxLNZlF5A7yDGV0kIoj9FBfWcjQBoICiuyxLVZZyu1iXqngRUg8E5ThfQcWlGaH5vSNvOQBYFKE2kAXD6Mk7uNSXw"
        "CVCCkY1/BWYbBEejaInNoX1QZitouMqKGFX2WBVlPL2+PwZdvyJq/9qP01l0N1Ygj8wo5kkEkwSDvUr7oM2XYNrgwonyY3UV"
        "QrshcOwxGCmzGVFmOEAmhj/MAPYEstRYxnce2inA5D3BWySArw4PfwcaPIcJWIGqTXFaEcAsz1Z9sLFKFAiTZJ17h6s7fKa5"
        "CEi6HNPyAYkbzzSr0GNhjQAMMzBDHp4+sCMcF9HyNkLbdawOUIslUQl1+ijPacD9QTAYIo1vFwCFyiOc+9s8XDldFzdXOG0J"
        "EhhZw324DJNEz6rub38wqPE6yTo9IlA5wFfTCJq1VnoSh/D0obE0T1AKMR8DT8Cq6lfFUZLEqyIutgxzGafsHBAfEXZUIzcj"
        "HurhlinJApbuW6esufA1k5hpz0ELr2HSDh3+OwCIPCY2RsfA7zHP6iMTVKbjBRmMGrW+Q1FSKH5VOVjlMUgplDVNRFmxVHg6"
        "kMxDKWXLzeWygZDwSVq3jo+Gq3XuhpFexcRehvnjFG3t/ufWwCuHtmg40frGL0T22lQcHVWLRrNXsN9cRzDChnRwZrk/MvR7"
        "hEm2T+gMjRAlHEmYLqTvNrT3B79r4zh71s/RSO/DeivBY82IeJ0L3U+zaXZN+N9Zyh3/RbptlYLQRo1GDQHY6F07XenVYxig"
        "xQKtwxQYg6X9ap0UkRoWMPdz9ODBOUSJmgLQtjHO59Yge+7DCL2dx3oH80hQ/4fr6H6eg6dbCAIPoG7gT4bys7xHFbXLXAqV"
        "l0Bx1FCa4UiPQOmdFi5DYB0uEhNBhesyk0mfhvmsFZu66HhM7ricwZLEnkiBSL98u+MzhWEWEiFP1500GKzVR+YdK2bhSpmi"
        "NYh2zBfqOkJoMXJtKXtV7rXrNmpM6mObTqEaZXilVZWtRFob/I1LvDYfB66tAa1IQhHz7HyFLhcuDQ6SfLWDuCbZFfGUxUT7"
        "I4eHDm8WxEVIo4rzDlZimgqExdCmJvx7UJN0DHSrdWCBWtUgDQ+3Us9qlYSTyBHhkySbXrfpDg0bZ1kjagEiy/McA4anq7Ao"
        "boHCF72Wh+s8uaiE6HCAQtI18/Tq+LI5PGyzDZus8TTrZbdtcON5Nl0XKGTWJQqxMXlVjNtW8SuaWe3tN23QxxS51XmA0ain"
        "Lf8/rcH4nt/3JeQJtjhqsf4kKm8jNL8s05qns09G+vCgVWDYOIB5ML3+EiF06AjUGkPtPW6CSp+kD+oig3WAgz2PB35qbQzu"
        "WW1xBOBglWaBSDvbxJMiWyhyyTb2a7DLluGwCPkmLBaTDOUnyQ8owfheEc8ibLdepuoqxhjeesUrQ83jvCiVB4RSgAFohRQV"
        "3O5o4AM6qlyEJcdTMWaJ4cFoxVHJItASKrwHPrVnDEOsx/QXnNsllIGVw53D3AH5QJZ5g54aznNfTZNwufJ2Ufr01O7w5raH"
        "c0buEc0uiyVn9kGJ56W20nFgW33CVzRhvwUvzcEHesZr3oGQ4+E/BThaKU+HnUerKCy9Ua/Wi+8oaQPYtk8s/Vw9D7SkfpqC"
        "JEeL5A1qrTEw1irKp2ERNZUJ6JJ9XC7t7oL0fhMm68jtfTRqV/dUAtjEIXxKOH6MnLpOwhwLinaFRiEFe4GOtEhvtci/wLm0"
        "xlGsJ0+m4X9gt0S+wHHHpXvX9mDdOjLWR0A7An22vNgQDFC451lSNKVxXfD2kwjDkGzMuhxtW7+kgzftvZlIkoNim7vz6mla"
        "+zHtTJNtY7Y/aK5FdvzBvnGMdEIcZ8hG9VB7lmYt/R3vFDXtHYcWWo+MqkUqDQNc7dC8gBm4jsb10XGxQd9tGt7FOGdz8Jnr"
        "vqCEFgfo1bpWiQ0AjQ4DgGM9bocjU4BV/5Sh6iVaO+VT5BIptsGDCCvvawg6QZ+mcRRdRW3Rr4YlQYy5Z6SamaABW5PD0Rb/"
        "3u4F1mH6G2INtL62u/QCPLZNUtux323h9FEdNSNSPiP12iQsqa1JotcbWZqVoWIv4MpZbYiMo99iMfOCfdRaZgk2BWmDYquS"
        "cSJRYKUaOu2ZpcL7qHbIKwlXBRC+iMD2pbiAPKpUUG0BtrIbWEVPCjMPPzcqEtjEMWOFBG6bmO2hT0ttkLwyE/Gq5rt83qve"
        "ypblIriO7uumr+McQBVgKox7WKPJcQTyfGZLwoP/GNws2Tw6HHxhiJewysdJWICKWcTJjHGsITTQ6AsFnhhu3hIP1LCYVF8E"
        "q4WuT1njGzHvoTVlKPzT+x9/AImUgL5GE1/dhvdA24hzLEjTglZIw5wyE7AsydKrqNAJFhiNx0yJbM57aqt1gXtF3JptTRXO"
        "S05KWKJrqvf/EfZYpyogNph1Mcmj8BrwugcU8kh55EtEDJrXLdYqFjnmxhBE7XoYJezjZpOkd+jsip6aQhnmmGBmgp7ygOGi"
        "pzNfgwRhGzIudIYJpdGIvwJzhEj28MufigwlfY0DczCeHFvA+HjARsEUurS1g95io71A60c/y2PyjIFBQYAgSP2U1Ak5PiRD"
        "aj+bjK5LRNNpohqek2F8wX7JVo8YOThO6vLAjiQjDSZZVrcuh9vWRTPa1R50/xsDbTZqQZmvG7tKFNKmWrTLWpK/X99isZ/L"
        "jkr5aEy2Ul6Wag1gyLZM1PsOreoG2s7iMMmuKsMAWM/bPyCPGPhm6oGqurlVfTUCDez/lihwzRb6TPhqywa1ux2AfrlCq9nZ"
        "7R/t/07owWMaj/X+Z42IlL+CRhk4d5glUGvHEdCmB1z5sxVbHWq1LU0Xu9vjxhWPbl8nDvc+uvSkQ9kKl19IrRCE39bQ46Hh"
        "hv8/Io9NvO0I14g3LPKIm1XCzGoahJRD96if2Go32zBmmHCyJQhn13skVtcYnhuqGxkxnuMKjcQssLaY5mAyLDAXRo2CUaGi"
        "sIj6oOiMaJSsmLZG+lFbwzzIo2V2oztszh5m1viPxVdm0TTLpT9SF+UCAFwtjjnSK4aq7EmpQXBQNHavqrE9cApnGyLwGMnN"
        "W1z2YyugrPdkG7Ar6myFL1We3AdJ1XmWlcQZ7hLaa7hy2zdxnhJn5X3mBFbRIktmboejw7qhpll4ezBWb3/bYYbRK9B1OtcM"
        "U5Ft41l8sCM7WJwz8x7pxbppB3yENrKGW0VknxiN3HCzllgqsNwUhCCLqf7wURxIYxkcJFfH3W+hKatkwqaqapJBevWMEicd"
        "yW3DuRimj30jWDcS33F3Y4cjq9NqX60KA+7eLI7rm7eaNttik8MjeyRN91qyR/Dfw5YYk3zTbq7lig+qvrVb7LjBAws94iKb"
        "zw6dhw2D18LhFQlFdCRCtVqgmc3dYb70Le0aoOcAsmdBlj8Y3WiAYyY3mfqwiItyPSnYtt48O9mR1N+THcnaR2tKcvgx7xgk"
        "RXHaAXJ3MD34ZBbf6DKadiqFckw24tT9zmjUkSAJf8ck/99nd6cdNDlGYEDsdRR6Sn02lwE4WH+ds5Mcw4lQDZrc018Nb2DB"
        "g+851DnoUDDqtOP4v52dM8kvPFkBAdTstPPulToK9hevgv2kP+qP3g1fAVcH+3+AwmSkRhoM8mpHQmGnHUyS6TgRNMLHjZSd"
        "dkgMduqBNV2+cwa0vblijMxZgRNaJmfWkQEuQNruAHHpCwW0hMp6nXVUPLN+IXCo1ajOWVBbH2NaDkPCBbIuOspOs4hnCUK2"
        "G8yy0gDjB1VjMjQ7Z2lW6sT8aKarVt1zAqJhmjLl/sFgvIrKjvhM7PGddr6JCwFFLjKrYet8gJxl4EMFnbNvCQg/O9nhnjQr"
        "R/nZs2cnKFMIDTJQBQlaIiRQGBf5Kqjg2p5mmN4veSmaxxfDM73hX2aMBZ+mgA6HUmd19s94fAIWIyMMFW/DcrpwzjvEpTno"
        "0KNjCsHJzkoA4AJDnNZ50gfPX2NlGJs3e2A0VKVz9l7OiJzs0BNTj+UZbaxTRQ20oyyVedpZlOVqvLMDii4YwL/DMcipwQ6y"
        "6s5f//LvwNwr8NlpixemLEyKSBNDM6uLEg26c/aBJ8TCyMFHpwEwUtzGRQvWyzDYgkDLBAEp/7yO82hmEVHmGmlYI57mAgQK"
        "zG1jRmXgODFmwH4RHsnoKCoH8OonKeJIhXW4pU7/BtsryZnrSFfFerKMYfkIS1XsWyevNRjOg6p4ti8FoAAAYpiAsY+rtbUt"
        "7nNXlMDc3rPVfQkaRPWXdGIIJ/1khx4grimqDFh44WrVLZibwSsgAxAj27wrjfpHDhBVYBFQAOvyIzXyfAGKx2tQaYFht4Z1"
        "Y9rareKiWEfSDgh0Ciygm0sXHuJUnXApMWDGIadb3vqGPwS+iKLCDyjGxEuRD9JcZVFhHWQKXHKf7KCcOHv2zFqJQAB3FdpU"
        "ZdOtoqv1iLechcf5u67mViRxZLE/N0mzvm71cxhj+h0dTUK8OQUAjO/bKAcKWRPucA78CDmRQHQDfN+CAu1gW89aEMQqwFzO"
        "2IHhgYEpKMP92o/J+BJlE/25c/bXv/zPZiWYZK5CR6A6Z3wSqqpqj+YL0SLXpXgUL9xz6JwN2tE6o3Ne4Mils78ZmX92Dqg9"
        "ipOcZduKll2pT3gCA4LIUrRL9zdj+hN6rrPPkI3rPI4iMy84MWuUOwNJSGnFr/6z4DN+DsLVBrTLplrVK2UXjs6+N6f/QDuP"
        "as9tC0dvmnfcOoQG7XDjYLh3GoIYr0Su084HKkJ7hyp/HgYdBHRh/GAfTDSi5ukglyAeXYg/SvTdPtlYO6kY0inFJ/VZGXNV"
        "SZPsDouZTXc0J8E1MMiKwUkBXKg40LorXl65Q6jmryOG9KNMzfutohr5e5PLhK8qUUni8ayuAujLyQ6bjs9OdNQQhdQsBqXT"
        "qQzKZQQaFB5wnY5VqY/PjeW4az8hWxfRW+w6xpFV5Tq6r1lEVGIT6I9YsNU8M9FBCyg6ky4MXux42BY3o1rBnexoUE3lR+ET"
        "Z9BsZHzeepHqX2C+SMiy8xQDy+qhCG9gbZDsAtmEP87ew1/X2mqFxvFNB9gsQpPTgJOfZ9/QZwPk425Ze68G9hS9PDDWkYvS"
        "DApjWDfR2ddJVkRbTEVtu2ABciPybjHN45U2bkFOrJHxnoHIA/vhhTpVXjzz1emZmmVTEEJpiWbb2yTCr7+//26Gj4+l+vsP"
        "P/705h/ffvzj23+Fhl30aMUM2yH7qqsr/vTjzx+//+7ddx+g2i7G5OWfnR0WP7M8vE1JMpE8PRaTBs8GyHYnG555VJQC8ufv"
        "fvgGoL57DyAPwEHRQAEkbWiimEAjFSUaEhjkHZ5TAj9rERZsEy7XYFeAwQ7zeC9Q3735rx/fv/3pu7cI9tDgiVBReGpMoTFC"
        "GwtSpPqUjp3iXiwWAsESB+6bd//8PQEeGXQBLss9AUyn0tkjlOPdLJopWGOEM/eLAUEgB4BA2Y7OkzYIjaeJo8QdY3DHpayH"
        "+8kSCAJdgOfzRQ/w7QDQQQpjictAMP/9m28+fvjxj29/wBn+4AA0EQyCPDbdJll2XQC9riNFTtvJdTw7C1CF51F5prrqJbBm"
        "12u6GtrHoCjhNr9C1X0JP6j47O23//L+rYOwuUQhj+bgBMzERSNEvTy6gS/gcUd3K/QVSSlSQCGEIS7I2MPG1AVS+g1PgEIR"
        "zDNS9IgatEYRLs9bj7ftcdpSumIhvC8wF9c67B+WPYRon/lfr3BFz96U6OMgKgSEwwRmPzwEBsPFaO4EGMtdAWyXAqFyhLuM"
        "kyTWRUg3cXAwo0IN99U9tC703KcYBxyxN5aq797/qA4PBkPUyxG7S9Q7gkWWUyBK0sjcNEBcxqvUpBuH0E9+hVkHa4yxa54p"
        "Q4rYEItOMZdOc9mH7969/fjDm3dvYdJ2/ptXfiqLT0hd+gOG6XL1CZGhP1SOlPkUlp+Qlp9wsQGPzD4JMT8JIT+BeIthwmZQ"
        "DarzJBf+i08fvbDqggBnKRRDx7rA/7gTH9vIfQ3IfY/YnYf9Xy+8N+WnD8UnvMfh0zdY/cWOrg3U+/jNmw88kl9mD3ubPvwd"
        "yV/v/IO6oG9j/i0fvwS/zF76r/3X3r99On/Zlyqv6QOLK/j/+vbNTyz2dg/2g9G++goma29AIhB49Kuv1FtiB4cB9G0XE44A"
        "lxRoKlDLu7zjDaOjIBhGwyHy3zOA7YCBx8MRPd/1iVsQrsUwRQkL+OpY0dq5hWbQZ5JQ1sZ8nbIFTx2+KzxiKd5riOewMEAf"
        "ATRm89NTWLuMbtcHXMt1nsqjs1MFOKq//3v5faIQW/Vafn6FW7UDNbZrD0e16rum+pgQPN6KAw+oi+31vAa4BAR7vVXCM7Ms"
        "YFKQG4IVXnAjdXi7V8bwA40piItv6fibtyx8wAUaVohgxF9qc9GGZ5UyY/jKEMDxUrTOJUc/2P0HvULCF6RcWPo80SiptKCi"
        "G1TehStz/wtOMAs0EFworK5j3MXr0hx1lecwR6/GUjnNOy4WeCR6seBljXCpT5JieiaVZ3sYeMcNycbbRUaMwjed0P0mICq4"
        "a0G8QE0dFghWd1/EqM5DPkngB+rnLMdxR3d0C8tYPZSYNfHq6GB0uDc6OAr2We7aZfvDUY8wxX0lFMgw8tFgdNAfjvqD3Q+D"
        "o/Ho1Xh/+G/dHunadHr/EXe+D/cCqD25LyOnhw3rKQIoQp5vnSmRLELSnuJfQpFjBsNindilhyciF7gvjKaKWaVhinArmoh+"
        "YR1F5hHNs2iheShaDLSDu/iw7bfERJ4wELMwMzBKSWBh3GAGLvH8Y7RPeLL6Z+qBuu+R3ulx1z2Zto0BAT3qRQBfPeJ+MIUV"
        "wqWkFRT+HtdlDJCbHVx4LT6Xp58+KVmWUvAc12U2+RNYmSAb0FWP07Vca2IBPye8e0ySC+zkR2oTwLzgPREyfrOEuddq6ePa"
        "w86rknU6i8A6imb1XnmEcxghEhBNE486N5dm0HjmPj8u9OOe8rDNA0/rWA2YtPSFqMtFRGBM19n4BqAlb1xxavcIj5/LQKpB"
        "Ao0CavLy5bEpktpnNHt9tA6+MmoGJB88OqFHL9WoeuIDJMS3ArRREZ6u/Yw0nwf8tWpHreYBjVmXbgwjvHyZohgH2eZzRqIW"
        "kkyEOe6sOUz7rJUP5sQDOAOu0C6zMkygvZAFxqgRpK+E1HHFlVwd+EIe1XlBVgHINUTKmDWsNJgrsHVlUthPqn4IgM+DsznG"
        "4Pa6kqpGXkt7Mwk8P0R+QrsFnt3SUjxUjzXPDh8+ky0llFRkQKPnAO5VOJuBRcUGJuYrdPS1ZB004MXyXpIROKMFBJYfwsT7"
        "BOI75e2Eq5i3loIg8LlBYbsj3MZcVcbttNVIaamnoPKmlFcT4A4vUi7IIwqUeDu/aHx+2QETCsbbNc4r9vqmhOYIJaB08B/n"
        "XpexqapB92ha/kuOTCJtgB0HuDCqjvMM95+SgLRR8TNQw+viPloX1bupluUxZiy8ZMS1yn+G0kOGeyplWAR+6epn3ChEtw78"
        "cvLKHzYaMdxDL1xpzd4veY8orzEy2uNcyB4piTFVxFRpeFzmYMJh5K2nc4N74nKD+JnPQYSHZHmofu0fvbOrdhTv2DZrgMqp"
        "dA5uxXyPW1Me6PICPc5TnAdahS+8Lu1adf1AtlphJWKU6Zgf4k6T9QjTAuQJd73loeyU2k+fP69m8tjqmQNOUBNjWl/zUVio"
        "LqhiTVgu72lz23ugGDkYF13cFu+CRBZIHO3wAzr0iyIIKBfSmjFUEKJ5gFqP3U9b88p64NmEdYbV/IqfiyQGbiYF0fa4wbyE"
        "F0N+0D1/8/4HkNCnKrwNzb2AnoYn/b9U3R3npkAwWKgrvO6QgWo+raBaQ+pBd4RMNPvm98zfFZEaE21NWG2ebRZoTrT9VGc/"
        "NCZQhqCfV7gHeDMhTafHOQu8rkh0VlMtjyqJzAWURCQajRkH5YB+iJuS/GydhmuQiHn8azTrosBv1JCIQ9cyQHiknlHi1cJx"
        "4hq+da8Vfa8JCpJB+rcwIzoQP+tzwJw3RcFqikuQKVld6QH0jZNIgkxMM5D0k3D2UaImOs6Dxwy+4hAYXaxZLMKVNuc52KP9"
        "/t0RG7q+3mYV9YHHBTBwxQeRmWEFkbeUIwpij8hMc8RfX1tENEh1QcxWkaqxkppa4Lx+rd6TJyfQgCiVfNJkp3lw766UpM/v"
        "ymjpWcHOBtU9a20AfhiR9dzlor07yzJBAY42CQlyzksD2eHT70AkMEPhGtMEtLlnRA7tnQHbi677Gg/J5FHqwTOzTyySwJJQ"
        "YpGBACb0MFYFEApmO2AUa52Cbn97A9h/HxewpqLc63J+QhcdSZRtXnRD1xXI8qFfoArp85toHq4TYWZtaV3T8q1jE8DMLO2K"
        "a9K1luKF9cNCvaUJWWU7/w0Djb8E52/6/xb2fx30jz72L17Wf7/YYWOLpa9ed59RBIarbD9em0sl3ndE5SxVW4R8JUGgI509"
        "Ar1I+ohf5ziYijq79WgrJuBYRDy/Bz1UdaDdgo2aUlKRXi8Pz5oipRIo9iKr1gQOCkXKM1vsNtkAmHp6DVzgmam3u6k6QY7y"
        "j9ttCJaHvcZ1rZ8xJery2VKhlMt4qj3IGcYAuk4eWrdnCTl4WP3461/+vYv7A3xRRxfTr7o9giNXEEGhfOshB+T3GBTqsZQZ"
        "O7IdWFUUAwLYnNtq48JSBFRQsXyShTMjvfE5rUnULc/tgmCGgdfX6lL9n/9t2rx4EM9WRIjTQHvW8GW2BhvCA3NvQvMWgraf"
        "9NTA3ygTSxqLXID5Zygw/2giIiTRfI0BmLqU+9dYPzQtLzWydeC071kB1fIaqdi1/Q9mE4qnoPqQ9IZptpQ9AY6Rs1QK8Zan"
        "RHJhMFcJZDDYwSFnWqg/r6N1NEPABBArwTLsGdh0uVmImotuHcZsouNqo7zqMktRQHNKSaB+pEuBFxQj540gTLjFyHqEERwO"
        "i6lJhLvLcjNzIeFwfUswh+b3FQaPMrNRlaG5k8AnQh6wrk75DkgV5igii8BaIK7up9VAvkT0Z/QVzi90PIad3UoviU8Ea/cn"
        "nmbPMotEMfMcnFZ6jgos55gLfEtI8gMuFwcbYxL0zdehDwRp1Ti2sMW05h0MXYOq5Lq0oyA3WGPEEk0IqG873xSCWkU5Wjho"
        "+1WRKEWgAzwX6Z2nmAQhHUPxhW/uj8CbnaliEqVXMNVniiLIHB3BB+eDC/gPyvcHGJagusUinhtJK7GHEkz2Aiqe6lbHWuUg"
        "czTWCndQDhgwrHPPq/DDrqGvHSjU9fAXhrt9AJR9G4PV7Q19XMQDWsWbamJBelFW6KllBMNvz3toSOCNNfHV5FVWKi7f6M9N"
        "e9sgCrh8n+G17GJyGXsWWkq4odaWi3Fj0GWElnYiLy65xYsHu/6mpxcvrCjUqdXz4mZzaZvVyOSeb4eaoBOhQAM9KT+u1cNM"
        "q211Ye6E0FLg+ZUTN/KDJfjh3i1R+vLFA5h7q43CTzLbNjv4Fdz0zaUfYP64B7qmSxNr53V1haNhHinlqPCkSyYC63Pb/oqX"
        "UU6sWH6Hm3KgLjxNix7z0XEVApL1rzkHwwtkgJqmBA5PnpCcdrz9r2mNWuJHb5E3Y8DbjGDd4uUp28O07EV7yLMG7aW8lf+M"
        "xczZZ422MAuMAh4J2XAQxS4ifwO3mboUcCu6yE9b4iMoy/HYTvE5a6aaOZkyy5xJ6VTWqY5aAzeYWkGBrns90El7KUBJauiz"
        "QGb8QY9QQBHICsYc9Ui/9XI5xx8XjcApV0EQF2aGxDvBkBpyktUcfSzzTChu+SGV927R9IzZwUIVi/1601bHXrTRa9zjNxv6"
        "5l0BaSZxsHuwXGjGPpMwa7lDwPFRLvNiLFrN0i6z18kJQ7fnkLIUT6tMGt6elmQaFKMEhaOvWDegrJ8fcCJBKFLrcpJ0zWNt"
        "ivHQTmmqzcMYrNn8Dx/e4Sb1pc6BxLRHSnZ0Uo/w8kRJwnTOcViP8WAg5QE6+UlOYnwB0mC6qOWkfctJO2gruXll9oOzltwq"
        "IGVHH/n4mugEah9TCmh/U1JBuoX6hyz9yHQED3GK1pTfOXupfspuTQ6Um4roZKLSuSjonygIH3TA6aTMMaeN/kgBnXiCn/qT"
        "q3OiqpxlNPmR/Pvs0swEWJj5/XvKmgTvqrsYNRW9nrhKBuJGUMVFPWUFb8etYOlR19eRXRMG5qDuWD1sTGB3DKaUDu6iid/j"
        "2af9JTnWagEQu6GlS/QFn+ARYmqch4Pq8eaTvw2eDOExgG6IQVMMQ9inEnAoMdGk5KALOPfdErzr12apQM3KDsVmz+2dPLTq"
        "sDBOWXZhK9/GHx7aerRlDLQiWsfAT1rGQF1JdlttFBLdAAUGYunrsDBGSh7hRohg9bBpKHdEjWzmIAjs6JCD7ZskgUlEkeJf"
        "1MNIcVpEefn7CORj5DHzEcwAE8LADiX8pzURdEYs66Psp5muglUYUaoUiNkGZqlbhX7tWJdtnFaulUDxQtzFrLHBhLAVnUKo"
        "HVcEnjHIkP2bGgUZD8YatAMD0rY7awHCQXoHINLGrVPXFHVdQSEYGbKJWm9YiehoZ5KEJblVuADBukqCr6XMM3yKcfXqChm8"
        "GWPjhDBlnf84p+HZKggYmPb7NZFQuLym23JgzrrxrKsV8Js8D++DuKBPz6rLOSe+ScM51yB7CnjNVJR6F8dt2QTvdXDo86kA"
        "biyjWpVWREs34syEqg3ZSGZbnzbbYVU29lZpQ7llP7l1fAjlwoTQf4owz6VQl4jX5ZhDApixQolwmL8Kjcl9p5cEpchqOi00"
        "y7Ws5WZ0jJFzrOjsfaAumQ0veZOVNjtv4mxdgKLDkFR+rzzi1yy1LBh6oYcOCBAgOuNkJ304nC+sblspcjPQaZ2NzAKlLBxc"
        "tVX2yNZpquYfValmu1bpTxVQXGselP7F5/llAD4PimtxAOrPfFucNgbB841dNCLkMK0aGvlhLNtkRGAnxFept81mKxeocvki"
        "ra/1xblTDML6jRSUMtd2M97Ka3s35joJLSSqSlaUn26HwpxTfR694Cs4IkrPx+AHDwOsIkn8CXNKnGXhTFEqsJESKJ3p1LG4"
        "YKCcryUClF7qRdxEB0MKOckK/5lsMhVe4VF8EGxxIoYZc2keBdWKp9yrymlpcAcGTUDuPEhkgucAUHgbThcwDz0VWzKe5m4q"
        "k3YeXzjWcYzREcky4W7PpxdOpomkSKDx315P5/ZBPYpcUvSTvGxYxN26ghV14mga5Fl7PTmzjzK2Jpukrpty9NwTC4SNDwz5"
        "MjewsCDvDc0QO4fHqYCqlsQOg0f5deFXyT3wGNNUs3XpaZ/eac5HFqiL46aZocCKHO5JaKCKlmycHBwcXM1VpcEYAULmJtTA"
        "RxJUqyiL4U02XPAxSd1zrVk0kgTTvxCryfOuaSRAOkM4eEhusVaoAR4HDkWpV9HN1ERBm1MVVolStOOL1U0I8LQ6xGDpDQ1a"
        "9Ncp4UIzYPxhPYQrniZLEdl2IE47PnZtP7DKpsl6ptcQ16UEotqOkGi9p7T26ylLPE6KiRpz1/JNilicTdHjVL0RLCAGLPML"
        "R+KZKATBsDnZkYCW9HOYcSMGgwk8szJCpyEgcUUSvX0uGUuZTQRSGgDUkTsb2ybRTvyyQqAEa6uGyLtmscAoLUeEF8Bxtduv"
        "cZZbvQFtkYmkIfh1gzTG7epo1q2yAqvRGZEAWJv+YrD+y9zK9qEaMuht3MouXM+yA5wcQ1EgmntxNWqBCGXClWyWUN9durRJ"
        "E8hKGKwACULwzZJnZAdocA9PGZEjDlvwl4tVctYq6LXB4rm6SiLapUUagOsmSajWmi05n04Hxas9EY4z40GK98DsJlxMA7T4"
        "1nGzCHeGpFfdVmsp2Bq3tIRqI/S5QU3tVGkNZD7Wr44ENbuGJ2MMsTP1QbczKJ2XmbF/uxUy1+haAnqJG1eUOAmi2NITXLMK"
        "IdYls26HbPjcHqtRpiz7LFjuUJxGQJofMrbRdfTQ6fDE7s95gqQ1WoKm/7W6fA819CWcbGS9eDCVNrjonzCFxVgfh8MNQfDI"
        "OUO4CC75lYdOTOE1coWN2IYxRiyIHRpIu/xgtoE5b7lBML8xIezOi5P0bYxXD1HyEN1kiqnbYC5elvnlMRull9qzkdMLmKpX"
        "8PanLLgeO1AGCHpJnFjECSziVGEafIwp8bgrqr0oWuXGiSJbWA4Ciu9Sc48+I0Y0rj19ouGh1XalAteAFS9gRgSyLVlb6eiE"
        "nJgmAjf9UI6OpfvXwTlDtlSRcQuB/WL8U7MF9HPd0ifItUr6/Iq9VVvOaia2xogMYsMVVJFl5JsSAE7WoLG7FLrtWpJSmvv6"
        "8qpqtRklaKR/S5K9m3svSex1FLtpnHSPmz3U0vjJE0gSGsJf//K/uvparaekqxudX+8ZXIuWdHziEdKeTH1fsv34QM3r+umn"
        "6thPBScs6PXApwSwGoKEqtAMw+MVeHTouMLNHb+AeM1pB/jd4yLs0ZxBwq28K7T2GReTI2dwk98vdVSSt5j3fMcE0IARCb07"
        "++KBmmyU9+KBn0Pr797/aGSaf9mwAJpzgPfARmHqTkLdmX+a245bGOy4m0kcq0u6A1fjetlznXqXGObwxaMYi0u5nWvI0Tz+"
        "TxkNxsxX3dogGDfr5Ig1S/TMGdQ2rPGWgP+XWLfKqi2jaKurjdaRXz9M4shOY5jiQQjRKF3fCtG2be5iEhGrc7q90z6r0Lrb"
        "SwEcCZfgxkJk7lagjCMEB4Nmvegk3PIZVkxnKhZgDgGEZZRfAcnoAAXHPvGaQbrGG9/pwyEhJpZ+lzhGHdmn4hwmToHiy5HA"
        "Vjc3yyBIju24u21AlFkS6TypgrOksBs6TR0mOCp2qzkSVJ3ydPdQrHCj3J1BeaB8iYJtAhLanAlHHtNplaJk6vdF19Q3hnVT"
        "sH9QShLRMQeEbCMM5JNpc2kXqB22vthyrXpAhWcfHtCw22q5KbXVU6a7DaYdCq2uCkyNoa1RPWy0oWccVJfTK5h46cZjBKKD"
        "8TLNv7i7qnrKZXeVd8/xgowZH0QUxhzriKLDg3KFPCuMGj3a82uZaswUQZbSNp5qm3TM5oLWwCWUhUyp4a2bg3wtiNlZ4+pg"
        "rr4OLIlHmksqntJmO16u0XUNou0ZzRxToNUkJpHJBDZ2H+3ouWRvZR1JZgYyW9GBOn6amWQFm60yCZgYju5Jv75zuK6KHDrB"
        "TGI1Pqu8hR0xEfNh07XCiab/alQ6I4P4p4lKTyKbY12RGWhrxVqksTWv+fN8RaWBdYzHzd620r4eZ8/3LCF1iogQIECPQ+Kp"
        "wruS9d+zTyw8fBY+SCPGFLOHN+hOO4iDXJIo9MZaJihx32WzMGFm9LZzGBC9PrPuKSV02N7oGyXCwuQuaR1RjuXtC5xcNNMv"
        "pJAEVkACXCXiMdJWlESL5p7jYVVWKF2tQHMou210xUSZoUWrjUMW+trM9etPX+s27CYjWPNs7D6rEsDspB1W+hGbJT3ZwaYD"
        "DFxkRYQkRElVKEqSAWV0tWw+L6LyZ7wLlg5K4+U0+G4kuiFR3y3eChZ3JQXmIylk/Kal7UaF9mxT+64wnBV9cwwoP0wXx1d8"
        "3OKdo/dFoDroriq6RbRYoyLXu0XZnFKX1zne3a33k7xlBCSc4kUf95E5se+PJd9aQnV0ep2T43H+I+xBcqB1RjQbSHJPh5x3"
        "p4tvlJxJEg4EtuKk5hmg+iMmRp9UNwacGZxTBMrx0T4HCmgMHg4X1T5d00e7Pf6YzRVg5p4+fER3YcubT/B9J6YDupAFt3P1"
        "q0r48hO+coApC2s8rV7Jwt0u6F4F62YDK1KBEGcx5glIzjKiV1J46VgGPoM/UbqmPPAcVa7MfhZPEQEDtsCkZL6ExcQyfL4v"
        "ga6x1NMe6u1AfUyWGQn0ZZXTLRsiN2KH8W1Jdq4oDoxDdVYNTsmz6xFizXoSMLQiezDKZjUstWvR/m1X7p+9vb0NbneDLL/a"
        "GdEFtDdX3WOTzo5H+GuHX4EwnUhzNylTPOZ6fs73JfA9ABc9Ibp1RZPZoccAlN5ywCvhWzoQoLL3mq3zHm/9c9J4tWpZetIF"
        "HEQLASt3PUn+A42EuFRnu1e3TXWQG2AU5+d3BvcG/94JEKz7x5iOwUuk4dgBgo2uKWg4r6Q5syqylM1PAhFn5mtmdp25Yq7W"
        "qjj2FlgN71Qas+1HVCG2lSxLvgs3iQQo0pezZbSBV93XJS/jpIwajOvhEolmGXdIqwOXuV54es74hanO3Si3WV4ueBbomI+8"
        "Z1xfL8K3E8kdIxys4XvPrWgckwIXTFvSUZXL7O5yh5L/ZKdb15Im9GEcu5p9f8H7yDEvTaLM027N+C3XX/BuvLO3/Gg8DP3m"
        "+h024p5jrJ0Jivt8nHSjbxyop+Fo6+uRGx50FZ2VEwQBwbqonWxYxdNrneHkSa4SThl/ley1ORfxUAjfLiWtcSXJSpAjkXxe"
        "YiU+hA4o8DXREjT5gnwRBsRhDwHlhDoYrp1ogGvWDIjPvVbSU78b1LpmAOuP6Z6BZjU6cbCvw4yYMlatF0sIgFPXVKaWIUFd"
        "kFKk5aP1mbwpGlQ4ztRXwLMYwT9CMTUcIMtpzau8XUmVKrkSkOOyLC57HKy/xCjFpbnp65K3SWRdVtnyJCk/6NWkF5MTlmd+"
        "0ucAzH7Nru/eqFStPjz3DlqX9pzOuyWed+8iPP1JCHWdgD1LX05YYH7XyQmUf1AdsPMMcHNAH7ygl2qIXtWRr/ptNSZWjWZG"
        "kcl44xee1DxOMdoasqQhTZ4qT+p7FGZPgvC4cC+Q4UqN9NqqmGP4YpqgRHCvrHlUFrgCQ2DwGYJTtWv6qcoGwRFwZGomnjBu"
        "kSvVrVs2rzmJnY70xzjdD6JLmAfckytVisoNMYGlULwbToISvpRDQFItMD6GMc5ArISAIxLe6tVKgLMuJ6jqAqErPeuGMxz9"
        "a5ocu0f8cjm2WRmAdtjELm5Jq/NsRM12ql1IY05pzCwaPTyJDXaO/MLk9G6aGX19j2eQL3x/26K1YZt0FxkGykQ9orFTk7UC"
        "o7HDPs5OzIfDEZ3XDs6OelBNyuCpL42Rs0snSD7nfAHGiDhL70NuYTz92GE8OSTA3Ib7Sw08XLNC2zDU7rXLh1Wq+1iSoZRt"
        "ybfNrKhTmr65PX3zKvPRgmAIo7WzVs3NqlWQVfqo9v1Vmx2qz2VH+btM5zaZJHlSjBZhtbKrbFaUfDp9t3IX2HMle1mdaGcT"
        "q1INUWUo7VnTMabHIOkSvP3IGKnaIO5VhrLRgcX6Cl/VWVdr9ZFssTVlGrclVloT+UXWZ7Xg68ZDRf8tTKEXLA4OF62mJdo6"
        "ksLnqscm71ySYfHiYY6bb/RD0Q/DUlb3FZswVBT09kjwDSAo1h63EhpgNaNajAbKBJG3KjG6BWr4ZeR5GY8hqMzjVoFDGL1W"
        "epD4k3MriGLCx5XnVu0cGwvQY1mkfTqbqd+oOXD7gg98j2kvx2Jm/kpD7xZuUIdeqWryfckhrbOkWUbmVpyGty2EbzjJ/JJj"
        "x8tVro/7W0SaTpb05dC9HTo2a6BHWSj6GMbNlcm8M+jwlxahy0CpdznrgZ5NHDrpoGwVozBvotk48f68IQxb7hmUdYmOo7YJ"
        "mvqhPWxNfVQ8WwGvIoN8EJIDE3FJoukeHKgrjpJJqnaB1wuAITmJ8GKDwnED8M7LPHAszM/7vl+yHGtyyckq8B5fPXwwoL6O"
        "bcu1JlctBvMtk9PRGE1i2+nOjmZFbVSfYcdJuCEfwVrJFW9gYYVpc3E86WAMUvw3GOqiHOwqiE6jxp0gz7KpNYOl9KvM+rKe"
        "eV/WMlv+prDCneU+CLnkCgcTG2vEFXS9mk8WojHXVxP4cNhNVzcXPlgXtvvWHBmw5Fn37VoanBE3Lkxz+8Djkql9uW+/W7Ul"
        "C5tnti3m4zLNk1imMW3P7WkDN/V5+7y135FKLyA5FYVSy8HmvqgGXq2I0few9PpD/3zIBza4fwwzGelc74PEIjatB7SkBWVs"
        "cufaUaxu/G+CU6ayzqf2ZATnF37NcX3O2tBKcpcC0/ZSXvNLIPuUN0vPEZHfqcONf9ngYqKCdVtJjdmZbaqLVAVbJ4ker4J/"
        "LNrdNkqioM1/5k4Ui3QO5dye5RcbfpQT7fmOQv8i9Rwl+hRmWWIKCr3L2jGTU7oQbktG/g/vPczptPxrZ8UAUVuXCvYFk4ig"
        "kTBVpiO2sBPC8X6j5+71wNSoeQ2ScxM41qlZdMzgsgnLb6yxtmFvF1lSxbHxhbsrPNaFe0rDHt55vl7JTuyIcjeWYUIBN5x9"
        "J8ZdxrN7imxylOpdWC6CcFLgb7wufUA3z9zUN1Gds6jL8C5erpff5pyi8E18FeN123hHsZ02aFIGR2TRy0D/MY9n/DINnAgJ"
        "WiVZACb+WD0kWU8tYjQQpteFxF0BtQ1M/wSzTOb4EqCixHQnmLVhT4167JONgn2MI+6L64P7i7eyzYcXUxKgBChGmVZA5GWY"
        "3luEYqojYNzPw0NwDJbfbpDRFirBqO6F4itpvcO93ujVAHpHF5J+DPmdEPwdWoKu8OtGNo37Aw7S4yHbtmaSkcSrCk3og45U"
        "JmgZmXlLwB/5Sg2CwT7QfmjEbab6p1hfFyxivEzFFNRS/iTmhLdAYL+gI5PMBUXPqJ9DF2Tjga2ziKCgvIEE7+GrJ6CtXQ4z"
        "BcZfEGljHpxgOBkktxkxAcWb/hWwk6nW5wr0qtX2KrCez9Qw6h/4pkgLT700YD4sU4wkBSJ5DYUEfRrFCU7PDo0M5Os13kmP"
        "nZ0g3eD3y5c+w5EjVfo56MpBbecnX4Z0ZR2+zLdtPWkke9sWnBn7xpEtD6ptFY2VCTZuX9uMlNwBUYVQiC6YL2ZeHSB3fkaz"
        "q0jeWoP7CYBmoS6RI94Vl/Ty4bE6Xxb6oCm2wxaC0UV9USAMXhMMoke1v8e6rsTHx/gKDK4m12Ad1/iOZpIkhNrHC47gf/jc"
        "hc8D/D4a4A/6BX+O8M/wEP/uUsGrEZUMqGg0pLK9XSqk921cHDfZnHqV6CJvQzGiwC3IH/vkzld8pB/uw/8E09cv87Bhr1PO"
        "dmOAXoHGAtYx6fl42kND2MzQScI6OIp6FSzbLHSNg8bzg8FmKTmSxaa49J+0Nnjl8ghpRPj9JRPDWQrnhbyeo6cK07OZYOz2"
        "r//9f7x4wPHCYDeXF+67MwhSI7KHPEYXnKlLFs+XepuceBFf802JH6s7zGYJi3XOmTFY4/1/+UeMhUTJvCGeGazHIF3eW+XZ"
        "hJwBfshxLTZK8PKTxOMsb5PoDD4rogIFd3Tjyj2+hh3mZiOmjGUTsfuN8VbuxJkAeuu0lkPy8ndTk7FYEQortKy/zpYrfBfb"
        "B+jie/JAvLYz6iuknHQGDd1T6UJ47hjkV61ne/y8T64PbfnIyAfBftOYw3PnjS0VHhcSgBOFftYdAr/aFOBXfjtV/8BFUHc0"
        "HFSEdCy2rrxuHGbgEl84/uKBusQb1xjixuX0dj/rccdevyAMMzaILj2TIGKncFxcHIM7m69TyQa6G2Cmw91QhdM8k0jyKsnK"
        "4JntMhWVtrwbWN+H1ncSm2TuU38sXy+2BB3Y/Kq7qLAaz88bYY0e7phbjsvABzpKw4sLK/CscDQtMKVA7kzEyypuTYPhIw20"
        "+1dvpIdTj03YPp8VBivKOElAAel3rWK2fYRvkAl5pj3OusfrOSk9BoTGBGNMdA9+zm/JqaDyKw30aTWJosVz86o1CpqBWQAm"
        "Eb6QBUNt+KB0GgS1aAve7mGufwSanFRvt3OdTKzoM9XMWiTH8G5ouaM0Dfw8Tr27AT7G13oMBtY5ft13RMHnu6HV/INI+kob"
        "U3sERJjicarstmsfRgIofmtKpuxynqPtoLmSRMU5dtxXTnntRSKuC3/H2gpGCoIVfoBJOjzGkb2kL5t6BKvQ2RoyhEGNSudc"
        "gpdznt8B94HFBB+L+KKFEvCA9Zi1ZXt+Qw20g3LRyFt2xqDfo4G28hXtB5kTH/IGQuWBsWqlSFjvUuO4LWeW6bfvPXNeTKiK"
        "P6+j6FfM/sN7OgpmucpEC+wX1ciFRNaSshQCQaM3pZAPX91ZopsZxqICDhbw2q6FgMU2s1oYru5V7Etc2bOMIrndlG9bQuNo"
        "wHYRffqOqJELWakfR6R84dDE4aBoi3vlKw1uSILrBPr0OSLjXPVaSdNzui+IYOswgt72OjdxFeF++i0RoOqsPVcwQ2kuRG0W"
        "0wLcvraYMC1ra1PpFQzPf5dSetx9pUfAPztVfbfcjpf0lGCJhKSB+7XnN+aRT46IzQC4yG5AOlIvhgXQUbnxj2uxzpkTFDeR"
        "vcJsleilRVXZwnSMr7uxmBY76AGA1SXmA/2kav0wnS6yvAsW2jKe4Ss9esZk4ytWwUgz0qC58f/avVZSYjN4VAA3Kn7I7It4"
        "wlqeNiU2+I/44vc1ASZRAneN3X/PIYlTqG6JqHuRS6a2iB9GW8IYRVzK4Z25sTt6LDP6cs/Q2DzgjUYQT/MyspUiAK4scChe"
        "9ozcSuUlkdO1yfLW3qJJlA1aohsPhNXYEglijMtgfUqRGgiqY/paZiv+MsnKMluO1WikfWJ7S8NjGx36CWjkLxVY7qTa6GJl"
        "UXNkvXrMO/2qMn+lTuuzUIXTsAogg5ARmHcDf3A2MurgHhWMKaFuhCn7piV/43GYfszsmgPnN+5Z85aFgKuFF8JwbEYBOmuk"
        "14U1IFgfUOkeBgHfRvqbXgt4IKRrn798dNFZBDugdYfAgCC7+A6++rrDY4Y9x09StOo0Z5/HVqR947dI9fNSyzhKiabF0twZ"
        "o0DLnVc27Z8ZvZAopLc6NeiCZlMtzk8NQDVAixObk4YH1gYCrYtsDescbH1wN0vOZLbX31NIiS+FrQQX0bNGQMLmNdNRtckx"
        "IukdkZRFQmOTwRXfpJOaMr6iJ8XszME9a5/CsCbOyM1FT/2pxp8K2r2kI09/QpS/J4TfdTcvHowqwBnqGara15pvei8ekJHs"
        "ossKg019O4YdHu7wDy8eyE6uNda552SZ89Twe335JCw5B/pmPbB08c5XPOnB51P8bfOHb2Wi+ZtVkyBLsSjz7DoaM43d9WTz"
        "clGiUWrtgG1ddtM4nya8yKfALuScviY2B9LykAEJWoIJp93mY16HeOlFCyL2djf60S2ZYIRCyz6OyRKxtbTtOsuOxqlGk82m"
        "MZlN9F1n0J6HwDznE7Zl6vd58V6uby5jZ6gt78FBqPTMtsBs7na4k1GMy2j52IXNdILd+KFQWUdsnpYMHnMeeFHeJ3T9ANhn"
        "VxSulmt0snxzCbNBR6bxXVyqW1kfT+th0nI7Ie73eO5+qnOYvgoPfPmIimWYJM1D/cs1v2/FwQPWvWVhb7nnRkkWGH4QMWpJ"
        "MISjWE1+M8+P4rB6X+jxLSE2UsA4KdRljluil5WcZkuON4AwPkamD75MMaL3GNEmVD1iaLY4CFgtZEj9nsp2BEm7eZJlOW++"
        "JdnVcMDN0N/xrc2RSUQ+F7VvGOMUGAb0zs1oJdB94SYbmX0T3YVHLb9isJiIvu+DLmtUo87xoa/xsNu1JFNjLTMltrnccsEz"
        "7UJ3e3bCE18qZ8WfHmkmiTvUxEoDeqSF/UITJ61U30XcyMbbetXptmw1vnZan6n5XC5fPV/VXJBL+kh2w2SrKOebOLyy/nIO"
        "PlgJ5gjOFDU8w0APuV4MpjyWoOuxmaw/w0DKN/qI6rcI3KMuqpPGj1eqzu8+VOm4nFou702ilLqeHmVUJRO2phO2nrez0ghr"
        "x+RaDpJtSxRuV2MA/THVod2yHlNj43uPvMZq2xldfSXqDeWpW2cv6aoATT/rCH7tRWBXzReB+TiHch7+wTnBQC/uQizJ9qle"
        "nebXXpxG4VZ49DrAl6xJVjs5n4+9S7GCJ4lPVgHOxXfm/ZNd8s0ED+mJX81Ar0nEAuoZI3nuC95spM11IfQyNdOqx7gzQD8g"
        "OnjOaXvzHrLPveqMb3ip3O6quoWVvhPtxxVpC3nrLQfuQzUr0j69cErecuud6JfknumXzvoUQcbXgnO6gDwPunTw+2SnmObx"
        "qjyDb/SeAfhclMvk7Nn/Bbmih6Y="
    ),
}
# -- embedded: end


def _embed(module_path=None):
    """Rewrite this module's _EMBEDDED from the files beside it; returns the sizes written."""
    module_path = module_path or os.path.abspath(__file__)
    folder = os.path.dirname(module_path)
    lines = ["# -- embedded: begin", "_EMBEDDED = {"]
    sizes = {}
    for name in _EMBED_NAMES:
        with io.open(os.path.join(folder, name), "rb") as f:
            body = f.read()
        blob = base64.b64encode(zlib.compress(body, 9)).decode("ascii")
        sizes[name] = (len(body), len(blob))
        lines.append('    "%s": (' % name)
        lines += ['        "%s"' % blob[i:i + 96] for i in range(0, len(blob), 96)]
        lines.append("    ),")
    lines += ["}", "# -- embedded: end"]
    with io.open(module_path, "r", encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split("# -- embedded: begin\n", 1)
    _, tail = rest.split("# -- embedded: end\n", 1)
    with io.open(module_path, "w", encoding="utf-8") as f:
        f.write(head + "\n".join(lines) + "\n" + tail)
    return sizes


def _write_client(folder):
    """Write dsn_client.js (the copy this module serves) into ``folder``; returns its path."""
    body = _static_body("dsn_client.js")
    if body is None:
        raise OSError("this dsn_sync.py has no dsn_client.js beside it and none embedded")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "dsn_client.js")
    with io.open(path, "wb") as f:
        f.write(body)
    return path


# =============================================================================
# python -m dsn_sync: the quick server
# =============================================================================

_SNIPPET = """\
<script type="module">
  import {{ connectDSN, newId }} from '{origin}/dsn_client.js';
  const client = connectDSN('{url}', '{token}');
  client.onDataChange('notes', (notes) => console.log('notes', notes));
  await client.create('notes', newId(), {{ text: 'hello from the browser', at: Date.now() }});
</script>"""
_SNIPPET_READ = """\
<script type="module">
  import {{ connectDSN }} from '{origin}/dsn_client.js';
  const client = connectDSN('{url}', '{token}');
  client.onDataChange('users', (users) => console.log('users', users));
</script>"""


def _read_secret_file(path):
    """The secret in ``path``; a new random one is written there (mode 0600) if the file does not exist."""
    try:
        with io.open(path, "r", encoding="ascii") as f:
            return _parse_secret(f.read())
    except FileNotFoundError:
        secret = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            raise ValueError("--secret-file %s: its folder does not exist (the file itself is made on the first run, "
                             "mode 0600; create the folder, or give a path in an existing one)" % path)
        with io.open(fd, "w", encoding="ascii") as f:
            f.write(secret.hex() + "\n")
        return secret


class _StatusLine:
    """One line of live status, rewritten in place on a terminal; silent when output is not a TTY."""

    def __init__(self, sync, stream):
        self.sync = sync
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last = (time.monotonic(), sync.stats())
        self.width = 0

    def update(self):
        if not self.tty:
            return
        now, stats = time.monotonic(), self.sync.stats()
        then, before = self.last
        self.last = (now, stats)
        dt = max(now - then, 1e-6)
        line = "  %d connected  |  %.0f req/s  |  %.0f changes/s  |  %d records  |  seq %d" % (
            stats["connections"], (stats["requests"] - before["requests"]) / dt,
            (stats["seq"] - before["seq"]) / dt, stats["records"], stats["seq"])
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def clear(self):
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _feed_demo(sync):
    """The seed's example tables, fed live, so the inspector has something to show at once."""
    import random  # deferred: only the demo needs it
    rng = random.Random()
    sync.define_table("users", {"key": "user_id", "fields": ["name", "email", "status"]})
    sync.define_table("notifications", {"key": "id", "fields": ["user_id", "text", "read", "ts"]})
    sync.define_table("metrics", {"key": "name", "fields": ["value", "unit", "ts"]})
    names = ["ada", "grace", "linus", "guido", "barbara", "ken"]
    with sync.batch():
        for i, name in enumerate(names):
            sync.sync("users", "user_%03d" % (i + 1), {"name": name.title(), "email": name + "@example.com",
                                                      "status": "online" if i % 2 else "away"})
    count = [0]

    @sync.on_create("notifications")
    @sync.on_update("notifications")
    @sync.on_delete("notifications")
    def accept(data):
        return True

    @sync.every(1.0)
    def metrics():
        now = time.time()
        sync.sync("metrics", "cpu", {"value": round(35 + 25 * math.sin(now / 10) + rng.uniform(-5, 5), 1),
                                     "unit": "%", "ts": now})
        sync.sync("metrics", "requests", {"value": rng.randint(80, 140), "unit": "req/s", "ts": now})

    @sync.every(3.0)
    def activity():
        count[0] += 1
        user = "user_%03d" % rng.randint(1, len(names))
        sync.sync("users", user, {"status": rng.choice(["online", "away", "busy"])})
        sync.sync("notifications", "n%05d" % count[0], {"user_id": user, "read": False, "ts": time.time(),
                                                        "text": rng.choice(["New order", "Payment received",
                                                                            "New message", "Stock low"])})


def _workers_problem(args):
    if args.workers < 1:
        return "--workers takes a number of processes, 1 or more"
    if not (args.db or "").startswith(("postgresql://", "postgres://")):
        return ("--workers %d needs a store every process shares: --db postgresql://... (the in-memory "
                "and SQLite stores belong to one process)" % args.workers)
    if args.port == 0:
        return "--workers needs a fixed --port (with 0 each process would pick its own)"
    if not hasattr(socket, "SO_REUSEPORT"):
        return "--workers needs SO_REUSEPORT, which this system does not have"
    return None


def _fork_workers(count):
    """Fork ``count`` - 1 more processes; True in each worker, False in the parent once all have ended."""
    import signal
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            return True
        children.append(pid)

    def forward(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    return False


def _parser():
    """The quick server's command line."""
    import argparse  # deferred: only the command line needs it
    parser = argparse.ArgumentParser(
        prog="python -m dsn_sync",
        description="Run a dsn-sync server: browsers mirror its tables into IndexedDB through dsn_client.js.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=3000, help="port (default 3000; 0 picks a free one)")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="store: omit for in-memory (lost on exit), sqlite:///path/to/dsn.db, or "
                             "postgresql://user:pw@host/db (several processes share it)")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help="certificate chain (PEM) to serve HTTPS")
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="private key (PEM) for --tls-cert")
    parser.add_argument("--secret-file", default=None, metavar="FILE",
                        help="file holding the server secret (created if missing) so URL and tokens survive restarts")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="N processes sharing the port (SO_REUSEPORT); needs --db postgresql://...")
    parser.add_argument("--demo", action="store_true",
                        help="define example tables (users, notifications, metrics) and feed them live")
    parser.add_argument("--open-writes", dest="open_writes", action="store_const", const=True, default=None,
                        help="accept browser writes to any table with no handler (the default when --host is "
                             "127.0.0.1, ::1 or localhost: a development server)")
    parser.add_argument("--no-open-writes", dest="open_writes", action="store_const", const=False,
                        help="accept browser writes only where the backend has a handler")
    parser.add_argument("--write-client", default=None, metavar="DIR",
                        help="write dsn_client.js into DIR (for a bundler) and exit")
    parser.add_argument("--embed", action="store_true",
                        help="(development) copy dsn_client.js and dsn_inspect.html into this module and exit")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    parser.add_argument("--version", action="version", version="dsn-sync " + __version__)
    return parser


def _file_command(args):
    """``--embed`` or ``--write-client``: a file written, then the exit status."""
    try:
        if args.embed:
            for name, (size, blob) in _embed().items():
                print("embedded %s: %d bytes as %d characters" % (name, size, blob))
        else:
            print("wrote %s" % _write_client(args.write_client))
    except OSError as e:
        print("dsn-sync: %s" % e, file=sys.stderr)
        return 2
    return 0


def _print_banner(sync, demo, open_writes, beyond=None):
    """What the quick server prints once it serves: its URL, token, inspector and a page's snippet.
    ``beyond``: the host it listens on, when writes are closed by default because that is not loopback."""
    url, token = sync.get_url(), sync.get_token()
    origin = url[:url.index("/sync/")]
    print("dsn-sync %s serving%s (Ctrl-C to stop)\n" % (__version__, " the demo tables" if demo else ""))
    print("  URL:        %s" % url)
    if sync.host in ("0.0.0.0", "::"):
        print("              (from another machine: this machine's address in place of %s)"
              % url.split("/")[2].rsplit(":", 1)[0])
    print("  Token:      %s" % token)
    print("              (full access: keep it to trusted code; mint per-user tokens for browsers)")
    print("  Inspector:  %s   (paste the token there)" % sync.inspector_url())
    if open_writes:
        print("  Writes:     open: browsers may create, update and delete in any table (development;")
        print("              --no-open-writes turns it off; real apps define handlers)")
    elif beyond is not None and beyond not in ("127.0.0.1", "::1", "localhost"):
        print("  Writes:     closed: it listens beyond this machine (--host %s), and has no handlers, so" % beyond)
        print("              browsers only read (--open-writes accepts them from anyone who can reach it)")
    else:
        print("  Writes:     closed: this server has no handlers, so browsers only read (--open-writes")
        print("              accepts them, behind your own access control; real apps define handlers)")
    print()
    print("In a page:\n")
    print((_SNIPPET if open_writes else _SNIPPET_READ).format(origin=origin, url=url, token=token))
    print(flush=True)


def _main(argv=None):
    import signal  # deferred: only the command line needs it
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.embed or args.write_client:
        return _file_command(args)
    open_writes = args.open_writes if args.open_writes is not None else args.host in ("127.0.0.1", "::1", "localhost")
    if args.workers != 1:
        problem = _workers_problem(args)
        if problem:
            print("dsn-sync: %s" % problem, file=sys.stderr)
            return 2
    try:
        secret = _read_secret_file(args.secret_file) if args.secret_file else None
        if args.workers > 1:
            # Every process must hold the same secret: chosen here, before the fork.
            secret = secret or _parse_secret(os.environ.get("DSN_SYNC_SECRET") or os.urandom(32).hex())
            if not _fork_workers(args.workers):
                return 0  # the parent, after its children ended
        sync = DSNSync(port=args.port, db_connection_string=args.db, host=args.host, secret=secret,
                       certfile=args.tls_cert, keyfile=args.tls_key, open_writes=open_writes,
                       reuse_port=args.workers > 1)
        sync.start()
    except (OSError, ValueError, TypeError, ssl.SSLError, DSNError) as e:
        # An OSError of ours (cannot listen) says it all in strerror; a file's names its file in str().
        ours = isinstance(e, OSError) and not isinstance(e, ssl.SSLError) and e.filename is None and e.strerror
        print(e.strerror if ours and e.strerror.startswith("dsn-sync") else "dsn-sync: %s" % (e.strerror if ours else e),
              file=sys.stderr)
        return 2
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()
    signal.signal(signal.SIGINT, on_signal)  # before the banner: a Ctrl-C while it prints stops cleanly too
    signal.signal(signal.SIGTERM, on_signal)
    if args.demo:
        _feed_demo(sync)
    try:
        _print_banner(sync, args.demo, open_writes, beyond=None if args.open_writes is not None else args.host)
    except BrokenPipeError:  # `python3 -m dsn_sync | head`: the reader left; the server serves on
        _stdout_gone()
    status = _StatusLine(sync, sys.stdout)
    while not done.wait(1.0):
        status.update()
    status.clear()
    sync.stop()
    try:
        print("dsn-sync stopped", flush=True)
    except BrokenPipeError:
        _stdout_gone()
    return 0


def _stdout_gone():
    """Point standard output at the null device: its reader has gone, and what is still to print
    (and Python's own flush at exit) would raise BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(_main())
