/* herald_pub.c -- the publishing library: validate an event, then publish it
 * to Redis with history (the script of history.c, by EVALSHA, falling back to
 * EVAL when Redis does not have it cached) or as a plain PUBLISH.
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
#include "cluster_slots.h"
#include "history.h"
#include "protocol.h"
#include "redis_url.h"

#define HERALD_PUB_DEFAULT_MAX_SIZE 65536
#define HERALD_PUB_MAX_PREFIX       64
#define HERALD_PUB_TIMEOUT_SEC      2  /* connect, and each command after it */
#define HERALD_PUB_QUOTED_MAX       64 /* bytes of a bad channel name quoted in an error */

/* A connection to one cluster node, opened when first needed. */
struct pub_node {
    struct pub_node *next;
    char host[CLUSTER_HOST_MAX];
    int port;
    redisContext *redis; /* NULL after a failure */
};

struct herald_pub {
    redisContext *redis; /* NULL after a failure, until the next publish reconnects */
    /* Cluster mode (herald_pub_connect_cluster): seeds.count > 0. */
    struct redis_cluster seeds;
    struct cluster_slot_map *map;
    struct pub_node *nodes;
    struct redis_url url;
    char *prefix;
    size_t prefix_len;
    size_t max_size;
    char *channel_buf; /* prefix + channel, sized for the longest valid channel */
    char *stream_key;  /* {prefix + channel}:history, same size plus the suffix */
    char *meta_key;    /* {prefix + channel}:meta */
    size_t key_size;
    bool history; /* herald_pub_set_history's switch */
    unsigned long history_size, history_ttl;
    const struct acl_rules *rules; /* borrowed; per-channel history policy, or NULL */
    char error[512];
};

_Static_assert(HERALD_PUB_OFFSET_MAX == HISTORY_OFFSET_MAX, "offset sizes agree");
_Static_assert(HERALD_PUB_EPOCH_MAX == HISTORY_EPOCH_MAX, "epoch sizes agree");
_Static_assert(HERALD_PUB_HISTORY_SIZE == HISTORY_DEFAULT_SIZE, "default sizes agree");
_Static_assert(HERALD_PUB_HISTORY_TTL == HISTORY_DEFAULT_TTL, "default ttls agree");

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

    if (len > HERALD_PUB_MAX_PREFIX || !history_prefix_valid(prefix)) return 0;
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

/* A publisher without a connection: the prefix checked, the buffers sized. */
static herald_pub *pub_new(const char *prefix, char *err, size_t err_size) {
    herald_pub *p = calloc(1, sizeof *p);

    if (!p) {
        set_error(err, err_size, "out of memory");
        return NULL;
    }
    if (!prefix) prefix = HERALD_PUB_DEFAULT_PREFIX;
    if (!prefix_valid(prefix)) {
        set_error(err, err_size,
                  "invalid channel prefix: at most %d printable characters, no spaces, "
                  "no braces",
                  HERALD_PUB_MAX_PREFIX);
        goto failed;
    }
    p->prefix = strdup(prefix);
    p->prefix_len = strlen(prefix);
    p->channel_buf = malloc(p->prefix_len + ACL_MAX_CHANNEL + 1);
    p->key_size = p->prefix_len + ACL_MAX_CHANNEL + HISTORY_KEY_EXTRA + 1;
    p->stream_key = malloc(p->key_size);
    p->meta_key = malloc(p->key_size);
    if (!p->prefix || !p->channel_buf || !p->stream_key || !p->meta_key) {
        set_error(err, err_size, "out of memory");
        goto failed;
    }
    memcpy(p->channel_buf, p->prefix, p->prefix_len);
    p->max_size = HERALD_PUB_DEFAULT_MAX_SIZE;
    p->history = true;
    p->history_size = HISTORY_DEFAULT_SIZE;
    p->history_ttl = HISTORY_DEFAULT_TTL;
    return p;

failed:
    herald_pub_close(p);
    return NULL;
}

