/* test_core.c -- unit tests of core/: base64, the registry, the operations' options, the work queue and the batcher. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "utf8.h"
#include "clock.h"
#include "core_batch.h"
#include "core_err.h"
#include "core_input.h"
#include "core_ops.h"
#include "core_queue.h"
#include "core_reg.h"

static int b64_is(const char *in, const char *want) {
    size_t n = 0;
    int bad = 0;
    unsigned char *out = core_base64_decode(in, strlen(in), &n, &bad);
    int ok = out && n == strlen(want) && !memcmp(out, want, n);
    free(out);
    return ok;
}

static int b64_bad(const char *in) {
    size_t n = 0;
    int bad = 0;
    unsigned char *out = core_base64_decode(in, strlen(in), &n, &bad);
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


static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A 2-input, 2-class MLP folder written by hand into dir (a mkdtemp
 * template), loaded; identity weights, so class 1 wins when x[1] > x[0]. */
static core_model *tiny_model(char *dir) {
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
        float w[6] = {1, 0.5f, -0.25f, 1.5f, 0.125f, 0};
        CHECK(f && fwrite(&n, 8, 1, f) == 1 && fwrite(hdr, 1, n, f) == n && fwrite(w, 4, 6, f) == 6);
        if (f) fclose(f);
    }
    char err[CORE_ERR_LEN];
    core_model *m = core_model_load(dir, "tiny", err, sizeof err);
    CHECK_MSG(m != NULL, "%s", err);
    return m;
}

/* mean and std are checked as the floats they become (found while fuzzing:
 * the V2 route had the same double-versus-float gap). */
static void test_model_norm_float_range(void) {
    char dir[] = "/tmp/loupe-test-norm-XXXXXX";
    core_model *m = tiny_model(dir);
    core_model_release(m);
    static const char *const norms[] = {"\"mean\": [0], \"std\": [1e-50]", "\"mean\": [1e39], \"std\": [1]",
                                        "\"mean\": 0, \"std\": 3.5e38"};
    char file[300], text[512], err[CORE_ERR_LEN];
    snprintf(file, sizeof file, "%s/model.json", dir);
    for (size_t i = 0; i < sizeof norms / sizeof norms[0]; i++) {
        snprintf(text, sizeof text,
                 "{\"kind\": \"mlp\", \"classes\": [\"a\", \"b\"], \"input\": {\"channels\": 1, \"height\": 1, "
                 "\"width\": 2, %s}, \"mlp\": {\"activation\": \"relu\", \"sizes\": [2, 2]}}",
                 norms[i]);
        write_file(file, text);
        m = core_model_load(dir, "tiny", err, sizeof err);
        CHECK_MSG(m == NULL, "%s loaded", norms[i]);
        core_model_release(m);
        if (!m) CHECK_CONTAINS(err, "mean/std");
    }
    unlink(file);
    snprintf(file, sizeof file, "%s/weights.safetensors", dir);
    unlink(file);
    rmdir(dir);
}

