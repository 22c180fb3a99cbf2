/* http_routes.c -- health and metrics endpoints, and the embedded browser files.
 * /metrics is served on the operator listener only. */
#include "http_routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "stats.h"
#include "web_assets.h"
#include "worker.h"

/* The dashboard's policy: scripts from the gateway itself (herald.js) and the
 * page's inline script and style by hash (web/embed.py computes them from the
 * page as built), WebSocket and fetches to its own origin only, never framed
 * (clickjacking of a page holding a token). No Referer: the page's URL may
 * carry ?token= until the page removes it. */
#define PAGE_HEADERS                                                                               \
    "Content-Security-Policy: default-src 'none'; script-src 'self' %s; style-src %s; "            \
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "                     \
    "frame-ancestors 'none'\r\n"                                                                   \
    "Referrer-Policy: no-referrer\r\n"

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

int http_routes_serve(struct worker *w, const struct http_request *req, bool admin,
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
    if (path_is(req, "/metrics") && !admin) {
        respond(resp, 404, "text/plain; charset=utf-8", "not found\n");
        return 0;
    }
    const struct web_asset *asset = admin ? NULL : web_asset_find(req->path.ptr, req->path.len);
    if (asset) {
        char page_headers[sizeof resp->head];
        const char *extra = NULL;
        if (asset->inline_scripts && asset->inline_styles) {
            int n = snprintf(page_headers, sizeof page_headers, PAGE_HEADERS, asset->inline_scripts,
                             asset->inline_styles);
            if (n < 0 || (size_t)n >= sizeof page_headers) return -1;
            extra = page_headers;
        }
        resp->body = (const char *)asset->data;
        resp->body_len = asset->len;
        int n = http_build_head_with(resp->head, sizeof resp->head, 200, asset->content_type,
                                     asset->len, extra);
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
