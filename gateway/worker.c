/* worker.c -- a worker process: accept, sweep, fan-out from Redis, drain. */
#include "worker.h"

#include <errno.h>
#include <event2/buffer.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bus.h"
#include "cluster_view.h"
#include "conn.h"
#include "iplimit.h"
#include "log.h"
#include "protocol.h"
#include "session.h"
#include "stats.h"
#include "subs.h"
#include "system_channels.h"

#define DRAIN_CHECK_INTERVAL_US 50000
#define ORPHAN_DRAIN_TIMEOUT    1.0 /* seconds, once the supervisor is gone */

int worker_listen_socket(const char *host, int port, bool reuse_port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    int rc = getaddrinfo(host, port_text, &hints, &res);
    if (rc != 0) {
        errno = EINVAL;
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            (!reuse_port || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0) &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
            break;
        int saved = errno;
        close(fd);
        errno = saved;
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* ---- Redis events ---------------------------------------------------------- */

static void on_dropped(void *arg, const char *channel, const char *why, size_t len) {
    struct worker *w = arg;
    static double last_log;
    static unsigned suppressed;
    w->stats.events_dropped++;
    double now = clock_now();
    if (now - last_log < 1.0) {
        suppressed++;
        return;
    }
    log_warn("event=event_dropped channel=%s reason=%s bytes=%zu suppressed=%u", log_q(channel),
             log_q(why), len, suppressed);
    last_log = now;
    suppressed = 0;
}

static void on_latency(void *arg, double seconds) {
    stats_observe_latency(arg, seconds);
}

static void on_delivered(void *arg, size_t deliveries) {
    struct worker *w = arg;
    w->stats.events_delivered += deliveries;
}

static void on_message(void *arg, const char *channel, const char *payload, size_t len,
                       double arrived) {
    struct worker *w = arg;
    w->stats.events_received++;
    subs_publish(w->subs, channel, payload, len, arrived);
}

/* The resubscribe after an outage is confirmed: tell clients and admins. */
static void finish_resync(struct worker *w) {
    for (struct conn *c = w->conns; c; c = conn_next(c))
        if (conn_session(c)) session_send_gap(conn_session(c));
    if (w->restored) {
        system_channels_publish_health(w, "redis_restored", w->restored);
        w->restored = NULL;
    }
}

static void on_subscribed(void *arg, const char *channel) {
    struct worker *w = arg;
    subs_on_confirmed(w->subs, channel);
    if (w->resync_pending > 0 && --w->resync_pending == 0) finish_resync(w);
}

static void on_refused(void *arg, const char *channel, const char *reason) {
    struct worker *w = arg;
    subs_on_refused(w->subs, channel, reason);
    if (w->resync_pending > 0 && --w->resync_pending == 0) finish_resync(w);
}

static void on_unsubscribed(void *arg, const char *channel) {
    struct worker *w = arg;
    subs_on_unsubscribed(w->subs, channel);
}

static void on_up(void *arg, bool after_outage, bool same_redis) {
    struct worker *w = arg;
    size_t resubscribed = subs_on_bus_up(w->subs, same_redis);
    if (!after_outage)
        system_channels_publish_health(w, w->restarted ? "worker_restarted" : "worker_started",
                                       NULL);
    /* Channels wanted before Redis was reached, or during an outage, may have
     * missed events: their subscribers get a gap once Redis confirmed them. */
    if (after_outage || resubscribed > 0) {
        struct bus_status bs;
        bus_status(w->bus, &bs);
        log_info("event=resubscribe channels=%zu", resubscribed);
        json_decref(w->restored);
        w->restored = after_outage
                          ? json_pack("{s:f, s:I}", "outageSeconds", bs.last_outage_seconds,
                                      "channels", (json_int_t)resubscribed)
                          : NULL;
        w->resync_pending = (unsigned)resubscribed;
        if (resubscribed == 0) finish_resync(w);
    }
}

static void on_down(void *arg) {
    struct worker *w = arg;
    w->resync_pending = 0;
    subs_on_bus_down(w->subs);
    /* Published at once if only the subscriber died, else when Redis is back. */
    system_channels_publish_health(w, "redis_lost", NULL);
}

/* Cluster: one channel's node failed over or its slot moved; it is being
 * subscribed again on the new owner, then recovered like after an outage. */
static void on_lost(void *arg, const char *channel) {
    struct worker *w = arg;
    subs_on_channel_lost(w->subs, channel);
}

static void on_command_up(void *arg) {
    struct worker *w = arg;
    subs_on_command_up(w->subs);
    system_channels_flush_health(w);
}

/* ---- accept, sweep, drain -------------------------------------------------- */

/* Sockets still in their handshake count too: at most this many beyond
 * --max-connections are held at once, so idle TCP connections cannot use up
 * the worker's descriptors. */
#define HANDSHAKE_ALLOWANCE 1024

static void accept_cb(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
                      int addr_len, void *arg) {
    struct worker *w = arg;
    bool tls = listener == w->tls_listener, admin = listener == w->admin_listener;
    if (w->socket_count >= (unsigned long)w->cfg->max_connections + HANDSHAKE_ALLOWANCE) {
        evutil_closesocket(fd);
        w->stats.handshake_failures++;
        return;
    }
    if (conn_accept(w, fd, addr, addr_len, tls, admin) != 0)
        log_error("event=accept_failed reason=no_memory");
}

static void set_listening(struct worker *w, bool on) {
    struct evconnlistener *listeners[] = {w->plain_listener, w->tls_listener, w->admin_listener};
    for (int i = 0; i < 3; i++) {
        if (!listeners[i]) continue;
        if (on)
            evconnlistener_enable(listeners[i]);
        else
            evconnlistener_disable(listeners[i]);
    }
}

static void resume_accept_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct worker *w = arg;
    if (!w->draining) set_listening(w, true);
}

/* Out of descriptors (or another accept failure): pause accepting for a
 * second instead of spinning on a listener that stays readable. */
static void accept_error_cb(struct evconnlistener *listener, void *arg) {
    (void)listener;
    struct worker *w = arg;
    log_error("event=accept_error error=%s action=pause_1s", log_q(strerror(errno)));
    set_listening(w, false);
    struct timeval one_second = {1, 0};
    event_add(w->resume_accept, &one_second);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    conn_tick(arg, clock_now());
}

/* One drain step: close the next batch of clients with 1001, so that the
 * reconnects spread over the first half of the drain window instead of
 * hitting the other gateways in one burst. The worker exits as soon as no
 * WebSocket client is left. */
static void drain_check_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct worker *w = arg;
    unsigned closed = 0;
    for (struct conn *c = w->conns, *next; c && closed < w->drain_batch; c = next) {
        next = conn_next(c);
        if (conn_is_open(c)) {
            conn_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
            closed++;
        }
    }
    double now = clock_now();
    conn_tick(w, now); /* frees connections whose close is done or late */
    if (w->conn_count == 0 || now >= w->drain_deadline) event_base_loopbreak(w->base);
}

