/* ws_codec.c -- RFC 6455 frame decoding and encoding over byte buffers.
 *
 * The reader works in two phases. The header phase looks only at the header
 * bytes present so far and may fail the connection early (bad bits, a control
 * frame that is too long, a message that would exceed the size limit); it never
 * writes. The frame phase runs only once the whole frame is in the buffer: it
 * unmasks the payload in place, validates text and close payloads, and only
 * then advances the reader. Because every check reads bytes in the same order,
 * a prefix of a buffer yields either WS_PARTIAL or the same result as the whole
 * buffer. */
#include "ws_codec.h"

#include <limits.h>
#include <string.h>

/* UTF-8 validation is a small state machine over byte classes. Besides
 * ACCEPT and REJECT, a state says how many continuation bytes are still owed
 * and, right after the few lead bytes that restrict it, which range the next
 * continuation byte must fall in (that is what rules out overlongs, surrogates
 * and code points above U+10FFFF). */
enum utf8_state {
    UTF8_ACCEPT = WS_UTF8_ACCEPT,
    UTF8_REJECT = WS_UTF8_REJECT,
    UTF8_NEED1,    /* one more 80..BF */
    UTF8_NEED2,    /* 80..BF, then one more */
    UTF8_NEED3,    /* 80..BF, then two more */
    UTF8_AFTER_E0, /* A0..BF (no 3-byte overlong), then one more */
    UTF8_AFTER_ED, /* 80..9F (no surrogate), then one more */
    UTF8_AFTER_F0, /* 90..BF (no 4-byte overlong), then two more */
    UTF8_AFTER_F4, /* 80..8F (nothing above U+10FFFF), then two more */
    UTF8_STATE_COUNT
};

enum utf8_class {
    C_ASCII, /* 00..7F */
    C_CONT0, /* 80..8F */
    C_CONT1, /* 90..9F */
    C_CONT2, /* A0..BF */
    C_LEAD2, /* C2..DF */
    C_E0,
    C_LEAD3, /* E1..EC, EE..EF */
    C_ED,
    C_F0,
    C_LEAD4, /* F1..F3 */
    C_F4,
    C_BAD, /* C0, C1 (always overlong), F5..FF (beyond U+10FFFF) */
    C_COUNT
};

/* clang-format off */
static const uint8_t utf8_class_of[256] = {
#define A C_ASCII
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 00 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 10 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 20 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 30 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 40 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 50 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 60 */
    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, /* 70 */
#undef A
#define X C_CONT0
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* 80 */
#undef X
#define X C_CONT1
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* 90 */
#undef X
#define X C_CONT2
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* A0 */
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, /* B0 */
#undef X
#define L C_LEAD2
    C_BAD, C_BAD, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* C0 */
    L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,         /* D0 */
#undef L
#define L C_LEAD3
    C_E0, L, L, L, L, L, L, L, L, L, L, L, L, C_ED, L, L, /* E0 */
#undef L
    C_F0, C_LEAD4, C_LEAD4, C_LEAD4, C_F4, C_BAD, C_BAD, C_BAD, /* F0 */
    C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD, C_BAD,
};

#define R UTF8_REJECT
static const uint8_t utf8_next[UTF8_STATE_COUNT][C_COUNT] = {
    /*                 ASCII          CONT0          CONT1          CONT2          LEAD2          E0             LEAD3          ED             F0             LEAD4          F4             BAD */
    [UTF8_ACCEPT]   = {UTF8_ACCEPT,   R,             R,             R,             UTF8_NEED1,    UTF8_AFTER_E0, UTF8_NEED2,    UTF8_AFTER_ED, UTF8_AFTER_F0, UTF8_NEED3,    UTF8_AFTER_F4, R},
    [UTF8_REJECT]   = {R,             R,             R,             R,             R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_NEED1]    = {R,             UTF8_ACCEPT,   UTF8_ACCEPT,   UTF8_ACCEPT,   R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_NEED2]    = {R,             UTF8_NEED1,    UTF8_NEED1,    UTF8_NEED1,    R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_NEED3]    = {R,             UTF8_NEED2,    UTF8_NEED2,    UTF8_NEED2,    R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_AFTER_E0] = {R,             R,             R,             UTF8_NEED1,    R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_AFTER_ED] = {R,             UTF8_NEED1,    UTF8_NEED1,    R,             R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_AFTER_F0] = {R,             R,             UTF8_NEED2,    UTF8_NEED2,    R,             R,             R,             R,             R,             R,             R,             R},
    [UTF8_AFTER_F4] = {R,             UTF8_NEED2,    R,             R,             R,             R,             R,             R,             R,             R,             R,             R},
};
#undef R
/* clang-format on */

