/* test_subs.c -- the subscription index's state machine and fan-out order,
 * against a recording fake of the bus and of sessions (no network). */
#include <event2/event.h>
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

void session_on_subscribed(struct session *s, struct sub *sub) {
    FAKE(s)->replies++;
    note(FAKE(s), "live", sub->channel->name);
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

static void reset(void) {
    bus_up = true;
    command_count = 0;
}

static struct subs *new_index(size_t max_channels) {
    struct subs_limits limits = {max_channels, 65536};
    struct subs_hooks hooks = {0};
    return subs_new(NULL, base, &limits, &hooks);
}

static enum subs_add_result add(struct subs *idx, struct fake *f, const char *channel) {
    struct sub *out;
    return subs_add(idx, &f->session, &f->session.subs, channel, &out);
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
    subs_on_confirmed(s, "apps:created");
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
    subs_on_confirmed(s, "apps:created");
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
    subs_on_confirmed(s, "apps:created");
    CHECK(del(s, &a, "apps:created"));
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    /* A new subscriber while the UNSUBSCRIBE is in flight: nothing sent yet. */
    CHECK_INT(add(s, &b, "apps:created"), SUBS_ADDED_PENDING);
    CHECK_INT(command_count, 2);
    subs_on_unsubscribed(s, "apps:created");
    CHECK_INT(command_count, 3);
    CHECK_STR(commands[2], "SUBSCRIBE apps:created");
    CHECK_INT(b.replies, 0);
    subs_on_confirmed(s, "apps:created");
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
    subs_on_confirmed(s, "apps:created");
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
    subs_on_confirmed(s, "apps:created");
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
    subs_on_confirmed(s, "user:u1");
    bus_up = false;
    subs_on_bus_down(s);
    CHECK_INT(a.replies, 1); /* answered now; a gap follows after the outage */
    /* While down, a new channel is confirmed locally at once. */
    CHECK_INT(add(s, &c, "storage:uploaded"), SUBS_ADDED_CONFIRMED);
    bus_up = true;
    command_count = 0;
    CHECK_INT(subs_on_bus_up(s), 3);
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
    subs_on_confirmed(s, "apps:deleted");
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
    subs_on_confirmed(s, "apps:created");
    add(s, &b, "apps:created");
    add(s, &other, "apps:deleted");
    subs_on_confirmed(s, "apps:deleted");
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
    subs_on_confirmed(s, "apps:created");
    subs_on_confirmed(s, "apps:deleted");
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
    subs_on_confirmed(s, "apps:created");
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
    subs_on_confirmed(s, "apps:created");
    add(s, &b, "apps:deleted");
    publish(s, "apps:created", "{}");
    subs_on_confirmed(s, "apps:deleted"); /* flushes first */
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
    event_base_free(base);
    return TEST_SUMMARY();
}
