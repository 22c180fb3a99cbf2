/* bus_cluster.c -- the bus on a Redis Cluster; see bus_cluster.h.
 *
 * Channels are indexed by slot (a list per slot), because everything that
 * happens to them in a cluster happens per slot: a slot moves, a node owning
 * slots fails. A lookup walks its slot's list; the channel names are chosen by
 * clients, but their count per worker is capped (--max-channels).
 *
 * Every channel is in one of four states. WANTED: it needs an SSUBSCRIBE (its
 * node is not known yet, its node's subscriber is not up, or it lost its
 * subscription); SUBSCRIBING: SSUBSCRIBE in flight on its node; ACTIVE;
 * UNSUBSCRIBING: SUNSUBSCRIBE in flight. A WANTED channel is placed on its
 * slot's owner every time the map changes, and sent as soon as that node's
 * subscriber is up. */
#include "bus_cluster.h"

#include <math.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "cluster_slots.h"
#include "log.h"
#include "resp_link.h"

#define BACKOFF_BASE       0.1  /* seconds */
#define BACKOFF_MAX        5.0  /* seconds */
#define PROBE_TIMEOUT      3.0  /* a probe not back, and nothing else read, by then: dead */
#define PROBE_HARD_TIMEOUT 30.0 /* a probe not back by then: dead, however busy the link */
#define CONNECT_TIMEOUT_MS 5000
#define REFRESH_TIMEOUT_MS 2000
#define REFRESH_MIN_GAP    0.2 /* seconds between two reads of the slot map */
#define STABLE_AFTER       10.0
#define MAX_OUTPUT_BYTES   (64u << 20)
#define MAX_REDIRECTS      5

enum cchan_state { CC_WANTED, CC_SUBSCRIBING, CC_ACTIVE, CC_UNSUBSCRIBING };

struct cnode;

struct nlink {
    struct cnode *node;
    struct resp_link *rl; /* NULL while waiting to (re)connect */
    bool ready;           /* subscriber: the probe is confirmed; command: connected */
    bool was_ready;       /* it has been ready before (so a new up ends an outage) */
    unsigned attempts;
    double up_since, started;
    struct event *retry;
};

/* One master (or a node a MOVED named) and its two links. */
struct cnode {
    struct bus_cluster *bc;
    struct cnode *next;
    char host[CLUSTER_HOST_MAX];
    int port;
    bool master;     /* a master serving slots in the current map */
    size_t channels; /* channels placed on it */
    struct nlink sub, cmd;
    char probe[512];      /* its probe channel (full name), "" until chosen */
    bool probe_sent;      /* SSUBSCRIBE of the probe in flight or confirmed */
    double probe_sent_at; /* 0: no probe outstanding */
    double sub_last_reply;
    double probe_lag_ms;
};

struct cchan {
    struct cchan *prev, *next; /* in its slot's list */
    struct cnode *node;        /* where it is (to be) subscribed; NULL: no owner known */
    enum cchan_state state;
    bool confirmed; /* the owner was told on_subscribed: a loss is reported */
    unsigned slot;
    size_t len;
    char name[]; /* the full Redis channel */
};

struct bus_cluster {
    struct event_base *base;
    const struct redis_cluster *seeds;
    char *prefix;
    size_t prefix_len;
    char *probe_id;
    struct bus_callbacks cb;
    struct cluster_slot_map *map; /* NULL until first read */
    struct cnode *nodes;
    struct cchan *slots[CLUSTER_SLOTS];
    size_t channel_count;
    /* Reading the slot map: one CLUSTER SLOTS at a time on a link of its own. */
    struct resp_link *refresh_rl;
    char refresh_host[CLUSTER_HOST_MAX];
    size_t refresh_cursor; /* rotates over the known nodes, then the seeds */
    bool refresh_wanted;
    double refresh_last;
    struct event *refresh_ev;
    struct event *tick;
    bool announced;       /* on_up was called (the first map was read) */
    int read_coalesce_ms; /* every subscriber link's */
    uint64_t reconnects, outages;
    double down_since, last_outage_seconds;
    char last_error[160];
    bool freeing;
};

static void note_error(struct bus_cluster *bc, const char *what, const char *where,
                       const char *err) {
    bool repeat = strcmp(bc->last_error, err) == 0;
    snprintf(bc->last_error, sizeof bc->last_error, "%s", err);
    if (!repeat) log_warn("event=%s node=%s error=%s", what, log_q(where), log_q(err));
}

static double backoff_delay(unsigned attempts) {
    double cap = BACKOFF_BASE * pow(2.0, attempts > 16 ? 16 : attempts);
    if (cap > BACKOFF_MAX) cap = BACKOFF_MAX;
    unsigned int r = 0;
    RAND_bytes((unsigned char *)&r, sizeof r);
    double delay = cap * ((double)r / 4294967295.0);
    return delay < 0.05 ? 0.05 : delay;
}

