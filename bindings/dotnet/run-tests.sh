#!/usr/bin/env bash
# Builds the .NET binding (Kestrel.Native.dll), its example and its tests with Mono's mcs
# (warnings as errors, see build.sh), then runs the tests and a smoke test of the example.
#
#   bindings/dotnet/run-tests.sh [TEST-NAME-FILTER...]
#
# Installs what it needs from Debian's packages on first use (mono-mcs, mono-runtime and
# System.Net.Http for the HttpClient test). Expects libkestrel built (`make lib`): it loads
# target/release/libkestrel.so.0 through LD_LIBRARY_PATH. Build output goes to target/dotnet/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIBDIR=$ROOT/target/release

log() { echo "[dotnet] $*" >&2; }
die() { echo "[dotnet] ERROR: $*" >&2; exit 1; }

[[ -e $LIBDIR/libkestrel.so.0 ]] || die "$LIBDIR/libkestrel.so.0 not found: run 'make lib' first"
OUT=$("$HERE/build.sh")
log "built $OUT/Kestrel.Native.dll ($(mono --version | head -n 1 | cut -d'(' -f1))"

export LD_LIBRARY_PATH=$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- the test program ----
cd "$OUT"
status=0
timeout 240 mono --debug KestrelTests.exe "$@" || status=$?
if (( status != 0 )); then
    die "tests failed (exit $status)"
fi

# ---- the example, as a user would run it (skipped when a filter was given) ----
if (( $# == 0 )); then
    HELLO_LOG=$(mktemp)
    hello_pid=
    trap 'kill "$hello_pid" 2>/dev/null || true; rm -f "$HELLO_LOG"' EXIT
    mono --debug Hello.exe --urls http://127.0.0.1:0 --workers 2 >"$HELLO_LOG" 2>&1 &
    hello_pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's#^listening on http://127.0.0.1:\([0-9]*\)$#\1#p' "$HELLO_LOG")
        [[ -n $port ]] && break
        kill -0 "$hello_pid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $port ]] || { cat "$HELLO_LOG" >&2; die "Hello.exe did not start"; }
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
    reply=$(timeout 10 cat <&3 | tr -d '\r')
    exec 3<&-
    kill "$hello_pid"
    wait "$hello_pid" 2>/dev/null || true
    grep -q '^HTTP/1.1 200 OK$' <<<"$reply" && grep -q '^content-type: text/plain$' <<<"$reply" \
        && [[ $(tail -n 1 <<<"$reply") == "Hello, World!" ]] \
        || { echo "$reply" >&2; die "Hello.exe answered wrongly"; }
    log "example Hello.exe: ok"
fi
