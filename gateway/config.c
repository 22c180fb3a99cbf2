/* config.c -- option table, environment and command-line parsing. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply_arena.h"

_Static_assert(HERALD_RECOVERY_LIMIT_MAX + 2 <= REPLY_MAX_ELEMENTS,
               "a history read of the largest recovery must fit in one reply");

enum option_type { OPT_STRING, OPT_INT, OPT_LONG, OPT_SIZE, OPT_DOUBLE };

struct option_spec {
    const char *name; /* without the leading dashes */
    enum option_type type;
    size_t offset;
    const char *default_value; /* NULL: unset */
    const char *help;
};

#define FIELD(f) offsetof(struct config, f)

static const struct option_spec options[] = {
    {"host", OPT_STRING, FIELD(host), "0.0.0.0", "address to listen on"},
    {"port", OPT_INT, FIELD(port), "8888", "plain ws:// port (0 disables)"},
    {"tls-port", OPT_INT, FIELD(tls_port), "8443", "wss:// port (needs --tls-cert and --tls-key)"},
    {"tls-cert", OPT_STRING, FIELD(tls_cert), NULL, "PEM certificate chain for wss://"},
    {"tls-key", OPT_STRING, FIELD(tls_key), NULL, "PEM private key for wss://"},
    {"redis", OPT_STRING, FIELD(redis_url), "redis://127.0.0.1:6379",
     "redis://[[user]:password@]host[:port][/db]"},
    {"redis-cluster", OPT_STRING, FIELD(redis_cluster), NULL,
     "Redis Cluster seeds HOST:PORT[,HOST:PORT...] or redis://[[user]:password@]host:port "
     "items (instead of --redis)"},
    {"channel-prefix", OPT_STRING, FIELD(channel_prefix), "herald:", "Redis channel prefix"},
    {"jwt-alg", OPT_STRING, FIELD(jwt_alg), "HS256", "HS256|HS384|HS512|RS256|...|ES512"},
    {"jwt-secret", OPT_STRING, FIELD(jwt_secret), NULL, "HMAC secret (HS*)"},
    {"jwt-key", OPT_STRING, FIELD(jwt_key), NULL, "PEM public key file (RS*, ES*)"},
    {"jwt-issuer", OPT_STRING, FIELD(jwt_issuer), NULL, "required iss claim"},
    {"jwt-audience", OPT_STRING, FIELD(jwt_audience), NULL, "required aud claim"},
    {"max-message-size", OPT_LONG, FIELD(max_message_size), "65536",
     "largest client message, bytes (inclusive)"},
    {"max-event-size", OPT_LONG, FIELD(max_event_size), "65536",
     "largest event payload from Redis, bytes (inclusive)"},
    {"max-send-queue", OPT_LONG, FIELD(max_send_queue), "1048576",
     "bytes queued to one client before it is closed 4009"},
    {"max-subscriptions", OPT_LONG, FIELD(max_subscriptions), "256", "per connection"},
    {"max-channels", OPT_LONG, FIELD(max_channels), "50000", "distinct channels per worker"},
    {"recovery-limit", OPT_LONG, FIELD(recovery_limit), "2000",
     "most missed events one recovery returns (more: recovered false and a gap)"},
    {"allowed-origins", OPT_STRING, FIELD(allowed_origins), NULL,
     "comma-separated browser origins allowed besides the gateway's own host; * for any"},
    {"log-level", OPT_STRING, FIELD(log_level), "info", "debug|info|warn|error"},
    {"workers", OPT_INT, FIELD(workers), "0", "worker processes (0: one per CPU)"},
    {"drain-timeout", OPT_DOUBLE, FIELD(drain_timeout), "10", "seconds to drain on SIGTERM"},
    {"gateway-id", OPT_STRING, FIELD(gateway_id), NULL, "name in stats (default host:port)"},
    {"stats-interval", OPT_DOUBLE, FIELD(stats_interval), "2",
     "seconds between cluster stats refreshes"},
    {"jwt-secret-file", OPT_STRING, FIELD(jwt_secret_file), NULL,
     "file holding the HMAC secret (re-read on SIGHUP)"},
    {"acl-file", OPT_STRING, FIELD(acl_file), NULL, "channel rules, JSON (re-read on SIGHUP)"},
    {"ping-interval", OPT_DOUBLE, FIELD(ping_interval), "25", "seconds between server pings"},
    {"idle-timeout", OPT_DOUBLE, FIELD(idle_timeout), "60",
     "close a client silent this many seconds (1001)"},
    {"write-timeout", OPT_DOUBLE, FIELD(write_timeout), "10",
     "drop a client whose output makes no progress this many seconds"},
    {"handshake-timeout", OPT_DOUBLE, FIELD(handshake_timeout), "10",
     "seconds to complete TLS and the HTTP upgrade"},
    {"rate-limit", OPT_DOUBLE, FIELD(rate_limit), "50", "client messages per second"},
    {"rate-burst", OPT_LONG, FIELD(rate_burst), "100",
     "burst of client messages; more refusals than this in 10 s closes 4008"},
    {"max-connections-per-ip", OPT_LONG, FIELD(max_connections_per_ip), "1000",
     "per client address, across workers (HTTP 429)"},
    {"max-connections", OPT_LONG, FIELD(max_connections), "100000", "per worker (HTTP 503)"},
    {"trusted-proxies", OPT_STRING, FIELD(trusted_proxies), NULL,
     "comma-separated IPs/CIDRs whose X-Forwarded-For is honoured"},
    {"admin-listen", OPT_STRING, FIELD(admin_listen), "127.0.0.1:9888",
     "HOST:PORT of the operator listener (/metrics, /healthz, /readyz); off disables"},
    {"read-coalesce", OPT_SIZE, FIELD(read_coalesce), "0",
     "under load, read Redis pub/sub at most once per this many ms (0: at once)"},
    {"socket-send-buffer", OPT_SIZE, FIELD(socket_send_buffer), "65536",
     "kernel send buffer per client socket, bytes (0: the kernel's default)"},
    {"api-key", OPT_STRING, FIELD(api_key), NULL,
     "key for POST /api/publish (Authorization: apikey KEY); unset: endpoint off"},
    {"api-key-file", OPT_STRING, FIELD(api_key_file), NULL,
     "file holding the /api/publish key (re-read on SIGHUP)"},
    {"api-max-body", OPT_LONG, FIELD(api_max_body), "1048576",
     "largest /api/publish body, bytes (larger: 413)"},
};

