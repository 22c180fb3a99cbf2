"""Cross-gateway fan-out: two gateway processes (different ports and gateway
ids) on one redis-server; events published into Redis by herald-pub, raw
redis-cli PUBLISH, a raw RESP socket and the C library reach every subscribed
client on both gateways, and nobody else.

"Nothing arrived" is proven twice: nothing within a bounded wait, then a
sentinel event on a channel the client does hold arrives as its very next
message (so an earlier stray event would have been seen first).
"""

import asyncio
import json

import pytest

import harness
from harness_cluster import (Client, Cluster, build_lib_publisher, cluster,  # noqa: F401
                             herald_pub, in_thread, lib_publish, open_client, poll,
                             publish_burst, redis_cli_publish, run, tok)
from harness_redis import publish_mixed_burst


@pytest.fixture(scope="module")
def fan(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("fanout")) as c:
        r = c.redis()
        a = c.gateway(r, gateway_id="fan-a", name="gw-a")
        b = c.gateway(r, gateway_id="fan-b", name="gw-b")
        yield c, r, a, b


def check_event(msg, channel, data):
    assert msg.get("type") == "event", msg
    assert msg.get("channel") == channel, msg
    assert msg.get("data") == data, "data differs from the published payload: %r" % msg
    harness.assert_timestamp(msg.get("timestamp"))


async def numsub(redis, channel):
    def q():
        with redis.client() as c:
            return c.command("PUBSUB", "NUMSUB", "herald:" + channel)[1]
    return await asyncio.get_running_loop().run_in_executor(None, q)


async def sentinel_is_next(redis, clients, channel):
    """Publishes a sentinel on channel (every client given is subscribed to it)
    and asserts it is the very next message each of them gets."""
    if isinstance(clients, Client):
        clients = [clients]
    payload = {"sentinel": channel}
    await in_thread(redis.publish, channel, json.dumps(payload))
    for c in clients:
        m = await c.recv(5)
        check_event(m, channel, payload)


@pytest.fixture(scope="module")
def lib_publisher(tmp_path_factory):
    return build_lib_publisher(tmp_path_factory.mktemp("libpub"))


@pytest.mark.parametrize("how", ["herald-pub", "redis-cli", "raw-resp", "library"])
def test_event_reaches_subscribers_on_both_gateways(fan, how, request):
    _, redis, a, b = fan
    exe = request.getfixturevalue("lib_publisher") if how == "library" else None
    payload = {"id": "app-%s" % how, "name": "my-app \u00e9\u2713", "n": 42,
               "nested": {"ok": True, "list": [1, 2.5, None]}}
    text = json.dumps(payload, ensure_ascii=False)

    def publish():
        if how == "herald-pub":
            herald_pub(redis.url, "apps:created", text)
            return None
        if how == "redis-cli":
            return redis_cli_publish(redis.port, "apps:created", text)
        if how == "raw-resp":
            return redis.publish("apps:created", text)
        return lib_publish(exe, redis.url, "apps:created", text)

    async def main(clients):
        specs = [(a.url, "u1", "a-u1"), (a.url, "admin", "a-admin"),
                 (b.url, "u2", "b-u2"), (b.url, "u1", "b-u1")]
        subs = await asyncio.gather(*(Client.open(u, tok(t), name=n) for u, t, n in specs))
        clients.extend(subs)
        for c in subs:
            await c.subscribe("apps:created")
        receivers = await in_thread(publish)
        if receivers is not None:
            # one Redis subscriber per gateway worker holds the channel
            assert receivers == 2, "PUBLISH reached %r Redis subscribers, expected 2" % receivers
        for c in subs:
            check_event(await c.event("apps:created"), "apps:created", payload)
        for c in subs:
            await c.nothing(0.2)

    run(main)


def test_clients_on_other_channels_or_without_subscriptions_receive_nothing(fan):
    _, redis, a, b = fan

    async def main(clients):
        sub_a = await open_client(clients, a.url, "u1", "a-sub")
        sub_b = await open_client(clients, b.url, "u2", "b-sub")
        other_a = await open_client(clients, a.url, "u2", "a-other")
        other_b = await open_client(clients, b.url, "admin", "b-other")
        idle_a = await open_client(clients, a.url, "u1", "a-idle")
        idle_b = await open_client(clients, b.url, None, "b-anon-idle")
        anon_a = await open_client(clients, a.url, None, "a-anon-ann")
        for c in (sub_a, sub_b):
            await c.subscribe("apps:created")
        for c in (other_a, other_b):
            await c.subscribe("apps:updated")
        await anon_a.subscribe("announcements")

        for i in range(5):
            await in_thread(redis.publish, "apps:created", json.dumps({"i": i}))
        for c in (sub_a, sub_b):
            for i in range(5):
                check_event(await c.event(), "apps:created", {"i": i})
        for c in (other_a, other_b, idle_a, idle_b, anon_a):
            await c.nothing(0.3)
        await sentinel_is_next(redis, [other_a, other_b], "apps:updated")
        await sentinel_is_next(redis, anon_a, "announcements")
        # the idle clients must not get the sentinels either
        for c in (idle_a, idle_b, sub_a, sub_b):
            await c.nothing(0.2)

    run(main)


