/* mlp.c -- dense layers, activations, softmax cross-entropy, backward and SGD. */
#include "mlp.h"
#include "errbuf.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "rng.h"
#include "sparse.h"

/* ==== Names ==== */

static const char *const act_names[] = {"sigmoid", "tanh", "relu", "linear"};
static const char *const init_names[] = {"default", "zero", "uniform", "normal", "xavier", "he"};

const char *mlp_act_name(mlp_act act) {
    return (unsigned)act < 4 ? act_names[act] : "unknown";
}

int mlp_act_parse(const char *name, mlp_act *out) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, act_names[i])) { *out = (mlp_act)i; return 0; }
    if (!strcmp(name, "identity")) { *out = MLP_ACT_LINEAR; return 0; } /* sklearn's name */
    return -1;
}

const char *mlp_init_name(mlp_init init) {
    return (unsigned)init < 6 ? init_names[init] : "unknown";
}

int mlp_init_parse(const char *name, mlp_init *out) {
    for (int i = 0; i < 6; i++)
        if (!strcmp(name, init_names[i])) { *out = (mlp_init)i; return 0; }
    return -1;
}

/* ==== Kernels ==== */

static const char *const kernel_names[] = {"dense", "portable", "avx2", "avx512"};

const char *mlp_kernels_name(mlp_kernels k) {
    return (unsigned)k <= MLP_KERNELS_AVX512 ? kernel_names[k] : "unknown";
}

int mlp_kernels_parse(const char *name, mlp_kernels *out) {
    for (int i = 0; i <= MLP_KERNELS_AVX512; i++)
        if (!strcmp(name, kernel_names[i])) {
            *out = (mlp_kernels)i;
            return 0;
        }
    return -1;
}

/* The sparse kernels' version behind k (not for dense). */
static sp_isa isa_of(mlp_kernels k) {
    return k == MLP_KERNELS_AVX512 ? SP_ISA_AVX512 : k == MLP_KERNELS_AVX2 ? SP_ISA_AVX2 : SP_ISA_PORTABLE;
}

int mlp_kernels_supported(mlp_kernels k) {
    if ((unsigned)k > MLP_KERNELS_AVX512) return 0;
    return k == MLP_KERNELS_DENSE || sp_isa_supported(isa_of(k));
}

mlp_kernels mlp_kernels_auto(void) {
    switch (sp_isa_best()) {
    case SP_ISA_AVX512: return MLP_KERNELS_AVX512;
    case SP_ISA_AVX2: return MLP_KERNELS_AVX2;
    default: return MLP_KERNELS_DENSE;
    }
}

/* The kernels in use, -1 until decided (atomic for the same reason as sparse.c's). */
static _Atomic int cur_kernels = -1;

int mlp_kernels_use(mlp_kernels k, char *err, size_t errlen) {
    static const char *const needs[] = {"", "", "AVX2 and FMA", "AVX-512F"};
    if ((unsigned)k > MLP_KERNELS_AVX512) {
        errbuf_set(err, errlen, "unknown kernels %d", (int)k);
        return -1;
    }
    if (!mlp_kernels_supported(k)) {
        errbuf_set(err, errlen, "this CPU cannot run the %s kernels: it lacks %s (it runs %s at most)",
                   kernel_names[k], needs[k], sp_isa_name(sp_isa_best()));
        return -1;
    }
    /* dense keeps the widest sparse version for what still calls it (nothing in a step) */
    sp_isa_use(k == MLP_KERNELS_DENSE ? sp_isa_best() : isa_of(k));
    atomic_store_explicit(&cur_kernels, (int)k, memory_order_relaxed);
    return 0;
}

mlp_kernels mlp_kernels_current(void) {
    int k = atomic_load_explicit(&cur_kernels, memory_order_relaxed);
    if (k < 0) {
        k = (int)mlp_kernels_auto();
        atomic_store_explicit(&cur_kernels, k, memory_order_relaxed);
    }
    return (mlp_kernels)k;
}

int mlp_kernels_from_env(char *err, size_t errlen) {
    const char *name = getenv("LOUPE_MLP_KERNELS");
    mlp_kernels k;
    if (!name || !*name || !strcmp(name, "auto")) k = mlp_kernels_auto();
    else if (mlp_kernels_parse(name, &k)) {
        errbuf_set(err, errlen, "LOUPE_MLP_KERNELS is '%.40s'; use auto, avx512, avx2, portable or dense", name);
        return -1;
    }
    if (mlp_kernels_use(k, err, errlen)) {
        char why[200];
        snprintf(why, sizeof why, "%s", err ? err : "");
        errbuf_set(err, errlen, "LOUPE_MLP_KERNELS=%s: %s", name, why);
        return -1;
    }
    return 0;
}

/* ==== The network ==== */

/* The weights transposed, for the sparse kernels' forward pass: built from
 * the network's weights by the first forward pass after they change. */
typedef struct {
    pthread_mutex_t lock;          /* held while building */
    atomic_uint built;             /* gen + 1 of the weights wt holds; 0: none */
    float *wt[MLP_MAX_LAYERS];     /* [sizes[i], ldt[i]]: row p holds input p's weight to every output */
    int ldt[MLP_MAX_LAYERS];       /* round16(sizes[i + 1]), the padding 0 */
} infer_cache;

struct mlp {
    int n_layers;
    int sizes[MLP_MAX_LAYERS + 1];
    mlp_act act;
    size_t n_params;
    float *params;                 /* every weight and bias, one block */
    float *w[MLP_MAX_LAYERS];      /* [sizes[i+1], sizes[i]] into params */
    float *b[MLP_MAX_LAYERS];      /* [sizes[i+1]] into params */
    unsigned gen;                  /* bumped by every change of the weights */
    infer_cache *ic;
};

/* The weights changed: the next forward pass rebuilds the transposed copy. */
static void weights_changed(mlp *net) { net->gen++; }

void mlp_weights_changed(mlp *net) { weights_changed(net); }

/* Lay out weights then bias of each layer in one block, 64-byte aligned per tensor. */
static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static size_t params_floats(int n_layers, const int *sizes) {
    size_t total = 0;
    for (int i = 0; i < n_layers; i++)
        total += round16((size_t)sizes[i] * sizes[i + 1]) + round16((size_t)sizes[i + 1]);
    return total;
}

