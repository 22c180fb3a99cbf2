"""gateway/resp_link against real redis-servers (a single one, and a real
Redis Cluster): commands answered in order, AUTH/SELECT, SUBSCRIBE and
SSUBSCRIBE on one link, MOVED, the server's sunsubscribe on a slot move,
AUTH failure, connection loss, the output bound, and no callback after free.

The link is driven by build/tests/resp_link_driver (tests/e2e/resp_link_driver.c),
which prints one JSON line per callback."""

import json
import os
import select
import socket
import subprocess
import time

import pytest

import harness
from harness_redis import fresh_redis, redis_factory  # noqa: F401
from harness_rediscluster import redis_cluster, redis_cluster_factory  # noqa: F401

DRIVER = os.path.join(harness.BUILD, "tests", "resp_link_driver")


class Driver:
    """The driver process: send(line), event() reads its next JSON line."""

    def __init__(self, port, *opts, host="127.0.0.1"):
        if not os.path.exists(DRIVER):
            pytest.fail("missing %s (make %s)" % (DRIVER, os.path.relpath(DRIVER, harness.REPO)))
        self.proc = subprocess.Popen([DRIVER, host, str(port)] + [str(o) for o in opts],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""

    def send(self, *lines):
        self.proc.stdin.write(b"".join(line.encode() + b"\n" for line in lines))
        self.proc.stdin.flush()

    def event(self, timeout=harness.TIMEOUT):
        """The next event, or None when none comes within timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def expect(self, event, timeout=harness.TIMEOUT):
        got = self.event(timeout)
        assert got is not None and got["event"] == event, (event, got, self.stderr_now())
        return got

    def reply(self, rid, timeout=harness.TIMEOUT):
        got = self.expect("reply", timeout)
        assert got["id"] == rid, got
        return got["reply"]

    def quiet(self, timeout=0.5):
        got = self.event(timeout)
        assert got is None, got

    def stderr_now(self):
        return "" if self.proc.poll() is None else self.proc.stderr.read().decode()

    def close(self):
        """Ends the driver (stdin EOF; SIGKILL by PID if it hangs); returns its status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("resp_link_driver did not exit")
        finally:
            err = self.proc.stderr.read().decode()
            self.proc.stdout.close()
            self.proc.stderr.close()
            assert not harness.CRASH_RE.search(err), err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        status = self.close()
        if exc[0] is None:
            assert status == 0, status


def test_commands_are_answered_in_order(fresh_redis):
    with Driver(fresh_redis.port) as d:
        # Queued before the link is up: they go once connected, in order.
        d.send("cmd s SET k 0")
        d.send(*["cmd i%d INCR k" % i for i in range(200)])
        d.send("cmd bad NOSUCHCOMMAND x", "cmd g GET k", "cmd nil GET missing",
               "cmd l1 RPUSH l message a b", "cmd l2 LRANGE l 0 -1", "cmd p PING")
        d.expect("up")
        assert d.reply("s") == {"status": "OK"}
        for i in range(200):
            assert d.reply("i%d" % i) == i + 1
        assert d.reply("bad")["error"].startswith("ERR unknown command")
        assert d.reply("g") == "200"
        assert d.reply("nil") is None
        assert d.reply("l1") == 3
        # An array that looks like a pub/sub message is an ordinary reply on
        # a link that never subscribed.
        assert d.reply("l2") == ["message", "a", "b"]
        assert d.reply("p") == {"status": "PONG"}
        d.send("state")
        assert d.expect("state") == {"event": "state", "state": "up", "pending": 0,
                                     "subscriber": False}


def test_auth_with_user_and_password_and_select(redis_factory):
    redis = redis_factory(password="pw-main")
    admin = redis.client()
    admin.command("ACL", "SETUSER", "alice", "on", ">pw-alice", "~*", "&*", "+@all")
    with Driver(redis.port, "--user", "alice", "--password", "pw-alice", "--db", 3) as d:
        d.send("cmd w ACL WHOAMI", "cmd s SET in-db-3 yes")
        d.expect("up")
        assert d.reply("w") == "alice"
        assert d.reply("s") == {"status": "OK"}
    admin.command("SELECT", 3)
    assert admin.command("GET", "in-db-3") == b"yes"
    admin.close()
    with Driver(redis.port, "--password", "pw-main") as d:
        d.send("cmd w ACL WHOAMI")
        d.expect("up")
        assert d.reply("w") == "default"


def test_auth_failure_is_reported_as_down(redis_factory):
    redis = redis_factory(password="right")
    with Driver(redis.port, "--password", "wrong") as d:
        d.send("cmd q GET k")
        events = [d.event(), d.event()]
        down = next(e for e in events if e and e["event"] == "down")
        other = next(e for e in events if e is not down)
        if other["event"] == "reply":  # queued behind AUTH: lost before its reply, then down
            assert events == [{"event": "reply", "id": "q", "reply": None}, down]
        else:  # the driver read the command after the refusal: refused at once
            assert other == {"event": "refused", "id": "q"}
        assert "AUTH refused" in down["reason"] and "WRONGPASS" in down["reason"], down
        d.send("cmd after GET k")
        assert d.expect("refused")["id"] == "after"
        d.quiet()
    with Driver(redis.port) as d:  # no password at all: the command's error says so
        d.send("cmd q GET k")
        d.expect("up")
        assert d.reply("q")["error"].startswith("NOAUTH")


def test_connect_refused_and_handshake_timeout_are_reported():
    port = harness.free_port()  # nothing listens there
    with Driver(port) as d:
        assert d.expect("down")["reason"] == "connect failed: Connection refused"
    # A listener that accepts (the kernel's backlog) but never answers AUTH.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with Driver(silent.getsockname()[1], "--password", "x", "--timeout-ms", 300) as d:
            start = time.monotonic()
            assert d.expect("down")["reason"] == "connect timeout (no answer to AUTH/SELECT)"
            assert time.monotonic() - start < 3


def test_connection_loss_is_reported_with_pending_commands(fresh_redis):
    with Driver(fresh_redis.port) as d:
        d.send("cmd b1 BLPOP never 0", "cmd b2 BLPOP never 0")
        d.expect("up")
        d.quiet(0.3)
        fresh_redis.kill9()
        assert d.reply("b1") is None
        assert d.reply("b2") is None
        down = d.expect("down")
        assert down["reason"] in ("connection closed by the server",
                                  "connection error: Connection reset by peer"), down
        d.quiet()


def test_subscribe_and_ssubscribe_share_one_link(fresh_redis):
    with Driver(fresh_redis.port) as d, fresh_redis.client() as pub:
        d.send("cmd s1 SUBSCRIBE herald:a herald:b", "cmd s2 SSUBSCRIBE herald:c")
        d.expect("up")
        assert d.expect("push")["push"] == ["subscribe", "herald:a", 1]
        assert d.expect("push")["push"] == ["subscribe", "herald:b", 2]
        assert d.reply("s1") == ["subscribe", "herald:b", 2]  # the last confirmation
        assert d.expect("push")["push"] == ["ssubscribe", "herald:c", 1]
        assert d.reply("s2") == ["ssubscribe", "herald:c", 1]
        assert pub.command("PUBLISH", "herald:a", "one") == 1
        assert pub.command("SPUBLISH", "herald:c", "two") == 1
        assert pub.command("PUBLISH", "herald:b", "three") == 1
        assert d.expect("push")["push"] == ["message", "herald:a", "one"]
        assert d.expect("push")["push"] == ["smessage", "herald:c", "two"]
        assert d.expect("push")["push"] == ["message", "herald:b", "three"]
        # PING on a subscribed link is an ordinary reply (RESP2: ["pong", ""]).
        d.send("cmd p PING", "cmd u SUNSUBSCRIBE herald:c", "cmd p2 PING")
        assert d.reply("p") == ["pong", ""]
        assert d.expect("push")["push"] == ["sunsubscribe", "herald:c", 0]
        assert d.reply("u") == ["sunsubscribe", "herald:c", 0]
        assert d.reply("p2") == ["pong", ""]
        # A message published meanwhile still arrives; the unsubscribed one does not.
        assert pub.command("SPUBLISH", "herald:c", "gone") == 0
        d.send("state")
        assert d.expect("state")["subscriber"] is True
        # Unsubscribe without a channel is refused (its confirmations cannot be counted).
        d.send("cmd u2 UNSUBSCRIBE")
        assert d.expect("refused")["id"] == "u2"


@pytest.mark.parametrize("password", [None, "cluster-pw"])
def test_ssubscribe_on_a_cluster_owner_and_moved_elsewhere(redis_cluster_factory, password):
    cluster = redis_cluster_factory(password=password)
    auth = ["--password", password] if password else []
    channel = "herald:apps:created"
    slot = cluster.key_slot(channel)
    owner = cluster.slot_owner(slot)
    other = next(p for p in cluster.masters() if p != owner)
    with Driver(owner, *auth) as d, Driver(other, *auth) as wrong:
        d.send("cmd s SSUBSCRIBE " + channel)
        wrong.send("cmd s SSUBSCRIBE " + channel, "cmd p PING")
        d.expect("up")
        wrong.expect("up")
        assert d.expect("push")["push"] == ["ssubscribe", channel, 1]
        assert d.reply("s") == ["ssubscribe", channel, 1]
        # The error replaces every confirmation and goes to the command; the
        # queue goes on.
        assert wrong.reply("s") == {"error": "MOVED %d 127.0.0.1:%d" % (slot, owner),
                                    "redirect": ["MOVED", slot, "127.0.0.1", owner]}
        assert wrong.reply("p") in ({"status": "PONG"}, ["pong", ""])
        # The history script's keys share the channel's slot.
        assert cluster.command(owner, "XADD", "{%s}:history" % channel, "*", "d", "{}")
        assert cluster.command(owner, "SPUBLISH", channel, "hello") == 1
        assert d.expect("push")["push"] == ["smessage", channel, "hello"]
        wrong.quiet(0.3)
        # cluster_slots reads the node's real CLUSTER SLOTS reply into the same map.
        wrong.send("slotmap m")
        got = wrong.expect("slotmap")
        assert got["covered"] == 16384 and got["masters"] == 3, got
        assert sorted(got["ranges"]) == sorted(list(r[:3]) + [r[3]]
                                               for r in cluster.cluster_slots(other))


def test_slot_move_sends_sunsubscribe_and_the_link_stays_up(redis_cluster):
    cluster = redis_cluster
    channel = "herald:user:42"
    slot = cluster.key_slot(channel)
    owner = cluster.slot_owner(slot)
    target = next(p for p in cluster.masters() if p != owner)
    with Driver(owner) as d:
        d.send("cmd s SSUBSCRIBE " + channel + " herald:user:42")
        d.expect("up")
        assert d.expect("push")["push"] == ["ssubscribe", channel, 1]
        assert d.expect("push")["push"] == ["ssubscribe", channel, 1]  # already subscribed
        assert d.reply("s") == ["ssubscribe", channel, 1]
        cluster.move_slot(slot, target)
        # The server's own sunsubscribe, with no command of ours pending.
        assert d.expect("push")["push"] == ["sunsubscribe", channel, 0]
        d.send("cmd again SSUBSCRIBE " + channel)
        assert d.reply("again")["redirect"] == ["MOVED", slot, "127.0.0.1", target]
        d.send("state")
        assert d.expect("state")["state"] == "up"
    with Driver(target) as d:
        d.send("cmd s SSUBSCRIBE " + channel)
        d.expect("up")
        d.expect("push")
        assert d.reply("s") == ["ssubscribe", channel, 1]
        assert cluster.command(target, "SPUBLISH", channel, "after-move") == 1
        assert d.expect("push")["push"] == ["smessage", channel, "after-move"]


def test_master_failover_is_a_lost_link(redis_cluster):
    cluster = redis_cluster
    channel = "herald:apps:created"
    slot = cluster.key_slot(channel)
    victim = cluster.slot_owner(slot)
    with Driver(victim) as d:
        d.send("cmd s SSUBSCRIBE " + channel)
        d.expect("up")
        d.expect("push")
        assert d.reply("s") == ["ssubscribe", channel, 1]
        promoted = cluster.kill_master(victim)
        assert d.expect("down")["reason"] in ("connection closed by the server",
                                              "connection error: Connection reset by peer")
    with Driver(promoted) as d:  # the new owner takes the subscription
        d.send("slotmap m", "cmd s SSUBSCRIBE " + channel)
        d.expect("up")
        got = d.expect("slotmap")  # a refreshed map names the promoted replica
        assert got["covered"] == 16384 and got["masters"] == 3, got
        assert [r[2] for r in got["ranges"] if r[0] <= slot <= r[1]] == [promoted]
        assert victim not in [r[2] for r in got["ranges"]]
        d.expect("push")
        assert d.reply("s") == ["ssubscribe", channel, 1]
        assert cluster.command(promoted, "SPUBLISH", channel, "after-failover") == 1
        assert d.expect("push")["push"] == ["smessage", channel, "after-failover"]


def test_output_limit_loses_the_link(fresh_redis):
    with Driver(fresh_redis.port, "--max-output", 65536) as d:
        d.send("cmd small SET a b")
        d.expect("up")
        assert d.reply("small") == {"status": "OK"}
        d.send("cmd pending BLPOP never 0", "cmd big SET k @1000000", "cmd next PING")
        assert d.expect("refused")["id"] == "big"
        assert d.expect("refused")["id"] == "next"
        assert d.reply("pending") is None
        assert d.expect("down")["reason"].startswith("output limit passed")
    with fresh_redis.client() as r:
        assert r.command("EXISTS", "k") == 0


def test_nothing_is_called_back_after_free(fresh_redis):
    with Driver(fresh_redis.port) as d:
        d.send("cmd b BLPOP never 0")
        d.expect("up")
        d.send("free")
        d.expect("freed")
        d.quiet(0.3)
    # Freed inside its own push callback, with a command pending behind it.
    with Driver(fresh_redis.port) as d, fresh_redis.client() as pub:
        d.send("cmd s SSUBSCRIBE herald:z")
        d.expect("up")
        d.expect("push")
        d.reply("s")
        d.send("free-on-push", "state")
        d.expect("state")  # the driver has read the line before the message comes
        pub.command("SPUBLISH", "herald:z", "x")
        d.send("cmd p PING")  # answered after the message: never reported
        assert d.expect("push")["push"] == ["smessage", "herald:z", "x"]
        d.expect("freed")
        d.quiet(0.3)
    # Freed inside a reply callback while more replies sit in the same read.
    with Driver(fresh_redis.port) as d:
        d.send("free-on-reply", "cmd a PING", "cmd b PING", "cmd c PING")
        d.expect("up")
        assert d.reply("a") == {"status": "PONG"}
        d.expect("freed")
        d.quiet(0.3)
    # Freed inside on_down's reply callbacks: no on_down afterwards.
    with Driver(fresh_redis.port) as d:
        d.send("cmd b1 BLPOP never 0", "cmd b2 BLPOP never 0")
        d.expect("up")
        d.send("free-on-reply", "state")
        d.expect("state")
        fresh_redis.kill9()
        assert d.reply("b1") is None
        d.expect("freed")
        d.quiet(0.3)