static void test_registry_empty_and_broken(void) {
    char dir[] = "/tmp/loupe-test-reg-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char sub[256], file[300];
    snprintf(sub, sizeof sub, "%s/broken", dir);
    mkdir(sub, 0755);
    snprintf(file, sizeof file, "%s/model.json", sub);
    write_file(file, "{\"kind\": \"onnx\"}");

    core_reg *r = core_reg_new(dir, NULL);
    CHECK(r != NULL);
    if (!r) return;
    core_store *s = core_reg_acquire(r);
    CHECK(core_store_count(s) == 0 && core_store_default(s) == NULL);
    core_store_release(s);
    char err[256];
    json_t *report = NULL;
    CHECK(core_reg_reload(r, &report, err, sizeof err) == 0);
    json_t *skipped = json_object_get(report, "skipped");
    CHECK(json_array_size(skipped) == 1);
    const char *why = json_string_value(json_object_get(json_array_get(skipped, 0), "error"));
    CHECK(why && strstr(why, "torchscript"));
    json_decref(report);
    CHECK(core_reg_get(r, "broken") == NULL && core_reg_get(r, NULL) == NULL);
    core_reg_free(r);

    core_reg *missing = core_reg_new("/nonexistent/loupe", "x");
    CHECK(core_reg_reload(missing, NULL, err, sizeof err) == -1);
    CHECK_CONTAINS(err, "/nonexistent/loupe");
    core_reg_free(missing);
    core_reg_free(NULL);

    unlink(file);
    rmdir(sub);
    rmdir(dir);
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
    char *b = core_base64_encode((const unsigned char *)"hello!?", 7);
    CHECK(b && !strcmp(b, "aGVsbG8hPw=="));
    free(b);
    b = core_base64_encode((const unsigned char *)"", 0);
    CHECK(b && !strcmp(b, ""));
    free(b);

    char dir[] = "/tmp/loupe-test-xpl-XXXXXX";
    core_model *m = tiny_model(dir);
    if (!m) return;
    core_opts o;
    core_fail f;
    CHECK(core_opts_parse(m, CORE_OP_PREDICT, NULL, NULL, no_args, NULL, &o, &f) == 0 && o.top_k == 2);
    CHECK(core_opts_parse(m, CORE_OP_FILTERS, "0", "0", no_args, NULL, &o, &f) == -1);
    CHECK(f.kind == CORE_E_UNPROCESSABLE);
    CHECK(core_opts_parse(m, CORE_OP_ACTIVATIONS, "0", NULL, no_args, NULL, &o, &f) == -1 && f.kind == CORE_E_UNPROCESSABLE);
    const char *bad_target[] = {"target", "2", NULL};
    CHECK(core_opts_parse(m, CORE_OP_SALIENCY, NULL, NULL, viz_args, bad_target, &o, &f) == -1);
    CHECK(f.kind == CORE_E_BAD_PARAMETER);
    CHECK_CONTAINS(f.msg, "[0,1]");
    const char *ok[] = {"target", "b", "format", "json", "scale", "3", NULL};
    CHECK(core_opts_parse(m, CORE_OP_SALIENCY, NULL, NULL, viz_args, ok, &o, &f) == 0);
    CHECK(o.target == 1 && o.as_json && o.scale == 3);
    CHECK(!core_op_expensive(m, CORE_OP_SALIENCY));

    core_input in;
    CHECK(core_input_alloc(m, &in) == 0);
    in.pixels[0] = 0.25f;
    in.pixels[1] = 0.75f;
    core_input_normalise(m, &in);
    core_out out;
    CHECK(core_opts_parse(m, CORE_OP_PREDICT, NULL, NULL, no_args, NULL, &o, &f) == 0);
    CHECK(core_op_run(m, CORE_OP_PREDICT, &o, &in, 0, &out, &f) == 0);
    CHECK(!strcmp(out.content_type, "application/json"));
    CHECK_CONTAINS(out.body, "\"class\":\"b\"");
    free(out.body);
    CHECK(core_op_layers(m, &out, &f) == 0);
    CHECK_CONTAINS(out.body, "\"layers\":[]");
    free(out.body);
    core_input_free(&in);
    core_model_release(m);
}


/* ==== The work queue ==== */

/* A job that records how it was run: alone (state), or in which batch. */
typedef struct {
    core_job job;
    int id;
    pthread_mutex_t *gate;  /* held by the test until the job may finish; NULL: none */
    core_job_state state;   /* how fn saw it; -1 before */
    int batch_no, batch_pos, batch_n; /* fn_batch: which call, where in it, of how many */
} rec_job;

typedef struct {
    pthread_mutex_t lock;
    int batches;            /* fn_batch calls so far */
    int done;               /* jobs handed back */
} rec_log;

static rec_log g_log = {PTHREAD_MUTEX_INITIALIZER, 0, 0};

static void rec_fn(core_job *job, core_job_state st) {
    rec_job *j = (rec_job *)job;
    if (j->gate) {
        pthread_mutex_lock(j->gate);
        pthread_mutex_unlock(j->gate);
    }
    pthread_mutex_lock(&g_log.lock);
    j->state = st;
    g_log.done++;
    pthread_mutex_unlock(&g_log.lock);
}

