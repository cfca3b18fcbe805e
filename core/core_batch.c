/* core_batch.c -- gather the parts' inputs into one buffer, one forward pass, scatter the logits back. */
#include "core_batch.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "core_engine.h"

int core_batch_forward(const core_model *m, core_batch_part *parts, int n, double *infer_s, core_fail *f) {
    size_t nin = (size_t)m->channels * m->height * m->width, k = (size_t)m->n_classes, rows = 0;
    *infer_s = 0;
    for (int i = 0; i < n; i++) rows += (size_t)parts[i].rows;
    if (n == 1) {
        /* Nothing to gather: the part's own buffers. */
        double t = clock_now();
        int rc = core_forward(m, parts[0].x, parts[0].rows, parts[0].logits, f);
        *infer_s = clock_now() - t;
        return rc;
    }
    float *x = malloc(rows * nin * sizeof *x), *z = malloc(rows * k * sizeof *z);
    int rc = -1;
    if (!x || !z) {
        core_failf(f, CORE_E_NOMEM, "out of memory for a batch of %zu images", rows);
        goto done;
    }
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        memcpy(x + o * nin, parts[i].x, (size_t)parts[i].rows * nin * sizeof *x);
        o += (size_t)parts[i].rows;
    }
    double t = clock_now();
    if (core_forward(m, x, (int)rows, z, f)) goto done;
    *infer_s = clock_now() - t;
    o = 0;
    for (int i = 0; i < n; i++) {
        memcpy(parts[i].logits, z + o * k, (size_t)parts[i].rows * k * sizeof *z);
        o += (size_t)parts[i].rows;
    }
    rc = 0;
done:
    free(x);
    free(z);
    return rc;
}
