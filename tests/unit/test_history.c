/* test_history.c -- history key names, message header parsing and offset
 * order, as tables. */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "history.h"
#include "testlib.h"

static const struct {
    const char *payload;
    enum history_parse_result result;
    const char *epoch, *offset, *data;
} parse_table[] = {
    {"{\"a\":1}", HISTORY_MESSAGE_PLAIN, "", "", "{\"a\":1}"},
    {"", HISTORY_MESSAGE_PLAIN, "", "", ""},
    {" #1 2-3 {}", HISTORY_MESSAGE_PLAIN, "", "", " #1 2-3 {}"},
    {"#1764692000123456 1764692000123-0 {\"id\":\"a1\"}", HISTORY_MESSAGE_OFFSET,
     "1764692000123456", "1764692000123-0", "{\"id\":\"a1\"}"},
    {"#1 0-1 null", HISTORY_MESSAGE_OFFSET, "1", "0-1", "null"},
    {"#007 5-5 ", HISTORY_MESSAGE_OFFSET, "007", "5-5", ""}, /* data checked by the caller */
    {"#1 2-3 # 4", HISTORY_MESSAGE_OFFSET, "1", "2-3", "# 4"},
    {"#1 18446744073709551615-18446744073709551615 1", HISTORY_MESSAGE_OFFSET, "1",
     "18446744073709551615-18446744073709551615", "1"},
    {"#12345678901234567890123456789012 1-1 {}", HISTORY_MESSAGE_OFFSET,
     "12345678901234567890123456789012", "1-1", "{}"},
    /* malformed headers */
    {"#", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 ", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2-3", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"# 2-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1  2-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#x 2-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#-1 2-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1\t2-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2- {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 -3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2-3-4 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 02-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2-03 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 +2-3 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2-3x {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 18446744073709551616-0 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 0-18446744073709551616 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 123456789012345678901-0 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#123456789012345678901234567890123 1-1 {}", HISTORY_MESSAGE_INVALID, "", "", NULL},
    {"#1 2-3\n{}", HISTORY_MESSAGE_INVALID, "", "", NULL},
};

static void test_parse_message_table(void) {
    for (size_t i = 0; i < sizeof parse_table / sizeof parse_table[0]; i++) {
        char epoch[HISTORY_EPOCH_MAX + 1] = "junk", offset[HISTORY_OFFSET_MAX + 1] = "junk";
        const char *data = NULL;
        size_t data_len = 0;
        const char *payload = parse_table[i].payload;
        enum history_parse_result got =
            history_parse_message(payload, strlen(payload), epoch, offset, &data, &data_len);
        if (got != parse_table[i].result) fprintf(stderr, "  payload '%s'\n", payload);
        CHECK_INT(got, parse_table[i].result);
        if (got == HISTORY_MESSAGE_INVALID) continue;
        CHECK_STR(epoch, parse_table[i].epoch);
        CHECK_STR(offset, parse_table[i].offset);
        CHECK_INT(data_len, strlen(parse_table[i].data));
        CHECK(data && memcmp(data, parse_table[i].data, data_len) == 0);
    }
}

/* A header cut anywhere is never taken as a complete one with other data. */
static void test_parse_message_every_prefix_of_a_header(void) {
    static const char full[] = "#1764692000123456 1764692000123-7 {\"a\":1}";
    size_t header = strlen("#1764692000123456 1764692000123-7 ");
    for (size_t n = 1; n < sizeof full - 1; n++) {
        char epoch[HISTORY_EPOCH_MAX + 1], offset[HISTORY_OFFSET_MAX + 1];
        const char *data;
        size_t data_len;
        enum history_parse_result got =
            history_parse_message(full, n, epoch, offset, &data, &data_len);
        CHECK_INT(got, n < header ? HISTORY_MESSAGE_INVALID : HISTORY_MESSAGE_OFFSET);
        if (got == HISTORY_MESSAGE_OFFSET) CHECK_INT(data_len, n - header);
    }
}

static const struct {
    const char *a, *b;
    int expect;
} compare_table[] = {
    {"1-0", "1-0", 0},
    {"1-0", "1-1", -1},
    {"2-0", "1-9", 1},
    {"9-0", "10-0", -1}, /* numeric, not lexical */
    {"1-9", "1-10", -1},
    {"18446744073709551615-0", "18446744073709551614-99", 1},
    {"0-18446744073709551615", "1-0", -1},
    {"x", "0-0", -1}, /* invalid sorts first */
    {"0-0", "", 1},
    {"a", "b", -1},
    {"b", "b", 0},
};

static void test_offset_compare_table(void) {
    for (size_t i = 0; i < sizeof compare_table / sizeof compare_table[0]; i++) {
        int got = history_offset_compare(compare_table[i].a, compare_table[i].b);
        int sign = (got > 0) - (got < 0);
        if (sign != compare_table[i].expect)
            fprintf(stderr, "  %s vs %s\n", compare_table[i].a, compare_table[i].b);
        CHECK_INT(sign, compare_table[i].expect);
        int back = history_offset_compare(compare_table[i].b, compare_table[i].a);
        CHECK_INT((back > 0) - (back < 0), -compare_table[i].expect);
    }
}

static void test_keys_share_the_channel_hash_tag(void) {
    char key[64];
    CHECK_INT(history_stream_key("herald:apps:created", 19, key, sizeof key), 29);
    CHECK_STR(key, "{herald:apps:created}:history");
    CHECK_INT(history_meta_key("herald:apps:created", 19, key, sizeof key), 26);
    CHECK_STR(key, "{herald:apps:created}:meta");
    CHECK_INT(history_stream_key("a", 1, key, HISTORY_KEY_EXTRA + 2), 11);
    CHECK_INT(history_stream_key("a", 1, key, HISTORY_KEY_EXTRA + 1), -1);
    CHECK_INT(history_meta_key("x{y}:a", 6, key, sizeof key), -1);
}

static void test_prefix_without_braces(void) {
    static const struct {
        const char *prefix;
        bool valid;
    } table[] = {{"herald:", true}, {"", true},     {"{herald}:", false},
                 {"a}", false},     {"a{b", false}, {"prod.herald:", true}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        CHECK_INT(history_prefix_valid(table[i].prefix), table[i].valid);
}

/* The SHA-1 Redis will report for SCRIPT LOAD of each text. */
static void test_script_shas_are_sha1_of_the_text(void) {
    const char *texts[] = {history_publish_script, history_read_script};
    const char *shas[] = {history_publish_sha(), history_read_sha()};
    for (int i = 0; i < 2; i++) {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int n;
        char hex[HISTORY_SHA_LEN + 1];
        CHECK(EVP_Digest(texts[i], strlen(texts[i]), digest, &n, EVP_sha1(), NULL) == 1);
        for (unsigned j = 0; j < n; j++) snprintf(hex + 2 * j, 3, "%02x", digest[j]);
        CHECK_STR(shas[i], hex);
    }
    CHECK(history_publish_sha() == history_publish_sha()); /* computed once */
    CHECK(strstr(history_publish_script, "return {id, epoch, receivers}"));
}

int main(void) {
    RUN(test_parse_message_table);
    RUN(test_parse_message_every_prefix_of_a_header);
    RUN(test_offset_compare_table);
    RUN(test_keys_share_the_channel_hash_tag);
    RUN(test_prefix_without_braces);
    RUN(test_script_shas_are_sha1_of_the_text);
    return TEST_SUMMARY();
}
