/* sse_codec.c -- text/event-stream lines, stream ids, the /events query. */
#include "sse_codec.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char data_field[] = "data: ";
#define DATA_FIELD_LEN (sizeof data_field - 1)

size_t sse_data_size(const char *msg, size_t len) {
    size_t size = DATA_FIELD_LEN + 1;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n') continue; /* CR LF: one break */
        size += (msg[i] == '\r' || msg[i] == '\n') ? 1 + DATA_FIELD_LEN : 1;
    }
    return size;
}

void sse_write_data(char *out, const char *msg, size_t len) {
    memcpy(out, data_field, DATA_FIELD_LEN), out += DATA_FIELD_LEN;
    size_t run = 0; /* bytes of msg up to the next break, copied at once */
    for (size_t i = 0; i < len; i++) {
        if (msg[i] != '\r' && msg[i] != '\n') continue;
        memcpy(out, msg + run, i - run), out += i - run;
        if (msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n') i++;
        *out++ = '\n';
        memcpy(out, data_field, DATA_FIELD_LEN), out += DATA_FIELD_LEN;
        run = i + 1;
    }
    memcpy(out, msg + run, len - run), out += len - run;
    *out = '\n';
}

int sse_id_write(char *out, size_t out_size, const struct sse_position *positions, size_t count) {
    size_t n = 0;
    if (out_size == 0) return -1;
    out[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        const struct sse_position *p = &positions[i];
        int w = p->epoch[0]
                    ? snprintf(out + n, out_size - n, "%s%s/%s", i ? "," : "", p->epoch, p->offset)
                    : snprintf(out + n, out_size - n, "%s", i ? "," : "");
        if (w < 0 || (size_t)w >= out_size - n) return -1;
        n += (size_t)w;
    }
    return (int)n;
}

static bool epoch_valid(const char *s, size_t len) {
    if (len == 0 || len > HISTORY_EPOCH_MAX) return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

/* One position: "", "<epoch>/" or "<epoch>/<offset>". */
static int position_parse(const char *s, size_t len, struct sse_position *out) {
    memset(out, 0, sizeof *out);
    if (len == 0) return 0;
    const char *slash = memchr(s, '/', len);
    if (!slash) return -1;
    size_t epoch_len = (size_t)(slash - s), offset_len = len - epoch_len - 1;
    uint64_t ms, seq;
    if (!epoch_valid(s, epoch_len)) return -1;
    if (offset_len && (offset_len > HISTORY_OFFSET_MAX ||
                       history_offset_parse(slash + 1, offset_len, &ms, &seq) != 0))
        return -1;
    memcpy(out->epoch, s, epoch_len);
    memcpy(out->offset, slash + 1, offset_len);
    return 0;
}

int sse_id_parse(const char *id, size_t len, struct sse_position *positions, size_t max) {
    if (len == 0) return 0;
    size_t count = 0;
    const char *p = id, *end = id + len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        struct sse_position pos;
        if (position_parse(p, (size_t)(stop - p), &pos) != 0) return -1;
        if (count < max) positions[count] = pos;
        count++;
        if (!comma) break;
        p = comma + 1;
    }
    return (int)(count < max ? count : max);
}

enum sse_query_result sse_parse_query(const struct http_slice *query,
                                      const struct http_slice *last_event_id,
                                      struct sse_query *out) {
    memset(out, 0, sizeof *out);
    char value[ACL_MAX_CHANNEL + 2];
    size_t pos = 0;
    for (;;) {
        int n = http_query_param_next(query, &pos, "channel", value, sizeof value);
        if (n == -1) break;
        if (n == -2) {
            /* Too long for a channel name, or badly encoded. */
            return SSE_QUERY_INVALID_CHANNEL;
        }
        if (!acl_channel_name_valid(value, (size_t)n)) return SSE_QUERY_INVALID_CHANNEL;
        if (out->count == SSE_MAX_CHANNELS) return SSE_QUERY_TOO_MANY;
        for (size_t i = 0; i < out->count; i++)
            if (strcmp(out->channels[i], value) == 0) return SSE_QUERY_DUPLICATE;
        memcpy(out->channels[out->count++], value, (size_t)n + 1);
    }
    if (out->count == 0) return SSE_QUERY_NO_CHANNEL;
    static char id[SSE_ID_MAX * 3 + 2];
    const char *id_ptr = NULL;
    size_t id_len = 0;
    if (last_event_id && last_event_id->ptr) {
        id_ptr = last_event_id->ptr;
        id_len = last_event_id->len;
    } else {
        int n = http_query_param(query, "lastEventId", id, sizeof id);
        if (n == -2) return SSE_QUERY_BAD_ENCODING;
        if (n >= 0) {
            id_ptr = id;
            id_len = (size_t)n;
        }
    }
    if (id_ptr) {
        int n = sse_id_parse(id_ptr, id_len, out->since, out->count);
        if (n < 0) return SSE_QUERY_BAD_ENCODING;
        out->since_count = (size_t)n;
    }
    return SSE_QUERY_OK;
}

const char *sse_query_message(enum sse_query_result result) {
    switch (result) {
        case SSE_QUERY_OK: return "OK";
        case SSE_QUERY_NO_CHANNEL: return "No channel parameter";
        case SSE_QUERY_TOO_MANY: return "Too many channels for one stream";
        case SSE_QUERY_INVALID_CHANNEL: return "Invalid channel name";
        case SSE_QUERY_DUPLICATE: return "A channel appears twice";
        case SSE_QUERY_BAD_ENCODING: return "Malformed query or Last-Event-ID";
    }
    return "Bad request";
}
