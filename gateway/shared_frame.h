/* shared_frame.h -- one encoded WebSocket frame shared by every recipient.
 *
 * An event is serialized and framed once per worker; each connection's output
 * buffer then holds a reference to the same bytes (evbuffer_add_reference), and
 * the last buffer to release it frees it. Nothing else is shared between
 * connections. */
#ifndef HERALD_SHARED_FRAME_H
#define HERALD_SHARED_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "ws_codec.h"

struct evbuffer;

struct shared_frame {
    unsigned refs;
    size_t len; /* bytes of data: frame header + payload */
    uint8_t data[];
};

/* Frames payload[0..len) as one text frame; the caller holds the only reference.
 * Returns NULL when out of memory. */
struct shared_frame *shared_frame_text(const char *payload, size_t len);

/* Appends a reference to the frame's bytes to out (refs + 1); returns 0 or -1. */
int shared_frame_append(struct shared_frame *frame, struct evbuffer *out);

/* Drops one reference; frees the frame with the last. */
void shared_frame_release(struct shared_frame *frame);

#endif
