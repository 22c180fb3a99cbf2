/* subs.c -- channel index: a chained hash table (keyed SipHash, seeded per
 * process) of channels, each holding a doubly linked list of subscriptions;
 * each session holds a singly linked list of its own. Fan-out: one batch at a
 * time, of one channel, delivered before anything that could reorder it. */
#include "subs.h"

#include <event2/buffer.h>
#include <hiredis/hiredis.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "clock.h"
#include "log.h"
#include "protocol.h"
#include "session.h"
#include "sse_codec.h"
#include "ws_codec.h"

/* A subscription waiting for its channel's history. */
struct waiter {
    struct waiter *next;
    struct sub *sub;
    char since[HISTORY_OFFSET_MAX + 1]; /* "": from the beginning of the history */
    char epoch[HISTORY_EPOCH_MAX + 1];  /* "": none known */
    bool recover;      /* wants the missed events (subscribe with since, or an outage) */
    bool asked;        /* the client asked: its reply says "recovered" */
    bool in_read;      /* covered by the read in flight */
    bool after_absent; /* the channel had no history when last read, and this
                          subscription missed nothing before: any epoch's
                          history is newer, and recovers from its first entry */
};

/* A live event of a channel that has waiters: its frame, kept until the
 * waiters are answered. */
struct buffered {
    struct buffered *next;
    char offset[HISTORY_OFFSET_MAX + 1]; /* "" for an event without history */
    size_t len;
    uint8_t frame[];
};

/* One read in flight; outlives its channel or index (then orphaned). */
struct history_read {
    struct subs *subs; /* NULL once orphaned */
    struct channel *channel;
    struct history_read *next; /* the index's reads in flight */
    struct event *local;       /* answered from the channel's recent window, not Redis */
};

struct subs {
    struct bus *bus;
    struct subs_limits limits;
    struct subs_hooks hooks;
    struct subs_counters counters;
    struct history_read *reads; /* in flight */
    struct event *flush_event;  /* delivers the batch at the end of this loop iteration */
    struct event_base *base;
    struct channel *dirty; /* the one channel with a batch, or NULL */
    double *arrivals;      /* arrival times of the batched events */
    size_t arrival_count, arrival_capacity;
    EVP_MAC_CTX *mac; /* SipHash keyed from OpenSSL's random source */
    struct channel **buckets;
    size_t bucket_count; /* a power of two */
    size_t channel_count;
    size_t subscription_count;
    bool same_redis; /* the last outage ended on the Redis process it began on */
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
    subs->base = base;
    if (!subs->buckets || !subs->mac || !subs->flush_event) {
        subs_free(subs);
        return NULL;
    }
    return subs;
}

static void recent_drop(struct channel *ch);

static void buffer_clear(struct channel *ch) {
    recent_drop(ch); /* the window is the read plus this buffer: it goes with it */
    while (ch->buffered) {
        struct buffered *b = ch->buffered;
        ch->buffered = b->next;
        free(b);
    }
    ch->buffered_tail = &ch->buffered;
    ch->buffered_count = 0;
    ch->buffer_overflow = false;
}

static void waiters_free(struct channel *ch) {
    while (ch->waiters) {
        struct waiter *wt = ch->waiters;
        ch->waiters = wt->next;
        wt->sub->waiter = NULL;
        free(wt);
    }
}

