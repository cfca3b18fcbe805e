/* core_batch.h -- the dynamic batcher's forward pass: the inputs of many requests of one model in one call. */
#ifndef LOUPE_CORE_BATCH_H
#define LOUPE_CORE_BATCH_H

#include "core_err.h"
#include "core_reg.h"

/* One request's share of a batch. */
typedef struct {
    const float *x;  /* [rows, C*H*W] the model's input */
    int rows;        /* >= 1 */
    float *logits;   /* [rows, K] written by core_batch_forward */
} core_batch_part;

/* Run the n parts (rows in all: their sum) through m as one forward pass (the
 * engine splits it into calls of its chunk size), each part's logits written
 * where it says. The answer of each row is the one a pass of that row alone
 * gives, up to the rounding of a larger GEMM. *infer_s gets the seconds of
 * the pass. Returns 0, or -1 with f (then no part's logits are valid). */
int core_batch_forward(const core_model *m, core_batch_part *parts, int n, double *infer_s, core_fail *f);

#endif
