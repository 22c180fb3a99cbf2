"""Limits: subscriptions per connection, inbound rate (token bucket, 4008),
send-queue cap (4009, bounded memory under 100 MB of events), connections
per IP (429, X-Forwarded-For only from trusted proxies) and per worker (503).

(--max-message-size / 1009 and the 16 KiB request head / 431 are covered in
test_frames.py and test_handshake.py.)"""

import json
import os
import resource
import signal
import socket
import subprocess
import time

import pytest

import harness
from harness import OP_CLOSE, OP_PING, OP_TEXT, RawWS, assert_error, build_frame
from harness_cluster import tok
from harness_ops import (SlowWS, help_line, ops, parse_frames,  # noqa: F401
                         scrape, vm_rss_kb, wait_until, ws_upgrade_status)
from harness_redis import publish_burst
from harness_topology import HAProxyLB, NginxLB, haproxy_bin, require_nginx


def text(obj):
    return build_frame(OP_TEXT, json.dumps(obj).encode())


def raw_client(port, token=None):
    c = RawWS(port)
    c.handshake(headers={"Authorization": "Bearer " + token} if token else None)
    return c


def read_replies(c, ids, timeout=10.0):
    """Reads until a reply echoing every id in ids has arrived; returns
    {id: reply}. Other messages (events) are returned in a list too."""
    want = set(ids)
    got, others = {}, []
    deadline = time.monotonic() + timeout
    while want - set(got):
        left = deadline - time.monotonic()
        assert left > 0, "no reply for ids %r within %.0fs; got %r" % (
            sorted(want - set(got)), timeout, got)
        m = c.read_json(left)
        if m.get("id") in want:
            got[m["id"]] = m
        else:
            others.append(m)
    return got, others


def no_frame(c, wait=0.5):
    """Asserts nothing arrives on RawWS c within wait seconds."""
    try:
        op, payload = c.read_message(wait)
    except socket.timeout:
        return
    raise AssertionError("unexpected frame %d %r" % (op, payload[:200]))


# ----------------------------------------------------------------- options

@pytest.mark.parametrize("option,default", [
    ("--max-subscriptions", "256"), ("--rate-limit", "50"), ("--rate-burst", "100"),
    ("--max-send-queue", "1048576"), ("--max-connections-per-ip", "1000"),
    ("--max-connections", "100000")])
def test_help_documents_limit_option_with_default(option, default):
    ln = help_line(option)
    assert ln is not None, "%s missing from --help" % option
    assert "[%s]" % default in ln, "%s: default %s not shown: %r" % (option, default, ln)


def test_help_documents_trusted_proxies():
    assert help_line("--trusted-proxies") is not None


# ----------------------------------------------------------------- subscriptions

