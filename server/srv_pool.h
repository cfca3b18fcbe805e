/* srv_pool.h -- a fixed set of worker threads with a bounded queue, for the expensive routes (429 past it). */
#ifndef LOUPE_SRV_POOL_H
#define LOUPE_SRV_POOL_H

#include "srv_metrics.h"

/* A unit of work; embed it in the caller's struct (the pool never allocates
 * per job). fn runs on a worker thread and owns the enclosing struct. */
typedef struct srv_job {
    struct srv_job *next;
    void (*fn)(struct srv_job *job, int cancelled); /* cancelled: 1 when the pool stops first */
    double t_queued;                                /* srv_now() at push */
} srv_job;

typedef struct srv_pool srv_pool;

/* `workers` threads (>= 1) and room for `queue` waiting jobs (>= 0). metrics
 * (may be NULL) gets the running and queued gauges and the rejections.
 * Returns NULL on failure. */
srv_pool *srv_pool_new(int workers, int queue, srv_metrics *metrics);
/* Run every job already queued as cancelled (fn(job, 1)), wait for the running
 * ones, join the threads and free. NULL is accepted. */
void srv_pool_free(srv_pool *p);

/* Reserve a place: 0 when a worker or a queue slot is free (the caller must
 * then srv_pool_push exactly one job), -1 when full (counted as a rejection). */
int srv_pool_reserve(srv_pool *p);
/* Queue a job on a reserved place; it runs in FIFO order. */
void srv_pool_push(srv_pool *p, srv_job *job);

#endif
