/* publisher.c -- herald-publisher: services that push realistic event streams.
 *
 *     herald-publisher [--redis URL | --redis-cluster SEEDS] [--prefix P]
 *                      --kind apps|deployments|storage|all
 *                      [--rate EVENTS_PER_SEC] [--count N] [--seed N] [--wait-redis S]
 *                      [--history-size N] [--history-ttl S] [--no-history] [-v]
 *
 * Each kind is a small simulation with state, so the stream is consistent: an
 * app is created before it is updated or deleted, a file is uploaded before it
 * is replaced, and a deployment goes started -> status (building, deploying,
 * verifying) -> completed | failed with the same deploymentId and appId on
 * every event. With --count, the generator plans deployments so that every one
 * it starts also ends within the count. Every event carries "timestamp" (ISO
 * 8601 UTC, milliseconds) and "seq" (1, 2, ... in this process). The same
 * --seed gives the same stream (ids included), timestamps aside.
 *
 * Events are paced on an absolute monotonic schedule. A Redis failure is
 * logged and the same event retried every second, so a restart of Redis
 * delays the stream without breaking a deployment's sequence; at start the
 * connection is retried for --wait-redis seconds, then the exit status is 1.
 * SIGINT and SIGTERM end the process with status 0. Events go into each
 * channel's history (libheraldpub's default) unless --no-history. Every
 * numeric option is range-checked: a value outside its range is exit 2. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "herald_pub.h"
#include "history.h"
#include "redis_url.h"

enum {
    EXIT_DONE = 0,
    EXIT_FAILURE_REDIS = 1,
    EXIT_BAD_USAGE = 2,
};

enum publisher_kind {
    KIND_APPS = 1,
    KIND_DEPLOYMENTS = 2,
    KIND_STORAGE = 4,
    KIND_ALL = KIND_APPS | KIND_DEPLOYMENTS | KIND_STORAGE,
};

#define MAX_APPS              8
#define MAX_FILES             12
#define MAX_DEPLOYMENTS       3 /* running at the same time */
#define DEPLOYMENT_MIN_EVENTS 3 /* started, one status, completed/failed */
#define DEPLOYMENT_MAX_EVENTS 5 /* when the count does not force a longer one */
#define UUID_LEN              36
#define RATE_MIN              0.001     /* events per second: one every 1000 s */
#define RATE_MAX              1000000.0 /* one per microsecond */
#define COUNT_MAX             1000000000000000LL
#define WAIT_REDIS_MAX        86400LL

static volatile sig_atomic_t stop_requested;

struct app {
    char id[UUID_LEN + 1];
    char name[48];
    const char *owner;
    const char *runtime;
    const char *region;
    const char *status;
    int version;
    int replicas;
};

struct stored_file {
    char id[UUID_LEN + 1];
    char path[128];
    const char *content_type;
    const char *bucket;
    const char *owner;
    long long size;
};

struct deployment {
    char id[UUID_LEN + 1];
    char app_id[UUID_LEN + 1];
    char app_name[48];
    const char *environment;
    char commit[8];
    int length; /* events planned in all: started + (length - 2) status + the end */
    int step;   /* events sent so far */
    bool fails;
    long long duration_ms;
};

struct publisher {
    herald_pub *pub;
    unsigned kinds; /* enum publisher_kind bits */
    unsigned short rng[3];
    long long seq;
    long long count; /* 0: unlimited */
    long long emitted;
    bool verbose;

    struct app apps[MAX_APPS];
    int app_count;
    struct stored_file files[MAX_FILES];
    int file_count;
    struct deployment deployments[MAX_DEPLOYMENTS];
    int deployment_count;
};

static const char *const owners[] = {"u1", "u2", "u3", "u4", "u5"};
static const char *const runtimes[] = {"node20", "python3.12", "go1.22", "ruby3.3", "static"};
static const char *const regions[] = {"eu-west-1", "us-east-1", "ap-southeast-2"};
static const char *const name_words[] = {"blue",   "quiet",  "rapid",  "amber",  "lunar",  "brisk",
                                         "solar",  "misty",  "harbor", "falcon", "orchid", "delta",
                                         "cobalt", "willow", "summit", "comet"};
