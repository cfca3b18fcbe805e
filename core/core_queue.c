/* core_queue.c -- worker threads over a FIFO of intrusive jobs; one mutex, held only to take, give or gather jobs. */
#include "core_queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

/* Jobs one worker gathers at most, whatever max_batch says. */
#define MAX_GATHER 1024

struct core_queue {
    core_queue_params p;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    core_job *head, *tail;
    int reserved;         /* places taken: queued + running + reserved-not-yet-pushed */
    int pending;          /* reserved, not yet pushed: the workers wait for these when stopping */
    int queued, running;
    int capacity;         /* workers + queue */
    int stopping;
    int batch_waiters;    /* workers waiting for more rows of a batch */
    int n_threads;
    int joined;           /* core_queue_stop has run */
    pthread_t *threads;
};

/* Under the lock: two threads' reports must not land out of order. */
static void hook_depth(core_queue *q) {
    if (q->p.hooks.depth) q->p.hooks.depth(q->p.hooks.ctx, q->p.name, q->running, q->queued);
}

/* Unlink j from the list; prev is the node before it (NULL: j is the head). */
static void unlink_job(core_queue *q, core_job *prev, core_job *j) {
    if (prev) prev->next = j->next;
    else q->head = j->next;
    if (q->tail == j) q->tail = prev;
    j->next = NULL;
    q->queued--;
}

static int expired(const core_queue *q, const core_job *j, double now) {
    return q->p.timeout > 0 && now - j->t_arrival > q->p.timeout;
}

/* Under the lock: move queued jobs of key into batch (after its first n),
 * up to max_batch rows in all; expired ones go to *late. Returns the new n. */
static int gather(core_queue *q, const void *key, core_job **batch, int n, int *rows, core_job **late, double now) {
    core_job *prev = NULL, *j = q->head;
    while (j && n < MAX_GATHER && *rows < q->p.max_batch) {
        core_job *next = j->next;
        if (j->key != key) {
            prev = j;
        } else if (expired(q, j, now)) {
            unlink_job(q, prev, j);
            j->next = *late;
            *late = j;
        } else if (*rows + j->rows <= q->p.max_batch) {
            unlink_job(q, prev, j);
            batch[n++] = j;
            *rows += j->rows;
        } else {
            prev = j;
        }
        j = next;
    }
    return n;
}

static struct timespec abs_time(double seconds_from_now) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double s = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + seconds_from_now;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    return ts;
}

/* Hand jobs in the late list to their fn as expired; no lock held. */
static void expire_all(core_queue *q, core_job *late, int *done) {
    while (late) {
        core_job *next = late->next;
        if (q->p.hooks.rejected) q->p.hooks.rejected(q->p.hooks.ctx, q->p.name, 1);
        late->fn(late, CORE_JOB_EXPIRED);
        (*done)++;
        late = next;
    }
}

static void *worker(void *arg) {
    core_queue *q = arg;
    char tname[16];
    snprintf(tname, sizeof tname, "loupe-%s", q->p.name);
    pthread_setname_np(pthread_self(), tname);
    /* Linux applies niceness per thread: the lane's work yields to the rest. */
    if (q->p.nice) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), q->p.nice);
    core_job *one[1];
    core_job **batch = malloc(MAX_GATHER * sizeof *batch);
    int cap = batch ? MAX_GATHER : 1; /* out of memory: every job alone */
    if (!batch) batch = one;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        /* Stopping, a worker still waits for jobs reserved but not yet pushed:
         * each is answered (cancelled), never left suspended. */
        while (!q->head && (!q->stopping || q->pending)) pthread_cond_wait(&q->wake, &q->lock);
        core_job *j = q->head;
        if (!j) break; /* stopping and nothing left or coming */
        unlink_job(q, NULL, j);
        double now = clock_now();
        int stopping = q->stopping, n = 1, rows = j->rows, done = 0;
        core_job *late = NULL;
        batch[0] = j;
        core_job_state st = stopping ? CORE_JOB_CANCELLED : expired(q, j, now) ? CORE_JOB_EXPIRED : CORE_JOB_RUN;
        int batched = st == CORE_JOB_RUN && j->key && q->p.max_batch > 1 && cap > 1;
        if (batched) {
            n = gather(q, j->key, batch, n, &rows, &late, now);
            if (rows < q->p.max_batch && q->p.batch_delay > 0) {
                /* Wait for more of the same key, at most batch_delay in all. */
                struct timespec until = abs_time(q->p.batch_delay);
                q->batch_waiters++;
                while (rows < q->p.max_batch && !q->stopping && n < MAX_GATHER) {
                    int w = pthread_cond_timedwait(&q->wake, &q->lock, &until);
                    n = gather(q, j->key, batch, n, &rows, &late, clock_now());
                    if (w == ETIMEDOUT) break;
                }
                q->batch_waiters--;
            }
        }
        q->running += n;
        hook_depth(q);
        pthread_mutex_unlock(&q->lock);

        expire_all(q, late, &done);
        now = clock_now();
        if (q->p.hooks.wait && st != CORE_JOB_CANCELLED)
            for (int i = 0; i < n; i++) q->p.hooks.wait(q->p.hooks.ctx, q->p.name, now - batch[i]->t_queued);
        if (st == CORE_JOB_EXPIRED && q->p.hooks.rejected) q->p.hooks.rejected(q->p.hooks.ctx, q->p.name, 1);
        if (batched) j->fn_batch(batch, n);
        else j->fn(j, st);

        pthread_mutex_lock(&q->lock);
        q->running -= n;
        q->reserved -= n + done;
        hook_depth(q);
    }
    pthread_mutex_unlock(&q->lock);
    if (batch != one) free(batch);
    return NULL;
}

