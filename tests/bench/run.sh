#!/bin/sh
# tests/bench/run.sh BUILD_DIR -- Herald side by side with nginx-nchan (`make bench`).
#
# In one run on this machine: a syscall-floor calibration (bench-floor), then
# each scenario twice, once against Herald (its own redis-server, published by
# Redis PUBLISH) and once against nginx with nchan (Redis storage, its own
# redis-server, published by HTTP POST /pub/<channel>), with the same load
# generator (build/herald-load) and the same 100-byte events. Reads CPU time
# and memory from /proc, counts the servers' syscalls with perf stat, prints a
# markdown table with the Herald / nchan ratios and the targets of issue 10, and
# writes BUILD_DIR/bench/results.md (and bench-latency.svg). Everything it
# starts is stopped by PID, also on failure or Ctrl-C.
#
# Scenarios (HERALD_BENCH_SCENARIOS, default "floor idle fanout fanout100 many many1k"):
#   floor      1,000 loopback TCP connections, 200,000 writes of 150 bytes (run
#              again after the other scenarios; their ratio uses the mean), and
#              3 s of the same paced at MANY_RATE writes/s in 1 ms ticks (floor_paced)
#   idle       idle subscribers (ws on both servers, and wss on Herald)
#   fanout     1 channel x FANOUT_SUBS subscribers x FANOUT_RATE events/s
#   fanout100  the same at FANOUT100_RATE events/s
#   many       MANY_CHANNELS channels x 1 subscriber x MANY_RATE events/s
#   many1k     the same at MANY1K_RATE events/s
#   churn, churn_wss   Herald only: connect-upgrade-JWT-close cycles (not by default)
#
# Sizes (environment; the defaults are issue 10's, about 10 minutes in all;
# HERALD_BENCH_QUICK=1 gives smaller ones, about 3 minutes, for iterating):
#   HERALD_BENCH_SERVERS          "herald nchan"
#   HERALD_BENCH_WORKERS          2       Herald workers = nginx worker processes
#   HERALD_BENCH_IDLE_CONNS       10000   (quick 2000)  idle ws connections per server
#   HERALD_BENCH_IDLE_WSS_CONNS   10000   (quick 1000)  idle wss connections (Herald)
#   HERALD_BENCH_IDLE_SECONDS     30      (quick 5)     idle CPU window; >= 26 s covers a
#                                                       ping (25 s) to every connection
#   HERALD_BENCH_FANOUT_SUBS      1000
#   HERALD_BENCH_FANOUT_RATE      1000    events/s (fanout)
#   HERALD_BENCH_FANOUT100_RATE   100     events/s (fanout100)
#   HERALD_BENCH_MANY_CHANNELS    10000   (quick 2000)  one subscriber each
#   HERALD_BENCH_MANY_RATE        10000   (quick 2000)  events/s (many)
#   HERALD_BENCH_MANY1K_RATE      1000    (quick 200)   events/s (many1k)
#   HERALD_BENCH_PUBLISH_SECONDS  20      (quick 5)     publishing time per scenario
#   HERALD_BENCH_DRAIN_SECONDS    20      (quick 10)    longest wait for a backlog to drain
#   HERALD_BENCH_SIZE             100     bytes of each event's payload
#   HERALD_BENCH_NCHAN_CONNS      16      keep-alive HTTP connections publishing to nchan
#   HERALD_BENCH_NCHAN_PIPELINE   32      requests in flight per connection
#   HERALD_BENCH_FLOOR_CONNS      1000
#   HERALD_BENCH_FLOOR_WRITES     200000
#   HERALD_BENCH_PROFILE          0       1: one more Herald "many" run under
#                                         perf record -e cpu-clock -g (not measured);
#                                         the top symbols go to bench/profile-many.txt
#   HERALD_BENCH_PIN              0       1: servers on CPU 0, everything else on CPU 1
#   HERALD_BENCH_CHURN_SECONDS    15      HERALD_BENCH_CHURN_CONCURRENCY 64
set -u

BUILD=${1:?usage: run.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$BUILD/bench"
LOAD="$BUILD/herald-load"
FLOOR="$BUILD/bench-floor"
GW="$BUILD/herald-gateway"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
NGINX=${HERALD_BENCH_NGINX:-/usr/sbin/nginx}
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so

QUICK=${HERALD_BENCH_QUICK:-0}
q() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; } # q FULL QUICK

