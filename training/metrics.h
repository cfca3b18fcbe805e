/* metrics.h -- evaluate an MLP on a dataset and describe the result (accuracy, confusion, one-vs-rest). */
#ifndef LOUPE_METRICS_H
#define LOUPE_METRICS_H

#include <jansson.h>

#include "fmnist.h"
#include "mlp.h"

typedef struct {
    int n;
    double loss;      /* mean softmax cross-entropy, nats */
    double accuracy;  /* fraction correct */
    long confusion[FMNIST_CLASSES][FMNIST_CLASSES]; /* [true][predicted] */
} eval_result;

/* Forward the whole set in batches. Returns 0, or -1 when out of memory. */
int metrics_eval(const mlp *net, const fm_set *set, eval_result *out);

/* metrics.json's object: test_accuracy, test_loss, n, confusion, class_accuracy,
 * one_vs_rest [{class, tp, fp, fn, tn}], most_confused [{true, predicted, count}].
 * Returns a new reference, or NULL when out of memory. */
json_t *metrics_json(const eval_result *r);

/* A JSON number for a double, or null when it is not finite (JSON has no NaN). */
json_t *metrics_number(double v);

#endif
