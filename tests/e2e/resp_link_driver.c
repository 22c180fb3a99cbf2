/* resp_link_driver.c -- drives one gateway/resp_link against a real Redis for
 * tests/e2e/test_resp_link.py.
 *
 *   resp_link_driver HOST PORT [--user U] [--password P] [--db N]
 *                    [--timeout-ms N] [--max-output BYTES]
 *
 * Reads commands from stdin, one per line, words separated by spaces:
 *   cmd ID ARG...     queue a command; a word "@N" stands for N bytes of 'x'
 *   free              resp_link_free now
 *   free-on-push      free the link inside the next push callback
 *   free-on-reply     free the link inside the next reply callback
 *   state             print the link's state
 *   slotmap ID        CLUSTER SLOTS, read into a cluster_slots map
 * and prints one JSON object per line for everything the link reports:
 *   {"event":"up"} {"event":"down","reason":R} {"event":"push","push":P}
 *   {"event":"reply","id":ID,"reply":V}  (V null: lost before the reply)
 *   {"event":"refused","id":ID}          (resp_link_command_argv said -1)
 *   {"event":"freed"}  {"event":"state",...}
 *   {"event":"slotmap","id":ID,"covered":N,"masters":M,"ranges":[[start,end,port,[ports]]]}
 *     (the map cluster_slot_map_from_reply built) or {"event":"slotmap","error":E}
 * Replies: strings as strings, integers as numbers, nil as null, arrays as
 * lists, status as {"status":S}, errors as {"error":S} (with "redirect":
 * [kind, slot, host, port] when cluster_redirect_parse reads one). Exits on
 * stdin EOF. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_slots.h"
#include "resp_link.h"

static struct resp_link *link_under_test;
static struct event_base *base;
static bool free_on_push, free_on_reply;

static void print_json(json_t *obj) {
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (!text) {
        fprintf(stderr, "driver: out of memory\n");
        exit(2);
    }
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(obj);
}

static json_t *reply_json(const redisReply *r) {
    if (!r) return json_null();
    switch (r->type) {
        case REDIS_REPLY_STRING: return json_stringn_nocheck(r->str, r->len);
        case REDIS_REPLY_INTEGER: return json_integer(r->integer);
        case REDIS_REPLY_NIL: return json_null();
        case REDIS_REPLY_STATUS: return json_pack("{s:s}", "status", r->str);
        case REDIS_REPLY_ERROR: {
            struct cluster_redirect redirect;
            if (cluster_redirect_parse(r->str, r->len, &redirect) == CLUSTER_REDIRECT_NONE)
                return json_pack("{s:s}", "error", r->str);
            return json_pack("{s:s,s:[s,i,s,i]}", "error", r->str, "redirect",
                             redirect.kind == CLUSTER_REDIRECT_MOVED ? "MOVED" : "ASK",
                             (int)redirect.slot, redirect.host, redirect.port);
        }
        case REDIS_REPLY_ARRAY: {
            json_t *a = json_array();
            for (size_t i = 0; a && i < r->elements; i++)
                json_array_append_new(a, reply_json(r->element[i]));
            return a;
        }
        default: return json_string("?");
    }
}

static void free_link_now(void) {
    resp_link_free(link_under_test);
    link_under_test = NULL;
    print_json(json_pack("{s:s}", "event", "freed"));
}

static void on_reply(struct resp_link *link, redisReply *reply, void *privdata) {
    (void)link;
    char *id = privdata;
    print_json(json_pack("{s:s,s:s,s:o}", "event", "reply", "id", id, "reply", reply_json(reply)));
    free(id);
    if (free_on_reply) {
        free_on_reply = false;
        free_link_now();
    }
}

static void on_slots(struct resp_link *link, redisReply *reply, void *privdata) {
    char *id = privdata, err[200] = "";
    struct cluster_slot_map *map =
        reply ? cluster_slot_map_from_reply(reply, resp_link_host(link), err, sizeof(err)) : NULL;
    if (!map) {
        print_json(json_pack("{s:s,s:s,s:s}", "event", "slotmap", "id", id, "error",
                             reply ? err : "link lost"));
        free(id);
        return;
    }
    json_t *ranges = json_array();
    for (size_t i = 0; ranges && i < map->range_count; i++) {
        const struct cluster_slot_range *r = &map->ranges[i];
        json_t *replicas = json_array();
        for (size_t k = 0; replicas && k < r->replica_count; k++)
            json_array_append_new(replicas, json_integer(map->nodes[r->replicas[k]].port));
        json_array_append_new(
            ranges, json_pack("[i,i,i,o]", r->start, r->end, map->nodes[r->master].port, replicas));
    }
    print_json(json_pack("{s:s,s:s,s:i,s:i,s:o}", "event", "slotmap", "id", id, "covered",
                         (int)map->slots_covered, "masters", (int)map->master_count, "ranges",
                         ranges));
    cluster_slot_map_free(map);
    free(id);
}

static void on_up(struct resp_link *link, void *arg) {
    (void)link;
    (void)arg;
    print_json(json_pack("{s:s}", "event", "up"));
}

static void on_down(struct resp_link *link, const char *reason, void *arg) {
    (void)link;
    (void)arg;
    print_json(json_pack("{s:s,s:s}", "event", "down", "reason", reason));
}

static void on_push(struct resp_link *link, redisReply *push, void *arg) {
    (void)link;
    (void)arg;
    print_json(json_pack("{s:s,s:o}", "event", "push", "push", reply_json(push)));
    if (free_on_push) {
        free_on_push = false;
        free_link_now();
    }
}

static const char *state_name(enum resp_link_state s) {
    return s == RESP_LINK_UP ? "up" : s == RESP_LINK_CONNECTING ? "connecting" : "down";
}

static void run_line(char *line) {
    char *words[64];
    size_t lens[64];
    int n = 0;
    for (char *save = NULL, *w = strtok_r(line, " ", &save); w && n < 64;
         w = strtok_r(NULL, " ", &save))
        words[n++] = w;
    if (n == 0) return;
    if (strcmp(words[0], "free") == 0) {
        free_link_now();
    } else if (strcmp(words[0], "free-on-push") == 0) {
        free_on_push = true;
    } else if (strcmp(words[0], "free-on-reply") == 0) {
        free_on_reply = true;
    } else if (strcmp(words[0], "state") == 0 && link_under_test) {
        print_json(json_pack("{s:s,s:s,s:i,s:b}", "event", "state", "state",
                             state_name(resp_link_state(link_under_test)), "pending",
                             (int)resp_link_pending(link_under_test), "subscriber",
                             resp_link_is_subscriber(link_under_test)));
    } else if (strcmp(words[0], "slotmap") == 0 && n == 2 && link_under_test) {
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        char *id = strdup(words[1]);
        if (!id) exit(2);
        if (resp_link_command_argv(link_under_test, on_slots, id, 2, argv, NULL) < 0) {
            print_json(json_pack("{s:s,s:s}", "event", "refused", "id", id));
            free(id);
        }
    } else if (strcmp(words[0], "cmd") == 0 && n >= 3 && link_under_test) {
        const char *argv[62];
        char *big[62] = {0};
        int argc = 0;
        for (int i = 2; i < n; i++, argc++) {
            if (words[i][0] == '@') {
                size_t size = strtoul(words[i] + 1, NULL, 10);
                big[argc] = malloc(size + 1);
                if (!big[argc]) exit(2);
                memset(big[argc], 'x', size);
                argv[argc] = big[argc];
                lens[argc] = size;
            } else {
                argv[argc] = words[i];
                lens[argc] = strlen(words[i]);
            }
        }
        char *id = strdup(words[1]);
        if (!id) exit(2);
        if (resp_link_command_argv(link_under_test, on_reply, id, argc, argv, lens) < 0) {
            print_json(json_pack("{s:s,s:s}", "event", "refused", "id", id));
            free(id);
        }
        for (int i = 0; i < argc; i++) free(big[i]);
    } else {
        fprintf(stderr, "driver: bad line\n");
    }
}

static void on_stdin(struct bufferevent *bev, void *arg) {
    (void)arg;
    char *line;
    size_t len;
    while ((line = evbuffer_readln(bufferevent_get_input(bev), &len, EVBUFFER_EOL_LF))) {
        run_line(line);
        free(line);
    }
}

static void on_stdin_event(struct bufferevent *bev, short what, void *arg) {
    (void)bev;
    (void)what;
    (void)arg;
    event_base_loopexit(base, NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s HOST PORT [options]\n", argv[0]);
        return 2;
    }
    struct resp_link_options opts = {.host = argv[1], .port = atoi(argv[2])};
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--user") == 0)
            opts.user = argv[i + 1];
        else if (strcmp(argv[i], "--password") == 0)
            opts.password = argv[i + 1];
        else if (strcmp(argv[i], "--db") == 0)
            opts.db = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            opts.connect_timeout_ms = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--max-output") == 0)
            opts.max_output_bytes = strtoul(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    base = event_base_new();
    if (!base) return 2;
    struct resp_link_callbacks cb = {on_up, on_down, on_push, free, NULL};
    char err[256] = "";
    link_under_test = resp_link_new(base, &opts, &cb, err, sizeof(err));
    if (!link_under_test) {
        print_json(json_pack("{s:s,s:s}", "event", "error", "reason", err));
        return 1;
    }
    evutil_make_socket_nonblocking(STDIN_FILENO);
    struct bufferevent *in = bufferevent_socket_new(base, STDIN_FILENO, 0);
    if (!in) return 2;
    bufferevent_setcb(in, on_stdin, NULL, on_stdin_event, NULL);
    if (bufferevent_enable(in, EV_READ) != 0) return 2;
    event_base_dispatch(base);
    bufferevent_free(in);
    resp_link_free(link_under_test);
    event_base_free(base);
    return 0;
}
