/* srv_infer.c -- the model routes: checked on the connection thread, queued on a lane, run and answered by a worker. */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "core_batch.h"
#include "srv_input.h"
#include "srv_routes.h"

core_model *srv_route_model(srv_req *r) {
    const char *name = r->param[0];
    srv_req_set_model(r, name);
    core_model *m = core_reg_get(r->ctx->registry, name);
    if (!m) srv_reply_error(r, CORE_E_MODEL_NOT_FOUND, "no model named '%s' (GET /v1/models lists them)", name);
    return m;
}

static const char *query_arg(void *ctx, const char *key) {
    return srv_req_query(ctx, key);
}

/* ==== Work items ==== */

srv_work *srv_work_new(srv_req *r, core_model *m, core_op op) {
    srv_work *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->r = r;
    w->m = m;
    w->op = op;
    w->job.rows = 1;
    return w;
}

void srv_work_free(srv_work *w) {
    if (!w) return;
    if (w->cleanup) w->cleanup(w);
    core_input_free(&w->in);
    core_model_release(w->m);
    free(w);
}

/* The work's answer is set: free it and let the connection send it. */
static void work_done(srv_work *w) {
    srv_req *r = w->r;
    srv_work_free(w);
    srv_req_resume(r);
}

/* The client left while its request was queued: nobody reads an answer. */
static int skip_gone(srv_work *w) {
    if (!srv_req_gone(w->r)) return 0;
    srv_metrics_cancelled(w->r->ctx->metrics);
    srv_reply_error(w->r, CORE_E_CANCELLED, "the client closed the connection while the request was queued");
    return 1;
}

/* ==== Forward passes, batched ==== */

/* n forward-pass items of one model (the lane's batch key), in arrival
 * order: each is checked, prepared (decoded, parsed) and then all that are
 * left go through one pass; every item gets its own answer. */
static void run_batch(core_job **jobs, int n) {
    srv_work *first = (srv_work *)jobs[0];
    /* Any item, the first too, may be answered and freed before the pass:
     * keep what the batch needs of them. */
    srv_metrics *metrics = first->r->ctx->metrics;
    const srv_config *first_cfg = first->r->ctx->cfg;
    core_model *m = first->m;
    core_model_retain(m);
    core_batch_part *parts = calloc((size_t)n, sizeof *parts);
    srv_work **live = calloc((size_t)n, sizeof *live);
    int nl = 0;
    core_fail f;
    for (int i = 0; i < n; i++) {
        srv_work *w = (srv_work *)jobs[i];
        if (!parts || !live) {
            srv_reply_error(w->r, CORE_E_NOMEM, "out of memory for a batch of %d", n);
            work_done(w);
            continue;
        }
        if (skip_gone(w)) {
            work_done(w);
            continue;
        }
        int bad = w->prepare(w, &f);
        float *logits = bad ? NULL : malloc((size_t)w->rows * m->n_classes * sizeof *logits);
        if (!bad && !logits) bad = core_failf(&f, CORE_E_NOMEM, "out of memory for %d rows of logits", w->rows);
        if (bad) {
            srv_reply_error(w->r, f.kind, "%s", f.msg);
            work_done(w);
            continue;
        }
        parts[nl] = (core_batch_part){w->x, w->rows, logits};
        live[nl++] = w;
    }
    /* The queue counted each job as one image; a V2 request's rows are known
     * only now. Passes of at most --max-batch rows, a larger request alone. */
    int max = (int)first_cfg->max_batch;
    for (int i = 0; i < nl;) {
        int j = i, pass_rows = 0;
        while (j < nl && (j == i || pass_rows + parts[j].rows <= max)) pass_rows += parts[j++].rows;
        double infer_s = 0;
        int rc = core_batch_forward(m, parts + i, j - i, &infer_s, &f);
        if (!rc) {
            srv_metrics_inference(metrics, m->name, infer_s);
            srv_metrics_batch(metrics, m->name, pass_rows);
        }
        for (; i < j; i++) {
            if (rc) srv_reply_error(live[i]->r, f.kind, "%s", f.msg);
            else live[i]->answer(live[i], parts[i].logits, infer_s, pass_rows);
            free(parts[i].logits);
            work_done(live[i]);
        }
    }
    free(parts);
    free(live);
    core_model_release(m);
}

/* Predict's prepare: decode the upload into the model's input. */
static int predict_prepare(srv_work *w, core_fail *f) {
    if (srv_input_read(w->r, w->m, &w->in, f)) return -1;
    w->has_input = 1;
    w->x = w->in.x;
    w->rows = 1;
    return 0;
}

static void predict_answer(srv_work *w, const float *logits, double infer_s, int batch) {
    core_out out;
    core_fail f;
    if (core_predict_answer(w->m, &w->o, &w->in, logits, infer_s, batch, w->r->t_start, &out, &f))
        srv_reply_error(w->r, f.kind, "%s", f.msg);
    else
        srv_reply_buf(w->r, 200, out.content_type, out.body, out.len);
}

/* ==== Everything else: one operation alone ==== */

