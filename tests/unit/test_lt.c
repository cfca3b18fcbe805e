/* Tests of lt.h, the libtorch shim, from C: bad arguments always, numerics against PyTorch with a reference folder. */
#include "lt.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== Helpers ==== */

static int failures;
static int checks;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        checks++;                                                             \
        if (!(cond)) {                                                        \
            failures++;                                                       \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__,  \
                    #cond);                                                   \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
        }                                                                     \
    } while (0)

/* Index of the worst element of a vs b under |a-b| <= tol * max(1, |b|), or
 * -1 when every element passes. */
static long worst_mismatch(const float *a, const float *b, size_t n,
                           double tol, double *ratio)
{
    long worst = -1;
    double wr = 0.0;
    size_t i;

    for (i = 0; i < n; i++) {
        double bound = tol * fmax(1.0, fabs((double)b[i]));
        double r = fabs((double)a[i] - (double)b[i]) / bound;
        if (!(r <= 1.0) && (worst < 0 || !(r <= wr))) {
            worst = (long)i;
            wr = r;
        }
    }
    *ratio = wr;
    return worst;
}

static void check_close(const char *what, const float *a, const float *b,
                        size_t n, double tol)
{
    double ratio;
    long i = worst_mismatch(a, b, n, tol, &ratio);
    CHECK(i < 0, "%s: element %ld: shim %.9g vs torch %.9g (%.3g x tolerance)",
          what, i, i < 0 ? 0.0 : a[i], i < 0 ? 0.0 : b[i], ratio);
}

/* Read exactly n floats from dir/name into a new buffer, or NULL. */
static float *read_f32(const char *dir, const char *name, size_t n)
{
    char path[1024];
    FILE *f;
    float *buf;
    long size;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    buf = malloc(n * sizeof *buf);
    if (buf == NULL || fseek(f, 0, SEEK_END) != 0 ||
        (size = ftell(f)) < 0 || (size_t)size != n * sizeof *buf ||
        fseek(f, 0, SEEK_SET) != 0 || fread(buf, sizeof *buf, n, f) != n) {
        fprintf(stderr, "%s: expected %zu floats\n", path, n);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    return buf;
}

/* The reference folder's ref.txt, "key values..." a line. */
typedef struct ref {
    int channels, height, width, n, classes, n_layers;
    float mean, std;
    int targets[16];
    int act_layers[16];
    int n_act;
    int viz_layer, viz_filter, viz_iterations, viz_every;
    float viz_lr, viz_weight_decay;
} ref;

static int read_ints(const char *s, int *out, int cap)
{
    int n = 0;
    char *end;

    while (n < cap) {
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        out[n++] = (int)v;
        s = end;
    }
    return n;
}

static int read_ref(const char *dir, ref *r)
{
    char path[1024], line[512], key[64];
    FILE *f;
    int off;

    memset(r, 0, sizeof *r);
    snprintf(path, sizeof path, "%s/ref.txt", dir);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        const char *v;
        if (sscanf(line, "%63s %n", key, &off) != 1)
            continue;
        v = line + off;
        if (!strcmp(key, "channels")) r->channels = atoi(v);
        else if (!strcmp(key, "height")) r->height = atoi(v);
        else if (!strcmp(key, "width")) r->width = atoi(v);
        else if (!strcmp(key, "n")) r->n = atoi(v);
        else if (!strcmp(key, "classes")) r->classes = atoi(v);
        else if (!strcmp(key, "n_layers")) r->n_layers = atoi(v);
        else if (!strcmp(key, "mean")) r->mean = (float)atof(v);
        else if (!strcmp(key, "std")) r->std = (float)atof(v);
        else if (!strcmp(key, "targets")) read_ints(v, r->targets, 16);
        else if (!strcmp(key, "act_layers")) r->n_act = read_ints(v, r->act_layers, 16);
        else if (!strcmp(key, "viz_layer")) r->viz_layer = atoi(v);
        else if (!strcmp(key, "viz_filter")) r->viz_filter = atoi(v);
        else if (!strcmp(key, "viz_iterations")) r->viz_iterations = atoi(v);
        else if (!strcmp(key, "viz_every")) r->viz_every = atoi(v);
        else if (!strcmp(key, "viz_lr")) r->viz_lr = (float)atof(v);
        else if (!strcmp(key, "viz_weight_decay")) r->viz_weight_decay = (float)atof(v);
    }
    fclose(f);
    return r->n > 0 && r->n <= 16 && r->channels > 0 ? 0 : -1;
}

