"""What every Python test shares: the reference envelope, one wait, one raw protocol
client, a started-server factory, and the ``slow`` marker.

- ``ref_*``: PROTOCOL.md sections 1 and 2 written from the spec alone (HKDF, HMAC,
  SHAKE256 from hashlib/hmac), checked against the shared vectors in test_dsn_sync.py.
  The raw client seals with it and opens with it, so an answer that merely agrees with
  the module's own ``open()`` is not enough to pass.
- ``wait_until(predicate, timeout, what)``: the one way a test waits.
- Plain sockets and HTTP: ``free_port()``, ``read_response(f)``, ``exchange_until_closed(port, data)``,
  ``client_tls_context(ciphers=None)``.
- ``Raw``: the protocol by hand over one keep-alive HTTP/1.1 connection of its own
  (plain answers, chunked streams read message by message, TLS, a path prefix).
- Fixtures: ``make_server(**options)`` (a started ``DSNSync``, stopped after the test),
  ``make_raw(sync_or_url, token=None, **options)`` (a ``Raw``, closed after the test),
  ``make_client(url, token, **options)`` (``dsn_sync.connect``, closed after the test),
  ``certificate`` ((certfile, keyfile) for 127.0.0.1, self-signed by openssl, one per session).
- ``private(sync, part)``: the one place the tests reach into the engine's private
  names, for what no public call shows; a rewrite of the engine fixes it here.
- ``store_server(**options)``: a started ``DSNSync`` on memory, SQLite and PostgreSQL in turn
  (a parametrised fixture), for API tests that must hold on every store.
- ``tail_seqs(url, stop, gaps, seen)``: the reader a ``bigserial`` change feed fails.
- ``cluster``: one throwaway PostgreSQL cluster for the session (test/pg_cluster.py: initdb
  in a temp folder, 127.0.0.1, a free port), started when a test first asks for it;
  without psycopg or PostgreSQL's binaries those tests skip loudly, and fail when CI is set.
- ``ChildServer``: a server script in a child process speaking JSON lines (its first line
  is its hello; ``cmd(**command)`` sends one and returns the reply), for the durability and
  cluster tests that kill and restart servers.
- ``@pytest.mark.slow``: skipped unless ``DSN_SLOW=1`` is set.
"""

import base64
import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import dsn_sync

REQ_LABEL = b"dsn-sync/v1 req\n"
RES_LABEL = b"dsn-sync/v1 res\n"
STREAM_LABEL = b"dsn-sync/v1 stream"


# =============================================================================
# The slow marker
# =============================================================================


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test, skipped unless the environment has DSN_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DSN_SLOW") == "1":
        return
    for item in items:
        if item.get_closest_marker("slow") is not None:
            where = item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.skip(reason="slow; run it with: DSN_SLOW=1 python3 -m pytest -q -s %s -k %s"
                                             % (where, item.name)))


# =============================================================================
# Reference envelope: PROTOCOL.md sections 1 and 2, from the spec, not the module
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


def _xor(a, b):
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def ref_tag(key, aad, nonce, ct):
    return hmac.new(key[32:64], struct.pack(">I", len(aad)) + aad + nonce + ct, hashlib.sha256).digest()


def ref_seal(key, aad, plaintext, nonce=None):
    nonce = os.urandom(16) if nonce is None else nonce
    ct = _xor(plaintext, ref_stream(key, nonce, len(plaintext)))
    return nonce + ct + ref_tag(key, aad, nonce, ct)


def ref_open(key, aad, blob):
    if len(blob) < 48:
        return None
    nonce, ct, tag = blob[:16], blob[16:-32], blob[-32:]
    if not hmac.compare_digest(tag, ref_tag(key, aad, nonce, ct)):
        return None
    return _xor(ct, ref_stream(key, nonce, len(ct)))


