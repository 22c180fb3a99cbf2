#!/usr/bin/python3
"""tests/bench/http_transports.py BUILD_DIR -- the cost of the HTTP transports
next to WebSocket, on one gateway worker, a private redis-server, loopback:

- idle memory: RSS growth of the worker per idle connection, SSE stream vs
  WebSocket (HERALD_BENCH_HTTP_IDLE connections each, default 2000);
- fan-out CPU: worker CPU time per delivery with HERALD_BENCH_HTTP_SUBS
  subscribers (default 500) of one channel, SSE vs WebSocket, for
  HERALD_BENCH_HTTP_EVENTS events (default 4000, published through the API
  in batches of 100);
- publish throughput: POST /api/publish one event per request, 100 per
  request, and herald-pub reading lines from stdin (HERALD_BENCH_HTTP_PUB
  events each, default 5000).

Prints one line per figure. Everything it starts is stopped by PID."""

import base64
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
os.environ["HERALD_BUILD"] = BUILD
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import harness  # noqa: E402
from harness_cluster import Cluster, tok  # noqa: E402
from harness_http import api_publish  # noqa: E402

IDLE = int(os.environ.get("HERALD_BENCH_HTTP_IDLE", 2000))
SUBS = int(os.environ.get("HERALD_BENCH_HTTP_SUBS", 500))
EVENTS = int(os.environ.get("HERALD_BENCH_HTTP_EVENTS", 4000))
PUB = int(os.environ.get("HERALD_BENCH_HTTP_PUB", 5000))
KEY = "bench-key"
CLK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def ws_open(port, channel, token):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (token, key)).encode())
    payload = json.dumps({"type": "subscribe", "channel": channel}).encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return s


def sse_open(port, channel, token):
    s = socket.create_connection(("127.0.0.1", port))
    q = urllib.parse.urlencode([("channel", channel), ("token", token)])
    s.sendall(("GET /events?%s HTTP/1.1\r\nHost: x\r\n\r\n" % q).encode())
    return s


def settle(socks, want=b"subscribed", timeout=30):
    """Reads each socket until it has seen want (the subscription is live)."""
    deadline = time.monotonic() + timeout
    for s in socks:
        buf = b""
        s.settimeout(max(0.1, deadline - time.monotonic()))
        while want not in buf:
            chunk = s.recv(65536)
            assert chunk, "closed before %r" % want
            buf += chunk
        s.setblocking(False)


def delivered(port):
    from harness_ops import scrape
    return scrape(port).total("herald_events_delivered_total")


def fanout(cluster, redis, kind):
    gw = cluster.gateway(redis, extra=["--api-key", KEY, "--max-send-queue", 64 << 20],
                         log_level="info")
    worker = gw.workers[0]
    opener = sse_open if kind == "sse" else ws_open
    socks = [opener(gw.port, "apps:bench", tok("u1")) for _ in range(SUBS)]
    settle(socks)
    stop = threading.Event()
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)

    def drain():
        while not stop.is_set():
            for k, _ in sel.select(0.1):
                try:
                    k.fileobj.recv(1 << 20)
                except BlockingIOError:
                    pass
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    base = delivered(gw.admin_port)
    cpu0 = cpu_s(worker)
    for i in range(EVENTS // 100):
        api_publish(gw.port, {"events": [{"channel": "apps:bench", "data": {"i": i * 100 + j,
                                                                            "pad": "x" * 100}}
                                         for j in range(100)]}, key=KEY)
    want = base + SUBS * (EVENTS // 100) * 100
    deadline = time.monotonic() + 120
    while delivered(gw.admin_port) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    cpu = cpu_s(worker) - cpu0
    got = delivered(gw.admin_port) - base
    stop.set()
    t.join()
    for s in socks:
        s.close()
    gw.stop()
    return cpu, got


def idle(cluster, redis, kind):
    gw = cluster.gateway(redis, log_level="info", extra=["--max-connections-per-ip", 1000000])
    worker = gw.workers[0]
    time.sleep(0.5)
    before = rss_kb(worker)
    opener = sse_open if kind == "sse" else ws_open
    socks = [opener(gw.port, "announcements", "") for _ in range(IDLE)]
    settle(socks)
    time.sleep(0.5)
    after = rss_kb(worker)
    for s in socks:
        s.close()
    gw.stop()
    return (after - before) * 1024 / IDLE


def publish_rates(cluster, redis):
    gw = cluster.gateway(redis, extra=["--api-key", KEY], log_level="info")
    t0 = time.monotonic()
    for i in range(PUB):
        status, _ = api_publish(gw.port, {"channel": "apps:pub1", "data": {"i": i}}, key=KEY)
        assert status == 200
    single = PUB / (time.monotonic() - t0)
    t0 = time.monotonic()
    for i in range(PUB // 100):
        status, _ = api_publish(gw.port, {"events": [{"channel": "apps:pub100",
                                                      "data": {"i": i * 100 + j}}
                                                     for j in range(100)]}, key=KEY)
        assert status == 200
    batched = (PUB // 100 * 100) / (time.monotonic() - t0)
    lines = "".join(json.dumps({"i": i}) + "\n" for i in range(PUB))
    t0 = time.monotonic()
    out = subprocess.run([harness.PUB_BIN, "--redis", redis.url, "apps:pubcli", "-"], input=lines,
                         capture_output=True, text=True, env=harness.clean_env())
    assert out.returncode == 0, out.stderr
    cli = PUB / (time.monotonic() - t0)
    gw.stop()
    return single, batched, cli


def main():
    with tempfile.TemporaryDirectory(prefix="herald-bench-http-") as tmp, Cluster(tmp) as cluster:
        redis = cluster.redis()
        for kind in ("ws", "sse"):
            per = idle(cluster, redis, kind)
            print("idle memory  %-3s  %6.0f bytes per connection  (%d idle connections, worker "
                  "RSS growth)" % (kind, per, IDLE))
        for kind in ("ws", "sse"):
            cpu, got = fanout(cluster, redis, kind)
            print("fan-out CPU  %-3s  %6.0f ns per delivery  (%d subscribers x %d events: %d "
                  "deliveries, %.2f s worker CPU)" % (kind, cpu / max(got, 1) * 1e9, SUBS,
                                                     EVENTS, got, cpu))
        single, batched, cli = publish_rates(cluster, redis)
        print("publish API  %8.0f events/s one per request (new connection each, Python client)"
              % single)
        print("publish API  %8.0f events/s in batches of 100" % batched)
        print("herald-pub   %8.0f events/s (stdin lines, one process)" % cli)


if __name__ == "__main__":
    main()
