/* train_mlp.c -- `loupe train-mlp`: train a from-scratch MLP on Fashion-MNIST into a model folder. */
#define _POSIX_C_SOURCE 200809L
#include "clock.h"
#include "train_cli.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blas_env.h"
#include "fmnist.h"
#include "metrics.h"
#include "mlp.h"
#include "model_dir.h"
#include "rng.h"

#define MAX_CHECKPOINTS 64

typedef struct {
    const char *data_dir;
    const char *out;
    int hidden[MLP_MAX_LAYERS];
    int n_hidden;
    mlp_act act;
    mlp_init init;
    float lr, momentum;
    int batch, epochs;
    uint64_t seed, split_seed;
    int checkpoints[MAX_CHECKPOINTS];
    int n_checkpoints;
    int threads;
    fm_split_kind split;
    int keep_last, keep_going, train_limit, quiet, dense;
    int average_from;  /* first epoch of the weight average; 0 = no average, -1 = half-way */
} train_opts;

static void usage(FILE *f) {
    fprintf(f,
        "usage: loupe train-mlp [options]\n"
        "\n"
        "Train a multilayer perceptron written from scratch in C on Fashion-MNIST with\n"
        "mini-batch SGD and softmax cross-entropy, and write a model folder (model.json,\n"
        "weights.safetensors, history.json, metrics.json) that `loupe serve` can load.\n"
        "The folder keeps the epoch with the best validation accuracy (see --keep-last).\n"
        "\n"
        "options:\n"
        "  --out DIR            model folder to write (default models/mlp-<activation>)\n"
        "  --data DIR           Fashion-MNIST IDX files (default %s)\n"
        "  --hidden LIST        hidden layer widths, comma-separated (default 256,128,64,32)\n"
        "  --activation NAME    hidden activation: sigmoid, tanh, relu, linear (default relu)\n"
        "  --init NAME          weight init: zero, uniform, normal, xavier, he, default\n"
        "                       (default: he for relu, xavier otherwise)\n"
        "  --lr X               learning rate, fixed (default 0.1)\n"
        "  --momentum X         SGD momentum in [0,1) (default 0: plain SGD, the seed's recipe)\n"
        "  --batch N            mini-batch size (default 32)\n"
        "  --epochs N           epochs (default 100)\n"
        "  --seed N             seed for weight init and batch order (default 1); the same\n"
        "                       seed and options give bit-identical weights\n"
        "  --split NAME         default: official 60k train -> 54k train + 6k validation, official\n"
        "                       10k test; seed: the seed report's split of the official 60k\n"
        "                       (6,000 test, 0.11 of the rest validation, 48,060 train)\n"
        "  --split-seed N       seed of the train/validation/test shuffle (default 0), kept apart\n"
        "                       from --seed so runs with several seeds share one split\n"
        "  --checkpoint-at LIST epochs whose weights are also saved, comma-separated, each as a\n"
        "                       model folder DIR/checkpoints/epoch-<N> (e.g. 50,100)\n"
        "  --average-from N     from epoch N on, also keep the running mean of the end-of-epoch\n"
        "                       weights (stochastic weight averaging; fixed-rate SGD swings\n"
        "                       around a minimum and the mean sits nearer its centre) and\n"
        "                       count it as a candidate for the best validation accuracy;\n"
        "                       the training itself is unchanged (default: half-way,\n"
        "                       epochs/2 + 1; 0 turns it off)\n"
        "  --keep-last          keep the last epoch's weights instead of the best validation\n"
        "                       candidate\n"
        "  --keep-going         do not stop when the loss stops being finite (the seed's behaviour)\n"
        "  --threads N          training threads (default: the number of cores); any number\n"
        "                       gives bit-identical weights\n"
        "  --dense              compute every layer with dense BLAS GEMMs; by default the\n"
        "                       first layer, and every layer after a relu, skip the products\n"
        "                       with inputs that are exactly 0 (same model up to rounding)\n"
        "                       on AVX-512 or AVX2 kernels (LOUPE_MLP_KERNELS forces one)\n"
        "  --train-limit N      use only the first N training examples (quick runs, tests)\n"
        "  --quiet              no progress bar, only one line per epoch\n"
        "  --help               this text\n",
        FMNIST_DEFAULT_DIR);
}

