/* srv_metrics.h -- lock-free request and inference counters, rendered as Prometheus text. */
#ifndef LOUPE_SRV_METRICS_H
#define LOUPE_SRV_METRICS_H

#include <stddef.h>

#include <jansson.h>

typedef struct srv_metrics srv_metrics;

/* Counters for n_routes routes named by labels (borrowed; they must outlive
 * the metrics). Returns NULL on allocation failure. */
srv_metrics *srv_metrics_new(const char *const *labels, int n_routes);
void srv_metrics_free(srv_metrics *m);

/* One finished request on route index `route` (out of range: ignored). */
void srv_metrics_request(srv_metrics *m, int route, unsigned status, double seconds);
/* In-flight gauge: +1 when a request starts, -1 when it ends. */
void srv_metrics_in_flight(srv_metrics *m, int delta);
/* One forward (or gradient) pass of model `name`; models past the table's
 * capacity are not recorded. Never blocks except on a model's first use. */
void srv_metrics_inference(srv_metrics *m, const char *model, double seconds);
void srv_metrics_set_models_loaded(srv_metrics *m, int n);
void srv_metrics_reload(srv_metrics *m, int ok);
/* The outcome of a load of the store (at start-up or a reload): n_models is
 * core_reg_reload's answer (-1: the store could not be read), report its report
 * (may be NULL). Sets loupe_models_loaded (unless n_models < 0), the gauges
 * loupe_reload_last_success and loupe_reload_failed_models, and counts each
 * folder of report's "skipped" in loupe_reload_failures_total{model}. */
void srv_metrics_store_loaded(srv_metrics *m, int n_models, const json_t *report);

/* One forward pass of the dynamic batcher on model `name` with `images` images. */
void srv_metrics_batch(srv_metrics *m, const char *model, int images);
/* A client that left while queued; its request was skipped. */
void srv_metrics_cancelled(srv_metrics *m);

/* Why the HTTP layer cut a connection or refused a request before its handler. */
typedef enum {
    SRV_REFUSED_REQUEST_TIMEOUT, /* the request (or the answer's delivery) overran --request-timeout */
    SRV_REFUSED_PER_IP,          /* the client's address had --max-conn-per-ip connections open */
    SRV_REFUSED_BODY_BUDGET,     /* buffering its body would pass --body-budget */
    SRV_REFUSED_N
} srv_refused_reason;
/* One connection cut or request refused, for reason. */
void srv_metrics_refused(srv_metrics *m, srv_refused_reason reason);
/* Bytes of request bodies buffered now, all connections together. */
void srv_metrics_body_bytes(srv_metrics *m, long long delta);

/* One work queue's (lane's) counters. */
typedef struct srv_lane_stats srv_lane_stats;

/* Add the counters of lane `name` (a static string), to pass as the ctx of
 * its core_queue_hooks. Call at start-up, before the daemon's threads run.
 * NULL (then the hooks ignore the lane) when m is NULL or the table is full. */
srv_lane_stats *srv_metrics_lane(srv_metrics *m, const char *name);

/* The work queues' hooks (core_queue_hooks, ctx = the lane's srv_lane_stats):
 * a lane's running and queued jobs now; one job's wait from push to start;
 * one request refused because the lane was full (429) or it expired (503). */
void srv_metrics_lane_depth(void *ctx, const char *lane, int running, int queued);
void srv_metrics_lane_wait(void *ctx, const char *lane, double seconds);
void srv_metrics_lane_rejected(void *ctx, const char *lane, int expired);

/* The exposition text in a malloc'd NUL-terminated buffer (caller frees),
 * or NULL on allocation failure. */
char *srv_metrics_render(srv_metrics *m, size_t *len);

#endif
