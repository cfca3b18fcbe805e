/* core_input.c -- parse an image upload at the edge, once: content type, then decoder or JSON, then preprocessing. */
#include "clock.h"
#include "core_input.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

/* ==== base64 ==== */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

unsigned char *core_base64_decode(const char *s, size_t n, size_t *out_len, int *bad) {
    *bad = 0;
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out) return NULL;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) goto bad; /* data after padding is not base64 either */
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* 6 leftover bits mean one lone character: not a whole byte. */
    if (bits >= 6 || pad > 2) goto bad;
    *out_len = o;
    return out;
bad:
    free(out);
    *bad = 1;
    return NULL;
}

/* ==== Helpers ==== */

int core_input_parse_invert(const char *v, img_invert *inv, core_fail *f) {
    if (!v || !strcasecmp(v, "auto")) *inv = IMG_INVERT_AUTO;
    else if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes")) *inv = IMG_INVERT_TRUE;
    else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no")) *inv = IMG_INVERT_FALSE;
    else {
        return core_failf(f, CORE_E_BAD_PARAMETER, "invert must be auto, true or false, not '%s'", v);
    }
    return 0;
}

/* Same rule as img_to_gray for pixels that arrive as numbers: invert when the
 * border is brighter than half scale. */
static int border_is_light(const float *p, int w, int h) {
    double sum = 0;
    int n = 0;
    for (int x = 0; x < w; x++) {
        sum += p[x] + p[(size_t)(h - 1) * w + x];
        n += 2;
    }
    for (int y = 1; y < h - 1; y++) {
        sum += p[(size_t)y * w] + p[(size_t)y * w + w - 1];
        n += 2;
    }
    return n && sum / n > 0.5;
}

static int media_is(const char *ct, const char *type) {
    size_t n = strlen(type);
    return ct && !strncasecmp(ct, type, n) && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

static int is_json_type(const char *ct) {
    if (media_is(ct, "application/json")) return 1;
    if (!ct) return 0;
    const char *semi = strchr(ct, ';');
    size_t n = semi ? (size_t)(semi - ct) : strlen(ct);
    return n > 5 && !strncasecmp(ct + n - 5, "+json", 5);
}

static int first_char_is_brace(const unsigned char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') continue;
        return b[i] == '{';
    }
    return 0;
}

/* ==== Geometry: the gray grid to the model's input ==== */

/* One bilinear sample of src [sh, sw] at (fy, fx) in source pixel units
 * (torch's align_corners=False convention: centres at +0.5, edges clamped). */
static float bilinear(const float *src, int sw, int sh, double fy, double fx) {
    if (fy < 0) fy = 0;
    if (fx < 0) fx = 0;
    int y0 = (int)fy, x0 = (int)fx;
    if (y0 > sh - 1) y0 = sh - 1;
    if (x0 > sw - 1) x0 = sw - 1;
    int y1 = y0 + 1 < sh ? y0 + 1 : y0, x1 = x0 + 1 < sw ? x0 + 1 : x0;
    double wy = fy - y0, wx = fx - x0;
    if (wy > 1) wy = 1;
    if (wx > 1) wx = 1;
    double top = src[(size_t)y0 * sw + x0] * (1 - wx) + src[(size_t)y0 * sw + x1] * wx;
    double bot = src[(size_t)y1 * sw + x0] * (1 - wx) + src[(size_t)y1 * sw + x1] * wx;
    return (float)(top * (1 - wy) + bot * wy);
}

/* src [sh, sw] (gray in [0,1]) to in->pixels [height, width] as m->resize
 * says: a copy (area: src is already the input size), black padding around
 * a centred src (pad, as F.pad with p//2 before), or a bilinear resize to
 * resize_to x resize_to followed by a centre crop (resize_crop). */
