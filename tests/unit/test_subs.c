/* test_subs.c -- the subscription index's state machine and fan-out order,
 * against a recording fake of the bus and of sessions (no network). */
#include <event2/buffer.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "session.h"
#include "subs.h"
#include "testlib.h"

/* ---- fakes ---------------------------------------------------------------- */

/* A fake session: what the index told it. */
struct fake {
    struct session session; /* first: the index only passes its address around */
    int replies;            /* subscriptions that went live (a "subscribed" each) */
    int refused;
    int frames; /* event messages delivered */
    size_t bytes;
    char log[512]; /* "live:C refused:C frame:C" in order */
    int recovered; /* the last going-live's "recovered" (-1 not asked) */
    char offset[64], epoch[64];
    char after[4096];   /* what followed the last going-live (frames' payloads) */
    int sse_events;     /* events delivered in SSE form */
    char sse_last[512]; /* the last one's "data:" lines|offset|epoch */
};

#define FAKE(s) ((struct fake *)(s))

static bool bus_up = true;
static char commands[64][160]; /* "SUBSCRIBE x" / "UNSUBSCRIBE x" in order */
static int command_count;
static struct event_base *base;

static int record(const char *verb, const char *channel) {
    if (!bus_up) return -1;
    snprintf(commands[command_count++ % 64], 160, "%s %s", verb, channel);
    return 0;
}

int bus_subscribe(struct bus *bus, const char *channel) {
    (void)bus;
    return record("SUBSCRIBE", channel);
}

int bus_unsubscribe(struct bus *bus, const char *channel) {
    (void)bus;
    return record("UNSUBSCRIBE", channel);
}

static void note(struct fake *f, const char *what, const char *channel) {
    size_t n = strlen(f->log);
    snprintf(f->log + n, sizeof f->log - n, "%s%s:%s", n ? " " : "", what, channel);
}

/* The payloads of the frames in buf, joined by '|'. */
static void frames_text(struct evbuffer *buf, char *out, size_t size) {
    size_t len = evbuffer_get_length(buf), n = 0;
    unsigned char *p = evbuffer_pullup(buf, -1);
    out[0] = '\0';
    for (size_t i = 0; i < len;) {
        size_t plen = p[i + 1] & 0x7f, hl = 2;
        if (plen == 126) plen = (size_t)p[i + 2] << 8 | p[i + 3], hl = 4;
        n += (size_t)snprintf(out + n, size - n, "%s%.*s", n ? "|" : "", (int)plen, p + i + hl);
        i += hl + plen;
        if (n >= size) break;
    }
}

void session_on_subscribed(struct session *s, struct sub *sub, struct subs_ready *ready) {
    struct fake *f = FAKE(s);
    f->replies++;
    note(f, "live", sub->channel->name);
    f->recovered = ready->recovered;
    snprintf(f->offset, sizeof f->offset, "%s", ready->offset ? ready->offset : "null");
    snprintf(f->epoch, sizeof f->epoch, "%s", ready->epoch ? ready->epoch : "null");
    f->after[0] = '\0';
    if (ready->after) {
        frames_text(ready->after, f->after, sizeof f->after);
        evbuffer_free(ready->after);
        ready->after = NULL;
    }
}

void session_on_refused(struct session *s, struct sub *sub, const char *reason) {
    (void)reason;
    for (struct sub **p = &s->subs; *p; p = &(*p)->conn_next) {
        if (*p == sub) {
            *p = sub->conn_next;
            break;
        }
    }
    FAKE(s)->refused++;
    note(FAKE(s), "refused", sub->channel->name);
}

int session_deliver(struct session *s, struct shared_frame *frame, unsigned events) {
    FAKE(s)->frames += (int)events;
    FAKE(s)->bytes += frame->len;
    return 0;
}

int session_deliver_sse(struct session *s, const struct subs_sse_batch *batch) {
    FAKE(s)->sse_events += (int)batch->count;
    snprintf(FAKE(s)->sse_last, sizeof FAKE(s)->sse_last, "%.*s|%s|%s",
             batch->count ? (int)batch->events[batch->count - 1].len : 0,
             batch->count ? (const char *)batch->data->data + batch->events[batch->count - 1].start
                          : "",
             batch->count ? batch->events[batch->count - 1].offset : "",
             batch->count ? batch->events[batch->count - 1].epoch : "");
    return 0;
}

/* History reads: the last one sent, answered by answer_read. */
static redisCallbackFn *read_fn;
static void *read_privdata;
static char read_since[64];
static int reads;
static bool cmd_up = true;

int bus_command(struct bus *bus, redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                const size_t *argvlen) {
    (void)bus, (void)argc, (void)argvlen;
    if (!cmd_up) return -1;
    read_fn = fn;
    read_privdata = privdata;
    snprintf(read_since, sizeof read_since, "%s", argv[5]);
    reads++;
    return 0;
}

static char routed_to[64]; /* the channel the last read was routed by */

int bus_command_for_channel(struct bus *bus, const char *channel, redisCallbackFn *fn,
                            void *privdata, int argc, const char **argv, const size_t *argvlen) {
    snprintf(routed_to, sizeof routed_to, "%s", channel);
    return bus_command(bus, fn, privdata, argc, argv, argvlen);
}

static int gaps_sent; /* session_send_gap calls */

void session_send_gap(struct session *session) {
    (void)session;
    gaps_sent++;
}

