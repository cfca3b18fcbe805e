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
/* Columns of C per chunk: a multiple of 16 (one AVX-512 vector of floats). */
#define CHUNK_COLS 64
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
    pthread_t th;
} worker;

/* Work is handed out in chunks of columns that any member claims with one
 * atomic step, so a caller never waits for a worker that the OS has not
 * scheduled (a shared or busy machine): it simply runs every chunk itself.
 * `claim` packs the job's generation (high 32 bits) with the next unclaimed
 * chunk (low 32), so a late worker cannot claim a chunk of a finished job. */
struct gemm_team {
    int threads;
    gemm_job job;           /* written by the caller only while no chunk is claimable */
    int n_chunks;
    atomic_ullong claim;
    atomic_int done;        /* chunks finished in the current job */
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

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Columns [n0, n1) of chunk c. Chunks have a fixed width whatever the team's
 * size, so every element is computed by the same BLAS call shape with one
 * thread or many, and training is bit-identical across --threads. */
static void chunk_cols(int n, int c, int *n0, int *n1) {
    *n0 = c * CHUNK_COLS;
    *n1 = *n0 + CHUNK_COLS < n ? *n0 + CHUNK_COLS : n;
}

static int n_chunks_of(const gemm_job *j) {
    if ((long)j->m * j->n * j->k < SPLIT_MIN_MACS) return 1;
    return (j->n + CHUNK_COLS - 1) / CHUNK_COLS;
}

/* Claim and run chunks of job generation gen until none is left. */
static void run_chunks(gemm_team *t, unsigned gen) {
    for (;;) {
        unsigned long long s = atomic_load_explicit(&t->claim, memory_order_acquire);
        if ((unsigned)(s >> 32) != gen || (int)(s & 0xffffffffu) >= t->n_chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&t->claim, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_relaxed))
            continue;
        int n0, n1;
        chunk_cols(t->job.n, (int)(s & 0xffffffffu), &n0, &n1);
        run_cblas(&t->job, n0, n1);
        atomic_fetch_add_explicit(&t->done, 1, memory_order_release);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    gemm_team *t = w->team;
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        unsigned gen;
        while ((gen = (unsigned)(atomic_load_explicit(&t->claim, memory_order_acquire) >> 32)) == seen &&
               !atomic_load(&t->stop)) {
            if (++spins < SPIN_LIMIT) { cpu_relax(); continue; }
            pthread_mutex_lock(&t->mu);
            atomic_fetch_add(&t->sleepers, 1);
            while ((unsigned)(atomic_load(&t->claim) >> 32) == seen && !atomic_load(&t->stop))
                pthread_cond_wait(&t->wake, &t->mu);
            atomic_fetch_sub(&t->sleepers, 1);
            pthread_mutex_unlock(&t->mu);
            spins = 0;
        }
        if (atomic_load(&t->stop)) return NULL;
        seen = gen;
        run_chunks(t, gen);
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
    int chunks = n_chunks_of(j);
    if (chunks == 1) {
        run_cblas(j, 0, j->n);
        return;
    }
    if (!t || t->threads == 1) {
        for (int c = 0; c < chunks; c++) {
            int n0, n1;
            chunk_cols(j->n, c, &n0, &n1);
            run_cblas(j, n0, n1);
        }
        return;
    }
    t->job = *j;
    t->n_chunks = chunks;
    atomic_store_explicit(&t->done, 0, memory_order_relaxed);
    unsigned gen = (unsigned)(atomic_load(&t->claim) >> 32) + 1;
    atomic_store_explicit(&t->claim, (unsigned long long)gen << 32, memory_order_release);
    if (atomic_load(&t->sleepers)) {
        pthread_mutex_lock(&t->mu);
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->mu);
    }
    run_chunks(t, gen);
    /* Only chunks a worker has claimed are left; they are running now. */
    int spins = 0;
    while (atomic_load_explicit(&t->done, memory_order_acquire) < t->n_chunks) {
        if (++spins < SPIN_LIMIT) cpu_relax();
        else sched_yield();
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
