"""One protocol suite, three doors: the standalone server, ``sync.wsgi_app()`` and ``sync.asgi_app()``.

Every test takes the ``door`` fixture and runs once per door:

- ``standalone``: ``DSNSync.start()`` on a port of its own;
- ``wsgi``: ``sync.wsgi_app()`` behind werkzeug's DispatcherMiddleware at ``/dsn``,
  served by waitress in a thread of this process;
- ``asgi``: ``sync.asgi_app()`` in a Starlette ``Mount('/dsn', ...)``, served by
  uvicorn in a thread of this process.

The DSNSync lives in this process for all three, so a test can call
``sync.sync()`` and ``issue_token()`` and watch what clients see.  Raw frames are
built with dsn_sync's public helpers (request_frame, open_response, parse_token,
traffic_keys); ``Raw`` keeps one token's endpoint the way a client must.

Test-only packages: uvicorn, starlette, waitress, werkzeug (with flask), gunicorn.
"""

import http.client
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

import dsn_sync
from conftest import needs

HERE = os.path.dirname(os.path.abspath(__file__))
DOORS = ("standalone", "wsgi", "asgi")
PAGE_SIZE = 3
MAX_BODY = 1 << 20
WSGI_MAX_WAIT, WSGI_POLL, WSGI_MAX_HELD = 15, 0.5, 4


def _now_ms():
    return int(time.time() * 1000)


# -----------------------------------------------------------------------------
# The doors
# -----------------------------------------------------------------------------


class Door:
    """A running door: its DSNSync, where it listens, the prefix it is mounted at, and raw HTTP."""

    def __init__(self, name, sync, port, prefix, stop):
        self.name, self.sync, self.port, self.prefix, self._stop = name, sync, port, prefix, stop
        self.url = sync.get_url("http://127.0.0.1:%d%s" % (port, prefix)) if prefix else sync.get_url()
        self.base = "/sync/" + sync.instance  # the protocol path; on the wire it is prefix + base

    def http(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers with lower-case names, body) of one request to prefix + path."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def socket(self, timeout=20):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def raw(self, token=None):
        return Raw(self, token or self.sync.get_token())

    def stop(self):
        self._stop()


def _new_sync(**options):
    sync = dsn_sync.DSNSync(port=0, rotate_every=2, page_size=PAGE_SIZE, max_body=MAX_BODY, **options)
    _define(sync)
    return sync


def _define(sync):
    """items: every write accepted; guarded: refused unless polite; broken: its handler raises; bare: no handler."""
    for name in ("items", "guarded", "broken", "bare"):
        sync.define_table(name, {"key": "id", "fields": None})
    for op in ("create", "update", "delete"):
        getattr(sync, "on_" + op)("items")(lambda data, ctx: True)
    sync.on_create("guarded")(lambda data, ctx: bool(data.get("polite")))
    sync.on_create("broken")(lambda data, ctx: 1 / 0)


def start_standalone(**options):
    sync = _new_sync(**options)
    sync.start()

    def stop():
        sync.stop()
    return Door("standalone", sync, sync.port, "", stop)


def _not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def start_wsgi(max_wait=WSGI_MAX_WAIT, poll=WSGI_POLL, max_held=WSGI_MAX_HELD, threads=8, **options):
    needs("waitress", "werkzeug")
    import waitress
    from werkzeug.middleware import dispatcher as middleware
    sync = _new_sync(**options)
    mount = sync.wsgi_app(max_wait=max_wait, poll=poll, max_held=max_held)
    app = middleware.DispatcherMiddleware(_not_found, {"/dsn": mount})
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads,
                                    max_request_body_size=MAX_BODY, clear_untrusted_proxy_headers=True)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()

    def stop():
        sync.stop()
        # Closed from its own loop thread: server.close() from here closed sockets under a
        # select() running there (EBADF in that thread, now and then); an empty map ends the loop.
        try:
            server.trigger.pull_trigger(lambda: waitress.wasyncore.close_all(server._map))
        except OSError:
            # Its trigger was closed already (EBADF, seen once in a CI run after the test's own
            # checks had passed; the cause is not known): nothing can ask the loop then, so its
            # map is emptied from here, and the loop ends at its next turn.
            waitress.wasyncore.close_all(server._map)
        server.task_dispatcher.shutdown(timeout=2)
        thread.join(5)
        assert not thread.is_alive(), "waitress's loop did not end"
    door = Door("wsgi", sync, server.socket.getsockname()[1], "/dsn", stop)
    door.mount = mount  # the _WSGIDoor
    return door


