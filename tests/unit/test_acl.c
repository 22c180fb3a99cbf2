/* test_acl.c -- channel names and the subscribe ACL, as tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "history.h"
#include "testlib.h"

static herald_user u1 = {.user_id = "u1", .role = "user"};
static herald_user u2 = {.user_id = "u2"};
static herald_user admin = {.user_id = "root", .role = "admin", .admin = true};

enum who { ANON, U1, U2, ADMIN };
static const herald_user *user_of(enum who w) {
    return w == ANON ? NULL : w == U1 ? &u1 : w == U2 ? &u2 : &admin;
}

static const struct {
    const char *channel;
    enum acl_result expect[4]; /* anonymous, u1, u2, admin */
} acl_table[] = {
    {"announcements", {ACL_ALLOW, ACL_ALLOW, ACL_ALLOW, ACL_ALLOW}},
    {"apps:created", {ACL_FORBIDDEN, ACL_ALLOW, ACL_ALLOW, ACL_ALLOW}},
    {"users:updated", {ACL_FORBIDDEN, ACL_ALLOW, ACL_ALLOW, ACL_ALLOW}},
    {"database:row_updated", {ACL_FORBIDDEN, ACL_ALLOW, ACL_ALLOW, ACL_ALLOW}},
    {"deployments:started", {ACL_FORBIDDEN, ACL_ALLOW, ACL_ALLOW, ACL_ALLOW}},
    {"storage:uploaded", {ACL_FORBIDDEN, ACL_ALLOW, ACL_ALLOW, ACL_ALLOW}},
    {"user:u1", {ACL_FORBIDDEN, ACL_ALLOW, ACL_FORBIDDEN, ACL_ALLOW}},
    {"user:u2", {ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW, ACL_ALLOW}},
    {"user:u", {ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW}},
    {"user:u1x", {ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW}},
    {"system:health", {ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW}},
    {"system:alerts", {ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW}},
    {"foo:bar",
     {ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL}},
    {"apps", {ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL}},
    {"apps:", {ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL}},
    {"appsx:created",
     {ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL}},
    {"announcements:x",
     {ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL}},
    {"apps created", {ACL_INVALID_NAME, ACL_INVALID_NAME, ACL_INVALID_NAME, ACL_INVALID_NAME}},
    {"", {ACL_INVALID_NAME, ACL_INVALID_NAME, ACL_INVALID_NAME, ACL_INVALID_NAME}},
};

static void test_acl_table_for_every_kind_of_user(void) {
    for (size_t i = 0; i < sizeof acl_table / sizeof acl_table[0]; i++) {
        for (int w = ANON; w <= ADMIN; w++) {
            enum acl_result got =
                acl_may_subscribe(acl_default_rules(), user_of(w), acl_table[i].channel);
            if (got != acl_table[i].expect[w])
                fprintf(stderr, "  channel %s user %d: got %d want %d\n", acl_table[i].channel, w,
                        got, acl_table[i].expect[w]);
            CHECK_INT(got, acl_table[i].expect[w]);
        }
    }
}

