/* test_handshake.c -- the upgrade policy on parsed requests: 101 or refusal,
 * origins, the client address behind trusted proxies, token precedence and
 * the 101 that echoes the token subprotocol. */
#include <stdlib.h>

#include "handshake.h"
#include "testlib.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define KEY_AND_VERSION                                                                            \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Sec-WebSocket-Version: 13\r\n"

#define UPGRADE_HEADERS                                                                            \
    "Host: gw.example:8080\r\n"                                                                    \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: Upgrade\r\n" KEY_AND_VERSION

#define UPGRADE(extra) "GET /ws HTTP/1.1\r\n" UPGRADE_HEADERS extra "\r\n"

/* Parses text (which must be one complete head) into req; aborts otherwise,
 * as a table entry that does not parse is a broken test. */
static void parse(const char *text, struct http_request *req) {
    if (http_parse_request(text, strlen(text), req) != (int)strlen(text)) {
        fprintf(stderr, "  does not parse: %s\n", text);
        abort();
    }
}

static bool slice_is(const struct http_slice *s, const char *expected) {
    if (expected == NULL) return s->ptr == NULL;
    size_t n = strlen(expected);
    return s->ptr != NULL && s->len == n && memcmp(s->ptr, expected, n) == 0;
}

static struct netaddr_cidr *trusted_list(const char *text, size_t *count) {
    struct netaddr_cidr *list;
    char err[128];
    if (netaddr_parse_list(text, &list, count, err, sizeof err) != 0) abort();
    return list;
}

/* --- the decision --- */

enum policy_variant { OPEN, DRAINING, FULL, ORIGINS_LISTED, ORIGINS_ANY };

static const struct {
    const char *name;
    const char *request;
    const char *peer;
    enum policy_variant policy;
    enum handshake_outcome outcome;
    const char *client;
} decision_cases[] = {
    {"plain upgrade", UPGRADE(""), "198.51.100.1", OPEN, HANDSHAKE_ACCEPT, "198.51.100.1"},
    {"other path", "GET /nope HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "198.51.100.1", OPEN,
     HANDSHAKE_NOT_FOUND, "198.51.100.1"},
    {"POST", "POST /ws HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "198.51.100.1", OPEN,
     HANDSHAKE_BAD_REQUEST, "198.51.100.1"},
    {"no Upgrade header",
     "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n" KEY_AND_VERSION "\r\n",
     "198.51.100.1", OPEN, HANDSHAKE_BAD_REQUEST, "198.51.100.1"},
    {"version 8",
     "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
     "198.51.100.1", OPEN, HANDSHAKE_BAD_VERSION, "198.51.100.1"},
    {"Upgrade and Connection tokens on later lines",
     "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n"
     "Connection: keep-alive\r\nConnection: upgrade\r\n" KEY_AND_VERSION "\r\n",
     "198.51.100.1", OPEN, HANDSHAKE_ACCEPT, "198.51.100.1"},
    {"same-host origin", UPGRADE("Origin: https://gw.example:8080\r\n"), "198.51.100.1", OPEN,
     HANDSHAKE_ACCEPT, "198.51.100.1"},
    {"foreign origin", UPGRADE("Origin: https://evil.example\r\n"), "198.51.100.1", OPEN,
     HANDSHAKE_ORIGIN_REFUSED, "198.51.100.1"},
    {"listed origin", UPGRADE("Origin: https://app.example\r\n"), "198.51.100.1", ORIGINS_LISTED,
     HANDSHAKE_ACCEPT, "198.51.100.1"},
    {"any origin", UPGRADE("Origin: https://evil.example\r\n"), "198.51.100.1", ORIGINS_ANY,
     HANDSHAKE_ACCEPT, "198.51.100.1"},
    {"draining", UPGRADE(""), "198.51.100.1", DRAINING, HANDSHAKE_DRAINING, "198.51.100.1"},
    {"full", UPGRADE(""), "198.51.100.1", FULL, HANDSHAKE_FULL, "198.51.100.1"},
    /* the checks run in order: a bad request is 400 even while draining */
    {"bad request while draining", "POST /ws HTTP/1.1\r\n" UPGRADE_HEADERS "\r\n", "198.51.100.1",
     DRAINING, HANDSHAKE_BAD_REQUEST, "198.51.100.1"},
    {"foreign origin while full", UPGRADE("Origin: https://evil.example\r\n"), "198.51.100.1", FULL,
     HANDSHAKE_ORIGIN_REFUSED, "198.51.100.1"},
    /* the client address: set whatever the outcome, so refusals log it */
    {"forwarded by a trusted proxy", UPGRADE("X-Forwarded-For: 203.0.113.9\r\n"), "127.0.0.1", OPEN,
     HANDSHAKE_ACCEPT, "203.0.113.9"},
    {"forwarded, refused", UPGRADE("X-Forwarded-For: 203.0.113.9\r\n"), "127.0.0.1", FULL,
     HANDSHAKE_FULL, "203.0.113.9"},
    {"forged by an untrusted peer", UPGRADE("X-Forwarded-For: 203.0.113.9\r\n"), "198.51.100.1",
     OPEN, HANDSHAKE_ACCEPT, "198.51.100.1"},
    /* HAProxy's option forwardfor adds its own line after the client's */
    {"client's line before the proxy's",
     UPGRADE("X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.7\r\n"), "127.0.0.1",
     OPEN, HANDSHAKE_ACCEPT, "198.51.100.7"},
    /* nginx's $proxy_add_x_forwarded_for appends to the client's line */
    {"client's element before the proxy's",
     UPGRADE("X-Forwarded-For: 203.0.113.9, 198.51.100.7\r\n"), "127.0.0.1", OPEN, HANDSHAKE_ACCEPT,
     "198.51.100.7"},
    {"two trusted hops",
     UPGRADE("X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.7, 10.1.2.3\r\n"),
     "127.0.0.1", OPEN, HANDSHAKE_ACCEPT, "198.51.100.7"},
};

