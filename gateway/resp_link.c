/* resp_link.c -- one asynchronous connection to one Redis node (libevent);
 * see resp_link.h for why it exists and which hiredis pieces it uses. */
#include "resp_link.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "clock.h"
#include "reply_arena.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_MAX_OUTPUT_BYTES   ((size_t)64 << 20)
#define READ_CHUNK                 16384 /* bytes asked of one recv */

/* The pub/sub notices of RESP2, by their first element. */
enum push_kind {
    PUSH_NONE = -1,
    PUSH_SUBSCRIBE,
    PUSH_SSUBSCRIBE,
    PUSH_PSUBSCRIBE,
    PUSH_UNSUBSCRIBE,
    PUSH_SUNSUBSCRIBE,
    PUSH_PUNSUBSCRIBE,
    PUSH_MESSAGE,
    PUSH_SMESSAGE,
    PUSH_PMESSAGE,
};
static const char *const push_names[] = {
    "subscribe",    "ssubscribe", "psubscribe", "unsubscribe", "sunsubscribe",
    "punsubscribe", "message",    "smessage",   "pmessage",
};
#define PUSH_FIRST_MESSAGE PUSH_MESSAGE /* kinds below are (un)subscribe notices */

enum pending_role { ROLE_COMMAND, ROLE_AUTH, ROLE_SELECT, ROLE_SUBSCRIBE };

struct pending_channel {
    const char *name; /* points into the pending allocation */
    size_t len;
    bool confirmed;
};

/* A command sent and not yet (fully) answered. */
struct pending {
    struct pending *next;
    enum pending_role role;
    resp_link_reply_fn *cb;
    void *privdata;
    enum push_kind confirm_kind; /* ROLE_SUBSCRIBE: the notice that confirms it */
    size_t channel_count, unconfirmed;
    struct pending_channel *channels;
};

struct resp_link {
    struct event_base *base;
    struct bufferevent *bev; /* NULL once down; writes, connect, write errors */
    struct event *read_ev;   /* reads once connected (persistent), NULL before and once down */
    redisReader *reader;
    struct reply_arena *arena; /* the reader's replies; emptied after each is handed on */
    struct event *timeout_ev;  /* connect + handshake deadline */
    struct event *down_ev;     /* reports the loss from the loop */
    struct event *resume_ev;   /* ends a read pause (resp_link_set_read_coalesce) */
    double coalesce;           /* seconds a read pause lasts; 0: no pauses */
    double last_read;          /* monotonic seconds of the last read */
    struct resp_link_callbacks cb;
    char *host, *user, *password;
    int port, db, connect_timeout_ms;
    size_t max_output_bytes;
    enum resp_link_state state;
    struct pending *head, *tail;
    size_t pending_user; /* pending entries that are not AUTH/SELECT */
    size_t handshake_left;
    bool subscriber;
    bool in_callback; /* a callback of ours is running: free() must wait */
    bool freed;       /* resp_link_free was called inside a callback */
    char down_reason[256];
};

static void set_err(char *err, size_t err_size, const char *fmt, const char *detail) {
    if (err && err_size) snprintf(err, err_size, fmt, detail);
}

static void pending_pop(struct resp_link *link) {
    struct pending *p = link->head;
    link->head = p->next;
    if (!link->head) link->tail = NULL;
    if (p->role == ROLE_COMMAND || p->role == ROLE_SUBSCRIBE) link->pending_user--;
    free(p);
}

static void destroy(struct resp_link *link) {
    while (link->head) {
        if (link->cb.drop && link->head->cb) link->cb.drop(link->head->privdata);
        pending_pop(link);
    }
    if (link->read_ev) event_free(link->read_ev);
    if (link->bev) bufferevent_free(link->bev);
    reply_arena_free(link->reader, link->arena);
    if (link->timeout_ev) event_free(link->timeout_ev);
    if (link->down_ev) event_free(link->down_ev);
    if (link->resume_ev) event_free(link->resume_ev);
    free(link->host);
    free(link->user);
    free(link->password);
    free(link);
}

/* Runs after every callback: true when the callback freed the link (now gone). */
static bool gone_after_callback(struct resp_link *link) {
    link->in_callback = false;
    if (!link->freed) return false;
    destroy(link);
    return true;
}

