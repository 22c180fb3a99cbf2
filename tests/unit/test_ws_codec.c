/* test_ws_codec.c -- the RFC 6455 codec on byte arrays: header rules,
 * fragmentation, the message size limit, UTF-8, close frames, the encoder,
 * and the promise that a prefix of the input never changes anything. */
#include "testlib.h"
#include "ws_codec.h"

#include <stdint.h>
#include <stdlib.h>

#define LIMIT 65536

static const uint8_t test_mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Writes a masked client frame the way a browser would: header from the
 * encoder, mask bit and key added, payload masked. first_byte carries FIN,
 * RSV and opcode verbatim so tests can build invalid frames too. */
static size_t client_frame(uint8_t *out, uint8_t first_byte, const void *payload, size_t len) {
    size_t header_len = ws_frame_header(out, WS_OP_TEXT, true, len);
    out[0] = first_byte;
    out[1] |= 0x80;
    memcpy(out + header_len, test_mask_key, 4);
    if (len > 0) memcpy(out + header_len + 4, payload, len);
    ws_mask(out + header_len + 4, len, test_mask_key, 0);
    return header_len + 4 + len;
}

/* Decodes one frame with a fresh server reader; returns ws_reader_next's result. */
static int decode_one(uint8_t *buf, size_t len, struct ws_frame *frame) {
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    return ws_reader_next(&r, buf, len, frame, NULL);
}

/* True when the decoded frame's payload is exactly bytes[0..len). */
static bool payload_is(const struct ws_frame *f, const void *bytes, size_t len) {
    return f->payload_len == len &&
           (len == 0 || (f->payload && memcmp(f->payload, bytes, len) == 0));
}

static bool reader_eq(const struct ws_reader *a, const struct ws_reader *b) {
    return a->max_message_size == b->max_message_size && a->message_opcode == b->message_opcode &&
           a->message_len == b->message_len && a->utf8_state == b->utf8_state &&
           a->require_mask == b->require_mask;
}

/* Expects the frame in buf to fail the connection with code. */
static void expect_invalid(uint8_t *buf, size_t len, uint16_t code) {
    struct ws_frame f;
    CHECK_INT(decode_one(buf, len, &f), WS_INVALID);
    CHECK_INT(f.error_code, code);
}

/* ---- header ------------------------------------------------------------ */

/* One client frame (masked with test_mask_key, built by client_frame) decoded by
 * a fresh server reader with limit LIMIT. */
struct frame_case {
    const char *what;
    uint8_t first_byte;  /* FIN, RSV and opcode, verbatim */
    const char *payload; /* NULL: len bytes of 'p' */
    size_t len;
    uint16_t error_code; /* 0: the frame decodes */
    size_t fails_from;   /* error cases: a prefix this long already fails (0: not checked) */
    uint8_t opcode;      /* decoding cases */
    uint16_t close_code; /* decoding close frames */
    const char *close_reason;
    size_t close_reason_len;
};

static const struct frame_case frame_cases[] = {
    /* data frames */
    {"masked text", 0x81, "Hello", 5, 0, 0, WS_OP_TEXT, 0, NULL, 0},
    {"16-bit length", 0x81, NULL, 300, 0, 0, WS_OP_TEXT, 0, NULL, 0},
    {"64-bit length", 0x82, NULL, LIMIT, 0, 0, WS_OP_BINARY, 0, NULL, 0},
    {"over the limit", 0x82, NULL, LIMIT + 1, WS_CLOSE_TOO_BIG, 10, 0, 0, NULL, 0},
    {"binary with invalid UTF-8", 0x82, "a\xFF\xC0", 3, 0, 0, WS_OP_BINARY, 0, NULL, 0},
    {"text with invalid UTF-8", 0x81, "a\xFF", 2, WS_CLOSE_INVALID_PAYLOAD, 0, 0, 0, NULL, 0},
    {"text ending mid-character", 0x81, "ok\xE2\x82", 4, WS_CLOSE_INVALID_PAYLOAD, 0, 0, 0, NULL,
     0},
    {"continuation without a message", 0x80, "x", 1, WS_CLOSE_PROTOCOL_ERROR, 0, 0, 0, NULL, 0},
    {"non-final continuation without a message", 0x00, "x", 1, WS_CLOSE_PROTOCOL_ERROR, 0, 0, 0,
     NULL, 0},
    /* control frames */
    {"pong", 0x8A, "ab", 2, 0, 0, WS_OP_PONG, 0, NULL, 0},
    {"ping of 125", 0x89, NULL, 125, 0, 0, WS_OP_PING, 0, NULL, 0},
    {"ping of 126", 0x89, NULL, 126, WS_CLOSE_PROTOCOL_ERROR, 2, 0, 0, NULL, 0},
    {"pong of 126", 0x8A, NULL, 126, WS_CLOSE_PROTOCOL_ERROR, 2, 0, 0, NULL, 0},
    {"close of 126", 0x88, "\x03\xE8", 126, WS_CLOSE_PROTOCOL_ERROR, 2, 0, 0, NULL, 0},
    {"fragmented close", 0x08, "", 0, WS_CLOSE_PROTOCOL_ERROR, 0, 0, 0, NULL, 0},
    {"fragmented ping", 0x09, "", 0, WS_CLOSE_PROTOCOL_ERROR, 0, 0, 0, NULL, 0},
    {"fragmented pong", 0x0A, "", 0, WS_CLOSE_PROTOCOL_ERROR, 0, 0, 0, NULL, 0},
    /* close frames */
    {"close 4001 with a reason", 0x88, "\x0F\xA1g\xC3\xA9", 5, 0, 0, WS_OP_CLOSE, 4001, "g\xC3\xA9",
     3},
    {"close 1000", 0x88, "\x03\xE8", 2, 0, 0, WS_OP_CLOSE, WS_CLOSE_NORMAL, "", 0},
    {"empty close", 0x88, "", 0, 0, 0, WS_OP_CLOSE, WS_CLOSE_NO_STATUS, "", 0},
    {"close of one byte", 0x88, "\x03", 1, WS_CLOSE_PROTOCOL_ERROR, 2, 0, 0, NULL, 0},
    {"close reason invalid UTF-8", 0x88, "\x03\xE8\xC0\xAF", 4, WS_CLOSE_INVALID_PAYLOAD, 0, 0, 0,
     NULL, 0},
};