/* ==== Without a model ==== */

static void test_defaults(void)
{
    lt_model_params mp = lt_model_default_params();
    lt_viz_params vp = lt_viz_default_params();

    CHECK(mp.channels == 1 && mp.height == 32 && mp.width == 32, "shape");
    CHECK(mp.std[0] == 1.0f && mp.mean[0] == 0.0f, "mean/std");
    CHECK(vp.iterations == 30 && vp.every == 5, "iterations/every");
    CHECK(fabsf(vp.lr - 0.1f) < 1e-7f, "lr %g", vp.lr);
    CHECK(fabsf(vp.weight_decay - 1e-6f) < 1e-12f, "wd %g", vp.weight_decay);
    CHECK(lt_viz_n_frames(&vp) == 6, "frames %d", lt_viz_n_frames(&vp));
    vp.iterations = 40;
    vp.every = 5;
    CHECK(lt_viz_n_frames(&vp) == 8, "40/5");
    vp.iterations = 7;
    vp.every = 3;
    CHECK(lt_viz_n_frames(&vp) == 2, "floor(7/3)");
    vp.every = 0;
    CHECK(lt_viz_n_frames(&vp) == 0, "every 0");
    CHECK(lt_viz_n_frames(NULL) == 0, "NULL");
}

static void test_null_model(void)
{
    char err[256];
    float buf[16];
    lt_layer_info li;
    lt_viz_params vp = lt_viz_default_params();

    lt_model_free(NULL);
    CHECK(lt_model_n_classes(NULL) == 0, "classes of NULL");
    CHECK(lt_model_n_layers(NULL) == 0, "layers of NULL");
    CHECK(lt_forward(NULL, buf, 1, buf, err, sizeof err) < 0, "forward");
    CHECK(lt_activations(NULL, buf, 0, buf, 16, err, sizeof err) < 0, "act");
    CHECK(lt_layer_get_info(NULL, 0, &li, err, sizeof err) < 0, "info");
    CHECK(lt_filter_viz(NULL, 0, 0, NULL, &vp, buf, 16, NULL, err,
                        sizeof err) < 0, "viz");
    CHECK(lt_explain_pass(NULL, buf, 1, 0, 0, buf, NULL, NULL, err, sizeof err) < 0, "explain pass");
    CHECK(lt_gradcam(NULL, buf, 0, 0, buf, 16, buf, NULL, NULL, err, sizeof err) < 0, "gradcam");
    CHECK(lt_model_splits(NULL, err, sizeof err) == 0, "splits of NULL");
    CHECK(lt_cam_default_layer(NULL) == -1, "cam layer of NULL");
    /* A NULL or zero-length error buffer is allowed. */
    CHECK(lt_forward(NULL, buf, 1, buf, NULL, 0) < 0, "forward, no err");
}

static void test_bad_files(const char *tmpdir)
{
    char err[512], path[1024];
    lt_model_params mp = lt_model_default_params();
    lt_model *m;
    FILE *f;

    err[0] = '\0';
    m = lt_model_load("/nonexistent/model.ts", &mp, err, sizeof err);
    CHECK(m == NULL, "missing file loaded");
    CHECK(err[0] != '\0', "no message for a missing file");
    if (!lt_available())
        CHECK(strstr(err, "LOUPE_WITH_TORCH=OFF") != NULL,
              "stub message: %s", err);

    snprintf(path, sizeof path, "%s/test_lt_garbage.ts", tmpdir);
    f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (f != NULL) {
        fputs("PK\003\004 this is not a TorchScript archive", f);
        fclose(f);
        err[0] = '\0';
        m = lt_model_load(path, &mp, err, sizeof err);
        CHECK(m == NULL, "garbage loaded");
        CHECK(err[0] != '\0', "no message for garbage");
        remove(path);
    }
    CHECK(lt_model_load(NULL, &mp, err, sizeof err) == NULL, "NULL path");
    CHECK(lt_model_load("x", NULL, err, sizeof err) == NULL, "NULL params");
    mp.channels = 0;
    CHECK(lt_model_load("x", &mp, err, sizeof err) == NULL, "0 channels");
    mp = lt_model_default_params();
    mp.std[0] = 0.0f;
    CHECK(lt_model_load("x", &mp, err, sizeof err) == NULL, "std 0");
    /* A tiny buffer truncates, never overflows. */
    err[0] = 'x';
    CHECK(lt_model_load(NULL, &mp, err, 1) == NULL && err[0] == '\0',
          "1-byte error buffer");
}

