/* test_sse_codec.c -- "data:" lines, stream ids and the /events query. */
#include <stdlib.h>
#include <string.h>

#include "sse_codec.h"
#include "testlib.h"

static const char *data_lines(const char *msg) {
    static char out[512];
    size_t size = sse_data_size(msg, strlen(msg));
    sse_write_data(out, msg, strlen(msg));
    out[size] = '\0';
    return out;
}

static void test_data_lines_split_at_every_line_break(void) {
    static const struct {
        const char *msg, *lines;
    } cases[] = {
        {"{\"a\":1}", "data: {\"a\":1}\n"},
        {"", "data: \n"},
        {"{\"a\":\n1}", "data: {\"a\":\ndata: 1}\n"},
        {"{\"a\":\r\n1}", "data: {\"a\":\ndata: 1}\n"}, /* CR LF is one break */
        {"{\"a\":\r1}", "data: {\"a\":\ndata: 1}\n"},
        {"[\n\n1]", "data: [\ndata: \ndata: 1]\n"},
        {"1\n", "data: 1\ndata: \n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_STR(data_lines(cases[i].msg), cases[i].lines);
}

static void test_id_round_trips_every_kind_of_position(void) {
    struct sse_position in[3] = {{"1733149000123456", "1733150000000-0"}, {"", ""}, {"17", ""}};
    char id[SSE_ID_MAX + 1];
    CHECK_INT(sse_id_write(id, sizeof id, in, 3), strlen("1733149000123456/1733150000000-0,,17/"));
    CHECK_STR(id, "1733149000123456/1733150000000-0,,17/");
    struct sse_position out[3];
    CHECK_INT(sse_id_parse(id, strlen(id), out, 3), 3);
    CHECK(memcmp(in, out, sizeof in) == 0);
    CHECK_INT(sse_id_parse(id, strlen(id), out, 2), 2); /* more positions than channels */
    CHECK_INT(sse_id_parse("", 0, out, 3), 0);
    CHECK_INT(sse_id_write(id, 10, in, 3), -1); /* too small */
}

static void test_malformed_ids_are_refused(void) {
    static const char *bad[] = {
        "1733149000123456",                      /* no slash */
        "x/1-0",                                 /* epoch not digits */
        "1/01-0",                                /* offset with a leading zero */
        "1/1-",                                  /* half an offset */
        "1/1-0/2",                               /* two slashes */
        "/1-0",                                  /* offset without epoch */
        "123456789012345678901234567890123/1-0", /* epoch of 33 digits */
        "1/1-0,,x",
    };
    struct sse_position out[4];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_INT(sse_id_parse(bad[i], strlen(bad[i]), out, 4), -1);
}

static enum sse_query_result parse(const char *query, const char *last_event_id,
                                   struct sse_query *out) {
    struct http_slice q = {query, strlen(query)};
    struct http_slice id = {last_event_id, last_event_id ? strlen(last_event_id) : 0};
    return sse_parse_query(&q, &id, out);
}

static void test_query_keeps_channels_in_url_order(void) {
    struct sse_query *q = malloc(sizeof *q);
    CHECK_INT(parse("channel=apps:created&token=x&channel=user%3Au1", NULL, q), SSE_QUERY_OK);
    CHECK_INT(q->count, 2);
    CHECK_STR(q->channels[0], "apps:created");
    CHECK_STR(q->channels[1], "user:u1");
    CHECK_INT(q->since_count, 0);
    free(q);
}

static void test_query_refusals(void) {
    static const struct {
        const char *query;
        enum sse_query_result result;
    } cases[] = {
        {"", SSE_QUERY_NO_CHANNEL},
        {"token=abc", SSE_QUERY_NO_CHANNEL},
        {"channel=", SSE_QUERY_INVALID_CHANNEL},
        {"channel=a%20b", SSE_QUERY_INVALID_CHANNEL},
        {"channel=a%zz", SSE_QUERY_INVALID_CHANNEL},
        {"channel=a&channel=a", SSE_QUERY_DUPLICATE},
        {"channel=a&lastEventId=nope", SSE_QUERY_BAD_ENCODING},
        {"channel=a0&channel=a1&channel=a2&channel=a3&channel=a4&channel=a5&channel=a6&"
         "channel=a7&channel=a8&channel=a9&channel=b0&channel=b1&channel=b2&channel=b3&"
         "channel=b4&channel=b5&channel=b6",
         SSE_QUERY_TOO_MANY},
    };
    struct sse_query *q = malloc(sizeof *q);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_INT(parse(cases[i].query, NULL, q), cases[i].result);
    char longname[200] = "channel=";
    memset(longname + 8, 'a', 129);
    CHECK_INT(parse(longname, NULL, q), SSE_QUERY_INVALID_CHANNEL); /* 129 bytes */
    longname[8 + 128] = '\0';
    CHECK_INT(parse(longname, NULL, q), SSE_QUERY_OK); /* 128: the limit, inclusive */
    free(q);
}

static void test_last_event_id_header_wins_over_the_parameter(void) {
    struct sse_query *q = malloc(sizeof *q);
    CHECK_INT(parse("channel=a&channel=b&lastEventId=5%2F1-0", "7/2-0,8/", q), SSE_QUERY_OK);
    CHECK_INT(q->since_count, 2);
    CHECK_STR(q->since[0].epoch, "7");
    CHECK_STR(q->since[0].offset, "2-0");
    CHECK_STR(q->since[1].epoch, "8");
    CHECK_STR(q->since[1].offset, "");
    CHECK_INT(parse("channel=a&channel=b&lastEventId=5%2F1-0", NULL, q), SSE_QUERY_OK);
    CHECK_INT(q->since_count, 1); /* the second channel subscribes afresh */
    CHECK_STR(q->since[0].epoch, "5");
    CHECK_STR(q->since[0].offset, "1-0");
    free(q);
}

int main(void) {
    RUN(test_data_lines_split_at_every_line_break);
    RUN(test_id_round_trips_every_kind_of_position);
    RUN(test_malformed_ids_are_refused);
    RUN(test_query_keeps_channels_in_url_order);
    RUN(test_query_refusals);
    RUN(test_last_event_id_header_wins_over_the_parameter);
    return TEST_SUMMARY();
}
