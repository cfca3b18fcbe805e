/* srv_infer.c -- the image and visualisation routes: parse at the edge, run srv_explain inline or on the expensive pool. */
#include <stdlib.h>
#include <string.h>

#include "srv_explain.h"
#include "srv_input.h"
#include "srv_pool.h"
#include "srv_routes.h"

reg_model *srv_route_model(srv_req *r) {
    const char *name = r->param[0];
    srv_req_set_model(r, name);
    reg_model *m = reg_get(r->ctx->registry, name);
    if (!m) srv_reply_error(r, SRV_E_MODEL_NOT_FOUND, "no model named '%s' (GET /v1/models lists them)", name);
    return m;
}

static const char *query_arg(void *ctx, const char *key) {
    return srv_req_query(ctx, key);
}

/* One operation, everything it holds; freed by finish(). */
typedef struct {
    srv_job job;       /* first: the pool hands back &job */
    srv_req *r;
    reg_model *m;      /* retained */
    srv_op op;
    srv_xopts o;
    srv_input in;
    int has_input;
    double t0;
} call;

static void call_free(call *c) {
    srv_input_free(&c->in);
    reg_model_release(c->m);
    free(c);
}

/* Run the operation and answer r. */
static void call_run(call *c) {
    srv_out out;
    srv_fail f;
    if (srv_explain_run(c->m, c->op, &c->o, c->has_input ? &c->in : NULL, c->r->ctx->metrics, c->t0, &out, &f))
        srv_reply_error(c->r, f.kind, "%s", f.msg);
    else
        srv_reply_buf(c->r, 200, out.content_type, out.body, out.len);
}

static void call_job(srv_job *job, int cancelled) {
    call *c = (call *)job;
    srv_req *r = c->r;
    if (cancelled) {
        srv_reply_error(r, SRV_E_UNAVAILABLE, "the server is shutting down");
        r->resp.retry_after = 1;
    } else {
        call_run(c);
    }
    call_free(c);
    srv_req_resume(r);
}

/* The common path of every image/visualisation route on model m (retained;
 * released here). needs_input: 1 reads the body as an image, 0 none, -1
 * optional (filters: POST has one, GET does not). */
static void handle(srv_req *r, reg_model *m, srv_op op, int needs_input) {
    call *c = calloc(1, sizeof *c);
    if (!c) {
        reg_model_release(m);
        srv_reply_error(r, SRV_E_NOMEM, "out of memory");
        return;
    }
    c->job.fn = call_job;
    c->r = r;
    c->m = m;
    c->op = op;
    c->t0 = srv_now();
    srv_fail f;
    const char *layer = r->param[1], *filter = r->param[2];
    if (srv_xopts_parse(m, op, layer, filter, query_arg, r, &c->o, &f)) {
        srv_reply_error(r, f.kind, "%s", f.msg);
        call_free(c);
        return;
    }
    if (needs_input > 0 || (needs_input < 0 && !strcmp(r->method, "POST"))) {
        if (srv_input_read(r, m, &c->in)) {
            call_free(c);
            return;
        }
        c->has_input = 1;
    }
    if (srv_op_expensive(m, op) && r->ctx->pool) {
        if (srv_req_defer(r, &c->job)) {
            srv_reply_busy(r);
            call_free(c);
        }
        return; /* the worker answers and frees c */
    }
    call_run(c);
    call_free(c);
}

void srv_h_predict(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (m) handle(r, m, SRV_OP_PREDICT, 1);
}

void srv_h_predict_default(srv_req *r) {
    reg_model *m = reg_get(r->ctx->registry, NULL);
    if (!m) {
        const char *want = reg_default_name(r->ctx->registry);
        if (want)
            srv_reply_error(r, SRV_E_MODEL_NOT_FOUND, "the default model '%s' is not loaded", want);
        else
            srv_reply_error(r, SRV_E_UNAVAILABLE, "no model is loaded (train one: loupe train-mlp --out models/NAME)");
        return;
    }
    srv_req_set_model(r, m->name);
    handle(r, m, SRV_OP_PREDICT, 1);
}

void srv_h_saliency(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (m) handle(r, m, SRV_OP_SALIENCY, 1);
}

void srv_h_filters(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (m) handle(r, m, SRV_OP_FILTERS, -1);
}

void srv_h_activations(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (m) handle(r, m, SRV_OP_ACTIVATIONS, 1);
}

void srv_h_layers(srv_req *r) {
    reg_model *m = srv_route_model(r);
    if (!m) return;
    srv_out out;
    srv_fail f;
    if (srv_explain_layers(m, &out, &f)) srv_reply_error(r, f.kind, "%s", f.msg);
    else srv_reply_buf(r, 200, out.content_type, out.body, out.len);
    reg_model_release(m);
}
