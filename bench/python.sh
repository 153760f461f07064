#!/usr/bin/env bash
# Python servers side by side: the kestrel binding (bindings/python) against uvicorn
# (httptools) and granian, serving the same hello-world ASGI and WSGI apps
# (bench/python_apps.py).
#
# Usage: bench/python.sh [--quick]
#
# Each server runs alone as one worker process, pinned to CPU $SERVER_CPU; wrk -t1 -c64
# (HTTP/1.1 keep-alive) is pinned to CPU $CLIENT_CPU. REPEAT rounds, each starting every
# server in turn (interleaved), warming it up and measuring one run of DURATION seconds; the
# table shows medians. Every server uses its
# defaults, with uvloop installed (uvicorn, granian and kestrel all pick it up when present).
#
# Environment (defaults in brackets):
#   DURATION   seconds per run [10; 3 with --quick]
#   REPEAT     runs per pair, medians reported [3; 1 with --quick]
#   WARMUP     seconds of warm-up per pair [2]
#   SERVERS    [kestrel-asgi uvicorn-asgi granian-asgi kestrel-wsgi granian-wsgi]
#   SERVER_CPU / CLIENT_CPU [0 / 1]
#   QUIET_WAIT max seconds to wait for other processes to leave the pinned CPUs [120]
#   BENCH_VENV the venv holding uvicorn, granian and the binding [bench/results/python-venv]
#
# Output: Markdown on stdout and in bench/results/python.md; raw wrk output in
# bench/results/python/. Exits 1 if a server failed or a run had errors.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

QUICK=0
if [[ ${1:-} == --quick ]]; then QUICK=1; fi
DURATION=${DURATION:-$((QUICK ? 3 : 10))}
REPEAT=${REPEAT:-$((QUICK ? 1 : 3))}
WARMUP=${WARMUP:-2}
SERVERS=${SERVERS:-kestrel-asgi uvicorn-asgi granian-asgi kestrel-wsgi granian-wsgi}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-120}
VENV=${BENCH_VENV:-$BENCH/results/python-venv}
OUT=$BENCH/results/python
CLK_TCK=$(getconf CLK_TCK)
PORT=18290

log() { echo "[bench-python] $*" >&2; }
die() { echo "[bench-python] ERROR: $*" >&2; exit 1; }

for tool in wrk curl taskset python3; do
    command -v "$tool" > /dev/null || die "$tool not found (run scripts/install-test-deps.sh)"
done
[[ -f $ROOT/target/release/libkestrel.so ]] || die "target/release/libkestrel.so missing: run make lib"

# ---- the venv: peers from PyPI, the binding installed as a user would ----------------
mkdir -p "$OUT"
if [[ ! -x $VENV/bin/python ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
PY=$VENV/bin/python
if ! "$PY" -c 'import uvicorn, httptools, granian, uvloop' 2> /dev/null; then
    log "pip: installing uvicorn httptools granian uvloop"
    "$PY" -m pip install --quiet --disable-pip-version-check uvicorn httptools granian uvloop \
        || die "pip install failed"
fi
log "pip install bindings/python"
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$ROOT/bindings/python" \
    || die "pip install ./bindings/python failed"
VERSIONS=$("$PY" - <<'EOF'
import importlib.metadata as m
print(", ".join(f"{p} {m.version(p)}" for p in ("kestrel", "uvicorn", "httptools", "granian", "uvloop")))
EOF
)

SRV_PID=
cleanup() {
    if [[ -n $SRV_PID ]]; then
        kill "$SRV_PID" 2> /dev/null || true
        wait "$SRV_PID" 2> /dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_cmd() {  # NAME -> the command line, run in bench/
    case $1 in
        kestrel-asgi) echo "$PY -m kestrel python_apps:asgi_app --interface asgi --urls http://127.0.0.1:$PORT --log-level warning" ;;
        kestrel-wsgi) echo "$PY -m kestrel python_apps:wsgi_app --interface wsgi --urls http://127.0.0.1:$PORT --log-level warning" ;;
        uvicorn-asgi) echo "$VENV/bin/uvicorn python_apps:asgi_app --http httptools --port $PORT --no-access-log --log-level warning" ;;
        granian-asgi) echo "$VENV/bin/granian --interface asgi --workers 1 --no-ws --port $PORT --log-level warning python_apps:asgi_app" ;;
        granian-wsgi) echo "$VENV/bin/granian --interface wsgi --workers 1 --no-ws --port $PORT --log-level warning python_apps:wsgi_app" ;;
        *) die "unknown server $1" ;;
    esac
}

