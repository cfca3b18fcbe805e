/* core_ops.c -- the model operations behind the image routes and the offline CLI: MLPs through mlp/, CNNs through the shim. */
#include "core_ops.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "img.h"
#include "mlp.h"
#include "clock.h"
#include "core_engine.h"
#include "core_ops_util.h"

#define DEFAULT_TOP_K 5
/* Largest PNG an option may ask for, in pixels. */
#define MAX_PNG_PIXELS CORE_MAX_PNG_PIXELS


/* ==== Options ==== */

/* A non-negative decimal integer up to 1e6; -1 when s is not one. */
long core_parse_uint(const char *s) {
    if (!s || !*s) return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 1000000) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

int core_parse_bool(const char *s, int *out) {
    if (!s || !strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no")) *out = 0;
    else if (!*s || !strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes")) *out = 1;
    else return -1;
    return 0;
}

/* A class by index ("3") or by name ("Sneaker", case-insensitive); -1 if neither. */
int core_parse_target(const core_model *m, const char *s) {
    long v = core_parse_uint(s);
    if (v >= 0) return v < m->n_classes ? (int)v : -1;
    for (int i = 0; i < m->n_classes; i++)
        if (!strcasecmp(m->classes[i], s)) return i;
    return -1;
}

/* The convolutions of m as "0, 3, 7" (for messages). */
static void conv_list(const core_model *m, char *buf, size_t len) {
    size_t o = 0;
    buf[0] = 0;
    int nl = lt_model_n_layers(m->cnn);
    for (int i = 0; i < nl && o + 16 < len; i++) {
        lt_layer_info li;
        if (!lt_layer_get_info(m->cnn, i, &li, NULL, 0) && li.is_conv)
            o += (size_t)snprintf(buf + o, len - o, "%s%d", o ? ", " : "", i);
    }
}

int core_op_expensive(const core_model *m, core_op op) {
    return op == CORE_OP_EXPLAIN || op == CORE_OP_CLASSVIZ || (core_model_has_layers(m) && op != CORE_OP_PREDICT);
}

/* format, scale (all PNG-or-JSON operations). */
int core_parse_output(core_arg_fn arg, void *ctx, core_opts *o, core_fail *f) {
    const char *fq = arg(ctx, "format"), *sq = arg(ctx, "scale");
    if (fq && strcasecmp(fq, "png") && strcasecmp(fq, "json"))
        return core_failf(f, CORE_E_BAD_PARAMETER, "format must be png or json, not '%s'", fq);
    o->as_json = fq && !strcasecmp(fq, "json");
    long scale = 1;
    if (sq && ((scale = core_parse_uint(sq)) < 1 || scale > CORE_MAX_SCALE))
        return core_failf(f, CORE_E_BAD_PARAMETER, "scale must be a whole number in [1,%d], not '%s'", CORE_MAX_SCALE, sq);
    o->scale = (int)scale;
    return 0;
}

/* The {l} of a CNN route: 404 unless it names a layer of `features`. */
int core_parse_layer(const core_model *m, const char *s, lt_layer_info *li, core_opts *o, core_fail *f) {
    int nl = lt_model_n_layers(m->cnn);
    long v = core_parse_uint(s);
    if (v < 0 || v >= nl || lt_layer_get_info(m->cnn, (int)v, li, NULL, 0))
        return core_failf(f, CORE_E_NOT_FOUND, "model '%s' has no layer '%s' (layers 0..%d; GET /v1/models/%s/layers)",
                    m->name, s ? s : "", nl - 1, m->name);
    o->layer = (int)v;
    return 0;
}

int core_parse_viz(core_arg_fn arg, void *ctx, core_opts *o, core_fail *f) {
    const char *iq = arg(ctx, "iterations"), *eq = arg(ctx, "every"), *lq = arg(ctx, "lr"), *sq = arg(ctx, "seed");
    o->viz = lt_viz_default_params();
    if (iq) {
        long v = core_parse_uint(iq);
        if (v < 1 || v > CORE_VIZ_MAX_ITERATIONS)
            return core_failf(f, CORE_E_BAD_PARAMETER, "iterations must be a whole number in [1,%d], not '%s'",
                        CORE_VIZ_MAX_ITERATIONS, iq);
        o->viz.iterations = (int)v;
    }
    if (!eq && o->viz.every > o->viz.iterations) o->viz.every = o->viz.iterations;
    if (eq) {
        long v = core_parse_uint(eq);
        if (v < 1 || v > o->viz.iterations)
            return core_failf(f, CORE_E_BAD_PARAMETER, "every must be a whole number in [1,%d] (at most iterations), not '%s'",
                        o->viz.iterations, eq);
        o->viz.every = (int)v;
    }
    if (lq) {
        char *end;
        errno = 0;
        double v = strtod(lq, &end);
        /* (float)v, not v, must be positive: 1e-51 is a positive double but a zero float. */
        if (errno || end == lq || *end || !isfinite(v) || !((float)v > 0) || v > CORE_VIZ_MAX_LR)
            return core_failf(f, CORE_E_BAD_PARAMETER, "lr must be a number in (0,%g], not '%s'", CORE_VIZ_MAX_LR, lq);
        o->viz.lr = (float)v;
    }
    return sq ? core_parse_seed(sq, &o->viz.seed, f) : 0;
}

int core_parse_seed(const char *s, uint64_t *out, core_fail *f) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    /* At most 2^63-1: the answers echo the seed as a JSON integer, which Jansson keeps as int64_t. */
    if (errno || end == s || *end || *s < '0' || *s > '9' || v > (unsigned long long)INT64_MAX)
        return core_failf(f, CORE_E_BAD_PARAMETER, "seed must be a whole number in [0,%" PRId64 "], not '%s'", INT64_MAX,
                          s);
    *out = (uint64_t)v;
    return 0;
}

int core_opts_parse(const core_model *m, core_op op, const char *layer, const char *filter, core_arg_fn arg,
                    void *ctx, core_opts *o, core_fail *f) {
    memset(o, 0, sizeof *o);
    o->target = -1;
    o->scale = 1;
    if (op == CORE_OP_PREDICT) {
        const char *tk = arg(ctx, "top_k");
        long k = tk ? core_parse_uint(tk) : DEFAULT_TOP_K;
        if (k < 1) return core_failf(f, CORE_E_BAD_PARAMETER, "top_k must be a whole number >= 1, not '%s'", tk);
        o->top_k = k > m->n_classes ? m->n_classes : (int)k;
        return 0;
    }
    if (op == CORE_OP_SALIENCY) {
        const char *tq = arg(ctx, "target"), *oq = arg(ctx, "overlay");
        if (tq && (o->target = core_parse_target(m, tq)) < 0)
            return core_failf(f, CORE_E_BAD_PARAMETER, "target '%s' is neither a class index in [0,%d] nor a class name", tq,
                        m->n_classes - 1);
        if (core_parse_output(arg, ctx, o, f)) return -1;
        if (core_parse_bool(oq, &o->overlay))
            return core_failf(f, CORE_E_BAD_PARAMETER, "overlay must be 0 or 1, not '%s'", oq);
        return 0;
    }
    if (op == CORE_OP_EXPLAIN || op == CORE_OP_CLASSVIZ) return core_explain_opts(m, op, layer, arg, ctx, o, f);
    if (!core_model_has_layers(m))
        return core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' is an MLP: %s need a CNN (kind \"torchscript\")", m->name,
                    op == CORE_OP_FILTERS ? "filter visualizations" : "feature maps");
    lt_layer_info li;
    if (core_parse_layer(m, layer, &li, o, f) || core_parse_output(arg, ctx, o, f)) return -1;
    if (op == CORE_OP_ACTIVATIONS) return 0;
    if (!li.is_conv) {
        char convs[256];
        conv_list(m, convs, sizeof convs);
        return core_failf(f, CORE_E_BAD_PARAMETER, "layer %d is %s, not a convolution; the convolutions are %s", o->layer,
                    li.type, convs);
    }
    long fv = core_parse_uint(filter);
    if (fv < 0 || fv >= li.channels)
        return core_failf(f, CORE_E_NOT_FOUND, "layer %d has no filter '%s' (filters 0..%d)", o->layer, filter ? filter : "",
                    li.channels - 1);
    o->filter = (int)fv;
    return core_parse_viz(arg, ctx, o, f);
}

