"""Streamed pulls (README "Streamed pulls"): many sealed answers down one chunked response."""

import json
import socket
import struct
import time

import pytest

import dsn_sync


class StreamClient:
    """A raw keep-alive connection that can read a chunked answer message by message."""

    def __init__(self, sync, token=None):
        self.sync = sync
        self.kid, secret = dsn_sync.parse_token(token or sync.get_token())
        self.c2s, self.s2c = dsn_sync.traffic_keys(secret)
        self.path = "/sync/" + sync.instance
        self.sock = socket.create_connection(("127.0.0.1", sync.port), timeout=10)
        self.buf = b""

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, obj):
        obj = dict(obj, t=int(time.time() * 1000))
        frame = dsn_sync.request_frame(self.kid, self.c2s, self.path, json.dumps(obj).encode())
        self.nonce = frame[3 + len(self.kid):][:16]
        head = "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % (self.path, len(frame))
        self.sock.sendall(head.encode() + frame)

    def head(self):
        status = int(self._line().split()[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                return status, headers
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()

    def whole(self, headers):
        body = self._read(int(headers["content-length"]))
        return json.loads(dsn_sync.open_response(self.s2c, self.nonce, body))

    def message(self, index):
        """The next stream message (opened with its index), or None at the end of the stream."""
        size = int(self._line(), 16)
        if size == 0:
            assert self._line() == b""
            return None
        data = self._read(size)
        assert self._read(2) == b"\r\n"
        length, = struct.unpack(">I", data[:4])
        frame = data[4:4 + length]
        assert frame[0] == 1
        plain = dsn_sync.open(self.s2c, b"dsn-sync/v1 res\n" + self.nonce + struct.pack(">I", index), frame[1:])
        assert plain is not None, "message %d does not open with its index" % index
        assert dsn_sync.open(self.s2c, b"dsn-sync/v1 res\n" + self.nonce, frame[1:]) is None
        return json.loads(plain)

    def ok(self, obj):
        self.send(obj)
        status, headers = self.head()
        assert status == 200
        answer = self.whole(headers)
        self.path = answer["ep"]
        return answer


@pytest.fixture
def server():
    sync = dsn_sync.DSNSync(port=0)
    sync.define_table("t", {"key": "id", "fields": None})
    sync.start()
    yield sync
    sync.stop()


def test_a_streamed_pull_carries_every_change_then_ends_and_the_connection_carries_on(server):
    c = StreamClient(server)
    hello = c.ok({"op": "hello"})
    cursor = {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]}
    c.send({"op": "pull", "since": cursor, "wait": 2, "stream": True})
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
    assert c.ok({"op": "pull", "since": {"epoch": hello["epoch"], "seq": seq, "sv": hello["sv"]}, "wait": 0})["changes"] == []


def test_a_stream_with_nothing_to_say_ends_as_a_plain_empty_answer(server):
    c = StreamClient(server)
    hello = c.ok({"op": "hello"})
    c.send({"op": "pull", "since": {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]},
            "wait": 0.5, "stream": True})
    status, headers = c.head()
    assert status == 200 and "content-length" in headers
    assert c.whole(headers)["changes"] == []


def test_a_stream_with_changes_already_waiting_is_answered_plainly(server):
    c = StreamClient(server)
    hello = c.ok({"op": "hello"})
    server.sync("t", "x", {"v": 1})
    c.send({"op": "pull", "since": {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]},
            "wait": 5, "stream": True})
    status, headers = c.head()
    assert "content-length" in headers and c.whole(headers)["changes"] == [["t", "x", {"v": 1}]]


def test_a_departed_stream_client_does_not_stop_the_others(server):
    gone, stays = StreamClient(server), StreamClient(server)
    for c in (gone, stays):
        hello = c.ok({"op": "hello"})
        c.send({"op": "pull", "since": {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]},
                "wait": 3, "stream": True})
    time.sleep(0.1)
    gone.sock.close()
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


def test_stream_messages_are_spaced_and_coalesced_to_the_latest_state(server, monkeypatch):
    monkeypatch.setattr(server._feed, "stream_spacing", 0.1)  # 0.1 s per parked pull: one pull here
    c = StreamClient(server)
    hello = c.ok({"op": "hello"})
    c.send({"op": "pull", "since": {"epoch": hello["epoch"], "seq": hello["seq"], "sv": hello["sv"]},
            "wait": 1.5, "stream": True})
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
