/* srv_routes.c -- the route table and the small routes: index page, health, metrics, model listing, admin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_reports.h"
#include "srv_training.h"
#include "core_reg.h"
#include "srv_routes.h"
#include "srv_static.h"

static void h_root(srv_req *r);
static void h_healthz(srv_req *r);
static void h_readyz(srv_req *r);
static void h_metrics(srv_req *r);
static void h_openapi(srv_req *r);
static void h_models(srv_req *r);
static void h_model(srv_req *r);
static void h_reload(srv_req *r);

/* Order matters only for readability: a path matches at most one pattern per method. */
const srv_route srv_routes[] = {
    {"/", SRV_GET, 0, h_root},
    {"/healthz", SRV_GET, 0, h_healthz},
    {"/readyz", SRV_GET, 0, h_readyz},
    {"/metrics", SRV_GET, 0, h_metrics},
    {"/openapi.json", SRV_GET, 0, h_openapi},
    {"/v1/models", SRV_GET, SRV_R_AUTH, h_models},
    {"/v1/models/{m}", SRV_GET, SRV_R_AUTH, h_model},
    {"/v1/models/{m}/predict", SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_predict},
    {"/v1/models/{m}/saliency", SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_saliency},
    {"/predict", SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_predict_default},
    {"/v1/models/{m}/layers", SRV_GET, SRV_R_AUTH, srv_h_layers},
    {"/v1/models/{m}/filters/{l}/{f}", SRV_GET | SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_filters},
    {"/v1/models/{m}/activations/{l}", SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_activations},
    {"/v1/models/{m}/explain", SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_explain},
    {"/v1/models/{m}/classes/{c}/visualize", SRV_GET | SRV_POST, SRV_R_AUTH | SRV_R_BODY | SRV_R_IMAGE, srv_h_classviz},
    {"/v1/models/{m}/mistakes", SRV_GET, SRV_R_AUTH, srv_h_mistakes},
    {"/v1/samples", SRV_GET, 0, srv_h_samples},
    {"/v1/admin/reload", SRV_POST, SRV_R_ADMIN, h_reload},
    {"/v2", SRV_GET, SRV_R_V2, srv_h_v2_server},
    {"/v2/health/live", SRV_GET, SRV_R_V2, srv_h_v2_live},
    {"/v2/health/ready", SRV_GET, SRV_R_V2, srv_h_v2_ready},
    {"/v2/models/{m}", SRV_GET, SRV_R_V2 | SRV_R_AUTH, srv_h_v2_model},
    {"/v2/models/{m}/ready", SRV_GET, SRV_R_V2 | SRV_R_AUTH, srv_h_v2_model_ready},
    {"/v2/models/{m}/infer", SRV_POST, SRV_R_V2 | SRV_R_AUTH | SRV_R_BODY, srv_h_v2_infer},
    {"/v1/training", SRV_GET, SRV_R_AUTH, srv_h_training},
    {"/v1/reports", SRV_GET, 0, srv_h_reports},
    {"/v1/reports/{name}", SRV_GET, 0, srv_h_report},
    {"/v1/reports/{name}/figures/{file}", SRV_GET, 0, srv_h_report_figure},
    {"/v1/test/hold", SRV_POST, SRV_R_TEST, srv_h_test_hold},
    {"/v1/test/release", SRV_POST, SRV_R_TEST, srv_h_test_release},
};
const int srv_n_routes = (int)(sizeof srv_routes / sizeof srv_routes[0]);

static int static_match(srv_ctx *ctx, const char *path) {
    return srv_static_resolve(ctx, path, NULL, 0, NULL) == 0;
}

/* Paths no pattern matches: the static files (the page, /docs/...). */
const srv_fallback srv_route_fallback = {static_match, srv_static_serve};

/* ==== Pages and probes ==== */