/* ==== Encoding ==== */

char *core_base64_encode(const unsigned char *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *p = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *p++ = tab[v >> 18 & 63];
        *p++ = tab[v >> 12 & 63];
        *p++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *p = 0;
    return out;
}

int core_out_json(json_t *doc, core_out *out, core_fail *f) {
    /* 9 significant digits: enough for any float32 to round-trip. */
    char *s = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(doc);
    if (!s) return core_failf(f, CORE_E_NOMEM, "out of memory building the JSON answer");
    out->content_type = "application/json";
    out->body = s;
    out->len = strlen(s);
    return 0;
}

/* rgb [h, w, 3] to a PNG in *out (rgb is not freed). */
int core_out_png(const uint8_t *rgb, int w, int h, core_out *out, core_fail *f) {
    uint8_t *png = NULL;
    size_t len = 0;
    if (img_encode_png(rgb, w, h, 3, &png, &len)) return core_failf(f, CORE_E_NOMEM, "PNG encoding failed");
    out->content_type = "image/png";
    out->body = (char *)png;
    out->len = len;
    return 0;
}

/* Pixels [C, h, w] in [0,1] (C 1 gray, 3 RGB; others show channel 0) into
 * rgb [rows, stride] at (x0, y0), each pixel a scale x scale block. */