static void rec_batch(core_job **jobs, int n) {
    pthread_mutex_lock(&g_log.lock);
    int no = g_log.batches++;
    for (int i = 0; i < n; i++) {
        rec_job *j = (rec_job *)jobs[i];
        j->state = CORE_JOB_RUN;
        j->batch_no = no;
        j->batch_pos = i;
        j->batch_n = n;
        g_log.done++;
    }
    pthread_mutex_unlock(&g_log.lock);
}

static void rec_reset(rec_job *j, int n) {
    pthread_mutex_lock(&g_log.lock);
    g_log.batches = g_log.done = 0;
    pthread_mutex_unlock(&g_log.lock);
    for (int i = 0; i < n; i++) {
        memset(&j[i], 0, sizeof j[i]);
        j[i].id = i;
        j[i].state = (core_job_state)-1;
        j[i].batch_no = -1;
        j[i].job.fn = rec_fn;
        j[i].job.t_arrival = clock_now();
    }
}

static int rec_done(void) {
    pthread_mutex_lock(&g_log.lock);
    int d = g_log.done;
    pthread_mutex_unlock(&g_log.lock);
    return d;
}

static void wait_done(int n) {
    for (int i = 0; i < 5000 && rec_done() < n; i++) usleep(1000);
    CHECK(rec_done() == n);
}

/* Wait until the lane's one worker is inside the gated job. */
static void wait_running(core_queue *q, int n) {
    int running = 0;
    for (int i = 0; i < 5000; i++) {
        core_queue_load(q, &running, NULL);
        if (running == n) break;
        usleep(1000);
    }
    CHECK(running == n);
}

typedef struct {
    atomic_int depth_calls, full, expired, waits;
} hook_counts;

static void h_depth(void *ctx, const char *lane, int running, int queued) {
    (void)lane, (void)running, (void)queued;
    atomic_fetch_add(&((hook_counts *)ctx)->depth_calls, 1);
}
static void h_wait(void *ctx, const char *lane, double s) {
    (void)lane, (void)s;
    atomic_fetch_add(&((hook_counts *)ctx)->waits, 1);
}
static void h_rejected(void *ctx, const char *lane, int expired) {
    (void)lane;
    atomic_fetch_add(expired ? &((hook_counts *)ctx)->expired : &((hook_counts *)ctx)->full, 1);
}

static void test_queue_capacity(void) {
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    hook_counts hc = {0};
    core_queue_params p = {"t", 1, 2, 1, 0, 0, 0, {&hc, h_depth, h_wait, h_rejected}};
    core_queue *q = core_queue_new(&p);
    CHECK(q != NULL);
    if (!q) return;
    rec_job j[4];
    rec_reset(j, 4);
    pthread_mutex_lock(&gate);
    /* One worker + two queue slots: three places, the fourth is refused. */
    for (int i = 0; i < 3; i++) {
        j[i].gate = &gate;
        CHECK(core_queue_reserve(q) == 0);
        core_queue_push(q, &j[i].job);
    }
    CHECK(core_queue_reserve(q) == -1);
    CHECK(atomic_load(&hc.full) == 1);
    pthread_mutex_unlock(&gate);
    wait_done(3);
    CHECK(core_queue_reserve(q) == 0); /* places come back as jobs end */
    core_queue_push(q, &j[3].job);
    wait_done(4);
    for (int i = 0; i < 4; i++) CHECK(j[i].state == CORE_JOB_RUN);
    CHECK(atomic_load(&hc.waits) == 4 && atomic_load(&hc.depth_calls) > 0);
    int running, queued;
    core_queue_load(q, &running, &queued);
    CHECK(running == 0 && queued == 0);
    core_queue_free(q);
    core_queue_free(NULL);
}

static void *free_thread(void *q) {
    core_queue_free(q);
    return NULL;
}

