#!/usr/bin/env bash
# Side-by-side benchmark: kestrel's C demo against raw hyper, nginx and h2o.
#
# Usage: bench/run.sh [--quick] [--tls]
#
# --tls benchmarks HTTPS instead (one ECDSA P-256 certificate for every server):
#   h1         wrk -t1 -c64 over TLS, keep-alive
#   h2         h2load -t1 -c16 -m16 over TLS (ALPN h2)
#   new        wrk -t1 -c64 with "Connection: close": one request per new TLS
#              connection (wrk does a full handshake each time, TLS 1.3)
# against nginx (OpenSSL), and IDLE_CONNS (default 5000) idle TLS connections.
#
# Each server runs alone, pinned to CPU $SERVER_CPU; the load generator (one
# client thread) is pinned to CPU $CLIENT_CPU. Loads per server:
#   h1         wrk -t1 -c64, HTTP/1.1 keep-alive (p99 from wrk)
#   h1-pipe16  same with 16 pipelined requests per write (bench/wrk.lua)
#   h2c        h2load -t1 -c16 -m16, h2c prior knowledge
# then, on a fresh instance, IDLE_CONNS idle keep-alive connections
# (bench/idle_conns.py) to measure RSS per connection.
#
# Environment (defaults in brackets):
#   DURATION   seconds per load run [10; 3 with --quick]
#   REPEAT     runs per load, medians reported [1]
#   WARMUP     seconds of wrk warm-up per server, 0 = none [1]
#   SERVERS    [hyper nginx h2o h2o-mruby kestrel-inline kestrel-pool]
#   LOADS      [h1 h1-pipe16 h2c]
#   IDLE_SERVERS [those of: hyper nginx kestrel-inline in SERVERS] ("" = none)
#   IDLE_CONNS [10000]
#   SERVER_CPU / CLIENT_CPU [0 / 1]
#   QUIET_WAIT max seconds to wait for other processes to leave the pinned
#              CPUs before each run [120]; runs disturbed anyway are flagged
#   DEMO_BIN   kestrel demo binary [examples-c/demo]
#   KEEP_WORK=1 keeps the scratch dir (configs, raw tool output)
#
# Output: Markdown on stdout and in bench/results/latest.md (raw records in
# bench/results/latest.jsonl). Exits 1 if a server failed or a run had errors.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

TLS=0
for arg in "$@"; do
    case $arg in
        --quick) DURATION=${DURATION:-3} ;;
        --tls) TLS=1 ;;
        *) echo "usage: bench/run.sh [--quick] [--tls]" >&2; exit 2 ;;
    esac
done
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}
WARMUP=${WARMUP:-1}
if (( TLS )); then
    SCHEME=https
    SERVERS=${SERVERS:-nginx kestrel-inline kestrel-pool}
    LOADS=${LOADS:-h1 h2 new}
    IDLE_CONNS=${IDLE_CONNS:-5000}
else
    SCHEME=http
    SERVERS=${SERVERS:-hyper nginx h2o h2o-mruby kestrel-inline kestrel-pool}
    LOADS=${LOADS:-h1 h1-pipe16 h2c}
fi
if [[ -z ${IDLE_SERVERS+set} ]]; then
    # Default: the idle test for those of hyper, nginx, kestrel-inline benched.
    IDLE_SERVERS=
    for s in hyper nginx kestrel-inline; do
        [[ " $SERVERS " == *" $s "* ]] && IDLE_SERVERS+="$s "
    done
fi
IDLE_CONNS=${IDLE_CONNS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
QUIET_WAIT=${QUIET_WAIT:-120}

HYPER_BIN=$BENCH/hyper-hello/target/release/hyper-hello
DEMO_BIN=${DEMO_BIN:-$ROOT/examples-c/demo}  # overridable to bench another build
CLK_TCK=$(getconf CLK_TCK)

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }

for tool in wrk h2load curl python3 taskset ss pgrep; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-test-deps.sh)"
done
[[ $(nproc) -ge 2 ]] || log "warning: fewer than 2 CPUs, server and client will share a core"