void core_blit(const float *px, int c, int w, int h, int scale, uint8_t *rgb, size_t stride, int x0, int y0) {
    size_t plane = (size_t)w * h;
    for (int y = 0; y < h * scale; y++)
        for (int x = 0; x < w * scale; x++) {
            size_t i = (size_t)(y / scale) * w + (size_t)(x / scale);
            uint8_t *o = rgb + (size_t)(y0 + y) * stride + (size_t)(x0 + x) * 3;
            for (int k = 0; k < 3; k++) {
                float v = px[(c == 3 ? (size_t)k * plane : 0) + i];
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                o[k] = (uint8_t)lrintf(v * 255.0f);
            }
        }
}

/* A PNG of one image [C, h, w] in [0,1], enlarged by scale, base64 for JSON. */
char *core_png_b64(const float *px, int c, int w, int h, int scale) {
    size_t ow = (size_t)w * scale, oh = (size_t)h * scale;
    uint8_t *rgb = malloc(ow * oh * 3), *png = NULL;
    size_t len = 0;
    char *b64 = NULL;
    if (rgb) {
        core_blit(px, c, w, h, scale, rgb, ow * 3, 0, 0);
        if (!img_encode_png(rgb, (int)ow, (int)oh, 3, &png, &len)) b64 = core_base64_encode(png, len);
    }
    free(rgb);
    free(png);
    return b64;
}

/* ==== Forward and gradient, either engine ==== */

int core_argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* ==== Predict ==== */

