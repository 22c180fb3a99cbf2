/* json_check.c -- validate-only JSON scanning that agrees with jansson 2.14.
 *
 * The scanner walks the bytes once, left to right, in two alternating states:
 * "a value starts here" and "a value just ended". Scalars are consumed whole by
 * small helpers that return the position after them, or NULL when jansson would
 * refuse them. Open containers are remembered as one bit per level (object or
 * array), so nesting costs 256 bytes of stack and no recursion.
 *
 * Where jansson (src/load.c, src/utf.c, src/strconv.c) is stricter or looser
 * than RFC 8259, the comment on the helper says so; tests/unit/test_json_check.c
 * and tests/fuzz/fuzz_json_check.c compare every verdict with the library. */
#include "json_check.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A number is handed to strtod only from this decimal magnitude on (its first
 * significant digit stands for 10^magnitude): below it the value is under
 * 1e307, far from DBL_MAX (1.797e308), and cannot overflow. */
#define OVERFLOW_MAGNITUDE 307
/* Exponents and digit counts are clamped here while estimating a magnitude; a
 * clamped estimate is not trusted and the number goes to strtod. */
#define MAGNITUDE_CLAMP 1000000000
/* Numbers shorter than this are copied to the stack for strtod, longer ones to
 * the heap. */
#define NUMBER_STACK_COPY 64

static bool is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(uint8_t c) {
    return c >= '0' && c <= '9';
}

static const uint8_t *skip_space(const uint8_t *p, const uint8_t *end) {
    while (p < end && is_space(*p)) p++;
    return p;
}

/* The value of four hex digits (either case) at p, or -1. */
static int32_t hex4(const uint8_t *p, const uint8_t *end) {
    if (end - p < 4) return -1;
    int32_t value = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        int32_t digit;
        if (is_digit(c))
            digit = c - '0';
        else if (c >= 'a' && c <= 'f')
            digit = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            digit = c - 'A' + 10;
        else
            return -1;
        value = value << 4 | digit;
    }
    return value;
}

/* The length of the well-formed UTF-8 sequence of 2 to 4 bytes at p, or 0.
 * The ranges are Unicode's table 3-7, which is what jansson's
 * utf8_check_first and utf8_check_full accept: no overlong forms, no encoded
 * surrogates, nothing above U+10FFFF, no stray continuation byte. */
static size_t utf8_sequence(const uint8_t *p, const uint8_t *end) {
    uint8_t lead = p[0];
    uint8_t second_min = 0x80, second_max = 0xBF;
    size_t length;
    if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3;
        if (lead == 0xE0) second_min = 0xA0; /* below: overlong */
        if (lead == 0xED) second_max = 0x9F; /* above: surrogates */
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4;
        if (lead == 0xF0) second_min = 0x90; /* below: overlong */
        if (lead == 0xF4) second_max = 0x8F; /* above: beyond U+10FFFF */
    } else {
        return 0;
    }
    if ((size_t)(end - p) < length) return 0;
    if (p[1] < second_min || p[1] > second_max) return 0;
    for (size_t i = 2; i < length; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return length;
}

/* The escape at p (a backslash). A \u escape of a high surrogate must be
 * followed at once by a \u escape of a low one; a low one alone is refused.
 * \u0000 is a string value's right (JSON_ALLOW_NUL) but jansson refuses it in
 * an object key ("NUL byte in object key not supported"). */
static const uint8_t *scan_escape(const uint8_t *p, const uint8_t *end, bool is_key) {
    if (end - p < 2) return NULL;
    switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't': return p + 2;
        case 'u': break;
        default: return NULL;
    }
    int32_t unit = hex4(p + 2, end);
    if (unit < 0) return NULL;
    p += 6;
    if (unit >= 0xDC00 && unit <= 0xDFFF) return NULL;
    if (unit >= 0xD800 && unit <= 0xDBFF) {
        if (end - p < 2 || p[0] != '\\' || p[1] != 'u') return NULL;
        int32_t low = hex4(p + 2, end);
        if (low < 0xDC00 || low > 0xDFFF) return NULL;
        return p + 6;
    }
    if (unit == 0 && is_key) return NULL;
    return p;
}

/* The string at p (its opening quote). Bytes below 0x20, a raw NUL included,
 * must be escaped; DEL and everything from 0x80 on is taken as UTF-8. */
static const uint8_t *scan_string(const uint8_t *p, const uint8_t *end, bool is_key) {
    p++;
    for (;;) {
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
        if (p == end) return NULL;
        if (*p == '"') return p + 1;
        if (*p == '\\') {
            p = scan_escape(p, end, is_key);
            if (!p) return NULL;
        } else if (*p >= 0x80) {
            size_t length = utf8_sequence(p, end);
            if (!length) return NULL;
            p += length;
        } else {
            return NULL;
        }
    }
}

/* An object member's key at p, then its colon: returns where its value starts. */
static const uint8_t *scan_key(const uint8_t *p, const uint8_t *end) {
    if (p == end || *p != '"') return NULL;
    p = scan_string(p, end, true);
    if (!p) return NULL;
    p = skip_space(p, end);
    if (p == end || *p != ':') return NULL;
    return skip_space(p + 1, end);
}

static const uint8_t *scan_literal(const uint8_t *p, const uint8_t *end, const char *word,
                                   size_t length) {
    if ((size_t)(end - p) < length || memcmp(p, word, length) != 0) return NULL;
    return p + length;
}