static void test_single_frame_table(void) {
    static uint8_t filler[LIMIT + 1], buf[LIMIT + 32];
    memset(filler, 'p', sizeof(filler));
    for (size_t i = 0; i < sizeof(frame_cases) / sizeof(frame_cases[0]); i++) {
        const struct frame_case *c = &frame_cases[i];
        const void *payload = c->payload;
        if (!payload || strlen(c->payload) < c->len) { /* pad with 'p' after the given bytes */
            size_t given = c->payload ? strlen(c->payload) : 0;
            if (given) memcpy(filler, c->payload, given);
            payload = filler;
        }
        size_t n = client_frame(buf, c->first_byte, payload, c->len);
        size_t header_len = n - 4 - c->len;
        struct ws_frame f;
        int rc = decode_one(buf, n, &f);
        int failed_before = testlib_current_failed;
        testlib_current_failed = 0;
        if (c->error_code) {
            CHECK_INT(rc, WS_INVALID);
            CHECK_INT(f.error_code, c->error_code);
            if (c->fails_from) {
                CHECK_INT(decode_one(buf, c->fails_from, &f), WS_INVALID);
                CHECK_INT(f.error_code, c->error_code);
            }
        } else {
            CHECK_INT(rc, (int)n);
            CHECK(f.fin);
            CHECK_INT(f.opcode, c->opcode);
            CHECK(f.payload == buf + header_len + 4 || c->len == 0);
            CHECK(payload_is(&f, payload, c->len));
            if (c->opcode == WS_OP_CLOSE) {
                CHECK_INT(f.close_code, c->close_code);
                CHECK_INT(f.close_reason_len, c->close_reason_len);
                CHECK(c->close_reason_len == 0 ||
                      (f.close_reason == f.payload + 2 &&
                       memcmp(f.close_reason, c->close_reason, c->close_reason_len) == 0));
            }
        }
        if (testlib_current_failed) fprintf(stderr, "  frame case \"%s\"\n", c->what);
        testlib_current_failed |= failed_before;
        if (payload == filler) memset(filler, 'p', c->len);
    }
}

