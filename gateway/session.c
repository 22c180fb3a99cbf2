/* session.c -- client commands, rate limit, access re-checks, reply order. */
#include "session.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "conn.h"
#include "log.h"
#include "protocol.h"
#include "stats.h"
#include "subs.h"
#include "worker.h"
#include "ws_codec.h"

#define RATE_WINDOW 10.0 /* seconds over which refused messages are counted */

void session_init(struct session *s, struct conn *c, struct worker *w, herald_user *user,
                  double now) {
    memset(s, 0, sizeof *s);
    s->conn = c;
    s->w = w;
    s->user = user;
    s->tokens = (double)w->cfg->rate_burst;
    s->tokens_at = now;
    s->replies_tail = &s->replies;
}

static void reply_free(struct reply *r) {
    json_decref(r->id);
    free(r->text);
    if (r->after) evbuffer_free(r->after);
    free(r);
}

void session_set_output(struct session *s, const struct session_output *output, void *arg) {
    s->output = output;
    s->output_arg = arg;
}

/* The session's output, WebSocket-framed unless it has its own. */
void session_send(struct session *s, const char *text, size_t len) {
    if (s->output)
        s->output->message(s->output_arg, text, len);
    else
        conn_send_text(s->conn, text, len);
}

static void send_frames(struct session *s, struct evbuffer *frames) {
    if (s->output)
        s->output->frames(s->output_arg, frames);
    else
        conn_send_buffer(s->conn, frames);
}

void session_free(struct session *s) {
    subs_remove_all(s->w->subs, &s->subs);
    if (s->output && s->output->release) s->output->release(s->output_arg);
    s->output = NULL;
    s->output_arg = NULL;
    s->sub_count = 0;
    while (s->replies) {
        struct reply *r = s->replies;
        s->replies = r->next;
        reply_free(r);
    }
    s->replies_tail = &s->replies;
    s->held_bytes = 0;
    herald_user_free(s->user);
    s->user = NULL;
}

size_t session_held_bytes(const struct session *s) {
    return s->held_bytes;
}

/* ---- replies, in request order --------------------------------------------- */

/* Sends the built replies at the head of the queue, up to the first that waits. */
static void flush_replies(struct session *s) {
    while (s->replies && s->replies->text) {
        struct reply *r = s->replies;
        s->replies = r->next;
        if (!s->replies) s->replies_tail = &s->replies;
        s->held_bytes -= r->len;
        session_send(s, r->text, r->len);
        if (r->after) {
            s->held_bytes -= evbuffer_get_length(r->after);
            send_frames(s, r->after);
        }
        reply_free(r);
    }
}