/* Point w[i]/b[i] into a block laid out by params_floats. */
static void carve(float *block, int n_layers, const int *sizes, float **w, float **b) {
    float *p = block;
    for (int i = 0; i < n_layers; i++) {
        w[i] = p;
        p += round16((size_t)sizes[i] * sizes[i + 1]);
        b[i] = p;
        p += round16((size_t)sizes[i + 1]);
    }
}

/* 64-byte aligned zeroed floats, or NULL. Free with free(). */
static float *alloc_floats(size_t n) {
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

mlp *mlp_new(int n_layers, const int *sizes, mlp_act act, char *err, size_t errlen) {
    if (n_layers < 1 || n_layers > MLP_MAX_LAYERS) {
        errbuf_set(err, errlen, "a network has 1 to %d layers, not %d", MLP_MAX_LAYERS, n_layers);
        return NULL;
    }
    if ((unsigned)act > MLP_ACT_LINEAR) {
        errbuf_set(err, errlen, "unknown activation %d", (int)act);
        return NULL;
    }
    for (int i = 0; i <= n_layers; i++) {
        if (sizes[i] < 1 || sizes[i] > (1 << 20)) {
            errbuf_set(err, errlen, "layer width %d is %d; widths must be 1 to %d", i, sizes[i], 1 << 20);
            return NULL;
        }
    }
    mlp *net = calloc(1, sizeof *net);
    if (!net) goto nomem;
    net->n_layers = n_layers;
    memcpy(net->sizes, sizes, sizeof(int) * (size_t)(n_layers + 1));
    net->act = act;
    net->params = alloc_floats(params_floats(n_layers, sizes));
    net->ic = calloc(1, sizeof *net->ic);
    if (!net->params || !net->ic) goto nomem;
    pthread_mutex_init(&net->ic->lock, NULL);
    carve(net->params, n_layers, sizes, net->w, net->b);
    for (int i = 0; i < n_layers; i++)
        net->n_params += (size_t)sizes[i] * sizes[i + 1] + sizes[i + 1];
    return net;
nomem:
    mlp_free(net);
    errbuf_set(err, errlen, "out of memory allocating the network");
    return NULL;
}

void mlp_free(mlp *net) {
    if (!net) return;
    if (net->ic) {
        for (int i = 0; i < MLP_MAX_LAYERS; i++) free(net->ic->wt[i]);
        pthread_mutex_destroy(&net->ic->lock);
        free(net->ic);
    }
    free(net->params);
    free(net);
}

void mlp_init_weights(mlp *net, mlp_init init, uint64_t seed) {
    rng r;
    rng_seed(&r, seed);
    weights_changed(net);
    if (init == MLP_INIT_DEFAULT) init = net->act == MLP_ACT_RELU ? MLP_INIT_HE : MLP_INIT_XAVIER;
    for (int i = 0; i < net->n_layers; i++) {
        int in = net->sizes[i], out = net->sizes[i + 1];
        size_t n = (size_t)in * out;
        float *w = net->w[i];
        double a;
        switch (init) {
        case MLP_INIT_ZERO:
            memset(w, 0, n * sizeof *w);
            break;
        case MLP_INIT_UNIFORM:
            for (size_t j = 0; j < n; j++) w[j] = (float)rng_uniform(&r, -0.05, 0.05);
            break;
        case MLP_INIT_NORMAL:
            for (size_t j = 0; j < n; j++) w[j] = (float)(0.01 * rng_normal(&r));
            break;
        case MLP_INIT_XAVIER:
            a = sqrt(6.0 / (in + out));
            for (size_t j = 0; j < n; j++) w[j] = (float)rng_uniform(&r, -a, a);
            break;
        case MLP_INIT_HE:
        default:
            a = sqrt(2.0 / in);
            for (size_t j = 0; j < n; j++) w[j] = (float)(a * rng_normal(&r));
            break;
        }
        memset(net->b[i], 0, (size_t)out * sizeof(float));
    }
}

int mlp_n_layers(const mlp *net) { return net->n_layers; }
int mlp_size(const mlp *net, int i) { return (i >= 0 && i <= net->n_layers) ? net->sizes[i] : 0; }
int mlp_n_inputs(const mlp *net) { return net->sizes[0]; }
int mlp_n_outputs(const mlp *net) { return net->sizes[net->n_layers]; }
mlp_act mlp_activation(const mlp *net) { return net->act; }
size_t mlp_n_params(const mlp *net) { return net->n_params; }
float *mlp_weight(mlp *net, int i) {
    weights_changed(net);
    return net->w[i];
}
float *mlp_bias(mlp *net, int i) { return net->b[i]; }
const float *mlp_weight_c(const mlp *net, int i) { return net->w[i]; }
const float *mlp_bias_c(const mlp *net, int i) { return net->b[i]; }

static int same_shape(const mlp *a, const mlp *b) {
    if (a->n_layers != b->n_layers) return 0;
    return !memcmp(a->sizes, b->sizes, sizeof(int) * (size_t)(a->n_layers + 1));
}

int mlp_copy_params(mlp *dst, const mlp *src) {
    if (!same_shape(dst, src)) return -1;
    weights_changed(dst);
    memcpy(dst->params, src->params, params_floats(src->n_layers, src->sizes) * sizeof(float));
    return 0;
}

int mlp_lerp_params(mlp *dst, const mlp *src, float t) {
    if (!same_shape(dst, src)) return -1;
    weights_changed(dst);
    size_t n = params_floats(src->n_layers, src->sizes);
    for (size_t i = 0; i < n; i++) dst->params[i] += t * (src->params[i] - dst->params[i]);
    return 0;
}

int mlp_params_finite(const mlp *net) {
    for (int i = 0; i < net->n_layers; i++) {
        size_t n = (size_t)net->sizes[i] * net->sizes[i + 1];
        float acc = 0.0f;
        /* x * 0 is NaN exactly when x is NaN or infinite. */
        for (size_t j = 0; j < n; j++) acc += net->w[i][j] * 0.0f;
        for (int j = 0; j < net->sizes[i + 1]; j++) acc += net->b[i][j] * 0.0f;
        if (acc != 0.0f) return 0;
    }
    return 1;
}

/* ==== Activations ==== */

/* The elementwise loops are compiled for AVX-512, AVX2 and baseline x86-64 and
 * the loader picks what the CPU has: one portable binary, vector speed. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define MLP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MLP_VECTOR_CLONES
#endif

/* Apply the activation in place to n values. */
MLP_VECTOR_CLONES
static void act_forward(mlp_act act, float *x, size_t n) {
    switch (act) {
    case MLP_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) x[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case MLP_ACT_TANH:
        for (size_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
        break;
    case MLP_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case MLP_ACT_LINEAR:
        break;
    }
}

/* delta *= act'(z), with the derivative written in terms of the output a = act(z). */
MLP_VECTOR_CLONES
static void act_backward(mlp_act act, const float *a, float *delta, size_t n) {
    switch (act) {
    case MLP_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) delta[i] *= a[i] * (1.0f - a[i]);
        break;
    case MLP_ACT_TANH:
        for (size_t i = 0; i < n; i++) delta[i] *= 1.0f - a[i] * a[i];
        break;
    case MLP_ACT_RELU:
        for (size_t i = 0; i < n; i++) delta[i] = a[i] > 0.0f ? delta[i] : 0.0f;
        break;
    case MLP_ACT_LINEAR:
        break;
    }
}

/* out[n, o] = act(in[n, k] W^T + b) for layer i; the last layer stays linear. */
static void layer_forward(const mlp *net, gemm_team *team, int i, const float *in, int n, float *out) {
    int k = net->sizes[i], o = net->sizes[i + 1];
    const float *b = net->b[i];
    for (int r = 0; r < n; r++) memcpy(out + (size_t)r * o, b, (size_t)o * sizeof(float));
    gemm_nt(team, n, o, k, 1.0f, in, k, net->w[i], k, 1.0f, out, o);
    if (i < net->n_layers - 1) act_forward(net->act, out, (size_t)n * o);
}

/* ==== Softmax and loss ==== */

void mlp_softmax(const float *logits, int k, float *p) {
    float m = logits[0];
    for (int j = 1; j < k; j++) m = logits[j] > m ? logits[j] : m;
    float sum = 0.0f;
    for (int j = 0; j < k; j++) { p[j] = expf(logits[j] - m); sum += p[j]; }
    float inv = 1.0f / sum;
    for (int j = 0; j < k; j++) p[j] *= inv;
}

/* log(sum(exp(z))) computed stably. */
static double logsumexp(const float *z, int k) {
    float m = z[0];
    for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
    double s = 0.0;
    for (int j = 0; j < k; j++) s += exp((double)z[j] - m);
    return m + log(s);
}

double mlp_xent(const float *logits, const uint8_t *y, int n, int k) {
    double total = 0.0;
    for (int r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * k;
        total += logsumexp(z, k) - z[y[r]];
    }
    return total / n;
}

/* ==== Inference ==== */

struct mlp_scratch {
    int n_layers;
    int sizes[MLP_MAX_LAYERS + 1];
    int max_batch;
    float *a[MLP_MAX_LAYERS + 1];   /* a[i]: [max_batch, sizes[i]], i >= 1 */
    float *d[2];                    /* deltas for input_grad: [max width] */
    float *block;
    const float **rows;             /* [max_batch]: the rows of a layer's input, for the sparse kernels */
};

mlp_scratch *mlp_scratch_new(const mlp *net, int max_batch) {
    if (max_batch < 1) return NULL;
    mlp_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n_layers = net->n_layers;
    memcpy(s->sizes, net->sizes, sizeof s->sizes);
    s->max_batch = max_batch;
    int widest = 0;
    size_t total = 0;
    for (int i = 0; i <= net->n_layers; i++) {
        widest = net->sizes[i] > widest ? net->sizes[i] : widest;
        if (i >= 1) total += round16((size_t)max_batch * net->sizes[i]);
    }
    total += 2 * round16((size_t)widest);
    s->block = alloc_floats(total);
    s->rows = calloc((size_t)max_batch, sizeof *s->rows);
    if (!s->block || !s->rows) {
        mlp_scratch_free(s);
        return NULL;
    }
    float *p = s->block;
    for (int i = 1; i <= net->n_layers; i++) {
        s->a[i] = p;
        p += round16((size_t)max_batch * net->sizes[i]);
    }
    s->d[0] = p;
    s->d[1] = p + round16((size_t)widest);
    return s;
}

void mlp_scratch_free(mlp_scratch *s) {
    if (!s) return;
    free(s->block);
    free(s->rows);
    free(s);
}

static int scratch_fits(const mlp *net, const mlp_scratch *s, int n) {
    return s && n >= 1 && n <= s->max_batch && s->n_layers == net->n_layers &&
           !memcmp(s->sizes, net->sizes, sizeof(int) * (size_t)(net->n_layers + 1));
}

static void transpose(float *dst, int ldd, const float *src, int lds, int rows, int cols);

/* The transposed weights for the sparse kernels, built now if the weights
 * changed since; NULL when they cannot be allocated. */
static float *const *infer_weights(const mlp *net) {
    infer_cache *ic = net->ic;
    unsigned want = net->gen + 1;
    if (atomic_load_explicit(&ic->built, memory_order_acquire) == want) return ic->wt;
    pthread_mutex_lock(&ic->lock);
    if (atomic_load_explicit(&ic->built, memory_order_relaxed) != want) {
        int ok = 1;
        for (int i = 0; i < net->n_layers && ok; i++) {
            int k = net->sizes[i], o = net->sizes[i + 1];
            ic->ldt[i] = (int)round16((size_t)o);
            if (!ic->wt[i]) ic->wt[i] = alloc_floats((size_t)k * ic->ldt[i]); /* padding stays 0 */
            if (!ic->wt[i]) ok = 0;
            else transpose(ic->wt[i], ic->ldt[i], net->w[i], k, k, o);
        }
        atomic_store_explicit(&ic->built, ok ? want : 0u, memory_order_release);
    }
    pthread_mutex_unlock(&ic->lock);
    return atomic_load_explicit(&ic->built, memory_order_acquire) == want ? ic->wt : NULL;
}

/* Layer i over n rows of in [n, k] into out [n, o] with the sparse kernels and
 * the transposed weights wt. */
static void layer_forward_sparse(const mlp *net, mlp_scratch *s, float *const *wt, int i, const float *in, int n,
                                 float *out) {
    int k = net->sizes[i], o = net->sizes[i + 1], hidden = i < net->n_layers - 1;
    int relu = hidden && net->act == MLP_ACT_RELU;
    for (int r = 0; r < n; r++) s->rows[r] = in + (size_t)r * k;
    sp_forward(s->rows, k, wt[i], net->ic->ldt[i], net->b[i], out, o, relu, 0, n, 0, o);
    if (hidden && !relu) act_forward(net->act, out, (size_t)n * o);
}

/* Forward through every layer on the kernels in use, each layer's output in
 * out_of(i) (the last one's in logits when given). */
static void forward_all(const mlp *net, mlp_scratch *s, const float *x, int n, float *logits) {
    float *const *wt = mlp_kernels_current() == MLP_KERNELS_DENSE ? NULL : infer_weights(net);
    const float *in = x;
    for (int i = 0; i < net->n_layers; i++) {
        float *out = i == net->n_layers - 1 && logits ? logits : s->a[i + 1];
        if (wt) layer_forward_sparse(net, s, wt, i, in, n, out);
        else layer_forward(net, NULL, i, in, n, out);
        in = out;
    }
}

int mlp_forward(const mlp *net, mlp_scratch *s, const float *x, int n, float *logits) {
    if (!scratch_fits(net, s, n)) return -1;
    forward_all(net, s, x, n, logits);
    return 0;
}

int mlp_input_grad(const mlp *net, mlp_scratch *s, const float *x, int target,
                   float *grad, float *logits) {
    return mlp_input_grad_ex(net, s, x, target, 0, grad, logits);
}

int mlp_input_grad_ex(const mlp *net, mlp_scratch *s, const float *x, int target, int guided,
                      float *grad, float *logits) {
    int L = net->n_layers;
    if (!scratch_fits(net, s, 1) || target < 0 || target >= net->sizes[L]) return -1;
    if (guided && net->act != MLP_ACT_RELU) return -1;
    forward_all(net, s, x, 1, NULL); /* every layer's output kept in s->a[1..L] */
    if (logits) memcpy(logits, s->a[L], (size_t)net->sizes[L] * sizeof(float));
    /* d score_target / d z_L is one-hot at target. */
    float *delta = s->d[0], *prev = s->d[1];
    memset(delta, 0, (size_t)net->sizes[L] * sizeof(float));
    delta[target] = 1.0f;
    for (int i = L - 1; i >= 0; i--) {
        float *dst = i == 0 ? grad : prev;
        /* [1, in] = [1, out] W [out, in] */
        gemm_nn(NULL, 1, net->sizes[i], net->sizes[i + 1], 1.0f, delta, net->sizes[i + 1],
                net->w[i], net->sizes[i], 0.0f, dst, net->sizes[i]);
        if (i > 0) {
            act_backward(net->act, s->a[i], dst, (size_t)net->sizes[i]);
            if (guided) /* guided backprop: only positive gradients pass a relu */
                for (int j = 0; j < net->sizes[i]; j++) dst[j] = dst[j] > 0.0f ? dst[j] : 0.0f;
            float *t = delta; delta = prev; prev = t;
        }
    }
    return 0;
}

/* ==== Training ==== */

mlp_sgd_params mlp_sgd_default_params(void) {
    mlp_sgd_params p = {0.1f, 0.0f, 32, 0, 1, 0};
    return p;
}

/* Outputs per block of a sparse layer's transposed weights. */
#define SP_BW 128
/* Inputs per chunk of a dense layer's weight gradient. */
#define DENSE_COLS 64
/* Below this many multiply-adds a layer's gradient (and a sparse layer's
 * forward pass) runs as one piece: splitting it costs more than it saves. */
#define SP_SPLIT_MIN_MACS (200 * 1024)

/* The trainer's per-step state (see step()). */
typedef struct {
    mlp_trainer *t;
    int i, n;              /* layer, batch rows */
    int col_blocks;        /* blocks of `cols` outputs */
    int cols;              /* SP_BW, or a multiple of it so that there are at most 32 blocks */
    int groups;            /* row groups (forward) or input groups (gradient) per block */
    const float *const *in; /* the rows of the layer's input */
    float *out;            /* forward: its output [n, out] */
    const float *d;        /* gradient: d loss / d out [n, out] */
    float *dst;            /* gradient: wt[i] (update) or gt[i] (set) */
    float *bias_dst;
    float alpha;
    int set;
} sp_job;

typedef struct {
    mlp_trainer *t;
    int i, n, chunks;
    const float *a, *d;    /* the layer's input [n, in]; d loss / d out [n, out] */
    float *dw, *db, alpha, beta;
} dense_job;

typedef struct {
    mlp_trainer *t;
    const float *const *xr;   /* the batch's rows, the first layer's input */
    const float *x;           /* the same in one block (a dense first layer only) */
    const uint8_t *y;
    int n;
    double loss[64];          /* per row chunk: summed cross-entropy */
    /* part C: each layer's job, and which (layer, chunk) each of its chunks is */
    sp_job sj[MLP_MAX_LAYERS];
    dense_job dj[MLP_MAX_LAYERS];
    unsigned char layer_of[64], chunk_of[64];
} step_ctx;

struct mlp_trainer {
    mlp *net;
    mlp_sgd_params p;
    mlp_scratch *s;                /* activations of the batch */
    gemm_team *team;               /* splits the large GEMMs; NULL with one thread */
    float *dout[MLP_MAX_LAYERS];   /* d loss / d (output of layer i) [max_batch, sizes[i + 1]] */
    float *grads;                  /* gradient block, same layout as params */
    float *gw[MLP_MAX_LAYERS], *gb[MLP_MAX_LAYERS];
    float *vel;                    /* momentum block, same layout; NULL without momentum */
    float *vw[MLP_MAX_LAYERS], *vb[MLP_MAX_LAYERS];
    float *ones;                   /* [max_batch] of 1, for bias sums as a GEMV */
    float *dblock;
    /* Layers whose input is mostly zeros (the first; every one after a relu)
     * train over the nonzeros (sparse.h), with their weights kept here
     * transposed as the master copy (see mlp_trainer_sync), in blocks of
     * SP_BW outputs: wt[i] is [blocks][in][ldw[i]], so the columns one thread
     * owns are one stretch of memory that no other core's prefetches touch. */
    int sparse[MLP_MAX_LAYERS];
    int ldw[MLP_MAX_LAYERS];       /* columns of a block: SP_BW, or fewer for a narrow layer */
    int blocks[MLP_MAX_LAYERS];
    float *wt[MLP_MAX_LAYERS];
    float *vt[MLP_MAX_LAYERS];     /* momentum of wt, same layout; NULL without momentum */
    float *gt[MLP_MAX_LAYERS];     /* a gradient laid out like wt[i] (momentum, mlp_compute_grads) */
    /* The nonzeros of each sparse layer's input, indexed by every team member
     * for itself (spb[i * threads + member]): a member reads only what its own
     * core wrote, and no cache line of the index moves between cores. */
    sp_batch *spb;
    unsigned *spb_step;            /* the step each of them was last built for */
    const float **rows;            /* [layers][max_batch]: the rows of each layer's input */
    float *xbuf;                   /* [max_batch, in]: a batch given as rows, gathered for BLAS */
    unsigned step_no;
    int stale;                     /* wt does not yet hold the network's weights */
    const float **next_rows;       /* [max_batch]: the next step's rows (mlp_trainer_prefetch) */
    int n_next;
    step_ctx ctx;
};

mlp_trainer *mlp_trainer_new(mlp *net, mlp_sgd_params p, char *err, size_t errlen) {
    if (!(p.lr > 0.0f) || !isfinite(p.lr)) {
        errbuf_set(err, errlen, "learning rate must be a positive number, not %g", (double)p.lr);
        return NULL;
    }
    if (!(p.momentum >= 0.0f && p.momentum < 1.0f)) {
        errbuf_set(err, errlen, "momentum must be in [0, 1), not %g", (double)p.momentum);
        return NULL;
    }
    if (p.max_batch < 1) {
        errbuf_set(err, errlen, "batch size must be at least 1, not %d", p.max_batch);
        return NULL;
    }
    if (p.threads < 1 || p.threads > 64) {
        errbuf_set(err, errlen, "threads must be 1 to 64, not %d", p.threads);
        return NULL;
    }
    mlp_trainer *t = calloc(1, sizeof *t);
    if (!t) goto nomem;
    t->net = net;
    t->p = p;
    t->s = mlp_scratch_new(net, p.max_batch);
    if (!t->s) goto nomem;
    if (p.threads > 1) {
        t->team = gemm_team_new(p.threads);
        if (!t->team) {
            mlp_trainer_free(t);
            errbuf_set(err, errlen, "cannot start %d training threads", p.threads);
            return NULL;
        }
    }
    size_t dsz = round16((size_t)p.max_batch);
    for (int i = 0; i < net->n_layers; i++) dsz += round16((size_t)p.max_batch * net->sizes[i + 1]);
    t->dblock = alloc_floats(dsz);
    if (!t->dblock) goto nomem;
    float *at = t->dblock;
    for (int i = 0; i < net->n_layers; i++) {
        t->dout[i] = at;
        at += round16((size_t)p.max_batch * net->sizes[i + 1]);
    }
    t->ones = at;
    for (int r = 0; r < p.max_batch; r++) t->ones[r] = 1.0f;
    size_t pf = params_floats(net->n_layers, net->sizes);
    t->grads = alloc_floats(pf);
    if (!t->grads) goto nomem;
    carve(t->grads, net->n_layers, net->sizes, t->gw, t->gb);
    if (p.momentum > 0.0f) {
        t->vel = alloc_floats(pf);
        if (!t->vel) goto nomem;
        carve(t->vel, net->n_layers, net->sizes, t->vw, t->vb);
    }
    int members = p.threads;
    t->spb = calloc((size_t)MLP_MAX_LAYERS * members, sizeof *t->spb);
    t->spb_step = calloc((size_t)MLP_MAX_LAYERS * members, sizeof *t->spb_step);
    if (!t->spb || !t->spb_step) goto nomem;
    for (int i = 0; i < net->n_layers; i++) {
        t->sparse[i] = !p.dense && mlp_kernels_current() != MLP_KERNELS_DENSE && (i == 0 || net->act == MLP_ACT_RELU);
        if (!t->sparse[i]) continue;
        int k = net->sizes[i];
        int o = net->sizes[i + 1];
        t->ldw[i] = o > SP_BW ? SP_BW : (int)round16((size_t)o);
        t->blocks[i] = (o + t->ldw[i] - 1) / t->ldw[i];
        size_t n = (size_t)t->blocks[i] * k * t->ldw[i];
        t->wt[i] = alloc_floats(n);
        t->gt[i] = alloc_floats(n);
        if (!t->wt[i] || !t->gt[i]) goto nomem;
        for (int m = 0; m < members; m++)
            if (sp_batch_init(&t->spb[i * members + m], p.max_batch, k)) goto nomem;
        if (p.momentum > 0.0f && !(t->vt[i] = alloc_floats(n))) goto nomem;
    }
    t->rows = calloc((size_t)net->n_layers * p.max_batch, sizeof *t->rows);
    t->xbuf = alloc_floats((size_t)p.max_batch * net->sizes[0]);
    t->next_rows = calloc((size_t)p.max_batch, sizeof *t->next_rows);
    if (!t->rows || !t->xbuf || !t->next_rows) goto nomem;
    for (int i = 1; i < net->n_layers; i++)
        for (int r = 0; r < p.max_batch; r++) t->rows[i * p.max_batch + r] = t->s->a[i] + (size_t)r * net->sizes[i];
    t->stale = 1;
    return t;
nomem:
    mlp_trainer_free(t);
    errbuf_set(err, errlen, "out of memory allocating the trainer");
    return NULL;
}

void mlp_trainer_free(mlp_trainer *t) {
    if (!t) return;
    mlp_scratch_free(t->s);
    gemm_team_free(t->team);
    free(t->dblock);
    free(t->grads);
    free(t->vel);
    for (int i = 0; i < MLP_MAX_LAYERS; i++) {
        free(t->wt[i]);
        free(t->vt[i]);
        free(t->gt[i]);
        for (int m = 0; t->spb && m < t->p.threads; m++) sp_batch_free(&t->spb[i * t->p.threads + m]);
    }
    free(t->spb);
    free(t->spb_step);
    free(t->rows);
    free(t->xbuf);
    free(t->next_rows);
    free(t);
}

/* dst [rows, ldd] = src [cols, lds]^T over rows x cols. */
static void transpose(float *dst, int ldd, const float *src, int lds, int rows, int cols) {
    enum { TB = 32 };
    for (int r0 = 0; r0 < rows; r0 += TB)
        for (int c0 = 0; c0 < cols; c0 += TB)
            for (int r = r0; r < rows && r < r0 + TB; r++)
                for (int c = c0; c < cols && c < c0 + TB; c++)
                    dst[(size_t)r * ldd + c] = src[(size_t)c * lds + r];
}

/* Block b of a sparse layer's weights (or of a buffer laid out like them):
 * the transposed weights of outputs [b * SP_BW, b * SP_BW + ldw). */
static float *wt_block(const mlp_trainer *t, float *buf, int i, int b) {
    return buf + (size_t)b * t->net->sizes[i] * t->ldw[i];
}

/* How many outputs block b of sparse layer i holds (the last may hold fewer). */
static int block_cols(const mlp_trainer *t, int i, int b) {
    int left = t->net->sizes[i + 1] - b * SP_BW;
    return left < t->ldw[i] ? left : t->ldw[i];
}

/* dst [out, in] (the network's layout) from src laid out like wt[i]. */
static void unblock(const mlp_trainer *t, int i, float *dst, float *src) {
    int k = t->net->sizes[i];
    for (int b = 0; b < t->blocks[i]; b++)
        transpose(dst + (size_t)b * SP_BW * k, k, wt_block(t, src, i, b), t->ldw[i], block_cols(t, i, b), k);
}

void mlp_trainer_sync(mlp_trainer *t) {
    if (t->stale) return; /* the network already holds them */
    weights_changed(t->net);
    for (int i = 0; i < t->net->n_layers; i++)
        if (t->sparse[i]) unblock(t, i, t->net->w[i], t->wt[i]);
}

void mlp_trainer_reload(mlp_trainer *t) { t->stale = 1; }

/* Copy the network's weights into the transposed masters before a step. */
static void load_masters(mlp_trainer *t) {
    mlp *net = t->net;
    for (int i = 0; i < net->n_layers; i++) {
        if (!t->sparse[i]) continue;
        int k = net->sizes[i];
        memset(t->wt[i], 0, sizeof(float) * (size_t)t->blocks[i] * k * t->ldw[i]);
        for (int b = 0; b < t->blocks[i]; b++)
            transpose(wt_block(t, t->wt[i], i, b), t->ldw[i], net->w[i] + (size_t)b * SP_BW * k, k, k,
                      block_cols(t, i, b));
    }
    t->stale = 0;
}

const float *mlp_trainer_logits(const mlp_trainer *t) { return t->s->a[t->net->n_layers]; }

const float *mlp_grad_weight(const mlp_trainer *t, int i) { return t->gw[i]; }
const float *mlp_grad_bias(const mlp_trainer *t, int i) { return t->gb[i]; }

typedef enum { STEP_GRADS, STEP_UPDATE } step_mode;

/* A step runs in three parts, each one call to the team:
 *  A. the first layer's forward pass, cut by columns: each member works with
 *     its own columns of the first layer's weights, the bulk of the work;
 *  B. all that goes row by row after it: the other layers' forward passes,
 *     the loss and its gradient, and every layer's input gradient, each member
 *     on its own rows, with no waiting between layers;
 *  C. every layer's weight gradient and update, cut by columns or inputs.
 * Rows go in chunks of a size that depends on the batch alone, and BLAS is
 * called with the same shapes whoever runs a chunk, so the result is
 * bit-identical with any number of threads. */
#define ROW_CHUNK 16

/* Rows per chunk of part B: ROW_CHUNK, more for huge batches (64 chunks at most). */
static int row_chunk(int n) {
    int chunks = (n + ROW_CHUNK - 1) / ROW_CHUNK;
    return ROW_CHUNK * ((chunks + 63) / 64);
}

/* ---- Sparse layers: one layer's work, cut into chunks for the team ---- */

/* Chunks of a sparse layer's work: one per SP_BW outputs, each cut in as
 * many pieces as the team has threads when there are fewer blocks than
 * threads. However it is cut, every output is computed the same way. */
static void sp_plan(const mlp_trainer *t, int i, int n, sp_job *j) {
    int k = t->net->sizes[i], o = t->net->sizes[i + 1], threads = team_threads(t->team);
    j->cols = SP_BW;
    while ((o + j->cols - 1) / j->cols > 32) j->cols *= 2;
    j->col_blocks = (o + j->cols - 1) / j->cols;
    j->groups = 1;
    if ((long)n * k * o >= SP_SPLIT_MIN_MACS && j->col_blocks < threads)
        j->groups = threads < 64 / j->col_blocks ? threads : 64 / j->col_blocks;
}

/* Group g of `groups` of [0, n), cut at even numbers: the kernels pair rows
 * and inputs from the start of a range, so a range starting at an even number
 * pairs them as the whole does. */
static void pair_range(int n, int g, int groups, int *lo, int *hi) {
    int pairs = (n + 1) / 2, h = 2 * (pairs * (g + 1) / groups);
    *lo = 2 * (pairs * g / groups);
    *hi = h < n ? h : n;
}

/* Member m's index of layer i's input in this step, built on first use. */
static const sp_batch *member_batch(sp_job *j, int m) {
    mlp_trainer *t = j->t;
    size_t at = (size_t)j->i * t->p.threads + m;
    if (t->spb_step[at] != t->step_no) {
        sp_build(&t->spb[at], j->in, j->n, t->net->sizes[j->i]);
        t->spb_step[at] = t->step_no;
    }
    return &t->spb[at];
}

/* Rows [r0, r1) (r0 even) and outputs [c0, c1) of sparse layer i. */
static void sp_forward_part(mlp_trainer *t, int i, const float *const *in, float *out, int r0, int r1,
                            int c0, int c1) {
    int k = t->net->sizes[i], o = t->net->sizes[i + 1];
    int relu = t->net->act == MLP_ACT_RELU && i < t->net->n_layers - 1;
    for (int c = c0; c < c1; c += SP_BW) {
        int w = c1 - c < SP_BW ? c1 - c : SP_BW;
        sp_forward(in, k, wt_block(t, t->wt[i], i, c / SP_BW), t->ldw[i], t->net->b[i] + c, out + c, o, relu,
                   r0, r1, 0, w);
    }
}

static void sp_forward_chunk(void *ctx, int c, int m) {
    sp_job *j = ctx;
    int o = j->t->net->sizes[j->i + 1], cb = c % j->col_blocks, g = c / j->col_blocks;
    int c0 = cb * j->cols, c1 = c0 + j->cols < o ? c0 + j->cols : o;
    int r0, r1;
    pair_range(j->n, g, j->groups, &r0, &r1);
    sp_forward_part(j->t, j->i, j->in, j->out, r0, r1, c0, c1);
    (void)m; /* the forward pass needs no index: it reads x itself */
}

/* Part `part` of PF_PARTS of the next batch's rows (see mlp_trainer_prefetch):
 * ask for their cache lines, to this core's caches. */
#define PF_PARTS 8
static void prefetch_next(const mlp_trainer *t, int part) {
    size_t bytes = sizeof(float) * (size_t)t->net->sizes[0], lines = (bytes + 63) / 64;
    size_t total = lines * (size_t)t->n_next, from = total * part / PF_PARTS, to = total * (part + 1) / PF_PARTS;
    for (size_t e = from; e < to; e++)
        __builtin_prefetch((const char *)t->next_rows[e / lines] + 64 * (e % lines), 0, 3);
}

static void sp_grad_chunk(void *ctx, int c, int m) {
    sp_job *j = ctx;
    mlp_trainer *t = j->t;
    int i = j->i, k = t->net->sizes[i], o = t->net->sizes[i + 1];
    int cb = c % j->col_blocks, g = c / j->col_blocks;
    int c0 = cb * j->cols, c1 = c0 + j->cols < o ? c0 + j->cols : o;
    int p0, p1;
    pair_range(k, g, j->groups, &p0, &p1);
    /* The first layer's gradient is the longest stretch of a step: while it
     * runs, this core also fetches the next step's rows, a part at a time. */
    int parts = i == 0 && t->n_next ? PF_PARTS : 1;
    for (int part = 0; part < parts; part++) {
        int q0, q1;
        pair_range(p1 - p0, part, parts, &q0, &q1);
        q0 += p0;
        q1 += p0;
        if (parts > 1) prefetch_next(t, part);
        for (int c = c0; c < c1; c += SP_BW) {
            int w = c1 - c < SP_BW ? c1 - c : SP_BW;
            sp_weight_grad(member_batch(j, m), j->in, j->d + c, o, wt_block(t, j->dst, i, c / SP_BW), t->ldw[i],
                           j->alpha, j->set, q0, q1, 0, w);
        }
    }
    if (g == 0) sp_bias_grad(j->d, o, j->n, j->bias_dst, j->alpha, j->set, c0, c1);
}

/* ---- Dense layers' weight gradients, by blocks of DENSE_COLS inputs ---- */

/* dw[:, c0:c1] = alpha d^T a[:, c0:c1] + beta dw (and db, with chunk 0). */
static void dense_grad_chunk(void *ctx, int c, int m) {
    dense_job *j = ctx;
    int k = j->t->net->sizes[j->i], o = j->t->net->sizes[j->i + 1];
    int w = j->chunks == 1 ? k : DENSE_COLS, c0 = c * w, c1 = c0 + w < k ? c0 + w : k;
    gemm_tn(NULL, o, c1 - c0, j->n, j->alpha, j->d, o, j->a + c0, k, j->beta, j->dw + c0, k);
    if (c == 0) gemv_t(j->n, o, j->alpha, j->d, o, j->t->ones, j->beta, j->db);
    (void)m;
}

/* ---- The step ---- */

static const float *const *input_rows(const step_ctx *s, int i) {
    return i == 0 ? s->xr : s->t->rows + (size_t)i * s->t->p.max_batch;
}

static const float *input_block(const step_ctx *s, int i) { return i == 0 ? s->x : s->t->s->a[i]; }

/* Part B for rows [r0, r1) of chunk c. */
static void rows_chunk(void *ctx, int c, int m) {
    step_ctx *s = ctx;
    mlp_trainer *t = s->t;
    mlp *net = t->net;
    int L = net->n_layers, rc = row_chunk(s->n), r0 = c * rc, r1 = r0 + rc < s->n ? r0 + rc : s->n, nr = r1 - r0;
    for (int i = 1; i < L; i++) {
        int k = net->sizes[i], o = net->sizes[i + 1];
        if (t->sparse[i]) sp_forward_part(t, i, input_rows(s, i), t->s->a[i + 1], r0, r1, 0, o);
        else layer_forward(net, NULL, i, t->s->a[i] + (size_t)r0 * k, nr, t->s->a[i + 1] + (size_t)r0 * o);
    }
    /* d loss / d z_L = (softmax(z) - onehot(y)) / n; the loss, log-sum-exp - z_y */
    int K = net->sizes[L];
    float inv_n = 1.0f / (float)s->n;
    double loss = 0.0;
    for (int r = r0; r < r1; r++) {
        const float *z = t->s->a[L] + (size_t)r * K;
        float *d = t->dout[L - 1] + (size_t)r * K, mx = z[0], sum = 0.0f;
        for (int j = 1; j < K; j++) mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < K; j++) sum += d[j] = expf(z[j] - mx);
        loss += (double)(mx - z[s->y[r]]) + log((double)sum);
        float scale = inv_n / sum;
        for (int j = 0; j < K; j++) d[j] *= scale;
        d[s->y[r]] -= inv_n;
    }
    s->loss[c] = loss;
    /* d loss / d (output of layer i - 1) = dout[i] W_i * act'(a_i), W before its update */
    for (int i = L - 1; i >= 1; i--) {
        int k = net->sizes[i], o = net->sizes[i + 1];
        const float *d = t->dout[i] + (size_t)r0 * o;
        float *prev = t->dout[i - 1] + (size_t)r0 * k;
        if (t->sparse[i]) {
            for (int b = 0; b < t->blocks[i]; b++)
                gemm_nt(NULL, nr, k, block_cols(t, i, b), 1.0f, d + b * SP_BW, o, wt_block(t, t->wt[i], i, b),
                        t->ldw[i], b ? 1.0f : 0.0f, prev, k);
        } else {
            gemm_nn(NULL, nr, k, o, 1.0f, d, o, net->w[i], k, 0.0f, prev, k);
        }
        act_backward(net->act, t->s->a[i] + (size_t)r0 * k, prev, (size_t)nr * k);
    }
    (void)m;
}