/* Frames written byte by byte, for forms client_frame never produces. */
static void test_raw_frame_table(void) {
    static const struct {
        const char *what;
        uint8_t bytes[16];
        size_t len;
        size_t limit;
        bool require_mask;
        uint16_t error_code; /* 0: decodes to payload */
        size_t fails_from;   /* error cases: a prefix this long already fails */
        const char *payload;
    } cases[] = {
        {"RFC 6455 5.7 masked Hello",
         {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
         11,
         LIMIT,
         true,
         0,
         0,
         "Hello"},
        {"unmasked", {0x81, 0x02, 'H', 'i'}, 4, LIMIT, true, WS_CLOSE_PROTOCOL_ERROR, 2, NULL},
        {"unmasked, mask not required", {0x81, 0x02, 'H', 'i'}, 4, LIMIT, false, 0, 0, "Hi"},
        {"non-minimal 16-bit length",
         {0x81, 0x80 | 126, 0, 2, 0, 0, 0, 0, 'H', 'i'},
         10,
         LIMIT,
         true,
         0,
         0,
         "Hi"},
        {"non-minimal 64-bit length",
         {0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 'H', 'i'},
         16,
         LIMIT,
         true,
         0,
         0,
         "Hi"},
        {"64-bit length with the top bit",
         {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
         14,
         SIZE_MAX,
         true,
         WS_CLOSE_PROTOCOL_ERROR,
         10,
         NULL},
        {"close in 16-bit length form",
         {0x88, 0x80 | 126, 0, 0, 1, 2, 3, 4},
         8,
         LIMIT,
         true,
         WS_CLOSE_PROTOCOL_ERROR,
         2,
         NULL},
        {"ping in 16-bit length form",
         {0x89, 0x80 | 126, 0, 0, 1, 2, 3, 4},
         8,
         LIMIT,
         true,
         WS_CLOSE_PROTOCOL_ERROR,
         2,
         NULL},
        {"pong in 16-bit length form",
         {0x8A, 0x80 | 126, 0, 0, 1, 2, 3, 4},
         8,
         LIMIT,
         true,
         WS_CLOSE_PROTOCOL_ERROR,
         2,
         NULL},
        {"1001 bytes over a limit of 1000, header only",
         {0x81, 0x80 | 126, 0x03, 0xE9, 1, 2, 3, 4},
         8,
         1000,
         true,
         WS_CLOSE_TOO_BIG,
         4,
         NULL},
        {"2^62 bytes, header only",
         {0x82, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0},
         10,
         1000,
         true,
         WS_CLOSE_TOO_BIG,
         10,
         NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[16];
        struct ws_reader r;
        struct ws_frame f;
        int failed_before = testlib_current_failed;
        testlib_current_failed = 0;
        memcpy(buf, cases[i].bytes, sizeof(buf));
        ws_reader_init(&r, cases[i].limit, cases[i].require_mask);
        int rc = ws_reader_next(&r, buf, cases[i].len, &f, NULL);
        if (cases[i].error_code) {
            CHECK_INT(rc, WS_INVALID);
            CHECK_INT(f.error_code, cases[i].error_code);
            ws_reader_init(&r, cases[i].limit, cases[i].require_mask);
            CHECK_INT(ws_reader_next(&r, buf, cases[i].fails_from, &f, NULL), WS_INVALID);
            CHECK_INT(f.error_code, cases[i].error_code);
        } else {
            CHECK_INT(rc, (int)cases[i].len);
            CHECK(payload_is(&f, cases[i].payload, strlen(cases[i].payload)));
        }
        if (testlib_current_failed) fprintf(stderr, "  raw case \"%s\"\n", cases[i].what);
        testlib_current_failed |= failed_before;
    }
}

static void test_rsv_bits_close_1002(void) {
    static const uint8_t first_bytes[] = {0x81 | 0x40, 0x81 | 0x20, 0x81 | 0x10, 0x81 | 0x70};
    for (size_t i = 0; i < sizeof(first_bytes); i++) {
        uint8_t buf[16];
        size_t n = client_frame(buf, first_bytes[i], "x", 1);
        expect_invalid(buf, n, WS_CLOSE_PROTOCOL_ERROR);
        expect_invalid(buf, 1, WS_CLOSE_PROTOCOL_ERROR);
    }
}

static void test_reserved_opcodes_close_1002(void) {
    static const uint8_t opcodes[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof(opcodes); i++) {
        uint8_t buf[16];
        size_t n = client_frame(buf, (uint8_t)(0x80 | opcodes[i]), "x", 1);
        expect_invalid(buf, n, WS_CLOSE_PROTOCOL_ERROR);
    }
}

/* ---- fragmentation --------------------------------------------------------- */

/* Frames fed in order to one server reader; each frame's expected outcome. */
struct seq_frame {
    uint8_t first_byte;  /* 0xFF ends the sequence */
    const char *payload; /* NULL: len bytes of 'p' */
    size_t len;
    uint16_t error_code; /* 0: decodes */
};

#define SEQ_END                                                                                    \
    { 0xFF, NULL, 0, 0 }

static const struct {
    const char *what;
    size_t limit;
    struct seq_frame frames[5];
    uint8_t open_opcode; /* the reader's message_opcode after the last frame */
} sequence_cases[] = {
    {"text then text while fragmented",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x81, "b", 1, WS_CLOSE_PROTOCOL_ERROR}, SEQ_END},
     0},
    {"text then non-final text while fragmented",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x01, "b", 1, WS_CLOSE_PROTOCOL_ERROR}, SEQ_END},
     0},
    {"text then binary while fragmented",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x82, "b", 1, WS_CLOSE_PROTOCOL_ERROR}, SEQ_END},
     0},
    {"text then non-final binary while fragmented",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x02, "b", 1, WS_CLOSE_PROTOCOL_ERROR}, SEQ_END},
     0},
    {"close between fragments",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x88, "\x03\xE8", 2, 0}, SEQ_END},
     WS_OP_TEXT},
    {"continuation after the final fragment",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x80, "b", 1, 0}, {0x80, "c", 1, WS_CLOSE_PROTOCOL_ERROR}, SEQ_END},
     0},
    {"new text after the final fragment",
     LIMIT,
     {{0x01, "a", 1, 0}, {0x80, "b", 1, 0}, {0x81, "c", 1, 0}, SEQ_END},
     0},
    /* the message size limit */
    {"message of exactly the limit", 1000, {{0x81, NULL, 1000, 0}, SEQ_END}, 0},
    {"fragmented message of exactly the limit, then another",
     1000,
     {{0x02, NULL, 600, 0},
      {0x00, NULL, 0, 0},
      {0x80, NULL, 400, 0},
      {0x82, NULL, 600, 0},
      SEQ_END},
     0},
    {"fragmented message one byte over the limit",
     1000,
     {{0x02, NULL, 600, 0}, {0x80, NULL, 401, WS_CLOSE_TOO_BIG}, SEQ_END},
     0},
    {"control frames do not count against the limit",
     10,
     {{0x01, NULL, 10, 0}, {0x89, NULL, 100, 0}, {0x80, NULL, 0, 0}, SEQ_END},
     0},
    /* UTF-8 across fragments: U+1F600 (F0 9F 98 80) cut at every byte */
    {"4-byte character split 1/1/2",
     LIMIT,
     {{0x01, "\xF0", 1, 0}, {0x00, "\x9F", 1, 0}, {0x80, "\x98\x80", 2, 0}, SEQ_END},
     0},
    {"4-byte character split 2/1/1",
     LIMIT,
     {{0x01, "\xF0\x9F", 2, 0}, {0x00, "\x98", 1, 0}, {0x80, "\x80", 1, 0}, SEQ_END},
     0},
    {"4-byte character split 3/0/1",
     LIMIT,
     {{0x01, "\xF0\x9F\x98", 3, 0}, {0x00, "", 0, 0}, {0x80, "\x80", 1, 0}, SEQ_END},
     0},
    {"4-byte character in the middle fragment",
     LIMIT,
     {{0x01, "", 0, 0}, {0x00, "\xF0\x9F\x98\x80", 4, 0}, {0x80, "", 0, 0}, SEQ_END},
     0},
    {"surrogate start in the first fragment fails before FIN",
     LIMIT,
     {{0x01, "ok\xED\xA0", 4, WS_CLOSE_INVALID_PAYLOAD}, SEQ_END},
     0},
    {"non-continuation byte in a continuation",
     LIMIT,
     {{0x01, "\xE2\x82", 2, 0}, {0x00, "A", 1, WS_CLOSE_INVALID_PAYLOAD}, SEQ_END},
     0},
    {"character cut by FIN",
     LIMIT,
     {{0x01, "\xE2", 1, 0}, {0x80, "\x82", 1, WS_CLOSE_INVALID_PAYLOAD}, SEQ_END},
     0},
};

