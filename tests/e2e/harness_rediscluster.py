"""A real Redis Cluster for end-to-end tests: 3 masters + 3 replicas on free
loopback ports.

- RedisCluster: starts the nodes (harness_redis.RedisServer with
  ``--cluster-enabled yes`` and a 1 s ``cluster-node-timeout``, no
  persistence, optional ``--requirepass``/``--masterauth``), joins them with
  ``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``, waits
  for ``cluster_state:ok`` on every node, and stops every node by PID (also
  when the start fails half way). Usable as a context manager.
- Helpers: key_slot(), slot_owner(), masters(), replicas_of(),
  kill_master() (SIGKILL, then wait for the replica's promotion), move_slot()
  (CLUSTER SETSLOT IMPORTING/MIGRATING + MIGRATE + SETSLOT NODE, the steps
  ``redis-cli --cluster reshard`` takes for each slot), key_in_slot(), and
  slot_of() (the slot computed here, as Redis does).
- Fixtures: ``redis_cluster`` (no password) and ``redis_cluster_factory``
  (``factory(password=...)``); import them into a test module
  (``from harness_rediscluster import redis_cluster``). Every node is stopped
  in the finalizer, pass or fail.
"""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from harness_redis import RedisServer, Resp, RespError

NODE_TIMEOUT_MS = 1000
CLUSTER_SLOTS = 16384
BUS_PORT_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def slot_of(key):
    """The slot of key as Redis computes it (CRC16/XMODEM, hash tags), without
    asking a node; RedisCluster.key_slot asks one."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    crc = 0
    for byte in key:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc & (CLUSTER_SLOTS - 1)


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too. Chosen below
    the kernel's ephemeral range, so that neither collides with the ports
    other tests get from harness.free_port()."""
    for _ in range(1000):
        port = random.randint(11000, 22000)
        if _bindable(port) and _bindable(port + BUS_PORT_OFFSET):
            return port
    raise AssertionError("no free port pair for a cluster node")


