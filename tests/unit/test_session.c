/* test_session.c -- client commands and reply order, against a fake
 * connection that records what would go out, a recording fake bus and the
 * real subscription index (no network). */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cluster_view.h"
#include "conn.h"
#include "protocol.h"
#include "session.h"
#include "stats.h"
#include "subs.h"
#include "testlib.h"
#include "worker.h"

/* ---- fakes ---------------------------------------------------------------- */

static struct event_base *base;
static struct config cfg;
static struct worker worker;

struct conn {
    char out[16][512]; /* text messages sent, in order */
    int sent;
    int frames;
    int close_code; /* 0: open */
    size_t queued;  /* bytes "in the socket buffer" (for the send-queue cap) */
    struct session session;
};

static char bus_log[16][160];
static int bus_count;

int bus_subscribe(struct bus *bus, const char *channel) {
    (void)bus;
    snprintf(bus_log[bus_count++ % 16], 160, "SUBSCRIBE %s", channel);
    return 0;
}

int bus_unsubscribe(struct bus *bus, const char *channel) {
    (void)bus;
    snprintf(bus_log[bus_count++ % 16], 160, "UNSUBSCRIBE %s", channel);
    return 0;
}

/* History reads are answered by confirm(): "no history". */
static redisCallbackFn *read_fn;
static void *read_privdata;

int bus_command(struct bus *bus, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                const size_t *argvlen) {
    (void)bus, (void)argc, (void)argv, (void)argvlen;
    read_fn = fn;
    read_privdata = privdata;
    return 0;
}

int bus_command_for_channel(struct bus *bus, const char *channel, redisCallbackFn *fn,
                            void *privdata, int argc, const char **argv, const size_t *argvlen) {
    (void)channel;
    return bus_command(bus, fn, privdata, argc, argv, argvlen);
}

static void confirm(const char *channel) {
    subs_on_confirmed(worker.subs, channel);
    if (!read_fn) return;
    redisReply nil = {.type = REDIS_REPLY_NIL}, list = {.type = REDIS_REPLY_ARRAY};
    redisReply *parts[4] = {&nil, &nil, &nil, &list};
    redisReply reply = {.type = REDIS_REPLY_ARRAY, .elements = 4, .element = parts};
    redisCallbackFn *fn = read_fn;
    read_fn = NULL;
    fn(NULL, &reply, read_privdata);
}

void conn_send_buffer(struct conn *c, struct evbuffer *buf) {
    (void)c, (void)buf;
}

void conn_send_text(struct conn *c, const char *text, size_t len) {
    if (c->close_code) return;
    snprintf(c->out[c->sent++ % 16], 512, "%.*s", (int)len, text);
}

void conn_check_queue(struct conn *c) {
    if (!c->close_code && c->queued + session_held_bytes(&c->session) > 1000)
        c->close_code = WS_CLOSE_SLOW_CONSUMER;
}

int conn_send_frame(struct conn *c, struct shared_frame *frame, unsigned events) {
    (void)frame;
    c->frames += (int)events;
    return 0;
}

void conn_close(struct conn *c, uint16_t code, const char *reason) {
    (void)reason;
    if (!c->close_code) c->close_code = code;
}

bool conn_is_open(const struct conn *c) {
    return c->close_code == 0;
}

const char *conn_id(const struct conn *c) {
    (void)c;
    return "test-conn";
}

const char *conn_peer(const struct conn *c) {
    (void)c;
    return "127.0.0.1";
}

char *stats_reply(struct worker *w, const json_t *workers, const json_t *id, size_t *len) {
    (void)w;
    return proto_finish(
        json_pack("{s:s, s:I}", "type", "stats", "workers", (json_int_t)json_array_size(workers)),
        id, len);
}

/* The cluster view answers later, when the test says so. */
static cluster_view_cb view_cb;
static void *view_owner;
static int view_cancels;

int cluster_view_get(struct worker *w, cluster_view_cb cb, void *owner, json_t *tag) {
    (void)w, (void)tag;
    view_cb = cb;
    view_owner = owner;
    return 0;
}

void cluster_view_cancel(struct worker *w, void *owner) {
    (void)w;
    if (owner == view_owner && view_cb) {
        view_cb = NULL;
        view_cancels++;
    }
}

