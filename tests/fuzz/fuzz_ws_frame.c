/* fuzz_ws_frame.c -- libFuzzer target for the WebSocket frame reader.
 *
 * The first input byte picks the reader's configuration (bit 0: client mode,
 * masks optional; bit 1: a 125-byte message limit instead of 4096); the rest is
 * a byte stream decoded frame after frame until WS_PARTIAL or WS_INVALID.
 * Besides memory safety it checks the reader's contract: a frame lies inside
 * the bytes it was given, a shorter prefix of a frame is WS_PARTIAL and changes
 * neither the buffer nor the reader, an error is the same on every prefix that
 * reports one, and accepted text and close reasons are valid UTF-8. */
#include "ws_codec.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) abort();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool reader_eq(const struct ws_reader *a, const struct ws_reader *b) {
    return a->max_message_size == b->max_message_size && a->message_opcode == b->message_opcode &&
           a->message_len == b->message_len && a->utf8_state == b->utf8_state &&
           a->require_mask == b->require_mask;
}

/* Decodes a prefix of the original bytes with a copy of the reader and checks
 * it against the full result. */
static void check_prefix(const struct ws_reader *r, const uint8_t *orig, size_t prefix,
                         int full_ret, uint16_t full_error) {
    uint8_t *copy = malloc(prefix ? prefix : 1);
    FUZZ_CHECK(copy != NULL);
    if (prefix) memcpy(copy, orig, prefix);
    struct ws_reader rr = *r;
    struct ws_frame f;
    size_t need = 0;
    int ret = ws_reader_next(&rr, copy, prefix, &f, &need);
    if (ret == WS_PARTIAL) {
        FUZZ_CHECK(reader_eq(&rr, r));
        FUZZ_CHECK(prefix == 0 || memcmp(copy, orig, prefix) == 0);
        FUZZ_CHECK(need == 0 || need > prefix);
        if (full_ret > 0) FUZZ_CHECK(need == 0 || need == (size_t)full_ret);
    } else {
        /* Only an error may surface before the whole input, and only the same one. */
        FUZZ_CHECK(ret == WS_INVALID && full_ret == WS_INVALID && f.error_code == full_error);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool client_mode = data[0] & 1;
    size_t max_message_size = data[0] & 2 ? 125 : 4096;
    data++;
    size--;

    uint8_t *buf = malloc(size ? size : 1);
    uint8_t *orig = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL && orig != NULL);
    if (size) {
        memcpy(buf, data, size);
        memcpy(orig, data, size);
    }

    struct ws_reader r;
    ws_reader_init(&r, max_message_size, !client_mode);
    size_t off = 0;
    for (;;) {
        size_t remaining = size - off;
        struct ws_reader before = r;
        struct ws_frame f;
        size_t need = 0;
        int ret = ws_reader_next(&r, buf + off, remaining, &f, &need);

        if (ret == WS_PARTIAL) {
            FUZZ_CHECK(reader_eq(&r, &before));
            FUZZ_CHECK(remaining == 0 || memcmp(buf + off, orig + off, remaining) == 0);
            FUZZ_CHECK(need == 0 || (need > remaining && need >= 2));
            break;
        }
        if (ret == WS_INVALID) {
            uint16_t code = f.error_code;
            FUZZ_CHECK(code == WS_CLOSE_PROTOCOL_ERROR || code == WS_CLOSE_INVALID_PAYLOAD ||
                       code == WS_CLOSE_TOO_BIG);
            check_prefix(&before, orig + off, remaining / 2, ret, code);
            if (remaining > 0) check_prefix(&before, orig + off, remaining - 1, ret, code);
            break;
        }

        size_t frame_len = (size_t)ret;
        FUZZ_CHECK(ret > 0 && frame_len <= remaining);
        FUZZ_CHECK(frame_len >= 2 && frame_len <= WS_MAX_HEADER_LEN + f.payload_len);
        FUZZ_CHECK(f.payload >= buf + off + 2);
        FUZZ_CHECK(f.payload + f.payload_len == buf + off + frame_len);
        FUZZ_CHECK(r.message_len <= max_message_size);
        if (f.opcode >= WS_OP_CLOSE) {
            FUZZ_CHECK(f.fin && f.payload_len <= WS_MAX_CONTROL_PAYLOAD);
            FUZZ_CHECK(reader_eq(&r, &before));
        } else {
            FUZZ_CHECK(f.payload_len <= max_message_size);
        }
        if (f.opcode == WS_OP_TEXT && f.fin) FUZZ_CHECK(ws_utf8_valid(f.payload, f.payload_len));
        if (f.opcode == WS_OP_CLOSE) {
            if (f.payload_len == 0) {
                FUZZ_CHECK(f.close_code == WS_CLOSE_NO_STATUS && f.close_reason_len == 0);
            } else {
                FUZZ_CHECK(ws_close_code_valid_from_peer(f.close_code));
                FUZZ_CHECK(f.close_reason == f.payload + 2);
                FUZZ_CHECK(f.close_reason_len == f.payload_len - 2);
                FUZZ_CHECK(ws_utf8_valid(f.close_reason, f.close_reason_len));
            }
        }
        /* The bytes beyond this frame are untouched. */
        FUZZ_CHECK(memcmp(buf + off + frame_len, orig + off + frame_len, remaining - frame_len) ==
                   0);

        check_prefix(&before, orig + off, frame_len - 1, ret, 0);
        check_prefix(&before, orig + off, frame_len / 2, ret, 0);
        off += frame_len;
    }

    /* The encoder's output for a close frame built from the input must decode. */
    if (size >= 2) {
        uint8_t out[2 + WS_MAX_CONTROL_PAYLOAD];
        char reason[200];
        size_t reason_len = size - 2 < sizeof(reason) - 1 ? size - 2 : sizeof(reason) - 1;
        memcpy(reason, data + 2, reason_len);
        reason[reason_len] = '\0';
        uint16_t code = (uint16_t)(data[0] << 8 | data[1]);
        size_t n = ws_close_frame(out, code, reason);
        FUZZ_CHECK(n >= 2 && n <= sizeof(out) && out[1] == n - 2);
        if (n > 4 && ws_utf8_valid((const uint8_t *)reason, strlen(reason)))
            FUZZ_CHECK(ws_utf8_valid(out + 4, n - 4));
    }

    free(buf);
    free(orig);
    return 0;
}