uint32_t ws_utf8_feed(uint32_t state, const uint8_t *buf, size_t len) {
    if (state >= UTF8_STATE_COUNT) return UTF8_REJECT;
    for (size_t i = 0; i < len && state != UTF8_REJECT; i++) {
        if (state == UTF8_ACCEPT && buf[i] < 0x80) continue;
        state = utf8_next[state][utf8_class_of[buf[i]]];
    }
    return state;
}

bool ws_utf8_valid(const uint8_t *buf, size_t len) {
    return ws_utf8_feed(UTF8_ACCEPT, buf, len) == UTF8_ACCEPT;
}

void ws_reader_init(struct ws_reader *r, size_t max_message_size, bool require_mask) {
    memset(r, 0, sizeof(*r));
    r->max_message_size = max_message_size;
    r->utf8_state = WS_UTF8_ACCEPT;
    r->require_mask = require_mask;
}

static bool is_control(unsigned opcode) {
    return opcode >= WS_OP_CLOSE;
}

static bool is_known_opcode(unsigned opcode) {
    return opcode <= WS_OP_BINARY || (opcode >= WS_OP_CLOSE && opcode <= WS_OP_PONG);
}

static int fail(struct ws_frame *frame, uint16_t code) {
    frame->error_code = code;
    return WS_INVALID;
}

/* Checks a complete, unmasked close payload and fills the close fields. */
static int decode_close(struct ws_frame *frame) {
    frame->close_code = WS_CLOSE_NO_STATUS;
    if (frame->payload_len == 0) return 0;
    uint16_t code = (uint16_t)(frame->payload[0] << 8 | frame->payload[1]);
    if (!ws_close_code_valid_from_peer(code)) return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
    frame->close_code = code;
    frame->close_reason = frame->payload + 2;
    frame->close_reason_len = frame->payload_len - 2;
    if (!ws_utf8_valid(frame->close_reason, frame->close_reason_len))
        return fail(frame, WS_CLOSE_INVALID_PAYLOAD);
    return 0;
}

int ws_reader_next(struct ws_reader *r, uint8_t *buf, size_t len, struct ws_frame *frame,
                   size_t *need) {
    memset(frame, 0, sizeof(*frame));
    if (need) *need = 0;
    if (len < 1) return WS_PARTIAL;

    bool fin = buf[0] & 0x80;
    unsigned opcode = buf[0] & 0x0F;
    if (buf[0] & 0x70)
        return fail(frame, WS_CLOSE_PROTOCOL_ERROR); /* no extension was negotiated */
    if (!is_known_opcode(opcode)) return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
    if (is_control(opcode) && !fin) return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
    if (opcode == WS_OP_CONTINUATION && r->message_opcode == 0)
        return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
    if ((opcode == WS_OP_TEXT || opcode == WS_OP_BINARY) && r->message_opcode != 0)
        return fail(frame, WS_CLOSE_PROTOCOL_ERROR);

    if (len < 2) return WS_PARTIAL;
    bool masked = buf[1] & 0x80;
    unsigned len7 = buf[1] & 0x7F;
    if (r->require_mask && !masked) return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
    if (is_control(opcode) && len7 > WS_MAX_CONTROL_PAYLOAD)
        return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
    if (opcode == WS_OP_CLOSE && len7 == 1)
        return fail(frame, WS_CLOSE_PROTOCOL_ERROR); /* half a status code */

    size_t header_len = 2;
    uint64_t payload_len = len7;
    if (len7 == 126 || len7 == 127) {
        size_t ext = len7 == 126 ? 2 : 8;
        if (len < 2 + ext) return WS_PARTIAL;
        payload_len = 0;
        for (size_t i = 0; i < ext; i++) payload_len = payload_len << 8 | buf[2 + i];
        if (payload_len >> 63) return fail(frame, WS_CLOSE_PROTOCOL_ERROR);
        header_len += ext;
    }
    if (masked) header_len += 4;

    /* The size limit is judged here, before any payload is buffered. */
    if (!is_control(opcode)) {
        size_t so_far = opcode == WS_OP_CONTINUATION ? r->message_len : 0;
        if (so_far > r->max_message_size || payload_len > (uint64_t)(r->max_message_size - so_far))
            return fail(frame, WS_CLOSE_TOO_BIG);
    }
    if (payload_len > (uint64_t)(INT_MAX - header_len))
        return fail(frame, WS_CLOSE_TOO_BIG); /* the return value must hold the frame length */
    size_t frame_len = header_len + (size_t)payload_len;
    if (need) *need = frame_len;
    if (len < frame_len) return WS_PARTIAL;

    /* The frame is complete: from here on buf may be written. */
    frame->fin = fin;
    frame->opcode = (enum ws_opcode)opcode;
    frame->payload = buf + header_len;
    frame->payload_len = (size_t)payload_len;
    if (masked) ws_mask(frame->payload, frame->payload_len, buf + header_len - 4, 0);

    if (opcode == WS_OP_CLOSE) return decode_close(frame) < 0 ? WS_INVALID : (int)frame_len;
    if (is_control(opcode)) return (int)frame_len;

    uint8_t message_opcode = opcode == WS_OP_CONTINUATION ? r->message_opcode : (uint8_t)opcode;
    uint32_t utf8_state = opcode == WS_OP_CONTINUATION ? r->utf8_state : WS_UTF8_ACCEPT;
    if (message_opcode == WS_OP_TEXT) {
        utf8_state = ws_utf8_feed(utf8_state, frame->payload, frame->payload_len);
        if (utf8_state == WS_UTF8_REJECT || (fin && utf8_state != WS_UTF8_ACCEPT))
            return fail(frame, WS_CLOSE_INVALID_PAYLOAD);
    }
    if (fin) {
        r->message_opcode = 0;
        r->message_len = 0;
        r->utf8_state = WS_UTF8_ACCEPT;
    } else {
        r->message_opcode = message_opcode;
        r->message_len = (opcode == WS_OP_CONTINUATION ? r->message_len : 0) + frame->payload_len;
        r->utf8_state = utf8_state;
    }
    return (int)frame_len;
}