/* Marks the link lost and schedules the report; safe from anywhere. */
static void lose(struct resp_link *link, const char *reason) {
    if (link->state == RESP_LINK_DOWN) return;
    link->state = RESP_LINK_DOWN;
    snprintf(link->down_reason, sizeof(link->down_reason), "%s", reason);
    if (link->read_ev) {
        event_free(link->read_ev);
        link->read_ev = NULL;
    }
    if (link->bev) {
        bufferevent_free(link->bev);
        link->bev = NULL;
    }
    evtimer_del(link->timeout_ev);
    if (link->resume_ev) evtimer_del(link->resume_ev);
    event_active(link->down_ev, 0, 0);
}

static void on_down_event(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct resp_link *link = arg;
    while (link->head) {
        struct pending *p = link->head;
        resp_link_reply_fn *cb = p->cb;
        void *privdata = p->privdata;
        pending_pop(link);
        if (!cb) continue;
        link->in_callback = true;
        cb(link, NULL, privdata);
        if (gone_after_callback(link)) return;
    }
    if (link->cb.on_down) {
        link->in_callback = true;
        link->cb.on_down(link, link->down_reason, link->cb.arg);
        gone_after_callback(link);
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    struct resp_link *link = arg;
    lose(link,
         link->handshake_left ? "connect timeout (no answer to AUTH/SELECT)" : "connect timeout");
}

/* Calls on_up; false when the callback freed the link. */
static bool become_up(struct resp_link *link) {
    link->state = RESP_LINK_UP;
    evtimer_del(link->timeout_ev);
    if (!link->cb.on_up) return true;
    link->in_callback = true;
    link->cb.on_up(link, link->cb.arg);
    return !gone_after_callback(link);
}

static enum push_kind push_kind_of(const redisReply *r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return PUSH_NONE;
    enum push_kind kind = PUSH_NONE;
    for (size_t i = 0; i < sizeof(push_names) / sizeof(push_names[0]); i++) {
        if (r->element[0]->len == strlen(push_names[i]) &&
            memcmp(r->element[0]->str, push_names[i], r->element[0]->len) == 0) {
            kind = (enum push_kind)i;
            break;
        }
    }
    if (kind == PUSH_NONE) return PUSH_NONE;
    size_t expect = kind == PUSH_PMESSAGE ? 4 : 3;
    if (r->elements != expect) return PUSH_NONE;
    if (kind >= PUSH_FIRST_MESSAGE) {
        for (size_t i = 1; i < expect; i++)
            if (r->element[i]->type != REDIS_REPLY_STRING) return PUSH_NONE;
        return kind;
    }
    /* [kind, channel or nil, subscription count] */
    if ((r->element[1]->type != REDIS_REPLY_STRING && r->element[1]->type != REDIS_REPLY_NIL) ||
        r->element[2]->type != REDIS_REPLY_INTEGER)
        return PUSH_NONE;
    return kind;
}

/* A notice confirming the head command's channel: marks it; true when that
 * was the command's last confirmation (the entry is then due). */
static bool confirms_head(struct resp_link *link, enum push_kind kind, const redisReply *r) {
    struct pending *p = link->head;
    if (!p || p->role != ROLE_SUBSCRIBE || p->confirm_kind != kind ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return false;
    for (size_t i = 0; i < p->channel_count; i++) {
        struct pending_channel *c = &p->channels[i];
        if (!c->confirmed && c->len == r->element[1]->len &&
            memcmp(c->name, r->element[1]->str, c->len) == 0) {
            c->confirmed = true;
            return --p->unconfirmed == 0;
        }
    }
    return false;
}

/* Hands one reply to its owner; false when the link is gone or down. */
static bool dispatch(struct resp_link *link, redisReply *reply) {
    enum push_kind kind = link->subscriber ? push_kind_of(reply) : PUSH_NONE;
    if (kind != PUSH_NONE) {
        bool completes = kind < PUSH_FIRST_MESSAGE && confirms_head(link, kind, reply);
        if (link->cb.on_push) {
            link->in_callback = true;
            link->cb.on_push(link, reply, link->cb.arg);
            if (gone_after_callback(link)) return false;
            if (link->state == RESP_LINK_DOWN) return false;
        }
        if (!completes) return true;
    }
    struct pending *p = link->head;
    if (!p) {
        lose(link, "protocol error: a reply nobody asked for");
        return false;
    }
    enum pending_role role = p->role;
    resp_link_reply_fn *cb = p->cb;
    void *privdata = p->privdata;
    pending_pop(link);
    if (role == ROLE_AUTH || role == ROLE_SELECT) {
        if (reply->type == REDIS_REPLY_ERROR ||
            (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") != 0)) {
            char reason[200];
            snprintf(reason, sizeof(reason), "%s refused: %.160s",
                     role == ROLE_AUTH ? "AUTH" : "SELECT", reply->str ? reply->str : "");
            lose(link, reason);
            return false;
        }
        if (--link->handshake_left == 0) return become_up(link);
        return true;
    }
    if (!cb) return true;
    link->in_callback = true;
    cb(link, reply, privdata);
    if (gone_after_callback(link)) return false;
    return link->state != RESP_LINK_DOWN;
}

/* Hands every complete reply the reader holds to its owner. */
static void process_replies(struct resp_link *link) {
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(link->reader, &reply) != REDIS_OK) {
            char reason[200];
            snprintf(reason, sizeof(reason), "protocol error: %.150s", link->reader->errstr);
            lose(link, reason);
            return;
        }
        if (!reply) return;
        if (!dispatch(link, reply)) return; /* the link may be gone, its arena with it */
        reply_arena_reset(link->arena);
    }
}

/* Bytes the bufferevent read (before the link was connected). */
static void on_read(struct bufferevent *bev, void *arg) {
    struct resp_link *link = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec vec[8];
        int n = evbuffer_peek(in, -1, NULL, vec, 8);
        size_t fed = 0;
        for (int i = 0; i < n && i < 8; i++) {
            if (redisReaderFeed(link->reader, vec[i].iov_base, vec[i].iov_len) != REDIS_OK) {
                lose(link, "out of memory reading a reply");
                return;
            }
            fed += vec[i].iov_len;
        }
        evbuffer_drain(in, fed);
    }
    process_replies(link);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct resp_link *link = arg;
    if (link->read_ev && event_add(link->read_ev, NULL) != 0) lose(link, "cannot watch the socket");
}

