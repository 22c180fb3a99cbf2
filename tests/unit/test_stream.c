/* test_stream.c -- plain streams over a real socket pair: output to an idle
 * stream is on the socket before the loop runs, what the kernel refuses is
 * queued and sent in order once the peer reads, shared frames stay referenced
 * while queued, and drained, closed and read are reported from the loop. */
#include <event2/buffer.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shared_frame.h"
#include "stream.h"
#include "testlib.h"

struct seen {
    int reads, drained, closed;
    struct stream *stream;
    bool free_on_close;
};

static void on_read(void *arg) {
    ((struct seen *)arg)->reads++;
}

static void on_drained(void *arg) {
    ((struct seen *)arg)->drained++;
}

static void on_closed(void *arg) {
    struct seen *seen = arg;
    seen->closed++;
    if (seen->free_on_close) {
        stream_free(seen->stream);
        seen->stream = NULL;
    }
}

struct pair {
    struct event_base *base;
    struct stream *stream;
    int peer;
    struct seen seen;
};

static void pair_open(struct pair *p, int sndbuf) {
    int fds[2];
    memset(p, 0, sizeof *p);
    p->base = event_base_new();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) abort();
    if (sndbuf) setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    const struct stream_callbacks cbs = {on_read, on_drained, on_closed, &p->seen};
    p->stream = stream_new(p->base, fds[0], NULL, 1 << 20, &cbs);
    p->seen.stream = p->stream;
    p->peer = fds[1];
}

static void pair_close(struct pair *p) {
    if (p->seen.stream) stream_free(p->seen.stream);
    if (p->peer >= 0) close(p->peer);
    event_base_free(p->base);
}

static void run_once(struct pair *p) {
    event_base_loop(p->base, EVLOOP_NONBLOCK);
}

/* Reads what the peer has now, appending to out. */
static size_t peer_read(struct pair *p, struct evbuffer *out) {
    size_t total = 0;
    char buf[65536];
    ssize_t n;
    while ((n = read(p->peer, buf, sizeof buf)) > 0) {
        evbuffer_add(out, buf, (size_t)n);
        total += (size_t)n;
    }
    return total;
}

static void test_idle_stream_writes_through_before_the_loop_runs(void) {
    struct pair p;
    pair_open(&p, 0);
    CHECK_INT(stream_send(p.stream, "hello", 5), 0);
    CHECK_INT(stream_queued(p.stream), 0);
    char buf[16];
    CHECK_INT(read(p.peer, buf, sizeof buf), 5); /* no loop iteration ran */
    CHECK(memcmp(buf, "hello", 5) == 0);

    struct shared_frame *frame = NULL;
    memcpy(shared_frame_reserve(&frame, 3), "abc", 3);
    CHECK_INT(stream_send_frame(p.stream, frame), 0);
    CHECK_INT(frame->refs, 1); /* written at once: no reference kept */
    CHECK_INT(read(p.peer, buf, sizeof buf), 3);
    shared_frame_release(frame);
    pair_close(&p);
}

static void test_refused_bytes_are_queued_and_sent_in_order(void) {
    struct pair p;
    pair_open(&p, 4096);
    enum { FRAMES = 64, FRAME_LEN = 8192 };
    struct shared_frame *frames[FRAMES];
    for (int i = 0; i < FRAMES; i++) {
        frames[i] = NULL;
        memset(shared_frame_reserve(&frames[i], FRAME_LEN), 'A' + i % 26, FRAME_LEN);
        CHECK_INT(stream_send_frame(p.stream, frames[i]), 0);
        CHECK_INT(stream_send(p.stream, "|", 1), 0);
    }
    CHECK(stream_queued(p.stream) > 0);
    CHECK_INT(frames[FRAMES - 1]->refs, 2); /* queued by reference */
    struct evbuffer *got = evbuffer_new();
    size_t want = FRAMES * (FRAME_LEN + 1);
    for (int turns = 0; turns < 10000 && evbuffer_get_length(got) < want; turns++) {
        peer_read(&p, got);
        run_once(&p);
    }
    CHECK_INT(evbuffer_get_length(got), want);
    CHECK_INT(stream_queued(p.stream), 0);
    const unsigned char *bytes = evbuffer_pullup(got, -1);
    int bad = 0;
    for (int i = 0; i < FRAMES && bytes; i++) {
        const unsigned char *f = bytes + (size_t)i * (FRAME_LEN + 1);
        if (f[0] != 'A' + i % 26 || f[FRAME_LEN - 1] != 'A' + i % 26 || f[FRAME_LEN] != '|') bad++;
    }
    CHECK_INT(bad, 0);
    for (int i = 0; i < FRAMES; i++) {
        CHECK_INT(frames[i]->refs, 1);
        shared_frame_release(frames[i]);
    }
    evbuffer_free(got);
    pair_close(&p);
}