# The idle test needs IDLE_CONNS fds in both the server and the client.
# Containers often cap the hard limit, so fall back to whatever it allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (( IDLE_CONNS + 100 > $(ulimit -n) )); then
    IDLE_CONNS=$(( $(ulimit -n) - 100 ))
    log "fd limit is $(ulimit -n): idle test reduced to $IDLE_CONNS connections"
fi

# Scratch dir; world-readable because h2o drops privileges to nobody.
WORK=$(mktemp -d /tmp/kestrel-bench.XXXXXX)
chmod 755 "$WORK"
if (( TLS )); then
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2> /dev/null \
        || die "openssl could not make the benchmark certificate"
    chmod 644 "$WORK/tls/key.pem"
fi
CURL_TLS=()
(( TLS )) && CURL_TLS=(-k)
JSONL=$WORK/results.jsonl
: > "$JSONL"
NOTES=()
FAILED=0
SRV_PID=

cleanup() {
    if [[ -n $SRV_PID ]]; then
        kill "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "scratch kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- servers --

# Fixed ports so a leftover server from an aborted run is noticed, not reused.
declare -A H1_PORTS=([hyper]=18080 [nginx]=18081 [h2o]=18083 [h2o-mruby]=18084
                     [kestrel-inline]=18085 [kestrel-pool]=18086)
NGINX_H2_PORT=18082  # nginx 1.22 cannot sniff h2c: it needs its own listener

write_nginx_conf() {  # WORKER_CONNECTIONS
    local dir=$WORK/nginx
    mkdir -p "$dir/tmp"
    # Only client_body_temp_path: the other *_temp_path directives are
    # unknown to nginx builds without those modules (nginx-light).
    cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
# nginx preallocates and touches every connection slot at startup, so this
# is sized per run: it shows up in RSS, not in the per-connection delta.
events { worker_connections $1; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    default_type text/plain;
    server {
$(if (( TLS )); then cat <<TLSCONF
        listen 127.0.0.1:${H1_PORTS[nginx]} ssl http2;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
TLSCONF
else cat <<PLAIN
        listen 127.0.0.1:${H1_PORTS[nginx]};
        # 'http2' on a non-ssl listener = h2c with prior knowledge only.
        listen 127.0.0.1:$NGINX_H2_PORT http2;
PLAIN
fi)
        location / { return 200 "Hello, World!"; }
    }
}
EOF
    echo "$dir/nginx.conf"
}

write_h2o_conf() {  # MODE(file|mruby) DIRNAME PORT
    local dir=$WORK/$2 port=$3
    mkdir -p "$dir"
    chmod 755 "$dir"
    printf 'Hello, World!' > "$dir/hello.txt"
    chmod 644 "$dir/hello.txt"
    local handler
    if [[ $1 == file ]]; then
        # .txt maps to text/plain; h2o caches the open fd between requests.
        handler="        file.file: $dir/hello.txt"
    else
        handler='        mruby.handler: |
          Proc.new do |env|
            [200, {"content-type" => "text/plain"}, ["Hello, World!"]]
          end'
    fi
    # h2o refuses to keep root privileges; 'user' makes it drop to nobody.
    # max-connections defaults to 1024, too few for the idle test.
    cat > "$dir/h2o.conf" <<EOF
num-threads: 1
max-connections: $(( $(ulimit -n) - 50 ))
error-log: $dir/error.log
$([[ $EUID == 0 ]] && echo "user: nobody")
listen:
  host: 127.0.0.1
  port: $port
hosts:
  default:
    paths:
      /:
$handler
EOF
    echo "$dir/h2o.conf"
}

port_busy() { [[ -n $(ss -Htln "sport = :$1") ]]; }

NGINX_CONNS=1024  # raised for the idle test

# start_server NAME: sets SRV_PID (process to kill), MEM_PID (process whose
# RSS/CPU is measured), H1_PORT, H2_PORT, SRV_LOG. Returns 1 if it fails.
start_server() {
    local name=$1 conf cmd=()
    H1_PORT=${H1_PORTS[$name]}
    H2_PORT=$H1_PORT
    SRV_LOG=$WORK/$name.log
    case $name in
        hyper) cmd=("$HYPER_BIN" --port "$H1_PORT" --threads 1) ;;
        nginx)
            conf=$(write_nginx_conf "$NGINX_CONNS")
            (( TLS )) || H2_PORT=$NGINX_H2_PORT
            # -e: the compiled-in error log would be opened before the config is read.
            cmd=(nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$conf") ;;
        h2o) cmd=(h2o -c "$(write_h2o_conf file h2o "$H1_PORT")") ;;
        h2o-mruby) cmd=(h2o -c "$(write_h2o_conf mruby h2o-mruby "$H1_PORT")") ;;
        kestrel-*)
            cmd=("$DEMO_BIN" --urls "$SCHEME://127.0.0.1:$H1_PORT" --threads 1
                 --dispatch "${name#kestrel-}")
            (( TLS )) && cmd+=(--cert "$WORK/tls/cert.pem" --key "$WORK/tls/key.pem") ;;
        *) die "unknown server $name" ;;
    esac
    for p in "$H1_PORT" "$H2_PORT"; do
        port_busy "$p" && die "port $p already in use (leftover server?)"
    done

    LD_LIBRARY_PATH=$ROOT/target/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        taskset -c "$SERVER_CPU" "${cmd[@]}" > "$SRV_LOG" 2>&1 &
    SRV_PID=$!  # taskset execs the server, so this is the server's pid
    MEM_PID=$SRV_PID

    local i body
    for (( i = 0; i < 100; i++ )); do
        if ! kill -0 "$SRV_PID" 2>/dev/null; then
            NOTES+=("$name exited at startup: $(tail -n 3 "$SRV_LOG" | tr '\n' ' ')")
            SRV_PID=
            return 1
        fi
        body=$(curl -s "${CURL_TLS[@]}" --max-time 1 "$SCHEME://127.0.0.1:$H1_PORT/" 2>/dev/null) && break
        sleep 0.1
    done
    if [[ $body != "Hello, World!" ]]; then
        NOTES+=("$name: unexpected HTTP/1.1 body '${body:0:60}'")
        stop_server; return 1
    fi
    if (( TLS )); then
        body=$(curl -s -k --max-time 2 --http2 -w ' %{http_version}' "https://127.0.0.1:$H2_PORT/" || true)
        [[ $body == "Hello, World! 2" ]] && body="Hello, World!"
    else
        body=$(curl -s --max-time 2 --http2-prior-knowledge "http://127.0.0.1:$H2_PORT/" || true)
    fi
    if [[ $body != "Hello, World!" ]]; then
        NOTES+=("$name: HTTP/2 request failed ('${body:0:60}')")
        stop_server; return 1
    fi
    if [[ $name == nginx ]]; then
        # Measure the worker, not the master (which only supervises).
        MEM_PID=$(pgrep -P "$SRV_PID" | head -n 1)
        [[ -n $MEM_PID ]] || { NOTES+=("nginx: no worker process"); stop_server; return 1; }
    fi
    return 0
}

