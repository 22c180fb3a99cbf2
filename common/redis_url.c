/* redis_url.c -- parsing redis:// URLs into host, port, credentials and db.
 *
 * Accepted form: redis://[[user]:password@]host[:port][/db]. The authority
 * ends at the first '/', the credentials at the last '@' before it (so an
 * unescaped '@' in a password still works); user and password are
 * %-decoded. An IPv6 host is written in brackets ("[::1]"). Anything the
 * grammar does not cover (a query string, a TLS scheme, a user without a
 * password) is refused with a reason rather than guessed at. */
#include "redis_url.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REDIS_URL_SCHEME       "redis://"
#define REDIS_URL_DEFAULT_HOST "127.0.0.1"
#define REDIS_URL_DEFAULT_PORT 6379

static int fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...) {
    if (err && err_size > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* %-decodes s[0..len) into a new string. Returns NULL on a malformed escape
 * or an encoded NUL (which no C string can carry); *bad_escape tells which
 * from an allocation failure. */
static char *percent_decode(const char *s, size_t len, int *bad_escape) {
    char *out = malloc(len + 1);
    size_t n = 0;

    *bad_escape = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[n++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            *bad_escape = 1;
            return NULL;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    return out;
}

/* Parses a decimal number made only of digits in s[0..len) into [min, max]. */
static int parse_number(const char *s, size_t len, long min, long max, long *out) {
    long value = 0;

    if (len == 0 || len > 10) return -1;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        value = value * 10 + (s[i] - '0');
    }
    if (value < min || value > max) return -1;
    *out = value;
    return 0;
}

static int host_char_ok(char c) {
    return isalnum((unsigned char)c) || c == '.' || c == '-' || c == '_';
}

/* Splits "user:password" (either part possibly empty) and decodes both. */
static int parse_userinfo(const char *s, size_t len, struct redis_url *out, char *err,
                          size_t err_size) {
    const char *colon = memchr(s, ':', len);
    int bad_escape;

    if (!colon)
        return fail(err, err_size,
                    "a user needs a password: write redis://user:password@host "
                    "(or redis://:password@host)");
    size_t user_len = (size_t)(colon - s);
    size_t pass_len = len - user_len - 1;

    if (user_len > 0) {
        out->user = percent_decode(s, user_len, &bad_escape);
        if (!out->user)
            return fail(err, err_size,
                        bad_escape ? "malformed %%-escape in the user name" : "out of memory");
    }
    if (pass_len > 0) {
        out->password = percent_decode(colon + 1, pass_len, &bad_escape);
        if (!out->password)
            return fail(err, err_size,
                        bad_escape ? "malformed %%-escape in the password" : "out of memory");
    }
    if (out->user && !out->password)
        return fail(err, err_size, "a user needs a password: write redis://user:password@host");
    return 0;
}

/* Parses "host[:port]" or "[v6]:port"; an empty host means the default. */
static int parse_hostport(const char *s, size_t len, struct redis_url *out, char *err,
                          size_t err_size) {
    const char *host = s;
    size_t host_len;
    const char *port = NULL;
    size_t port_len = 0;

    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) return fail(err, err_size, "unterminated IPv6 address (missing ']')");
        host = s + 1;
        host_len = (size_t)(close - host);
        if (host_len == 0) return fail(err, err_size, "empty IPv6 address '[]'");
        for (size_t i = 0; i < host_len; i++) {
            if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
                return fail(err, err_size, "invalid character in IPv6 address '%.*s'",
                            (int)host_len, host);
        }
        const char *rest = close + 1;
        size_t rest_len = len - (size_t)(rest - s);
        if (rest_len > 0) {
            if (rest[0] != ':')
                return fail(err, err_size, "unexpected text after the IPv6 address: '%.*s'",
                            (int)rest_len, rest);
            port = rest + 1;
            port_len = rest_len - 1;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        host_len = colon ? (size_t)(colon - s) : len;
        if (colon) {
            port = colon + 1;
            port_len = len - host_len - 1;
            if (memchr(port, ':', port_len))
                return fail(err, err_size,
                            "invalid host '%.*s': an IPv6 address goes in brackets: [::1]",
                            (int)len, s);
        }
        for (size_t i = 0; i < host_len; i++) {
            if (!host_char_ok(host[i]))
                return fail(err, err_size, "invalid host '%.*s'", (int)host_len, host);
        }
    }

    if (port) {
        long value;
        if (parse_number(port, port_len, 1, 65535, &value) < 0)
            return fail(err, err_size, "invalid port '%.*s': expected a number from 1 to 65535",
                        (int)port_len, port);
        out->port = (int)value;
    }
    out->host = host_len > 0 ? strndup(host, host_len) : strdup(REDIS_URL_DEFAULT_HOST);
    if (!out->host) return fail(err, err_size, "out of memory");
    return 0;
}

int redis_url_parse(const char *url, struct redis_url *out, char *err, size_t err_size) {
    size_t scheme_len = strlen(REDIS_URL_SCHEME);

    memset(out, 0, sizeof *out);
    out->port = REDIS_URL_DEFAULT_PORT;
    if (err && err_size > 0) err[0] = '\0';
    if (!url) return fail(err, err_size, "no Redis URL given");
    if (strncasecmp(url, REDIS_URL_SCHEME, scheme_len) != 0) {
        if (strncasecmp(url, "rediss://", 9) == 0)
            return fail(err, err_size, "rediss:// (TLS) is not supported; use redis://");
        /* The URL is not echoed: it may hold a password. */
        return fail(err, err_size,
                    "not a redis:// URL (expected redis://[[user]:password@]host[:port][/db])");
    }

    const char *authority = url + scheme_len;
    size_t authority_len = strcspn(authority, "/?#");
    const char *path = authority + authority_len;

    const char *at = NULL;
    for (size_t i = 0; i < authority_len; i++) {
        if (authority[i] == '@') at = authority + i;
    }
    const char *hostport = authority;
    if (at) {
        if (parse_userinfo(authority, (size_t)(at - authority), out, err, err_size) < 0)
            goto failed;
        hostport = at + 1;
    }
    if (parse_hostport(hostport, (size_t)(path - hostport), out, err, err_size) < 0) goto failed;

    if (*path == '/') {
        size_t db_len = strlen(path + 1);
        long value;
        if (db_len > 0 && parse_number(path + 1, db_len, 0, 2147483647L, &value) < 0) {
            fail(err, err_size, "invalid database '%.32s': expected a number like /0", path + 1);
            goto failed;
        }
        out->db = db_len > 0 ? (int)value : 0;
    } else if (*path != '\0') {
        fail(err, err_size, "unexpected '%.32s' in the URL (query strings are not supported)",
             path);
        goto failed;
    }
    return 0;

failed:
    redis_url_free(out);
    return -1;
}

void redis_url_free(struct redis_url *url) {
    if (!url) return;
    free(url->host);
    free(url->user);
    if (url->password) {
        explicit_bzero(url->password, strlen(url->password));
        free(url->password);
    }
    memset(url, 0, sizeof *url);
}

static int same(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static char *dup_or_null(const char *s, int *failed) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *failed = 1;
    return d;
}

int redis_cluster_parse(const char *list, struct redis_cluster *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    if (err && err_size > 0) err[0] = '\0';
    if (!list || !*list)
        return fail(err, err_size, "no seed node given (HOST:PORT[,HOST:PORT...])");
    out->seeds = calloc(REDIS_CLUSTER_MAX_SEEDS, sizeof *out->seeds);
    if (!out->seeds) return fail(err, err_size, "out of memory");
    const struct redis_url *creds = NULL; /* the seed that carried credentials */
    for (const char *item = list;;) {
        size_t len = strcspn(item, ",");
        if (out->count == REDIS_CLUSTER_MAX_SEEDS) {
            fail(err, err_size, "more than %d seed nodes", REDIS_CLUSTER_MAX_SEEDS);
            goto failed;
        }
        if (len == 0) {
            fail(err, err_size, "empty seed node in the list (seed %zu)", out->count + 1);
            goto failed;
        }
        char *url = malloc(len + sizeof REDIS_URL_SCHEME);
        if (!url) {
            fail(err, err_size, "out of memory");
            goto failed;
        }
        int is_url = len >= strlen(REDIS_URL_SCHEME) &&
                     strncasecmp(item, REDIS_URL_SCHEME, strlen(REDIS_URL_SCHEME)) == 0;
        snprintf(url, len + sizeof REDIS_URL_SCHEME, "%s%.*s", is_url ? "" : REDIS_URL_SCHEME,
                 (int)len, item);
        char reason[200];
        struct redis_url *seed = &out->seeds[out->count];
        int rc = redis_url_parse(url, seed, reason, sizeof reason);
        explicit_bzero(url, len);
        free(url);
        if (rc < 0) {
            fail(err, err_size, "seed %zu: %s", out->count + 1, reason);
            goto failed;
        }
        out->count++;
        if (seed->db != 0) {
            fail(err, err_size, "seed %zu: a cluster has only database 0", out->count);
            goto failed;
        }
        if (seed->password) {
            if (creds &&
                (!same(creds->user, seed->user) || !same(creds->password, seed->password))) {
                fail(err, err_size, "seeds %zu and %zu give different credentials",
                     (size_t)(creds - out->seeds) + 1, out->count);
                goto failed;
            }
            if (!creds) creds = seed;
        }
        if (item[len] == '\0') break;
        item += len + 1;
    }
    if (creds) {
        int failed = 0;
        for (size_t i = 0; i < out->count; i++) {
            struct redis_url *seed = &out->seeds[i];
            if (seed->password) continue;
            seed->user = dup_or_null(creds->user, &failed);
            seed->password = dup_or_null(creds->password, &failed);
        }
        if (failed) {
            fail(err, err_size, "out of memory");
            goto failed;
        }
    }
    out->user = out->seeds[0].user;
    out->password = out->seeds[0].password;
    return 0;

failed:
    redis_cluster_free(out);
    return -1;
}

void redis_cluster_free(struct redis_cluster *cluster) {
    if (!cluster) return;
    for (size_t i = 0; cluster->seeds && i < cluster->count; i++)
        redis_url_free(&cluster->seeds[i]);
    free(cluster->seeds);
    memset(cluster, 0, sizeof *cluster);
}