/* A backed-up client of a busy channel queues thousands of small frames, one
 * chain each: they leave in order, at most 128 chains per write. */
static void test_thousands_of_queued_frames_are_sent_in_order(void) {
    struct pair p;
    pair_open(&p, 4096);
    enum { FRAMES = 5000, FRAME_LEN = 100 };
    struct shared_frame *last = NULL;
    for (int i = 0; i < FRAMES; i++) {
        struct shared_frame *frame = NULL;
        memset(shared_frame_reserve(&frame, FRAME_LEN), 'a' + i % 26, FRAME_LEN);
        CHECK_INT(stream_send_frame(p.stream, frame), 0);
        if (i < FRAMES - 1)
            shared_frame_release(frame); /* the queue keeps its own */
        else
            last = frame;
    }
    CHECK(stream_queued(p.stream) > (size_t)FRAMES * FRAME_LEN / 2);
    CHECK_INT(last->refs, 2); /* queued by reference */
    struct evbuffer *got = evbuffer_new();
    size_t want = (size_t)FRAMES * FRAME_LEN;
    for (int turns = 0; turns < 100000 && evbuffer_get_length(got) < want; turns++) {
        peer_read(&p, got);
        run_once(&p);
    }
    CHECK_INT(evbuffer_get_length(got), want);
    const unsigned char *bytes = evbuffer_pullup(got, -1);
    int bad = 0;
    for (int i = 0; i < FRAMES && bytes; i++) {
        const unsigned char *f = bytes + (size_t)i * FRAME_LEN;
        if (f[0] != 'a' + i % 26 || f[FRAME_LEN - 1] != 'a' + i % 26) bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(last->refs, 1);
    shared_frame_release(last);
    evbuffer_free(got);
    pair_close(&p);
}

/* Frames, copies and buffers queued while the client reads in small bites: the
 * queue wraps around and grows with its oldest entry mid-array, and every byte
 * still leaves in order; once the client caught up the queue is empty. */
static void test_queue_wraps_and_grows_while_draining_in_order(void) {
    struct pair p;
    pair_open(&p, 4096);
    struct evbuffer *want = evbuffer_new(), *got = evbuffer_new();
    unsigned seq = 0;
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 1 + round % 37; i++, seq++) {
            char text[64];
            int n = snprintf(text, sizeof text, "<%u>", seq);
            evbuffer_add(want, text, (size_t)n);
            if (seq % 3 == 0) {
                struct shared_frame *frame = NULL;
                memcpy(shared_frame_reserve(&frame, (size_t)n), text, (size_t)n);
                CHECK_INT(stream_send_frame(p.stream, frame), 0);
                shared_frame_release(frame);
            } else if (seq % 3 == 1) {
                CHECK_INT(stream_send(p.stream, text, (size_t)n), 0);
            } else {
                struct evbuffer *b = evbuffer_new();
                evbuffer_add(b, text, (size_t)n);
                CHECK_INT(stream_send_buffer(p.stream, b), 0);
                evbuffer_free(b);
            }
        }
        char bite[1500]; /* the client takes a little each round */
        ssize_t n = read(p.peer, bite, sizeof bite);
        if (n > 0) evbuffer_add(got, bite, (size_t)n);
        run_once(&p);
    }
    for (int turns = 0; turns < 100000 && evbuffer_get_length(got) < evbuffer_get_length(want);
         turns++) {
        peer_read(&p, got);
        run_once(&p);
    }
    CHECK_INT(evbuffer_get_length(got), evbuffer_get_length(want));
    CHECK(memcmp(evbuffer_pullup(got, -1), evbuffer_pullup(want, -1), evbuffer_get_length(want)) ==
          0);
    CHECK_INT(stream_queued(p.stream), 0);
    evbuffer_free(want);
    evbuffer_free(got);
    pair_close(&p);
}

