/* test_idx.c -- the IDX reader: valid files (plain and gzip), and each header or length fault. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "fmnist.h"
#include "idx.h"

static size_t put_header(uint8_t *b, uint32_t magic, const uint32_t *dims, int nd) {
    uint32_t v[4] = {magic, 0, 0, 0};
    for (int i = 0; i < nd; i++) v[i + 1] = dims[i];
    for (int i = 0; i <= nd; i++) {
        b[4 * i] = (uint8_t)(v[i] >> 24); b[4 * i + 1] = (uint8_t)(v[i] >> 16);
        b[4 * i + 2] = (uint8_t)(v[i] >> 8); b[4 * i + 3] = (uint8_t)v[i];
    }
    return 4 + 4 * (size_t)nd;
}

static void test_parse_valid(void) {
    uint8_t b[64];
    uint32_t dims[3] = {2, 2, 3};
    size_t h = put_header(b, 0x803, dims, 3);
    for (int i = 0; i < 12; i++) b[h + i] = (uint8_t)i;
    idx_array a;
    char err[200];
    CHECK(idx_parse(b, h + 12, 3, &a, err, sizeof err) == 0);
    CHECK(a.n == 2 && a.rows == 2 && a.cols == 3 && a.data[11] == 11);
    idx_free(&a);
    uint32_t n[1] = {5};
    h = put_header(b, 0x801, n, 1);
    memset(b + h, 9, 5);
    CHECK(idx_parse(b, h + 5, 1, &a, err, sizeof err) == 0);
    CHECK(a.n == 5 && a.rows == 1 && a.data[4] == 9);
    idx_free(&a);
}

static void expect_fault(const uint8_t *b, size_t len, int dims, const char *want) {
    idx_array a;
    char err[200] = "";
    CHECK(idx_parse(b, len, dims, &a, err, sizeof err) == -1);
    CHECK(a.data == NULL);
    CHECK_CONTAINS(err, want);
}

static void test_parse_faults(void) {
    uint8_t b[64] = {0};
    uint32_t dims[3] = {2, 2, 3};
    size_t h = put_header(b, 0x803, dims, 3);
    expect_fault(b, 6, 3, "truncated");
    expect_fault(b, h + 11, 3, "header says 12");         /* short data */
    expect_fault(b, h + 13, 3, "header says 12");         /* extra data */
    expect_fault(b, h + 12, 1, "3 dimensions, expected 1"); /* images where labels were wanted */
    put_header(b, 0x12345678, dims, 3);
    expect_fault(b, h + 12, 3, "not an IDX file");
    put_header(b, 0x0d03, dims, 3);                         /* float data type */
    expect_fault(b, h + 12, 3, "not an IDX file");
    uint32_t zero[3] = {0, 2, 3}, huge[3] = {2, 5000, 3}, many[3] = {IDX_MAX_ITEMS + 1, 1, 1};
    put_header(b, 0x803, zero, 3);
    expect_fault(b, h, 3, "0 items");
    put_header(b, 0x803, huge, 3);
    expect_fault(b, h + 12, 3, "side 5000");
    put_header(b, 0x803, many, 3);
    expect_fault(b, h + 12, 3, "items");
}

