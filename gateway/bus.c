/* bus.c -- Redis subscriber and command connections with reconnect and probe.
 *
 * Both connections are resp_links (resp_link.h): hiredis 0.14's async context
 * turns an error reply to SUBSCRIBE (e.g. NOPERM from a Redis ACL narrower than
 * the channel rules) into a dropped connection, so one refused channel would
 * cost every channel of the worker a reconnect. On a resp_link the error is
 * the reply of that one command: the bus reports it for that channel only.
 *
 * The probe channel stays subscribed for the subscriber's whole life; every
 * second the bus PUBLISHes a probe on it through the command connection. A
 * probe not seen back within a few seconds while nothing else arrives either
 * means the subscriber is dead (it is dropped and reconnected). Lost
 * connections are retried with exponential backoff and full jitter; the
 * backoff starts over only after a connection stayed up STABLE_AFTER. */
#include "bus.h"

#include <math.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bus_cluster.h"
#include "clock.h"
#include "log.h"
#include "resp_link.h"

#define BACKOFF_BASE       0.1  /* seconds */
#define BACKOFF_MAX        5.0  /* seconds */
#define PROBE_INTERVAL     1.0  /* seconds between probes */
#define PROBE_TIMEOUT      3.0  /* a probe not back, and nothing else read, by then: dead */
#define PROBE_HARD_TIMEOUT 30.0 /* a probe not back by then: dead, however busy the link */
#define CONNECT_TIMEOUT_MS 5000 /* TCP connect + AUTH + SELECT */
#define STABLE_AFTER       10.0 /* seconds up before the reconnect backoff starts over */
#define MAX_OUTPUT_BYTES   (64u << 20)

struct link {
    struct bus *bus;
    struct resp_link *rl; /* NULL while waiting to retry */
    bool ready;           /* connected and authenticated (subscriber: probe confirmed) */
    unsigned attempts;    /* failed attempts since the last stable connection */
    double up_since;      /* monotonic seconds it became ready */
    double started;       /* when the current connection attempt began */
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
    bool was_up; /* the subscriber has been up before (so a new up ends an outage) */
    /* INFO's run_id of the Redis process the subscriber reached when it last
     * came up, and of the one its current connection reached ("" unknown):
     * the same after an outage means Redis did not restart in between. */
    char run_id[48], connecting_run_id[48];
    uint64_t reconnects, outages;
    double down_since, last_outage_seconds;
    double probe_sent_at;  /* 0: no probe outstanding */
    double sub_last_reply; /* when the subscriber last delivered anything */
    double probe_lag_ms;
    char last_error[128]; /* the last connection or command error, "" when none */
    bool freeing;
    int read_coalesce_ms;        /* the subscriber link's (bus_set_read_coalesce) */
    struct bus_cluster *cluster; /* on a Redis Cluster: every call goes there */
};

/* A command's callback and its argument, until its reply. */
struct pending {
    redisCallbackFn *fn;
    void *privdata;
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
    bool same_redis = after_outage && bus->run_id[0] &&
                      strcmp(bus->run_id, bus->connecting_run_id) == 0;
    memcpy(bus->run_id, bus->connecting_run_id, sizeof bus->run_id);
    double now = clock_now();
    if (after_outage) {
        bus->reconnects++;
        bus->last_outage_seconds = now - bus->down_since;
        log_warn("event=redis_restored outage_seconds=%.3f same_redis=%d",
                 bus->last_outage_seconds, same_redis);
    } else {
        log_info("event=redis_connected host=%s port=%d", log_q(bus->url->host), bus->url->port);
    }
    bus->state = BUS_UP;
    bus->was_up = true;
    bus->last_error[0] = '\0';
    bus->down_since = 0;
    bus->probe_sent_at = 0;
    bus->sub.ready = true;
    bus->sub.up_since = now;
    if (bus->cb.on_up) bus->cb.on_up(bus->cb.arg, after_outage, same_redis);
}

/* Keeps the run_id line of an INFO server reply as the current connection's
 * (left "" when INFO is refused, e.g. by an ACL: then no outage counts as the
 * same Redis). */
static void note_run_id(struct bus *bus, const redisReply *reply) {
    if (!reply || reply->type != REDIS_REPLY_STRING) return;
    const char *p = strstr(reply->str, "run_id:");
    if (!p) return;
    p += strlen("run_id:");
    size_t n = strcspn(p, "\r\n");
    if (n == 0 || n >= sizeof bus->connecting_run_id) return;
    memcpy(bus->connecting_run_id, p, n);
    bus->connecting_run_id[n] = '\0';
}

