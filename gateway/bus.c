/* bus.c -- Redis subscriber and command connections with reconnect and probe.
 *
 * hiredis 0.14 notes that shape this file:
 * - SUBSCRIBE registers our callback per channel; every "message" and the
 *   "unsubscribe" reply go to it. We pass the bus as privdata, never a
 *   per-channel object, so no callback can outlive what it points to.
 * - hiredis leaves subscribed mode when Redis reports zero subscriptions and
 *   would then abort on a SUBSCRIBE reply already in flight. The probe channel
 *   stays subscribed for the connection's whole life, so the count never
 *   reaches zero while the connection is up.
 * - A SUBSCRIBE and an UNSUBSCRIBE of the same channel must not be in flight
 *   together (the unsubscribe reply deletes the newer callback); subs.c keeps
 *   at most one command in flight per channel. */
#include "bus.h"

#include <hiredis/adapters/libevent.h>
#include <math.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

#define BACKOFF_BASE       0.1  /* seconds */
#define BACKOFF_MAX        5.0  /* seconds */
#define PROBE_INTERVAL     1.0  /* seconds between probes */
#define PROBE_TIMEOUT      3.0  /* a probe not back, and nothing else read, by then: dead */
#define PROBE_HARD_TIMEOUT 30.0 /* a probe not back by then: dead, however busy the link */
#define READY_TIMEOUT      5.0  /* seconds from connecting to the probe's SUBSCRIBE confirmed */
#define STABLE_AFTER       10.0 /* seconds up before the reconnect backoff starts over */

struct link {
    struct bus *bus;
    redisAsyncContext *ac; /* NULL while disconnected */
    bool ready;            /* connected and authenticated */
    unsigned attempts;     /* failed attempts since the last success */
    double started;        /* when the current connection attempt began */
    struct event *retry;
    const char *name;
};

struct bus {
    struct event_base *base;
    const struct redis_url *url;
    char *prefix;
    size_t prefix_len;
    char *probe_channel; /* full Redis name */
    struct bus_callbacks cb;
    struct link sub, cmd;
    struct event *tick;
    enum bus_state state;
    bool was_up;     /* the subscriber has been up before (so a new up ends an outage) */
    double up_since; /* monotonic seconds the subscriber came up, 0 while down */
    uint64_t reconnects, outages;
    double down_since, last_outage_seconds;
    double probe_sent_at;  /* 0: no probe outstanding */
    double sub_last_reply; /* when the subscriber last delivered anything */
    double probe_lag_ms;
    char last_error[128]; /* the last connection or command error, "" when none */
    bool freeing;
};

/* Records err as the bus's last error and logs it, rarely when it repeats. */
static void note_error(struct bus *bus, struct link *l, const char *what, const char *err) {
    bool repeat = strcmp(bus->last_error, err) == 0;
    snprintf(bus->last_error, sizeof bus->last_error, "%s", err);
    if (!repeat || l->attempts % 20 == 0)
        log_warn("event=%s link=%s error=%s attempts=%u", what, l->name, log_q(err), l->attempts);
}

static void link_connect(struct link *l);

static double backoff_delay(unsigned attempts) {
    double cap = BACKOFF_BASE * pow(2.0, attempts > 16 ? 16 : attempts);
    if (cap > BACKOFF_MAX) cap = BACKOFF_MAX;
    unsigned int r = 0;
    RAND_bytes((unsigned char *)&r, sizeof r);
    double delay = cap * ((double)r / 4294967295.0); /* full jitter */
    return delay < 0.05 ? 0.05 : delay;
}

static void schedule_retry(struct link *l) {
    if (l->bus->freeing) return;
    double d = backoff_delay(l->attempts++);
    struct timeval tv = {(time_t)d, (suseconds_t)((d - (double)(time_t)d) * 1e6)};
    event_add(l->retry, &tv);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    link_connect(arg);
}

/* ---- subscriber ------------------------------------------------------------ */