SCENARIOS=${HERALD_BENCH_SCENARIOS:-"floor idle fanout fanout100 many many1k"}
SERVERS=${HERALD_BENCH_SERVERS:-"herald nchan"}
WORKERS=${HERALD_BENCH_WORKERS:-2}
IDLE_CONNS=${HERALD_BENCH_IDLE_CONNS:-$(q 10000 2000)}
IDLE_WSS_CONNS=${HERALD_BENCH_IDLE_WSS_CONNS:-$(q 10000 1000)}
IDLE_SECONDS=${HERALD_BENCH_IDLE_SECONDS:-$(q 30 5)}
FANOUT_SUBS=${HERALD_BENCH_FANOUT_SUBS:-1000}
FANOUT_RATE=${HERALD_BENCH_FANOUT_RATE:-1000}
FANOUT100_RATE=${HERALD_BENCH_FANOUT100_RATE:-100}
MANY_CHANNELS=${HERALD_BENCH_MANY_CHANNELS:-$(q 10000 2000)}
MANY_RATE=${HERALD_BENCH_MANY_RATE:-$(q 10000 2000)}
MANY1K_RATE=${HERALD_BENCH_MANY1K_RATE:-$(q 1000 200)}
PUBLISH_SECONDS=${HERALD_BENCH_PUBLISH_SECONDS:-$(q 20 5)}
DRAIN_SECONDS=${HERALD_BENCH_DRAIN_SECONDS:-$(q 20 10)}
SIZE=${HERALD_BENCH_SIZE:-100}
NCHAN_CONNS=${HERALD_BENCH_NCHAN_CONNS:-16}
NCHAN_PIPELINE=${HERALD_BENCH_NCHAN_PIPELINE:-32}
FLOOR_CONNS=${HERALD_BENCH_FLOOR_CONNS:-1000}
FLOOR_WRITES=${HERALD_BENCH_FLOOR_WRITES:-200000}
PROFILE=${HERALD_BENCH_PROFILE:-0}
PIN=${HERALD_BENCH_PIN:-0}
CHURN_SECONDS=${HERALD_BENCH_CHURN_SECONDS:-15}
CHURN_CONCURRENCY=${HERALD_BENCH_CHURN_CONCURRENCY:-64}
LOAD_PROCS=1

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

alive() { # a zombie (exited, not yet waited for) is not alive
    kill -0 "$1" 2>/dev/null && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}

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

pss_kb() { # proportional set size of the given PIDs, summed (shared pages counted once)
    for p in "$@"; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done |
        awk '/^Pss:/ {s += $2} END {print s + 0}'
}

# perf stat counting the syscalls of the given PIDs, in the background: sets PERF_PID.
# Stopped with SIGINT by perf_stop, which prints the count (empty when perf failed).
perf_start() { # perf_start FILE PID...
    f=$1
    shift
    PERF_PID=""
    command -v perf > /dev/null 2>&1 || return 0
    perf stat -e raw_syscalls:sys_enter -x, -o "$f" -p "$(echo "$@" | tr ' ' ',')" \
        > /dev/null 2>&1 &
    PERF_PID=$!
    started "$PERF_PID"
    sleep 0.3
}

perf_stop() { # perf_stop FILE
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null
        n=0
        while alive "$PERF_PID" && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
        stop_pid "$PERF_PID" 2
        forget "$PERF_PID"
    fi
    awk -F, '/raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ {print $1}' "$1" 2>/dev/null
}

# HERALD_BENCH_PIN=1 puts the servers on CPU 0 and everything else on CPU 1.
# (A prefix word, not a function: `$ON_CPU0 cmd &` keeps $! the command's PID.)
ON_CPU0="" ON_CPU1=""
if [ "$PIN" = 1 ]; then ON_CPU0="taskset -c 0" ON_CPU1="taskset -c 1"; fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null
ulimit -n 1048576 2>/dev/null || ulimit -n 200000 2>/dev/null || true
NOFILE=$(ulimit -n)
say "open files per process: $NOFILE; quick mode: $QUICK; servers: $SERVERS; workers: $WORKERS"