/* ==== With a reference folder ==== */

typedef struct worker_arg {
    lt_model *m;
    const ref *r;
    const float *inputs, *logits, *grads;
    int bad;
} worker_arg;

/* Many threads on one model at once: each result must match PyTorch. */
static void *worker(void *p)
{
    worker_arg *a = p;
    const ref *r = a->r;
    size_t img = (size_t)r->channels * r->height * r->width;
    float *logits = malloc(sizeof(float) * r->n * r->classes);
    float *grad = malloc(sizeof(float) * img);
    char err[256];
    double ratio;
    int it, i;

    if (logits == NULL || grad == NULL) {
        a->bad = 1;
        goto done;
    }
    for (it = 0; it < 5; it++) {
        if (lt_forward(a->m, a->inputs, r->n, logits, err, sizeof err) != 0 ||
            worst_mismatch(logits, a->logits, (size_t)r->n * r->classes,
                           1e-5, &ratio) >= 0)
            a->bad = 1;
        for (i = 0; i < r->n; i++) {
            if (lt_explain_pass(a->m, a->inputs + i * img, 1, r->targets[i], 0,
                                grad, NULL, NULL, err, sizeof err) != 0 ||
                worst_mismatch(grad, a->grads + i * img, img, 1e-5,
                               &ratio) >= 0)
                a->bad = 1;
        }
    }
done:
    free(logits);
    free(grad);
    return NULL;
}

