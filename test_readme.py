"""Every fenced code block in README.md runs here, exactly as printed.

Each block has an HTML comment just before it that says how it runs (a block without
one fails the suite)::

    <!-- run: KIND [NAME] [; expect: TEXT] -->
    <!-- run: none, because REASON -->

The kinds, and what the reader would supply that the test supplies instead:

- ``shell``: bash in a fresh copy of the repository and a fresh venv; exits 0.
- ``shell-server``: the same, but it serves: prints ``URL:``, answers GET
  /dsn_client.js, exits 0 on Ctrl-C.
- ``python``: a whole script in an empty folder, the repository importable; exits 0.
- ``python-backend``: a whole backend: prints its sync URL and token, serves a
  Python client, exits 0 on Ctrl-C.
- ``browser-page``: headless Chromium, against the nearest ``python-backend`` above
  it; ``SYNC_URL`` and ``SYNC_TOKEN`` are what that backend printed.
- ``python-fragment NAME``: after ``sync = DSNSync(port=0)`` and the reader's own
  names (``READER[NAME]``); then ``CHECKS[NAME]`` exercises it on a live server.
- ``python-client``: with ``url`` and ``token`` of test/fixture_server.py.
- ``node-client``: an ES module in Node with ``client = connectDSN(SYNC_URL,
  SYNC_TOKEN)`` on test/fixture_server.py; ``'dsn-sync-client'`` resolves to this
  repository, as after ``npm install <clone>``; ``showToast``, ``render`` and
  ``chart`` print what they get.
- ``typescript``: a TypeScript module checked by ``tsc --strict`` against
  dsn_client.d.ts (through the package name, as an app's tsc finds it), then the
  emitted JavaScript run in Node on test/fixture_server.py with ``SYNC_URL``,
  ``SYNC_TOKEN`` and ``render`` supplied.
- ``excerpt FILE``: lines shown verbatim from FILE (an example app too big to print
  whole); the block must appear in FILE exactly as printed, and the test that runs
  FILE under its real framework (``EXCERPT_RUNS[FILE]``) must pass with nothing skipped.

``expect: TEXT`` means the block's output must contain TEXT.  Blocks that serve listen
on the port they print (3000); the test waits for it to be free.
"""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT))

import dsn_sync  # noqa: E402
from conftest import at_a_terminal, wait_until  # noqa: E402

MARKER = re.compile(r"^<!--\s*run:\s*(.*?)\s*-->$")
KINDS = {"shell", "shell-server", "python", "python-backend", "browser-page", "python-fragment",
         "python-client", "node-client", "typescript", "excerpt"}
MAX_NOT_RUN = 4  # blocks marked "none": only what cannot run (each says why)
PRINTED_PORT = 3000


class Block:
    def __init__(self, line, lang, code, marker):
        self.line, self.lang, self.code, self.marker = line, lang, code, marker
        self.kind = self.name = self.expect = self.reason = None
        if marker is None:
            return
        head, _, rest = marker.partition(";")
        if head.startswith("none"):
            self.kind = "none"
            self.reason = re.sub(r"^because", "", head[len("none"):].lstrip(" ,")).strip()
            return
        words = head.split()
        self.kind = words[0] if words else ""
        self.name = words[1] if len(words) > 1 else None
        expect = re.match(r"\s*expect:\s*(.+)$", rest) if rest else None
        self.expect = expect.group(1).strip() if expect else None

    def __repr__(self):
        return "README.md:%d (%s)" % (self.line, self.kind or "no marker")


