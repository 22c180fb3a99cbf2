"""Operations: /healthz, /readyz (Redis and drain), /metrics (format and exact
figures with one worker), paced drain on SIGTERM, SIGHUP reload of the JWT
secret file / key and the ACL file, startup refusal of a bad ACL file, and
logs that never carry a token or the secret."""

import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import time

import pytest

import harness
from harness import assert_error, claims_for, craft_jwt
from harness_cluster import Client, close_all
from harness_ops import (help_line, http_get, ops, scrape, wait_until,  # noqa: F401
                         ws_upgrade_status)

SECRET = "e2e-test-secret-0123456789abcdef"

AUTH_REASONS = ["malformed", "bad_alg", "bad_signature", "expired", "not_yet_valid",
                "missing_exp", "bad_issuer", "bad_audience", "no_subject", "bad_user_id"]
GAUGES = ["herald_connections", "herald_subscriptions", "herald_channels", "herald_redis_up"]
COUNTERS = ["herald_messages_in_total", "herald_messages_out_total", "herald_bytes_in_total",
            "herald_bytes_out_total", "herald_events_received_total",
            "herald_events_delivered_total", "herald_events_dropped_total",
            "herald_slow_consumer_closes_total", "herald_rate_limited_total",
            "herald_rate_limit_closes_total", "herald_redis_reconnects_total",
            "herald_handshake_failures_total"]


def refused(url, token=None, **kw):
    """Connects with a token that must fail: returns the error message; asserts close 4001."""
    c = harness.WSClient(url, token=token, **kw)
    with c:
        code, reason, msgs = c.expect_close()
    assert code == 4001, "close %r %r, messages %r" % (code, reason, msgs)
    errs = [m for m in msgs if isinstance(m, dict) and m.get("type") == "error"]
    assert errs and errs[0].get("code") == "unauthorized", msgs
    return errs[0]


def accepted(url, token=None, **kw):
    c, hello = harness.connect(url, token=token, **kw)
    c.close()
    return hello


@pytest.mark.parametrize("option", ["--jwt-secret-file", "--acl-file", "--trusted-proxies"])
def test_help_documents_operations_option(option):
    assert help_line(option) is not None, "%s missing from --help" % option


# ----------------------------------------------------------------- health endpoints

def test_healthz_and_readyz_follow_redis(ops):
    redis = ops.redis()
    gw = ops.gateway(redis)
    h = http_get(gw.port, "/healthz")
    assert h.status == 200 and h.body.strip() == "ok", h
    wait_until(lambda: http_get(gw.port, "/readyz").status == 200, 5, what="/readyz 200")
    assert scrape(gw.port).value("herald_redis_up") == 1
    c, _ = harness.connect(gw.url)
    with c:
        redis.kill9()
        t = time.monotonic()
        wait_until(lambda: http_get(gw.port, "/readyz").status == 503, 6, interval=0.1,
                   what="/readyz 503 after redis-server was killed")
        print("readyz 503 %.2fs after the kill" % (time.monotonic() - t))
        h = http_get(gw.port, "/healthz")
        assert h.status == 200 and h.body.strip() == "ok", "healthz during the outage: %r" % h
        assert scrape(gw.port).value("herald_redis_up") == 0
        assert c.request({"type": "ping"}).get("type") == "pong"
        redis.restart()
        wait_until(lambda: http_get(gw.port, "/readyz").status == 200, 15, interval=0.2,
                   what="/readyz 200 after redis-server came back")
        m = scrape(gw.port)
        assert m.value("herald_redis_up") == 1
        assert m.value("herald_redis_reconnects_total") >= 1


# ----------------------------------------------------------------- dashboard

