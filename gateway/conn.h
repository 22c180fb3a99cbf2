/* conn.h -- one client connection: HTTP upgrade, WebSocket read loop, its
 * bounded send queue, its timers and its close handshake. What the messages
 * mean is the session's (session.h).
 *
 * Lifecycle: HANDSHAKE (reading the request head) -> OPEN -> CLOSING (our
 * close frame queued; waiting for it to flush and for the peer's close or EOF,
 * bounded by a timeout) -> freed. A connection is only ever freed from its own
 * bufferevent callbacks or the worker's sweep, never while the subscription
 * index is delivering to it, so fan-out can walk its lists safely. */
#ifndef HERALD_CONN_H
#define HERALD_CONN_H

#include <event2/util.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "shared_frame.h"

struct worker;
struct conn;
struct evbuffer;

/* Takes ownership of fd (an accepted socket); tls selects a server-side TLS
 * bufferevent; admin marks a socket of the operator listener (HTTP endpoints
 * only, /metrics included; no upgrade). Returns -1 (fd closed) when out of
 * memory. */
int conn_accept(struct worker *w, evutil_socket_t fd, const struct sockaddr *addr, int addr_len,
                bool tls, bool admin);

/* Queues one text message (copied) to an open connection; over the send-queue
 * cap it is closed 4009 instead. */
void conn_send_text(struct conn *c, const char *text, size_t len);

/* Moves every byte of buf (complete frames) to the connection's output; over
 * the send-queue cap it is closed 4009 instead. */
void conn_send_buffer(struct conn *c, struct evbuffer *buf);

/* Closes the connection 4009 when what it has queued (held replies included)
 * is over the send-queue cap. */
void conn_check_queue(struct conn *c);

/* Queues shared event frames (events: how many messages they hold). Returns 0
 * when queued, -1 when the connection is not open or was just closed as a slow
 * consumer (4009). */
int conn_send_frame(struct conn *c, struct shared_frame *frame, unsigned events);

/* Starts the close handshake with code and reason (NULL: the code's reason
 * from ws_close_reason) (the connection stays until
 * it flushes, the peer answers, or the close timeout passes). */
void conn_close(struct conn *c, uint16_t code, const char *reason);

/* The worker's once-a-second sweep over the timing wheel: pings, idle and
 * write timeouts, token expiry, handshake and close deadlines. now is
 * monotonic seconds. */
void conn_tick(struct worker *w, double now);

/* Frees the connection at once (worker shutdown). */
void conn_free(struct conn *c);

/* True once upgraded and until its close starts. */
bool conn_is_open(const struct conn *c);

/* True once upgraded to a WebSocket (open or closing). */
bool conn_is_websocket(const struct conn *c);

/* The next connection in the worker's list. */
struct conn *conn_next(const struct conn *c);

/* The connection's session once upgraded, else NULL. */
struct session *conn_session(struct conn *c);

/* The connection's id (uuid) and client address, for logs. */
const char *conn_id(const struct conn *c);
const char *conn_peer(const struct conn *c);

#endif
