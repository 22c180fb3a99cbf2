/* fuzz_cluster_slots.c -- libFuzzer target for common/cluster_slots.
 *
 * The input is read as RESP by the gateway's own reader (reply_arena.h, as
 * resp_link reads a node); every reply is turned into a slot map, whose
 * invariants are checked: each owned slot lies inside its range, ranges do
 * not overlap, node indexes are in bounds, masters come first, slots_covered
 * matches the owner table. The same
 * bytes go through the MOVED/ASK parser (a result is a valid slot and port, a
 * NUL-terminated host) and the key-slot function (hash tags). */
#include "cluster_slots.h"
#include "reply_arena.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond) {
    if (!cond) abort();
}

static void check_map(const struct cluster_slot_map *map) {
    size_t covered = 0;
    require(map->master_count <= map->node_count);
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++) {
        const struct cluster_slot_range *r = cluster_slot_map_lookup(map, s);
        if (!r) continue;
        covered++;
        require((int)s >= r->start && (int)s <= r->end);
        require(r->master >= 0 && (size_t)r->master < map->master_count);
        for (size_t k = 0; k < r->replica_count; k++)
            require(r->replicas[k] >= 0 && (size_t)r->replicas[k] < map->node_count);
    }
    require(covered == map->slots_covered);
    for (size_t i = 0; i < map->node_count; i++) {
        const struct cluster_node *n = &map->nodes[i];
        require(n->host[0] != '\0' && strlen(n->host) < sizeof(n->host));
        require(n->port >= 1 && n->port <= 65535);
        require(cluster_slot_map_find_node(map, n->host, n->port) == (int)i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf = (const char *)data;

    unsigned slot = cluster_key_slot(buf, size);
    require(slot < CLUSTER_SLOTS);
    const char *open = memchr(buf, '{', size);
    const char *close = open ? memchr(open + 1, '}', size - (size_t)(open + 1 - buf)) : NULL;
    if (close && close > open + 1)
        require(slot == cluster_key_slot(open + 1, (size_t)(close - open - 1)));

    struct cluster_redirect redirect;
    enum cluster_redirect_kind kind = cluster_redirect_parse(buf, size, &redirect);
    require(kind == redirect.kind);
    if (kind != CLUSTER_REDIRECT_NONE) {
        require(redirect.slot < CLUSTER_SLOTS);
        require(redirect.port >= 1 && redirect.port <= 65535);
        require(strlen(redirect.host) < sizeof(redirect.host));
    }

    /* The gateway's own reader (the one its Redis links parse with). */
    struct reply_arena *arena = NULL;
    redisReader *reader = reply_arena_reader_new(&arena);
    require(reader != NULL);
    if (redisReaderFeed(reader, buf, size) == REDIS_OK) {
        void *reply = NULL;
        for (int i = 0; i < 4 && redisReaderGetReply(reader, &reply) == REDIS_OK && reply; i++) {
            char err[128];
            struct cluster_slot_map *map =
                cluster_slot_map_from_reply(reply, i % 2 ? NULL : "10.0.0.1", err, sizeof(err));
            if (map) check_map(map);
            cluster_slot_map_free(map);
            reply_arena_reset(arena);
            reply = NULL;
        }
    }
    reply_arena_free(reader, arena);
    return 0;
}
