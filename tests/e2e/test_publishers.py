"""herald-pub and herald-publisher against a real redis-server.

Each test starts its own redis-server (harness_redis), subscribes with a raw
RESP client to the prefix pattern, runs the binary and checks what arrived.
"Nothing published" is proven by publishing a sentinel afterwards and seeing
it arrive first.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from harness_redis import (  # noqa: F401  (fixtures are used by name)
    free_port,
    herald_build,
    redis_factory,
    fresh_redis,
)

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def binary(name):
    path = os.path.join(herald_build(), name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built (make %s, or set HERALD_BUILD)" % (path, "build/" + name))
    return path


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HERALD_REDIS", "HERALD_CHANNEL_PREFIX")}
    env.update(extra)
    return env


def herald_pub(*args, stdin=None, env=None, timeout=15):
    return subprocess.run([binary("herald-pub"), *args], input=stdin, capture_output=True,
                          env=env or clean_env(), timeout=timeout)


def herald_publisher(*args, env=None, timeout=30):
    return subprocess.run([binary("herald-publisher"), *args], capture_output=True,
                          env=env or clean_env(), timeout=timeout)


def assert_nothing_before_sentinel(server, sub, channel=b"herald:test:sentinel"):
    with server.client() as c:
        c.command("PUBLISH", channel, "{}")
    msg = sub.next(5)
    assert msg == (channel, b"{}"), "something was published before the sentinel: %r" % (msg,)


# ---- herald-pub ----

def test_pub_argument_publishes_exactly_that_payload(fresh_redis):
    payload = '{"id":"a1","name":"my app","tags":["x y","ü"],"n":1.5}'
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "apps:created", payload)
        assert r.returncode == 0, r.stderr
        offset = r.stdout.decode()
        assert re.fullmatch(r"\d+-\d+\n", offset), r.stdout  # the event's offset
        assert sub.next(5) == (b"herald:apps:created", payload.encode())
        assert sub.headers[0][1] == offset.strip()
        assert sub.quiet()


def test_pub_verbose_reports_receivers(fresh_redis):
    with fresh_redis.subscriber(), fresh_redis.subscriber():
        r = herald_pub("-v", "--redis", fresh_redis.url, "apps:created", "{}")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"\d+-\d+ published to 2 receivers \(epoch \d+\)\n", r.stdout.decode())
    r = herald_pub("-v", "--no-history", "--redis", fresh_redis.url, "apps:created", "{}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "published to 0 receivers\n"


def test_pub_stdin_stream_publishes_every_line_in_order(fresh_redis):
    lines = ['{"n":1}', '{"n":2,"s":"two"}', '[3]']
    stdin = ("\n".join([lines[0], "", lines[1], "   ", lines[2]]) + "\n").encode()
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "deployments:status", stdin=stdin)
        assert r.returncode == 0, r.stderr
        got = sub.collect(3, timeout=5)
        assert got == [(b"herald:deployments:status", line.encode()) for line in lines]
        assert sub.quiet()


def test_pub_dash_reads_stdin_and_accepts_crlf_and_no_final_newline(fresh_redis):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "apps:updated", "-",
                       stdin=b'{"a":1}\r\n{"b":2}')
        assert r.returncode == 0, r.stderr
        assert sub.collect(2, timeout=5) == [(b"herald:apps:updated", b'{"a":1}'),
                                             (b"herald:apps:updated", b'{"b":2}')]


@pytest.mark.parametrize("channel", ["bad channel", "apps/created", "", "apps:*", "x" * 129])
def test_pub_bad_channel_exits_2_and_publishes_nothing(fresh_redis, channel):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, channel, '{"id":1}')
        assert r.returncode == 2
        assert b"invalid channel name" in r.stderr
        assert_nothing_before_sentinel(fresh_redis, sub)


def test_pub_bad_channel_exits_2_even_with_redis_down_and_empty_stdin():
    r = herald_pub("--redis", "redis://127.0.0.1:%d" % free_port(), "bad channel", stdin=b"")
    assert r.returncode == 2
    assert b"invalid channel name 'bad channel'" in r.stderr


@pytest.mark.parametrize("payload", ["{", "{'a':1}", '{"a":1} trailing', '{"a":1}{"b":2}',
                                     "undefined", "", "   "])
def test_pub_bad_json_exits_2_and_publishes_nothing(fresh_redis, payload):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "apps:created", payload)
        assert r.returncode == 2
        assert b"invalid JSON data" in r.stderr
        assert_nothing_before_sentinel(fresh_redis, sub)


def test_pub_stdin_stops_at_first_bad_line_naming_it(fresh_redis):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "apps:created",
                       stdin=b'{"n":1}\n\n{"n":2\n{"n":3}\n')
        assert r.returncode == 2
        assert b"line 3: invalid JSON data" in r.stderr
        assert sub.next(5) == (b"herald:apps:created", b'{"n":1}')
        assert_nothing_before_sentinel(fresh_redis, sub)


def test_pub_too_big_exits_2(fresh_redis):
    big = '"' + "x" * 65535 + '"'  # 65537 bytes
    r = herald_pub("--redis", fresh_redis.url, "apps:created", big)
    assert r.returncode == 2
    assert b"too big" in r.stderr
    at_limit = '"' + "x" * 65534 + '"'  # 65536 bytes: accepted
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "apps:created", at_limit)
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"herald:apps:created", at_limit.encode())


def test_pub_redis_down_exits_1_with_a_message():
    port = free_port()
    r = herald_pub("--redis", "redis://127.0.0.1:%d" % port, "apps:created", "{}")
    assert r.returncode == 1
    assert ("cannot connect to Redis at 127.0.0.1:%d" % port).encode() in r.stderr


@pytest.mark.parametrize("url", ["http://localhost", "redis://localhost:0", "redis://h/x"])
def test_pub_bad_url_exits_2(url):
    r = herald_pub("--redis", url, "apps:created", "{}")
    assert r.returncode == 2
    assert b"invalid Redis URL" in r.stderr


@pytest.mark.parametrize("args", [[], ["a:b", "{}", "extra"], ["--nope", "a:b", "{}"]])
def test_pub_bad_usage_exits_2(args):
    r = herald_pub(*args)
    assert r.returncode == 2
    assert b"usage: herald-pub" in r.stderr


def test_pub_prefix_option_and_environment_are_honoured(fresh_redis):
    with fresh_redis.subscriber("*", strip_history=True) as sub:
        r = herald_pub("--redis", fresh_redis.url, "--prefix", "tenant7:", "apps:created",
                       '{"a":1}')
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"tenant7:apps:created", b'{"a":1}')

        env = clean_env(HERALD_REDIS=fresh_redis.url, HERALD_CHANNEL_PREFIX="envp:")
        r = herald_pub("apps:created", '{"b":2}', env=env)
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"envp:apps:created", b'{"b":2}')

        # The option wins over the environment.
        r = herald_pub("--prefix", "opt:", "apps:created", '{"c":3}', env=env)
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"opt:apps:created", b'{"c":3}')


def test_pub_password_protected_redis(redis_factory):
    server = redis_factory(password="pw")
    with server.subscriber(strip_history=True) as sub:
        url = "redis://:pw@127.0.0.1:{}".format(server.port)
        r = herald_pub("--redis", url, "apps:created", '{"secure":true}')
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"herald:apps:created", b'{"secure":true}')

    r = herald_pub("--redis", "redis://:hunter2x@127.0.0.1:%d" % server.port, "apps:created", "{}")
    assert r.returncode == 1
    assert b"AUTH" in r.stderr and b"hunter2x" not in r.stderr

    r = herald_pub("--redis", "redis://127.0.0.1:%d" % server.port, "apps:created", "{}")
    assert r.returncode == 1
    assert b"NOAUTH" in r.stderr


def test_pub_percent_encoded_password(redis_factory):
    server = redis_factory(password="p@ss w/rd")
    with server.subscriber(strip_history=True) as sub:
        url = "redis://:p%40ss%20w%2Frd@127.0.0.1:{}".format(server.port)
        r = herald_pub("--redis", url, "apps:created", '{"secure":2}')
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"herald:apps:created", b'{"secure":2}')


def test_pub_acl_user_and_database(redis_factory):
    server = redis_factory(extra_args=["--user", "alice", "on", ">s3cret", "~*", "&*", "+@all"])
    with server.subscriber(strip_history=True) as sub:
        r = herald_pub("--redis", "redis://alice:s3cret@127.0.0.1:%d/3" % server.port,
                       "storage:uploaded", '{"fileId":"f1"}')
        assert r.returncode == 0, r.stderr
        assert sub.next(5) == (b"herald:storage:uploaded", b'{"fileId":"f1"}')

    r = herald_pub("--redis", "redis://127.0.0.1:%d/99" % server.port, "apps:created", "{}")
    assert r.returncode == 1
    assert b"SELECT" in r.stderr


# ---- herald-publisher ----

def publish_stream(server, *args, count, pattern="herald:*"):
    with server.subscriber(pattern, strip_history=True) as sub:
        r = herald_publisher("--redis", server.url, "--count", str(count), "--rate", "500",
                             *args)
        assert r.returncode == 0, r.stderr
        got = sub.collect(count, timeout=10)
        assert sub.quiet(), "more than --count events"
    assert len(got) == count
    return [(ch.decode(), json.loads(data)) for ch, data in got]


def check_common_fields(events):
    assert [e["seq"] for _, e in events] == list(range(1, len(events) + 1))
    for _, e in events:
        assert ISO_MS.match(e["timestamp"]), e["timestamp"]


def check_deployments_consistent(events):
    """Every deployment: started, >= 1 status, then completed or failed; one appId."""
    by_id = {}
    for channel, e in events:
        assert channel.startswith("herald:deployments:"), channel
        assert UUID.match(e["deploymentId"]) and UUID.match(e["appId"])
        by_id.setdefault(e["deploymentId"], []).append((channel.split(":", 2)[2], e))
    assert by_id
    for dep_id, seq in by_id.items():
        kinds = [k for k, _ in seq]
        assert kinds[0] == "started", (dep_id, kinds)
        assert kinds[-1] in ("completed", "failed"), (dep_id, kinds)
        assert len(kinds) >= 3 and set(kinds[1:-1]) == {"status"}, (dep_id, kinds)
        assert len({e["appId"] for _, e in seq}) == 1
        assert len({e["appName"] for _, e in seq}) == 1
        statuses = [e["status"] for k, e in seq if k == "status"]
        assert set(statuses) <= {"building", "deploying", "verifying"}
        progress = [e["progress"] for k, e in seq if k == "status"]
        assert progress == sorted(progress) and all(0 < p < 100 for p in progress)
        end = seq[-1][1]
        assert end["status"] == kinds[-1]
        if kinds[-1] == "failed":
            assert end["error"] and end["stage"] == statuses[-1]
    return by_id


def test_publisher_deployments_are_consistent_within_the_count(fresh_redis):
    events = publish_stream(fresh_redis, "--kind", "deployments", "--seed", "42", count=12)
    check_common_fields(events)
    check_deployments_consistent(events)


@pytest.mark.parametrize("seed,count", [(1, 3), (2, 4), (3, 7), (4, 11), (5, 25), (6, 40)])
def test_publisher_completes_every_deployment_for_any_count(fresh_redis, seed, count):
    events = publish_stream(fresh_redis, "--kind", "deployments", "--seed", str(seed),
                            count=count)
    check_deployments_consistent(events)


def test_publisher_deployments_count_too_small_is_bad_usage(fresh_redis):
    r = herald_publisher("--redis", fresh_redis.url, "--kind", "deployments", "--count", "2")
    assert r.returncode == 2
    assert b"too small" in r.stderr


def test_publisher_same_seed_gives_same_stream(fresh_redis):
    a = publish_stream(fresh_redis, "--kind", "all", "--seed", "9", count=20)
    b = publish_stream(fresh_redis, "--kind", "all", "--seed", "9", count=20)
    strip = [(ch, {k: v for k, v in e.items() if k != "timestamp"}) for ch, e in a]
    assert strip == [(ch, {k: v for k, v in e.items() if k != "timestamp"}) for ch, e in b]


def test_publisher_apps_events_follow_app_lifecycle(fresh_redis):
    events = publish_stream(fresh_redis, "--kind", "apps", "--seed", "3", count=40)
    check_common_fields(events)
    live = {}
    for channel, e in events:
        kind = channel.split(":", 2)[2]
        assert kind in ("created", "updated", "deleted", "deployed", "status")
        for field in ("id", "name", "owner", "status"):
            assert e[field], (channel, e)
        assert UUID.match(e["id"])
        if kind == "created":
            assert e["id"] not in live
            live[e["id"]] = e["name"]
        else:
            assert live.get(e["id"]) == e["name"], "event for an app never created"
            if kind == "deleted":
                del live[e["id"]]


def test_publisher_storage_events_carry_file_fields(fresh_redis):
    events = publish_stream(fresh_redis, "--kind", "storage", "--seed", "5", count=30)
    check_common_fields(events)
    uploaded = set()
    for channel, e in events:
        kind = channel.split(":", 2)[2]
        assert kind in ("uploaded", "updated", "deleted")
        assert UUID.match(e["fileId"])
        assert isinstance(e["size"], int) and e["size"] > 0
        assert "/" in e["path"] and e["contentType"] and e["bucket"]
        if kind == "uploaded":
            uploaded.add(e["fileId"])
        else:
            assert e["fileId"] in uploaded
            if kind == "deleted":
                uploaded.discard(e["fileId"])


def test_publisher_all_mixes_kinds_and_still_completes_deployments(fresh_redis):
    events = publish_stream(fresh_redis, "--kind", "all", "--seed", "11", count=60)
    check_common_fields(events)
    namespaces = {ch.split(":")[1] for ch, _ in events}
    assert namespaces == {"apps", "deployments", "storage"}
    check_deployments_consistent([(ch, e) for ch, e in events if ":deployments:" in ch])


def test_publisher_honours_prefix_and_rate(fresh_redis):
    with fresh_redis.subscriber("*", strip_history=True) as sub:
        start = time.monotonic()
        r = herald_publisher("--redis", fresh_redis.url, "--prefix", "p1:", "--kind", "apps",
                             "--count", "5", "--rate", "20")
        elapsed = time.monotonic() - start
        assert r.returncode == 0, r.stderr
        got = sub.collect(5, timeout=5)
    assert len(got) == 5 and all(ch.startswith(b"p1:apps:") for ch, _ in got)
    assert elapsed >= 0.19  # four 50 ms gaps


def test_publisher_sigterm_and_sigint_exit_0(fresh_redis):
    for signo in (signal.SIGTERM, signal.SIGINT):
        with fresh_redis.subscriber(strip_history=True) as sub:
            proc = subprocess.Popen([binary("herald-publisher"), "--redis", fresh_redis.url,
                                     "--kind", "all", "--rate", "50"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=clean_env())
            try:
                assert len(sub.collect(3, timeout=5)) == 3
                proc.send_signal(signo)
                assert proc.wait(timeout=5) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def test_publisher_redis_down_exits_1_after_waiting():
    start = time.monotonic()
    r = herald_publisher("--redis", "redis://127.0.0.1:%d" % free_port(), "--kind", "apps",
                         "--count", "1", "--wait-redis", "2")
    elapsed = time.monotonic() - start
    assert r.returncode == 1
    assert r.stderr.count(b"cannot connect to Redis") >= 2  # retried
    assert 1.5 < elapsed < 6


def test_publisher_waits_for_redis_that_starts_late(redis_factory):
    port = free_port()
    proc = subprocess.Popen([binary("herald-publisher"), "--redis",
                             "redis://127.0.0.1:%d" % port, "--kind", "storage", "--count", "2",
                             "--rate", "100", "--wait-redis", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    try:
        time.sleep(1.2)
        server = redis_factory(port=port)
        # It may publish before the subscriber is in: only the exit status counts here.
        assert proc.wait(timeout=10) == 0
        assert b"retrying in 1 s" in proc.stderr.read()
        assert server.proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("args", [["--kind", "weather"], ["--kind", "apps", "--rate", "0"],
                                  ["--kind", "apps", "--count", "-1"], ["--rate", "2"],
                                  ["--kind", "apps", "--prefix", "has space"],
                                  ["--kind", "apps", "--redis", "http://x"]])
def test_publisher_bad_usage_exits_2(args):
    r = herald_publisher(*args, "--wait-redis", "0")
    assert r.returncode == 2, r.stderr


# Every numeric option has a range; a value outside it (a tiny --rate made the
# pacing interval overflow: every event went out at once) is exit 2 with a
# sentence naming the option and the range, before anything is published.
@pytest.mark.parametrize("option,value,message", [
    ("--rate", "1e-300", b"--rate wants events per second from 0.001 to 1000000"),
    ("--rate", "0.0009", b"--rate wants events per second from 0.001"),
    ("--rate", "1000001", b"--rate wants events per second"),
    ("--rate", "nan", b"--rate wants events per second"),
    ("--rate", "inf", b"--rate wants events per second"),
    ("--rate", "-5", b"--rate wants events per second"),
    ("--rate", "2x", b"--rate wants events per second"),
    ("--count", "-1", b"--count wants a number from 0 to 1000000000000000"),
    ("--count", "1000000000000001", b"--count wants a number from 0"),
    ("--count", "99999999999999999999", b"--count wants a number from 0"),
    ("--seed", "-3", b"--seed wants a number from 0"),
    ("--seed", "9223372036854775808", b"--seed wants a number from 0"),
    ("--wait-redis", "86401", b"--wait-redis wants seconds from 0 to 86400"),
    ("--wait-redis", "+1", b"--wait-redis wants seconds"),
    ("--history-size", "0", b"--history-size wants a number of events from 1 to 10000000"),
    ("--history-ttl", "31536001", b"--history-ttl wants seconds from 1 to 31536000"),
])
def test_publisher_numeric_option_out_of_range_exits_2(fresh_redis, option, value, message):
    with fresh_redis.subscriber() as sub:
        r = herald_publisher("--redis", fresh_redis.url, "--kind", "apps", "--count", "5",
                             option, value)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr, r.stderr
        assert_nothing_before_sentinel(fresh_redis, sub)


def test_publisher_smallest_and_largest_rate_are_accepted(fresh_redis):
    with fresh_redis.subscriber(strip_history=True) as sub:
        r = herald_publisher("--redis", fresh_redis.url, "--kind", "apps", "--count", "1",
                             "--rate", "0.001")
        assert r.returncode == 0, r.stderr
        r = herald_publisher("--redis", fresh_redis.url, "--kind", "apps", "--count", "3",
                             "--rate", "1000000")
        assert r.returncode == 0, r.stderr
        assert len(sub.collect(4, timeout=5)) == 4


@pytest.mark.parametrize("option,value,message", [
    ("--history-size", "0", b"--history-size wants a number of events from 1 to 10000000"),
    ("--history-size", "10000001", b"--history-size wants a number of events"),
    ("--history-size", "-1", b"--history-size wants a number of events"),
    ("--history-size", "ten", b"--history-size wants a number of events"),
    ("--history-ttl", "0", b"--history-ttl wants seconds from 1 to 31536000"),
    ("--history-ttl", "31536001", b"--history-ttl wants seconds"),
    ("--history-ttl", "18446744073709551617", b"--history-ttl wants seconds"),
])
def test_pub_numeric_option_out_of_range_exits_2(fresh_redis, option, value, message):
    with fresh_redis.subscriber() as sub:
        r = herald_pub("--redis", fresh_redis.url, option, value, "apps:created", "{}")
        assert r.returncode == 2, r.stderr
        assert message in r.stderr, r.stderr
        assert r.stdout == b""
        assert_nothing_before_sentinel(fresh_redis, sub)


@pytest.mark.parametrize("option,value,message", [
    ("--ttl", "0", b"--ttl wants seconds from 1 to 315360000"),
    ("--ttl", "315360001", b"--ttl wants seconds from 1 to 315360000"),
    ("--ttl", "9223372036854775807", b"--ttl wants seconds"),
    ("--ttl", "-60", b"--ttl wants seconds"),
    ("--nbf", "-1", b"--nbf wants a Unix time in seconds from 0 to 253402300799"),
    ("--nbf", "253402300800", b"--nbf wants a Unix time"),
])
def test_token_numeric_option_out_of_range_exits_2(option, value, message):
    r = subprocess.run([binary("herald-token"), "--secret", "s", "--user", "u1", option, value],
                       capture_output=True, timeout=10)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr, r.stderr
    assert r.stdout == b""


def test_publisher_survives_a_redis_restart_without_losing_its_sequence(redis_factory):
    first = redis_factory()
    port = first.port
    sub = first.subscriber(strip_history=True)
    proc = subprocess.Popen([binary("herald-publisher"), "--redis", first.url, "--kind",
                             "deployments", "--rate", "40", "--seed", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    try:
        before = sub.collect(3, timeout=5)
        assert len(before) == 3
        sub.close()
        first.stop()
        time.sleep(0.5)  # the publisher fails, logs and retries every second
        second = redis_factory(port=port)
        with second.subscriber(strip_history=True) as sub2:
            after = sub2.collect(3, timeout=10)
        assert len(after) == 3
        seqs = [json.loads(d)["seq"] for _, d in before + after]
        assert seqs == sorted(seqs) and len(set(seqs)) == 6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert b"cannot connect to Redis" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