static const char *const app_statuses[] = {"running", "stopped", "sleeping", "crashed", "running"};
static const char *const environments[] = {"production", "staging", "preview"};
static const char *const stages[] = {"building", "deploying", "verifying"};
static const char *const stage_messages[] = {"building image", "rolling out replicas",
                                             "running health checks"};
static const char *const failure_reasons[] = {/* by stage */
                                              "build failed: npm ERR! missing script: build",
                                              "rollout stalled: 0/2 replicas ready",
                                              "health check failed: GET /healthz returned 503"};
static const char *const buckets[] = {"user-uploads", "assets", "backups"};

struct file_type {
    const char *extension;
    const char *content_type;
    long long min_size, max_size;
};

static const struct file_type file_types[] = {
    {"png", "image/png", 20000, 4000000},        {"jpg", "image/jpeg", 30000, 6000000},
    {"pdf", "application/pdf", 50000, 12000000}, {"json", "application/json", 200, 80000},
    {"csv", "text/csv", 1000, 20000000},         {"mp4", "video/mp4", 2000000, 900000000},
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Seeded with nrand48/erand48 so that --seed reproduces a stream. */
static long random_below(struct publisher *pub, long n) {
    return nrand48(pub->rng) % n;
}

static double random_unit(struct publisher *pub) {
    return erand48(pub->rng);
}

static const char *random_pick(struct publisher *pub, const char *const *items, size_t n) {
    return items[random_below(pub, (long)n)];
}

/* A version-4-shaped UUID from the seeded generator (not for security). */
static void random_uuid(struct publisher *pub, char out[UUID_LEN + 1]) {
    unsigned char b[16];

    for (size_t i = 0; i < sizeof b; i++) b[i] = (unsigned char)random_below(pub, 256);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

static void iso_timestamp(char out[32]) {
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03ldZ", now.tv_nsec / 1000000);
}

/* Sleeps on the monotonic clock until deadline; false when a signal asked to stop. */
static bool sleep_until(const struct timespec *deadline) {
    while (!stop_requested) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline, NULL);
        if (rc == 0) return !stop_requested;
        if (rc != EINTR) return !stop_requested;
    }
    return false;
}

static void timespec_add_ns(struct timespec *t, long long ns) {
    long long total = (long long)t->tv_nsec + ns;
    t->tv_sec += (time_t)(total / 1000000000LL);
    t->tv_nsec = (long)(total % 1000000000LL);
}

/* Adds key = value (stolen) to *data; on failure drops both and leaves *data
 * NULL, which emit() reports as out of memory. */
static void add_field(json_t **data, const char *key, json_t *value) {
    if (*data && json_object_set_new(*data, key, value) == 0) return;
    if (!*data) json_decref(value);
    json_decref(*data);
    *data = NULL;
}

/* Adds timestamp and seq to data (stolen), publishes it, retries Redis
 * failures every second until they pass or a signal arrives. Returns 0, or -1
 * for an event the library refused (a bug here) or a stop request. */
static int emit(struct publisher *pub, const char *channel, json_t *data) {
    char timestamp[32];

    if (!data) {
        fprintf(stderr, "herald-publisher: out of memory building an event\n");
        return -1;
    }
    iso_timestamp(timestamp);
    if (json_object_set_new(data, "timestamp", json_string(timestamp)) < 0 ||
        json_object_set_new(data, "seq", json_integer(++pub->seq)) < 0) {
        json_decref(data);
        fprintf(stderr, "herald-publisher: out of memory building an event\n");
        return -1;
    }
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text) {
        fprintf(stderr, "herald-publisher: out of memory encoding an event\n");
        return -1;
    }

    int rc = 0;
    for (;;) {
        enum herald_pub_status status = herald_pub_publish(pub->pub, channel, text, NULL);
        if (status == HERALD_PUB_OK) break;
        fprintf(stderr, "herald-publisher: %s\n", herald_pub_last_error(pub->pub));
        if (status != HERALD_PUB_REDIS) {
            rc = -1;
            break;
        }
        struct timespec retry_at;
        clock_gettime(CLOCK_MONOTONIC, &retry_at);
        retry_at.tv_sec += 1;
        if (!sleep_until(&retry_at)) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && pub->verbose) {
        printf("%s %s\n", channel, text);
        fflush(stdout);
    }
    free(text);
    return rc;
}

