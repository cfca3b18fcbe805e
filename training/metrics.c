/* metrics.c -- evaluation and the metrics.json document. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EVAL_BATCH 500

int metrics_eval(const mlp *net, const fm_set *set, eval_result *out) {
    memset(out, 0, sizeof *out);
    int k = mlp_n_outputs(net);
    mlp_scratch *s = mlp_scratch_new(net, EVAL_BATCH);
    float *logits = malloc(sizeof(float) * EVAL_BATCH * (size_t)k);
    if (!s || !logits || k != FMNIST_CLASSES) {
        mlp_scratch_free(s);
        free(logits);
        return -1;
    }
    double loss = 0.0;
    long correct = 0;
    for (int at = 0; at < set->n; at += EVAL_BATCH) {
        int n = set->n - at < EVAL_BATCH ? set->n - at : EVAL_BATCH;
        mlp_forward(net, s, set->x + (size_t)at * FMNIST_PIXELS, n, logits);
        loss += mlp_xent(logits, set->y + at, n, k) * n;
        for (int r = 0; r < n; r++) {
            const float *z = logits + (size_t)r * k;
            int best = 0;
            for (int j = 1; j < k; j++) best = z[j] > z[best] ? j : best;
            out->confusion[set->y[at + r]][best]++;
            correct += best == set->y[at + r];
        }
    }
    out->n = set->n;
    out->loss = set->n ? loss / set->n : 0.0;
    out->accuracy = set->n ? (double)correct / set->n : 0.0;
    mlp_scratch_free(s);
    free(logits);
    return 0;
}

json_t *metrics_number(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

typedef struct {
    int t, p;
    long count;
} pair;

static int cmp_pair(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    if (x->t != y->t) return x->t - y->t;
    return x->p - y->p;
}

json_t *metrics_json(const eval_result *r) {
    enum { K = FMNIST_CLASSES };
    json_t *m = json_object();
    json_t *conf = json_array(), *cls = json_array(), *ovr = json_array(), *names = json_array();
    json_t *mc = json_array();
    if (!m || !conf || !cls || !ovr || !names || !mc) goto fail;
    json_object_set_new(m, "test_accuracy", metrics_number(r->accuracy));
    json_object_set_new(m, "test_loss", metrics_number(r->loss));
    json_object_set_new(m, "n", json_integer(r->n));
    for (int i = 0; i < K; i++) json_array_append_new(names, json_string(fmnist_class_names[i]));
    json_object_set_new(m, "classes", names);
    names = NULL;
    long col[K] = {0};
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++) col[p] += r->confusion[t][p];
    for (int t = 0; t < K; t++) {
        json_t *row = json_array();
        long total = 0;
        for (int p = 0; p < K; p++) {
            json_array_append_new(row, json_integer(r->confusion[t][p]));
            total += r->confusion[t][p];
        }
        json_array_append_new(conf, row);
        json_array_append_new(cls, metrics_number(total ? (double)r->confusion[t][t] / total : NAN));
        long tp = r->confusion[t][t], fn = total - tp, fp = col[t] - tp, tn = r->n - tp - fn - fp;
        json_array_append_new(ovr, json_pack("{s:s, s:I, s:I, s:I, s:I}", "class", fmnist_class_names[t],
                                             "tp", (json_int_t)tp, "fp", (json_int_t)fp,
                                             "fn", (json_int_t)fn, "tn", (json_int_t)tn));
    }
    json_object_set_new(m, "confusion", conf);
    json_object_set_new(m, "class_accuracy", cls);
    json_object_set_new(m, "one_vs_rest", ovr);
    pair pairs[K * (K - 1)];
    int np = 0;
    for (int t = 0; t < K; t++)
        for (int p = 0; p < K; p++)
            if (t != p) pairs[np++] = (pair){t, p, r->confusion[t][p]};
    qsort(pairs, (size_t)np, sizeof pairs[0], cmp_pair);
    for (int i = 0; i < 5 && i < np && pairs[i].count > 0; i++)
        json_array_append_new(mc, json_pack("{s:s, s:s, s:I}", "true", fmnist_class_names[pairs[i].t],
                                            "predicted", fmnist_class_names[pairs[i].p],
                                            "count", (json_int_t)pairs[i].count));
    json_object_set_new(m, "most_confused", mc);
    return m;
fail:
    json_decref(m);
    json_decref(conf);
    json_decref(cls);
    json_decref(ovr);
    json_decref(names);
    json_decref(mc);
    return NULL;
}
