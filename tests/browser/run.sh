#!/bin/sh
# Browser tests (`make test-browser`): unit tests of web/herald.js under Node's
# test runner, then Playwright (playwright-core) driving Debian's Chromium
# against a real redis-server and real gateways. Installs what is missing.
#   usage: sh tests/browser/run.sh [ABS_BUILD_DIR]     (default: build/)
# Artifacts (screenshots, process logs, TAP results) land in $BUILD/browser/.
# Exit status 0 only when every test passed.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${1:-$ROOT/build}
OUT="$BUILD/browser"
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

mkdir -p "$OUT"
rm -f "$OUT"/*.tap "$OUT"/*.log "$OUT"/*.png "$OUT/pids"

# The e2e harness keeps $OUT/pids listing the processes it started and that
# still run; it stops them itself. Should it die first, stop those left over
# (only a PID that still runs redis-server, herald-gateway or nginx's master,
# which stops its workers on SIGTERM).
cleanup() {
    [ -s "$OUT/pids" ] || return 0
    while read -r pid; do
        [ -n "$pid" ] || continue
        case $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) in
            *redis-server*|*herald-gateway*|nginx:\ master*) kill "$pid" 2>/dev/null ;;
        esac
    done < "$OUT/pids"
    rm -f "$OUT/pids"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the tests need ---------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing Debian's chromium"
        DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null; } ||
            { echo "cannot install chromium" >&2; exit 1; }
    else
        echo "$CHROMIUM is missing: install Debian's chromium package (as root: apt-get install -y chromium)" >&2
        exit 1
    fi
fi
# nginx (Debian's) is the load balancer of the recovery and SSE fallback tests
if [ ! -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing Debian's nginx"
        DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null ||
            { echo "cannot install nginx" >&2; exit 1; }
    else
        echo "nginx is missing: install Debian's nginx package (as root: apt-get install -y nginx)" >&2
        exit 1
    fi
fi
for tool in node npm redis-server; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done
for bin in herald-gateway herald-token herald-pub; do
    [ -x "$BUILD/$bin" ] || { echo "$BUILD/$bin is missing: run make all" >&2; exit 1; }
done
if [ ! -f "$HERE/node_modules/playwright-core/package.json" ]; then
    echo "== installing playwright-core (npm)"
    # No browser download: playwright-core never fetches one, and we use Debian's.
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) ||
        (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error) ||
        { echo "cannot install playwright-core" >&2; exit 1; }
fi

# --- the tests ----------------------------------------------------------------------
# spec output on the terminal, TAP in $OUT for the counts.
run_suite() { # name file...
    name=$1; shift
    echo "== $name"
    HERALD_BUILD="$BUILD" BROWSER_OUT="$OUT" CHROMIUM="$CHROMIUM" \
        node --disable-warning=ExperimentalWarning --test --test-concurrency=1 \
        --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$OUT/$name.tap" "$@"
}

status=0
run_suite unit "$HERE/herald.test.mjs" || status=1
run_suite e2e "$HERE/dashboard.e2e.mjs" || status=1

passed=0
failed=0
for tap in "$OUT"/unit.tap "$OUT"/e2e.tap; do
    if [ ! -s "$tap" ]; then
        echo "no results in $tap" >&2
        failed=$((failed + 1))
        continue
    fi
    p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$tap" | tail -n 1)
    f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$tap" | tail -n 1)
    c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$tap" | tail -n 1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-1} + ${c:-0}))
done
[ "$failed" -gt 0 ] && status=1

[ -f "$OUT/dashboard.png" ] && echo "screenshot: $OUT/dashboard.png"
echo "browser tests: $passed passed, $failed failed"
exit $status