static void set_up(struct bus *bus) {
    bool after_outage = bus->was_up;
    double now = clock_now();
    if (after_outage) {
        bus->reconnects++;
        bus->last_outage_seconds = now - bus->down_since;
        log_warn("event=redis_restored outage_seconds=%.3f", bus->last_outage_seconds);
    } else {
        log_info("event=redis_connected host=%s port=%d", log_q(bus->url->host), bus->url->port);
    }
    bus->state = BUS_UP;
    bus->was_up = true;
    bus->last_error[0] = '\0';
    bus->down_since = 0;
    bus->probe_sent_at = 0;
    if (bus->cb.on_up) bus->cb.on_up(bus->cb.arg, after_outage);
}

static void sub_cb(redisAsyncContext *ac, void *r, void *privdata) {
    (void)ac;
    struct bus *bus = privdata;
    redisReply *reply = r;
    if (!reply || bus->freeing) return;
    bus->sub_last_reply = clock_now();
    if (reply->type == REDIS_REPLY_ERROR) {
        note_error(bus, &bus->sub, "redis_error", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    const char *full = reply->element[1]->str;
    bool is_probe = strcmp(full, bus->probe_channel) == 0;
    const char *channel = full;
    if (!is_probe) {
        if (strncmp(full, bus->prefix, bus->prefix_len) != 0) return;
        channel = full + bus->prefix_len;
    }
    if (strcmp(kind, "message") == 0) {
        redisReply *payload = reply->element[2];
        if (payload->type != REDIS_REPLY_STRING) return;
        if (is_probe) {
            double sent = atof(payload->str);
            if (bus->probe_sent_at != 0 && sent == bus->probe_sent_at) {
                bus->probe_lag_ms = (clock_now() - sent) * 1000.0;
                bus->probe_sent_at = 0;
            }
            return;
        }
        if (bus->cb.on_message)
            bus->cb.on_message(bus->cb.arg, channel, payload->str, payload->len);
    } else if (strcmp(kind, "subscribe") == 0) {
        if (is_probe) {
            bus->up_since = clock_now(); /* the backoff resets only once this lasts */
            set_up(bus);
        } else if (bus->cb.on_subscribed) {
            bus->cb.on_subscribed(bus->cb.arg, channel);
        }
    } else if (strcmp(kind, "unsubscribe") == 0 && !is_probe) {
        if (bus->cb.on_unsubscribed) bus->cb.on_unsubscribed(bus->cb.arg, channel);
    }
}

/* ---- connection plumbing shared by both links ------------------------------ */

static struct link *link_of(const redisAsyncContext *ac) {
    return ac->data;
}

static void link_ready(struct link *l) {
    struct bus *bus = l->bus;
    l->ready = true;
    if (l == &bus->sub) {
        /* The probe channel first: it keeps hiredis in subscribed mode. */
        redisAsyncCommand(l->ac, sub_cb, bus, "SUBSCRIBE %s", bus->probe_channel);
    } else {
        l->attempts = 0;
        log_debug("event=redis_command_connected");
        if (bus->cb.on_command_up) bus->cb.on_command_up(bus->cb.arg);
    }
}

static void select_cb(redisAsyncContext *ac, void *r, void *privdata) {
    (void)privdata;
    redisReply *reply = r;
    struct link *l = link_of(ac);
    if (!reply || !l) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        note_error(l->bus, l, "redis_select_failed", reply->str);
        redisAsyncDisconnect(ac);
        return;
    }
    link_ready(l);
}

static void auth_cb(redisAsyncContext *ac, void *r, void *privdata) {
    (void)privdata;
    redisReply *reply = r;
    struct link *l = link_of(ac);
    if (!reply || !l) return;
    if (reply->type == REDIS_REPLY_ERROR) {
        note_error(l->bus, l, "redis_auth_failed", reply->str);
        redisAsyncDisconnect(ac);
        return;
    }
    if (l == &l->bus->cmd && l->bus->url->db != 0)
        redisAsyncCommand(ac, select_cb, NULL, "SELECT %d", l->bus->url->db);
    else
        link_ready(l);
}

static void connect_cb(const redisAsyncContext *ac, int status) {
    struct link *l = link_of(ac);
    if (!l) return;
    if (status != REDIS_OK) {
        note_error(l->bus, l, "redis_connect_failed", ac->errstr);
        l->ac = NULL; /* hiredis frees the context after this callback */
        schedule_retry(l);
        return;
    }
    const struct redis_url *url = l->bus->url;
    redisAsyncContext *mac = (redisAsyncContext *)ac;
    if (url->password) {
        if (url->user)
            redisAsyncCommand(mac, auth_cb, NULL, "AUTH %s %s", url->user, url->password);
        else
            redisAsyncCommand(mac, auth_cb, NULL, "AUTH %s", url->password);
    } else if (l == &l->bus->cmd && url->db != 0) {
        redisAsyncCommand(mac, select_cb, NULL, "SELECT %d", url->db);
    } else {
        link_ready(l);
    }
}

static void disconnect_cb(const redisAsyncContext *ac, int status) {
    struct link *l = link_of(ac);
    (void)status;
    if (!l) return;
    struct bus *bus = l->bus;
    l->ac = NULL;
    l->ready = false;
    if (bus->freeing) return;
    if (l == &bus->sub && bus->state != BUS_UP)
        note_error(bus, l, "redis_subscriber_failed", ac->errstr[0] ? ac->errstr : "disconnected");
    if (l == &bus->sub) {
        if (bus->state == BUS_UP) {
            bus->outages++;
            bus->down_since = clock_now();
            log_warn("event=redis_lost error=%s",
                     log_q(ac->errstr[0] ? ac->errstr : "disconnected"));
            bus->state = BUS_DOWN;
            if (bus->cb.on_down) bus->cb.on_down(bus->cb.arg);
        }
        bus->state = BUS_DOWN;
    } else {
        log_warn("event=redis_command_lost error=%s",
                 log_q(ac->errstr[0] ? ac->errstr : "disconnected"));
    }
    schedule_retry(l);
}

static void link_connect(struct link *l) {
    struct bus *bus = l->bus;
    if (l->ac || bus->freeing) return;
    redisAsyncContext *ac = redisAsyncConnect(bus->url->host, bus->url->port);
    if (!ac || ac->err) {
        if (ac) {
            log_warn("event=redis_connect_failed link=%s error=%s", l->name, log_q(ac->errstr));
            redisAsyncFree(ac);
        }
        schedule_retry(l);
        return;
    }
    ac->data = l;
    if (redisLibeventAttach(ac, bus->base) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(l);
        return;
    }
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);
    l->ac = ac;
    l->started = clock_now();
}

