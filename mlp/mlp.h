/* mlp.h -- a from-scratch multilayer perceptron: dense layers, softmax cross-entropy, SGD. */
#ifndef LOUPE_MLP_H
#define LOUPE_MLP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Most dense layers a network may have (sizes has one more entry). */
#define MLP_MAX_LAYERS 32
/* Error buffers passed to this module should hold at least this many bytes. */
#define MLP_ERR_LEN 256

/* Activation of every hidden layer; the output layer is always linear (logits). */
typedef enum {
    MLP_ACT_SIGMOID,
    MLP_ACT_TANH,
    MLP_ACT_RELU,
    MLP_ACT_LINEAR
} mlp_act;

typedef enum {
    MLP_INIT_DEFAULT, /* he for relu, xavier otherwise */
    MLP_INIT_ZERO,
    MLP_INIT_UNIFORM, /* U(-0.05, 0.05) */
    MLP_INIT_NORMAL,  /* N(0, 0.01^2) */
    MLP_INIT_XAVIER,  /* U(-a, a), a = sqrt(6 / (in + out)) */
    MLP_INIT_HE       /* N(0, 2 / in) */
} mlp_init;

/* Names as used on the command line and in files ("relu", "xavier", ...).
 * The parsers return 0 and set *out, or -1 when the name is unknown. */
const char *mlp_act_name(mlp_act act);
int mlp_act_parse(const char *name, mlp_act *out);
const char *mlp_init_name(mlp_init init);
int mlp_init_parse(const char *name, mlp_init *out);

/* ==== Kernels ==== */

/* How the layers are computed. The sparse versions work over the nonzeros of
 * each layer's input (the first layer; every layer after a relu) and compute
 * the rest with their transposed weights; dense is BLAS GEMMs alone. All give
 * the same results up to rounding, and AVX2 and AVX-512 bit-identical ones. */
typedef enum {
    MLP_KERNELS_DENSE,    /* BLAS GEMMs (OpenBLAS picks its own kernel) */
    MLP_KERNELS_PORTABLE, /* the sparse kernels in plain C */
    MLP_KERNELS_AVX2,     /* the sparse kernels with AVX2 and FMA */
    MLP_KERNELS_AVX512    /* the sparse kernels with AVX-512F */
} mlp_kernels;

/* "dense", "portable", "avx2", "avx512"; the parser returns 0, or -1 for another name. */
const char *mlp_kernels_name(mlp_kernels k);
int mlp_kernels_parse(const char *name, mlp_kernels *out);
/* 1 when this CPU can run them, else 0. */
int mlp_kernels_supported(mlp_kernels k);
/* The automatic choice: the sparse kernels' widest version this CPU runs
 * (avx512, then avx2); dense where it has neither, since the portable sparse
 * kernels are slower than BLAS. */
mlp_kernels mlp_kernels_auto(void);
/* Compute with k from now on, for training and inference. Returns 0, or -1
 * with a message in err (nothing changes) when the CPU cannot run them.
 * Process-wide: call before any thread trains or runs a forward pass. */
int mlp_kernels_use(mlp_kernels k, char *err, size_t errlen);
/* The kernels in use: mlp_kernels_auto() until mlp_kernels_use says otherwise. */
mlp_kernels mlp_kernels_current(void);
/* mlp_kernels_use with the kernels named by the environment variable
 * LOUPE_MLP_KERNELS ("auto", unset or empty: the automatic choice). Returns 0,
 * or -1 with a message in err for an unknown name or one this CPU cannot run. */
int mlp_kernels_from_env(char *err, size_t errlen);

/* ==== The network ==== */

/* Opaque: layer sizes, activation and parameters. After construction the
 * shape never changes; parameters change only through the trainer. */
typedef struct mlp mlp;

/* Create a network with n_layers dense layers: sizes[0] inputs, sizes[n_layers]
 * outputs, sizes[1..n_layers-1] hidden units. Parameters start at zero.
 * Returns NULL on bad sizes or allocation failure, with a message in err. */
mlp *mlp_new(int n_layers, const int *sizes, mlp_act act, char *err, size_t errlen);
/* Free a network; NULL is accepted. */
void mlp_free(mlp *net);

/* Initialise every weight by `init` from a seeded generator; biases become 0.
 * The same seed gives bit-identical parameters. */
void mlp_init_weights(mlp *net, mlp_init init, uint64_t seed);

int mlp_n_layers(const mlp *net);
/* sizes[i] for 0 <= i <= n_layers; sizes[0] is the input width. */
int mlp_size(const mlp *net, int i);
int mlp_n_inputs(const mlp *net);
int mlp_n_outputs(const mlp *net);
mlp_act mlp_activation(const mlp *net);
/* Total number of parameters (weights and biases). */
size_t mlp_n_params(const mlp *net);

/* Parameters of layer i (0-based), owned by the network, row-major. Asking
 * for a writable weight marks the weights changed: the next forward pass
 * refreshes the transposed copy it computes with. A caller that keeps the
 * pointer and writes through it after a forward pass calls
 * mlp_weights_changed before the next one. */
float *mlp_weight(mlp *net, int i);            /* [out, in] */
void mlp_weights_changed(mlp *net);
float *mlp_bias(mlp *net, int i);              /* [out] */
const float *mlp_weight_c(const mlp *net, int i);
const float *mlp_bias_c(const mlp *net, int i);

/* Copy every parameter of src into dst, which must have the same shape.
 * Returns 0, or -1 when the shapes differ. */
int mlp_copy_params(mlp *dst, const mlp *src);
/* dst += t * (src - dst) for every parameter: with t = 1/k over k snapshots,
 * dst becomes their running mean. Returns 0, or -1 when the shapes differ. */