def start_asgi(inline_handlers=False, **options):
    needs("uvicorn", "starlette")
    import uvicorn
    from starlette import routing
    from starlette.applications import Starlette
    sync = _new_sync(**options)
    mount = sync.asgi_app(inline_handlers=inline_handlers)
    app = Starlette(routes=[routing.Mount("/dsn", app=mount)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        thread.join(10)
        sync.stop()
    door = Door("asgi", sync, server.servers[0].sockets[0].getsockname()[1], "/dsn", stop)
    door.mount = mount  # the _ASGIDoor: tests of which frames run on the event loop read its lanes
    return door


STARTERS = {"standalone": start_standalone, "wsgi": start_wsgi, "asgi": start_asgi}


@pytest.fixture(params=DOORS)
def door(request):
    running = STARTERS[request.param]()
    yield running
    running.stop()


@pytest.fixture(params=DOORS)
def door_with(request):
    """door_with(**DSNSync options): a door of each kind, made with these options."""
    running = []

    def start(**options):
        running.append(STARTERS[request.param](**options))
        return running[-1]
    yield start
    for each in running:
        each.stop()


@pytest.fixture
def wsgi_door():
    running = start_wsgi(max_wait=1, max_held=1)
    yield running
    running.stop()


# -----------------------------------------------------------------------------
# A raw client: frames by hand
# -----------------------------------------------------------------------------


class Raw:
    """One token speaking frames over plain HTTP, following ``ep`` as PROTOCOL.md 5 asks."""

    def __init__(self, door, token):
        self.door = door
        kid, secret = dsn_sync.parse_token(token)
        self.kid = kid.encode("ascii")
        self.c2s, self.s2c = dsn_sync.traffic_keys(secret)
        self.ep = door.base

    def frame(self, obj, path=None):
        """(frame bytes, request nonce) for ``obj`` sealed to ``path`` (default: the current endpoint)."""
        path = path or self.ep
        frame = dsn_sync.request_frame(self.kid, self.c2s, path, json.dumps(obj).encode("utf-8"))
        return frame, frame[3 + len(self.kid):][:16]

    def post(self, frame, path=None, **kw):
        return self.door.http("POST", path or self.ep, frame, {"Content-Type": "text/plain"}, **kw)

    def call(self, op, path=None, **fields):
        """(status, opened answer or None); follows the answer's ``ep``."""
        path = path or (self.door.base if op == "hello" else self.ep)
        obj = dict(fields, op=op)
        obj.setdefault("t", _now_ms())
        frame, nonce = self.frame(obj, path)
        status, headers, body = self.post(frame, path)
        if status != 200:
            return status, None
        assert headers["content-type"] == "application/octet-stream"
        plain = dsn_sync.open_response(self.s2c, nonce, body)
        assert plain is not None, "the answer does not open with the request's nonce"
        answer = json.loads(plain)
        self.ep = answer["ep"]
        return status, answer

    def ok(self, op, **fields):
        status, answer = self.call(op, **fields)
        assert status == 200 and answer["ok"], (status, answer)
        return answer

    def cursor(self):
        hello = self.ok("hello")
        return {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}


def _in_thread(fn, *args, **kwargs):
    box = {}

    def run():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the test thread
            box["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout):
        thread.join(timeout)
        assert not thread.is_alive(), "no answer within %s s" % timeout
        if "error" in box:
            raise box["error"]
        return box["result"]
    return result


def _wait_for(predicate, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


# -----------------------------------------------------------------------------
# hello, pulls, resets
# -----------------------------------------------------------------------------


def test_hello(door):
    hello = door.raw().ok("hello")
    sync = door.sync
    assert hello["pv"] == "1.1"
    assert hello["instance"] == sync.instance
    assert hello["tables"]["items"] == {"key": "id", "fields": None}
    assert hello["ep"].startswith(door.base + "/")  # rotation on: a fresh path at once
    if door.name == "wsgi":  # a WSGI thread is held by a pull: the server sets the pace
        assert (hello["wait"], hello["poll"]) == (WSGI_MAX_WAIT, WSGI_POLL)
    else:
        assert "wait" not in hello and "poll" not in hello


def test_reset_is_paged_and_complete(door):
    for i in range(8):
        door.sync.sync("items", "k%d" % i, {"n": i})
    raw = door.raw()
    raw.ok("hello")
    first = raw.ok("pull", since=None, wait=0)
    assert first["reset"] is True and first["more"] is True
    pages, records = [first], dict(first["records"].get("items", {}))
    while pages[-1]["more"]:
        page = raw.ok("pull", since=None, next=pages[-1]["next"], wait=0)
        assert (page["epoch"], page["seq"], page["sv"]) == (first["epoch"], first["seq"], first["sv"])
        records.update(page["records"].get("items", {}))
        pages.append(page)
    assert len(pages) == 3  # 8 records, PAGE_SIZE 3
    assert records == {"k%d" % i: {"n": i} for i in range(8)}


def test_pull_answers_changes_since_a_cursor(door):
    raw = door.raw()
    cursor = raw.cursor()
    door.sync.sync("items", "a", {"v": 1})
    door.sync.sync("items", "b", {"v": 2})
    answer = raw.ok("pull", since=cursor, wait=0)
    assert answer["changes"] == [["items", "a", {"v": 1}], ["items", "b", {"v": 2}]]
    assert answer["seq"] == cursor["seq"] + 2


def test_long_poll_wakes_on_a_backend_sync(door):
    raw = door.raw()
    cursor = raw.cursor()
    pending = _in_thread(raw.ok, "pull", since=cursor, wait=25)
    _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the pull to park")
    door.sync.sync("items", "late", {"v": 3})
    answer = pending(timeout=8)  # far below both the 25 s asked and WSGI's 15 s cap: woken, not timed out
    assert answer["changes"] == [["items", "late", {"v": 3}]]


def test_an_empty_long_poll_ends_at_its_wait(door):
    raw = door.raw()
    cursor = raw.cursor()
    answer = raw.ok("pull", since=cursor, wait=0.3)
    assert answer["changes"] == [] and answer["seq"] == cursor["seq"]


def test_subscriptions_on_every_door(door):
    """Protocol section 7 through each door: a full reset of the set, a partial reset of a
    new subscription, and a long-poll that a change it does not select leaves waiting."""
    sync = door.sync
    sync.subscription("mine")(lambda ctx, params: {"items": {"owner": params["owner"]}})
    for i in range(3):
        sync.sync("items", "s%d" % i, {"owner": "ann" if i % 2 else "bob"})
    raw = door.raw()
    assert raw.ok("hello")["subs"] is True
    subs = {"a": {"name": "mine", "params": {"owner": "ann"}}}
    first = raw.ok("pull", since=None, subs=subs, wait=0)
    assert first["reset"] is True and first["sub"] == "a" and first["records"] == {"items": {"s1": {"owner": "ann"}}}
    cursor = {"epoch": first["epoch"], "seq": first["seq"], "sv": first["sv"], "subs": ["a"]}
    subs["b"] = {"name": "mine", "params": {"owner": "bob"}}
    partial = raw.ok("pull", since=cursor, subs=subs, wait=0)
    assert partial["partial"] is True and partial["sub"] == "b" and set(partial["records"]["items"]) == {"s0", "s2"}
    cursor["subs"] = ["a", "b"]
    pending = _in_thread(raw.ok, "pull", since=cursor, subs=subs, wait=25)
    _wait_for(lambda: sync.stats()["waiting"] == 1, what="the pull to park")
    sync.sync("items", "other", {"owner": "carol"})  # selected by neither: the pull waits on
    time.sleep(0.3)
    assert sync.stats()["waiting"] == 1, "a change no subscription selects answered the pull"
    sync.sync("items", "s1", {"owner": "bob"})  # moves from ann's subscription to bob's
    answer = pending(timeout=8)
    assert answer["changes"] == [["items", "s1", {"owner": "bob"}, ["b"]]]


def test_wsgi_caps_the_wait_and_the_held_threads(wsgi_door):
    """max_wait=1: a pull asking 25 s is held 1 s; max_held=1: a second pull is answered at once."""
    first, second = wsgi_door.raw(), wsgi_door.raw(wsgi_door.sync.issue_token(sub="other"))
    hello = first.ok("hello")
    assert (hello["wait"], hello["poll"]) == (1, WSGI_POLL)
    cursor = {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}
    second.ok("hello")
    held = _in_thread(first.ok, "pull", since=cursor, wait=25)
    _wait_for(lambda: wsgi_door.sync.stats()["waiting"] == 1, what="the first pull to park")
    began = time.monotonic()
    answer = second.ok("pull", since=cursor, wait=25)
    assert answer["changes"] == []
    assert wsgi_door.sync.stats()["waiting"] == 1, "the second pull was parked past max_held"
    assert time.monotonic() - began < 1, "the pull over max_held waited"
    assert held(timeout=10)["changes"] == []  # the held one came back at max_wait, not after 25 s


def test_wsgi_one_user_holds_at_most_a_quarter_of_the_threads():
    """max_held=4: one user's token may hold one pull; its second is answered at once (it polls),
    while another user's pull is still held. One user cannot take every slot."""
    door = start_wsgi(max_wait=2, max_held=4)
    try:
        ann = door.sync.issue_token(sub="ann")
        first, second, bob = door.raw(ann), door.raw(ann), door.raw(door.sync.issue_token(sub="bob"))
        cursor = first.cursor()
        second.ok("hello")
        bob.ok("hello")
        held = _in_thread(first.ok, "pull", since=cursor, wait=25)
        _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="ann's first pull to park")
        began = time.monotonic()
        assert second.ok("pull", since=cursor, wait=25)["changes"] == []
        assert time.monotonic() - began < 1, "ann's second pull was held past her share"
        again = door.raw(door.sync.issue_token(sub="ann"))  # another login of hers: a token of its own
        again.ok("hello")
        began = time.monotonic()
        assert again.ok("pull", since=cursor, wait=25)["changes"] == []
        assert time.monotonic() - began < 1, "a second token of ann's was held past her share"
        other = _in_thread(bob.ok, "pull", since=cursor, wait=25)
        _wait_for(lambda: door.sync.stats()["waiting"] == 2, what="bob's pull to park beside ann's")
        door.sync.sync("items", "wake", {})
        assert held(timeout=8)["changes"] == other(timeout=8)["changes"] == [["items", "wake", {}]]
    finally:
        door.stop()


def test_python_client_reads_writes_and_follows(door):
    door.sync.sync("items", "seed", {"v": 0})
    token = door.sync.issue_token(sub="ann", write=["items"])
    seen = []
    with dsn_sync.connect(door.url, token, wait=5) as client:
        assert client.wait_ready(15), client.status
        assert client.get("items", "seed") == {"v": 0}
        client.on_data_change("items", lambda records: seen.append(records))
        assert client.create("items", "mine", {"v": 1}) == {"v": 1}
        assert door.sync.get("items", "mine") == {"v": 1}
        door.sync.sync("items", "pushed", {"v": 2})
        _wait_for(lambda: client.get("items", "pushed") == {"v": 2}, what="the pushed record")
        assert seen[-1]["pushed"] == {"v": 2}
        assert client.status == "online"


def test_long_polls_over_a_users_cap_get_503(door_with):
    door = door_with(max_waiting_per_user=1)
    token = door.sync.issue_token(sub="ann")  # one user's tabs share one token
    first, second = door.raw(token), door.raw(token)
    cursor = first.cursor()
    second.ok("hello")
    held = _in_thread(first.ok, "pull", since=cursor, wait=25)
    _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the first pull to park")
    frame, _ = second.frame({"op": "pull", "t": _now_ms(), "since": cursor, "wait": 25})
    status, headers, body = second.post(frame, second.ep)
    if door.name == "wsgi":  # the door's own share per user (a quarter of max_held) comes first: answered at once
        assert status == 200 and door.sync.stats()["waiting"] == 1
    else:
        assert status == 503 and headers["access-control-allow-origin"] == "*"
    door.sync.sync("items", "wake", {})
    assert held(timeout=8)["changes"] == [["items", "wake", {}]]


def test_a_long_poll_of_a_token_revoked_while_it_waits_is_told_nothing_more(door):
    """Revoked while its pull waits: the next change is not sent to it. The pull is refused
    (503, or its connection closed by the standalone server) and its next request is 401."""
    token = door.sync.issue_token(sub="ann")
    raw = door.raw(token)
    cursor = raw.cursor()
    held = _in_thread(raw.call, "pull", since=cursor, wait=10)
    _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the pull to park")
    door.sync.revoke(token)
    door.sync.sync("items", "secret", {"v": 1})
    try:
        status, answer = held(timeout=8)
    except (ConnectionError, http.client.HTTPException) as e:  # the standalone server closes the connection
        status, answer = type(e).__name__, None
    assert answer is None and status != 200, (status, answer)
    assert raw.call("pull", since=cursor, wait=0)[0] == 401


def test_a_long_poll_whose_token_expires_while_it_waits_is_answered_expired(door):
    """The token runs out during a 10 s pull: the pull ends then, with the sealed `expired` any
    request of it would now get (PROTOCOL.md 4), not a dropped connection that clients would
    report as the server being down."""
    token = door.sync.issue_token(sub="ann", ttl=3)
    raw = door.raw(token)
    cursor = raw.cursor()
    started = time.monotonic()
    status, answer = raw.call("pull", since=cursor, wait=10)
    assert status == 200 and answer["ok"] is False and answer["error"]["code"] == "expired", (status, answer)
    assert time.monotonic() - started < 9, "held past the token's life, to the end of its wait"
    status, answer = raw.call("pull", since=cursor, wait=0)
    assert status == 200 and answer["error"]["code"] == "expired", (status, answer)


def test_a_departed_clients_long_poll_gives_back_its_slot(door):
    """The client closes its connection while its pull waits: the slot comes back (WSGI: at max_wait)."""
    raw = door.raw()
    cursor = raw.cursor()
    wire = Wire(door)
    frame, _ = raw.frame({"op": "pull", "t": _now_ms(), "since": cursor, "wait": 25})
    wire.send("POST", raw.ep, frame, [("Content-Type", "text/plain")])
    _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the pull to park")
    wire.close()
    # A WSGI app cannot see a client leave: its pull is held to the door's max_wait.
    _wait_for(lambda: door.sync.stats()["waiting"] == 0, timeout=WSGI_MAX_WAIT + 5 if door.name == "wsgi" else 8,
              what="the departed client's slot")
    door.sync.sync("items", "after", {"v": 1})  # nothing is answered into the void, and the feed carries on
    fresh = door.raw()
    fresh.ok("hello")
    assert fresh.ok("pull", since=cursor, wait=0)["changes"] == [["items", "after", {"v": 1}]]


def test_wsgi_clients_poll_at_the_pace_hello_gives():
    """max_held=0: no pull is ever held; the Python client pauses hello's `poll` between pulls and still follows."""
    door = start_wsgi(max_wait=5, poll=0.5, max_held=0)
    try:
        with dsn_sync.connect(door.url, door.sync.get_token(), wait=25) as client:
            assert client.wait_ready(10), client.status
            before = door.sync.stats()["requests"]
            time.sleep(2)
            pulls = door.sync.stats()["requests"] - before
            assert 1 <= pulls <= 12, "%d pulls in 2 s at poll=0.5 (jittered 0.25-0.75 s)" % pulls
            door.sync.sync("items", "polled", {"v": 1})
            _wait_for(lambda: client.get("items", "polled") == {"v": 1}, what="the change, by polling")
    finally:
        door.stop()


def test_wsgi_clients_do_not_pause_while_their_cursor_is_catching_up():
    """A changes answer may end short of the store (max_walk slots walked) with nothing the
    token may read: its cursor moved, so the client pulls again at once. It used to take
    such an answer for "nothing new" and pause hello's `poll` each time (here 30 s)."""
    door = start_wsgi(max_wait=5, poll=30.0)
    try:
        door.sync.define_table("big", {"key": "id", "fields": None})
        door.sync.define_table("small", {"key": "id", "fields": None})
        token = door.sync.issue_token("ann", read=["small"])
        with dsn_sync.connect(door.url, token, wait=25) as client:
            assert client.wait_ready(10), client.status
            _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the client's pull to be held")
            door.sync._store.max_walk = 500
            with door.sync.batch():
                for i in range(3000):
                    door.sync.sync("big", "b%d" % i, {"i": i})
                door.sync.sync("small", "s", {"v": 1})
            _wait_for(lambda: client.get("small", "s") == {"v": 1}, timeout=10,
                      what="the change after 3,000 it may not read (six answers of 500 slots)")
    finally:
        door.stop()


# -----------------------------------------------------------------------------
# Streamed pulls (PROTOCOL.md 6)
# -----------------------------------------------------------------------------


class Wire:
    """One keep-alive socket, read by hand so a chunked stream can be taken message by message."""

    def __init__(self, door):
        self.door, self.sock, self.buf = door, door.socket(), b""

    def send(self, method, path, body=b"", headers=()):
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n" % (method, self.door.prefix + path, len(body))
        head += "".join("%s: %s\r\n" % pair for pair in headers)
        self.sock.sendall(head.encode() + b"\r\n" + body)

    def _fill(self, test):
        while not test():
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk

    def line(self):
        self._fill(lambda: b"\r\n" in self.buf)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def take(self, n):
        self._fill(lambda: len(self.buf) >= n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        status = int(self.line().split()[1])
        headers = {}
        while True:
            line = self.line()
            if not line:
                return status, headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()

    def chunk(self):
        """The next chunk's bytes; b'' for the last one."""
        size = int(self.line().split(b";")[0], 16)
        data = self.take(size)
        assert self.take(2) == b"\r\n"
        return data

    def close(self):
        self.sock.close()


def _messages(data):
    """Split stream bytes into their u32-length-prefixed messages; (messages, leftover)."""
    out = []
    while len(data) >= 4:
        size, = struct.unpack(">I", data[:4])
        if len(data) < 4 + size:
            break
        out.append(data[4:4 + size])
        data = data[4 + size:]
    return out, data


def _open_message(raw, nonce, index, message):
    assert message[0] == 1
    plain = dsn_sync.open(raw.s2c, b"dsn-sync/v1 res\n" + nonce + struct.pack(">I", index), message[1:])
    assert plain is not None, "stream message %d does not open with its index" % index
    assert dsn_sync.open(raw.s2c, b"dsn-sync/v1 res\n" + nonce, message[1:]) is None, "the index is not sealed in"
    return json.loads(plain)


def test_streamed_pull_sends_indexed_messages_then_ends(door):
    raw = door.raw()
    cursor = raw.cursor()
    wire = Wire(door)
    try:
        frame, nonce = raw.frame({"op": "pull", "t": _now_ms(), "since": cursor, "wait": 3, "stream": True})
        wire.send("POST", raw.ep, frame, [("Content-Type", "text/plain"), ("Origin", "http://page.example")])
        _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the stream to park")
        door.sync.sync("items", "s1", {"v": 1})
        status, headers = wire.head()
        assert status == 200
        assert headers["content-type"] == "application/x-dsn-stream"
        assert headers["transfer-encoding"] == "chunked"
        assert headers["access-control-allow-origin"] == "*"
        pending, answers = b"", []
        while len(answers) < 2:
            data = wire.chunk()
            assert data, "the stream ended before its second message"
            found, pending = _messages(pending + data)
            for message in found:
                answers.append(_open_message(raw, nonce, len(answers), message))
            if len(answers) == 1 and not found[1:]:
                door.sync.sync("items", "s2", {"v": 2})
        assert answers[0]["changes"] == [["items", "s1", {"v": 1}]]
        assert answers[1]["changes"] == [["items", "s2", {"v": 2}]]
        assert answers[1]["seq"] == cursor["seq"] + 2
        while True:  # nothing more happens: the stream ends when its wait runs out
            data = wire.chunk()
            if not data:
                break
            pending += data
        assert pending == b""
        # ... and the connection carries on, unless the server said it would close it
        # (waitress closes after every chunked answer: the client opens another)
        if headers.get("connection") == "close":
            assert door.name == "wsgi", "only the waitress door closes after a stream"
            assert wire.sock.recv(1) == b""
            wire.close()
            wire = Wire(door)
        raw.ep = answers[-1]["ep"]
        frame, nonce = raw.frame({"op": "hello", "t": _now_ms()}, door.base)
        wire.send("POST", door.base, frame, [("Content-Type", "text/plain")])
        status, headers = wire.head()
        assert status == 200
        hello = json.loads(dsn_sync.open_response(raw.s2c, nonce, wire.take(int(headers["content-length"]))))
        assert hello["ok"] and hello["seq"] == cursor["seq"] + 2
    finally:
        wire.close()


def test_a_stream_with_nothing_to_say_gets_a_plain_answer(door):
    raw = door.raw()
    cursor = raw.cursor()
    status, headers, body = door.http("POST", raw.ep, raw.frame(
        {"op": "pull", "t": _now_ms(), "since": cursor, "wait": 0.3, "stream": True})[0], {"Content-Type": "text/plain"})
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert "content-length" in headers


def test_wsgi_stream_counts_against_max_held(wsgi_door):
    """max_held=1: while a streamed pull holds a WSGI thread, another pull must be answered at once."""
    streamer, other = wsgi_door.raw(), wsgi_door.raw(wsgi_door.sync.issue_token(sub="other"))
    cursor = streamer.cursor()
    other.ok("hello")
    wire = Wire(wsgi_door)
    try:
        frame, nonce = streamer.frame({"op": "pull", "t": _now_ms(), "since": cursor, "wait": 1, "stream": True})
        wire.send("POST", streamer.ep, frame, [("Content-Type", "text/plain")])
        _wait_for(lambda: wsgi_door.sync.stats()["waiting"] == 1, what="the stream to park")
        wsgi_door.sync.sync("items", "s", {"v": 1})
        status, headers = wire.head()
        assert headers["content-type"] == "application/x-dsn-stream"  # streaming: its thread is still held
        now = {"epoch": cursor["epoch"], "seq": cursor["seq"] + 1, "sv": cursor["sv"]}
        pending = _in_thread(other.ok, "pull", since=now, wait=1)
        time.sleep(0.2)
        assert wsgi_door.sync.stats()["waiting"] == 1, "a second pull was held while the stream held the only slot"
        pending(timeout=5)
    finally:
        wire.close()


# -----------------------------------------------------------------------------
# Writes and their error codes
# -----------------------------------------------------------------------------


def test_writes_and_their_error_codes(door):
    sync = door.sync
    raw = door.raw(sync.issue_token(sub="ann", write=["items", "guarded", "broken", "bare", "nowhere"]))
    raw.ok("hello")
    made = raw.ok("create", table="items", key="a", data={"v": 1}, mid="m1")
    assert made["record"] == {"v": 1} and made["epoch"] == raw.cursor()["epoch"]
    assert sync.get("items", "a") == {"v": 1}
    assert raw.ok("update", table="items", key="a", data={"w": 2}, mid="m2")["record"] == {"v": 1, "w": 2}
    assert raw.ok("delete", table="items", key="a", mid="m3")["record"] is None

    def code(op, **fields):
        status, answer = raw.call(op, **fields)
        assert status == 200 and answer["ok"] is False, answer
        return answer["error"]["code"]
    first = raw.ok("create", table="items", key="b", data={}, mid="m4")
    assert code("create", table="items", key="b", data={}, mid="m5") == "exists"
    assert code("update", table="items", key="zz", data={}, mid="m6") == "not_found"
    assert code("create", table="nowhere", key="x", data={}, mid="m7") == "unknown_table"
    assert code("create", table="bare", key="x", data={}, mid="m8") == "no_handler"
    assert code("create", table="guarded", key="x", data={}, mid="m9") == "rejected"
    assert raw.ok("create", table="guarded", key="x", data={"polite": True}, mid="m10")["record"] == {"polite": True}
    assert code("create", table="broken", key="x", data={}, mid="m11") == "handler_error"
    assert code("create", table="items", key="c", data={"id": "other"}, mid="m12") == "invalid"
    assert code("fly", mid="m13") == "bad_request"
    assert code("create", table="items", key="d", data={}, mid="m14", t=_now_ms() - 120000) == "clock"
    # a repeated mid gets the first answer, even with another payload
    again = raw.ok("create", table="items", key="b", data={"other": 1}, mid="m4")
    assert again["record"] == {} and again["seq"] == first["seq"] < sync.stats()["seq"]
    results = raw.ok("batch", mutations=[{"op": "create", "table": "items", "key": "e", "data": {}, "mid": "b1"},
                                          {"op": "create", "table": "items", "key": "e", "data": {}, "mid": "b2"}])
    assert [r["ok"] for r in results["results"]] == [True, False]
    assert "epoch" in results["results"][0] and results["results"][1]["error"]["code"] == "exists"

    reader = door.raw(sync.issue_token(sub="bob", write=[]))
    reader.ok("hello")
    status, answer = reader.call("create", table="items", key="f", data={}, mid="r1")
    assert answer["error"]["code"] == "forbidden"


def test_replayed_frame(door):
    raw = door.raw()
    raw.ok("hello")
    path = raw.ep
    frame, _ = raw.frame({"op": "pull", "t": _now_ms(), "since": None, "wait": 0}, path)
    assert raw.post(frame, path)[0] == 200
    status, headers, body = raw.post(frame, path)
    assert status == 200  # sealed answer, error `replay`
    # (the answer is sealed to the same nonce; open it to read the code)
    answer = json.loads(dsn_sync.open_response(raw.s2c, frame[3 + len(raw.kid):][:16], body))
    assert answer["error"]["code"] == "replay"


# -----------------------------------------------------------------------------
# Endpoint rotation (PROTOCOL.md 5)
# -----------------------------------------------------------------------------


def test_endpoints_rotate_and_others_are_404(door):
    raw = door.raw()
    first = raw.ok("hello")["ep"]
    paths = [first]
    for _ in range(6):
        raw.ok("pull", since=None, wait=0)
        paths.append(raw.ep)
    assert len(set(paths)) >= 3, "rotate_every=2 moves the token every 2 requests: %r" % paths
    assert all(p.startswith(door.base + "/") for p in paths)
    # a retired path still works within its grace; an unknown one is 404 before any check
    assert raw.call("pull", path=paths[0], since=None, wait=0)[0] == 200
    assert raw.call("pull", path=door.base + "/AAAAAAAAAAAA", since=None, wait=0)[0] == 404
    # a non-hello op at the base path is 404 after authentication
    assert raw.call("pull", path=door.base, since=None, wait=0)[0] == 404
    # another token's live path is 404 too
    other = door.raw(door.sync.issue_token(sub="zed"))
    other.ok("hello")
    assert raw.call("pull", path=other.ep, since=None, wait=0)[0] == 404


# -----------------------------------------------------------------------------
# Transport answers: 400, 401, 404, 405, 411, 413, CORS
# -----------------------------------------------------------------------------


def test_tampered_and_malformed_frames(door):
    raw = door.raw()
    frame, _ = raw.frame({"op": "hello", "t": _now_ms()}, door.base)
    tampered = frame[:-1] + bytes([frame[-1] ^ 1])
    assert raw.post(tampered, door.base)[0] == 401
    flipped = bytearray(frame)
    flipped[3 + len(raw.kid) + 20] ^= 0x80  # a ciphertext byte
    assert raw.post(bytes(flipped), door.base)[0] == 401
    stranger = dsn_sync.DSNSync(port=0).issue_token()  # another server's token: its kid does not open here
    assert door.raw(stranger).post(door.raw(stranger).frame({"op": "hello", "t": 1}, door.base)[0], door.base)[0] == 401
    wrong_path, _ = raw.frame({"op": "hello", "t": _now_ms()}, door.base + "/x")  # sealed to another path
    assert raw.post(wrong_path, door.base)[0] == 401
    assert raw.post(b"\x02junk", door.base)[0] == 400
    assert raw.post(b"", door.base)[0] == 400
    revoked = door.sync.issue_token(sub="gone")
    door.sync.revoke(revoked)
    assert door.raw(revoked).call("hello")[0] == 401


def test_413_is_judged_before_the_body_is_read(door):
    """Only the head goes out, with a Content-Length over max_body: the answer comes without the body."""
    if door.name == "wsgi":
        pytest.skip("waitress reads a whole body before it calls the app (max_request_body_size bounds it); "
                    "the WSGI door is checked under gunicorn in test_wsgi_413_under_gunicorn")
    _check_413(door.port, door.prefix + door.base)
    if door.name == "standalone":  # (uvicorn's parser refuses such a number itself, with 400)
        _check_413(door.port, door.prefix + door.base, "9" * 25)  # over any limit, not malformed: 413, not 411


def _check_413(port, path, length=str(1 << 30)):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
                      "Origin: http://page.example\r\nContent-Length: %s\r\n\r\n" % (path, length)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "closed without an answer"
            data += chunk
        head = data.split(b"\r\n\r\n")[0].decode("latin-1").lower()
        assert head.split()[1] == "413", head
        assert "access-control-allow-origin:" in head
    finally:
        sock.close()


def gunicorn_app(environ, start_response):
    """The WSGI door under gunicorn gthread (test_wsgi_413_under_gunicorn runs ``gunicorn test_doors:gunicorn_app``)."""
    global _gunicorn_wsgi
    if _gunicorn_wsgi is None:
        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        sync = dsn_sync.DSNSync(max_body=MAX_BODY)
        _gunicorn_wsgi = DispatcherMiddleware(_not_found, {"/dsn": sync.wsgi_app()})
        _gunicorn_wsgi.sync = sync
    if environ.get("PATH_INFO") == "/instance":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [_gunicorn_wsgi.sync.instance.encode()]
    return _gunicorn_wsgi(environ, start_response)


_gunicorn_wsgi = None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wsgi_413_under_gunicorn():
    needs("gunicorn", "werkzeug")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", "1",
                             "-b", "127.0.0.1:%d" % port, "test_doors:gunicorn_app"],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/instance")
                instance = conn.getresponse().read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        _check_413(port, "/dsn/sync/" + instance)
        _check_413(port, "/dsn/sync/" + instance, "9" * 25)  # gunicorn passes it on: over the limit, 413
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_cors_on_every_answer_and_options(door):
    raw = door.raw()
    origin = {"Origin": "http://page.example"}
    answers = {
        "frame": raw.post(raw.frame({"op": "hello", "t": _now_ms()}, door.base)[0], door.base),
        "400": door.http("POST", door.base, b"junk", origin),
        "401": door.http("POST", door.base, b"\x01\x00\x01A" + bytes(64), origin),
        "404": door.http("POST", door.base + "/nope", b"x", origin),
        "405": door.http("PUT", door.base, b"x", origin),
        "client": door.http("GET", "/dsn_client.js", headers=origin),
    }
    for name, (status, headers, body) in answers.items():
        assert headers.get("access-control-allow-origin") == "*", (name, status, headers)
    assert [answers[n][0] for n in ("frame", "400", "401", "404", "405", "client")] == [200, 400, 401, 404, 405, 200]
    status, headers, body = door.http("OPTIONS", door.base, headers=dict(
        origin, **{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}))
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "Content-Type"


# -----------------------------------------------------------------------------
# GET and HEAD: the client file and the inspector
# -----------------------------------------------------------------------------


def _max_age(headers):
    for part in headers["cache-control"].split(","):
        name, _, value = part.strip().partition("=")
        if name == "max-age":
            return int(value)
    return 0


def test_client_file_is_served_cached(door):
    status, headers, body = door.http("GET", "/dsn_client.js")
    assert status == 200
    with open(os.path.join(HERE, "dsn_client.js"), "rb") as f:
        assert body == f.read()
    assert headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert _max_age(headers) >= 3600
    etag = headers["etag"]
    status, again, body = door.http("GET", "/dsn_client.js", headers={"If-None-Match": etag})
    assert status == 304 and body == b"" and again["etag"] == etag
    assert again["access-control-allow-origin"] == "*"
    status, head, body = door.http("HEAD", "/dsn_client.js")
    assert status == 200 and body == b""
    assert head["content-length"] == headers["content-length"] and head["etag"] == etag


def test_home_page_links_the_client_beside_it_under_any_prefix(door):
    """The page at the mount's root links the client relative to itself: under /dsn/ that is
    /dsn/dsn_client.js (an absolute /dsn_client.js was the app's 404)."""
    status, _, page = door.http("GET", "/")
    assert status == 200
    link = re.search(rb'<a href="([^"]+)"', page).group(1).decode()
    resolved = urllib.parse.urljoin(door.prefix + "/", link)
    assert resolved == door.prefix + "/dsn_client.js", resolved
    status, _, body = door.http("GET", resolved[len(door.prefix):])
    with open(os.path.join(HERE, "dsn_client.js"), "rb") as f:
        assert status == 200 and body == f.read()


def test_inspector_page(door):
    status, headers, body = door.http("GET", door.base + "/inspect")
    assert status == 200 and b"<" in body[:200]
    assert headers["content-type"].startswith("text/html")
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    assert _max_age(headers) >= 3600 and headers["etag"]
    status, head, empty = door.http("HEAD", door.base + "/inspect")
    assert status == 200 and empty == b"" and head["content-length"] == str(len(body))
    status, headers, text = door.http("GET", door.base)  # a sync URL is not a page
    assert status == 405 and b"not a page" in text and b"instance is not" not in text
    # An old bookmark (an in-memory server restarted): says so, without naming this server's instance.
    old = door.base[:door.base.index("/sync/") + 6] + "0000000000000000/inspect"
    status, headers, text = door.http("GET", old)
    assert status == 405 and b"This URL's instance is not this server's" in text, text
    assert door.base.rsplit("/", 1)[1].encode() not in text


# -----------------------------------------------------------------------------
# Lifecycle of a mount
# -----------------------------------------------------------------------------


def test_a_stopped_mount_gives_back_its_process_claim():
    first = dsn_sync.DSNSync(port=0)
    first.wsgi_app()
    first.start(listen=False)
    first.stop()
    second = dsn_sync.DSNSync(port=0)
    try:
        assert second.start(listen=False)
    finally:
        second.stop()


@pytest.fixture
def a_workers_listener():
    """A listening socket, as a pre-fork server's worker holds one it inherited: what makes a
    process claim the in-memory store (_claim_one_process)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield listener


def test_a_mount_made_but_never_started_gives_back_its_claim_at_stop(a_workers_listener):
    held = {path: claim[1] for path, claim in dsn_sync._CLAIMS.items()}
    sync = dsn_sync.DSNSync(port=0)
    sync.wsgi_app()  # claims the process as the app loads
    assert {path: claim[1] for path, claim in dsn_sync._CLAIMS.items()} != held
    sync.stop()
    assert {path: claim[1] for path, claim in dsn_sync._CLAIMS.items()} == held


def test_a_released_claim_leaves_no_lock_file_behind(a_workers_listener):
    held = set(dsn_sync._CLAIMS)
    sync = dsn_sync.DSNSync(port=0)
    sync.wsgi_app()
    path, = set(dsn_sync._CLAIMS) - held
    assert open(path).read().strip() == str(os.getpid())  # the holder, named in a refusal
    sync.stop()
    assert not os.path.exists(path), "every worker run would leave a dsn-sync-*.lock in the temp folder"
    again = dsn_sync.DSNSync(port=0)  # the same app started again claims a new file
    again.wsgi_app()
    try:
        assert path in dsn_sync._CLAIMS and os.path.exists(path)
    finally:
        again.stop()
    assert not os.path.exists(path)


def test_mounts_of_one_process_started_at_once_in_threads_share_its_claim(a_workers_listener):
    # Two apps' first requests may start two mounts at the same moment. flock is held per open
    # file, so each taking its own descriptor of the lock file would refuse the later one as
    # "another worker process". Rounds, since a race shows only now and then.
    held = {path: claim[1] for path, claim in dsn_sync._CLAIMS.items()}  # other tests' mounts still running
    for _ in range(20):
        syncs = [dsn_sync.DSNSync(port=0) for _ in range(8)]
        gate = threading.Barrier(len(syncs))
        errors = []

        def start(sync):
            gate.wait()
            try:
                sync.wsgi_app()  # a mount claims the process as the app that makes it loads
                sync.start(listen=False)
            except Exception as e:  # noqa: BLE001 - any refusal fails the test below
                errors.append(e)
        threads = [threading.Thread(target=start, args=(sync,)) for sync in syncs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for sync in syncs:
            sync.stop()
        assert not errors, errors
        now = {path: claim[1] for path, claim in dsn_sync._CLAIMS.items()}
        assert now == held, "every stop gave its share back: %r, before %r" % (now, held)


def test_under_waitress_waiting_pulls_never_take_every_thread(caplog):
    # waitress's default is 4 threads, and wsgi_app()'s default max_held is 8: pulls of four
    # users would hold all four, and the app's own pages would wait max_wait seconds for one.
    door = start_wsgi(threads=4, max_held=8)
    try:
        held = []
        for user in ("ann", "bob", "cy", "di"):
            raw = door.raw(door.sync.issue_token(sub=user, read="*"))
            cursor = raw.cursor()
            held.append(_in_thread(lambda raw=raw, cursor=cursor: door.http("POST", raw.ep, raw.frame(
                {"op": "pull", "t": _now_ms(), "since": cursor, "wait": 12})[0], {"Content-Type": "text/plain"},
                timeout=60)))
        _wait_for(lambda: door.sync.stats()["waiting"] >= 2, what="two pulls to park")
        time.sleep(0.3)  # room for the other two to park too, as they would without the limit
        assert door.sync.stats()["waiting"] == 2, "half of waitress's 4 threads, no more, hold pulls"
        assert door.mount.max_held == 2
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", door.port, timeout=20)
        conn.request("GET", "/elsewhere")  # a page of the app itself, beside the mount
        assert conn.getresponse().status == 404
        conn.close()
        assert time.monotonic() - t0 < 5, "the app's own request waited for a thread"
        assert any("waitress runs 4 threads, and wsgi_app(max_held=8)" in r.getMessage() for r in caplog.records)
    finally:
        door.stop()
    for answer in held:
        answer(timeout=30)


def test_a_client_given_a_mounts_url_without_its_prefix_is_told_so(wsgi_door):
    url = wsgi_door.sync.get_url("http://127.0.0.1:%d/dsn" % wsgi_door.port)
    client = dsn_sync.connect(url.replace("/dsn/sync/", "/sync/"), wsgi_door.sync.get_token(), write_timeout=10)
    try:
        with pytest.raises(dsn_sync.DSNError) as refused:
            client.create("items", "k", {})
    finally:
        client.close()
    assert refused.value.code == "wrong_url"
    assert ("no dsn-sync answers at http://127.0.0.1:%d/: if dsn-sync is mounted in an app, the URL must include "
            "the mount's prefix" % wsgi_door.port) in str(refused.value), refused.value


def test_wsgi_pull_held_at_stop_is_answered(wsgi_door):
    raw = wsgi_door.raw()
    cursor = raw.cursor()
    held = _in_thread(lambda: wsgi_door.http("POST", raw.ep, raw.frame(
        {"op": "pull", "t": _now_ms(), "since": cursor, "wait": 25})[0], {"Content-Type": "text/plain"}, timeout=60))
    _wait_for(lambda: wsgi_door.sync.stats()["waiting"] >= 1, what="the pull to park")
    threading.Thread(target=wsgi_door.sync.stop, daemon=True).start()
    held(timeout=8)  # any answer (503, or an empty pull) frees the thread; today it never comes


# -----------------------------------------------------------------------------
# ASGI: short frames on the event loop, handlers that block in worker threads
# -----------------------------------------------------------------------------


@pytest.fixture
def asgi_door():
    """The mount with inline_handlers=True: handlers may earn the loop (the mode these tests guard)."""
    running = start_asgi(inline_handlers=True)
    yield running
    running.stop()


def test_asgi_by_default_a_handler_never_runs_on_the_loop():
    door = start_asgi()
    try:
        raw = door.raw(door.sync.issue_token(sub="ann", write=["items"]))
        raw.cursor()
        lanes = door.mount.lanes
        inline, offloaded = lanes.inline, lanes.offloaded
        assert inline >= 1  # the hello, on the loop
        for i in range(lanes.trust_after + 5):
            raw.ok("create", table="items", key="d%d" % i, data={"i": i}, mid="d%d" % i)
        assert lanes.inline == inline, "a write with a handler ran on the event loop without inline_handlers=True"
        assert lanes.offloaded - offloaded == lanes.trust_after + 5
    finally:
        door.stop()


def _blocking_table(sync):
    """Table "slow": its create handler returns at once, or, while ``gate`` is shut, waits for it."""
    sync.define_table("slow", {"key": "id", "fields": None})
    gate, entered = threading.Event(), threading.Event()
    gate.set()

    def on_create(data, ctx):
        if not gate.is_set():
            entered.set()
            gate.wait(60)
        return True
    sync.on_create("slow")(on_create)
    return gate, entered


def _loop_answers(door):
    """The event loop answers while a handler blocks: a hello, a write to another table, the client file.

    Each within 10 s, where the blocked handler waits up to 60 s: a stalled loop fails here.
    """
    raw = door.raw(door.sync.issue_token(sub="bob", write=["items"]))
    for obj in ({"op": "hello"}, {"op": "create", "table": "items", "key": "other", "data": {}, "mid": "o1"}):
        path = door.base if obj["op"] == "hello" else raw.ep
        frame, nonce = raw.frame(dict(obj, t=_now_ms()), path)
        status, _, body = raw.post(frame, path, timeout=10)
        answer = json.loads(dsn_sync.open_response(raw.s2c, nonce, body))
        assert status == 200 and answer["ok"], answer
        raw.ep = answer["ep"]
    status, _, body = door.http("GET", "/dsn_client.js", timeout=10)
    assert status == 200 and body


def test_asgi_short_frames_run_on_the_loop(asgi_door):
    lanes_before = asgi_door.mount.lanes
    raw = asgi_door.raw(asgi_door.sync.issue_token(sub="ann", write=["items", "bare"]))
    cursor = raw.cursor()
    lanes = asgi_door.mount.lanes
    assert lanes_before is None and lanes is not None and lanes.inline >= 1  # hello: on the loop
    trust_after = lanes.trust_after
    for i in range(trust_after + 3):
        made = raw.ok("create", table="items", key="k%d" % i, data={"i": i}, mid="m%d" % i)
        assert made["record"] == {"i": i}
    # The handler ran in a worker until it had been quick trust_after times, then on the loop.
    assert lanes.trusted.get(("items", "create")) is asgi_door.sync._engine.handlers[("items", "create")]
    assert lanes.offloaded >= trust_after and lanes.inline >= 3
    inline, offloaded = lanes.inline, lanes.offloaded
    changes = raw.ok("pull", since=cursor, wait=0)["changes"]
    assert changes == [["items", "k%d" % i, {"i": i}] for i in range(PAGE_SIZE)]
    assert lanes.inline == inline + 1 and lanes.offloaded == offloaded
    assert raw.ok("pull", since=None, wait=0)["reset"] is True  # a reset page: in a worker
    assert lanes.offloaded == offloaded + 1
    asgi_door.sync.subscription("every_item")(lambda ctx, params: {"items": True})
    # A subscription pull calls the app's subscription function: in a worker too.
    answer = raw.ok("pull", subs={"s": {"name": "every_item", "params": {}}}, since=None, wait=0)
    assert answer["reset"] is True and lanes.offloaded == offloaded + 2
    status, answer = raw.call("create", table="bare", key="x", data={}, mid="b1")
    assert answer["error"]["code"] == "no_handler"


def test_asgi_a_blocking_handler_never_holds_the_loop(asgi_door):
    sync = asgi_door.sync
    gate, entered = _blocking_table(sync)
    writer = asgi_door.raw(sync.issue_token(sub="ann", write=["slow"]))
    writer.ok("hello")
    gate.clear()
    try:
        blocked = _in_thread(writer.call, "create", table="slow", key="a", data={}, mid="a")
        assert entered.wait(10), "the handler never ran"
        _loop_answers(asgi_door)  # its frame is in a worker: the loop goes on
    finally:
        gate.set()
    status, answer = blocked(10)
    assert status == 200 and answer["ok"]


def test_asgi_one_tokens_frames_cannot_take_every_worker_thread(tmp_path):
    """An attack run: on a durable store every frame runs in the loop's worker threads, and one token
    holder's slow batches took all of them, so another user's hello waited seconds. A user has at
    most max_offloaded_per_user frames in workers at once, all its tokens together (a login may
    mint one per call); the others wait their turn."""
    door = start_asgi(db_connection_string="sqlite:///%s" % tmp_path.joinpath("d.db"))
    try:
        sync = door.sync
        gate, entered = _blocking_table(sync)
        tokens = [sync.issue_token(sub="mallory", write=["slow"]) for _ in range(2)]
        workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default pool: every one of them, and more
        raws = [door.raw(tokens[i % 2]) for i in range(workers + 2)]
        for raw in raws:
            raw.ok("hello")
        gate.clear()
        try:
            blocked = [_in_thread(raw.call, "create", table="slow", key="k%d" % i, data={}, mid="m%d" % i)
                       for i, raw in enumerate(raws)]
            assert entered.wait(10), "no handler ran"
            time.sleep(0.5)  # every frame that could take a worker has one now
            other = door.raw(sync.issue_token(sub="ann"))
            began = time.monotonic()
            status, answer = other.call("hello")
            assert status == 200 and answer["ok"] and time.monotonic() - began < 5, "another user's hello waited"
            assert door.mount.max_offloaded_per_user < workers
        finally:
            gate.set()
        for answer in blocked:
            status, reply = answer(30)
            assert status == 200 and reply["ok"], (status, reply)
    finally:
        door.stop()


def _frame_head(raw):
    """The first bytes of a frame of ``raw``'s token: version, kid length, kid (what names the token)."""
    return b"\x01" + struct.pack(">H", len(raw.kid)) + raw.kid


def _post_from(door, source, path, body, timeout=30):
    """A socket at client address ``source`` that has sent POST prefix + ``path`` with ``body``."""
    sock = socket.create_connection(("127.0.0.1", door.port), timeout=timeout, source_address=(source, 0))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                 % ((door.prefix + path).encode(), len(body)) + body)
    return sock


def _gated_table(sync, name):
    """Table ``name`` whose create handler records its key, then waits for ``gate``: (keys, gate)."""
    sync.define_table(name, {"key": "id", "fields": None})
    inside, gate = [], threading.Event()

    def on_create(data, ctx):
        inside.append(ctx.key)
        gate.wait(30)
        return True
    sync.on_create(name)(on_create)
    return inside, gate


def test_asgi_one_users_large_frames_from_many_addresses_take_only_that_users_turn():
    """An attack run: a frame over 16 KiB is not opened on the loop, and took its client address's
    turn, so one user with frames padded past 16 KiB from six addresses held every worker thread
    (another user's write went from 3 to 303 ms).  Now it takes the turn of the user its kid names."""
    door = start_asgi()
    try:
        sync = door.sync
        inside, gate = _gated_table(sync, "slow")
        raw = door.raw(sync.issue_token(sub="mallory", write=["slow"]))
        raw.ok("hello")
        share = door.mount.max_offloaded_per_user
        socks = []
        try:
            for i in range(share + 3):
                frame, _ = raw.frame({"op": "create", "table": "slow", "key": "k%d" % i, "data": {"pad": "x" * 17000},
                                      "mid": "m%d" % i, "t": _now_ms()})
                assert len(frame) > dsn_sync._ASGILanes.small
                socks.append(_post_from(door, "127.0.0.%d" % (2 + i), raw.ep, frame))
            _wait_for(lambda: len(inside) >= share, what="the user's share of the workers taken")
            time.sleep(0.5)  # any frame that could take another worker has it now
            assert len(inside) == share, "one user's large frames took %d workers, its share is %d" % (len(inside), share)
        finally:
            gate.set()
        for sock in socks:
            assert _read_until_closed(sock, 30).startswith(b"HTTP/1.1 200 ")
        assert len(inside) == share + 3
    finally:
        door.stop()


def test_asgi_a_body_in_pieces_that_names_no_token_is_refused_after_its_first_bytes():
    """An attack run: four hosts without a token, each holding its 16 MiB share of bodies being
    received, refused every large write (503).  A body that comes in pieces must name a token of
    this server in its first bytes (its kid): else it is answered 400 or 401 at once, unread, and
    nothing of it is counted."""
    door = start_asgi()
    try:
        path = (door.prefix + door.base).encode()
        forged = b"\x01\x00\x20" + b"A" * 32  # a kid this server never sealed
        for head, status in ((b"x" * 100, b"400"), (forged, b"401")):
            sock = door.socket()
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" % path + head)
            time.sleep(0.2)
            sock.sendall(b"y" * 60000)
            answer = _read_until_closed(sock, 10)
            assert answer.split(b" ")[1] == status, answer[:200]
            assert door.mount.buffered == 0 and not door.mount._buffered_by
    finally:
        door.stop()


def test_asgi_one_users_bodies_from_many_addresses_share_one_share():
    """Bodies in pieces count as the user's their kid names, whatever address they come from."""
    door = start_asgi()
    door.sync._max_body = 200000
    door.mount.max_buffered, door.mount.max_buffered_per_address = 4 << 20, 100000  # a share of 200,000
    try:
        raw = door.raw(door.sync.issue_token(sub="mallory"))
        head = _frame_head(raw)
        socks = []
        for i, source in enumerate(("127.0.0.2", "127.0.0.3")):
            sock = socket.create_connection(("127.0.0.1", door.port), timeout=10, source_address=(source, 0))
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 190000\r\n\r\n"
                         % (door.prefix + door.base).encode() + head + b"x" * 120000)
            socks.append(sock)
            if not i:
                _wait_for(lambda: door.mount._buffered_by.get(("user", "mallory"), 0) > 100000, what="the first body counted")
        answer = _read_until_closed(socks[1], 10)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]  # the same user from another address: over its share
        for sock in socks:
            sock.close()
        _wait_for(lambda: not door.mount.buffered and not door.mount._buffered_by, what="every byte given back")
    finally:
        door.stop()


