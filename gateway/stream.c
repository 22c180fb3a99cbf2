/* stream.c -- plain sockets with write-through output; TLS through
 * bufferevent_openssl. */
#include "stream.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"

#define READ_CHUNK   4096  /* bytes asked of one read */
#define READ_BUDGET  65536 /* bytes read per callback before others get a turn */
#define WRITE_IOVECS 128   /* pieces handed to one sendmsg */
#define FIRST_PIECES 16    /* a queue's first allocation, in pieces */

/* A piece of queued output: the rest of a shared frame (a reference, released
 * once written) or bytes the stream copied (owned, freed once written). A
 * backed-up client of a busy channel queues one piece per batch and no
 * allocation, where an evbuffer allocates a chain per reference. */
struct piece {
    const uint8_t *data;
    size_t len;
    struct shared_frame *frame; /* NULL: data is in owned, a copy */
    void *owned;
};

/* Output a plain socket could not take yet, oldest first: a ring of pieces,
 * allocated when a backlog starts and freed when it is gone. */
struct out_queue {
    struct piece *pieces;
    size_t head, count, capacity;
    size_t bytes;
};

struct stream {
    struct stream_callbacks cbs;
    struct bufferevent *bev; /* TLS; NULL for a plain socket */
    /* Plain socket. */
    struct event *ev; /* EV_READ | EV_WRITE | EV_ET | EV_PERSIST, registered once */
    struct evbuffer *in;
    struct out_queue out;
    evutil_socket_t fd;
    size_t read_limit;
    double write_progress;
    bool failed;      /* the socket failed or hit EOF: report closed, move nothing */
    bool reported;    /* closed was reported */
    bool watch_drain; /* report drained once out is empty */
    bool dispatching; /* inside a callback to the owner */
    bool freed;       /* stream_free ran during a callback: finish it after */
};