static void test_reference(const char *dir)
{
    char err[512], path[1024];
    ref r;
    lt_model_params mp = lt_model_default_params();
    lt_model *m = NULL;
    lt_layer_info li;
    lt_viz_params vp = lt_viz_default_params();
    size_t img, nf;
    float *inputs = NULL, *logits = NULL, *grads = NULL;
    float *out = NULL, *ref_buf = NULL, *frames = NULL, *frames2 = NULL;
    float trace[64], ref_trace[64], logit1[64];
    int i, j, n_frames, conv = -1, nonconv = -1;
    pthread_t th[4];
    worker_arg wa[4];

    if (read_ref(dir, &r) != 0) {
        CHECK(0, "cannot read %s/ref.txt (run lt_reference.py first)", dir);
        return;
    }
    img = (size_t)r.channels * r.height * r.width;
    mp.channels = r.channels;
    mp.height = r.height;
    mp.width = r.width;
    mp.mean[0] = r.mean;
    mp.std[0] = r.std;
    snprintf(path, sizeof path, "%s/model.ts", dir);
    CHECK(lt_set_threads(1, 0, err, sizeof err) == 0, "threads: %s", err);
    m = lt_model_load(path, &mp, err, sizeof err);
    CHECK(m != NULL, "load %s: %s", path, err);
    if (m == NULL)
        return;
    CHECK(lt_model_n_classes(m) == r.classes, "classes %d",
          lt_model_n_classes(m));
    CHECK(lt_model_n_layers(m) == r.n_layers, "layers %d",
          lt_model_n_layers(m));

    inputs = read_f32(dir, "inputs.f32", r.n * img);
    logits = read_f32(dir, "logits.f32", (size_t)r.n * r.classes);
    grads = read_f32(dir, "grads.f32", r.n * img);
    out = malloc(sizeof(float) * r.n * img * 2 + 4096 * sizeof(float));
    CHECK(inputs && logits && grads && out, "reference files");
    if (!(inputs && logits && grads && out))
        goto done;

    /* Logits and input gradients: |a-b| <= 1e-5 * max(1, |b|). The
     * explanation pass runs the model's layers one by one (the tape when
     * they are all native): the whole model's values all the same. */
    CHECK(lt_forward(m, inputs, r.n, out, err, sizeof err) == 0, "%s", err);
    check_close("logits", out, logits, (size_t)r.n * r.classes, 1e-5);
    for (i = 0; i < r.n; i++) {
        char what[64];
        int t = -1;
        CHECK(lt_explain_pass(m, inputs + i * img, 1, r.targets[i], 0, out,
                              logit1, &t, err, sizeof err) == 0, "%s", err);
        CHECK(t == r.targets[i], "target %d, want %d", t, r.targets[i]);
        snprintf(what, sizeof what, "input gradient %d (class %d)", i,
                 r.targets[i]);
        check_close(what, out, grads + i * img, img, 1e-5);
        check_close("logits beside the gradient", logit1,
                    logits + (size_t)i * r.classes, (size_t)r.classes, 1e-5);
    }

    /* Activations of several layers of features for image 0. */
    for (i = 0; i < r.n_act; i++) {
        char name[64];
        size_t n;
        int l = r.act_layers[i];
        CHECK(lt_layer_get_info(m, l, &li, err, sizeof err) == 0, "%s", err);
        n = (size_t)li.channels * li.height * li.width;
        snprintf(name, sizeof name, "act_%d.f32", l);
        ref_buf = read_f32(dir, name, n);
        CHECK(ref_buf != NULL, "%s", name);
        if (ref_buf != NULL && n <= r.n * img * 2 + 4096) {
            CHECK(lt_activations(m, inputs, l, out, n, err, sizeof err) == 0,
                  "%s", err);
            check_close(name, out, ref_buf, n, 1e-5);
            CHECK(lt_activations(m, inputs, l, out, n - 1, err,
                                 sizeof err) == LT_EINVAL,
                  "short activation buffer accepted");
        }
        free(ref_buf);
        ref_buf = NULL;
    }
    for (i = 0; i < lt_model_n_layers(m); i++) {
        CHECK(lt_layer_get_info(m, i, &li, err, sizeof err) == 0, "%s", err);
        if (li.is_conv && conv < 0 && i > 0)
            conv = i;
        if (!li.is_conv && nonconv < 0)
            nonconv = i;
    }
    CHECK(lt_layer_get_info(m, 0, &li, err, sizeof err) == 0 &&
          !strcmp(li.type, "conv2d") && li.is_conv, "layer 0 is %s", li.type);

    /* Activation maximisation from the same start image as PyTorch. */
    vp.iterations = r.viz_iterations;
    vp.every = r.viz_every;
    vp.lr = r.viz_lr;
    vp.weight_decay = r.viz_weight_decay;
    n_frames = lt_viz_n_frames(&vp);
    CHECK(n_frames == r.viz_iterations / r.viz_every, "frames %d", n_frames);
    nf = (size_t)n_frames * img;
    frames = malloc(sizeof(float) * nf);
    frames2 = malloc(sizeof(float) * nf);
    ref_buf = read_f32(dir, "viz_frames.f32", nf);
    if (frames == NULL || frames2 == NULL || ref_buf == NULL ||
        r.viz_iterations + 1 > 64)
        goto done;
    {
        float *rt = read_f32(dir, "viz_trace.f32",
                             (size_t)r.viz_iterations + 1);
        if (rt != NULL) {
            memcpy(ref_trace, rt, sizeof(float) * (r.viz_iterations + 1));
            free(rt);
        }
        CHECK(rt != NULL, "viz_trace.f32");
    }
    CHECK(lt_filter_viz(m, r.viz_layer, r.viz_filter, inputs, &vp, frames, nf,
                        trace, err, sizeof err) == 0, "viz: %s", err);
    /* Adam normalises each step, so tiny gradient differences move pixels
     * by ~lr * 1e-4 at most over a few steps. */
    check_close("frames vs PyTorch Adam", frames, ref_buf, nf, 1e-3);
    check_close("activation trace vs PyTorch", trace, ref_trace,
                (size_t)r.viz_iterations + 1, 1e-3);
    CHECK(trace[r.viz_iterations] > trace[0],
          "from an image: activation %g not above step 0's %g",
          trace[r.viz_iterations], trace[0]);
    for (j = 0; j < (int)nf; j++)
        if (!(frames[j] >= 0.0f && frames[j] <= 1.0f))
            break;
    CHECK(j == (int)nf, "frame value %g outside [0, 1]", frames[j]);

    /* From a seeded random image: raises the activation, reproducible. */
    vp = lt_viz_default_params();
    vp.seed = 42;
    n_frames = lt_viz_n_frames(&vp);
    CHECK(n_frames == 6, "30/5 frames: %d", n_frames);
    free(frames);
    free(frames2);
    nf = (size_t)n_frames * img;
    frames = malloc(sizeof(float) * nf);
    frames2 = malloc(sizeof(float) * nf);
    if (frames == NULL || frames2 == NULL)
        goto done;
    CHECK(lt_filter_viz(m, conv, 1, NULL, &vp, frames, nf, trace, err,
                        sizeof err) == 0, "viz random: %s", err);
    CHECK(trace[vp.iterations] > trace[0],
          "random start: activation %g not above step 0's %g",
          trace[vp.iterations], trace[0]);
    CHECK(lt_filter_viz(m, conv, 1, NULL, &vp, frames2, nf, NULL, err,
                        sizeof err) == 0, "viz again: %s", err);
    CHECK(memcmp(frames, frames2, sizeof(float) * nf) == 0,
          "same seed, different frames");
    CHECK(memcmp(frames, frames + (n_frames - 1) * img,
                 sizeof(float) * img) != 0, "first and last frame equal");
    vp.seed = 43;
    CHECK(lt_filter_viz(m, conv, 1, NULL, &vp, frames2, nf, NULL, err,
                        sizeof err) == 0, "viz seed 43: %s", err);
    CHECK(memcmp(frames, frames2, sizeof(float) * nf) != 0,
          "different seeds, same frames");

    /* Bad indices and arguments are errors with a message, not crashes. */
    vp = lt_viz_default_params();
    lt_layer_get_info(m, conv, &li, err, sizeof err);
    err[0] = '\0';
    CHECK(lt_filter_viz(m, -1, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL && err[0], "layer -1");
    CHECK(lt_filter_viz(m, lt_model_n_layers(m), 0, NULL, &vp, frames, nf,
                        NULL, err, sizeof err) == LT_EINVAL, "layer n");
    CHECK(lt_filter_viz(m, 1 << 30, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "layer huge");
    CHECK(lt_filter_viz(m, nonconv, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL &&
          strstr(err, "not a convolution") != NULL, "non-conv: %s", err);
    CHECK(lt_filter_viz(m, conv, -1, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "filter -1");
    CHECK(lt_filter_viz(m, conv, li.channels, NULL, &vp, frames, nf, NULL,
                        err, sizeof err) == LT_EINVAL &&
          strstr(err, "valid") != NULL, "filter = channels: %s", err);
    CHECK(lt_filter_viz(m, conv, 0, NULL, &vp, frames, nf - 1, NULL, err,
                        sizeof err) == LT_EINVAL, "short frame buffer");
    vp.iterations = 0;
    CHECK(lt_filter_viz(m, conv, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "0 iterations");
    vp = lt_viz_default_params();
    vp.every = 0;
    CHECK(lt_filter_viz(m, conv, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "every 0");
    vp.every = 31;
    CHECK(lt_filter_viz(m, conv, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "every > iterations");
    vp = lt_viz_default_params();
    vp.lr = -1.0f;
    CHECK(lt_filter_viz(m, conv, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "negative lr");
    vp.lr = NAN;
    CHECK(lt_filter_viz(m, conv, 0, NULL, &vp, frames, nf, NULL, err,
                        sizeof err) == LT_EINVAL, "NaN lr");
    CHECK(lt_layer_get_info(m, -1, &li, err, sizeof err) == LT_EINVAL,
          "info -1");
    CHECK(lt_activations(m, inputs, lt_model_n_layers(m), out, 4096, err,
                         sizeof err) == LT_EINVAL, "activations layer n");
    CHECK(lt_activations(m, inputs, -1, out, 4096, err, sizeof err) ==
          LT_EINVAL, "activations layer -1");
    /* The explanation pass batched, each row's target its own argmax. */
    CHECK(lt_model_splits(m, err, sizeof err) == 1, "the VGG does not split: %s", err);
    {
        int last_conv = -1, relu = -1, nl = lt_model_n_layers(m), *tg = calloc((size_t)r.n, sizeof *tg);
        float *g = malloc(sizeof(float) * r.n * img), *z = malloc(sizeof(float) * r.n * r.classes);
        CHECK(tg && g && z, "out of memory");
        for (i = 0; i < nl; i++)
            if (!lt_layer_get_info(m, i, &li, NULL, 0) && li.is_conv)
                last_conv = i;
        for (i = nl - 1; i > last_conv; i--)
            if (!lt_layer_get_info(m, i, &li, NULL, 0) && !strcmp(li.type, "relu"))
                relu = i;
        CHECK(relu > last_conv && lt_cam_default_layer(m) == relu, "Grad-CAM layer %d, want %d",
              lt_cam_default_layer(m), relu);
        if (tg && g && z) {
            CHECK(lt_explain_pass(m, inputs, r.n, -1, 0, NULL, z, tg, err, sizeof err) == 0, "%s", err);
            check_close("batched explain logits", z, logits, (size_t)r.n * r.classes, 1e-5);
            for (i = 0; i < r.n; i++) {
                int best = 0;
                for (j = 1; j < r.classes; j++)
                    if (logits[i * r.classes + j] > logits[i * r.classes + best])
                        best = j;
                CHECK(tg[i] == best, "row %d: target %d, argmax %d", i, tg[i], best);
            }
            CHECK(lt_explain_pass(m, inputs, 0, 0, 0, g, z, tg, err, sizeof err) == LT_EINVAL, "explain batch 0");
            CHECK(lt_explain_pass(m, inputs, 1, r.classes, 0, g, z, tg, err, sizeof err) == LT_EINVAL,
                  "explain target K");
            CHECK(lt_gradcam(m, inputs, nl, 0, g, img, z, NULL, NULL, err, sizeof err) == LT_EINVAL,
                  "gradcam layer n");
            CHECK(lt_gradcam(m, inputs, 0, 0, g, 1, z, NULL, NULL, err, sizeof err) == LT_EINVAL,
                  "gradcam short layer map");
        }
        free(tg);
        free(g);
        free(z);
    }
    CHECK(lt_forward(m, inputs, 0, out, err, sizeof err) == LT_EINVAL,
          "batch 0");
    CHECK(lt_forward(m, inputs, -3, out, err, sizeof err) == LT_EINVAL,
          "batch -3");
    CHECK(lt_forward(m, NULL, 1, out, err, sizeof err) == LT_EINVAL,
          "NULL input");
    /* The model still works after all those errors. */
    CHECK(lt_forward(m, inputs, r.n, out, err, sizeof err) == 0, "%s", err);
    check_close("logits after errors", out, logits, (size_t)r.n * r.classes,
                1e-5);

    /* Wrong input shape: refused at load, with a message. */
    {
        lt_model_params bad = mp;
        lt_model *m2;
        bad.height = bad.width = 8;
        err[0] = '\0';
        m2 = lt_model_load(path, &bad, err, sizeof err);
        CHECK(m2 == NULL && err[0], "8x8 input accepted");
        lt_model_free(m2);
    }

    /* Concurrent calls on one model. */
    for (i = 0; i < 4; i++) {
        wa[i].m = m;
        wa[i].r = &r;
        wa[i].inputs = inputs;
        wa[i].logits = logits;
        wa[i].grads = grads;
        wa[i].bad = 0;
        CHECK(pthread_create(&th[i], NULL, worker, &wa[i]) == 0, "thread");
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(!wa[i].bad, "thread %d got a wrong result", i);
    }

done:
    free(inputs);
    free(logits);
    free(grads);
    free(out);
    free(ref_buf);
    free(frames);
    free(frames2);
    lt_model_free(m);
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");

    test_defaults();
    test_null_model();
    test_bad_files(tmp && *tmp ? tmp : "/tmp");
    if (argc > 1) {
        if (!lt_available())
            CHECK(0, "a reference folder was given to a build without "
                     "libtorch");
        else
            test_reference(argv[1]);
    }
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
