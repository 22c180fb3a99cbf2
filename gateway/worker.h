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
#include <sys/types.h>
#include <time.h>

#include "acl.h"
#include "clock.h"
#include "config.h"
#include "jwt_auth.h"
#include "netaddr.h"
#include "publish_api.h"
#include "redis_url.h"
#include "wheel.h"

struct conn;
struct subs;
struct bus;
struct iplimit;
struct cluster_view;

#define STATS_LATENCY_BUCKETS 14

/* Per-worker counters; reported by stats and written to Redis. */
struct worker_stats {
    uint64_t connections_total; /* accepted upgrades since start (streams included) */
    uint64_t sse_streams_total; /* of which server-sent event streams */
    uint64_t api_requests;      /* POST /api/publish requests answered 200 */
    uint64_t api_events;        /* events they published */
    uint64_t api_failures;      /* answered with an error status */
    uint64_t messages_in;       /* client messages (text frames) */
    uint64_t messages_out;      /* messages queued to clients, events included */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t events_received;  /* payloads from Redis for local channels */
    uint64_t events_delivered; /* event frames queued to clients */
    uint64_t events_dropped;   /* invalid or oversized payloads */
    uint64_t slow_consumer_closes;
    uint64_t auth_failures;
    uint64_t auth_failures_by_reason[16]; /* indexed by -jwt_auth_result */
    uint64_t handshake_failures;
    uint64_t rate_limited;      /* client messages refused by the rate limit */
    uint64_t rate_limit_closes; /* connections closed 4008 */
    uint64_t idle_closes;
    uint64_t write_timeouts;
    uint64_t latency_buckets[STATS_LATENCY_BUCKETS]; /* delivery latency histogram */
    uint64_t latency_count;
    double latency_sum; /* seconds */
};

struct worker {
    int index; /* 0..workers-1 */
    const struct config *cfg;
    struct event_base *base;
    struct evconnlistener *plain_listener;
    struct evconnlistener *tls_listener;
    struct evconnlistener *admin_listener; /* --admin-listen, NULL when off */
    SSL_CTX *ssl_ctx;                      /* NULL without TLS */
    struct jwt_auth auth;
    const struct acl_rules *rules;
    struct acl_rules *owned_rules;  /* rules loaded from --acl-file (else NULL) */
    struct iplimit *iplimit;        /* shared with the other workers */
    struct publish_api_key api_key; /* for POST /api/publish */
    struct netaddr_cidr *trusted;   /* --trusted-proxies */
    size_t trusted_count;
    struct wheel wheel; /* connection timers */
    struct redis_url redis;
    struct redis_cluster redis_cluster; /* seeds (count 0: a single Redis, redis) */
    struct subs *subs;
    struct bus *bus;
    struct conn *conns;    /* every live connection, a doubly linked list */
    unsigned conn_count;   /* connections past the upgrade */
    unsigned socket_count; /* accepted sockets, in handshake included */
    struct event *tick;    /* the once-a-second sweep */
    struct event *sigterm, *sigint;
    struct event *drain_check;
    struct event *sighup;
    struct event *resume_accept; /* re-enables the listeners after an accept error */
    unsigned drain_batch;        /* connections to close per drain step */
    bool draining;
    double drain_deadline;             /* monotonic seconds */
    double started;                    /* monotonic seconds at start */
    struct cluster_view *cluster_view; /* the cluster's figures in Redis (cluster_view.c) */
    struct event *metrics_timer;       /* system:metrics (system_channels.c) */
    json_t *health_backlog;  /* system:health messages waiting for Redis (array, bounded) */
    json_t *restored;        /* the redis_restored details, sent with the gaps */
    unsigned resync_pending; /* resubscribes to confirm before clients get "gap" */
    bool restarted;          /* this worker replaces one that died */
    pid_t supervisor;        /* the parent; another parent means it died */
    char gateway_id[128];
    char host[64];
    struct worker_stats stats;
};

/* Runs the worker w (prepared by the supervisor: cfg, auth, ssl_ctx, redis,
 * rules, gateway_id, host, index, restarted) until drained or stopped. Listener sockets are opened
 * here with SO_REUSEPORT so that every worker accepts on the same ports. Returns the process exit
 * status. */
int worker_run(struct worker *w);

/* Loads the reloadable settings (JWT secret or key, channel rules) from cfg
 * and its files into *auth and *rules (NULL rules: the defaults). Returns 0, or
 * -1 with a reason in err and nothing allocated. */
int worker_load_config(const struct config *cfg, struct jwt_auth *auth, struct acl_rules **rules,
                       char *err, size_t err_size);

/* Opens a listening socket (SO_REUSEADDR, non-blocking; SO_REUSEPORT when
 * reuse_port, so every worker can listen on the port) on host:port; returns the
 * fd or -1 with errno set. */
int worker_listen_socket(const char *host, int port, bool reuse_port);

#endif
