/* iplimit.c -- shared per-address connection counters. */
#include "iplimit.h"

#include <string.h>
#include <sys/mman.h>

#define IPLIMIT_BUCKETS 65536

struct iplimit {
    int workers;
    uint32_t counts[]; /* workers x IPLIMIT_BUCKETS */
};

struct iplimit *iplimit_create(int workers) {
    size_t size = sizeof(struct iplimit) + (size_t)workers * IPLIMIT_BUCKETS * sizeof(uint32_t);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    struct iplimit *l = p; /* zero-filled by the kernel */
    l->workers = workers;
    return l;
}

uint32_t iplimit_bucket(const char *ip) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *ip; ip++) h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % IPLIMIT_BUCKETS;
}

static uint32_t *cell(struct iplimit *l, int worker, uint32_t bucket) {
    return &l->counts[(size_t)worker * IPLIMIT_BUCKETS + bucket];
}

bool iplimit_acquire(struct iplimit *l, int worker, uint32_t bucket, long max) {
    long total = 0;
    for (int w = 0; w < l->workers; w++)
        total += __atomic_load_n(cell(l, w, bucket), __ATOMIC_RELAXED);
    if (total >= max) return false;
    __atomic_add_fetch(cell(l, worker, bucket), 1, __ATOMIC_RELAXED);
    return true;
}

void iplimit_release(struct iplimit *l, int worker, uint32_t bucket) {
    uint32_t *c = cell(l, worker, bucket);
    if (__atomic_load_n(c, __ATOMIC_RELAXED) > 0) __atomic_sub_fetch(c, 1, __ATOMIC_RELAXED);
}

void iplimit_reset_worker(struct iplimit *l, int worker) {
    memset(cell(l, worker, 0), 0, IPLIMIT_BUCKETS * sizeof(uint32_t));
}