def test_asgi_the_apps_own_token_takes_no_turn(tmp_path):
    """A token without a sub is the app's (or shared by many clients by design): its frames are not
    held to one user's share of the workers."""
    door = start_asgi(db_connection_string="sqlite:///%s" % tmp_path.joinpath("d.db"))
    try:
        sync = door.sync
        inside, gate = _gated_table(sync, "counted")
        token = sync.get_token()
        raws = [door.raw(token) for _ in range(door.mount.max_offloaded_per_user + 1)]
        for raw in raws:
            raw.ok("hello")
        try:
            running = [_in_thread(raw.call, "create", table="counted", key="k%d" % i, data={}, mid="m%d" % i)
                       for i, raw in enumerate(raws)]
            _wait_for(lambda: len(inside) == len(raws), what="every frame of the app token in a worker at once")
            assert not door.mount._turns
        finally:
            gate.set()
        for answer in running:
            assert answer(30)[1]["ok"]
    finally:
        door.stop()


def _read_until_closed(sock, timeout):
    """Everything the server sends until it closes (b"" then), within ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_asgi_a_body_that_trickles_is_cut_at_body_timeout():
    """uvicorn closes no connection whose body stops coming; the mount answers 408 and closes
    it body_timeout after the request began (checked once a second), and serves others meanwhile."""
    door = start_asgi(body_timeout=1.5)
    try:
        sock = door.socket()
        path = door.prefix + door.base
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n%s" % (path.encode(), _frame_head(door.raw())))
        time.sleep(0.3)
        assert door.raw().call("hello")[0] == 200  # another client, while this one trickles
        t0 = time.monotonic()
        answer = _read_until_closed(sock, 10)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert time.monotonic() - t0 < 4
        assert door.mount.buffered == 0
    finally:
        door.stop()


def test_asgi_bodies_being_received_are_bounded_across_requests():
    """Unfinished bodies count against max_buffered as they arrive: past it a request gets 503
    and its connection is closed, and the bytes are given back when a request ends."""
    door = start_asgi()
    door.mount.max_buffered = 150000
    try:
        path = (door.prefix + door.base).encode()
        first, second = door.socket(), door.socket()
        for sock in (first, second):
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\n\r\n" % path)
            sock.sendall(_frame_head(door.raw()) + b"x" * 90000)
            time.sleep(0.3)
        answer = _read_until_closed(second, 10)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert 0 < door.mount.buffered <= 150000  # the first one's bytes, still being received
        assert door.raw().call("hello")[0] == 200  # a small body comes in one piece: never counted
        first.close()
        wait_until = time.monotonic() + 5
        while door.mount.buffered and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert door.mount.buffered == 0
    finally:
        door.stop()


def test_asgi_one_address_holds_only_its_share_of_bodies_being_received():
    """As in the standalone server: one client address may hold max_buffered_per_address of the
    bodies being received (never less than one max_body), so it cannot refuse everyone's large
    writes; a client at another address is still served."""
    door = start_asgi()
    door.sync._max_body = 200000
    door.mount.max_buffered, door.mount.max_buffered_per_address = 4 << 20, 100000  # a share of 200,000
    try:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 190000\r\n\r\n" % (door.prefix + door.base).encode()

        def start(source, size):
            sock = socket.socket()
            sock.settimeout(10)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", door.port))
            sock.sendall(head + kid + b"x" * (size - len(kid)))
            return sock
        kid = _frame_head(door.raw())  # the app's token: its bodies count as their client address's
        first = start("127.0.0.1", 150000)
        _wait_for(lambda: door.mount._buffered_by.get(("address", "127.0.0.1")) == 150000, what="the first body counted")
        second = start("127.0.0.1", 60000)  # 210,000 from 127.0.0.1: over its share
        answer = _read_until_closed(second, 10)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        other = start("127.0.0.2", 150000)
        _wait_for(lambda: door.mount._buffered_by.get(("address", "127.0.0.2")) == 150000, what="the other body counted")
        held = dict(door.mount._buffered_by)
        assert sorted(held) == [("address", "127.0.0.1"), ("address", "127.0.0.2")] and min(held.values()) > 0, held
        other.sendall(b"x" * 40000)  # the other address is read to the end: not a frame, but answered
        assert _read_until_closed(other, 10).split(b" ")[1] in (b"400", b"401"), "the other address was refused"
        for sock in (first, second, other):
            sock.close()
        _wait_for(lambda: not door.mount.buffered and not door.mount._buffered_by, what="every byte given back")
    finally:
        door.stop()


def test_asgi_a_client_that_stops_reading_a_large_answer_is_cut():
    """A large answer goes out in pieces under the server's flow control; a client that stops
    reading is cut body_timeout later (a truncated body, then the close), and while such
    answers hold max_unsent, another large one is answered 503 at once instead of queued."""
    door = start_asgi(body_timeout=1.5)
    try:
        for i in range(PAGE_SIZE):  # a reset page of about 3 MB: more than the kernel's buffers take
            door.sync.sync("items", "big%d" % i, {"blob": "y" * 1000000})
        raw = door.raw()
        raw.cursor()
        door.mount.max_unsent = 3500000  # room for one such page

        def reset_pull(rcvbuf):
            frame, _ = raw.frame({"op": "pull", "since": None, "wait": 0, "t": _now_ms()}, raw.ep)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.connect(("127.0.0.1", door.port))
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % ((door.prefix + raw.ep).encode(), len(frame), frame))
            return sock
        stalled = reset_pull(4096)
        time.sleep(0.5)
        size = door.mount.unsent
        assert size > 3000000
        dropped = reset_pull(1 << 20)
        head, _, body = _read_until_closed(dropped, 5).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and body == b"", (head[:100], len(body))  # never queued
        assert raw.call("hello")[0] == 200  # small answers are not held back
        time.sleep(2.5)  # past body_timeout (1.5 s), plus the once-a-second check
        head, _, body = _read_until_closed(stalled, 10).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) < size, (head[:100], len(body), size)
        assert door.mount.unsent == 0
        assert raw.ok("pull", since=None, wait=0)["reset"] is True  # served whole again
    finally:
        door.stop()


def test_asgi_one_address_that_stops_reading_large_answers_holds_only_its_share():
    """An attack run: one read-only user's 80 reset pulls of 4 MiB from one address, never read,
    filled max_unsent, and every other client's large answer was cut (29 of 31 resets failed).
    As in the standalone server, one client address's large answers and streams hold at most
    max_unsent_per_address; past it that address is answered 503, and others are served whole."""
    door = start_asgi(body_timeout=5)
    try:
        for i in range(PAGE_SIZE):  # a reset page of about 3 MB
            door.sync.sync("items", "big%d" % i, {"blob": "y" * 1000000})
        raw = door.raw(door.sync.issue_token(sub="viewer", read=["items"], write=[]))
        raw.cursor()
        door.mount.max_unsent, door.mount.max_unsent_per_address = 64 << 20, 3500000

        def reset_pull(source, rcvbuf=1 << 20):
            frame, _ = raw.frame({"op": "pull", "since": None, "wait": 0, "t": _now_ms()}, raw.ep)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(10)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", door.port))
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % ((door.prefix + raw.ep).encode(), len(frame), frame))
            return sock
        stalled = reset_pull("127.0.0.2", 4096)
        _wait_for(lambda: door.mount.unsent > 3000000, what="the stalled answer counted")
        again = _read_until_closed(reset_pull("127.0.0.2"), 5)
        assert again.startswith(b"HTTP/1.1 503 "), again[:100]  # the same address: over its share
        other = _read_until_closed(reset_pull("127.0.0.3"), 10)
        head, _, body = other.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) > 3000000, (head[:100], len(body))
        stalled.close()
        _wait_for(lambda: not door.mount.unsent and not door.mount._unsent_by, what="every byte given back", timeout=15)
    finally:
        door.stop()


def _stream_never_read(door, token, wait):
    """A streamed pull of ``token`` on a socket with a small receive buffer that is never read."""
    raw = door.raw(token)
    cursor = raw.cursor()
    frame, _ = raw.frame({"op": "pull", "t": _now_ms(), "since": cursor, "wait": wait, "stream": True}, raw.ep)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", door.port))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                 % ((door.prefix + raw.ep).encode(), len(frame), frame))
    return sock


def test_asgi_a_stream_whose_client_stops_reading_is_cut():
    """A streamed pull whose client stops reading holds its send on the server's flow control;
    it is cut body_timeout after its wait ends, the stream left without its last chunk."""
    door = start_asgi(body_timeout=1.5)
    try:
        sock = _stream_never_read(door, door.sync.get_token(), 1)
        time.sleep(0.3)
        for i in range(12):  # about 11 MB of stream messages: more than the kernel's buffers take
            door.sync.sync("items", "s%d" % i, {"blob": "z" * 900000})
            time.sleep(0.05)
        time.sleep(1 + 1.5 + 1.5)  # its wait, body_timeout, the once-a-second check
        data = _read_until_closed(sock, 10)
        assert data.startswith(b"HTTP/1.1 200 ") and not data.endswith(b"0\r\n\r\n"), data[-20:]
        assert door.raw().call("hello")[0] == 200
    finally:
        door.stop()


def test_wsgi_a_stream_whose_client_stops_reading_gives_its_thread_back():
    """Under waitress a WSGI stream's chunks are buffered by the server until 16 MiB, then the
    app's thread blocks until the client reads, for good if it never does. A streamed answer
    ends after max_stream_bytes (the client pulls on from its cursor), long before its wait,
    and the feed keeps at most max_queued messages for the thread that writes them."""
    door = start_wsgi()
    try:
        door.mount.max_stream_bytes = 256 * 1024
        sock = _stream_never_read(door, door.sync.issue_token(sub="ann"), 14)
        _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the stream to park")
        queued = []
        for i in range(40):  # 40 messages of about 30 kB: over the answer's bytes
            door.sync.sync("items", "s%d" % i, {"blob": "z" * 30000})
            queued.append(max((w.conn.queued for w in door.sync._feed._parked), default=0))
            time.sleep(0.02)
        assert max(queued) <= door.mount.max_queued, queued
        started = time.monotonic()
        _wait_for(lambda: door.mount._held == 0, what="the stream's thread and slot given back", timeout=8)
        assert time.monotonic() - started < 8  # its wait had 13 s to go
        _wait_for(lambda: door.sync.stats()["waiting"] == 0, what="the feed to drop the ended stream", timeout=5)
        again = door.raw(door.sync.issue_token(sub="ann"))  # the same user's next pull is held again
        now = again.cursor()
        held = _in_thread(again.ok, "pull", since=now, wait=10)
        _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the user's next pull to park")
        door.sync.sync("items", "after", {"v": 1})
        assert held(timeout=8)["changes"] == [["items", "after", {"v": 1}]]
        sock.close()
    finally:
        door.stop()


def test_asgi_streams_whose_clients_stop_reading_hold_at_most_max_unsent():
    """Each stream queues at most max_queued messages, but of up to a 4 MiB page each: streams of
    several users that never read held hundreds of MB. Their messages count against max_unsent
    (then the feed offers the latest state later), and are given back when the streams end."""
    door = start_asgi(body_timeout=1.5)
    try:
        door.mount.max_unsent = 1 << 20
        socks = []
        for user in ("ann", "bob", "cy"):
            socks.append(_stream_never_read(door, door.sync.issue_token(sub=user), 2))
        _wait_for(lambda: door.sync.stats()["waiting"] == 3, what="three streams to park")
        seen = []
        for i in range(30):  # 30 changes of 200 kB, each of which every stream is offered
            door.sync.sync("items", "s%d" % i, {"blob": "z" * 200000})
            seen.append(door.mount.streamed)
            time.sleep(0.03)
        assert 0 < max(seen) <= 1 << 20, seen
        _wait_for(lambda: door.mount.streamed == 0, what="the cut streams to give their bytes back", timeout=10)
        assert door.raw().call("hello")[0] == 200
        for sock in socks:
            sock.close()
    finally:
        door.stop()


def test_wsgi_a_stream_queues_at_most_max_queued_messages_and_max_stream_bytes():
    """The feed's side of a WSGI stream whose thread does not take its messages (blocked in the
    server's write): the door takes max_queued of them, then says no room (the feed neither
    builds nor seals more), and takes one again once the thread has taken one."""
    sync = _new_sync()
    door = sync.wsgi_app(max_wait=5, poll=0.5, max_held=4)
    sync.stop()  # nothing here needs it running
    wait = dsn_sync._Wait(None, b"n" * 16, "/ep", 0, 0, time.monotonic() + 5, stream=True)
    wait.transport, wait.conn = door, dsn_sync._WSGIHeld()
    taken = [door.chunk(wait, b"m") for _ in range(door.max_queued + 1)]
    assert taken == [True] * door.max_queued + [False] and not door.room(wait)
    assert door._next(wait.conn)[0] == "chunk" and door.room(wait) and door.chunk(wait, b"m")
    while wait.conn.queued:
        door._next(wait.conn)
    assert door.chunk(wait, b"x" * door.max_stream_bytes)  # one message over the answer's bytes ...
    assert not door.room(wait) and not door.chunk(wait, b"m")  # ... and nothing more is queued behind it
    assert door.alive(wait)
    wait.conn.cut = True
    assert not door.alive(wait) and not door.room(wait)


def test_asgi_one_address_holds_only_its_share_of_stream_bytes():
    """As the standalone server caps one address's unsent answers: the streams of one client
    address hold at most max_unsent_per_address of max_unsent, so one host's slow readers
    cannot hold every other client's streams back."""
    door = start_asgi(body_timeout=1.5)
    door.mount.max_unsent_per_address = 512 << 10
    socks = []
    try:
        for user in ("ann", "bob", "cy"):
            socks.append(_stream_never_read(door, door.sync.issue_token(sub=user), 2))
        _wait_for(lambda: door.sync.stats()["waiting"] == 3, what="three streams to park")
        seen = []
        for i in range(20):
            door.sync.sync("items", "s%d" % i, {"blob": "z" * 200000})
            seen.append(door.mount._streamed_by.get("127.0.0.1", 0))
            time.sleep(0.03)
        assert 0 < max(seen) <= 512 << 10, seen
        _wait_for(lambda: not door.mount._streamed_by and not door.mount.streamed, what="every byte given back",
                  timeout=10)
    finally:
        for sock in socks:
            sock.close()
        door.stop()