static void policy_for(enum policy_variant v, struct handshake_policy *p,
                       const struct netaddr_cidr *trusted, size_t trusted_count) {
    *p = (struct handshake_policy){.ws_path = "/ws",
                                   .trusted = trusted,
                                   .trusted_count = trusted_count,
                                   .conn_count = 5,
                                   .max_connections = 10};
    if (v == DRAINING) p->draining = true;
    if (v == FULL) p->conn_count = 10;
    if (v == ORIGINS_LISTED) p->allowed_origins = "https://other.example, https://app.example";
    if (v == ORIGINS_ANY) p->allowed_origins = "*";
}

static void test_decision_cases(void) {
    size_t trusted_count;
    struct netaddr_cidr *trusted = trusted_list("127.0.0.1, 10.0.0.0/8", &trusted_count);
    for (size_t i = 0; i < COUNT(decision_cases); i++) {
        struct http_request req;
        parse(decision_cases[i].request, &req);
        struct handshake_policy policy;
        policy_for(decision_cases[i].policy, &policy, trusted, trusted_count);
        struct handshake_decision d;
        memset(&d, 0x5a, sizeof d);
        handshake_decide(&req, decision_cases[i].peer, &policy, &d);
        if (d.outcome != decision_cases[i].outcome ||
            strcmp(d.client, decision_cases[i].client) != 0)
            fprintf(stderr, "  case: %s\n", decision_cases[i].name);
        CHECK_INT(d.outcome, decision_cases[i].outcome);
        CHECK_STR(d.client, decision_cases[i].client);
        CHECK(!d.forwarded_invalid);
    }
    free(trusted);
}

static void test_bad_forwarded_address_falls_back_to_the_peer(void) {
    size_t trusted_count;
    struct netaddr_cidr *trusted = trusted_list("127.0.0.1", &trusted_count);
    struct http_request req;
    parse(UPGRADE("X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: not-an-address\r\n"), &req);
    struct handshake_policy policy;
    policy_for(OPEN, &policy, trusted, trusted_count);
    struct handshake_decision d;
    handshake_decide(&req, "127.0.0.1", &policy, &d);
    CHECK_INT(d.outcome, HANDSHAKE_ACCEPT);
    CHECK_STR(d.client, "127.0.0.1");
    CHECK(d.forwarded_invalid);
    free(trusted);
}

static const struct {
    enum handshake_outcome outcome;
    int status;
} status_cases[] = {
    {HANDSHAKE_ACCEPT, 101},      {HANDSHAKE_BAD_REQUEST, 400},      {HANDSHAKE_NOT_FOUND, 404},
    {HANDSHAKE_BAD_VERSION, 426}, {HANDSHAKE_ORIGIN_REFUSED, 403},   {HANDSHAKE_DRAINING, 503},
    {HANDSHAKE_FULL, 503},        {HANDSHAKE_TOO_MANY_FROM_IP, 429},
};

static void test_every_outcome_has_a_status_and_a_message(void) {
    for (size_t i = 0; i < COUNT(status_cases); i++) {
        CHECK_INT(handshake_status(status_cases[i].outcome), status_cases[i].status);
        const char *message = handshake_message(status_cases[i].outcome);
        CHECK(message != NULL && message[0] != '\0');
    }
    CHECK(strcmp(handshake_message(HANDSHAKE_DRAINING), handshake_message(HANDSHAKE_FULL)) != 0);
}

/* --- origins --- */

