#!/usr/bin/env bash
# The cost of the C++ wrapper: bindings/cpp/examples/hello.cpp (kestrel.hpp, a lambda handler)
# against the C demo (examples-c/demo), route GET /, same dispatch mode, same flags.
#
# Usage: bench/cpp.sh [--quick]
#
# Both servers run with --threads 1 (one I/O thread) and the same dispatch mode, pinned to CPU
# $SERVER_CPU; wrk -t1 -c64 runs pinned to CPU $CLIENT_CPU. Runs alternate C, C++, C, C++... so
# drift hits both alike; the table shows medians of $REPEAT runs. Target: the C++ wrapper at
# most 3% slower than C.
#
# Before measuring, the two servers' responses to GET / and to a 404 are compared byte for byte
# (the Date header aside); the script stops if they differ.
#
# Environment (defaults in brackets):
#   DURATION  seconds per wrk run [10; 3 with --quick]
#   REPEAT    runs per server and mode [3; 1 with --quick]
#   WARMUP    seconds of wrk warm-up before each run [1]
#   MODES     dispatch modes [inline pool]
#   CONNS     wrk connections [64]
#   SERVER_CPU / CLIENT_CPU [0 / 1]
#   CXX       C++ compiler [c++]
#
# Needs `make lib demo` first. Output: Markdown on stdout and in bench/results/cpp-latest.md; raw
# wrk output, server logs and the compared responses under bench/results/cpp-<timestamp>/.
# Exits 1 if a server failed, the responses differ, or wrk saw errors.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

if [[ ${1:-} == --quick ]]; then
    DURATION=${DURATION:-3}
    REPEAT=${REPEAT:-1}
elif [[ -n ${1:-} ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
WARMUP=${WARMUP:-1}
MODES=${MODES:-inline pool}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CXX=${CXX:-c++}

log() { echo "[bench/cpp] $*" >&2; }
die() { echo "[bench/cpp] ERROR: $*" >&2; exit 1; }

for tool in wrk curl taskset "$CXX"; do
    command -v "$tool" > /dev/null || die "$tool not found"
done
LIB=$ROOT/target/release
DEMO=$ROOT/examples-c/demo
[[ -f $LIB/libkestrel.so ]] || die "no $LIB/libkestrel.so: run 'make lib' first"
[[ -x $DEMO ]] || die "no $DEMO: run 'make demo' first"
[[ $(nproc) -ge 2 ]] || log "warning: fewer than 2 CPUs, server and client share a core"

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$BENCH/results/cpp-$STAMP
mkdir -p "$OUT"

# The C++ server, built like the C demo (-O2 -g, same warnings as errors).
HELLO=$OUT/hello-cpp
log "building $HELLO"
"$CXX" -std=c++17 -O2 -g -Wall -Wextra -Werror -pedantic \
    -I"$ROOT/include" -I"$ROOT/bindings/cpp/include" \
    -o "$HELLO" "$ROOT/bindings/cpp/examples/hello.cpp" \
    -L"$LIB" -Wl,-rpath,"$LIB" -lkestrel -lpthread

SRV_PID=
URL=
stop_server() {
    if [[ -n $SRV_PID ]]; then
        kill -TERM "$SRV_PID" 2> /dev/null || true
        wait "$SRV_PID" 2> /dev/null || true
        SRV_PID=
    fi
}
trap stop_server EXIT

# start_server NAME MODE LOGFILE: starts a server on a free port, sets SRV_PID and URL.
start_server() {
    local name=$1 mode=$2 logfile=$3 bin
    case $name in
        c) bin=$DEMO ;;
        cpp) bin=$HELLO ;;
        *) die "unknown server $name" ;;
    esac
    : > "$logfile"
    taskset -c "$SERVER_CPU" "$bin" --urls "http://127.0.0.1:0" --threads 1 --dispatch "$mode" \
        > "$logfile" 2>&1 &
    SRV_PID=$!  # taskset execs the server
    local i
    URL=
    for (( i = 0; i < 100; i++ )); do
        kill -0 "$SRV_PID" 2> /dev/null || die "$name ($mode) exited: $(tail -n 3 "$logfile")"
        URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$logfile" | head -n 1)
        [[ -n $URL ]] && break
        sleep 0.05
    done
    [[ -n $URL ]] || die "$name ($mode) did not say where it listens"
}

# raw_response URL PATH: the response head and body as curl sees them, without the Date header.
raw_response() {
    curl -s --max-time 5 --http1.1 -i --raw "$1$2" | tr -d '\r' | grep -vi '^date:'
}

# run_wrk FILE: runs wrk against $URL, output in FILE.
run_wrk() {
    if (( WARMUP > 0 )); then
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$URL/" > /dev/null 2>&1 || true
    fi
    cat /proc/loadavg > "$1.loadavg"
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$URL/" > "$1" 2>&1 || true
}