herald_pub *herald_pub_connect(const char *url, const char *prefix, char *err, size_t err_size) {
    char reason[256];
    struct redis_url parsed;

    if (redis_url_parse(url ? url : HERALD_PUB_DEFAULT_URL, &parsed, reason, sizeof reason) < 0) {
        set_error(err, err_size, "invalid Redis URL: %s", reason);
        return NULL;
    }
    herald_pub *p = pub_new(prefix, err, err_size);
    if (!p) {
        redis_url_free(&parsed);
        return NULL;
    }
    p->url = parsed;
    p->redis = open_redis(&p->url, err, err_size);
    if (!p->redis) {
        herald_pub_close(p);
        return NULL;
    }
    return p;
}

void herald_pub_set_max_size(herald_pub *p, size_t max_size) {
    p->max_size = max_size;
}

int herald_pub_set_history(herald_pub *p, bool enabled, unsigned long size, unsigned long ttl) {
    if (size < 1 || size > HISTORY_MAX_SIZE || ttl < 1 || ttl > HISTORY_MAX_TTL) return -1;
    p->history = enabled;
    p->history_size = size;
    p->history_ttl = ttl;
    return 0;
}

void herald_pub_set_channel_rules(herald_pub *p, const struct acl_rules *rules) {
    p->rules = rules;
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

/* How one event goes out: a plain PUBLISH, or the history script with its
 * caps (decided once per call, before any attempt). */
struct publish_plan {
    size_t channel_len; /* of p->channel_buf */
    const char *json;
    size_t json_len;
    bool history;
    char size[24], ttl[24];
};

/* Reads the script's reply {offset, epoch, receivers} into result. */
static int read_script_reply(herald_pub *p, const redisReply *reply,
                             struct herald_pub_result *result) {
    uint64_t ms, seq;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_INTEGER ||
        history_offset_parse(reply->element[0]->str, reply->element[0]->len, &ms, &seq) < 0 ||
        reply->element[1]->len < 1 || reply->element[1]->len > HISTORY_EPOCH_MAX) {
        set_error(p->error, sizeof p->error,
                  "unexpected Redis reply to the history script (type %d)", reply->type);
        return -1;
    }
    memcpy(result->offset, reply->element[0]->str, reply->element[0]->len);
    result->offset[reply->element[0]->len] = '\0';
    memcpy(result->epoch, reply->element[1]->str, reply->element[1]->len);
    result->epoch[reply->element[1]->len] = '\0';
    result->receivers = (long)reply->element[2]->integer;
    return 0;
}

/* Runs the history script: EVALSHA, then EVAL when Redis answers NOSCRIPT
 * (its script cache is empty after a restart or SCRIPT FLUSH). */
/* ASKING before the next command (a one-command permit on a node importing the
 * slot); false when the connection failed. */
static bool send_asking(redisContext *c) {
    redisReply *reply = redisCommand(c, "ASKING");
    if (!reply) return false;
    freeReplyObject(reply);
    return true;
}

static redisReply *run_script(herald_pub *p, redisContext *c, const struct publish_plan *plan,
                              bool asking) {
    const char *sha = history_publish_sha();
    const char *argv[11] = {sha ? "EVALSHA" : "EVAL",
                            sha ? sha : history_publish_script,
                            "2",
                            p->stream_key,
                            p->meta_key,
                            p->channel_buf,
                            plan->json,
                            plan->size,
                            plan->ttl,
                            p->seeds.count ? "SPUBLISH" : "PUBLISH"};
    size_t lens[11];

    /* The channel (argv[5]) is not NUL-terminated in channel_buf. */
    for (int i = 0; i < 10; i++)
        lens[i] = i == 5 ? plan->channel_len : i == 6 ? plan->json_len : strlen(argv[i]);
    if (asking && !send_asking(c)) return NULL;
    redisReply *reply = redisCommandArgv(c, 10, argv, lens);
    if (sha && reply && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(reply);
        argv[0] = "EVAL";
        argv[1] = history_publish_script;
        lens[0] = 4;
        lens[1] = strlen(history_publish_script);
        if (asking && !send_asking(c)) return NULL;
        reply = redisCommandArgv(c, 10, argv, lens);
    }
    return reply;
}