/* Closes the listening sockets: from now on the kernel refuses new
 * connections to this worker (the other workers close theirs too). */
static void close_listeners(struct worker *w) {
    struct evconnlistener **listeners[] = {&w->plain_listener, &w->tls_listener,
                                           &w->admin_listener};
    for (size_t i = 0; i < sizeof listeners / sizeof listeners[0]; i++) {
        if (*listeners[i]) evconnlistener_free(*listeners[i]);
        *listeners[i] = NULL;
    }
    event_del(w->resume_accept);
}

/* orphaned: the supervisor is gone, so nobody will wait for a paced drain or
 * restart this worker; close every client at once and give up soon. */
static void start_drain(struct worker *w, bool orphaned) {
    if (w->draining) return;
    w->draining = true; /* /readyz answers 503 and upgrades in flight 503 from now on */
    close_listeners(w);
    /* Sockets that never upgraded (load-balancer pre-connects, scanners) hold
     * nothing worth waiting for. */
    for (struct conn *c = w->conns, *next; c; c = next) {
        next = conn_next(c);
        if (!conn_in_use(c)) conn_free(c);
    }
    double timeout = w->cfg->drain_timeout;
    if (orphaned && timeout > ORPHAN_DRAIN_TIMEOUT) timeout = ORPHAN_DRAIN_TIMEOUT;
    w->drain_deadline = clock_now() + timeout;
    double steps = floor(timeout / 2 / (DRAIN_CHECK_INTERVAL_US / 1e6));
    if (steps < 1 || orphaned) steps = 1;
    w->drain_batch = (unsigned)ceil(w->conn_count / steps);
    if (w->drain_batch == 0) w->drain_batch = 1;
    log_info("event=drain_start connections=%u timeout=%.1f batch=%u orphaned=%d", w->conn_count,
             timeout, w->drain_batch, orphaned);
    w->drain_check = event_new(w->base, -1, EV_PERSIST, drain_check_cb, w);
    struct timeval tv = {0, DRAIN_CHECK_INTERVAL_US};
    if (!w->drain_check || event_add(w->drain_check, &tv) != 0) event_base_loopbreak(w->base);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    struct worker *w = arg;
    bool orphaned = getppid() != w->supervisor;
    log_info("event=signal signal=%d orphaned=%d", (int)sig, orphaned);
    start_drain(w, orphaned);
}