int core_predict_answer(const core_model *m, const core_opts *o, const core_input *in, const float *logits,
                        double infer_s, int batch, double t0, core_out *out, core_fail *f) {
    int k = m->n_classes;
    float *p = malloc((size_t)k * sizeof *p);
    int *order = malloc((size_t)k * sizeof *order);
    int rc = -1;
    if (!p || !order) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    out->infer_s = infer_s;
    mlp_softmax(logits, k, p);
    for (int i = 0; i < k; i++)
        if (!isfinite(p[i])) {
            /* JSON has no NaN: say what happened instead of failing to encode it. */
            core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' gives a non-finite output (NaN or infinity) for this input",
                       m->name);
            goto done;
        }
    /* Order by probability, ties by index: k is small, so insertion sort. */
    for (int i = 0; i < k; i++) order[i] = i;
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && p[order[j - 1]] < p[order[j]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double h = 0;
    for (int i = 0; i < k; i++)
        if (p[i] > 0) h -= (double)p[i] * log((double)p[i]);
    int best = core_argmax(p, k);
    json_t *top = json_array(), *probs = json_array();
    for (int i = 0; top && i < o->top_k; i++)
        json_array_append_new(top, json_pack("{s:s, s:i, s:f}", "class", m->classes[order[i]], "index", order[i],
                                             "probability", (double)p[order[i]]));
    for (int i = 0; probs && i < k; i++) json_array_append_new(probs, json_real(p[i]));
    json_t *doc = json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:o, s:o, s:b, s:i, s:{s:f, s:f, s:f}}", "model",
                            m->name, "class", m->classes[best], "index", best, "probability", (double)p[best],
                            "entropy_nats", h, "entropy_bits", h / log(2.0), "top_k", top, "probabilities", probs,
                            "inverted", in->inverted, "batch", batch, "timing_ms", "decode", in->decode_ms,
                            "inference", infer_s * 1e3, "total", (clock_now() - t0) * 1e3);
    rc = core_out_json(doc, out, f);
done:
    free(p);
    free(order);
    return rc;
}

static int run_predict(const core_model *m, const core_opts *o, const core_input *in, double t0, core_out *out,
                       core_fail *f) {
    float *z = malloc((size_t)m->n_classes * sizeof *z);
    if (!z) return core_failf(f, CORE_E_NOMEM, "out of memory");
    double ti = clock_now();
    int rc = core_forward(m, in->x, 1, z, f);
    if (!rc) rc = core_predict_answer(m, o, in, z, clock_now() - ti, 1, t0, out, f);
    free(z);
    return rc;
}

