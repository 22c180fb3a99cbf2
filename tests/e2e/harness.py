"""Process and protocol helpers for Herald's end-to-end tests.

Everything here talks to real processes: herald-gateway (GatewayProc) and
any other child (Proc) started on free ports, stopped by PID. Nothing waits
without a timeout. The redis-server wrapper is harness_redis.RedisServer;
harness_cluster.Cluster owns a test's processes.
"""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.parse

import pytest
import websockets
import websockets.exceptions

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("HERALD_BUILD") or os.path.join(REPO, "build")
GATEWAY_BIN = os.path.join(BUILD, "herald-gateway")
TOKEN_BIN = os.path.join(BUILD, "herald-token")
PUB_BIN = os.path.join(BUILD, "herald-pub")

SECRET = "e2e-test-secret-0123456789abcdef"  # the gateways' default HS256 secret
PREFIX = "herald:"  # the Redis channel prefix
TIMEOUT = 5.0  # default for every network wait
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID4_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)

# Log lines that mean a process crashed or hit undefined behaviour even when a
# supervisor hid it by restarting the worker.
CRASH_RE = re.compile(
    r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|"
    r"Segmentation fault|SIGSEGV|SIGABRT|SIGBUS|core dumped")

# A gateway's debug line for each connection it opens.
OPEN_RE = re.compile(r"event=open conn=([0-9a-fA-F-]+)")

ALL_KNOWN = [
    "apps:created", "apps:updated", "apps:deleted", "apps:deployed", "apps:status",
    "users:created", "users:updated", "users:deleted", "user:{uid}",
    "database:table_created", "database:table_updated", "database:table_deleted",
    "database:row_updated",
    "deployments:started", "deployments:completed", "deployments:failed", "deployments:status",
    "storage:uploaded", "storage:deleted", "storage:updated",
    "system:health", "system:metrics", "system:alerts", "announcements",
]


def expected_channels(uid=None, admin=False):
    """authorizedChannels / list_channels for a user (None: anonymous), in table order."""
    if uid is None:
        return ["announcements"]
    out = []
    for c in ALL_KNOWN:
        if c.startswith("system:") and not admin:
            continue
        out.append(c.format(uid=uid))
    return out


# ----------------------------------------------------------------- processes

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path, n=60):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return "<no log: %s>" % e
    return "\n".join(lines[-n:])


def children_of(pid):
    """PIDs whose parent is pid (read from /proc/*/stat)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: the fields after the last ')' are fixed
        rest = st[st.rfind(")") + 2:].split()
        if len(rest) > 1 and rest[1] == str(pid):
            out.append(int(d))
    return sorted(out)


def describe_status(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return "killed by %s" % signal.Signals(-rc).name
        except ValueError:
            return "killed by signal %d" % -rc
    return "exit status %d" % rc


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(")") + 2:].split()[0] != "Z"


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def kill_leftovers(pids, name=None):
    """SIGKILLs those of pids (workers recorded before their supervisor was
    stopped) that outlived it, e.g. when the supervisor had to be SIGKILLed.
    With name, only processes whose command line contains it."""
    for pid in pids:
        if pid_alive(pid) and (name is None or name in cmdline(pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def clean_env(**extra):
    """os.environ without the variables that would redirect herald-pub."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HERALD_REDIS", "HERALD_REDIS_CLUSTER", "HERALD_CHANNEL_PREFIX")}
    env.update(extra)
    return env


