/* rng.h -- a small seeded generator (xoshiro256**, seeded by splitmix64): same seed, same stream everywhere. */
#ifndef LOUPE_RNG_H
#define LOUPE_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} rng;

static inline uint64_t rng__splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void rng_seed(rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = rng__splitmix(&seed);
}

static inline uint64_t rng__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rng__rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng__rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static inline double rng_uniform(rng *r, double lo, double hi) { return lo + (hi - lo) * rng_unit(r); }

/* Uniform integer in [0, n), without modulo bias; n >= 1. */
static inline uint64_t rng_below(rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r); while (x >= limit);
    return x % n;
}

/* Standard normal by Box-Muller (one value per call, for a simple, fixed stream). */
static inline double rng_normal(rng *r) {
    double u1 = 1.0 - rng_unit(r), u2 = rng_unit(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Fisher-Yates shuffle of n ints. */
static inline void rng_shuffle(rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1);
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

#endif