/* ==== Saliency ==== */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* map [n] (non-negative) normalised to [0,1] with the 99th percentile (linear
 * interpolation, as numpy's default) as the top; values above it clip. An
 * all-zero map stays all zero. Returns the raw value that maps to 1 (0 for
 * all zero), or -1 on allocation failure. */
double core_normalise_p99(float *g, int n) {
    float *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return -1;
    for (int i = 0; i < n; i++) {
        if (!isfinite(g[i])) g[i] = 0.0f;
        sorted[i] = g[i];
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_float);
    double pos = 0.99 * (n - 1);
    int lo = (int)pos;
    double frac = pos - lo;
    double top = sorted[lo] + (lo + 1 < n ? frac * (sorted[lo + 1] - sorted[lo]) : 0);
    /* Nonzero on under 1% of the pixels: fall back to the maximum. */
    if (!(top > 0)) top = sorted[n - 1];
    free(sorted);
    for (int i = 0; i < n; i++) g[i] = top > 0 ? (float)fmin(g[i] / top, 1.0) : 0.0f;
    return top > 0 ? top : 0;
}

double core_abs_map(const float *attr, int channels, int plane, float *map) {
    for (int i = 0; i < plane; i++) {
        float v = 0;
        for (int c = 0; c < channels; c++) v += fabsf(attr[(size_t)c * plane + i]);
        map[i] = v;
    }
    return core_normalise_p99(map, plane);
}

json_t *core_rows_json(const float *v, int h, int w) {
    json_t *rows = json_array();
    for (int y = 0; rows && y < h; y++) {
        json_t *row = json_array();
        for (int x = 0; row && x < w; x++) {
            float e = v[(size_t)y * w + x];
            json_array_append_new(row, json_real(e == 0 ? 0.0 : e)); /* no -0 */
        }
        json_array_append_new(rows, row);
    }
    return rows;
}

static int run_saliency(const core_model *m, const core_opts *o, const core_input *in, double t0,
                        core_out *out, core_fail *f) {
    int k = m->n_classes, w = m->width, h = m->height, c = m->channels;
    size_t plane = (size_t)w * h;
    float *logits = malloc((size_t)k * sizeof *logits), *grad = malloc(plane * c * sizeof *grad);
    float *map = malloc(plane * sizeof *map);
    uint8_t *rgb = NULL;
    int rc = -1;
    if (!logits || !grad || !map) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    double ti = clock_now();
    int target = o->target;
    /* One pass: the predicted class comes from the logits of the same forward pass the gradient goes back
     * through (a forward pass first to choose it made saliency 1.4x slower than PyTorch's). */
    if (core_explain_pass(m, in->x, 1, target, 0, grad, logits, &target, f)) goto done;
    ti = clock_now() - ti;
    out->infer_s = ti;
    int pred = core_argmax(logits, k);
    mlp_softmax(logits, k, logits);
    /* One value per pixel: |gradient| summed over the input's channels. */
    double top = core_abs_map(grad, c, (int)plane, map);
    if (top < 0) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    if (!o->as_json) {
        rc = core_heatmap_png(map, o, in, w, h, out, f);
        goto done;
    }
    json_t *rows = core_rows_json(map, h, w);
    json_t *doc = json_pack("{s:s, s:{s:i, s:s}, s:{s:i, s:s, s:f}, s:i, s:i, s:o, s:f, s:b, s:{s:f, s:f, s:f}}",
                            "model", m->name, "target", "index", target, "class", m->classes[target], "prediction",
                            "index", pred, "class", m->classes[pred], "probability", (double)logits[pred], "width", w,
                            "height", h, "saliency", rows, "gradient_at_top", top, "inverted", in->inverted,
                            "timing_ms", "decode", in->decode_ms, "inference", ti * 1e3, "total",
                            (clock_now() - t0) * 1e3);
    rc = core_out_json(doc, out, f);
done:
    free(logits);
    free(grad);
    free(map);
    free(rgb);
    return rc;
}

int core_heatmap_png(const float *map, const core_opts *o, const core_input *in, int w, int h, core_out *out,
                     core_fail *f) {
    size_t ow = (size_t)w * o->scale, oh = (size_t)h * o->scale;
    if (ow * oh > MAX_PNG_PIXELS)
        return core_failf(f, CORE_E_BAD_PARAMETER, "scale %d makes a %zux%zu image; at most %u pixels", o->scale, ow,
                          oh, MAX_PNG_PIXELS);
    uint8_t *rgb = malloc(ow * oh * 3);
    if (!rgb) return core_failf(f, CORE_E_NOMEM, "out of memory");
    img_heatmap(map, o->overlay ? in->pixels : NULL, w, h, o->scale, 0.5f, rgb);
    int rc = core_out_png(rgb, (int)ow, (int)oh, out, f);
    free(rgb);
    return rc;
}

int core_strip_check(int n, int w, int h, int scale, core_fail *f) {
    size_t ow = (size_t)w * scale * n, oh = (size_t)h * scale;
    if (ow * oh > MAX_PNG_PIXELS)
        return core_failf(f, CORE_E_BAD_PARAMETER, "scale %d makes a %zux%zu strip; at most %u pixels", scale, ow, oh,
                          MAX_PNG_PIXELS);
    return 0;
}

int core_frames_png(const float *frames, int n, int c, int w, int h, int scale, core_out *out, core_fail *f) {
    size_t ow = (size_t)w * scale * n, oh = (size_t)h * scale, per = (size_t)c * w * h;
    uint8_t *rgb = malloc(ow * oh * 3);
    if (!rgb) return core_failf(f, CORE_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) core_blit(frames + (size_t)i * per, c, w, h, scale, rgb, ow * 3, i * w * scale, 0);
    int rc = core_out_png(rgb, (int)ow, (int)oh, out, f);
    free(rgb);
    return rc;
}

json_t *core_frames_json(const float *frames, int n, int c, int w, int h, int scale, int every) {
    size_t per = (size_t)c * w * h;
    json_t *list = json_array();
    for (int i = 0; list && i < n; i++) {
        char *b64 = core_png_b64(frames + (size_t)i * per, c, w, h, scale);
        if (!b64) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, json_pack("{s:i, s:s}", "iteration", (i + 1) * every, "png", b64));
        free(b64);
    }
    return list;
}

