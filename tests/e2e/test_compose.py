"""The deployment files agree with each other and with what the tests run.

No Docker engine runs here, so docker-compose.yml is checked as YAML (and by
`docker compose config` when the compose CLI is installed), and every piece it
configures is run for real where it can be: the gateway with the compose
file's environment, the publisher services with their compose command lines,
the Dockerfile's health check against a live gateway, deploy/nginx.conf
through `nginx -t`, deploy/haproxy.cfg through `haproxy -c`, and the systemd
unit through `systemd-analyze verify`."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

import harness
from harness_cluster import Redis
from harness_rediscluster import redis_cluster_factory  # noqa: F401
from harness_topology import (COMPOSE_FILE, DOCKERFILE, HAPROXY_CFG, NGINX_CONF, UNIT_FILE,
                              GATEWAY_SERVICES, REPO, kill_leftovers, nginx_upstream_names, render_nginx_conf,
                              nginx_test_config)

try:
    import yaml
except ImportError:  # the checks must run: fail, do not skip
    yaml = None

INTERP_RE = re.compile(r"^\$\{(\w+)(:?[?-][^}]*)?\}$")
PUBLISHER_KINDS = {"apps", "deployments", "storage"}


def read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def compose():
    if yaml is None:
        pytest.fail("python3-yaml is missing (apt-get install python3-yaml; "
                    "deploy/install-deps.sh installs it)")
    doc = yaml.safe_load(read(COMPOSE_FILE))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), doc
    return doc


def services(compose, prefix):
    return {k: v for k, v in compose["services"].items() if k.startswith(prefix)}


def help_default(option):
    """The [default] that herald-gateway --help prints for option."""
    r = subprocess.run([harness.GATEWAY_BIN, "--help"], capture_output=True, text=True,
                       timeout=10)
    m = re.search(r"^\s*--%s\s.*\[([^\]]+)\]\s*$" % re.escape(option), r.stdout + r.stderr,
                  re.M)
    assert m, "--help shows no default for --%s" % option
    return m.group(1)


def seconds(v):
    """Compose/systemd durations: 20s, 1m30s, 90, 1min."""
    if isinstance(v, (int, float)):
        return float(v)
    total, ok = 0.0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|m|s|h)?", str(v)):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600,
                               "": 1}[unit]
        ok = True
    assert ok, "not a duration: %r" % v
    return total


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return env


def interpolate(value, values):
    """Compose's ${VAR}, ${VAR:?msg}, ${VAR:-default} and $$ with the given values."""
    def sub(m):
        name, rest = m.group(1), m.group(2) or ""
        if name in values:
            return values[name]
        if rest.startswith(":-") or rest.startswith("-"):
            return rest.split("-", 1)[1]
        raise AssertionError("${%s} is not set and has no default" % name)
    return re.sub(r"\$\{(\w+)((?::?[?-])[^}]*)?\}", sub, str(value)).replace("$$", "$")


# ----------------------------------------------------------------- compose

def test_compose_has_redis_three_gateways_nginx_and_the_publishers(compose):
    svc = compose["services"]
    assert "redis" in svc
    assert sorted(services(compose, "gateway")) == GATEWAY_SERVICES
    assert "lb" in svc and "nginx" in svc["lb"]["image"]
    pubs = services(compose, "publisher-")
    assert len(pubs) == 3, sorted(pubs)
    dockerfile = None
    for name in GATEWAY_SERVICES + sorted(pubs):
        build = svc[name].get("build") or {}
        assert build.get("context") == ".", (name, build)
        dockerfile = build.get("dockerfile")
        assert dockerfile == "deploy/Dockerfile", (name, build)
    assert os.path.exists(os.path.join(REPO, dockerfile))


