/* test_mlp.c -- the MLP engine: gradients by finite differences, determinism, thread safety, bad input. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mlp.h"
#include "rng.h"
#include "sparse.h"

static const mlp_act all_acts[] = {MLP_ACT_SIGMOID, MLP_ACT_TANH, MLP_ACT_RELU, MLP_ACT_LINEAR};

static void fill_random(float *x, size_t n, rng *r, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_uniform(r, lo, hi);
}

static mlp *small_net(mlp_act act, uint64_t seed) {
    int sizes[] = {6, 9, 7, 4};
    char err[MLP_ERR_LEN];
    mlp *net = mlp_new(3, sizes, act, err, sizeof err);
    CHECK_MSG(net != NULL, "%s", err);
    mlp_init_weights(net, MLP_INIT_XAVIER, seed);
    /* Non-zero biases so every path is exercised. */
    rng r;
    rng_seed(&r, seed + 99);
    for (int i = 0; i < 3; i++) fill_random(mlp_bias(net, i), (size_t)sizes[i + 1], &r, -0.3, 0.3);
    return net;
}

/* Mean loss of a batch through the trainer-free path: forward + xent in double. */
static double batch_loss(const mlp *net, const float *x, const uint8_t *y, int n) {
    mlp_scratch *s = mlp_scratch_new(net, n);
    float logits[64];
    mlp_forward(net, s, x, n, logits);
    double l = mlp_xent(logits, y, n, mlp_n_outputs(net));
    mlp_scratch_free(s);
    return l;
}

/* Relative difference that tolerates tiny magnitudes. */
static double rel(double a, double b) { return fabs(a - b) / fmax(1e-2, fabs(a) + fabs(b)); }

static void test_param_gradients_match_finite_differences(void) {
    for (size_t ai = 0; ai < 4; ai++) {
        mlp *net = small_net(all_acts[ai], 7 + ai);
        mlp_sgd_params p = mlp_sgd_default_params();
        p.max_batch = 5;
        char err[MLP_ERR_LEN];
        mlp_trainer *t = mlp_trainer_new(net, p, err, sizeof err);
        rng r;
        rng_seed(&r, 3);
        float x[5 * 6];
        uint8_t y[5] = {0, 1, 2, 3, 1};
        fill_random(x, 30, &r, -1, 1);
        float loss;
        CHECK(mlp_compute_grads(t, x, y, 5, &loss) == 0);
        CHECK_NEAR(loss, batch_loss(net, x, y, 5), 1e-5);
        double worst = 0;
        for (int i = 0; i < mlp_n_layers(net); i++) {
            int nw = mlp_size(net, i) * mlp_size(net, i + 1), nb = mlp_size(net, i + 1);
            for (int j = 0; j < nw + nb; j++) {
                float *param = j < nw ? &mlp_weight(net, i)[j] : &mlp_bias(net, i)[j - nw];
                double g = j < nw ? mlp_grad_weight(t, i)[j] : mlp_grad_bias(t, i)[j - nw];
                float keep = *param, h = all_acts[ai] == MLP_ACT_RELU ? 1e-3f : 1e-2f;
                *param = keep + h;
                mlp_weights_changed(net);
                double lp = batch_loss(net, x, y, 5);
                *param = keep - h;
                mlp_weights_changed(net);
                double lm = batch_loss(net, x, y, 5);
                *param = keep;
                mlp_weights_changed(net);
                double fd = (lp - lm) / (2.0 * h);
                double e = rel(g, fd);
                if (e > worst) worst = e;
            }
        }
        CHECK_MSG(worst < 2e-2, "%s: worst relative gradient error %g", mlp_act_name(all_acts[ai]), worst);
        mlp_trainer_free(t);
        mlp_free(net);
    }
}

static void test_input_gradient_matches_finite_differences(void) {
    for (size_t ai = 0; ai < 4; ai++) {
        mlp *net = small_net(all_acts[ai], 11 + ai);
        mlp_scratch *s = mlp_scratch_new(net, 1);
        rng r;
        rng_seed(&r, 5);
        float x[6], grad[6], logits[4], lp[4], lm[4];
        fill_random(x, 6, &r, 0, 1);
        for (int target = 0; target < 4; target++) {
            CHECK(mlp_input_grad(net, s, x, target, grad, logits) == 0);
            for (int j = 0; j < 6; j++) {
                float keep = x[j], h = 1e-2f;
                x[j] = keep + h;
                mlp_forward(net, s, x, 1, lp);
                x[j] = keep - h;
                mlp_forward(net, s, x, 1, lm);
                x[j] = keep;
                double fd = (lp[target] - lm[target]) / (2.0 * h);
                CHECK_MSG(rel(grad[j], fd) < 2e-2, "%s target %d pixel %d: %g vs %g",
                          mlp_act_name(all_acts[ai]), target, j, grad[j], fd);
            }
        }
        mlp_scratch_free(s);
        mlp_free(net);
    }
}

