"""Redis lost while clients stay connected: the gateway keeps its clients,
reconnects, resubscribes, tells each subscribed client about the gap, and
events flow again; stats and system:health report the outage."""

import asyncio
import json
import os
import signal
import time

import harness
from harness_cluster import (cluster, in_thread_publish,  # noqa: F401
                             kill_subscriber_connections_of, open_client, poll, run, tok)
from harness_ops import ops  # noqa: F401

GAP_WAIT = 12.0  # backoff is at most 5 s between attempts, plus resubscribe


def check_gap(msg, channels, who):
    assert msg.get("type") == "gap", "%s: %r" % (who, msg)
    assert sorted(msg.get("channels") or []) == sorted(channels), (
        "%s: gap lists %r, its subscriptions are %r" % (who, msg.get("channels"), channels))
    harness.assert_timestamp(msg.get("timestamp"))


async def gaps_for(c, channels):
    """Reads gap messages until they have named every one of channels, each
    once (after an outage on the same Redis, a channel that had no history is
    read first, and its gap comes when that read finds none)."""
    named = []
    while sorted(named) != sorted(channels):
        g = await c.wait_for(lambda m: m.get("type") == "gap", GAP_WAIT, "gap")
        check_gap(g, [ch for ch in g.get("channels") or [] if ch in channels], c.name)
        named += g["channels"]
        assert len(named) == len(set(named)) and set(named) <= set(channels), (c.name, named)


async def ping_ok(c, timeout=3.0):
    r = await c.request({"type": "ping"}, timeout)
    assert r.get("type") == "pong", "%s: ping got %r" % (c.name, r)


def test_redis_killed_and_restarted_clients_stay_get_gap_and_events_flow_again(cluster):
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="out-a", name="gw-a")
    b = cluster.gateway(redis, gateway_id="out-b", name="gw-b")

    async def main(clients):
        c1 = await open_client(clients, a.url, "u1", "u1@a")
        c2 = await open_client(clients, a.url, "u2", "u2@a")
        c3 = await open_client(clients, b.url, "u1", "u1@b")
        idle = await open_client(clients, a.url, "u2", "idle@a")
        adm_a = await open_client(clients, a.url, "admin", "admin@a")
        health = await open_client(clients, b.url, "admin", "health@b")
        subs = {c1: ["apps:created", "user:u1"], c2: ["apps:updated"], c3: ["apps:created"],
                health: ["system:health", "apps:status"]}
        for c, chans in subs.items():
            for ch in chans:
                await c.subscribe(ch)
        await in_thread_publish(redis, "apps:created", {"before": True})
        for c in (c1, c3):
            assert (await c.event("apps:created"))["data"] == {"before": True}

        st = (await adm_a.stats())["worker"]["redis"]
        assert st["state"] == "up", st
        outages0, reconnects0 = st["outages"], st["reconnects"]

        redis.kill9()
        killed_at = time.monotonic()
        # the gateway notices: state leaves "up" (a killed server closes the socket)
        down = await poll(lambda: adm_a.stats(),
                          lambda s: s["worker"]["redis"]["state"] in ("down", "connecting"),
                          6, what="worker.redis.state down/connecting during the outage")
        assert down["worker"]["redis"]["outages"] >= outages0 + 1, down["worker"]["redis"]
        # clients stay connected and served during the outage
        for c in (c1, c2, c3, idle, health):
            await ping_ok(c)
        r = await c1.request({"type": "list_channels"})
        assert r.get("type") == "channels", r
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - killed_at)))
        for c in (c1, c2, c3, idle, health):
            assert c.ws.open, "%s was disconnected during the Redis outage" % c.name
        rs = (await adm_a.stats())["worker"]["redis"]
        assert rs["state"] in ("down", "connecting"), rs
        assert rs["downSeconds"] >= 1.0, "Redis down for >= 1.5 s: %r" % rs

        await asyncio.get_running_loop().run_in_executor(None, redis.restart)
        restarted_at = time.monotonic()
        for c, chans in subs.items():
            g = await c.wait_for(lambda m: m.get("type") == "gap", GAP_WAIT,
                                 "gap after the Redis restart")
            check_gap(g, chans, c.name)
        gap_delay = time.monotonic() - restarted_at

        # every resubscription is in place: events published now arrive
        await in_thread_publish(redis, "apps:created", {"after": 1})
        await in_thread_publish(redis, "apps:updated", {"after": 2})
        await in_thread_publish(redis, "user:u1", {"after": 3})
        assert (await c1.event("apps:created"))["data"] == {"after": 1}
        assert (await c1.event("user:u1"))["data"] == {"after": 3}
        assert (await c2.event("apps:updated"))["data"] == {"after": 2}
        assert (await c3.event("apps:created"))["data"] == {"after": 1}
        # a client without subscriptions gets no gap and no events
        await idle.nothing(0.2)

        # the command link reconnects on its own backoff (<= 5 s between attempts)
        st = await poll(lambda: adm_a.stats(),
                        lambda s: s["worker"]["redis"]["state"] == "up"
                        and s["worker"]["redis"]["commandConnected"] is True,
                        7, what="worker.redis up and commandConnected after the restart")
        rs = st["worker"]["redis"]
        assert rs["outages"] >= outages0 + 1, rs
        assert rs["reconnects"] >= reconnects0 + 1, rs
        assert rs["commandConnected"] is True, rs
        assert rs["lastOutageSeconds"] >= 1.0, (
            "Redis was down >= 1.5 s but lastOutageSeconds is %r" % rs)
        assert rs["downSeconds"] == 0, "downSeconds is the current outage: %r" % rs

        return gap_delay

    gap_delay = run(main)
    assert gap_delay < GAP_WAIT