/* Part C: chunk e of the list that step() made. */
static void grad_chunk(void *ctx, int e, int m) {
    step_ctx *s = ctx;
    int i = s->layer_of[e];
    if (s->t->sparse[i]) sp_grad_chunk(&s->sj[i], s->chunk_of[e], m);
    else dense_grad_chunk(&s->dj[i], s->chunk_of[e], m);
}

/* Set up layer i's part-C job for the mode; returns its chunk count. */
static int plan_grad(step_ctx *s, int i, step_mode mode) {
    mlp_trainer *t = s->t;
    mlp *net = t->net;
    int k = net->sizes[i], o = net->sizes[i + 1], plain = mode == STEP_UPDATE && !t->vel;
    if (t->sparse[i]) {
        sp_job *j = &s->sj[i];
        *j = (sp_job){.t = t, .i = i, .n = s->n, .in = input_rows(s, i), .d = t->dout[i]};
        sp_plan(t, i, s->n, j);
        j->dst = plain ? t->wt[i] : t->gt[i];
        j->bias_dst = plain ? net->b[i] : t->gb[i];
        j->alpha = -t->p.lr;
        j->set = !plain;
        return j->col_blocks * j->groups;
    }
    dense_job *j = &s->dj[i];
    *j = (dense_job){.t = t, .i = i, .n = s->n, .a = input_block(s, i), .d = t->dout[i]};
    if (mode == STEP_GRADS) {
        j->dw = t->gw[i]; j->db = t->gb[i]; j->alpha = 1.0f; j->beta = 0.0f;
    } else if (plain) {
        j->dw = net->w[i]; j->db = net->b[i]; j->alpha = -t->p.lr; j->beta = 1.0f;
    } else {
        j->dw = t->vw[i]; j->db = t->vb[i]; j->alpha = 1.0f; j->beta = t->p.momentum;
    }
    j->chunks = (long)s->n * k * o < SP_SPLIT_MIN_MACS ? 1 : (k + DENSE_COLS - 1) / DENSE_COLS;
    return j->chunks;
}