#define OPTION_COUNT (sizeof options / sizeof options[0])

static void usage(FILE *out) {
    fprintf(out, "usage: herald-gateway [options]\n"
                 "Every option can also be set as HERALD_<OPTION> (e.g. HERALD_JWT_SECRET).\n\n");
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        fprintf(out, "  --%-20s %s", options[i].name, options[i].help);
        if (options[i].default_value) fprintf(out, " [%s]", options[i].default_value);
        fputc('\n', out);
    }
}

static int set_value(struct config *cfg, const struct option_spec *o, const char *value,
                     const char *source) {
    char *end;
    void *field = (char *)cfg + o->offset;
    errno = 0;
    switch (o->type) {
        case OPT_STRING: *(const char **)field = value; return 0;
        case OPT_INT: {
            long v = strtol(value, &end, 10);
            if (errno || *end || end == value || v < 0 || v > 65535 * 16) break;
            *(int *)field = (int)v;
            return 0;
        }
        case OPT_LONG: {
            long v = strtol(value, &end, 10);
            if (errno || *end || end == value || v <= 0) break;
            *(long *)field = v;
            return 0;
        }
        case OPT_SIZE: { /* a count of bytes or milliseconds: like OPT_LONG, 0 allowed */
            long v = strtol(value, &end, 10);
            if (errno || *end || end == value || v < 0 || v > INT_MAX) break;
            *(long *)field = v;
            return 0;
        }
        case OPT_DOUBLE: {
            double v = strtod(value, &end);
            if (errno || *end || end == value || v < 0) break;
            *(double *)field = v;
            return 0;
        }
    }
    fprintf(stderr, "herald-gateway: invalid value '%s' for --%s (from %s)\n", value, o->name,
            source);
    return -1;
}

static const struct option_spec *find_option(const char *name, size_t len) {
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    }
    return NULL;
}

