"""Client messages and their replies: subscribe, unsubscribe, ping, list_channels,
stats, and the error replies that leave the connection open."""

import json
import os

import pytest

import harness
from harness import OP_TEXT, RawWS, assert_error, assert_timestamp, build_frame, connect


@pytest.fixture
def user(gateway, tokens):
    c, _ = connect(gateway.url, token=tokens["u1"])
    yield c
    c.close()


@pytest.fixture
def anon(gateway):
    c, _ = connect(gateway.url)
    yield c
    c.close()


@pytest.fixture
def admin(gateway, tokens):
    c, _ = connect(gateway.url, token=tokens["admin"])
    yield c
    c.close()


def still_alive(c):
    r = c.request({"type": "ping"})
    assert r["type"] == "pong", r


def test_subscribe_replies_subscribed(user):
    r = user.request({"type": "subscribe", "channel": "apps:created"})
    assert r["type"] == "subscribed" and r["channel"] == "apps:created", r
    assert_timestamp(r["timestamp"])


def test_subscribe_twice_is_idempotent(user):
    for _ in range(2):
        r = user.request({"type": "subscribe", "channel": "apps:updated"})
        assert r["type"] == "subscribed" and r["channel"] == "apps:updated", r


def test_unsubscribe_replies_unsubscribed(user):
    user.request({"type": "subscribe", "channel": "apps:deleted"})
    r = user.request({"type": "unsubscribe", "channel": "apps:deleted"})
    assert r["type"] == "unsubscribed" and r["channel"] == "apps:deleted", r
    assert_timestamp(r["timestamp"])


def test_unsubscribe_when_not_subscribed_is_idempotent(user):
    r = user.request({"type": "unsubscribe", "channel": "storage:deleted"})
    assert r["type"] == "unsubscribed" and r["channel"] == "storage:deleted", r
    still_alive(user)


def test_ping_replies_pong_with_timestamp(anon):
    r = anon.request({"type": "ping"})
    assert r["type"] == "pong", r
    assert_timestamp(r["timestamp"])


def test_list_channels_for_anonymous(anon):
    r = anon.request({"type": "list_channels"})
    assert r["type"] == "channels", r
    assert r["channels"] == ["announcements"]


def test_list_channels_for_user(user):
    r = user.request({"type": "list_channels"})
    assert r["type"] == "channels", r
    assert r["channels"] == harness.expected_channels("u1")


def test_list_channels_for_admin(admin):
    r = admin.request({"type": "list_channels"})
    assert r["channels"] == harness.expected_channels("adm", admin=True)


@pytest.mark.parametrize("req_id", ["req-1", 42, 0, 3.5, ""])
def test_replies_echo_id(user, req_id):
    for msg, rtype in (({"type": "ping"}, "pong"),
                       ({"type": "subscribe", "channel": "apps:status"}, "subscribed"),
                       ({"type": "unsubscribe", "channel": "apps:status"}, "unsubscribed"),
                       ({"type": "list_channels"}, "channels")):
        msg = dict(msg, id=req_id)
        r = user.request(msg)
        assert r["type"] == rtype, r
        assert "id" in r and r["id"] == req_id and type(r["id"]) is type(req_id), (msg, r)


def test_reply_without_request_id_has_no_id(user):
    r = user.request({"type": "ping"})
    assert "id" not in r, r


def test_error_reply_echoes_id(user):
    r = user.request({"type": "bogus", "id": "e1"})
    assert_error(r, "unknown_type", req_id="e1")
    r = user.request({"type": "subscribe", "channel": "system:health", "id": 7})
    assert_error(r, "forbidden", req_id=7)


def test_stats_for_admin(gateway, admin, tokens):
    others = [connect(gateway.url)[0] for _ in range(2)]
    try:
        admin.request({"type": "subscribe", "channel": "system:metrics"})
        r1 = admin.request({"type": "stats", "id": "s1"})
        assert r1["type"] == "stats", r1
        assert r1.get("id") == "s1", r1
        assert_timestamp(r1["timestamp"])
        w = r1["worker"]
        for k in ("connections", "subscriptions", "channels", "messagesIn", "messagesOut"):
            assert isinstance(w[k], int) and not isinstance(w[k], bool), (k, w)
        assert isinstance(w["uptimeSeconds"], (int, float)), w
        assert w["connections"] >= 3, w
        assert w["subscriptions"] >= 1 and w["channels"] >= 1, w
        r2 = admin.request({"type": "stats"})
        assert r2["worker"]["messagesIn"] > w["messagesIn"], (w, r2["worker"])
        assert r2["worker"]["messagesOut"] > w["messagesOut"], (w, r2["worker"])
    finally:
        for o in others:
            o.close()


def test_stats_forbidden_for_user(user):
    assert_error(user.request({"type": "stats"}), "forbidden")
    still_alive(user)


def test_stats_forbidden_for_anonymous(anon):
    assert_error(anon.request({"type": "stats"}), "forbidden")
    still_alive(anon)


@pytest.mark.parametrize("text", ['{"type":"ping"', "not json", '{"type":}', "{'type':'ping'}",
                                  '{"type":"ping"} trailing', ""])
def test_malformed_json_is_bad_json(anon, text):
    anon.send_text(text)
    assert_error(anon.recv_json(), "bad_json")
    still_alive(anon)


@pytest.mark.parametrize("text", ["[1]", '"x"', "3", "null", "true"])
def test_json_not_an_object_is_invalid_message(anon, text):
    anon.send_text(text)
    assert_error(anon.recv_json(), "invalid_message")
    still_alive(anon)


def test_missing_type_is_missing_field(anon):
    assert_error(anon.request({"channel": "announcements"}), "missing_field")
    still_alive(anon)


