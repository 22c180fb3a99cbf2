/* sse.c -- a server-sent event stream: the request's checks, then a session
 * whose messages are written as text/event-stream. */
#include "sse.h"

#include <event2/buffer.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "conn.h"
#include "handshake.h"
#include "log.h"
#include "protocol.h"
#include "session.h"
#include "sse_codec.h"
#include "subs.h"
#include "worker.h"
#include "ws_codec.h"

#define SSE_PING "ping"
static const char ping_comment[] = ": " SSE_PING "\n\n";

/* Reconnect delay told to EventSource, drawn per stream so that the clients
 * of a drained gateway do not all come back in the same instant. */
#define RETRY_MIN_MS  1000
#define RETRY_SPAN_MS 4000

struct sse_channel {
    char name[ACL_MAX_CHANNEL + 1];
    struct sse_position position; /* the last one this stream's client was sent */
};

struct sse_stream {
    struct conn *conn;
    size_t count;
    struct sse_channel channels[]; /* in the URL's order */
};

static struct sse_channel *find_channel(struct sse_stream *st, const char *name, size_t len) {
    for (size_t i = 0; i < st->count; i++)
        if (strlen(st->channels[i].name) == len && memcmp(st->channels[i].name, name, len) == 0)
            return &st->channels[i];
    return NULL;
}

/* Appends "id: <positions>\n". */
static int add_id(struct sse_stream *st, struct evbuffer *out) {
    struct sse_position positions[SSE_MAX_CHANNELS];
    char id[SSE_ID_MAX + 1];
    for (size_t i = 0; i < st->count; i++) positions[i] = st->channels[i].position;
    int n = sse_id_write(id, sizeof id, positions, st->count);
    if (n < 0) return -1;
    return evbuffer_add(out, "id: ", 4) == 0 && evbuffer_add(out, id, (size_t)n) == 0 &&
                   evbuffer_add(out, "\n", 1) == 0
               ? 0
               : -1;
}

/* Appends one message: an optional event name, the data lines, an optional
 * id, and the blank line that dispatches it. */
static int add_message(struct sse_stream *st, struct evbuffer *out, const char *event,
                       const char *text, size_t len, bool with_id) {
    if (event && evbuffer_add_printf(out, "event: %s\n", event) < 0) return -1;
    size_t size = sse_data_size(text, len);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)size, &v, 1) < 1) return -1;
    sse_write_data(v.iov_base, text, len);
    v.iov_len = size;
    if (evbuffer_commit_space(out, &v, 1) != 0) return -1;
    if (with_id && add_id(st, out) != 0) return -1;
    return evbuffer_add(out, "\n", 1);
}