/* ---- probe ----------------------------------------------------------------- */

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct bus *bus = arg;
    double now = clock_now();
    /* A Redis that accepts the connection but never answers is as good as none. */
    struct link *links[] = {&bus->sub, &bus->cmd};
    for (int i = 0; i < 2; i++) {
        struct link *l = links[i];
        bool ready = l == &bus->sub ? bus->state == BUS_UP : l->ready;
        if (l->ac && !ready && now - l->started > READY_TIMEOUT) {
            note_error(bus, l, "redis_not_answering", "no answer within 5 s of connecting");
            redisAsyncFree(l->ac); /* runs the connect or disconnect callback: retry */
            if (l->ac) {           /* it never connected: no callback ran */
                l->ac = NULL;
                schedule_retry(l);
            }
        }
    }
    if (bus->state == BUS_UP && bus->sub.attempts && now - bus->up_since >= STABLE_AFTER)
        bus->sub.attempts = 0;
    if (bus->state != BUS_UP || !bus->cmd.ready) return;
    if (bus->probe_sent_at != 0) {
        /* A probe may wait behind a burst of real messages: the link is dead
         * only when nothing at all arrives (or the probe is very late). */
        double waited = now - bus->probe_sent_at;
        if (waited < PROBE_TIMEOUT ||
            (now - bus->sub_last_reply < PROBE_TIMEOUT && waited < PROBE_HARD_TIMEOUT))
            return;
        log_warn("event=redis_probe_lost waited_seconds=%.1f", waited);
        bus->probe_sent_at = 0;
        if (bus->sub.ac) redisAsyncFree(bus->sub.ac); /* runs disconnect_cb: down + retry */
        return;
    }
    char stamp[32];
    snprintf(stamp, sizeof stamp, "%.6f", now);
    bus->probe_sent_at = atof(stamp);
    redisAsyncCommand(bus->cmd.ac, NULL, NULL, "PUBLISH %s %s", bus->probe_channel, stamp);
}

