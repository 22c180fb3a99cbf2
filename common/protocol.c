/* protocol.c -- client command parsing and server message building. */
#include "protocol.h"

#include "history.h"
#include "json_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct {
    const char *code;
    const char *message;
} error_table[PROTO_ERR_COUNT] = {
    [PROTO_OK] = {"ok", "OK"},
    [PROTO_ERR_BAD_JSON] = {"bad_json", "Message is not valid JSON"},
    [PROTO_ERR_INVALID_MESSAGE] = {"invalid_message", "Message must be a JSON object"},
    [PROTO_ERR_MISSING_FIELD] = {"missing_field", "A required field is missing"},
    [PROTO_ERR_INVALID_FIELD] = {"invalid_field", "A field has the wrong type"},
    [PROTO_ERR_UNKNOWN_TYPE] = {"unknown_type", "Unknown message type"},
    [PROTO_ERR_INVALID_CHANNEL] = {"invalid_channel",
                                   "Channel names are namespace:name with [A-Za-z0-9_.:-], "
                                   "at most 128 bytes"},
    [PROTO_ERR_UNKNOWN_CHANNEL] = {"unknown_channel", "Unknown channel"},
    [PROTO_ERR_FORBIDDEN] = {"forbidden", "Not authorized to subscribe to this channel"},
    [PROTO_ERR_UNAUTHORIZED] = {"unauthorized", "Invalid token"},
    [PROTO_ERR_TOKEN_EXPIRED] = {"token_expired", "Token expired"},
    [PROTO_ERR_TOO_MANY_SUBSCRIPTIONS] = {"too_many_subscriptions",
                                          "Too many subscriptions on this connection"},
    [PROTO_ERR_TOO_MANY_CHANNELS] = {"too_many_channels",
                                     "This gateway serves too many channels; try again later"},
    [PROTO_ERR_SUBSCRIBE_FAILED] = {"subscribe_failed", "Redis refused the subscription"},
    [PROTO_ERR_RATE_LIMITED] = {"rate_limited", "Too many messages, slow down"},
    [PROTO_ERR_INTERNAL] = {"internal_error", "Internal error"},
};

const char *proto_error_code(enum proto_error err) {
    return err < PROTO_ERR_COUNT ? error_table[err].code : "internal_error";
}

const char *proto_error_message(enum proto_error err) {
    return err < PROTO_ERR_COUNT ? error_table[err].message : "Internal error";
}

enum proto_error proto_error_from_acl(enum acl_result result) {
    switch (result) {
        case ACL_ALLOW: return PROTO_OK;
        case ACL_FORBIDDEN: return PROTO_ERR_FORBIDDEN;
        case ACL_UNKNOWN_CHANNEL: return PROTO_ERR_UNKNOWN_CHANNEL;
        case ACL_INVALID_NAME: return PROTO_ERR_INVALID_CHANNEL;
    }
    return PROTO_ERR_INTERNAL;
}

static const struct {
    const char *name;
    enum proto_command_type type;
    bool needs_channel;
} command_table[] = {
    {"subscribe", PROTO_CMD_SUBSCRIBE, true}, {"unsubscribe", PROTO_CMD_UNSUBSCRIBE, true},
    {"ping", PROTO_CMD_PING, false},          {"list_channels", PROTO_CMD_LIST_CHANNELS, false},
    {"stats", PROTO_CMD_STATS, false},
};

/* A "since" field of subscribe: {"offset":O|null,"epoch":E|null}. */
static enum proto_error parse_since(struct proto_command *cmd) {
    json_t *since = json_object_get(cmd->root, "since");
    if (!since || json_is_null(since)) return PROTO_OK;
    if (!json_is_object(since)) return PROTO_ERR_INVALID_FIELD;
    json_t *offset = json_object_get(since, "offset"), *epoch = json_object_get(since, "epoch");
    uint64_t ms, seq;
    if (offset && !json_is_null(offset)) {
        if (!json_is_string(offset) ||
            history_offset_parse(json_string_value(offset), json_string_length(offset), &ms,
                                 &seq) != 0)
            return PROTO_ERR_INVALID_FIELD;
        cmd->since_offset = json_string_value(offset);
    }
    if (epoch && !json_is_null(epoch)) {
        const char *e = json_is_string(epoch) ? json_string_value(epoch) : NULL;
        size_t n = e ? json_string_length(epoch) : 0;
        if (!e || n == 0 || n > HISTORY_EPOCH_MAX || strspn(e, "0123456789") != n)
            return PROTO_ERR_INVALID_FIELD;
        cmd->since_epoch = e;
    }
    cmd->has_since = true;
    return PROTO_OK;
}

