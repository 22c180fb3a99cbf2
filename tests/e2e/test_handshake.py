"""The HTTP upgrade on GET /ws, origins, the "connected" message, startup options."""

import base64
import hashlib
import os
import re
import time

import pytest

import harness
from harness import RawWS, assert_timestamp, connect


def test_valid_upgrade_returns_101_with_correct_accept(gateway):
    with RawWS(gateway.port) as c:
        r = c.request()
        assert r.status == 101, r
        assert r.header("sec-websocket-accept") == harness.accept_for(c.key), r
        assert r.header("upgrade").lower() == "websocket", r
        assert "upgrade" in r.header("connection").lower(), r


def test_rfc_example_key_gets_rfc_example_accept(gateway):
    with RawWS(gateway.port) as c:
        r = c.request(key="dGhlIHNhbXBsZSBub25jZQ==")
        assert r.status == 101, r
        assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r


def test_other_path_is_404(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(path="/nope").status == 404


def test_other_path_is_404_whatever_the_method(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(path="/nope", method="POST").status == 404


def test_query_string_on_ws_path_is_accepted(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(path="/ws?foo=bar").status == 101


def test_wrong_version_is_426_naming_version_13(gateway):
    with RawWS(gateway.port) as c:
        r = c.request(headers={"Sec-WebSocket-Version": "8"})
        assert r.status == 426, r
        assert r.header("sec-websocket-version") == "13", r


def test_missing_key_is_400(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(headers={"Sec-WebSocket-Key": None}).status == 400


def test_missing_upgrade_header_is_400(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(headers={"Upgrade": None}).status == 400


def test_upgrade_to_other_protocol_is_400(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(headers={"Upgrade": "h2c"}).status == 400


def test_connection_without_upgrade_token_is_400(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(headers={"Connection": "keep-alive"}).status == 400


def test_post_is_400(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(method="POST").status == 400


def test_connection_header_token_list_is_accepted(gateway):
    with RawWS(gateway.port) as c:
        r = c.request(headers={"Connection": "keep-alive, Upgrade"})
        assert r.status == 101, r


def test_header_names_and_upgrade_value_are_case_insensitive(gateway):
    key = base64.b64encode(os.urandom(16)).decode()
    raw = ("GET /ws HTTP/1.1\r\nhOST: 127.0.0.1:%d\r\nUPGRADE: WebSocket\r\n"
           "connection: upgrade\r\nsec-websocket-key: %s\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n"
           % (gateway.port, key)).encode()
    with RawWS(gateway.port) as c:
        r = c.request(raw=raw)
        assert r.status == 101, r
        assert r.header("sec-websocket-accept") == harness.accept_for(key)


def test_request_head_over_16k_is_431(gateway):
    with RawWS(gateway.port) as c:
        r = c.request(headers={"X-Padding": "a" * 17000})
        assert r.status == 431, r


def test_request_head_just_under_16k_is_accepted(gateway):
    with RawWS(gateway.port) as c:
        r = c.request(headers={"X-Padding": "a" * 16000})
        assert r.status == 101, r


def _upgrade_head(port, extra_lines):
    return ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            "%s\r\n" % (port, base64.b64encode(os.urandom(16)).decode(),
                         "".join("%s: %s\r\n" % kv for kv in extra_lines))).encode()


@pytest.mark.parametrize("name,first,second", [
    ("Host", "127.0.0.1", "evil.example"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA=="),
    ("Sec-WebSocket-Version", "13", "13"),
    ("Authorization", "Bearer a.b.c", "Bearer d.e.f"),
    ("Origin", "http://127.0.0.1", "http://evil.example"),
])
def test_repeated_singleton_header_is_400(gateway, name, first, second):
    """Two values for a header that may have one (which Host, which key, whose
    token?) make the request ambiguous: refused whole, never first-wins."""
    with RawWS(gateway.port) as c:
        raw = _upgrade_head(gateway.port, [])
        if name in ("Host", "Sec-WebSocket-Key", "Sec-WebSocket-Version"):
            raw = re.sub(rb"(?m)^%s: .*\r\n" % name.encode(), b"", raw)
        raw = raw[:-2] + ("%s: %s\r\n%s: %s\r\n\r\n" % (name, first, name.lower(),
                                                           second)).encode()
        r = c.request(raw=raw)
        assert r.status == 400, r


def test_connection_and_upgrade_tokens_count_on_any_of_their_lines(gateway):
    with RawWS(gateway.port) as c:
        raw = _upgrade_head(gateway.port, [("Connection", "keep-alive"), ("Upgrade", "h2c")])
        raw = raw.replace(b"Connection: Upgrade\r\n", b"").replace(b"Upgrade: websocket\r\n",
                                                                    b"")
        raw = raw[:-2] + b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        r = c.request(raw=raw)
        assert r.status == 101, r


def test_handshake_split_across_many_writes_is_accepted(gateway):
    key = base64.b64encode(os.urandom(16)).decode()
    raw = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (gateway.port, key)).encode()

    with RawWS(gateway.port) as c:
        for i in range(0, len(raw), 7):
            c.send(raw[i:i + 7])
            time.sleep(0.002)
        r = c.read_http()
        assert r.status == 101, r
        assert r.header("sec-websocket-accept") == harness.accept_for(key)


@pytest.mark.parametrize("status,headers,path", [
    (403, {"Origin": "http://evil.example"}, "/ws"),
    (400, {"Upgrade": None}, "/ws"),
    (404, {}, "/elsewhere"),
], ids=["403", "400", "404"])
def test_refusal_reply_is_delivered_every_time(gateway, status, headers, path):
    got = []
    for _ in range(30):
        with RawWS(gateway.port) as c:
            try:
                got.append(c.request(path=path, headers=headers).status)
            except EOFError as e:
                got.append(str(e))
    assert got == [status] * 30, got


def test_no_origin_is_accepted(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(headers={"Origin": None}).status == 101


def test_origin_of_own_host_is_accepted(gateway):
    with RawWS(gateway.port) as c:
        r = c.request(headers={"Origin": "http://127.0.0.1:%d" % gateway.port})
        assert r.status == 101, r


def test_foreign_origin_is_403(gateway):
    with RawWS(gateway.port) as c:
        assert c.request(headers={"Origin": "http://evil.example"}).status == 403


def test_allowed_origins_list_admits_listed_and_refuses_others(start_gateway):
    gw = start_gateway(["--allowed-origins", "https://app.example,https://other.example"],
                       name="gw-origins")
    for origin in ("https://app.example", "https://other.example"):
        with RawWS(gw.port) as c:
            r = c.request(headers={"Origin": origin})
            assert r.status == 101, (origin, r)
    with RawWS(gw.port) as c:
        assert c.request(headers={"Origin": "https://evil.example"}).status == 403
    with RawWS(gw.port) as c:
        assert c.request(headers={"Origin": "http://127.0.0.1:%d" % gw.port}).status == 101


def test_allowed_origins_star_admits_any_origin(start_gateway):
    gw = start_gateway(["--allowed-origins", "*"], name="gw-star")
    with RawWS(gw.port) as c:
        assert c.request(headers={"Origin": "https://anything.example"}).status == 101


def test_connected_message_for_anonymous(gateway):
    c, hello = connect(gateway.url)
    with c:
        assert hello["user"] is None
        assert harness.UUID4_RE.match(hello["connectionId"]), hello
        assert hello["authorizedChannels"] == ["announcements"]
        assert_timestamp(hello["timestamp"])


def test_connected_message_for_user(gateway, tokens):
    c, hello = connect(gateway.url, token=tokens["u1"])
    with c:
        u = hello["user"]
        assert u["userId"] == "u1"
        assert u["email"] == "u1@example.com"
        assert u.get("role") != "admin", u
        assert harness.UUID4_RE.match(hello["connectionId"]), hello
        assert hello["authorizedChannels"] == harness.expected_channels("u1")
        assert_timestamp(hello["timestamp"])


def test_connection_ids_are_unique(gateway):
    clients, ids = [], set()
    try:
        for _ in range(8):
            c, hello = connect(gateway.url)
            clients.append(c)
            ids.add(hello["connectionId"])
        assert len(ids) == 8
    finally:
        for c in clients:
            c.close()


def test_client_offering_permessage_deflate_still_gets_plain_text(gateway):
    c, hello = connect(gateway.url, compression="deflate")
    with c:
        assert "permessage-deflate" not in (c.response_headers.get("Sec-WebSocket-Extensions")
                                            or ""), "gateway negotiated an extension it does not implement"
        r = c.request({"type": "ping"})
        assert r["type"] == "pong"


# ----------------------------------------------------------------- startup options

def test_unknown_option_exits_2(redis_server):
    rc, err, port = harness.run_gateway_expect_exit(
        ["--jwt-secret", "s", "--no-such-option"], redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip(), "no message on stderr"


def test_option_missing_its_value_exits_2(redis_server):
    rc, err, _ = harness.run_gateway_expect_exit(["--jwt-secret", "s", "--max-message-size"],
                                                 redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()


def test_non_numeric_max_message_size_exits_2(redis_server):
    rc, err, _ = harness.run_gateway_expect_exit(
        ["--jwt-secret", "s", "--max-message-size", "lots"], redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()