/* Pub/sub pushes on the subscriber: messages and (un)subscribe notices. */
static void sub_push(struct resp_link *rl, redisReply *reply, void *arg) {
    (void)rl;
    struct bus *bus = ((struct link *)arg)->bus;
    bus->sub_last_reply = clock_now();
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
            bus->cb.on_message(bus->cb.arg, channel, payload->str, payload->len,
                               bus->sub_last_reply);
    } else if (strcmp(kind, "subscribe") == 0) {
        if (is_probe)
            set_up(bus);
        else if (bus->cb.on_subscribed)
            bus->cb.on_subscribed(bus->cb.arg, channel);
    } else if (strcmp(kind, "unsubscribe") == 0 && !is_probe) {
        if (bus->cb.on_unsubscribed) bus->cb.on_unsubscribed(bus->cb.arg, channel);
    }
}

static void link_lost(struct link *l, const char *reason);

/* What a subscriber command's reply is about: the probe's SUBSCRIBE, or a
 * channel's SUBSCRIBE / UNSUBSCRIBE (confirmations come as pushes; only an
 * error reply matters here). */
struct channel_tag {
    struct bus *bus;
    char verb; /* 'I' INFO, 'P' probe, 'S' subscribe, 'U' unsubscribe */
    char channel[];
};

static void channel_reply(struct resp_link *rl, redisReply *reply, void *privdata) {
    (void)rl;
    struct channel_tag *tag = privdata;
    struct bus *bus = tag->bus;
    if (tag->verb == 'I') {
        note_run_id(bus, reply);
        free(tag);
        return;
    }
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        if (tag->verb == 'P') { /* a subscriber that cannot subscribe is no subscriber */
            char reason[128];
            snprintf(reason, sizeof reason, "%s", reply->str);
            free(tag);
            note_error(bus, &bus->sub, "redis_subscriber_failed", reason);
            link_lost(&bus->sub, reason);
            return;
        }
        log_warn("event=redis_refused command=%s channel=%s error=%s",
                 tag->verb == 'S' ? "SUBSCRIBE" : "UNSUBSCRIBE", log_q(tag->channel),
                 log_q(reply->str));
        snprintf(bus->last_error, sizeof bus->last_error, "%s", reply->str);
        if (tag->verb == 'S' && bus->cb.on_refused)
            bus->cb.on_refused(bus->cb.arg, tag->channel, reply->str);
        else if (tag->verb == 'U' && bus->cb.on_unsubscribed)
            bus->cb.on_unsubscribed(bus->cb.arg, tag->channel); /* nothing to wait for */
    }
    free(tag);
}

static struct channel_tag *tag_new(struct bus *bus, char verb, const char *channel) {
    size_t len = strlen(channel);
    struct channel_tag *tag = malloc(sizeof *tag + len + 1);
    if (!tag) return NULL;
    tag->bus = bus;
    tag->verb = verb;
    memcpy(tag->channel, channel, len + 1);
    return tag;
}

/* ---- connection plumbing shared by both links ------------------------------ */

static void link_up(struct resp_link *rl, void *arg) {
    struct link *l = arg;
    struct bus *bus = l->bus;
    if (l == &bus->sub) {
        /* Which Redis process this is (best effort), then the probe channel:
         * its confirmation says the subscriber is up. */
        bus->connecting_run_id[0] = '\0';
        const char *info[] = {"INFO", "server"};
        struct channel_tag *itag = tag_new(bus, 'I', "");
        if (itag && resp_link_command_argv(rl, channel_reply, itag, 2, info, NULL) != 0) free(itag);
        const char *argv[] = {"SUBSCRIBE", bus->probe_channel};
        struct channel_tag *tag = tag_new(bus, 'P', "");
        if (!tag || resp_link_command_argv(rl, channel_reply, tag, 2, argv, NULL) != 0) {
            free(tag);
            link_lost(l, "cannot send SUBSCRIBE");
        }
        return;
    }
    l->ready = true;
    l->up_since = clock_now();
    log_debug("event=redis_command_connected");
    if (bus->cb.on_command_up) bus->cb.on_command_up(bus->cb.arg);
}