/* Train two copies with the same seed: parameters must be bit-identical. */
static void train_copy(uint64_t seed, mlp_act act, float momentum, float **out, size_t *n) {
    int sizes[] = {20, 16, 8, 3};
    mlp *net = mlp_new(3, sizes, act, NULL, 0);
    mlp_init_weights(net, MLP_INIT_DEFAULT, seed);
    mlp_sgd_params p = {0.05f, momentum, 8, 0, 1, 0};
    mlp_trainer *t = mlp_trainer_new(net, p, NULL, 0);
    rng r;
    rng_seed(&r, seed);
    float x[8 * 20];
    uint8_t y[8];
    for (int step = 0; step < 50; step++) {
        fill_random(x, 160, &r, 0, 1);
        for (int i = 0; i < 8; i++) y[i] = (uint8_t)rng_below(&r, 3);
        float loss;
        mlp_train_step(t, x, y, 8, &loss);
    }
    mlp_trainer_sync(t);
    *n = 0;
    for (int i = 0; i < 3; i++) *n += (size_t)sizes[i] * sizes[i + 1] + sizes[i + 1];
    *out = malloc(*n * sizeof(float));
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        memcpy(*out + at, mlp_weight(net, i), sizeof(float) * sizes[i] * sizes[i + 1]);
        at += (size_t)sizes[i] * sizes[i + 1];
        memcpy(*out + at, mlp_bias(net, i), sizeof(float) * sizes[i + 1]);
        at += (size_t)sizes[i + 1];
    }
    mlp_trainer_free(t);
    mlp_free(net);
}

static void test_same_seed_bit_identical(void) {
    float *a, *b, *c;
    size_t n;
    train_copy(42, MLP_ACT_RELU, 0.0f, &a, &n);
    train_copy(42, MLP_ACT_RELU, 0.0f, &b, &n);
    train_copy(43, MLP_ACT_RELU, 0.0f, &c, &n);
    CHECK(memcmp(a, b, n * sizeof(float)) == 0);
    CHECK(memcmp(a, c, n * sizeof(float)) != 0);
    free(a); free(b); free(c);
    train_copy(42, MLP_ACT_TANH, 0.9f, &a, &n);
    train_copy(42, MLP_ACT_TANH, 0.9f, &b, &n);
    CHECK(memcmp(a, b, n * sizeof(float)) == 0);
    free(a); free(b);
}

/* SGD on one fixed batch must drive its loss down; with momentum too. */
static void test_steps_reduce_loss(void) {
    for (int m = 0; m < 2; m++) {
        mlp *net = small_net(MLP_ACT_TANH, 1);
        mlp_sgd_params p = {0.1f, m ? 0.9f : 0.0f, 5, 0, 1, 0};
        mlp_trainer *t = mlp_trainer_new(net, p, NULL, 0);
        rng r;
        rng_seed(&r, 9);
        float x[30];
        uint8_t y[5] = {0, 1, 2, 3, 0};
        fill_random(x, 30, &r, -1, 1);
        float first, loss;
        mlp_train_step(t, x, y, 5, &first);
        for (int i = 0; i < 200; i++) mlp_train_step(t, x, y, 5, &loss);
        CHECK_MSG(loss < first * 0.5f, "momentum %d: loss %g after 200 steps, %g at first", m, loss, first);
        mlp_trainer_free(t);
        mlp_free(net);
    }
}

/* The plain-SGD fused update equals W - lr * grad computed separately. */
static void test_fused_update_equals_gradient_step(void) {
    mlp *a = small_net(MLP_ACT_SIGMOID, 4), *b = small_net(MLP_ACT_SIGMOID, 4);
    mlp_sgd_params p = {0.3f, 0.0f, 5, 0, 1, 0};
    mlp_trainer *ta = mlp_trainer_new(a, p, NULL, 0), *tb = mlp_trainer_new(b, p, NULL, 0);
    rng r;
    rng_seed(&r, 2);
    float x[30], loss;
    uint8_t y[5] = {3, 2, 1, 0, 3};
    fill_random(x, 30, &r, 0, 1);
    for (int j = 0; j < 30; j += 3) x[j] = 0.0f; /* zeros for the sparse first layer to skip */
    mlp_train_step(ta, x, y, 5, &loss);
    mlp_trainer_sync(ta);
    mlp_compute_grads(tb, x, y, 5, &loss);
    for (int i = 0; i < 3; i++) {
        int nw = mlp_size(b, i) * mlp_size(b, i + 1);
        for (int j = 0; j < nw; j++)
            CHECK_NEAR(mlp_weight(a, i)[j], mlp_weight(b, i)[j] - 0.3f * mlp_grad_weight(tb, i)[j], 1e-6);
        for (int j = 0; j < mlp_size(b, i + 1); j++)
            CHECK_NEAR(mlp_bias(a, i)[j], mlp_bias(b, i)[j] - 0.3f * mlp_grad_bias(tb, i)[j], 1e-6);
    }
    mlp_trainer_free(ta); mlp_trainer_free(tb);
    mlp_free(a); mlp_free(b);
}