static void channel_free(struct channel *ch) {
    if (ch->read) ch->read->channel = NULL; /* its reply finds nobody */
    waiters_free(ch);
    buffer_clear(ch);
    shared_frame_release(ch->batch);
    shared_frame_release(ch->sse.data);
    free(ch->sse.events);
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
    while (subs->reads) { /* Redis replies find them orphaned; local ones go now */
        struct history_read *r = subs->reads;
        subs->reads = r->next;
        r->subs = NULL;
        if (r->local) {
            event_free(r->local);
            free(r);
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
    ch->buffered_tail = &ch->buffered;
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

/* ---- going live ------------------------------------------------------------- */

void subs_position(const struct sub *sub, struct subs_ready *out) {
    const struct channel *ch = sub->channel;
    out->offset = ch->offset[0] ? ch->offset : NULL;
    out->epoch = ch->epoch[0] ? ch->epoch : NULL;
    out->recovered = -1;
    out->after = NULL;
}

/* s skips the live events up to offset (its channel's position as it goes
 * live): a read may have returned events whose live copies are still on
 * their way over the subscriber connection. */
static void skip_set(struct channel *ch, struct sub *s, const char *offset) {
    if (!offset || !offset[0]) return;
    if (!s->skip_until[0]) ch->skippers++;
    snprintf(s->skip_until, sizeof s->skip_until, "%s", offset);
}

static void skip_clear(struct channel *ch, struct sub *s) {
    if (!s->skip_until[0]) return;
    s->skip_until[0] = '\0';
    ch->skippers--;
}

/* The subscription is live: it gets events from now on, and its session
 * answers the requests that waited for it (ready may be NULL: the channel's
 * position, nothing recovered). */
static void go_live(struct sub *s, struct subs_ready *ready) {
    struct subs_ready plain;
    if (!ready) {
        subs_position(s, &plain);
        ready = &plain;
    }
    s->pending = false;
    skip_set(s->channel, s, ready->offset);
    session_on_subscribed(s->session, s, ready);
}

static void waiter_unlink(struct channel *ch, struct waiter *wt) {
    struct waiter **p = &ch->waiters;
    while (*p != wt) p = &(*p)->next;
    *p = wt->next;
    wt->sub->waiter = NULL;
    free(wt);
}

/* Makes s wait for a read of its channel's history. */
static bool add_waiter(struct sub *s, const struct subs_since *since, bool asked) {
    struct waiter *wt = calloc(1, sizeof *wt);
    if (!wt) return false;
    wt->sub = s;
    wt->asked = asked;
    if (since) {
        wt->recover = true;
        snprintf(wt->since, sizeof wt->since, "%s", since->offset ? since->offset : "");
        snprintf(wt->epoch, sizeof wt->epoch, "%s", since->epoch ? since->epoch : "");
    }
    wt->next = s->channel->waiters;
    s->channel->waiters = wt;
    s->waiter = wt;
    s->pending = true;
    return true;
}

/* ---- history reads ----------------------------------------------------------- */

static void start_read(struct subs *subs, struct channel *ch, bool may_be_local);

/* True when the read in flight also answers a waiter asking since: the read
 * starts at or before it, and the live events kept since the read was sent
 * cover the rest. */
static bool read_covers(const struct channel *ch, const struct waiter *wt) {
    if (!ch->read) return false;
    if (!wt->recover) return true;
    if (ch->read_since[0] == '\0') return false; /* position only */
    if (strcmp(ch->read_since, "-") == 0) return true;
    return wt->since[0] && history_offset_compare(wt->since, ch->read_since) >= 0;
}

/* A waiter joins: the read in flight takes it, or the next read does. */
static void want_read(struct subs *subs, struct channel *ch, struct waiter *wt) {
    if (ch->state != CHANNEL_ACTIVE) return; /* read once Redis confirmed the SUBSCRIBE */
    if (read_covers(ch, wt)) {
        wt->in_read = true;
        return;
    }
    if (!ch->read) start_read(subs, ch, true);
}

/* The events of a frame kept while a read was in flight, that come after
 * offset (all of them when offset is ""; those without an offset always). */
static int append_buffered(const struct channel *ch, const char *after, struct evbuffer *out) {
    for (const struct buffered *b = ch->buffered; b; b = b->next) {
        if (after[0] && b->offset[0] && history_offset_compare(b->offset, after) <= 0) continue;
        if (evbuffer_add(out, b->frame, b->len) != 0) return -1;
    }
    return 0;
}

static int append_gap(const char *channel, struct evbuffer *out) {
    size_t len = 0;
    char *text = proto_build_gap(&channel, 1, &len);
    uint8_t header[WS_MAX_HEADER_LEN];
    int rc = -1;
    if (text) {
        size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, len);
        rc = evbuffer_add(out, header, header_len) == 0 && evbuffer_add(out, text, len) == 0 ? 0
                                                                                             : -1;
    }
    free(text);
    return rc;
}

/* Writes ch's event message for data (offset "" for none) as one text frame
 * at the end of *frame; returns where it starts, or -1 when out of memory. */
static long write_event_frame(struct shared_frame **frame, const struct channel *ch,
                              const char *data, size_t len, const struct proto_position *pos,
                              const char timestamp[PROTO_TIMESTAMP_LEN]) {
    size_t message_len = proto_event_size(ch->name_len, len, pos);
    uint8_t header[WS_MAX_HEADER_LEN];
    size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, message_len);
    uint8_t *p = shared_frame_reserve(frame, header_len + message_len);
    if (!p) return -1;
    memcpy(p, header, header_len);
    proto_write_event((char *)p + header_len, ch->name, ch->name_len, data, len, pos, timestamp);
    return (long)(p - (*frame)->data);
}

/* History entries of one read, framed once as event messages. */
struct entries {
    struct shared_frame *frame; /* every entry's event frame, in order */
    size_t count;
    const char **ids; /* borrowed from the reply */
    size_t *starts;   /* where each entry's frame starts; starts[count] = frame->len */
};

static void release_range(const void *data, size_t len, void *arg) {
    (void)data, (void)len;
    shared_frame_release(arg);
}

static int append_entries(const struct entries *e, size_t from, struct evbuffer *out) {
    if (from >= e->count) return 0;
    size_t start = e->starts[from], len = e->starts[e->count] - start;
    e->frame->refs++;
    if (evbuffer_add_reference(out, e->frame->data + start, len, release_range, e->frame) != 0) {
        e->frame->refs--;
        return -1;
    }
    return 0;
}

/* Frames the entries ([id, [field, value, ...]] from XRANGE) of a read. */
static int frame_entries(struct channel *ch, const redisReply *list, const char *epoch,
                         size_t limit, struct entries *e) {
    memset(e, 0, sizeof *e);
    size_t n = list && list->type == REDIS_REPLY_ARRAY ? list->elements : 0;
    if (n > limit + 2) n = limit + 2;
    e->ids = calloc(n + 1, sizeof *e->ids);
    e->starts = calloc(n + 1, sizeof *e->starts);
    if (!e->ids || !e->starts) return -1;
    char timestamp[PROTO_TIMESTAMP_LEN + 1];
    proto_timestamp(timestamp);
    for (size_t i = 0; i < n; i++) {
        const redisReply *entry = list->element[i];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
            entry->element[0]->type != REDIS_REPLY_STRING ||
            entry->element[1]->type != REDIS_REPLY_ARRAY)
            return -1;
        const char *id = entry->element[0]->str;
        const redisReply *fields = entry->element[1];
        const char *data = NULL;
        size_t data_len = 0;
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            const redisReply *k = fields->element[f], *v = fields->element[f + 1];
            if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
                strcmp(k->str, "d") == 0) {
                data = v->str;
                data_len = v->len;
            }
        }
        size_t used = e->frame ? e->frame->len : 0;
        e->ids[e->count] = id;
        e->starts[e->count] = used;
        struct proto_position pos = {id, epoch};
        if (data && proto_payload_check(data, data_len, NULL, 0) == 0 &&
            write_event_frame(&e->frame, ch, data, data_len, &pos, timestamp) < 0)
            return -1;
        e->count++; /* an entry that is not an event still holds its place */
    }
    e->starts[e->count] = e->frame ? e->frame->len : 0;
    return 0;
}

