/* system_channels.h -- what a worker publishes for admins on the system
 * channels: state changes on system:health, its figures on system:metrics
 * every SYSTEM_METRICS_PERIOD seconds. */
#ifndef HERALD_SYSTEM_CHANNELS_H
#define HERALD_SYSTEM_CHANNELS_H

#include <jansson.h>

struct worker;

#define SYSTEM_METRICS_PERIOD 10 /* seconds between system:metrics messages */

/* Starts the system:metrics timer (needs w->base and w->bus). Returns 0 or -1. */
int system_channels_start(struct worker *w);
void system_channels_stop(struct worker *w);

/* Publishes {"event":event, ...this worker's identity..., extra fields} on
 * system:health (extra may be NULL; it is consumed). While the command
 * connection is down the message waits in a small backlog (the oldest are
 * dropped past HEALTH_BACKLOG_MAX) with its original timestamp. */
void system_channels_publish_health(struct worker *w, const char *event, json_t *extra);

/* Publishes the health backlog (the command connection is back). */
void system_channels_flush_health(struct worker *w);

#endif