/* ---- public ---------------------------------------------------------------- */

struct bus *bus_new(struct event_base *base, const struct redis_url *url, const char *prefix,
                    const char *probe_id, const struct bus_callbacks *callbacks) {
    struct bus *bus = calloc(1, sizeof *bus);
    if (!bus) return NULL;
    bus->base = base;
    bus->url = url;
    bus->cb = *callbacks;
    bus->prefix = strdup(prefix);
    bus->prefix_len = strlen(prefix);
    bus->probe_lag_ms = -1;
    bus->state = BUS_CONNECTING;
    size_t n = bus->prefix_len + strlen(probe_id) + 16;
    bus->probe_channel = malloc(n);
    bus->sub = (struct link){.bus = bus, .name = "subscriber"};
    bus->cmd = (struct link){.bus = bus, .name = "command"};
    bus->sub.retry = event_new(base, -1, 0, retry_cb, &bus->sub);
    bus->cmd.retry = event_new(base, -1, 0, retry_cb, &bus->cmd);
    bus->tick = event_new(base, -1, EV_PERSIST, tick_cb, bus);
    if (!bus->prefix || !bus->probe_channel || !bus->sub.retry || !bus->cmd.retry || !bus->tick) {
        bus_free(bus);
        return NULL;
    }
    snprintf(bus->probe_channel, n, "%s__probe__:%s", prefix, probe_id);
    struct timeval tv = {(time_t)PROBE_INTERVAL, 0};
    event_add(bus->tick, &tv);
    link_connect(&bus->sub);
    link_connect(&bus->cmd);
    return bus;
}

void bus_free(struct bus *bus) {
    if (!bus) return;
    bus->freeing = true;
    if (bus->sub.ac) redisAsyncFree(bus->sub.ac);
    if (bus->cmd.ac) redisAsyncFree(bus->cmd.ac);
    if (bus->sub.retry) event_free(bus->sub.retry);
    if (bus->cmd.retry) event_free(bus->cmd.retry);
    if (bus->tick) event_free(bus->tick);
    free(bus->prefix);
    free(bus->probe_channel);
    free(bus);
}

bool bus_is_up(const struct bus *bus) {
    return bus && bus->state == BUS_UP;
}

static int channel_command(struct bus *bus, const char *verb, const char *channel) {
    if (bus->state != BUS_UP || !bus->sub.ac) return -1;
    return redisAsyncCommand(bus->sub.ac, sub_cb, bus, "%s %s%s", verb, bus->prefix, channel) ==
                   REDIS_OK
               ? 0
               : -1;
}

int bus_subscribe(struct bus *bus, const char *channel) {
    return channel_command(bus, "SUBSCRIBE", channel);
}

int bus_unsubscribe(struct bus *bus, const char *channel) {
    return channel_command(bus, "UNSUBSCRIBE", channel);
}

void bus_status(const struct bus *bus, struct bus_status *out) {
    out->state = bus->state;
    out->reconnects = bus->reconnects;
    out->outages = bus->outages;
    out->down_since = bus->down_since;
    out->last_outage_seconds = bus->last_outage_seconds;
    out->probe_lag_ms = bus->probe_lag_ms;
    out->command_connected = bus->cmd.ready;
    out->last_error = bus->last_error;
}

const char *bus_state_name(enum bus_state state) {
    switch (state) {
        case BUS_CONNECTING: return "connecting";
        case BUS_UP: return "up";
        case BUS_DOWN: return "down";
    }
    return "unknown";
}

int bus_command(struct bus *bus, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                const size_t *argvlen) {
    if (!bus->cmd.ready || !bus->cmd.ac) return -1;
    return redisAsyncCommandArgv(bus->cmd.ac, fn, privdata, argc, argv, argvlen) == REDIS_OK ? 0
                                                                                             : -1;
}
