/* core_explain.c -- the attribution methods of POST /v1/models/{m}/explain and class model visualisation, for CNNs
 * (through the shim) and MLPs alike, on the engines' batched explain pass. */
#include "core_ops_util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "core_engine.h"
#include "mlp.h"
#include "rng.h"

#define DEFAULT_SAMPLES 25
#define DEFAULT_NOISE 0.15
#define DEFAULT_STEPS 32
#define DEFAULT_WINDOW 4
#define DEFAULT_STRIDE 2
#define DEFAULT_L2 0.01
/* Images per batch of the batched methods: fixed, not the warm-up's timed choice, so that the same request gives
 * the same bits in every daemon and in `loupe explain` (a batch of another size can round differently). 32 holds
 * IG's default 32 steps and SmoothGrad's 25 draws in one batch. */
#define EXPLAIN_BATCH 32
/* Adam as torch.optim.Adam's defaults, with the filter route's weight decay. */
#define ADAM_B1 0.9f
#define ADAM_B2 0.999f
#define ADAM_EPS 1e-8f

static const char *const method_names[CORE_M_COUNT] = {
    "gradient",       "input_x_gradient", "smoothgrad",     "integrated_gradients",
    "guided_backprop", "gradcam",         "guided_gradcam", "occlusion"};

const char *core_method_name(core_method m) {
    return m >= 0 && m < CORE_M_COUNT ? method_names[m] : "unknown";
}

int core_method_parse(const char *name) {
    for (int i = 0; name && i < CORE_M_COUNT; i++)
        if (!strcmp(name, method_names[i])) return i;
    return -1;
}

/* ==== Options ==== */

/* An integer option in [lo, hi], default def when absent. */
static int opt_int(core_arg_fn arg, void *ctx, const char *key, long lo, long hi, long def, int *out, core_fail *f) {
    const char *s = arg(ctx, key);
    long v = s ? core_parse_uint(s) : def;
    if (v < lo || v > hi)
        return core_failf(f, CORE_E_BAD_PARAMETER, "%s must be a whole number in [%ld,%ld], not '%s'", key, lo, hi, s);
    *out = (int)v;
    return 0;
}

/* A number option in [lo, hi]. */
static int opt_num(core_arg_fn arg, void *ctx, const char *key, double lo, double hi, double def, double *out,
                   core_fail *f) {
    const char *s = arg(ctx, key);
    double v = def;
    if (s) {
        char *end;
        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
            return core_failf(f, CORE_E_BAD_PARAMETER, "%s must be a number in [%g,%g], not '%s'", key, lo, hi, s);
    }
    *out = v;
    return 0;
}

static void method_list(char *buf, size_t len) {
    size_t o = 0;
    for (int i = 0; i < CORE_M_COUNT && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", method_names[i]);
}

/* Whether m can run method; 0, or -1 with f (422) saying why not. */
static int method_allowed(const core_model *m, core_method me, core_fail *f) {
    int cam = me == CORE_M_GRADCAM || me == CORE_M_GUIDED_GRADCAM;
    if (!m->cnn) {
        if (cam)
            return core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' is an MLP: %s needs a CNN's convolutional layers",
                              m->name, method_names[me]);
        if (me == CORE_M_GUIDED_BACKPROP && (!m->net || mlp_activation(m->net) != MLP_ACT_RELU))
            return core_failf(f, CORE_E_UNPROCESSABLE,
                              "model '%s' is a %s MLP: guided_backprop is defined for relu networks only", m->name,
                              m->net ? mlp_act_name(mlp_activation(m->net)) : "non-relu");
        return 0;
    }
    if (cam || me == CORE_M_GUIDED_BACKPROP) {
        char why[256];
        if (!lt_model_splits(m->cnn, why, sizeof why))
            return core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' cannot run %s: %s", m->name, method_names[me], why);
        if (cam && lt_cam_default_layer(m->cnn) < 0)
            return core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' has no convolution in `features` for %s", m->name,
                              method_names[me]);
    }
    return 0;
}

