/* fmnist.h -- Fashion-MNIST from its IDX files, scaled to [0,1] and split train/validation/test. */
#ifndef LOUPE_FMNIST_H
#define LOUPE_FMNIST_H

#include <stddef.h>
#include <stdint.h>

#define FMNIST_CLASSES 10
#define FMNIST_PIXELS 784
#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

extern const char *const fmnist_class_names[FMNIST_CLASSES];

/* n examples, row-major pixels in [0,1]. Plain data owned by its fm_splits. */
typedef struct {
    int n;
    float *x;    /* [n, 784] */
    uint8_t *y;  /* [n] */
} fm_set;

typedef enum {
    FM_SPLIT_DEFAULT, /* official 60k -> 54k train / 6k validation; official 10k test */
    FM_SPLIT_SEED     /* the seed report's: official 60k -> 6k test, 5,940 validation, 48,060 train */
} fm_split_kind;

typedef struct {
    fm_set train, val, test;
} fm_splits;

const char *fm_split_name(fm_split_kind k);
int fm_split_parse(const char *name, fm_split_kind *out);

/* The split of n official training images: perm (n entries, filled here) lists
 * them as test (the first *n_test; 0 for the default split, whose test set is
 * the official 10k), then validation (*n_val), then training (the rest). */
void fm_split_plan(int n, fm_split_kind kind, uint64_t split_seed, int *perm, int *n_test, int *n_val);

/* Load dir's four files (train-images-idx3-ubyte.gz, ...; .gz optional) and split
 * them with a generator seeded by split_seed: the same seed gives the same split.
 * train_limit > 0 keeps only the first train_limit training examples (quick runs).
 * Returns 0, or -1 with a message in err (out left empty). Free with fm_splits_free. */
int fm_load(const char *dir, fm_split_kind kind, uint64_t split_seed, int train_limit,
            fm_splits *out, char *err, size_t errlen);

void fm_splits_free(fm_splits *s);

#endif
