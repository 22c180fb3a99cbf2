/* test_subs.c -- the subscription index's state machine, against a recording
 * fake of the bus and of connections (no network). */
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "conn.h"
#include "subs.h"
#include "testlib.h"

/* ---- fakes ---------------------------------------------------------------- */

struct conn {
    int replies; /* "subscribed" replies sent */
    json_t *last_id;
    int frames;   /* event messages queued */
    size_t bytes; /* bytes of those frames */
};

static bool bus_up = true;
static char commands[64][160]; /* "SUBSCRIBE x" / "UNSUBSCRIBE x" in order */
static int command_count;

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

void conn_reply_subscribed(struct conn *c, const char *channel, const json_t *id) {
    (void)channel;
    c->replies++;
    json_decref(c->last_id);
    c->last_id = id ? json_deep_copy(id) : NULL;
}

int conn_send_frame(struct conn *c, struct shared_frame *frame, unsigned events) {
    c->frames += (int)events;
    c->bytes += frame->len;
    return 0;
}

static void reset(void) {
    bus_up = true;
    command_count = 0;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_first_subscriber_waits_for_redis_confirmation(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0};
    struct sub *head = NULL;
    json_t *id = json_string("r1");
    CHECK_INT(subs_add(s, &a, &head, "apps:created", id), SUBS_ADDED_PENDING);
    CHECK_INT(command_count, 1);
    CHECK_STR(commands[0], "SUBSCRIBE apps:created");
    CHECK_INT(a.replies, 0);
    subs_on_confirmed(s, "apps:created");
    CHECK_INT(a.replies, 1);
    CHECK_STR(json_string_value(a.last_id), "r1");
    CHECK_INT(subs_channel_count(s), 1);
    CHECK_INT(subs_subscription_count(s), 1);
    subs_remove_all(s, &head);
    json_decref(id);
    json_decref(a.last_id);
    subs_free(s);
}

static void test_second_subscriber_on_active_channel_is_confirmed_at_once(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0}, b = {0};
    struct sub *ha = NULL, *hb = NULL;
    subs_add(s, &a, &ha, "apps:created", NULL);
    subs_on_confirmed(s, "apps:created");
    CHECK_INT(subs_add(s, &b, &hb, "apps:created", NULL), SUBS_ADDED_CONFIRMED);
    CHECK_INT(command_count, 1);
    CHECK_INT(subs_add(s, &b, &hb, "apps:created", NULL), SUBS_ALREADY);
    CHECK_INT(subs_subscription_count(s), 2);
    subs_remove_all(s, &ha);
    CHECK_INT(command_count, 1); /* b still there: no UNSUBSCRIBE */
    subs_remove_all(s, &hb);
    CHECK_INT(command_count, 2);
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    json_decref(a.last_id);
    json_decref(b.last_id);
    subs_free(s);
}

static void test_resubscribe_waits_for_unsubscribe_reply(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0}, b = {0};
    struct sub *ha = NULL, *hb = NULL;
    subs_add(s, &a, &ha, "apps:created", NULL);
    subs_on_confirmed(s, "apps:created");
    CHECK(subs_remove(s, &ha, "apps:created"));
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    /* A new subscriber while the UNSUBSCRIBE is in flight: nothing sent yet. */
    CHECK_INT(subs_add(s, &b, &hb, "apps:created", NULL), SUBS_ADDED_PENDING);
    CHECK_INT(command_count, 2);
    subs_on_unsubscribed(s, "apps:created");
    CHECK_INT(command_count, 3);
    CHECK_STR(commands[2], "SUBSCRIBE apps:created");
    CHECK_INT(b.replies, 0);
    subs_on_confirmed(s, "apps:created");
    CHECK_INT(b.replies, 1);
    subs_remove_all(s, &hb);
    subs_free(s);
}

static void test_leaving_before_confirmation_unsubscribes_after_it(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0};
    struct sub *ha = NULL;
    json_t *id = json_string("sub-1");
    subs_add(s, &a, &ha, "apps:created", id);
    CHECK(subs_remove(s, &ha, "apps:created"));
    /* The subscribe still gets its answer, before the unsubscribe's. */
    CHECK_INT(a.replies, 1);
    CHECK_STR(json_string_value(a.last_id), "sub-1");
    CHECK_INT(command_count, 1); /* SUBSCRIBE still in flight: no UNSUBSCRIBE yet */
    subs_on_confirmed(s, "apps:created");
    CHECK_INT(a.replies, 1); /* nothing more for a connection that left */
    json_decref(id);
    json_decref(a.last_id);
    CHECK_INT(command_count, 2);
    CHECK_STR(commands[1], "UNSUBSCRIBE apps:created");
    subs_on_unsubscribed(s, "apps:created");
    CHECK_INT(subs_channel_count(s), 0);
    CHECK(subs_find(s, "apps:created") == NULL);
    subs_free(s);
}

static void test_repeat_subscribe_before_confirmation_is_answered_with_it(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0};
    struct sub *ha = NULL;
    json_t *first = json_integer(1), *second = json_integer(2);
    CHECK_INT(subs_add(s, &a, &ha, "apps:created", first), SUBS_ADDED_PENDING);
    CHECK_INT(subs_add(s, &a, &ha, "apps:created", second), SUBS_ALREADY_PENDING);
    CHECK_INT(a.replies, 0); /* not before Redis confirmed */
    CHECK_INT(subs_subscription_count(s), 1);
    subs_on_confirmed(s, "apps:created");
    CHECK_INT(a.replies, 2);
    CHECK_INT(json_integer_value(a.last_id), 2); /* in request order */
    CHECK_INT(subs_add(s, &a, &ha, "apps:created", first), SUBS_ALREADY);
    subs_remove_all(s, &ha);
    json_decref(first);
    json_decref(second);
    json_decref(a.last_id);
    subs_free(s);
}