static void test_sends_behind_a_queue_wait_their_turn(void) {
    struct pair p;
    pair_open(&p, 4096);
    static char big[1 << 18];
    memset(big, 'x', sizeof big);
    CHECK_INT(stream_send(p.stream, big, sizeof big), 0);
    CHECK(stream_queued(p.stream) > 0);
    size_t queued = stream_queued(p.stream);
    CHECK_INT(stream_send(p.stream, "end", 3), 0); /* not written ahead of the queue */
    CHECK_INT(stream_queued(p.stream), queued + 3);
    struct evbuffer *got = evbuffer_new();
    for (int turns = 0; turns < 10000 && evbuffer_get_length(got) < sizeof big + 3; turns++) {
        peer_read(&p, got);
        run_once(&p);
    }
    CHECK_INT(evbuffer_get_length(got), sizeof big + 3);
    const char *bytes = (const char *)evbuffer_pullup(got, -1);
    CHECK(bytes && memcmp(bytes + sizeof big, "end", 3) == 0);
    evbuffer_free(got);
    pair_close(&p);
}

static void test_drain_is_reported_from_the_loop(void) {
    struct pair p;
    pair_open(&p, 0);
    stream_send(p.stream, "bye", 3);
    stream_watch_drain(p.stream);
    CHECK_INT(p.seen.drained, 0); /* never from inside the call */
    run_once(&p);
    CHECK_INT(p.seen.drained, 1);
    run_once(&p);
    CHECK_INT(p.seen.drained, 1); /* once per request */
    pair_close(&p);
}

static void test_write_to_a_gone_peer_reports_closed_from_the_loop(void) {
    struct pair p;
    pair_open(&p, 0);
    close(p.peer);
    p.peer = -1;
    p.seen.free_on_close = true;
    CHECK_INT(stream_send(p.stream, "lost", 4), 0);
    CHECK_INT(p.seen.closed, 0);
    run_once(&p);
    CHECK_INT(p.seen.closed, 1); /* and the stream freed itself inside the callback */
    CHECK(p.seen.stream == NULL);
    pair_close(&p);
}

static void test_input_is_reported_then_end_of_stream(void) {
    struct pair p;
    pair_open(&p, 0);
    CHECK_INT(write(p.peer, "ping", 4), 4);
    run_once(&p);
    CHECK_INT(p.seen.reads, 1);
    CHECK_INT(evbuffer_get_length(stream_input(p.stream)), 4);
    evbuffer_drain(stream_input(p.stream), 4);
    shutdown(p.peer, SHUT_WR);
    run_once(&p);
    CHECK_INT(p.seen.closed, 1);
    pair_close(&p);
}

static void test_half_close_lets_the_peer_see_end_of_stream(void) {
    struct pair p;
    pair_open(&p, 0);
    stream_send(p.stream, "last", 4);
    stream_shutdown_write(p.stream);
    char buf[8];
    CHECK_INT(read(p.peer, buf, sizeof buf), 4);
    CHECK_INT(read(p.peer, buf, sizeof buf), 0);
    pair_close(&p);
}

int main(void) {
    RUN(test_idle_stream_writes_through_before_the_loop_runs);
    RUN(test_refused_bytes_are_queued_and_sent_in_order);
    RUN(test_thousands_of_queued_frames_are_sent_in_order);
    RUN(test_queue_wraps_and_grows_while_draining_in_order);
    RUN(test_sends_behind_a_queue_wait_their_turn);
    RUN(test_drain_is_reported_from_the_loop);
    RUN(test_write_to_a_gone_peer_reports_closed_from_the_loop);
    RUN(test_input_is_reported_then_end_of_stream);
    RUN(test_half_close_lets_the_peer_see_end_of_stream);
    return TEST_SUMMARY();
}