static void place(const core_model *m, const float *src, int sw, int sh, core_input *in) {
    int w = m->width, h = m->height;
    if (m->resize == CORE_RESIZE_PAD) {
        int ox = (w - sw) / 2, oy = (h - sh) / 2;
        memset(in->pixels, 0, (size_t)w * h * sizeof *in->pixels);
        for (int y = 0; y < sh; y++) memcpy(in->pixels + (size_t)(y + oy) * w + ox, src + (size_t)y * sw, (size_t)sw * sizeof *src);
    } else if (m->resize == CORE_RESIZE_CROP) {
        int rs = m->resize_to, ox = (rs - w) / 2, oy = (rs - h) / 2;
        double ky = (double)sh / rs, kx = (double)sw / rs;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                in->pixels[(size_t)y * w + x] = bilinear(src, sw, sh, (y + oy + 0.5) * ky - 0.5, (x + ox + 0.5) * kx - 0.5);
    } else {
        memcpy(in->pixels, src, (size_t)w * h * sizeof *src);
    }
}

/* The gray grid an encoded image is first brought to: the model's source
 * size, or for resize_crop the image's own size when it is at most
 * resize_to (then bilinear, as the trainer), else resize_to (area-averaged). */
static void gray_size(const core_model *m, const img_image *im, int *sw, int *sh) {
    *sw = m->src_w;
    *sh = m->src_h;
    if (m->resize == CORE_RESIZE_CROP) {
        int small = im->width <= m->resize_to && im->height <= m->resize_to;
        *sw = small ? im->width : m->resize_to;
        *sh = small ? im->height : m->resize_to;
    }
}

int core_input_decode(const core_model *m, const img_limits *lim, const unsigned char *buf, size_t len,
                     img_invert inv, core_input *in, core_err_kind *kind, char *msg, size_t msglen) {
    char err[256] = "";
    img_image im;
    int st = img_decode(buf, len, lim, &im, err, sizeof err);
    if (st < 0) {
        *kind = core_err_from_img(st);
        if (st == IMG_ERR_FORMAT)
            snprintf(msg, msglen, "the body is neither PNG nor JPEG%s%s", err[0] ? ": " : "", err);
        else
            snprintf(msg, msglen, "%s", err[0] ? err : "the image could not be decoded");
        return -1;
    }
    int sw, sh;
    gray_size(m, &im, &sw, &sh);
    float *src = malloc((size_t)sw * sh * sizeof *src);
    st = src ? img_to_gray(&im, sw, sh, inv, src, &in->inverted) : IMG_ERR_NOMEM;
    img_free(&im);
    if (st < 0) {
        free(src);
        *kind = core_err_from_img(st);
        snprintf(msg, msglen, "the image could not be brought to %dx%d", sw, sh);
        return -1;
    }
    place(m, src, sw, sh, in);
    free(src);
    return 0;
}

/* Decode an encoded image and preprocess it into in->pixels. */
static int from_encoded(const core_model *m, const img_limits *lim, const unsigned char *buf, size_t len,
                        img_invert inv, core_input *in, core_fail *f) {
    return core_input_decode(m, lim, buf, len, inv, in, &f->kind, f->msg, sizeof f->msg);
}

/* Put one JSON pixel value into in->pixels[i]. */
static int take_pixel(core_fail *f, json_t *v, size_t i, const char *where, float *out) {
    if (!json_is_number(v)) {
        core_failf(f, CORE_E_BAD_INPUT, "%s is %s, expected a number in [0,1]", where,
                        json_is_string(v) ? "a string" : json_is_null(v) ? "null" : json_is_array(v) ? "an array"
                        : json_is_object(v) ? "an object" : "a boolean");
        return -1;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < 0 || d > 1) {
        core_failf(f, CORE_E_BAD_INPUT, "%s = %g is outside [0,1] (divide 8-bit values by 255)", where, d);
        return -1;
    }
    out[i] = (float)d;
    return 0;
}

