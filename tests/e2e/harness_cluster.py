"""Helpers for the multi-process end-to-end tests (fan-out, Redis outage,
worker processes, cluster stats).

- Redis: a redis-server on a fixed free port that can be SIGKILLed and
  restarted on the same port with the same command line.
- GatewayProc: herald-gateway with any --workers N, --gateway-id and
  --stats-interval; knows its supervisor pid and its workers' pids.
- Cluster / the ``cluster`` fixture: starts these and stops every one of them
  (gateways first, by PID) when the test ends, pass or fail. A gateway that
  died unexpectedly or logged a crash fails the test at teardown.
- Async websocket helpers (websockets 10.4, used inside asyncio.run): every
  wait has a deadline; ``request`` matches replies by their echoed "id".
- Publishing: raw RESP PUBLISH, a pipelined burst over one socket, redis-cli,
  herald-pub, and a tiny C program linked against libheraldpub.a.
"""

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time

import pytest
import websockets
import websockets.exceptions

import harness
from harness_redis import Resp

SECRET = "e2e-test-secret-0123456789abcdef"
PREFIX = "herald:"


# ----------------------------------------------------------------- processes

class Redis:
    """redis-server on a fixed port; kill9() and restart() keep the port."""

    def __init__(self, tmpdir, port=None, password=None):
        self.tmpdir = str(tmpdir)
        self.port = port or harness.free_port()
        self.password = password
        if password is None:
            self.url = "redis://127.0.0.1:%d" % self.port
        else:
            self.url = "redis://:%s@127.0.0.1:%d" % (password, self.port)
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", self.tmpdir]
        if password is not None:
            self.argv += ["--requirepass", password]
        self.log_path = os.path.join(self.tmpdir, "redis-%d.log" % self.port)
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        assert self.proc is None or not self.proc.alive(), "redis already running"
        self.proc = harness.Proc("redis-server", self.argv, self.log_path)
        deadline = time.monotonic() + timeout
        while True:
            if not self.proc.alive():
                raise AssertionError("redis-server exited on start:\n" + self.proc.tail())
            try:
                with Resp(self.port, timeout=1, password=self.password) as r:
                    if r.command("PING") == "PONG":
                        return
            except (OSError, ConnectionError, Exception):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server not ready on port %d:\n%s"
                                     % (self.port, self.proc.tail()))
            time.sleep(0.05)

    restart = start

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(timeout=5)
        self.proc.stop()  # closes its log handle; the process is already gone

    def stop(self):
        if self.proc is not None:
            self.proc.stop()

    def client(self):
        return Resp(self.port, password=self.password)

    def publish(self, channel, data, prefix=PREFIX):
        """PUBLISH <prefix><channel> data over a raw RESP socket; returns receivers."""
        with self.client() as r:
            return r.command("PUBLISH", prefix + channel, data)


class GatewayProc(harness.Proc):
    """herald-gateway with --workers N under its supervisor (this pid)."""

    def __init__(self, tmpdir, redis_url, workers=1, gateway_id=None, stats_interval=0.5,
                 secret=SECRET, extra=(), name="gateway"):
        self.port = harness.free_port()
        self.gateway_id = gateway_id
        self.nworkers = workers
        argv = [harness.GATEWAY_BIN, "--host", "127.0.0.1", "--port", str(self.port),
                "--tls-port", "0", "--redis", redis_url, "--jwt-secret", secret,
                "--workers", str(workers), "--stats-interval", str(stats_interval),
                "--log-level", "debug"]
        if gateway_id:
            argv += ["--gateway-id", gateway_id]
        argv += list(extra)
        log = os.path.join(str(tmpdir), "%s-%d.log" % (name, self.port))
        if not os.path.exists(harness.GATEWAY_BIN):
            pytest.fail("missing %s (run make all)" % harness.GATEWAY_BIN)
        super().__init__(name, argv, log)
        self.url = "ws://127.0.0.1:%d/ws" % self.port
        self.expected_exit = False
        self.wait_port(self.port)
        self.wait_workers(workers)

    def worker_pids(self):
        return harness.children_of(self.pid)

    def wait_workers(self, n, timeout=10.0, exclude=()):
        """Waits until the supervisor has n children not in exclude; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            kids = [p for p in self.worker_pids() if p not in exclude]
            if len(kids) >= n:
                return kids
            if not self.alive():
                raise AssertionError("%s died (%s)\n%s" % (
                    self.name, harness.describe_status(self.proc.returncode), self.tail()))
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d workers expected, have %r\n%s"
                                     % (self.name, n, kids, self.tail()))
            time.sleep(0.05)

    def wait_exit(self, timeout):
        """Waits for the supervisor to exit; returns its status or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def crash_in_log(self):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        m = harness.CRASH_RE.search(text)
        return m.group(0) if m else None

    def grep_log(self, word):
        try:
            with open(self.log_path, "rb") as f:
                return [ln for ln in f.read().decode("utf-8", "replace").splitlines()
                        if word in ln]
        except OSError:
            return []

    def problem(self):
        """Stops the gateway; returns a description of anything wrong, or None."""
        if not self.stopped and not self.alive() and not self.expected_exit:
            p = "%s died (%s)" % (self.name, harness.describe_status(self.proc.returncode))
        else:
            p = None
        early, rc = self.stop()
        if p is None and not self.expected_exit and not early and rc not in (0, -signal.SIGTERM):
            p = "%s ended badly on SIGTERM (%s)" % (self.name, harness.describe_status(rc))
        crash = self.crash_in_log()
        if crash:
            p = (p + "; " if p else "") + "%s log shows a crash (%r)" % (self.name, crash)
        return None if p is None else p + "\n--- log tail ---\n" + self.tail(80)