/* After part C: momentum and mlp_compute_grads's layout. */
static void finish_grad(mlp_trainer *t, int i, step_mode mode) {
    mlp *net = t->net;
    int k = net->sizes[i], o = net->sizes[i + 1];
    if (mode == STEP_UPDATE && !t->vel) return;
    if (!t->sparse[i]) {
        if (mode == STEP_UPDATE) {
            axpy((size_t)o * k, -t->p.lr, t->vw[i], net->w[i]);
            axpy((size_t)o, -t->p.lr, t->vb[i], net->b[i]);
        }
        return;
    }
    if (mode == STEP_GRADS) {
        unblock(t, i, t->gw[i], t->gt[i]);
        return;
    }
    /* momentum: v = m v + g; w -= lr v */
    float mom = t->p.momentum, lr = t->p.lr, *v = t->vt[i], *w = t->wt[i], *g = t->gt[i];
    size_t nw = (size_t)t->blocks[i] * k * t->ldw[i];
    for (size_t e = 0; e < nw; e++) {
        v[e] = mom * v[e] + g[e];
        w[e] -= lr * v[e];
    }
    for (int c = 0; c < o; c++) {
        t->vb[i][c] = mom * t->vb[i][c] + t->gb[i][c];
        net->b[i][c] -= lr * t->vb[i][c];
    }
}