static int from_pixels(core_fail *f, const core_model *m, json_t *px, img_invert inv, core_input *in) {
    int w = m->src_w, h = m->src_h;
    size_t n = json_array_size(px);
    char where[64];
    if (!json_is_array(px)) {
        core_failf(f, CORE_E_BAD_INPUT, "\"pixels\" must be an array of %d numbers or %d rows of %d", w * h, h, w);
        return -1;
    }
    float *src = malloc((size_t)w * h * sizeof *src);
    if (!src) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        return -1;
    }
    if (n == (size_t)w * h && !json_is_array(json_array_get(px, 0))) {
        for (size_t i = 0; i < n; i++) {
            snprintf(where, sizeof where, "pixels[%zu]", i);
            if (take_pixel(f, json_array_get(px, i), i, where, src)) goto fail;
        }
    } else if (n == (size_t)h && json_is_array(json_array_get(px, 0))) {
        for (int y = 0; y < h; y++) {
            json_t *row = json_array_get(px, (size_t)y);
            if (!json_is_array(row) || json_array_size(row) != (size_t)w) {
                core_failf(f, CORE_E_BAD_INPUT, "pixels[%d] must be a row of %d numbers, it has %zu", y, w,
                                json_is_array(row) ? json_array_size(row) : (size_t)0);
                goto fail;
            }
            for (int x = 0; x < w; x++) {
                snprintf(where, sizeof where, "pixels[%d][%d]", y, x);
                if (take_pixel(f, json_array_get(row, (size_t)x), (size_t)y * w + x, where, src)) goto fail;
            }
        }
    } else {
        core_failf(f, CORE_E_BAD_INPUT,
                        "\"pixels\" has %zu %s; the model takes %d values (%dx%d), flat or as %d rows of %d", n,
                        json_is_array(json_array_get(px, 0)) ? "rows" : "values", w * h, h, w, h, w);
        goto fail;
    }
    in->inverted = inv == IMG_INVERT_TRUE || (inv == IMG_INVERT_AUTO && border_is_light(src, w, h));
    if (in->inverted)
        for (int i = 0; i < w * h; i++) src[i] = 1.0f - src[i];
    place(m, src, w, h, in);
    free(src);
    return 0;
fail:
    free(src);
    return -1;
}

/* The bytes of a JSON "image" string: base64, or a data: URL as a browser's
 * FileReader makes it. As core_base64_decode: NULL with *bad = 1 for bad
 * base64, NULL with *bad = 0 when out of memory. */
static unsigned char *image_bytes(json_t *img, size_t *len, int *bad) {
    const char *s = json_string_value(img);
    size_t n = json_string_length(img);
    if (!strncmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', n);
        if (comma) {
            n -= (size_t)(comma + 1 - s);
            s = comma + 1;
        }
    }
    return core_base64_decode(s, n, len, bad);
}

