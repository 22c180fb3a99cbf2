"""Reusable pieces for end-to-end tests that need Redis.

- free_port(): a TCP port on 127.0.0.1 with nothing listening (at the time of
  the call).
- RedisServer: a private redis-server on a free port, started with
  subprocess.Popen and stopped by its PID; usable as a context manager.
- fresh_redis / redis_factory: pytest fixtures built on it (one server per
  test; conftest.py's module-scoped ``redis_server`` is a different one).
  Import them into a test module (``from harness_redis import fresh_redis``)
  to use them; every server is stopped in the fixture's finalizer even when
  the test fails.
- Resp: a minimal RESP2 client over a plain socket (commands, replies, and
  pub/sub messages), so tests need no Python Redis package.
- Subscriber: Resp in PSUBSCRIBE mode, collecting (channel, data) pairs.
- herald_build(): the directory with the built binaries (env HERALD_BUILD,
  default /work/main/build).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def herald_build():
    return os.environ.get("HERALD_BUILD", "/work/main/build")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RespError(Exception):
    """An error reply (-ERR ...) from Redis."""


class Resp:
    """A blocking RESP2 client: enough for PING, AUTH, PUBLISH, (P)SUBSCRIBE."""

    def __init__(self, port, host="127.0.0.1", password=None, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.command("AUTH", password)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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


class Subscriber:
    """A PSUBSCRIBE connection; messages come back as (channel, data) bytes."""

    def __init__(self, port, pattern="herald:*", password=None):
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
            if isinstance(reply, list) and reply[0] == b"pmessage":
                return reply[2], reply[3]
            if isinstance(reply, list) and reply[0] == b"message":
                return reply[1], reply[2]

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
    """redis-server on a free port, no persistence, stopped by PID."""

    def __init__(self, password=None, extra_args=(), port=None):
        self.port = port or free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="herald-redis-")
        args = [shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.dir]
        if password is not None:
            args += ["--requirepass", password]
        args += list(extra_args)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    @property
    def url(self):
        if self.password is not None:
            return "redis://:%s@127.0.0.1:%d" % (self.password, self.port)
        return "redis://127.0.0.1:%d" % self.port

    def _wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited: %s" % self.read_log())
            try:
                with Resp(self.port, password=self.password, timeout=1) as r:
                    if r.command("PING") == "PONG":
                        return
            except (OSError, RespError, ConnectionError):
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server not ready on port %d" % self.port)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def client(self):
        return Resp(self.port, password=self.password)

    def subscriber(self, pattern="herald:*"):
        return Subscriber(self.port, pattern, password=self.password)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


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
