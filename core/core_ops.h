/* core_ops.h -- predict, saliency, filter visualisation and feature maps of one model: options and output, shared by the routes and the offline CLI. */
#ifndef LOUPE_CORE_OPS_H
#define LOUPE_CORE_OPS_H

#include <stddef.h>

#include "lt.h"
#include "core_reg.h"
#include "core_err.h"
#include "core_input.h"

#define CORE_VIZ_MAX_ITERATIONS 200  /* filter visualisation: Adam steps per request */
#define CORE_VIZ_MAX_LR 10.0         /* learning rate in (0, this] */
#define CORE_MAX_SCALE 32            /* PNG enlargement */

/* What an operation does. */
typedef enum {
    CORE_OP_PREDICT,      /* top-k classes as JSON */
    CORE_OP_SALIENCY,     /* |d score / d input| as a PNG heatmap or JSON */
    CORE_OP_FILTERS,      /* activation maximisation frames as a PNG strip or JSON */
    CORE_OP_ACTIVATIONS   /* feature maps of one layer as a PNG grid or JSON */
} core_op;

/* A response body: malloc'd, owned by the caller. */
typedef struct {
    const char *content_type;  /* static: "application/json" or "image/png" */
    char *body;
    size_t len;
    double infer_s;            /* seconds in the model's forward/gradient passes */
} core_out;

/* Options of an operation, validated once (core_opts_parse). */
typedef struct {
    int top_k;          /* predict: classes listed, clamped to n_classes */
    int target;         /* saliency: class index, -1 = the predicted class */
    int as_json;        /* 0: PNG */
    int overlay;        /* saliency PNG: blend over the input */
    int scale;          /* PNG enlargement, 1..CORE_MAX_SCALE */
    int layer, filter;  /* filters, activations: index in `features`; filter in the layer */
    lt_viz_params viz;  /* filters: iterations, every, lr, seed */
} core_opts;

/* Where option values come from (a query string, the CLI's flags): the value of key, or NULL. */
typedef const char *(*core_arg_fn)(void *ctx, const char *key);

/* 1 when op on m is one of the expensive kinds that go through the
 * concurrency limit (saliency on a CNN, filters, activations). */
int core_op_expensive(const core_model *m, core_op op);

/* Read and check op's options for m: query keys top_k; target, format,
 * overlay, scale; iterations, every, lr, seed; layer and filter come as
 * strings (from the path or --layer/--filter; NULL where op needs none).
 * Returns 0, or -1 with f set: 404 for a layer or filter that does not
 * exist, 400 for a bad value (the message gives the valid range), 422 for an
 * operation the model cannot do (filters of an MLP). */
int core_opts_parse(const core_model *m, core_op op, const char *layer, const char *filter, core_arg_fn arg,
                    void *arg_ctx, core_opts *o, core_fail *f);

/* Run op on m. in: the preprocessed image (filters: NULL starts from the
 * seeded random image). t0 is clock_now() at the request's arrival
 * (timing_ms.total). Returns 0 with *out set (out->infer_s: the model's
 * share, for the caller's metrics), or -1 with f. */
int core_op_run(const core_model *m, core_op op, const core_opts *o, const core_input *in, double t0,
                core_out *out, core_fail *f);

/* The predict answer from logits [K] of in that a forward pass of `batch`
 * images (the dynamic batcher's) gave in infer_s seconds. Returns 0 with *out
 * set, or -1 with f. */
int core_predict_answer(const core_model *m, const core_opts *o, const core_input *in, const float *logits,
                        double infer_s, int batch, double t0, core_out *out, core_fail *f);

/* GET /v1/models/{m}/layers as JSON: {"model", "kind", "layers": [...]}
 * (an empty list for an MLP). Returns 0 or -1 with f. */
int core_op_layers(const core_model *m, core_out *out, core_fail *f);

/* Standard base64 with padding of n bytes, NUL-terminated, malloc'd; NULL when out of memory. */
char *core_base64_encode(const unsigned char *data, size_t n);

#endif
