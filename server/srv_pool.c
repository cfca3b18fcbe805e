/* srv_pool.c -- worker threads over a FIFO of intrusive jobs; one mutex, held only to take or give a job. */
#include "srv_pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "srv_http.h"

struct srv_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    srv_job *head, *tail;
    int reserved;          /* places taken: queued + running + reserved-not-yet-pushed */
    int queued, running;
    int capacity;          /* workers + queue */
    int stopping;
    int n_threads;
    pthread_t *threads;
    srv_metrics *metrics;
};

static void publish(srv_pool *p) {
    srv_metrics_expensive(p->metrics, p->running, p->queued);
}

static void *worker(void *arg) {
    srv_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->wake, &p->lock);
        srv_job *j = p->head;
        if (!j) break; /* stopping and nothing left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        p->running++;
        int cancelled = p->stopping;
        publish(p);
        pthread_mutex_unlock(&p->lock);
        srv_metrics_expensive_wait(p->metrics, srv_now() - j->t_queued);
        j->fn(j, cancelled);
        pthread_mutex_lock(&p->lock);
        p->running--;
        p->reserved--;
        publish(p);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

srv_pool *srv_pool_new(int workers, int queue, srv_metrics *metrics) {
    if (workers < 1) workers = 1;
    if (queue < 0) queue = 0;
    srv_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->capacity = workers + queue;
    p->metrics = metrics;
    p->threads = calloc((size_t)workers, sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->lock, NULL)) goto fail_mem;
    if (pthread_cond_init(&p->wake, NULL)) {
        pthread_mutex_destroy(&p->lock);
        goto fail_mem;
    }
    for (; p->n_threads < workers; p->n_threads++)
        if (pthread_create(&p->threads[p->n_threads], NULL, worker, p)) break;
    if (p->n_threads < workers) {
        srv_pool_free(p);
        return NULL;
    }
    return p;
fail_mem:
    free(p->threads);
    free(p);
    return NULL;
}

void srv_pool_free(srv_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

int srv_pool_reserve(srv_pool *p) {
    pthread_mutex_lock(&p->lock);
    int ok = !p->stopping && p->reserved < p->capacity;
    if (ok) p->reserved++;
    pthread_mutex_unlock(&p->lock);
    if (!ok) srv_metrics_expensive_rejected(p->metrics);
    return ok ? 0 : -1;
}

void srv_pool_push(srv_pool *p, srv_job *job) {
    job->next = NULL;
    job->t_queued = srv_now();
    pthread_mutex_lock(&p->lock);
    if (p->tail) p->tail->next = job;
    else p->head = job;
    p->tail = job;
    p->queued++;
    publish(p);
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
}
