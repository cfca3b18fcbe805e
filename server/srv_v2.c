/* srv_v2.c -- the KServe V2 / Open Inference Protocol subset: health, metadata, infer on raw tensors. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "mlp.h"
#include "core_engine.h"
#include "srv_routes.h"
#include "version.h"


/* Largest batch one request may carry (the body limit usually bites first). */
#define V2_MAX_BATCH 65536

static int ready(srv_ctx *ctx) {
    if (atomic_load_explicit(&ctx->draining, memory_order_relaxed)) return 0;
    core_store *s = core_reg_acquire(ctx->registry);
    int n = core_store_count(s);
    core_store_release(s);
    return n > 0;
}

void srv_h_v2_server(srv_req *r) {
    srv_reply_json(r, 200, json_pack("{s:s, s:s, s:[]}", "name", "loupe", "version", LOUPE_VERSION, "extensions"));
}

void srv_h_v2_live(srv_req *r) {
    srv_reply_json(r, 200, json_pack("{s:b}", "live", 1));
}

void srv_h_v2_ready(srv_req *r) {
    int ok = ready(r->ctx);
    srv_reply_json(r, ok ? 200 : 503, json_pack("{s:b}", "ready", ok));
}

void srv_h_v2_model(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (!m) return;
    if (core_model_has_layers(m)) {
        /* CNNs take the model.json tensor as it is: [N, C, H, W], normalised. */
        json_t *doc = json_pack("{s:s, s:[s], s:s, s:[{s:s, s:s, s:[i, i, i, i]}], s:[{s:s, s:s, s:[i, i]}], s:{s:[s,s]}}",
                                "name", m->name, "versions", "1", "platform", "loupe_torchscript", "inputs", "name",
                                "input", "datatype", "FP32", "shape", -1, m->channels, m->height, m->width, "outputs",
                                "name", "probabilities", "datatype", "FP32", "shape", -1, m->n_classes, "parameters",
                                "input_datatypes", "FP32", "UINT8");
        srv_reply_json(r, 200, doc);
        core_model_release(m);
        return;
    }
    json_t *doc = json_pack("{s:s, s:[s], s:s, s:[{s:s, s:s, s:[i, i]}], s:[{s:s, s:s, s:[i, i]}], s:{s:[i,i,i,i], s:[s,s]}}",
                            "name", m->name, "versions", "1", "platform", "loupe_mlp",
                            "inputs", "name", "input", "datatype", "FP32", "shape", -1, m->channels * m->height * m->width,
                            "outputs", "name", "probabilities", "datatype", "FP32", "shape", -1, m->n_classes,
                            "parameters", "input_shape_alternative", -1, m->channels, m->height, m->width,
                            "input_datatypes", "FP32", "UINT8");
    srv_reply_json(r, 200, doc);
    core_model_release(m);
}

void srv_h_v2_model_ready(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (!m) return;
    int ok = !atomic_load_explicit(&r->ctx->draining, memory_order_relaxed);
    srv_reply_json(r, ok ? 200 : 503, json_pack("{s:s, s:b}", "name", m->name, "ready", ok));
    core_model_release(m);
}

/* Flatten nested arrays of numbers into out[*n...], at most max values.
 * Returns 0, or -1 with a message in err. */
static int flatten(json_t *v, int depth, int uint8, float *out, size_t *n, size_t max, char *err, size_t errlen) {
    if (json_is_array(v)) {
        if (depth > 5) {
            snprintf(err, errlen, "\"data\" is nested deeper than the shape");
            return -1;
        }
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (flatten(e, depth + 1, uint8, out, n, max, err, errlen)) return -1;
        return 0;
    }
    if (*n >= max) {
        snprintf(err, errlen, "\"data\" has more values than the shape says (%zu)", max);
        return -1;
    }
    if (uint8) {
        json_int_t x = json_integer_value(v);
        if (!json_is_integer(v) || x < 0 || x > 255) {
            snprintf(err, errlen, "UINT8 data[%zu] is not an integer in [0,255]", *n);
            return -1;
        }
        out[(*n)++] = (float)x / 255.0f;
        return 0;
    }
    /* A finite double past FLT_MAX would become an infinite float: the
     * probabilities of that row would be NaN. */
    double d = json_number_value(v);
    if (!json_is_number(v) || !isfinite(d) || fabs(d) > FLT_MAX) {
        snprintf(err, errlen, "FP32 data[%zu] is not a finite float32 number (|x| <= %g)", *n, (double)FLT_MAX);
        return -1;
    }
    out[(*n)++] = (float)d;
    return 0;
}

