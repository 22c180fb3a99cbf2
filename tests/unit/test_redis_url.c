/* test_redis_url.c -- redis:// URL parsing: defaults, credentials, IPv6, refusals. */
#include <stdlib.h>
#include <string.h>

#include "redis_url.h"
#include "testlib.h"

struct good_case {
    const char *url;
    const char *host;
    int port;
    const char *user;     /* NULL: none expected */
    const char *password; /* NULL: none expected */
    int db;
};

static const struct good_case good_cases[] = {
    {"redis://", "127.0.0.1", 6379, NULL, NULL, 0},
    {"redis://localhost", "localhost", 6379, NULL, NULL, 0},
    {"redis://redis.example.com:6380", "redis.example.com", 6380, NULL, NULL, 0},
    {"redis://10.0.0.5:7000/3", "10.0.0.5", 7000, NULL, NULL, 3},
    {"redis://:6390", "127.0.0.1", 6390, NULL, NULL, 0},
    {"redis:///5", "127.0.0.1", 6379, NULL, NULL, 5},
    {"redis://host/", "host", 6379, NULL, NULL, 0},
    {"REDIS://Host-1_a", "Host-1_a", 6379, NULL, NULL, 0},
    {"redis://:secret@127.0.0.1:6379", "127.0.0.1", 6379, NULL, "secret", 0},
    {"redis://alice:s3cret@cache:6381/2", "cache", 6381, "alice", "s3cret", 2},
    {"redis://:p%40ss%2Fw%3Ard%25@h", "h", 6379, NULL, "p@ss/w:rd%", 0},
    {"redis://:p@ss@h:1", "h", 1, NULL, "p@ss", 0},
    {"redis://b%6Fb:x@h", "h", 6379, "bob", "x", 0},
    {"redis://:@h", "h", 6379, NULL, NULL, 0},
    {"redis://[::1]", "::1", 6379, NULL, NULL, 0},
    {"redis://[::1]:6380/1", "::1", 6380, NULL, NULL, 1},
    {"redis://:pw@[fe80::1:2]:65535", "fe80::1:2", 65535, NULL, "pw", 0},
};

struct bad_case {
    const char *url;
    const char *reason_part; /* a phrase the reason must contain */
};

static const struct bad_case bad_cases[] = {
    {"http://localhost:6379", "not a redis:// URL"},
    {"localhost:6379", "not a redis:// URL"},
    {"", "not a redis:// URL"},
    {"rediss://localhost", "not supported"},
    {"redis://localhost:0", "invalid port '0'"},
    {"redis://localhost:65536", "invalid port '65536'"},
    {"redis://localhost:", "invalid port ''"},
    {"redis://localhost:63a", "invalid port '63a'"},
    {"redis://localhost:-1", "invalid port '-1'"},
    {"redis://localhost:99999999999", "invalid port"},
    {"redis://localhost/x", "invalid database 'x'"},
    {"redis://localhost/-1", "invalid database '-1'"},
    {"redis://localhost/1/2", "invalid database '1/2'"},
    {"redis://localhost/99999999999", "invalid database"},
    {"redis://localhost?db=1", "query strings are not supported"},
    {"redis://::1:6379", "IPv6 address goes in brackets"},
    {"redis://[::1", "missing ']'"},
    {"redis://[]:6379", "empty IPv6"},
    {"redis://[::1]x", "after the IPv6 address"},
    {"redis://[::g]", "invalid character in IPv6"},
    {"redis://bad host", "invalid host"},
    {"redis://alice@host", "a user needs a password"},
    {"redis://alice:@host", "a user needs a password"},
    {"redis://:p%4@host", "malformed %-escape in the password"},
    {"redis://:p%zz@host", "malformed %-escape in the password"},
    {"redis://:p%00x@host", "malformed %-escape in the password"},
    {"redis://a%g1:pw@host", "malformed %-escape in the user name"},
};

static int same_optional(const char *got, const char *want) {
    if (!want) return got == NULL;
    return got && strcmp(got, want) == 0;
}

static void test_valid_urls_parse_to_their_parts(void) {
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        const struct good_case *c = &good_cases[i];
        struct redis_url u;
        char err[256] = "untouched";
        int rc = redis_url_parse(c->url, &u, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "  case '%s': %s\n", c->url, err);
            CHECK_INT(rc, 0);
            continue;
        }
        CHECK_STR(u.host, c->host);
        CHECK_INT(u.port, c->port);
        CHECK_INT(u.db, c->db);
        if (!same_optional(u.user, c->user) || !same_optional(u.password, c->password)) {
            fprintf(stderr, "  case '%s': user '%s' password '%s'\n", c->url,
                    u.user ? u.user : "(null)", u.password ? u.password : "(null)");
            CHECK(0);
        }
        redis_url_free(&u);
    }
}

static void test_invalid_urls_fail_with_a_reason_and_leave_out_empty(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        struct redis_url u;
        char err[256] = "";
        int rc = redis_url_parse(c->url, &u, err, sizeof err);
        CHECK_INT(rc, -1);
        if (!strstr(err, c->reason_part)) {
            fprintf(stderr, "  case '%s': reason '%s' lacks '%s'\n", c->url, err, c->reason_part);
            CHECK(0);
        }
        CHECK(u.host == NULL && u.user == NULL && u.password == NULL);
        if (rc == 0) redis_url_free(&u);
    }
}

