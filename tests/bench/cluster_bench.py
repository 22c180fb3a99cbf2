#!/usr/bin/python3
"""tests/bench/cluster_bench.py BUILD_DIR -- Herald on a Redis Cluster of 1
shard against 3 shards (called by `make bench`; docs/PERFORMANCE.md).

For each shard count it starts cluster-enabled redis-servers on loopback (no
replicas: the figures are the masters' work), assigns the 16384 slots evenly
(CLUSTER ADDSLOTSRANGE + CLUSTER MEET), and measures:

  publish   HERALD_BENCH_CLUSTER_PUBLISHERS herald-pub processes
            (--redis-cluster), each on its own channel, the channels spread
            over every shard, each publishing EVENTS / PUBLISHERS events read
            from stdin as fast as it can, with history (the script with
            SPUBLISH) and again without (--no-history: SPUBLISH). Figures:
            events/s, and events per Redis CPU second (utime + stime of every
            node, from /proc), which does not depend on how many cores the
            machine lends to Redis.
  deliver   one gateway (--redis-cluster, 1 worker) with herald-load
            subscribers (SUBS connections over CHANNELS channels spread over
            every shard), events {"t":ns,"seq":n} published with history at
            RATE events/s through herald-pub; figures: deliveries/s, loss,
            publish-to-receive latency, Redis and gateway CPU per 1000 events.

Everything it starts is stopped by PID. Sizes (environment):
  HERALD_BENCH_CLUSTER_EVENTS      60000  events per publish run
  HERALD_BENCH_CLUSTER_PUBLISHERS  6      herald-pub processes
  HERALD_BENCH_CLUSTER_SUBS        600    subscribers in the delivery run
  HERALD_BENCH_CLUSTER_CHANNELS    6      channels in the delivery run
  HERALD_BENCH_CLUSTER_RATE        3000   events/s in the delivery run
  HERALD_BENCH_CLUSTER_SECONDS     10     seconds of publishing in the delivery run
Results: BUILD_DIR/bench/cluster.md (and printed)."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..",
                                                                              "build"))
os.environ["HERALD_BUILD"] = BUILD

import harness  # noqa: E402
from harness_redis import RedisServer, Resp  # noqa: E402
from harness_rediscluster import cluster_port, slot_of  # noqa: E402

EVENTS = int(os.environ.get("HERALD_BENCH_CLUSTER_EVENTS", 60000))
PUBLISHERS = int(os.environ.get("HERALD_BENCH_CLUSTER_PUBLISHERS", 6))
SUBS = int(os.environ.get("HERALD_BENCH_CLUSTER_SUBS", 600))
CHANNELS = int(os.environ.get("HERALD_BENCH_CLUSTER_CHANNELS", 6))
RATE = float(os.environ.get("HERALD_BENCH_CLUSTER_RATE", 3000))
SECONDS = float(os.environ.get("HERALD_BENCH_CLUSTER_SECONDS", 10))
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "herald-bench-secret-0123456789abcdef"


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


class Shards:
    """n cluster-enabled masters owning 16384 / n slots each."""

    def __init__(self, n, tmpdir):
        self.nodes = []
        try:
            for _ in range(n):
                port = cluster_port()
                self.nodes.append(RedisServer(tmpdir, port=port, extra_args=[
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes-%d.conf" % port,
                    "--cluster-node-timeout", 5000]))
            step = 16384 // n
            for i, node in enumerate(self.nodes):
                start, end = i * step, 16383 if i == n - 1 else (i + 1) * step - 1
                self.command(node.port, "CLUSTER", "ADDSLOTSRANGE", start, end)
                if i:
                    self.command(node.port, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            deadline = time.monotonic() + 30
            while not all(b"cluster_state:ok" in self.command(p.port, "CLUSTER", "INFO") and
                          len(self.command(p.port, "CLUSTER", "SLOTS")) == n
                          for p in self.nodes):
                assert time.monotonic() < deadline, "cluster not ok"
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def command(port, *args):
        with Resp(port) as r:
            return r.command(*args)

    @property
    def seeds(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.nodes)

    @property
    def pids(self):
        return [n.proc.pid for n in self.nodes]

    def owner(self, key):
        slot = slot_of(key)
        for start, end, master, *_ in self.command(self.nodes[0].port, "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return master[1]
        return None

    def stop(self):
        for n in self.nodes:
            n.stop()


def spread(shards, make, count):
    """count channel names make(i) (i from 0) whose owners cover every shard evenly."""
    want = {n.port: 0 for n in shards.nodes}
    chans = []
    i = 0
    while len(chans) < count:
        name = make(i)
        i += 1
        owner = shards.owner(harness.PREFIX + name)
        if want[owner] < (count + len(want) - 1) // len(want):
            want[owner] += 1
            chans.append(name)
    return chans


def publish_run(shards, history, tmpdir):
    chans = spread(shards, lambda i: "apps:pub-%d" % i, PUBLISHERS)
    per = EVENTS // PUBLISHERS
    path = os.path.join(tmpdir, "events.txt")
    with open(path, "w") as f:
        f.writelines('{"n":%d,"pad":"0123456789abcdef0123456789abcdef"}\n' % i
                     for i in range(per))
    extra = [] if history else ["--no-history"]
    procs = []
    c0, t0 = cpu_seconds(shards.pids), time.monotonic()
    for ch in chans:
        with open(path) as stdin:
            procs.append(subprocess.Popen(
                [harness.PUB_BIN, "--redis-cluster", shards.seeds, *extra, ch, "-"], stdin=stdin,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=harness.clean_env()))
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read()
    t1, c1 = time.monotonic(), cpu_seconds(shards.pids)
    events = per * len(chans)
    return {"events": events, "seconds": t1 - t0, "events_per_s": events / (t1 - t0),
            "redis_cpu_s": c1 - c0, "events_per_redis_cpu_s": events / max(c1 - c0, 1e-9)}


def wait_status(path, word, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if any(line.startswith(word) for line in f):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def deliver_run(shards, tmpdir):
    base = next(b for b in ("apps:cb%d-" % k for k in range(1000))
                if {shards.owner(harness.PREFIX + b + str(i)) for i in range(CHANNELS)} ==
                {n.port for n in shards.nodes})
    chans = [base + str(i) for i in range(CHANNELS)]
    gw_port = harness.free_port()
    gw = harness.Proc("gateway", [harness.GATEWAY_BIN, "--host", "127.0.0.1", "--port",
                                  str(gw_port), "--tls-port", "0", "--workers", "1",
                                  "--redis-cluster", shards.seeds, "--jwt-secret", SECRET,
                                  "--log-level", "warn", "--max-send-queue", "67108864"],
                      os.path.join(tmpdir, "gateway.log"))
    load = pubs = None
    try:
        deadline = time.monotonic() + 20
        while not harness.port_open(gw_port):
            assert time.monotonic() < deadline and gw.alive(), gw.tail()
            time.sleep(0.05)
        workers = harness.children_of(gw.pid)
        token = harness.craft_jwt(harness.claims_for("bench"), SECRET)
        status = os.path.join(tmpdir, "load.status")
        out = open(os.path.join(tmpdir, "load.out"), "w")
        load = subprocess.Popen([os.path.join(BUILD, "herald-load"), "subscribe", "--port",
                                 str(gw_port), "--connections", str(SUBS), "--channels",
                                 str(CHANNELS), "--channel-base", base, "--duration",
                                 str(int(SECONDS) + 120), "--concurrency", "64",
                                 "--token", token, "--status-file", status],
                                stdout=out, stderr=subprocess.STDOUT)
        assert wait_status(status, "ready", 60), "subscribers not ready"
        pubs = [subprocess.Popen([harness.PUB_BIN, "--redis-cluster", shards.seeds, ch, "-"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, text=True, env=harness.clean_env())
                for ch in chans]
        total = int(RATE * SECONDS)
        r0, g0 = cpu_seconds(shards.pids), cpu_seconds([gw.pid] + workers)
        t0 = time.monotonic()
        seq = [0] * CHANNELS
        for i in range(total):
            due = t0 + i / RATE
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            k = i % CHANNELS
            seq[k] += 1
            pubs[k].stdin.write('{"t":%d,"seq":%d}\n' % (time.time_ns(), seq[k]))
            if k == CHANNELS - 1:
                for p in pubs:
                    p.stdin.flush()
        for k, p in enumerate(pubs):
            p.stdin.write('{"end":1,"seq":%d}\n' % seq[k])
            p.stdin.close()
        for p in pubs:
            p.wait(120)
        done = wait_status(status, "done", 120)
        t1 = time.monotonic()
        r1, g1 = cpu_seconds(shards.pids), cpu_seconds([gw.pid] + workers)
        load.send_signal(signal.SIGTERM)
        load.wait(30)
        out.close()
        with open(os.path.join(tmpdir, "load.out")) as f:
            line = [x for x in f.read().splitlines() if x.startswith("mode=")][-1]
        kv = dict(item.split("=", 1) for item in line.split() if "=" in item)
        received = int(kv["received"])
        return {"events": total, "subscribers": SUBS, "channels": CHANNELS, "all_ended": done,
                "received": received, "expected": total * SUBS // CHANNELS,
                "lost": int(kv["lost"]), "duplicates": int(kv["duplicates"]),
                "deliveries_per_s": received / (t1 - t0), "p50_ms": int(kv["p50_us"]) / 1000,
                "p99_ms": int(kv["p99_us"]) / 1000,
                "redis_cpu_ms_per_1k_events": (r1 - r0) * 1e6 / total,
                "gateway_cpu_ms_per_1k_events": (g1 - g0) * 1e6 / total}
    finally:
        for p in pubs or []:
            if p.poll() is None:
                p.kill()
                p.wait()
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        gw.stop()


def main():
    out_dir = os.path.join(BUILD, "bench")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for n in (1, 3):
        tmpdir = tempfile.mkdtemp(prefix="herald-cbench-")
        shards = Shards(n, tmpdir)
        try:
            hist = publish_run(shards, True, tmpdir)
            plain = publish_run(shards, False, tmpdir)
            deliver = deliver_run(shards, tmpdir)
        finally:
            shards.stop()
        rows.append((n, hist, plain, deliver))
        print("shards=%d history=%r plain=%r deliver=%r" % (n, hist, plain, deliver), flush=True)
    lines = ["# Redis Cluster: 1 shard against 3 shards", "",
             "`tests/bench/cluster_bench.py %s` (%d CPUs; events %d, publishers %d, "
             "delivery %d subscribers / %d channels at %g events/s for %g s)" % (
                 BUILD, os.cpu_count(), EVENTS, PUBLISHERS, SUBS, CHANNELS, RATE, SECONDS), "",
             "| shards | publish with history ev/s | per Redis CPU s | SPUBLISH only ev/s | "
             "per Redis CPU s | deliveries/s | lost | p50 ms | p99 ms | Redis CPU ms / 1k ev "
             "| gateway CPU ms / 1k ev |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, hist, plain, d in rows:
        lines.append("| %d | %.0f | %.0f | %.0f | %.0f | %.0f | %d | %.1f | %.1f | %.1f | %.1f |" % (
            n, hist["events_per_s"], hist["events_per_redis_cpu_s"], plain["events_per_s"],
            plain["events_per_redis_cpu_s"], d["deliveries_per_s"], d["lost"], d["p50_ms"],
            d["p99_ms"], d["redis_cpu_ms_per_1k_events"], d["gateway_cpu_ms_per_1k_events"]))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "cluster.md"), "w") as f:
        f.write(text)
    print(text)
    bad = [n for n, _, _, d in rows if d["lost"] or not d["all_ended"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
