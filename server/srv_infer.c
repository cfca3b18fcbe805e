/* srv_infer.c -- predict and saliency on MLPs: per-request scratch, no lock during inference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mlp.h"
#include "srv_input.h"
#include "srv_routes.h"

#define DEFAULT_TOP_K 5
#define MAX_SCALE 32

/* Parse a non-negative decimal integer; -1 when s is not one. */
static long parse_uint(const char *s) {
    if (!s || !*s) return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 1000000) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static int parse_bool(const char *s, int *out) {
    if (!s || !strcasecmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no")) *out = 0;
    else if (!*s || !strcasecmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes")) *out = 1;
    else return -1;
    return 0;
}

reg_model *srv_route_model(srv_req *r) {
    const char *name = r->param[0];
    srv_req_set_model(r, name);
    reg_model *m = reg_get(r->ctx->registry, name);
    if (!m) srv_reply_error(r, SRV_E_MODEL_NOT_FOUND, "no model named '%s' (GET /v1/models lists them)", name);
    return m;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Forward one example; returns 0 or -1 after answering 500. Records the inference time. */
static int forward1(srv_req *r, const reg_model *m, const float *x, float *logits) {
    mlp_scratch *s = mlp_scratch_new(m->net, 1);
    if (!s) {
        srv_reply_error(r, SRV_E_NOMEM, "out of memory for the forward pass");
        return -1;
    }
    double t0 = srv_now();
    int rc = mlp_forward(m->net, s, x, 1, logits);
    srv_metrics_inference(r->ctx->metrics, m->name, srv_now() - t0);
    mlp_scratch_free(s);
    if (rc) srv_reply_error(r, SRV_E_INTERNAL, "the forward pass failed");
    return rc;
}

static json_t *class_entry(const reg_model *m, int i, const float *p) {
    return json_pack("{s:s, s:i, s:f}", "class", m->classes[i], "index", i, "probability", (double)p[i]);
}

static void predict_with(srv_req *r, reg_model *m) {
    double t0 = srv_now();
    const char *tk = srv_req_query(r, "top_k");
    long top_k = tk ? parse_uint(tk) : DEFAULT_TOP_K;
    if (top_k < 1) {
        srv_reply_error(r, SRV_E_BAD_PARAMETER, "top_k must be a whole number >= 1, not '%s'", tk);
        return;
    }
    if (top_k > m->n_classes) top_k = m->n_classes;

    srv_input in;
    if (srv_input_read(r, m, &in)) return;
    int k = m->n_classes;
    float *p = malloc((size_t)k * sizeof *p);
    int *order = malloc((size_t)k * sizeof *order);
    if (!p || !order) {
        srv_reply_error(r, SRV_E_NOMEM, "out of memory");
        goto done;
    }
    double ti = srv_now();
    if (forward1(r, m, in.x, p)) goto done;
    ti = srv_now() - ti;
    mlp_softmax(p, k, p);

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
    int best = argmax(p, k);

    json_t *top = json_array(), *probs = json_array();
    for (int i = 0; top && i < top_k; i++) json_array_append_new(top, class_entry(m, order[i], p));
    for (int i = 0; probs && i < k; i++) json_array_append_new(probs, json_real(p[i]));
    json_t *doc = json_pack("{s:s, s:s, s:i, s:f, s:f, s:f, s:o, s:o, s:b, s:{s:f, s:f, s:f}}",
                            "model", m->name, "class", m->classes[best], "index", best, "probability",
                            (double)p[best], "entropy_nats", h, "entropy_bits", h / log(2.0), "top_k", top,
                            "probabilities", probs, "inverted", in.inverted, "timing_ms", "decode", in.decode_ms,
                            "inference", ti * 1e3, "total", (srv_now() - t0) * 1e3);
    srv_reply_json(r, 200, doc);
done:
    free(p);
    free(order);
    srv_input_free(&in);
}

void srv_h_predict(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (!m) return;
    predict_with(r, m);
    reg_model_release(m);
}

void srv_h_predict_default(srv_req *r) {
    reg_model *m = reg_get(r->ctx->registry, NULL);
    if (!m) {
        const char *want = reg_default_name(r->ctx->registry);
        if (want)
            srv_reply_error(r, SRV_E_MODEL_NOT_FOUND, "the default model '%s' is not loaded", want);
        else
            srv_reply_error(r, SRV_E_UNAVAILABLE, "no model is loaded (train one: loupe train-mlp --out models/NAME)");
        return;
    }
    srv_req_set_model(r, m->name);
    predict_with(r, m);
    reg_model_release(m);
}

/* ==== Saliency ==== */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* |g| normalised to [0,1] with the 99th percentile (linear interpolation, as
 * numpy's default) as the top; values above it clip. An all-zero gradient
 * stays all zero. Returns the raw value that maps to 1 (0 for all zero), or
 * -1 on allocation failure. */
static double normalise_saliency(float *g, int n) {
    float *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return -1;
    for (int i = 0; i < n; i++) {
        float a = fabsf(g[i]);
        g[i] = isfinite(a) ? a : 0.0f;
        sorted[i] = g[i];
    }
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_float);
    double pos = 0.99 * (n - 1);
    int lo = (int)pos;
    double frac = pos - lo;
    double top = sorted[lo] + (lo + 1 < n ? frac * (sorted[lo + 1] - sorted[lo]) : 0);
    /* A gradient nonzero on under 1% of the pixels: fall back to the maximum. */
    if (!(top > 0)) top = sorted[n - 1];
    free(sorted);
    for (int i = 0; i < n; i++) g[i] = top > 0 ? (float)fmin(g[i] / top, 1.0) : 0.0f;
    return top > 0 ? top : 0;
}

/* A class by index ("3") or by name ("Sneaker", case-insensitive). */
static int parse_target(const reg_model *m, const char *s) {
    long v = parse_uint(s);
    if (v >= 0) return v < m->n_classes ? (int)v : -1;
    for (int i = 0; i < m->n_classes; i++)
        if (!strcasecmp(m->classes[i], s)) return i;
    return -1;
}

void srv_h_saliency(srv_req *r) {
    double t0 = srv_now();
    reg_model *m = srv_route_model(r);
    if (!m) return;
    int target = -1, overlay = 0, as_png = 1;
    long scale = 1;
    const char *tq = srv_req_query(r, "target"), *fq = srv_req_query(r, "format");
    const char *oq = srv_req_query(r, "overlay"), *sq = srv_req_query(r, "scale");
    float *logits = NULL, *grad = NULL;
    uint8_t *rgb = NULL, *png = NULL;
    mlp_scratch *s = NULL;
    srv_input in = {0};

    if (tq && (target = parse_target(m, tq)) < 0) {
        srv_reply_error(r, SRV_E_BAD_PARAMETER, "target '%s' is neither a class index in [0,%d] nor a class name",
                        tq, m->n_classes - 1);
        goto done;
    }
    if (fq && strcasecmp(fq, "png") && strcasecmp(fq, "json")) {
        srv_reply_error(r, SRV_E_BAD_PARAMETER, "format must be png or json, not '%s'", fq);
        goto done;
    }
    as_png = !fq || !strcasecmp(fq, "png");
    if (parse_bool(oq, &overlay)) {
        srv_reply_error(r, SRV_E_BAD_PARAMETER, "overlay must be 0 or 1, not '%s'", oq);
        goto done;
    }
    if (sq && ((scale = parse_uint(sq)) < 1 || scale > MAX_SCALE)) {
        srv_reply_error(r, SRV_E_BAD_PARAMETER, "scale must be a whole number in [1,%d], not '%s'", MAX_SCALE, sq);
        goto done;
    }
    if (srv_input_read(r, m, &in)) goto done;

    int k = m->n_classes, n = mlp_n_inputs(m->net);
    logits = malloc((size_t)k * sizeof *logits);
    grad = malloc((size_t)n * sizeof *grad);
    s = mlp_scratch_new(m->net, 1);
    if (!logits || !grad || !s) {
        srv_reply_error(r, SRV_E_NOMEM, "out of memory");
        goto done;
    }
    double ti = srv_now();
    int pred;
    if (mlp_forward(m->net, s, in.x, 1, logits)) {
        srv_reply_error(r, SRV_E_INTERNAL, "the forward pass failed");
        goto done;
    }
    pred = argmax(logits, k);
    if (target < 0) target = pred;
    if (mlp_input_grad(m->net, s, in.x, target, grad, NULL)) {
        srv_reply_error(r, SRV_E_INTERNAL, "the gradient pass failed");
        goto done;
    }
    ti = srv_now() - ti;
    srv_metrics_inference(r->ctx->metrics, m->name, ti);
    mlp_softmax(logits, k, logits);
    /* The map is over pixels: one channel for the MLPs this daemon serves. */
    double top = normalise_saliency(grad, n);
    if (top < 0) {
        srv_reply_error(r, SRV_E_NOMEM, "out of memory");
        goto done;
    }

    int w = m->width, h = m->height;
    if (as_png) {
        size_t ow = (size_t)w * scale, oh = (size_t)h * scale, png_len;
        rgb = malloc(ow * oh * 3);
        if (!rgb) {
            srv_reply_error(r, SRV_E_NOMEM, "out of memory");
            goto done;
        }
        img_heatmap(grad, overlay ? in.pixels : NULL, w, h, (int)scale, 0.5f, rgb);
        if (img_encode_png(rgb, (int)ow, (int)oh, 3, &png, &png_len)) {
            srv_reply_error(r, SRV_E_NOMEM, "PNG encoding failed");
            goto done;
        }
        srv_reply_buf(r, 200, "image/png", (char *)png, png_len);
        png = NULL;
        goto done;
    }
    json_t *rows = json_array();
    for (int y = 0; rows && y < h; y++) {
        json_t *row = json_array();
        for (int x = 0; row && x < w; x++) json_array_append_new(row, json_real(grad[y * w + x]));
        json_array_append_new(rows, row);
    }
    json_t *doc = json_pack("{s:s, s:{s:i, s:s}, s:{s:i, s:s, s:f}, s:i, s:i, s:o, s:f, s:b, s:{s:f, s:f, s:f}}",
                            "model", m->name, "target", "index", target, "class", m->classes[target],
                            "prediction", "index", pred, "class", m->classes[pred], "probability",
                            (double)logits[pred], "width", w, "height", h, "saliency", rows,
                            "gradient_at_top", top, "inverted", in.inverted, "timing_ms", "decode",
                            in.decode_ms, "inference", ti * 1e3, "total", (srv_now() - t0) * 1e3);
    srv_reply_json(r, 200, doc);
done:
    mlp_scratch_free(s);
    free(logits);
    free(grad);
    free(rgb);
    free(png);
    srv_input_free(&in);
    reg_model_release(m);
}
