"""Liveness: server pings, idle timeout, write timeout, handshake timeout
(slowloris, plain and TLS), and the "2" -> "3" text heartbeat.

Timers are checked by a once-a-second sweep, so every bound here allows a
couple of seconds of slack; nothing waits without a deadline."""

import concurrent.futures
import json
import select
import socket
import ssl
import time

import pytest

import harness
from harness import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWS, build_frame
from harness_ops import (help_line, ops, ops_module, parse_frames,  # noqa: F401
                         scrape, SlowWS, wait_until)
from harness_redis import publish_burst

PING_INTERVAL = 1
IDLE = 3
HANDSHAKE = 2
WRITE_TIMEOUT = 2
SLACK = 3.0  # sweep granularity plus scheduling on a loaded machine


@pytest.fixture(scope="module")
def live_gw(ops_module, tls_material):
    """--ping-interval 1 --idle-timeout 3; the handshake timeout (2 s) comes
    from HERALD_HANDSHAKE_TIMEOUT to cover the environment form."""
    return ops_module.gateway(
        extra=["--ping-interval", PING_INTERVAL, "--idle-timeout", IDLE],
        env={"HERALD_HANDSHAKE_TIMEOUT": str(HANDSHAKE)}, tls=tls_material, name="live")


# ----------------------------------------------------------------- options

@pytest.mark.parametrize("option,default", [("--ping-interval", "25"), ("--idle-timeout", "60"),
                                            ("--write-timeout", "10"),
                                            ("--handshake-timeout", "10")])
def test_help_documents_liveness_option_with_default(option, default):
    ln = help_line(option)
    assert ln is not None, "%s missing from --help" % option
    assert "[%s]" % default in ln, "%s: default %s not shown: %r" % (option, default, ln)


# ----------------------------------------------------------------- peers

class Peer:
    """A raw websocket client driven by one thread for `duration` seconds.

    mode "silent": reads, never sends anything (no pongs).
    mode "pong":   answers every server ping with a pong, sends nothing else.
    mode "text2":  sends the text "2" every second, never answers pings."""

    def __init__(self, port, mode, duration):
        self.port = port
        self.mode = mode
        self.duration = duration
        self.pings = []        # seconds since connect of every ping frame
        self.threes = 0        # "3" replies
        self.twos = 0          # "2" sent
        self.other = []        # any other frame
        self.close = None      # (seconds since connect, code, reason) of a close frame
        self.eof = None        # seconds since connect of TCP close
        self.final_pong = None

    def run(self):
        ws = RawWS(self.port)
        try:
            ws.handshake()
            t0 = time.monotonic()
            buf = ws.buf
            ws.buf = b""
            next_two = t0
            end = t0 + self.duration
            while True:
                now = time.monotonic()
                if self.close is not None and now > self.close[0] + t0 + SLACK:
                    break
                if self.close is None and now >= end:
                    break
                if self.mode == "text2" and self.close is None and now >= next_two:
                    ws.send(build_frame(OP_TEXT, b"2"))
                    self.twos += 1
                    next_two += 1.0
                r, _, _ = select.select([ws.sock], [], [], 0.1)
                if not r:
                    continue
                try:
                    chunk = ws.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.eof = time.monotonic() - t0
                    break
                buf += chunk
                frames, buf = parse_frames(buf)
                for op, payload in frames:
                    at = time.monotonic() - t0
                    if op == OP_PING:
                        self.pings.append(at)
                        if self.mode == "pong":
                            ws.send(build_frame(OP_PONG, payload))
                    elif op == OP_CLOSE:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        self.close = (at, code, payload[2:])
                        try:
                            ws.send(build_frame(OP_CLOSE, payload[:2]))
                        except OSError:
                            pass
                    elif op == OP_TEXT and payload == b"3":
                        self.threes += 1
                    else:
                        self.other.append((op, payload[:200]))
            if self.close is None and self.eof is None:
                # still open: an application ping must still be answered
                ws.send(build_frame(OP_TEXT, b'{"type":"ping","id":"alive"}'))
                ws.buf = buf
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    op, payload = ws.read_message(deadline - time.monotonic())
                    if op == OP_TEXT and b'"alive"' in payload:
                        self.final_pong = json.loads(payload)
                        break
        finally:
            ws.close()
        return self


