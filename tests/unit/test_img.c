/* test_img.c -- unit tests for the img module: decoders, bomb guard, resize, invert, PNG
 * encoder, colormap, heatmap. Fixtures are encoded at run time with libpng and
 * TurboJPEG; no binary files. `test_img --write-corpus DIR` writes the fixtures
 * to DIR as a seed corpus for tests/fuzz/fuzz_img.c. */
#define _POSIX_C_SOURCE 200809L /* mkdir */
#include "img.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <png.h>
#include <turbojpeg.h>

/* ==== Harness ==== */

static int g_checks, g_failed_tests, g_test_failed;
static const char *g_corpus_dir; /* set by --write-corpus */

#define FAIL_(...)                                                                \
    do {                                                                          \
        fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, __func__);             \
        fprintf(stderr, __VA_ARGS__);                                             \
        fputc('\n', stderr);                                                      \
        g_test_failed = 1;                                                        \
        return;                                                                   \
    } while (0)
#define ASSERT(c)                                                                 \
    do {                                                                          \
        g_checks++;                                                               \
        if (!(c)) FAIL_("ASSERT(%s)", #c);                                        \
    } while (0)
#define ASSERT_EQ_INT(a, b)                                                       \
    do {                                                                          \
        long long a_ = (long long)(a), b_ = (long long)(b);                       \
        g_checks++;                                                               \
        if (a_ != b_) FAIL_("%s == %lld, expected %s == %lld", #a, a_, #b, b_);   \
    } while (0)
#define ASSERT_NEAR(a, b, tol)                                                    \
    do {                                                                          \
        double a_ = (double)(a), b_ = (double)(b);                                \
        g_checks++;                                                               \
        if (!(fabs(a_ - b_) <= (tol)))                                            \
            FAIL_("%s == %.9g, expected %.9g (tolerance %g)", #a, a_, b_, (double)(tol)); \
    } while (0)
#define ASSERT_STATUS(rc, want, err)                                              \
    do {                                                                          \
        int rc_ = (rc);                                                           \
        g_checks++;                                                               \
        if (rc_ != (want))                                                        \
            FAIL_("status %s (%d), expected %s; err: %s", img_status_name(rc_), rc_, \
                  img_status_name(want), (err));                                  \
    } while (0)

/* Deterministic pseudo-random bytes (xorshift32). */
static uint32_t rng_next(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Write a fixture into the seed corpus when one was asked for. */
static void emit(const char *name, const uint8_t *data, size_t len) {
    char path[1024];
    FILE *f;
    if (!g_corpus_dir) return;
    snprintf(path, sizeof path, "%s/%s", g_corpus_dir, name);
    f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, len, f);
    fclose(f);
}

/* ==== Fixture makers ==== */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} membuf;

static void membuf_put(membuf *m, const void *p, size_t n) {
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap : 256;
        while (cap < m->len + n) cap *= 2;
        m->data = realloc(m->data, cap);
        m->cap = cap;
        if (!m->data) {
            fprintf(stderr, "test_img: out of memory\n");
            exit(2);
        }
    }
    memcpy(m->data + m->len, p, n);
    m->len += n;
}

static void t_png_write(png_structp png, png_bytep p, size_t n) {
    membuf_put(png_get_io_ptr(png), p, n);
}
static void t_png_flush(png_structp png) {
    (void)png;
}

typedef struct {
    const char *name;
    int w, h, depth, ctype, interlace;
    int trns; /* palette: alpha for the first entries; gray/RGB: pixel (0,0)'s colour */
} png_case;

static int ctype_channels(int ctype) {
    switch (ctype) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA: return 4;
    default: return 1; /* palette index */
    }
}

/* Sample c of pixel (x, y) of a case, in [0, 2^depth). */
static unsigned case_sample(const png_case *pc, int x, int y, int c) {
    unsigned v = (unsigned)(x * 37 + y * 91 + c * 53 + x * y * 7 + (c == 3 ? 128 : 0));
    if (pc->depth == 16) return (v * 1237u + 4099u * (unsigned)c) & 0xffffu;
    return v & ((1u << pc->depth) - 1u);
}

static void case_palette(int i, uint8_t rgb[3]) {
    rgb[0] = (uint8_t)(i * 7 + 3);
    rgb[1] = (uint8_t)(i * 13 + 40);
    rgb[2] = (uint8_t)(i * 29 + 90);
}
static int case_palette_alpha(const png_case *pc, int i) {
    return pc->trns && i < 6 ? (i * 50) % 256 : 255;
}

/* Write a case's packed rows into m with libpng. Returns 0 or -1. */
static int png_write_case(const png_case *pc, png_bytep *rows, membuf *m) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, m, t_png_write, t_png_flush);
    png_set_IHDR(png, info, (png_uint_32)pc->w, (png_uint_32)pc->h, pc->depth, pc->ctype,
                 pc->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pc->ctype == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[256];
        png_byte alpha[6];
        int i, n = 1 << pc->depth;
        for (i = 0; i < n; i++) {
            uint8_t rgb[3];
            case_palette(i, rgb);
            pal[i].red = rgb[0];
            pal[i].green = rgb[1];
            pal[i].blue = rgb[2];
        }
        png_set_PLTE(png, info, pal, n);
        if (pc->trns) {
            for (i = 0; i < 6; i++) alpha[i] = (png_byte)case_palette_alpha(pc, i);
            png_set_tRNS(png, info, alpha, n < 6 ? n : 6, NULL);
        }
    } else if (pc->trns) {
        png_color_16 tc;
        memset(&tc, 0, sizeof tc);
        tc.gray = (png_uint_16)case_sample(pc, 0, 0, 0);
        tc.red = (png_uint_16)case_sample(pc, 0, 0, 0);
        tc.green = (png_uint_16)case_sample(pc, 0, 0, 1);
        tc.blue = (png_uint_16)case_sample(pc, 0, 0, 2);
        png_set_tRNS(png, info, NULL, 0, &tc);
    }
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/* Encode a case as PNG with libpng. Returns a malloc'd buffer or NULL. */
static uint8_t *make_png(const png_case *pc, size_t *len) {
    int ch = ctype_channels(pc->ctype), x, y, c;
    size_t stride = ((size_t)pc->w * ch * pc->depth + 7) / 8;
    uint8_t *pix = calloc((size_t)pc->h, stride);
    png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)pc->h);
    membuf m = {NULL, 0, 0};

    if (!pix || !rows) goto done;
    for (y = 0; y < pc->h; y++) {
        uint8_t *row = pix + (size_t)y * stride;
        rows[y] = row;
        for (x = 0; x < pc->w; x++)
            for (c = 0; c < ch; c++) {
                unsigned v = case_sample(pc, x, y, c);
                size_t k = (size_t)x * ch + c;
                if (pc->depth == 16) {
                    row[2 * k] = (uint8_t)(v >> 8);
                    row[2 * k + 1] = (uint8_t)v;
                } else if (pc->depth == 8) {
                    row[k] = (uint8_t)v;
                } else {
                    size_t bit = k * pc->depth;
                    row[bit / 8] |= (uint8_t)(v << (8 - pc->depth - bit % 8));
                }
            }
    }
    if (png_write_case(pc, rows, &m) != 0) {
        free(m.data);
        m.data = NULL;
    }
    *len = m.len;
