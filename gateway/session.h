/* session.h -- what a client's messages mean: the JSON commands (subscribe,
 * unsubscribe, ping, list_channels, stats), the per-connection rate limit,
 * access re-checks after a reload, and the order of replies.
 *
 * A session belongs to one connection (conn.c owns the bytes, frames and
 * timers; the session owns the meaning). It writes through conn_send_text /
 * conn_send_frame / conn_close and never touches a socket.
 *
 * Reply order: every request gets its reply in request order. A subscribe
 * that waits for Redis holds the replies of the requests behind it (they are
 * built at once and queued in order); events are not replies and flow freely.
 * The held replies count against the connection's send queue. */
#ifndef HERALD_SESSION_H
#define HERALD_SESSION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jwt_auth.h"

struct conn;
struct worker;
struct sub;
struct shared_frame;
struct evbuffer;

/* One reply in request order; text is NULL while it waits for its
 * subscription (then channel and id say what to answer). */
struct reply {
    struct reply *next;
    struct sub *waiting_for; /* the pending subscription, or NULL once built */
    json_t *id;              /* the request's id (owned), for a waiting reply */
    char *text;              /* the built reply (owned), NULL while waiting */
    size_t len;
    struct evbuffer *after; /* frames that follow the reply (owned), or NULL */
};

/* Where a session's output goes when it is not a WebSocket (NULL: frames,
 * through conn_send_text / conn_send_buffer / conn_send_frame): a server-sent
 * event stream frames the same messages its own way (sse.h). */
struct subs_sse_batch;
struct session_output {
    /* One server message (a JSON text, borrowed). */
    void (*message)(void *arg, const char *text, size_t len);
    /* Messages the index framed for WebSocket (recovered events, gaps); the
     * bytes are taken (the buffer is left empty). */
    void (*frames)(void *arg, struct evbuffer *frames);
    /* A channel's batch in SSE form; 0, or -1 when not taken. */
    int (*batch)(void *arg, const struct subs_sse_batch *batch);
    /* The session ends: release arg. */
    void (*release)(void *arg);
};

struct session {
    struct conn *conn;
    const struct session_output *output; /* NULL: WebSocket */
    void *output_arg;
    struct worker *w;
    herald_user *user; /* owned; NULL: anonymous */
    struct sub *subs;  /* this connection's subscriptions */
    unsigned sub_count;
    double tokens, tokens_at; /* rate-limit bucket */
    unsigned refusals;        /* rate-limited messages since refusals_since */
    double refusals_since;
    struct reply *replies, **replies_tail; /* in request order; the head may wait */
    size_t held_bytes;                     /* bytes of built replies held behind a wait */
};

/* Starts the session of an upgraded connection; takes ownership of user. */
void session_init(struct session *s, struct conn *c, struct worker *w, herald_user *user,
                  double now);

/* Drops every subscription and held reply (the connection is going away). */
void session_free(struct session *s);

/* Routes the session's output through output (with arg, released with the
 * session); for a stream that is not a WebSocket. */
void session_set_output(struct session *s, const struct session_output *output, void *arg);

/* Subscribes the session to channel as a client's subscribe would (access
 * checked, since as in a subscribe's "since", NULL for none); the reply
 * ("subscribed" or an error) goes out as any reply does. */
struct subs_since;
void session_subscribe(struct session *s, const char *channel, const struct subs_since *since);

/* Sends one server message that is not a reply (never held). */
void session_send(struct session *s, const char *text, size_t len);

/* One complete text message from the client. */
void session_on_text(struct session *s, const uint8_t *data, size_t len, double now);

/* A WebSocket ping shares the message rate: true when it may be answered. */
bool session_allow_ping(struct session *s, double now);

/* After new channel rules: drops every subscription the rules no longer
 * allow, telling the client {"type":"unsubscribed","channel":C,"reason":
 * "access revoked"}. */
void session_recheck_access(struct session *s);

/* Sends a "gap" listing every channel of the session that owes one after
 * Redis came back (nothing when none). */
void session_send_gap(struct session *s);

/* Called by the subscription index: sub (of this session) is live (Redis
 * confirmed it and its history was read, or Redis went away): every reply
 * waiting for it is answered now with ready's position, and ready->after (the
 * recovered events, taken over: set to NULL) follows right behind the first. */
struct subs_ready;
void session_on_subscribed(struct session *s, struct sub *sub, struct subs_ready *ready);

/* Called by the subscription index: Redis refused to subscribe sub's channel
 * (reason: its error). The session forgets sub (without calling the index),
 * answers its waiting requests with an error, or tells the client it was
 * unsubscribed when the subscription was live. */
void session_on_refused(struct session *s, struct sub *sub, const char *reason);

/* Queues a shared event frame holding events messages; 0, or -1 when the
 * connection did not take it (closed, or just closed as a slow consumer). */
int session_deliver(struct session *s, struct shared_frame *frame, unsigned events);

/* Queues a channel's batch in server-sent event form (a session added with
 * sse set); as session_deliver. */
int session_deliver_sse(struct session *s, const struct subs_sse_batch *batch);

/* Bytes of replies the session holds (counted against the send queue). */
size_t session_held_bytes(const struct session *s);

#endif