class Proc:
    """A child process with its output in a log file, stopped by PID."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = argv
        self.log_path = str(log_path)
        self._log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        try:
            self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=full_env)
        except BaseException:
            self._log.close()
            raise
        self.pid = self.proc.pid
        self.stopped = False
        self.stop_status = None

    def wait_started(self, *waits):
        """Runs the startup waits; on any failure stops the process and re-raises."""
        try:
            for w in waits:
                w()
        except BaseException:
            self.stop()
            raise

    def alive(self):
        return self.proc.poll() is None

    def poll(self):
        return self.proc.poll()

    def tail(self, n=60):
        return log_tail(self.log_path, n)

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

    def crash_in_log(self):
        """The first crash marker (CRASH_RE) in the log, or None."""
        m = CRASH_RE.search(self.log_text())
        return m.group(0) if m else None

    def wait_port(self, port, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError("%s died during startup (%s): %s\n--- log tail ---\n%s" % (
                    self.name, describe_status(self.proc.returncode), " ".join(self.argv),
                    self.tail()))
            if port_open(port):
                return
            time.sleep(0.05)
        raise AssertionError("%s did not accept on port %d within %.0fs: %s\n--- log tail ---\n%s"
                             % (self.name, port, timeout, " ".join(self.argv), self.tail()))

    def wait_exit(self, timeout):
        """Waits for the process to exit; returns its status or None on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """SIGTERM, SIGKILL after 5 s. Returns (died_before_stop, returncode)."""
        if self.stopped:
            return False, self.stop_status
        self.stopped = True
        early = self.proc.poll() is not None
        if not early:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        self.stop_status = self.proc.returncode
        return early, self.proc.returncode