done:
    free(pix);
    free(rows);
    return m.data;
}

/* A sample of depth d brought to 8 bits the way the decoder should. */
static double to8(unsigned v, int depth) {
    if (depth == 16) return v / 257.0;
    return v * 255.0 / (double)((1u << depth) - 1u);
}

/* Expected decoded colour channel c (0..2, or 0 for gray) of pixel (x, y). */
static double case_expect(const png_case *pc, int x, int y, int c) {
    double col, a = 255.0;
    if (pc->ctype == PNG_COLOR_TYPE_PALETTE) {
        uint8_t rgb[3];
        int i = (int)case_sample(pc, x, y, 0);
        case_palette(i, rgb);
        return rgb[c] * case_palette_alpha(pc, i) / 255.0;
    }
    if (pc->ctype == PNG_COLOR_TYPE_GRAY || pc->ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
        col = to8(case_sample(pc, x, y, 0), pc->depth);
    else
        col = to8(case_sample(pc, x, y, c), pc->depth);
    if (pc->ctype == PNG_COLOR_TYPE_GRAY_ALPHA) a = to8(case_sample(pc, x, y, 1), pc->depth);
    if (pc->ctype == PNG_COLOR_TYPE_RGB_ALPHA) a = to8(case_sample(pc, x, y, 3), pc->depth);
    if (pc->trns) {
        int same = case_sample(pc, x, y, 0) == case_sample(pc, 0, 0, 0);
        if (pc->ctype == PNG_COLOR_TYPE_RGB)
            same = same && case_sample(pc, x, y, 1) == case_sample(pc, 0, 0, 1) &&
                   case_sample(pc, x, y, 2) == case_sample(pc, 0, 0, 2);
        if (same) a = 0.0;
    }
    return col * a / 255.0;
}

/* Encode packed pixels as JPEG with TurboJPEG. Returns a malloc'd buffer or NULL. */
static uint8_t *make_jpeg(const uint8_t *pix, int w, int h, int pf, int subsamp, int flags,
                          size_t *len) {
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long n = 0;
    uint8_t *copy = NULL;
    if (!tj) return NULL;
    if (tjCompress2(tj, pix, w, 0, h, pf, &jpg, &n, subsamp, 95, flags) == 0) {
        copy = malloc(n);
        if (copy) {
            memcpy(copy, jpg, n);
            *len = n;
        }
    } else {
        fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
    }
    tjFree(jpg);
    tjDestroy(tj);
    return copy;
}

/* A smooth test picture, channel c of pixel (x, y). */
static uint8_t smooth(int x, int y, int c) {
    return (uint8_t)(40 + x * 3 + y * 2 + c * 20);
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Recompute the CRC of the chunk starting at off (its length field). */
static void fix_crc(uint8_t *png, size_t off) {
    uint32_t n = (uint32_t)png[off] << 24 | (uint32_t)png[off + 1] << 16 |
                 (uint32_t)png[off + 2] << 8 | png[off + 3];
    put_be32(png + off + 8 + n, crc32_png(png + off + 4, 4 + (size_t)n));
}

/* Offset of the first chunk of a type, or 0. */
static size_t find_chunk(const uint8_t *png, size_t len, const char *type) {
    size_t off = 8;
    while (off + 12 <= len) {
        uint32_t n = (uint32_t)png[off] << 24 | (uint32_t)png[off + 1] << 16 |
                     (uint32_t)png[off + 2] << 8 | png[off + 3];
        if (memcmp(png + off + 4, type, 4) == 0) return off;
        off += 12 + (size_t)n;
    }
    return 0;
}

/* A hand-made PNG: signature, IHDR (8-bit gray, w x h) with a correct CRC,
 * one empty IDAT and IEND. Written into out[57]. */
static void craft_png_header(uint8_t out[57], uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(out, sig, 8);
    put_be32(out + 8, 13);
    memcpy(out + 12, "IHDR", 4);
    put_be32(out + 16, w);
    put_be32(out + 20, h);
    out[24] = 8;  /* bit depth */
    out[25] = 0;  /* gray */
    out[26] = 0;  /* deflate */
    out[27] = 0;  /* adaptive filtering */
    out[28] = 0;  /* not interlaced */
    fix_crc(out, 8);
    put_be32(out + 33, 0);
    memcpy(out + 37, "IDAT", 4);
    fix_crc(out, 33);
    put_be32(out + 45, 0);
    memcpy(out + 49, "IEND", 4);
    fix_crc(out, 45);
}

/* Offset of a JPEG's SOF0/SOF2 marker, or 0. */
static size_t find_sof(const uint8_t *j, size_t len) {
    size_t i;
    for (i = 2; i + 9 < len; i++)
        if (j[i] == 0xff && (j[i + 1] == 0xc0 || j[i + 1] == 0xc2)) return i;
    return 0;
}

/* ==== PNG decoding ==== */

static void check_png_case(const png_case *pc) {
    size_t len = 0;
    uint8_t *png = make_png(pc, &len);
    img_image im;
    char err[256] = "";
    int x, y, c, want_ch;
    double tol;
    char name[96];

    ASSERT(png != NULL);
    snprintf(name, sizeof name, "%s.png", pc->name);
    emit(name, png, len);
    ASSERT_STATUS(img_decode(png, len, NULL, &im, err, sizeof err), IMG_OK, err);
    free(png);
    want_ch = pc->ctype == PNG_COLOR_TYPE_GRAY || pc->ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 1 : 3;
    /* 16-bit colour and alpha are each rounded to 8 bits before compositing:
     * up to half a level from each, plus the final rounding. */
    tol = pc->depth == 16 && (pc->ctype & PNG_COLOR_MASK_ALPHA) ? 1.5 + 1e-9 : 1.0;
    ASSERT_EQ_INT(im.width, pc->w);
    ASSERT_EQ_INT(im.height, pc->h);
    ASSERT_EQ_INT(im.channels, want_ch);
    for (y = 0; y < pc->h; y++)
        for (x = 0; x < pc->w; x++)
            for (c = 0; c < want_ch; c++) {
                double got = im.pixels[((size_t)y * pc->w + x) * want_ch + c];
                double want = case_expect(pc, x, y, c);
                if (fabs(got - want) > tol) {
                    img_free(&im);
                    FAIL_("%s: pixel (%d,%d) channel %d is %g, expected %g", pc->name, x, y, c,
                          got, want);
                }
            }
    g_checks++;
    img_free(&im);
    ASSERT(im.pixels == NULL && im.width == 0);
}

static void test_png_color_types(void) {
    static const png_case cases[] = {
        {"gray1", 13, 11, 1, PNG_COLOR_TYPE_GRAY, 0, 0},
        {"gray2", 13, 11, 2, PNG_COLOR_TYPE_GRAY, 0, 0},
        {"gray4", 13, 11, 4, PNG_COLOR_TYPE_GRAY, 0, 0},
        {"gray8", 13, 11, 8, PNG_COLOR_TYPE_GRAY, 0, 0},
        {"gray16", 13, 11, 16, PNG_COLOR_TYPE_GRAY, 0, 0},
        {"gray2_trns", 13, 11, 2, PNG_COLOR_TYPE_GRAY, 0, 1},
        {"gray8_trns", 13, 11, 8, PNG_COLOR_TYPE_GRAY, 0, 1},
        {"gray16_trns", 13, 11, 16, PNG_COLOR_TYPE_GRAY, 0, 1},
        {"graya8", 13, 11, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 0, 0},
        {"graya16", 13, 11, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 0, 0},
        {"rgb8", 13, 11, 8, PNG_COLOR_TYPE_RGB, 0, 0},
        {"rgb16", 13, 11, 16, PNG_COLOR_TYPE_RGB, 0, 0},
        {"rgb8_trns", 13, 11, 8, PNG_COLOR_TYPE_RGB, 0, 1},
        {"rgb16_trns", 13, 11, 16, PNG_COLOR_TYPE_RGB, 0, 1},
        {"rgba8", 13, 11, 8, PNG_COLOR_TYPE_RGB_ALPHA, 0, 0},
        {"rgba16", 13, 11, 16, PNG_COLOR_TYPE_RGB_ALPHA, 0, 0},
        {"pal1", 13, 11, 1, PNG_COLOR_TYPE_PALETTE, 0, 0},
        {"pal2", 13, 11, 2, PNG_COLOR_TYPE_PALETTE, 0, 0},
        {"pal4", 13, 11, 4, PNG_COLOR_TYPE_PALETTE, 0, 0},
        {"pal8", 13, 11, 8, PNG_COLOR_TYPE_PALETTE, 0, 0},
        {"pal4_trns", 13, 11, 4, PNG_COLOR_TYPE_PALETTE, 0, 1},
        {"pal8_trns", 13, 11, 8, PNG_COLOR_TYPE_PALETTE, 0, 1},
        {"one_pixel", 1, 1, 8, PNG_COLOR_TYPE_RGB, 0, 0},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_png_case(&cases[i]);
        if (g_test_failed) return;
    }
}

static void test_png_interlaced(void) {
    static const png_case cases[] = {
        {"i_gray1", 13, 11, 1, PNG_COLOR_TYPE_GRAY, 1, 0},
        {"i_gray8", 13, 11, 8, PNG_COLOR_TYPE_GRAY, 1, 0},
        {"i_graya8", 9, 17, 8, PNG_COLOR_TYPE_GRAY_ALPHA, 1, 0},
        {"i_rgb8", 13, 11, 8, PNG_COLOR_TYPE_RGB, 1, 0},
        {"i_rgba16", 13, 11, 16, PNG_COLOR_TYPE_RGB_ALPHA, 1, 0},
        {"i_pal4_trns", 13, 11, 4, PNG_COLOR_TYPE_PALETTE, 1, 1},
        {"i_tiny", 3, 2, 8, PNG_COLOR_TYPE_GRAY, 1, 0},
        {"i_one", 1, 1, 16, PNG_COLOR_TYPE_GRAY_ALPHA, 1, 0},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_png_case(&cases[i]);
        if (g_test_failed) return;
    }
}

static const png_case k_plain = {"plain", 28, 28, 8, PNG_COLOR_TYPE_GRAY, 0, 0};

static void test_png_truncated(void) {
    size_t len = 0, cuts[5], i;
    uint8_t *png = make_png(&k_plain, &len);
    img_image im;
    char err[256] = "";
    ASSERT(png != NULL);
    cuts[0] = 8;            /* signature only */
    cuts[1] = 20;           /* inside IHDR's fields */
    cuts[2] = 30;           /* inside IHDR, after width and height */
    cuts[3] = 40;           /* inside the first IDAT's header */
    cuts[4] = len / 2;      /* inside the image data */
    for (i = 0; i < 5; i++) {
        int rc = img_decode(png, cuts[i], NULL, &im, err, sizeof err);
        if (rc != IMG_ERR_CORRUPT) {
            free(png);
            FAIL_("cut at %zu of %zu: status %s, expected corrupt", cuts[i], len,
                  img_status_name(rc));
        }
        g_checks++;
        if (im.pixels || im.width || err[0] == '\0') {
            free(png);
            FAIL_("cut at %zu: output not zeroed or no message", cuts[i]);
        }
    }
    free(png);
}

static void test_png_bad_crc(void) {
    size_t len = 0, ihdr, idat;
    uint8_t *png = make_png(&k_plain, &len);
    uint8_t *bad;
    img_image im;
    char err[256] = "";
    ASSERT(png != NULL);
    bad = malloc(len);
    ASSERT(bad != NULL);
    ihdr = find_chunk(png, len, "IHDR");
    idat = find_chunk(png, len, "IDAT");
    ASSERT(ihdr == 8 && idat > 0);

    memcpy(bad, png, len); /* IHDR CRC */
    bad[ihdr + 8 + 13] ^= 0x55;
    ASSERT_STATUS(img_decode(bad, len, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    ASSERT(strstr(err, "CRC") != NULL);

    memcpy(bad, png, len); /* IDAT CRC */
    bad[idat + 8 + 5] ^= 0x01;
    ASSERT_STATUS(img_decode(bad, len, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);

    memcpy(bad, png, len); /* IDAT's zlib header broken, CRC made right again */
    bad[idat + 8] ^= 0xff;
    bad[idat + 9] ^= 0xff;
    fix_crc(bad, idat);
    emit("bad_zlib.png", bad, len);
    ASSERT_STATUS(img_decode(bad, len, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    ASSERT(im.pixels == NULL);

    memcpy(bad, png, len); /* IHDR with an invalid bit depth, CRC right */
    bad[ihdr + 8 + 8] = 3;
    fix_crc(bad, ihdr);
    ASSERT_STATUS(img_decode(bad, len, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    free(bad);
    free(png);
}

static void test_png_bomb(void) {
    uint8_t png[57];
    img_image im;
    char err[256] = "";
    img_limits lim = img_default_limits();

    craft_png_header(png, 100000, 100000);
    emit("bomb.png", png, sizeof png);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);
    ASSERT(im.pixels == NULL && im.width == 0 && im.height == 0);
    ASSERT(strstr(err, "100000x100000") != NULL);

    craft_png_header(png, 0x7fffffffu, 0x7fffffffu);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);
    craft_png_header(png, 0xffffffffu, 0xffffffffu);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);
    /* One dimension within bounds, the product not. */
    craft_png_header(png, 1, 50000000);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);

    /* The limit is the caller's: 10x10 fits 100 pixels, 11x10 does not. */
    lim.max_pixels = 100;
    {
        png_case small = {"lim", 10, 10, 8, PNG_COLOR_TYPE_GRAY, 0, 0};
        size_t len = 0;
        uint8_t *p = make_png(&small, &len);
        ASSERT(p != NULL);
        ASSERT_STATUS(img_decode(p, len, &lim, &im, err, sizeof err), IMG_OK, err);
        img_free(&im);
        free(p);
        small.w = 11;
        p = make_png(&small, &len);
        ASSERT(p != NULL);
        ASSERT_STATUS(img_decode(p, len, &lim, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);
        free(p);
    }
}

static void test_png_zero_dimensions(void) {
    uint8_t png[57];
    img_image im;
    char err[256] = "";
    craft_png_header(png, 0, 10);
    emit("zero_w.png", png, sizeof png);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_DIMENSIONS, err);
    craft_png_header(png, 10, 0);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_DIMENSIONS, err);
    /* A valid header with an empty IDAT: libpng must fail, not read past the end. */
    craft_png_header(png, 4, 4);
    ASSERT_STATUS(img_decode(png, sizeof png, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
}

static void test_png_trailing_junk_and_no_iend(void) {
    size_t len = 0, iend;
    uint8_t *png = make_png(&k_plain, &len), *big;
    img_image im;
    char err[256] = "";
    ASSERT(png != NULL);
    iend = find_chunk(png, len, "IEND");
    ASSERT(iend > 0);
    /* Without IEND the image is still whole. */
    ASSERT_STATUS(img_decode(png, iend, NULL, &im, err, sizeof err), IMG_OK, err);
    img_free(&im);
    big = malloc(len + 100);
    ASSERT(big != NULL);
    memcpy(big, png, len);
    memset(big + len, 0xab, 100);
    ASSERT_STATUS(img_decode(big, len + 100, NULL, &im, err, sizeof err), IMG_OK, err);
    img_free(&im);
    free(big);
    free(png);
}

/* ==== JPEG decoding ==== */

static void check_jpeg(const char *name, int ch, int subsamp, int flags) {
    int w = 40, h = 30, x, y, c;
    uint8_t *pix = malloc((size_t)w * h * ch), *jpg;
    size_t len = 0;
    double sum = 0.0;
    img_image im;
    char err[256] = "";

    ASSERT(pix != NULL);
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++)
            for (c = 0; c < ch; c++) pix[((size_t)y * w + x) * ch + c] = smooth(x, y, c);
    jpg = make_jpeg(pix, w, h, ch == 1 ? TJPF_GRAY : TJPF_RGB, subsamp, flags, &len);
    ASSERT(jpg != NULL);
    emit(name, jpg, len);
    ASSERT_STATUS(img_decode(jpg, len, NULL, &im, err, sizeof err), IMG_OK, err);
    free(jpg);
    ASSERT_EQ_INT(im.width, w);
    ASSERT_EQ_INT(im.height, h);
    ASSERT_EQ_INT(im.channels, ch);
    for (x = 0; x < w * h * ch; x++) sum += fabs((double)im.pixels[x] - pix[x]);
    img_free(&im);
    free(pix);
    ASSERT(sum / (w * h * ch) < 3.0); /* quality 95 on a smooth ramp */
}

static void test_jpeg_baseline(void) {
    check_jpeg("gray.jpg", 1, TJSAMP_GRAY, 0);
    if (g_test_failed) return;
    check_jpeg("rgb444.jpg", 3, TJSAMP_444, 0);
    if (g_test_failed) return;
    check_jpeg("rgb420.jpg", 3, TJSAMP_420, 0);
}

static void test_jpeg_progressive(void) {
    check_jpeg("gray_prog.jpg", 1, TJSAMP_GRAY, TJFLAG_PROGRESSIVE);
    if (g_test_failed) return;
    check_jpeg("rgb_prog.jpg", 3, TJSAMP_420, TJFLAG_PROGRESSIVE);
}

static void test_jpeg_cmyk(void) {
    /* Stored C, M, Y, K = 200, 100, 255, 128 ("inverted" Adobe values). */
    uint8_t pix[16 * 16 * 4], *jpg;
    size_t len = 0, i;
    img_image im;
    char err[256] = "";
    for (i = 0; i < 16 * 16; i++) {
        pix[4 * i] = 200;
        pix[4 * i + 1] = 100;
        pix[4 * i + 2] = 255;
        pix[4 * i + 3] = 128;
    }
    jpg = make_jpeg(pix, 16, 16, TJPF_CMYK, TJSAMP_444, 0, &len);
    ASSERT(jpg != NULL);
    emit("cmyk.jpg", jpg, len);
    ASSERT_STATUS(img_decode(jpg, len, NULL, &im, err, sizeof err), IMG_OK, err);
    free(jpg);
    ASSERT_EQ_INT(im.channels, 3);
    ASSERT_NEAR(im.pixels[0], 200.0 * 128 / 255, 4);
    ASSERT_NEAR(im.pixels[1], 100.0 * 128 / 255, 4);
    ASSERT_NEAR(im.pixels[2], 255.0 * 128 / 255, 4);
    img_free(&im);
}

static void test_jpeg_bad(void) {
    int w = 32, h = 32, i;
    uint8_t pix[32 * 32 * 3], *jpg, *bad;
    size_t len = 0, sof;
    img_image im;
    char err[256] = "";
    img_limits lim = img_default_limits();

    for (i = 0; i < w * h * 3; i++) pix[i] = (uint8_t)(i * 7);
    jpg = make_jpeg(pix, w, h, TJPF_RGB, TJSAMP_420, 0, &len);
    ASSERT(jpg != NULL);
    bad = malloc(len);
    ASSERT(bad != NULL);

    /* Truncated in the entropy-coded data, and inside the headers. */
    ASSERT_STATUS(img_decode(jpg, len / 2, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    ASSERT(im.pixels == NULL && err[0] != '\0');
    ASSERT_STATUS(img_decode(jpg, 40, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    ASSERT_STATUS(img_decode(jpg, 3, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);

    /* SOF says 65000 x 65000: refused from the header alone. */
    sof = find_sof(jpg, len);
    ASSERT(sof > 0);
    memcpy(bad, jpg, len);
    bad[sof + 5] = 0xfd;
    bad[sof + 6] = 0xe8;
    bad[sof + 7] = 0xfd;
    bad[sof + 8] = 0xe8;
    emit("bomb.jpg", bad, len);
    ASSERT_STATUS(img_decode(bad, len, NULL, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);
    ASSERT(im.pixels == NULL);

    /* Width zero: libjpeg refuses the header. */
    memcpy(bad, jpg, len);
    bad[sof + 7] = 0;
    bad[sof + 8] = 0;
    {
        int rc = img_decode(bad, len, NULL, &im, err, sizeof err);
        g_checks++;
        if (rc != IMG_ERR_CORRUPT && rc != IMG_ERR_DIMENSIONS)
            FAIL_("zero-width JPEG: status %s", img_status_name(rc));
    }

    /* The caller's limit applies to JPEG too. */
    lim.max_pixels = 32 * 32 - 1;
    ASSERT_STATUS(img_decode(jpg, len, &lim, &im, err, sizeof err), IMG_ERR_TOO_LARGE, err);
    lim.max_pixels = 32 * 32;
    ASSERT_STATUS(img_decode(jpg, len, &lim, &im, err, sizeof err), IMG_OK, err);
    img_free(&im);

    /* Tables only (SOI, DQT, EOI): a valid stream without an image. */
    memset(bad, 1, len);
    bad[0] = 0xff;
    bad[1] = 0xd8;
    bad[2] = 0xff;
    bad[3] = 0xdb;
    bad[4] = 0x00;
    bad[5] = 0x43;
    bad[6] = 0x00; /* 8-bit table 0, then 64 entries of 1 */
    bad[71] = 0xff;
    bad[72] = 0xd9;
    emit("tables_only.jpg", bad, 73);
    ASSERT_STATUS(img_decode(bad, 73, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    ASSERT(im.pixels == NULL && im.width == 0);

    /* SOI followed by junk. */
    memcpy(bad, jpg, 3);
    for (i = 3; i < (int)len; i++) bad[i] = (uint8_t)(i * 31 + 7);
    ASSERT_STATUS(img_decode(bad, len, NULL, &im, err, sizeof err), IMG_ERR_CORRUPT, err);
    free(bad);
    free(jpg);
}

/* ==== Inputs that are not images ==== */

static void test_not_images(void) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t buf[300] = {0};
    uint32_t s = 12345;
    img_image im;
    char err[256] = "";
    int i, j;

    ASSERT_STATUS(img_decode(buf, 0, NULL, &im, err, sizeof err), IMG_ERR_EMPTY, err);
    ASSERT_STATUS(img_decode(NULL, 10, NULL, &im, err, sizeof err), IMG_ERR_EMPTY, err);
    ASSERT_STATUS(img_decode(buf, 10, NULL, NULL, err, sizeof err), IMG_ERR_ARG, err);
    ASSERT_STATUS(img_decode(png_sig, 4, NULL, &im, err, sizeof err), IMG_ERR_FORMAT, err);
    ASSERT_STATUS(img_decode((const uint8_t *)"GIF89a", 6, NULL, &im, NULL, 0), IMG_ERR_FORMAT, "");

    for (i = 0; i < 2000; i++) {
        int n = 1 + (int)(rng_next(&s) % sizeof buf), want, rc;
        for (j = 0; j < n; j++) buf[j] = (uint8_t)rng_next(&s);
        switch (i % 3) {
        case 0: /* arbitrary bytes */
            if (buf[0] == 0x89 || buf[0] == 0xff) buf[0] = 0;
            want = IMG_ERR_FORMAT;
            break;
        case 1: /* a PNG signature and junk */
            if (n < 8) n = 8;
            memcpy(buf, png_sig, 8);
            want = IMG_ERR_CORRUPT;
            break;
        default: /* a JPEG SOI and junk */
            if (n < 3) n = 3;
            buf[0] = 0xff;
            buf[1] = 0xd8;
            buf[2] = 0xff;
            want = IMG_ERR_CORRUPT;
            break;
        }
        rc = img_decode(buf, (size_t)n, NULL, &im, err, sizeof err);
        g_checks++;
        if (rc != want)
            FAIL_("random case %d (%d bytes): status %s, expected %s (%s)", i, n,
                  img_status_name(rc), img_status_name(want), err);
        if (im.pixels) FAIL_("random case %d: pixels left behind", i);
    }
}

/* ==== Preprocessing ==== */

static void test_resize_block_means(void) {
    uint8_t pix[56 * 56];
    float out[28 * 28];
    img_image im = {56, 56, 1, pix};
    int x, y, inv = -1;
    for (y = 0; y < 56; y++)
        for (x = 0; x < 56; x++) pix[y * 56 + x] = (uint8_t)((x * 5 + y * 3 + (x & 1) * 40 + (y & 1) * 17) & 0x7f);
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, &inv), 0);
    ASSERT_EQ_INT(inv, 0);
    for (y = 0; y < 28; y++)
        for (x = 0; x < 28; x++) {
            double m = (pix[(2 * y) * 56 + 2 * x] + pix[(2 * y) * 56 + 2 * x + 1] +
                        pix[(2 * y + 1) * 56 + 2 * x] + pix[(2 * y + 1) * 56 + 2 * x + 1]) /
                       4.0 / 255.0;
            ASSERT_NEAR(out[y * 28 + x], m, 1e-6);
        }
}

static void test_resize_constant(void) {
    uint8_t pix[37 * 23 * 3];
    float out[28 * 28];
    img_image im = {37, 23, 3, pix};
    size_t i;
    memset(pix, 77, sizeof pix);
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, NULL), 0);
    for (i = 0; i < 28 * 28; i++) ASSERT_NEAR(out[i], 77 / 255.0, 1e-6);
    im.width = 5; /* up-scaling */
    im.height = 3;
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, NULL), 0);
    for (i = 0; i < 28 * 28; i++) ASSERT_NEAR(out[i], 77 / 255.0, 1e-6);
    im.width = 1; /* a single pixel to many, and to one */
    im.height = 1;
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, NULL), 0);
    for (i = 0; i < 28 * 28; i++) ASSERT_NEAR(out[i], 77 / 255.0, 1e-6);
    im.width = 37;
    im.height = 23;
    ASSERT_EQ_INT(img_to_gray(&im, 1, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 77 / 255.0, 1e-6);
}

static void test_resize_fractional(void) {
    uint8_t two[2] = {0, 255}, three[3] = {0, 255, 0};
    float out[4];
    img_image im = {2, 1, 1, two};
    /* Up: each half of [0, 255] covers two outputs exactly. */
    ASSERT_EQ_INT(img_to_gray(&im, 4, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 0.0, 1e-7);
    ASSERT_NEAR(out[1], 0.0, 1e-7);
    ASSERT_NEAR(out[2], 1.0, 1e-7);
    ASSERT_NEAR(out[3], 1.0, 1e-7);
    /* Up by 3/2: the middle output straddles both inputs equally. */
    ASSERT_EQ_INT(img_to_gray(&im, 3, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 0.0, 1e-7);
    ASSERT_NEAR(out[1], 0.5, 1e-7);
    ASSERT_NEAR(out[2], 1.0, 1e-7);
    /* Down by 3/2: each output covers 1.5 inputs, half of the bright one. */
    im.width = 3;
    im.pixels = three;
    ASSERT_EQ_INT(img_to_gray(&im, 2, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 1.0 / 3.0, 1e-7);
    ASSERT_NEAR(out[1], 1.0 / 3.0, 1e-7);
    /* Vertically the same. */
    im.width = 1;
    im.height = 3;
    ASSERT_EQ_INT(img_to_gray(&im, 1, 2, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 1.0 / 3.0, 1e-7);
    ASSERT_NEAR(out[1], 1.0 / 3.0, 1e-7);
}

static void test_resize_keeps_mean(void) {
    static const int sizes[][2] = {{37, 29}, {28, 28}, {3, 100}, {100, 3}, {1, 1}, {64, 64}};
    uint8_t pix[41 * 53];
    float out[100 * 100];
    img_image im = {41, 53, 1, pix};
    uint32_t s = 99;
    double mean_in = 0.0;
    size_t i, k;
    for (i = 0; i < sizeof pix; i++) {
        pix[i] = (uint8_t)rng_next(&s);
        mean_in += pix[i] / 255.0;
    }
    mean_in /= sizeof pix;
    for (k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        double m = 0.0;
        ASSERT_EQ_INT(img_to_gray(&im, w, h, IMG_INVERT_FALSE, out, NULL), 0);
        for (i = 0; i < (size_t)(w * h); i++) m += out[i];
        ASSERT_NEAR(m / (w * h), mean_in, 1e-5);
    }
}

static void test_resize_same_size(void) {
    /* Input already at the output size: each output is the pixel's own
     * luminance, exactly as p / 255.0 for gray, for every colour type. */
    uint8_t pix[28 * 28 * 4];
    float out[28 * 28];
    img_image im = {28, 28, 1, pix};
    size_t i;
    int inv = -1;
    for (i = 0; i < sizeof pix; i++) pix[i] = (uint8_t)(i * 37 + (i >> 3));
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, &inv), 0);
    for (i = 0; i < 28 * 28; i++) ASSERT(out[i] == (float)(pix[i] / 255.0));
    im.channels = 3;
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, NULL), 0);
    for (i = 0; i < 28 * 28; i++)
        ASSERT_NEAR(out[i], (0.299 * pix[3 * i] + 0.587 * pix[3 * i + 1] + 0.114 * pix[3 * i + 2]) / 255.0, 1e-6);
    im.channels = 4;
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, NULL), 0);
    for (i = 0; i < 28 * 28; i++)
        ASSERT_NEAR(out[i], (0.299 * pix[4 * i] + 0.587 * pix[4 * i + 1] + 0.114 * pix[4 * i + 2]) / 255.0 *
                                (pix[4 * i + 3] / 255.0), 1e-6);

    /* Auto inversion still looks at the border: half 0, half 255 is exactly 0.5, not above. */
    im.channels = 1;
    memset(pix, 0, sizeof pix);
    for (i = 0; i < 28; i++) pix[i] = 255; /* top row */
    for (i = 1; i < 27; i++) pix[i * 28] = 255; /* left column below it: 54 of 108 */
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_AUTO, out, &inv), 0);
    ASSERT_EQ_INT(inv, 0);
    pix[2 * 28 + 27] = 255; /* 55 of the 108 border pixels: above half */
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_AUTO, out, &inv), 0);
    ASSERT_EQ_INT(inv, 1);
    ASSERT(out[14 * 28 + 14] == 1.0f);
}

