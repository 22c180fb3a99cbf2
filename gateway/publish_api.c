/* publish_api.c -- the HTTP publish endpoint: key check, body, one pipelined
 * round of publish scripts, the reply. */
#include "publish_api.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "bus.h"
#include "config.h"
#include "conn.h"
#include "history.h"
#include "http_upgrade.h"
#include "log.h"
#include "protocol.h"
#include "worker.h"

static int digest(const char *key, size_t len, unsigned char out[32]) {
    unsigned int out_len = 0;
    return EVP_Digest(key, len, out, &out_len, EVP_sha256(), NULL) == 1 && out_len == 32 ? 0 : -1;
}

int publish_api_load_key(const struct config *cfg, struct publish_api_key *key, char *err,
                         size_t err_size) {
    memset(key, 0, sizeof *key);
    if (cfg->api_key && cfg->api_key_file) {
        snprintf(err, err_size, "give --api-key or --api-key-file, not both");
        return -1;
    }
    char buf[PUBLISH_API_KEY_MAX + 2];
    const char *value = cfg->api_key;
    size_t len = value ? strlen(value) : 0;
    if (cfg->api_key_file) {
        FILE *f = fopen(cfg->api_key_file, "r");
        if (!f) {
            snprintf(err, err_size, "cannot read --api-key-file %s: %s", cfg->api_key_file,
                     strerror(errno));
            return -1;
        }
        len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
        buf[len] = '\0';
        value = buf;
    }
    int rc = 0;
    if (len > PUBLISH_API_KEY_MAX) {
        snprintf(err, err_size, "the API key is longer than %d bytes", PUBLISH_API_KEY_MAX);
        rc = -1;
    } else if (len > 0) {
        rc = digest(value, len, key->digest);
        if (rc != 0) snprintf(err, err_size, "cannot hash the API key");
        key->set = rc == 0;
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

/* ---- one request ------------------------------------------------------------ */

struct publish_request;

struct publish_item {
    struct publish_request *req;
    size_t index;
};

struct publish_request {
    struct conn *conn; /* NULL once the connection went */
    struct worker *w;
    bool batch;
    bool failed;
    char error[160];
    size_t count, answered;
    json_t *results; /* an array, one object per event */
    struct publish_item items[];
};

static void finish(struct publish_request *req) {
    struct worker *w = req->w;
    if (req->conn) {
        struct conn *c = req->conn;
        conn_http_wait(c, 0, NULL, NULL);
        if (req->failed) {
            w->stats.api_failures++;
            log_warn("event=api_publish_failed conn=%s error=%s", conn_id(c), log_q(req->error));
            conn_http_refuse(c, 503, "Redis unavailable");
        } else {
            json_t *body = req->batch ? json_pack("{s:O}", "results", req->results)
                                      : json_incref(json_array_get(req->results, 0));
            char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
            json_decref(body);
            char head[256];
            int n =
                text ? http_build_head(head, sizeof head, 200, "application/json", strlen(text) + 1)
                     : -1;
            if (n < 0) {
                conn_http_refuse(c, 500, "Internal error");
            } else {
                size_t len = strlen(text);
                text[len] = '\n'; /* the NUL's place: the body ends with a newline */
                conn_http_reply(c, head, (size_t)n, text, len + 1);
                w->stats.api_requests++;
                w->stats.api_events += req->count;
            }
            free(text);
        }
    }
    json_decref(req->results);
    free(req);
}

static void conn_gone(void *arg) {
    struct publish_request *req = arg;
    req->conn = NULL;
}

static void item_done(redisAsyncContext *ac, void *r, void *privdata) {
    (void)ac;
    struct publish_item *item = privdata;
    struct publish_request *req = item->req;
    const redisReply *reply = r;
    json_t *result = NULL;
    /* The publish script answers {offset, epoch, receivers}. */
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        result = json_pack("{s:s, s:s}", "offset", reply->element[0]->str, "epoch",
                           reply->element[1]->str);
    } else if (reply && reply->type == REDIS_REPLY_INTEGER) { /* no history: a plain PUBLISH */
        result = json_pack("{s:n, s:n}", "offset", "epoch");
    } else if (!req->failed) {
        if (!reply)
            snprintf(req->error, sizeof req->error, "connection lost");
        else if (reply->type == REDIS_REPLY_ERROR)
            snprintf(req->error, sizeof req->error, "%s", reply->str);
        else
            snprintf(req->error, sizeof req->error, "unexpected reply (type %d, %zu elements)",
                     reply->type, reply->elements);
    }
    if (!result || json_array_set_new(req->results, item->index, result) != 0) req->failed = true;
    if (++req->answered == req->count) finish(req);
}

/* ---- the request's bytes --------------------------------------------------- */

struct event_in {
    const char *channel;
    char *data; /* compact JSON (owned) */
    size_t data_len;
};

/* Reads one {"channel":C,"data":D}; returns 0 or the HTTP status of the
 * refusal, with its reason in why. */
static int read_event(const json_t *obj, const struct config *cfg, struct event_in *out, char *why,
                      size_t why_size) {
    const json_t *channel = json_object_get(obj, "channel");
    const json_t *data = json_object_get(obj, "data");
    if (!json_is_object(obj) || !json_is_string(channel) || !data) {
        snprintf(why, why_size, "Each event is {\"channel\":C,\"data\":D}");
        return 400;
    }
    out->channel = json_string_value(channel);
    if (!acl_channel_name_valid(out->channel, json_string_length(channel))) {
        snprintf(why, why_size, "Invalid channel name");
        return 400;
    }
    out->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!out->data) {
        snprintf(why, why_size, "Cannot encode data");
        return 400;
    }
    out->data_len = strlen(out->data);
    if (out->data_len > (size_t)cfg->max_event_size) {
        snprintf(why, why_size, "An event's data is over %ld bytes", cfg->max_event_size);
        return 413;
    }
    char reason[128];
    if (proto_payload_check(out->data, out->data_len, reason, sizeof reason) != 0) {
        snprintf(why, why_size, "Bad data: %s", reason);
        return 400;
    }
    return 0;
}

