/* herald_pub.h -- publishing Herald events from a C service.
 *
 * A publisher sends the event's data (a JSON text) to the Redis channel
 * <prefix><channel>; every gateway with a subscriber wraps it into an "event"
 * message. This library validates the channel name and the JSON before anything
 * reaches Redis, so a bad event is refused here with a clear error instead of
 * being dropped silently by the gateways.
 *
 *     herald_pub *p = herald_pub_connect("redis://127.0.0.1:6379", NULL, err, sizeof err);
 *     if (!p) { fprintf(stderr, "%s\n", err); exit(1); }
 *     long receivers;
 *     if (herald_pub_publish(p, "apps:created", "{\"id\":\"a1\"}", &receivers) != HERALD_PUB_OK)
 *         fprintf(stderr, "%s\n", herald_pub_last_error(p));
 *     herald_pub_close(p);
 *
 * Blocking (hiredis synchronous API); one herald_pub per thread. */
#ifndef HERALD_PUB_H
#define HERALD_PUB_H

#include <stddef.h>

#define HERALD_PUB_DEFAULT_URL    "redis://127.0.0.1:6379"
#define HERALD_PUB_DEFAULT_PREFIX "herald:"

typedef struct herald_pub herald_pub;

enum herald_pub_status {
    HERALD_PUB_OK = 0,
    HERALD_PUB_BAD_CHANNEL = -1, /* empty, > 128 bytes, or outside [A-Za-z0-9_.:-] */
    HERALD_PUB_BAD_JSON = -2,    /* data is not one valid JSON value */
    HERALD_PUB_TOO_BIG = -3,     /* data longer than the size limit */
    HERALD_PUB_REDIS = -4,       /* connection or command failure (reconnects on next call) */
};

/* Connects (AUTH/SELECT as the URL says). prefix NULL means "herald:".
 * Returns NULL with a reason in err on failure. */
herald_pub *herald_pub_connect(const char *url, const char *prefix, char *err, size_t err_size);

/* Publishes json (NUL-terminated) on channel. *receivers (if not NULL) gets the
 * number of Redis subscribers (gateway workers) that received it. */
enum herald_pub_status herald_pub_publish(herald_pub *p, const char *channel, const char *json,
                                          long *receivers);

/* Sets the largest accepted data size in bytes (default 65536). */
void herald_pub_set_max_size(herald_pub *p, size_t max_size);

/* The last error as a sentence (static until the next call on p). */
const char *herald_pub_last_error(const herald_pub *p);

void herald_pub_close(herald_pub *p);

#endif
