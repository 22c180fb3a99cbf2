"""Helpers for the production-hardening end-to-end tests (limits, liveness,
operations).

- OpsGateway: herald-gateway with full control of its command line (any
  --workers, secret or secret file, TLS, env), its supervisor pid and its
  workers' pids; ``ops`` fixture: starts gateways and Redis servers for one
  test and stops every one of them by PID afterwards (a gateway that died
  unexpectedly or logged a crash fails the test).
- HTTP: http_get() and scrape() for /healthz, /readyz and /metrics
  (Prometheus text parsed into a Metrics object).
- Sockets: SlowWS (a raw websocket client with a small receive buffer that
  reads only when told to), parse_frames(), wait_until().
- Memory: vm_rss_kb(pid).
"""

import http.client
import os
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

import harness
from harness import RawWS
from harness_cluster import Redis
from harness_redis import Resp

SECRET = "e2e-test-secret-0123456789abcdef"
PREFIX = "herald:"


# ----------------------------------------------------------------- waiting

def wait_until(fn, timeout, interval=0.05, what="condition"):
    """Calls fn() until it returns something truthy; returns that value.
    Raises AssertionError naming `what` and the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.1fs (last: %r)" % (what, timeout, last))
        time.sleep(interval)


# ----------------------------------------------------------------- processes

class OpsGateway(harness.Proc):
    """herald-gateway on a free port. secret=None passes no --jwt-secret (use
    extra=["--jwt-secret-file", ...] or --jwt-key then)."""

    def __init__(self, tmpdir, redis_url, workers=1, secret=SECRET, extra=(), env=None, tls=None,
                 name="gateway", log_level="debug", wait=True):
        if not os.path.exists(harness.GATEWAY_BIN):
            pytest.fail("missing %s (run make all)" % harness.GATEWAY_BIN)
        self.port = harness.free_port()
        self.tls_port = harness.free_port() if tls else 0
        self.nworkers = workers
        argv = [harness.GATEWAY_BIN, "--host", "127.0.0.1", "--port", str(self.port),
                "--tls-port", str(self.tls_port), "--redis", redis_url,
                "--workers", str(workers), "--log-level", log_level]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        if secret is not None:
            argv += ["--jwt-secret", secret]
        argv += [str(a) for a in extra]
        log = os.path.join(str(tmpdir), "%s-%d.log" % (name, self.port))
        super().__init__(name, argv, log, env=env)
        self.url = "ws://127.0.0.1:%d/ws" % self.port
        self.expected_exit = False
        self.workers = []
        if wait:
            self.wait_port(self.port)
            if self.tls_port:
                self.wait_port(self.tls_port)
            self.workers = self.wait_workers(workers)

    def worker_pids(self):
        return harness.children_of(self.pid)

    def wait_workers(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            kids = self.worker_pids()
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
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self, word=None):
        return [ln for ln in self.log_text().splitlines() if word is None or word in ln]

    def wait_log_count(self, word, n, timeout=10.0):
        """Waits until at least n log lines contain word; returns those lines."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_lines(word)
            if len(lines) >= n:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d log line(s) with %r expected within %.0fs, have %d"
                                     "\n--- log tail ---\n%s"
                                     % (self.name, n, word, timeout, len(lines), self.tail(40)))
            time.sleep(0.05)

    def problem(self):
        """Stops the gateway; returns a description of anything wrong, or None."""
        p = None
        if not self.stopped and not self.alive() and not self.expected_exit:
            p = "%s died (%s)" % (self.name, harness.describe_status(self.proc.returncode))
        elif (not self.stopped and self.alive() and self.workers
              and self.worker_pids() != self.workers):
            p = "%s: worker(s) %r were replaced by %r" % (self.name, self.workers,
                                                          self.worker_pids())
        early, rc = self.stop()
        if p is None and not self.expected_exit and not early and rc not in (0, -signal.SIGTERM):
            p = "%s ended badly on SIGTERM (%s)" % (self.name, harness.describe_status(rc))
        m = harness.CRASH_RE.search(self.log_text())
        if m:
            p = (p + "; " if p else "") + "%s log shows a crash (%r)" % (self.name, m.group(0))
        return None if p is None else p + "\n--- log tail ---\n" + self.tail(80)


class Ops:
    """Processes for one test: gateway(...) and redis(); stop_all() stops
    gateways first (by PID), then the Redis servers."""

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.gateways = []
        self.redises = []

    def redis(self):
        r = Redis(self.tmpdir)
        self.redises.append(r)
        return r

    def gateway(self, redis=None, **kw):
        if redis is None:
            redis = self.redises[0] if self.redises else self.redis()
        gw = OpsGateway(self.tmpdir, redis.url, **kw)
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
def ops(tmp_path):
    o = Ops(tmp_path)
    try:
        yield o
    finally:
        problems = o.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems))


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def publish_pipelined(port, channel, payloads, timeout=30.0):
    """PUBLISHes every payload on herald:<channel> over one pipelined socket;
    returns the receiver counts."""
    blob = b"".join(Resp.encode("PUBLISH", PREFIX + channel, p) for p in payloads)
    with Resp(port, timeout=timeout) as r:
        r.sock.sendall(blob)
        return [r.read_reply(timeout=timeout) for _ in payloads]


