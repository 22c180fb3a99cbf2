/* clock.h -- the gateway's monotonic clock, in seconds. */
#ifndef HERALD_CLOCK_H
#define HERALD_CLOCK_H

/* Monotonic time in seconds (CLOCK_MONOTONIC). */
double clock_now(void);

#endif
