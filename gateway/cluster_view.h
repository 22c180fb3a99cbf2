/* cluster_view.h -- every live gateway worker's figures, kept in Redis.
 *
 * Writing costs one HSET (and one PEXPIRE of the hash) per worker per
 * --stats-interval: each worker stores its figures in the hash
 * <prefix>stats:cluster under the field <gateway-id>:<worker>, with its wall
 * clock "updatedAt". The hash is read (HGETALL) only when someone asks for
 * the view, at most once per interval per worker (the read is cached); the
 * reader drops fields not refreshed within the TTL (5 intervals, at least
 * 10 s), so dead workers leave the view. The cluster's cost is O(workers). */
#ifndef HERALD_CLUSTER_VIEW_H
#define HERALD_CLUSTER_VIEW_H

#include <jansson.h>

struct worker;

/* workers: an array of every live worker's figures (borrowed for the call;
 * NULL when Redis could not be read and nothing is cached); tag: the value
 * given to cluster_view_get (borrowed for the call). */
typedef void (*cluster_view_cb)(void *owner, json_t *tag, const json_t *workers);

/* Starts the periodic write (needs w->base and w->bus). Returns 0 or -1. */
int cluster_view_start(struct worker *w);
void cluster_view_stop(struct worker *w);

/* Calls cb(owner, tag, workers): at once when the cached view is younger
 * than one interval, else once a read from Redis is answered or failed, or
 * after one second with the last view (a stalled Redis).
 * Requests waiting for one read are answered in the order they were made.
 * tag may be NULL; the view holds a reference until the call. Returns 0, or
 * -1 (cb not called) when out of memory. */
int cluster_view_get(struct worker *w, cluster_view_cb cb, void *owner, json_t *tag);

/* Forgets every request of owner still waiting for a read (owner is going
 * away); their callbacks are never called. */
void cluster_view_cancel(struct worker *w, void *owner);

#endif
