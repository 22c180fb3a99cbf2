/* herald_pub.c -- the publishing library: validate an event, PUBLISH it to Redis.
 *
 * Every check that can refuse an event (channel name, size, JSON) runs before
 * the connection is touched, so a bad event never reaches Redis and never costs
 * a round trip. Redis failures get one reconnect and one retry inside the
 * call; if that fails too the context is dropped and the next call starts with
 * a fresh connection. A retry after a lost reply can deliver an event twice:
 * delivery is at least once, never silently zero. Like hiredis, the library
 * leaves SIGPIPE alone: a program should ignore it, or a write to a Redis
 * that closed the connection kills the process. */
#include "herald_pub.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "acl.h"
#include "protocol.h"
#include "redis_url.h"

#define HERALD_PUB_DEFAULT_MAX_SIZE 65536
#define HERALD_PUB_MAX_PREFIX       64
#define HERALD_PUB_TIMEOUT_SEC      2  /* connect, and each command after it */
#define HERALD_PUB_QUOTED_MAX       64 /* bytes of a bad channel name quoted in an error */

struct herald_pub {
    redisContext *redis; /* NULL after a failure, until the next publish reconnects */
    struct redis_url url;
    char *prefix;
    size_t prefix_len;
    size_t max_size;
    char *channel_buf; /* prefix + channel, sized for the longest valid channel */
    char error[512];
};

static void set_error(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;

    if (!buf || size == 0) return;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

/* Writes name for an error message: printable ASCII as is, other bytes as \xNN,
 * cut after HERALD_PUB_QUOTED_MAX bytes with "...". */
static void quote_name(const char *name, char *out, size_t out_size) {
    size_t n = 0, len = strlen(name);

    for (size_t i = 0; i < len && i < HERALD_PUB_QUOTED_MAX && n + 5 < out_size; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0x20 && c < 0x7f)
            out[n++] = (char)c;
        else
            n += (size_t)snprintf(out + n, out_size - n, "\\x%02x", c);
    }
    if (len > HERALD_PUB_QUOTED_MAX && n + 4 < out_size) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static int prefix_valid(const char *prefix) {
    size_t len = strlen(prefix);

    if (len > HERALD_PUB_MAX_PREFIX) return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isgraph((unsigned char)prefix[i])) return 0;
    }
    return 1;
}

/* Runs one command whose reply must not be an error; used for AUTH and SELECT. */
static int run_setup_command(redisContext *c, const char *what, char *err, size_t err_size,
                             const char *format, ...) {
    va_list ap;
    redisReply *reply;

    va_start(ap, format);
    reply = redisvCommand(c, format, ap);
    va_end(ap);
    if (!reply) {
        set_error(err, err_size, "Redis %s failed: %s", what, c->errstr);
        return -1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        set_error(err, err_size, "Redis refused %s: %s", what, reply->str);
        freeReplyObject(reply);
        return -1;
    }
    freeReplyObject(reply);
    return 0;
}

/* Opens a connection as url says (AUTH, SELECT). Returns NULL with err set.
 * Messages name the host and port, never the password. */
static redisContext *open_redis(const struct redis_url *url, char *err, size_t err_size) {
    struct timeval timeout = {HERALD_PUB_TIMEOUT_SEC, 0};
    redisContext *c = redisConnectWithTimeout(url->host, url->port, timeout);

    if (!c) {
        set_error(err, err_size, "cannot connect to Redis at %s:%d: out of memory", url->host,
                  url->port);
        return NULL;
    }
    if (c->err) {
        set_error(err, err_size, "cannot connect to Redis at %s:%d: %s", url->host, url->port,
                  c->errstr);
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, timeout) != REDIS_OK) {
        set_error(err, err_size, "cannot set the Redis command timeout: %s", c->errstr);
        redisFree(c);
        return NULL;
    }
    if (url->password) {
        int rc = url->user ? run_setup_command(c, "AUTH", err, err_size, "AUTH %s %s", url->user,
                                               url->password)
                           : run_setup_command(c, "AUTH", err, err_size, "AUTH %s", url->password);
        if (rc < 0) goto failed;
    }
    if (url->db != 0 && run_setup_command(c, "SELECT", err, err_size, "SELECT %d", url->db) < 0)
        goto failed;
    return c;

failed:
    redisFree(c);
    return NULL;
}

herald_pub *herald_pub_connect(const char *url, const char *prefix, char *err, size_t err_size) {
    herald_pub *p = calloc(1, sizeof *p);
    char reason[256];

    if (!p) {
        set_error(err, err_size, "out of memory");
        return NULL;
    }
    if (redis_url_parse(url ? url : HERALD_PUB_DEFAULT_URL, &p->url, reason, sizeof reason) < 0) {
        set_error(err, err_size, "invalid Redis URL: %s", reason);
        goto failed;
    }
    if (!prefix) prefix = HERALD_PUB_DEFAULT_PREFIX;
    if (!prefix_valid(prefix)) {
        set_error(err, err_size,
                  "invalid channel prefix: at most %d printable characters, no spaces",
                  HERALD_PUB_MAX_PREFIX);
        goto failed;
    }
    p->prefix = strdup(prefix);
    p->prefix_len = strlen(prefix);
    p->channel_buf = malloc(p->prefix_len + ACL_MAX_CHANNEL + 1);
    if (!p->prefix || !p->channel_buf) {
        set_error(err, err_size, "out of memory");
        goto failed;
    }
    memcpy(p->channel_buf, p->prefix, p->prefix_len);
    p->max_size = HERALD_PUB_DEFAULT_MAX_SIZE;
    p->redis = open_redis(&p->url, err, err_size);
    if (!p->redis) goto failed;
    return p;

failed:
    herald_pub_close(p);
    return NULL;
}

