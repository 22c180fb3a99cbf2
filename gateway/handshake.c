/* handshake.c -- the upgrade policy: 101 or refusal, client address, token
 * precedence. Everything here decides about bytes an unauthenticated peer
 * sent, so it stays free of I/O and is unit-tested on parsed requests. */
#include "handshake.h"

#include <string.h>
#include <strings.h>

static const struct {
    int status;
    const char *message;
} refusals[] = {
    [HANDSHAKE_ACCEPT] = {101, "Switching Protocols"},
    [HANDSHAKE_BAD_REQUEST] = {400, "Bad WebSocket upgrade request"},
    [HANDSHAKE_NOT_FOUND] = {404, "Not Found"},
    [HANDSHAKE_BAD_VERSION] = {426, "Unsupported WebSocket version"},
    [HANDSHAKE_ORIGIN_REFUSED] = {403, "Origin not allowed"},
    [HANDSHAKE_DRAINING] = {503, "Gateway draining"},
    [HANDSHAKE_FULL] = {503, "Gateway full"},
    [HANDSHAKE_TOO_MANY_FROM_IP] = {429, "Too many connections from this address"},
};

int handshake_status(enum handshake_outcome outcome) {
    return refusals[outcome].status;
}

const char *handshake_message(enum handshake_outcome outcome) {
    return refusals[outcome].message;
}

bool handshake_origin_allowed(const struct http_request *req, const char *allowed) {
    if (!req->origin.ptr) return true; /* not a browser */
    const char *scheme_end = memmem(req->origin.ptr, req->origin.len, "://", 3);
    if (scheme_end && req->host.ptr) {
        struct http_slice authority = {
            scheme_end + 3, req->origin.len - (size_t)(scheme_end + 3 - req->origin.ptr)};
        if (authority.len == req->host.len &&
            strncasecmp(authority.ptr, req->host.ptr, authority.len) == 0)
            return true;
    }
    if (!allowed) return false;
    while (*allowed) {
        const char *end = strchr(allowed, ',');
        size_t n = end ? (size_t)(end - allowed) : strlen(allowed);
        while (n && *allowed == ' ') allowed++, n--;
        while (n && allowed[n - 1] == ' ') n--;
        if ((n == 1 && *allowed == '*') ||
            (n == req->origin.len && strncasecmp(allowed, req->origin.ptr, n) == 0))
            return true;
        if (!end) break;
        allowed = end + 1;
    }
    return false;
}

int handshake_client_address(const struct http_request *req, const char *peer,
                             const struct netaddr_cidr *trusted, size_t trusted_count,
                             char out[NETADDR_MAX_TEXT]) {
    struct netaddr_text lines[HTTP_MAX_LIST_LINES];
    const struct http_list *xff = &req->forwarded_for;
    for (unsigned i = 0; i < xff->count; i++)
        lines[i] = (struct netaddr_text){xff->lines[i].ptr, xff->lines[i].len};
    return netaddr_client_ip(peer, lines, xff->count, trusted, trusted_count, out);
}

static enum handshake_outcome check(const struct http_request *req,
                                    const struct handshake_policy *policy) {
    switch (http_check_upgrade(req, policy->ws_path)) {
        case HTTP_UPGRADE_OK: break;
        case HTTP_UPGRADE_NOT_FOUND: return HANDSHAKE_NOT_FOUND;
        case HTTP_UPGRADE_BAD_VERSION: return HANDSHAKE_BAD_VERSION;
        case HTTP_UPGRADE_BAD_REQUEST: return HANDSHAKE_BAD_REQUEST;
    }
    if (!handshake_origin_allowed(req, policy->allowed_origins)) return HANDSHAKE_ORIGIN_REFUSED;
    if (policy->draining) return HANDSHAKE_DRAINING;
    if (policy->conn_count >= policy->max_connections) return HANDSHAKE_FULL;
    return HANDSHAKE_ACCEPT;
}

void handshake_decide(const struct http_request *req, const char *peer,
                      const struct handshake_policy *policy, struct handshake_decision *out) {
    out->forwarded_invalid = handshake_client_address(req, peer, policy->trusted,
                                                      policy->trusted_count, out->client) != 0;
    out->outcome = check(req, policy);
}

/* Copies value[0..len) as a C string into out; false when it does not fit. */
static bool copy_token(const char *value, size_t len, char *out, size_t out_size) {
    if (len >= out_size) return false;
    memcpy(out, value, len);
    out[len] = '\0';
    return true;
}

enum handshake_token handshake_find_token(const struct http_request *req, char *out,
                                          size_t out_size, struct http_slice *protocol) {
    static const size_t prefix_len = sizeof HANDSHAKE_TOKEN_PROTOCOL - 1;
    struct http_slice offered;
    bool has_protocol =
        http_find_protocol(&req->ws_protocol, HANDSHAKE_TOKEN_PROTOCOL, &offered) == 0;
    *protocol = has_protocol ? offered : (struct http_slice){NULL, 0};

    const struct http_slice *auth = &req->authorization;
    if (auth->ptr && auth->len > 7 && strncasecmp(auth->ptr, "Bearer ", 7) == 0)
        return copy_token(auth->ptr + 7, auth->len - 7, out, out_size) ? HANDSHAKE_TOKEN_FOUND
                                                                       : HANDSHAKE_TOKEN_UNUSABLE;
    if (has_protocol && offered.len > prefix_len)
        return copy_token(offered.ptr + prefix_len, offered.len - prefix_len, out, out_size)
                   ? HANDSHAKE_TOKEN_FOUND
                   : HANDSHAKE_TOKEN_UNUSABLE;
    int n = http_query_param(&req->query, "token", out, out_size);
    if (n > 0) return HANDSHAKE_TOKEN_FOUND;
    return n == -2 ? HANDSHAKE_TOKEN_UNUSABLE : HANDSHAKE_TOKEN_NONE; /* absent or empty */
}

int handshake_build_101(const struct http_request *req, const struct http_slice *protocol,
                        char *out, size_t out_size) {
    char accept[29];
    if (http_ws_accept(&req->ws_key, accept) != 0) return -1;
    return http_build_101(out, out_size, accept, protocol);
}