static redisReply *str(const char *s) {
    redisReply *r = calloc(1, sizeof *r);
    if (!s) {
        r->type = REDIS_REPLY_NIL;
        return r;
    }
    r->type = REDIS_REPLY_STRING;
    r->str = strdup(s);
    r->len = strlen(s);
    return r;
}

static redisReply *arr(size_t n) {
    redisReply *r = calloc(1, sizeof *r);
    r->type = REDIS_REPLY_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    return r;
}

static void reply_free(redisReply *r) {
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* Answers the read in flight: entries are ids whose data is {"n":"<id>"}. */
static void answer_read(const char *epoch, const char *first, const char *newest,
                        const char *const *ids, size_t count) {
    redisReply *r = arr(4);
    r->element[0] = str(epoch);
    r->element[1] = str(first);
    r->element[2] = str(newest);
    r->element[3] = arr(count);
    for (size_t i = 0; i < count; i++) {
        redisReply *entry = arr(2), *fields = arr(2);
        char data[64];
        snprintf(data, sizeof data, "{\"n\":\"%s\"}", ids[i]);
        fields->element[0] = str("d");
        fields->element[1] = str(data);
        entry->element[0] = str(ids[i]);
        entry->element[1] = fields;
        r->element[3]->element[i] = entry;
    }
    redisCallbackFn *fn = read_fn;
    read_fn = NULL;
    fn(NULL, r, read_privdata);
    reply_free(r);
}

static void reset(void) {
    bus_up = true;
    cmd_up = true;
    command_count = 0;
    reads = 0;
    read_fn = NULL;
}

static struct subs *new_index(size_t max_channels) {
    struct subs_limits limits = {max_channels, 65536, 5, "herald:"};
    struct subs_hooks hooks = {0};
    return subs_new(NULL, base, &limits, &hooks);
}

static enum subs_add_result add(struct subs *idx, struct fake *f, const char *channel) {
    struct sub *out;
    return subs_add(idx, &f->session, false, &f->session.subs, channel, NULL, &out);
}

static enum subs_add_result add_sse(struct subs *idx, struct fake *f, const char *channel) {
    struct sub *out;
    return subs_add(idx, &f->session, true, &f->session.subs, channel, NULL, &out);
}

/* One turn of the event loop: what the index left for the end of the loop
 * iteration (flushes, answers from the recent window) runs. */
static void turn(void) {
    event_base_loop(base, EVLOOP_NONBLOCK);
}

static enum subs_add_result add_since(struct subs *idx, struct fake *f, const char *channel,
                                      const char *offset, const char *epoch) {
    struct sub *out;
    struct subs_since since = {offset, epoch};
    enum subs_add_result r =
        subs_add(idx, &f->session, false, &f->session.subs, channel, &since, &out);
    turn();
    return r;
}

/* Confirms channel and answers its position read: no history. */
static void confirm(struct subs *idx, const char *channel) {
    subs_on_confirmed(idx, channel);
    if (read_fn) answer_read(NULL, NULL, NULL, NULL, 0);
}

static bool del(struct subs *idx, struct fake *f, const char *channel) {
    return subs_remove(idx, &f->session.subs, channel);
}

static void del_all(struct subs *idx, struct fake *f) {
    subs_remove_all(idx, &f->session.subs);
}

static void publish(struct subs *idx, const char *channel, const char *data) {
    subs_publish(idx, channel, data, strlen(data), 0);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_first_subscriber_waits_for_redis_confirmation(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    CHECK_INT(add(s, &a, "apps:created"), SUBS_ADDED_PENDING);
    CHECK_INT(command_count, 1);
    CHECK_STR(commands[0], "SUBSCRIBE apps:created");
    CHECK_INT(a.replies, 0);
    confirm(s, "apps:created");
    CHECK_INT(a.replies, 1);
    CHECK_INT(subs_channel_count(s), 1);
    CHECK_INT(subs_subscription_count(s), 1);
    del_all(s, &a);
    subs_free(s);
}

static void test_second_subscriber_on_active_channel_is_confirmed_at_once(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0};
    add(s, &a, "apps:created");
    confirm(s, "apps:created");
    CHECK_INT(add(s, &b, "apps:created"), SUBS_ADDED_CONFIRMED);
    CHECK_INT(command_count, 1);
    CHECK_INT(add(s, &b, "apps:created"), SUBS_ALREADY);
    CHECK_INT(subs_subscription_count(s), 2);
    del_all(s, &a);
    CHECK_INT(command_count, 1); /* b still there: no UNSUBSCRIBE */
    del_all(s, &b);
    CHECK_INT(command_count, 2);
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    subs_free(s);
}

static void test_resubscribe_waits_for_unsubscribe_reply(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0};
    add(s, &a, "apps:created");
    confirm(s, "apps:created");
    CHECK(del(s, &a, "apps:created"));
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    /* A new subscriber while the UNSUBSCRIBE is in flight: nothing sent yet. */
    CHECK_INT(add(s, &b, "apps:created"), SUBS_ADDED_PENDING);
    CHECK_INT(command_count, 2);
    subs_on_unsubscribed(s, "apps:created");
    CHECK_INT(command_count, 3);
    CHECK_STR(commands[2], "SUBSCRIBE apps:created");
    CHECK_INT(b.replies, 0);
    confirm(s, "apps:created");
    CHECK_INT(b.replies, 1);
    del_all(s, &b);
    subs_free(s);
}

