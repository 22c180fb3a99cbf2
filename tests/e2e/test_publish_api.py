"""POST /api/publish: backend services publish over HTTP with an API key,
with history exactly as herald-pub does (the stream and meta keys of
HISTORY), against a real Redis and real gateways."""

import json
import os
import signal

import pytest

from harness import connect
from harness_cluster import tok
from harness_http import api_publish, api_raw
from harness_ops import ops, ops_module, scrape, wait_until  # noqa: F401

KEY = "k-" + "s3cret" * 4


@pytest.fixture(scope="module")
def api(ops_module):
    redis = ops_module.redis()
    gw = ops_module.gateway(redis, extra=["--api-key", KEY, "--api-max-body", "65536",
                                          "--max-event-size", "1024"])
    return redis, gw


def chan(prefix="apps"):
    return "%s:api-%s" % (prefix, os.urandom(3).hex())


def text(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [text(x) for x in v]
    return v


def xrange(redis, channel):
    with redis.client() as r:
        return text(r.command("XRANGE", "{herald:%s}:history" % channel, "-", "+"))


def epoch_of(redis, channel):
    with redis.client() as r:
        return text(r.command("HGET", "{herald:%s}:meta" % channel, "epoch"))


def test_single_event_gets_offset_and_epoch_and_is_in_history(api):
    redis, gw = api
    ch = chan()
    status, body = api_publish(gw.port, {"channel": ch, "data": {"id": "a1", "n": 1}}, key=KEY)
    assert status == 200, body
    assert set(body) == {"offset", "epoch"}, body
    entries = xrange(redis, ch)
    assert [e[0] for e in entries] == [body["offset"]]
    assert entries[0][1] == ["d", '{"id":"a1","n":1}']
    assert epoch_of(redis, ch) == body["epoch"]


def test_event_reaches_websocket_subscribers_with_its_offset(api):
    redis, gw = api
    ch = chan()
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        r = c.request({"type": "subscribe", "channel": ch, "id": 1})
        assert r["type"] == "subscribed", r
        status, body = api_publish(gw.port, {"channel": ch, "data": [1, "two"]}, key=KEY)
        assert status == 200, body
        ev = c.recv_json()
        assert ev["type"] == "event" and ev["data"] == [1, "two"], ev
        assert ev["offset"] == body["offset"]


def test_batch_is_published_in_order_in_one_request(api):
    redis, gw = api
    a, b = chan(), chan("deployments")
    events = [{"channel": a if i % 3 else b, "data": {"i": i}} for i in range(30)]
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        c.request({"type": "subscribe", "channel": a, "id": 1})
        status, body = api_publish(gw.port, {"events": events}, key=KEY)
        assert status == 200, body
        results = body["results"]
        assert len(results) == 30
        got = [c.recv_json()["data"]["i"] for _ in range(20)]
        assert got == [i for i in range(30) if i % 3], got
    for channel in (a, b):
        mine = [r["offset"] for e, r in zip(events, results) if e["channel"] == channel]
        stored = xrange(redis, channel)
        assert [e[0] for e in stored] == mine  # every event, in order, each its own offset
        assert [json.loads(e[1][1])["i"] for e in stored] == [
            e["data"]["i"] for e in events if e["channel"] == channel]


def test_history_false_rule_publishes_without_history(ops, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"namespace": "apps", "access": "authenticated", "history": False},
        {"namespace": "storage", "access": "authenticated", "history": {"size": 2, "ttl": 30}}],
        "known": []}))
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--api-key", KEY, "--acl-file", str(rules)])
    status, body = api_publish(gw.port, {"channel": "apps:nohist", "data": 1}, key=KEY)
    assert (status, body) == (200, {"offset": None, "epoch": None})
    assert xrange(redis, "apps:nohist") == []
    batch = {"events": [{"channel": "storage:small", "data": i} for i in range(300)]}
    status, body = api_publish(gw.port, batch, key=KEY)
    assert status == 200, body
    with redis.client() as r:
        ttl = r.command("TTL", "{herald:storage:small}:history")
    assert 0 < ttl <= 30
    # MAXLEN ~ 2 trims whole stream nodes (100 entries each by default).
    assert len(xrange(redis, "storage:small")) <= 100


def request(gw, method="POST", headers=(), body=b""):
    head = "%s /api/publish HTTP/1.1\r\nHost: x\r\n" % method
    head += "".join("%s: %s\r\n" % h for h in headers)
    return api_raw(gw.port, head.encode() + b"\r\n" + body)