static void test_luminance(void) {
    uint8_t rgb[4 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255};
    uint8_t rgba[2 * 4] = {255, 255, 255, 0, 200, 200, 200, 255};
    uint8_t ga[2 * 2] = {255, 51, 100, 255};
    float out[4];
    img_image im = {4, 1, 3, rgb};
    ASSERT_EQ_INT(img_to_gray(&im, 4, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 0.299, 1e-6);
    ASSERT_NEAR(out[1], 0.587, 1e-6);
    ASSERT_NEAR(out[2], 0.114, 1e-6);
    ASSERT_NEAR(out[3], 1.0, 1e-6);
    im.width = 2;
    im.channels = 4;
    im.pixels = rgba; /* alpha over black */
    ASSERT_EQ_INT(img_to_gray(&im, 2, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 0.0, 1e-6);
    ASSERT_NEAR(out[1], 200 / 255.0, 1e-6);
    im.channels = 2;
    im.pixels = ga;
    ASSERT_EQ_INT(img_to_gray(&im, 2, 1, IMG_INVERT_FALSE, out, NULL), 0);
    ASSERT_NEAR(out[0], 0.2, 1e-6);
    ASSERT_NEAR(out[1], 100 / 255.0, 1e-6);
}

/* A w x w gray picture: background bg, a centred square of fg. */
static void square(uint8_t *pix, int w, uint8_t bg, uint8_t fg) {
    int x, y;
    for (y = 0; y < w; y++)
        for (x = 0; x < w; x++)
            pix[y * w + x] = (x >= w / 4 && x < 3 * w / 4 && y >= w / 4 && y < 3 * w / 4) ? fg : bg;
}

static void test_invert(void) {
    uint8_t pix[40 * 40];
    float out[28 * 28];
    img_image im = {40, 40, 1, pix};
    int inv = -1;

    square(pix, 40, 240, 20); /* a product photo: dark on light */
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_AUTO, out, &inv), 0);
    ASSERT_EQ_INT(inv, 1);
    ASSERT_NEAR(out[0], 1.0 - 240 / 255.0, 1e-6);
    ASSERT_NEAR(out[14 * 28 + 14], 1.0 - 20 / 255.0, 1e-6);

    square(pix, 40, 0, 200); /* Fashion-MNIST: light on dark */
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_AUTO, out, &inv), 0);
    ASSERT_EQ_INT(inv, 0);
    ASSERT_NEAR(out[0], 0.0, 1e-6);
    ASSERT_NEAR(out[14 * 28 + 14], 200 / 255.0, 1e-6);

    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_TRUE, out, &inv), 0);
    ASSERT_EQ_INT(inv, 1);
    ASSERT_NEAR(out[0], 1.0, 1e-6);
    square(pix, 40, 240, 20);
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_FALSE, out, &inv), 0);
    ASSERT_EQ_INT(inv, 0);
    ASSERT_NEAR(out[0], 240 / 255.0, 1e-6);

    /* Exactly half is not above half: no inversion. A 1x1 output's border is itself. */
    memset(pix, 255, sizeof pix);
    pix[0] = 0;
    im.width = 2;
    im.height = 1; /* pixels 0, 255: mean 0.5 */
    ASSERT_EQ_INT(img_to_gray(&im, 1, 1, IMG_INVERT_AUTO, out, &inv), 0);
    ASSERT_EQ_INT(inv, 0);
}

