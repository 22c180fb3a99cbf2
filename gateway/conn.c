/* conn.c -- a client connection from accept to free. */
#include "conn.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <linux/sockios.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "acl.h"
#include "handshake.h"
#include "http_routes.h"
#include "http_upgrade.h"
#include "iplimit.h"
#include "jwt_auth.h"
#include "log.h"
#include "netaddr.h"
#include "protocol.h"
#include "publish_api.h"
#include "session.h"
#include "sse.h"
#include "stream.h"
#include "worker.h"
#include "ws_codec.h"

#define CLOSE_TIMEOUT 2.0 /* seconds to wait for the peer after our close frame */

enum conn_state { CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSING };

struct conn {
    struct worker *w;
    struct stream *io;        /* the socket: plain (write-through) or TLS */
    struct conn *prev, *next; /* the worker's list */
    struct wheel_node timer;  /* next check: handshake, ping, idle, write, close, token */
    struct session session;   /* what the messages mean; valid once upgraded */
    struct evbuffer *message; /* fragments of the open message, NULL when none */
    struct ws_reader reader;
    enum conn_state state;
    bool tls;
    bool admin;                 /* accepted on the operator listener */
    bool upgraded;              /* counted in worker->conn_count */
    bool peer_done;             /* nothing more to wait for from the peer once flushed */
    bool ip_counted;            /* holds a slot in the per-address limit */
    bool stream;                /* an HTTP stream (server-sent events): output goes out as is */
    bool waiting;               /* a plain HTTP request waits for its reply: input is ignored */
    const char *stream_ping;    /* what a ping is on a stream (static storage) */
    void (*on_free)(void *arg); /* told when the connection goes (conn_http_wait) */
    void *on_free_arg;
    uint32_t ip_bucket;
    double deadline;             /* handshake or close deadline, monotonic seconds */
    double last_activity;        /* last bytes from the peer */
    double last_ping;            /* last ping we sent */
    char id[37];                 /* uuid v4 */
    char peer[NETADDR_MAX_TEXT]; /* client address (after trusted X-Forwarded-For) */
};

#define CONN_OF(node) ((struct conn *)((char *)(node)-offsetof(struct conn, timer)))

static void read_cb(void *arg);
static void schedule_open(struct conn *c, double now);
static void drained_cb(void *arg);
static void closed_cb(void *arg);
static void abort_conn(struct conn *c);

static void make_uuid(char out[37]) {
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) memset(b, 0, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static void peer_name(const struct sockaddr *addr, char out[INET6_ADDRSTRLEN]) {
    out[0] = '\0';
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, out, INET6_ADDRSTRLEN);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, out, INET6_ADDRSTRLEN);
}

int conn_accept(struct worker *w, evutil_socket_t fd, const struct sockaddr *addr, int addr_len,
                bool tls, bool admin) {
    (void)addr_len;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return -1;
    }
    int one = 1; /* events are small and latency matters: no Nagle delay */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A bounded kernel buffer keeps what a slow reader pins in kernel memory
     * near --max-send-queue instead of the autotuned megabytes. */
    int sndbuf = (int)w->cfg->socket_send_buffer;
    if (sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    SSL *ssl = NULL;
    if (tls && !(ssl = SSL_new(w->ssl_ctx))) {
        evutil_closesocket(fd);
        free(c);
        return -1;
    }
    /* Input never holds more than one incomplete frame plus one read. */
    const struct stream_callbacks cbs = {read_cb, drained_cb, closed_cb, c};
    c->io = stream_new(w->base, fd, ssl,
                       (size_t)w->cfg->max_message_size + WS_MAX_HEADER_LEN + 16384, &cbs);
    if (!c->io) {
        free(c);
        return -1;
    }
    c->w = w;
    c->tls = tls;
    c->admin = admin;
    c->state = CONN_HANDSHAKE;
    c->last_activity = clock_now();
    c->deadline = c->last_activity + w->cfg->handshake_timeout;
    wheel_schedule(&w->wheel, &c->timer, (uint64_t)ceil(c->deadline));
    make_uuid(c->id);
    peer_name(addr, c->peer);
    ws_reader_init(&c->reader, (size_t)w->cfg->max_message_size, true);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->socket_count++;
    return 0;
}

