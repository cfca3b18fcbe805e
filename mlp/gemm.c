/* gemm.c -- row-major dense kernels over CBLAS. */
#include "gemm.h"

#include <cblas.h>

void gemm_nt(int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_nn(int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_tn(int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemv_t(int m, int n, float alpha, const float *a, int lda, const float *x,
            float beta, float *y) {
    cblas_sgemv(CblasRowMajor, CblasTrans, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

void axpy(size_t n, float alpha, const float *x, float *y) {
    cblas_saxpy((int)n, alpha, x, 1, y, 1);
}