static const struct {
    const char *origin; /* NULL: no Origin header */
    const char *host;   /* NULL: no Host header */
    const char *allowed;
    bool expected;
} origin_cases[] = {
    {NULL, "gw.example", NULL, true},
    {"https://gw.example", "gw.example", NULL, true},
    {"http://GW.Example:8080", "gw.example:8080", NULL, true},
    {"https://gw.example:8443", "gw.example", NULL, false},
    {"https://gw.example", NULL, NULL, false},
    {"https://evil.example", "gw.example", NULL, false},
    {"https://gw.example.evil.example", "gw.example", NULL, false},
    {"null", "gw.example", NULL, false},
    {"", "gw.example", NULL, false},
    {"https://app.example", "gw.example", "https://app.example", true},
    {"HTTPS://APP.EXAMPLE", "gw.example", "https://app.example", true},
    {"https://app.example", "gw.example", " https://x.example , https://app.example ", true},
    {"https://app.example:1", "gw.example", "https://app.example", false},
    {"https://app.exampl", "gw.example", "https://app.example", false},
    {"https://evil.example", "gw.example", "*", true},
    {"null", "gw.example", "https://x.example,*", true},
    {"https://evil.example", "gw.example", "", false},
};

static void test_origin_cases(void) {
    for (size_t i = 0; i < COUNT(origin_cases); i++) {
        char text[512];
        int n = snprintf(text, sizeof text, "GET /ws HTTP/1.1\r\n");
        if (origin_cases[i].origin)
            n += snprintf(text + n, sizeof text - (size_t)n, "Origin: %s\r\n",
                          origin_cases[i].origin);
        if (origin_cases[i].host)
            n += snprintf(text + n, sizeof text - (size_t)n, "Host: %s\r\n", origin_cases[i].host);
        snprintf(text + n, sizeof text - (size_t)n, "\r\n");
        struct http_request req;
        parse(text, &req);
        bool got = handshake_origin_allowed(&req, origin_cases[i].allowed);
        if (got != origin_cases[i].expected)
            fprintf(stderr, "  case %zu: origin %s, allowed %s\n", i,
                    origin_cases[i].origin ? origin_cases[i].origin : "(none)",
                    origin_cases[i].allowed ? origin_cases[i].allowed : "(none)");
        CHECK(got == origin_cases[i].expected);
    }
}

/* --- token precedence --- */

static const struct {
    const char *name;
    const char *request;
    size_t out_size;
    enum handshake_token expected;
    const char *token;    /* when FOUND */
    const char *protocol; /* the subprotocol to echo, NULL for none */
} token_cases[] = {
    {"none", "GET /ws HTTP/1.1\r\n\r\n", 64, HANDSHAKE_TOKEN_NONE, NULL, NULL},
    {"bearer", "GET /ws HTTP/1.1\r\nAuthorization: Bearer aaa\r\n\r\n", 64, HANDSHAKE_TOKEN_FOUND,
     "aaa", NULL},
    {"bearer, any case", "GET /ws HTTP/1.1\r\nAuthorization: bEARER aaa\r\n\r\n", 64,
     HANDSHAKE_TOKEN_FOUND, "aaa", NULL},
    {"subprotocol", "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: chat, token-bbb\r\n\r\n", 64,
     HANDSHAKE_TOKEN_FOUND, "bbb", "token-bbb"},
    {"subprotocol on a second line",
     "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: "
     "token-bbb\r\n\r\n",
     64, HANDSHAKE_TOKEN_FOUND, "bbb", "token-bbb"},
    {"query", "GET /ws?token=c%2Ec HTTP/1.1\r\n\r\n", 64, HANDSHAKE_TOKEN_FOUND, "c.c", NULL},
    {"bearer wins over subprotocol and query, which is still echoed",
     "GET /ws?token=ccc HTTP/1.1\r\nAuthorization: Bearer aaa\r\n"
     "Sec-WebSocket-Protocol: token-bbb\r\n\r\n",
     64, HANDSHAKE_TOKEN_FOUND, "aaa", "token-bbb"},
    {"subprotocol wins over garbage query",
     "GET /ws?token=%zz HTTP/1.1\r\nSec-WebSocket-Protocol: token-bbb\r\n\r\n", 64,
     HANDSHAKE_TOKEN_FOUND, "bbb", "token-bbb"},
    {"other scheme is no bearer", "GET /ws?token=ccc HTTP/1.1\r\nAuthorization: Basic YTpi\r\n\r\n",
     64, HANDSHAKE_TOKEN_FOUND, "ccc", NULL},
    {"empty bearer falls through", "GET /ws?token=ccc HTTP/1.1\r\nAuthorization: Bearer \r\n\r\n",
     64, HANDSHAKE_TOKEN_FOUND, "ccc", NULL},
    {"empty subprotocol token: anonymous, echoed",
     "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: chat, token-\r\n\r\n", 64, HANDSHAKE_TOKEN_NONE,
     NULL, "token-"},
    {"empty query token: anonymous", "GET /ws?token= HTTP/1.1\r\n\r\n", 64, HANDSHAKE_TOKEN_NONE,
     NULL, NULL},
    {"subprotocol without the prefix",
     "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: Token-x\r\n\r\n", 64, HANDSHAKE_TOKEN_NONE, NULL,
     NULL},
    {"badly encoded query", "GET /ws?token=%zz HTTP/1.1\r\n\r\n", 64, HANDSHAKE_TOKEN_UNUSABLE,
     NULL, NULL},
    /* too long for the buffer: unusable, and the subprotocol still echoed */
    {"long bearer", "GET /ws HTTP/1.1\r\nAuthorization: Bearer 12345678\r\n\r\n", 8,
     HANDSHAKE_TOKEN_UNUSABLE, NULL, NULL},
    {"long subprotocol token", "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: token-12345678\r\n\r\n",
     8, HANDSHAKE_TOKEN_UNUSABLE, NULL, "token-12345678"},
    {"subprotocol token that just fits",
     "GET /ws HTTP/1.1\r\nSec-WebSocket-Protocol: token-1234567\r\n\r\n", 8, HANDSHAKE_TOKEN_FOUND,
     "1234567", "token-1234567"},
    {"long query token", "GET /ws?token=12345678 HTTP/1.1\r\n\r\n", 8, HANDSHAKE_TOKEN_UNUSABLE,
     NULL, NULL},
};

