/* herald_load.c -- Herald's load generator: many WebSocket clients and a Redis
 * publisher, for the benchmark (tests/bench/run.sh).
 *
 *   connect    open N connections (JWT as Authorization: Bearer), subscribe each
 *              to one channel, hold them idle answering the gateway's pings;
 *              report what was established and what failed.
 *   subscribe  the same, then count the events received, check per-channel
 *              sequence numbers (loss, duplicates, misrouting) and record the
 *              publish-to-receive latency from the timestamp the publisher
 *              embedded: data {"t":<CLOCK_REALTIME ns>,"seq":n}. The publisher
 *              ends with {"end":1,"seq":<last>} on every channel, so loss at
 *              the tail is seen too.
 *   publish    PUBLISH at a fixed rate across C channels to Redis (hiredis);
 *              with --target nchan, HTTP POST /pub/<channel> to nginx-nchan
 *              over several keep-alive connections, pipelined.
 *   churn      open, upgrade, check the 101 and the "connected" message (the
 *              JWT was accepted), close, again, for T seconds; over ws or wss.
 *
 * --target nchan drives nginx with nchan instead of Herald, for comparison:
 * a subscriber opens ws://host:port/sub/<channel> (no JWT, no subscribe
 * message; the 101 means subscribed) and each WebSocket message is the event
 * data itself. Events of both targets carry the same --size-byte payload
 * {"t":<ns>,"seq":n,"c":<channel>,"p":"xx.."}, so the same bytes go out.
 *
 * The client modes fork --procs processes, each with one libevent loop and its
 * own file-descriptor limit; each child writes its figures into memory shared
 * with the parent, which prints one "key=value ..." line at the end. Sockets
 * are bound to several loopback source addresses in turn, so the ~28k
 * ephemeral ports of one address do not cap the connection count. Memory per
 * connection is bounded: input beyond one frame is never kept, and a frame over
 * MAX_FRAME fails the connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_upgrade.h"
#include "redis_url.h"
#include "ws_codec.h"

#define MAX_PROCS         32
#define MAX_SOURCES       256
#define MAX_SECONDS       3600       /* per-second series length */
#define MAX_FRAME         (1u << 20) /* a larger frame from the gateway fails the connection */
#define MAX_HEAD          8192       /* largest 101 reply head accepted */
#define HANDSHAKE_TIMEOUT 15         /* seconds from connect() to "connected" */
#define FD_RESERVE        64         /* descriptors a child keeps for itself */

/* ---- latency histogram ----------------------------------------------------
 * Log-linear over microseconds: exact below 128 us, then 64 buckets per power
 * of two (under 1.6% relative error), up to 2^40 us. */
#define HIST_SUB_BITS 6
#define HIST_BUCKETS  2240
#define HIST_MAX_US   ((UINT64_C(1) << 40) - 1)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_us;
    uint64_t max_us;
};

static unsigned hist_index(uint64_t us) {
    if (us > HIST_MAX_US) us = HIST_MAX_US;
    if (us < (UINT64_C(1) << (HIST_SUB_BITS + 1))) return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us);
    unsigned shift = msb - HIST_SUB_BITS;
    return (shift + 1) * 64 + (unsigned)(us >> shift) - 64;
}

/* The largest value that falls into bucket i. */
static uint64_t hist_upper(unsigned i) {
    if (i < 128) return i;
    unsigned shift = i / 64 - 1;
    uint64_t sub = i % 64 + 64;
    return ((sub + 1) << shift) - 1;
}

static void hist_add(struct hist *h, uint64_t us) {
    h->counts[hist_index(us)]++;
    h->total++;
    h->sum_us += us;
    if (us > h->max_us) h->max_us = us;
}

static void hist_merge(struct hist *into, const struct hist *from) {
    for (unsigned i = 0; i < HIST_BUCKETS; i++) into->counts[i] += from->counts[i];
    into->total += from->total;
    into->sum_us += from->sum_us;
    if (from->max_us > into->max_us) into->max_us = from->max_us;
}

/* The q-quantile, reported as its bucket's upper bound (never rounded down). */
static uint64_t hist_quantile(const struct hist *h, double q) {
    if (h->total == 0) return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->total), seen = 0;
    if (rank == 0) rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t up = hist_upper(i);
            return up < h->max_us ? up : h->max_us;
        }
    }
    return h->max_us;
}

/* ---- options and shared results ------------------------------------------ */

enum mode { MODE_CONNECT, MODE_SUBSCRIBE, MODE_PUBLISH, MODE_CHURN };
enum target { TARGET_HERALD, TARGET_NCHAN };

#define MAX_PAYLOAD 1024 /* --size limit */
/* An event this far behind the newest one of its channel is counted as
 * late_unchecked: not told apart from a duplicate. */
#define SEQ_WINDOW 16384

struct options {
    enum mode mode;
    enum target target;
    const char *host;
    int port;
    bool tls;
    struct in_addr sources[MAX_SOURCES];
    int source_count;
    const char *token;
    long connections;
    long channels;
    const char *channel_base; /* channel k is channel_base + k */
    double duration;
    int procs;
    long concurrency; /* handshakes in flight per process */
    const char *status_file;
    const char *csv_path;
    const char *hist_path;
    const char *redis_url;
    const char *prefix;
    double rate;
    long size;         /* publish: bytes of each event's payload */
    long http_conns;   /* publish to nchan: keep-alive connections */
    long pipeline;     /* publish to nchan: requests in flight per connection */
    uint64_t start_ns; /* CLOCK_REALTIME at start: second 0 of the series */
};

struct second_stat {
    uint64_t deliveries;
    uint64_t latency_sum_us;
    uint64_t latency_max_us;
};

/* One child's figures, in memory shared with the parent; only the child writes. */
struct child_result {
    volatile int ready; /* every connection attempted: open and subscribed, or failed */
    volatile int done;  /* subscribe: every subscribed connection saw its end marker */
    uint64_t attempted, established, subscribed, handshakes;
    uint64_t failed_connect, failed_http, failed_auth, failed_subscribe, failed_protocol;
    uint64_t disconnected; /* closed by the gateway or the network after opening */
    uint64_t pings;        /* pings from the gateway, each answered with a pong */
    uint64_t received, lost, duplicates, misrouted, ended, other_messages;
    uint64_t reordered; /* arrived after a later event of their channel (counted as received) */
    uint64_t late_unchecked; /* of those, SEQ_WINDOW or more behind: not checked for duplicates */
    uint64_t last_event_ns;  /* CLOCK_REALTIME of the last event (not end marker) received */
    uint64_t open_lost;      /* subscribed connections that went away before their end marker */
    uint64_t last_close_code;
    double elapsed;      /* seconds the child ran its load */
    struct hist latency; /* subscribe: publish-to-receive; churn: connect-to-connected */
    struct second_stat seconds[MAX_SECONDS];
    char first_error[160];
};

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void note_error(struct child_result *r, const char *fmt, const char *detail) {
    if (r->first_error[0]) return;
    snprintf(r->first_error, sizeof r->first_error, fmt, detail);
    for (char *p = r->first_error; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '\n' || *p == '\r') *p = '_';
}

/* ---- one client process --------------------------------------------------- */

enum lconn_state {
    LC_CONNECTING,     /* TCP connect in progress */
    LC_UPGRADING,      /* request sent (TLS handshake first on wss), waiting for 101 */
    LC_WAIT_CONNECTED, /* 101 checked, waiting for {"type":"connected"} */
    LC_WAIT_SUBSCRIBED,
    LC_OPEN,
    LC_CLOSING, /* churn: our close frame sent, waiting for the gateway's */
};

struct load;

struct lconn {
    struct load *L;
    struct bufferevent *bev;
    struct event *connect_ev;
    evutil_socket_t fd;
    long index; /* global connection number: channel and source address */
    enum lconn_state state;
    bool ended;
    uint64_t last_seq;              /* the highest sequence number seen */
    uint64_t seen[SEQ_WINDOW / 64]; /* bit i: last_seq - i arrived (late ones fill gaps) */
    uint64_t started_ns;            /* CLOCK_MONOTONIC at connect() */
    char accept[29];                /* the Sec-WebSocket-Accept we expect */
};

