/* shared_frame.h -- encoded WebSocket frames shared by every recipient.
 *
 * An event is serialized and framed once per worker; each connection's output
 * buffer then holds a reference to the same bytes (evbuffer_add_reference), and
 * the last buffer to release it frees it. Nothing else is shared between
 * connections. Events for one channel that arrive together (one read from
 * Redis) are appended to the same buffer while it is still private, so a burst
 * costs each recipient one reference, not one per event. */
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

/* Frames payload[0..len) as one text frame; the caller holds the only reference.
 * Returns NULL when out of memory. */
struct shared_frame *shared_frame_text(const char *payload, size_t len);

/* Appends payload as one more text frame to *frame, which must not be shared
 * yet (refs == 1); *frame may move. Returns 0, or -1 when out of memory (then
 * *frame is unchanged). */
int shared_frame_add_text(struct shared_frame **frame, const char *payload, size_t len);

/* Appends a reference to the frame's bytes to out (refs + 1); returns 0 or -1. */
int shared_frame_append(struct shared_frame *frame, struct evbuffer *out);

/* Drops one reference; frees the frame with the last. */
void shared_frame_release(struct shared_frame *frame);

#endif
