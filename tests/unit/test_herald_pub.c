/* test_herald_pub.c -- the publishing library's refusals, without a Redis server.
 *
 * herald_pub_connect needs only a TCP connection when the URL has no password
 * and db 0, so these tests point it at a listening socket of their own on the
 * loopback address (the kernel completes the handshake from the backlog) and
 * then prove that every refused event leaves that socket without one byte. The
 * accepted-event tests pre-write Redis' reply (the history script's
 * {offset, epoch, receivers}, a NOSCRIPT error, or PUBLISH's integer) and
 * check the exact RESP commands that arrive. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "herald_pub.h"
#include "history.h"
#include "testlib.h"

/* The history script's reply: offset 1-0, epoch 17, 0 receivers. */
#define SCRIPT_REPLY "*3\r\n$3\r\n1-0\r\n$2\r\n17\r\n:0\r\n"

struct fake_redis {
    int listen_fd;
    int port;
};

static int fake_redis_open(struct fake_redis *f) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof addr;

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (f->listen_fd < 0) return -1;
    if (bind(f->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(f->listen_fd, 4) < 0 ||
        getsockname(f->listen_fd, (struct sockaddr *)&addr, &len) < 0) {
        close(f->listen_fd);
        return -1;
    }
    f->port = ntohs(addr.sin_port);
    return 0;
}

/* A port with nothing listening: bound, then closed. */
static int refused_port(void) {
    struct fake_redis f;
    if (fake_redis_open(&f) < 0) return -1;
    close(f.listen_fd);
    return f.port;
}

static herald_pub *connect_to(const struct fake_redis *f, const char *prefix) {
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->port);
    herald_pub *p = herald_pub_connect(url, prefix, err, sizeof err);
    if (!p) fprintf(stderr, "  connect failed: %s\n", err);
    return p;
}

/* A publisher connected to the fake (f), and the fake's side of that
 * connection (*conn); false when any of it failed (checked). close_link
 * releases whatever was opened. */
static bool open_link(struct fake_redis *f, const char *prefix, herald_pub **p, int *conn) {
    *p = NULL;
    *conn = -1;
    f->listen_fd = -1;
    CHECK_INT(fake_redis_open(f), 0);
    if (f->listen_fd < 0) return false;
    *p = connect_to(f, prefix);
    CHECK(*p != NULL);
    if (*p) *conn = accept(f->listen_fd, NULL, NULL);
    CHECK(!*p || *conn >= 0);
    return *p && *conn >= 0;
}

static void close_link(struct fake_redis *f, herald_pub *p, int conn) {
    herald_pub_close(p);
    if (conn >= 0) close(conn);
    if (f->listen_fd >= 0) close(f->listen_fd);
}

/* Number of bytes the publisher has sent so far on the accepted connection. */
static ssize_t pending_bytes(int conn_fd, char *buf, size_t size) {
    ssize_t n = recv(conn_fd, buf, size, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    return n;
}

struct refusal {
    const char *channel;
    const char *json;
    enum herald_pub_status status;
    const char *message_part;
};

static const struct refusal refusals[] = {
    {"x y", "{}", HERALD_PUB_BAD_CHANNEL,
     "invalid channel name 'x y': use namespace:name with [A-Za-z0-9_.:-], at most 128 bytes"},
    {"", "{}", HERALD_PUB_BAD_CHANNEL, "invalid channel name ''"},
    {"apps:cr\xc3\xa9\x61ted", "{}", HERALD_PUB_BAD_CHANNEL,
     "invalid channel name 'apps:cr\\xc3\\xa9ated'"},
    {"apps:created\n", "{}", HERALD_PUB_BAD_CHANNEL, "'apps:created\\x0a'"},
    {"apps/created", "{}", HERALD_PUB_BAD_CHANNEL, "invalid channel name 'apps/created'"},
    {"apps:*", "{}", HERALD_PUB_BAD_CHANNEL, "invalid channel name 'apps:*'"},
    {"apps:created", "", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", "{\"id\":", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", "{'id':1}", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", "{\"id\":1} x", HERALD_PUB_BAD_JSON, "end of file expected"},
    {"apps:created", "{\"id\":1}{\"id\":2}", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", "{\"name\":\"\xff\xfe\"}", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", "undefined", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", "   ", HERALD_PUB_BAD_JSON, "invalid JSON data"},
    {"apps:created", NULL, HERALD_PUB_BAD_JSON, "no event data"},
    {NULL, "{}", HERALD_PUB_BAD_CHANNEL, "invalid channel name ''"},
};

static void test_refused_events_fail_with_a_sentence_and_send_nothing(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, NULL, &p, &conn)) goto done;

    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
        const struct refusal *r = &refusals[i];
        long receivers = -7;
        enum herald_pub_status got = herald_pub_publish(p, r->channel, r->json, &receivers);
        const char *message = herald_pub_last_error(p);
        if (got != r->status || !strstr(message, r->message_part)) {
            fprintf(stderr, "  case %zu: status %d, message \"%s\"; expected %d, \"%s\"\n", i, got,
                    message, r->status, r->message_part);
            CHECK(0);
        }
        CHECK_INT(receivers, -7);
    }
    char buf[64];
    CHECK_INT(pending_bytes(conn, buf, sizeof buf), 0);

done:
    close_link(&f, p, conn);
}