def _csp_directives(policy):
    out = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def test_dashboard_csp_forbids_framing_and_allows_only_its_own_inline_code(gateway):
    """GET / (the dashboard, which may hold a token) is never framed, sends no
    Referer, and runs only its own code: herald.js from the gateway, and its
    inline script and style by their hashes, which must match the page served."""
    r = http_get(gateway.port, "/")
    assert r.status == 200 and "<script" in r.body, r
    policy = r.headers.get("content-security-policy")
    assert policy, r.headers
    d = _csp_directives(policy)
    assert d.get("frame-ancestors") == ["'none'"], policy
    assert d.get("default-src") == ["'none'"], policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, policy
    assert "'self'" in d.get("script-src", []) and d.get("connect-src") == ["'self'"], policy
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        inline = re.findall(r"<%s(?:\s[^>]*)?>(.*?)</%s>" % (tag, tag), r.body, re.S)
        assert inline, "no inline <%s> in the page" % tag
        want = {"'sha256-%s'" % base64.b64encode(hashlib.sha256(x.encode()).digest()).decode()
                for x in inline}
        got = {v for v in d.get(directive, []) if v.startswith("'sha256-")}
        assert got == want, (directive, policy)
    assert r.headers.get("referrer-policy") == "no-referrer", r.headers


# ----------------------------------------------------------------- metrics

def test_metrics_is_prometheus_text_with_every_family_labelled(ops):
    gw = ops.gateway(extra=["--gateway-id", "gw-fmt"])
    r = http_get(gw.port, "/metrics")
    assert r.status == 200, r
    ctype = r.headers.get("content-type", "")
    assert ctype.replace(" ", "").startswith("text/plain;version=0.0.4"), ctype
    m = scrape(gw.port)
    unlabelled = [(n, lb) for n, lb, _ in m.samples
                  if lb.get("gateway") != "gw-fmt" or lb.get("worker") is None]
    assert not unlabelled, "samples without gateway=\"gw-fmt\",worker=...: %r" % unlabelled[:5]
    for fam in GAUGES:
        assert len(m.series(fam)) == 1, "%s: %r" % (fam, m.series(fam))
        assert m.types.get(fam) == "gauge", "%s TYPE %r" % (fam, m.types.get(fam))
    for fam in COUNTERS:
        assert len(m.series(fam)) == 1, "%s: %r" % (fam, m.series(fam))
        t = m.types.get(fam) or m.types.get(fam[:-len("_total")])
        assert t == "counter", "%s TYPE %r" % (fam, t)
    for reason in AUTH_REASONS:
        assert len(m.series("herald_auth_failures_total", reason=reason)) == 1, \
            "no herald_auth_failures_total{reason=%r}" % reason
    h = "herald_delivery_latency_seconds"
    assert m.types.get(h) == "histogram", m.types.get(h)
    buckets = m.series(h + "_bucket")
    assert len(buckets) >= 3, buckets
    les = [float(lb["le"]) if lb["le"] != "+Inf" else float("inf") for lb, _ in buckets]
    assert les == sorted(les) and les[-1] == float("inf"), les
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets not cumulative: %r" % counts
    assert counts[-1] == m.value(h + "_count"), "+Inf bucket != _count"
    assert len(m.series(h + "_sum")) == 1


def _delta(m1, m0, name, **labels):
    return m1.total(name, **labels) - m0.total(name, **labels)


