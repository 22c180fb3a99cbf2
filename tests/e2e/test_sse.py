"""GET /events: Server-Sent Events on the gateway's ports, with the token,
access rules, limits, recovery and drain of a WebSocket connection. A raw
socket client (harness_http.SseStream) reads the stream as EventSource
does; events are published with history through POST /api/publish and raw
without it (PUBLISH), against a real Redis and real gateways."""

import json
import os
import ssl
import time

import pytest

import harness
from harness import connect
from harness_cluster import tok
from harness_http import SseStream, api_publish
from harness_ops import SlowWS, http_get, ops, ops_module, scrape, wait_until  # noqa: F401
from harness_redis import publish_burst


class SlowSse(SseStream, SlowWS):
    """An SSE stream that reads only when told to (SlowWS.drain_all)."""

KEY = "sse-test-key"


@pytest.fixture(scope="module")
def env(ops_module):
    redis = ops_module.redis()
    gw = ops_module.gateway(redis, extra=["--api-key", KEY])
    return redis, gw


def chan(ns="apps"):
    return "%s:sse-%s" % (ns, os.urandom(3).hex())


def publish(gw, channel, data):
    status, body = api_publish(gw.port, {"channel": channel, "data": data}, key=KEY)
    assert status == 200, body
    return body


def open_stream(gw, channels, token="u1", **kw):
    s = SseStream(gw.port, channels, token=tok(token) if token else None, **kw)
    r = s.open()
    assert r.status == 200, r
    return s, r, s.opened()


def test_events_arrive_as_the_websocket_event_message(env):
    redis, gw = env
    a, b = chan(), chan("deployments")
    s, head, opened = open_stream(gw, [a, b])
    with s:
        assert head.header("content-type") == "text/event-stream"
        assert head.header("cache-control") == "no-cache"
        assert head.header("x-accel-buffering") == "no"
        assert 1000 <= s.retry < 5000
        hello = opened[0].json()
        assert hello["type"] == "connected" and hello["user"]["userId"] == "u1", hello
        subs = [e.json() for e in opened[1:]]
        assert {m["channel"] for m in subs} == {a, b}
        assert all(m["type"] == "subscribed" for m in subs)
        assert opened[-1].id == ","  # no history yet: both positions unknown
        c, _ = connect(gw.url, token=tok("u1"))
        with c:
            c.request({"type": "subscribe", "channel": a, "id": 1})
            pub = publish(gw, a, {"id": "a1", "nested": {"x": [1, 2]}})
            ws_event = c.recv_json()
        e = s.next_event()
        assert e.event == "message"
        msg = e.json()
        assert msg == ws_event  # the very same message, timestamp included
        assert msg["offset"] == pub["offset"]
        assert e.id == "%s/%s," % (pub["epoch"], pub["offset"])
        pub_b = publish(gw, b, 7)
        e = s.next_event()
        assert e.json()["data"] == 7
        assert e.id == "%s/%s,%s/%s" % (pub["epoch"], pub["offset"], pub_b["epoch"],
                                        pub_b["offset"])
        redis.publish(a, '{"raw":\n true}')  # no history; a line break inside the JSON
        e = s.next_event()
        assert json.loads(e.data)["data"] == {"raw": True} and "offset" not in e.json()
        assert e.id.startswith("%s/%s," % (pub["epoch"], pub["offset"]))  # position kept
    m = scrape(gw.port)
    assert m.total("herald_sse_streams_total") >= 1


@pytest.mark.parametrize("channels,token,status", [
    (["system:health"], "u1", 403),           # admins only
    (["user:u2"], "u1", 403),                 # someone else's
    (["nowhere:x"], "u1", 403),               # no rule covers it
    (["apps:created"], None, 403),            # anonymous
    (["apps:ok", "system:alerts"], "u1", 403),  # one forbidden refuses the stream
    (["apps:bad name"], "u1", 400),
    ([], "u1", 400),
    (["apps:a", "apps:a"], "u1", 400),
    (["apps:c%d" % i for i in range(17)], "u1", 400),  # over 16 channels
    (["apps:created"], "bad", 401),
])
def test_refusals_come_before_the_stream(env, channels, token, status):
    redis, gw = env
    t = {"u1": tok("u1"), "bad": "not.a.jwt", None: None}[token]
    with SseStream(gw.port, channels, token=t) as s:
        r = s.open()
        assert r.status == status, r
        assert r.header("content-type").startswith("text/plain")
        assert s.ended()