def test_asgi_a_stream_whose_client_reads_gives_its_bytes_back_at_once():
    """Counted against max_unsent while they wait in the server's buffer, a stream's messages are
    given back once they have left it, not when the stream ends: a broadcast to thousands of
    reading streams would otherwise fill the budget for the rest of their waits."""
    door = start_asgi()
    wire = Wire(door)
    try:
        raw = door.raw()
        cursor = raw.cursor()
        frame, _ = raw.frame({"op": "pull", "t": _now_ms(), "since": cursor, "wait": 20, "stream": True})
        wire.send("POST", raw.ep, frame, [("Content-Type", "text/plain")])
        _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the stream to park")
        door.sync.sync("items", "big", {"blob": "z" * 100000})
        status, headers = wire.head()
        assert status == 200 and headers["content-type"] == "application/x-dsn-stream"
        got = b""
        while len(got) < 100000:
            got += wire.chunk()
        _wait_for(lambda: door.mount.streamed == 0, what="the message's bytes given back", timeout=3)
        # Still open: parked again once the feed's pass that sent the message is over (during the
        # pass it is out of the parked list, so `waiting` may read 0 for a moment).
        _wait_for(lambda: door.sync.stats()["waiting"] == 1, what="the stream parked again, still open", timeout=3)
    finally:
        wire.close()
        door.stop()