static void test_channel_name_charset_and_length(void) {
    char name[200];
    memset(name, 'a', sizeof name);
    CHECK(acl_channel_name_valid("apps:created", 12));
    CHECK(acl_channel_name_valid("A-Z_a.z:0-9", 11));
    CHECK(acl_channel_name_valid(name, 128));
    CHECK(!acl_channel_name_valid(name, 129));
    CHECK(!acl_channel_name_valid("", 0));
    const char *bad[] = {"a b", "a/b", "a*b", "a\"b", "a\\b", "caf\xc3\xa9", "a\nb", "a\x00b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!acl_channel_name_valid(bad[i], i == 7 ? 3 : strlen(bad[i])));
}

static void test_too_long_channel_is_invalid_even_in_known_namespace(void) {
    char name[140] = "apps:";
    memset(name + 5, 'x', 130);
    name[135] = '\0';
    CHECK_INT(acl_may_subscribe(acl_default_rules(), &u1, name), ACL_INVALID_NAME);
}

struct collected {
    char names[32][140];
    int count;
};

static int collect(const char *channel, void *arg) {
    struct collected *c = arg;
    if (c->count < 32) snprintf(c->names[c->count++], 140, "%s", channel);
    return 0;
}

static void test_authorized_channels_filtered_by_access(void) {
    struct collected anon = {0}, user = {0}, adm = {0};
    CHECK_INT(acl_each_authorized(acl_default_rules(), NULL, collect, &anon), 1);
    CHECK_STR(anon.names[0], "announcements");
    CHECK_INT(acl_each_authorized(acl_default_rules(), &u1, collect, &user), 21);
    CHECK_STR(user.names[8], "user:u1");
    CHECK_STR(user.names[20], "announcements");
    for (int i = 0; i < user.count; i++) CHECK(strncmp(user.names[i], "system:", 7) != 0);
    CHECK_INT(acl_each_authorized(acl_default_rules(), &admin, collect, &adm), 24);
    CHECK_STR(adm.names[8], "user:root");
    CHECK_STR(adm.names[20], "system:health");
}

static int stop_at_second(const char *channel, void *arg) {
    (void)channel;
    return ++*(int *)arg == 2 ? -7 : 0;
}

static void test_callback_error_stops_the_walk(void) {
    int calls = 0;
    CHECK_INT(acl_each_authorized(acl_default_rules(), &u1, stop_at_second, &calls), -7);
    CHECK_INT(calls, 2);
}

#define AUTH0_HASH "447792ab59a1614acf4787e913cd0f6a946d4eb52510b7f35969c702c072d2d8"
#define EMAIL_HASH "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"
#define X124_HASH  "a3dc6de723c964122eaef13556fdaa3e2e406ff3230fc6588168abdfc43aabe9"
#define X123                                                                                       \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

/* The hashes are SHA-256 of the ids, computed independently (python3 hashlib). */
static void test_user_channel_mapping_table(void) {
    static const struct {
        const char *user_id;
        const char *channel;
    } cases[] = {
        {"u1", "user:u1"},
        {"A-Z_a.z:0-9", "user:A-Z_a.z:0-9"},
        {X123, "user:" X123}, /* 128 bytes: the longest plain channel */
        {X123 "x", "userhash:" X124_HASH},
        {"auth0|5f1c2b", "userhash:" AUTH0_HASH},
        {"ann@example.com", "userhash:" EMAIL_HASH},
        {"a b", "userhash:c8687a08aa5d6ed2044328fa6a697ab8e96dc34291e8c2034ae8c38e6fcc6d65"},
        {"caf\xc3\xa9",
         "userhash:850f7dc43910ff890f8879c0ed26fe697c93a067ad93a7d50f466a7028a9bf4e"},
        {AUTH0_HASH,
         "user:" AUTH0_HASH}, /* a plain id stays in user:, even when it looks like a hash */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[ACL_MAX_CHANNEL + 1];
        int n = acl_user_channel(cases[i].user_id, out, sizeof out);
        CHECK_INT(n, strlen(cases[i].channel));
        CHECK_STR(n < 0 ? NULL : out, cases[i].channel);
        CHECK(acl_channel_name_valid(out, strlen(out)));
    }
}

static void test_user_channel_needs_room(void) {
    char out[80];
    CHECK_INT(acl_user_channel("u1", out, 8), 7);
    CHECK_INT(acl_user_channel("u1", out, 7), -1);
    CHECK_INT(acl_user_channel("a|b", out, 73), -1); /* userhash: + 64 needs 74 */
    CHECK_INT(acl_user_channel("a|b", out, 74), 73);
    /* A namespace too long for its hash form has no owner channel for such ids. */
    char ns[70];
    memset(ns, 'n', 69);
    ns[69] = '\0';
    char big[ACL_MAX_CHANNEL + 1];
    CHECK_INT(acl_owner_channel(ns, "a|b", big, sizeof big), -1);
    CHECK_INT(acl_owner_channel(ns, "ab", big, sizeof big), 72);
}

/* Only the owner of a hashed channel (or an admin) may subscribe to it: never a
 * plain id, not even one equal to the hash, and not the same id under user:. */
static void test_hashed_user_channel_belongs_to_its_user_only(void) {
    herald_user auth0 = {.user_id = "auth0|5f1c2b"};
    herald_user email = {.user_id = "ann@example.com"};
    herald_user looks_like_hash = {.user_id = AUTH0_HASH};
    static const struct {
        const char *channel;
        enum acl_result auth0, email, looks_like_hash, u1, admin;
    } cases[] = {
        {"userhash:" AUTH0_HASH, ACL_ALLOW, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW},
        {"userhash:" EMAIL_HASH, ACL_FORBIDDEN, ACL_ALLOW, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW},
        {"user:" AUTH0_HASH, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW, ACL_FORBIDDEN, ACL_ALLOW},
        {"userhash:u1", ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW},
        {"user:auth0", ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_FORBIDDEN, ACL_ALLOW},
        {"userhash:", ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL,
         ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL},
        {"userhashx:" AUTH0_HASH, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL,
         ACL_UNKNOWN_CHANNEL, ACL_UNKNOWN_CHANNEL},
    };
    const struct acl_rules *rules = acl_default_rules();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *ch = cases[i].channel;
        CHECK_INT(acl_may_subscribe(rules, &auth0, ch), cases[i].auth0);
        CHECK_INT(acl_may_subscribe(rules, &email, ch), cases[i].email);
        CHECK_INT(acl_may_subscribe(rules, &looks_like_hash, ch), cases[i].looks_like_hash);
        CHECK_INT(acl_may_subscribe(rules, &u1, ch), cases[i].u1);
        CHECK_INT(acl_may_subscribe(rules, &admin, ch), cases[i].admin);
        CHECK_INT(acl_may_subscribe(rules, NULL, ch),
                  cases[i].admin == ACL_ALLOW ? ACL_FORBIDDEN : cases[i].admin);
    }
}