/* ---- set-up --------------------------------------------------------------- */

static void setup(void) {
    memset(&worker, 0, sizeof worker);
    memset(&cfg, 0, sizeof cfg);
    cfg.max_subscriptions = 4;
    cfg.rate_limit = 1000;
    cfg.rate_burst = 1000;
    worker.cfg = &cfg;
    worker.rules = acl_default_rules();
    struct subs_limits limits = {3, 65536, 100, "herald:"};
    struct subs_hooks hooks = {0};
    worker.subs = subs_new(NULL, base, &limits, &hooks);
    bus_count = 0;
}

static void teardown(struct conn *c) {
    session_free(&c->session);
    subs_free(worker.subs);
}

static struct conn *open_conn(const char *user_id, bool admin) {
    struct conn *c = calloc(1, sizeof *c);
    herald_user *user = NULL;
    if (user_id) {
        user = calloc(1, sizeof *user);
        user->user_id = strdup(user_id);
        user->admin = admin;
    }
    session_init(&c->session, c, &worker, user, 0);
    return c;
}

static void say(struct conn *c, const char *text) {
    session_on_text(&c->session, (const uint8_t *)text, strlen(text), 1.0);
}

/* True when output number i has "type":type and "id":id. */
static bool reply_is(struct conn *c, int i, const char *type, int id) {
    char want_type[64], want_id[32];
    snprintf(want_type, sizeof want_type, "\"type\":\"%s\"", type);
    snprintf(want_id, sizeof want_id, "\"id\":%d", id);
    return i < c->sent && strstr(c->out[i], want_type) && strstr(c->out[i], want_id);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_replies_follow_request_order_behind_a_pending_subscribe(void) {
    setup();
    struct conn *c = open_conn("u1", false);
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:created\",\"id\":1}");
    say(c, "{\"type\":\"ping\",\"id\":2}");
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:deleted\",\"id\":3}");
    say(c, "{\"type\":\"list_channels\",\"id\":4}");
    CHECK_INT(c->sent, 0); /* everything waits for the first subscribe */
    confirm("apps:deleted");
    CHECK_INT(c->sent, 0); /* the third is answered, but not before the first */
    confirm("apps:created");
    CHECK_INT(c->sent, 4);
    CHECK(reply_is(c, 0, "subscribed", 1));
    CHECK(reply_is(c, 1, "pong", 2));
    CHECK(reply_is(c, 2, "subscribed", 3));
    CHECK(reply_is(c, 3, "channels", 4));
    say(c, "{\"type\":\"ping\",\"id\":5}"); /* nothing waits now: straight out */
    CHECK(reply_is(c, 4, "pong", 5));
    teardown(c);
    free(c);
}

static void test_unsubscribe_before_confirmation_answers_both_in_order(void) {
    setup();
    struct conn *c = open_conn("u1", false);
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:created\",\"id\":1}");
    say(c, "{\"type\":\"unsubscribe\",\"channel\":\"apps:created\",\"id\":2}");
    CHECK_INT(c->sent, 2);
    CHECK(reply_is(c, 0, "subscribed", 1));
    CHECK(reply_is(c, 1, "unsubscribed", 2));
    teardown(c);
    free(c);
}

static void test_refused_subscribe_answers_error_and_keeps_the_rest(void) {
    setup();
    struct conn *c = open_conn("u1", false);
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:created\",\"id\":1}");
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:deleted\",\"id\":2}");
    confirm("apps:deleted");
    subs_on_refused(worker.subs, "apps:created", "NOPERM no permissions");
    CHECK_INT(c->sent, 2);
    CHECK(reply_is(c, 0, "error", 1));
    CHECK(strstr(c->out[0], "\"code\":\"subscribe_failed\"") != NULL);
    CHECK(reply_is(c, 1, "subscribed", 2));
    CHECK_INT(c->session.sub_count, 1);
    CHECK_INT(c->close_code, 0);
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:created\",\"id\":3}"); /* may ask again */
    CHECK_STR(bus_log[bus_count - 1], "SUBSCRIBE apps:created");
    teardown(c);
    free(c);
}