static bool would_block(void) {
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Something to report from the loop, not from inside the owner's send. */
static void report_later(struct stream *s) {
    event_active(s->ev, EV_WRITE, 0);
}

static void fail(struct stream *s) {
    if (s->failed) return;
    s->failed = true;
    if (!s->dispatching) report_later(s); /* else plain_cb reports it on return */
}

static void piece_release(struct piece *p) {
    if (p->frame)
        shared_frame_release(p->frame);
    else
        free(p->owned);
}

static struct piece *queue_at(struct out_queue *q, size_t i) {
    return &q->pieces[(q->head + i) % q->capacity];
}

/* Adds a piece at the end (taking over its reference or copy); -1 when out of
 * memory (the caller still owns them). */
static int queue_push(struct out_queue *q, struct piece piece) {
    if (q->count == q->capacity) {
        size_t capacity = q->capacity ? q->capacity * 2 : FIRST_PIECES;
        struct piece *grown = malloc(capacity * sizeof *grown);
        if (!grown) return -1;
        for (size_t i = 0; i < q->count; i++) grown[i] = *queue_at(q, i);
        free(q->pieces);
        q->pieces = grown;
        q->capacity = capacity;
        q->head = 0;
    }
    q->pieces[(q->head + q->count) % q->capacity] = piece;
    q->count++;
    q->bytes += piece.len;
    return 0;
}

/* Drops n written bytes from the front. */
static void queue_consume(struct out_queue *q, size_t n) {
    q->bytes -= n;
    while (n > 0) {
        struct piece *p = queue_at(q, 0);
        if (n < p->len) {
            p->data += n;
            p->len -= n;
            return;
        }
        n -= p->len;
        piece_release(p);
        q->head = (q->head + 1) % q->capacity;
        q->count--;
    }
    if (q->count == 0) { /* the backlog is gone: so is its memory */
        free(q->pieces);
        *q = (struct out_queue){0};
    }
}

static void queue_clear(struct out_queue *q) {
    for (size_t i = 0; i < q->count; i++) piece_release(queue_at(q, i));
    free(q->pieces);
    *q = (struct out_queue){0};
}

/* Queues len bytes the stream owns from now on (freed if they cannot be queued). */
static int queue_owned(struct out_queue *q, void *copy, size_t len) {
    if (queue_push(q, (struct piece){copy, len, NULL, copy}) == 0) return 0;
    free(copy);
    return -1;
}

/* Queues a copy of len bytes. */
static int queue_copy(struct out_queue *q, const void *data, size_t len) {
    void *copy = malloc(len);
    if (!copy) return -1;
    memcpy(copy, data, len);
    return queue_owned(q, copy, len);
}

/* Writes what is queued until it is all written or the kernel takes less than
 * offered (its buffer is full: an edge follows), WRITE_IOVECS pieces per
 * sendmsg. */
static void flush(struct stream *s) {
    struct out_queue *q = &s->out;
    while (!s->failed && q->count > 0) {
        struct iovec iov[WRITE_IOVECS];
        size_t n = q->count < WRITE_IOVECS ? q->count : WRITE_IOVECS, offered = 0;
        for (size_t i = 0; i < n; i++) {
            struct piece *p = queue_at(q, i);
            iov[i].iov_base = (void *)p->data;
            iov[i].iov_len = p->len;
            offered += p->len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t sent = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (!would_block()) fail(s);
            return;
        }
        queue_consume(q, (size_t)sent);
        s->write_progress = clock_now();
        if ((size_t)sent < offered) return;
    }
}

/* Reads until the socket has nothing more, the input is at its limit or this
 * turn's budget is spent; reports each read to the owner. Returns false when
 * the owner freed the stream. */
static bool read_some(struct stream *s) {
    size_t total = 0;
    while (!s->failed) {
        size_t have = evbuffer_get_length(s->in);
        if (have >= s->read_limit) return true; /* the owner drains complete frames */
        size_t want = s->read_limit - have < READ_CHUNK ? s->read_limit - have : READ_CHUNK;
        struct evbuffer_iovec vec;
        if (evbuffer_reserve_space(s->in, (ev_ssize_t)want, &vec, 1) < 1) {
            fail(s);
            return true;
        }
        ssize_t n = recv(s->fd, vec.iov_base, want, 0);
        if (n < 0) {
            if (!would_block()) fail(s);
            return true;
        }
        if (n == 0) {
            fail(s); /* end of stream */
            return true;
        }
        vec.iov_len = (size_t)n;
        evbuffer_commit_space(s->in, &vec, 1);
        s->cbs.read(s->cbs.arg);
        if (s->freed) return false;
        total += (size_t)n;
        if ((size_t)n < want) return true; /* drained: the next bytes bring an edge */
        if (total >= READ_BUDGET) {
            event_active(s->ev, EV_READ, 0);
            return true;
        }
    }
    return true;
}

static void plain_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    struct stream *s = arg;
    s->dispatching = true;
    if (what & EV_READ) {
        if (!read_some(s)) goto freed;
    }
    if (what & EV_WRITE) flush(s);
    if (s->failed) {
        if (s->reported) {
            s->dispatching = false;
            return;
        }
        s->reported = true;
        s->cbs.closed(s->cbs.arg);
        if (s->freed) goto freed;
        s->dispatching = false;
        return;
    }
    if (s->watch_drain && s->out.count == 0) {
        s->watch_drain = false;
        s->cbs.drained(s->cbs.arg);
        if (s->freed) goto freed;
    }
    s->dispatching = false;
    return;
freed:
    s->dispatching = false;
    stream_free(s);
}

/* ---- TLS: bufferevent callbacks forwarded ---------------------------------- */

static void tls_read_cb(struct bufferevent *bev, void *arg) {
    (void)bev;
    struct stream *s = arg;
    s->cbs.read(s->cbs.arg);
}

static void tls_write_cb(struct bufferevent *bev, void *arg) {
    struct stream *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) s->cbs.drained(s->cbs.arg);
}

static void tls_event_cb(struct bufferevent *bev, short what, void *arg) {
    (void)bev;
    struct stream *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) s->cbs.closed(s->cbs.arg);
}

/* Notes when queued output moves, for the write timeout. */
static void tls_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg) {
    (void)buf;
    struct stream *s = arg;
    if (info->n_deleted > 0 || (info->n_added > 0 && info->orig_size == 0))
        s->write_progress = clock_now();
}

/* ---- the interface ---------------------------------------------------------- */