class GatewayProc(Proc):
    """herald-gateway on free ports under its supervisor (this pid), with
    --workers N; self.workers are the worker pids seen at startup.

    The options map onto its command line: secret (None: no --jwt-secret;
    use extra or env then), gateway_id, stats_interval (None: the default),
    tls=(cert, key) (a free wss port), port (default a free one), log_level;
    the operator listener (/metrics) is on 127.0.0.1:admin_port, a free one;
    extra comes last. watch_workers=False accepts a replaced worker (for tests
    that kill workers on purpose); expected_exit=True accepts its exit.

    problem() stops it and says what went wrong: it died, a worker was
    replaced, it ended badly on SIGTERM, or its log shows a crash.
    health_problem() checks the same without stopping it."""

    def __init__(self, tmpdir, redis_url, workers=1, secret=SECRET, gateway_id=None,
                 stats_interval=None, tls=None, port=None, extra=(), env=None, name="gateway",
                 log_level="debug", watch_workers=True):
        if not os.path.exists(GATEWAY_BIN):
            pytest.fail("missing %s (build first, or set HERALD_BUILD)" % GATEWAY_BIN)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.admin_port = free_port()
        self.gateway_id = gateway_id
        self.nworkers = workers
        self.watch_workers = watch_workers
        self.expected_exit = False
        self.reported = False  # a problem already reported by conftest's crash check
        self.workers = []
        argv = [GATEWAY_BIN, "--host", "127.0.0.1", "--port", str(self.port),
                "--tls-port", str(self.tls_port or 0),
                "--workers", str(workers), "--log-level", log_level,
                "--admin-listen", "127.0.0.1:%d" % self.admin_port]
        if redis_url is not None:  # None: the Redis option comes in extra (--redis-cluster)
            argv[5:5] = ["--redis", redis_url]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        if secret is not None:
            argv += ["--jwt-secret", secret]
        if gateway_id:
            argv += ["--gateway-id", gateway_id]
        if stats_interval is not None:
            argv += ["--stats-interval", str(stats_interval)]
        argv += [str(a) for a in extra]
        log = os.path.join(str(tmpdir), "%s-%d.log" % (name, self.port))
        super().__init__(name, argv, log, env=env)
        self.url = "ws://127.0.0.1:%d/ws" % self.port
        self.wss_url = "wss://127.0.0.1:%d/ws" % self.tls_port if self.tls_port else None
        waits = [lambda: self.wait_port(self.port)]
        if self.tls_port:
            waits.append(lambda: self.wait_port(self.tls_port))
        waits.append(lambda: setattr(self, "workers", self.wait_workers(workers)))
        self.wait_started(*waits)

    def worker_pids(self):
        return children_of(self.pid)

    def wait_workers(self, n, timeout=10.0, exclude=()):
        """Waits until the supervisor has n children not in exclude; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            kids = [p for p in self.worker_pids() if p not in exclude]
            if len(kids) >= n:
                return kids
            if not self.alive():
                raise AssertionError("%s died (%s)\n%s" % (
                    self.name, describe_status(self.proc.returncode), self.tail()))
            if time.monotonic() > deadline:
                raise AssertionError("%s: %d workers expected, have %r\n%s"
                                     % (self.name, n, kids, self.tail()))
            time.sleep(0.05)

    def conn_ids(self):
        """Connection ids this gateway opened (its "event=open conn=<id>" debug lines)."""
        return set(OPEN_RE.findall(self.log_text()))

    def sigterm(self):
        """Starts a drain; the exit that follows is expected."""
        self.expected_exit = True
        self.proc.send_signal(signal.SIGTERM)

    def kill9(self):
        """SIGKILLs the supervisor first (so it restarts nothing), then its worker(s)."""
        self.expected_exit = True
        kids = self.worker_pids()
        os.kill(self.pid, signal.SIGKILL)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while any(pid_alive(k) for k in kids):
            assert time.monotonic() < deadline, "%s: worker(s) %r survived SIGKILL" % (
                self.name, kids)
            time.sleep(0.02)
        return kids

    def stop(self):
        """Proc.stop(), then SIGKILLs workers that outlived the supervisor."""
        kids = self.worker_pids() if self.alive() else []
        result = super().stop()
        kill_leftovers(set(kids) | set(self.workers), os.path.basename(GATEWAY_BIN))
        return result

    def _state_problem(self):
        if self.stopped:
            return None
        if not self.alive():
            if self.expected_exit:
                return None
            return "%s died (%s)" % (self.name, describe_status(self.proc.returncode))
        if self.watch_workers and self.workers and self.worker_pids() != self.workers:
            return "%s: worker(s) %r were replaced by %r" % (self.name, self.workers,
                                                             self.worker_pids())
        return None

    def _with_crash(self, p):
        crash = self.crash_in_log()
        if crash:
            p = (p + "; " if p else "") + "%s log shows a crash (%r)" % (self.name, crash)
        return None if p is None else p + "\n--- log tail ---\n" + self.tail(80)

    def health_problem(self):
        """None while the gateway is healthy, else a description with the log tail."""
        return self._with_crash(self._state_problem())

    def problem(self):
        """Stops the gateway; returns a description of anything wrong, or None."""
        p = self._state_problem()
        early, rc = self.stop()
        if p is None and not self.expected_exit:
            if early:
                p = "%s had exited before stop (%s)" % (self.name, describe_status(rc))
            elif rc not in (0, -signal.SIGTERM):
                p = "%s ended badly on SIGTERM (%s)" % (self.name, describe_status(rc))
        return self._with_crash(p)


def run_gateway_expect_exit(argv_extra, env=None, timeout=5.0, redis_url=None, port=None):
    """Runs herald-gateway expecting it to refuse to start. Returns (rc, stderr, port)."""
    port = port or free_port()
    argv = [GATEWAY_BIN, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--admin-listen", "127.0.0.1:%d" % free_port()]
    if redis_url:
        argv += ["--redis", redis_url]
    argv += list(argv_extra)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=full_env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        served = port_open(port)
        p.send_signal(signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate(timeout=5)
        raise AssertionError("gateway did not exit within %.0fs (serving on port: %s): %s\n"
                             "stderr: %s" % (timeout, served, " ".join(argv),
                                             err.decode("utf-8", "replace")[-2000:]))
    return p.returncode, err.decode("utf-8", "replace"), port


# ----------------------------------------------------------------- tokens

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft_jwt(claims, secret=None, alg="HS256", header=None, signature=None):
    """A JWT signed with HMAC (HS256/384/512), unsigned (alg none) or with a given signature."""
    hdr = {"alg": alg, "typ": "JWT"}
    if header:
        hdr.update(header)
    signing_input = (b64url(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if signature is not None:
        sig = signature
    elif alg.lower() == "none":
        sig = b""
    else:
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        key = secret if isinstance(secret, bytes) else secret.encode()
        sig = hmac.new(key, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


def claims_for(uid, email=None, role=None, ttl=3600, **extra):
    now = int(time.time())
    c = {"userId": uid, "iat": now}
    if ttl is not None:
        c["exp"] = now + ttl
    if email:
        c["email"] = email
    if role:
        c["role"] = role
    c.update(extra)
    return c


def herald_token(*args):
    """Runs build/herald-token with args; returns the token (stdout, stripped)."""
    r = subprocess.run([TOKEN_BIN] + [str(a) for a in args], capture_output=True, timeout=10)
    assert r.returncode == 0, "herald-token %s failed (%d): %s" % (
        " ".join(map(str, args)), r.returncode, r.stderr.decode("utf-8", "replace"))
    tok = r.stdout.decode().strip()
    assert tok.count(".") == 2, "herald-token printed no JWT: %r" % tok
    return tok


def openssl(*args, **kw):
    r = subprocess.run(["openssl"] + [str(a) for a in args], capture_output=True, timeout=60, **kw)
    assert r.returncode == 0, "openssl %s: %s" % (" ".join(map(str, args)), r.stderr.decode())
    return r.stdout


def gen_rsa_keys(d):
    priv, pub = os.path.join(str(d), "rsa-priv.pem"), os.path.join(str(d), "rsa-pub.pem")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", priv)
    openssl("pkey", "-in", priv, "-pubout", "-out", pub)
    return priv, pub


def gen_ec_keys(d):
    priv, pub = os.path.join(str(d), "ec-priv.pem"), os.path.join(str(d), "ec-pub.pem")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", priv)
    openssl("pkey", "-in", priv, "-pubout", "-out", pub)
    return priv, pub


def gen_self_signed(d):
    cert, key = os.path.join(str(d), "cert.pem"), os.path.join(str(d), "key.pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-days", "1", "-keyout", key, "-out", cert)
    return cert, key


def _der_ecdsa_to_raw(der, size=32):
    # SEQUENCE { INTEGER r, INTEGER s } -> r||s, each left-padded to size bytes
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\x00")
        out += v.rjust(size, b"\x00")
        i += 2 + n
    return out


def sign_jwt_openssl(claims, priv_pem, alg):
    """RS256 or ES256 JWT signed by the openssl command."""
    hdr = {"alg": alg, "typ": "JWT"}
    signing_input = (b64url(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    sig = openssl("dgst", "-sha256", "-sign", priv_pem, input=signing_input.encode())
    if alg.startswith("ES"):
        sig = _der_ecdsa_to_raw(sig)
    return signing_input + "." + b64url(sig)


# ----------------------------------------------------------------- websocket client

_ids = itertools.count(1)


async def connect_ws(uri, token=None, timeout=TIMEOUT, origin=None, subprotocols=None,
                     headers=None, ssl_ctx=None, compression=None):
    """A websockets 10.4 connection as every test client opens it: no client
    pings, no compression unless asked, no size or queue limits."""
    hdrs = list(headers or [])
    if token is not None:
        hdrs.append(("Authorization", "Bearer " + token))
    return await asyncio.wait_for(websockets.connect(
        uri, extra_headers=hdrs, subprotocols=subprotocols, origin=origin, ssl=ssl_ctx,
        ping_interval=None, max_size=None, max_queue=None, open_timeout=timeout,
        close_timeout=2, compression=compression), timeout + 1)


async def open_ws(url, token=None, timeout=TIMEOUT, origin=None, who="client"):
    """connect_ws whose "connected" message has been read: returns (ws, hello)."""
    ws = await connect_ws(url, token, timeout, origin=origin)
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    except BaseException:
        await ws.close()
        raise
    assert hello.get("type") == "connected", "%s: first message %r" % (who, hello)
    return ws, hello


class Client:
    """The end-to-end tests' websocket client (asyncio); every wait has a
    deadline. WSClient is its synchronous face.

    Messages that arrive while waiting for something else are kept in
    self.pending (in order), so nothing is lost."""

    def __init__(self, ws, hello, name):
        self.ws = ws
        self.hello = hello
        self.name = name
        self.pending = []

    @classmethod
    async def open(cls, url, token=None, name="client", timeout=TIMEOUT):
        ws, hello = await open_ws(url, token, timeout, who=name)
        return cls(ws, hello, name)

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv_raw(self, timeout=TIMEOUT):
        """The next frame's payload as sent (str or bytes), pending ignored."""
        try:
            return await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no message within %.1fs" % (self.name, timeout)) from None

    async def _recv_json(self, timeout):
        msg = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(msg, str), "%s: binary frame %r" % (self.name, msg[:80])
        obj = json.loads(msg)
        assert isinstance(obj, dict), "%s: server sent a non-object: %r" % (self.name, msg)
        return obj

    async def recv(self, timeout=TIMEOUT):
        """The next message (pending first); AssertionError on timeout."""
        if self.pending:
            return self.pending.pop(0)
        try:
            return await self._recv_json(timeout)
        except asyncio.TimeoutError:
            raise AssertionError("%s: no message within %.1fs" % (self.name, timeout)) from None

    async def wait_for(self, pred, timeout=TIMEOUT, what="message"):
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
                m = await self._recv_json(left)
            except asyncio.TimeoutError:
                continue
            if pred(m):
                return m
            self.pending.append(m)
            seen.append(m)

    async def request(self, obj, timeout=TIMEOUT):
        """Sends obj with a fresh "id" and returns the reply echoing it."""
        rid = "r%d" % next(_ids)
        await self.send(dict(obj, id=rid))
        return await self.wait_for(lambda m: m.get("id") == rid, timeout,
                                   "reply to %r" % (obj,))

    async def subscribe(self, channel, timeout=TIMEOUT):
        r = await self.request({"type": "subscribe", "channel": channel}, timeout)
        assert r.get("type") == "subscribed" and r.get("channel") == channel, \
            "%s: subscribe %s got %r" % (self.name, channel, r)

    async def unsubscribe(self, channel, timeout=TIMEOUT):
        r = await self.request({"type": "unsubscribe", "channel": channel}, timeout)
        assert r.get("type") == "unsubscribed" and r.get("channel") == channel, \
            "%s: unsubscribe %s got %r" % (self.name, channel, r)

    async def event(self, channel=None, timeout=TIMEOUT):
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
                m = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                return
            m = json.loads(m) if isinstance(m, str) else m
            assert isinstance(m, dict) and m.get("type") in ignore, \
                "%s: unexpected message %r" % (self.name, m)

    async def stats(self, timeout=TIMEOUT):
        r = await self.request({"type": "stats"}, timeout)
        assert r.get("type") == "stats", "%s: stats got %r" % (self.name, r)
        return r

    async def close_info(self, timeout=TIMEOUT):
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


