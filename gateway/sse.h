/* sse.h -- GET /events: Server-Sent Events (text/event-stream) for clients
 * that cannot use WebSocket. A stream is a session like a WebSocket
 * connection's (same token sources, access rules, limits, recovery); only its
 * output is framed differently:
 *
 *   retry: <ms>                         once, at the start
 *   event: connected / data: {...}      the "connected" message
 *   event: subscribed / data / id       per channel, with its position
 *   data: {"type":"event",...} / id     every event (the WebSocket message)
 *   data: {"type":"gap",...}            and every other message (error, ...)
 *   : ping                              every --ping-interval
 *
 * The id carries every channel's position (sse_codec.h), so the
 * Last-Event-ID a reconnecting EventSource sends recovers each channel. */
#ifndef HERALD_SSE_H
#define HERALD_SSE_H

#include <stddef.h>

#define SSE_PATH "/events"

struct conn;
struct http_request;

/* Serves GET /events on a connection in its handshake (head_len: the request
 * head's bytes): refuses it with 400/401/403/405/429/503, or opens the
 * stream and subscribes its channels. */
void sse_start(struct conn *c, const struct http_request *req, size_t head_len);

#endif