core_queue *core_queue_new(const core_queue_params *p) {
    core_queue *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->p = *p;
    if (q->p.workers < 1) q->p.workers = 1;
    if (q->p.queue < 0) q->p.queue = 0;
    if (q->p.max_batch < 1) q->p.max_batch = 1;
    if (!q->p.name) q->p.name = "queue";
    q->capacity = q->p.workers + q->p.queue;
    q->threads = calloc((size_t)q->p.workers, sizeof *q->threads);
    pthread_condattr_t ca;
    if (!q->threads || pthread_mutex_init(&q->lock, NULL)) goto fail_mem;
    /* Timed waits count on the monotonic clock, like every duration here. */
    if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
        pthread_cond_init(&q->wake, &ca)) {
        pthread_mutex_destroy(&q->lock);
        goto fail_mem;
    }
    pthread_condattr_destroy(&ca);
    for (; q->n_threads < q->p.workers; q->n_threads++)
        if (pthread_create(&q->threads[q->n_threads], NULL, worker, q)) break;
    if (q->n_threads < q->p.workers) {
        core_queue_free(q);
        return NULL;
    }
    return q;
fail_mem:
    free(q->threads);
    free(q);
    return NULL;
}

void core_queue_stop(core_queue *q) {
    if (!q) return;
    pthread_mutex_lock(&q->lock);
    q->stopping = 1;
    int joined = q->joined;
    q->joined = 1;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
    if (joined) return;
    for (int i = 0; i < q->n_threads; i++) pthread_join(q->threads[i], NULL);
}

void core_queue_free(core_queue *q) {
    if (!q) return;
    core_queue_stop(q);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->lock);
    free(q->threads);
    free(q);
}

int core_queue_reserve(core_queue *q) {
    pthread_mutex_lock(&q->lock);
    int stopping = q->stopping, ok = !stopping && q->reserved < q->capacity;
    if (ok) {
        q->reserved++;
        q->pending++;
    }
    pthread_mutex_unlock(&q->lock);
    if (ok) return 0;
    if (stopping) return -2;
    if (q->p.hooks.rejected) q->p.hooks.rejected(q->p.hooks.ctx, q->p.name, 0);
    return -1;
}

void core_queue_push(core_queue *q, core_job *job) {
    job->next = NULL;
    job->t_queued = clock_now();
    if (job->rows < 1) job->rows = 1;
    pthread_mutex_lock(&q->lock);
    if (q->tail) q->tail->next = job;
    else q->head = job;
    q->tail = job;
    q->queued++;
    q->pending--;
    hook_depth(q);
    /* A worker waiting to fill a batch must see the new job too, and so must
     * every worker of a stopping queue. */
    if (q->batch_waiters || q->stopping) pthread_cond_broadcast(&q->wake);
    else pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
}

void core_queue_load(core_queue *q, int *running, int *queued) {
    pthread_mutex_lock(&q->lock);
    if (running) *running = q->running;
    if (queued) *queued = q->queued;
    pthread_mutex_unlock(&q->lock);
}

int core_queue_stopping(core_queue *q) {
    pthread_mutex_lock(&q->lock);
    int s = q->stopping;
    pthread_mutex_unlock(&q->lock);
    return s;
}

const char *core_queue_name(const core_queue *q) {
    return q->p.name;
}