static void entries_free(struct entries *e) {
    shared_frame_release(e->frame);
    free(e->ids);
    free(e->starts);
}

/* A read's entries kept after the read (ids copied: the reply is gone). */
#define RECENT_SECONDS 5.0

struct recent {
    struct entries e;
    char *ids_text; /* the ids, NUL-separated (e.ids point into it) */
    char epoch[HISTORY_EPOCH_MAX + 1];
    char first[HISTORY_OFFSET_MAX + 1]; /* "" when the epoch has no first entry */
    char newest[HISTORY_OFFSET_MAX + 1];
    char since[HISTORY_OFFSET_MAX + 1]; /* what the read asked from */
    bool complete_read;
    double until; /* monotonic seconds */
};

static void recent_drop(struct channel *ch) {
    struct recent *r = ch->recent;
    if (!r) return;
    ch->recent = NULL;
    entries_free(&r->e);
    free(r->ids_text);
    free(r);
}

/* Keeps a successful read's entries (taking over e's frame) as ch's window. */
static void recent_keep(struct channel *ch, struct entries *e, const char *epoch, const char *first,
                        const char *newest, bool complete_read) {
    recent_drop(ch);
    struct recent *r = calloc(1, sizeof *r);
    size_t bytes = 0;
    for (size_t i = 0; i < e->count; i++) bytes += strlen(e->ids[i]) + 1;
    char *text = r ? malloc(bytes + 1) : NULL;
    if (!r || !text) {
        free(r);
        free(text);
        return;
    }
    char *p = text;
    for (size_t i = 0; i < e->count; i++) {
        size_t n = strlen(e->ids[i]) + 1;
        memcpy(p, e->ids[i], n);
        e->ids[i] = p;
        p += n;
    }
    r->e = *e;
    memset(e, 0, sizeof *e); /* r owns the frame, ids and starts now */
    r->ids_text = text;
    snprintf(r->epoch, sizeof r->epoch, "%s", epoch);
    snprintf(r->first, sizeof r->first, "%s", first ? first : "");
    snprintf(r->newest, sizeof r->newest, "%s", newest ? newest : "");
    r->complete_read = complete_read;
    snprintf(r->since, sizeof r->since, "%s", ch->read_since);
    r->until = clock_now() + RECENT_SECONDS;
    ch->recent = r;
}