static void test_user_id_outside_charset_lists_its_hashed_channel(void) {
    static const char *ids[] = {"a b", "auth0|5f1c2b", "ann@example.com", X123 "x"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        herald_user odd = {.user_id = (char *)ids[i]};
        char own[ACL_MAX_CHANNEL + 1];
        struct collected got = {0};
        CHECK_INT(acl_each_authorized(acl_default_rules(), &odd, collect, &got), 21);
        CHECK(acl_user_channel(ids[i], own, sizeof own) > 0);
        CHECK_STR(got.names[8], own);
        CHECK(strncmp(got.names[8], "userhash:", 9) == 0);
    }
}

static char *write_temp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/herald-acl-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_rules_file_replaces_the_defaults(void) {
    char err[256];
    char *path =
        write_temp("{\"rules\":[{\"channel\":\"announcements\",\"access\":\"public\"},"
                   "{\"namespace\":\"metrics\",\"access\":\"authenticated\"},"
                   "{\"namespace\":\"user\",\"access\":\"owner\"},"
                   "{\"namespace\":\"ops\",\"access\":\"admin\"}],"
                   "\"known\":[\"metrics:cpu\",\"user:\",\"ops:pager\",\"announcements\"]}");
    struct acl_rules *rules = acl_rules_load(path, err, sizeof err);
    unlink(path);
    CHECK(rules != NULL);
    if (!rules) return;
    CHECK_INT(acl_may_subscribe(rules, &u1, "metrics:cpu"), ACL_ALLOW);
    CHECK_INT(acl_may_subscribe(rules, NULL, "metrics:cpu"), ACL_FORBIDDEN);
    CHECK_INT(acl_may_subscribe(rules, &u1, "apps:created"), ACL_UNKNOWN_CHANNEL);
    CHECK_INT(acl_may_subscribe(rules, &u1, "ops:pager"), ACL_FORBIDDEN);
    CHECK_INT(acl_may_subscribe(rules, &admin, "ops:pager"), ACL_ALLOW);
    CHECK_INT(acl_may_subscribe(rules, &u2, "user:u2"), ACL_ALLOW);
    herald_user auth0 = {.user_id = "auth0|5f1c2b"};
    CHECK_INT(acl_may_subscribe(rules, &auth0, "userhash:" AUTH0_HASH), ACL_ALLOW);
    CHECK_INT(acl_may_subscribe(rules, &u2, "userhash:" AUTH0_HASH), ACL_FORBIDDEN);
    CHECK_INT(acl_may_subscribe(rules, &u2, "metricshash:" AUTH0_HASH), ACL_UNKNOWN_CHANNEL);
    struct collected got = {0};
    CHECK_INT(acl_each_authorized(rules, &u1, collect, &got), 3);
    CHECK_STR(got.names[0], "metrics:cpu");
    CHECK_STR(got.names[1], "user:u1");
    CHECK_STR(got.names[2], "announcements");
    acl_rules_free(rules);
}