static void test_worker_channel_cap_is_an_error_reply(void) {
    setup(); /* three distinct channels per worker */
    struct conn *c = open_conn("u1", false);
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:a\",\"id\":1}");
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:b\",\"id\":2}");
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:c\",\"id\":3}");
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:d\",\"id\":4}");
    confirm("apps:a");
    confirm("apps:b");
    confirm("apps:c");
    CHECK_INT(c->sent, 4);
    CHECK(reply_is(c, 3, "error", 4));
    CHECK(strstr(c->out[3], "\"code\":\"too_many_channels\"") != NULL);
    CHECK_INT(bus_count, 3);
    teardown(c);
    free(c);
}

static void test_held_replies_count_against_the_send_queue(void) {
    setup();
    struct conn *c = open_conn("u1", true);
    say(c, "{\"type\":\"subscribe\",\"channel\":\"apps:created\",\"id\":1}");
    for (int i = 0; i < 40 && !c->close_code; i++) say(c, "{\"type\":\"list_channels\"}");
    CHECK_INT(c->close_code, WS_CLOSE_SLOW_CONSUMER);
    teardown(c);
    free(c);
}

static void test_admin_only_stats_and_bad_input(void) {
    setup();
    struct conn *c = open_conn("u1", false);
    say(c, "{\"type\":\"stats\",\"id\":1}");
    say(c, "{\"type\":\"nope\",\"id\":2}");
    say(c, "not json");
    say(c, "{\"type\":\"subscribe\",\"channel\":\"system:health\",\"id\":3}");
    CHECK_INT(c->sent, 4);
    CHECK(strstr(c->out[0], "\"code\":\"forbidden\"") != NULL);
    CHECK(strstr(c->out[1], "\"code\":\"unknown_type\"") != NULL);
    CHECK(strstr(c->out[2], "\"code\":\"bad_json\"") != NULL);
    CHECK(strstr(c->out[3], "\"code\":\"forbidden\"") != NULL);
    CHECK_INT(c->close_code, 0);
    teardown(c);
    free(c);
}

static void test_stats_reply_waits_for_the_cluster_view_in_request_order(void) {
    setup();
    struct conn *c = open_conn("adm", true);
    say(c, "{\"type\":\"stats\",\"id\":1}");
    say(c, "{\"type\":\"ping\",\"id\":2}");
    CHECK_INT(c->sent, 0); /* the pong waits behind the stats reply */
    CHECK(view_cb != NULL && view_owner == &c->session);
    json_t *workers = json_pack("[{}, {}, {}]");
    view_cb(view_owner, NULL, workers);
    json_decref(workers);
    CHECK_INT(c->sent, 2);
    CHECK(reply_is(c, 0, "stats", 1) && strstr(c->out[0], "\"workers\":3"));
    CHECK(reply_is(c, 1, "pong", 2));
    say(c, "{\"type\":\"stats\",\"id\":3}"); /* pending when the connection goes */
    view_cancels = 0;
    teardown(c);
    CHECK_INT(view_cancels, 1);
    free(c);
}

static void test_rate_limit_refuses_then_closes(void) {
    setup();
    cfg.rate_limit = 1;
    cfg.rate_burst = 2;
    struct conn *c = open_conn(NULL, false);
    for (int i = 0; i < 2; i++) say(c, "{\"type\":\"ping\"}");
    say(c, "{\"type\":\"ping\",\"id\":9}");
    CHECK(reply_is(c, 2, "error", 9));
    CHECK(strstr(c->out[2], "\"code\":\"rate_limited\"") != NULL);
    for (int i = 0; i < 3; i++) say(c, "{\"type\":\"ping\"}");
    CHECK_INT(c->close_code, WS_CLOSE_RATE_LIMITED);
    teardown(c);
    free(c);
}

int main(void) {
    base = event_base_new();
    RUN(test_replies_follow_request_order_behind_a_pending_subscribe);
    RUN(test_unsubscribe_before_confirmation_answers_both_in_order);
    RUN(test_refused_subscribe_answers_error_and_keeps_the_rest);
    RUN(test_worker_channel_cap_is_an_error_reply);
    RUN(test_held_replies_count_against_the_send_queue);
    RUN(test_admin_only_stats_and_bad_input);
    RUN(test_stats_reply_waits_for_the_cluster_view_in_request_order);
    RUN(test_rate_limit_refuses_then_closes);
    event_base_free(base);
    return TEST_SUMMARY();
}
