/* netaddr.h -- client addresses behind trusted proxies: CIDR lists and the
 * X-Forwarded-For walk. Pure functions over strings. */
#ifndef HERALD_NETADDR_H
#define HERALD_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETADDR_MAX_TEXT 46 /* INET6_ADDRSTRLEN */

struct netaddr_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network byte order; 4 bytes used for IPv4 */
    unsigned prefix;  /* bits */
};

/* Parses "10.0.0.0/8, 127.0.0.1, ::1" (a bare address is a full-length prefix).
 * On success *list (caller frees) and *count are set and 0 is returned; NULL or
 * empty text gives an empty list. On error returns -1 with a reason in err. */
int netaddr_parse_list(const char *text, struct netaddr_cidr **list, size_t *count, char *err,
                       size_t err_size);

/* True when the textual address ip (IPv4, IPv6, or IPv4-mapped IPv6) is inside
 * one of the networks. */
bool netaddr_in_list(const char *ip, const struct netaddr_cidr *list, size_t count);

/* One X-Forwarded-For header line's value (not NUL-terminated). */
struct netaddr_text {
    const char *ptr;
    size_t len;
};

/* The client address of a request that came from peer and carried the given
 * X-Forwarded-For lines (in header order; together they are one list, each
 * proxy appending the address it saw on the right). An untrusted peer is the
 * client, whatever the header says. From a trusted peer the list is walked from
 * the right, skipping trusted addresses and empty elements: the first untrusted
 * one is the client (the leftmost when all are trusted). Writes the address
 * text into out; returns 0, or -1 when the element that would be used is not an
 * IP address (then out holds peer). */
int netaddr_client_ip(const char *peer, const struct netaddr_text *lines, size_t line_count,
                      const struct netaddr_cidr *list, size_t count, char out[NETADDR_MAX_TEXT]);

#endif