@pytest.mark.parametrize("t", [1, None, ["ping"], {"x": 1}, True])
def test_type_not_a_string_is_invalid_field(anon, t):
    assert_error(anon.request({"type": t}), "invalid_field")
    still_alive(anon)


@pytest.mark.parametrize("t", ["bogus", "PING", "", "subscribe "])
def test_unknown_type_is_unknown_type(anon, t):
    assert_error(anon.request({"type": t}), "unknown_type")
    still_alive(anon)


@pytest.mark.parametrize("t", ["subscribe", "unsubscribe"])
def test_subscribe_without_channel_is_missing_field(user, t):
    assert_error(user.request({"type": t}), "missing_field")
    still_alive(user)


@pytest.mark.parametrize("ch", [1, None, ["apps:created"], {"a": 1}, False])
def test_channel_not_a_string_is_invalid_field(user, ch):
    assert_error(user.request({"type": "subscribe", "channel": ch}), "invalid_field")
    still_alive(user)


@pytest.mark.parametrize("ch", ["apps:cre ated", "apps/created", "apps:créé", "", "apps:a\nb",
                                "apps:" + "x" * 124, "a" * 129, "apps:<x>"])
def test_bad_channel_name_is_invalid_channel(user, ch):
    assert_error(user.request({"type": "subscribe", "channel": ch}), "invalid_channel")
    still_alive(user)


def test_channel_of_exactly_128_bytes_is_valid(user):
    ch = "apps:" + "x" * 123
    assert len(ch) == 128
    r = user.request({"type": "subscribe", "channel": ch})
    assert r["type"] == "subscribed" and r["channel"] == ch, r


@pytest.mark.parametrize("ch", ["foo:bar", "nonamespace", "system", "apps"])
def test_channel_no_rule_covers_is_unknown_channel(user, ch):
    assert_error(user.request({"type": "subscribe", "channel": ch}), "unknown_channel")
    still_alive(user)


def test_forbidden_channel_message(user):
    r = user.request({"type": "subscribe", "channel": "system:alerts"})
    assert_error(r, "forbidden")
    assert r["message"] == "Not authorized to subscribe to this channel", r
    still_alive(user)


@pytest.mark.parametrize("bad_id", [{"a": 1}, [1], True, False])
def test_id_of_wrong_type_is_invalid_field(anon, bad_id):
    r = anon.request({"type": "ping", "id": bad_id})
    assert_error(r, "invalid_field")
    still_alive(anon)


def test_error_on_one_connection_does_not_affect_another(gateway, tokens):
    a, _ = connect(gateway.url, token=tokens["u1"])
    b, _ = connect(gateway.url, token=tokens["u1"])
    with a, b:
        assert b.request({"type": "subscribe", "channel": "apps:created"})["type"] == "subscribed"
        for text in ("garbage", "[1]", '{"type":"nope"}', '{"type":"subscribe"}'):
            a.send_text(text)
            assert a.recv_json()["type"] == "error"
        b.no_message(0.3)
        still_alive(b)
        still_alive(a)


def test_many_messages_in_one_burst_are_all_answered_in_order(anon):
    for i in range(50):
        anon.send_json({"type": "ping", "id": i})
    for i in range(50):
        r = anon.recv_json()
        assert r["type"] == "pong" and r["id"] == i, r


def test_unicode_in_json_strings_is_accepted(anon):
    anon.send_text(json.dumps({"type": "ping", "id": "héllo ✓ 𝄞"}, ensure_ascii=False))
    r = anon.recv_json()
    assert r["type"] == "pong" and r["id"] == "héllo ✓ 𝄞", r


def test_every_pipelined_request_is_answered_once_in_order(gateway, tokens):
    """Requests sent in one write while Redis has not yet confirmed a new
    channel: the repeated subscribe is not answered before the first (which
    waits for Redis), and an unsubscribe arriving first still leaves the
    subscribe answered, before it."""
    channel = "apps:pipelined-" + os.urandom(4).hex()  # new on this gateway: pending
    msgs = [{"type": "subscribe", "channel": channel, "id": "a"},
            {"type": "subscribe", "channel": channel, "id": "a2"},
            {"type": "unsubscribe", "channel": channel, "id": "b"},
            {"type": "subscribe", "channel": channel, "id": "c"}]
    with RawWS(gateway.port) as c:
        c.handshake(headers={"Authorization": "Bearer " + tokens["u1"]})
        c.send(b"".join(build_frame(OP_TEXT, json.dumps(m).encode()) for m in msgs))
        replies = [c.read_json() for _ in msgs]
        assert [(r["type"], r.get("id")) for r in replies] == [
            ("subscribed", "a"), ("subscribed", "a2"), ("unsubscribed", "b"),
            ("subscribed", "c")], replies


def test_ping_never_overtakes_a_pending_subscribe(gateway, tokens):
    """Replies follow request order strictly: a ping (and any other request)
    behind a subscribe that waits for Redis is answered after it."""
    channel = "apps:order-" + os.urandom(4).hex()  # new on this gateway: pending
    other = "apps:order-" + os.urandom(4).hex()
    msgs = [{"type": "subscribe", "channel": channel, "id": 1},
            {"type": "ping", "id": 2},
            {"type": "subscribe", "channel": other, "id": 3},
            {"type": "list_channels", "id": 4},
            {"type": "ping", "id": 5}]
    with RawWS(gateway.port) as c:
        c.handshake(headers={"Authorization": "Bearer " + tokens["u1"]})
        c.send(b"".join(build_frame(OP_TEXT, json.dumps(m).encode()) for m in msgs))
        replies = [c.read_json() for _ in msgs]
        assert [(r["type"], r.get("id")) for r in replies] == [
            ("subscribed", 1), ("pong", 2), ("subscribed", 3), ("channels", 4),
            ("pong", 5)], replies
