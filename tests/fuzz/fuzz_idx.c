/* fuzz_idx.c -- libFuzzer target: IDX dataset files (training/idx.c).
 *
 * Input: byte 0 picks labels (bit 0 clear: 1 dimension) or images (set: 3),
 * and the reader: bit 1 clear, idx_parse on the bytes in memory; set,
 * idx_read on them written to a file, through zlib's gz* reader (so a
 * gzip-compressed file is read as the trainer reads Fashion-MNIST's). The
 * rest is the file: a 4-byte magic, big-endian dimensions, the data. A file
 * that parses must hold exactly what its header declares. */
#include "fuzz_common.h"

#include "idx.h"

static char g_file[600];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    int dims = data[0] & 1 ? 3 : 1, from_file = data[0] & 2;
    data++;
    size--;
    idx_array a;
    char err[256];
    int rc;
    if (from_file) {
        if (!g_file[0]) {
            const char *dir = fuzz_tmpdir("idx");
            snprintf(g_file, sizeof g_file, "%s/data.idx", dir);
        }
        FILE *f = fopen(g_file, "wb");
        if (!f) return 0;
        fwrite(data, 1, size, f);
        fclose(f);
        rc = idx_read(g_file, dims, &a, err, sizeof err);
    } else {
        rc = idx_parse(data, size, dims, &a, err, sizeof err);
    }
    if (rc) {
        if (!err[0] || a.data) __builtin_trap();
        return 0;
    }
    size_t want = (size_t)a.n * (size_t)a.rows * (size_t)a.cols;
    if (a.n < 0 || a.rows < 1 || a.cols < 1) __builtin_trap();
    if (!from_file && want + 4 + 4 * (size_t)dims != size) __builtin_trap();
    volatile uint8_t sink = want ? a.data[want - 1] : 0;
    (void)sink;
    idx_free(&a);
    return 0;
}
