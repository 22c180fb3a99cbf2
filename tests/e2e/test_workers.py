"""--workers N: a supervisor with N worker processes sharing the port.

A SIGKILLed worker loses only its own clients and is restarted; the other
worker's clients keep receiving; SIGTERM/SIGINT drain every client with close
1001 and the supervisor exits 0 within the drain timeout."""

import asyncio
import os
import signal
import threading
import time

import pytest

import harness

from harness_cluster import (Client, cluster, in_thread_publish, poll, run,  # noqa: F401
                             tok)

DRAIN = 4  # --drain-timeout in these tests


async def clients_on_both_workers(gw, clients, want=20, limit=60):
    """Opens admin clients until there are `want` and both workers hold some;
    returns {worker pid: [clients]} (the pid from each client's stats reply)."""
    by_pid = {}
    n = 0
    while n < want or len(by_pid) < 2:
        assert n < limit, "%d connections all landed on workers %r" % (n, list(by_pid))
        batch = await asyncio.gather(*(Client.open(gw.url, tok("admin"), "c%d" % (n + i))
                                       for i in range(want if n == 0 else 5)))
        clients.extend(batch)
        n += len(batch)
        for c in batch:
            pid = (await c.stats())["worker"]["pid"]
            c.name += "@pid%d" % pid
            by_pid.setdefault(pid, []).append(c)
    return by_pid


