#!/usr/bin/env bash
# HTTP/2 conformance: runs h2spec against examples-c/demo, over h2c with prior knowledge, or with
# --tls over TLS (`h2spec -t -k`: ALPN h2, certificate not verified).
#
# The demo serves an HTTP/2-only endpoint (--protocols http2) and h2spec requests /drain, which
# reads the whole request before answering. (On a cleartext mixed endpoint, h2spec 3.5/2's invalid
# preface is an HTTP/1.1 request like any other and is answered 400; and a handler that answers
# before the request ends races h2spec's later frames, which RFC 9113 allows.) With --tls,
# H2SPEC_PROTOCOLS=http1and2 runs against the mixed endpoint instead, where ALPN picks h2; the
# certificate is a test CA-signed ECDSA one made by tests/tls/make-certs.sh into the work dir
# (H2SPEC_DEV_CERT=1 serves the demo's in-memory development certificate instead).
#
#   bash tests/h2spec.sh [--tls] [extra h2spec args...]
#
# Starts the demo on a free port of 127.0.0.1, runs h2spec, prints every failed case and the
# totals, stops the demo with SIGINT (it must exit 0), and exits with h2spec's status (or non-zero
# if the demo misbehaved). The JUnit report is kept at $H2SPEC_REPORT_DIR/$NAME.xml (NAME is
# h2spec or h2spec-tls; default: a temp dir, path printed).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEMO="$ROOT/examples-c/demo"
H2SPEC_TIMEOUT="${H2SPEC_TIMEOUT:-5}"
PROTOCOLS="${H2SPEC_PROTOCOLS:-http2}"
TLS=0
if [[ "${1:-}" == --tls ]]; then
    TLS=1
    shift
fi
NAME=h2spec
SCHEME=http
TLS_FLAGS=()
if (( TLS )); then
    NAME=h2spec-tls
    SCHEME=https
    TLS_FLAGS=(-t -k)
else
    PROTOCOLS=http2
fi

die() { echo "$NAME: $*" >&2; exit 2; }

[[ -x "$DEMO" ]] || die "$DEMO is missing: run 'make demo' first"

H2SPEC="$(command -v h2spec || true)"
if [[ -z "$H2SPEC" ]]; then
    GOPATH_BIN="$(go env GOPATH 2>/dev/null)/bin"
    [[ -x "$GOPATH_BIN/h2spec" ]] && H2SPEC="$GOPATH_BIN/h2spec"
fi
[[ -n "$H2SPEC" ]] || die "h2spec not found (go install github.com/summerwind/h2spec/cmd/h2spec@master)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kestrel-$NAME.XXXXXX")"
REPORT_DIR="${H2SPEC_REPORT_DIR:-$WORK}"
mkdir -p "$REPORT_DIR"
DEMO_OUT="$WORK/demo.out"
DEMO_ERR="$WORK/demo.err"
DEMO_PID=

