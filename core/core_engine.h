/* core_engine.h -- one dispatch for the model work every kind of model does: forward passes and input gradients. */
#ifndef LOUPE_CORE_ENGINE_H
#define LOUPE_CORE_ENGINE_H

#include <stddef.h>

#include "core_err.h"

struct core_model;

/* What a kind of model can do, as functions over the loaded model. The
 * registry sets core_model.engine when it loads a folder; nothing else tests
 * the model's kind. Every function may run on many threads at once. */
typedef struct core_engine {
    const char *kind;   /* "mlp", "torchscript" */
    int has_layers;     /* 1: a `features` Sequential (layers, filters, feature maps) */
    int chunk;          /* most rows one call of forward takes (activations grow with it) */
    int tune_chunk;     /* 1: the warm-up times batch sizes and keeps the cheapest per image */
    /* logits [n, K] of x [n, C*H*W]; 0, or -1 with a message in err. */
    int (*forward)(const struct core_model *m, const float *x, int n, float *logits, char *err, size_t errlen);
    /* The explanation passes, batched: logits [n, K] (may be NULL) and, when
     * grad is not NULL, grad [n, C*H*W] = d logit[t_i] / d x_i, t_i = target
     * or row i's own argmax when target < 0 (written to targets, may be NULL);
     * guided: guided backprop (the caller checked the model allows it). */
    int (*explain)(const struct core_model *m, const float *x, int n, int target, int guided, float *grad,
                   float *logits, int *targets, char *err, size_t errlen);
} core_engine;

extern const core_engine core_engine_mlp;
extern const core_engine core_engine_torch;

/* logits [n, K] of n inputs of m, in calls of at most the model's chunk
 * (core_model.chunk when the warm-up chose one, else the engine's).
 * Returns 0, or -1 with f (500: the pass failed; out of memory). */
int core_forward(const struct core_model *m, const float *x, int n, float *logits, core_fail *f);
/* The engine's explain pass over n inputs in calls of at most the engine's
 * chunk (never the warm-up's timed choice: the same request must give the
 * same bits everywhere). Returns 0, or -1 with f (500). */
int core_explain_pass(const struct core_model *m, const float *x, int n, int target, int guided, float *grad,
                      float *logits, int *targets, core_fail *f);
/* Images per engine call for m (the warm-up's choice, else the engine's). */
int core_model_chunk(const struct core_model *m);
/* Forward passes of zeros at batch 1 and max_batch (twice each: libtorch
 * optimises a TorchScript graph on its first runs). For an engine with
 * tune_chunk it also times batches of 1, 2, 4, ... up to max_batch and sets
 * m->chunk to the size that costs least per image (the smallest within 5% of
 * the best): a CNN's cost per image can jump past some batch size (cache, or
 * libtorch's choice of convolution), and where depends on the CPU. 0, or -1
 * with f. */
int core_model_warm(struct core_model *m, int max_batch, core_fail *f);
/* 1 when m has visualizable layers (a CNN's `features`). */
int core_model_has_layers(const struct core_model *m);

#endif
