/* test_srv.c -- unit tests of the daemon's pure-C pieces: error table, base64, config, metrics, registry. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "reg.h"
#include "srv_config.h"
#include "srv_err.h"
#include "srv_explain.h"
#include "srv_input.h"
#include "srv_metrics.h"
#include "srv_pool.h"
#include "srv_reports.h"
#include "srv_static.h"

static void test_err_table(void) {
    /* The table is indexed by kind: every row must sit at its own index. */
    CHECK(srv_err_status(SRV_E_BAD_IMAGE) == 400);
    CHECK(srv_err_status(SRV_E_MODEL_NOT_FOUND) == 404);
    CHECK(srv_err_status(SRV_E_METHOD) == 405);
    CHECK(srv_err_status(SRV_E_TOO_LARGE) == 413);
    CHECK(srv_err_status(SRV_E_MEDIA_TYPE) == 415);
    CHECK(srv_err_status(SRV_E_UNAVAILABLE) == 503);
    CHECK(srv_err_status(SRV_E_NOMEM) == 500);
    CHECK(srv_err_status((srv_err_kind)999) == 500);
    CHECK(!strcmp(srv_err_code(SRV_E_EMPTY_BODY), "empty_body"));
    CHECK(!strcmp(srv_err_code(SRV_E_INTERNAL), "internal"));
    for (int k = 0; k < SRV_E_COUNT; k++) CHECK(srv_err_code((srv_err_kind)k)[0] != 0);
    CHECK(srv_err_from_img(IMG_ERR_TOO_LARGE) == SRV_E_TOO_LARGE);
    CHECK(srv_err_from_img(IMG_ERR_CORRUPT) == SRV_E_BAD_IMAGE);
    CHECK(srv_err_from_img(IMG_ERR_FORMAT) == SRV_E_MEDIA_TYPE);
    CHECK(srv_err_from_img(IMG_ERR_DIMENSIONS) == SRV_E_BAD_DIMENSIONS);
}

static int b64_is(const char *in, const char *want) {
    size_t n = 0;
    int bad = 0;
    unsigned char *out = srv_base64_decode(in, strlen(in), &n, &bad);
    int ok = out && n == strlen(want) && !memcmp(out, want, n);
    free(out);
    return ok;
}

static int b64_bad(const char *in) {
    size_t n = 0;
    int bad = 0;
    unsigned char *out = srv_base64_decode(in, strlen(in), &n, &bad);
    free(out);
    return !out && bad;
}

static void test_base64(void) {
    CHECK(b64_is("", ""));
    CHECK(b64_is("TWFu", "Man"));
    CHECK(b64_is("TWE=", "Ma"));
    CHECK(b64_is("TWE", "Ma"));        /* padding optional */
    CHECK(b64_is("TQ==", "M"));
    CHECK(b64_is("TW\nFu\r\n", "Man"));  /* whitespace ignored */
    CHECK(b64_is("-_-_", "\xfb\xff\xbf")); /* URL-safe alphabet */
    CHECK(b64_is("+/+/", "\xfb\xff\xbf"));
    CHECK(b64_bad("T"));               /* a lone character is not a byte */
    CHECK(b64_bad("TW!u"));
    CHECK(b64_bad("TQ==TQ=="));        /* data after padding */
    CHECK(b64_bad("TQ==="));
}