static void test_softmax_and_xent_are_stable(void) {
    float z[3] = {1000.0f, 0.0f, -1000.0f}, p[3];
    mlp_softmax(z, 3, p);
    CHECK(isfinite(p[0]) && isfinite(p[1]) && isfinite(p[2]));
    CHECK_NEAR(p[0], 1.0, 1e-6);
    uint8_t y = 1;
    CHECK_NEAR(mlp_xent(z, &y, 1, 3), 1000.0, 1e-3);
    float u[4] = {2, 2, 2, 2};
    uint8_t y0 = 0;
    CHECK_NEAR(mlp_xent(u, &y0, 1, 4), log(4.0), 1e-6);
}

static void test_divergence_keeps_last_finite_weights(void) {
    mlp *net = small_net(MLP_ACT_LINEAR, 3);
    mlp_sgd_params p = {1e30f, 0.0f, 5, 0, 1, 0};
    mlp_trainer *t = mlp_trainer_new(net, p, NULL, 0);
    float x[30], loss;
    uint8_t y[5] = {0, 1, 2, 3, 0};
    rng r;
    rng_seed(&r, 1);
    fill_random(x, 30, &r, 0, 1);
    int st = 0, steps = 0;
    while (st == 0 && steps < 100) { st = mlp_train_step(t, x, y, 5, &loss); steps++; }
    CHECK_MSG(st == 1, "no divergence detected after %d steps at lr 1e30", steps);
    CHECK(!isfinite(loss));
    mlp_trainer_sync(t);
    CHECK(mlp_params_finite(net));
    /* Once stopped, another step changes nothing. */
    mlp *copy = small_net(MLP_ACT_LINEAR, 3);
    mlp_copy_params(copy, net);
    CHECK(mlp_train_step(t, x, y, 5, &loss) == 1);
    mlp_trainer_sync(t);
    CHECK(memcmp(mlp_weight(copy, 0), mlp_weight(net, 0), sizeof(float) * 54) == 0);
    mlp_trainer_free(t);
    /* keep_going applies the update regardless, as the seed's loop did. */
    p.keep_going = 1;
    t = mlp_trainer_new(net, p, NULL, 0);
    for (int i = 0; i < 5; i++) mlp_train_step(t, x, y, 5, &loss);
    mlp_trainer_sync(t);
    CHECK(!mlp_params_finite(net));
    mlp_trainer_free(t);
    mlp_free(copy);
    mlp_free(net);
}

typedef struct {
    const mlp *net;
    const float *x;
    float out[16 * 4];
    int rc;
} fwd_job;

static void *fwd_thread(void *arg) {
    fwd_job *j = arg;
    mlp_scratch *s = mlp_scratch_new(j->net, 16);
    j->rc = 0;
    for (int rep = 0; rep < 2000 && !j->rc; rep++) j->rc = mlp_forward(j->net, s, j->x, 16, j->out);
    mlp_scratch_free(s);
    return NULL;
}

static void test_forward_is_thread_safe(void) {
    mlp *net = small_net(MLP_ACT_RELU, 8);
    float x[16 * 6], ref[16 * 4];
    rng r;
    rng_seed(&r, 4);
    fill_random(x, 96, &r, 0, 1);
    mlp_scratch *s = mlp_scratch_new(net, 16);
    mlp_forward(net, s, x, 16, ref);
    mlp_scratch_free(s);
    fwd_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i].net = net;
        jobs[i].x = x;
        pthread_create(&th[i], NULL, fwd_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].rc == 0);
        CHECK(memcmp(jobs[i].out, ref, sizeof ref) == 0);
    }
    /* after a change, the threads race to rebuild the transposed weights */
    mlp_weight(net, 0)[0] += 0.5f;
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, fwd_thread, &jobs[i]);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    float before[16 * 4];
    memcpy(before, ref, sizeof ref);
    mlp_kernels k = mlp_kernels_current();
    CHECK(mlp_kernels_use(MLP_KERNELS_DENSE, NULL, 0) == 0); /* the reference reads the weights themselves */
    s = mlp_scratch_new(net, 16);
    mlp_forward(net, s, x, 16, ref);
    mlp_scratch_free(s);
    mlp_kernels_use(k, NULL, 0);
    CHECK(memcmp(before, ref, sizeof ref) != 0);
    for (int i = 0; i < 4; i++) {
        double worst = 0;
        for (int j = 0; j < 16 * 4; j++) worst = fmax(worst, fabs((double)jobs[i].out[j] - ref[j]));
        CHECK_MSG(jobs[i].rc == 0 && worst < 1e-5, "thread %d after the change: off by %g", i, worst);
    }
    mlp_free(net);
}

