"""The fixture-owning process group, and helpers for the multi-process
end-to-end tests (fan-out, Redis outage, worker processes, cluster stats).

- Cluster / the ``cluster`` fixture: starts redis-servers
  (harness_redis.RedisServer, re-exported as Redis: kill9() and restart()
  keep the port) and gateways (harness.GatewayProc: any --workers N,
  --gateway-id, --stats-interval; knows its workers' pids) for one test, and
  stops every one of them (gateways first, by PID) when the test ends, pass
  or fail. A gateway that died unexpectedly or logged a crash fails the test
  at teardown. ``with Cluster(tmpdir) as c:`` does the same for any scope;
  harness_ops.Ops, harness_topology.Topology and conftest's gateway
  factories build on it.
- Async websocket helpers: harness.Client (re-exported), opened by
  open_client() inside run(); every wait has a deadline.
- Publishing: raw RESP PUBLISH, a pipelined burst over one socket, redis-cli,
  herald-pub, and a tiny C program linked against libheraldpub.a.
"""

import asyncio
import json
import os
import subprocess
import time

import pytest

import harness
from harness import PREFIX, SECRET, Client, GatewayProc, open_ws  # noqa: F401  (re-exported)
from harness_redis import RedisServer, publish_burst  # noqa: F401  (re-exported)

Redis = RedisServer


# ----------------------------------------------------------------- processes

class Cluster:
    """The processes of one test (or module): redis() and gateway() start
    them; stop_all() stops gateways first (by PID), then other processes
    handed to own(), then the Redis servers, and returns what went wrong.
    As a context manager it stops everything on exit and fails the test on
    a problem.

    gateway_defaults are the GatewayProc options of this kind of group:
    here a 0.5 s stats interval, and workers may be replaced (tests kill
    them on purpose)."""

    gateway_defaults = {"stats_interval": 0.5, "watch_workers": False}

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.gateways = []
        self.others = []
        self.redises = []

    def redis(self, **kw):
        """A RedisServer (password=..., port=..., extra_args=...) in tmpdir."""
        r = RedisServer(self.tmpdir, **kw)
        self.redises.append(r)
        return r

    def gateway(self, redis=None, url=None, **kw):
        """A GatewayProc on redis (default: the first one, started if none);
        url overrides redis.url, e.g. to add a db number."""
        if url is None:
            if redis is None:
                redis = self.redises[0] if self.redises else self.redis()
            url = redis.url
        return self.own(GatewayProc(self.tmpdir, url, **dict(self.gateway_defaults, **kw)))

    def own(self, proc):
        """Takes a started process over: a GatewayProc (checked at stop) or
        another harness.Proc (its early exit is a problem); returns it."""
        (self.gateways if isinstance(proc, GatewayProc) else self.others).append(proc)
        return proc

    def stop_all(self):
        problems = []
        for gw in self.gateways:
            p = gw.problem()
            if p and not gw.reported:
                problems.append(p)
        for proc in self.others:
            early, rc = proc.stop()
            if early:
                problems.append("%s had exited (%s)\n%s" % (
                    proc.name, harness.describe_status(rc), proc.tail()))
        for r in self.redises:
            r.stop()
        self.gateways, self.others, self.redises = [], [], []
        return problems

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        problems = self.stop_all()
        if problems and exc_type is None:
            pytest.fail("\n\n".join(problems))


@pytest.fixture
def cluster(tmp_path):
    with Cluster(tmp_path) as c:
        yield c


def token(uid, role=None, secret=SECRET):
    return harness.craft_jwt(harness.claims_for(uid, email=uid + "@example.com", role=role),
                             secret)


TOKENS = {}


def tok(name):
    """Cached tokens: "u1", "u2" (users), "admin" (uid adm, role admin)."""
    if name not in TOKENS:
        TOKENS[name] = token("adm", role="admin") if name == "admin" else token(name)
    return TOKENS[name]


# ----------------------------------------------------------------- async websocket
# The one websocket client is harness.Client (re-exported here).

async def open_client(clients, url, who, name):
    """Client.open(url, tok(who), name) (who None: no token), appended to
    clients so that run() closes it."""
    c = await Client.open(url, tok(who) if who is not None else None, name)
    clients.append(c)
    return c


async def open_clients(url, specs):
    """specs: list of (name, token or None); returns Clients in that order."""
    return list(await asyncio.gather(*(Client.open(url, t, name=n) for n, t in specs)))


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients if c is not None),
                         return_exceptions=True)


def run(coro_fn, *args):
    """asyncio.run(coro_fn(clients, *args)) with every Client in `clients` closed after."""
    async def main():
        clients = []
        try:
            return await coro_fn(clients, *args)
        finally:
            await close_all(clients)
    return asyncio.run(main())