/* The link is gone (reason borrowed): report it and retry with backoff. */
static void link_lost(struct link *l, const char *reason) {
    struct bus *bus = l->bus;
    bool was_ready = l->ready;
    if (l->rl) {
        resp_link_free(l->rl); /* pending commands get their NULL reply through drop */
        l->rl = NULL;
    }
    l->ready = false;
    if (bus->freeing) return;
    if (l == &bus->sub) {
        if (bus->state == BUS_UP) {
            bus->outages++;
            bus->down_since = clock_now();
            log_warn("event=redis_lost error=%s", log_q(reason));
            bus->state = BUS_DOWN;
            if (bus->cb.on_down) bus->cb.on_down(bus->cb.arg);
        } else {
            note_error(bus, l, "redis_subscriber_failed", reason);
        }
        bus->state = BUS_DOWN;
    } else if (was_ready) {
        log_warn("event=redis_command_lost error=%s", log_q(reason));
    } else {
        note_error(bus, l, "redis_connect_failed", reason);
    }
    schedule_retry(l);
}

static void link_down(struct resp_link *rl, const char *reason, void *arg) {
    (void)rl;
    link_lost(arg, reason);
}

/* A command still pending when its link goes: its owner gets a NULL reply. */
static void drop_pending(void *privdata) {
    struct pending *p = privdata;
    if (p->fn) p->fn(NULL, NULL, p->privdata);
    free(p);
}

static void drop_channel(void *privdata) {
    free(privdata);
}

static void link_connect(struct link *l) {
    struct bus *bus = l->bus;
    if (l->rl || bus->freeing) return;
    struct resp_link_options opts = {
        .host = bus->url->host,
        .port = bus->url->port,
        .user = bus->url->user,
        .password = bus->url->password,
        .db = l == &bus->cmd ? bus->url->db : 0,
        .connect_timeout_ms = CONNECT_TIMEOUT_MS,
        .max_output_bytes = MAX_OUTPUT_BYTES,
    };
    struct resp_link_callbacks callbacks = {link_up, link_down, l == &bus->sub ? sub_push : NULL,
                                            l == &bus->sub ? drop_channel : drop_pending, l};
    char err[256];
    l->started = clock_now();
    l->rl = resp_link_new(bus->base, &opts, &callbacks, err, sizeof err);
    if (l->rl && l == &bus->sub) resp_link_set_read_coalesce(l->rl, bus->read_coalesce_ms);
    if (!l->rl) {
        note_error(bus, l, "redis_connect_failed", err);
        schedule_retry(l);
    }
}

/* ---- probe ----------------------------------------------------------------- */

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct bus *bus = arg;
    double now = clock_now();
    struct link *links[] = {&bus->sub, &bus->cmd};
    for (int i = 0; i < 2; i++) {
        struct link *l = links[i];
        if (l->ready && l->attempts && now - l->up_since >= STABLE_AFTER) l->attempts = 0;
        /* A Redis that accepts the connection but never answers is as good as none. */
        if (l->rl && !l->ready && now - l->started > CONNECT_TIMEOUT_MS / 1000.0 + 1) {
            note_error(bus, l, "redis_not_answering", "no answer within 5 s of connecting");
            link_lost(l, "no answer");
        }
    }
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
        link_lost(&bus->sub, "probe not answered");
        return;
    }
    char stamp[32];
    snprintf(stamp, sizeof stamp, "%.6f", now);
    const char *argv[] = {"PUBLISH", bus->probe_channel, stamp};
    if (bus_command(bus, NULL, NULL, 3, argv, NULL) == 0) bus->probe_sent_at = atof(stamp);
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

struct bus *bus_new_cluster(struct event_base *base, const struct redis_cluster *seeds,
                            const char *prefix, const char *probe_id,
                            const struct bus_callbacks *callbacks) {
    struct bus *bus = calloc(1, sizeof *bus);
    if (!bus) return NULL;
    bus->cluster = bus_cluster_new(base, seeds, prefix, probe_id, callbacks);
    if (!bus->cluster) {
        free(bus);
        return NULL;
    }
    return bus;
}

void bus_set_read_coalesce(struct bus *bus, int ms) {
    if (bus->cluster) {
        bus_cluster_set_read_coalesce(bus->cluster, ms);
        return;
    }
    bus->read_coalesce_ms = ms;
    if (bus->sub.rl) resp_link_set_read_coalesce(bus->sub.rl, ms);
}

bool bus_is_cluster(const struct bus *bus) {
    return bus && bus->cluster;
}