static void test_to_gray_args(void) {
    uint8_t pix[4] = {0};
    float out[4];
    img_image im = {2, 2, 1, pix};
    int inv = 7;
    ASSERT_EQ_INT(img_to_gray(NULL, 2, 2, IMG_INVERT_AUTO, out, &inv), IMG_ERR_ARG);
    ASSERT_EQ_INT(inv, 0);
    ASSERT_EQ_INT(img_to_gray(&im, 0, 2, IMG_INVERT_AUTO, out, NULL), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_to_gray(&im, 2, -1, IMG_INVERT_AUTO, out, NULL), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_to_gray(&im, 2, 2, IMG_INVERT_AUTO, NULL, NULL), IMG_ERR_ARG);
    im.channels = 5;
    ASSERT_EQ_INT(img_to_gray(&im, 2, 2, IMG_INVERT_AUTO, out, NULL), IMG_ERR_ARG);
    im.channels = 1;
    im.pixels = NULL;
    ASSERT_EQ_INT(img_to_gray(&im, 2, 2, IMG_INVERT_AUTO, out, NULL), IMG_ERR_ARG);
    im.pixels = pix;
    im.width = 0;
    ASSERT_EQ_INT(img_to_gray(&im, 2, 2, IMG_INVERT_AUTO, out, NULL), IMG_ERR_ARG);
}