@pytest.fixture(scope="module")
def peers(live_gw):
    """Runs the three peers side by side for 2 * idle-timeout + 1 seconds."""
    duration = 2 * IDLE + 1
    ps = {m: Peer(live_gw.port, m, duration) for m in ("silent", "pong", "text2")}
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        futs = {m: ex.submit(p.run) for m, p in ps.items()}
        for f in futs.values():
            f.result(timeout=duration + 30)
    return ps


def test_server_sends_ping_frames_every_ping_interval(peers):
    p = peers["pong"]
    assert p.pings, "no ping frame in %.0fs with --ping-interval %d" % (p.duration, PING_INTERVAL)
    assert p.pings[0] <= PING_INTERVAL + SLACK, "first ping after %.1fs" % p.pings[0]
    assert len(p.pings) >= 3, "only %d pings in %.0fs: %r" % (len(p.pings), p.duration, p.pings)
    gaps = [b - a for a, b in zip(p.pings, p.pings[1:])]
    assert max(gaps) <= PING_INTERVAL + SLACK, "ping gaps %r" % gaps
    assert min(gaps) >= 0.3, "pings in a burst, not paced: %r" % gaps


def test_silent_client_closed_1001_idle_timeout(peers):
    p = peers["silent"]
    assert p.close is not None, "silent client not closed within %.0fs with --idle-timeout %d " \
        "(eof=%r, pings=%r)" % (p.duration, IDLE, p.eof, p.pings)
    at, code, reason = p.close
    assert code == 1001, "close code %d (reason %r)" % (code, reason)
    assert reason == b"idle timeout", "close reason %r" % reason
    assert IDLE - 1.0 <= at <= IDLE + SLACK, "closed %.1fs after connect, idle timeout %d" % (
        at, IDLE)
    assert p.eof is not None, "TCP not closed within %.0fs after the idle close frame" % SLACK


def test_client_answering_pings_is_kept_past_idle_timeout(peers):
    p = peers["pong"]
    assert p.close is None and p.eof is None, \
        "a client answering pings was closed: close=%r eof=%r" % (p.close, p.eof)
    assert p.final_pong and p.final_pong.get("type") == "pong", p.final_pong
    assert not p.other, "unexpected frames %r" % p.other


def test_client_sending_text_heartbeats_is_kept_and_gets_3(peers):
    p = peers["text2"]
    assert p.close is None and p.eof is None, \
        "a client sending \"2\" every second was closed: close=%r eof=%r" % (p.close, p.eof)
    assert p.threes >= p.twos - 1 and p.threes <= p.twos, \
        "sent %d \"2\", got %d \"3\"" % (p.twos, p.threes)
    assert p.final_pong and p.final_pong.get("type") == "pong", p.final_pong
    assert not p.other, "unexpected frames %r" % p.other


def test_text_2_is_answered_with_text_3_and_json_ping_with_pong(live_gw):
    c, _ = harness.connect(live_gw.url)
    with c:
        c.send_text("2")
        assert c.recv() == "3"
        r = c.request({"type": "ping", "id": "hb-1"})
        assert r.get("type") == "pong" and r.get("id") == "hb-1", r
        harness.assert_timestamp(r.get("timestamp"))
        c.send_text("2")
        assert c.recv() == "3"


# ----------------------------------------------------------------- handshake timeout

def _closed_without_reply(make, feed=None):
    """Opens a socket with make(); optionally feeds it with feed(sock, t0)
    until the peer closes. Returns (elapsed until TCP close or None, bytes got)."""
    s = make()
    t0 = time.monotonic()
    got = b""
    deadline = t0 + HANDSHAKE + SLACK + 2
    next_feed = t0
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if feed is not None and now >= next_feed:
                try:
                    feed(s)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                    return time.monotonic() - t0, got
                next_feed = now + 0.4
            s.settimeout(0.2)
            try:
                c = s.recv(4096)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                return time.monotonic() - t0, got
            if not c:
                return time.monotonic() - t0, got
            got += c
        return None, got
    finally:
        s.close()


