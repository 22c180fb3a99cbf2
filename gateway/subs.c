/* subs.c -- channel index: a chained hash table (keyed SipHash, seeded per
 * process) of channels, each holding a doubly linked list of subscriptions;
 * each session holds a singly linked list of its own. Fan-out: one batch at a
 * time, of one channel, delivered before anything that could reorder it. */
#include "subs.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "clock.h"
#include "protocol.h"
#include "session.h"

struct subs {
    struct bus *bus;
    struct subs_limits limits;
    struct subs_hooks hooks;
    struct event *flush_event; /* delivers the batch at the end of this loop iteration */
    struct channel *dirty;     /* the one channel with a batch, or NULL */
    double *arrivals;          /* arrival times of the batched events */
    size_t arrival_count, arrival_capacity;
    EVP_MAC_CTX *mac; /* SipHash keyed from OpenSSL's random source */
    struct channel **buckets;
    size_t bucket_count; /* a power of two */
    size_t channel_count;
    size_t subscription_count;
};

/* Channel names are chosen by clients: an unkeyed hash would let them
 * precompute collisions and turn lookups linear. */
static uint64_t hash_name(const struct subs *subs, const char *s, size_t len) {
    uint64_t h = 0;
    size_t out_len = 0;
    if (EVP_MAC_init(subs->mac, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(subs->mac, (const unsigned char *)s, len) != 1 ||
        EVP_MAC_final(subs->mac, (unsigned char *)&h, &out_len, sizeof h) != 1)
        return 0; /* stays correct, only slower */
    return h;
}

static EVP_MAC_CTX *keyed_mac(void) {
    unsigned char key[16];
    size_t out_size = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &out_size),
                           OSSL_PARAM_END};
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);
    if (!ctx || RAND_bytes(key, sizeof key) != 1 ||
        EVP_MAC_init(ctx, key, sizeof key, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    subs_flush(arg);
}

struct subs *subs_new(struct bus *bus, struct event_base *base, const struct subs_limits *limits,
                      const struct subs_hooks *hooks) {
    struct subs *subs = calloc(1, sizeof *subs);
    if (!subs) return NULL;
    subs->bus = bus;
    subs->limits = *limits;
    subs->hooks = *hooks;
    subs->bucket_count = 64;
    subs->buckets = calloc(subs->bucket_count, sizeof *subs->buckets);
    subs->mac = keyed_mac();
    subs->flush_event = event_new(base, -1, 0, flush_cb, subs);
    if (!subs->buckets || !subs->mac || !subs->flush_event) {
        subs_free(subs);
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
    for (size_t i = 0; subs->buckets && i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            channel_free(ch);
        }
    }
    if (subs->flush_event) event_free(subs->flush_event);
    EVP_MAC_CTX_free(subs->mac);
    free(subs->arrivals);
    free(subs->buckets);
    free(subs);
}

static struct channel *find(struct subs *subs, const char *name, size_t len) {
    struct channel *ch = subs->buckets[hash_name(subs, name, len) & (subs->bucket_count - 1)];
    for (; ch; ch = ch->hash_next)
        if (ch->name_len == len && memcmp(ch->name, name, len) == 0) return ch;
    return NULL;
}

struct channel *subs_find(struct subs *subs, const char *name) {
    return find(subs, name, strlen(name));
}

static void grow(struct subs *subs) {
    size_t count = subs->bucket_count * 2;
    struct channel **buckets = calloc(count, sizeof *buckets);
    if (!buckets) return; /* stays correct, only slower */
    for (size_t i = 0; i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            size_t b = hash_name(subs, ch->name, ch->name_len) & (count - 1);
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
    ch->name_len = strlen(name);
    if (subs->channel_count >= subs->bucket_count) grow(subs);
    size_t b = hash_name(subs, name, ch->name_len) & (subs->bucket_count - 1);
    ch->hash_next = subs->buckets[b];
    subs->buckets[b] = ch;
    subs->channel_count++;
    ch->state = bus_subscribe(subs->bus, name) == 0 ? CHANNEL_SUBSCRIBING : CHANNEL_IDLE;
    return ch;
}

static void channel_unlink(struct subs *subs, struct channel *ch) {
    struct channel **p =
        &subs->buckets[hash_name(subs, ch->name, ch->name_len) & (subs->bucket_count - 1)];
    while (*p != ch) p = &(*p)->hash_next;
    *p = ch->hash_next;
    if (subs->dirty == ch) subs->dirty = NULL; /* nobody left to deliver it to */
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

/* The subscription is live: it gets events from now on, and its session
 * answers the requests that waited for it. */
static void go_live(struct sub *s) {
    s->pending = false;
    session_on_subscribed(s->session, s);
}

bool subs_contains(const struct sub *head, const char *name) {
    for (; head; head = head->conn_next)
        if (strcmp(head->channel->name, name) == 0) return true;
    return false;
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
    free(s);
    channel_settle(subs, ch);
}

enum subs_add_result subs_add(struct subs *subs, struct session *session, struct sub **head,
                              const char *name, struct sub **out) {
    for (struct sub *s = *head; s; s = s->conn_next) {
        if (strcmp(s->channel->name, name) != 0) continue;
        *out = s;
        return s->pending ? SUBS_ALREADY_PENDING : SUBS_ALREADY;
    }
    struct channel *ch = subs_find(subs, name);
    if (!ch && subs->channel_count >= subs->limits.max_channels) return SUBS_TOO_MANY_CHANNELS;
    struct sub *s = calloc(1, sizeof *s);
    if (!s) return SUBS_NO_MEMORY;
    subs_flush(subs); /* queued events predate this subscriber */
    if (!ch && !(ch = channel_create(subs, name))) {
        free(s);
        return SUBS_NO_MEMORY;
    }
    s->session = session;
    s->channel = ch;
    s->channel_next = ch->subscribers;
    if (ch->subscribers) ch->subscribers->channel_prev = s;
    ch->subscribers = s;
    ch->count++;
    s->conn_next = *head;
    *head = s;
    subs->subscription_count++;
    *out = s;
    /* SUBSCRIBING: confirmed with the channel. UNSUBSCRIBING: the SUBSCRIBE is
     * sent when the UNSUBSCRIBE comes back, and confirms this one. */
    s->pending = ch->state == CHANNEL_SUBSCRIBING || ch->state == CHANNEL_UNSUBSCRIBING;
    return s->pending ? SUBS_ADDED_PENDING : SUBS_ADDED_CONFIRMED;
}

bool subs_remove(struct subs *subs, struct sub **head, const char *name) {
    for (struct sub **p = head; *p; p = &(*p)->conn_next) {
        if (strcmp((*p)->channel->name, name) != 0) continue;
        struct sub *s = *p;
        *p = s->conn_next;
        if (s->pending) go_live(s); /* answer the subscribe before the unsubscribe */
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
    subs_flush(subs); /* events before the confirmation are not the new subscribers' */
    ch->state = CHANNEL_ACTIVE;
    for (struct sub *s = ch->subscribers; s; s = s->channel_next)
        if (s->pending) go_live(s);
    channel_settle(subs, ch);
}

void subs_on_refused(struct subs *subs, const char *name, const char *reason) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->state != CHANNEL_SUBSCRIBING) return;
    subs_flush(subs);
    /* Every subscriber is told and dropped; nothing is retried for this
     * channel until a client asks again. */
    while (ch->subscribers) {
        struct sub *s = ch->subscribers;
        ch->subscribers = s->channel_next;
        session_on_refused(s->session, s, reason); /* leaves the session's list */
        subs->subscription_count--;
        free(s);
    }
    ch->count = 0;
    channel_unlink(subs, ch);
}

void subs_on_unsubscribed(struct subs *subs, const char *name) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->state != CHANNEL_UNSUBSCRIBING) return;
    ch->state = CHANNEL_IDLE;
    channel_settle(subs, ch);
}

