"""dsn-sync: keep browser data in sync with a Python backend, in one file.

A backend calls ``sync.sync('users', 'user_123', {...})`` and every connected
browser gets that record in its own IndexedDB (through ``dsn_client.js``); the
browser's ``create``/``update``/``delete`` reach ``@sync.on_create`` and friends.
No REST endpoints, no WebSocket stack, no broker: plain HTTP/1.1 long-polling.

Why one file and no dependencies: people vendor this module, run it as
``python -m dsn_sync``, and embed it where installing packages is not an option.
Everything here is the standard library; optional extras import lazily.

Request lifecycle (one POST)::

    accept loop (socketserver) -> worker: read what the socket has, parse a
    complete request (capped, timed) -> transport checks (405/404/413/400, in
    PROTOCOL.md's order) -> _Hub.handle (kid -> claims -> traffic keys -> tag
    checked BEFORE any parsing; failure is 401) -> clock and replay checks ->
    op dispatch (hello, pull, writes, batch) -> answer sealed to the request's
    nonce -> one send.  A pull with nothing new is parked instead (below).

Threading model: socketserver's accept loop hands connections to a pool of
worker threads; a connection between requests (or with half a request)
waits in one reactor thread's selector, holding no worker, so a slow sender
costs nothing but a socket and is cut at its deadline.  TLS handshakes run
in the workers.  Long-polls hold no thread either: they are parked with the
hub, and one feed thread answers every parked pull in one pass when the
store changes, sharing each changes list between pulls at the same cursor.
The store has one lock; client writes to the same key are serialised by
striped locks held around the handler call.

The wire protocol (envelope, tokens, frames, messages, endpoint rotation) is
specified in PROTOCOL.md (protocol version 1); this module follows it byte for
byte and is tested against its vectors.
"""

__version__ = "0.1.0"

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

log = logging.getLogger("dsn_sync")

PROTOCOL_VERSION = 1
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


class ProtocolError(DSNError):
    """A request that authenticated but breaks a rule; answered sealed, never raised to users."""


class AuthError(DSNError):
    """The token does not open, was revoked, or has expired (code ``expired``)."""

    code = "unauthorized"


class _HTTPFault(Exception):
    """A transport answer with no sealed body (PROTOCOL.md section 3)."""

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
    writes it as it is.  ``shape`` is the record's field names as a tuple
    shared by every record of that shape (see _shape), so a sync() that
    rewrites every field needs no decode to merge; None when the shape is not
    shared (a merge into it then decodes the stored record).
    ``seen`` caches row-rule answers for this state, per claim set
    (``View.rules_key``); any change of the key or of its table's rule clears it.
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
        recall(jti, mid, view) / remember(jti, mid, answer)   the mid ledger
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
                        as ``seq``; ``ledger`` is None or (jti, mid, answer), the
                        write's answer to remember *without its record*: it is
                        re-read from (table, key) by recall()
        _persist_answer(jti, mid, answer)   an answer with no change (an error)
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
        """Make the store ready; returns self.  Nothing to open in memory."""
        return self

    def close(self):
        """Release files and connections; the memory store keeps its contents."""

    def save_secret(self, secret):
        """Keep the server secret (32 bytes) across restarts: a no-op here, nothing outlives the process."""

    # -- persistence hooks (no-ops in memory, but for the mid ledger) ----------
    def _persist_change(self, table, key, seq, record, ledger):
        if ledger is not None:
            jti, mid, answer = ledger
            # An ok answer is kept as (table, key, seq, epoch), 88 bytes, never
            # with its record: recall() reads the key's current state instead.
            self._mids[(jti, mid)] = answer if table is None else (table, key, answer["seq"], answer["epoch"])
            if len(self._mids) > self.mid_capacity:
                self._mids.popitem(last=False)

    def _persist_table(self, name, spec, sv):
        pass

    def _persist_answer(self, jti, mid, answer):
        self._persist_change(None, None, None, None, (jti, mid, answer))

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
        ``ledger``: a client write's ``(jti, mid)``, remembered with its answer
        (``ok``, ``seq``, ``epoch``; not the record) in the same step, so a
        retry can never apply it twice.  ``encoded``:
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
                if present and op != "replace" and (entry.shape is None or (
                        shape is not entry.shape and not all(f in data for f in entry.shape))):
                    record = _loads(entry.data)  # a partial update: merge into the stored fields
                    record.update(data)
                    shape = _shape(record)
                    stored = _json_dumps(record).encode("utf-8")
                else:  # new, or every stored field rewritten: the data is the record
                    record = dict(data)
                    stored = encoded if encoded is not None else _json_dumps(record).encode("utf-8")
            seq = self.seq + 1
            if ledger is not None:  # PROTOCOL.md 6: a remembered answer keeps the epoch it was first given
                ledger = (ledger[0], ledger[1], {"ok": True, "seq": seq, "epoch": self.epoch})
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

    def remember(self, jti, mid, answer):
        """Remember ``answer`` (a JSON-able dict with no record: an error) for token ``jti``'s write ``mid``.

        An ok answer is remembered by apply() itself, in the same step as its
        change; this is for writes refused before any change.
        """
        with self.lock:
            self._persist_answer(jti, mid, answer)

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
            raise StoreError("the store %s is in use by another dsn-sync server (it holds the file's lock); "
                             "stop that one, or give this one its own file" % self.path)
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
        damaged = self._damaged
        # Pages and indexes first: a corrupt index would feed the ORDER BY below
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
            if not isinstance(name, str) or not _TABLE_RE.match(name):
                raise damaged("dsn_tables holds a bad table name %r" % (name,))
            tables[name] = spec = self._json(spec, "the spec of table %r" % name)
            if not _valid_spec(spec):
                raise damaged("the spec of table %r is %r" % (name, spec))
        data_by_table = {name: {} for name in tables}
        floor = counters["floor"]
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
        """Keep the server secret (32 bytes) in the file, so tokens survive a restart."""
        with self.lock:
            self._require_open()
            with self._failing("saving the secret to"):
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
# The protocol engine: frames in, sealed answers out (PROTOCOL.md sections 3-5)
# =============================================================================


