"""Herald on a real Redis Cluster (3 masters + 3 replicas from
harness_rediscluster): gateways started with --redis-cluster SSUBSCRIBE each
channel on its slot's master, herald-pub SPUBLISHes (with history) on it, and
both follow the cluster through a master's failover and a slot migration.

Every process is real and stopped by PID: the Redis nodes by the cluster
fixture, the gateways and publishers by harness_cluster.Cluster."""

import asyncio
import json
import os
import subprocess
import threading
import time

import harness
from harness_cluster import Client, Cluster, GatewayProc, run, tok  # noqa: F401
from harness_http import SseStream, api_publish
from harness_ops import http_get, wait_until
from harness_rediscluster import redis_cluster, redis_cluster_factory, slot_of  # noqa: F401

PREFIX = harness.PREFIX


def cluster_gateway(procs, tmpdir, seeds, workers=1, extra=()):
    """A gateway on the cluster (no --redis), owned by procs."""
    return procs.own(GatewayProc(tmpdir, None, workers=workers, stats_interval=0.5,
                                 watch_workers=False,
                                 extra=["--redis-cluster", seeds] + list(extra)))


def herald_pub(seeds, *args, stdin=None, timeout=30):
    return subprocess.run([harness.PUB_BIN, "--redis-cluster", seeds, *map(str, args)],
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          env=harness.clean_env())


def owner_of(rc, channel):
    return rc.slot_owner(slot_of(PREFIX + channel))