/* Parse "a,b,c" positive ints into out; returns the count or -1. */
static int parse_int_list(const char *s, int *out, int cap) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > (1 << 20) || n >= cap) return -1;
        out[n++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return n;
}

static int parse_opts(int argc, char **argv, train_opts *o) {
    enum { O_OUT = 1000, O_DATA, O_HIDDEN, O_ACT, O_INIT, O_LR, O_MOM, O_BATCH, O_EPOCHS, O_SEED,
           O_SPLIT, O_SPLIT_SEED, O_CKPT, O_KEEP_LAST, O_KEEP_GOING, O_THREADS, O_LIMIT, O_QUIET, O_HELP,
           O_AVG, O_DENSE };
    static const struct option longopts[] = {
        {"out", required_argument, 0, O_OUT}, {"data", required_argument, 0, O_DATA},
        {"hidden", required_argument, 0, O_HIDDEN}, {"activation", required_argument, 0, O_ACT},
        {"init", required_argument, 0, O_INIT}, {"lr", required_argument, 0, O_LR},
        {"momentum", required_argument, 0, O_MOM}, {"batch", required_argument, 0, O_BATCH},
        {"epochs", required_argument, 0, O_EPOCHS}, {"seed", required_argument, 0, O_SEED},
        {"split", required_argument, 0, O_SPLIT}, {"split-seed", required_argument, 0, O_SPLIT_SEED},
        {"checkpoint-at", required_argument, 0, O_CKPT}, {"keep-last", no_argument, 0, O_KEEP_LAST},
        {"keep-going", no_argument, 0, O_KEEP_GOING}, {"threads", required_argument, 0, O_THREADS},
        {"train-limit", required_argument, 0, O_LIMIT}, {"quiet", no_argument, 0, O_QUIET},
        {"average-from", required_argument, 0, O_AVG}, {"dense", no_argument, 0, O_DENSE},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->data_dir = FMNIST_DEFAULT_DIR;
    int def_hidden[] = {256, 128, 64, 32};
    memcpy(o->hidden, def_hidden, sizeof def_hidden);
    o->n_hidden = 4;
    o->act = MLP_ACT_RELU;
    o->init = MLP_INIT_DEFAULT;
    o->lr = 0.1f;
    o->batch = 32;
    o->epochs = 100;
    o->seed = 1;
    o->split = FM_SPLIT_DEFAULT;
    o->average_from = -1;
    optind = 1;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_OUT: o->out = optarg; break;
        case O_DATA: o->data_dir = optarg; break;
        case O_HIDDEN:
            o->n_hidden = parse_int_list(optarg, o->hidden, MLP_MAX_LAYERS - 1);
            if (o->n_hidden < 0) { fprintf(stderr, "train-mlp: --hidden wants widths like 256,128,64,32, not '%s'\n", optarg); return -1; }
            break;
        case O_ACT:
            if (mlp_act_parse(optarg, &o->act)) { fprintf(stderr, "train-mlp: unknown --activation '%s' (sigmoid, tanh, relu, linear)\n", optarg); return -1; }
            break;
        case O_INIT:
            if (mlp_init_parse(optarg, &o->init)) { fprintf(stderr, "train-mlp: unknown --init '%s' (zero, uniform, normal, xavier, he, default)\n", optarg); return -1; }
            break;
        case O_LR:
            o->lr = strtof(optarg, &end);
            if (*end || !(o->lr > 0.0f) || !isfinite(o->lr)) { fprintf(stderr, "train-mlp: --lr must be a positive number, not '%s'\n", optarg); return -1; }
            break;
        case O_MOM:
            o->momentum = strtof(optarg, &end);
            if (*end || !(o->momentum >= 0.0f && o->momentum < 1.0f)) { fprintf(stderr, "train-mlp: --momentum must be in [0,1), not '%s'\n", optarg); return -1; }
            break;
        case O_BATCH: case O_EPOCHS: case O_THREADS: case O_LIMIT: {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 100000000) { fprintf(stderr, "train-mlp: %s wants a positive integer, not '%s'\n", argv[optind - 1], optarg); return -1; }
            if (c == O_BATCH) o->batch = (int)v;
            else if (c == O_EPOCHS) o->epochs = (int)v;
            else if (c == O_THREADS) o->threads = (int)v;
            else o->train_limit = (int)v;
            break;
        }
        case O_SEED: case O_SPLIT_SEED: {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || !*optarg) { fprintf(stderr, "train-mlp: seeds are non-negative integers, not '%s'\n", optarg); return -1; }
            *(c == O_SEED ? &o->seed : &o->split_seed) = v;
            break;
        }
        case O_SPLIT:
            if (fm_split_parse(optarg, &o->split)) { fprintf(stderr, "train-mlp: --split is default or seed, not '%s'\n", optarg); return -1; }
            break;
        case O_CKPT:
            o->n_checkpoints = parse_int_list(optarg, o->checkpoints, MAX_CHECKPOINTS);
            if (o->n_checkpoints < 0) { fprintf(stderr, "train-mlp: --checkpoint-at wants epochs like 50,100, not '%s'\n", optarg); return -1; }
            break;
        case O_AVG: {
            long v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 0 || v > 100000000) { fprintf(stderr, "train-mlp: --average-from wants an epoch (0 = off), not '%s'\n", optarg); return -1; }
            o->average_from = (int)v;
            break;
        }
        case O_KEEP_LAST: o->keep_last = 1; break;
        case O_KEEP_GOING: o->keep_going = 1; break;
        case O_DENSE: o->dense = 1; break;
        case O_QUIET: o->quiet = 1; break;
        case O_HELP: usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) { fprintf(stderr, "train-mlp: unexpected argument '%s'\n", argv[optind]); return -1; }
    if (o->average_from < 0) o->average_from = o->epochs >= 4 ? o->epochs / 2 + 1 : 0;
    return 0;
}

