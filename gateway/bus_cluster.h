/* bus_cluster.h -- the bus on a Redis Cluster (sharded pub/sub); bus.c hands
 * every call over to it when the bus was made with bus_new_cluster.
 *
 * The slot map (cluster_slots.h) is read with CLUSTER SLOTS from a seed at
 * start, and again on a MOVED/ASK reply, on the loss of a node's link, on a
 * server `sunsubscribe` (the slot left the node) and every second while any
 * wanted channel or slot has no reachable owner. Each channel is SSUBSCRIBEd on
 * the master owning its slot: one subscriber resp_link per master that has
 * channels, and one command resp_link per master (history reads, stats, the
 * probe). A channel whose subscription is lost (its node's link died, or the
 * server unsubscribed it when its slot moved) is reported with on_lost and
 * SSUBSCRIBEd again on its slot's current owner; on_subscribed follows once
 * that is confirmed. Each node's subscriber has its own probe: every second an
 * SPUBLISH on a probe channel whose slot that node serves, sent through the
 * node's command link, must come back on the subscriber. */
#ifndef HERALD_BUS_CLUSTER_H
#define HERALD_BUS_CLUSTER_H

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>

#include "bus.h"
#include "redis_url.h"

struct bus_cluster;

/* seeds is borrowed and must outlive the bus; NULL when out of memory. */
struct bus_cluster *bus_cluster_new(struct event_base *base, const struct redis_cluster *seeds,
                                    const char *prefix, const char *probe_id,
                                    const struct bus_callbacks *callbacks);
void bus_cluster_free(struct bus_cluster *bc);

void bus_cluster_set_read_coalesce(struct bus_cluster *bc, int ms);
bool bus_cluster_is_up(const struct bus_cluster *bc);
int bus_cluster_subscribe(struct bus_cluster *bc, const char *channel);
int bus_cluster_unsubscribe(struct bus_cluster *bc, const char *channel);
void bus_cluster_status(const struct bus_cluster *bc, struct bus_status *out);

/* A command routed to the owner of the slot of key (key_len bytes); MOVED is
 * followed (the map is refreshed), ASK is followed once with ASKING. */
int bus_cluster_command(struct bus_cluster *bc, const char *key, size_t key_len,
                        redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                        const size_t *argvlen);
/* bus_cluster_command routed by the slot of the channel's Redis name. */
int bus_cluster_command_for_channel(struct bus_cluster *bc, const char *channel,
                                    redisCallbackFn *fn, void *privdata, int argc,
                                    const char **argv, const size_t *argvlen);

#endif