static void test_queue_cancel_on_free(void) {
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    core_queue_params p = {"t", 1, 4, 1, 0, 0, 0, {0}};
    core_queue *q = core_queue_new(&p);
    rec_job j[3];
    rec_reset(j, 3);
    pthread_mutex_lock(&gate);
    j[0].gate = &gate;
    for (int i = 0; i < 3; i++) {
        CHECK(core_queue_reserve(q) == 0);
        core_queue_push(q, &j[i].job);
    }
    wait_running(q, 1);
    /* Free from another thread: it must wait for the held job, and hand the
     * queued ones back as cancelled. */
    pthread_t t;
    pthread_create(&t, NULL, free_thread, q);
    usleep(20000);
    pthread_mutex_unlock(&gate);
    pthread_join(t, NULL);
    CHECK(j[0].state == CORE_JOB_RUN);
    CHECK(j[1].state == CORE_JOB_CANCELLED && j[2].state == CORE_JOB_CANCELLED);
}

static void *stop_thread(void *q) {
    core_queue_stop(q);
    return NULL;
}

static void test_queue_stop_then_push(void) {
    /* A place reserved before the stop, pushed after it: the workers wait for
     * it and hand it back cancelled; new reservations are refused with -2. */
    core_queue_params p = {"t", 2, 4, 1, 0, 0, 0, {0}};
    core_queue *q = core_queue_new(&p);
    rec_job j[1];
    rec_reset(j, 1);
    CHECK(core_queue_reserve(q) == 0);
    pthread_t t;
    pthread_create(&t, NULL, stop_thread, q);
    for (int i = 0; i < 5000 && !core_queue_stopping(q); i++) usleep(1000);
    CHECK(core_queue_stopping(q));
    CHECK(core_queue_reserve(q) == -2);
    core_queue_push(q, &j[0].job);
    pthread_join(t, NULL);
    CHECK(j[0].state == CORE_JOB_CANCELLED);
    CHECK(core_queue_reserve(q) == -2); /* stopped, still valid until freed */
    core_queue_stop(q);
    core_queue_free(q);
}

/* Fill the queue behind a held worker with jobs of keys keys[i] (0: none),
 * then let it go: returns after every job is back. */
static void run_keyed(core_queue *q, rec_job *j, const int *keys, const int *rows, int n) {
    static int key_a, key_b;
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    rec_job hold[1];
    rec_reset(hold, 1);
    rec_reset(j, n);
    hold[0].gate = &gate;
    pthread_mutex_lock(&gate);
    CHECK(core_queue_reserve(q) == 0);
    core_queue_push(q, &hold[0].job);
    wait_running(q, 1);
    for (int i = 0; i < n; i++) {
        j[i].job.key = keys[i] == 1 ? (void *)&key_a : keys[i] == 2 ? (void *)&key_b : NULL;
        j[i].job.fn_batch = rec_batch;
        j[i].job.rows = rows ? rows[i] : 1;
        CHECK(core_queue_reserve(q) == 0);
        core_queue_push(q, &j[i].job);
    }
    pthread_mutex_unlock(&gate);
    wait_done(n + 1);
}