/* ==== Progress ==== */

static void progress(int epoch, int epochs, int done, int total, double t0) {
    double el = clock_now() - t0, rate = done / (el > 1e-9 ? el : 1e-9);
    double eta = (total - done) / (rate > 0 ? rate : 1);
    int width = 30, fill = total ? done * width / total : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '-';
    bar[width] = '\0';
    fprintf(stderr, "\repoch %d/%d [%s] %d/%d batches  %.0f batch/s  ETA %.1fs ", epoch, epochs, bar,
            done, total, rate, eta);
    fflush(stderr);
}

/* ==== The run ==== */

/* The kernels this run trains with: LOUPE_MLP_KERNELS's (or the automatic)
 * choice, or dense with --dense. */
static const char *kernels_used(const train_opts *o) {
    return mlp_kernels_name(o->dense ? MLP_KERNELS_DENSE : mlp_kernels_current());
}

static json_t *training_json(const train_opts *o, const fm_splits *d, int epochs_run, int best_epoch,
                             double seconds, const char *stopped) {
    json_t *hidden = json_array(), *ck = json_array();
    for (int i = 0; i < o->n_hidden; i++) json_array_append_new(hidden, json_integer(o->hidden[i]));
    for (int i = 0; i < o->n_checkpoints; i++) json_array_append_new(ck, json_integer(o->checkpoints[i]));
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:f, s:f, s:i, s:i, s:i, s:i, s:I, s:o, s:{s:s, s:I, s:i, s:i, s:i},"
                     " s:b, s:b, s:i, s:s, s:s, s:f, s:s?, s:i}",
                     "recipe", "sgd", "optimizer", o->momentum > 0 ? "sgd+momentum" : "sgd",
                     "hidden", hidden, "activation", mlp_act_name(o->act), "init", mlp_init_name(o->init),
                     "lr", (double)o->lr, "momentum", (double)o->momentum, "batch_size", o->batch,
                     "epochs", o->epochs, "epochs_run", epochs_run, "best_epoch", best_epoch,
                     "seed", (json_int_t)o->seed, "checkpoints", ck,
                     "split", "kind", fm_split_name(o->split), "seed", (json_int_t)o->split_seed,
                     "train", d->train.n, "val", d->val.n, "test", d->test.n,
                     "keep_last", o->keep_last, "keep_going", o->keep_going, "threads",
                     o->threads > 0 ? o->threads : blas_env_cores(), "blas_kernel", blas_env_kernel(),
                     "kernels", kernels_used(o),
                     "seconds", seconds, "stopped", stopped, "average_from", o->average_from);
}

