/* clock.c -- CLOCK_MONOTONIC as seconds in a double. */
#define _POSIX_C_SOURCE 200809L
#include "clock.h"

#include <time.h>

double clock_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
