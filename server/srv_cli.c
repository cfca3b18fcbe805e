/* srv_cli.c -- `loupe serve`: configuration, start-up, and the signal loop that reloads and drains. */
#include "clock.h"
#include "srv_cli.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "blas_env.h"
#include "lt.h"
#include "srv_config.h"
#include "srv_http.h"
#include "srv_watch.h"
#include "log.h"

static const char *const *route_labels(void) {
    /* The table's patterns, then the two catch-alls. */
    static const char *labels[64];
    int n = 0;
    for (int i = 0; i < srv_n_routes && n < 62; i++) labels[n++] = srv_routes[i].pattern;
    labels[n++] = "static";
    labels[n++] = "unmatched";
    return labels;
}

static void resolve_root(const char *dir, char *out, const char *what) {
    out[0] = 0;
    if (dir && !realpath(dir, out)) {
        out[0] = 0;
        log_line("%s folder %s: %s (not served)", what, dir, strerror(errno));
    }
}

static struct timespec seconds_ts(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    return ts;
}

static void do_reload(srv_ctx *ctx, const char *why) {
    char err[512];
    log_line("reloading the model store (%s)", why);
    json_t *report = NULL;
    int n = core_reg_reload(ctx->registry, &report, err, sizeof err);
    srv_metrics_reload(ctx->metrics, n >= 0);
    srv_metrics_store_loaded(ctx->metrics, n, report);
    json_decref(report);
    if (n < 0) log_line("reload failed, the old models stay: %s", err);
}

/* --watch's state: the stamp the last reload saw, and whether the store could
 * be listed last time (so a missing store is logged once, not every poll). */
typedef struct {
    uint64_t stamp;
    int have;   /* stamp is valid */
    int failed; /* the last poll could not list the store */
} watch_state;

/* Take the store's stamp into w before a reload; 0, or -1 when it cannot be listed. */
static int watch_take(srv_ctx *ctx, watch_state *w) {
    char err[512];
    uint64_t s;
    if (srv_watch_stamp(ctx->cfg->models_dir, &s, err, sizeof err)) {
        if (!w->failed) log_line("--watch: %s", err);
        w->failed = 1;
        w->have = 0;
        return -1;
    }
    if (w->failed) log_line("--watch: the model store can be listed again");
    w->failed = 0;
    w->stamp = s;
    w->have = 1;
    return 0;
}

/* One poll of --watch: reload, as SIGHUP does, only when the stamp changed.
 * The stamp is taken before the reload, so a change made during it shows at
 * the next poll. */
static void watch_poll(srv_ctx *ctx, watch_state *w) {
    uint64_t before = w->stamp;
    int had = w->have;
    if (watch_take(ctx, w) || (had && before == w->stamp)) return;
    do_reload(ctx, "--watch: the store changed");
}

/* SIGTERM/SIGINT: readiness off at once, serve for the grace period (a second
 * signal cuts it short), stop accepting, wait for in-flight requests. */
static int drain(srv_ctx *ctx, sigset_t *set, int sig) {
    const srv_config *cfg = ctx->cfg;
    atomic_store(&ctx->draining, 1);
    log_line("%s: draining: /readyz answers 503; serving %.1fs more", sig == SIGINT ? "SIGINT" : "SIGTERM",
            cfg->drain_grace);
    double end = clock_now() + cfg->drain_grace;
    for (;;) {
        double left = end - clock_now();
        if (left <= 0) break;
        struct timespec ts = seconds_ts(left);
        int s = sigtimedwait(set, NULL, &ts);
        if (s == SIGTERM || s == SIGINT) {
            log_line("second signal: ending the grace period");
            break;
        }
        if (s == SIGHUP) do_reload(ctx, "SIGHUP");
    }
    srv_http_quiesce(ctx);
    long n = atomic_load(&ctx->in_flight);
    log_line("stopped accepting connections; %ld request(s) in flight", n);
    end = clock_now() + cfg->drain_timeout;
    while ((n = atomic_load(&ctx->in_flight)) > 0 && clock_now() < end) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int rc = 0;
    if (n > 0) {
        log_line("%ld request(s) still in flight after %.1fs; closing them", n, cfg->drain_timeout);
        rc = 1;
    }
    srv_http_stop(ctx);
    log_line("stopped");
    return rc;
}

/* The thread that sigwaits for SIGTERM, SIGINT and SIGHUP (see srv_serve_main). */
static pthread_t signal_thread;

/* Runs only in a thread that does not block the signal (one a library started
 * before main): send it on to the signal thread. tgkill, async-signal-safe. */
static void pass_signal(int sig) { pthread_kill(signal_thread, sig); }