/* Decode a real PNG and bring it to 28x28, end to end. */
static void test_decode_then_gray(void) {
    png_case pc = {"e2e", 56, 56, 8, PNG_COLOR_TYPE_RGB, 0, 0};
    size_t len = 0;
    uint8_t *png = make_png(&pc, &len);
    img_image im;
    float out[28 * 28];
    char err[256] = "";
    int inv;
    ASSERT(png != NULL);
    ASSERT_STATUS(img_decode(png, len, NULL, &im, err, sizeof err), IMG_OK, err);
    free(png);
    ASSERT_EQ_INT(img_to_gray(&im, 28, 28, IMG_INVERT_AUTO, out, &inv), 0);
    img_free(&im);
    img_free(&im); /* twice is harmless */
    img_free(NULL);
}

/* ==== PNG encoding ==== */

static void test_encode_roundtrip(void) {
    static const int chans[] = {1, 2, 3, 4};
    static const int sizes[][2] = {{1, 1}, {28, 28}, {17, 5}, {300, 2}};
    size_t k, s, i;
    for (k = 0; k < 4; k++)
        for (s = 0; s < 4; s++) {
            int ch = chans[k], w = sizes[s][0], h = sizes[s][1], dch = ch <= 2 ? 1 : 3;
            size_t n = (size_t)w * h;
            uint8_t *pix = malloc(n * ch), *png = NULL;
            size_t len = 0;
            img_image im;
            char err[256] = "";
            ASSERT(pix != NULL);
            for (i = 0; i < n * ch; i++) pix[i] = (uint8_t)(i * 13 + i / 7);
            if (ch == 2 || ch == 4) /* opaque, so the round trip is exact */
                for (i = 0; i < n; i++) pix[i * ch + ch - 1] = 255;
            ASSERT_EQ_INT(img_encode_png(pix, w, h, ch, &png, &len), 0);
            ASSERT(png != NULL && len > 8);
            ASSERT_STATUS(img_decode(png, len, NULL, &im, err, sizeof err), IMG_OK, err);
            free(png);
            ASSERT_EQ_INT(im.width, w);
            ASSERT_EQ_INT(im.height, h);
            ASSERT_EQ_INT(im.channels, dch);
            for (i = 0; i < n; i++)
                if (memcmp(im.pixels + i * dch, pix + i * ch, (size_t)dch) != 0) {
                    img_free(&im);
                    free(pix);
                    FAIL_("channels %d, %dx%d: pixel %zu differs after the round trip", ch, w, h, i);
                }
            g_checks++;
            img_free(&im);
            free(pix);
        }
}