def test_unsubscribed_client_stops_receiving_and_last_leaver_releases_redis_channel(fan):
    _, redis, a, b = fan

    async def main(clients):
        a1 = await open_client(clients, a.url, "u1", "a1")
        a2 = await open_client(clients, a.url, "u2", "a2")
        b1 = await open_client(clients, b.url, "u1", "b1")
        for c in (a1, a2, b1):
            await c.subscribe("apps:deleted")
        await in_thread(redis.publish, "apps:deleted", '{"n":1}')
        for c in (a1, a2, b1):
            check_event(await c.event(), "apps:deleted", {"n": 1})

        await a1.unsubscribe("apps:deleted")
        await b1.unsubscribe("apps:deleted")  # the last subscriber on gateway b
        await in_thread(redis.publish, "apps:deleted", '{"n":2}')
        check_event(await a2.event(), "apps:deleted", {"n": 2})
        await a1.nothing(0.4)
        await b1.nothing(0.1)
        # still connected and served: a sentinel on another channel comes next
        for c in (a1, b1):
            await c.subscribe("apps:status")
        await sentinel_is_next(redis, [a1, b1], "apps:status")
        # gateway b had no local subscriber left, so it released the Redis channel
        await poll(lambda: numsub(redis, "apps:deleted"), lambda n: n == 1, 3,
                   what="PUBSUB NUMSUB herald:apps:deleted == 1 (only gateway a)")

    run(main)


def test_user_channel_events_reach_only_that_user_and_a_subscribed_admin(fan):
    _, redis, a, b = fan

    async def main(clients):
        u1 = await open_client(clients, a.url, "u1", "u1@a")
        u1b = await open_client(clients, b.url, "u1", "u1@b")
        u2 = await open_client(clients, b.url, "u2", "u2@b")
        adm = await open_client(clients, b.url, "admin", "admin@b")
        adm_idle = await open_client(clients, a.url, "admin", "admin-idle@a")
        await u1.subscribe("user:u1")
        await u1b.subscribe("user:u1")
        await u2.subscribe("user:u2")
        await adm.subscribe("user:u1")
        denied = await u2.request({"type": "subscribe", "channel": "user:u1"})
        harness.assert_error(denied, "forbidden")

        payload = {"notification": "for u1 only"}
        await in_thread(redis.publish, "user:u1", json.dumps(payload))
        for c in (u1, u1b, adm):
            check_event(await c.event(), "user:u1", payload)
        await u2.nothing(0.4)
        await adm_idle.nothing(0.1)
        await sentinel_is_next(redis, u2, "user:u2")
        for c in (u1, u1b, adm):
            await c.nothing(0.2)

    run(main)


def test_interleaved_channels_in_one_burst_arrive_in_publish_order(fan):
    """Events of several channels published back to back (one Redis read on
    the gateway) reach a client subscribed to all of them in publish order:
    batching a burst per channel must not reorder across channels."""
    _, redis, a, _ = fan
    channels = ["deployments:started", "deployments:status", "deployments:completed"]
    events = [(channels[i % 3 if i % 7 else 0], json.dumps({"seq": i})) for i in range(600)]

    async def main(clients):
        c = await open_client(clients, a.url, "u1", "order-u1")
        for ch in channels:
            await c.subscribe(ch)
        counts = await in_thread(publish_mixed_burst, redis.port, events)
        assert all(n >= 1 for n in counts), counts[:5]
        got = []
        for _ in events:
            m = await c.recv(10)
            assert m.get("type") == "event", m
            got.append((m["channel"], m["data"]["seq"]))
        assert got == [(ch, json.loads(p)["seq"]) for ch, p in events], next(
            (i, g, e) for i, (g, e) in enumerate(zip(got, events)) if g[1] != json.loads(e[1])["seq"])

    run(main)


