/* test_cluster_slots.c -- key slots (Redis' own values), the slot map from a
 * CLUSTER SLOTS reply (parsed by hiredis' reader from RESP bytes), MOVED/ASK. */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_slots.h"
#include "testlib.h"

static unsigned slot_of(const char *key) {
    return cluster_key_slot(key, strlen(key));
}

/* Values from `redis-cli CLUSTER KEYSLOT <key>` on Redis 7.0.15. */
static void test_key_slot_matches_redis(void) {
    static const struct {
        const char *key;
        unsigned slot;
    } cases[] = {
        {"foo", 12182},
        {"bar", 5061},
        {"hello", 866},
        {"123456789", 12739},
        {"{user1000}.following", 3443},
        {"{user1000}.followers", 3443},
        {"foo{}{bar}", 8363},    /* "{}" first: the whole key */
        {"foo{{bar}}zap", 4015}, /* hashes "{bar" */
        {"foo{bar}{zap}", 5061}, /* hashes "bar" */
        {"{}", 15257},
        {"{", 4092},
        {"}", 12090},
        {"a{b", 13340},
        {"", 0},
        {"herald:user:42", 16346},
        {"herald:apps:created", 13735},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (slot_of(cases[i].key) != cases[i].slot)
            fprintf(stderr, "  key \"%s\": slot %u, Redis says %u\n", cases[i].key,
                    slot_of(cases[i].key), cases[i].slot);
        CHECK_INT(slot_of(cases[i].key), cases[i].slot);
    }
    CHECK_INT(cluster_crc16("123456789", 9), 0x31C3); /* the XMODEM check value */
}

static void test_key_slot_stops_at_length(void) {
    /* Bytes after len are not part of the key; a NUL inside is. */
    CHECK_INT(cluster_key_slot("foobar", 3), 12182);
    CHECK_INT(cluster_key_slot("{a}", 2), cluster_key_slot("{a", 2));
    CHECK(cluster_key_slot("a\0b", 3) != cluster_key_slot("a", 1));
}

static void test_history_keys_share_the_channel_slot(void) {
    const char *channel = "herald:apps:created";
    CHECK_INT(slot_of("{herald:apps:created}:history"), slot_of(channel));
    CHECK_INT(slot_of("{herald:apps:created}:meta"), slot_of(channel));
    CHECK_INT(slot_of("{herald:user:42}:history"), slot_of("herald:user:42"));
}

/* Parses RESP bytes with hiredis' reader, as the links do. */
static redisReply *parse_resp(const char *resp) {
    redisReader *reader = redisReaderCreate();
    void *reply = NULL;
    if (!reader) return NULL;
    if (redisReaderFeed(reader, resp, strlen(resp)) != REDIS_OK ||
        redisReaderGetReply(reader, &reply) != REDIS_OK)
        reply = NULL;
    redisReaderFree(reader);
    return reply;
}

/* Three masters with one replica each, as `redis-cli --cluster create` lays them
 * out, and a Redis 7 node entry carrying a fourth (metadata) element. */
static const char three_masters[] =
    "*3\r\n"
    "*4\r\n:0\r\n:5460\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$40\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    "*4\r\n$9\r\n127.0.0.1\r\n:7004\r\n$40\r\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n*0\r\n"
    "*4\r\n:5461\r\n:10922\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\ncccccccccccccccccccccccccccccccccccccccc\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7005\r\n$40\r\ndddddddddddddddddddddddddddddddddddddddd\r\n"
    "*4\r\n:10923\r\n:16383\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7002\r\n$40\r\neeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\r\n"
    "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$40\r\nffffffffffffffffffffffffffffffffffffffff\r\n";