/* ch's window when it is still good. */
static struct recent *recent_alive(struct channel *ch) {
    if (ch->recent && (clock_now() > ch->recent->until || ch->buffer_overflow ||
                       strcmp(ch->recent->epoch, ch->epoch) != 0))
        recent_drop(ch);
    return ch->recent;
}

static const char *reply_string(const redisReply *r) {
    return r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
}

/* True when the live events kept since the read hold offset. */
static bool buffered_holds(const struct channel *ch, const char *offset) {
    for (const struct buffered *b = ch->buffered; b; b = b->next)
        if (strcmp(b->offset, offset) == 0) return true;
    return false;
}

/* Answers one waiter from a read's result; false when it must wait for the
 * next read (its offset lies beyond what this one returned). */
static bool answer_waiter(struct subs *subs, struct channel *ch, struct waiter *wt,
                          const char *epoch, const char *first, const char *newest,
                          const struct entries *e, bool complete_read, bool failed) {
    struct subs_ready ready;
    subs_position(wt->sub, &ready);
    ready.recovered = wt->asked ? 0 : -1;
    bool recovered = false, gap = wt->recover || ch->buffer_overflow;
    size_t from = 0;                                     /* the first missed entry */
    const char *seam = ready.offset ? ready.offset : ""; /* live events after this */
    if (wt->recover && !failed && epoch && (strcmp(epoch, wt->epoch) == 0 || wt->after_absent)) {
        if (wt->since[0]) {
            size_t i = 0;
            while (i < e->count && strcmp(e->ids[i], wt->since) != 0) i++;
            if (i == e->count && !complete_read && e->count &&
                history_offset_compare(wt->since, e->ids[e->count - 1]) > 0)
                return false;
            if (i < e->count) {
                from = i + 1;
                recovered = true;
            } else if (buffered_holds(ch, wt->since)) { /* after the read: live events only */
                from = e->count;
                recovered = true;
            }
        } else {
            recovered = !first || (e->count && strcmp(e->ids[0], first) == 0);
        }
        if (recovered && e->count - from > subs->limits.recovery_limit) recovered = false;
        /* A read cut at its count ends before the newest entry: what lies
         * between may have gone by live before this waiter came; the next
         * read, from its own offset, answers it. */
        if (recovered && !complete_read && newest && e->count &&
            strcmp(e->ids[e->count - 1], newest) != 0)
            return false;
        if (ch->buffer_overflow) recovered = false;
    }
    if (recovered) {
        gap = false;
        ready.recovered = wt->asked ? 1 : -1;
        seam = e->count > from ? e->ids[e->count - 1] : wt->since;
        subs->counters.recoveries++;
        subs->counters.events_recovered += e->count - from;
    } else if (wt->recover) {
        subs->counters.recoveries_failed++;
        log_debug("event=recovery_failed channel=%s read_failed=%d epoch=%s known_epoch=%s "
                  "since=%s first=%s entries=%zu from_first_entry=%d",
                  log_q(ch->name), failed, log_q(epoch ? epoch : ""), log_q(wt->epoch),
                  log_q(wt->since), log_q(first ? first : ""), e->count, wt->after_absent);
    }
    ready.after = evbuffer_new();
    if (ready.after) {
        int rc = 0;
        if (gap) rc = append_gap(ch->name, ready.after);
        if (recovered && rc == 0) rc = append_entries(e, from, ready.after);
        if (rc == 0 && !ch->buffer_overflow) rc = append_buffered(ch, seam, ready.after);
        if (rc != 0) {
            evbuffer_free(ready.after);
            ready.after = NULL;
        }
    }
    subs->counters.waiters_served++;
    struct sub *s = wt->sub;
    waiter_unlink(ch, wt);
    go_live(s, &ready);
    if (ready.after) evbuffer_free(ready.after); /* NULL when the session took it */
    return true;
}

/* True when the window can answer wt as Redis would: a position, another
 * epoch (not recoverable either way), or an offset the window holds (among
 * the read's entries or the live events since), or from the beginning when
 * the read was. */
static bool recent_covers(const struct channel *ch, const struct recent *r,
                          const struct waiter *wt) {
    if (!wt->recover || strcmp(wt->epoch, r->epoch) != 0) return true;
    if (!wt->since[0]) return strcmp(r->since, "-") == 0;
    for (size_t i = 0; i < r->e.count; i++)
        if (strcmp(r->e.ids[i], wt->since) == 0) return true;
    return buffered_holds(ch, wt->since);
}

