/* test_json_check.c -- the payload scanner agrees with jansson, case by case.
 *
 * Every case of the table states the verdict it expects and is also loaded by
 * jansson 2.14 with the payload flags (after the raw-NUL rule), so the table
 * itself proves agreement with the library. Each case is then fed again as
 * every prefix of itself, and wrapped in an array, an object and spaces, and
 * each of those verdicts must match jansson's too. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "testlib.h"

static bool jansson_accepts(const char *text, size_t len) {
    if (memchr(text, '\0', len)) return false;
    json_t *value =
        json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    json_decref(value);
    return value != NULL;
}

/* A case's input is a C string unless len says otherwise (raw NUL bytes). */
struct check_case {
    const char *what;
    const char *input;
    size_t len;
    bool valid;
};

#define SIZED(s) s, sizeof s - 1

static const struct check_case cases[] = {
    /* Top level: any value, surrounded by JSON's four whitespace bytes only. */
    {"typical event object",
     "{\"id\":\"app-123\",\"name\":\"web\",\"status\":\"deployed\",\"region\":\"eu-west-1\","
     "\"replicas\":3,\"ok\":true}",
     0, true},
    {"bare number", "3", 0, true},
    {"bare string", "\"x\"", 0, true},
    {"bare true", "true", 0, true},
    {"bare false", "false", 0, true},
    {"bare null", "null", 0, true},
    {"empty object", "{}", 0, true},
    {"empty array", "[]", 0, true},
    {"space tab LF CR around", " \t\r\n[ 1 , 2 ]\n\r\t ", 0, true},
    {"space inside empty containers", "[ \n ] ", 0, true},
    {"space around colon and commas", "{ \"a\" : 1 , \"b\" :\t[ ] }", 0, true},
    {"empty input", "", 0, false},
    {"only whitespace", " \n\t\r", 0, false},
    {"form feed is not whitespace", "\f1", 0, false},
    {"vertical tab is not whitespace", "1\v", 0, false},
    {"no-break space is not whitespace", "[\xc2\xa0]", 0, false},
    {"byte order mark", "\xef\xbb\xbf[]", 0, false},
    {"two values", "1 2", 0, false},
    {"value then garbage", "{} x", 0, false},
    {"two objects", "{}{}", 0, false},
    {"comment", "1 // no", 0, false},

    /* Raw NUL bytes: refused everywhere, also where jansson would skip one. */
    {"raw NUL after number", SIZED("1\0"), false},
    {"raw NUL before value", SIZED("\0 1"), false},
    {"raw NUL inside string", SIZED("\"a\0b\""), false},
    {"raw NUL after array", SIZED("[1]\0"), false},
    {"raw NUL between elements", SIZED("[1,\0 2]"), false},

    /* Literals. */
    {"literals in array", "[true,false,null]", 0, true},
    {"capitalised True", "True", 0, false},
    {"truncated tru", "tru", 0, false},
    {"longer truex", "truex", 0, false},
    {"nulls", "nulls", 0, false},
    {"literal followed by digit", "true1", 0, false},
    {"literals glued", "truefalse", 0, false},
    {"NaN", "NaN", 0, false},
    {"Infinity", "Infinity", 0, false},
    {"undefined", "undefined", 0, false},

    /* Objects and arrays: commas and colons exactly per RFC 8259. */
    {"nested containers", "{\"a\":[1,{\"b\":null}],\"c\":{}}", 0, true},
    {"duplicate keys", "{\"a\":1,\"a\":2}", 0, true},
    {"empty key", "{\"\":1}", 0, true},
    {"trailing comma in array", "[1,]", 0, false},
    {"trailing comma in object", "{\"a\":1,}", 0, false},
    {"leading comma in array", "[,1]", 0, false},
    {"double comma", "[1,,2]", 0, false},
    {"missing comma", "[1 2]", 0, false},
    {"missing colon", "{\"a\" 1}", 0, false},
    {"missing value", "{\"a\":}", 0, false},
    {"double colon", "{\"a\"::1}", 0, false},
    {"number as key", "{1:1}", 0, false},
    {"literal as key", "{null:1}", 0, false},
    {"unquoted key", "{a:1}", 0, false},
    {"single quotes", "['a']", 0, false},
    {"array closed by brace", "[1}", 0, false},
    {"object closed by bracket", "{\"a\":1]", 0, false},
    {"unclosed array", "[1", 0, false},
    {"unclosed object", "{\"a\":1", 0, false},
    {"unclosed after comma", "[1,", 0, false},
    {"stray closer", "]", 0, false},
    {"extra closer", "[1]]", 0, false},
    {"colon in array", "[1:2]", 0, false},
    {"comma at top level", "1,2", 0, false},

    /* Strings: escapes. */
    {"all short escapes", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 0, true},
    {"unicode escape lower hex", "\"\\u00e9\\uabcd\"", 0, true},
    {"unicode escape upper hex", "\"\\u00E9\\uABCD\"", 0, true},
    {"unknown escape", "\"\\x41\"", 0, false},
    {"escaped single quote", "\"\\'\"", 0, false},
    {"escape a", "\"\\a\"", 0, false},
    {"short unicode escape", "\"\\u12\"", 0, false},
    {"non-hex unicode escape", "\"\\u12g4\"", 0, false},
    {"capital U escape", "\"\\U0041\"", 0, false},
    {"backslash at end", "\"\\", 0, false},
    {"escaped quote then end", "\"\\\"", 0, false},
    {"unterminated string", "\"abc", 0, false},
    {"DEL is allowed raw", "\"\x7f\"", 0, true},

    /* Strings: control bytes. */
    {"raw tab in string", "\"a\tb\"", 0, false},
    {"raw newline in string", "\"a\nb\"", 0, false},
    {"raw 0x1f in string", "\"\x1f\"", 0, false},
    {"raw 0x01 in string", "\"\x01\"", 0, false},
    {"space is allowed raw", "\" \"", 0, true},

    /* Strings: escaped NUL and surrogates. */
    {"escaped NUL in value", "\"a\\u0000b\"", 0, true},
    {"escaped NUL in nested value", "{\"k\":[\"\\u0000\"]}", 0, true},
    {"escaped NUL in key", "{\"a\\u0000\":1}", 0, false},
    {"escaped NUL alone as key", "{\"\\u0000\":1}", 0, false},
    {"escaped NUL in nested key", "[{\"ok\":{\"\\u0000x\":1}}]", 0, false},
    {"escaped NUL in second key", "{\"a\":1,\"\\u0000\":2}", 0, false},
    {"escaped 0001 in key", "{\"\\u0001\":1}", 0, true},
    {"surrogate pair", "\"\\ud83d\\ude00\"", 0, true},
    {"surrogate pair upper", "\"\\uD83D\\uDE00\"", 0, true},
    {"highest surrogate pair", "\"\\udbff\\udfff\"", 0, true},
    {"surrogate pair in key", "{\"\\ud800\\udc00\":1}", 0, true},
    {"lone high surrogate", "\"\\ud800\"", 0, false},
    {"lone high surrogate then text", "\"\\ud800abcdef\"", 0, false},
    {"lone low surrogate", "\"\\udc00\"", 0, false},
    {"low then high surrogate", "\"\\udc00\\ud800\"", 0, false},
    {"high surrogate twice", "\"\\ud800\\ud800\"", 0, false},
    {"high surrogate then BMP escape", "\"\\ud800\\u0041\"", 0, false},
    {"high surrogate then other escape", "\"\\ud800\\n\"", 0, false},
    {"high surrogate then escaped backslash u", "\"\\ud800\\\\udc00\"", 0, false},
    {"high surrogate then bad hex", "\"\\ud800\\udcxz\"", 0, false},
    {"high surrogate then end", "\"\\ud800\\u\"", 0, false},
    {"high surrogate then NUL escape", "\"\\ud800\\u0000\"", 0, false},
    {"escaped NUL after pair in key", "{\"\\ud800\\udc00\\u0000\":1}", 0, false},

    /* Strings: raw UTF-8, as jansson's utf.c checks it. */
    {"two-byte UTF-8", "\"caf\xc3\xa9\"", 0, true},
    {"three-byte UTF-8", "\"\xe2\x82\xac\"", 0, true},
    {"four-byte UTF-8", "\"\xf0\x9f\x98\x80\"", 0, true},
    {"lowest two-byte", "\"\xc2\x80\"", 0, true},
    {"lowest three-byte", "\"\xe0\xa0\x80\"", 0, true},
    {"lowest four-byte", "\"\xf0\x90\x80\x80\"", 0, true},
    {"last before surrogates", "\"\xed\x9f\xbf\"", 0, true},
    {"first after surrogates", "\"\xee\x80\x80\"", 0, true},
    {"U+FFFF", "\"\xef\xbf\xbf\"", 0, true},
    {"U+10FFFF", "\"\xf4\x8f\xbf\xbf\"", 0, true},
    {"UTF-8 in key", "{\"\xc3\xa9\":1}", 0, true},
    {"overlong slash C0", "\"\xc0\xaf\"", 0, false},
    {"overlong C1", "\"\xc1\xbf\"", 0, false},
    {"overlong three-byte", "\"\xe0\x80\xaf\"", 0, false},
    {"overlong three-byte high", "\"\xe0\x9f\xbf\"", 0, false},
    {"overlong four-byte", "\"\xf0\x80\x80\xaf\"", 0, false},
    {"overlong four-byte high", "\"\xf0\x8f\xbf\xbf\"", 0, false},
    {"encoded high surrogate", "\"\xed\xa0\x80\"", 0, false},
    {"encoded low surrogate", "\"\xed\xbf\xbf\"", 0, false},
    {"above U+10FFFF", "\"\xf4\x90\x80\x80\"", 0, false},
    {"F5 lead", "\"\xf5\x80\x80\x80\"", 0, false},
    {"FE byte", "\"\xfe\"", 0, false},
    {"FF byte", "\"\xff\"", 0, false},
    {"stray continuation", "\"\x80\"", 0, false},
    {"continuation after ASCII", "\"a\xbf\"", 0, false},
    {"two-byte missing continuation", "\"\xc3\"", 0, false},
    {"two-byte with ASCII second", "\"\xc3\x41\"", 0, false},
    {"three-byte truncated", "\"\xe2\x82\"", 0, false},
    {"four-byte truncated", "\"\xf0\x9f\x98\"", 0, false},
    {"four-byte bad third", "\"\xf0\x9f\x41\x80\"", 0, false},
    {"extra continuation", "\"\xc3\xa9\xa9\"", 0, false},
    {"UTF-8 at end of input", "\"\xc3", 0, false},
    {"UTF-8 outside a string", "\xc3\xa9", 0, false},
    {"UTF-8 after a number", "1\xc3\xa9", 0, false},
    {"invalid UTF-8 in key", "{\"\xed\xa0\x80\":1}", 0, false},

    /* Numbers: syntax. */
    {"zero", "0", 0, true},
    {"negative zero", "-0", 0, true},
    {"negative zero real", "-0.0", 0, true},
    {"integer", "1234567890", 0, true},
    {"negative integer", "-42", 0, true},
    {"fraction", "3.25", 0, true},
    {"exponent lower", "1e5", 0, true},
    {"exponent upper", "1E5", 0, true},
    {"exponent plus", "1e+5", 0, true},
    {"exponent minus", "1e-5", 0, true},
    {"exponent with leading zeros", "1e007", 0, true},
    {"fraction and exponent", "-1.5e-3", 0, true},
    {"zero with exponent", "0e10", 0, true},
    {"integer beyond 64 bits", "123456789012345678901234567890", 0, true},
    {"leading zero", "01", 0, false},
    {"negative leading zero", "-01", 0, false},
    {"double zero", "00", 0, false},
    {"leading plus", "+1", 0, false},
    {"lone minus", "-", 0, false},
    {"minus space digit", "- 1", 0, false},
    {"double minus", "--1", 0, false},
    {"leading dot", ".5", 0, false},
    {"trailing dot", "1.", 0, false},
    {"dot then exponent", "1.e5", 0, false},
    {"bare exponent", "1e", 0, false},
    {"exponent sign only", "1e+", 0, false},
    {"exponent double sign", "1e+-1", 0, false},
    {"fractional exponent", "1e1.5", 0, false},
    {"two dots", "1.2.3", 0, false},
    {"hex number", "0x10", 0, false},
    {"minus letter", "-a", 0, false},
    {"minus Infinity", "-Infinity", 0, false},
    {"numbers in array", "[0,-0,1.5,-2e-2,3E+3]", 0, true},
    {"number then minus", "[1-2]", 0, false},
    {"leading zero in array", "[01]", 0, false},

    /* Numbers: every one becomes a double, and overflow is refused. */
    {"1e308", "1e308", 0, true},
    {"1e309 overflows", "1e309", 0, false},
    {"-1e309 overflows", "-1e309", 0, false},
    {"1e307", "1e307", 0, true},
    {"DBL_MAX", "1.7976931348623157e308", 0, true},
    {"just below the rounding edge", "1.7976931348623158e308", 0, true},
    {"just above the rounding edge", "1.7976931348623159e308", 0, false},
    {"negative just above the rounding edge", "-1.7976931348623159e308", 0, false},
    {"1e-400 underflows to zero", "1e-400", 0, true},
    {"smallest subnormal", "4.9e-324", 0, true},
    {"below smallest subnormal", "2e-324", 0, true},
    {"0.0000001e310", "0.0000001e310", 0, true},
    {"0.000000001e317", "0.000000001e317", 0, true},
    {"0.000000001e318 overflows", "0.000000001e318", 0, false},
    {"0.0000001e316 overflows", "0.0000001e316", 0, false},
    {"10.0e307", "10.0e307", 0, true},
    {"100.0e307 overflows", "100.0e307", 0, false},
    {"zero with huge exponent", "0e999999999999999999999", 0, true},
    {"zero fraction with huge exponent", "-0.000e999999999999999999", 0, true},
    {"huge exponent", "1e999999999999999999999", 0, false},
    {"huge negative exponent", "1e-999999999999999999999", 0, true},
    {"exponent digits padded with zeros", "1e00000000000000000000000000308", 0, true},
    {"padded exponent overflows", "1e00000000000000000000000000309", 0, false},
    {"overflow inside object", "{\"a\":[1,2,1e400]}", 0, false},
    {"overflow as last element", "[1,1e400]", 0, false},
};