json_t *core_explain_info(const core_model *m) {
    json_t *ok = json_array(), *no = json_object();
    for (int i = 0; ok && no && i < CORE_M_COUNT; i++) {
        core_fail f = {0};
        if (method_allowed(m, (core_method)i, &f)) json_object_set_new(no, method_names[i], json_string(f.msg));
        else json_array_append_new(ok, json_string(method_names[i]));
    }
    int cam = m->cnn ? lt_cam_default_layer(m->cnn) : -1;
    return json_pack("{s:o, s:o, s:o}", "methods", ok, "unavailable", no, "gradcam_layer",
                     cam >= 0 ? json_integer(cam) : json_null());
}

int core_explain_opts(const core_model *m, core_op op, const char *path_arg, core_arg_fn arg, void *ctx, core_opts *o,
                      core_fail *f) {
    if (op == CORE_OP_CLASSVIZ) {
        const char *c = path_arg ? path_arg : arg(ctx, "class");
        if (!c || (o->klass = core_parse_target(m, c)) < 0)
            return core_failf(f, CORE_E_NOT_FOUND, "model '%s' has no class '%s' (an index in [0,%d] or a name)",
                              m->name, c ? c : "", m->n_classes - 1);
        if (core_parse_output(arg, ctx, o, f) || core_parse_viz(arg, ctx, o, f)) return -1;
        return opt_num(arg, ctx, "l2", 0, CORE_MAX_L2, DEFAULT_L2, &o->l2, f);
    }
    const char *mq = arg(ctx, "method"), *tq = arg(ctx, "target"), *oq = arg(ctx, "overlay");
    int me = mq ? core_method_parse(mq) : CORE_M_GRADIENT;
    if (me < 0) {
        char names[256];
        method_list(names, sizeof names);
        return core_failf(f, CORE_E_BAD_PARAMETER, "method must be one of %s, not '%s'", names, mq);
    }
    o->method = (core_method)me;
    if (tq && (o->target = core_parse_target(m, tq)) < 0)
        return core_failf(f, CORE_E_BAD_PARAMETER, "target '%s' is neither a class index in [0,%d] nor a class name",
                          tq, m->n_classes - 1);
    if (core_parse_output(arg, ctx, o, f)) return -1;
    if (core_parse_bool(oq, &o->overlay))
        return core_failf(f, CORE_E_BAD_PARAMETER, "overlay must be 0 or 1, not '%s'", oq);
    /* Only the chosen method's parameters are read: another method's, even out of range, are ignored. */
    int side_min = m->height < m->width ? m->height : m->width, side_max = m->height + m->width - side_min;
    o->samples = DEFAULT_SAMPLES;
    o->noise = DEFAULT_NOISE;
    o->steps = DEFAULT_STEPS;
    o->window = side_min < DEFAULT_WINDOW ? side_min : DEFAULT_WINDOW;
    o->stride = DEFAULT_STRIDE;
    const char *sq = arg(ctx, "seed"), *bq = arg(ctx, "baseline"), *lq = arg(ctx, "layer");
    switch (o->method) {
    case CORE_M_SMOOTHGRAD:
        if (opt_int(arg, ctx, "samples", 1, CORE_MAX_SAMPLES, DEFAULT_SAMPLES, &o->samples, f) ||
            opt_num(arg, ctx, "noise", 0, CORE_MAX_NOISE, DEFAULT_NOISE, &o->noise, f) ||
            (sq && core_parse_seed(sq, &o->seed, f)))
            return -1;
        break;
    case CORE_M_INTEGRATED_GRADIENTS:
        if (opt_int(arg, ctx, "steps", 1, CORE_MAX_STEPS, DEFAULT_STEPS, &o->steps, f)) return -1;
        if (bq && strcmp(bq, "black") && strcmp(bq, "zero"))
            return core_failf(f, CORE_E_BAD_PARAMETER, "baseline must be black or zero, not '%s'", bq);
        o->baseline_zero = bq && !strcmp(bq, "zero");
        break;
    case CORE_M_OCCLUSION:
        if (opt_int(arg, ctx, "window", 1, side_min, o->window, &o->window, f) ||
            opt_int(arg, ctx, "stride", 1, side_max, DEFAULT_STRIDE, &o->stride, f))
            return -1;
        break;
    default:
        break;
    }
    if (method_allowed(m, o->method, f)) return -1;
    o->cam_layer = -1;
    if (o->method == CORE_M_GRADCAM || o->method == CORE_M_GUIDED_GRADCAM) {
        int nl = lt_model_n_layers(m->cnn);
        o->cam_layer = lt_cam_default_layer(m->cnn);
        if (lq) {
            long v = core_parse_uint(lq);
            if (v < 0 || v >= nl)
                return core_failf(f, CORE_E_BAD_PARAMETER, "layer must be a layer index of features in [0,%d], not '%s'",
                                  nl - 1, lq);
            o->cam_layer = (int)v;
        }
    }
    return 0;
}