static void timer_in(struct event *ev, double seconds) {
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - floor(seconds)) * 1e6)};
    event_add(ev, &tv);
}

/* ---- the slot map ------------------------------------------------------------ */

static void request_refresh(struct bus_cluster *bc) {
    if (bc->freeing) return;
    bc->refresh_wanted = true;
    if (bc->refresh_rl || event_pending(bc->refresh_ev, EV_TIMEOUT, NULL)) return;
    double wait = bc->refresh_last + REFRESH_MIN_GAP - clock_now();
    timer_in(bc->refresh_ev, wait > 0 ? wait : 0);
}

/* ---- nodes ------------------------------------------------------------------- */

static void link_connect(struct nlink *l);
static void send_wanted(struct cnode *node);
static void channel_remove(struct bus_cluster *bc, struct cchan *c);

static const char *node_name(const struct cnode *node, char *buf, size_t size) {
    snprintf(buf, size, "%s:%d", node->host, node->port);
    return buf;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    link_connect(arg);
}

static struct cnode *node_find(struct bus_cluster *bc, const char *host, int port) {
    for (struct cnode *n = bc->nodes; n; n = n->next)
        if (n->port == port && strcmp(n->host, host) == 0) return n;
    return NULL;
}

static struct cnode *node_get(struct bus_cluster *bc, const char *host, int port) {
    struct cnode *n = node_find(bc, host, port);
    if (n) return n;
    n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->bc = bc;
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    n->probe_lag_ms = -1;
    n->sub = (struct nlink){.node = n};
    n->cmd = (struct nlink){.node = n};
    n->sub.retry = event_new(bc->base, -1, 0, retry_cb, &n->sub);
    n->cmd.retry = event_new(bc->base, -1, 0, retry_cb, &n->cmd);
    if (!n->sub.retry || !n->cmd.retry) {
        if (n->sub.retry) event_free(n->sub.retry);
        if (n->cmd.retry) event_free(n->cmd.retry);
        free(n);
        return NULL;
    }
    n->next = bc->nodes;
    bc->nodes = n;
    return n;
}

static void node_free(struct cnode *n) {
    if (n->sub.rl) resp_link_free(n->sub.rl);
    if (n->cmd.rl) resp_link_free(n->cmd.rl);
    event_free(n->sub.retry);
    event_free(n->cmd.retry);
    free(n);
}

/* Drops nodes that are neither masters nor hold channels or commands. */
static void nodes_prune(struct bus_cluster *bc) {
    for (struct cnode **p = &bc->nodes; *p;) {
        struct cnode *n = *p;
        if (!n->master && n->channels == 0 && (!n->cmd.rl || resp_link_pending(n->cmd.rl) == 0)) {
            *p = n->next;
            node_free(n);
        } else {
            p = &n->next;
        }
    }
}

/* Chooses node's probe channel: a name whose slot the node serves in the map. */
static void choose_probe(struct cnode *n) {
    struct bus_cluster *bc = n->bc;
    n->probe[0] = '\0';
    if (!bc->map) return;
    int index = cluster_slot_map_find_node(bc->map, n->host, n->port);
    if (index < 0) return;
    for (unsigned i = 0; i < 100000; i++) {
        char name[sizeof n->probe];
        int len = snprintf(name, sizeof name, "%s__probe__:%s:%u", bc->prefix, bc->probe_id, i);
        if (len < 0 || (size_t)len >= sizeof name) return;
        const struct cluster_slot_range *r =
            cluster_slot_map_lookup(bc->map, cluster_key_slot(name, (size_t)len));
        if (r && r->master == index) {
            memcpy(n->probe, name, (size_t)len + 1);
            return;
        }
    }
}

/* ---- channels ---------------------------------------------------------------- */

static struct cchan *channel_find(struct bus_cluster *bc, const char *name, size_t len) {
    unsigned slot = cluster_key_slot(name, len);
    for (struct cchan *c = bc->slots[slot]; c; c = c->next)
        if (c->len == len && memcmp(c->name, name, len) == 0) return c;
    return NULL;
}

static void channel_place_on(struct cchan *c, struct cnode *node) {
    if (c->node == node) return;
    if (c->node) c->node->channels--;
    c->node = node;
    if (node) node->channels++;
}