void bus_free(struct bus *bus) {
    if (!bus) return;
    if (bus->cluster) {
        bus_cluster_free(bus->cluster);
        free(bus);
        return;
    }
    bus->freeing = true;
    if (bus->sub.rl) resp_link_free(bus->sub.rl);
    if (bus->cmd.rl) resp_link_free(bus->cmd.rl);
    if (bus->sub.retry) event_free(bus->sub.retry);
    if (bus->cmd.retry) event_free(bus->cmd.retry);
    if (bus->tick) event_free(bus->tick);
    free(bus->prefix);
    free(bus->probe_channel);
    free(bus);
}

bool bus_is_up(const struct bus *bus) {
    if (bus && bus->cluster) return bus_cluster_is_up(bus->cluster);
    return bus && bus->state == BUS_UP;
}

/* SUBSCRIBE / UNSUBSCRIBE of one channel; the reply's privdata names it. */
static int channel_command(struct bus *bus, const char *verb, const char *channel) {
    if (bus->state != BUS_UP || !bus->sub.rl) return -1;
    size_t len = strlen(channel);
    struct channel_tag *tag = tag_new(bus, verb[0] == 'S' ? 'S' : 'U', channel);
    char *full = malloc(bus->prefix_len + len + 1);
    if (!tag || !full) {
        free(tag);
        free(full);
        return -1;
    }
    memcpy(full, bus->prefix, bus->prefix_len);
    memcpy(full + bus->prefix_len, channel, len + 1);
    const char *argv[] = {verb, full};
    int rc = resp_link_command_argv(bus->sub.rl, channel_reply, tag, 2, argv, NULL);
    free(full);
    if (rc != 0) free(tag);
    return rc == 0 ? 0 : -1;
}

int bus_subscribe(struct bus *bus, const char *channel) {
    if (bus->cluster) return bus_cluster_subscribe(bus->cluster, channel);
    return channel_command(bus, "SUBSCRIBE", channel);
}

int bus_unsubscribe(struct bus *bus, const char *channel) {
    if (bus->cluster) return bus_cluster_unsubscribe(bus->cluster, channel);
    return channel_command(bus, "UNSUBSCRIBE", channel);
}

void bus_status(const struct bus *bus, struct bus_status *out) {
    if (bus->cluster) {
        bus_cluster_status(bus->cluster, out);
        return;
    }
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

static void command_reply(struct resp_link *rl, redisReply *reply, void *privdata) {
    (void)rl;
    struct pending *p = privdata;
    if (p->fn) p->fn(NULL, reply, p->privdata);
    free(p);
}

/* A cluster command goes to its first key's owner; PUBLISH becomes SPUBLISH. */
static int cluster_command(struct bus *bus, redisCallbackFn *fn, void *privdata, int argc,
                           const char **argv, const size_t *argvlen) {
    if (argc < 1) return -1;
    int key = 1;
    if (strcasecmp(argv[0], "EVAL") == 0 || strcasecmp(argv[0], "EVALSHA") == 0)
        key = argc > 3 && strcmp(argv[2], "0") != 0 ? 3 : -1;
    const char *k = key >= 0 && key < argc ? argv[key] : "";
    size_t k_len = key >= 0 && key < argc ? (argvlen ? argvlen[key] : strlen(k)) : 0;
    if (argc == 3 && strcasecmp(argv[0], "PUBLISH") == 0) {
        const char *sharded[] = {"SPUBLISH", argv[1], argv[2]};
        size_t lens[] = {8, argvlen ? argvlen[1] : strlen(argv[1]),
                         argvlen ? argvlen[2] : strlen(argv[2])};
        return bus_cluster_command(bus->cluster, k, k_len, fn, privdata, 3, sharded, lens);
    }
    return bus_cluster_command(bus->cluster, k, k_len, fn, privdata, argc, argv, argvlen);
}

int bus_command_for_channel(struct bus *bus, const char *channel, redisCallbackFn *fn,
                            void *privdata, int argc, const char **argv, const size_t *argvlen) {
    if (!bus->cluster) return bus_command(bus, fn, privdata, argc, argv, argvlen);
    return bus_cluster_command_for_channel(bus->cluster, channel, fn, privdata, argc, argv,
                                           argvlen);
}

int bus_command(struct bus *bus, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                const size_t *argvlen) {
    if (bus->cluster) return cluster_command(bus, fn, privdata, argc, argv, argvlen);
    if (!bus->cmd.ready || !bus->cmd.rl) return -1;
    struct pending *p = malloc(sizeof *p);
    if (!p) return -1;
    p->fn = fn;
    p->privdata = privdata;
    if (resp_link_command_argv(bus->cmd.rl, command_reply, p, argc, argv, argvlen) != 0) {
        free(p);
        return -1;
    }
    return 0;
}