static int write_folder(const char *dir, const char *name, const mlp *net, const train_opts *o,
                        const fm_splits *d, json_t *history, int epochs_run, int best_epoch,
                        double seconds, const char *stopped) {
    eval_result r;
    char err[512];
    if (metrics_eval(net, &d->test, &r)) { fprintf(stderr, "train-mlp: out of memory evaluating\n"); return -1; }
    json_t *metrics = metrics_json(&r);
    json_t *training = training_json(o, d, epochs_run, best_epoch, seconds, stopped);
    int rc = !metrics || !training ? -1 : model_dir_write(dir, name, net, training, history, metrics, err, sizeof err);
    if (rc) fprintf(stderr, "train-mlp: %s\n", metrics && training ? err : "out of memory");
    else fprintf(stderr, "wrote %s (test accuracy %.2f%%)\n", dir, 100.0 * r.accuracy);
    json_decref(metrics);
    json_decref(training);
    return rc;
}

/* Point rows[] at the images of batch b of the shuffled order; returns how
 * many there are (the last batch may be short). */
static int batch_rows(const fm_set *set, const int *order, int b, int batch, const float **rows) {
    int n = set->n - b * batch < batch ? set->n - b * batch : batch;
    for (int i = 0; i < n; i++) rows[i] = set->x + (size_t)order[b * batch + i] * FMNIST_PIXELS;
    return n;
}

/* Last path component of dir, for the model's name. */
static const char *base_name(const char *dir) {
    const char *end = dir + strlen(dir);
    while (end > dir && end[-1] == '/') end--;
    const char *p = end;
    while (p > dir && p[-1] != '/') p--;
    static char buf[256];
    snprintf(buf, sizeof buf, "%.*s", (int)(end - p), p);
    return buf;
}

/* ==== The phases of a run ==== */

/* Everything one training run holds, from the options to the history. */
typedef struct {
    train_opts o;
    char out_buf[512];         /* the default output folder, when --out is not given */
    char name[256];            /* the model's name: the output folder's last component */
    int tty;                   /* stderr is a terminal: draw the progress bar */
    int threads;               /* training threads */
    fm_splits d;               /* the train, validation and test sets */
    mlp *net;                  /* the weights being trained */
    mlp *best;                 /* the best validation candidate so far */
    mlp *avg;                  /* the running mean of the end-of-epoch weights */
    mlp_trainer *tr;           /* steps net */
    int *order;                /* [d.train.n] training examples in this epoch's order */
    const float **bx;          /* [batch] the batch's rows, where they lie */
    const float **nx;          /* [batch] the next batch's */
    uint8_t *by;               /* [batch] the batch's labels */
    json_t *history;           /* history.json; holds epochs_js and events */
    json_t *epochs_js;         /* one row an epoch */
    json_t *events;            /* what stopped training, if anything */
    rng r;                     /* the batch order's generator */
    int n_batches;             /* batches an epoch */
    double t_start;            /* clock_now() when the first epoch began (s) */
    double best_acc;           /* validation accuracy of best, -1 before any */
    int best_epoch;            /* the epoch of best, 0 before any */
    int best_is_avg;           /* best holds the mean, not an epoch's weights */
    int n_avg;                 /* epochs in the mean */
    int ck;                    /* the next entry of o.checkpoints to write */
    const char *stopped;       /* why training stopped early, or NULL */
} train_run;

/* One epoch's pass over the training set, summed over its batches. */
typedef struct {
    double loss_sum;           /* the examples' losses added up (nats) */
    long correct, seen;        /* examples predicted right before their step, examples stepped on */
    double seconds;            /* wall time of the pass (s) */
} epoch_stats;

/* Parse the options and settle the output folder and model name; 1 after --help, -1 on a bad option. */
static int run_parse(train_run *t, int argc, char **argv) {
    int prc = parse_opts(argc, argv, &t->o);
    if (prc) return prc;
    if (!t->o.out) {
        snprintf(t->out_buf, sizeof t->out_buf, "models/mlp-%s", mlp_act_name(t->o.act));
        t->o.out = t->out_buf;
    }
    snprintf(t->name, sizeof t->name, "%s", base_name(t->o.out));
    return 0;
}

/* Load and split Fashion-MNIST into t->d; -1 (t->d left empty) after printing why not. */
static int run_load(train_run *t) {
    char err[512];
    if (fm_load(t->o.data_dir, t->o.split, t->o.split_seed, t->o.train_limit, &t->d, err, sizeof err)) {
        fprintf(stderr, "train-mlp: %s\n", err);
        return -1;
    }
    return 0;
}