static void test_encode_alpha_composites(void) {
    uint8_t rgba[2 * 4] = {200, 100, 50, 0, 200, 100, 50, 128}, *png = NULL;
    size_t len = 0;
    img_image im;
    char err[256] = "";
    ASSERT_EQ_INT(img_encode_png(rgba, 2, 1, 4, &png, &len), 0);
    ASSERT_STATUS(img_decode(png, len, NULL, &im, err, sizeof err), IMG_OK, err);
    free(png);
    ASSERT_EQ_INT(im.channels, 3);
    ASSERT_EQ_INT(im.pixels[0], 0);
    ASSERT_EQ_INT(im.pixels[1], 0);
    ASSERT_NEAR(im.pixels[3], 200 * 128 / 255.0, 1);
    ASSERT_NEAR(im.pixels[4], 100 * 128 / 255.0, 1);
    ASSERT_NEAR(im.pixels[5], 50 * 128 / 255.0, 1);
    img_free(&im);
}

static void test_encode_args(void) {
    uint8_t pix[4] = {0}, *png = (uint8_t *)pix;
    size_t len = 9;
    ASSERT_EQ_INT(img_encode_png(NULL, 2, 2, 1, &png, &len), IMG_ERR_ARG);
    ASSERT(png == NULL && len == 0);
    ASSERT_EQ_INT(img_encode_png(pix, 0, 2, 1, &png, &len), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_encode_png(pix, 2, 0, 1, &png, &len), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_encode_png(pix, 2, 2, 0, &png, &len), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_encode_png(pix, 2, 2, 5, &png, &len), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_encode_png(pix, 2, 2, 1, NULL, &len), IMG_ERR_ARG);
    ASSERT_EQ_INT(img_encode_png(pix, 2, 2, 1, &png, NULL), IMG_ERR_ARG);
}