/* Checks one input against jansson and against the expected verdict. */
static bool agrees(const char *what, const char *input, size_t len, bool valid) {
    bool jansson = jansson_accepts(input, len), ours = json_check_valid(input, len);
    if (jansson == valid && ours == valid) return true;
    fprintf(stderr, "  %s: expected %d, jansson %d, json_check %d\n", what, valid, jansson, ours);
    return false;
}

static size_t case_len(const struct check_case *c) {
    return c->len ? c->len : strlen(c->input);
}

static void test_each_case_matches_jansson_and_table(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(agrees(cases[i].what, cases[i].input, case_len(&cases[i]), cases[i].valid));
}

/* Truncation must never turn a refusal into an acceptance (or back) where
 * jansson disagrees: each prefix is checked against the library. */
static void test_every_prefix_matches_jansson(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = case_len(&cases[i]);
        for (size_t n = 0; n < len; n++) {
            bool jansson = jansson_accepts(cases[i].input, n);
            if (json_check_valid(cases[i].input, n) != jansson) {
                fprintf(stderr, "  %s: prefix of %zu bytes, jansson %d\n", cases[i].what, n,
                        jansson);
                CHECK(0);
            }
        }
    }
}

/* The same value nested in containers or spaces keeps its verdict (but for a
 * key's escaped NUL, which jansson decides; the comparison is with jansson). */