static void test_map_from_cluster_slots(void) {
    redisReply *reply = parse_resp(three_masters);
    CHECK(reply != NULL);
    if (!reply) return;
    char err[128] = "";
    struct cluster_slot_map *map =
        cluster_slot_map_from_reply(reply, "127.0.0.1", err, sizeof(err));
    freeReplyObject(reply);
    CHECK(map != NULL);
    if (!map) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_INT(map->range_count, 3);
    CHECK_INT(map->master_count, 3);
    CHECK_INT(map->node_count, 6);
    CHECK_INT(map->slots_covered, CLUSTER_SLOTS);
    const struct cluster_slot_range *r = cluster_slot_map_lookup(map, 5461);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(r->start, 5461);
        CHECK_INT(r->end, 10922);
        CHECK_INT(map->nodes[r->master].port, 7001);
        CHECK_STR(map->nodes[r->master].id, "cccccccccccccccccccccccccccccccccccccccc");
        CHECK_INT(r->replica_count, 1);
        if (r->replica_count) CHECK_INT(map->nodes[r->replicas[0]].port, 7005);
    }
    CHECK_INT(map->nodes[cluster_slot_map_lookup(map, 0)->master].port, 7000);
    CHECK_INT(map->nodes[cluster_slot_map_lookup(map, 5460)->master].port, 7000);
    CHECK_INT(map->nodes[cluster_slot_map_lookup(map, 16383)->master].port, 7002);
    CHECK(cluster_slot_map_lookup(map, 16384) == NULL);
    const struct cluster_node *owner = cluster_slot_map_master_for_key(map, "foo", 3);
    CHECK(owner != NULL && owner->port == 7002); /* slot 12182 */
    for (size_t i = 0; i < map->master_count; i++) CHECK(map->nodes[i].port <= 7002);
    CHECK_INT(cluster_slot_map_find_node(map, "127.0.0.1", 7004), 3);
    CHECK_INT(cluster_slot_map_find_node(map, "127.0.0.1", 7009), -1);
    cluster_slot_map_free(map);
}

static struct cluster_slot_map *map_of(const char *resp, const char *default_host, char *err,
                                       size_t err_size) {
    redisReply *reply = parse_resp(resp);
    if (!reply) {
        snprintf(err, err_size, "bad test RESP");
        return NULL;
    }
    struct cluster_slot_map *map = cluster_slot_map_from_reply(reply, default_host, err, err_size);
    freeReplyObject(reply);
    return map;
}

static void test_map_with_gaps_and_split_ranges(void) {
    /* One master serving two ranges, a hole between them, an unknown endpoint. */
    char err[128] = "";
    struct cluster_slot_map *map = map_of("*2\r\n"
                                          "*3\r\n:0\r\n:99\r\n*2\r\n$0\r\n\r\n:7000\r\n"
                                          "*3\r\n:200\r\n:299\r\n*2\r\n$1\r\n?\r\n:7000\r\n",
                                          "10.0.0.5", err, sizeof(err));
    CHECK(map != NULL);
    if (!map) return;
    CHECK_INT(map->master_count, 1);
    CHECK_INT(map->node_count, 1);
    CHECK_STR(map->nodes[0].host, "10.0.0.5");
    CHECK_INT(map->slots_covered, 200);
    CHECK(cluster_slot_map_lookup(map, 150) == NULL);
    CHECK(cluster_slot_map_lookup(map, 250) != NULL);
    CHECK(cluster_slot_map_master_for_key(map, "foo", 3) == NULL);
    cluster_slot_map_free(map);

    map = map_of("*0\r\n", "h", err, sizeof(err));
    CHECK(map != NULL && map->slots_covered == 0 && map->node_count == 0);
    cluster_slot_map_free(map);
}

static void test_bad_cluster_slots_replies_refused(void) {
    static const char *bad[] = {
        "+OK\r\n",
        "*1\r\n:5\r\n",
        "*1\r\n*2\r\n:0\r\n:10\r\n",                           /* no master */
        "*1\r\n*3\r\n:10\r\n:0\r\n*2\r\n$1\r\na\r\n:1\r\n",    /* start > end */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\na\r\n:1\r\n", /* slot out of range */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:0\r\n",     /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n:1\r\n:1\r\n",          /* host not a string */
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\na\r\n",           /* node without port */
        ("*2\r\n*3\r\n:0\r\n:10\r\n*2\r\n$1\r\na\r\n:1\r\n"
         "*3\r\n:10\r\n:20\r\n*2\r\n$1\r\nb\r\n:1\r\n"), /* overlap at 10 */
        "*1\r\n*4\r\n:0\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n*2\r\n$1\r\nb\r\n:70000\r\n", /* replica */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$0\r\n\r\n:1\r\n", /* empty host, no default */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[128] = "";
        struct cluster_slot_map *map = map_of(bad[i], NULL, err, sizeof(err));
        if (map) fprintf(stderr, "  case %zu accepted\n", i);
        CHECK(map == NULL);
        CHECK(err[0] != '\0');
        cluster_slot_map_free(map);
    }
}

