/* cluster_slots.h -- Redis Cluster key slots, the slot map, MOVED/ASK redirects.
 *
 * Pure functions, no I/O: the slot of a key or channel (CRC16 with hash tags,
 * exactly as Redis computes it), the map "slot -> master (and replicas)" built
 * from a CLUSTER SLOTS reply parsed by hiredis, and the parsing of the
 * `-MOVED <slot> <host>:<port>` / `-ASK ...` errors a node answers for a key it
 * does not serve. The gateway bus and the publishers use these to send each
 * channel's SSUBSCRIBE / SPUBLISH / history script to the node owning its slot.
 *
 * Herald's layout (HISTORY.md): Redis channel R, key `{R}:history` and key
 * `{R}:meta` share one slot, because the hash tag of both keys is R itself and a
 * channel name has no braces (the prefix must not contain `{` or `}`). */
#ifndef HERALD_CLUSTER_SLOTS_H
#define HERALD_CLUSTER_SLOTS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#define CLUSTER_SLOTS    16384
#define CLUSTER_HOST_MAX 256 /* longest host name or address we keep, with its NUL */

/* The slot of a key or a sharded channel (0..16383). When the key contains a
 * `{` followed later by a `}` with at least one byte between them, only the bytes
 * between the first `{` and the first `}` after it are hashed; otherwise (no
 * brace pair, or `{}` first) the whole key is. */
unsigned cluster_key_slot(const char *key, size_t len);

/* The CRC16 (XMODEM: poly 0x1021, init 0) Redis Cluster uses. */
unsigned cluster_crc16(const char *buf, size_t len);

struct cluster_node {
    char host[CLUSTER_HOST_MAX]; /* as the cluster announces it; never empty in a map */
    int port;
    char id[41]; /* the node's 40-hex-digit id, "" when the reply did not carry one */
};

struct cluster_slot_range {
    int start, end; /* inclusive */
    int master;     /* index into map->nodes of the master */
    int *replicas;  /* indexes into map->nodes; replica_count of them */
    size_t replica_count;
};

/* Every node is listed once in nodes (masters first, in the order the reply
 * names them), so "one link per master" is one link per index below
 * master_count. owner[slot] is the range serving slot, or -1. */
struct cluster_slot_map {
    struct cluster_slot_range *ranges;
    size_t range_count;
    struct cluster_node *nodes;
    size_t node_count;
    size_t master_count;  /* nodes[0 .. master_count-1] are masters */
    size_t slots_covered; /* how many of the 16384 slots have an owner */
    short owner[CLUSTER_SLOTS];
};

/* Builds a map from a CLUSTER SLOTS reply. A node announced with an empty host
 * (or "?", Redis' "unknown endpoint") gets default_host, the address the reply
 * came from. Returns the map (caller frees with cluster_slot_map_free) or NULL
 * with a reason in err: not an array of [start, end, master, replicas...], a
 * slot out of range or start > end, overlapping ranges, a port out of range,
 * a host too long, out of memory. An empty reply gives a map covering nothing. */
struct cluster_slot_map *cluster_slot_map_from_reply(const redisReply *reply,
                                                     const char *default_host, char *err,
                                                     size_t err_size);
void cluster_slot_map_free(struct cluster_slot_map *map);

/* The range serving slot, or NULL when no master serves it (or slot is out of range). */
const struct cluster_slot_range *cluster_slot_map_lookup(const struct cluster_slot_map *map,
                                                         unsigned slot);

/* The master serving the slot of key, or NULL. Borrowed from the map. */
const struct cluster_node *cluster_slot_map_master_for_key(const struct cluster_slot_map *map,
                                                           const char *key, size_t len);

/* Index in map->nodes of the node host:port, or -1. */
int cluster_slot_map_find_node(const struct cluster_slot_map *map, const char *host, int port);

enum cluster_redirect_kind {
    CLUSTER_REDIRECT_NONE = 0,
    CLUSTER_REDIRECT_MOVED,
    CLUSTER_REDIRECT_ASK
};

struct cluster_redirect {
    enum cluster_redirect_kind kind;
    unsigned slot;
    char host[CLUSTER_HOST_MAX]; /* "" when the node announced no endpoint (`MOVED 1 :6380`):
                                    use the host of the node that answered */
    int port;
};

/* Parses an error reply's text ("MOVED 3999 127.0.0.1:6381", "ASK 3999 [::1]:6381"
 * or "ASK 3999 ::1:6381": the port follows the last colon). Returns
 * CLUSTER_REDIRECT_MOVED or _ASK with *out filled, or CLUSTER_REDIRECT_NONE
 * (and *out cleared) for any other error or a malformed redirect. */
enum cluster_redirect_kind cluster_redirect_parse(const char *err, size_t len,
                                                  struct cluster_redirect *out);

#endif
