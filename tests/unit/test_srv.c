/* test_srv.c -- unit tests of the daemon's HTTP-side pieces: the status table, config, metrics, static and report names. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core_engine.h"
#include "srv_config.h"
#include "srv_err.h"
#include "srv_metrics.h"
#include "srv_reports.h"
#include "srv_routes.h"
#include "srv_static.h"

static void test_err_table(void) {
    /* The table is indexed by kind: every row must sit at its own index. */
    CHECK(srv_err_status(CORE_E_BAD_IMAGE) == 400);
    CHECK(srv_err_status(CORE_E_MODEL_NOT_FOUND) == 404);
    CHECK(srv_err_status(CORE_E_METHOD) == 405);
    CHECK(srv_err_status(CORE_E_TOO_LARGE) == 413);
    CHECK(srv_err_status(CORE_E_MEDIA_TYPE) == 415);
    CHECK(srv_err_status(CORE_E_UNAVAILABLE) == 503);
    CHECK(srv_err_status(CORE_E_NOMEM) == 500);
    CHECK(srv_err_status((core_err_kind)999) == 500);
    CHECK(!strcmp(core_err_code(CORE_E_EMPTY_BODY), "empty_body"));
    CHECK(!strcmp(core_err_code(CORE_E_INTERNAL), "internal"));
    for (int k = 0; k < CORE_E_COUNT; k++) CHECK(core_err_code((core_err_kind)k)[0] != 0);
    CHECK(core_err_from_img(IMG_ERR_TOO_LARGE) == CORE_E_TOO_LARGE);
    CHECK(core_err_from_img(IMG_ERR_CORRUPT) == CORE_E_BAD_IMAGE);
    CHECK(core_err_from_img(IMG_ERR_FORMAT) == CORE_E_MEDIA_TYPE);
    CHECK(core_err_from_img(IMG_ERR_DIMENSIONS) == CORE_E_BAD_DIMENSIONS);
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

/* srv_v2_parse on a 1x2x2 MLP: each bad body its own case. */
static int v2_try(const char *body, core_fail *f, float *first) {
    core_model m;
    memset(&m, 0, sizeof m);
    m.channels = 1;
    m.height = m.width = 2;
    m.mean_c[0] = 0.5f;
    m.std_c[0] = 0.25f;
    m.engine = &core_engine_mlp;
    json_t *doc;
    float *x;
    int rows;
    int rc = srv_v2_parse(&m, (const unsigned char *)body, strlen(body), &doc, &x, &rows, f);
    if (rc) {
        CHECK(!doc && !x);
        return rc;
    }
    if (first) *first = x[0];
    json_decref(doc);
    free(x);
    return rows;
}

static void test_v2_parse(void) {
    core_fail f;
    float x0 = 0;
    CHECK(v2_try("{\"inputs\":[{\"name\":\"i\",\"shape\":[2,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4,5,6,7,8]}]}", &f,
                 &x0) == 2);
    CHECK(x0 == 1.0f);
    CHECK(v2_try("{\"inputs\":[{\"name\":\"i\",\"shape\":[1,1,2,2],\"datatype\":\"UINT8\",\"data\":[[[255,0],[0,0]]]}]}", &f,
                 &x0) == 1);
    CHECK(x0 == 2.0f); /* (1 - 0.5) / 0.25 */
    /* Found by fuzz_v2: 3.5e38 is a finite double but an infinite float. */
    CHECK(v2_try("{\"inputs\":[{\"name\":\"i\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3.5e38,4]}]}", &f,
                 NULL) == -1);
    CHECK(f.kind == CORE_E_BAD_INPUT);
    CHECK_CONTAINS(f.msg, "data[2]");
    CHECK(v2_try("{\"inputs\":[{\"name\":\"i\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[-3.4e38,2,3,4]}]}", &f,
                 NULL) == 1);
    CHECK(v2_try("{\"inputs\":[{\"name\":\"i\",\"shape\":[65536,4],\"datatype\":\"FP32\",\"data\":[1]}]}", &f, NULL) == -1);
    CHECK_CONTAINS(f.msg, "has 1 values");
    CHECK(v2_try("{\"inputs\":[]}", &f, NULL) == -1);
    CHECK(f.kind == CORE_E_BAD_JSON);
    CHECK(v2_try("{\"inputs\":[{\"name\":\"i\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}],"
                 "\"outputs\":[{\"name\":\"logits\"}]}", &f, NULL) == -1);
    CHECK_CONTAINS(f.msg, "logits");
}

static void test_samples_params(void) {
    core_fail f;
    int n, cls, given;
    uint64_t seed;
    CHECK(srv_samples_parse_n(NULL, &n, &f) == 0 && n == 12);
    CHECK(srv_samples_parse_n("100", &n, &f) == 0 && n == 100);
    CHECK(srv_samples_parse_n("101", &n, &f) == -1 && f.kind == CORE_E_BAD_PARAMETER);
    CHECK_CONTAINS(f.msg, "'101'");
    CHECK(srv_samples_parse_n("", &n, &f) == -1);
    CHECK(srv_samples_parse_n("5x", &n, &f) == -1);
    CHECK(srv_samples_parse_seed(NULL, &seed, &given, &f) == 0 && !given);
    CHECK(srv_samples_parse_seed("18446744073709551615", &seed, &given, &f) == 0 && given && seed == UINT64_MAX);
    CHECK(srv_samples_parse_seed("18446744073709551616", &seed, &given, &f) == -1);
    CHECK(srv_samples_parse_seed("-1", &seed, &given, &f) == -1);
    CHECK(srv_samples_parse_seed(" 1", &seed, &given, &f) == -1);
    CHECK(srv_samples_parse_class(NULL, &cls, &f) == 0 && cls == -1);
    CHECK(srv_samples_parse_class("9", &cls, &f) == 0 && cls == 9);
    CHECK(srv_samples_parse_class("ankle BOOT", &cls, &f) == 0 && cls == 9);
    CHECK(srv_samples_parse_class("10", &cls, &f) == -1);
    CHECK(srv_samples_parse_class("09", &cls, &f) == -1);
}

int main(void) {
    RUN(test_err_table);
    RUN(test_config);
    RUN(test_metrics);
    RUN(test_content_types);
    RUN(test_report_names);
    RUN(test_v2_parse);
    RUN(test_samples_params);
    return check_report();
}
