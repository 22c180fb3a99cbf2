/* http_upgrade.c -- the HTTP/1.1 request-head parser and the handshake replies.
 *
 * The parser is a single forward scan that starts again from byte 0 on every
 * call, so it keeps no state between calls: a growing prefix of one request
 * either needs more bytes (HTTP_PARTIAL), is already known to be malformed
 * (HTTP_INVALID, decided only from bytes seen so far, so no later byte can undo
 * it), or is complete. That is what makes byte-by-byte feeding give the same
 * answer as feeding the request whole.
 *
 * Only the first HTTP_MAX_HEADER_BYTES bytes are ever examined: a head that has
 * not ended within them returns HTTP_PARTIAL, which the caller turns into 431
 * because its buffer is then longer than the limit. This also keeps every
 * returned length within an int. */
#include "http_upgrade.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#define WS_GUID            "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_ENCODED_LEN 24 /* base64 of 16 bytes: 22 symbols and "==" */
#define WS_KEY_DECODED_LEN 16

static int to_lower(int c) {
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static bool bytes_equal_nocase(const char *a, const char *b, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (to_lower((unsigned char)a[i]) != to_lower((unsigned char)b[i])) return false;
    return true;
}

bool http_slice_equals_nocase(const struct http_slice *a, const char *s) {
    size_t n = strlen(s);
    return a->len == n && bytes_equal_nocase(a->ptr, s, n);
}

static bool slice_equals(const struct http_slice *a, const char *s) {
    size_t n = strlen(s);
    return a->len == n && (n == 0 || memcmp(a->ptr, s, n) == 0);
}

/* RFC 9110 tchar: the characters of a method or a header name. */
static bool is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A request-target byte: visible ASCII (non-ASCII must arrive %-encoded). */
static bool is_target_char(unsigned char c) {
    return c > 0x20 && c < 0x7f;
}

/* A field-value byte: HTAB, visible ASCII, SP, or obs-text. */
static bool is_value_char(unsigned char c) {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

/* Consumes a CRLF or bare LF at *p. Returns 1 when consumed, 0 when *p is not a
 * line ending, HTTP_PARTIAL at the end of input, HTTP_INVALID for a lone CR. */
static int eat_eol(const char **p, const char *end) {
    if (*p == end) return HTTP_PARTIAL;
    if (**p == '\n') {
        *p += 1;
        return 1;
    }
    if (**p != '\r') return 0;
    if (*p + 1 == end) return HTTP_PARTIAL;
    if ((*p)[1] != '\n') return HTTP_INVALID;
    *p += 2;
    return 1;
}

/* Matches the literal lit at *p, one byte at a time so that a prefix of it is
 * HTTP_PARTIAL. Returns 0 and advances, or a negative result. */
static int eat_literal(const char **p, const char *end, const char *lit) {
    for (; *lit; lit++, (*p)++) {
        if (*p == end) return HTTP_PARTIAL;
        if (**p != *lit) return HTTP_INVALID;
    }
    return 0;
}

/* METHOD SP request-target SP HTTP/1.x EOL */
static int parse_request_line(const char **p, const char *end, struct http_request *req) {
    const char *start = *p;
    while (*p < end && is_tchar((unsigned char)**p)) (*p)++;
    if (*p == end) return HTTP_PARTIAL;
    if (**p != ' ' || *p == start) return HTTP_INVALID;
    req->method = (struct http_slice){start, (size_t)(*p - start)};
    (*p)++;

    start = *p;
    while (*p < end && is_target_char((unsigned char)**p)) (*p)++;
    if (*p == end) return HTTP_PARTIAL;
    if (**p != ' ' || *p == start) return HTTP_INVALID;
    req->target = (struct http_slice){start, (size_t)(*p - start)};
    const char *question = memchr(start, '?', req->target.len);
    if (question) {
        req->path = (struct http_slice){start, (size_t)(question - start)};
        req->query = (struct http_slice){question + 1, (size_t)(*p - question - 1)};
    } else {
        req->path = req->target;
        req->query = (struct http_slice){*p, 0};
    }
    (*p)++;

    int r = eat_literal(p, end, "HTTP/1.");
    if (r < 0) return r;
    if (*p == end) return HTTP_PARTIAL;
    if (**p < '0' || **p > '9') return HTTP_INVALID;
    req->minor_version = **p - '0';
    (*p)++;
    r = eat_eol(p, end);
    if (r < 0) return r;
    return r == 1 ? 0 : HTTP_INVALID;
}

/* Iterates the elements of a comma-separated list value: sets *item to the next
 * non-empty element with surrounding whitespace removed and returns true, or
 * returns false when none is left. *p advances past the element. */
static bool next_list_item(const char **p, const char *end, struct http_slice *item) {
    while (*p < end) {
        const char *start = *p;
        const char *comma = memchr(start, ',', (size_t)(end - start));
        const char *stop = comma ? comma : end;
        *p = comma ? comma + 1 : end;
        while (start < stop && is_ows(*start)) start++;
        while (stop > start && is_ows(stop[-1])) stop--;
        if (stop > start) {
            *item = (struct http_slice){start, (size_t)(stop - start)};
            return true;
        }
    }
    return false;
}

static bool value_has_token(const struct http_slice *value, const char *token) {
    const char *p = value->ptr, *end = value->ptr + value->len;
    struct http_slice item;
    while (value->len && next_list_item(&p, end, &item))
        if (http_slice_equals_nocase(&item, token)) return true;
    return false;
}

/* The singleton headers the gateway reads, and where each one goes. */
static const struct {
    const char *name;
    size_t offset;
} singleton_headers[] = {
    {"host", offsetof(struct http_request, host)},
    {"origin", offsetof(struct http_request, origin)},
    {"authorization", offsetof(struct http_request, authorization)},
    {"sec-websocket-key", offsetof(struct http_request, ws_key)},
    {"sec-websocket-version", offsetof(struct http_request, ws_version)},
    {"last-event-id", offsetof(struct http_request, last_event_id)},
    {"content-length", offsetof(struct http_request, content_length)},
    {"transfer-encoding", offsetof(struct http_request, transfer_encoding)},
};

/* The list headers kept line by line. */
static const struct {
    const char *name;
    size_t offset;
} list_headers[] = {
    {"sec-websocket-protocol", offsetof(struct http_request, ws_protocol)},
    {"x-forwarded-for", offsetof(struct http_request, forwarded_for)},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Files one header line; returns 0, or HTTP_INVALID for a repeated singleton
 * or one line too many of a list header. Connection and Upgrade are lists
 * whose every line is searched for the one token the upgrade needs. */
static int record_header(struct http_request *req, const struct http_slice *name,
                         const struct http_slice *value) {
    if (http_slice_equals_nocase(name, "connection")) {
        if (value_has_token(value, "upgrade")) req->connection_upgrade = true;
        return 0;
    }
    if (http_slice_equals_nocase(name, "upgrade")) {
        if (value_has_token(value, "websocket")) req->upgrade_websocket = true;
        return 0;
    }
    for (size_t i = 0; i < COUNT(singleton_headers); i++) {
        if (!http_slice_equals_nocase(name, singleton_headers[i].name)) continue;
        struct http_slice *field = (struct http_slice *)((char *)req + singleton_headers[i].offset);
        /* A non-NULL ptr marks a header already seen, even with an empty value. */
        if (field->ptr != NULL) return HTTP_INVALID;
        *field = *value;
        return 0;
    }
    for (size_t i = 0; i < COUNT(list_headers); i++) {
        if (!http_slice_equals_nocase(name, list_headers[i].name)) continue;
        struct http_list *list = (struct http_list *)((char *)req + list_headers[i].offset);
        if (list->count == HTTP_MAX_LIST_LINES) return HTTP_INVALID;
        list->lines[list->count++] = *value;
        return 0;
    }
    return 0;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req) {
    memset(req, 0, sizeof(*req));
    if (len == 0) return HTTP_PARTIAL;
    const char *p = buf;
    const char *end = buf + (len < HTTP_MAX_HEADER_BYTES ? len : HTTP_MAX_HEADER_BYTES);

    int r = parse_request_line(&p, end, req);
    if (r < 0) return r;

    for (int lines = 0;; lines++) {
        r = eat_eol(&p, end);
        if (r < 0) return r;
        if (r == 1) return (int)(p - buf);
        if (is_ows(*p)) return HTTP_INVALID; /* obs-fold, or whitespace before a name */
        if (lines == HTTP_MAX_HEADERS) return HTTP_INVALID;

        const char *start = p;
        while (p < end && is_tchar((unsigned char)*p)) p++;
        if (p == end) return HTTP_PARTIAL;
        if (*p != ':' || p == start) return HTTP_INVALID;
        struct http_slice name = {start, (size_t)(p - start)};
        p++;

        while (p < end && is_ows(*p)) p++;
        start = p;
        while (p < end && is_value_char((unsigned char)*p)) p++;
        if (p == end) return HTTP_PARTIAL;
        const char *stop = p;
        while (stop > start && is_ows(stop[-1])) stop--;
        r = eat_eol(&p, end);
        if (r < 0) return r;
        if (r == 0) return HTTP_INVALID; /* a control character inside the value */
        struct http_slice value = {start, (size_t)(stop - start)};
        r = record_header(req, &name, &value);
        if (r < 0) return r;
    }
}

static bool is_base64_symbol(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* EVP_DecodeBlock treats '=' as an ordinary zero symbol anywhere, skips
 * surrounding whitespace and counts padding in its result, so the shape of the
 * key (22 symbols then "==") is checked here before decoding. */
static bool ws_key_valid(const struct http_slice *key) {
    if (key->len != WS_KEY_ENCODED_LEN) return false;
    for (size_t i = 0; i < WS_KEY_ENCODED_LEN - 2; i++)
        if (!is_base64_symbol((unsigned char)key->ptr[i])) return false;
    if (key->ptr[22] != '=' || key->ptr[23] != '=') return false;
    unsigned char decoded[WS_KEY_ENCODED_LEN / 4 * 3];
    int n = EVP_DecodeBlock(decoded, (const unsigned char *)key->ptr, WS_KEY_ENCODED_LEN);
    return n == WS_KEY_DECODED_LEN + 2;
}

enum http_upgrade_status http_check_upgrade(const struct http_request *req, const char *ws_path) {
    /* An unknown path is 404 whatever the method: nothing else lives there. */
    if (!slice_equals(&req->path, ws_path ? ws_path : "/ws")) return HTTP_UPGRADE_NOT_FOUND;
    if (!slice_equals(&req->method, "GET")) return HTTP_UPGRADE_BAD_REQUEST;
    if (req->minor_version < 1) return HTTP_UPGRADE_BAD_REQUEST;
    if (!req->upgrade_websocket || !req->connection_upgrade) return HTTP_UPGRADE_BAD_REQUEST;
    if (req->ws_key.ptr == NULL || req->ws_version.ptr == NULL) return HTTP_UPGRADE_BAD_REQUEST;
    if (!slice_equals(&req->ws_version, "13")) return HTTP_UPGRADE_BAD_VERSION;
    if (!ws_key_valid(&req->ws_key)) return HTTP_UPGRADE_BAD_REQUEST;
    return HTTP_UPGRADE_OK;
}

int http_ws_accept(const struct http_slice *key, char out[29]) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    int ok = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) return -1;
    if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
        (key->len == 0 || EVP_DigestUpdate(ctx, key->ptr, key->len) == 1) &&
        EVP_DigestUpdate(ctx, WS_GUID, strlen(WS_GUID)) == 1 &&
        EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 && digest_len == 20)
        ok = 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) return -1;
    if (EVP_EncodeBlock((unsigned char *)out, digest, 20) != 28) return -1;
    return 0;
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* URL-decodes in[0..len) into out. %00 counts as bad encoding: the caller
 * treats the value as a C string and must not see it cut short. */
static int url_decode(const char *in, size_t len, char *out, size_t out_size) {
    size_t limit = out_size - 1;
    if (limit > INT_MAX) limit = INT_MAX;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < len ? hex_value((unsigned char)in[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value((unsigned char)in[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -2;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (n == limit) return -2;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return (int)n;
}

int http_query_param_next(const struct http_slice *query, size_t *pos, const char *name, char *out,
                          size_t out_size) {
    if (out_size == 0) return -2;
    if (query->len == 0) return -1;
    size_t name_len = strlen(name);
    const char *p = query->ptr + (*pos < query->len ? *pos : query->len);
    const char *end = query->ptr + query->len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *name_end = eq ? eq : stop;
        const char *next = amp ? amp + 1 : end;
        if ((size_t)(name_end - p) == name_len && memcmp(p, name, name_len) == 0) {
            const char *value = eq ? eq + 1 : stop;
            *pos = (size_t)(next - query->ptr);
            return url_decode(value, (size_t)(stop - value), out, out_size);
        }
        p = next;
    }
    *pos = query->len;
    return -1;
}

int http_query_param(const struct http_slice *query, const char *name, char *out, size_t out_size) {
    size_t pos = 0;
    return http_query_param_next(query, &pos, name, out, out_size);
}

bool http_list_next(const struct http_list *list, struct http_list_iter *it,
                    struct http_slice *item) {
    for (; it->line < list->count; it->line++, it->offset = 0) {
        const struct http_slice *value = &list->lines[it->line];
        if (it->offset >= value->len) continue;
        const char *p = value->ptr + it->offset, *end = value->ptr + value->len;
        bool found = next_list_item(&p, end, item);
        it->offset = (size_t)(p - value->ptr);
        if (found) return true;
    }
    return false;
}

int http_find_protocol(const struct http_list *protocols, const char *prefix,
                       struct http_slice *token) {
    size_t prefix_len = strlen(prefix);
    struct http_list_iter it = {0, 0};
    struct http_slice item;
    while (http_list_next(protocols, &it, &item)) {
        if (item.len >= prefix_len && memcmp(item.ptr, prefix, prefix_len) == 0) {
            *token = item;
            return 0;
        }
    }
    return -1;
}

/* snprintf's result as a reply length: -1 when it failed or did not fit. */
static int fitted_length(int written, size_t out_size) {
    if (written < 0 || (size_t)written >= out_size) return -1;
    return written;
}

int http_build_101(char *out, size_t out_size, const char accept[29],
                   const struct http_slice *protocol) {
    if (protocol && protocol->len > INT_MAX) return -1;
    int written;
    if (protocol)
        written = snprintf(out, out_size,
                           "HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %.28s\r\n"
                           "Sec-WebSocket-Protocol: %.*s\r\n"
                           "\r\n",
                           accept, (int)protocol->len, protocol->len ? protocol->ptr : "");
    else
        written = snprintf(out, out_size,
                           "HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %.28s\r\n"
                           "\r\n",
                           accept);
    return fitted_length(written, out_size);
}

int http_build_error(char *out, size_t out_size, int status, const char *message) {
    if (status < 100 || status > 999) return -1;
    if (message == NULL) message = http_status_text(status);
    size_t body_len = strlen(message) + 1; /* the message and its newline */
    if (body_len > INT_MAX) return -1;
    int written = snprintf(out, out_size,
                           "HTTP/1.1 %d %s\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Length: %zu\r\n"
                           "Connection: close\r\n"
                           "%s"
                           "\r\n"
                           "%s\n",
                           status, http_status_text(status), body_len,
                           status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "", message);
    return fitted_length(written, out_size);
}

int http_build_head(char *out, size_t out_size, int status, const char *content_type,
                    size_t content_length) {
    return http_build_head_with(out, out_size, status, content_type, content_length, NULL);
}

int http_build_head_with(char *out, size_t out_size, int status, const char *content_type,
                         size_t content_length, const char *extra_headers) {
    if (status < 100 || status > 999) return -1;
    int written = snprintf(out, out_size,
                           "HTTP/1.1 %d %s\r\n"
                           "Content-Type: %s\r\n"
                           "Content-Length: %zu\r\n"
                           "Connection: close\r\n"
                           "Cache-Control: no-store\r\n"
                           "%s"
                           "\r\n",
                           status, http_status_text(status), content_type, content_length,
                           extra_headers ? extra_headers : "");
    return fitted_length(written, out_size);
}

const char *http_status_text(int status) {
    switch (status) {
        case 101: return "Switching Protocols";
        case 200: return "OK";
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 401: return "Unauthorized";
        case 405: return "Method Not Allowed";
        case 411: return "Length Required";
        case 413: return "Content Too Large";
        case 426: return "Upgrade Required";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 503: return "Service Unavailable";
        default: return "Unknown";
    }
}
