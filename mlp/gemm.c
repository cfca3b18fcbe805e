/* gemm.c -- row-major dense kernels over CBLAS, and a small thread team that splits them by columns. */
#define _POSIX_C_SOURCE 200809L
#include "gemm.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Below this many multiply-adds a split costs more than it saves. */
#define SPLIT_MIN_MACS (64 * 1024)
/* Spins before a worker goes to sleep (about 100 microseconds). */
#define SPIN_LIMIT 20000
#define MAX_TEAM 64

typedef enum { OP_NT, OP_NN, OP_TN } gemm_op;

typedef struct {
    gemm_op op;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
} gemm_job;

typedef struct {
    gemm_team *team;
    int id;
    pthread_t th;
} worker;

struct gemm_team {
    int threads;
    gemm_job job;
    atomic_uint gen;        /* bumped once per job */
    atomic_int pending;     /* workers still running the current job */
    atomic_int sleepers;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    worker w[MAX_TEAM];
};

static void run_cblas(const gemm_job *j, int n0, int n1) {
    if (n1 <= n0) return;
    int n = n1 - n0;
    switch (j->op) {
    case OP_NT:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, n, j->k, j->alpha, j->a, j->lda,
                    j->b + (size_t)n0 * j->ldb, j->ldb, j->beta, j->c + n0, j->ldc);
        break;
    case OP_NN:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j->m, n, j->k, j->alpha, j->a, j->lda,
                    j->b + n0, j->ldb, j->beta, j->c + n0, j->ldc);
        break;
    case OP_TN:
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->m, n, j->k, j->alpha, j->a, j->lda,
                    j->b + n0, j->ldb, j->beta, j->c + n0, j->ldc);
        break;
    }
}

/* Columns [n0, n1) of member id's share, in multiples of 16 (one AVX-512 vector). */
static void share(int n, int threads, int id, int *n0, int *n1) {
    int blocks = (n + 15) / 16;
    int b0 = blocks * id / threads, b1 = blocks * (id + 1) / threads;
    *n0 = b0 * 16 < n ? b0 * 16 : n;
    *n1 = b1 * 16 < n ? b1 * 16 : n;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    gemm_team *t = w->team;
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&t->gen, memory_order_acquire) == seen && !atomic_load(&t->stop)) {
            if (++spins < SPIN_LIMIT) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
                continue;
            }
            pthread_mutex_lock(&t->mu);
            atomic_fetch_add(&t->sleepers, 1);
            while (atomic_load(&t->gen) == seen && !atomic_load(&t->stop)) pthread_cond_wait(&t->wake, &t->mu);
            atomic_fetch_sub(&t->sleepers, 1);
            pthread_mutex_unlock(&t->mu);
        }
        if (atomic_load(&t->stop)) return NULL;
        seen = atomic_load_explicit(&t->gen, memory_order_acquire);
        int n0, n1;
        share(t->job.n, t->threads, w->id, &n0, &n1);
        run_cblas(&t->job, n0, n1);
        atomic_fetch_sub_explicit(&t->pending, 1, memory_order_release);
    }
}

gemm_team *gemm_team_new(int threads) {
    if (threads < 1 || threads > MAX_TEAM) return NULL;
    gemm_team *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->threads = threads;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    for (int i = 1; i < threads; i++) {
        t->w[i].team = t;
        t->w[i].id = i;
        if (pthread_create(&t->w[i].th, NULL, worker_main, &t->w[i]) != 0) {
            t->threads = i; /* join those that started */
            gemm_team_free(t);
            return NULL;
        }
    }
    return t;
}

void gemm_team_free(gemm_team *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    atomic_store(&t->stop, 1);
    pthread_cond_broadcast(&t->wake);
    pthread_mutex_unlock(&t->mu);
    for (int i = 1; i < t->threads; i++) pthread_join(t->w[i].th, NULL);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void dispatch(gemm_team *t, const gemm_job *j) {
    if (!t || t->threads == 1 || (long)j->m * j->n * j->k < SPLIT_MIN_MACS || j->n < 32) {
        run_cblas(j, 0, j->n);
        return;
    }
    t->job = *j;
    atomic_store_explicit(&t->pending, t->threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
    if (atomic_load(&t->sleepers)) {
        pthread_mutex_lock(&t->mu);
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->mu);
    }
    int n0, n1;
    share(j->n, t->threads, 0, &n0, &n1);
    run_cblas(j, n0, n1);
    while (atomic_load_explicit(&t->pending, memory_order_acquire) > 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

void gemm_nt(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    gemm_job j = {OP_NT, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    dispatch(team, &j);
}

void gemm_nn(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    gemm_job j = {OP_NN, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    dispatch(team, &j);
}

void gemm_tn(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    gemm_job j = {OP_TN, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    dispatch(team, &j);
}

void gemv_t(int m, int n, float alpha, const float *a, int lda, const float *x,
            float beta, float *y) {
    cblas_sgemv(CblasRowMajor, CblasTrans, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

void axpy(size_t n, float alpha, const float *x, float *y) {
    cblas_saxpy((int)n, alpha, x, 1, y, 1);
}