/* Sends the event's command on c; the reply (NULL on a connection failure,
 * with p->error set). */
static redisReply *send_event(herald_pub *p, redisContext *c, const struct publish_plan *plan,
                              const char *host, int port, bool asking) {
    const char *verb = p->seeds.count ? "SPUBLISH" : "PUBLISH";
    redisReply *reply = NULL;
    if (plan->history)
        reply = run_script(p, c, plan, asking);
    else if (!asking || send_asking(c))
        reply = redisCommand(c, "%s %b %b", verb, p->channel_buf, plan->channel_len, plan->json,
                             plan->json_len);
    if (!reply)
        set_error(p->error, sizeof p->error, "Redis %s to %s:%d failed: %s",
                  plan->history ? "EVALSHA" : verb, host, port, c->errstr);
    return reply;
}

/* Reads an event's reply into result (consumes reply). 0, or -1 with p->error. */
static int read_event_reply(herald_pub *p, const struct publish_plan *plan, redisReply *reply,
                            struct herald_pub_result *result) {
    const char *what = plan->history    ? "the history script"
                       : p->seeds.count ? "SPUBLISH"
                                        : "PUBLISH";
    int rc = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        set_error(p->error, sizeof p->error, "Redis refused %s: %s", what, reply->str);
        rc = -1;
    } else if (plan->history) {
        rc = read_script_reply(p, reply, result);
    } else if (reply->type == REDIS_REPLY_INTEGER) {
        result->receivers = (long)reply->integer;
        result->offset[0] = result->epoch[0] = '\0';
    } else {
        set_error(p->error, sizeof p->error, "unexpected Redis reply to %s (type %d)", what,
                  reply->type);
        rc = -1;
    }
    freeReplyObject(reply);
    return rc;
}

/* One publish attempt on the current connection. Returns 0 with *result set,
 * or -1 with p->error set. */
static int publish_once(herald_pub *p, const struct publish_plan *plan,
                        struct herald_pub_result *result) {
    redisReply *reply = send_event(p, p->redis, plan, p->url.host, p->url.port, false);
    if (!reply) return -1;
    return read_event_reply(p, plan, reply, result);
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

/* Fills plan for channel: its Redis channel, keys and history policy. */
static void make_plan(herald_pub *p, const char *channel, const char *json, size_t json_len,
                      struct publish_plan *plan) {
    size_t channel_len = strlen(channel);
    unsigned long size = p->history_size, ttl = p->history_ttl;

    memcpy(p->channel_buf + p->prefix_len, channel, channel_len);
    p->channel_buf[p->prefix_len + channel_len] = '\0'; /* argv strings are measured with strlen */
    plan->channel_len = p->prefix_len + channel_len;
    plan->json = json;
    plan->json_len = json_len;
    plan->history = p->history && acl_history_policy(p->rules, channel, &size, &ttl);
    if (!plan->history) return;
    /* The prefix has no braces and the channel's alphabet has none, and the
     * buffers are sized for the longest channel: neither key can fail. */
    history_stream_key(p->channel_buf, plan->channel_len, p->stream_key, p->key_size);
    history_meta_key(p->channel_buf, plan->channel_len, p->meta_key, p->key_size);
    snprintf(plan->size, sizeof plan->size, "%lu", size);
    snprintf(plan->ttl, sizeof plan->ttl, "%lu", ttl);
}

/* ---- Redis Cluster ------------------------------------------------------------ */

static struct redis_url node_url(const herald_pub *p, const char *host, int port) {
    struct redis_url url = {(char *)host, port, p->seeds.user ? (char *)p->seeds.user : NULL,
                            p->seeds.password ? (char *)p->seeds.password : NULL, 0};
    return url;
}

/* The connection to host:port, opened when needed; NULL with p->error set. */
static redisContext *node_context(herald_pub *p, const char *host, int port) {
    struct pub_node *n = p->nodes;
    while (n && !(n->port == port && strcmp(n->host, host) == 0)) n = n->next;
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n) {
            set_error(p->error, sizeof p->error, "out of memory");
            return NULL;
        }
        snprintf(n->host, sizeof n->host, "%s", host);
        n->port = port;
        n->next = p->nodes;
        p->nodes = n;
    }
    if (!n->redis) {
        struct redis_url url = node_url(p, host, port);
        n->redis = open_redis(&url, p->error, sizeof p->error);
    }
    return n->redis;
}

