/* publish_api.h -- POST /api/publish: backend services publish events over
 * HTTP, without Redis credentials, with history exactly as herald-pub does
 * (history.h's publish script, the channel rules' history policy).
 *
 *   Authorization: apikey <KEY>        (--api-key / --api-key-file; no key: 404)
 *   {"channel":C,"data":{...}}         -> 200 {"offset":O,"epoch":E}
 *   {"events":[{"channel":C,"data":D}, ...]}
 *                                      -> 200 {"results":[{"offset":O,"epoch":E}, ...]}
 *
 * A batch goes to Redis as pipelined script calls on the worker's command
 * connection: one round trip, published in order. Refusals: 400 bad JSON,
 * shape or channel; 401 bad key; 405 not POST; 411 no Content-Length
 * (chunked bodies are not read); 413 body over --api-max-body, an event's
 * data over --max-event-size or more than PUBLISH_API_MAX_BATCH events; 503
 * Redis unreachable or refusing. */
#ifndef HERALD_PUBLISH_API_H
#define HERALD_PUBLISH_API_H

#include <stdbool.h>
#include <stddef.h>

#define PUBLISH_API_PATH      "/api/publish"
#define PUBLISH_API_MAX_BATCH 1000 /* events in one request */
#define PUBLISH_API_KEY_MAX   1024 /* bytes of a key */

struct conn;
struct config;
struct http_request;

/* The SHA-256 of the configured key (constant-time comparison of any length). */
struct publish_api_key {
    bool set;
    unsigned char digest[32];
};

/* Loads the key from --api-key or --api-key-file (an empty file: no key).
 * Returns 0, or -1 with a reason in err. */
int publish_api_load_key(const struct config *cfg, struct publish_api_key *key, char *err,
                         size_t err_size);

/* Serves POST /api/publish on a connection in its handshake (head_len: the
 * request head's bytes); called again as more of the body arrives. */
void publish_api_serve(struct conn *c, const struct http_request *req, size_t head_len);

#endif
