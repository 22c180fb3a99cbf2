/* shared_frame.c -- reference-counted frames for fan-out. */
#include "shared_frame.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

uint8_t *shared_frame_reserve(struct shared_frame **frame, size_t len) {
    struct shared_frame *f = *frame;
    size_t used = f ? f->len : 0, capacity = f ? f->capacity : 0;
    if (used + len > capacity) {
        capacity = capacity * 2 > used + len ? capacity * 2 : used + len;
        if (capacity < 512) capacity = 512;
        f = realloc(f, sizeof *f + capacity);
        if (!f) return NULL;
        if (!*frame) f->refs = 1, f->len = 0;
        f->capacity = capacity;
        *frame = f;
    }
    uint8_t *p = f->data + f->len;
    f->len += len;
    return p;
}

static void release_reference(const void *data, size_t len, void *arg) {
    (void)data, (void)len;
    shared_frame_release(arg);
}

int shared_frame_append(struct shared_frame *frame, struct evbuffer *out, size_t from) {
    frame->refs++;
    if (evbuffer_add_reference(out, frame->data + from, frame->len - from, release_reference,
                               frame) != 0) {
        frame->refs--;
        return -1;
    }
    return 0;
}

void shared_frame_release(struct shared_frame *frame) {
    if (frame && --frame->refs == 0) free(frame);
}
