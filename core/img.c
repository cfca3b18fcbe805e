/* img.c -- bounded image decoding (libpng, TurboJPEG), preprocessing, PNG encoding, heatmaps. */
#include "img.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <turbojpeg.h>

/* Per-chunk allocation cap for ancillary chunks (iCCP, zTXt, unknown, ...), and
 * how many ancillary chunks libpng may keep. IDAT is streamed, not held whole. */
#define IMG__PNG_CHUNK_MALLOC_MAX (8u * 1024u * 1024u)
#define IMG__PNG_CHUNK_CACHE_MAX 128u

/* ==== Status, limits, errors ==== */

/* Slug for a status; a static string, "unknown" for anything else. */
const char *img_status_name(int status) {
    switch (status) {
    case IMG_OK: return "ok";
    case IMG_ERR_EMPTY: return "empty";
    case IMG_ERR_FORMAT: return "format";
    case IMG_ERR_CORRUPT: return "corrupt";
    case IMG_ERR_DIMENSIONS: return "dimensions";
    case IMG_ERR_TOO_LARGE: return "too_large";
    case IMG_ERR_NOMEM: return "nomem";
    case IMG_ERR_ARG: return "arg";
    default: return "unknown";
    }
}

/* The daemon's defaults; callers copy and adjust. */
img_limits img_default_limits(void) {
    img_limits lim;
    lim.max_pixels = 40000000u;
    return lim;
}

/* Frees the pixels and zeroes the struct, so a second call is harmless. */
void img_free(img_image *im) {
    if (!im) return;
    free(im->pixels);
    memset(im, 0, sizeof *im);
}

