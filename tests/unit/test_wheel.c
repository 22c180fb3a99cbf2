/* test_wheel.c -- the timing wheel: due nodes fire once, in their second,
 * far deadlines survive whole turns, cancel and reschedule work. */
#include <stdlib.h>

#include "testlib.h"
#include "wheel.h"

struct item {
    struct wheel_node node; /* first member: the node's address is the item's */
    int fired;
    uint64_t fired_at;
    uint64_t reschedule_to; /* 0: do not */
};

static struct wheel *current_wheel;
static uint64_t current_second;

static void on_due(struct wheel_node *node, void *arg) {
    (void)arg;
    struct item *it = (struct item *)node;
    it->fired++;
    it->fired_at = current_second;
    if (it->reschedule_to) {
        uint64_t to = it->reschedule_to;
        it->reschedule_to = 0;
        wheel_schedule(current_wheel, node, to);
    }
}

static void advance_to(struct wheel *w, uint64_t now) {
    current_wheel = w;
    while (w->now < now) {
        current_second = w->now + 1;
        wheel_advance(w, w->now + 1, on_due, NULL);
    }
}

static void test_node_fires_once_in_its_second(void) {
    struct wheel w;
    wheel_init(&w, 1000);
    struct item a = {0}, b = {0};
    wheel_schedule(&w, &a.node, 1003);
    wheel_schedule(&w, &b.node, 1005);
    advance_to(&w, 1002);
    CHECK_INT(a.fired, 0);
    advance_to(&w, 1003);
    CHECK_INT(a.fired, 1);
    CHECK_INT(a.fired_at, 1003);
    CHECK(!wheel_scheduled(&a.node));
    advance_to(&w, 1010);
    CHECK_INT(a.fired, 1);
    CHECK_INT(b.fired, 1);
    CHECK_INT(b.fired_at, 1005);
}

static void test_far_deadline_survives_full_turns(void) {
    struct wheel w;
    wheel_init(&w, 0);
    struct item a = {0};
    wheel_schedule(&w, &a.node, 3 * WHEEL_SLOTS + 7);
    advance_to(&w, 3 * WHEEL_SLOTS + 6);
    CHECK_INT(a.fired, 0);
    advance_to(&w, 3 * WHEEL_SLOTS + 7);
    CHECK_INT(a.fired, 1);
}

static void test_cancel_and_reschedule(void) {
    struct wheel w;
    wheel_init(&w, 50);
    struct item a = {0}, b = {0};
    wheel_schedule(&w, &a.node, 52);
    wheel_cancel(&a.node);
    wheel_schedule(&w, &b.node, 52);
    wheel_schedule(&w, &b.node, 60); /* moved later */
    advance_to(&w, 55);
    CHECK_INT(a.fired, 0);
    CHECK_INT(b.fired, 0);
    advance_to(&w, 60);
    CHECK_INT(b.fired, 1);
}

static void test_past_deadline_fires_next_second(void) {
    struct wheel w;
    wheel_init(&w, 100);
    struct item a = {0};
    wheel_schedule(&w, &a.node, 90);
    advance_to(&w, 101);
    CHECK_INT(a.fired, 1);
    CHECK_INT(a.fired_at, 101);
}

static void test_callback_may_reschedule_into_the_same_slot(void) {
    struct wheel w;
    wheel_init(&w, 0);
    struct item a = {0};
    a.reschedule_to = 5 + WHEEL_SLOTS; /* same slot, next turn */
    wheel_schedule(&w, &a.node, 5);
    advance_to(&w, 5);
    CHECK_INT(a.fired, 1);
    CHECK(wheel_scheduled(&a.node));
    advance_to(&w, 5 + WHEEL_SLOTS);
    CHECK_INT(a.fired, 2);
}

static void test_long_stall_still_fires_everything_due(void) {
    struct wheel w;
    wheel_init(&w, 0);
    struct item items[200] = {0};
    for (int i = 0; i < 200; i++) wheel_schedule(&w, &items[i].node, (uint64_t)(1 + i));
    current_wheel = &w;
    current_second = 1000;
    wheel_advance(&w, 1000, on_due, NULL); /* one jump far past every deadline */
    for (int i = 0; i < 200; i++) CHECK_INT(items[i].fired, 1);
}

int main(void) {
    RUN(test_node_fires_once_in_its_second);
    RUN(test_far_deadline_survives_full_turns);
    RUN(test_cancel_and_reschedule);
    RUN(test_past_deadline_fires_next_second);
    RUN(test_callback_may_reschedule_into_the_same_slot);
    RUN(test_long_stall_still_fires_everything_due);
    return TEST_SUMMARY();
}
