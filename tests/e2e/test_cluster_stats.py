"""Cluster-wide stats: two gateways on one Redis (--stats-interval 0.5) each
write their figures to Redis; an admin's stats reply on either one lists every
live worker of both and the totals; non-admins are refused; a stopped gateway
drops out of the cluster view within the key TTL."""

import asyncio
import json
import os
import signal
import time

import harness
from harness_redis import Resp
from harness_cluster import (Client, cluster, in_thread_publish, open_client, poll,  # noqa: F401
                             run, tok)

WORKER_FIELDS = {
    "gatewayId": str, "worker": int, "pid": int, "host": str, "uptimeSeconds": (int, float),
    "connections": int, "subscriptions": int, "channels": int, "messagesIn": int,
    "messagesOut": int, "eventsReceived": int, "eventsDelivered": int, "eventsDropped": int,
    "slowConsumerCloses": int, "authFailures": int, "connectionsTotal": int, "redis": dict,
}
TOTAL_FIELDS = ["connections", "subscriptions", "messagesIn", "messagesOut", "eventsReceived",
                "eventsDelivered", "eventsDropped", "slowConsumerCloses"]
TTL_WAIT = 15.0


def check_worker_shape(w, where):
    for k, t in WORKER_FIELDS.items():
        assert k in w, "%s: no %r in %s" % (where, k, json.dumps(w))
        assert isinstance(w[k], t) and not isinstance(w[k], bool), (
            "%s: %s=%r is not %r" % (where, k, w[k], t))
    assert w["redis"].get("state") in ("up", "down", "connecting"), w["redis"]
    assert w["uptimeSeconds"] >= 0 and w["host"], w


def check_totals(st):
    cl = st["cluster"]
    workers, totals = cl["workers"], cl["totals"]
    for k in TOTAL_FIELDS:
        assert totals.get(k) == sum(w[k] for w in workers), (
            "totals.%s=%r but the workers sum to %r" % (k, totals.get(k),
                                                        sum(w[k] for w in workers)))
    assert totals.get("workers") == len(workers), cl
    assert cl.get("gateways") == len({w["gatewayId"] for w in workers}), cl
    pids = [(w["gatewayId"], w["pid"]) for w in workers]
    assert len(pids) == len(set(pids)), "a worker listed twice: %r" % pids


def by_gateway(st):
    return {w["gatewayId"]: w for w in st["cluster"]["workers"]}


def test_admin_stats_cover_both_gateways_with_consistent_totals(cluster):
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="stats-a", name="gw-a")
    b = cluster.gateway(redis, gateway_id="stats-b", name="gw-b")
    [pid_a], [pid_b] = a.worker_pids(), b.worker_pids()

    async def main(clients):
        specs_a = [("admin", "adm@a"), ("u1", "u1@a"), ("u2", "u2@a"), (None, "anon@a"),
                   ("u1", "u1b@a")]
        specs_b = [("admin", "adm@b"), ("u2", "u2@b"), (None, "anon@b")]
        on_a = [await Client.open(a.url, tok(t) if t else None, n) for t, n in specs_a]
        clients.extend(on_a)
        on_b = [await Client.open(b.url, tok(t) if t else None, n) for t, n in specs_b]
        clients.extend(on_b)
        adm_a, adm_b = on_a[0], on_b[0]
        await on_a[1].subscribe("apps:created")
        await on_a[1].subscribe("user:u1")
        await on_a[2].subscribe("apps:created")
        await on_a[3].subscribe("announcements")
        await on_b[1].subscribe("apps:created")

        def settled(st):
            g = by_gateway(st)
            return (set(g) == {"stats-a", "stats-b"} and g["stats-a"]["connections"] == 5
                    and g["stats-b"]["connections"] == 3 and g["stats-a"]["subscriptions"] == 4
                    and g["stats-b"]["subscriptions"] == 1)

        for adm in (adm_a, adm_b):
            st = await poll(adm.stats, settled, 5,
                            what="cluster view with both gateways and every client")
            harness.assert_timestamp(st.get("timestamp"))
            check_worker_shape(st["worker"], "worker")
            for w in st["cluster"]["workers"]:
                check_worker_shape(w, "cluster.workers[%s]" % w.get("gatewayId"))
            check_totals(st)
            cl = st["cluster"]
            assert cl["gateways"] == 2 and cl["totals"]["workers"] == 2, cl
            assert cl["totals"]["connections"] >= len(on_a) + len(on_b), cl["totals"]
            assert cl["totals"]["connections"] == 8, cl["totals"]
            g = by_gateway(st)
            assert g["stats-a"]["pid"] == pid_a and g["stats-b"]["pid"] == pid_b, g
            me = st["worker"]
            assert me["gatewayId"] == ("stats-a" if adm is adm_a else "stats-b"), me
            assert me["pid"] == (pid_a if adm is adm_a else pid_b), me
            assert me["channels"] == (3 if adm is adm_a else 1), me

        # events: received once per worker, delivered once per subscriber
        before = (await adm_a.stats())["worker"]
        await in_thread_publish(redis, "apps:created", {"count": "me"})
        for c in (on_a[1], on_a[2], on_b[1]):
            await c.event("apps:created")
        after = (await adm_a.stats())["worker"]
        assert after["eventsReceived"] - before["eventsReceived"] == 1, (before, after)
        assert after["eventsDelivered"] - before["eventsDelivered"] == 2, (before, after)
        st = await poll(adm_a.stats, lambda s: by_gateway(s)["stats-b"]["eventsDelivered"] >= 1,
                        5, what="gateway b's delivery in the cluster view")
        check_totals(st)

    run(main)