/* ==== Filters and activations (CNNs) ==== */

static json_t *layer_doc(const core_model *m, int layer) {
    lt_layer_info li;
    if (lt_layer_get_info(m->cnn, layer, &li, NULL, 0)) return NULL;
    return json_pack("{s:i, s:s, s:i, s:i, s:i}", "index", layer, "type", li.type, "channels", li.channels, "height",
                     li.height, "width", li.width);
}

static int run_filters(const core_model *m, const core_opts *o, const core_input *in, double t0,
                       core_out *out, core_fail *f) {
    int c = m->channels, w = m->width, h = m->height, n = lt_viz_n_frames(&o->viz);
    size_t per = (size_t)c * w * h;
    float *frames = malloc((size_t)n * per * sizeof *frames);
    float *trace = o->as_json ? malloc(((size_t)o->viz.iterations + 1) * sizeof *trace) : NULL;
    char err[512];
    int rc = -1;
    if (!frames || (o->as_json && !trace)) {
        core_failf(f, CORE_E_NOMEM, "out of memory for %d frames", n);
        goto done;
    }
    if (core_strip_check(n, w, h, o->scale, f)) goto done;
    double ti = clock_now();
    int lr = lt_filter_viz(m->cnn, o->layer, o->filter, in ? in->x : NULL, &o->viz, frames, (size_t)n * per, trace,
                           err, sizeof err);
    ti = clock_now() - ti;
    if (lr) {
        core_failf(f, lr == LT_EINVAL ? CORE_E_BAD_PARAMETER : CORE_E_INTERNAL, "filter visualization failed: %s", err);
        goto done;
    }
    out->infer_s = ti;
    if (!o->as_json) {
        rc = core_frames_png(frames, n, c, w, h, o->scale, out, f);
        goto done;
    }
    json_t *list = core_frames_json(frames, n, c, w, h, o->scale, o->viz.every), *tr = json_array();
    for (int i = 0; tr && i <= o->viz.iterations; i++) json_array_append_new(tr, json_real(trace[i]));
    json_t *doc = json_pack("{s:s, s:o, s:i, s:s, s:i, s:i, s:f, s:I, s:i, s:i, s:o, s:o, s:{s:f, s:f, s:f}}",
                            "model", m->name, "layer", layer_doc(m, o->layer), "filter", o->filter, "start",
                            in ? "image" : "random", "iterations", o->viz.iterations, "every", o->viz.every, "lr",
                            (double)o->viz.lr, "seed", (json_int_t)o->viz.seed, "width", w * o->scale, "height",
                            h * o->scale, "frames", list, "mean_activation", tr, "timing_ms", "decode",
                            in ? in->decode_ms : 0.0, "inference", ti * 1e3, "total", (clock_now() - t0) * 1e3);
    rc = core_out_json(doc, out, f);
done:
    free(frames);
    free(trace);
    return rc;
}