static void test_queue_batching(void) {
    core_queue_params p = {"t", 1, 64, 4, 0, 0, 0, {0}};
    core_queue *q = core_queue_new(&p);
    rec_job j[9];
    /* Keys A and B interleaved, one unkeyed job among them. */
    const int keys[9] = {1, 2, 1, 0, 1, 2, 1, 1, 1};
    run_keyed(q, j, keys, NULL, 9);
    /* The first A takes the queued As in FIFO order up to 4: jobs 0, 2, 4, 6. */
    CHECK(j[0].batch_no == j[2].batch_no && j[2].batch_no == j[4].batch_no && j[4].batch_no == j[6].batch_no);
    CHECK(j[0].batch_n == 4 && j[0].batch_pos == 0 && j[2].batch_pos == 1 && j[4].batch_pos == 2 &&
          j[6].batch_pos == 3);
    /* Then B with the other B, in order. */
    CHECK(j[1].batch_no == j[5].batch_no && j[1].batch_n == 2 && j[1].batch_pos == 0 && j[5].batch_pos == 1);
    CHECK(j[1].batch_no == j[0].batch_no + 1);
    /* The unkeyed job runs alone through fn. */
    CHECK(j[3].batch_no == -1 && j[3].state == CORE_JOB_RUN);
    /* The As left over (7, 8) form the last batch. */
    CHECK(j[7].batch_no == j[8].batch_no && j[7].batch_n == 2 && j[7].batch_no > j[1].batch_no);
    core_queue_free(q);

    /* Rows count, not jobs: 3 + 2 > 4, so the second job waits for the next batch. */
    q = core_queue_new(&p);
    const int keys2[3] = {1, 1, 1}, rows2[3] = {3, 2, 1};
    run_keyed(q, j, keys2, rows2, 3);
    CHECK(j[0].batch_no == j[2].batch_no && j[0].batch_n == 2 && j[2].batch_pos == 1);
    CHECK(j[1].batch_no != j[0].batch_no && j[1].batch_n == 1);
    core_queue_free(q);

    /* --max-batch 1: every job alone, through fn. */
    core_queue_params p1 = {"t", 1, 64, 1, 0, 0, 0, {0}};
    q = core_queue_new(&p1);
    const int keys3[4] = {1, 1, 1, 1};
    run_keyed(q, j, keys3, NULL, 4);
    for (int i = 0; i < 4; i++) CHECK(j[i].batch_no == -1 && j[i].state == CORE_JOB_RUN);
    core_queue_free(q);
}

static void test_queue_delay(void) {
    /* With a delay, a lone job waits for a second one pushed while it waits. */
    core_queue_params p = {"t", 1, 8, 4, 0.5, 0, 0, {0}};
    core_queue *q = core_queue_new(&p);
    static int key;
    rec_job j[2];
    rec_reset(j, 2);
    for (int i = 0; i < 2; i++) {
        j[i].job.key = &key;
        j[i].job.fn_batch = rec_batch;
    }
    CHECK(core_queue_reserve(q) == 0);
    core_queue_push(q, &j[0].job);
    usleep(50000); /* well inside the 0.5 s window */
    CHECK(rec_done() == 0);
    CHECK(core_queue_reserve(q) == 0);
    core_queue_push(q, &j[1].job);
    wait_done(2);
    CHECK(j[0].batch_no == 0 && j[1].batch_no == 0 && j[0].batch_n == 2);
    core_queue_free(q);
}

static void test_queue_timeout(void) {
    hook_counts hc = {0};
    core_queue_params p = {"t", 1, 8, 4, 0, 0.05, 0, {&hc, NULL, NULL, h_rejected}};
    core_queue *q = core_queue_new(&p);
    static int key;
    rec_job j[3];
    rec_reset(j, 3);
    /* Arrived a second ago: past the 50 ms timeout, keyed or not. */
    for (int i = 0; i < 3; i++) j[i].job.t_arrival = clock_now() - (i < 2 ? 1.0 : 0.0);
    j[1].job.key = &key;
    j[1].job.fn_batch = rec_batch;
    for (int i = 0; i < 3; i++) {
        CHECK(core_queue_reserve(q) == 0);
        core_queue_push(q, &j[i].job);
    }
    wait_done(3);
    CHECK(j[0].state == CORE_JOB_EXPIRED && j[1].state == CORE_JOB_EXPIRED);
    CHECK(j[1].batch_no == -1); /* expired jobs never reach fn_batch */
    CHECK(j[2].state == CORE_JOB_RUN);
    CHECK(atomic_load(&hc.expired) == 2);
    core_queue_free(q);
}

/* ==== The batcher's forward pass ==== */