static void test_null_url_fails(void) {
    struct redis_url u;
    char err[128] = "";
    CHECK_INT(redis_url_parse(NULL, &u, err, sizeof err), -1);
    CHECK(err[0] != '\0');
}

static void test_reason_never_echoes_the_password(void) {
    struct redis_url u;
    char err[256] = "";
    CHECK_INT(redis_url_parse("http://:topsecret@host", &u, err, sizeof err), -1);
    CHECK(strstr(err, "topsecret") == NULL);
    CHECK_INT(redis_url_parse("redis://:topsecret@host:bad", &u, err, sizeof err), -1);
    CHECK(strstr(err, "topsecret") == NULL);
}

static void test_reason_is_truncated_to_err_size(void) {
    struct redis_url u;
    char err[8];
    memset(err, 'x', sizeof err);
    CHECK_INT(redis_url_parse("http://x", &u, err, sizeof err), -1);
    CHECK_INT(strlen(err), sizeof err - 1);
    CHECK_INT(redis_url_parse("http://x", &u, NULL, 0), -1);
}

static void test_free_is_safe_twice_and_on_null(void) {
    struct redis_url u;
    CHECK_INT(redis_url_parse("redis://a:b@h:1/2", &u, NULL, 0), 0);
    redis_url_free(&u);
    CHECK(u.host == NULL && u.password == NULL);
    redis_url_free(&u);
    redis_url_free(NULL);
}

/* --redis-cluster seed lists. */
struct cluster_case {
    const char *list;
    size_t count;
    const char *last_host; /* host and port of the last seed */
    int last_port;
    const char *password; /* the cluster's, NULL: none */
    const char *user;
};

static const struct cluster_case cluster_cases[] = {
    {"127.0.0.1:7000", 1, "127.0.0.1", 7000, NULL, NULL},
    {"10.0.0.1:7000,10.0.0.2:7001,[::1]:7002", 3, "::1", 7002, NULL, NULL},
    {"redis://:pw@h1:7000,h2:7001", 2, "h2", 7001, "pw", NULL},
    {"h1:7000,redis://bob:pw@h2:7001", 2, "h2", 7001, "pw", "bob"},
    {"redis://:pw@h1:7000,redis://:pw@h2:7001", 2, "h2", 7001, "pw", NULL},
    {"h1", 1, "h1", 6379, NULL, NULL},
};

static const struct bad_case bad_cluster_cases[] = {
    {"", "no seed node"},
    {"h1:7000,,h2:7001", "empty seed node"},
    {"h1:7000,", "empty seed node"},
    {"h1:0", "seed 1: invalid port '0'"},
    {"redis://h1:7000/2", "only database 0"},
    {"redis://:a@h1:7000,redis://:b@h2:7001", "different credentials"},
    {"::1:7000", "IPv6 address goes in brackets"},
};

static void test_cluster_seed_lists_share_their_credentials(void) {
    for (size_t i = 0; i < sizeof cluster_cases / sizeof cluster_cases[0]; i++) {
        const struct cluster_case *c = &cluster_cases[i];
        struct redis_cluster rc;
        char err[256] = "";
        if (redis_cluster_parse(c->list, &rc, err, sizeof err) != 0) {
            fprintf(stderr, "  case '%s': %s\n", c->list, err);
            CHECK(0);
            continue;
        }
        CHECK_INT(rc.count, c->count);
        CHECK_STR(rc.seeds[rc.count - 1].host, c->last_host);
        CHECK_INT(rc.seeds[rc.count - 1].port, c->last_port);
        CHECK(same_optional(rc.password, c->password));
        CHECK(same_optional(rc.user, c->user));
        for (size_t s = 0; s < rc.count; s++) {
            CHECK(same_optional(rc.seeds[s].password, c->password));
            CHECK(same_optional(rc.seeds[s].user, c->user));
        }
        redis_cluster_free(&rc);
    }
}

static void test_bad_cluster_seed_lists_fail_with_a_reason(void) {
    for (size_t i = 0; i < sizeof bad_cluster_cases / sizeof bad_cluster_cases[0]; i++) {
        const struct bad_case *c = &bad_cluster_cases[i];
        struct redis_cluster rc;
        char err[256] = "";
        CHECK_INT(redis_cluster_parse(c->url, &rc, err, sizeof err), -1);
        if (!strstr(err, c->reason_part)) {
            fprintf(stderr, "  case '%s': reason '%s' lacks '%s'\n", c->url, err, c->reason_part);
            CHECK(0);
        }
        CHECK(rc.seeds == NULL && rc.count == 0);
        CHECK(strstr(err, "pw") == NULL);
    }
}

int main(void) {
    RUN(test_valid_urls_parse_to_their_parts);
    RUN(test_invalid_urls_fail_with_a_reason_and_leave_out_empty);
    RUN(test_null_url_fails);
    RUN(test_reason_never_echoes_the_password);
    RUN(test_reason_is_truncated_to_err_size);
    RUN(test_free_is_safe_twice_and_on_null);
    RUN(test_cluster_seed_lists_share_their_credentials);
    RUN(test_bad_cluster_seed_lists_fail_with_a_reason);
    return TEST_SUMMARY();
}