struct load {
    const struct options *o;
    struct child_result *r;
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    struct sockaddr_in target;
    struct lconn *conns; /* connect/subscribe: one per connection; churn: one per slot */
    long first, count;   /* this child's share of global connection numbers */
    long next;           /* next of them to open (churn: running counter) */
    long in_flight;
    long slots; /* churn: concurrent connections */
    bool stopping;
    uint64_t rng;
    size_t base_len;
    char request_tail[8192]; /* the request after the key line */
    size_t request_tail_len;
};

static uint64_t rng_next(uint64_t *s) { /* xorshift64*, seeded from RAND_bytes */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static void conn_open(struct load *L, struct lconn *c, long index);
static void conn_finish(struct lconn *c);

/* Writes one masked client frame (payload at most 125 bytes + our messages). */
static void send_frame(struct lconn *c, enum ws_opcode op, const void *payload, size_t len) {
    uint8_t frame[WS_MAX_HEADER_LEN + 512];
    if (len > 512) return;
    size_t n = ws_frame_header(frame, op, true, len);
    frame[1] |= 0x80; /* MASK bit: every client frame is masked (RFC 6455 5.3) */
    uint64_t bits = rng_next(&c->L->rng);
    uint8_t *mask = frame + n;
    memcpy(mask, &bits, 4);
    n += 4;
    memcpy(frame + n, payload, len);
    ws_mask(frame + n, len, mask, 0);
    bufferevent_write(c->bev, frame, n + len);
}

static void send_close(struct lconn *c, uint16_t code) {
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_frame(c, WS_OP_CLOSE, body, sizeof body);
}

static void send_upgrade(struct lconn *c) {
    struct load *L = c->L;
    uint8_t raw[16];
    char key[25];
    uint64_t a = rng_next(&L->rng), b = rng_next(&L->rng);
    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)key, raw, 16);
    struct http_slice slice = {key, 24};
    if (http_ws_accept(&slice, c->accept) != 0) c->accept[0] = '\0';
    char head[512];
    int n;
    if (L->o->target == TARGET_NCHAN)
        n = snprintf(head, sizeof head, "GET /sub/%s%ld HTTP/1.1\r\nSec-WebSocket-Key: %s\r\n",
                     L->o->channel_base, c->index % L->o->channels, key);
    else
        n = snprintf(head, sizeof head, "GET /ws HTTP/1.1\r\nSec-WebSocket-Key: %s\r\n", key);
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    bufferevent_write(c->bev, head, (size_t)n);
    bufferevent_write(c->bev, L->request_tail, L->request_tail_len);
}

static void send_subscribe(struct lconn *c) {
    struct load *L = c->L;
    char msg[256];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"channel\":\"%s%ld\"}",
                     L->o->channel_base, c->index % L->o->channels);
    send_frame(c, WS_OP_TEXT, msg, (size_t)n);
}

/* Called when a connection stops being "in flight" (open or failed). */
static void settle(struct load *L) {
    L->in_flight--;
    while (!L->stopping && L->in_flight < L->o->concurrency && L->next < L->first + L->count) {
        long i = L->next++;
        conn_open(L, &L->conns[i - L->first], i);
    }
    if (L->in_flight == 0 && L->next >= L->first + L->count) L->r->ready = 1;
}

static bool is_handshaking(enum lconn_state s) {
    return s == LC_CONNECTING || s == LC_UPGRADING || s == LC_WAIT_CONNECTED ||
           s == LC_WAIT_SUBSCRIBED;
}

/* Frees a connection's socket; in churn mode starts the slot's next one, else
 * lets the next pending connection start. */
static void conn_finish(struct lconn *c) {
    struct load *L = c->L;
    bool was_in_flight = is_handshaking(c->state);
    if (c->connect_ev) {
        event_free(c->connect_ev);
        c->connect_ev = NULL;
        evutil_closesocket(c->fd);
    }
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->fd = -1;
    if (L->o->mode == MODE_CHURN) {
        if (!L->stopping) conn_open(L, c, L->next++);
        return;
    }
    if (c->state == LC_OPEN && !c->ended) L->r->open_lost++;
    c->state = LC_CONNECTING;
    if (was_in_flight) settle(L);
}

/* A failure before the connection was open, counted by where it happened. */
static void conn_fail(struct lconn *c, const char *why) {
    struct child_result *r = c->L->r;
    switch (c->state) {
        case LC_CONNECTING: r->failed_connect++; break;
        case LC_UPGRADING: r->failed_http++; break;
        case LC_WAIT_CONNECTED: r->failed_auth++; break;
        case LC_WAIT_SUBSCRIBED: r->failed_subscribe++; break;
        case LC_OPEN: r->disconnected++; break;
        case LC_CLOSING: break; /* churn: the gateway closed first; the cycle is complete */
    }
    if (c->state != LC_CLOSING) note_error(r, "%s", why);
    conn_finish(c);
}

static bool parse_u64(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    const uint8_t *s = *p;
    while (s < end && *s >= '0' && *s <= '9') v = v * 10 + (uint64_t)(*s++ - '0');
    if (s == *p) return false;
    *p = s;
    *out = v;
    return true;
}

static bool has_prefix(const uint8_t *p, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && memcmp(p, prefix, n) == 0;
}

/* Moves the window of seen sequence numbers up by n. */
static void seq_window_shift(uint64_t *w, uint64_t n) {
    const unsigned words = SEQ_WINDOW / 64;
    if (n >= SEQ_WINDOW) {
        memset(w, 0, words * sizeof *w);
        return;
    }
    unsigned ws = (unsigned)(n / 64), bs = (unsigned)(n % 64);
    for (unsigned i = words; i-- > 0;) {
        uint64_t v = i >= ws ? w[i - ws] << bs : 0;
        if (bs && i >= ws + 1) v |= w[i - ws - 1] >> (64 - bs);
        w[i] = v;
    }
}

/* An event's data for an open subscriber, from its opening brace:
 * {"t":<ns>,"seq":n[,"c":k...]} or {"end":1,"seq":n[,"c":k]}. Checks the
 * sequence (and the channel, when the data names it), records latency. */
static void handle_data(struct lconn *c, const uint8_t *s, const uint8_t *end, uint64_t recv_ns) {
    struct load *L = c->L;
    struct child_result *r = L->r;
    uint64_t seq, t = 0, channel;
    bool is_end;
    if (has_prefix(s, (size_t)(end - s), "{\"t\":")) {
        is_end = false;
        s += 5;
        if (!parse_u64(&s, end, &t)) goto bad;
    } else if (has_prefix(s, (size_t)(end - s), "{\"end\":1")) {
        is_end = true;
        s += 8;
    } else {
        goto bad;
    }
    if (!has_prefix(s, (size_t)(end - s), ",\"seq\":")) goto bad;
    s += 7;
    if (!parse_u64(&s, end, &seq)) goto bad;
    if (has_prefix(s, (size_t)(end - s), ",\"c\":")) {
        s += 5;
        if (!parse_u64(&s, end, &channel)) goto bad;
        if ((long)channel != c->index % L->o->channels) {
            r->misrouted++;
            return;
        }
    }

    if (is_end) {
        if (!c->ended) {
            if (seq > c->last_seq) { /* the tail never came (or comes late: then it fills) */
                r->lost += seq - c->last_seq;
                seq_window_shift(c->seen, seq - c->last_seq);
                c->last_seq = seq;
            }
            c->ended = true;
            r->ended++;
        }
        return;
    }
    if (seq > c->last_seq) {
        if (seq > c->last_seq + 1) r->lost += seq - c->last_seq - 1; /* until they arrive */
        seq_window_shift(c->seen, seq - c->last_seq);
        c->seen[0] |= 1;
        c->last_seq = seq;
    } else {
        uint64_t back = c->last_seq - seq;
        if (back >= SEQ_WINDOW) {
            r->late_unchecked++; /* taken as filling its gap */
        } else if (c->seen[back / 64] >> (back % 64) & 1) {
            r->duplicates++;
            return;
        } else {
            c->seen[back / 64] |= UINT64_C(1) << (back % 64);
        }
        if (r->lost) r->lost--;
        r->reordered++;
    }
    r->received++;
    if (recv_ns > r->last_event_ns) r->last_event_ns = recv_ns;
    uint64_t us = recv_ns > t ? (recv_ns - t) / 1000 : 0;
    hist_add(&r->latency, us);
    if (recv_ns > L->o->start_ns) {
        uint64_t second = (recv_ns - L->o->start_ns) / 1000000000u;
        if (second < MAX_SECONDS) {
            struct second_stat *st = &r->seconds[second];
            st->deliveries++;
            st->latency_sum_us += us;
            if (us > st->latency_max_us) st->latency_max_us = us;
        }
    }
    return;
bad:
    r->other_messages++;
}