/* Read coalescing: a read that comes less than two pauses after the one
 * before it means replies arrive faster than one per pause, so the link stops
 * watching its socket for one pause and the next read takes everything that
 * arrived meanwhile. Under load a wake-up, an epoll_wait and a recv then serve
 * a batch instead of one reply each; a quiet link is read the moment data
 * comes. Decided before the replies are handed on (a callback may free the
 * link). */
static void maybe_pause(struct resp_link *link) {
    if (link->coalesce <= 0) return;
    double now = clock_now();
    bool busy = now - link->last_read < 2 * link->coalesce;
    link->last_read = now;
    if (!busy) return;
    long us = (long)(link->coalesce * 1e6);
    struct timeval tv = {us / 1000000, us % 1000000};
    if (event_del(link->read_ev) == 0 && evtimer_add(link->resume_ev, &tv) != 0)
        (void)event_add(link->read_ev, NULL); /* no pause then */
}

/* Once connected, replies are read here: one recv straight into the reader
 * per readiness. A bufferevent read asks the kernel how much is readable
 * first (an ioctl per read) and copies through its own buffer; on the
 * subscriber link that was one extra syscall per read, i.e. per few events. */
static void on_socket_read(evutil_socket_t fd, short what, void *arg) {
    (void)what;
    struct resp_link *link = arg;
    char buf[READ_CHUNK];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) {
        lose(link, "connection closed by the server");
        return;
    }
    if (n < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR) return;
        char reason[200];
        snprintf(reason, sizeof(reason), "connection error: %s", strerror(e));
        lose(link, reason);
        return;
    }
    if (redisReaderFeed(link->reader, buf, (size_t)n) != REDIS_OK) {
        lose(link, "out of memory reading a reply");
        return;
    }
    maybe_pause(link);
    process_replies(link);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
    struct resp_link *link = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        evutil_socket_t fd = bufferevent_getfd(bev);
        if (fd >= 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* From here on the link reads on its own event (on_socket_read). */
        link->read_ev =
            fd >= 0 ? event_new(link->base, fd, EV_READ | EV_PERSIST, on_socket_read, link) : NULL;
        if (!link->read_ev || event_add(link->read_ev, NULL) != 0 ||
            bufferevent_disable(bev, EV_READ) != 0) {
            lose(link, "out of memory reading a reply");
            return;
        }
        if (link->handshake_left == 0) become_up(link);
        return;
    }
    char reason[200];
    if (what & BEV_EVENT_EOF) {
        snprintf(reason, sizeof(reason), "connection closed by the server");
    } else {
        int e = EVUTIL_SOCKET_ERROR();
        snprintf(reason, sizeof(reason), "%s: %s",
                 link->state == RESP_LINK_CONNECTING ? "connect failed" : "connection error",
                 e ? evutil_socket_error_to_string(e) : "unknown error");
    }
    lose(link, reason);
}

