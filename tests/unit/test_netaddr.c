/* test_netaddr.c -- CIDR lists and X-Forwarded-For resolution. */
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "testlib.h"

static void test_cidr_list_matches_v4_v6_and_mapped(void) {
    struct netaddr_cidr *list;
    size_t n;
    char err[128];
    CHECK_INT(netaddr_parse_list("10.0.0.0/8, 127.0.0.1 ,::1, 2001:db8::/32, 192.168.1.128/25",
                                 &list, &n, err, sizeof err),
              0);
    CHECK_INT(n, 5);
    CHECK(netaddr_in_list("10.200.3.4", list, n));
    CHECK(!netaddr_in_list("11.0.0.1", list, n));
    CHECK(netaddr_in_list("127.0.0.1", list, n));
    CHECK(!netaddr_in_list("127.0.0.2", list, n));
    CHECK(netaddr_in_list("::1", list, n));
    CHECK(netaddr_in_list("::ffff:127.0.0.1", list, n));
    CHECK(netaddr_in_list("2001:db8:1::5", list, n));
    CHECK(!netaddr_in_list("2001:db9::5", list, n));
    CHECK(netaddr_in_list("192.168.1.200", list, n));
    CHECK(!netaddr_in_list("192.168.1.100", list, n));
    CHECK(!netaddr_in_list("not-an-ip", list, n));
    free(list);
}

static void test_bad_lists_are_refused_with_a_reason(void) {
    const char *bad[] = {"10.0.0.0/33", "foo", "1.2.3.4/", "1.2.3.4/x", "::1/129", "1.2.3.4.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct netaddr_cidr *list = NULL;
        size_t n = 9;
        char err[128] = "";
        CHECK_INT(netaddr_parse_list(bad[i], &list, &n, err, sizeof err), -1);
        CHECK(list == NULL && n == 0 && err[0]);
    }
    struct netaddr_cidr *list;
    size_t n;
    char err[64];
    CHECK_INT(netaddr_parse_list("", &list, &n, err, sizeof err), 0);
    CHECK_INT(n, 0);
    CHECK_INT(netaddr_parse_list(NULL, &list, &n, err, sizeof err), 0);
}

/* X-Forwarded-For resolution with trusted = 127.0.0.1, 10.0.0.0/8. Lines are
 * separated by "\n" in the table (each is one header line). */
static const struct {
    const char *peer;
    const char *lines; /* NULL: no header */
    int result;
    const char *client;
} client_cases[] = {
    /* An untrusted peer is the client, whatever it sends. */
    {"198.51.100.1", "203.0.113.9", 0, "198.51.100.1"},
    {"198.51.100.1", "203.0.113.9\n10.0.0.1", 0, "198.51.100.1"},
    {"198.51.100.1", "bogus", 0, "198.51.100.1"},
    {"127.0.0.1", NULL, 0, "127.0.0.1"},
    {"127.0.0.1", "203.0.113.9", 0, "203.0.113.9"},
    /* The rightmost untrusted address; trusted hops skipped. */
    {"127.0.0.1", "1.1.1.1, 203.0.113.9, 10.1.1.1", 0, "203.0.113.9"},
    {"127.0.0.1", "1.1.1.1, 203.0.113.9", 0, "203.0.113.9"},
    /* A client's own line comes first, the proxy's (HAProxy's option
     * forwardfor) last: the proxy's is the one believed. */
    {"127.0.0.1", "203.0.113.7\n198.51.100.2", 0, "198.51.100.2"},
    {"127.0.0.1", "203.0.113.7, 203.0.113.8\n198.51.100.2", 0, "198.51.100.2"},
    {"127.0.0.1", "203.0.113.7\n198.51.100.2, 10.0.0.5", 0, "198.51.100.2"},
    {"127.0.0.1", "203.0.113.7\n198.51.100.2\n10.0.0.5\n127.0.0.1", 0, "198.51.100.2"},
    {"127.0.0.1", "203.0.113.7\n10.0.0.5", 0, "203.0.113.7"},
    /* Empty elements and lines are skipped. */
    {"127.0.0.1", "203.0.113.7, ,\n\n , ", 0, "203.0.113.7"},
    {"127.0.0.1", " , \n", 0, "127.0.0.1"},
    /* Every hop trusted: the leftmost is the client. */
    {"127.0.0.1", "10.0.0.1,10.0.0.2", 0, "10.0.0.1"},
    {"127.0.0.1", "10.0.0.1\n10.0.0.2", 0, "10.0.0.1"},
    /* A bad address where the client should be: the peer stands for it. */
    {"127.0.0.1", "1.1.1.1, bogus", -1, "127.0.0.1"},
    {"127.0.0.1", "1.1.1.1\nbogus, 10.0.0.3", -1, "127.0.0.1"},
    {"127.0.0.1", "203.0.113.7:4000", -1, "127.0.0.1"},
    /* A bad address left of the client is never looked at. */
    {"127.0.0.1", "bogus\n203.0.113.9", 0, "203.0.113.9"},
    /* IPv6 and IPv4-mapped forms come out normalised. */
    {"::ffff:127.0.0.1", "2001:DB8::1", 0, "2001:db8::1"},
    {"127.0.0.1", "::ffff:203.0.113.9", 0, "203.0.113.9"},
};

static void test_client_address_cases(void) {
    struct netaddr_cidr *list;
    size_t n;
    char err[64];
    CHECK_INT(netaddr_parse_list("127.0.0.1, 10.0.0.0/8", &list, &n, err, sizeof err), 0);
    for (size_t i = 0; i < sizeof client_cases / sizeof client_cases[0]; i++) {
        struct netaddr_text lines[8];
        size_t count = 0;
        const char *p = client_cases[i].lines;
        while (p) {
            const char *nl = strchr(p, '\n');
            lines[count++] = (struct netaddr_text){p, nl ? (size_t)(nl - p) : strlen(p)};
            p = nl ? nl + 1 : NULL;
        }
        char out[NETADDR_MAX_TEXT];
        int got = netaddr_client_ip(client_cases[i].peer, lines, count, list, n, out);
        if (got != client_cases[i].result || strcmp(out, client_cases[i].client) != 0)
            fprintf(stderr, "  case %zu: peer %s, lines \"%s\"\n", i, client_cases[i].peer,
                    client_cases[i].lines ? client_cases[i].lines : "(none)");
        CHECK_INT(got, client_cases[i].result);
        CHECK_STR(out, client_cases[i].client);
    }
    free(list);
}

static void test_line_slices_are_not_read_past_their_length(void) {
    struct netaddr_cidr *list;
    size_t n;
    char err[64], out[NETADDR_MAX_TEXT];
    CHECK_INT(netaddr_parse_list("127.0.0.1", &list, &n, err, sizeof err), 0);
    const char *text = "203.0.113.9, 198.51.100.4";
    struct netaddr_text line = {text, 11}; /* "203.0.113.9" only */
    CHECK_INT(netaddr_client_ip("127.0.0.1", &line, 1, list, n, out), 0);
    CHECK_STR(out, "203.0.113.9");
    free(list);
}

int main(void) {
    RUN(test_cidr_list_matches_v4_v6_and_mapped);
    RUN(test_bad_lists_are_refused_with_a_reason);
    RUN(test_client_address_cases);
    RUN(test_line_slices_are_not_read_past_their_length);
    return TEST_SUMMARY();
}
