#!/bin/sh
# tests/bench/history_cost.sh BUILD_DIR [EVENTS] [BYTES] -- the cost of
# publishing with history against without (README "History").
#
# Starts a private redis-server on a free loopback port, then for each mode
# (history with the default caps, --no-history) pipes EVENTS events of BYTES
# bytes each into one herald-pub on one channel, and prints:
#   - herald-pub's throughput (events/s, wall clock of the whole stream);
#   - Redis CPU per event: used_cpu_sys + used_cpu_user (INFO cpu) after minus
#     before, divided by EVENTS;
#   - INFO commandstats usec_per_call of EVALSHA (history) or PUBLISH.
# The channel has no subscriber, so the figures are the publishing cost alone.
# The redis-server is stopped by PID, also on failure or Ctrl-C.
set -eu

BUILD=${1:?usage: history_cost.sh BUILD_DIR [EVENTS] [BYTES]}
EVENTS=${2:-100000}
BYTES=${3:-100}
PUB="$BUILD/herald-pub"
TMP=$(mktemp -d)
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$TMP/redis.log" &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null; rm -rf "$TMP"' EXIT INT TERM
R="redis-cli -p $PORT"
until $R PING >/dev/null 2>&1; do sleep 0.1; done

# EVENTS lines of exactly BYTES bytes: {"seq":N,"pad":"xxx..."}
/usr/bin/python3 - "$EVENTS" "$BYTES" > "$TMP/events" <<'PYEOF'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
for i in range(n):
    head = '{"seq":%d,"pad":"' % i
    out.write(head + "x" * max(0, size - len(head) - 2) + '"}\n')
PYEOF

cpu() { $R INFO cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'; }

run() { # mode, command counted in commandstats, herald-pub options...
    mode=$1; command=$2; shift 2
    $R CONFIG RESETSTAT >/dev/null
    before=$(cpu)
    start=$(date +%s.%N)
    "$PUB" --redis "redis://127.0.0.1:$PORT" "$@" bench:cost < "$TMP/events" > "$TMP/offsets"
    end=$(date +%s.%N)
    after=$(cpu)
    stat=$($R INFO commandstats | tr -d '\r' | grep "^cmdstat_$command:" | tr ':,' '\n\n')
    usec=$(echo "$stat" | sed -n 's/^usec_per_call=//p')
    calls=$(echo "$stat" | sed -n 's/^calls=//p')
    awk -v m="$mode" -v n="$EVENTS" -v s="$start" -v e="$end" -v b="$before" -v a="$after" \
        -v u="$usec" -v c="$calls" -v cmd="$command" -v o="$(wc -l < "$TMP/offsets")" 'BEGIN {
        printf "%-11s %8d events  %8.0f events/s  Redis CPU %6.2f us/event  %s usec_per_call %6.2f (%d calls)  offsets printed %d\n",
               m, n, n / (e - s), (a - b) * 1e6 / n, cmd, u, c, o }'
}

echo "herald-pub, $EVENTS events of $BYTES bytes, one channel, Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
for round in 1 2; do
    run history evalsha
    run no-history publish --no-history
    $R DEL '{herald:bench:cost}:history' '{herald:bench:cost}:meta' >/dev/null
done
run history-again evalsha  # on a full stream: every XADD also trims
echo "stream length after the last run: $($R XLEN '{herald:bench:cost}:history') (cap 1000, approximate)"