static void test_batch_forward(void) {
    char dir[] = "/tmp/loupe-test-bat-XXXXXX";
    core_model *m = tiny_model(dir);
    if (!m) return;
    /* Three requests of 1, 2 and 1 rows through one pass, against each row alone. */
    float x[4][2] = {{0.1f, 0.9f}, {0.8f, 0.2f}, {-1.0f, 3.0f}, {0.5f, 0.5f}};
    float z[4][2], alone[4][2];
    core_batch_part parts[3] = {{x[0], 1, z[0]}, {x[1], 2, z[1]}, {x[3], 1, z[3]}};
    double secs = -1;
    core_fail f;
    CHECK(core_batch_forward(m, parts, 3, &secs, &f) == 0);
    CHECK(secs >= 0);
    for (int i = 0; i < 4; i++) {
        core_batch_part one = {x[i], 1, alone[i]};
        CHECK(core_batch_forward(m, &one, 1, &secs, &f) == 0);
        /* The weights by hand: z0 = x0 + 0.5 x1 + 0.125, z1 = -0.25 x0 + 1.5 x1. */
        CHECK_NEAR(alone[i][0], x[i][0] + 0.5 * x[i][1] + 0.125, 1e-6);
        CHECK_NEAR(alone[i][1], -0.25 * x[i][0] + 1.5 * x[i][1], 1e-6);
        for (int k = 0; k < 2; k++) CHECK_NEAR(z[i][k], alone[i][k], 1e-6);
    }
    /* The answer names the batch it rode in. */
    core_opts o;
    core_input in;
    CHECK(core_input_alloc(m, &in) == 0);
    in.pixels[0] = 0.1f;
    in.pixels[1] = 0.9f;
    core_input_normalise(m, &in);
    memset(&o, 0, sizeof o);
    o.top_k = 2;
    core_out out;
    CHECK(core_predict_answer(m, &o, &in, z[0], 0.001, 3, clock_now(), &out, &f) == 0);
    CHECK_CONTAINS(out.body, "\"batch\":3");
    free(out.body);
    core_input_free(&in);
    core_model_release(m);
}

static void test_input_pixels(void) {
    /* A PNG header declaring 1 x 39,999,999, and a JPEG SOF0 of 300 x 200. */
    unsigned char png[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                             0, 0, 0, 1, 0x02, 0x62, 0x59, 0xFF, 8, 0, 0, 0, 0};
    CHECK(core_input_pixels("image/png", 0, png, sizeof png) == 39999999ull);
    CHECK(core_input_pixels(NULL, 1, png, sizeof png) == 39999999ull);
    unsigned char jpg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0, 200, 0x01, 0x2C, 1, 1, 0x11, 0};
    CHECK(core_input_pixels("image/jpeg", 0, jpg, sizeof jpg) == 60000ull);
    CHECK(core_input_pixels("image/png", 0, (const unsigned char *)"GIF89a", 6) == 0);
    /* The PNG's header inside JSON base64, and a data: URL. */
    char *b = core_base64_encode(png, sizeof png), json[512];
    snprintf(json, sizeof json, "{\"image\": \"%s\"}", b);
    CHECK(core_input_pixels("application/json", 0, (unsigned char *)json, strlen(json)) == 39999999ull);
    snprintf(json, sizeof json, "{\"image\":\"data:image/png;base64,%s\"}", b);
    CHECK(core_input_pixels(NULL, 0, (unsigned char *)json, strlen(json)) == 39999999ull);
    free(b);
    /* Hostile or unusual forms of the same: parsed as the worker parses them. */
    b = core_base64_encode(png, sizeof png);
    char esc[128];
    size_t o = 0;
    for (const char *q = b; *q && o + 3 < sizeof esc; q++) {
        if (*q == '/') esc[o++] = '\\'; /* PHP's json_encode writes \/ */
        esc[o++] = *q;
    }
    esc[o] = 0;
    snprintf(json, sizeof json, "{\"image\": \"\\n%s\"}", b); /* a JSON escape before the data */
    CHECK(core_input_pixels("application/json", 0, (unsigned char *)json, strlen(json)) == 39999999ull);
    snprintf(json, sizeof json, "{\"\\u0069mage\": \"%s\"}", b); /* the key spelled with an escape */
    CHECK(core_input_pixels("application/json", 0, (unsigned char *)json, strlen(json)) == 39999999ull);
    snprintf(json, sizeof json, "{\"meta\": {\"image\": \"eA==\"}, \"image\": \"%s\"}", b); /* a decoy first */
    CHECK(core_input_pixels("application/json", 0, (unsigned char *)json, strlen(json)) == 39999999ull);
    snprintf(json, sizeof json, "{\"image\": \"%s\"}", esc);
    CHECK(core_input_pixels("application/json", 0, (unsigned char *)json, strlen(json)) == 39999999ull);
    free(b);
    /* A TEM marker before the frame header (libjpeg accepts it), and headers the probe cannot
     * read: an image it cannot size goes to the heavy lane. */
    unsigned char tem[sizeof jpg + 2] = {0xFF, 0xD8, 0xFF, 0x01};
    memcpy(tem + 4, jpg + 2, sizeof jpg - 2);
    CHECK(core_input_pixels("image/jpeg", 0, tem, sizeof tem) == 60000ull);
    CHECK(core_input_pixels("image/jpeg", 0, jpg, 8) == UINT64_MAX);
    CHECK(core_input_pixels("image/png", 0, png, 20) == UINT64_MAX);
    const char *px = "{\"pixels\": [0, 0.5]}";
    CHECK(core_input_pixels("application/json", 0, (const unsigned char *)px, strlen(px)) == 0);
}