static void channel_remove(struct bus_cluster *bc, struct cchan *c) {
    channel_place_on(c, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        bc->slots[c->slot] = c->next;
    if (c->next) c->next->prev = c->prev;
    bc->channel_count--;
    free(c);
}

/* The Herald name of a full Redis channel (prefix stripped). */
static const char *herald_name(const struct bus_cluster *bc, const struct cchan *c) {
    return c->name + bc->prefix_len;
}

/* The channel lost its subscription: it is WANTED again, and reported once
 * when its owner had been told it was live. */
static void channel_lost(struct bus_cluster *bc, struct cchan *c) {
    bool report = c->confirmed && c->state == CC_ACTIVE;
    c->state = CC_WANTED;
    c->confirmed = false;
    if (report && bc->cb.on_lost) bc->cb.on_lost(bc->cb.arg, herald_name(bc, c));
}

static int sub_send(struct cnode *node, char verb, const char *name, size_t len);

/* Sends SSUBSCRIBE for a WANTED channel whose node's subscriber is up; else
 * connects that subscriber when nothing is connecting or waiting to retry. */
static void channel_send(struct cchan *c) {
    struct cnode *node = c->node;
    if (c->state != CC_WANTED || !node) return;
    if (node->sub.ready) {
        if (sub_send(node, 'S', c->name, c->len) == 0) c->state = CC_SUBSCRIBING;
    } else if (!node->sub.rl && !event_pending(node->sub.retry, EV_TIMEOUT, NULL)) {
        link_connect(&node->sub);
    }
}

/* A WANTED channel goes to its slot's owner (connecting to it when needed)
 * and is sent when that node's subscriber is up. */
static void channel_place(struct bus_cluster *bc, struct cchan *c) {
    if (c->state != CC_WANTED) return;
    const struct cluster_slot_range *r = bc->map ? cluster_slot_map_lookup(bc->map, c->slot) : NULL;
    struct cnode *owner = NULL;
    if (r) owner = node_get(bc, bc->map->nodes[r->master].host, bc->map->nodes[r->master].port);
    channel_place_on(c, owner);
    channel_send(c);
}

/* ---- subscriber links --------------------------------------------------------- */

/* What a subscriber command's reply is about. */
struct tag {
    struct bus_cluster *bc;
    struct cnode *node;
    char verb; /* 'P' probe, 'S' SSUBSCRIBE, 'U' SUNSUBSCRIBE */
    size_t len;
    char name[];
};

static void link_lost(struct nlink *l, const char *reason);

static void sub_reply(struct resp_link *rl, redisReply *reply, void *privdata) {
    (void)rl;
    struct tag *tag = privdata;
    struct bus_cluster *bc = tag->bc;
    struct cnode *node = tag->node;
    if (!reply || reply->type != REDIS_REPLY_ERROR) {
        free(tag);
        return;
    }
    struct cluster_redirect redirect;
    enum cluster_redirect_kind kind = cluster_redirect_parse(reply->str, reply->len, &redirect);
    if (tag->verb == 'P') {
        node->probe_sent = false;
        node->probe[0] = '\0';
        if (kind != CLUSTER_REDIRECT_NONE) {
            request_refresh(bc); /* a new probe channel once the map is known */
        } else {
            char reason[200];
            snprintf(reason, sizeof reason, "%s", reply->str);
            free(tag);
            link_lost(&node->sub, reason);
            return;
        }
        free(tag);
        return;
    }
    struct cchan *c = channel_find(bc, tag->name, tag->len);
    if (!c || c->node != node) {
        free(tag);
        return;
    }
    if (tag->verb == 'U') {
        channel_remove(bc, c);
        if (bc->cb.on_unsubscribed) bc->cb.on_unsubscribed(bc->cb.arg, tag->name + bc->prefix_len);
    } else if (c->state == CC_SUBSCRIBING && kind == CLUSTER_REDIRECT_MOVED) {
        c->state = CC_WANTED;
        const char *host = redirect.host[0] ? redirect.host : node->host;
        channel_place_on(c, node_get(bc, host, redirect.port));
        request_refresh(bc);
        channel_send(c);
    } else if (c->state == CC_SUBSCRIBING && kind == CLUSTER_REDIRECT_ASK) {
        c->state = CC_WANTED; /* the slot is moving: placed again once the map says where */
        channel_place_on(c, NULL);
        request_refresh(bc);
    } else if (c->state == CC_SUBSCRIBING) {
        log_warn("event=redis_refused command=SSUBSCRIBE channel=%s error=%s",
                 log_q(tag->name + bc->prefix_len), log_q(reply->str));
        snprintf(bc->last_error, sizeof bc->last_error, "%s", reply->str);
        channel_remove(bc, c);
        if (bc->cb.on_refused)
            bc->cb.on_refused(bc->cb.arg, tag->name + bc->prefix_len, reply->str);
    }
    free(tag);
}

static int sub_send(struct cnode *node, char verb, const char *name, size_t len) {
    struct tag *tag = malloc(sizeof *tag + len + 1);
    if (!tag) return -1;
    *tag = (struct tag){node->bc, node, verb, len};
    memcpy(tag->name, name, len + 1);
    const char *argv[] = {verb == 'U' ? "SUNSUBSCRIBE" : "SSUBSCRIBE", name};
    size_t argvlen[] = {strlen(argv[0]), len};
    if (resp_link_command_argv(node->sub.rl, sub_reply, tag, 2, argv, argvlen) != 0) {
        free(tag);
        return -1;
    }
    return 0;
}

/* Sends SSUBSCRIBE for every WANTED channel placed on node. */
static void send_wanted(struct cnode *node) {
    struct bus_cluster *bc = node->bc;
    if (!node->sub.ready || !node->sub.rl) return;
    for (unsigned s = 0; s < CLUSTER_SLOTS && node->channels; s++)
        for (struct cchan *c = bc->slots[s]; c; c = c->next)
            if (c->node == node && c->state == CC_WANTED &&
                sub_send(node, 'S', c->name, c->len) == 0)
                c->state = CC_SUBSCRIBING;
}

static void probe_subscribe(struct cnode *node) {
    if (node->probe_sent || !node->sub.rl) return;
    if (!node->probe[0]) choose_probe(node);
    if (!node->probe[0]) {
        request_refresh(node->bc);
        return;
    }
    if (sub_send(node, 'P', node->probe, strlen(node->probe)) == 0) node->probe_sent = true;
}

static void sub_up(struct cnode *node) {
    struct bus_cluster *bc = node->bc;
    double now = clock_now();
    char where[300];
    if (node->sub.was_ready) {
        bc->reconnects++;
        log_warn("event=redis_restored node=%s", log_q(node_name(node, where, sizeof where)));
    } else {
        log_info("event=redis_connected node=%s role=subscriber",
                 log_q(node_name(node, where, sizeof where)));
    }
    node->sub.ready = node->sub.was_ready = true;
    node->sub.up_since = now;
    node->probe_sent_at = 0;
    send_wanted(node);
}

static void sub_push(struct resp_link *rl, redisReply *reply, void *arg) {
    (void)rl;
    struct cnode *node = ((struct nlink *)arg)->node;
    struct bus_cluster *bc = node->bc;
    node->sub_last_reply = clock_now();
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    const char *name = reply->element[1]->str;
    size_t len = reply->element[1]->len;
    bool is_probe = node->probe[0] && strcmp(name, node->probe) == 0;
    if (strcmp(kind, "smessage") == 0) {
        redisReply *payload = reply->element[2];
        if (payload->type != REDIS_REPLY_STRING) return;
        if (is_probe) {
            double sent = atof(payload->str);
            if (node->probe_sent_at != 0 && sent == node->probe_sent_at) {
                node->probe_lag_ms = (clock_now() - sent) * 1000.0;
                node->probe_sent_at = 0;
            }
            return;
        }
        if (len < bc->prefix_len || strncmp(name, bc->prefix, bc->prefix_len) != 0) return;
        if (bc->cb.on_message)
            bc->cb.on_message(bc->cb.arg, name + bc->prefix_len, payload->str, payload->len,
                              node->sub_last_reply);
        return;
    }
    if (strcmp(kind, "ssubscribe") == 0) {
        if (is_probe) {
            if (!node->sub.ready) sub_up(node);
            return;
        }
        struct cchan *c = channel_find(bc, name, len);
        if (!c || c->node != node || c->state != CC_SUBSCRIBING) return;
        c->state = CC_ACTIVE;
        c->confirmed = true;
        if (bc->cb.on_subscribed) bc->cb.on_subscribed(bc->cb.arg, herald_name(bc, c));
        return;
    }
    if (strcmp(kind, "sunsubscribe") != 0) return;
    if (is_probe) { /* its slot left the node: a new probe channel once the map says */
        node->probe_sent = false;
        node->probe[0] = '\0';
        node->probe_sent_at = 0;
        request_refresh(bc);
        return;
    }
    struct cchan *c = channel_find(bc, name, len);
    if (!c || c->node != node) return;
    if (c->state == CC_UNSUBSCRIBING) {
        channel_remove(bc, c);
        if (bc->cb.on_unsubscribed) bc->cb.on_unsubscribed(bc->cb.arg, name + bc->prefix_len);
        return;
    }
    /* The server's own: the slot moved away (resharding or a failover). */
    log_info("event=redis_slot_moved channel=%s node=%s:%d", log_q(name + bc->prefix_len),
             log_q(node->host), node->port);
    channel_lost(bc, c);
    channel_place_on(c, NULL);
    request_refresh(bc);
}

/* ---- links (both kinds) ------------------------------------------------------- */

static void cmd_up(struct cnode *node) {
    struct bus_cluster *bc = node->bc;
    node->cmd.ready = true;
    node->cmd.was_ready = true;
    node->cmd.up_since = clock_now();
    if (bc->cb.on_command_up) bc->cb.on_command_up(bc->cb.arg);
}

static void link_up(struct resp_link *rl, void *arg) {
    (void)rl;
    struct nlink *l = arg;
    if (l == &l->node->cmd) {
        cmd_up(l->node);
        return;
    }
    l->node->probe_sent = false;
    probe_subscribe(l->node);
}

static void schedule_retry(struct nlink *l) {
    if (l->node->bc->freeing) return;
    timer_in(l->retry, backoff_delay(l->attempts++));
}

/* A link is gone: its channels are lost (subscriber), the map is read again,
 * and the link is retried while the node is still wanted. */
static void link_lost(struct nlink *l, const char *reason) {
    struct cnode *node = l->node;
    struct bus_cluster *bc = node->bc;
    bool was_ready = l->ready;
    if (l->rl) {
        resp_link_free(l->rl);
        l->rl = NULL;
    }
    l->ready = false;
    if (bc->freeing) return;
    char where[300];
    node_name(node, where, sizeof where);
    if (l == &node->sub) {
        node->probe_sent = false;
        node->probe_sent_at = 0;
        if (was_ready) {
            bc->outages++;
            bc->down_since = clock_now();
            log_warn("event=redis_lost node=%s error=%s", log_q(where), log_q(reason));
        } else {
            note_error(bc, "redis_subscriber_failed", where, reason);
        }
        for (unsigned s = 0; s < CLUSTER_SLOTS && node->channels; s++) {
            for (struct cchan *c = bc->slots[s], *next; c; c = next) {
                next = c->next;
                if (c->node != node) continue;
                if (c->state == CC_UNSUBSCRIBING) {
                    char name[600];
                    snprintf(name, sizeof name, "%s", herald_name(bc, c));
                    channel_remove(bc, c);
                    if (bc->cb.on_unsubscribed) bc->cb.on_unsubscribed(bc->cb.arg, name);
                } else {
                    channel_lost(bc, c);
                }
            }
        }
    } else if (was_ready) {
        log_warn("event=redis_command_lost node=%s error=%s", log_q(where), log_q(reason));
    } else {
        note_error(bc, "redis_connect_failed", where, reason);
    }
    request_refresh(bc);
    if ((l == &node->sub && node->channels) || (l == &node->cmd && node->master)) schedule_retry(l);
}

static void link_down(struct resp_link *rl, const char *reason, void *arg) {
    (void)rl;
    link_lost(arg, reason);
}

static void drop_tag(void *privdata) {
    free(privdata);
}

struct pending;
static void drop_pending(void *privdata);

static void link_connect(struct nlink *l) {
    struct cnode *node = l->node;
    struct bus_cluster *bc = node->bc;
    if (l->rl || bc->freeing) return;
    bool sub = l == &node->sub;
    struct resp_link_options opts = {
        .host = node->host,
        .port = node->port,
        .user = bc->seeds->user,
        .password = bc->seeds->password,
        .connect_timeout_ms = CONNECT_TIMEOUT_MS,
        .max_output_bytes = MAX_OUTPUT_BYTES,
    };
    struct resp_link_callbacks callbacks = {link_up, link_down, sub ? sub_push : NULL,
                                            sub ? drop_tag : drop_pending, l};
    char err[256];
    l->started = clock_now();
    l->rl = resp_link_new(bc->base, &opts, &callbacks, err, sizeof err);
    if (l->rl && sub) resp_link_set_read_coalesce(l->rl, bc->read_coalesce_ms);
    if (!l->rl) {
        char where[300];
        note_error(bc, "redis_connect_failed", node_name(node, where, sizeof where), err);
        schedule_retry(l);
    }
}

/* ---- commands ----------------------------------------------------------------- */

/* A routed command: kept whole so that a redirect can send it again. */
struct pending {
    struct bus_cluster *bc;
    redisCallbackFn *fn;
    void *privdata;
    unsigned redirects;
    int argc;
    const char **argv;
    size_t *argvlen;
};

static void pending_free(struct pending *p) {
    free(p);
}

static void drop_pending(void *privdata) {
    struct pending *p = privdata;
    if (p->fn) p->fn(NULL, NULL, p->privdata);
    pending_free(p);
}

static int pending_send(struct cnode *node, struct pending *p, bool asking);

static void command_reply(struct resp_link *rl, redisReply *reply, void *privdata) {
    (void)rl;
    struct pending *p = privdata;
    struct bus_cluster *bc = p->bc;
    struct cluster_redirect redirect;
    enum cluster_redirect_kind kind =
        reply && reply->type == REDIS_REPLY_ERROR
            ? cluster_redirect_parse(reply->str, reply->len, &redirect)
            : CLUSTER_REDIRECT_NONE;
    if (kind != CLUSTER_REDIRECT_NONE && p->redirects < MAX_REDIRECTS) {
        if (kind == CLUSTER_REDIRECT_MOVED) request_refresh(bc);
        const char *host = redirect.host[0] ? redirect.host : resp_link_host(rl);
        struct cnode *to = node_get(bc, host, redirect.port);
        p->redirects++;
        if (to && pending_send(to, p, kind == CLUSTER_REDIRECT_ASK) == 0) return;
        reply = NULL;
    }
    if (!reply) request_refresh(bc);
    if (p->fn) p->fn(NULL, reply, p->privdata);
    pending_free(p);
}

static int pending_send(struct cnode *node, struct pending *p, bool asking) {
    if (!node->cmd.rl) {
        if (event_pending(node->cmd.retry, EV_TIMEOUT, NULL)) return -1;
        link_connect(&node->cmd);
        if (!node->cmd.rl) return -1;
    }
    if (asking) {
        const char *argv[] = {"ASKING"};
        if (resp_link_command_argv(node->cmd.rl, NULL, NULL, 1, argv, NULL) != 0) return -1;
    }
    return resp_link_command_argv(node->cmd.rl, command_reply, p, p->argc, p->argv, p->argvlen);
}

int bus_cluster_command(struct bus_cluster *bc, const char *key, size_t key_len,
                        redisCallbackFn *fn, void *privdata, int argc, const char **argv,
                        const size_t *argvlen) {
    if (!bc->map || argc < 1) return -1;
    const struct cluster_node *owner = cluster_slot_map_master_for_key(bc->map, key, key_len);
    if (!owner) return -1;
    struct cnode *node = node_find(bc, owner->host, owner->port);
    if (!node || !node->cmd.ready) return -1; /* on_command_up says when to try again */
    size_t bytes = 0;
    for (int i = 0; i < argc; i++) bytes += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
    struct pending *p =
        malloc(sizeof *p + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + bytes);
    if (!p) return -1;
    *p = (struct pending){bc, fn, privdata, 0, argc, NULL, NULL};
    p->argv = (const char **)(p + 1);
    p->argvlen = (size_t *)(p->argv + argc);
    char *text = (char *)(p->argvlen + argc);
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        memcpy(text, argv[i], len);
        text[len] = '\0';
        p->argv[i] = text;
        p->argvlen[i] = len;
        text += len + 1;
    }
    if (pending_send(node, p, false) != 0) {
        pending_free(p);
        return -1;
    }
    return 0;
}

