/* shared_frame.h -- encoded WebSocket frames shared by every recipient.
 *
 * An event is serialized and framed once per worker; each connection's output
 * buffer then holds a reference to the same bytes (evbuffer_add_reference), and
 * the last buffer to release it frees it. Nothing else is shared between
 * connections. Events for one channel that arrive together (one read from
 * Redis) are written into the same buffer while it is still private, so a
 * burst costs each recipient one reference, not one per event. */
#ifndef HERALD_SHARED_FRAME_H
#define HERALD_SHARED_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "ws_codec.h"

struct evbuffer;

struct shared_frame {
    unsigned refs;
    size_t len;      /* bytes of data: one or more complete frames */
    size_t capacity; /* bytes allocated for data */
    uint8_t data[];
};

/* Makes room for len more bytes at the end of *frame (NULL: a new frame with
 * one reference) and returns where to write them; the frame must not be shared
 * yet (refs == 1) and may move. Returns NULL when out of memory (then *frame is
 * unchanged). */
uint8_t *shared_frame_reserve(struct shared_frame **frame, size_t len);

/* Appends a reference to the frame's bytes from offset from on to out
 * (refs + 1); returns 0 or -1. */
int shared_frame_append(struct shared_frame *frame, struct evbuffer *out, size_t from);

/* Drops one reference; frees the frame with the last. */
void shared_frame_release(struct shared_frame *frame);

#endif