static void test_channel_of_128_bytes_passes_and_129_is_refused_with_short_quote(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, NULL, &p, &conn)) goto done;

    char name[130];
    memset(name, 'a', 129);
    name[3] = ':';
    name[129] = '\0';
    CHECK_INT(herald_pub_publish(p, name, "{}", NULL), HERALD_PUB_BAD_CHANNEL);
    /* The quoted name is cut to keep the sentence readable. */
    CHECK(strstr(herald_pub_last_error(p), "...'") != NULL);
    CHECK(strlen(herald_pub_last_error(p)) < 200);
    char buf[64];
    CHECK_INT(pending_bytes(conn, buf, sizeof buf), 0);

    /* 128 bytes is valid: the publish goes out and gets the pre-written reply. */
    name[128] = '\0';
    CHECK_INT(write(conn, SCRIPT_REPLY, strlen(SCRIPT_REPLY)), (ssize_t)strlen(SCRIPT_REPLY));
    long receivers = -1;
    CHECK_INT(herald_pub_publish(p, name, "{}", &receivers), HERALD_PUB_OK);
    CHECK_INT(receivers, 0);

done:
    close_link(&f, p, conn);
}

static void test_size_limit_is_inclusive_and_settable(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, NULL, &p, &conn)) goto done;

    /* "..." of the default limit plus one: 65537 bytes. */
    size_t big_len = 65537;
    char *big = malloc(big_len + 1);
    memset(big, ' ', big_len);
    big[0] = '"';
    big[big_len - 1] = '"';
    big[big_len] = '\0';
    CHECK_INT(herald_pub_publish(p, "apps:created", big, NULL), HERALD_PUB_TOO_BIG);
    CHECK_STR(herald_pub_last_error(p),
              "event data too big: 65537 bytes, the limit is 65536 bytes");

    herald_pub_set_max_size(p, 8);
    CHECK_INT(herald_pub_publish(p, "apps:created", "[1,2,3,4]", NULL), HERALD_PUB_TOO_BIG);
    char buf[64];
    CHECK_INT(pending_bytes(conn, buf, sizeof buf), 0);

    /* Exactly at the limit is accepted. */
    CHECK_INT(write(conn, SCRIPT_REPLY, strlen(SCRIPT_REPLY)), (ssize_t)strlen(SCRIPT_REPLY));
    CHECK_INT(herald_pub_publish(p, "apps:created", "[1,2,34]", NULL), HERALD_PUB_OK);
    free(big);

done:
    close_link(&f, p, conn);
}

/* Reads exactly n bytes (or what arrives before the connection closes). */
static void read_exactly(int conn, char *buf, size_t n) {
    size_t have = 0;
    ssize_t r;
    while (have < n && (r = recv(conn, buf + have, n - have, 0)) > 0) have += (size_t)r;
    buf[have] = '\0';
}