int bus_cluster_command_for_channel(struct bus_cluster *bc, const char *channel,
                                    redisCallbackFn *fn, void *privdata, int argc,
                                    const char **argv, const size_t *argvlen) {
    char full[1024];
    int n = snprintf(full, sizeof full, "%s%s", bc->prefix, channel);
    if (n < 0 || (size_t)n >= sizeof full) return -1;
    return bus_cluster_command(bc, full, (size_t)n, fn, privdata, argc, argv, argvlen);
}

/* ---- reading the slot map ------------------------------------------------------ */

static void apply_map(struct bus_cluster *bc, struct cluster_slot_map *map) {
    cluster_slot_map_free(bc->map);
    bc->map = map;
    for (struct cnode *n = bc->nodes; n; n = n->next) n->master = false;
    for (size_t i = 0; i < map->master_count; i++) {
        struct cnode *n = node_get(bc, map->nodes[i].host, map->nodes[i].port);
        if (!n) continue;
        n->master = true;
        if (!n->cmd.rl && !event_pending(n->cmd.retry, EV_TIMEOUT, NULL)) link_connect(&n->cmd);
    }
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++) {
        const struct cluster_slot_range *r = cluster_slot_map_lookup(map, s);
        for (struct cchan *c = bc->slots[s]; c; c = c->next) {
            /* A live channel whose slot has another owner now (before its old
             * node said so, or from a node cut off from the cluster) moves. */
            if (c->state == CC_ACTIVE && c->node && r &&
                (c->node->port != map->nodes[r->master].port ||
                 strcmp(c->node->host, map->nodes[r->master].host) != 0))
                channel_lost(bc, c);
            channel_place(bc, c);
        }
    }
    for (struct cnode *n = bc->nodes; n; n = n->next) {
        if (n->sub.rl && !n->probe_sent) probe_subscribe(n);
        if (!n->channels && n->sub.rl) { /* nothing left to listen to there */
            resp_link_free(n->sub.rl);
            n->sub.rl = NULL;
            n->sub.ready = false;
        }
        if (!n->channels) event_del(n->sub.retry);
        if (!n->master) event_del(n->cmd.retry);
    }
    nodes_prune(bc);
    if (!bc->announced) {
        bc->announced = true;
        log_info("event=redis_cluster_map masters=%zu slots=%zu", map->master_count,
                 map->slots_covered);
        if (bc->cb.on_up) bc->cb.on_up(bc->cb.arg, false, false);
    }
}

