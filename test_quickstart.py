"""The first ten minutes (issue 14), Python side: scripts typed as a user types them, run as processes.

Backends that keep running after ``start()`` and stop cleanly on Ctrl-C and
SIGTERM; ``dsn_sync.py`` vendored alone; the quick server's open writes; errors
that say what to do.  The module under test is whichever ``import dsn_sync``
finds (PYTHONPATH selects it); child processes get the same one.
"""

import datetime
import decimal
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

import dsn_sync
from conftest import at_a_terminal, free_port, wait_until
from dsn_sync import DSNSync, DSNError

MODULE = os.path.abspath(dsn_sync.__file__)
HERE = os.path.dirname(MODULE)  # the shipped files beside the module under test
SECRET_HEX = "11" * 32


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=HERE, PYTHONUNBUFFERED="1")
    env.pop("DSN_SYNC_SECRET", None)
    env.update(extra)
    return env


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def serving(port, proc, timeout=15.0):
    """True once ``port`` answers GET /dsn_client.js; False if ``proc`` ended first or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if get(port, "/dsn_client.js")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def stop_with(proc, signum, timeout=15.0):
    """Send ``signum``; (exit code, stdout, stderr) once the process ends."""
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("the backend did not exit within %s s of signal %d; stderr: %s" % (timeout, signum, err))
    return proc.returncode, out, err


# -----------------------------------------------------------------------------
# Backends that keep running
# -----------------------------------------------------------------------------

SHOP = """\
from dsn_sync import DSNSync

sync = DSNSync(port={port})
sync.define_table('products', {{'key': 'sku', 'fields': ['name', 'price', 'stock']}})
sync.define_table('orders', {{'key': 'order_id', 'fields': ['user_id', 'items', 'total', 'status']}})
sync.define_table('users', {{'key': 'user_id', 'fields': ['name', 'email', 'cart', 'status']}})

@sync.on_create('orders')
def order_created(data):
    print('new order', data['order_id'], flush=True)
    return True

@sync.on_update('users')
def user_updated(data, ctx):
    return True