# ---- the two Redis servers: one for Herald's bus, one for nchan's storage ------

start_redis() { # start_redis NAME: sets REDIS_PORT_OUT, REDIS_PID_OUT
    port=$(free_port)
    $ON_CPU1 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --maxclients 1000 --daemonize no > "$OUT/redis-$1.log" 2>&1 &
    pid=$!
    started "$pid"
    n=0
    until redis-cli -p "$port" ping > /dev/null 2>&1; do
        n=$((n + 1))
        if [ "$n" -gt 50 ] || ! alive "$pid"; then
            say "redis-server ($1) did not start"; tail -5 "$OUT/redis-$1.log" >&2; exit 1
        fi
        sleep 0.1
    done
    REDIS_PORT_OUT=$port REDIS_PID_OUT=$pid
}

start_redis herald
REDIS_PORT=$REDIS_PORT_OUT REDIS_PID=$REDIS_PID_OUT
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
case " $SERVERS " in
*" nchan "*)
    for f in "$NGINX" "$NCHAN_SO"; do
        [ -e "$f" ] || { say "$f is missing: install nginx and libnginx-mod-nchan"; exit 1; }
    done
    start_redis nchan
    NREDIS_PORT=$REDIS_PORT_OUT NREDIS_PID=$REDIS_PID_OUT ;;
esac

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" > /dev/null 2>&1 ||
    { say "openssl could not make the TLS certificate"; exit 1; }

TOKEN=$("$BUILD/herald-token" --secret "$SECRET" --user bench-user --email bench@example.com \
    --ttl 7200) || { say "herald-token failed"; exit 1; }

# Listeners on PORT must belong to PIDS alone (with SO_REUSEPORT a second
# server could share a port silently). Prints the count of our listeners.
check_listeners() { # check_listeners "PORTS-FILTER" "PIDS"
    listeners=$(ss -Hltnp "$1" 2>/dev/null | grep -o 'pid=[0-9]*' | sort -u | sed 's/pid=//')
    for l in $listeners; do
        case " $2 " in
        *" $l "*) ;;
        *) say "$1 is shared with pid $l ($(tr '\0' ' ' < /proc/$l/cmdline 2>/dev/null)): not ours"
           exit 1 ;;
        esac
    done
    echo $listeners | wc -w
}

# start_herald NAME WORKERS: sets SRV_PID, SRV_PIDS (supervisor + workers),
# SRV_WORKERS, SRV_PORT, SRV_TLS_PORT, SRV_REDIS_PID, SRV_CMD.
start_herald() {
    SRV_PORT=$(free_port)
    SRV_TLS_PORT=$(free_port)
    SRV_REDIS_PID=$REDIS_PID
    SRV_CMD="herald-gateway --host 127.0.0.1 --port $SRV_PORT --tls-port $SRV_TLS_PORT \
--tls-cert cert.pem --tls-key key.pem --redis $REDIS_URL --workers $2 --jwt-secret ... \
--max-connections-per-ip 10000000 --drain-timeout 2 --admin-listen off --log-level warn"
    # No operator listener: its fixed default port may be taken by another gateway here.
    $ON_CPU0 "$GW" --host 127.0.0.1 --port "$SRV_PORT" --tls-port "$SRV_TLS_PORT" \
        --tls-cert "$OUT/tls/cert.pem" --tls-key "$OUT/tls/key.pem" --redis "$REDIS_URL" \
        --workers "$2" --jwt-secret "$SECRET" --max-connections-per-ip 10000000 \
        --drain-timeout 2 --admin-listen off --log-level warn > "$OUT/gateway-$1.log" 2>&1 &
    SRV_PID=$!
    started "$SRV_PID"
    # Ready: every worker listens on both ports and has its Redis subscriber up
    # (its probe channel is subscribed).
    n=0
    while :; do
        n=$((n + 1))
        if [ "$n" -gt 100 ] || ! alive "$SRV_PID"; then
            say "gateway ($1) did not start"; tail -20 "$OUT/gateway-$1.log" >&2; exit 1
        fi
        sleep 0.1
        SRV_WORKERS=$(children_of "$SRV_PID" | tr '\n' ' ')
        [ "$(echo $SRV_WORKERS | wc -w)" -eq "$2" ] || continue
        [ "$(check_listeners "sport = :$SRV_PORT or sport = :$SRV_TLS_PORT" "$SRV_WORKERS")" -ge "$2" ] ||
            continue
        probes=$(redis-cli -p "$REDIS_PORT" pubsub channels 'herald:__probe__:*' | grep -c . )
        [ "$probes" -ge "$2" ] && break
    done
    SRV_PIDS="$SRV_PID $SRV_WORKERS"
    say "herald $1: pid $SRV_PID, workers $(echo $SRV_WORKERS), ports $SRV_PORT/$SRV_TLS_PORT"
}