void subs_on_bus_down(struct subs *subs) {
    subs_flush(subs);
    for (size_t i = 0; i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            ch->state = CHANNEL_IDLE;
            for (struct sub *s = ch->subscribers; s; s = s->channel_next)
                if (s->pending) go_live(s);
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

/* ---- fan-out ------------------------------------------------------------- */

static void drop(struct subs *subs, const char *channel, const char *reason, size_t len) {
    if (subs->hooks.dropped) subs->hooks.dropped(subs->hooks.arg, channel, reason, len);
}

/* Writes the event message as one text frame at the end of ch's batch. */
static int frame_event(struct channel *ch, const char *data, size_t len) {
    char timestamp[PROTO_TIMESTAMP_LEN + 1];
    proto_timestamp(timestamp);
    size_t message_len = proto_event_size(ch->name_len, len, 0);
    uint8_t header[WS_MAX_HEADER_LEN];
    size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, message_len);
    uint8_t *p = shared_frame_reserve(&ch->batch, header_len + message_len);
    if (!p) return -1;
    memcpy(p, header, header_len);
    proto_write_event((char *)p + header_len, ch->name, ch->name_len, data, len, NULL, 0,
                      timestamp);
    ch->batch_events++;
    return 0;
}

void subs_publish(struct subs *subs, const char *name, const char *payload, size_t len,
                  double arrived) {
    if (len > subs->limits.max_event_size) {
        drop(subs, name, "too_big", len);
        return;
    }
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->count == 0) return;
    if (proto_payload_check(payload, len, NULL, 0) != 0) {
        drop(subs, name, "bad_json", len);
        return;
    }
    if (subs->arrival_count == subs->arrival_capacity) {
        size_t capacity = subs->arrival_capacity ? subs->arrival_capacity * 2 : 256;
        double *grown = realloc(subs->arrivals, capacity * sizeof *grown);
        if (!grown) {
            drop(subs, name, "no_memory", len);
            return;
        }
        subs->arrivals = grown;
        subs->arrival_capacity = capacity;
    }
    if (subs->dirty && subs->dirty != ch) subs_flush(subs); /* runs of one channel only */
    if (frame_event(ch, payload, len) != 0) {
        drop(subs, name, "no_memory", len);
        return;
    }
    subs->arrivals[subs->arrival_count++] = arrived;
    if (!subs->dirty) {
        subs->dirty = ch;
        event_active(subs->flush_event, EV_TIMEOUT, 0);
    }
}

size_t subs_flush(struct subs *subs) {
    size_t deliveries = 0;
    struct channel *ch = subs->dirty;
    if (ch) {
        subs->dirty = NULL;
        struct shared_frame *batch = ch->batch;
        unsigned events = ch->batch_events;
        ch->batch = NULL;
        ch->batch_events = 0;
        for (struct sub *s = ch->subscribers; s; s = s->channel_next)
            if (!s->pending && session_deliver(s->session, batch, events) == 0)
                deliveries += events;
        shared_frame_release(batch);
    }
    if (subs->arrival_count && subs->hooks.latency) {
        double now = clock_now();
        for (size_t i = 0; i < subs->arrival_count; i++)
            subs->hooks.latency(subs->hooks.arg, now - subs->arrivals[i]);
    }
    subs->arrival_count = 0;
    if (deliveries && subs->hooks.delivered) subs->hooks.delivered(subs->hooks.arg, deliveries);
    return deliveries;
}

size_t subs_channel_count(const struct subs *subs) {
    return subs->channel_count;
}

size_t subs_subscription_count(const struct subs *subs) {
    return subs->subscription_count;
}
