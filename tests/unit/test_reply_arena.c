/* test_reply_arena.c -- hiredis replies built in an arena: the same trees as
 * hiredis' own reader builds, across feeds of any size and across resets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply_arena.h"
#include "testlib.h"

/* Parses wire with the arena reader, fed chunk bytes at a time, and returns
 * the first complete reply (NULL if none). */
static redisReply *parse(redisReader *reader, const char *wire, size_t len, size_t chunk) {
    void *reply = NULL;
    for (size_t at = 0; at < len && !reply; at += chunk) {
        size_t n = len - at < chunk ? len - at : chunk;
        if (redisReaderFeed(reader, wire + at, n) != REDIS_OK) return NULL;
        if (redisReaderGetReply(reader, &reply) != REDIS_OK) return NULL;
    }
    return reply;
}

/* True when a and b are the same reply tree. */
static int same(const redisReply *a, const redisReply *b) {
    if (!a || !b || a->type != b->type) return 0;
    switch (a->type) {
        case REDIS_REPLY_INTEGER: return a->integer == b->integer;
        case REDIS_REPLY_NIL: return 1;
        case REDIS_REPLY_ARRAY:
            if (a->elements != b->elements) return 0;
            for (size_t i = 0; i < a->elements; i++)
                if (!same(a->element[i], b->element[i])) return 0;
            return 1;
        default: return a->len == b->len && memcmp(a->str, b->str, a->len) == 0 && !a->str[a->len];
    }
}

static const char *const wires[] = {
    "*3\r\n$7\r\nmessage\r\n$13\r\nherald:apps:x\r\n$9\r\n{\"a\":1.5}\r\n",
    "+OK\r\n",
    "-NOPERM this user has no permissions\r\n",
    ":-42\r\n",
    "$-1\r\n",
    "*-1\r\n",
    "*0\r\n",
    "$0\r\n\r\n",
    "*2\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nd\r\n$2\r\n{}\r\n*1\r\n:7\r\n",
    "*4\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n$-1\r\n",
};

static void test_replies_match_hiredis_whole_and_byte_by_byte(void) {
    struct reply_arena *arena = NULL;
    redisReader *mine = reply_arena_reader_new(&arena);
    CHECK(mine != NULL);
    for (size_t w = 0; w < sizeof wires / sizeof wires[0]; w++) {
        redisReader *theirs = redisReaderCreate();
        redisReply *expect = parse(theirs, wires[w], strlen(wires[w]), strlen(wires[w]));
        CHECK(expect != NULL);
        for (size_t chunk = 1; chunk <= strlen(wires[w]); chunk++) {
            redisReply *got = parse(mine, wires[w], strlen(wires[w]), chunk);
            if (!same(got, expect)) {
                fprintf(stderr, "  wire %zu, chunks of %zu: trees differ\n", w, chunk);
                CHECK(0);
            }
            reply_arena_reset(arena);
        }
        freeReplyObject(expect);
        redisReaderFree(theirs);
    }
    reply_arena_free(mine, arena);
}

/* Many replies read back to back, each handed on before the next is parsed,
 * and some larger than a chunk: every one intact after the resets before it. */