def _refuse_constant(name):
    raise ValueError("%s is not JSON" % name)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # built once, like _json_dumps (4.8 -> 2.9 us)


def _loads(data):
    """json.loads that refuses NaN and Infinity (Python accepts them, JSON.parse does not).

    ``data`` is UTF-8 bytes or text; bad UTF-8 raises ValueError like bad JSON.
    """
    return _DECODER.decode(data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data)


def _now_ms():
    return int(time.time() * 1000)


class _Wait:
    """A pull that found nothing new and asked to wait: everything needed to answer it later."""

    __slots__ = ("state", "nonce", "ep", "seq", "sv", "deadline", "conn", "stream", "sent", "due")

    def __init__(self, state, nonce, ep, seq, sv, deadline, stream=False):
        self.state, self.nonce, self.ep, self.seq, self.sv, self.deadline = state, nonce, ep, seq, sv, deadline
        self.conn = None
        self.stream = stream  # a streamed pull (README: "Streamed pulls"): many answers down one response
        self.sent = 0  # stream messages sent so far; the next one's index
        self.due = 0.0  # a stream's next message waits until then (monotonic seconds)


class _Hub:
    """Everything between an authenticated frame and its sealed answer.

    The HTTP layer hands it a path and a body; it answers ``(status, body)``.
    Protocol faults become sealed ``{"ok": false, "error": ...}`` answers in
    exactly one place (``_answer``); only the unexpected reaches the logger.
    """

    max_wait = 30  # seconds a pull may ask to be held (PROTOCOL.md: 0..30)
    # Seconds between two messages of one streamed pull, per parked pull: about what
    # one message costs the feed thread here (seal, send: 30-50 us), so a thousand
    # streams are answered at most every 50 ms each, coalesced to their latest state,
    # and a hundred every 5 ms.  0 sends every change to every stream.
    stream_spacing = 0.00005
    clock_window_ms = 60000  # |t - now| allowed before `clock`
    max_kid = 4096  # bytes; a kid is a sealed claims object, a few hundred bytes in practice

    def __init__(self, keyring, store, rotate_every=100, page_size=5000, max_batch=1000,
                 max_record=1 << 20, max_waiting=10000, max_nonces=1000000, max_waiting_per_user=16):
        self.keyring = keyring
        self.store = store
        self.base = "/sync/" + keyring.instance
        self.endpoints = _Endpoints(self.base, rotate_every)
        self.replay = _ReplayMemory(max_nonces)
        self.page_size = page_size
        self.max_batch = max_batch
        self.max_record = max_record
        self.max_waiting = max_waiting
        self.max_waiting_per_user = max_waiting_per_user
        self._waiting_by_jti = collections.Counter()
        self.handlers = {}
        self.read_rules = {}
        self.revoked = set(store.revoked())
        self.stopping = False
        self._parked = []
        self._have_parked = threading.Condition(store.lock)
        self.requests = 0
        self._count_lock = threading.Lock()
        self._key_locks = [threading.Lock() for _ in range(64)]
        self._mid_locks = [threading.Lock() for _ in range(64)]
        self._fieldsets = {}

    # -- entry point ----------------------------------------------------------
    def known_path(self, path):
        return self.endpoints.known(path)

    def handle(self, path, body):
        """One POST body -> (status, response body or None).  Never raises for bad input."""
        with self._count_lock:
            self.requests += 1
        if len(body) < 3 or body[0] != PROTOCOL_VERSION:
            return 400, None
        kid_len = (body[1] << 8) | body[2]
        if not 0 < kid_len <= self.max_kid or len(body) < 3 + kid_len + OVERHEAD:
            return 400, None
        try:
            kid = bytes(body[3:3 + kid_len]).decode("ascii")
        except UnicodeDecodeError:
            return 400, None
        state = self.keyring.resolve(kid)
        if state is None or state.jti in self.revoked:
            return 401, None
        sealed = bytes(body[3 + kid_len:])
        plain = open(state.c2s, _REQ_LABEL + path.encode("ascii"), sealed)
        if plain is None:
            return 401, None
        nonce = sealed[:NONCE_SIZE]
        now = _now_ms()
        try:
            request = _loads(plain)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
            return 200, self._answer(state, nonce, self.base, ProtocolError("the request is not a JSON object"))
        op = request.get("op")
        ep = self.endpoints.admit(path, state.jti, op)
        if ep is None:
            return 404, None
        t = request.get("t")
        if type(t) not in (int, float) or abs(t - now) > self.clock_window_ms:
            return 200, self._answer(state, nonce, ep, ProtocolError(
                "the request's clock is off by more than 60 s; adjust to the server's `now`", "clock"))
        if not self.replay.add(nonce, t, now):
            return 200, self._answer(state, nonce, ep, ProtocolError("this frame was already accepted", "replay"))
        exp = state.exp
        if exp is not None and (type(exp) not in (int, float) or now / 1000.0 >= exp):
            return 200, self._answer(state, nonce, ep, AuthError("the token has expired; get a fresh one", "expired"))
        try:
            if op == "pull":
                return 200, self._pull(state, nonce, ep, request)
            if op == "hello":
                result = self._hello(state)
            elif op in _WRITE_OPS:
                result = self._write(state, request)
            elif op == "batch":
                result = self._batch(state, request)
            else:
                raise ProtocolError("unknown op %r" % (op,))
        except DSNError as e:
            return 200, self._answer(state, nonce, ep, e)
        return 200, self._answer(state, nonce, ep, result)

    def _answer(self, state, nonce, ep, result, tail=None, index=None):
        """Seal a response: ``result`` is a dict of ok fields, a DSNError, or a stored write answer.

        ``tail`` is pre-encoded UTF-8 JSON for the last members (a pull's changes,
        a reset's records), spliced in from the stored JSON, never re-encoded.
        ``index`` numbers the messages of a streamed pull: it is sealed into the
        associated data after the request's nonce, so none can be dropped,
        reordered or replayed within the stream unnoticed.
        """
        if isinstance(result, DSNError):
            obj = {"ok": False, "now": _now_ms(), "ep": ep, "error": {"code": result.code, "message": result.message}}
        elif "ok" in result:
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
    def _view(self, state):
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
            return {"instance": self.keyring.instance, "epoch": store.epoch, "seq": store.seq,
                    "sv": store.sv, "tables": self._visible_tables(state)}

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
        return self._changes_answer(state, nonce, ep, seq, sv, store.changes_since(seq, self.page_size, self._view(state)))

    def _changes_answer(self, state, nonce, ep, seq, sv, found, index=None):
        """The sealed changes answer for a cursor at ``seq``/``sv``, given changes_since()'s result."""
        store = self.store
        changes, cursor = found
        result = {"epoch": store.epoch, "seq": cursor}
        if sv != store.sv:
            with store.lock:
                result["sv"] = store.sv
                result["tables"] = self._visible_tables(state)
        return self._answer(state, nonce, ep, result, b',"changes":[' + b",".join(changes) + b"]", index)

    # -- long-polls: parked, then answered in one pass -----------------------
    def park(self, wait):
        """Hold a pull until a change, a schema change, stop() or its deadline; False if already stale.

        No thread waits: the request is filed, and the feed thread answers
        every parked pull in one pass when the store changes.  Capped twice:
        ``max_waiting`` in all, ``max_waiting_per_user`` for a token with a
        ``sub`` (one user's tabs); over a cap the HTTP layer answers 503.
        """
        store = self.store
        with store.lock:
            if self.stopping or store.seq != wait.seq or store.sv != wait.sv:
                return False
            if len(self._parked) >= self.max_waiting:
                raise _HTTPFault(503, "too many long-polls held")
            jti = wait.state.jti if wait.state.sub is not None else None
            if jti is not None:
                if self._waiting_by_jti[jti] >= self.max_waiting_per_user:
                    raise _HTTPFault(503, "too many long-polls held for one user token")
                self._waiting_by_jti[jti] += 1
            self._parked.append(wait)
            if len(self._parked) == 1:
                self._have_parked.notify()
            return True

    @property
    def waiting(self):
        return len(self._parked)

    def _drop_departed(self, alive):
        with self.store.lock:
            parked = list(self._parked)
        dead = {id(w) for w in parked if not alive(w)}
        if dead:
            with self.store.lock:
                gone = [w for w in self._parked if id(w) in dead]
                self._parked = [w for w in self._parked if id(w) not in dead]
                for w in gone:
                    self._unpark_count(w)
            log.debug("dropped %d long-polls whose clients left", len(gone))

    def _unpark_count(self, w):
        if w.state.sub is not None:
            jti = w.state.jti
            self._waiting_by_jti[jti] -= 1
            if not self._waiting_by_jti[jti]:
                del self._waiting_by_jti[jti]

    def answer_wait(self, wait, found=None, index=None):
        """The sealed answer for a parked (or never parked) pull; ``index`` for a stream message."""
        if found is None:
            found = self.store.changes_since(wait.seq, self.page_size, self._view(wait.state))
        return self._changes_answer(wait.state, wait.nonce, wait.ep, wait.seq, wait.sv, found, index)

    def run_feed(self, io):
        """The feed thread's body: _feed_loop, restarted after an unexpected error (logged)."""
        while not self.stopping:
            try:
                return self._feed_loop(io)
            except Exception:
                log.exception("the feed thread hit an unexpected error; it carries on")
                time.sleep(0.05)

    def _feed_loop(self, io):
        """The feed thread: wake on every change, answer the parked pulls it concerns, in one pass.

        Waking a thousand threads on a Condition costs a thousand GIL hand-offs
        and starves the producer; one thread walking a list does not.  Pulls
        at the same cursor with the same view share one changes_since() and
        its pre-encoded fragments; each answer is then only a small JSON
        header, a seal bound to its request's nonce, and a send.
        ``io`` is the HTTP layer: ``io.deliver(wait, body)`` writes a whole
        answer, ``io.chunk(wait, body)`` one message of a streamed pull (True
        if it went out) and ``io.end(wait)`` closes a stream; none may block
        long.  ``io.alive(wait)`` tells whether the client is still connected:
        every ``liveness_every`` seconds departed clients give their slot back,
        so a storm of reloads cannot fill ``max_waiting`` with dead long-polls.

        A streamed pull stays parked after each message, at its new cursor,
        until its ``wait`` runs out: a subscriber then costs one sealed message
        per change instead of a whole request and answer.
        """
        store = self.store
        sweep_every = 0.25  # how late an expired long-poll may be answered, at most
        liveness_every = 2.0
        next_sweep = time.monotonic() + sweep_every
        next_liveness = next_sweep + liveness_every
        next_due = None  # when the earliest stream held back by its spacing may send again
        with store.lock:
            seen = (store.seq, store.sv)
        while True:
            with store.lock:
                while not self.stopping:
                    if not self._parked:
                        # Nothing to answer: sleep where changes do not wake us (a write-only
                        # load would otherwise wake this thread for every write).
                        seen = (store.seq, store.sv)
                        self._have_parked.wait(1.0)
                        continue
                    if (store.seq, store.sv) != seen:
                        break
                    now = time.monotonic()
                    wake = next_sweep if next_due is None else min(next_sweep, next_due)
                    if now >= wake:
                        break
                    store.changed.wait(wake - now)
                if self.stopping:
                    return
                seq, sv, now = store.seq, store.sv, time.monotonic()
                seen = (seq, sv)
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
                    self._unpark_count(w)
            if now >= next_sweep:
                next_sweep = now + sweep_every
                if now >= next_liveness:
                    next_liveness = now + liveness_every
                    self._drop_departed(io.alive)
            shared = {}
            again = []
            for w in ready:
                try:
                    if w.stream and w.deadline <= now and w.sent:
                        io.end(w)
                        continue
                    view = self._view(w.state)
                    group = (w.seq, view.tables, view.sub if view.rules else None)
                    found = shared.get(group)
                    if found is None:
                        found = shared[group] = store.changes_since(w.seq, self.page_size, view)
                    if not w.stream or w.deadline <= now:
                        io.deliver(w, self.answer_wait(w, found))
                    elif io.chunk(w, self.answer_wait(w, found, w.sent)):
                        w.sent += 1
                        w.seq, w.sv = found[1], sv
                        w.due = now + spacing
                        again.append(w)
                except Exception:
                    log.exception("unexpected error answering a long-poll")
                    io.close_wait(w)
            if again:
                with store.lock:
                    if not self.stopping:
                        for w in again:
                            if w.state.sub is not None:
                                self._waiting_by_jti[w.state.jti] += 1
                        self._parked.extend(again)
                        due = min(w.due for w in again)
                        next_due = due if next_due is None else min(next_due, due)

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
        records, last, more = store.snapshot_page(snap, after, self.page_size, self._view(state))
        with store.lock:
            result = {"reset": True, "epoch": store.epoch, "seq": snap, "sv": store.sv,
                      "tables": self._visible_tables(state), "more": more,
                      "next": "%s.%d.%d" % (store.epoch, snap, last) if more else None}
        return self._answer(state, nonce, ep, result, b',"records":' + records)

    # -- writes ---------------------------------------------------------------
    def clean(self, table, key, data, spec):
        """Validate a write's data against the table's schema.

        Returns ``(data without the key field, its UTF-8 JSON)``: the JSON is
        what the store keeps, so it is encoded once, here.
        """
        if not isinstance(data, dict):
            raise Invalid("data for %s/%s must be an object, got %s" % (table, key, type(data).__name__))
        keyfield = spec["key"]
        if keyfield in data:
            if data[keyfield] != key:
                raise Invalid("data repeats the key field %r as %r but the key is %r" % (keyfield, data[keyfield], key))
            data = {k: v for k, v in data.items() if k != keyfield}
        fields = spec["fields"]
        if fields is not None:
            allowed = self._fieldsets.get(table)
            if allowed is None or allowed[0] is not fields:
                allowed = self._fieldsets[table] = (fields, frozenset(fields))
            unknown = [k for k in data if k not in allowed[1]]
            if unknown:
                raise Invalid("unknown field%s %s for table %r (its fields: %s)" % (
                    "s" if len(unknown) > 1 else "", ", ".join(map(repr, sorted(unknown))), table, ", ".join(fields)))
        try:
            encoded = _json_dumps(data).encode("utf-8")  # a lone surrogate cannot be UTF-8: refused here
        except (TypeError, ValueError) as e:
            raise Invalid("record %s/%s is not JSON-serialisable: %s" % (table, key, e))
        for field in data:
            if not isinstance(field, str):
                raise Invalid("field names are strings; %s/%s has %r" % (table, key, field))
        if len(encoded) > self.max_record:
            raise Invalid("record %s/%s is %d bytes of JSON; the limit is %d (max_record)"
                          % (table, key, len(encoded), self.max_record))
        return data, encoded

    def _write(self, state, m):
        mid = m.get("mid")
        if not isinstance(mid, str) or not 0 < len(mid) <= MAX_MID_LENGTH:
            raise ProtocolError("every write needs `mid`, a string of 1 to %d characters" % MAX_MID_LENGTH)
        with self._mid_locks[hash(mid) & 63]:
            answer = self.store.recall(state.jti, mid)
            if answer is not None:
                return answer
            try:
                return self._apply_write(state, m, mid)
            except StoreError:
                # Not the write's answer: nothing was applied, and a retry with the
                # same mid may succeed.  The details (paths, SQLite's words) stay here.
                log.exception("the store failed a client write; answering 503")
                raise _HTTPFault(503, "store failure")
            except DSNError as e:
                answer = {"ok": False, "error": {"code": e.code, "message": e.message}}
                self.store.remember(state.jti, mid, answer)
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
        if spec is None:
            raise UnknownTable("no table %r" % table)
        handler = self.handlers.get((table, op))
        if handler is None:
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
        return {"ok": True, "seq": seq, "record": record}

    def _call_handler(self, handler, data, ctx):
        fn, wants_ctx = handler
        try:
            result = fn(data, ctx) if wants_ctx else fn(data)
        except DSNError as e:
            if e.code in _HANDLER_CODES:
                raise ProtocolError(e.message, e.code)
            log.exception("the @on_%s('%s') handler raised for key %r", ctx.op, ctx.table, ctx.key)
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
        for m in mutations:
            if not isinstance(m, dict):
                results.append({"ok": False, "error": {"code": "bad_request", "message": "a mutation is an object"}})
                continue
            try:
                results.append(self._write(state, m))
            except DSNError as e:
                results.append({"ok": False, "error": {"code": e.code, "message": e.message}})
        return {"results": results}


