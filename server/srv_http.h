/* srv_http.h -- the HTTP layer over libmicrohttpd: server context, requests, responses, the route table type. */
#ifndef LOUPE_SRV_HTTP_H
#define LOUPE_SRV_HTTP_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "img.h"
#include "core_reg.h"
#include "srv_config.h"
#include "srv_err.h"
#include "srv_metrics.h"

struct MHD_Daemon;
struct MHD_Connection;
struct MHD_PostProcessor;
struct core_queue;
struct core_job;
struct srv_conn;

/* Everything a request handler may reach. Only the atomics change after start. */
#define SRV_MAX_LISTENERS 64

typedef struct srv_ctx {
    const srv_config *cfg;
    core_reg *registry;
    struct core_samples *samples; /* the test set of /v1/samples and .../mistakes (core_samples.h) */
    srv_metrics *metrics;
    img_limits limits;
    char static_root[PATH_MAX];   /* realpath of cfg->static_dir, "" when missing */
    char docs_root[PATH_MAX];     /* realpath of cfg->docs_dir, "" when missing */
    atomic_int draining;          /* 1 once SIGTERM came: /readyz 503, connections close */
    atomic_long in_flight;        /* requests between first callback and completion */
    atomic_uint_fast64_t next_id; /* requests given an X-Request-ID here */
    uint64_t id_base;             /* random start of the ids, set at start */
    /* One libmicrohttpd daemon, one thread, one listening socket per request
     * thread (SO_REUSEPORT: the kernel spreads connections evenly over them);
     * or a single daemon with a thread pool where the kernel cannot. */
    struct MHD_Daemon *daemons[SRV_MAX_LISTENERS];
    int n_daemons;
    unsigned port;                /* the bound port */
    /* The work queues (core_queue), created and freed with the daemons by
     * srv_http_start/srv_http_stop. main: decoding, predict and V2 infer,
     * batched per model; heavy: CNN saliency, filters, activations, uploads
     * declaring more than cfg->large_pixels, reloads; its threads run niced. */
    struct core_queue *lane_main, *lane_heavy;
    /* Open connections (srv_conn, from libmicrohttpd's connection
     * notifications): their deadlines, which the reaper thread enforces,
     * and the per-address count. */
    pthread_mutex_t conns_lock;
    pthread_cond_t conns_cond;
    struct srv_conn *conns;       /* doubly linked */
    pthread_t reaper;
    int reaper_on, reaper_stop;
    atomic_llong body_bytes;      /* request bodies buffered now (body_cap summed) */
    char *tls_cert, *tls_key;     /* PEM text of cfg->tls_cert / tls_key, read at start; owned */
    /* Test hooks: held workers wait on test_cond until test_gen changes. */
    pthread_mutex_t test_lock;
    pthread_cond_t test_cond;
    unsigned test_gen;
    int test_closed;              /* the lanes are stopping: nothing is held any more */
} srv_ctx;

/* Methods as a bit mask, for the route table and Allow. */
enum { SRV_GET = 1, SRV_POST = 2 };

/* Route flags. */
enum {
    SRV_R_BODY = 1,   /* the handler reads the request body */
    SRV_R_IMAGE = 2,  /* the body is an image upload: multipart/form-data is parsed */
    SRV_R_V2 = 4,     /* KServe V2: errors as {"error": "..."} */
    SRV_R_ADMIN = 8,  /* exists only when an admin token is configured */
    SRV_R_TEST = 16,  /* exists only with LOUPE_TEST_HOOKS=1 (tests) */
    SRV_R_AUTH = 32   /* names or runs a model: needs the API token when one is set */
};

struct srv_req;
typedef void (*srv_handler)(struct srv_req *r);

typedef struct {
    const char *pattern;  /* "/v1/models/{m}/predict": a {...} segment matches any one segment */
    unsigned methods;     /* SRV_GET | SRV_POST; GET implies HEAD */
    unsigned flags;
    srv_handler fn;
} srv_route;

/* A response being built; owned by the request until queued. */
typedef struct {
    unsigned status;
    const char *content_type;  /* static string */
    char *body;                /* malloc'd, or NULL */
    size_t len;
    int fd;                    /* >= 0: send this file of fd_size bytes instead of body */
    uint64_t fd_size;
    const char *allow;         /* static string for 405, or NULL */
    int www_authenticate;      /* add WWW-Authenticate: Bearer (401) */
    int preflight;             /* an OPTIONS answer: Allow and, with CORS, Access-Control-* */
    unsigned retry_after;      /* > 0: add Retry-After: this many seconds (429, 503) */
    int set;                   /* a handler answered */
} srv_resp;

#define SRV_MAX_PARAMS 3

