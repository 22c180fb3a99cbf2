/* shared_frame.c -- reference-counted frames for fan-out. */
#include "shared_frame.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

struct shared_frame *shared_frame_text(const char *payload, size_t len) {
    uint8_t header[WS_MAX_HEADER_LEN];
    size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, len);
    struct shared_frame *frame = malloc(sizeof *frame + header_len + len);
    if (!frame) return NULL;
    frame->refs = 1;
    frame->len = frame->capacity = header_len + len;
    memcpy(frame->data, header, header_len);
    memcpy(frame->data + header_len, payload, len);
    return frame;
}

int shared_frame_add_text(struct shared_frame **frame, const char *payload, size_t len) {
    struct shared_frame *f = *frame;
    uint8_t header[WS_MAX_HEADER_LEN];
    size_t header_len = ws_frame_header(header, WS_OP_TEXT, true, len);
    size_t need = f->len + header_len + len;
    if (need > f->capacity) {
        size_t capacity = f->capacity * 2 > need ? f->capacity * 2 : need;
        f = realloc(f, sizeof *f + capacity);
        if (!f) return -1;
        f->capacity = capacity;
        *frame = f;
    }
    memcpy(f->data + f->len, header, header_len);
    memcpy(f->data + f->len + header_len, payload, len);
    f->len = need;
    return 0;
}

static void release_reference(const void *data, size_t len, void *arg) {
    (void)data, (void)len;
    shared_frame_release(arg);
}

int shared_frame_append(struct shared_frame *frame, struct evbuffer *out) {
    frame->refs++;
    if (evbuffer_add_reference(out, frame->data, frame->len, release_reference, frame) != 0) {
        frame->refs--;
        return -1;
    }
    return 0;
}

void shared_frame_release(struct shared_frame *frame) {
    if (frame && --frame->refs == 0) free(frame);
}
