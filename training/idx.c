/* idx.c -- IDX reader over zlib's gz* API (reads plain files too). */
#include "idx.h"
#include "errbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Check the header in hdr (4 + 4 * want_dims bytes); sets dims. */
static int check_header(const uint8_t *hdr, int want_dims, uint32_t dims[3], char *err, size_t errlen) {
    uint32_t magic = be32(hdr);
    uint32_t expect = 0x00000800u | (uint32_t)want_dims;
    if (magic != expect) {
        if ((magic & 0xffff0000u) || (magic & 0xff00u) != 0x0800u)
            errbuf_set(err, errlen, "not an IDX file of unsigned bytes (magic 0x%08x, expected 0x%08x)", magic, expect);
        else
            errbuf_set(err, errlen, "IDX file has %u dimensions, expected %d", magic & 0xffu, want_dims);
        return -1;
    }
    for (int d = 0; d < want_dims; d++) dims[d] = be32(hdr + 4 + 4 * d);
    if (dims[0] == 0 || dims[0] > IDX_MAX_ITEMS) {
        errbuf_set(err, errlen, "IDX file declares %u items; expected 1 to %d", dims[0], IDX_MAX_ITEMS);
        return -1;
    }
    for (int d = 1; d < want_dims; d++) {
        if (dims[d] == 0 || dims[d] > IDX_MAX_SIDE) {
            errbuf_set(err, errlen, "IDX image side %u is outside 1..%d", dims[d], IDX_MAX_SIDE);
            return -1;
        }
    }
    if (want_dims == 3 && (uint64_t)dims[0] * dims[1] * dims[2] > (uint64_t)1 << 32) {
        errbuf_set(err, errlen, "IDX file declares %llu pixels, too many",
                (unsigned long long)dims[0] * dims[1] * dims[2]);
        return -1;
    }
    return 0;
}

static void fill(idx_array *out, const uint32_t dims[3], int want_dims, uint8_t *data) {
    out->n = (int)dims[0];
    out->rows = want_dims == 3 ? (int)dims[1] : 1;
    out->cols = want_dims == 3 ? (int)dims[2] : 1;
    out->data = data;
}

int idx_read(const char *path, int want_dims, idx_array *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (want_dims != 1 && want_dims != 3) { errbuf_set(err, errlen, "want_dims must be 1 or 3"); return -1; }
    gzFile f = gzopen(path, "rb");
    if (!f) { errbuf_set(err, errlen, "cannot open %s: %s", path, strerror(errno)); return -1; }
    uint8_t *data = NULL;
    uint8_t hdr[16];
    uint32_t dims[3] = {0, 1, 1};
    int hlen = 4 + 4 * want_dims;
    char inner[200];
    if (gzread(f, hdr, (unsigned)hlen) != hlen) {
        errbuf_set(err, errlen, "%s: truncated or unreadable IDX header", path);
        goto fail;
    }
    if (check_header(hdr, want_dims, dims, inner, sizeof inner)) {
        errbuf_set(err, errlen, "%s: %s", path, inner);
        goto fail;
    }
    size_t total = (size_t)dims[0] * dims[1] * dims[2];
    /* The buffer grows with the data read, not with the header's claim: a
     * 33-byte gzip file declaring 4 GiB of pixels allocated them all first. */
    size_t got = 0, cap = 0;
    while (got < total) {
        if (got == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 20;
            if (ncap > total) ncap = total;
            uint8_t *nd = realloc(data, ncap);
            if (!nd) { errbuf_set(err, errlen, "%s: out of memory for %zu bytes", path, ncap); goto fail; }
            data = nd;
            cap = ncap;
        }
        unsigned chunk = cap - got > (1u << 30) ? (1u << 30) : (unsigned)(cap - got);
        int r = gzread(f, data + got, chunk);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got != total) {
        int zerr;
        const char *msg = gzerror(f, &zerr);
        errbuf_set(err, errlen, "%s: data is %zu bytes, header says %zu (%s)", path, got, total,
                zerr ? msg : "truncated");
        goto fail;
    }
    uint8_t extra;
    if (gzread(f, &extra, 1) != 0) {
        errbuf_set(err, errlen, "%s: bytes after the %zu the header declares", path, total);
        goto fail;
    }
    gzclose(f);
    fill(out, dims, want_dims, data);
    return 0;
fail:
    free(data);
    gzclose(f);
    return -1;
}

int idx_parse(const uint8_t *buf, size_t len, int want_dims, idx_array *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (want_dims != 1 && want_dims != 3) { errbuf_set(err, errlen, "want_dims must be 1 or 3"); return -1; }
    size_t hlen = 4 + 4 * (size_t)want_dims;
    uint32_t dims[3] = {0, 1, 1};
    if (len < hlen) { errbuf_set(err, errlen, "truncated IDX header (%zu bytes)", len); return -1; }
    if (check_header(buf, want_dims, dims, err, errlen)) return -1;
    size_t total = (size_t)dims[0] * dims[1] * dims[2];
    if (len - hlen != total) {
        errbuf_set(err, errlen, "data is %zu bytes, header says %zu", len - hlen, total);
        return -1;
    }
    uint8_t *data = malloc(total);
    if (!data) { errbuf_set(err, errlen, "out of memory for %zu bytes", total); return -1; }
    memcpy(data, buf + hlen, total);
    fill(out, dims, want_dims, data);
    return 0;
}

void idx_free(idx_array *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}
