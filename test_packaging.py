"""Packaging and portability: the wheel carries the client, the module stays 3.8 and stdlib only.

These run the real tools (pip, venv, vermin, an older CPython) rather than
inspecting files, because what users get is what those tools make of the repo.
"""

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent / "shared"


def _wait_for_line(proc, needle, timeout=20):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return line, lines
    raise AssertionError("never printed %r; got:\n%s" % (needle, "".join(lines)))


def test_module_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "dsn_sync.py").read_text(encoding="utf-8"))
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    if not stdlib:
        pytest.skip("needs Python 3.10+ for sys.stdlib_module_names")
    optional = {"psycopg"}  # the dsn-sync[postgres] extra: imported only inside the function that needs it
    in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module.split(".")[0]]
        else:
            continue
        allowed = stdlib | optional if id(node) in in_functions else stdlib
        assert all(n in allowed for n in names), "line %d imports %s" % (node.lineno, names)


def test_vermin_says_python_3_8_is_enough():
    vermin = shutil.which("vermin")
    if vermin is None:
        if os.environ.get("CI"):
            pytest.fail("vermin is not installed in CI (.ci/run installs it)")
        pytest.skip("LOUD SKIP: vermin not installed (pip install vermin) - the 3.8 syntax check did not run")
    out = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "dsn_sync.py", "test_dsn_sync.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _python38():
    """A working CPython 3.8 (pyenv shims answer even when they cannot run it, so try each)."""
    for candidate in [*glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")), shutil.which("python3.8")]:
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_runs_on_python_3_8_for_real():
    py38 = _python38()
    if py38 is None:
        pytest.skip("LOUD SKIP: no python3.8 on this machine - the module was not run on 3.8 here (vermin still checks it)")
    script = r"""
import dsn_sync, tempfile, os
s = dsn_sync.DSNSync(port=0, db_connection_string='sqlite:///' + os.path.join(tempfile.mkdtemp(), 'x.db'))
s.define_table('users', {'key': 'user_id', 'fields': ['name']})
@s.on_create('users')
def ok(data, ctx): return True
s.start()
s.sync('users', 'u1', {'name': 'Ada'})
c = dsn_sync.connect(s.get_url(), s.get_token())
assert c.wait_ready(10)
c.create('users', 'u2', {'name': 'Grace'})
assert s.get_all('users') == {'u1': {'name': 'Ada'}, 'u2': {'name': 'Grace'}}, s.get_all('users')
c.close(); s.stop()
print('py38 ok')
"""
    out = subprocess.run([py38, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "py38 ok" in out.stdout, out.stdout + out.stderr


def test_the_core_suite_passes_on_python_3_8(tmp_path):
    """vermin reads the syntax and the standard-library names; this runs test_dsn_sync.py (the
    protocol, the engine, every store, PostgreSQL's through the optional extra, the Python
    client) on a real 3.8, in a venv of its own, so a call that behaves differently there fails here."""
    py38 = _python38()
    if py38 is None:
        if os.environ.get("CI"):
            pytest.fail("no python3.8 on the CI machine: the core suite did not run on 3.8")
        pytest.skip("LOUD SKIP: no python3.8 on this machine - the core suite was not run on 3.8 here")
    subprocess.run([py38, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    py = str(tmp_path / "venv" / "bin" / "python")
    install = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest",
                              "psycopg[binary]>=3.2"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    out = subprocess.run([py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "test_dsn_sync.py"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """Build the wheel with pip and install it into a fresh venv; yields that venv's python."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list((tmp / "dist").glob("dsn_sync-*.whl"))
    assert len(wheels) == 1, wheels
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    py = tmp / "venv" / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    return py, tmp


def test_wheel_serves_the_client_and_inspector_from_the_installed_copy(installed_wheel):
    py, tmp = installed_wheel
    script = r"""
import dsn_sync, http.client, json, os, sys
assert 'site-packages' in dsn_sync.__file__, dsn_sync.__file__
s = dsn_sync.DSNSync(port=0)
s.start()
out = {}
for path in ['/dsn_client.js', s.get_url().split(str(s.port), 1)[1] + '/inspect']:
    c = http.client.HTTPConnection('127.0.0.1', s.port, timeout=10)
    c.request('GET', path)
    r = c.getresponse()
    body = r.read()
    out[path] = [r.status, r.getheader('Content-Type'), len(body)]
s.stop()
print(json.dumps(out))
"""
    out = subprocess.run([str(py), "-c", script], cwd=str(tmp), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    answers = json.loads(out.stdout.strip().splitlines()[-1])
    js = answers.pop("/dsn_client.js")
    assert js[0] == 200 and "javascript" in js[1] and js[2] == (ROOT / "dsn_client.js").stat().st_size
    (page,) = answers.values()
    assert page[0] == 200 and "text/html" in page[1] and page[2] == (ROOT / "dsn_inspect.html").stat().st_size


def test_console_script_runs_the_quick_server(installed_wheel):
    py, tmp = installed_wheel
    script = py.parent / "dsn-sync"
    help_out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "--port" in help_out.stdout and "--db" in help_out.stdout
    proc = subprocess.Popen([str(script), "--port", "0"], cwd=str(tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        line, _ = _wait_for_line(proc, "URL:")
        url = line.split("URL:", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and "/sync/" in url
        # The banner ends with the page snippet; Ctrl-C before that raced the server's
        # own signal handlers (a traceback, exit -2) when stdout is unbuffered.
        _wait_for_line(proc, "</script>")
        proc.send_signal(2)  # Ctrl-C
        rest = proc.communicate(timeout=20)[0]
        assert proc.returncode == 0, rest
        assert "dsn-sync stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()


def test_protocol_spec_in_the_repo_matches_the_shared_one():
    ours = ROOT / "docs" / "PROTOCOL.md"
    assert ours.exists(), "docs/PROTOCOL.md is the copy users of the repo read"
    shared = SHARED / "PROTOCOL.md"
    if not shared.exists():
        pytest.skip("LOUD SKIP: ../shared/PROTOCOL.md not present; cannot compare the copy")
    assert ours.read_bytes() == shared.read_bytes(), "docs/PROTOCOL.md drifted from ../shared/PROTOCOL.md"


def test_the_npm_package_carries_the_python_module_s_version():
    # One release: `npm install <clone>` and `pip install .` must name the same version (a
    # bug report that quotes one should mean the same files), and the lock file's root with it.
    import dsn_sync
    package = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    assert package["version"] == dsn_sync.__version__, "package.json says %s, dsn_sync.py %s" % (
        package["version"], dsn_sync.__version__)
    assert lock["version"] == lock["packages"][""]["version"] == package["version"]
    assert "protocol %s" % dsn_sync.PROTOCOL_MINOR in package["description"], package["description"]
