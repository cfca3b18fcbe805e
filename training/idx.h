/* idx.h -- reader for IDX files (MNIST's format), plain or gzip-compressed. */
#ifndef LOUPE_IDX_H
#define LOUPE_IDX_H

#include <stddef.h>
#include <stdint.h>

/* Most items and pixels per item a file may declare; larger headers are refused. */
#define IDX_MAX_ITEMS 10000000
#define IDX_MAX_SIDE 4096

typedef struct {
    int n, rows, cols;
    uint8_t *data;  /* [n, rows, cols] for images, [n] for labels (rows = cols = 1) */
} idx_array;

/* Read an IDX file of unsigned bytes: magic 0x00000803 (images, n x rows x cols)
 * when want_dims is 3, 0x00000801 (labels, n) when it is 1. Gzip is detected by
 * zlib. The header is validated (magic, type, dims, limits) before allocating,
 * and the data must be exactly as long as the header says. Returns 0 and fills
 * *out (free with idx_free), or -1 with a message in err and *out zeroed. */
int idx_read(const char *path, int want_dims, idx_array *out, char *err, size_t errlen);

/* The same from memory (tests and fuzzing); buf holds the uncompressed file. */
int idx_parse(const uint8_t *buf, size_t len, int want_dims, idx_array *out, char *err, size_t errlen);

void idx_free(idx_array *a);

#endif
