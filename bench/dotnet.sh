#!/usr/bin/env bash
# Requests/s of a hello handler in .NET (Mono, bindings/dotnet/examples/Hello.cs) beside the C
# demo (examples-c/demo), both on route "/" with the same response bytes (checked first).
#
# Usage: bench/dotnet.sh
#
# Both servers run pinned to CPU $SERVER_CPU with their defaults (I/O threads: one per core;
# handlers: the demo's POOL of 2 x cores (at least 4) library threads, Hello's as many .NET
# worker threads pulling requests). The load is wrk -t1 -c64, pinned to CPU $CLIENT_CPU, HTTP/1.1
# keep-alive. Runs alternate between the servers; each figure is the median of $REPEAT runs.
#
# Environment (defaults in brackets):
#   DURATION   seconds per run [10]        REPEAT   runs per server [3]
#   WARMUP     seconds of warm-up per server (JIT, caches) [3]
#   SERVER_CPU / CLIENT_CPU [0 / 1]
#
# Output: a Markdown table on stdout and in bench/results/dotnet-latest.md; raw wrk output in
# bench/results/dotnet-raw.txt. Exits 1 if a server fails or a run has errors.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
WARMUP=${WARMUP:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS=$BENCH/results
RAW=$RESULTS/dotnet-raw.txt
DEMO=$ROOT/examples-c/demo

log() { echo "[bench-dotnet] $*" >&2; }
die() { echo "[bench-dotnet] ERROR: $*" >&2; exit 1; }

command -v wrk >/dev/null || { log "installing wrk"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v taskset >/dev/null || die "taskset not found (util-linux)"
[[ -x $DEMO ]] || die "$DEMO not built: run 'make demo' first"
[[ -e $ROOT/target/release/libkestrel.so.0 ]] || die "libkestrel not built: run 'make lib' first"
OUT=$("$ROOT/bindings/dotnet/build.sh")
export LD_LIBRARY_PATH=$ROOT/target/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

mkdir -p "$RESULTS"
: >"$RAW"
WORK=$(mktemp -d /tmp/kestrel-bench-dotnet.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME CMD...: starts a pinned server on a free port (the command gets the URL appended).
declare -A PORT PID
start() {
    local name=$1; shift
    local port
    port=$(free_port)
    taskset -c "$SERVER_CPU" "$@" --urls "http://127.0.0.1:$port" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    PORT[$name]=$port
    for _ in $(seq 100); do
        grep -q "listening on" "$WORK/$name.log" && return 0
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/$name.log" >&2
    die "$name did not start"
}

# The raw response of GET / without its Date header (which differs by the second).
response() {
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
    timeout 10 cat <&3 | grep -av '^date: '
    exec 3<&-
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start c-demo "$DEMO"
start dotnet-mono mono "$OUT/Hello.exe"
SERVERS=(c-demo dotnet-mono)

ref=$(response "${PORT[c-demo]}" | od -c)
got=$(response "${PORT[dotnet-mono]}" | od -c)
[[ $ref == "$got" ]] || { diff <(echo "$ref") <(echo "$got") >&2 || true; die "the responses differ"; }
log "same response bytes (Date aside): $(response "${PORT[c-demo]}" | tr -d '\r' | tr '\n' '|')"

for name in "${SERVERS[@]}"; do
    log "warm-up $name (${WARMUP}s)"
    taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${WARMUP}s" "http://127.0.0.1:${PORT[$name]}/" >/dev/null
done

declare -A RPS P99
FAILED=0
for run in $(seq "$REPEAT"); do
    for name in "${SERVERS[@]}"; do
        log "run $run/$REPEAT: $name (${DURATION}s)"
        out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$name]}/")
        printf '### %s run %s\n%s\n\n' "$name" "$run" "$out" >>"$RAW"
        if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
            log "$name run $run had errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out")"
            FAILED=1
        fi
        RPS[$name]+="$(awk '/^Requests\/sec/ {print $2}' <<<"$out") "
        P99[$name]+="$(awk '$1 == "99%" {print $2}' <<<"$out") "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# wrk latencies carry units (us, ms, s): convert to ms for the median.
to_ms() { tr ' ' '\n' | grep -v '^$' | awk '/us$/ {print $1/1000; next} /ms$/ {print $1+0; next} /s$/ {print $1*1000}'; }

c_median=$(median <<<"${RPS[c-demo]}")
{
    echo "## .NET binding (Mono) vs the C demo: hello, HTTP/1.1, wrk -t1 -c64"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, server on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU," \
         "${DURATION}s x $REPEAT runs (medians), $(mono --version | head -n 1 | cut -d'(' -f1| sed 's/ *$//')"
    echo
    echo "| server | requests/s (median) | runs | p99 ms (median) | vs C | RSS after |"
    echo "|---|---:|---|---:|---:|---:|"
    for name in "${SERVERS[@]}"; do
        med=$(median <<<"${RPS[$name]}")
        p99=$(to_ms <<<"${P99[$name]}" | median)
        ratio=$(awk -v a="$med" -v b="$c_median" 'BEGIN {printf "%.0f%%", 100 * a / b}')
        rss=$(( $(rss_kib "${PID[$name]}") / 1024 ))
        echo "| $name | $(printf '%.0f' "$med") | $(sed 's/ *$//; s/ /, /g' <<<"${RPS[$name]}" | awk -F', ' '{for (i=1;i<=NF;i++) printf "%s%.0f", (i>1?", ":""), $i}') | $p99 | $ratio | ${rss} MiB |"
    done
} | tee "$RESULTS/dotnet-latest.md"
exit "$FAILED"
