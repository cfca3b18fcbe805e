/* fuzz_common.h -- what the libFuzzer targets share: input splitting, temporary folders. */
#ifndef LOUPE_FUZZ_COMMON_H
#define LOUPE_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The next line of *data (up to '\n', which is consumed) as a malloc'd,
 * NUL-terminated string; NUL bytes inside end the C string early, as they
 * would in a URL. Never NULL unless out of memory. */
static inline char *fuzz_take_line(const uint8_t **data, size_t *size) {
    const uint8_t *nl = memchr(*data, '\n', *size);
    size_t n = nl ? (size_t)(nl - *data) : *size;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, *data, n);
    s[n] = 0;
    *data += n + (nl != NULL);
    *size -= n + (nl != NULL);
    return s;
}

static int fuzz__rm(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p), 0;
}

static char fuzz__tmp[8][512];

static void fuzz__cleanup(void) {
    for (int i = 0; i < 8; i++)
        if (fuzz__tmp[i][0]) nftw(fuzz__tmp[i], fuzz__rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh folder under $TMPDIR (or /tmp) for this process, removed with
 * what it holds at exit: its path, static storage. Exits on failure: a fuzz
 * target cannot run without it. */
static inline const char *fuzz_tmpdir(const char *tag) {
    static int n;
    if (n == 8) exit(1);
    char *path = fuzz__tmp[n++];
    if (n == 1) atexit(fuzz__cleanup);
    const char *t = getenv("TMPDIR");
    snprintf(path, sizeof fuzz__tmp[0], "%s/loupe-fuzz-%s-XXXXXX", t && *t ? t : "/tmp", tag);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(1);
    }
    return path;
}

/* Write len bytes to dir/name; 0 or -1. */
static inline int fuzz_write_file(const char *dir, const char *name, const void *buf, size_t len) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    int ok = fwrite(buf, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

#endif
