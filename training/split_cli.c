/* split_cli.c -- `loupe split`: print the train/validation/test indices a split uses, for other tools. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmnist.h"
#include "train_cli.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: loupe split [--split default|seed] [--split-seed N] [--n 60000]\n"
        "\n"
        "Print as JSON the indices into the official 60,000 training images that\n"
        "`loupe train-mlp` uses for training, validation and test with these options,\n"
        "so other tools (the sklearn comparison) train and test on exactly the same\n"
        "images. For the default split \"test\" is \"t10k\": the official test set.\n");
}

int split_main(int argc, char **argv) {
    enum { O_SPLIT = 1000, O_SEED, O_N, O_HELP };
    static const struct option longopts[] = {{"split", required_argument, 0, O_SPLIT},
                                             {"split-seed", required_argument, 0, O_SEED},
                                             {"n", required_argument, 0, O_N},
                                             {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    fm_split_kind kind = FM_SPLIT_DEFAULT;
    unsigned long long seed = 0;
    long n = 60000;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_SPLIT:
            if (fm_split_parse(optarg, &kind)) { fprintf(stderr, "split: --split is default or seed\n"); return 2; }
            break;
        case O_SEED:
            seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg) { fprintf(stderr, "split: --split-seed wants a non-negative integer\n"); return 2; }
            break;
        case O_N:
            n = strtol(optarg, &end, 10);
            if (*end || n < 10 || n > 10000000) { fprintf(stderr, "split: --n wants 10 to 10000000\n"); return 2; }
            break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int *perm = malloc(sizeof(int) * (size_t)n);
    json_t *doc = json_object(), *lists[3] = {json_array(), json_array(), json_array()};
    if (!perm || !doc || !lists[0] || !lists[1] || !lists[2]) { fprintf(stderr, "split: out of memory\n"); return 1; }
    int n_test, n_val;
    fm_split_plan((int)n, kind, seed, perm, &n_test, &n_val);
    for (int i = 0; i < n; i++)
        json_array_append_new(lists[i < n_test ? 0 : i < n_test + n_val ? 1 : 2], json_integer(perm[i]));
    json_object_set_new(doc, "split", json_string(fm_split_name(kind)));
    json_object_set_new(doc, "split_seed", json_integer((json_int_t)seed));
    json_object_set_new(doc, "train", lists[2]);
    json_object_set_new(doc, "val", lists[1]);
    if (kind == FM_SPLIT_SEED) json_object_set_new(doc, "test", lists[0]);
    else { json_object_set_new(doc, "test", json_string("t10k")); json_decref(lists[0]); }
    json_dumpf(doc, stdout, JSON_COMPACT);
    putchar('\n');
    json_decref(doc);
    free(perm);
    return 0;
}