class RedisCluster:
    """masters masters with replicas replicas each, on 127.0.0.1.

    nodes are RedisServer objects (kill9() and restart() keep the port and
    the cluster config file); ports lists their ports in start order."""

    def __init__(self, masters=3, replicas=1, password=None, tmpdir=None, timeout=30.0):
        self.own_dir = tmpdir is None
        self.dir = tempfile.mkdtemp(prefix="herald-rcluster-") if self.own_dir else str(tmpdir)
        self.password = password
        self.nodes = []
        self.dead = set()  # ports of nodes killed on purpose
        try:
            for _ in range(masters * (1 + replicas)):
                port = cluster_port()
                args = ["--cluster-enabled", "yes",
                        "--cluster-node-timeout", NODE_TIMEOUT_MS,
                        "--cluster-config-file", "nodes-%d.conf" % port,
                        # A replica may always take over, however long ago it
                        # last heard its master (tests kill masters at once).
                        "--cluster-replica-validity-factor", 0,
                        "--repl-diskless-sync-delay", 0,
                        "--loglevel", "notice"]
                if password is not None:
                    args += ["--masterauth", password]
                self.nodes.append(RedisServer(tmpdir=self.dir, port=port, password=password,
                                              extra_args=args))
            self._create(replicas, timeout)
            self.wait_ok(timeout, replicas=replicas)
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------ lifecycle

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    @property
    def seeds(self):
        """The --redis-cluster value: every node as host:port."""
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def _cli_env(self):
        env = dict(os.environ)
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password  # not on the command line
        return env

    def _create(self, replicas, timeout):
        cli = shutil.which("redis-cli") or "redis-cli"
        argv = [cli, "--cluster", "create"] + ["127.0.0.1:%d" % p for p in self.ports] + \
               ["--cluster-replicas", str(replicas), "--cluster-yes"]
        out = subprocess.run(argv, env=self._cli_env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        text = out.stdout.decode("utf-8", "replace")
        if out.returncode != 0 or "[OK] All 16384 slots covered" not in text:
            raise AssertionError("redis-cli --cluster create failed (%d):\n%s"
                                 % (out.returncode, text))

    def stop(self):
        for node in self.nodes:
            node.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def node(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError(port)

    def live_ports(self):
        return [p for p in self.ports if p not in self.dead]

    def client(self, port, timeout=5.0):
        return Resp(port, password=self.password, timeout=timeout)

    def command(self, port, *args):
        with self.client(port) as r:
            return r.command(*args)

    # ---------------------------------------------------------- inspection

    def info_field(self, port, section, field):
        text = self.command(port, "INFO", section) if section != "cluster" else \
            self.command(port, "CLUSTER", "INFO")
        for line in text.decode().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
        return None

    def cluster_nodes(self, port):
        """CLUSTER NODES of one node: {port: {"id", "flags", "master_id", "slots"}}."""
        out = {}
        for line in self.command(port, "CLUSTER", "NODES").decode().splitlines():
            parts = line.split()
            addr = parts[1].split("@")[0]
            out[int(addr.rsplit(":", 1)[1])] = {
                "id": parts[0], "flags": set(parts[2].split(",")),
                "master_id": parts[3], "slots": parts[8:]}
        return out

    def node_id(self, port):
        return self.command(port, "CLUSTER", "MYID").decode()

    def cluster_slots(self, port=None):
        """CLUSTER SLOTS as [(start, end, master_port, [replica ports])]."""
        port = port or self.live_ports()[0]
        return [(e[0], e[1], e[2][1], [r[1] for r in e[3:]])
                for e in self.command(port, "CLUSTER", "SLOTS")]

    def key_slot(self, key):
        """The slot of key (or sharded channel), as Redis computes it."""
        return self.command(self.live_ports()[0], "CLUSTER", "KEYSLOT", key)

    def slot_owner(self, slot, port=None):
        """The port of the master serving slot, as node port (default: any live one) sees it."""
        for start, end, master, _ in self.cluster_slots(port):
            if start <= slot <= end:
                return master
        return None

    def masters(self):
        """Ports of the live masters that serve slots."""
        return sorted({m for _, _, m, _ in self.cluster_slots()})

    def replicas_of(self, master_port):
        view = self.cluster_nodes(self.live_ports()[0])
        mid = view[master_port]["id"]
        return sorted(p for p, n in view.items()
                      if n["master_id"] == mid and p not in self.dead)

    @staticmethod
    def key_in_slot(prefix, slot, limit=1000000):
        """A key starting with prefix whose slot is slot."""
        for i in range(limit):
            key = "%s%d" % (prefix, i)
            if slot_of(key) == slot:
                return key
        raise AssertionError("no key %s* in slot %d" % (prefix, slot))

    # ------------------------------------------------------------- waiting

    def wait_ok(self, timeout=30.0, ports=None, replicas=0):
        """Waits until every live node says cluster_state:ok and they all
        agree on one complete slot map in which every listed node is known,
        with at least `replicas` replicas under every master in every view,
        CLUSTER NODES and CLUSTER SLOTS alike (a new cluster: its replicas
        join the nodes' views one by one)."""
        ports = ports or self.live_ports()
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                states = [self.info_field(p, "cluster", "cluster_state") for p in ports]
                views = [self.cluster_slots(p) for p in ports]
                maps = [sorted((s, e, m) for s, e, m, _ in view) for view in views]
                covered = sum(e - s + 1 for s, e, _ in maps[0])
                # CLUSTER SLOTS lists a replica only once its replication
                # offset reached that node (Redis 7), later than CLUSTER NODES.
                replicated = all(self._replicas_known(p, replicas) for p in ports) and \
                    all(len(r) >= replicas for view in views for _, _, _, r in view)
                if all(s == "ok" for s in states) and covered == CLUSTER_SLOTS and \
                        all(m == maps[0] for m in maps) and replicated:
                    return
                last = (states, covered)
            except (OSError, RespError) as e:
                last = e
            if time.monotonic() > deadline:
                raise AssertionError("cluster not ok within %.0fs: %r\n%s"
                                     % (timeout, last, self.tails()))
            time.sleep(0.05)

    def _replicas_known(self, port, replicas):
        """True when node port knows at least `replicas` replicas of every
        master serving slots (CLUSTER NODES, as replicas_of reads it)."""
        if replicas == 0:
            return True
        view = self.cluster_nodes(port).values()
        masters = [n["id"] for n in view if "master" in n["flags"] and n["slots"]]
        return all(sum(1 for n in view if n["master_id"] == m) >= replicas for m in masters)

    def tails(self, n=15):
        return "\n".join("--- node %d ---\n%s" % (node.port, node.tail(n)) for node in self.nodes)

    # ----------------------------------------------------------- disruptions

    def kill_master(self, port, timeout=30.0):
        """SIGKILLs master port and waits until one of its replicas serves its
        slots everywhere; returns that replica's port."""
        replicas = self.replicas_of(port)
        assert replicas, "master %d has no replica" % port
        slots = [(s, e) for s, e, m, _ in self.cluster_slots() if m == port]
        self.node(port).kill9()
        self.dead.add(port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                owners = {self.slot_owner(s) for s, _ in slots}
                if len(owners) == 1 and owners.pop() in replicas:
                    break
            except (OSError, RespError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("no replica of %d promoted within %.0fs\n%s"
                                     % (port, timeout, self.tails()))
            time.sleep(0.05)
        self.wait_ok(max(1.0, deadline - time.monotonic()))
        return self.slot_owner(slots[0][0])

    def restart(self, port, timeout=30.0):
        """Brings a killed node back (it rejoins as a replica of its old slots' owner)."""
        self.node(port).restart()
        self.dead.discard(port)
        self.wait_ok(timeout)

    def move_slot(self, slot, to_port, timeout=30.0):
        """Moves slot (and its keys) to master to_port, as `redis-cli --cluster
        reshard` does for each slot, and waits until every node agrees."""
        from_port = self.slot_owner(slot)
        assert from_port is not None and from_port != to_port, (slot, from_port, to_port)
        src, dst = self.node_id(from_port), self.node_id(to_port)
        self.command(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src)
        self.command(from_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst)
        auth = ["AUTH", self.password] if self.password is not None else []
        while True:
            keys = self.command(from_port, "CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            self.command(from_port, "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, *auth,
                         "KEYS", *keys)
        # The target first (it then owns the slot even if the source's
        # message is lost), then the source, then every other master.
        self.command(to_port, "CLUSTER", "SETSLOT", slot, "NODE", dst)
        self.command(from_port, "CLUSTER", "SETSLOT", slot, "NODE", dst)
        for port in self.masters():
            if port not in (from_port, to_port):
                self.command(port, "CLUSTER", "SETSLOT", slot, "NODE", dst)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self.slot_owner(slot, p) == to_port for p in self.live_ports()):
                    return from_port
            except (OSError, RespError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("slot %d not on %d everywhere within %.0fs"
                                     % (slot, to_port, timeout))
            time.sleep(0.05)


@pytest.fixture
def redis_cluster():
    """A 3 masters + 3 replicas cluster without a password, for one test."""
    cluster = RedisCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_factory():
    """Starts clusters on demand (factory(password=..., masters=..., replicas=...));
    all are stopped after the test."""
    clusters = []

    def start(**kwargs):
        cluster = RedisCluster(**kwargs)
        clusters.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.stop()
