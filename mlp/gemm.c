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

typedef enum { OP_NT, OP_NN, OP_TN, OP_FN } gemm_op;

typedef struct {
    gemm_op op;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
    team_fn fn;             /* OP_FN: fn(ctx, chunk, member) for each chunk */
    void *ctx;
    int n_chunks;           /* OP_FN: how many */
} gemm_job;

typedef struct {
    gemm_team *team;
    int index;              /* member index; the caller is 0 */
    pthread_t th;
} worker;

/* Work is cut into at most 64 chunks, and member i of a team of T owns
 * chunks i, i + T, i + 2T, ...: it runs those first, so from one call to the
 * next each member touches the same columns (the same weights, which then stay
 * in its core's cache). Then it takes any chunk still unclaimed, so a caller
 * never waits for a worker the OS has not scheduled (a shared or busy
 * machine): it simply runs every chunk itself. A chunk is claimed by setting
 * its bit in `claimed`; bits of chunks past the job's count are set from the
 * start, so once everything is claimed the mask is all ones and a late worker
 * finds nothing to take until the caller posts the next job. */
struct gemm_team {
    int threads;
    gemm_job job;           /* written by the caller only while nothing is claimable */
    atomic_ullong claimed;  /* bit c: chunk c of the current job is taken */
    atomic_uint gen;        /* bumped for each job, to wake the workers */
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
    case OP_FN:
        break;
    }
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Columns per chunk: CHUNK_COLS, or more for wide outputs so that there are
 * at most 64 chunks. The width depends only on the problem, never on the
 * team's size, so every element is computed by the same BLAS call shape with
 * one thread or many, and training is bit-identical across --threads. */
static int chunk_width(int n) {
    int w = CHUNK_COLS;
    while ((n + w - 1) / w > 64) w *= 2;
    return w;
}

static void chunk_cols(int n, int c, int *n0, int *n1) {
    int w = chunk_width(n);
    *n0 = c * w;
    *n1 = *n0 + w < n ? *n0 + w : n;
}

static int n_chunks_of(const gemm_job *j) {
    if (j->op == OP_FN) return j->n_chunks;
    if ((long)j->m * j->n * j->k < SPLIT_MIN_MACS) return 1;
    int w = chunk_width(j->n);
    return (j->n + w - 1) / w;
}

static void run_chunk(const gemm_job *j, int c, int member) {
    if (j->op == OP_FN) {
        j->fn(j->ctx, c, member);
        return;
    }
    int n0, n1;
    chunk_cols(j->n, c, &n0, &n1);
    run_cblas(j, n0, n1);
}

/* Claim chunk c; 1 when this thread got it. */
static int claim(gemm_team *t, int c) {
    unsigned long long bit = 1ull << c;
    return !(atomic_fetch_or_explicit(&t->claimed, bit, memory_order_acq_rel) & bit);
}

/* Member `me` runs its own chunks, then whatever is left. It learns which
 * chunks exist from the mask alone (a late worker must not read a job's
 * fields before it has claimed one of its chunks). */
static void run_chunks(gemm_team *t, int me) {
    int T = t->threads;
    for (int pass = 0; pass < 2; pass++) {
        for (int c = pass ? 0 : me; c < 64; c += pass ? 1 : T) {
            unsigned long long m = atomic_load_explicit(&t->claimed, memory_order_relaxed);
            if (m == ~0ull) return;
            if ((m >> c) & 1u || !claim(t, c)) continue;
            run_chunk(&t->job, c, me);
            atomic_fetch_add_explicit(&t->done, 1, memory_order_release);
        }
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    gemm_team *t = w->team;
    unsigned seen = 0;
    for (;;) {
        int spins = 0;
        unsigned gen;
        while ((gen = atomic_load_explicit(&t->gen, memory_order_acquire)) == seen && !atomic_load(&t->stop)) {
            if (++spins < SPIN_LIMIT) { cpu_relax(); continue; }
            pthread_mutex_lock(&t->mu);
            atomic_fetch_add(&t->sleepers, 1);
            while (atomic_load(&t->gen) == seen && !atomic_load(&t->stop))
                pthread_cond_wait(&t->wake, &t->mu);
            atomic_fetch_sub(&t->sleepers, 1);
            pthread_mutex_unlock(&t->mu);
            spins = 0;
        }
        if (atomic_load(&t->stop)) return NULL;
        seen = gen;
        run_chunks(t, w->index);
    }
}

gemm_team *gemm_team_new(int threads) {
    if (threads < 1 || threads > MAX_TEAM) return NULL;
    gemm_team *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->threads = threads;
    atomic_init(&t->claimed, ~0ull);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    for (int i = 1; i < threads; i++) {
        t->w[i].team = t;
        t->w[i].index = i;
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
    if (chunks < 1) return;
    if (chunks > 64) { /* team_run's contract forbids it; run it here rather than lose work */
        for (int c = 0; c < chunks; c++) run_chunk(j, c, 0);
        return;
    }
    if (chunks == 1 && j->op != OP_FN) {
        run_cblas(j, 0, j->n);
        return;
    }
    if (!t || t->threads == 1 || chunks == 1) {
        for (int c = 0; c < chunks; c++) run_chunk(j, c, 0);
        return;
    }
    t->job = *j;
    atomic_store_explicit(&t->done, 0, memory_order_relaxed);
    /* Nothing is claimable until this store: the job above is complete by then. */
    unsigned long long free_bits = chunks == 64 ? ~0ull : (1ull << chunks) - 1;
    atomic_store_explicit(&t->claimed, ~free_bits, memory_order_release);
    atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
    if (atomic_load(&t->sleepers)) {
        pthread_mutex_lock(&t->mu);
        pthread_cond_broadcast(&t->wake);
        pthread_mutex_unlock(&t->mu);
    }
    run_chunks(t, 0);
    /* Only chunks a worker has claimed are left; they are running now. */
    int spins = 0;
    while (atomic_load_explicit(&t->done, memory_order_acquire) < chunks) {
        if (++spins < SPIN_LIMIT) cpu_relax();
        else sched_yield();
    }
}

void gemm_nt(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    gemm_job j = {.op = OP_NT, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
                  .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c};
    dispatch(team, &j);
}

void gemm_nn(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    gemm_job j = {.op = OP_NN, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
                  .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c};
    dispatch(team, &j);
}

void gemm_tn(gemm_team *team, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc) {
    gemm_job j = {.op = OP_TN, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,
                  .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c};
    dispatch(team, &j);
}

void team_run(gemm_team *team, int n_chunks, team_fn fn, void *ctx) {
    gemm_job j = {0};
    j.op = OP_FN;
    j.fn = fn;
    j.ctx = ctx;
    j.n_chunks = n_chunks;
    dispatch(team, &j);
}

int team_threads(const gemm_team *team) { return team ? team->threads : 1; }

void gemv_t(int m, int n, float alpha, const float *a, int lda, const float *x,
            float beta, float *y) {
    cblas_sgemv(CblasRowMajor, CblasTrans, m, n, alpha, a, lda, x, 1, beta, y, 1);
}

void axpy(size_t n, float alpha, const float *x, float *y) {
    cblas_saxpy((int)n, alpha, x, 1, y, 1);
}