/* Make the networks, trainer, buffers and history, init the weights, print the summary; -1 on failure. */
static int run_build(train_run *t) {
    const train_opts *o = &t->o;
    char err[512];
    int sizes[MLP_MAX_LAYERS + 1];
    sizes[0] = FMNIST_PIXELS;
    for (int i = 0; i < o->n_hidden; i++) sizes[i + 1] = o->hidden[i];
    sizes[o->n_hidden + 1] = FMNIST_CLASSES;
    t->net = mlp_new(o->n_hidden + 1, sizes, o->act, err, sizeof err);
    t->best = mlp_new(o->n_hidden + 1, sizes, o->act, err, sizeof err);
    t->avg = mlp_new(o->n_hidden + 1, sizes, o->act, err, sizeof err);
    t->threads = o->threads > 0 ? o->threads : blas_env_cores();
    mlp_sgd_params sp = {o->lr, o->momentum, o->batch, o->keep_going, t->threads, o->dense};
    t->tr = t->net ? mlp_trainer_new(t->net, sp, err, sizeof err) : NULL;
    t->order = malloc(sizeof(int) * (size_t)t->d.train.n);
    t->bx = malloc(sizeof(*t->bx) * (size_t)o->batch);
    t->nx = malloc(sizeof(*t->nx) * (size_t)o->batch);
    t->by = malloc((size_t)o->batch);
    t->history = json_object();
    t->epochs_js = json_array();
    t->events = json_array();
    if (!t->net || !t->best || !t->avg || !t->tr || !t->order || !t->bx || !t->nx || !t->by || !t->history ||
        !t->epochs_js || !t->events) {
        fprintf(stderr, "train-mlp: %s\n", t->net && t->best && t->avg && t->tr ? "out of memory" : err);
        return -1;
    }
    json_object_set(t->history, "epochs", t->epochs_js);
    json_object_set(t->history, "events", t->events);
    mlp_init_weights(t->net, o->init, o->seed);
    mlp_copy_params(t->best, t->net);

    fprintf(stderr, "train-mlp: %s, hidden", mlp_act_name(o->act));
    for (int i = 0; i < o->n_hidden; i++) fprintf(stderr, "%c%d", i ? ',' : ' ', o->hidden[i]);
    fprintf(stderr, ", %zu parameters; %d train / %d val / %d test (split %s); lr %g, batch %d, "
            "%d epochs; kernels %s, BLAS %s, %d threads\n", mlp_n_params(t->net), t->d.train.n, t->d.val.n,
            t->d.test.n, fm_split_name(o->split), (double)o->lr, o->batch, o->epochs, kernels_used(o),
            blas_env_kernel(), t->threads);
    return 0;
}

/* One SGD pass over the freshly shuffled training set, into s; a non-finite loss stops it (t->stopped). */
static void run_train_epoch(train_run *t, int epoch, epoch_stats *s) {
    const train_opts *o = &t->o;
    const fm_set *train = &t->d.train;
    double t0 = clock_now(), loss_sum = 0.0;
    long correct = 0, seen = 0;
    rng_shuffle(&t->r, t->order, train->n);
    for (int b = 0; b < t->n_batches; b++) {
        int n = batch_rows(train, t->order, b, o->batch, t->bx);
        for (int i = 0; i < n; i++) t->by[i] = train->y[t->order[b * o->batch + i]];
        /* Tell the trainer the next batch, so its rows are fetched during this step. */
        if (b + 1 < t->n_batches)
            mlp_trainer_prefetch(t->tr, t->nx, batch_rows(train, t->order, b + 1, o->batch, t->nx));
        float loss;
        int st = mlp_train_step_rows(t->tr, t->bx, t->by, n, &loss);
        if (st == 1) {
            char msg[400];
            snprintf(msg, sizeof msg, "epoch %d, batch %d of %d: the loss became %s; training stopped "
                     "and the last finite weights were kept. Try a lower --lr (e.g. %g), or "
                     "--keep-going to train on regardless.", epoch, b + 1, t->n_batches,
                     isnan(loss) ? "NaN" : "infinite", (double)o->lr / 10);
            if (t->tty) fputc('\n', stderr);
            fprintf(stderr, "train-mlp: diverged at %s\n", msg);
            json_array_append_new(t->events, json_pack("{s:s, s:i, s:i, s:s}", "kind", "diverged",
                                                       "epoch", epoch, "batch", b + 1, "message", msg));
            t->stopped = "diverged";
            break;
        }
        loss_sum += (double)loss * n;
        seen += n;
        /* Training accuracy as the batches go, from the logits the step computed
         * (before its update), as Keras and the seed's loop report it: free. */
        const float *z = mlp_trainer_logits(t->tr);
        for (int i = 0; i < n; i++) {
            const float *zi = z + (size_t)i * FMNIST_CLASSES;
            int bi = 0;
            for (int j = 1; j < FMNIST_CLASSES; j++) bi = zi[j] > zi[bi] ? j : bi;
            correct += bi == t->by[i];
        }
        if (t->tty && (b % 64 == 0 || b == t->n_batches - 1))
            progress(epoch, o->epochs, b + 1, t->n_batches, t0);
    }
    s->seconds = clock_now() - t0;
    s->loss_sum = loss_sum;
    s->correct = correct;
    s->seen = seen;
}

