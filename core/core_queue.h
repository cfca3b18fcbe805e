/* core_queue.h -- worker threads behind a bounded FIFO of intrusive jobs; queued jobs of one batch key are taken together. */
#ifndef LOUPE_CORE_QUEUE_H
#define LOUPE_CORE_QUEUE_H

/* How a job's function is called. */
typedef enum {
    CORE_JOB_RUN,        /* do the work */
    CORE_JOB_CANCELLED,  /* the queue is stopping: answer "shutting down" */
    CORE_JOB_EXPIRED     /* it waited longer than the queue's timeout: answer "too late" */
} core_job_state;

/* A unit of work; embed it in the caller's struct (the queue never allocates
 * per job). Every job is handed back exactly once: to fn, or (when key is set
 * and it was batched) to fn_batch, on a worker thread, which then owns the
 * enclosing struct. */
typedef struct core_job {
    struct core_job *next;
    void (*fn)(struct core_job *job, core_job_state st);
    /* key != NULL: the job may run together with other queued jobs of the same
     * key, which must all have this fn_batch; it gets n >= 1 jobs, all to run. */
    const void *key;
    void (*fn_batch)(struct core_job **jobs, int n);
    int rows;            /* what the job adds to a batch (images); >= 1 */
    double t_arrival;    /* clock_now() when the request arrived: the timeout counts from it */
    double t_queued;     /* clock_now() at core_queue_push */
} core_job;

typedef struct core_queue core_queue;

/* Hooks for metrics; each may be NULL. depth is called with the queue's lock
 * held (it must be quick and must not call the queue); the others without. */
typedef struct {
    void *ctx;
    void (*depth)(void *ctx, const char *lane, int running, int queued);
    void (*wait)(void *ctx, const char *lane, double seconds);   /* push to start, per job */
    void (*rejected)(void *ctx, const char *lane, int expired);  /* 0: full (429), 1: expired (503) */
} core_queue_hooks;

typedef struct {
    const char *name;    /* "main", "heavy": thread names and metric labels; static string */
    int workers;         /* threads, >= 1 */
    int queue;           /* jobs that may wait besides the running ones, >= 0 */
    int max_batch;       /* rows one batch may hold; 1 = every job alone */
    double batch_delay;  /* seconds a worker waits for more rows when a batch is not full; 0 = none */
    double timeout;      /* seconds from arrival after which a queued job expires; 0 = never */
    int nice;            /* added to the worker threads' niceness (Linux: per thread); 0 = none */
    core_queue_hooks hooks;
} core_queue_params;

/* Start the workers. Returns NULL on failure (nothing left running). */
core_queue *core_queue_new(const core_queue_params *p);
/* Stop: from now on core_queue_reserve refuses (-2); every job queued, or
 * pushed later on a place reserved before, goes to its fn as
 * CORE_JOB_CANCELLED; the running ones finish; the threads are joined. The
 * queue stays valid (reserve and push may still be called) until
 * core_queue_free. Calling it twice is harmless. NULL is accepted. */
void core_queue_stop(core_queue *q);
/* core_queue_stop if it has not run, then free. No thread may use q after. NULL is accepted. */
void core_queue_free(core_queue *q);

/* Reserve a place: 0 when a worker or a queue slot is free (the caller must
 * then core_queue_push exactly one job), -1 when full (counted as a
 * rejection through the hooks), -2 when the queue is stopping. */
int core_queue_reserve(core_queue *q);
/* Queue a job on a reserved place; jobs start in FIFO order. */
void core_queue_push(core_queue *q, core_job *job);

/* Jobs running and waiting now (either pointer may be NULL). */
void core_queue_load(core_queue *q, int *running, int *queued);
/* 1 once core_queue_stop has begun. */
int core_queue_stopping(core_queue *q);
const char *core_queue_name(const core_queue *q);

#endif