def test_killed_worker_is_restarted_and_only_its_clients_are_lost(cluster):
    redis = cluster.redis()
    gw = cluster.gateway(redis, workers=2, gateway_id="wk", extra=["--drain-timeout", str(DRAIN)])
    pids = sorted(gw.wait_workers(2))

    async def main(clients):
        by_pid = await clients_on_both_workers(gw, clients)
        assert sorted(by_pid) == pids, "stats pids %r are not the supervisor's children %r" % (
            sorted(by_pid), pids)
        for cs in by_pid.values():
            for c in cs:
                await c.subscribe("apps:created")
        victim, survivor = pids
        await by_pid[survivor][0].subscribe("system:health")
        watcher = by_pid[survivor][0]
        # both workers have their own Redis subscription: everyone receives
        await in_thread_publish(redis, "apps:created", {"before_kill": 0})
        for cs in by_pid.values():
            for c in cs:
                assert (await c.event("apps:created"))["data"] == {"before_kill": 0}
        st = await poll(lambda: watcher.stats(),
                        lambda s: sorted(w["pid"] for w in s["cluster"]["workers"]) == pids
                        and s["cluster"]["totals"]["connections"] == len(clients), 5,
                        what="both workers and all %d clients in the cluster view" % len(clients))
        assert st["cluster"]["gateways"] == 1 and st["cluster"]["totals"]["workers"] == 2, st

        os.kill(victim, signal.SIGKILL)
        # the victim's clients lose their connection (no close frame: 1006)
        for c in by_pid[victim]:
            code, _ = await c.close_info(5)
            assert code == 1006, "%s: close code %r after its worker was killed" % (c.name, code)
        # the survivor's clients are untouched and keep receiving
        await in_thread_publish(redis, "apps:created", {"after_kill": 1})
        for c in by_pid[survivor]:
            ev = await c.event("apps:created")
            assert ev["data"] == {"after_kill": 1}, ev

        # a replacement worker appears (the victim died young: restart after a short delay)
        new = await asyncio.get_running_loop().run_in_executor(
            None, lambda: gw.wait_workers(1, timeout=10, exclude=(survivor, victim)))
        assert victim not in gw.worker_pids()
        [new_pid] = new
        health = await watcher.wait_for(
            lambda m: m.get("type") == "event" and m.get("channel") == "system:health"
            and m["data"].get("event") == "worker_restarted", 10, "worker_restarted on system:health")
        assert health["data"].get("pid") == new_pid, health
        assert health["data"].get("gatewayId") == "wk", health
        st = await poll(lambda: watcher.stats(),
                        lambda s: new_pid in [w["pid"] for w in s["cluster"]["workers"]], 5,
                        what="the new worker pid %d in cluster.workers" % new_pid)
        assert survivor in [w["pid"] for w in st["cluster"]["workers"]], st["cluster"]

        # the new worker serves: a client that lands on it receives events
        fresh = None
        for i in range(40):
            c = await Client.open(gw.url, tok("admin"), "fresh%d" % i)
            clients.append(c)
            if (await c.stats())["worker"]["pid"] == new_pid:
                fresh = c
                break
        assert fresh is not None, "40 new connections and none reached the new worker"
        await fresh.subscribe("apps:created")
        await in_thread_publish(redis, "apps:created", {"after_restart": 2})
        for c in by_pid[survivor] + [fresh]:
            ev = await c.event("apps:created")
            assert ev["data"] == {"after_restart": 2}, ev
        remaining = [c for c in clients if c not in by_pid[victim]]

        # SIGTERM: every remaining client gets 1001, the supervisor exits 0
        gw.expected_exit = True
        t0 = time.monotonic()
        os.kill(gw.pid, signal.SIGTERM)
        results = await asyncio.gather(*(c.close_info(DRAIN + 3) for c in remaining))
        bad = [(c.name, code) for c, (code, _) in zip(remaining, results) if code != 1001]
        assert not bad, "clients not closed with 1001 on SIGTERM: %r" % bad
        rc = await asyncio.get_running_loop().run_in_executor(None, gw.wait_exit, DRAIN + 3)
        assert rc == 0, "supervisor after SIGTERM: %r (elapsed %.1fs)\n%s" % (
            rc, time.monotonic() - t0, gw.tail(30))
        assert gw.worker_pids() == [], "workers left behind: %r" % gw.worker_pids()

    run(main)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_drains_all_workers_with_1001_and_exit_0(cluster, sig):
    redis = cluster.redis()
    gw = cluster.gateway(redis, workers=2, extra=["--drain-timeout", str(DRAIN)])
    workers = gw.wait_workers(2)

    async def main(clients):
        by_pid = await clients_on_both_workers(gw, clients, want=8)
        for c in clients[::2]:
            await c.subscribe("apps:created")
        gw.expected_exit = True
        t0 = time.monotonic()
        os.kill(gw.pid, sig)
        results = await asyncio.gather(*(c.close_info(DRAIN + 3) for c in clients))
        codes = sorted(set(code for code, _ in results))
        assert codes == [1001], "close codes on %s: %r" % (signal.Signals(sig).name, codes)
        rc = await asyncio.get_running_loop().run_in_executor(None, gw.wait_exit, DRAIN + 3)
        elapsed = time.monotonic() - t0
        assert rc == 0, "supervisor exit %r after %s\n%s" % (rc, signal.Signals(sig).name,
                                                              gw.tail(30))
        assert elapsed < DRAIN, "idle clients took %.1fs to drain" % elapsed
        assert len(by_pid) == 2
        for p in workers:
            assert not os.path.exists("/proc/%d/stat" % p) or \
                open("/proc/%d/stat" % p).read().split(")")[-1].split()[0] == "Z", \
                "worker %d still running" % p

    run(main)


# ----------------------------------------------------------------- start-up signals

