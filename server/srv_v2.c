/* srv_v2.c -- the KServe V2 / Open Inference Protocol subset: health, metadata, infer on raw tensors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"
#include "srv_routes.h"

#ifndef LOUPE_VERSION
#define LOUPE_VERSION "0.1.0"
#endif

/* Rows per forward pass of a batched infer. */
#define V2_CHUNK 256
/* Images per libtorch call: a CNN's activations grow with the batch. */
#define V2_CNN_CHUNK 16
/* Largest batch one request may carry (the body limit usually bites first). */
#define V2_MAX_BATCH 65536

static int ready(srv_ctx *ctx) {
    if (atomic_load_explicit(&ctx->draining, memory_order_relaxed)) return 0;
    reg_store *s = reg_acquire(ctx->registry);
    int n = reg_store_count(s);
    reg_store_release(s);
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
    reg_model *m = srv_route_model(r);
    if (!m) return;
    if (m->cnn) {
        /* CNNs take the model.json tensor as it is: [N, C, H, W], normalised. */
        json_t *doc = json_pack("{s:s, s:[s], s:s, s:[{s:s, s:s, s:[i, i, i, i]}], s:[{s:s, s:s, s:[i, i]}], s:{s:[s,s]}}",
                                "name", m->name, "versions", "1", "platform", "loupe_torchscript", "inputs", "name",
                                "input", "datatype", "FP32", "shape", -1, m->channels, m->height, m->width, "outputs",
                                "name", "probabilities", "datatype", "FP32", "shape", -1, m->n_classes, "parameters",
                                "input_datatypes", "FP32", "UINT8");
        srv_reply_json(r, 200, doc);
        reg_model_release(m);
        return;
    }
    json_t *doc = json_pack("{s:s, s:[s], s:s, s:[{s:s, s:s, s:[i, i]}], s:[{s:s, s:s, s:[i, i]}], s:{s:[i,i,i,i], s:[s,s]}}",
                            "name", m->name, "versions", "1", "platform", "loupe_mlp",
                            "inputs", "name", "input", "datatype", "FP32", "shape", -1, mlp_n_inputs(m->net),
                            "outputs", "name", "probabilities", "datatype", "FP32", "shape", -1, m->n_classes,
                            "parameters", "input_shape_alternative", -1, m->channels, m->height, m->width,
                            "input_datatypes", "FP32", "UINT8");
    srv_reply_json(r, 200, doc);
    reg_model_release(m);
}

void srv_h_v2_model_ready(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (!m) return;
    int ok = !atomic_load_explicit(&r->ctx->draining, memory_order_relaxed);
    srv_reply_json(r, ok ? 200 : 503, json_pack("{s:s, s:b}", "name", m->name, "ready", ok));
    reg_model_release(m);
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
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        snprintf(err, errlen, "FP32 data[%zu] is not a finite number", *n);
        return -1;
    }
    out[(*n)++] = (float)json_number_value(v);
    return 0;
}