static void send_out(struct sse_stream *st, struct evbuffer *out, int rc) {
    if (rc != 0) {
        conn_close(st->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    conn_send_buffer(st->conn, out);
}

/* A server message: "subscribed" moves the channel's position (unless it
 * recovered: the recovered events that follow move it), "unsubscribed"
 * forgets it; each goes out under its own event name or as a plain message. */
static void on_message(void *arg, const char *text, size_t len) {
    struct sse_stream *st = arg;
    json_t *msg = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(msg, "type"));
    const char *channel = json_string_value(json_object_get(msg, "channel"));
    struct sse_channel *ch = channel ? find_channel(st, channel, strlen(channel)) : NULL;
    const char *event = NULL;
    bool with_id = false;
    if (type && strcmp(type, "subscribed") == 0) {
        event = "subscribed";
        with_id = true;
        if (ch && !json_is_true(json_object_get(msg, "recovered"))) {
            const char *epoch = json_string_value(json_object_get(msg, "epoch"));
            const char *offset = json_string_value(json_object_get(msg, "offset"));
            memset(&ch->position, 0, sizeof ch->position);
            if (epoch) {
                snprintf(ch->position.epoch, sizeof ch->position.epoch, "%s", epoch);
                snprintf(ch->position.offset, sizeof ch->position.offset, "%s",
                         offset ? offset : "");
            }
        }
    } else if (type && strcmp(type, "unsubscribed") == 0 && ch) {
        memset(&ch->position, 0, sizeof ch->position);
        with_id = true;
    }
    struct evbuffer *out = evbuffer_new();
    if (!out) {
        json_decref(msg);
        conn_close(st->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    send_out(st, out, add_message(st, out, event, text, len, with_id));
    evbuffer_free(out);
    json_decref(msg);
}

/* Messages the index framed for WebSocket (server frames: unmasked, final):
 * recovered and kept events move their channel's position. */
static void on_frames(void *arg, struct evbuffer *frames) {
    struct sse_stream *st = arg;
    struct evbuffer *out = evbuffer_new();
    int rc = out ? 0 : -1;
    while (rc == 0 && evbuffer_get_length(frames) >= 2) {
        size_t have = evbuffer_get_length(frames);
        const uint8_t *h = evbuffer_pullup(frames, have < WS_MAX_HEADER_LEN ? (ev_ssize_t)have
                                                                            : WS_MAX_HEADER_LEN);
        size_t header_len = 2, len = h[1] & 0x7f;
        if (len == 126) {
            header_len = 4;
            len = (size_t)h[2] << 8 | h[3];
        } else if (len == 127) {
            header_len = 10;
            len = 0;
            for (int i = 2; i < 10; i++) len = len << 8 | h[i];
        }
        if (have < header_len + len) {
            rc = -1;
            break;
        }
        const char *text = (const char *)evbuffer_pullup(frames, (ev_ssize_t)(header_len + len));
        if (!text) {
            rc = -1;
            break;
        }
        text += header_len;
        const char *channel, *offset;
        size_t channel_len, offset_len;
        bool is_event =
            proto_event_parts(text, len, &channel, &channel_len, &offset, &offset_len) == 0;
        struct sse_channel *ch = is_event ? find_channel(st, channel, channel_len) : NULL;
        if (ch && offset_len && ch->position.epoch[0] && offset_len <= HISTORY_OFFSET_MAX) {
            memcpy(ch->position.offset, offset, offset_len);
            ch->position.offset[offset_len] = '\0';
        }
        rc = add_message(st, out, NULL, text, len, is_event);
        evbuffer_drain(frames, header_len + len);
    }
    evbuffer_drain(frames, evbuffer_get_length(frames));
    if (out) {
        send_out(st, out, rc);
        evbuffer_free(out);
    } else {
        conn_close(st->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
    }
}

static void release_range(const void *data, size_t len, void *arg) {
    (void)data, (void)len;
    shared_frame_release(arg);
}

/* A channel's batch: each event's shared "data:" lines by reference, then
 * this stream's own id. */
static int on_batch(void *arg, const struct subs_sse_batch *batch) {
    struct sse_stream *st = arg;
    if (!conn_is_open(st->conn)) return -1;
    struct sse_channel *ch = find_channel(st, batch->channel, strlen(batch->channel));
    struct evbuffer *out = evbuffer_new();
    int rc = out && ch ? 0 : -1;
    for (unsigned i = 0; rc == 0 && i < batch->count; i++) {
        const struct subs_sse_event *e = &batch->events[i];
        if (e->offset[0]) {
            snprintf(ch->position.epoch, sizeof ch->position.epoch, "%s", e->epoch);
            snprintf(ch->position.offset, sizeof ch->position.offset, "%s", e->offset);
        }
        batch->data->refs++;
        if (evbuffer_add_reference(out, batch->data->data + e->start, e->len, release_range,
                                   batch->data) != 0) {
            batch->data->refs--;
            rc = -1;
            break;
        }
        if (add_id(st, out) != 0 || evbuffer_add(out, "\n", 1) != 0) rc = -1;
    }
    if (out) {
        send_out(st, out, rc);
        evbuffer_free(out);
    }
    return rc == 0 && conn_is_open(st->conn) ? 0 : -1;
}

static void release(void *arg) {
    free(arg);
}

static const struct session_output sse_output = {on_message, on_frames, on_batch, release};

/* ---- the request ------------------------------------------------------------- */

/* The response head, the retry delay and the "connected" message. */
static int build_head(struct conn *c, const struct http_request *req, const herald_user *user,
                      const struct acl_rules *rules, char **out, size_t *out_len) {
    char cors[HTTP_MAX_HEADER_BYTES + 64] = "";
    if (req->origin.ptr) /* allowed (checked before): EventSource reads cross-origin by CORS */
        snprintf(cors, sizeof cors, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n",
                 (int)req->origin.len, req->origin.ptr);
    unsigned char r[2] = {0, 0};
    if (RAND_bytes(r, sizeof r) != 1) memset(r, 0, sizeof r);
    unsigned retry = RETRY_MIN_MS + (unsigned)(r[0] << 8 | r[1]) % RETRY_SPAN_MS;
    size_t connected_len;
    char *connected = proto_build_connected(conn_id(c), user, rules, &connected_len);
    if (!connected) return -1;
    size_t data_size = sse_data_size(connected, connected_len);
    size_t size = 512 + strlen(cors) + data_size;
    char *head = malloc(size);
    if (!head) {
        free(connected);
        return -1;
    }
    int n = snprintf(head, size,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Accel-Buffering: no\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "retry: %u\n\n"
                     "event: connected\n",
                     cors, retry);
    if (n < 0 || (size_t)n + data_size + 1 >= size) {
        free(connected);
        free(head);
        return -1;
    }
    sse_write_data(head + n, connected, connected_len);
    n += (int)data_size;
    head[n++] = '\n';
    free(connected);
    *out = head;
    *out_len = (size_t)n;
    return 0;
}

/* The token (Bearer header or ?token=); 0 with *user (NULL: anonymous), or
 * -1 after a 401. */
static int authenticate(struct conn *c, struct worker *w, const struct http_request *req,
                        herald_user **user) {
    static char token[JWT_AUTH_MAX_TOKEN + 1];
    struct http_slice protocol;
    enum handshake_token found = handshake_find_token(req, token, sizeof token, &protocol);
    enum jwt_auth_result result = JWT_AUTH_OK;
    *user = NULL;
    if (found == HANDSHAKE_TOKEN_UNUSABLE)
        result = JWT_AUTH_MALFORMED;
    else if (found == HANDSHAKE_TOKEN_FOUND)
        result = jwt_auth_verify(&w->auth, token, time(NULL), user);
    if (result == JWT_AUTH_OK) return 0;
    w->stats.auth_failures++;
    w->stats.auth_failures_by_reason[-result]++;
    log_info("event=auth_failed conn=%s peer=%s reason=%s stream=1", conn_id(c),
             log_q(conn_peer(c)), jwt_auth_result_name(result));
    conn_http_refuse(c, 401, jwt_auth_reason(result));
    return -1;
}

void sse_start(struct conn *c, const struct http_request *req, size_t head_len) {
    struct worker *w = conn_worker(c);
    if (!http_slice_equals_nocase(&req->method, "GET")) {
        conn_http_refuse(c, 405, "Use GET");
        return;
    }
    static struct sse_query query;
    enum sse_query_result parsed = sse_parse_query(&req->query, &req->last_event_id, &query);
    if (parsed != SSE_QUERY_OK) {
        conn_http_refuse(c, 400, sse_query_message(parsed));
        return;
    }
    char client[NETADDR_MAX_TEXT];
    handshake_client_address(req, conn_peer(c), w->trusted, w->trusted_count, client);
    enum handshake_outcome refused = HANDSHAKE_ACCEPT;
    if (!handshake_origin_allowed(req, w->cfg->allowed_origins))
        refused = HANDSHAKE_ORIGIN_REFUSED;
    else if (w->draining)
        refused = HANDSHAKE_DRAINING;
    else if (w->conn_count >= (unsigned long)w->cfg->max_connections)
        refused = HANDSHAKE_FULL;
    if (refused != HANDSHAKE_ACCEPT) {
        conn_http_refuse(c, handshake_status(refused), handshake_message(refused));
        return;
    }
    herald_user *user;
    if (authenticate(c, w, req, &user) != 0) return;
    for (size_t i = 0; i < query.count; i++) {
        enum acl_result acl = acl_may_subscribe(w->rules, user, query.channels[i]);
        if (acl == ACL_ALLOW) continue;
        char message[ACL_MAX_CHANNEL + 64];
        snprintf(message, sizeof message, "%s: %s", proto_error_message(proto_error_from_acl(acl)),
                 query.channels[i]);
        herald_user_free(user);
        conn_http_refuse(c, acl == ACL_INVALID_NAME ? 400 : 403, message);
        return;
    }
    struct sse_stream *st = calloc(1, sizeof *st + query.count * sizeof st->channels[0]);
    char *head = NULL;
    size_t len = 0;
    if (!st || build_head(c, req, user, w->rules, &head, &len) != 0) {
        free(st);
        herald_user_free(user);
        conn_http_refuse(c, 500, "Internal error");
        return;
    }
    struct session *s = conn_open_stream(c, head_len, client, user, head, len, ping_comment);
    free(head);
    if (!s) {
        free(st);
        return;
    }
    st->conn = c;
    st->count = query.count;
    for (size_t i = 0; i < query.count; i++) {
        memcpy(st->channels[i].name, query.channels[i], sizeof st->channels[i].name);
        if (i < query.since_count) st->channels[i].position = query.since[i];
    }
    session_set_output(s, &sse_output, st);
    w->stats.sse_streams_total++;
    for (size_t i = 0; i < query.count && conn_is_open(c); i++) {
        const struct sse_position *p = &st->channels[i].position;
        struct subs_since since = {p->offset[0] ? p->offset : NULL, p->epoch[0] ? p->epoch : NULL};
        session_subscribe(s, query.channels[i], i < query.since_count ? &since : NULL);
    }
}