/* Answers the waiters of a local read from ch's recent window. */
static void answer_from_recent(struct subs *subs, struct channel *ch) {
    struct recent *r = recent_alive(ch);
    for (struct waiter *wt = ch->waiters, *next; wt; wt = next) {
        next = wt->next;
        if (!wt->in_read) continue;
        if (r && recent_covers(ch, r, wt) &&
            answer_waiter(subs, ch, wt, r->epoch, r->first[0] ? r->first : NULL,
                          r->newest[0] ? r->newest : NULL, &r->e, r->complete_read, false))
            subs->counters.window_answers++;
        else
            wt->in_read = false;
    }
    if (ch->waiters) start_read(subs, ch, false); /* what the window lacks: from Redis */
}

static void read_done(redisAsyncContext *ac, void *r, void *privdata) {
    (void)ac;
    struct history_read *read = privdata;
    struct subs *subs = read->subs;
    struct channel *ch = read->channel;
    bool local = read->local != NULL;
    if (subs) {
        struct history_read **p = &subs->reads;
        while (*p != read) p = &(*p)->next;
        *p = read->next;
    }
    if (read->local) event_free(read->local);
    free(read);
    if (!subs || !ch) return;
    ch->read = NULL;
    subs_flush(subs); /* batched events precede the waiters going live */
    if (local) {
        answer_from_recent(subs, ch);
        return;
    }

    const redisReply *reply = r;
    bool failed = !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("event=history_read_failed channel=%s error=%s", log_q(ch->name),
                 log_q(reply->str));
    const char *epoch = failed ? NULL : reply_string(reply->element[0]);
    const char *first = failed ? NULL : reply_string(reply->element[1]);
    const char *newest = failed ? NULL : reply_string(reply->element[2]);
    struct entries e;
    if (!failed && frame_entries(ch, reply->element[3], epoch ? epoch : "",
                                 subs->limits.recovery_limit, &e) != 0) {
        entries_free(&e);
        failed = true;
    }
    if (failed) memset(&e, 0, sizeof e);
    if (!failed) {
        snprintf(ch->epoch, sizeof ch->epoch, "%s", epoch ? epoch : "");
        ch->history_absent = !epoch;
        if (newest && (!ch->offset[0] || history_offset_compare(newest, ch->offset) > 0))
            snprintf(ch->offset, sizeof ch->offset, "%s", newest);
        if (!epoch) ch->offset[0] = '\0';
        ch->positioned = true;
    }
    bool complete_read = failed || e.count < subs->limits.recovery_limit + 2;
    for (struct waiter *wt = ch->waiters, *next; wt; wt = next) {
        next = wt->next;
        if (wt->in_read &&
            !answer_waiter(subs, ch, wt, epoch, first, newest, &e, complete_read, failed))
            wt->in_read = false;
    }
    if (!failed && epoch && !ch->buffer_overflow)
        recent_keep(ch, &e, epoch, first, newest, complete_read);
    entries_free(&e);
    if (ch->waiters)
        start_read(subs, ch, false);
    else if (!ch->recent)
        buffer_clear(ch);
}

static void local_read_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    read_done(NULL, NULL, arg);
}

static void local_read_cb(evutil_socket_t fd, short what, void *arg);

/* Sends the read script for ch's waiters; or, when may_be_local and the
 * channel's recent window is still good, answers them from it at the end of
 * this loop iteration (never inside the caller: a subscribe is answered
 * after subs_add returned). */
static void start_read(struct subs *subs, struct channel *ch, bool may_be_local) {
    if (may_be_local && recent_alive(ch)) {
        struct history_read *read = calloc(1, sizeof *read);
        if (read && (read->local = event_new(subs->base, -1, 0, local_read_cb, read))) {
            read->subs = subs;
            read->channel = ch;
            read->next = subs->reads;
            subs->reads = read;
            ch->read = read;
            snprintf(ch->read_since, sizeof ch->read_since, "%s", ch->recent->since);
            for (struct waiter *wt = ch->waiters; wt; wt = wt->next) wt->in_read = true;
            event_active(read->local, EV_TIMEOUT, 0);
            return;
        }
        free(read);
    }
    /* From the oldest offset any waiter asks for; position only when none does. */
    const char *since = "";
    bool from_start = false;
    for (struct waiter *wt = ch->waiters; wt; wt = wt->next) {
        if (!wt->recover) continue;
        if (!wt->since[0])
            from_start = true;
        else if (!since[0] || history_offset_compare(wt->since, since) < 0)
            since = wt->since;
    }
    if (from_start) since = "-";
    char redis_channel[256], stream[300], meta[300], count[24];
    snprintf(redis_channel, sizeof redis_channel, "%s%s", subs->limits.prefix, ch->name);
    snprintf(count, sizeof count, "%zu", subs->limits.recovery_limit + 2);
    struct history_read *read = calloc(1, sizeof *read);
    if (!read ||
        history_stream_key(redis_channel, strlen(redis_channel), stream, sizeof stream) < 0 ||
        history_meta_key(redis_channel, strlen(redis_channel), meta, sizeof meta) < 0) {
        free(read);
        ch->read_wanted = true;
        return;
    }
    const char *argv[] = {"EVAL", history_read_script, "2", stream, meta, since, count};
    size_t argvlen[7];
    for (int i = 0; i < 7; i++) argvlen[i] = strlen(argv[i]);
    read->subs = subs;
    read->channel = ch;
    if (bus_command_for_channel(subs->bus, ch->name, read_done, read, 7, argv, argvlen) != 0) {
        free(read);
        ch->read_wanted = true; /* the command connection is down: when it is back */
        return;
    }
    read->next = subs->reads;
    subs->reads = read;
    ch->read = read;
    ch->read_wanted = false;
    snprintf(ch->read_since, sizeof ch->read_since, "%s", since);
    for (struct waiter *wt = ch->waiters; wt; wt = wt->next) wt->in_read = true;
    subs->counters.history_reads++;
}