/* The values in nested arrays v, counting no further than max + 1 (enough
 * to say "too many"); *deep is set when v nests deeper than flatten accepts. */
static size_t count_values(json_t *v, int depth, size_t max, int *deep) {
    if (!json_is_array(v)) return 1;
    if (depth > 5) {
        *deep = 1;
        return 0;
    }
    size_t i, n = 0;
    json_t *e;
    json_array_foreach(v, i, e) {
        n += count_values(e, depth + 1, max - (n < max ? n : max), deep);
        if (n > max || *deep) break;
    }
    return n;
}

/* What V2's prepare parsed: the document (for "id") and the input tensor. */
typedef struct {
    json_t *doc;
    float *x;  /* [batch, C*H*W] */
} v2_state;

static void v2_cleanup(srv_work *w) {
    v2_state *s = w->state;
    if (!s) return;
    json_decref(s->doc);
    free(s->x);
    free(s);
    w->state = NULL;
}

/* Check the "outputs" the client asks for: only "probabilities" exists. */
static int v2_outputs_ok(json_t *outputs, core_fail *f) {
    if (!outputs) return 0;
    size_t i;
    json_t *o;
    if (!json_is_array(outputs)) return core_failf(f, CORE_E_BAD_JSON, "\"outputs\" must be an array");
    json_array_foreach(outputs, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        if (!name || strcmp(name, "probabilities"))
            return core_failf(f, CORE_E_BAD_INPUT, "unknown output '%s' (this model has \"probabilities\")",
                              name ? name : "?");
    }
    return 0;
}

/* The batch size of a tensor's shape for m, or -1 with f. */
static int v2_batch(const core_model *m, json_t *shape, core_fail *f) {
    int nin = m->channels * m->height * m->width, cnn = core_model_has_layers(m);
    json_int_t dims[4] = {0};
    size_t nd = json_array_size(shape);
    for (size_t i = 0; i < nd && i < 4; i++) dims[i] = json_integer_value(json_array_get(shape, i));
    int shape_ok = (nd == 2 && dims[1] == nin && !cnn) ||
                   (nd == 4 && dims[1] == m->channels && dims[2] == m->height && dims[3] == m->width);
    for (size_t i = 0; i < nd; i++)
        if (!json_is_integer(json_array_get(shape, i))) shape_ok = 0;
    if (shape_ok && dims[0] >= 1 && dims[0] <= V2_MAX_BATCH) return (int)dims[0];
    if (cnn)
        return core_failf(f, CORE_E_BAD_INPUT, "shape must be [N,%d,%d,%d] with 1 <= N <= %d", m->channels,
                          m->height, m->width, V2_MAX_BATCH);
    return core_failf(f, CORE_E_BAD_INPUT, "shape must be [N,%d] or [N,%d,%d,%d] with 1 <= N <= %d", nin,
                      m->channels, m->height, m->width, V2_MAX_BATCH);
}

