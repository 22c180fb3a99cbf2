/* log.c -- logfmt lines on stderr, written with one write(2) each so lines from
 * several worker processes never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static char current_tag[32] = "herald";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name, enum log_level *level) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(enum log_level level) {
    current_level = level;
}

void log_set_tag(const char *tag) {
    snprintf(current_tag, sizeof current_tag, "%s", tag);
}

int log_enabled(enum log_level level) {
    return level >= current_level;
}

/* The escape of a control byte (below 0x20, or 0x7f) into esc (5 bytes). */
static size_t escape_control(unsigned char c, char *esc) {
    switch (c) {
        case '\n': return (size_t)snprintf(esc, 5, "\\n");
        case '\r': return (size_t)snprintf(esc, 5, "\\r");
        case '\t': return (size_t)snprintf(esc, 5, "\\t");
        default: return (size_t)snprintf(esc, 5, "\\x%02x", c);
    }
}

static int is_control(unsigned char c) {
    return c < 0x20 || c == 0x7f;
}

void log_write(enum log_level level, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char text[LOG_LINE_MAX], line[LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s %s pid=%d ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(ts.tv_nsec / 1000000), level_names[level], current_tag, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n, text_len = m < 0                     ? 0
                                       : (size_t)m < sizeof text ? (size_t)m
                                                                 : sizeof text - 1;
    /* Copy the caller's text, escaping control bytes, keeping one byte for the
     * newline: one call is always one line. */
    for (size_t i = 0; i < text_len; i++) {
        unsigned char c = (unsigned char)text[i];
        char esc[5];
        size_t esc_len = 1;

        if (is_control(c))
            esc_len = escape_control(c, esc);
        else
            esc[0] = (char)c;
        if (len + esc_len > sizeof line - 1) break;
        memcpy(line + len, esc, esc_len);
        len += esc_len;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

static int needs_quotes(const char *value) {
    if (!*value) return 1;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || is_control(*p)) return 1;
    return 0;
}

/* The quoted-string form of c into esc (5 bytes); returns its length. */
static size_t quote_char(unsigned char c, char *esc) {
    if (c == '"' || c == '\\') {
        esc[0] = '\\';
        esc[1] = (char)c;
        return 2;
    }
    if (is_control(c)) return escape_control(c, esc);
    esc[0] = (char)c;
    return 1;
}

const char *log_quote(char *out, size_t size, const char *value) {
    if (size == 0) return out;
    if (!value) value = "-";
    size_t value_len = strlen(value);
    if (!needs_quotes(value) && value_len < size) {
        memcpy(out, value, value_len + 1);
        return out;
    }
    if (size < 6) { /* no room for a cut value ("...": 5 bytes and the NUL) */
        snprintf(out, size, "%s", "\"\"");
        return out;
    }
    size_t quoted_len = 0;
    char esc[5];
    for (const unsigned char *p = (const unsigned char *)value; *p; p++)
        quoted_len += quote_char(*p, esc);
    /* Whole when it fits with both quotes and the NUL; else cut so that ..."
     * and the NUL still fit. */
    int cut = quoted_len + 3 > size;
    size_t limit = cut ? size - 5 : size - 2, len = 0;
    out[len++] = '"';
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        size_t esc_len = quote_char(*p, esc);
        if (len + esc_len > limit) break;
        memcpy(out + len, esc, esc_len);
        len += esc_len;
    }
    if (cut) {
        memcpy(out + len, "...", 3);
        len += 3;
    }
    out[len++] = '"';
    out[len] = '\0';
    return out;
}

const char *log_q(const char *value) {
    static _Thread_local char buffers[LOG_Q_BUFFERS][LOG_Q_SIZE];
    static _Thread_local unsigned next;
    char *out = buffers[next++ % LOG_Q_BUFFERS];

    return log_quote(out, LOG_Q_SIZE, value);
}