def test_metrics_figures_are_exact_with_one_worker(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--jwt-issuer", "herald-iss", "--jwt-audience", "herald-aud"])
    ok = {"iss": "herald-iss", "aud": "herald-aud"}

    def tok(uid, **kw):
        claims = claims_for(uid, **dict(ok, **kw))
        return craft_jwt({k: v for k, v in claims.items() if v is not None}, SECRET)
    now = int(time.time())
    no_sub = {k: v for k, v in claims_for("x", **ok).items() if k != "userId"}
    bad = {
        "malformed": "not-a-jwt",
        "bad_alg": craft_jwt(claims_for("u1", **ok), alg="none"),
        "bad_signature": craft_jwt(claims_for("u1", **ok), "not-the-secret"),
        "expired": craft_jwt(claims_for("u1", ttl=-3600, **ok), SECRET),
        "not_yet_valid": craft_jwt(claims_for("u1", nbf=now + 3600, **ok), SECRET),
        "missing_exp": craft_jwt(claims_for("u1", ttl=None, **ok), SECRET),
        "bad_issuer": craft_jwt(claims_for("u1", iss="other", aud="herald-aud"), SECRET),
        "bad_audience": craft_jwt(claims_for("u1", iss="herald-iss", aud="other"), SECRET),
        "no_subject": craft_jwt(no_sub, SECRET),
        "bad_user_id": craft_jwt(dict(claims_for("u1", **ok), userId=["x"], sub="bob"), SECRET),
    }
    m0 = scrape(gw.port)
    for reason in AUTH_REASONS:
        refused(gw.url, bad[reason])
    m1 = scrape(gw.port)
    for reason in AUTH_REASONS:
        assert _delta(m1, m0, "herald_auth_failures_total", reason=reason) == 1, \
            "herald_auth_failures_total{reason=%r}: %r -> %r" % (
                reason, m0.series("herald_auth_failures_total", reason=reason),
                m1.series("herald_auth_failures_total", reason=reason))
    assert m1.value("herald_connections") == 0

    c1, _ = harness.connect(gw.url, token=tok("u1"))
    c2, _ = harness.connect(gw.url, token=tok("u2"))
    c3, _ = harness.connect(gw.url)
    try:
        m = scrape(gw.port)
        assert m.value("herald_connections") == 3, m.series("herald_connections")
        for c in (c1, c2):
            assert c.request({"type": "subscribe", "channel": "apps:created"})["type"] == \
                "subscribed"
        assert c1.request({"type": "subscribe", "channel": "user:u1"})["type"] == "subscribed"
        m = scrape(gw.port)
        assert m.value("herald_subscriptions") == 3, m.series("herald_subscriptions")
        assert m.value("herald_channels") == 2, m.series("herald_channels")

        # K client messages in, K replies out
        m0 = scrape(gw.port)
        k = 7
        sent = 0
        for i in range(k):
            msg = json.dumps({"type": "ping", "id": "m%d" % i})
            sent += len(msg)
            assert c3.request(json.loads(msg)).get("type") == "pong"
        m1 = scrape(gw.port)
        assert _delta(m1, m0, "herald_messages_in_total") == k
        assert _delta(m1, m0, "herald_messages_out_total") == k
        assert _delta(m1, m0, "herald_bytes_in_total") >= sent
        assert _delta(m1, m0, "herald_bytes_out_total") > 0

        # N events, two recipients each: one latency observation per event
        n = 5
        for i in range(n):
            assert redis.publish("apps:created", json.dumps({"i": i})) == 1
        for c in (c1, c2):
            for i in range(n):
                ev = c.recv_json()
                assert ev.get("type") == "event" and ev["data"] == {"i": i}, ev
        m2 = scrape(gw.port)
        assert _delta(m2, m1, "herald_events_received_total") == n
        assert _delta(m2, m1, "herald_events_delivered_total") == 2 * n, \
            "events delivered (per recipient, as stats eventsDelivered) for %d events to 2 " \
            "subscribers: %r" % (n, _delta(m2, m1, "herald_events_delivered_total"))
        assert _delta(m2, m1, "herald_messages_out_total") == 2 * n
        assert _delta(m2, m1, "herald_delivery_latency_seconds_count") == n, \
            "delivery latency observations for %d events to 2 subscribers: %r" % (
                n, _delta(m2, m1, "herald_delivery_latency_seconds_count"))
        assert _delta(m2, m1, "herald_delivery_latency_seconds_sum") >= 0
        inf = [v for lb, v in m2.series("herald_delivery_latency_seconds_bucket")
               if lb.get("le") == "+Inf"]
        assert inf == [m2.value("herald_delivery_latency_seconds_count")]
        assert _delta(m2, m1, "herald_events_dropped_total") == 0
        redis.publish("apps:created", "not json {")
        wait_until(lambda: _delta(scrape(gw.port), m2, "herald_events_dropped_total") == 1, 5,
                   what="herald_events_dropped_total +1 after an invalid payload")

        # two upgrades refused with an HTTP error
        m3 = scrape(gw.port)
        for hdrs, want in (({"Sec-WebSocket-Version": "8"}, 426),
                           ({"Sec-WebSocket-Key": None}, 400)):
            with harness.RawWS(gw.port) as r:
                assert r.request(headers=hdrs).status == want
        m4 = scrape(gw.port)
        assert _delta(m4, m3, "herald_handshake_failures_total") == 2
        assert m4.value("herald_connections") == 3
    finally:
        for c in (c1, c2, c3):
            c.close()
    wait_until(lambda: scrape(gw.port).value("herald_connections") == 0, 5,
               what="herald_connections 0 after every client closed")
    m = scrape(gw.port)
    assert m.value("herald_subscriptions") == 0 and m.value("herald_channels") == 0


# ----------------------------------------------------------------- drain

DRAIN = 4


def test_sigterm_drain_readyz_first_then_paced_1001_closes_and_exit_0(ops):
    gw = ops.gateway(extra=["--drain-timeout", DRAIN])
    assert http_get(gw.port, "/readyz").status == 200
    n = 40

    async def main():
        clients = await asyncio.gather(*(Client.open(gw.url, name="c%d" % i) for i in range(n)))
        try:
            loop = asyncio.get_running_loop()
            closed_at = {}

            async def watch(c):
                code, _ = await c.close_info(DRAIN + 5)
                closed_at[c.name] = time.monotonic()
                return code

            watchers = [asyncio.ensure_future(watch(c)) for c in clients]
            await asyncio.sleep(0)
            gw.expected_exit = True
            t0 = time.monotonic()
            os.kill(gw.pid, signal.SIGTERM)

            def readyz_503():
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:
                    s = http_get(gw.port, "/readyz", timeout=2).status
                    if s == 503:
                        return time.monotonic()
                    time.sleep(0.02)
                return None

            ready_at = await loop.run_in_executor(None, readyz_503)
            open_then = n - len(closed_at)
            assert ready_at is not None, "/readyz not 503 within 1.5 s of SIGTERM"

            def new_upgrade():
                status, c = ws_upgrade_status(gw.port, timeout=3)
                c.close()
                return status
            status = await loop.run_in_executor(None, new_upgrade)
            codes = await asyncio.gather(*watchers)
            rc = await loop.run_in_executor(None, gw.wait_exit, DRAIN + 3)
            return t0, ready_at, open_then, status, codes, closed_at, rc
        finally:
            await close_all(clients)

    t0, ready_at, open_then, status, codes, closed_at, rc = asyncio.run(main())
    assert open_then > 0, "every client was already closed when /readyz turned 503"
    assert status == 503, "new upgrade during the drain: %r" % status
    assert sorted(set(codes)) == [1001], "close codes during the drain: %r" % codes
    times = sorted(t - t0 for t in closed_at.values())
    span = times[-1] - times[0]
    assert span >= 0.5, "all %d closes within %.2fs: not paced (drain %ds)" % (n, span, DRAIN)
    assert times[-1] <= DRAIN / 2 + 1.5, \
        "last close %.2fs after SIGTERM; pacing should use the first half of %ds" % (
            times[-1], DRAIN)
    assert rc == 0, "gateway exit status after SIGTERM: %r\n%s" % (rc, gw.tail(20))
    print("readyz 503 after %.2fs; closes from %.2fs to %.2fs" % (ready_at - t0, times[0],
                                                                 times[-1]))


# ----------------------------------------------------------------- SIGHUP reload

ACL1 = {"rules": [{"channel": "announcements", "access": "public"},
                  {"namespace": "apps", "access": "authenticated"},
                  {"namespace": "user", "access": "owner"},
                  {"namespace": "system", "access": "admin"}],
        "known": ["apps:created", "user:", "announcements"]}
ACL2 = {"rules": [{"channel": "announcements", "access": "public"},
                  {"namespace": "apps", "access": "admin"},
                  {"namespace": "billing", "access": "authenticated"},
                  {"namespace": "user", "access": "owner"}],
        "known": ["billing:invoices", "apps:created", "user:", "announcements"]}


def write(path, text):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, str(path))