class Publisher:
    """One long-lived `herald-pub --redis-cluster SEEDS CHANNEL -` per channel,
    fed one event per line. An event counts as published when its offset line
    comes back; a publisher that exits (a Redis failure: exit 1) is started
    again and the event sent again, until it is published."""

    def __init__(self, seeds, extra=()):
        self.seeds = seeds
        self.extra = list(extra)
        self.procs = {}
        self.failures = 0
        self.statuses = []

    def _proc(self, channel):
        p = self.procs.get(channel)
        if p is None or p.poll() is not None:
            p = subprocess.Popen([harness.PUB_BIN, "--redis-cluster", self.seeds, *self.extra,
                                  channel, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                 env=harness.clean_env())
            self.procs[channel] = p
        return p

    def publish(self, channel, data, deadline=60.0, expect_offset=True):
        give_up = time.monotonic() + deadline
        while True:
            p = self._proc(channel)
            try:
                p.stdin.write(json.dumps(data) + "\n")
                p.stdin.flush()
                if not expect_offset:
                    return
                line = p.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            if line.strip():
                return line.strip()
            self.statuses.append(p.wait(10))
            self.failures += 1
            assert time.monotonic() < give_up, "no publish on %s within %.0fs" % (channel, deadline)
            time.sleep(0.1)

    def close(self):
        for p in self.procs.values():
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = {}


async def collect(client, counts, timeout):
    """Reads until client has counts[channel] events on every channel in
    counts; returns ({channel: [data n...]}, [gap channel lists], others)."""
    got = {ch: [] for ch in counts}
    gaps, others = [], []
    deadline = time.monotonic() + timeout
    while any(len(got[ch]) < n for ch, n in counts.items()):
        left = deadline - time.monotonic()
        assert left > 0, "%s: missing %r" % (client.name, {
            ch: n - len(got[ch]) for ch, n in counts.items() if len(got[ch]) < n})
        m = await client.recv(min(left, 5.0))
        if m.get("type") == "event":
            got.setdefault(m["channel"], []).append(m["data"]["n"])
        elif m.get("type") == "gap":
            gaps.append(m["channels"])
        else:
            others.append(m)
    return got, gaps, others


def publish_in_thread(pub, chans, total, interval, mark_at, hold=None):
    """Publishes {"n": i} for i < total on every channel of chans from a
    thread, then closes pub. Returns (thread, marked): marked is set before
    round mark_at, and with hold given that round first waits for it (60 s
    at most), so that nothing is in flight meanwhile."""
    marked = threading.Event()

    def publisher():
        try:
            for i in range(total):
                if i == mark_at:
                    marked.set()
                    if hold is not None:
                        hold.wait(60)
                for ch in chans:
                    pub.publish(ch, {"n": i})
                time.sleep(interval)
        finally:
            pub.close()

    t = threading.Thread(target=publisher)
    t.start()
    return t, marked


def spread_channels(rc, count, tag):
    """count channels apps:<tag>-<i>, as many on each master as can be (every
    master has some when count >= the masters)."""
    masters = rc.masters()
    want = {m: count // len(masters) + (1 if i < count % len(masters) else 0)
            for i, m in enumerate(masters)}
    chans = []
    for i in range(100000):
        ch = "apps:%s-%d" % (tag, i)
        owner = rc.slot_owner(slot_of(PREFIX + ch))
        if want.get(owner, 0) > 0:
            want[owner] -= 1
            chans.append(ch)
            if len(chans) == count:
                return chans
    raise AssertionError("no spread of %d channels" % count)


def wait_ready(port, timeout=15):
    wait_until(lambda: http_get(port, "/readyz").status == 200, timeout, what="/readyz 200")


# ---------------------------------------------------------------------- tests

def test_two_gateways_deliver_200_channels_on_three_shards_to_their_subscribers_only(
        redis_cluster, tmp_path):
    rc = redis_cluster
    chans = spread_channels(rc, 200, "fan-" + os.urandom(2).hex())
    with Cluster(tmp_path) as procs:
        gws = [cluster_gateway(procs, tmp_path, rc.seeds, workers=2),
               cluster_gateway(procs, tmp_path, rc.seeds)]
        for gw in gws:
            wait_ready(gw.port)
        # client k (on gateway k % 2) takes every channel j with j % 5 == k // 2:
        # each channel has one subscriber on each gateway.
        wanted = {k: [ch for j, ch in enumerate(chans) if j % 5 == k // 2] for k in range(10)}

        async def main(clients):
            for k in range(10):
                c = await Client.open(gws[k % 2].url, tok("u%d" % k), name="c%d" % k)
                clients.append(c)
                for ch in wanted[k]:
                    r = await c.request({"type": "subscribe", "channel": ch}, 10)
                    assert r.get("type") == "subscribed", r
            pub = Publisher(rc.seeds)
            try:
                for i in range(2):
                    for ch in chans:
                        pub.publish(ch, {"n": i, "ch": ch})
            finally:
                pub.close()
            for k, c in enumerate(clients):
                got, gaps, others = await collect(c, {ch: 2 for ch in wanted[k]}, 30)
                assert set(got) == set(wanted[k]), set(got) ^ set(wanted[k])
                assert all(got[ch] == [0, 1] for ch in wanted[k]), got
                assert not gaps and not others, (gaps, others)
                await c.nothing(0.3)  # nobody gets another channel's events
            # Each master holds the SSUBSCRIBEs of its own channels, one per
            # gateway worker, over one subscriber link per worker.
            for master in rc.masters():
                mine = [PREFIX + ch for ch in chans if owner_of(rc, ch) == master]
                counts = rc.command(master, "PUBSUB", "SHARDNUMSUB", *mine)
                assert all(n >= 2 for n in counts[1::2]), counts
                links = [line for line in rc.command(master, "CLIENT", "LIST").decode()
                         .splitlines() if " flags=P" in line or "ssub=" in line and
                         "ssub=0" not in line]
                assert 2 <= len(links) <= 3, links
        run(main)
        for gw in gws:
            assert "event=redis_lost" not in gw.log_text()


def test_master_killed_while_publishing_with_history_resumes_exactly_once_in_order(
        redis_cluster, tmp_path):
    rc = redis_cluster
    chans = spread_channels(rc, 30, "fo-" + os.urandom(2).hex())
    victim = owner_of(rc, chans[0])
    raw = next("apps:fo-raw-%d" % i for i in range(1000)
               if owner_of(rc, "apps:fo-raw-%d" % i) == victim)
    total = 40
    with Cluster(tmp_path) as procs:
        gws = [cluster_gateway(procs, tmp_path, rc.seeds),
               cluster_gateway(procs, tmp_path, rc.seeds)]
        for gw in gws:
            wait_ready(gw.port)
        readyz_seen = []

        async def main(clients):
            for k in range(4):
                c = await Client.open(gws[k % 2].url, tok("u%d" % k), name="c%d" % k)
                clients.append(c)
                for ch in chans + [raw]:
                    r = await c.request({"type": "subscribe", "channel": ch}, 10)
                    assert r.get("type") == "subscribed", r
            pub = Publisher(rc.seeds)
            rawpub = Publisher(rc.seeds, ["--no-history"])
            killed = threading.Event()
            # a third published, then it waits (none in flight) for the kill
            t, under_way = publish_in_thread(pub, chans, total, 0.02, total // 3, killed)
            try:
                # SIGKILL the master mid-stream: with a third of the events
                # published and nothing in flight (so that its replica has them
                # all: Redis replicates asynchronously, and what a master took
                # but did not pass on dies with it), whatever the gateways have
                # read of them. Then watch /readyz while the replica is promoted.
                loop = asyncio.get_running_loop()
                assert await loop.run_in_executor(None, under_way.wait, 60)
                await asyncio.sleep(0.2)
                rc.node(victim).kill9()
                rc.dead.add(victim)
                killed.set()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    readyz_seen.append(http_get(gws[0].port, "/readyz").status)
                    if readyz_seen[-1] == 503:
                        break
                    await asyncio.sleep(0.05)
                promoted = wait_until(lambda: rc.slot_owner(slot_of(PREFIX + chans[0]))
                                      not in (None, victim), 30, what="promotion")
                rc.wait_ok(30)
            finally:
                await asyncio.get_running_loop().run_in_executor(None, t.join, 120)
            assert not t.is_alive()
            rawpub.publish(raw, {"n": 0}, expect_offset=False)
            rawpub.close()
            for c in clients:
                got, gaps, _ = await collect(c, dict({ch: total for ch in chans}, **{raw: 1}), 60)
                for ch in chans:
                    assert got[ch] == list(range(total)), "%s %s: %r" % (c.name, ch, got[ch])
                flat = [ch for g in gaps for ch in g]
                assert not set(flat) & set(chans), gaps  # history: nothing lost, no gap
                if raw not in flat:  # no history: its gap may come after the last event
                    m = await c.wait_for(lambda m: m.get("type") == "gap", 10, "gap")
                    flat += m["channels"]
                assert raw in flat, gaps
            return promoted

        promoted = run(main)
        assert promoted != victim
        assert 503 in readyz_seen, readyz_seen
        for gw in gws:
            wait_ready(gw.port, 20)
            assert gw.alive()
            assert "event=redis_lost" in gw.log_text()


def test_resharding_a_slot_with_live_subscriptions_loses_nothing(redis_cluster, tmp_path):
    rc = redis_cluster
    ch = "deployments:rs-" + os.urandom(3).hex()
    slot = slot_of(PREFIX + ch)
    source = rc.slot_owner(slot)
    target = next(m for m in rc.masters() if m != source)
    total = 60
    with Cluster(tmp_path) as procs:
        gw = cluster_gateway(procs, tmp_path, rc.seeds)
        wait_ready(gw.port)

        async def main(clients):
            c = await Client.open(gw.url, tok("u1"), name="c")
            clients.append(c)
            r = await c.request({"type": "subscribe", "channel": ch}, 10)
            assert r.get("type") == "subscribed", r
            pub = Publisher(rc.seeds)
            t, half = publish_in_thread(pub, [ch], total, 0.01, total // 2)
            await asyncio.get_running_loop().run_in_executor(None, half.wait, 30)
            moved_from = rc.move_slot(slot, target)
            await asyncio.get_running_loop().run_in_executor(None, t.join, 60)
            got, gaps, _ = await collect(c, {ch: total}, 30)
            assert got[ch] == list(range(total)), got[ch]
            assert not gaps, gaps
            # The gateway's subscription moved with the slot.
            assert rc.command(target, "PUBSUB", "SHARDNUMSUB", PREFIX + ch)[1] == 1
            assert rc.command(source, "PUBSUB", "SHARDNUMSUB", PREFIX + ch)[1] == 0
            return moved_from

        assert run(main) == source
        assert "event=redis_slot_moved" in gw.log_text()


def test_one_masters_subscriber_link_killed_recovers_its_channels_only(redis_cluster, tmp_path):
    """CLIENT KILL of the worker's sharded-subscriber connection on one master
    while events are published with history: that master's channels are
    resubscribed and recovered (no loss, no duplicate, no gap), its channel
    without history gets a gap, and a raw channel on another master none."""
    rc = redis_cluster
    chans = spread_channels(rc, 6, "kill-" + os.urandom(2).hex())
    victim = owner_of(rc, chans[0])
    raws = {}
    for i in range(1000):
        ch = "apps:kill-raw-%d" % i
        raws.setdefault(owner_of(rc, ch) == victim, ch)
        if len(raws) == 2:
            break
    raw_victim, raw_other = raws[True], raws[False]
    total = 60
    with Cluster(tmp_path) as procs:
        gw = cluster_gateway(procs, tmp_path, rc.seeds)
        wait_ready(gw.port)

        async def main(clients):
            c = await Client.open(gw.url, tok("u1"), name="c")
            clients.append(c)
            for ch in chans + [raw_victim, raw_other]:
                r = await c.request({"type": "subscribe", "channel": ch}, 10)
                assert r.get("type") == "subscribed", r
            pub = Publisher(rc.seeds)
            t, half = publish_in_thread(pub, chans, total, 0.01, total // 2)
            await asyncio.get_running_loop().run_in_executor(None, half.wait, 30)
            worker = gw.worker_pids()[0]
            from harness_cluster import local_addrs_to, redis_clients
            node = rc.node(victim)
            addrs = local_addrs_to(worker, victim)
            ids = [x["id"] for x in redis_clients(node)
                   if x.get("addr") in addrs and int(x.get("ssub", 0)) > 0]
            assert len(ids) == 1, ids  # one subscriber link per master
            rc.command(victim, "CLIENT", "KILL", "ID", ids[0])
            await asyncio.get_running_loop().run_in_executor(None, t.join, 60)
            got, gaps, _ = await collect(c, {ch: total for ch in chans}, 30)
            for ch in chans:
                assert got[ch] == list(range(total)), (ch, got[ch])
            flat = [ch for g in gaps for ch in g]
            if raw_victim not in flat:
                m = await c.wait_for(lambda m: m.get("type") == "gap", 10, "gap")
                flat += m["channels"]
            assert raw_victim in flat and raw_other not in flat, gaps
            assert not set(flat) & set(chans), gaps
        run(main)
        log = gw.log_text()
        assert log.count("event=redis_lost") == 1 and ":%d" % victim in log, log[-2000:]


def test_a_silent_master_is_found_by_its_own_probe_and_the_others_keep_delivering(
        redis_cluster, tmp_path):
    """CLIENT PAUSE WRITE on one master stops its probe's SPUBLISH: nothing comes
    back on that master's subscriber link, so after the probe timeout the link
    is dropped and made again; channels on the other masters deliver
    throughout, and the paused master's channel recovers what was published."""
    rc = redis_cluster
    chans = spread_channels(rc, 3, "probe-" + os.urandom(2).hex())
    victim = owner_of(rc, chans[0])
    others = [ch for ch in chans if owner_of(rc, ch) != victim]
    with Cluster(tmp_path) as procs:
        gw = cluster_gateway(procs, tmp_path, rc.seeds)
        wait_ready(gw.port)

        async def main(clients):
            c = await Client.open(gw.url, tok("u1"), name="c")
            clients.append(c)
            for ch in chans:
                await c.subscribe(ch, 10)
            out = herald_pub(rc.seeds, chans[0], '{"n":"before"}')  # it has history
            assert out.returncode == 0, out.stderr
            assert (await c.event(chans[0], 5))["data"] == {"n": "before"}
            await asyncio.sleep(1.5)  # a probe round on every master
            rc.command(victim, "CLIENT", "PAUSE", 6000, "WRITE")
            t0 = time.monotonic()
            for i in range(8):  # the other masters deliver at once, every time
                for ch in others:
                    out = herald_pub(rc.seeds, ch, json.dumps({"n": i}))
                    assert out.returncode == 0, out.stderr
                    m = await c.event(ch, 2)
                    assert m["data"] == {"n": i}, m
                await asyncio.sleep(0.5)
            assert time.monotonic() - t0 < 7.5
            wait_until(lambda: "event=redis_probe_lost" in gw.log_text(), 10,
                       what="the paused master's probe lost")
            rc.command(victim, "CLIENT", "UNPAUSE")
            out = herald_pub(rc.seeds, chans[0], '{"n":"after"}')
            assert out.returncode == 0, out.stderr
            m = await c.event(chans[0], 15)
            assert m["data"] == {"n": "after"}, m
            gaps = [x for x in c.pending if x.get("type") == "gap"]
            assert not gaps, gaps
        run(main)
        lost = [line for line in gw.log_text().splitlines() if "event=redis_probe_lost" in line]
        assert lost and all(":%d" % victim in line for line in lost), lost


def test_herald_pub_follows_moved_and_ask_and_exits_with_documented_statuses(redis_cluster):
    rc = redis_cluster
    ch = "apps:pub-" + os.urandom(3).hex()
    slot = slot_of(PREFIX + ch)
    source = rc.slot_owner(slot)
    others = [m for m in rc.masters() if m != source]
    stream = "{%s%s}:history" % (PREFIX, ch)
    # One seed that does not own the slot: the map sends the event to the owner.
    out = herald_pub("127.0.0.1:%d" % others[0], ch, '{"n":0}')
    assert out.returncode == 0, out.stderr
    assert rc.command(source, "XLEN", stream) == 1

    # A stale map: one process publishes, the slot moves, the next event
    # meets MOVED and goes to the new owner.
    p = subprocess.Popen([harness.PUB_BIN, "--redis-cluster", rc.seeds, ch, "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, bufsize=1, env=harness.clean_env())
    p.stdin.write('{"n":1}\n')
    p.stdin.flush()
    assert p.stdout.readline().strip()
    rc.move_slot(slot, others[0])
    p.stdin.write('{"n":2}\n')
    p.stdin.flush()
    assert p.stdout.readline().strip()
    p.stdin.close()
    assert p.wait(10) == 0, p.stderr.read()
    assert rc.command(others[0], "XLEN", stream) == 3

    # ASK: the slot half-migrated (keys already on the target) answers ASK;
    # herald-pub sends ASKING and the script to the target.
    src, dst = others[0], others[1]
    rc.command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", rc.node_id(src))
    rc.command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", rc.node_id(dst))
    keys = rc.command(src, "CLUSTER", "GETKEYSINSLOT", slot, 100)
    rc.command(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
    out = herald_pub(rc.seeds, ch, '{"n":3}')
    assert out.returncode == 0, out.stderr
    for port in [dst, src] + [m for m in rc.masters() if m not in (src, dst)]:
        rc.command(port, "CLUSTER", "SETSLOT", slot, "NODE", rc.node_id(dst))
    assert rc.command(dst, "XLEN", stream) == 4

    # Exit statuses: 2 bad usage, 1 Redis failure.
    assert herald_pub("", ch, "{}").returncode == 2
    assert herald_pub("127.0.0.1:0", ch, "{}").returncode == 2
    assert herald_pub("redis://127.0.0.1:%d/3" % source, ch, "{}").returncode == 2
    both = subprocess.run([harness.PUB_BIN, "--redis", "redis://127.0.0.1:1",
                           "--redis-cluster", rc.seeds, ch, "{}"], capture_output=True,
                          text=True, env=harness.clean_env())
    assert both.returncode == 2 and "not both" in both.stderr
    assert herald_pub(rc.seeds, "bad channel", "{}").returncode == 2
    dead = herald_pub("127.0.0.1:%d" % harness.free_port(), ch, "{}")
    assert dead.returncode == 1 and "slot map" in dead.stderr, dead.stderr


def test_password_protected_nodes(redis_cluster_factory, tmp_path):
    rc = redis_cluster_factory(password="clu5ter-pw")
    ports = rc.ports
    seeds = "redis://:clu5ter-pw@127.0.0.1:%d,127.0.0.1:%d" % (ports[0], ports[1])
    ch = "apps:pw-" + os.urandom(3).hex()
    with Cluster(tmp_path) as procs:
        gw = cluster_gateway(procs, tmp_path, seeds)
        wait_ready(gw.port)
        wrong = cluster_gateway(procs, tmp_path,
                                "redis://:wrong@127.0.0.1:%d" % ports[0])

        async def main(clients):
            c = await Client.open(gw.url, tok("u1"), name="c")
            clients.append(c)
            await c.subscribe(ch, 10)
            out = herald_pub(seeds, ch, '{"n":7}')
            assert out.returncode == 0, out.stderr
            m = await c.event(ch, 10)
            assert m["data"] == {"n": 7} and m.get("offset"), m
        run(main)
        time.sleep(1.5)
        assert http_get(wrong.port, "/readyz").status == 503
        assert "clu5ter-pw" not in gw.log_text() and ":wrong@" not in wrong.log_text()
    bad = herald_pub("redis://:nope@127.0.0.1:%d" % ports[0], ch, "{}")
    assert bad.returncode == 1, bad.stderr
    assert "nope" not in bad.stderr


def test_cluster_stats_and_health_work_on_a_cluster(redis_cluster, tmp_path):
    rc = redis_cluster
    with Cluster(tmp_path) as procs:
        gws = [cluster_gateway(procs, tmp_path, rc.seeds, extra=["--gateway-id", "gw-a"]),
               cluster_gateway(procs, tmp_path, rc.seeds, extra=["--gateway-id", "gw-b"])]
        for gw in gws:
            wait_ready(gw.port)

        async def main(clients):
            admin = await Client.open(gws[0].url, tok("admin"), name="admin")
            clients.append(admin)

            async def both():
                r = await admin.stats()
                return {w["gatewayId"] for w in r["cluster"].get("workers", [])}
            deadline = time.monotonic() + 15
            ids = set()
            while time.monotonic() < deadline and not {"gw-a", "gw-b"} <= ids:
                ids = await both()
                await asyncio.sleep(0.3)
            assert {"gw-a", "gw-b"} <= ids, ids
        run(main)


def test_http_publish_api_and_event_streams_on_a_cluster(redis_cluster, tmp_path):
    """POST /api/publish on one cluster gateway (history script with SPUBLISH
    on each channel's master) reaches a WebSocket client of another gateway
    and an /events stream, on channels of every shard."""
    rc = redis_cluster
    chans = spread_channels(rc, 3, "api-" + os.urandom(2).hex())
    key = "cluster-api-key-0123456789abcdef"
    with Cluster(tmp_path) as procs:
        a = cluster_gateway(procs, tmp_path, rc.seeds, extra=["--api-key", key])
        b = cluster_gateway(procs, tmp_path, rc.seeds)
        for gw in (a, b):
            wait_ready(gw.port)
        stream = SseStream(a.port, chans, token=tok("u2"))
        assert stream.open().status == 200
        stream.opened()

        async def main(clients):
            c = await Client.open(b.url, tok("u1"), name="c")
            clients.append(c)
            for ch in chans:
                await c.subscribe(ch, 10)
            offsets = {}
            for ch in chans:
                status, body = api_publish(a.port, {"channel": ch, "data": {"ch": ch}}, key=key)
                assert status == 200 and body.get("offset"), body
                offsets[ch] = body["offset"]
            for ch in chans:
                m = await c.event(ch, 10)
                assert m["data"] == {"ch": ch} and m["offset"] == offsets[ch], m
            return offsets

        with stream:
            offsets = run(main)
            got = {}
            while len(got) < len(chans):
                e = stream.next_json(10, skip_subscribed=True)
                got[e["channel"]] = e["offset"]
            assert got == offsets, (got, offsets)
        for ch in chans:
            stream_key = "{%s%s}:history" % (PREFIX, ch)
            assert rc.command(owner_of(rc, ch), "XLEN", stream_key) == 1