/* ---- configuration reload (SIGHUP) ----------------------------------------- */

static int read_secret_file(const char *path, char *out, size_t size, char *err, size_t err_size) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_size, "cannot read --jwt-secret-file %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, size - 1, f);
    bool too_long = n == size - 1 && fgetc(f) != EOF;
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = '\0';
    if (too_long || n == 0) {
        snprintf(err, err_size, "--jwt-secret-file %s is %s", path, n == 0 ? "empty" : "too long");
        return -1;
    }
    return 0;
}

int worker_load_config(const struct config *cfg, struct jwt_auth *auth, struct acl_rules **rules,
                       char *err, size_t err_size) {
    char secret[4096];
    const char *use_secret = cfg->jwt_secret;
    *rules = NULL;
    if (cfg->jwt_secret_file) {
        if (read_secret_file(cfg->jwt_secret_file, secret, sizeof secret, err, err_size) != 0)
            return -1;
        use_secret = secret;
    }
    int rc = jwt_auth_init(auth, cfg->jwt_alg, use_secret, cfg->jwt_key, cfg->jwt_issuer,
                           cfg->jwt_audience, err, err_size);
    OPENSSL_cleanse(secret, sizeof secret);
    if (rc != 0) return -1;
    if (cfg->acl_file && !(*rules = acl_rules_load(cfg->acl_file, err, err_size))) {
        jwt_auth_free(auth);
        return -1;
    }
    return 0;
}

static void reload(struct worker *w) {
    struct jwt_auth auth;
    struct acl_rules *rules;
    char err[512];
    if (worker_load_config(w->cfg, &auth, &rules, err, sizeof err) != 0) {
        log_error("event=reload_failed reason=%s", log_q(err));
        return;
    }
    struct publish_api_key key;
    if (publish_api_load_key(w->cfg, &key, err, sizeof err) != 0) {
        log_error("event=reload_failed reason=%s", log_q(err));
        jwt_auth_free(&auth);
        acl_rules_free(rules);
        return;
    }
    w->api_key = key;
    OPENSSL_cleanse(&key, sizeof key);
    jwt_auth_free(&w->auth);
    w->auth = auth;
    acl_rules_free(w->owned_rules);
    w->owned_rules = rules;
    w->rules = rules ? rules : acl_default_rules();
    for (struct conn *c = w->conns; c; c = conn_next(c))
        if (conn_session(c)) session_recheck_access(conn_session(c));
    log_info("event=reloaded");
}

static void sighup_cb(evutil_socket_t sig, short what, void *arg) {
    (void)sig, (void)what;
    reload(arg);
}

static struct evconnlistener *listen_on(struct worker *w, const char *host, int port) {
    int fd = worker_listen_socket(host, port, true);
    if (fd < 0) {
        log_error("event=listen_failed host=%s port=%d error=%s", log_q(host), port,
                  log_q(strerror(errno)));
        return NULL;
    }
    struct evconnlistener *l = evconnlistener_new(w->base, accept_cb, w, LEV_OPT_CLOSE_ON_FREE, 0,
                                                  fd); /* already listening */
    if (!l) {
        close(fd);
        return NULL;
    }
    evconnlistener_set_error_cb(l, accept_error_cb);
    return l;
}