def hs(uid, secret, role=None):
    return craft_jwt(claims_for(uid, email=uid + "@example.com", role=role), secret)


def several_accepted(url, token, n=6):
    """n connections (spread over the workers) all accepted; returns the last hello."""
    hello = None
    for _ in range(n):
        hello = accepted(url, token)
    return hello


def test_sighup_reloads_secret_file_and_acl_without_dropping_connections(ops, tmp_path):
    redis = ops.redis()
    sfile, afile = tmp_path / "secret", tmp_path / "acl.json"
    old, new = "old-secret-aaaaaaaaaaaaaaaaaaaaaaaa", "new-secret-bbbbbbbbbbbbbbbbbbbbbbbb"
    write(sfile, old + "\n")
    write(afile, json.dumps(ACL1))
    gw = ops.gateway(redis, workers=2, secret=None,
                     extra=["--jwt-secret-file", sfile, "--acl-file", afile])

    # the files are in force at startup (trailing newline stripped)
    hello = accepted(gw.url, hs("u1", old))
    assert sorted(hello["authorizedChannels"]) == sorted(["apps:created", "user:u1",
                                                          "announcements"]), hello
    live, _ = harness.connect(gw.url, token=hs("u1", old))
    with live:
        assert live.request({"type": "subscribe", "channel": "apps:created"})["type"] == \
            "subscribed"
        assert_error(live.request({"type": "subscribe", "channel": "deployments:started"}),
                     "unknown_channel")
        assert live.request({"type": "subscribe", "channel": "user:u1"})["type"] == "subscribed"
        assert live.request({"type": "subscribe", "channel": "announcements"})["type"] == \
            "subscribed"
        assert_error(live.request({"type": "subscribe", "channel": "user:u2"}), "forbidden")
        assert_error(live.request({"type": "subscribe", "channel": "system:health"}), "forbidden")

        # good reload: new secret, new rules
        write(sfile, new + "\n")
        write(afile, json.dumps(ACL2))
        os.kill(gw.pid, signal.SIGHUP)
        reloaded = len(gw.wait_log_count("event=reloaded", 2))
        # a subscription the new rules forbid (apps:* is admin-only in ACL2)
        # is revoked and the client told so
        revoked = live.recv_json()
        assert revoked.get("type") == "unsubscribed" and revoked.get("channel") == \
            "apps:created" and revoked.get("reason") == "access revoked", revoked
        # the existing connection stays, keeps its other subscriptions (on
        # channels both ACLs allow it) and is served
        assert live.request({"type": "ping", "id": "after-hup"}).get("id") == "after-hup"
        redis.publish("apps:created", json.dumps({"revoked": True}))
        for ch in ("announcements", "user:u1"):
            redis.publish(ch, json.dumps({"after": "reload"}))
            ev = live.recv_json()
            assert ev.get("type") == "event" and ev.get("channel") == ch, ev
            assert ev["data"] == {"after": "reload"}, ev
        for _ in range(4):
            refused(gw.url, hs("u1", old))
        hello = several_accepted(gw.url, hs("u2", new))
        assert sorted(hello["authorizedChannels"]) == sorted(["billing:invoices", "user:u2",
                                                              "announcements"]), hello
        c, _ = harness.connect(gw.url, token=hs("u2", new))
        with c:
            assert c.request({"type": "subscribe", "channel": "billing:invoices"})["type"] == \
                "subscribed"
            assert_error(c.request({"type": "subscribe", "channel": "apps:created"}),
                         "forbidden")
            r = c.request({"type": "list_channels"})
            assert r.get("type") == "channels" and sorted(r.get("channels", [])) == sorted(
                ["billing:invoices", "user:u2", "announcements"]), r
        adm, hello = harness.connect(gw.url, token=hs("adm", new, role="admin"))
        with adm:
            assert adm.request({"type": "subscribe", "channel": "apps:created"})["type"] == \
                "subscribed"
        assert gw.worker_pids() == gw.workers, "workers restarted by SIGHUP"

        # bad reload 1: empty secret file -> refused, the new secret stays
        write(sfile, "")
        os.kill(gw.pid, signal.SIGHUP)
        fails = gw.wait_log_count("event=reload_failed", 2)
        assert all("reason=" in ln for ln in fails), fails
        assert len(gw.log_lines("event=reloaded")) == reloaded, "an empty secret file was accepted"
        several_accepted(gw.url, hs("u2", new))
        refused(gw.url, hs("u2", ""))  # an empty secret must not be in force

        # bad reload 2: invalid ACL JSON -> refused, ACL2 stays
        write(sfile, new + "\n")
        write(afile, '{"rules": [ {"namespace": "apps", "access": ')
        os.kill(gw.pid, signal.SIGHUP)
        fails = gw.wait_log_count("event=reload_failed", 4)
        assert all("reason=" in ln for ln in fails), fails
        hello = several_accepted(gw.url, hs("u2", new))
        assert sorted(hello["authorizedChannels"]) == sorted(["billing:invoices", "user:u2",
                                                              "announcements"]), hello

        # bad reload 3: an unknown access value -> refused too
        write(afile, json.dumps({"rules": [{"namespace": "apps", "access": "everyone"}],
                                 "known": []}))
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log_count("event=reload_failed", 6)
        hello = several_accepted(gw.url, hs("u2", new))
        assert "billing:invoices" in hello["authorizedChannels"], hello
        assert len(gw.log_lines("event=reloaded")) == reloaded, "a bad ACL file was accepted"

        assert live.request({"type": "ping", "id": "end"}).get("id") == "end"
    assert gw.worker_pids() == gw.workers