/* A Herald event for an open subscriber: check the envelope's channel, then the data. */
static void handle_event(struct lconn *c, const uint8_t *p, size_t len, uint64_t recv_ns) {
    static const char head[] = "{\"type\":\"event\",\"channel\":\"";
    static const char mid[] = "\",\"data\":";
    struct load *L = c->L;
    struct child_result *r = L->r;
    const uint8_t *end = p + len, *s = p + sizeof head - 1;
    uint64_t channel;
    if ((size_t)(end - s) < L->base_len || memcmp(s, L->o->channel_base, L->base_len) != 0) {
        r->misrouted++;
        return;
    }
    s += L->base_len;
    if (!parse_u64(&s, end, &channel) || (long)channel != c->index % L->o->channels) {
        r->misrouted++;
        return;
    }
    if ((size_t)(end - s) < sizeof mid - 1 || memcmp(s, mid, sizeof mid - 1) != 0) {
        r->other_messages++;
        return;
    }
    handle_data(c, s + sizeof mid - 1, end, recv_ns);
}

/* One text message from the gateway. Returns false when c was finished. */
static bool handle_text(struct lconn *c, const uint8_t *p, size_t len, uint64_t recv_ns) {
    struct load *L = c->L;
    struct child_result *r = L->r;
    if (L->o->target == TARGET_NCHAN) { /* the message is the event's data */
        if (c->state == LC_OPEN)
            handle_data(c, p, p + len, recv_ns);
        else
            r->other_messages++;
        return true;
    }
    if (c->state == LC_OPEN && has_prefix(p, len, "{\"type\":\"event\",")) {
        handle_event(c, p, len, recv_ns);
        return true;
    }
    if (has_prefix(p, len, "{\"type\":\"error\"")) {
        char text[128];
        size_t n = len < sizeof text - 1 ? len : sizeof text - 1;
        memcpy(text, p, n);
        text[n] = '\0';
        if (c->state == LC_OPEN) {
            r->other_messages++;
            note_error(r, "error_while_open:%s", text);
            return true;
        }
        conn_fail(c, text); /* unauthorized (then 4001), or a refused subscribe */
        return false;
    }
    switch (c->state) {
        case LC_WAIT_CONNECTED:
            if (!has_prefix(p, len, "{\"type\":\"connected\"")) break;
            r->established++;
            if (L->o->mode == MODE_CHURN) {
                r->handshakes++;
                hist_add(&r->latency, (now_ns(CLOCK_MONOTONIC) - c->started_ns) / 1000);
                send_close(c, WS_CLOSE_NORMAL);
                c->state = LC_CLOSING;
            } else {
                send_subscribe(c);
                c->state = LC_WAIT_SUBSCRIBED;
            }
            return true;
        case LC_WAIT_SUBSCRIBED:
            if (!has_prefix(p, len, "{\"type\":\"subscribed\"")) break;
            r->subscribed++;
            c->state = LC_OPEN;
            bufferevent_set_timeouts(c->bev, NULL, NULL); /* idle from now on */
            settle(L);
            return true;
        default: break;
    }
    r->other_messages++;
    return true;
}

/* One frame. Returns false when c was finished. */
static bool handle_frame(struct lconn *c, uint8_t opcode, bool fin, const uint8_t *payload,
                         size_t len, uint64_t recv_ns) {
    struct child_result *r = c->L->r;
    switch (opcode) {
        case WS_OP_TEXT:
            if (!fin) break; /* the gateway never fragments */
            return handle_text(c, payload, len, recv_ns);
        case WS_OP_BINARY:
            if (!fin || c->L->o->target != TARGET_NCHAN) break;
            return handle_text(c, payload, len, recv_ns);
        case WS_OP_PING:
            r->pings++;
            send_frame(c, WS_OP_PONG, payload, len);
            return true;
        case WS_OP_PONG: return true;
        case WS_OP_CLOSE:
            r->last_close_code = len >= 2 ? (uint64_t)(payload[0] << 8 | payload[1]) : 1005;
            if (c->state == LC_CLOSING) { /* churn: the close handshake is complete */
                conn_finish(c);
                return false;
            }
            {
                char why[32];
                snprintf(why, sizeof why, "close_%u", (unsigned)r->last_close_code);
                conn_fail(c, why);
            }
            return false;
        default: break;
    }
    r->failed_protocol++;
    conn_fail(c, "unexpected_frame");
    return false;
}

/* Decodes the gateway's (unmasked) frames. Returns false when c was finished. */
static bool read_frames(struct lconn *c, struct evbuffer *in, uint64_t recv_ns) {
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len < 2) return true;
        uint8_t h[10];
        size_t got = len < sizeof h ? len : sizeof h;
        evbuffer_copyout(in, h, got);
        if (h[1] & 0x80) { /* a server must not mask */
            c->L->r->failed_protocol++;
            conn_fail(c, "masked_server_frame");
            return false;
        }
        uint64_t payload_len = h[1] & 0x7f;
        size_t header_len = 2;
        if (payload_len == 126) {
            if (got < 4) return true;
            payload_len = (uint64_t)h[2] << 8 | h[3];
            header_len = 4;
        } else if (payload_len == 127) {
            if (got < 10) return true;
            payload_len = 0;
            for (int i = 2; i < 10; i++) payload_len = payload_len << 8 | h[i];
            header_len = 10;
        }
        if (payload_len > MAX_FRAME) {
            c->L->r->failed_protocol++;
            conn_fail(c, "frame_too_big");
            return false;
        }
        size_t total = header_len + (size_t)payload_len;
        if (len < total) return true;
        const uint8_t *frame = evbuffer_pullup(in, (ev_ssize_t)total);
        if (!frame) {
            conn_fail(c, "out_of_memory");
            return false;
        }
        if (!handle_frame(c, h[0] & 0x0f, (h[0] & 0x80) != 0, frame + header_len,
                          (size_t)payload_len, recv_ns))
            return false;
        evbuffer_drain(in, total);
    }
}

/* Checks the 101 reply. Returns 1 when it was consumed, 0 when incomplete,
 * -1 when c was finished. */
static int read_upgrade_reply(struct lconn *c, struct evbuffer *in) {
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > MAX_HEAD) {
            conn_fail(c, "reply_head_too_big");
            return -1;
        }
        return 0;
    }
    size_t head_len = (size_t)end.pos + 4;
    char head[MAX_HEAD + 1];
    if (head_len > MAX_HEAD) {
        conn_fail(c, "reply_head_too_big");
        return -1;
    }
    evbuffer_remove(in, head, head_len);
    head[head_len] = '\0';
    if (strncmp(head, "HTTP/1.1 101 ", 13) != 0) {
        char status[16];
        snprintf(status, sizeof status, "http_%.3s", head + 9);
        conn_fail(c, status);
        return -1;
    }
    const char *h = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (h) {
        h += 23;
        while (*h == ' ') h++;
    }
    if (!h || !c->accept[0] || strncmp(h, c->accept, 28) != 0 || (h[28] != '\r' && h[28] != ' ')) {
        conn_fail(c, "bad_sec_websocket_accept");
        return -1;
    }
    c->state = LC_WAIT_CONNECTED;
    if (c->L->o->target == TARGET_NCHAN) { /* nchan: the 101 is the subscription */
        struct child_result *r = c->L->r;
        r->established++;
        r->subscribed++;
        c->state = LC_OPEN;
        bufferevent_set_timeouts(c->bev, NULL, NULL);
        settle(c->L);
    }
    return 1;
}

static void read_cb(struct bufferevent *bev, void *arg) {
    struct lconn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->state == LC_UPGRADING && read_upgrade_reply(c, in) <= 0) return;
    read_frames(c, in, now_ns(CLOCK_REALTIME));
}