/* Queues a built reply (text is taken; NULL, out of memory, closes 1011). */
static void reply(struct session *s, char *text, size_t len) {
    if (!text) {
        conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    if (!s->replies) { /* nothing waits: straight out */
        session_send(s, text, len);
        free(text);
        return;
    }
    struct reply *r = calloc(1, sizeof *r);
    if (!r) {
        free(text);
        conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    r->text = text;
    r->len = len;
    *s->replies_tail = r;
    s->replies_tail = &r->next;
    s->held_bytes += len;
    conn_check_queue(s->conn);
}

/* Queues a reply that waits for sub's confirmation. */
static bool reply_wait(struct session *s, struct sub *sub, const json_t *id) {
    struct reply *r = calloc(1, sizeof *r);
    if (!r) return false;
    r->waiting_for = sub;
    r->id = id ? json_deep_copy(id) : NULL;
    *s->replies_tail = r;
    s->replies_tail = &r->next;
    return true;
}

static void reply_error(struct session *s, enum proto_error err, const char *message,
                        const json_t *id) {
    size_t len = 0;
    char *text = proto_build_error(err, message, id, &len);
    reply(s, text, len);
}

void session_on_subscribed(struct session *s, struct sub *sub, struct subs_ready *ready) {
    for (struct reply *r = s->replies; r; r = r->next) {
        if (r->waiting_for != sub) continue;
        r->waiting_for = NULL;
        r->text = proto_build_subscribed(sub->channel->name, ready->offset, ready->epoch,
                                         ready->recovered, r->id, &r->len);
        if (!r->text) {
            conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
            return;
        }
        s->held_bytes += r->len;
        if (ready->after) { /* behind the first answer only */
            r->after = ready->after;
            ready->after = NULL;
            s->held_bytes += evbuffer_get_length(r->after);
        }
    }
    if (ready->after) { /* nobody asked (a recovery after an outage): events only */
        send_frames(s, ready->after);
        evbuffer_free(ready->after);
        ready->after = NULL;
    }
    flush_replies(s);
    conn_check_queue(s->conn);
}

void session_on_refused(struct session *s, struct sub *sub, const char *reason) {
    for (struct sub **p = &s->subs; *p; p = &(*p)->conn_next) {
        if (*p != sub) continue;
        *p = sub->conn_next;
        s->sub_count--;
        break;
    }
    char message[256];
    snprintf(message, sizeof message, "Redis refused the subscription: %s", reason);
    const char *channel = sub->channel->name;
    bool answered = false;
    for (struct reply *r = s->replies; r; r = r->next) {
        if (r->waiting_for != sub) continue;
        r->waiting_for = NULL;
        r->text = proto_build_error(PROTO_ERR_SUBSCRIBE_FAILED, message, r->id, &r->len);
        if (!r->text) {
            conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
            return;
        }
        s->held_bytes += r->len;
        answered = true;
    }
    log_warn("event=subscribe_refused conn=%s channel=%s reason=%s", conn_id(s->conn),
             log_q(channel), log_q(reason));
    if (!answered) { /* a live subscription lost on a resubscribe */
        size_t len = 0;
        char *text = proto_finish(json_pack("{s:s, s:s, s:s}", "type", "unsubscribed", "channel",
                                            channel, "reason", message),
                                  NULL, &len);
        reply(s, text, len);
    }
    flush_replies(s);
}

int session_deliver(struct session *s, struct shared_frame *frame, unsigned events) {
    return conn_send_frame(s->conn, frame, events);
}

int session_deliver_sse(struct session *s, const struct subs_sse_batch *batch) {
    if (!s->output || !s->output->batch) return -1;
    return s->output->batch(s->output_arg, batch);
}

/* ---- commands ------------------------------------------------------------- */

/* A subscribe to channel, recovering from since (NULL: none); id is echoed. */
static void subscribe(struct session *s, const char *channel, const struct subs_since *since,
                      const json_t *id) {
    struct worker *w = s->w;
    enum acl_result acl = acl_may_subscribe(w->rules, s->user, channel);
    if (acl != ACL_ALLOW) {
        reply_error(s, proto_error_from_acl(acl), NULL, id);
        return;
    }
    if (s->sub_count >= (unsigned)w->cfg->max_subscriptions && !subs_contains(s->subs, channel)) {
        reply_error(s, PROTO_ERR_TOO_MANY_SUBSCRIPTIONS, NULL, id);
        return;
    }
    struct sub *sub = NULL;
    size_t len = 0;
    enum subs_add_result added =
        subs_add(w->subs, s, s->output != NULL, &s->subs, channel, since, &sub);
    switch (added) {
        case SUBS_ADDED_CONFIRMED: s->sub_count++; /* fall through */
        case SUBS_ALREADY: {
            /* Live at once: with Redis away, a recovery cannot be proven. */
            struct subs_ready ready;
            subs_position(sub, &ready);
            if (since && added == SUBS_ADDED_CONFIRMED) ready.recovered = 0;
            char *text = proto_build_subscribed(channel, ready.offset, ready.epoch, ready.recovered,
                                                id, &len);
            reply(s, text, len);
            return;
        }
        case SUBS_ADDED_PENDING: s->sub_count++; /* fall through */
        case SUBS_ALREADY_PENDING:
            if (!reply_wait(s, sub, id)) conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
            return;
        case SUBS_TOO_MANY_CHANNELS: reply_error(s, PROTO_ERR_TOO_MANY_CHANNELS, NULL, id); return;
        case SUBS_NO_MEMORY: reply_error(s, PROTO_ERR_INTERNAL, NULL, id); return;
    }
}

void session_subscribe(struct session *s, const char *channel, const struct subs_since *since) {
    subscribe(s, channel, since, NULL);
}

static void handle_subscribe(struct session *s, const struct proto_command *cmd) {
    struct subs_since since = {cmd->since_offset, cmd->since_epoch};
    subscribe(s, cmd->channel, cmd->has_since ? &since : NULL, cmd->id);
}

static void handle_command(struct session *s, const struct proto_command *cmd) {
    size_t len = 0;
    char *text = NULL;
    switch (cmd->type) {
        case PROTO_CMD_SUBSCRIBE: handle_subscribe(s, cmd); return;
        case PROTO_CMD_UNSUBSCRIBE:
            if (subs_remove(s->w->subs, &s->subs, cmd->channel)) s->sub_count--;
            text = proto_build_channel_reply("unsubscribed", cmd->channel, cmd->id, &len);
            break;
        case PROTO_CMD_PING: text = proto_build_pong(cmd->id, &len); break;
        case PROTO_CMD_LIST_CHANNELS:
            text = proto_build_channels(s->user, s->w->rules, cmd->id, &len);
            break;
        case PROTO_CMD_STATS:
            if (!s->user || !s->user->admin) {
                reply_error(s, PROTO_ERR_FORBIDDEN, "Stats are for admins only", cmd->id);
                return;
            }
            text = stats_reply(s->w, cmd->id, &len);
            break;
    }
    reply(s, text, len);
}

/* Takes a token from the bucket; false when it is empty. */
static bool rate_allow(struct session *s, double now) {
    const struct config *cfg = s->w->cfg;
    s->tokens += (now - s->tokens_at) * cfg->rate_limit;
    if (s->tokens > (double)cfg->rate_burst) s->tokens = (double)cfg->rate_burst;
    s->tokens_at = now;
    if (s->tokens < 1.0) return false;
    s->tokens -= 1.0;
    return true;
}

bool session_allow_ping(struct session *s, double now) {
    return rate_allow(s, now);
}

/* A message over the rate: refused with an error, or the connection closed
 * 4008 when it keeps sending regardless. */
static void refuse_over_rate(struct session *s, const uint8_t *data, size_t len, double now) {
    struct worker *w = s->w;
    w->stats.rate_limited++;
    if (now - s->refusals_since > RATE_WINDOW) {
        s->refusals = 0;
        s->refusals_since = now;
    }
    if (++s->refusals > (unsigned)w->cfg->rate_burst) {
        w->stats.rate_limit_closes++;
        log_info("event=rate_limit_close conn=%s peer=%s", conn_id(s->conn),
                 log_q(conn_peer(s->conn)));
        conn_close(s->conn, WS_CLOSE_RATE_LIMITED, NULL);
        return;
    }
    struct proto_command cmd;
    proto_parse_command((const char *)data, len, &cmd); /* only for the id to echo */
    reply_error(s, PROTO_ERR_RATE_LIMITED, NULL, cmd.id);
    proto_command_free(&cmd);
}

void session_on_text(struct session *s, const uint8_t *data, size_t len, double now) {
    s->w->stats.messages_in++;
    if (!rate_allow(s, now)) {
        refuse_over_rate(s, data, len, now);
        return;
    }
    if (len == 1 && data[0] == '2') { /* the minimal heartbeat some clients send */
        char *three = strdup("3");
        reply(s, three, 1);
        return;
    }
    struct proto_command cmd;
    enum proto_error err = proto_parse_command((const char *)data, len, &cmd);
    if (err != PROTO_OK)
        reply_error(s, err, NULL, cmd.id);
    else
        handle_command(s, &cmd);
    proto_command_free(&cmd);
}

/* ---- server-initiated messages --------------------------------------------- */

void session_recheck_access(struct session *s) {
    if (!conn_is_open(s->conn)) return;
    struct sub *sub = s->subs;
    while (sub) {
        struct sub *next = sub->conn_next;
        if (acl_may_subscribe(s->w->rules, s->user, sub->channel->name) != ACL_ALLOW) {
            char channel[ACL_MAX_CHANNEL + 1];
            snprintf(channel, sizeof channel, "%s", sub->channel->name);
            if (subs_remove(s->w->subs, &s->subs, channel)) s->sub_count--;
            log_info("event=access_revoked conn=%s channel=%s", conn_id(s->conn), log_q(channel));
            size_t len = 0;
            char *text = proto_finish(json_pack("{s:s, s:s, s:s}", "type", "unsubscribed",
                                                "channel", channel, "reason", "access revoked"),
                                      NULL, &len);
            reply(s, text, len);
        }
        sub = next;
    }
}

void session_send_gap(struct session *s) {
    if (!conn_is_open(s->conn) || !s->subs) return;
    const char **names = malloc(s->sub_count * sizeof *names);
    if (!names) {
        conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    size_t count = 0;
    for (struct sub *sub = s->subs; sub && count < s->sub_count; sub = sub->conn_next) {
        if (!sub->gap_owed) continue;
        sub->gap_owed = false;
        names[count++] = sub->channel->name;
    }
    if (count == 0) {
        free(names);
        return;
    }
    size_t len = 0;
    char *text = proto_build_gap(names, count, &len);
    free(names);
    if (!text) {
        conn_close(s->conn, WS_CLOSE_INTERNAL_ERROR, NULL);
        return;
    }
    session_send(s, text, len); /* not a reply: never held */
    free(text);
}
