/* fmnist.c -- load and split Fashion-MNIST. */
#include "fmnist.h"
#include "errbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idx.h"
#include "rng.h"

const char *const fmnist_class_names[FMNIST_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

const char *fm_split_name(fm_split_kind k) { return k == FM_SPLIT_SEED ? "seed" : "default"; }

int fm_split_parse(const char *name, fm_split_kind *out) {
    if (!strcmp(name, "default")) { *out = FM_SPLIT_DEFAULT; return 0; }
    if (!strcmp(name, "seed")) { *out = FM_SPLIT_SEED; return 0; }
    return -1;
}

void fm_split_plan(int n, fm_split_kind kind, uint64_t split_seed, int *perm, int *n_test, int *n_val) {
    for (int i = 0; i < n; i++) perm[i] = i;
    rng r;
    rng_seed(&r, split_seed ^ 0x5eed5eedull);
    rng_shuffle(&r, perm, n);
    if (kind == FM_SPLIT_SEED) {
        *n_test = n / 10;                                    /* 6,000 of 60,000 */
        *n_val = (int)((double)(n - *n_test) * 0.11 + 0.5);  /* 5,940 of 54,000 */
    } else {
        *n_test = 0;
        *n_val = n / 10;                                     /* 6,000 of 60,000 */
    }
}

/* Read dir/base.gz, or dir/base when there is no .gz. */
static int read_part(const char *dir, const char *base, int dims, idx_array *a, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gz", dir, base);
    if (access(path, R_OK) != 0) snprintf(path, sizeof path, "%s/%s", dir, base);
    return idx_read(path, dims, a, err, errlen);
}

static int read_pair(const char *dir, const char *img, const char *lab, idx_array *x, idx_array *y,
                     char *err, size_t errlen) {
    if (read_part(dir, img, 3, x, err, errlen)) return -1;
    if (read_part(dir, lab, 1, y, err, errlen)) { idx_free(x); return -1; }
    if (x->rows * x->cols != FMNIST_PIXELS) {
        errbuf_set(err, errlen, "%s/%s: images are %dx%d, expected 28x28", dir, img, x->rows, x->cols);
        goto fail;
    }
    if (x->n != y->n) {
        errbuf_set(err, errlen, "%s: %d images but %d labels", dir, x->n, y->n);
        goto fail;
    }
    for (int i = 0; i < y->n; i++) {
        if (y->data[i] >= FMNIST_CLASSES) {
            errbuf_set(err, errlen, "%s/%s: label %d of item %d is not a class 0..9", dir, lab, y->data[i], i);
            goto fail;
        }
    }
    return 0;
fail:
    idx_free(x);
    idx_free(y);
    return -1;
}

/* Fill set with the examples idx[0..n) of (x, y). */
static int gather(fm_set *set, const idx_array *x, const idx_array *y, const int *idx, int n) {
    set->n = n;
    set->x = malloc((size_t)n * FMNIST_PIXELS * sizeof(float));
    set->y = malloc((size_t)n);
    if (!set->x || !set->y) return -1;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = x->data + (size_t)idx[i] * FMNIST_PIXELS;
        float *dst = set->x + (size_t)i * FMNIST_PIXELS;
        for (int j = 0; j < FMNIST_PIXELS; j++) dst[j] = (float)src[j] / 255.0f;
        set->y[i] = y->data[idx[i]];
    }
    return 0;
}

int fm_load(const char *dir, fm_split_kind kind, uint64_t split_seed, int train_limit,
            fm_splits *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    idx_array trx = {0}, try_ = {0}, tex = {0}, tey = {0};
    int *perm = NULL, *ident = NULL;
    if (read_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", &trx, &try_, err, errlen))
        return -1;
    if (kind == FM_SPLIT_DEFAULT &&
        read_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", &tex, &tey, err, errlen))
        goto fail;
    int n = trx.n;
    perm = malloc(sizeof(int) * (size_t)n);
    if (!perm) { errbuf_set(err, errlen, "out of memory"); goto fail; }
    int n_test, n_val;
    fm_split_plan(n, kind, split_seed, perm, &n_test, &n_val);
    int n_train = n - n_test - n_val;
    if (n_train < 1) { errbuf_set(err, errlen, "%s: only %d training images", dir, n); goto fail; }
    if (train_limit > 0 && train_limit < n_train) n_train = train_limit;
    int rc = 0;
    if (kind == FM_SPLIT_SEED) {
        rc |= gather(&out->test, &trx, &try_, perm, n_test);
    } else {
        ident = malloc(sizeof(int) * (size_t)tex.n);
        if (!ident) { errbuf_set(err, errlen, "out of memory"); goto fail; }
        for (int i = 0; i < tex.n; i++) ident[i] = i;
        rc |= gather(&out->test, &tex, &tey, ident, tex.n);
    }
    rc |= gather(&out->val, &trx, &try_, perm + n_test, n_val);
    rc |= gather(&out->train, &trx, &try_, perm + n_test + n_val, n_train);
    if (rc) { errbuf_set(err, errlen, "out of memory for the dataset"); goto fail; }
    free(perm);
    free(ident);
    idx_free(&trx); idx_free(&try_); idx_free(&tex); idx_free(&tey);
    return 0;
fail:
    fm_splits_free(out);
    free(perm);
    free(ident);
    idx_free(&trx); idx_free(&try_); idx_free(&tex); idx_free(&tey);
    return -1;
}

void fm_splits_free(fm_splits *s) {
    if (!s) return;
    fm_set *sets[3] = {&s->train, &s->val, &s->test};
    for (int i = 0; i < 3; i++) {
        free(sets[i]->x);
        free(sets[i]->y);
    }
    memset(s, 0, sizeof *s);
}