enum proto_error proto_parse_command(const char *buf, size_t len, struct proto_command *cmd) {
    memset(cmd, 0, sizeof *cmd);
    cmd->root = json_loadb(buf, len, JSON_DECODE_ANY, NULL);
    if (!cmd->root) return PROTO_ERR_BAD_JSON;
    if (!json_is_object(cmd->root)) return PROTO_ERR_INVALID_MESSAGE;

    json_t *id = json_object_get(cmd->root, "id");
    if (id) {
        if (!json_is_string(id) && !json_is_number(id)) return PROTO_ERR_INVALID_FIELD;
        cmd->id = id;
    }
    json_t *type = json_object_get(cmd->root, "type");
    if (!type) return PROTO_ERR_MISSING_FIELD;
    if (!json_is_string(type)) return PROTO_ERR_INVALID_FIELD;

    const char *name = json_string_value(type);
    for (size_t i = 0; i < sizeof command_table / sizeof command_table[0]; i++) {
        if (strcmp(name, command_table[i].name) != 0) continue;
        cmd->type = command_table[i].type;
        if (!command_table[i].needs_channel) return PROTO_OK;
        json_t *channel = json_object_get(cmd->root, "channel");
        if (!channel) return PROTO_ERR_MISSING_FIELD;
        if (!json_is_string(channel)) return PROTO_ERR_INVALID_FIELD;
        if (!acl_channel_name_valid(json_string_value(channel), json_string_length(channel)) ||
            strlen(json_string_value(channel)) != json_string_length(channel))
            return PROTO_ERR_INVALID_CHANNEL;
        cmd->channel = json_string_value(channel);
        if (cmd->type == PROTO_CMD_SUBSCRIBE) return parse_since(cmd);
        return PROTO_OK;
    }
    return PROTO_ERR_UNKNOWN_TYPE;
}

void proto_command_free(struct proto_command *cmd) {
    json_decref(cmd->root);
    memset(cmd, 0, sizeof *cmd);
}

void proto_timestamp(char out[PROTO_TIMESTAMP_LEN + 1]) {
    /* Every event carries one: the date and time are formatted once a second
     * (strftime is the costly part), the milliseconds every time. */
    static _Thread_local time_t cached_second = (time_t)-1;
    static _Thread_local char cached[PROTO_TIMESTAMP_LEN + 1];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_second) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        if (strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
            memcpy(out, "1970-01-01T00:00:00.000Z", PROTO_TIMESTAMP_LEN + 1);
            return;
        }
        cached_second = ts.tv_sec;
    }
    memcpy(out, cached, 19);
    int ms = (int)(ts.tv_nsec / 1000000);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

char *proto_finish(json_t *msg, const json_t *id, size_t *len) {
    char ts[PROTO_TIMESTAMP_LEN + 1];
    char *out = NULL;
    if (!msg) return NULL;
    proto_timestamp(ts);
    /* Ten digits keep figures readable; a real id is echoed with all 17 so the
     * client gets back exactly the number it sent. */
    size_t flags =
        JSON_COMPACT | (json_is_real(id) ? JSON_REAL_PRECISION(17) : JSON_REAL_PRECISION(10));
    if (json_object_set_new(msg, "timestamp", json_string(ts)) == 0 &&
        (!id || json_object_set(msg, "id", (json_t *)id) == 0)) {
        out = json_dumps(msg, flags);
    }
    json_decref(msg);
    if (out) *len = strlen(out);
    return out;
}

static json_t *user_json(const herald_user *user) {
    if (!user) return json_null();
    return json_pack("{s:s, s:s?, s:s?}", "userId", user->user_id, "email", user->email, "role",
                     user->role);
}