static void test_bad_rules_files_are_refused_with_a_reason(void) {
    const char *bad[] = {
        "not json",
        "{}",
        "{\"rules\":[{\"namespace\":\"apps\"}]}",
        "{\"rules\":[{\"namespace\":\"apps\",\"access\":\"everyone\"}]}",
        "{\"rules\":[{\"namespace\":\"a b\",\"access\":\"public\"}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"channel\":\"b\",\"access\":\"public\"}]}",
        "{\"rules\":[],\"known\":[\"bad name\"]}",
        "{\"rules\":[],\"known\":\"x\"}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":true}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":{\"size\":0}}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":{\"ttl\":-5}}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":{\"ttl\":1.5}}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":{\"size\":\"9\"}}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":{\"size\":10000001}}]}",
        "{\"rules\":[{\"namespace\":\"a\",\"access\":\"public\",\"history\":{\"sise\":9}}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        char *path = write_temp(bad[i]);
        struct acl_rules *rules = acl_rules_load(path, err, sizeof err);
        unlink(path);
        if (rules) fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(rules == NULL);
        CHECK(err[0] != '\0');
        acl_rules_free(rules);
    }
    char err[256] = "";
    CHECK(acl_rules_load("/nonexistent/acl.json", err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

static void test_history_policy_per_namespace_and_channel(void) {
    static const struct {
        const char *channel;
        bool has_history;
        unsigned long size, ttl;
    } table[] = {
        {"apps:created", true, 50, 30},                           /* namespace: both set */
        {"deployments:started", true, 5000, HISTORY_DEFAULT_TTL}, /* size only */
        {"metrics:cpu", false, 0, 0},                             /* "history":false */
        {"announcements", true, HISTORY_DEFAULT_SIZE, 7},         /* one channel: ttl only */
        {"storage:uploaded", true, HISTORY_DEFAULT_SIZE, HISTORY_DEFAULT_TTL}, /* rule is silent */
        {"other:x", true, HISTORY_DEFAULT_SIZE, HISTORY_DEFAULT_TTL},          /* no rule */
    };
    char err[256] = "";
    char *path = write_temp(
        "{\"rules\":[{\"namespace\":\"apps\",\"access\":\"authenticated\","
        "\"history\":{\"size\":50,\"ttl\":30}},"
        "{\"namespace\":\"deployments\",\"access\":\"authenticated\",\"history\":{\"size\":5000}},"
        "{\"namespace\":\"metrics\",\"access\":\"admin\",\"history\":false},"
        "{\"channel\":\"announcements\",\"access\":\"public\",\"history\":{\"ttl\":7}},"
        "{\"namespace\":\"storage\",\"access\":\"authenticated\"}]}");
    struct acl_rules *rules = acl_rules_load(path, err, sizeof err);
    unlink(path);
    if (!rules) fprintf(stderr, "  %s\n", err);
    CHECK(rules != NULL);
    if (!rules) return;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        unsigned long size = HISTORY_DEFAULT_SIZE, ttl = HISTORY_DEFAULT_TTL;
        bool got = acl_history_policy(rules, table[i].channel, &size, &ttl);
        if (got != table[i].has_history) fprintf(stderr, "  channel %s\n", table[i].channel);
        CHECK_INT(got, table[i].has_history);
        if (!got) continue;
        CHECK_INT(size, table[i].size);
        CHECK_INT(ttl, table[i].ttl);
    }
    /* The caller's defaults (herald-pub --history-size/--history-ttl) fill what
     * a rule leaves unset. */
    unsigned long size = 10, ttl = 20;
    CHECK(acl_history_policy(rules, "deployments:started", &size, &ttl));
    CHECK_INT(size, 5000);
    CHECK_INT(ttl, 20);
    acl_rules_free(rules);
}

static void test_default_rules_keep_default_history(void) {
    unsigned long size = HISTORY_DEFAULT_SIZE, ttl = HISTORY_DEFAULT_TTL;
    CHECK(acl_history_policy(acl_default_rules(), "system:health", &size, &ttl));
    CHECK_INT(size, 1000);
    CHECK_INT(ttl, 600);
}

int main(void) {
    RUN(test_acl_table_for_every_kind_of_user);
    RUN(test_channel_name_charset_and_length);
    RUN(test_too_long_channel_is_invalid_even_in_known_namespace);
    RUN(test_authorized_channels_filtered_by_access);
    RUN(test_callback_error_stops_the_walk);
    RUN(test_user_channel_mapping_table);
    RUN(test_user_channel_needs_room);
    RUN(test_hashed_user_channel_belongs_to_its_user_only);
    RUN(test_user_id_outside_charset_lists_its_hashed_channel);
    RUN(test_rules_file_replaces_the_defaults);
    RUN(test_bad_rules_files_are_refused_with_a_reason);
    RUN(test_history_policy_per_namespace_and_channel);
    RUN(test_default_rules_keep_default_history);
    return TEST_SUMMARY();
}