int mlp_lerp_params(mlp *dst, const mlp *src, float t);
/* 1 when every parameter is finite, else 0. */
int mlp_params_finite(const mlp *net);

/* ==== Inference (thread-safe with one scratch per thread) ==== */

/* Per-caller working memory for batches of up to max_batch rows. Many threads
 * may run mlp_forward on the same network at once, each with its own scratch,
 * as long as none changes the network meanwhile. With the sparse kernels the
 * first forward pass after a change transposes the weights into a copy the
 * network keeps (once, whichever thread gets there first); when that copy
 * cannot be allocated, the pass runs on BLAS instead. */
typedef struct mlp_scratch mlp_scratch;

mlp_scratch *mlp_scratch_new(const mlp *net, int max_batch);
void mlp_scratch_free(mlp_scratch *s);

/* Logits for n rows of x. Returns 0, or -1 when n is not in [1, max_batch]
 * of the scratch or the scratch belongs to a network of another shape. */
int mlp_forward(const mlp *net, mlp_scratch *s,
                const float *x,   /* [n, in] */
                int n,
                float *logits);   /* [n, out] */

/* Numerically stable softmax of one row of k logits into p (may alias). */
void mlp_softmax(const float *logits, int k, float *p);

/* Gradient of the pre-softmax score of class `target` with respect to the
 * input pixels of one example: d logits[target] / d x. Optionally also the
 * logits of x. Returns 0, or -1 on a bad target or scratch. */
int mlp_input_grad(const mlp *net, mlp_scratch *s,
                   const float *x,   /* [in] */
                   int target,
                   float *grad,      /* [in] */
                   float *logits);   /* [out], may be NULL */

/* The same; guided = 1 makes it guided backprop (Springenberg et al. 2015):
 * each relu's backward pass lets through only positive gradients where its
 * input was positive. Returns -1 also for guided on a network that is not relu. */
int mlp_input_grad_ex(const mlp *net, mlp_scratch *s, const float *x, int target, int guided,
                      float *grad, float *logits);

/* ==== Training ==== */

typedef struct {
    float lr;        /* learning rate */
    float momentum;  /* 0 = plain SGD (the seed's recipe) */
    int max_batch;   /* largest batch passed to the step functions */
    int keep_going;  /* 0: a step whose loss is not finite changes nothing (see mlp_train_step) */
    int threads;     /* threads that share each step (1..64), with bit-identical results for any
                        number; call BLAS single-threaded then */
    int dense;       /* 1: every layer through BLAS GEMMs, none over its input's nonzeros
                        (the same results up to rounding; for comparison) */
} mlp_sgd_params;

mlp_sgd_params mlp_sgd_default_params(void);

/* Opaque: the buffers for backward and the optimiser state of one network.
 * One trainer per network; not thread-safe. */
typedef struct mlp_trainer mlp_trainer;

/* Returns NULL on bad params or allocation failure, with a message in err.
 * The trainer borrows net, which must outlive it. */
mlp_trainer *mlp_trainer_new(mlp *net, mlp_sgd_params p, char *err, size_t errlen);
void mlp_trainer_free(mlp_trainer *t);

/* One SGD step on a batch: forward, mean softmax cross-entropy over the
 * batch, backward, update (of the trainer's copy of the weights: see
 * mlp_trainer_sync). Returns 0 and the batch's mean loss in *loss,
 * or -1 on a bad batch size or label. When the loss is not finite and
 * keep_going is 0, the parameters are left as they were (the last finite
 * ones) and 1 is returned; with keep_going the update is applied anyway. */
int mlp_train_step(mlp_trainer *t, const float *x /* [n, in] */,
                   const uint8_t *y /* [n] */, int n, float *loss);

/* The same, for a batch whose n rows lie anywhere (rows[r] holds the inputs
 * of row r): no copy into one block is needed, and each thread reads the rows
 * it works on itself. */
int mlp_train_step_rows(mlp_trainer *t, const float *const *rows, const uint8_t *y, int n, float *loss);

/* A hint: the rows the next step will train on. While the next call to
 * mlp_train_step_rows computes, each thread also fetches them into its caches
 * (rows picked at random from a large data set are otherwise a wait on memory
 * when that step starts). The pointers must stay valid until that call returns. */
void mlp_trainer_prefetch(mlp_trainer *t, const float *const *rows, int n);

/* The trainer keeps some weights in a layout of its own while it trains (the
 * layers whose input is mostly zeros, transposed). mlp_train_step updates that
 * copy, not the network: call mlp_trainer_sync before reading the network's
 * parameters (to evaluate or save it), and mlp_trainer_reload after changing
 * them yourself (a new trainer reads them at its first step). */
void mlp_trainer_sync(mlp_trainer *t);
void mlp_trainer_reload(mlp_trainer *t);

/* Logits [n, out] of the last step's forward pass (before its update). Owned by t. */
const float *mlp_trainer_logits(const mlp_trainer *t);

/* Gradients of the mean loss of a batch without updating: fills the
 * trainer's gradient buffers (see mlp_grad_weight). Returns as mlp_train_step. */
int mlp_compute_grads(mlp_trainer *t, const float *x, const uint8_t *y, int n, float *loss);
const float *mlp_grad_weight(const mlp_trainer *t, int i); /* [out, in] */
const float *mlp_grad_bias(const mlp_trainer *t, int i);   /* [out] */

/* Mean softmax cross-entropy of logits [n, k] against labels y. */
double mlp_xent(const float *logits, const uint8_t *y, int n, int k);

#ifdef __cplusplus
}
#endif
#endif