static void test_frame_sequence_table(void) {
    static uint8_t filler[1024], buf[1100];
    for (size_t i = 0; i < sizeof(sequence_cases) / sizeof(sequence_cases[0]); i++) {
        struct ws_reader r;
        int failed_before = testlib_current_failed;
        testlib_current_failed = 0;
        ws_reader_init(&r, sequence_cases[i].limit, true);
        for (const struct seq_frame *fr = sequence_cases[i].frames; fr->first_byte != 0xFF; fr++) {
            struct ws_frame f;
            memset(filler, 'p', sizeof(filler));
            size_t n = client_frame(buf, fr->first_byte,
                                    fr->payload ? (const void *)fr->payload : (const void *)filler,
                                    fr->len);
            int rc = ws_reader_next(&r, buf, n, &f, NULL);
            if (fr->error_code) {
                CHECK_INT(rc, WS_INVALID);
                CHECK_INT(f.error_code, fr->error_code);
                break;
            }
            CHECK_INT(rc, (int)n);
            if (rc == (int)n && fr[1].first_byte == 0xFF) {
                CHECK_INT(r.message_opcode, sequence_cases[i].open_opcode);
                if (!sequence_cases[i].open_opcode) CHECK_INT(r.utf8_state, WS_UTF8_ACCEPT);
            }
        }
        if (testlib_current_failed) fprintf(stderr, "  sequence \"%s\"\n", sequence_cases[i].what);
        testlib_current_failed |= failed_before;
    }
}

static void test_fragmented_message_tracks_state_and_resets_on_fin(void) {
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    uint8_t buf[64];
    struct ws_frame f;
    size_t n = client_frame(buf, 0x01, "abc", 3);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    CHECK(!f.fin);
    CHECK_INT(f.opcode, WS_OP_TEXT);
    CHECK_INT(r.message_opcode, WS_OP_TEXT);
    CHECK_INT(r.message_len, 3);

    n = client_frame(buf, 0x00, "defg", 4);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    CHECK_INT(f.opcode, WS_OP_CONTINUATION);
    CHECK_INT(r.message_len, 7);

    n = client_frame(buf, 0x80, "h", 1);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    CHECK(f.fin);
    CHECK_INT(f.opcode, WS_OP_CONTINUATION);
    CHECK(payload_is(&f, "h", 1));
    CHECK_INT(r.message_opcode, 0);
    CHECK_INT(r.message_len, 0);

    /* The message is over: a continuation is now an error, a new text is not. */
    struct ws_reader after = r;
    n = client_frame(buf, 0x80, "x", 1);
    CHECK_INT(ws_reader_next(&after, buf, n, &f, NULL), WS_INVALID);
    CHECK_INT(f.error_code, WS_CLOSE_PROTOCOL_ERROR);
    n = client_frame(buf, 0x81, "x", 1);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
}

static void test_ping_between_fragments(void) {
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    uint8_t buf[64];
    struct ws_frame f;
    /* "é" (C3 A9) split across the fragments, with a ping and a pong between. */
    size_t n = client_frame(buf, 0x01, "a\xC3", 2);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    struct ws_reader before_ping = r;

    n = client_frame(buf, 0x89, "ping", 4);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    CHECK_INT(f.opcode, WS_OP_PING);
    CHECK(payload_is(&f, "ping", 4));
    n = client_frame(buf, 0x8A, "", 0);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    CHECK_INT(f.opcode, WS_OP_PONG);
    CHECK(reader_eq(&r, &before_ping));

    n = client_frame(buf, 0x80, "\xA9z", 2);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    CHECK(f.fin);
    CHECK_INT(r.message_opcode, 0);
}

/* The limit is seen from the continuation's header, before its payload. */
static void test_fragmented_message_over_limit_closes_1009_from_header(void) {
    struct ws_reader r;
    ws_reader_init(&r, 1000, true);
    static uint8_t payload[600], buf[700];
    memset(payload, 'x', sizeof(payload));
    struct ws_frame f;
    size_t n = client_frame(buf, 0x01, payload, 600);
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
    /* 600 + 401 > 1000, seen from the continuation's first four bytes. */
    n = client_frame(buf, 0x80, payload, 401);
    struct ws_reader before = r;
    CHECK_INT(ws_reader_next(&r, buf, 4, &f, NULL), WS_INVALID);
    CHECK_INT(f.error_code, WS_CLOSE_TOO_BIG);
    CHECK(reader_eq(&r, &before));
}

/* ---- close frames --------------------------------------------------------- */