typedef struct srv_req {
    srv_ctx *ctx;
    struct MHD_Connection *conn;
    struct srv_conn *sc;          /* the connection's tracker, or NULL */
    const char *method;           /* from libmicrohttpd, valid for the request */
    char *path;                   /* decoded path, trailing slash removed; owned */
    const char *param[SRV_MAX_PARAMS]; /* {...} segments, pointing into segbuf */
    char *segbuf;                 /* owned */
    int route;                    /* index in srv_routes, or SRV_ROUTE_STATIC / _UNMATCHED */
    unsigned flags;               /* the route's flags */
    double t_start;               /* clock_now() when the request's headers arrived */
    char request_id[72];          /* X-Request-ID: the client's, or one made here */
    /* Body: the raw body, or with multipart the `image` field only. */
    unsigned char *body;
    size_t body_len, body_cap;    /* body_cap bytes are taken from ctx's body budget */
    size_t declared;              /* Content-Length (<= max body), 0 when not given */
    const char *content_type;     /* header value or NULL */
    struct MHD_PostProcessor *pp;
    int multipart_image;          /* the `image` field was seen */
    int early_err;                /* 1: answer early_kind/early_msg once the body is in */
    core_err_kind early_kind;
    char early_msg[256];
    uint64_t discarded;           /* bytes dropped after an early error */
    int first_done;               /* the first access callback happened */
    char model[128];              /* model name for the log line */
    srv_resp resp;
    unsigned status;              /* what was queued */
    uint64_t bytes;               /* body bytes queued */
    int deferred;                 /* the handler handed the request to a pool worker */
    atomic_int deferred_done;     /* the worker answered and resumed the connection */
} srv_req;

/* The route table (srv_routes.c). */
extern const srv_route srv_routes[];
extern const int srv_n_routes;
/* What a GET of a path no pattern matches falls back to (srv_routes.c: the
 * static files): match says whether it serves path, fn answers. */
typedef struct {
    int (*match)(srv_ctx *ctx, const char *path);
    srv_handler fn;
} srv_fallback;
extern const srv_fallback srv_route_fallback;
/* Metrics indices after the table's. */
#define SRV_ROUTE_STATIC (srv_n_routes)
#define SRV_ROUTE_UNMATCHED (srv_n_routes + 1)

/* Start the daemon on cfg's host/port; ctx->port gets the bound port.
 * Returns 0 or -1 with a message in err. */
int srv_http_start(srv_ctx *ctx, char *err, size_t errlen);
/* Stop accepting new connections (in-flight requests continue). */
void srv_http_quiesce(srv_ctx *ctx);
/* Close every connection and stop the threads. */
void srv_http_stop(srv_ctx *ctx);

/* ==== For handlers ==== */

/* A query argument or header of the request (NULL when absent). */
const char *srv_req_query(srv_req *r, const char *key);
const char *srv_req_header(srv_req *r, const char *key);
/* 1 when the request's Authorization header is "Bearer <token>" (compared in
 * constant time), else 0. */
int srv_req_bearer_ok(srv_req *r, const char *token);
/* Remember the model for the log line. */
void srv_req_set_model(srv_req *r, const char *name);

/* Answer with a JSON document (reference stolen; NULL means allocation failed → 500). */
void srv_reply_json(srv_req *r, unsigned status, json_t *doc);
/* Answer with a malloc'd buffer (ownership taken; NULL → 500). */
void srv_reply_buf(srv_req *r, unsigned status, const char *content_type, char *buf, size_t len);
/* Answer with a copy of a constant string. */
void srv_reply_text(srv_req *r, unsigned status, const char *content_type, const char *text);
/* Answer with an open file (ownership of fd taken). */
void srv_reply_fd(srv_req *r, const char *content_type, int fd, uint64_t size);
/* Hand the rest of the request to a lane: returns 0 after suspending the
 * connection and queueing job (job->t_arrival is set to r's arrival; its fn
 * must answer r, then call srv_req_resume(r) as its last use of r), -1 when
 * the lane's workers and queue are full, -2 when it is stopping (nothing
 * done either way: answer with srv_reply_busy(r, lane, rc)). */
int srv_req_defer(srv_req *r, struct core_queue *lane, struct core_job *job);
/* From the worker, after answering: the response goes out on the connection's thread. */
void srv_req_resume(srv_req *r);
/* Why srv_req_defer refused: -1, 429 (the lane is at its limit); -2, 503
 * (shutting down). Both with Retry-After. */
void srv_reply_busy(srv_req *r, struct core_queue *lane, int why);
/* From a worker, for a deferred request: 1 when the client has closed its
 * end (the socket reads EOF or an error), so its work can be skipped. */
int srv_req_gone(srv_req *r);

/* Answer with an error: {"error":{"code","message"}}, or {"error": message} on /v2 routes. */
void srv_reply_error(srv_req *r, core_err_kind kind, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
