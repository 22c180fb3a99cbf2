"""Who may subscribe to what: every row of the ACL table for anonymous, user u1,
another user u2 and an admin, through a real gateway."""

import json
import subprocess

import pytest

import harness
from conftest import SECRET
from harness import assert_error, claims_for, connect, craft_jwt

IDENTITIES = ["anonymous", "u1", "u2", "admin"]

AUTHENTICATED = ["apps:created", "users:updated", "database:row_updated", "deployments:started",
                 "storage:uploaded"]

# channel -> {identity: expected outcome}; "ok" means subscribed, else the error code
TABLE = {"announcements": {i: "ok" for i in IDENTITIES}}
for _ch in AUTHENTICATED:
    TABLE[_ch] = {"anonymous": "forbidden", "u1": "ok", "u2": "ok", "admin": "ok"}
TABLE["user:u1"] = {"anonymous": "forbidden", "u1": "ok", "u2": "forbidden", "admin": "ok"}
for _ch in ("system:health", "system:alerts"):
    TABLE[_ch] = {"anonymous": "forbidden", "u1": "forbidden", "u2": "forbidden", "admin": "ok"}
TABLE["foo:bar"] = {i: "unknown_channel" for i in IDENTITIES}

CASES = [(ch, who, outcome) for ch, row in TABLE.items() for who, outcome in row.items()]


@pytest.fixture(scope="module")
def clients(gateway, tokens):
    """One connection per identity, shared by the module (subscriptions are idempotent)."""
    out = {}
    try:
        out["anonymous"] = connect(gateway.url)[0]
        out["u1"] = connect(gateway.url, token=tokens["u1"])[0]
        out["u2"] = connect(gateway.url, token=tokens["u2"])[0]
        out["admin"] = connect(gateway.url, token=tokens["admin"])[0]
        yield out
    finally:
        for c in out.values():
            c.close()


@pytest.mark.parametrize("channel,who,outcome", CASES,
                         ids=["%s-%s" % (ch, who) for ch, who, _ in CASES])
def test_acl_subscribe(clients, channel, who, outcome):
    c = clients[who]
    r = c.request({"type": "subscribe", "channel": channel, "id": "acl"})
    if outcome == "ok":
        assert r["type"] == "subscribed" and r["channel"] == channel and r.get("id") == "acl", r
    else:
        assert_error(r, outcome, req_id="acl")
        if outcome == "forbidden":
            assert r["message"] == "Not authorized to subscribe to this channel", r
    # the connection survives either way
    assert c.request({"type": "ping"})["type"] == "pong"


@pytest.mark.parametrize("who,uid,admin", [("anonymous", None, False), ("u1", "u1", False),
                                           ("u2", "u2", False), ("admin", "adm", True)])
def test_list_channels_is_filtered_by_access(clients, who, uid, admin):
    r = clients[who].request({"type": "list_channels"})
    assert r["type"] == "channels", r
    assert r["channels"] == harness.expected_channels(uid, admin=admin)


def test_admin_may_subscribe_to_any_users_channel(clients):
    for uid in ("u1", "u2", "someone-else"):
        r = clients["admin"].request({"type": "subscribe", "channel": "user:" + uid})
        assert r["type"] == "subscribed", r


def test_user_channel_prefix_of_own_id_is_forbidden(gateway, tokens):
    # u1 must not get user:u10 or user:u by a prefix match
    c, _ = connect(gateway.url, token=tokens["u1"])
    with c:
        for ch in ("user:u10", "user:u", "user:U1"):
            assert_error(c.request({"type": "subscribe", "channel": ch}), "forbidden")


def test_any_name_in_authenticated_namespaces_is_allowed_for_users(clients):
    for ch in ("apps:my-custom.event_1", "deployments:x", "storage:a:b"):
        r = clients["u2"].request({"type": "subscribe", "channel": ch})
        assert r["type"] == "subscribed", r


def test_system_namespace_beyond_known_channels_is_admin_only(clients):
    assert clients["admin"].request(
        {"type": "subscribe", "channel": "system:metrics"})["type"] == "subscribed"
    assert_error(clients["u1"].request({"type": "subscribe", "channel": "system:metrics"}),
                 "forbidden")
    assert_error(clients["anonymous"].request(
        {"type": "subscribe", "channel": "system:whatever"}), "forbidden")


def user_channel(uid):
    """The channel herald-pub --user-channel computes for uid (what a service publishes to)."""
    out = subprocess.run([harness.PUB_BIN, "--user-channel", uid], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_user_channel_of_plain_id_is_user_colon_id():
    assert user_channel("u1") == "user:u1"
    assert user_channel("a.b-c_d:e") == "user:a.b-c_d:e"


@pytest.mark.parametrize("uid", ["auth0|5f1c2b", "ann.smith+herald@example.com"])
def test_id_outside_channel_alphabet_receives_events_on_its_hashed_channel(
        gateway, redis_server, uid):
    channel = user_channel(uid)
    assert channel.startswith("userhash:") and len(channel) == len("userhash:") + 64, channel
    c, hello = connect(gateway.url, token=craft_jwt(claims_for(uid), SECRET))
    with c:
        assert hello["user"]["userId"] == uid
        assert channel in hello["authorizedChannels"], hello["authorizedChannels"]
        assert c.request({"type": "list_channels"})["channels"] == hello["authorizedChannels"]
        r = c.request({"type": "subscribe", "channel": channel, "id": 1})
        assert r["type"] == "subscribed" and r["channel"] == channel, r
        payload = {"notification": "for %s" % uid}
        assert redis_server.publish(channel, json.dumps(payload)) >= 1
        ev = c.recv_json()
        assert ev["type"] == "event" and ev["channel"] == channel, ev
        assert ev["data"] == payload, ev


def test_plain_id_never_reaches_a_hashed_channel(gateway, tokens):
    channel = user_channel("auth0|5f1c2b")
    # not an ordinary user, and not one whose plain id is the hash itself
    hash_hex = channel.split(":", 1)[1]
    looks_like_hash = craft_jwt(claims_for(hash_hex), SECRET)
    for tok in (tokens["u1"], looks_like_hash):
        c, hello = connect(gateway.url, token=tok)
        with c:
            assert channel not in hello["authorizedChannels"]
            assert_error(c.request({"type": "subscribe", "channel": channel}), "forbidden")
    other = craft_jwt(claims_for("auth0|other"), SECRET)
    c, _ = connect(gateway.url, token=other)
    with c:
        assert_error(c.request({"type": "subscribe", "channel": channel}), "forbidden")
    c, _ = connect(gateway.url, token=tokens["admin"])
    with c:
        assert c.request({"type": "subscribe", "channel": channel})["type"] == "subscribed"


@pytest.mark.parametrize("argv", [["--user-channel", ""], ["--user-channel", "u1", "apps:x"]],
                         ids=["empty-id", "extra-argument"])
def test_user_channel_bad_usage_exits_2(argv):
    out = subprocess.run([harness.PUB_BIN] + argv, capture_output=True, text=True, timeout=10)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == "" and "--user-channel" in out.stderr, out.stderr
