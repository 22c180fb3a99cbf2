"""Helpers for the load-balanced topology tests (tests/e2e/test_topology.py)
and the deployment-file checks (tests/e2e/test_compose.py).

- render_nginx_conf(): deploy/nginx.conf with only its upstream addresses,
  its listen port and its file locations rewritten for a loopback run, so
  the tests exercise the production file itself.
- NginxLB: Debian's nginx in the foreground on a free port, with a config in
  the test's tmp dir, stopped by PID (its workers too, should the master
  have to be SIGKILLed).
- TopoGateway: harness.GatewayProc (--workers 1) configured as deployed
  behind the balancer (secret from the environment, drain timeout, trusted
  proxy); kill9() SIGKILLs its supervisor and its worker, sigterm() starts
  a drain; conn_ids() are the connections it opened (from the gateway's
  "event=open conn=<id>" debug log line).
- Topology / the ``topology`` fixture: one Redis, three gateways, nginx,
  owned by a harness_cluster.Cluster; all stopped by PID at the end, pass
  or fail.
- TClient: an asyncio websocket client that keeps reading in a task of its
  own, records every event per connection generation, and reconnects with
  jittered exponential backoff through the balancer when its connection ends.
  With recover=True it keeps each channel's offset and epoch (from
  "subscribed" and events) and resubscribes with "since" after a reconnect.
- RespPublisher: raw RESP PUBLISH over an asyncio socket (one round trip per
  event, so the publish time of each event is known); herald_pub_lines()
  publishes through build/herald-pub reading events from stdin.
- HistoryPublisher: publishing with history, one build/herald-pub per channel
  fed on stdin; records the offset it prints for every event.
- reconcile(): per client, received events against expected ones: missing,
  duplicate and misrouted events. reconcile_offsets(): exactly once and in
  order by offset, against what HistoryPublisher recorded.
"""

import asyncio
import json
import os
import random
import re
import resource
import shutil
import subprocess
import time

import pytest
import websockets
import websockets.exceptions

import harness
from harness import PREFIX, SECRET, kill_leftovers  # noqa: F401  (kill_leftovers re-exported)
from harness_cluster import Cluster, open_ws, token
from harness_redis import Resp

REPO = harness.REPO
DEPLOY = os.path.join(REPO, "deploy")
NGINX_CONF = os.path.join(DEPLOY, "nginx.conf")
HAPROXY_CFG = os.path.join(DEPLOY, "haproxy.cfg")
COMPOSE_FILE = os.path.join(REPO, "docker-compose.yml")
UNIT_FILE = os.path.join(DEPLOY, "herald-gateway.service")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")

GATEWAY_SERVICES = ["gateway1", "gateway2", "gateway3"]


def nginx_bin():
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def require_nginx():
    b = nginx_bin()
    if not b:
        pytest.fail("nginx is not installed: the topology tests run Debian's nginx as the load "
                    "balancer (apt-get install nginx; deploy/install-deps.sh installs it)")
    return b


# ----------------------------------------------------------------- nginx

UPSTREAM_SERVER_RE = re.compile(r"^(\s*server\s+)(gateway\d+):(\d+)(\b[^;]*;)", re.M)
LISTEN_RE = re.compile(r"^(\s*listen\s+)(\d+)(\b[^;]*;)", re.M)


def nginx_upstream_names(text):
    """The host names of the `server` lines of deploy/nginx.conf's upstream."""
    return [m.group(2) for m in UPSTREAM_SERVER_RE.finditer(text)]


