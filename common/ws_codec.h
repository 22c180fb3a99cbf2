/* ws_codec.h -- RFC 6455 frame decoding and encoding over byte buffers.
 *
 * The codec knows nothing of sockets, JSON, JWT or Redis. A reader parses one
 * frame at a time from the start of a caller's buffer, the way picohttpparser
 * parses a request: it returns the bytes the frame occupies, WS_PARTIAL when
 * more bytes are needed, or WS_INVALID with the close code to fail the
 * connection with. Feeding a frame one byte at a time (a growing prefix of the
 * same buffer) gives exactly the same result as feeding it whole, because
 * nothing is changed in the reader or the buffer until a frame is complete.
 *
 * Message-level rules live here too: fragmentation with interleaved control
 * frames, the message size limit (checked from the frame header, before the
 * payload arrives), and UTF-8 validation of text carried across fragments. */
#ifndef HERALD_WS_CODEC_H
#define HERALD_WS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
    WS_OP_CONTINUATION = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL_ERROR = 1002,
    WS_CLOSE_UNSUPPORTED_DATA = 1003, /* binary frames */
    WS_CLOSE_NO_STATUS = 1005,        /* never sent on the wire */
    WS_CLOSE_INVALID_PAYLOAD = 1007,  /* invalid UTF-8 */
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL_ERROR = 1011,
    WS_CLOSE_UNAUTHORIZED = 4001,
    WS_CLOSE_RATE_LIMITED = 4008,
    WS_CLOSE_SLOW_CONSUMER = 4009,
};

#define WS_PARTIAL             (-2)
#define WS_INVALID             (-1)
#define WS_MAX_CONTROL_PAYLOAD 125
#define WS_MAX_HEADER_LEN      14 /* 2 + 8 (64-bit length) + 4 (mask) */

/* Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF). The state is one small integer so it can ride along in a
 * connection across fragments. */
#define WS_UTF8_ACCEPT 0
#define WS_UTF8_REJECT 1

/* Advances state over len bytes; returns the new state: WS_UTF8_ACCEPT at a
 * character boundary, WS_UTF8_REJECT once invalid (sticky), anything else
 * inside a multi-byte sequence. */
uint32_t ws_utf8_feed(uint32_t state, const uint8_t *buf, size_t len);

/* True when buf[0..len) is complete, valid UTF-8. */
bool ws_utf8_valid(const uint8_t *buf, size_t len);

/* One decoded frame. payload points into the caller's buffer, already unmasked. */
struct ws_frame {
    bool fin;
    enum ws_opcode opcode;
    uint8_t *payload;
    size_t payload_len;
    /* For WS_OP_CLOSE: the peer's code (WS_CLOSE_NO_STATUS when absent) and
     * reason (points into payload, not NUL-terminated). */
    uint16_t close_code;
    const uint8_t *close_reason;
    size_t close_reason_len;
    /* Set when the reader returns WS_INVALID: the close code to send. */
    uint16_t error_code;
};

/* Message-level state kept between frames of one connection. */
struct ws_reader {
    size_t max_message_size; /* inclusive limit on a whole (possibly fragmented) message */
    uint8_t
        message_opcode;  /* WS_OP_TEXT or WS_OP_BINARY while a fragmented message is open, else 0 */
    size_t message_len;  /* payload bytes of the open message so far */
    uint32_t utf8_state; /* validation state of the open text message */
    bool require_mask;   /* true on a server: unmasked frames are a protocol error;
                            false accepts masked and unmasked frames */
};

void ws_reader_init(struct ws_reader *r, size_t max_message_size, bool require_mask);

/* Decodes the frame at the start of buf[0..len). Returns:
 *   > 0         the bytes the frame occupies; *frame filled, payload unmasked in
 *               place, reader state advanced (fragment bookkeeping, UTF-8);
 *   WS_PARTIAL  more bytes are needed; buf and the reader are unchanged. When the
 *               header is complete, *need (if not NULL) is set to the whole frame's
 *               length so the caller can wait for exactly that much (0 while the
 *               length is not yet known);
 *   WS_INVALID  the connection must be failed with frame->error_code (1002 protocol,
 *               1007 invalid UTF-8, 1009 too big: detected from the header alone).
 * Text is validated per frame: a text frame (or continuation) whose bytes cannot
 * start valid UTF-8 fails at once with 1007; an incomplete sequence at the end of
 * a FIN frame fails too. Binary frames are returned as such; the caller decides
 * (Herald closes 1003). */
int ws_reader_next(struct ws_reader *r, uint8_t *buf, size_t len, struct ws_frame *frame,
                   size_t *need);

/* Writes an unmasked server frame header for a payload of payload_len bytes into
 * out (at least WS_MAX_HEADER_LEN bytes); returns the header length (2, 4 or 10). */
size_t ws_frame_header(uint8_t *out, enum ws_opcode opcode, bool fin, uint64_t payload_len);

/* Reads back the header of an unmasked server frame (as ws_frame_header
 * wrote it) from buf[0..len): sets *header_len and *payload_len and returns
 * 0, or -1 when the header is incomplete or masked. */
int ws_server_frame_size(const uint8_t *buf, size_t len, size_t *header_len, uint64_t *payload_len);

/* Writes a complete close frame (header + 2-byte code + reason, reason cut to fit
 * 125 bytes on a UTF-8 boundary) into out (at least 2 + 125 bytes); returns its length.
 * reason may be NULL; code WS_CLOSE_NO_STATUS writes a close frame with no payload. */
size_t ws_close_frame(uint8_t *out, uint16_t code, const char *reason);

/* The reason text Herald sends with a close code ("message too big", ...):
 * one table for every close the gateway initiates; "" for unknown codes. */
const char *ws_close_reason(uint16_t code);

/* True for codes a peer may send in a close frame (RFC 6455 7.4 and the IANA
 * registry: 1000-1003, 1007-1014, 3000-4999). */
bool ws_close_code_valid_from_peer(uint16_t code);

/* Applies a 4-byte mask starting at offset (for masking continued buffers). */
void ws_mask(uint8_t *buf, size_t len, const uint8_t mask[4], size_t offset);

#endif