static void test_leaving_before_confirmation_unsubscribes_after_it(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:created");
    CHECK(del(s, &a, "apps:created"));
    /* The subscribe still gets its answer, before the unsubscribe's. */
    CHECK_INT(a.replies, 1);
    CHECK_INT(command_count, 1); /* SUBSCRIBE still in flight: no UNSUBSCRIBE yet */
    confirm(s, "apps:created");
    CHECK_INT(a.replies, 1); /* nothing more for a session that left */
    CHECK_INT(command_count, 2);
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    subs_on_unsubscribed(s, "apps:created");
    CHECK_INT(subs_channel_count(s), 0);
    CHECK(subs_find(s, "apps:created") == NULL);
    subs_free(s);
}

static void test_repeat_subscribe_before_confirmation_is_pending_too(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    CHECK_INT(add(s, &a, "apps:created"), SUBS_ADDED_PENDING);
    CHECK_INT(add(s, &a, "apps:created"), SUBS_ALREADY_PENDING);
    CHECK_INT(a.replies, 0); /* not before Redis confirmed */
    CHECK_INT(subs_subscription_count(s), 1);
    confirm(s, "apps:created");
    CHECK_INT(a.replies, 1); /* one subscription went live; the session answers both */
    CHECK_INT(add(s, &a, "apps:created"), SUBS_ALREADY);
    del_all(s, &a);
    subs_free(s);
}

static void test_bus_down_answers_pending_and_up_resubscribes(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0}, c = {0};
    add(s, &a, "apps:created");
    add(s, &b, "user:u1");
    confirm(s, "user:u1");
    bus_up = false;
    subs_on_bus_down(s);
    CHECK_INT(a.replies, 1); /* answered now; a gap follows after the outage */
    /* While down, a new channel is confirmed locally at once. */
    CHECK_INT(add(s, &c, "storage:uploaded"), SUBS_ADDED_CONFIRMED);
    bus_up = true;
    command_count = 0;
    CHECK_INT(subs_on_bus_up(s, false), 3);
    CHECK_INT(command_count, 3);
    del_all(s, &a);
    del_all(s, &b);
    del_all(s, &c);
    subs_free(s);
}

static void test_refused_subscribe_drops_that_channel_only(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0};
    add(s, &a, "apps:created");
    add(s, &b, "apps:created");
    add(s, &a, "apps:deleted");
    confirm(s, "apps:deleted");
    subs_on_refused(s, "apps:created", "NOPERM");
    CHECK_INT(a.refused, 1);
    CHECK_INT(b.refused, 1);
    CHECK(subs_find(s, "apps:created") == NULL);
    CHECK(!subs_contains(a.session.subs, "apps:created"));
    CHECK(subs_contains(a.session.subs, "apps:deleted"));
    CHECK_INT(subs_subscription_count(s), 1);
    CHECK_INT(command_count, 2); /* no retry, no UNSUBSCRIBE of a channel never subscribed */
    publish(s, "apps:deleted", "{}");
    subs_flush(s);
    CHECK_INT(a.frames, 1); /* the other channel still delivers */
    del_all(s, &a);
    del_all(s, &b);
    subs_free(s);
}

static void test_distinct_channels_are_capped_per_worker(void) {
    reset();
    struct subs *s = new_index(2);
    struct fake a = {0}, b = {0};
    CHECK_INT(add(s, &a, "apps:c1"), SUBS_ADDED_PENDING);
    CHECK_INT(add(s, &a, "apps:c2"), SUBS_ADDED_PENDING);
    CHECK_INT(add(s, &a, "apps:c3"), SUBS_TOO_MANY_CHANNELS);
    CHECK_INT(add(s, &b, "apps:c1"), SUBS_ADDED_PENDING); /* an existing channel is fine */
    CHECK_INT(subs_channel_count(s), 2);
    CHECK_INT(command_count, 2);
    del_all(s, &a);
    del_all(s, &b);
    subs_free(s);
}

static void test_events_reach_only_confirmed_subscribers_of_the_channel(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0}, other = {0};
    add(s, &a, "apps:created");
    publish(s, "apps:created", "{}");
    CHECK_INT(subs_flush(s), 0); /* a still pending */
    confirm(s, "apps:created");
    add(s, &b, "apps:created");
    add(s, &other, "apps:deleted");
    confirm(s, "apps:deleted");
    publish(s, "apps:created", "{\"n\":1}");
    CHECK_INT(subs_flush(s), 2);
    CHECK_INT(a.frames, 1);
    CHECK_INT(b.frames, 1);
    CHECK_INT(other.frames, 0);
    publish(s, "nobody:here", "{}");
    publish(s, "apps:created", "{not json");
    CHECK_INT(subs_flush(s), 0);
    del_all(s, &a);
    del_all(s, &b);
    del_all(s, &other);
    subs_free(s);
}

static void test_a_run_of_one_channel_is_one_shared_batch(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0};
    add(s, &a, "apps:created");
    add(s, &b, "apps:deleted");
    confirm(s, "apps:created");
    confirm(s, "apps:deleted");
    publish(s, "apps:created", "{\"n\":1}");
    publish(s, "apps:created", "{\"n\":2}");
    CHECK_INT(a.frames, 0);                  /* batched until the end of the loop iteration */
    publish(s, "apps:deleted", "{\"n\":3}"); /* another channel: the run is delivered first */
    CHECK_INT(a.frames, 2);
    CHECK_INT(b.frames, 0);
    publish(s, "apps:created", "{\"n\":4}");
    CHECK_INT(b.frames, 1);
    CHECK_INT(subs_flush(s), 1);
    CHECK_INT(a.frames, 3);
    CHECK_INT(subs_flush(s), 0);
    del_all(s, &a);
    del_all(s, &b);
    subs_free(s);
}

