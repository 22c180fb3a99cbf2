#!/bin/sh
# `make run`: a local Redis and one gateway in the foreground, with a dev admin
# token printed. Ctrl-C stops everything this script started (by PID).
#   HERALD_PORT (8888)  HERALD_REDIS_PORT (6390)  PUBLISHERS=0 for no live demo traffic
set -eu
BUILD=${1:-build}
PORT=${HERALD_PORT:-8888}
REDIS_PORT=${HERALD_REDIS_PORT:-6390}
RUN_DIR="$BUILD/run"
mkdir -p "$RUN_DIR"

# A dev secret kept between runs, so tokens stay valid across restarts.
if [ ! -s "$RUN_DIR/dev-secret" ]; then
    openssl rand -hex 32 > "$RUN_DIR/dev-secret"
fi
HERALD_JWT_SECRET=$(cat "$RUN_DIR/dev-secret")
export HERALD_JWT_SECRET

pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    for pid in $pids; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "using the Redis already running on port $REDIS_PORT"
else
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no > "$RUN_DIR/redis.log" 2>&1 &
    pids="$pids $!"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

TOKEN=$("$BUILD/herald-token" --user dev-admin --email admin@example.com --role admin --ttl 86400)

if [ "${PUBLISHERS:-1}" = 1 ]; then
    "$BUILD/herald-publisher" --redis "$REDIS_URL" --kind all --rate 2 > "$RUN_DIR/publisher.log" 2>&1 &
    pids="$pids $!"
fi

cat <<MSG

  Herald is starting on port $PORT (Redis on $REDIS_PORT).

  Dashboard (open in a browser; live demo traffic from the publishers):
    http://127.0.0.1:$PORT/?token=$TOKEN

  WebSocket URL (admin dev token, valid 24 h):
    ws://127.0.0.1:$PORT/ws?token=$TOKEN

  Try it:   /usr/bin/python3 -m websockets 'ws://127.0.0.1:$PORT/ws?token=$TOKEN'
            then send {"type":"subscribe","channel":"apps:created"}
  Publish:  $BUILD/herald-pub --redis $REDIS_URL apps:created '{"id":"a1","name":"my-app"}'

  Ctrl-C stops the gateway and the Redis started here.

MSG
"$BUILD/herald-gateway" --port "$PORT" --redis "$REDIS_URL" --workers 1 &
gw=$!
pids="$gw $pids"
wait "$gw"