void srv_h_v2_infer(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (!m) return;
    json_t *doc = NULL;
    float *x = NULL, *logits = NULL;
    mlp_scratch *s = NULL;
    char err[256];
    int nin = m->channels * m->height * m->width, k = m->n_classes;

    if (!r->body_len) {
        srv_reply_error(r, SRV_E_EMPTY_BODY, "the request has no body: send {\"inputs\": [...]}");
        goto done;
    }
    json_error_t je;
    doc = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        srv_reply_error(r, SRV_E_BAD_JSON, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
        goto done;
    }
    json_t *inputs = json_object_get(doc, "inputs");
    if (!json_is_object(doc) || !json_is_array(inputs) || json_array_size(inputs) != 1) {
        srv_reply_error(r, SRV_E_BAD_JSON, "the body must be an object with \"inputs\": one tensor");
        goto done;
    }
    json_t *outputs = json_object_get(doc, "outputs");
    if (outputs) {
        size_t i;
        json_t *o;
        if (!json_is_array(outputs)) {
            srv_reply_error(r, SRV_E_BAD_JSON, "\"outputs\" must be an array");
            goto done;
        }
        json_array_foreach(outputs, i, o) {
            const char *name = json_string_value(json_object_get(o, "name"));
            if (!name || strcmp(name, "probabilities")) {
                srv_reply_error(r, SRV_E_BAD_INPUT, "unknown output '%s' (this model has \"probabilities\")",
                                name ? name : "?");
                goto done;
            }
        }
    }
    json_t *t = json_array_get(inputs, 0);
    const char *dtype = json_string_value(json_object_get(t, "datatype"));
    json_t *shape = json_object_get(t, "shape"), *data = json_object_get(t, "data");
    if (!json_is_object(t) || !dtype || !json_is_array(shape) || !json_is_array(data)) {
        srv_reply_error(r, SRV_E_BAD_JSON, "the input tensor needs \"name\", \"shape\", \"datatype\" and \"data\"");
        goto done;
    }
    int uint8 = !strcmp(dtype, "UINT8");
    if (!uint8 && strcmp(dtype, "FP32")) {
        srv_reply_error(r, SRV_E_BAD_INPUT, "datatype '%s' is not supported: use FP32 or UINT8", dtype);
        goto done;
    }
    json_int_t dims[4] = {0};
    size_t nd = json_array_size(shape);
    for (size_t i = 0; i < nd && i < 4; i++) dims[i] = json_integer_value(json_array_get(shape, i));
    int shape_ok = (nd == 2 && dims[1] == nin && !m->cnn) ||
                   (nd == 4 && dims[1] == m->channels && dims[2] == m->height && dims[3] == m->width);
    for (size_t i = 0; i < nd; i++)
        if (!json_is_integer(json_array_get(shape, i))) shape_ok = 0;
    if (!shape_ok || dims[0] < 1 || dims[0] > V2_MAX_BATCH) {
        if (m->cnn)
            srv_reply_error(r, SRV_E_BAD_INPUT, "shape must be [N,%d,%d,%d] with 1 <= N <= %d", m->channels, m->height,
                            m->width, V2_MAX_BATCH);
        else
            srv_reply_error(r, SRV_E_BAD_INPUT, "shape must be [N,%d] or [N,%d,%d,%d] with 1 <= N <= %d", nin,
                            m->channels, m->height, m->width, V2_MAX_BATCH);
        goto done;
    }
    int batch = (int)dims[0];
    size_t want = (size_t)batch * nin, got = 0;
    x = malloc(want * sizeof *x);
    logits = malloc((size_t)batch * k * sizeof *logits);
    if (m->net) s = mlp_scratch_new(m->net, batch < V2_CHUNK ? batch : V2_CHUNK);
    if (!x || !logits || (m->net && !s)) {
        srv_reply_error(r, SRV_E_NOMEM, "out of memory for a batch of %d", batch);
        goto done;
    }
    if (flatten(data, 0, uint8, x, &got, want, err, sizeof err)) {
        srv_reply_error(r, SRV_E_BAD_INPUT, "%s", err);
        goto done;
    }
    if (got != want) {
        srv_reply_error(r, SRV_E_BAD_INPUT, "\"data\" has %zu values, the shape says %zu", got, want);
        goto done;
    }
    /* UINT8 arrive as pixels: bring them to the model's input like the image routes do. */
    if (uint8) {
        size_t plane = (size_t)m->height * m->width;
        for (size_t i = 0; i < want; i++) {
            int c = (int)(i / plane % (size_t)m->channels);
            if (m->mean_c[c] != 0.0f || m->std_c[c] != 1.0f) x[i] = (x[i] - m->mean_c[c]) / m->std_c[c];
        }
    }

    double t0 = srv_now();
    int chunk = m->cnn ? V2_CNN_CHUNK : V2_CHUNK;
    for (int b = 0; b < batch; b += chunk) {
        int nb = batch - b < chunk ? batch - b : chunk;
        if (m->cnn ? lt_forward(m->cnn, x + (size_t)b * nin, nb, logits + (size_t)b * k, err, sizeof err)
                   : mlp_forward(m->net, s, x + (size_t)b * nin, nb, logits + (size_t)b * k)) {
            srv_reply_error(r, SRV_E_INTERNAL, "the forward pass failed%s%s", m->cnn ? ": " : "", m->cnn ? err : "");
            goto done;
        }
    }
    srv_metrics_inference(r->ctx->metrics, m->name, srv_now() - t0);
    json_t *out = json_array();
    for (int b = 0; out && b < batch; b++) {
        float *row = logits + (size_t)b * k;
        mlp_softmax(row, k, row);
        for (int j = 0; j < k; j++) json_array_append_new(out, json_real(row[j]));
    }
    json_t *resp = json_pack("{s:s, s:s, s:[{s:s, s:s, s:[i, i], s:o}]}", "model_name", m->name, "model_version",
                             "1", "outputs", "name", "probabilities", "datatype", "FP32", "shape", batch, k, "data",
                             out);
    json_t *id = json_object_get(doc, "id");
    if (resp && json_is_string(id)) json_object_set(resp, "id", id);
    srv_reply_json(r, 200, resp);
done:
    json_decref(doc);
    free(x);
    free(logits);
    mlp_scratch_free(s);
    reg_model_release(m);
}
