"""Channel history written by the publishers (README "History"), against a
real redis-server, and the offsets a real gateway adds to events.

For the Redis channel R = herald:<channel>: the stream {R}:history holds one
entry per event (field d = the data), the hash {R}:meta holds epoch and first,
both keys carry the history TTL, and the pub/sub message is
"#<epoch> <offset> <data>". herald-pub prints each event's offset.
"""

import json
import re
import time

import pytest

from harness_cluster import Cluster, in_thread, open_client, redis_cli_publish, run
from harness_redis import (  # noqa: F401  (fixtures are used by name)
    fresh_redis,
    redis_factory,
)
from test_publishers import herald_pub, herald_publisher

OFFSET = re.compile(r"^(0|[1-9]\d*)-(0|[1-9]\d*)$")


def keys(channel, prefix="herald:"):
    r = prefix + channel
    return "{%s}:history" % r, "{%s}:meta" % r


def offset_key(offset):
    """An offset as (ms, seq): the order of offsets is the order of these."""
    assert OFFSET.match(offset), offset
    ms, seq = offset.split("-")
    return int(ms), int(seq)


def pub_offsets(*args, stdin=None):
    r = herald_pub(*args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().split()


def cmd(server, *args):
    with server.client() as c:
        return c.command(*args)


def meta(server, channel, prefix="herald:"):
    flat = cmd(server, "HGETALL", keys(channel, prefix)[1])
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def stream(server, channel):
    return [(e[0].decode(), dict(zip(e[1][::2], e[1][1::2])))
            for e in cmd(server, "XRANGE", keys(channel)[0], "-", "+")]


def test_pub_writes_stream_and_meta_with_the_ttl(fresh_redis):
    events = ['{"n":1}', '{"n":2,"s":"two \u00e9"}', "[3]"]
    with fresh_redis.subscriber(strip_history=True) as sub:
        offsets = pub_offsets("--redis", fresh_redis.url, "--history-ttl", "45", "apps:created",
                              stdin="\n".join(events).encode())
        got = sub.collect(3, timeout=5)
    assert [d for _, d in got] == [e.encode() for e in events]
    assert [h[1] for h in sub.headers] == offsets
    assert len({h[0] for h in sub.headers}) == 1

    entries = stream(fresh_redis, "apps:created")
    assert [e[0] for e in entries] == offsets
    assert [e[1][b"d"] for e in entries] == [e.encode() for e in events]
    m = meta(fresh_redis, "apps:created")
    assert m == {"epoch": sub.headers[0][0], "first": offsets[0]}
    for key in keys("apps:created"):
        assert 40 <= cmd(fresh_redis, "TTL", key) <= 45


def test_offsets_increase_and_epoch_is_stable_across_publishes(fresh_redis):
    offsets = []
    for i in range(3):
        offsets += pub_offsets("--redis", fresh_redis.url, "deployments:status",
                               stdin=("{\"i\":%d}\n" % i * 40).encode())
    assert len(offsets) == 120 and len(set(offsets)) == 120
    assert [offset_key(o) for o in offsets] == sorted(offset_key(o) for o in offsets)
    m = meta(fresh_redis, "deployments:status")
    assert m["first"] == offsets[0]
    r = herald_pub("-v", "--redis", fresh_redis.url, "deployments:status", "{}")
    assert r.stdout.decode().endswith("(epoch %s)\n" % m["epoch"])
    # the default caps: 1000 entries, 600 s
    assert 590 <= cmd(fresh_redis, "TTL", keys("deployments:status")[0]) <= 600


@pytest.mark.parametrize("loss", ["FLUSHALL", "DEL both", "DEL stream", "DEL meta"])
def test_epoch_changes_when_history_was_lost(fresh_redis, loss):
    before = pub_offsets("--redis", fresh_redis.url, "apps:updated", stdin=b"1\n2\n")
    old = meta(fresh_redis, "apps:updated")
    stream_key, meta_key = keys("apps:updated")
    if loss == "FLUSHALL":
        cmd(fresh_redis, "FLUSHALL")
    elif loss == "DEL both":
        cmd(fresh_redis, "DEL", stream_key, meta_key)
    elif loss == "DEL stream":
        cmd(fresh_redis, "DEL", stream_key)
    else:
        cmd(fresh_redis, "DEL", meta_key)
    time.sleep(0.002)  # the epoch is Redis' TIME in microseconds
    after = pub_offsets("--redis", fresh_redis.url, "apps:updated", stdin=b"3\n")
    new = meta(fresh_redis, "apps:updated")
    assert new["epoch"] != old["epoch"]
    assert new["first"] == after[0]
    assert offset_key(after[0]) > offset_key(before[-1])


def test_size_cap_trims_the_stream(fresh_redis):
    # MAXLEN ~: Redis trims whole stream nodes (100 entries each by default),
    # so the stream keeps at least N and at most about N + 100 entries.
    stdin = "".join('{"i":%d}\n' % i for i in range(1000)).encode()
    offsets = pub_offsets("--redis", fresh_redis.url, "--history-size", "150", "storage:uploaded",
                          stdin=stdin)
    assert len(offsets) == 1000
    n = cmd(fresh_redis, "XLEN", keys("storage:uploaded")[0])
    assert 150 <= n <= 260, n
    entries = stream(fresh_redis, "storage:uploaded")
    assert [e[0] for e in entries] == offsets[-n:]


def test_age_cap_drops_old_entries_and_idle_history_expires(fresh_redis):
    # The script trims entries older than the ttl at whole seconds of Redis'
    # clock (so an entry may live up to ttl + 1 s), whole stream nodes at once.
    stream_key, meta_key = keys("apps:status")
    base = ("--redis", fresh_redis.url, "--history-ttl", "3", "apps:status")
    old = pub_offsets(*base, stdin=b"1\n" * 250)
    time.sleep(2.0)
    pub_offsets(*base, "2")  # renews both keys
    time.sleep(2.3)  # the first 250 are now more than ttl + 1 s old
    last = pub_offsets(*base, "3")
    ids = [e[0] for e in stream(fresh_redis, "apps:status")]
    assert ids[-1] == last[0]
    assert len(ids) < 100, "entries older than the ttl were not trimmed: %d left" % len(ids)
    assert old[0] not in ids
    # nothing published for longer than the ttl: both keys expire
    time.sleep(3.5)
    assert cmd(fresh_redis, "EXISTS", stream_key, meta_key) == 0


def test_no_history_and_raw_publish_write_no_history(fresh_redis):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "--no-history", "apps:created", '{"a":1}')
        assert r.returncode == 0, r.stderr
        assert r.stdout == b""  # no offset to print
        assert redis_cli_publish(fresh_redis.port, "apps:created", '{"b":2}') == 1
        assert sub.collect(2, timeout=5) == [(b"herald:apps:created", b'{"a":1}'),
                                             (b"herald:apps:created", b'{"b":2}')]
        assert sub.headers == [None, None]
    assert cmd(fresh_redis, "KEYS", "*") == []


