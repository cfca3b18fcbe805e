/* train_mlp.c -- `loupe train-mlp`: train a from-scratch MLP on Fashion-MNIST into a model folder. */
#define _POSIX_C_SOURCE 200809L
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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

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
    double el = now_s() - t0, rate = done / (el > 1e-9 ? el : 1e-9);
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
                     "kernels", o->dense ? "dense" : "sparse",
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

int train_mlp_main(int argc, char **argv) {
    train_opts o;
    int prc = parse_opts(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    char outbuf[512];
    if (!o.out) {
        snprintf(outbuf, sizeof outbuf, "models/mlp-%s", mlp_act_name(o.act));
        o.out = outbuf;
    }
    char name[256];
    snprintf(name, sizeof name, "%s", base_name(o.out));
    /* The trainer's own team splits each GEMM; BLAS itself runs one thread per call. */
    blas_env_set_threads(1);
    int tty = !o.quiet && isatty(fileno(stderr));

    char err[512];
    fm_splits d;
    if (fm_load(o.data_dir, o.split, o.split_seed, o.train_limit, &d, err, sizeof err)) {
        fprintf(stderr, "train-mlp: %s\n", err);
        return 1;
    }
    int sizes[MLP_MAX_LAYERS + 1];
    sizes[0] = FMNIST_PIXELS;
    for (int i = 0; i < o.n_hidden; i++) sizes[i + 1] = o.hidden[i];
    sizes[o.n_hidden + 1] = FMNIST_CLASSES;
    int rc = 1;
    mlp *net = mlp_new(o.n_hidden + 1, sizes, o.act, err, sizeof err);
    mlp *best = mlp_new(o.n_hidden + 1, sizes, o.act, err, sizeof err);
    mlp *avg = mlp_new(o.n_hidden + 1, sizes, o.act, err, sizeof err);
    int threads = o.threads > 0 ? o.threads : blas_env_cores();
    mlp_sgd_params sp = {o.lr, o.momentum, o.batch, o.keep_going, threads, o.dense};
    mlp_trainer *tr = net ? mlp_trainer_new(net, sp, err, sizeof err) : NULL;
    int *order = malloc(sizeof(int) * (size_t)d.train.n);
    const float **bx = malloc(sizeof(*bx) * (size_t)o.batch); /* the batch's rows, where they lie */
    const float **nx = malloc(sizeof(*nx) * (size_t)o.batch); /* the next batch's */
    uint8_t *by = malloc((size_t)o.batch);
    json_t *history = json_object(), *epochs_js = json_array(), *events = json_array();
    if (!net || !best || !avg || !tr || !order || !bx || !nx || !by || !history || !epochs_js || !events) {
        fprintf(stderr, "train-mlp: %s\n", net && best && avg && tr ? "out of memory" : err);
        goto done;
    }
    json_object_set(history, "epochs", epochs_js);
    json_object_set(history, "events", events);
    mlp_init_weights(net, o.init, o.seed);
    mlp_copy_params(best, net);

    fprintf(stderr, "train-mlp: %s, hidden", mlp_act_name(o.act));
    for (int i = 0; i < o.n_hidden; i++) fprintf(stderr, "%c%d", i ? ',' : ' ', o.hidden[i]);
    fprintf(stderr, ", %zu parameters; %d train / %d val / %d test (split %s); lr %g, batch %d, "
            "%d epochs; BLAS %s, %d threads\n", mlp_n_params(net), d.train.n, d.val.n, d.test.n,
            fm_split_name(o.split), (double)o.lr, o.batch, o.epochs, blas_env_kernel(),
            threads);

    rng r;
    rng_seed(&r, o.seed ^ 0xba7c4ull);
    for (int i = 0; i < d.train.n; i++) order[i] = i;
    int n_batches = (d.train.n + o.batch - 1) / o.batch;
    double best_acc = -1.0, t_start = now_s();
    int best_epoch = 0, best_is_avg = 0, n_avg = 0, epoch = 0, ck = 0;
    const char *stopped = NULL;

    for (epoch = 1; epoch <= o.epochs && !stopped; epoch++) {
        double t0 = now_s(), loss_sum = 0.0;
        long correct = 0, seen = 0;
        rng_shuffle(&r, order, d.train.n);
        for (int b = 0; b < n_batches; b++) {
            int n = batch_rows(&d.train, order, b, o.batch, bx);
            for (int i = 0; i < n; i++) by[i] = d.train.y[order[b * o.batch + i]];
            /* Tell the trainer the next batch, so its rows are fetched during this step. */
            if (b + 1 < n_batches) mlp_trainer_prefetch(tr, nx, batch_rows(&d.train, order, b + 1, o.batch, nx));
            float loss;
            int st = mlp_train_step_rows(tr, bx, by, n, &loss);
            if (st == 1) {
                char msg[400];
                snprintf(msg, sizeof msg, "epoch %d, batch %d of %d: the loss became %s; training stopped "
                         "and the last finite weights were kept. Try a lower --lr (e.g. %g), or "
                         "--keep-going to train on regardless.", epoch, b + 1, n_batches,
                         isnan(loss) ? "NaN" : "infinite", (double)o.lr / 10);
                if (tty) fputc('\n', stderr);
                fprintf(stderr, "train-mlp: diverged at %s\n", msg);
                json_array_append_new(events, json_pack("{s:s, s:i, s:i, s:s}", "kind", "diverged",
                                                        "epoch", epoch, "batch", b + 1, "message", msg));
                stopped = "diverged";
                break;
            }
            loss_sum += (double)loss * n;
            seen += n;
            /* Training accuracy as the batches go, from the logits the step computed
             * (before its update), as Keras and the seed's loop report it: free. */
            const float *z = mlp_trainer_logits(tr);
            for (int i = 0; i < n; i++) {
                const float *zi = z + (size_t)i * FMNIST_CLASSES;
                int bi = 0;
                for (int j = 1; j < FMNIST_CLASSES; j++) bi = zi[j] > zi[bi] ? j : bi;
                correct += bi == by[i];
            }
            if (tty && (b % 64 == 0 || b == n_batches - 1)) progress(epoch, o.epochs, b + 1, n_batches, t0);
        }
        double secs = now_s() - t0;
        mlp_trainer_sync(tr); /* the network now holds the trained weights */
        if (stopped && seen == 0) break;
        eval_result va_r;
        double train_acc = (double)correct / (seen ? seen : 1);
        if (metrics_eval(net, &d.val, &va_r)) {
            fprintf(stderr, "train-mlp: out of memory evaluating\n");
            goto done;
        }
        double train_loss = loss_sum / (seen ? seen : 1);
        if (!mlp_params_finite(net) && !o.keep_going) {
            if (!stopped)
                json_array_append_new(events, json_pack("{s:s, s:i, s:s}", "kind", "diverged", "epoch", epoch,
                                                        "message", "weights stopped being finite"));
            stopped = "diverged";
        }
        /* The running mean of the end-of-epoch weights, a candidate of its own. */
        double avg_acc = NAN;
        if (o.average_from > 0 && epoch >= o.average_from && !stopped && mlp_params_finite(net)) {
            n_avg++;
            if (n_avg == 1) mlp_copy_params(avg, net);
            else mlp_lerp_params(avg, net, 1.0f / (float)n_avg);
            eval_result av_r;
            if (metrics_eval(avg, &d.val, &av_r)) {
                fprintf(stderr, "train-mlp: out of memory evaluating\n");
                goto done;
            }
            avg_acc = av_r.accuracy;
        }
        json_array_append_new(epochs_js, json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:f}", "epoch", epoch,
            "train_loss", metrics_number(train_loss), "train_accuracy", metrics_number(train_acc),
            "val_loss", metrics_number(va_r.loss), "val_accuracy", metrics_number(va_r.accuracy),
            "avg_val_accuracy", metrics_number(avg_acc), "seconds", secs));
        if (tty) fputc('\r', stderr);
        fprintf(stderr, "epoch %3d/%d  train loss %.4f acc %.2f%%  val loss %.4f acc %.2f%%  %.2fs%s\n",
                epoch, o.epochs, train_loss, 100 * train_acc, va_r.loss, 100 * va_r.accuracy, secs,
                tty ? "                         " : "");
        if (va_r.accuracy > best_acc && isfinite(va_r.loss)) {
            best_acc = va_r.accuracy;
            best_epoch = epoch;
            best_is_avg = 0;
            mlp_copy_params(best, net);
        }
        if (avg_acc > best_acc) {
            best_acc = avg_acc;
            best_epoch = epoch;
            best_is_avg = 1;
            mlp_copy_params(best, avg);
        }
        while (ck < o.n_checkpoints && o.checkpoints[ck] < epoch) ck++;
        if (ck < o.n_checkpoints && o.checkpoints[ck] == epoch) {
            char dir[600], cname[300];
            snprintf(dir, sizeof dir, "%s/checkpoints/epoch-%d", o.out, epoch);
            snprintf(cname, sizeof cname, "%s-epoch-%d", name, epoch);
            json_object_set_new(history, "best_epoch", json_integer(best_epoch));
            if (write_folder(dir, cname, net, &o, &d, history, epoch, epoch, now_s() - t_start, stopped))
                goto done;
        }
    }
    int epochs_run = (int)json_array_size(epochs_js);
    /* After a divergence net holds the last finite weights (the failed step changed nothing). */
    const mlp *keep = o.keep_last || best_epoch == 0 ? net : best;
    int kept_epoch = keep == net ? epochs_run : best_epoch;
    int kept_avg = keep == best && best_is_avg;
    json_object_set_new(history, "best_epoch", json_integer(best_epoch));
    json_object_set_new(history, "kept_epoch", json_integer(kept_epoch));
    json_object_set_new(history, "kept", json_pack("{s:s, s:i, s:o}", "weights", kept_avg ? "average" : "epoch",
                                                   "epoch", kept_epoch, "average_from",
                                                   kept_avg ? json_integer(o.average_from) : json_null()));
    if (kept_avg)
        fprintf(stderr, "keeping the mean of the weights of epochs %d-%d (best validation accuracy, %.2f%%)\n",
                o.average_from, kept_epoch, 100 * best_acc);
    else
        fprintf(stderr, "keeping the weights of epoch %d%s\n", kept_epoch,
                keep == best ? " (best validation accuracy)" : "");
    json_object_set_new(history, "stopped", stopped ? json_string(stopped) : json_null());
    if (write_folder(o.out, name, keep, &o, &d, history, epochs_run, kept_epoch, now_s() - t_start, stopped))
        goto done;
    rc = stopped ? 3 : 0;
done:
    json_decref(history);
    json_decref(epochs_js);
    json_decref(events);
    free(order);
    free((void *)bx);
    free((void *)nx);
    free(by);
    mlp_trainer_free(tr);
    mlp_free(net);
    mlp_free(best);
    mlp_free(avg);
    fm_splits_free(&d);
    return rc;
}