/* ---- apps ---- */

static json_t *app_json(const struct app *a) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "id", a->id, "name", a->name,
                     "owner", a->owner, "status", a->status, "runtime", a->runtime, "region",
                     a->region, "version", a->version, "replicas", a->replicas);
}

static int apps_created(struct publisher *pub) {
    struct app *a = &pub->apps[pub->app_count++];

    random_uuid(pub, a->id);
    snprintf(a->name, sizeof a->name, "%s-%s-%ld",
             random_pick(pub, name_words, COUNT_OF(name_words)),
             random_pick(pub, name_words, COUNT_OF(name_words)), 10 + random_below(pub, 90));
    a->owner = random_pick(pub, owners, COUNT_OF(owners));
    a->runtime = random_pick(pub, runtimes, COUNT_OF(runtimes));
    a->region = random_pick(pub, regions, COUNT_OF(regions));
    a->status = "created";
    a->version = 1;
    a->replicas = 1 + (int)random_below(pub, 3);
    return emit(pub, "apps:created", app_json(a));
}

static int apps_step(struct publisher *pub) {
    if (pub->app_count == 0 || (pub->app_count < MAX_APPS && random_unit(pub) < 0.2))
        return apps_created(pub);

    int index = (int)random_below(pub, pub->app_count);
    struct app *a = &pub->apps[index];
    double r = random_unit(pub);

    if (r < 0.3) {
        int before = a->replicas;
        a->replicas = 1 + (int)random_below(pub, 5);
        json_t *data = app_json(a);
        add_field(&data, "changes",
                  json_pack("{s:{s:i, s:i}}", "replicas", "from", before, "to", a->replicas));
        return emit(pub, "apps:updated", data);
    }
    if (r < 0.55) {
        a->version++;
        a->status = "running";
        json_t *data = app_json(a);
        add_field(&data, "url", json_sprintf("https://%s.apps.example.com", a->name));
        return emit(pub, "apps:deployed", data);
    }
    if (r < 0.85 || pub->app_count <= 2) {
        const char *previous = a->status;
        do a->status = random_pick(pub, app_statuses, COUNT_OF(app_statuses));
        while (strcmp(a->status, previous) == 0);
        json_t *data = app_json(a);
        add_field(&data, "previousStatus", json_string(previous));
        return emit(pub, "apps:status", data);
    }
    a->status = "deleted";
    json_t *data = app_json(a);
    pub->apps[index] = pub->apps[--pub->app_count];
    return emit(pub, "apps:deleted", data);
}

/* ---- storage ---- */

static json_t *file_json(const struct stored_file *f) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "fileId", f->id, "path", f->path, "size",
                     (json_int_t)f->size, "contentType", f->content_type, "bucket", f->bucket,
                     "owner", f->owner);
}

static long long random_size(struct publisher *pub, const struct file_type *t) {
    return t->min_size + (long long)(random_unit(pub) * (double)(t->max_size - t->min_size));
}

