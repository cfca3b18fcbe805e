/* srv_metrics.c -- Prometheus metrics from relaxed atomics: no lock on the request path. */
#include "srv_metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

/* Statuses counted one by one; everything else falls in "other". */
static const unsigned status_list[] = {200, 204, 400, 401, 404, 405, 413, 415, 422, 429, 499, 500, 503};
#define N_STATUS (sizeof status_list / sizeof status_list[0] + 1)

/* Upper bounds in seconds of the histogram buckets (+Inf is implicit). */
static const double req_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                     0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double inf_buckets[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                     0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
/* Queue wait: from microseconds (an idle worker) to the queue timeout's seconds. */
static const double wait_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
/* Batch sizes: powers of two up to the largest --max-batch worth having. */
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
#define N_REQ_B (sizeof req_buckets / sizeof req_buckets[0])
#define N_WAIT_B (sizeof wait_buckets / sizeof wait_buckets[0])
#define N_BATCH_B (sizeof batch_buckets / sizeof batch_buckets[0])
#define N_INF_B (sizeof inf_buckets / sizeof inf_buckets[0])

#define MAX_MODELS 256
#define MODEL_NAME_LEN 128

typedef struct {
    atomic_uint_fast64_t bucket[N_REQ_B + 1]; /* non-cumulative; last is +Inf */
    atomic_uint_fast64_t sum_ns;
    atomic_uint_fast64_t count;
} req_hist;

typedef struct {
    char name[MODEL_NAME_LEN];
    atomic_uint_fast64_t bucket[N_INF_B + 1];
    atomic_uint_fast64_t sum_ns;
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t batch_bucket[N_BATCH_B + 1]; /* forward passes by images in them */
    atomic_uint_fast64_t batch_sum, batch_count;
} model_hist;

/* One work queue (lane) of the daemon. */
struct srv_lane_stats {
    const char *name;                          /* static: "main", "heavy" */
    atomic_int running, queued;
    atomic_uint_fast64_t wait_bucket[N_WAIT_B + 1];
    atomic_uint_fast64_t wait_sum_ns, wait_count;
    atomic_uint_fast64_t rejected_full, rejected_expired;
};

#define MAX_LANES 4

/* Load failures of one model folder, over every load of the store. */
typedef struct {
    char name[MODEL_NAME_LEN];
    uint64_t count;
} load_fail;

struct srv_metrics {
    const char *const *labels;
    int n_routes;
    atomic_uint_fast64_t *requests;   /* [n_routes, N_STATUS] */
    req_hist *durations;              /* [n_routes] */
    model_hist models[MAX_MODELS];
    atomic_int n_models;              /* published count of models[] */
    pthread_mutex_t models_lock;      /* serialises adding a model; guards fails[] */
    atomic_long in_flight;
    atomic_int models_loaded;
    atomic_uint_fast64_t reloads_ok, reloads_failed;
    atomic_int reload_failed_folders; /* folders that failed in the last load of the store */
    atomic_int reload_last_ok;        /* 1: the last load read the store and loaded every folder */
    load_fail fails[MAX_MODELS];      /* folders that ever failed to load, by name */
    int n_fails;                      /* guarded by models_lock, as fails[] */
    srv_lane_stats lanes[MAX_LANES];
    atomic_int n_lanes;               /* added at start-up, before any thread reads them */
    atomic_uint_fast64_t cancelled;   /* clients gone before their model work */
    atomic_uint_fast64_t refused[SRV_REFUSED_N];
    atomic_llong body_bytes;          /* request bodies buffered now */
    double start_time;                /* seconds since the epoch */
};

srv_metrics *srv_metrics_new(const char *const *labels, int n_routes) {
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->labels = labels;
    m->n_routes = n_routes;
    m->requests = calloc((size_t)n_routes * N_STATUS, sizeof *m->requests);
    m->durations = calloc((size_t)n_routes, sizeof *m->durations);
    if (!m->requests || !m->durations || pthread_mutex_init(&m->models_lock, NULL)) {
        free(m->requests);
        free(m->durations);
        free(m);
        return NULL;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    return m;
}

void srv_metrics_free(srv_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->models_lock);
    free(m->requests);
    free(m->durations);
    free(m);
}

static int status_slot(unsigned status) {
    for (size_t i = 0; i < N_STATUS - 1; i++)
        if (status_list[i] == status) return (int)i;
    return N_STATUS - 1;
}

static uint64_t to_ns(double s) {
    return s <= 0 ? 0 : (uint64_t)(s * 1e9);
}

void srv_metrics_request(srv_metrics *m, int route, unsigned status, double seconds) {
    if (!m || route < 0 || route >= m->n_routes) return;
    atomic_fetch_add_explicit(&m->requests[(size_t)route * N_STATUS + status_slot(status)], 1,
                              memory_order_relaxed);
    req_hist *h = &m->durations[route];
    size_t b = 0;
    while (b < N_REQ_B && seconds > req_buckets[b]) b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, to_ns(seconds), memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void srv_metrics_in_flight(srv_metrics *m, int delta) {
    if (m) atomic_fetch_add_explicit(&m->in_flight, delta, memory_order_relaxed);
}

/* The histogram of model `name`, added on first use; NULL when the table is full. */
static model_hist *model_slot(srv_metrics *m, const char *name) {
    int n = atomic_load_explicit(&m->n_models, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (!strcmp(m->models[i].name, name)) return &m->models[i];
    model_hist *h = NULL;
    pthread_mutex_lock(&m->models_lock);
    n = atomic_load_explicit(&m->n_models, memory_order_relaxed);
    for (int i = 0; i < n && !h; i++)
        if (!strcmp(m->models[i].name, name)) h = &m->models[i];
    if (!h && n < MAX_MODELS && strlen(name) < MODEL_NAME_LEN) {
        h = &m->models[n];
        strcpy(h->name, name);
        /* Publish the name before the count that makes it visible. */
        atomic_store_explicit(&m->n_models, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&m->models_lock);
    return h;
}

void srv_metrics_inference(srv_metrics *m, const char *model, double seconds) {
    if (!m || !model) return;
    model_hist *h = model_slot(m, model);
    if (!h) return;
    size_t b = 0;
    while (b < N_INF_B && seconds > inf_buckets[b]) b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, to_ns(seconds), memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void srv_metrics_set_models_loaded(srv_metrics *m, int n) {
    if (m) atomic_store_explicit(&m->models_loaded, n, memory_order_relaxed);
}

void srv_metrics_reload(srv_metrics *m, int ok) {
    if (m) atomic_fetch_add_explicit(ok ? &m->reloads_ok : &m->reloads_failed, 1, memory_order_relaxed);
}

/* One failed load of the folder `model`; names past the table's capacity are not recorded. */
static void load_failure(srv_metrics *m, const char *model) {
    if (!model || strlen(model) >= MODEL_NAME_LEN) return;
    /* Loads of the store are rare: a lock, not the request path's atomics. */
    pthread_mutex_lock(&m->models_lock);
    int i = 0;
    while (i < m->n_fails && strcmp(m->fails[i].name, model)) i++;
    if (i == m->n_fails && i < MAX_MODELS) strcpy(m->fails[m->n_fails++].name, model);
    if (i < m->n_fails) m->fails[i].count++;
    pthread_mutex_unlock(&m->models_lock);
}

void srv_metrics_store_loaded(srv_metrics *m, int n_models, const json_t *report) {
    if (!m) return;
    const json_t *skipped = json_object_get(report, "skipped");
    size_t i;
    const json_t *e;
    json_array_foreach(skipped, i, e) load_failure(m, json_string_value(json_object_get(e, "name")));
    if (n_models >= 0) atomic_store_explicit(&m->models_loaded, n_models, memory_order_relaxed);
    atomic_store_explicit(&m->reload_failed_folders, (int)json_array_size(skipped), memory_order_relaxed);
    atomic_store_explicit(&m->reload_last_ok, n_models >= 0 && json_array_size(skipped) == 0, memory_order_relaxed);
}

void srv_metrics_batch(srv_metrics *m, const char *model, int images) {
    if (!m || !model) return;
    model_hist *h = model_slot(m, model);
    if (!h) return;
    size_t b = 0;
    while (b < N_BATCH_B && images > batch_buckets[b]) b++;
    atomic_fetch_add_explicit(&h->batch_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->batch_sum, (uint64_t)images, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->batch_count, 1, memory_order_relaxed);
}

srv_lane_stats *srv_metrics_lane(srv_metrics *m, const char *name) {
    int n = m ? atomic_load_explicit(&m->n_lanes, memory_order_relaxed) : MAX_LANES;
    if (n >= MAX_LANES) return NULL;
    srv_lane_stats *l = &m->lanes[n];
    l->name = name;
    atomic_store_explicit(&m->n_lanes, n + 1, memory_order_release);
    return l;
}

void srv_metrics_lane_depth(void *ctx, const char *lane, int running, int queued) {
    srv_lane_stats *l = ctx;
    (void)lane;
    if (!l) return;
    atomic_store_explicit(&l->running, running, memory_order_relaxed);
    atomic_store_explicit(&l->queued, queued, memory_order_relaxed);
}

void srv_metrics_lane_wait(void *ctx, const char *lane, double seconds) {
    srv_lane_stats *l = ctx;
    (void)lane;
    if (!l) return;
    size_t b = 0;
    while (b < N_WAIT_B && seconds > wait_buckets[b]) b++;
    atomic_fetch_add_explicit(&l->wait_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->wait_sum_ns, to_ns(seconds), memory_order_relaxed);
    atomic_fetch_add_explicit(&l->wait_count, 1, memory_order_relaxed);
}

void srv_metrics_lane_rejected(void *ctx, const char *lane, int expired) {
    srv_lane_stats *l = ctx;
    (void)lane;
    if (l) atomic_fetch_add_explicit(expired ? &l->rejected_expired : &l->rejected_full, 1, memory_order_relaxed);
}

void srv_metrics_cancelled(srv_metrics *m) {
    if (m) atomic_fetch_add_explicit(&m->cancelled, 1, memory_order_relaxed);
}

void srv_metrics_refused(srv_metrics *m, srv_refused_reason reason) {
    if (m && reason < SRV_REFUSED_N) atomic_fetch_add_explicit(&m->refused[reason], 1, memory_order_relaxed);
}

void srv_metrics_body_bytes(srv_metrics *m, long long delta) {
    if (m) atomic_fetch_add_explicit(&m->body_bytes, delta, memory_order_relaxed);
}

/* ==== Rendering ==== */

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *s, const char *fmt, ...) {
    if (s->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            s->failed = 1;
            return;
        }
        if ((size_t)n < s->cap - s->len) {
            s->len += (size_t)n;
            return;
        }
        size_t cap = s->cap * 2 + (size_t)n + 1;
        char *nb = realloc(s->buf, cap);
        if (!nb) {
            s->failed = 1;
            return;
        }
        s->buf = nb;
        s->cap = cap;
    }
}

/* Label values are route patterns and model folder names: escape \ " and newline anyway. */
static void sb_label(sbuf *s, const char *v) {
    for (; *v; v++) {
        if (*v == '\\') sb_printf(s, "\\\\");
        else if (*v == '"') sb_printf(s, "\\\"");
        else if (*v == '\n') sb_printf(s, "\\n");
        else sb_printf(s, "%c", *v);
    }
}

static uint64_t ld(atomic_uint_fast64_t *a) {
    return atomic_load_explicit(a, memory_order_relaxed);
}

/* The standard process metrics (as Prometheus's client libraries export them),
 * from /proc/self: resident and virtual memory, CPU time, open and allowed
 * descriptors. A value /proc cannot give is left out, never made up. */
static void process_metrics(sbuf *s) {
    long page = sysconf(_SC_PAGESIZE), ticks = sysconf(_SC_CLK_TCK);
    unsigned long long vm_pages, rss_pages;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vm_pages, &rss_pages) == 2 && page > 0)
            sb_printf(s, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                         "# TYPE process_resident_memory_bytes gauge\n"
                         "process_resident_memory_bytes %llu\n"
                         "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                         "# TYPE process_virtual_memory_bytes gauge\n"
                         "process_virtual_memory_bytes %llu\n",
                      rss_pages * (unsigned long long)page, vm_pages * (unsigned long long)page);
        fclose(f);
    }
    /* /proc/self/stat: utime and stime are fields 14 and 15, after the
     * command name in parentheses (which may itself hold spaces and ')'). */
    char buf[1024];
    f = fopen("/proc/self/stat", "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        char *p = strrchr(buf, ')');
        unsigned long long ut, st;
        if (p && ticks > 0 &&
            sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            sb_printf(s, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                         "# TYPE process_cpu_seconds_total counter\n"
                         "process_cpu_seconds_total %.2f\n",
                      (double)(ut + st) / (double)ticks);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = 0;
        for (struct dirent *e; (e = readdir(d));) fds += e->d_name[0] != '.';
        closedir(d);
        sb_printf(s, "# HELP process_open_fds Number of open file descriptors.\n"
                     "# TYPE process_open_fds gauge\n"
                     "process_open_fds %ld\n",
                  fds - 1); /* the one opendir holds */
    }
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY)
        sb_printf(s, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                     "# TYPE process_max_fds gauge\n"
                     "process_max_fds %llu\n",
                  (unsigned long long)rl.rlim_cur);
}