/* printf into the caller's error buffer, if there is one. */
static void img__err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (!err || errlen == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The big-endian 32-bit value at p (PNG's byte order). */
static uint32_t img__be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reject a w x h header against the limits. Returns 0, IMG_ERR_DIMENSIONS or
 * IMG_ERR_TOO_LARGE (with a message in err). */
static int img__check_dims(const char *fmt, uint64_t w, uint64_t h, const img_limits *lim,
                           char *err, size_t errlen) {
    if (w == 0 || h == 0) {
        img__err(err, errlen, "%s image has a zero dimension (%llux%llu)", fmt,
                 (unsigned long long)w, (unsigned long long)h);
        return IMG_ERR_DIMENSIONS;
    }
    /* Callers pass values below 2^32, so the product fits in 64 bits. */
    if (w > lim->max_pixels || h > lim->max_pixels || w * h > lim->max_pixels) {
        img__err(err, errlen, "%s image is %llux%llu pixels, more than the limit of %llu",
                 fmt, (unsigned long long)w, (unsigned long long)h,
                 (unsigned long long)lim->max_pixels);
        return IMG_ERR_TOO_LARGE;
    }
    return 0;
}

/* Convert n pixels of 8-bit samples in place from ch (1..4) channels to 1 (ch
 * 1, 2) or 3 (ch 3, 4), compositing alpha over black. Returns the new channel
 * count. Works in place because the output stride never exceeds the input's. */
static int img__drop_alpha(uint8_t *p, size_t n, int ch) {
    size_t i;
    if (ch == 2) {
        for (i = 0; i < n; i++)
            p[i] = (uint8_t)(((unsigned)p[2 * i] * p[2 * i + 1] + 127u) / 255u);
        return 1;
    }
    if (ch == 4) {
        for (i = 0; i < n; i++) {
            unsigned a = p[4 * i + 3];
            p[3 * i + 0] = (uint8_t)(((unsigned)p[4 * i + 0] * a + 127u) / 255u);
            p[3 * i + 1] = (uint8_t)(((unsigned)p[4 * i + 1] * a + 127u) / 255u);
            p[3 * i + 2] = (uint8_t)(((unsigned)p[4 * i + 2] * a + 127u) / 255u);
        }
        return 3;
    }
    return ch;
}

/* ==== PNG decoding (libpng) ==== */

/* Everything the decoder changes after setjmp lives here, in memory, so that
 * nothing is lost to longjmp (no volatile locals needed). */
typedef struct {
    const uint8_t *buf;
    size_t len, pos;          /* input bytes and read position */
    png_structp png;
    png_infop info;
    uint8_t *pixels;          /* [height, rowbytes] while decoding */
    int nomem;                /* set when libpng's failure was an allocation */
    char msg[192];            /* libpng's last error message */
} img__png_in;

/* Decoder errors: keep libpng's message and unwind to img__decode_png's
 * setjmp. Never returns. */
static void img__png_on_error(png_structp png, png_const_charp msg) {
    img__png_in *in = png_get_error_ptr(png);
    if (in) {
        snprintf(in->msg, sizeof in->msg, "%s", msg ? msg : "unknown libpng error");
        /* libpng reports its own allocation failures with this wording. */
        if (msg && (strstr(msg, "Out of memory") || strstr(msg, "out of memory")))
            in->nomem = 1;
    }
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary CRCs, unknown chunks, ...) are not errors: ignore them
 * rather than let libpng print to stderr. */
static void img__png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Bounds-checked reader over the input buffer: running off the end is a libpng
 * error (longjmp), never a read past len. */
static void img__png_read(png_structp png, png_bytep dst, size_t n) {
    img__png_in *in = png_get_io_ptr(png);
    if (n > in->len - in->pos) png_error(png, "unexpected end of data (truncated PNG)");
    memcpy(dst, in->buf + in->pos, n);
    in->pos += n;
}

/* Decode a PNG whose signature the caller checked. Returns 0 and fills *out,
 * or a negative img_status with a message in err; frees everything it made. */
static int img__decode_png(const uint8_t *buf, size_t len, const img_limits *lim,
                           img_image *out, char *err, size_t errlen) {
    img__png_in in;
    png_uint_32 w, h, ulim;
    int bit_depth, color_type, interlace, passes, pass, ch, rc;
    size_t rowbytes, y;
    uint8_t *shrunk;

    memset(&in, 0, sizeof in);
    in.buf = buf;
    in.len = len;

    /* Bomb guard before libpng exists: the first chunk must be IHDR (signature
     * 8, length 4, type 4, then width and height), so its claimed size can be
     * refused before a single row is allocated. libpng still validates IHDR
     * (CRC, bit depth, ...) below. */
    if (len < 24) {
        img__err(err, errlen, "PNG is truncated before its IHDR chunk (%zu bytes)", len);
        return IMG_ERR_CORRUPT;
    }
    if (memcmp(buf + 12, "IHDR", 4) != 0) {
        img__err(err, errlen, "PNG does not start with an IHDR chunk");
        return IMG_ERR_CORRUPT;
    }
    rc = img__check_dims("PNG", img__be32(buf + 16), img__be32(buf + 20), lim, err, errlen);
    if (rc) return rc;

    in.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &in, img__png_on_error,
                                    img__png_on_warning);
    if (!in.png) {
        img__err(err, errlen, "cannot create the PNG decoder (out of memory)");
        return IMG_ERR_NOMEM;
    }
    in.info = png_create_info_struct(in.png);
    if (!in.info) {
        img__err(err, errlen, "cannot create the PNG decoder (out of memory)");
        rc = IMG_ERR_NOMEM;
        goto fail;
    }
    if (setjmp(png_jmpbuf(in.png))) {
        rc = in.nomem ? IMG_ERR_NOMEM : IMG_ERR_CORRUPT;
        img__err(err, errlen, "PNG decoding failed: %s", in.msg);
        goto fail;
    }

    png_set_read_fn(in.png, &in, img__png_read);
    /* Second line of defence, in libpng itself: no dimension above the pixel
     * limit (a dimension alone can never exceed the product). */
    ulim = lim->max_pixels > 0x7fffffffu ? 0x7fffffffu : (png_uint_32)lim->max_pixels;
    png_set_user_limits(in.png, ulim, ulim);
    png_set_chunk_malloc_max(in.png, IMG__PNG_CHUNK_MALLOC_MAX);
    png_set_chunk_cache_max(in.png, IMG__PNG_CHUNK_CACHE_MAX);
#ifdef PNG_HANDLE_AS_UNKNOWN_SUPPORTED
    /* Skip every chunk but IHDR, PLTE, tRNS, IDAT and IEND (libpng's meaning of
     * a negative count): no text inflation, no ICC profiles, no gamma. */
    png_set_keep_unknown_chunks(in.png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
#endif
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    /* Let the fuzzer past CRCs, as libpng's own fuzz target does. */
    png_set_crc_action(in.png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#endif

    png_read_info(in.png, in.info);
    png_get_IHDR(in.png, in.info, &w, &h, &bit_depth, &color_type, &interlace, NULL, NULL);
    rc = img__check_dims("PNG", w, h, lim, err, errlen);
    if (rc) goto fail;

    /* Bring every colour type to 8-bit gray, gray+alpha, RGB or RGBA. */
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(in.png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8)
        png_set_expand_gray_1_2_4_to_8(in.png);
    if (png_get_valid(in.png, in.info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(in.png);
    if (bit_depth == 16) {
#ifdef PNG_READ_SCALE_16_TO_8_SUPPORTED
        png_set_scale_16(in.png);
#else
        png_set_strip_16(in.png);
#endif
    }
    passes = png_set_interlace_handling(in.png);
    png_read_update_info(in.png, in.info);

    ch = png_get_channels(in.png, in.info);
    rowbytes = png_get_rowbytes(in.png, in.info);
    if (png_get_bit_depth(in.png, in.info) != 8 || ch < 1 || ch > 4 ||
        rowbytes != (size_t)w * (size_t)ch) {
        img__err(err, errlen, "PNG decoding failed: unexpected pixel layout after expansion");
        rc = IMG_ERR_CORRUPT;
        goto fail;
    }
    /* w * h <= max_pixels was checked, so this product is bounded. */
    in.pixels = malloc((size_t)h * rowbytes);
    if (!in.pixels) {
        img__err(err, errlen, "cannot allocate %ux%u PNG pixels", (unsigned)w, (unsigned)h);
        rc = IMG_ERR_NOMEM;
        goto fail;
    }
    /* Row by row (no row-pointer array of h entries); for Adam7 libpng merges
     * each pass into the rows it already holds. */
    for (pass = 0; pass < passes; pass++)
        for (y = 0; y < h; y++) png_read_row(in.png, in.pixels + y * rowbytes, NULL);
    /* The trailing chunks (IEND) are not read: everything needed is here. */
    png_destroy_read_struct(&in.png, &in.info, NULL);

    out->width = (int)w;
    out->height = (int)h;
    out->channels = img__drop_alpha(in.pixels, (size_t)w * h, ch);
    if (out->channels != ch) {
        shrunk = realloc(in.pixels, (size_t)w * h * (size_t)out->channels);
        if (shrunk) in.pixels = shrunk; /* on failure the larger block still works */
    }
    out->pixels = in.pixels;
    return 0;

fail:
    png_destroy_read_struct(&in.png, in.info ? &in.info : NULL, NULL);
    free(in.pixels);
    return rc;
}

/* ==== JPEG decoding (TurboJPEG) ==== */

/* Decode a JPEG whose signature the caller checked. Returns 0 and fills *out,
 * or a negative img_status with TurboJPEG's message in err. */
static int img__decode_jpeg(const uint8_t *buf, size_t len, const img_limits *lim,
                            img_image *out, char *err, size_t errlen) {
    tjhandle tj;
    int w = 0, h = 0, subsamp = -1, cs = -1, pf, ch, rc;
    uint8_t *pix = NULL;
    size_t i, n;

    if ((unsigned long)len != len) {
        img__err(err, errlen, "JPEG of %zu bytes is too large to decode", len);
        return IMG_ERR_TOO_LARGE;
    }
    tj = tjInitDecompress();
    if (!tj) {
        img__err(err, errlen, "cannot create the JPEG decoder: %s", tjGetErrorStr2(NULL));
        return IMG_ERR_NOMEM;
    }
    if (tjDecompressHeader3(tj, buf, (unsigned long)len, &w, &h, &subsamp, &cs) != 0) {
        img__err(err, errlen, "JPEG header is invalid: %s", tjGetErrorStr2(tj));
        rc = IMG_ERR_CORRUPT;
        goto fail;
    }
    /* A tables-only stream passes the header call (libjpeg-turbo 2.1 leaves
     * the outputs as they were), and libjpeg refuses a zero height itself. */
    if (w <= 0 || h <= 0) {
        img__err(err, errlen, "JPEG holds no image (tables only, or a size of %dx%d)", w, h);
        rc = IMG_ERR_CORRUPT;
        goto fail;
    }
    rc = img__check_dims("JPEG", (uint64_t)w, (uint64_t)h, lim, err, errlen);
    if (rc) goto fail;

    if (cs == TJCS_GRAY) {
        pf = TJPF_GRAY;
        ch = 1;
    } else if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        pf = TJPF_CMYK; /* libjpeg cannot convert CMYK to RGB; done below */
        ch = 4;
    } else {
        pf = TJPF_RGB;
        ch = 3;
    }
    n = (size_t)w * (size_t)h;
    pix = malloc(n * (size_t)ch);
    if (!pix) {
        img__err(err, errlen, "cannot allocate %dx%d JPEG pixels", w, h);
        rc = IMG_ERR_NOMEM;
        goto fail;
    }
    /* STOPONWARNING: a truncated or corrupt stream is an error, not a gray
     * fill. LIMITSCANS: a progressive JPEG may have at most 500 scans, which
     * bounds the decode time of a small file. */
    if (tjDecompress2(tj, buf, (unsigned long)len, pix, w, 0, h, pf,
                      TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        img__err(err, errlen, "JPEG decoding failed: %s", tjGetErrorStr2(tj));
        rc = IMG_ERR_CORRUPT;
        goto fail;
    }
    tjDestroy(tj);

    if (ch == 4) {
        /* Adobe's CMYK JPEGs store inverted inks (255 = no ink), so the colour
         * is each stored C, M, Y times the stored K. */
        for (i = 0; i < n; i++) {
            unsigned k = pix[4 * i + 3];
            pix[3 * i + 0] = (uint8_t)(((unsigned)pix[4 * i + 0] * k + 127u) / 255u);
            pix[3 * i + 1] = (uint8_t)(((unsigned)pix[4 * i + 1] * k + 127u) / 255u);
            pix[3 * i + 2] = (uint8_t)(((unsigned)pix[4 * i + 2] * k + 127u) / 255u);
        }
        ch = 3;
        {
            uint8_t *shrunk = realloc(pix, n * 3);
            if (shrunk) pix = shrunk;
        }
    }
    out->width = w;
    out->height = h;
    out->channels = ch;
    out->pixels = pix;
    return 0;

fail:
    free(pix);
    tjDestroy(tj);
    return rc;
}

/* ==== Decoding entry point ==== */

/* Sniff the signature and hand over to a decoder. On failure *out is zeroed
 * (the decoders free what they allocated) and err holds one sentence. */
int img_probe(const uint8_t *buf, size_t len, uint32_t *width, uint32_t *height) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 24 && !memcmp(buf, png_sig, 8) && !memcmp(buf + 12, "IHDR", 4)) {
        *width = img__be32(buf + 16);
        *height = img__be32(buf + 20);
        return 0;
    }
    if (len < 4 || buf[0] != 0xFF || buf[1] != 0xD8) return -1;
    /* Walk the JPEG's marker segments to the first start-of-frame. */
    size_t p = 2;
    while (p + 4 <= len) {
        if (buf[p] != 0xFF) return -1;
        uint8_t mk = buf[p + 1];
        if (mk == 0xFF) { /* fill byte */
            p++;
            continue;
        }
        if (mk == 0x01 || (mk >= 0xD0 && mk <= 0xD7)) { /* TEM, RSTn: no length field */
            p += 2;
            continue;
        }
        size_t seg = (size_t)buf[p + 2] << 8 | buf[p + 3];
        int sof = mk >= 0xC0 && mk <= 0xCF && mk != 0xC4 && mk != 0xC8 && mk != 0xCC;
        if (sof) {
            if (p + 9 > len) return -1;
            *height = (uint32_t)buf[p + 5] << 8 | buf[p + 6];
            *width = (uint32_t)buf[p + 7] << 8 | buf[p + 8];
            return 0;
        }
        if (mk == 0xD9 || mk == 0xDA || seg < 2) return -1; /* end or scan data before any frame */
        p += 2 + seg;
    }
    return -1;
}

int img_decode(const uint8_t *buf, size_t len, const img_limits *lim, img_image *out,
               char *err, size_t errlen) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    img_limits def = img_default_limits();
    int rc;

    if (err && errlen) err[0] = '\0';
    if (!out) {
        img__err(err, errlen, "no output image given");
        return IMG_ERR_ARG;
    }
    memset(out, 0, sizeof *out);
    if (!lim) lim = &def;
    if (!buf || len == 0) {
        img__err(err, errlen, "the image is empty (0 bytes)");
        return IMG_ERR_EMPTY;
    }
    if (len >= sizeof png_sig && memcmp(buf, png_sig, sizeof png_sig) == 0)
        rc = img__decode_png(buf, len, lim, out, err, errlen);
    else if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
        rc = img__decode_jpeg(buf, len, lim, out, err, errlen);
    else {
        img__err(err, errlen, "not a PNG or JPEG image (unknown signature)");
        return IMG_ERR_FORMAT;
    }
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

/* ==== Preprocessing: luminance, area resize, inversion ==== */

/* Luminance in [0,1] of the pixel at p with ch channels (alpha over black). */
static double img__luma(const uint8_t *p, int ch) {
    switch (ch) {
    case 1: return p[0] / 255.0;
    case 2: return (p[0] / 255.0) * (p[1] / 255.0);
    case 3: return (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 255.0;
    default: return (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]) / 255.0 * (p[3] / 255.0);
    }
}

/* The exact box filter in integer units: along an axis of n inputs and m
 * outputs, scale coordinates by n * m so that input i covers [i*m, (i+1)*m)
 * and output o covers [o*n, (o+1)*n). Overlaps are then integers, and output o
 * is sum(overlap_i * v_i) / n -- the average over its footprint, whether m is
 * smaller (down) or larger (up) than n. The border mean for auto inversion
 * is taken on the resized image, the one the model will see.
 * Returns 0, IMG_ERR_ARG or IMG_ERR_NOMEM; scratch is freed on every path. */
int img_to_gray(const img_image *im, int w, int h, img_invert inv, float *out,
                int *inverted) {
    double *acc = NULL, *lrow = NULL, *hrow = NULL, border = 0.0;
    uint64_t iw, ih, ow, oh, x, y, ox, oy, lo, hi, x0, x1, oy0, oy1;
    size_t nb = 0, i;
    int ch, flip;

    if (inverted) *inverted = 0;
    if (!im || !im->pixels || im->width <= 0 || im->height <= 0 || im->channels < 1 ||
        im->channels > 4 || w <= 0 || h <= 0 || !out)
        return IMG_ERR_ARG;
    if ((uint64_t)w * (uint64_t)h > SIZE_MAX / sizeof(double)) return IMG_ERR_ARG;
    iw = (uint64_t)im->width;
    ih = (uint64_t)im->height;
    ow = (uint64_t)w;
    oh = (uint64_t)h;
    ch = im->channels;

    acc = calloc((size_t)(ow * oh), sizeof *acc);
    lrow = malloc((size_t)iw * sizeof *lrow);
    hrow = malloc((size_t)ow * sizeof *hrow);
    if (!acc || !lrow || !hrow) goto nomem;

    if (iw == ow && ih == oh) {
        /* Already the model's size (every Fashion-MNIST image): each output
         * pixel is its own footprint, so skip the resampling arithmetic. */
        for (i = 0; i < (size_t)(ow * oh); i++) acc[i] = img__luma(im->pixels + i * (size_t)ch, ch);
    } else {
        /* Separable: resize each input row horizontally, then add it to the
         * output rows it overlaps, weighted by the overlap. */
        for (y = 0; y < ih; y++) {
            const uint8_t *src = im->pixels + (size_t)(y * iw) * (size_t)ch;
            for (x = 0; x < iw; x++) lrow[x] = img__luma(src + x * (uint64_t)ch, ch);
            for (ox = 0; ox < ow; ox++) {
                double s = 0.0;
                lo = ox * iw;
                hi = lo + iw;
                x0 = lo / ow;
                x1 = (hi - 1) / ow;
                for (x = x0; x <= x1; x++) {
                    uint64_t a = x * ow > lo ? x * ow : lo;
                    uint64_t b = (x + 1) * ow < hi ? (x + 1) * ow : hi;
                    s += (double)(b - a) * lrow[x];
                }
                hrow[ox] = s / (double)iw;
            }
            lo = y * oh;
            hi = lo + oh;
            oy0 = lo / ih;
            oy1 = (hi - 1) / ih;
            for (oy = oy0; oy <= oy1; oy++) {
                uint64_t a = oy * ih > lo ? oy * ih : lo;
                uint64_t b = (oy + 1) * ih < hi ? (oy + 1) * ih : hi;
                double wgt = (double)(b - a) / (double)ih;
                double *dst = acc + (size_t)(oy * ow);
                for (ox = 0; ox < ow; ox++) dst[ox] += wgt * hrow[ox];
            }
        }
    }

    for (oy = 0; oy < oh; oy++)
        for (ox = 0; ox < ow; ox++)
            if (oy == 0 || oy == oh - 1 || ox == 0 || ox == ow - 1) {
                border += acc[oy * ow + ox];
                nb++;
            }
    border /= (double)nb;
    flip = inv == IMG_INVERT_TRUE || (inv == IMG_INVERT_AUTO && border > 0.5);

    for (i = 0; i < (size_t)(ow * oh); i++) {
        double v = acc[i];
        v = v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;
        out[i] = (float)(flip ? 1.0 - v : v);
    }
    if (inverted) *inverted = flip;
    free(acc);
    free(lrow);
    free(hrow);
    return 0;

nomem:
    free(acc);
    free(lrow);
    free(hrow);
    return IMG_ERR_NOMEM;
}

/* ==== PNG encoding (libpng into a growable buffer) ==== */

typedef struct {
    png_structp png;
    png_infop info;
    uint8_t *data;            /* [cap] bytes, len used */
    size_t len, cap;
} img__png_out;

/* Encoder errors: libpng's only failure on valid arguments is memory. */
static void img__png_out_error(png_structp png, png_const_charp msg) {
    (void)msg;
    png_longjmp(png, 1);
}

/* Append to the growable buffer, doubling it; running out of memory is a
 * libpng error (longjmp), the buffer is freed by the caller's fail path. */
static void img__png_write(png_structp png, png_bytep src, size_t n) {
    img__png_out *o = png_get_io_ptr(png);
    if (n > o->cap - o->len) {
        size_t cap = o->cap ? o->cap : 4096;
        uint8_t *p;
        while (cap - o->len < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "out of memory");
            cap *= 2;
        }
        p = realloc(o->data, cap);
        if (!p) png_error(png, "out of memory");
        o->data = p;
        o->cap = cap;
    }
    memcpy(o->data + o->len, src, n);
    o->len += n;
}

/* Nothing to flush in memory. */
static void img__png_flush(png_structp png) {
    (void)png;
}

/* 8-bit PNG, no interlace, zlib level 6. Returns 0 with *png owned by the
 * caller, IMG_ERR_ARG, or IMG_ERR_NOMEM (the buffer is freed, *png NULL). */
int img_encode_png(const uint8_t *pixels, int width, int height, int channels,
                   uint8_t **png, size_t *png_len) {
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    img__png_out o;
    size_t stride;
    int y;

    if (png) *png = NULL;
    if (png_len) *png_len = 0;
    if (!pixels || !png || !png_len || width <= 0 || height <= 0 || channels < 1 ||
        channels > 4 || (size_t)width > SIZE_MAX / 4)
        return IMG_ERR_ARG;
    stride = (size_t)width * (size_t)channels;
    memset(&o, 0, sizeof o);

    o.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &o, img__png_out_error,
                                    img__png_on_warning);
    if (!o.png) return IMG_ERR_NOMEM;
    o.info = png_create_info_struct(o.png);
    if (!o.info) goto fail;
    /* The only way libpng fails on valid arguments is an allocation. */
    if (setjmp(png_jmpbuf(o.png))) goto fail;

    png_set_write_fn(o.png, &o, img__png_write, img__png_flush);
    png_set_IHDR(o.png, o.info, (png_uint_32)width, (png_uint_32)height, 8,
                 types[channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(o.png, 6);
    png_write_info(o.png, o.info);
    for (y = 0; y < height; y++) png_write_row(o.png, pixels + (size_t)y * stride);
    png_write_end(o.png, NULL);
    png_destroy_write_struct(&o.png, &o.info);

    *png = o.data;
    *png_len = o.len;
    return 0;

fail:
    png_destroy_write_struct(&o.png, o.info ? &o.info : NULL);
    free(o.data);
    return IMG_ERR_NOMEM;
}

/* ==== Colormap and heatmaps ==== */

/* Ten stops of a viridis-like map, evenly spaced over [0,1]; the BT.601
 * luminance of each stop is higher than the one before, so linear
 * interpolation keeps it monotone. */
static const uint8_t img__cmap[10][3] = {
    {68, 1, 84},   {72, 40, 120},  {62, 74, 137},  {49, 104, 142}, {38, 130, 142},
    {31, 158, 137}, {53, 183, 121}, {109, 205, 89}, {180, 222, 44}, {253, 231, 37},
};

/* Linear interpolation between the stops; v is clamped, NaN counts as 0. */
void img_colormap(float v, uint8_t rgb[3]) {
    float t, f;
    int i, c;
    if (!rgb) return;
    if (!(v > 0.0f)) v = 0.0f; /* also NaN */
    if (v > 1.0f) v = 1.0f;
    t = v * 9.0f;
    i = (int)t;
    if (i > 8) i = 8;
    f = t - (float)i;
    for (c = 0; c < 3; c++) {
        float a = img__cmap[i][c], b = img__cmap[i + 1][c];
        rgb[c] = (uint8_t)(a + (b - a) * f + 0.5f);
    }
}

/* v clamped to [0,1]; NaN gives 0. */
static float img__clamp01(float v) {
    return v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; /* NaN -> 0 */
}

/* Nearest-neighbour enlargement by scale, optionally blended over base.
 * Writes nothing when an argument is unusable (see img.h). */
void img_heatmap(const float *map, const float *base, int w, int h, int scale,
                 float alpha, uint8_t *rgb) {
    size_t ow, row, y, x, k;
    if (!map || !rgb || w <= 0 || h <= 0 || scale < 1) return;
    if ((size_t)w > SIZE_MAX / 3 / (size_t)scale) return;
    ow = (size_t)w * (size_t)scale;
    if ((size_t)h > SIZE_MAX / (size_t)scale / (ow * 3)) return;
    row = ow * 3;
    alpha = img__clamp01(alpha);

    for (y = 0; y < (size_t)h; y++) {
        uint8_t *dst = rgb + y * (size_t)scale * row;
        /* Build the first enlarged row, then copy it scale - 1 times. */
        for (x = 0; x < (size_t)w; x++) {
            uint8_t c[3];
            size_t i = y * (size_t)w + x;
            img_colormap(img__clamp01(map[i]), c);
            if (base) {
                float g = img__clamp01(base[i]) * 255.0f;
                for (k = 0; k < 3; k++)
                    c[k] = (uint8_t)(alpha * c[k] + (1.0f - alpha) * g + 0.5f);
            }
            for (k = 0; k < (size_t)scale; k++) memcpy(dst + (x * scale + k) * 3, c, 3);
        }
        for (k = 1; k < (size_t)scale; k++) memcpy(dst + k * row, dst, row);
    }
}
