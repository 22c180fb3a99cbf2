#!/usr/bin/env python3
"""tests/bench/recovery.py BUILD_DIR -- the history and recovery benchmark
(`make bench-recovery`; docs/PERFORMANCE.md "History and recovery").

Starts a private redis-server and herald-gateway processes on free loopback
ports (stopped by PID at the end, also on failure), publishes with
BUILD_DIR/herald-pub (history on), and drives the gateway with raw-socket
WebSocket clients in this process.

  recovery  one client, MISSED events published while it was away: the time
            from writing its subscribe-with-since to parsing the last missed
            event, ROUNDS times; cold (the client is the channel's first
            subscriber on the worker: SUBSCRIBE, then the read) and warm (an
            observer already holds the channel).
  herd      HERD clients, connected beforehand and idle, all send a subscribe
            with since on one channel at once, from nearly the same offsets
            (HERD_MISSED + i % HERD_SPREAD events back); per gateway worker
            count: the time until every client has its "subscribed"
            (recovered:true) and its last missed event, the Redis commands
            issued meanwhile (CONFIG RESETSTAT, then INFO commandstats; the
            read script is the only XREVRANGE caller), the history reads and
            subscriptions served per read (the workers' own "history" stats),
            and the gateway's CPU time (utime+stime from /proc).

Every client checks what it got: recovered:true, no gap, exactly the number of
events it missed, the newest offset last. Any failure exits 1.
"""

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "herald-bench-secret-0123456789abcdef"


