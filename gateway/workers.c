/* workers.c -- the supervisor: forks the workers, restarts one that dies (with
 * a rate limit, so a crash loop does not spin), forwards SIGTERM/SIGINT for a
 * drain and exits 0 when every worker drained cleanly.
 *
 * It needs no event loop: signals are blocked and taken synchronously with
 * sigtimedwait, so the children start from a clean signal state. */
#include "workers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "iplimit.h"
#include "log.h"

/* Workers end with _exit, which skips LeakSanitizer's exit hook: in
 * sanitizer builds run the leak check explicitly first. */
#if defined(__SANITIZE_ADDRESS__)
#define HERALD_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HERALD_LEAK_CHECK 1
#endif
#endif
#ifdef HERALD_LEAK_CHECK
#include <sanitizer/lsan_interface.h>
#endif

#define RESTART_MIN_LIFETIME 2.0 /* a worker that dies younger than this backs off */
#define RESTART_MAX_DELAY    30.0

struct slot {
    pid_t pid; /* 0 when not running */
    double started;
    double restart_at; /* when to start it again, 0: not scheduled */
    unsigned quick_deaths;
    int exit_status;
};

static sigset_t handled_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);
    return set;
}

static pid_t spawn(const struct worker *tmpl, int index, bool restarted, const sigset_t *old) {
    pid_t pid = fork();
    if (pid != 0) return pid; /* parent, or -1 */
    sigprocmask(SIG_SETMASK, old, NULL);
    struct worker w = *tmpl;
    w.index = index;
    w.restarted = restarted;
    int status = worker_run(&w);
#ifdef HERALD_LEAK_CHECK
    __lsan_do_leak_check();
#endif
    _exit(status);
}

int workers_supervise(const struct worker *tmpl, int count) {
    sigset_t set = handled_signals(), old;
    sigprocmask(SIG_BLOCK, &set, &old);
    log_set_tag("supervisor");
    struct slot *slots = calloc((size_t)count, sizeof *slots);
    if (!slots) return 1;
    for (int i = 0; i < count; i++) {
        slots[i].pid = spawn(tmpl, i, false, &old);
        slots[i].started = clock_now();
        if (slots[i].pid < 0) {
            log_error("event=fork_failed error=%s", log_q(strerror(errno)));
            slots[i].pid = 0;
            slots[i].restart_at = clock_now() + 1;
        }
    }
    log_info("event=supervisor_ready workers=%d", count);

    bool stopping = false;
    double deadline = 0;
    int status = 0;
    for (;;) {
        struct timespec wait = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &wait);
        double now = clock_now();
        if (sig == SIGHUP && !stopping) {
            log_info("event=reload_requested");
            for (int i = 0; i < count; i++)
                if (slots[i].pid > 0) kill(slots[i].pid, SIGHUP);
        }
        if ((sig == SIGTERM || sig == SIGINT) && !stopping) {
            stopping = true;
            deadline = now + tmpl->cfg->drain_timeout + 2.0;
            log_info("event=stopping signal=%d", sig);
            for (int i = 0; i < count; i++)
                if (slots[i].pid > 0) kill(slots[i].pid, SIGTERM);
        }
        pid_t pid;
        int wstatus;
        while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
            for (int i = 0; i < count; i++) {
                if (slots[i].pid != pid) continue;
                struct slot *s = &slots[i];
                s->pid = 0;
                iplimit_reset_worker(tmpl->iplimit, i); /* its connections are gone */
                s->exit_status =
                    WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
                if (stopping) {
                    if (s->exit_status != 0) status = 1;
                    break;
                }
                log_error("event=worker_died worker=%d pid=%d status=%d", i, (int)pid,
                          s->exit_status);
                if (now - s->started < RESTART_MIN_LIFETIME)
                    s->quick_deaths++;
                else
                    s->quick_deaths = 0;
                double delay =
                    s->quick_deaths
                        ? 0.5 * (double)(1u << (s->quick_deaths > 6 ? 6 : s->quick_deaths))
                        : 0;
                s->restart_at = now + (delay > RESTART_MAX_DELAY ? RESTART_MAX_DELAY : delay);
            }
        }
        if (!stopping) {
            for (int i = 0; i < count; i++) {
                struct slot *s = &slots[i];
                if (s->pid != 0 || s->restart_at == 0 || now < s->restart_at) continue;
                s->pid = spawn(tmpl, i, true, &old);
                s->started = now;
                s->restart_at = 0;
                if (s->pid < 0) {
                    s->pid = 0;
                    s->restart_at = now + 1;
                } else {
                    log_info("event=worker_restarted worker=%d pid=%d", i, (int)s->pid);
                }
            }
            continue;
        }
        bool alive = false;
        for (int i = 0; i < count; i++) alive |= slots[i].pid > 0;
        if (!alive) break;
        if (now > deadline) {
            log_error("event=drain_timeout action=kill");
            for (int i = 0; i < count; i++)
                if (slots[i].pid > 0) kill(slots[i].pid, SIGKILL);
            status = 1;
            deadline = now + 5; /* reap them on the next rounds */
        }
    }
    free(slots);
    log_info("event=supervisor_exit status=%d", status);
    return status;
}