static int storage_step(struct publisher *pub) {
    if (pub->file_count == 0 || (pub->file_count < MAX_FILES && random_unit(pub) < 0.5)) {
        struct stored_file *f = &pub->files[pub->file_count++];
        const struct file_type *t = &file_types[random_below(pub, COUNT_OF(file_types))];
        random_uuid(pub, f->id);
        f->owner = random_pick(pub, owners, COUNT_OF(owners));
        f->bucket = random_pick(pub, buckets, COUNT_OF(buckets));
        f->content_type = t->content_type;
        f->size = random_size(pub, t);
        snprintf(f->path, sizeof f->path, "%s/%s-%s-%04ld.%s", f->owner,
                 random_pick(pub, name_words, COUNT_OF(name_words)),
                 random_pick(pub, name_words, COUNT_OF(name_words)), random_below(pub, 10000),
                 t->extension);
        return emit(pub, "storage:uploaded", file_json(f));
    }

    int index = (int)random_below(pub, pub->file_count);
    struct stored_file *f = &pub->files[index];
    if (random_unit(pub) < 0.6) {
        long long previous = f->size;
        for (size_t i = 0; i < COUNT_OF(file_types); i++) {
            if (strcmp(file_types[i].content_type, f->content_type) == 0)
                f->size = random_size(pub, &file_types[i]);
        }
        json_t *data = file_json(f);
        add_field(&data, "previousSize", json_integer(previous));
        return emit(pub, "storage:updated", data);
    }
    json_t *data = file_json(f);
    pub->files[index] = pub->files[--pub->file_count];
    return emit(pub, "storage:deleted", data);
}

/* ---- deployments ---- */

/* Events still owed by the deployments already started. */
static long long deployments_pending(const struct publisher *pub) {
    long long pending = 0;
    for (int i = 0; i < pub->deployment_count; i++)
        pending += pub->deployments[i].length - pub->deployments[i].step;
    return pending;
}

/* Events of the count not yet promised to a running deployment (LLONG_MAX-ish
 * when unlimited). */
static long long deployments_free_budget(const struct publisher *pub) {
    if (pub->count == 0) return 1LL << 62;
    return pub->count - pub->emitted - deployments_pending(pub);
}

static bool deployments_can_start(const struct publisher *pub) {
    return pub->deployment_count < MAX_DEPLOYMENTS &&
           deployments_free_budget(pub) >= DEPLOYMENT_MIN_EVENTS;
}

static void deployment_plan(struct publisher *pub, struct deployment *d) {
    long long budget = deployments_free_budget(pub);
    int length = DEPLOYMENT_MIN_EVENTS +
                 (int)random_below(pub, DEPLOYMENT_MAX_EVENTS - DEPLOYMENT_MIN_EVENTS + 1);

    if (length > budget) length = (int)budget;
    /* Alone, deployments must use the whole count: a remainder too small for
     * another deployment is absorbed as extra status events by this one. */
    if (pub->kinds == KIND_DEPLOYMENTS && pub->count != 0 &&
        budget - length < DEPLOYMENT_MIN_EVENTS)
        length = (int)budget;
    d->length = length;
    d->step = 0;
    d->fails = random_unit(pub) < 0.25;
    d->duration_ms = 0;
}

static int deployment_start(struct publisher *pub) {
    /* Planned before it counts as running, so the budget excludes it. */
    struct deployment *d = &pub->deployments[pub->deployment_count];

    deployment_plan(pub, d);
    pub->deployment_count++;
    random_uuid(pub, d->id);
    if (pub->app_count > 0) {
        const struct app *a = &pub->apps[random_below(pub, pub->app_count)];
        memcpy(d->app_id, a->id, sizeof d->app_id);
        memcpy(d->app_name, a->name, sizeof d->app_name);
    } else {
        random_uuid(pub, d->app_id);
        snprintf(d->app_name, sizeof d->app_name, "%s-%s",
                 random_pick(pub, name_words, COUNT_OF(name_words)),
                 random_pick(pub, name_words, COUNT_OF(name_words)));
    }
    d->environment = random_pick(pub, environments, COUNT_OF(environments));
    snprintf(d->commit, sizeof d->commit, "%07lx", random_below(pub, 0x10000000L));
    d->step = 1;
    return emit(pub, "deployments:started",
                json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "deploymentId", d->id,
                          "appId", d->app_id, "appName", d->app_name, "status", "started",
                          "environment", d->environment, "commit", d->commit, "branch", "main",
                          "triggeredBy", random_pick(pub, owners, COUNT_OF(owners))));
}

