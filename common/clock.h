/* clock.h -- the monotonic clock every layer measures durations with. */
#ifndef LOUPE_CLOCK_H
#define LOUPE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
double clock_now(void);

#endif