def ref_parse_token(token):
    """(kid, token_secret) of ``dsn1.<kid>.<b64u(token_secret)>``."""
    version, kid, secret = token.split(".")
    assert version == "dsn1", "not a dsn1 token: %r" % token[:12]
    return kid, base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))


def ref_traffic_keys(token_secret):
    """(c2s, s2c), 64 bytes each."""
    prk = ref_hkdf_extract(b"dsn-sync/v1 traffic", token_secret)
    return ref_hkdf_expand(prk, b"c2s", 64), ref_hkdf_expand(prk, b"s2c", 64)


def now_ms():
    return int(time.time() * 1000)


# =============================================================================
# Waiting
# =============================================================================


def wait_until(predicate, timeout=5.0, what="a condition", interval=0.005):
    """Poll ``predicate()`` every ``interval`` s; return its first truthy value.

    After ``timeout`` seconds without one, raise AssertionError naming ``what``: a string,
    or a callable that returns one then (to show the state at the timeout, not before).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(interval)


def serving_pids(port):
    """Pids of the processes holding established connections on 127.0.0.1:<port> (from ss)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "( sport = :%d )" % port],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10).stdout.decode()
    return {int(p) for p in re.findall(r"pid=(\d+)", out)}


# =============================================================================
# Plain sockets, HTTP and TLS
# =============================================================================


def at_a_terminal():
    """``preexec_fn`` for a child the test will Ctrl-C: SIGINT as a terminal's foreground process has it.

    A runner started in the background of a shell without job control (``.ci/run &`` in a
    script, nohup) passes SIGINT on ignored, and Python then leaves it ignored: rightly so, and
    dsn-sync too (it catches only the signals a program left at their defaults), but then a
    test's SIGINT would say nothing of what Ctrl-C does to a program run in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (for a child process that must be told one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(f):
    """(status, headers with lower-case names, body) from a buffered socket file; status None if
    the peer closed first.  The body is Content-Length's (pipelined answers stay apart)."""
    line = f.readline(65536)
    if not line:
        return None, {}, b""
    headers = {}
    while True:
        h = f.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers.get("content-length", "0")))
    return int(line.split(b" ")[1]), headers, body


def exchange_until_closed(port, data, timeout=5.0):
    """Send ``data`` on a fresh connection; every byte the server sends until it closes, and whether it did."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return got, True
                got += chunk
        except ConnectionResetError:
            return got, True
        except socket.timeout:
            return got, False


def client_tls_context(ciphers=None):
    """A client context that trusts any certificate; ``ciphers``: TLS 1.2 only, with those suites."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if ciphers is not None:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    return ctx


# =============================================================================
# The engine's private names, in one place
# =============================================================================


def private(sync, part):
    """A part of ``sync`` that only a private name reaches; the tests use nothing else private.

    ``"store"``: the store (compaction, paging limits, the invariant check, seq/sv/epoch
    read directly); ``"endpoints"``: endpoint rotation (its ``grace``); ``"feed"``: the
    long-poll feed (its ``stream_spacing``); ``"selections"``: the large subscription
    selections the store keeps in seq order between reset pages.
    """
    if part == "store":
        return sync._store
    if part == "endpoints":
        return sync._engine.endpoints
    if part == "feed":
        return sync._feed
    if part == "selections":  # the store's kept large selections: {name: [seqs, entries, last used, seq built at]}
        return sync._store._selections
    raise KeyError("private(sync, part): part is one of 'store', 'endpoints', 'feed', 'selections', not %r"
                   % (part,))


# =============================================================================
# The raw protocol client
# =============================================================================

NOW, OMIT = object(), object()