def test_asgi_a_write_waiting_on_a_big_frames_handler_never_holds_the_loop(asgi_door):
    """A frame too big to open on the loop goes to a worker unopened, so the loop cannot tell
    whether it calls a handler: while it is out there, a small write of the same token and
    mid (which must wait for it) goes to a worker too, never waits on the loop."""
    sync = asgi_door.sync
    gate, entered = _blocking_table(sync)
    writer = asgi_door.raw(sync.issue_token(sub="ann", write=["slow", "plain"]))
    writer.ok("hello")
    gate.clear()
    try:
        padded = {"pad": "x" * (dsn_sync._ASGILanes.small + 1000)}  # over the loop's size: never opened there
        big = _in_thread(writer.call, "create", table="slow", key="a", data=padded, mid="m")
        assert entered.wait(10), "the handler never ran"
        # No handler for "plain": small, with nothing to judge, it would run on the loop and
        # wait there for mid "m", which the big frame's worker holds until the gate opens.
        twin = _in_thread(writer.call, "create", table="plain", key="b", data={}, mid="m")
        time.sleep(0.2)
        _loop_answers(asgi_door)
    finally:
        gate.set()
    status, answer = big(10)
    assert status == 200 and answer["ok"]
    status, again = twin(10)
    assert status == 200 and again == dict(answer, now=again["now"], ep=again["ep"])  # mid m's one answer