def test_publish_works_after_the_script_cache_is_flushed(fresh_redis):
    cmd(fresh_redis, "SCRIPT", "FLUSH")
    first = pub_offsets("--redis", fresh_redis.url, "apps:created", "1")
    cmd(fresh_redis, "SCRIPT", "FLUSH")
    second = pub_offsets("--redis", fresh_redis.url, "apps:created", "2")
    assert offset_key(second[0]) > offset_key(first[0])
    info = cmd(fresh_redis, "INFO", "commandstats").decode()
    assert "cmdstat_evalsha:" in info and "cmdstat_eval:" in info


def test_channel_rules_set_history_per_namespace(fresh_redis, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [
        {"namespace": "apps", "access": "authenticated", "history": {"size": 5000, "ttl": 30}},
        {"namespace": "metrics", "access": "admin", "history": False},
        {"namespace": "storage", "access": "authenticated", "history": {"size": 200}},
        {"channel": "announcements", "access": "public"},
    ]}))
    base = ("--redis", fresh_redis.url, "--channel-rules", str(rules), "--history-ttl", "77")
    assert len(pub_offsets(*base, "apps:created", "{}")) == 1
    assert 25 <= cmd(fresh_redis, "TTL", keys("apps:created")[0]) <= 30
    # size from the rule, ttl from --history-ttl
    stdin = b"1\n" * 600
    assert len(pub_offsets(*base, "storage:deleted", stdin=stdin)) == 600
    assert 70 <= cmd(fresh_redis, "TTL", keys("storage:deleted")[1]) <= 77
    assert 200 <= cmd(fresh_redis, "XLEN", keys("storage:deleted")[0]) <= 310
    # a rule that says nothing about history: the command line's values
    assert len(pub_offsets(*base, "announcements", "{}")) == 1
    assert 70 <= cmd(fresh_redis, "TTL", keys("announcements")[0]) <= 77
    # "history": false
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub(*base, "metrics:cpu", '{"load":1}')
        assert r.returncode == 0 and r.stdout == b"", r.stderr
        assert sub.next(5) == (b"herald:metrics:cpu", b'{"load":1}')
        assert sub.headers == [None]
    assert cmd(fresh_redis, "EXISTS", *keys("metrics:cpu")) == 0