static void test_event_frame_is_the_event_message(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:created");
    confirm(s, "apps:created");
    publish(s, "apps:created", "{\"id\":\"a1\"}");
    subs_flush(s);
    /* 2-byte header + {"type":"event","channel":"apps:created","data":{"id":"a1"},
     * "timestamp":"2025-11-25T12:00:00.000Z"} */
    const char *expect =
        "{\"type\":\"event\",\"channel\":\"apps:created\",\"data\":{\"id\":\"a1\"},"
        "\"timestamp\":\"2025-11-25T12:00:00.000Z\"}";
    CHECK_INT(a.bytes, 2 + strlen(expect));
    del_all(s, &a);
    subs_free(s);
}

static void test_confirmation_delivers_earlier_events_to_old_subscribers_only(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0};
    add(s, &a, "apps:created");
    confirm(s, "apps:created");
    add(s, &b, "apps:deleted");
    publish(s, "apps:created", "{}");
    confirm(s, "apps:deleted"); /* flushes first */
    CHECK_INT(a.frames, 1);
    del_all(s, &a);
    del_all(s, &b);
    subs_free(s);
}

static void test_many_channels_survive_table_growth(void) {
    reset();
    struct subs *s = new_index(5000);
    struct fake a = {0};
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "apps:c%d", i);
        add(s, &a, name);
        command_count = 0;
    }
    CHECK_INT(subs_channel_count(s), 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "apps:c%d", i);
        CHECK(subs_find(s, name) != NULL);
    }
    del_all(s, &a);
    CHECK_INT(subs_subscription_count(s), 0);
    subs_free(s);
}

static void test_sse_form_is_built_only_for_channels_with_sse_subscribers(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake ws = {0}, sse = {0}, other = {0};
    add(s, &ws, "apps:created");
    add_sse(s, &sse, "apps:created");
    add(s, &other, "apps:deleted");
    confirm(s, "apps:created");
    confirm(s, "apps:deleted");
    publish(s, "apps:deleted", "{}");
    CHECK(subs_find(s, "apps:deleted")->sse.data == NULL); /* no SSE subscriber: no SSE form */
    subs_flush(s);
    const char *msg = "#1700000000000001 1700000000000-3 {\"id\":\n\"a1\"}";
    subs_publish(s, "apps:created", msg, strlen(msg), 0);
    CHECK(subs_find(s, "apps:created")->sse.data != NULL);
    subs_flush(s);
    CHECK_INT(ws.frames, 1);
    CHECK_INT(sse.frames, 0);
    CHECK_INT(sse.sse_events, 1);
    /* The WebSocket message, its line break as a second "data:" line. */
    const char *prefix =
        "data: {\"type\":\"event\",\"channel\":\"apps:created\",\"data\":{\"id\":\n"
        "data: \"a1\"},\"offset\":\"1700000000000-3\",\"epoch\":\"1700000000000001\","
        "\"timestamp\":\"";
    CHECK(strncmp(sse.sse_last, prefix, strlen(prefix)) == 0);
    CHECK(strstr(sse.sse_last, "Z\"}\n|1700000000000-3|1700000000000001") != NULL);
    del_all(s, &sse); /* the last SSE subscriber gone: plain batches again */
    publish(s, "apps:created", "{}");
    CHECK(subs_find(s, "apps:created")->sse.data == NULL);
    subs_flush(s);
    CHECK_INT(ws.frames, 2);
    del_all(s, &ws);
    del_all(s, &other);
    subs_free(s);
}

/* ---- history -------------------------------------------------------------- */

static void publish_offset(struct subs *idx, const char *channel, const char *epoch,
                           const char *offset) {
    char msg[128];
    snprintf(msg, sizeof msg, "#%s %s {\"n\":\"%s\"}", epoch, offset, offset);
    subs_publish(idx, channel, msg, strlen(msg), 0);
}

/* The "n" values of the events in text, in order, joined by ','. */
static const char *ns(const char *text) {
    static char out[1024];
    size_t n = 0;
    out[0] = '\0';
    for (const char *p = text; (p = strstr(p, "\"n\":\""));) {
        p += 5;
        const char *end = strchr(p, '"');
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%.*s", n ? "," : "", (int)(end - p), p);
        p = end;
    }
    return out;
}

static void test_subscribed_carries_the_position_from_one_read(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0}, b = {0};
    CHECK_INT(add(s, &a, "apps:h"), SUBS_ADDED_PENDING);
    CHECK_INT(add(s, &b, "apps:h"), SUBS_ADDED_PENDING);
    subs_on_confirmed(s, "apps:h");
    CHECK_INT(reads, 1);
    CHECK_STR(read_since, ""); /* position only */
    CHECK_INT(a.replies, 0);
    answer_read("11", "1-0", "5-0", NULL, 0);
    CHECK_INT(a.replies, 1);
    CHECK_INT(b.replies, 1);
    CHECK_STR(a.offset, "5-0");
    CHECK_STR(a.epoch, "11");
    CHECK_INT(a.recovered, -1);
    struct fake c = {0}; /* positioned now: live at once, no read */
    CHECK_INT(add(s, &c, "apps:h"), SUBS_ADDED_CONFIRMED);
    CHECK_INT(reads, 1);
    publish_offset(s, "apps:h", "11", "6-0");
    subs_flush(s);
    struct subs_ready pos;
    subs_position(c.session.subs, &pos);
    CHECK_STR(pos.offset, "6-0"); /* live events move the position */
    del_all(s, &a);
    del_all(s, &b);
    del_all(s, &c);
    subs_free(s);
}

