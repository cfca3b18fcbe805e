/* eval.c -- `loupe eval MODEL_DIR`: recompute an MLP model folder's metrics.json on its test set. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmnist.h"
#include "metrics.h"
#include "mlp.h"
#include "mlp_io.h"
#include "model_dir.h"
#include "train_cli.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: loupe eval MODEL_DIR [options]\n"
        "\n"
        "Evaluate the MLP in MODEL_DIR on the test set of the split it was trained with\n"
        "(model.json's training.split) and rewrite MODEL_DIR/metrics.json.\n"
        "\n"
        "options:\n"
        "  --data DIR        Fashion-MNIST IDX files (default %s)\n"
        "  --split NAME      override the split: default or seed\n"
        "  --split-seed N    override the split's seed\n"
        "  --dry-run         print the metrics, do not write metrics.json\n"
        "  --help            this text\n", FMNIST_DEFAULT_DIR);
}

int eval_main(int argc, char **argv) {
    enum { O_DATA = 1000, O_SPLIT, O_SPLIT_SEED, O_DRY, O_HELP };
    static const struct option longopts[] = {
        {"data", required_argument, 0, O_DATA}, {"split", required_argument, 0, O_SPLIT},
        {"split-seed", required_argument, 0, O_SPLIT_SEED}, {"dry-run", no_argument, 0, O_DRY},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    const char *data = FMNIST_DEFAULT_DIR, *split_arg = NULL, *seed_arg = NULL;
    int dry = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_DATA: data = optarg; break;
        case O_SPLIT: split_arg = optarg; break;
        case O_SPLIT_SEED: seed_arg = optarg; break;
        case O_DRY: dry = 1; break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) { usage(stderr); return 2; }
    const char *dir = argv[optind];

    char path[4200], err[512];
    json_error_t jerr;
    snprintf(path, sizeof path, "%s/model.json", dir);
    json_t *man = json_load_file(path, 0, &jerr);
    if (!man) { fprintf(stderr, "eval: %s: %s (line %d)\n", path, jerr.text, jerr.line); return 1; }
    int rc = 1;
    mlp *net = NULL;
    fm_splits d = {0};
    json_t *metrics = NULL;
    const char *kind = json_string_value(json_object_get(man, "kind"));
    const char *act_name = json_string_value(json_object_get(json_object_get(man, "mlp"), "activation"));
    mlp_act act;
    if (!kind || strcmp(kind, "mlp")) { fprintf(stderr, "eval: %s: kind is not \"mlp\"\n", path); goto done; }
    if (!act_name || mlp_act_parse(act_name, &act)) { fprintf(stderr, "eval: %s: mlp.activation missing or unknown\n", path); goto done; }
    json_t *split = json_object_get(json_object_get(man, "training"), "split");
    fm_split_kind sk = FM_SPLIT_DEFAULT;
    const char *sname = split_arg ? split_arg : json_string_value(json_object_get(split, "kind"));
    if (sname && fm_split_parse(sname, &sk)) { fprintf(stderr, "eval: unknown split '%s'\n", sname); goto done; }
    unsigned long long sseed = seed_arg ? strtoull(seed_arg, NULL, 10)
                                        : (unsigned long long)json_integer_value(json_object_get(split, "seed"));

    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    net = mlp_load(path, act, 0, err, sizeof err);
    if (!net) { fprintf(stderr, "eval: %s\n", err); goto done; }
    if (mlp_n_inputs(net) != FMNIST_PIXELS || mlp_n_outputs(net) != FMNIST_CLASSES) {
        fprintf(stderr, "eval: %s maps %d inputs to %d outputs, not 784 to 10\n", path, mlp_n_inputs(net),
                mlp_n_outputs(net));
        goto done;
    }
    if (fm_load(data, sk, sseed, 0, &d, err, sizeof err)) { fprintf(stderr, "eval: %s\n", err); goto done; }
    eval_result r;
    if (metrics_eval(net, &d.test, &r) || !(metrics = metrics_json(&r))) {
        fprintf(stderr, "eval: out of memory\n");
        goto done;
    }
    printf("%s: test accuracy %.2f%% (%d images, split %s), loss %.4f\n", dir, 100 * r.accuracy, r.n,
           fm_split_name(sk), r.loss);
    if (!dry) {
        snprintf(path, sizeof path, "%s/metrics.json", dir);
        if (model_dir_write_json(path, metrics, err, sizeof err)) { fprintf(stderr, "eval: %s\n", err); goto done; }
    }
    rc = 0;
done:
    json_decref(metrics);
    json_decref(man);
    mlp_free(net);
    fm_splits_free(&d);
    return rc;
}