static int deployment_advance(struct publisher *pub, int index) {
    struct deployment *d = &pub->deployments[index];
    int statuses = d->length - 2;
    json_t *data;
    const char *channel;

    if (d->step < d->length - 1) {
        int i = d->step - 1;
        int stage = (int)((long)i * (long)COUNT_OF(stages) / statuses);
        d->duration_ms += 5000 + random_below(pub, 40000);
        channel = "deployments:status";
        data = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s}", "deploymentId", d->id, "appId",
                         d->app_id, "appName", d->app_name, "status", stages[stage], "progress",
                         (i + 1) * 100 / (statuses + 1), "message", stage_messages[stage]);
    } else {
        int last_stage = (int)((long)(statuses - 1) * (long)COUNT_OF(stages) / statuses);
        d->duration_ms += 2000 + random_below(pub, 10000);
        if (d->fails) {
            channel = "deployments:failed";
            data = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "deploymentId", d->id, "appId",
                             d->app_id, "appName", d->app_name, "status", "failed", "stage",
                             stages[last_stage], "error", failure_reasons[last_stage], "durationMs",
                             (json_int_t)d->duration_ms);
        } else {
            channel = "deployments:completed";
            data =
                json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "deploymentId", d->id, "appId",
                          d->app_id, "appName", d->app_name, "status", "completed", "environment",
                          d->environment, "durationMs", (json_int_t)d->duration_ms);
            add_field(&data, "url",
                      json_sprintf("https://%s.%s.example.com", d->app_name, d->environment));
        }
    }
    d->step++;
    int rc = emit(pub, channel, data);
    if (d->step == d->length) pub->deployments[index] = pub->deployments[--pub->deployment_count];
    return rc;
}

static int deployments_step(struct publisher *pub) {
    if (pub->deployment_count == 0 || (deployments_can_start(pub) && random_unit(pub) < 0.3))
        return deployment_start(pub);
    return deployment_advance(pub, (int)random_below(pub, pub->deployment_count));
}

/* ---- scheduling ---- */

static int next_event(struct publisher *pub) {
    bool deployments_on = pub->kinds & KIND_DEPLOYMENTS;
    bool deployments_ready =
        deployments_on && (pub->deployment_count > 0 || deployments_can_start(pub));

    /* What is left of the count is owed to running deployments: finish them. */
    if (deployments_on && pub->count != 0 && pub->count - pub->emitted <= deployments_pending(pub))
        return deployments_step(pub);

    enum publisher_kind choices[3];
    int n = 0;
    if (pub->kinds & KIND_APPS) choices[n++] = KIND_APPS;
    if (deployments_ready) choices[n++] = KIND_DEPLOYMENTS;
    if (pub->kinds & KIND_STORAGE) choices[n++] = KIND_STORAGE;
    if (n == 0) return deployments_step(pub);
    switch (choices[random_below(pub, n)]) {
        case KIND_APPS: return apps_step(pub);
        case KIND_STORAGE: return storage_step(pub);
        default: return deployments_step(pub);
    }
}

static void on_stop_signal(int signo) {
    (void)signo;
    stop_requested = 1;
}

static int install_signal_handlers(void) {
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: the pacing sleep must wake up to notice the request. */
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return -1;
    /* A write to a Redis that went away must fail with EPIPE, not kill us. */
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0) return -1;
    return 0;
}

/* Connects, retrying every second for up to wait_seconds: a service started
 * next to Redis (docker-compose) may come up first. NULL when it never
 * succeeded, a signal asked to stop, or the settings are bad (*bad_settings:
 * the URL is checked before, so that is the prefix); the reasons are logged. */