/* One step on the batch whose rows are xr[0..n-1]. */
static int step(mlp_trainer *t, const float *const *xr, const uint8_t *y, int n, float *loss, step_mode mode) {
    mlp *net = t->net;
    int L = net->n_layers, K = net->sizes[L];
    if (n < 1 || n > t->p.max_batch) return -1;
    for (int r = 0; r < n; r++)
        if (y[r] >= K) return -1;
    if (t->stale) load_masters(t);
    t->step_no++; /* the inputs' indexes are rebuilt */
    step_ctx *s = &t->ctx;
    s->t = t;
    s->xr = xr;
    s->y = y;
    s->n = n;
    s->x = t->xbuf;
    /* The sparse kernels read the rows where they are; BLAS wants one block. */
    if (!t->sparse[0])
        for (int r = 0; r < n; r++) memcpy(t->xbuf + (size_t)r * net->sizes[0], xr[r], sizeof(float) * (size_t)net->sizes[0]);

    /* A */
    if (t->sparse[0]) {
        sp_job j = {.t = t, .i = 0, .n = n, .in = xr, .out = t->s->a[1]};
        sp_plan(t, 0, n, &j);
        team_run(t->team, j.col_blocks * j.groups, sp_forward_chunk, &j);
        if (L > 1 && net->act != MLP_ACT_RELU) act_forward(net->act, t->s->a[1], (size_t)n * net->sizes[1]);
    } else {
        layer_forward(net, t->team, 0, s->x, n, t->s->a[1]);
    }
    /* B */
    int row_chunks = (n + row_chunk(n) - 1) / row_chunk(n);
    team_run(t->team, row_chunks, rows_chunk, s);
    double total = 0.0;
    for (int c = 0; c < row_chunks; c++) total += s->loss[c];
    float l = (float)(total / n);
    if (loss) *loss = l;
    if (mode == STEP_UPDATE && !isfinite(l) && !t->p.keep_going) {
        t->n_next = 0;
        return 1;
    }
    /* C: one call for every layer when their chunks fit in one, else layer by layer */
    int counts[MLP_MAX_LAYERS], total_chunks = 0;
    for (int i = 0; i < L; i++) total_chunks += counts[i] = plan_grad(s, i, mode);
    if (total_chunks <= 64) {
        int e = 0;
        for (int i = 0; i < L; i++)
            for (int c = 0; c < counts[i]; c++, e++) {
                s->layer_of[e] = (unsigned char)i;
                s->chunk_of[e] = (unsigned char)c;
            }
        team_run(t->team, total_chunks, grad_chunk, s);
    } else {
        for (int i = 0; i < L; i++)
            team_run(t->team, counts[i], t->sparse[i] ? sp_grad_chunk : dense_grad_chunk,
                     t->sparse[i] ? (void *)&s->sj[i] : (void *)&s->dj[i]);
    }
    for (int i = 0; i < L; i++) finish_grad(t, i, mode);
    weights_changed(net); /* the dense layers' weights live in the network */
    t->n_next = 0;
    return 0;
}

void mlp_trainer_prefetch(mlp_trainer *t, const float *const *rows, int n) {
    t->n_next = n < 0 ? 0 : n < t->p.max_batch ? n : t->p.max_batch;
    memcpy(t->next_rows, rows, sizeof *rows * (size_t)t->n_next);
}

/* Point t->rows[0..n-1] (layer 0's slots) at the rows of a contiguous batch. */
static const float *const *rows_of(mlp_trainer *t, const float *x, int n) {
    int k = t->net->sizes[0];
    for (int r = 0; r < n && r < t->p.max_batch; r++) t->rows[r] = x + (size_t)r * k;
    return t->rows;
}

int mlp_train_step(mlp_trainer *t, const float *x, const uint8_t *y, int n, float *loss) {
    return step(t, rows_of(t, x, n), y, n, loss, STEP_UPDATE);
}

int mlp_train_step_rows(mlp_trainer *t, const float *const *rows, const uint8_t *y, int n, float *loss) {
    return step(t, rows, y, n, loss, STEP_UPDATE);
}

int mlp_compute_grads(mlp_trainer *t, const float *x, const uint8_t *y, int n, float *loss) {
    return step(t, rows_of(t, x, n), y, n, loss, STEP_GRADS);
}