static void event_cb(struct bufferevent *bev, short what, void *arg) {
    struct lconn *c = arg;
    if (what & BEV_EVENT_CONNECTED) return;
    if (what & BEV_EVENT_TIMEOUT) {
        conn_fail(c, "handshake_timeout");
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        char why[160];
        unsigned long tls_error = c->L->o->tls ? bufferevent_get_openssl_error(bev) : 0;
        if (tls_error)
            ERR_error_string_n(tls_error, why, sizeof why);
        else
            snprintf(why, sizeof why, "socket:%s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        conn_fail(c, why);
        return;
    }
    if (what & BEV_EVENT_EOF) conn_fail(c, "eof");
}

/* The TCP connect finished (or timed out): start TLS and/or the upgrade. */
static void connected_cb(evutil_socket_t fd, short what, void *arg) {
    struct lconn *c = arg;
    struct load *L = c->L;
    int err = 0;
    socklen_t len = sizeof err;
    if (what & EV_TIMEOUT)
        err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        char why[96];
        snprintf(why, sizeof why, "connect:%s", strerror(err));
        conn_fail(c, why); /* frees connect_ev and closes fd */
        return;
    }
    event_free(c->connect_ev);
    c->connect_ev = NULL;
    if (L->o->tls) {
        SSL *ssl = SSL_new(L->ssl_ctx);
        if (ssl)
            c->bev = bufferevent_openssl_socket_new(L->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
        if (c->bev)
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        else if (ssl)
            SSL_free(ssl);
    } else {
        c->bev = bufferevent_socket_new(L->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        evutil_closesocket(fd);
        c->fd = -1;
        conn_fail(c, "bufferevent_new");
        return;
    }
    struct timeval handshake = {HANDSHAKE_TIMEOUT, 0};
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    bufferevent_set_timeouts(c->bev, &handshake, &handshake);
    bufferevent_set_max_single_read(c->bev, 65536);
    c->state = LC_UPGRADING;
    if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0) {
        conn_fail(c, "bufferevent_enable");
        return;
    }
    send_upgrade(c);
}

/* A slot whose socket could not even be created tries again a little later
 * (churn), or gives its place to the next connection (connect/subscribe);
 * deferred, so that a run of failures cannot recurse. */
static void retry_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct lconn *c = arg;
    struct load *L = c->L;
    if (L->o->mode == MODE_CHURN) {
        if (!L->stopping) conn_open(L, c, L->next++);
    } else {
        settle(L);
    }
}

/* Starts connection number index in slot c. */
static void conn_open(struct load *L, struct lconn *c, long index) {
    memset(c, 0, sizeof *c);
    c->L = L;
    c->index = index;
    c->fd = -1;
    c->state = LC_CONNECTING;
    c->started_ns = now_ns(CLOCK_MONOTONIC);
    if (L->o->mode != MODE_CHURN) L->in_flight++;
    L->r->attempted++;
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr = L->o->sources[index % L->o->source_count]};
    int one = 1;
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        note_error(L->r, "socket:%s", strerror(errno));
        goto failed;
    }
    /* Defer the port choice to connect(): ports are then unique per 4-tuple. */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        (connect(fd, (struct sockaddr *)&L->target, sizeof L->target) != 0 &&
         errno != EINPROGRESS)) {
        note_error(L->r, "connect:%s", strerror(errno));
        evutil_closesocket(fd);
        goto failed;
    }
    c->fd = fd;
    c->connect_ev = event_new(L->base, fd, EV_WRITE, connected_cb, c);
    struct timeval tv = {HANDSHAKE_TIMEOUT, 0};
    if (c->connect_ev && event_add(c->connect_ev, &tv) == 0) return;
    note_error(L->r, "%s", "event_add");
    if (c->connect_ev) event_free(c->connect_ev);
    c->connect_ev = NULL;
    evutil_closesocket(fd);
    c->fd = -1;
failed:
    L->r->failed_connect++;
    struct timeval later = {0, L->o->mode == MODE_CHURN ? 10000 : 0};
    event_base_once(L->base, -1, EV_TIMEOUT, retry_cb, c, &later);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct load *L = arg;
    L->stopping = true;
    event_base_loopbreak(L->base);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct load *L = arg;
    struct child_result *r = L->r;
    if (L->o->mode == MODE_SUBSCRIBE && r->ready && r->ended + r->open_lost >= r->subscribed)
        r->done = 1;
}

static int run_child(const struct options *o, int k, struct child_result *r) {
    struct load L = {.o = o, .r = r};
    signal(SIGPIPE, SIG_IGN);
    if (RAND_bytes((unsigned char *)&L.rng, sizeof L.rng) != 1 || L.rng == 0)
        L.rng = now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32) ^ 1;
    L.base_len = strlen(o->channel_base);
    L.target.sin_family = AF_INET;
    L.target.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &L.target.sin_addr) != 1) {
        note_error(r, "bad_host:%s", o->host);
        return 2;
    }
    int n = snprintf(L.request_tail, sizeof L.request_tail,
                     "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     o->host, o->port, o->token ? "Authorization: Bearer " : "",
                     o->token ? o->token : "", o->token ? "\r\n" : "");
    if (o->target == TARGET_NCHAN) /* nchan's subscriber location asks for no token */
        n = snprintf(L.request_tail, sizeof L.request_tail,
                     "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     o->host, o->port);
    if (n < 0 || (size_t)n >= sizeof L.request_tail) {
        note_error(r, "%s", "token_too_long");
        return 2;
    }
    L.request_tail_len = (size_t)n;
    L.base = event_base_new();
    if (!L.base) return 1;
    if (o->tls) {
        L.ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!L.ssl_ctx) return 1;
        SSL_CTX_set_verify(L.ssl_ctx, SSL_VERIFY_NONE, NULL); /* the bench's own self-signed cert */
        /* Every connection is a full handshake: no session resumption. */
        SSL_CTX_set_session_cache_mode(L.ssl_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(L.ssl_ctx, SSL_OP_NO_TICKET);
    }

    struct timeval duration = {(time_t)o->duration,
                               (suseconds_t)((o->duration - floor(o->duration)) * 1e6)};
    struct timeval tick = {0, 200000};
    struct event *deadline = evtimer_new(L.base, stop_cb, &L);
    struct event *ticker = event_new(L.base, -1, EV_PERSIST, tick_cb, &L);
    struct event *term = evsignal_new(L.base, SIGTERM, stop_cb, &L);
    struct event *intr = evsignal_new(L.base, SIGINT, stop_cb, &L);
    if (!deadline || !ticker || !term || !intr || event_add(deadline, &duration) ||
        event_add(ticker, &tick) || event_add(term, NULL) || event_add(intr, NULL))
        return 1;

    double started = (double)now_ns(CLOCK_MONOTONIC) / 1e9;
    if (o->mode == MODE_CHURN) {
        L.slots = o->concurrency;
        L.conns = calloc((size_t)L.slots, sizeof *L.conns);
        if (!L.conns) return 1;
        L.next = (long)k * 1000003; /* spreads children over the source addresses */
        for (long i = 0; i < L.slots; i++) conn_open(&L, &L.conns[i], L.next++);
    } else {
        L.first = o->connections / o->procs * k +
                  (k < o->connections % o->procs ? k : o->connections % o->procs);
        L.count = o->connections / o->procs + (k < o->connections % o->procs);
        L.conns = calloc((size_t)(L.count ? L.count : 1), sizeof *L.conns);
        if (!L.conns) return 1;
        L.next = L.first;
        L.in_flight = 1; /* released by the settle() below */
        settle(&L);
    }
    event_base_dispatch(L.base);
    r->elapsed = (double)now_ns(CLOCK_MONOTONIC) / 1e9 - started;
    /* The process exits now: the kernel closes every socket at once. */
    return 0;
}

