/* stats.c -- this worker's counters and their exports: the JSON figures of
 * an admin's "stats" reply (with the cluster view from cluster_view.c) and
 * the Prometheus text of /metrics. */
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "protocol.h"
#include "subs.h"
#include "worker.h"

json_t *stats_worker_json(struct worker *w) {
    struct bus_status bs;
    bus_status(w->bus, &bs);
    double now = clock_now();
    const struct worker_stats *s = &w->stats;
    json_t *redis =
        json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:b, s:s}", "state", bus_state_name(bs.state),
                  "reconnects", (json_int_t)bs.reconnects, "outages", (json_int_t)bs.outages,
                  "downSeconds", bs.down_since > 0 ? now - bs.down_since : 0.0, "lastOutageSeconds",
                  bs.last_outage_seconds, "probeLagMs", bs.probe_lag_ms, "commandConnected",
                  bs.command_connected, "lastError", bs.last_error);
    const struct subs_counters *h = subs_counters(w->subs);
    json_t *history =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "reads", (json_int_t)h->history_reads,
                  "windowAnswers", (json_int_t)h->window_answers, "recoveries",
                  (json_int_t)h->recoveries, "recoveriesFailed", (json_int_t)h->recoveries_failed,
                  "eventsRecovered", (json_int_t)h->events_recovered, "waitersServed",
                  (json_int_t)h->waiters_served, "waitersPerRead",
                  h->history_reads ? (double)h->waiters_served / (double)h->history_reads : 0.0);
    return json_pack(
        "{s:s, s:i, s:i, s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:o, s:o}",
        "gatewayId", w->gateway_id, "worker", w->index, "pid", (int)getpid(), "host", w->host,
        "uptimeSeconds", now - w->started, "connections", (json_int_t)w->conn_count,
        "subscriptions", (json_int_t)subs_subscription_count(w->subs), "channels",
        (json_int_t)subs_channel_count(w->subs), "messagesIn", (json_int_t)s->messages_in,
        "messagesOut", (json_int_t)s->messages_out, "bytesIn", (json_int_t)s->bytes_in, "bytesOut",
        (json_int_t)s->bytes_out, "eventsReceived", (json_int_t)s->events_received,
        "eventsDelivered", (json_int_t)s->events_delivered, "eventsDropped",
        (json_int_t)s->events_dropped, "slowConsumerCloses", (json_int_t)s->slow_consumer_closes,
        "authFailures", (json_int_t)s->auth_failures, "connectionsTotal",
        (json_int_t)s->connections_total, "redis", redis, "history", history);
}

/* Upper bounds (seconds) of the delivery-latency histogram; the last is +Inf. */
static const double latency_bounds[STATS_LATENCY_BUCKETS - 1] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,
};

void stats_observe_latency(struct worker *w, double seconds) {
    size_t i = 0;
    while (i < STATS_LATENCY_BUCKETS - 1 && seconds > latency_bounds[i]) i++;
    w->stats.latency_buckets[i]++;
    w->stats.latency_count++;
    w->stats.latency_sum += seconds;
}

