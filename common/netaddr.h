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

/* The client address for a request that came from peer with the given
 * X-Forwarded-For value (xff may be NULL): when peer is trusted, the rightmost
 * entry that is not itself trusted (the leftmost when all are); else peer.
 * Writes the address text into out; returns 0, or -1 when an entry that would
 * be used is not a valid address (then out holds peer). */
int netaddr_client_ip(const char *peer, const char *xff, size_t xff_len,
                      const struct netaddr_cidr *list, size_t count, char out[NETADDR_MAX_TEXT]);

#endif
