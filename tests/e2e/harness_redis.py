"""Reusable pieces for end-to-end tests that need Redis.

- RedisServer: a private redis-server on a free (or given) port, no
  persistence, started with harness.Proc and stopped by its PID; kill9() and
  restart() keep its port and command line; usable as a context manager.
  harness_cluster.Cluster starts these for a test and stops them.
- fresh_redis / redis_factory: pytest fixtures built on it (one server per
  test; conftest.py's module-scoped ``redis_server`` is another one).
  Import them into a test module (``from harness_redis import fresh_redis``)
  to use them; every server is stopped in the fixture's finalizer even when
  the test fails.
- Resp: a minimal RESP2 client over a plain socket (commands, replies, and
  pub/sub messages), so tests need no Python Redis package.
- Subscriber: Resp in PSUBSCRIBE mode, collecting (channel, data) pairs.
- publish_burst(): many PUBLISHes pipelined over one socket.
- free_port(), herald_build(): from harness (herald_build() is the directory
  with the built binaries: env HERALD_BUILD, default build/).
"""

import os
import re
import shutil
import signal
import socket
import tempfile
import time

import pytest

import harness
from harness import PREFIX, free_port  # noqa: F401  (re-exported)


def herald_build():
    return harness.BUILD


class RespError(Exception):
    """An error reply (-ERR ...) from Redis."""


class Resp(harness.SocketConn):
    """A blocking RESP2 client: enough for PING, AUTH, PUBLISH, (P)SUBSCRIBE."""

    def __init__(self, port, host="127.0.0.1", password=None, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.command("AUTH", password)

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send(self, *args):
        self.sock.sendall(self.encode(*args))

    def command(self, *args):
        self.send(*args)
        reply = self.read_reply()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read_reply(self, timeout=None):
        """One reply: bytes, int, list, None, str (status) or RespError.
        Raises socket.timeout when nothing complete arrives in time."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise ValueError("bad RESP line %r" % line)


HISTORY_HEADER = re.compile(rb"^#(\d{1,32}) ((?:0|[1-9]\d{0,19})-(?:0|[1-9]\d{0,19})) ")


def split_history(data):
    """(epoch, offset, data) of a pub/sub payload "#<epoch> <offset> <data>"
    (README "History"); (None, None, data) for a payload without the header."""
    m = HISTORY_HEADER.match(data)
    if not m:
        assert not data.startswith(b"#"), "malformed history header: %r" % data[:80]
        return None, None, data
    return m.group(1).decode(), m.group(2).decode(), data[m.end():]


class Subscriber:
    """A PSUBSCRIBE connection; messages come back as (channel, data) bytes.
    With strip_history, a history header is checked and removed from data and
    kept in .headers as (epoch, offset), None for a message without one."""

    def __init__(self, port, pattern="herald:*", password=None, strip_history=False):
        self.strip_history = strip_history
        self.headers = []
        self.conn = Resp(port, password=password)
        self.conn.send("PSUBSCRIBE", pattern)
        reply = self.conn.read_reply(timeout=5)
        assert reply[0] == b"psubscribe", reply

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next(self, timeout=5.0):
        """The next message, or None when none arrives within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                reply = self.conn.read_reply(timeout=left)
            except socket.timeout:
                return None
            if isinstance(reply, list) and reply[0] in (b"pmessage", b"message"):
                channel, data = reply[-2], reply[-1]
                if self.strip_history:
                    epoch, offset, data = split_history(data)
                    self.headers.append((epoch, offset) if offset else None)
                return channel, data

    def collect(self, count, timeout=10.0):
        """Up to count messages, waiting at most timeout in all."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            msg = self.next(max(0.0, deadline - time.monotonic()))
            if msg is None:
                break
            out.append(msg)
        return out

    def quiet(self, timeout=0.3):
        """True when no message arrives for timeout seconds."""
        return self.next(timeout) is None


class RedisServer:
    """redis-server on a free (or given) port, no persistence, stopped by PID.

    kill9() and restart() keep the port and the command line. Without tmpdir
    it works in a temporary directory of its own, which stop() removes."""

    def __init__(self, tmpdir=None, port=None, password=None, extra_args=()):
        self.own_dir = tmpdir is None
        self.dir = tempfile.mkdtemp(prefix="herald-redis-") if self.own_dir else str(tmpdir)
        self.port = port or free_port()
        self.password = password
        self.argv = [shutil.which("redis-server") or "redis-server",
                     "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                     "--dir", self.dir]
        if password is not None:
            self.argv += ["--requirepass", password]
        self.argv += [str(a) for a in extra_args]
        self.log_path = os.path.join(self.dir, "redis-%d.log" % self.port)
        self.proc = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self):
        if self.password is not None:
            return "redis://:%s@127.0.0.1:%d" % (self.password, self.port)
        return "redis://127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        """Starts the server (again) and waits until it answers PING."""
        if self.proc is not None:
            assert not self.proc.alive(), "redis already running"
            self.proc.stop()  # closes the log handle of the one that died
        self.proc = harness.Proc("redis-server", self.argv, self.log_path)
        self.proc.wait_started(lambda: self._wait_ready(timeout))

    restart = start

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            if not self.proc.alive():
                raise AssertionError("redis-server exited on start:\n" + self.tail())
            try:
                with Resp(self.port, password=self.password, timeout=1) as r:
                    if r.command("PING") == "PONG":
                        return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server not ready on port %d:\n%s"
                                     % (self.port, self.tail()))
            time.sleep(0.05)

    def tail(self, n=60):
        return harness.log_tail(self.log_path, n)

    def kill9(self):
        """SIGKILLs the server (no shutdown); restart() brings it back on the same port."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(timeout=5)
        self.proc.stop()  # closes its log handle; the process is already gone

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        return Resp(self.port, password=self.password)

    def subscriber(self, pattern="herald:*", strip_history=False):
        return Subscriber(self.port, pattern, password=self.password,
                          strip_history=strip_history)

    def publish(self, channel, data, prefix=PREFIX):
        """PUBLISH <prefix><channel> data over a raw RESP socket; returns receivers."""
        with self.client() as r:
            return r.command("PUBLISH", prefix + channel, data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def publish_burst(port, channel, payloads, timeout=30.0):
    """PUBLISHes every payload on herald:<channel> over one pipelined socket;
    returns the list of receiver counts."""
    return publish_mixed_burst(port, [(channel, p) for p in payloads], timeout)


def publish_mixed_burst(port, events, timeout=30.0):
    """PUBLISHes (channel, payload) pairs in this order over one pipelined
    socket; returns the list of receiver counts."""
    blob = b"".join(Resp.encode("PUBLISH", PREFIX + ch, p) for ch, p in events)
    with Resp(port, timeout=timeout) as r:
        r.sock.sendall(blob)
        return [r.read_reply(timeout=timeout) for _ in events]


@pytest.fixture
def fresh_redis():
    """A fresh redis-server for one test, without a password."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_factory():
    """Starts servers on demand (factory(password=..., extra_args=...)); all
    are stopped after the test."""
    servers = []

    def start(**kwargs):
        server = RedisServer(**kwargs)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