static void test_replies_survive_until_reset_across_many_and_large(void) {
    struct reply_arena *arena = NULL;
    redisReader *reader = reply_arena_reader_new(&arena);
    size_t big_len = 100000;
    char *big = malloc(big_len + 64);
    int n = snprintf(big, 64, "$%zu\r\n", big_len);
    memset(big + n, 'x', big_len);
    memcpy(big + n + big_len, "\r\n", 2);
    size_t wire_len = (size_t)n + big_len + 2;
    int bad = 0;
    for (int round = 0; round < 2000; round++) {
        char msg[128];
        int len = snprintf(msg, sizeof msg, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$%d\r\n%d\r\n",
                           round < 10     ? 1
                           : round < 100  ? 2
                           : round < 1000 ? 3
                                          : 4,
                           round);
        CHECK_INT(redisReaderFeed(reader, msg, (size_t)len), REDIS_OK);
        if (round % 500 == 0) CHECK_INT(redisReaderFeed(reader, big, wire_len), REDIS_OK);
        void *reply;
        while (redisReaderGetReply(reader, &reply) == REDIS_OK && reply) {
            redisReply *r = reply;
            if (r->type == REDIS_REPLY_ARRAY) {
                if (r->elements != 3 || atoi(r->element[2]->str) != round) bad++;
            } else if (r->type != REDIS_REPLY_STRING || r->len != big_len ||
                       r->str[big_len - 1] != 'x') {
                bad++;
            }
            reply_arena_reset(arena);
        }
    }
    CHECK_INT(bad, 0);
    free(big);
    reply_arena_free(reader, arena);
}

/* A reader that fails mid-reply (a protocol error) leaves the arena usable
 * for nothing more but freeable without leaks (LeakSanitizer checks). */
static void test_protocol_error_mid_reply_frees_cleanly(void) {
    struct reply_arena *arena = NULL;
    redisReader *reader = reply_arena_reader_new(&arena);
    const char *wire = "*2\r\n$3\r\nabc\r\n!bogus\r\n";
    void *reply = NULL;
    CHECK_INT(redisReaderFeed(reader, wire, strlen(wire)), REDIS_OK);
    CHECK_INT(redisReaderGetReply(reader, &reply), REDIS_ERR);
    CHECK(reply == NULL);
    reply_arena_free(reader, arena);
    /* and a half-built reply at free time */
    reader = reply_arena_reader_new(&arena);
    CHECK_INT(redisReaderFeed(reader, "*2\r\n$3\r\nabc\r\n", 13), REDIS_OK);
    CHECK_INT(redisReaderGetReply(reader, &reply), REDIS_OK);
    CHECK(reply == NULL);
    reply_arena_free(reader, arena);
}

/* An array header declaring more than REPLY_MAX_ELEMENTS fails the reader at
 * once instead of asking for room for all of them; up to the bound it is an
 * array like any other. */
static void test_array_over_the_bound_fails_the_reader(void) {
    char wire[64];
    void *reply = NULL;
    struct reply_arena *arena = NULL;
    redisReader *reader = reply_arena_reader_new(&arena);
    snprintf(wire, sizeof wire, "*%d\r\n", REPLY_MAX_ELEMENTS + 1);
    CHECK_INT(redisReaderFeed(reader, wire, strlen(wire)), REDIS_OK);
    CHECK_INT(redisReaderGetReply(reader, &reply), REDIS_ERR);
    CHECK(reply == NULL);
    reply_arena_free(reader, arena);
    reader = reply_arena_reader_new(&arena);
    snprintf(wire, sizeof wire, "*444444444\r\n:1\r\n");
    CHECK_INT(redisReaderFeed(reader, wire, strlen(wire)), REDIS_OK);
    CHECK_INT(redisReaderGetReply(reader, &reply), REDIS_ERR);
    reply_arena_free(reader, arena);
    reader = reply_arena_reader_new(&arena);
    snprintf(wire, sizeof wire, "*%d\r\n", REPLY_MAX_ELEMENTS);
    CHECK_INT(redisReaderFeed(reader, wire, strlen(wire)), REDIS_OK);
    CHECK_INT(redisReaderGetReply(reader, &reply), REDIS_OK);
    CHECK(reply == NULL); /* waits for its elements */
    reply_arena_free(reader, arena);
}

int main(void) {
    RUN(test_replies_match_hiredis_whole_and_byte_by_byte);
    RUN(test_replies_survive_until_reset_across_many_and_large);
    RUN(test_protocol_error_mid_reply_frees_cleanly);
    RUN(test_array_over_the_bound_fails_the_reader);
    return TEST_SUMMARY();
}