stop_server() {
    [[ -n $SRV_PID ]] || return 0
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
    # nginx's worker exits just after the master; wait until ports are free.
    local i
    for (( i = 0; i < 50; i++ )); do
        port_busy "$H1_PORT" || port_busy "$H2_PORT" || return 0
        sleep 0.1
    done
}

# ---------------------------------------------------------------- metrics --

status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# utime+stime of all threads, in clock ticks. comm may contain spaces, so
# drop everything up to ") " before counting fields.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Busy ticks (user+nice+system+irq+softirq+steal) of the two pinned CPUs.
# Compared with the server's and client's own CPU time it reveals other
# processes (e.g. a compile) stealing the benchmark's cores.
cores_busy() {
    awk -v a="cpu$SERVER_CPU" -v b="cpu$CLIENT_CPU" \
        '$1 == a || $1 == b { s += $2 + $3 + $4 + $7 + $8 + $9 } END { print s }' /proc/stat
}

# Before a run, wait (up to QUIET_WAIT s) until other processes leave the
# pinned CPUs alone: on a shared box a compile would halve the figures.
# The server is idle then, so all busy time over 10% is someone else's.
wait_quiet() {
    local waited=0 b0 b1
    while (( waited < QUIET_WAIT )); do
        b0=$(cores_busy); sleep 0.5; b1=$(cores_busy)
        # busy ticks in 0.5 s -> % of one core; at most 10% counts as quiet
        (( (b1 - b0) * 200 / CLK_TCK <= 10 )) && return 0
        (( waited == 0 )) && log "pinned CPUs busy with other processes, waiting (QUIET_WAIT=$QUIET_WAIT s)"
        sleep 2; waited=$(( waited + 3 ))
    done
    log "CPUs still busy after ${QUIET_WAIT}s, measuring anyway"
}

