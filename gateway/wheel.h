/* wheel.h -- a timing wheel of one-second slots: the worker's only timer for
 * connections. Each connection sits in the slot of its next check; the sweep
 * once a second visits one slot, so idle connections cost next to nothing and
 * there is no timer event per connection. Nodes due more than WHEEL_SLOTS
 * seconds ahead stay in their slot across turns until their second comes. */
#ifndef HERALD_WHEEL_H
#define HERALD_WHEEL_H

#include <stdbool.h>
#include <stdint.h>

#define WHEEL_SLOTS 64

struct wheel_node {
    struct wheel_node *next, *prev; /* NULL prev: not scheduled */
    uint64_t at;                    /* whole second it is due */
};

struct wheel {
    struct wheel_node slots[WHEEL_SLOTS]; /* list heads (circular, sentinel) */
    uint64_t now;                         /* the last second advanced to */
};

void wheel_init(struct wheel *w, uint64_t now);

/* (Re)schedules node for second at (at least now + 1). */
void wheel_schedule(struct wheel *w, struct wheel_node *node, uint64_t at);
void wheel_cancel(struct wheel_node *node);
bool wheel_scheduled(const struct wheel_node *node);

/* Advances to second now, calling fn for every node that came due; fn gets the
 * node unscheduled and may reschedule or free it. */
void wheel_advance(struct wheel *w, uint64_t now, void (*fn)(struct wheel_node *node, void *arg),
                   void *arg);

#endif