/* ---- the parent: fork, watch, aggregate, report --------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void write_status(const char *path, const char *line) {
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", line);
    fclose(f);
}

static const char *mode_name(enum mode m) {
    switch (m) {
        case MODE_CONNECT: return "connect";
        case MODE_SUBSCRIBE: return "subscribe";
        case MODE_PUBLISH: return "publish";
        case MODE_CHURN: return "churn";
    }
    return "?";
}

static void write_series(const struct options *o, const struct child_result *t) {
    if (o->csv_path) {
        FILE *f = fopen(o->csv_path, "w");
        if (f) {
            long first = -1, last = -1;
            for (long s = 0; s < MAX_SECONDS; s++)
                if (t->seconds[s].deliveries) {
                    if (first < 0) first = s;
                    last = s;
                }
            fprintf(f, "second,deliveries,mean_latency_ms,max_latency_ms\n");
            for (long s = first; first >= 0 && s <= last; s++) {
                const struct second_stat *st = &t->seconds[s];
                fprintf(f, "%ld,%llu,%.3f,%.3f\n", s - first, (unsigned long long)st->deliveries,
                        st->deliveries ? (double)st->latency_sum_us / (double)st->deliveries / 1e3
                                       : 0.0,
                        (double)st->latency_max_us / 1e3);
            }
            fclose(f);
        }
    }
    if (o->hist_path) {
        FILE *f = fopen(o->hist_path, "w");
        if (f) {
            fprintf(f, "upper_us count\n");
            for (unsigned i = 0; i < HIST_BUCKETS; i++)
                if (t->latency.counts[i])
                    fprintf(f, "%llu %llu\n", (unsigned long long)hist_upper(i),
                            (unsigned long long)t->latency.counts[i]);
            fclose(f);
        }
    }
}

static void report(const struct options *o, const struct child_result *t, double elapsed) {
    uint64_t failed = t->failed_connect + t->failed_http + t->failed_auth + t->failed_subscribe;
    const struct hist *h = &t->latency;
    printf("mode=%s procs=%d connections=%ld attempted=%llu established=%llu subscribed=%llu "
           "failed=%llu failed_connect=%llu failed_http=%llu failed_auth=%llu "
           "failed_subscribe=%llu failed_protocol=%llu disconnected=%llu pings=%llu "
           "received=%llu lost=%llu duplicates=%llu reordered=%llu late_unchecked=%llu "
           "misrouted=%llu ended=%llu "
           "missing_end=%llu "
           "other_messages=%llu handshakes=%llu elapsed_s=%.3f handshakes_per_s=%.1f "
           "samples=%llu p50_us=%llu p90_us=%llu p99_us=%llu p999_us=%llu max_us=%llu "
           "mean_us=%.1f last_close_code=%llu last_event_ns=%llu first_error=%s\n",
           mode_name(o->mode), o->procs, o->mode == MODE_CHURN ? 0 : o->connections,
           (unsigned long long)t->attempted, (unsigned long long)t->established,
           (unsigned long long)t->subscribed, (unsigned long long)failed,
           (unsigned long long)t->failed_connect, (unsigned long long)t->failed_http,
           (unsigned long long)t->failed_auth, (unsigned long long)t->failed_subscribe,
           (unsigned long long)t->failed_protocol, (unsigned long long)t->disconnected,
           (unsigned long long)t->pings, (unsigned long long)t->received,
           (unsigned long long)t->lost, (unsigned long long)t->duplicates,
           (unsigned long long)t->reordered, (unsigned long long)t->late_unchecked,
           (unsigned long long)t->misrouted, (unsigned long long)t->ended,
           (unsigned long long)(o->mode == MODE_SUBSCRIBE ? t->subscribed - t->ended : 0),
           (unsigned long long)t->other_messages, (unsigned long long)t->handshakes, elapsed,
           elapsed > 0 ? (double)t->handshakes / elapsed : 0.0, (unsigned long long)h->total,
           (unsigned long long)hist_quantile(h, 0.50), (unsigned long long)hist_quantile(h, 0.90),
           (unsigned long long)hist_quantile(h, 0.99), (unsigned long long)hist_quantile(h, 0.999),
           (unsigned long long)h->max_us, h->total ? (double)h->sum_us / (double)h->total : 0.0,
           (unsigned long long)t->last_close_code, (unsigned long long)t->last_event_ns,
           t->first_error[0] ? t->first_error : "-");
    fflush(stdout);
}

static int run_clients(struct options *o) {
    struct rlimit rl;
    long per_proc = 1024 - FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > FD_RESERVE * 2)
            per_proc = (long)rl.rlim_cur - FD_RESERVE;
        else if (rl.rlim_cur == RLIM_INFINITY)
            per_proc = 1L << 30;
    }
    long want = o->mode == MODE_CHURN ? o->concurrency * o->procs : o->connections;
    int needed = (int)((want + per_proc - 1) / per_proc);
    if (o->mode == MODE_CHURN && o->concurrency > per_proc) {
        fprintf(stderr, "herald-load: --concurrency %ld is over the file limit per process\n",
                o->concurrency);
        return 2;
    }
    if (o->mode != MODE_CHURN && needed > o->procs) {
        if (needed > MAX_PROCS) {
            fprintf(stderr, "herald-load: %ld connections need %d processes (max %d)\n",
                    o->connections, needed, MAX_PROCS);
            return 2;
        }
        fprintf(stderr, "herald-load: %ld open files per process allowed: using %d processes\n",
                per_proc + FD_RESERVE, needed);
        o->procs = needed;
    }
    size_t size = sizeof(struct child_result) * (size_t)o->procs;
    struct child_result *results =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct child_result *total = calloc(1, sizeof *total);
    if (results == MAP_FAILED || !total) {
        perror("herald-load: mmap");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fflush(NULL);
    o->start_ns = now_ns(CLOCK_REALTIME);
    double started = (double)now_ns(CLOCK_MONOTONIC) / 1e9;
    pid_t pids[MAX_PROCS];
    int running = 0;
    for (int k = 0; k < o->procs; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            _exit(run_child(o, k, &results[k]));
        }
        if (pid < 0) {
            perror("herald-load: fork");
            break;
        }
        pids[running++] = pid;
    }
    bool ready_said = false, done_said = false, forwarded = false, killed = false;
    double hard_deadline = started + o->duration + 15;
    int alive = running;
    bool gone[MAX_PROCS] = {false};
    int exit_status = running == o->procs ? 0 : 1;
    while (alive > 0) {
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
        if (stop_requested && !forwarded) {
            for (int k = 0; k < running; k++)
                if (!gone[k]) kill(pids[k], SIGTERM);
            forwarded = true;
        }
        if (!ready_said) {
            bool all = true;
            uint64_t established = 0, subscribed = 0;
            for (int k = 0; k < running; k++) {
                all &= results[k].ready != 0;
                established += results[k].established;
                subscribed += results[k].subscribed;
            }
            if (all && o->mode != MODE_CHURN) {
                char line[128];
                snprintf(line, sizeof line, "ready established=%llu subscribed=%llu",
                         (unsigned long long)established, (unsigned long long)subscribed);
                write_status(o->status_file, line);
                ready_said = true;
            }
        }
        if (!done_said && o->mode == MODE_SUBSCRIBE) {
            bool all = true;
            for (int k = 0; k < running; k++) all &= results[k].done != 0;
            if (all) {
                write_status(o->status_file, "done");
                done_said = true;
            }
        }
        if (!killed && (double)now_ns(CLOCK_MONOTONIC) / 1e9 > hard_deadline) {
            for (int k = 0; k < running; k++)
                if (!gone[k]) kill(pids[k], SIGKILL);
            killed = true;
            exit_status = 1;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int k = 0; k < running; k++)
                if (pids[k] == pid && !gone[k]) {
                    gone[k] = true;
                    alive--;
                    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) exit_status = 1;
                }
        }
    }
    double elapsed = 0;
    for (int k = 0; k < running; k++) {
        const struct child_result *r = &results[k];
        total->attempted += r->attempted;
        total->established += r->established;
        total->subscribed += r->subscribed;
        total->handshakes += r->handshakes;
        total->failed_connect += r->failed_connect;
        total->failed_http += r->failed_http;
        total->failed_auth += r->failed_auth;
        total->failed_subscribe += r->failed_subscribe;
        total->failed_protocol += r->failed_protocol;
        total->disconnected += r->disconnected;
        total->pings += r->pings;
        total->received += r->received;
        total->lost += r->lost;
        total->duplicates += r->duplicates;
        total->misrouted += r->misrouted;
        total->ended += r->ended;
        total->other_messages += r->other_messages;
        total->reordered += r->reordered;
        total->late_unchecked += r->late_unchecked;
        if (r->last_event_ns > total->last_event_ns) total->last_event_ns = r->last_event_ns;
        total->open_lost += r->open_lost;
        if (r->last_close_code) total->last_close_code = r->last_close_code;
        if (!total->first_error[0] && r->first_error[0])
            memcpy(total->first_error, r->first_error, sizeof total->first_error);
        if (r->elapsed > elapsed) elapsed = r->elapsed;
        hist_merge(&total->latency, &r->latency);
        for (long s = 0; s < MAX_SECONDS; s++) {
            struct second_stat *into = &total->seconds[s];
            const struct second_stat *from = &r->seconds[s];
            into->deliveries += from->deliveries;
            into->latency_sum_us += from->latency_sum_us;
            if (from->latency_max_us > into->latency_max_us)
                into->latency_max_us = from->latency_max_us;
        }
    }
    report(o, total, elapsed);
    write_series(o, total);
    free(total);
    munmap(results, size);
    return exit_status;
}

/* ---- publish -------------------------------------------------------------- */

