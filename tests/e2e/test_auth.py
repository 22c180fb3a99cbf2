"""JWT authentication: the three ways to pass a token, precedence, every way a token
can be bad (error "unauthorized" then close 4001), expiry while connected, RS256,
ES256, issuer/audience, and the JWT-related startup options."""

import base64
import json
import time

import pytest

import harness
from conftest import SECRET
from harness_topology import HAProxyLB, haproxy_bin
from harness import RawWS, WSClient, assert_error, claims_for, connect, craft_jwt, query_uri


def expect_unauthorized(client, code="unauthorized"):
    close_code, _, msgs = client.expect_close()
    assert msgs, "no error message before the close"
    assert_error(msgs[0], code)
    assert close_code == 4001, (close_code, msgs)


# ----------------------------------------------------------------- good tokens

def test_bearer_header_authenticates(gateway, tokens):
    c, hello = connect(gateway.url, token=tokens["u1"])
    with c:
        assert hello["user"]["userId"] == "u1"
        assert hello["user"]["email"] == "u1@example.com"


def test_subprotocol_token_authenticates_and_is_echoed(gateway, tokens):
    proto = "token-" + tokens["u2"]
    c, hello = connect(gateway.url, subprotocols=[proto])
    with c:
        assert c.subprotocol == proto
        assert hello["user"]["userId"] == "u2"


def test_subprotocol_token_among_other_offers_is_selected(gateway, tokens):
    proto = "token-" + tokens["u2"]
    c, hello = connect(gateway.url, subprotocols=["chat", proto])
    with c:
        assert c.subprotocol == proto
        assert hello["user"]["userId"] == "u2"


def test_query_token_authenticates(gateway, tokens):
    c, hello = connect(query_uri(gateway.url, tokens["u1"]))
    with c:
        assert hello["user"]["userId"] == "u1"


def test_query_token_among_other_parameters_authenticates(gateway, tokens):
    c, hello = connect(gateway.url + "?a=1&token=" + tokens["u2"] + "&b=2")
    with c:
        assert hello["user"]["userId"] == "u2"


def test_admin_role_is_reported_and_grants_admin_channels(gateway, tokens):
    c, hello = connect(gateway.url, token=tokens["admin"])
    with c:
        assert hello["user"] == {"userId": "adm", "email": "adm@example.com", "role": "admin"}
        assert hello["authorizedChannels"] == harness.expected_channels("adm", admin=True)


def test_header_token_wins_over_garbage_query(gateway, tokens):
    c, hello = connect(query_uri(gateway.url, "garbage.garbage.garbage"), token=tokens["admin"])
    with c:
        assert hello["user"]["userId"] == "adm"
        assert hello["user"]["role"] == "admin"
        c.no_message(0.3)


def test_header_token_wins_over_other_valid_query_token(gateway, tokens):
    c, hello = connect(query_uri(gateway.url, tokens["u2"]), token=tokens["u1"])
    with c:
        assert hello["user"]["userId"] == "u1"


def test_subprotocol_token_wins_over_garbage_query(gateway, tokens):
    proto = "token-" + tokens["u1"]
    c, hello = connect(query_uri(gateway.url, "garbage"), subprotocols=[proto])
    with c:
        assert hello["user"]["userId"] == "u1"
        c.no_message(0.3)