def test_sighup_reloads_jwt_key_file(ops, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    priv_a, pub_a = harness.gen_ec_keys(tmp_path / "a")
    priv_b, pub_b = harness.gen_ec_keys(tmp_path / "b")
    key = tmp_path / "jwt-key.pem"
    write(key, open(pub_a).read())
    gw = ops.gateway(secret=None, extra=["--jwt-alg", "ES256", "--jwt-key", key])

    def es(priv, uid="u1"):
        return harness.sign_jwt_openssl(claims_for(uid), priv, "ES256")
    tok_a, tok_b = es(priv_a), es(priv_b)
    accepted(gw.url, tok_a)
    refused(gw.url, tok_b)
    live, _ = harness.connect(gw.url, token=tok_a)
    with live:
        write(key, open(pub_b).read())
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log_count("event=reloaded", 1)
        accepted(gw.url, tok_b)
        refused(gw.url, tok_a)
        write(key, "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
        os.kill(gw.pid, signal.SIGHUP)
        fails = gw.wait_log_count("event=reload_failed", 1)
        assert "reason=" in fails[0], fails
        accepted(gw.url, tok_b)
        os.unlink(str(key))
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log_count("event=reload_failed", 2)
        accepted(gw.url, tok_b)
        assert live.request({"type": "ping"}).get("type") == "pong"


@pytest.mark.parametrize("content", [
    '{"rules": [',
    '{"rules": [{"namespace": "apps", "access": "everyone"}], "known": []}',
    '{"rules": "apps"}',
], ids=["invalid-json", "unknown-access", "rules-not-a-list"])
def test_invalid_acl_file_at_startup_exits_2(tmp_path, content):
    path = tmp_path / "acl.json"
    write(path, content)
    rc, err, _ = harness.run_gateway_expect_exit(["--jwt-secret", SECRET, "--acl-file",
                                                  str(path)], redis_url="redis://127.0.0.1:1")
    assert rc == 2, "exit %r for a bad --acl-file: %s" % (rc, err[-500:])


# ----------------------------------------------------------------- logs

def test_user_id_with_newline_cannot_forge_a_log_line(ops):
    gw = ops.gateway()  # --log-level debug
    forged = "ts=2026-01-01T00:00:00.000Z level=error supervisor pid=1 event=worker_died"
    uid = "mallory\n" + forged + "\r\n" + forged
    c, hello = harness.connect(gw.url, token=hs(uid, SECRET))
    with c:
        assert hello["user"]["userId"] == uid
        assert c.request({"type": "ping"})["type"] == "pong"
    wait_until(lambda: gw.log_lines("mallory"), 5, what="the connection logged")
    lines = gw.log_text().splitlines()
    mine = [ln for ln in lines if "mallory" in ln]
    assert len(mine) == 1, mine
    # the value is one quoted logfmt value, its control bytes escaped
    assert 'user="mallory\\n' + forged.replace('"', '\\"') + '\\r\\n' in mine[0], mine[0]
    assert not [ln for ln in lines if "event=worker_died" in ln and "mallory" not in ln], \
        "a forged line reached the log"
    assert all(ln.startswith("ts=") for ln in lines if ln), \
        [ln for ln in lines if ln and not ln.startswith("ts=")]


def test_logs_never_contain_tokens_or_the_secret(ops):
    secret = "log-secret-Zq8wX3vN5mK2pL7rT4yU"
    gw = ops.gateway(secret=secret)  # --log-level debug
    tokens = {
        "header": hs("loghdr", secret),
        "bad-signature": hs("logbad", "some-other-secret"),
        "query": hs("logquery", secret),
        "subprotocol": hs("logproto", secret),
        "bad-query": craft_jwt(claims_for("logbadq"), "yet-another-secret"),
    }
    ids = []
    h1, hello = harness.connect(gw.url, token=tokens["header"])
    ids.append(hello["connectionId"])
    refused(gw.url, tokens["bad-signature"])
    q, hello = harness.connect(harness.query_uri(gw.url, tokens["query"]))
    ids.append(hello["connectionId"])
    p, hello = harness.connect(gw.url, subprotocols=["token-" + tokens["subprotocol"]])
    ids.append(hello["connectionId"])
    refused(harness.query_uri(gw.url, tokens["bad-query"]))
    for c in (h1, q, p):
        assert c.request({"type": "subscribe", "channel": "announcements"})["type"] == \
            "subscribed"
        c.close()
    wait_until(lambda: scrape(gw.port).value("herald_connections") == 0, 5,
               what="every client closed")
    text = gw.log_text()
    assert text.strip(), "empty log at --log-level debug"
    leaks = [name for name, t in tokens.items() if t in text]
    assert not leaks, "log contains the %s token(s)" % leaks
    sig_leaks = [name for name, t in tokens.items() if t.rsplit(".", 1)[1] in text]
    assert not sig_leaks, "log contains the signature of the %s token(s)" % sig_leaks
    assert secret not in text, "log contains the JWT secret"
    assert "Bearer " not in text, "log contains an Authorization header"
    for cid in ids:
        assert "conn=" + cid in text, "no log line with conn=%s" % cid
    nolevel = [ln for ln in text.splitlines() if ln.strip() and "level=" not in ln]
    assert not nolevel, "log lines without level=: %r" % nolevel[:5]


# ----------------------------------------------------------------- start-up and Redis errors

def test_port_already_served_by_another_reuseport_listener_exits_2():
    """A port another process listens on, even with SO_REUSEPORT as a gateway
    worker does, is refused at start (exit 2), not silently shared."""
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        rc, err, _ = harness.run_gateway_expect_exit(["--jwt-secret", "s"], port=port)
        assert rc == 2, (rc, err)
        assert "cannot listen" in err, err
    finally:
        other.close()


def test_redis_refusing_the_subscriber_is_reported_not_silent(ops):
    """Redis wants a password the gateway was not given: the worker never
    gets its subscriber up, says why in its log and in stats, and /readyz
    stays 503."""
    redis = ops.redis(password="pw-needed")
    no_password = "redis://127.0.0.1:%d" % redis.port
    gw = ops.gateway(redis, url=no_password)
    wait_until(lambda: any("NOAUTH" in ln for ln in gw.log_lines("event=redis_")), 10,
               what="a log line naming the NOAUTH refusal")
    assert http_get(gw.port, "/readyz").status == 503
    c, _ = harness.connect(gw.url, token=harness.herald_token("--secret", harness.SECRET,
                                                              "--user", "ops",
                                                              "--role", "admin"))
    with c:
        st = c.request({"type": "stats"})
        redis_state = st["worker"]["redis"]
        assert redis_state["state"] != "up", redis_state
        assert "NOAUTH" in redis_state["lastError"], redis_state