void herald_pub_set_max_size(herald_pub *p, size_t max_size) {
    p->max_size = max_size;
}

const char *herald_pub_last_error(const herald_pub *p) {
    return p->error;
}

/* The checks that need no network: channel name, size, one JSON value. */
static enum herald_pub_status validate(herald_pub *p, const char *channel, const char *json,
                                       size_t *json_len) {
    char quoted[HERALD_PUB_QUOTED_MAX * 4 + 8];

    if (!channel || !acl_channel_name_valid(channel, strlen(channel))) {
        quote_name(channel ? channel : "", quoted, sizeof quoted);
        set_error(p->error, sizeof p->error,
                  "invalid channel name '%s': use namespace:name with [A-Za-z0-9_.:-], "
                  "at most %d bytes",
                  quoted, ACL_MAX_CHANNEL);
        return HERALD_PUB_BAD_CHANNEL;
    }
    if (!json) {
        set_error(p->error, sizeof p->error, "no event data: expected a JSON text");
        return HERALD_PUB_BAD_JSON;
    }
    *json_len = strlen(json);
    if (*json_len > p->max_size) {
        set_error(p->error, sizeof p->error,
                  "event data too big: %zu bytes, the limit is %zu bytes", *json_len, p->max_size);
        return HERALD_PUB_TOO_BIG;
    }

    char why[200];
    if (proto_payload_check(json, *json_len, why, sizeof why) != 0) {
        set_error(p->error, sizeof p->error, "%s", why);
        return HERALD_PUB_BAD_JSON;
    }
    return HERALD_PUB_OK;
}

/* One PUBLISH attempt on the current connection. Returns 0 with *receivers
 * set, or -1 with p->error set. */
static int publish_once(herald_pub *p, size_t channel_len, const char *json, size_t json_len,
                        long long *receivers) {
    redisReply *reply =
        redisCommand(p->redis, "PUBLISH %b %b", p->channel_buf, channel_len, json, json_len);

    if (!reply) {
        set_error(p->error, sizeof p->error, "Redis PUBLISH to %s:%d failed: %s", p->url.host,
                  p->url.port, p->redis->errstr);
        return -1;
    }
    int rc = 0;
    if (reply->type == REDIS_REPLY_INTEGER) {
        *receivers = reply->integer;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        set_error(p->error, sizeof p->error, "Redis refused PUBLISH: %s", reply->str);
        rc = -1;
    } else {
        set_error(p->error, sizeof p->error, "unexpected Redis reply to PUBLISH (type %d)",
                  reply->type);
        rc = -1;
    }
    freeReplyObject(reply);
    return rc;
}

/* Replaces the connection with a fresh one. Returns 0, or -1 with p->error set
 * and no connection left. */
static int reconnect(herald_pub *p) {
    char reason[sizeof p->error];

    if (p->redis) {
        redisFree(p->redis);
        p->redis = NULL;
    }
    p->redis = open_redis(&p->url, reason, sizeof reason);
    if (!p->redis) {
        set_error(p->error, sizeof p->error, "%s", reason);
        return -1;
    }
    return 0;
}

enum herald_pub_status herald_pub_publish(herald_pub *p, const char *channel, const char *json,
                                          long *receivers) {
    size_t json_len = 0;
    enum herald_pub_status status = validate(p, channel, json, &json_len);

    if (status != HERALD_PUB_OK) return status;

    size_t channel_len = strlen(channel);
    memcpy(p->channel_buf + p->prefix_len, channel, channel_len);
    channel_len += p->prefix_len;

    long long count = 0;
    int rc = -1;
    if (p->redis) rc = publish_once(p, channel_len, json, json_len, &count);
    if (rc < 0) {
        /* The first failure's reason is kept when the reconnect fails too: it
         * is usually the more telling of the two. */
        char first[sizeof p->error];
        snprintf(first, sizeof first, "%s", p->redis ? p->error : "");
        if (reconnect(p) == 0) rc = publish_once(p, channel_len, json, json_len, &count);
        if (rc < 0) {
            if (first[0] != '\0') {
                char second[sizeof p->error];
                snprintf(second, sizeof second, "%s", p->error);
                set_error(p->error, sizeof p->error, "%s; retry failed: %s", first, second);
            }
            if (p->redis) {
                redisFree(p->redis);
                p->redis = NULL;
            }
            return HERALD_PUB_REDIS;
        }
    }
    if (receivers) *receivers = (long)count;
    p->error[0] = '\0';
    return HERALD_PUB_OK;
}

void herald_pub_close(herald_pub *p) {
    if (!p) return;
    if (p->redis) redisFree(p->redis);
    redis_url_free(&p->url);
    free(p->prefix);
    free(p->channel_buf);
    free(p);
}