def readme_blocks():
    """Every fenced block of README.md, with the marker on the nearest non-blank line above it."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, "README.md:%d: a code block that never closes" % (start + 1)
        above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(above)
        blocks.append(Block(start + 1, fence.group(1), "\n".join(lines[start + 1:end]) + "\n",
                            marker.group(1) if marker else None))
        i = end + 1
    return blocks


BLOCKS = readme_blocks()
RUN = [b for b in BLOCKS if b.kind != "none"]


# ---------------------------------------------------------------------------------------------
# Processes, ports, environments

class Proc:
    """A child process whose merged output is read line by line in the background."""

    def __init__(self, args, **kwargs):
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True, preexec_fn=at_a_terminal, **kwargs)
        self.lines, self._q = [], queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self._q.put(line)
        self._q.put(None)

    def output(self):
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def wait_for(self, pattern, timeout):
        """The first match of ``pattern`` in the output so far, waiting up to ``timeout`` s; None if never."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output())
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self._q.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if line is None:
                self._q.put(None)
                return re.search(pattern, self.output())
            self.lines.append(line)

    def interrupt(self, timeout=20):
        """Ctrl-C at a terminal: SIGINT to the process group; the exit code, or None if it did not exit."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def ctrl_c_ends(self, block):
        """Ctrl-C ends ``block``'s process with exit code 0, having printed what the block expects."""
        code = self.interrupt()
        assert code == 0, "%r: Ctrl-C gave exit code %r:\n%s" % (block, code, self.output())
        check_expect(block, self.output())

    def kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(timeout=10)
        self.output()