static int run_activations(const core_model *m, const core_opts *o, const core_input *in,
                           double t0, core_out *out, core_fail *f) {
    lt_layer_info li;
    char err[512];
    uint8_t *rgb = NULL, *tile = NULL;
    int rc = -1;
    if (lt_layer_get_info(m->cnn, o->layer, &li, err, sizeof err))
        return core_failf(f, CORE_E_NOT_FOUND, "%s", err);
    size_t plane = (size_t)li.height * li.width, n = plane * li.channels;
    float *a = malloc(n * sizeof *a);
    if (!a) return core_failf(f, CORE_E_NOMEM, "out of memory for %zu activations", n);
    double ti = clock_now();
    if (lt_activations(m->cnn, in->x, o->layer, a, n, err, sizeof err)) {
        core_failf(f, CORE_E_INTERNAL, "the forward pass failed: %s", err);
        goto done;
    }
    ti = clock_now() - ti;
    out->infer_s = ti;
    if (o->as_json) {
        json_t *maps = json_array();
        for (int ch = 0; maps && ch < li.channels; ch++) {
            json_t *rows = json_array();
            for (int y = 0; rows && y < li.height; y++) {
                json_t *row = json_array();
                for (int x = 0; row && x < li.width; x++)
                    json_array_append_new(row, json_real(a[(size_t)ch * plane + (size_t)y * li.width + x]));
                json_array_append_new(rows, row);
            }
            json_array_append_new(maps, rows);
        }
        json_t *doc = json_pack("{s:s, s:o, s:o, s:b, s:{s:f, s:f, s:f}}", "model", m->name, "layer",
                                layer_doc(m, o->layer), "activations", maps, "inverted", in->inverted, "timing_ms",
                                "decode", in->decode_ms, "inference", ti * 1e3, "total", (clock_now() - t0) * 1e3);
        rc = core_out_json(doc, out, f);
        goto done;
    }
    /* A grid of tiles, one per channel, each normalised to its own [min, max],
     * a one-pixel black gap between them. */
    int cols = (int)ceil(sqrt((double)li.channels)), rows = (li.channels + cols - 1) / cols;
    int tw = li.width * o->scale, th = li.height * o->scale;
    size_t gw = (size_t)cols * tw + (cols - 1), gh = (size_t)rows * th + (rows - 1);
    if (gw * gh > MAX_PNG_PIXELS) {
        core_failf(f, CORE_E_BAD_PARAMETER, "scale %d makes a %zux%zu grid; at most %u pixels", o->scale, gw, gh,
             MAX_PNG_PIXELS);
        goto done;
    }
    rgb = calloc(gw * gh * 3, 1);
    tile = malloc((size_t)tw * th * 3);
    if (!rgb || !tile) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    for (int ch = 0; ch < li.channels; ch++) {
        float *v = a + (size_t)ch * plane, lo = v[0], hi = v[0];
        for (size_t i = 1; i < plane; i++) {
            lo = v[i] < lo ? v[i] : lo;
            hi = v[i] > hi ? v[i] : hi;
        }
        for (size_t i = 0; i < plane; i++) v[i] = hi > lo ? (v[i] - lo) / (hi - lo) : 0.0f;
        uint8_t *t8 = tile;
        img_heatmap(v, NULL, li.width, li.height, o->scale, 0.0f, t8);
        size_t x0 = (size_t)(ch % cols) * (tw + 1), y0 = (size_t)(ch / cols) * (th + 1);
        for (int y = 0; y < th; y++) memcpy(rgb + ((y0 + y) * gw + x0) * 3, t8 + (size_t)y * tw * 3, (size_t)tw * 3);
    }
    rc = core_out_png(rgb, (int)gw, (int)gh, out, f);
done:
    free(a);
    free(rgb);
    free(tile);
    return rc;
}

int core_op_run(const core_model *m, core_op op, const core_opts *o, const core_input *in,
                    double t0, core_out *out, core_fail *f) {
    memset(out, 0, sizeof *out);
    switch (op) {
    case CORE_OP_PREDICT: return run_predict(m, o, in, t0, out, f);
    case CORE_OP_SALIENCY: return run_saliency(m, o, in, t0, out, f);
    case CORE_OP_FILTERS: return run_filters(m, o, in, t0, out, f);
    case CORE_OP_EXPLAIN: return core_run_explain(m, o, in, t0, out, f);
    case CORE_OP_CLASSVIZ: return core_run_classviz(m, o, in, t0, out, f);
    case CORE_OP_ACTIVATIONS:
        if (!core_model_has_layers(m))
            return core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' is an MLP: no feature maps", m->name);
        return run_activations(m, o, in, t0, out, f);
    }
    return core_failf(f, CORE_E_INTERNAL, "unknown operation");
}

int core_op_layers(const core_model *m, core_out *out, core_fail *f) {
    json_error_t je;
    json_t *layers = m->layers_json ? json_loads(m->layers_json, 0, &je) : json_array();
    json_t *doc = layers ? json_pack("{s:s, s:s, s:o}", "model", m->name, "kind", m->kind, "layers", layers) : NULL;
    return core_out_json(doc, out, f);
}
