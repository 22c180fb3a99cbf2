/* history.c -- key names, scripts and message header of channel history.
 *
 * The script texts below are the only copy: every publisher and the gateway
 * run exactly these, so the layout cannot drift between them. */
#include "history.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

const char history_publish_script[] =
    "local epoch = redis.call('HGET', KEYS[2], 'epoch')\n"
    "local first = redis.call('HGET', KEYS[2], 'first')\n"
    "if (not epoch) or (first and redis.call('EXISTS', KEYS[1]) == 0) then\n"
    "  local t = redis.call('TIME')\n"
    "  epoch = t[1] .. string.format('%06d', tonumber(t[2]))\n"
    "  redis.call('DEL', KEYS[2])\n"
    "  redis.call('HSET', KEYS[2], 'epoch', epoch)\n"
    "  first = false\n"
    "end\n"
    "local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])\n"
    "if not first then redis.call('HSET', KEYS[2], 'first', id) end\n"
    "-- age cap: drop entries older than ttl, and let idle history expire\n"
    "local now = redis.call('TIME')\n"
    "local min_ms = tonumber(now[1]) * 1000 - tonumber(ARGV[4]) * 1000\n"
    "if min_ms > 0 then redis.call('XTRIM', KEYS[1], 'MINID', '~', min_ms) end\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "local receivers = redis.call(ARGV[5], ARGV[1], '#' .. epoch .. ' ' .. id .. ' ' .. "
    "ARGV[2])\n"
    "return {id, epoch, receivers}\n";

const char history_read_script[] =
    "local epoch = redis.call('HGET', KEYS[2], 'epoch')\n"
    "local first = redis.call('HGET', KEYS[2], 'first')\n"
    "local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\n"
    "local entries = {}\n"
    "if ARGV[1] ~= '' then entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2]) "
    "end\n"
    "return {epoch or false, first or false, last[1] and last[1][1] or false, entries}\n";

static char publish_sha[HISTORY_SHA_LEN + 1];
static char read_sha[HISTORY_SHA_LEN + 1];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

/* Writes the hex SHA-1 of text into out, or leaves out empty on failure. */
static void sha1_hex(const char *text, char out[HISTORY_SHA_LEN + 1]) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;

    out[0] = '\0';
    if (!EVP_Digest(text, strlen(text), digest, &digest_len, EVP_sha1(), NULL) ||
        digest_len * 2 != HISTORY_SHA_LEN)
        return;
    for (unsigned int i = 0; i < digest_len; i++) snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void compute_shas(void) {
    sha1_hex(history_publish_script, publish_sha);
    sha1_hex(history_read_script, read_sha);
}

const char *history_publish_sha(void) {
    if (pthread_once(&sha_once, compute_shas) != 0) return NULL;
    return publish_sha[0] ? publish_sha : NULL;
}

const char *history_read_sha(void) {
    if (pthread_once(&sha_once, compute_shas) != 0) return NULL;
    return read_sha[0] ? read_sha : NULL;
}

static int make_key(const char *redis_channel, size_t len, const char *suffix, char *out,
                    size_t out_size) {
    size_t suffix_len = strlen(suffix);

    if (memchr(redis_channel, '{', len) || memchr(redis_channel, '}', len)) return -1;
    if (len + suffix_len + 2 >= out_size) return -1; /* '{', '}' and the NUL */
    out[0] = '{';
    memcpy(out + 1, redis_channel, len);
    out[len + 1] = '}';
    memcpy(out + len + 2, suffix, suffix_len + 1);
    return (int)(len + 2 + suffix_len);
}

int history_stream_key(const char *redis_channel, size_t len, char *out, size_t out_size) {
    return make_key(redis_channel, len, ":history", out, out_size);
}

int history_meta_key(const char *redis_channel, size_t len, char *out, size_t out_size) {
    return make_key(redis_channel, len, ":meta", out, out_size);
}

bool history_prefix_valid(const char *prefix) {
    return prefix && !strchr(prefix, '{') && !strchr(prefix, '}');
}

/* Parses s[0..len) as a decimal uint64 without sign or leading zero. */
static int parse_u64(const char *s, size_t len, uint64_t *out) {
    uint64_t value = 0;

    if (len == 0 || len > 20 || (len > 1 && s[0] == '0')) return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned digit = (unsigned)(s[i] - '0');
        if (value > (UINT64_MAX - digit) / 10) return -1;
        value = value * 10 + digit;
    }
    *out = value;
    return 0;
}

int history_offset_parse(const char *s, size_t len, uint64_t *ms, uint64_t *seq) {
    const char *dash = memchr(s, '-', len);

    if (!dash) return -1;
    size_t ms_len = (size_t)(dash - s);
    if (parse_u64(s, ms_len, ms) < 0) return -1;
    return parse_u64(dash + 1, len - ms_len - 1, seq);
}

int history_offset_compare(const char *a, const char *b) {
    uint64_t a_ms, a_seq, b_ms, b_seq;
    bool a_ok = history_offset_parse(a, strlen(a), &a_ms, &a_seq) == 0;
    bool b_ok = history_offset_parse(b, strlen(b), &b_ms, &b_seq) == 0;

    if (!a_ok || !b_ok) {
        if (a_ok != b_ok) return a_ok ? 1 : -1;
        int c = strcmp(a, b);
        return (c > 0) - (c < 0);
    }
    if (a_ms != b_ms) return a_ms < b_ms ? -1 : 1;
    if (a_seq != b_seq) return a_seq < b_seq ? -1 : 1;
    return 0;
}

enum history_parse_result history_parse_message(const char *payload, size_t len,
                                                char epoch[HISTORY_EPOCH_MAX + 1],
                                                char offset[HISTORY_OFFSET_MAX + 1],
                                                const char **data, size_t *data_len) {
    epoch[0] = '\0';
    offset[0] = '\0';
    if (len == 0 || payload[0] != '#') {
        *data = payload;
        *data_len = len;
        return HISTORY_MESSAGE_PLAIN;
    }

    /* "#" epoch " " */
    size_t i = 1, start = 1;
    while (i < len && i - start <= HISTORY_EPOCH_MAX && payload[i] >= '0' && payload[i] <= '9') i++;
    size_t epoch_len = i - start;
    if (epoch_len == 0 || epoch_len > HISTORY_EPOCH_MAX || i >= len || payload[i] != ' ')
        return HISTORY_MESSAGE_INVALID;

    /* offset " " */
    size_t offset_start = ++i;
    while (i < len && i - offset_start <= HISTORY_OFFSET_MAX && payload[i] != ' ') i++;
    size_t offset_len = i - offset_start;
    uint64_t ms, seq;
    if (offset_len > HISTORY_OFFSET_MAX || i >= len ||
        history_offset_parse(payload + offset_start, offset_len, &ms, &seq) < 0)
        return HISTORY_MESSAGE_INVALID;

    memcpy(epoch, payload + start, epoch_len);
    epoch[epoch_len] = '\0';
    memcpy(offset, payload + offset_start, offset_len);
    offset[offset_len] = '\0';
    *data = payload + i + 1;
    *data_len = len - i - 1;
    return HISTORY_MESSAGE_OFFSET;
}
