/* log.h -- one logfmt line per event on stderr: ts=... level=... pid=... then
 * the caller's key=value pairs. Callers put conn=<id> on every line about a
 * connection, and never a token, secret or Authorization header. */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* Returns 0 and sets *level for "debug", "info", "warn" or "error"; else -1. */
int log_level_parse(const char *name, enum log_level *level);
void log_set_level(enum log_level level);
/* A short tag (e.g. "supervisor", "worker=1") printed on every line. */
void log_set_tag(const char *tag);
int log_enabled(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    (log_enabled(LOG_LEVEL_DEBUG) ? log_write(LOG_LEVEL_DEBUG, __VA_ARGS__) : (void)0)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