def test_subscription_over_max_is_refused_and_connection_kept(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--max-subscriptions", 3])
    c, _ = harness.connect(gw.url, token=tok("u1"))
    with c:
        for ch in ("apps:created", "apps:updated", "apps:deleted"):
            r = c.request({"type": "subscribe", "channel": ch})
            assert r.get("type") == "subscribed" and r.get("channel") == ch, r
        r = c.request({"type": "subscribe", "channel": "apps:deployed", "id": "fourth"})
        assert_error(r, "too_many_subscriptions", "fourth")
        # the refused channel is not subscribed; the others still deliver
        redis.publish("apps:deployed", json.dumps({"n": 1}))
        redis.publish("apps:created", json.dumps({"n": 2}))
        ev = c.recv_json()
        assert ev.get("type") == "event" and ev.get("channel") == "apps:created", ev
        assert ev["data"] == {"n": 2}, ev
        # re-subscribing an existing channel is still fine
        r = c.request({"type": "subscribe", "channel": "apps:created"})
        assert r.get("type") == "subscribed" and r.get("channel") == "apps:created", r
        # unsubscribing frees a slot
        r = c.request({"type": "unsubscribe", "channel": "apps:updated"})
        assert r.get("type") == "unsubscribed", r
        r = c.request({"type": "subscribe", "channel": "apps:deployed"})
        assert r.get("type") == "subscribed" and r.get("channel") == "apps:deployed", r
        redis.publish("apps:deployed", json.dumps({"n": 3}))
        ev = c.recv_json()
        assert ev.get("channel") == "apps:deployed" and ev["data"] == {"n": 3}, ev
        assert_error(c.request({"type": "subscribe", "channel": "apps:status"}),
                     "too_many_subscriptions")
        assert c.request({"type": "ping"}).get("type") == "pong"


def test_default_max_subscriptions_is_256(ops):
    gw = ops.gateway(extra=["--rate-limit", 100000, "--rate-burst", 100000])
    c = raw_client(gw.port, tok("u1"))
    try:
        ids = ["s%d" % i for i in range(257)]
        c.send(b"".join(text({"type": "subscribe", "channel": "apps:c%d" % i, "id": ids[i]})
                        for i in range(257)))
        got, _ = read_replies(c, ids, 20)
        bad = [(i, got[i]) for i in ids[:256] if got[i].get("type") != "subscribed"]
        assert not bad, "subscriptions within the default limit refused: %r" % bad[:3]
        assert_error(got["s256"], "too_many_subscriptions", "s256")
    finally:
        c.close()


def test_distinct_channels_per_worker_are_capped(ops):
    """--max-channels bounds the Redis subscriptions one worker holds, however
    many connections ask: past it, a new channel gets too_many_channels while
    channels already served stay open to everyone."""
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--max-channels", 3])
    a = raw_client(gw.port, tok("u1"))
    b = raw_client(gw.port, tok("u2"))
    try:
        a.send(b"".join(text({"type": "subscribe", "channel": "apps:n%d" % i, "id": i})
                        for i in range(4)))
        got, _ = read_replies(a, list(range(4)))
        assert [got[i]["type"] for i in range(3)] == ["subscribed"] * 3, got
        assert_error(got[3], "too_many_channels", 3)
        # another connection: a served channel is fine, a fourth one is not
        b.send(text({"type": "subscribe", "channel": "apps:n1", "id": "b1"}) +
               text({"type": "subscribe", "channel": "apps:n9", "id": "b2"}))
        got, _ = read_replies(b, ["b1", "b2"])
        assert got["b1"]["type"] == "subscribed", got
        assert_error(got["b2"], "too_many_channels", "b2")
        def channels():
            with redis.client() as r:
                return sorted(x.decode() if isinstance(x, bytes) else x
                              for x in r.command("PUBSUB", "CHANNELS", "herald:apps:*"))
        assert channels() == ["herald:apps:n0", "herald:apps:n1", "herald:apps:n2"]
        # leaving frees a slot
        a.send(text({"type": "unsubscribe", "channel": "apps:n0", "id": "u"}))
        read_replies(a, ["u"])
        wait_until(lambda: "herald:apps:n0" not in channels(), 5,
                   what="UNSUBSCRIBE of the last subscriber")
        # The slot is free once the gateway has read Redis's confirmation,
        # which may trail what PUBSUB CHANNELS shows by a moment.
        attempt = [0]

        def subscribed_again():
            attempt[0] += 1
            rid = "b3-%d" % attempt[0]
            b.send(text({"type": "subscribe", "channel": "apps:n9", "id": rid}))
            got, _ = read_replies(b, [rid])
            if got[rid]["type"] != "subscribed":
                assert_error(got[rid], "too_many_channels", rid)
                return False
            return True
        wait_until(subscribed_again, 5, interval=0.1, what="a freed channel slot")
    finally:
        a.close()
        b.close()


def test_event_size_limit_is_its_own_option(ops):
    """Lowering the client message limit does not drop larger events:
    --max-event-size governs what comes from Redis."""
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--max-message-size", 1024, "--max-event-size", 4096])
    c = raw_client(gw.port, tok("u1"))
    try:
        c.send(text({"type": "subscribe", "channel": "apps:big", "id": 1}))
        read_replies(c, [1])
        fits = json.dumps({"blob": "x" * 3000})
        too_big = json.dumps({"blob": "y" * 5000})
        redis.publish("apps:big", too_big)
        redis.publish("apps:big", fits)
        ev = c.read_json(5)
        assert ev["type"] == "event" and ev["data"] == json.loads(fits), ev["type"]
        wait_until(lambda: "reason=too_big" in gw.log_text(), 5, what="the drop logged")
    finally:
        c.close()


# ----------------------------------------------------------------- rate limit

RATE, BURST = 5, 10


def test_messages_over_rate_are_refused_not_processed_and_connection_kept(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--rate-limit", RATE, "--rate-burst", BURST])
    c = raw_client(gw.port)
    try:
        # one write: BURST pings, a subscribe, 4 more pings
        msgs = [{"type": "ping", "id": "p%d" % i} for i in range(BURST)]
        msgs.append({"type": "subscribe", "channel": "announcements", "id": "sub"})
        msgs += [{"type": "ping", "id": "q%d" % i} for i in range(4)]
        c.send(b"".join(text(m) for m in msgs))
        got, others = read_replies(c, [m["id"] for m in msgs])
        assert not others, others
        for i in range(BURST):
            assert got["p%d" % i].get("type") == "pong", "within the burst: %r" % got["p%d" % i]
        assert_error(got["sub"], "rate_limited", "sub")
        limited = [k for k, v in got.items() if v.get("type") == "error"]
        for k in limited:
            assert_error(got[k], "rate_limited", k)
        assert len(limited) >= 4, "only %r refused after a burst of %d" % (limited, BURST)
        # the refused subscribe was not processed
        assert redis.publish("announcements", json.dumps({"x": 1})) >= 0
        no_frame(c, 0.7)
        # tokens come back at RATE per second; the connection was kept
        time.sleep(1.5)
        c.send(text({"type": "subscribe", "channel": "announcements", "id": "again"}))
        r, _ = read_replies(c, ["again"])
        assert r["again"].get("type") == "subscribed", r
        redis.publish("announcements", json.dumps({"x": 2}))
        ev = c.read_json()
        assert ev.get("type") == "event" and ev["data"] == {"x": 2}, ev
    finally:
        c.close()


def test_more_than_burst_refusals_close_4008_and_are_counted(ops):
    gw = ops.gateway(extra=["--rate-limit", RATE, "--rate-burst", BURST])
    m0 = scrape(gw.admin_port)
    c = raw_client(gw.port)
    try:
        n = BURST + 3 * BURST
        c.send(b"".join(text({"type": "ping", "id": "p%d" % i}) for i in range(n)))
        code, reason, frames = c.read_until_close(10)
        assert code == 4008, "close %r %r after %d pipelined pings with burst %d; frames %r" % (
            code, reason, n, BURST, frames[-3:])
        replies = [json.loads(p) for op, p in frames if op == OP_TEXT]
        pongs = [r for r in replies if r.get("type") == "pong"]
        errors = [r for r in replies if r.get("type") == "error"]
        assert [r.get("id") for r in pongs[:BURST]] == ["p%d" % i for i in range(BURST)], pongs
        assert len(errors) >= BURST, "closed after only %d refusals (burst %d)" % (
            len(errors), BURST)
        for e in errors:
            assert_error(e, "rate_limited", e.get("id"))
            assert e.get("id"), e
        assert c.tcp_closed(5), "TCP still open after close 4008"
    finally:
        c.close()
    m1 = scrape(gw.admin_port)
    assert m1.total("herald_rate_limit_closes_total") - \
        m0.total("herald_rate_limit_closes_total") == 1
    assert m1.total("herald_rate_limited_total") - m0.total("herald_rate_limited_total") \
        >= len(errors)


def test_default_burst_allows_100_pipelined_messages(ops):
    gw = ops.gateway()
    c = raw_client(gw.port)
    try:
        n = 110
        c.send(b"".join(text({"type": "ping", "id": "p%d" % i}) for i in range(n)))
        got, _ = read_replies(c, ["p%d" % i for i in range(n)])
        pongs = [i for i in range(n) if got["p%d" % i].get("type") == "pong"]
        assert pongs[:100] == list(range(100)), "refused within the default burst of 100"
        assert len(pongs) <= 105, "%d of 110 pipelined pings answered with burst 100" % len(pongs)
        for i in range(n):
            if i not in pongs:
                assert_error(got["p%d" % i], "rate_limited", "p%d" % i)
        c.send(text({"type": "ping", "id": "last"}))  # 10 refusals: not closed
        r, _ = read_replies(c, ["last"])
    finally:
        c.close()


# ----------------------------------------------------------------- send queue

EVENT_PAD = 10000


def payload(seq):
    return json.dumps({"seq": seq, "pad": "e" * EVENT_PAD})


def test_consumer_over_send_queue_gets_4009_behind_its_backlog(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--max-send-queue", 1048576])
    slow = SlowWS(gw.port, rcvbuf=16384)
    try:
        slow.handshake()
        slow.send(text({"type": "subscribe", "channel": "announcements"}))
        assert slow.read_json().get("type") == "subscribed"
        seq = 0
        while scrape(gw.admin_port).total("herald_slow_consumer_closes_total") < 1:
            assert seq < 3000, "30 MB published to a client that does not read and no " \
                "slow-consumer close (--max-send-queue 1 MiB)"
            publish_burst(redis.port, "announcements", [payload(seq + i) for i in range(20)])
            seq += 20
        # start reading at once: the backlog, then the close frame 4009
        data, closed = slow.drain_all(timeout=15)
        frames, rest = parse_frames(data)
        assert frames, "nothing received"
        ops_seen = [op for op, _ in frames]
        assert OP_CLOSE in ops_seen, "no close frame after %d frames (TCP closed: %s, %d " \
            "bytes left over)" % (len(frames), closed, len(rest))
        ci = ops_seen.index(OP_CLOSE)
        code = int.from_bytes(frames[ci][1][:2], "big")
        assert code == 4009, "close code %d %r" % (code, frames[ci][1][2:])
        seqs = [json.loads(p)["data"]["seq"] for op, p in frames[:ci]]
        assert seqs == list(range(len(seqs))), "backlog before the close is not every event " \
            "in order (first gap at %r)" % next((i for i, s in enumerate(seqs) if s != i), None)
        assert ci == len(frames) - 1 and not rest, "frames after the close frame"
        assert closed, "TCP not closed after the 4009 close frame"
    finally:
        slow.close()
    wait_until(lambda: scrape(gw.admin_port).value("herald_connections") == 0, 5,
               what="herald_connections back to 0")


def test_never_reading_client_is_closed_while_100mb_flow_and_memory_stays_bounded(ops):
    redis = ops.redis()
    # default --max-send-queue (1 MiB). Under AddressSanitizer (make test-asan)
    # freed memory sits in a quarantine of 256 MB that would count as growth:
    # keep it small (the option is ignored by a normal build).
    asan = os.environ.get("ASAN_OPTIONS", "")
    asan = (asan + ":" if asan else "") + "quarantine_size_mb=4:thread_local_quarantine_size_kb=64"
    gw = ops.gateway(redis, env={"ASAN_OPTIONS": asan})
    [worker] = gw.workers
    normal = raw_client(gw.port, tok("admin"))
    slow = SlowWS(gw.port, rcvbuf=16384)
    try:
        slow.handshake()
        for c in (normal, slow):
            c.send(text({"type": "subscribe", "channel": "announcements", "id": "sub"}))
            r, _ = read_replies(c, ["sub"])
            assert r["sub"].get("type") == "subscribed", r
        rss0 = rss_max = vm_rss_kb(worker)
        total, batch = 10000, 50
        t0 = time.monotonic()
        for start in range(0, total, batch):
            # pace by the normal client, so only the never-reading one falls behind
            counts = publish_burst(redis.port, "announcements",
                                       [payload(start + i) for i in range(batch)])
            assert counts == [1] * batch, counts[:3]
            for i in range(batch):
                ev = normal.read_json(15)
                assert ev.get("type") == "event", ev
                assert ev["data"]["seq"] == start + i, "normal client: event %d where %d " \
                    "expected" % (ev["data"]["seq"], start + i)
            rss_max = max(rss_max, vm_rss_kb(worker))
        elapsed = time.monotonic() - t0
        grow_mb = (rss_max - rss0) / 1024.0
        assert grow_mb < 64, "worker VmRSS grew by %.1f MB (%d -> %d kB) during %d MB of " \
            "events" % (grow_mb, rss0, rss_max, total * EVENT_PAD >> 20)

        def stats():
            normal.send(text({"type": "stats", "id": "st"}))
            r, _ = read_replies(normal, ["st"])
            return r["st"]["worker"]
        st = wait_until(lambda: (lambda s: s if s["connections"] == 1 else None)(stats()), 6,
                        interval=0.2, what="the never-reading client gone (connections 1)")
        assert st["slowConsumerCloses"] >= 1, st
        m = scrape(gw.admin_port)
        assert m.total("herald_slow_consumer_closes_total") >= 1
        data, closed = slow.drain_all(timeout=10)
        assert closed, "never-reading client: TCP still open"
        # the gateway keeps serving
        c, _ = harness.connect(gw.url)
        with c:
            assert c.request({"type": "subscribe", "channel": "announcements"})["type"] == \
                "subscribed"
            redis.publish("announcements", json.dumps({"after": True}))
            ev = c.recv_json()
            assert ev.get("type") == "event" and ev["data"] == {"after": True}, ev
        print("100 MB run: %.1fs, worker RSS %d -> max %d kB" % (elapsed, rss0, rss_max))
    finally:
        normal.close()
        slow.close()


def test_pings_from_a_client_that_never_reads_are_held_to_the_send_queue_cap(ops):
    """Pongs count against --max-send-queue like every other frame: a client
    that floods pings and never reads is closed 4009 and the worker's memory
    stays bounded (pongs once bypassed the cap: one anonymous client grew a
    worker by hundreds of MB in seconds)."""
    redis = ops.redis()
    # A rate limit out of the way, so the queue cap is what must hold.
    gw = ops.gateway(redis, extra=["--rate-limit", "10000000", "--rate-burst", "10000000"])
    [worker] = gw.workers
    slow = SlowWS(gw.port, rcvbuf=4096)
    try:
        slow.handshake()
        rss0 = rss_max = vm_rss_kb(worker)
        chunk = build_frame(OP_PING, b"p" * 125) * 512  # 64 KiB of pings
        sent = 0
        slow.sock.settimeout(5)
        deadline = time.monotonic() + 30
        while scrape(gw.admin_port).total("herald_slow_consumer_closes_total") < 1:
            assert time.monotonic() < deadline, "no slow-consumer close after %d MB of " \
                "pings" % (sent >> 20)
            try:
                slow.sock.sendall(chunk)
            except (OSError, socket.timeout):
                break  # the gateway closed us
            sent += len(chunk)
            rss_max = max(rss_max, vm_rss_kb(worker))
        rss_max = max(rss_max, vm_rss_kb(worker))
        assert (rss_max - rss0) / 1024.0 < 32, "worker VmRSS grew by %.1f MB (%d -> %d kB) " \
            "under %d MB of pings" % ((rss_max - rss0) / 1024.0, rss0, rss_max, sent >> 20)
        wait_until(lambda: scrape(gw.admin_port).value("herald_connections") == 0, 8,
                   what="the pinging client closed")
        assert scrape(gw.admin_port).total("herald_slow_consumer_closes_total") == 1
    finally:
        slow.close()


# ----------------------------------------------------------------- connections

def _attempt(port, xff=None):
    status, c = ws_upgrade_status(port, headers={"X-Forwarded-For": xff} if xff else None)
    if status != 101:
        c.close()
        return status, None
    return status, c


def _attempt_until_accepted(port, refused):
    """Retries the upgrade until a freed slot accepts it (within 5 s); every
    refusal meanwhile must be `refused`. Returns the accepted connection."""
    deadline = time.monotonic() + 5
    while True:
        status, c = _attempt(port)
        if status == 101:
            return c
        assert status == refused, status
        assert time.monotonic() < deadline, "slot not freed 5 s after a close"
        time.sleep(0.1)


def test_max_connections_per_ip_is_counted_across_workers_and_xff_ignored(ops):
    gw = ops.gateway(workers=2, extra=["--max-connections-per-ip", 3])
    held = []
    try:
        for xff in ("10.0.0.1", "10.0.0.2", None):
            status, c = _attempt(gw.port, xff)
            assert status == 101, "connection %d of 3 refused: %d" % (len(held) + 1, status)
            held.append(c)
        # new TCP connections land on either worker: each must see all 3
        statuses = [_attempt(gw.port, xff)[0] for xff in (None, "10.9.8.5") * 5]
        assert statuses == [429] * 10, "4th connection from 127.0.0.1 (untrusted " \
            "X-Forwarded-For ignored): %r" % statuses
        held.pop(0).close()
        held.append(_attempt_until_accepted(gw.port, 429))
        statuses = [_attempt(gw.port)[0] for _ in range(6)]
        assert statuses == [429] * 6, statuses
    finally:
        for c in held:
            c.close()


def test_trusted_proxy_forwarded_address_is_the_client_address(ops):
    gw = ops.gateway(workers=2, extra=["--max-connections-per-ip", 3, "--trusted-proxies",
                                       "127.0.0.1,10.255.0.0/16"])
    held = []
    try:
        for xff in ["10.9.8.7"] * 3 + ["10.9.8.6"] * 3:
            status, c = _attempt(gw.port, xff)
            assert status == 101, "connection with X-Forwarded-For %s refused: %d" % (xff, status)
            held.append(c)
        for xff in ("10.9.8.7", "1.2.3.4, 10.9.8.6", "10.9.8.7, 127.0.0.1",
                    "10.9.8.7, 10.255.1.1", "10.9.8.6,10.9.8.7"):
            status, c = _attempt(gw.port, xff)
            assert status == 429, "X-Forwarded-For %r: %d (client 10.9.8.x is at its limit)" % (
                xff, status)
        for xff in ("10.9.8.7, 10.1.1.1", None):
            status, c = _attempt(gw.port, xff)
            assert status == 101, "X-Forwarded-For %r: %d (a fresh client address)" % (xff, status)
            held.append(c)
    finally:
        for c in held:
            c.close()


# Behind a balancer: deploy/haproxy.cfg (`option forwardfor` adds its own
# X-Forwarded-For line after the client's) and deploy/nginx.conf (appends to
# the client's line), rewritten only to loopback ports, with the gateway's port
# as all three upstreams. Clients connect from other loopback addresses, so
# the balancer (127.0.0.1, trusted) and each client have addresses of their own.
BALANCERS = {"haproxy": HAProxyLB, "nginx": NginxLB}
ATTACKER, VICTIM = "127.0.0.2", "127.0.0.3"


def _behind_balancer(ops, tmp_path, balancer):
    if balancer == "haproxy" and not haproxy_bin():
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    require_nginx()
    gw = ops.gateway(extra=["--max-connections-per-ip", 2, "--trusted-proxies", "127.0.0.1"])
    lb = ops.own(BALANCERS[balancer](tmp_path, [gw.port] * 3))
    return gw, lb


def _attempt_from(port, source, xff, held):
    """One upgrade through the balancer from source, sending its own
    X-Forwarded-For; a 101 connection is kept in held. Returns the status."""
    c = RawWS(port, source=source)
    try:
        r = c.request(headers={"X-Forwarded-For": xff} if xff else None)
        if r.status == 101:
            op, payload = c.read_message()
            assert op == OP_TEXT and b'"connected"' in payload, (op, payload[:200])
            held.append(c)
            c = None
        return r.status
    finally:
        if c is not None:
            c.close()


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
def test_forged_forwarded_for_through_the_balancer_does_not_pass_the_per_ip_limit(
        ops, tmp_path, balancer):
    """Each attempt claims another address in its own X-Forwarded-For; the
    gateway must count them all as the one client the balancer saw (with the
    header read first-line-only, HAProxy let 5 of 5 through a limit of 2)."""
    gw, lb = _behind_balancer(ops, tmp_path, balancer)
    held = []
    try:
        statuses = [_attempt_from(lb.port, ATTACKER, "203.0.113.%d" % i, held)
                    for i in range(1, 6)]
        assert statuses == [101, 101, 429, 429, 429], statuses
        refused = gw.log_lines("event=ip_limit")
        assert len(refused) == 3 and all("peer=%s" % ATTACKER in ln for ln in refused), refused
    finally:
        for c in held:
            c.close()


@pytest.mark.parametrize("balancer", sorted(BALANCERS))
def test_forged_forwarded_for_through_the_balancer_cannot_lock_out_another_address(
        ops, tmp_path, balancer):
    """A client naming its victim's address in X-Forwarded-For uses up its own
    connections, never the victim's."""
    gw, lb = _behind_balancer(ops, tmp_path, balancer)
    held = []
    try:
        statuses = [_attempt_from(lb.port, ATTACKER, VICTIM, held) for _ in range(4)]
        assert statuses == [101, 101, 429, 429], statuses
        statuses = [_attempt_from(lb.port, VICTIM, None, held) for _ in range(2)]
        assert statuses == [101, 101], "the victim was locked out: %r" % statuses
    finally:
        for c in held:
            c.close()


def test_max_connections_per_worker_refuses_with_503(ops):
    gw = ops.gateway(extra=["--max-connections", 2])
    held = []
    try:
        for _ in range(2):
            status, c = _attempt(gw.port)
            assert status == 101, status
            held.append(c)
        assert [_attempt(gw.port)[0] for _ in range(3)] == [503] * 3
        held.pop().close()
        held.append(_attempt_until_accepted(gw.port, 503))
        assert _attempt(gw.port)[0] == 503
    finally:
        for c in held:
            c.close()


def test_out_of_file_descriptors_pauses_accepting_instead_of_spinning(ops, tmp_path):
    """With the descriptor limit reached, accept() fails: the worker pauses
    accepting for a second instead of retrying in a busy loop (it once wrote
    ~600,000 log lines in 3 s at full CPU)."""
    redis = ops.redis()
    port = harness.free_port()
    log_path = tmp_path / "emfile.log"

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))

    with open(log_path, "wb") as log:
        proc = subprocess.Popen([harness.GATEWAY_BIN, "--host", "127.0.0.1", "--port", str(port),
                                 "--redis", redis.url, "--jwt-secret", "s", "--workers", "1",
                                 "--admin-listen", "off"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                preexec_fn=low_fd_limit)
    socks = []
    try:
        wait_until(lambda: harness.port_open(port), 10, what="gateway listening")
        for _ in range(60):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            except OSError:
                pass
        time.sleep(3)
        worker = int(open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)).read().split()[0])
        fields = open("/proc/%d/stat" % worker).read().rsplit(")", 1)[1].split()
        cpu_seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        errors = sum(1 for ln in open(log_path, errors="replace") if "event=accept_error" in ln)
        assert errors >= 1, "the test never ran the worker out of descriptors"
        assert errors <= 10, "%d accept_error lines in about 3 s" % errors
        assert cpu_seconds < 1.0, "worker used %.2f CPU-s while out of descriptors" % cpu_seconds
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ----------------------------------------------------------------- kernel buffers