void subs_on_command_up(struct subs *subs) {
    for (size_t i = 0; i < subs->bucket_count; i++)
        for (struct channel *ch = subs->buckets[i]; ch; ch = ch->hash_next)
            if (ch->read_wanted && !ch->read && ch->waiters && ch->state == CHANNEL_ACTIVE)
                start_read(subs, ch, false);
}

/* ---- subscriptions ----------------------------------------------------------- */

bool subs_contains(const struct sub *head, const char *name) {
    for (; head; head = head->conn_next)
        if (strcmp(head->channel->name, name) == 0) return true;
    return false;
}

static void unlink_sub(struct subs *subs, struct sub *s) {
    struct channel *ch = s->channel;
    if (s->waiter) waiter_unlink(ch, s->waiter);
    skip_clear(ch, s);
    if (s->channel_prev)
        s->channel_prev->channel_next = s->channel_next;
    else
        ch->subscribers = s->channel_next;
    if (s->channel_next) s->channel_next->channel_prev = s->channel_prev;
    ch->count--;
    if (s->sse) ch->sse_count--;
    subs->subscription_count--;
    free(s);
    if (!ch->waiters && ch->count == 0) buffer_clear(ch);
    channel_settle(subs, ch);
}

enum subs_add_result subs_add(struct subs *subs, struct session *session, bool sse,
                              struct sub **head, const char *name, const struct subs_since *since,
                              struct sub **out) {
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
    s->sse = sse;
    if (sse) ch->sse_count++; /* the batch was just flushed: the next one gets its SSE form */
    s->channel_next = ch->subscribers;
    if (ch->subscribers) ch->subscribers->channel_prev = s;
    ch->subscribers = s;
    ch->count++;
    s->conn_next = *head;
    *head = s;
    subs->subscription_count++;
    *out = s;
    /* Redis down (IDLE): live at once; a gap follows once it is back. Active
     * and positioned: live at once unless it asks to recover. Otherwise the
     * SUBSCRIBE and/or a history read come first. */
    if (ch->state == CHANNEL_IDLE) {
        if (since) s->gap_owed = true;
        return SUBS_ADDED_CONFIRMED;
    }
    if (ch->state == CHANNEL_ACTIVE && ch->positioned && !since) {
        skip_set(ch, s, ch->offset); /* the position its "subscribed" reports */
        return SUBS_ADDED_CONFIRMED;
    }
    if (!add_waiter(s, since, since != NULL)) {
        struct sub **p = head;
        while (*p != s) p = &(*p)->conn_next;
        *p = s->conn_next;
        unlink_sub(subs, s);
        return SUBS_NO_MEMORY;
    }
    want_read(subs, ch, s->waiter);
    return SUBS_ADDED_PENDING;
}