class WSClient:
    """Client, driven synchronously on an event loop of its own (for tests
    that are plain functions). Every receive has a timeout."""

    def __init__(self, uri, token=None, subprotocols=None, headers=None, origin=None,
                 ssl_ctx=None, timeout=TIMEOUT, compression=None):
        self.loop = asyncio.new_event_loop()
        try:
            ws = self._run(connect_ws(uri, token, timeout, origin=origin,
                                      subprotocols=subprotocols, headers=headers,
                                      ssl_ctx=ssl_ctx, compression=compression), timeout + 2)
        except BaseException:
            self.loop.close()
            raise
        self.client = Client(ws, None, "client")
        self.ws = ws

    def _run(self, coro, timeout):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    @property
    def subprotocol(self):
        return self.ws.subprotocol

    @property
    def response_headers(self):
        return self.ws.response_headers

    def send_text(self, text):
        self._run(self.client.send(text), TIMEOUT)

    def send_json(self, obj):
        self._run(self.client.send(obj), TIMEOUT)

    def recv(self, timeout=TIMEOUT):
        return self._run(self.client.recv_raw(timeout), timeout + 1)

    def recv_json(self, timeout=TIMEOUT):
        return self._run(self.client.recv(timeout), timeout + 1)

    def request(self, obj, timeout=TIMEOUT):
        self.send_json(obj)
        return self.recv_json(timeout)

    def no_message(self, wait=0.3):
        """Asserts nothing arrives within wait seconds."""
        self._run(self.client.nothing(wait), wait + 1)

    def expect_close(self, timeout=TIMEOUT):
        """Reads until the server closes. Returns (close code, reason, messages before)."""
        code, msgs = self._run(self.client.close_info(timeout), timeout + 5)
        return code, self.ws.close_reason, [json.loads(m) if isinstance(m, str) else m
                                            for m in msgs]

    def close(self):
        if self.loop.is_closed():
            return
        try:
            self._run(self.client.close(), 4)
        except Exception:
            pass
        finally:
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def connect(uri, **kw):
    """Opens a WSClient and reads the "connected" message: returns (client, hello)."""
    c = WSClient(uri, **kw)
    try:
        hello = c.recv_json()
    except BaseException:
        c.close()
        raise
    assert hello.get("type") == "connected", "first message is not connected: %r" % hello
    return c, hello