/* Write a gzip file and read it back through idx_read; then corrupt it. */
static void test_read_gzip_file(void) {
    uint8_t b[64];
    uint32_t dims[1] = {7};
    size_t h = put_header(b, 0x801, dims, 1);
    for (int i = 0; i < 7; i++) b[h + i] = (uint8_t)(i + 1);
    char path[] = "/tmp/loupe-idx-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    gzFile g = gzopen(path, "wb");
    gzwrite(g, b, (unsigned)(h + 7));
    gzclose(g);
    idx_array a;
    char err[300];
    CHECK_MSG(idx_read(path, 1, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.n == 7 && a.data[6] == 7);
    idx_free(&a);
    /* Truncate the compressed stream mid-way. */
    FILE *f = fopen(path, "rb");
    uint8_t z[256];
    size_t zl = fread(z, 1, sizeof z, f);
    fclose(f);
    f = fopen(path, "wb");
    fwrite(z, 1, zl - 12, f);
    fclose(f);
    CHECK(idx_read(path, 1, &a, err, sizeof err) == -1);
    CHECK(a.data == NULL);
    unlink(path);
    CHECK(idx_read("/nonexistent/x.gz", 1, &a, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "cannot open");
}

/* A gzip file of a few bytes whose header declares 4 GiB of pixels (found by
 * fuzz_idx): the reader's memory follows the data it reads, not the claim.
 * Outside the sanitizer builds (their shadow memory needs the address space)
 * the address space is capped 512 MiB above its use, so a reader that
 * allocates what the header claims fails with "out of memory" instead. */
static void test_read_bounded_by_data(void) {
    uint8_t b[64];
    uint32_t dims[3] = {256, 4096, 4096};
    size_t h = put_header(b, 0x803, dims, 3);
    memset(b + h, 7, 10);
    char path[] = "/tmp/loupe-idx-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    gzFile g = gzopen(path, "wb");
    gzwrite(g, b, (unsigned)(h + 10));
    gzclose(g);
    struct rlimit old;
    int limited = 0;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    struct rlimit lim; /* under a sanitizer, whose shadow memory needs the address space, no limit */
    long pages = 0;
    FILE *st = fopen("/proc/self/statm", "r");
    if (st && fscanf(st, "%ld", &pages) == 1 && !getrlimit(RLIMIT_AS, &old)) {
        lim = old;
        lim.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)512 << 20);
        limited = (old.rlim_cur == RLIM_INFINITY || lim.rlim_cur < old.rlim_cur) && !setrlimit(RLIMIT_AS, &lim);
    }
    if (st) fclose(st);
#endif
    idx_array a;
    char err[300] = "";
    CHECK(idx_read(path, 3, &a, err, sizeof err) == -1);
    if (limited) setrlimit(RLIMIT_AS, &old);
    CHECK_CONTAINS(err, "data is 10 bytes, header says 4294967296");
    CHECK(a.data == NULL);
    unlink(path);
}

/* The Debian dataset itself, when installed: sizes and splits. */
static void test_fashion_mnist_splits(void) {
    fm_splits d;
    char err[300];
    if (access(FMNIST_DEFAULT_DIR "/train-labels-idx1-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "dataset-fashion-mnist is not installed: run scripts/install-deps.sh\n");
        CHECK(0);
        return;
    }
    CHECK_MSG(fm_load(FMNIST_DEFAULT_DIR, FM_SPLIT_DEFAULT, 0, 0, &d, err, sizeof err) == 0, "%s", err);
    CHECK(d.train.n == 54000 && d.val.n == 6000 && d.test.n == 10000);
    float mx = 0;
    for (size_t i = 0; i < (size_t)d.test.n * FMNIST_PIXELS; i++) mx = d.test.x[i] > mx ? d.test.x[i] : mx;
    CHECK(mx == 1.0f);
    long counts[10] = {0};
    for (int i = 0; i < d.test.n; i++) counts[d.test.y[i]]++;
    for (int c = 0; c < 10; c++) CHECK(counts[c] == 1000);
    fm_splits_free(&d);
    CHECK(fm_load(FMNIST_DEFAULT_DIR, FM_SPLIT_SEED, 0, 0, &d, err, sizeof err) == 0);
    CHECK(d.test.n == 6000 && d.val.n == 5940 && d.train.n == 48060);
    fm_splits_free(&d);
    CHECK(fm_load("/nonexistent", FM_SPLIT_DEFAULT, 0, 0, &d, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "cannot open");
}

int main(void) {
    RUN(test_parse_valid);
    RUN(test_parse_faults);
    RUN(test_read_gzip_file);
    RUN(test_read_bounded_by_data);
    RUN(test_fashion_mnist_splits);
    return check_report();
}