# start_nchan NAME WORKERS: the same for nginx with nchan, Redis storage.
start_nchan() {
    SRV_PORT=$(free_port)
    SRV_TLS_PORT=""
    SRV_REDIS_PID=$NREDIS_PID
    redis-cli -p "$NREDIS_PORT" flushall > /dev/null # every scenario starts with empty storage
    dir="$OUT/nginx-$1"
    mkdir -p "$dir/tmp"
    conns=$((NOFILE - 200))
    cat > "$dir/nginx.conf" <<CONF
# Generated by tests/bench/run.sh: nchan with Redis storage, as many workers as Herald has.
load_module $NCHAN_SO;
worker_processes $2;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $conns; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    upstream bench_redis { nchan_redis_server redis://127.0.0.1:$NREDIS_PORT; }
    server {
        listen 127.0.0.1:$SRV_PORT reuseport backlog=4096;
        location ~ ^/sub/([A-Za-z0-9_-]+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_redis_pass bench_redis;
            nchan_subscriber_first_message newest;
            nchan_websocket_ping_interval 25;
        }
        location ~ ^/pub/([A-Za-z0-9_-]+)\$ {
            allow 127.0.0.1;
            deny all;
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_redis_pass bench_redis;
        }
    }
}
CONF
    SRV_CMD="nginx -c nginx-$1/nginx.conf (nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null), $2 workers, Redis storage)"
    $ON_CPU0 "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' > "$dir/stderr.log" 2>&1 &
    SRV_PID=$!
    started "$SRV_PID"
    n=0
    while :; do
        n=$((n + 1))
        if [ "$n" -gt 100 ] || ! alive "$SRV_PID"; then
            say "nginx ($1) did not start"; tail -20 "$dir/stderr.log" "$dir/error.log" >&2; exit 1
        fi
        sleep 0.1
        SRV_WORKERS=$(children_of "$SRV_PID" | tr '\n' ' ')
        [ "$(echo $SRV_WORKERS | wc -w)" -eq "$2" ] || continue
        [ "$(check_listeners "sport = :$SRV_PORT" "$SRV_PID $SRV_WORKERS")" -ge 1 ] || continue
        # Ready when a publish is stored (nchan's Redis connection is up).
        code=$("$PY" -c "
import urllib.request
try:
    r = urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$SRV_PORT/pub/probe', data=b'{}'), timeout=2)
    print(r.status)
except Exception as e:
    print(getattr(e, 'code', 0))" 2>/dev/null)
        case $code in 201|202) break ;; esac
    done
    SRV_PIDS="$SRV_PID $SRV_WORKERS"
    say "nchan $1: pid $SRV_PID, workers $(echo $SRV_WORKERS), port $SRV_PORT"
}

start_server() { # start_server SERVER NAME WORKERS
    case $1 in
    herald) start_herald "$2" "$3" ;;
    nchan) start_nchan "$2" "$3" ;;
    esac
}

stop_server() {
    stop_pid "$SRV_PID" 15
    forget "$SRV_PID"
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

# Subscriber and publisher arguments per server.
sub_args() { # sub_args SERVER: the target and port (and token) of a client
    case $1 in
    herald) echo "--target herald --port $SRV_PORT" ;;
    nchan) echo "--target nchan --port $SRV_PORT" ;;
    esac
}

channel_base() { # channel_base SERVER SCENARIO
    case $1 in
    herald) echo "apps:$2-" ;;
    nchan) echo "$2-" ;; # nchan's location takes [A-Za-z0-9_-]
    esac
}

