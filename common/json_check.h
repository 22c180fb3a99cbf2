/* json_check.h -- a validate-only JSON scanner for event payloads.
 *
 * It answers one question, "would jansson 2.14 load these bytes as the
 * payload check loads them?", without building anything: json_loadb with
 * JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, after a raw NUL
 * byte has been ruled out. The payload is already whole when it is checked,
 * so this is a function over one buffer, not a resumable parser. It
 * allocates nothing, except in the rare case described below. */
#ifndef HERALD_JSON_CHECK_H
#define HERALD_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>

/* jansson's JSON_PARSER_MAX_DEPTH: every value, scalars included, counts one
 * level, so 2048 nested empty arrays pass and a number inside them does not. */
#define JSON_CHECK_MAX_DEPTH 2048

/* True when data[0..len) is exactly one JSON value (surrounded by optional
 * space, tab, LF, CR) that jansson would accept under the payload flags:
 * strict UTF-8, escaped NULs in string values but not in object keys, paired
 * surrogate escapes, no raw NUL byte anywhere, at most JSON_CHECK_MAX_DEPTH
 * levels, and no number that overflows a double (JSON_DECODE_INT_AS_REAL turns
 * every number into one; underflow is accepted). Only a number whose decimal
 * magnitude could reach about 1e307 is converted with strtod, as jansson does,
 * which may allocate a copy of that number. data may be NULL when len is 0. */
bool json_check_valid(const char *data, size_t len);

#endif