def test_compose_secrets_come_from_the_environment_only(compose):
    for name in GATEWAY_SERVICES:
        env = env_of(compose["services"][name])
        m = INTERP_RE.match(str(env.get("HERALD_JWT_SECRET", "")))
        assert m and m.group(1) == "HERALD_JWT_SECRET", \
            "%s: HERALD_JWT_SECRET must be ${HERALD_JWT_SECRET...}, is %r" % (
                name, env.get("HERALD_JWT_SECRET"))
        assert (m.group(2) or "").startswith(":?"), \
            "%s: a missing secret must stop compose (${HERALD_JWT_SECRET:?...})" % name
    for name, s in compose["services"].items():
        cmd = s.get("command") or []
        text = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
        assert "--jwt-secret " not in text and "--jwt-secret=" not in text, \
            "%s: a secret on the command line: %r" % (name, text)
        for k, v in env_of(s).items():
            if re.search(r"SECRET|PASSWORD|AUTH|TOKEN", k):
                assert INTERP_RE.match(str(v)), "%s: %s is a literal" % (name, k)
            if k.endswith("REDIS") and "@" in str(v):
                password = str(v).split("//", 1)[1].rsplit("@", 1)[0]
                assert INTERP_RE.match(password.lstrip(":")), \
                    "%s: literal Redis password in %s" % (name, k)


def test_compose_nginx_upstreams_are_the_gateway_services(compose):
    svc = compose["services"]
    conf = read(NGINX_CONF)
    assert nginx_upstream_names(conf) == GATEWAY_SERVICES
    lb = svc["lb"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in lb.get("volumes", [])
    ports = re.findall(r"^\s*server\s+gateway\d+:(\d+)", conf, re.M)
    listen = re.search(r"^\s*listen\s+(\d+)", conf, re.M).group(1)
    assert any(str(p).endswith(":" + listen) for p in lb.get("ports", [])), lb.get("ports")
    lb_addr = lb["networks"]["herald"]["ipv4_address"]
    deps = lb.get("depends_on") or {}
    for name, port in zip(GATEWAY_SERVICES, ports):
        env = env_of(svc[name])
        assert env.get("HERALD_PORT") == port, (name, env.get("HERALD_PORT"), port)
        assert name in deps, "lb does not wait for %s" % name
        assert lb_addr in str(env.get("HERALD_TRUSTED_PROXIES", "")).split(","), \
            "%s does not trust nginx's X-Forwarded-For (lb is %s)" % (name, lb_addr)
    ids = [env_of(svc[n]).get("HERALD_GATEWAY_ID") for n in GATEWAY_SERVICES]
    assert ids == GATEWAY_SERVICES, ids


def test_compose_stop_grace_covers_the_gateway_drain(compose):
    for name in GATEWAY_SERVICES:
        s = compose["services"][name]
        drain = float(env_of(s).get("HERALD_DRAIN_TIMEOUT") or help_default("drain-timeout"))
        grace = seconds(s.get("stop_grace_period", "10s"))
        # the supervisor SIGKILLs workers 2 s after the drain timeout
        assert grace > drain + 2, "%s: stop_grace_period %ss <= drain %ss + 2" % (
            name, grace, drain)
        nofile = s.get("ulimits", {}).get("nofile", {})
        assert int(nofile.get("soft", 0)) >= 100000, "%s: nofile %r" % (name, nofile)


def test_compose_publishers_run_as_configured(compose, tmp_path):
    """Each publisher service's command line, run for real against a Redis."""
    pubs = services(compose, "publisher-")
    redis = Redis(tmp_path)
    procs = []
    try:
        kinds = set()
        for name, s in sorted(pubs.items()):
            assert s.get("entrypoint") == ["/usr/local/bin/herald-publisher"], name
            cmd = [str(a) for a in s["command"]]
            kind = cmd[cmd.index("--kind") + 1]
            kinds.add(kind)
            assert "--rate" in cmd and float(cmd[cmd.index("--rate") + 1]) > 0, (name, cmd)
            assert "--wait-redis" in cmd, "%s must wait for Redis at start" % name
            assert "redis" in (s.get("depends_on") or {}), name
            env = env_of(s)
            assert INTERP_RE.match(str(env["HERALD_REDIS"]).split("//")[1].split("@")[0]
                                   .lstrip(":")), env
            argv = [os.path.join(harness.BUILD, "herald-publisher")] + cmd + [
                "--count", "3", "-v"]
            procs.append((name, subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, HERALD_REDIS=redis.url))))
        assert kinds == PUBLISHER_KINDS, kinds
        for name, p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, "%s: exit %d: %s" % (name, p.returncode, err)
            lines = [ln for ln in out.splitlines() if ln.strip()]
            assert len(lines) == 3 and all(" {" in ln for ln in lines), (name, out)
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        redis.stop()