/* Appends a pending entry; its channels (for subscribe commands) are copied. */
static struct pending *pending_push(struct resp_link *link, enum pending_role role,
                                    resp_link_reply_fn *cb, void *privdata, int argc,
                                    const char **argv, const size_t *argvlen) {
    size_t count = role == ROLE_SUBSCRIBE ? (size_t)argc - 1 : 0, bytes = 0;
    for (size_t i = 0; i < count; i++) bytes += argvlen[i + 1];
    struct pending *p = malloc(sizeof(*p) + count * sizeof(struct pending_channel) + bytes);
    if (!p) return NULL;
    memset(p, 0, sizeof(*p));
    p->role = role;
    p->cb = cb;
    p->privdata = privdata;
    p->channel_count = p->unconfirmed = count;
    p->channels = (struct pending_channel *)(p + 1);
    char *names = (char *)(p->channels + count);
    for (size_t i = 0; i < count; i++) {
        memcpy(names, argv[i + 1], argvlen[i + 1]);
        p->channels[i] = (struct pending_channel){names, argvlen[i + 1], false};
        names += argvlen[i + 1];
    }
    if (link->tail)
        link->tail->next = p;
    else
        link->head = p;
    link->tail = p;
    if (role == ROLE_COMMAND || role == ROLE_SUBSCRIBE) link->pending_user++;
    return p;
}

/* Formats and writes one command; 0, or -1 (out of memory, or the output limit:
 * the link is then lost). */
static int write_command(struct resp_link *link, int argc, const char **argv,
                         const size_t *argvlen) {
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) return -1;
    int rc = bufferevent_write(link->bev, cmd, (size_t)len);
    redisFreeCommand(cmd);
    if (rc != 0) {
        lose(link, "out of memory writing a command");
        return -1;
    }
    if (evbuffer_get_length(bufferevent_get_output(link->bev)) > link->max_output_bytes) {
        lose(link, "output limit passed (the node does not read fast enough)");
        return -1;
    }
    return 0;
}

static enum push_kind subscribe_kind(const char *name, size_t len) {
    for (int k = PUSH_SUBSCRIBE; k < PUSH_FIRST_MESSAGE; k++)
        if (len == strlen(push_names[k]) && strncasecmp(name, push_names[k], len) == 0)
            return (enum push_kind)k;
    return PUSH_NONE;
}

int resp_link_command_argv(struct resp_link *link, resp_link_reply_fn *cb, void *privdata, int argc,
                           const char **argv, const size_t *argvlen) {
    if (link->state == RESP_LINK_DOWN || argc < 1) return -1;
    size_t lens_buf[8], *lens = lens_buf;
    if (!argvlen) {
        if ((size_t)argc > sizeof(lens_buf) / sizeof(lens_buf[0])) {
            lens = malloc((size_t)argc * sizeof(*lens));
            if (!lens) return -1;
        }
        for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
        argvlen = lens;
    }
    int rc = -1;
    enum push_kind kind = subscribe_kind(argv[0], argvlen[0]);
    if (kind != PUSH_NONE && argc < 2) goto out; /* the count of confirmations is unknown */
    struct pending *p = pending_push(link, kind != PUSH_NONE ? ROLE_SUBSCRIBE : ROLE_COMMAND, cb,
                                     privdata, argc, argv, argvlen);
    if (!p) goto out;
    p->confirm_kind = kind;
    if (write_command(link, argc, argv, argvlen) < 0) {
        /* Not sent (or the link is lost with it): drop the entry we just added. */
        struct pending **pp = &link->head, *prev = NULL;
        while (*pp != p) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = NULL;
        link->tail = prev;
        link->pending_user--;
        free(p);
        goto out;
    }
    if (kind != PUSH_NONE) link->subscriber = true;
    rc = 0;
out:
    if (lens != lens_buf) free(lens);
    return rc;
}

static int connect_to(struct resp_link *link, char *err, size_t err_size) {
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof(port), "%d", link->port);
    int gai = getaddrinfo(link->host, port, &hints, &res);
    if (gai != 0 || !res) {
        set_err(err, err_size, "cannot resolve the Redis host: %s", gai_strerror(gai));
        return -1;
    }
    link->bev = bufferevent_socket_new(link->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!link->bev) {
        freeaddrinfo(res);
        set_err(err, err_size, "%s", "out of memory");
        return -1;
    }
    bufferevent_setcb(link->bev, on_read, NULL, on_event, link);
    if (bufferevent_enable(link->bev, EV_READ | EV_WRITE) != 0) {
        freeaddrinfo(res);
        set_err(err, err_size, "%s", "cannot enable the Redis connection");
        return -1;
    }
    int rc = bufferevent_socket_connect(link->bev, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0) lose(link, "connect failed: cannot open a socket");
    return 0;
}

