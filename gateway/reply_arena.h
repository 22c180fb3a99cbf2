/* reply_arena.h -- hiredis reply objects built in an arena.
 *
 * hiredis' default reader allocates every reply object and every string of it
 * on its own: a pub/sub message (an array of three strings) costs eight
 * allocations and eight frees, for every event a worker receives. A reader
 * made here builds its replies in one arena instead, and the owner empties
 * the arena once it is done with a reply. Replies from such a reader must
 * never go to freeReplyObject. */
#ifndef HERALD_REPLY_ARENA_H
#define HERALD_REPLY_ARENA_H

#include <hiredis/hiredis.h>

struct reply_arena;

/* The most elements one array of a reply may declare. An array's header
 * ("*N") comes before its elements and hiredis asks for room for all N at
 * once, so without a bound a few bytes from a broken peer would ask for
 * gigabytes; the reader fails instead (its link drops and reconnects). The
 * largest replies the gateway asks for are history reads of at most
 * --recovery-limit + 2 entries (HERALD_RECOVERY_LIMIT_MAX) and CLUSTER SLOTS
 * (at most 16,384 ranges). */
#define REPLY_MAX_ELEMENTS (1 << 20)

/* A reader whose replies live in a new arena (*arena; free both with
 * reply_arena_free). NULL when out of memory. */
redisReader *reply_arena_reader_new(struct reply_arena **arena);

/* Ends every reply built so far: call it between complete replies only (a
 * reply the reader has half built lives in the arena too). Keeps one chunk
 * for the next replies and frees the rest. */
void reply_arena_reset(struct reply_arena *arena);

/* Frees the reader and its arena. */
void reply_arena_free(redisReader *reader, struct reply_arena *arena);

#endif
