/* fuzz_protocol.c -- libFuzzer target for the JSON command parser and the
 * server message builders.
 *
 * The input is one client text message. It is parsed as a command and answered
 * the way the gateway answers it (subscribed/unsubscribed, pong, channels, or an
 * error echoing the request's id), and it is also wrapped as a published event
 * payload. Besides memory safety and leaks it checks the contract: the parse
 * result is one of the parser's own errors, a command's channel is a valid name,
 * its id is the message's string or number "id", and every reply is one valid
 * UTF-8 JSON object of the right type whose reported length is its length,
 * echoing the id and, for an event, carrying exactly the payload's value. */
#include "acl.h"
#include "protocol.h"
#include "ws_codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond) {
    if (!cond) abort();
}

/* Checks a builder's output and returns it parsed (caller releases); frees text. */
static json_t *check_reply(char *text, size_t len, const char *type, const json_t *id) {
    require(text != NULL);
    require(len == strlen(text));
    require(ws_utf8_valid((const uint8_t *)text, len));
    json_t *msg = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    require(json_is_object(msg));
    require(strcmp(json_string_value(json_object_get(msg, "type")), type) == 0);
    const char *ts = json_string_value(json_object_get(msg, "timestamp"));
    require(ts != NULL && strlen(ts) == PROTO_TIMESTAMP_LEN);

    json_t *echoed = json_object_get(msg, "id");
    if (!id) {
        require(echoed == NULL);
    } else if (json_is_string(id)) {
        require(json_is_string(echoed) && json_string_length(echoed) == json_string_length(id) &&
                memcmp(json_string_value(echoed), json_string_value(id), json_string_length(id)) ==
                    0);
    } else if (json_is_integer(id)) {
        /* Read back as a real: the value must survive, within a double's precision. */
        require(json_is_number(echoed) &&
                json_number_value(echoed) == (double)json_integer_value(id));
    } else {
        /* A real id is dumped with 10 significant digits (JSON_REAL_PRECISION(10)
         * in proto_finish), so only its presence and type are checked here. */
        require(json_is_number(echoed));
    }
    free(text);
    return msg;
}

static void check_command(const struct proto_command *cmd) {
    size_t len = 0;
    json_t *msg;
    switch (cmd->type) {
        case PROTO_CMD_SUBSCRIBE:
        case PROTO_CMD_UNSUBSCRIBE: {
            require(cmd->channel != NULL);
            size_t channel_len = strlen(cmd->channel);
            require(channel_len <= ACL_MAX_CHANNEL);
            require(acl_channel_name_valid(cmd->channel, channel_len));
            require(acl_may_subscribe(acl_default_rules(), NULL, cmd->channel) != ACL_INVALID_NAME);

            const char *type = cmd->type == PROTO_CMD_SUBSCRIBE ? "subscribed" : "unsubscribed";
            msg = check_reply(proto_build_channel_reply(type, cmd->channel, cmd->id, &len), len,
                              type, cmd->id);
            require(strcmp(json_string_value(json_object_get(msg, "channel")), cmd->channel) == 0);
            json_decref(msg);

            /* After a Redis outage the channel is listed in a gap message. */
            const char *gap_channels[] = {"announcements", cmd->channel};
            msg = check_reply(proto_build_gap(gap_channels, 2, &len), len, "gap", NULL);
            require(strcmp(json_string_value(json_array_get(json_object_get(msg, "channels"), 1)),
                           cmd->channel) == 0);
            json_decref(msg);

            /* The ACL refusal the gateway would send instead. */
            herald_user user = {.user_id = "u1", .email = "a@b.c", .role = "user"};
            enum proto_error refusal =
                proto_error_from_acl(acl_may_subscribe(acl_default_rules(), &user, cmd->channel));
            require(refusal == PROTO_OK || refusal == PROTO_ERR_FORBIDDEN ||
                    refusal == PROTO_ERR_UNKNOWN_CHANNEL);
            if (refusal != PROTO_OK) {
                msg = check_reply(proto_build_error(refusal, NULL, cmd->id, &len), len, "error",
                                  cmd->id);
                json_decref(msg);
            }
            return;
        }
        case PROTO_CMD_PING:
            require(cmd->channel == NULL);
            json_decref(check_reply(proto_build_pong(cmd->id, &len), len, "pong", cmd->id));
            return;
        case PROTO_CMD_LIST_CHANNELS: {
            require(cmd->channel == NULL);
            herald_user admin = {.user_id = "u1", .role = "admin", .admin = true};
            msg = check_reply(proto_build_channels(NULL, acl_default_rules(), cmd->id, &len), len,
                              "channels", cmd->id);
            require(json_array_size(json_object_get(msg, "channels")) == 1);
            json_decref(msg);
            msg = check_reply(proto_build_channels(&admin, acl_default_rules(), cmd->id, &len), len,
                              "channels", cmd->id);
            require(json_array_size(json_object_get(msg, "channels")) > 1);
            json_decref(msg);
            return;
        }
        case PROTO_CMD_STATS: require(cmd->channel == NULL); return;
    }
    abort(); /* a command type outside the enum */
}

