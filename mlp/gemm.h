/* gemm.h -- the dense kernels the MLP needs, row-major, over CBLAS (and libxsmm for small shapes). */
#ifndef LOUPE_GEMM_H
#define LOUPE_GEMM_H

#include <stddef.h>

/* C[m, n] = alpha * A[m, k] B[n, k]^T + beta * C */
void gemm_nt(int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* C[m, n] = alpha * A[m, k] B[k, n] + beta * C */
void gemm_nn(int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* C[m, n] = alpha * A[k, m]^T B[k, n] + beta * C */
void gemm_tn(int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* y[n] = alpha * A[m, n]^T x[m] + beta * y */
void gemv_t(int m, int n, float alpha, const float *a, int lda, const float *x,
            float beta, float *y);
/* y += alpha * x */
void axpy(size_t n, float alpha, const float *x, float *y);

#endif
