/* stats.h -- the figures an admin's "stats" request reports: this worker's
 * counters and, once the cluster view is known, every live gateway worker's
 * (each worker writes its figures to Redis under a short-lived key and reads
 * the others' back on the same period). */
#ifndef HERALD_STATS_H
#define HERALD_STATS_H

#include <jansson.h>
#include <stddef.h>

struct worker;

/* This worker's figures as a JSON object (new reference), or NULL. */
json_t *stats_worker_json(struct worker *w);

/* The complete "stats" reply (malloc'd text, caller frees), or NULL. */
char *stats_reply(struct worker *w, const json_t *id, size_t *len);

/* Records one event's delivery latency (Redis arrival to queued for every
 * local subscriber) in the histogram. */
void stats_observe_latency(struct worker *w, double seconds);

/* The Prometheus text exposition of this worker's figures (malloc'd, caller
 * frees), or NULL. */
char *stats_metrics_text(struct worker *w, size_t *len);

/* Starts the periodic stats-key refresh and cluster read (needs w->bus). */
int stats_start(struct worker *w);
void stats_stop(struct worker *w);

/* Publishes {"event":event, ...this worker's identity..., extra fields} on
 * system:health (extra may be NULL; it is consumed). While the command
 * connection is down the message waits in a small backlog (the oldest are
 * dropped past HEALTH_BACKLOG_MAX) with its original timestamp. */
void stats_publish_health(struct worker *w, const char *event, json_t *extra);

/* Publishes the health backlog (the command connection is back). */
void stats_flush_health(struct worker *w);

#endif