static void test_recovery_merges_history_and_live_events_at_the_seam(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake live = {0}, back = {0};
    add(s, &live, "apps:h");
    subs_on_confirmed(s, "apps:h");
    answer_read("11", "1-0", "2-0", NULL, 0);
    CHECK_INT(add_since(s, &back, "apps:h", "1-0", "11"), SUBS_ADDED_PENDING);
    CHECK_INT(reads, 2);
    CHECK_STR(read_since, "1-0");
    /* Live events while the read is in flight: 3-0 is also in the history. */
    publish_offset(s, "apps:h", "11", "3-0");
    publish_offset(s, "apps:h", "11", "4-0");
    subs_flush(s);
    CHECK_INT(live.frames, 2);
    CHECK_INT(back.frames, 0); /* not live yet */
    const char *ids[] = {"1-0", "2-0", "3-0"};
    answer_read("11", "1-0", "3-0", ids, 3);
    CHECK_INT(back.recovered, 1);
    CHECK_STR(ns(back.after), "2-0,3-0,4-0"); /* no gap, no duplicate */
    publish_offset(s, "apps:h", "11", "5-0");
    subs_flush(s);
    CHECK_INT(back.frames, 1); /* then live */
    del_all(s, &live);
    del_all(s, &back);
    subs_free(s);
}

static void test_a_read_ahead_of_the_live_stream_delivers_nothing_twice(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake live = {0}, back = {0}, fresh = {0};
    add(s, &live, "apps:h");
    subs_on_confirmed(s, "apps:h");
    answer_read("11", "1-0", "2-0", NULL, 0);
    add_since(s, &back, "apps:h", "1-0", "11");
    publish_offset(s, "apps:h", "11", "3-0");
    subs_flush(s);
    /* The read ran after 4-0 was published; 4-0's pub/sub copy comes later,
     * on the other connection. */
    const char *ids[] = {"1-0", "2-0", "3-0", "4-0"};
    answer_read("11", "1-0", "4-0", ids, 4);
    CHECK_INT(back.recovered, 1);
    CHECK_STR(back.offset, "4-0");
    CHECK_STR(ns(back.after), "2-0,3-0,4-0");
    CHECK_INT(add(s, &fresh, "apps:h"), SUBS_ADDED_CONFIRMED);
    struct subs_ready pos;
    subs_position(fresh.session.subs, &pos);
    CHECK_STR(pos.offset, "4-0"); /* what its "subscribed" says */
    publish_offset(s, "apps:h", "11", "4-0");
    subs_flush(s);
    CHECK_INT(live.frames, 2);
    CHECK_INT(back.frames, 0);  /* it had 4-0 from the history */
    CHECK_INT(fresh.frames, 0); /* 4-0 is not after its position */
    publish_offset(s, "apps:h", "11", "5-0");
    publish_offset(s, "apps:h", "11", "6-0");
    subs_flush(s);
    CHECK_INT(live.frames, 4);
    CHECK_INT(back.frames, 2);
    CHECK_INT(fresh.frames, 2);
    publish_offset(s, "apps:h", "11", "7-0"); /* batched again once nobody skips */
    publish_offset(s, "apps:h", "11", "8-0");
    CHECK_INT(subs_flush(s), 6);
    del_all(s, &live);
    del_all(s, &back);
    del_all(s, &fresh);
    subs_free(s);
}

static void test_a_read_cut_at_its_count_recovers_nobody_short_of_the_newest(void) {
    reset();
    struct subs *s = new_index(100); /* recovery limit 5: reads of 7 entries */
    struct fake far = {0}, near = {0};
    add_since(s, &far, "apps:h", "1-0", "11");
    add_since(s, &near, "apps:h", "5-0", "11");
    subs_on_confirmed(s, "apps:h");
    CHECK_STR(read_since, "1-0");
    const char *ids[] = {"1-0", "2-0", "3-0", "4-0", "5-0", "6-0", "7-0"};
    answer_read("11", "1-0", "9-0", ids, 7); /* 8-0 and 9-0 lie beyond the cut */
    CHECK_INT(far.recovered, 0);             /* 8 missed: over the limit */
    CHECK_INT(near.replies, 0);              /* not with 6-0 and 7-0 only */
    CHECK_INT(reads, 2);
    CHECK_STR(read_since, "5-0");
    const char *rest[] = {"5-0", "6-0", "7-0", "8-0", "9-0"};
    answer_read("11", "1-0", "9-0", rest, 5);
    CHECK_INT(near.recovered, 1);
    CHECK_STR(ns(near.after), "6-0,7-0,8-0,9-0");
    del_all(s, &far);
    del_all(s, &near);
    subs_free(s);
}

