#!/bin/sh
# tests/bench/run.sh BUILD_DIR -- Herald's benchmark (`make bench`).
#
# Starts a private redis-server and, per scenario, one gateway on free loopback
# ports; drives it with build/herald-load; reads the gateway's RSS and CPU time
# from /proc; prints a table (each figure with the command that produced it)
# and writes BUILD_DIR/bench/results.md and BUILD_DIR/bench/bench-latency.svg.
# Everything it starts is stopped by PID, also on failure or Ctrl-C.
#
# Sizes (environment; defaults are the issue's scenarios, about 5 minutes):
#   HERALD_BENCH_SCENARIOS        "idle idle_wss fanout many churn churn_wss"
#   HERALD_BENCH_IDLE_CONNS       50000   idle ws:// connections
#   HERALD_BENCH_IDLE_WSS_CONNS   10000   idle wss:// connections
#   HERALD_BENCH_IDLE_SECONDS     30      idle CPU window (> the 25 s ping interval)
#   HERALD_BENCH_FANOUT_SUBS      1000    subscribers of the one fan-out channel
#   HERALD_BENCH_FANOUT_RATE      1000    events/s published to it
#   HERALD_BENCH_MANY_SUBS        10000   subscribers, one per channel
#   HERALD_BENCH_MANY_CHANNELS    10000
#   HERALD_BENCH_MANY_RATE        10000   events/s across those channels
#   HERALD_BENCH_PUBLISH_SECONDS  20      publishing time per throughput scenario
#   HERALD_BENCH_CHURN_SECONDS    15      per churn scenario
#   HERALD_BENCH_CHURN_CONCURRENCY 64     connections in flight
#   HERALD_BENCH_WORKERS          1       gateway workers (idle scenarios use more
#                                         when the open-file limit demands it)
#   HERALD_BENCH_LOAD_PROCS       1       load generator processes
#   HERALD_BENCH_PIN              0       1: gateway on CPU 0, everything else on CPU 1
set -u