/* ==== The methods ==== */

/* What a method produced, for the answer. */
typedef struct {
    float *attr;        /* [ac, H, W] */
    int ac;             /* channels of attr: C, or 1 (Grad-CAM) */
    float logits[1024]; /* of x, for the prediction (n_classes <= 1024 is checked) */
    int target;
    double delta, base_score; /* integrated gradients */
    float *layer_map;   /* Grad-CAM: [lh, lw] */
    lt_layer_info li;
} explain_res;

/* x0: the baseline (zero) or the preprocessing of an all-zero image (black). */
static void baseline(const core_model *m, int zero, float *x0) {
    size_t plane = (size_t)m->height * m->width;
    for (int c = 0; c < m->channels; c++)
        for (size_t i = 0; i < plane; i++) x0[c * plane + i] = zero ? 0.0f : (0.0f - m->mean_c[c]) / m->std_c[c];
}

static int explain_batch(const core_model *m) {
    return m->engine->chunk < EXPLAIN_BATCH ? m->engine->chunk : EXPLAIN_BATCH;
}

/* Gradients of target at n inputs made by make(k, row) for k = 0..n-1, in batches of explain_batch;
 * their sum (in double, in draw order) into acc [P]. */
typedef void (*row_fn)(void *ctx, int k, float *row);

static int grad_sum(const core_model *m, int n, int target, row_fn make, void *ctx, double *acc, core_fail *f) {
    size_t p = (size_t)m->channels * m->height * m->width;
    int chunk = explain_batch(m);
    float *x = malloc((size_t)chunk * p * sizeof *x), *g = malloc((size_t)chunk * p * sizeof *g);
    int rc = -1;
    if (!x || !g) {
        core_failf(f, CORE_E_NOMEM, "out of memory for a batch of %d", chunk);
        goto done;
    }
    for (int b = 0; b < n; b += chunk) {
        int nb = n - b < chunk ? n - b : chunk;
        for (int k = 0; k < nb; k++) make(ctx, b + k, x + (size_t)k * p);
        if (core_explain_pass(m, x, nb, target, 0, g, NULL, NULL, f)) goto done;
        for (int k = 0; k < nb; k++)
            for (size_t i = 0; i < p; i++) acc[i] += g[(size_t)k * p + i];
    }
    rc = 0;
done:
    free(x);
    free(g);
    return rc;
}

typedef struct {
    const float *x;
    size_t p;
    rng r;
    float sigma;
} noise_ctx;

/* Draws come in order, one value per element, so a seed names the same noise whatever the batch size. Box-Muller
 * in pairs (cos and sin of one draw): rng_normal's one value per call spent 4% of SmoothGrad's time in log and cos. */
static void noise_row(void *ctx, int k, float *row) {
    noise_ctx *c = ctx;
    (void)k;
    for (size_t i = 0; i < c->p; i += 2) {
        double rad = sqrt(-2.0 * log(1.0 - rng_unit(&c->r))), a = 6.283185307179586 * rng_unit(&c->r);
        row[i] = c->x[i] + c->sigma * (float)(rad * cos(a));
        if (i + 1 < c->p) row[i + 1] = c->x[i + 1] + c->sigma * (float)(rad * sin(a));
    }
}

typedef struct {
    const float *x, *x0;
    size_t p;
    int steps;
} path_ctx;