struct stream *stream_new(struct event_base *base, evutil_socket_t fd, SSL *ssl, size_t read_limit,
                          const struct stream_callbacks *cbs) {
    struct stream *s = calloc(1, sizeof *s);
    if (!s) goto fail;
    s->cbs = *cbs;
    s->fd = fd;
    s->read_limit = read_limit;
    s->write_progress = clock_now();
    if (ssl) {
        s->bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (!s->bev) goto fail;
        ssl = NULL; /* the bufferevent owns it, and fd */
        fd = -1;
        bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
        /* Input never holds more than one incomplete frame plus one read. */
        bufferevent_setwatermark(s->bev, EV_READ, 0, read_limit);
        bufferevent_setcb(s->bev, tls_read_cb, tls_write_cb, tls_event_cb, s);
        if (!evbuffer_add_cb(bufferevent_get_output(s->bev), tls_output_cb, s) ||
            bufferevent_enable(s->bev, EV_READ | EV_WRITE) != 0)
            goto fail;
        return s;
    }
    s->in = evbuffer_new();
    s->ev = event_new(base, fd, EV_READ | EV_WRITE | EV_ET | EV_PERSIST, plain_cb, s);
    if (!s->in || !s->ev || event_add(s->ev, NULL) != 0) goto fail;
    return s;
fail:
    if (s) {
        s->fd = fd;
        stream_free(s);
    } else if (fd >= 0) {
        evutil_closesocket(fd);
    }
    if (ssl) SSL_free(ssl);
    return NULL;
}

void stream_free(struct stream *s) {
    if (!s) return;
    if (s->dispatching) { /* plain_cb finishes it */
        s->freed = true;
        return;
    }
    if (s->bev) {
        bufferevent_free(s->bev);
    } else {
        if (s->ev) event_free(s->ev);
        if (s->in) evbuffer_free(s->in);
        queue_clear(&s->out);
        if (s->fd >= 0) evutil_closesocket(s->fd);
    }
    free(s);
}

evutil_socket_t stream_fd(const struct stream *s) {
    return s->bev ? bufferevent_getfd(s->bev) : s->fd;
}

void stream_set_read_limit(struct stream *s, size_t limit) {
    s->read_limit = limit;
    if (s->bev) bufferevent_setwatermark(s->bev, EV_READ, 0, limit);
}

struct evbuffer *stream_input(struct stream *s) {
    return s->bev ? bufferevent_get_input(s->bev) : s->in;
}

size_t stream_queued(const struct stream *s) {
    return s->bev ? evbuffer_get_length(bufferevent_get_output(s->bev)) : s->out.bytes;
}

double stream_write_progress(const struct stream *s) {
    return s->write_progress;
}

/* Writes up to len bytes at once when nothing is queued; returns how many the
 * kernel took (0 when it would block or the stream failed). */
static size_t write_through(struct stream *s, const void *data, size_t len) {
    if (s->failed) return len; /* dropped: the stream is closing */
    if (s->out.count > 0) return 0;
    ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) return (size_t)n;
    if (!would_block()) {
        fail(s);
        return len;
    }
    return 0;
}

/* Notes the queue becoming non-empty, for the write timeout. */
static void queued_from_empty(struct stream *s, size_t before) {
    if (before == 0 && s->out.bytes > 0) s->write_progress = clock_now();
}

int stream_send(struct stream *s, const void *data, size_t len) {
    if (s->bev) return bufferevent_write(s->bev, data, len);
    size_t done = write_through(s, data, len);
    if (done == len) return 0;
    size_t before = s->out.bytes;
    if (queue_copy(&s->out, (const char *)data + done, len - done) != 0) return -1;
    queued_from_empty(s, before);
    return 0;
}

int stream_send_frame(struct stream *s, struct shared_frame *frame) {
    if (s->bev) return shared_frame_append(frame, bufferevent_get_output(s->bev), 0);
    size_t done = write_through(s, frame->data, frame->len);
    if (done == frame->len) return 0;
    size_t before = s->out.bytes;
    struct piece piece = {frame->data + done, frame->len - done, frame, NULL};
    frame->refs++;
    if (queue_push(&s->out, piece) != 0) {
        frame->refs--;
        return -1;
    }
    queued_from_empty(s, before);
    return 0;
}

int stream_send_buffer(struct stream *s, struct evbuffer *buf) {
    if (s->bev) return evbuffer_add_buffer(bufferevent_get_output(s->bev), buf);
    if (s->failed) {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        return 0;
    }
    size_t len = evbuffer_get_length(buf);
    if (len == 0) return 0;
    void *copy = malloc(len);
    if (!copy) return -1;
    evbuffer_remove(buf, copy, len);
    size_t before = s->out.bytes;
    if (queue_owned(&s->out, copy, len) != 0) return -1;
    if (before > 0) return 0; /* waiting for writability already */
    flush(s);
    queued_from_empty(s, 0);
    return 0;
}

void stream_watch_drain(struct stream *s) {
    if (s->bev) return; /* the bufferevent reports every flush */
    s->watch_drain = true;
    if (s->out.count == 0) report_later(s);
}

void stream_shutdown_write(struct stream *s) {
    if (!s->bev && !s->failed) shutdown(s->fd, SHUT_WR);
}
