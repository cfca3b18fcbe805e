/* sparse.h -- a dense layer whose input is mostly zeros, computed over its nonzeros only.
 *
 * Half of a Fashion-MNIST image's pixels are exactly 0, and so is much of a
 * relu layer's output. For such an input x [n, k] and a layer kept transposed,
 * wt [k, o] (row p holds the weights from input p to every output), the
 * forward pass adds x[s, p] * wt[p, :] over the nonzero p of each row s, and
 * the weight gradient is, row by row of wt, sum over the s with x[s, p] != 0
 * of x[s, p] * d[s, :]. Both skip exactly the products that are 0, so the
 * result is the dense layer's, with the sums taken in input order.
 *
 * Every output element is computed by the same sequence of operations however
 * the work is split into rows and columns, so a split across threads never
 * changes a bit. On CPUs with AVX-512 the kernels are written with its
 * intrinsics; elsewhere in portable C. Internal to mlp/. */
#ifndef LOUPE_SPARSE_H
#define LOUPE_SPARSE_H

#include <stdint.h>

/* Inputs per block of the forward pass: a block of wt rows stays in L1. */
#define SP_BLOCK 32

/* The nonzeros of one batch, row by row (for the forward pass) and as a bit
 * mask per input (for the weight gradient). */
typedef struct {
    int n, k;          /* rows and width of the batch last built */
    int max_n, max_k;
    int nblk;          /* blocks of SP_BLOCK inputs */
    int words;         /* mask words per input: ceil(n / 32) */
    int ldw;           /* the row stride of wt that off[] was computed for */
    int *start;        /* [max_n][nblk + 1]: where each row's nonzeros of each block start */
    int *off;          /* input index * ldw of each nonzero; row s's from s * (k + 16) */
    float *val;        /* its value */
    uint32_t *mask;    /* [words][max_k]: bit b of word w set when x[32w + b, p] != 0 */
    int *cur;          /* [max_n] scratch for the build */
} sp_batch;

/* 0, or -1 when out of memory. */
int sp_batch_init(sp_batch *b, int max_n, int max_k);
void sp_batch_free(sp_batch *b);

/* Index the nonzeros of x [n, k] (row stride k), for a wt of row stride ldw. */
void sp_build(sp_batch *b, const float *x, int n, int k, int ldw);

/* z[r, c] = bias[c] + sum_p x[r, p] wt[p, c] for rows [r0, r1) and columns
 * [c0, c1) (c0 a multiple of 16), the sum in input order. With relu, each z
 * is replaced by max(z, 0). wt has at least round-up-16(c1) columns. */
void sp_forward(const sp_batch *b, const float *wt, const float *bias, float *z, int ldz,
                int relu, int r0, int r1, int c0, int c1);

/* For inputs p in [p0, p1) and columns [c0, c1) (c0 a multiple of 16):
 * g = sum over rows s (in order) of x[s, p] d[s, c]; then with set, wt[p, c] = g
 * (0 where no row has x[s, p] != 0, padding columns of a 16-wide group too);
 * without, wt[p, c] += alpha * g, and rows with no nonzero are left alone. */
void sp_weight_grad(const sp_batch *b, const float *x, const float *d, int ldd, float *wt,
                    float alpha, int set, int p0, int p1, int c0, int c1);

/* Bias gradient over columns [c0, c1): g = sum over the n rows of d[s, c];
 * then bias[c] = g with set, else bias[c] += alpha * g. */
void sp_bias_grad(const float *d, int ldd, int n, float *bias, float alpha, int set, int c0, int c1);

/* Use the AVX-512 kernels when on is nonzero and the CPU has them (the
 * default), the portable ones otherwise. Returns whether AVX-512 is now used.
 * For tests and benchmarks; not thread-safe. */
int sp_use_avx512(int on);

#endif