class FifoSecretGateway(harness.GatewayProc):
    """A gateway whose --jwt-secret-file is a FIFO: its main() blocks reading
    the secret until the test writes it. The test sends SIGHUP while main()
    waits there (before any handler exists), then replaces the FIFO with a
    regular file (for the reload that follows) and writes the secret."""

    def __init__(self, tmpdir, redis_url, name, **kw):
        self.fifo = os.path.join(str(tmpdir), name + ".secret")
        os.mkfifo(self.fifo)
        self.alive_after_hup = None
        super().__init__(tmpdir, redis_url, secret=None, name=name,
                         extra=["--jwt-secret-file", self.fifo], **kw)

    def wait_started(self, *waits):
        deadline = time.monotonic() + 5
        while True:  # opens once main() opened the FIFO for reading
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert self.alive() and time.monotonic() < deadline, \
                    "the gateway never opened its secret file\n" + self.tail(20)
                time.sleep(0.001)
        try:
            os.kill(self.pid, signal.SIGHUP)
            time.sleep(0.05)
            self.alive_after_hup = self.alive()
            regular = self.fifo + ".new"
            with open(regular, "w") as f:
                f.write(harness.SECRET + "\n")
            os.rename(regular, self.fifo)
            try:
                os.write(fd, (harness.SECRET + "\n").encode())
            except BrokenPipeError:
                pass  # it died: reported below
        finally:
            os.close(fd)
        super().wait_started(*waits)


def test_sighup_during_startup_kills_no_process(cluster):
    """SIGHUP while the supervisor's main() reads its configuration, then
    forwarded to the worker right after its fork: both survive and the
    worker reloads."""
    redis = cluster.redis()
    for i in range(3):
        try:
            gw = cluster.own(FifoSecretGateway(cluster.tmpdir, redis.url, "hup%d" % i))
        except AssertionError as e:
            raise AssertionError("SIGHUP during start-up: %s" % e)
        assert gw.alive_after_hup, "SIGHUP during start-up killed the gateway"
        gw.wait_log_count("event=reloaded", 1, timeout=5)  # the reload was kept, not lost
        time.sleep(0.2)
        assert gw.alive() and gw.worker_pids() == gw.workers, \
            "the worker was replaced:\n%s" % gw.tail(20)
        gw.sigterm()
        assert gw.wait_exit(5) == 0


def test_sighup_right_after_a_worker_restart_kills_no_worker(cluster):
    """Reloads requested while a worker restarts reach the new worker within
    microseconds of its fork: it must hold them until its handler is in."""
    redis = cluster.redis()
    gw = cluster.gateway(redis, workers=1, watch_workers=False)
    for i in range(3):
        old = gw.worker_pids()
        time.sleep(2.1)  # older than the quick-death limit: restarted at once
        stop = threading.Event()

        def reloads():  # an operator's reloads, every 0.2 ms during the restart
            while not stop.is_set():
                os.kill(gw.pid, signal.SIGHUP)
                time.sleep(0.0002)

        spammer = threading.Thread(target=reloads)
        spammer.start()
        try:
            time.sleep(0.05)
            os.kill(old[0], signal.SIGKILL)
            new = gw.wait_workers(1, timeout=5, exclude=old)
            time.sleep(0.1)
        finally:
            stop.set()
            spammer.join()
        time.sleep(0.3)
        assert harness.pid_alive(new[0]) and gw.worker_pids() == new, \
            "a SIGHUP right after the fork killed the new worker:\n%s" % gw.tail(20)
    assert gw.log_text().count("event=worker_died") == 3, gw.tail(30)


# ----------------------------------------------------------------- supervisor death

def test_workers_exit_when_the_supervisor_is_killed_and_the_port_is_free(cluster):
    redis = cluster.redis()
    gw = cluster.gateway(redis, workers=2, watch_workers=False,
                         extra=["--drain-timeout", str(DRAIN)])
    kids = gw.wait_workers(2)

    async def main(clients):
        c = await Client.open(gw.url, tok("u1"), "orphan")
        clients.append(c)
        gw.expected_exit = True
        t0 = time.monotonic()
        os.kill(gw.pid, signal.SIGKILL)
        code, _ = await c.close_info(5)
        assert code == 1001, code
        while any(harness.pid_alive(k) for k in kids):
            assert time.monotonic() - t0 < 2.0, "workers %r outlived their supervisor by 2 s" % (
                [k for k in kids if harness.pid_alive(k)])
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    took = run(main)
    print("workers gone %.2fs after the supervisor's SIGKILL" % took)
    again = cluster.gateway(redis, workers=1, port=gw.port, name="again")
    assert again.alive()