/* The input as a published payload: accepted exactly when it is one JSON value
 * under the payload flags without a raw NUL byte (which jansson lets through
 * after a number), and then embedded byte for byte. */
static void check_event(const char *channel, const char *data, size_t size) {
    size_t len = 0;
    enum proto_error err = PROTO_ERR_COUNT;
    char *text = proto_build_event(channel, data, size, NULL, &len, &err);
    /* An independent parse with the documented rules is the oracle. */
    json_t *payload =
        memchr(data, '\0', size)
            ? NULL
            : json_loadb(data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
                         NULL);
    if (!payload) {
        require(text == NULL && err == PROTO_ERR_BAD_JSON);
        return;
    }
    require(text != NULL && err == PROTO_OK);
    require(memchr(text, '\0', len) == NULL);
    json_t *msg = check_reply(text, len, "event", NULL);
    require(strcmp(json_string_value(json_object_get(msg, "channel")), channel) == 0);
    require(json_equal(json_object_get(msg, "data"), payload));
    json_decref(msg);
    json_decref(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    struct proto_command cmd;
    enum proto_error err = proto_parse_command(buf, size, &cmd);
    require(err == PROTO_OK || err == PROTO_ERR_BAD_JSON || err == PROTO_ERR_INVALID_MESSAGE ||
            err == PROTO_ERR_MISSING_FIELD || err == PROTO_ERR_INVALID_FIELD ||
            err == PROTO_ERR_UNKNOWN_TYPE || err == PROTO_ERR_INVALID_CHANNEL);

    if (err == PROTO_ERR_BAD_JSON) {
        require(cmd.root == NULL && cmd.id == NULL && cmd.channel == NULL);
    } else {
        require(cmd.root != NULL);
        require(json_is_object(cmd.root) == (err != PROTO_ERR_INVALID_MESSAGE));
    }
    if (cmd.id) {
        require(json_is_string(cmd.id) || json_is_number(cmd.id));
        require(cmd.id == json_object_get(cmd.root, "id"));
    }
    if (err != PROTO_OK) require(cmd.channel == NULL);

    if (err == PROTO_OK) {
        check_command(&cmd);
    } else {
        size_t len = 0;
        json_t *msg = check_reply(proto_build_error(err, NULL, cmd.id, &len), len, "error", cmd.id);
        require(strcmp(json_string_value(json_object_get(msg, "code")), proto_error_code(err)) ==
                0);
        json_decref(msg);
    }

    check_event(err == PROTO_OK && cmd.channel ? cmd.channel : "apps:created", buf, size);
    proto_command_free(&cmd);
    require(cmd.root == NULL && cmd.id == NULL && cmd.channel == NULL);
    return 0;
}
