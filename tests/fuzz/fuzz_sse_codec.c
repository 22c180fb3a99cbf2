/* fuzz_sse_codec.c -- libFuzzer target for the /events query and the
 * Last-Event-ID parser, and the "data:" line writer.
 *
 * The input is split at its first newline: a query string, then a
 * Last-Event-ID. Besides memory safety it checks the contract: every channel
 * accepted is a valid name, an accepted id writes back to one that parses to
 * the same positions, and the data lines of any bytes hold no CR and the
 * right number of "data: " fields. */
#include "sse_codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond) {
    if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    struct http_slice query = {text, nl ? (size_t)(nl - text) : size};
    struct http_slice id = {nl ? nl + 1 : NULL, nl ? size - query.len - 1 : 0};
    static struct sse_query q;
    if (sse_parse_query(&query, &id, &q) == SSE_QUERY_OK) {
        require(q.count >= 1 && q.count <= SSE_MAX_CHANNELS && q.since_count <= q.count);
        for (size_t i = 0; i < q.count; i++)
            require(acl_channel_name_valid(q.channels[i], strlen(q.channels[i])));
        char out[SSE_ID_MAX + 1];
        int n = sse_id_write(out, sizeof out, q.since, q.since_count);
        require(n >= 0);
        struct sse_position back[SSE_MAX_CHANNELS];
        int count = sse_id_parse(out, (size_t)n, back, SSE_MAX_CHANNELS);
        /* An id of one empty position writes back as "", which holds none. */
        require(count == (int)q.since_count ||
                (q.since_count == 1 && !q.since[0].epoch[0] && count == 0));
        for (int i = 0; i < count; i++) require(memcmp(&back[i], &q.since[i], sizeof back[i]) == 0);
    }
    size_t lines_size = sse_data_size(text, size);
    char *lines = malloc(lines_size);
    if (!lines) return 0;
    sse_write_data(lines, text, size);
    require(memchr(lines, '\r', lines_size) == NULL);
    require(lines[lines_size - 1] == '\n');
    size_t breaks = 0, fields = 0;
    for (size_t i = 0; i < lines_size; i++) {
        if (lines[i] == '\n') breaks++;
        if (i + 6 <= lines_size && memcmp(lines + i, "data: ", 6) == 0 &&
            (i == 0 || lines[i - 1] == '\n'))
            fields++;
    }
    require(fields == breaks);
    free(lines);
    return 0;
}
