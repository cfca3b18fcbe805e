/* srv_samples.c -- GET /v1/samples (test images to click) and GET /v1/models/{m}/mistakes (the ones a model gets wrong). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "core_samples.h"
#include "srv_routes.h"

#define SAMPLES_MAX_N 100
#define SAMPLES_DEFAULT_N 12

/* A samples or mistakes request on its lane. */
typedef struct {
    core_job job;    /* first: the queue hands back &job */
    srv_req *r;
    core_model *m;   /* mistakes: retained; samples: NULL */
    int n;           /* images asked for, 1..SAMPLES_MAX_N */
    int cls;         /* samples: the class filter, -1 = any */
    uint64_t seed;
} sample_work;

/* ==== Parameters ==== */

int srv_samples_parse_n(const char *v, int *n, core_fail *f) {
    *n = SAMPLES_DEFAULT_N;
    if (!v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < 1 || x > SAMPLES_MAX_N)
        return core_failf(f, CORE_E_BAD_PARAMETER, "n must be a whole number from 1 to %d (got '%s')", SAMPLES_MAX_N,
                          v);
    *n = (int)x;
    return 0;
}

int srv_samples_parse_seed(const char *v, uint64_t *seed, int *given, core_fail *f) {
    *given = 0;
    *seed = 0;
    if (!v) return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!isdigit((unsigned char)v[0]) || *end || errno)
        return core_failf(f, CORE_E_BAD_PARAMETER,
                          "seed must be a whole number from 0 to 18446744073709551615 (got '%s')", v);
    *seed = (uint64_t)x;
    *given = 1;
    return 0;
}

int srv_samples_parse_class(const char *v, int *cls, core_fail *f) {
    *cls = -1;
    if (!v) return 0;
    for (int c = 0; c < CORE_SAMPLES_CLASSES; c++) {
        char num[12]; /* "%d" of any int: -Wformat-truncation at -O0 */
        snprintf(num, sizeof num, "%d", c);
        if (!strcmp(v, num) || !strcasecmp(v, core_samples_class_names[c])) {
            *cls = c;
            return 0;
        }
    }
    return core_failf(f, CORE_E_BAD_PARAMETER,
                      "class must be an index from 0 to 9 or one of the names T-shirt/top, Trouser, Pullover, Dress, "
                      "Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot (got '%s')", v);
}

/* ?n=, ?seed= and ?class= of r (srv_routes.h: srv_samples_parse_*); a seed
 * that is not given is a fresh one (the answer says which). Returns 0, or
 * -1 after answering 400. */
static int parse_n(srv_req *r, int *n) {
    core_fail f;
    if (!srv_samples_parse_n(srv_req_query(r, "n"), n, &f)) return 0;
    srv_reply_error(r, f.kind, "%s", f.msg);
    return -1;
}

static int parse_seed(srv_req *r, uint64_t *seed) {
    core_fail f;
    int given;
    if (srv_samples_parse_seed(srv_req_query(r, "seed"), seed, &given, &f)) {
        srv_reply_error(r, f.kind, "%s", f.msg);
        return -1;
    }
    if (!given) {
        *seed = (uint64_t)(clock_now() * 1e9) ^ ((uint64_t)(uintptr_t)r << 16);
        *seed &= (1ull << 53) - 1; /* exact in a JavaScript number, so the page can repeat it */
    }
    return 0;
}

static int parse_class(srv_req *r, int *cls) {
    core_fail f;
    if (!srv_samples_parse_class(srv_req_query(r, "class"), cls, &f)) return 0;
    srv_reply_error(r, f.kind, "%s", f.msg);
    return -1;
}

/* ==== Answers ==== */

/* {"index", "label", "class", "image": base64 PNG} of test image i; NULL when out of memory. */
static json_t *sample_entry(const core_sample_set *set, int i) {
    uint8_t *png = NULL;
    size_t len = 0;
    if (img_encode_png(set->images + (size_t)i * set->rows * set->cols, set->cols, set->rows, 1, &png, &len))
        return NULL;
    char *b64 = core_base64_encode(png, len);
    free(png);
    if (!b64) return NULL;
    int label = set->labels[i];
    json_t *e = json_pack("{s:i, s:i, s:s, s:s}", "index", i, "label", label, "class", core_samples_class_names[label],
                          "image", b64);
    free(b64);
    return e;
}

static void answer_samples(sample_work *w, const core_sample_set *set) {
    srv_req *r = w->r;
    int *idx = malloc((size_t)w->n * sizeof *idx);
    int k = idx ? core_samples_pick(set, w->n, w->seed, w->cls, idx) : -1;
    json_t *list = json_array();
    int bad = k < 0 || !list;
    for (int i = 0; !bad && i < k; i++) bad = json_array_append_new(list, sample_entry(set, idx[i]));
    free(idx);
    if (bad) {
        json_decref(list);
        srv_reply_error(r, CORE_E_NOMEM, "out of memory for %d sample images", w->n);
        return;
    }
    json_t *cls = w->cls < 0 ? json_null()
                             : json_pack("{s:i, s:s}", "index", w->cls, "name", core_samples_class_names[w->cls]);
    /* The seed as a number: Jansson's json_int_t is 64-bit signed, so a seed past 2^63 goes as a string. */
    json_t *seed = w->seed > (uint64_t)INT64_MAX ? NULL : json_integer((json_int_t)w->seed);
    if (!seed) {
        char s[24];
        snprintf(s, sizeof s, "%llu", (unsigned long long)w->seed);
        seed = json_string(s);
    }
    srv_reply_json(r, 200, json_pack("{s:o, s:o, s:i, s:i, s:i, s:o}", "seed", seed, "class", cls, "width", set->cols,
                                     "height", set->rows, "count", k, "samples", list));
}