size_t ws_frame_header(uint8_t *out, enum ws_opcode opcode, bool fin, uint64_t payload_len) {
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (payload_len <= WS_MAX_CONTROL_PAYLOAD) {
        out[1] = (uint8_t)payload_len;
        return 2;
    }
    if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
    return 10;
}

int ws_server_frame_size(const uint8_t *buf, size_t len, size_t *header_len,
                         uint64_t *payload_len) {
    if (len < 2 || (buf[1] & 0x80)) return -1;
    size_t n = buf[1] & 0x7F, hl = n == 126 ? 4 : n == 127 ? 10 : 2;
    if (len < hl) return -1;
    uint64_t size = n;
    if (n == 126) size = (uint64_t)buf[2] << 8 | buf[3];
    if (n == 127) {
        size = 0;
        for (int i = 2; i < 10; i++) size = size << 8 | buf[i];
    }
    *header_len = hl;
    *payload_len = size;
    return 0;
}

size_t ws_close_frame(uint8_t *out, uint16_t code, const char *reason) {
    if (code == WS_CLOSE_NO_STATUS) return ws_frame_header(out, WS_OP_CLOSE, true, 0);
    size_t reason_len = reason ? strlen(reason) : 0;
    size_t max_reason = WS_MAX_CONTROL_PAYLOAD - 2;
    if (reason_len > max_reason) {
        reason_len = max_reason;
        /* Back up to the lead byte of the character that did not fit whole. */
        while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80) reason_len--;
    }
    size_t header_len = ws_frame_header(out, WS_OP_CLOSE, true, 2 + reason_len);
    out[header_len] = (uint8_t)(code >> 8);
    out[header_len + 1] = (uint8_t)code;
    if (reason_len > 0) memcpy(out + header_len + 2, reason, reason_len);
    return header_len + 2 + reason_len;
}

bool ws_close_code_valid_from_peer(uint16_t code) {
    if (code >= 3000 && code <= 4999) return true;
    if (code < 1000 || code > 1014) return false;
    /* 1004 is reserved, 1005 and 1006 are never sent, 1015 is TLS failure. */
    return code != 1004 && code != 1005 && code != 1006;
}

void ws_mask(uint8_t *buf, size_t len, const uint8_t mask[4], size_t offset) {
    for (size_t i = 0; i < len; i++) buf[i] ^= mask[(offset + i) & 3];
}

const char *ws_close_reason(uint16_t code) {
    switch (code) {
        case WS_CLOSE_NORMAL: return "";
        case WS_CLOSE_GOING_AWAY: return "server shutting down";
        case WS_CLOSE_PROTOCOL_ERROR: return "protocol error";
        case WS_CLOSE_UNSUPPORTED_DATA: return "binary messages are not supported";
        case WS_CLOSE_INVALID_PAYLOAD: return "invalid UTF-8";
        case WS_CLOSE_POLICY: return "policy violation";
        case WS_CLOSE_TOO_BIG: return "message too big";
        case WS_CLOSE_INTERNAL_ERROR: return "out of memory";
        case WS_CLOSE_UNAUTHORIZED: return "unauthorized";
        case WS_CLOSE_RATE_LIMITED: return "rate limit exceeded";
        case WS_CLOSE_SLOW_CONSUMER: return "send queue over its limit";
    }
    return "";
}
