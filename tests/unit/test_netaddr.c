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

static void test_forwarded_for_honoured_only_from_trusted_peer(void) {
    struct netaddr_cidr *list;
    size_t n;
    char err[64], out[NETADDR_MAX_TEXT];
    netaddr_parse_list("127.0.0.1, 10.0.0.0/8", &list, &n, err, sizeof err);
    const char *xff = "203.0.113.9";
    CHECK_INT(netaddr_client_ip("127.0.0.1", xff, strlen(xff), list, n, out), 0);
    CHECK_STR(out, "203.0.113.9");
    CHECK_INT(netaddr_client_ip("198.51.100.1", xff, strlen(xff), list, n, out), 0);
    CHECK_STR(out, "198.51.100.1"); /* untrusted peer: header ignored */
    const char *chain = "1.1.1.1, 203.0.113.9, 10.1.1.1";
    CHECK_INT(netaddr_client_ip("127.0.0.1", chain, strlen(chain), list, n, out), 0);
    CHECK_STR(out, "203.0.113.9"); /* rightmost untrusted */
    const char *all_trusted = "10.0.0.1,10.0.0.2";
    CHECK_INT(netaddr_client_ip("127.0.0.1", all_trusted, strlen(all_trusted), list, n, out), 0);
    CHECK_STR(out, "10.0.0.1");
    const char *garbage = "1.1.1.1, bogus";
    CHECK_INT(netaddr_client_ip("127.0.0.1", garbage, strlen(garbage), list, n, out), -1);
    CHECK_STR(out, "127.0.0.1");
    CHECK_INT(netaddr_client_ip("127.0.0.1", NULL, 0, list, n, out), 0);
    CHECK_STR(out, "127.0.0.1");
    free(list);
}

int main(void) {
    RUN(test_cidr_list_matches_v4_v6_and_mapped);
    RUN(test_bad_lists_are_refused_with_a_reason);
    RUN(test_forwarded_for_honoured_only_from_trusted_peer);
    return TEST_SUMMARY();
}
