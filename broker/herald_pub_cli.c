/* herald_pub_cli.c -- herald-pub: publish Herald events from the shell.
 *
 *     herald-pub [--redis URL | --redis-cluster SEEDS] [--prefix P] [--history-size N]
 *                [--history-ttl S] [--no-history] [--channel-rules FILE] [-v] CHANNEL [JSON]
 *
 * With JSON given, publishes that one event. Without it (or with "-"), reads
 * stdin and publishes one event per non-empty line, in order, so a stream can
 * be piped in. Stops at the first line that fails. Events go into the
 * channel's history unless --no-history or the rules file says otherwise, and
 * each one's offset is printed on stdout, one line per event. Exit status: 0
 * when every event was published, 1 on a Redis failure (on a cluster also: no
 * node answers, or an event still redirected after HERALD_PUB_MAX_REDIRECTS
 * sends), 2 on bad usage (an option out of range, a bad rules file, both
 * --redis and --redis-cluster), a bad URL or seed list, a bad channel name or
 * bad JSON (for stdin input the message names the line).
 *
 *     herald-pub --user-channel ID
 *
 * prints the channel user ID receives its own events on (user:<id>, or
 * userhash:<sha256 hex> for ids outside the channel alphabet) and exits,
 * without touching Redis. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "herald_pub.h"
#include "history.h"
#include "redis_url.h"

enum {
    EXIT_PUBLISHED = 0,
    EXIT_REDIS = 1,
    EXIT_USAGE = 2,
};

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: herald-pub [--redis URL | --redis-cluster SEEDS] [--prefix P]\n"
        "                 [--history-size N] [--history-ttl S] [--no-history]\n"
        "                 [--channel-rules FILE] [-v] CHANNEL [JSON]\n"
        "       herald-pub --user-channel ID\n"
        "\n"
        "Publishes JSON as a Herald event on CHANNEL (Redis channel PREFIX+CHANNEL).\n"
        "Without JSON, or with \"-\", reads one event per line from stdin.\n"
        "Each event is kept in the channel's history and its offset (\"<ms>-<seq>\")\n"
        "is printed on stdout, one line per event, in publish order; events\n"
        "published without history print nothing.\n"
        "\n"
        "  --redis URL          redis://[[user]:password@]host[:port][/db]\n"
        "                       (default $HERALD_REDIS, else " HERALD_PUB_DEFAULT_URL ")\n"
        "  --redis-cluster SEEDS  a Redis Cluster instead: HOST:PORT[,HOST:PORT...], items\n"
        "                       may be redis://[[user]:password@]host:port (credentials\n"
        "                       go to every node); default $HERALD_REDIS_CLUSTER.\n"
        "                       Events go by SPUBLISH to their slot's master; MOVED and\n"
        "                       ASK are followed\n"
        "  --prefix P           Redis channel prefix, no braces\n"
        "                       (default $HERALD_CHANNEL_PREFIX, else \"" HERALD_PUB_DEFAULT_PREFIX
        "\")\n"
        "  --history-size N     keep about N events per channel (1.." HISTORY_MAX_SIZE_TEXT
        ", default %d)\n"
        "  --history-ttl S      keep events S seconds; idle history expires after S\n"
        "                       (1.." HISTORY_MAX_TTL_TEXT ", default %d)\n"
        "  --no-history         plain PUBLISH: no history, no offset\n"
        "  --channel-rules FILE per-namespace history policies (\"history\":{\"size\":N,\n"
        "                       \"ttl\":S} or false), the gateway's --acl-file format;\n"
        "                       a rule's values win over --history-size/--history-ttl\n"
        "  -v, --verbose        print \"OFFSET published to N receivers (epoch E)\"\n"
        "                       (\"published to N receivers\" without history)\n"
        "  --user-channel ID    print the channel of user ID (user:<id>, or\n"
        "                       userhash:<sha256> for ids outside [A-Za-z0-9_.:-] or too\n"
        "                       long) and exit\n"
        "  -h, --help           this help\n"
        "\n"
        "Exit status: 0 every event published, 1 Redis failure (cluster: no node\n"
        "answers, or still redirected after %d sends), 2 bad usage (an option out\n"
        "of range, a bad rules file, --redis with --redis-cluster), a bad URL or\n"
        "seed list, a bad channel or bad JSON.\n",
        HERALD_PUB_HISTORY_SIZE, HERALD_PUB_HISTORY_TTL, HERALD_PUB_MAX_REDIRECTS);
}

static int exit_status_of(enum herald_pub_status status) {
    return status == HERALD_PUB_REDIS ? EXIT_REDIS : EXIT_USAGE;
}

/* Parses a decimal integer within [min, max] (no sign, no trailing text). */
static int parse_range(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long value = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || *s == '-' || *s == '+' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

/* The line of stdout for one published event (flushed, so a reader of a pipe
 * sees each offset as soon as its event is out). */
static void report(const struct herald_pub_result *r, int verbose) {
    if (verbose && r->offset[0])
        printf("%s published to %ld receivers (epoch %s)\n", r->offset, r->receivers, r->epoch);
    else if (verbose)
        printf("published to %ld receivers\n", r->receivers);
    else if (r->offset[0])
        printf("%s\n", r->offset);
    else
        return;
    fflush(stdout);
}

static int publish_one(herald_pub *p, const char *channel, const char *json, int verbose) {
    struct herald_pub_result result;
    enum herald_pub_status status = herald_pub_publish_event(p, channel, json, &result);

    if (status != HERALD_PUB_OK) {
        fprintf(stderr, "herald-pub: %s\n", herald_pub_last_error(p));
        return exit_status_of(status);
    }
    report(&result, verbose);
    return EXIT_PUBLISHED;
}

/* True when line holds nothing but whitespace. */
static int blank(const char *line) {
    return line[strspn(line, " \t\r\n")] == '\0';
}

static int publish_stream(herald_pub *p, const char *channel, FILE *in, int verbose) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long line_number = 0;
    int rc = EXIT_PUBLISHED;

    while ((len = getline(&line, &cap, in)) >= 0) {
        line_number++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (blank(line)) continue;
        if ((size_t)len != strlen(line)) {
            fprintf(stderr, "herald-pub: line %ld: contains a NUL byte\n", line_number);
            rc = EXIT_USAGE;
            break;
        }
        struct herald_pub_result result;
        enum herald_pub_status status = herald_pub_publish_event(p, channel, line, &result);
        if (status != HERALD_PUB_OK) {
            fprintf(stderr, "herald-pub: line %ld: %s\n", line_number, herald_pub_last_error(p));
            rc = exit_status_of(status);
            break;
        }
        report(&result, verbose);
    }
    if (rc == EXIT_PUBLISHED && ferror(in)) {
        perror("herald-pub: reading stdin");
        rc = EXIT_USAGE;
    }
    free(line);
    return rc;
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"redis", required_argument, NULL, 'r'},
        {"redis-cluster", required_argument, NULL, 'c'},
        {"prefix", required_argument, NULL, 'p'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"user-channel", required_argument, NULL, 'u'},
        {"history-size", required_argument, NULL, 'S'},
        {"history-ttl", required_argument, NULL, 'T'},
        {"no-history", no_argument, NULL, 'N'},
        {"channel-rules", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    long history_size = HERALD_PUB_HISTORY_SIZE, history_ttl = HERALD_PUB_HISTORY_TTL;
    bool history = true;
    const char *rules_path = NULL;
    const char *url = getenv("HERALD_REDIS");
    const char *seeds = NULL;
    bool url_given = false;
    const char *prefix = getenv("HERALD_CHANNEL_PREFIX");
    const char *user_id = NULL;
    int verbose = 0, opt;

    if (!url || !*url) url = HERALD_PUB_DEFAULT_URL;
    if (!prefix) prefix = HERALD_PUB_DEFAULT_PREFIX;
    while ((opt = getopt_long(argc, argv, "r:p:vh", options, NULL)) != -1) {
        switch (opt) {
            case 'r':
                url = optarg;
                url_given = true;
                break;
            case 'c': seeds = optarg; break;
            case 'p': prefix = optarg; break;
            case 'v': verbose = 1; break;
            case 'h': usage(stdout); return EXIT_PUBLISHED;
            case 'u': user_id = optarg; break;
            case 'S':
                if (parse_range(optarg, 1, HISTORY_MAX_SIZE, &history_size) < 0) {
                    fprintf(stderr,
                            "herald-pub: --history-size wants a number of events from 1 to "
                            "%ld, not \"%s\"\n",
                            HISTORY_MAX_SIZE, optarg);
                    return EXIT_USAGE;
                }
                break;
            case 'T':
                if (parse_range(optarg, 1, HISTORY_MAX_TTL, &history_ttl) < 0) {
                    fprintf(stderr,
                            "herald-pub: --history-ttl wants seconds from 1 to %ld, not \"%s\"\n",
                            HISTORY_MAX_TTL, optarg);
                    return EXIT_USAGE;
                }
                break;
            case 'N': history = false; break;
            case 'C': rules_path = optarg; break;
            default: usage(stderr); return EXIT_USAGE;
        }
    }
    int args = argc - optind;
    if (user_id) {
        char channel[ACL_MAX_CHANNEL + 1];
        if (args != 0) {
            fprintf(stderr, "herald-pub: --user-channel takes no other arguments\n");
            return EXIT_USAGE;
        }
        if (!*user_id || acl_user_channel(user_id, channel, sizeof channel) < 0) {
            fprintf(stderr, "herald-pub: --user-channel needs a non-empty user id\n");
            return EXIT_USAGE;
        }
        printf("%s\n", channel);
        return EXIT_PUBLISHED;
    }
    if (args < 1 || args > 2) {
        fprintf(stderr, "herald-pub: %s\n", args < 1 ? "missing CHANNEL" : "too many arguments");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *channel = argv[optind];
    const char *json = args == 2 ? argv[optind + 1] : NULL;
    if (json && strcmp(json, "-") == 0) json = NULL;

    /* Checked here as well as in the library so that a bad channel is exit 2
     * even with Redis down, and even when stdin turns out to be empty. */
    if (!acl_channel_name_valid(channel, strlen(channel))) {
        fprintf(stderr,
                "herald-pub: invalid channel name '%s': use namespace:name with "
                "[A-Za-z0-9_.:-], at most %d bytes\n",
                channel, ACL_MAX_CHANNEL);
        return EXIT_USAGE;
    }

    if (seeds && url_given) {
        fprintf(stderr, "herald-pub: give --redis or --redis-cluster, not both\n");
        return EXIT_USAGE;
    }
    if (!seeds && !url_given) {
        const char *env = getenv("HERALD_REDIS_CLUSTER");
        if (env && *env) seeds = env;
    }

    /* A bad URL is a usage error (2), an unreachable Redis a Redis failure (1):
     * parse first so the two are told apart. */
    char err[512];
    if (seeds) {
        struct redis_cluster parsed;
        if (redis_cluster_parse(seeds, &parsed, err, sizeof err) < 0) {
            fprintf(stderr, "herald-pub: invalid --redis-cluster: %s\n", err);
            return EXIT_USAGE;
        }
        redis_cluster_free(&parsed);
    } else {
        struct redis_url parsed;
        if (redis_url_parse(url, &parsed, err, sizeof err) < 0) {
            fprintf(stderr, "herald-pub: invalid Redis URL: %s\n", err);
            return EXIT_USAGE;
        }
        redis_url_free(&parsed);
    }

    struct acl_rules *rules = NULL;
    if (rules_path && !(rules = acl_rules_load(rules_path, err, sizeof err))) {
        fprintf(stderr, "herald-pub: --channel-rules: %s\n", err);
        return EXIT_USAGE;
    }

    /* A write to a Redis that went away must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    herald_pub *p = seeds ? herald_pub_connect_cluster(seeds, prefix, err, sizeof err)
                          : herald_pub_connect(url, prefix, err, sizeof err);
    if (!p) {
        fprintf(stderr, "herald-pub: %s\n", err);
        acl_rules_free(rules);
        /* The URL is known good, so "invalid" can only be the prefix. */
        return strncmp(err, "invalid", 7) == 0 ? EXIT_USAGE : EXIT_REDIS;
    }
    /* In range: checked while parsing the options. */
    herald_pub_set_history(p, history, (unsigned long)history_size, (unsigned long)history_ttl);
    herald_pub_set_channel_rules(p, rules);
    int rc =
        json ? publish_one(p, channel, json, verbose) : publish_stream(p, channel, stdin, verbose);
    herald_pub_close(p);
    acl_rules_free(rules);
    return rc;
}
