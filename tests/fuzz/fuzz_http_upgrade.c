/* fuzz_http_upgrade.c -- libFuzzer target for the upgrade-request parser.
 *
 * Besides crashes and sanitizer reports it checks the parser's contract: a
 * complete head parses the same at its own length, its strict prefix is
 * partial, and growing the input a byte at a time ends in the same result as
 * parsing it whole. A parsed request is then pushed through every helper the
 * gateway calls on it. */
#include "http_upgrade.h"
#include "netaddr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Byte-by-byte growth costs O(size^2); only small inputs get it. */
#define GROWTH_CHECK_MAX 512

static void require(int cond) {
    if (!cond) abort();
}

static bool slice_inside(const struct http_slice *s, const char *buf, size_t len) {
    if (s->ptr == NULL) return s->len == 0;
    return s->ptr >= buf && s->len <= len && (size_t)(s->ptr - buf) <= len - s->len;
}

static void exercise_request(const struct http_request *req, const char *buf, size_t head) {
    const struct http_slice *slices[] = {&req->method, &req->target,        &req->path,
                                         &req->query,  &req->host,          &req->origin,
                                         &req->ws_key, &req->authorization, &req->ws_version};
    for (size_t i = 0; i < sizeof slices / sizeof slices[0]; i++)
        require(slice_inside(slices[i], buf, head));
    const struct http_list *lists[] = {&req->ws_protocol, &req->forwarded_for};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        require(lists[i]->count <= HTTP_MAX_LIST_LINES);
        for (unsigned j = 0; j < lists[i]->count; j++)
            require(slice_inside(&lists[i]->lines[j], buf, head));
        struct http_list_iter it = {0, 0};
        struct http_slice item;
        while (http_list_next(lists[i], &it, &item))
            require(item.len > 0 && slice_inside(&item, buf, head));
    }

    enum http_upgrade_status status = http_check_upgrade(req, "/ws");
    require(status == HTTP_UPGRADE_OK || status == HTTP_UPGRADE_BAD_REQUEST ||
            status == HTTP_UPGRADE_NOT_FOUND || status == HTTP_UPGRADE_BAD_VERSION);

    char value[256];
    int n = http_query_param(&req->query, "token", value, sizeof value);
    require(n >= -2 && n < (int)sizeof value);
    if (n >= 0) require(value[n] == '\0');

    struct http_slice protocol = {NULL, 0};
    bool has_protocol = http_find_protocol(&req->ws_protocol, "token-", &protocol) == 0;
    if (has_protocol) require(slice_inside(&protocol, buf, head) && protocol.len >= 6);

    /* The X-Forwarded-For walk over attacker lines, with every hop trusted
     * (the whole list is read) and with none but the peer. */
    static struct netaddr_cidr *all, *peer_only;
    static size_t all_count, peer_only_count;
    char err[64];
    if (!all)
        require(netaddr_parse_list("0.0.0.0/0, ::/0", &all, &all_count, err, sizeof err) == 0);
    if (!peer_only)
        require(netaddr_parse_list("127.0.0.1", &peer_only, &peer_only_count, err, sizeof err) ==
                0);
    struct netaddr_text lines[HTTP_MAX_LIST_LINES];
    for (unsigned i = 0; i < req->forwarded_for.count; i++)
        lines[i] =
            (struct netaddr_text){req->forwarded_for.lines[i].ptr, req->forwarded_for.lines[i].len};
    char client[NETADDR_MAX_TEXT];
    int r = netaddr_client_ip("127.0.0.1", lines, req->forwarded_for.count, all, all_count, client);
    require((r == 0 || r == -1) && memchr(client, '\0', sizeof client) != NULL);
    r = netaddr_client_ip("127.0.0.1", lines, req->forwarded_for.count, peer_only, peer_only_count,
                          client);
    require((r == 0 || r == -1) && memchr(client, '\0', sizeof client) != NULL);

    char accept[29];
    require(http_ws_accept(&req->ws_key, accept) == 0);
    require(strlen(accept) == 28);

    char reply[HTTP_MAX_HEADER_BYTES + 256];
    int len = http_build_101(reply, sizeof reply, accept, has_protocol ? &protocol : NULL);
    require(len > 0 && (size_t)len == strlen(reply));
    len = http_build_error(reply, sizeof reply, (int)status == 101 ? 400 : (int)status, "refused");
    require(len > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;
    struct http_request req;
    int whole = http_parse_request(buf, size, &req);
    require(whole == HTTP_PARTIAL || whole == HTTP_INVALID ||
            (whole > 0 && (size_t)whole <= size && whole <= HTTP_MAX_HEADER_BYTES));

    if (whole > 0) {
        exercise_request(&req, buf, (size_t)whole);
        struct http_request again;
        require(http_parse_request(buf, (size_t)whole, &again) == whole);
        require(memcmp(&again, &req, sizeof req) == 0);
        require(http_parse_request(buf, (size_t)whole - 1, &again) == HTTP_PARTIAL);
    }

    if (size <= GROWTH_CHECK_MAX) {
        int grown = HTTP_PARTIAL;
        for (size_t i = 1; i <= size && grown == HTTP_PARTIAL; i++) {
            /* An exact-size copy lets AddressSanitizer catch a read past i. */
            char *prefix = malloc(i);
            require(prefix != NULL);
            memcpy(prefix, buf, i);
            grown = http_parse_request(prefix, i, &req);
            free(prefix);
        }
        require(grown == whole);
    }
    return 0;
}
