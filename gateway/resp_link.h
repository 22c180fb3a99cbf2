/* resp_link.h -- one asynchronous connection to one Redis node (libevent).
 *
 * Why it exists: hiredis 0.14's async context (redisAsyncContext) only knows
 * the pub/sub of Redis 2: it routes `message`/`pmessage` and the (un)subscribe
 * confirmations of SUBSCRIBE/PSUBSCRIBE, but treats SSUBSCRIBE like an ordinary
 * command and has no idea of `smessage` or of a `sunsubscribe` the server sends
 * on its own when a slot migrates, so a sharded subscriber on it loses its
 * callbacks (or crashes on an unexpected reply). Redis Cluster's sharded pub/sub
 * needs exactly those. So this module keeps the connection, the command queue
 * and the push routing itself and takes from hiredis only the two pieces that
 * do not care about pub/sub: redisFormatCommandArgv() writes each command in
 * RESP, and a redisReader (redisReaderFeed / redisReaderGetReply) parses
 * every reply into a redisReply, built in an arena (reply_arena.h) that is
 * emptied once the reply was handed on. No RESP is parsed by hand here.
 *
 * One link is one bufferevent on a non-blocking TCP socket (it connects and
 * writes; once connected, replies are read by one recv per readiness straight
 * into the reader, on an event of the link's own). On connect it sends
 * AUTH (user and password as in redis_url.h) and SELECT (db != 0) ahead of
 * anything queued, and reports "up" once both answered OK. Replies go, in
 * order, to the callback of the command they answer. A link that has sent a
 * subscribe-family command is a subscriber: every `message`, `pmessage`,
 * `smessage` and every (un)subscribe notice (`subscribe`, `ssubscribe`,
 * `psubscribe`, `unsubscribe`, `sunsubscribe`, `punsubscribe`, whether the
 * confirmation of our command or the server's own `sunsubscribe` when a slot
 * leaves the node) goes to the push callback. So one link serves SUBSCRIBE and
 * SSUBSCRIBE alike.
 *
 * Loss: a link is lost on a connect/handshake timeout, AUTH or SELECT refused,
 * the peer closing, a read/write error, a protocol error from the reader, or
 * queued output passing max_output_bytes. Loss is reported from the event loop
 * (never from inside a resp_link_* call): first every pending command's
 * callback with reply NULL, in order, then on_down once. A lost link stays
 * lost; its owner frees it and makes a new one (the owner decides backoff).
 * After resp_link_free nothing is ever called back (it only hands each pending
 * command's privdata to the drop function), and a callback may free its own
 * link.
 *
 * How Herald uses it on a Redis Cluster (gateway/bus_cluster.c;
 * docs/OPERATIONS.md "Redis Cluster"): each gateway worker reads the slot map
 * (cluster_slots.h) with CLUSTER SLOTS, keeps one subscriber link per master
 * that has channels (SSUBSCRIBE per channel, never one link per channel) and
 * one command link per master (history reads, stats, the probe), and reads
 * the map again on a MOVED/ASK reply, on a link's loss and on a server
 * `sunsubscribe`; channels whose owner changed are subscribed on the new owner
 * and recovered from history. The publishers are blocking and use hiredis'
 * synchronous API instead (broker/herald_pub.c). */
#ifndef HERALD_RESP_LINK_H
#define HERALD_RESP_LINK_H

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct resp_link;

/* A command's reply (borrowed until the callback returns), or NULL when the
 * link was lost before the reply came. An error reply is a reply (type
 * REDIS_REPLY_ERROR), e.g. a MOVED for cluster_redirect_parse. */
typedef void resp_link_reply_fn(struct resp_link *link, redisReply *reply, void *privdata);

struct resp_link_callbacks {
    /* Connected, authenticated, db selected: commands can flow. */
    void (*on_up)(struct resp_link *link, void *arg);
    /* Lost (or never came up); reason is borrowed for the call. Called once. */
    void (*on_down)(struct resp_link *link, const char *reason, void *arg);
    /* A pub/sub push (see above); borrowed until the callback returns. */
    void (*on_push)(struct resp_link *link, redisReply *push, void *arg);
    /* Optional: resp_link_free calls it with the privdata of each command still
     * pending (their reply callbacks are not called), so that per-command data
     * can be released. It must not use the link. */
    void (*drop)(void *privdata);
    void *arg;
};

struct resp_link_options {
    const char *host; /* an address or a name (names are resolved with getaddrinfo, blocking) */
    int port;
    const char *user;        /* NULL: AUTH <password> only */
    const char *password;    /* NULL: no AUTH */
    int db;                  /* 0: no SELECT (a cluster has only db 0) */
    int connect_timeout_ms;  /* TCP connect + AUTH + SELECT; <= 0 means 5000 */
    size_t max_output_bytes; /* queued output past this loses the link; 0 means 64 MiB */
};

enum resp_link_state { RESP_LINK_CONNECTING, RESP_LINK_UP, RESP_LINK_DOWN };

/* Starts connecting. Returns NULL (with a reason in err) on bad options, an
 * unresolvable host or out of memory; an unreachable node is not an error here
 * but an on_down later. Strings in opts are copied. */
struct resp_link *resp_link_new(struct event_base *base, const struct resp_link_options *opts,
                                const struct resp_link_callbacks *callbacks, char *err,
                                size_t err_size);

/* Closes the connection and frees the link. Pending reply callbacks and on_down
 * are not called (only drop, for each pending command's privdata). Safe inside
 * any of the link's callbacks. */
void resp_link_free(struct resp_link *link);

/* Queues a command (argv/argvlen as redisFormatCommandArgv; argvlen NULL means
 * NUL-terminated strings). It may be sent while the link is still connecting:
 * it goes after AUTH/SELECT. cb (may be NULL) gets the reply with privdata.
 *
 * Subscribe-family commands (SUBSCRIBE, SSUBSCRIBE, PSUBSCRIBE and their
 * UNSUBSCRIBE forms) must name at least one channel; their confirmations go to
 * on_push, and cb gets the last confirmation (or the error, e.g. MOVED or
 * CROSSSLOT, that replaced them all). Once a link has subscribed, use it only
 * for those and PING; run other commands on a command link.
 *
 * Returns 0, or -1 when the link is down, the command is malformed (no
 * arguments, an unsubscribe without a channel), out of memory, or the output
 * limit is passed (the link is then lost: on_down follows from the loop). On
 * -1, cb is never called. */
int resp_link_command_argv(struct resp_link *link, resp_link_reply_fn *cb, void *privdata, int argc,
                           const char **argv, const size_t *argvlen);

enum resp_link_state resp_link_state(const struct resp_link *link);
const char *resp_link_host(const struct resp_link *link);
int resp_link_port(const struct resp_link *link);
/* Commands sent and not yet answered (AUTH/SELECT excluded). */
size_t resp_link_pending(const struct resp_link *link);
/* Bytes written to the link but not yet to the kernel. */
size_t resp_link_output_bytes(const struct resp_link *link);
/* Under load, read at most once per ms milliseconds, so that one wake-up
 * takes a batch of replies; a reply to a quiet link is still read at once
 * (see maybe_pause in resp_link.c). 0, the default, reads every readiness. */
void resp_link_set_read_coalesce(struct resp_link *link, int ms);
/* True once a subscribe-family command was sent on it. */
bool resp_link_is_subscriber(const struct resp_link *link);

#endif