def test_burst_of_10000_events_arrives_complete_and_in_order_at_every_subscriber(fan):
    _, redis, a, b = fan
    n = 10000

    async def main(clients):
        specs = [(a.url, "u1", "a-u1"), (a.url, "u2", "a-u2"), (a.url, "admin", "a-admin"),
                 (b.url, "u1", "b-u1"), (b.url, "u2", "b-u2"), (b.url, None, "b-anon")]
        subs = await asyncio.gather(*(Client.open(u, tok(t) if t else None, name=nm)
                                      for u, t, nm in specs))
        clients.extend(subs)
        for c in subs:
            await c.subscribe("apps:status" if c.name != "b-anon" else "announcements")

        async def collect(c):
            seqs = []
            while len(seqs) < n:
                m = await c.recv(15)
                assert m.get("type") == "event", "%s: after %d events got %r" % (
                    c.name, len(seqs), m)
                seqs.append(m["data"]["seq"])
            return seqs

        readers = [asyncio.ensure_future(collect(c)) for c in subs]
        payloads = [json.dumps({"seq": i}, separators=(",", ":")) for i in range(n)]
        try:
            # published from a thread so the readers keep draining meanwhile
            counts = await in_thread(publish_burst, redis.port, "apps:status", payloads)
            ann = await in_thread(publish_burst, redis.port, "announcements", payloads)
            assert counts == [2] * n, "some PUBLISH reached != 2 gateways: %r" % (
                sorted(set(counts)),)
            assert ann == [1] * n, (
                "herald:announcements reached %r Redis subscribers; only gateway b has a local "
                "subscriber (did gateway a keep it after its last client closed?)"
                % (sorted(set(ann)),))
            results = await asyncio.wait_for(asyncio.gather(*readers), 60)
        finally:
            for t in readers:
                t.cancel()
        for c, seqs in zip(subs, results):
            if seqs != list(range(n)):
                missing = sorted(set(range(n)) - set(seqs))
                first_bad = next(i for i, s in enumerate(seqs) if s != i)
                pytest.fail("%s: events out of order or missing: first wrong index %d "
                            "(got %r), %d missing (first %r)" % (
                                c.name, first_bad, seqs[first_bad:first_bad + 5],
                                len(missing), missing[:5]))
        for c in subs:
            await c.nothing(0.2)

    run(main)


def test_invalid_payloads_are_dropped_counted_and_serving_continues(fan):
    _, redis, a, b = fan
    limit = 65536  # default --max-message-size; inclusive
    body_at_limit = json.dumps({"pad": "x" * (limit - len('{"pad": ""}'))})
    assert len(body_at_limit) == limit
    invalid = [
        "this is not json",
        '{"unterminated": ',
        "",
        '{"a":1} trailing',
        json.dumps({"pad": "y" * limit}),  # valid JSON, over the size limit
        body_at_limit + " ",  # limit + 1 bytes
        b'{"a":"\xff\xfe"}',  # not UTF-8, so not JSON text
        b'{"a":1}\x00{"b":2}',  # a NUL byte after a valid prefix
    ]

    async def dropped(c):
        return (await c.stats())["worker"]["eventsDropped"]

    async def main(clients):
        adm = await open_client(clients, a.url, "admin", "admin@a")
        u1 = await open_client(clients, a.url, "u1", "u1@a")
        await adm.subscribe("apps:updated")
        await u1.subscribe("apps:updated")
        before = await dropped(adm)
        for p in invalid:
            await in_thread(redis.publish, "apps:updated", p)
        await in_thread(redis.publish, "apps:updated", '{"valid":true}')
        for c in (adm, u1):
            m = await c.recv(5)
            check_event(m, "apps:updated", {"valid": True})
        # a payload of exactly the limit is accepted
        await in_thread(redis.publish, "apps:updated", body_at_limit)
        for c in (adm, u1):
            m = await c.recv(5)
            check_event(m, "apps:updated", json.loads(body_at_limit))
        after = await dropped(adm)
        assert after - before == len(invalid), (
            "eventsDropped went %d -> %d after %d invalid payloads" % (before, after,
                                                                      len(invalid)))
        st = await adm.stats()
        assert st["worker"]["connections"] >= 2
        for c in (adm, u1):
            await c.nothing(0.2)

    run(main)
    assert a.alive() and b.alive()


def test_any_json_value_is_delivered_unchanged_as_data(fan):
    """DESIGN: only payloads that are not valid JSON are dropped, so every JSON
    value (scalars, arrays, big integers, unicode, escapes) is delivered."""
    _, redis, a, b = fan
    payloads = [
        "[1,2,3]", '"just a string"', "42", "-0.5e-3", "true", "null", "{}",
        ' {"spaced" : [ 1 , 2 ] } ',
        '{"u":"caf\u00e9 \u2713 \U0001F600","esc":"\\"q\\" \\\\ \\n \\u2028 \\u00e9"}',
        '{"i64":9223372036854775807,"neg":-9223372036854775808}',
        '{"deep":' + "[" * 64 + "]" * 64 + "}",
    ]

    async def main(clients):
        ca = await open_client(clients, a.url, "u1", "u1@a")
        cb = await open_client(clients, b.url, "u2", "u2@b")
        for c in (ca, cb):
            await c.subscribe("database:row_updated")
        missing = []
        for p in payloads:
            await in_thread(redis.publish, "database:row_updated", p.encode())
            await in_thread(redis.publish, "database:row_updated", '{"marker":1}')
            for c in (ca, cb):
                m = await c.recv(5)
                if m.get("data") == {"marker": 1}:
                    missing.append((c.name, p))
                    continue
                check_event(m, "database:row_updated", json.loads(p))
                check_event(await c.recv(5), "database:row_updated", {"marker": 1})
        assert not missing, "valid JSON payloads not delivered: %r" % missing

    run(main)