static void refresh_reply(struct resp_link *rl, redisReply *reply, void *privdata) {
    struct bus_cluster *bc = privdata;
    char err[200] = "no reply";
    struct cluster_slot_map *map = NULL;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        snprintf(err, sizeof err, "%s", reply->str);
    else if (reply)
        map = cluster_slot_map_from_reply(reply, bc->refresh_host, err, sizeof err);
    resp_link_free(rl);
    bc->refresh_rl = NULL;
    if (map && map->master_count == 0) {
        snprintf(err, sizeof err, "the node knows no master");
        cluster_slot_map_free(map);
        map = NULL;
    }
    if (!map) {
        note_error(bc, "redis_cluster_map_failed", bc->refresh_host, err);
        bc->refresh_cursor++;
        request_refresh(bc);
        return;
    }
    apply_map(bc, map);
}

static void refresh_down(struct resp_link *rl, const char *reason, void *arg) {
    struct bus_cluster *bc = arg;
    note_error(bc, "redis_cluster_map_failed", bc->refresh_host, reason);
    resp_link_free(rl);
    bc->refresh_rl = NULL;
    bc->refresh_cursor++;
    request_refresh(bc);
}

/* The node to ask next: the masters of the map, then its replicas, then the seeds. */
static void refresh_target(struct bus_cluster *bc, const char **host, int *port) {
    size_t known = bc->map ? bc->map->node_count : 0;
    size_t i = bc->refresh_cursor % (known + bc->seeds->count);
    if (i < known) {
        *host = bc->map->nodes[i].host;
        *port = bc->map->nodes[i].port;
    } else {
        *host = bc->seeds->seeds[i - known].host;
        *port = bc->seeds->seeds[i - known].port;
    }
}

