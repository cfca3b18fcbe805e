/* core_ops.h -- predict, saliency, filter visualisation and feature maps of one model: options and output, shared by the routes and the offline CLI. */
#ifndef LOUPE_CORE_OPS_H
#define LOUPE_CORE_OPS_H

#include <stddef.h>
#include <stdint.h>

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
    CORE_OP_ACTIVATIONS,  /* feature maps of one layer as a PNG grid or JSON */
    CORE_OP_EXPLAIN,      /* an attribution method (core_method) as a PNG heatmap or JSON */
    CORE_OP_CLASSVIZ      /* class model visualisation: frames of an image raising a class's score */
} core_op;

/* The attribution methods of CORE_OP_EXPLAIN (docs/api.md, docs/explanations.md). */
typedef enum {
    CORE_M_GRADIENT,             /* d score / d x */
    CORE_M_INPUT_X_GRADIENT,     /* x * d score / d x */
    CORE_M_SMOOTHGRAD,           /* the mean gradient over noisy copies of x */
    CORE_M_INTEGRATED_GRADIENTS, /* (x - x0) * the mean gradient on the path from x0 to x */
    CORE_M_GUIDED_BACKPROP,      /* the gradient through guided ReLUs */
    CORE_M_GRADCAM,              /* Grad-CAM of one layer of `features`, resized */
    CORE_M_GUIDED_GRADCAM,       /* guided backprop times Grad-CAM */
    CORE_M_OCCLUSION,            /* the score's drop when a window is filled with x0 */
    CORE_M_COUNT
} core_method;

/* "gradient", "input_x_gradient", ... ; the parser returns the method or -1. */
const char *core_method_name(core_method m);
int core_method_parse(const char *name);

struct json_t;
/* What GET /v1/models/{m} says of m's explanations: {"methods": [names m can run], "unavailable": {name: why},
 * "gradcam_layer": Grad-CAM's default layer or null}; NULL when out of memory. */
struct json_t *core_explain_info(const core_model *m);

#define CORE_MAX_SAMPLES 1024   /* smoothgrad draws */
#define CORE_MAX_STEPS 1024     /* integrated gradients steps */
#define CORE_MAX_NOISE 10.0     /* smoothgrad noise, a fraction of the input's range */
#define CORE_MAX_L2 100.0       /* class visualisation L2 penalty */

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
    lt_viz_params viz;  /* filters, class visualisation: iterations, every, lr, seed */
    /* explain */
    core_method method;
    int samples;        /* smoothgrad draws */
    double noise;       /* smoothgrad: sigma = noise * (max - min of x) */
    uint64_t seed;      /* smoothgrad */
    int steps;          /* integrated gradients */
    int baseline_zero;  /* integrated gradients: 1 zero tensor, 0 black (the preprocessed all-zero image) */
    int window, stride; /* occlusion */
    int cam_layer;      /* gradcam, guided_gradcam: index in `features` */
    /* class visualisation */
    int klass;          /* the class whose score is raised */
    double l2;          /* L2 penalty on the image */
} core_opts;

/* Where option values come from (a query string, the CLI's flags): the value of key, or NULL. */
typedef const char *(*core_arg_fn)(void *ctx, const char *key);

/* 1 when op on m is one of the expensive kinds that go through the
 * concurrency limit (saliency on a CNN, filters, activations; explanations
 * and class visualisations of any model). */
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
