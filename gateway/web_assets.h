/* web_assets.h -- the browser files (dashboard page, herald.js, herald.d.ts)
 * compiled into the gateway by web/embed.py, so nothing else needs hosting. */
#ifndef HERALD_WEB_ASSETS_H
#define HERALD_WEB_ASSETS_H

#include <stddef.h>

struct web_asset {
    const char *path; /* "/", "/herald.js", ... */
    const char *content_type;
    const unsigned char *data;
    size_t len;
    /* For an HTML page, the CSP sources ('sha256-...' separated by spaces) of
     * its inline <script> and <style> elements; NULL for other files. */
    const char *inline_scripts;
    const char *inline_styles;
};

/* The asset served at path[0..len), or NULL. */
const struct web_asset *web_asset_find(const char *path, size_t len);

#endif