def log(msg):
    sys.stderr.write("%s [bench-recovery] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# ---------------------------------------------------------------- processes

def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


class Stack:
    """redis-server plus gateways, all stopped by PID on close()."""

    def __init__(self, build):
        import harness
        import harness_redis
        self.harness = harness
        self.tmp = tempfile.mkdtemp(prefix="herald-bench-recovery-")
        self.redis = harness_redis.RedisServer(self.tmp)
        self.r = harness_redis.Resp(self.redis.port)
        self.pub_bin = os.path.join(build, "herald-pub")
        self.gateways = []
        self.started = 0

    def gateway(self, workers):
        gw = self.harness.GatewayProc(
            self.tmp, self.redis.url, workers=workers, secret=SECRET, stats_interval=1,
            gateway_id="bench%d-w%d" % (self.started, workers),
            log_level="warn", name="gateway-w%d" % workers,
            extra=["--max-connections-per-ip", 1000000, "--rate-limit", 1000,
                   "--rate-burst", 1000])
        self.gateways.append(gw)
        self.started += 1
        return gw

    def stop_gateway(self, gw):
        gw.stop()
        self.gateways.remove(gw)

    def publish(self, channel, n, tag):
        """n events on channel with herald-pub; returns their offsets."""
        lines = "".join(json.dumps({"n": i, "tag": tag, "pad": "x" * 40}) + "\n"
                        for i in range(n))
        out = subprocess.run([self.pub_bin, "--redis", self.redis.url, "--history-size",
                              "5000", channel, "-"], input=lines, capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("herald-pub: %s" % out.stderr)
        offsets = out.stdout.split()
        assert len(offsets) == n, (len(offsets), n)
        return offsets

    def epoch(self, channel):
        return self.r.command("HGET", "{herald:%s}:meta" % channel, "epoch").decode()

    def commandstats(self):
        text = self.r.command("INFO", "commandstats").decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, rest = line[8:].split(":", 1)
                out[name] = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
        return out

    def close(self):
        for gw in self.gateways:
            gw.stop()
        try:
            self.r.close()
        except Exception:
            pass
        self.redis.stop()


# ---------------------------------------------------------------- clients

def token(uid, role=None):
    import harness
    return harness.craft_jwt(harness.claims_for(uid, role=role), SECRET)


def ws_frame(obj):
    """A masked text frame (zero mask key: the payload goes as is)."""
    data = json.dumps(obj).encode()
    n = len(data)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    else:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


class Conn:
    """One WebSocket connection over a raw socket: frames parsed in place."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.subscribed = None
        self.events = 0
        self.last_event = None
        self.gaps = 0
        self.want = None
        self.sent_at = None
        self.done_at = None

    def frames(self, data):
        """Appends data; yields the complete text payloads."""
        self.buf += data
        buf, i = self.buf, 0
        while len(buf) - i >= 2:
            op, n = buf[i] & 0x0F, buf[i + 1] & 0x7F
            h = 2
            if n == 126:
                if len(buf) - i < 4:
                    break
                n, h = int.from_bytes(buf[i + 2:i + 4], "big"), 4
            elif n == 127:
                if len(buf) - i < 10:
                    break
                n, h = int.from_bytes(buf[i + 2:i + 10], "big"), 10
            if len(buf) - i < h + n:
                break
            if op == 1:
                yield buf[i + h:i + h + n]
            i += h + n
        self.buf = buf[i:]


def open_conns(port, n, tok, batch=500):
    """n connections, upgraded, each past its "connected" message."""
    conns = []
    req = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n" % (port, tok)).encode()
    while len(conns) < n:
        group = []
        for _ in range(min(batch, n - len(conns))):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(req)
            group.append(s)
        for s in group:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed during the upgrade")
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError("upgrade refused: %r" % head[:200])
            c = Conn(s)
            got = list(c.frames(rest))
            while not got:
                got = list(c.frames(s.recv(65536)))
            assert b'"connected"' in got[0], got[0][:200]
            conns.append(c)
    for c in conns:
        c.sock.setblocking(False)
    return conns


def close_conns(conns):
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass


def request_reply(c, obj, timeout=10):
    """Sends obj on a (non-blocking) connection and returns the reply with its id."""
    c.sock.setblocking(True)
    c.sock.settimeout(timeout)
    try:
        c.sock.sendall(ws_frame(obj))
        while True:
            for p in c.frames(c.sock.recv(65536)):
                m = json.loads(p)
                if m.get("id") == obj["id"]:
                    return m
    finally:
        c.sock.setblocking(False)


def run_wave(conns, channel, sinces, epoch, last, timeout, jitter=0.0):
    """Every connection sends subscribe-with-since at once (or spread evenly
    over jitter seconds, as clients reconnecting with a randomized backoff
    would); returns (seconds from the first send until every one is
    recovered, per-client seconds sorted, problems)."""
    sel = selectors.DefaultSelector()
    for c, (since, missed) in zip(conns, sinces):
        c.want, c.events, c.subscribed, c.last_event, c.gaps, c.done_at = \
            missed, 0, None, None, 0, None
        sel.register(c.sock, selectors.EVENT_READ, c)
    frames = [ws_frame({"type": "subscribe", "channel": channel, "id": 1,
                        "since": {"offset": since, "epoch": epoch}}) for since, _ in sinces]
    last_marker = b'"offset":"%s"' % last.encode()
    pending = len(conns)
    t0 = time.monotonic()
    step = jitter / len(conns)
    sent = 0
    deadline = t0 + timeout
    while pending and time.monotonic() < deadline:
        now = time.monotonic()
        while sent < len(conns) and t0 + sent * step <= now:
            conns[sent].sent_at = time.monotonic()
            conns[sent].sock.send(frames[sent])
            sent += 1
        wait = 1.0 if sent == len(conns) else max(0.0, t0 + sent * step - time.monotonic())
        for key, _ in sel.select(wait):
            c = key.data
            try:
                data = c.sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(c.sock)
                pending -= 1
                c.done_at = -1
                continue
            for p in c.frames(data):
                if p.startswith(b'{"type":"event"'):
                    c.events += 1
                    c.last_event = p
                elif p.startswith(b'{"type":"subscribed"'):
                    c.subscribed = p
                elif p.startswith(b'{"type":"gap"'):
                    c.gaps += 1
            if c.done_at is None and c.subscribed is not None and c.events >= c.want:
                c.done_at = time.monotonic()
                sel.unregister(c.sock)
                pending -= 1
    t_all = time.monotonic() - t0
    sel.close()
    problems = []
    for i, c in enumerate(conns):
        if c.done_at is None or c.done_at < 0:
            problems.append("client %d: %s, %d of %d events" % (
                i, "closed" if c.done_at else "timed out", c.events, c.want))
        elif b'"recovered":true' not in c.subscribed:
            problems.append("client %d: %r" % (i, c.subscribed[:200]))
        elif c.gaps or c.events != c.want or last_marker not in c.last_event:
            problems.append("client %d: %d events of %d, %d gaps, last %r" % (
                i, c.events, c.want, c.gaps, (c.last_event or b"")[:160]))
    per_client = sorted(c.done_at - c.sent_at for c in conns if c.done_at and c.done_at > 0)
    return t_all, per_client, problems


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100.0 * len(sorted_values)))]


# ---------------------------------------------------------------- scenarios

def scenario_recovery(stack, args, results):
    gw = stack.gateway(1)
    tok = token("bench-rec")
    for mode in ("cold", "warm"):
        times = []
        for r in range(args.rounds):
            channel = "apps:rec-%s-%d" % (mode, r)
            observer = []
            first = stack.publish(channel, 1, "before")
            if mode == "warm":
                observer = open_conns(gw.port, 1, tok)
                m = request_reply(observer[0], {"type": "subscribe", "channel": channel, "id": 1})
                assert m.get("type") == "subscribed", m
            missed = stack.publish(channel, args.missed, "missed")
            conns = open_conns(gw.port, 1, tok)
            t_all, _, problems = run_wave(conns, channel, [(first[0], args.missed)],
                                          stack.epoch(channel), missed[-1], 30)
            close_conns(conns + observer)
            if problems:
                raise RuntimeError("recovery %s round %d: %s" % (mode, r, problems[:5]))
            times.append(t_all * 1000)
        times.sort()
        results.append({"scenario": "recovery", "mode": mode, "missed": args.missed,
                        "rounds": args.rounds, "ms_min": times[0],
                        "ms_median": times[len(times) // 2], "ms_max": times[-1]})
        log("recovery %s: %d missed events, subscribe to last event %s ms" % (
            mode, args.missed, ", ".join("%.1f" % t for t in times)))
    stack.stop_gateway(gw)


def worker_history(stack, gw, tok, want_workers):
    """{worker pid or index: history stats} from an admin's cluster view."""
    admin = open_conns(gw.port, 1, token("adm", role="admin"))[0]
    try:
        deadline = time.monotonic() + 15
        while True:
            m = request_reply(admin, {"type": "stats", "id": 9})
            workers = [w for w in m["cluster"]["workers"] if w["gatewayId"] == gw.gateway_id]
            if len(workers) >= want_workers or time.monotonic() > deadline:
                return workers
            time.sleep(0.5)
    finally:
        close_conns([admin])


def scenario_herd(stack, args, results):
    for workers in args.herd_workers:
        for jitter in args.herd_jitter:
            herd(stack, args, results, workers, jitter)


def herd(stack, args, results, workers, jitter):
    """One herd on a fresh gateway of `workers` workers."""
    gw = stack.gateway(workers)
    tok = token("bench-herd")
    channel = "deployments:herd-w%d-j%g" % (workers, jitter)
    offsets = stack.publish(channel, args.herd_missed + args.herd_spread + 5, "history")
    epoch = stack.epoch(channel)
    log("herd: %d clients connecting to %d worker(s)" % (args.herd, workers))
    t = time.monotonic()
    conns = open_conns(gw.port, args.herd, tok)
    log("herd: %d connected in %.1fs" % (len(conns), time.monotonic() - t))
    sinces = []
    for i in range(len(conns)):
        missed = args.herd_missed + i % args.herd_spread
        sinces.append((offsets[-1 - missed], missed))
    time.sleep(1.5)  # the last stats publish of the connect phase is out of the window
    before_hist = {(w["gatewayId"], w["worker"]): dict(w["history"])
                   for w in worker_history(stack, gw, tok, workers)}
    pids = [gw.pid] + gw.worker_pids()
    stack.r.command("CONFIG", "RESETSTAT")
    cpu0, w0 = cpu_ticks(pids), time.monotonic()
    t_all, per_client, problems = run_wave(conns, channel, sinces, epoch, offsets[-1],
                                           args.timeout, jitter)
    cpu1, w1 = cpu_ticks(pids), time.monotonic()
    stats = stack.commandstats()
    time.sleep(2.5)  # two stats intervals: the cluster view has the herd
    after = worker_history(stack, gw, tok, workers)
    close_conns(conns)
    if problems:
        raise RuntimeError("herd (%d workers): %d clients failed: %s" % (
            workers, len(problems), problems[:5]))
    per_worker = []
    for w in sorted(after, key=lambda w: w["worker"]):
        b = before_hist.get((w["gatewayId"], w["worker"]), {})
        h = w["history"]
        d = {k: h[k] - b.get(k, 0) for k in ("reads", "recoveries", "recoveriesFailed",
                                              "eventsRecovered", "waitersServed")}
        d["worker"] = w["worker"]
        d["connections"] = w["connections"]
        d["waitersPerRead"] = d["waitersServed"] / d["reads"] if d["reads"] else 0
        per_worker.append(d)
    events = sum(m for _, m in sinces)
    res = {"scenario": "herd", "workers": workers, "clients": len(conns),
           "jitter_s": jitter, "spread": args.herd_spread,
           "events_recovered": events, "seconds_all": t_all,
           "p50_ms": pct(per_client, 50) * 1000, "p99_ms": pct(per_client, 99) * 1000,
           "gateway_cpu_s": (cpu1 - cpu0) / CLK_TCK, "wall_s": w1 - w0,
           "redis_calls": stats, "redis_calls_total": sum(stats.values()),
           "history_reads_redis": stats.get("xrevrange", 0), "per_worker": per_worker}
    results.append(res)
    log("herd %d worker(s), jitter %gs, spread %d: %d clients recovered %d events in %.3fs "
        "(each p50 %.0f ms, p99 %.0f ms); gateway CPU %.2fs; Redis calls %s; per worker %s" % (
            workers, jitter, args.herd_spread, len(conns), events, t_all,
            res["p50_ms"], res["p99_ms"],
            res["gateway_cpu_s"], json.dumps(stats, sort_keys=True),
            json.dumps(per_worker)))
    stack.stop_gateway(gw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--scenarios", default=os.environ.get("HERALD_BENCH_RECOVERY_SCENARIOS",
                                                          "recovery herd"))
    ap.add_argument("--missed", type=int, default=1000, help="recovery: events missed")
    ap.add_argument("--rounds", type=int, default=5, help="recovery: rounds per mode")
    ap.add_argument("--herd", type=int,
                    default=int(os.environ.get("HERALD_BENCH_HERD_CLIENTS", 10000)))
    ap.add_argument("--herd-workers", default="1,2", help="worker counts, comma separated")
    ap.add_argument("--herd-missed", type=int, default=10,
                    help="herd: events every client missed at least")
    ap.add_argument("--herd-spread", type=int, default=10,
                    help="herd: client i missed herd-missed + i %% spread events")
    ap.add_argument("--herd-jitter", default="0,1",
                    help="herd: send the subscribes evenly over this many seconds (a list)")
    ap.add_argument("--timeout", type=float, default=120, help="herd: seconds")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    args.herd_workers = [int(x) for x in args.herd_workers.split(",")]
    args.herd_jitter = [float(x) for x in args.herd_jitter.split(",")]
    os.environ["HERALD_BUILD"] = os.path.abspath(args.build)
    stack = Stack(os.path.abspath(args.build))
    results = []
    try:
        if "recovery" in args.scenarios.split():
            scenario_recovery(stack, args, results)
        if "herd" in args.scenarios.split():
            scenario_herd(stack, args, results)
    finally:
        stack.close()
    out = json.dumps(results, indent=1, sort_keys=True)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")


if __name__ == "__main__":
    main()