def test_token_sources_and_anonymous_public_channels(env):
    redis, gw = env
    with SseStream(gw.port, ["user:u1"],
                   headers={"Authorization": "Bearer " + tok("u1")}) as s:
        assert s.open().status == 200
        assert s.opened()[0].json()["user"]["userId"] == "u1"
    expired = harness.craft_jwt(harness.claims_for("u1", ttl=-3600), harness.SECRET)
    with SseStream(gw.port, ["apps:x"], token=expired) as s:
        r = s.open()
        assert r.status == 401 and b"xpired" in r.body, r
    with SseStream(gw.port, ["announcements"]) as s:
        assert s.open().status == 200
        assert s.opened()[0].json()["user"] is None


def test_origin_rules_and_cors(ops):
    gw = ops.gateway(ops.redis(), extra=["--allowed-origins", "https://app.example.com"])
    with SseStream(gw.port, ["announcements"], headers={"Origin": "https://evil.example"}) as s:
        assert s.open().status == 403
    with SseStream(gw.port, ["announcements"],
                   headers={"Origin": "https://app.example.com"}) as s:
        r = s.open()
        assert r.status == 200
        assert r.header("access-control-allow-origin") == "https://app.example.com"


def test_last_event_id_recovers_every_missed_event_after_a_dropped_stream(env):
    redis, gw = env
    a, b, quiet = chan(), chan("deployments"), chan("storage")
    s, _, _ = open_stream(gw, [a, b, quiet])
    with s:
        for i in range(3):
            publish(gw, a, {"n": i})
        publish(gw, b, {"n": 100})
        got = [s.next_event() for _ in range(4)]
        last_id = got[-1].id
    # The stream is gone; events keep coming.
    for i in range(3, 8):
        publish(gw, a, {"n": i})
    publish(gw, b, {"n": 101})
    publish(gw, quiet, {"n": 200})  # its history starts while nobody listens
    s2 = SseStream(gw.port, [a, b, quiet], token=tok("u1"), last_event_id=last_id)
    with s2:
        assert s2.open().status == 200
        assert s2.next_event().event == "connected"
        seen = {a: [], b: [], quiet: []}
        gaps = []
        subscribed = {}
        while sum(map(len, seen.values())) < 6 or len(subscribed) < 3 or not gaps:
            e = s2.next_event()
            m = e.json()
            if e.event == "subscribed":
                subscribed[m["channel"]] = m
            elif m["type"] == "gap":
                gaps += m["channels"]
            else:
                seen[m["channel"]].append(m["data"]["n"])
        assert seen[a] == [3, 4, 5, 6, 7] and seen[b] == [101], seen
        assert subscribed[a]["recovered"] is True and subscribed[b]["recovered"] is True
        # The quiet channel had no position in the id: it cannot prove completeness.
        assert subscribed[quiet]["recovered"] is False
        assert gaps == [quiet] and seen[quiet] == [], (gaps, seen)
        publish(gw, a, {"n": 8})
        while True:
            m = s2.next_json(skip_subscribed=True)
            if m["type"] == "event":
                break
        assert m["data"]["n"] == 8  # live after the recovered ones, nothing repeated


def test_unprovable_recovery_sends_a_gap_message(env):
    redis, gw = env
    a = chan()
    publish(gw, a, {"n": 0})
    s = SseStream(gw.port, [a], token=tok("u1"), last_event_id="1234/1-0")  # another epoch
    with s:
        assert s.open().status == 200
        assert s.next_event().event == "connected"
        sub = s.next_event()
        assert sub.event == "subscribed" and sub.json()["recovered"] is False
        gap = s.next_event()
        assert gap.event == "message" and gap.json()["type"] == "gap"
        assert gap.json()["channels"] == [a]
        assert sub.id.startswith(sub.json()["epoch"] + "/")  # the current position


def test_last_event_id_query_parameter_for_reopened_streams(env):
    redis, gw = env
    a = chan()
    first = publish(gw, a, {"n": 0})
    publish(gw, a, {"n": 1})
    s = SseStream(gw.port, [a], token=tok("u1"),
                  query={"lastEventId": "%s/%s" % (first["epoch"], first["offset"])})
    with s:
        assert s.open().status == 200
        assert s.next_json(skip_subscribed=True)["type"] == "connected"
        assert s.next_json(skip_subscribed=True)["data"] == {"n": 1}
    with SseStream(gw.port, [a], token=tok("u1"), last_event_id="garbage") as s:
        assert s.open().status == 400


def test_heartbeat_comments_and_no_idle_timeout(ops):
    gw = ops.gateway(ops.redis(), extra=["--ping-interval", "1", "--idle-timeout", "2"])
    s = SseStream(gw.port, ["announcements"])
    with s:
        assert s.open().status == 200
        s.opened()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                s.next_event(timeout=deadline - time.monotonic())
            except Exception:
                break
        assert s.comments.count("ping") >= 2, s.comments  # and still open past the idle timeout
        assert not s.eof


