/* main.c -- herald-gateway: read options, check everything that can be
 * checked before serving (keys, certificates, Redis URL, ports), then hand
 * over to the supervisor. A bad setting exits with status 2 and a clear
 * message; the gateway never starts half-configured. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acl.h"
#include "config.h"
#include "iplimit.h"
#include "jwt_auth.h"
#include "log.h"
#include "netaddr.h"
#include "publish_api.h"
#include "redis_url.h"
#include "worker.h"
#include "workers.h"

static SSL_CTX *load_tls(const struct config *cfg) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* small idle connections */
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        fprintf(stderr, "herald-gateway: cannot load --tls-cert %s: %s\n", cfg->tls_cert,
                ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "herald-gateway: cannot load --tls-key %s: %s\n", cfg->tls_key,
                ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Binds each port once, without SO_REUSEPORT, and lets go: a port in use (by
 * anything, another gateway included) is reported now instead of being shared
 * silently with that other listener. */
static int check_port(const char *host, int port) {
    int fd = worker_listen_socket(host, port, false);
    if (fd < 0) {
        fprintf(stderr, "herald-gateway: cannot listen on %s:%d: %s\n", host, port,
                strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    /* Stop and reload signals wait until someone handles them: the supervisor
     * takes them with sigtimedwait, each worker once its event loop has its
     * handlers (the forked workers inherit this mask). */
    sigset_t startup;
    sigemptyset(&startup);
    sigaddset(&startup, SIGHUP);
    sigaddset(&startup, SIGTERM);
    sigaddset(&startup, SIGINT);
    sigprocmask(SIG_BLOCK, &startup, NULL);

    struct config cfg;
    int rc = config_load(&cfg, argc, argv);
    if (rc >= 0) return rc;

    enum log_level level;
    if (log_level_parse(cfg.log_level, &level) != 0) {
        fprintf(stderr, "herald-gateway: --log-level must be debug, info, warn or error\n");
        return 2;
    }
    log_set_level(level);

    static struct worker tmpl;
    char err[256];
    tmpl.cfg = &cfg;
    tmpl.rules = acl_default_rules();
    if (worker_load_config(&cfg, &tmpl.auth, &tmpl.owned_rules, err, sizeof err) != 0) {
        fprintf(stderr, "herald-gateway: %s\n", err);
        return 2;
    }
    if (tmpl.owned_rules) tmpl.rules = tmpl.owned_rules;
    if (publish_api_load_key(&cfg, &tmpl.api_key, err, sizeof err) != 0) {
        fprintf(stderr, "herald-gateway: %s\n", err);
        return 2;
    }
    if (netaddr_parse_list(cfg.trusted_proxies, &tmpl.trusted, &tmpl.trusted_count, err,
                           sizeof err) != 0) {
        fprintf(stderr, "herald-gateway: --trusted-proxies: %s\n", err);
        return 2;
    }
    if (cfg.redis_cluster) {
        if (redis_cluster_parse(cfg.redis_cluster, &tmpl.redis_cluster, err, sizeof err) != 0) {
            fprintf(stderr, "herald-gateway: --redis-cluster: %s\n", err);
            return 2;
        }
    } else if (redis_url_parse(cfg.redis_url, &tmpl.redis, err, sizeof err) != 0) {
        fprintf(stderr, "herald-gateway: --redis: %s\n", err);
        return 2;
    }
    if (cfg.tls_cert && !(tmpl.ssl_ctx = load_tls(&cfg))) return 2;
    if (cfg.port && check_port(cfg.host, cfg.port) != 0) return 2;
    if (tmpl.ssl_ctx && check_port(cfg.host, cfg.tls_port) != 0) return 2;
    if (cfg.admin_port && check_port(cfg.admin_host, cfg.admin_port) != 0) return 2;

    if (gethostname(tmpl.host, sizeof tmpl.host) != 0) snprintf(tmpl.host, sizeof tmpl.host, "?");
    tmpl.host[sizeof tmpl.host - 1] = '\0';
    if (cfg.gateway_id)
        snprintf(tmpl.gateway_id, sizeof tmpl.gateway_id, "%s", cfg.gateway_id);
    else
        snprintf(tmpl.gateway_id, sizeof tmpl.gateway_id, "%s:%d", tmpl.host,
                 cfg.port ? cfg.port : cfg.tls_port);

    int workers = cfg.workers;
    if (workers <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        workers = cpus > 0 ? (int)cpus : 1;
    }
    if (!(tmpl.iplimit = iplimit_create(workers))) {
        fprintf(stderr, "herald-gateway: cannot map the connection counters: %s\n",
                strerror(errno));
        return 1;
    }
    if (cfg.allowed_origins && strchr(cfg.allowed_origins, '*'))
        log_warn("event=config_warning msg=\"--allowed-origins * accepts every browser origin\"");
    signal(SIGPIPE, SIG_IGN);
    if (tmpl.redis_cluster.count)
        log_info("event=start gateway=%s workers=%d port=%d tls_port=%d admin=%s:%d "
                 "redis_cluster_seeds=%zu first_seed=%s:%d",
                 log_q(tmpl.gateway_id), workers, cfg.port, tmpl.ssl_ctx ? cfg.tls_port : 0,
                 cfg.admin_port ? log_q(cfg.admin_host) : "off", cfg.admin_port,
                 tmpl.redis_cluster.count, log_q(tmpl.redis_cluster.seeds[0].host),
                 tmpl.redis_cluster.seeds[0].port);
    else
        log_info("event=start gateway=%s workers=%d port=%d tls_port=%d admin=%s:%d redis=%s:%d",
                 log_q(tmpl.gateway_id), workers, cfg.port, tmpl.ssl_ctx ? cfg.tls_port : 0,
                 cfg.admin_port ? log_q(cfg.admin_host) : "off", cfg.admin_port,
                 log_q(tmpl.redis.host), tmpl.redis.port);
    rc = workers_supervise(&tmpl, workers);
    jwt_auth_free(&tmpl.auth);
    acl_rules_free(tmpl.owned_rules);
    free(tmpl.trusted);
    redis_url_free(&tmpl.redis);
    redis_cluster_free(&tmpl.redis_cluster);
    SSL_CTX_free(tmpl.ssl_ctx);
    return rc;
}