def test_sub_claim_is_user_id_when_userid_absent(gateway):
    tok = craft_jwt({"sub": "s-42", "exp": int(time.time()) + 600}, SECRET)
    c, hello = connect(gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "s-42"
        assert "user:s-42" in hello["authorizedChannels"]


def test_non_integer_numericdates_authenticate(gateway):
    # RFC 7519 NumericDates may have fractions: exp 1.79e9 style and nbf/iat as reals
    now = time.time()
    claims = {"userId": "frac", "exp": float("%.6e" % (now + 3600)), "nbf": now - 10.5,
              "iat": now - 10.25}
    c, hello = connect(gateway.url, token=craft_jwt(claims, SECRET))
    with c:
        assert hello["user"]["userId"] == "frac"


def test_fractional_exp_in_the_past_is_expired(gateway):
    tok = craft_jwt({"userId": "frac", "exp": time.time() - 3600.5}, SECRET)
    with WSClient(gateway.url, token=tok) as c:
        expect_unauthorized(c)


def test_hs256_token_crafted_in_python_authenticates(gateway):
    tok = craft_jwt(claims_for("py", email="py@example.com"), SECRET)
    c, hello = connect(gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "py"


def test_no_token_is_anonymous(gateway):
    c, hello = connect(gateway.url)
    with c:
        assert hello["user"] is None
        c.no_message(0.3)


# ----------------------------------------------------------------- bad tokens

def _bad_tokens():
    now = int(time.time())
    good = claims_for("u1")
    return {
        "garbage": "not-a-jwt",
        "two_parts": "abc.def",
        "alg_none": craft_jwt(good, alg="none"),
        "alg_none_with_signature": craft_jwt(good, SECRET, alg="none", signature=b"x" * 32),
        "wrong_alg_hs512": craft_jwt(good, SECRET, alg="HS512"),
        "wrong_alg_header_rs256": craft_jwt(good, SECRET, header={"alg": "RS256"}),
        "bad_signature": craft_jwt(good, "some-other-secret"),
        "truncated_signature": craft_jwt(good, SECRET)[:-5],
        "expired": craft_jwt(dict(good, exp=now - 3600), SECRET),
        "nbf_in_future": craft_jwt(dict(good, nbf=now + 3600), SECRET),
        "missing_exp": craft_jwt({"userId": "u1", "iat": now}, SECRET),
        "no_subject": craft_jwt({"email": "x@example.com", "exp": now + 600}, SECRET),
        # a userId that is present but not a non-empty string never falls back to sub
        "userid_array": craft_jwt(dict(good, userId=["x"], sub="bob"), SECRET),
        "userid_object": craft_jwt(dict(good, userId={"id": "x"}, sub="bob"), SECRET),
        "userid_number": craft_jwt(dict(good, userId=42, sub="bob"), SECRET),
        "userid_bool": craft_jwt(dict(good, userId=True, sub="bob"), SECRET),
        "userid_empty": craft_jwt(dict(good, userId="", sub="bob"), SECRET),
        "userid_null": craft_jwt(dict(good, userId=None, sub="bob"), SECRET),
        "sub_number": craft_jwt({"sub": 7, "exp": now + 600}, SECRET),
        "exp_string": craft_jwt(dict(good, exp=str(now + 600)), SECRET),
        "claims_not_json": (harness.b64url(b'{"alg":"HS256","typ":"JWT"}') + "." +
                            harness.b64url(b"not json") + "." + "AAAA"),
    }


BAD = sorted(_bad_tokens())


@pytest.mark.parametrize("name", BAD)
def test_bad_token_in_header_gets_unauthorized_and_4001(gateway, name):
    tok = _bad_tokens()[name]
    with WSClient(gateway.url, token=tok) as c:
        expect_unauthorized(c)


@pytest.mark.parametrize("name", ["alg_none", "bad_signature", "expired"])
def test_bad_token_in_subprotocol_gets_unauthorized_and_4001(gateway, name):
    tok = _bad_tokens()[name]
    with WSClient(gateway.url, subprotocols=["token-" + tok]) as c:
        expect_unauthorized(c)


@pytest.mark.parametrize("name", ["alg_none", "bad_signature", "expired", "garbage"])
def test_bad_token_in_query_gets_unauthorized_and_4001(gateway, name):
    tok = _bad_tokens()[name]
    with WSClient(query_uri(gateway.url, tok)) as c:
        expect_unauthorized(c)


def test_unauthorized_reply_is_delivered_every_time(gateway):
    # 101, the error message and the 4001 close must all reach the client before
    # the server ends the TCP connection, on every attempt
    failures = []
    for i in range(30):
        with harness.RawWS(gateway.port) as c:
            r = c.request(headers={"Authorization": "Bearer garbage"})
            if r.status != 101:
                failures.append((i, r))
                continue
            err = c.read_json()
            code, _, _ = c.read_until_close()
            if err.get("code") != "unauthorized" or code != 4001:
                failures.append((i, err, code))
    assert not failures, failures


def test_token_expiring_while_connected_gets_token_expired_and_4001(gateway):
    # exp 28 s in the past: valid for about 2 s more with the 30 s leeway
    tok = craft_jwt(claims_for("u1", ttl=-28), SECRET)
    c, hello = connect(gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "u1"
        t0 = time.monotonic()
        close_code, _, msgs = c.expect_close(timeout=8)
        errors = [m for m in msgs if isinstance(m, dict) and m.get("type") == "error"]
        assert errors, "no error before the close: %r" % msgs
        assert_error(errors[-1], "token_expired")
        assert close_code == 4001, close_code
        assert time.monotonic() - t0 < 7


def test_herald_token_ttl_option_sets_exp():
    tok = harness.herald_token("--secret", SECRET, "--user", "u9", "--ttl", "120")
    payload = tok.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims.get("userId") == "u9" or claims.get("sub") == "u9", claims
    assert abs(claims["exp"] - (time.time() + 120)) < 10, claims


def test_herald_token_no_exp_is_refused_by_default(gateway):
    tok = harness.herald_token("--secret", SECRET, "--user", "u1", "--no-exp")
    with WSClient(gateway.url, token=tok) as c:
        expect_unauthorized(c)


# ----------------------------------------------------------------- issuer / audience

@pytest.fixture(scope="module")
def iss_aud_gateway(start_gateway):
    return start_gateway(["--jwt-issuer", "herald-test", "--jwt-audience", "herald-clients"],
                         name="gw-issaud")


def test_matching_issuer_and_audience_authenticate(iss_aud_gateway):
    tok = harness.herald_token("--secret", SECRET, "--user", "u1", "--issuer", "herald-test",
                               "--audience", "herald-clients")
    c, hello = connect(iss_aud_gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "u1"


def test_audience_in_array_authenticates(iss_aud_gateway):
    tok = craft_jwt(claims_for("u1", iss="herald-test", aud=["other", "herald-clients"]), SECRET)
    c, hello = connect(iss_aud_gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "u1"


@pytest.mark.parametrize("claims", [
    {"iss": "someone-else", "aud": "herald-clients"},
    {"aud": "herald-clients"},
    {"iss": "herald-test", "aud": "other"},
    {"iss": "herald-test"},
], ids=["wrong_iss", "missing_iss", "wrong_aud", "missing_aud"])
def test_wrong_or_missing_issuer_or_audience_is_unauthorized(iss_aud_gateway, claims):
    tok = craft_jwt(claims_for("u1", **claims), SECRET)
    with WSClient(iss_aud_gateway.url, token=tok) as c:
        expect_unauthorized(c)


# ----------------------------------------------------------------- RS256 / ES256

@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory):
    return harness.gen_rsa_keys(tmp_path_factory.mktemp("rsa"))


@pytest.fixture(scope="module")
def rs256_gateway(start_gateway, rsa_keys):
    return start_gateway(["--jwt-alg", "RS256", "--jwt-key", rsa_keys[1]], secret=None,
                         name="gw-rs256")


def test_rs256_token_from_herald_token_authenticates(rs256_gateway, rsa_keys):
    tok = harness.herald_token("--alg", "RS256", "--private-key", rsa_keys[0], "--user", "r1")
    c, hello = connect(rs256_gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "r1"


def test_rs256_token_signed_by_openssl_authenticates(rs256_gateway, rsa_keys):
    tok = harness.sign_jwt_openssl(claims_for("r2", role="admin"), rsa_keys[0], "RS256")
    c, hello = connect(rs256_gateway.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "r2"
        assert hello["user"]["role"] == "admin"


def test_rs256_token_as_subprotocol_is_echoed_in_the_101(rs256_gateway, rsa_keys):
    """Browsers can only send a token as a subprotocol, and an RS256 token is
    ~460 characters: the 101 must echo it whole (it once got HTTP 500)."""
    tok = harness.herald_token("--alg", "RS256", "--private-key", rsa_keys[0], "--user", "r3")
    assert len(tok) > 400
    proto = "token-" + tok
    c, hello = connect(rs256_gateway.url, subprotocols=[proto])
    with c:
        assert c.subprotocol == proto
        assert hello["user"]["userId"] == "r3"


def test_multi_kib_subprotocol_token_is_echoed_in_the_101(gateway):
    """A token of several KiB, padded with claims."""
    claims = claims_for("big")
    claims["pad"] = "x" * 2500  # (the client library reads header lines up to 4 KiB)
    tok = craft_jwt(claims, SECRET.encode())
    assert 3000 < len(tok) < 4000
    proto = "token-" + tok
    c, hello = connect(gateway.url, subprotocols=[proto])
    with c:
        assert c.subprotocol == proto
        assert hello["user"]["userId"] == "big"


def test_over_long_subprotocol_token_gets_the_101_echo_then_unauthorized_and_4001(gateway):
    """A token over the 8 KiB limit, sent as the subprotocol (a browser's only
    way): the 101 still names the offered subprotocol (a browser fails a 101
    that does not, with 1006, and herald.js would retry that forever), then
    the gateway refuses the token like any other: error unauthorized, close
    4001, which herald.js reports as failed."""
    proto = "token-" + "a" * 9000
    with RawWS(gateway.port) as c:
        r = c.request(headers={"Sec-WebSocket-Protocol": "chat, " + proto})
        assert r.status == 101, r
        assert r.header("sec-websocket-protocol") == proto, r.headers[:4]
        code, reason, frames = c.read_until_close()
        assert code == 4001, (code, reason, frames)
        assert len(frames) == 1 and frames[0][0] == harness.OP_TEXT, frames
        assert_error(json.loads(frames[0][1]), "unauthorized")


def test_over_long_subprotocol_token_through_haproxy_gets_4001(gateway, tmp_path):
    """deploy/haproxy.cfg passes such a request and its 101 on (its buffers
    hold 16 KiB heads), so the gateway, not the balancer, refuses the token.
    (deploy/nginx.conf's buffers stop tokens over about 4 KiB: see
    docs/OPERATIONS.md.)"""
    if not haproxy_bin():
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    lb = HAProxyLB(tmp_path, [gateway.port] * 3)
    try:
        proto = "token-" + "a" * 9000
        with RawWS(lb.port) as c:
            r = c.request(headers={"Sec-WebSocket-Protocol": proto})
            assert r.status == 101, r
            assert r.header("sec-websocket-protocol") == proto, r.headers[:4]
            code, reason, frames = c.read_until_close()
            assert code == 4001, (code, reason, frames)
    finally:
        early, rc = lb.stop()
        assert not early, "haproxy had exited (%s)\n%s" % (rc, lb.tail())


def test_hs256_token_signed_with_rsa_public_key_is_refused(rs256_gateway, rsa_keys):
    with open(rsa_keys[1], "rb") as f:
        pem = f.read()
    tok = craft_jwt(claims_for("attacker", role="admin"), pem, alg="HS256")
    with WSClient(rs256_gateway.url, token=tok) as c:
        expect_unauthorized(c)


def test_rs256_token_from_other_key_is_refused(rs256_gateway, tmp_path):
    other_priv, _ = harness.gen_rsa_keys(tmp_path)
    tok = harness.sign_jwt_openssl(claims_for("r3"), other_priv, "RS256")
    with WSClient(rs256_gateway.url, token=tok) as c:
        expect_unauthorized(c)


def test_alg_none_is_refused_by_rs256_gateway(rs256_gateway):
    with WSClient(rs256_gateway.url, token=craft_jwt(claims_for("x"), alg="none")) as c:
        expect_unauthorized(c)


def test_es256_token_authenticates(start_gateway, tmp_path):
    priv, pub = harness.gen_ec_keys(tmp_path)
    gw = start_gateway(["--jwt-alg", "ES256", "--jwt-key", pub], secret=None, name="gw-es256")
    tok = harness.sign_jwt_openssl(claims_for("e1"), priv, "ES256")
    c, hello = connect(gw.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "e1"
    bad = harness.sign_jwt_openssl(claims_for("e1"), harness.gen_rsa_keys(tmp_path)[0], "RS256")
    with WSClient(gw.url, token=bad) as c:
        expect_unauthorized(c)


# ----------------------------------------------------------------- startup

def test_rs256_without_key_exits_2(redis_server):
    rc, err, _ = harness.run_gateway_expect_exit(["--jwt-alg", "RS256"], redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()


def test_nonexistent_jwt_key_exits_2(redis_server):
    rc, err, _ = harness.run_gateway_expect_exit(
        ["--jwt-alg", "RS256", "--jwt-key", "/nonexistent/key.pem"], redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()


def test_unknown_jwt_alg_exits_2(redis_server):
    rc, err, _ = harness.run_gateway_expect_exit(["--jwt-alg", "XS999", "--jwt-secret", "s"],
                                                 redis_url=redis_server.url)
    assert rc == 2, (rc, err)
    assert err.strip()


def test_env_jwt_secret_replaces_option(fresh_gateway):
    env_secret = "from-the-environment-secret"
    gw = fresh_gateway(secret=None, env={"HERALD_JWT_SECRET": env_secret}, name="gw-env")
    tok = craft_jwt(claims_for("envuser"), env_secret)
    c, hello = connect(gw.url, token=tok)
    with c:
        assert hello["user"]["userId"] == "envuser"
    with WSClient(gw.url, token=craft_jwt(claims_for("envuser"), SECRET)) as c:
        expect_unauthorized(c)


def test_env_max_message_size_is_read(fresh_gateway):
    gw = fresh_gateway(env={"HERALD_MAX_MESSAGE_SIZE": "200"}, name="gw-envsize")
    c, _ = connect(gw.url)
    with c:
        c.send_text('{"type":"ping"}' + " " * 185)   # exactly 200 bytes
        assert c.recv_json()["type"] == "pong"
        c.send_text('{"type":"ping"}' + " " * 186)   # 201 bytes
        code, _, _ = c.expect_close()
        assert code == 1009


@pytest.mark.parametrize("how", ["bearer", "subprotocol", "query"])
def test_empty_token_is_anonymous_wherever_it_is_given(gateway, how):
    """An empty token is no token, the same in all three places: the
    connection is anonymous (public channels only), not refused."""
    if how == "bearer":
        c, hello = connect(gateway.url, headers=[("Authorization", "Bearer ")])
    elif how == "subprotocol":
        c, hello = connect(gateway.url, subprotocols=["chat", "token-"])
    else:
        c, hello = connect(query_uri(gateway.url, ""))
    with c:
        assert hello["type"] == "connected" and hello["user"] is None, hello
        assert hello["authorizedChannels"] == ["announcements"]
