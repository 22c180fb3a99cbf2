/* reply_arena.c -- hiredis reply objects built in an arena; see reply_arena.h. */
#include "reply_arena.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE 16384 /* holds ~100 pub/sub messages of 100-byte events */

struct chunk {
    struct chunk *next; /* older chunks */
    size_t used, size;
    alignas(max_align_t) unsigned char data[];
};

struct reply_arena {
    struct chunk *chunks; /* newest first */
};

static void *arena_alloc(struct reply_arena *a, size_t n) {
    const size_t align = alignof(max_align_t);
    if (n > SIZE_MAX - align) return NULL;
    n = (n + align - 1) & ~(align - 1);
    struct chunk *c = a->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = n > CHUNK_SIZE ? n : CHUNK_SIZE;
        if (size > SIZE_MAX - sizeof *c) return NULL;
        c = malloc(sizeof *c + size);
        if (!c) return NULL;
        c->used = 0;
        c->size = size;
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

static redisReply *new_reply(const redisReadTask *task, int type) {
    redisReply *r = arena_alloc(task->privdata, sizeof *r);
    if (!r) return NULL;
    memset(r, 0, sizeof *r);
    r->type = type;
    return r;
}

/* Links r into its parent array, as hiredis' own functions do. */
static void *attach(const redisReadTask *task, redisReply *r) {
    if (r && task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len) {
    redisReply *r = new_reply(task, task->type);
    char *copy = r && len < SIZE_MAX ? arena_alloc(task->privdata, len + 1) : NULL;
    if (!copy) return NULL;
    memcpy(copy, str, len);
    copy[len] = '\0';
    r->str = copy;
    r->len = len;
    return attach(task, r);
}

static void *create_array(const redisReadTask *task, int elements) {
    if (elements > REPLY_MAX_ELEMENTS) return NULL; /* the reader fails: see the header */
    redisReply *r = new_reply(task, REDIS_REPLY_ARRAY);
    if (!r) return NULL;
    if (elements > 0) {
        r->element = arena_alloc(task->privdata, (size_t)elements * sizeof *r->element);
        if (!r->element) return NULL;
        memset(r->element, 0, (size_t)elements * sizeof *r->element);
    }
    r->elements = elements > 0 ? (size_t)elements : 0;
    return attach(task, r);
}

static void *create_integer(const redisReadTask *task, long long value) {
    redisReply *r = new_reply(task, REDIS_REPLY_INTEGER);
    if (r) r->integer = value;
    return attach(task, r);
}

static void *create_nil(const redisReadTask *task) {
    return attach(task, new_reply(task, REDIS_REPLY_NIL));
}

static void free_object(void *reply) {
    (void)reply; /* the arena's reset frees it */
}

static redisReplyObjectFunctions functions = {create_string, create_array, create_integer,
                                              create_nil, free_object};

redisReader *reply_arena_reader_new(struct reply_arena **arena) {
    *arena = calloc(1, sizeof **arena);
    redisReader *reader = *arena ? redisReaderCreateWithFunctions(&functions) : NULL;
    if (!reader) {
        free(*arena);
        *arena = NULL;
        return NULL;
    }
    reader->privdata = *arena; /* handed to every task */
    return reader;
}

void reply_arena_reset(struct reply_arena *a) {
    struct chunk *keep = NULL;
    for (struct chunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
        if (!keep && c->size == CHUNK_SIZE) {
            keep = c;
            continue;
        }
        free(c);
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
    }
    a->chunks = keep;
}

void reply_arena_free(redisReader *reader, struct reply_arena *a) {
    if (reader) redisReaderFree(reader);
    if (!a) return;
    reply_arena_reset(a);
    free(a->chunks);
    free(a);
}
