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

void log_write(enum log_level level, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char line[1024];
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
    size_t room = sizeof line - (size_t)n - 1; /* one byte kept for the newline */
    int m = vsnprintf(line + n, room, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m < room ? (size_t)m : room - 1);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