def port_in_use(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for_printed_port(timeout=60):
    deadline = time.monotonic() + timeout
    while port_in_use(PRINTED_PORT):
        if time.monotonic() > deadline:
            pytest.fail("port %d is in use by another program, and the README's blocks listen on it as printed: "
                        "stop that program and run again" % PRINTED_PORT)
        time.sleep(0.5)


def env_with_repo(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def check_expect(block, output):
    if block.expect is not None:
        assert block.expect in output, "%r: expected %r in its output:\n%s" % (block, block.expect, output[-4000:])


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv, as a new user would make one; shell blocks run with its bin/ first on PATH."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    return path


def fresh_copy(dest):
    """The repository as a fresh clone has it: git's files (committed or not), nothing it ignores."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=str(ROOT),
                            capture_output=True, timeout=60)
    if listed.returncode != 0:  # not a git checkout (an sdist): everything but what a clone would not have
        ignore = shutil.ignore_patterns(".git", "node_modules", "__pycache__", ".pytest_cache", "dist", "build",
                                        "*.egg-info", ".venv", "*.db", "*.db-wal", "*.db-shm")
        shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def shell_env(venv):
    env = dict(os.environ, PYTHONUNBUFFERED="1", VIRTUAL_ENV=str(venv))
    env["PATH"] = str(venv / "bin") + os.pathsep + env["PATH"]
    env.pop("PYTHONPATH", None)
    return env


def browser_or_skip():
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    missing = []
    if not os.path.exists(chromium):
        missing.append("Chromium at %s (apt-get install chromium)" % chromium)
    if not (ROOT / "node_modules" / "playwright-core").exists():
        missing.append("playwright-core (npm ci)")
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        message = "no browser to run the README's page in: missing " + ", ".join(missing)
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip("LOUD SKIP: " + message)


class FixtureServer:
    """test/fixture_server.py: a live server with the users, messages and metrics tables."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, str(ROOT / "test" / "fixture_server.py")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env_with_repo())
        first = json.loads(self.p.stdout.readline())
        self.url, self.token = first["url"], first["token"]

    def command(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        answer = json.loads(self.p.stdout.readline())
        assert answer.get("ok"), answer
        return answer

    def close(self):
        try:
            self.p.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
            self.p.stdin.close()
            self.p.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


@pytest.fixture(scope="module")
def fixture_server():
    server = FixtureServer()
    # What the recipes' backends put there ("backend: sync.sync(...)" beside each recipe).
    server.command(cmd="sync", table="users", key="user_001", data={"name": "Ada", "email": "ada@example.com"})
    server.command(cmd="sync", table="notifications", key="n_1", data={"user": "user_001", "text": "Your order shipped"})
    server.command(cmd="sync", table="metrics", key="cpu", data={"value": 0.42, "at": 1000})
    yield server
    server.close()


# ---------------------------------------------------------------------------------------------
# How each kind runs

def run_shell(block, tmp_path, venv):
    clone = fresh_copy(tmp_path / "clone")
    out = subprocess.run(["bash", "-e", "-c", block.code], cwd=str(clone), env=shell_env(venv),
                         capture_output=True, text=True, timeout=600)
    output = out.stdout + out.stderr
    assert out.returncode == 0, "%r exited %d:\n%s" % (block, out.returncode, output[-4000:])
    check_expect(block, output)


def run_shell_server(block, tmp_path, venv):
    clone = fresh_copy(tmp_path / "clone")
    wait_for_printed_port()
    proc = Proc(["bash", "-c", block.code], cwd=str(clone), env=shell_env(venv))
    try:
        found = proc.wait_for(r"URL:\s+(https?://\S+)", 60)
        assert found, "%r never printed its URL:\n%s" % (block, proc.output())
        origin = found.group(1).split("/sync/")[0]
        # Ctrl-C once the banner is whole (it ends with the page snippet), as a person would.
        assert proc.wait_for(r"</script>", 20), "%r: the banner never ended:\n%s" % (block, proc.output())
        with urllib.request.urlopen(origin + "/dsn_client.js", timeout=10) as answer:
            assert answer.status == 200 and b"connectDSN" in answer.read()
        proc.ctrl_c_ends(block)
    finally:
        proc.kill()


def run_python(block, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env_with_repo(),
                         capture_output=True, text=True, timeout=120)
    output = out.stdout + out.stderr
    assert out.returncode == 0, "%r exited %d:\n%s" % (block, out.returncode, output[-4000:])
    check_expect(block, output)


BACKEND_PRINTS = r"(https?://127\.0\.0\.1:\d+/sync/[A-Za-z0-9_-]+)\s+(dsn1\.\S+)"


def start_backend(block, tmp_path):
    """Runs a python-backend block; returns (proc, url, token) once it has printed them."""
    wait_for_printed_port()
    script = tmp_path / "backend.py"
    script.write_text(block.code, encoding="utf-8")
    proc = Proc([sys.executable, str(script)], cwd=str(tmp_path), env=env_with_repo())
    found = proc.wait_for(BACKEND_PRINTS, 30)
    if not found:
        proc.kill()
        pytest.fail("%r never printed its URL and token:\n%s" % (block, proc.output()))
    return proc, found.group(1), found.group(2)


def run_python_backend(block, tmp_path):
    proc, url, token = start_backend(block, tmp_path)
    try:
        client = dsn_sync.connect(url, token)
        try:
            assert client.wait_ready(10), "%r: a Python client never got its first sync:\n%s" % (block, proc.output())
            assert client.get_all("users"), "%r serves no users" % (block,)
        finally:
            client.close()
        assert proc.p.poll() is None, "%r ended by itself instead of serving:\n%s" % (block, proc.output())
        proc.ctrl_c_ends(block)
    finally:
        proc.kill()


PAGE_DRIVER = r"""
import { createInterface } from 'node:readline';
import { launchChromium, serveStatic } from './test/browser/harness.mjs';
const expect = process.env.PAGE_EXPECT;
const site = await serveStatic(process.env.PAGE_DIR);
const browser = await launchChromium();
const page = await browser.newPage();
const errors = [];
let seen = false;
page.on('console', (m) => {
  const text = m.text();
  console.log(`console.${m.type()}: ${text}`);
  if (m.type() === 'error') errors.push(text);
  if (!seen && text.includes(expect)) { seen = true; console.log('PAGE-EXPECT-SEEN'); }
});
page.on('pageerror', (e) => { console.log(`pageerror: ${e.message}`); errors.push(e.message); });
await page.goto(site.url('index.html'));
for await (const line of createInterface({ input: process.stdin })) if (line === 'done') break;
await browser.close();
await site.close();
console.log(`PAGE-RESULT ${JSON.stringify({ seen, errors })}`);
process.exit(seen && errors.length === 0 ? 0 : 1);
"""


def run_browser_page(block, tmp_path):
    browser_or_skip()
    backend = next((b for b in reversed(BLOCKS[:BLOCKS.index(block)]) if b.kind == "python-backend"), None)
    assert backend is not None, "%r: a browser-page block needs a python-backend block above it" % (block,)
    server, url, token = start_backend(backend, tmp_path)
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    # The two names the README asks the reader to fill in with what the backend printed.
    prelude = '<!doctype html>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n<script>const SYNC_URL = %s, SYNC_TOKEN = %s;</script>\n' % (
        json.dumps(url), json.dumps(token))
    (page_dir / "index.html").write_text(prelude + block.code, encoding="utf-8")
    driver = subprocess.Popen(["node", "--input-type=module", "-e", PAGE_DRIVER], cwd=str(ROOT), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PAGE_DIR=str(page_dir), PAGE_EXPECT=block.expect or ""))
    lines = []
    pump = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    pump.start()
    client = None
    try:
        wait_until(lambda: any("PAGE-EXPECT-SEEN" in line for line in lines) or driver.poll() is not None, 30,
                   what=lambda: "%r: the page to log %r or its driver to exit:\n%s" % (block, block.expect, "".join(lines)))
        assert any("PAGE-EXPECT-SEEN" in line for line in lines), "%r: the page never logged %r:\n%s\n%s" % (
            block, block.expect, "".join(lines), server.output())
        if "update('users', 'user_123'" in block.code:
            client = dsn_sync.connect(url, token)
            assert client.wait_ready(10)
            wait_until(lambda: (client.get("users", "user_123") or {}).get("status") == "away", 10,
                       what="%r: the page's update to reach the backend" % (block,))
        driver.stdin.write("done\n")
        driver.stdin.flush()
        assert driver.wait(timeout=30) == 0, "%r: errors in the page:\n%s" % (block, "".join(lines))
    finally:
        if client is not None:
            client.close()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        server.kill()


FRAGMENT_PRELUDE = """\
import sys as _sys, time as _time
import dsn_sync as _dsn
from dsn_sync import DSNSync as _DSNSync

def _wait_until(predicate, timeout):
    deadline = _time.monotonic() + timeout
    while not predicate():
        if _time.monotonic() > deadline:
            return False
        _time.sleep(0.05)
    return True

sync = _DSNSync(port=0)
"""

# What the reader supplies around a fragment: their own functions and objects.
READER = {
    "every": "def read_stock_levels():\n    return [('sku_1', 7), ('sku_2', 0)]\n",
    "orders": "def stock(sku):\n    return 3\n",
    "issue_token": "",
    "can_read": "",
    "subscription": "",
    "flask": "import types as _types\ncurrent_user = _types.SimpleNamespace(id='user_123')\n",
}

# After the fragment: a live server shows that it does what the README says.
CHECKS = {
    "every": """
sync.start()
assert _wait_until(lambda: sync.get('stock', 'sku_2') == {'qty': 0}, 20), sync.get_all('stock')
assert sync.get('stock', 'sku_1') == {'qty': 7}
sync.stop()
print('every: stock synced')
""",
    "orders": """
sync.start()
_c = _dsn.connect(sync.get_url(), sync.get_token())
assert _c.wait_ready(10)
try:
    _c.create('orders', 'o1', {'sku': 'tea', 'qty': 5})
    raise AssertionError('an order of 5 with 3 in stock was accepted')
except _dsn.DSNError as e:
    assert e.code == 'rejected' and 'only 3 left' in str(e), (e.code, str(e))
_c.create('orders', 'o2', {'sku': 'tea', 'qty': 2})
assert sync.get('orders', 'o2')['status'] == 'placed', sync.get('orders', 'o2')
_c.close()
sync.stop()
print('orders: refused and placed')
""",
    "issue_token": """
sync.start()
sync.sync('messages', 'm1', {'text': 'hi'})
_c = _dsn.connect(sync.get_url(), token)
assert _c.wait_ready(10)
assert _wait_until(lambda: _c.get('messages', 'm1') == {'text': 'hi'}, 10)
try:
    _c.create('notifications', 'n1', {'text': 'x'})
    raise AssertionError('a token without write rights on notifications wrote there')
except _dsn.DSNError as e:
    assert e.code == 'forbidden', e.code
_c.close()
sync.stop()
print('issue_token: reads messages, may not write notifications')
""",
    "can_read": """
sync.sync('messages', 'm1', {'from': 'ada', 'to': 'bob', 'text': 'hi bob'})
sync.sync('messages', 'm2', {'from': 'carol', 'to': 'dave', 'text': 'hi dave'})
sync.start()
_c = _dsn.connect(sync.get_url(), sync.issue_token(sub='bob'))
assert _c.wait_ready(10)
assert sorted(_c.get_all('messages')) == ['m1'], _c.get_all('messages')
_c.close()
sync.stop()
print('can_read: bob sees only his message')
""",
    "subscription": """
sync.sync('rooms', 'lobby', {'title': 'Lobby'})
sync.sync('messages', 'm1', {'room': 'lobby', 'author': 'ada', 'text': 'hi'})
sync.sync('messages', 'm2', {'room': 'dev', 'author': 'bob', 'text': 'hello'})
sync.sync('messages', 'm3', {'room': 'staff-only', 'author': 'eve', 'text': 'psst'})
sync.start()
_c = _dsn.connect(sync.get_url(), sync.issue_token(sub='bob'))
assert _c.wait_ready(10)
_lobby = _c.subscribe('room', {'room': 'lobby'})
assert _lobby.wait_ready(10)
assert _c.get_all('messages') == {'m1': {'room': 'lobby', 'author': 'ada', 'text': 'hi'}}, _c.get_all('messages')
assert _c.get_all('rooms') == {'lobby': {'title': 'Lobby'}}, _c.get_all('rooms')
for _params, _code in (({'room': 'staff-only'}, 'forbidden'), ({'room': 7}, 'invalid')):
    try:
        _c.subscribe('room', _params).wait_ready(10)
        raise AssertionError('subscribed to %r' % (_params,))
    except _dsn.DSNError as e:
        assert e.code == _code, (e.code, str(e))
sync.sync('messages', 'm2', {'room': 'lobby'})
assert _wait_until(lambda: sorted(_c.get_all('messages')) == ['m1', 'm2'], 10), _c.get_all('messages')
_lobby.close()
assert _c.get_all('messages') == {}, _c.get_all('messages')
_c.close()
sync.stop()
print('subscription: bob mirrors the lobby only; staff rooms refused')
""",
    "flask": """
sync.start()
_web = app.test_client()
_page = _web.get('/app')
assert _page.status_code == 200 and sync.get_url() in _page.get_data(as_text=True), _page.get_data(as_text=True)
_token = _web.get('/sync-token').get_data(as_text=True)
_c = _dsn.connect(sync.get_url(), _token)
assert _c.wait_ready(10)
_c.close()
sync.stop()
print('flask: the page and the token endpoint work')
""",
}

# The reader's template for the Flask recipe (render_template('app.html', ...)).
FLASK_TEMPLATE = ('<script type="module">\n  const SYNC_URL = {{ sync_url|tojson }};\n'
                  '  const SYNC_TOKEN = {{ sync_token|tojson }};\n  /* {{ sync_url }} */\n</script>\n')


def run_python_fragment(block, tmp_path):
    assert block.name in CHECKS, "%r: python-fragment needs a check name, one of %s" % (block, sorted(CHECKS))
    if block.name == "flask":
        (tmp_path / "templates").mkdir()
        (tmp_path / "templates" / "app.html").write_text(FLASK_TEMPLATE, encoding="utf-8")
    script = tmp_path / "fragment.py"
    script.write_text(FRAGMENT_PRELUDE + READER[block.name] + "\n" + block.code + CHECKS[block.name], encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env_with_repo(),
                         capture_output=True, text=True, timeout=120)
    output = out.stdout + out.stderr
    if out.returncode != 0 and "No module named 'flask'" in output:
        pytest.fail("the Flask recipe needs flask: ./run_tests.sh installs it (the test extra in pyproject.toml)")
    assert out.returncode == 0, "%r exited %d:\n%s" % (block, out.returncode, output[-4000:])
    check_expect(block, output)


def run_python_client(block, tmp_path, fixture_server):
    script = tmp_path / "client.py"
    script.write_text("import os as _os\nurl = _os.environ['SYNC_URL']\ntoken = _os.environ['SYNC_TOKEN']\n" + block.code,
                      encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                         env=env_with_repo(SYNC_URL=fixture_server.url, SYNC_TOKEN=fixture_server.token))
    output = out.stdout + out.stderr
    assert out.returncode == 0, "%r exited %d:\n%s" % (block, out.returncode, output[-4000:])
    check_expect(block, output)


NODE_PRELUDE = """\
import { connectDSN as __connectDSN } from 'dsn-sync-client';
const SYNC_URL = process.env.SYNC_URL;
const SYNC_TOKEN = process.env.SYNC_TOKEN;
const client = __connectDSN(SYNC_URL, SYNC_TOKEN);
const showToast = (text) => console.log('showToast:', text);
const render = (items) => console.log('render:', JSON.stringify(items));
const chart = { update: (points) => console.log('chart.update:', JSON.stringify(points)) };
"""


def run_node_client(block, tmp_path, fixture_server):
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the README's JavaScript recipes need it (./run_tests.sh says how)")
    assert block.expect, "%r: a node-client block needs 'expect: TEXT' to know it worked" % (block,)
    (tmp_path / "node_modules").mkdir()
    os.symlink(str(ROOT), str(tmp_path / "node_modules" / "dsn-sync-client"))  # what `npm install <clone>` makes
    (tmp_path / "recipe.mjs").write_text(NODE_PRELUDE + block.code, encoding="utf-8")
    proc = Proc(["node", "recipe.mjs"], cwd=str(tmp_path),
                env=dict(os.environ, SYNC_URL=fixture_server.url, SYNC_TOKEN=fixture_server.token))
    try:
        found = proc.wait_for(re.escape(block.expect), 20)
        output = proc.output()
        assert found, "%r: never printed %r (exit code %r):\n%s" % (block, block.expect, proc.p.poll(), output[-4000:])
    finally:
        proc.kill()


TS_PRELUDE = """\
declare const process: { env: Record<string, string | undefined> };
const SYNC_URL = process.env.SYNC_URL as string;
const SYNC_TOKEN = process.env.SYNC_TOKEN as string;
const render = (items: unknown[]) => console.log('render:', JSON.stringify(items));
"""

TS_CONFIG = {"compilerOptions": {"strict": True, "target": "es2022", "module": "nodenext",
                                 "moduleResolution": "nodenext", "lib": ["es2022", "dom"], "types": [],
                                 "outDir": "out"}, "files": ["app.ts"]}


def run_typescript(block, tmp_path, fixture_server):
    tsc = ROOT / "node_modules" / "typescript" / "bin" / "tsc"
    if shutil.which("node") is None or not tsc.exists():
        pytest.fail("the README's TypeScript block needs node and typescript (npm ci; ./run_tests.sh does it)")
    assert block.expect, "%r: a typescript block needs 'expect: TEXT' to know it ran" % (block,)
    (tmp_path / "node_modules").mkdir()
    os.symlink(str(ROOT), str(tmp_path / "node_modules" / "dsn-sync-client"))  # what `npm install <clone>` makes
    (tmp_path / "package.json").write_text('{"type": "module"}\n', encoding="utf-8")
    (tmp_path / "tsconfig.json").write_text(json.dumps(TS_CONFIG), encoding="utf-8")
    (tmp_path / "app.ts").write_text(TS_PRELUDE + block.code, encoding="utf-8")
    out = subprocess.run(["node", str(tsc), "-p", "."], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, "%r does not compile with tsc --strict:\n%s" % (block, out.stdout + out.stderr)
    proc = Proc(["node", "out/app.js"], cwd=str(tmp_path),
                env=dict(os.environ, SYNC_URL=fixture_server.url, SYNC_TOKEN=fixture_server.token))
    try:
        found = proc.wait_for(re.escape(block.expect), 20)
        assert found, "%r: never printed %r (exit code %r):\n%s" % (block, block.expect, proc.p.poll(),
                                                                      proc.output()[-4000:])
    finally:
        proc.kill()


# The test that runs each example file the README shows lines of, under its real framework.
_PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_recipes_py.py", "-k"]
EXCERPT_RUNS = {
    "examples/fastapi_app.py": _PYTEST + ["fastapi"],
    "examples/django_app.py": _PYTEST + ["django"],
    "examples/flask_app.py": _PYTEST + ["flask or gunicorn_sync_worker"],
    "examples/react_app.jsx": ["node", "--test", "--test-name-pattern", "React recipe", "test/recipes_browser.test.mjs"],
    "examples/vue_app.html": ["node", "--test", "--test-name-pattern", "Vue recipe", "test/recipes_browser.test.mjs"],
    "examples/chat_rooms/index.html": ["node", "--test", "--test-name-pattern", "switching rooms subscribes and closes",
                                       "test/chat_rooms_browser.test.mjs"],
}


def run_excerpt(block):
    assert block.name in EXCERPT_RUNS, "%r: excerpt of %r, which no test runs (EXCERPT_RUNS: %s)" % (
        block, block.name, sorted(EXCERPT_RUNS))
    source = (ROOT / block.name).read_text(encoding="utf-8")
    assert block.code in source, "%r is not in %s as printed: copy the lines again" % (block, block.name)
    if block.name.endswith((".jsx", ".html")):
        browser_or_skip()
    out = subprocess.run(EXCERPT_RUNS[block.name], cwd=str(ROOT), capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, REQUIRE_BROWSER=os.environ.get("REQUIRE_BROWSER", "")))
    output = out.stdout + out.stderr
    assert out.returncode == 0, "%r: %s failed:\n%s" % (block, " ".join(EXCERPT_RUNS[block.name][-4:]), output[-4000:])
    if block.name.endswith(".py"):
        assert re.search(r"\b[1-9]\d* passed", output) and "skipped" not in output, \
            "%r: the tests of %s did not all run:\n%s" % (block, block.name, output[-4000:])
    else:
        title = EXCERPT_RUNS[block.name][3]  # the --test-name-pattern: that test must pass, not skip
        ran = re.search(r"^ok \d+ - %s[^\n]*$" % re.escape(title), output, re.M)
        assert ran and "# SKIP" not in ran.group(0), "%r: the test of %s did not run:\n%s" % (
            block, block.name, output[-4000:])


# ---------------------------------------------------------------------------------------------
# The tests

def test_the_readme_has_code_blocks_to_run():
    assert len(RUN) >= 15, "found only %d runnable blocks in README.md: is the parser broken?" % len(RUN)


def test_every_code_block_says_how_it_runs():
    unmarked = ["README.md:%d (```%s)" % (b.line, b.lang) for b in BLOCKS if b.marker is None]
    assert not unmarked, ("code blocks with no <!-- run: ... --> marker just before them: %s "
                          "(see the docstring of test_readme.py)" % ", ".join(unmarked))
    unknown = ["%r: %r" % (b, b.kind) for b in BLOCKS if b.marker is not None and b.kind not in KINDS | {"none"}]
    assert not unknown, "unknown run kinds: %s; known: %s" % (unknown, sorted(KINDS))


def test_blocks_that_do_not_run_say_why_and_are_few():
    not_run = [b for b in BLOCKS if b.kind == "none"]
    assert all(b.reason for b in not_run), [b for b in not_run if not b.reason]
    assert len(not_run) <= MAX_NOT_RUN, "%d blocks are not run: %s" % (len(not_run), not_run)


@pytest.mark.parametrize("block", RUN, ids=["line%d-%s%s" % (b.line, b.kind, "-" + b.name if b.name else "") for b in RUN])
def test_readme_block_runs_as_printed(block, tmp_path, request):
    kind = block.kind
    if kind == "shell":
        run_shell(block, tmp_path, request.getfixturevalue("venv"))
    elif kind == "shell-server":
        run_shell_server(block, tmp_path, request.getfixturevalue("venv"))
    elif kind == "python":
        run_python(block, tmp_path)
    elif kind == "python-backend":
        run_python_backend(block, tmp_path)
    elif kind == "browser-page":
        run_browser_page(block, tmp_path)
    elif kind == "python-fragment":
        run_python_fragment(block, tmp_path)
    elif kind == "python-client":
        run_python_client(block, tmp_path, request.getfixturevalue("fixture_server"))
    elif kind == "node-client":
        run_node_client(block, tmp_path, request.getfixturevalue("fixture_server"))
    elif kind == "typescript":
        run_typescript(block, tmp_path, request.getfixturevalue("fixture_server"))
    elif kind == "excerpt":
        run_excerpt(block)
    else:
        pytest.fail("%r: unknown run kind %r (known: %s)" % (block, kind, sorted(KINDS)))