/* Sends one event's command: the history script, or a plain PUBLISH for a
 * channel whose rule says "history":false. */
static int send_event(struct worker *w, const struct event_in *e, struct publish_item *item) {
    char redis_channel[256], stream[300], meta[300], size_text[24], ttl_text[24];
    int n =
        snprintf(redis_channel, sizeof redis_channel, "%s%s", w->cfg->channel_prefix, e->channel);
    if (n < 0 || (size_t)n >= sizeof redis_channel) return -1;
    unsigned long size = HISTORY_DEFAULT_SIZE, ttl = HISTORY_DEFAULT_TTL;
    if (!acl_history_policy(w->rules, e->channel, &size, &ttl)) {
        const char *argv[] = {"PUBLISH", redis_channel, e->data};
        size_t argvlen[] = {7, (size_t)n, e->data_len};
        return bus_command(w->bus, item_done, item, 3, argv, argvlen);
    }
    if (history_stream_key(redis_channel, (size_t)n, stream, sizeof stream) < 0 ||
        history_meta_key(redis_channel, (size_t)n, meta, sizeof meta) < 0)
        return -1;
    snprintf(size_text, sizeof size_text, "%lu", size);
    snprintf(ttl_text, sizeof ttl_text, "%lu", ttl);
    const char *argv[] = {"EVAL",   history_publish_script,
                          "2",      stream,
                          meta,     redis_channel,
                          e->data,  size_text,
                          ttl_text, bus_is_cluster(w->bus) ? "SPUBLISH" : "PUBLISH"};
    size_t argvlen[10];
    for (int i = 0; i < 10; i++) argvlen[i] = i == 6 ? e->data_len : strlen(argv[i]);
    return bus_command(w->bus, item_done, item, 10, argv, argvlen);
}

/* Parses the body and publishes; returns 0 (the reply follows from Redis),
 * or the HTTP status of a refusal with its reason in why. */