static void test_redirects_parsed(void) {
    struct cluster_redirect r;
    const char *moved = "MOVED 3999 127.0.0.1:6381";
    CHECK_INT(cluster_redirect_parse(moved, strlen(moved), &r), CLUSTER_REDIRECT_MOVED);
    CHECK_INT(r.slot, 3999);
    CHECK_STR(r.host, "127.0.0.1");
    CHECK_INT(r.port, 6381);

    const char *ask = "ASK 0 redis-2.example.com:7000";
    CHECK_INT(cluster_redirect_parse(ask, strlen(ask), &r), CLUSTER_REDIRECT_ASK);
    CHECK_INT(r.slot, 0);
    CHECK_STR(r.host, "redis-2.example.com");
    CHECK_INT(r.port, 7000);

    const char *v6 = "MOVED 16383 ::1:7001";
    CHECK_INT(cluster_redirect_parse(v6, strlen(v6), &r), CLUSTER_REDIRECT_MOVED);
    CHECK_STR(r.host, "::1");
    CHECK_INT(r.port, 7001);
    const char *v6b = "ASK 7 [fe80::1]:7001";
    CHECK_INT(cluster_redirect_parse(v6b, strlen(v6b), &r), CLUSTER_REDIRECT_ASK);
    CHECK_STR(r.host, "fe80::1");

    const char *no_host = "MOVED 12 :7002"; /* the node announced no endpoint */
    CHECK_INT(cluster_redirect_parse(no_host, strlen(no_host), &r), CLUSTER_REDIRECT_MOVED);
    CHECK_STR(r.host, "");
    CHECK_INT(r.port, 7002);

    /* Only the given length counts. */
    CHECK_INT(cluster_redirect_parse(moved, 17, &r), CLUSTER_REDIRECT_NONE);
}

static void test_other_errors_are_not_redirects(void) {
    static const char *cases[] = {
        "ERR unknown command",
        "MOVED",
        "MOVED ",
        "MOVED 3999",
        "MOVED 3999 ",
        "MOVED 16384 127.0.0.1:6381",
        "MOVED -1 127.0.0.1:6381",
        "MOVED 1x 127.0.0.1:6381",
        "MOVED 1 127.0.0.1",
        "MOVED 1 127.0.0.1:",
        "MOVED 1 127.0.0.1:0",
        "MOVED 1 127.0.0.1:65536",
        "MOVED 1 127.0.0.1:6379x",
        "MOVED 1 127.0.0.1:6379 extra",
        "moved 1 127.0.0.1:6379",
        "ASKING",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cluster_redirect r;
        r.port = 99;
        if (cluster_redirect_parse(cases[i], strlen(cases[i]), &r) != CLUSTER_REDIRECT_NONE)
            fprintf(stderr, "  \"%s\" taken for a redirect\n", cases[i]);
        CHECK_INT(cluster_redirect_parse(cases[i], strlen(cases[i]), &r), CLUSTER_REDIRECT_NONE);
        CHECK_INT(r.port, 0);
    }
}

int main(void) {
    RUN(test_key_slot_matches_redis);
    RUN(test_key_slot_stops_at_length);
    RUN(test_history_keys_share_the_channel_slot);
    RUN(test_map_from_cluster_slots);
    RUN(test_map_with_gaps_and_split_ranges);
    RUN(test_bad_cluster_slots_replies_refused);
    RUN(test_redirects_parsed);
    RUN(test_other_errors_are_not_redirects);
    return TEST_SUMMARY();
}
