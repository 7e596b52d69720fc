"""Smoke tests for the benchmark (bench_dsn_sync.py, bench/): it starts and prints its table.

No timing is asserted: CI machines vary and the full benchmark is not run here.  What is
checked is that the pieces still fit the code they measure: the micro numbers run, the
bench server entry starts and hands sync traffic to DSNSync, and the Node adapter speaks
protocol v1 through dsn_client.js.
"""
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_micro_quick_prints_its_table():
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_dsn_sync.py"), "--micro-only", "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=HERE)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "| metric | value | target |" in text
    for row in ("seal+open, 1 MiB", "seal of 100 B", "shake_256", "sync() calls/s, memory store",
                "SQLite store inside sync.batch()", "memory at rest"):
        assert row in text, row
    assert "Command: `python3 bench_dsn_sync.py --micro-only --quick`" in text


@contextlib.contextmanager
def bench_process(script, preload, *extra):
    """bench/<script> (a bench server: dsn_server.py, or one under uvicorn) on a free port with
    ``preload`` records: yields its base URL once it answers /_bench/health, and stops it after."""
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "bench", script), "--port", "0", "--preload", str(preload)]
                            + list(extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = "http://127.0.0.1:%s" % m.group(1)
        for _ in range(100):  # uvicorn may start serving a moment after the socket is bound
            try:
                get_json(base + "/_bench/health")
                break
            except OSError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def bench_server():
    with bench_process("dsn_server.py", 50) as base:
        yield base


def get_json(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=20) as r:
        return json.load(r)


def test_bench_server_answers_the_harness_and_serves_sync(bench_server, make_client):
    health = get_json(bench_server + "/_bench/health")
    assert health["ok"] and health["records"] == 50
    grant = get_json(bench_server + "/_bench/token")
    assert grant["url"].startswith(bench_server + "/sync/")
    client = make_client(grant["url"], grant["token"], wait=1)
    client.wait_ready(timeout=20)
    assert len(client.get_all("items")) == 50
    client.close()
    produced = get_json(bench_server + "/_bench/produce", {"rate": 50, "duration": 0.2, "table": "w1", "key": "hot"})
    assert produced["produced"] >= 1 and "sync_ms" in produced


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_adapter_speaks_v1(bench_server):
    script = """
      const { connect, produce } = await import(process.argv[1]);
      const url = process.argv[2];
      const reader = await connect(url, { since: 0 });
      let items = 0, hot = null;
      await reader.onChange((rec) => { if (rec.table === 'items') items++; if (rec.table === 'w1') hot = rec.data.i; });
      const writer = await connect(url, { since: null });
      const ack = await writer.write('w2', 'k1', { v: 1 });
      const ack2 = await writer.write('w2', 'k1', { v: 2 });
      const p = await produce(url, { rate: 50, duration: 0.2, table: 'w1', key: 'hot' });
      const end = Date.now() + 10000;
      while ((items < 50 || hot !== p.produced - 1) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      console.log(JSON.stringify({ items, hot, last: p.produced - 1, acks: [ack.ok, ack2.ok] }));
      reader.close(); writer.close();
      setTimeout(() => process.exit(0), 50);
    """
    for adapter in ("dsnsync.mjs", "dsnsync_native.mjs", "dsnsync_lean.mjs"):  # JS crypto, node:crypto, raw HTTP
        path = os.path.join(HERE, "bench", "adapters", adapter)
        out = subprocess.run(["node", "--input-type=module", "-e", script, path, bench_server],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["items"] == 50 and result["hot"] == result["last"] and result["acks"] == [True, True], result


def _has_uvicorn():
    return subprocess.run([sys.executable, "-c", "import uvicorn"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_uvicorn(), reason="uvicorn is not installed (pip install uvicorn): bench/asgi_server.py needs it")
def test_asgi_bench_server_mounts_dsn_sync_under_a_prefix(make_client):
    with bench_process("asgi_server.py", 20) as base:
        health = get_json(base + "/_bench/health")
        assert health["ok"] and health["records"] == 20 and health["url"].startswith(base + "/dsn/sync/")
        grant = get_json(base + "/_bench/token")
        client = make_client(grant["url"], grant["token"], wait=1)
        client.wait_ready(timeout=20)
        assert len(client.get_all("items")) == 20
        client.close()
        if shutil.which("node"):
            _node_adapters_sync_through(base)


def _node_adapters_sync_through(base):
    """The Node adapters through the mount (the sealed path starts at /sync/): a reset, a write,
    and the write back on their streamed pull, uvicorn's chunks."""
    script = """
      const { connect } = await import(process.argv[1]);
      const c = await connect(process.argv[2], { since: 0 });
      let n = 0, v = null;
      await c.onChange((r) => { if (r.table === 'items') n++; if (r.table === 'w2' && r.key === process.argv[3]) v = r.data.v; });
      let end = Date.now() + 10000;
      while (n < 20 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      const ack = await c.write('w2', process.argv[3], { v: 1 });
      end = Date.now() + 10000;
      while (v !== 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      console.log(JSON.stringify({ n, ok: ack.ok, v })); c.close(); setTimeout(() => process.exit(0), 50);
    """
    for adapter in ("dsnsync_native.mjs", "dsnsync_lean.mjs"):  # node:http, and the raw HTTP/1.1 client
        out = subprocess.run(["node", "--input-type=module", "-e", script,
                              os.path.join(HERE, "bench", "adapters", adapter), base, adapter],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"n": 20, "ok": True, "v": 1}, adapter


@pytest.mark.skipif(not _has_uvicorn(), reason="uvicorn is not installed (pip install uvicorn): bench/asgi_server.py needs it")
def test_asgi_bench_server_with_joined_heads_still_speaks_http(make_client, http="h11"):
    """--join-head (pinned_w2.py --joined-head): uvicorn holds an answer's head for its body's write.
    Every kind of answer must still arrive whole: a frame, a streamed pull, a HEAD, a 304, a 404.
    Run on h11, which the test extra installs; the harness's httptools takes the same patch, and
    pinned_w2.py's one write and two segments per ack show it working there."""
    with bench_process("asgi_server.py", 20, "--join-head", "--http", http) as base:
        health = get_json(base + "/_bench/health")
        assert health["join_head"] is True and health["http"].lower().startswith(http[:2]), health
        grant = get_json(base + "/_bench/token")
        client = make_client(grant["url"], grant["token"], wait=1)
        client.wait_ready(timeout=20)
        assert len(client.get_all("items")) == 20
        assert client.create("w2", "joined", {"v": 1})["v"] == 1
        client.close()
        if shutil.which("node"):  # streamed pulls: their head is held for the first chunk
            _node_adapters_sync_through(base)
        host, port = base[len("http://"):].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:  # one keep-alive connection
            s.sendall(b"HEAD /dsn/dsn_client.js HTTP/1.1\r\nHost: x\r\n\r\n")
            head = _read_head(s)
            assert head.startswith(b"HTTP/1.1 200") and b"etag:" in head.lower(), head
            etag = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"etag:")][0]
            s.sendall(b"GET /dsn/dsn_client.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n")
            assert _read_head(s).startswith(b"HTTP/1.1 304"), "a 304 after the HEAD on the same connection"
            s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_head(s).startswith(b"HTTP/1.1 404")
            s.sendall(b"HEAD /dsn/dsn_client.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_head(s).startswith(b"HTTP/1.1 200"), "a HEAD whose connection then closes"
            assert s.recv(1) == b"", "the connection closes after that HEAD"


_JOINED_APP = """
import socket, sys, uvicorn
sys.path.insert(0, sys.argv[1])
from asgi_server import join_head
from uvicorn.protocols.http.h11_impl import H11Protocol

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    if scope["path"] == "/fail":
        raise RuntimeError("the app fails after starting its answer")
    if scope["path"] == "/return":
        return
    await send({"type": "http.response.body", "body": b"hello"})

join_head(H11Protocol)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, http="h11", loop="asyncio", lifespan="off", log_level="critical")).run(sockets=[sock])
"""


@pytest.mark.skipif(not _has_uvicorn(), reason="uvicorn is not installed (pip install uvicorn): bench/asgi_server.py needs it")
def test_joined_heads_go_out_when_the_app_fails_after_starting_its_answer():
    """uvicorn closes the connection of an app that fails, or returns, between its answer's start
    and its body: stock uvicorn has sent the head by then, and so must the patch."""
    proc = subprocess.Popen([sys.executable, "-c", _JOINED_APP, os.path.join(HERE, "bench")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        for path, whole in (("/ok", True), ("/fail", False), ("/return", False)):
            for _ in range(100):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                    break
                except OSError:
                    time.sleep(0.05)
            with s:
                s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not (whole and data.endswith(b"hello")):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200") and b"content-length: 5" in data.lower(), (path, data)
            assert data.endswith(b"\r\n\r\nhello") == whole, (path, data)
    finally:
        proc.terminate()
        proc.wait(10)


def _read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection after %r" % data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert not rest, "bytes after a head whose answer has no body: %r" % rest[:200]
    return head


@pytest.mark.skipif(not _has_uvicorn(), reason="uvicorn is not installed (pip install uvicorn): bench/asgi_ref.py needs it")
def test_asgi_ceiling_server_speaks_the_harness_reference_protocol():
    """bench/asgi_ref.py (the ref_asgi peer): a write is acked with its seq, a pull from an older seq
    answers at once, and a waiting pull is answered by the next write, not by its timeout."""
    with bench_process("asgi_ref.py", 5) as base:
        health = get_json(base + "/_bench/health")
        assert health["ok"] and health["records"] == 5 and health["seq"] == 5
        assert get_json(base + "/write", {"table": "w2", "key": "a", "data": {"v": 1}}) == {"ok": True, "seq": 6}
        got = get_json(base + "/pull", {"since": 5})
        assert got["seq"] == 6 and [(c["key"], c["data"]) for c in got["changes"]] == [("a", {"v": 1})]
        assert get_json(base + "/pull", {"since": None}) == {"seq": 6, "changes": []}
        pool = concurrent.futures.ThreadPoolExecutor(1)
        waiting = pool.submit(get_json, base + "/pull", {"since": 6, "timeout": 20})
        time.sleep(0.3)
        assert not waiting.done()
        t0 = time.monotonic()
        get_json(base + "/write", {"table": "w2", "key": "b", "data": {"v": 2}})
        got = waiting.result(timeout=10)
        assert time.monotonic() - t0 < 5 and got["seq"] == 7 and [c["key"] for c in got["changes"]] == ["b"]
        pool.shutdown()
