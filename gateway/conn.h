/* conn.h -- one client connection: HTTP upgrade, WebSocket read loop, its
 * bounded send queue, its timers and its close handshake. What the messages
 * mean is the session's (session.h).
 *
 * Lifecycle: HANDSHAKE (reading the request head) -> OPEN -> CLOSING (our
 * close frame queued; waiting for it to flush and for the peer's close or EOF,
 * bounded by a timeout) -> freed. A connection is only ever freed from its own
 * stream callbacks or the worker's sweep, never while the subscription
 * index is delivering to it, so fan-out can walk its lists safely. */
#ifndef HERALD_CONN_H
#define HERALD_CONN_H

#include <event2/util.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "jwt_auth.h"
#include "shared_frame.h"

struct worker;
struct conn;
struct evbuffer;

/* Takes ownership of fd (an accepted socket); tls selects a server-side TLS
 * stream; admin marks a socket of the operator listener (HTTP endpoints
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

/* True for a WebSocket or an event stream (open or closing) and for a plain
 * HTTP request waiting for its reply: what a drain lets finish (any other
 * socket holds nothing worth waiting for). */
bool conn_in_use(const struct conn *c);

/* ---- plain HTTP before any upgrade (sse.h, publish_api.h) ---- */
struct http_request;

/* Answers the request with a plain-text refusal (status, message), then closes. */
void conn_http_refuse(struct conn *c, int status, const char *message);

/* Answers the request with head and body (copied), then closes. */
void conn_http_reply(struct conn *c, const char *head, size_t head_len, const char *body,
                     size_t body_len);

/* The request's body may bring up to max_input bytes of input (0: as it
 * was); with on_free
 * set the request is being answered (input from now on is ignored) and
 * on_free(arg) is called if the connection goes before conn_http_reply. */
void conn_http_wait(struct conn *c, size_t max_input, void (*on_free)(void *arg), void *arg);

/* Input received so far (the request head included), and its first len bytes
 * as one block (NULL when out of memory). */
size_t conn_input_length(struct conn *c);
const char *conn_input_bytes(struct conn *c, size_t len);

/* Opens an HTTP stream on a connection in its handshake: the request
 * (request_len bytes) is consumed, the client address counted in the
 * per-address limit (over it: 429 and NULL), head (the response head) sent.
 * From then on its session's output goes out as is, its input is ignored, a
 * ping sends the text ping (static storage), there is no idle timeout, and
 * conn_close ends the stream once its bytes are out. Takes user. */
struct session *conn_open_stream(struct conn *c, size_t request_len, const char *client,
                                 herald_user *user, const char *head, size_t head_len,
                                 const char *ping);

/* The worker the connection belongs to. */
struct worker *conn_worker(const struct conn *c);

/* The next connection in the worker's list. */
struct conn *conn_next(const struct conn *c);

/* The connection's session once upgraded, else NULL. */
struct session *conn_session(struct conn *c);

/* The connection's id (uuid) and client address, for logs. */
const char *conn_id(const struct conn *c);
const char *conn_peer(const struct conn *c);

#endif
