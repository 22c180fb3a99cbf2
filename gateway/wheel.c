/* wheel.c -- the timing wheel. */
#include "wheel.h"

#include <stddef.h>

void wheel_init(struct wheel *w, uint64_t now) {
    for (int i = 0; i < WHEEL_SLOTS; i++) w->slots[i].next = w->slots[i].prev = &w->slots[i];
    w->now = now;
}

bool wheel_scheduled(const struct wheel_node *node) {
    return node->prev != NULL;
}

void wheel_cancel(struct wheel_node *node) {
    if (!node->prev) return;
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node->prev = NULL;
}

static void insert(struct wheel_node *head, struct wheel_node *node) {
    node->next = head;
    node->prev = head->prev;
    head->prev->next = node;
    head->prev = node;
}

void wheel_schedule(struct wheel *w, struct wheel_node *node, uint64_t at) {
    wheel_cancel(node);
    if (at <= w->now) at = w->now + 1;
    node->at = at;
    insert(&w->slots[at % WHEEL_SLOTS], node);
}

void wheel_advance(struct wheel *w, uint64_t now, void (*fn)(struct wheel_node *node, void *arg),
                   void *arg) {
    /* After a long stall one full turn visits every slot once. */
    if (now > w->now + WHEEL_SLOTS) w->now = now - WHEEL_SLOTS;
    while (w->now < now) {
        uint64_t second = ++w->now;
        struct wheel_node *head = &w->slots[second % WHEEL_SLOTS], pending;
        if (head->next == head) continue;
        /* Detach the slot so that fn's rescheduling cannot loop here. */
        pending.next = head->next;
        pending.prev = head->prev;
        pending.next->prev = &pending;
        pending.prev->next = &pending;
        head->next = head->prev = head;
        while (pending.next != &pending) {
            struct wheel_node *node = pending.next;
            node->prev->next = node->next;
            node->next->prev = node->prev;
            node->next = node->prev = NULL;
            if (node->at <= second)
                fn(node, arg);
            else
                insert(head, node); /* a later turn */
        }
    }
}