/* The RESP array of argv. */
static int resp(char *out, size_t size, int argc, const char *const *argv) {
    int n = snprintf(out, size, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        n += snprintf(out + n, size - (size_t)n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    return n;
}

/* Plays Redis in a child process: for each step, reads exactly the expected
 * command, then writes the reply. Exits 0 when every command matched. */
static pid_t scripted_redis(int conn, int steps, const char *const *commands,
                            const char *const *replies) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    static char got[8192];
    for (int i = 0; i < steps; i++) {
        read_exactly(conn, got, strlen(commands[i]));
        if (strcmp(got, commands[i]) != 0) _exit(1 + i);
        if (write(conn, replies[i], strlen(replies[i])) != (ssize_t)strlen(replies[i])) _exit(9);
    }
    _exit(0);
}

static void test_event_with_history_is_evalsha_falling_back_to_eval(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, "tenant1:", &p, &conn)) goto done;
    CHECK_INT(herald_pub_set_history(p, true, 50, 30), 0);

    /* Redis without the script cached answers NOSCRIPT; the library then
     * sends the script itself and reports the offset from its reply. The
     * next event finds the cache warm: EVALSHA alone. */
    const char *json = "{\"n\":\"%s \xc3\xa9\"}";
    const char *args[] = {"EVALSHA",
                          history_publish_sha(),
                          "2",
                          "{tenant1:apps:created}:history",
                          "{tenant1:apps:created}:meta",
                          "tenant1:apps:created",
                          json,
                          "50",
                          "30",
                          "PUBLISH"};
    static char evalsha[1024], eval[8192];
    resp(evalsha, sizeof evalsha, 10, args);
    args[0] = "EVAL";
    args[1] = history_publish_script;
    resp(eval, sizeof eval, 10, args);
    const char *commands[] = {evalsha, eval, evalsha};
    const char *replies[] = {"-NOSCRIPT No matching script.\r\n",
                             "*3\r\n$15\r\n1764692000123-4\r\n$16\r\n1764692000123456\r\n:2\r\n",
                             SCRIPT_REPLY};
    pid_t child = scripted_redis(conn, 3, commands, replies);
    CHECK(child > 0);
    if (child < 0) goto done;

    struct herald_pub_result r;
    CHECK_INT(herald_pub_publish_event(p, "apps:created", json, &r), HERALD_PUB_OK);
    CHECK_STR(r.offset, "1764692000123-4");
    CHECK_STR(r.epoch, "1764692000123456");
    CHECK_INT(r.receivers, 2);
    CHECK_INT(herald_pub_publish_event(p, "apps:created", json, &r), HERALD_PUB_OK);
    CHECK_STR(r.offset, "1-0");
    CHECK_STR(r.epoch, "17");
    int status = -1;
    CHECK_INT(waitpid(child, &status, 0), child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

done:
    close_link(&f, p, conn);
}

static void test_malformed_script_reply_is_a_redis_error(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, NULL, &p, &conn)) goto done;

    /* An offset that is not <ms>-<seq>; the retry finds nothing listening. */
    static const char reply[] = "*3\r\n$3\r\nabc\r\n$1\r\n1\r\n:0\r\n";
    CHECK_INT(write(conn, reply, sizeof reply - 1), (ssize_t)(sizeof reply - 1));
    close(f.listen_fd);
    f.listen_fd = -1;
    CHECK_INT(herald_pub_publish_event(p, "apps:created", "1", NULL), HERALD_PUB_REDIS);
    CHECK(strstr(herald_pub_last_error(p), "unexpected Redis reply to the history script") != NULL);

done:
    close_link(&f, p, conn);
}

static void test_history_settings_out_of_range_are_refused(void) {
    struct fake_redis f;
    CHECK_INT(fake_redis_open(&f), 0);
    herald_pub *p = connect_to(&f, NULL);
    CHECK(p != NULL);
    if (!p) goto done;
    CHECK_INT(herald_pub_set_history(p, true, 0, 600), -1);
    CHECK_INT(herald_pub_set_history(p, true, 1000, 0), -1);
    CHECK_INT(herald_pub_set_history(p, true, HISTORY_MAX_SIZE + 1, 600), -1);
    CHECK_INT(herald_pub_set_history(p, true, 1000, HISTORY_MAX_TTL + 1), -1);
    CHECK_INT(herald_pub_set_history(p, false, HISTORY_MAX_SIZE, HISTORY_MAX_TTL), 0);

done:
    herald_pub_close(p);
    close(f.listen_fd);
}

static void test_accepted_event_without_history_is_one_binary_safe_publish_with_the_prefix(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, "tenant1:", &p, &conn)) goto done;
    CHECK_INT(herald_pub_set_history(p, false, 1000, 600), 0);

    CHECK_INT(write(conn, ":3\r\n", 4), 4);
    long receivers = -1;
    /* Spaces, a %-sign and UTF-8 must reach Redis untouched. */
    const char *json = "{\"name\":\"my app %s \xc3\xa9\"}";
    CHECK_INT(herald_pub_publish(p, "apps:created", json, &receivers), HERALD_PUB_OK);
    CHECK_INT(receivers, 3);
    CHECK_STR(herald_pub_last_error(p), "");

    char expected[256], got[256];
    int n = snprintf(expected, sizeof expected,
                     "*3\r\n$7\r\nPUBLISH\r\n$20\r\ntenant1:apps:created\r\n$%zu\r\n%s\r\n",
                     strlen(json), json);
    ssize_t have = 0, r;
    while (have < n && (r = recv(conn, got + have, sizeof got - 1 - (size_t)have, 0)) > 0)
        have += r;
    got[have > 0 ? have : 0] = '\0';
    CHECK_STR(got, expected);

done:
    close_link(&f, p, conn);
}