bool subs_remove(struct subs *subs, struct sub **head, const char *name) {
    for (struct sub **p = head; *p; p = &(*p)->conn_next) {
        if (strcmp((*p)->channel->name, name) != 0) continue;
        struct sub *s = *p;
        *p = s->conn_next;
        if (s->pending) { /* answer the subscribe before the unsubscribe */
            if (s->waiter) waiter_unlink(s->channel, s->waiter);
            go_live(s, NULL);
        }
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
    ch->positioned = false;
    if (ch->after_outage) {
        /* Back after an outage: channels with history recover what their
         * subscribers missed; the others owe them a gap (sent here when the
         * channel was lost alone, else once every channel is back). */
        ch->after_outage = false;
        bool gap_now = ch->lost_alone;
        ch->lost_alone = false;
        struct subs_since since = {ch->offset, ch->epoch};
        /* The last read found no history: whatever history exists now began
         * after the subscribers went live, so reading it from its first entry
         * recovers them; the read tells, and a gap follows only if it cannot.
         * That holds when the channel was lost alone (a cluster node went,
         * its replica took over) and after an outage that ended on the Redis
         * process it began on. A Redis that restarted may have lost its last
         * writes with their history: such a channel keeps one gap, sent when
         * every channel is back. */
        bool from_first =
            !ch->epoch[0] && ch->history_absent && (gap_now || subs->same_redis);
        for (struct sub *s = ch->subscribers; s; s = s->channel_next) {
            if (s->waiter) continue;
            if (!ch->epoch[0] && !from_first) {
                s->gap_owed = true;
                if (gap_now) session_send_gap(s->session);
                continue;
            }
            struct subs_since own = since; /* from what it has, if a read put it ahead */
            if (s->skip_until[0] &&
                (!ch->offset[0] || history_offset_compare(s->skip_until, ch->offset) > 0))
                own.offset = s->skip_until;
            if (add_waiter(s, &own, false) && from_first) s->waiter->after_absent = true;
        }
    }
    recent_drop(ch); /* events went by while the channel was not subscribed */
    if (ch->waiters) {
        start_read(subs, ch, false);
    } else {
        for (struct sub *s = ch->subscribers; s; s = s->channel_next)
            if (s->pending) go_live(s, NULL);
    }
    channel_settle(subs, ch);
}
void subs_on_refused(struct subs *subs, const char *name, const char *reason) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->state != CHANNEL_SUBSCRIBING) return;
    subs_flush(subs);
    /* Every subscriber is told and dropped; nothing is retried for this
     * channel until a client asks again. */
    waiters_free(ch);
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

/* Answers every waiter of ch without a read (Redis is gone). */
static void answer_without_read(struct subs *subs, struct channel *ch) {
    struct entries none;
    memset(&none, 0, sizeof none);
    while (ch->waiters) answer_waiter(subs, ch, ch->waiters, NULL, NULL, NULL, &none, true, true);
}

/* Everything in flight for ch is void: waiters are answered (a gap or a
 * recovery follows the resubscribe), pending subscriptions go live. */
static void channel_lose(struct subs *subs, struct channel *ch) {
    if (ch->read) { /* its reply, if any, finds nobody */
        ch->read->channel = NULL;
        ch->read = NULL;
    }
    answer_without_read(subs, ch);
    buffer_clear(ch);
    ch->positioned = false;
    ch->read_wanted = false;
    for (struct sub *s = ch->subscribers; s; s = s->channel_next)
        if (s->pending) go_live(s, NULL);
}

void subs_on_bus_down(struct subs *subs) {
    subs_flush(subs);
    for (size_t i = 0; i < subs->bucket_count; i++) {
        struct channel *ch = subs->buckets[i], *next;
        for (; ch; ch = next) {
            next = ch->hash_next;
            channel_lose(subs, ch);
            ch->state = CHANNEL_IDLE;
            if (ch->count == 0)
                channel_unlink(subs, ch);
            else
                ch->after_outage = true;
        }
    }
}

void subs_on_channel_lost(struct subs *subs, const char *name) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->state != CHANNEL_ACTIVE) return;
    subs_flush(subs);
    ch->state = CHANNEL_SUBSCRIBING; /* the bus subscribes it again (set first: the
                                        channel stays while its answers go out) */
    ch->after_outage = true;
    ch->lost_alone = true;
    channel_lose(subs, ch);
}

size_t subs_on_bus_up(struct subs *subs, bool same_redis) {
    subs->same_redis = same_redis;
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

/* Adds the event message msg to ch's SSE batch as "data:" lines. */
static int frame_sse_event(struct channel *ch, const char *msg, size_t len,
                           const struct proto_position *pos) {
    struct subs_sse_batch *b = &ch->sse;
    if (b->count == b->capacity) {
        unsigned capacity = b->capacity ? b->capacity * 2 : 8;
        struct subs_sse_event *grown = realloc(b->events, capacity * sizeof *grown);
        if (!grown) return -1;
        b->events = grown;
        b->capacity = capacity;
    }
    size_t size = sse_data_size(msg, len);
    uint8_t *p = shared_frame_reserve(&b->data, size);
    if (!p) return -1;
    sse_write_data((char *)p, msg, len);
    struct subs_sse_event *e = &b->events[b->count++];
    e->start = (size_t)(p - b->data->data);
    e->len = size;
    snprintf(e->offset, sizeof e->offset, "%s", pos->offset);
    snprintf(e->epoch, sizeof e->epoch, "%s", pos->epoch);
    return 0;
}

/* Writes the event message as one text frame at the end of ch's batch (and,
 * while the channel has SSE subscribers, as "data:" lines in its SSE batch);
 * returns where the frame starts in the batch, or -1 when out of memory. */
static long frame_event(struct channel *ch, const char *data, size_t len,
                        const struct proto_position *pos) {
    char timestamp[PROTO_TIMESTAMP_LEN + 1];
    proto_timestamp(timestamp);
    long start = write_event_frame(&ch->batch, ch, data, len, pos, timestamp);
    if (start < 0) return -1;
    if (ch->sse_count) {
        uint8_t header[WS_MAX_HEADER_LEN];
        size_t message_len = proto_event_size(ch->name_len, len, pos);
        size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, message_len);
        const char *message = (const char *)ch->batch->data + start + header_len;
        if (frame_sse_event(ch, message, message_len, pos) != 0) {
            ch->batch->len = (size_t)start; /* still private: take it back */
            return -1;
        }
    }
    ch->batch_events++;
    return start;
}

