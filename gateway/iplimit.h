/* iplimit.h -- connections per client address, counted across every worker of
 * a gateway. A shared anonymous mapping made before the workers fork holds one
 * row of counters per worker (a worker writes only its own row; the sum over
 * rows is the gateway's count), hashed by address: a bucket shared by two
 * addresses can only make the limit stricter for them, never looser. The
 * supervisor zeroes a dead worker's row before restarting it. */
#ifndef HERALD_IPLIMIT_H
#define HERALD_IPLIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct iplimit;

/* Returns NULL when the mapping cannot be made. */
struct iplimit *iplimit_create(int workers);

/* The bucket for an address. */
uint32_t iplimit_bucket(const char *ip);

/* Counts one more connection in worker's row unless the gateway-wide count
 * for the bucket is already at max; returns false when refused. */
bool iplimit_acquire(struct iplimit *l, int worker, uint32_t bucket, long max);
void iplimit_release(struct iplimit *l, int worker, uint32_t bucket);
void iplimit_reset_worker(struct iplimit *l, int worker);

#endif