def test_redis_dropping_the_subscriber_connection_causes_resubscribe_and_gap(cluster):
    """CLIENT KILL TYPE pubsub: Redis stays up but closes the gateways' subscriber
    connections; they reconnect and resubscribe on their own. The channels
    have no history: each gets a gap once its read finds none."""
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="kill-a", name="gw-a")

    async def main(clients):
        c1 = await open_client(clients, a.url, "u1", "u1@a")
        await c1.subscribe("deployments:status")
        await c1.subscribe("apps:created")
        with redis.client() as r:
            killed = r.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1, "no pubsub client to kill: %r" % killed
        await gaps_for(c1, ["deployments:status", "apps:created"])
        await in_thread_publish(redis, "deployments:status", {"x": 1})
        assert (await c1.event("deployments:status"))["data"] == {"x": 1}
        await ping_ok(c1)

    run(main)


def test_silently_stalled_redis_is_detected_by_the_probe(cluster):
    """SIGSTOP freezes Redis: the TCP connection stays open but nothing is
    answered, so only the publish probe can notice. After SIGCONT the gateway
    has counted an outage, resubscribed and sent a gap."""
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="stall-a", name="gw-a")

    async def main(clients):
        c1 = await open_client(clients, a.url, "u1", "u1@a")
        adm = await open_client(clients, a.url, "admin", "admin@a")
        await c1.subscribe("storage:uploaded")
        before = (await adm.stats())["worker"]["redis"]["outages"]
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            st = await poll(lambda: adm.stats(),
                            lambda s: s["worker"]["redis"]["state"] != "up",
                            8, what="probe-detected outage (state not up) while Redis is stopped")
            assert st["worker"]["redis"]["outages"] >= before + 1, st["worker"]["redis"]
            await ping_ok(c1)
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)
        g = await c1.wait_for(lambda m: m.get("type") == "gap", GAP_WAIT, "gap after SIGCONT")
        check_gap(g, ["storage:uploaded"], c1.name)
        await in_thread_publish(redis, "storage:uploaded", {"f": "a.txt"})
        assert (await c1.event("storage:uploaded"))["data"] == {"f": "a.txt"}
        await poll(lambda: adm.stats(), lambda s: s["worker"]["redis"]["state"] == "up", 5,
                   what="state up after SIGCONT")

    run(main)


