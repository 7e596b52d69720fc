#!/usr/bin/env bash
# The one test command: set up what the tests need on this machine, then run every suite.
#
#   ./run_tests.sh
#
# 1. Python test packages: the `test` extra in pyproject.toml (the one place they are listed).
# 2. Node dev packages: `npm ci` (package.json's devDependencies: playwright-core, fake-indexeddb, typescript,
#    esbuild, react, react-dom, vue, dexie; package-lock.json).
# 3. Debian's chromium, openssl, postgresql (a throwaway cluster for the PostgreSQL store's tests)
#    and nginx (the README's balancer block, run in front of three nodes): installed with apt-get when missing and we are root;
#    otherwise we say what to install (the browser tests then skip, loudly).
# 4. `python3 -m pytest -q` and `node --test test/*.test.mjs`; fails if either fails.
#
# The 1,000,000-record test runs only with DSN_SLOW=1. REQUIRE_BROWSER=1 makes a missing
# browser a failure instead of a skip (CI sets it).
set -uo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

say() { printf '\n== %s\n' "$*"; }

say "Python test packages (pyproject.toml, [project.optional-dependencies] test)"
test_deps=()
while IFS= read -r dep; do test_deps+=("$dep"); done < <("$PYTHON" - <<'PY'
import re
text = open("pyproject.toml", encoding="utf-8").read()
try:
    import tomllib
    deps = tomllib.loads(text)["project"]["optional-dependencies"]["test"]
except ImportError:  # Python < 3.11: the list is one quoted name per line
    block = re.search(r"^test = \[(.*?)^\]", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', block)
print("\n".join(deps))
PY
)
[ ${#test_deps[@]} -gt 0 ] || { echo "could not read the test extra from pyproject.toml" >&2; exit 2; }
if ! "$PYTHON" -m pip install -q --disable-pip-version-check "${test_deps[@]}"; then
  echo "pip could not install: ${test_deps[*]}" >&2
  echo "If pip says the environment is externally managed, make a venv first:" >&2
  echo "  python3 -m venv .venv && . .venv/bin/activate && ./run_tests.sh" >&2
  exit 2
fi

missing=()
command -v chromium >/dev/null 2>&1 || [ -x "${CHROMIUM:-/nonexistent}" ] || missing+=(chromium)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { echo "apt-get could not install ${missing[*]}" >&2; exit 2; }
  else
    echo "" >&2
    echo "!! MISSING: ${missing[*]}" >&2
    echo "!! On Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
    echo "!! Without chromium the browser tests skip; without openssl the TLS test skips; without nginx the balancer test skips;" >&2
    echo "!! without node the JavaScript suites cannot run." >&2
    command -v node >/dev/null 2>&1 || exit 2
  fi
fi

say "npm ci (Node dev packages)"
npm ci --no-audit --no-fund --loglevel=error || { echo "npm ci failed" >&2; exit 2; }

say "python3 -m pytest -q"
"$PYTHON" -m pytest -q; py_status=$?
say "node --test test/*.test.mjs"
node --test test/*.test.mjs; js_status=$?

say "pytest: $([ $py_status = 0 ] && echo passed || echo "FAILED ($py_status)"), node --test: $([ $js_status = 0 ] && echo passed || echo "FAILED ($js_status)")"
[ $py_status = 0 ] && [ $js_status = 0 ]
