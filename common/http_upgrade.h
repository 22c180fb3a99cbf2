/* http_upgrade.h -- parsing an HTTP/1.1 request head and building the replies
 * a WebSocket gateway sends before the first frame.
 *
 * A function over bytes, like picohttpparser: no I/O, no allocation. The parsed
 * request points into the caller's buffer, which must outlive it. The parser
 * knows nothing of sockets or tokens; it only finds and classifies headers. */
#ifndef HERALD_HTTP_UPGRADE_H
#define HERALD_HTTP_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_PARTIAL          (-2)
#define HTTP_INVALID          (-1)
#define HTTP_MAX_HEADER_BYTES 16384 /* a request head larger than this is refused (431) */
#define HTTP_MAX_HEADERS      64    /* more header lines than this: HTTP_INVALID */
#define HTTP_MAX_LIST_LINES   16    /* more lines of one list header: HTTP_INVALID */

/* A borrowed slice of the request buffer (not NUL-terminated). */
struct http_slice {
    const char *ptr;
    size_t len;
};

/* A list header (RFC 9110 section 5.3): the values of all its lines, in order,
 * form one comma-separated list. No line: count is 0. */
struct http_list {
    struct http_slice lines[HTTP_MAX_LIST_LINES];
    unsigned count;
};

struct http_request {
    struct http_slice method;
    struct http_slice target; /* as sent: path plus optional ?query */
    struct http_slice path;   /* target up to '?' */
    struct http_slice query;  /* after '?', empty when absent */
    int minor_version;        /* HTTP/1.x */
    /* Headers the gateway uses; names matched case-insensitively, values trimmed.
     * Singletons (a second line makes the request HTTP_INVALID); ptr is NULL
     * when absent, non-NULL for a present but empty value. */
    struct http_slice host;
    struct http_slice origin;
    struct http_slice authorization;
    struct http_slice ws_key;
    struct http_slice ws_version;
    struct http_slice last_event_id;     /* Last-Event-ID (server-sent events) */
    struct http_slice content_length;    /* Content-Length (a request with a body) */
    struct http_slice transfer_encoding; /* Transfer-Encoding: only ever refused */
    /* List headers: every line counts, as one list. */
    struct http_list ws_protocol;
    struct http_list forwarded_for; /* X-Forwarded-For */
    bool connection_upgrade;        /* the Connection list holds the token "upgrade" */
    bool upgrade_websocket;         /* the Upgrade list holds the token "websocket" */
};

/* Parses the request head at buf[0..len). Returns the bytes up to and including
 * the blank line that ends the head, HTTP_PARTIAL if the head is not complete yet,
 * or HTTP_INVALID if it is malformed (bad request line, a header line without a
 * colon, control characters, too many headers, a singleton header repeated, more
 * than HTTP_MAX_LIST_LINES lines of a list header). The caller enforces
 * HTTP_MAX_HEADER_BYTES on PARTIAL results. */
int http_parse_request(const char *buf, size_t len, struct http_request *req);

/* Outcome of checking a parsed request as a WebSocket upgrade on GET /ws. */
enum http_upgrade_status {
    HTTP_UPGRADE_OK = 101,
    HTTP_UPGRADE_BAD_REQUEST = 400, /* not GET, not HTTP/1.1+, missing/invalid headers or key */
    HTTP_UPGRADE_NOT_FOUND = 404,   /* path is not /ws (caller may serve other paths first) */
    HTTP_UPGRADE_BAD_VERSION = 426, /* Sec-WebSocket-Version is not 13 */
};

/* Checks method, path, version, Connection/Upgrade tokens, and that
 * Sec-WebSocket-Key is base64 of 16 bytes. Pure. */
enum http_upgrade_status http_check_upgrade(const struct http_request *req, const char *ws_path);

/* Computes Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars
 * plus NUL written to out. Returns 0, or -1 if OpenSSL fails. */
int http_ws_accept(const struct http_slice *key, char out[29]);

/* Finds query parameter name in query and URL-decodes its value into out
 * (NUL-terminated, at most out_size - 1 bytes). Returns the decoded length,
 * -1 when absent, -2 when it does not fit or is badly %-encoded. */
int http_query_param(const struct http_slice *query, const char *name, char *out, size_t out_size);

/* As http_query_param, for a parameter that may repeat: finds the next one
 * at or after byte *pos of query and moves *pos past it. Start with *pos 0. */
int http_query_param_next(const struct http_slice *query, size_t *pos, const char *name, char *out,
                          size_t out_size);

/* Walks the elements of a list header across its lines. Start with *it zeroed;
 * each call sets *item to the next non-empty element (whitespace trimmed) and
 * returns true, or returns false when none is left. */
struct http_list_iter {
    unsigned line;
    size_t offset; /* into lines[line] */
};
bool http_list_next(const struct http_list *list, struct http_list_iter *it,
                    struct http_slice *item);

/* Finds the first subprotocol starting with prefix in the Sec-WebSocket-Protocol
 * list; on success sets *token to the whole element (prefix included) and
 * returns 0, else -1. */
int http_find_protocol(const struct http_list *protocols, const char *prefix,
                       struct http_slice *token);

/* True when the slice equals s, ignoring ASCII case. */
bool http_slice_equals_nocase(const struct http_slice *a, const char *s);

/* Writes the 101 Switching Protocols reply (with the subprotocol line when
 * protocol is not NULL) into out; returns its length, or -1 if out is too small. */
int http_build_101(char *out, size_t out_size, const char accept[29],
                   const struct http_slice *protocol);

/* Writes a complete plain-text error reply for status (400, 403, 404, 426, 429,
 * 431, 503, ...) with Connection: close; 426 carries Sec-WebSocket-Version: 13.
 * Returns its length, or -1 if out is too small. */
int http_build_error(char *out, size_t out_size, int status, const char *message);

/* Writes a complete 200/503 reply with the given content type and body length
 * header (the caller sends the body after it). Returns its length or -1. */
int http_build_head(char *out, size_t out_size, int status, const char *content_type,
                    size_t content_length);

/* As http_build_head, with extra header lines (each ending in CRLF; NULL for
 * none) before the blank line. */
int http_build_head_with(char *out, size_t out_size, int status, const char *content_type,
                         size_t content_length, const char *extra_headers);

/* The reason phrase for a status code ("Bad Request", ...). */
const char *http_status_text(int status);

#endif
