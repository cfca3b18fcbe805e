/* test_samples.c -- unit tests of core_samples: reading a test set, its errors, the seeded pick. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core_samples.h"

/* A plain (not gzipped) IDX file: images n x 2 x 3 (dims 3) or labels n (dims 1). */
static void write_idx(const char *path, int dims, const uint8_t *data, int n) {
    FILE *f = fopen(path, "wb");
    uint8_t head[16] = {0, 0, 8, (uint8_t)(dims == 3 ? 3 : 1), 0, 0, 0, (uint8_t)n, 0, 0, 0, 2, 0, 0, 0, 3};
    fwrite(head, 1, dims == 3 ? 16 : 8, f);
    fwrite(data, 1, (size_t)n * (dims == 3 ? 6 : 1), f);
    fclose(f);
}

static char dir[] = "/tmp/loupe-test-samples-XXXXXX";

static void set_files(const uint8_t *labels, int n) {
    uint8_t images[6 * 8];
    for (int i = 0; i < n * 6; i++) images[i] = (uint8_t)(i * 5);
    char p[256];
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir);
    write_idx(p, 3, images, n);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir);
    write_idx(p, 1, labels, n);
}

static void test_missing(void) {
    core_fail f;
    const core_sample_set *set;
    core_samples *s = core_samples_new("/nonexistent/fmnist");
    CHECK(core_samples_get(s, &set, &f) == -1 && !set && f.kind == CORE_E_NOT_FOUND);
    CHECK_CONTAINS(f.msg, "/nonexistent/fmnist");
    core_samples_free(s);
    s = core_samples_new(dir); /* a folder without the files */
    CHECK(core_samples_get(s, &set, &f) == -1 && f.kind == CORE_E_NOT_FOUND);
    CHECK_CONTAINS(f.msg, "t10k-images-idx3-ubyte");
    core_samples_free(s);
    core_samples_free(NULL);
}

static void test_bad_labels(void) {
    const uint8_t labels[6] = {0, 1, 10, 2, 0, 1};
    set_files(labels, 6);
    core_fail f;
    const core_sample_set *set;
    core_samples *s = core_samples_new(dir);
    CHECK(core_samples_get(s, &set, &f) == -1 && f.kind == CORE_E_INTERNAL);
    core_samples_free(s);
}

static void test_read_and_pick(void) {
    const uint8_t labels[6] = {0, 1, 1, 2, 0, 1};
    set_files(labels, 6);
    core_fail f;
    const core_sample_set *set, *again;
    core_samples *s = core_samples_new(dir);
    CHECK(core_samples_get(s, &set, &f) == 0);
    CHECK(set->n == 6 && set->rows == 2 && set->cols == 3);
    CHECK(set->images[6 * 5 + 5] == (uint8_t)(35 * 5) && set->labels[3] == 2);
    CHECK(core_samples_get(s, &again, &f) == 0 && again == set); /* read once */

    int a[6], b[6], c[6];
    CHECK(core_samples_pick(set, 6, 42, -1, a) == 6);
    CHECK(core_samples_pick(set, 6, 42, -1, b) == 6);
    CHECK(!memcmp(a, b, sizeof a)); /* a seed repeats */
    int seen = 0;
    for (int i = 0; i < 6; i++) seen |= 1 << a[i];
    CHECK(seen == 0x3f); /* all distinct, all of them */
    CHECK(core_samples_pick(set, 3, 42, -1, c) == 3 && !memcmp(a, c, 3 * sizeof *c)); /* a prefix */
    int differ = 0;
    for (uint64_t seed = 0; seed < 8 && !differ; seed++) {
        core_samples_pick(set, 6, seed, -1, c);
        differ = memcmp(a, c, sizeof a) != 0;
    }
    CHECK(differ);
    CHECK(core_samples_pick(set, 5, UINT64_MAX, 1, c) == 3); /* class 1 has three images */
    for (int i = 0; i < 3; i++) CHECK(set->labels[c[i]] == 1);
    CHECK(core_samples_pick(set, 5, 7, 9, c) == 0);  /* a class without images */
    core_samples_free(s);
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_missing);
    RUN(test_bad_labels);
    RUN(test_read_and_pick);
    char p[256];
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir);
    unlink(p);
    rmdir(dir);
    return check_report();
}