void conn_free(struct conn *c) {
    struct worker *w = c->w;
    if (c->on_free) c->on_free(c->on_free_arg);
    wheel_cancel(&c->timer);
    if (c->upgraded) session_free(&c->session);
    if (c->ip_counted) iplimit_release(w->iplimit, w->index, c->ip_bucket);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->socket_count--;
    if (c->upgraded) {
        w->conn_count--;
        log_debug("event=close conn=%s", c->id);
    }
    if (c->message) evbuffer_free(c->message);
    stream_free(c->io);
    free(c);
}

bool conn_is_open(const struct conn *c) {
    return c->state == CONN_OPEN;
}

bool conn_in_use(const struct conn *c) {
    return c->upgraded || c->waiting;
}

struct worker *conn_worker(const struct conn *c) {
    return c->w;
}

struct conn *conn_next(const struct conn *c) {
    return c->next;
}

struct session *conn_session(struct conn *c) {
    return c->upgraded ? &c->session : NULL;
}

const char *conn_id(const struct conn *c) {
    return c->id;
}

const char *conn_peer(const struct conn *c) {
    return c->peer;
}

/* ---- output ---------------------------------------------------------------- */

/* Replies a session holds behind a pending subscribe count as queued. */
static bool over_queue_limit(struct conn *c, size_t adding) {
    size_t queued = stream_queued(c->io);
    if (c->upgraded) queued += session_held_bytes(&c->session);
    return queued + adding > (size_t)c->w->cfg->max_send_queue;
}

/* Output the kernel did not take is queued: the write timeout must be able
 * to fire even when the next ping or idle check is far off. */
static void watch_stall(struct conn *c) {
    if (c->state != CONN_OPEN || stream_queued(c->io) == 0) return;
    uint64_t at = (uint64_t)ceil(stream_write_progress(c->io) + c->w->cfg->write_timeout);
    if (!wheel_scheduled(&c->timer) || c->timer.at > at)
        wheel_schedule(&c->w->wheel, &c->timer, at);
}

static void slow_consumer(struct conn *c) {
    c->w->stats.slow_consumer_closes++;
    log_warn("event=slow_consumer conn=%s peer=%s queued=%zu", c->id, log_q(c->peer),
             stream_queued(c->io));
    conn_close(c, WS_CLOSE_SLOW_CONSUMER, NULL);
}

void conn_check_queue(struct conn *c) {
    if (c->state == CONN_OPEN && over_queue_limit(c, 0)) slow_consumer(c);
}