def test_slow_reader_is_closed_and_others_keep_their_events(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--max-send-queue", "262144"])
    ch = chan()
    slow = SlowSse(gw.port, [ch], token=tok("u1"), rcvbuf=4096)
    fast, _, _ = open_stream(gw, [ch])
    with slow, fast:
        assert slow.open().status == 200
        seq = 0
        while scrape(gw.port).total("herald_slow_consumer_closes_total") < 1:
            assert seq < 3000, "30 MB to a stream that does not read and no close"
            publish_burst(redis.port, ch, [json.dumps({"seq": seq + i, "pad": "e" * 10000})
                                           for i in range(20)])
            for i in range(20):
                assert fast.next_json(skip_subscribed=True)["data"]["seq"] == seq + i
            seq += 20
        data, closed = slow.drain_all(timeout=15)
        assert closed, "the slow stream was not ended"
        assert data.startswith(b"HTTP/1.1 200") is False  # the head was read by open()
        assert "event=slow_consumer" in gw.log_text()
        publish_burst(redis.port, ch, ['{"seq":"after"}'])
        assert fast.next_json()["data"]["seq"] == "after"


def test_drain_ends_streams_and_readyz_turns_503(ops):
    gw = ops.gateway(ops.redis(), extra=["--drain-timeout", "4"])
    s, _, _ = open_stream(gw, ["announcements"], token=None)
    with s:
        gw.sigterm()
        wait_until(lambda: http_get(gw.port, "/readyz").status == 503 or not gw.alive(), 5,
                   what="readyz 503")
        assert s.ended(timeout=5)
    gw.wait_exit(10)


def test_streams_work_over_tls(ops, tmp_path):
    cert, key = harness.gen_self_signed(tmp_path)
    gw = ops.gateway(ops.redis(), tls=(cert, key), extra=["--api-key", KEY])
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False
    s = SseStream(gw.tls_port, ["apps:tls"], token=tok("u1"))
    s.sock = ctx.wrap_socket(s.sock, server_hostname="localhost")
    with s:
        assert s.open().status == 200
        s.opened()
        publish(gw, "apps:tls", {"secure": True})
        assert s.next_json()["data"] == {"secure": True}


# ----------------------------------------------------------------- behind nginx

def test_stream_recovers_through_nginx_after_its_gateway_is_killed(tmp_path):
    from harness_topology import Topology, require_nginx
    require_nginx()
    with Topology(tmp_path) as topo:
        publisher = topo.procs.gateway(topo.redis, extra=["--api-key", KEY])
        ch = chan()
        s = SseStream(topo.lb.port, [ch], token=tok("u1"))
        with s:
            assert s.open().status == 200
            hello = s.opened()[0].json()
            for i in range(3):
                publish(publisher, ch, {"n": i})
            got = [s.next_json()["data"]["n"] for _ in range(3)]
            assert got == [0, 1, 2]
            last_id = s.last_id
            victim = topo.by_id(topo.conn_map()[hello["connectionId"]])
            victim.kill9()
            assert s.ended(timeout=10)
        for i in range(3, 6):
            publish(publisher, ch, {"n": i})
        # What EventSource does next: the same URL again, with Last-Event-ID.
        s2 = SseStream(topo.lb.port, [ch], token=tok("u1"), last_event_id=last_id)
        with s2:
            r = s2.open()
            assert r.status == 200, r
            opened = s2.opened()
            assert opened[1].json()["recovered"] is True
            assert topo.conn_map()[opened[0].json()["connectionId"]] != victim.gateway_id
            got = [s2.next_json()["data"]["n"] for _ in range(3)]
            publish(publisher, ch, {"n": 6})
            got.append(s2.next_json()["data"]["n"])
            assert got == [3, 4, 5, 6]  # nothing lost, nothing twice


def test_publish_api_through_nginx(ops, tmp_path):
    from harness_topology import NginxLB, require_nginx
    require_nginx()
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--api-key", KEY])
    lb = ops.own(NginxLB(tmp_path, [gw.port] * 3))
    status, body = api_publish(lb.port, {"channel": "apps:via-nginx", "data": {"a": 1}}, key=KEY)
    assert status == 200 and body["offset"], body
    status, body = api_publish(lb.port, {"channel": "apps:via-nginx", "data": 1}, key="wrong")
    assert status == 401
    status, _ = api_publish(lb.port, {"channel": "apps:x", "data": "x" * (1 << 20)}, key=KEY)
    assert status == 413  # nginx's client_max_body_size, before any gateway
