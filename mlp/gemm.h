/* gemm.h -- the dense kernels the MLP needs, row-major, over CBLAS, optionally split across a thread team. */
#ifndef LOUPE_GEMM_H
#define LOUPE_GEMM_H

#include <stddef.h>

/* A team of threads that splits each large GEMM by columns of C. The calling
 * thread is member 0, so a team of 1 runs everything inline. Workers spin
 * briefly between calls (the MLP issues thousands of small GEMMs a second),
 * then sleep. A team serves one caller at a time. */
typedef struct gemm_team gemm_team;

/* Returns NULL when threads < 1 or a thread cannot be started. */
gemm_team *gemm_team_new(int threads);
void gemm_team_free(gemm_team *t);   /* accepts NULL */

/* In each, team may be NULL (run on the calling thread). */

/* C[m, n] = alpha * A[m, k] B[n, k]^T + beta * C */
void gemm_nt(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* C[m, n] = alpha * A[m, k] B[k, n] + beta * C */
void gemm_nn(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* C[m, n] = alpha * A[k, m]^T B[k, n] + beta * C */
void gemm_tn(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* y[n] = alpha * A[m, n]^T x[m] + beta * y */
void gemv_t(int m, int n, float alpha, const float *a, int lda, const float *x,
            float beta, float *y);
/* y += alpha * x */
void axpy(size_t n, float alpha, const float *x, float *y);

#endif
