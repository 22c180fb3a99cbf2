/* test_log.c -- common/log: one call is one line, whatever the values hold,
 * and log_quote/log_q write values as logfmt (plain word or quoted string).
 *
 * Lines are captured by pointing stderr (fd 2) at a temporary file. */
#include "log.h"
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char captured[8192];

/* Runs the log call in between with stderr on a temporary file; the text
 * lands in captured and its line count is returned. */
static FILE *capture_file;
static int saved_stderr = -1;

static void capture_begin(void) {
    capture_file = tmpfile();
    saved_stderr = dup(STDERR_FILENO);
    dup2(fileno(capture_file), STDERR_FILENO);
}

static int capture_end(void) {
    size_t n;
    int lines = 0;

    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    rewind(capture_file);
    n = fread(captured, 1, sizeof captured - 1, capture_file);
    captured[n] = '\0';
    fclose(capture_file);
    for (size_t i = 0; i < n; i++) lines += captured[i] == '\n';
    return lines;
}

/* The caller's part of the captured line: what follows "pid=N ". */
static const char *body(void) {
    const char *p = strstr(captured, " pid=");
    p = p ? strchr(p + 1, ' ') : NULL;
    return p ? p + 1 : "";
}

static void test_control_bytes_in_a_line_are_escaped(void) {
    static const struct {
        const char *value;
        const char *written;
    } cases[] = {
        {"plain", "event=x v=plain\n"},
        {"a\nts=1 level=error supervisor event=worker_died",
         "event=x v=a\\nts=1 level=error supervisor event=worker_died\n"},
        {"a\r\nb", "event=x v=a\\r\\nb\n"},
        {"tab\there", "event=x v=tab\\there\n"},
        {"bell\x07"
         "del\x7f"
         "esc\x1b",
         "event=x v=bell\\x07del\\x7fesc\\x1b\n"},
        {"caf\xc3\xa9", "event=x v=caf\xc3\xa9\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        capture_begin();
        log_info("event=x v=%s", cases[i].value);
        CHECK_INT(capture_end(), 1);
        CHECK_STR(body(), cases[i].written);
    }
}

static void test_level_tag_and_pid_lead_the_line(void) {
    char expect[64];
    log_set_tag("worker=3");
    capture_begin();
    log_warn("event=y");
    CHECK_INT(capture_end(), 1);
    CHECK(strncmp(captured, "ts=", 3) == 0);
    snprintf(expect, sizeof expect, " level=warn worker=3 pid=%d event=y\n", (int)getpid());
    CHECK(strstr(captured, expect) != NULL);
    log_set_tag("herald");
}

static void test_long_line_is_cut_to_one_line(void) {
    char big[3000];
    memset(big, '\n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    capture_begin();
    log_error("event=big v=%s", big);
    CHECK_INT(capture_end(), 1);
    CHECK(strlen(captured) <= LOG_LINE_MAX);
    CHECK(captured[strlen(captured) - 1] == '\n');
    CHECK(strstr(body(), "v=\\n\\n") != NULL);
}

static void test_levels_below_the_threshold_are_silent(void) {
    log_set_level(LOG_LEVEL_WARN);
    capture_begin();
    log_info("event=hidden");
    log_debug("event=hidden");
    log_error("event=shown");
    CHECK_INT(capture_end(), 1);
    CHECK(strstr(captured, "event=shown") != NULL);
    log_set_level(LOG_LEVEL_INFO);
}

static void test_log_quote_table(void) {
    static const struct {
        const char *value;
        const char *quoted;
    } cases[] = {
        {"u1", "u1"},
        {"auth0|5f1c2b", "auth0|5f1c2b"},
        {"127.0.0.1:5555", "127.0.0.1:5555"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
        {NULL, "-"},
        {"", "\"\""},
        {"a b", "\"a b\""},
        {"a=b", "\"a=b\""},
        {"say \"hi\"", "\"say \\\"hi\\\"\""},
        {"back\\slash", "\"back\\\\slash\""},
        {"x\nlevel=error event=forged", "\"x\\nlevel=error event=forged\""},
        {"cr\rtab\tdel\x7f", "\"cr\\rtab\\tdel\\x7f\""},
        {"NOPERM this user has no permissions", "\"NOPERM this user has no permissions\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        CHECK_STR(log_quote(out, sizeof out, cases[i].value), cases[i].quoted);
    }
}

/* A value that does not fit is cut, still quoted, still closed. */
static void test_log_quote_cuts_long_values_inside_quotes(void) {
    char out[12];
    CHECK_STR(log_quote(out, sizeof out, "abcdefghijklmnop"), "\"abcdef...\"");
    CHECK_STR(log_quote(out, sizeof out, "abcdefg i"), "\"abcdefg i\"");
    CHECK_STR(log_quote(out, sizeof out, "a\"\"\"\"\"\""), "\"a\\\"\\\"...\"");
    CHECK_STR(log_quote(out, 6, "a b c d"), "\"...\"");
    CHECK_STR(log_quote(out, 3, "a b"), "\"\"");
    CHECK_STR(log_quote(out, 5, "abcd"), "abcd");
    CHECK_STR(log_quote(out, 4, "abcd"), "\"\"");
}

static void test_log_q_buffers_rotate(void) {
    const char *q[LOG_Q_BUFFERS];
    char expect[16];
    for (int i = 0; i < LOG_Q_BUFFERS; i++) {
        char v[16];
        snprintf(v, sizeof v, "v %d", i);
        q[i] = log_q(v);
    }
    for (int i = 0; i < LOG_Q_BUFFERS; i++) {
        snprintf(expect, sizeof expect, "\"v %d\"", i);
        CHECK_STR(q[i], expect);
    }
    capture_begin();
    log_info("event=auth_failed peer=%s user=%s reason=%s", log_q("10.0.0.1:4242"),
             log_q("x\nts=1 level=error supervisor event=worker_died"), log_q("bad_user_id"));
    CHECK_INT(capture_end(), 1);
    CHECK_STR(body(), "event=auth_failed peer=10.0.0.1:4242 "
                      "user=\"x\\nts=1 level=error supervisor event=worker_died\" "
                      "reason=bad_user_id\n");
}

int main(void) {
    RUN(test_control_bytes_in_a_line_are_escaped);
    RUN(test_level_tag_and_pid_lead_the_line);
    RUN(test_long_line_is_cut_to_one_line);
    RUN(test_levels_below_the_threshold_are_silent);
    RUN(test_log_quote_table);
    RUN(test_log_quote_cuts_long_values_inside_quotes);
    RUN(test_log_q_buffers_rotate);
    return TEST_SUMMARY();
}