def dockerfile_healthcheck():
    m = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$",
                  read(DOCKERFILE).replace("\\\n", " "), re.M)
    assert m, "deploy/Dockerfile has no exec-form HEALTHCHECK"
    return json.loads(m.group(1))


def test_gateway_starts_with_the_compose_environment_and_passes_its_healthcheck(
        compose, tmp_path):
    """herald-gateway with gateway1's environment from the compose file (a
    bad HERALD_* variable would end it with status 2), then the Dockerfile's
    HEALTHCHECK command against it."""
    port = harness.free_port()
    values = {"HERALD_JWT_SECRET": "compose-test-secret", "HERALD_REDIS_PASSWORD": "pw"}
    env = {k: interpolate(v, values) for k, v in env_of(compose["services"]["gateway1"]).items()}
    assert env["HERALD_REDIS"] == "redis://:pw@redis:6379", env["HERALD_REDIS"]
    # every HERALD_* variable names a real option (the gateway ignores others)
    options = set(re.findall(r"^\s*--([a-z-]+)", subprocess.run(
        [harness.GATEWAY_BIN, "--help"], capture_output=True, text=True, timeout=10).stdout,
        re.M))
    unknown = [k for k in env if k.startswith("HERALD_")
               and k[7:].lower().replace("_", "-") not in options]
    assert not unknown, "no such gateway option: %r" % unknown
    env.update(HERALD_PORT=str(port), HERALD_HOST="127.0.0.1",
               HERALD_ADMIN_LISTEN="127.0.0.1:%d" % harness.free_port())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    redis = Redis(tmp_path)
    env["HERALD_REDIS"] = redis.url
    proc = None
    try:
        # no argv at all: every setting comes from the environment, as in the container
        with open(tmp_path / "gw.log", "wb") as log:
            proc = subprocess.Popen([harness.GATEWAY_BIN], env=dict(clean, **env), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not harness.port_open(port):
            assert proc.poll() is None, "gateway exited %s with the compose environment:\n%s" % (
                proc.returncode, harness.log_tail(tmp_path / "gw.log"))
            assert time.monotonic() < deadline, harness.log_tail(tmp_path / "gw.log")
            time.sleep(0.05)
        check = dockerfile_healthcheck()
        hc_env = dict(clean, HERALD_PORT=str(port))

        def healthy():
            return subprocess.run(check, env=hc_env, capture_output=True,
                                  timeout=5).returncode == 0
        deadline = time.monotonic() + 10
        while not healthy():
            assert time.monotonic() < deadline, "HEALTHCHECK %r never passed:\n%s" % (
                check, harness.log_tail(tmp_path / "gw.log"))
            time.sleep(0.1)
        log = harness.log_tail(tmp_path / "gw.log", 200)
        assert "workers=2" in log and "gateway=gateway1" in log, log
        assert "compose-test-secret" not in log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, harness.log_tail(tmp_path / "gw.log")
        # nothing listening: the health check must fail
        assert not healthy()
    finally:
        if proc is not None and proc.poll() is None:
            kids = harness.children_of(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            kill_leftovers(kids)
        redis.stop()


def compose_cli():
    """argv prefix of an installed compose CLI, or None."""
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file():
    cli = compose_cli()
    if cli is None:
        pytest.skip("no compose CLI here (`docker compose` plugin or docker-compose): the YAML "
                    "checks above still ran")
    env = dict(os.environ, HERALD_JWT_SECRET="x", HERALD_REDIS_PASSWORD="y")
    r = subprocess.run(cli + ["-f", COMPOSE_FILE, "config", "-q"], capture_output=True,
                       text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0, "%s config: %s%s" % (" ".join(cli), r.stdout, r.stderr)
    # without the secrets, compose refuses to start
    env.pop("HERALD_JWT_SECRET")
    r = subprocess.run(cli + ["-f", COMPOSE_FILE, "config", "-q"], capture_output=True,
                       text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode != 0 and "HERALD_JWT_SECRET" in r.stdout + r.stderr, r


# ----------------------------------------------------------------- Redis Cluster compose

CLUSTER_COMPOSE_FILE = os.path.join(REPO, "deploy", "docker-compose.cluster.yml")


@pytest.fixture(scope="module")
def cluster_compose():
    if yaml is None:
        pytest.fail("python3-yaml is missing")
    doc = yaml.safe_load(read(CLUSTER_COMPOSE_FILE))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), doc
    return doc


def cluster_seed_hosts(value):
    """The host:port items of a HERALD_REDIS_CLUSTER value, credentials cut."""
    return [item.rsplit("@", 1)[-1] for item in str(value).split(",")]


def test_cluster_compose_runs_three_masters_three_replicas_gateways_and_publishers(
        cluster_compose):
    svc = cluster_compose["services"]
    nodes = {k: v for k, v in svc.items() if re.fullmatch(r"redis-\d", k)}
    assert len(nodes) == 6, sorted(nodes)
    addrs = []
    for name, node in nodes.items():
        text = " ".join(node["command"])
        assert "--cluster-enabled yes" in text and "masterauth" in text, (name, text)
        addrs.append("%s:6379" % node["networks"]["herald"]["ipv4_address"])
    init = " ".join(svc["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1" in init and all(a in init for a in addrs), init
    assert sorted(services(cluster_compose, "gateway")) == GATEWAY_SERVICES
    assert len(services(cluster_compose, "publisher-")) == 3
    for name in GATEWAY_SERVICES + sorted(services(cluster_compose, "publisher-")):
        s = svc[name]
        env = env_of(s)
        assert "HERALD_REDIS" not in env, name
        assert sorted(cluster_seed_hosts(env["HERALD_REDIS_CLUSTER"])) == sorted(addrs), name
        assert s["depends_on"]["redis-cluster-init"]["condition"] == \
            "service_completed_successfully", name
        assert s["build"]["dockerfile"] == "deploy/Dockerfile" and s["build"]["context"] == ".."
    # Secrets: only from the environment.
    for name, s in svc.items():
        for k, v in env_of(s).items():
            if re.search(r"SECRET|PASSWORD|AUTH|TOKEN", k):
                assert INTERP_RE.match(str(v)), "%s: %s is a literal" % (name, k)
            if k == "HERALD_REDIS_CLUSTER":
                password = str(v).split("//", 1)[1].rsplit("@", 1)[0]
                assert INTERP_RE.match(password.lstrip(":")), "%s: literal password" % name
    assert re.search(r"\bnginx\.conf:/etc/nginx/nginx\.conf", " ".join(svc["lb"]["volumes"]))


def test_gateway_and_publisher_run_with_the_cluster_compose_environment(
        cluster_compose, redis_cluster_factory, tmp_path):
    """gateway1's and publisher-apps' environment from the cluster compose file,
    with the node addresses mapped to a real password-protected cluster here:
    the gateway becomes ready and the publisher's events reach a client."""
    rc = redis_cluster_factory(password="compose-pw")
    svc = cluster_compose["services"]
    values = {"HERALD_JWT_SECRET": harness.SECRET, "HERALD_REDIS_PASSWORD": "compose-pw"}
    nodes = sorted(svc[k]["networks"]["herald"]["ipv4_address"] for k in svc
                   if re.fullmatch(r"redis-\d", k))

    def local(env):
        env = {k: interpolate(v, values) for k, v in env.items()}
        seeds = env["HERALD_REDIS_CLUSTER"]
        for addr, port in zip(nodes, rc.ports):
            seeds = seeds.replace("%s:6379" % addr, "127.0.0.1:%d" % port)
        env["HERALD_REDIS_CLUSTER"] = seeds
        return env
    gw_env = local(env_of(svc["gateway1"]))
    port = harness.free_port()
    gw_env.update(HERALD_PORT=str(port), HERALD_HOST="127.0.0.1", HERALD_TLS_PORT="0")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    procs = []
    try:
        with open(tmp_path / "gw.log", "wb") as log:
            procs.append(subprocess.Popen([harness.GATEWAY_BIN], env=dict(clean, **gw_env),
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL))
        check = dockerfile_healthcheck()
        deadline = time.monotonic() + 15
        while subprocess.run(check, env=dict(clean, HERALD_PORT=str(port)),
                             capture_output=True, timeout=5).returncode != 0:
            assert procs[0].poll() is None, harness.log_tail(tmp_path / "gw.log")
            assert time.monotonic() < deadline, harness.log_tail(tmp_path / "gw.log")
            time.sleep(0.2)
        pub = svc["publisher-apps"]
        with harness.connect("ws://127.0.0.1:%d/ws" % port,
                             token=harness.craft_jwt(harness.claims_for("u1"), harness.SECRET))[0] as c:
            r = c.request({"type": "subscribe", "channel": "apps:created", "id": "s"})
            assert r.get("type") == "subscribed", r
            with open(tmp_path / "pub.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [harness.BUILD + "/herald-publisher"] + [str(a) for a in pub["command"]],
                    env=dict(clean, **local(env_of(pub))), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            m = c.recv_json(15)
            while m.get("type") != "event":
                m = c.recv_json(15)
            assert m["channel"] == "apps:created" and m.get("offset"), m
        assert "compose-pw" not in harness.log_tail(tmp_path / "gw.log", 200)
    finally:
        for p in reversed(procs):
            kids = harness.children_of(p.pid)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
            kill_leftovers(kids)


# ----------------------------------------------------------------- load balancers

def test_nginx_conf_is_accepted_by_nginx(tmp_path):
    conf = read(NGINX_CONF)
    path = tmp_path / "nginx.conf"
    path.write_text(render_nginx_conf(conf, [harness.free_port() for _ in range(3)],
                                      harness.free_port(), tmp_path))
    rc, out = nginx_test_config(str(path), tmp_path)
    assert rc == 0, "nginx -t:\n%s" % out
    idle = float(help_default("idle-timeout"))
    ws = re.search(r"location = /ws \{(.*?)\}", conf, re.S).group(1)
    for d in ("proxy_read_timeout", "proxy_send_timeout"):
        v = seconds(re.search(r"%s\s+(\S+);" % d, ws).group(1))
        assert v > idle, "%s %ss <= gateway --idle-timeout %ss" % (d, v, idle)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", ws)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", ws)
    assert re.search(r"proxy_http_version\s+1\.1;", ws)


def haproxy_bin():
    return shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                       if os.path.exists("/usr/sbin/haproxy") else None)


def test_haproxy_cfg_is_valid_and_checks_readyz():
    cfg = read(HAPROXY_CFG)
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):(\d+)", cfg, re.M)
    assert [s[1] for s in servers] == GATEWAY_SERVICES, servers
    assert re.search(r"^\s*option httpchk", cfg, re.M)
    assert re.search(r"^\s*http-check send meth GET uri /readyz", cfg, re.M)
    assert re.search(r"^\s*balance leastconn", cfg, re.M)
    tunnel = seconds(re.search(r"^\s*timeout tunnel\s+(\S+)", cfg, re.M).group(1))
    assert tunnel > float(help_default("idle-timeout")), tunnel
    assert not re.search(r"^\s*[^#\n]*shutdown-sessions", cfg, re.M)
    binary = haproxy_bin()
    if not binary:
        pytest.skip("haproxy is not installed (apt-get install haproxy): static checks ran")
    r = subprocess.run([binary, "-c", "-f", HAPROXY_CFG], capture_output=True, text=True,
                       timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "haproxy -c:\n%s" % out
    # outside Docker the gateway names do not resolve: the only warnings allowed
    warnings = [ln for ln in out.splitlines() if "WARNING" in ln or "ALERT" in ln]
    unexpected = [ln for ln in warnings if "could not resolve address 'gateway" not in ln]
    assert not unexpected, "haproxy -c warnings:\n%s" % "\n".join(unexpected)


# ----------------------------------------------------------------- Dockerfile

def dockerfile_stages():
    """[(base image, [instructions])] per stage, continuation lines joined."""
    text = read(DOCKERFILE).replace("\\\n", " ")
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line.split()[1], []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def apt_packages(instructions):
    out = []
    for ins in instructions:
        m = re.search(r"apt-get install ([^&]*)", ins)
        if m:
            out += [w for w in m.group(1).split() if not w.startswith("-")]
    return out


def test_dockerfile_is_multi_stage_slim_non_root():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "not multi-stage"
    base, final = stages[-1]
    assert base.startswith("debian:") and base.endswith("-slim"), base
    assert re.search(r"FROM debian:\S+-slim AS build", read(DOCKERFILE))
    user = [i.split()[1] for i in final if i.upper().startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("root", "0"), user
    entry = [i for i in final if i.upper().startswith("ENTRYPOINT")]
    assert entry and "herald-gateway" in entry[-1]
    copied = " ".join(i for i in final if i.upper().startswith("COPY --FROM=BUILD"))
    for b in ("herald-gateway", "herald-pub", "herald-publisher", "herald-token"):
        assert "/src/build/%s " % b in copied + " ", "%s is not copied into the image" % b
    assert any(i.upper().startswith("HEALTHCHECK") and "/readyz" in i for i in final)


def candidate_paths(path):
    real = os.path.realpath(path)
    return list(dict.fromkeys([path, real, re.sub(r"^/usr/lib/", "/lib/", real),
                               re.sub(r"^/lib/", "/usr/lib/", path)]))


def test_dockerfile_runtime_packages_provide_every_linked_library():
    """Each DT_NEEDED library of the built binaries comes from a package the
    runtime stage installs (libc6 is in the base image)."""
    with open(harness.GATEWAY_BIN, "rb") as f:
        if b"AddressSanitizer" in f.read():
            pytest.skip("%s is a sanitizer build (other runtime libraries, no --as-needed); "
                        "the image is built with `make all`" % harness.BUILD)
    runtime = set(apt_packages(dockerfile_stages()[-1][1]))
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                              timeout=10).stdout
    needed = {}  # soname -> [binaries]
    for b in ("herald-gateway", "herald-pub", "herald-publisher", "herald-token"):
        dyn = subprocess.run(["objdump", "-p", os.path.join(harness.BUILD, b)],
                             capture_output=True, text=True, timeout=10).stdout
        for soname in re.findall(r"NEEDED\s+(\S+)", dyn):
            if not re.match(r"lib(a|ub|l|t)san\.", soname):  # a sanitizer build's runtime
                needed.setdefault(soname, []).append(b)
    assert "libjwt.so.0" in needed, needed
    paths = {}
    for soname in needed:
        m = re.search(r"^\s*%s \(.*x86-64.*\) => (\S+)" % re.escape(soname), ldconfig,
                      re.M) or re.search(r"^\s*%s .*=> (\S+)" % re.escape(soname), ldconfig,
                                         re.M)
        assert m, "%s needs %s, not in ldconfig -p" % (needed[soname], soname)
        paths[soname] = candidate_paths(m.group(1))
    # one dpkg -S for all (it exits 1 when some candidate path is unknown)
    out = subprocess.run(["dpkg", "-S"] + [p for ps in paths.values() for p in ps],
                         capture_output=True, text=True, timeout=60).stdout
    owner = {}
    for line in out.splitlines():
        pkgs, _, path = line.partition(": ")
        owner[path.strip()] = pkgs.split(":")[0].split(",")[0].strip()
    missing = {}
    for soname, ps in paths.items():
        pkg = next((owner[p] for p in ps if p in owner), None)
        assert pkg, "no package owns %s" % ps
        if pkg != "libc6" and pkg not in runtime:
            missing[pkg] = "%s (%s)" % (soname, ", ".join(needed[soname]))
    assert not missing, "runtime stage lacks %r (it installs %s)" % (missing, sorted(runtime))


def test_dockerfile_build_stage_has_what_make_all_reads(tmp_path):
    """The build stage's -dev packages are the source build's, and `make -n all`
    in a tree holding only what the Dockerfile COPYs finds every input."""
    build_ins = dockerfile_stages()[0][1]
    build_pkgs = set(apt_packages(build_ins))
    deps = read(os.path.join(REPO, "deploy", "install-deps.sh"))
    wanted = set(re.findall(r"\b(lib[a-z0-9.-]+-dev)\b", deps)) - {"libclang-rt-dev"}
    assert wanted <= build_pkgs, "build stage lacks %s" % sorted(wanted - build_pkgs)
    tree = tmp_path / "src"
    tree.mkdir()
    for ins in build_ins:
        if ins.upper().startswith("COPY "):
            srcs = ins.split()[1:-1]
            for s in srcs:
                src = os.path.join(REPO, s.rstrip("/"))
                dst = tree / s.rstrip("/")
                if os.path.isdir(src):
                    shutil.copytree(src, dst)
                else:
                    shutil.copy(src, dst)
    run = [i for i in build_ins if i.upper().startswith("RUN MAKE")]
    assert run, "no RUN make in the build stage"
    r = subprocess.run(["make", "-n", "all"], cwd=tree, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, "make -n all with only the COPYed files:\n%s" % r.stderr


# ----------------------------------------------------------------- systemd

def unit_settings():
    out = {}
    for line in read(UNIT_FILE).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_drains_on_stop_and_raises_nofile():
    u = unit_settings()
    one = {k: v[-1] for k, v in u.items()}
    drain = float(help_default("drain-timeout"))
    assert seconds(one["TimeoutStopSec"]) > drain + 2, one["TimeoutStopSec"]
    assert one["KillSignal"] == "SIGTERM"
    assert one["KillMode"] == "mixed"  # SIGTERM to the supervisor, which drains its workers
    assert int(one["LimitNOFILE"]) >= 1048576
    assert one["EnvironmentFile"].startswith("/etc/herald/")
    assert one["Restart"] in ("on-failure", "always")
    assert "2" in one.get("RestartPreventExitStatus", "").split()
    assert "-HUP" in one["ExecReload"]
    assert one["User"] != "root"
    for k in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert k in one, "no %s" % k
    assert shlex.split(one["ExecStart"])[0].endswith("herald-gateway")
    assert "--jwt-secret" not in one["ExecStart"]


def test_systemd_unit_passes_systemd_analyze(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed: the unit's settings were checked above")
    text = read(UNIT_FILE).replace("/usr/local/bin/herald-gateway", harness.GATEWAY_BIN)
    text = re.sub(r"^EnvironmentFile=", "EnvironmentFile=-", text, flags=re.M)
    unit = tmp_path / "herald-gateway.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    complaints = [ln for ln in (r.stdout + r.stderr).splitlines()
                  if "herald-gateway.service" in ln]
    assert r.returncode == 0 and not complaints, "systemd-analyze verify:\n%s%s" % (
        r.stdout, r.stderr)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
    if r.returncode != 0 and not m:
        return  # an older systemd without offline security analysis
    assert m and float(m.group(1)) <= 2.5, "exposure: %s" % (r.stdout[-500:] + r.stderr)
