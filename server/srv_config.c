/* srv_config.c -- flags and environment variables of `loupe serve`, from one table. */
#include "srv_config.h"
#include "paths.h"
#include "errbuf.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The source tree's copies, used when the binary does not run from an install prefix. */
#ifndef LOUPE_STATIC_DIR
#define LOUPE_STATIC_DIR "static"
#endif
#define LOUPE_SAMPLES_DIR "/usr/share/datasets/fashion-mnist" /* the Debian package's */
#ifndef LOUPE_DOCS_DIR
#define LOUPE_DOCS_DIR "docs"
#endif

typedef enum { OPT_STR, OPT_UINT, OPT_SIZE, OPT_U64, OPT_SECONDS, OPT_BOOL } opt_type;

typedef struct {
    const char *flag;     /* without the leading "--" */
    const char *env;
    opt_type type;
    size_t offset;        /* into srv_config */
    const char *metavar;
    const char *help;
} opt_spec;

#define OFF(f) offsetof(srv_config, f)

static const opt_spec opts[] = {
    {"host", "LOUPE_HOST", OPT_STR, OFF(host), "ADDR", "address to listen on (default all interfaces)"},
    {"port", "LOUPE_PORT", OPT_UINT, OFF(port), "N", "TCP port; 0 picks a free one (default 8080)"},
    {"models", "LOUPE_MODELS", OPT_STR, OFF(models_dir), "DIR", "model store, one folder per model (default ./models)"},
    {"default-model", "LOUPE_DEFAULT_MODEL", OPT_STR, OFF(default_model), "NAME",
     "model behind POST /predict (default: the best test accuracy)"},
    {"threads", "LOUPE_THREADS", OPT_UINT, OFF(threads), "N", "connection threads: read requests, write answers (default: the number of cores)"},
    {"max-body", "LOUPE_MAX_BODY", OPT_SIZE, OFF(max_body), "BYTES", "largest request body, e.g. 8M (default 8 MiB)"},
    {"max-pixels", "LOUPE_MAX_PIXELS", OPT_U64, OFF(max_pixels), "N",
     "largest image by its header's width*height (default 40000000)"},
    {"admin-token", "LOUPE_ADMIN_TOKEN", OPT_STR, OFF(admin_token), "TOKEN",
     "bearer token of /v1/admin/*; unset = admin routes off (prefer the variable)"},
    {"api-token", "LOUPE_API_TOKEN", OPT_STR, OFF(api_token), "TOKEN",
     "bearer token the model routes require (predict, explain, V2...); unset = open (prefer the variable)"},
    {"tls-cert", "LOUPE_TLS_CERT", OPT_STR, OFF(tls_cert), "FILE", "PEM certificate (chain): serve HTTPS (with --tls-key)"},
    {"tls-key", "LOUPE_TLS_KEY", OPT_STR, OFF(tls_key), "FILE", "PEM private key of --tls-cert"},
    {"cors-origin", "LOUPE_CORS_ORIGIN", OPT_STR, OFF(cors_origin), "ORIGIN",
     "value of Access-Control-Allow-Origin (default: no CORS headers)"},
    {"static", "LOUPE_STATIC", OPT_STR, OFF(static_dir), "DIR", "static files served at / (default: share/loupe/static of the install prefix, else " LOUPE_STATIC_DIR ")"},
    {"docs", "LOUPE_DOCS", OPT_STR, OFF(docs_dir), "DIR", "documents served at /docs/ (default: share/loupe/docs of the install prefix, else " LOUPE_DOCS_DIR ")"},
    {"timeout", "LOUPE_TIMEOUT", OPT_UINT, OFF(conn_timeout), "SECONDS", "close idle connections after this (default 30)"},
    {"conn-memory", "LOUPE_CONN_MEMORY", OPT_SIZE, OFF(conn_memory), "BYTES",
     "per-connection memory for headers and reads (default 64K)"},
    {"max-connections", "LOUPE_MAX_CONNECTIONS", OPT_UINT, OFF(max_connections), "N",
     "concurrent connections (default 1024)"},
    {"request-timeout", "LOUPE_REQUEST_TIMEOUT", OPT_UINT, OFF(request_timeout), "SECONDS",
     "time to send a whole request, or to take an answer; 0 = none (default 60)"},
    {"max-conn-per-ip", "LOUPE_MAX_CONN_PER_IP", OPT_UINT, OFF(max_conn_per_ip), "N",
     "connections from one address; 0 = no limit (default 0: behind a proxy all share one)"},
    {"body-budget", "LOUPE_BODY_BUDGET", OPT_SIZE, OFF(body_budget), "BYTES",
     "request bodies held in memory at once, all connections; past it 503 (default 512M)"},
    {"drain-grace", "LOUPE_DRAIN_GRACE", OPT_SECONDS, OFF(drain_grace), "SECONDS",
     "after SIGTERM: /readyz says 503, requests still served this long (default 5)"},
    {"drain-timeout", "LOUPE_DRAIN_TIMEOUT", OPT_SECONDS, OFF(drain_timeout), "SECONDS",
     "then wait at most this long for in-flight requests (default 30)"},
    {"access-log", "LOUPE_ACCESS_LOG", OPT_BOOL, OFF(access_log), "on|off", "one line per request on stderr (default on)"},
    {"log-format", "LOUPE_LOG_FORMAT", OPT_STR, OFF(log_format), "text|json",
     "log lines as text, or one JSON object a line for log shippers (default text)"},
    {"reports", "LOUPE_REPORTS", OPT_STR, OFF(reports_dir), "DIR",
     "reproduction reports served at /v1/reports (default ./reports)"},
    {"samples", "LOUPE_SAMPLES", OPT_STR, OFF(samples_dir), "DIR",
     "Fashion-MNIST folder whose test set /v1/samples and /v1/models/{m}/mistakes show "
     "(default " LOUPE_SAMPLES_DIR ")"},
    {"workers", "LOUPE_WORKERS", OPT_UINT, OFF(workers), "N",
     "worker threads of the main lane: decoding, predict, V2 infer (default: the number of cores)"},
    {"queue", "LOUPE_QUEUE", OPT_UINT, OFF(queue), "N",
     "main-lane requests that may wait; past it 429 + Retry-After (default 256)"},
    {"max-batch", "LOUPE_MAX_BATCH", OPT_UINT, OFF(max_batch), "N",
     "images per forward pass of the dynamic batcher; 1 turns batching off (default 32)"},
    {"batch-delay-us", "LOUPE_BATCH_DELAY_US", OPT_UINT, OFF(batch_delay_us), "N",
     "microseconds a worker waits to fill a batch; 0 batches only what is queued (default 0)"},
    {"queue-timeout", "LOUPE_QUEUE_TIMEOUT", OPT_UINT, OFF(queue_timeout_ms), "MS",
     "a request still queued this long after it arrived gets 503; 0 = never (default 0)"},
    {"large-pixels", "LOUPE_LARGE_PIXELS", OPT_U64, OFF(large_pixels), "N",
     "uploads whose header declares more pixels decode on the heavy lane (default 1000000)"},
    {"expensive-concurrency", "LOUPE_EXPENSIVE_CONCURRENCY", OPT_UINT, OFF(expensive_concurrency), "N",
     "heavy-lane workers: CNN saliency/filters/activations, large decodes, reloads (default: the number of cores)"},
    {"expensive-queue", "LOUPE_EXPENSIVE_QUEUE", OPT_UINT, OFF(expensive_queue), "N",
     "heavy-lane requests that may wait; past it 429 + Retry-After (default 16)"},
    {"watch", "LOUPE_WATCH", OPT_SECONDS, OFF(watch), "SECONDS",
     "poll the model store this often and reload what changed; 0 = off, SIGHUP only (default 0)"},
    {"torch-threads", "LOUPE_TORCH_THREADS", OPT_UINT, OFF(torch_threads), "N",
     "libtorch intra-op threads per call (default 1: requests already run in parallel)"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

/* "8M", "64K", "1G", "512" (also "8MiB", "8MB": powers of two either way). */
static int parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (!*s || *s == '-') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t mul = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mul = 1ull << 10; break;
        case 'm': case 'M': mul = 1ull << 20; break;
        case 'g': case 'G': mul = 1ull << 30; break;
        default: return -1;
        }
        end++;
        if (!strcasecmp(end, "ib") || !strcasecmp(end, "b")) end += strlen(end);
        if (*end) return -1;
    }
    if (v > UINT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

static int set_opt(srv_config *cfg, const opt_spec *o, const char *val, const char *src,
                   char *err, size_t errlen) {
    char *base = (char *)cfg + o->offset;
    uint64_t u;
    char *end;
    switch (o->type) {
    case OPT_STR:
        *(const char **)base = *val ? val : NULL;
        return 0;
    case OPT_UINT:
        errno = 0;
        u = strtoull(val, &end, 10);
        if (errno || end == val || *end || *val == '-' || u > 0x7fffffffu) break;
        *(unsigned *)base = (unsigned)u;
        return 0;
    case OPT_SIZE:
        if (parse_size(val, &u) || u > SIZE_MAX) break;
        *(size_t *)base = (size_t)u;
        return 0;
    case OPT_U64:
        if (parse_size(val, &u)) break;
        *(uint64_t *)base = u;
        return 0;
    case OPT_SECONDS: {
        errno = 0;
        double d = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(d) || d < 0 || d > 86400) break;
        *(double *)base = d;
        return 0;
    }
    case OPT_BOOL:
        if (!strcasecmp(val, "on") || !strcasecmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes"))
            *(int *)base = 1;
        else if (!strcasecmp(val, "off") || !strcasecmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no"))
            *(int *)base = 0;
        else break;
        return 0;
    }
    errbuf_set(err, errlen, "bad value '%s' for %s%s", val, src, src[0] == '-' ? o->flag : "");
    return -1;
}

static void defaults(srv_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->port = 8080;
    cfg->models_dir = "models";
    cfg->static_dir = paths_installed_dir("static", cfg->installed_static, sizeof cfg->installed_static)
                          ? LOUPE_STATIC_DIR : cfg->installed_static;
    cfg->docs_dir = paths_installed_dir("docs", cfg->installed_docs, sizeof cfg->installed_docs)
                        ? LOUPE_DOCS_DIR : cfg->installed_docs;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->threads = n > 0 ? (unsigned)n : 1;
    cfg->max_body = 8u << 20;
    cfg->max_pixels = 40000000;
    cfg->conn_timeout = 30;
    cfg->conn_memory = 64u << 10;
    cfg->max_connections = 1024;
    cfg->request_timeout = 60;
    cfg->body_budget = (size_t)512 << 20;
    cfg->drain_grace = 5;
    cfg->drain_timeout = 30;
    cfg->access_log = 1;
    cfg->log_format = "text";
    cfg->reports_dir = "reports";
    cfg->samples_dir = LOUPE_SAMPLES_DIR;
    cfg->workers = cfg->threads;
    cfg->queue = 256;
    cfg->max_batch = 32;
    cfg->batch_delay_us = 0;
    cfg->queue_timeout_ms = 0;
    cfg->large_pixels = 1000000;
    cfg->expensive_concurrency = cfg->threads;
    cfg->expensive_queue = 16;
    cfg->torch_threads = 1;
}

void srv_config_usage(FILE *out) {
    fprintf(out, "usage: loupe serve [options]\n\n"
                 "Serve the model store over HTTP. Every option can also be set by its environment\n"
                 "variable; a flag wins over the variable. SIGHUP reloads the store; SIGTERM/SIGINT\n"
                 "drain and exit 0. API reference: docs/api.md.\n\noptions:\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char lhs[64];
        snprintf(lhs, sizeof lhs, "--%s %s", opts[i].flag, opts[i].metavar);
        fprintf(out, "  %-26s %-22s %s\n", lhs, opts[i].env, opts[i].help);
    }
    fprintf(out, "  %-26s %-22s %s\n", "-h, --help", "", "this text");
}

int srv_config_parse(srv_config *cfg, int argc, char **argv, FILE *out, char *err, size_t errlen) {
    defaults(cfg);
    const char *th = getenv("LOUPE_TEST_HOOKS");
    cfg->test_hooks = th && !strcmp(th, "1");
    const char *od = cfg->test_hooks ? getenv("LOUPE_TEST_OPEN_DELAY_MS") : NULL;
    cfg->test_open_delay_ms = od ? (unsigned)strtoul(od, NULL, 10) : 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v && set_opt(cfg, &opts[i], v, opts[i].env, err, errlen)) return -1;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            srv_config_usage(out);
            return 1;
        }
        if (strncmp(arg, "--", 2)) {
            errbuf_set(err, errlen, "unexpected argument '%s'", arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_spec *o = NULL;
        for (size_t i = 0; i < N_OPTS; i++)
            if (strlen(opts[i].flag) == nlen && !strncmp(opts[i].flag, name, nlen)) o = &opts[i];
        if (!o) {
            errbuf_set(err, errlen, "unknown option '%s' (see loupe serve --help)", arg);
            return -1;
        }
        const char *val;
        if (eq) val = eq + 1;
        else if (a + 1 < argc) val = argv[++a];
        else {
            errbuf_set(err, errlen, "option --%s needs a value", o->flag);
            return -1;
        }
        if (set_opt(cfg, o, val, "--", err, errlen)) return -1;
    }
    if (cfg->port > 65535) {
        errbuf_set(err, errlen, "port %u is out of range", cfg->port);
        return -1;
    }
    if (cfg->threads < 1) cfg->threads = 1;
    if (cfg->threads > 1024) {
        errbuf_set(err, errlen, "--threads %u is too many (at most 1024)", cfg->threads);
        return -1;
    }
    /* Unsigned options with a valid range: one rule, one message. */
    static const struct {
        const char *flag;
        size_t offset;
        unsigned lo, hi;
    } ranges[] = {
        {"workers", OFF(workers), 1, 1024},
        {"queue", OFF(queue), 0, 65536},
        {"max-batch", OFF(max_batch), 1, 1024},
        {"batch-delay-us", OFF(batch_delay_us), 0, 1000000},
        {"queue-timeout", OFF(queue_timeout_ms), 0, 3600000},
        {"expensive-concurrency", OFF(expensive_concurrency), 1, 1024},
        {"expensive-queue", OFF(expensive_queue), 0, 65536},
        {"torch-threads", OFF(torch_threads), 1, 1024},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        unsigned v = *(const unsigned *)((const char *)cfg + ranges[i].offset);
        if (v < ranges[i].lo || v > ranges[i].hi) {
            errbuf_set(err, errlen, "--%s must be in [%u,%u], not %u", ranges[i].flag, ranges[i].lo, ranges[i].hi, v);
            return -1;
        }
    }
    if (cfg->max_body < 1) {
        errbuf_set(err, errlen, "--max-body must be at least 1 byte");
        return -1;
    }
    if (cfg->body_budget > ((size_t)1 << 50)) {
        errbuf_set(err, errlen, "--body-budget %zu is more memory than any machine has (at most 1P)", cfg->body_budget);
        return -1;
    }
    if (cfg->body_budget < cfg->max_body) {
        errbuf_set(err, errlen, "--body-budget (%zu bytes) must be at least --max-body (%zu bytes)", cfg->body_budget,
                   cfg->max_body);
        return -1;
    }
    if (cfg->watch > 0 && cfg->watch < 0.1) {
        errbuf_set(err, errlen, "--watch is 0 (off) or at least 0.1 seconds, not %g", cfg->watch);
        return -1;
    }
    if (!cfg->tls_cert != !cfg->tls_key) {
        errbuf_set(err, errlen, "--tls-cert and --tls-key go together: give both, or neither");
        return -1;
    }
    if (cfg->conn_memory < 4096) {
        errbuf_set(err, errlen, "--conn-memory must be at least 4K");
        return -1;
    }
    if (strcmp(cfg->log_format, "text") && strcmp(cfg->log_format, "json")) {
        errbuf_set(err, errlen, "--log-format is text or json, not '%.40s'", cfg->log_format);
        return -1;
    }
    return 0;
}
