/* subs.h -- the worker's channel -> local subscribers index.
 *
 * A channel lives here while any local connection is subscribed to it, and a
 * little longer while a Redis SUBSCRIBE or UNSUBSCRIBE for it is in flight:
 * at most one such command per channel is outstanding, so replies can never
 * be mistaken for one another (and hiredis' per-channel callback table stays
 * consistent). The index asks the bus to SUBSCRIBE when a channel's first
 * subscriber arrives and to UNSUBSCRIBE when its last one leaves; it tells
 * connections "subscribed" once Redis has confirmed, so an event published
 * after a client saw "subscribed" is never missed. */
#ifndef HERALD_SUBS_H
#define HERALD_SUBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "shared_frame.h"

struct conn;
struct bus;
struct subs;

/* One connection's membership in one channel. */
struct sub {
    struct conn *conn;
    struct channel *channel;
    struct sub *channel_prev, *channel_next; /* the channel's subscribers */
    struct sub *conn_next;                   /* the connection's subscriptions */
    /* While Redis has not confirmed: one entry per subscribe request still
     * owed a "subscribed" reply, holding its id (JSON null: none); NULL once
     * confirmed. */
    json_t *pending_ids;
};

enum channel_state {
    CHANNEL_IDLE,          /* wanted, nothing in flight (Redis down) */
    CHANNEL_SUBSCRIBING,   /* SUBSCRIBE in flight */
    CHANNEL_ACTIVE,        /* confirmed by Redis */
    CHANNEL_UNSUBSCRIBING, /* UNSUBSCRIBE in flight */
};

struct channel {
    char *name;
    struct sub *subscribers;
    unsigned count;
    enum channel_state state;
    struct channel *hash_next;
    struct shared_frame *batch; /* events queued since the last flush, or NULL */
    unsigned batch_events;
    struct channel *dirty_next; /* channels with a batch */
};

struct subs *subs_new(struct bus *bus);
void subs_free(struct subs *subs);

enum subs_add_result {
    SUBS_ADDED_CONFIRMED, /* reply "subscribed" now */
    SUBS_ADDED_PENDING,   /* the reply follows on confirmation (id kept) */
    SUBS_ALREADY,         /* already subscribed and confirmed: reply "subscribed" now */
    SUBS_ALREADY_PENDING, /* a repeat before confirmation: its reply follows with the first */
    SUBS_NO_MEMORY,
};

/* True when the subscription list head holds channel. */
bool subs_contains(const struct sub *head, const char *channel);

/* Subscribes conn to channel; *head is the connection's subscription list. */
enum subs_add_result subs_add(struct subs *subs, struct conn *conn, struct sub **head,
                              const char *channel, const json_t *id);

/* Removes conn from channel; returns true when it was subscribed. Replies
 * still owed for it ("subscribed") are sent first, so every request gets its
 * answer, in order. */
bool subs_remove(struct subs *subs, struct sub **head, const char *channel);

/* Removes every subscription in *head (a closing connection). */
void subs_remove_all(struct subs *subs, struct sub **head);

/* Bus notifications. */
void subs_on_confirmed(struct subs *subs, const char *channel);
void subs_on_unsubscribed(struct subs *subs, const char *channel);
/* Redis went away: everything in flight is void; pending replies are sent now
 * (a gap follows after the resubscribe). */
void subs_on_bus_down(struct subs *subs);
/* Redis is back: (re)subscribe every wanted channel; returns how many. */
size_t subs_on_bus_up(struct subs *subs);

/* Adds one event message (text, copied into the channel's batch) for channel.
 * Returns 1 when it was the first event queued since the last flush (the
 * caller then schedules subs_flush), 0 when queued after others,
 * SUBS_QUEUE_NO_SUBSCRIBERS (nothing kept) or SUBS_QUEUE_NO_MEMORY. */
#define SUBS_QUEUE_NO_SUBSCRIBERS (-1)
#define SUBS_QUEUE_NO_MEMORY      (-2)
int subs_queue_event(struct subs *subs, const char *channel, const char *text, size_t len);

/* True when events are queued and all of them are for channel (so one more
 * for it can join the batch without reordering anything). */
bool subs_batch_is_for(const struct subs *subs, const char *channel);

/* Queues every pending batch to every confirmed subscriber of its channel;
 * returns the deliveries (events x recipients). */
size_t subs_flush(struct subs *subs);

/* The channel entry, or NULL. */
struct channel *subs_find(struct subs *subs, const char *channel);

size_t subs_channel_count(const struct subs *subs);
size_t subs_subscription_count(const struct subs *subs);

#endif