/* An event's payload, padded with a "p" string to o->size bytes (when it fits):
 * {"t":<CLOCK_REALTIME ns>,"seq":n,"c":k,"p":"xxx..."}. Returns its length. */
static size_t make_payload(const struct options *o, char *buf, uint64_t seq, long k) {
    int n = snprintf(buf, MAX_PAYLOAD, "{\"t\":%llu,\"seq\":%llu,\"c\":%ld",
                     (unsigned long long)now_ns(CLOCK_REALTIME), (unsigned long long)seq, k);
    long pad = o->size - n - 8; /* ,"p":"  "} */
    if (pad < 0) {
        buf[n++] = '}';
        buf[n] = '\0';
        return (size_t)n;
    }
    memcpy(buf + n, ",\"p\":\"", 6);
    n += 6;
    memset(buf + n, 'x', (size_t)pad);
    n += (int)pad;
    memcpy(buf + n, "\"}", 3);
    return (size_t)n + 2;
}

static size_t make_end_marker(char *buf, uint64_t seq, long k) {
    return (size_t)snprintf(buf, MAX_PAYLOAD, "{\"end\":1,\"seq\":%llu,\"c\":%ld}",
                            (unsigned long long)seq, k);
}

static double own_cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static bool reply_ok(redisContext *rc, redisReply *reply, long *receivers) {
    bool ok = reply && reply->type == REDIS_REPLY_INTEGER;
    if (ok && receivers) *receivers += (long)reply->integer;
    if (!reply) fprintf(stderr, "herald-load: redis: %s\n", rc->errstr);
    if (reply) freeReplyObject(reply);
    return ok;
}

/* PUBLISHes o->rate events a second for o->duration seconds, round-robin over
 * the channels, then one end marker per channel. Each event's "t" is taken
 * right before its PUBLISH is queued; lag behind the schedule is reported. */
static int run_publish(const struct options *o) {
    struct redis_url url;
    char err[256];
    if (redis_url_parse(o->redis_url, &url, err, sizeof err) != 0) {
        fprintf(stderr, "herald-load: --redis: %s\n", err);
        return 2;
    }
    struct timeval timeout = {5, 0};
    redisContext *rc = redisConnectWithTimeout(url.host, url.port, timeout);
    if (!rc || rc->err) {
        fprintf(stderr, "herald-load: redis %s:%d: %s\n", url.host, url.port,
                rc ? rc->errstr : "out of memory");
        return 1;
    }
    redisReply *reply = NULL;
    if (url.password) {
        reply = url.user ? redisCommand(rc, "AUTH %s %s", url.user, url.password)
                         : redisCommand(rc, "AUTH %s", url.password);
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "herald-load: redis AUTH failed\n");
            return 1;
        }
        freeReplyObject(reply);
    }
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    uint64_t *seq = calloc((size_t)o->channels, sizeof *seq);
    if (!seq) return 1;

    const long max_batch = 10000;
    uint64_t sent = 0, errors = 0;
    long receivers = 0;
    double max_lag = 0;
    uint64_t start = now_ns(CLOCK_MONOTONIC), start_real = now_ns(CLOCK_REALTIME);
    for (;;) {
        double elapsed = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;
        if (stop_requested || elapsed >= o->duration) break;
        uint64_t due = (uint64_t)(elapsed * o->rate) + 1;
        if (due > sent) {
            double lag = elapsed - (double)sent / o->rate;
            if (lag > max_lag) max_lag = lag;
        }
        long batch = 0;
        for (; sent < due && batch < max_batch; sent++, batch++) {
            long k = (long)(sent % (uint64_t)o->channels);
            char channel[256], payload[MAX_PAYLOAD];
            snprintf(channel, sizeof channel, "%s%s%ld", o->prefix, o->channel_base, k);
            size_t plen = make_payload(o, payload, ++seq[k], k);
            redisAppendCommand(rc, "PUBLISH %s %b", channel, payload, plen);
        }
        for (long i = 0; i < batch; i++) {
            if (redisGetReply(rc, (void **)&reply) != REDIS_OK) {
                fprintf(stderr, "herald-load: redis: %s\n", rc->errstr);
                return 1;
            }
            if (!reply_ok(rc, reply, &receivers)) errors++;
        }
        /* Sleep until the next event is due (at least 200 us: batches form at high rates). */
        uint64_t next = start + (uint64_t)((double)sent / o->rate * 1e9);
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (next < now + 200000) next = now + 200000;
        struct timespec until = {(time_t)(next / 1000000000u), (long)(next % 1000000000u)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
    }
    double elapsed = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;
    /* End markers, so subscribers can tell loss at the tail from a slow end. */
    for (long k = 0; k < o->channels;) {
        long batch = 0;
        for (; k < o->channels && batch < 1000; k++, batch++) {
            char channel[256], payload[MAX_PAYLOAD];
            snprintf(channel, sizeof channel, "%s%s%ld", o->prefix, o->channel_base, k);
            size_t plen = make_end_marker(payload, seq[k], k);
            redisAppendCommand(rc, "PUBLISH %s %b", channel, payload, plen);
        }
        for (long i = 0; i < batch; i++) {
            if (redisGetReply(rc, (void **)&reply) != REDIS_OK) {
                fprintf(stderr, "herald-load: redis: %s\n", rc->errstr);
                return 1;
            }
            if (!reply_ok(rc, reply, NULL)) errors++;
        }
    }
    printf("mode=publish target=herald channels=%ld rate=%.0f size=%ld duration_s=%.3f "
           "published=%llu achieved_rate=%.1f gateway_receivers=%ld errors=%llu "
           "max_lag_ms=%.3f cpu_s=%.3f start_ns=%llu\n",
           o->channels, o->rate, o->size, elapsed, (unsigned long long)sent,
           elapsed > 0 ? (double)sent / elapsed : 0.0, receivers, (unsigned long long)errors,
           max_lag * 1e3, own_cpu_seconds(), (unsigned long long)start_real);
    fflush(stdout);
    free(seq);
    redisFree(rc);
    redis_url_free(&url);
    return errors ? 1 : 0;
}

/* ---- publish to nchan: HTTP POST /pub/<channel>, keep-alive, pipelined ----- */

struct hconn {
    int fd;
    long in_flight; /* requests sent or queued, not yet answered */
    char *out;      /* requests not yet written */
    size_t out_len, out_cap;
    char in[16384]; /* a partial response */
    size_t in_len;
};

struct hpub {
    const struct options *o;
    struct hconn *conns;
    long n;
    long next; /* round robin over conns */
    uint64_t answered, errors;
    int first_status; /* the first status that was not 201/202 */
};

static int hconn_queue(struct hpub *P, struct hconn *h, long k, const char *body, size_t len) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /pub/%s%ld HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     P->o->channel_base, k, P->o->host, P->o->port, len);
    if (n < 0 || (size_t)n >= sizeof head) return -1;
    size_t need = h->out_len + (size_t)n + len;
    if (need > h->out_cap) {
        size_t cap = h->out_cap ? h->out_cap * 2 : 65536;
        while (cap < need) cap *= 2;
        char *p = realloc(h->out, cap);
        if (!p) return -1;
        h->out = p;
        h->out_cap = cap;
    }
    memcpy(h->out + h->out_len, head, (size_t)n);
    memcpy(h->out + h->out_len + (size_t)n, body, len);
    h->out_len = need;
    h->in_flight++;
    return 0;
}