static void test_token_cases(void) {
    for (size_t i = 0; i < COUNT(token_cases); i++) {
        struct http_request req;
        parse(token_cases[i].request, &req);
        char out[64];
        memset(out, '#', sizeof out);
        struct http_slice protocol = {"stale", 5};
        enum handshake_token got =
            handshake_find_token(&req, out, token_cases[i].out_size, &protocol);
        bool ok = got == token_cases[i].expected && slice_is(&protocol, token_cases[i].protocol);
        if (ok && got == HANDSHAKE_TOKEN_FOUND) ok = strcmp(out, token_cases[i].token) == 0;
        for (size_t j = token_cases[i].out_size; j < sizeof out; j++) ok = ok && out[j] == '#';
        if (!ok) fprintf(stderr, "  case: %s\n", token_cases[i].name);
        CHECK(ok);
    }
}

/* --- the 101 --- */

/* The longest subprotocol a head within HTTP_MAX_HEADER_BYTES can carry still
 * fits HANDSHAKE_MAX_101 and is echoed whole: a browser fails a 101 that does
 * not name the subprotocol it offered. */
static void test_101_echoes_a_subprotocol_as_long_as_the_head_allows(void) {
    const char *start = "GET /ws HTTP/1.1\r\n" UPGRADE_HEADERS "Sec-WebSocket-Protocol: token-";
    const char *end = "\r\n\r\n";
    size_t head = HTTP_MAX_HEADER_BYTES;
    char *text = malloc(head + 1);
    if (!text) abort();
    size_t pad = head - strlen(start) - strlen(end);
    memcpy(text, start, strlen(start));
    memset(text + strlen(start), 'x', pad);
    memcpy(text + strlen(start) + pad, end, strlen(end) + 1);
    struct http_request req;
    parse(text, &req);

    static char token[64];
    struct http_slice protocol;
    CHECK_INT(handshake_find_token(&req, token, sizeof token, &protocol), HANDSHAKE_TOKEN_UNUSABLE);
    CHECK_INT(protocol.len, strlen("token-") + pad);

    static char reply[HANDSHAKE_MAX_101];
    int n = handshake_build_101(&req, &protocol, reply, sizeof reply);
    CHECK(n > 0);
    const char *line = strstr(reply, "\r\nSec-WebSocket-Protocol: token-");
    CHECK(line != NULL);
    if (line) CHECK(strspn(line + strlen("\r\nSec-WebSocket-Protocol: token-"), "x") == pad);
    CHECK(strstr(reply, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    free(text);
}

static void test_101_without_protocol_and_too_small_buffer(void) {
    struct http_request req;
    parse(UPGRADE(""), &req);
    char reply[256];
    int n = handshake_build_101(&req, NULL, reply, sizeof reply);
    CHECK(n > 0);
    CHECK(strstr(reply, "Sec-WebSocket-Protocol") == NULL);
    CHECK_INT(handshake_build_101(&req, NULL, reply, (size_t)n), -1);
}

int main(void) {
    RUN(test_decision_cases);
    RUN(test_bad_forwarded_address_falls_back_to_the_peer);
    RUN(test_every_outcome_has_a_status_and_a_message);
    RUN(test_origin_cases);
    RUN(test_token_cases);
    RUN(test_101_echoes_a_subprotocol_as_long_as_the_head_allows);
    RUN(test_101_without_protocol_and_too_small_buffer);
    return TEST_SUMMARY();
}