def test_handshake_timeout_drops_stalled_connections_without_reply(live_gw, tls_material):
    port, tls_port = live_gw.port, live_gw.tls_port

    def plain():
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    def tls_tcp_only():
        return socket.create_connection(("127.0.0.1", tls_port), timeout=5)

    def tls_no_request():
        ctx = harness.client_ssl_context(tls_material[0])
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=5),
                               server_hostname="localhost")

    lines = iter(["GET /ws HTTP/1.1\r\n"] + ["X-Slow-%d: %s\r\n" % (i, "a" * 8)
                                             for i in range(100)])

    def slowloris(s):
        s.sendall(next(lines).encode())

    cases = {
        "plain TCP, nothing sent": (plain, None),
        "plain, one header line every 0.4 s (slowloris)": (plain, slowloris),
        "TLS port, no ClientHello": (tls_tcp_only, None),
        "TLS handshake done, no HTTP request": (tls_no_request, None),
    }
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as ex:
        futs = {name: ex.submit(_closed_without_reply, *args) for name, args in cases.items()}
        results = {name: f.result(timeout=30) for name, f in futs.items()}
    bad = []
    for name, (elapsed, got) in results.items():
        if elapsed is None:
            bad.append("%s: still open after %.0fs (handshake timeout %d)"
                       % (name, HANDSHAKE + SLACK + 2, HANDSHAKE))
        elif elapsed < HANDSHAKE - 1.0:
            bad.append("%s: closed after %.2fs, before the %ds handshake timeout"
                       % (name, elapsed, HANDSHAKE))
        elif got:
            bad.append("%s: closed with a reply %r" % (name, got[:200]))
    assert not bad, "\n".join(bad)

    # the gateway still serves, on both ports
    c, _ = harness.connect(live_gw.url)
    c.close()
    ctx = harness.client_ssl_context(tls_material[0])
    c, _ = harness.connect("wss://127.0.0.1:%d/ws" % tls_port, ssl_ctx=ctx)
    c.close()


# ----------------------------------------------------------------- write timeout

def test_write_timeout_drops_client_whose_queue_makes_no_progress(ops):
    redis = ops.redis()
    # send queue cap far above what is published: only the write timeout can act
    gw = ops.gateway(redis, extra=["--write-timeout", WRITE_TIMEOUT, "--max-send-queue",
                                   64 << 20, "--idle-timeout", 60, "--ping-interval", 25])
    stuck = SlowWS(gw.port, rcvbuf=8192)
    reader = RawWS(gw.port)
    try:
        for c in (stuck, reader):
            c.handshake()
            c.send(build_frame(OP_TEXT, b'{"type":"subscribe","channel":"announcements"}'))
            r = c.read_json()
            assert r.get("type") == "subscribed", r
        m = scrape(gw.admin_port)
        assert m.value("herald_connections") == 2, m.series("herald_connections")
        n, size = 800, 10000  # ~8 MB: more than the kernel buffers hold
        payloads = [json.dumps({"seq": i, "pad": "w" * size}) for i in range(n)]
        t_pub = time.monotonic()
        counts = []
        got = 0
        for i in range(0, n, 100):  # the reader keeps up; the stuck client never reads
            counts += publish_burst(redis.port, "announcements", payloads[i:i + 100])
            while got < i + 100:
                ev = reader.read_json(10)
                assert ev.get("type") == "event" and ev["data"]["seq"] == got, ev.get("data", ev)
                got += 1
        assert counts == [1] * n, "gateway not subscribed during the burst: %r" % counts[:5]
        t_done = time.monotonic()
        if t_done - t_pub < 0.8:
            m = scrape(gw.admin_port)
            assert m.value("herald_connections") == 2, \
                "stuck client dropped %.1fs after the burst began, before the %ds write " \
                "timeout" % (time.monotonic() - t_pub, WRITE_TIMEOUT)
        wait_until(lambda: scrape(gw.admin_port).value("herald_connections") == 1,
                   WRITE_TIMEOUT + SLACK + 2, interval=0.2,
                   what="the stuck client dropped (herald_connections 1)")
        m = scrape(gw.admin_port)
        assert m.value("herald_slow_consumer_closes_total") == 0, \
            "dropped as a slow consumer; the queue (<= 8 MB) never reached --max-send-queue 64 MiB"
        # the stuck client's TCP is closed: what it had received is whole events in order
        data, closed = stuck.drain_all(timeout=10)
        assert closed, "stuck client: TCP still open after the write timeout"
        frames, _ = parse_frames(data)
        seqs = [json.loads(p)["data"]["seq"] for op, p in frames if op == OP_TEXT]
        assert seqs == list(range(len(seqs))), "stuck client got events out of order"
        # the reader is unaffected
        reader.send(build_frame(OP_TEXT, b'{"type":"ping","id":"after"}'))
        r = reader.read_json()
        assert r.get("type") == "pong" and r.get("id") == "after", r
    finally:
        stuck.close()
        reader.close()