char *srv_metrics_render(srv_metrics *m, size_t *len) {
    sbuf s = {malloc(16384), 0, 16384, 0};
    if (!s.buf) return NULL;

    sb_printf(&s, "# HELP loupe_http_requests_total HTTP requests by route and status.\n"
                  "# TYPE loupe_http_requests_total counter\n");
    for (int r = 0; r < m->n_routes; r++)
        for (size_t k = 0; k < N_STATUS; k++) {
            uint64_t v = ld(&m->requests[(size_t)r * N_STATUS + k]);
            if (!v) continue;
            sb_printf(&s, "loupe_http_requests_total{route=\"");
            sb_label(&s, m->labels[r]);
            if (k < N_STATUS - 1) sb_printf(&s, "\",status=\"%u\"} %llu\n", status_list[k], (unsigned long long)v);
            else sb_printf(&s, "\",status=\"other\"} %llu\n", (unsigned long long)v);
        }

    sb_printf(&s, "# HELP loupe_http_request_duration_seconds Time from request headers to response sent.\n"
                  "# TYPE loupe_http_request_duration_seconds histogram\n");
    for (int r = 0; r < m->n_routes; r++) {
        req_hist *h = &m->durations[r];
        uint64_t count = ld(&h->count);
        if (!count) continue;
        uint64_t cum = 0;
        for (size_t b = 0; b <= N_REQ_B; b++) {
            cum += ld(&h->bucket[b]);
            sb_printf(&s, "loupe_http_request_duration_seconds_bucket{route=\"");
            sb_label(&s, m->labels[r]);
            if (b < N_REQ_B) sb_printf(&s, "\",le=\"%g\"} %llu\n", req_buckets[b], (unsigned long long)cum);
            else sb_printf(&s, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        sb_printf(&s, "loupe_http_request_duration_seconds_sum{route=\"");
        sb_label(&s, m->labels[r]);
        sb_printf(&s, "\"} %.9f\n", ld(&h->sum_ns) / 1e9);
        sb_printf(&s, "loupe_http_request_duration_seconds_count{route=\"");
        sb_label(&s, m->labels[r]);
        /* The buckets were read one by one; +Inf is the count Prometheus checks against. */
        sb_printf(&s, "\"} %llu\n", (unsigned long long)cum);
    }

    sb_printf(&s, "# HELP loupe_inference_duration_seconds Forward or gradient pass time by model.\n"
                  "# TYPE loupe_inference_duration_seconds histogram\n");
    int nm = atomic_load_explicit(&m->n_models, memory_order_acquire);
    for (int i = 0; i < nm; i++) {
        model_hist *h = &m->models[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= N_INF_B; b++) {
            cum += ld(&h->bucket[b]);
            sb_printf(&s, "loupe_inference_duration_seconds_bucket{model=\"");
            sb_label(&s, h->name);
            if (b < N_INF_B) sb_printf(&s, "\",le=\"%g\"} %llu\n", inf_buckets[b], (unsigned long long)cum);
            else sb_printf(&s, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        sb_printf(&s, "loupe_inference_duration_seconds_sum{model=\"");
        sb_label(&s, h->name);
        sb_printf(&s, "\"} %.9f\n", ld(&h->sum_ns) / 1e9);
        sb_printf(&s, "loupe_inference_duration_seconds_count{model=\"");
        sb_label(&s, h->name);
        sb_printf(&s, "\"} %llu\n", (unsigned long long)cum);
    }

    sb_printf(&s, "# HELP loupe_http_requests_in_flight Requests being handled now.\n"
                  "# TYPE loupe_http_requests_in_flight gauge\n"
                  "loupe_http_requests_in_flight %ld\n",
              (long)atomic_load_explicit(&m->in_flight, memory_order_relaxed));
    sb_printf(&s, "# HELP loupe_models_loaded Models in the registry.\n"
                  "# TYPE loupe_models_loaded gauge\n"
                  "loupe_models_loaded %d\n",
              atomic_load_explicit(&m->models_loaded, memory_order_relaxed));
    sb_printf(&s, "# HELP loupe_reloads_total Reloads of the model store by result.\n"
                  "# TYPE loupe_reloads_total counter\n"
                  "loupe_reloads_total{result=\"ok\"} %llu\n"
                  "loupe_reloads_total{result=\"error\"} %llu\n",
              (unsigned long long)ld(&m->reloads_ok), (unsigned long long)ld(&m->reloads_failed));
    sb_printf(&s, "# HELP loupe_reload_last_success 1 when the last load of the store read it and loaded every "
                  "folder, else 0.\n"
                  "# TYPE loupe_reload_last_success gauge\n"
                  "loupe_reload_last_success %d\n"
                  "# HELP loupe_reload_failed_models Model folders that failed to load in the last load of the "
                  "store (each keeps its previous version, if it had one).\n"
                  "# TYPE loupe_reload_failed_models gauge\n"
                  "loupe_reload_failed_models %d\n",
              atomic_load_explicit(&m->reload_last_ok, memory_order_relaxed),
              atomic_load_explicit(&m->reload_failed_folders, memory_order_relaxed));
    sb_printf(&s, "# HELP loupe_reload_failures_total Failed loads of a model folder, at start-up and on reloads.\n"
                  "# TYPE loupe_reload_failures_total counter\n");
    pthread_mutex_lock(&m->models_lock);
    for (int i = 0; i < m->n_fails; i++) {
        sb_printf(&s, "loupe_reload_failures_total{model=\"");
        sb_label(&s, m->fails[i].name);
        sb_printf(&s, "\"} %llu\n", (unsigned long long)m->fails[i].count);
    }
    pthread_mutex_unlock(&m->models_lock);
    int nl = atomic_load_explicit(&m->n_lanes, memory_order_acquire);
    sb_printf(&s, "# HELP loupe_queue_running Requests a worker of the lane is on now.\n"
                  "# TYPE loupe_queue_running gauge\n");
    for (int i = 0; i < nl; i++)
        sb_printf(&s, "loupe_queue_running{lane=\"%s\"} %d\n", m->lanes[i].name,
                  atomic_load_explicit(&m->lanes[i].running, memory_order_relaxed));
    sb_printf(&s, "# HELP loupe_queue_queued Requests waiting in the lane's queue.\n"
                  "# TYPE loupe_queue_queued gauge\n");
    for (int i = 0; i < nl; i++)
        sb_printf(&s, "loupe_queue_queued{lane=\"%s\"} %d\n", m->lanes[i].name,
                  atomic_load_explicit(&m->lanes[i].queued, memory_order_relaxed));
    sb_printf(&s, "# HELP loupe_queue_rejected_total Requests refused by a lane: full (429) or queued past "
                  "--queue-timeout (503).\n"
                  "# TYPE loupe_queue_rejected_total counter\n");
    for (int i = 0; i < nl; i++)
        sb_printf(&s,
                  "loupe_queue_rejected_total{lane=\"%s\",reason=\"full\"} %llu\n"
                  "loupe_queue_rejected_total{lane=\"%s\",reason=\"timeout\"} %llu\n",
                  m->lanes[i].name, (unsigned long long)ld(&m->lanes[i].rejected_full), m->lanes[i].name,
                  (unsigned long long)ld(&m->lanes[i].rejected_expired));
    sb_printf(&s, "# HELP loupe_queue_wait_seconds Time from entering a lane's queue to a worker taking it.\n"
                  "# TYPE loupe_queue_wait_seconds histogram\n");
    for (int i = 0; i < nl; i++) {
        srv_lane_stats *l = &m->lanes[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= N_WAIT_B; b++) {
            cum += ld(&l->wait_bucket[b]);
            if (b < N_WAIT_B)
                sb_printf(&s, "loupe_queue_wait_seconds_bucket{lane=\"%s\",le=\"%g\"} %llu\n", l->name,
                          wait_buckets[b], (unsigned long long)cum);
            else
                sb_printf(&s, "loupe_queue_wait_seconds_bucket{lane=\"%s\",le=\"+Inf\"} %llu\n", l->name,
                          (unsigned long long)cum);
        }
        sb_printf(&s, "loupe_queue_wait_seconds_sum{lane=\"%s\"} %.9f\n", l->name, ld(&l->wait_sum_ns) / 1e9);
        sb_printf(&s, "loupe_queue_wait_seconds_count{lane=\"%s\"} %llu\n", l->name, (unsigned long long)cum);
    }
    sb_printf(&s, "# HELP loupe_batch_size Images per forward pass of the dynamic batcher, by model.\n"
                  "# TYPE loupe_batch_size histogram\n");
    for (int i = 0; i < nm; i++) {
        model_hist *h = &m->models[i];
        uint64_t cum = 0;
        if (!ld(&h->batch_count)) continue;
        for (size_t b = 0; b <= N_BATCH_B; b++) {
            cum += ld(&h->batch_bucket[b]);
            sb_printf(&s, "loupe_batch_size_bucket{model=\"");
            sb_label(&s, h->name);
            if (b < N_BATCH_B) sb_printf(&s, "\",le=\"%g\"} %llu\n", batch_buckets[b], (unsigned long long)cum);
            else sb_printf(&s, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        sb_printf(&s, "loupe_batch_size_sum{model=\"");
        sb_label(&s, h->name);
        sb_printf(&s, "\"} %llu\n", (unsigned long long)ld(&h->batch_sum));
        sb_printf(&s, "loupe_batch_size_count{model=\"");
        sb_label(&s, h->name);
        sb_printf(&s, "\"} %llu\n", (unsigned long long)cum);
    }
    sb_printf(&s, "# HELP loupe_requests_cancelled_total Requests whose client left while they were queued, "
                  "skipped before their model work.\n"
                  "# TYPE loupe_requests_cancelled_total counter\n"
                  "loupe_requests_cancelled_total %llu\n",
              (unsigned long long)ld(&m->cancelled));
    static const char *const refused_names[SRV_REFUSED_N] = {"request_timeout", "per_ip", "body_budget"};
    sb_printf(&s, "# HELP loupe_refused_total Connections cut or requests refused by the HTTP layer's limits "
                  "(--request-timeout, --max-conn-per-ip, --body-budget).\n"
                  "# TYPE loupe_refused_total counter\n");
    for (int i = 0; i < SRV_REFUSED_N; i++)
        sb_printf(&s, "loupe_refused_total{reason=\"%s\"} %llu\n", refused_names[i],
                  (unsigned long long)ld(&m->refused[i]));
    sb_printf(&s, "# HELP loupe_buffered_body_bytes Request bodies held in memory now, all connections together.\n"
                  "# TYPE loupe_buffered_body_bytes gauge\n"
                  "loupe_buffered_body_bytes %lld\n",
              (long long)atomic_load_explicit(&m->body_bytes, memory_order_relaxed));
    sb_printf(&s, "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n"
                  "# TYPE process_start_time_seconds gauge\n"
                  "process_start_time_seconds %.3f\n",
              m->start_time);
    process_metrics(&s);
    if (s.failed) {
        free(s.buf);
        return NULL;
    }
    if (len) *len = s.len;
    return s.buf;
}