/* Fold the epoch's weights into the running mean; *avg_acc its val accuracy (NAN if none); -1 on OOM. */
static int run_update_average(train_run *t, int epoch, double *avg_acc) {
    *avg_acc = NAN;
    if (t->o.average_from > 0 && epoch >= t->o.average_from && !t->stopped && mlp_params_finite(t->net)) {
        t->n_avg++;
        if (t->n_avg == 1) mlp_copy_params(t->avg, t->net);
        else mlp_lerp_params(t->avg, t->net, 1.0f / (float)t->n_avg);
        eval_result av_r;
        if (metrics_eval(t->avg, &t->d.val, &av_r)) {
            fprintf(stderr, "train-mlp: out of memory evaluating\n");
            return -1;
        }
        *avg_acc = av_r.accuracy;
    }
    return 0;
}

/* Copy the epoch's weights, or the mean, into t->best when it beats the best validation accuracy. */
static void run_keep_best(train_run *t, int epoch, const eval_result *va_r, double avg_acc) {
    if (va_r->accuracy > t->best_acc && isfinite(va_r->loss)) {
        t->best_acc = va_r->accuracy;
        t->best_epoch = epoch;
        t->best_is_avg = 0;
        mlp_copy_params(t->best, t->net);
    }
    if (avg_acc > t->best_acc) {
        t->best_acc = avg_acc;
        t->best_epoch = epoch;
        t->best_is_avg = 1;
        mlp_copy_params(t->best, t->avg);
    }
}

/* Write OUT/checkpoints/epoch-<N> when --checkpoint-at names this epoch; -1 after printing why not. */
static int run_checkpoint(train_run *t, int epoch) {
    const train_opts *o = &t->o;
    while (t->ck < o->n_checkpoints && o->checkpoints[t->ck] < epoch) t->ck++;
    if (t->ck < o->n_checkpoints && o->checkpoints[t->ck] == epoch) {
        char dir[600], cname[300];
        snprintf(dir, sizeof dir, "%s/checkpoints/epoch-%d", o->out, epoch);
        snprintf(cname, sizeof cname, "%s-epoch-%d", t->name, epoch);
        json_object_set_new(t->history, "best_epoch", json_integer(t->best_epoch));
        if (write_folder(dir, cname, t->net, o, &t->d, t->history, epoch, epoch, clock_now() - t->t_start,
                         t->stopped))
            return -1;
    }
    return 0;
}

/* Validate the epoch's weights, log the epoch, keep the best candidate, checkpoint; -1 on failure. */
static int run_end_epoch(train_run *t, int epoch, const epoch_stats *s) {
    const train_opts *o = &t->o;
    eval_result va_r;
    double train_acc = (double)s->correct / (s->seen ? s->seen : 1);
    if (metrics_eval(t->net, &t->d.val, &va_r)) {
        fprintf(stderr, "train-mlp: out of memory evaluating\n");
        return -1;
    }
    double train_loss = s->loss_sum / (s->seen ? s->seen : 1);
    if (!mlp_params_finite(t->net) && !o->keep_going) {
        if (!t->stopped)
            json_array_append_new(t->events, json_pack("{s:s, s:i, s:s}", "kind", "diverged", "epoch", epoch,
                                                       "message", "weights stopped being finite"));
        t->stopped = "diverged";
    }
    double avg_acc;
    if (run_update_average(t, epoch, &avg_acc)) return -1;
    json_array_append_new(t->epochs_js, json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:f}", "epoch", epoch,
        "train_loss", metrics_number(train_loss), "train_accuracy", metrics_number(train_acc),
        "val_loss", metrics_number(va_r.loss), "val_accuracy", metrics_number(va_r.accuracy),
        "avg_val_accuracy", metrics_number(avg_acc), "seconds", s->seconds));
    if (t->tty) fputc('\r', stderr);
    fprintf(stderr, "epoch %3d/%d  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%%  %.2fs%s\n",
            epoch, o->epochs, train_loss, 100 * train_acc, va_r.loss, 100 * va_r.accuracy, s->seconds,
            t->tty ? "                         " : "");
    run_keep_best(t, epoch, &va_r, avg_acc);
    return run_checkpoint(t, epoch);
}

