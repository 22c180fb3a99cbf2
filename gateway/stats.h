/* stats.h -- this worker's counters and their exports: the figures of an
 * admin's "stats" reply and the Prometheus text of /metrics. The cluster's
 * figures come from cluster_view.h, the system channels from
 * system_channels.h. */
#ifndef HERALD_STATS_H
#define HERALD_STATS_H

#include <jansson.h>
#include <stddef.h>

struct worker;

/* This worker's figures as a JSON object (new reference), or NULL. */
json_t *stats_worker_json(struct worker *w);

/* The complete "stats" reply (malloc'd text, caller frees), or NULL: this
 * worker's fresh figures and the cluster view built from workers (every live
 * worker's figures, as cluster_view_get gives them; NULL: this worker only),
 * with this worker's entry replaced by the fresh one. */
char *stats_reply(struct worker *w, const json_t *workers, const json_t *id, size_t *len);

/* Records one event's delivery latency (Redis arrival to queued for every
 * local subscriber) in the histogram. */
void stats_observe_latency(struct worker *w, double seconds);

/* The Prometheus text exposition of this worker's figures (malloc'd, caller
 * frees), or NULL. */
char *stats_metrics_text(struct worker *w, size_t *len);

#endif
