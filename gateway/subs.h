/* subs.h -- the worker's channel -> local subscribers index, and the fan-out
 * of events to them.
 *
 * A channel lives here while any local session is subscribed to it, and a
 * little longer while a Redis SUBSCRIBE or UNSUBSCRIBE for it is in flight:
 * at most one such command per channel is outstanding, so replies can never
 * be mistaken for one another. The index asks the bus to SUBSCRIBE when a
 * channel's first subscriber arrives and to UNSUBSCRIBE when its last one
 * leaves; it tells sessions a subscription is live once Redis has confirmed,
 * so an event published after a client saw "subscribed" is never missed.
 *
 * Fan-out and its ordering rule live here and nowhere else. An event is
 * validated once and its "event" message is written once, in place, as a
 * WebSocket frame in its channel's batch; every recipient then shares the
 * batch's bytes. Only a run of events of one channel is batched: an event of
 * another channel, a confirmation, a failure and a loss of Redis each deliver
 * what is queued first, so every client sees events in publish order and
 * never an event of a channel before its "subscribed".
 *
 * History (HISTORY in README.md): a subscription that asks to recover, a new
 * channel (whose position the "subscribed" reply reports) and every channel
 * with history after Redis came back wait for one read of the channel's
 * stream. One read per channel serves every subscription waiting for it;
 * live events that arrive meanwhile are kept and merged by offset, so the
 * seam has no gap and no duplicate. */
#ifndef HERALD_SUBS_H
#define HERALD_SUBS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "history.h"
#include "shared_frame.h"

struct session;
struct bus;
struct subs;

struct waiter;
struct buffered;
struct history_read;
struct recent;
struct evbuffer;

/* One session's membership in one channel. */
struct sub {
    struct session *session;
    struct channel *channel;
    struct sub *channel_prev, *channel_next; /* the channel's subscribers */
    struct sub *conn_next;                   /* the session's subscriptions */
    struct waiter *waiter;                   /* waiting for a history read, or NULL */
    bool pending;                            /* waiting for Redis: gets no events yet */
    bool sse;                                /* its session is a server-sent event stream */
    bool gap_owed;                           /* Redis came back: a "gap" is due for it */
    /* Its channel's position when it went live: live events up to this
     * offset are not its own (already delivered from history, or before the
     * position its "subscribed" reported; a read can run ahead of the live
     * stream). The first live event past it ends the skip; "" none. */
    char skip_until[HISTORY_OFFSET_MAX + 1];
};

/* What a subscribe asks to recover: events after offset ("" or NULL: from the
 * beginning of the history) of epoch (NULL: none known). */
struct subs_since {
    const char *offset;
    const char *epoch;
};

/* Handed to session_on_subscribed when a subscription goes live. */
struct subs_ready {
    const char *offset;     /* the channel's newest offset, NULL when none */
    const char *epoch;      /* the channel's history epoch, NULL when it has none */
    int recovered;          /* 1 recovered, 0 not (a gap follows), -1 not asked */
    struct evbuffer *after; /* frames that follow the reply (taken over), or NULL */
};

/* History and recovery counters of one worker. */
struct subs_counters {
    unsigned long long history_reads;     /* read scripts sent to Redis */
    unsigned long long recoveries;        /* subscriptions recovered completely */
    unsigned long long recoveries_failed; /* recovery impossible: gap */
    unsigned long long events_recovered;  /* events delivered from history */
    unsigned long long waiters_served;    /* subscriptions answered by reads */
    unsigned long long window_answers;    /* local reads: the recent window answered, not Redis */
};

/* One event of a channel's batch in server-sent event form. */
struct subs_sse_event {
    size_t start, len;                   /* its "data:" lines in the batch's data */
    char offset[HISTORY_OFFSET_MAX + 1]; /* "" for an event without history */
    char epoch[HISTORY_EPOCH_MAX + 1];
};

/* A channel's batch for its SSE subscribers, built next to the WebSocket one
 * (only while the channel has such subscribers): each event's "data:" lines
 * once, shared by every stream, which adds only its own "id:" line. */
struct subs_sse_batch {
    const char *channel;       /* the channel's name */
    struct shared_frame *data; /* every event's "data: ...\n" lines, in order */
    struct subs_sse_event *events;
    unsigned count, capacity;
};

enum channel_state {
    CHANNEL_IDLE,          /* wanted, nothing in flight (Redis down) */
    CHANNEL_SUBSCRIBING,   /* SUBSCRIBE in flight */
    CHANNEL_ACTIVE,        /* confirmed by Redis */
    CHANNEL_UNSUBSCRIBING, /* UNSUBSCRIBE in flight */
};