void conn_send_buffer(struct conn *c, struct evbuffer *buf) {
    if (c->state != CONN_OPEN) return;
    size_t len = evbuffer_get_length(buf);
    if (over_queue_limit(c, len)) {
        slow_consumer(c);
        return;
    }
    if (stream_send_buffer(c->io, buf) != 0) {
        conn_close(c, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    c->w->stats.bytes_out += len;
    watch_stall(c);
}

void conn_send_text(struct conn *c, const char *text, size_t len) {
    if (c->state != CONN_OPEN) return;
    uint8_t header[WS_MAX_HEADER_LEN];
    size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, len);
    if (over_queue_limit(c, header_len + len)) {
        slow_consumer(c);
        return;
    }
    /* One frame, one send: the header goes in front of the text. */
    char small[WS_MAX_HEADER_LEN + 1024];
    int rc;
    if (header_len + len <= sizeof small) {
        memcpy(small, header, header_len);
        memcpy(small + header_len, text, len);
        rc = stream_send(c->io, small, header_len + len);
    } else {
        struct evbuffer *frame = evbuffer_new();
        rc = !frame || evbuffer_add(frame, header, header_len) != 0 ||
                     evbuffer_add(frame, text, len) != 0 || stream_send_buffer(c->io, frame) != 0
                 ? -1
                 : 0;
        if (frame) evbuffer_free(frame);
    }
    if (rc != 0) {
        conn_close(c, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    c->w->stats.messages_out++;
    c->w->stats.bytes_out += header_len + len;
    watch_stall(c);
}

/* Queues a ping or pong; like every other frame it counts against the send
 * queue cap, so a peer that pings without reading is closed 4009. */
static void send_control(struct conn *c, enum ws_opcode opcode, const uint8_t *payload,
                         size_t len) {
    uint8_t frame[WS_MAX_HEADER_LEN + WS_MAX_CONTROL_PAYLOAD];
    size_t header_len = ws_frame_header(frame, opcode, true, len);
    if (over_queue_limit(c, header_len + len)) {
        slow_consumer(c);
        return;
    }
    if (len) memcpy(frame + header_len, payload, len);
    if (stream_send(c->io, frame, header_len + len) != 0)
        conn_close(c, WS_CLOSE_INTERNAL_ERROR, NULL);
    else
        watch_stall(c);
}

/* A stream's ping (a comment line for server-sent events), under the cap. */
static void send_stream_ping(struct conn *c) {
    size_t len = strlen(c->stream_ping);
    if (over_queue_limit(c, len)) {
        slow_consumer(c);
        return;
    }
    if (stream_send(c->io, c->stream_ping, len) != 0) {
        conn_close(c, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    c->w->stats.bytes_out += len;
    watch_stall(c);
}

/* Sends a built message and frees it; a NULL message (out of memory) closes 1011. */
static void send_built(struct conn *c, char *text, size_t len) {
    if (!text) {
        conn_close(c, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    if (c->upgraded)
        session_send(&c->session, text, len);
    else
        conn_send_text(c, text, len);
    free(text);
}

static void send_error(struct conn *c, enum proto_error err, const char *message) {
    size_t len;
    char *text = proto_build_error(err, message, NULL, &len);
    send_built(c, text, len);
}

int conn_send_frame(struct conn *c, struct shared_frame *frame, unsigned events) {
    if (c->state != CONN_OPEN) return -1;
    if (over_queue_limit(c, frame->len)) {
        slow_consumer(c);
        return -1;
    }
    if (stream_send_frame(c->io, frame) != 0) {
        conn_close(c, WS_CLOSE_INTERNAL_ERROR, NULL);
        return -1;
    }
    c->w->stats.messages_out += events;
    c->w->stats.bytes_out += frame->len;
    watch_stall(c);
    return 0;
}

static void enter_closing(struct conn *c, double deadline) {
    c->state = CONN_CLOSING;
    c->deadline = deadline;
    stream_watch_drain(c->io);
    wheel_schedule(&c->w->wheel, &c->timer, (uint64_t)ceil(deadline));
}

/* Appends a close frame and moves to CLOSING. */
static void queue_close(struct conn *c, uint16_t code, const char *reason, bool echo_empty) {
    uint8_t frame[2 + 2 + WS_MAX_CONTROL_PAYLOAD];
    size_t len;
    if (echo_empty) {
        len = ws_frame_header(frame, WS_OP_CLOSE, true, 0);
    } else {
        len = ws_close_frame(frame, code, reason);
    }
    stream_send(c->io, frame, len);
    enter_closing(c, clock_now() + CLOSE_TIMEOUT);
    if (c->message) {
        evbuffer_free(c->message);
        c->message = NULL;
    }
}

void conn_close(struct conn *c, uint16_t code, const char *reason) {
    if (c->state != CONN_OPEN) return; /* closing already, or not a WebSocket yet */
    if (!reason) reason = ws_close_reason(code);
    log_debug("event=closing conn=%s code=%u reason=%s", c->id, code, log_q(reason ? reason : ""));
    if (c->stream) { /* the stream ends once its queued bytes are out */
        enter_closing(c, clock_now() + CLOSE_TIMEOUT);
        if (!c->tls && stream_queued(c->io) == 0) shutdown(stream_fd(c->io), SHUT_WR);
        return;
    }
    queue_close(c, code, reason, false);
}

/* An HTTP reply before the upgrade, then lingering close. */
static void http_refuse(struct conn *c, int status, const char *message) {
    char reply[512];
    int n = http_build_error(reply, sizeof reply, status, message);
    if (n > 0) stream_send(c->io, reply, (size_t)n);
    c->w->stats.handshake_failures++;
    log_debug("event=http_refused peer=%s status=%d", log_q(c->peer), status);
    c->waiting = false;
    c->on_free = NULL;
    enter_closing(c, clock_now() + CLOSE_TIMEOUT);
}

void conn_http_refuse(struct conn *c, int status, const char *message) {
    if (c->state == CONN_HANDSHAKE) http_refuse(c, status, message);
}

void conn_http_reply(struct conn *c, const char *head, size_t head_len, const char *body,
                     size_t body_len) {
    if (c->state != CONN_HANDSHAKE) return;
    if (stream_send(c->io, head, head_len) != 0 ||
        (body_len && stream_send(c->io, body, body_len) != 0))
        log_warn("event=http_reply_failed conn=%s", c->id);
    c->waiting = false;
    c->on_free = NULL;
    enter_closing(c, clock_now() + CLOSE_TIMEOUT);
}

void conn_http_wait(struct conn *c, size_t max_input, void (*on_free)(void *arg), void *arg) {
    if (max_input) stream_set_read_limit(c->io, max_input);
    c->on_free = on_free;
    c->on_free_arg = arg;
    if (on_free) c->waiting = true;
}

size_t conn_input_length(struct conn *c) {
    return evbuffer_get_length(stream_input(c->io));
}

const char *conn_input_bytes(struct conn *c, size_t len) {
    return (const char *)evbuffer_pullup(stream_input(c->io), (ev_ssize_t)len);
}

/* ---- WebSocket frames ------------------------------------------------------ */

static void fail(struct conn *c, uint16_t code) {
    log_debug("event=protocol_error conn=%s code=%u reason=%s", c->id, code,
              log_q(ws_close_reason(code)));
    conn_close(c, code, NULL);
}

/* Handles one decoded frame; returns false when reading must stop. */
static bool handle_frame(struct conn *c, struct ws_frame *f) {
    if (c->state == CONN_CLOSING) { /* after our close, only the peer's close matters */
        if (f->opcode == WS_OP_CLOSE) {
            c->peer_done = true;
            return false;
        }
        return true;
    }
    switch (f->opcode) {
        case WS_OP_TEXT:
            if (f->fin) {
                session_on_text(&c->session, f->payload, f->payload_len, clock_now());
            } else if (!(c->message = evbuffer_new()) ||
                       evbuffer_add(c->message, f->payload, f->payload_len) != 0) {
                fail(c, WS_CLOSE_INTERNAL_ERROR);
                return false;
            }
            return true;
        case WS_OP_CONTINUATION:
            if (!c->message) { /* a continued binary message: already refused */
                fail(c, WS_CLOSE_UNSUPPORTED_DATA);
                return false;
            }
            if (evbuffer_add(c->message, f->payload, f->payload_len) != 0) {
                fail(c, WS_CLOSE_INTERNAL_ERROR);
                return false;
            }
            if (f->fin) {
                size_t len = evbuffer_get_length(c->message);
                const uint8_t *data = evbuffer_pullup(c->message, -1);
                if (!data && len) {
                    fail(c, WS_CLOSE_INTERNAL_ERROR);
                    return false;
                }
                session_on_text(&c->session, data, len, clock_now());
                if (c->message) evbuffer_free(c->message);
                c->message = NULL;
            }
            return true;
        case WS_OP_BINARY: fail(c, WS_CLOSE_UNSUPPORTED_DATA); return false;
        case WS_OP_PING:
            /* Pings share the message rate; one over it goes unanswered (a
             * later pong answers for it, RFC 6455 5.5.3). */
            if (session_allow_ping(&c->session, clock_now()))
                send_control(c, WS_OP_PONG, f->payload, f->payload_len);
            return true;
        case WS_OP_PONG: return true;
        case WS_OP_CLOSE:
            /* Echo the peer's code, then close once it is flushed. */
            c->peer_done = true;
            queue_close(c, f->close_code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : f->close_code,
                        NULL, f->close_code == WS_CLOSE_NO_STATUS);
            return false;
    }
    return true;
}

static void read_frames(struct conn *c) {
    struct evbuffer *in = stream_input(c->io);
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0) return;
        if (c->state == CONN_CLOSING && c->peer_done) {
            evbuffer_drain(in, len); /* data after a close is ignored */
            return;
        }
        size_t need = 0, avail = len < WS_MAX_HEADER_LEN ? len : WS_MAX_HEADER_LEN;
        struct ws_frame f;
        uint8_t *buf = evbuffer_pullup(in, (ev_ssize_t)avail);
        int n = ws_reader_next(&c->reader, buf, avail, &f, &need);
        if (n == WS_PARTIAL && need > avail && need <= len) {
            buf = evbuffer_pullup(in, (ev_ssize_t)need);
            if (!buf) {
                fail(c, WS_CLOSE_INTERNAL_ERROR);
                return;
            }
            n = ws_reader_next(&c->reader, buf, need, &f, &need);
        }
        if (n == WS_PARTIAL) return;
        if (n == WS_INVALID) {
            if (c->state == CONN_CLOSING) {
                evbuffer_drain(in, len);
                return;
            }
            evbuffer_drain(in, len);
            fail(c, f.error_code);
            return;
        }
        c->w->stats.bytes_in += (size_t)n;
        bool go_on = handle_frame(c, &f);
        evbuffer_drain(in, (size_t)n);
        if (!go_on) {
            if (c->state == CONN_CLOSING && c->peer_done && stream_queued(c->io) == 0) {
                conn_free(c); /* the close handshake is complete */
                return;
            }
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        }
    }
}

/* ---- handshake ------------------------------------------------------------- */

static void send_connected(struct conn *c) {
    size_t len;
    char *text = proto_build_connected(c->id, c->session.user, c->w->rules, &len);
    send_built(c, text, len);
}

static void upgrade(struct conn *c, const struct http_request *req, size_t head_len) {
    struct worker *w = c->w;
    const struct handshake_policy policy = {
        .ws_path = "/ws",
        .allowed_origins = w->cfg->allowed_origins,
        .trusted = w->trusted,
        .trusted_count = w->trusted_count,
        .draining = w->draining,
        .conn_count = w->conn_count,
        .max_connections = (unsigned long)w->cfg->max_connections,
    };
    struct handshake_decision decision;
    handshake_decide(req, c->peer, &policy, &decision);
    if (decision.forwarded_invalid)
        log_debug("event=bad_forwarded_for peer=%s",
                  log_q(c->peer)); /* the peer stands for the client */
    memcpy(c->peer, decision.client, sizeof c->peer);
    if (decision.outcome != HANDSHAKE_ACCEPT) {
        http_refuse(c, handshake_status(decision.outcome), handshake_message(decision.outcome));
        return;
    }
    c->ip_bucket = iplimit_bucket(c->peer);
    if (!iplimit_acquire(w->iplimit, w->index, c->ip_bucket, w->cfg->max_connections_per_ip)) {
        log_info("event=ip_limit peer=%s", log_q(c->peer));
        http_refuse(c, handshake_status(HANDSHAKE_TOO_MANY_FROM_IP),
                    handshake_message(HANDSHAKE_TOO_MANY_FROM_IP));
        return;
    }
    c->ip_counted = true;
    static char token[JWT_AUTH_MAX_TOKEN + 1];
    struct http_slice protocol;
    enum handshake_token found = handshake_find_token(req, token, sizeof token, &protocol);

    static char reply[HANDSHAKE_MAX_101];
    int n = handshake_build_101(req, protocol.ptr ? &protocol : NULL, reply, sizeof reply);
    if (n < 0) {
        http_refuse(c, 500, "Internal error");
        return;
    }
    stream_send(c->io, reply, (size_t)n);
    evbuffer_drain(stream_input(c->io), head_len);
    c->state = CONN_OPEN;
    c->upgraded = true;
    w->conn_count++;
    w->stats.connections_total++;
    c->last_ping = clock_now();

    enum jwt_auth_result result = JWT_AUTH_OK;
    herald_user *user = NULL;
    if (found == HANDSHAKE_TOKEN_UNUSABLE)
        result = JWT_AUTH_MALFORMED;
    else if (found == HANDSHAKE_TOKEN_FOUND)
        result = jwt_auth_verify(&w->auth, token, time(NULL), &user);
    session_init(&c->session, c, w, user, c->last_ping);
    if (result != JWT_AUTH_OK) {
        w->stats.auth_failures++;
        w->stats.auth_failures_by_reason[-result]++;
        log_info("event=auth_failed conn=%s peer=%s reason=%s", c->id, log_q(c->peer),
                 jwt_auth_result_name(result));
        send_error(c, PROTO_ERR_UNAUTHORIZED, jwt_auth_reason(result));
        conn_close(c, WS_CLOSE_UNAUTHORIZED, jwt_auth_reason(result));
        return;
    }
    log_debug("event=open conn=%s peer=%s user=%s tls=%d", c->id, log_q(c->peer),
              log_q(user ? user->user_id : NULL), c->tls);
    send_connected(c);
    schedule_open(c, clock_now());
}

struct session *conn_open_stream(struct conn *c, size_t request_len, const char *client,
                                 herald_user *user, const char *head, size_t head_len,
                                 const char *ping) {
    struct worker *w = c->w;
    snprintf(c->peer, sizeof c->peer, "%s", client);
    c->ip_bucket = iplimit_bucket(c->peer);
    if (!iplimit_acquire(w->iplimit, w->index, c->ip_bucket, w->cfg->max_connections_per_ip)) {
        log_info("event=ip_limit peer=%s", log_q(c->peer));
        herald_user_free(user);
        http_refuse(c, handshake_status(HANDSHAKE_TOO_MANY_FROM_IP),
                    handshake_message(HANDSHAKE_TOO_MANY_FROM_IP));
        return NULL;
    }
    c->ip_counted = true;
    evbuffer_drain(stream_input(c->io), request_len);
    if (stream_send(c->io, head, head_len) != 0) {
        herald_user_free(user);
        http_refuse(c, 500, "Internal error");
        return NULL;
    }
    c->state = CONN_OPEN;
    c->upgraded = true;
    c->stream = true;
    c->stream_ping = ping;
    w->conn_count++;
    w->stats.connections_total++;
    c->last_ping = clock_now();
    session_init(&c->session, c, w, user, c->last_ping);
    log_debug("event=open conn=%s peer=%s user=%s tls=%d stream=1", c->id, log_q(c->peer),
              log_q(user ? user->user_id : NULL), c->tls);
    schedule_open(c, c->last_ping);
    return &c->session;
}

static bool path_is(const struct http_request *req, const char *path) {
    return req->path.len == strlen(path) && memcmp(req->path.ptr, path, req->path.len) == 0;
}

static void read_handshake(struct conn *c) {
    if (c->waiting) { /* the reply is on its way; nothing more is read */
        struct evbuffer *in = stream_input(c->io);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    struct evbuffer *in = stream_input(c->io);
    size_t len = evbuffer_get_length(in);
    size_t scan = len < HTTP_MAX_HEADER_BYTES ? len : HTTP_MAX_HEADER_BYTES;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)scan);
    struct http_request req;
    int n = http_parse_request(buf, scan, &req);
    if (n == HTTP_PARTIAL) {
        if (len >= HTTP_MAX_HEADER_BYTES) http_refuse(c, 431, "Request header fields too large");
        return;
    }
    if (n == HTTP_INVALID) {
        http_refuse(c, 400, "Malformed HTTP request");
        return;
    }
    if (!c->admin && path_is(&req, SSE_PATH)) {
        sse_start(c, &req, (size_t)n);
        return;
    }
    if (!c->admin && path_is(&req, PUBLISH_API_PATH)) {
        publish_api_serve(c, &req, (size_t)n);
        return;
    }
    if (c->admin || !path_is(&req, "/ws")) {
        struct http_response resp;
        if (http_routes_serve(c->w, &req, c->admin, &resp) == 0) {
            stream_send(c->io, resp.head, resp.head_len);
            if (resp.body_len) stream_send(c->io, resp.body, resp.body_len);
            http_response_free(&resp);
            enter_closing(c, clock_now() + CLOSE_TIMEOUT);
            return;
        }
        if (c->admin) { /* the operator listener serves no WebSocket */
            http_refuse(c, 404, "Not found");
            return;
        }
    }
    upgrade(c, &req, (size_t)n);
    if (c->state == CONN_OPEN) read_frames(c); /* frames sent right behind the request */
}

/* ---- stream callbacks ------------------------------------------------------ */

static void read_cb(void *arg) {
    struct conn *c = arg;
    c->last_activity = clock_now();
    if (c->state == CONN_HANDSHAKE)
        read_handshake(c);
    else if (c->upgraded && !c->stream)
        read_frames(c);
    else
        evbuffer_drain(stream_input(c->io), evbuffer_get_length(stream_input(c->io)));
}

static void drained_cb(void *arg) {
    struct conn *c = arg;
    /* The stream also reports an output that was empty all along, and a
     * deferred report may arrive after more bytes were queued: act only on an
     * output that is really drained. */
    if (c->state != CONN_CLOSING || stream_queued(c->io) > 0) return;
    if (c->peer_done) {
        conn_free(c);
        return;
    }
    /* Our last bytes are out: half-close so the peer sees EOF, and keep reading
     * until it closes (a lingering close: unread input must not turn our final
     * bytes into a reset). */
    stream_shutdown_write(c->io);
}

static void closed_cb(void *arg) {
    conn_free(arg);
}

/* ---- timers ---------------------------------------------------------------- */

/* When an open connection next needs attention: a ping due, the idle or write
 * deadline, or its token's expiry. */
static void schedule_open(struct conn *c, double now) {
    const struct config *cfg = c->w->cfg;
    double next = c->last_ping + cfg->ping_interval;
    double idle_at = c->last_activity + cfg->idle_timeout;
    if (idle_at < next && !c->stream) next = idle_at; /* a stream's client never speaks */
    if (stream_queued(c->io) > 0) {
        double stall_at = stream_write_progress(c->io) + cfg->write_timeout;
        if (stall_at < next) next = stall_at;
    }
    const herald_user *user = c->session.user;
    if (user && user->exp) {
        double expires_at =
            now + ((double)user->exp - (double)(time(NULL) - c->w->auth.leeway)) + 1;
        if (expires_at < next) next = expires_at;
    }
    wheel_schedule(&c->w->wheel, &c->timer, (uint64_t)ceil(next));
}

static void check_open(struct conn *c, double now) {
    struct worker *w = c->w;
    const struct config *cfg = w->cfg;
    const herald_user *user = c->session.user;
    if (user && user->exp && time(NULL) - w->auth.leeway > user->exp) {
        log_info("event=token_expired conn=%s user=%s", c->id, log_q(user->user_id));
        send_error(c, PROTO_ERR_TOKEN_EXPIRED, NULL);
        conn_close(c, WS_CLOSE_UNAUTHORIZED, "token expired");
        return;
    }
    if (!c->stream && now - c->last_activity >= cfg->idle_timeout) {
        w->stats.idle_closes++;
        log_debug("event=idle_close conn=%s", c->id);
        conn_close(c, WS_CLOSE_GOING_AWAY, "idle timeout");
        return;
    }
    if (stream_queued(c->io) > 0 && now - stream_write_progress(c->io) >= cfg->write_timeout) {
        w->stats.write_timeouts++;
        log_info("event=write_timeout conn=%s peer=%s", c->id, log_q(c->peer));
        abort_conn(c); /* nothing can reach this peer: no close frame */
        return;
    }
    if (now - c->last_ping >= cfg->ping_interval) {
        if (c->stream)
            send_stream_ping(c);
        else
            send_control(c, WS_OP_PING, NULL, 0);
        c->last_ping = now;
    }
    schedule_open(c, now);
}

/* Output still queued here or in the kernel (sent but not acknowledged). */
static bool has_unsent_output(struct conn *c) {
    if (stream_queued(c->io) > 0) return true;
    int queued = 0;
    return ioctl(stream_fd(c->io), SIOCOUTQ, &queued) == 0 && queued > 0;
}

/* Frees the connection with an abortive close (RST): the kernel drops what
 * it still holds for the peer at once. */
static void abort_conn(struct conn *c) {
    struct linger reset = {1, 0};
    setsockopt(stream_fd(c->io), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    log_debug("event=reset conn=%s peer=%s", c->id, log_q(c->peer));
    conn_free(c);
}

static void on_timer(struct wheel_node *node, void *arg) {
    struct conn *c = CONN_OF(node);
    double now = *(double *)arg;
    if (c->state == CONN_OPEN) {
        check_open(c, now);
    } else if (now >= c->deadline) {
        /* The handshake did not finish, or the close handshake took too long;
         * bytes the peer never took (our close frame among them) would keep
         * the socket in FIN-WAIT for minutes: reset it instead. */
        if (has_unsent_output(c))
            abort_conn(c);
        else
            conn_free(c);
    } else {
        wheel_schedule(&c->w->wheel, &c->timer, (uint64_t)ceil(c->deadline));
    }
}

void conn_tick(struct worker *w, double now) {
    wheel_advance(&w->wheel, (uint64_t)floor(now), on_timer, &now);
}
