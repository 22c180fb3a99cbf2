/* history.h -- the Redis layout of channel history, shared by every part of
 * Herald that publishes or reads it (libheraldpub, the gateway, an HTTP
 * publish API). No I/O: key names, the two server-side scripts and their
 * SHA-1 for EVALSHA, and the parser of the pub/sub message a history publish
 * sends.
 *
 * For the Redis channel R (prefix + channel name):
 *   {R}:history  a stream, one entry per event, field "d" = the data JSON;
 *                entry IDs (<ms>-<seq>) are the event offsets.
 *   {R}:meta     a hash: "epoch" (new whenever history starts over) and
 *                "first" (the first entry ID written under that epoch).
 * The hash tag is R itself, so both keys and the channel share one Redis
 * Cluster slot. A publish with history sends "#<epoch> <offset> <data>" on R;
 * a raw PUBLISH of a JSON text (which never starts with '#') has no offset. */
#ifndef HERALD_HISTORY_H
#define HERALD_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HISTORY_DEFAULT_SIZE  1000 /* entries kept per channel (approximately, MAXLEN ~) */
#define HISTORY_DEFAULT_TTL   600  /* seconds: age cap, and idle expiry of both keys */
#define HISTORY_MAX_SIZE      10000000L
#define HISTORY_MAX_TTL       31536000L /* one year */
#define HISTORY_MAX_SIZE_TEXT "10000000"
#define HISTORY_MAX_TTL_TEXT  "31536000"

#define HISTORY_EPOCH_MAX  32 /* digits of an epoch (the script makes 16) */
#define HISTORY_OFFSET_MAX 41 /* <20 digits>-<20 digits> */
#define HISTORY_SHA_LEN    40 /* hex digits of a script's SHA-1 */

/* Bytes the key suffixes add to R: strlen("{}:history"). */
#define HISTORY_KEY_EXTRA 10

/* The publish script. KEYS = {stream, meta}; ARGV = R, data, maxlen (> 0),
 * ttl seconds (> 0), "PUBLISH" or "SPUBLISH". Returns {offset, epoch,
 * receivers} (receivers: the publish command's reply). */
extern const char history_publish_script[];

/* The read script. KEYS = {stream, meta}; ARGV = since (an offset, "-" for
 * the beginning, "" for none), count. Returns {epoch|false, first|false,
 * newest offset|false, entries}. */
extern const char history_read_script[];

/* The scripts' SHA-1 as 40 lower-case hex digits, computed once (thread
 * safe). NULL only when OpenSSL cannot compute it (then use EVAL). */
const char *history_publish_sha(void);
const char *history_read_sha(void);

/* Writes "{R}:history" / "{R}:meta" for R = redis_channel[0..len) into out
 * (NUL-terminated). Returns the key's length, or -1 when out_size is too
 * small or R contains a brace. */
int history_stream_key(const char *redis_channel, size_t len, char *out, size_t out_size);
int history_meta_key(const char *redis_channel, size_t len, char *out, size_t out_size);

/* True when prefix can start a history channel: no '{' or '}' (they would
 * change the keys' hash tag). */
bool history_prefix_valid(const char *prefix);

/* Parses an offset "<ms>-<seq>" (decimal, no sign, no leading zero, each part
 * fits in 64 bits) from s[0..len). Returns 0, or -1 when it is not one. */
int history_offset_parse(const char *s, size_t len, uint64_t *ms, uint64_t *seq);

/* Orders two NUL-terminated offsets: ms, then seq, as unsigned 64-bit numbers.
 * Returns <0, 0, >0. An invalid offset sorts before every valid one (two
 * invalid ones by strcmp), so the order stays total. */
int history_offset_compare(const char *a, const char *b);

enum history_parse_result {
    HISTORY_MESSAGE_INVALID = -1, /* starts with '#' but the header is malformed */
    HISTORY_MESSAGE_PLAIN = 0,    /* no header (a raw PUBLISH): data is the payload */
    HISTORY_MESSAGE_OFFSET = 1,   /* "#<epoch> <offset> <data>": epoch and offset filled */
};

/* Splits a pub/sub payload. epoch and offset receive NUL-terminated copies
 * (set to "" for a plain message); *data and *data_len point into payload.
 * The epoch is 1..HISTORY_EPOCH_MAX digits, the offset as history_offset_parse
 * wants, each followed by exactly one space. The data is not checked here. */
enum history_parse_result history_parse_message(const char *payload, size_t len,
                                                char epoch[HISTORY_EPOCH_MAX + 1],
                                                char offset[HISTORY_OFFSET_MAX + 1],
                                                const char **data, size_t *data_len);

#endif