/* ==== Colormap and heatmap ==== */

static double luma(const uint8_t c[3]) {
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
}

static void test_colormap(void) {
    uint8_t c[3], lo[3], hi[3], prev[3];
    int i;
    img_colormap(0.0f, lo);
    img_colormap(1.0f, hi);
    ASSERT(lo[0] == 68 && lo[1] == 1 && lo[2] == 84);    /* dark purple */
    ASSERT(hi[0] == 253 && hi[1] == 231 && hi[2] == 37); /* yellow */
    ASSERT(luma(hi) - luma(lo) > 150.0);
    img_colormap(-3.0f, c);
    ASSERT(memcmp(c, lo, 3) == 0);
    img_colormap(7.0f, c);
    ASSERT(memcmp(c, hi, 3) == 0);
    img_colormap(NAN, c);
    ASSERT(memcmp(c, lo, 3) == 0);
    memcpy(prev, lo, 3);
    for (i = 1; i <= 1000; i++) {
        img_colormap((float)i / 1000.0f, c);
        /* Monotone up to rounding of each channel to 8 bits. */
        if (luma(c) < luma(prev) - 0.6) FAIL_("luminance falls at v = %g", i / 1000.0);
        memcpy(prev, c, 3);
    }
    g_checks++;
    /* Stepwise over coarse steps it rises strictly. */
    for (i = 1; i <= 20; i++) {
        uint8_t a[3], b[3];
        img_colormap((float)(i - 1) / 20.0f, a);
        img_colormap((float)i / 20.0f, b);
        ASSERT(luma(b) > luma(a));
    }
}