# ---- scenarios -------------------------------------------------------------------

scenario_floor() { # scenario_floor NAME [ARGS] (floor at the start, floor_end at the end)
    args="--connections $FLOOR_CONNS --writes $FLOOR_WRITES --size 150${2:+ $2}"
    cmd "$1" "bench-floor $args"
    rec "$1" cmd "$LAST_CMD"
    $ON_CPU1 "$FLOOR" $args > "$OUT/$1.out" 2> "$OUT/$1.err" ||
        { say "floor failed: $(cat "$OUT/$1.err")"; return; }
    for k in connections writes size rate wall_s writer_cpu_s write_us reader_cpu_s read_us_per_write; do
        rec "$1" "$k" "$(kv "$OUT/$1.out" $k)"
    done
    say "$1: $(cat "$OUT/$1.out")"
}

# Idle: N connections, one subscription each (100 channels), pings every 25 s
# (Herald's default; nchan is given the same interval), answered by the clients;
# memory (PSS) and CPU of the server's processes.
scenario_idle() { # scenario_idle SERVER NAME COUNT TLS(0/1)
    srv=$1 name=$2 count=$3 tls=$4
    # A process holds at most its open-file limit; SO_REUSEPORT spreads unevenly.
    workers=$(( (count + NOFILE * 3 / 4 - 1) / (NOFILE * 3 / 4) ))
    [ "$workers" -lt "$WORKERS" ] && workers=$WORKERS
    start_server "$srv" "$name" "$workers"
    port=$SRV_PORT tlsflag=""
    [ "$tls" = 1 ] && port=$SRV_TLS_PORT tlsflag="--tls"
    sleep 1
    mem0=$(pss_kb $SRV_PIDS)
    args="connect --target $srv --port $port $tlsflag --connections $count --channels 100 --channel-base $(channel_base "$srv" "$name") --duration $((IDLE_SECONDS + 600)) --concurrency 256 --procs $LOAD_PROCS"
    tokarg=""
    [ "$srv" = herald ] && tokarg="--token \$TOKEN"
    cmd "$name" "herald-load $args $tokarg   # server: $SRV_CMD"
    t0=$(now_ms)
    if [ "$srv" = herald ]; then
        start_load "$name" $args --token "$TOKEN" --status-file "$OUT/$name.status"
    else
        start_load "$name" $args --status-file "$OUT/$name.status"
    fi
    wait_status "$OUT/$name.status" ready 300 || say "$name: connections not ready in 300 s"
    t1=$(now_ms)
    sleep 3
    mem1=$(pss_kb $SRV_PIDS)
    c0=$(cpu_ticks $SRV_PIDS)
    l0=$(load_cpu_ticks)
    say "$name: $(tail -1 "$OUT/$name.status"); idle for $IDLE_SECONDS s"
    sleep "$IDLE_SECONDS"
    c1=$(cpu_ticks $SRV_PIDS)
    l1=$(load_cpu_ticks)
    stop_load
    stop_server
    o="$OUT/$name.out"
    sub=$(kv "$o" subscribed)
    rec "$name" server "$srv"
    rec "$name" cmd "$LAST_CMD"
    rec "$name" connections "$count"
    rec "$name" workers "$workers"
    rec "$name" tls "$tls"
    rec "$name" established "$(kv "$o" established)"
    rec "$name" subscribed "${sub:-0}"
    rec "$name" failed "$(kv "$o" failed)"
    rec "$name" disconnected "$(kv "$o" disconnected)"
    rec "$name" pings "$(kv "$o" pings)"
    rec "$name" first_error "$(kv "$o" first_error)"
    rec "$name" ramp_s "$(calc "($t1 - $t0) / 1000")"
    rec "$name" pss_before_kb "$mem0"
    rec "$name" pss_after_kb "$mem1"
    rec "$name" load_cpu_s "$(calc "($l1 - $l0) / $CLK_TCK")"
    if [ "${sub:-0}" -gt 0 ]; then
        rec "$name" kib_per_conn "$(calc "round(($mem1 - $mem0) / $sub, 3)")"
        rec "$name" idle_cpu_pct_per_10k "$(calc "round(($c1 - $c0) / $CLK_TCK / $IDLE_SECONDS * 100 * 10000 / $sub, 3)")"
    fi
    rec "$name" idle_seconds "$IDLE_SECONDS"
}