@pytest.mark.parametrize("text,message", [
    ("not json", b"--channel-rules"),
    ('{"rules":[{"namespace":"a","access":"public","history":{"size":0}}]}',
     b"history size must be an integer from 1 to 10000000"),
    ('{"rules":[{"namespace":"a","access":"public","history":"yes"}]}',
     b'"history" must be false or'),
])
def test_bad_channel_rules_file_exits_2(fresh_redis, tmp_path, text, message):
    rules = tmp_path / "rules.json"
    rules.write_text(text)
    r = herald_pub("--redis", fresh_redis.url, "--channel-rules", str(rules), "apps:x", "{}")
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert cmd(fresh_redis, "KEYS", "*") == []


def test_prefix_with_braces_exits_2(fresh_redis):
    r = herald_pub("--redis", fresh_redis.url, "--prefix", "{t}:", "apps:created", "{}")
    assert r.returncode == 2
    assert b"no braces" in r.stderr


def test_publisher_service_writes_history(fresh_redis):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_publisher("--redis", fresh_redis.url, "--kind", "apps", "--count", "6",
                             "--rate", "500", "--seed", "3", "--history-size", "20")
        assert r.returncode == 0, r.stderr
        got = sub.collect(6, timeout=5)
    assert len(got) == 6 and all(h is not None for h in sub.headers)
    for (channel, data), (epoch, offset) in zip(got, sub.headers):
        name = channel.decode()[len("herald:"):]
        assert (offset, {b"d": data}) in stream(fresh_redis, name)
        assert meta(fresh_redis, name)["epoch"] == epoch
    r = herald_publisher("--redis", fresh_redis.url, "--kind", "storage", "--count", "2",
                         "--rate", "500", "--no-history")
    assert r.returncode == 0, r.stderr
    assert not [k for k in cmd(fresh_redis, "KEYS", "*") if b"storage" in k]


# ---- a gateway subscriber ----

@pytest.fixture(scope="module")
def hist(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("history")) as c:
        r = c.redis()
        gw = c.gateway(r, name="gw-history")
        yield r, gw


def test_gateway_event_carries_the_offset_from_herald_pub_only(hist):
    redis, gw = hist

    async def main(clients):
        c = await open_client(clients, gw.url, "u1", "hist-u1")
        await c.subscribe("apps:deployed")
        out = await in_thread(herald_pub, "--redis", redis.url, "apps:deployed", '{"v":1}')
        assert out.returncode == 0, out.stderr
        offset = out.stdout.decode().strip()
        m = await c.event("apps:deployed")
        assert m["offset"] == offset and m["data"] == {"v": 1}, m
        assert set(m) == {"type", "channel", "offset", "data", "timestamp"}, m

        await in_thread(redis_cli_publish, redis.port, "apps:deployed", '{"v":2}')
        m = await c.event("apps:deployed")
        assert m["data"] == {"v": 2} and "offset" not in m, m

        out = await in_thread(herald_pub, "--redis", redis.url, "--no-history", "apps:deployed",
                              '{"v":3}')
        assert out.returncode == 0, out.stderr
        m = await c.event("apps:deployed")
        assert m["data"] == {"v": 3} and "offset" not in m, m

        # a stream of events: offsets in publish order, equal to herald-pub's
        stdin = "".join('{"i":%d}\n' % i for i in range(20)).encode()
        out = await in_thread(lambda: herald_pub("--redis", redis.url, "apps:deployed", stdin=stdin))
        offsets = out.stdout.decode().split()
        got = [await c.event("apps:deployed") for _ in range(20)]
        assert [m["offset"] for m in got] == offsets
        assert [m["data"]["i"] for m in got] == list(range(20))
        await c.nothing(0.2)

    run(main)


def test_gateway_drops_a_malformed_history_header(hist):
    redis, gw = hist

    async def main(clients):
        c = await open_client(clients, gw.url, "u1", "hist-bad")
        await c.subscribe("apps:status")
        for bad in ("#x 1-0 {}", "#1 01-0 {}", "#1 1-0", "#12 1-2-3 {}"):
            await in_thread(redis.publish, "apps:status", bad)
        await c.nothing(0.3)
        # a payload of the right shape whose data is bad JSON is dropped too
        await in_thread(redis.publish, "apps:status", "#1 1-0 {bad")
        await in_thread(redis.publish, "apps:status", '#5 7-1 {"ok":true}')
        m = await c.event("apps:status")
        assert m["offset"] == "7-1" and m["data"] == {"ok": True}, m
        await c.nothing(0.2)

    run(main)