def test_stats_are_forbidden_to_users_and_anonymous_clients(cluster):
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="forbid-a")

    async def main(clients):
        u1 = await open_client(clients, a.url, "u1", "u1")
        anon = await open_client(clients, a.url, None, "anon")
        for c in (u1, anon):
            r = await c.request({"type": "stats"})
            harness.assert_error(r, "forbidden")
            assert "cluster" not in r and "worker" not in r, r
            # the connection stays usable
            assert (await c.request({"type": "ping"}))["type"] == "pong"

    run(main)


def test_stopped_gateway_drops_out_of_the_cluster_view_within_the_ttl(cluster):
    redis = cluster.redis()
    a = cluster.gateway(redis, gateway_id="ttl-a", name="gw-a")
    b = cluster.gateway(redis, gateway_id="ttl-b", name="gw-b")

    async def main(clients):
        adm = await open_client(clients, a.url, "admin", "adm@a")
        gone = await open_client(clients, b.url, "u1", "u1@b")
        await poll(adm.stats, lambda s: set(by_gateway(s)) == {"ttl-a", "ttl-b"}, 5,
                   what="both gateways listed")
        b.expected_exit = True
        os.kill(b.pid, signal.SIGTERM)
        code, _ = await gone.close_info(5)
        assert code == 1001, code
        rc = await asyncio.get_running_loop().run_in_executor(None, b.wait_exit, 10)
        assert rc == 0, rc
        t0 = time.monotonic()
        st = await poll(adm.stats, lambda s: set(by_gateway(s)) == {"ttl-a"}, TTL_WAIT,
                        interval=0.5, what="ttl-b gone from cluster.workers")
        check_totals(st)
        assert st["cluster"]["gateways"] == 1 and st["cluster"]["totals"]["workers"] == 1, st
        assert st["cluster"]["totals"]["connections"] == 1, st["cluster"]["totals"]
        return time.monotonic() - t0

    took = run(main)
    assert took <= TTL_WAIT


NOT_STATS = {"publish", "ping", "subscribe", "unsubscribe", "psubscribe", "punsubscribe",
             "info", "config", "client", "select", "auth", "hello", "command"}


def command_calls(redis):
    """{command: calls} from INFO commandstats (scripts' inner calls included)."""
    with Resp(redis.port) as r:
        text = r.command("INFO", "commandstats")
    text = text.decode() if isinstance(text, bytes) else text
    calls = {}
    for ln in text.splitlines():
        if ln.startswith("cmdstat_"):
            name, rest = ln[len("cmdstat_"):].split(":", 1)
            calls[name.split("|")[0]] = calls.get(name.split("|")[0], 0) + int(
                rest.split("calls=")[1].split(",")[0])
    return calls


def test_cluster_stats_cost_redis_o_n_commands_and_are_read_only_on_demand(cluster):
    """Six workers (three gateways of two) with --stats-interval 0.5: each
    worker writes its figures with a constant number of commands per interval
    (no reads of the other workers' figures), the view is one hash, and an
    admin asking 20 times a second reads it at most once per interval."""
    redis = cluster.redis()
    interval, n, window = 0.5, 6, 3.0
    gws = [cluster.gateway(redis, workers=2, gateway_id="cost-%d" % i, stats_interval=interval,
                           name="cost-%d" % i) for i in range(3)]
    time.sleep(3 * interval)  # every worker has written
    with Resp(redis.port) as r:
        r.command("CONFIG", "RESETSTAT")
    time.sleep(window)
    calls = command_calls(redis)
    stats_calls = {k: v for k, v in calls.items() if k not in NOT_STATS}
    per_worker_interval = sum(stats_calls.values()) / (n * window / interval)
    print("stats commands in %.1fs with %d workers: %r (%.2f per worker and interval)"
          % (window, n, stats_calls, per_worker_interval))
    assert per_worker_interval <= 2.5, "%.2f Redis commands per worker and interval: %r" % (
        per_worker_interval, stats_calls)
    assert not any(k in stats_calls for k in ("hgetall", "mget", "smembers", "get")), \
        "the cluster view was read with no admin asking: %r" % stats_calls
    with Resp(redis.port) as r:
        keys = sorted(k.decode() for k in r.command("KEYS", "herald:stats*"))
        fields = r.command("HLEN", keys[0]) if len(keys) == 1 else None
    assert len(keys) == 1 and fields == n, (keys, fields)

    async def main(clients):
        adm = await open_client(clients, gws[0].url, "admin", "adm")
        st = await adm.stats()
        assert st["cluster"]["totals"]["workers"] == n, st["cluster"]
        with Resp(redis.port) as r:
            r.command("CONFIG", "RESETSTAT")
        t0 = time.monotonic()
        for _ in range(40):
            st = await adm.stats()
            assert st["cluster"]["totals"]["workers"] == n, st["cluster"]
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    took = run(main)
    reads = command_calls(redis).get("hgetall", 0)
    assert 1 <= reads <= took / interval + 2, "%d reads of the view in %.1fs" % (reads, took)