def test_one_gateway_losing_its_subscriber_is_announced_on_system_health(cluster):
    """Only gateway a's subscriber connection is dropped (CLIENT KILL ID): an
    admin on gateway b, subscribed to system:health, sees a's redis_lost and
    redis_restored; a's subscribed client gets a gap, b's clients do not."""
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="health-a", name="gw-a")
    b = cluster.gateway(redis, gateway_id="health-b", name="gw-b")

    async def main(clients):
        c1 = await open_client(clients, a.url, "u1", "u1@a")
        health = await open_client(clients, b.url, "admin", "health@b")
        c3 = await open_client(clients, b.url, "u2", "u2@b")
        await c1.subscribe("apps:created")
        await health.subscribe("system:health")
        await c3.subscribe("apps:created")
        [wpid] = a.worker_pids()
        n = await asyncio.get_running_loop().run_in_executor(
            None, kill_subscriber_connections_of, redis, wpid)
        assert n == 1, "gateway a's worker %d has %d subscriber connections" % (wpid, n)

        def from_a(kind):
            return lambda m: (m.get("type") == "event" and m.get("channel") == "system:health"
                              and m["data"].get("event") == kind
                              and m["data"].get("gatewayId") == "health-a")
        lost = await health.wait_for(from_a("redis_lost"), 5, "redis_lost from health-a")
        restored = await health.wait_for(from_a("redis_restored"), GAP_WAIT,
                                         "redis_restored from health-a")
        for ev in (lost, restored):
            d = ev["data"]
            assert d.get("pid") == wpid and d.get("worker") == 0, d
            assert isinstance(d.get("host"), str) and d["host"], d
            harness.assert_timestamp(d.get("timestamp"))
        g = await c1.wait_for(lambda m: m.get("type") == "gap", GAP_WAIT, "gap")
        check_gap(g, ["apps:created"], c1.name)
        await in_thread_publish(redis, "apps:created", {"k": 1})
        for c in (c1, c3):
            assert (await c.event("apps:created"))["data"] == {"k": 1}
        # gateway b never lost Redis: no gap there
        await c3.nothing(0.2)
        assert not [m for m in health.pending if m.get("type") == "gap"], health.pending

    run(main)


def test_subscription_changes_during_an_outage_apply_after_restore(cluster):
    """While Redis is down a client unsubscribes one channel and subscribes
    another: both requests get a reply (the subscribe at the latest once Redis
    is back, or an error it can retry), the gap never names the dropped channel,
    and afterwards events flow exactly on the channels it holds."""
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="chg-a", name="gw-a")

    async def main(clients):
        c1 = await open_client(clients, a.url, "u1", "u1@a")
        adm = await open_client(clients, a.url, "admin", "admin@a")
        await c1.subscribe("apps:created")
        await c1.subscribe("apps:updated")
        redis.kill9()
        await poll(adm.stats, lambda s: s["worker"]["redis"]["state"] != "up", 6,
                   what="state not up after SIGKILL")
        await c1.send({"type": "unsubscribe", "channel": "apps:updated", "id": "u"})
        await c1.send({"type": "subscribe", "channel": "apps:deleted", "id": "s"})
        unsub = await c1.wait_for(lambda m: m.get("id") == "u", 5, "reply to the unsubscribe")
        assert unsub.get("type") == "unsubscribed" and unsub.get("channel") == "apps:updated", unsub
        await asyncio.sleep(0.5)
        await asyncio.get_running_loop().run_in_executor(None, redis.restart)

        sub = await c1.wait_for(lambda m: m.get("id") == "s", GAP_WAIT,
                                "reply to the subscribe sent during the outage")
        gap = await c1.wait_for(lambda m: m.get("type") == "gap", GAP_WAIT, "gap")
        chans = set(gap.get("channels") or [])
        assert "apps:created" in chans and "apps:updated" not in chans, gap
        assert chans <= {"apps:created", "apps:deleted"}, gap
        if sub.get("type") == "error":
            await c1.subscribe("apps:deleted")  # refused while down: retry now
        else:
            assert sub.get("type") == "subscribed" and sub.get("channel") == "apps:deleted", sub
        for ch in ("apps:updated", "apps:created", "apps:deleted"):
            await in_thread_publish(redis, ch, {"on": ch})
        assert (await c1.recv())["data"] == {"on": "apps:created"}
        assert (await c1.recv())["data"] == {"on": "apps:deleted"}
        await c1.nothing(0.3)

    run(main)