sync.sync('products', 'sku_1', {{'name': 'Teapot', 'price': 25, 'stock': 3}})
{last}
"""


@pytest.mark.parametrize("last, signum", [
    ("sync.start()", signal.SIGINT),
    ("sync.start()", signal.SIGTERM),
    ("sync.serve_forever()", signal.SIGINT),
    ("sync.serve_forever()", signal.SIGTERM),
], ids=["start-SIGINT", "start-SIGTERM", "serve_forever-SIGINT", "serve_forever-SIGTERM"])
def test_the_seed_backend_keeps_serving_and_stops_cleanly(tmp_path, last, signum):
    port = free_port()
    script = tmp_path / "shop.py"
    script.write_text(SHOP.format(port=port, last=last))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=str(tmp_path), env=child_env(DSN_SYNC_SECRET=SECRET_HEX),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=at_a_terminal)
    try:
        assert serving(port, proc), "the script ended instead of serving: exit %r, stderr %s" % (
            proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        token = DSNSync(port=0, secret=SECRET_HEX).get_token()  # same secret: a token the child accepts
        client = dsn_sync.connect("http://127.0.0.1:%d/sync/%s" % (port, dsn_sync.Keyring(bytes.fromhex(SECRET_HEX)).instance),
                                  token)
        try:
            assert client.wait_ready(10)
            assert client.get("products", "sku_1") == {"name": "Teapot", "price": 25, "stock": 3}
            client.create("orders", "o1", {"user_id": "u1", "items": ["sku_1"], "total": 25, "status": "new"})
        finally:
            client.close()
        time.sleep(0.3)
        assert proc.poll() is None, "the backend ended while serving"
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    code, out, err = stop_with(proc, signum)
    assert code == 0, "exit code %r after signal %d; stderr: %s" % (code, signum, err)
    assert "Traceback" not in err, err
    assert "new order o1" in out


# -----------------------------------------------------------------------------
# Vendoring the single file
# -----------------------------------------------------------------------------


def start_quick_server(folder, *args):
    """``python3 -m dsn_sync --port 0 ARGS`` in ``folder``: (process, URL, token, banner)."""
    proc = subprocess.Popen([sys.executable, "-m", "dsn_sync", "--port", "0"] + list(args), cwd=str(folder),
                            env=child_env(PYTHONPATH=str(folder)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    banner = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        if line.startswith("</script>"):
            break
    text = "".join(banner)
    url = re.search(r"URL:\s+(\S+)", text)
    token = re.search(r"Token:\s+(\S+)", text)
    if not (url and token):
        proc.kill()
        _, err = proc.communicate()
        pytest.fail("no URL and token in the quick server's banner:\n%s\nstderr: %s" % (text, err))
    return proc, url.group(1), token.group(1), text


def end(proc):
    code, _, err = stop_with(proc, signal.SIGINT)
    assert code == 0 and "Traceback" not in err, (code, err)


@pytest.fixture
def vendored(tmp_path):
    """An empty folder holding only a copy of dsn_sync.py."""
    folder = tmp_path / "app"
    folder.mkdir()
    shutil.copy(MODULE, str(folder / "dsn_sync.py"))
    return folder


@pytest.mark.parametrize("last, warned", [("", True), ("sync.start(); sync.stop()", False),
                                          ("sync.wsgi_app()", False)], ids=["forgotten", "started", "mounted"])
def test_a_script_that_hands_out_its_url_but_never_serves_it_says_so_at_exit(tmp_path, last, warned):
    # A newcomer's quick-start backend without start() or serve_forever(): it printed a URL and
    # a token, and exited 0 with nothing listening and nothing said.
    script = tmp_path / "backend.py"
    script.write_text("from dsn_sync import DSNSync\nsync = DSNSync(port=%d)\nsync.define_table('users', {'key': 'id', "
                      "'fields': None})\nprint(sync.get_url(), sync.get_token())\n%s\n" % (free_port(), last))
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    said = "(get_url()) but never served it: nothing listened there.  Call sync.start() to serve in the background"
    assert (said in done.stderr) is warned, done.stderr
    assert done.stdout.split()[1] not in done.stderr  # the token is never logged


def test_a_vendored_dsn_sync_py_alone_serves_the_client_and_the_inspector(vendored):
    assert sorted(os.listdir(str(vendored))) == ["dsn_sync.py"]
    proc, url, token, banner = start_quick_server(vendored)
    try:
        port = int(re.match(r"http://127\.0\.0\.1:(\d+)/sync/", url).group(1))
        path = url.split(str(port), 1)[1]
        status, headers, body = get(port, "/dsn_client.js")
        assert status == 200, "GET /dsn_client.js from a vendored dsn_sync.py answered %d" % status
        with open(os.path.join(HERE, "dsn_client.js"), "rb") as f:
            assert body == f.read(), "the served client differs from dsn_client.js"
        assert headers["content-type"].startswith("text/javascript")
        status, headers, body = get(port, path + "/inspect")
        assert status == 200, "GET <sync URL>/inspect from a vendored dsn_sync.py answered %d" % status
        with open(os.path.join(HERE, "dsn_inspect.html"), "rb") as f:
            assert body == f.read(), "the served inspector differs from dsn_inspect.html"
    finally:
        end(proc)
    assert sorted(os.listdir(str(vendored))) in (["dsn_sync.py"], ["__pycache__", "dsn_sync.py"])


def test_write_client_writes_the_client_file(vendored, tmp_path):
    out = tmp_path / "static" / "js"
    done = subprocess.run([sys.executable, "-m", "dsn_sync", "--write-client", str(out)], cwd=str(vendored),
                          env=child_env(PYTHONPATH=str(vendored)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(HERE, "dsn_client.js"), "rb") as f:
        assert (out / "dsn_client.js").read_bytes() == f.read()
    assert str(out / "dsn_client.js") in done.stdout


# -----------------------------------------------------------------------------
# The quick server on its own
# -----------------------------------------------------------------------------


def test_the_quick_server_accepts_writes_to_any_table_on_loopback(vendored, make_client):
    proc, url, token, banner = start_quick_server(vendored)
    try:
        assert re.search(r"Writes:.*open", banner), banner
        assert "--no-open-writes" in banner
        client = make_client(url, token)
        other = make_client(url, token)
        assert client.wait_ready(10) and other.wait_ready(10)
        record = client.create("notes", "n1", {"text": "hello from a test", "at": 1})
        assert record == {"text": "hello from a test", "at": 1}
        assert client.update("notes", "n1", {"text": "edited"}) == {"text": "edited", "at": 1}
        wait_until(lambda: other.get("notes", "n1") == {"text": "edited", "at": 1}, timeout=10,
                   what="the other client to see the edit")
        client.delete("notes", "n1")
        wait_until(lambda: other.get("notes", "n1") is None, timeout=10, what="the other client to see the delete")
        port = int(url.split(":")[2].split("/")[0])
        status, headers, body = get(port, "/")
        assert status == 200 and headers["content-type"].startswith("text/html"), (status, headers)
        assert b"dsn-sync" in body and b"inspect" in body and len(body) < 4096
        status, headers, body = get(port, "/no/such/page")
        assert status in (404, 405) and headers["content-type"].startswith("text/plain") and body.strip(), \
            (status, headers, body)
    finally:
        end(proc)


def test_the_quick_server_with_no_open_writes_refuses_them(vendored):
    proc, url, token, banner = start_quick_server(vendored, "--no-open-writes")
    try:
        assert not re.search(r"Writes:\s+open", banner) and re.search(r"Writes:\s+closed", banner), banner
        client = dsn_sync.connect(url, token)
        try:
            assert client.wait_ready(10)
            with pytest.raises(DSNError) as refused:
                client.create("notes", "n1", {"text": "hello"})
            assert refused.value.code in ("unknown_table", "no_handler"), refused.value
            assert "define_table()" in str(refused.value), refused.value  # what makes a table
            assert "--open-writes" in str(refused.value), refused.value  # and why a quick server refuses
        finally:
            client.close()
    finally:
        end(proc)


def test_a_backend_with_handlers_is_not_told_to_open_writes(make_server, make_raw):
    sync = make_server()
    sync.define_table("notes", {"key": "id", "fields": None})
    sync.on_create("notes")(lambda data: True)
    raw = make_raw(sync)
    for table, op, code in (("other", "create", "unknown_table"), ("notes", "delete", "no_handler")):
        answer = raw.err(op, code, table=table, key="k", data={}, mid="m-" + table)
        assert "open-writes" not in answer["error"]["message"], answer


# -----------------------------------------------------------------------------
# Errors that say what to do
# -----------------------------------------------------------------------------


def test_a_handler_for_a_table_that_was_never_defined_is_named_at_start(caplog):
    sync = DSNSync(port=0)
    sync.define_table("users", {"key": "id", "fields": None})
    sync.on_create("users")(lambda data: True)
    sync.on_create("notes")(lambda data: True)  # define_table('notes') forgotten
    with caplog.at_level(logging.WARNING, logger="dsn_sync"):
        sync.start()
    try:
        warned = [r.getMessage() for r in caplog.records if "on_create" in r.getMessage()]
        assert len(warned) == 1 and "@on_create('notes')" in warned[0] and "define_table('notes'" in warned[0], warned
        client = dsn_sync.connect(sync.get_url(), sync.get_token())
        try:
            assert client.wait_ready(10)
            with pytest.raises(DSNError) as refused:
                client.create("notes", "n1", {"text": "hello"})
            assert refused.value.code == "unknown_table" and "define_table()" in str(refused.value), refused.value
        finally:
            client.close()
    finally:
        sync.stop()


def test_a_read_rule_for_a_misspelt_table_is_named_at_start(caplog):
    """@can_read('message') for table 'messages' hides nothing: every user sees every message.
    Nothing said so; start() now does, with the table it was likely meant for."""
    sync = DSNSync(port=0)
    sync.define_table("messages", {"key": "id", "fields": None})
    sync.can_read("message")(lambda record, ctx: record.get("to") == ctx.sub)
    sync.sync("messages", "m1", {"to": "bob", "text": "for bob"})
    with caplog.at_level(logging.WARNING, logger="dsn_sync"):
        sync.start()
    try:
        warned = [r.getMessage() for r in caplog.records if "can_read" in r.getMessage()]
        assert len(warned) == 1, warned
        assert "@can_read('message')" in warned[0] and "hides nothing" in warned[0], warned
        assert "is it 'messages'?" in warned[0], warned
    finally:
        sync.stop()


def test_a_missing_certificate_file_names_the_file_and_the_option(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("not used")
    missing = str(tmp_path / "no-such-cert.pem")
    with pytest.raises(ValueError) as error:
        DSNSync(port=0, certfile=missing, keyfile=str(key))
    assert missing in str(error.value) and "certfile" in str(error.value), error.value
    done = subprocess.run([sys.executable, "-m", "dsn_sync", "--port", "0", "--tls-cert", missing, "--tls-key", str(key)],
                          cwd=str(tmp_path), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert missing in done.stderr and "--tls-cert" in done.stderr, done.stderr


def test_the_quick_server_piped_into_a_reader_that_leaves_serves_on_and_stops_cleanly(tmp_path):
    """`python3 -m dsn_sync | head`: the reader left after the banner's first lines, and the
    server's last line, 'dsn-sync stopped', ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "dsn_sync", "--port", "0"], cwd=str(tmp_path), env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = None
    for _ in range(10):
        found = re.search(r"URL:\s+(\S+)", proc.stdout.readline())
        if found:
            url = found.group(1)
            break
    proc.stdout.close()  # as head does
    assert url, "no URL line"
    port = int(url.split("/")[2].rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200, "the server stopped serving when its reader left"
    conn.close()
    proc.send_signal(signal.SIGINT)
    try:
        err = proc.stderr.read()
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err)