class Cluster:
    """Processes for one test; stop_all() stops gateways first, then Redis."""

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.gateways = []
        self.redises = []

    def redis(self, password=None):
        r = Redis(self.tmpdir, password=password)
        self.redises.append(r)
        return r

    def gateway(self, redis, url=None, **kw):
        """A gateway on redis (url overrides redis.url, e.g. to add a db number)."""
        gw = GatewayProc(self.tmpdir, url or redis.url, **kw)
        self.gateways.append(gw)
        return gw

    def stop_all(self):
        problems = []
        for gw in self.gateways:
            p = gw.problem()
            if p:
                problems.append(p)
        for r in self.redises:
            r.stop()
        return problems


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        problems = c.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems))


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

_ids = itertools.count(1)


class Client:
    """An async websocket client; every wait has a deadline.

    Messages that arrive while waiting for something else are kept in
    self.pending (in order), so nothing is lost."""

    def __init__(self, ws, hello, name):
        self.ws = ws
        self.hello = hello
        self.name = name
        self.pending = []

    @classmethod
    async def open(cls, url, token=None, name="client", timeout=5.0):
        hdrs = [("Authorization", "Bearer " + token)] if token else []
        ws = await asyncio.wait_for(websockets.connect(
            url, extra_headers=hdrs, ping_interval=None, max_size=None, max_queue=None,
            open_timeout=timeout, close_timeout=2, compression=None), timeout + 1)
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        except BaseException:
            await ws.close()
            raise
        assert hello.get("type") == "connected", "%s: first message %r" % (name, hello)
        return cls(ws, hello, name)

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    async def _recv_raw(self, timeout):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def recv(self, timeout=5.0):
        """The next message (pending first); AssertionError on timeout."""
        if self.pending:
            return self.pending.pop(0)
        try:
            return await self._recv_raw(timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no message within %.1fs" % (self.name, timeout)) from None

    async def wait_for(self, pred, timeout=5.0, what="message"):
        """The first message satisfying pred; others are kept in pending."""
        for i, m in enumerate(self.pending):
            if pred(m):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s within %.1fs; got meanwhile %r"
                                     % (self.name, what, timeout, seen[-10:]))
            try:
                m = await self._recv_raw(left)
            except asyncio.TimeoutError:
                continue
            if pred(m):
                return m
            self.pending.append(m)
            seen.append(m)

    async def request(self, obj, timeout=5.0):
        """Sends obj with a fresh "id" and returns the reply echoing it."""
        rid = "r%d" % next(_ids)
        await self.send(dict(obj, id=rid))
        return await self.wait_for(lambda m: m.get("id") == rid, timeout,
                                   "reply to %r" % (obj,))

    async def subscribe(self, channel, timeout=5.0):
        r = await self.request({"type": "subscribe", "channel": channel}, timeout)
        assert r.get("type") == "subscribed" and r.get("channel") == channel, \
            "%s: subscribe %s got %r" % (self.name, channel, r)

    async def unsubscribe(self, channel, timeout=5.0):
        r = await self.request({"type": "unsubscribe", "channel": channel}, timeout)
        assert r.get("type") == "unsubscribed" and r.get("channel") == channel, \
            "%s: unsubscribe %s got %r" % (self.name, channel, r)

    async def event(self, channel=None, timeout=5.0):
        return await self.wait_for(
            lambda m: m.get("type") == "event" and (channel is None or m.get("channel") == channel),
            timeout, "event on %s" % (channel or "any channel"))

    async def nothing(self, wait=0.5, ignore=()):
        """Asserts no message (other than types in ignore) arrives within wait seconds."""
        got = [m for m in self.pending if m.get("type") not in ignore]
        assert not got, "%s: unexpected %r" % (self.name, got)
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                m = await self._recv_raw(left)
            except asyncio.TimeoutError:
                return
            assert m.get("type") in ignore, "%s: unexpected message %r" % (self.name, m)

    async def stats(self, timeout=5.0):
        r = await self.request({"type": "stats"}, timeout)
        assert r.get("type") == "stats", "%s: stats got %r" % (self.name, r)
        return r

    async def close_info(self, timeout=5.0):
        """Reads until the server closes; returns (code, messages before)."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: not closed within %.1fs; got %r"
                                     % (self.name, timeout, msgs[-5:]))
            try:
                m = await asyncio.wait_for(self.ws.recv(), left)
            except websockets.exceptions.ConnectionClosed:
                break
            except asyncio.TimeoutError:
                continue
            msgs.append(m)
        try:
            await asyncio.wait_for(self.ws.wait_closed(), 3)
        except asyncio.TimeoutError:
            pass
        return self.ws.close_code, msgs

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass


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

def publish_burst(port, channel, payloads):
    """PUBLISHes every payload on herald:<channel> over one pipelined socket;
    returns the list of receiver counts."""
    blob = b"".join(Resp.encode("PUBLISH", PREFIX + channel, p) for p in payloads)
    with Resp(port, timeout=30) as r:
        r.sock.sendall(blob)
        return [r.read_reply(timeout=30) for _ in payloads]


def redis_cli_publish(port, channel, data):
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "PUBLISH",
                          PREFIX + channel, data], capture_output=True, timeout=10, text=True)
    assert out.returncode == 0, "redis-cli failed: %s %s" % (out.stdout, out.stderr)
    return int(out.stdout.strip())


def herald_pub(redis_url, channel, data):
    out = subprocess.run([harness.PUB_BIN, "--redis", redis_url, channel, data],
                         capture_output=True, timeout=10, text=True,
                         env={k: v for k, v in os.environ.items()
                              if k not in ("HERALD_REDIS", "HERALD_CHANNEL_PREFIX")})
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
