"""Helpers for the production-hardening end-to-end tests (limits, liveness,
operations).

- Ops / the ``ops`` and ``ops_module`` fixtures: a harness_cluster.Cluster
  whose gateways (harness.GatewayProc: any --workers, secret or secret file,
  TLS, env) keep the default stats interval and must keep their workers;
  it starts gateways and Redis servers for one test (or module) and stops
  every one of them by PID afterwards (a gateway that died unexpectedly, had
  a worker replaced or logged a crash fails the test).
- HTTP: http_get() and scrape() for /healthz, /readyz and /metrics
  (Prometheus text parsed into a Metrics object).
- Sockets: SlowWS (a raw websocket client with a small receive buffer that
  reads only when told to), parse_frames(), wait_until().
- Memory: vm_rss_kb(pid).
"""

import http.client
import re
import socket
import struct
import subprocess
import time

import pytest

import harness
from harness import RawWS
from harness_cluster import Cluster


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

class Ops(Cluster):
    """A Cluster whose gateways keep the gateway's default stats interval and
    whose replaced workers are a problem."""

    gateway_defaults = {}


@pytest.fixture
def ops(tmp_path):
    with Ops(tmp_path) as o:
        yield o


@pytest.fixture(scope="module")
def ops_module(tmp_path_factory):
    """Module-scoped Ops (a gateway shared by a module's tests)."""
    with Ops(tmp_path_factory.mktemp("ops")) as o:
        yield o


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


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
        super().__init__(port, host=host, timeout=timeout, rcvbuf=rcvbuf)

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