static void test_close_frame_with_disallowed_code_closes_1002(void) {
    static const uint16_t codes[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        uint8_t payload[2] = {(uint8_t)(codes[i] >> 8), (uint8_t)codes[i]};
        uint8_t buf[16];
        size_t n = client_frame(buf, 0x88, payload, 2);
        struct ws_frame f;
        CHECK_INT(decode_one(buf, n, &f), WS_INVALID);
        if (f.error_code != WS_CLOSE_PROTOCOL_ERROR) fprintf(stderr, "  close code %u\n", codes[i]);
        CHECK_INT(f.error_code, WS_CLOSE_PROTOCOL_ERROR);
    }
}

static void test_close_code_validity_table(void) {
    static const struct {
        uint16_t code;
        bool valid;
    } cases[] = {
        {0, false},    {999, false},  {1000, true},  {1001, true},   {1002, true}, {1003, true},
        {1004, false}, {1005, false}, {1006, false}, {1007, true},   {1008, true}, {1009, true},
        {1010, true},  {1011, true},  {1012, true},  {1013, true},   {1014, true}, {1015, false},
        {1016, false}, {2000, false}, {2999, false}, {3000, true},   {3999, true}, {4000, true},
        {4001, true},  {4999, true},  {5000, false}, {65535, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (ws_close_code_valid_from_peer(cases[i].code) != cases[i].valid)
            fprintf(stderr, "  close code %u\n", cases[i].code);
        CHECK(ws_close_code_valid_from_peer(cases[i].code) == cases[i].valid);
    }
}

/* ---- incremental input ----------------------------------------------------- */

static void test_partial_leaves_buffer_and_reader_untouched(void) {
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    uint8_t first[16];
    struct ws_frame f;
    size_t n = client_frame(first, 0x01, "\xC3", 1); /* leave UTF-8 state mid-character */
    CHECK_INT(ws_reader_next(&r, first, n, &f, NULL), (int)n);

    uint8_t buf[64], copy[64];
    n = client_frame(buf, 0x80, "\xA9 done", 6);
    memcpy(copy, buf, n);
    struct ws_reader before = r;
    for (size_t len = 0; len < n; len++) {
        size_t need = 12345;
        CHECK_INT(ws_reader_next(&r, buf, len, &f, &need), WS_PARTIAL);
        CHECK_INT(need, len < 2 ? 0 : n);
        CHECK(memcmp(buf, copy, n) == 0);
        CHECK(reader_eq(&r, &before));
    }
    CHECK_INT(ws_reader_next(&r, buf, n, &f, NULL), (int)n);
}

static void test_need_reports_whole_frame_length_from_header(void) {
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    struct ws_frame f;
    size_t need = 0;
    uint8_t h16[] = {0x81, 0x80 | 126, 0x01, 0x2C}; /* 300 bytes */
    CHECK_INT(ws_reader_next(&r, h16, 3, &f, &need), WS_PARTIAL);
    CHECK_INT(need, 0);
    CHECK_INT(ws_reader_next(&r, h16, 4, &f, &need), WS_PARTIAL);
    CHECK_INT(need, 4 + 4 + 300);
    uint8_t h64[] = {0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0}; /* 65536 bytes */
    CHECK_INT(ws_reader_next(&r, h64, sizeof(h64), &f, &need), WS_PARTIAL);
    CHECK_INT(need, 10 + 4 + 65536);
}

struct decode_result {
    int ret;
    struct ws_frame frame;
    size_t offset; /* where the frame started in the stream */
};

/* Decodes a stream frame after frame until it is used up or an error/partial
 * result; returns the number of results stored. */
static size_t decode_stream(uint8_t *buf, size_t len, struct decode_result *out, size_t max) {
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    size_t count = 0, off = 0;
    while (count < max) {
        out[count].offset = off;
        int ret = ws_reader_next(&r, buf + off, len - off, &out[count].frame, NULL);
        out[count++].ret = ret;
        if (ret <= 0) break;
        off += (size_t)ret;
    }
    return count;
}

/* Builds a stream with 16-bit and 64-bit lengths, fragments with a ping
 * between them, a split UTF-8 character, and a close. */
static size_t build_stream(uint8_t *buf) {
    static uint8_t big[70000];
    for (size_t i = 0; i < sizeof(big); i++) big[i] = (uint8_t)('a' + i % 26);
    size_t n = 0;
    n += client_frame(buf + n, 0x81, "{\"type\":\"ping\"}", 15);
    n += client_frame(buf + n, 0x81, big, 300);
    n += client_frame(buf + n, 0x01, "caf\xC3", 4);
    n += client_frame(buf + n, 0x89, "p", 1);
    n += client_frame(buf + n, 0x00, "\xA9 ", 2);
    n += client_frame(buf + n, 0x80, big, LIMIT - 6);
    n += client_frame(buf + n, 0x82, big, LIMIT);
    n += client_frame(buf + n, 0x8A, "", 0);
    n += client_frame(buf + n, 0x88,
                      "\x03\xE8"
                      "bye",
                      5);
    return n;
}

static void test_byte_at_a_time_matches_whole_feed(void) {
    static uint8_t stream[2 * LIMIT + 1000], whole[sizeof(stream)], fed[sizeof(stream)];
    size_t len = build_stream(stream);
    memcpy(whole, stream, len);
    struct decode_result expected[16];
    size_t count = decode_stream(whole, len, expected, 16);
    CHECK_INT(count, 10); /* nine frames, then PARTIAL on the empty rest */
    CHECK_INT(expected[count - 1].ret, WS_PARTIAL);
    CHECK_INT(expected[count - 1].offset, len);

    /* Feed a growing prefix of the same buffer, as a connection would. */
    memcpy(fed, stream, len);
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, true);
    size_t off = 0, frame_index = 0, avail = 0, calls = 0;
    int mismatches = 0;
    while (avail <= len && frame_index < count - 1) {
        struct ws_frame f;
        int ret = ws_reader_next(&r, fed + off, avail - off, &f, NULL);
        calls++;
        const struct decode_result *want = &expected[frame_index];
        if (avail - off < (size_t)want->ret) {
            if (ret != WS_PARTIAL) mismatches++;
            avail++;
            continue;
        }
        if (ret != want->ret || f.opcode != want->frame.opcode || f.fin != want->frame.fin ||
            f.payload_len != want->frame.payload_len ||
            f.payload - fed != want->frame.payload - whole ||
            memcmp(f.payload, want->frame.payload, f.payload_len) != 0 ||
            f.close_code != want->frame.close_code)
            mismatches++;
        off += (size_t)ret;
        frame_index++;
    }
    CHECK_INT(mismatches, 0);
    CHECK_INT(frame_index, count - 1);
    CHECK_INT(calls, len + count - 1);
    CHECK(memcmp(fed, whole, len) == 0);
    CHECK_INT(expected[8].frame.close_code, WS_CLOSE_NORMAL);
    CHECK_INT(expected[5].frame.payload_len, LIMIT - 6);
}

