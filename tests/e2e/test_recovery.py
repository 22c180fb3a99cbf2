"""Recovery from channel history: subscribe with "since" after a reconnect gets
exactly the missed events, in order, then live ones; or recovered:false and a
gap when that cannot be proven. A gateway whose own Redis subscriber link
drops recovers channels with history for its clients without a gap.

Events are published with the real publisher (herald-pub writes history by
default), against a real Redis and real gateway processes."""

import json
import os
import subprocess
import threading
import time

import pytest

import harness
from harness import connect
from harness_cluster import kill_subscriber_connections_of, tok
from harness_ops import ops, wait_until  # noqa: F401


def publish(redis, channel, payloads, extra=()):
    """Publishes payloads (dicts) in order with herald-pub, one process."""
    lines = "".join(json.dumps(p) + "\n" for p in payloads)
    out = subprocess.run([harness.PUB_BIN, "--redis", redis.url, *map(str, extra), channel, "-"],
                         input=lines, capture_output=True, timeout=60, text=True,
                         env=harness.clean_env())
    assert out.returncode == 0, "herald-pub failed (%d): %s" % (out.returncode, out.stderr)


def subscribe(c, channel, since=None, req_id="s"):
    msg = {"type": "subscribe", "channel": channel, "id": req_id}
    if since is not None:
        msg["since"] = since
    r = c.request(msg, timeout=10)
    assert r.get("type") == "subscribed" and r.get("channel") == channel, r
    return r


def events(c, n, timeout=10):
    """The next n messages, which must all be events."""
    got = []
    for _ in range(n):
        m = c.recv_json(timeout)
        assert m.get("type") == "event", "expected an event, got %r after %d" % (m, len(got))
        got.append(m)
    return got


def live_then_gone(gw, redis, ch, payloads, extra=()):
    """A client subscribes to ch, sees payloads published with history, and
    leaves: returns (its subscribed reply, the events it saw, the since a
    reconnect asks with: the last event's offset and epoch)."""
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        first = subscribe(c, ch)
        publish(redis, ch, payloads, extra=extra)
        seen = events(c, len(payloads))
    return first, seen, {"offset": seen[-1]["offset"], "epoch": seen[-1]["epoch"]}


def test_reconnect_with_since_gets_exactly_the_missed_events_then_live(ops):
    redis = ops.redis()
    gw = ops.gateway(redis)
    ch = "deployments:rec-" + os.urandom(3).hex()
    first, seen, since = live_then_gone(gw, redis, ch, [{"n": i} for i in range(5)])
    assert first["offset"] is None and first["epoch"] is None, first  # no history yet
    assert [e["data"]["n"] for e in seen] == list(range(5))
    assert len({e["offset"] for e in seen}) == 5 and len({e["epoch"] for e in seen}) == 1, seen
    publish(redis, ch, [{"n": i} for i in range(5, 55)])  # while disconnected
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        r = subscribe(c, ch, since=since)
        assert r["recovered"] is True and r["epoch"] == since["epoch"], r
        missed = events(c, 50)
        assert [e["data"]["n"] for e in missed] == list(range(5, 55))
        assert all(harness.TIMESTAMP_RE.match(e["timestamp"]) for e in missed)
        publish(redis, ch, [{"n": 55}])
        live = events(c, 1)
        assert live[0]["data"]["n"] == 55
        c.no_message(0.3)  # no duplicate, no gap


def test_other_epoch_or_trimmed_offset_gets_recovered_false_and_a_gap(ops):
    redis = ops.redis()
    gw = ops.gateway(redis)
    ch = "apps:trim-" + os.urandom(3).hex()
    _, _, since = live_then_gone(gw, redis, ch, [{"n": 0}], extra=["--history-size", 10])
    publish(redis, ch, [{"n": i} for i in range(1, 300)], extra=["--history-size", 10])
    for since in (since,                                     # trimmed away
                  dict(since, epoch="1" + since["epoch"])):  # another epoch
        c, _ = connect(gw.url, token=tok("u1"))
        with c:
            r = subscribe(c, ch, since=since)
            assert r["recovered"] is False, r
            g = c.recv_json(5)
            assert g == {"type": "gap", "channels": [ch], "timestamp": g["timestamp"]}, g
            publish(redis, ch, [{"n": "live"}], extra=["--history-size", 10])
            assert events(c, 1)[0]["data"]["n"] == "live"