static void test_config(void) {
    srv_config c;
    char err[256];
    unsetenv("LOUPE_PORT");
    unsetenv("LOUPE_MAX_BODY");
    char *a1[] = {"serve", NULL};
    CHECK(srv_config_parse(&c, 1, a1, stdout, err, sizeof err) == 0);
    CHECK(c.port == 8080 && c.max_body == 8u << 20 && c.drain_grace == 5 && c.threads >= 1 && c.access_log == 1);
    CHECK(c.admin_token == NULL || getenv("LOUPE_ADMIN_TOKEN"));

    setenv("LOUPE_PORT", "9000", 1);
    setenv("LOUPE_MAX_BODY", "2M", 1);
    CHECK(srv_config_parse(&c, 1, a1, stdout, err, sizeof err) == 0);
    CHECK(c.port == 9000 && c.max_body == 2u << 20);
    char *a2[] = {"serve", "--port", "9100", "--max-body=64K", "--drain-grace", "0.5", "--access-log", "off", NULL};
    CHECK(srv_config_parse(&c, 8, a2, stdout, err, sizeof err) == 0); /* flags win over variables */
    CHECK(c.port == 9100 && c.max_body == 64u << 10 && c.drain_grace == 0.5 && c.access_log == 0);

    setenv("LOUPE_PORT", "http", 1);
    CHECK(srv_config_parse(&c, 1, a1, stdout, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "LOUPE_PORT");
    unsetenv("LOUPE_PORT");
    unsetenv("LOUPE_MAX_BODY");
    char *a3[] = {"serve", "--port", "70000", NULL};
    CHECK(srv_config_parse(&c, 3, a3, stdout, err, sizeof err) == -1);
    char *a4[] = {"serve", "--nope", "1", NULL};
    CHECK(srv_config_parse(&c, 3, a4, stdout, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "--nope");
    char *a5[] = {"serve", "--port", NULL};
    CHECK(srv_config_parse(&c, 2, a5, stdout, err, sizeof err) == -1);
    char *a6[] = {"serve", "--max-body", "8X", NULL};
    CHECK(srv_config_parse(&c, 3, a6, stdout, err, sizeof err) == -1);
    char *a7[] = {"serve", "--drain-grace", "-1", NULL};
    CHECK(srv_config_parse(&c, 3, a7, stdout, err, sizeof err) == -1);
    FILE *devnull = fopen("/dev/null", "w");
    char *a8[] = {"serve", "--help", NULL};
    CHECK(srv_config_parse(&c, 2, a8, devnull, err, sizeof err) == 1);
    fclose(devnull);
}

static void test_metrics(void) {
    static const char *const labels[] = {"/a", "/b\"q"};
    srv_metrics *m = srv_metrics_new(labels, 2);
    CHECK(m != NULL);
    if (!m) return;
    srv_metrics_request(m, 0, 200, 0.0003);
    srv_metrics_request(m, 0, 200, 2.0);
    srv_metrics_request(m, 1, 418, 0.001);
    srv_metrics_request(m, 7, 200, 0.001); /* out of range: ignored */
    srv_metrics_inference(m, "mlp-relu", 0.00002);
    srv_metrics_in_flight(m, 1);
    srv_metrics_set_models_loaded(m, 2);
    size_t len = 0;
    char *t = srv_metrics_render(m, &len);
    CHECK(t && strlen(t) == len);
    if (t) {
        CHECK_CONTAINS(t, "loupe_http_requests_total{route=\"/a\",status=\"200\"} 2\n");
        CHECK_CONTAINS(t, "loupe_http_requests_total{route=\"/b\\\"q\",status=\"other\"} 1\n");
        CHECK_CONTAINS(t, "loupe_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.0005\"} 1\n");
        CHECK_CONTAINS(t, "loupe_http_request_duration_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2\n");
        CHECK_CONTAINS(t, "loupe_inference_duration_seconds_count{model=\"mlp-relu\"} 1\n");
        CHECK_CONTAINS(t, "loupe_http_requests_in_flight 1\n");
        CHECK_CONTAINS(t, "loupe_models_loaded 2\n");
        CHECK_CONTAINS(t, "process_start_time_seconds ");
    }
    free(t);
    srv_metrics_free(m);
    srv_metrics_free(NULL);
}

static void test_content_types(void) {
    CHECK(!strcmp(srv_static_content_type("/a/index.html"), "text/html; charset=utf-8"));
    CHECK(!strcmp(srv_static_content_type("x.PNG"), "image/png"));
    CHECK(!strcmp(srv_static_content_type("/a.b/noext"), "application/octet-stream"));
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_registry_empty_and_broken(void) {
    char dir[] = "/tmp/loupe-test-reg-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[256], file[300];
    snprintf(sub, sizeof sub, "%s/broken", dir);
    mkdir(sub, 0755);
    snprintf(file, sizeof file, "%s/model.json", sub);
    write_file(file, "{\"kind\": \"onnx\"}");

    reg *r = reg_new(dir, NULL);
    CHECK(r != NULL);
    if (!r) return;
    reg_store *s = reg_acquire(r);
    CHECK(reg_store_count(s) == 0 && reg_store_default(s) == NULL);
    reg_store_release(s);
    char err[256];
    json_t *report = NULL;
    CHECK(reg_reload(r, &report, err, sizeof err) == 0);
    json_t *skipped = json_object_get(report, "skipped");
    CHECK(json_array_size(skipped) == 1);
    const char *why = json_string_value(json_object_get(json_array_get(skipped, 0), "error"));
    CHECK(why && strstr(why, "torchscript"));
    json_decref(report);
    CHECK(reg_get(r, "broken") == NULL && reg_get(r, NULL) == NULL);
    reg_free(r);

    reg *missing = reg_new("/nonexistent/loupe", "x");
    CHECK(reg_reload(missing, NULL, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "/nonexistent/loupe");
    reg_free(missing);
    reg_free(NULL);

    unlink(file);
    rmdir(sub);
    rmdir(dir);
}

static void test_report_names(void) {
    /* Accepted: what training/reproduce.py writes. */
    CHECK(srv_reports_name_ok("seed-reproduction-quick"));
    CHECK(srv_reports_name_ok("mlp_loss_relu.png"));
    CHECK(srv_reports_name_ok("v1.2_run-3"));
    /* Refused before the file system is asked: each its own case. */
    CHECK(!srv_reports_name_ok(""));
    CHECK(!srv_reports_name_ok("."));
    CHECK(!srv_reports_name_ok(".."));
    CHECK(!srv_reports_name_ok(".hidden"));
    CHECK(!srv_reports_name_ok("a..b"));
    CHECK(!srv_reports_name_ok("a/b"));
    CHECK(!srv_reports_name_ok("a\\b"));
    CHECK(!srv_reports_name_ok("a b"));
    CHECK(!srv_reports_name_ok("a%2fb"));
    CHECK(!srv_reports_name_ok("caf\xc3\xa9"));
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(!srv_reports_name_ok(longname));
    longname[255] = 0;
    CHECK(srv_reports_name_ok(longname));

    srv_config c;
    char err[256];
    unsetenv("LOUPE_REPORTS");
    char *a1[] = {"serve", NULL};
    CHECK(srv_config_parse(&c, 1, a1, stdout, err, sizeof err) == 0);
    CHECK(!strcmp(c.reports_dir, "reports"));
    setenv("LOUPE_REPORTS", "/tmp/r1", 1);
    CHECK(srv_config_parse(&c, 1, a1, stdout, err, sizeof err) == 0);
    CHECK(!strcmp(c.reports_dir, "/tmp/r1"));
    char *a2[] = {"serve", "--reports", "/tmp/r2", NULL};
    CHECK(srv_config_parse(&c, 3, a2, stdout, err, sizeof err) == 0);
    CHECK(!strcmp(c.reports_dir, "/tmp/r2"));
    unsetenv("LOUPE_REPORTS");
}

/* ==== The expensive routes' pool ==== */

typedef struct {
    srv_job job;
    pthread_mutex_t *gate; /* held by the test until it lets the job finish */
    atomic_int *ran, *cancelled;
} gated_job;

static void gated_fn(srv_job *job, int cancelled) {
    gated_job *g = (gated_job *)job;
    pthread_mutex_lock(g->gate);
    pthread_mutex_unlock(g->gate);
    atomic_fetch_add(cancelled ? g->cancelled : g->ran, 1);
}

static void test_pool(void) {
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    atomic_int ran = 0, cancelled = 0;
    gated_job jobs[4];
    srv_metrics *m = srv_metrics_new((const char *const[]){"x"}, 1);
    srv_pool *p = srv_pool_new(1, 2, m);
    CHECK(p != NULL && m != NULL);
    if (!p || !m) return;
    pthread_mutex_lock(&gate);
    /* One worker + two queue slots: three places, the fourth is refused. */
    for (int i = 0; i < 3; i++) {
        jobs[i] = (gated_job){{NULL, gated_fn, 0}, &gate, &ran, &cancelled};
        CHECK(srv_pool_reserve(p) == 0);
        srv_pool_push(p, &jobs[i].job);
    }
    CHECK(srv_pool_reserve(p) == -1);
    size_t len;
    char *text = srv_metrics_render(m, &len);
    CHECK_CONTAINS(text, "loupe_expensive_rejected_total 1");
    free(text);
    pthread_mutex_unlock(&gate);
    while (atomic_load(&ran) < 3) usleep(1000);
    CHECK(srv_pool_reserve(p) == 0); /* places come back as jobs end */
    jobs[3] = (gated_job){{NULL, gated_fn, 0}, &gate, &ran, &cancelled};
    srv_pool_push(p, &jobs[3].job);
    srv_pool_free(p);
    CHECK(atomic_load(&ran) + atomic_load(&cancelled) == 4);
    text = srv_metrics_render(m, &len);
    CHECK_CONTAINS(text, "loupe_expensive_running 0");
    CHECK_CONTAINS(text, "loupe_expensive_queued 0");
    free(text);
    srv_pool_free(NULL);
    srv_metrics_free(m);
}

/* ==== Operations: options and encodings ==== */

static const char *no_args(void *ctx, const char *key) {
    (void)ctx, (void)key;
    return NULL;
}

static const char *viz_args(void *ctx, const char *key) {
    const char *const *kv = ctx;
    for (; *kv; kv += 2)
        if (!strcmp(kv[0], key)) return kv[1];
    return NULL;
}

static void test_explain_options(void) {
    char *b = srv_base64_encode((const unsigned char *)"hello!?", 7);
    CHECK(b && !strcmp(b, "aGVsbG8hPw=="));
    free(b);
    b = srv_base64_encode((const unsigned char *)"", 0);
    CHECK(b && !strcmp(b, ""));
    free(b);

    /* An MLP model folder, written by hand. */
    char dir[] = "/tmp/loupe-test-xpl-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char file[300];
    snprintf(file, sizeof file, "%s/model.json", dir);
    write_file(file, "{\"kind\": \"mlp\", \"classes\": [\"a\", \"b\"], \"input\": {\"channels\": 1, "
                     "\"height\": 1, \"width\": 2}, \"mlp\": {\"activation\": \"relu\", \"sizes\": [2, 2]}}");
    snprintf(file, sizeof file, "%s/weights.safetensors", dir);
    {
        const char hdr[] = "{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                           "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}";
        FILE *f = fopen(file, "wb");
        unsigned long long n = sizeof hdr - 1;
        float w[6] = {1, 0, 0, 1, 0, 0};
        CHECK(f && fwrite(&n, 8, 1, f) == 1 && fwrite(hdr, 1, n, f) == n && fwrite(w, 4, 6, f) == 6);
        if (f) fclose(f);
    }
    char err[REG_ERR_LEN];
    reg_model *m = reg_model_load(dir, "tiny", err, sizeof err);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    srv_xopts o;
    srv_fail f;
    CHECK(srv_xopts_parse(m, SRV_OP_PREDICT, NULL, NULL, no_args, NULL, &o, &f) == 0 && o.top_k == 2);
    CHECK(srv_xopts_parse(m, SRV_OP_FILTERS, "0", "0", no_args, NULL, &o, &f) == -1);
    CHECK(f.kind == SRV_E_UNPROCESSABLE && srv_err_status(f.kind) == 422);
    CHECK(srv_xopts_parse(m, SRV_OP_ACTIVATIONS, "0", NULL, no_args, NULL, &o, &f) == -1 && f.kind == SRV_E_UNPROCESSABLE);
    const char *bad_target[] = {"target", "2", NULL};
    CHECK(srv_xopts_parse(m, SRV_OP_SALIENCY, NULL, NULL, viz_args, bad_target, &o, &f) == -1);
    CHECK(f.kind == SRV_E_BAD_PARAMETER);
    CHECK_CONTAINS(f.msg, "[0,1]");
    const char *ok[] = {"target", "b", "format", "json", "scale", "3", NULL};
    CHECK(srv_xopts_parse(m, SRV_OP_SALIENCY, NULL, NULL, viz_args, ok, &o, &f) == 0);
    CHECK(o.target == 1 && o.as_json && o.scale == 3);
    CHECK(!srv_op_expensive(m, SRV_OP_SALIENCY));

    srv_input in;
    CHECK(srv_input_alloc(m, &in) == 0);
    in.pixels[0] = 0.25f;
    in.pixels[1] = 0.75f;
    srv_input_normalise(m, &in);
    srv_out out;
    CHECK(srv_xopts_parse(m, SRV_OP_PREDICT, NULL, NULL, no_args, NULL, &o, &f) == 0);
    CHECK(srv_explain_run(m, SRV_OP_PREDICT, &o, &in, NULL, 0, &out, &f) == 0);
    CHECK(!strcmp(out.content_type, "application/json"));
    CHECK_CONTAINS(out.body, "\"class\":\"b\"");
    free(out.body);
    CHECK(srv_explain_layers(m, &out, &f) == 0);
    CHECK_CONTAINS(out.body, "\"layers\":[]");
    free(out.body);
    srv_input_free(&in);
    reg_model_release(m);
}

int main(void) {
    RUN(test_err_table);
    RUN(test_base64);
    RUN(test_config);
    RUN(test_metrics);
    RUN(test_content_types);
    RUN(test_registry_empty_and_broken);
    RUN(test_report_names);
    RUN(test_pool);
    RUN(test_explain_options);
    return check_report();
}