static void node_drop(herald_pub *p, const char *host, int port) {
    for (struct pub_node *n = p->nodes; n; n = n->next) {
        if (n->port == port && strcmp(n->host, host) == 0 && n->redis) {
            redisFree(n->redis);
            n->redis = NULL;
        }
    }
}

/* Reads the slot map from the first node that answers: the known masters,
 * then the seeds. 0, or -1 with p->error set. */
static int refresh_map(herald_pub *p) {
    size_t known = p->map ? p->map->master_count : 0;
    char first[sizeof p->error + CLUSTER_HOST_MAX + 64] = "";
    for (size_t i = 0; i < known + p->seeds.count; i++) {
        char host[CLUSTER_HOST_MAX];
        int port;
        if (i < known) {
            snprintf(host, sizeof host, "%s", p->map->nodes[i].host);
            port = p->map->nodes[i].port;
        } else {
            snprintf(host, sizeof host, "%s", p->seeds.seeds[i - known].host);
            port = p->seeds.seeds[i - known].port;
        }
        redisContext *c = node_context(p, host, port);
        redisReply *reply = c ? redisCommand(c, "CLUSTER SLOTS") : NULL;
        char why[sizeof p->error + CLUSTER_HOST_MAX + 64] = "";
        struct cluster_slot_map *map = NULL;
        if (!c)
            snprintf(why, sizeof why, "%s", p->error);
        else if (!reply)
            snprintf(why, sizeof why, "CLUSTER SLOTS to %s:%d failed: %s", host, port, c->errstr);
        else if (reply->type == REDIS_REPLY_ERROR)
            snprintf(why, sizeof why, "%s:%d refused CLUSTER SLOTS: %.200s", host, port,
                     reply->str);
        else if (!(map = cluster_slot_map_from_reply(reply, host, why, sizeof why)))
            ;
        else if (map->master_count == 0) {
            snprintf(why, sizeof why, "%s:%d knows no master", host, port);
            cluster_slot_map_free(map);
            map = NULL;
        }
        if (reply) freeReplyObject(reply);
        if (map) {
            cluster_slot_map_free(p->map);
            p->map = map;
            return 0;
        }
        if (c && !reply) node_drop(p, host, port);
        if (!first[0]) snprintf(first, sizeof first, "%s", why);
    }
    set_error(p->error, sizeof p->error, "cannot read the Redis Cluster slot map: %.400s", first);
    return -1;
}

/* Sends the event to its slot's owner, following MOVED (map refreshed) and
 * ASK (once, after ASKING); a failed node refreshes the map and is retried. */