/* Keeps a live event for the waiters of ch (bounded by the recovery limit;
 * past it their recovery fails with a gap). */
static void keep_for_waiters(struct subs *subs, struct channel *ch, const char *offset,
                             const uint8_t *frame, size_t len) {
    if (ch->buffer_overflow) return;
    struct buffered *b = NULL;
    if (ch->buffered_count < subs->limits.recovery_limit) b = malloc(sizeof *b + len);
    if (!b) {
        buffer_clear(ch);
        ch->buffer_overflow = true;
        return;
    }
    b->next = NULL;
    snprintf(b->offset, sizeof b->offset, "%s", offset);
    b->len = len;
    memcpy(b->frame, frame, len);
    *ch->buffered_tail = b;
    ch->buffered_tail = &b->next;
    ch->buffered_count++;
}

void subs_publish(struct subs *subs, const char *name, const char *payload, size_t len,
                  double arrived) {
    struct channel *ch = subs_find(subs, name);
    if (!ch || ch->count == 0) return;
    char epoch[HISTORY_EPOCH_MAX + 1], offset[HISTORY_OFFSET_MAX + 1];
    const char *data;
    size_t data_len;
    if (history_parse_message(payload, len, epoch, offset, &data, &data_len) ==
        HISTORY_MESSAGE_INVALID) {
        drop(subs, name, "bad_header", len);
        return;
    }
    if (data_len > subs->limits.max_event_size) {
        drop(subs, name, "too_big", data_len);
        return;
    }
    if (proto_payload_check(data, data_len, NULL, 0) != 0) {
        drop(subs, name, "bad_json", data_len);
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
    if (ch->skippers && offset[0] && strcmp(epoch, ch->epoch) != 0)
        for (struct sub *s = ch->subscribers; s; s = s->channel_next) skip_clear(ch, s);
    bool alone = ch->skippers && offset[0]; /* some subscribers may skip it */
    if (alone || (subs->dirty && subs->dirty != ch))
        subs_flush(subs); /* runs of one channel only */
    struct proto_position pos = {offset, epoch};
    long start = frame_event(ch, data, data_len, &pos);
    if (start < 0) {
        drop(subs, name, "no_memory", len);
        return;
    }
    snprintf(ch->batch_offset, sizeof ch->batch_offset, "%s", alone ? offset : "");
    if (offset[0]) { /* the channel's position moves with every event */
        snprintf(ch->offset, sizeof ch->offset, "%s", offset);
        snprintf(ch->epoch, sizeof ch->epoch, "%s", epoch);
        ch->history_absent = false;
    }
    if (ch->waiters || recent_alive(ch))
        keep_for_waiters(subs, ch, offset, ch->batch->data + start, ch->batch->len - (size_t)start);
    else if (ch->buffered)
        buffer_clear(ch); /* the window expired */
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
        struct subs_sse_batch sse = ch->sse; /* its events array stays the channel's */
        sse.channel = ch->name;
        ch->batch = NULL;
        ch->batch_events = 0;
        ch->sse.data = NULL;
        ch->sse.count = 0;
        for (struct sub *s = ch->subscribers; s; s = s->channel_next) {
            if (s->pending) continue;
            if (s->skip_until[0] && ch->batch_offset[0]) {
                if (history_offset_compare(ch->batch_offset, s->skip_until) <= 0) continue;
                skip_clear(ch, s); /* past it: live from here on */
            }
            int rc = s->sse ? (sse.data ? session_deliver_sse(s->session, &sse) : -1)
                            : session_deliver(s->session, batch, events);
            if (rc == 0) deliveries += events;
        }
        ch->batch_offset[0] = '\0';
        shared_frame_release(batch);
        shared_frame_release(sse.data);
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

const struct subs_counters *subs_counters(const struct subs *subs) {
    return &subs->counters;
}
