/* system_channels.c -- PUBLISHes on <prefix>system:health and
 * <prefix>system:metrics over the worker's command connection. */
#include "system_channels.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "protocol.h"
#include "stats.h"
#include "worker.h"

#define HEALTH_BACKLOG_MAX 32

/* Publishes msg (consumed) on channel; returns 0, or -1 when Redis is not
 * reachable (msg is kept in *backlog when one is given). */
static int publish(struct worker *w, const char *channel, json_t *msg, json_t *backlog) {
    char *text = msg ? json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    char full[256];
    int rc = -1;
    if (text) {
        snprintf(full, sizeof full, "%s%s", w->cfg->channel_prefix, channel);
        const char *argv[] = {"PUBLISH", full, text};
        size_t lens[] = {7, strlen(full), strlen(text)};
        rc = bus_command(w->bus, NULL, NULL, 3, argv, lens);
        free(text);
    }
    if (rc != 0 && backlog && msg) {
        if (json_array_size(backlog) >= HEALTH_BACKLOG_MAX) json_array_remove(backlog, 0);
        json_array_append(backlog, msg);
    }
    json_decref(msg);
    return rc;
}

void system_channels_publish_health(struct worker *w, const char *event, json_t *extra) {
    char ts[PROTO_TIMESTAMP_LEN + 1];
    proto_timestamp(ts);
    json_t *msg =
        json_pack("{s:s, s:s, s:i, s:i, s:s, s:s}", "event", event, "gatewayId", w->gateway_id,
                  "worker", w->index, "pid", (int)getpid(), "host", w->host, "timestamp", ts);
    if (msg && extra) json_object_update(msg, extra);
    json_decref(extra);
    if (!w->health_backlog) w->health_backlog = json_array();
    system_channels_flush_health(w); /* keep the order */
    publish(w, "system:health", msg, w->health_backlog);
}

void system_channels_flush_health(struct worker *w) {
    while (json_array_size(w->health_backlog) > 0) {
        json_t *msg = json_incref(json_array_get(w->health_backlog, 0));
        if (publish(w, "system:health", msg, NULL) != 0) return;
        json_array_remove(w->health_backlog, 0);
    }
}

static void metrics_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct worker *w = arg;
    publish(w, "system:metrics", stats_worker_json(w), NULL);
}

int system_channels_start(struct worker *w) {
    w->metrics_timer = event_new(w->base, -1, EV_PERSIST, metrics_tick, w);
    struct timeval period = {SYSTEM_METRICS_PERIOD, 0};
    return w->metrics_timer && event_add(w->metrics_timer, &period) == 0 ? 0 : -1;
}

void system_channels_stop(struct worker *w) {
    if (w->metrics_timer) event_free(w->metrics_timer);
    w->metrics_timer = NULL;
    json_decref(w->health_backlog);
    w->health_backlog = NULL;
}