static void refresh_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct bus_cluster *bc = arg;
    if (bc->refresh_rl || !bc->refresh_wanted) return;
    bc->refresh_wanted = false;
    bc->refresh_last = clock_now();
    const char *host;
    int port;
    refresh_target(bc, &host, &port);
    snprintf(bc->refresh_host, sizeof bc->refresh_host, "%s", host);
    struct resp_link_options opts = {.host = host,
                                     .port = port,
                                     .user = bc->seeds->user,
                                     .password = bc->seeds->password,
                                     .connect_timeout_ms = REFRESH_TIMEOUT_MS};
    struct resp_link_callbacks callbacks = {NULL, refresh_down, NULL, NULL, bc};
    char err[256];
    const char *argv[] = {"CLUSTER", "SLOTS"};
    bc->refresh_rl = resp_link_new(bc->base, &opts, &callbacks, err, sizeof err);
    if (!bc->refresh_rl ||
        resp_link_command_argv(bc->refresh_rl, refresh_reply, bc, 2, argv, NULL) != 0) {
        if (bc->refresh_rl) resp_link_free(bc->refresh_rl);
        bc->refresh_rl = NULL;
        note_error(bc, "redis_cluster_map_failed", host, err);
        bc->refresh_cursor++;
        request_refresh(bc);
    }
}