/* The epoch loop: train and validate until the last epoch or a divergence; -1 on failure. */
static int run_epochs(train_run *t) {
    rng_seed(&t->r, t->o.seed ^ 0xba7c4ull);
    for (int i = 0; i < t->d.train.n; i++) t->order[i] = i;
    t->n_batches = (t->d.train.n + t->o.batch - 1) / t->o.batch;
    t->best_acc = -1.0;
    t->t_start = clock_now();
    for (int epoch = 1; epoch <= t->o.epochs && !t->stopped; epoch++) {
        epoch_stats s;
        run_train_epoch(t, epoch, &s);
        mlp_trainer_sync(t->tr); /* the network now holds the trained weights */
        if (t->stopped && s.seen == 0) break;
        if (run_end_epoch(t, epoch, &s)) return -1;
    }
    return 0;
}

/* Pick the weights to keep (best candidate, or last with --keep-last) and write the model folder. */
static int run_write_model(train_run *t) {
    const train_opts *o = &t->o;
    int epochs_run = (int)json_array_size(t->epochs_js);
    /* After a divergence net holds the last finite weights (the failed step changed nothing). */
    const mlp *keep = o->keep_last || t->best_epoch == 0 ? t->net : t->best;
    int kept_epoch = keep == t->net ? epochs_run : t->best_epoch;
    int kept_avg = keep == t->best && t->best_is_avg;
    json_object_set_new(t->history, "best_epoch", json_integer(t->best_epoch));
    json_object_set_new(t->history, "kept_epoch", json_integer(kept_epoch));
    json_object_set_new(t->history, "kept", json_pack("{s:s, s:i, s:o}", "weights", kept_avg ? "average" : "epoch",
                                                      "epoch", kept_epoch, "average_from",
                                                      kept_avg ? json_integer(o->average_from) : json_null()));
    if (kept_avg)
        fprintf(stderr, "keeping the mean of the weights of epochs %d-%d (best validation accuracy, %.2f%%)\n",
                o->average_from, kept_epoch, 100 * t->best_acc);
    else
        fprintf(stderr, "keeping the weights of epoch %d%s\n", kept_epoch,
                keep == t->best ? " (best validation accuracy)" : "");
    json_object_set_new(t->history, "stopped", t->stopped ? json_string(t->stopped) : json_null());
    return write_folder(o->out, t->name, keep, o, &t->d, t->history, epochs_run, kept_epoch,
                        clock_now() - t->t_start, t->stopped);
}

/* Free what run_load and run_build made (what they did not make is NULL or empty). */
static void run_free(train_run *t) {
    json_decref(t->history);
    json_decref(t->epochs_js);
    json_decref(t->events);
    free(t->order);
    free((void *)t->bx);
    free((void *)t->nx);
    free(t->by);
    mlp_trainer_free(t->tr);
    mlp_free(t->net);
    mlp_free(t->best);
    mlp_free(t->avg);
    fm_splits_free(&t->d);
}

/* Exit status: 0 done or --help, 1 failure, 2 bad option, 3 diverged (the folder written all the same). */
int train_mlp_main(int argc, char **argv) {
    train_run t;
    memset(&t, 0, sizeof t);
    int prc = run_parse(&t, argc, argv);
    if (prc) return prc > 0 ? 0 : 2;
    /* The trainer's own team splits each GEMM; BLAS itself runs one thread per call. */
    blas_env_set_threads(1);
    t.tty = !t.o.quiet && isatty(fileno(stderr));
    if (run_load(&t)) return 1;
    int rc = 1;
    if (!run_build(&t) && !run_epochs(&t) && !run_write_model(&t)) rc = t.stopped ? 3 : 0;
    run_free(&t);
    return rc;
}