# run_load SERVER LOAD REP
run_load() {
    local server=$1 load=$2 rep=$3 tool out
    out=$WORK/$server-$load-$rep.out
    wait_quiet
    local c0 t0 t1 c1 b0 b1
    c0=$(cpu_ticks "$MEM_PID")
    b0=$(cores_busy)
    t0=$(date +%s.%N)
    # bash's `time` reports the client's user+sys CPU: a client at ~100%
    # means the figure measures the load generator, not the server.
    local TIMEFORMAT='%U %S'
    case $load in
        h1|h1-pipe16|new)
            tool=wrk
            local close=()
            [[ $load == new ]] && close=(-H "Connection: close")
            { time WRK_PIPELINE=$([[ $load == h1-pipe16 ]] && echo 16 || echo 1) \
                taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${DURATION}s" --latency "${close[@]}" \
                -s "$BENCH/wrk.lua" "$SCHEME://127.0.0.1:$H1_PORT/" > "$out" 2>&1 || true; } \
                2> "$out.time" ;;
        h2c|h2)
            tool=h2load
            { time taskset -c "$CLIENT_CPU" h2load -t1 -c16 -m16 -D"$DURATION" \
                "$SCHEME://127.0.0.1:$H2_PORT/" > "$out" 2>&1 || true; } 2> "$out.time" ;;
        *) die "unknown load $load" ;;
    esac
    t1=$(date +%s.%N)
    b1=$(cores_busy)
    if ! kill -0 "$MEM_PID" 2>/dev/null; then
        local status=0
        wait "$SRV_PID" 2>/dev/null || status=$?
        SRV_PID=
        local how="exit status $status"
        # >128: killed by signal (status - 128). SIGPIPE here means a write to
        # a peer-closed socket in a host that did not ignore SIGPIPE.
        (( status > 128 )) && how+=" = SIG$(kill -l $(( status - 128 )) 2>/dev/null)"
        NOTES+=("$server died during $load ($how): $(tail -n 3 "$SRV_LOG" | tr '\n' ' ')")
        FAILED=1
        return 1
    fi
    c1=$(cpu_ticks "$MEM_PID")
    local srv_cpu cli_cpu other_cpu
    srv_cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
        'BEGIN { printf "%.0f", (b - a) / hz / (t1 - t0) * 100 }')
    cli_cpu=$(awk -v t0="$t0" -v t1="$t1" '{ printf "%.0f", ($1 + $2) / (t1 - t0) * 100 }' \
        "$out.time")
    other_cpu=$(awk -v a="$b0" -v b="$b1" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
        -v s="$srv_cpu" -v c="$cli_cpu" \
        'BEGIN { v = (b - a) / hz / (t1 - t0) * 100 - s - c; printf "%.0f", v < 0 ? 0 : v }')
    python3 "$BENCH/results.py" add "$JSONL" "$tool" "$out" server="$server" load="$load" \
        rep="$rep" rss_kib="$(status_kib "$MEM_PID" VmRSS)" \
        hwm_kib="$(status_kib "$MEM_PID" VmHWM)" srv_cpu="$srv_cpu" cli_cpu="$cli_cpu" other_cpu="$other_cpu"
}

bench_server() {
    local server=$1 load rep
    log "== $server"
    start_server "$server" || { FAILED=1; log "${NOTES[-1]}"; return 0; }
    if (( WARMUP > 0 )); then
        taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${WARMUP}s" "$SCHEME://127.0.0.1:$H1_PORT/" \
            > /dev/null 2>&1 || true
    fi
    for load in $LOADS; do
        for (( rep = 1; rep <= REPEAT; rep++ )); do
            run_load "$server" "$load" "$rep" || break 2
        done
    done
    stop_server
}

