/* subs.c -- channel index: a chained hash table of channels, each holding a
 * doubly linked list of subscriptions; each connection holds a singly linked
 * list of its own. */
#include "subs.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "conn.h"

struct subs {
    struct bus *bus;
    struct channel *dirty; /* channels with a batch to flush */
    struct channel **buckets;
    size_t bucket_count; /* a power of two */
    size_t channel_count;
    size_t subscription_count;
};

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

struct subs *subs_new(struct bus *bus) {
    struct subs *subs = calloc(1, sizeof *subs);
    if (!subs) return NULL;
    subs->bus = bus;
    subs->bucket_count = 64;
    subs->buckets = calloc(subs->bucket_count, sizeof *subs->buckets);
    if (!subs->buckets) {
        free(subs);
        return NULL;
    }
    return subs;
}

static void channel_free(struct channel *ch) {
    shared_frame_release(ch->batch);
    free(ch->name);
    free(ch);
}

void subs_free(struct subs *subs) {
    if (!subs) return;
    for (size_t i = 0; i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            channel_free(ch);
        }
    }
    free(subs->buckets);
    free(subs);
}

struct channel *subs_find(struct subs *subs, const char *name) {
    struct channel *ch = subs->buckets[hash_name(name) & (subs->bucket_count - 1)];
    for (; ch; ch = ch->hash_next)
        if (strcmp(ch->name, name) == 0) return ch;
    return NULL;
}

static void grow(struct subs *subs) {
    size_t count = subs->bucket_count * 2;
    struct channel **buckets = calloc(count, sizeof *buckets);
    if (!buckets) return; /* stays correct, only slower */
    for (size_t i = 0; i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            size_t b = hash_name(ch->name) & (count - 1);
            ch->hash_next = buckets[b];
            buckets[b] = ch;
        }
    }
    free(subs->buckets);
    subs->buckets = buckets;
    subs->bucket_count = count;
}

static struct channel *channel_create(struct subs *subs, const char *name) {
    struct channel *ch = calloc(1, sizeof *ch);
    if (!ch || !(ch->name = strdup(name))) {
        free(ch);
        return NULL;
    }
    if (subs->channel_count >= subs->bucket_count) grow(subs);
    size_t b = hash_name(name) & (subs->bucket_count - 1);
    ch->hash_next = subs->buckets[b];
    subs->buckets[b] = ch;
    subs->channel_count++;
    ch->state = bus_subscribe(subs->bus, name) == 0 ? CHANNEL_SUBSCRIBING : CHANNEL_IDLE;
    return ch;
}

static void channel_unlink(struct subs *subs, struct channel *ch) {
    struct channel **p = &subs->buckets[hash_name(ch->name) & (subs->bucket_count - 1)];
    while (*p != ch) p = &(*p)->hash_next;
    *p = ch->hash_next;
    if (ch->batch) { /* nobody left to deliver it to */
        for (p = &subs->dirty; *p != ch; p = &(*p)->dirty_next) {
        }
        *p = ch->dirty_next;
    }
    subs->channel_count--;
    channel_free(ch);
}

/* Called when a channel's last subscriber left or a command came back: decides
 * the next Redis command, keeping at most one in flight. */
static void channel_settle(struct subs *subs, struct channel *ch) {
    if (ch->count > 0) {
        if (ch->state == CHANNEL_IDLE && bus_subscribe(subs->bus, ch->name) == 0)
            ch->state = CHANNEL_SUBSCRIBING;
        return;
    }
    switch (ch->state) {
        case CHANNEL_IDLE: channel_unlink(subs, ch); break;
        case CHANNEL_ACTIVE:
            if (bus_unsubscribe(subs->bus, ch->name) == 0)
                ch->state = CHANNEL_UNSUBSCRIBING;
            else
                channel_unlink(subs, ch);
            break;
        case CHANNEL_SUBSCRIBING:
        case CHANNEL_UNSUBSCRIBING: break; /* wait for the reply */
    }
}

static void unlink_sub(struct subs *subs, struct sub *s);

/* Sends every "subscribed" reply the subscription owes. */
static void send_confirmation(struct sub *s) {
    json_t *ids = s->pending_ids;
    s->pending_ids = NULL;
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id) {
        conn_reply_subscribed(s->conn, s->channel->name, json_is_null(id) ? NULL : id);
    }
    json_decref(ids);
}

/* Records one more reply owed; false when out of memory. */
static bool owe_reply(struct sub *s, const json_t *id) {
    if (!s->pending_ids && !(s->pending_ids = json_array())) return false;
    return json_array_append_new(s->pending_ids, id ? json_deep_copy(id) : json_null()) == 0;
}

bool subs_contains(const struct sub *head, const char *name) {
    for (; head; head = head->conn_next)
        if (strcmp(head->channel->name, name) == 0) return true;
    return false;
}