/* Writes what the socket takes. Returns -1 on a socket error. */
static int hconn_flush(struct hconn *h) {
    size_t off = 0;
    while (off < h->out_len) {
        ssize_t w = write(h->fd, h->out + off, h->out_len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (w < 0 && errno == EINTR) continue;
        return -1;
    }
    memmove(h->out, h->out + off, h->out_len - off);
    h->out_len -= off;
    return 0;
}

/* Reads and consumes complete responses. Returns -1 when the connection failed. */
static int hconn_read(struct hpub *P, struct hconn *h) {
    for (;;) {
        ssize_t got = read(h->fd, h->in + h->in_len, sizeof h->in - h->in_len);
        if (got == 0) {
            fprintf(stderr, "herald-load: nchan closed a publishing connection\n");
            return -1;
        }
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == EINTR) continue;
            fprintf(stderr, "herald-load: publishing connection: %s\n", strerror(errno));
            return -1;
        }
        h->in_len += (size_t)got;
        for (;;) {
            h->in[h->in_len < sizeof h->in ? h->in_len : sizeof h->in - 1] = '\0';
            char *end = memmem(h->in, h->in_len, "\r\n\r\n", 4);
            if (!end) {
                if (h->in_len >= sizeof h->in - 1) {
                    fprintf(stderr, "herald-load: response head too big\n");
                    return -1;
                }
                break;
            }
            size_t head_len = (size_t)(end - h->in) + 4;
            char saved = h->in[head_len - 1];
            h->in[head_len - 1] = '\0';
            int status = 0;
            long clen = 0;
            if (strncmp(h->in, "HTTP/1.1 ", 9) == 0) status = atoi(h->in + 9);
            const char *cl = strcasestr(h->in, "\r\nContent-Length:");
            if (cl) clen = atol(cl + 17);
            h->in[head_len - 1] = saved;
            if (clen < 0 || head_len + (size_t)clen > sizeof h->in - 1) {
                fprintf(stderr, "herald-load: response too big\n");
                return -1;
            }
            if (h->in_len < head_len + (size_t)clen) break;
            if (status != 201 && status != 202) {
                P->errors++;
                if (!P->first_status) P->first_status = status ? status : -1;
            }
            P->answered++;
            h->in_flight--;
            size_t used = head_len + (size_t)clen;
            memmove(h->in, h->in + used, h->in_len - used);
            h->in_len -= used;
        }
    }
}

/* Waits up to wait_ns for responses and writability, then reads and writes. */
static int hpub_poll(struct hpub *P, struct pollfd *pfd, uint64_t wait_ns) {
    for (long i = 0; i < P->n; i++) {
        pfd[i].fd = P->conns[i].fd;
        pfd[i].events = (short)(POLLIN | (P->conns[i].out_len ? POLLOUT : 0));
        pfd[i].revents = 0;
    }
    struct timespec ts = {(time_t)(wait_ns / 1000000000u), (long)(wait_ns % 1000000000u)};
    int n = ppoll(pfd, (nfds_t)P->n, &ts, NULL);
    if (n < 0 && errno != EINTR) return -1;
    for (long i = 0; n > 0 && i < P->n; i++) {
        struct hconn *h = &P->conns[i];
        if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP))
            if (hconn_read(P, h) != 0) return -1;
        if ((pfd[i].revents & POLLOUT) && hconn_flush(h) != 0) return -1;
    }
    return 0;
}

/* Queues channel k's event on the next connection with room in its pipeline
 * (round robin), so that one busy channel is not held to one connection's
 * request-response pace; events of a channel may then reach nchan out of
 * order, which the subscribers count as "reordered", not as loss. Returns 1
 * when every pipeline is full, -1 on error. */
static int hpub_send(struct hpub *P, long k, const char *body, size_t len) {
    for (long tries = 0; tries < P->n; tries++) {
        struct hconn *h = &P->conns[P->next];
        P->next = (P->next + 1) % P->n;
        if (h->in_flight >= P->o->pipeline) continue;
        if (hconn_queue(P, h, k, body, len) != 0) return -1;
        return hconn_flush(h) == 0 ? 0 : -1;
    }
    return 1;
}

static long hpub_pending(const struct hpub *P) {
    long pending = 0;
    for (long i = 0; i < P->n; i++) pending += P->conns[i].in_flight;
    return pending;
}

/* POSTs o->rate events a second to nchan for o->duration seconds, round-robin
 * over the channels, then one end marker per channel; as run_publish, but the
 * lag behind the schedule also grows when nchan does not answer fast enough. */