static void test_heatmap(void) {
    float map[2 * 2] = {0.0f, 1.0f, 0.5f, 2.0f}, base[2 * 2] = {0.0f, 1.0f, 0.2f, 0.6f};
    uint8_t rgb[6 * 6 * 3], c[3];
    int x, y, k;

    memset(rgb, 0xee, sizeof rgb);
    img_heatmap(map, NULL, 2, 2, 3, 0.5f, rgb);
    for (y = 0; y < 6; y++)
        for (x = 0; x < 6; x++) {
            img_colormap(map[(y / 3) * 2 + x / 3] > 1.0f ? 1.0f : map[(y / 3) * 2 + x / 3], c);
            ASSERT(memcmp(rgb + (y * 6 + x) * 3, c, 3) == 0);
        }
    img_heatmap(map, base, 2, 2, 3, 0.0f, rgb); /* alpha 0: the gray base */
    for (y = 0; y < 6; y++)
        for (x = 0; x < 6; x++)
            for (k = 0; k < 3; k++)
                ASSERT_NEAR(rgb[(y * 6 + x) * 3 + k], base[(y / 3) * 2 + x / 3] * 255.0, 0.51);
    img_heatmap(map, base, 2, 2, 3, 1.0f, rgb); /* alpha 1: the colours */
    img_colormap(0.5f, c);
    ASSERT(memcmp(rgb + (3 * 6 + 0) * 3, c, 3) == 0);
    img_heatmap(map, base, 2, 2, 1, 0.5f, rgb); /* scale 1, half and half */
    img_colormap(0.5f, c);
    for (k = 0; k < 3; k++) ASSERT_NEAR(rgb[2 * 3 + k], 0.5 * c[k] + 0.5 * 0.2 * 255.0, 1.0);

    memset(rgb, 0xee, sizeof rgb); /* bad arguments write nothing */
    img_heatmap(NULL, base, 2, 2, 3, 0.5f, rgb);
    img_heatmap(map, base, 0, 2, 3, 0.5f, rgb);
    img_heatmap(map, base, 2, 2, 0, 0.5f, rgb);
    for (k = 0; k < (int)sizeof rgb; k++) ASSERT_EQ_INT(rgb[k], 0xee);
}

static void test_status_names(void) {
    ASSERT(strcmp(img_status_name(IMG_OK), "ok") == 0);
    ASSERT(strcmp(img_status_name(IMG_ERR_TOO_LARGE), "too_large") == 0);
    ASSERT(strcmp(img_status_name(-99), "unknown") == 0);
    ASSERT(img_default_limits().max_pixels == 40000000u);
}

/* ==== Runner ==== */

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

int main(int argc, char **argv) {
    static const test_case tests[] = {
        {"png_color_types", test_png_color_types},
        {"png_interlaced", test_png_interlaced},
        {"png_truncated", test_png_truncated},
        {"png_bad_crc", test_png_bad_crc},
        {"png_bomb", test_png_bomb},
        {"png_zero_dimensions", test_png_zero_dimensions},
        {"png_trailing_junk_and_no_iend", test_png_trailing_junk_and_no_iend},
        {"jpeg_baseline", test_jpeg_baseline},
        {"jpeg_progressive", test_jpeg_progressive},
        {"jpeg_cmyk", test_jpeg_cmyk},
        {"jpeg_bad", test_jpeg_bad},
        {"not_images", test_not_images},
        {"resize_block_means", test_resize_block_means},
        {"resize_constant", test_resize_constant},
        {"resize_fractional", test_resize_fractional},
        {"resize_keeps_mean", test_resize_keeps_mean},
        {"resize_same_size", test_resize_same_size},
        {"luminance", test_luminance},
        {"invert", test_invert},
        {"to_gray_args", test_to_gray_args},
        {"decode_then_gray", test_decode_then_gray},
        {"encode_roundtrip", test_encode_roundtrip},
        {"encode_alpha_composites", test_encode_alpha_composites},
        {"encode_args", test_encode_args},
        {"colormap", test_colormap},
        {"heatmap", test_heatmap},
        {"status_names", test_status_names},
    };
    size_t i, n = sizeof tests / sizeof tests[0];

    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) {
        g_corpus_dir = argv[2];
        mkdir(g_corpus_dir, 0755);
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
        return 2;
    }
    for (i = 0; i < n; i++) {
        g_test_failed = 0;
        tests[i].fn();
        printf("%s %s\n", g_test_failed ? "FAIL" : "ok  ", tests[i].name);
        if (g_test_failed) g_failed_tests++;
    }
    printf("%zu tests, %d failed, %d checks\n", n, g_failed_tests, g_checks);
    return g_failed_tests ? 1 : 0;
}