class Raw:
    """The protocol by hand: PROTOCOL.md section 3 frames, sealed and opened with ``ref_*``.

    ``Raw(sync)`` speaks with the server's full-access token, ``Raw(sync, token)`` with
    another, ``Raw(url, token)`` with any server (a path prefix before ``/sync/`` is kept).
    One keep-alive HTTP/1.1 connection of its own (``keep_alive=False``: one per request),
    opened again after the server says ``Connection: close``; ``ssl_context`` for TLS.

    Frames and HTTP:
      ``frame(path, obj, nonce=None)`` -> (frame, request nonce); ``obj`` is a dict or raw bytes
      ``post(path, body, headers=None)`` -> (status, body); response headers in ``last_headers``
      ``send(path, frame, nonce)`` -> (status, opened answer or None)
      ``request(obj, path=None)``: ``obj`` sealed as it is (no ``t`` added) to ``path`` or ``ep``
    Ops (``t`` is the local clock unless given; the first non-hello op says hello first):
      ``call(op, path=None, t=NOW, **fields)`` -> (status, answer or None)
      ``ok(op, **fields)``, ``err(op, code, **fields)`` -> the answer, asserted
      ``answer(op, **fields)``: HTTP 200 asserted (hello again after a 404), ok or not
      ``hello()``, ``cursor()``, ``reset(since=None, on_page=None)`` -> (records, cursor, pages)
    Streamed pulls, message by message:
      ``start(op, **fields)`` sends without reading; ``head()`` -> (status, headers);
      ``whole(headers)`` -> a plain answer; ``message(index)`` -> stream message or None at the end
    """

    def __init__(self, target, token=None, timeout=10.0, ssl_context=None, keep_alive=True):
        if isinstance(target, str):
            assert token, "Raw(url, token): a URL needs a token"
            url = target
            parts = urlsplit(url)
            self.host, self.port = parts.hostname, parts.port
        else:
            url, token = target.get_url(), token or target.get_token()
            self.host, self.port = "127.0.0.1", target.port
        path = urlsplit(url).path
        at = path.index("/sync/")
        self.prefix, self.base = path[:at], path[at:]
        self.kid, secret = ref_parse_token(token)
        self.c2s, self.s2c = ref_traffic_keys(secret)
        self.ep = self.base
        self.timeout, self.ssl_context, self.keep_alive = timeout, ssl_context, keep_alive
        self.sock, self._buf = None, b""
        self.last_headers = {}
        self.nonce = None  # the request nonce of the last frame sent by start()
        self.greeted = False  # a first non-hello call says hello first, as a client must

    # -- HTTP/1.1 over one socket ---------------------------------------------

    def connect(self):
        """The socket, connected (again) if it is not."""
        if self.sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            self.sock, self._buf = sock, b""
        return self.sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buf += chunk

    def _line(self):
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _read(self, n):
        while len(self._buf) < n:
            self._fill()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _write(self, path, body, headers=None):
        h = {"Host": "%s:%d" % (self.host, self.port), "Content-Type": "text/plain", "Content-Length": str(len(body))}
        h.update(headers or {})
        head = "POST %s HTTP/1.1\r\n%s\r\n" % (self.prefix + path, "".join("%s: %s\r\n" % kv for kv in h.items()))
        self.connect().sendall(head.encode("latin-1") + body)

    def head(self):
        """(status, headers with lower-case names) of the next response."""
        status = int(self._line().split()[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                self.last_headers = headers
                return status, headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()

    def _body(self, headers):
        """The whole body (a chunked one joined); the socket is closed after it if it must be."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    assert self._line() == b""
                    break
                parts.append(self._read(size))
                assert self._read(2) == b"\r\n"
            body = b"".join(parts)
        else:
            body = self._read(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close" or not self.keep_alive:
            self.close()
        return body

    def post(self, path, body, headers=None):
        """(status, body bytes); the response headers land in last_headers."""
        self._write(path, body, headers)
        status, headers = self.head()
        return status, self._body(headers)

    # -- frames -----------------------------------------------------------------

    def frame(self, path, obj, nonce=None):
        """(frame bytes, request nonce) for ``obj`` sent to ``path``."""
        body = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode("utf-8")
        sealed = ref_seal(self.c2s, REQ_LABEL + path.encode("ascii"), body, nonce)
        kid = self.kid.encode("ascii")
        return b"\x01" + struct.pack(">H", len(kid)) + kid + sealed, sealed[:16]

    def open_answer(self, nonce, data, index=None):
        """The answer sealed to ``nonce`` (and ``index``, for a stream message), checked."""
        assert data[:1] == b"\x01", "a sealed answer starts with version byte 1"
        aad = RES_LABEL + nonce + (b"" if index is None else struct.pack(">I", index))
        plain = ref_open(self.s2c, aad, data[1:])
        assert plain is not None, "the answer does not open with s2c bound to the request nonce"
        answer = json.loads(plain.decode("utf-8"))
        assert isinstance(answer.get("now"), int) and isinstance(answer.get("ep"), str), answer
        assert answer["ep"].startswith(self.base), answer["ep"]
        return answer

    def send(self, path, frame, nonce):
        """Post a ready frame; (status, answer or None)."""
        status, data = self.post(path, frame)
        if status != 200:
            assert data == b"", "transport answers carry no body"
            return status, None
        answer = self.open_answer(nonce, data)
        self.ep = answer["ep"]
        return status, answer

    def request(self, obj, path=None):
        """``obj`` (a dict or bytes) sealed exactly as it is to ``path`` (default: ep): (status, answer)."""
        path = self.ep if path is None else path
        return self.send(path, *self.frame(path, obj))

    # -- ops --------------------------------------------------------------------

    def _body_of(self, op, t, fields):
        obj = {"op": op}
        if t is not OMIT:
            obj["t"] = now_ms() if t is NOW else t
        obj.update(fields)
        return obj

    def call(self, op, path=None, t=NOW, **fields):
        """(status, answer or None) for one request; hello goes to the base path, the rest to ep.

        ``t`` defaults to the local clock; ``t=OMIT`` leaves it out.
        """
        if path is None:
            if op != "hello" and not self.greeted:
                self.hello()
            path = self.base if op == "hello" else self.ep
        status, answer = self.request(self._body_of(op, t, fields), path)
        if op == "hello" and status == 200:
            self.greeted = True
        return status, answer

    def ok(self, op, **fields):
        status, answer = self.call(op, **fields)
        assert status == 200, "HTTP %d for %s" % (status, op)
        assert answer["ok"] is True, answer
        return answer

    def err(self, op, code, **fields):
        status, answer = self.call(op, **fields)
        assert status == 200, "HTTP %d for %s" % (status, op)
        assert answer["ok"] is False, answer
        assert answer["error"]["code"] == code, answer
        assert isinstance(answer["error"].get("message"), str)
        return answer

    def answer(self, op, **fields):
        """The answer to ``op``, ok or not (HTTP 200 asserted); after a 404 it says hello and retries."""
        status, answer = self.call(op, **fields)
        if status == 404 and op != "hello":
            self.hello()
            status, answer = self.call(op, **fields)
        assert status == 200, "%s answered HTTP %d" % (op, status)
        return answer

    def hello(self):
        answer = self.ok("hello")
        for field in ("instance", "epoch", "seq", "sv", "tables"):
            assert field in answer, field
        return answer

    def cursor(self):
        h = self.hello()
        return {"epoch": h["epoch"], "seq": h["seq"], "sv": h["sv"]}

    def reset(self, since=None, on_page=None):
        """Walk a whole (possibly paged) reset: (records, cursor, pages).

        ``on_page(page)`` sees every page as it comes; with it, records are not gathered
        (``records`` is ``{}``) and ``pages`` keeps each page without its records.
        """
        page = self.ok("pull", since=since, wait=0)
        first = page
        pages, records = [], {}
        while True:
            assert page.get("reset") is True and page["epoch"] == first["epoch"] and page["seq"] == first["seq"], \
                "a page of another reset: %r" % (str(page)[:300],)
            if on_page is not None:
                on_page(page)
                pages.append({k: v for k, v in page.items() if k != "records"})
            else:
                pages.append(page)
                for table, rows in page["records"].items():
                    records.setdefault(table, {}).update(rows)
            if not page["more"]:
                break
            assert isinstance(page["next"], str)
            page = self.ok("pull", since=None, next=page["next"], wait=0)
        last = pages[-1]
        return records, {"epoch": last["epoch"], "seq": last["seq"], "sv": last["sv"]}, pages

    # -- streamed pulls (PROTOCOL.md 6) -------------------------------------------

    def start(self, op, **fields):
        """Send ``op`` to ep and read nothing yet (``head()`` and ``whole()``/``message()`` do)."""
        frame, self.nonce = self.frame(self.ep, self._body_of(op, NOW, fields))
        self._write(self.ep, frame)

    def whole(self, headers):
        """The plain answer whose head ``head()`` read; ep follows it."""
        answer = self.open_answer(self.nonce, self._body(headers))
        self.ep = answer["ep"]
        return answer

    def message(self, index):
        """The next message of a chunked stream, opened with its index; None at the stream's end.

        Each chunk is one message ``u32(len(m)) || m``; it must not open without its index.
        """
        size = int(self._line(), 16)
        if size == 0:
            assert self._line() == b""
            return None
        data = self._read(size)
        assert self._read(2) == b"\r\n"
        length, = struct.unpack(">I", data[:4])
        frame = data[4:4 + length]
        assert frame[0] == 1
        message = self.open_answer(self.nonce, frame, index)
        assert ref_open(self.s2c, RES_LABEL + self.nonce, frame[1:]) is None
        return message


# =============================================================================
# Fixtures
# =============================================================================


class _Kept:
    """What a fixture made, each ended by ``end(thing)`` after the test, in the order made."""

    def __init__(self, end):
        self.things, self.end = [], end

    def __call__(self, thing):
        self.things.append(thing)
        return thing

    def end_all(self):
        for thing in self.things:
            self.end(thing)


@pytest.fixture
def make_server():
    """``make_server(**options)``: DSNSync(port=0, **options), started (``start=False``: not
    yet); every one is stopped after the test."""
    kept = _Kept(lambda sync: sync.stop())

    def make(start=True, **options):
        options.setdefault("port", 0)
        sync = kept(dsn_sync.DSNSync(**options))
        if start:
            assert sync.start() is True
        return sync
    yield make
    kept.end_all()


@pytest.fixture
def make_raw():
    """``make_raw(sync_or_url, token=None, **options)``: a ``Raw``, closed after the test."""
    kept = _Kept(Raw.close)
    yield lambda target, token=None, **options: kept(Raw(target, token, **options))
    kept.end_all()


@pytest.fixture
def make_client():
    """dsn_sync.connect(...); every client is closed after the test."""
    kept = _Kept(lambda client: client.close())
    yield lambda url, token, **options: kept(dsn_sync.connect(url, token, **options))
    kept.end_all()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed EC certificate for 127.0.0.1 made with the openssl command: (certfile, keyfile)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS tests need the `openssl` command on PATH (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return str(cert), str(key)


def needs(*modules):
    """Import test-only packages, or skip loudly (fail in CI, where the test command installs them)."""
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail("%s is not installed in CI (a test-only dependency: see pyproject's test extra)" % name)
            pytest.skip("LOUD SKIP: %s is not installed (pip install %s): the tests that need it did not run"
                        % (name, name.split(".")[0]))


# =============================================================================
# PostgreSQL: one throwaway cluster for the session
# =============================================================================


def pg_unavailable(reason):
    """Skip loudly (fail when CI is set): the PostgreSQL tests cannot run here."""
    message = "PostgreSQL tests NOT RUN: %s" % reason
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this is a failure)")
    sys.stderr.write("\n" + "!" * 78 + "\n!! " + message + "\n" + "!" * 78 + "\n")
    pytest.skip(message)


@pytest.fixture(scope="session")
def cluster():
    """A throwaway PostgreSQL cluster (test/pg_cluster.py); ``cluster.create_database()`` per test."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pg_unavailable('psycopg 3 is not installed (pip install "psycopg[binary]")')
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "test"))
    import pg_cluster
    found = pg_cluster.PgCluster.find()
    if found is None:
        pg_unavailable("no initdb/pg_ctl found on PATH, under /usr/lib/postgresql/*/bin or in $PG_BIN "
                       "(apt-get install postgresql)")
    found.start()
    yield found
    found.stop()