static int run_publish_http(const struct options *o) {
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    if (inet_pton(AF_INET, o->host, &target.sin_addr) != 1) {
        fprintf(stderr, "herald-load: bad --host %s\n", o->host);
        return 2;
    }
    struct hpub P = {.o = o, .n = o->http_conns};
    P.conns = calloc((size_t)P.n, sizeof *P.conns);
    struct pollfd *pfd = calloc((size_t)P.n, sizeof *pfd);
    uint64_t *seq = calloc((size_t)o->channels, sizeof *seq);
    if (!P.conns || !pfd || !seq) return 1;
    int one = 1, rc = 1;
    for (long i = 0; i < P.n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        P.conns[i].fd = fd;
        if (fd < 0 || connect(fd, (struct sockaddr *)&target, sizeof target) != 0) {
            fprintf(stderr, "herald-load: connect %s:%d: %s\n", o->host, o->port, strerror(errno));
            goto out;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (evutil_make_socket_nonblocking(fd) != 0) goto out;
    }

    uint64_t sent = 0;
    double max_lag = 0;
    char payload[MAX_PAYLOAD];
    uint64_t start = now_ns(CLOCK_MONOTONIC), start_real = now_ns(CLOCK_REALTIME);
    for (;;) {
        double elapsed = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;
        if (stop_requested || elapsed >= o->duration) break;
        uint64_t due = (uint64_t)(elapsed * o->rate) + 1;
        bool full = false;
        while (sent < due) {
            long k = (long)(sent % (uint64_t)o->channels);
            size_t len = make_payload(o, payload, seq[k] + 1, k);
            int r = hpub_send(&P, k, payload, len);
            if (r < 0) goto out;
            if (r > 0) {
                full = true;
                break;
            }
            seq[k]++;
            sent++;
        }
        if (due > sent) {
            double lag = elapsed - (double)sent / o->rate;
            if (lag > max_lag) max_lag = lag;
        }
        /* Until the next event is due (at least 200 us), or a response when blocked. */
        uint64_t next = start + (uint64_t)((double)sent / o->rate * 1e9);
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        uint64_t wait = full ? 5000000 : (next > now + 200000 ? next - now : 200000);
        if (hpub_poll(&P, pfd, wait) != 0) goto out;
    }
    double elapsed = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;
    /* Every event answered (so stored in order before them), then the end
     * markers, then their answers. */
    uint64_t deadline = now_ns(CLOCK_MONOTONIC) + 60 * UINT64_C(1000000000);
    while (hpub_pending(&P) > 0)
        if (now_ns(CLOCK_MONOTONIC) > deadline || hpub_poll(&P, pfd, 5000000) != 0) goto out;
    for (long k = 0; k < o->channels;) {
        size_t len = make_end_marker(payload, seq[k], k);
        int r = hpub_send(&P, k, payload, len);
        if (r < 0) goto out;
        if (r == 0) {
            k++;
            continue;
        }
        if (now_ns(CLOCK_MONOTONIC) > deadline || hpub_poll(&P, pfd, 5000000) != 0) goto out;
    }
    while (hpub_pending(&P) > 0)
        if (now_ns(CLOCK_MONOTONIC) > deadline || hpub_poll(&P, pfd, 5000000) != 0) goto out;
    rc = P.errors ? 1 : 0;
    printf("mode=publish target=nchan channels=%ld rate=%.0f size=%ld duration_s=%.3f "
           "published=%llu achieved_rate=%.1f http_conns=%ld pipeline=%ld answered=%llu "
           "errors=%llu first_bad_status=%d max_lag_ms=%.3f cpu_s=%.3f start_ns=%llu\n",
           o->channels, o->rate, o->size, elapsed, (unsigned long long)sent,
           elapsed > 0 ? (double)sent / elapsed : 0.0, o->http_conns, o->pipeline,
           (unsigned long long)P.answered, (unsigned long long)P.errors, P.first_status,
           max_lag * 1e3, own_cpu_seconds(), (unsigned long long)start_real);
    fflush(stdout);
out:
    if (rc == 1 && !P.errors) fprintf(stderr, "herald-load: publishing to nchan failed\n");
    for (long i = 0; i < P.n; i++) {
        if (P.conns[i].fd >= 0) close(P.conns[i].fd);
        free(P.conns[i].out);
    }
    free(P.conns);
    free(pfd);
    free(seq);
    return rc;
}

/* ---- command line --------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: herald-load MODE [options]\n"
        "modes: connect | subscribe (alias subscribe+measure) | publish | churn\n"
        "  --host ADDR            gateway address [127.0.0.1]\n"
        "  --port N               gateway port (ws, or wss with --tls)\n"
        "  --tls                  connect with TLS (wss)\n"
        "  --sources A-B          source addresses, a range [127.0.0.2-127.0.0.20]\n"
        "  --token JWT            sent as Authorization: Bearer\n"
        "  --connections N        connect/subscribe: connections [1000]\n"
        "  --channels C           channels: connection i uses channel i %% C [1]\n"
        "  --channel-base S       channel k is S<k> [apps:bench-]\n"
        "  --duration SECONDS     run time limit (publish: publishing time) [30]\n"
        "  --procs N              client processes (raised to fit the file limit) [1]\n"
        "  --concurrency K        handshakes in flight per process (churn: connections) [256]\n"
        "  --status-file PATH     'ready ...' when all are open, 'done' when all end markers came\n"
        "  --csv PATH             subscribe: deliveries and latency per second\n"
        "  --hist PATH            latency histogram (bucket upper bound in us, count)\n"
        "  --redis URL            publish: Redis [redis://127.0.0.1:6379]\n"
        "  --prefix P             publish: Redis channel prefix [herald:]\n"
        "  --rate R               publish: events per second [1000]\n"
        "  --size BYTES           publish: payload bytes per event, padded [100]\n"
        "  --target herald|nchan  the server: Herald (default) or nginx-nchan, whose\n"
        "                         subscribers use /sub/<channel>; publish POSTs to\n"
        "                         /pub/<channel> on --host/--port\n"
        "  --http-conns N         publish to nchan: keep-alive connections [16]\n"
        "  --pipeline W           publish to nchan: requests in flight per connection [32]\n"
        "Prints one line of key=value figures; latency quantiles are bucket upper bounds.\n");
}

static int parse_sources(const char *text, struct options *o) {
    char first[64], last[64];
    const char *dash = strchr(text, '-');
    size_t n = dash ? (size_t)(dash - text) : strlen(text);
    if (n >= sizeof first) return -1;
    memcpy(first, text, n);
    first[n] = '\0';
    snprintf(last, sizeof last, "%s", dash ? dash + 1 : first);
    struct in_addr a, b;
    if (inet_pton(AF_INET, first, &a) != 1 || inet_pton(AF_INET, last, &b) != 1) return -1;
    uint32_t lo = ntohl(a.s_addr), hi = ntohl(b.s_addr);
    if (hi < lo || hi - lo >= MAX_SOURCES) return -1;
    o->source_count = 0;
    for (uint32_t ip = lo; ip <= hi; ip++) o->sources[o->source_count++].s_addr = htonl(ip);
    return 0;
}

int main(int argc, char **argv) {
    struct options o = {.host = "127.0.0.1",
                        .port = 8888,
                        .connections = 1000,
                        .channels = 1,
                        .channel_base = "apps:bench-",
                        .duration = 30,
                        .procs = 1,
                        .concurrency = 256,
                        .redis_url = "redis://127.0.0.1:6379",
                        .prefix = "herald:",
                        .rate = 1000,
                        .size = 100,
                        .http_conns = 16,
                        .pipeline = 32};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "connect") == 0)
        o.mode = MODE_CONNECT;
    else if (strcmp(mode, "subscribe") == 0 || strcmp(mode, "subscribe+measure") == 0)
        o.mode = MODE_SUBSCRIBE;
    else if (strcmp(mode, "publish") == 0)
        o.mode = MODE_PUBLISH;
    else if (strcmp(mode, "churn") == 0)
        o.mode = MODE_CHURN;
    else {
        fprintf(stderr, "herald-load: unknown mode %s\n", mode);
        usage(stderr);
        return 2;
    }
    parse_sources("127.0.0.2-127.0.0.20", &o);
    static const struct option longopts[] = {{"host", required_argument, NULL, 'H'},
                                             {"port", required_argument, NULL, 'p'},
                                             {"tls", no_argument, NULL, 'T'},
                                             {"sources", required_argument, NULL, 's'},
                                             {"token", required_argument, NULL, 't'},
                                             {"connections", required_argument, NULL, 'n'},
                                             {"channels", required_argument, NULL, 'c'},
                                             {"channel-base", required_argument, NULL, 'b'},
                                             {"duration", required_argument, NULL, 'd'},
                                             {"procs", required_argument, NULL, 'P'},
                                             {"concurrency", required_argument, NULL, 'k'},
                                             {"status-file", required_argument, NULL, 'S'},
                                             {"csv", required_argument, NULL, 'C'},
                                             {"hist", required_argument, NULL, 'h'},
                                             {"redis", required_argument, NULL, 'r'},
                                             {"prefix", required_argument, NULL, 'x'},
                                             {"rate", required_argument, NULL, 'R'},
                                             {"size", required_argument, NULL, 'z'},
                                             {"target", required_argument, NULL, 'g'},
                                             {"http-conns", required_argument, NULL, 'N'},
                                             {"pipeline", required_argument, NULL, 'W'},
                                             {"help", no_argument, NULL, '?'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
            case 'H': o.host = optarg; break;
            case 'p': o.port = atoi(optarg); break;
            case 'T': o.tls = true; break;
            case 's':
                if (parse_sources(optarg, &o) != 0) {
                    fprintf(stderr, "herald-load: bad --sources %s\n", optarg);
                    return 2;
                }
                break;
            case 't': o.token = optarg; break;
            case 'n': o.connections = atol(optarg); break;
            case 'c': o.channels = atol(optarg); break;
            case 'b': o.channel_base = optarg; break;
            case 'd': o.duration = atof(optarg); break;
            case 'P': o.procs = atoi(optarg); break;
            case 'k': o.concurrency = atol(optarg); break;
            case 'S': o.status_file = optarg; break;
            case 'C': o.csv_path = optarg; break;
            case 'h': o.hist_path = optarg; break;
            case 'r': o.redis_url = optarg; break;
            case 'x': o.prefix = optarg; break;
            case 'R': o.rate = atof(optarg); break;
            case 'z': o.size = atol(optarg); break;
            case 'N': o.http_conns = atol(optarg); break;
            case 'W': o.pipeline = atol(optarg); break;
            case 'g':
                if (strcmp(optarg, "herald") == 0)
                    o.target = TARGET_HERALD;
                else if (strcmp(optarg, "nchan") == 0)
                    o.target = TARGET_NCHAN;
                else {
                    fprintf(stderr, "herald-load: --target is herald or nchan\n");
                    return 2;
                }
                break;
            default: usage(stderr); return 2;
        }
    }
    if (o.port <= 0 || o.port > 65535 || o.connections < 0 || o.channels < 1 || o.duration <= 0 ||
        o.procs < 1 || o.procs > MAX_PROCS || o.concurrency < 1 || o.rate <= 0 ||
        o.duration > MAX_SECONDS || o.size < 0 || o.size > MAX_PAYLOAD - 64 || o.http_conns < 1 ||
        o.http_conns > 4096 || o.pipeline < 1 ||
        (o.target == TARGET_NCHAN && (o.mode == MODE_CHURN || o.tls))) {
        fprintf(stderr, "herald-load: an option is out of range\n");
        usage(stderr);
        return 2;
    }
    if (o.mode == MODE_PUBLISH)
        return o.target == TARGET_NCHAN ? run_publish_http(&o) : run_publish(&o);
    return run_clients(&o);
}
