/* gemm.h -- the dense kernels the MLP needs, row-major, over CBLAS, optionally split across a thread team. */
#ifndef LOUPE_GEMM_H
#define LOUPE_GEMM_H

#include <stddef.h>

/* A team of threads that splits each large GEMM by columns of C (at most 64
 * chunks, each member first running the same ones every call). The calling
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
/* Run fn(ctx, c, member) for every chunk c in [0, n_chunks), n_chunks <= 64,
 * spread over the team: member i of T runs chunks i, i + T, ... first (the
 * same member gets the same chunks call after call), then helps with the
 * rest; `member` says who runs it (0 is the caller). Returns when all have
 * finished. fn must not call into the team. */
typedef void (*team_fn)(void *ctx, int chunk, int member);
void team_run(gemm_team *team, int n_chunks, team_fn fn, void *ctx);
int team_threads(const gemm_team *team);   /* 1 for NULL */

/* y[n] = alpha * A[m, n]^T x[m] + beta * y */
void gemv_t(int m, int n, float alpha, const float *a, int lda, const float *x,
            float beta, float *y);
/* y += alpha * x */
void axpy(size_t n, float alpha, const float *x, float *y);

#endif