static void answer_mistakes(srv_req *r, const core_model *m, const core_mistakes *mk, const core_sample_set *set,
                            int n, int cached) {
    json_t *list = json_array();
    int k = n < mk->count ? n : mk->count, bad = !list;
    for (int i = 0; !bad && i < k; i++) {
        json_t *e = sample_entry(set, mk->index[i]);
        bad = !e || json_object_set_new(e, "predicted", json_integer(mk->predicted[i])) ||
              json_object_set_new(e, "predicted_class", json_string(m->classes[mk->predicted[i]])) ||
              json_object_set_new(e, "probability", json_real(mk->prob[i])) ||
              json_object_set_new(e, "true_probability", json_real(mk->prob_true[i]));
        bad = bad || json_array_append_new(list, e);
    }
    if (bad) {
        json_decref(list);
        srv_reply_error(r, CORE_E_NOMEM, "out of memory for %d mistakes", n);
        return;
    }
    srv_reply_json(r, 200,
                   json_pack("{s:s, s:i, s:i, s:f, s:b, s:f, s:i, s:o}", "model", m->name, "total", mk->total, "wrong",
                             mk->count, "accuracy", mk->total ? (double)(mk->total - mk->count) / mk->total : 0.0,
                             "cached", cached, "compute_seconds", mk->seconds, "count", k, "mistakes", list));
}

/* ==== On a lane ==== */

static void sample_job(core_job *job, core_job_state st) {
    sample_work *w = (sample_work *)job;
    srv_req *r = w->r;
    core_fail f;
    const core_sample_set *set;
    if (st != CORE_JOB_RUN) {
        srv_reply_error(r, CORE_E_UNAVAILABLE, "%s",
                        st == CORE_JOB_CANCELLED ? "the server is shutting down"
                                                 : "the request waited in the queue longer than --queue-timeout");
        r->resp.retry_after = 1;
    } else if (srv_req_gone(r)) {
        srv_metrics_cancelled(r->ctx->metrics);
        srv_reply_error(r, CORE_E_CANCELLED, "the client closed the connection while the request was queued");
    } else if (core_samples_get(r->ctx->samples, &set, &f)) {
        srv_reply_error(r, f.kind, "%s", f.msg);
    } else if (!w->m) {
        answer_samples(w, set);
    } else {
        const core_mistakes *mk;
        if (core_mistakes_get(w->m, set, &mk, &f)) srv_reply_error(r, f.kind, "%s", f.msg);
        else answer_mistakes(r, w->m, mk, set, w->n, 0);
    }
    core_model_release(w->m);
    free(w);
    srv_req_resume(r);
}

/* Queue w on lane; on refusal answer 429/503 and free it. */
static void submit(srv_req *r, sample_work *w, core_queue *lane) {
    w->job.fn = sample_job;
    w->job.rows = 1;
    int rc = srv_req_defer(r, lane, &w->job);
    if (rc) {
        srv_reply_busy(r, lane, rc);
        core_model_release(w->m);
        free(w);
    }
}

/* ==== Handlers (connection threads) ==== */

void srv_h_samples(srv_req *r) {
    int n, cls;
    uint64_t seed;
    if (parse_n(r, &n) || parse_seed(r, &seed) || parse_class(r, &cls)) return;
    sample_work *w = calloc(1, sizeof *w);
    if (!w) {
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    *w = (sample_work){.r = r, .n = n, .cls = cls, .seed = seed};
    /* Reading the test set (once) and encoding PNGs is work: not on a connection thread. */
    submit(r, w, r->ctx->lane_main);
}

void srv_h_mistakes(srv_req *r) {
    int n;
    core_model *m = srv_route_model(r);
    if (!m) return;
    if (parse_n(r, &n)) {
        core_model_release(m);
        return;
    }
    const core_mistakes *mk = core_mistakes_cached(m);
    const core_sample_set *set;
    core_fail f;
    /* Known already (the set is loaded when a result exists): answered here, no lane. */
    if (mk && !core_samples_get(r->ctx->samples, &set, &f)) {
        answer_mistakes(r, m, mk, set, n, 1);
        core_model_release(m);
        return;
    }
    sample_work *w = calloc(1, sizeof *w);
    if (!w) {
        core_model_release(m);
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    *w = (sample_work){.r = r, .m = m, .n = n, .cls = -1};
    /* A forward pass over the whole test set: the heavy lane, with its limit and 429. */
    submit(r, w, r->ctx->lane_heavy);
}
