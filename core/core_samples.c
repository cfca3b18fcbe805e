/* core_samples.c -- the Fashion-MNIST test set as sample images, and the test images a model gets wrong. */
#include "core_samples.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "core_batch.h"
#include "core_input.h"
#include "idx.h"
#include "img.h"

const char *const core_samples_class_names[CORE_SAMPLES_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

struct core_samples {
    char *dir;
    pthread_mutex_t lock;  /* held while the files are read */
    _Atomic(int) loaded;   /* set (release) once set, images and labels are valid */
    idx_array images, labels;
    core_sample_set set;
};

/* ==== The test set ==== */

core_samples *core_samples_new(const char *dir) {
    core_samples *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->dir = strdup(dir ? dir : "");
    if (!s->dir) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void core_samples_free(core_samples *s) {
    if (!s) return;
    idx_free(&s->images);
    idx_free(&s->labels);
    pthread_mutex_destroy(&s->lock);
    free(s->dir);
    free(s);
}

/* dir/base.gz, else dir/base (the Debian package ships .gz; a user's copy may be unpacked).
 * Returns 0 with the path in out, or -1 when neither exists. */
static int find_file(const char *dir, const char *base, char *out, size_t outlen) {
    struct stat st;
    snprintf(out, outlen, "%s/%s.gz", dir, base);
    if (!stat(out, &st) && S_ISREG(st.st_mode)) return 0;
    snprintf(out, outlen, "%s/%s", dir, base);
    return !stat(out, &st) && S_ISREG(st.st_mode) ? 0 : -1;
}

/* Read both files into s; with s->lock held. */
static int load(core_samples *s, core_fail *f) {
    char ip[4096], lp[4096], err[256];
    struct stat st;
    if (!s->dir[0] || stat(s->dir, &st) || !S_ISDIR(st.st_mode))
        return core_failf(f, CORE_E_NOT_FOUND,
                          "no sample images: the Fashion-MNIST folder '%s' does not exist (install the Debian "
                          "package dataset-fashion-mnist, or point --samples / LOUPE_SAMPLES at a folder)",
                          s->dir);
    if (find_file(s->dir, "t10k-images-idx3-ubyte", ip, sizeof ip) ||
        find_file(s->dir, "t10k-labels-idx1-ubyte", lp, sizeof lp))
        return core_failf(f, CORE_E_NOT_FOUND,
                          "no sample images: '%s' holds no t10k-images-idx3-ubyte(.gz) and "
                          "t10k-labels-idx1-ubyte(.gz) (the Fashion-MNIST test set)",
                          s->dir);
    if (idx_read(ip, 3, &s->images, err, sizeof err))
        return core_failf(f, CORE_E_INTERNAL, "the test images could not be read: %s", err);
    if (idx_read(lp, 1, &s->labels, err, sizeof err)) {
        idx_free(&s->images);
        return core_failf(f, CORE_E_INTERNAL, "the test labels could not be read: %s", err);
    }
    int bad = s->images.n != s->labels.n || !s->images.n;
    for (int i = 0; !bad && i < s->labels.n; i++) bad = s->labels.data[i] >= CORE_SAMPLES_CLASSES;
    if (bad) {
        idx_free(&s->images);
        idx_free(&s->labels);
        return core_failf(f, CORE_E_INTERNAL, "the test set in '%s' is not Fashion-MNIST's: %s", s->dir,
                          "image and label counts differ, or a label is not in 0..9");
    }
    s->set = (core_sample_set){s->images.n, s->images.rows, s->images.cols, s->images.data, s->labels.data};
    return 0;
}

int core_samples_get(core_samples *s, const core_sample_set **set, core_fail *f) {
    *set = NULL;
    if (!atomic_load_explicit(&s->loaded, memory_order_acquire)) {
        pthread_mutex_lock(&s->lock);
        int rc = atomic_load_explicit(&s->loaded, memory_order_relaxed) ? 0 : load(s, f);
        if (!rc) atomic_store_explicit(&s->loaded, 1, memory_order_release);
        pthread_mutex_unlock(&s->lock);
        if (rc) return -1;
    }
    *set = &s->set;
    return 0;
}

/* splitmix64: a seeded stream whose every seed (0 included) is a good one. */
static uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int core_samples_pick(const core_sample_set *set, int n, uint64_t seed, int cls, int *idx) {
    int *pool = malloc((size_t)set->n * sizeof *pool);
    if (!pool) return -1;
    int m = 0;
    for (int i = 0; i < set->n; i++)
        if (cls < 0 || set->labels[i] == cls) pool[m++] = i;
    if (n > m) n = m;
    /* The first n steps of a Fisher-Yates shuffle of the candidates. */
    uint64_t st = seed;
    for (int i = 0; i < n; i++) {
        int j = i + (int)(next_u64(&st) % (uint64_t)(m - i));
        int t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
        idx[i] = pool[i];
    }
    free(pool);
    return n;
}

/* ==== Mistakes ==== */

void core_mistakes_free(core_mistakes *mk) {
    if (!mk) return;
    free(mk->index);
    free(mk->predicted);
    free(mk->prob);
    free(mk->prob_true);
    free(mk);
}

const core_mistakes *core_mistakes_cached(const core_model *m) {
    return atomic_load_explicit(&((core_model *)m)->mistakes, memory_order_acquire);
}

/* Softmax probabilities of classes a and b of logits [k]. */
static void two_probs(const float *logits, int k, int a, int b, float *pa, float *pb) {
    float mx = logits[0];
    for (int c = 1; c < k; c++) mx = logits[c] > mx ? logits[c] : mx;
    double sum = 0;
    for (int c = 0; c < k; c++) sum += exp((double)logits[c] - mx);
    *pa = (float)(exp((double)logits[a] - mx) / sum);
    *pb = (float)(exp((double)logits[b] - mx) / sum);
}

#define CHUNK 256 /* images per forward pass */

/* Classify every image of set with m; the wrong ones go into mk. */
static int compute(const core_model *m, const core_sample_set *set, core_mistakes *mk, core_fail *f) {
    size_t dim = (size_t)m->channels * m->height * m->width;
    float *x = malloc((size_t)CHUNK * dim * sizeof *x);
    float *logits = malloc((size_t)CHUNK * m->n_classes * sizeof *logits);
    core_input in;
    int rc = -1, have_in = !core_input_alloc(m, &in);
    int cap = 64;
    mk->index = malloc((size_t)cap * sizeof *mk->index);
    mk->predicted = malloc((size_t)cap * sizeof *mk->predicted);
    mk->prob = malloc((size_t)cap * sizeof *mk->prob);
    mk->prob_true = malloc((size_t)cap * sizeof *mk->prob_true);
    if (!x || !logits || !have_in || !mk->index || !mk->predicted || !mk->prob || !mk->prob_true) {
        core_failf(f, CORE_E_NOMEM, "out of memory for the test set's forward passes");
        goto out;
    }
    img_limits lim = img_default_limits();
    size_t px = (size_t)set->rows * set->cols;
    for (int start = 0; start < set->n; start += CHUNK) {
        int rows = set->n - start < CHUNK ? set->n - start : CHUNK;
        for (int i = 0; i < rows; i++) {
            uint8_t *png = NULL;
            size_t len = 0;
            char msg[256];
            core_err_kind kind;
            /* Through PNG, as the page uploads it: the very preprocessing of a click. */
            if (img_encode_png(set->images + (size_t)(start + i) * px, set->cols, set->rows, 1, &png, &len)) {
                core_failf(f, CORE_E_NOMEM, "out of memory encoding test image %d", start + i);
                goto out;
            }
            int bad = core_input_decode(m, &lim, png, len, IMG_INVERT_FALSE, &in, &kind, msg, sizeof msg);
            free(png);
            if (bad) {
                core_failf(f, kind, "test image %d: %s", start + i, msg);
                goto out;
            }
            core_input_normalise(m, &in);
            memcpy(x + (size_t)i * dim, in.x, dim * sizeof *x);
        }
        core_batch_part part = {x, rows, logits};
        double infer_s = 0;
        if (core_batch_forward(m, &part, 1, &infer_s, f)) goto out;
        for (int i = 0; i < rows; i++) {
            const float *l = logits + (size_t)i * m->n_classes;
            int best = 0, truth = set->labels[start + i];
            for (int c = 1; c < m->n_classes; c++)
                if (l[c] > l[best]) best = c;
            if (best == truth) continue;
            if (mk->count == cap) {
                cap *= 2;
                int *a = realloc(mk->index, (size_t)cap * sizeof *a);
                if (a) mk->index = a;
                int *b = realloc(mk->predicted, (size_t)cap * sizeof *b);
                if (b) mk->predicted = b;
                float *c = realloc(mk->prob, (size_t)cap * sizeof *c);
                if (c) mk->prob = c;
                float *d = realloc(mk->prob_true, (size_t)cap * sizeof *d);
                if (d) mk->prob_true = d;
                if (!a || !b || !c || !d) {
                    core_failf(f, CORE_E_NOMEM, "out of memory for the list of mistakes");
                    goto out;
                }
            }
            mk->index[mk->count] = start + i;
            mk->predicted[mk->count] = best;
            two_probs(l, m->n_classes, best, truth, &mk->prob[mk->count], &mk->prob_true[mk->count]);
            mk->count++;
        }
    }
    mk->total = set->n;
    rc = 0;
out:
    if (have_in) core_input_free(&in);
    free(x);
    free(logits);
    return rc;
}

int core_mistakes_get(core_model *m, const core_sample_set *set, const core_mistakes **out, core_fail *f) {
    *out = core_mistakes_cached(m);
    if (*out) return 0;
    if (m->n_classes != CORE_SAMPLES_CLASSES)
        return core_failf(f, CORE_E_UNPROCESSABLE,
                          "model '%s' has %d classes, the Fashion-MNIST test set 10: its mistakes cannot be counted",
                          m->name, m->n_classes);
    double t0 = clock_now();
    core_mistakes *mk = calloc(1, sizeof *mk);
    if (!mk) return core_failf(f, CORE_E_NOMEM, "out of memory");
    if (compute(m, set, mk, f)) {
        core_mistakes_free(mk);
        return -1;
    }
    mk->seconds = clock_now() - t0;
    /* Two first calls may race: the first result stays, the other is dropped. */
    core_mistakes *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&m->mistakes, &expected, mk, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        core_mistakes_free(mk);
        mk = expected;
    }
    *out = mk;
    return 0;
}