static int publish_cluster(herald_pub *p, const struct publish_plan *plan,
                           struct herald_pub_result *result) {
    char host[CLUSTER_HOST_MAX] = "";
    int port = 0;
    bool asking = false;
    if (!p->map && refresh_map(p) < 0) return -1;
    for (int attempt = 0; attempt < HERALD_PUB_MAX_REDIRECTS; attempt++) {
        if (!host[0]) {
            const struct cluster_node *owner =
                cluster_slot_map_master_for_key(p->map, p->channel_buf, plan->channel_len);
            if (!owner) {
                set_error(p->error, sizeof p->error,
                          "no Redis Cluster node serves the slot of this channel");
                if (refresh_map(p) < 0) return -1;
                continue;
            }
            snprintf(host, sizeof host, "%s", owner->host);
            port = owner->port;
        }
        redisContext *c = node_context(p, host, port);
        redisReply *reply = c ? send_event(p, c, plan, host, port, asking) : NULL;
        if (!reply) { /* the node is gone: ask the cluster where the slot is now */
            node_drop(p, host, port);
            host[0] = '\0';
            asking = false;
            if (refresh_map(p) < 0) return -1;
            continue;
        }
        struct cluster_redirect redirect;
        enum cluster_redirect_kind kind =
            reply->type == REDIS_REPLY_ERROR
                ? cluster_redirect_parse(reply->str, reply->len, &redirect)
                : CLUSTER_REDIRECT_NONE;
        if (kind == CLUSTER_REDIRECT_NONE) return read_event_reply(p, plan, reply, result);
        set_error(p->error, sizeof p->error, "too many redirects (last: %s)", reply->str);
        freeReplyObject(reply);
        if (kind == CLUSTER_REDIRECT_MOVED) (void)refresh_map(p); /* the redirect says where */
        if (redirect.host[0]) snprintf(host, sizeof host, "%s", redirect.host);
        port = redirect.port;
        asking = kind == CLUSTER_REDIRECT_ASK;
    }
    return -1;
}

herald_pub *herald_pub_connect_cluster(const char *seeds, const char *prefix, char *err,
                                       size_t err_size) {
    char reason[256];
    struct redis_cluster parsed;

    if (redis_cluster_parse(seeds, &parsed, reason, sizeof reason) < 0) {
        set_error(err, err_size, "invalid Redis Cluster seeds: %s", reason);
        return NULL;
    }
    herald_pub *p = pub_new(prefix, err, err_size);
    if (!p) {
        redis_cluster_free(&parsed);
        return NULL;
    }
    p->seeds = parsed;
    if (refresh_map(p) < 0) {
        set_error(err, err_size, "%s", p->error);
        herald_pub_close(p);
        return NULL;
    }
    return p;
}

enum herald_pub_status herald_pub_publish_event(herald_pub *p, const char *channel,
                                                const char *json,
                                                struct herald_pub_result *result) {
    size_t json_len = 0;
    enum herald_pub_status status = validate(p, channel, json, &json_len);
    struct herald_pub_result ignored;

    if (status != HERALD_PUB_OK) return status;
    if (!result) result = &ignored;
    struct publish_plan plan;
    make_plan(p, channel, json, json_len, &plan);
    if (p->seeds.count) {
        if (publish_cluster(p, &plan, result) < 0) return HERALD_PUB_REDIS;
        p->error[0] = '\0';
        return HERALD_PUB_OK;
    }

    int rc = -1;
    if (p->redis) rc = publish_once(p, &plan, result);
    if (rc < 0) {
        /* The first failure's reason is kept when the reconnect fails too: it
         * is usually the more telling of the two. */
        char first[sizeof p->error];
        snprintf(first, sizeof first, "%s", p->redis ? p->error : "");
        if (reconnect(p) == 0) rc = publish_once(p, &plan, result);
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
    p->error[0] = '\0';
    return HERALD_PUB_OK;
}

enum herald_pub_status herald_pub_publish(herald_pub *p, const char *channel, const char *json,
                                          long *receivers) {
    struct herald_pub_result result;
    enum herald_pub_status status = herald_pub_publish_event(p, channel, json, &result);

    if (status == HERALD_PUB_OK && receivers) *receivers = result.receivers;
    return status;
}

void herald_pub_close(herald_pub *p) {
    if (!p) return;
    if (p->redis) redisFree(p->redis);
    while (p->nodes) {
        struct pub_node *n = p->nodes;
        p->nodes = n->next;
        if (n->redis) redisFree(n->redis);
        free(n);
    }
    cluster_slot_map_free(p->map);
    redis_cluster_free(&p->seeds);
    redis_url_free(&p->url);
    free(p->prefix);
    free(p->channel_buf);
    free(p->stream_key);
    free(p->meta_key);
    free(p);
}
