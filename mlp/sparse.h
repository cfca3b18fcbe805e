/* sparse.h -- a dense layer whose input is mostly zeros, computed over its nonzeros only.
 *
 * Half of a Fashion-MNIST image's pixels are exactly 0, and so is much of a
 * relu layer's output. For such an input x [n, k] and a layer kept transposed,
 * wt [k, o] (row p holds the weights from input p to every output), the
 * forward pass adds x[s, p] * wt[p, :] over the nonzero p of each row s, and
 * the weight gradient is, row by row of wt, sum over the s with x[s, p] != 0
 * of x[s, p] * d[s, :]. Both skip the products that are 0 (the AVX-512
 * kernels keep a few, an exact 0 each, to share loads between two rows or two
 * inputs), so the result is the dense layer's, the sums taken in input order.
 *
 * Every output element is computed by the same sequence of operations however
 * the work is split into rows and columns, so a split across threads never
 * changes a bit. The kernels come in three versions, chosen at run time: AVX-512
 * and AVX2+FMA intrinsics (bit-identical to each other: the same sums in the
 * same order) and portable C (the same up to rounding). Internal to mlp/. */
#ifndef LOUPE_SPARSE_H
#define LOUPE_SPARSE_H

#include <stdint.h>

/* Which inputs of a batch are nonzero, as one bit mask per input: what the
 * weight gradient walks. */
typedef struct {
    int n, k;          /* rows and width of the batch last built */
    int max_n, max_k;
    int words;         /* mask words per input: ceil(n / 32) */
    uint32_t *mask;    /* [words][max_k]: bit b of word w set when x[32w + b, p] != 0 */
} sp_batch;

/* 0, or -1 when out of memory. */
int sp_batch_init(sp_batch *b, int max_n, int max_k);
void sp_batch_free(sp_batch *b);

/* Index the nonzeros of the n rows of k inputs x[0..n-1]. */
void sp_build(sp_batch *b, const float *const *x, int n, int k);

/* z[r, c] = bias[c] + sum_p x[r][p] wt[p, c] (rows x[r] of k inputs, wt [k, ldw]) for rows
 * [r0, r1) and columns [c0, c1) (c0 a multiple of 16), skipping the inputs
 * that are 0. Rows go in pairs from r0, so r0 must be even for a row's result
 * not to depend on how the rows were cut. With relu, each z is replaced by
 * max(z, 0). ldw >= round-up-16(c1). */
void sp_forward(const float *const *x, int k, const float *wt, int ldw, const float *bias, float *z, int ldz,
                int relu, int r0, int r1, int c0, int c1);

/* For inputs p in [p0, p1) (p0 even, so that inputs pair up the same way
 * however the range is cut) and columns [c0, c1) (c0 a multiple of 16):
 * g = sum over the batch's rows s (in order) of x[s][p] d[s, c]; then with set,
 * wt[p, c] = g (0 where no row has x[s][p] != 0, padding columns of a 16-wide
 * group too); without, wt[p, c] += alpha * g, and inputs that are 0 in every
 * row are left alone. b indexes x. */
void sp_weight_grad(const sp_batch *b, const float *const *x, const float *d, int ldd, float *wt, int ldw,
                    float alpha, int set, int p0, int p1, int c0, int c1);

/* Bias gradient over columns [c0, c1): g = sum over the n rows of d[s, c];
 * then bias[c] = g with set, else bias[c] += alpha * g. */
void sp_bias_grad(const float *d, int ldd, int n, float *bias, float alpha, int set, int c0, int c1);

/* The kernels' versions, by the instructions they need. */
typedef enum {
    SP_ISA_PORTABLE, /* plain C */
    SP_ISA_AVX2,     /* AVX2 and FMA */
    SP_ISA_AVX512    /* AVX-512F */
} sp_isa;

/* "portable", "avx2", "avx512". */
const char *sp_isa_name(sp_isa isa);
/* 1 when this CPU (and its OS) can run that version, else 0. */
int sp_isa_supported(sp_isa isa);
/* The fastest version this CPU can run. */
sp_isa sp_isa_best(void);
/* Run that version from now on. Returns 0, or -1 (nothing changes) when the
 * CPU cannot run it: no kernel ever executes an instruction the CPU lacks.
 * Process-wide: call before any thread runs a kernel. */
int sp_isa_use(sp_isa isa);
/* The version in use: sp_isa_best() until sp_isa_use says otherwise. */
sp_isa sp_isa_current(void);

#endif