def test_raw_publish_channel_is_never_recovered(ops):
    redis = ops.redis()
    gw = ops.gateway(redis)
    ch = "storage:raw-" + os.urandom(3).hex()
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        r = subscribe(c, ch)
        redis.publish(ch, json.dumps({"n": 1}))
        e = events(c, 1)[0]
        assert "offset" not in e, e
    redis.publish(ch, json.dumps({"n": 2}))
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        r = subscribe(c, ch, since={"offset": None, "epoch": r["epoch"]})
        assert r["recovered"] is False and r["epoch"] is None, r
        assert c.recv_json(5)["type"] == "gap"


def test_recovery_over_the_limit_is_a_gap(ops):
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--recovery-limit", 20])
    ch = "apps:limit-" + os.urandom(3).hex()
    _, _, since = live_then_gone(gw, redis, ch, [{"n": 0}])
    publish(redis, ch, [{"n": i} for i in range(1, 21)])  # 20 missed: within the limit
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        r = subscribe(c, ch, since=since)
        assert r["recovered"] is True, r
        last = events(c, 20)[-1]
    publish(redis, ch, [{"n": i} for i in range(21, 42)])  # 21 missed: over
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        r = subscribe(c, ch, since={"offset": last["offset"], "epoch": last["epoch"]})
        assert r["recovered"] is False, r
        assert c.recv_json(5)["type"] == "gap"


@pytest.mark.parametrize("bad", ["0", "100001", "-5", "x"])
def test_recovery_limit_out_of_range_exits_2(bad):
    """1..100000: a history read asks for two entries more, and a reply must
    stay within what the gateway's Redis reader accepts in one array."""
    rc, err, _ = harness.run_gateway_expect_exit(["--recovery-limit", bad, "--jwt-secret",
                                                  harness.SECRET])
    assert rc == 2 and "--recovery-limit" in err, (bad, rc, err)


def test_bad_since_is_invalid_field(ops):
    gw = ops.gateway()
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        for since in ({"offset": "12", "epoch": "1"}, {"offset": 5}, "0-1",
                      {"offset": "1-1", "epoch": "x"}):
            r = c.request({"type": "subscribe", "channel": "apps:x", "since": since, "id": 7})
            harness.assert_error(r, "invalid_field", 7)


def test_killed_subscriber_link_recovers_history_channels_without_a_gap(ops):
    """CLIENT KILL TYPE pubsub on the gateway's subscriber while a publisher
    keeps publishing with history: the client gets every event exactly once,
    in order, and no gap; a channel without history gets its gap."""
    redis = ops.redis()
    gw = ops.gateway(redis)
    ch = "deployments:link-" + os.urandom(3).hex()
    raw = "apps:link-raw-" + os.urandom(3).hex()
    c, _ = connect(gw.url, token=tok("u1"))
    total = 400
    with c:
        subscribe(c, ch)
        subscribe(c, raw, req_id="raw")
        stop = threading.Event()

        def publisher():
            for i in range(0, total, 20):
                publish(redis, ch, [{"n": n} for n in range(i, i + 20)])
                time.sleep(0.02)
            stop.set()

        t = threading.Thread(target=publisher)
        t.start()
        wait_until(lambda: gw.log_text().count("event=redis_connected") >= 1, 5)
        time.sleep(0.2)
        killed = 0
        for worker in gw.worker_pids():
            killed += kill_subscriber_connections_of(redis, worker)
        assert killed >= 1
        t.join(60)
        got, gaps = [], []
        deadline = time.monotonic() + 20
        while len(got) < total and time.monotonic() < deadline:
            m = c.recv_json(10)
            if m["type"] == "event":
                got.append(m["data"]["n"])
            elif m["type"] == "gap":
                gaps.append(m["channels"])
        assert got == list(range(total)), "missing %r, duplicates %d" % (
            sorted(set(range(total)) - set(got))[:10], len(got) - len(set(got)))
        assert all(ch not in g for g in gaps), gaps
        if not gaps:  # the raw channel's gap may come after the last event
            gaps.append(c.recv_json(5).get("channels"))
        assert [raw] in gaps, gaps