static char *dup_or_null(const char *s, bool *failed) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *failed = true;
    return d;
}

struct resp_link *resp_link_new(struct event_base *base, const struct resp_link_options *opts,
                                const struct resp_link_callbacks *callbacks, char *err,
                                size_t err_size) {
    if (!opts->host || !opts->host[0] || opts->port < 1 || opts->port > 65535 || opts->db < 0) {
        set_err(err, err_size, "%s", "bad Redis address or db");
        return NULL;
    }
    struct resp_link *link = calloc(1, sizeof(*link));
    if (!link) {
        set_err(err, err_size, "%s", "out of memory");
        return NULL;
    }
    bool failed = false;
    link->base = base;
    if (callbacks) link->cb = *callbacks;
    link->host = dup_or_null(opts->host, &failed);
    link->user = dup_or_null(opts->user, &failed);
    link->password = dup_or_null(opts->password, &failed);
    link->port = opts->port;
    link->db = opts->db;
    link->connect_timeout_ms =
        opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    link->max_output_bytes =
        opts->max_output_bytes ? opts->max_output_bytes : DEFAULT_MAX_OUTPUT_BYTES;
    link->state = RESP_LINK_CONNECTING;
    link->reader = reply_arena_reader_new(&link->arena);
    link->timeout_ev = evtimer_new(base, on_timeout, link);
    link->down_ev = event_new(base, -1, 0, on_down_event, link);
    link->resume_ev = evtimer_new(base, on_resume, link);
    if (failed || !link->reader || !link->timeout_ev || !link->down_ev || !link->resume_ev) {
        set_err(err, err_size, "%s", "out of memory");
        destroy(link);
        return NULL;
    }
    struct timeval tv = {link->connect_timeout_ms / 1000, (link->connect_timeout_ms % 1000) * 1000};
    if (evtimer_add(link->timeout_ev, &tv) != 0 || connect_to(link, err, err_size) < 0) {
        if (err && err_size && !err[0]) set_err(err, err_size, "%s", "cannot start connecting");
        destroy(link);
        return NULL;
    }
    if (link->state == RESP_LINK_DOWN) return link; /* reported from the loop */

    /* The handshake goes first, ahead of anything the owner queues. */
    char db[16];
    snprintf(db, sizeof(db), "%d", link->db);
    const char *auth[3] = {"AUTH", link->user ? link->user : link->password, link->password};
    const char *select[2] = {"SELECT", db};
    if (link->password) {
        if (!pending_push(link, ROLE_AUTH, NULL, NULL, 0, NULL, NULL) ||
            write_command(link, link->user ? 3 : 2, auth, NULL) < 0)
            goto handshake_failed;
        link->handshake_left++;
    }
    if (link->db != 0) {
        if (!pending_push(link, ROLE_SELECT, NULL, NULL, 0, NULL, NULL) ||
            write_command(link, 2, select, NULL) < 0)
            goto handshake_failed;
        link->handshake_left++;
    }
    return link;
handshake_failed:
    set_err(err, err_size, "%s", "out of memory");
    destroy(link);
    return NULL;
}

void resp_link_free(struct resp_link *link) {
    if (!link) return;
    if (link->in_callback) {
        /* Our caller is one of the link's callbacks: stop everything now, free on return. */
        link->freed = true;
        link->state = RESP_LINK_DOWN;
        if (link->read_ev) event_del(link->read_ev);
        if (link->bev) {
            bufferevent_free(link->bev);
            link->bev = NULL;
        }
        evtimer_del(link->timeout_ev);
        evtimer_del(link->resume_ev);
        event_del(link->down_ev);
        return;
    }
    destroy(link);
}

enum resp_link_state resp_link_state(const struct resp_link *link) {
    return link->state;
}

const char *resp_link_host(const struct resp_link *link) {
    return link->host;
}

int resp_link_port(const struct resp_link *link) {
    return link->port;
}

size_t resp_link_pending(const struct resp_link *link) {
    return link->pending_user;
}

size_t resp_link_output_bytes(const struct resp_link *link) {
    return link->bev ? evbuffer_get_length(bufferevent_get_output(link->bev)) : 0;
}

void resp_link_set_read_coalesce(struct resp_link *link, int ms) {
    link->coalesce = ms > 0 ? ms / 1000.0 : 0;
}

bool resp_link_is_subscriber(const struct resp_link *link) {
    return link->subscriber;
}