# =============================================================================
# HTTP handler and server
# =============================================================================

_REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Payload Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}


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


class _Conn:
    """One client connection: its socket, unparsed bytes, and where it is in a request."""

    __slots__ = ("sock", "raw", "tls", "buf", "deadline", "head", "started", "bytes_in", "served")

    def __init__(self, sock, tls):
        self.sock = self.raw = sock
        self.tls = tls  # True until the TLS handshake is done (False without TLS)
        self.buf = bytearray()
        self.deadline = None
        self.head = None
        self.started = None
        self.bytes_in = 0
        self.served = 0  # requests answered on this connection


class _Server(socketserver.TCPServer):
    """HTTP/1.1 keep-alive on socketserver, with no thread held by an idle or waiting connection.

    socketserver's accept loop hands each new connection to a small pool of
    worker threads.  A worker reads what a socket has (never waiting on a
    slow sender), parses complete requests and answers them; a connection
    between requests, or with half a request, goes back to one reactor
    thread that watches every idle socket with a selector and enforces the
    deadlines: ``idle_timeout`` between requests, ``header_timeout`` from a
    request's first byte to the end of its headers (a slowloris trickle is
    cut then, having held no worker), ``body_timeout`` for the body.  A
    long-poll is parked with the hub and answered by its feed thread, so a
    thousand waiting clients are a thousand list entries, not threads.

    Every read is capped (``max_header``, ``max_body`` from Content-Length
    before the body is read).  Each answer goes out in one send with
    TCP_NODELAY set, so Nagle's algorithm never holds a reply back.  TLS
    handshakes run in the workers, non-blocking, never in the accept loop.
    """

    allow_reuse_address = True
    request_queue_size = 1024
    max_header = 16384  # bytes of request line plus headers; frames carry everything else
    recv_size = 65536
    linger = 0.002  # seconds a worker waits for a keep-alive client's next request before handing it on
    feed_patience = 0.05  # seconds the feed thread waits on one client's full socket before closing it

    def __init__(self, address, hub, owner, ssl_context, max_connections, max_body, allow_origins,
                 idle_timeout, header_timeout, body_timeout, workers=32, ipv6=False):
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.hub = hub
        self.owner = owner
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.workers = workers
        self.bytes_in = self.bytes_out = 0
        self._conns = set()
        self._lock = threading.Lock()
        self._work = queue.SimpleQueue()
        self._idle = collections.deque()  # connections handed back to the reactor
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._threads = []
        self._wake_pending = False
        self._stopping = False
        if allow_origins in ("*", None):
            self._origins = None
        else:
            self._origins = [allow_origins] if isinstance(allow_origins, str) else list(allow_origins)
        super().__init__(address, None)

    # -- threads --------------------------------------------------------------
    def start_threads(self):
        targets = [("dsn-sync-reactor", self._reactor), ("dsn-sync-feed", lambda: self.hub.run_feed(self))]
        targets += [("dsn-sync-worker-%d" % i, self._worker) for i in range(self.workers)]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_threads(self):
        self._stopping = True
        for _ in range(self.workers):
            self._work.put(None)
        self._wake()
        with self.hub.store.lock:
            self.hub.store.changed.notify_all()
            self.hub._have_parked.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

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
        conn.deadline = time.monotonic() + self.header_timeout
        self._work.put(conn)

    def handle_error(self, request, client_address):
        log.exception("unexpected error accepting a connection from %s", client_address)

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _to_reactor(self, conn):
        """Hand a connection back to the reactor until it has more to read."""
        now = time.monotonic()
        if not conn.buf and conn.head is None:
            # Between requests: idle_timeout, but header_timeout until a first request
            # (or a TLS handshake) is done, so silent connections cannot pile up.
            conn.deadline = now + (self.idle_timeout if conn.served else self.header_timeout)
        self._idle.append(conn)  # append first, then look at the flag: the reactor clears it before draining
        if not self._wake_pending:
            # One wake-up byte per reactor turn, not per connection: the socketpair
            # send was 7 % of the server's samples under a write load.
            self._wake_pending = True
            self._wake()

    def _reactor(self):
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
            for key, _ in events:
                conn = key.data
                if conn is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    self._wake_pending = False
                    continue
                selector.unregister(key.fileobj)
                del watched[conn]
                self._work.put(conn)
            while self._idle:
                conn = self._idle.popleft()
                try:
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
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

    def _worker(self):
        while True:
            conn = self._work.get()
            if conn is None:
                return
            try:
                self._service(conn)
            except Exception:
                log.exception("unexpected error on a connection")
                self._close(conn)

    # -- one connection's turn in a worker ------------------------------------
    def _service(self, conn):
        if self._stopping:
            return self._close(conn)
        if conn.tls:
            if conn.sock is conn.raw:
                conn.sock = self.ssl_context.wrap_socket(conn.raw, server_side=True, do_handshake_on_connect=False)
            try:
                conn.sock.do_handshake()
                conn.tls = False
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return self._to_reactor(conn)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake failed: %s", e)
                return self._close(conn)
        sock = conn.sock
        while self._read_available(conn, sock):
            outcome = self._answer_buffered(conn)
            if outcome is not True:
                return
            # Answered, nothing buffered.  A busy client usually sends its next request
            # within a fraction of a millisecond: waiting briefly here (no GIL held)
            # saves the hand-off to the reactor and back (about a third of the server's
            # time under a write load), unless other connections are queued for a worker.
            if not self.linger or not self._work.empty():
                break
            if not _ready(sock, False, self.linger):
                break
        else:
            return
        self._to_reactor(conn)

    def _read_available(self, conn, sock):
        """Read what the socket has without waiting; False if the connection was closed."""
        while True:
            try:
                chunk = sock.recv(self.recv_size)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                self._close(conn)
                return False
            if not chunk:
                self._close(conn)
                return False
            conn.buf += chunk
            conn.bytes_in += len(chunk)
            if len(chunk) < self.recv_size and not (self.ssl_context is not None and sock.pending()):
                break
            if len(conn.buf) > self.max_header + self.max_body:
                break
        return True

    def _answer_buffered(self, conn):
        """Answer every complete request in the buffer.

        Returns True when all were answered and the connection stays open with
        nothing buffered; otherwise the connection has been handed on (to the
        reactor for more bytes, to the feed thread, or closed) and it returns None.
        """
        while not self._stopping:
            try:
                outcome = self._next_request(conn)
            except _HTTPFault as fault:
                self._send(conn, fault.status, b"", False)
                return self._close(conn)
            if outcome is None:  # incomplete: wait for more bytes
                return self._to_reactor(conn)
            if outcome is False:
                return self._close(conn)
            if outcome == "parked":
                return None
            if not conn.buf:
                return True
        return self._close(conn)

    def _next_request(self, conn):
        """Answer the next complete request in the buffer.

        Returns None (incomplete), False (close), True (answered, keep alive)
        or "parked" (a long-poll the feed thread will answer).
        """
        now = time.monotonic()
        buf = conn.buf
        if conn.head is None:
            if conn.started is None and buf:
                conn.started = now
                conn.deadline = now + self.header_timeout
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_header:
                    raise _HTTPFault(431)
                return None
            if end > self.max_header:
                raise _HTTPFault(431)
            conn.head = self._parse_head(bytes(buf[:end]))
            del buf[:end + 4]
            conn.deadline = now + self.body_timeout
        method, path, headers, keep_alive = conn.head
        origin = headers.get("origin")
        has_body = "content-length" in headers or "transfer-encoding" in headers
        hub = self.hub
        early = None
        if method == "OPTIONS":
            early = (204, b"", "Access-Control-Allow-Methods: POST\r\nAccess-Control-Allow-Headers: Content-Type\r\n"
                               "Access-Control-Max-Age: 86400\r\n", None)
        elif method == "GET" and path in ("/dsn_client.js", hub.base + "/inspect"):
            early = self._static(path, headers)
        elif method != "POST":
            early = (405, b"", "Allow: POST\r\n", None)
        elif not hub.known_path(path):
            early = (404, b"", "", None)
        elif "transfer-encoding" in headers:
            early = (411, b"", "", None)
        if early is None:
            try:
                length = _content_length(headers)
                if length < 0:
                    raise ValueError
            except ValueError:
                early = (411, b"", "", None)
            else:
                if length > self.max_body:
                    early = (413, b"", "", None)
        if early is not None:
            status, body, extra, content_type = early
            keep = keep_alive and not has_body
            if has_body and status in (404, 405):
                # A stale endpoint is routine (rotation): read the small body and keep
                # the connection, rather than make the client reconnect to say hello.
                try:
                    length = _content_length(headers)
                except ValueError:
                    length = -1
                if 0 <= length <= self.max_body and "transfer-encoding" not in headers:
                    if len(buf) < length:
                        return None
                    del buf[:length]
                    keep = keep_alive
            conn.head = conn.started = None
            # Otherwise a body we did not read would be taken for the next request: close.
            if not self._send(conn, status, body, keep, origin, extra, content_type):
                return False
            return keep
        if len(buf) < length:
            return None
        body = bytes(buf[:length])
        del buf[:length]
        conn.head = conn.started = None
        conn.served += 1
        try:
            status, reply = hub.handle(path, body)
        except _HTTPFault as fault:
            status, reply = fault.status, None
        except Exception:
            log.exception("unexpected error answering %s", path)
            status, reply = 500, None
        if isinstance(reply, _Wait):
            reply.conn = (conn, keep_alive, origin)
            try:
                if hub.park(reply):
                    return "parked"
                reply = hub.answer_wait(reply)
            except _HTTPFault as fault:
                status, reply = fault.status, None
        if not self._send(conn, status, reply or b"", keep_alive, origin,
                          content_type="application/octet-stream" if reply else None):
            return False
        return keep_alive

    def _parse_head(self, head):
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HTTPFault(400)
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _HTTPFault(400)
            name, value = name.strip().lower(), value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise _HTTPFault(400)  # two lengths: a request smuggling attempt or a broken client
            headers[name] = value
        conn = headers.get("connection", "").lower()
        keep_alive = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
        return method, target.split("?", 1)[0], headers, keep_alive

    def _static(self, path, headers):
        """(status, body, extra headers, type) for one of the files shipped beside the module."""
        name = "dsn_client.js" if path == "/dsn_client.js" else "dsn_inspect.html"
        found = self.owner._static_file(name)
        if found is None:
            return 404, b"", "", None
        body, etag, content_type = found
        extra = "Cache-Control: public, max-age=3600\r\nETag: %s\r\n" % etag
        if name.endswith(".html"):  # the inspector: no framing by other sites, no referrer leaks
            extra += "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\n"
        if headers.get("if-none-match") == etag:
            return 304, b"", extra, None
        return 200, body, extra, content_type

    def close_wait(self, wait):
        if wait.conn is not None:
            self._close(wait.conn[0])

    def alive(self, wait):
        """Is a parked long-poll's client still there?  Peeks without consuming; closes it if gone."""
        conn = wait.conn[0]
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

    # -- writing --------------------------------------------------------------
    def deliver(self, wait, body):
        """The feed thread's way to answer a parked long-poll, then hand the connection on."""
        conn, keep_alive, origin = wait.conn
        if not self._send(conn, 200, body, keep_alive, origin, content_type="application/octet-stream",
                          patience=self.feed_patience):
            return self._close(conn)
        self._release(conn, keep_alive)

    def _release(self, conn, keep_alive):
        if not keep_alive:
            return self._close(conn)
        if conn.buf:
            self._work.put(conn)
        else:
            self._to_reactor(conn)

    def chunk(self, wait, body):
        """One message of a streamed pull: ``u32(len) || frame`` in one HTTP chunk (headers first)."""
        conn, keep_alive, origin = wait.conn
        message = struct.pack(">I", len(body)) + body
        data = b"%x\r\n%s\r\n" % (len(message), message)
        if not wait.sent:
            head = ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: %s\r\n"
                    "Cache-Control: no-store\r\n%s%s\r\n") % (
                STREAM_TYPE, self.cors(origin), "" if keep_alive else "Connection: close\r\n")
            data = head.encode("latin-1") + data
        if self._write(conn, data, self.feed_patience):
            return True
        self._close(conn)
        return False

    def end(self, wait):
        """Close a streamed pull with the last chunk; the connection carries on (keep-alive)."""
        conn, keep_alive, _ = wait.conn
        if not self._write(conn, b"0\r\n\r\n", self.feed_patience):
            return self._close(conn)
        self._release(conn, keep_alive)

    def _send(self, conn, status, body, keep_alive, origin=None, extra="", content_type=None, patience=None):
        """Write one whole answer; True if it went out.  Waits (bounded) only if the peer reads slowly."""
        head = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n%s%s%s%s\r\n" % (
            status, _REASONS.get(status, "Error"), len(body), self.cors(origin),
            "Content-Type: %s\r\n" % content_type if content_type else "",
            "Cache-Control: no-store\r\n" if status not in (200, 304) or content_type == "application/octet-stream" else "",
            extra + ("" if keep_alive else "Connection: close\r\n"))
        data = head.encode("latin-1") + body
        if not self._write(conn, data, patience):
            return False
        with self._lock:
            self.bytes_in += conn.bytes_in
        conn.bytes_in = 0
        return True

    def _write(self, conn, data, patience=None):
        """Send all of ``data``; False if the peer is gone or reads too slowly.

        ``patience`` is how long a full socket buffer may hold the sender
        (``body_timeout`` by default).  The feed thread passes ``feed_patience``:
        one reader that stopped reading must not stall every other long-poll,
        and closing its connection loses nothing (it pulls again from its cursor).
        """
        size = len(data)
        data = memoryview(data)
        sock = conn.sock
        deadline = None
        while data:
            try:
                sent = sock.send(data)
                data = data[sent:]
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                now = time.monotonic()
                if deadline is None:
                    deadline = now + (self.body_timeout if patience is None else patience)
                if now >= deadline:
                    return False
                _ready(sock, True, min(deadline - now, 1.0))
            except OSError:
                return False
        with self._lock:
            self.bytes_out += size
        return True

    def _close(self, conn):
        with self._lock:
            self._conns.discard(conn)
            self.bytes_in += conn.bytes_in
        conn.bytes_in = 0
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
    """

    def __init__(self, port=3000, db_connection_string=None, *, host="127.0.0.1", secret=None,
                 certfile=None, keyfile=None, rotate_every=100, max_body=16 << 20, max_connections=10000,
                 max_waiting=10000, max_record=1 << 20, max_batch=1000, page_size=5000,
                 allow_origins="*", idle_timeout=75.0, header_timeout=10.0, body_timeout=30.0,
                 max_nonces=1000000, max_waiting_per_user=16, max_tables=1000, workers=32, store=None):
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
        self._ssl_context = None
        if certfile is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(certfile, keyfile)
            self._ssl_context = context
        self._store = store if store is not None else _open_store(db_connection_string)
        self._store.open()
        if secret is None:
            secret = os.environ.get("DSN_SYNC_SECRET") or None
        stored = getattr(self._store, "secret", None)
        if secret is None:
            secret = stored or os.urandom(32)
        self._keyring = Keyring(secret)
        if self._store.durable and stored != self._keyring.secret:
            if stored is not None:
                log.warning("the given secret replaces the one kept in the store: tokens minted before stop working")
            self._store.save_secret(self._keyring.secret)
        self._hub = _Hub(self._keyring, self._store, rotate_every=rotate_every, page_size=page_size,
                         max_batch=max_batch, max_record=max_record, max_waiting=max_waiting,
                         max_nonces=max_nonces, max_waiting_per_user=max_waiting_per_user)
        self.max_tables = max_tables
        self._server_options = dict(max_connections=max_connections, max_body=max_body,
                                    allow_origins=allow_origins, idle_timeout=idle_timeout,
                                    header_timeout=header_timeout, body_timeout=body_timeout, workers=workers)
        self._server = None
        self._thread = None
        self._tasks = []
        self._task_threads = []
        self._task_stop = threading.Event()
        self._app_token = None
        self._static_cache = {}
        self._seq_at_start = self._store.seq
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------
    def start(self):
        """Bind and serve in background threads; returns True.  Raises OSError if the port is taken."""
        with self._lock:
            if self._server is not None:
                return True
            self._store.open()
            self._hub.stopping = False
            ipv6 = ":" in self.host
            try:
                server = _Server((self.host, self.port), self._hub, self, self._ssl_context, ipv6=ipv6,
                                 **self._server_options)
            except OSError as e:
                raise OSError(e.errno, "dsn-sync cannot listen on %s:%s: %s (another server there? port=0 picks a free one)"
                              % (self.host, self.port, e.strerror or e))
            self._server = server
            self.port = server.server_address[1]
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="dsn-sync-accept", daemon=True)
            self._thread.start()
            server.start_threads()
            self._task_stop.clear()
            for task in self._tasks:
                self._start_task(*task)
        log.info("dsn-sync serving %s", self.get_url())
        return True

    def stop(self):
        """Close every connection (keep-alive ones too), wake every long-poll, free the port; returns True."""
        with self._lock:
            server, self._server = self._server, None
            self._task_stop.set()
            if server is None:
                self._store.close()
                return True
            hub = self._hub
            hub.stopping = True
            with self._store.lock:
                self._store.changed.notify_all()
            server.shutdown()
            server.server_close()
            server.stop_threads()
            server.close_all()
            self._thread.join(timeout=5)
            with self._store.lock:
                hub._parked = []
                hub._waiting_by_jti.clear()
            threads, self._task_threads = self._task_threads, []
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._store.close()
        log.info("dsn-sync stopped")
        return True

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
        return "%s://%s:%d%s" % (scheme, host, self.port, self._hub.base)

    def get_token(self):
        """The app's full-access token (reads and writes every table).

        Anyone holding it can do anything a client can: give it to trusted
        backends and to single-user tools, and mint narrow per-user tokens
        for browsers.
        """
        with self._lock:
            if self._app_token is None:
                self._app_token = self._keyring.mint({"v": 1, "jti": b64u_encode(os.urandom(8)), "iat": int(time.time()),
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
        self._hub.revoked.add(jti)
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
            self._hub.read_rules[table] = fn
            with self._store.lock:  # answers cached under an older rule are void
                for entry in self._store._data.get(table, {}).values():
                    entry.seen = None
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
        data, encoded = self._hub.clean(table, key, data, spec)
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
            self._hub.handlers[(table, op)] = (fn, _takes_two(fn))
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
        stop = self._task_stop

        def loop():
            while not stop.wait(seconds):
                try:
                    fn()
                except Exception:
                    log.exception("background task %s raised; it runs again in %s s",
                                  getattr(fn, "__name__", fn), seconds)
        thread = threading.Thread(target=loop, name="dsn-sync-every-%s" % getattr(fn, "__name__", "task"), daemon=True)
        self._task_threads.append(thread)
        thread.start()

    # -- introspection --------------------------------------------------------
    def stats(self):
        """Counters: connections, requests, waiting long-polls, seq, changes, records, bytes in/out."""
        server, store = self._server, self._store
        with store.lock:
            seq, epoch = store.seq, store.epoch
        return {"connections": server.connections() if server else 0, "requests": self._hub.requests,
                "waiting": self._hub.waiting, "epoch": epoch, "seq": seq,
                "changes": seq - self._seq_at_start, "records": store.count(),
                "tables": len(store.tables), "bytes_in": server.bytes_in if server else 0,
                "bytes_out": server.bytes_out if server else 0}

    _STATIC_TYPES = {"dsn_client.js": "text/javascript; charset=utf-8", "dsn_inspect.html": "text/html; charset=utf-8"}

    def _static_file(self, name):
        """(bytes, etag, content type) of a file shipped beside the module, read once; None if missing."""
        found = self._static_cache.get(name)
        if found is None:
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
            try:
                with io.open(path, "rb") as f:
                    body = f.read()
            except OSError as e:
                log.warning("GET %s: 404, the file is not beside the module (%s)", name, e)
                return None
            found = self._static_cache[name] = (body, '"%s"' % hashlib.sha256(body).hexdigest()[:32],
                                                self._STATIC_TYPES[name])
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


def _takes_two(fn):
    """True if ``fn`` can be called as fn(data, ctx)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 2


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
# python -m dsn_sync: the quick server
# =============================================================================

_SNIPPET = """\
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
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    parser.add_argument("--version", action="version", version="dsn-sync " + __version__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        secret = _read_secret_file(args.secret_file) if args.secret_file else None
        sync = DSNSync(port=args.port, db_connection_string=args.db, host=args.host, secret=secret,
                       certfile=args.tls_cert, keyfile=args.tls_key)
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
    print("  Inspector:  %s   (paste the token there)\n" % sync.inspector_url())
    print("In a page:\n")
    print(_SNIPPET.format(origin=origin, url=url, token=token))
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


if __name__ == "__main__":
    sys.exit(_main())