static void test_wrapped_cases_match_jansson(void) {
    static const char *const wrappers[][2] = {
        {"[", "]"}, {"{\"k\":", "}"}, {"[1,", ",2]"}, {" \n", "\t\r"}, {"{\"a\":[{\"b\":", "}]}"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = case_len(&cases[i]);
        for (size_t w = 0; w < sizeof wrappers / sizeof wrappers[0]; w++) {
            size_t head = strlen(wrappers[w][0]), tail = strlen(wrappers[w][1]);
            char *text = malloc(head + len + tail);
            memcpy(text, wrappers[w][0], head);
            memcpy(text + head, cases[i].input, len);
            memcpy(text + head + len, wrappers[w][1], tail);
            bool jansson = jansson_accepts(text, head + len + tail);
            if (json_check_valid(text, head + len + tail) != jansson) {
                fprintf(stderr, "  %s wrapped in %s%s: jansson %d\n", cases[i].what, wrappers[w][0],
                        wrappers[w][1], jansson);
                CHECK(0);
            }
            free(text);
        }
    }
}

/* count containers of the given brackets around inner, as one buffer. */
static char *nested(size_t count, const char *open, const char *close, const char *inner,
                    size_t *len) {
    size_t open_len = strlen(open), close_len = strlen(close), inner_len = strlen(inner);
    *len = count * (open_len + close_len) + inner_len;
    char *text = malloc(*len), *p = text;
    for (size_t i = 0; i < count; i++, p += open_len) memcpy(p, open, open_len);
    memcpy(p, inner, inner_len);
    p += inner_len;
    for (size_t i = 0; i < count; i++, p += close_len) memcpy(p, close, close_len);
    return text;
}

static void check_nested(size_t count, const char *open, const char *close, const char *inner,
                         bool valid) {
    size_t len;
    char *text = nested(count, open, close, inner, &len);
    char what[96];
    snprintf(what, sizeof what, "%zu x %s%s%s", count, open, inner, close);
    CHECK(agrees(what, text, len, valid));
    free(text);
}

static void test_2048_nested_arrays_pass_and_2049_fail(void) {
    check_nested(JSON_CHECK_MAX_DEPTH - 1, "[", "]", "", true);
    check_nested(JSON_CHECK_MAX_DEPTH, "[", "]", "", true);
    check_nested(JSON_CHECK_MAX_DEPTH + 1, "[", "]", "", false);
    check_nested(JSON_CHECK_MAX_DEPTH + 100, "[", "]", "", false);
}

/* A scalar counts one level too, as jansson's parse_value counts it. */
static void test_scalar_inside_2048_arrays_fails(void) {
    check_nested(JSON_CHECK_MAX_DEPTH - 1, "[", "]", "1", true);
    check_nested(JSON_CHECK_MAX_DEPTH, "[", "]", "1", false);
    check_nested(JSON_CHECK_MAX_DEPTH - 1, "[", "]", "\"s\"", true);
    check_nested(JSON_CHECK_MAX_DEPTH, "[", "]", "null", false);
    check_nested(JSON_CHECK_MAX_DEPTH - 1, "[", "]", "{}", true);
    check_nested(JSON_CHECK_MAX_DEPTH, "[", "]", "{}", false);
}

/* Keys do not count; only member values do. */
static void test_object_nesting_limit_counts_values_not_keys(void) {
    check_nested(JSON_CHECK_MAX_DEPTH - 1, "{\"k\":", "}", "{}", true);
    check_nested(JSON_CHECK_MAX_DEPTH, "{\"k\":", "}", "{}", false);
    check_nested(JSON_CHECK_MAX_DEPTH - 1, "{\"k\":", "}", "7", true);
    check_nested(JSON_CHECK_MAX_DEPTH, "{\"k\":", "}", "7", false);
    check_nested(JSON_CHECK_MAX_DEPTH / 2 - 1, "[{\"k\":", "}]", "[{}]", true);
    check_nested(JSON_CHECK_MAX_DEPTH / 2 - 1, "[{\"k\":", "}]", "[{\"k\":0}]", false);
}

/* Depth is restored when containers close: many shallow siblings are fine. */
static void test_depth_returns_after_closing(void) {
    size_t deep_len;
    char *deep = nested(JSON_CHECK_MAX_DEPTH - 1, "[", "]", "", &deep_len);
    size_t len = 2 + 3 * (deep_len + 1);
    char *text = malloc(len), *p = text;
    *p++ = '[';
    for (int i = 0; i < 3; i++) {
        memcpy(p, deep, deep_len);
        p += deep_len;
        *p++ = i < 2 ? ',' : ']';
    }
    CHECK(agrees("three siblings 2047 deep inside one array", text, (size_t)(p - text), true));
    free(text);
    free(deep);
}

static char *repeated(char c, size_t count, const char *head, const char *tail, size_t *len) {
    size_t head_len = strlen(head), tail_len = strlen(tail);
    *len = head_len + count + tail_len;
    char *text = malloc(*len);
    memcpy(text, head, head_len);
    memset(text + head_len, c, count);
    memcpy(text + head_len + count, tail, tail_len);
    return text;
}

static void check_repeated(const char *what, char c, size_t count, const char *head,
                           const char *tail, bool valid) {
    size_t len;
    char *text = repeated(c, count, head, tail, &len);
    CHECK(agrees(what, text, len, valid));
    free(text);
}

/* Long digit strings take the strtod path with a heap copy; the verdict must
 * still be strtod's. */
static void test_long_numbers_decided_by_magnitude(void) {
    check_repeated("400-digit integer", '0', 399, "1", "", false);
    check_repeated("309-digit integer", '0', 308, "1", "", true);
    check_repeated("310-digit integer", '0', 309, "9", "", false);
    check_repeated("308 nines", '9', 308, "", "", true);
    check_repeated("309 nines", '9', 309, "", "", false);
    check_repeated("308 nines with a fraction", '9', 308, "", ".999999", true);
    check_repeated("DBL_MAX as 309 digits", '0', 292, "17976931348623157", "", true);
    check_repeated("past DBL_MAX as 309 digits", '0', 292, "17976931348623159", "", false);
    check_repeated("many leading fraction zeros", '0', 2000, "0.", "1e2309", true);
    check_repeated("many leading fraction zeros overflow", '0', 2000, "0.", "1e2310", false);
    check_repeated("many leading fraction zeros, far below", '0', 2000, "0.", "1e300", true);
    check_repeated("long fraction after DBL_MAX", '9', 3000, "1.7976931348623157", "e308", true);
    check_repeated("long fraction at the rounding edge", '9', 3000, "1.7976931348623158", "e308",
                   false);
    check_repeated("long zero tail at the rounding edge", '0', 3000, "1.7976931348623158", "1e308",
                   true);
    check_repeated("long exponent", '9', 5000, "1e", "", false);
    check_repeated("long negative exponent", '9', 5000, "-1e-", "", true);
    check_repeated("long integer inside array", '1', 1000, "[", "]", false);
    check_repeated("long fraction inside array", '1', 1000, "[0.", "]", true);
}

static void test_long_strings_scanned_whole(void) {
    check_repeated("long ASCII string", 'a', 100000, "\"", "\"", true);
    check_repeated("long string missing its end", 'a', 100000, "\"", "", false);
    check_repeated("long string, control byte at the end", 'a', 100000, "\"", "\x01\"", false);
}

static void test_check_leaves_errno_alone(void) {
    errno = EINTR;
    CHECK(!json_check_valid("1e999", 5));
    CHECK(json_check_valid("1e300", 5));
    CHECK(json_check_valid("1e-999", 6));
    CHECK_INT(errno, EINTR);
}

static void test_null_buffer_of_zero_length_is_invalid(void) {
    CHECK(!json_check_valid(NULL, 0));
}

int main(void) {
    RUN(test_each_case_matches_jansson_and_table);
    RUN(test_every_prefix_matches_jansson);
    RUN(test_wrapped_cases_match_jansson);
    RUN(test_2048_nested_arrays_pass_and_2049_fail);
    RUN(test_scalar_inside_2048_arrays_fails);
    RUN(test_object_nesting_limit_counts_values_not_keys);
    RUN(test_depth_returns_after_closing);
    RUN(test_long_numbers_decided_by_magnitude);
    RUN(test_long_strings_scanned_whole);
    RUN(test_check_leaves_errno_alone);
    RUN(test_null_buffer_of_zero_length_is_invalid);
    return TEST_SUMMARY();
}