def query_uri(uri, token):
    return uri + "?token=" + urllib.parse.quote(token, safe="")


def client_ssl_context(cert_file):
    ctx = ssl.create_default_context(cafile=cert_file)
    ctx.check_hostname = False
    return ctx


def assert_timestamp(v):
    assert isinstance(v, str) and TIMESTAMP_RE.match(v), "bad timestamp %r" % (v,)


def assert_error(msg, code, req_id=None):
    assert msg.get("type") == "error", "expected an error reply, got %r" % msg
    assert msg.get("code") == code, "expected code %r, got %r" % (code, msg)
    assert isinstance(msg.get("message"), str) and msg["message"], "empty message: %r" % msg
    assert_timestamp(msg.get("timestamp"))
    if req_id is not None:
        assert msg.get("id") == req_id, "id not echoed: %r" % msg


# ----------------------------------------------------------------- raw websocket

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None, mask_key=None):
    """One frame as bytes. length overrides the announced payload length."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key or os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


class HttpReply:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lowercased name, value)
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self):
        return "HttpReply(%d %s, %r, body=%r)" % (self.status, self.reason, self.headers,
                                                  self.body[:200])


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


class SocketConn:
    """A client over self.sock; close() closes it; usable as a context manager."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class RawWS(SocketConn):
    """A hand-driven client: exact bytes out, parsed HTTP and frames in.

    rcvbuf sets SO_RCVBUF before connect (the kernel then holds little on
    this side: see harness_ops.SlowWS); source is the local address to connect
    from (another loopback address, e.g. 127.0.0.2, is another client)."""

    def __init__(self, port, host="127.0.0.1", ssl_ctx=None, timeout=TIMEOUT, rcvbuf=None,
                 source=None):
        if rcvbuf is None:
            s = socket.create_connection((host, port), timeout=timeout,
                                         source_address=(source, 0) if source else None)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                s.settimeout(timeout)
                if source:
                    s.bind((source, 0))
                s.connect((host, port))
            except BaseException:
                s.close()
                raise
        if ssl_ctx is not None:
            s = ssl_ctx.wrap_socket(s, server_hostname="localhost")
        self.sock = s
        self.port = port
        self.host = host
        self.buf = b""
        self.eof = False
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except ssl.SSLError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError("connection closed with %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def request(self, path="/ws", headers=None, method="GET", key=None, raw=None, timeout=None):
        """Sends an upgrade request (or raw bytes) and reads the HTTP reply head (+ body)."""
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        if raw is None:
            hdrs = [("Host", "%s:%d" % (self.host, self.port)), ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"), ("Sec-WebSocket-Key", self.key),
                    ("Sec-WebSocket-Version", "13")]
            if headers is not None:
                # headers: dict of overrides; value None removes the header
                for k, v in headers.items():
                    hdrs = [(a, b) for a, b in hdrs if a.lower() != k.lower()]
                    if v is not None:
                        hdrs.append((k, v))
            raw = ("%s %s HTTP/1.1\r\n" % (method, path) +
                   "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n").encode()
        self.send(raw)
        return self.read_http(timeout or self.timeout)

    def read_http(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError("connection closed before an HTTP reply; got %r" % self.buf)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) ?(.*)", lines[0])
        assert m, "bad status line %r" % lines[0]
        headers = []
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        status = int(m.group(1))
        body = b""
        if status != 101:
            clen = None
            for k, v in headers:
                if k == "content-length":
                    clen = int(v)
            try:
                if clen is not None:
                    body = self._read_exact(clen, deadline)
            except (EOFError, socket.timeout):
                body = self.buf
        return HttpReply(status, m.group(2), headers, body)

    def handshake(self, path="/ws", headers=None):
        """A valid upgrade; asserts 101 and reads the "connected" message."""
        r = self.request(path, headers)
        assert r.status == 101, "handshake refused: %r" % r
        op, payload = self.read_message()
        assert op == OP_TEXT, "first frame not text: %d %r" % (op, payload)
        hello = json.loads(payload)
        assert hello.get("type") == "connected", hello
        return hello

    def read_frame(self, timeout=None):
        """Returns (fin, rsv, opcode, payload). Raises EOFError on TCP close."""
        deadline = time.monotonic() + (timeout or self.timeout)
        b0, b1 = self._read_exact(2, deadline)
        n = b1 & 0x7F
        assert not (b1 & 0x80), "server sent a masked frame"
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
        payload = self._read_exact(n, deadline)
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload

    def read_message(self, timeout=None):
        """The next complete data message or control frame: (opcode, payload)."""
        fin, rsv, op, payload = self.read_frame(timeout)
        assert rsv == 0, "server frame with RSV bits %d" % rsv
        if op in (OP_TEXT, OP_BIN) and not fin:
            parts = [payload]
            while True:
                fin, _, op2, p = self.read_frame(timeout)
                assert op2 == OP_CONT, "server interleaved opcode %d in a message" % op2
                parts.append(p)
                if fin:
                    break
            payload = b"".join(parts)
        return op, payload

    def read_json(self, timeout=None):
        op, payload = self.read_message(timeout)
        assert op == OP_TEXT, "expected text, got opcode %d %r" % (op, payload[:100])
        return json.loads(payload)

    def read_until_close(self, timeout=None):
        """Reads frames until the server's close frame. Returns (code, reason, frames before).

        code None means the server closed TCP without a close frame; 1005 an empty close."""
        deadline = time.monotonic() + (timeout or self.timeout)
        frames = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no close frame within the timeout; frames: %r" % frames)
            try:
                op, payload = self.read_message(left)
            except EOFError:
                return None, None, frames
            except socket.timeout:
                raise AssertionError("no close frame within the timeout; frames: %r" % frames)
            if op == OP_CLOSE:
                # 1005: a close frame without a status code (RFC 6455 7.1.5)
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:], frames
            frames.append((op, payload))

    def tcp_closed(self, timeout=None):
        """True when the server closes TCP within timeout. Bytes that arrive
        before the end stay in self.buf for the caller to inspect."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            return False
        return True