static int append_channel(const char *channel, void *arg) {
    return json_array_append_new(arg, json_string(channel));
}

static json_t *authorized_channels(const herald_user *user, const struct acl_rules *rules) {
    json_t *list = json_array();
    if (list && acl_each_authorized(rules, user, append_channel, list) < 0) {
        json_decref(list);
        return NULL;
    }
    return list;
}

char *proto_build_connected(const char *connection_id, const herald_user *user,
                            const struct acl_rules *rules, size_t *len) {
    json_t *msg =
        json_pack("{s:s, s:s, s:o, s:o}", "type", "connected", "connectionId", connection_id,
                  "user", user_json(user), "authorizedChannels", authorized_channels(user, rules));
    return proto_finish(msg, NULL, len);
}

char *proto_build_channel_reply(const char *type, const char *channel, const json_t *id,
                                size_t *len) {
    return proto_finish(json_pack("{s:s, s:s}", "type", type, "channel", channel), id, len);
}

char *proto_build_subscribed(const char *channel, const char *offset, const char *epoch,
                             int recovered, const json_t *id, size_t *len) {
    json_t *msg = json_pack("{s:s, s:s, s:s?, s:s?}", "type", "subscribed", "channel", channel,
                            "offset", offset, "epoch", epoch);
    if (msg && recovered >= 0 && json_object_set_new(msg, "recovered", json_boolean(recovered))) {
        json_decref(msg);
        return NULL;
    }
    return proto_finish(msg, id, len);
}

char *proto_build_pong(const json_t *id, size_t *len) {
    return proto_finish(json_pack("{s:s}", "type", "pong"), id, len);
}

char *proto_build_channels(const herald_user *user, const struct acl_rules *rules, const json_t *id,
                           size_t *len) {
    json_t *msg =
        json_pack("{s:s, s:o}", "type", "channels", "channels", authorized_channels(user, rules));
    return proto_finish(msg, id, len);
}

char *proto_build_error(enum proto_error err, const char *message, const json_t *id, size_t *len) {
    json_t *msg = json_pack("{s:s, s:s, s:s}", "type", "error", "code", proto_error_code(err),
                            "message", message ? message : proto_error_message(err));
    return proto_finish(msg, id, len);
}

