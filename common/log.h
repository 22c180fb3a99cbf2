/* log.h -- one logfmt line per event on stderr: ts=... level=... pid=... then
 * the caller's key=value pairs. Callers put conn=<id> on every line about a
 * connection, and never a token, secret or Authorization header.
 *
 * Every call writes exactly one line: log_write escapes any control character
 * (\n, \r, \t, other bytes below 0x20, and 0x7f) in the formatted text. A value
 * that can come from outside (a user id, a peer address, a channel name, an
 * error string from Redis or the OS) goes through log_q or log_quote, which
 * writes it as a logfmt value: as is when it is a plain word, else as a quoted
 * string, so it can never start a key of its own. */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

#define LOG_LINE_MAX  1024 /* bytes per line, newline included; longer lines are cut */
#define LOG_Q_SIZE    256  /* bytes per log_q buffer, NUL included */
#define LOG_Q_BUFFERS 8    /* log_q values usable in one log call */

/* Returns 0 and sets *level for "debug", "info", "warn" or "error"; else -1. */
int log_level_parse(const char *name, enum log_level *level);
void log_set_level(enum log_level level);
/* A short tag (e.g. "supervisor", "worker=1") printed on every line. */
void log_set_tag(const char *tag);
int log_enabled(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes value as one logfmt value into out (size bytes, NUL-terminated) and
 * returns out. A non-empty value of printable bytes other than space, '"', '='
 * and '\' is copied as is; any other is quoted: "..." with \" \\ \n \r \t and
 * \xHH escapes. NULL is written as -. A value that does not fit is cut and
 * ends in ... inside the quotes. Bytes >= 0x80 (UTF-8) are kept. */
const char *log_quote(char *out, size_t size, const char *value);

/* log_quote into one of LOG_Q_BUFFERS rotating per-thread buffers, for use as
 * a printf argument: log_info("user=%s", log_q(id)). Valid until LOG_Q_BUFFERS
 * more calls; values are cut at LOG_Q_SIZE - 1 bytes. */
const char *log_q(const char *value);

#define log_debug(...)                                                                             \
    (log_enabled(LOG_LEVEL_DEBUG) ? log_write(LOG_LEVEL_DEBUG, __VA_ARGS__) : (void)0)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
