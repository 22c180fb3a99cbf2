"""Fixtures for Herald's end-to-end tests: redis, gateways, tokens.

A gateway that crashes (dies, has a worker replaced, or logs a sanitizer
report) fails the test during which it happened, and again at teardown."""

import os

import pytest

import harness
from harness import SECRET  # noqa: F401  (test modules import it from here)
from harness_cluster import Cluster
from harness_redis import RedisServer

_live_gateways = []


def _require_binaries():
    missing = [p for p in (harness.GATEWAY_BIN, harness.TOKEN_BIN) if not os.path.exists(p)]
    if missing:
        pytest.fail("missing binaries (build first, or set HERALD_BUILD): %s" % ", ".join(missing))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as r:
        yield r


@pytest.fixture(scope="session")
def secret():
    return SECRET


class GatewayFactory(Cluster):
    """Starts gateways on one Redis (not owned) and stops every one of them
    at the end of its scope."""

    gateway_defaults = {}

    def __init__(self, tmpdir, redis_url):
        super().__init__(tmpdir)
        self.redis_url = redis_url

    def __call__(self, extra=(), secret=SECRET, env=None, tls=None, name="gateway"):
        _require_binaries()
        gw = self.gateway(url=self.redis_url, secret=secret, extra=extra, env=env, tls=tls,
                          name=name)
        _live_gateways.append(gw)
        return gw

    def stop_all(self):
        for gw in self.gateways:
            if gw in _live_gateways:
                _live_gateways.remove(gw)
        return super().stop_all()


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory, redis_server):
    """Module-scoped factory: start_gateway(extra=[...], secret=..., env=..., tls=(cert, key))."""
    with GatewayFactory(tmp_path_factory.mktemp("gw"), redis_server.url) as f:
        yield f


@pytest.fixture
def fresh_gateway(tmp_path, redis_server):
    """Function-scoped factory, for tests that need their own gateway."""
    with GatewayFactory(tmp_path, redis_server.url) as f:
        yield f


@pytest.fixture(scope="module")
def gateway(start_gateway):
    """The module's default gateway (HS256 with SECRET)."""
    return start_gateway()


@pytest.fixture(autouse=True)
def _gateway_crash_check():
    """After every test: any running gateway that crashed fails this test."""
    yield
    problems = []
    for gw in list(_live_gateways):
        if gw.reported:
            continue
        p = gw.health_problem()
        if p:
            gw.reported = True
            problems.append(p)
    if problems:
        pytest.fail("gateway crashed during this test:\n" + "\n\n".join(problems))


@pytest.fixture(scope="session")
def tokens():
    """Tokens from herald-token: u1, u2 (users) and admin (role admin)."""
    _require_binaries()
    return {
        "u1": harness.herald_token("--secret", SECRET, "--user", "u1", "--email", "u1@example.com"),
        "u2": harness.herald_token("--secret", SECRET, "--user", "u2", "--email", "u2@example.com"),
        "admin": harness.herald_token("--secret", SECRET, "--user", "adm", "--email",
                                      "adm@example.com", "--role", "admin"),
    }


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory):
    return harness.gen_self_signed(tmp_path_factory.mktemp("tls"))
