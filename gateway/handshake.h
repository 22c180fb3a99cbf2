/* handshake.h -- the gateway's policy for an upgrade request, before any
 * token is verified: which requests get a 101 and which an HTTP refusal, who
 * the client is behind trusted proxies, and where its token comes from.
 *
 * Pure functions over a parsed request (common/http_upgrade.h) and the
 * settings they need: no sockets, no worker state. The connection code asks
 * handshake_decide(), counts the client in the per-address limit, and writes
 * the reply these functions chose. */
#ifndef HERALD_HANDSHAKE_H
#define HERALD_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "http_upgrade.h"
#include "netaddr.h"

/* Room for any 101 the gateway sends: its fixed lines plus a subprotocol
 * echoed from a request head of at most HTTP_MAX_HEADER_BYTES. */
#define HANDSHAKE_MAX_101 (HTTP_MAX_HEADER_BYTES + 256)

/* The subprotocol that carries a token: "token-<jwt>". */
#define HANDSHAKE_TOKEN_PROTOCOL "token-"

/* What becomes of an upgrade request; each refusal has one status and one
 * message (handshake_status, handshake_message). */
enum handshake_outcome {
    HANDSHAKE_ACCEPT = 0,
    HANDSHAKE_BAD_REQUEST,     /* 400: not a valid WebSocket upgrade */
    HANDSHAKE_NOT_FOUND,       /* 404: not the WebSocket path */
    HANDSHAKE_BAD_VERSION,     /* 426: Sec-WebSocket-Version is not 13 */
    HANDSHAKE_ORIGIN_REFUSED,  /* 403: a browser Origin neither same-host nor allowed */
    HANDSHAKE_DRAINING,        /* 503: the worker is draining */
    HANDSHAKE_FULL,            /* 503: the worker holds --max-connections */
    HANDSHAKE_TOO_MANY_FROM_IP /* 429: the client address holds --max-connections-per-ip */
};

/* The settings and the worker's state the decision depends on. */
struct handshake_policy {
    const char *ws_path;                /* the upgrade path, "/ws" */
    const char *allowed_origins;        /* --allowed-origins ("*" or a list), or NULL */
    const struct netaddr_cidr *trusted; /* --trusted-proxies */
    size_t trusted_count;
    bool draining;
    unsigned long conn_count;      /* upgraded connections of the worker now */
    unsigned long max_connections; /* --max-connections */
};

struct handshake_decision {
    enum handshake_outcome outcome; /* every check but the per-address count */
    char client[NETADDR_MAX_TEXT];  /* the client address (peer, or X-Forwarded-For) */
    bool forwarded_invalid;         /* X-Forwarded-For held a bad address: peer used */
};

/* Decides an upgrade request that came from peer (the socket's address):
 * the upgrade check, the origin, draining, the worker's connection limit, in
 * that order, and the client address, which is always set. The per-address
 * limit is counted by the caller (shared across workers); its refusal is
 * HANDSHAKE_TOO_MANY_FROM_IP. */
void handshake_decide(const struct http_request *req, const char *peer,
                      const struct handshake_policy *policy, struct handshake_decision *out);

/* The HTTP status and the plain-text message of a refusal (400 ... 503). */
int handshake_status(enum handshake_outcome outcome);
const char *handshake_message(enum handshake_outcome outcome);

/* True when a browser's Origin may open a connection: no Origin (not a
 * browser), an Origin whose host:port equals Host, or one listed in allowed
 * (comma-separated, case-insensitive; "*" allows any). */
bool handshake_origin_allowed(const struct http_request *req, const char *allowed);

/* The client address (see netaddr_client_ip) from the peer and the request's
 * X-Forwarded-For lines; returns 0, or -1 when the header held a bad address
 * (then out is peer). */
int handshake_client_address(const struct http_request *req, const char *peer,
                             const struct netaddr_cidr *trusted, size_t trusted_count,
                             char out[NETADDR_MAX_TEXT]);

/* Where the token came from, after precedence. */
enum handshake_token {
    HANDSHAKE_TOKEN_NONE = 0, /* none, or an empty one: anonymous */
    HANDSHAKE_TOKEN_FOUND,    /* copied into the caller's buffer */
    HANDSHAKE_TOKEN_UNUSABLE  /* given, but too long for the buffer or badly %-encoded */
};

/* Finds the token by precedence: Authorization: Bearer, then a token-<jwt>
 * subprotocol, then ?token= (URL-decoded); an empty one counts as none, in
 * every place alike. The token is copied NUL-terminated into out. *protocol is
 * set to the offered token-<jwt> subprotocol whenever there is one (ptr NULL
 * otherwise), whichever token wins and however long it is: a browser that
 * offered it fails the connection unless the 101 echoes it. */
enum handshake_token handshake_find_token(const struct http_request *req, char *out,
                                          size_t out_size, struct http_slice *protocol);

/* Writes the 101 for req (Sec-WebSocket-Accept from its key, the subprotocol
 * echoed when protocol is not NULL) into out; returns its length, or -1 when
 * OpenSSL fails or out is too small (HANDSHAKE_MAX_101 is always enough). */
int handshake_build_101(const struct http_request *req, const struct http_slice *protocol,
                        char *out, size_t out_size);

#endif
