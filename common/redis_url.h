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

#endif
