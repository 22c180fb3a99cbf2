/* netaddr.c -- CIDR matching and X-Forwarded-For resolution. */
#include "netaddr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Parses a textual address into family and bytes; IPv4-mapped IPv6 becomes IPv4. */
static int parse_addr(const char *text, size_t len, int *family, uint8_t out[16]) {
    char buf[NETADDR_MAX_TEXT];
    if (len == 0 || len >= sizeof buf) return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, out) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(out, mapped, 12) == 0) {
            memmove(out, out + 12, 4);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return 0;
    }
    return -1;
}

static void trim(const char **s, size_t *len) {
    while (*len && (**s == ' ' || **s == '\t')) (*s)++, (*len)--;
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t')) (*len)--;
}

int netaddr_parse_list(const char *text, struct netaddr_cidr **list, size_t *count, char *err,
                       size_t err_size) {
    *list = NULL;
    *count = 0;
    if (!text || !*text) return 0;
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    struct netaddr_cidr *out = calloc(cap, sizeof *out);
    if (!out) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    size_t n = 0;
    const char *item = text;
    for (;;) {
        const char *end = strchr(item, ',');
        size_t len = end ? (size_t)(end - item) : strlen(item);
        trim(&item, &len);
        if (len > 0) {
            const char *slash = memchr(item, '/', len);
            size_t addr_len = slash ? (size_t)(slash - item) : len;
            struct netaddr_cidr *c = &out[n];
            if (parse_addr(item, addr_len, &c->family, c->addr) != 0) {
                snprintf(err, err_size, "'%.*s' is not an IP address or network", (int)len, item);
                free(out);
                return -1;
            }
            unsigned max = c->family == AF_INET ? 32 : 128;
            c->prefix = max;
            if (slash) {
                char *stop;
                unsigned long bits = strtoul(slash + 1, &stop, 10);
                if (stop != item + len || stop == slash + 1 || bits > max) {
                    snprintf(err, err_size, "'%.*s' has a bad prefix length", (int)len, item);
                    free(out);
                    return -1;
                }
                c->prefix = (unsigned)bits;
            }
            n++;
        }
        if (!end) break;
        item = end + 1;
    }
    *list = out;
    *count = n;
    return 0;
}

static bool matches(const struct netaddr_cidr *c, int family, const uint8_t *addr) {
    if (c->family != family) return false;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr, addr, full) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

static bool in_list(const char *ip, size_t len, const struct netaddr_cidr *list, size_t count) {
    int family;
    uint8_t addr[16];
    if (parse_addr(ip, len, &family, addr) != 0) return false;
    for (size_t i = 0; i < count; i++)
        if (matches(&list[i], family, addr)) return true;
    return false;
}

bool netaddr_in_list(const char *ip, const struct netaddr_cidr *list, size_t count) {
    return in_list(ip, strlen(ip), list, count);
}

/* Sets *item to the rightmost non-empty element of line[0..*end) (trimmed),
 * moves *end to the comma before it (or to the start), and returns true;
 * false when no element is left. */
static bool prev_element(const char *line, size_t *end, const char **item, size_t *item_len) {
    while (*end > 0) {
        size_t start = *end;
        while (start > 0 && line[start - 1] != ',') start--;
        const char *p = line + start;
        size_t len = *end - start;
        *end = start > 0 ? start - 1 : 0;
        trim(&p, &len);
        if (len > 0) {
            *item = p;
            *item_len = len;
            return true;
        }
    }
    return false;
}

int netaddr_client_ip(const char *peer, const struct netaddr_text *lines, size_t line_count,
                      const struct netaddr_cidr *list, size_t count, char out[NETADDR_MAX_TEXT]) {
    snprintf(out, NETADDR_MAX_TEXT, "%s", peer);
    if (line_count == 0 || !netaddr_in_list(peer, list, count)) return 0;
    /* Walk from the right: each hop appended the address it saw. */
    const char *use = NULL;
    size_t use_len = 0;
    bool found = false;
    for (size_t i = line_count; i-- > 0 && !found;) {
        size_t end = lines[i].len;
        const char *item;
        size_t len;
        while (prev_element(lines[i].ptr, &end, &item, &len)) {
            use = item;
            use_len = len;
            if (!in_list(item, len, list, count)) {
                found = true;
                break;
            }
        }
    }
    if (!use) return 0; /* only empty elements: the peer is the client */
    int family;
    uint8_t addr[16];
    if (parse_addr(use, use_len, &family, addr) != 0) return -1;
    if (!inet_ntop(family, addr, out, NETADDR_MAX_TEXT)) {
        snprintf(out, NETADDR_MAX_TEXT, "%s", peer);
        return -1;
    }
    return 0;
}