# CPU ticks (user+system) of a process and all its descendants (granian forks its worker).
tree_pids() { local p=$1 c; echo "$p"; for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done; }
tree_ticks() {
    local total=0 p v
    for p in $(tree_pids "$1"); do
        v=$(sed 's/.*) //' "/proc/$p/stat" 2> /dev/null | awk '{ print $12 + $13 }') || v=0
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
cores_busy() {
    awk -v a="cpu$SERVER_CPU" -v b="cpu$CLIENT_CPU" \
        '$1 == a || $1 == b { s += $2 + $3 + $4 + $7 + $8 + $9 } END { print s }' /proc/stat
}
wait_quiet() {
    local waited=0 b0 b1
    while ((waited < QUIET_WAIT)); do
        b0=$(cores_busy); sleep 0.5; b1=$(cores_busy)
        (((b1 - b0) * 200 / CLK_TCK <= 10)) && return 0
        ((waited == 0)) && log "pinned CPUs busy with other processes, waiting (QUIET_WAIT=$QUIET_WAIT s)"
        sleep 2; waited=$((waited + 3))
    done
    log "CPUs still busy after ${QUIET_WAIT}s, measuring anyway"
}

RECORDS=$OUT/records.tsv
: > "$RECORDS"
FAILED=0
NOTES=()

# bench_server NAME REP: starts the server, warms it up, measures one run, stops it.
bench_server() {
    local name=$1 rep=$2 cmd out
    cmd=$(server_cmd "$name")
    [[ -z $(ss -Htln "sport = :$PORT" 2> /dev/null) ]] || die "port $PORT busy (leftover server?)"
    ((rep == 1)) && log "== $name: $cmd"
    (cd "$BENCH" && exec taskset -c "$SERVER_CPU" $cmd) > "$OUT/$name-$rep.log" 2>&1 &
    SRV_PID=$!
    local i body=
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SRV_PID" 2> /dev/null || break
        body=$(curl -s --max-time 1 "http://127.0.0.1:$PORT/" 2> /dev/null) && break
        sleep 0.1
    done
    if [[ $body != "Hello, World!" ]]; then
        NOTES+=("$name did not answer 'Hello, World!' ($(tail -n 2 "$OUT/$name-$rep.log" | tr '\n' ' '))")
        FAILED=1; cleanup; SRV_PID=; return
    fi
    taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${WARMUP}s" "http://127.0.0.1:$PORT/" > /dev/null 2>&1 || true
    wait_quiet
    out=$OUT/$name-$rep.txt
    local c0 c1 t0 t1 b0 b1
    c0=$(tree_ticks "$SRV_PID"); b0=$(cores_busy); t0=$(date +%s.%N)
    local TIMEFORMAT='%U %S'
    { time taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/" > "$out" 2>&1 || true; } 2> "$out.time"
    t1=$(date +%s.%N); c1=$(tree_ticks "$SRV_PID"); b1=$(cores_busy)
    if ! kill -0 "$SRV_PID" 2> /dev/null; then
        NOTES+=("$name died during run $rep: $(tail -n 3 "$OUT/$name-$rep.log" | tr '\n' ' ')")
        FAILED=1; SRV_PID=; return
    fi
    python3 - "$out" "$name" "$rep" "$c0" "$c1" "$t0" "$t1" "$b0" "$b1" "$CLK_TCK" >> "$RECORDS" <<'EOF'
import re, sys
path, name, rep, c0, c1, t0, t1, b0, b1, hz = sys.argv[1:]
text = open(path).read()
wall = float(t1) - float(t0)
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
p99 = f"{float(m.group(1)) * {'us': 1, 'ms': 1e3, 's': 1e6}[m.group(2)]:.0f}"  # microseconds
errors = []
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
if m: errors.append(f"{m.group(1)} non-2xx")
m = re.search(r"Socket errors: (.*)", text)
if m: errors.append("socket errors " + m.group(1).strip())
srv = (int(c1) - int(c0)) / int(hz)
cli_u, cli_s = map(float, open(path + ".time").read().split())
other = max(0.0, (int(b1) - int(b0)) / int(hz) - srv - cli_u - cli_s)
print("\t".join([name, rep, f"{rps:.0f}", f"{reqs / max(srv, 1e-9):.0f}", p99,
             f"{srv / wall * 100:.0f}", f"{(cli_u + cli_s) / wall * 100:.0f}", f"{other / wall * 100:.0f}",
             "; ".join(errors)]))
EOF
    tail -n 1 "$RECORDS" | awk -F'\t' '{ printf "[bench-python]   %s run %s: %s req/s, %s req per server CPU-second, p99 %s us%s\n", $1, $2, $3, $4, $5, ($9 ? ", " $9 : "") }' >&2
    kill -INT "$SRV_PID" 2> /dev/null || true
    wait "$SRV_PID" 2> /dev/null || true
    SRV_PID=
    for ((i = 0; i < 50; i++)); do [[ -z $(ss -Htln "sport = :$PORT" 2> /dev/null) ]] && break; sleep 0.1; done
}

log "servers: $SERVERS; ${DURATION}s x $REPEAT; $VERSIONS"
# Interleaved: each round runs every server once, so a slow spell of the shared machine
# affects all servers alike instead of one.
for ((rep = 1; rep <= REPEAT; rep++)); do
    for s in $SERVERS; do bench_server "$s" "$rep"; done
done

REPORT=$BENCH/results/python.md
python3 - "$RECORDS" "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo none)" \
    "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) CPUs)" \
    "$VERSIONS" "${DURATION}s x $REPEAT" "$(printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}")" > "$REPORT" <<'EOF'
import statistics, sys
records, date, commit, cpu, versions, runs, notes = sys.argv[1:]
rows = {}
for line in open(records):
    f = line.rstrip("\n").split("\t")
    rows.setdefault(f[0], []).append(f)
med = {}
for name, rs in rows.items():
    med[name] = {
        "rps": statistics.median(float(r[2]) for r in rs),
        "per_cpu": statistics.median(float(r[3]) for r in rs),
        "p99": statistics.median(float(r[4]) for r in rs),
        "srv": statistics.median(float(r[5]) for r in rs),
        "cli": statistics.median(float(r[6]) for r in rs),
        "other": max(float(r[7]) for r in rs),
        "errors": "; ".join(sorted({r[8] for r in rs if r[8]})),
    }
print(f"# Python servers: kestrel binding vs uvicorn and granian\n")
print(f"{date}, commit {commit}, {cpu}. Server pinned to one CPU, wrk -t1 -c64 (HTTP/1.1 keep-alive) on the other, "
      f"runs of {runs}, medians. {versions}. Every server at its defaults, one worker process.\n")
print("| app | server | req/s | req per server CPU-s | p99 | srv CPU | cli CPU | other CPU | errors |")
print("|---|---|--:|--:|--:|--:|--:|--:|---|")
for name, m in med.items():
    app = name.split("-")[1].upper()
    p99 = f"{m['p99'] / 1000:.2f} ms" if m["p99"] >= 1000 else f"{m['p99']:.0f} µs"
    print(f"| {app} | {name.split('-')[0]} | {m['rps']:,.0f} | {m['per_cpu']:,.0f} | {p99} | {m['srv']:.0f}% | "
          f"{m['cli']:.0f}% | {m['other']:.0f}% | {m['errors']} |")
print("\n'other CPU': busy time of the two pinned CPUs not used by the server or wrk (another process "
      "disturbing the run when well above 0). 'req per server CPU-s' divides by the CPU time the server "
      "actually got, so it holds up better than req/s on a shared machine.\n")
print("| target | req/s ratio | per-CPU ratio | met |")
print("|---|--:|--:|---|")
for label, a, b, goal in [("ASGI vs uvicorn", "kestrel-asgi", "uvicorn-asgi", 1.5),
                          ("ASGI vs granian", "kestrel-asgi", "granian-asgi", 1.0),
                          ("WSGI vs granian", "kestrel-wsgi", "granian-wsgi", 1.0)]:
    if a in med and b in med:
        r = med[a]["rps"] / med[b]["rps"]
        c = med[a]["per_cpu"] / med[b]["per_cpu"]
        print(f"| {label} >= {goal}x | {r:.2f}x | {c:.2f}x | {'yes' if r >= goal else 'no'} |")
if notes.strip():
    print("\nNotes:\n")
    for n in notes.strip().splitlines():
        print(f"- {n}")
EOF
cat "$REPORT"
if grep -qE $'\t[^\t]+$' "$RECORDS"; then FAILED=1; fi
exit $FAILED