def test_link_lost_before_a_new_channels_first_event_recovers_it_from_the_first_entry(ops):
    """A channel that had no history when the client subscribed; the gateway's
    subscriber link is killed and the channel's first events are published
    before it is back. Redis did not restart (INFO's run_id is the same), so
    the history that exists now began after the subscription: the gateway
    reads it from its first entry, and the client gets every event, in order,
    with no gap. (A restarted Redis may have lost its last writes: the unit
    tests hold that such a channel keeps its gap.)"""
    redis = ops.redis()
    gw = ops.gateway(redis)
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        for _ in range(5):
            ch = "deployments:first-" + os.urandom(3).hex()
            subscribe(c, ch)  # no history yet
            restored = gw.log_text().count("event=redis_restored")
            pub = subprocess.Popen([harness.PUB_BIN, "--redis", redis.url, ch, "-"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, env=harness.clean_env())
            try:
                killed = sum(kill_subscriber_connections_of(redis, w) for w in gw.worker_pids())
                assert killed >= 1
                _, err = pub.communicate("".join(json.dumps({"n": n}) + "\n" for n in range(5)),
                                         timeout=30)
            finally:
                if pub.poll() is None:
                    pub.kill()
                    pub.wait()
            assert pub.returncode == 0, err
            during_outage = gw.log_text().count("event=redis_restored") == restored
            got = [m["data"]["n"] for m in events(c, 5, timeout=20)]
            assert got == list(range(5)), got
            c.no_message(0.5)  # no gap
            if during_outage:  # else they came live after the reconnect: try again
                wait_until(lambda: "same_redis=1" in gw.log_text(), 10)
                return
    raise AssertionError("the gateway was back before every publish: not exercised")


def test_redis_user_without_info_takes_every_outage_for_a_restart(ops):
    """A Redis ACL user refused INFO: the gateway works as before, cannot tell
    that Redis did not restart, so a channel that had no history gets its gap
    after a killed subscriber link, and events flow again."""
    redis = ops.redis()
    with redis.client() as r:
        r.command("ACL", "SETUSER", "noinfo", "on", ">noinfo-pw", "~*", "&*", "+@all", "-info")
    gw = ops.gateway(redis, url="redis://noinfo:noinfo-pw@127.0.0.1:%d" % redis.port)
    ch = "deployments:noinfo-" + os.urandom(3).hex()
    c, _ = connect(gw.url, token=tok("u1"))
    with c:
        subscribe(c, ch)  # no history yet
        assert sum(kill_subscriber_connections_of(redis, w) for w in gw.worker_pids()) >= 1
        gap = c.recv_json(10)
        assert gap["type"] == "gap" and gap["channels"] == [ch], gap
        wait_until(lambda: "same_redis=0" in gw.log_text(), 10)
        assert "same_redis=1" not in gw.log_text()
        publish(redis, ch, [{"n": 1}])
        assert [m["data"] for m in events(c, 1)] == [{"n": 1}]


def test_recovery_during_fast_publishing_has_no_duplicate_at_the_seam(ops):
    """A publisher keeps publishing with history at ~2,000 events/s while a
    client disconnects and resubscribes with "since" over and over, on a
    channel another client keeps live: the history read often runs ahead of
    the events still on their way over the gateway's subscriber connection.
    Over every connection, the client gets each event exactly once, in
    publish order (the recovery limit exceeds the events published, so every
    resubscribe must recover)."""
    redis = ops.redis()
    gw = ops.gateway(redis, extra=["--recovery-limit", 10000])
    ch = "deployments:seam-" + os.urandom(3).hex()
    total, rate = 6000, 2000.0
    anchor, _ = connect(gw.url, token=tok("u2"))
    p = subprocess.Popen([harness.PUB_BIN, "--redis", redis.url, "--history-size", "20000", ch,
                          "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=harness.clean_env())
    try:
        with anchor:
            subscribe(anchor, ch)
            p.stdin.write(b'{"n":0}\n')
            p.stdin.flush()
            first = events(anchor, 1)[0]
            epoch = subscribe(anchor, ch, req_id="pos")["epoch"]

            def publisher():
                t0 = time.monotonic()
                for i in range(1, total, 20):
                    p.stdin.write("".join('{"n":%d}\n' % n for n in range(i, min(i + 20, total))
                                          ).encode())
                    p.stdin.flush()
                    delay = t0 + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                p.stdin.close()

            t = threading.Thread(target=publisher)
            t.start()
            got, last, rounds = [0], first["offset"], 0
            while got[-1] < total - 1:
                c, _ = connect(gw.url, token=tok("u1"))
                with c:
                    r = subscribe(c, ch, since={"offset": last, "epoch": epoch})
                    assert r["recovered"] is True, (r, last, rounds)
                    # a few events, then drop the connection mid-stream
                    for _ in range(15):
                        m = c.recv_json(10)
                        assert m["type"] == "event", m
                        got.append(m["data"]["n"])
                        last = m["offset"]
                        if got[-1] == total - 1:
                            break
                rounds += 1
            t.join(30)
            assert rounds >= 20, rounds
            dup = len(got) - len(set(got))
            assert got == list(range(total)), "%d rounds: %d duplicates, missing %r, first " \
                "disorder at %r" % (rounds, dup, sorted(set(range(total)) - set(got))[:10],
                                    next((i for i in range(1, len(got))
                                          if got[i] != got[i - 1] + 1), None))
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
