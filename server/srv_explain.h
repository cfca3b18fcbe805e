/* srv_explain.h -- predict, saliency, filter visualisation and feature maps of one model: options and output, shared by the routes and the offline CLI. */
#ifndef LOUPE_SRV_EXPLAIN_H
#define LOUPE_SRV_EXPLAIN_H

#include <stddef.h>

#include "lt.h"
#include "reg.h"
#include "srv_err.h"
#include "srv_input.h"
#include "srv_metrics.h"

#define SRV_VIZ_MAX_ITERATIONS 200  /* filter visualisation: Adam steps per request */
#define SRV_VIZ_MAX_LR 10.0         /* learning rate in (0, this] */
#define SRV_MAX_SCALE 32            /* PNG enlargement */

/* What an operation does. */
typedef enum {
    SRV_OP_PREDICT,      /* top-k classes as JSON */
    SRV_OP_SALIENCY,     /* |d score / d input| as a PNG heatmap or JSON */
    SRV_OP_FILTERS,      /* activation maximisation frames as a PNG strip or JSON */
    SRV_OP_ACTIVATIONS   /* feature maps of one layer as a PNG grid or JSON */
} srv_op;

/* A failed operation: the error table's kind and one sentence. */
typedef struct {
    srv_err_kind kind;
    char msg[512];
} srv_fail;

/* A response body: malloc'd, owned by the caller. */
typedef struct {
    const char *content_type;  /* static: "application/json" or "image/png" */
    char *body;
    size_t len;
} srv_out;

/* Options of an operation, validated once (srv_xopts_parse). */
typedef struct {
    int top_k;          /* predict: classes listed, clamped to n_classes */
    int target;         /* saliency: class index, -1 = the predicted class */
    int as_json;        /* 0: PNG */
    int overlay;        /* saliency PNG: blend over the input */
    int scale;          /* PNG enlargement, 1..SRV_MAX_SCALE */
    int layer, filter;  /* filters, activations: index in `features`; filter in the layer */
    lt_viz_params viz;  /* filters: iterations, every, lr, seed */
} srv_xopts;

/* Where option values come from (a query string, the CLI's flags): the value of key, or NULL. */
typedef const char *(*srv_arg_fn)(void *ctx, const char *key);

/* 1 when op on m is one of the expensive kinds that go through the
 * concurrency limit (saliency on a CNN, filters, activations). */
int srv_op_expensive(const reg_model *m, srv_op op);

/* Read and check op's options for m: query keys top_k; target, format,
 * overlay, scale; iterations, every, lr, seed; layer and filter come as
 * strings (from the path or --layer/--filter; NULL where op needs none).
 * Returns 0, or -1 with f set: 404 for a layer or filter that does not
 * exist, 400 for a bad value (the message gives the valid range), 422 for an
 * operation the model cannot do (filters of an MLP). */
int srv_xopts_parse(const reg_model *m, srv_op op, const char *layer, const char *filter, srv_arg_fn arg,
                    void *arg_ctx, srv_xopts *o, srv_fail *f);

/* Run op on m. in: the preprocessed image (filters: NULL starts from the
 * seeded random image). metrics may be NULL; t0 is srv_now() at the start
 * of the request (timing_ms.total). Returns 0 with *out set, or -1 with f. */
int srv_explain_run(const reg_model *m, srv_op op, const srv_xopts *o, const srv_input *in, srv_metrics *metrics,
                    double t0, srv_out *out, srv_fail *f);

/* GET /v1/models/{m}/layers as JSON: {"model", "kind", "layers": [...]}
 * (an empty list for an MLP). Returns 0 or -1 with f. */
int srv_explain_layers(const reg_model *m, srv_out *out, srv_fail *f);

/* Standard base64 with padding of n bytes, NUL-terminated, malloc'd; NULL when out of memory. */
char *srv_base64_encode(const unsigned char *data, size_t n);

#endif
