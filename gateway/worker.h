/* worker.h -- one worker process: its event loop, listeners, connections,
 * subscription index, Redis bus and counters. Workers share nothing; the
 * supervisor (workers.c) forks them. */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "acl.h"
#include "config.h"
#include "jwt_auth.h"
#include "redis_url.h"

struct conn;
struct subs;
struct bus;

/* Per-worker counters; reported by stats and written to Redis. */
struct worker_stats {
    uint64_t connections_total;   /* accepted upgrades since start */
    uint64_t messages_in;         /* client messages (text frames) */
    uint64_t messages_out;        /* messages queued to clients, events included */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t events_received;     /* payloads from Redis for local channels */
    uint64_t events_delivered;    /* event frames queued to clients */
    uint64_t events_dropped;      /* invalid or oversized payloads */
    uint64_t slow_consumer_closes;
    uint64_t auth_failures;
    uint64_t handshake_failures;
};

struct worker {
    int index;               /* 0..workers-1 */
    const struct config *cfg;
    struct event_base *base;
    struct evconnlistener *plain_listener;
    struct evconnlistener *tls_listener;
    SSL_CTX *ssl_ctx;        /* NULL without TLS */
    struct jwt_auth auth;
    const struct acl_rules *rules;
    struct redis_url redis;
    struct subs *subs;
    struct bus *bus;
    struct conn *conns;      /* every live connection, a doubly linked list */
    unsigned conn_count;     /* connections past the upgrade */
    unsigned socket_count;   /* accepted sockets, in handshake included */
    struct event *tick;      /* the once-a-second sweep */
    struct event *sigterm, *sigint;
    struct event *drain_check;
    bool draining;
    double drain_deadline;   /* monotonic seconds */
    double started;          /* monotonic seconds at start */
    time_t started_wall;
    struct event *stats_timer;
    json_t *cluster;         /* last read of every live worker's stats (array), or NULL */
    json_t *health_backlog;  /* system:health messages waiting for Redis (array, bounded) */
    json_t *restored;        /* the redis_restored details, sent with the gaps */
    double metrics_published; /* monotonic seconds of the last system:metrics */
    unsigned resync_pending; /* resubscribes to confirm before clients get "gap" */
    bool restarted;          /* this worker replaces one that died */
    char gateway_id[128];
    char host[64];
    struct worker_stats stats;
};

/* Runs the worker w (prepared by the supervisor: cfg, auth, ssl_ctx, redis,
 * rules, gateway_id, host, index, restarted) until drained or stopped. Listener sockets are opened here
 * with SO_REUSEPORT so that every worker accepts on the same ports. Returns
 * the process exit status. */
int worker_run(struct worker *w);

/* Monotonic time in seconds. */
double worker_now(void);

/* Opens a listening socket (SO_REUSEADDR, SO_REUSEPORT, non-blocking) on
 * host:port; returns the fd or -1 with errno set. */
int worker_listen_socket(const char *host, int port);

#endif