static void path_row(void *ctx, int k, float *row) {
    path_ctx *c = ctx;
    float a = (float)((k + 0.5) / c->steps);
    for (size_t i = 0; i < c->p; i++) row[i] = c->x0[i] + a * (c->x[i] - c->x0[i]);
}

/* Window starts along a side: 0, s, 2s, ... while the window fits, plus one flush with the far edge. */
static int window_starts(int side, int win, int stride, int *starts) {
    int n = 0, last = -1;
    for (int p = 0; p + win <= side; p += stride) starts[n++] = last = p;
    if (last + win < side) starts[n++] = side - win;
    return n;
}

static int occlusion(const core_model *m, const core_opts *o, const float *x, explain_res *res, core_fail *f) {
    int h = m->height, w = m->width, c = m->channels, k = m->n_classes, chunk = explain_batch(m);
    size_t plane = (size_t)h * w, p = plane * c;
    int *ys = malloc((size_t)(h + 1) * sizeof *ys), *xs = malloc((size_t)(w + 1) * sizeof *xs);
    float *x0 = malloc(p * sizeof *x0), *batch = malloc(((size_t)chunk + 1) * p * sizeof *batch);
    float *z = malloc(((size_t)chunk + 1) * k * sizeof *z);
    double *sum = calloc(plane, sizeof *sum);
    int *count = calloc(plane, sizeof *count), rc = -1;
    if (!ys || !xs || !x0 || !batch || !z || !sum || !count) {
        core_failf(f, CORE_E_NOMEM, "out of memory for occlusion");
        goto done;
    }
    baseline(m, 0, x0);
    int ny = window_starts(h, o->window, o->stride, ys), nx = window_starts(w, o->window, o->stride, xs);
    /* Row 0 of every batch is x itself: score(x) from the same pass as the windows it is compared with, so a
     * window that changes nothing scores exactly 0 (a batch of another size can round differently). */
    int n = ny * nx, t = res->target, per = chunk > 1 ? chunk - 1 : 1;
    memcpy(batch, x, p * sizeof *batch);
    for (int b = 0; b < n; b += per) {
        int nb = n - b < per ? n - b : per;
        for (int j = 0; j < nb; j++) {
            float *row = batch + (size_t)(j + 1) * p;
            int y0 = ys[(b + j) / nx], x0w = xs[(b + j) % nx];
            memcpy(row, x, p * sizeof *row);
            for (int ch = 0; ch < c; ch++)
                for (int y = y0; y < y0 + o->window; y++)
                    for (int xx = x0w; xx < x0w + o->window; xx++)
                        row[ch * plane + (size_t)y * w + xx] = x0[ch * plane + (size_t)y * w + xx];
        }
        if (core_explain_pass(m, batch, nb + 1, t, 0, NULL, z, NULL, f)) goto done;
        for (int j = 0; j < nb; j++) {
            double d = (double)z[t] - z[(size_t)(j + 1) * k + t];
            int y0 = ys[(b + j) / nx], x0w = xs[(b + j) % nx];
            for (int y = y0; y < y0 + o->window; y++)
                for (int xx = x0w; xx < x0w + o->window; xx++) {
                    sum[(size_t)y * w + xx] += d;
                    count[(size_t)y * w + xx]++;
                }
        }
    }
    for (int ch = 0; ch < c; ch++)
        for (size_t i = 0; i < plane; i++) res->attr[ch * plane + i] = count[i] ? (float)(sum[i] / count[i]) : 0.0f;
    rc = 0;
done:
    free(ys);
    free(xs);
    free(x0);
    free(batch);
    free(z);
    free(sum);
    free(count);
    return rc;
}