static void test_recovery_fails_on_other_epoch_trimmed_offset_or_over_the_limit(void) {
    struct {
        const char *since, *epoch;
        const char *ids[8];
        size_t count;
        int recovered;
    } cases[] = {
        {"1-0", "11", {"1-0", "2-0"}, 2, 1},                             /* the base case */
        {"1-0", "10", {"1-0", "2-0"}, 2, 0},                             /* other epoch */
        {"1-0", "11", {"2-0", "3-0"}, 2, 0},                             /* 1-0 trimmed */
        {"1-0", "11", {"1-0", "2-0", "3-0", "4-0", "5-0", "6-0"}, 6, 0}, /* 5 missed: limit 5 ok */
        {"1-0", "11", {"1-0", "2-0", "3-0", "4-0", "5-0", "6-0", "7-0"}, 7, 0}, /* 6: over */
        {"", "11", {"1-0", "2-0"}, 2, 1}, /* from the start, nothing trimmed */
        {"", "11", {"2-0"}, 1, 0},        /* from the start, the first entry trimmed */
    };
    cases[3].recovered = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reset();
        struct subs *s = new_index(100);
        struct fake a = {0};
        add_since(s, &a, "apps:h", cases[i].since, cases[i].epoch);
        subs_on_confirmed(s, "apps:h");
        CHECK_STR(read_since, cases[i].since[0] ? cases[i].since : "-");
        answer_read("11", "1-0", cases[i].ids[cases[i].count - 1], cases[i].ids, cases[i].count);
        if (a.recovered != cases[i].recovered) fprintf(stderr, "  case %zu\n", i);
        CHECK_INT(a.recovered, cases[i].recovered);
        CHECK((strstr(a.after, "\"type\":\"gap\"") != NULL) == !cases[i].recovered);
        del_all(s, &a);
        subs_free(s);
    }
}

static void test_one_read_serves_every_waiter_of_a_channel(void) {
    reset();
    struct subs *s = new_index(100);
    static struct fake w[5];
    memset(w, 0, sizeof w);
    add_since(s, &w[0], "apps:h", "2-0", "11");
    add_since(s, &w[1], "apps:h", "3-0", "11");
    subs_on_confirmed(s, "apps:h");
    CHECK_INT(reads, 1);
    CHECK_STR(read_since, "2-0");               /* the oldest asked for */
    add_since(s, &w[2], "apps:h", "2-0", "11"); /* joins the read in flight */
    add(s, &w[3], "apps:h");                    /* position only: joins too */
    add_since(s, &w[4], "apps:h", "1-0", "11"); /* older: needs the next read */
    CHECK_INT(reads, 1);
    const char *ids[] = {"2-0", "3-0", "4-0"};
    answer_read("11", "1-0", "4-0", ids, 3);
    CHECK_STR(ns(w[0].after), "3-0,4-0");
    CHECK_STR(ns(w[1].after), "4-0");
    CHECK_STR(ns(w[2].after), "3-0,4-0");
    CHECK_INT(w[3].replies, 1);
    CHECK_STR(w[3].offset, "4-0");
    CHECK_INT(w[4].replies, 0);
    CHECK_INT(reads, 2); /* the next read, for the older offset */
    CHECK_STR(read_since, "1-0");
    const char *more[] = {"1-0", "2-0", "3-0", "4-0"};
    answer_read("11", "1-0", "4-0", more, 4);
    CHECK_STR(ns(w[4].after), "2-0,3-0,4-0");
    CHECK_INT(subs_counters(s)->history_reads, 2);
    CHECK_INT(subs_counters(s)->waiters_served, 5);
    for (int i = 0; i < 5; i++) del_all(s, &w[i]);
    subs_free(s);
}

static void test_redis_outage_recovers_channels_with_history_and_gaps_the_rest(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:h");
    add(s, &a, "apps:raw");
    subs_on_confirmed(s, "apps:h");
    answer_read("11", "1-0", "2-0", NULL, 0);
    subs_on_confirmed(s, "apps:raw");
    answer_read(NULL, NULL, NULL, NULL, 0);
    publish_offset(s, "apps:h", "11", "3-0");
    subs_flush(s);
    bus_up = false;
    subs_on_bus_down(s);
    bus_up = true;
    CHECK_INT(subs_on_bus_up(s, false), 2);
    a.after[0] = '\0';
    subs_on_confirmed(s, "apps:raw");
    subs_on_confirmed(s, "apps:h");
    CHECK_STR(read_since, "3-0"); /* from the last event delivered */
    const char *ids[] = {"3-0", "4-0", "5-0"};
    answer_read("11", "1-0", "5-0", ids, 3);
    CHECK_STR(ns(a.after), "4-0,5-0");
    CHECK(strstr(a.after, "\"type\":\"gap\"") == NULL);
    struct sub *raw = a.session.subs;
    while (strcmp(raw->channel->name, "apps:raw") != 0) raw = raw->conn_next;
    CHECK(raw->gap_owed);
    CHECK(!a.session.subs->gap_owed || a.session.subs == raw);
    del_all(s, &a);
    subs_free(s);
}