static void test_invalid_stream_prefixes_are_partial_or_same_error(void) {
    /* Valid frames, then a text frame with a bad byte at its end. */
    uint8_t stream[128];
    size_t n = 0;
    n += client_frame(stream + n, 0x89, "x", 1);
    size_t bad_at = n;
    n += client_frame(stream + n, 0x81, "abc\xF5", 4);
    for (size_t len = 0; len <= n - bad_at; len++) {
        uint8_t copy[128];
        memcpy(copy, stream + bad_at, n - bad_at);
        struct ws_frame f;
        int ret = decode_one(copy, len, &f);
        CHECK_INT(ret, len < n - bad_at ? WS_PARTIAL : WS_INVALID);
        if (ret == WS_INVALID) CHECK_INT(f.error_code, WS_CLOSE_INVALID_PAYLOAD);
    }
}

/* ---- UTF-8 validator -------------------------------------------------------- */

static void test_utf8_table(void) {
    static const struct {
        const char *name;
        const char *bytes;
        size_t len;
        bool valid;
    } cases[] = {
        {"empty", "", 0, true},
        {"ascii", "hello", 5, true},
        {"nul byte", "a\0b", 3, true},
        {"2-byte U+00E9", "\xC3\xA9", 2, true},
        {"2-byte lowest U+0080", "\xC2\x80", 2, true},
        {"2-byte highest U+07FF", "\xDF\xBF", 2, true},
        {"3-byte U+20AC", "\xE2\x82\xAC", 3, true},
        {"3-byte lowest U+0800", "\xE0\xA0\x80", 3, true},
        {"3-byte U+D7FF before surrogates", "\xED\x9F\xBF", 3, true},
        {"3-byte U+E000 after surrogates", "\xEE\x80\x80", 3, true},
        {"3-byte U+FFFF", "\xEF\xBF\xBF", 3, true},
        {"4-byte U+1F600", "\xF0\x9F\x98\x80", 4, true},
        {"4-byte lowest U+10000", "\xF0\x90\x80\x80", 4, true},
        {"4-byte U+10FFFF", "\xF4\x8F\xBF\xBF", 4, true},
        {"overlong 2-byte C0 80", "\xC0\x80", 2, false},
        {"overlong 2-byte C1 BF", "\xC1\xBF", 2, false},
        {"overlong 3-byte E0 80 80", "\xE0\x80\x80", 3, false},
        {"overlong 3-byte E0 9F BF", "\xE0\x9F\xBF", 3, false},
        {"overlong 4-byte F0 80 80 80", "\xF0\x80\x80\x80", 4, false},
        {"overlong 4-byte F0 8F BF BF", "\xF0\x8F\xBF\xBF", 4, false},
        {"surrogate U+D800", "\xED\xA0\x80", 3, false},
        {"surrogate U+DFFF", "\xED\xBF\xBF", 3, false},
        {"U+110000", "\xF4\x90\x80\x80", 4, false},
        {"F5 lead", "\xF5\x80\x80\x80", 4, false},
        {"FF byte", "\xFF", 1, false},
        {"FE byte", "\xFE", 1, false},
        {"stray continuation", "a\x80", 2, false},
        {"stray continuation after char", "\xC3\xA9\xA9", 3, false},
        {"truncated 2-byte", "\xC3", 1, false},
        {"truncated 3-byte", "a\xE2\x82", 3, false},
        {"truncated 4-byte", "\xF0\x9F\x98", 3, false},
        {"lead then ascii",
         "\xC3"
         "a",
         2, false},
        {"lead then lead", "\xE2\xE2\x82\xAC", 4, false},
        {"5-byte form", "\xF8\x88\x80\x80\x80", 5, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint8_t *bytes = (const uint8_t *)cases[i].bytes;
        bool valid = ws_utf8_valid(bytes, cases[i].len);
        if (valid != cases[i].valid) fprintf(stderr, "  utf8 case: %s\n", cases[i].name);
        CHECK(valid == cases[i].valid);
        /* Fed one byte at a time, the verdict is the same. */
        uint32_t state = WS_UTF8_ACCEPT;
        for (size_t j = 0; j < cases[i].len; j++) state = ws_utf8_feed(state, bytes + j, 1);
        CHECK((state == WS_UTF8_ACCEPT) == cases[i].valid);
    }
}

static void test_utf8_reject_is_sticky(void) {
    uint32_t state = ws_utf8_feed(WS_UTF8_ACCEPT, (const uint8_t *)"\xC0", 1);
    CHECK_INT(state, WS_UTF8_REJECT);
    CHECK_INT(ws_utf8_feed(state, (const uint8_t *)"abc", 3), WS_UTF8_REJECT);
    CHECK_INT(ws_utf8_feed(state, (const uint8_t *)"", 0), WS_UTF8_REJECT);
}

static void test_utf8_mid_sequence_state_is_neither_accept_nor_reject(void) {
    uint32_t state = ws_utf8_feed(WS_UTF8_ACCEPT, (const uint8_t *)"\xF0\x9F", 2);
    CHECK(state != WS_UTF8_ACCEPT);
    CHECK(state != WS_UTF8_REJECT);
    CHECK_INT(ws_utf8_feed(state, (const uint8_t *)"\x98\x80", 2), WS_UTF8_ACCEPT);
}

/* Every code point through the validator against a reference encoder. */
static void test_utf8_every_code_point(void) {
    int failures = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        uint8_t b[4];
        size_t n;
        if (cp < 0x80) {
            b[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xC0 | cp >> 6);
            b[1] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xE0 | cp >> 12);
            b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
            b[2] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            b[0] = (uint8_t)(0xF0 | cp >> 18);
            b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
            b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
            b[3] = (uint8_t)(0x80 | (cp & 0x3F));
            n = 4;
        }
        bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        if (ws_utf8_valid(b, n) == surrogate) failures++;
    }
    CHECK_INT(failures, 0);
}

