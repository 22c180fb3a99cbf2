/* test_http_upgrade.c -- the upgrade-request parser, the upgrade check and the
 * handshake replies, all on byte arrays. */
#include "http_upgrade.h"
#include "testlib.h"

#include <stdlib.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define UPGRADE_HEADERS                                                                            \
    "Host: example.com\r\n"                                                                        \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n"                                                                      \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"

#define GOOD_UPGRADE "GET /ws HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n"

/* Parses a copy of buf[0..len) in a heap block of exactly len bytes, so that
 * AddressSanitizer reports any read past len. */
static int parse_exact(const char *buf, size_t len, struct http_request *req) {
    char *copy = malloc(len ? len : 1);
    if (!copy) abort();
    memcpy(copy, buf, len);
    int r = http_parse_request(copy, len, req);
    free(copy);
    return r;
}

/* The first result other than HTTP_PARTIAL while the input grows a byte at a
 * time, as a server reading one byte per read() would see it. */
static int parse_growing(const char *buf, size_t len) {
    struct http_request req;
    for (size_t i = 1; i <= len; i++) {
        int r = parse_exact(buf, i, &req);
        if (r != HTTP_PARTIAL) return r;
    }
    return HTTP_PARTIAL;
}

static bool slice_is(const struct http_slice *s, const char *expected) {
    size_t n = strlen(expected);
    return s->ptr != NULL && s->len == n && memcmp(s->ptr, expected, n) == 0;
}

/* --- parser tables --- */

static const struct {
    const char *name;
    const char *request;
} valid_requests[] = {
    {"minimal 1.0", "GET / HTTP/1.0\r\n\r\n"},
    {"full upgrade", GOOD_UPGRADE},
    {"bare LF", "GET /ws HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"},
    {"mixed line endings", "GET /ws HTTP/1.1\r\nHost: a\nX-A: b\r\n\n"},
    {"no space after colon", "GET / HTTP/1.1\r\nHost:a\r\n\r\n"},
    {"tabs around value", "GET / HTTP/1.1\r\nHost:\t a \t\r\n\r\n"},
    {"tab inside value", "GET / HTTP/1.1\r\nX-A: a\tb\r\n\r\n"},
    {"empty value", "GET / HTTP/1.1\r\nX-Empty:\r\n\r\n"},
    {"whitespace-only value", "GET / HTTP/1.1\r\nX-Empty:   \r\n\r\n"},
    {"obs-text in value", "GET / HTTP/1.1\r\nX-Name: caf\xc3\xa9\r\n\r\n"},
    {"query in target", "GET /ws?token=a%20b&x=1 HTTP/1.1\r\n\r\n"},
    {"tchar method and name", "M-SEARCH * HTTP/1.1\r\nX~!#$%&'*+.^_`|: v\r\n\r\n"},
    {"absolute-form target", "GET http://h/ws HTTP/1.1\r\n\r\n"},
    {"colon inside value", "GET / HTTP/1.1\r\nHost: a:8080\r\n\r\n"},
};