# Throughput: subscribers, then a publisher at a fixed rate; latency from the
# timestamp in each payload; CPU of the server between the publisher's start
# and "every end marker received" (or DRAIN_SECONDS after publishing ended).
scenario_publish() { # SERVER NAME SUBS CHANNELS RATE [PROFILE]
    srv=$1 name=$2 subs=$3 channels=$4 rate=$5 profile=${6:-0}
    scen=${name#*_}
    start_server "$srv" "$name" "$WORKERS"
    base=$(channel_base "$srv" "$scen")
    args="subscribe $(sub_args "$srv") --connections $subs --channels $channels --channel-base $base --duration $((PUBLISH_SECONDS + DRAIN_SECONDS + 300)) --concurrency 256 --procs $LOAD_PROCS"
    tokarg=""
    [ "$srv" = herald ] && tokarg="--token \$TOKEN"
    cmd "$name" "herald-load $args $tokarg --csv $name.csv --hist $name.hist   # server: $SRV_CMD"
    sub_cmd=$LAST_CMD
    if [ "$srv" = herald ]; then
        start_load "$name" $args --token "$TOKEN" --status-file "$OUT/$name.status" \
            --csv "$OUT/$name.csv" --hist "$OUT/$name.hist"
    else
        start_load "$name" $args --status-file "$OUT/$name.status" \
            --csv "$OUT/$name.csv" --hist "$OUT/$name.hist"
    fi
    wait_status "$OUT/$name.status" ready 180 || say "$name: subscribers not ready in 180 s"
    sleep 1 # nchan subscribes to Redis after its 101; both servers get the same pause
    say "$name: $(tail -1 "$OUT/$name.status"); publishing $rate/s for $PUBLISH_SECONDS s"
    case $srv in
    herald) pargs="publish --redis $REDIS_URL --rate $rate --size $SIZE --channels $channels --channel-base $base --duration $PUBLISH_SECONDS" ;;
    nchan) pargs="publish --target nchan --port $SRV_PORT --http-conns $NCHAN_CONNS --pipeline $NCHAN_PIPELINE --rate $rate --size $SIZE --channels $channels --channel-base $base --duration $PUBLISH_SECONDS" ;;
    esac
    cmd "$name" "herald-load $pargs"
    pub_cmd=$LAST_CMD
    if [ "$profile" = 1 ]; then
        cmd "$name" "perf record -e cpu-clock -g -p <worker pids> (while publishing); perf report --stdio --no-children --sort symbol -g none"
        perf record -e cpu-clock -g -o "$OUT/perf-$name.data" \
            -p "$(echo $SRV_WORKERS | tr ' ' ',')" > "$OUT/perf-$name.log" 2>&1 &
        PERF_PID=$!
        started "$PERF_PID"
        sleep 0.3
    else
        perf_start "$OUT/$name.perf" $SRV_PIDS
    fi
    c0=$(cpu_ticks $SRV_PIDS)
    l0=$(load_cpu_ticks)
    r0=$(cpu_ticks "$SRV_REDIS_PID")
    b0=$(busy_ticks)
    i0=$(irq_ticks)
    t0=$(now_ms)
    $ON_CPU1 "$LOAD" $pargs > "$OUT/$name.pub.out" 2> "$OUT/$name.pub.err" ||
        say "$name: the publisher failed: $(tail -2 "$OUT/$name.pub.err")"
    tp=$(now_ms)
    wait_status "$OUT/$name.status" done "$DRAIN_SECONDS" ||
        say "$name: not every end marker arrived within $DRAIN_SECONDS s after publishing"
    t1=$(now_ms)
    c1=$(cpu_ticks $SRV_PIDS)
    l1=$(load_cpu_ticks)
    r1=$(cpu_ticks "$SRV_REDIS_PID")
    b1=$(busy_ticks)
    i1=$(irq_ticks)
    if [ "$profile" = 1 ]; then
        kill -INT "$PERF_PID" 2>/dev/null
        n=0
        while alive "$PERF_PID" && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
        stop_pid "$PERF_PID" 5
        forget "$PERF_PID"
        syscalls=""
    else
        syscalls=$(perf_stop "$OUT/$name.perf")
    fi
    stop_load
    stop_server
    o="$OUT/$name.out"
    p="$OUT/$name.pub.out"
    recv=$(kv "$o" received)
    recv=${recv:-0}
    published=$(kv "$p" published)
    pub_s=$(kv "$p" duration_s)
    srv_cpu=$(calc "($c1 - $c0) / $CLK_TCK")
    window=$(calc "($t1 - $t0) / 1000")
    drain=$(calc "($t1 - $tp) / 1000")
    rec "$name" server "$srv"
    rec "$name" cmd "$sub_cmd, $pub_cmd"
    rec "$name" subscribers "$subs"
    rec "$name" channels "$channels"
    rec "$name" rate "$rate"
    rec "$name" subscribed "$(kv "$o" subscribed)"
    rec "$name" published "${published:-0}"
    rec "$name" publish_seconds "${pub_s:-0}"
    rec "$name" publisher_max_lag_ms "$(kv "$p" max_lag_ms)"
    rec "$name" publisher_cpu_s "$(kv "$p" cpu_s)"
    rec "$name" publisher_errors "$(kv "$p" errors)"
    rec "$name" received "$recv"
    rec "$name" expected "$(calc "${published:-0} * $subs // $channels")"
    rec "$name" lost "$(kv "$o" lost)"
    rec "$name" missing_end "$(kv "$o" missing_end)"
    rec "$name" duplicates "$(kv "$o" duplicates)"
    rec "$name" reordered "$(kv "$o" reordered)"
    rec "$name" late_unchecked "$(kv "$o" late_unchecked)"
    le=$(kv "$o" last_event_ns) ps=$(kv "$p" start_ns)
    [ -n "$le" ] && [ -n "$ps" ] && [ "$le" != 0 ] &&
        rec "$name" last_event_s "$(calc "round(($le - $ps) / 1e9, 3)")"
    rec "$name" misrouted "$(kv "$o" misrouted)"
    rec "$name" disconnected "$(kv "$o" disconnected)"
    rec "$name" window_s "$window"
    rec "$name" drain_s "$drain"
    rec "$name" server_cpu_s "$srv_cpu"
    rec "$name" load_cpu_s "$(calc "($l1 - $l0) / $CLK_TCK")"
    rec "$name" redis_cpu_s "$(calc "($r1 - $r0) / $CLK_TCK")"
    rec "$name" softirq_cpu_s "$(calc "($i1 - $i0) / $CLK_TCK")"
    # Everything else, the publisher included: other users of this machine show here.
    rec "$name" other_cpu_s "$(calc "round(($b1 - $b0 - ($c1 - $c0) - ($l1 - $l0) - ($r1 - $r0)) / $CLK_TCK, 2)")"
    rec "$name" offered_per_s "$((rate * subs / channels))"
    rec "$name" syscalls "$syscalls"
    for q in p50_us p99_us p999_us max_us mean_us; do rec "$name" "$q" "$(kv "$o" $q)"; done
    rec "$name" first_error "$(kv "$o" first_error)"
    if [ "$profile" = 1 ] && [ -s "$OUT/perf-$name.data" ]; then
        perf report -i "$OUT/perf-$name.data" --stdio --no-children --sort symbol \
            --percent-limit 0.7 -g none 2> /dev/null | grep -v '^$' > "$OUT/profile-many.txt"
        perf report -i "$OUT/perf-$name.data" --stdio --no-children --sort dso \
            -g none 2> /dev/null | grep -v '^$' > "$OUT/profile-many-dso.txt"
        perf report -i "$OUT/perf-$name.data" --stdio --children --sort symbol \
            --percent-limit 3 -g none 2> /dev/null | grep -v '^$' > "$OUT/profile-many-children.txt"
        say "profile: $OUT/profile-many.txt"
    fi
}