@pytest.mark.parametrize("case,status", [
    ("no key", 401), ("wrong key", 401), ("bearer scheme", 401), ("key prefix", 401),
    ("GET", 405), ("no length", 411), ("chunked", 411), ("chunked with length", 400),
    ("bad length", 400), ("bad json", 400), ("not an object", 400), ("no data", 400),
    ("bad channel", 400), ("empty batch", 400), ("channel too long", 400),
    ("body too large", 413), ("data too large", 413), ("too many events", 413),
])
def test_status_codes(api, case, status):
    redis, gw = api
    auth = ("Authorization", "apikey " + KEY)

    def post(body, headers=(auth,)):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return request(gw, headers=list(headers) + [("Content-Length", len(body))], body=body)

    ok = {"channel": "apps:x", "data": {}}
    r = {
        "no key": lambda: post(ok, headers=()),
        "wrong key": lambda: post(ok, headers=[("Authorization", "apikey " + KEY + "x")]),
        "bearer scheme": lambda: post(ok, headers=[("Authorization", "Bearer " + KEY)]),
        "key prefix": lambda: post(ok, headers=[("Authorization", "apikey " + KEY[:-1])]),
        "GET": lambda: request(gw, "GET", [auth]),
        "no length": lambda: request(gw, headers=[auth], body=b""),
        "chunked": lambda: request(gw, headers=[auth, ("Transfer-Encoding", "chunked")],
                                   body=b"5\r\n{}{}{\r\n0\r\n\r\n"),
        "chunked with length": lambda: request(
            gw, headers=[auth, ("Transfer-Encoding", "chunked"), ("Content-Length", 5)],
            body=b"{}{}{"),
        "bad length": lambda: request(gw, headers=[auth, ("Content-Length", "12a")]),
        "bad json": lambda: post(b'{"channel":'),
        "not an object": lambda: post([ok]),
        "no data": lambda: post({"channel": "apps:x"}),
        "bad channel": lambda: post({"channel": "apps x", "data": 1}),
        "empty batch": lambda: post({"events": []}),
        "channel too long": lambda: post({"channel": "a:" + "x" * 127, "data": 1}),
        "body too large": lambda: post({"channel": "apps:x", "data": "x" * 70000}),
        "data too large": lambda: post({"channel": "apps:x", "data": "x" * 1100}),
        "too many events": lambda: post({"events": [{"channel": "apps:x", "data": 0}] * 1001}),
    }[case]()
    assert r.status == status, r


def test_every_event_of_a_refused_batch_is_left_unpublished(api):
    redis, gw = api
    ch = chan()
    status, _ = api_publish(gw.port, {"events": [{"channel": ch, "data": 1},
                                                 {"channel": "bad name", "data": 2}]}, key=KEY)
    assert status == 400
    assert xrange(redis, ch) == []


def test_endpoint_is_404_without_a_key(ops):
    gw = ops.gateway(ops.redis())
    status, _ = api_publish(gw.port, {"channel": "apps:x", "data": 1}, key=KEY)
    assert status == 404


def test_key_file_is_reread_on_sighup(ops, tmp_path):
    key_file = tmp_path / "api.key"
    key_file.write_text("first-key\n")
    gw = ops.gateway(ops.redis(), extra=["--api-key-file", str(key_file)], workers=2)
    for _ in range(4):  # both workers
        assert api_publish(gw.port, {"channel": "apps:k", "data": 1}, key="first-key")[0] == 200
    key_file.write_text("second-key\n")
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_log_count("event=reloaded", 2)
    for _ in range(4):
        assert api_publish(gw.port, {"channel": "apps:k", "data": 1}, key="first-key")[0] == 401
        assert api_publish(gw.port, {"channel": "apps:k", "data": 1}, key="second-key")[0] == 200
    key_file.write_text("")  # no key: the endpoint is off
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_log_count("event=reloaded", 4)
    assert api_publish(gw.port, {"channel": "apps:k", "data": 1}, key="second-key")[0] == 404


def test_503_while_redis_is_unreachable_then_200_again(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--api-key", KEY])
    assert api_publish(gw.port, {"channel": "apps:r", "data": 1}, key=KEY)[0] == 200
    redis.kill9()
    wait_until(lambda: api_publish(gw.port, {"channel": "apps:r", "data": 1}, key=KEY)[0] == 503,
               10, what="503 with Redis down")
    status, body = api_publish(gw.port, {"events": [{"channel": "apps:r", "data": 2}]}, key=KEY)
    assert status == 503, body
    redis.restart()
    wait_until(lambda: api_publish(gw.port, {"channel": "apps:r", "data": 3}, key=KEY)[0] == 200,
               15, what="200 with Redis back")
    m = scrape(gw.port)
    assert m.total("herald_api_publish_failures_total") >= 2
    assert m.total("herald_api_publish_events_total") >= 2
