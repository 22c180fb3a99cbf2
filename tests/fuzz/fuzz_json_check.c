/* fuzz_json_check.c -- libFuzzer differential target: json_check against jansson.
 *
 * The input is one event payload. json_check_valid must accept it exactly when
 * jansson 2.14 loads it under the payload flags and it holds no raw NUL byte
 * (proto_payload_check's rule before json_check existed); any disagreement
 * aborts. proto_payload_check must give the same verdict and, on a refusal,
 * jansson's own reason. */
#include "json_check.h"
#include "protocol.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond) {
    if (!cond) abort();
}

static bool jansson_accepts(const char *text, size_t size) {
    if (memchr(text, '\0', size)) return false;
    json_t *value =
        json_loadb(text, size, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    json_decref(value);
    return value != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    bool expected = jansson_accepts(text, size);

    errno = EINTR;
    require(json_check_valid(text, size) == expected);
    require(errno == EINTR);

    char why[256] = "";
    require((proto_payload_check(text, size, why, sizeof why) == 0) == expected);
    if (!expected)
        require(strncmp(why, "raw NUL byte at byte ", 21) == 0 ||
                strncmp(why, "invalid JSON data at byte ", 26) == 0);
    return 0;
}