/* HTML-escape into a growing string; returns 0 or -1 on allocation failure. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, int escape) {
    for (; *s; s++) {
        char tmp[8];
        const char *piece = tmp;
        if (escape && *s == '<') piece = "&lt;";
        else if (escape && *s == '>') piece = "&gt;";
        else if (escape && *s == '&') piece = "&amp;";
        else if (escape && *s == '"') piece = "&quot;";
        else {
            tmp[0] = *s;
            tmp[1] = 0;
        }
        size_t n = strlen(piece);
        if (*len + n + 1 > *cap) {
            size_t nc = *cap * 2 + n + 1;
            char *nb = realloc(*buf, nc);
            if (!nb) return -1;
            *buf = nb;
            *cap = nc;
        }
        memcpy(*buf + *len, piece, n + 1);
        *len += n;
    }
    return 0;
}

/* The browser page when static/ has one, else a plain list of the models. */
static void h_root(srv_req *r) {
    char real[PATH_MAX];
    if (!srv_static_resolve(r->ctx, "/index.html", real, sizeof real, NULL)) {
        free(r->path);
        r->path = strdup("/index.html");
        if (r->path) {
            srv_static_serve(r);
            return;
        }
    }
    core_store *s = core_reg_acquire(r->ctx->registry);
    size_t len = 0, cap = 4096;
    char *b = malloc(cap);
    int bad = !b;
    if (b) b[0] = 0;
    bad = bad || append(&b, &len, &cap,
                        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Loupe</title></head>\n"
                        "<body><h1>Loupe</h1>\n<p>Image classifiers over HTTP. API reference: "
                        "<a href=\"/docs/api.md\">docs/api.md</a>.</p>\n<h2>Models</h2>\n<ul>\n", 0);
    core_model *def = core_store_default(s);
    /* With an API token the model names are the token's to see, as on /v1/models. */
    int hidden = r->ctx->cfg->api_token && !srv_req_bearer_ok(r, r->ctx->cfg->api_token);
    if (hidden) bad = bad || append(&b, &len, &cap, "<li>listed with the API token (Authorization: Bearer)</li>\n", 0);
    for (int i = 0; !bad && !hidden && i < core_store_count(s); i++) {
        core_model *m = core_store_at(s, i);
        char acc[64] = "";
        if (m->has_accuracy) snprintf(acc, sizeof acc, ", test accuracy %.2f%%", m->test_accuracy * 100);
        bad = append(&b, &len, &cap, "<li><a href=\"/v1/models/", 0) || append(&b, &len, &cap, m->name, 1) ||
              append(&b, &len, &cap, "\">", 0) || append(&b, &len, &cap, m->name, 1) ||
              append(&b, &len, &cap, "</a> (", 0) || append(&b, &len, &cap, m->kind, 1) ||
              append(&b, &len, &cap, acc, 0) || append(&b, &len, &cap, m == def ? ", default" : "", 0) ||
              append(&b, &len, &cap, ")</li>\n", 0);
    }
    if (!bad && !hidden && !core_store_count(s)) bad = append(&b, &len, &cap, "<li>none loaded</li>\n", 0);
    bad = bad || append(&b, &len, &cap,
                        "</ul>\n<p>Try: <code>curl --data-binary @shoe.png http://HOST/predict</code></p>\n"
                        "</body></html>\n",
                        0);
    core_store_release(s);
    if (bad) {
        free(b);
        b = NULL;
    }
    srv_reply_buf(r, 200, "text/html; charset=utf-8", b, len);
}

