/* redis_url.h -- parsing redis:// URLs, shared by the gateway and the publishers. */
#ifndef HERALD_REDIS_URL_H
#define HERALD_REDIS_URL_H

#include <stddef.h>

/* redis://[[user]:password@]host[:port][/db]; defaults host 127.0.0.1, port 6379,
 * db 0. Strings are owned by the struct (redis_url_free). */
struct redis_url {
    char *host;
    int port;
    char *user;     /* NULL unless given */
    char *password; /* NULL unless given; %-decoded */
    int db;
};

/* Returns 0, or -1 with a human reason in err (and *out left empty). */
int redis_url_parse(const char *url, struct redis_url *out, char *err, size_t err_size);
void redis_url_free(struct redis_url *url);

/* The seed nodes of a Redis Cluster (--redis-cluster): a comma-separated list
 * whose items are HOST:PORT ("[v6]:PORT" for IPv6) or redis:// URLs
 * (redis://[[user]:password@]host[:port], no db: a cluster has only db 0).
 * Credentials given on any seed are the cluster's: every seed, and every node
 * the slot map names, is authenticated with them; two seeds with different
 * credentials are refused. Strings are owned by the struct (redis_cluster_free). */
struct redis_cluster {
    struct redis_url *seeds; /* count of them; each has the cluster's user/password */
    size_t count;
    const char *user;     /* borrowed from seeds[0]: NULL unless given */
    const char *password; /* borrowed from seeds[0]: NULL unless given */
};

#define REDIS_CLUSTER_MAX_SEEDS 64

/* Returns 0, or -1 with a reason in err (no password in it) and *out empty. */
int redis_cluster_parse(const char *list, struct redis_cluster *out, char *err, size_t err_size);
void redis_cluster_free(struct redis_cluster *cluster);

#endif
