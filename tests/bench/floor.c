/* floor.c -- the syscall floor of a delivery on this machine, for the benchmark
 * (tests/bench/run.sh).
 *
 * Opens C loopback TCP connections (TCP_NODELAY, as the gateway's client
 * sockets), then writes W messages of S bytes round robin over them, one
 * write() each, while a forked reader drains every connection with epoll.
 * Prints the CPU time (getrusage: user + system) of the writing process per
 * write: what one delivery costs when it needs a syscall of its own. The
 * reader's CPU per write is printed too (the client's share of the same path).
 *
 * With --rate R the writes are paced: every millisecond the writer sleeps, then
 * writes what R per second has due, so the reader sleeps between ticks too and
 * each tick pays the wake-ups a server pays when events arrive at that rate
 * and are read once per millisecond (the gateway's --read-coalesce). Without
 * it the writer runs flat out and the reader never sleeps: the bare syscall.
 *
 *   floor [--connections C] [--writes W] [--size S] [--rate R]
 *         defaults 1000, 200000, 150, 0 (flat out)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Accepts count connections, then reads until every one is closed. Writes its
 * CPU seconds over the reading phase and the bytes read to report_fd. */
static int reader(int listener, long count, int report_fd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return 1;
    for (long i = 0; i < count; i++) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            perror("floor: accept");
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) return 1;
    }
    double c0 = cpu_seconds();
    uint64_t bytes = 0;
    long open = count;
    static char buf[65536];
    struct epoll_event evs[256];
    while (open > 0) {
        int n = epoll_wait(ep, evs, 256, 10000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "floor: reader stalled\n");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            for (;;) {
                ssize_t got = read(evs[i].data.fd, buf, sizeof buf);
                if (got > 0) {
                    bytes += (uint64_t)got;
                    continue;
                }
                if (got == 0) {
                    close(evs[i].data.fd);
                    open--;
                }
                break; /* EAGAIN: drained */
            }
        }
    }
    double report[2] = {cpu_seconds() - c0, (double)bytes};
    return write(report_fd, report, sizeof report) == sizeof report ? 0 : 1;
}

int main(int argc, char **argv) {
    long conns = 1000, writes = 200000, size = 150, rate = 0;
    static const struct option longopts[] = {{"connections", required_argument, NULL, 'c'},
                                             {"writes", required_argument, NULL, 'w'},
                                             {"size", required_argument, NULL, 's'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
            case 'c': conns = atol(optarg); break;
            case 'w': writes = atol(optarg); break;
            case 's': size = atol(optarg); break;
            case 'r': rate = atol(optarg); break;
            default:
                fprintf(stderr,
                        "usage: floor [--connections C] [--writes W] [--size S] [--rate R]\n");
                return 2;
        }
    }
    if (conns < 1 || conns > 100000 || writes < 1 || size < 1 || size > 65536 || rate < 0 ||
        rate > 10000000) {
        fprintf(stderr, "floor: an option is out of range\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 4096) != 0 || getsockname(listener, (struct sockaddr *)&addr, &alen)) {
        perror("floor: listen");
        return 1;
    }
    int report[2];
    if (pipe(report) != 0) return 1;
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        close(report[0]);
        _exit(reader(listener, conns, report[1]));
    }
    close(report[1]);
    close(listener);

    int *fds = calloc((size_t)conns, sizeof *fds);
    char *msg = malloc((size_t)size);
    if (!fds || !msg) return 1;
    memset(msg, 'x', (size_t)size);
    int one = 1;
    for (long i = 0; i < conns; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&addr, sizeof addr) != 0) {
            perror("floor: connect");
            kill(child, SIGKILL);
            return 1;
        }
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    double c0 = cpu_seconds(), w0 = wall_seconds();
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    for (long i = 0; i < writes; i++) {
        while (rate > 0 && (double)i >= (wall_seconds() - w0) * (double)rate) {
            tick.tv_nsec += 1000000; /* the next millisecond */
            if (tick.tv_nsec >= 1000000000) {
                tick.tv_sec++;
                tick.tv_nsec -= 1000000000;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
        }
        const char *p = msg;
        size_t left = (size_t)size;
        while (left > 0) {
            ssize_t w = write(fds[i % conns], p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                perror("floor: write");
                kill(child, SIGKILL);
                return 1;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    double cpu = cpu_seconds() - c0, wall = wall_seconds() - w0;
    for (long i = 0; i < conns; i++) close(fds[i]);
    double got[2] = {0, 0};
    ssize_t n = read(report[0], got, sizeof got);
    int status = 0;
    waitpid(child, &status, 0);
    if (n != sizeof got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "floor: the reader failed\n");
        return 1;
    }
    if ((uint64_t)got[1] != (uint64_t)writes * (uint64_t)size) {
        fprintf(stderr, "floor: the reader got %.0f bytes of %ld\n", got[1], writes * size);
        return 1;
    }
    printf("mode=floor connections=%ld writes=%ld size=%ld rate=%ld wall_s=%.3f writer_cpu_s=%.3f "
           "write_us=%.3f reader_cpu_s=%.3f read_us_per_write=%.3f\n",
           conns, writes, size, rate, wall, cpu, cpu / (double)writes * 1e6, got[0],
           got[0] / (double)writes * 1e6);
    free(fds);
    free(msg);
    return 0;
}
