/* cluster_view.c -- the cluster's stats hash in Redis: written by every
 * worker each interval, read on demand and cached. */
#include "cluster_view.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "log.h"
#include "stats.h"
#include "worker.h"

#define STATS_TTL_INTERVALS 5
#define STATS_MIN_TTL       10.0 /* seconds */
#define READ_TIMEOUT        1    /* seconds: a read not answered by then gets the last view */

struct request {
    cluster_view_cb cb;
    void *owner;
    json_t *tag;
    struct request *next;
};

struct cluster_view {
    struct event *timer;
    struct event *read_timeout; /* answers the waiting requests when Redis stalls */
    json_t *workers;            /* the last read (array), NULL before one succeeded */
    double read_at;             /* monotonic seconds of that read */
    bool reading;               /* an HGETALL is in flight */
    struct request *waiting, **waiting_tail;
    char key[256];
    char field[200]; /* this worker's: <gateway-id>:<worker> */
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ttl_seconds(const struct worker *w) {
    double ttl = w->cfg->stats_interval * STATS_TTL_INTERVALS;
    return ttl < STATS_MIN_TTL ? STATS_MIN_TTL : ttl;
}

static void write_figures(struct worker *w) {
    struct cluster_view *v = w->cluster_view;
    json_t *mine = stats_worker_json(w);
    if (mine) json_object_set_new(mine, "updatedAt", json_real(wall_now()));
    char *text = mine ? json_dumps(mine, JSON_COMPACT) : NULL;
    json_decref(mine);
    if (!text) return;
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%lld", (long long)ceil(ttl_seconds(w) * 1000));
    const char *hset[] = {"HSET", v->key, v->field, text};
    size_t hset_lens[] = {4, strlen(v->key), strlen(v->field), strlen(text)};
    /* The whole hash goes once every worker is gone. */
    const char *expire[] = {"PEXPIRE", v->key, ttl};
    size_t expire_lens[] = {7, strlen(v->key), strlen(ttl)};
    if (bus_command(w->bus, NULL, NULL, 4, hset, hset_lens) == 0)
        bus_command(w->bus, NULL, NULL, 3, expire, expire_lens);
    free(text);
}

static void write_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    write_figures(arg);
}

/* Answers every waiting request with the cached view. */
static void answer_waiting(struct cluster_view *v) {
    struct request *r = v->waiting;
    v->waiting = NULL;
    v->waiting_tail = &v->waiting;
    while (r) {
        struct request *next = r->next;
        r->cb(r->owner, r->tag, v->workers);
        json_decref(r->tag);
        free(r);
        r = next;
    }
}

/* Parses an HGETALL reply into the view; fields older than the TTL are
 * collected into stale (argv for HDEL, borrowed from the reply). */
static json_t *parse_view(const redisReply *reply, double oldest, const char **stale,
                          size_t *stale_lens, size_t *stale_count) {
    json_t *view = json_array();
    if (!view) return NULL;
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *field = reply->element[i], *value = reply->element[i + 1];
        if (field->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING) continue;
        json_t *entry = json_loadb(value->str, value->len, 0, NULL);
        double updated = json_number_value(json_object_get(entry, "updatedAt"));
        if (!json_is_object(entry) || updated < oldest) {
            stale[*stale_count] = field->str;
            stale_lens[(*stale_count)++] = field->len;
            json_decref(entry);
            continue;
        }
        json_object_del(entry, "updatedAt");
        json_array_append_new(view, entry);
    }
    return view;
}

static void read_timeout_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    answer_waiting(arg); /* the read stays in flight; its answer refreshes the cache */
}

static void read_cb(redisAsyncContext *ac, void *r, void *privdata) {
    (void)ac;
    struct worker *w = privdata;
    struct cluster_view *v = w->cluster_view;
    if (!v) return; /* the worker is shutting down */
    v->reading = false;
    event_del(v->read_timeout);
    const redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        size_t n = reply->elements / 2 + 2;
        const char **argv = calloc(n, sizeof *argv);
        size_t *lens = calloc(n, sizeof *lens);
        json_t *view = NULL;
        if (argv && lens) {
            size_t stale = 0;
            view = parse_view(reply, wall_now() - ttl_seconds(w), argv + 2, lens + 2, &stale);
            if (stale > 0) { /* dead workers: forget them */
                argv[0] = "HDEL";
                lens[0] = 4;
                argv[1] = v->key;
                lens[1] = strlen(v->key);
                bus_command(w->bus, NULL, NULL, (int)stale + 2, argv, lens);
            }
        }
        free(argv);
        free(lens);
        if (view) {
            json_decref(v->workers);
            v->workers = view;
            v->read_at = clock_now();
        }
    }
    answer_waiting(v);
}

int cluster_view_get(struct worker *w, cluster_view_cb cb, void *owner, json_t *tag) {
    struct cluster_view *v = w->cluster_view;
    if (v->workers && clock_now() - v->read_at < w->cfg->stats_interval && !v->waiting) {
        cb(owner, tag, v->workers);
        return 0;
    }
    struct request *r = calloc(1, sizeof *r);
    if (!r) return -1;
    r->cb = cb;
    r->owner = owner;
    r->tag = json_incref(tag);
    *v->waiting_tail = r;
    v->waiting_tail = &r->next;
    struct timeval timeout = {READ_TIMEOUT, 0};
    if (v->reading) {
        if (!event_pending(v->read_timeout, EV_TIMEOUT, NULL)) event_add(v->read_timeout, &timeout);
        return 0;
    }
    const char *argv[] = {"HGETALL", v->key};
    size_t lens[] = {7, strlen(v->key)};
    if (bus_command(w->bus, read_cb, w, 2, argv, lens) == 0 &&
        event_add(v->read_timeout, &timeout) == 0)
        v->reading = true;
    else
        answer_waiting(v); /* Redis is down: the last view, or none */
    return 0;
}

void cluster_view_cancel(struct worker *w, void *owner) {
    struct cluster_view *v = w->cluster_view;
    if (!v) return;
    struct request **p = &v->waiting;
    v->waiting_tail = &v->waiting;
    while (*p) {
        struct request *r = *p;
        if (r->owner == owner) {
            *p = r->next;
            json_decref(r->tag);
            free(r);
        } else {
            v->waiting_tail = &r->next;
            p = &r->next;
        }
    }
}

int cluster_view_start(struct worker *w) {
    struct cluster_view *v = calloc(1, sizeof *v);
    if (!v) return -1;
    w->cluster_view = v;
    v->waiting_tail = &v->waiting;
    snprintf(v->key, sizeof v->key, "%sstats:cluster", w->cfg->channel_prefix);
    snprintf(v->field, sizeof v->field, "%s:%d", w->gateway_id, w->index);
    v->timer = event_new(w->base, -1, EV_PERSIST, write_tick, w);
    v->read_timeout = evtimer_new(w->base, read_timeout_cb, v);
    if (!v->timer || !v->read_timeout) return -1;
    double d = w->cfg->stats_interval;
    struct timeval tv = {(time_t)d, (suseconds_t)((d - (double)(time_t)d) * 1e6)};
    return event_add(v->timer, &tv);
}

void cluster_view_stop(struct worker *w) {
    struct cluster_view *v = w->cluster_view;
    if (!v) return;
    w->cluster_view = NULL;
    if (v->timer) event_free(v->timer);
    if (v->read_timeout) event_free(v->read_timeout);
    while (v->waiting) {
        struct request *r = v->waiting;
        v->waiting = r->next;
        json_decref(r->tag);
        free(r);
    }
    json_decref(v->workers);
    free(v);
}