/* Whether strtod, called exactly as jansson's jsonp_strtod calls it (the
 * number's text, its '.' replaced by the locale's decimal point), returns a
 * value rather than HUGE_VAL with ERANGE. jansson rejects only that overflow;
 * an underflow to zero or a subnormal is loaded. errno is left as it was. */
static bool strtod_in_range(const uint8_t *number, size_t length) {
    char stack_copy[NUMBER_STACK_COPY];
    char *text = length < sizeof stack_copy ? stack_copy : malloc(length + 1);
    if (!text) return false; /* jansson could not have loaded it either */
    memcpy(text, number, length);
    text[length] = '\0';
    const char *point = localeconv()->decimal_point;
    if (*point != '.') {
        char *dot = strchr(text, '.');
        if (dot) *dot = *point;
    }
    int saved_errno = errno;
    errno = 0;
    double value = strtod(text, NULL);
    bool overflow = (value == HUGE_VAL || value == -HUGE_VAL) && errno == ERANGE;
    errno = saved_errno;
    if (text != stack_copy) free(text);
    return !overflow;
}

static int64_t clamped_count(size_t count, bool *clamped) {
    if (count > MAGNITUDE_CLAMP) {
        *clamped = true;
        return MAGNITUDE_CLAMP;
    }
    return (int64_t)count;
}

/* The number at p: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. A digit
 * right after a leading 0 ends the number here and so fails the caller's next
 * check, as jansson fails it. With JSON_DECODE_INT_AS_REAL every number, an
 * integer too, must fit a double; its decimal magnitude is estimated first so
 * that strtod is called only for the rare number that could be too large. */
static const uint8_t *scan_number(const uint8_t *p, const uint8_t *end) {
    const uint8_t *start = p;
    if (p < end && *p == '-') p++;
    if (p == end || !is_digit(*p)) return NULL;
    const uint8_t *integer = p;
    if (*p == '0')
        p++;
    else
        while (p < end && is_digit(*p)) p++;
    const uint8_t *integer_end = p, *fraction = p, *fraction_end = p;
    if (p < end && *p == '.') {
        fraction = ++p;
        if (p == end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
        fraction_end = p;
    }
    int64_t exponent = 0;
    bool clamped = false;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool negative = p < end && *p == '-';
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p == end || !is_digit(*p)) return NULL;
        for (; p < end && is_digit(*p); p++) {
            exponent = exponent * 10 + (*p - '0');
            if (exponent > MAGNITUDE_CLAMP) {
                exponent = MAGNITUDE_CLAMP;
                clamped = true;
            }
        }
        if (negative) exponent = -exponent;
    }

    /* The power of ten of the first significant digit, before the exponent. */
    int64_t leading;
    if (*integer != '0') {
        leading = clamped_count((size_t)(integer_end - integer), &clamped) - 1;
    } else {
        const uint8_t *digit = fraction;
        while (digit < fraction_end && *digit == '0') digit++;
        if (digit == fraction_end) return p; /* zero, whatever the exponent */
        leading = -clamped_count((size_t)(digit - fraction) + 1, &clamped);
    }
    if (!clamped && leading + exponent < OVERFLOW_MAGNITUDE) return p;
    return strtod_in_range(start, (size_t)(p - start)) ? p : NULL;
}

/* The scalar at p (anything but an object or an array). */
static const uint8_t *scan_scalar(const uint8_t *p, const uint8_t *end) {
    switch (*p) {
        case '"': return scan_string(p, end, false);
        case 't': return scan_literal(p, end, "true", 4);
        case 'f': return scan_literal(p, end, "false", 5);
        case 'n': return scan_literal(p, end, "null", 4);
        default: return scan_number(p, end);
    }
}

bool json_check_valid(const char *data, size_t len) {
    if (len == 0) return false;
    const uint8_t *p = (const uint8_t *)data, *end = p + len;
    /* Bit i set: the container open at level i + 1 is an object. */
    uint8_t is_object[JSON_CHECK_MAX_DEPTH / 8];
    size_t open = 0; /* containers open around p */

    p = skip_space(p, end);
    for (;;) {
        /* A value starts at p. jansson counts it one level deeper than its
         * container before it even looks at it, so here is where the depth limit bites. */
        if (open == JSON_CHECK_MAX_DEPTH || p == end) return false;
        if (*p == '{' || *p == '[') {
            bool object = *p == '{';
            p = skip_space(p + 1, end);
            if (p < end && *p == (object ? '}' : ']')) {
                p++; /* empty: a complete value, nothing opened */
            } else {
                if (object)
                    is_object[open / 8] |= (uint8_t)(1u << (open % 8));
                else
                    is_object[open / 8] &= (uint8_t) ~(1u << (open % 8));
                open++;
                if (object && !(p = scan_key(p, end))) return false;
                continue;
            }
        } else if (!(p = scan_scalar(p, end))) {
            return false;
        }

        /* A value ended before p: close containers until one takes another
         * value after a comma, or the top-level value is done. */
        for (;;) {
            p = skip_space(p, end);
            if (open == 0) return p == end;
            if (p == end) return false;
            bool object = (is_object[(open - 1) / 8] >> ((open - 1) % 8)) & 1;
            if (*p == (object ? '}' : ']')) {
                p++;
                open--;
                continue;
            }
            if (*p != ',') return false;
            p = skip_space(p + 1, end);
            if (object && !(p = scan_key(p, end))) return false;
            break;
        }
    }
}
