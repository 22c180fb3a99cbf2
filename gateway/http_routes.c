/* http_routes.c -- health and metrics endpoints, and the embedded browser files. */
#include "http_routes.h"

#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "stats.h"
#include "web_assets.h"
#include "worker.h"

static bool path_is(const struct http_request *req, const char *path) {
    return req->path.len == strlen(path) && memcmp(req->path.ptr, path, req->path.len) == 0;
}

static void respond(struct http_response *resp, int status, const char *content_type,
                    const char *body) {
    resp->body = body;
    resp->body_len = strlen(body);
    int n = http_build_head(resp->head, sizeof resp->head, status, content_type, resp->body_len);
    resp->head_len = n > 0 ? (size_t)n : 0;
}

int http_routes_serve(struct worker *w, const struct http_request *req,
                      struct http_response *resp) {
    memset(resp, 0, sizeof *resp);
    if (path_is(req, "/healthz")) {
        respond(resp, 200, "text/plain; charset=utf-8", "ok\n");
        return 0;
    }
    if (path_is(req, "/readyz")) {
        if (w->draining)
            respond(resp, 503, "text/plain; charset=utf-8", "draining\n");
        else if (!bus_is_up(w->bus))
            respond(resp, 503, "text/plain; charset=utf-8", "redis unavailable\n");
        else
            respond(resp, 200, "text/plain; charset=utf-8", "ready\n");
        return 0;
    }
    const struct web_asset *asset = web_asset_find(req->path.ptr, req->path.len);
    if (asset) {
        resp->body = (const char *)asset->data;
        resp->body_len = asset->len;
        int n =
            http_build_head(resp->head, sizeof resp->head, 200, asset->content_type, asset->len);
        resp->head_len = n > 0 ? (size_t)n : 0;
        return 0;
    }
    if (path_is(req, "/metrics")) {
        size_t len;
        resp->owned = stats_metrics_text(w, &len);
        if (!resp->owned) {
            respond(resp, 503, "text/plain; charset=utf-8", "out of memory\n");
            return 0;
        }
        respond(resp, 200, "text/plain; version=0.0.4; charset=utf-8", resp->owned);
        return 0;
    }
    return -1;
}

void http_response_free(struct http_response *resp) {
    free(resp->owned);
    resp->owned = NULL;
}