static int from_json(const core_model *m, const img_limits *lim, const unsigned char *body, size_t body_len,
                     img_invert inv, core_input *in, core_fail *f) {
    json_error_t je;
    json_t *doc = json_loadb((const char *)body, body_len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        core_failf(f, CORE_E_BAD_JSON, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(doc)) {
        core_failf(f, CORE_E_BAD_JSON, "the JSON body must be an object with \"pixels\" or \"image\"");
    } else if (json_object_get(doc, "pixels")) {
        rc = from_pixels(f, m, json_object_get(doc, "pixels"), inv, in);
    } else if (json_object_get(doc, "image")) {
        const char *s = json_string_value(json_object_get(doc, "image"));
        if (!s) {
            core_failf(f, CORE_E_BAD_INPUT, "\"image\" must be a base64 string of a PNG or JPEG");
        } else {
            int bad;
            size_t len = 0;
            unsigned char *bytes = image_bytes(json_object_get(doc, "image"), &len, &bad);
            if (!bytes && bad) core_failf(f, CORE_E_BAD_INPUT, "\"image\" is not valid base64");
            else if (!bytes) core_failf(f, CORE_E_NOMEM, "out of memory decoding base64");
            else if (!len) core_failf(f, CORE_E_EMPTY_BODY, "\"image\" is empty");
            else rc = from_encoded(m, lim, bytes, len, inv, in, f);
            free(bytes);
        }
    } else {
        core_failf(f, CORE_E_BAD_JSON, "the JSON body must have \"pixels\" (numbers in [0,1]) or \"image\" (base64)");
    }
    json_decref(doc);
    return rc;
}

/* ==== Entry ==== */

int core_input_alloc(const core_model *m, core_input *in) {
    memset(in, 0, sizeof *in);
    in->width = m->width;
    in->height = m->height;
    size_t n = (size_t)m->width * m->height;
    in->pixels = malloc(n * sizeof *in->pixels);
    in->x = malloc(n * m->channels * sizeof *in->x);
    if (in->pixels && in->x) return 0;
    core_input_free(in);
    return -1;
}

void core_input_normalise(const core_model *m, core_input *in) {
    size_t n = (size_t)m->width * m->height;
    for (size_t c = 0; c < (size_t)m->channels; c++)
        for (size_t i = 0; i < n; i++) in->x[c * n + i] = (in->pixels[i] - m->mean_c[c]) / m->std_c[c];
}

void core_input_free(core_input *in) {
    if (!in) return;
    free(in->x);
    free(in->pixels);
    in->x = in->pixels = NULL;
}

int core_input_from_body(const core_model *m, const img_limits *lim, const char *ct, int multipart,
                         const unsigned char *body, size_t len, img_invert inv, core_input *in, core_fail *f) {
    memset(in, 0, sizeof *in);
    if (!len)
        return core_failf(f, CORE_E_EMPTY_BODY,
                          "the request has no body: send a PNG or JPEG, multipart/form-data with an 'image' field, "
                          "or JSON {\"pixels\": [...]}");
    double t0 = clock_now();
    if (core_input_alloc(m, in)) return core_failf(f, CORE_E_NOMEM, "out of memory");
    int rc;
    if (multipart) {
        rc = from_encoded(m, lim, body, len, inv, in, f);
    } else if (is_json_type(ct)) {
        rc = from_json(m, lim, body, len, inv, in, f);
    } else if (!ct || media_is(ct, "application/x-www-form-urlencoded") || media_is(ct, "application/octet-stream")) {
        /* curl --data-binary sends x-www-form-urlencoded; sniff what really came. */
        rc = first_char_is_brace(body, len) ? from_json(m, lim, body, len, inv, in, f)
                                            : from_encoded(m, lim, body, len, inv, in, f);
    } else if (media_is(ct, "image/png") || media_is(ct, "image/jpeg") || media_is(ct, "image/jpg") ||
               media_is(ct, "image/pjpeg")) {
        rc = from_encoded(m, lim, body, len, inv, in, f);
    } else {
        rc = core_failf(f, CORE_E_MEDIA_TYPE,
                        "content type '%s' is not supported: send image/png, image/jpeg, multipart/form-data "
                        "(field 'image') or application/json",
                        ct);
    }
    if (rc) {
        core_input_free(in);
        return -1;
    }
    core_input_normalise(m, in);
    in->decode_ms = (clock_now() - t0) * 1e3;
    return 0;
}

/* A JSON body larger than this is parsed on the heavy lane. */
#define JSON_LIGHT_MAX (64u << 10)

/* The pixels an encoded image's header declares; UINT64_MAX when it has a
 * PNG or JPEG signature but no header the probe can read (fail closed: an
 * image the probe cannot size goes to the heavy lane); 0 when it is neither
 * (the decoder refuses it at once). */
static uint64_t encoded_pixels(const unsigned char *b, size_t len) {
    uint32_t w, h;
    if (!img_probe(b, len, &w, &h)) return (uint64_t)w * h;
    int png = len >= 4 && b[0] == 0x89 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G';
    int jpeg = len >= 2 && b[0] == 0xFF && b[1] == 0xD8;
    return png || jpeg ? UINT64_MAX : 0;
}

uint64_t core_input_pixels(const char *ct, int multipart, const unsigned char *body, size_t len) {
    int json = !multipart && (is_json_type(ct) || first_char_is_brace(body, len));
    if (!json) return encoded_pixels(body, len);
    if (len > JSON_LIGHT_MAX) return UINT64_MAX;
    /* Parsed as the worker will parse it (escapes, nesting, duplicate keys),
     * not searched: at most 64 KiB, a fraction of a millisecond. */
    json_t *doc = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *img = json_object_get(doc, "image");
    uint64_t px = 0;
    if (json_is_string(img)) {
        int bad;
        size_t blen = 0;
        unsigned char *bytes = image_bytes(img, &blen, &bad);
        if (bytes) px = encoded_pixels(bytes, blen);
        free(bytes);
    }
    json_decref(doc);
    return px;
}
