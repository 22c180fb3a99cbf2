"""The Redis Cluster test harness itself: a real 3 masters + 3 replicas cluster
comes up healthy, redirects keys, fails over, and moves slots, with and
without a password."""

import time

import pytest

from harness_redis import Resp, RespError
from harness_rediscluster import CLUSTER_SLOTS, RedisCluster, slot_of, redis_cluster_factory  # noqa: F401


def replica_get(cluster, port, key):
    """GET key on replica port (READONLY), or None while it does not hold it."""
    with cluster.client(port) as r:
        r.command("READONLY")
        try:
            return r.command("GET", key)
        except RespError:  # e.g. MOVED while its view of the slot is behind
            return None


def moved_from_elsewhere(cluster, key):
    """SETs key on its owner, then checks every other master answers MOVED to it."""
    slot = cluster.key_slot(key)
    owner = cluster.slot_owner(slot)
    assert cluster.command(owner, "SET", key, "v") == "OK"
    others = [p for p in cluster.masters() if p != owner]
    assert others
    for port in others:
        with cluster.client(port) as r:
            r.send("GET", key)
            reply = r.read_reply()
        assert isinstance(reply, RespError), reply
        assert str(reply) == "MOVED %d 127.0.0.1:%d" % (slot, owner)
    return slot, owner


@pytest.mark.parametrize("password", [None, "s3cret-cluster"])
def test_cluster_starts_redirects_fails_over_and_reshards(redis_cluster_factory, password):
    cluster = redis_cluster_factory(password=password)

    # Healthy: every node ok, 3 masters each with one replica, all slots served.
    assert len(cluster.nodes) == 6
    for port in cluster.ports:
        assert cluster.info_field(port, "cluster", "cluster_state") == "ok"
        assert cluster.info_field(port, "cluster", "cluster_known_nodes") == "6"
    masters = cluster.masters()
    assert len(masters) == 3
    for m in masters:
        assert len(cluster.replicas_of(m)) == 1
    assert sum(e - s + 1 for s, e, _, _ in cluster.cluster_slots()) == CLUSTER_SLOTS

    if password is not None:
        with Resp(cluster.ports[0]) as r:  # no AUTH
            r.send("GET", "foo")
            assert str(r.read_reply()).startswith("NOAUTH")

    # A key set through its owner is MOVED from the others; Redis agrees with
    # the known slot values.
    assert cluster.key_slot("foo") == 12182
    slot, owner = moved_from_elsewhere(cluster, "foo")
    assert cluster.key_slot("{herald:apps:created}:history") == \
        cluster.key_slot("herald:apps:created")
    for key in ("foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "a{b", "{}",
                "herald:user:42"):
        assert slot_of(key) == cluster.key_slot(key), key
    key = cluster.key_in_slot("herald:k", 777)
    assert cluster.key_slot(key) == 777

    # Reshard: the slot and its key move to another master.
    target = next(p for p in masters if p != owner)
    assert cluster.move_slot(slot, target) == owner
    for port in cluster.live_ports():
        assert cluster.slot_owner(slot, port) == target
    assert cluster.command(target, "GET", "foo") == b"v"
    with cluster.client(owner) as r:
        r.send("GET", "foo")
        assert str(r.read_reply()) == "MOVED %d 127.0.0.1:%d" % (slot, target)

    # Failover: SIGKILL the master that now has slot 12182; its replica takes over.
    replica = cluster.replicas_of(target)[0]
    # The migrated key reaches the replica asynchronously: wait until the replica
    # holds it. (WAIT on a connection of our own would not do: it waits for
    # that connection's writes, and the key came in on MIGRATE's.)
    deadline = time.monotonic() + 10
    while replica_get(cluster, replica, "foo") != b"v":
        assert time.monotonic() < deadline, "the migrated key never reached the replica"
        time.sleep(0.05)
    promoted = cluster.kill_master(target)
    assert promoted == replica
    assert cluster.slot_owner(slot) == replica
    assert "master" in cluster.cluster_nodes(replica)[replica]["flags"]
    assert "fail" in cluster.cluster_nodes(replica)[target]["flags"]
    for port in cluster.live_ports():
        assert cluster.info_field(port, "cluster", "cluster_state") == "ok"
    assert cluster.command(replica, "GET", "foo") == b"v"  # replicated before the kill


def test_cluster_nodes_stop_by_pid_when_the_start_fails(monkeypatch):
    """A start that fails after the nodes are up still stops every node."""
    started = []
    real_create = RedisCluster._create

    def failing_create(self, replicas, timeout):
        started.extend(n.proc for n in self.nodes)
        raise AssertionError("create failed on purpose")

    monkeypatch.setattr(RedisCluster, "_create", failing_create)
    with pytest.raises(AssertionError, match="on purpose"):
        RedisCluster()
    assert len(started) == 6
    assert all(not p.alive() for p in started)
    monkeypatch.setattr(RedisCluster, "_create", real_create)
