/* stream.h -- a connection's byte stream: a plain socket with write-through
 * output, or a TLS bufferevent. The connection (conn.c) sees one interface for
 * both.
 *
 * Plain sockets: a frame for a stream with nothing queued is written at once
 * (one send, no event-interest change). Only what the kernel did
 * not take is queued, and the socket then waits for writability on an
 * edge-triggered read+write event registered once for the stream's life, so
 * a delivery never toggles epoll interest. What waits is a ring of pieces: a
 * reference to a shared frame (no copy, no allocation per frame) or a copy of
 * other bytes; the ring exists only while something waits. A backed-up
 * stream sends up to 128 pieces per sendmsg until the kernel takes less.
 *
 * TLS: bufferevent_openssl, as libevent provides it.
 *
 * Callbacks run from the event loop, never from inside a send: a send that
 * fails or empties the queue reports it on a later callback, so the owner may
 * send while walking lists it must not change. The owner may free the stream
 * inside any callback. */
#ifndef HERALD_STREAM_H
#define HERALD_STREAM_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "shared_frame.h"

struct stream;
struct evbuffer;

struct stream_callbacks {
    void (*read)(void *arg);    /* new bytes in the input */
    void (*drained)(void *arg); /* the output is empty (also reported when it stayed so) */
    void (*closed)(void *arg);  /* end of stream or an error: nothing more will move */
    void *arg;
};

/* A stream over fd (taken over, closed by stream_free); ssl non-NULL makes it
 * a server-side TLS stream and is taken over too. read_limit bounds the
 * input. Returns NULL when out of memory (fd and ssl are then freed). */
struct stream *stream_new(struct event_base *base, evutil_socket_t fd, SSL *ssl, size_t read_limit,
                          const struct stream_callbacks *cbs);
void stream_free(struct stream *s);

/* The socket (for socket options and queries; the stream owns it). */
evutil_socket_t stream_fd(const struct stream *s);

/* Bounds the input at limit bytes from now on. */
void stream_set_read_limit(struct stream *s, size_t limit);

/* Bytes received and not yet drained by the owner. */
struct evbuffer *stream_input(struct stream *s);

/* Bytes accepted by stream_send* and not yet written to the socket. */
size_t stream_queued(const struct stream *s);

/* Monotonic seconds when queued output last moved or the queue last became
 * non-empty. */
double stream_write_progress(const struct stream *s);

/* Sends a copy of data; returns 0, or -1 when out of memory. */
int stream_send(struct stream *s, const void *data, size_t len);

/* Sends a reference to the frame's bytes (refs + 1 while queued); returns 0 or -1. */
int stream_send_frame(struct stream *s, struct shared_frame *frame);

/* Sends every byte of buf (buf ends up empty); returns 0 or -1. */
int stream_send_buffer(struct stream *s, struct evbuffer *buf);

/* Asks for one drained report once the output is empty (plain sockets;
 * a TLS stream reports every time its output drains). */
void stream_watch_drain(struct stream *s);

/* Half-closes a plain socket (the peer sees EOF); nothing for TLS. */
void stream_shutdown_write(struct stream *s);

#endif