def tail_seqs(url, stop, gaps, seen):
    """Tail dsn_records as a ``bigserial`` change feed is read (``SELECT seq > last ORDER BY
    seq``) until ``stop`` is set: each seq read goes to ``seen``, each skipped one to ``gaps``
    as (last, seq).  Commit order (README) says ``gaps`` stays empty."""
    import psycopg
    last = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            done = stop.is_set()
            for (seq,) in conn.execute("SELECT seq FROM dsn_records WHERE seq > %s ORDER BY seq", (last,)):
                if seq != last + 1:
                    gaps.append((last, seq))
                last = seq
                seen.append(seq)
            if done:
                return


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store_server(request, tmp_path):
    """store_server(**options) -> a started DSNSync on memory, SQLite and PostgreSQL in turn (a fresh
    one per test; the PostgreSQL case takes the session's ``cluster``, and skips loudly without it)."""
    made = []

    def make(**options):
        if request.param == "sqlite":
            options["db_connection_string"] = "sqlite:///%s" % (tmp_path / ("api%d.db" % len(made)))
        elif request.param == "postgresql":
            options["db_connection_string"] = request.getfixturevalue("cluster").create_database()
        sync = dsn_sync.DSNSync(port=0, **options)
        made.append(sync)
        sync.start()
        return sync

    yield make
    for sync in made:
        sync.stop()


