/* sse_codec.h -- the Server-Sent Events side of Herald's HTTP transport
 * (text/event-stream, WHATWG EventSource): the "data:" lines of a message,
 * the "id:" that lets a reconnecting client recover every channel, and the
 * /events query. Functions over bytes, like the other codecs: no I/O.
 *
 * The id (what EventSource sends back as Last-Event-ID): the positions of
 * the stream's channels, in the order of the URL's channel parameters,
 * joined by ','. A position is "<epoch>/<offset>" (the last event seen of
 * that history epoch), "<epoch>/" (the epoch is known but no event of it
 * was seen: recover from its beginning), or "" (unknown: the channel has no
 * history, so a reconnect gets a gap for it). Example for two channels:
 *   1733149000123456/1733150000000-0,1733149000999999/
 * An id with fewer positions than the URL has channels leaves the rest to
 * subscribe afresh; extra positions are ignored. */
#ifndef HERALD_SSE_CODEC_H
#define HERALD_SSE_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include "acl.h"
#include "history.h"
#include "http_upgrade.h"

#define SSE_MAX_CHANNELS 16 /* channels of one stream */

/* Bytes of one position and of a whole id (without "id: " and newline). */
#define SSE_POSITION_MAX (HISTORY_EPOCH_MAX + 1 + HISTORY_OFFSET_MAX)
#define SSE_ID_MAX       (SSE_MAX_CHANNELS * (SSE_POSITION_MAX + 1))

struct sse_position {
    char epoch[HISTORY_EPOCH_MAX + 1];   /* "": unknown */
    char offset[HISTORY_OFFSET_MAX + 1]; /* "": none seen in that epoch */
};

/* Bytes sse_write_data writes for the message msg[0..len). */
size_t sse_data_size(const char *msg, size_t len);

/* Writes msg as "data: ...\n" lines (a line break in msg, which in a JSON text
 * is only whitespace, starts a new "data: " line; CR LF counts as one break):
 * EventSource joins the lines with '\n', so the client reads the same JSON.
 * Writes exactly sse_data_size bytes, no NUL. */
void sse_write_data(char *out, const char *msg, size_t len);

/* Writes the id of count positions into out (NUL-terminated); returns its
 * length, or -1 when out_size is too small (SSE_ID_MAX + 1 always is). */
int sse_id_write(char *out, size_t out_size, const struct sse_position *positions, size_t count);

/* Parses an id (a Last-Event-ID) into positions[0..max); returns how many it
 * held (at most max; the rest are ignored), or -1 when it is malformed. An
 * empty id holds none. */
int sse_id_parse(const char *id, size_t len, struct sse_position *positions, size_t max);

enum sse_query_result {
    SSE_QUERY_OK = 0,
    SSE_QUERY_NO_CHANNEL,      /* no channel parameter */
    SSE_QUERY_TOO_MANY,        /* more than SSE_MAX_CHANNELS */
    SSE_QUERY_INVALID_CHANNEL, /* not a valid channel name (acl_channel_name_valid) */
    SSE_QUERY_DUPLICATE,       /* the same channel twice */
    SSE_QUERY_BAD_ENCODING,    /* badly %-encoded, or a Last-Event-ID that does not parse */
};

/* The /events request: its channels in URL order, and the positions to
 * recover from (the Last-Event-ID header, else the lastEventId parameter). */
struct sse_query {
    char channels[SSE_MAX_CHANNELS][ACL_MAX_CHANNEL + 1];
    size_t count;
    struct sse_position since[SSE_MAX_CHANNELS];
    size_t since_count; /* positions given (0: a fresh stream) */
};

/* Parses the channel parameters of query and the positions of last_event_id
 * (ptr NULL: fall back to the lastEventId parameter). */
enum sse_query_result sse_parse_query(const struct http_slice *query,
                                      const struct http_slice *last_event_id,
                                      struct sse_query *out);

/* The plain-text reason of a query refusal (400). */
const char *sse_query_message(enum sse_query_result result);

#endif
