/* herald_pub.h -- publishing Herald events from a C service.
 *
 * A publisher sends the event's data (a JSON text) to the Redis channel
 * <prefix><channel>; every gateway with a subscriber wraps it into an "event"
 * message. By default the event is also appended to the channel's history
 * (README "History"): one server-side script appends it to the stream
 * {<prefix><channel>}:history and publishes "#<epoch> <offset> <data>", so the
 * event gets an offset that clients can recover from. herald_pub_set_history
 * turns that off (a plain PUBLISH, no offset) or changes the caps. This library validates the
 * channel name and the JSON before anything reaches Redis, so a bad event is refused here with a
 * clear error instead of being dropped silently by the gateways.
 *
 *     herald_pub *p = herald_pub_connect("redis://127.0.0.1:6379", NULL, err, sizeof err);
 *     if (!p) { fprintf(stderr, "%s\n", err); exit(1); }
 *     struct herald_pub_result r;
 *     if (herald_pub_publish_event(p, "apps:created", "{\"id\":\"a1\"}", &r) != HERALD_PUB_OK)
 *         fprintf(stderr, "%s\n", herald_pub_last_error(p));
 *     else
 *         printf("offset %s\n", r.offset);
 *     herald_pub_close(p);
 *
 * Blocking (hiredis synchronous API); one herald_pub per thread. */
#ifndef HERALD_PUB_H
#define HERALD_PUB_H

#include <stdbool.h>
#include <stddef.h>

struct acl_rules;

#define HERALD_PUB_DEFAULT_URL    "redis://127.0.0.1:6379"
#define HERALD_PUB_DEFAULT_PREFIX "herald:"
#define HERALD_PUB_HISTORY_SIZE   1000 /* entries per channel (approximate cap) */
#define HERALD_PUB_HISTORY_TTL    600  /* seconds: age cap and idle expiry */
#define HERALD_PUB_OFFSET_MAX     41   /* characters of an offset, "<ms>-<seq>" */
#define HERALD_PUB_EPOCH_MAX      32   /* characters of an epoch */

typedef struct herald_pub herald_pub;

enum herald_pub_status {
    HERALD_PUB_OK = 0,
    HERALD_PUB_BAD_CHANNEL = -1, /* empty, > 128 bytes, or outside [A-Za-z0-9_.:-] */
    HERALD_PUB_BAD_JSON = -2,    /* data is not one valid JSON value */
    HERALD_PUB_TOO_BIG = -3,     /* data longer than the size limit */
    HERALD_PUB_REDIS = -4,       /* connection or command failure (reconnects on next call) */
};

/* What a successful publish reports. offset and epoch are "" when the event
 * was published without history. */
struct herald_pub_result {
    long receivers;                         /* Redis subscribers (gateway workers) reached */
    char offset[HERALD_PUB_OFFSET_MAX + 1]; /* the event's offset in its channel's history */
    char epoch[HERALD_PUB_EPOCH_MAX + 1];   /* the history's epoch the offset belongs to */
};

/* Connects (AUTH/SELECT as the URL says). prefix NULL means "herald:"; it may
 * not contain braces (they would break the history keys' hash tag).
 * Returns NULL with a reason in err on failure. */
herald_pub *herald_pub_connect(const char *url, const char *prefix, char *err, size_t err_size);

/* The same on a Redis Cluster: seeds is a --redis-cluster list (HOST:PORT or
 * redis://[[user]:password@]host:port items, comma-separated; credentials on
 * any seed are used for every node). The slot map is read from a seed here;
 * each event then goes as SPUBLISH (or the history script ending in SPUBLISH)
 * to the master owning its channel's slot. A MOVED reply refreshes the map and
 * the event is sent to the node it names; an ASK is followed once, after
 * ASKING; a lost node refreshes the map and retries. At most
 * HERALD_PUB_MAX_REDIRECTS sends per event, then HERALD_PUB_REDIS. Returns NULL
 * with a reason in err ("invalid ..." for bad seeds or prefix). */
herald_pub *herald_pub_connect_cluster(const char *seeds, const char *prefix, char *err,
                                       size_t err_size);

#define HERALD_PUB_MAX_REDIRECTS 5

/* Publishes json (NUL-terminated) on channel, with history unless it is
 * turned off for the channel. *result (if not NULL) gets the receivers and
 * the offset. */
enum herald_pub_status herald_pub_publish_event(herald_pub *p, const char *channel,
                                                const char *json, struct herald_pub_result *result);

/* herald_pub_publish_event reporting only the number of receivers. */
enum herald_pub_status herald_pub_publish(herald_pub *p, const char *channel, const char *json,
                                          long *receivers);

/* History of every channel: enabled (default true), size in entries
 * (1..10,000,000, default 1000), ttl in seconds (1..31,536,000, default 600).
 * Returns 0, or -1 (nothing changed) when size or ttl is out of range. */
int herald_pub_set_history(herald_pub *p, bool enabled, unsigned long size, unsigned long ttl);

/* Per-namespace policies from a channel rules file (acl.h: "history" on a
 * rule): a rule's "history":false publishes without history, its size/ttl
 * replace the ones of herald_pub_set_history. rules is borrowed (NULL: none)
 * and must outlive p. History turned off by herald_pub_set_history stays off. */
void herald_pub_set_channel_rules(herald_pub *p, const struct acl_rules *rules);

/* Sets the largest accepted data size in bytes (default 65536). */
void herald_pub_set_max_size(herald_pub *p, size_t max_size);

/* The last error as a sentence (static until the next call on p). */
const char *herald_pub_last_error(const herald_pub *p);

void herald_pub_close(herald_pub *p);

#endif