/* ---- encoder -------------------------------------------------------------- */

static void test_frame_header_forms(void) {
    static const struct {
        uint64_t len;
        size_t header_len;
        uint8_t second_byte;
    } cases[] = {
        {0, 2, 0},       {125, 2, 125},    {126, 4, 126},
        {65535, 4, 126}, {65536, 10, 127}, {(uint64_t)1 << 40, 10, 127},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t out[WS_MAX_HEADER_LEN];
        CHECK_INT(ws_frame_header(out, WS_OP_TEXT, true, cases[i].len), cases[i].header_len);
        CHECK_INT(out[0], 0x81);
        CHECK_INT(out[1], cases[i].second_byte); /* server frames are never masked */
        uint64_t decoded = out[1];
        if (cases[i].header_len > 2) {
            decoded = 0;
            for (size_t j = 2; j < cases[i].header_len; j++) decoded = decoded << 8 | out[j];
        }
        CHECK(decoded == cases[i].len);
    }
    uint8_t out[WS_MAX_HEADER_LEN];
    ws_frame_header(out, WS_OP_CONTINUATION, false, 1);
    CHECK_INT(out[0], 0x00);
    ws_frame_header(out, WS_OP_PONG, true, 1);
    CHECK_INT(out[0], 0x8A);
}

static void test_encoder_round_trip(void) {
    static const size_t lengths[] = {0, 1, 125, 126, 1000, 65535, 65536};
    static uint8_t payload[65536], buf[65536 + 16];
    for (size_t i = 0; i < sizeof(payload); i++) payload[i] = (uint8_t)(' ' + i % 90);
    for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        size_t len = lengths[i];
        /* A client frame: our header with the mask bit, a key, masked in two
         * pieces to exercise the offset. */
        size_t header_len = ws_frame_header(buf, WS_OP_TEXT, true, len);
        buf[1] |= 0x80;
        memcpy(buf + header_len, test_mask_key, 4);
        uint8_t *body = buf + header_len + 4;
        memcpy(body, payload, len);
        size_t half = len / 2 + (len & 1);
        ws_mask(body, half, test_mask_key, 0);
        ws_mask(body + half, len - half, test_mask_key, half);
        if (len >= 4) CHECK(memcmp(body, payload, 4) != 0);

        struct ws_reader r;
        ws_reader_init(&r, 65536, true);
        struct ws_frame f;
        CHECK_INT(ws_reader_next(&r, buf, header_len + 4 + len, &f, NULL),
                  (int)(header_len + 4 + len));
        CHECK_INT(f.payload_len, len);
        CHECK(payload_is(&f, payload, len));
    }
}

static void test_server_frame_decodes_with_client_reader(void) {
    uint8_t buf[64];
    size_t n = ws_frame_header(buf, WS_OP_TEXT, true, 5);
    memcpy(buf + n, "hello", 5);
    struct ws_reader r;
    ws_reader_init(&r, LIMIT, false);
    struct ws_frame f;
    CHECK_INT(ws_reader_next(&r, buf, n + 5, &f, NULL), (int)n + 5);
    CHECK(payload_is(&f, "hello", 5));
}

static void test_mask_is_its_own_inverse_at_any_offset(void) {
    uint8_t data[11], orig[11];
    for (size_t i = 0; i < sizeof(data); i++) data[i] = orig[i] = (uint8_t)i;
    ws_mask(data, sizeof(data), test_mask_key, 3);
    CHECK_INT(data[0], 0 ^ test_mask_key[3]);
    CHECK_INT(data[1], 1 ^ test_mask_key[0]);
    ws_mask(data, sizeof(data), test_mask_key, 3);
    CHECK(memcmp(data, orig, sizeof(data)) == 0);
}

