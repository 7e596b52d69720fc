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
The store has one lock; client writes to the same key are serialised by
striped locks held around the handler call.

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

import base64
import binascii
import bisect
import collections
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

_B64U_RE = re.compile(rb"^[A-Za-z0-9_-]*$")
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
    if not _B64U_RE.match(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


# Compact UTF-8 JSON; NaN and infinities are refused because JSON.parse refuses
# them.  One encoder built once: json.dumps() with options builds a new encoder
# per call (2.6 us versus 1.4 us for a small answer here).
_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


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

    __slots__ = ("enc", "mac", "_sponge", "_hmac")

    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)) or len(key) != 64:
            raise ValueError("an envelope key is 64 bytes, got %r" % (type(key).__name__ if not isinstance(key, (bytes, bytearray)) else len(key)))
        key = bytes(key)
        self.enc, self.mac = key[:32], key[32:]
        self._sponge = hashlib.shake_256(_STREAM_LABEL + self.enc)
        self._hmac = hmac.new(self.mac, digestmod=hashlib.sha256)

    def stream(self, nonce, length):
        sponge = self._sponge.copy()
        sponge.update(nonce)
        return sponge.digest(length)

    def tag(self, aad, nonce, ct):
        mac = self._hmac.copy()
        # One update of the joined message: each update() is a Python-level call
        # in hmac.HMAC, and joining a small frame costs less than three of them.
        mac.update(b"".join((struct.pack(">I", len(aad)), aad, nonce, ct)))
        return mac.digest()


def _as_key(key):
    return key if isinstance(key, SealKey) else SealKey(key)


class _NoncePool:
    """16-byte nonces cut from 4 KiB reads of os.urandom.

    One urandom call per answer was a system call per response (about 5 % of the
    server's samples under load, nearly all in the kernel).  The lock makes
    every nonce a distinct slice, so no two seals ever share one.
    """

    def __init__(self, chunk=4096):
        self._chunk = chunk
        self._buf = b""
        self._at = 0
        self._lock = threading.Lock()

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

_TOKEN_RE = re.compile(r"^dsn1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$")


def parse_token(token):
    """Split ``dsn1.<kid>.<secret>`` into (kid, secret bytes); raises ValueError with the reason."""
    if not isinstance(token, str):
        raise ValueError("a token is a string 'dsn1.<kid>.<secret>', got %s" % type(token).__name__)
    m = _TOKEN_RE.match(token.strip())
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

    __slots__ = ("kid", "claims", "jti", "c2s", "s2c", "read", "write", "sub", "exp", "view")

    def __init__(self, kid, claims, token_secret):
        self.kid = kid
        self.claims = claims
        self.jti = str(claims.get("jti"))
        c2s, s2c = traffic_keys(token_secret)
        self.c2s, self.s2c = SealKey(c2s), SealKey(s2c)
        self.sub = claims.get("sub")
        self.exp = claims.get("exp")
        self.read = _rights(claims.get("read", "*"))
        self.write = _rights(claims.get("write", "*"))
        self.view = None


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
                self._cache.popitem(last=False)
        return state


# =============================================================================
# Store and change feed
# =============================================================================

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
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
    if not isinstance(name, str) or not _TABLE_RE.match(name):
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
    writes it as it is.  ``shape`` is the record's field names (an interned
    tuple), so a sync() that rewrites every field needs no decode to merge.
    ``seen`` caches row-rule answers for this state, per token subject.
    """

    __slots__ = ("table", "key", "seq", "data", "shape", "seen")

    def __init__(self, table, key):
        self.table = table
        self.key = key
        self.seq = 0
        self.data = None
        self.shape = ()
        self.seen = None

    @property
    def record(self):
        """The record as a fresh dict, or None for a tombstone."""
        return _loads(self.data) if self.data is not None else None


_SHAPES = {}


def _shape(record):
    """The record's field names as one shared tuple per distinct shape (at most 10,000 kept)."""
    shape = tuple(record)
    found = _SHAPES.get(shape)
    if found is None:
        # Only modest shapes are kept: field names come from clients too, and an
        # unbounded cache of huge ones would pin memory after the records are gone.
        if len(_SHAPES) < 10000 and len(shape) <= 64 and sum(map(len, shape)) <= 2048:
            _SHAPES[shape] = shape
        return shape
    return found


_PLAIN_KEY = re.compile(r'[^"\\\x00-\x1f]*')  # used with fullmatch: '$' would let a final newline in


def _key_json(text):
    """A JSON string literal for a key or table name, as UTF-8 bytes (no encoder call when plain)."""
    if _PLAIN_KEY.fullmatch(text):
        return ('"' + text + '"').encode("utf-8")
    return _json_dumps(text).encode("utf-8")


class View:
    """What one token may read: a table set (None = all) and row rules evaluated per subject.

    A row rule runs at most once per change per distinct subject: its answer
    is cached on the change's entry, so a thousand clients of one user waiting
    on a change cost one evaluation, not a thousand.
    """

    __slots__ = ("tables", "rules", "sub", "claims")

    def __init__(self, tables=None, rules=None, sub=None, claims=None):
        self.tables = tables
        self.rules = rules if sub is not None else None  # the app's own token sees every row
        self.sub = sub
        self.claims = claims or {}

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
        answer = seen.get(self.sub)
        if answer is None:
            try:
                answer = seen[self.sub] = bool(rule(_loads(entry.data), ReadContext(entry.table, entry.key, self)))
            except Exception:
                log.exception("the @can_read('%s') rule raised for key %r; the row stays hidden", entry.table, entry.key)
                answer = seen[self.sub] = False
        return answer


class ReadContext:
    """A row rule's second argument: ``table``, ``key``, ``sub`` (the token's user) and ``claims``."""

    __slots__ = ("table", "key", "sub", "claims")

    def __init__(self, table, key, view):
        self.table, self.key, self.sub, self.claims = table, key, view.sub, view.claims


EVERYTHING = View()


class MemoryStore:
    """The default store: dicts in memory, with a by-sequence change index.

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

    Thread safety: every method takes ``lock``; ``changed`` is a Condition on
    it that is notified after each change (long-polls wait on it).  Records
    are never mutated in place (a merge builds a new dict), so a record read
    under the lock can be used after releasing it.

    The in-memory store takes a new random epoch per process, so clients of a
    restarted server reset instead of silently missing changes, and it
    remembers mutation ids for the newest ``mid_capacity`` writes only.

    Subclasses persist through three hooks that run under the lock before the
    memory changes (so a failed write changes nothing): ``_persist_change``,
    ``_persist_table`` and ``_persist_answer``.
    """

    durable = False
    secret = None
    max_tombstones = 100000  # tombstones kept before the oldest are compacted
    mid_capacity = 100000  # newest (token, mid) answers remembered for idempotent retries
    page_bytes = 4 << 20  # a reset page or changes answer stops past this much record JSON, whatever page_size says

    def __init__(self):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._reset_memory()
        self.epoch = b64u_encode(os.urandom(9))
        self._batch_depth = 0
        self._batch_dirty = False

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

    # -- lifecycle (a durable store opens files here) -------------------------
    def open(self):
        return self

    def close(self):
        pass

    # -- persistence hooks (no-ops in memory) ---------------------------------
    def _persist_change(self, table, key, seq, record, ledger):
        if ledger is not None:
            self._mids[ledger[:2]] = ledger[2]
            if len(self._mids) > self.mid_capacity:
                self._mids.popitem(last=False)

    def _persist_table(self, name, spec, sv):
        pass

    def _persist_answer(self, jti, mid, answer):
        self._persist_change(None, None, None, None, (jti, mid, answer))

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
        with self.lock:
            entry = self._data.get(table, {}).get(key)
            data = entry.data if entry is not None else None
        return _loads(data) if data is not None else None

    def exists(self, table, key):
        with self.lock:
            entry = self._data.get(table, {}).get(key)
            return entry is not None and entry.data is not None

    def get_all(self, table):
        with self.lock:
            if table not in self._data:
                raise UnknownTable("no table %r" % (table,))
            raw = [(k, e.data) for k, e in self._data[table].items() if e.data is not None]
        return {k: _loads(d) for k, d in raw}

    def count(self, table=None):
        with self.lock:
            tables = [table] if table is not None else list(self._data)
            return sum(1 for t in tables for e in self._data.get(t, {}).values() if e.data is not None)

    # -- writes ---------------------------------------------------------------
    def apply(self, table, key, op, data=None, ledger=None, encoded=None):
        """Apply one change atomically; returns (seq, record).

        ``op``: ``create`` (Exists if present), ``update`` (NotFound if absent;
        shallow merge), ``upsert`` (merge or create), ``replace`` (whole record),
        ``delete`` (NotFound if absent).  ``data`` must already be validated.
        ``ledger``: a client write's ``(jti, mid)``, remembered with its answer
        in the same step, so a retry can never apply it twice.  ``encoded``:
        ``data`` as UTF-8 JSON when the caller has it already.  The record
        returned is a dict the caller may keep.
        """
        with self.lock:
            rows = self._data.get(table)
            if rows is None:
                raise UnknownTable("no table %r" % (table,))
            entry = rows.get(key)
            present = entry is not None and entry.data is not None
            if op == "delete":
                if not present:
                    raise NotFound("%s/%s does not exist" % (table, key))
                record = stored = None
            else:
                if op == "create" and present:
                    raise Exists("%s/%s already exists" % (table, key))
                if op == "update" and not present:
                    raise NotFound("%s/%s does not exist" % (table, key))
                if op not in ("create", "update", "upsert", "replace"):
                    raise ValueError("unknown op %r" % (op,))
                shape = _shape(data)
                if present and op != "replace" and shape is not entry.shape and not all(f in data for f in entry.shape):
                    record = _loads(entry.data)  # a partial update: merge into the stored fields
                    record.update(data)
                    shape = _shape(record)
                    stored = _json_dumps(record).encode("utf-8")
                else:  # new, or every stored field rewritten: the data is the record
                    record = dict(data)
                    stored = encoded if encoded is not None else _json_dumps(record).encode("utf-8")
            seq = self.seq + 1
            if ledger is not None:
                ledger = (ledger[0], ledger[1], {"ok": True, "epoch": self.epoch, "seq": seq, "record": record})
            self._persist_change(table, key, seq, stored, ledger)
            self._put(rows, table, key, entry, stored, seq, shape if stored is not None else ())
            self._notify()
            return seq, record

    def _put(self, rows, table, key, entry, record, seq, shape=()):
        """File ``record`` (UTF-8 JSON bytes, or None for a deletion) as ``seq``."""
        self.seq = seq
        if entry is None:
            entry = rows[key] = _Entry(table, key)
        else:
            self._stale += 1
            if entry.data is None:
                self._tombstones -= 1
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

    def _persist_floor(self):
        pass

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

    def changes_since(self, seq, limit, view=EVERYTHING):
        """(changes as UTF-8 JSON fragments, new cursor seq) for changes after ``seq``.

        O(log n + changes since seq).  At most ``limit`` changes; the cursor
        then stops at the last one carried, and the client pulls again.  A row
        the view's rules hide is carried as a deletion (it may have been
        visible before this change).
        """
        with self.lock:
            seqs, entries = self._log_seq, self._log_entry
            out = []
            size = 0
            cursor = self.seq
            tables, rules = view.tables, view.rules
            for i in range(bisect.bisect_right(seqs, seq), len(seqs)):
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
        """
        with self.lock:
            seqs, entries = self._log_seq, self._log_entry
            records = {t: [] for t in self.tables if view.may_see_table(t)}
            rules = view.rules
            n = size = 0
            last = after
            i = bisect.bisect_right(seqs, after)
            end = bisect.bisect_right(seqs, snap_seq)
            while i < end:
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
            more = False
            if n >= limit or size >= self.page_bytes:  # peek for one more record, so the last page is never empty
                for j in range(i, end):
                    entry = entries[j]
                    if (entry.seq == seqs[j] and entry.data is not None and entry.table in records
                            and (not rules or view.row_visible(entry))):
                        more = True
                        break
        # The page is spliced from the stored JSON, outside the lock: no record is decoded.
        blob = b"{" + b",".join(b"".join((_key_json(t), b":{", b",".join(rows), b"}")) for t, rows in records.items()) + b"}"
        return blob, (last if more else snap_seq), more

    def save_secret(self, secret):
        pass

    def forget_rule_answers(self, table):
        with self.lock:
            for entry in self._data.get(table, {}).values():
                entry.seen = None

    # -- mutation-id ledger ---------------------------------------------------
    def recall(self, jti, mid):
        with self.lock:
            return self._mids.get((jti, mid))

    def remember(self, jti, mid, answer):
        with self.lock:
            self._persist_answer(jti, mid, answer)

    # -- revocation -----------------------------------------------------------
    def revoked(self):
        """Token ids revoked and remembered by the store (empty for the memory store)."""
        return set()

    def revoke(self, jti, exp):
        pass

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
                    assert e.data is None or e.shape == tuple(e.record), "shape differs from the record"
                    tomb += e.data is None
            assert tomb == self._tombstones, "tombstone count %d != %d" % (tomb, self._tombstones)
            return True


class StoreError(DSNError):
    """A store that cannot be opened or used: a bad path, a foreign or newer file, a failed write."""

    code = "store"


def _unlock(fd):
    if fd is not None:
        try:
            os.close(fd)  # closing the descriptor releases its flock
        except OSError:
            pass


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

    Tables (all prefixed ``dsn_``)::

        dsn_meta(k, v)                      format, epoch, seq, sv, floor, secret
        dsn_tables(name, spec)              the schema
        dsn_records(tbl, key, seq UNIQUE, data)   data NULL = tombstone
        dsn_mids(jti, mid, at, answer)      answers of client writes
        dsn_revoked(jti, exp)
    """

    durable = True
    format_version = 1
    mid_ttl = 86400  # seconds a mutation id's answer is kept (PROTOCOL.md: at least 24 h)

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

    # -- lifecycle ------------------------------------------------------------
    def open(self):
        import sqlite3  # deferred: only the durable store needs it
        with self.lock:
            if self._db is not None:
                return self
            folder = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(folder):
                raise StoreError("cannot open the store %s: folder %s does not exist" % (self.path, folder))
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            except sqlite3.Error as e:
                raise StoreError("cannot open the store %s: %s" % (self.path, e))
            lock = None
            try:
                fresh = self._check_foreign(db)  # before changing anything in a file that may not be ours
                lock = self._lock_file()
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal" and self.path != ":memory:":
                    raise StoreError("the store %s cannot use WAL mode (got %s)" % (self.path, mode))
                db.execute("PRAGMA synchronous=%s" % self.synchronous)
                if fresh:
                    self._create(db)
                self._load(db)
            except sqlite3.DatabaseError as e:
                db.close()
                _unlock(lock)
                raise StoreError("%s is not a dsn-sync database, or it is damaged: %s" % (self.path, e))
            except BaseException:
                db.close()
                _unlock(lock)
                raise
            self._db = db
            self._lock = lock
            self._expire_mids()
            return self

    def close(self):
        with self.lock:
            if self._db is None:
                return
            self._flush()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except Exception:
                pass
            self._db.close()
            self._db = None
            _unlock(self._lock)
            self._lock = None

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
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError("the store %s is in use by another dsn-sync server (it holds the file's lock); "
                             "stop that one, or give this one its own file" % self.path)
        return fd

    def _check_foreign(self, db):
        """True for an empty file (to be created); StoreError for anything that is not our format."""
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not names:
            return True
        if "dsn_meta" not in names:
            raise StoreError("%s is not a dsn-sync database (its tables: %s); point --db at a new file"
                             % (self.path, ", ".join(sorted(names))))
        meta = dict(db.execute("SELECT k, v FROM dsn_meta"))
        try:
            version = int(meta.get("format", "0"))
        except ValueError:
            version = 0
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
        meta = dict(db.execute("SELECT k, v FROM dsn_meta"))
        self._reset_memory()
        self.epoch = meta["epoch"]
        self.sv = int(meta["sv"])
        self.floor = int(meta["floor"])
        self.secret = bytes.fromhex(meta["secret"]) if meta.get("secret") else None
        for name, spec in db.execute("SELECT name, spec FROM dsn_tables"):
            self.tables[name] = json.loads(spec)
            self._data[name] = {}
        seq = int(meta["seq"])
        seqs, entries = self._log_seq, self._log_entry
        for table, key, s, data in db.execute("SELECT tbl, key, seq, data FROM dsn_records ORDER BY seq"):
            rows = self._data.get(table)
            if rows is None:
                raise StoreError("%s holds records for table %r but not its schema" % (self.path, table))
            entry = rows[key] = _Entry(table, key)
            entry.seq = s
            if data is not None:
                entry.data = data.encode("utf-8")
                entry.shape = _shape(entry.record)
            self._tombstones += data is None
            seqs.append(s)
            entries.append(entry)
            seq = max(seq, s)
        self.seq = seq

    # -- persistence hooks ----------------------------------------------------
    def _persist_change(self, table, key, seq, record, ledger):
        self._require_open()  # before queueing: a refused change must never reach the file later
        if table is not None:
            self._pending_rows.append((table, key, seq, record.decode("utf-8") if record is not None else None))
        if ledger is not None:
            self._pending_mids.append((ledger[0], ledger[1], int(time.time()), _json_dumps(ledger[2])))
        if not self._batch_depth:
            self._commit()

    def _persist_table(self, name, spec, sv):
        self._require_open()
        self._flush()
        self._execute_in_tx([("INSERT OR REPLACE INTO dsn_tables VALUES (?, ?)", (name, _json_dumps(spec))),
                             ("UPDATE dsn_meta SET v = ? WHERE k = 'sv'", (str(sv),))])

    def _persist_floor(self):
        self._flush()
        self._execute_in_tx([("DELETE FROM dsn_records WHERE data IS NULL AND seq <= ?", (self.floor,)),
                             ("UPDATE dsn_meta SET v = ? WHERE k = 'floor'", (str(self.floor),)),
                             ("UPDATE dsn_meta SET v = ? WHERE k = 'seq'", (str(self.seq),))])

    def save_secret(self, secret):
        with self.lock:
            self._require_open()
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
                db.execute("ROLLBACK")
            raise

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
        """Commit buffered changes as one transaction; on failure nothing is kept and it raises."""
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
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError("writing to %s failed, nothing was applied: %s" % (self.path, e))
        self._writes += len(rows)
        if self._writes > 10000:
            self._writes = 0
            self._expire_mids()

    def begin_batch(self):
        import sqlite3
        super().begin_batch()
        if self._batch_depth == 1:
            try:
                self._require_open()
                self._db.execute("BEGIN IMMEDIATE")
            except BaseException as e:
                super().end_batch(False)  # give the lock back: the batch never started
                if isinstance(e, sqlite3.Error):
                    raise StoreError("cannot start a batch on %s: %s" % (self.path, e))
                raise

    def end_batch(self, ok=True):
        try:
            if self._batch_depth == 1:
                try:
                    self._commit()
                except StoreError:
                    self._load(self._db)  # memory back to what is on disk
                    raise
        finally:
            super().end_batch(ok)

    def _expire_mids(self):
        self._db.execute("DELETE FROM dsn_mids WHERE at < ?", (int(time.time()) - self.mid_ttl,))

    # -- ledger and revocation ------------------------------------------------
    def recall(self, jti, mid):
        with self.lock:
            self._require_open()
            row = self._db.execute("SELECT answer FROM dsn_mids WHERE jti = ? AND mid = ?", (jti, mid)).fetchone()
            return json.loads(row[0]) if row else None

    def revoked(self):
        with self.lock:
            self._require_open()
            now = time.time()
            return {jti for jti, exp in self._db.execute("SELECT jti, exp FROM dsn_revoked")
                    if exp is None or exp > now}

    def revoke(self, jti, exp):
        with self.lock:
            self._require_open()
            self._execute_in_tx([("INSERT OR REPLACE INTO dsn_revoked VALUES (?, ?)", (jti, exp))])

    def check(self):
        """MemoryStore's invariants, plus: the file holds exactly what memory holds."""
        with self.lock:
            super().check()
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
        raise StoreError('the PostgreSQL store needs psycopg 3.2 or later: pip install "dsn-sync[postgres]" '
                         '(or pip install "psycopg[binary]>=3.2")')
    if tuple(int(p) for p in re.findall(r"\d+", psycopg.__version__)[:2]) < (3, 2):
        # notifies(timeout=, stop_after=), which the listener needs, came in 3.2.
        raise StoreError('the PostgreSQL store needs psycopg 3.2 or later, this is %s: pip install -U '
                         '"dsn-sync[postgres]"' % psycopg.__version__)
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
    (``pip install "dsn-sync[postgres]"``), imported when the store opens.
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

    Connect directly or through a pooler in session mode: LISTEN and the
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
    format_version = 1
    mid_ttl = 86400  # seconds a mutation id's answer is kept (PROTOCOL.md: at least 24 h)
    pool_size = 4  # connections per node for writes and shared reads (the listener has two more)
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
                if ledger is not None:
                    answer = _json_dumps({"ok": True, "epoch": self.epoch, "seq": seq, "record": record})
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
                    self._absorbing = True  # a compaction waits until this change is in memory
                    try:
                        self._put(rows, table, key, entry, stored, seq, shape)
                    finally:
                        self._absorbing = False
                    self._after_write()
                    return seq, record
            self.begin_batch()
            try:
                return self._apply_in_batch(table, key, op, data, ledger, encoded)
            finally:
                self.end_batch()

    def _plan(self, table, key, op, data, encoded):
        """MemoryStore.apply's checks and merge on memory: (rows, entry, stored JSON, shape, record)."""
        rows = self._data.get(table)
        if rows is None:
            raise UnknownTable("no table %r" % (table,))
        if "\x00" in key:
            raise Invalid("a key stored in PostgreSQL cannot hold the character U+0000")
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
        if present and op != "replace" and shape is not entry.shape and not all(f in data for f in entry.shape):
            record = _loads(entry.data)
            record.update(data)
            shape = _shape(record)
            stored = _json_dumps(record).encode("utf-8")
        else:
            record = dict(data)
            stored = encoded if encoded is not None else _json_dumps(record).encode("utf-8")
        return rows, entry, stored, shape, record

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
            answer = {"ok": True, "epoch": self.epoch, "seq": seq, "record": record}
            self._batch_mids.append((ledger[0], ledger[1], int(time.time()), _json_dumps(answer)))
        self._absorbing = True  # a compaction waits for the commit
        try:
            self._put(rows, table, key, entry, stored, seq, shape)
        finally:
            self._absorbing = False
        self._notify()
        return seq, record

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
            return answer["seq"], answer["record"]
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

    def recall(self, jti, mid):
        self._require_open()
        with self._pool.lease() as conn:
            row = conn.execute("SELECT answer FROM dsn_mids WHERE jti = %s AND mid = %s", (jti, mid)).fetchone()
        return json.loads(row[0]) if row else None

    def remember(self, jti, mid, answer):
        """Keep a write's (error) answer for retries on any node; a first answer is never replaced."""
        self._require_open()
        with self._pool.lease() as conn:
            conn.execute("INSERT INTO dsn_mids VALUES (%s, %s, %s, %s) ON CONFLICT (jti, mid) DO NOTHING",
                         (jti, mid, int(time.time()), _json_dumps(answer)))

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
    max_tokens = 100000  # tokens whose rotation state is kept (least recently used dropped)

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

    def admit(self, path, jti, op):
        """After authentication: may this token use ``path`` for ``op``?  Returns the next ep."""
        if not self.rotate_every:
            return self.base if path == self.base else None
        now = time.monotonic()
        with self._lock:
            if path != self.base or op != "hello":
                owner = self._owner.get(path)
                if owner is None or owner[0] != jti or (owner[1] is not None and now - owner[1] >= self.grace):
                    return None
            state = self._tokens.get(jti)
            if state is None:
                state = self._tokens[jti] = [self._fresh(jti), 0]
                if len(self._tokens) > self.max_tokens:
                    _, (old_path, _) = self._tokens.popitem(last=False)
                    self._retire(old_path, now)
            else:
                self._tokens.move_to_end(jti)
            state[1] += 1
            if state[1] > self.rotate_every:
                self._retire(state[0], now)
                state[0], state[1] = self._fresh(jti), 1
            while self._retired and now - self._retired[0][0] >= self.grace:
                self._owner.pop(self._retired.popleft()[1], None)
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