idle_server() {
    local server=$1 out=$WORK/$1-idle.out
    wait_quiet
    log "== $server: $IDLE_CONNS idle keep-alive $SCHEME connections"
    # nginx closes idle keep-alive connections once fewer than 1/16 of its
    # slots are free, so give it twice what the test needs (within the fd limit).
    NGINX_CONNS=$(( 2 * IDLE_CONNS + 64 < $(ulimit -n) - 50 ? 2 * IDLE_CONNS + 64 : $(ulimit -n) - 50 ))
    start_server "$server" || { FAILED=1; log "${NOTES[-1]}"; return 0; }
    local tls_flag=()
    (( TLS )) && tls_flag=(--tls)
    taskset -c "$CLIENT_CPU" python3 "$BENCH/idle_conns.py" --port "$H1_PORT" "${tls_flag[@]}" \
        --pid "$MEM_PID" --count "$IDLE_CONNS" > "$out" 2> "$out.err" || true
    [[ -s $out.err ]] && NOTES+=("$server idle client: $(tail -n 1 "$out.err")")
    python3 "$BENCH/results.py" add "$JSONL" idle "$out" server="$server"
    stop_server
}

# ------------------------------------------------------------------- main --

# Drop servers whose binary is missing, with a note instead of failing: the
# kestrel demo may not be built yet, and the peers are optional.
available() {
    case $1 in
        hyper)
            if [[ ! -x $HYPER_BIN ]]; then
                log "building bench/hyper-hello (release)"
                (cd "$BENCH/hyper-hello" && cargo build --release --quiet) \
                    || die "bench/hyper-hello failed to build"
            fi ;;
        nginx) command -v nginx > /dev/null || { NOTES+=("nginx: skipped, not installed"); return 1; } ;;
        h2o*) command -v h2o > /dev/null || { NOTES+=("$1: skipped, h2o not installed"); return 1; } ;;
        kestrel-*)
            [[ -x $DEMO_BIN ]] || { NOTES+=("$1: skipped, examples-c/demo not built (run make first)"); return 1; } ;;
    esac
}

declare -A AVAILABLE=()
for s in $SERVERS $IDLE_SERVERS; do
    [[ -v AVAILABLE[$s] ]] || { available "$s" && AVAILABLE[$s]=1 || AVAILABLE[$s]=0; }
done
RUN_SERVERS=() RUN_IDLE=()
for s in $SERVERS; do (( AVAILABLE[$s] )) && RUN_SERVERS+=("$s"); done
for s in $IDLE_SERVERS; do (( AVAILABLE[$s] )) && RUN_IDLE+=("$s"); done

log "servers: ${RUN_SERVERS[*]:-none}; loads: $LOADS; ${DURATION}s x $REPEAT; idle: ${RUN_IDLE[*]:-none}"
for s in "${RUN_SERVERS[@]}"; do bench_server "$s"; done
for s in "${RUN_IDLE[@]}"; do idle_server "$s"; done

# Any run with errors makes the whole run fail (after the report is written).
if grep -q '"problems": \[[^]]' "$JSONL"; then FAILED=1; fi

mkdir -p "$BENCH/results"
cp "$JSONL" "$BENCH/results/latest.jsonl"
{
    python3 "$BENCH/results.py" report "$JSONL" \
        date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
        commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
        cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) CPUs)" \
        pinning="server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU, one client thread" \
        duration="${DURATION}s x $REPEAT" \
        tools="$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2), $(h2load --version | head -n 1)" \
        peers="$(nginx -v 2>&1 | cut -d' ' -f3), $(h2o -v 2>/dev/null | head -n 1)"
    if (( ${#NOTES[@]} )); then
        echo
        echo "## Notes"
        echo
        printf -- '- %s\n' "${NOTES[@]}"
    fi
} > "$BENCH/results/latest.md"
cat "$BENCH/results/latest.md"
exit "$FAILED"