def test_integer_beyond_64_bits_is_valid_json_and_delivered(fan):
    """18446744073709551615 (a uint64 id) is valid JSON (RFC 8259 grammar) and
    the gateway forwards the payload bytes verbatim, so it must not drop it."""
    _, redis, a, b = fan
    payload = '{"u64":18446744073709551615,"big":123456789012345678901234567890}'

    async def main(clients):
        ca = await open_client(clients, a.url, "u1", "u1@a")
        await ca.subscribe("database:table_created")
        await in_thread(redis.publish, "database:table_created", payload)
        await in_thread(redis.publish, "database:table_created", '{"marker":1}')
        m = await ca.recv(5)
        assert m.get("data") != {"marker": 1}, "valid JSON payload %s was dropped" % payload
        check_event(m, "database:table_created", json.loads(payload))

    run(main)


def test_password_protected_redis_with_db_and_custom_channel_prefix(cluster):
    """--redis with password and db number; --channel-prefix changes the Redis
    channel names, so two prefixes on one Redis are separate namespaces."""
    redis = cluster.redis(password="pw-s3cret")
    a = cluster.gateway(redis, url=redis.url + "/3", gateway_id="pfx-a", name="gw-a",
                        extra=["--channel-prefix", "acme:"])
    b = cluster.gateway(redis, gateway_id="pfx-b", name="gw-b")

    async def main(clients):
        ca = await open_client(clients, a.url, "admin", "admin@acme")
        cb = await open_client(clients, b.url, "u1", "u1@herald")
        for c in (ca, cb):
            await c.subscribe("apps:created")
        n = await in_thread(redis.publish, "apps:created", '{"to":"acme"}', "acme:")
        assert n == 1, n
        check_event(await ca.event(), "apps:created", {"to": "acme"})
        n = await in_thread(redis.publish, "apps:created", '{"to":"herald"}', "herald:")
        assert n == 1, n
        check_event(await cb.event(), "apps:created", {"to": "herald"})
        await ca.nothing(0.3)
        await cb.nothing(0.1)
        st = await poll(ca.stats, lambda s: "pfx-a" in [w["gatewayId"]
                                                         for w in s["cluster"]["workers"]],
                        5, what="pfx-a in its own cluster view")
        assert st["worker"]["redis"]["state"] == "up", st["worker"]

    run(main)


def test_read_coalescing_loses_nothing_and_reads_what_came_during_a_pause(fan):
    """--read-coalesce pauses the Redis subscriber link after back-to-back
    reads. Events published during a pause are read when it ends although
    nothing else arrives (the socket is watched again, not waited on for new
    data), and a burst read in batches arrives complete and in order."""
    c, redis, _, _ = fan
    gw = c.gateway(redis, gateway_id="fan-coalesce", name="gw-coalesce",
                   extra=["--read-coalesce", 100])

    async def main(clients):
        sub = await open_client(clients, gw.url, "u1", "coalesce-u1")
        await sub.subscribe("apps:status")
        for i in range(3):  # the second read starts a pause; the third event comes during it
            await in_thread(redis.publish, "apps:status", json.dumps({"seq": i}))
            await asyncio.sleep(0.02)
        for i in range(3):
            check_event(await sub.recv(5), "apps:status", {"seq": i})
        n = 3000
        payloads = [json.dumps({"seq": i}, separators=(",", ":")) for i in range(n)]
        await in_thread(publish_burst, redis.port, "apps:status", payloads)
        seqs = []
        while len(seqs) < n:
            m = await sub.recv(10)
            assert m.get("type") == "event", "after %d events got %r" % (len(seqs), m)
            seqs.append(m["data"]["seq"])
        assert seqs == list(range(n))
        await sentinel_is_next(redis, sub, "apps:status")

    run(main)


@pytest.mark.parametrize("bad", ["-1", "101", "1.5", "x"])
def test_read_coalesce_out_of_range_exits_2(bad):
    rc, err, _ = harness.run_gateway_expect_exit(["--read-coalesce", bad, "--jwt-secret",
                                                  harness.SECRET])
    assert rc == 2 and "--read-coalesce" in err, (bad, rc, err)
