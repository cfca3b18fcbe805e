/* core_engine.c -- the MLP engine (mlp/) and the TorchScript engine (the shim) behind one table of functions. */
#include "core_engine.h"

#include <stdlib.h>

#include "clock.h"
#include "core_reg.h"
#include "errbuf.h"
#include "mlp.h"

/* ==== MLP ==== */

/* Rows per mlp_forward: a scratch of this many rows is a few MB at most. */
#define MLP_CHUNK 256

static int mlp_fwd(const core_model *m, const float *x, int n, float *logits, char *err, size_t errlen) {
    mlp_scratch *s = mlp_scratch_new(m->net, n);
    if (!s) {
        errbuf_set(err, errlen, "out of memory for a batch of %d", n);
        return -1;
    }
    int rc = mlp_forward(m->net, s, x, n, logits);
    mlp_scratch_free(s);
    if (rc) errbuf_set(err, errlen, "the MLP refused a batch of %d", n);
    return rc;
}

/* Rows one at a time (an MLP's input gradient is cheap next to a CNN's); the
 * targets of target < 0 from one forward pass of all rows first. */
static int mlp_explain(const core_model *m, const float *x, int n, int target, int guided, float *grad,
                       float *logits, int *targets, char *err, size_t errlen) {
    int k = m->n_classes, nin = mlp_n_inputs(m->net), rc = -1;
    float *z = logits ? logits : malloc((size_t)n * k * sizeof *z);
    mlp_scratch *s = mlp_scratch_new(m->net, n);
    if (!z || !s) {
        errbuf_set(err, errlen, "out of memory for a batch of %d", n);
        goto done;
    }
    if (mlp_forward(m->net, s, x, n, z)) {
        errbuf_set(err, errlen, "the MLP refused a batch of %d", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int t = target;
        if (t < 0) {
            t = 0;
            for (int j = 1; j < k; j++)
                if (z[(size_t)i * k + j] > z[(size_t)i * k + t]) t = j;
        }
        if (targets) targets[i] = t;
        if (grad && mlp_input_grad_ex(m->net, s, x + (size_t)i * nin, t, guided, grad + (size_t)i * nin, NULL)) {
            errbuf_set(err, errlen, guided ? "guided backprop needs a relu network" : "the gradient pass failed");
            goto done;
        }
    }
    rc = 0;
done:
    if (z != logits) free(z);
    mlp_scratch_free(s);
    return rc;
}

const core_engine core_engine_mlp = {"mlp", 0, MLP_CHUNK, 0, mlp_fwd, mlp_explain};

/* ==== TorchScript ==== */

/* Images per libtorch call at most: a CNN's activations grow with the batch.
 * The warm-up picks the model's own chunk below it (core_model_warm). */
#define TORCH_CHUNK 64

static int torch_fwd(const core_model *m, const float *x, int n, float *logits, char *err, size_t errlen) {
    return lt_forward(m->cnn, x, n, logits, err, errlen) ? -1 : 0;
}

static int torch_explain(const core_model *m, const float *x, int n, int target, int guided, float *grad,
                         float *logits, int *targets, char *err, size_t errlen) {
    return lt_explain_pass(m->cnn, x, n, target, guided, grad, logits, targets, err, errlen) ? -1 : 0;
}

const core_engine core_engine_torch = {"torchscript", 1, TORCH_CHUNK, 1, torch_fwd, torch_explain};

/* ==== Dispatch ==== */

int core_model_chunk(const core_model *m) {
    return m->chunk > 0 && m->chunk < m->engine->chunk ? m->chunk : m->engine->chunk;
}

int core_explain_pass(const core_model *m, const float *x, int n, int target, int guided, float *grad, float *logits,
                      int *targets, core_fail *f) {
    size_t nin = (size_t)m->channels * m->height * m->width, k = (size_t)m->n_classes;
    int chunk = m->engine->chunk; /* fixed: the same request, the same batches, the same bits */
    char err[256] = "";
    for (int b = 0; b < n; b += chunk) {
        int nb = n - b < chunk ? n - b : chunk;
        if (m->engine->explain(m, x + b * nin, nb, target, guided, grad ? grad + b * nin : NULL,
                               logits ? logits + b * k : NULL, targets ? targets + b : NULL, err, sizeof err))
            return core_failf(f, CORE_E_INTERNAL, "the %s pass failed: %s", grad ? "gradient" : "forward", err);
    }
    return 0;
}

int core_forward(const core_model *m, const float *x, int n, float *logits, core_fail *f) {
    const core_engine *e = m->engine;
    int nin = m->channels * m->height * m->width, k = m->n_classes;
    int chunk = core_model_chunk(m);
    char err[256] = "";
    for (int b = 0; b < n; b += chunk) {
        int nb = n - b < chunk ? n - b : chunk;
        if (e->forward(m, x + (size_t)b * nin, nb, logits + (size_t)b * k, err, sizeof err))
            return core_failf(f, CORE_E_INTERNAL, "the forward pass failed: %s", err);
    }
    return 0;
}

int core_model_has_layers(const core_model *m) {
    return m->engine->has_layers;
}

/* The cheapest chunk per image among 1, 2, 4, ... up to max (the smallest
 * within 5% of the best), timed on x/z; best of 3 passes each. */
static int tune_chunk(core_model *m, const float *x, float *z, int max, core_fail *f) {
    double best = 0, cost[16];
    int sizes[16], n = 0;
    for (int b = 1; b <= max && n < 16; b *= 2) sizes[n++] = b;
    for (int i = 0; i < n; i++) {
        double t_min = 0;
        for (int rep = 0; rep < 3; rep++) {
            double t = clock_now();
            if (m->engine->forward(m, x, sizes[i], z, f->msg, sizeof f->msg)) {
                f->kind = CORE_E_INTERNAL;
                return -1;
            }
            t = clock_now() - t;
            if (!rep || t < t_min) t_min = t;
        }
        cost[i] = t_min / sizes[i];
        if (!i || cost[i] < best) best = cost[i];
    }
    for (int i = 0; i < n; i++)
        if (cost[i] <= best * 1.05) {
            m->chunk = sizes[i];
            break;
        }
    return 0;
}

int core_model_warm(core_model *m, int max_batch, core_fail *f) {
    int sizes[2] = {1, max_batch > 1 ? max_batch : 1};
    int cap = m->engine->chunk;
    size_t nin = (size_t)m->channels * m->height * m->width;
    size_t rows = (size_t)(sizes[1] > cap ? sizes[1] : cap);
    float *x = calloc(rows * nin, sizeof *x);
    float *z = malloc(rows * m->n_classes * sizeof *z);
    int rc = x && z ? 0 : core_failf(f, CORE_E_NOMEM, "out of memory for a warm-up batch of %zu", rows);
    for (int i = 0; !rc && i < (sizes[1] > 1 ? 2 : 1); i++)
        for (int rep = 0; !rc && rep < 2; rep++) rc = core_forward(m, x, sizes[i], z, f);
    if (!rc && m->engine->tune_chunk && sizes[1] > 1)
        rc = tune_chunk(m, x, z, sizes[1] < cap ? sizes[1] : cap, f);
    free(x);
    free(z);
    return rc;
}