def test_asgi_a_trusted_handler_that_starts_to_block_goes_back_to_a_worker(asgi_door):
    sync = asgi_door.sync
    gate, entered = _blocking_table(sync)
    writer = asgi_door.raw(sync.issue_token(sub="ann", write=["slow"]))
    writer.ok("hello")
    lanes = asgi_door.mount.lanes
    lanes.trust_after, lanes.slow = 3, 0.05
    for i in range(3):
        writer.ok("create", table="slow", key="q%d" % i, data={}, mid="q%d" % i)
    assert ("slow", "create") in lanes.trusted
    # Trusted, it runs on the loop: when it blocks this once, the loop waits with it (a timer opens the gate).
    gate.clear()
    opener = threading.Timer(0.2, gate.set)
    opener.start()
    try:
        assert writer.ok("create", table="slow", key="b", data={}, mid="b")["record"] == {}
    finally:
        opener.join()
    assert ("slow", "create") not in lanes.trusted and lanes.strikes[("slow", "create")] == 1
    # From now on it runs in a worker: the next time it blocks, the loop answers others.
    entered.clear()
    gate.clear()
    try:
        blocked = _in_thread(writer.call, "create", table="slow", key="c", data={}, mid="c")
        assert entered.wait(10), "the handler never ran"
        _loop_answers(asgi_door)
    finally:
        gate.set()
    status, answer = blocked(10)
    assert status == 200 and answer["ok"]