enum subs_add_result subs_add(struct subs *subs, struct conn *conn, struct sub **head,
                              const char *name, const json_t *id) {
    for (struct sub *s = *head; s; s = s->conn_next) {
        if (strcmp(s->channel->name, name) != 0) continue;
        if (!s->pending_ids) return SUBS_ALREADY;
        return owe_reply(s, id) ? SUBS_ALREADY_PENDING : SUBS_NO_MEMORY;
    }

    struct sub *s = calloc(1, sizeof *s);
    if (!s) return SUBS_NO_MEMORY;
    struct channel *ch = subs_find(subs, name);
    if (!ch && !(ch = channel_create(subs, name))) {
        free(s);
        return SUBS_NO_MEMORY;
    }
    s->conn = conn;
    s->channel = ch;
    s->channel_next = ch->subscribers;
    if (ch->subscribers) ch->subscribers->channel_prev = s;
    ch->subscribers = s;
    ch->count++;
    s->conn_next = *head;
    *head = s;
    subs->subscription_count++;

    if (ch->state == CHANNEL_ACTIVE || ch->state == CHANNEL_IDLE) return SUBS_ADDED_CONFIRMED;
    /* SUBSCRIBING: confirmed with the channel. UNSUBSCRIBING: the SUBSCRIBE is
     * sent when the UNSUBSCRIBE comes back, and confirms this one. */
    if (!owe_reply(s, id)) {
        struct sub **p = head;
        while (*p != s) p = &(*p)->conn_next;
        *p = s->conn_next;
        unlink_sub(subs, s);
        return SUBS_NO_MEMORY;
    }
    return SUBS_ADDED_PENDING;
}

static void unlink_sub(struct subs *subs, struct sub *s) {
    struct channel *ch = s->channel;
    if (s->channel_prev)
        s->channel_prev->channel_next = s->channel_next;
    else
        ch->subscribers = s->channel_next;
    if (s->channel_next) s->channel_next->channel_prev = s->channel_prev;
    ch->count--;
    subs->subscription_count--;
    json_decref(s->pending_ids);
    free(s);
    channel_settle(subs, ch);
}

bool subs_remove(struct subs *subs, struct sub **head, const char *name) {
    for (struct sub **p = head; *p; p = &(*p)->conn_next) {
        if (strcmp((*p)->channel->name, name) != 0) continue;
        struct sub *s = *p;
        *p = s->conn_next;
        if (s->pending_ids) send_confirmation(s); /* answer the subscribe before the unsubscribe */
        unlink_sub(subs, s);
        return true;
    }
    return false;
}

void subs_remove_all(struct subs *subs, struct sub **head) {
    while (*head) {
        struct sub *s = *head;
        *head = s->conn_next;
        unlink_sub(subs, s);
    }
}

void subs_on_confirmed(struct subs *subs, const char *name) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->state != CHANNEL_SUBSCRIBING) return;
    ch->state = CHANNEL_ACTIVE;
    for (struct sub *s = ch->subscribers; s; s = s->channel_next)
        if (s->pending_ids) send_confirmation(s);
    channel_settle(subs, ch);
}

void subs_on_unsubscribed(struct subs *subs, const char *name) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->state != CHANNEL_UNSUBSCRIBING) return;
    ch->state = CHANNEL_IDLE;
    channel_settle(subs, ch);
}

void subs_on_bus_down(struct subs *subs) {
    for (size_t i = 0; i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            ch->state = CHANNEL_IDLE;
            for (struct sub *s = ch->subscribers; s; s = s->channel_next)
                if (s->pending_ids) send_confirmation(s);
            if (ch->count == 0) channel_unlink(subs, ch);
        }
    }
}

size_t subs_on_bus_up(struct subs *subs) {
    size_t sent = 0;
    for (size_t i = 0; i < subs->bucket_count; i++) {
        for (struct channel *ch = subs->buckets[i]; ch; ch = ch->hash_next) {
            if (ch->state == CHANNEL_IDLE && ch->count > 0 &&
                bus_subscribe(subs->bus, ch->name) == 0) {
                ch->state = CHANNEL_SUBSCRIBING;
                sent++;
            }
        }
    }
    return sent;
}

int subs_queue_event(struct subs *subs, const char *name, const char *text, size_t len) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->count == 0) return SUBS_QUEUE_NO_SUBSCRIBERS;
    if (ch->batch) {
        if (shared_frame_add_text(&ch->batch, text, len) != 0) return SUBS_QUEUE_NO_MEMORY;
        ch->batch_events++;
        return 0;
    }
    if (!(ch->batch = shared_frame_text(text, len))) return SUBS_QUEUE_NO_MEMORY;
    ch->batch_events = 1;
    bool first = subs->dirty == NULL;
    ch->dirty_next = subs->dirty;
    subs->dirty = ch;
    return first ? 1 : 0;
}

bool subs_batch_is_for(const struct subs *subs, const char *name) {
    return subs->dirty && !subs->dirty->dirty_next && strcmp(subs->dirty->name, name) == 0;
}

size_t subs_flush(struct subs *subs) {
    size_t deliveries = 0;
    while (subs->dirty) {
        struct channel *ch = subs->dirty;
        subs->dirty = ch->dirty_next;
        struct shared_frame *batch = ch->batch;
        ch->batch = NULL;
        for (struct sub *s = ch->subscribers; s; s = s->channel_next) {
            if (!s->pending_ids && conn_send_frame(s->conn, batch, ch->batch_events) == 0)
                deliveries += ch->batch_events;
        }
        shared_frame_release(batch);
    }
    return deliveries;
}

size_t subs_channel_count(const struct subs *subs) {
    return subs->channel_count;
}

size_t subs_subscription_count(const struct subs *subs) {
    return subs->subscription_count;
}