static int gradcam(const core_model *m, const core_opts *o, const float *x, explain_res *res, core_fail *f) {
    char err[512];
    if (lt_layer_get_info(m->cnn, o->cam_layer, &res->li, err, sizeof err))
        return core_failf(f, CORE_E_BAD_PARAMETER, "%s", err);
    size_t lm = (size_t)res->li.height * res->li.width, plane = (size_t)m->height * m->width;
    res->layer_map = malloc(lm * sizeof *res->layer_map);
    float *cam = malloc(plane * sizeof *cam);
    if (!res->layer_map || !cam) {
        free(cam);
        return core_failf(f, CORE_E_NOMEM, "out of memory for Grad-CAM");
    }
    if (lt_gradcam(m->cnn, x, o->cam_layer, o->target, res->layer_map, lm, cam, res->logits, &res->target, err,
                   sizeof err)) {
        free(cam);
        return core_failf(f, CORE_E_INTERNAL, "Grad-CAM failed: %s", err);
    }
    if (o->method == CORE_M_GRADCAM) {
        memcpy(res->attr, cam, plane * sizeof *cam);
        res->ac = 1;
    } else {
        /* guided backprop of the same target, times the map in every channel */
        if (core_explain_pass(m, x, 1, res->target, 1, res->attr, NULL, NULL, f)) {
            free(cam);
            return -1;
        }
        for (int c = 0; c < m->channels; c++)
            for (size_t i = 0; i < plane; i++) res->attr[c * plane + i] *= cam[i];
    }
    free(cam);
    return 0;
}

