/* fuzz_history.c -- libFuzzer target for the history message header parser.
 *
 * The input is one pub/sub payload. Besides memory safety it checks the
 * contract: a plain payload is returned whole, a parsed header yields an
 * epoch of digits and a valid offset, the data is exactly the bytes after
 * the header, and an offset compares equal to itself. */
#include "history.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond) {
    if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *payload = (const char *)data;
    char epoch[HISTORY_EPOCH_MAX + 1], offset[HISTORY_OFFSET_MAX + 1];
    const char *body = NULL;
    size_t body_len = 0;
    uint64_t ms, seq;

    enum history_parse_result r =
        history_parse_message(payload, size, epoch, offset, &body, &body_len);
    switch (r) {
        case HISTORY_MESSAGE_PLAIN:
            require(size == 0 || payload[0] != '#');
            require(body == payload && body_len == size);
            break;
        case HISTORY_MESSAGE_OFFSET: {
            size_t epoch_len = strlen(epoch), offset_len = strlen(offset);
            require(epoch_len >= 1 && epoch_len <= HISTORY_EPOCH_MAX);
            require(strspn(epoch, "0123456789") == epoch_len);
            require(history_offset_parse(offset, offset_len, &ms, &seq) == 0);
            require(history_offset_compare(offset, offset) == 0);
            size_t header = 1 + epoch_len + 1 + offset_len + 1;
            require(header <= size && body == payload + header && body_len == size - header);
            require(memcmp(payload + 1, epoch, epoch_len) == 0);
            require(memcmp(payload + 2 + epoch_len, offset, offset_len) == 0);
            break;
        }
        case HISTORY_MESSAGE_INVALID: require(size > 0 && payload[0] == '#'); break;
        default: require(0);
    }

    /* The same bytes as an offset: parse and compare agree. */
    if (size <= HISTORY_OFFSET_MAX && !memchr(payload, '\0', size)) {
        char text[HISTORY_OFFSET_MAX + 1];
        memcpy(text, payload, size);
        text[size] = '\0';
        int valid = history_offset_parse(text, size, &ms, &seq) == 0;
        require(history_offset_compare(text, text) == 0);
        if (valid) require(history_offset_compare(text, "") > 0);
    }
    return 0;
}
