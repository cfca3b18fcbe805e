/* srv_routes.h -- the request handlers behind the route table (srv_routes.c). */
#ifndef LOUPE_SRV_ROUTES_H
#define LOUPE_SRV_ROUTES_H

#include "core_ops.h"
#include "core_queue.h"
#include "srv_http.h"

/* A request's model work, queued on a lane (srv_infer.c runs it). Predict and
 * V2 infer set prepare and answer: they are forward passes that the main lane
 * batches per model; everything else runs core_op_run alone. */
typedef struct srv_work srv_work;
struct srv_work {
    core_job job;              /* first: the queue hands back &job */
    srv_req *r;
    core_model *m;             /* retained; released when the work ends */
    core_op op;
    core_opts o;
    int needs_input;           /* decode the body as an image on the worker */
    core_input in;
    int has_input;
    /* Forward-pass work. prepare runs on the worker before the batch's pass:
     * it sets x [rows, C*H*W] (or fails with f); answer replies from logits
     * [rows, K] of a pass of `batch` images; cleanup frees what prepare made. */
    int (*prepare)(srv_work *w, core_fail *f);
    void (*answer)(srv_work *w, const float *logits, double infer_s, int batch);
    void (*cleanup)(srv_work *w);
    const float *x;
    int rows;
    void *state;               /* prepare's own data (V2: the parsed document and tensor) */
};

/* A new work item for r on m (retained by the caller, released by the work).
 * NULL on allocation failure (m untouched). */
srv_work *srv_work_new(srv_req *r, core_model *m, core_op op);
/* Queue w on lane, batched per model when w is forward-pass work and the lane
 * batches. On a full lane: 429 and w is freed. Either way r is answered or
 * owned by the worker: the handler returns. */
void srv_work_submit(srv_work *w, core_queue *lane);
/* Free w without running it (its model released). */
void srv_work_free(srv_work *w);

/* srv_infer.c: image routes. */
void srv_h_predict(srv_req *r);          /* POST /v1/models/{m}/predict */
void srv_h_predict_default(srv_req *r);  /* POST /predict */
void srv_h_saliency(srv_req *r);         /* POST /v1/models/{m}/saliency */
void srv_h_layers(srv_req *r);           /* GET /v1/models/{m}/layers */
void srv_h_filters(srv_req *r);          /* GET|POST /v1/models/{m}/filters/{l}/{f} */
void srv_h_activations(srv_req *r);      /* POST /v1/models/{m}/activations/{l} */
void srv_h_explain(srv_req *r);          /* POST /v1/models/{m}/explain?method=M */
void srv_h_classviz(srv_req *r);         /* GET|POST /v1/models/{m}/classes/{c}/visualize */

/* srv_samples.c: the test set's images. */
void srv_h_samples(srv_req *r);          /* GET /v1/samples?n=&seed=&class= */
void srv_h_mistakes(srv_req *r);         /* GET /v1/models/{m}/mistakes?n= */
/* Their query values (pure, for tests and fuzzing); v is NULL when absent.
 * Each returns 0, or -1 with f (400, the message quoting v).
 * n: 1..100, default 12. seed: any unsigned 64-bit decimal; *given = 0 when
 * absent. class: an index 0..9 or a class name (case-insensitive); -1 = any. */
int srv_samples_parse_n(const char *v, int *n, core_fail *f);
int srv_samples_parse_seed(const char *v, uint64_t *seed, int *given, core_fail *f);
int srv_samples_parse_class(const char *v, int *cls, core_fail *f);

/* srv_routes.c: test-only routes (LOUPE_TEST_HOOKS=1). */
void srv_h_test_hold(srv_req *r);        /* POST /v1/test/hold?lane=main|heavy: hold a worker */
void srv_h_test_release(srv_req *r);     /* POST /v1/test/release: let every held worker go */

/* srv_v2.c: KServe V2 / Open Inference Protocol. */
void srv_h_v2_server(srv_req *r);
void srv_h_v2_live(srv_req *r);
void srv_h_v2_ready(srv_req *r);
void srv_h_v2_model(srv_req *r);
void srv_h_v2_model_ready(srv_req *r);
void srv_h_v2_infer(srv_req *r);
/* A V2 infer body for m (what srv_h_v2_infer's worker runs; pure, for tests
 * and fuzzing): one input tensor, FP32 or UINT8 (UINT8 normalised as the
 * image routes do), shape [N, C*H*W] (MLPs) or [N, C, H, W], the data counted
 * against the shape before anything is allocated; only "probabilities" may
 * be asked for. Returns 0 with *doc the parsed body (for "id"; json_decref)
 * and *x [*rows, C*H*W] (malloc'd; free), or -1 with f (400 for the body, 500 out of
 * memory) and both NULL. */
int srv_v2_parse(const core_model *m, const unsigned char *body, size_t len, json_t **doc, float **x, int *rows,
                 core_fail *f);

/* The model named by the route's first parameter (retained), or NULL after
 * answering 404. */
core_model *srv_route_model(srv_req *r);

#endif