class _ReplayMemory:
    """Accepted request nonces, each kept until its ``t`` is more than 60 s in the past.

    Nonces are filed in one-second buckets by expiry, so forgetting is a dict
    pop per second.  Full means 503: PROTOCOL.md forbids forgetting early.
    """

    window_ms = 60000

    def __init__(self, capacity):
        self.capacity = capacity
        self._lock = threading.Lock()
        self._seen = set()
        self._buckets = {}
        self._purged_at = 0

    def add(self, nonce, t, now):
        """True if new (and now remembered), False if already seen; _HTTPFault(503) if full."""
        with self._lock:
            second = now // 1000
            if second != self._purged_at:
                self._purged_at = second
                for b in [b for b in self._buckets if b < second]:
                    self._seen.difference_update(self._buckets.pop(b))
            if nonce in self._seen:
                return False
            if len(self._seen) >= self.capacity:
                raise _HTTPFault(503, "replay memory full")
            self._seen.add(nonce)
            self._buckets.setdefault((int(t) + self.window_ms) // 1000 + 1, []).append(nonce)
            return True

    def __len__(self):
        return len(self._seen)


# =============================================================================
# The protocol engine: frames in, sealed answers out (PROTOCOL.md sections 3-6)
# =============================================================================


def _refuse_constant(name):
    raise ValueError("%s is not JSON" % name)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # built once, like _json_dumps (4.8 -> 2.9 us)
MAX_DEPTH = 64  # nesting of arrays and objects in any request or record; deeper is `invalid`/`bad_request`


def _loads(data):
    """json.loads that refuses NaN and Infinity (Python accepts them, JSON.parse does not).

    ``data`` is UTF-8 bytes or text; bad UTF-8 raises ValueError like bad JSON.
    """
    return _DECODER.decode(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)


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


def _error_answer(error):
    """The one place a DSNError becomes an answer's ``{"ok": false, "error": ...}``."""
    return {"ok": False, "error": {"code": error.code, "message": error.message}}


class _Wait:
    """A pull that found nothing new and asked to wait: everything needed to answer it later.

    ``conn`` is the transport's own handle on the waiting request; the
    engine and the feed never look inside it.
    """

    __slots__ = ("state", "nonce", "ep", "seq", "sv", "deadline", "conn", "stream", "sent", "due")

    def __init__(self, state, nonce, ep, seq, sv, deadline, stream=False):
        self.state, self.nonce, self.ep, self.seq, self.sv, self.deadline = state, nonce, ep, seq, sv, deadline
        self.conn = None
        self.stream = stream  # a streamed pull (PROTOCOL.md 6): many answers down one response
        self.sent = 0  # stream messages sent so far; the next one's index
        self.due = 0.0  # a stream's next message waits until then (monotonic seconds)


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

    def __init__(self, keyring, store, rotate_every=100, page_size=5000, max_batch=1000, max_record=1 << 20,
                 max_nonces=1000000):
        self.keyring = keyring
        self.store = store
        self.base = "/sync/" + keyring.instance
        self.endpoints = _Endpoints(self.base, rotate_every)
        self.replay = _ReplayMemory(max_nonces)
        self.page_size = page_size
        self.max_batch = max_batch
        self.max_record = max_record
        self.handlers = {}
        self.read_rules = {}
        self.any_table = False  # the quick server's development mode: writes to any table, no handler needed
        self.revoked = set(store.revoked())
        # Frames sealed before an in-memory server started may have been accepted by the
        # process before it, whose replay memory and mid ledger are gone: they are refused
        # as `clock` (PROTOCOL.md 4).  A durable store answers a replayed write from its ledger.
        self.started_ms = 0 if store.durable else _now_ms()
        self.requests = 0
        self._count_lock = threading.Lock()
        self._key_locks = [threading.Lock() for _ in range(64)]
        self._mid_locks = [threading.Lock() for _ in range(64)]
        self._fieldsets = {}

    # -- one frame ------------------------------------------------------------
    def known_path(self, path):
        return self.endpoints.known(path)

    def handle(self, path, body):
        """One POST body -> sealed answer bytes or a _Wait.  Raises _HTTPFault; never raises for bad input."""
        with self._count_lock:
            self.requests += 1
        state, nonce, plain = self._open_frame(path, body)
        try:
            request = self._parse(state, plain)
        except ProtocolError as e:
            return self._seal(state, nonce, self.base, _error_answer(e))
        op = request.get("op")
        ep = self.endpoints.admit(path, state.jti, op)
        if ep is None:
            raise _HTTPFault(404, "not this token's endpoint")
        try:
            self._admit(state, nonce, request)
            if op == "pull":
                return self._pull(state, nonce, ep, request)
            if op == "hello":
                result = self._hello(state)
            elif op in _WRITE_OPS:
                result = self._write(state, request)
            elif op == "batch":
                result = self._batch(state, request)
            else:
                raise ProtocolError("unknown op %r" % (op,))
        except DSNError as e:
            result = _error_answer(e)
        return self._seal(state, nonce, ep, result)

    def _open_frame(self, path, body):
        """(token state, request nonce, plaintext) of an authentic frame; _HTTPFault 400/401 otherwise."""
        if len(body) < 3 or body[0] != PROTOCOL_VERSION:
            raise _HTTPFault(400, "not a frame")
        kid_len = (body[1] << 8) | body[2]
        if not 0 < kid_len <= self.max_kid or len(body) < 3 + kid_len + OVERHEAD:
            raise _HTTPFault(400, "bad kid length")
        try:
            kid = bytes(body[3:3 + kid_len]).decode("ascii")
        except UnicodeDecodeError:
            raise _HTTPFault(400, "kid is not ASCII")
        state = self.keyring.resolve(kid)
        if state is None or state.jti in self.revoked:
            raise _HTTPFault(401, "unknown or revoked token")
        sealed = bytes(body[3 + kid_len:])
        plain = open(state.c2s, _REQ_LABEL + path.encode("ascii"), sealed)
        if plain is None:
            raise _HTTPFault(401, "tag mismatch")
        return state, sealed[:NONCE_SIZE], plain

    def _parse(self, state, plain):
        """The request object, after the caps that bound what parsing it may cost."""
        if state.write is not None and not state.write and len(plain) > self.max_read_request:
            # A token that may write nothing can only say hello and pull: a few hundred bytes.
            raise ProtocolError("a request from a read-only token is at most %d bytes, got %d"
                                % (self.max_read_request, len(plain)))
        try:
            request = _loads(plain)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise ProtocolError("the request is not JSON")
        if not isinstance(request, dict):
            raise ProtocolError("the request is not a JSON object")
        if _too_deep(request, MAX_DEPTH + 3):  # request -> mutations -> mutation -> data: 3 levels of wrapping
            raise ProtocolError("the request nests deeper than %d levels" % MAX_DEPTH)
        return request

    def _admit(self, state, nonce, request):
        """Clock, replay and expiry, in that order (PROTOCOL.md 4)."""
        now = _now_ms()
        t = request.get("t")
        if type(t) not in (int, float) or abs(t - now) > self.clock_window_ms or t < self.started_ms:
            raise ProtocolError("the request's clock is off by more than 60 s, or predates this server's "
                                "start; adjust to the server's `now`", "clock")
        if not self.replay.add(nonce, t, now):
            raise ProtocolError("this frame was already accepted", "replay")
        exp = state.exp
        if exp is not None and (type(exp) not in (int, float) or now / 1000.0 >= exp):
            raise AuthError("the token has expired; get a fresh one", "expired")

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
                    "seq": store.seq, "sv": store.sv, "tables": self._visible_tables(state)}

    def _pull(self, state, nonce, ep, request):
        store = self.store
        since, wait, nxt = request.get("since"), request.get("wait", 0), request.get("next")
        if type(wait) not in (int, float) or not 0 <= wait <= self.max_wait:
            raise ProtocolError("`wait` is seconds from 0 to %d, got %r" % (self.max_wait, wait))
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
            found = self.store.changes_since(wait.seq, self.page_size, self.view(wait.state))
        return self._changes_answer(wait.state, wait.nonce, wait.ep, wait.seq, wait.sv, found, index)

    def _changes_answer(self, state, nonce, ep, seq, sv, found, index=None):
        """The sealed changes answer for a cursor at ``seq``/``sv``, given changes_since()'s result."""
        store = self.store
        changes, cursor = found
        result = {"epoch": store.epoch, "seq": cursor}
        if sv != store.sv:
            with store.lock:
                result["sv"] = store.sv
                result["tables"] = self._visible_tables(state)
        return self._seal(state, nonce, ep, result, b',"changes":[' + b",".join(changes) + b"]", index)

    def _reset_page(self, state, nonce, ep, nxt):
        """A reset page (PROTOCOL.md: paged in seq order up to the snapshot's seq)."""
        store = self.store
        snap = after = None
        if isinstance(nxt, str):
            parts = nxt.split(".")
            if len(parts) == 3 and parts[0] == store.epoch and _DIGITS.fullmatch(parts[1]) and _DIGITS.fullmatch(parts[2]):
                snap, after = int(parts[1]), int(parts[2])
                if snap > store.seq or after > snap:
                    snap = None
        if snap is None:
            snap, after = store.seq, 0
        records, last, more = store.snapshot_page(snap, after, self.page_size, self.view(state))
        with store.lock:
            result = {"reset": True, "epoch": store.epoch, "seq": snap, "sv": store.sv,
                      "tables": self._visible_tables(state), "more": more,
                      "next": "%s.%d.%d" % (store.epoch, snap, last) if more else None}
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
        if _too_deep(data):
            raise Invalid("record %s/%s nests deeper than %d levels" % (table, key, MAX_DEPTH))
        try:
            # A lone surrogate cannot be UTF-8: refused here.
            encoded = encode(data).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise Invalid("record %s/%s is not JSON-serialisable: %s. Convert the value first (str() a "
                          "datetime, list() a set), or pass DSNSync(json_default=dsn_sync.json_default)"
                          % (table, key, e))
        if encode is not _json_dumps:
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
        store = self.store
        try:
            with self._mid_locks[hash(mid) & 63]:
                answer = store.recall(state.jti, mid)
                if answer is None:
                    try:
                        answer = self._apply_write(state, m, mid)
                    except DSNError as e:
                        if isinstance(e, StoreError):
                            raise
                        answer = _error_answer(e)
                        store.remember(state.jti, mid, answer)
        except StoreError:
            # Not the write's answer: nothing was applied, nothing is remembered, and a retry
            # with the same mid may succeed.  The details (paths, SQLite's words) stay here.
            log.exception("the store failed a client write; answering 503")
            raise _HTTPFault(503, "store failure")
        return answer

    def _apply_write(self, state, m, mid):
        op, table, key = m.get("op"), m.get("table"), m.get("key")
        if op not in _WRITE_OPS:
            raise ProtocolError("unknown write op %r" % (op,))
        if not isinstance(table, str):
            raise Invalid("`table` must be a string")
        if state.write is not None and table not in state.write:
            raise ProtocolError("this token may not write to table %r" % table, "forbidden")
        spec = self.store.tables.get(table)
        if spec is None and self.any_table and _TABLE_RE.match(table):
            self.store.set_table(table, {"key": "id", "fields": None})
            spec = self.store.tables.get(table)
        if spec is None:
            raise UnknownTable("no table %r" % table)
        handler = self.handlers.get((table, op))
        if handler is None and not self.any_table:
            raise ProtocolError("table %r accepts no %s from clients: the backend has no @on_%s('%s') handler"
                                % (table, op, op, table), "no_handler")
        try:
            check_key(key)
        except ValueError as e:
            raise Invalid(str(e))
        data, encoded = self.clean(table, key, m.get("data"), spec) if op != "delete" else (None, None)
        with self._key_locks[hash((table, key)) & 63]:
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
            seq, record = self.store.apply(table, key, op, data, ledger=(state.jti, mid), encoded=encoded)
        return {"ok": True, "epoch": self.store.epoch, "seq": seq, "record": record}

    def _call_handler(self, handler, data, ctx):
        fn, wants_ctx = handler
        where = "the @on_%s('%s') handler" % (ctx.op, ctx.table)
        try:
            result = fn(data, ctx) if wants_ctx else fn(data)
        except DSNError as e:
            if e.code in _HANDLER_CODES:
                raise ProtocolError(e.message, e.code)
            log.error("%s raised DSNError with code %r for key %r; a handler may use only %s, so the "
                      "client gets handler_error", where, e.code, ctx.key, ", ".join(sorted(_HANDLER_CODES)))
            raise ProtocolError("the backend's handler failed", "handler_error")
        except Exception:
            log.exception("%s raised for key %r", where, ctx.key)
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
        for m in mutations:
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
    comes back.  For a ``_Wait`` it stores its own handle in ``wait.conn`` and
    calls ``_Feed.park(wait)``; from then on the feed thread owns the wait and
    answers it through these methods, each called from the feed thread only
    and each of which must return at once (never wait on a client):

    - ``deliver(wait, body)``: send ``body`` as the whole 200 answer, then the
      request is over (the connection carries on or closes, the transport's choice).
    - ``chunk(wait, body)``: send one message of a streamed pull (PROTOCOL.md 6);
      the first call sends the headers.  True if it was taken; False if the
      client cannot take more now (the feed tries again later, with the
      latest state) or is gone (the transport then closes it).
    - ``end(wait)``: finish a streamed pull whose ``wait`` ran out.
    - ``alive(wait)``: False if the client went away (the feed drops the wait).
    - ``close_wait(wait)``: abandon the request after an unexpected error.

    A transport may rely on: one feed thread; each wait answered exactly once
    (``deliver``, or ``chunk``s then ``end``, or ``close_wait``), or dropped
    after ``alive`` said False or ``_Feed.stop``.
    """

    def deliver(self, wait, body):
        raise NotImplementedError

    def chunk(self, wait, body):
        raise NotImplementedError

    def end(self, wait):
        raise NotImplementedError

    def alive(self, wait):
        raise NotImplementedError

    def close_wait(self, wait):
        raise NotImplementedError


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

    Capped twice: ``max_waiting`` in all, ``max_waiting_per_user`` for a token
    with a ``sub`` (one user's tabs); over a cap ``park`` raises _HTTPFault(503).
    """

    # Seconds between two messages of one streamed pull, per parked pull: about what
    # one message costs the feed thread here (seal, send: 30-50 us), so a thousand
    # streams are answered at most every 50 ms each, coalesced to their latest state,
    # and a hundred every 5 ms.  0 sends every change to every stream.
    stream_spacing = 0.00005
    sweep_every = 0.25  # how late an expired long-poll may be answered, at most
    liveness_every = 2.0  # how often departed clients give their slot back
    retry_busy = 0.05  # seconds before a stream whose client is behind is offered the latest state again

    def __init__(self, engine, max_waiting=10000, max_waiting_per_user=16):
        self.engine = engine
        self.store = engine.store
        self.max_waiting = max_waiting
        self.max_waiting_per_user = max_waiting_per_user
        self.stopping = False
        self._parked = []
        self._by_jti = collections.Counter()
        self._have_parked = threading.Condition(self.store.lock)

    # -- for transports -------------------------------------------------------
    def park(self, wait):
        """Hold a pull until a change, a schema change, stop() or its deadline; False if already stale."""
        store = self.store
        with store.lock:
            if self.stopping or store.seq != wait.seq or store.sv != wait.sv:
                return False
            if len(self._parked) >= self.max_waiting:
                raise _HTTPFault(503, "too many long-polls held")
            jti = wait.state.jti if wait.state.sub is not None else None
            if jti is not None:
                if self._by_jti[jti] >= self.max_waiting_per_user:
                    raise _HTTPFault(503, "too many long-polls held for one user token")
                self._by_jti[jti] += 1
            self._parked.append(wait)
            if len(self._parked) == 1:
                self._have_parked.notify()
            return True

    @property
    def waiting(self):
        return len(self._parked)

    def stop(self):
        """Drop every parked pull (their transports close them) and wake the feed thread to return."""
        with self.store.lock:
            self.stopping = True
            self._parked = []
            self._by_jti.clear()
            self.store.changed.notify_all()
            self._have_parked.notify_all()

    # -- the feed thread ------------------------------------------------------
    def run(self, transport):
        """The feed thread's body; an unexpected error is logged and the loop carries on."""
        while not self.stopping:
            try:
                return self._loop(transport)
            except Exception:
                log.exception("the feed thread hit an unexpected error; it carries on")
                time.sleep(0.05)

    def _loop(self, transport):
        now = time.monotonic()
        next_sweep, next_liveness = now + self.sweep_every, now + self.sweep_every + self.liveness_every
        next_due = None  # when the earliest stream held back by its spacing may send again
        with self.store.lock:
            seen = (self.store.seq, self.store.sv)
        while True:
            if not self._wait_for_work(seen, min(next_sweep, next_due or next_sweep)):
                return
            ready, next_due, seen, spacing, now = self._take_ready()
            if now >= next_sweep:
                next_sweep = now + self.sweep_every
                if now >= next_liveness:
                    next_liveness = now + self.liveness_every
                    self.drop_departed(transport.alive)
            again = self._answer(transport, ready, seen, spacing, now)
            if again:
                due = self._repark(again)
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
            ready, keep = [], []
            next_due = None
            for w in self._parked:
                if w.deadline <= now or ((w.seq != seq or w.sv != sv) and w.due <= now):
                    ready.append(w)
                else:
                    keep.append(w)
                    if w.due > now and (next_due is None or w.due < next_due):
                        next_due = w.due
            self._parked = keep
            # A stream's messages are spaced by stream_spacing per parked pull: the
            # server answers each pass within its means, and a subscriber gets the
            # latest state at that pace instead of a backlog of every change.
            spacing = self.stream_spacing * (len(keep) + len(ready))
            for w in ready:
                self._uncount(w)
        return ready, next_due, (seq, sv), spacing, now

    def _answer(self, transport, ready, seen, spacing, now):
        """Answer each ready pull; returns the streams to park again."""
        engine, store = self.engine, self.store
        shared = {}
        again = []
        for w in ready:
            try:
                if w.stream and w.deadline <= now and w.sent:
                    transport.end(w)
                    continue
                view = engine.view(w.state)
                # Rules see every claim, so only pulls of one token (one view) share their answers.
                group = (w.seq, view.tables, id(view) if view.rules else None)
                found = shared.get(group)
                if found is None:
                    found = shared[group] = store.changes_since(w.seq, engine.page_size, view)
                if not w.stream or w.deadline <= now:
                    transport.deliver(w, engine.answer_wait(w, found))
                    continue
                if transport.chunk(w, engine.answer_wait(w, found, w.sent)):
                    w.sent += 1
                    w.seq, w.sv = found[1], seen[1]
                    w.due = now + spacing
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
            if self.stopping:
                return None
            for w in again:
                if w.state.sub is not None:
                    self._by_jti[w.state.jti] += 1
            self._parked.extend(again)
        return min(w.due for w in again)

    def drop_departed(self, alive):
        """Give back the slots of parked pulls whose clients left (``alive(wait)`` says False)."""
        with self.store.lock:
            parked = list(self._parked)
        dead = {id(w) for w in parked if not alive(w)}
        if dead:
            with self.store.lock:
                gone = [w for w in self._parked if id(w) in dead]
                self._parked = [w for w in self._parked if id(w) not in dead]
                for w in gone:
                    self._uncount(w)
            log.debug("dropped %d long-polls whose clients left", len(gone))

    def _uncount(self, w):
        if w.state.sub is not None:
            jti = w.state.jti
            self._by_jti[jti] -= 1
            if not self._by_jti[jti]:
                del self._by_jti[jti]


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
<a href="/dsn_client.js"><code>/dsn_client.js</code></a>, over sealed POSTs to its sync URL.</p>
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


def _content_length(headers):
    """Content-Length as an int; ValueError unless it is plain digits (int() would take '1_0' or '+1')."""
    value = headers.get("content-length", "")
    if not _DIGITS.fullmatch(value):
        raise ValueError("bad Content-Length %r" % value)
    return int(value)


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


class _Conn:
    """One client connection: its socket, unparsed bytes, unsent bytes, and where it is in a request.

    One owner at a time: a worker, the reactor, or (while it waits) the feed.
    ``out`` is what the socket has not taken yet; the reactor writes it when
    the socket is ready, then does ``then``: "read" (keep-alive), "close",
    or "stream" (a streamed pull: the feed still owns the request).
    """

    __slots__ = ("sock", "raw", "tls", "buf", "deadline", "head", "started", "bytes_in", "served",
                 "lock", "out", "then", "reserved")

    def __init__(self, sock, tls):
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


class _Server(socketserver.TCPServer, Transport):
    """HTTP/1.1 keep-alive on socketserver; no thread is held by an idle, slow or waiting client.

    Remember (who runs what)::

        accept thread   serve_forever -> process_request     files each new connection for a worker
        workers (32)    worker -> _service -> _read_available -> _next_request:
                            _read_head -> _refusal (PROTOCOL.md order) -> _dispatch
                            -> engine.handle -> _send (or feed.park)
        reactor (1)     reactor: idle and half-read connections wait for bytes; unsent
                            answers wait for the socket to take them; deadlines cut both
        feed (1)        _Feed.run -> deliver / chunk / end / alive  (this class, as Transport)

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

    def __init__(self, address, engine, feed, static, ssl_context, max_connections, max_body, allow_origins,
                 idle_timeout, header_timeout, body_timeout, workers=32, ipv6=False):
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.engine = engine
        self.feed = feed
        self.static = static  # callable(path, method, headers) -> (status, body, extra, type) or None
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.workers = workers
        self.bytes_in = self.bytes_out = 0
        self._buffered = 0
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
        if allow_origins in ("*", None):
            self._origins = None
        else:
            self._origins = [allow_origins] if isinstance(allow_origins, str) else list(allow_origins)
        super().__init__(address, None)

    # -- the accept thread ----------------------------------------------------
    def process_request(self, request, client_address):
        """Called by the accept loop: file the connection for a worker; never blocks on the peer."""
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        request.setblocking(False)
        with self._lock:
            full = len(self._conns) >= self.max_connections
            if not full:
                conn = _Conn(request, self.ssl_context is not None)
                self._conns.add(conn)
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
                    if sent is None:
                        continue  # more to send: keep watching
                selector.unregister(key.fileobj)
                del watched[conn]
                if mask & selectors.EVENT_WRITE:
                    self._after_flush(conn, *sent)
                else:
                    self._work.put(conn)
            while self._handed:
                conn = self._handed.popleft()
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
                if sent == len(out[0]):
                    out.popleft()
                else:
                    out[0] = memoryview(out[0])[sent:]
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
        if len(conn.buf) < length:
            if not conn.reserved and not self._reserve(conn, length):
                raise _HTTPFault(503, "too many request bodies in flight")
            return None
        body = bytes(conn.buf[:length])
        del conn.buf[:length]
        self._finish_request(conn)
        return self._dispatch(conn, path, body, keep_alive, origin)

    def _read_head(self, conn):
        """Parse the head once it is complete; False while it is not.  _HTTPFault(431/400) on a bad one."""
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_header:
                raise _HTTPFault(431)
            return False
        if end > self.max_header:
            raise _HTTPFault(431)
        conn.head = _parse_head(bytes(buf[:end]))
        del buf[:end + 4]
        conn.deadline = time.monotonic() + self.body_timeout
        return True

    def _refusal(self, method, path, headers):
        """The transport answer for a request that never reaches the engine, in PROTOCOL.md's order; None to go on.

        (status, body, extra headers, content type).
        """
        if method == "OPTIONS":
            return 204, b"", _OPTIONS_HEADERS, None
        if method in ("GET", "HEAD"):
            return self.static(path, method, headers)
        if method != "POST":
            return 405, b"", "Allow: GET, HEAD, POST, OPTIONS\r\n", None
        if not self.engine.known_path(path):
            return 404, b"", "", None
        if "transfer-encoding" in headers:
            return 411, b"", "", None
        try:
            length = _content_length(headers)
        except ValueError:
            return 411, b"", "", None
        if length > self.max_body:
            return 413, b"", "", None
        return None

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
                if not conn.reserved and not self._reserve(conn, length):
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
                reply.conn = (conn, keep_alive, origin)
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

    def _reserve(self, conn, length):
        with self._lock:
            if self._buffered + length > self.max_buffered:
                return False
            self._buffered += length
        conn.reserved = length
        return True

    def _release_reservation(self, conn):
        if conn.reserved:
            with self._lock:
                self._buffered -= conn.reserved
            conn.reserved = 0

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
        data = head.encode("latin-1") if head_only or not body else (head.encode("latin-1"), body)
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
            self._conns.discard(conn)
            self.bytes_in += conn.bytes_in
        conn.bytes_in = 0
        self._release_reservation(conn)
        try:
            conn.sock.close()
        except OSError:
            pass

    # -- bookkeeping ----------------------------------------------------------
    def connections(self):
        with self._lock:
            return len(self._conns)

    def cors(self, origin):
        # Nothing here rides on cookies or ambient credentials: every frame is
        # sealed with the token's keys, so "*" exposes nothing a caller without
        # the token could use.  A list narrows which pages may read answers.
        if self._origins is None:
            return "Access-Control-Allow-Origin: *\r\n"
        allowed = origin if origin in self._origins else self._origins[0]
        return "Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n" % allowed

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
# DSNSync: the public face
# =============================================================================


def _open_store(db_connection_string):
    if db_connection_string is None or db_connection_string in ("memory", "memory://", ":memory:"):
        return MemoryStore()
    if not isinstance(db_connection_string, str):
        raise TypeError("db_connection_string must be a string such as 'sqlite:///path/to/dsn.db', got %s"
                        % type(db_connection_string).__name__)
    if db_connection_string.startswith("sqlite:///"):
        path, _, query = db_connection_string[len("sqlite:///"):].partition("?")
        options = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        unknown = sorted(set(options) - {"synchronous"})
        if unknown:
            raise ValueError("unknown option(s) %s in %r (known: synchronous)" % (unknown, db_connection_string))
        return SQLiteStore(path, **options)
    raise ValueError("unsupported db_connection_string %r: use None (in memory) or sqlite:///path/to/dsn.db"
                     % (db_connection_string,))


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
    - ``max_body`` (16 MiB), ``max_connections`` (10000), ``max_waiting``
      (10000 long-polls held at once), ``max_waiting_per_user`` (16 held by one
      user token), ``max_tables`` (1000), ``max_record`` (1 MiB of JSON),
      ``max_batch`` (1000 mutations), ``page_size`` (5000 records per reset
      page), ``idle_timeout``/``header_timeout``/``body_timeout`` (75/10/30 s).
    - ``allow_origins`` ('*'): CORS origins allowed to read answers.
    - ``store``: a store object to use instead of ``db_connection_string``.
    - ``json_default``: converts values sync() meets that JSON has no type
      for; ``dsn_sync.json_default`` handles datetime, date, Decimal, UUID,
      set and bytes.  Without it such a value raises ValueError at sync().
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
                 certfile=None, keyfile=None, rotate_every=100, max_body=16 << 20, max_connections=10000,
                 max_waiting=10000, max_record=1 << 20, max_batch=1000, page_size=5000,
                 allow_origins="*", idle_timeout=75.0, header_timeout=10.0, body_timeout=30.0,
                 max_nonces=1000000, max_waiting_per_user=16, max_tables=1000, workers=32, store=None,
                 json_default=None, open_writes=False):
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
        for name, value in (("idle_timeout", idle_timeout), ("header_timeout", header_timeout),
                            ("body_timeout", body_timeout)):
            _positive(name, value)
        self.port = port
        self.host = host
        self.certfile, self.keyfile = certfile, keyfile
        if json_default is not None and not callable(json_default):
            raise TypeError("json_default must be a function such as dsn_sync.json_default, got %r" % (json_default,))
        self._ssl_context = _tls_context(certfile, keyfile) if certfile is not None else None
        self._encode = _json_dumps if json_default is None else json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=json_default).encode
        self._store = store if store is not None else _open_store(db_connection_string)
        self._store.open()
        if secret is None:
            secret = os.environ.get("DSN_SYNC_SECRET") or None
        stored = self._store.secret
        self._keyring = Keyring(secret if secret is not None else stored or os.urandom(32))
        if stored != self._keyring.secret:
            if stored is not None:
                log.warning("the given secret replaces the one kept in the store: tokens minted before stop working")
            self._store.save_secret(self._keyring.secret)
        self._engine = _Engine(self._keyring, self._store, rotate_every=rotate_every, page_size=page_size,
                               max_batch=max_batch, max_record=max_record, max_nonces=max_nonces)
        self._engine.any_table = bool(open_writes)
        self._feed = _Feed(self._engine, max_waiting=max_waiting, max_waiting_per_user=max_waiting_per_user)
        self.max_tables = max_tables
        self.workers = workers
        self._server_options = dict(max_connections=max_connections, max_body=max_body,
                                    allow_origins=allow_origins, idle_timeout=idle_timeout,
                                    header_timeout=header_timeout, body_timeout=body_timeout, workers=workers)
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
    def start(self):
        """Bind and serve in background threads; returns True.  Raises OSError if the port is taken.

        The process keeps running after the calling code ends, until stop(),
        Ctrl-C or SIGTERM (both stop the server cleanly when the program has
        not set its own handlers).  Starts every thread the server uses.
        """
        with self._lock:
            if self._server is not None:
                return True
            self._store.open()
            try:
                server = _Server((self.host, self.port), self._engine, self._feed, self._static,
                                 self._ssl_context, ipv6=":" in self.host, **self._server_options)
            except OSError as e:
                raise OSError(e.errno, "dsn-sync cannot listen on %s:%s: %s (another server there? port=0 picks a free one)"
                              % (self.host, self.port, e.strerror or e))
            self._server = server
            self.port = server.server_address[1]
            self._stopped.clear()
            self._task_stop.clear()
            self._feed.stopping = False
            threads = self._threads
            threads.start("dsn-sync-reactor", server.reactor)
            for i in range(self.workers):
                threads.start("dsn-sync-worker-%d" % i, server.worker)
            threads.start("dsn-sync-feed", self._feed.run, server)
            for seconds, fn in self._tasks:
                self._start_task(seconds, fn)
            # Not a daemon: a script that ends after start() keeps serving (issue: seed backends).
            threads.start("dsn-sync-accept", server.serve_forever, 0.05, daemon=False)
            self._catch_signals()
        log.info("dsn-sync serving %s", self.get_url())
        return True

    def stop(self):
        """Stop accepting, drop every long-poll, close every connection, join every thread; returns True."""
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                self._store.close()
                return True
            self._task_stop.set()
            server.shutdown()  # 1. the accept loop returns: no new connections
            self._feed.stop()  # 2. parked pulls dropped; the feed thread returns
            server.stop()  # 3. the reactor and the workers return
            self._threads.join_all()  # 4. ... and every thread is joined (tasks too)
            server.close_all()  # 5. what is still connected is closed, the port freed
            server.server_close()
            self._release_signals()
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
        return self._server is not None

    # -- addresses and tokens -------------------------------------------------
    @property
    def instance(self):
        return self._keyring.instance

    def get_url(self):
        """The sync URL clients connect to: ``http://127.0.0.1:3000/sync/<instance>``."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = "[%s]" % host
        scheme = "https" if self._ssl_context is not None else "http"
        return "%s://%s:%d%s" % (scheme, host, self.port, self._engine.base)

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
        while not self._task_stop.wait(seconds):
            try:
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
                    "GET /dsn_client.js is the client, <sync URL>/inspect the inspector.\n" % path)
            return 405, text.encode("utf-8"), "Allow: POST, OPTIONS\r\n", "text/plain; charset=utf-8"
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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("a sync URL looks like http://host:3000/sync/<instance>, got %r" % (url,))
    at = parts.path.find("/sync/")
    if at < 0 or not parts.path[at + 6:].strip("/"):
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

    def __init__(self, url, token, wait=25, write_timeout=30.0, ssl_context=None, on_status=None):
        import http.client  # deferred: the server never needs it
        self._http = http.client
        self.url = url
        self._scheme, self._host, self._port, self._prefix, self._base = _split_url(url)
        self._token_source = token if callable(token) else None
        self._set_token(token() if callable(token) else token)
        self.wait = wait
        self.write_timeout = write_timeout
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
        self._closed = threading.Event()
        self._wake = threading.Event()  # cuts the feed's backoff short: a write got through, or close()
        self._epoch = None  # the server's epoch as last heard (hello, pull), for judging acks
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
        """Block until the first sync is in; True if it is, False on timeout."""
        return self._ready.wait(timeout)

    def get_all(self, table):
        with self._lock:
            return {k: dict(r) for k, r in self._tables.get(table, {}).items()}

    def get(self, table, key):
        with self._lock:
            record = self._tables.get(table, {}).get(key)
            return dict(record) if record is not None else None

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
        self._wake.set()
        for conn in (self._pull_conn, self._write_conn):
            _abort(conn)
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

    def _exchange(self, conn, op, fields, at_base=False):
        """One request/answer on ``conn``; returns the answer dict (ok or not).

        Raises _Gone on 404, AuthError on 401, _Transient on anything retryable.
        """
        path = self._base if at_base else self._ep
        body = {"op": op, "t": _now_ms() + self._offset}
        body.update(fields)
        frame = request_frame(self._kid, self._c2s, path, _json_dumps(body).encode("utf-8"))
        nonce = frame[3 + len(self._kid):][:NONCE_SIZE]
        sent = time.time()
        try:
            conn.request("POST", self._prefix + path, body=frame, headers={"Content-Type": "text/plain"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, self._http.HTTPException) as e:
            conn.close()
            raise _Transient("network: %s" % (e,))
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
        while not self._closed.is_set():
            if self._pull_conn is None:
                self._pull_conn = self._connection(self.wait + 15)
            try:
                if need_hello:
                    self._epoch = _raise_for(self._exchange(self._pull_conn, "hello", {}, at_base=True)).get("epoch")
                    need_hello = False
                if pages is not None:
                    fields = {"since": None, "next": pages["next"], "wait": 0}
                else:
                    fields = {"since": self.cursor, "wait": self.wait if self._ready.is_set() else 0}
                answer = _raise_for(self._exchange(self._pull_conn, "pull", fields))
                pages = self._on_pull(answer, pages)
                backoff = 0.5
                if pages is None:
                    self._set_status("online")
                    self._ready.set()
            except _Clock:
                continue
            except _Gone:
                if need_hello:  # 404 on hello itself: a wrong URL (PROTOCOL.md 5: back off, report it)
                    self._set_status("error", "wrong_url")
                    self._pause(backoff)
                    backoff = min(backoff * 2, 30.0)
                need_hello = True
            except AuthError as e:
                self._set_status("error", e.code)
                if not self._refresh_token():
                    break  # a 401 is final for this token (PROTOCOL.md 5); writes keep raising AuthError
                need_hello = True
            except (_Transient, ValueError) as e:
                if self._closed.is_set():
                    break
                self._set_status("offline", str(e))
                self._pull_conn = None
                self._pause(backoff)
                backoff = min(backoff * 2, 30.0)
        _abort(self._pull_conn)

    def _pause(self, seconds):
        """Back off with jitter, unless a write proves the server is back (or the client closes)."""
        self._wake.wait(seconds * (0.5 + _jitter()))
        self._wake.clear()

    def _on_pull(self, answer, pages):
        """Apply one pull answer; returns the pending reset pages (None when none)."""
        self._epoch = answer.get("epoch", self._epoch)
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
            for table, key, record in answer.get("changes", ()):
                acked = self._acked.get((table, key))
                if acked is not None:
                    if acked > seq:
                        continue  # our own write's ack is newer than this state
                    del self._acked[(table, key)]
                rows = self._tables.setdefault(table, {})
                if record is None:
                    rows.pop(key, None)
                else:
                    rows[key] = record
                touched.add(table)
            if "tables" in answer:
                self.schema = answer["tables"]
            self.cursor = {"epoch": answer["epoch"], "seq": seq, "sv": answer.get("sv", self.cursor["sv"])}
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
            m["data"] = data
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
                        except _Gone:
                            e = _Transient("404 on hello: is the URL right?")
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
                try:  # acks carry no epoch: learn it, so a new epoch's low seqs are not taken as old
                    self._epoch = _raise_for(self._exchange(self._write_conn, "hello", {}, at_base=True)).get("epoch")
                    answer_epoch = self._epoch
                except (_Transient, _Gone, AuthError):
                    pass
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise DSNError(err.get("message", "refused"), err.get("code", "bad_request"))
        record, seq = answer.get("record"), answer.get("seq", 0)
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
                else:
                    rows[key] = record
                self._acked[(table, key)] = seq
        if not stale:
            self._notify({table})
        return dict(record) if record is not None else None


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


def _abort(conn):
    """Close an http.client connection, interrupting a thread blocked reading it."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    if conn is not None:
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
# test_packaging.py fails while they differ).  A file beside the module wins.

_EMBED_NAMES = ("dsn_client.js", "dsn_inspect.html")
# -- embedded: begin
_EMBEDDED = {
    "dsn_client.js": (
        "eNrdvel648aSIPrfT4HyeEzARbEIcJFEWtYnV8mn3LWoWpKPT49aFkESlGCRBE2QpdKR1d+9v+4r3XmJmVe6seUGgJK89f16"
        "6nzHIpDILTIyMiIylhdffeZ95Y3z+cVomibzVePnvOetrhJvuMxu8mTpxfOx9z4bJx6Xe9kEv97Kb+ejupcvkvg6nV96N+ky"
        "8RbLbJWNsim2+DFZ5mk290LP/3B8dHr08uhtYzb20jk1rlrwlskiy9NVtrzte+kq967n2c0c+sxvoL4XQ6PpnJsbwUf5C9XF"
        "xccQRprNgwaU4gf4L50tsuXKu/NG2XwOFV6dvPfuvckym3m1xgtnjrW+qgTf5is1uT2rql+7Wq0WvRcvwmi70YT/hb1Ws9l8"
        "geN+8XUKteL5KPmmVvdW2XUyD0yL3Ek2fxWv4pdX8fwy8WtrgGUO3/rxdBp4e9/AzOfjZEmPpmp8E6dqMI3RMolXVlX6cdFs"
        "tuH3nTePZ0nPqx2M45p3Ty1gI9+vvOskWQDovFm6XGZLXC+E+CoeTpOcf+JwvVl8C2OIx3Vvkoy94S3UmGbzy61FNp3Cr2zh"
        "+Tfp6gobtWCyXk5lvjiGfAUtzABflusEBlHHZvgdNLlYT6eAS9k88bJFohbVG8XLZQojibHlPImn8OksyfP4EhAIywlg3nq+"
        "SqeEEgOEycBbrue5l61XfaiU0DyyxQowDHpFFI0JTaB8mH3COd8s0xXNN14RGsWLBUB1DGOnugIcKMxgET0f25ql+SodwYLc"
        "BtRkjhjB6JctYa3qXhKPrjyECgArJ4h6s/UqxmF4KUCSB027Jx4BjGBYo1GygElAX8tkAgtISzBr0FoBTPQ2swcF9Wh+PJlp"
        "+hF3AXw+Tj4l41ffwmgBpmNArmGcM9CgBdhw2KjCyzoDfvgzLByMNVvyhzRoAFme0eLnalUUIOLJCp+gcJohbiQfEwIATRoH"
        "xT15Y9imDHgB9CwGEpFNJtMUukWAE/SST/FoNb3ltm+uAAsAvZfJar2c5wSDH68S+NZMLYWW0jxHkuIj1YGhWpCB0msAJ0Jj"
        "lsyAaDSkgRS7guXLveF6he1qYGeMfD4sGIwW4Ak4kCG40+V4axEvV7dAIABf60C90o+w33hFYAAwPW8COOyN0/w6qGOrDw0F"
        "usoYItn8BHBinUOPtzlCOqP1ULvpDhZoBc8jmB5s4Hl2sUBama8S+Ay2tmyG+x4Cf3kLI0X6mi2v87o3z/gxXy8/AlrkeqUU"
        "GWRw4DiFoiE2jKHmBMYMxPNyCa0DdiJxRTTLsikMcQ1oHTNxAPxZEK3tWYRVEaT1ModmPO8OqPboCrAo+QX+8xGGepXdeJPY"
        "QeMraHECxCS7ScYW6tRy1Wrxn+z8SZKM+94cIa+IALWFdBcXj/Yr4aNGmzpTk6p/DB5vkgIUeBS4F8aezAXbzWD3yuzN4mKt"
        "ZBwUIJCPYPPGCAHaSD3v7jq5BeCmyXSc39+rZmSTTGM4WcZJPlqmQ+gyBdp1d+8NE1iLpHRYnMD0fF8tER0RjUYjgE/0su15"
        "dzxsQFYgLoAI9/oXFELPm6AwX8+GCZ0Fv6yTdaJ2bd9DcqeAioCg7TYXMkD4R3R8U7uKejBxrUsNalzKkjEhml3AQ+hvXjEi"
        "D0hM/ECQ8FvAe+8yWa0UV4DEayubT2+JWblVA4Gz/p8wfCZ7gPU3V+noyt4OwG9M41FCOLiMoQBRNp4L7uV13q4J723iHJJ4"
        "CVWBxAIqTnlL3+ChAliZxylh9lztvmM8o4AiCFHPgezQSZyN11PY8fEUWqdGY9zIuCDL9DKdy06HwQFoAGVSrPTy6PgE2/w8"
        "B7ZmmqjCz/lsgk6IKQt3nzOh9MIdJtJbW8knICjpDKYbT7cup9kQ/twkw9HydrHKiI4hMeDHBgD1GBrMZn+Pp9B+0PCOYPqT"
        "FMc7zwB7Eb+AMqUJkR/hsXI147fxLcyzDtvlxpvCLKZQdZmv4EV6DXToJklW83g07QFngKcEDn1J3c0Bofu0MkB3Z+kKqVmd"
        "EGTFJw7BCcrTJdOweDkmYkonurWiBFQij3jAAGrIxPL1cAVgQ1gO8SzCNuEUWCCfARse0ABgKByel32kU+/twfug5528PtiK"
        "Ol3P/+77DycA1+ZWG46h1+8OXm5BEZUcf/fSi8Jmm4+F129efecUdXa6u1DlTTIaxddbk7Ow22ye0+ThqzeHpvGoGQUMhWQO"
        "wIOjCr/i6cOhlLvMcw5IDaxG7oVbLakmBIuIGnzNR1HdUEb5TKgMNPzis89efPWVdygIB6dkPKWRTeJ0uqazA89gwljizmGx"
        "+96ggafVAKHJS8ZceC33EuofSwnAg2WCWy8ZD+reIJ1/jKcp/eTTGX4RTUO2FLmTiTU4aAtZf3+wnsfr1RXsjH9iK9jqYDTN"
        "cm5yGI8viP3EBzg6GZlUCcBgAfBJBoDGMFPYCCgPjIAO5x5wr4c01uQTYBjgEj/dfSYiwHKNp56PM9FncEDFHhyQsKN8xaX+"
        "+ivNF3lu+IfwaiAzDhS4pjqpWWX4LQkW4wTf3n92j0vg7f2J/4hEVmwwfP/n9ULIw+LSCoB4OMcpLWFq8+TGOzVvfICM+exV"
        "UvxM3oBgs5ps7ZAwMwFmdqrliP5nn03Wc8J1D77Z8bEdXgs+HOz+Gwn95W/6CFxdFwYxilcEGB/wDrm9nJuZJiv4//wS6OWe"
        "18RlQZLo86jxO8RN+V6+e75HLxr82Fdog1y6zO2HdL7aOVgu41ufPyIMwa7gKMuT1eNdMbZBiw343MeXdakryCYNlcdyb2CD"
        "MpIDhnXY9ecO+MxIG9nEn3vffPONtwPk3fvSizqdAhTXregJ1aM2yLb8M+wG3JB+s6NfVHexyl4nn3w6Isz6MGBrNQ0yfJkS"
        "EOHP13yiKBB46fPnAVUB2HBLZ+k5fBV2vX2v1qx5wGrXAu+5p8oaq+xktQTOyYfx9h8AHx5EOLyr5BMPLp14+CBde//di5Ak"
        "vDj7qbm1G29NDra+O3/RgE5WVCUAKgDsAGP/7SIh+uAD7QKuNvnU8764+5eTo/eNnMaSTm6p6XyajhK/WffazSC4HwSPoJs1"
        "mhdeFGyCGCJWEV4IJcKmPPl+vuLO10MYjR+hNFmH5upeNYR4QN922z9cHLz98Prg28NTXLCDb1++Ovzub6+//5c3b9+9P/rw"
        "r8cnpz/8/cd//Nv/iIejcTK5vEp/vp7O5tniF+AU1h9vPt3+sxlGrXanu72zu3VR69st//3g7Q+HJzJlGGHY5SmH0U7QADZl"
        "6m+FMLiq6XbbMk2roTNnuA1g+5YvgXocrPw0QECkfT4fUbLuttfLKTFVCPRFPCY+mw74dre9o45jr4MqCPdgVFLxdTpmmjyD"
        "H3QmabQaQvNMwv4g4iPGtxTtYMjNPWcTfE1b8lfPV+9gG4Tn3v6+1wywdIcKTVkkZX2rSYQUSiDvgGluzNK5D/udfo+SdOpL"
        "ywoJt7w0AOyBdl943UDa0VMZ8VRGMBVqFX5am9dZoDMhID5wt1teF3VRAdKSbut8A9XDxcN9PVr1APC31EM8QmkGvsjTMQvH"
        "8XRxFQ8TJK/I98mwibUEHhfn4vGGRMlTRH/k6eFbvYfLy8kHm3VaIaXAJ0Mq2ngee2E1UaghUdCY1yNeO89TVDNxA7XHCAGt"
        "yGSaQWNOx1/BMsBa7AT6SBqiak0OJHz+iOy//SJzjqsCClptyx6z0U84HvrI2WE2Qn0UnghpdLQDRNrepVhwDiR7K+QqCMiP"
        "8GXzAWpqAa5EU3EosBWCe1R0fXGXCkn19LR9n3/BbqCt8hGxrPlpQv/4U4IYIGjXDIlefbOHiM7zl6+24FVfXiCNzZ4/R+Ii"
        "fSBC42dyKPKH95vR+eXVen6N8rDX7dQ7rS4TANbS/5gMvZck8HgHH77Xaq9ZRppz4rJRxCdcZbgfH7x/dfTu4uXrH96/gTF1"
        "O9CiEL3BfCBymhK+UExaAQLMgDt/efLh+P3f+monKFYXsVbYcDhfFbWEjmnbDJNRDCOCfTMnHYNIv0qrlcTXsDNvsvV0DEIz"
        "PDmykLvDuA/m5oQfEXSj+R+xqnPPY4n3lFhvKunLTnzmfAhH9goQCKBqvy7Kw94z2K41NYaaWmeDhFVgqHs1fcExTxI4AqqF"
        "bdpaiC8Em7wuml8QshTYSfE1x1Wsec8FoWpK3u+hTvxpQj+SOWQcS7ABeKFiIV0m/udzVEjy68+Dhq4cMNW5f5jyzDdyHXM5"
        "o2zECx4Euk8c8HoYU8tp3Rw68zq25TYVVPEmf4GAVaUW+AsErBcvvBNhLNqNqBHxPietiteKmL6I4DzBkw0+BAmeBAgtUK+H"
        "ILtnmX6DjXIL3TbpW+CoFnLAaosLJAXAXbUizdYDTJuf2tFOHE12QTZoftoOW9vt9m6Iv4edUXMyHE3wd7I77IyHcQd/t3Y7"
        "3VHUGeLvzu4kDMMJfb8btSY7UdzG3/EwHHWScadOPYx3mttxzD3AOdDqDJtUI2q3wp3OMKGWOs3R9njUolFEw6Qz3qaWdprj"
        "ZBhO6Jvd4XjU7Mbb+HsU7g4nIXxDPSTt3WF3d0StJpNh0t7e6eLv5gS+G4+63FtzFIejEf0eJ7vRqEtza8fb7Z12HNMoRsNm"
        "DBVoFF0Ays445h52d1pJJ+xENLudVjjqdscEpWazFW2PaG7DSWd3ezLi8XWTZnM4ofmMO/H2btim983uKO62OjTSsB3tRrvd"
        "be4h2h5uN+MdgnGUhMMobFGr7TGMdDyhMXVaLQBISK12O814u9Vp81i7cTMe0prshKNotBsxxKLtKBrtyDrE0XCS7MQhzyGM"
        "u9021RhF7eEOdE6/t7ujThjzuENoZifcpd/d3d1mN6LeJu1m0urwSENYkLgJdamHcDduj8KQ4B0mLWirSXOIAMTb222aQ6s9"
        "bA5HQ8GlcNQcDam3djLeieM2r8NwdzSK27Q+3Z0o6U4AktQDNARYltDstnfiTrfFq7jTHu1s74SMM6PRdjPinnebwwSOd2o1"
        "bncA/AnNGd7uxq2JrNV2uL0zQaHK3pqdRqvR+h1bM/9lTerrys25U703XzerNycs627S7dIwh8Pudpww2FuAX5PWNqNjpz2Z"
        "dFoMuLCZdKLtCW+XZqe7s0NADyc7rfFuzJt2mDRHsLY4XWcQ3749ekn8QpsBcYrKR1GI4a0I6QthQkoo6iLtqns5sH98vcwq"
        "bm6t5w1G2WyBlxoD1DVPSUjCZvlSMl0p5gXPUDhr59k6J0aGFPTAoq9uMo84HdTcTuOFXALjeXkFx1ROhypwV90tZGiwZaic"
        "jfiqFoZJS4XqRlTrejNgQ3JqE+9IlfKvsAw/GiFUVsLvtgNhnb6fj5YJn77qoIBJ4udc2w8a68UYr/Nj/WsYNMbpJeoJggEz"
        "aKSoFEVyUTFpWA84vF/DWDR2iLbA1kcO15OJ1rlZp7S9mOXvYaGE55fXrooMjlXPw8kezGF51M2Ago8y7chRFUpXnD2+KEEW"
        "ZpjgpdIwz5Z4EYa3IPFSVPP0Crv8Su5J6boIL9pH2eLWu8xwkeeaI4XNQ2tWw/vXWzQzAIRhda9HNXxXFlndpHOBg1oJmSAU"
        "NF6Too1Bar9neJhCfi5/QRBzIGh9oqFnwZKLlRYTvtKAFaTAa301A8NIlZYE+Cn80mmVpE17LEYqEVgAmtsivLO1t9x51O32"
        "AyXMWJ8QcOgbzanBIYFd0J29PYyK2gA4mAJ+rQpxos5zcTbASjroq6EIHzk9KNJiV69rdcZGjL83WgriWF3K97ULcGZp3fG4"
        "nePXwK2Wd1kF4NLAjK84OqtX1Ku4CCRT1zvTHE9hIzQqq9gL8XSqe/9MllnOJhXd9ha80jRcesDLSxRNras4j6xKxG5mCET0"
        "2lMwpbtifE1kl6Xb16gLo9PwcguvpuO5KKzoyBCDlDTndvMFXeHhbfMNXvDJPlZk0dnJmqZZEOrrfTKv3oj8dDZnARxZRrNX"
        "5t43XmEL2II8LxapGAGx50E1jpXRa15EqWJL9XKv9mAJP1Dpbilz7K3/AnmmJv8Lgqc25jTx9deoMUQ9RLPcQDtwLq82zPMB"
        "UbAVFTV+fPUBf772duCP0Repdm6ypaakr89W57bypI3aN1w9+ojvGvqmhHWZVmnYdUsjp3THLWypQnvBbFmyYnN1WSxD9gQ3"
        "ESoLeVvAYTfgG5oB8hgDwvuBPpsUJPGtvtdxUPxHc6z/aIP5tYbNZsDitCsg+zN8oW6NPJq1gu2PZwRV0fv+THriqG2pgn9m"
        "0Br1sXkdnWu9sXnZOi8RUjVGGpyo5KuWP+zARzAgQL+wo1dfCiNdFhWK8vRyFjdJfYdN4Ppu00jxCafTCQLvJ6s03LGLwzYX"
        "q9JWUNF8yM1HXF+aj6i6bl0Kd+3ClrQtZYY+KLhL689lbtvn8FMmpN6F3XNs0qEmCNIY6r8+a57XvSH9CuHXiH5F8GtMv1rw"
        "K6Ffbfg1oV8d+HVJv7rw64p+bZ9vxqkNy3Vi4MLaTEYP0p5GXQEKl4ShVRQ6RbA4umg7KID+JQ4Oyr70JlTnP/DnZeGjUxrD"
        "FR7VCpYvr8zB/QYBTaC0oehMgnEn5vHQcGIijk0ZKZfAWuoiWGS7KLJqwRoXBvguxu0HpV96Q6qFv0b0a0i/CvNBTPdPFA5A"
        "bWfcCJLLPi3gpE8rmvRpiX1gpgAYzseIBKM+YcWwT2gS9wlv/FOE02lUQixEKCynv8+9mD8g7OLXIb4e6teRvI7w9Ui/bsnr"
        "Fr4eW70gInJRG4sSXaMjrzv4eqJfd+V1F19f6tfb8pr2y5Vu/965swWxE1l9w0wLSa8SyOgjLYn9VdrDavMhEnaqzYf+CtXi"
        "V+441miBLuZut3WSiRdkE6wENRTIGp4arZbt4df6EsGFknpPGcaqA47uzJXCPAfI5+vpimQ4zUDm3hvYAyl0RgDAhwwfRsgs"
        "svGdY3RMw9NyoWJZifsESRPVK0o8RGN0EOOVtgXNl+2BkUUMFMYwoQ4f3WRoBeNcxZd1bXqNYKhZKgNgTN8lcb5GllyZ3kVN"
        "ZqRJg5BNsGVoNpJm8WU6XwB/dIMsLo2v22iiQXIEf9a557eARYe/epYEe7KjJjt46L2nbDqXaBYok7pEwzWQnQeMsgMa9ECx"
        "DQM9amD8lbkwtkeAF2N5NIlGe9MN0ODRhs1GB4fbbQCmAADeJMmCkAVbgxXh61IYyDpHI08cVl+NV1uzjVF89wezeIQ20cnR"
        "REyzWNXxGt/TVn0D7RU1HtBHQQIgLuspSg36knhfaERxvQVuf19RCeqnh1Mq8q3WLYZdVa48qRO8YP8JJYtW12Kb0/lcq1+K"
        "9IYX4g/1BPsF9dFWh8CrPqlDBgyLIoHD3SIa+2/qHt9eA2fg+2pfBnhZJs+peqbvUE4kncwAH5V9IMt2bH2VzLXObUCa0AGc"
        "2CAt8kYiY1wQiVA5iNqbNBkrXQ6ghu+YRTEOKMgaMDdY62MBtNK2ir8VkOC7oCRKMxSlPfUp11PHg31QaFs+l6qqS5hN02eq"
        "OwB0G9Rt/WYdAfIvJ7jRbolO0b5ic3c8ImowicuMrh7Xl1cegt01HSWVGOxRNpodOJtr4N6lXukyn2irax1nHZZOI7RTGmZh"
        "XDspNrjly2gR3V+88A7I+FYbX8ARgkamABxEmLznbbLIdcykrzLUXl2hjw+2ifRtSu9Qt1i+0xyuyYzDMQRumHmVKuzLN5ZV"
        "E7/AlZBN9WMSX7+LF75S+KIyg+eKpAvRDoncG1pUtpFWi6fIJas+3HXgbl5zTZ+f6h4/GoMgrL1nDQnvS335SF9uW9TS/r7B"
        "g8Hma8v4pqZat1zISJ1aJx0OPIn2uubdg9QQT3MYz1kN5JI5XmvDNk0nt7Vz2TvWkHI9pLqmpJY9A7zqV20Whc2u0fZNwanH"
        "x130MfHYOBdP9WU89VZ4V6JOnHyRIMB57/3LCdsXz71pvLzUFxWo1kpgRt7A4D9sjOMkz6Yf2VkIFVesrYJliukGv2LTHGAB"
        "7xzDYtqIo8GvtkOfMdcy11CmGsDyJLPF6pb5CISTYbjwKL9BJquhVlmaB/prHWzI3zW1PrS4t2mEfXdbW6cnuxwKsuA6+woh"
        "7JIiiuISS9OBMVQBRitGO3S8CoDFYQ6BLwqQASRHMFogHniuKD+85SVn65NxSqorZ6ckv6zjKRt/xHWUQpR9lVaOoqXGUCms"
        "1WQJg5VJE7eLblYP2TbFrmGTVelXEKLoFPaG8McCqd3wHjV9X7g+e3v4/m+nqMZpRUJAFKOvuWpSKn04xks22iGvYT/6eTxd"
        "1b3v37wL+gZT8KU4dtEM8Mu37DWBCl6Boq9vY4hZy6jVoHAOXI8nh59WeFkpXaXXM+cQsLAJP1DA3udB9DbwYjzdgJvT+FEx"
        "5VbPO/XTwJkzwKCOb7dCYjTS+SSjv9Dc0Zt37OjEN6bkHMAjUpZLQAFOfa546kf0Fw63PurmZnhiRJ0OSmMMMQWpY3T+ITOe"
        "SvgsANL+Ynldp7HUPYVjCgWfvSf3qkaafw/H2mWyVPbf2LtSuXpN6+kbGYcLrpJxkRmXP7ClRDhNUbKYrZEpTrxmo/HFXUWD"
        "957oGtE87os77ltM3yxznuvZowbsp+UvmmWDn7BuW7qr31971n6qWybslZPHniycI6ifKsC7huepUrfADOj8OXWuoorXXNyP"
        "Wj1vS2lgA8fG3rbBu565HA5igw8YXfdkr5SwQW0agzbVO6xQ969SOjzNAemvMWI6vZJrYBQKog6cxHPent02XTHV6Y3nf6p7"
        "6G+9oivlT94n77nXuRVXa/LCi+lmHptsRXRldRXTae3DKc/mcUDlybSJSlPegnnQI6c0+HiCrUcpcDgp8s36Baq3G9guu84A"
        "myrhDqZJ/JHthHnQ03QFh566zdKA02Ts20YYNGjSxxlw97yv4jlbePyv/2msKZcjH2Srt9+dHGOJbudgepkt09XVzOv0vOOX"
        "Z+nynG/N0xU2Gv30M+qCyYAPGYeRj9r2bS9dBuzXi0pGoAFdFB0YYD5MnecbAH8NpFLZMrw5fPny4M3F8UtSfJKXqeFdlqgt"
        "xBHKW7mERQ8HIC4ulxGaq7djullrhn3kcMgI5vgMhrN9rtixWM2vjyXnyosMPYNzskQuy8IhncVA6rlzx8jYgx6//npPDUGN"
        "/ngHR39sHE50+THKzVD8KxTvoKaWbzn4d8f63Q1MlS/3yP634l7oWLV9b6yxzZKXjETaOwVKuRReY+l9TVdZ6dLMTX/1M3/0"
        "MwKhC3/LWnhEdphwiAP/OUAMsa/ONZZ8hXgSmAGekV/HEsrQfBmtl4Hn3Qf06sHqniOPQy1S4X/39F1ewT5ZNwekK/DFOKpA"
        "bkixheigdz/whZ0mi2/ex3iZckwKpXTLVxi4gvRRS9xH2KTcQtNFI9GL4S39xdtkQCPBpKsMxX3oTRBOq598tjpig36ONZEt"
        "sV3UgMEDWZcoGSRdiXrs7zscbQK5X0fWQDpDHsPQ7018y67D6OJLpksZuVJT6AzxJ0UD47FHJxL6ZpYUiD0vbHa8d9++oGlr"
        "0szHOxktoVYNuZZt/mqSLY2RDQEpl36DnkWwYGlusZtlcolxBcTZn2DBI5WYFeOUg0Wwx7FaU76p1x/x4Qj9nCGpPif3a026"
        "TikIRiRepugFiouGUjnAdxmjEGyoHwNonEzSeUpNkyczfLuOl+OClRhDgsO+KOMwKC/Gf2mY0/masO87xD3f8qaJm80pimN0"
        "XQYPV/QQ0kPIJRE/cEmLHiIuafMDl3ToocUlXX7gkm16aHPJDj9wye55X4+jw+UhD6QjA+GRdKWMh9KVMh7LtpTxYLaljEez"
        "I2U8nB0p4/HsShkPaFfKrBGFApmIRhQKaCIaUahgE/GTlNGIQoFO1OYnKaMRhQKfqMtPUkYjCgVC0Q4/SZk9IoFRi0ckMGrx"
        "iARGLR6RwKjFIxIYtXhEAqMWj0hg1OIRCYxaPCKBUYtHJDBqWSOKBEZtGlEkMGrTiCKBUTviJymjEUUKg9r8JGU0okhg1O7y"
        "k5TRiCKBUXuHn6SMR1QlrrZ3xBgpUgcE7JT/9f/2vJdnn/Cq7AC2bRNlVhCD4L/42D7ve6+4FD7aCrH0+OjUh4fnODHkZixv"
        "HoIAbaOfGIt/YtT5idfrJwKS4ytGUKK99hNj+k+MXj/xmlKNK6dGyH2E3EeXG+enkJ8A2G4N7iPkPrrcOD+F/AQL4tSIuI+I"
        "+9jmxvkp5CdYNLcG9xFxH9vcOD+F/AQL69RocR8t7mOHG+enkJ9g8d0a3EeL+9jhxvkp5CdAEKdGm/tocx+73Dg/hfwESOTW"
        "4D7a3McuN85PIT8Botk1xrTmI2rUx8XB623gkxDqZCkRovaHlnlE7fhYoj+aqo+cNmmNR01uMzJtRnabtKyjJrcZmTaj6jZp"
        "TUcht9kybbbsNmkZRyG32TJttqrbpDUcRdxm27TZttukZRtF3GbbtNmubpPWbNTiNpumzabdJi3TqMVtNk2bzUKbsMH/9/9N"
        "h+f//r84rhBs+FruvcJ4O2PiMHret2cgRUWfnrducZ/j9satf4t7Hfd+nc7z23PZ6uQQDxKDcPVmwwMm9D1rO4/djTvk0xWq"
        "DvloBTEfx7c8a9bJnKBpNUjLBGigGqQVGbu7dMiHkoaQgk8dS6gDVaKAojoMucPQ6pDWEHBEdUjLNXa37JApPBvFNXW7UR1L"
        "rtRQqITHEqkOI+6wG1k90goDBqkeaTHHrQLMOnqK0Y5ut40w7OgpUgmPpa16bHGP0Y7VI+1RwC/VI23HcbsAVKvHbd1jB4Fq"
        "9bite+yoHtvS47bVY6eAF50qvODTmtptG6DuYI9dDdW2AeqOwRuyN2l1rR67BcTpViEOc3OMHpHpsolgDXWXVCR9Ng3qUJ/t"
        "ttXndgF3tqtwh7kkarhr2u3iLEMN164ZTNfgDvVoT3KngDo7VagTmUlGLd3uLiKrmSOV8Fh2DepQh52O1eNuAXV2q1CHWVNu"
        "12yCEPcH86lXumgqRQZ5qM/IogFhgaiE1URlW/dpphLhLJn9vVIlAtZdgzxkldSyOiwQnbCa6JgOQ2un4yRD02NokYfI4A51"
        "GdqTLNCdsJLusIzBDRt6FiGlY4ljqotkOKHBHuqzbc+zQHnCSsrDnDsvZkc3vI3TjMxadvRotg36UI+RhT5hgfKElZQnMrM0"
        "5CVCyhOZSRqSFFmUh5dy1+qxQHnCSsrD3DX1uGt6bGGPLd3jrumxZZCHbNfa1gkSFihPWE15dsxKGqwMCV93zEoaVA53DfZw"
        "nzZcC5QnrKY8OwZjzUqGtJQ7BmPNUobbBnuoz9Dus0B8wkriw7IvY49By5AwtmXQxyBzGBr8oT4jG7YF8hNWkp/Q9GmOSnQ1"
        "HIamS3NURm2DP9SjdVRGBdoTVdIeFlIZsKbHkHpsG8CaLsO2QSCycAztPgvkJ6okP5Hp0xxPLTy5ItOlOdNa1sFFPVocSFSg"
        "PVE17dk1x4jZJLhHWE8w1SUyFoM71GHXWseoQHmiaspj9WgYAuIHrB4NQ7BjMId67FhHZVSgPFEl5WlaC2naDbHLprWQZjDh"
        "jsEdXsi2Zrf/n54n7PMecNbCR/v/8S1KzPjwJb59HhmGWtROQ+ai/f8g9uRLovp4lcvM8pB5aiq94lLlayXKqSEzzfhFxPVb"
        "XD/k+qGqH3H9lqkfcf1I1W9x/TbXj7h+pOq3uH7b1G9x/Zaq3+b6Ta7f4votVb/N9Zumfpvrt1X9JtcPuX6b67dV/SbXD039"
        "DtfvqPpdrr/N9Ttcv6Pqd7n+tqnf5fpdVX+b6+9w/S7X76r621x/x9Tf5vrbqv4O19/l+ttcf1vV3+H6u6b+DtffUfV3uX6H"
        "6+9w/R1Vf5frd0z9Xa6/q+p3uH6X6+9y/V1Vv8P1u7o+y1HDUOFfyPgXMv6xLDUMFf6FjH+hwT9mbYehwr+Q8S9k/GP2dhgq"
        "/AsZ/0KDf8xqDEOFfyHjX8j4x+zGMFT4FzL+hQb/mPAPQ4V/IeNfyPjHxH8YKvwLGf9Cg39Mx4ehwr+Q8S9k/GNSPgwV/oWM"
        "f6HBPxaZhqHCv5DxL2T8Y7FpGCr8Cxn/QoN/LAANQ4V/IeNfyPjHQtAwVPgXMv6FBv+YJR2GCv9Cxr+Q8Y+50mGo8C9k/AsN"
        "/jGDMAwV/oWMfyHjH/MIw1DhX8j4Fxr8Y4I9DBX+hYx/IeMfE+1hqPAvZPwLDf6xWD2MFP5FjH8R4x+L1sNI4V/E+BcZ/GNJ"
        "Zxgp/IsY/yLGP5Z2hpHCv4jxLzL4x4znMFL4FzH+RYx/zHwOI4V/EeNfZPCP2chhpPAvYvyLGP+YlRxGCv8ixr/I4B+f6cNI"
        "4V/E+Bcx/vG5PowU/kWMf5HGP1Ti/k9zkvy0Z65u0fZI1DHOW3LXUjYMOXtzYOU+3XeICqdP9x2ijunTfYfoYvp03yF6kz7d"
        "d4jSpE/3HaLf6NN9hyg3+nTfIXqIPt13iBKiT2MIZRAdHoSMokP1QhlGl8tkHF0uk4Fsc5mMZJvLZCg7XCZj2eEyGcwul8lo"
        "dmU0EY8mZJBEoTwxTHg0IQMlaskTl/FoQgZL1JEnLuPRhAyYaFueuIxHEzJool15ktG0ZDQMm5aMhmHTktEwbFoyGoZNS0bD"
        "sGnJaBg2LRkNw6Ylo2HYtGQ0DJuWjEbBps2jiRg27VCeGCt4NBHDpt2SJy7j0UQMm3ZHnriMRxMxbNrb8sRlPJqIYdPelacr"
        "bSxGd5BoPmLfjKZzFfwKr/nQI9D7CqM8kNmBFeRKVbg4Pjg9RE5Ox7jSTVFkZgwXe5n0vIEYewcDcX7Jxbl5kP+yTpJ/YskL"
        "9fsfGI1hQKEqlPWpGGRx7gPP5/DZHHxa+WBQSC5xcFEONrYvxMlVfJ08GvghtwyxlIFBx3EdX2R5IWQAD5tjhGt7yE0xB7Tb"
        "va5lh1yTUFdqrD3VQiARw3WlmqP+zpXBft4vRCksBTFARTRPQc2mXxULAWA7TTyf4ksZwwgcPFVGUxXvyy+hiy2o9c2eixCm"
        "gnWldsNXajfsgWFhzwvUv96g6Rpds7Xt2rhzbsgtAyeCtqG/ej7/1M6z7HKqX0a2R61+21Lut33d9r3+5d5smy/Qij6dr3XI"
        "BFUjP0MgoDRsDQ094NGugwD0Jfp/kxe4bTPy/LkC3kZwbRqKg3VqJPdFrNSruSl+wSIeh82vQr7ToEHUcm+czdAzIF9PJukn"
        "L4R/FTZYXbSefYcmlvgB7172Q5E2Ax0NPrtMyKsglkwJZB3S/BR+Rz4VdK+CgQJUQBOK4o/fiGMKWi/kV4XgBEUMz8/0tPU6"
        "YKQdXgJdVlyH/Mx3kW8LY0VaLcCwqIWqz4qNVa3VE0gEBmF2FuVHjmU6IHc2tn9mQge/BxwaYsAEcAA7knzeMLkM0DlM4iDZ"
        "hCglCNXCmOmeBKGXqLQLHZhW4viMP6JZikrYgLUE+BYJpp7qUt0mX8/K9Aue1bI9jS45g/qTKdOfs7l+F7VDhxwYYTYVR8we"
        "B0YY3tLfut4OZI9EJphkdEU2k44VZONPI6AmGiiS0r5VgvOjRXYreLI4HLnYQsqP/cqvVIAI+ZIff8J4omwpuLFW5NaKrFph"
        "d3O1llutZVVz6DssJHujbJ7cIzOSGTw8ATXgh8erxucMr+IoYlR01vfx80gUckhm95zDiUL7bjiQSovs7duLTa1xWgl9hD1/"
        "rn5Ck+rh0UOIO9IUTzF8tlm36yVo0SAkcPUNtvOuh6ACmcQFGgeOBTCdd+iyv6OZybfUSsFdTPguacT+sOzmrr4tOLqr+TmV"
        "/yoD9FPHGLMil4WH5zIldBA70GUMp/wIXVZyz9d+IpxnQ+XEUK9bwV+W4ODN4b8Znx2Mecev3x+9f3loCnBXSeiGg7+5Pj4i"
        "hxwevL04+vvh8evDg1dQ4tR/btXSFU6PDw/eXbw9+PbwLXxP2Q90MNkXH0M5DWs6xcLx4b/+cHhy+kCNZfLLv8/tCicfjt6f"
        "HD5YI7drfHd88O7wAiZx8v3Re2XrbadZuEpG1xKXlzJpUSCoCjcZiX+sUpTBBjC7ZlOc/C/usM177esSW3WUY4tEkSXbUDS5"
        "1aH9G+hEz72qKPo4EMthDJ1xgTNIxnh+0oe2O5mawZNGph1sXK8bu1EagxAEilWMW9L7x9GxIQ+flxf7c+Rqk/kI/1Ck4IKT"
        "Eu4V+vAf7DRf569s38QH6YKNc/oluhfa3jStKNBlPAiiizYxZKJUIIZ2FLmCw/AsHn1AP2I/xkxzMuaRm+jjDGNXQblqAvhD"
        "5+NzR18ALTKvQkbkKjgTur/5EoypTnbOi1sUBrLcduFFa3Lbb5doCxkoYw5C15m6Lunuyu69PZeCIdcLQguGKUS7caRzqlnx"
        "eae8U8YXvgH8mbga151sR+RKQ2wZNTzPKFsjtEBe4peZHS9jVsd8bNT+DGPgC30dZTOWbi4zS1WiQjNUODrbKyXhG0xQBmT5"
        "2L9nz7RBnsnXtlsyfVII43DLvRGKUejKVlT3uoo3Uo3eqX2E7mC9Cm90SZtwz9XMGCTsQ51bKnp10UuNNegUwB8TXpEPOkdA"
        "2PpGQpZjuh8OF44RQshH34sB+LBWA/qCwh4gG0zJS3l9KRsZ5gDJ++JOlHK0NIR/2IWjLMmvJKS5yo0FuIKLWTjyYYAn2tvY"
        "HaTsA4zhbcVGt8+YQFyTDYWuQTu1OkdUMYcc5xWwvqKGa3qjOW1aXi8rXsZq8mOA2XccR3ROHr2L60UMa+CaU6SBTUTCcjs+"
        "gP2pwDSom3gq5FBN3gcPepdXuXpvQov/UhBXQT9RqGdf7qIHexHqsuEKeZMeWoLH1hV6NwuFTjcWVEECHdI+s8ALu4gyP96o"
        "yJL4Ee6v/ApTeUm8fJwTRZaBIxb32yxeja76kuf2Ej8nyAJhBAFS+7WQE08g+RdNEgL4epwQhhT3ngqTUxrz01eYskRAHR15"
        "0WUJtTsdTtqsmUIyqmmfwg9hhfux/SUP2wQRNWxnCU/cRh6sRuTdcssn8vg79nEJBiZkRDWWj1bu3lfLZO99nI3CgeFtIRQI"
        "R7F4Ch2oxNjfsL8fCwlhxXTQYNiEdf+Ho5Ody+MNBTB5KP5EJeUyIHWjWvB667gWuo86H+lPJnd/DFVPFlOkXcjgh42vr9Px"
        "N42vMWsQisLQzjefmyi7UIhSLqWfFpc4kn0D7SuJrtAY2Bxjr1E6b27E85mtxLoB+vEVUrXo9Im1ggxBCcBOscTnbOaWWzAH"
        "sN9T6VK4PxSXa5xgp+bt88tGjlP0a40axtM6005UMrY9DTbSXGKrdgSTFopg9JaurrF9BFXNvA7P9V3Y8larzXTrVgom/j46"
        "19qkUlmoyu69EZ4e5ebUYI3vK+9WLgd+kH/Z8mIreihBjAF+3avFnk4RwwCdZtl1zmlTHRTR2OETKwPNIXFARpsb8wMVVIWz"
        "DlvpWgQ77xCfehqGom85oXZ7ar73VsyS0+OD7777/uXFycHb00oFgcg4NRUM6cPxmwsEGcWoUNEOPq+o8bl0fsG9Bn1vFLHi"
        "J49GxAGL0KbTqnIYBVF1SbA8igjyOdT8nKp+DnU/d9F5DDv+Y3LKnWJ8It+ac5mC21uo5sCnrjygZSssMf6cHdPBhpVT02aO"
        "7nCavVI0EQYsFNUC5+ioIzQ2fQ5Fhc9l7XAhVAZhVtIgkmLyxykeYuk4oHgkSFsIeYHDha7r3uclZREpHNCfuu6hj21AmdqP"
        "JS2zZLcQUZL8eqXTuaTm1jmXVTpWZLGGFBlhlQVVx+xwnU7Hx9zMd9g2jwyGWpdxSB//kmOK6qfy4LRk0Mi3InASABEQ1tnM"
        "TuH6sNFQsQ8FR8cm64DDwtAh9GCNLpDhuctPAOs5jbqxTBwdGzYLy6ZGbnQf6k1dxq06czBAYG5QgCYFaFNa6lyWWoZ/IYcW"
        "r7m94Lj+mFHNc5n0CblmCxvNsZ6EKScmBlBhmUHJR0xvj+tGPDyFrLhM6Ggl5v2H0++2doJN3NexzIfRgmYhw33Po5WDUSkZ"
        "6dGwRxjr1lXCwnzpGzxkkGa7kK9moLSAohGFGEMajYsotm7VHWkgQzXsUOgIUKYPOO/GdFT9ALh1tHwPQ/Ftyc5SeL3EOHrz"
        "1RaqJVnpxXwIKpygWi1XqggY2sGrd4fe5yd2ef55gBH4RphgLqG008NsfIsNqYhpEohl3YqGdCXC8GVKwtOxjG5Yj3j6bx/Q"
        "5KZGSeE5fOqLT1uEeay7lkPjnYRxHVDgl4GHDGlYR8c7zhFdmk1P6I7GbIr79puQmygizYU6DTSyIzA5AE06VwFt4zzPRinF"
        "MCA97SwBYKLmTQWgFWue8TJbLBChl0m2HFPaBtgYlGkeE5Ss54Do6SgZ9zhE7GW8UAlnoJM5rrhqEHNwY4gXxC5nA1bsvk0b"
        "hhdYgFu1YWia/3X2TZ0SEPNy/SV7iNkm2CqoOe7ptVBoWcZDE9hEwLVYJpP0E11Rbd4olCMWIEAhR8aYe4jUG7DfNp6IT11K"
        "RfN/x+lYdf79keWR49CMp+o8tNvG2ohsPBBz1D18PMrxZyLLJbBZkxmFk6El2OKGtnhpYIaKoElgUSZ0ZMKHqvc0GamMmq9P"
        "Tz/gSo501k21/MSf4uGG0aQRaUi1MElAeqhjYJJPKSroQfjKRtcJBrjKMwxvim2TQcxVNiUayxGoCsijI80YykupaeUR0NO1"
        "QxKjQRoYSZZofveg6eCmnFCO9SCF0y4YByXzcTkF1HicqwQXfVlXizdEMnlDgbdB/iNE9Yg0ej4dJ3wHY+XhUkF/F+v8yk6H"
        "bNkj4iieO7mPvW+ctDruhb1C8KtkqjOLYBNb1jxt2zf67je1r3q4XOJmrk7FO4s/+e3mbrdOhqpVnQSBZRJCTRWzThliZ0Ze"
        "1xMK7NQzxZWm9rQ1RtHaxO4D1+PHFDk5yuJU1VHRqqMKXxyMwdmWbDCstDSibS50YBZ7z810bd0gCY7tiY5BXyxVJQcSe6xK"
        "BEBbqXYRY4xRmI0jXKZTevn+8Cx3Uqac5aV0KfTKTpVCL1rnknqnlOmKh5djDh4dNTHgvLjqW555g/eJ3J5ho20gIJTg5bln"
        "m5+U1sn9yF4dY/jLn+6ZTRO4bRSJgqbrPDiHTrDoRXgvAgJRUOR/gAqwJZo6cW9RfzVNJisJn7WSWF5jvFRdUzRtHR38Eo3x"
        "0BRtfulX2ehUbfX7jac+h9Gj6zqWarNsmvOAKcwq0i8SdqRaj/gYNCCXo1Bbp7AO744kV0ucun+UbStLvyz4PsymtX4XWwaj"
        "e6sRmWtbpsr8glPtVHb53Grg+ZMU0Khz2CszZAVerlV3Gw8sOZ2ugfaK3J/7+aN8528S7LXOXfIowSqi8diTOUyNj1xzjxWK"
        "SgOjn/f5T4+1dII0PVGc0/Yu6ukZoyyRv4KJRf6I0VO0AVp+YAS1SowUV62UeUT8/v+T9/w9/ObT+UpLmVhYZotBMYpoRX0A"
        "xqxoXja4om/uJlxdc2GrEHn6q4zwZinqoGsYGjBbxujyAiRtlsyy5S2RJnj6Hnn4ZPzq278mHuy32epK5yfgAIarq2WC/wUi"
        "Lsz3aL3M0Z74LllkyFXnyS/wn494UYO8/X1PLu0kbS7PSoXCTm01eC0X2xpg0FE210EmR1fJLA7qoqAcAVvKxs4qOCL15Plx"
        "bjXGvDddyLB5jUpzj59ki1U6S3MQ8SlaJUWZV73BN8PsEzZL0bi5nE5APOxYN4OjU/yxaCJG0xT7QmjlFrMcA6EgnhmVFDh9"
        "Wj/uLJlOlbk8LTDnXhXzoj7JMPyewrBjdFkgA3QMc65V+hAbHa+XBAGyw19ls3TUYDLzI0FeYwkqdWHaOSxeTzs55evlx/Sj"
        "qDZAJAKpClVICFv+gFhQFIRyS4p5R/M4kQE+KMSguuSIgPr92JMQsMRsMPGaZvG4yA/cCVb1PLbWZVRigyIydKrLMuGVFVsT"
        "WS3CMb9eJhTmMseWraI8/pi8JLhVlQDlTFaF9/F4zIOv5FnsubH1st1kgtb3pjYVjaZZnvCTvrx5d3h6cHFyenRMSrj/NktW"
        "cU1Zch79cPrt0T+sUp54zbbmTMdD4UWUWrtkQvgBROgUOkbCi5kTkCqj8ZsVOFiqNqDb9QixAFkNKpc6qvEG54fSyVhUtYR2"
        "tqmE7es6VMgUtUCrYfSncPjknH37FbTjr8zz75mJVR2GpUTa0nSU9OJ8XTkJ+xMzkWLVeJgRs/1wVTIJxUvGo3eHn0bJAkv8"
        "mvWZR+0kY7xyPMCfdBdZC2zg4eY+miek5BzGOZs0CuFTtrp9TqjB2VuRlPBXtJfqlEhk7AnJpHd4hviKvHLGG05LQ7fjSDoz"
        "9CiZ4xm+mK5zb0CYOmA6yRuWb7sHgqQDarL232pIeJCCUnIMNp1kmo2jyMVqMrnVSYWm03Sc2J6WmoRtojiTGP/c8rxgtPNv"
        "0VfG5FNmfyL+iHwq6Zclvs5ZTY1/7BxNqh30L1K/rXImTCqJU7JyMnqPh86VNDcITC37bBUKiC6MS+6eilmkyxm12mI0E8uq"
        "opjDFgdkzcigbXhH0pU6+GJ1q8O+XJea6MPSLSnhzxxwBsQHapWNG+W0qBMqSXXUjy8ul2hNG6NKiY84bhSP2oZ3IDmAYCCk"
        "RdOfrwwjMcsw9brn/50bJRwX/Zn0Q8Kc5BxepdDJNMY0dDJrDp7Md/Acc1klIhYg+SV11HioZR0hIg1FClR5v+CRJstl9A2F"
        "RdSPqIg5Ibj5AfqtAVBurWDtlZUNBvC+LkUtt78vnC3FPouxyOPVChOPsH9XXz3aEck1WBjzgkr7By5DSrQyPA7GipaCQjbM"
        "OfBthMRn5kirO0cY3RRZW0d7j1Gyl6GWLPTUBT98bfVfl14cN1h+1aBd4PuMIAj78bDBBJDg9J4UMejyhCG65bPAyUreiMfA"
        "HPoaFbSzm+DkHjapHp6b+O3wVk52rcOx7F28B6emL1sLE/MeHpiSTHw+kazOECL0cp/JGioZavZGq+EhpFAEoyqq1adaZY9g"
        "QrzKITOtKLBGTzymdQ4DbQGhoey4eew71JtA52uajWZLDxTXVZsabIZfEbKkkba4XSUOLK6cy/n0XU9KEY2JFmeTAkjMivAH"
        "ODV7QxQdJYn2PAVtCeWWCRrUmU+5EBOFwaH9IV5hdjC0XYrXq+z7OXyORJd0c4kmOY6q+endu8PePJjgYf/Ee1WMfq7WuUEC"
        "B+ZPwvC4S40ZfM16tKaPhAyhMdVAPmChaFA3jRJvkWKa1Bxzdw1v8QIjmU4k/j2TtGWCbiR02YdXxqSAbpQQZqh5AUYVl0XY"
        "b/gVSPabeOnfwU2ro8Nc81hAvKH0FjFuSAuGPr1gNgGOUYZhvGLfGOXAkq6EaeMTWKbOYvIyYVsROs9jTRy1VRtdkK9z5X2v"
        "KZfjUkImJavStisTUuv8pt2DDVXxV4JJiLxzBxuQqaLOrA940m5B6UTcPKY/cFbeFxjE8dBRyPOjXs1jTGoxwJtPRygakPoB"
        "eDJbbiAV/IDJz6DPtQasPAA2DvCGl1JwCFP0ZR7jCh1MuYq2cJOtp2M6kEk2sHoAUWqGxtfxcnprVCYSs4EJvki9uXEHsBtA"
        "JQY3oiz3FUNjfcV0A4Yzo9yBOI3fwd9Y1Ns6dw13aDMeVufVx7c9B2IBNg33Cacz0KSXzOyzkLUmoqTZXqUCs5Npwph7atdR"
        "gueNRz3Z4H4//xiDBEXW1nLef/mlARknBSoeT0/ZYtU+4zZZ38hG6AVBrN17TOjvFxgEpJFoLlzcB+o7XmFs2xBS2k72gX3/"
        "gOLpadii7OSBcL5X15nAz1acl+eYsHeVLH2fmRSgcJoVs9Q9GAFCvXa4glJqXPoMTbl154EtggJ7OOau7JHiFOm8+h0KNc8G"
        "hI3uj/D2enznQAnRWgMJEFBFV6ljUXxLe+XoUyxGwvQYkLtijWdTC4IGCoG+r7QPDv/Gs2+IgnpPaar39yslrycNxFkjHMrB"
        "dOrrUQDBX6a4MFXDYPjCMOSrcv+PrHaRMRV+0ts0Vgsb8J8SedG9+syaKjUjUyGza7xJ21AOZedqsmfoQVFX+vjzwqT1tAU9"
        "UbHK/LhCOazemMEP9r5IqYEz+i1tnqXn546txX3BoOHezQfNPT6kDJ7bkBRfWtZwiOonL2/bZ/Yug/OLS2xNgTRRyGO6cQfL"
        "50/Yvo+RI+xddZ5ns8Qe9YM8PE8h+BOYLu+h8d3bnMyRy63I5ZH4Uiu1o7qE4a1q3Knx8hOXFyM5ja2E5XKblHyCRoHNEQWT"
        "bHS8oIw/FvgM+wZA9cKjKCCGaMEKugygcErVJ7UYh89oHXkXMGMdnD9IRRXTQCSSLpkeopEWGp2JAtfaKZS1rzCJp9MJHm7f"
        "YSm4XX3lHXAjjXGCinTtLc7/SG7k8sV6JVVNRmnH/ugJ9B3bUAuj6XylpFPCKFaCsmaZZz2aAq+Kem6SWmBvT+2LRW69hB58"
        "DaTGwBvUxY25dfiXlVlPOTcRj+xD8rdggCIk8z/lXOCVI0D5bqA64rx4X+4JGOj0LTRg8AUGYyNqEUP1R//ZyFK8ycMTWIsU"
        "FAts/PDK2cf+k1eMoXDnZYu6Z+9ZjrkxS8cgIzA3cPu7ORA8Nh7sQfMm88IBTeY985L62T1R07ErjCaz7CPnP1f34Hw/bhIG"
        "CpcDO6yuL/fJbsBMRykNDRUXamNd3scjvMqAzYqHgz8QrQ7uuArqpw21Ancr29evaKfDrWyg8iJ27XtnLkvL78+a5+foH+kg"
        "wp9I3ylu2tgNbxN4T8MBIcqpqxF3J/t06qDnW9jh8j4633QoyAfh+eajQbehwWp9fV/ctfqmvOKSTAU81IqUfZeBKbMq939h"
        "uCzW9fxlga1OD759e3jx/uAdGgC8+OnsYOt/xFv/vDiXH82t3Yut87tmvRvdf/FC2Q28O/jHhRMRK+p0+59ZsSGVrzLK44Mh"
        "6ioGrLNRVu14/we0aI070DHSwTvGUbxA/eA0Xl4mkoHd9PvtwelLirXVbHKXpISgXKO5Zwfa1eSBqUgqo6LrPIwkTLoPTNgK"
        "ZzfGWekpzzYhE9p3DRXbmM+dLiB1CtYVWVGNrdEdH54e/9vFy6NXhyfWpe0Z6u5G1zXaregChL+ST4sUCFztXAfV+vH4+9PD"
        "i6MPhaqk9sYaHGoJf/GWoKrqApdZBkl2a9/9i4MsA8SY6vCMc+VaJEZUyiIozREK9pU6kkB8/BinUySRjnqbbkrZNAmt94Vr"
        "1uZkDZgKHJ7p6pYWip2eUNcew/pDy+llSlrjHMg6EFNKEEuCBhly8YiUbnx4Sx3D2IGxKimiqOnvAK6T7BNg0mKZfsTIQUP0"
        "eUcpTAJ9KE11GHYa3g9zutbm+t7LKzhqEuMld3PF8ZkMZLxxMk8ZadPleAt9qG+V+bkEmzDvR1l2jT4gQ2UukHGTCCdyroOT"
        "iKykVhILGoE8TCQZccP713W2inEt8Q5JLrGN0QZaWXnLDM5GyQKMTZpbfAmNoq/H2e4D789t0ysAvA5hpl1hluT+LHden1HI"
        "3Dxny4qM0SrgDMHD9SXiUH6F2cXJa3uVLXIbOVIJsAQoT7pCa7u8P7r4gIaWJ6eHaBB6eHx8dOxiv4M4iPpl3SO8tJcQn8tQ"
        "Kxi7nCs39aOF2HNO4vV0lfe8AR63pP7O4fRHYdAiTkiW6BIHBMFWM+grl2aa5MyONv7q8LuDH96e4mTwfMFGe5jjCu1D01kC"
        "bEzPCzvNZrNOLi7T6d+WMRr5Aknjd+xf1GNzjTqbKC1v32Eaxw5/wS/iTz0YClW67yurPBjeRZ6QTEK3QbzN8fql6LeGCnP4"
        "kMLi4M5VLlHxFPkKkHjRY1NHJbd8Og8xdqFE2ZssKXwkMIrXfPdX171Yd4HKYpBvBBSLx1hUdFGlwdierGj7jluMMlenl3PY"
        "LeNCvIo0Z9enA2pXWwDb5sUYroJuW7mocQVzhAb3UezYb/i1kfSI39Vsc2EV54Lq22EuvvySXqowF/1aAKwNMGrpzAfOOHsL"
        "tHP5kq1FKM6v8YctBQEBke0Fe369IJfVr5WhlQoDcqMCv+kbFrxargjagdEgflhO/fVyagKzUQnx2+bqgd8pR6Xjt1SjbJVs"
        "PtPMjoJojGpzKd+XHw20l8fzqEE+gEcTv8YzohggW6Flwg+QwVtkVEOtvK+9JrRRq3m9UkNs9h6vggYdoPD7xb+/eP7FC9jV"
        "NcsiX0EMVfnStFRVI1BKNB0WRsb+66/esxc/Xa1Wi3y/98WLBjp++GoUkmCcHDef6T7gQf2GiY6m6zHGjYBJPhbwA4AM5Ghg"
        "hfsA0DvBPnAcvRcvrrJ81cOL4zJClCN/QKukWuUQk2jc32AkxTg3HPuSlldFvXSigfAZrOHOj3VxRNy0HE0g+Ct0ixBQ1w38"
        "7wsmmPkHdINgciHBN227Sw4C+kw5QMimgg3HBbTjWIigHfeMjfXTnN3quD0T/wmoebIwFtLs6CABSFmFI0aLZM+MTSD5TtGH"
        "LPsnXf8rspbNDlmZjiegMr3+/OKCMOLi4nOK8oicDHCs8G6RwJHv7kdu8iWMxZ42Yp6ZmnICceb8zJpz4MDJioyEU9zzqqAB"
        "G4mjjKL20AyCI3T2Kmboyyu5PZBmRPnImnVgoWesgZQX1uSwLDh3PK/dwwHHatZIHQOrG/SMSm57Imvfex/T5CYn6wzDvSst"
        "kbYeRZNb0rsNiTdJgSNbAZMgCTqYRUyXtPCFQwLbO+ZWfGYG6ywxWDFp+b0GujaYFMcljLWpjz584twemqTQxYMVAcj+Upou"
        "qPJNF5Z6iwKIcmhPJ5K9NAcH99HNXM8BFVzl5iQ6GH2D6jL2B6Ph8iNspgKlsD4O6OtCualc0Z9FU1iCvrc4klikMBKqJKqV"
        "aGZw75Hi3Zjh4ZEwlJhV9gIiQ3JLIqZW7lGzZv3osZEtmGyI+KTHyqXII/crvxchKzAXvFpTbVuMmd/opgVHtxoM/DRd8E2n"
        "tKSrmJN/RWG0YsUpsxaZ/aaZyczIzjrFrT6fw7JrjxaUGy6XGEAHI/HgJvA8oO6s6qDzw88D+wg5E97ivHSWUBSC0kki9rvp"
        "itvmcEjYdlUgKjGs1Yvksw3pkjVlAd+xqJmxGfBKZEzrH0ZmRl06SefavEM47zy+FVtyGgmJYTFwre1miB0NRJweBNyoCCke"
        "x0MgiRcJtZF/la22L6y/dznNhvH0FBU7uk5f0lWwGNsvjNeOnY9XBTxJR6zuaYcqsaiuzbOLBUqfOTCao6RGotE6DwpNkwpe"
        "WTzYHjbaIJ++0IM3gU6she3TGm4eNIdxAfhKRIMrJqkoK2vbfHTEL7RA0Q34ZxXwqLhYh3SY6t52frm1yODI0wKWaiXqFOtJ"
        "lAXzU0WpMZWI+FDMGmzZo5ZpKZiiiBvSZiggfwYQA+wiPQirjyhqQbrMlbuU5SzG6MhuWw8jhDgzKl/mhY7tbGJ95Bw0iwSh"
        "NZxh080timC6RIOtDLOcUCiJ4Tq/JXc2oBAoEWC/yt4VO+Ram1tFbMF9BBiAVc0YgQuaTPAoVXAeJqN4jYZ8FNcCzqbl5lZf"
        "vnrPa8Be90qZgiZhwFeyZgbauOBicgDA++XNDQJtBSKGSgQJqlEnHgAEOVLrzNLxeJqg6gjOSjYvUxzE5ja1rIu0lKFvJZdB"
        "qRh6WS9wKwvsBWE3NznFONIeX20g8TauieS6rU49wSGxGMVt+MDMMeYINqUMKP0x0LmRBP1BaDJpKQAUFnTyAHaSAP6PrYPR"
        "KJlufasqkTqJZWI4dYll1ytHbpo32fL6wc2UpMTW3cS3hW9E6UFwz8VxXuFpZvSw9ibWO5z0JJghkQo3d861NJ1gjWVAHiIr"
        "9Gp0V5F9jLTqZXOzZhyoZoHh63jBlpKLT0vAFpR2VoXGlOqmrnU2HiFdhjsMz/Cc9UemK1TxsFoHKeKLz+B0Q98vk1+B2QE4"
        "tVGmkyCDdX3q7Xl39yXHNvj4JQ22qgqz5uwMpT8seUE93JdYddghQZ9V6ErcQjWlmu0D80igzMrZo8MONWvSQnDHBd6kyIu4"
        "drOlGdjanqAcE9U2p1FidF0H8KmSjJW+xFbSWJdKyMTtIStnvbPUGtr5zpReiAJ9T7q3i3gg2CX9sIss3Yv66TRqlhd5WqXP"
        "JAZXld1bRkq+U61BB/43koSqoujrPVSgVq35MZ4+kk/DqYLXQSXegdQgTSSsrSZrapW2BsMjpbN0pVUidmOiA3GspS+YsdlT"
        "mM2cDJrzFbmb/cYQeAvfvLbspRTyWC0W8bwKv4EtpI8RvYEI029gwvH46NFBsWnL3wk/dh/UbDS6EOzlz/qfaVME46Oopmm4"
        "Xau6XHcc872YUv2xdfHN1a3FkY7ouJVrC/wYhyYOD3xisd2chpAegXsZfWdcKo7hCMKNO9BDG1BgPXasEPgVL6z0DRH66S+5"
        "BdPkAArjqXh3DkgGJQ+/eMUKaOLb4ynjSqyt9g4+fN+oNNg2YKyUGx410jb1XevnDdDf4DdV+N44nsqX+4RlRedW48yqUICE"
        "CUD0gRYjvrhTlOZ+ULfdUS7yZHVCMot/x/c6PT0IfNugd3W1Glr/H8iQxCbYdu/HS3VrMtqeVqGcZdheCAJxr3RQVhCI6ggQ"
        "yCLbAKOQD+UbjHtgM7AbsgLpkWoKukiT6Ti/1515JYWabDnbWZfzpeiBs9HY1jfKNBV/ssqAHU3N7TfflcW5CjDBOSsVDVVG"
        "vmfnfYdJwW35WCQJmM9GSx40ybUxKsbFO0l+Kc0GOvqcWvj3JrTwOc4DFoPkh7UExXCMa1jnAxQhXVnNIw1GrrIEK4rgMcZW"
        "7wqOfffqcpuNXXLlEGK1OiWpuqJdewFOEnI0R2UD8mC5VX+cTIGNW+obkcr6OARXZUlhH3XXBILLbOVsT9wZbwujK7pzy2d0"
        "4srGUpwOsU/3zrewSTc0aH0lusriRuKtRLGFKP5RHo00dJWztiQmcpoSE++yc/kFyAZV3VBH5K0lvD4uGzIaolfJMQRiMp1m"
        "LGxbDdLbzf1xrhyx0yn05y+TQOAmFh08BLrv1BYdiIH2xppM8kTcfYoTUHe/SNG8LY9OEn6CrZO7ZBijvtpO9rpoCvLTA2tP"
        "d/MbS29AfDlJyJunDIvZepUgSSj6nDuowLe5e093neW25YtjqS2P/cI3WNl8gk+utZ8ZQYPOQ+W4LtQ2Rt1oNpT4mRjwdo2h"
        "AdYUPxzzP8Q5qs7eZ2MdQMZG8jR/q9xQSmDXDirm0YWs8uEoDMvGjPnRHKNSuF6ZtCTkscDfWlxAPB4ffoQtpLYnXixn1ESt"
        "XmjT6Qjx822WLQpEAZbdvBVTSW+r8A+QezhNR8ivlMvQ0osNLIvHZw+TggHUlvbBiSYBk0zMfjZFT6IberaulDZ1XmQ8DsRs"
        "oG7FVzKO0nzhxQoXzEAE/SE5kyRrDW71Ozpi+57c95JbfnV2NB38jxmHyjg6wlQ41qbVh3zPBCzJ2bFXpMqYY8PWvXIYKB7x"
        "OMlHy3TIQJt5/oCbHFiB0eUUMREz6BM6PAAsd/eWYkESIpMOko/yhsCE+N/1Jbbwm8DDy1ANHi5z/Xxh0FYwrAENfUDTd48/"
        "fStnRcDiqC48Payio3dodb420Z2JGU0pZpYnl+pksMRKKG0GzKgqWaNRETqF/wANx03V8E7xzseJ5iUiwRb6ijlGvOJ3xD4K"
        "AhnL4vbC+PwUIIb3lJZrgxNMRe6MEGoABTIm0uDLlkboKY7EN6zZY2NBUU5dTTnsZ0O3E+w7qfecy0XmyrScymylG7uDb7EY"
        "YSnyJ/0CaZ4LcHnxNY1Vj2Tj7VxF9BH+oGAArsyVUGgg4VFddqE1E1KKeIR2jUKZqO2+nDm5umNRUjVjByd1HDTQOpTS8jkk"
        "TcXCH3DCJ1igAbeWjPF3ytZmAw5AL1fFBpktnBXaiEMcAs/uLTO6zMKhN4CRxNSQjJ54j07ch5ZNJCIcterbUfc42pGyWi3e"
        "iKW5tE5IxPecfpG5r9ztBDbfWJaWKrmEgNLEpMDz8N1oT25HkLiR3nOuqBAUULiEibX3ZHiSJvS3DE+bu24enpiGl7dNVXti"
        "NGu35070ZYwXSwMlGfjwNxiY/GEcmVZiATokMFChDdD5gEwQLDxhixNBD8nFJAvP1xZy92Kl1yhqK9fzfD3kwyUXeGbzVwAJ"
        "djRT81cDr9DGqqIHdFEmjW3twcZ7pjGjaTUtFiMcGaGMnBvFd60osHGAa4kcpjhgR7kqEFiIizwtDnJjzmr1q4RBiyKSP4vd"
        "UhUvyP4sJfeJZ5ub3aepOe26XpraWm461eS6cIAUutGiaAXUTJkFNTP9gjTrjMv+7l7pde4KXjl+hZuRLVpvBoSOeaDK9pX3"
        "RgXQZb7Wt3n6z6Q8SXuTB1Yojo37Vq7UBxRw3sddyYQ0m7ubUUm8ImMD9or2pcc7965KCv/VU8w8/WSaTr8TsTPGg2a/rq4X"
        "9+XS5/v5fl15I8Gy7QPfueCY/sKj9DRDOsqAN4bVwXAD9/cWWZjblEDvOWGY0VtRNAik0eQMI46XQ6z0CjwztLYRfrHuTjKd"
        "q5gb6MFDUXVxVr2S+YKeJkazpuC/dEoV3QzGyh6Cm1V36cpPAG8XFyvjL6BupTWtE4VjkcAhEyRGI47sV00xBC0c3FaVjb+P"
        "5xXxyIn+UqnQ2URWMOSQQrYU88KsbpA1IDZG7KuHxMqvHNULt04RVL3VTarCcZTk+42USqalb16Kw62gVg+RDLuRaj8+Rz9c"
        "6GwTAdi4fe+Uw6UEc78PBuZ8xVxiybyAPUy4OYCvQjEy4+DtToofYfREMMXzAyUGZbajlmGeyXr1Cl2YliUGYoYHn1oxsRLg"
        "gQ8CZWbKXLb4OCHS26+Vflb4Ps3XUp4g2jTAEagmaUsz6wrUFqemzLP63kDgpJnb+RpdlbhdoHHSvwhVvgmRj5RXRLDHiYze"
        "ipiG9E/kNNz2nsRc/LZtv1hml2gn8hs2vq5StfVtxesf4idKu9Rp+XftUTVwzTs9csZXdfzofkUJ18GpOsVQw5BbqK3oeWeb"
        "rxnuz1VWlwcSNYg4yrbHD3sf4yR8ZbopDL63X+EUze7QPe8RZ2Znoifak4k0XsYCDBWxdfYf5XJllYf+WvZmQ7syYfZlO/L9"
        "TUHKE+ctVlObe96+aFLkoiMXOZclkgH7qg6U+Oc4s+roGkol7bKjpsj/jSHGgoo7YtszdqN+0qKmD+gnUZFrQpaj7RxV6cvt"
        "Xtl70a/0IEN2JV6y3T5BfW7xFmxkq8PxkcrR1sNcOHGbkNbYehf7FtiBsnVfq2hdVZnmkJVi2lbwKIDaaupNV8gqfoJzQ2xS"
        "tBSvkH/9tdrZjuiMFeCrHKBF32qg88vSnaFzLb0RKaruqSsvgZ1PzTWzFUpi03Wz5YReyaZ+VjD663mDjTyq539xZ0Hkvufp"
        "Z8XsBiqktMJpRRvcs3bgPbcCFtXQ4dlldHt2HHw0rgNaOlyvyrHzVXwaPRMTqujpmKRJgxO4KigFlKhOtECWS05Nd8H0tX3R"
        "KdBtzhp54Sre8iaRHvf3zbl1X1Rhig+Kig9FwcPtkFCBqxY1AaJUmBDNo4vDugBSAuNREMKUop7n5Ct8KZeUKu4EGkfjrXqj"
        "6nreicnFB5kEBcEDiyyq6Bmv3Xsco6OBgSswnFCvzOmro6niyksxMOZaw1HOG819pZmBVm65iCtcskiW367T6UrdOgAqvosX"
        "hPBlJyI7oBIqiPM1ZnbLHZepNFdCoOM2xZ5v8fxWhYyEDlhZhh+yH1TOxl3kcMkk29aiOHE3WNOiLvE3KMj/sF78mdKLB6Wg"
        "hXZ8G1cxDkOjMWg9euAqyUsRkiwjKawrDJqprqqRNzd+kdutK4SvUsFXuIEp/VBFhFBLFypkj8w60CYLze9JzBomSLeUlEUO"
        "dnM0COECua+hwClqeTE70nKaAObDd8ssz2VzccxQtc7Jp9F0nQMt9O1wnQLk9VxrpegynFlu+rDqohy+r77wVRcT63mFgEr3"
        "m1oLhulh0H1CLvRI7y3ew944ZaN3oiTKaffWMQxBgY/hQrsFagJtmXE84sI9mAq8pQ8FagzN4fIkURFpLlDbM1GE04lmasWU"
        "1BH/8uAPqfeq9XbVO+AJKk/bJ6+o/DOds+qy3M0TdaIWLNTIERwYYUvP5LwoY6kSR23q3o1oeXXFC43eM8Z2AXknvuNBopaj"
        "eeFSSxRq7VRvqqm6Z7mKuiynFlGVz+tjLGI2TTiYs19Ttn2U3tmMepncAMPvBHy2Z0iueyymW1gCy9KTA5tuhK1MIHhdJZ5E"
        "tyo9Eadt4NkaGdUV/YpsgwooanMXWifUcyVF8bYsxG871QmQSuNfXbmh/GRV5PymzKxIkDAc1djdYqSvcBwyq4Ro3hG2zCVZ"
        "6GTyeksYaJTOoiKaVvTzAMI6OgwCicVSK1WoTUXF9GDPYa8rzdPsIuNfypw4HVg2a476DfkAeXO7nJ7RnVueSTFOL6SCeSFf"
        "6CgqG0JgbgCZq5F8AGiWjnOjJKtYJCed10NC7curBPOK6PtquSJEM2XSaIper6jOrGuPH+WSFq8COGSV2Q2l/CrERLMaapQu"
        "0zmB+eja3Jdnc2X3rHCcr0qrVCSPqhYsrpW8/H+fZsE2odcslvYgQRHURKviIA3qbuzODcz84GjkWp+jMJhMQbDxgY4CxB4K"
        "gbUhwgIP434QbHInQX64NBl8iekfk1uTYNiNrPUHJoaNy1XQfAtDc99qj5gJItcsy3Eibn/3yG/gtY8cVxVTRZ6zOFHefyTI"
        "kAFrhf6t5w277fXhnBIg2tkgwwiWz/IlgSPzmaXPc9nvZ24sCULN4LfCBp1B7svGCD36YzTPSvDYAAeqYwBRdBEAyZIiT8wx"
        "MpKRizi8A1GD1IR8Qn3VLdk+5uT0wfJPtjIZDOda1iRen0RGGq646JNTkV81xCfEjP9T4SfJuHAoWneiVScWuO43ZCQy4u2+"
        "Mi+ek3yqZOjeRgV71efWCVho5z+FouloDt+lVt5xUXuc8TpycN99FNfMNrCWGI5A3YATw9EpAVQxddxdY96fqc85FgQXWJYz"
        "vwMbsNnGF3eq4XtEgNJmqRpBcE/aLoSf0KoN1VyKY0K4MoXwqtouEycldj7BCNpxUiCJgrsgR4k7r1ClqJ0RppQScjOm2aUi"
        "qTkrX/EB85n8nj8l5ZBX0O82ilFnZTekY+fCiVugmKzp2JWcjG25STCD10ZCI6xGgKC9h30t2UCJppGMwyl/0MM2XbEzNcWB"
        "AyYaPcX82AlHWEexgDTNDWcYAjSMozVKfOediiLFE6x7YUGD+ABEN8O04IlCgqZe5GBfIb0tFxWriCLG1HKzt1jK8fvyQj6o"
        "gRBULQQYtmzBrdsJsZfPTer1ss1odWeUhcgIMIr4VRg9OWKWTSm4q6r9VIrXX+HJUHAn8JyUUQ96PlSlCbmvPIVtYEymuCWt"
        "PsqweyztWQFWw2USX5fb41St5QHg5jiaTLjpuv482JARjS4hEwlIry5ZC9f52ZwDPeqoqsjwSbxVNntSCXMsIVzwSeDhiIES"
        "/0nTGbUvVcQvHX81sJHNTv4gLRS13hbuu0fjbA1Sl1zW/6fe9tqW1JjFJXfPXpyDMOXYYRhURt4GKVNMYfF+RM1FNWDHOZZO"
        "0HnPxgnxjCKhi1tSkf0lZZrbq9ixuNc9qo0arXsNzyg1krzn2QuiXgd2XpIJaiPJxSC7Ro7CLwRYk0KZAIXBc1/Z4a5c0DmJ"
        "3DY59qt4jCy20BxQRAHW0WnrXiE9clkmQDjqpL+4cwe0r6vIi0GJdzDLYea+X5iX5wKP6Sd/4kg/9loYTXXBaxY2oUKLuurd"
        "FnsVLDnThuRto1wb/FsWxwoxTJe3Uig3lChcBcGDsRRUPxgfZ0M/ATdHrQGDq304h4kVQLlWqRAlzT8TLBU6BO+gZOKDnkdJ"
        "Vlf27WldaSFy22qevPlTZcZUMrQfp3kMNBiEHn0rMSuGiXfjtW9cA4f+rbI1cObjsieek17q7Lzv5gtL2XUw9b4ubAB4V84a"
        "puRkRSXS8w0JqWSI1gd0Kv9mhCgdlmRDpbLX2eeqwUTEg1J4d32hJd/IcyHnkZg+suHdCo+nRZzzBmH3sJL1Y6puJMlNivMJ"
        "AqjdRGQqyIQobWHu78nUDQjV9/NVcpko5AaW/ZfAWFZJHg7s+Rs9cvzEzVKm4WFzknUjIumEAP1CarOHRhEUHKpJmhgwaZMu"
        "7v+9qZ6hF/S3t+qXk6DdlxPjaGnAyUmgmH6dmaAqfr8mT3wD48N5Vvj6j/DnvJnITM6asC7H3cRy0plch/PMzyuic6gbLm7S"
        "opvUiGJNN7H7tuGA2xWSJ2yiuEeZy9d8ULWc8BsFA0Ji/qq8JQs7jz8zGaSX68S96dUflKXzMgnAHVo8a92vVJgy/NDyMtLG"
        "MdrzPijSfQt7ytkzKq5KrFxXrmODZaph+YKQF75zThZyB2243S9nEyKwbfo6Z18557r8QXM2MgrcoPeXE8e49D4osNkSyyaH"
        "v01iycagHI4/Qs+zkzjiEgvFMBb8PW9gXUM4UV04GH2FHdSgbM2DRoWu0Gzf1dw/RfDcLMAhPP8LyW8WFvhVDp06SoHLY9AX"
        "e06kg32vqbWedhwjx/A55RBRxTNSLLDcm9SGscrqlU5JtNMqvv2oNPR0srtB5H0eEuaGxdeDoOe5weRRn61MQnI2YED7TFSh"
        "kRUFOwhLLADYfOk8JktN5B/7luOjiczHEeJVTESstV4FbKMB+01iRBKb2nCy8VADewVIymv0baWwVQqZniJxUcB6Fe+ehFFa"
        "hzo1Vddh/DkKDomkVrl3r+z56OkrCjHnPS8MT8eos7rxBbiWiEEmRh8Q13RZz7IdMgRUTUjHoz985d6o2hM1rVpyj5MizXKv"
        "IE0EcsjqMOHAojay9JzYABiQOXX9oMs92ieIltUqw2hJ6SPnnvuVfe7RVOTEc8NpqYAjhdDKRlxMAP2KtJsTvTnyIttoPSou"
        "EgxUGkFpoBAWokzwdZCJ37rf3UAdFdxTORiIX/QRVlZKPNie62mnNr+kA8pXyUKW37LBoNxfFahQAIONDZVqCp2oEC9YS6y5"
        "fKRY80cVErXY8R9SMQ7UdEnz9kvNdVX9aJQK8Ht/3wH4Prxzvlb2r1JD2b7a9rBOkbn/MlEbJL09WZTRLeNVenlFxqu/sOsf"
        "SVgm4wYLWFSis0pIKQVaziaqUbq1xNsZCq5HFq/IFtDW/nB8dHr08uhtY4ZaRnZYbgc2wVVg0rNTSS1VGlQr3xqHllcynpaX"
        "LlleMpISyUiB941nL2X/QRH+sVSaZbKnBConveuZlZ0Tf9uR3XktAs5RzAM4D86dcT1sId3TdAmfylhjb2Azc8ekulIitPKR"
        "kt2xm3eyp/Dv3qQpLUtMj6UELQqRFWJAvyrCm21HXrAGt3G7yo6xAvbBnyRkCMXPlhgcZHSd+1X3d7YcapFBOgkwYiNi/SX5"
        "3lIidox1M5hlSw5BwUl9JFSAYoxW4kHLwRS0tayddNRX1iocGt/ou1ScE2ibDD2CsksLH0Zkwm5LIwuJG4jvi6FFCnHUHg5j"
        "57RoceS0eP3+g1YcWKWh03dW0u0FqzeeTrXZeIymp4i2DmfjEG2PR2x4/grMR6vOcwvtVJYMZ+BFWeOZFDhIqN49gH+FZIqs"
        "beNaZVtc78GUqIXh4jQCyas4rpR4bQWTSjIC2JvbVMsYi5/pxAf5uU1cBWCcK8R6Q3aR52aegFGn8ZQSoDmhseVumeK9kjUf"
        "edn3PeZw8M+tiQ6jbE4Uq2+AR/aIFe5CklBG3Pj3zU/X17//sIhdV5v9zit68jPM2IO/5z0jLMHNDxKAe+1iigqyqGTiRYfA"
        "hwUPkSd6pAupUw0mPw38WZfMY81iv1i4iYumskd4aPsbm4O2dl2Bj7Y7Fn75SRs5x5iujofkQksW1E4djerVWeT2xqOk8xSv"
        "pggs/Ag0hgqRQdJFpDW2zWA2EEGjHcNDAjofYFsDSX8XY5I9dFsmkYGGqJss0Eaz1xbKLe7T6rddLBGLzLQd2zDuTcX0xJu/"
        "dBPWgqR2SCDaq2JAaOsYOFrRXnTFksbbyf1cYHotJpdarfD8sg5+dy0+25S3+gksmiKoVICJi4z2aYO/mElNTbcdBZpddk9D"
        "vTsg1LnxJlIAcY9CxMCvbQSs9qOwGWWy4lEp5/69aXC+cEfzxLhgSjlbwTE9yis95Kz0BI2s0sk+SRvrmnOVuXxj8S3t8eIy"
        "S26/Od+MO4qtK4GEVj4oY0cRIE8SIipH8zQhwew9kQUU4rDSjp8eFwmYDjwiEIi82a+Kccw//ghX/wfYbGVPL11iQBXJT4oZ"
        "EZFzoNP2ch2jLvFSWbfbfZVdpB7csdZOLWpPSvTOTZi98Q5BZ3F8wHfgtBiRt5Z716nEIljGk0k6ogxhfSDy13Z+JB1AjJSn"
        "c0qEqsAgHq0V0QI42VjJ/FNuoMwnpSBfVnTg4tWEGzjY58PIL5iHqS0tMevtGPpWGgYdCAQNNSzEpk98oxeRmPdu43ceBTym"
        "shPKW2VyMZQzOpRiKEt12C/jBDXXpwz9N7iFrTa1IXvJqJmWSXtv+wHaX8TT6a1fhMXD8ZaNkVyF4bRVyY1kgTodDrQsyh7K"
        "IUU5adbzKTokxdrRGWXIHLd3ml8ZpLHuKkpokyw2Ik0ZVezIzkVcKUR9tl4+Cq+NAaMfBJhdq8gvSb+WrCwXEq7lR7xaocjN"
        "9h999WjbfBTus6quE9Cy03fzctTJwAwkEhpHjeixcy0gKXWCp118sUGP8uGC3dRutqs58JslSF0qSSmQUp2lVKchidEZQmUr"
        "uff816enH7A9dCii0QYDZxtpa1i3/1Db99MGepXEY7+2nsdrkNaXICiOKV9sReqDoska2qPJKnzjRQVJyvrUlmmIoKgc7G7E"
        "Dms0+gOHUypa3JSbD5xB3P9n3V/wFi8IXhYA9AqWnAiqPnByzzycnsfBGUs+KmAKSenSgzbZM4kmSq5TBb335oAR7odP5MRs"
        "2cBuOgg2hpov3X1JshlyqLVyx9FC9GhP5BbtxfvIOoXuGV2zuDggbd/tgBx8JDACwZYSyovSnWPTK6Mp4IeXRInRJZqzIPIZ"
        "SSwAx5nmQSsDKuQjyC95Qtnnlesrxp9akq0dKvwnpE3sa6u9O0zmTYrKe52vy/YVFCpZNl+t62Rfe9UUC0MFvhOsrUgB8xso"
        "64OX6WWa/VtJMd5Slax89fSsafwBGkybTyb6tdcKKmzmTXIF21itICUa2vjXUFylDETS6VjMUnTznlcmXY612R8kuUWKSzS2"
        "BLoiTOSot1Gg4L3PG8ciWEbpiA4tIA2xzOClK+PDV8FlU3i+axXMr7AHjQGDbDkMCIpGskwv0JBBssH17dDw0nadgghI0AjM"
        "wicxIIyNqwrdhy85DJRSl0l/pFsFYCtezkCb4Wjrf2Z6Y5bXzBPTMJ48Sl26pLfRaIw/VjxCGNT6GxKUfLYR40t5tR7LH/c0"
        "kygX821DqC/ulIVTvxgZR8VwsteYhrPBFso9Jws9Oh1pCztJRyodc0fKv5AjnNvdBlXc7YO9ziyipffCh6OTU47jwCcPBcxd"
        "JHPblLuhzhETY12C0QmZGfBoJVImLbnQWCvHY4S5DQei0x+UwpqLQ+wQFcgxyv6Ue5VbHNickOpMdUF7U+d3wbHz4cdVf6Rx"
        "aoo9wLs0xzAFT1PdFmDaS47msoXRKsVO5uL03z4c4l7Hg5ibVdtleKt/xpy8meybcjFw0vYwZEnHQOMI8OOEPfcBMmOKQSYz"
        "dUZKpp5jO+0kKcJlJAGlU6bLxKX2+c+0bQ/dlJQSMGi3IgZCA4ihGmQZkJ5PZHCM6jgyAcCfgCsCA0mWJsOjlHsKuN5ojT7M"
        "eTrGSJ7Sg6SLli8UyVPmYhLeIC+sdq8QrJlSQC85NJ0KfSD0zrL+4itSnatEtDakVxnIOT5gnX1eSjxNw6vllBHVrCel3ZWh"
        "I6QkqPOacnYDi4XHodilkaEF4TRMj7PSy0YuOiYAy7EgmU/YqUomw6HTQjldzkX0Oo6mHXo7QB7qFZDAxjy7cYsxSJJXSvIu"
        "Gc3VUHreOxhcg9KN+9LgcydxknEnUsoWoiLoOK+SXvJIh+t0Oj7mlr/DT1DLmzcoDRX9Ii0Lw8IK4KS4j/mKPESWovU9wKxJ"
        "L/Vb33LpQvjhZzC4UwalKA5MIw1KuoQKYleUtjMykem6qWJ1MMTYBebRiZdicZniXkY4XM2FqtLCanIKSCfD53M3q+dzgZPN"
        "Mc4S2ExjONuQnltxDz3J64thxr2aTdtqeHQDNXmxwAv5mjFJxH+4BD1ZS+t1nl7O42nPhiW/qle6curIMWqqDRtaxrvD4lXh"
        "kED2zggK8JDmJ7TtOBuMrxpDdydaDEGKH9L5akcswgieutcYX3K2Y/8pURFsDnU9p+MIJceCfbOtk5BxVGe2xCitSbxU6EgY"
        "autJfj/G2syuc1ccjxlkGli8y2Rfqo2moVz3SqiujZo90b8ZN4nNk3F2kKjDSy0bMV/W/Rmve9ERQyUE23O5mpJg47I5yJFe"
        "rVYL5LKIEfnijmvc85HwxR3O/d4oqqSbRmWYI4UL8tFGfSJH8fYZxgxcXhA8RY9lDSy6l0cjvRaEOxhZlAhs3dMeH07kZcPg"
        "mwTanO4ehkYptJiRjG/x+nuFQUVhDLgSeCgTucfTCMi2jh1XRu1HI2P8xlAYNhHfsJw6lQJxxTbZuy+zhJYrAiWlN7qyslKM"
        "3uh1VqvMueydxKoyNWuJrbxEGJe4wDACZ0DghBMx4TMcIPqjTkPKaXmBamNHHK0dhEtuQRt3cQPzzNAofIMXocdErjlgHPKl"
        "yClsocMPWWBRvRhbHCdb3BOIYxwBX6c9Ut8Jm1htR082C3iTTAxkT2mX6mxkgwnti/qeP0JTXFMD7HalD3Nu9URe2mc5c8l7"
        "rlk+BZzYk2H5o6v1/Loib4k6GKhcKx+BvTenBJAOKtWUtOcdmIOikeZ/x7CF0sF+8Yih940hfVv35Ak6PSK+yH7zVlzUepVN"
        "VAUqZEkMBqsgxb5yTCjKvpk/5+REbwgOQ1TWoUxwCKx17iVwz2JuSntYuTqpx5241fbDLMLQx32FH4BDhb1xOjbCRkE6qpQ9"
        "2M0AMFuED+fG4d52Qz0k+0k1IokLzrqShUlVRYS0z0jP6a0w8R4GAkSzdJSvQF7E3bC02yblDnlKwXGPcsEyk1gGEuyJ5fkZ"
        "pv+aJfGcHJ+CRmHdtBpy4xmCy1EXCy/ZDLA2TXvR8G3ZbUnvQtcLQR/q9oaCbZ+kHGJGNtVC3dLZeUELvKvFdCzMPdqfx1c5"
        "Q8yz9ZJ8nBxyuSEyOyuMuMq+IamFq+QqF2f+TKqamrbnmQuGCitX9+qZgn6xPaAlDCmI+9wlpUh1rEBtF9eSs5qlAAdS6EQE"
        "LW6DzUvhyXThQASaMJUPquPFbAhu4/gmsz0PMXW8VuiEba/E2cntbJhNG4Ri3+N5tsqW548uCtHIXC9KdSt+0Sq2uCBPXA7u"
        "jAwoC8vxwGI8sBQF6JR8G7FOCSMqZZZKocOcDhwcNXhioI0H6HFCyqii3mbg6ORtQvRn9WjU34UuH4hxW5CNyEQTFUMFfVGP"
        "b744sy3lXkxXFmcJ3Ha+khzxVRGcbBZRadZco6S50u6pnJIU/W9FVriAjHRPQixYunLOO0x6gyFCtUscM9HZ6Fql8GFOwrJ/"
        "RSWwykbC4gpPC5pueAMWIAaSY1srq5TyTQXhjlFc+HltQr+mzLRjdVJz4RFMaq94qlILDVHcuFyjwQhusME8u1EZSDafW0qg"
        "wZP0cFE2qHAvAGxfaFXssCPmzsmKe4hfFFCl1IrpxLqQdx0RlI/Zr78qqqWdcsrBO3VRgxWIqGL2ay+QJL2oPRyDpbw3tOr5"
        "Eb7IpCRGUzCCNUeNxc9i72Ooz8ZBhdGkoi+VGkEnlMV36ZyC1fMc4StrQmi2b1/2gGyBuMIJ0jF8DadrUfnOciZLknkFBwBP"
        "fZUBc5EBJ2warka02PtlnVJgOXYzpTsJQU0ux1s7bwG7wHUC4GTte0oN+kzhEBxLFiy2VPnXqIBoon+tVnOazwLvhRd5PetN"
        "IUSGyiFvgKbSxRfRjreCiVDC2lxOp6sNHegWTCOZdvM7LaWARdKWAg2hfNTo/kzRVFKYJqWd54ivE3VpiGzwJWv3bxolOb/k"
        "JSFieVCd93xD1We2g0UhDgsFdLZsK55ycffHXVsdAm5uhDdaZyrf/rq6m+V72IeMNY8lqxDJD1xdOTnjMmAkrk+wMwGxMJku"
        "7XNKDfkupXxy/DsGiQw3OlPpn1lAVjfPM8yPwfqVHLgX2vNqSnwvjVb4IuYWLhk2xS54WsookaZjUprQbcAsnfuueYeZQNV7"
        "mORXsH0ATr4O27Dlha7r5jiZxreqB75voD6hUrPRgd3IBRQ82Kf9WHD9hKIcV0GpdmxrL5Os81dP5TyS4xNQ0jGXeCZaxer3"
        "7QcNhASWaiRPQm+t+7KCdag+970BKjIvVCRdUWMOPKeivrx2wu3q5KM9Aa3eDoZRZ42ipRpRp9TvDDIiUcN+34D+aFgTVap7"
        "P6ED29+gFww2j6dsQ4ab2Kev7KD69HaWF7IZPBoSU4X6ICVWyRz6wXsCMxor2BC25NwGOPa3njFLlo1SvmzAFgBwedGKQXWE"
        "N2FWL1ayBXMolK3qaYZuOH5p8DygQt8Gpokeo5JfOCnI7E12Oc2G8fQUy5cJnacfgSyqKP/7Dd8cGkKO5kf0ouz8Yd0rGtN/"
        "urwIqgSMz9zwpNZpuDmirrqQQS6TAyjYyg7bC4FiDHNsJ8sTQUJLFbdkIeKUHWvKDQ9Vzu8BEFd3CoDRaPE3TKakllEq/Dp5"
        "xYxVCHJl6wh85w06RNXZzIhcGEgaybJp/hmltsHNOh9vpXPtzxlD6/PR1SxeXoOEhucWJpVX+rec/YoPPnxPZxYek8uVYOoF"
        "JQiaY3TAPZp9fhVHnW7dO3l9QH9fz+LRCb17gw5DV/rR/n2AhyC8uB5PDj+tML69eljASPk36rFHo/j6u7CLJipvDl++PHhz"
        "cfwSurqCJaUWc/ULBmLFsK+TPMX/PaGekGPn//Kz8TOoeyUPAmytdDNeL18aqVf2R1LP/gpaswxW6mVdsNQqvHMV8NjKejXZ"
        "If09SFQyz1X2mpXG2Yx+mJj+/PtVwr9hjPGU62C6T5w9AuKHJUDJSfxXN2kd1ZvPgFj9f52FjsA="
    ),
    "dsn_inspect.html": (
        "eNrNfd164zaW4H09BUpTGZFVEvXjn7Jly9XVqWS7ZlLJfKnMl911e2JKhCTGFKmQlF2Oo+/ry72e2WeYV9j7fZR+kj0/AAiQ"
        "lMvpnoudTJclEDg4ODg4/6DOn0fZvLzfSLEq18nFs3P8I5IwXU47Mu1ggwwj+LOWZSjmqzAvZDntbMtF/6Sjm9NwLaed21je"
        "bbK87Ih5lpYyhW53cVSuppG8jeeyT196Ik7jMg6TfjEPEzkd1YDMsyTL4dlKrqUFKImXq1JEYX5T65/LhcxzmVt906xvWqFz"
        "Eqc3IpfJtBNDl45YwcNpJwrLcNLD52VcJvIiKtJ+cZ/OAb1iI+dllp8P+Mmz8+f9/jMhflhJkcS3suohsoXQ43qikPmtjMTs"
        "XpTQk77lIi4LmSxEWIpzgv6v339zMVAAAgD6XSrFIk5kT6QZQJ/lYR7LYgLjRLxGYhY4w0/zJIalBT8XYpFna54Alq9m6eHa"
        "U4BYiLu4XAFY7FBmNzIVm7AoAas4RVTEIsvXwksloZZSN8DoTNzITYkNhSyKOEs/wuLCpUS011lR9nAcQY0LUYYzkaXJvd8T"
        "YRqJYpXdFQIB3uOjRFpzr8N7IHwYibAQIdNumcdRD7sAOIU0zEctYr7NiwwWs5FpFKdLcZfHpSxoFjUa2a9EqsPub9cyj+dA"
        "PJlEgdqedZznsC2ApV7QWq6z/H4CQKxtS2R4C4CB4vNsc4/wcHrkCFiZiOLiJnjW78PGF+U9MoAQkzzLSvEAn4To92fLifiH"
        "xdHieHFyBl+Lbb4I5xLbFguroT/GptNFuJhh6yzLI5lDkzyQx5KaSvmphIbR4SgcH54p6OstbBi0Hh+/Hp4cYbdFGKfY7/Qk"
        "HM8OsCWczyU1HS4Oj+VR1dQvsgW2S7kYAjIKZHaDs4zD0dEQu96FeQoN0enJeHhMqIU4oTw6PDmM8Hsq7+j54jXDBrqnS0IK"
        "Vjiaj7FtmaW05EiO5VhPVKzCKIOxQzHafBJj+F++nHmjYzE+FIdDMRDHXwDf8NOD5tOTL3xDhSzNJmIb04diA+Tsic7Hr8UH"
        "+NqBj1+GID+iODQN/yTLP+ZAqEK3fJBpkvXEl1laZElY9ISBZLCVeNj6Q4eOqnEEjUMZHslTq5E29OhUDmdW4wHSdjg7PRnV"
        "4B4iTReH8H9W7yNoDE+OjhavrcZj7Dk/PDm1J3uNPHD4+vBkhnB38L8/rCWu2NuQeCv6tqyckHD0FY/a/Go4djgfDUevXY4d"
        "HYxOxwd1ph2djBZjl2nHR2N5EFlMK1/L2UJtvM22J/L0NJzZbHsUHZ+8Dh22PZmdHvBZcdkWpj08tIAS4x5E0fzk0GLcxdHs"
        "8PCgYtzF4nh2PKsYdzQ+OB2HLuMezA7Go0OLcQ+iUTiKqqnaWXco8L8BsKdmzRrjVCuxGOfgZBYp2WAxzgzodVhjnIPD6AB2"
        "vQ4ZWWdx8nr0elRjnfnw5HAxr7HO4vD1eHZcY53Tw/BgdsKQd4qBXooHMcs+9Yv4VxCwE8G7C5v86Yyeo+7vQWt0Dx3XYb6M"
        "gdwgMmbh/GaZZ9sUKHkb5h4ylH8miP90C7KFz2AUgEWGez063HwajILDI1Hcgypa97dxT/TDzSaRfW7Bgy2XGaii93Bsv89m"
        "WQnntgjTgtaDxL2Ts5u47CPEfrEG3l4R/mGKlkQcFjLimS9XcRTJ9ApmBzG+SUIQ/Snst3jO2hQGKBS3ZYl6J0432xJ1dwKq"
        "weAcpyuYuDQrNN93pLYikEUBShM1ADh9HSf3mhL4BCjByMa/ArMNg9OxXONwGB+U2QYGbrIiRt03EUUZz2/uz0Bpbojav/bj"
        "NJKfJgLkkVnFIpGwSbDYZdoHtbgGGwEPjszPxDKEcSPg2DPQ9lFElBkNkYnhH2YAewNZaqzjTx4qfGDynsJbSQBfnJx8ARo5"
        "hw3YhDlM4jMHRHm26YOxUqJAmCXb3DvZfMJnmouApOsJHR+QuHGkWYUeK9YIwMIBff7w9IWd4rqIlncSjcCJOEYtlsgS+vRR"
        "ntOC+8NgOEIa360ACrVL3Pu7PNw4Uxe3S9y2BAmMrOE+XIdJondVz3c0HNZ4nWSdXhGoHOCruYRhrZ2exCG8fRmYUYsEpRDz"
        "MfAEnKp+1SyTJN4UcbFnmes4ZSub+Iiwox65WfFIL7dMSRawdN+7Zc2Dr5nEbHsOWngLm3bi8N8xQOQ1sVU3AX6PeVcf2aAy"
        "naxwsQa1vkNRUih+1TnY5DFIKZQ1TURZsVR4OpDMQ9XKlpvLZUNFwidp3To+Gq7WuTtGehMTexnmj1PwTmT/c2fgtUNbNJzo"
        "fOMHInttK05Pq0Oj2Ss4ap4jWGFDOji73B8b+j3CJPs3NEIjRCiOJExXau42tI+GX7RxnL3rl2ik9+G8leD6ZUS8zpWepzk0"
        "uyH8P1nKHf9Duu2VgjBGjMcNAdiYXXsv6fIxDNBigdFhCozB0n6zTQopRgXs/QJdYfCyUKKmALRtjYuFtcie+1Cit/PY7GAe"
        "KdT/cCPvFzm4jIVC4AHUDfyTofws71FFHTCXQuc1UBw1lGY40iPQ+kkLlxGwDjcpE0GE2zJTmz4P86gVm7roeEzuuJzBksTe"
        "SAWRvvn2xBcC4xUkQp6uO2kx2KuPzDsRzMKVMkVrEO2Y36nrCKHV2LWl7FN52K7baDCpj306hXqU4VKrKluJtA74O494bT+O"
        "XVsDRpGEIuYZvESXC48GRxteDhDXJFsST1lMdDR2eOjkdkVchDSqOO94o0xTBWE1sqkJ/x3XJB0D3WsdWKA2NUijk73Us0Yl"
        "4Uw6InyWZPObNt2hYeMua0QtQGR5XmLkbboJi+IOKHzVa3m4zZOrSoiOhigkXTNPn47ft4cnbbZhkzWeZr0ctC1ussjm2wKF"
        "zLZEITYhr4px2yt+lWYWh0dNG/QxRW5NHuTZ3ROP/89bML4X930VOwRbHLVYfybLO4nml2Va83b2yUgfHbcKDBsHMA/mN79H"
        "CJ04ArXGUIePm6BqTtIHdZHBOsDBntcDX7U2BvesdjgCcLBKc0DUONvEU022UOSWfezXYJc9y2ER8i4sVrMM5aeSH+E9cJFN"
        "T4wkntG/4HquoQ1sEAC5XadAWVgcSBpv2BOjRe4j+XBGojMLCGcfQJ3mpbaX40ju985eE+nqOISGJZRcniWy+BtxdcC12fOg"
        "+p8OGyDi/xw9Z8DYKt5ScdXzQAu7p+kY8lXoyKLgn4jtZiPzOTjnTXkM4vgIOa7d4laz34bJVrqzj8ftGpNaAJsYHPy+Cg1P"
        "MB69TcIcG4p2nUBeuc3jYy0VW43a3+GfWesotrMn0/C/cFoiX+B4tGp6V32zehobBR5QlL3PxgvbUiY84gxqs+FfP00VPapy"
        "bEPzqGJZRgspYiNyop0hw7v/wFmCpop2VKgWfePqUKiBAZ4lGF6UeXYjJ3Xcudkg6A4NP8V4OBfg5tXdFxUNG6Ij5ipSGwDq"
        "SQOAwxPuhGPTgF1/zlBbECWd9jked9VsgwcBUd7XEHTiFE19LpeyLWDTUH4kYQ6NFDEbNGQDaDTe45LaswDfp3+De0z8vN8L"
        "VcBj24qyfdGDFj4e11EzR/gzUqZNopFSmCX6NJFxVOnWRGLomx2oyr9qHNHTv8XI4+P46GljiTHPMxITlUxhhPAsGjodmqPC"
        "mT47SpOEmwIIX0gw18iVVY8qkV87gK3sVq6eFhkdfW5VJCCJYyYCCdy2MfujdZaYJmVgNuJ1zdz+vCO4ly3LVQA+ed1ac+xZ"
        "6AJMha66tZocV6CeR7YkPP6vwc2SvuOT4e+MShJW+SQJC1AgqziJGMcaQkONvqLAEyOke0JYGhaT6nfBaqHrU864mvDnIkuf"
        "PuOjziWiHyd1ZrAjX0DHYJZldVU+2keUpnfeHiT8OwMDNmpBmW8bUXAKwVEvygqV5J/UQ8L2cxUBLh+NIVWSy5KrASzZPhA6"
        "Ttoqa2BsFIfg7FRaAaxt7wglb0/Mw2TugZy6vRN9MQbx6/8tUauaIvyMu70noeaGL9F7EWgUOdnJ8dEXih68pslE52tqRKR8"
        "O2pksKQxq1kbxxGbh3YHx1VJ7AxaQ1cH++NcFY/uPycO92rZoiyMML2/W8lcOhOq1J36htQKcxnuDZWcGG74/yNS0sTb9sjH"
        "7LHmkocBOUAVhokzNAipeKZoGmdVQKHVaLJhRJgg3xM0sPs9EltoLM8NLYx1aKHM8YRKpROskPgC9MUKc/diHIwLIcFl7IO3"
        "b0SjyuK3DdKP2gbmQS7X2a2esLl7WAngP+bMRnKe5Wo+skTLFQBYrs44MqWsFBVDB6f2uGhE26u1PXDtVhsi8BjJzSF5+7EV"
        "ANM5pAbsijp74asuT56DpOoiy0riDPcIHTbs+P1B56fEhTgvlsApWmVJ5E44Pqlrac3C+4NHOl1n2TGnaMfo0pgqlPTEeMyO"
        "h7UEhoAz5iCrWJr0lSu4a8eBFIvBQZUAuGHcw41zdHdVV5Nj7tUT1U6VgzuGU7xmjiMj/7hTPckzGluTVuH6KjRycLs6q+eE"
        "NG32xWtGp/ZKmi6QSkrjf2xruhEv9Um7Ipa7NKzm1q6L46oMLfTo9NtBhRPzcPfsfKCK/M4HqtAV7RBV9gqYzuGMFdMOUKCD"
        "hYDnUXyr22gnqBXasayAq10743FH+Zb8Geti/5h9mnZQWY9B9R52BBqYfTanATjYTZ2L8xxjLNANhtzTvxre0IIHn3Poc9wh"
        "H37acdyGzuBCVRKdb0LwpaJp58NrcRocrV4HR0l/3B9/GL0GRguO/gSNyViMNRhkn46KIEw7mA7vOIEHwscNMEw7JEA69XiE"
        "bh9cAG1vl4yRKa89J869sKpsuQFpOwDi0geKAygqa9bviDiyviFw6NXozvUOex9jAp4hIc9ui46wE6pxlCBke0CUlQYYP6gG"
        "k4nWuUizUteyykh3rabnUiPDNGXK84OptZRlR/lUgmqNp513caFAUd0rKzCrpFaV/3IdbufiawLCz84HPJNmZZlfPHt2jsec"
        "0CDTTiFBsT0644yL+qhQweM2z0AsSpWB1jy+Gl3o1B5oEcKCC5BhwpHqs7n4F6w4FqFCGDreheV85ZQIx6WpDe5RZW9wPtgo"
        "AHjAEKdtnvTz7E5jZRibY9KwGurSufioyqrPB/TE9GMRQyk06qiBdoSlbKadVVluJoPBaPw6GMJ/owmIjuEAWXXw17/8JzD3"
        "BrxbSubAloVJITUxNLO6KNGiOxc/8IZYGDn46IQfI8VjXLTgvIyCPQi0bBCQ8pdtnMvIIqLaa6RhjXiaCxAoMLeNGbWBy8GY"
        "AfvJ9YyK67EdwIvvVROXj1v14HX6N9heqOqYjpqq2M7WMRwfxVIV+9bJay2GKx4qnu2rBlABADFMwEzG09o6FjNaFSWwiu9i"
        "c1+uAMf+morscdPPB/QAcU3Lgg5euNl0C+ZmsKfJdMKA4DLGGnKsLVQ19xVYBBTAufyJBnm+AtoDUwEAbMAk2sK5MWPtUXFR"
        "bKUaBwSaAgvo4WoKD3GqatnhW6qK8O9WoIVL/IfAF1IWfkB18XwUuex/mcnCqv0PXHKfD1BOXDx7Zp1EIIB7Cm2qsjVV0dV6"
        "xHkwxeP8WXdzO5I4stifh6RZX4/6MYyx0AaPGOG9iPMCBWRxJ3OgkLXhDufAl5DMNq0b4PMeFCitZj1rQRC7AHM5aweGBwam"
        "cAbPaz8me0gpG/lL5+Kvf/mPZifYZO4iN9l81bmgP6Lqaq/md6JFRn/xKF4Yqu1cDNvRutgQF4E+iv5uZP7FudPxKE7q+sde"
        "tOxOfcITGBBElqDkxt+N6ffo80WfIRv3eRxFZl7wK7Yod4as+opW/OpfC74W4yBcZeVcNtWqXgi7cXzxjbkwA9p5XHv+uMVk"
        "d+TMH66HEaBVKPuVKDbt/EBNOJ46fw4C3dhxIXxrX+Zph1TZNHs21WQH0YADY9xMqEw8CjZCx6HWFvF66WJRUayjTNdH2YgT"
        "Q0oZ8efmvqqdrIQTCaSLutClD+cDNtaenesIF4qFKAYx36lMuLUEnQUPuE/H6tTH58ZWO7CfkHWJ6K0OHHPE6nIj72s2CLXY"
        "BPpnbNhrEJlIlgUUQ+QuDD5eeCPsnz5+920ruPOBBtVUN+TqO4tmtf55e0F1/x0GgwqvdZ5i0lgzFOEtHBCSFnC48MvFR/jX"
        "tW9aoXEszgEWSTTyDDj19eId/W2A/PyxbvNGFOw5+lVgHiMXpRk0xnBu5MWXSVbIPcaZthawAbkReRf88Xijzcl1Fm2R8Z6B"
        "EgGN/UJMhRdHvpheiCibw6lPSzSUvkokfvzj/fsIH5+p7h9/+O77t//tq5/++av/AQO76EMqw2dAFk1Xd/z+ux9/+ub9h/c/"
        "QLcDjB+r/xsMYKPBMory8C5Fw4uF8JkyIrDuVqRhTn2wKZdFqUD++P7bdwD1w0cAeQwugQYKIOmuIooJNAtjvIUJBAbjDu8A"
        "gGezCgu2wtZb0ORgIsM+3iuoH97+958+fvX9+68Q7InBE6Gi+6wxhcEIbaKQImUjdJwPb2RiIxAs0XB/eP/hq5++fv/VN+8A"
        "7uDfvPK3svgNcaN/QNetN7+F5W/By5/C0n8xiM+ePYMp0TTUt1Lx0iTZ85twKWFhYRQBNfhCKYbLOvrWageNYHW7dY26DVAC"
        "dx++hQgTq+TjT8IbhJuY3aggCHwewETmu6xqjLnJyuMCtR4M9sNKkmxO0dcAoxl43zfIJYkob/Bnjc+fB29eDHqi2zVsg7O+"
        "LWE4QgkoY/zdwusyNlU3mB4EfvSveQJd1ZiLqRiKf/xHa+I8Q18rCahGrPgRqOF10Wfs+uJN1S3LYwyYvWLEJyLdJgnQGA6p"
        "Xu5UtWETcMTmR3SK0SKCE0Hn4WGnEcN4UYED5J34EG48/0zxHfnOfeiKVkCPM2Y94vAJdcRsKjwuc79HOg/vBVNQs6eYHZh0"
        "sXgHT3aw/y9Fv/Z/OoohBoKjE80eLwfPni22KZsn6HZ8g26YBzxW4IXhKe4DBTlfeF3y0Lp+oMIKU0Hy/YwfoldlPcIQmHrC"
        "U+95qKIC9tPnz6udPLNmZlEPPVGbfMkFntBdoYo9C1l+pECO90D2IBy4LoaAumLnK0gsZ/yASllhJ54B5UI6M4YKimgeoNZj"
        "T4spwJupzgPvJpwz7OZX/FwkMXDzsLfncYN5CS+G/KBnfvfxW7GDGcK70Fwb9zQ8Nf8r0R04F8m7PUFT4W14Bqr5tIJqLakH"
        "0xEyMnr3R+bvikiNjbY2rLbPNgs0N9p+qiN9jQ1US9DPK9wDvLhO2+lxfI7PFamsaqvVI87oxQuhGiiGDQw8BRZmxkE5oJ6h"
        "/82Ptmm4BYGYx7/KqOubG7a8FM9cEa1ORveH6mUAQGrwzCMVNyGf3MvlLXyA0yw/bTCAQ0ECivKFaQbSMVeD/aDrW5c56XNN"
        "jpCI0t8Vrxou1RgSyu41f5Ume1/KtWep3MYUnsUnb4I52gWeyzos4ogcwquEGd6wJ6HGKQI4Rz59D5Q0YijcY57IMPfM8SOf"
        "CVhAyf0vsaYkl6kHz0x8QJ0K67RyJgKFEaGHuhogFLxDQBWLZ0HPfXUL2H8DelqmMve6HJeC88Hn3JO3VJCuWIm+gVqgv+/k"
        "Itwmat95vbyt0wY2QQmmot1xS3rHUkK//aYEXMsQ5NPng3/DqOCfg8u3/f8Z9n8d9k9/6l+9qn9/MYDzUpQeSyLNop8Rit23"
        "CvEky24KsEVupKAQ5PlNHF0E6JDmsrwIusyC8Hmbp/paeok33qidJVCLQKxOGyCio4qAhQor+nWOhK2qs2OPHAY4pjmwYry4"
        "B5ldTQAHgubYiTkFmz1apl68ezqrs0mdAqUQePwzPFnPbOHUZBBg9/kN8IdnmMKeoAKPvIbQ2jQtC5Ze450Xn1G4dSlmKRrc"
        "UNhJXjFqMVBmTmaia14TQgm8bvXlr3/5zy7ar3xJo4sB+W6P4KjrZ9CoPvVw7/N7GAQjiH4TR0gCEyvxiQB2l7ZwvcKndkN1"
        "GJIsjIwQw+d0WlECP7cbgghjpm/Etfi//8eMefHw3exnfJ2KEi7OAGU8owCJtqBpPTCKZrRvIejEWU8M/Z22sK/BcGOJAfvP"
        "UGD/0ZBCSEo/NBZg+lI2qHGyaFteaWTrwMkvr4BqMwqp2CVJpax0ZhNKCaHFrAJe82ytIsicXGF5FeINv0RFRzF6DdIZ1ErI"
        "sTfxy1ZuZYSACSB2ggPYM7DpYmuI7gC9ugXjy+wvkZdUTZmlKLo5yBiI79KE3nuDcNlRERhbBLNGRvjylzmWYIuZxOiHer0N"
        "pg7w6HK5F75cJwROOBJwKorMOFIZGgUJ/EXIQ3GH4e6U7/8L8NwwCB9YB8RVgXQayOKWv6BFfXl1pho4zFppLOU5wNn9nrfZ"
        "s4wHfqj2YFppQGqoRNtzbvAt8cgPuD3gOZ+DGUGf8NawRsPucWZhCwINlh2Sdch9KZyoXgOEb/TJ7lAs/GLhmWZ3MBicXfTN"
        "0UIKoMUIPwAdbLbFyruEVi1/QN7+cuWbiw/Akh51TGS6hK2+EGM8igi4TxAuh1fw/9B+BI6xz0CLVbwwMpYxuSzBsC2g41SP"
        "OtPKCJmjcVZ4gnLIgOGce16FH04Ncw2gUffDbyPEAABlX8dgm3ojHw/xkE7xrtpYkF6UJ5xapiJ897yHhgTeWRtfbV5l6uHx"
        "lb80rVKDKODyTYbvtvpIqqoyCmEk7WFT+/LWdkFOOIzQMk7Ji2se8eLB7r/r6cMLJwq1afW8uN1d27YpMrln2ZM0iaJAAz3V"
        "flbrh7H3fX1h7xShVYPnV67O2A/W4K16d0Tp6xcPYAhudgL/kkG3G+BHcGZ3136AFQUe6Joubawd6Ve2CAo9ikAXnpqSicD6"
        "3LbM4rXMiRXL91hEBOrC07ToMR9hZz68+vxrzkEnnExTM5TAYXmQa2cjxC/pjFriR4dwplwE+gTzWI94NWVLmY690h7qWYP2"
        "qr2V/4wtzfmIxljYBUYB63Z2HGqwm8j7GcG2dru4D0UX+WlPFAFlOdZWFZ+zZqqdU1tmmTMpVbhNhdLtwA2mV1Cgg+vXKIkD"
        "kJI00GeBzPiDHvGwFcgKxhzNSN/1cbnEL1d1eJfcBUFcmR1SfgsGnpCTrOHizZvqmaK45aFUPq5F0wtmBwtVbPbrQ1vdX6WN"
        "YEN+qLxJ88K1NFPRonuwXGjHPpNCtRwl4HiZq30xFq1maZfZ6+SEpdt7SHmraRXpBR8CzpoK9qIYJSjs12LfgKLS3+JGglCk"
        "0eUs6ZrH2hTjpU1pq83DGKzZ/E8/fPgGuVlnxTARRukvJzSOF+dVWs6p7LEeY5GlSUaZ+LlTKlGANJivajmTrzmojLaSm/ew"
        "H1y0xP6BlB1dBPQl0QnUPl5kpny/KjroFuIPWfoT0xF8xzlaU37n4pX4PrszMXo3VebkJqlWDuYnCsIfKnk7L3PMudA/qoFq"
        "4OCr/svdOXWp6kJVQQCmAPD7xbXZCbAw8/uPlMHLwF1ajZuKXm9cJQPBcxEVF/WEFeKctIKlR11fxz9NsJRDnxPxsDPhzwmY"
        "UjoEiiZ+j3d/IoY9VWEVWQCU3dAyJfqCT/AIMXXj4aJ6ZF76/j54agmPAXSDD5piGOidqlAEWLzge3I4Btz+bgl+9RtzVKBn"
        "ZYfiMDQ/MfS+AGcuQqsOG+OUZReO8m384aGtR1vWQCeidQ38pGUNNJXKvtRWoeIeoMBALH0ZFsZIySWmCxRWD7uGckfUyGYO"
        "gsCOGznYvk0S2EQUKf5VPcAUp4XMyz9KkI/SY+YjmIBoGoEdSvjPayLogljWR9lPO12FsTDWVCkQX7sdLHWrAKkdBbON08q1"
        "UlA8cIIabDAjbJVOIdTOKgJHDDJk/6ZGQcaDsQbtwIC07c5agHBQswMQNcbtU9cUdV1BwRe1ZBPb3bESUfuGNwdLcqvwAIJ1"
        "lQRfqjbP8ClGn6u7WHjLiAIrVgiezvl3C1qerYKAgb9GOa6JhMLlDV07gz3rxlFXK+C3eR7eB3FBfz2rL6mBwtdenbjUIHsC"
        "eM10VP2uLGdSkr7HZX3UwSHkgbTFDGTTDc0MN5ZRnUorlqUH0YzWGLKRGJLv0/R4Kj3qZkXgXr1K0aNDx20GiuRGh/Fa14dQ"
        "rpSl91J8LzE/WYhrxOt6wiGBEFiQXreK+VUYTO47VgTi0nsmbZnlWtbyMCpsxdfKvuR7DIG4Zja85lQkpQRv42xbgKLDkFR+"
        "Lzzi1yy1LBh6maMOCBAgqnoDQ9Nwh8P5itVtK4WZhzIfDhtp1lDNyhX58xBcEZSiyi6vP/NtKdeAbbvHqGs1X7aqB+qA8twe"
        "VYRY+FlZxg1OQc8cmPthx6MQSCN8DjurMSdXDBRuTOJFAQVrIV6m3j7LrVyh4tUesaXbQVX3hLHiJiJGJx7NJeBSRvxyfsWZ"
        "FDjPGANGCxY+ko3KPh6wECbgfC0/KoYvc22I4ytebHfJ3PXRUqfqZCUUdmbPlXB05CZutc0dztQoMWonTfWtIgNkx3tKn7Iq"
        "xQAmo8KsT74IKtVqlMZVdUDFQYeIweNpvDIRBMpj/QCOJ/jBnvZQneFcIEJTnDWVpgCbaHSoHN3K9985tMHF1RwvWozRV2Q8"
        "QQ98pEJEldTDYB2rYXxMMuRSy0mNJMH0r5QN4Hk3tBIgnSEcPCQnT6uHAMudQ6WiqlhdamJ6za0ihVmFcai7CWhNq5IRSwpq"
        "0EoaTwkX2gHj3eklLHmbLLFqWzW47fjYtWTAxpgn20gfVu7rY7C3ltlQMvwpo4GR8N1FcbqVlQJOOcJnjDfL0i5i5ToprUTd"
        "G64vMWCZXznHzfjUBMPmZOf4WUfPYcadUn8mjEr9yAQOSJSTcGrfS8ZS7SYCKQ0AmsjdjX2baEVqSyugR7D2SjojfelCoWVW"
        "8wE4qxLAGmcWrIi2ErEknsINRsJojfvFatT1zWzV6oxIAKzNfDHYsmVuVXhQD7Xofdzaq8xUTQplQ2qOxROohSC0KU5kxUrz"
        "dekKp8lFC4kvE3QBKSTgkyXDSGVqcA9PWUWbCFQXunKOFKCvAYdkuUwkZRVxreBwPFfTVPuNWzzVMVrfiuRzdDQFBfYRmNoE"
        "OWlRFn86zgHhy5D06dqrwoO90TZLeDYCdju0kJwureG3x+bV8Yvm1PBkgoFhpjgYCwxKmZTs2z9ilHCPriWI15hukRH7GpY+"
        "4J5V4KsugfU4ZL3n9lqN0mQZZ8Fyl+IMAtJ8m7FlqWNezoTn9nzOEySt0Qa0/W/E9UfogRZlZWi+eDCddni4n7CFxUQXGWIa"
        "C/xIQRUdRXDNL2l3POE3yBU2YjvGGLEgdmgg7fKDSV6SgGsSzG9sCDuhTpHI4+dRG+TaemYDEg7FV+F85Sk7WVuStqNaRjRd"
        "MFf252V8ZYtqXa4R07Iw8YOSaKLmfRNcMmRLgBvXADYzxn9qGlQ/1yN9glzrRNP6brqudIOQFUZslmoaU0eWOG9LADjbgp7r"
        "Uviua8kdNdzH3i7vGtVh5KcighOeAdOgaibRjcq2FidN46R71pzBHchmdpLQEv76l//d1ZdjzfzKSq+GaQvd0pT1mcFu17pE"
        "WX8FWqfwrCpI5WoU3gfSKTzDhRjJ0+rrOXwdHWBEAgyTd5idstqR0fnrS8rT4MmhvTOVlgY/lwYKnTfqgzml+EWfVIDxLS0U"
        "nH9M7izRYmbob4TqZGZT31/pOBUnHQ99R6XyZLzpOl/34oGG7IT34sEg8/7jd0Ze+NcNjdrcEXzLigxTd0vqvt3TXDgMapMT"
        "Z7tr1/SGGY3rdc917Vxi7Hz/CRjzaesqvm3h0DObTKrF4swmu+OVgjZ+bz3cDvS2HmwRYU5ST9sQL8b6AQnYVdGMrm9Fstpy"
        "YFhrwfqDXhhhFz63JsUGA/GWwv1xQfFXaa5IUGEGgoN1cuVFBatbiO0Gq/Sx6qNYgf4FCGuZL2EvqRqbQ0R4ZR5rRkDqyE1B"
        "ZQNMHhD0nEoAa4iNdS714EoRvlUIBqG5koUgwZ6JE+EmJYAoUSJ1OUnBxSQ4DVU8hgmuiv01KsmuFE4t1GxFZdQVGCqk47sQ"
        "ts1BaHPBEJni06qSw/TvK3Fcz5/poaBwUdgQ0TFVTsoY452kS6/tBjFgdc+mUjUD6gS7ElnDbuvl1iRWT5nuNph2KMT3FZga"
        "M1urethpy8J4PhaXOzDx7sxjBKLiVbXNf3aTT3rLVRKKk4x4z4V/7SlVjDlhFixcHkT2iXNmwqBGjz0FitSLmSLIUsp2iLZN"
        "x6IXGA1cQmWcWMnTnkPh2z0mAcHdwT56wySulLjuOKWcJN6R6bo2w/6SUHZW6TQpq8GUShrTiBIfLtlbWUdVgwKZLbezjp9m"
        "JnWCTUZBeeKGo3tqXqO3WNiaMJMTJSNW2+APv3l72BHr1R52XStOZeavVqUT18Q/TVR6KmQ20R2ZgfZ2rIWwWgs/P89XTgmo"
        "BmlvrqmOeZw9P7KE1Jl0RYAAq+dUoE7xriqb7hlMKYb3OfggjRhTLLLcof/mIA5ySWXDdtYxQYn7IYvChJnR289hQPT6zrpX"
        "HioPgVShZCuip9JfVBfNTZZjriJC1IWc1SyOTLdssShk+SO+WuSMrmlJKt3jC/f6JU+tYDGloWA+Un/C7zttVbVKg1AHkA5V"
        "oZ+KK94qrcNXvOwCIsx0sSds9eA6DbsfSbxmP+WPV/0oL9BVL6C4u7sL7g6CLF8OxvQGittl98xUL+KvOtVuBAHR1H2fy0us"
        "ReqxOL264h/Tc26JmSQMlljqOBy+QWk/UNTe2GWb9zi7w3WBFW3ZOqCLbrQyBZav2eoUF7bgnJwkVHK8IgCn9L5mDTFtT3Iu"
        "8GUy9TxaLZP2pFwaAndubJhw54LTXUw/ayDQDglf5dQ+4ycRqo2c2/6sm5YuOvMWBAGBuKpVL27i+Y3OYnoqH4lk4o8qQ73g"
        "JkaJsOtSYrql0/O6d7bwra4qf6TuTnD55EbpSm0083tEptoNe3LiiAGx36FAOS4Gw6XkrqhuWDl5Zoc50B5m700n/91CuirH"
        "cEtYOhzn3XLCTMVUVFUid7wNjNwyggEWFsJGoVqz5rVSf9adoqovbEd1AlzDwTkZZsiZW3OcqzrySvjYBord3JLk82xETaTM"
        "bqQ1p7Rm3hwPL41MxKX6htUy3TQTqaLyPV6KuPIdymzUz61GNcqYjIVaBnrUekUTpydzJ6MxWEs4dvNBzLyZMm9avR0GFU3K"
        "YBmqxsgJGSkkn3MomDEi3lL8oOK5DdbTjx3WU1VLzG8YYG/g4dBooYUcjXtT58Sq+maiMlrC1iNte6sONm3gwt7ARZU7tSAY"
        "0mhhoiWJLg8hBWzRABP+b8UCHqy4rn4iZAgmFktD8Ab0VjLkmB1LDpaSFgj4txusPLyawtzJa6g1RbCGZuK3MDuq5Xfvg07S"
        "+erqgm1ZGvr3KCraxgg8hoCrghj1Q8Z2lpHLgpDBmlwJRvLzxoa42WNV2Ng6HKPizf3EsnyHk1DLaYHWZO5269YuJ5k2meas"
        "cbkAA3T2rYJG7pB5pE2XulrYjf+aeC+hcGWrT0frPne0rpv/VDYHvkZ/qjislh5kgNQDb3rD3yAsvf7IvxxxaUJFb7PD9Tko"
        "xo5D7Tw+RXx5BCUZeHKu9J1aV/+b4ITprFN9nlrB5ZVveVV8y4SOh5V/VQ1m7LV6Ny3/Fiileug5IvKFONn51zXnSTAVrGsh"
        "bAqZbnzyXr0yVwgYWye/C6bjozZn2yqJgjYnmssnFukcyrkzq29cT0BpPM93zjxY0SZna8QHf2gecZnocreyxCAWvYDZkfkp"
        "3QPekyz+9qOHGRPLbnCOBRC19TzgXLCJCBoJU6UTcISdw8SLZE71phrUvG9mX9KkPmat+iZEdE/GHGkN70NYroJwVuB3YFSK"
        "sL8BC6iW03Kq8dbhp3i9XX+dc/ThXbwE4Y8vqN45YXITIh+TTrKpjZVkDWsuwtQW7RoHAchBRMl5cDx0S6fo9+Dtrn/iJug7"
        "Hg2r3XdI2lWv4gSb5hpfxvnigabEuycMcXftf17a6TdnYMn4kjKOJiyr3vYh8CXbBb7GI5HA/T5WxJGnFIp7MPCXyoWK8TfI"
        "ofGZ9QoQUfyylfJXDKMt8desS46j0tpktJSB8X50YSVg1mA3goSFE3xAqkIpPYj2HF94Tg18EvlWl2vzwho/FHZ/816UnmoL"
        "P+GL0odD9X0u40Tf0OKKUTFQ18Re8l93gpLdcHW3jKZzTEsqkXsQ/NbXw8MekwJfmdvjn4XAD/qHBcZjsbNH8ztV2DFQpNDn"
        "zr+q/Mgkgz7v+ecY76vmVQzNfbe9oelwCjrXNFelDpQkI8HqXqMjUo/oAt05r99n+evcoHOn0sJDqRzG2OwJ/sw5iApG2OzK"
        "KubWXUPTo0iorkNa2qwwloNeBnVlzQDisUtXXPH8f5qo0zoQ4564n+gTSV+7/MbmdL7K8u5EdNdxhG/VUJWB0MD3t8SuZzRb"
        "0955495ZUf4HBtgw0vytvuBCRy/URpAyYshJcdNTtpmF1ANBuooVKftT/EERoN6rqf5BH/cI4LtkYuDPJDNGBo2iZy/x16xO"
        "9AOG0vJA87vcILvHcxCrEix3BRdPybHv9sW3hngcuIZjEFAE/ZXwvFL0Nd8M1JHBw+XxhvSrzvyRDkwNtCX+sQu+Lxogj2CE"
        "d2vwMbgRdLXBfTOAP/HRc5kWD8+tZkUSCECuAa0dQeHfM+hwjlTFD0gwelbZUjW+Q+ZkvhtNzPp64tNYs6G1VGBH6HQPy4NP"
        "Y/1Jsx5eTOtWycvP8LhFymNicwQGpDoIjppsjrmwaiL8KShkcdK2MMpvGF26TBxfsEgRABa2fKfV3S/8HRz7bI+UtKU3LXuG"
        "mzSsgTi05jN7wr4T/Dmf6mnxG5Af4T9Cfpskn5RwL1Qy3rePP5GpRpeiqqFACok2gaCJZb1qzxoGE+Kw67/+r39/8VDsimu/"
        "1YC1SlEs2WwFFK24CprEXJWNpnHdQTA6nq6kszzCG16Fyn4iBTxddA5eKl6HwqwX3UeP/MCAQapHJn1l2doVpiXK9p74uYan"
        "gHGvKPD/M5LgG6Lbh+7uxYNhgk8gHHqGRe070LveiwfkObvpusJgZy2UZ/nTiwfa130javyA7ycifoiqLVRHVP9qGlPYOWdG"
        "lyFV8VK45XvtnWoe5/OEz/5ccx8eZzqLCAhvgE34QPKvmjVm3jkuBhqFLdEUmtY3d5z5hY4tL55R9czEb6pI2bsMYQMvZ8xq"
        "9ZJlfuOECi7u40smDf5Mx2P3Jalkw7ig0FlVlT6x5CPmuCu97x5rPazfgDBOoj4Ju2sgGyXl8dVRoludzKfNNeO5nOAuCULX"
        "3/btfVIOCy5MbZjfEogxwg78B9d92GCxtEAHRrx8yfJxkWRZzg5Oki1HQxrkGKDblJLE0A5SkyA43pNHz8+52G4EZ1B/H8P3"
        "sf09OMIW+Ldqwxb8PiLj1wCn9dgGT8v9P/Kduz07gsNV2lZw5pFhKtTm2zkYHThT0Z6c62m8sv6+A65SAUMVxTkNvEBBT7YS"
        "gynPlPd2ZhIY4LQU5VuduPsagXs0RZWVfLxTdQHpQb95Rsf81atoKADX08FKfpdVa2qsLbNlxQ4bCalWkQBjHhMDdJeCV7bz"
        "vUfe8vN4FrKgggknC0klApoWVuq99oakZfMNST79vgvnwQ0EqpCg9xohlmTpV++c8mtvnEIjBDF6E+DbqVSMncznx17IVsFT"
        "73iwGpDW781L7LpoO40UHmomvrkO7MYNNDNqfvfNWDbSpkyI3jJlRvUYdwboB0QHz8mym9c07X8HFNd0VS5D1dHCR5fdfreR"
        "afXSTPXWtuqnLtRb37xz/Y7NC/3OSp/e8oZvkOdX7qjn9Io3+kkSeocqvldV/RjJYFWuk4tn/w/BvKrU"
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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


def _main(argv=None):
    import argparse  # deferred: only the command line needs it
    import signal
    parser = argparse.ArgumentParser(
        prog="python -m dsn_sync",
        description="Run a dsn-sync server: browsers mirror its tables into IndexedDB through dsn_client.js.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=3000, help="port (default 3000; 0 picks a free one)")
    parser.add_argument("--db", default=None, metavar="URL",
                        help="store: omit for in-memory (lost on exit), or sqlite:///path/to/dsn.db")
    parser.add_argument("--tls-cert", default=None, metavar="FILE", help="certificate chain (PEM) to serve HTTPS")
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="private key (PEM) for --tls-cert")
    parser.add_argument("--secret-file", default=None, metavar="FILE",
                        help="file holding the server secret (created if missing) so URL and tokens survive restarts")
    parser.add_argument("--demo", action="store_true",
                        help="define example tables (users, notifications, metrics) and feed them live")
    parser.add_argument("--open-writes", dest="open_writes", action="store_const", const=True, default=None,
                        help="accept browser writes to any table with no handler (the default when --host is "
                             "127.0.0.1 or ::1: a development server)")
    parser.add_argument("--no-open-writes", dest="open_writes", action="store_const", const=False,
                        help="accept browser writes only where the backend has a handler")
    parser.add_argument("--write-client", default=None, metavar="DIR",
                        help="write dsn_client.js into DIR (for a bundler) and exit")
    parser.add_argument("--embed", action="store_true",
                        help="(development) copy dsn_client.js and dsn_inspect.html into this module and exit")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    parser.add_argument("--version", action="version", version="dsn-sync " + __version__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.embed or args.write_client:
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
    open_writes = args.open_writes if args.open_writes is not None else args.host in ("127.0.0.1", "::1", "localhost")
    try:
        secret = _read_secret_file(args.secret_file) if args.secret_file else None
        sync = DSNSync(port=args.port, db_connection_string=args.db, host=args.host, secret=secret,
                       certfile=args.tls_cert, keyfile=args.tls_key, open_writes=open_writes)
        sync.start()
    except (OSError, ValueError, TypeError, ssl.SSLError, DSNError) as e:
        print("dsn-sync: %s" % e, file=sys.stderr)
        return 2
    if args.demo:
        _feed_demo(sync)
    url, token = sync.get_url(), sync.get_token()
    origin = url[:url.index("/sync/")]
    print("dsn-sync %s serving%s (Ctrl-C to stop)\n" % (__version__, " the demo tables" if args.demo else ""))
    print("  URL:        %s" % url)
    print("  Token:      %s" % token)
    print("              (full access: keep it to trusted code; mint per-user tokens for browsers)")
    print("  Inspector:  %s   (paste the token there)" % sync.inspector_url())
    if open_writes:
        print("  Writes:     open: browsers may create, update and delete in any table (development;")
        print("              --no-open-writes turns it off; real apps define handlers)")
    print()
    print("In a page:\n")
    print((_SNIPPET if open_writes else _SNIPPET_READ).format(origin=origin, url=url, token=token))
    print(flush=True)
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = _StatusLine(sync, sys.stdout)
    while not done.wait(1.0):
        status.update()
    status.clear()
    sync.stop()
    print("dsn-sync stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