def render_nginx_conf(text, upstream_ports, listen_port, tmpdir):
    """deploy/nginx.conf for a loopback run: upstream gatewayN -> 127.0.0.1:port,
    `listen 8080` -> 127.0.0.1:listen_port, temp files and an access log in tmpdir.
    Everything else (timeouts, headers, balancing, retries) stays as shipped."""
    tmpdir = str(tmpdir)
    names = nginx_upstream_names(text)
    assert names == GATEWAY_SERVICES, "nginx.conf upstream servers: %r" % names
    ports = dict(zip(GATEWAY_SERVICES, upstream_ports))
    out = UPSTREAM_SERVER_RE.sub(
        lambda m: "%s127.0.0.1:%d%s" % (m.group(1), ports[m.group(2)], m.group(4)), text)
    out, n = LISTEN_RE.subn(lambda m: "%s127.0.0.1:%d%s" % (m.group(1), listen_port,
                                                            m.group(3)), out)
    assert n == 1, "nginx.conf: expected one plain `listen PORT` line, found %d" % n
    temp = "".join("    %s_temp_path %s;\n" % (k, os.path.join(tmpdir, k + "_temp"))
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    out, n = re.subn(r"^http \{\n", lambda m: m.group(0) + temp, out, count=1, flags=re.M)
    assert n == 1, "nginx.conf has no `http {` block"
    access = "        access_log %s herald;\n" % os.path.join(tmpdir, "nginx-access.log")
    out, n = re.subn(r"^(\s*server \{\n)", lambda m: m.group(1) + access, out, count=1,
                     flags=re.M)
    assert n == 1, "nginx.conf has no `server {` block"
    # worker_rlimit_nofile above the hard limit only logs an alert; keep the
    # test's nginx log clean
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = re.sub(r"^(\s*worker_rlimit_nofile\s+)(\d+);",
                 lambda m: "%s%d;" % (m.group(1), min(int(m.group(2)), hard)
                                      if hard != resource.RLIM_INFINITY else int(m.group(2))),
                 out, flags=re.M)
    if os.geteuid() == 0:
        # workers as root can read the test's 0700 tmp dirs
        out = "user root;\n" + out
    return out


def write_nginx_conf(tmpdir, upstream_ports, listen_port):
    with open(NGINX_CONF) as f:
        text = f.read()
    path = os.path.join(str(tmpdir), "nginx.conf")
    with open(path, "w") as f:
        f.write(render_nginx_conf(text, upstream_ports, listen_port, tmpdir))
    return path


def nginx_test_config(conf_path, tmpdir):
    """`nginx -t` on conf_path; returns (returncode, output)."""
    tmpdir = str(tmpdir)
    r = subprocess.run([require_nginx(), "-t", "-e", "stderr", "-p", tmpdir + "/", "-c",
                        conf_path, "-g", "pid %s;" % os.path.join(tmpdir, "nginx-t.pid")],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


class NginxLB(harness.Proc):
    """nginx in the foreground (daemon off) in front of the given gateway ports."""

    def __init__(self, tmpdir, upstream_ports):
        binary = require_nginx()
        self.port = harness.free_port()
        tmpdir = str(tmpdir)
        self.conf = write_nginx_conf(tmpdir, upstream_ports, self.port)
        self.access_log = os.path.join(tmpdir, "nginx-access.log")
        argv = [binary, "-e", "stderr", "-p", tmpdir + "/", "-c", self.conf,
                "-g", "daemon off; pid %s;" % os.path.join(tmpdir, "nginx.pid")]
        super().__init__("nginx", argv, os.path.join(tmpdir, "nginx-%d.log" % self.port))
        self.workers = []
        self.wait_started(lambda: self.wait_port(self.port))
        self.workers = harness.children_of(self.pid)
        self.url = "ws://127.0.0.1:%d/ws" % self.port

    def stop(self):
        workers = harness.children_of(self.pid) if self.alive() else []
        result = super().stop()
        kill_leftovers(set(workers) | set(self.workers), "nginx")
        return result

    def upstreams_used(self):
        """The upstream addresses in the access log, in order."""
        try:
            with open(self.access_log) as f:
                return re.findall(r"upstream=(\S+)", f.read())
        except OSError:
            return []


# ----------------------------------------------------------------- haproxy

def haproxy_bin():
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None)


def render_haproxy_cfg(text, upstream_ports, listen_port):
    """deploy/haproxy.cfg for a loopback run: the gateway servers at
    127.0.0.1 ports, the plain frontend on listen_port, no Docker DNS, and
    connection limits that fit a test's descriptor limit.
    Checks, timeouts, balancing and retries stay as shipped."""
    ports = dict(zip(GATEWAY_SERVICES, upstream_ports))
    out, n = re.subn(r"^(\s*server\s+\S+\s+)(gateway\d+):(\d+)",
                     lambda m: "%s127.0.0.1:%d" % (m.group(1), ports[m.group(2)]), text,
                     flags=re.M)
    assert n == 3, "haproxy.cfg: %d gateway servers" % n
    out, n = re.subn(r"^(\s*bind\s+):8080\b", lambda m: "%s127.0.0.1:%d" % (m.group(1),
                                                                             listen_port),
                     out, flags=re.M)
    assert n == 1, "haproxy.cfg: expected one `bind :8080`"
    # the global/frontend connection limits need nofile = 2 x maxconn, more
    # than a test sandbox's hard limit allows; HAProxy refuses to start then
    out = re.sub(r"^(\s*maxconn\s+)\d+", lambda m: m.group(1) + "4000", out, flags=re.M)
    out = re.sub(r"^resolvers docker\n(?:[ \t]+.*\n)*", "", out, flags=re.M)
    out = re.sub(r" resolvers docker| init-addr \S+", "", out)
    return out


class HAProxyLB(harness.Proc):
    """haproxy in the foreground (-db) with deploy/haproxy.cfg rendered for loopback."""

    def __init__(self, tmpdir, upstream_ports):
        binary = haproxy_bin()
        self.port = harness.free_port()
        with open(HAPROXY_CFG) as f:
            text = render_haproxy_cfg(f.read(), upstream_ports, self.port)
        self.cfg = os.path.join(str(tmpdir), "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(text)
        super().__init__("haproxy", [binary, "-db", "-f", self.cfg],
                         os.path.join(str(tmpdir), "haproxy-%d.log" % self.port))
        self.wait_started(lambda: self.wait_port(self.port))
        self.url = "ws://127.0.0.1:%d/ws" % self.port


# ----------------------------------------------------------------- gateways

class TopoGateway(harness.GatewayProc):
    """herald-gateway with one worker on a given port, as deployed behind nginx."""

    def __init__(self, tmpdir, redis_url, gateway_id, port=None, drain_timeout=4,
                 extra=()):
        self.drain_timeout = drain_timeout
        super().__init__(tmpdir, redis_url, secret=None, env={"HERALD_JWT_SECRET": SECRET},
                         gateway_id=gateway_id, port=port, stats_interval=0.5, name=gateway_id,
                         extra=["--drain-timeout", drain_timeout,
                                "--trusted-proxies", "127.0.0.1"] + list(extra))


class Topology:
    """One Redis, three gateways (gw1..gw3) and nginx in front, for one test;
    self.procs (a Cluster) owns them. As a context manager it stops them all
    on exit and fails the test on a problem."""

    def __init__(self, tmpdir, drain_timeout=4):
        self.procs = Cluster(tmpdir)
        try:
            self.redis = self.procs.redis()
            self.gateways = [self.procs.own(TopoGateway(tmpdir, self.redis.url, "gw%d" % (i + 1),
                                                        drain_timeout=drain_timeout))
                             for i in range(3)]
            self.lb = self.procs.own(NginxLB(tmpdir, [g.port for g in self.gateways]))
        except BaseException:
            self.procs.stop_all()
            raise
        self.url = self.lb.url

    def by_id(self, gateway_id):
        return next(g for g in self.gateways if g.gateway_id == gateway_id)

    def conn_map(self):
        """{connection id: gateway id} from the gateways' logs."""
        out = {}
        for g in self.gateways:
            for cid in g.conn_ids():
                out[cid] = g.gateway_id
        return out

    def stop_all(self):
        return self.procs.stop_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.procs.__exit__(*exc)


@pytest.fixture
def topology(tmp_path):
    require_nginx()
    with Topology(tmp_path) as t:
        yield t


# ----------------------------------------------------------------- clients

class TClient:
    """A websocket client through the balancer with a reader task of its own.

    events: [(generation, channel, seq, monotonic time received)];
    gens: one dict per connection (conn id, gateway, times, close code)."""

    def __init__(self, idx, uid, channels, role=None, recover=False):
        self.idx = idx
        self.uid = uid
        self.channels = list(channels)
        self.token = token(uid, role=role)
        self.ws = None
        self.reader = None
        self.events = []
        self.other = []
        self.gens = []
        self.failed_attempts = []
        # history (recover=True resubscribes with "since"): per channel the
        # offset of the first "subscribed", the position [offset, epoch]
        # (from "subscribed" and events), every event's (offset, seq, gen),
        # and each "since" subscribe's (gen, channel, recovered)
        self.recover = recover
        self.start = {}
        self.pos = {}
        self.offsets = {}
        self.recoveries = []
        self._replies = {}
        self._ids = 0
        self.closed = asyncio.Event()

    @property
    def gen(self):
        return self.gens[-1]

    def __repr__(self):
        return "client%d(%s)" % (self.idx, self.uid)

    async def connect(self, url, timeout=10.0, origin=None):
        """Opens one connection and reads "connected"; starts the reader task."""
        ws, hello = await open_ws(url, self.token, timeout, origin=origin, who=repr(self))
        self.ws = ws
        self.closed = asyncio.Event()
        self.gens.append({"conn": hello["connectionId"], "gateway": None,
                          "connected_at": time.monotonic(), "subscribed_at": None,
                          "closed_at": None, "close_code": None})
        self.reader = asyncio.ensure_future(self._read(ws, len(self.gens) - 1))
        return hello

    async def _read(self, ws, gen):
        try:
            async for raw in ws:
                m = json.loads(raw)
                t = m.get("type")
                if t == "event":
                    data = m.get("data") or {}
                    self.events.append((gen, m.get("channel"), data.get("seq"),
                                        time.monotonic()))
                    if m.get("offset") is not None:
                        self._track_event(m, data.get("seq"), gen)
                elif "id" in m and m["id"] in self._replies:
                    if t == "subscribed":
                        self._track_subscribed(m)
                    fut = self._replies.pop(m["id"])
                    if not fut.done():
                        fut.set_result(m)
                else:
                    self.other.append((gen, m))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            g = self.gens[gen]
            g["closed_at"] = time.monotonic()
            g["close_code"] = ws.close_code
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
            self._replies.clear()
            self.closed.set()

    def _track_event(self, m, seq, gen):
        ch = m.get("channel")
        self.offsets.setdefault(ch, []).append((m["offset"], seq, gen))
        pos = self.pos.setdefault(ch, [None, None])
        pos[0] = m["offset"]
        pos[1] = m.get("epoch") or pos[1]

    def _track_subscribed(self, m):
        """In stream order: a recovered subscribe keeps the client's offset
        (the missed events follow); any other takes the channel's."""
        ch = m.get("channel")
        self.start.setdefault(ch, m.get("offset"))
        pos = self.pos.setdefault(ch, [None, None])
        if m.get("recovered") is not True:
            pos[0] = m.get("offset")
        pos[1] = m.get("epoch")

    def since(self, channel):
        """The "since" of a resubscribe to channel, or None."""
        pos = self.pos.get(channel)
        if not self.recover or not pos or not pos[1]:
            return None
        return {"offset": pos[0], "epoch": pos[1]}

    async def request(self, obj, timeout=10.0):
        self._ids += 1
        rid = "c%d-%d" % (self.idx, self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        await self.ws.send(json.dumps(dict(obj, id=rid)))
        return await asyncio.wait_for(fut, timeout)

    async def subscribe_all(self, timeout=10.0):
        """Subscribes to every channel of the plan (with "since" where the
        client has a position to recover from); records when all were confirmed."""
        def msg(c):
            since = self.since(c)
            return dict({"type": "subscribe", "channel": c}, **({"since": since} if since else {}))
        msgs = [msg(c) for c in self.channels]
        replies = await asyncio.gather(*(self.request(m, timeout) for m in msgs))
        for c, m, r in zip(self.channels, msgs, replies):
            assert r.get("type") == "subscribed" and r.get("channel") == c, \
                "%r: subscribe %s got %r" % (self, c, r)
            if "since" in m:
                self.recoveries.append((len(self.gens) - 1, c, r.get("recovered"),
                                        m["since"]["offset"], r.get("offset")))
        self.gen["subscribed_at"] = time.monotonic()

    async def reconnect(self, url, deadline, base=0.05, cap=1.0):
        """What a client library does when its connection ends: jittered
        exponential backoff, reconnect through the balancer, resubscribe."""
        delay = base
        while True:
            await asyncio.sleep(random.uniform(0, delay))
            try:
                await self.connect(url, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                await self.subscribe_all()
                return
            except (OSError, asyncio.TimeoutError, ConnectionError,
                    websockets.exceptions.WebSocketException, AssertionError) as e:
                self.failed_attempts.append("%s %s" % (type(e).__name__,
                                                       getattr(e, "status_code", e)))
                if self.ws is not None and self.gens and self.gens[-1]["subscribed_at"] is None:
                    await self.close()
                if time.monotonic() > deadline:
                    raise AssertionError("%r could not reconnect and resubscribe before the "
                                         "deadline; attempts: %r" % (self, self.failed_attempts))
            delay = min(cap, delay * 2)

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, 3)
            except Exception:
                pass


async def gather_bounded(coros, limit=50):
    """Runs coroutines with at most limit in flight; returns results in order."""
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def close_clients(clients):
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def apoll(check, timeout, interval=0.1, what="condition"):
    """Awaits until check() is truthy (a plain function); returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.1fs" % (what, timeout))
        await asyncio.sleep(interval)


# ----------------------------------------------------------------- publishing

class RespPublisher:
    """PUBLISH over one asyncio connection; every event is recorded as
    (seq, channel, monotonic time before sending, receivers, how)."""

    def __init__(self):
        self.reader = self.writer = None
        self.log = []
        self.seq = 0

    async def open(self, port):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    def next_seq(self):
        self.seq += 1
        return self.seq

    async def publish(self, channel, extra=None):
        seq = self.next_seq()
        data = json.dumps(dict(extra or {}, seq=seq, via="redis"))
        cmd = Resp.encode("PUBLISH", PREFIX + channel, data)
        t = time.monotonic()
        self.writer.write(cmd)
        line = await asyncio.wait_for(self.reader.readline(), 10)
        assert line.startswith(b":"), "PUBLISH replied %r" % line
        receivers = int(line[1:])
        self.log.append((seq, channel, t, receivers, "redis"))
        return receivers

    async def herald_pub_lines(self, redis_url, channel, n):
        """n events on channel through build/herald-pub (stdin, one per line)."""
        seqs = [self.next_seq() for _ in range(n)]
        lines = "".join(json.dumps({"seq": s, "via": "herald-pub"}) + "\n" for s in seqs)
        t = time.monotonic()
        p = await asyncio.create_subprocess_exec(
            harness.PUB_BIN, "--redis", redis_url, "-v", channel, "-",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=harness.clean_env())
        out, err = await asyncio.wait_for(p.communicate(lines.encode()), 20)
        assert p.returncode == 0, "herald-pub failed (%d): %s" % (p.returncode, err.decode())
        receivers = [int(x) for x in re.findall(rb"(\d+) receivers?", out)]
        assert len(receivers) == n, "herald-pub -v printed %r" % out
        for s, r in zip(seqs, receivers):
            self.log.append((s, channel, t, r, "herald-pub"))
        return receivers

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:
                pass


class HistoryPublisher:
    """Publishes with history through build/herald-pub: one process per
    channel, fed one event per line on stdin; each offset it prints is read
    back before the next event of that channel. published[channel] is
    [(offset, seq)] in publish order; log is RespPublisher's."""

    def __init__(self, redis_url, channels):
        self.redis_url = redis_url
        self.channels = list(channels)
        self.procs = {}
        self.published = {c: [] for c in self.channels}
        self.log = []
        self.seq = 0

    async def open(self):
        for c in self.channels:
            self.procs[c] = await asyncio.create_subprocess_exec(
                harness.PUB_BIN, "--redis", self.redis_url, c, "-",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=harness.clean_env())
        return self

    async def publish(self, channel):
        self.seq += 1
        seq = self.seq
        p = self.procs[channel]
        t = time.monotonic()
        p.stdin.write(json.dumps({"seq": seq, "via": "herald-pub"}).encode() + b"\n")
        await p.stdin.drain()
        line = await asyncio.wait_for(p.stdout.readline(), 20)
        offset = line.decode().strip()
        assert OFFSET_RE.match(offset), "herald-pub %s printed %r (exit %r)" % (
            channel, line, p.returncode)
        self.published[channel].append((offset, seq))
        self.log.append((seq, channel, t, None, "herald-pub"))
        return offset

    def last(self):
        """{channel: newest offset published}."""
        return {c: v[-1][0] for c, v in self.published.items() if v}

    async def close(self):
        """Ends every herald-pub (stdin closed); asserts each exited 0."""
        bad = []
        for c, p in self.procs.items():
            if p.returncode is None and not p.stdin.is_closing():
                p.stdin.close()
            try:
                _, err = await asyncio.wait_for(p.communicate(), 10)
            except asyncio.TimeoutError:
                p.kill()
                _, err = await p.communicate()
            if p.returncode != 0:
                bad.append("%s: exit %s %s" % (c, p.returncode, err.decode(errors="replace")))
        self.procs = {}
        assert not bad, "herald-pub failed: %s" % bad


async def stream(pub, channels, stop, rate):
    """Publishes round-robin over channels at about rate events/s until stop is set."""
    i = 0
    period = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        await pub.publish(channels[i % len(channels)])
        i += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        else:
            next_at = time.monotonic()
            await asyncio.sleep(0)
    return i


# ----------------------------------------------------------------- reconciliation

def must_receive(client, log, windows):
    """Seqs the client must have received: events on its channels published
    inside one of windows [(start, end)] (monotonic times, end None = open)."""
    chans = set(client.channels)
    out = set()
    for seq, ch, t, _, _ in log:
        if ch in chans and any(t >= a and (b is None or t < b) for a, b in windows):
            out.add(seq)
    return out


def reconcile(clients, log, windows_of):
    """Compares what each client received with what it must receive.

    windows_of(client) gives the publish-time windows in which every event on
    the client's channels must arrive. Everywhere, an event on a channel the
    client did not subscribe, an event published on another channel than it
    arrived on, an unknown seq, or a seq received twice is an error.
    Returns a list of problem strings (empty: all reconciled)."""
    channel_of = {seq: ch for seq, ch, _, _, _ in log}
    problems = []
    for c in clients:
        got = [(ch, seq) for _, ch, seq, _ in c.events]
        seqs = [seq for _, seq in got]
        dup = sorted({s for s in seqs if seqs.count(s) > 1}) if len(set(seqs)) != len(seqs) \
            else []
        misrouted = [(ch, s) for ch, s in got
                     if ch not in c.channels or channel_of.get(s) != ch]
        need = must_receive(c, log, windows_of(c))
        missing = sorted(need - set(seqs))
        if dup or misrouted or missing:
            problems.append("%r on %s channels=%s: %d missing %s, %d duplicate %s, "
                            "%d misrouted %s" % (
                                c, [g["gateway"] for g in c.gens], c.channels, len(missing),
                                missing[:10], len(dup), dup[:10], len(misrouted),
                                misrouted[:10]))
    return problems


OFFSET_RE = re.compile(r"^\d+-\d+$")


def offset_key(offset):
    ms, seq = offset.split("-")
    return int(ms), int(seq)


def reconcile_offsets(clients, published):
    """Exactly once, in order, per client and channel: the events received
    (offsets, over every connection) must be exactly the ones published on
    the channel after the offset of the client's first "subscribed", in
    publish order, each with the data published under that offset.
    published: {channel: [(offset, seq)]}. Returns problem strings."""
    problems = []
    for c in clients:
        n_offsets = sum(len(v) for v in c.offsets.values())
        if n_offsets != len(c.events):
            problems.append("%r: %d events without an offset" % (c, len(c.events) - n_offsets))
        for ch in c.channels:
            start = c.start.get(ch)
            want = [(o, s) for o, s in published.get(ch, ())
                    if start is None or offset_key(o) > offset_key(start)]
            got = [(o, s) for o, s, _ in c.offsets.get(ch, ())]
            if got == want:
                continue
            offs = [o for o, _ in got]
            dup = sorted({o for o in offs if offs.count(o) > 1}, key=offset_key)
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            unordered = offs != sorted(set(offs), key=offset_key) and not dup
            where = {o: [g for o2, _, g in c.offsets.get(ch, ()) if o2 == o]
                     for o in dup[:5] + [o for o, _ in missing[:5]]}
            problems.append("%r %s on %s since %s: %d missing %s, %d duplicate %s, %d unexpected "
                            "%s%s; connections receiving them %r; recoveries %r" % (
                                c, ch, [g["gateway"] for g in c.gens], start, len(missing),
                                missing[:5], len(dup), dup[:5], len(extra), extra[:5],
                                ", out of order" if unordered else "", where,
                                [r for r in c.recoveries if r[1] == ch]))
    return problems


def all_offsets_received(clients, last):
    """True when every client's position on each of its channels is the
    channel's newest published offset (last: {channel: offset})."""
    return all((c.pos.get(ch) or [None])[0] == last.get(ch, c.start.get(ch))
               for c in clients for ch in c.channels)


def all_received(clients, log, windows_of):
    """True when every client has at least every seq it must receive."""
    for c in clients:
        need = must_receive(c, log, windows_of(c))
        if need - {seq for _, _, seq, _ in c.events}:
            return False
    return True