static int publish(struct conn *c, struct worker *w, const char *body, size_t len, char *why,
                   size_t why_size) {
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(root)) {
        snprintf(why, why_size, root ? "The body is not a JSON object" : "Bad JSON: %s", jerr.text);
        json_decref(root);
        return 400;
    }
    const json_t *events = json_object_get(root, "events");
    bool batch = events != NULL;
    size_t count = batch ? json_array_size(events) : 1;
    int status = 0;
    if (batch && (!json_is_array(events) || count == 0)) {
        snprintf(why, why_size, "\"events\" is a non-empty array");
        status = 400;
    } else if (count > PUBLISH_API_MAX_BATCH) {
        snprintf(why, why_size, "More than %d events", PUBLISH_API_MAX_BATCH);
        status = 413;
    }
    struct event_in *in = status ? NULL : calloc(count, sizeof *in);
    if (!status && !in) {
        snprintf(why, why_size, "Out of memory");
        status = 500;
    }
    for (size_t i = 0; !status && i < count; i++)
        status =
            read_event(batch ? json_array_get(events, i) : root, w->cfg, &in[i], why, why_size);
    struct publish_request *req = NULL;
    if (!status) {
        req = calloc(1, sizeof *req + count * sizeof req->items[0]);
        if (req) req->results = json_array();
        for (size_t i = 0; req && req->results && i < count; i++)
            if (json_array_append_new(req->results, json_null()) != 0) break;
        if (!req || json_array_size(req->results) != count) {
            if (req) json_decref(req->results);
            free(req);
            req = NULL;
            snprintf(why, why_size, "Out of memory");
            status = 500;
        }
    }
    if (req) {
        req->conn = c;
        req->w = w;
        req->batch = batch;
        req->count = count;
        size_t sent = 0;
        for (; sent < count; sent++) {
            req->items[sent] = (struct publish_item){req, sent};
            if (send_event(w, &in[sent], &req->items[sent]) != 0) break;
        }
        if (sent == 0) { /* nothing went out: Redis is not there */
            json_decref(req->results);
            free(req);
            snprintf(why, why_size, "Redis unavailable");
            status = 503;
        } else {
            conn_http_wait(c, 0, conn_gone, req);
            if (sent < count) { /* the rest could not be sent: answered as failed */
                req->failed = true;
                snprintf(req->error, sizeof req->error, "command connection lost");
                req->answered += count - sent;
            }
        }
    }
    for (size_t i = 0; in && i < count; i++) free(in[i].data);
    free(in);
    json_decref(root);
    return status;
}

/* True when the Authorization header is "apikey <KEY>" with the configured key. */
static bool key_matches(const struct publish_api_key *key, const struct http_slice *auth) {
    static const char scheme[] = "apikey ";
    size_t scheme_len = sizeof scheme - 1;
    if (!auth->ptr || auth->len <= scheme_len) return false;
    struct http_slice given_scheme = {auth->ptr, scheme_len};
    if (!http_slice_equals_nocase(&given_scheme, scheme)) return false;
    unsigned char given[32];
    if (digest(auth->ptr + scheme_len, auth->len - scheme_len, given) != 0) return false;
    return CRYPTO_memcmp(given, key->digest, sizeof given) == 0;
}

static void refuse(struct conn *c, struct worker *w, int status, const char *message) {
    w->stats.api_failures++;
    conn_http_refuse(c, status, message);
}

void publish_api_serve(struct conn *c, const struct http_request *req, size_t head_len) {
    struct worker *w = conn_worker(c);
    if (!w->api_key.set) {
        conn_http_refuse(c, 404, "Not Found");
        return;
    }
    if (!http_slice_equals_nocase(&req->method, "POST")) {
        refuse(c, w, 405, "Use POST");
        return;
    }
    if (!key_matches(&w->api_key, &req->authorization)) {
        log_info("event=api_key_refused peer=%s", log_q(conn_peer(c)));
        refuse(c, w, 401, "Authorization: apikey <KEY> required");
        return;
    }
    if (req->transfer_encoding.ptr) {
        refuse(c, w, req->content_length.ptr ? 400 : 411, "Send the body with Content-Length");
        return;
    }
    if (!req->content_length.ptr) {
        refuse(c, w, 411, "Content-Length required");
        return;
    }
    size_t length = 0;
    const struct http_slice *cl = &req->content_length;
    for (size_t i = 0; i < cl->len; i++) {
        if (cl->ptr[i] < '0' || cl->ptr[i] > '9' || i >= 12) {
            refuse(c, w, 400, "Bad Content-Length");
            return;
        }
        length = length * 10 + (size_t)(cl->ptr[i] - '0');
    }
    if (cl->len == 0) {
        refuse(c, w, 400, "Bad Content-Length");
        return;
    }
    if (length > (size_t)w->cfg->api_max_body) {
        refuse(c, w, 413, "Body too large (--api-max-body)");
        return;
    }
    if (conn_input_length(c) < head_len + length) { /* more of the body to come */
        conn_http_wait(c, head_len + length, NULL, NULL);
        return;
    }
    const char *bytes = conn_input_bytes(c, head_len + length);
    char why[256];
    int status = bytes ? publish(c, w, bytes + head_len, length, why, sizeof why) : 500;
    if (!bytes) snprintf(why, sizeof why, "Out of memory");
    if (status != 0) refuse(c, w, status, why);
}
