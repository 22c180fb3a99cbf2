/* cluster_slots.c -- Redis Cluster key slots, the slot map, MOVED/ASK redirects. */
#include "cluster_slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned cluster_crc16(const char *buf, size_t len) {
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)buf[i] << 8;
        for (int bit = 0; bit < 8; bit++) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        crc &= 0xffff;
    }
    return crc;
}

unsigned cluster_key_slot(const char *key, size_t len) {
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t start = (size_t)(open - key) + 1;
        const char *close = memchr(key + start, '}', len - start);
        /* "{}" hashes the whole key, as does a "{" never closed. */
        if (close && close != key + start)
            return cluster_crc16(key + start, (size_t)(close - (key + start))) &
                   (CLUSTER_SLOTS - 1);
    }
    return cluster_crc16(key, len) & (CLUSTER_SLOTS - 1);
}

static void set_err(char *err, size_t err_size, const char *msg) {
    if (err && err_size) snprintf(err, err_size, "%s", msg);
}

/* Reads [host, port, id?, ...] into *node; 0 or -1 with a reason. */
static int parse_node(const redisReply *r, const char *default_host, struct cluster_node *node,
                      char *err, size_t err_size) {
    memset(node, 0, sizeof(*node));
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER) {
        set_err(err, err_size, "CLUSTER SLOTS: a node is not [host, port, ...]");
        return -1;
    }
    const redisReply *host = r->element[0];
    const char *h = host->str;
    size_t hlen = host->len;
    if (hlen == 0 || (hlen == 1 && h[0] == '?')) {
        h = default_host ? default_host : "";
        hlen = strlen(h);
    }
    if (hlen == 0 || hlen >= sizeof(node->host) || memchr(h, '\0', hlen)) {
        set_err(err, err_size, "CLUSTER SLOTS: a node's host is empty or too long");
        return -1;
    }
    memcpy(node->host, h, hlen);
    node->host[hlen] = '\0';
    long long port = r->element[1]->integer;
    if (port < 1 || port > 65535) {
        set_err(err, err_size, "CLUSTER SLOTS: a node's port is out of range");
        return -1;
    }
    node->port = (int)port;
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_STRING &&
        r->element[2]->len < sizeof(node->id)) {
        memcpy(node->id, r->element[2]->str, r->element[2]->len);
        node->id[r->element[2]->len] = '\0';
    }
    return 0;
}

int cluster_slot_map_find_node(const struct cluster_slot_map *map, const char *host, int port) {
    for (size_t i = 0; i < map->node_count; i++)
        if (map->nodes[i].port == port && strcmp(map->nodes[i].host, host) == 0) return (int)i;
    return -1;
}

/* Index of node in map->nodes, appending it when new (capacity is enough by construction). */
static int intern_node(struct cluster_slot_map *map, const struct cluster_node *node) {
    int i = cluster_slot_map_find_node(map, node->host, node->port);
    if (i >= 0) return i;
    map->nodes[map->node_count] = *node;
    return (int)map->node_count++;
}

static int check_entry(const redisReply *e, char *err, size_t err_size) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER) {
        set_err(err, err_size, "CLUSTER SLOTS: an entry is not [start, end, master, ...]");
        return -1;
    }
    long long start = e->element[0]->integer, end = e->element[1]->integer;
    if (start < 0 || end >= CLUSTER_SLOTS || start > end) {
        set_err(err, err_size, "CLUSTER SLOTS: a slot range is out of bounds");
        return -1;
    }
    return 0;
}