static void test_channel_lost_alone_recovers_it_on_its_new_owner_and_gaps_the_rest(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:h");
    add(s, &a, "apps:raw");
    add(s, &a, "apps:other");
    subs_on_confirmed(s, "apps:h");
    answer_read("11", "1-0", "2-0", NULL, 0);
    subs_on_confirmed(s, "apps:raw");
    answer_read(NULL, NULL, NULL, NULL, 0);
    subs_on_confirmed(s, "apps:other");
    answer_read(NULL, NULL, NULL, NULL, 0);
    publish_offset(s, "apps:h", "11", "3-0");
    subs_flush(s);
    int commands_before = command_count, frames_before = a.frames;
    gaps_sent = 0;
    subs_on_channel_lost(s, "apps:h");
    subs_on_channel_lost(s, "apps:raw");
    CHECK_INT(command_count, commands_before); /* the bus subscribes them again itself */
    CHECK_INT(subs_find(s, "apps:h")->state, CHANNEL_SUBSCRIBING);
    publish(s, "apps:other", "{\"x\":1}"); /* the other channel is untouched */
    subs_flush(s);
    CHECK_INT(a.frames, frames_before + 1);
    a.after[0] = '\0';
    subs_on_confirmed(s, "apps:h");
    CHECK_STR(read_since, "3-0");   /* from the last event delivered */
    CHECK_STR(routed_to, "apps:h"); /* read on the owner of the channel's slot */
    const char *ids[] = {"3-0", "4-0", "5-0"};
    answer_read("11", "1-0", "5-0", ids, 3);
    CHECK_STR(ns(a.after), "4-0,5-0");
    CHECK(strstr(a.after, "\"type\":\"gap\"") == NULL);
    CHECK_INT(gaps_sent, 0);
    a.after[0] = '\0';
    subs_on_confirmed(s, "apps:raw"); /* no history when last read: read it all now */
    CHECK_STR(read_since, "-");
    answer_read(NULL, NULL, NULL, NULL, 0); /* still none: a gap */
    CHECK(strstr(a.after, "\"type\":\"gap\"") != NULL);
    CHECK(strstr(a.after, "apps:raw") != NULL);
    CHECK_STR(ns(a.after), "");
    del_all(s, &a);
    subs_free(s);
}

/* A channel subscribed before it had any history, whose first events were
 * still on their way when its node went: the history that exists now began
 * after the subscription, so it is recovered from its first entry, no gap. */
/* a subscribes apps:new while it has no history; the channel's node goes
 * before any event arrives, and the channel is subscribed on the new one. */
static void lose_before_the_first_event(struct subs *s, struct fake *a) {
    add(s, a, "apps:new");
    subs_on_confirmed(s, "apps:new");
    answer_read(NULL, NULL, NULL, NULL, 0); /* no history yet */
    gaps_sent = 0;
    subs_on_channel_lost(s, "apps:new");
    a->after[0] = '\0';
    subs_on_confirmed(s, "apps:new");
}

static void test_channel_lost_alone_before_its_first_event_recovers_from_the_first_entry(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    lose_before_the_first_event(s, &a);
    CHECK_STR(read_since, "-");
    const char *ids[] = {"1-0", "2-0", "3-0"};
    answer_read("7", "1-0", "3-0", ids, 3);
    CHECK_STR(ns(a.after), "1-0,2-0,3-0");
    CHECK(strstr(a.after, "\"type\":\"gap\"") == NULL);
    CHECK_INT(gaps_sent, 0);
    del_all(s, &a);
    subs_free(s);
}

/* The same when the history was trimmed past its first entry: not exact, a gap. */
static void test_channel_lost_alone_before_its_first_event_gaps_when_trimmed(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    lose_before_the_first_event(s, &a);
    const char *ids[] = {"2-0", "3-0"};
    answer_read("7", "1-0", "3-0", ids, 2); /* the epoch began at 1-0: trimmed */
    CHECK(strstr(a.after, "\"type\":\"gap\"") != NULL);
    CHECK_STR(ns(a.after), "");
    del_all(s, &a);
    subs_free(s);
}

/* A whole-Redis outage of a channel that had no history when last read: it
 * recovers from the first entry when the outage ended on the same Redis
 * process, and keeps its gap when Redis restarted (it may have lost its last
 * writes with their history). */
static void outage_before_the_first_event(struct subs *s, struct fake *a, bool same_redis) {
    add(s, a, "apps:new");
    subs_on_confirmed(s, "apps:new");
    answer_read(NULL, NULL, NULL, NULL, 0); /* no history yet */
    bus_up = false;
    subs_on_bus_down(s);
    bus_up = true;
    CHECK_INT(subs_on_bus_up(s, same_redis), 1);
    a->after[0] = '\0';
    read_since[0] = '\0';
    subs_on_confirmed(s, "apps:new");
}

static void test_outage_on_the_same_redis_recovers_a_new_channel_from_its_first_entry(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    outage_before_the_first_event(s, &a, true);
    CHECK_STR(read_since, "-");
    const char *ids[] = {"1-0", "2-0"};
    answer_read("7", "1-0", "2-0", ids, 2);
    CHECK_STR(ns(a.after), "1-0,2-0");
    CHECK(strstr(a.after, "\"type\":\"gap\"") == NULL);
    CHECK(!a.session.subs->gap_owed);
    del_all(s, &a);
    subs_free(s);
}

static void test_outage_across_a_redis_restart_gaps_a_new_channel(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    outage_before_the_first_event(s, &a, false);
    CHECK_STR(read_since, ""); /* nothing to read: its gap is owed */
    CHECK(a.session.subs->gap_owed);
    CHECK_STR(ns(a.after), "");
    del_all(s, &a);
    subs_free(s);
}

/* An event with an offset ends "no history": after that the channel recovers
 * from what it has, like any other. */
static void test_first_live_event_ends_the_no_history_state(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:new");
    subs_on_confirmed(s, "apps:new");
    answer_read(NULL, NULL, NULL, NULL, 0);
    CHECK(subs_find(s, "apps:new")->history_absent);
    publish_offset(s, "apps:new", "7", "1-0");
    subs_flush(s);
    CHECK(!subs_find(s, "apps:new")->history_absent);
    subs_on_channel_lost(s, "apps:new");
    subs_on_confirmed(s, "apps:new");
    CHECK_STR(read_since, "1-0");
    answer_read("7", "1-0", "1-0", NULL, 0);
    del_all(s, &a);
    subs_free(s);
}