static void test_invert_parser(void) {
    img_invert inv;
    core_fail f;
    const char *yes[] = {"true", "TRUE", "1", "yes"}, *no[] = {"false", "0", "no", "No"};
    for (int i = 0; i < 4; i++) {
        CHECK(core_input_parse_invert(yes[i], &inv, &f) == 0 && inv == IMG_INVERT_TRUE);
        CHECK(core_input_parse_invert(no[i], &inv, &f) == 0 && inv == IMG_INVERT_FALSE);
    }
    CHECK(core_input_parse_invert(NULL, &inv, &f) == 0 && inv == IMG_INVERT_AUTO);
    CHECK(core_input_parse_invert("auto", &inv, &f) == 0 && inv == IMG_INVERT_AUTO);
    CHECK(core_input_parse_invert("maybe", &inv, &f) == -1 && f.kind == CORE_E_BAD_PARAMETER);
    CHECK_CONTAINS(f.msg, "maybe");
}

/* utf8_sanitize keeps valid UTF-8 and turns every byte of an ill-formed
 * sequence into '?', whatever cut it. */
static void test_utf8_sanitize(void) {
    struct { const char *in, *out; size_t replaced; } cases[] = {
        {"plain ascii", "plain ascii", 0},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x91\x9f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x91\x9f", 0},
        {"/\xff", "/?", 1},
        {"\x80" "abc", "?abc", 1},                    /* a stray continuation byte */
        {"ab\xc3", "ab?", 1},                      /* cut at the end, as a full buffer cuts it */
        {"\xe2\x82", "??", 2},                     /* a three-byte sequence cut after two */
        {"\xc0\xaf", "??", 2},                     /* an overlong '/' */
        {"\xed\xa0\x80", "???", 3},                /* a surrogate */
        {"\xf4\x90\x80\x80", "????", 4},           /* past U+10FFFF */
        {"\xc3\xa9\xc3", "\xc3\xa9?", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", cases[i].in);
        size_t n = utf8_sanitize(buf);
        CHECK_MSG(n == cases[i].replaced && !strcmp(buf, cases[i].out), "case %zu: '%s', %zu replaced", i, buf, n);
    }
}

int main(void) {
    RUN(test_base64);
    RUN(test_utf8_sanitize);
    RUN(test_registry_empty_and_broken);
    RUN(test_model_norm_float_range);
    RUN(test_explain_options);
    RUN(test_queue_capacity);
    RUN(test_queue_cancel_on_free);
    RUN(test_queue_stop_then_push);
    RUN(test_queue_batching);
    RUN(test_queue_delay);
    RUN(test_queue_timeout);
    RUN(test_batch_forward);
    RUN(test_input_pixels);
    RUN(test_invert_parser);
    return check_report();
}