int srv_serve_main(int argc, char **argv) {
    srv_config cfg;
    char err[512];
    int pc = srv_config_parse(&cfg, argc, argv, stdout, err, sizeof err);
    if (pc == 1) return 0;
    if (pc < 0) {
        fprintf(stderr, "loupe serve: %s\n", err);
        return 2;
    }
    log_set_json(!strcmp(cfg.log_format, "json"));

    /* A CNN's activations are tensors of megabytes, made and freed at every
     * pass: above glibc's mmap threshold each is a fresh mapping, zeroed page
     * by page (a batch of 32 of VGG16-w0.25 cost 3x a batch of 16 per image).
     * Keep blocks up to 32 MiB in the heap and reuse them; trim past 128 MiB
     * free. A user's MALLOC_*_ variables win. */
    if (!getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 32 << 20);
    if (!getenv("MALLOC_TRIM_THRESHOLD_")) mallopt(M_TRIM_THRESHOLD, 128 << 20);

    /* Jansson seeds its hash function on first use; do it before any thread exists. */
    json_object_seed(0);

    /* Request threads are the parallelism: one BLAS thread per call, no oversubscription. */
    blas_env_set_threads(1);
    /* The same for libtorch, once, before any model loads (and without loading
     * libtorch for a store of MLPs: the shim applies it when it first loads). */
    if (lt_set_threads((int)cfg.torch_threads, 1, err, sizeof err))
        log_line("libtorch threads: %s", err);

    /* Before any thread of ours exists, so each inherits the mask and only
     * sigwait in this thread sees these signals: no work in signal handlers.
     * Threads that libraries started before main (OpenBLAS's pool) do not
     * block them, and while this thread is not in sigwait (reloading after a
     * SIGHUP) the kernel hands a SIGTERM to one of those, whose default action
     * killed the daemon mid-drain. There, a handler passes it on to this
     * thread, where it waits, blocked, for the next sigwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal_thread = pthread_self();
    struct sigaction pass = {0};
    pass.sa_handler = pass_signal;
    sigfillset(&pass.sa_mask);
    pass.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &pass, NULL);
    sigaction(SIGINT, &pass, NULL);
    sigaction(SIGHUP, &pass, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        fprintf(stderr, "loupe serve: out of memory\n");
        return 1;
    }
    int rc = 1;
    ctx->cfg = &cfg;
    ctx->limits = img_default_limits();
    ctx->limits.max_pixels = cfg.max_pixels;
    resolve_root(cfg.static_dir, ctx->static_root, "static");
    resolve_root(cfg.docs_dir, ctx->docs_root, "docs");
    ctx->metrics = srv_metrics_new(route_labels(), srv_n_routes + 2);
    ctx->registry = core_reg_new(cfg.models_dir, cfg.default_model);
    pthread_mutex_init(&ctx->test_lock, NULL);
    pthread_cond_init(&ctx->test_cond, NULL);
    pthread_mutex_init(&ctx->conns_lock, NULL);
    pthread_condattr_t mono;
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC); /* the reaper's waits ignore wall-clock steps */
    pthread_cond_init(&ctx->conns_cond, &mono);
    pthread_condattr_destroy(&mono);
    if (!ctx->metrics || !ctx->registry) {
        fprintf(stderr, "loupe serve: out of memory\n");
        goto out;
    }
    /* Every model is warm (batch 1 and the batcher's largest) before it is published. */
    core_reg_set_warmup(ctx->registry, (int)cfg.max_batch);
    watch_state watch = {0};
    if (cfg.watch > 0) watch_take(ctx, &watch);
    json_t *report = NULL;
    int n = core_reg_reload(ctx->registry, &report, err, sizeof err);
    if (n < 0) log_line("%s; serving no models until a reload finds some", err);
    else if (n == 0) log_line("no model in %s; /readyz answers 503 until a reload finds one", cfg.models_dir);
    srv_metrics_store_loaded(ctx->metrics, n, report);
    json_decref(report);

    if (srv_http_start(ctx, err, sizeof err)) {
        fprintf(stderr, "loupe serve: %s\n", err);
        goto out;
    }
    log_line("listening on %s://%s:%u (%u connection threads, max body %zu bytes; main lane: %u workers + %u "
             "queued, batches of up to %u, delay %u us; heavy lane: %u workers + %u queued)",
             cfg.tls_cert ? "https" : "http", cfg.host && *cfg.host ? cfg.host : "0.0.0.0", ctx->port, cfg.threads, cfg.max_body, cfg.workers, cfg.queue,
             cfg.max_batch, cfg.batch_delay_us, cfg.expensive_concurrency, cfg.expensive_queue);

    if (cfg.watch > 0) log_line("--watch: polling %s every %gs", cfg.models_dir, cfg.watch);
    for (;;) {
        int sig;
        if (cfg.watch > 0) {
            struct timespec ts = seconds_ts(cfg.watch);
            sig = sigtimedwait(&set, NULL, &ts);
            if (sig < 0) {
                if (errno == EAGAIN) watch_poll(ctx, &watch);
                continue;
            }
        } else if (sigwait(&set, &sig)) continue;
        if (sig == SIGHUP) {
            if (cfg.watch > 0) watch_take(ctx, &watch);
            do_reload(ctx, "SIGHUP");
            continue;
        }
        rc = drain(ctx, &set, sig);
        break;
    }
out:
    srv_http_stop(ctx);
    core_reg_free(ctx->registry);
    srv_metrics_free(ctx->metrics);
    pthread_cond_destroy(&ctx->test_cond);
    pthread_mutex_destroy(&ctx->test_lock);
    pthread_cond_destroy(&ctx->conns_cond);
    pthread_mutex_destroy(&ctx->conns_lock);
    free(ctx);
    return rc;
}
