/* srv_config.h -- the daemon's configuration: flags, their environment variables, defaults. */
#ifndef LOUPE_SRV_CONFIG_H
#define LOUPE_SRV_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Longest installed data folder path kept in srv_config (the defaults of --static and --docs). */
#define SRV_CONFIG_PATH_MAX 4096

/* Set once at start-up, read-only afterwards. Strings point into argv, the
 * environment, string literals or the struct's own buffers; none is owned. */
typedef struct {
    const char *host;          /* address to bind; NULL or "" = all interfaces */
    unsigned port;             /* 0 = any free port (the log line says which) */
    const char *models_dir;
    const char *default_model; /* NULL = the best test accuracy */
    const char *static_dir;
    const char *docs_dir;
    const char *admin_token;   /* NULL = admin routes off (404) */
    const char *api_token;     /* NULL = the model routes are open; else they need "Authorization: Bearer" it */
    const char *tls_cert;      /* PEM file: serve HTTPS (with tls_key); NULL = plain HTTP */
    const char *tls_key;       /* PEM file of the certificate's private key */
    const char *cors_origin;   /* NULL = no CORS headers */
    unsigned threads;          /* libmicrohttpd pool size */
    size_t max_body;           /* bytes */
    uint64_t max_pixels;       /* width * height of an upload */
    unsigned conn_timeout;     /* seconds of inactivity before a connection is closed */
    size_t conn_memory;        /* bytes of per-connection memory pool */
    unsigned max_connections;
    unsigned request_timeout;  /* seconds a client has to send a request, or to take its answer; 0 = no limit */
    unsigned max_conn_per_ip;  /* connections open from one address; 0 = no limit */
    size_t body_budget;        /* bytes of request bodies held at once, all connections together */
    double drain_grace;        /* seconds of serving after SIGTERM before closing the door */
    double drain_timeout;      /* seconds to wait for in-flight requests after that */
    double watch;              /* seconds between polls of the store for changes (--watch); 0 = off */
    int access_log;            /* 1 = one line per request on stderr */
    const char *log_format;    /* "text" or "json" (one JSON object a line) */
    const char *reports_dir;   /* reproduction reports served under /v1/reports */
    const char *samples_dir;   /* Fashion-MNIST folder: the test set of /v1/samples and .../mistakes */
    unsigned workers;          /* main-lane worker threads: decoding, predict, V2 infer */
    unsigned queue;            /* main-lane requests that may wait; past it 429 */
    unsigned max_batch;        /* images per batched forward pass; 1 = no batching */
    unsigned batch_delay_us;   /* how long a worker waits to fill a batch */
    unsigned queue_timeout_ms; /* queued longer than this since arrival: 503; 0 = never */
    uint64_t large_pixels;     /* uploads declaring more pixels go to the heavy lane */
    unsigned expensive_concurrency; /* heavy-lane workers: CNN saliency, filters, activations, large decodes */
    unsigned expensive_queue;  /* heavy-lane requests that may wait; past it 429 */
    int test_hooks;            /* LOUPE_TEST_HOOKS=1: the routes under /v1/test/ (tests only; never in --help) */
    unsigned test_open_delay_ms; /* with test hooks, LOUPE_TEST_OPEN_DELAY_MS: pause between resolving and opening a file */
    unsigned torch_threads;    /* libtorch intra-op threads per call */
    char installed_static[SRV_CONFIG_PATH_MAX]; /* <prefix>/share/loupe/static when installed, else "" */
    char installed_docs[SRV_CONFIG_PATH_MAX];   /* <prefix>/share/loupe/docs when installed, else "" */
} srv_config;

/* Defaults, then environment variables, then flags (flags win).
 * Returns 0, 1 when --help was asked (help printed to out), or -1 with a
 * message in err on a bad flag or value. */
int srv_config_parse(srv_config *cfg, int argc, char **argv, FILE *out, char *err, size_t errlen);

/* Print the usage text: every flag with its environment variable and default. */
void srv_config_usage(FILE *out);

#endif