/* "off" (or empty): no listener; else HOST:PORT or [IPv6]:PORT. */
static int parse_admin_listen(struct config *cfg) {
    const char *v = cfg->admin_listen;
    cfg->admin_port = 0;
    if (!v || !*v || strcmp(v, "off") == 0) return 0;
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) return -1;
    const char *host = v;
    size_t host_len = (size_t)(colon - v);
    if (host[0] == '[') {
        if (host_len < 3 || host[host_len - 1] != ']') return -1;
        host++;
        host_len -= 2;
    }
    if (host_len >= sizeof cfg->admin_host) return -1;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port < 1 || port > 65535) return -1;
    memcpy(cfg->admin_host, host, host_len);
    cfg->admin_host[host_len] = '\0';
    cfg->admin_port = (int)port;
    return 0;
}

int config_load(struct config *cfg, int argc, char **argv) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        if (options[i].default_value &&
            set_value(cfg, &options[i], options[i].default_value, "default") != 0)
            return 2;
    }
    for (size_t i = 0; i < OPTION_COUNT; i++) {
        char env[64] = "HERALD_";
        size_t n = strlen(env);
        for (const char *p = options[i].name; *p && n < sizeof env - 1; p++)
            env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[n] = '\0';
        const char *value = getenv(env);
        if (value && set_value(cfg, &options[i], value, env) != 0) return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "herald-gateway: unexpected argument '%s' (see --help)\n", arg);
            return 2;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const struct option_spec *o = find_option(name, name_len);
        if (!o) {
            fprintf(stderr, "herald-gateway: unknown option '%s' (see --help)\n", arg);
            return 2;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "herald-gateway: option --%s needs a value\n", o->name);
                return 2;
            }
            value = argv[++i];
        }
        if (set_value(cfg, o, value, "command line") != 0) return 2;
    }
    const struct option_spec *redis = find_option("redis", 5);
    if (cfg->redis_cluster && cfg->redis_url != redis->default_value) {
        fprintf(stderr, "herald-gateway: give --redis or --redis-cluster, not both\n");
        return 2;
    }
    if (cfg->port > 65535 || cfg->tls_port > 65535) {
        fprintf(stderr, "herald-gateway: ports must be 0..65535\n");
        return 2;
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        fprintf(stderr, "herald-gateway: --tls-cert and --tls-key go together\n");
        return 2;
    }
    bool tls = cfg->tls_cert != NULL;
    if (cfg->port == 0 && !tls) {
        fprintf(stderr, "herald-gateway: no listener: --port is 0 and no TLS certificate given\n");
        return 2;
    }
    if (tls && cfg->tls_port == 0) {
        fprintf(stderr, "herald-gateway: --tls-port must not be 0 with a certificate\n");
        return 2;
    }
    if (cfg->workers > 256) {
        fprintf(stderr, "herald-gateway: --workers must be at most 256\n");
        return 2;
    }
    if (cfg->stats_interval <= 0) cfg->stats_interval = 2;
    if (parse_admin_listen(cfg) != 0) {
        fprintf(stderr, "herald-gateway: --admin-listen must be HOST:PORT, [IPv6]:PORT or off\n");
        return 2;
    }
    if (cfg->jwt_secret && cfg->jwt_secret_file) {
        fprintf(stderr, "herald-gateway: give --jwt-secret or --jwt-secret-file, not both\n");
        return 2;
    }
    if (cfg->recovery_limit > HERALD_RECOVERY_LIMIT_MAX) {
        fprintf(stderr, "herald-gateway: --recovery-limit must be 1..%d\n",
                HERALD_RECOVERY_LIMIT_MAX);
        return 2;
    }
    if (cfg->read_coalesce < 0 || cfg->read_coalesce > 100) {
        fprintf(stderr, "herald-gateway: --read-coalesce must be 0..100 (milliseconds)\n");
        return 2;
    }
    if (cfg->ping_interval <= 0 || cfg->idle_timeout <= 0 || cfg->write_timeout <= 0 ||
        cfg->handshake_timeout <= 0 || cfg->rate_limit <= 0) {
        fprintf(stderr, "herald-gateway: timeouts, intervals and --rate-limit must be > 0\n");
        return 2;
    }
    return -1;
}