char *stats_metrics_text(struct worker *w, size_t *len) {
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out) return NULL;
    const struct worker_stats *s = &w->stats;
    struct bus_status bs;
    bus_status(w->bus, &bs);
    char labels[256];
    snprintf(labels, sizeof labels, "gateway=\"%s\",worker=\"%d\"", w->gateway_id, w->index);
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"herald_connections", "gauge", "Open connections (WebSocket and SSE streams)"},
        {"herald_subscriptions", "gauge", "Channel subscriptions of open connections"},
        {"herald_channels", "gauge", "Channels with local subscribers"},
        {"herald_messages_in_total", "counter", "Client messages received"},
        {"herald_messages_out_total", "counter", "Messages queued to clients, events included"},
        {"herald_bytes_in_total", "counter", "WebSocket bytes received"},
        {"herald_bytes_out_total", "counter", "WebSocket bytes queued"},
        {"herald_events_received_total", "counter", "Events received from Redis"},
        {"herald_events_delivered_total", "counter", "Event frames queued to clients"},
        {"herald_events_dropped_total", "counter", "Invalid or oversized events dropped"},
        {"herald_slow_consumer_closes_total", "counter", "Connections closed 4009"},
        {"herald_rate_limited_total", "counter", "Client messages refused by the rate limit"},
        {"herald_rate_limit_closes_total", "counter", "Connections closed 4008"},
        {"herald_idle_closes_total", "counter", "Connections closed for idleness"},
        {"herald_write_timeouts_total", "counter", "Connections dropped for stalled writes"},
        {"herald_handshake_failures_total", "counter", "Upgrades refused with an HTTP error"},
        {"herald_redis_reconnects_total", "counter", "Redis subscriber reconnects after outages"},
        {"herald_redis_up", "gauge", "1 while the Redis subscriber is up"},
        {"herald_history_reads_total", "counter", "History read scripts sent to Redis"},
        {"herald_recoveries_total", "counter", "Subscriptions recovered completely from history"},
        {"herald_recoveries_failed_total", "counter", "Recoveries impossible (gap sent)"},
        {"herald_events_recovered_total", "counter", "Events delivered from history"},
        {"herald_history_waiters_total", "counter",
         "Subscriptions answered by history reads (over reads: the herd coalescing ratio)"},
        {"herald_sse_streams_total", "counter", "Server-sent event streams opened (GET /events)"},
        {"herald_api_publish_requests_total", "counter", "POST /api/publish requests answered 200"},
        {"herald_api_publish_events_total", "counter", "Events published through /api/publish"},
        {"herald_api_publish_failures_total", "counter",
         "POST /api/publish requests answered with an error"},
    };
    const struct subs_counters *h = subs_counters(w->subs);
    const double values[] = {
        w->conn_count,
        (double)subs_subscription_count(w->subs),
        (double)subs_channel_count(w->subs),
        (double)s->messages_in,
        (double)s->messages_out,
        (double)s->bytes_in,
        (double)s->bytes_out,
        (double)s->events_received,
        (double)s->events_delivered,
        (double)s->events_dropped,
        (double)s->slow_consumer_closes,
        (double)s->rate_limited,
        (double)s->rate_limit_closes,
        (double)s->idle_closes,
        (double)s->write_timeouts,
        (double)s->handshake_failures,
        (double)bs.reconnects,
        bs.state == BUS_UP ? 1 : 0,
        (double)h->history_reads,
        (double)h->recoveries,
        (double)h->recoveries_failed,
        (double)h->events_recovered,
        (double)h->waiters_served,
        (double)s->sse_streams_total,
        (double)s->api_requests,
        (double)s->api_events,
        (double)s->api_failures,
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %.17g\n", families[i].name,
                families[i].help, families[i].name, families[i].type, families[i].name, labels,
                values[i]);

    fprintf(out, "# HELP herald_auth_failures_total Tokens refused, by reason\n"
                 "# TYPE herald_auth_failures_total counter\n");
    for (int r = 1; r <= -JWT_AUTH_NO_MEMORY; r++)
        fprintf(out, "herald_auth_failures_total{%s,reason=\"%s\"} %llu\n", labels,
                jwt_auth_result_name((enum jwt_auth_result) - r),
                (unsigned long long)s->auth_failures_by_reason[r]);

    fprintf(out, "# HELP herald_delivery_latency_seconds From an event's arrival from Redis "
                 "until it is queued to every local subscriber\n"
                 "# TYPE herald_delivery_latency_seconds histogram\n");
    unsigned long long cumulative = 0;
    for (size_t i = 0; i < STATS_LATENCY_BUCKETS; i++) {
        cumulative += s->latency_buckets[i];
        if (i < STATS_LATENCY_BUCKETS - 1)
            fprintf(out, "herald_delivery_latency_seconds_bucket{%s,le=\"%g\"} %llu\n", labels,
                    latency_bounds[i], cumulative);
        else
            fprintf(out, "herald_delivery_latency_seconds_bucket{%s,le=\"+Inf\"} %llu\n", labels,
                    cumulative);
    }
    fprintf(out, "herald_delivery_latency_seconds_sum{%s} %.9f\n", labels, s->latency_sum);
    fprintf(out, "herald_delivery_latency_seconds_count{%s} %llu\n", labels,
            (unsigned long long)s->latency_count);
    fprintf(out,
            "# HELP herald_redis_probe_lag_seconds Last publish-to-receive lag of the probe\n"
            "# TYPE herald_redis_probe_lag_seconds gauge\n"
            "herald_redis_probe_lag_seconds{%s} %.6f\n",
            labels, bs.probe_lag_ms < 0 ? 0 : bs.probe_lag_ms / 1000.0);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    *len = size;
    return text;
}

static const char *const totalled[] = {
    "connections",    "subscriptions",   "messagesIn",    "messagesOut",
    "eventsReceived", "eventsDelivered", "eventsDropped", "slowConsumerCloses",
};

/* {"workers":[...], "gateways":N, "totals":{...}} from the cached view, with
 * this worker's entry replaced by mine. */
static json_t *cluster_json(struct worker *w, const json_t *view, json_t *mine) {
    json_t *workers = json_array(), *gateway_ids = json_object(), *totals = json_object();
    if (!workers || !gateway_ids || !totals) goto fail;
    json_array_append(workers, mine);
    size_t i;
    json_t *entry;
    if (view) {
        json_array_foreach(view, i, entry) {
            const char *gid = json_string_value(json_object_get(entry, "gatewayId"));
            json_t *idx = json_object_get(entry, "worker");
            if (gid && strcmp(gid, w->gateway_id) == 0 && json_integer_value(idx) == w->index)
                continue;
            json_array_append(workers, entry);
        }
    }
    json_array_foreach(workers, i, entry) {
        const char *gid = json_string_value(json_object_get(entry, "gatewayId"));
        if (gid) json_object_set_new(gateway_ids, gid, json_true());
        for (size_t k = 0; k < sizeof totalled / sizeof totalled[0]; k++) {
            json_int_t sum = json_integer_value(json_object_get(totals, totalled[k])) +
                             json_integer_value(json_object_get(entry, totalled[k]));
            json_object_set_new(totals, totalled[k], json_integer(sum));
        }
    }
    json_object_set_new(totals, "workers", json_integer((json_int_t)json_array_size(workers)));
    json_t *out = json_pack("{s:o, s:I, s:o}", "workers", workers, "gateways",
                            (json_int_t)json_object_size(gateway_ids), "totals", totals);
    json_decref(gateway_ids);
    return out;
fail:
    json_decref(workers);
    json_decref(gateway_ids);
    json_decref(totals);
    return NULL;
}

char *stats_reply(struct worker *w, const json_t *workers, const json_t *id, size_t *len) {
    json_t *mine = stats_worker_json(w);
    if (!mine) return NULL;
    json_t *msg = json_pack("{s:s, s:O, s:o}", "type", "stats", "worker", mine, "cluster",
                            cluster_json(w, workers, mine));
    json_decref(mine);
    return proto_finish(msg, id, len);
}