static void test_redis_error_retries_once_then_reports_both_reasons(void) {
    struct fake_redis f;
    herald_pub *p;
    int conn;
    if (!open_link(&f, NULL, &p, &conn)) goto done;

    /* The error reply triggers one reconnect, which is refused: nothing listens. */
    CHECK_INT(write(conn, "-ERR boom\r\n", 11), 11);
    close(f.listen_fd);
    f.listen_fd = -1;
    CHECK_INT(herald_pub_publish(p, "apps:created", "{}", NULL), HERALD_PUB_REDIS);
    const char *message = herald_pub_last_error(p);
    CHECK(strstr(message, "Redis refused the history script: ERR boom") != NULL);
    CHECK(strstr(message, "retry failed: cannot connect to Redis at 127.0.0.1:") != NULL);

    /* With the connection gone, the next publish tries to reconnect first. */
    CHECK_INT(herald_pub_publish(p, "apps:created", "{}", NULL), HERALD_PUB_REDIS);
    CHECK(strncmp(herald_pub_last_error(p), "cannot connect to Redis", 23) == 0);
    /* Validation still comes first. */
    CHECK_INT(herald_pub_publish(p, "bad channel", "{}", NULL), HERALD_PUB_BAD_CHANNEL);

done:
    close_link(&f, p, conn);
}

static void test_connect_to_refused_port_fails_with_a_message(void) {
    int port = refused_port();
    CHECK(port > 0);
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "redis://:hunter2@127.0.0.1:%d", port);
    herald_pub *p = herald_pub_connect(url, NULL, err, sizeof err);
    CHECK(p == NULL);
    char expected[128];
    snprintf(expected, sizeof expected, "cannot connect to Redis at 127.0.0.1:%d: ", port);
    CHECK(strncmp(err, expected, strlen(expected)) == 0);
    CHECK(strstr(err, "hunter2") == NULL);
    herald_pub_close(p);
}

static void test_connect_refuses_bad_url_and_bad_prefix_before_connecting(void) {
    char err[256] = "";
    CHECK(herald_pub_connect("http://127.0.0.1:1", NULL, err, sizeof err) == NULL);
    CHECK(strncmp(err, "invalid Redis URL: not a redis:// URL", 37) == 0);

    CHECK(herald_pub_connect("redis://127.0.0.1:1", "has space:", err, sizeof err) == NULL);
    CHECK(strncmp(err, "invalid channel prefix", 22) == 0);
    /* Braces would move the history keys to another cluster slot. */
    CHECK(herald_pub_connect("redis://127.0.0.1:1", "{herald}:", err, sizeof err) == NULL);
    CHECK(strncmp(err, "invalid channel prefix", 22) == 0);
}

static void test_cluster_connect_refuses_bad_seeds_and_names_the_unreachable_seed(void) {
    char err[512] = "";
    CHECK(herald_pub_connect_cluster("", NULL, err, sizeof err) == NULL);
    CHECK(strncmp(err, "invalid Redis Cluster seeds: ", 29) == 0);
    CHECK(herald_pub_connect_cluster("127.0.0.1:1,,127.0.0.1:2", NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "empty seed node") != NULL);
    CHECK(herald_pub_connect_cluster("127.0.0.1:1", "{herald}:", err, sizeof err) == NULL);
    CHECK(strncmp(err, "invalid channel prefix", 22) == 0);

    int port = refused_port();
    CHECK(port > 0);
    char seeds[128], expected[160];
    snprintf(seeds, sizeof seeds, "redis://:hunter2@127.0.0.1:%d,127.0.0.1:%d", port, port);
    CHECK(herald_pub_connect_cluster(seeds, NULL, err, sizeof err) == NULL);
    snprintf(
        expected, sizeof expected,
        "cannot read the Redis Cluster slot map: cannot connect to Redis at 127.0.0.1:%d: ", port);
    CHECK(strncmp(err, expected, strlen(expected)) == 0);
    CHECK(strstr(err, "hunter2") == NULL);
}

int main(void) {
    RUN(test_refused_events_fail_with_a_sentence_and_send_nothing);
    RUN(test_channel_of_128_bytes_passes_and_129_is_refused_with_short_quote);
    RUN(test_size_limit_is_inclusive_and_settable);
    RUN(test_event_with_history_is_evalsha_falling_back_to_eval);
    RUN(test_malformed_script_reply_is_a_redis_error);
    RUN(test_history_settings_out_of_range_are_refused);
    RUN(test_accepted_event_without_history_is_one_binary_safe_publish_with_the_prefix);
    RUN(test_redis_error_retries_once_then_reports_both_reasons);
    RUN(test_connect_to_refused_port_fails_with_a_message);
    RUN(test_connect_refuses_bad_url_and_bad_prefix_before_connecting);
    RUN(test_cluster_connect_refuses_bad_seeds_and_names_the_unreachable_seed);
    return TEST_SUMMARY();
}