/* ---- the tick: probes, stuck connects, a degraded map ---------------------------- */

static void check_link(struct nlink *l, double now) {
    if (l->ready && l->attempts && now - l->up_since >= STABLE_AFTER) l->attempts = 0;
    if (l->rl && !l->ready && now - l->started > CONNECT_TIMEOUT_MS / 1000.0 + 1)
        link_lost(l, "no answer within 5 s of connecting");
}

static void probe_node(struct cnode *n, double now) {
    if (!n->sub.ready || !n->cmd.ready || !n->probe[0]) return;
    if (n->probe_sent_at != 0) {
        double waited = now - n->probe_sent_at;
        if (waited < PROBE_TIMEOUT ||
            (now - n->sub_last_reply < PROBE_TIMEOUT && waited < PROBE_HARD_TIMEOUT))
            return;
        log_warn("event=redis_probe_lost node=%s:%d waited_seconds=%.1f", log_q(n->host), n->port,
                 waited);
        n->probe_sent_at = 0;
        link_lost(&n->sub, "probe not answered");
        return;
    }
    char stamp[32];
    snprintf(stamp, sizeof stamp, "%.6f", now);
    const char *argv[] = {"SPUBLISH", n->probe, stamp};
    if (resp_link_command_argv(n->cmd.rl, NULL, NULL, 3, argv, NULL) == 0)
        n->probe_sent_at = atof(stamp);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd, (void)what;
    struct bus_cluster *bc = arg;
    double now = clock_now();
    for (struct cnode *n = bc->nodes, *next; n; n = next) {
        next = n->next; /* a lost link never frees its node here */
        check_link(&n->sub, now);
        check_link(&n->cmd, now);
        probe_node(n, now);
    }
    bool degraded = !bc->map || !bus_cluster_is_up(bc);
    if (degraded) request_refresh(bc);
    if (degraded && bc->down_since == 0) bc->down_since = now;
    if (!degraded && bc->down_since != 0) {
        bc->last_outage_seconds = now - bc->down_since;
        bc->down_since = 0;
    }
}

/* ---- public ------------------------------------------------------------------- */