static herald_pub *connect_waiting(const char *url, const char *seeds, const char *prefix,
                                   long long wait_seconds, bool *bad_settings) {
    struct timespec give_up, retry_at;
    char err[512];

    *bad_settings = false;
    clock_gettime(CLOCK_MONOTONIC, &give_up);
    give_up.tv_sec += (time_t)(wait_seconds < 1000000000LL ? wait_seconds : 1000000000LL);
    for (;;) {
        herald_pub *p = seeds ? herald_pub_connect_cluster(seeds, prefix, err, sizeof err)
                              : herald_pub_connect(url, prefix, err, sizeof err);
        if (p) return p;
        if (strncmp(err, "invalid", 7) == 0) {
            fprintf(stderr, "herald-publisher: %s\n", err);
            *bad_settings = true;
            return NULL;
        }
        clock_gettime(CLOCK_MONOTONIC, &retry_at);
        bool again = retry_at.tv_sec < give_up.tv_sec ||
                     (retry_at.tv_sec == give_up.tv_sec && retry_at.tv_nsec < give_up.tv_nsec);
        retry_at.tv_sec += 1;
        if (retry_at.tv_sec > give_up.tv_sec ||
            (retry_at.tv_sec == give_up.tv_sec && retry_at.tv_nsec > give_up.tv_nsec))
            retry_at = give_up;
        fprintf(stderr, "herald-publisher: %s%s\n", err, again ? "; retrying in 1 s" : "");
        if (!again || !sleep_until(&retry_at)) return NULL;
    }
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: herald-publisher [--redis URL | --redis-cluster SEEDS] [--prefix P] --kind "
        "apps|deployments|storage|all\n"
        "                        [--rate EVENTS_PER_SEC] [--count N] [--seed N]\n"
        "                        [--wait-redis SECONDS] [--history-size N] [--history-ttl S]\n"
        "                        [--no-history] [-v]\n"
        "\n"
        "Publishes a consistent stream of simulated app, deployment and storage events.\n"
        "\n"
        "  --redis URL     default $HERALD_REDIS, else " HERALD_PUB_DEFAULT_URL "\n"
        "  --redis-cluster SEEDS  a Redis Cluster instead (default $HERALD_REDIS_CLUSTER):\n"
        "                  HOST:PORT[,HOST:PORT...] or redis://[[user]:password@]host:port\n"
        "                  items; SPUBLISH on each channel's slot owner, MOVED/ASK followed\n"
        "  --prefix P      default $HERALD_CHANNEL_PREFIX, else \"" HERALD_PUB_DEFAULT_PREFIX "\"\n"
        "  --kind K        apps, deployments, storage, or all\n"
        "  --rate R        events per second, 0.001 to 1000000 (default 2)\n"
        "  --count N       stop after N events, 0 to 10^15 (default 0: run until\n"
        "                  SIGINT/SIGTERM); every deployment started within N also ends\n"
        "                  within N\n"
        "  --seed N        seed for a reproducible stream, 0 to 2^63-1\n"
        "  --wait-redis S  at start, retry connecting for up to S seconds, 0 to 86400\n"
        "                  (default 10)\n"
        "  --history-size N  events kept per channel, 1 to " HISTORY_MAX_SIZE_TEXT
        " (default 1000)\n"
        "  --history-ttl S   seconds events are kept, 1 to " HISTORY_MAX_TTL_TEXT " (default 600)\n"
        "  --no-history    plain PUBLISH, no history\n"
        "  -v, --verbose   print each event as \"CHANNEL JSON\"\n"
        "\n"
        "Exit status: 0 done (or stopped by a signal), 1 Redis failure, 2 bad usage.\n");
}

static int parse_kind(const char *s, unsigned *kinds) {
    static const struct {
        const char *name;
        unsigned kinds;
    } table[] = {{"apps", KIND_APPS},
                 {"deployments", KIND_DEPLOYMENTS},
                 {"storage", KIND_STORAGE},
                 {"all", KIND_ALL}};
    for (size_t i = 0; i < COUNT_OF(table); i++) {
        if (strcmp(s, table[i].name) == 0) {
            *kinds = table[i].kinds;
            return 0;
        }
    }
    return -1;
}