static void h_healthz(srv_req *r) {
    srv_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_readyz(srv_req *r) {
    if (atomic_load_explicit(&r->ctx->draining, memory_order_relaxed)) {
        srv_reply_json(r, 503, json_pack("{s:s, s:s}", "status", "draining", "reason", "shutting down"));
        return;
    }
    core_store *s = core_reg_acquire(r->ctx->registry);
    int n = core_store_count(s);
    core_store_release(s);
    if (!n)
        srv_reply_json(r, 503, json_pack("{s:s, s:s}", "status", "not_ready", "reason", "no model is loaded"));
    else
        srv_reply_json(r, 200, json_pack("{s:s, s:i}", "status", "ready", "models", n));
}

static void h_metrics(srv_req *r) {
    size_t len = 0;
    char *text = srv_metrics_render(r->ctx->metrics, &len);
    srv_reply_buf(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* The OpenAPI document is docs/openapi.json of --docs (share/loupe/docs when installed):
 * the one file the tests validate, served as it is. */
static void h_openapi(srv_req *r) {
    free(r->path);
    r->path = strdup("/docs/openapi.json");
    if (!r->path) {
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    srv_static_serve(r);
}

/* ==== Models ==== */

static void h_models(srv_req *r) {
    core_store *s = core_reg_acquire(r->ctx->registry);
    core_model *def = core_store_default(s);
    size_t len = 0, cap = 1024;
    char *b = malloc(cap);
    int bad = !b;
    if (b) b[0] = 0;
    /* The entries are rendered at load: splice them in rather than re-encode. */
    bad = bad || append(&b, &len, &cap, "{\"default\":", 0);
    if (def) {
        json_t *name = json_string(def->name);
        char *q = name ? json_dumps(name, JSON_ENCODE_ANY) : NULL;
        bad = bad || !q || append(&b, &len, &cap, q, 0);
        free(q);
        json_decref(name);
    } else {
        bad = bad || append(&b, &len, &cap, "null", 0);
    }
    bad = bad || append(&b, &len, &cap, ",\"models\":[", 0);
    for (int i = 0; !bad && i < core_store_count(s); i++)
        bad = (i && append(&b, &len, &cap, ",", 0)) || append(&b, &len, &cap, core_store_at(s, i)->summary_json, 0);
    bad = bad || append(&b, &len, &cap, "]}", 0);
    core_store_release(s);
    if (bad) {
        free(b);
        b = NULL;
    }
    srv_reply_buf(r, 200, "application/json", b, len);
}

static void h_model(srv_req *r) {
    core_model *m = srv_route_model(r);
    if (!m) return;
    srv_reply_text(r, 200, "application/json", m->detail_json);
    core_model_release(m);
}

/* ==== Admin ==== */

/* The reload itself, on a heavy-lane worker. */
static void reload_job(core_job *job, core_job_state st) {
    srv_work *w = (srv_work *)job;
    srv_req *r = w->r;
    if (st != CORE_JOB_RUN) {
        srv_reply_error(r, CORE_E_UNAVAILABLE, "%s", st == CORE_JOB_CANCELLED ? "the server is shutting down"
                                                                              : "the reload waited too long in the queue");
    } else {
        json_t *report = NULL;
        char err[512];
        int n = core_reg_reload(r->ctx->registry, &report, err, sizeof err);
        srv_metrics_reload(r->ctx->metrics, n >= 0);
        srv_metrics_store_loaded(r->ctx->metrics, n, report);
        if (n < 0) {
            srv_reply_error(r, CORE_E_INTERNAL, "reload failed, the old models stay: %s", err);
        } else {
            core_store *s = core_reg_acquire(r->ctx->registry);
            core_model *def = core_store_default(s);
            if (report) json_object_set_new(report, "default", def ? json_string(def->name) : json_null());
            core_store_release(s);
            srv_reply_json(r, 200, report);
        }
    }
    srv_work_free(w);
    srv_req_resume(r);
}

static void h_reload(srv_req *r) {
    const char *token = r->ctx->cfg->admin_token;
    if (!token) {
        srv_reply_error(r, CORE_E_NOT_FOUND, "no route POST %s (admin routes are off without LOUPE_ADMIN_TOKEN)",
                        r->path);
        return;
    }
    if (!srv_req_bearer_ok(r, token)) {
        srv_reply_error(r, CORE_E_UNAUTHORIZED, "%s", srv_req_header(r, "Authorization") ? "wrong bearer token" : "this route needs Authorization: Bearer <token>");
        r->resp.www_authenticate = 1;
        return;
    }
    /* Loading and warming models takes a while: on the heavy lane. */
    srv_work *w = srv_work_new(r, NULL, CORE_OP_PREDICT);
    if (!w) {
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    w->prepare = NULL;
    w->job.fn = reload_job;
    int rc = srv_req_defer(r, r->ctx->lane_heavy, &w->job);
    if (rc) {
        srv_reply_busy(r, r->ctx->lane_heavy, rc);
        srv_work_free(w);
    }
}

/* ==== Test hooks (LOUPE_TEST_HOOKS=1) ==== */

/* Holds its worker until /v1/test/release (or the daemon stops): lets a test
 * fill a lane deterministically. */
static void hold_job(core_job *job, core_job_state st) {
    srv_work *w = (srv_work *)job;
    srv_req *r = w->r;
    srv_ctx *ctx = r->ctx;
    if (st == CORE_JOB_RUN) {
        pthread_mutex_lock(&ctx->test_lock);
        unsigned gen = ctx->test_gen;
        while (ctx->test_gen == gen && !ctx->test_closed) pthread_cond_wait(&ctx->test_cond, &ctx->test_lock);
        pthread_mutex_unlock(&ctx->test_lock);
        srv_reply_json(r, 200, json_pack("{s:s}", "status", "released"));
    } else {
        srv_reply_error(r, CORE_E_UNAVAILABLE, "not held: %s", st == CORE_JOB_CANCELLED ? "shutting down" : "expired");
    }
    srv_work_free(w);
    srv_req_resume(r);
}

void srv_h_test_hold(srv_req *r) {
    const char *lane = srv_req_query(r, "lane");
    core_queue *q = lane && !strcmp(lane, "heavy") ? r->ctx->lane_heavy : r->ctx->lane_main;
    srv_work *w = srv_work_new(r, NULL, CORE_OP_PREDICT);
    if (!w) {
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    w->job.fn = hold_job;
    int rc = srv_req_defer(r, q, &w->job);
    if (rc) {
        srv_reply_busy(r, q, rc);
        srv_work_free(w);
    }
}

void srv_h_test_release(srv_req *r) {
    srv_ctx *ctx = r->ctx;
    pthread_mutex_lock(&ctx->test_lock);
    ctx->test_gen++;
    pthread_cond_broadcast(&ctx->test_cond);
    pthread_mutex_unlock(&ctx->test_lock);
    srv_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}