/* srv_v2_parse's work; on failure *doc and *x hold what it made, for the caller to free. */
static int v2_parse(const core_model *m, const unsigned char *body, size_t len, json_t **doc, float **x, int *rows,
                    core_fail *f) {
    char err[256];
    int nin = m->channels * m->height * m->width;
    json_error_t je;
    *doc = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &je);
    if (!*doc)
        return core_failf(f, CORE_E_BAD_JSON, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    json_t *inputs = json_object_get(*doc, "inputs");
    if (!json_is_object(*doc) || !json_is_array(inputs) || json_array_size(inputs) != 1)
        return core_failf(f, CORE_E_BAD_JSON, "the body must be an object with \"inputs\": one tensor");
    if (v2_outputs_ok(json_object_get(*doc, "outputs"), f)) return -1;
    json_t *t = json_array_get(inputs, 0);
    const char *dtype = json_string_value(json_object_get(t, "datatype"));
    json_t *shape = json_object_get(t, "shape"), *data = json_object_get(t, "data");
    if (!json_is_object(t) || !dtype || !json_is_array(shape) || !json_is_array(data))
        return core_failf(f, CORE_E_BAD_JSON, "the input tensor needs \"name\", \"shape\", \"datatype\" and \"data\"");
    int uint8 = !strcmp(dtype, "UINT8");
    if (!uint8 && strcmp(dtype, "FP32"))
        return core_failf(f, CORE_E_BAD_INPUT, "datatype '%s' is not supported: use FP32 or UINT8", dtype);
    int batch = v2_batch(m, shape, f);
    if (batch < 0) return -1;
    /* Count before allocating: a small body declaring a huge shape must not cost batch x inputs floats. */
    int deep = 0;
    size_t want = (size_t)batch * nin, got = count_values(data, 0, want, &deep);
    if (deep) return core_failf(f, CORE_E_BAD_INPUT, "\"data\" is nested deeper than the shape");
    if (got > want)
        return core_failf(f, CORE_E_BAD_INPUT, "\"data\" has more values than the shape says (%zu)", want);
    if (got < want) return core_failf(f, CORE_E_BAD_INPUT, "\"data\" has %zu values, the shape says %zu", got, want);
    got = 0;
    if (!(*x = malloc(want * sizeof **x)))
        return core_failf(f, CORE_E_NOMEM, "out of memory for a batch of %d", batch);
    if (flatten(data, 0, uint8, *x, &got, want, err, sizeof err))
        return core_failf(f, CORE_E_BAD_INPUT, "%s", err);
    if (got != want) return core_failf(f, CORE_E_BAD_INPUT, "\"data\" has %zu values, the shape says %zu", got, want);
    /* UINT8 arrive as pixels: bring them to the model's input like the image routes do. */
    if (uint8) {
        size_t plane = (size_t)m->height * m->width;
        for (size_t i = 0; i < want; i++) {
            int c = (int)(i / plane % (size_t)m->channels);
            if (m->mean_c[c] != 0.0f || m->std_c[c] != 1.0f) (*x)[i] = ((*x)[i] - m->mean_c[c]) / m->std_c[c];
        }
    }
    *rows = batch;
    return 0;
}

int srv_v2_parse(const core_model *m, const unsigned char *body, size_t len, json_t **doc, float **x, int *rows,
                 core_fail *f) {
    *doc = NULL;
    *x = NULL;
    *rows = 0;
    if (!v2_parse(m, body, len, doc, x, rows, f)) return 0;
    json_decref(*doc);
    free(*x);
    *doc = NULL;
    *x = NULL;
    return -1;
}

/* On the worker: parse and check the request, x = the input tensor. */
static int v2_prepare(srv_work *w, core_fail *f) {
    v2_state *s = calloc(1, sizeof *s);
    if (!s) return core_failf(f, CORE_E_NOMEM, "out of memory");
    w->state = s;
    if (srv_v2_parse(w->m, w->r->body, w->r->body_len, &s->doc, &s->x, &w->rows, f)) return -1;
    w->x = s->x;
    return 0;
}

static void v2_answer(srv_work *w, const float *logits, double infer_s, int batch) {
    const core_model *m = w->m;
    v2_state *s = w->state;
    int k = m->n_classes;
    (void)infer_s, (void)batch;
    json_t *out = json_array();
    float *p = malloc((size_t)k * sizeof *p);
    for (int b = 0; out && p && b < w->rows; b++) {
        mlp_softmax(logits + (size_t)b * k, k, p);
        for (int j = 0; j < k; j++) json_array_append_new(out, json_real(p[j]));
    }
    free(p);
    json_t *resp = out && p ? json_pack("{s:s, s:s, s:[{s:s, s:s, s:[i, i], s:o}]}", "model_name", m->name,
                                        "model_version", "1", "outputs", "name", "probabilities", "datatype", "FP32",
                                        "shape", w->rows, k, "data", out)
                            : NULL;
    if (!resp) json_decref(out);
    json_t *id = json_object_get(s->doc, "id");
    if (resp && json_is_string(id)) json_object_set(resp, "id", id);
    srv_reply_json(w->r, 200, resp);
}

/* A body this large is parsed on the heavy lane. */
#define V2_LIGHT_BODY (1u << 20)

void srv_h_v2_infer(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (!m) return;
    if (!r->body_len) {
        srv_reply_error(r, CORE_E_EMPTY_BODY, "the request has no body: send {\"inputs\": [...]}");
        core_model_release(m);
        return;
    }
    srv_work *w = srv_work_new(r, m, CORE_OP_PREDICT);
    if (!w) {
        core_model_release(m);
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    w->prepare = v2_prepare;
    w->answer = v2_answer;
    w->cleanup = v2_cleanup;
    srv_work_submit(w, r->body_len > V2_LIGHT_BODY ? r->ctx->lane_heavy : r->ctx->lane_main);
}