def test_admin_on_a_gateway_that_lost_redis_sees_its_redis_restored(cluster):
    """Redis itself is down for 2 s, so every gateway lost it. An admin
    dashboard subscribed to system:health on gateway a must still learn that
    a's Redis came back: a's redis_restored has to reach a's own subscribers,
    i.e. be published once a's command link is up and its subscriptions are
    back (it may arrive before or after the gap)."""
    outage = 2.0
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="self-a", name="gw-a")

    async def main(clients):
        adm = await open_client(clients, a.url, "admin", "admin@a")
        await adm.subscribe("system:health")
        [wpid] = a.worker_pids()
        redis.kill9()
        await poll(adm.stats, lambda s: s["worker"]["redis"]["state"] != "up", 6,
                   what="state not up after SIGKILL")
        await asyncio.sleep(outage)  # long enough for the reconnect backoff to grow
        await asyncio.get_running_loop().run_in_executor(None, redis.restart)
        gap = await adm.wait_for(lambda m: m.get("type") == "gap", GAP_WAIT, "gap")
        check_gap(gap, ["system:health"], adm.name)
        ev = await adm.wait_for(
            lambda m: m.get("type") == "event" and m.get("channel") == "system:health"
            and m["data"].get("event") == "redis_restored", 5,
            "system:health redis_restored from its own gateway")
        d = ev["data"]
        assert d.get("gatewayId") == "self-a" and d.get("pid") == wpid, d
        harness.assert_timestamp(d.get("timestamp"))

    run(main)


def test_redis_refusing_one_subscribe_fails_that_channel_only(ops):
    """A Redis ACL user narrower than the channel rules refuses SUBSCRIBE of
    some channels (NOPERM): the requester gets subscribe_failed, every other
    channel and connection is untouched, and the link does not reconnect."""
    redis = ops.redis()
    with redis.client() as r:
        r.command("ACL", "SETUSER", "narrow", "on", ">narrow-pw", "~*", "resetchannels",
                  "&herald:apps:*", "&herald:__probe__:*", "+@all")
    gw = ops.gateway(redis, url="redis://narrow:narrow-pw@127.0.0.1:%d" % redis.port)
    c, _ = harness.connect(gw.url, token=tok("u1"))
    other, _ = harness.connect(gw.url, token=tok("u2"))
    with c, other:
        assert other.request({"type": "subscribe", "channel": "apps:created"})["type"] == \
            "subscribed"
        r = c.request({"type": "subscribe", "channel": "apps:created", "id": 1})
        assert r["type"] == "subscribed", r
        r = c.request({"type": "subscribe", "channel": "deployments:started", "id": 2})
        harness.assert_error(r, "subscribe_failed", 2)
        assert "NOPERM" in r["message"], r
        assert c.request({"type": "ping", "id": 3})["type"] == "pong"
        for n in range(20):
            redis.publish("apps:created", json.dumps({"n": n}))
        for who in (c, other):
            got = [who.recv_json(5)["data"]["n"] for _ in range(20)]
            assert got == list(range(20)), got
        # asking again is answered again; the link stays up throughout
        r = c.request({"type": "subscribe", "channel": "deployments:started", "id": 4})
        harness.assert_error(r, "subscribe_failed", 4)
        time.sleep(1.5)
        log = gw.log_text()
        assert "event=redis_lost" not in log and "event=redis_restored" not in log, \
            [ln for ln in log.splitlines() if "redis" in ln][-5:]
        c.no_message(0.2)
        other.no_message(0.2)