struct cluster_slot_map *cluster_slot_map_from_reply(const redisReply *reply,
                                                     const char *default_host, char *err,
                                                     size_t err_size) {
    if (!reply || reply->type != REDIS_REPLY_ARRAY) {
        set_err(err, err_size, "CLUSTER SLOTS: the reply is not an array");
        return NULL;
    }
    size_t node_capacity = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        if (check_entry(reply->element[i], err, err_size) < 0) return NULL;
        node_capacity += reply->element[i]->elements - 2;
    }
    struct cluster_slot_map *map = calloc(1, sizeof(*map));
    if (!map) goto oom;
    for (size_t s = 0; s < CLUSTER_SLOTS; s++) map->owner[s] = -1;
    map->ranges = calloc(reply->elements ? reply->elements : 1, sizeof(*map->ranges));
    map->nodes = calloc(node_capacity ? node_capacity : 1, sizeof(*map->nodes));
    if (!map->ranges || !map->nodes) goto oom;

    /* Masters first, so that nodes[0 .. master_count-1] are the masters. */
    for (size_t i = 0; i < reply->elements; i++) {
        struct cluster_node node;
        if (parse_node(reply->element[i]->element[2], default_host, &node, err, err_size) < 0)
            goto fail;
        map->ranges[i].master = intern_node(map, &node);
    }
    map->master_count = map->node_count;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        struct cluster_slot_range *range = &map->ranges[i];
        map->range_count = i + 1;
        range->start = (int)e->element[0]->integer;
        range->end = (int)e->element[1]->integer;
        if (e->elements > 3) {
            range->replicas = calloc(e->elements - 3, sizeof(*range->replicas));
            if (!range->replicas) goto oom;
        }
        for (size_t r = 3; r < e->elements; r++) {
            struct cluster_node node;
            if (parse_node(e->element[r], default_host, &node, err, err_size) < 0) goto fail;
            range->replicas[range->replica_count++] = intern_node(map, &node);
        }
        for (int s = range->start; s <= range->end; s++) {
            if (map->owner[s] != -1) {
                set_err(err, err_size, "CLUSTER SLOTS: slot ranges overlap");
                goto fail;
            }
            map->owner[s] = (short)i;
            map->slots_covered++;
        }
    }
    return map;
oom:
    set_err(err, err_size, "out of memory");
fail:
    cluster_slot_map_free(map);
    return NULL;
}

void cluster_slot_map_free(struct cluster_slot_map *map) {
    if (!map) return;
    for (size_t i = 0; i < map->range_count; i++) free(map->ranges[i].replicas);
    free(map->ranges);
    free(map->nodes);
    free(map);
}

const struct cluster_slot_range *cluster_slot_map_lookup(const struct cluster_slot_map *map,
                                                         unsigned slot) {
    if (slot >= CLUSTER_SLOTS || map->owner[slot] < 0) return NULL;
    return &map->ranges[map->owner[slot]];
}

const struct cluster_node *cluster_slot_map_master_for_key(const struct cluster_slot_map *map,
                                                           const char *key, size_t len) {
    const struct cluster_slot_range *range =
        cluster_slot_map_lookup(map, cluster_key_slot(key, len));
    return range ? &map->nodes[range->master] : NULL;
}

enum cluster_redirect_kind cluster_redirect_parse(const char *err, size_t len,
                                                  struct cluster_redirect *out) {
    memset(out, 0, sizeof(*out));
    enum cluster_redirect_kind kind;
    size_t pos;
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        kind = CLUSTER_REDIRECT_MOVED;
        pos = 6;
    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        kind = CLUSTER_REDIRECT_ASK;
        pos = 4;
    } else {
        return CLUSTER_REDIRECT_NONE;
    }
    unsigned slot = 0;
    size_t digits = 0;
    while (pos < len && err[pos] >= '0' && err[pos] <= '9' && digits < 6) {
        slot = slot * 10 + (unsigned)(err[pos++] - '0');
        digits++;
    }
    if (digits == 0 || slot >= CLUSTER_SLOTS || pos >= len || err[pos] != ' ') goto bad;
    pos++;
    /* host:port, the port after the last colon; an IPv6 host may be bracketed. */
    const char *addr = err + pos;
    size_t addr_len = len - pos;
    const char *colon = NULL;
    for (size_t i = 0; i < addr_len; i++)
        if (addr[i] == ':') colon = addr + i;
    if (!colon) goto bad;
    const char *host = addr;
    size_t host_len = (size_t)(colon - addr);
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
    }
    if (host_len >= sizeof(out->host) || memchr(host, ' ', host_len) ||
        memchr(host, '\0', host_len))
        goto bad;
    long port = 0;
    size_t port_digits = 0;
    for (const char *p = colon + 1; p < addr + addr_len; p++) {
        if (*p < '0' || *p > '9' || port_digits >= 5) goto bad;
        port = port * 10 + (*p - '0');
        port_digits++;
    }
    if (port_digits == 0 || port < 1 || port > 65535) goto bad;
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = (int)port;
    out->slot = slot;
    out->kind = kind;
    return kind;
bad:
    memset(out, 0, sizeof(*out));
    return CLUSTER_REDIRECT_NONE;
}
