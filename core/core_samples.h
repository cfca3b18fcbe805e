/* core_samples.h -- the Fashion-MNIST test set as sample images, and the test images a model gets wrong. */
#ifndef LOUPE_CORE_SAMPLES_H
#define LOUPE_CORE_SAMPLES_H

#include <stdint.h>

#include "core_err.h"
#include "core_reg.h"

#define CORE_SAMPLES_CLASSES 10

/* The dataset's class names in label order (static strings). */
extern const char *const core_samples_class_names[CORE_SAMPLES_CLASSES];

/* The test set, read once from a folder on first use and shared read-only. */
typedef struct core_samples core_samples;

/* One loaded test set: plain data, valid as long as its core_samples. */
typedef struct {
    int n, rows, cols;
    const uint8_t *images;  /* [n, rows, cols] gray, 0 = background */
    const uint8_t *labels;  /* [n] in 0..CORE_SAMPLES_CLASSES-1 */
} core_sample_set;

/* A reader of dir's t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz).
 * Reads nothing yet. Returns NULL on allocation failure; dir is copied. */
core_samples *core_samples_new(const char *dir);
/* Frees the set; accepts NULL. No thread may use s or its sets after. */
void core_samples_free(core_samples *s);

/* The test set, read on the first call (any thread; later calls return the
 * same set at once). Returns 0 with *set borrowed from s, or -1 with f:
 * CORE_E_NOT_FOUND when the folder or its files are missing (tried again on
 * the next call), CORE_E_INTERNAL for files that do not parse. */
int core_samples_get(core_samples *s, const core_sample_set **set, core_fail *f);

/* Up to n distinct indices of set (of class cls, or any when cls < 0) in a
 * random order that depends only on seed and set: the same seed picks the
 * same images. idx holds n ints. Returns how many were written (fewer than n
 * when the class has fewer images), or -1 on allocation failure. */
int core_samples_pick(const core_sample_set *set, int n, uint64_t seed, int cls, int *idx);

/* The test images a model gets wrong, in test-set order. */
typedef struct core_mistakes {
    int total;         /* images classified */
    int count;         /* of which wrong */
    int *index;        /* [count] indices into the test set */
    int *predicted;    /* [count] the model's class */
    float *prob;       /* [count] softmax probability of the predicted class */
    float *prob_true;  /* [count] softmax probability of the true class */
    double seconds;    /* time the computation took */
} core_mistakes;

/* m's mistakes on set: each image is brought to m's input as an uploaded PNG
 * of it with invert=false is (what clicking it on the page sends), in forward
 * passes of m's batcher. The result is kept on m (computed once per model
 * version: a reload loads a new version); later calls return it at once.
 * Returns 0 with *out borrowed from m, or -1 with f (422 when m's classes do
 * not match the dataset's ten). Safe from any number of threads at once. */
int core_mistakes_get(core_model *m, const core_sample_set *set, const core_mistakes **out, core_fail *f);
/* The cached result of m, or NULL when not computed yet. */
const core_mistakes *core_mistakes_cached(const core_model *m);
/* Free a result; accepts NULL (core_reg frees a model's with it). */
void core_mistakes_free(core_mistakes *mk);

#endif