# wrk_field FILE FIELD: rps, p50 or p99 (milliseconds), or errors (socket errors + non-2xx).
wrk_field() {
    awk -v want="$2" '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v
        }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Socket errors:/ { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { errs += $5 }
        END {
            if (want == "rps") print (rps == "" ? "0" : rps)
            else if (want == "p50") print (p50 == "" ? "0" : p50)
            else if (want == "p99") print (p99 == "" ? "0" : p99)
            else print errs + 0
        }' "$1"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- 1. the two servers answer byte for byte alike ------------------------------------------
FAILED=0
for mode in $MODES; do
    for name in c cpp; do
        start_server "$name" "$mode" "$OUT/check-$name-$mode.log"
        raw_response "$URL" / > "$OUT/response-$name-$mode-hello.txt"
        raw_response "$URL" /missing > "$OUT/response-$name-$mode-404.txt"
        stop_server
    done
    for what in hello 404; do
        if ! cmp -s "$OUT/response-c-$mode-$what.txt" "$OUT/response-cpp-$mode-$what.txt"; then
            diff "$OUT/response-c-$mode-$what.txt" "$OUT/response-cpp-$mode-$what.txt" >&2 || true
            die "$mode: the C and C++ responses to $what differ"
        fi
    done
done
log "responses identical (Date aside): $(head -n 1 "$OUT/response-c-${MODES%% *}-hello.txt" | tr -d '\n'), body '$(tail -n 1 "$OUT/response-c-${MODES%% *}-hello.txt")'"

# ---- 2. load ----------------------------------------------------------------------------------
declare -A RPS P50 P99
for mode in $MODES; do
    for (( rep = 1; rep <= REPEAT; rep++ )); do
        for name in c cpp; do
            start_server "$name" "$mode" "$OUT/server-$name-$mode-$rep.log"
            log "$mode run $rep/$REPEAT: $name at $URL"
            file=$OUT/wrk-$name-$mode-$rep.txt
            run_wrk "$file"
            stop_server
            errors=$(wrk_field "$file" errors)
            if [[ $errors != 0 ]]; then
                log "$name $mode run $rep: $errors errors (see $file)"
                FAILED=1
            fi
            RPS[$name,$mode]+="$(wrk_field "$file" rps) "
            P50[$name,$mode]+="$(wrk_field "$file" p50) "
            P99[$name,$mode]+="$(wrk_field "$file" p99) "
        done
    done
done

# ---- 3. report ----------------------------------------------------------------------------
{
    echo "### C++ wrapper vs C demo: GET / (\"Hello, World!\")"
    echo
    echo "wrk -t1 -c$CONNS -d${DURATION}s, server --threads 1 on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU;" \
         "median of $REPEAT run(s); $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $("$CXX" --version | head -n 1)."
    echo
    echo "| dispatch | C demo req/s | C++ req/s | C++ vs C | p50 C / C++ (ms) | p99 C / C++ (ms) | target ≤ 3% slower |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for mode in $MODES; do
        # shellcheck disable=SC2086
        c_rps=$(median ${RPS[c,$mode]}); cpp_rps=$(median ${RPS[cpp,$mode]})
        # shellcheck disable=SC2086
        c_p50=$(median ${P50[c,$mode]}); cpp_p50=$(median ${P50[cpp,$mode]})
        # shellcheck disable=SC2086
        c_p99=$(median ${P99[c,$mode]}); cpp_p99=$(median ${P99[cpp,$mode]})
        delta=$(awk -v a="$c_rps" -v b="$cpp_rps" 'BEGIN { if (a > 0) printf "%+.1f%%", (b - a) / a * 100; else print "n/a" }')
        met=$(awk -v a="$c_rps" -v b="$cpp_rps" 'BEGIN { print (a > 0 && b >= a * 0.97) ? "met" : "NOT met" }')
        printf '| %s | %.0f | %.0f | %s | %s / %s | %s / %s | %s |\n' "$mode" "$c_rps" "$cpp_rps" "$delta" \
            "$c_p50" "$cpp_p50" "$c_p99" "$cpp_p99" "$met"
    done
    echo
    echo "Runs per server (req/s):"
    for mode in $MODES; do
        echo "- $mode: C ${RPS[c,$mode]}/ C++ ${RPS[cpp,$mode]}"
    done
    echo "- load average before each run: $(cat "$OUT"/wrk-*.loadavg | awk '{ print $1 }' | tr '\n' ' ')"
    echo
    echo "Raw output: bench/results/cpp-$STAMP/"
} | tee "$OUT/summary.md" "$BENCH/results/cpp-latest.md"

exit "$FAILED"