static void test_bad_arguments_are_refused(void) {
    char err[MLP_ERR_LEN] = "";
    int zero[] = {4, 0, 2}, ok[] = {4, 3, 2};
    CHECK(mlp_new(0, ok, MLP_ACT_RELU, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "layers");
    CHECK(mlp_new(2, zero, MLP_ACT_RELU, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "width");
    CHECK(mlp_new(2, ok, (mlp_act)9, err, sizeof err) == NULL);
    mlp *net = mlp_new(2, ok, MLP_ACT_RELU, err, sizeof err);
    mlp_scratch *s = mlp_scratch_new(net, 2);
    float x[12] = {0}, out[8], g[4];
    CHECK(mlp_forward(net, s, x, 3, out) == -1);
    CHECK(mlp_forward(net, s, x, 0, out) == -1);
    CHECK(mlp_input_grad(net, s, x, 2, g, NULL) == -1);
    CHECK(mlp_input_grad(net, s, x, -1, g, NULL) == -1);
    int other[] = {4, 5, 2};
    mlp *net2 = mlp_new(2, other, MLP_ACT_RELU, NULL, 0);
    CHECK(mlp_forward(net2, s, x, 1, out) == -1);
    mlp_sgd_params p = mlp_sgd_default_params();
    p.lr = 0;
    CHECK(mlp_trainer_new(net, p, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "learning rate");
    p = mlp_sgd_default_params();
    p.momentum = 1.0f;
    CHECK(mlp_trainer_new(net, p, err, sizeof err) == NULL);
    p = mlp_sgd_default_params();
    p.max_batch = 2;
    mlp_trainer *t = mlp_trainer_new(net, p, err, sizeof err);
    uint8_t y[2] = {0, 2};
    float loss;
    CHECK(mlp_train_step(t, x, y, 2, &loss) == -1);
    CHECK(mlp_train_step(t, x, y, 3, &loss) == -1);
    mlp_act a;
    mlp_init in;
    CHECK(mlp_act_parse("identity", &a) == 0 && a == MLP_ACT_LINEAR);
    CHECK(mlp_act_parse("swish", &a) == -1);
    CHECK(mlp_init_parse("he", &in) == 0 && in == MLP_INIT_HE);
    CHECK(mlp_init_parse("glorot", &in) == -1);
    mlp_trainer_free(t);
    mlp_scratch_free(s);
    mlp_free(net);
    mlp_free(net2);
    mlp_free(NULL);
    mlp_scratch_free(NULL);
    mlp_trainer_free(NULL);
}

static void test_inits_have_their_scale(void) {
    int sizes[] = {400, 300, 10};
    mlp *net = mlp_new(2, sizes, MLP_ACT_RELU, NULL, 0);
    const mlp_init kinds[] = {MLP_INIT_ZERO, MLP_INIT_UNIFORM, MLP_INIT_NORMAL, MLP_INIT_XAVIER, MLP_INIT_HE};
    /* Expected standard deviation of layer 0's weights for each. */
    const double sd[] = {0.0, 0.05 / sqrt(3.0), 0.01, sqrt(6.0 / 700) / sqrt(3.0), sqrt(2.0 / 400)};
    for (int k = 0; k < 5; k++) {
        mlp_init_weights(net, kinds[k], 1);
        double ss = 0;
        for (int j = 0; j < 120000; j++) ss += (double)mlp_weight(net, 0)[j] * mlp_weight(net, 0)[j];
        CHECK_NEAR(sqrt(ss / 120000), sd[k], 0.02 * sd[k] + 1e-9);
    }
    mlp_free(net);
}


/* Train a network of awkward sizes (a first layer wider than one 128-column
 * block, a hidden layer wide enough to need its own input gradient block by
 * block, widths that are not multiples of 16, a batch of more than 32 rows)
 * on inputs that are 60% zeros, and return all its parameters. */
static float *train_sparse_case(mlp_act act, float momentum, int dense, int threads, mlp_kernels kernels,
                                int as_rows, size_t *n_out) {
    int sizes[] = {53, 150, 140, 10}; /* 150 and 140: two blocks of transposed weights each */
    CHECK(mlp_kernels_use(kernels, NULL, 0) == 0);
    mlp *net = mlp_new(3, sizes, act, NULL, 0);
    mlp_init_weights(net, MLP_INIT_DEFAULT, 5);
    mlp_sgd_params p = {0.05f, momentum, 40, 0, threads, dense};
    mlp_trainer *t = mlp_trainer_new(net, p, NULL, 0);
    rng r;
    rng_seed(&r, 17);
    float x[40 * 53], backwards[40 * 53];
    const float *rows[40];
    uint8_t y[40];
    for (int step = 0; step < 30; step++) {
        fill_random(x, 40 * 53, &r, 0, 1);
        for (int i = 0; i < 40 * 53; i++) x[i] = x[i] < 0.6f ? 0.0f : x[i];
        for (int i = 0; i < 40; i++) y[i] = (uint8_t)rng_below(&r, 10);
        /* the same batch, its rows stored last to first and passed by pointer */
        for (int i = 0; i < 40; i++) {
            memcpy(backwards + (39 - i) * 53, x + i * 53, sizeof(float) * 53);
            rows[i] = backwards + (39 - i) * 53;
        }
        float loss;
        int n = step % 3 ? 40 : 33;
        /* by pointer, with the hint too (it names this batch: any rows will do, and
         * the result must not change) */
        if (as_rows) mlp_trainer_prefetch(t, rows, n);
        CHECK((as_rows ? mlp_train_step_rows(t, rows, y, n, &loss) : mlp_train_step(t, x, y, n, &loss)) == 0);
    }
    mlp_trainer_sync(t);
    size_t n = 0;
    for (int i = 0; i < 3; i++) n += (size_t)sizes[i] * sizes[i + 1] + sizes[i + 1];
    float *out = malloc(n * sizeof(float)), *at = out;
    for (int i = 0; i < 3; i++) {
        memcpy(at, mlp_weight(net, i), sizeof(float) * sizes[i] * sizes[i + 1]);
        at += sizes[i] * sizes[i + 1];
        memcpy(at, mlp_bias(net, i), sizeof(float) * sizes[i + 1]);
        at += sizes[i + 1];
    }
    *n_out = n;
    mlp_trainer_free(t);
    mlp_free(net);
    mlp_kernels_use(mlp_kernels_auto(), NULL, 0);
    return out;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        worst = d > worst ? d : worst;
    }
    return worst;
}

/* The sparse kernels this CPU can run, widest first. */
static int runnable_sparse(mlp_kernels *out) {
    static const mlp_kernels all[] = {MLP_KERNELS_AVX512, MLP_KERNELS_AVX2, MLP_KERNELS_PORTABLE};
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (mlp_kernels_supported(all[i])) out[n++] = all[i];
    return n;
}

/* The sparse kernels train the same network as BLAS alone (up to rounding),
 * on every version this CPU runs, bit-identical at any thread count and, for
 * AVX2 and AVX-512, bit-identical to each other. */
static void test_sparse_training_matches_dense(void) {
    const mlp_act acts[] = {MLP_ACT_RELU, MLP_ACT_SIGMOID};
    mlp_kernels ks[3];
    int nk = runnable_sparse(ks);
    CHECK(nk >= 1 && ks[nk - 1] == MLP_KERNELS_PORTABLE);
    for (int ai = 0; ai < 2; ai++) {
        for (int m = 0; m < 2; m++) {
            float mom = m ? 0.9f : 0.0f;
            size_t n;
            float *dense = train_sparse_case(acts[ai], mom, 1, 1, ks[0], 0, &n);
            float *dense_rows = train_sparse_case(acts[ai], mom, 1, 2, ks[0], 1, &n);
            float *dense_k = train_sparse_case(acts[ai], mom, 0, 2, MLP_KERNELS_DENSE, 0, &n);
            CHECK_MSG(memcmp(dense, dense_k, n * sizeof(float)) == 0, "%s momentum %g: the dense kernels are not --dense",
                      mlp_act_name(acts[ai]), mom);
            float *simd = NULL;
            for (int ki = 0; ki < nk; ki++) {
                const char *kn = mlp_kernels_name(ks[ki]);
                float *sp1 = train_sparse_case(acts[ai], mom, 0, 1, ks[ki], 0, &n);
                float *sp2 = train_sparse_case(acts[ai], mom, 0, 2, ks[ki], 0, &n);
                float *sp3 = train_sparse_case(acts[ai], mom, 0, 3, ks[ki], 1, &n);
                CHECK(memcmp(dense, sp1, n * sizeof(float)) != 0); /* it did take the other path */
                CHECK_MSG(max_rel_diff(sp1, dense, n) < 1e-4, "%s %s momentum %g: sparse vs dense differ by %g",
                          kn, mlp_act_name(acts[ai]), mom, max_rel_diff(sp1, dense, n));
                CHECK_MSG(memcmp(sp1, sp2, n * sizeof(float)) == 0 && memcmp(sp1, sp3, n * sizeof(float)) == 0,
                          "%s %s momentum %g: 1, 2 and 3 threads (or rows passed by pointer) differ", kn,
                          mlp_act_name(acts[ai]), mom);
                if (ks[ki] != MLP_KERNELS_PORTABLE) {
                    if (simd)
                        CHECK_MSG(memcmp(simd, sp1, n * sizeof(float)) == 0, "%s %s momentum %g: not AVX-512's bits",
                                  kn, mlp_act_name(acts[ai]), mom);
                    else simd = sp1, sp1 = NULL;
                }
                free(sp1); free(sp2); free(sp3);
            }
            CHECK_MSG(memcmp(dense, dense_rows, n * sizeof(float)) == 0, "%s momentum %g: dense, by rows",
                      mlp_act_name(acts[ai]), mom);
            free(dense); free(dense_rows); free(dense_k); free(simd);
        }
    }
}

/* The kernels themselves against the plain definition, on both implementations. */
static void test_sparse_kernels(void) {
    enum { N = 37, K = 45, O = 150, LDW = 160 };
    rng r;
    rng_seed(&r, 23);
    static float x[N * K], wt[K * LDW], bias[O], z[N * O], d[N * O], g[K * LDW], w2[K * LDW];
    fill_random(x, N * K, &r, -1, 1);
    for (int i = 0; i < N * K; i++) x[i] = fabsf(x[i]) < 0.5f ? 0.0f : x[i];
    for (int j = 0; j < K; j++) x[3 * K + j] = 0.0f;       /* an all-zero row */
    for (int j = 0; j < K; j++) x[5 * K + j] = 0.25f + 0.01f * j; /* and one without a zero */
    for (int s = 0; s < N; s++) x[s * K + 7] = 0.0f;       /* an input that is 0 in every row */
    fill_random(wt, K * LDW, &r, -1, 1);
    for (int p = 0; p < K; p++)
        for (int c = O; c < LDW; c++) wt[p * LDW + c] = 0.0f;
    fill_random(bias, O, &r, -1, 1);
    fill_random(d, N * O, &r, -1, 1);
    static float z_simd[N * O], g_simd[K * LDW];
    int have_simd = 0;
    for (int impl = SP_ISA_AVX512; impl >= SP_ISA_PORTABLE; impl--) {
        if (!sp_isa_supported((sp_isa)impl)) continue;
        CHECK(sp_isa_use((sp_isa)impl) == 0);
        const float *xr[N];
        for (int r = 0; r < N; r++) xr[r] = x + r * K;
        sp_batch b;
        CHECK(sp_batch_init(&b, 64, 64) == 0);
        sp_build(&b, xr, N, K);
        for (int relu = 0; relu < 2; relu++) {
            /* rows cut at an even row, then an odd count (a row without a partner) */
            sp_forward(xr, K, wt, LDW, bias, z, O, relu, 0, 20, 0, 128);
            sp_forward(xr, K, wt, LDW, bias, z, O, relu, 20, N, 0, 128);
            sp_forward(xr, K, wt, LDW, bias, z, O, relu, 0, N, 128, O);
            double worst = 0;
            for (int s = 0; s < N; s++)
                for (int c = 0; c < O; c++) {
                    double ref = bias[c];
                    for (int p = 0; p < K; p++) ref += (double)x[s * K + p] * wt[p * LDW + c];
                    if (relu && ref < 0) ref = 0;
                    worst = fmax(worst, fabs(ref - z[s * O + c]));
                }
            CHECK_MSG(worst < 1e-5, "impl %d relu %d: forward off by %g", impl, relu, worst);
        }
        /* set: the gradient itself, zero rows for inputs that are zero in every row */
        memset(g, 0x7f, sizeof g);
        sp_weight_grad(&b, xr, d, O, g, LDW, 0.0f, 1, 0, K, 0, O);
        double worst = 0;
        for (int p = 0; p < K; p++)
            for (int c = 0; c < LDW; c++) {
                double ref = 0;
                for (int s = 0; s < N && c < O; s++) ref += (double)x[s * K + p] * d[s * O + c];
                worst = fmax(worst, fabs(ref - g[p * LDW + c]));
            }
        CHECK_MSG(worst < 1e-5, "impl %d: weight gradient off by %g", impl, worst);
        /* update in two input ranges: w += alpha g */
        memcpy(w2, wt, sizeof w2);
        sp_weight_grad(&b, xr, d, O, w2, LDW, -0.5f, 0, 0, 20, 0, O);
        sp_weight_grad(&b, xr, d, O, w2, LDW, -0.5f, 0, 20, K, 0, O);
        worst = 0;
        for (int p = 0; p < K; p++)
            for (int c = 0; c < O; c++) worst = fmax(worst, fabs(wt[p * LDW + c] - 0.5 * g[p * LDW + c] - w2[p * LDW + c]));
        CHECK_MSG(worst < 1e-6, "impl %d: update off by %g", impl, worst);
        CHECK(memcmp(&w2[7 * LDW], &wt[7 * LDW], sizeof(float) * LDW) == 0); /* untouched */
        float gb[O];
        sp_bias_grad(d, O, N, gb, 0.0f, 1, 0, O);
        worst = 0;
        for (int c = 0; c < O; c++) {
            double ref = 0;
            for (int s = 0; s < N; s++) ref += d[s * O + c];
            worst = fmax(worst, fabs(ref - gb[c]));
        }
        CHECK_MSG(worst < 1e-5, "impl %d: bias gradient off by %g", impl, worst);
        /* AVX2 and AVX-512 take the same sums in the same order: the same bits */
        if (impl != SP_ISA_PORTABLE) {
            if (have_simd)
                CHECK_MSG(!memcmp(z, z_simd, sizeof z) && !memcmp(g, g_simd, sizeof g), "impl %d: not AVX-512's bits",
                          impl);
            memcpy(z_simd, z, sizeof z);
            memcpy(g_simd, g, sizeof g);
            have_simd = 1;
        }
        sp_batch_free(&b);
    }
    sp_isa_use(sp_isa_best());
}

/* A layer wider than the AVX2 forward kernel's masks (4,096 inputs) takes
 * its scanning path; every version still gives the plain definition. */
static void test_sparse_forward_wide_input(void) {
    enum { N = 5, K = 4100, O = 20, LDW = 32 };
    static float x[N * K], wt[K * LDW], bias[O], z[N * O], z_simd[N * O];
    int have_simd = 0;
    rng r;
    rng_seed(&r, 41);
    fill_random(x, N * K, &r, -1, 1);
    for (int i = 0; i < N * K; i++) x[i] = fabsf(x[i]) < 0.7f ? 0.0f : x[i];
    fill_random(wt, K * LDW, &r, -1, 1);
    fill_random(bias, O, &r, -1, 1);
    const float *xr[N];
    for (int i = 0; i < N; i++) xr[i] = x + i * K;
    for (int impl = SP_ISA_AVX512; impl >= SP_ISA_PORTABLE; impl--) {
        if (sp_isa_use((sp_isa)impl)) continue;
        sp_forward(xr, K, wt, LDW, bias, z, O, 0, 0, N, 0, O);
        double worst = 0;
        for (int s = 0; s < N; s++)
            for (int c = 0; c < O; c++) {
                double ref = bias[c];
                for (int p = 0; p < K; p++) ref += (double)x[s * K + p] * wt[p * LDW + c];
                worst = fmax(worst, fabs(ref - z[s * O + c]));
            }
        CHECK_MSG(worst < 1e-4, "impl %d: a %d-input forward off by %g", impl, K, worst);
        /* AVX2 takes the inputs in chunks, its sums stored between them: still AVX-512's bits */
        if (impl != SP_ISA_PORTABLE) {
            if (have_simd) CHECK_MSG(!memcmp(z, z_simd, sizeof z), "impl %d: not AVX-512's bits", impl);
            memcpy(z_simd, z, sizeof z);
            have_simd = 1;
        }
    }
    sp_isa_use(sp_isa_best());
}

/* Every kernel choice this CPU runs can be chosen, the others are refused
 * with a reason, and LOUPE_MLP_KERNELS is read as documented. */
static void test_kernel_choice(void) {
    char err[MLP_ERR_LEN];
    for (int k = MLP_KERNELS_DENSE; k <= MLP_KERNELS_AVX512; k++) {
        mlp_kernels parsed;
        CHECK(mlp_kernels_parse(mlp_kernels_name((mlp_kernels)k), &parsed) == 0 && parsed == (mlp_kernels)k);
        int rc = mlp_kernels_use((mlp_kernels)k, err, sizeof err);
        if (mlp_kernels_supported((mlp_kernels)k)) {
            CHECK(rc == 0 && mlp_kernels_current() == (mlp_kernels)k);
        } else {
            CHECK(rc == -1);
            CHECK_CONTAINS(err, "this CPU cannot run");
        }
    }
    CHECK(mlp_kernels_supported(MLP_KERNELS_DENSE) && mlp_kernels_supported(MLP_KERNELS_PORTABLE));
    /* the automatic choice is never the portable C: BLAS is faster than it */
    CHECK(mlp_kernels_auto() != MLP_KERNELS_PORTABLE);
    CHECK(mlp_kernels_auto() == (sp_isa_supported(SP_ISA_AVX512) ? MLP_KERNELS_AVX512
                                 : sp_isa_supported(SP_ISA_AVX2) ? MLP_KERNELS_AVX2
                                                                 : MLP_KERNELS_DENSE));
    setenv("LOUPE_MLP_KERNELS", "sse9", 1);
    CHECK(mlp_kernels_from_env(err, sizeof err) == -1);
    CHECK_CONTAINS(err, "LOUPE_MLP_KERNELS is 'sse9'");
    setenv("LOUPE_MLP_KERNELS", "portable", 1);
    CHECK(mlp_kernels_from_env(err, sizeof err) == 0 && mlp_kernels_current() == MLP_KERNELS_PORTABLE);
    CHECK(sp_isa_current() == SP_ISA_PORTABLE);
    setenv("LOUPE_MLP_KERNELS", "auto", 1);
    CHECK(mlp_kernels_from_env(err, sizeof err) == 0 && mlp_kernels_current() == mlp_kernels_auto());
    unsetenv("LOUPE_MLP_KERNELS");
}

/* The forward pass (and the input gradient, which runs it) gives the dense
 * result on every kernel, for batches of 1 to 33 rows, and sees a change of
 * the weights at once (the transposed copy is rebuilt, never stale). */
static void test_forward_on_every_kernel(void) {
    int sizes[] = {53, 150, 20, 10};
    for (int ai = 0; ai < 2; ai++) {
        mlp_act act = ai ? MLP_ACT_TANH : MLP_ACT_RELU;
        mlp *net = mlp_new(3, sizes, act, NULL, 0);
        mlp_init_weights(net, MLP_INIT_DEFAULT, 3);
        rng r;
        rng_seed(&r, 31);
        for (int i = 0; i < 3; i++) fill_random(mlp_bias(net, i), (size_t)sizes[i + 1], &r, -0.3, 0.3);
        static float x[33 * 53], ref[33 * 10], out[33 * 10], gref[53], g[53];
        fill_random(x, 33 * 53, &r, 0, 1);
        for (int i = 0; i < 33 * 53; i++) x[i] = x[i] < 0.5f ? 0.0f : x[i];
        mlp_scratch *s = mlp_scratch_new(net, 33);
        for (int round = 0; round < 2; round++) {
            CHECK(mlp_kernels_use(MLP_KERNELS_DENSE, NULL, 0) == 0);
            CHECK(mlp_forward(net, s, x, 33, ref) == 0);
            CHECK(mlp_input_grad(net, s, x, 3, gref, NULL) == 0);
            for (int k = MLP_KERNELS_PORTABLE; k <= MLP_KERNELS_AVX512; k++) {
                if (mlp_kernels_use((mlp_kernels)k, NULL, 0)) continue;
                for (int n = 1; n <= 33; n += 16) {
                    memset(out, 0, sizeof out);
                    CHECK(mlp_forward(net, s, x, n, out) == 0);
                    double worst = 0;
                    for (int j = 0; j < n * 10; j++) worst = fmax(worst, fabs((double)out[j] - ref[j]));
                    CHECK_MSG(worst < 1e-4, "%s %s, %d rows, round %d: off the dense forward by %g",
                              mlp_kernels_name((mlp_kernels)k), mlp_act_name(act), n, round, worst);
                }
                CHECK(mlp_input_grad(net, s, x, 3, g, NULL) == 0);
                double worst = 0;
                for (int j = 0; j < 53; j++) worst = fmax(worst, fabs((double)g[j] - gref[j]));
                CHECK_MSG(worst < 1e-4, "%s: input gradient off by %g", mlp_kernels_name((mlp_kernels)k), worst);
            }
            /* change the weights: every kernel must see it */
            float *w = mlp_weight(net, 0);
            for (int j = 0; j < 53 * 150; j += 7) w[j] = -w[j];
        }
        /* and after a training step too */
        mlp_kernels_use(mlp_kernels_auto(), NULL, 0);
        mlp_forward(net, s, x, 1, out);
        mlp_sgd_params p = mlp_sgd_default_params();
        p.lr = 0.5f;
        mlp_trainer *t = mlp_trainer_new(net, p, NULL, 0);
        uint8_t y = 1;
        float loss;
        CHECK(mlp_train_step(t, x, &y, 1, &loss) == 0);
        mlp_trainer_sync(t);
        float after[10];
        CHECK(mlp_forward(net, s, x, 1, after) == 0);
        CHECK(mlp_kernels_use(MLP_KERNELS_DENSE, NULL, 0) == 0);
        CHECK(mlp_forward(net, s, x, 1, ref) == 0);
        CHECK(memcmp(after, out, sizeof after) != 0); /* the step changed it */
        double worst = 0;
        for (int j = 0; j < 10; j++) worst = fmax(worst, fabs((double)after[j] - ref[j]));
        CHECK_MSG(worst < 1e-4, "after a step: off the dense forward by %g", worst);
        mlp_trainer_free(t);
        mlp_scratch_free(s);
        mlp_free(net);
        mlp_kernels_use(mlp_kernels_auto(), NULL, 0);
    }
}

int main(void) {
    RUN(test_param_gradients_match_finite_differences);
    RUN(test_input_gradient_matches_finite_differences);
    RUN(test_same_seed_bit_identical);
    RUN(test_steps_reduce_loss);
    RUN(test_fused_update_equals_gradient_step);
    RUN(test_softmax_and_xent_are_stable);
    RUN(test_divergence_keeps_last_finite_weights);
    RUN(test_forward_is_thread_safe);
    RUN(test_bad_arguments_are_refused);
    RUN(test_inits_have_their_scale);
    RUN(test_sparse_kernels);
    RUN(test_sparse_training_matches_dense);
    RUN(test_sparse_forward_wide_input);
    RUN(test_kernel_choice);
    RUN(test_forward_on_every_kernel);
    return check_report();
}