def test_asgi_a_backend_batch_never_holds_the_loop(asgi_door):
    """``sync.batch()`` holds the store's lock while it runs: frames that need it wait in a worker."""
    sync = asgi_door.sync
    raw = asgi_door.raw()
    raw.ok("hello")
    opened, finish = threading.Event(), threading.Event()

    def backend():
        with sync.batch():
            sync.sync("items", "x", {"v": 1})
            opened.set()
            finish.wait(30)
    batch = _in_thread(backend)
    try:
        assert opened.wait(10)
        engine = sync._engine
        before = engine.requests
        pending = _in_thread(raw.call, "hello")  # its answer needs the store's lock
        _wait_for(lambda: engine.requests > before, what="the hello to reach the engine")
        status, _, body = asgi_door.http("GET", "/dsn_client.js", timeout=10)  # the loop is free
        assert status == 200 and body
    finally:
        finish.set()
    batch(10)
    status, answer = pending(10)
    assert status == 200 and answer["seq"] == sync.stats()["seq"]


def test_a_wrapper_that_keeps_the_mount_prefix_in_the_path_is_told_how_to_hand_it_over(caplog):
    """A newcomer's walkthrough: a Django wrapper that routed /dsn/... to the mount without setting
    root_path got a 405 "not a page" for /dsn/dsn_client.js, and its clients a 404 that blamed
    the URL, which did hold the prefix.  The answer and the log (once) now name root_path and
    SCRIPT_NAME."""
    import asyncio
    sync = _new_sync()
    try:
        door, wsgi = sync.asgi_app(), sync.wsgi_app()
        sync.get_url("http://127.0.0.1:1/dsn")

        def asgi(method, path):
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)
            scope = {"type": "http", "method": method, "path": path, "root_path": "", "client": ("127.0.0.1", 1),
                     "headers": [(b"host", b"x"), (b"content-length", b"0")]}
            asyncio.run(door(scope, receive, send))
            return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
        with caplog.at_level("WARNING", logger="dsn_sync"):
            status, text = asgi("GET", "/dsn/dsn_client.js")
            assert status == 405 and b"still starts with its mount's prefix, /dsn: " in text and b"root_path" in text, text
            assert asgi("POST", "/dsn/sync/%s" % sync.instance)[0] == 404
            answers = []
            wsgi({"REQUEST_METHOD": "POST", "PATH_INFO": "/dsn/sync/%s" % sync.instance, "SCRIPT_NAME": "",
                  "CONTENT_LENGTH": "0", "wsgi.input": None}, lambda status, headers: answers.append(status))
            assert answers[0].startswith("404")
        said = [r.getMessage() for r in caplog.records if "still in the path" in r.getMessage()]
        assert len(said) == 1 and "prefix /dsn still in the path" in said[0] and "root_path" in said[0], said
        assert asgi("GET", "/dsn_client.js")[0] == 200  # handed over as it should be, nothing to say
    finally:
        sync.stop()