def server_side(port, client_port):
    """(state, Send-Q) of the gateway's socket to client_port, or None."""
    out = subprocess.run(["ss", "-tanH", "( sport = :%d and dport = :%d )" % (port, client_port)],
                         capture_output=True, text=True, timeout=10).stdout
    for ln in out.splitlines():
        f = ln.split()
        if len(f) >= 3:
            return f[0], int(f[2])
    return None


def test_slow_consumer_whose_close_cannot_be_delivered_is_reset(ops):
    """A never-reading client closed 4009: the kernel holds at most about
    --socket-send-buffer for it, and once the close timeout passes with the
    close frame still undelivered its socket is reset (no FIN-WAIT left
    holding the unsent bytes for minutes)."""
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--max-send-queue", 262144])
    slow = SlowWS(gw.port, rcvbuf=16384)
    try:
        slow.handshake()
        client_port = slow.sock.getsockname()[1]
        slow.send(text({"type": "subscribe", "channel": "announcements"}))
        assert slow.read_json().get("type") == "subscribed"
        seq, most_queued = 0, 0
        while scrape(gw.admin_port).total("herald_slow_consumer_closes_total") < 1:
            assert seq < 3000, "no slow-consumer close"
            publish_burst(redis.port, "announcements", [payload(seq + i) for i in range(20)])
            seq += 20
            s = server_side(gw.port, client_port)
            most_queued = max(most_queued, s[1] if s else 0)
        closed_at = time.monotonic()
        states = []
        while time.monotonic() - closed_at < 8:
            s = server_side(gw.port, client_port)
            if s is None:
                break
            states.append(s[0])
            most_queued = max(most_queued, s[1])
            time.sleep(0.1)
        gone_after = time.monotonic() - closed_at
        assert s is None, "the gateway's socket is still %s %.1fs after the 4009 close " \
            "(states seen %r)" % (s, gone_after, sorted(set(states)))
        # the kernel's share: about --socket-send-buffer (64 KiB, doubled by Linux)
        assert most_queued <= 3 * 65536, "%d bytes queued in the kernel" % most_queued
        # the client sees a reset after whatever reached it
        slow.sock.settimeout(5)
        reset = False
        try:
            while slow.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            reset = True
        assert reset, "the connection ended without a reset"
        print("socket gone %.1fs after the 4009 close; most queued in the kernel %d bytes"
              % (gone_after, most_queued))
    finally:
        slow.close()
