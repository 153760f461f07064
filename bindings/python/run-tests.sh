#!/usr/bin/env bash
# Tests of the Python binding (bindings/python), as a user would install it.
#
# 1. A venv in bindings/python/build/venv with the test dependencies (pytest, httpx[http2],
#    flask, starlette, fastapi, uvloop, ruff), created once; later runs only check them (< 1 s).
# 2. `pip install ./bindings/python` into that venv: the build hook runs cargo build --release
#    at the repository root (a no-op after `make lib`) and bundles libkestrel.so in the wheel.
# 3. pytest on tests/, importing kestrel from the venv (the bundled library, not the source tree).
#
# Usage: bindings/python/run-tests.sh [pytest arguments]
# Environment: PYTHON (default python3), KESTREL_TEST_VENV (default build/venv).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${KESTREL_TEST_VENV:-$HERE/build/venv}
DEPS=(pytest 'httpx[http2]' flask starlette fastapi uvloop ruff)
DEPS_PROBE='import pytest, httpx, h2, flask, starlette, fastapi, uvloop, ruff'

log() { echo "[python-binding] $*" >&2; }
die() { echo "[python-binding] ERROR: $*" >&2; exit 1; }

export PATH=$HOME/.cargo/bin:$PATH
command -v curl > /dev/null || {
    log "apt: installing curl"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq curl; } > /dev/null || die "apt-get install curl failed"
}

if [[ ! -x $VENV/bin/python ]]; then
    if ! "$PYTHON" -c 'import venv, ensurepip' 2> /dev/null; then
        log "apt: installing python3-venv"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq > /dev/null && apt-get install -y -qq python3-venv > /dev/null \
            || die "could not install python3-venv"
    fi
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create a venv with $PYTHON"
fi
PY=$VENV/bin/python
if ! "$PY" -c "$DEPS_PROBE" 2> /dev/null; then
    log "pip: installing ${DEPS[*]}"
    "$PY" -m pip install --quiet --disable-pip-version-check "${DEPS[@]}" || die "pip install of the test dependencies failed"
fi

# The way users install it; the build hook builds and bundles the library.
log "pip install $HERE (builds libkestrel with cargo if needed)"
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$HERE" \
    || die "pip install ./bindings/python failed"

# Lint (warnings are errors): pyflakes, pycodestyle, bugbear, pyupgrade rules.
"$VENV/bin/ruff" check --quiet --no-cache --select E,F,W,B,UP --ignore E501,UP006,UP007,UP035,UP045 \
    --target-version py39 "$HERE/kestrel" "$HERE/tests" "$HERE/hatch_build.py" "$ROOT/bench/python_apps.py" \
    || die "ruff found problems"

# Run from the tests directory so the source tree's kestrel/ is not importable.
cd "$HERE/tests"
unset KESTREL_LIBRARY
export KESTREL_TEST_EXPECT_INSTALLED=1 KESTREL_TEST_ROOT=$ROOT
exec "$VENV/bin/pytest" -q -p no:cacheprovider -W error "$@" .