static void test_bus_down_answers_pending_and_up_resubscribes(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0}, b = {0};
    struct sub *ha = NULL, *hb = NULL;
    subs_add(s, &a, &ha, "apps:created", NULL);
    subs_add(s, &b, &hb, "user:u1", NULL);
    subs_on_confirmed(s, "user:u1");
    bus_up = false;
    subs_on_bus_down(s);
    CHECK_INT(a.replies, 1); /* answered now; a gap follows after the outage */
    /* While down, a new channel is confirmed locally at once. */
    struct conn c = {0};
    struct sub *hc = NULL;
    CHECK_INT(subs_add(s, &c, &hc, "storage:uploaded", NULL), SUBS_ADDED_CONFIRMED);
    bus_up = true;
    command_count = 0;
    CHECK_INT(subs_on_bus_up(s), 3);
    CHECK_INT(command_count, 3);
    subs_remove_all(s, &ha);
    subs_remove_all(s, &hb);
    subs_remove_all(s, &hc);
    subs_free(s);
}

static void test_events_reach_only_confirmed_subscribers_of_the_channel(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0}, b = {0}, other = {0};
    struct sub *ha = NULL, *hb = NULL, *ho = NULL;
    subs_add(s, &a, &ha, "apps:created", NULL);
    CHECK_INT(subs_queue_event(s, "apps:created", "{}", 2), 1);
    CHECK_INT(subs_flush(s), 0); /* a still pending */
    subs_on_confirmed(s, "apps:created");
    subs_add(s, &b, &hb, "apps:created", NULL);
    subs_add(s, &other, &ho, "apps:deleted", NULL);
    subs_on_confirmed(s, "apps:deleted");
    CHECK_INT(subs_queue_event(s, "apps:created", "{\"n\":1}", 7), 1);
    CHECK_INT(subs_flush(s), 2);
    CHECK_INT(a.frames, 1);
    CHECK_INT(b.frames, 1);
    CHECK_INT(other.frames, 0);
    CHECK_INT(subs_queue_event(s, "nobody:here", "{}", 2), -1);
    CHECK_INT(subs_flush(s), 0);
    subs_remove_all(s, &ha);
    subs_remove_all(s, &hb);
    subs_remove_all(s, &ho);
    subs_free(s);
}

static void test_a_burst_is_one_shared_batch_per_channel(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0}, b = {0};
    struct sub *ha = NULL, *hb = NULL;
    subs_add(s, &a, &ha, "apps:created", NULL);
    subs_add(s, &b, &hb, "apps:deleted", NULL);
    subs_on_confirmed(s, "apps:created");
    subs_on_confirmed(s, "apps:deleted");
    CHECK_INT(subs_queue_event(s, "apps:created", "{\"n\":1}", 7), 1);
    CHECK_INT(subs_queue_event(s, "apps:created", "{\"n\":2}", 7), 0);
    CHECK_INT(subs_queue_event(s, "apps:deleted", "{\"n\":3}", 7), 0);
    CHECK_INT(subs_queue_event(s, "apps:created", "{\"n\":4}", 7), 0);
    CHECK_INT(subs_flush(s), 4);
    CHECK_INT(a.frames, 3);
    CHECK_INT(a.bytes, 3 * (2 + 7)); /* three complete frames in one buffer */
    CHECK_INT(b.frames, 1);
    CHECK_INT(subs_flush(s), 0);
    /* A channel whose last subscriber leaves with a batch queued drops it. */
    CHECK_INT(subs_queue_event(s, "apps:deleted", "{}", 2), 1);
    bus_up = false;
    subs_on_bus_down(s);
    subs_remove_all(s, &hb); /* idle channel: unlinked with its batch */
    CHECK_INT(subs_flush(s), 0);
    subs_remove_all(s, &ha);
    subs_free(s);
}

static void test_many_channels_survive_table_growth(void) {
    reset();
    struct subs *s = subs_new(NULL);
    struct conn a = {0};
    struct sub *ha = NULL;
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "apps:c%d", i);
        subs_add(s, &a, &ha, name, NULL);
        command_count = 0;
    }
    CHECK_INT(subs_channel_count(s), 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "apps:c%d", i);
        CHECK(subs_find(s, name) != NULL);
    }
    subs_remove_all(s, &ha);
    CHECK_INT(subs_subscription_count(s), 0);
    subs_free(s);
}

int main(void) {
    RUN(test_first_subscriber_waits_for_redis_confirmation);
    RUN(test_second_subscriber_on_active_channel_is_confirmed_at_once);
    RUN(test_resubscribe_waits_for_unsubscribe_reply);
    RUN(test_leaving_before_confirmation_unsubscribes_after_it);
    RUN(test_repeat_subscribe_before_confirmation_is_answered_with_it);
    RUN(test_bus_down_answers_pending_and_up_resubscribes);
    RUN(test_events_reach_only_confirmed_subscribers_of_the_channel);
    RUN(test_a_burst_is_one_shared_batch_per_channel);
    RUN(test_many_channels_survive_table_growth);
    return TEST_SUMMARY();
}