static void test_close_frame_encoding(void) {
    uint8_t out[2 + WS_MAX_CONTROL_PAYLOAD];
    size_t n = ws_close_frame(out, WS_CLOSE_TOO_BIG, "too big");
    CHECK_INT(n, 2 + 2 + 7);
    CHECK_INT(out[0], 0x88);
    CHECK_INT(out[1], 9);
    CHECK_INT(out[2] << 8 | out[3], 1009);
    CHECK(memcmp(out + 4, "too big", 7) == 0);

    n = ws_close_frame(out, WS_CLOSE_NORMAL, NULL);
    CHECK_INT(n, 4);
    CHECK_INT(out[1], 2);

    n = ws_close_frame(out, WS_CLOSE_NO_STATUS, "ignored");
    CHECK_INT(n, 2);
    CHECK_INT(out[1], 0);
}

static void test_close_frame_reason_truncated_on_utf8_boundary(void) {
    uint8_t out[2 + WS_MAX_CONTROL_PAYLOAD + 8];
    char reason[200];
    /* 122 ASCII bytes then "é": byte 123 would split the character. */
    memset(reason, 'r', 122);
    strcpy(reason + 122, "\xC3\xA9tail");
    memset(out, 0xEE, sizeof(out));
    size_t n = ws_close_frame(out, WS_CLOSE_POLICY, reason);
    CHECK_INT(n, 2 + 2 + 122);
    CHECK_INT(out[1], 124);
    CHECK(ws_utf8_valid(out + 4, n - 4));
    CHECK_INT(out[n], 0xEE);

    /* 121 ASCII then "é" ends exactly at 123 bytes: kept whole. */
    memset(reason, 'r', 121);
    strcpy(reason + 121, "\xC3\xA9tail");
    n = ws_close_frame(out, WS_CLOSE_POLICY, reason);
    CHECK_INT(n, 2 + 125);
    CHECK(memcmp(out + 4 + 121, "\xC3\xA9", 2) == 0);

    /* A long reason of 4-byte characters is cut to 120 bytes, all whole. */
    reason[0] = '\0';
    for (int i = 0; i < 40; i++) strcat(reason, "\xF0\x9F\x98\x80");
    n = ws_close_frame(out, WS_CLOSE_POLICY, reason);
    CHECK_INT(n, 2 + 2 + 120);
    CHECK(ws_utf8_valid(out + 4, n - 4));

    /* The encoded frame decodes as a valid close with the same code. */
    uint8_t client[200];
    size_t cn = client_frame(client, out[0], out + 2, n - 2);
    struct ws_frame f;
    CHECK_INT(decode_one(client, cn, &f), (int)cn);
    CHECK_INT(f.close_code, WS_CLOSE_POLICY);
    CHECK_INT(f.close_reason_len, 120);
}

static void test_every_gateway_close_code_has_a_reason_from_the_table(void) {
    const uint16_t codes[] = {
        WS_CLOSE_GOING_AWAY,      WS_CLOSE_PROTOCOL_ERROR, WS_CLOSE_UNSUPPORTED_DATA,
        WS_CLOSE_INVALID_PAYLOAD, WS_CLOSE_TOO_BIG,        WS_CLOSE_INTERNAL_ERROR,
        WS_CLOSE_UNAUTHORIZED,    WS_CLOSE_RATE_LIMITED,   WS_CLOSE_SLOW_CONSUMER};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *reason = ws_close_reason(codes[i]);
        CHECK(reason != NULL && reason[0] != '\0');
        CHECK(strlen(reason) <= WS_MAX_CONTROL_PAYLOAD - 2);
    }
    CHECK_STR(ws_close_reason(WS_CLOSE_TOO_BIG), "message too big");
    CHECK_STR(ws_close_reason(4999), "");
}

int main(void) {
    RUN(test_single_frame_table);
    RUN(test_raw_frame_table);
    RUN(test_frame_sequence_table);
    RUN(test_rsv_bits_close_1002);
    RUN(test_reserved_opcodes_close_1002);

    RUN(test_fragmented_message_tracks_state_and_resets_on_fin);
    RUN(test_ping_between_fragments);

    RUN(test_fragmented_message_over_limit_closes_1009_from_header);

    RUN(test_close_frame_with_disallowed_code_closes_1002);
    RUN(test_close_code_validity_table);

    RUN(test_partial_leaves_buffer_and_reader_untouched);
    RUN(test_need_reports_whole_frame_length_from_header);
    RUN(test_byte_at_a_time_matches_whole_feed);
    RUN(test_invalid_stream_prefixes_are_partial_or_same_error);

    RUN(test_utf8_table);
    RUN(test_utf8_reject_is_sticky);
    RUN(test_utf8_mid_sequence_state_is_neither_accept_nor_reject);
    RUN(test_utf8_every_code_point);

    RUN(test_frame_header_forms);
    RUN(test_encoder_round_trip);
    RUN(test_server_frame_decodes_with_client_reader);
    RUN(test_mask_is_its_own_inverse_at_any_offset);
    RUN(test_close_frame_encoding);
    RUN(test_close_frame_reason_truncated_on_utf8_boundary);
    RUN(test_every_gateway_close_code_has_a_reason_from_the_table);
    return TEST_SUMMARY();
}