cleanup() {
    if [[ -n "$DEMO_PID" ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -INT "$DEMO_PID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$DEMO_PID" 2>/dev/null && kill -KILL "$DEMO_PID" 2>/dev/null
    fi
    [[ "$REPORT_DIR" == "$WORK" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

if (( ! TLS )); then
    CERT_ARGS=()
    CERT_DESC="cleartext"
elif [[ "${H2SPEC_DEV_CERT:-0}" == 1 ]]; then
    CERT_ARGS=()
    CERT_DESC="the development certificate"
else
    command -v openssl >/dev/null || die "openssl is needed to make the certificate (or set H2SPEC_DEV_CERT=1)"
    bash "$ROOT/tests/tls/make-certs.sh" "$WORK/certs" >"$WORK/make-certs.log" 2>&1 \
        || { cat "$WORK/make-certs.log" >&2; die "make-certs.sh failed"; }
    CERT_ARGS=(--cert "$WORK/certs/localhost-ec.crt" --key "$WORK/certs/localhost-ec.key")
    CERT_DESC="$WORK/certs/localhost-ec.crt (ECDSA P-256, test CA)"
fi

# A free port: bind port 0, read it, release it. The demo then binds it by number (it sets
# SO_REUSEADDR); retry a few times in the unlikely case something else grabs it in between.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PORT=
for attempt in 1 2 3; do
    PORT="$(free_port)" || die "could not find a free port"
    "$DEMO" --urls "$SCHEME://127.0.0.1:$PORT" --protocols "$PROTOCOLS" "${CERT_ARGS[@]}" >"$DEMO_OUT" 2>"$DEMO_ERR" &
    DEMO_PID=$!
    # Wait (at most 10 s) for the `listening on` line.
    for _ in $(seq 1 100); do
        grep -q "^listening on $SCHEME://127.0.0.1:$PORT\$" "$DEMO_OUT" 2>/dev/null && break
        kill -0 "$DEMO_PID" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q "^listening on $SCHEME://127.0.0.1:$PORT\$" "$DEMO_OUT"; then
        break
    fi
    wait "$DEMO_PID" 2>/dev/null
    echo "$NAME: demo did not start on port $PORT (attempt $attempt):" >&2
    cat "$DEMO_ERR" >&2
    DEMO_PID=
done
[[ -n "$DEMO_PID" ]] || die "the demo never started"
echo "$NAME: demo (pid $DEMO_PID) listening on $SCHEME://127.0.0.1:$PORT (--protocols $PROTOCOLS, $CERT_DESC); h2spec: $H2SPEC ($("$H2SPEC" --version 2>&1 | head -1))"

REPORT="$REPORT_DIR/$NAME.xml"
OUT="$WORK/$NAME.out"
# Bounded: h2spec's own per-case timeout is $H2SPEC_TIMEOUT s; the whole run gets 5 minutes.
timeout 300 "$H2SPEC" "${TLS_FLAGS[@]}" -h 127.0.0.1 -p "$PORT" -P /drain -o "$H2SPEC_TIMEOUT" -j "$REPORT" "$@" >"$OUT" 2>&1
STATUS=$?
[[ $STATUS -eq 124 ]] && echo "$NAME: h2spec timed out after 300 s" >&2

# The summary: every failed case with its explanation, then the totals line.
if grep -q "^Failures:" "$OUT"; then
    sed -n '/^Failures:/,$p' "$OUT"
else
    tail -n 3 "$OUT"
fi
# h2spec exits 0 when it could not connect at all (e.g. a TLS failure): require a totals line.
if ! grep -Eq '^[0-9]+ tests, [0-9]+ passed' "$OUT"; then
    echo "$NAME: h2spec printed no totals; its output:" >&2
    cat "$OUT" >&2
    [[ $STATUS -eq 0 ]] && STATUS=4
fi
echo "$NAME: JUnit report: $REPORT; full output: $OUT"

# Stop the demo gracefully: it must exit 0 within 10 s.
kill -INT "$DEMO_PID"
DEMO_STATUS=
for _ in $(seq 1 100); do
    if ! kill -0 "$DEMO_PID" 2>/dev/null; then
        wait "$DEMO_PID"
        DEMO_STATUS=$?
        break
    fi
    sleep 0.1
done
if [[ -z "$DEMO_STATUS" ]]; then
    echo "$NAME: the demo did not exit within 10 s of SIGINT" >&2
    [[ $STATUS -eq 0 ]] && STATUS=3
elif [[ "$DEMO_STATUS" -ne 0 ]]; then
    echo "$NAME: the demo exited $DEMO_STATUS after SIGINT:" >&2
    cat "$DEMO_ERR" >&2
    [[ $STATUS -eq 0 ]] && STATUS=3
fi
DEMO_PID=
# Keep the full output next to the report when the report dir is the temp dir.
[[ "$REPORT_DIR" == "$WORK" ]] || cp "$OUT" "$REPORT_DIR/$NAME.out"
exit "$STATUS"