# =============================================================================
# A server in a child process, driven over JSON lines (durability and cluster tests)
# =============================================================================


class ChildServer:
    """``args`` run in a child process whose stdout is JSON lines: a hello first, then one
    reply per command written to its stdin; stderr goes to ``log_path``.  ``on_line(obj)``
    may take a line for itself (True) before it counts as hello or reply."""

    what = "the server child"  # how messages name it

    def __init__(self, args, log_path, on_line=None):
        self.log_path = Path(log_path)
        self._log = self.log_path.open("ab")
        self._on_line = on_line
        env = dict(os.environ)
        env.pop("DSN_SYNC_SECRET", None)
        root = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=root, env=env)
        self.pid = self.proc.pid
        self._replies = queue.Queue()
        self._hello = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        hello = self._hello.get(timeout=60)
        if hello is None:
            raise AssertionError("%s exited before saying hello:\n%s" % (self.what, self.log()))
        self.hello = hello

    def _read(self):
        said_hello = False
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if self._on_line is not None and self._on_line(obj):
                continue
            if not said_hello:
                said_hello = True
                self._hello.put(obj)
            else:
                self._replies.put(obj)
        self._hello.put(None)
        self._replies.put(None)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def cmd(self, timeout=60, **command):
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        reply = self._replies.get(timeout=timeout)
        if reply is None:
            raise AssertionError("%s died during %r:\n%s" % (self.what, command, self.log()))
        assert reply.get("ok"), "%s: command %r failed: %s" % (self.what, command, reply.get("error"))
        return reply

    def alive(self):
        return self.proc.poll() is None

    def sigkill(self):
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)  # every line the child flushed before dying is read

    def exit(self):
        """Ask the child to exit and wait for it."""
        if self.proc.poll() is None:
            self.proc.stdin.write(b'{"cmd": "exit"}\n')
            self.proc.stdin.flush()
            self.proc.wait(30)
        self._reader.join(10)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except Exception:
                pass
        self._log.close()