async def poll(fn, check, timeout, interval=0.25, what="condition"):
    """Calls async fn() until check(result) is true; returns the last result."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = await fn()
        if check(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.1fs; last: %s"
                                 % (what, timeout, json.dumps(last)[:3000]))
        await asyncio.sleep(interval)


# ----------------------------------------------------------------- publishing

def redis_cli_publish(port, channel, data):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "PUBLISH",
                          PREFIX + channel, data], capture_output=True, timeout=10, text=True)
    assert out.returncode == 0, "redis-cli failed: %s %s" % (out.stdout, out.stderr)
    return int(out.stdout.strip())


def herald_pub(redis_url, channel, data):
    out = subprocess.run([harness.PUB_BIN, "--redis", redis_url, channel, data],
                         capture_output=True, timeout=10, text=True, env=harness.clean_env())
    assert out.returncode == 0, "herald-pub failed (%d): %s %s" % (
        out.returncode, out.stdout, out.stderr)


LIB_PROG = r"""
#include <stdio.h>
#include "herald_pub.h"
int main(int argc, char **argv) {
    char err[256];
    if (argc != 4) return 2;
    herald_pub *p = herald_pub_connect(argv[1], NULL, err, sizeof err);
    if (!p) { fprintf(stderr, "connect: %s\n", err); return 1; }
    long receivers = -1;
    enum herald_pub_status st = herald_pub_publish(p, argv[2], argv[3], &receivers);
    if (st != HERALD_PUB_OK) {
        fprintf(stderr, "publish: %d %s\n", (int)st, herald_pub_last_error(p));
        herald_pub_close(p);
        return 1;
    }
    printf("%ld\n", receivers);
    herald_pub_close(p);
    return 0;
}
"""


def build_lib_publisher(tmpdir):
    """Compiles a tiny publisher against build/libheraldpub.a; returns its path."""
    src = os.path.join(str(tmpdir), "libpub.c")
    exe = os.path.join(str(tmpdir), "libpub")
    with open(src, "w") as f:
        f.write(LIB_PROG)
    libs = subprocess.run(["pkg-config", "--libs", "hiredis", "jansson", "libjwt", "openssl",
                           "libevent_core"], capture_output=True, text=True, timeout=10)
    assert libs.returncode == 0, libs.stderr
    # The same compiler and link flags as the libraries (a sanitizer build needs them).
    cc = [os.environ.get("HERALD_CC") or "cc"] + (os.environ.get("HERALD_LDFLAGS") or "").split()
    cmd = cc + ["-I" + os.path.join(harness.REPO, "common"),
           "-I" + os.path.join(harness.REPO, "broker"), src,
           os.path.join(harness.BUILD, "libheraldpub.a"),
           os.path.join(harness.BUILD, "libheraldcommon.a")] + libs.stdout.split() + ["-lm",
                                                                                     "-o", exe]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, "building the library publisher failed:\n%s\n%s" % (
        " ".join(cmd), out.stderr)
    return exe


def lib_publish(exe, redis_url, channel, data):
    out = subprocess.run([exe, redis_url, channel, data], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, "library publisher failed (%d): %s" % (out.returncode, out.stderr)
    return int(out.stdout.strip())


async def in_thread(fn, *args):
    """Runs a blocking call in a thread so websocket readers keep draining."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def in_thread_publish(redis, channel, data):
    """PUBLISHes data (a JSON-able object) on herald:<channel> from a thread."""
    return await in_thread(redis.publish, channel, json.dumps(data))


def _socket_inodes(pid):
    out = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def local_addrs_to(pid, port):
    """"127.0.0.1:<local port>" of every TCP socket of process pid connected to
    127.0.0.1:port (from /proc, so it needs no ss/lsof)."""
    inodes = _socket_inodes(pid)
    out = set()
    with open("/proc/%d/net/tcp" % pid) as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            rip, rport = remote.split(":")
            if inode in inodes and int(rport, 16) == port and rip == "0100007F":
                out.add("127.0.0.1:%d" % int(local.split(":")[1], 16))
    return out


def redis_clients(redis):
    """CLIENT LIST as a list of dicts."""
    with redis.client() as r:
        text = r.command("CLIENT", "LIST").decode()
    out = []
    for line in text.splitlines():
        out.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return out


def kill_subscriber_connections_of(redis, pid):
    """CLIENT KILLs the pub/sub connection(s) of process pid only; returns how many."""
    addrs = local_addrs_to(pid, redis.port)
    ids = [c["id"] for c in redis_clients(redis)
           if c.get("addr") in addrs and (int(c.get("sub", 0)) > 0 or int(c.get("psub", 0)) > 0)]
    with redis.client() as r:
        for i in ids:
            r.command("CLIENT", "KILL", "ID", i)
    return len(ids)