BUILD=${1:?usage: run.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$BUILD/bench"
LOAD="$BUILD/herald-load"
GW="$BUILD/herald-gateway"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

SCENARIOS=${HERALD_BENCH_SCENARIOS:-"idle idle_wss fanout many churn churn_wss"}
IDLE_CONNS=${HERALD_BENCH_IDLE_CONNS:-50000}
IDLE_WSS_CONNS=${HERALD_BENCH_IDLE_WSS_CONNS:-10000}
IDLE_SECONDS=${HERALD_BENCH_IDLE_SECONDS:-30}
FANOUT_SUBS=${HERALD_BENCH_FANOUT_SUBS:-1000}
FANOUT_RATE=${HERALD_BENCH_FANOUT_RATE:-1000}
MANY_SUBS=${HERALD_BENCH_MANY_SUBS:-10000}
MANY_CHANNELS=${HERALD_BENCH_MANY_CHANNELS:-10000}
MANY_RATE=${HERALD_BENCH_MANY_RATE:-10000}
PUBLISH_SECONDS=${HERALD_BENCH_PUBLISH_SECONDS:-20}
CHURN_SECONDS=${HERALD_BENCH_CHURN_SECONDS:-15}
CHURN_CONCURRENCY=${HERALD_BENCH_CHURN_CONCURRENCY:-64}
WORKERS=${HERALD_BENCH_WORKERS:-1}
LOAD_PROCS=${HERALD_BENCH_LOAD_PROCS:-1}
PIN=${HERALD_BENCH_PIN:-0}

SECRET=herald-bench-secret-0123456789abcdef
CLK_TCK=$(getconf CLK_TCK)
BENCH_START=$(date +%s)
STARTED_PIDS=""

rm -rf "$OUT"
mkdir -p "$OUT/tls"
RAW="$OUT/raw.txt"
CMDS="$OUT/commands.txt"
: > "$RAW"
: > "$CMDS"

say() { printf '%s [bench] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- process bookkeeping: everything started here is stopped by PID ---------

children_of() { # PIDs whose parent is $1 (fields after "pid (comm) ": state ppid ...)
    cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^\([0-9]*\) .*) /\1 /' |
        awk -v p="$1" '$3 == p {print $1}'
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop PID [SECONDS]: SIGTERM, then SIGKILL (also its children) after SECONDS.
stop_pid() {
    pid=$1
    alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
    kids=$(children_of "$pid")
    kill -TERM "$pid" 2>/dev/null
    n=0
    while alive "$pid" && [ "$n" -lt "$((${2:-10} * 10))" ]; do sleep 0.1; n=$((n + 1)); done
    if alive "$pid"; then
        say "pid $pid did not stop in ${2:-10}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null; done
    return 0
}

cleanup() {
    for pid in $STARTED_PIDS; do stop_pid "$pid" 3; done
    STARTED_PIDS=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

started() { STARTED_PIDS="$1 $STARTED_PIDS"; }
forget() {
    rest=""
    for p in $STARTED_PIDS; do [ "$p" = "$1" ] || rest="$rest $p"; done
    STARTED_PIDS=$rest
}

# ---- measurements -------------------------------------------------------------

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cpu_ticks() { # utime + stime of the given PIDs, in clock ticks
    for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done |
        sed 's/^.*) //' | awk '{s += $12 + $13} END {print s + 0}'
}

busy_ticks() { # process CPU ticks (user, nice, system) of the whole machine, from /proc/stat
    awk '/^cpu / {print $2 + $3 + $4; exit}' /proc/stat
}

irq_ticks() { # interrupt and softirq ticks: on loopback, much of TCP receive runs here
    awk '/^cpu / {print $7 + $8; exit}' /proc/stat
}

rss_kb() { # VmRSS of the given PIDs, summed
    for p in "$@"; do cat "/proc/$p/status" 2>/dev/null; done |
        awk '/^VmRSS:/ {s += $2} END {print s + 0}'
}

now_ms() { "$PY" -c 'import time; print(int(time.monotonic() * 1000))'; }

calc() { "$PY" -c "print($1)"; }

kv() { # kv FILE KEY: a key=value figure from herald-load's result line
    tr ' ' '\n' < "$1" | sed -n "s/^$2=//p" | tail -n 1
}

rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RAW"; }

CMD_N=0
cmd() { # cmd SCENARIO TEXT: numbers a command for the table
    CMD_N=$((CMD_N + 1))
    printf 'C%d\t%s\t%s\n' "$CMD_N" "$1" "$2" >> "$CMDS"
    LAST_CMD="C$CMD_N"
}

wait_status() { # wait_status FILE WORD SECONDS
    n=0
    while [ "$n" -lt "$(($3 * 10))" ]; do
        grep -q "^$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        n=$((n + 1))
    done
    return 1
}

# HERALD_BENCH_PIN=1 puts the gateway on CPU 0 and everything else on CPU 1.
# (A prefix word, not a function: `$ON_CPU0 cmd &` keeps $! the command's PID.)
ON_CPU0="" ON_CPU1=""
if [ "$PIN" = 1 ]; then ON_CPU0="taskset -c 0" ON_CPU1="taskset -c 1"; fi

# ---- Redis and the gateway -----------------------------------------------------

ulimit -n "$(ulimit -Hn)" 2>/dev/null
ulimit -n 1048576 2>/dev/null || ulimit -n 200000 2>/dev/null || true
NOFILE=$(ulimit -n)
say "open files per process: $NOFILE"

REDIS_PORT=$(free_port)
$ON_CPU1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --maxclients 1000 --daemonize no > "$OUT/redis.log" 2>&1 &
REDIS_PID=$!
started "$REDIS_PID"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
n=0
until redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1; do
    n=$((n + 1))
    if [ "$n" -gt 50 ] || ! alive "$REDIS_PID"; then
        say "redis-server did not start"; tail -5 "$OUT/redis.log" >&2; exit 1
    fi
    sleep 0.1
done

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" > /dev/null 2>&1 ||
    { say "openssl could not make the TLS certificate"; exit 1; }

TOKEN=$("$BUILD/herald-token" --secret "$SECRET" --user bench-user --email bench@example.com \
    --ttl 7200) || { say "herald-token failed"; exit 1; }

# start_gateway NAME WORKERS: sets GW_PID, GW_PORT, GW_TLS_PORT, WORKER_PIDS, GW_CMD.
start_gateway() {
    GW_PORT=$(free_port)
    GW_TLS_PORT=$(free_port)
    GW_CMD="herald-gateway --host 127.0.0.1 --port $GW_PORT --tls-port $GW_TLS_PORT \
--tls-cert cert.pem --tls-key key.pem --redis $REDIS_URL --workers $2 --jwt-secret ... \
--max-connections-per-ip 10000000 --drain-timeout 2 --log-level warn"
    $ON_CPU0 "$GW" --host 127.0.0.1 --port "$GW_PORT" --tls-port "$GW_TLS_PORT" \
        --tls-cert "$OUT/tls/cert.pem" --tls-key "$OUT/tls/key.pem" --redis "$REDIS_URL" \
        --workers "$2" --jwt-secret "$SECRET" --max-connections-per-ip 10000000 \
        --drain-timeout 2 --log-level warn > "$OUT/gateway-$1.log" 2>&1 &
    GW_PID=$!
    started "$GW_PID"
    # Ready: every worker listens on both ports and has its Redis subscriber up
    # (its probe channel is subscribed). The listeners must be ours alone: with
    # SO_REUSEPORT another process could share a port silently.
    n=0
    while :; do
        n=$((n + 1))
        if [ "$n" -gt 100 ] || ! alive "$GW_PID"; then
            say "gateway ($1) did not start"; tail -20 "$OUT/gateway-$1.log" >&2; exit 1
        fi
        sleep 0.1
        WORKER_PIDS=$(children_of "$GW_PID" | tr '\n' ' ')
        [ "$(echo $WORKER_PIDS | wc -w)" -eq "$2" ] || continue
        listeners=$(ss -Hltnp "sport = :$GW_PORT or sport = :$GW_TLS_PORT" 2>/dev/null |
            grep -o 'pid=[0-9]*' | sort -u | sed 's/pid=//')
        [ "$(echo $listeners | wc -w)" -ge "$2" ] || continue
        for l in $listeners; do
            case " $WORKER_PIDS " in
            *" $l "*) ;;
            *) say "port $GW_PORT/$GW_TLS_PORT is shared with pid $l ($(tr '\0' ' ' < /proc/$l/cmdline 2>/dev/null)): not ours"
               exit 1 ;;
            esac
        done
        probes=$(redis-cli -p "$REDIS_PORT" pubsub channels 'herald:__probe__:*' | grep -c . )
        [ "$probes" -ge "$2" ] && break
    done
    say "gateway $1: pid $GW_PID, workers $(echo $WORKER_PIDS), ports $GW_PORT/$GW_TLS_PORT"
}

stop_gateway() {
    stop_pid "$GW_PID" 15
    forget "$GW_PID"
}

# The load generator, in the background: sets LPID.
start_load() { # start_load NAME ARGS...
    name=$1
    shift
    $ON_CPU1 "$LOAD" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" &
    LPID=$!
    started "$LPID"
}

stop_load() {
    stop_pid "$LPID" 20
    forget "$LPID"
}

load_cpu_ticks() { cpu_ticks $(children_of "$LPID"); }

# ---- scenarios -------------------------------------------------------------------

# Idle: N connections, one subscription each (100 channels), pings every 25 s
# (the gateway's default) answered by the clients; RSS and CPU of the gateway.
scenario_idle() { # scenario_idle NAME COUNT TLS(0/1)
    name=$1 count=$2 tls=$3
    # A worker holds at most its open-file limit; SO_REUSEPORT spreads unevenly.
    workers=$(( (count + NOFILE * 3 / 4 - 1) / (NOFILE * 3 / 4) ))
    [ "$workers" -lt "$WORKERS" ] && workers=$WORKERS
    start_gateway "$name" "$workers"
    port=$GW_PORT tlsflag=""
    [ "$tls" = 1 ] && port=$GW_TLS_PORT tlsflag="--tls"
    sleep 1
    rss0=$(rss_kb $WORKER_PIDS)
    args="connect --port $port $tlsflag --connections $count --channels 100 --channel-base apps:idle- --duration $((IDLE_SECONDS + 600)) --concurrency 256 --procs $LOAD_PROCS"
    cmd "$name" "herald-load $args --token \$TOKEN   # gateway: $GW_CMD"
    t0=$(now_ms)
    start_load "$name" $args --token "$TOKEN" --status-file "$OUT/$name.status"
    if ! wait_status "$OUT/$name.status" ready 300; then
        say "$name: connections not ready in 300 s"
    fi
    t1=$(now_ms)
    sleep 3
    rss1=$(rss_kb $WORKER_PIDS)
    c0=$(cpu_ticks $GW_PID $WORKER_PIDS)
    l0=$(load_cpu_ticks)
    b0=$(busy_ticks)
    say "$name: $(cat "$OUT/$name.status" | tail -1); idle for $IDLE_SECONDS s"
    sleep "$IDLE_SECONDS"
    c1=$(cpu_ticks $GW_PID $WORKER_PIDS)
    l1=$(load_cpu_ticks)
    b1=$(busy_ticks)
    rec "$name" other_cpu_s "$(calc "round(($b1 - $b0 - ($c1 - $c0) - ($l1 - $l0)) / $CLK_TCK, 2)")"
    stop_load
    stop_gateway
    est=$(kv "$OUT/$name.out" established)
    sub=$(kv "$OUT/$name.out" subscribed)
    rec "$name" cmd "$LAST_CMD"
    rec "$name" connections "$count"
    rec "$name" workers "$workers"
    rec "$name" established "${est:-0}"
    rec "$name" subscribed "${sub:-0}"
    rec "$name" failed "$(kv "$OUT/$name.out" failed)"
    rec "$name" disconnected "$(kv "$OUT/$name.out" disconnected)"
    rec "$name" pings "$(kv "$OUT/$name.out" pings)"
    rec "$name" first_error "$(kv "$OUT/$name.out" first_error)"
    rec "$name" ramp_s "$(calc "($t1 - $t0) / 1000")"
    rec "$name" rss_before_kb "$rss0"
    rec "$name" rss_after_kb "$rss1"
    if [ "${sub:-0}" -gt 0 ]; then
        rec "$name" rss_per_conn_bytes "$(calc "round(($rss1 - $rss0) * 1024 / $sub)")"
        rec "$name" idle_cpu_pct "$(calc "round(($c1 - $c0) / $CLK_TCK / $IDLE_SECONDS * 100, 3)")"
        rec "$name" idle_cpu_pct_per_10k "$(calc "round(($c1 - $c0) / $CLK_TCK / $IDLE_SECONDS * 100 * 10000 / $sub, 3)")"
    fi
    rec "$name" idle_seconds "$IDLE_SECONDS"
}

# Throughput: subscribers, then a publisher at a fixed rate; latency from the
# embedded timestamp; CPU of the gateway between "all subscribed" and "every
# end marker received".
scenario_publish() { # NAME SUBS CHANNELS RATE
    name=$1 subs=$2 channels=$3 rate=$4
    start_gateway "$name" "$WORKERS"
    args="subscribe --port $GW_PORT --connections $subs --channels $channels --channel-base apps:$name- --duration $((PUBLISH_SECONDS + 300)) --concurrency 256 --procs $LOAD_PROCS"
    cmd "$name" "herald-load $args --token \$TOKEN --csv $name.csv --hist $name.hist   # gateway: $GW_CMD"
    sub_cmd=$LAST_CMD
    start_load "$name" $args --token "$TOKEN" --status-file "$OUT/$name.status" \
        --csv "$OUT/$name.csv" --hist "$OUT/$name.hist"
    wait_status "$OUT/$name.status" ready 120 || say "$name: subscribers not ready in 120 s"
    say "$name: $(tail -1 "$OUT/$name.status"); publishing $rate/s for $PUBLISH_SECONDS s"
    pargs="publish --redis $REDIS_URL --rate $rate --channels $channels --channel-base apps:$name- --duration $PUBLISH_SECONDS"
    cmd "$name" "herald-load $pargs"
    pub_cmd=$LAST_CMD
    c0=$(cpu_ticks $GW_PID $WORKER_PIDS)
    l0=$(load_cpu_ticks)
    r0=$(cpu_ticks "$REDIS_PID")
    b0=$(busy_ticks)
    i0=$(irq_ticks)
    t0=$(now_ms)
    $ON_CPU1 "$LOAD" $pargs > "$OUT/$name.pub.out" 2> "$OUT/$name.pub.err"
    wait_status "$OUT/$name.status" done 60 || say "$name: not every end marker arrived in 60 s"
    t1=$(now_ms)
    c1=$(cpu_ticks $GW_PID $WORKER_PIDS)
    l1=$(load_cpu_ticks)
    r1=$(cpu_ticks "$REDIS_PID")
    b1=$(busy_ticks)
    i1=$(irq_ticks)
    stop_load
    stop_gateway
    o="$OUT/$name.out"
    recv=$(kv "$o" received)
    recv=${recv:-0}
    gw_cpu=$(calc "($c1 - $c0) / $CLK_TCK")
    rec "$name" cmd "$sub_cmd, $pub_cmd"
    rec "$name" subscribers "$subs"
    rec "$name" channels "$channels"
    rec "$name" rate "$rate"
    rec "$name" subscribed "$(kv "$o" subscribed)"
    rec "$name" published "$(kv "$OUT/$name.pub.out" published)"
    rec "$name" publish_seconds "$(kv "$OUT/$name.pub.out" duration_s)"
    rec "$name" publisher_max_lag_ms "$(kv "$OUT/$name.pub.out" max_lag_ms)"
    rec "$name" received "$recv"
    rec "$name" expected "$(calc "$(kv "$OUT/$name.pub.out" published) * $subs // $channels")"
    rec "$name" lost "$(kv "$o" lost)"
    rec "$name" missing_end "$(kv "$o" missing_end)"
    rec "$name" duplicates "$(kv "$o" duplicates)"
    rec "$name" misrouted "$(kv "$o" misrouted)"
    rec "$name" disconnected "$(kv "$o" disconnected)"
    rec "$name" window_s "$(calc "($t1 - $t0) / 1000")"
    rec "$name" gateway_cpu_s "$gw_cpu"
    rec "$name" load_cpu_s "$(calc "($l1 - $l0) / $CLK_TCK")"
    rec "$name" redis_cpu_s "$(calc "($r1 - $r0) / $CLK_TCK")"
    rec "$name" softirq_cpu_s "$(calc "($i1 - $i0) / $CLK_TCK")"
    # Everything else, the publisher included: other users of this machine show here.
    rec "$name" other_cpu_s "$(calc "round(($b1 - $b0 - ($c1 - $c0) - ($l1 - $l0) - ($r1 - $r0)) / $CLK_TCK, 2)")"
    rec "$name" offered_per_s "$((rate * subs / channels))"
    rec "$name" achieved_per_s "$(calc "round($recv / $(kv "$OUT/$name.pub.out" duration_s))")"
    [ "$gw_cpu" != 0.0 ] && rec "$name" deliveries_per_cpu_s "$(calc "round($recv / $gw_cpu)")"
    for q in p50_us p99_us p999_us max_us mean_us; do rec "$name" "$q" "$(kv "$o" $q)"; done
    rec "$name" first_error "$(kv "$o" first_error)"
}

# Churn: open-upgrade-verify(101 + "connected", so the JWT passed)-close.
scenario_churn() { # NAME TLS
    name=$1 tls=$2
    start_gateway "$name" "$WORKERS"
    port=$GW_PORT tlsflag=""
    [ "$tls" = 1 ] && port=$GW_TLS_PORT tlsflag="--tls"
    args="churn --port $port $tlsflag --duration $CHURN_SECONDS --concurrency $CHURN_CONCURRENCY --procs $LOAD_PROCS"
    cmd "$name" "herald-load $args --token \$TOKEN   # gateway: $GW_CMD"
    rec "$name" cmd "$LAST_CMD"
    c0=$(cpu_ticks $GW_PID $WORKER_PIDS)
    b0=$(busy_ticks)
    start_load "$name" $args --token "$TOKEN"
    sleep 0.5
    l0=$(load_cpu_ticks)
    while alive "$LPID"; do
        l1=$(load_cpu_ticks) # the children's time, read while they still exist
        sleep 0.5
    done
    wait "$LPID"
    forget "$LPID"
    c1=$(cpu_ticks $GW_PID $WORKER_PIDS)
    b1=$(busy_ticks)
    rec "$name" load_cpu_s "$(calc "($l1 - $l0) / $CLK_TCK")"
    rec "$name" other_cpu_s "$(calc "round(($b1 - $b0 - ($c1 - $c0) - ($l1 - $l0)) / $CLK_TCK, 2)")"
    stop_gateway
    o="$OUT/$name.out"
    hs=$(kv "$o" handshakes)
    gw_cpu=$(calc "($c1 - $c0) / $CLK_TCK")
    rec "$name" handshakes "${hs:-0}"
    rec "$name" handshakes_per_s "$(kv "$o" handshakes_per_s)"
    rec "$name" failed "$(kv "$o" failed)"
    rec "$name" first_error "$(kv "$o" first_error)"
    rec "$name" gateway_cpu_s "$gw_cpu"
    [ "$gw_cpu" != 0.0 ] && rec "$name" handshakes_per_cpu_s "$(calc "round(${hs:-0} / $gw_cpu)")"
    for q in p50_us p99_us max_us; do rec "$name" "$q" "$(kv "$o" $q)"; done
}

for s in $SCENARIOS; do
    say "scenario $s"
    case $s in
    idle) scenario_idle idle "$IDLE_CONNS" 0 ;;
    idle_wss) scenario_idle idle_wss "$IDLE_WSS_CONNS" 1 ;;
    fanout) scenario_publish fanout "$FANOUT_SUBS" 1 "$FANOUT_RATE" ;;
    many) scenario_publish many "$MANY_SUBS" "$MANY_CHANNELS" "$MANY_RATE" ;;
    churn) scenario_churn churn 0 ;;
    churn_wss) scenario_churn churn_wss 1 ;;
    *) say "unknown scenario $s" ;;
    esac
done

rec run seconds "$(( $(date +%s) - BENCH_START ))"
rec run load_procs "$LOAD_PROCS"
rec run pinned "$PIN"
rec run nofile "$NOFILE"
rec run loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
cleanup
"$PY" "$HERE/report.py" "$OUT"