# Churn (Herald only): open-upgrade-verify(101 + "connected", so the JWT passed)-close.
scenario_churn() { # NAME TLS
    name=$1 tls=$2
    start_herald "$name" "$WORKERS"
    port=$SRV_PORT tlsflag=""
    [ "$tls" = 1 ] && port=$SRV_TLS_PORT tlsflag="--tls"
    args="churn --port $port $tlsflag --duration $CHURN_SECONDS --concurrency $CHURN_CONCURRENCY --procs $LOAD_PROCS"
    cmd "$name" "herald-load $args --token \$TOKEN   # server: $SRV_CMD"
    rec "$name" server herald
    rec "$name" cmd "$LAST_CMD"
    c0=$(cpu_ticks $SRV_PIDS)
    start_load "$name" $args --token "$TOKEN"
    sleep 0.5
    l0=$(load_cpu_ticks)
    l1=$l0
    while alive "$LPID"; do
        l1=$(load_cpu_ticks) # the children's time, read while they still exist
        sleep 0.5
    done
    wait "$LPID"
    forget "$LPID"
    c1=$(cpu_ticks $SRV_PIDS)
    rec "$name" load_cpu_s "$(calc "($l1 - $l0) / $CLK_TCK")"
    stop_server
    o="$OUT/$name.out"
    hs=$(kv "$o" handshakes)
    srv_cpu=$(calc "($c1 - $c0) / $CLK_TCK")
    rec "$name" handshakes "${hs:-0}"
    rec "$name" handshakes_per_s "$(kv "$o" handshakes_per_s)"
    rec "$name" failed "$(kv "$o" failed)"
    rec "$name" server_cpu_s "$srv_cpu"
    for q in p50_us p99_us max_us; do rec "$name" "$q" "$(kv "$o" $q)"; done
}

