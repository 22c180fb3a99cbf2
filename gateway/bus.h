/* bus.h -- the worker's link to Redis pub/sub (two resp_links on libevent).
 *
 * Two connections: a subscriber, and a command connection for publishing the
 * liveness probe and writing the stats hash. The bus knows Redis channels and
 * payloads, never sockets of clients: it reports through callbacks.
 *
 * Liveness: every second the bus PUBLISHes a probe on a channel of its own
 * through the command connection; a probe not seen back on the subscriber within a few seconds,
 * while nothing else arrives on it either, means the subscriber is dead (reconnect). The probe also
 * measures publish-to-receive lag. Lost connections are retried with exponential backoff and full
 * jitter. A SUBSCRIBE that Redis refuses (an error reply) is reported for its
 * channel (on_refused); the connection and every other channel stay up.
 * bus_command callbacks get a NULL redisAsyncContext and a NULL reply when the
 * command connection was lost before the reply.
 *
 * On a Redis Cluster (bus_new_cluster; bus_cluster.h) the same calls work per
 * slot: channels are SSUBSCRIBEd on their slot's master, commands go to the
 * master owning their key, and a channel that loses its subscription alone
 * (its node failed over, its slot moved) is reported with on_lost, then
 * confirmed again with on_subscribed once it is subscribed on the new owner.
 * The bus never reports on_down there: losses are per channel. */
#ifndef HERALD_BUS_H
#define HERALD_BUS_H

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_url.h"

struct bus;

struct bus_callbacks {
    /* An event on a Herald channel (prefix stripped), received at monotonic
     * time arrived (the clock read that notes the subscriber alive, so the
     * latency bookkeeping costs no read of its own). payload is borrowed. */
    void (*on_message)(void *arg, const char *channel, const char *payload, size_t len,
                       double arrived);
    /* Redis confirmed SUBSCRIBE / UNSUBSCRIBE of channel. */
    void (*on_subscribed)(void *arg, const char *channel);
    /* Redis answered SUBSCRIBE of channel with an error (e.g. NOPERM). */
    void (*on_refused)(void *arg, const char *channel, const char *reason);
    void (*on_unsubscribed)(void *arg, const char *channel);
    /* The subscriber is connected (after a start or an outage) / was lost.
     * same_redis: after an outage, the subscriber reached the very Redis
     * process it lost (INFO's run_id unchanged): Redis did not restart, so
     * what it held then it holds now. */
    void (*on_up)(void *arg, bool after_outage, bool same_redis);
    void (*on_down)(void *arg);
    /* The command connection is (again) ready for bus_command. */
    void (*on_command_up)(void *arg);
    /* Cluster only: channel's confirmed subscription was lost; the bus is
     * subscribing it again (on_subscribed follows). */
    void (*on_lost)(void *arg, const char *channel);
    void *arg;
};

enum bus_state { BUS_CONNECTING, BUS_UP, BUS_DOWN };

struct bus_status {
    enum bus_state state;
    uint64_t reconnects; /* successful connects after an outage */
    uint64_t outages;    /* times the subscriber was lost */
    double down_since;   /* monotonic seconds, 0 while up */
    double last_outage_seconds;
    double probe_lag_ms; /* last measured publish-to-receive lag, -1 unknown */
    bool command_connected;
    const char *last_error; /* borrowed; "" when none since the last success */
};

/* Starts connecting at once; never fails for an unreachable Redis (it retries).
 * prefix is prepended to every channel; probe_id names the probe channel.
 * Returns NULL only when out of memory. */
struct bus *bus_new(struct event_base *base, const struct redis_url *url, const char *prefix,
                    const char *probe_id, const struct bus_callbacks *callbacks);
/* The same on a Redis Cluster reached through seeds (borrowed; it must outlive
 * the bus). on_up(false) comes once the slot map was first read. */
struct bus *bus_new_cluster(struct event_base *base, const struct redis_cluster *seeds,
                            const char *prefix, const char *probe_id,
                            const struct bus_callbacks *callbacks);
/* Under load, the subscriber link(s) read at most once per ms milliseconds
 * (resp_link_set_read_coalesce): events wait up to ms more, and a worker wakes
 * once per batch instead of once per event. 0 reads at once. */
void bus_set_read_coalesce(struct bus *bus, int ms);
bool bus_is_cluster(const struct bus *bus);
void bus_free(struct bus *bus);

bool bus_is_up(const struct bus *bus);
/* 0 when the command was sent, -1 when the subscriber is not up. */
int bus_subscribe(struct bus *bus, const char *channel);
int bus_unsubscribe(struct bus *bus, const char *channel);
void bus_status(const struct bus *bus, struct bus_status *out);
const char *bus_state_name(enum bus_state state);

/* Sends a command on the command connection (argv form, binary-safe); fn may
 * be NULL. Returns 0 when queued, -1 when that connection is down. On a
 * cluster the command goes to the master owning its first key (argv[1], or
 * the first key of an EVAL/EVALSHA), and PUBLISH is sent as SPUBLISH there, so
 * that the gateways' sharded subscribers get it. */
int bus_command(struct bus *bus, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                const size_t *argvlen);

/* bus_command for a command about channel (a history read): on a cluster it
 * goes to the master owning the channel's slot, whatever its keys are named. */
int bus_command_for_channel(struct bus *bus, const char *channel, redisCallbackFn *fn,
                            void *privdata, int argc, const char **argv, const size_t *argvlen);

#endif