static int explain(const core_model *m, const core_opts *o, const float *x, explain_res *res, core_fail *f) {
    size_t p = (size_t)m->channels * m->height * m->width;
    int k = m->n_classes;
    res->ac = m->channels;
    switch (o->method) {
    case CORE_M_GRADIENT:
    case CORE_M_INPUT_X_GRADIENT:
    case CORE_M_GUIDED_BACKPROP:
        if (core_explain_pass(m, x, 1, o->target, o->method == CORE_M_GUIDED_BACKPROP, res->attr, res->logits,
                              &res->target, f))
            return -1;
        if (o->method == CORE_M_INPUT_X_GRADIENT)
            for (size_t i = 0; i < p; i++) res->attr[i] *= x[i];
        return 0;
    case CORE_M_GRADCAM:
    case CORE_M_GUIDED_GRADCAM:
        return gradcam(m, o, x, res, f);
    default:
        break;
    }
    /* The batched methods: the target from x first, before any perturbation. */
    if (core_explain_pass(m, x, 1, o->target, 0, NULL, res->logits, &res->target, f)) return -1;
    if (o->method == CORE_M_OCCLUSION) return occlusion(m, o, x, res, f);
    double *acc = calloc(p, sizeof *acc);
    float *x0 = malloc(p * sizeof *x0), *z0 = malloc((size_t)k * sizeof *z0);
    int rc = -1;
    if (!acc || !x0 || !z0) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    if (o->method == CORE_M_SMOOTHGRAD) {
        float lo = x[0], hi = x[0];
        for (size_t i = 1; i < p; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
        noise_ctx nc = {x, p, {{0}}, (float)(o->noise * (hi - lo))};
        rng_seed(&nc.r, o->seed);
        if (grad_sum(m, o->samples, res->target, noise_row, &nc, acc, f)) goto done;
        for (size_t i = 0; i < p; i++) res->attr[i] = (float)(acc[i] / o->samples);
    } else { /* integrated gradients */
        baseline(m, o->baseline_zero, x0);
        if (core_explain_pass(m, x0, 1, res->target, 0, NULL, z0, NULL, f)) goto done;
        path_ctx pc = {x, x0, p, o->steps};
        if (grad_sum(m, o->steps, res->target, path_row, &pc, acc, f)) goto done;
        double total = 0;
        for (size_t i = 0; i < p; i++) {
            res->attr[i] = (float)((x[i] - x0[i]) * (acc[i] / o->steps));
            total += res->attr[i];
        }
        res->base_score = z0[res->target];
        res->delta = total - ((double)res->logits[res->target] - z0[res->target]);
    }
    rc = 0;
done:
    free(acc);
    free(x0);
    free(z0);
    return rc;
}

/* ==== Answers ==== */

static json_t *params_json(const core_opts *o) {
    switch (o->method) {
    case CORE_M_SMOOTHGRAD:
        return json_pack("{s:i, s:f, s:I}", "samples", o->samples, "noise", o->noise, "seed",
                         (json_int_t)o->seed);
    case CORE_M_INTEGRATED_GRADIENTS:
        return json_pack("{s:i, s:s}", "steps", o->steps, "baseline", o->baseline_zero ? "zero" : "black");
    case CORE_M_GRADCAM:
    case CORE_M_GUIDED_GRADCAM:
        return json_pack("{s:i}", "layer", o->cam_layer);
    case CORE_M_OCCLUSION:
        return json_pack("{s:i, s:i}", "window", o->window, "stride", o->stride);
    default:
        return json_object();
    }
}

int core_run_explain(const core_model *m, const core_opts *o, const core_input *in, double t0, core_out *out,
                     core_fail *f) {
    int w = m->width, h = m->height, k = m->n_classes;
    size_t plane = (size_t)w * h, p = plane * m->channels;
    explain_res res = {0};
    float *map = malloc(plane * sizeof *map), probs[1024];
    int rc = -1;
    res.attr = calloc(p, sizeof *res.attr);
    if (k > 1024) {
        core_failf(f, CORE_E_UNPROCESSABLE, "model '%s' has %d classes; explanations take at most 1024", m->name, k);
        goto done;
    }
    if (!map || !res.attr) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    double ti = clock_now();
    if (explain(m, o, in->x, &res, f)) goto done;
    ti = clock_now() - ti;
    out->infer_s = ti;
    double top = core_abs_map(res.attr, res.ac, (int)plane, map);
    if (top < 0) {
        core_failf(f, CORE_E_NOMEM, "out of memory");
        goto done;
    }
    if (!o->as_json) {
        rc = core_heatmap_png(map, o, in, w, h, out, f);
        goto done;
    }
    int pred = core_argmax(res.logits, k);
    mlp_softmax(res.logits, k, probs);
    json_t *attr = json_array();
    for (int c = 0; attr && c < res.ac; c++) json_array_append_new(attr, core_rows_json(res.attr + c * plane, h, w));
    json_t *doc = json_pack("{s:s, s:s, s:{s:i, s:s}, s:{s:i, s:s, s:f}, s:f, s:i, s:i, s:i, s:o, s:o, s:o, s:f, "
                            "s:b}",
                            "model", m->name, "method", core_method_name(o->method), "target", "index", res.target,
                            "class", m->classes[res.target], "prediction", "index", pred, "class", m->classes[pred],
                            "probability", (double)probs[pred], "score", (double)res.logits[res.target], "channels",
                            m->channels, "height", h, "width", w, "params", params_json(o), "attribution", attr, "map",
                            core_rows_json(map, h, w), "map_top", top, "inverted", in->inverted);
    if (doc && o->method == CORE_M_INTEGRATED_GRADIENTS) {
        json_object_set_new(doc, "convergence_delta", json_real(res.delta));
        json_object_set_new(doc, "baseline_score", json_real(res.base_score));
    }
    if (doc && res.layer_map) {
        json_object_set_new(doc, "layer",
                            json_pack("{s:i, s:s, s:i, s:i, s:i}", "index", o->cam_layer, "type", res.li.type,
                                      "channels", res.li.channels, "height", res.li.height, "width", res.li.width));
        json_object_set_new(doc, "layer_map", core_rows_json(res.layer_map, res.li.height, res.li.width));
    }
    if (doc)
        json_object_set_new(doc, "timing_ms",
                            json_pack("{s:f, s:f, s:f}", "decode", in->decode_ms, "inference", ti * 1e3, "total",
                                      (clock_now() - t0) * 1e3));
    rc = core_out_json(doc, out, f);
done:
    free(map);
    free(res.attr);
    free(res.layer_map);
    return rc;
}

/* ==== Class model visualisation ==== */

/* The filter route's start image: pixels uniform in [150, 180] / 255 from splitmix64(seed), normalised. */
static void random_start(const core_model *m, uint64_t seed, float *x) {
    size_t plane = (size_t)m->height * m->width;
    uint64_t s = seed;
    for (int c = 0; c < m->channels; c++)
        for (size_t i = 0; i < plane; i++) {
            double u = (double)(rng__splitmix(&s) >> 11) * (1.0 / 9007199254740992.0);
            double px = (150.0 + 30.0 * u) / 255.0;
            x[c * plane + i] = (float)((px - m->mean_c[c]) / m->std_c[c]);
        }
}

int core_run_classviz(const core_model *m, const core_opts *o, const core_input *in, double t0, core_out *out,
                      core_fail *f) {
    int c = m->channels, w = m->width, h = m->height, k = m->n_classes, it = o->viz.iterations;
    int n = lt_viz_n_frames(&o->viz);
    size_t plane = (size_t)w * h, p = plane * c;
    float *x = malloc(p * sizeof *x), *g = malloc(p * sizeof *g), *m1 = calloc(p, sizeof *m1);
    float *v2 = calloc(p, sizeof *v2), *frames = malloc((size_t)n * p * sizeof *frames);
    float *z = malloc((size_t)k * sizeof *z), *trace = malloc(((size_t)it + 1) * sizeof *trace);
    int rc = -1;
    if (!x || !g || !m1 || !v2 || !frames || !z || !trace) {
        core_failf(f, CORE_E_NOMEM, "out of memory for %d frames", n);
        goto done;
    }
    if (core_strip_check(n, w, h, o->scale, f)) goto done;
    if (in) memcpy(x, in->x, p * sizeof *x);
    else random_start(m, o->viz.seed, x);
    double ti = clock_now();
    const float lr = o->viz.lr, wd = o->viz.weight_decay, l2 = (float)o->l2;
    int frame = 0;
    for (int i = 1; i <= it; i++) {
        if (core_explain_pass(m, x, 1, o->klass, 0, g, z, NULL, f)) goto done;
        trace[i - 1] = z[o->klass];
        /* loss = -score + l2 * sum(x^2); torch.optim.Adam's step with weight decay, in float as torch does */
        float bc1 = 1.0f - powf(ADAM_B1, (float)i), bc2 = sqrtf(1.0f - powf(ADAM_B2, (float)i));
        for (size_t j = 0; j < p; j++) {
            float gj = -g[j] + 2.0f * l2 * x[j] + wd * x[j];
            m1[j] = m1[j] * ADAM_B1 + (1.0f - ADAM_B1) * gj;
            v2[j] = v2[j] * ADAM_B2 + (1.0f - ADAM_B2) * gj * gj;
            x[j] -= lr / bc1 * (m1[j] / (sqrtf(v2[j]) / bc2 + ADAM_EPS));
        }
        if (i % o->viz.every == 0) {
            float *fr = frames + (size_t)frame++ * p;
            for (int ch = 0; ch < c; ch++)
                for (size_t j = 0; j < plane; j++) {
                    float v = x[ch * plane + j] * m->std_c[ch] + m->mean_c[ch];
                    fr[ch * plane + j] = v < 0 ? 0 : v > 1 ? 1 : v;
                }
        }
    }
    if (core_explain_pass(m, x, 1, o->klass, 0, NULL, z, NULL, f)) goto done;
    trace[it] = z[o->klass];
    ti = clock_now() - ti;
    out->infer_s = ti;
    if (!o->as_json) {
        rc = core_frames_png(frames, n, c, w, h, o->scale, out, f);
        goto done;
    }
    json_t *list = core_frames_json(frames, n, c, w, h, o->scale, o->viz.every), *tr = json_array();
    for (int i = 0; tr && i <= it; i++) json_array_append_new(tr, json_real(trace[i]));
    json_t *doc = json_pack("{s:s, s:{s:i, s:s}, s:s, s:i, s:i, s:f, s:I, s:f, s:i, s:i, s:o, s:o, s:{s:f, s:f, s:f}}",
                            "model", m->name, "class", "index", o->klass, "class", m->classes[o->klass], "start",
                            in ? "image" : "random", "iterations", it, "every", o->viz.every, "lr", (double)lr, "seed",
                            (json_int_t)o->viz.seed, "l2", o->l2, "width", w * o->scale, "height", h * o->scale,
                            "frames", list, "score", tr, "timing_ms", "decode", in ? in->decode_ms : 0.0, "inference",
                            ti * 1e3, "total", (clock_now() - t0) * 1e3);
    rc = core_out_json(doc, out, f);
done:
    free(x);
    free(g);
    free(m1);
    free(v2);
    free(frames);
    free(z);
    free(trace);
    return rc;
}