int worker_run(struct worker *w) {
    int status = 1;
    char tag[32], probe_id[200];
    snprintf(tag, sizeof tag, "worker=%d", w->index);
    log_set_tag(tag);
    w->started = clock_now();
    w->base = event_base_new();
    if (!w->base) return 1;
    struct bus_callbacks callbacks = {.on_message = on_message,
                                      .on_subscribed = on_subscribed,
                                      .on_refused = on_refused,
                                      .on_unsubscribed = on_unsubscribed,
                                      .on_up = on_up,
                                      .on_down = on_down,
                                      .on_command_up = on_command_up,
                                      .on_lost = on_lost,
                                      .arg = w};
    snprintf(probe_id, sizeof probe_id, "%s:%d:%d", w->gateway_id, w->index, (int)getpid());
    if (w->redis_cluster.count)
        w->bus = bus_new_cluster(w->base, &w->redis_cluster, w->cfg->channel_prefix, probe_id,
                                 &callbacks);
    else
        w->bus = bus_new(w->base, &w->redis, w->cfg->channel_prefix, probe_id, &callbacks);
    if (w->bus) bus_set_read_coalesce(w->bus, (int)w->cfg->read_coalesce);
    struct subs_limits limits = {(size_t)w->cfg->max_channels, (size_t)w->cfg->max_event_size,
                                 (size_t)w->cfg->recovery_limit, w->cfg->channel_prefix};
    struct subs_hooks hooks = {on_latency, on_dropped, on_delivered, w};
    w->subs = w->bus ? subs_new(w->bus, w->base, &limits, &hooks) : NULL;
    wheel_init(&w->wheel, (uint64_t)floor(w->started));
    if (w->restarted &&
        (w->cfg->jwt_secret_file || w->cfg->jwt_key || w->cfg->acl_file || w->cfg->api_key_file))
        reload(w); /* the files may have changed since the supervisor read them */
    w->resume_accept = evtimer_new(w->base, resume_accept_cb, w);
    w->tick = event_new(w->base, -1, EV_PERSIST, tick_cb, w);
    w->sigterm = evsignal_new(w->base, SIGTERM, signal_cb, w);
    w->sigint = evsignal_new(w->base, SIGINT, signal_cb, w);
    w->sighup = evsignal_new(w->base, SIGHUP, sighup_cb, w);
    struct timeval one_second = {1, 0};
    if (!w->subs || !w->resume_accept || !w->tick || !w->sigterm || !w->sigint || !w->sighup ||
        event_add(w->tick, &one_second) || event_add(w->sigterm, NULL) ||
        event_add(w->sigint, NULL) || event_add(w->sighup, NULL) || cluster_view_start(w) != 0 ||
        system_channels_start(w) != 0)
        goto out;
    /* The handlers are in place: let the signals that main blocked (and any
     * that arrived meanwhile) through. */
    sigset_t handled;
    sigemptyset(&handled);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigprocmask(SIG_UNBLOCK, &handled, NULL);
    const struct config *cfg = w->cfg;
    if (cfg->port && !(w->plain_listener = listen_on(w, cfg->host, cfg->port))) goto out;
    if (w->ssl_ctx && !(w->tls_listener = listen_on(w, cfg->host, cfg->tls_port))) goto out;
    if (cfg->admin_port && !(w->admin_listener = listen_on(w, cfg->admin_host, cfg->admin_port)))
        goto out;
    log_info("event=worker_ready port=%d tls_port=%d admin_port=%d", cfg->port,
             w->ssl_ctx ? cfg->tls_port : 0, cfg->admin_port);

    event_base_dispatch(w->base);
    status = w->conn_count ? 1 : 0; /* 0 only when every client was closed in time */
    log_info("event=worker_exit status=%d remaining=%u", status, w->conn_count);

out:
    while (w->conns) conn_free(w->conns);
    if (w->plain_listener) evconnlistener_free(w->plain_listener);
    if (w->tls_listener) evconnlistener_free(w->tls_listener);
    if (w->admin_listener) evconnlistener_free(w->admin_listener);
    cluster_view_stop(w);
    system_channels_stop(w);
    json_decref(w->restored);
    subs_free(w->subs);
    bus_free(w->bus);
    if (w->tick) event_free(w->tick);
    if (w->sigterm) event_free(w->sigterm);
    if (w->sigint) event_free(w->sigint);
    if (w->drain_check) event_free(w->drain_check);
    if (w->sighup) event_free(w->sighup);
    if (w->resume_accept) event_free(w->resume_accept);
    event_base_free(w->base);
    return status;
}
