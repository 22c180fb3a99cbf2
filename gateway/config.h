/* config.h -- the gateway's options: one table drives the command line, the
 * HERALD_<OPTION> environment variables, the defaults and --help. */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* The largest --recovery-limit: a history read asks for two entries more, and
 * one reply must stay within REPLY_MAX_ELEMENTS (reply_arena.h). */
#define HERALD_RECOVERY_LIMIT_MAX 100000

struct config {
    const char *host;
    int port;     /* 0 disables the plain listener */
    int tls_port; /* used only when tls_cert and tls_key are given */
    const char *tls_cert;
    const char *tls_key;
    const char *redis_url;
    const char *redis_cluster; /* seed list; replaces redis_url when set */
    const char *channel_prefix;
    const char *jwt_alg;
    const char *jwt_secret;
    const char *jwt_key;
    const char *jwt_issuer;
    const char *jwt_audience;
    long max_message_size;       /* bytes, inclusive */
    long max_send_queue;         /* bytes queued to one client before it is closed 4009 */
    long max_subscriptions;      /* per connection */
    long max_channels;           /* distinct channels per worker */
    long max_event_size;         /* largest event payload from Redis, bytes */
    long recovery_limit;         /* most events one recovery returns (1..HERALD_RECOVERY_LIMIT_MAX) */
    const char *allowed_origins; /* comma-separated origins, or "*" */
    const char *log_level;
    int workers;                 /* 0 = number of CPUs */
    double drain_timeout;        /* seconds */
    const char *gateway_id;      /* defaults to <hostname>:<port> */
    double stats_interval;       /* seconds between writes to the stats hash */
    const char *jwt_secret_file; /* the secret, re-read on SIGHUP */
    const char *acl_file;        /* channel rules (JSON), re-read on SIGHUP */
    double ping_interval;        /* seconds between server pings */
    double idle_timeout;         /* seconds without any frame from the client */
    double write_timeout;        /* seconds of queued output making no progress */
    double handshake_timeout;    /* seconds to finish the TLS + HTTP upgrade */
    double rate_limit;           /* client messages per second (token bucket refill) */
    long rate_burst;             /* bucket size; also refusals in 10 s before close 4008 */
    long max_connections_per_ip; /* across the gateway's workers */
    long max_connections;        /* per worker */
    const char *trusted_proxies; /* peers whose X-Forwarded-For is honoured */
    const char *admin_listen;    /* HOST:PORT of the operator listener, or "off" */
    char admin_host[64];         /* parsed from admin_listen */
    int admin_port;              /* 0: no operator listener */
    long read_coalesce;          /* ms: under load, one Redis pub/sub read per this */
    long socket_send_buffer;     /* SO_SNDBUF of client sockets, bytes; 0: the kernel's */
    const char *api_key;         /* POST /api/publish key (unset: endpoint off) */
    const char *api_key_file;    /* the key from a file, re-read on SIGHUP */
    long api_max_body;           /* bytes of one /api/publish body */
};

/* Fills cfg from defaults, then HERALD_* variables, then argv. On a bad option
 * prints a message (or the usage for --help) and returns the exit status the
 * process should end with (2 for errors, 0 for --help); returns -1 to go on. */
int config_load(struct config *cfg, int argc, char **argv);

#endif