struct channel {
    char *name;
    size_t name_len;
    struct sub *subscribers;
    unsigned count;
    enum channel_state state;
    struct channel *hash_next;
    struct shared_frame *batch; /* events queued since the last flush, or NULL */
    unsigned batch_events;
    unsigned sse_count;        /* subscribers that are SSE streams */
    struct subs_sse_batch sse; /* the batch in SSE form, while sse_count > 0 */
    /* History: the epoch and newest offset this worker knows (from reads and
     * live events); positioned once a read since the last SUBSCRIBE told them. */
    char epoch[HISTORY_EPOCH_MAX + 1];
    char offset[HISTORY_OFFSET_MAX + 1];
    bool positioned;
    bool
        history_absent; /* the last read found no history, and no event with an offset came since */
    bool after_outage;  /* resubscribing after Redis came back */
    bool lost_alone;    /* resubscribing after this channel alone lost Redis (cluster) */
    struct waiter *waiters;                     /* subscriptions waiting for history */
    struct history_read *read;                  /* the read in flight, or NULL */
    char read_since[HISTORY_OFFSET_MAX + 1];    /* its since: "" position only, "-" all */
    bool read_wanted;                           /* a read waits for the command link */
    struct buffered *buffered, **buffered_tail; /* live events during a read */
    unsigned buffered_count;
    bool buffer_overflow;
    /* The last read's entries, kept for a few seconds with the live events
     * after them: a reconnect storm spread over a second is answered from
     * here instead of one read per arrival. NULL when none. */
    struct recent *recent;
    unsigned skippers;                         /* subscribers with a skip_until */
    char batch_offset[HISTORY_OFFSET_MAX + 1]; /* the batch's one event, while skippers */
};

/* What the index reports to its owner (the worker). */
struct subs_hooks {
    /* One event's delivery latency (arrival from Redis to queued everywhere). */
    void (*latency)(void *arg, double seconds);
    /* An event refused (reason: "bad_json", "too_big", "no_memory"). */
    void (*dropped)(void *arg, const char *channel, const char *reason, size_t len);
    /* Deliveries (events x recipients) made by one flush. */
    void (*delivered)(void *arg, size_t deliveries);
    void *arg;
};

struct subs_limits {
    size_t max_channels;   /* distinct channels per worker */
    size_t max_event_size; /* largest event payload, bytes */
    size_t recovery_limit; /* most events one recovery may return */
    const char *prefix;    /* Redis channel prefix (for the history keys) */
};

/* The index delivers batches from an event on base. Returns NULL when out of
 * memory. */
struct subs *subs_new(struct bus *bus, struct event_base *base, const struct subs_limits *limits,
                      const struct subs_hooks *hooks);
void subs_free(struct subs *subs);

enum subs_add_result {
    SUBS_ADDED_CONFIRMED,   /* live now: reply "subscribed" now */
    SUBS_ADDED_PENDING,     /* session_on_subscribed follows on confirmation */
    SUBS_ALREADY,           /* already subscribed and live: reply "subscribed" now */
    SUBS_ALREADY_PENDING,   /* a repeat before confirmation: answered with the first */
    SUBS_TOO_MANY_CHANNELS, /* the worker's distinct-channel cap is reached */
    SUBS_NO_MEMORY,
};

/* True when the subscription list head holds channel. */
bool subs_contains(const struct sub *head, const char *channel);

/* Subscribes session to channel, recovering from since when not NULL; *head
 * is the session's subscription list; *out is the subscription (when added or
 * already there). sse: the session is a server-sent event stream (it gets
 * events through session_deliver_sse). */
enum subs_add_result subs_add(struct subs *subs, struct session *session, bool sse,
                              struct sub **head, const char *channel,
                              const struct subs_since *since, struct sub **out);

/* The position of a live subscription's channel, for its "subscribed" reply. */
void subs_position(const struct sub *sub, struct subs_ready *out);

/* Removes the session from channel; returns true when it was subscribed.
 * Replies still owed for it ("subscribed") are sent first, so every request
 * gets its answer, in order. */
bool subs_remove(struct subs *subs, struct sub **head, const char *channel);

/* Removes every subscription in *head (a closing session). */
void subs_remove_all(struct subs *subs, struct sub **head);

/* Bus notifications. */
void subs_on_confirmed(struct subs *subs, const char *channel);
/* Redis refused to subscribe channel (reason: its error reply): every
 * subscriber of the channel is told and dropped; nothing else changes. */
void subs_on_refused(struct subs *subs, const char *channel, const char *reason);
void subs_on_unsubscribed(struct subs *subs, const char *channel);
/* Redis went away: everything in flight is void; pending replies are sent now
 * (a gap follows after the resubscribe). */
void subs_on_bus_down(struct subs *subs);
/* Redis Cluster: channel alone lost its subscription (its node failed over, its
 * slot moved) and the bus is subscribing it again: like subs_on_bus_down for
 * this one channel, and once it is confirmed its subscribers recover from
 * history, or get a gap when it has none. */
void subs_on_channel_lost(struct subs *subs, const char *channel);
/* Redis is back: (re)subscribe every wanted channel; returns how many.
 * same_redis: the outage ended on the Redis process it began on (no restart),
 * so a channel that had no history when last read recovers from the first
 * entry of the history it has now, like a channel lost alone. */
size_t subs_on_bus_up(struct subs *subs, bool same_redis);
/* The command connection is (again) up: history reads that waited go out. */
void subs_on_command_up(struct subs *subs);

/* An event from Redis for channel (payload borrowed), arrived at monotonic
 * time arrived: validated, framed into the channel's batch and delivered
 * within this loop iteration. */
void subs_publish(struct subs *subs, const char *channel, const char *payload, size_t len,
                  double arrived);

/* Delivers every queued event now; returns the deliveries (events x
 * recipients) since the last call. */
size_t subs_flush(struct subs *subs);

/* The channel entry, or NULL. */
struct channel *subs_find(struct subs *subs, const char *channel);

size_t subs_channel_count(const struct subs *subs);
size_t subs_subscription_count(const struct subs *subs);
const struct subs_counters *subs_counters(const struct subs *subs);

#endif
