/* http_routes.h -- the plain HTTP endpoints besides the WebSocket upgrade:
 * /healthz and /readyz (every listener), /metrics (the operator listener
 * only), and the embedded dashboard (/), /herald.js and /herald.d.ts (the
 * public ports). */
#ifndef HERALD_HTTP_ROUTES_H
#define HERALD_HTTP_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include "http_upgrade.h"

struct worker;

struct http_response {
    char head[1024];
    size_t head_len;
    const char *body; /* points into owned or static storage */
    size_t body_len;
    char *owned; /* freed by http_response_free */
};

/* Serves req when its path is an endpoint; returns 0 with *resp filled, or -1
 * when the path is not one of ours (the caller answers it as an upgrade, which
 * gives 404 for unknown paths). admin: the request came on the operator
 * listener, the only one that serves /metrics (the public ports answer it
 * 404). */
int http_routes_serve(struct worker *w, const struct http_request *req, bool admin,
                      struct http_response *resp);
void http_response_free(struct http_response *resp);

#endif