static void run_op(srv_work *w) {
    core_out out;
    core_fail f;
    srv_req *r = w->r;
    if (w->needs_input) {
        if (srv_input_read(r, w->m, &w->in, &f)) {
            srv_reply_error(r, f.kind, "%s", f.msg);
            return;
        }
        w->has_input = 1;
    }
    if (core_op_run(w->m, w->op, &w->o, w->has_input ? &w->in : NULL, r->t_start, &out, &f)) {
        srv_reply_error(r, f.kind, "%s", f.msg);
        return;
    }
    srv_metrics_inference(r->ctx->metrics, w->m->name, out.infer_s);
    srv_reply_buf(r, 200, out.content_type, out.body, out.len);
}

/* The queue's call for a job that runs alone, or that must not run. */
static void work_fn(core_job *job, core_job_state st) {
    srv_work *w = (srv_work *)job;
    srv_req *r = w->r;
    if (st == CORE_JOB_CANCELLED) {
        srv_reply_error(r, CORE_E_UNAVAILABLE, "the server is shutting down");
        r->resp.retry_after = 1;
    } else if (st == CORE_JOB_EXPIRED) {
        srv_reply_error(r, CORE_E_UNAVAILABLE, "the request waited in the queue longer than --queue-timeout (%u ms)",
                        r->ctx->cfg->queue_timeout_ms);
        r->resp.retry_after = 1;
    } else if (w->prepare) {
        run_batch(&job, 1);
        return;
    } else if (!skip_gone(w)) {
        run_op(w);
    }
    work_done(w);
}

void srv_work_submit(srv_work *w, core_queue *lane) {
    srv_req *r = w->r;
    w->job.fn = work_fn;
    if (w->prepare && lane == r->ctx->lane_main && r->ctx->cfg->max_batch > 1) {
        w->job.key = w->m;
        w->job.fn_batch = run_batch;
    }
    int rc = srv_req_defer(r, lane, &w->job);
    if (rc) {
        srv_reply_busy(r, lane, rc);
        srv_work_free(w);
    }
}

/* ==== Handlers (connection threads) ==== */

/* The lane for an upload: the heavy one when its header declares more than
 * --large-pixels (a decode of seconds must not hold a main worker). */
static core_queue *lane_for_upload(srv_req *r) {
    uint64_t px = core_input_pixels(r->content_type, r->multipart_image, r->body, r->body_len);
    return px > r->ctx->cfg->large_pixels ? r->ctx->lane_heavy : r->ctx->lane_main;
}

/* The common path of every image/visualisation route on model m (retained;
 * the work releases it). needs_input: 1 reads the body as an image, 0 none,
 * -1 optional (filters: POST has one, GET does not). Only what costs nothing
 * happens here: the options are checked, the upload's header is read. */
static void handle(srv_req *r, core_model *m, core_op op, int needs_input) {
    srv_work *w = srv_work_new(r, m, op);
    if (!w) {
        core_model_release(m);
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    core_fail f;
    const char *layer = r->param[1], *filter = r->param[2];
    if (core_opts_parse(m, op, layer, filter, query_arg, r, &w->o, &f)) {
        srv_reply_error(r, f.kind, "%s", f.msg);
        srv_work_free(w);
        return;
    }
    w->needs_input = needs_input > 0 || (needs_input < 0 && !strcmp(r->method, "POST"));
    core_queue *lane = r->ctx->lane_main;
    if (core_op_expensive(m, op)) lane = r->ctx->lane_heavy;
    else if (w->needs_input) lane = lane_for_upload(r);
    if (op == CORE_OP_PREDICT) {
        w->prepare = predict_prepare;
        w->answer = predict_answer;
        w->needs_input = 0; /* prepare decodes */
    }
    srv_work_submit(w, lane);
}

void srv_h_predict(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (m) handle(r, m, CORE_OP_PREDICT, 1);
}

void srv_h_predict_default(srv_req *r) {
    core_model *m = core_reg_get(r->ctx->registry, NULL);
    if (!m) {
        const char *want = core_reg_default_name(r->ctx->registry);
        if (want)
            srv_reply_error(r, CORE_E_MODEL_NOT_FOUND, "the default model '%s' is not loaded", want);
        else
            srv_reply_error(r, CORE_E_UNAVAILABLE, "no model is loaded (train one: loupe train-mlp --out models/NAME)");
        return;
    }
    srv_req_set_model(r, m->name);
    handle(r, m, CORE_OP_PREDICT, 1);
}

void srv_h_saliency(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (m) handle(r, m, CORE_OP_SALIENCY, 1);
}

void srv_h_filters(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (m) handle(r, m, CORE_OP_FILTERS, -1);
}

void srv_h_explain(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (m) handle(r, m, CORE_OP_EXPLAIN, 1);
}

void srv_h_classviz(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (m) handle(r, m, CORE_OP_CLASSVIZ, -1);
}

void srv_h_activations(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (m) handle(r, m, CORE_OP_ACTIVATIONS, 1);
}

void srv_h_layers(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (!m) return;
    core_out out;
    core_fail f;
    if (core_op_layers(m, &out, &f)) srv_reply_error(r, f.kind, "%s", f.msg);
    else srv_reply_buf(r, 200, out.content_type, out.body, out.len);
    core_model_release(m);
}