# ----------------------------------------------------------------- HTTP

class HttpResult:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lowercased names
        self.body = body        # str

    def __repr__(self):
        return "HttpResult(%d, %r, %r)" % (self.status, self.headers, self.body[:300])


def http_get(port, path, timeout=5.0, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        return HttpResult(r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    finally:
        conn.close()


_SAMPLE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _parse_labels(text):
    out = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise AssertionError("bad label set {%s}" % text)
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


class Metrics:
    """Prometheus text exposition, parsed. samples: [(name, labels, value)];
    types: {family: type}."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        self.helps = {}
        for ln in text.splitlines():
            if not ln.strip():
                continue
            if ln.startswith("#"):
                parts = ln.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                elif len(parts) >= 3 and parts[1] == "HELP":
                    self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                continue
            m = _SAMPLE_RE.match(ln)
            assert m, "malformed metrics line %r" % ln
            labels = _parse_labels(m.group(3)) if m.group(3) else {}
            v = m.group(4)
            value = float("inf") if v == "+Inf" else float("-inf") if v == "-Inf" else float(v)
            self.samples.append((m.group(1), labels, value))

    def series(self, name, **labels):
        return [(lb, v) for n, lb, v in self.samples
                if n == name and all(lb.get(k) == str(x) for k, x in labels.items())]

    def value(self, name, **labels):
        """The value of the single series of name matching labels."""
        s = self.series(name, **labels)
        assert len(s) == 1, "expected one series %s%r, found %r" % (name, labels, s)
        return s[0][1]

    def total(self, name, **labels):
        return sum(v for _, v in self.series(name, **labels))


def scrape(port, timeout=5.0):
    r = http_get(port, "/metrics", timeout)
    assert r.status == 200, "/metrics: %r" % r
    return Metrics(r.body)


# ----------------------------------------------------------------- sockets

def parse_frames(buf):
    """Complete server frames at the start of buf: ([(opcode, payload)], rest)."""
    out = []
    pos = 0
    while True:
        if len(buf) - pos < 2:
            break
        b0, b1 = buf[pos], buf[pos + 1]
        n = b1 & 0x7F
        hdr = 2
        if n == 126:
            if len(buf) - pos < 4:
                break
            n = struct.unpack("!H", buf[pos + 2:pos + 4])[0]
            hdr = 4
        elif n == 127:
            if len(buf) - pos < 10:
                break
            n = struct.unpack("!Q", buf[pos + 2:pos + 10])[0]
            hdr = 10
        if len(buf) - pos < hdr + n:
            break
        out.append((b0 & 0x0F, bytes(buf[pos + hdr:pos + hdr + n])))
        pos += hdr + n
    return out, buf[pos:]


class SlowWS(RawWS):
    """A RawWS whose socket has a small SO_RCVBUF set before connect (so the
    kernel holds little on its side); it reads only when a method reads."""

    def __init__(self, port, rcvbuf=16384, host="127.0.0.1", timeout=harness.TIMEOUT):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect((host, port))
        self.sock = s
        self.port = port
        self.host = host
        self.buf = b""
        self.eof = False
        self.timeout = timeout

    def drain_all(self, timeout=15.0, bigbuf=4 << 20):
        """Enlarges the receive buffer and reads until EOF/reset. Returns
        (all bytes since the handshake, True if the peer closed TCP)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bigbuf)
        except OSError:
            pass
        chunks = [self.buf]
        self.buf = b""
        deadline = time.monotonic() + timeout
        closed = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                c = self.sock.recv(1 << 20)
            except socket.timeout:
                break
            except (ConnectionResetError, OSError):
                closed = True
                break
            if not c:
                closed = True
                break
            chunks.append(c)
        return b"".join(chunks), closed


def ws_upgrade_status(port, headers=None, timeout=5.0):
    """Attempts one upgrade on /ws; returns (status, RawWS). For 101 the
    "connected" message has been read; the caller closes the RawWS."""
    c = RawWS(port, timeout=timeout)
    try:
        r = c.request(headers=headers)
        if r.status == 101:
            op, payload = c.read_message(timeout)
            assert op == harness.OP_TEXT and b'"connected"' in payload, (op, payload[:200])
        return r.status, c
    except BaseException:
        c.close()
        raise


@pytest.fixture(scope="module")
def ops_module(tmp_path_factory):
    """Module-scoped Ops (a gateway shared by a module's tests)."""
    o = Ops(tmp_path_factory.mktemp("ops"))
    try:
        yield o
    finally:
        problems = o.stop_all()
    if problems:
        pytest.fail("\n\n".join(problems))


def help_text():
    r = subprocess.run([harness.GATEWAY_BIN, "--help"], capture_output=True, timeout=10,
                       text=True)
    return r.stdout + r.stderr


def help_line(option):
    """The --help line describing option (e.g. "--ping-interval"), or None."""
    for ln in help_text().splitlines():
        if re.search(r"(^|\s)%s(\s|=|$)" % re.escape(option), ln):
            return ln
    return None
