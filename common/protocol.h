/* protocol.h -- Herald's JSON messages: parsing client commands, building
 * server messages (jansson). Knows nothing of sockets or Redis.
 *
 * Every error a client can see is one row of a single table (enum
 * proto_error): its machine-readable code and its default human message. */
#ifndef HERALD_PROTOCOL_H
#define HERALD_PROTOCOL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "acl.h"
#include "history.h"
#include "jwt_auth.h"

#define PROTO_TIMESTAMP_LEN 24 /* 2025-11-25T12:00:00.000Z */

enum proto_error {
    PROTO_OK = 0,
    PROTO_ERR_BAD_JSON,        /* not JSON at all */
    PROTO_ERR_INVALID_MESSAGE, /* JSON, but not an object */
    PROTO_ERR_MISSING_FIELD,   /* "type" or "channel" absent */
    PROTO_ERR_INVALID_FIELD,   /* a field of the wrong type */
    PROTO_ERR_UNKNOWN_TYPE,
    PROTO_ERR_INVALID_CHANNEL, /* bad characters or too long */
    PROTO_ERR_UNKNOWN_CHANNEL, /* no rule covers it */
    PROTO_ERR_FORBIDDEN,
    PROTO_ERR_UNAUTHORIZED,  /* bad token (then close 4001) */
    PROTO_ERR_TOKEN_EXPIRED, /* token expired while connected (then close 4001) */
    PROTO_ERR_TOO_MANY_SUBSCRIPTIONS,
    PROTO_ERR_TOO_MANY_CHANNELS, /* the gateway worker's distinct-channel cap */
    PROTO_ERR_SUBSCRIBE_FAILED,  /* Redis refused the subscription */
    PROTO_ERR_RATE_LIMITED,
    PROTO_ERR_INTERNAL,
    PROTO_ERR_COUNT
};

/* The wire code ("bad_json", ...) and default message of an error. */
const char *proto_error_code(enum proto_error err);
const char *proto_error_message(enum proto_error err);

/* The protocol error for an ACL refusal (ACL_ALLOW maps to PROTO_OK). */
enum proto_error proto_error_from_acl(enum acl_result result);

enum proto_command_type {
    PROTO_CMD_SUBSCRIBE,
    PROTO_CMD_UNSUBSCRIBE,
    PROTO_CMD_PING,
    PROTO_CMD_LIST_CHANNELS,
    PROTO_CMD_STATS,
};

/* A parsed client command. channel and id are borrowed from root, which the
 * command owns: release with proto_command_free, also after an error. */
struct proto_command {
    enum proto_command_type type;
    const char *channel; /* subscribe/unsubscribe only */
    /* subscribe with "since":{"offset":O|null,"epoch":E|null}: has_since set,
     * since_offset / since_epoch NULL for null (offsets and epochs are
     * checked for syntax here). */
    bool has_since;
    const char *since_offset;
    const char *since_epoch;
    json_t *id; /* the request's "id" (string or number), NULL when absent */
    json_t *root;
};

/* Parses one text message. On error, cmd->id is still set when the message was
 * an object with a well-typed "id", so the error reply can echo it. Channel
 * names are checked for syntax here (PROTO_ERR_INVALID_CHANNEL), not for access. */
enum proto_error proto_parse_command(const char *buf, size_t len, struct proto_command *cmd);
void proto_command_free(struct proto_command *cmd);

/* Writes the current UTC time as 2025-11-25T12:00:00.000Z (plus NUL). */
void proto_timestamp(char out[PROTO_TIMESTAMP_LEN + 1]);

/* Builders. Each returns a malloc'd, compact JSON text (caller frees) and sets
 * *len, or NULL when out of memory. id (may be NULL) is echoed when given. */
char *proto_build_connected(const char *connection_id, const herald_user *user,
                            const struct acl_rules *rules, size_t *len);
char *proto_build_channel_reply(const char *type, const char *channel, const json_t *id,
                                size_t *len);
char *proto_build_pong(const json_t *id, size_t *len);
/* {"type":"subscribed","channel":C,"offset":O|null,"epoch":E|null} plus
 * "recovered" when recovered is 0 or 1 (-1: the subscribe asked for none). */
char *proto_build_subscribed(const char *channel, const char *offset, const char *epoch,
                             int recovered, const json_t *id, size_t *len);
char *proto_build_channels(const herald_user *user, const struct acl_rules *rules, const json_t *id,
                           size_t *len);
/* message NULL means the error's default message. */
char *proto_build_error(enum proto_error err, const char *message, const json_t *id, size_t *len);
char *proto_build_gap(const char *const *channels, size_t count, size_t *len);

/* Adds "timestamp" (and "id" when given) to msg, dumps it compactly and
 * releases msg. For messages assembled elsewhere (stats). */
char *proto_finish(json_t *msg, const json_t *id, size_t *len);

/* Checks an event payload (gateways and publishers alike): exactly one JSON
 * value, escaped NULs allowed, integers beyond 64 bits (the bytes are
 * forwarded unchanged, so nothing is lost to number conversion) but no number
 * beyond a double's range, no raw NUL byte: json_check_valid's rules. Returns
 * 0, or -1 with jansson's reason in why (may be NULL: then jansson is not run). */
int proto_payload_check(const char *data, size_t len, char *why, size_t why_size);

/* Where an event stands in its channel's history: its offset and the
 * history's epoch (empty strings for an event published without history). */
struct proto_position {
    const char *offset;
    const char *epoch;
};

/* The length of the "event" message for a channel name, a checked payload and
 * a position (NULL: none). */
size_t proto_event_size(size_t channel_len, size_t data_len, const struct proto_position *pos);

/* Writes that "event" message into out (exactly proto_event_size bytes, no
 * NUL): {"type":"event","channel":C,"data":D,"offset":O,"epoch":E,
 * "timestamp":T}, offset and epoch only with a position. The payload is
 * embedded as is; channel, offset and epoch need no escaping (their characters
 * are checked before they get here). */
void proto_write_event(char *out, const char *channel, size_t channel_len, const char *data,
                       size_t data_len, const struct proto_position *pos,
                       const char timestamp[PROTO_TIMESTAMP_LEN]);

/* A position read back from an event message (empty strings: none). */
struct proto_position_text {
    char offset[HISTORY_OFFSET_MAX + 1];
    char epoch[HISTORY_EPOCH_MAX + 1];
};

/* Reads back the channel (pointing into msg) and the position of a message
 * that proto_write_event wrote; returns 0, or -1 when msg is not such a
 * message. */
int proto_event_parts(const char *msg, size_t len, const char **channel, size_t *channel_len,
                      struct proto_position_text *pos);

/* Builds the "event" message for a published payload. data[0..data_len) must be
 * one JSON value; it is validated here and embedded as is (no re-encoding).
 * pos (NULL: none) adds "offset" and "epoch". Returns NULL with *err =
 * PROTO_ERR_BAD_JSON for an invalid payload. */
char *proto_build_event(const char *channel, const char *data, size_t data_len,
                        const struct proto_position *pos, size_t *len, enum proto_error *err);

#endif