/* A decimal integer in [min, max]: no sign, no trailing text, no overflow. */
static int parse_long_long(const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long value = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0' || *s == '-' || *s == '+' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

int main(int argc, char **argv) {
    static const struct option options[] = {
        {"redis", required_argument, NULL, 'r'},
        {"redis-cluster", required_argument, NULL, 'C'},
        {"prefix", required_argument, NULL, 'p'},
        {"kind", required_argument, NULL, 'k'},
        {"rate", required_argument, NULL, 'R'},
        {"count", required_argument, NULL, 'c'},
        {"seed", required_argument, NULL, 's'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"wait-redis", required_argument, NULL, 'w'},
        {"history-size", required_argument, NULL, 'S'},
        {"history-ttl", required_argument, NULL, 'T'},
        {"no-history", no_argument, NULL, 'N'},
        {NULL, 0, NULL, 0},
    };
    long long history_size = HERALD_PUB_HISTORY_SIZE, history_ttl = HERALD_PUB_HISTORY_TTL;
    bool history = true;
    struct publisher pub;
    const char *url = getenv("HERALD_REDIS");
    const char *seeds = NULL;
    bool url_given = false;
    const char *prefix = getenv("HERALD_CHANNEL_PREFIX");
    const char *kind_arg = NULL;
    long long wait_seconds = 10;
    double rate = 2.0;
    long long seed = (long long)time(NULL) ^ ((long long)getpid() << 16);
    int opt;

    memset(&pub, 0, sizeof pub);
    if (!url || !*url) url = HERALD_PUB_DEFAULT_URL;
    if (!prefix) prefix = HERALD_PUB_DEFAULT_PREFIX;
    while ((opt = getopt_long(argc, argv, "vh", options, NULL)) != -1) {
        char *end;
        switch (opt) {
            case 'r':
                url = optarg;
                url_given = true;
                break;
            case 'C': seeds = optarg; break;
            case 'p': prefix = optarg; break;
            case 'k':
                kind_arg = optarg;
                if (parse_kind(optarg, &pub.kinds) < 0) {
                    fprintf(stderr, "herald-publisher: unknown --kind '%s'\n", optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 'R':
                /* The interval is 1e9 / rate nanoseconds in a long long: a tiny
                 * rate would overflow it (undefined behaviour), so the range
                 * is explicit. NaN fails every comparison and is refused. */
                errno = 0;
                rate = strtod(optarg, &end);
                if (errno || end == optarg || *end != '\0' ||
                    !(rate >= RATE_MIN && rate <= RATE_MAX)) {
                    fprintf(stderr,
                            "herald-publisher: --rate wants events per second from %.3f to %.0f, "
                            "not \"%s\"\n",
                            RATE_MIN, RATE_MAX, optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 'c':
                if (parse_long_long(optarg, 0, COUNT_MAX, &pub.count) < 0) {
                    fprintf(stderr,
                            "herald-publisher: --count wants a number from 0 to %lld, not \"%s\"\n",
                            COUNT_MAX, optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 's':
                if (parse_long_long(optarg, 0, LLONG_MAX, &seed) < 0) {
                    fprintf(stderr,
                            "herald-publisher: --seed wants a number from 0 to %lld, not \"%s\"\n",
                            LLONG_MAX, optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 'w':
                if (parse_long_long(optarg, 0, WAIT_REDIS_MAX, &wait_seconds) < 0) {
                    fprintf(stderr,
                            "herald-publisher: --wait-redis wants seconds from 0 to %lld, not "
                            "\"%s\"\n",
                            WAIT_REDIS_MAX, optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 'S':
                if (parse_long_long(optarg, 1, HISTORY_MAX_SIZE, &history_size) < 0) {
                    fprintf(stderr,
                            "herald-publisher: --history-size wants a number of events from 1 "
                            "to %ld, not \"%s\"\n",
                            HISTORY_MAX_SIZE, optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 'T':
                if (parse_long_long(optarg, 1, HISTORY_MAX_TTL, &history_ttl) < 0) {
                    fprintf(stderr,
                            "herald-publisher: --history-ttl wants seconds from 1 to %ld, not "
                            "\"%s\"\n",
                            HISTORY_MAX_TTL, optarg);
                    return EXIT_BAD_USAGE;
                }
                break;
            case 'N': history = false; break;
            case 'v': pub.verbose = true; break;
            case 'h': usage(stdout); return EXIT_DONE;
            default: usage(stderr); return EXIT_BAD_USAGE;
        }
    }
    if (optind != argc || pub.kinds == 0) {
        fprintf(stderr, "herald-publisher: %s\n",
                pub.kinds == 0 ? "--kind is required" : "unexpected argument");
        usage(stderr);
        return EXIT_BAD_USAGE;
    }
    if (pub.kinds == KIND_DEPLOYMENTS && pub.count > 0 && pub.count < DEPLOYMENT_MIN_EVENTS) {
        fprintf(stderr,
                "herald-publisher: --count %lld is too small for one whole deployment "
                "(at least %d events)\n",
                pub.count, DEPLOYMENT_MIN_EVENTS);
        return EXIT_BAD_USAGE;
    }

    if (seeds && url_given) {
        fprintf(stderr, "herald-publisher: give --redis or --redis-cluster, not both\n");
        return EXIT_BAD_USAGE;
    }
    if (!seeds && !url_given) {
        const char *env = getenv("HERALD_REDIS_CLUSTER");
        if (env && *env) seeds = env;
    }
    struct redis_url parsed;
    char err[512];
    if (seeds) {
        struct redis_cluster cluster;
        if (redis_cluster_parse(seeds, &cluster, err, sizeof err) < 0) {
            fprintf(stderr, "herald-publisher: invalid --redis-cluster: %s\n", err);
            return EXIT_BAD_USAGE;
        }
        /* Named in the start message: the first seed. */
        memset(&parsed, 0, sizeof parsed);
        parsed.host = strdup(cluster.seeds[0].host);
        parsed.port = cluster.seeds[0].port;
        redis_cluster_free(&cluster);
        if (!parsed.host) {
            fprintf(stderr, "herald-publisher: out of memory\n");
            return EXIT_FAILURE_REDIS;
        }
    } else if (redis_url_parse(url, &parsed, err, sizeof err) < 0) {
        fprintf(stderr, "herald-publisher: invalid Redis URL: %s\n", err);
        return EXIT_BAD_USAGE;
    }
    pub.rng[0] = 0x330e;
    pub.rng[1] = (unsigned short)(seed & 0xffff);
    pub.rng[2] = (unsigned short)((seed >> 16) & 0xffff);
    if (install_signal_handlers() < 0) {
        perror("herald-publisher: sigaction");
        redis_url_free(&parsed);
        return EXIT_FAILURE_REDIS;
    }

    bool bad_settings;
    pub.pub = connect_waiting(url, seeds, prefix, wait_seconds, &bad_settings);
    if (!pub.pub) {
        redis_url_free(&parsed);
        if (bad_settings) return EXIT_BAD_USAGE;
        return stop_requested ? EXIT_DONE : EXIT_FAILURE_REDIS;
    }
    /* In range: checked while parsing the options. */
    herald_pub_set_history(pub.pub, history, (unsigned long)history_size,
                           (unsigned long)history_ttl);
    fprintf(stderr, "herald-publisher: publishing %s events at %g/s to %s%s:%d (prefix \"%s\")\n",
            kind_arg, rate, seeds ? "the Redis Cluster of " : "", parsed.host, parsed.port, prefix);
    redis_url_free(&parsed);

    long long interval_ns = (long long)(1e9 / rate);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    int rc = EXIT_DONE;
    while (!stop_requested && (pub.count == 0 || pub.emitted < pub.count)) {
        if (next_event(&pub) < 0) {
            if (!stop_requested) rc = EXIT_FAILURE_REDIS;
            break;
        }
        pub.emitted++;
        if (pub.count != 0 && pub.emitted >= pub.count) break;

        /* Keep an absolute schedule, but do not burst to catch up after a stall. */
        struct timespec now;
        timespec_add_ns(&next, interval_ns);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec + 1) next = now;
        if (!sleep_until(&next)) break;
    }
    herald_pub_close(pub.pub);
    return rc;
}