has_server() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }

for s in $SCENARIOS; do
    say "scenario $s"
    case $s in
    floor)
        scenario_floor floor
        # The same writes paced at the many-channel rate (reader and writer sleep
        # between 1 ms ticks): what a delivery costs at that rate, wake-ups included.
        FLOOR_WRITES=$((MANY_RATE * 3)) scenario_floor floor_paced "--rate $MANY_RATE" ;;
    idle)
        for srv in $SERVERS; do scenario_idle "$srv" "${srv}_idle" "$IDLE_CONNS" 0; done
        has_server herald && scenario_idle herald herald_idle_wss "$IDLE_WSS_CONNS" 1 ;;
    fanout | fanout100 | many | many1k)
        case $s in
        fanout) set -- "$FANOUT_SUBS" 1 "$FANOUT_RATE" ;;
        fanout100) set -- "$FANOUT_SUBS" 1 "$FANOUT100_RATE" ;;
        many) set -- "$MANY_CHANNELS" "$MANY_CHANNELS" "$MANY_RATE" ;;
        many1k) set -- "$MANY_CHANNELS" "$MANY_CHANNELS" "$MANY1K_RATE" ;;
        esac
        for srv in $SERVERS; do scenario_publish "$srv" "${srv}_$s" "$@"; done ;;
    churn) scenario_churn herald_churn 0 ;;
    churn_wss) scenario_churn herald_churn_wss 1 ;;
    *) say "unknown scenario $s" ;;
    esac
done

# The floor again, so that a drift of the machine's load during the run shows.
case " $SCENARIOS " in *" floor "*) say "scenario floor (again)"; scenario_floor floor_end ;; esac

if [ "$PROFILE" = 1 ] && has_server herald; then
    say "profile: Herald, many channels, under perf record (not measured)"
    scenario_publish herald herald_profile_many "$MANY_CHANNELS" "$MANY_CHANNELS" "$MANY_RATE" 1
fi

rec run seconds "$(( $(date +%s) - BENCH_START ))"
rec run quick "$QUICK"
rec run workers "$WORKERS"
rec run pinned "$PIN"
rec run nofile "$NOFILE"
rec run size "$SIZE"
rec run publish_seconds "$PUBLISH_SECONDS"
rec run nchan_version "$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
rec run nginx_version "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
rec run loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
cleanup
"$PY" "$HERE/report.py" "$OUT"
# History and recovery (tests/bench/recovery.py: its own Redis and gateways)
[ "${HERALD_BENCH_RECOVERY:-1}" = 0 ] || "$PY" "$HERE/recovery.py" "$BUILD" --json "$OUT/recovery.json"
