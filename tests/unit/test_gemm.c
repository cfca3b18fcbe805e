/* test_gemm.c -- the row-major kernels against a naive double-precision loop, alone and in a team. */
#include <stdlib.h>

#include "check.h"
#include "gemm.h"
#include "rng.h"

typedef enum { NT, NN, TN } op;

/* C = alpha * op(A, B) + beta * C0 computed naively; returns the worst error. */
static double worst_error(gemm_team *team, op o, int m, int n, int k, uint64_t seed) {
    rng r;
    rng_seed(&r, seed);
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k);
    float *c = malloc(sizeof(float) * (size_t)m * n), *c0 = malloc(sizeof(float) * (size_t)m * n);
    for (int i = 0; i < m * k; i++) a[i] = (float)rng_uniform(&r, -1, 1);
    for (int i = 0; i < n * k; i++) b[i] = (float)rng_uniform(&r, -1, 1);
    for (int i = 0; i < m * n; i++) c[i] = c0[i] = (float)rng_uniform(&r, -1, 1);
    float alpha = 0.75f, beta = 0.5f;
    if (o == NT) gemm_nt(team, m, n, k, alpha, a, k, b, k, beta, c, n);      /* A[m,k] B[n,k]^T */
    if (o == NN) gemm_nn(team, m, n, k, alpha, a, k, b, n, beta, c, n);      /* A[m,k] B[k,n] */
    if (o == TN) gemm_tn(team, m, n, k, alpha, a, m, b, n, beta, c, n);      /* A[k,m]^T B[k,n] */
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double z = beta * (double)c0[i * n + j];
            for (int p = 0; p < k; p++) {
                double av = o == TN ? a[p * m + i] : a[i * k + p];
                double bv = o == NT ? b[j * k + p] : b[p * n + j];
                z += alpha * av * bv;
            }
            double e = fabs(z - c[i * n + j]);
            worst = e > worst ? e : worst;
        }
    free(a); free(b); free(c); free(c0);
    return worst;
}

static void test_shapes_alone_and_in_teams(void) {
    /* Small and large, below and above the split threshold, widths that are and
     * are not multiples of the chunk width, one row (saliency) and a batch. */
    const int shapes[][3] = {{1, 128, 256}, {1, 784, 256}, {32, 256, 784}, {32, 10, 32}, {256, 784, 32},
                             {7, 100, 3}, {1, 1, 1}, {33, 129, 65}, {2, 300, 200}};
    gemm_team *teams[3] = {NULL, gemm_team_new(1), gemm_team_new(3)};
    CHECK(teams[1] && teams[2]);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int o = 0; o < 3; o++)
            for (int t = 0; t < 3; t++) {
                double e = worst_error(teams[t], (op)o, shapes[s][0], shapes[s][1], shapes[s][2], s * 7 + o);
                CHECK_MSG(e < 1e-4 * shapes[s][2], "op %d shape %dx%dx%d team %d: error %g", o, shapes[s][0],
                          shapes[s][1], shapes[s][2], t, e);
            }
    for (int t = 0; t < 3; t++) gemm_team_free(teams[t]);
    CHECK(gemm_team_new(0) == NULL);
}

int main(void) {
    RUN(test_shapes_alone_and_in_teams);
    return check_report();
}
