"""WSS on the TLS port: the same protocol as plain WS, and the TLS startup options."""

import os
import socket
import ssl

import pytest

import harness
from harness import OP_BIN, RawWS, build_frame, client_ssl_context, connect


@pytest.fixture(scope="module")
def tls_gw(start_gateway, tls_material):
    return start_gateway(tls=tls_material, name="gw-tls")


@pytest.fixture(scope="module")
def ctx(tls_material):
    return client_ssl_context(tls_material[0])


def test_wss_connects_and_receives_connected(tls_gw, ctx, tokens):
    c, hello = connect(tls_gw.wss_url, ssl_ctx=ctx, token=tokens["u1"])
    with c:
        assert hello["user"]["userId"] == "u1"
        assert harness.UUID4_RE.match(hello["connectionId"])


def test_wss_subscribe_and_ping_work(tls_gw, ctx, tokens):
    c, _ = connect(tls_gw.wss_url, ssl_ctx=ctx, token=tokens["u1"])
    with c:
        r = c.request({"type": "subscribe", "channel": "apps:created", "id": 1})
        assert r["type"] == "subscribed" and r["id"] == 1, r
        assert c.request({"type": "ping"})["type"] == "pong"
        assert c.request({"type": "subscribe", "channel": "system:health"})["code"] == "forbidden"


def test_wss_subprotocol_token_is_echoed(tls_gw, ctx, tokens):
    proto = "token-" + tokens["u2"]
    c, hello = connect(tls_gw.wss_url, ssl_ctx=ctx, subprotocols=[proto])
    with c:
        assert c.subprotocol == proto
        assert hello["user"]["userId"] == "u2"


def test_wss_binary_frame_closes_1003(tls_gw, ctx):
    with RawWS(tls_gw.tls_port, ssl_ctx=ctx) as c:
        c.handshake()
        c.send(build_frame(OP_BIN, b"\x01\x02"))
        code, _, frames = c.read_until_close()
        assert code == 1003, (code, frames)


def test_wss_large_message_round_trip(tls_gw, ctx):
    # a message spread over several TLS records
    c, _ = connect(tls_gw.wss_url, ssl_ctx=ctx)
    with c:
        c.send_text('{"type":"ping","id":"' + "x" * 40000 + '"}')
        r = c.recv_json()
        assert r["type"] == "pong" and len(r["id"]) == 40000


def test_plain_port_still_serves_ws_alongside_tls(tls_gw):
    c, hello = connect(tls_gw.url)
    with c:
        assert hello["user"] is None


def test_plain_http_on_tls_port_does_not_crash_gateway(tls_gw, ctx):
    with socket.create_connection(("127.0.0.1", tls_gw.tls_port), timeout=3) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            s.recv(1024)
        except OSError:
            pass
    c, _ = connect(tls_gw.wss_url, ssl_ctx=ctx)
    c.close()


def test_client_not_trusting_cert_fails_handshake(tls_gw):
    strict = ssl.create_default_context()
    with pytest.raises((ssl.SSLError, OSError)):
        connect(tls_gw.wss_url, ssl_ctx=strict)


def test_missing_tls_cert_file_exits_2(redis_server, tls_material):
    rc, err, _ = harness.run_gateway_expect_exit(
        ["--jwt-secret", "s", "--tls-port", str(harness.free_port()),
         "--tls-cert", "/nonexistent/cert.pem", "--tls-key", tls_material[1]],
        redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()


def test_missing_tls_key_file_exits_2(redis_server, tls_material):
    rc, err, _ = harness.run_gateway_expect_exit(
        ["--jwt-secret", "s", "--tls-port", str(harness.free_port()),
         "--tls-cert", tls_material[0], "--tls-key", "/nonexistent/key.pem"],
        redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()


def test_key_not_matching_cert_exits_2(redis_server, tls_material, tmp_path):
    _, other_key = harness.gen_self_signed(tmp_path)
    assert os.path.exists(other_key)
    rc, err, _ = harness.run_gateway_expect_exit(
        ["--jwt-secret", "s", "--tls-port", str(harness.free_port()),
         "--tls-cert", tls_material[0], "--tls-key", other_key], redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()