static const struct {
    const char *name;
    const char *request;
} invalid_requests[] = {
    {"header without colon", "GET / HTTP/1.1\r\nHost example.com\r\n\r\n"},
    {"empty header name", "GET / HTTP/1.1\r\n: value\r\n\r\n"},
    {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"},
    {"obs-fold continuation", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"},
    {"tab continuation", "GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n"},
    {"whitespace before first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n"},
    {"control char in value", "GET / HTTP/1.1\r\nX-A: a\x01"
                              "b\r\n\r\n"},
    {"DEL in value", "GET / HTTP/1.1\r\nX-A: a\x7f\r\n\r\n"},
    {"escape in value", "GET / HTTP/1.1\r\nX-A: \x1b[31m\r\n\r\n"},
    {"control char in name", "GET / HTTP/1.1\r\nX\x01: a\r\n\r\n"},
    {"lone CR in value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"},
    {"lone CR as blank line", "GET / HTTP/1.1\r\nX-A: a\r\n\rx"},
    {"double space in request line", "GET  / HTTP/1.1\r\n\r\n"},
    {"empty method", " / HTTP/1.1\r\n\r\n"},
    {"no target", "GET HTTP/1.1\r\n\r\n"},
    {"space in target", "GET /w s HTTP/1.1\r\n\r\n"},
    {"control char in target", "GET /w\x01 HTTP/1.1\r\n\r\n"},
    {"non-ASCII target", "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"},
    {"HTTP/2.0", "GET / HTTP/2.0\r\n\r\n"},
    {"lowercase http", "GET / http/1.1\r\n\r\n"},
    {"non-digit minor", "GET / HTTP/1.x\r\n\r\n"},
    {"two-digit minor", "GET / HTTP/1.10\r\n\r\n"},
    {"trailing text after version", "GET / HTTP/1.1 x\r\n\r\n"},
    {"missing version", "GET /\r\n\r\n"},
    {"leading blank line", "\r\nGET / HTTP/1.1\r\n\r\n"},
    {"binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
};

static void test_valid_requests_return_head_length(void) {
    for (size_t i = 0; i < COUNT(valid_requests); i++) {
        struct http_request req;
        const char *r = valid_requests[i].request;
        int got = parse_exact(r, strlen(r), &req);
        if (got != (int)strlen(r)) fprintf(stderr, "  case: %s\n", valid_requests[i].name);
        CHECK_INT(got, strlen(r));
    }
}

static void test_invalid_requests_return_invalid(void) {
    for (size_t i = 0; i < COUNT(invalid_requests); i++) {
        struct http_request req;
        const char *r = invalid_requests[i].request;
        int got = parse_exact(r, strlen(r), &req);
        if (got != HTTP_INVALID) fprintf(stderr, "  case: %s\n", invalid_requests[i].name);
        CHECK_INT(got, HTTP_INVALID);
    }
}

static void test_nul_byte_in_value_is_invalid(void) {
    static const char r[] = "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
    struct http_request req;
    CHECK_INT(parse_exact(r, sizeof r - 1, &req), HTTP_INVALID);
}

static void test_every_strict_prefix_of_valid_request_is_partial(void) {
    for (size_t i = 0; i < COUNT(valid_requests); i++) {
        const char *r = valid_requests[i].request;
        size_t len = strlen(r);
        for (size_t split = 0; split < len; split++) {
            struct http_request req;
            int got = parse_exact(r, split, &req);
            if (got != HTTP_PARTIAL)
                fprintf(stderr, "  case: %s, split %zu\n", valid_requests[i].name, split);
            CHECK_INT(got, HTTP_PARTIAL);
        }
    }
}

static void test_byte_by_byte_equals_whole(void) {
    struct http_request req;
    for (size_t i = 0; i < COUNT(valid_requests); i++) {
        const char *r = valid_requests[i].request;
        CHECK_INT(parse_growing(r, strlen(r)), parse_exact(r, strlen(r), &req));
    }
    for (size_t i = 0; i < COUNT(invalid_requests); i++) {
        const char *r = invalid_requests[i].request;
        CHECK_INT(parse_growing(r, strlen(r)), parse_exact(r, strlen(r), &req));
    }
}

static void test_invalid_is_reported_before_head_ends(void) {
    static const char r[] = "GET / HTTP/1.1\r\nHost example";
    struct http_request req;
    CHECK_INT(parse_exact(r, sizeof r - 1, &req), HTTP_INVALID);
}

static void test_split_request_fields_match_whole(void) {
    /* Trailing bytes after the head change nothing in what is found. */
    const char *r = GOOD_UPGRADE "extra frame bytes";
    size_t head = strlen(GOOD_UPGRADE);
    struct http_request whole, part;
    CHECK_INT(http_parse_request(r, strlen(r), &whole), head);
    CHECK_INT(http_parse_request(r, head, &part), head);
    CHECK(part.ws_key.ptr == whole.ws_key.ptr && part.ws_key.len == whole.ws_key.len);
    CHECK(part.connection_upgrade && part.upgrade_websocket);
}

static void test_bytes_after_head_are_not_consumed(void) {
    const char *r = "GET / HTTP/1.1\r\nHost: a\r\n\r\n\x81\x85garbage";
    struct http_request req;
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
}

static const struct {
    const char *request;
    const char *method, *target, *path, *query;
    int minor_version;
} request_line_cases[] = {
    {"GET /ws?token=abc&x=1 HTTP/1.1\r\n\r\n", "GET", "/ws?token=abc&x=1", "/ws", "token=abc&x=1",
     1},
    {"GET /ws HTTP/1.0\r\n\r\n", "GET", "/ws", "/ws", "", 0},
    {"GET /ws? HTTP/1.1\r\n\r\n", "GET", "/ws?", "/ws", "", 1},
    {"GET /a?b?c HTTP/1.1\r\n\r\n", "GET", "/a?b?c", "/a", "b?c", 1},
    {"M-SEARCH * HTTP/1.1\r\n\r\n", "M-SEARCH", "*", "*", "", 1},
};

static void test_request_line_fields(void) {
    for (size_t i = 0; i < COUNT(request_line_cases); i++) {
        struct http_request req;
        const char *r = request_line_cases[i].request;
        CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
        bool ok = slice_is(&req.method, request_line_cases[i].method) &&
                  slice_is(&req.target, request_line_cases[i].target) &&
                  slice_is(&req.path, request_line_cases[i].path) &&
                  req.query.len == strlen(request_line_cases[i].query) &&
                  memcmp(req.query.ptr, request_line_cases[i].query, req.query.len) == 0 &&
                  req.minor_version == request_line_cases[i].minor_version;
        if (!ok) fprintf(stderr, "  case: %s", r);
        CHECK(ok);
    }
}

static void test_tracked_headers_are_found_and_trimmed(void) {
    const char *r = "GET /ws HTTP/1.1\r\n"
                    "Host:  gw.example.com:8888 \r\n"
                    "Origin:\thttps://app.example.com\t\r\n"
                    "Authorization: Bearer abc.def.ghi\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: chat, token-xyz\r\n"
                    "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n"
                    "X-Other: ignored\r\n"
                    "\r\n";
    struct http_request req;
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
    CHECK(slice_is(&req.host, "gw.example.com:8888"));
    CHECK(slice_is(&req.origin, "https://app.example.com"));
    CHECK(slice_is(&req.authorization, "Bearer abc.def.ghi"));
    CHECK(slice_is(&req.ws_key, "dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK(slice_is(&req.ws_version, "13"));
    CHECK_INT(req.ws_protocol.count, 1);
    CHECK(slice_is(&req.ws_protocol.lines[0], "chat, token-xyz"));
    CHECK_INT(req.forwarded_for.count, 1);
    CHECK(slice_is(&req.forwarded_for.lines[0], "10.0.0.1, 10.0.0.2"));
    CHECK(!req.connection_upgrade);
    CHECK(!req.upgrade_websocket);
}

static void test_absent_headers_have_null_ptr(void) {
    const char *r = "GET / HTTP/1.1\r\n\r\n";
    struct http_request req;
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
    CHECK(req.host.ptr == NULL && req.origin.ptr == NULL && req.authorization.ptr == NULL);
    CHECK(req.ws_key.ptr == NULL && req.ws_version.ptr == NULL);
    CHECK(req.ws_protocol.count == 0 && req.forwarded_for.count == 0);
}

static void test_header_names_are_case_insensitive(void) {
    const char *r = "GET /ws HTTP/1.1\r\n"
                    "hOsT: a\r\n"
                    "UPGRADE: WebSocket\r\n"
                    "connection: UPGRADE\r\n"
                    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "SEC-WEBSOCKET-VERSION: 13\r\n"
                    "\r\n";
    struct http_request req;
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
    CHECK(slice_is(&req.host, "a"));
    CHECK(req.upgrade_websocket);
    CHECK(req.connection_upgrade);
    CHECK(slice_is(&req.ws_key, "dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK_INT(http_check_upgrade(&req, "/ws"), HTTP_UPGRADE_OK);
}

static const struct {
    const char *headers;
    bool connection_upgrade;
    bool upgrade_websocket;
} token_cases[] = {
    {"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n", true, true},
    {"Connection: Upgrade,keep-alive\r\nUpgrade: h2c, WebSocket\r\n", true, true},
    {"Connection: keep-alive\r\nConnection: upgrade\r\nUpgrade: websocket\r\n", true, true},
    {"Connection: upgrade\r\nConnection: close\r\n", true, false},
    {"Upgrade: h2c\r\nUpgrade: websocket\r\n", false, true},
    {"Connection: , ,upgrade ,\r\n", true, false},
    {"Connection: upgraded\r\nUpgrade: websockets\r\n", false, false},
    {"Connection: keep-alive upgrade\r\nUpgrade: web socket\r\n", false, false},
    {"Connection:\r\nUpgrade:\r\n", false, false},
    {"X-Connection: upgrade\r\nX-Upgrade: websocket\r\n", false, false},
};

static void test_connection_and_upgrade_tokens_across_lines(void) {
    for (size_t i = 0; i < COUNT(token_cases); i++) {
        char r[512];
        snprintf(r, sizeof r, "GET /ws HTTP/1.1\r\n%s\r\n", token_cases[i].headers);
        struct http_request req;
        CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
        if (req.connection_upgrade != token_cases[i].connection_upgrade ||
            req.upgrade_websocket != token_cases[i].upgrade_websocket)
            fprintf(stderr, "  case %zu: %s\n", i, token_cases[i].headers);
        CHECK(req.connection_upgrade == token_cases[i].connection_upgrade);
        CHECK(req.upgrade_websocket == token_cases[i].upgrade_websocket);
    }
}

/* A singleton header twice is ambiguous (which Host, which key, whose token?):
 * the whole request is refused, whatever the values, case or position. */
static const char *const repeated_singletons[] = {
    "Host: first\r\nHost: second\r\n",
    "Host: same\r\nhost: same\r\n",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: x\r\n",
    "Sec-WebSocket-Version: 13\r\nSEC-WEBSOCKET-VERSION: 13\r\n",
    "Authorization: Bearer one\r\nX-Other: x\r\nauthorization: Bearer two\r\n",
    "Origin: https://a.example\r\nOrigin: https://evil.example\r\n",
    "Origin:\r\nOrigin: https://evil.example\r\n",
    "Authorization: Bearer one\r\nAuthorization:\r\n",
};

static void test_repeated_singleton_header_is_invalid(void) {
    for (size_t i = 0; i < COUNT(repeated_singletons); i++) {
        char r[512];
        snprintf(r, sizeof r, "GET /ws HTTP/1.1\r\n%s\r\n", repeated_singletons[i]);
        struct http_request req;
        int got = parse_exact(r, strlen(r), &req);
        if (got != HTTP_INVALID) fprintf(stderr, "  case: %s", repeated_singletons[i]);
        CHECK_INT(got, HTTP_INVALID);
        CHECK_INT(parse_growing(r, strlen(r)), HTTP_INVALID);
    }
}

/* Joins the elements of a list header with "|" (as http_list_next yields them). */
static void join_list(const struct http_list *list, char *out, size_t size) {
    struct http_list_iter it = {0, 0};
    struct http_slice item;
    size_t n = 0;
    out[0] = '\0';
    while (http_list_next(list, &it, &item))
        n += (size_t)snprintf(out + n, size - n, "%s%.*s", n ? "|" : "", (int)item.len, item.ptr);
}

/* List headers are one list across all their lines (RFC 9110 5.3): a proxy
 * that adds its own X-Forwarded-For line must not hide the client's. */
static const struct {
    const char *headers;
    const char *forwarded_for; /* elements joined with "|" */
    const char *protocols;
} list_cases[] = {
    {"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\n",
     "203.0.113.7|198.51.100.2", ""},
    {"X-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nHost: a\r\nx-forwarded-for: 3.3.3.3\r\n",
     "1.1.1.1|2.2.2.2|3.3.3.3", ""},
    {"X-Forwarded-For:\r\nX-Forwarded-For: , 4.4.4.4 ,\r\n", "4.4.4.4", ""},
    {"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: token-abc, x\r\n", "",
     "chat|token-abc|x"},
    {"Sec-WebSocket-Protocol: a,b\r\nX-Forwarded-For: 5.5.5.5\r\nSec-WebSocket-Protocol: c\r\n",
     "5.5.5.5", "a|b|c"},
    {"X-Other: 9.9.9.9\r\n", "", ""},
};

static void test_list_headers_are_one_list_across_lines(void) {
    for (size_t i = 0; i < COUNT(list_cases); i++) {
        char r[512], got[256];
        snprintf(r, sizeof r, "GET /ws HTTP/1.1\r\n%s\r\n", list_cases[i].headers);
        struct http_request req;
        CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
        join_list(&req.forwarded_for, got, sizeof got);
        if (strcmp(got, list_cases[i].forwarded_for) != 0)
            fprintf(stderr, "  case: %s", list_cases[i].headers);
        CHECK_STR(got, list_cases[i].forwarded_for);
        join_list(&req.ws_protocol, got, sizeof got);
        CHECK_STR(got, list_cases[i].protocols);
    }
}

static void test_list_header_lines_over_max_are_invalid(void) {
    char r[2048];
    struct http_request req;
    for (int lines = HTTP_MAX_LIST_LINES; lines <= HTTP_MAX_LIST_LINES + 1; lines++) {
        size_t n = (size_t)snprintf(r, sizeof r, "GET /ws HTTP/1.1\r\n");
        for (int i = 0; i < lines; i++)
            n += (size_t)snprintf(r + n, sizeof r - n, "X-Forwarded-For: 10.0.0.%d\r\n", i);
        n += (size_t)snprintf(r + n, sizeof r - n, "\r\n");
        int expected = lines > HTTP_MAX_LIST_LINES ? HTTP_INVALID : (int)n;
        CHECK_INT(parse_exact(r, n, &req), expected);
        if (expected > 0) CHECK_INT(req.forwarded_for.count, HTTP_MAX_LIST_LINES);
    }
}

/* Builds "GET / HTTP/1.1" plus count header lines into buf. */
static size_t build_many_headers(char *buf, size_t size, int count) {
    size_t n = (size_t)snprintf(buf, size, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < count; i++) n += (size_t)snprintf(buf + n, size - n, "X-H%d: v\r\n", i);
    n += (size_t)snprintf(buf + n, size - n, "\r\n");
    return n;
}

static void test_max_headers_accepted_one_more_invalid(void) {
    char buf[4096];
    struct http_request req;
    size_t n = build_many_headers(buf, sizeof buf, HTTP_MAX_HEADERS);
    CHECK_INT(parse_exact(buf, n, &req), n);
    n = build_many_headers(buf, sizeof buf, HTTP_MAX_HEADERS + 1);
    CHECK_INT(parse_exact(buf, n, &req), HTTP_INVALID);
    CHECK_INT(parse_growing(buf, n), HTTP_INVALID);
}

/* A request whose head is exactly size bytes, padded in one header value. */
static char *head_of_size(size_t size) {
    const char *start = "GET / HTTP/1.1\r\nX-Pad: ";
    const char *end = "\r\n\r\n";
    char *buf = malloc(size + 1);
    if (!buf) abort();
    size_t pad = size - strlen(start) - strlen(end);
    strcpy(buf, start);
    memset(buf + strlen(start), 'p', pad);
    strcpy(buf + strlen(start) + pad, end);
    return buf;
}

static void test_head_at_size_limit_parses_one_more_is_partial(void) {
    struct http_request req;
    char *buf = head_of_size(HTTP_MAX_HEADER_BYTES);
    CHECK_INT(parse_exact(buf, HTTP_MAX_HEADER_BYTES, &req), HTTP_MAX_HEADER_BYTES);
    free(buf);
    /* Over the limit the parser stops looking, and the caller answers 431. */
    buf = head_of_size(HTTP_MAX_HEADER_BYTES + 1);
    CHECK_INT(parse_exact(buf, HTTP_MAX_HEADER_BYTES + 1, &req), HTTP_PARTIAL);
    free(buf);
}

static void test_empty_input_is_partial(void) {
    struct http_request req;
    CHECK_INT(http_parse_request("", 0, &req), HTTP_PARTIAL);
    CHECK_INT(http_parse_request(NULL, 0, &req), HTTP_PARTIAL);
}

/* --- upgrade check --- */

static const struct {
    const char *name;
    const char *request;
    const char *ws_path;
    enum http_upgrade_status expected;
} upgrade_cases[] = {
    {"valid", GOOD_UPGRADE, "/ws", HTTP_UPGRADE_OK},
    {"valid with query", "GET /ws?token=abc HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws",
     HTTP_UPGRADE_OK},
    {"custom path", "GET /realtime HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/realtime",
     HTTP_UPGRADE_OK},
    {"HTTP/1.2 accepted", "GET /ws HTTP/1.2\r\n" UPGRADE_HEADERS "\r\n", "/ws", HTTP_UPGRADE_OK},
    {"POST", "POST /ws HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"POST elsewhere", "POST /nope HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws",
     HTTP_UPGRADE_NOT_FOUND},
    {"lowercase get", "get /ws HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws",
     HTTP_UPGRADE_BAD_REQUEST},
    {"HTTP/1.0", "GET /ws HTTP/1.0\r\n" UPGRADE_HEADERS "\r\n", "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"plain GET other path", "GET /other HTTP/1.1\r\nHost: a\r\n\r\n", "/ws",
     HTTP_UPGRADE_NOT_FOUND},
    {"upgrade on other path", "GET /other HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws",
     HTTP_UPGRADE_NOT_FOUND},
    {"trailing slash", "GET /ws/ HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws",
     HTTP_UPGRADE_NOT_FOUND},
    {"path prefix", "GET /wsx HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws", HTTP_UPGRADE_NOT_FOUND},
    {"path case", "GET /WS HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "/ws", HTTP_UPGRADE_NOT_FOUND},
    {"plain GET /ws", "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n", "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"no Upgrade",
     "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"Upgrade h2c",
     "GET /ws HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"no Connection upgrade",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"missing key",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Version: 13\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"missing version",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_REQUEST},
    {"version 8",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_VERSION},
    {"version list",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13, 8\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_VERSION},
    {"empty version",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version:\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_VERSION},
    {"version 013",
     "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 013\r\n\r\n",
     "/ws", HTTP_UPGRADE_BAD_VERSION},
};

/* Sec-WebSocket-Key with every other header right: base64 of 16 bytes or 400. */
static const struct {
    const char *key;
    enum http_upgrade_status expected;
} key_cases[] = {
    {"AAAAAAAAAAAAAAAAAAAAAA==", HTTP_UPGRADE_OK},
    {"/////////////////////w==", HTTP_UPGRADE_OK},
    {"+/+/+/+/+/+/+/+/+/+/+w==", HTTP_UPGRADE_OK},
    {"x3JJHMbDL1EzLkh9GBhXDw==", HTTP_UPGRADE_OK},
    {"", HTTP_UPGRADE_BAD_REQUEST},
    {"AAAAAAAAAAAAAAAAAAAA", HTTP_UPGRADE_BAD_REQUEST},         /* 15 bytes, unpadded */
    {"AAAAAAAAAAAAAAAAAAAA==", HTTP_UPGRADE_BAD_REQUEST},       /* 22 chars */
    {"AAAAAAAAAAAAAAAAAAAAAAA=", HTTP_UPGRADE_BAD_REQUEST},     /* 17 bytes */
    {"AAAAAAAAAAAAAAAAAAAAAAAA", HTTP_UPGRADE_BAD_REQUEST},     /* 18 bytes */
    {"AAAA=AAAAAAAAAAAAAAAAA==", HTTP_UPGRADE_BAD_REQUEST},     /* padding in the middle */
    {"AAAAAAAAAAAAAAAAAAAAA*==", HTTP_UPGRADE_BAD_REQUEST},     /* not base64 */
    {"AAAAAAAAAAAAAAAAAAA AA==", HTTP_UPGRADE_BAD_REQUEST},     /* inner space */
    {"AAAAAAAAAAAAAAAAAAAAAA==AAAA", HTTP_UPGRADE_BAD_REQUEST}, /* trailing data */
    {"AAAAAAAAAAAAAAAAAAAAAA=", HTTP_UPGRADE_BAD_REQUEST},      /* half the padding */
    {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", HTTP_UPGRADE_BAD_REQUEST},
};

static void test_check_upgrade_outcomes(void) {
    for (size_t i = 0; i < COUNT(upgrade_cases); i++) {
        struct http_request req;
        const char *r = upgrade_cases[i].request;
        CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
        enum http_upgrade_status got = http_check_upgrade(&req, upgrade_cases[i].ws_path);
        if (got != upgrade_cases[i].expected)
            fprintf(stderr, "  case: %s\n", upgrade_cases[i].name);
        CHECK_INT(got, upgrade_cases[i].expected);
    }
}

static void test_key_cases(void) {
    for (size_t i = 0; i < COUNT(key_cases); i++) {
        char r[512];
        snprintf(r, sizeof r,
                 "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 key_cases[i].key);
        struct http_request req;
        CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
        enum http_upgrade_status got = http_check_upgrade(&req, "/ws");
        if (got != key_cases[i].expected) fprintf(stderr, "  key: \"%s\"\n", key_cases[i].key);
        CHECK_INT(got, key_cases[i].expected);
    }
}

/* --- accept key --- */

/* RFC 6455 sections 1.3 and 4.2.2 give the first pair (cross-checked with
 * Python's hashlib); "s3pPLMBiX7SGXFDLHu+sJz7G/aA=" quoted in our task brief is
 * wrong. The second is the Wikipedia WebSocket example. The key slice is not
 * NUL-terminated: bytes after it must not be hashed. */
static const struct {
    const char *key;
    size_t len;
    const char *accept;
} accept_cases[] = {
    {"dGhlIHNhbXBsZSBub25jZQ==", 24, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
    {"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13", 24, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
    {"x3JJHMbDL1EzLkh9GBhXDw==", 24, "HSmrc0sMlYUkAGmm5OPpG2HaGWk="},
};

static void test_accept_cases(void) {
    for (size_t i = 0; i < COUNT(accept_cases); i++) {
        struct http_slice key = {accept_cases[i].key, accept_cases[i].len};
        char out[29];
        memset(out, 'x', sizeof out);
        CHECK_INT(http_ws_accept(&key, out), 0);
        CHECK_STR(out, accept_cases[i].accept);
    }
}

/* --- query parameters --- */

static const struct {
    const char *query;
    const char *name;
    size_t out_size;
    int expected;
    const char *value;
} query_cases[] = {
    {"token=abc", "token", 64, 3, "abc"},
    {"a=1&token=abc", "token", 64, 3, "abc"},
    {"token=abc&a=1", "token", 64, 3, "abc"},
    {"tok=1&token=2", "token", 64, 1, "2"},
    {"tok=1&token=2", "tok", 64, 1, "1"},
    {"token=2&tok=1", "tok", 64, 1, "1"},
    {"xtoken=1&tokenx=2", "token", 64, -1, NULL},
    {"token=", "token", 64, 0, ""},
    {"a=1&token=", "token", 64, 0, ""},
    {"token", "token", 64, 0, ""},
    {"token&a=1", "token", 64, 0, ""},
    {"a=1", "token", 64, -1, NULL},
    {"", "token", 64, -1, NULL},
    {"=token", "token", 64, -1, NULL},
    {"a=token", "token", 64, -1, NULL},
    {"token=a%20b+c", "token", 64, 5, "a b c"},
    {"token=%2B%2b%41", "token", 64, 3, "++A"},
    {"token=a=b", "token", 64, 3, "a=b"},
    {"&&token=x&&", "token", 64, 1, "x"},
    {"token=1&token=2", "token", 64, 1, "1"},
    {"token=%zz", "token", 64, -2, NULL},
    {"token=%2", "token", 64, -2, NULL},
    {"token=%", "token", 64, -2, NULL},
    {"token=ab%", "token", 64, -2, NULL},
    {"token=%2&a=1", "token", 64, -2, NULL},
    {"token=%00", "token", 64, -2, NULL},
    {"token=abc", "token", 4, 3, "abc"},
    {"token=abcd", "token", 4, -2, NULL},
    {"token=%41%42%43", "token", 4, 3, "ABC"},
    {"token=", "token", 1, 0, ""},
    {"token=a", "token", 1, -2, NULL},
    {"token=a", "token", 0, -2, NULL},
};

static void test_query_param_cases(void) {
    for (size_t i = 0; i < COUNT(query_cases); i++) {
        struct http_slice q = {query_cases[i].query, strlen(query_cases[i].query)};
        char out[64];
        memset(out, '#', sizeof out);
        int got = http_query_param(&q, query_cases[i].name, out, query_cases[i].out_size);
        if (got != query_cases[i].expected)
            fprintf(stderr, "  case %zu: \"%s\" name %s\n", i, query_cases[i].query,
                    query_cases[i].name);
        CHECK_INT(got, query_cases[i].expected);
        if (query_cases[i].value && got >= 0) CHECK_STR(out, query_cases[i].value);
    }
}

static void test_query_param_does_not_write_past_out_size(void) {
    struct http_slice q = {"token=abcdef", 12};
    char out[8];
    memset(out, '#', sizeof out);
    CHECK_INT(http_query_param(&q, "token", out, 4), -2);
    for (size_t i = 4; i < sizeof out; i++) CHECK(out[i] == '#');
}

static void test_query_param_respects_slice_end(void) {
    /* Only "token=ab" is the query; the rest of the string is outside the slice. */
    struct http_slice q = {"token=abcdef", 8};
    char out[16];
    CHECK_INT(http_query_param(&q, "token", out, sizeof out), 2);
    CHECK_STR(out, "ab");
    struct http_slice empty = {NULL, 0};
    CHECK_INT(http_query_param(&empty, "token", out, sizeof out), -1);
}

static void test_query_param_from_parsed_request(void) {
    const char *r = "GET /ws?x=1&token=eyJ.a-b_c.d HTTP/1.1\r\n\r\n";
    struct http_request req;
    char out[64];
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
    CHECK_INT(http_query_param(&req.query, "token", out, sizeof out), 11);
    CHECK_STR(out, "eyJ.a-b_c.d");
}

/* --- subprotocols --- */

static const struct {
    const char *protocols;
    const char *found; /* NULL when none matches */
} protocol_cases[] = {
    {"token-abc", "token-abc"},
    {"chat, token-abc", "token-abc"},
    {"chat,token-abc,other", "token-abc"},
    {"  token-abc  , chat", "token-abc"},
    {"\ttoken-abc\t", "token-abc"},
    {"chat, token-a, token-b", "token-a"},
    {",, ,token-x", "token-x"},
    {"token-", "token-"},
    {"chat, superchat", NULL},
    {"xtoken-abc", NULL},
    {"Token-abc", NULL},
    {"token", NULL},
    {"", NULL},
    {" , ", NULL},
};

static void test_find_protocol_cases(void) {
    for (size_t i = 0; i < COUNT(protocol_cases); i++) {
        struct http_list list = {.count = 1};
        list.lines[0] =
            (struct http_slice){protocol_cases[i].protocols, strlen(protocol_cases[i].protocols)};
        struct http_slice token = {NULL, 0};
        int got = http_find_protocol(&list, "token-", &token);
        if (protocol_cases[i].found) {
            CHECK_INT(got, 0);
            if (!slice_is(&token, protocol_cases[i].found))
                fprintf(stderr, "  case: \"%s\"\n", protocol_cases[i].protocols);
            CHECK(slice_is(&token, protocol_cases[i].found));
        } else {
            if (got != -1) fprintf(stderr, "  case: \"%s\"\n", protocol_cases[i].protocols);
            CHECK_INT(got, -1);
        }
    }
}

static void test_find_protocol_on_absent_header(void) {
    struct http_list absent = {.count = 0};
    struct http_slice token;
    CHECK_INT(http_find_protocol(&absent, "token-", &token), -1);
}

static void test_find_protocol_respects_line_ends(void) {
    /* Neither line is NUL-terminated at its slice end, and an element never
     * spans two lines. */
    struct http_list list = {.count = 2};
    list.lines[0] = (struct http_slice){"chat, tok"
                                        "en-abc",
                                        9};
    list.lines[1] = (struct http_slice){"en-abc, token-def", 17};
    struct http_slice token;
    CHECK_INT(http_find_protocol(&list, "token-", &token), 0);
    CHECK(slice_is(&token, "token-def"));
    list.count = 1;
    CHECK_INT(http_find_protocol(&list, "token-", &token), -1);
}

static void test_find_protocol_on_a_later_line(void) {
    const char *r = "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: chat\r\n"
                    "Sec-WebSocket-Protocol: token-abc\r\n\r\n";
    struct http_request req;
    struct http_slice token;
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
    CHECK_INT(http_find_protocol(&req.ws_protocol, "token-", &token), 0);
    CHECK(slice_is(&token, "token-abc"));
}

/* --- replies --- */

static const struct {
    const char *protocol; /* NULL: no subprotocol line */
    size_t protocol_len;
    const char *expected;
} build_101_cases[] = {
    {NULL, 0,
     "HTTP/1.1 101 Switching Protocols\r\n"
     "Upgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
     "\r\n"},
    {"token-abc, chat", 9,
     "HTTP/1.1 101 Switching Protocols\r\n"
     "Upgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
     "Sec-WebSocket-Protocol: token-abc\r\n"
     "\r\n"},
};

static void test_build_101_exact_bytes(void) {
    for (size_t i = 0; i < COUNT(build_101_cases); i++) {
        char out[256];
        struct http_slice protocol = {build_101_cases[i].protocol, build_101_cases[i].protocol_len};
        int n = http_build_101(out, sizeof out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                               build_101_cases[i].protocol ? &protocol : NULL);
        CHECK_INT(n, strlen(build_101_cases[i].expected));
        CHECK_STR(out, build_101_cases[i].expected);
    }
}

static void test_parsed_request_to_101_reply(void) {
    const char *r = "GET /ws HTTP/1.1\r\n" UPGRADE_HEADERS
                    "Sec-WebSocket-Protocol: chat, token-eyJhbGciOi\r\n\r\n";
    struct http_request req;
    struct http_slice protocol;
    char accept[29], out[256];
    CHECK_INT(http_parse_request(r, strlen(r), &req), strlen(r));
    CHECK_INT(http_check_upgrade(&req, "/ws"), HTTP_UPGRADE_OK);
    CHECK_INT(http_ws_accept(&req.ws_key, accept), 0);
    CHECK_INT(http_find_protocol(&req.ws_protocol, "token-", &protocol), 0);
    int n = http_build_101(out, sizeof out, accept, &protocol);
    const char *expected = "HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                           "Sec-WebSocket-Protocol: token-eyJhbGciOi\r\n"
                           "\r\n";
    CHECK_INT(n, strlen(expected));
    CHECK_STR(out, expected);
}

static void test_build_101_too_small_is_error(void) {
    char out[256];
    int n = http_build_101(out, sizeof out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", NULL);
    CHECK(n > 0);
    CHECK_INT(http_build_101(out, (size_t)n, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", NULL), -1);
    CHECK_INT(http_build_101(out, (size_t)n + 1, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", NULL), n);
}

/* Checks that reply is a whole response whose Content-Length equals its body. */
static void check_content_length_matches_body(const char *reply, int len) {
    const char *head_end = strstr(reply, "\r\n\r\n");
    const char *cl = strstr(reply, "Content-Length: ");
    CHECK(head_end != NULL && cl != NULL && cl < head_end);
    if (!head_end || !cl) return;
    long declared = strtol(cl + strlen("Content-Length: "), NULL, 10);
    long body = (long)len - (long)(head_end + 4 - reply);
    CHECK_INT(declared, body);
}

static void test_build_error_exact_bytes(void) {
    char out[512];
    int n = http_build_error(out, sizeof out, 404, "no such endpoint");
    const char *expected = "HTTP/1.1 404 Not Found\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Length: 17\r\n"
                           "Connection: close\r\n"
                           "\r\n"
                           "no such endpoint\n";
    CHECK_INT(n, strlen(expected));
    CHECK_STR(out, expected);
}

static void test_build_error_content_length_matches_body(void) {
    static const int statuses[] = {400, 403, 404, 426, 429, 431, 500, 503};
    static const char *const messages[] = {"", "x", "origin not allowed", "caf\xc3\xa9"};
    for (size_t i = 0; i < COUNT(statuses); i++) {
        for (size_t j = 0; j < COUNT(messages); j++) {
            char out[512];
            int n = http_build_error(out, sizeof out, statuses[i], messages[j]);
            CHECK(n > 0);
            CHECK_INT(n, strlen(out));
            check_content_length_matches_body(out, n);
            char status_line[64];
            snprintf(status_line, sizeof status_line, "HTTP/1.1 %d %s\r\n", statuses[i],
                     http_status_text(statuses[i]));
            CHECK(strncmp(out, status_line, strlen(status_line)) == 0);
            CHECK(strstr(out, "Connection: close\r\n") != NULL);
        }
    }
}

static void test_only_426_carries_version_header(void) {
    char out[512];
    CHECK(http_build_error(out, sizeof out, 426, "unsupported version") > 0);
    const char *head_end = strstr(out, "\r\n\r\n");
    const char *version = strstr(out, "Sec-WebSocket-Version: 13\r\n");
    CHECK(version != NULL && head_end != NULL && version < head_end);
    CHECK(http_build_error(out, sizeof out, 400, "bad request") > 0);
    CHECK(strstr(out, "Sec-WebSocket-Version") == NULL);
}

static void test_build_error_too_small_is_error(void) {
    char out[512];
    int n = http_build_error(out, sizeof out, 503, "draining");
    CHECK(n > 0);
    CHECK_INT(http_build_error(out, (size_t)n, 503, "draining"), -1);
    CHECK_INT(http_build_error(out, 0, 503, "draining"), -1);
}

static void test_build_head_exact_bytes(void) {
    char out[256];
    int n = http_build_head(out, sizeof out, 200, "application/json", 1234);
    const char *expected = "HTTP/1.1 200 OK\r\n"
                           "Content-Type: application/json\r\n"
                           "Content-Length: 1234\r\n"
                           "Connection: close\r\n"
                           "Cache-Control: no-store\r\n"
                           "\r\n";
    CHECK_INT(n, strlen(expected));
    CHECK_STR(out, expected);
    n = http_build_head(out, sizeof out, 503, "text/plain", 0);
    CHECK(n > 0 && strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    CHECK(strstr(out, "Content-Length: 0\r\n") != NULL);
    CHECK_INT(http_build_head(out, 10, 200, "text/plain", 0), -1);
}

static void test_status_texts(void) {
    static const struct {
        int status;
        const char *text;
    } cases[] = {
        {101, "Switching Protocols"},
        {200, "OK"},
        {400, "Bad Request"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {426, "Upgrade Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
    };
    for (size_t i = 0; i < COUNT(cases); i++)
        CHECK_STR(http_status_text(cases[i].status), cases[i].text);
    CHECK(http_status_text(299) != NULL);
}

static void test_slice_equals_nocase(void) {
    struct http_slice s = {"WebSocket", 9};
    CHECK(http_slice_equals_nocase(&s, "websocket"));
    CHECK(http_slice_equals_nocase(&s, "WEBSOCKET"));
    CHECK(!http_slice_equals_nocase(&s, "websockets"));
    CHECK(!http_slice_equals_nocase(&s, "websocke"));
    struct http_slice empty = {NULL, 0};
    CHECK(http_slice_equals_nocase(&empty, ""));
}

int main(void) {
    RUN(test_valid_requests_return_head_length);
    RUN(test_invalid_requests_return_invalid);
    RUN(test_nul_byte_in_value_is_invalid);
    RUN(test_every_strict_prefix_of_valid_request_is_partial);
    RUN(test_byte_by_byte_equals_whole);
    RUN(test_invalid_is_reported_before_head_ends);
    RUN(test_split_request_fields_match_whole);
    RUN(test_bytes_after_head_are_not_consumed);
    RUN(test_request_line_fields);
    RUN(test_tracked_headers_are_found_and_trimmed);
    RUN(test_absent_headers_have_null_ptr);
    RUN(test_header_names_are_case_insensitive);
    RUN(test_connection_and_upgrade_tokens_across_lines);
    RUN(test_repeated_singleton_header_is_invalid);
    RUN(test_list_headers_are_one_list_across_lines);
    RUN(test_list_header_lines_over_max_are_invalid);
    RUN(test_max_headers_accepted_one_more_invalid);
    RUN(test_head_at_size_limit_parses_one_more_is_partial);
    RUN(test_empty_input_is_partial);
    RUN(test_check_upgrade_outcomes);
    RUN(test_key_cases);
    RUN(test_accept_cases);
    RUN(test_query_param_cases);
    RUN(test_query_param_does_not_write_past_out_size);
    RUN(test_query_param_respects_slice_end);
    RUN(test_query_param_from_parsed_request);
    RUN(test_find_protocol_cases);
    RUN(test_find_protocol_on_absent_header);
    RUN(test_find_protocol_respects_line_ends);
    RUN(test_find_protocol_on_a_later_line);
    RUN(test_build_101_exact_bytes);
    RUN(test_parsed_request_to_101_reply);
    RUN(test_build_101_too_small_is_error);
    RUN(test_build_error_exact_bytes);
    RUN(test_build_error_content_length_matches_body);
    RUN(test_only_426_carries_version_header);
    RUN(test_build_error_too_small_is_error);
    RUN(test_build_head_exact_bytes);
    RUN(test_status_texts);
    RUN(test_slice_equals_nocase);
    return TEST_SUMMARY();
}