def test_a_secret_file_in_a_missing_folder_names_the_folder(tmp_path):
    said = _cli_fails(tmp_path, "--port", "0", "--secret-file", str(tmp_path / "no-such-folder" / "dsn.secret"))
    assert "its folder does not exist" in said and "no-such-folder" in said, said


def test_get_url_without_base_on_a_mounted_server_says_where_to_look(caplog):
    """After start(listen=False) get_url() named 127.0.0.1:3000, where nothing listens."""
    sync = DSNSync()
    sync.start(listen=False)
    try:
        with caplog.at_level(logging.WARNING, logger="dsn_sync"):
            sync.get_url()
            sync.get_url()
            assert sync.get_url("https://example.com/dsn").startswith("https://example.com/dsn/sync/")
        warned = [r.getMessage() for r in caplog.records if "get_url()" in r.getMessage()]
        assert len(warned) == 1 and "get_url('https://example.com/dsn')" in warned[0], warned
    finally:
        sync.stop()


def _cli_fails(tmp_path, *args):
    done = subprocess.run([sys.executable, "-m", "dsn_sync"] + list(args), cwd=str(tmp_path), env=child_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("dsn-sync") == 1, done.stderr
    return done.stderr


def test_cannot_listen_says_what_to_do_by_its_cause(tmp_path):
    """Every bind failure said 'another server there?': for a misspelt host, or an address that
    is not this machine's, that sends the user looking for a server that does not exist."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        said = _cli_fails(tmp_path, "--port", str(taken.getsockname()[1]))
    assert "another server there?" in said and "--port 0" in said, said
    said = _cli_fails(tmp_path, "--port", "0", "--host", "192.0.2.77")  # TEST-NET-1: never this machine's
    assert "not an address of this machine" in said and "another server" not in said, said
    said = _cli_fails(tmp_path, "--port", "0", "--host", "no-such-host.invalid")
    assert "is the host name 'no-such-host.invalid' right?" in said and "another server" not in said, said


def test_a_key_that_is_not_the_certificates_says_what_to_check(tmp_path, certificate):
    cert, key = certificate
    other = tmp_path / "other.pem"
    subprocess.run([shutil.which("openssl"), "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-out", str(other)], check=True, capture_output=True, timeout=60)
    with pytest.raises(ValueError) as error:
        DSNSync(port=0, certfile=str(cert), keyfile=str(other))
    message = str(error.value)
    assert str(cert) in message and str(other) in message, message
    assert re.search(r"\bcheck\b", message, re.I) and "key" in message, message
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError) as error:
        DSNSync(port=0, certfile=str(bad_pem), keyfile=str(key))
    assert str(bad_pem) in str(error.value) and re.search(r"\bcheck\b", str(error.value), re.I), error.value


WHEN = datetime.datetime(2026, 12, 3, 10, 30, 0, tzinfo=datetime.timezone.utc)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.mark.parametrize("value", [WHEN, WHEN.date(), decimal.Decimal("9.99"), ID, {"b", "a"}],
                         ids=["datetime", "date", "Decimal", "UUID", "set"])
def test_sync_of_a_type_json_lacks_names_json_default(value):
    sync = DSNSync(port=0)
    with pytest.raises((ValueError, TypeError)) as error:
        sync.sync("t", "k", {"v": value})
    assert "json_default" in str(error.value), error.value
    assert sync.get("t", "k") is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["NaN", "Infinity", "-Infinity"])
def test_sync_of_nan_says_json_has_no_such_value_not_json_default(value):
    sync = DSNSync(port=0)
    with pytest.raises(ValueError) as error:
        sync.sync("t", "k", {"v": value})
    assert "NaN or Infinity" in str(error.value) and "json_default" not in str(error.value), error.value
    assert sync.get("t", "k") is None


def test_json_default_stores_them_as_documented():
    sync = DSNSync(port=0, json_default=dsn_sync.json_default)
    sync.sync("t", "k", {"when": WHEN, "day": WHEN.date(), "price": decimal.Decimal("9.99"), "uid": ID,
                         "tags": {"b", "a"}, "raw": b"\x00\xff"})
    assert sync.get("t", "k") == {"when": "2026-12-03T10:30:00+00:00", "day": "2026-12-03", "price": "9.99",
                                  "uid": "12345678-1234-5678-1234-567812345678", "tags": ["a", "b"], "raw": "AP8"}
    with pytest.raises((ValueError, TypeError)):
        sync.sync("t", "k2", {"v": object()})


@pytest.mark.parametrize("source", [
    "def handler(): return True",
    "def handler(data, ctx, extra): return True",
    "def handler(data, *, flag): return True",
])
def test_a_handler_with_the_wrong_arity_fails_at_decoration(source):
    sync = DSNSync(port=0)
    sync.define_table("t", {"key": "id", "fields": None})
    scope = {}
    exec(source, scope)
    with pytest.raises(TypeError) as error:
        sync.on_create("t")(scope["handler"])
    assert "(data)" in str(error.value) and "(data, ctx)" in str(error.value), error.value
    for good in (lambda data: True, lambda data, ctx: True, lambda data, ctx=None: True, lambda *args: True):
        sync.on_update("t")(good)


def test_a_handler_raising_an_unknown_code_logs_why(caplog):
    sync = DSNSync(port=0)
    sync.define_table("t", {"key": "id", "fields": None})

    @sync.on_create("t")
    def handler(data):
        raise DSNError("short and stout", "teapot")
    sync.start()
    try:
        client = dsn_sync.connect(sync.get_url(), sync.get_token())
        try:
            assert client.wait_ready(10)
            caplog.set_level(logging.INFO, logger="dsn_sync")
            with pytest.raises(DSNError) as refused:
                client.create("t", "k1", {"v": 1})
            assert refused.value.code == "handler_error"
        finally:
            client.close()
    finally:
        sync.stop()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("teapot" in m and "handler_error" in m for m in said), said