char *proto_build_gap(const char *const *channels, size_t count, size_t *len) {
    json_t *list = json_array();
    for (size_t i = 0; list && i < count; i++) {
        if (json_array_append_new(list, json_string(channels[i])) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return proto_finish(json_pack("{s:s, s:o}", "type", "gap", "channels", list), NULL, len);
}

int proto_payload_check(const char *data, size_t len, char *why, size_t why_size) {
    /* The verdict is json_check's, which agrees with jansson without building
     * the value; jansson runs only to explain a refusal. */
    if (json_check_valid(data, len)) return 0;
    if (!why) return -1;
    /* JSON text never holds a raw NUL byte, but jansson 2.14 skips one that
     * follows a number ("1\0", akheron/jansson#331); json_check refuses it. */
    const char *nul = memchr(data, '\0', len);
    if (nul) {
        snprintf(why, why_size, "raw NUL byte at byte %zu", (size_t)(nul - data));
        return -1;
    }
    json_error_t jerr;
    json_t *parsed =
        json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
    if (parsed) {
        /* The two disagree: a json_check bug (the fuzzer looks for these). The
         * payload stays refused, the safer of the two answers. */
        json_decref(parsed);
        snprintf(why, why_size, "invalid JSON data");
        return -1;
    }
    snprintf(why, why_size, "invalid JSON data at byte %d: %s", jerr.position, jerr.text);
    return -1;
}

static const char event_head[] = "{\"type\":\"event\",\"channel\":\"";
static const char event_data[] = "\",\"data\":";
static const char event_offset[] = ",\"offset\":\"";
static const char event_epoch[] = "\",\"epoch\":\"";
static const char event_timestamp[] = ",\"timestamp\":\"";

static bool has_position(const struct proto_position *pos) {
    return pos && pos->offset && pos->offset[0];
}

size_t proto_event_size(size_t channel_len, size_t data_len, const struct proto_position *pos) {
    size_t size = sizeof event_head - 1 + channel_len + sizeof event_data - 1 + data_len +
                  sizeof event_timestamp - 1 + PROTO_TIMESTAMP_LEN + 2;
    if (has_position(pos))
        size += sizeof event_offset - 1 + strlen(pos->offset) + sizeof event_epoch - 1 +
                strlen(pos->epoch) + 1;
    return size;
}

static char *put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}

void proto_write_event(char *out, const char *channel, size_t channel_len, const char *data,
                       size_t data_len, const struct proto_position *pos,
                       const char timestamp[PROTO_TIMESTAMP_LEN]) {
    char *p = put(out, event_head, sizeof event_head - 1);
    p = put(p, channel, channel_len);
    p = put(p, event_data, sizeof event_data - 1);
    p = put(p, data, data_len);
    if (has_position(pos)) {
        p = put(p, event_offset, sizeof event_offset - 1);
        p = put(p, pos->offset, strlen(pos->offset));
        p = put(p, event_epoch, sizeof event_epoch - 1);
        p = put(p, pos->epoch, strlen(pos->epoch));
        *p++ = '"';
    }
    p = put(p, event_timestamp, sizeof event_timestamp - 1);
    p = put(p, timestamp, PROTO_TIMESTAMP_LEN);
    *p++ = '"';
    *p = '}';
}

int proto_event_parts(const char *msg, size_t len, const char **channel, size_t *channel_len,
                      struct proto_position_text *pos) {
    const size_t head = sizeof event_head - 1,
                 tail = sizeof event_timestamp - 1 + PROTO_TIMESTAMP_LEN + 2;
    if (len < head + tail || memcmp(msg, event_head, head) != 0) return -1;
    const char *name = msg + head, *quote = memchr(name, '"', len - head);
    if (!quote) return -1;
    *channel = name;
    *channel_len = (size_t)(quote - name);
    const char *end = msg + len - tail;
    memset(pos, 0, sizeof *pos);
    if (memcmp(end, event_timestamp, sizeof event_timestamp - 1) != 0) return -1;
    /* The position, when present, ends right before the timestamp:
     * ,"offset":"O","epoch":"E". The payload is one JSON value, so these
     * bytes (quotes unescaped) can only be ours there. */
    const char *p = end;
    if (p == msg || p[-1] != '"') return 0;
    const char *epoch_end = --p;
    while (p > msg && p[-1] >= '0' && p[-1] <= '9') p--;
    const char *epoch = p;
    size_t marker = sizeof event_epoch - 1;
    if (epoch == epoch_end || (size_t)(epoch_end - epoch) > HISTORY_EPOCH_MAX ||
        (size_t)(p - msg) < marker || memcmp(p - marker, event_epoch, marker) != 0)
        return 0;
    p -= marker;
    const char *offset_end = p;
    while (p > msg && ((p[-1] >= '0' && p[-1] <= '9') || p[-1] == '-')) p--;
    marker = sizeof event_offset - 1;
    if (p == offset_end || (size_t)(offset_end - p) > HISTORY_OFFSET_MAX ||
        (size_t)(p - msg) < marker || memcmp(p - marker, event_offset, marker) != 0)
        return 0;
    memcpy(pos->offset, p, (size_t)(offset_end - p));
    memcpy(pos->epoch, epoch, (size_t)(epoch_end - epoch));
    return 0;
}

char *proto_build_event(const char *channel, const char *data, size_t data_len,
                        const struct proto_position *pos, size_t *len, enum proto_error *err) {
    if (proto_payload_check(data, data_len, NULL, 0) != 0) {
        *err = PROTO_ERR_BAD_JSON;
        return NULL;
    }
    size_t channel_len = strlen(channel);
    size_t total = proto_event_size(channel_len, data_len, pos);
    char *out = malloc(total + 1);
    if (!out) {
        *err = PROTO_ERR_INTERNAL;
        return NULL;
    }
    char timestamp[PROTO_TIMESTAMP_LEN + 1];
    proto_timestamp(timestamp);
    proto_write_event(out, channel, channel_len, data, data_len, pos, timestamp);
    out[total] = '\0';
    *len = total;
    *err = PROTO_OK;
    return out;
}