static void test_read_waits_for_the_command_connection(void) {
    reset();
    cmd_up = false;
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:h");
    subs_on_confirmed(s, "apps:h");
    CHECK_INT(reads, 0);
    CHECK_INT(a.replies, 0);
    cmd_up = true;
    subs_on_command_up(s);
    CHECK_INT(reads, 1);
    answer_read("11", NULL, NULL, NULL, 0);
    CHECK_INT(a.replies, 1);
    del_all(s, &a);
    subs_free(s);
}

static void test_a_read_outliving_its_channel_is_ignored(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake a = {0};
    add(s, &a, "apps:h");
    subs_on_confirmed(s, "apps:h");
    del_all(s, &a); /* answered, gone, UNSUBSCRIBE sent */
    subs_on_unsubscribed(s, "apps:h");
    CHECK(subs_find(s, "apps:h") == NULL);
    answer_read("11", NULL, NULL, NULL, 0); /* must touch nothing */
    subs_free(s);
}

static void test_the_recent_window_answers_later_arrivals_without_redis(void) {
    reset();
    struct subs *s = new_index(100);
    struct fake live = {0}, w1 = {0}, w2 = {0}, w3 = {0}, w4 = {0};
    add(s, &live, "apps:h");
    subs_on_confirmed(s, "apps:h");
    answer_read("11", "1-0", "3-0", NULL, 0);
    add_since(s, &w1, "apps:h", "1-0", "11");
    CHECK_INT(reads, 2);
    const char *ids[] = {"1-0", "2-0", "3-0"};
    answer_read("11", "1-0", "3-0", ids, 3);
    CHECK_STR(ns(w1.after), "2-0,3-0");
    publish_offset(s, "apps:h", "11", "4-0"); /* live, kept with the window */
    subs_flush(s);
    /* Arrivals after the read: answered from memory, with the live events since. */
    add_since(s, &w2, "apps:h", "2-0", "11");
    add_since(s, &w3, "apps:h", "4-0", "11");
    CHECK_INT(reads, 2);
    CHECK_INT(w2.recovered, 1);
    CHECK_STR(ns(w2.after), "3-0,4-0");
    CHECK_INT(w3.recovered, 1);
    CHECK_STR(ns(w3.after), "");
    CHECK_INT(subs_counters(s)->window_answers, 2);
    /* An offset the window does not hold goes to Redis. */
    add_since(s, &w4, "apps:h", "0-5", "11");
    CHECK_INT(reads, 3);
    CHECK_STR(read_since, "0-5");
    const char *older[] = {"0-5", "1-0", "2-0", "3-0", "4-0"};
    answer_read("11", "0-5", "4-0", older, 5);
    CHECK_STR(ns(w4.after), "1-0,2-0,3-0,4-0");
    publish_offset(s, "apps:h", "11", "5-0");
    subs_flush(s);
    CHECK_INT(w2.frames, 1); /* every one of them live, nothing twice */
    CHECK_INT(w4.frames, 1);
    del_all(s, &live);
    del_all(s, &w1);
    del_all(s, &w2);
    del_all(s, &w3);
    del_all(s, &w4);
    subs_free(s);
}

int main(void) {
    base = event_base_new();
    RUN(test_first_subscriber_waits_for_redis_confirmation);
    RUN(test_second_subscriber_on_active_channel_is_confirmed_at_once);
    RUN(test_resubscribe_waits_for_unsubscribe_reply);
    RUN(test_leaving_before_confirmation_unsubscribes_after_it);
    RUN(test_repeat_subscribe_before_confirmation_is_pending_too);
    RUN(test_bus_down_answers_pending_and_up_resubscribes);
    RUN(test_refused_subscribe_drops_that_channel_only);
    RUN(test_distinct_channels_are_capped_per_worker);
    RUN(test_events_reach_only_confirmed_subscribers_of_the_channel);
    RUN(test_a_run_of_one_channel_is_one_shared_batch);
    RUN(test_event_frame_is_the_event_message);
    RUN(test_confirmation_delivers_earlier_events_to_old_subscribers_only);
    RUN(test_many_channels_survive_table_growth);
    RUN(test_sse_form_is_built_only_for_channels_with_sse_subscribers);
    RUN(test_subscribed_carries_the_position_from_one_read);
    RUN(test_recovery_merges_history_and_live_events_at_the_seam);
    RUN(test_a_read_ahead_of_the_live_stream_delivers_nothing_twice);
    RUN(test_a_read_cut_at_its_count_recovers_nobody_short_of_the_newest);
    RUN(test_recovery_fails_on_other_epoch_trimmed_offset_or_over_the_limit);
    RUN(test_one_read_serves_every_waiter_of_a_channel);
    RUN(test_redis_outage_recovers_channels_with_history_and_gaps_the_rest);
    RUN(test_channel_lost_alone_recovers_it_on_its_new_owner_and_gaps_the_rest);
    RUN(test_channel_lost_alone_before_its_first_event_recovers_from_the_first_entry);
    RUN(test_channel_lost_alone_before_its_first_event_gaps_when_trimmed);
    RUN(test_first_live_event_ends_the_no_history_state);
    RUN(test_outage_on_the_same_redis_recovers_a_new_channel_from_its_first_entry);
    RUN(test_outage_across_a_redis_restart_gaps_a_new_channel);
    RUN(test_read_waits_for_the_command_connection);
    RUN(test_a_read_outliving_its_channel_is_ignored);
    RUN(test_the_recent_window_answers_later_arrivals_without_redis);
    event_base_free(base);
    return TEST_SUMMARY();
}
