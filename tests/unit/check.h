/* check.h -- minimal assertions for the C unit tests: count failures, keep going, exit non-zero. */
#ifndef LOUPE_CHECK_H
#define LOUPE_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_failures, check_count;

#define CHECK(cond) do { check_count++; if (!(cond)) { check_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_MSG(cond, ...) do { check_count++; if (!(cond)) { check_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); check_count++; \
    if (!(fabs(a_ - b_) <= (tol))) { check_failures++; \
    fprintf(stderr, "%s:%d: %s = %.9g, %s = %.9g, differ by more than %g\n", __FILE__, __LINE__, \
            #a, a_, #b, b_, (double)(tol)); } } while (0)
/* err must contain the substring sub. */
#define CHECK_CONTAINS(err, sub) CHECK_MSG(strstr((err), (sub)) != NULL, "'%s' lacks '%s'", (err), (sub))

#define RUN(test) do { int before_ = check_failures; test(); \
    fprintf(stderr, "%s %s\n", check_failures == before_ ? "ok  " : "FAIL", #test); } while (0)

static inline int check_report(void) {
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