struct bus_cluster *bus_cluster_new(struct event_base *base, const struct redis_cluster *seeds,
                                    const char *prefix, const char *probe_id,
                                    const struct bus_callbacks *callbacks) {
    struct bus_cluster *bc = calloc(1, sizeof *bc);
    if (!bc) return NULL;
    bc->base = base;
    bc->seeds = seeds;
    bc->cb = *callbacks;
    bc->prefix = strdup(prefix);
    bc->prefix_len = strlen(prefix);
    bc->probe_id = strdup(probe_id);
    bc->refresh_ev = event_new(base, -1, 0, refresh_cb, bc);
    bc->tick = event_new(base, -1, EV_PERSIST, tick_cb, bc);
    if (!bc->prefix || !bc->probe_id || !bc->refresh_ev || !bc->tick || seeds->count == 0) {
        bus_cluster_free(bc);
        return NULL;
    }
    bc->down_since = clock_now();
    timer_in(bc->tick, 1.0);
    request_refresh(bc);
    return bc;
}

void bus_cluster_free(struct bus_cluster *bc) {
    if (!bc) return;
    bc->freeing = true;
    while (bc->nodes) {
        struct cnode *n = bc->nodes;
        bc->nodes = n->next;
        node_free(n);
    }
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++) {
        while (bc->slots[s]) {
            struct cchan *c = bc->slots[s];
            bc->slots[s] = c->next;
            free(c);
        }
    }
    if (bc->refresh_rl) resp_link_free(bc->refresh_rl);
    if (bc->refresh_ev) event_free(bc->refresh_ev);
    if (bc->tick) event_free(bc->tick);
    cluster_slot_map_free(bc->map);
    free(bc->prefix);
    free(bc->probe_id);
    free(bc);
}

void bus_cluster_set_read_coalesce(struct bus_cluster *bc, int ms) {
    bc->read_coalesce_ms = ms;
    for (struct cnode *n = bc->nodes; n; n = n->next)
        if (n->sub.rl) resp_link_set_read_coalesce(n->sub.rl, ms);
}

bool bus_cluster_is_up(const struct bus_cluster *bc) {
    if (!bc->map || bc->map->slots_covered != CLUSTER_SLOTS) return false;
    for (const struct cnode *n = bc->nodes; n; n = n->next) {
        if (n->master && !n->cmd.ready) return false;
        if (n->channels && !n->sub.ready) return false;
    }
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++)
        for (const struct cchan *c = bc->slots[s]; c; c = c->next)
            if (!c->node) return false;
    return true;
}

int bus_cluster_subscribe(struct bus_cluster *bc, const char *channel) {
    if (!bc->map) return -1; /* on_up follows the first map */
    size_t len = bc->prefix_len + strlen(channel);
    struct cchan *c;
    char *full = malloc(len + 1);
    if (!full) return -1;
    snprintf(full, len + 1, "%s%s", bc->prefix, channel);
    c = channel_find(bc, full, len);
    if (c) { /* never expected: the index keeps one command in flight */
        free(full);
        return 0;
    }
    c = calloc(1, sizeof *c + len + 1);
    if (!c) {
        free(full);
        return -1;
    }
    memcpy(c->name, full, len + 1);
    free(full);
    c->len = len;
    c->slot = cluster_key_slot(c->name, len);
    c->state = CC_WANTED;
    c->next = bc->slots[c->slot];
    if (c->next) c->next->prev = c;
    bc->slots[c->slot] = c;
    bc->channel_count++;
    channel_place(bc, c);
    if (!c->node) request_refresh(bc);
    return 0;
}

int bus_cluster_unsubscribe(struct bus_cluster *bc, const char *channel) {
    char full[1024];
    int n = snprintf(full, sizeof full, "%s%s", bc->prefix, channel);
    if (n < 0 || (size_t)n >= sizeof full) return -1;
    struct cchan *c = channel_find(bc, full, (size_t)n);
    if (!c) return -1;
    if (c->state == CC_ACTIVE && c->node && c->node->sub.ready &&
        sub_send(c->node, 'U', c->name, c->len) == 0) {
        c->state = CC_UNSUBSCRIBING;
        return 0;
    }
    channel_remove(bc, c);
    return -1;
}

void bus_cluster_status(const struct bus_cluster *bc, struct bus_status *out) {
    bool up = bus_cluster_is_up(bc);
    out->state = up ? BUS_UP : bc->announced ? BUS_DOWN : BUS_CONNECTING;
    out->reconnects = bc->reconnects;
    out->outages = bc->outages;
    out->down_since = up ? 0 : bc->down_since;
    out->last_outage_seconds = bc->last_outage_seconds;
    out->probe_lag_ms = -1;
    out->command_connected = bc->map != NULL;
    for (const struct cnode *n = bc->nodes; n; n = n->next) {
        if (n->probe_lag_ms > out->probe_lag_ms) out->probe_lag_ms = n->probe_lag_ms;
        if (n->master && !n->cmd.ready) out->command_connected = false;
    }
    out->last_error = bc->last_error;
}
