/* srv_http.c -- libmicrohttpd glue: request lifecycle, body limits, multipart, dispatch, responses, access log. */
#include "clock.h"
#include "srv_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"
#include "core_queue.h"
#include "core_samples.h"
#include "utf8.h"

/* Bytes of an over-limit body read and dropped before the connection is cut instead. */
#define SRV_DISCARD_LIMIT (64u << 20)

/* ==== Connections: deadlines and per-address limits ==== */

/* One open connection, from libmicrohttpd's STARTED notification to CLOSED.
 * libmicrohttpd's --timeout is an idle timeout: a client sending a byte every
 * few seconds would hold a connection (and its slot) for ever. The deadline
 * bounds the time the daemon waits on the client, to send its request or to
 * take its answer; the reaper thread cuts what overruns it. */
typedef struct srv_conn {
    struct srv_conn *prev, *next;
    int fd;
    struct sockaddr_storage addr; /* the client's address (its port ignored) */
    atomic_llong deadline_us;     /* clock_now() microseconds; 0 = the daemon is working, no deadline */
    int over_ip;                  /* opened past --max-conn-per-ip: its requests get 503 */
} srv_conn;

static long long now_us(void) {
    return (long long)(clock_now() * 1e6);
}

/* Start the client's clock: it has cfg->request_timeout seconds from now. */
static void conn_wait_client(srv_ctx *ctx, srv_conn *c) {
    if (c && ctx->cfg->request_timeout && !c->over_ip) /* an over-limit one keeps its short deadline */
        atomic_store_explicit(&c->deadline_us, now_us() + (long long)ctx->cfg->request_timeout * 1000000,
                              memory_order_relaxed);
}

/* The daemon has the request: its own time (queue, model work) is not the client's. */
static void conn_wait_daemon(srv_conn *c) {
    if (c && !c->over_ip) atomic_store_explicit(&c->deadline_us, 0, memory_order_relaxed);
}

static int same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        /* One client commonly holds a whole /64: its addresses count together. */
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr, 8);
    return 1; /* other families (none today): one bucket */
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    srv_ctx *ctx = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        srv_conn *c = calloc(1, sizeof *c);
        if (!c) return; /* untracked: no deadline, not counted; the idle timeout still applies */
        const union MHD_ConnectionInfo *fi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        c->fd = fi ? fi->connect_fd : -1;
        if (ai && ai->client_addr) {
            socklen_t len = ai->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                    : sizeof(struct sockaddr_in);
            memcpy(&c->addr, ai->client_addr, len);
        }
        conn_wait_client(ctx, c);
        unsigned limit = ctx->cfg->max_conn_per_ip, same = 0;
        pthread_mutex_lock(&ctx->conns_lock);
        if (limit)
            for (srv_conn *o = ctx->conns; o; o = o->next) same += !o->over_ip && same_host(&o->addr, &c->addr);
        c->over_ip = limit && same >= limit;
        /* Past the limit: time for one request, to answer it 503, and no
         * more; an idle one must not keep its slot for --timeout. */
        if (c->over_ip) atomic_store_explicit(&c->deadline_us, now_us() + 2000000, memory_order_relaxed);
        c->next = ctx->conns;
        if (ctx->conns) ctx->conns->prev = c;
        ctx->conns = c;
        pthread_mutex_unlock(&ctx->conns_lock);
        if (c->over_ip) srv_metrics_refused(ctx->metrics, SRV_REFUSED_PER_IP);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        srv_conn *c = *socket_context;
        if (!c) return;
        *socket_context = NULL;
        pthread_mutex_lock(&ctx->conns_lock);
        if (c->prev) c->prev->next = c->next;
        else ctx->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        pthread_mutex_unlock(&ctx->conns_lock);
        free(c);
    }
}

static void host_text(const struct sockaddr_storage *a, char *host, size_t len) {
    snprintf(host, len, "?");
    if (a->ss_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, host, (socklen_t)len);
    else if (a->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, host, (socklen_t)len);
}

/* The reaper: twice a second, cut the connections past their deadline.
 * shutdown() leaves the descriptor to libmicrohttpd, which sees the
 * connection fail on its next poll and closes it the usual way; libmicrohttpd
 * notifies CLOSED (which unlinks the connection under conns_lock) before it
 * closes the descriptor, so the fd shut down here is still that connection's. */
static void *reaper_main(void *arg) {
    srv_ctx *ctx = arg;
    enum { LOG_MAX = 16 };
    pthread_mutex_lock(&ctx->conns_lock);
    while (!ctx->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts); /* conns_cond waits on the monotonic clock */
        ts.tv_nsec += 500 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&ctx->conns_cond, &ctx->conns_lock, &ts);
        long long now = now_us();
        struct sockaddr_storage cut[LOG_MAX];
        int ncut = 0, nmore = 0;
        for (srv_conn *c = ctx->conns; c; c = c->next) {
            long long d = atomic_load_explicit(&c->deadline_us, memory_order_relaxed);
            if (!d || now < d || c->fd < 0) continue;
            /* The connection's thread may have just taken the request (or
             * queued its answer) and moved the deadline: cut only if not. */
            if (!atomic_compare_exchange_strong_explicit(&c->deadline_us, &d, 0, memory_order_relaxed,
                                                         memory_order_relaxed))
                continue;
            shutdown(c->fd, SHUT_RDWR);
            if (c->over_ip) continue; /* counted when it opened; its cut is the limit working */
            srv_metrics_refused(ctx->metrics, SRV_REFUSED_REQUEST_TIMEOUT);
            if (ncut < LOG_MAX) cut[ncut++] = c->addr;
            else nmore++;
        }
        /* Log without the lock: a slow stderr must not hold up every connection's start and end. */
        pthread_mutex_unlock(&ctx->conns_lock);
        for (int i = 0; i < ncut; i++) {
            char host[INET6_ADDRSTRLEN];
            host_text(&cut[i], host, sizeof host);
            log_line("closed a connection from %s: no whole request (or answer taken) within --request-timeout %us",
                     host, ctx->cfg->request_timeout);
        }
        if (nmore) log_line("closed %d more connections past --request-timeout", nmore);
        pthread_mutex_lock(&ctx->conns_lock);
    }
    pthread_mutex_unlock(&ctx->conns_lock);
    return NULL;
}

static int start_reaper(srv_ctx *ctx) {
    ctx->reaper_stop = 0;
    if (!ctx->cfg->request_timeout && !ctx->cfg->max_conn_per_ip) return 0;
    if (pthread_create(&ctx->reaper, NULL, reaper_main, ctx)) return -1;
    ctx->reaper_on = 1;
    return 0;
}

static void stop_reaper(srv_ctx *ctx) {
    if (!ctx->reaper_on) return;
    pthread_mutex_lock(&ctx->conns_lock);
    ctx->reaper_stop = 1;
    pthread_cond_broadcast(&ctx->conns_cond);
    pthread_mutex_unlock(&ctx->conns_lock);
    pthread_join(ctx->reaper, NULL);
    ctx->reaper_on = 0;
}

/* ==== Body memory ==== */

/* Reserve n more bytes of request bodies against cfg->body_budget. Returns 0,
 * or -1 (nothing reserved) when that would pass it. */
static int body_reserve(srv_ctx *ctx, size_t n) {
    long long want = (long long)n, cur = atomic_load_explicit(&ctx->body_bytes, memory_order_relaxed);
    do {
        if (cur + want > (long long)ctx->cfg->body_budget) return -1;
    } while (!atomic_compare_exchange_weak_explicit(&ctx->body_bytes, &cur, cur + want, memory_order_relaxed,
                                                    memory_order_relaxed));
    srv_metrics_body_bytes(ctx->metrics, want);
    return 0;
}

static void body_unreserve(srv_ctx *ctx, size_t n) {
    if (!n) return;
    atomic_fetch_sub_explicit(&ctx->body_bytes, (long long)n, memory_order_relaxed);
    srv_metrics_body_bytes(ctx->metrics, -(long long)n);
}

/* ==== Responses ==== */

static void resp_reset(srv_resp *p) {
    free(p->body);
    if (p->fd >= 0) close(p->fd);
    memset(p, 0, sizeof *p);
    p->fd = -1;
}

void srv_reply_buf(srv_req *r, unsigned status, const char *content_type, char *buf, size_t len) {
    resp_reset(&r->resp);
    if (!buf) {
        /* Can't build the answer: say so in a constant that needs no allocation. */
        static const char oom[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of memory\"}}";
        r->resp.status = 500;
        r->resp.content_type = "application/json";
        r->resp.body = malloc(sizeof oom);
        if (r->resp.body) {
            memcpy(r->resp.body, oom, sizeof oom);
            r->resp.len = sizeof oom - 1;
        }
        r->resp.set = 1;
        return;
    }
    r->resp.status = status;
    r->resp.content_type = content_type;
    r->resp.body = buf;
    r->resp.len = len;
    r->resp.set = 1;
}

void srv_reply_text(srv_req *r, unsigned status, const char *content_type, const char *text) {
    size_t n = strlen(text);
    char *b = malloc(n + 1);
    if (b) memcpy(b, text, n + 1);
    srv_reply_buf(r, status, content_type, b, n);
}

void srv_reply_json(srv_req *r, unsigned status, json_t *doc) {
    /* 9 significant digits: enough for any float32 to round-trip. */
    char *s = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(doc);
    srv_reply_buf(r, status, "application/json", s, s ? strlen(s) : 0);
}

void srv_reply_fd(srv_req *r, const char *content_type, int fd, uint64_t size) {
    resp_reset(&r->resp);
    r->resp.status = 200;
    r->resp.content_type = content_type;
    r->resp.fd = fd;
    r->resp.fd_size = size;
    r->resp.set = 1;
}

static void reply_errorv(srv_req *r, core_err_kind kind, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* A message may quote what the client sent (a path, a query value, a
     * header), and the buffer may cut a character in two: Jansson refuses
     * invalid UTF-8, and the reply would have become a 500 out_of_memory. */
    utf8_sanitize(msg);
    json_t *doc;
    if (r->flags & SRV_R_V2)
        doc = json_pack("{s:s}", "error", msg);
    else
        doc = json_pack("{s:{s:s, s:s}}", "error", "code", core_err_code(kind), "message", msg);
    srv_reply_json(r, srv_err_status(kind), doc);
}

void srv_reply_error(srv_req *r, core_err_kind kind, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    reply_errorv(r, kind, fmt, ap);
    va_end(ap);
}

/* Remember an error found before the body is complete; the first one wins. */
static void early_error(srv_req *r, core_err_kind kind, const char *fmt, ...) {
    if (r->early_err) return;
    r->early_err = 1;
    r->early_kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->early_msg, sizeof r->early_msg, fmt, ap);
    va_end(ap);
}

int srv_req_defer(srv_req *r, core_queue *lane, core_job *job) {
    int rc = lane ? core_queue_reserve(lane) : -2;
    if (rc) return rc;
    r->deferred = 1;
    conn_wait_daemon(r->sc);
    job->t_arrival = r->t_start;
    /* Suspend before the worker can resume. */
    MHD_suspend_connection(r->conn);
    core_queue_push(lane, job);
    return 0;
}

int srv_req_gone(srv_req *r) {
    /* A suspended connection is not polled, so libmicrohttpd cannot tell; the
     * socket can: EOF (the client closed) or an error (reset) means nobody
     * will read the answer. Pipelined bytes or nothing yet mean it is there. */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void srv_req_resume(srv_req *r) {
    struct MHD_Connection *conn = r->conn;
    atomic_store_explicit(&r->deferred_done, 1, memory_order_release);
    MHD_resume_connection(conn);
}

void srv_reply_busy(srv_req *r, core_queue *lane, int why) {
    const srv_config *cfg = r->ctx->cfg;
    if (why == -2) {
        srv_reply_error(r, CORE_E_UNAVAILABLE, "the server is shutting down");
        r->resp.retry_after = 1;
        return;
    }
    int heavy = lane == r->ctx->lane_heavy;
    srv_reply_error(r, CORE_E_BUSY, "the %s lane is full (%u running, %u queued at most); retry shortly",
                    lane ? core_queue_name(lane) : "work", heavy ? cfg->expensive_concurrency : cfg->workers,
                    heavy ? cfg->expensive_queue : cfg->queue);
    r->resp.retry_after = 1;
}

static void reply_early(srv_req *r) {
    srv_reply_error(r, r->early_kind, "%s", r->early_msg);
    if (r->early_kind == CORE_E_UNAVAILABLE) r->resp.retry_after = 1;
    if (r->early_kind == CORE_E_UNAUTHORIZED) r->resp.www_authenticate = 1;
}

const char *srv_req_query(srv_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *srv_req_header(srv_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, key);
}

int srv_req_bearer_ok(srv_req *r, const char *token) {
    const char *auth = srv_req_header(r, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) || !token) return 0; /* the scheme is case-insensitive (RFC 7235) */
    const char *a = auth + 7;
    /* Constant time in the token's content: every byte is looked at. */
    size_t la = strlen(a), lb = strlen(token);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ token[i % (lb ? lb : 1)]);
    return d == 0;
}

void srv_req_set_model(srv_req *r, const char *name) {
    snprintf(r->model, sizeof r->model, "%s", name ? name : "");
}

/* Turn r->resp into a libmicrohttpd response and queue it. */
static enum MHD_Result queue(srv_req *r) {
    srv_ctx *ctx = r->ctx;
    if (!r->resp.set) srv_reply_error(r, CORE_E_INTERNAL, "the handler gave no answer");
    struct MHD_Response *resp;
    if (r->resp.fd >= 0) {
        resp = MHD_create_response_from_fd((uint64_t)r->resp.fd_size, r->resp.fd);
        if (resp) r->resp.fd = -1; /* owned by the response now */
        r->bytes = r->resp.fd_size;
    } else {
        resp = MHD_create_response_from_buffer(r->resp.len, r->resp.body ? r->resp.body : (void *)"",
                                               r->resp.body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (resp) r->resp.body = NULL;
        r->bytes = r->resp.len;
    }
    if (!resp) return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    if (r->resp.content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->resp.content_type);
    if (r->resp.allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->resp.allow);
    if (r->resp.www_authenticate) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->resp.retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", r->resp.retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (ctx->cfg->cors_origin) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, ctx->cfg->cors_origin);
        MHD_add_response_header(resp, "Vary", "Origin");
        /* So that the page, served from another origin, can read why (401, 429, 503) and the id. */
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "WWW-Authenticate, Retry-After, X-Request-ID");
        if (r->resp.preflight) {
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS");
            MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Content-Type, Authorization");
            MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
        }
    }
    if (r->resp.preflight) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST, OPTIONS");
    if (r->request_id[0]) MHD_add_response_header(resp, "X-Request-ID", r->request_id);
    /* While draining, tell keep-alive clients to reconnect (to another replica). */
    if (atomic_load_explicit(&ctx->draining, memory_order_relaxed) || (r->sc && r->sc->over_ip))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    r->status = r->resp.status;
    conn_wait_client(ctx, r->sc);
    enum MHD_Result ret = MHD_queue_response(r->conn, r->resp.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ==== Routing ==== */

/* Match path (without its leading '/', split in place into segments) against a pattern. */
static int route_match(const char *pattern, char **segs, int nseg, const char **param) {
    int i = 0, np = 0;
    const char *p = pattern + 1;
    if (!*p) return nseg == 0;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (i >= nseg) return 0;
        if (p[0] == '{') {
            if (np < SRV_MAX_PARAMS) param[np++] = segs[i];
        } else if (strlen(segs[i]) != n || strncmp(segs[i], p, n)) {
            return 0;
        }
        i++;
        p += n;
        if (*p == '/') p++;
    }
    return i == nseg;
}

static unsigned method_bit(const char *m) {
    if (!strcmp(m, "GET") || !strcmp(m, "HEAD")) return SRV_GET;
    if (!strcmp(m, "POST")) return SRV_POST;
    return 0;
}

static const char *allow_text(unsigned mask) {
    switch (mask) {
    case SRV_GET: return "GET, HEAD";
    case SRV_POST: return "POST";
    default: return "GET, HEAD, POST";
    }
}

/* Find the route; returns its index, or -1 with *allowed the union of the
 * methods of routes whose pattern matched (0: no pattern matched). */
static int dispatch(srv_req *r, unsigned *allowed) {
    char *segs[32];
    int nseg = 0;
    *allowed = 0;
    char *s = r->segbuf + 1;
    if (*s) {
        for (;;) {
            if (nseg == 32) return -1;
            segs[nseg++] = s;
            char *e = strchr(s, '/');
            if (!e) break;
            *e = 0;
            s = e + 1;
        }
    }
    unsigned mb = method_bit(r->method);
    for (int i = 0; i < srv_n_routes; i++) {
        const char *param[SRV_MAX_PARAMS] = {0};
        if ((srv_routes[i].flags & SRV_R_ADMIN) && !r->ctx->cfg->admin_token) continue;
        if ((srv_routes[i].flags & SRV_R_TEST) && !r->ctx->cfg->test_hooks) continue;
        if (!route_match(srv_routes[i].pattern, segs, nseg, param)) continue;
        *allowed |= srv_routes[i].methods;
        if (srv_routes[i].methods & mb) {
            memcpy(r->param, param, sizeof param);
            return i;
        }
    }
    return -1;
}

/* ==== Multipart ==== */

/* Append size bytes to the request's body, growing it by doubling from
 * first_cap up to cfg->max_body, or to the length the client declared (the
 * callers check the limit first). Memory is taken from the budget as bytes
 * arrive, never for what a client only declares: headers that promise 8 MiB
 * and send nothing hold 0 bytes. Returns 0, -1 when out of memory, or -2 when
 * growing would pass cfg->body_budget (the body is left as it was either way). */
static int body_append(srv_req *r, const char *data, size_t size, size_t first_cap) {
    size_t max = r->declared ? r->declared : r->ctx->cfg->max_body;
    if (r->body_len + size > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : first_cap;
        while (cap < r->body_len + size) cap *= 2;
        if (cap > max) cap = max;
        if (cap < r->body_len + size) cap = r->body_len + size; /* more than declared: libmicrohttpd forbids it */
        if (body_reserve(r->ctx, cap - r->body_cap)) return -2;
        unsigned char *nb = realloc(r->body, cap);
        if (!nb) {
            body_unreserve(r->ctx, cap - r->body_cap);
            return -1;
        }
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, size);
    r->body_len += size;
    return 0;
}

/* Free the body buffered so far and return its memory to the budget. */
static void body_drop(srv_req *r) {
    body_unreserve(r->ctx, r->body_cap);
    free(r->body);
    r->body = NULL;
    r->body_len = r->body_cap = 0;
}

/* Why body_append failed, as the request's early error. */
static void body_refused(srv_req *r, int rc) {
    if (rc == -2) {
        srv_metrics_refused(r->ctx->metrics, SRV_REFUSED_BODY_BUDGET);
        early_error(r, CORE_E_UNAVAILABLE,
                    "the server holds as many request bodies as it may (--body-budget %zu bytes); retry shortly",
                    r->ctx->cfg->body_budget);
    } else {
        early_error(r, CORE_E_NOMEM, "out of memory reading the body");
    }
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                 const char *content_type, const char *transfer_encoding, const char *data,
                                 uint64_t off, size_t size) {
    srv_req *r = cls;
    (void)kind, (void)filename, (void)content_type, (void)transfer_encoding, (void)off;
    if (!key || strcmp(key, "image")) return MHD_YES;
    r->multipart_image = 1;
    if (!size) return MHD_YES;
    size_t max = r->ctx->cfg->max_body;
    if (r->body_len + size > max) {
        early_error(r, CORE_E_TOO_LARGE, "the image field is larger than the limit of %zu bytes", max);
        return MHD_NO;
    }
    int rc = body_append(r, data, size, 65536);
    if (rc) {
        body_refused(r, rc);
        return MHD_NO;
    }
    return MHD_YES;
}

static int is_multipart(const char *ct) {
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

/* ==== The request lifecycle ==== */

/* The client's X-Request-ID when it is 1..64 visible ASCII characters (no
 * quotes or backslashes: it goes into logs and headers as it is), else a new
 * one: 16 hex digits from a per-process random base and a counter. */
static void request_id(srv_ctx *ctx, struct MHD_Connection *conn, char *out, size_t len) {
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-ID");
    size_t n = v ? strlen(v) : 0;
    int ok = n >= 1 && n <= 64 && n < len;
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] > 0x20 && v[i] < 0x7f && v[i] != '"' && v[i] != '\\';
    if (ok) {
        memcpy(out, v, n + 1);
        return;
    }
    uint64_t k = atomic_fetch_add_explicit(&ctx->next_id, 1, memory_order_relaxed) + ctx->id_base;
    /* splitmix64: consecutive counters give unrelated-looking ids. */
    k += 0x9e3779b97f4a7c15ull;
    k = (k ^ (k >> 30)) * 0xbf58476d1ce4e5b9ull;
    k = (k ^ (k >> 27)) * 0x94d049bb133111ebull;
    k ^= k >> 31;
    snprintf(out, len, "%016llx", (unsigned long long)k);
}

static void req_free(srv_req *r) {
    if (!r) return;
    if (r->pp) MHD_destroy_post_processor(r->pp);
    resp_reset(&r->resp);
    body_drop(r);
    free(r->path);
    free(r->segbuf);
    free(r);
}

/* First callback of a request: headers are in, no body yet. Returns MHD_NO to
 * drop the connection (only on allocation failure). */
static enum MHD_Result req_begin(srv_ctx *ctx, struct MHD_Connection *conn, const char *url, const char *method,
                                 void **con_cls) {
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->resp.fd = -1;
    r->ctx = ctx;
    r->conn = conn;
    r->method = method;
    r->t_start = clock_now();
    r->route = SRV_ROUTE_UNMATCHED;
    const union MHD_ConnectionInfo *sci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->sc = sci ? sci->socket_context : NULL;
    request_id(ctx, conn, r->request_id, sizeof r->request_id);
    *con_cls = r;
    atomic_fetch_add_explicit(&ctx->in_flight, 1, memory_order_acq_rel);
    srv_metrics_in_flight(ctx->metrics, 1);

    size_t n = strlen(url);
    r->path = malloc(n + 2);
    r->segbuf = malloc(n + 2);
    if (!r->path || !r->segbuf) {
        early_error(r, CORE_E_NOMEM, "out of memory");
        return MHD_YES;
    }
    if (url[0] != '/') {
        r->path[0] = '/';
        memcpy(r->path + 1, url, n + 1);
    } else {
        memcpy(r->path, url, n + 1);
    }
    n = strlen(r->path);
    while (n > 1 && r->path[n - 1] == '/') r->path[--n] = 0;
    memcpy(r->segbuf, r->path, n + 1);
    if (!strncmp(r->path, "/v2", 3) && (r->path[3] == 0 || r->path[3] == '/')) r->flags |= SRV_R_V2;

    unsigned allowed;
    int idx = dispatch(r, &allowed);
    if (idx >= 0) {
        r->route = idx;
        r->flags = srv_routes[idx].flags | (r->flags & SRV_R_V2);
    } else if (allowed) {
        early_error(r, CORE_E_METHOD, "%s is not allowed on %s (allowed: %s)", method, r->path, allow_text(allowed));
        r->resp.allow = allow_text(allowed);
    } else if (method_bit(method) == SRV_GET && srv_route_fallback.match(ctx, r->path)) {
        r->route = SRV_ROUTE_STATIC;
    } else if (method_bit(method) != SRV_GET && srv_route_fallback.match(ctx, r->path)) {
        r->route = SRV_ROUTE_STATIC;
        early_error(r, CORE_E_METHOD, "%s is not allowed on %s (allowed: GET, HEAD)", method, r->path);
        r->resp.allow = "GET, HEAD";
    } else {
        early_error(r, CORE_E_NOT_FOUND, "no route %s %s", method, r->path);
    }

    if (r->sc && r->sc->over_ip)
        early_error(r, CORE_E_UNAVAILABLE, "too many connections from your address (--max-conn-per-ip %u)",
                    ctx->cfg->max_conn_per_ip);
    if ((r->flags & SRV_R_AUTH) && ctx->cfg->api_token && !srv_req_bearer_ok(r, ctx->cfg->api_token))
        early_error(r, CORE_E_UNAUTHORIZED, "%s",
                    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization")
                        ? "wrong bearer token"
                        : "this route needs Authorization: Bearer <token> (the server has an API token)");

    /* The body limit, up front when the client says the size. */
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long clen = 0;
    if (cl) {
        char *end;
        errno = 0;
        clen = strtoull(cl, &end, 10);
        if (errno || end == cl) clen = ~0ull;
        if (clen > ctx->cfg->max_body)
            early_error(r, CORE_E_TOO_LARGE, "the body (%s bytes) is larger than the limit of %zu bytes", cl,
                        ctx->cfg->max_body);
    }
    if (r->early_err || !(r->flags & SRV_R_BODY)) return MHD_YES;

    r->content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if ((r->flags & SRV_R_IMAGE) && is_multipart(r->content_type)) {
        r->pp = MHD_create_post_processor(conn, 16384, post_iter, r);
        if (!r->pp) early_error(r, CORE_E_BAD_REQUEST, "the multipart/form-data header has no usable boundary");
    } else if (clen > 0 && clen <= ctx->cfg->max_body) {
        r->declared = (size_t)clen; /* allocated as it arrives (body_append) */
    }
    return MHD_YES;
}

/* A chunk of body. Returns MHD_NO to cut the connection (an endless over-limit body). */
static enum MHD_Result req_body(srv_req *r, const char *data, size_t size) {
    if (r->early_err || !(r->flags & SRV_R_BODY)) {
        r->discarded += size;
        return r->discarded > SRV_DISCARD_LIMIT ? MHD_NO : MHD_YES;
    }
    if (r->pp) {
        if (MHD_post_process(r->pp, data, size) != MHD_YES)
            early_error(r, CORE_E_BAD_REQUEST, "malformed multipart/form-data body");
    } else if (r->body_len + size > r->ctx->cfg->max_body) {
        early_error(r, CORE_E_TOO_LARGE, "the body is larger than the limit of %zu bytes", r->ctx->cfg->max_body);
        r->discarded += size;
    } else {
        size_t first = r->declared ? (r->declared < 65536 ? r->declared : 65536) : 16384;
        int rc = body_append(r, data, size, first);
        if (rc) body_refused(r, rc);
    }
    /* Refused while its body comes in: what was kept is of no use now, and
     * the rest is read and dropped, so give the memory back at once. */
    if (r->early_err) body_drop(r);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    srv_ctx *ctx = cls;
    (void)version;
    srv_req *r = *con_cls;
    if (!r) {
        if (req_begin(ctx, conn, url, method, con_cls) != MHD_YES) return MHD_NO;
        r = *con_cls;
        /* Refuse before the body: libmicrohttpd then skips it and closes the connection. */
        if (r->early_err && (r->early_kind == CORE_E_TOO_LARGE || r->early_kind == CORE_E_NOMEM ||
                             r->early_kind == CORE_E_UNAVAILABLE || r->early_kind == CORE_E_UNAUTHORIZED)) {
            reply_early(r);
            return queue(r);
        }
        if (!strcmp(method, "OPTIONS")) {
            /* CORS preflight, or a client asking what the server allows. */
            resp_reset(&r->resp);
            r->resp.status = 204;
            r->resp.preflight = 1;
            r->resp.set = 1;
            return queue(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        enum MHD_Result ok = req_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return ok;
    }
    if (r->status) return MHD_YES; /* already answered */
    conn_wait_daemon(r->sc); /* the request is in */
    if (r->deferred)  /* called again after srv_req_resume, or spuriously before */
        return atomic_load_explicit(&r->deferred_done, memory_order_acquire) ? queue(r) : MHD_YES;
    if (r->pp) {
        MHD_destroy_post_processor(r->pp);
        r->pp = NULL;
        if (!r->early_err && !r->multipart_image)
            early_error(r, CORE_E_BAD_REQUEST, "the multipart/form-data body has no field named 'image'");
    }
    if (r->early_err) {
        const char *allow = r->resp.allow;
        reply_early(r);
        r->resp.allow = allow;
    } else if (r->route == SRV_ROUTE_STATIC) {
        srv_route_fallback.fn(r);
    } else {
        srv_routes[r->route].fn(r);
        if (r->deferred) return MHD_YES;
    }
    return queue(r);
}

/* One access-log line. Method, path, model and request id come from the
 * client: escaped, so that no byte of theirs ends the line or forges another
 * (GET /a%0aFAKE logged a line of its own). */
static void access_log(const srv_req *r, double secs, int aborted) {
    char method[64], path[1024], model[256], id[256];
    void (*esc)(const char *, char *, size_t) = log_is_json() ? log_escape_json : log_escape_text;
    esc(r->method ? r->method : "?", method, sizeof method);
    esc(r->path ? r->path : "?", path, sizeof path);
    esc(r->model[0] ? r->model : "-", model, sizeof model);
    esc(r->request_id, id, sizeof id);
    if (log_is_json())
        log_json("\"method\":\"%s\",\"path\":\"%s\",\"status\":%u,\"bytes\":%llu,\"ms\":%.3f,\"model\":\"%s\","
                 "\"id\":\"%s\",\"aborted\":%s",
                 method, path, r->status, (unsigned long long)r->bytes, secs * 1e3, model, id,
                 aborted ? "true" : "false");
    else
        log_line("%s %s %u %lluB %.3fms %s id=%s%s", method, path, r->status, (unsigned long long)r->bytes,
                 secs * 1e3, model, id, aborted ? " (aborted)" : "");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    srv_ctx *ctx = cls;
    srv_req *r = *con_cls;
    (void)conn;
    if (!r) return;
    *con_cls = NULL;
    double secs = clock_now() - r->t_start;
    /* An answer that could not go out (the client left) still counts under its status. */
    if (!r->status && r->resp.set) r->status = r->resp.status;
    srv_metrics_request(ctx->metrics, r->route, r->status, secs);
    if (ctx->cfg->access_log) access_log(r, secs, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
    srv_metrics_in_flight(ctx->metrics, -1);
    conn_wait_client(ctx, r->sc); /* a keep-alive connection's next request */
    req_free(r);
    atomic_fetch_sub_explicit(&ctx->in_flight, 1, memory_order_acq_rel);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    log_line("libmicrohttpd: %s", msg);
}

/* ==== Daemon ==== */

/* Start n daemons on one port (the first picks it when cfg->port is 0), each
 * with pool_threads threads. Returns 0, or -1 with none left running. */
static int start_daemons(srv_ctx *ctx, unsigned flags, struct sockaddr *addr, unsigned n,
                         unsigned pool_threads, unsigned port) {
    const srv_config *cfg = ctx->cfg;
    for (unsigned i = 0; i < n; i++) {
        if (addr && addr->sa_family == AF_INET) ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
        if (addr && addr->sa_family == AF_INET6) ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
        struct MHD_OptionItem opts[16];
        int k = 0;
        unsigned conns = (cfg->max_connections + n - 1) / n;
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->conn_timeout, NULL};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)cfg->conn_memory, NULL};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)conns, NULL};
        /* On Linux this is SO_REUSEPORT, which also lets the listeners share the port. */
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
        if (pool_threads > 1)
            opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)pool_threads, NULL};
        if (addr) opts[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, addr};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, ctx};
        if (ctx->tls_cert) {
            opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, ctx->tls_cert};
            opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, ctx->tls_key};
            /* GnuTLS's defaults, less TLS 1.0 and 1.1 whatever the system's policy allows. */
            opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                                (void *)"NORMAL:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-SSL3.0"};
        }
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
        struct MHD_Daemon *d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, ctx,
                                                MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
                                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, ctx,
                                                MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (!d) {
            for (int j = 0; j < ctx->n_daemons; j++) MHD_stop_daemon(ctx->daemons[j]);
            ctx->n_daemons = 0;
            return -1;
        }
        ctx->daemons[ctx->n_daemons++] = d;
        if (i == 0) {
            const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
            port = info && info->port ? info->port : port;
        }
    }
    ctx->port = port;
    return 0;
}

/* The listeners share their port through SO_REUSEPORT, which would also let
 * another process (a second `loupe serve`, or another daemon given port 0 by
 * the kernel) bind the same port and take half the connections. So the port
 * is first bound by a plain socket: -1 when something listens there already;
 * else *out is the port (the kernel's choice for 0), free when it returns. */
static int probe_port(const struct sockaddr *addr, unsigned port, unsigned *out) {
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (addr && addr->sa_family == AF_INET6) {
        memcpy(&ss, addr, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        len = sizeof(struct sockaddr_in6);
    } else {
        if (addr) memcpy(&ss, addr, sizeof(struct sockaddr_in));
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        if (!addr) a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = htons((uint16_t)port);
        len = sizeof(struct sockaddr_in);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    /* SO_REUSEADDR: a port left in TIME_WAIT is free; a listening one is not. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (struct sockaddr *)&ss, len);
    if (!rc && !getsockname(fd, (struct sockaddr *)&ss, &len))
        *out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    close(fd);
    return rc ? -1 : 0;
}

/* The whole of a PEM file of at most 1 MiB, NUL-terminated, malloc'd; NULL with the reason in err. */
static char *read_pem(const char *flag, const char *path, char *err, size_t errlen) {
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        snprintf(err, errlen, "cannot read %s %s: %s", flag, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (1 << 20)) {
        snprintf(err, errlen, "cannot read %s %s: not a regular file of at most 1 MiB", flag, path);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    if (buf) buf[got] = 0;
    if (!buf || got != (size_t)st.st_size || !strstr(buf, "-----BEGIN ")) {
        snprintf(err, errlen, "cannot read %s %s: %s", flag, path,
                 !buf ? "out of memory" : got != (size_t)st.st_size ? "it changed while being read" : "not a PEM file");
        free(buf);
        buf = NULL;
    }
out:
    if (fd >= 0) close(fd);
    return buf;
}

/* The two lanes of work behind the connection threads (srv_http.h). */
static int start_lanes(srv_ctx *ctx) {
    const srv_config *cfg = ctx->cfg;
    core_queue_hooks hooks = {NULL, srv_metrics_lane_depth, srv_metrics_lane_wait, srv_metrics_lane_rejected};
    core_queue_params main = {"main", (int)cfg->workers, (int)cfg->queue, (int)cfg->max_batch,
                              cfg->batch_delay_us / 1e6, cfg->queue_timeout_ms / 1e3, 0, hooks};
    /* Heavy work yields the CPU to the cheap requests and the connection threads. */
    core_queue_params heavy = {"heavy", (int)cfg->expensive_concurrency, (int)cfg->expensive_queue, 1, 0,
                               cfg->queue_timeout_ms / 1e3, 10, hooks};
    main.hooks.ctx = srv_metrics_lane(ctx->metrics, "main");
    heavy.hooks.ctx = srv_metrics_lane(ctx->metrics, "heavy");
    /* The test set is read on its first request, on a lane. */
    ctx->samples = core_samples_new(cfg->samples_dir);
    ctx->lane_main = ctx->samples ? core_queue_new(&main) : NULL;
    ctx->lane_heavy = ctx->lane_main ? core_queue_new(&heavy) : NULL;
    if (ctx->lane_heavy) return 0;
    core_queue_free(ctx->lane_main);
    ctx->lane_main = NULL;
    core_samples_free(ctx->samples);
    ctx->samples = NULL;
    return -1;
}

/* Answer what is queued as cancelled, finish what runs, join the workers.
 * The lanes stay allocated: connection threads may still reach them (and be
 * refused with 503) until the daemons stop. */
static void stop_lanes(srv_ctx *ctx) {
    /* Let held test jobs go, or the workers would never join. */
    pthread_mutex_lock(&ctx->test_lock);
    ctx->test_closed = 1;
    pthread_cond_broadcast(&ctx->test_cond);
    pthread_mutex_unlock(&ctx->test_lock);
    core_queue_stop(ctx->lane_main);
    core_queue_stop(ctx->lane_heavy);
}

static void free_tls(srv_ctx *ctx) {
    free(ctx->tls_cert);
    if (ctx->tls_key) explicit_bzero(ctx->tls_key, strlen(ctx->tls_key)); /* no private key left in freed memory */
    free(ctx->tls_key);
    ctx->tls_cert = ctx->tls_key = NULL;
}

/* Once no connection thread is left. */
static void free_lanes(srv_ctx *ctx) {
    core_queue_free(ctx->lane_main);
    core_queue_free(ctx->lane_heavy);
    ctx->lane_main = ctx->lane_heavy = NULL;
    core_samples_free(ctx->samples);
    ctx->samples = NULL;
}

int srv_http_start(srv_ctx *ctx, char *err, size_t errlen) {
    const srv_config *cfg = ctx->cfg;
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    struct sockaddr *addr = NULL;
    /* poll(), not MHD_USE_AUTO's epoll: libmicrohttpd 0.9.75's edge-triggered epoll misses a
     * client's close that arrives with its last data (a client hanging up mid-body), and holds
     * the connection until --timeout; enough such clients take every connection. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    if (cfg->host && *cfg->host) {
        memset(&a4, 0, sizeof a4);
        memset(&a6, 0, sizeof a6);
        if (inet_pton(AF_INET, cfg->host, &a4.sin_addr) == 1) {
            a4.sin_family = AF_INET;
            a4.sin_port = htons((uint16_t)cfg->port);
            addr = (struct sockaddr *)&a4;
        } else if (inet_pton(AF_INET6, cfg->host, &a6.sin6_addr) == 1) {
            a6.sin6_family = AF_INET6;
            a6.sin6_port = htons((uint16_t)cfg->port);
            addr = (struct sockaddr *)&a6;
            flags |= MHD_USE_IPv6;
        } else {
            snprintf(err, errlen, "--host %s is not a numeric IPv4 or IPv6 address", cfg->host);
            return -1;
        }
    }
    ctx->id_base = (uint64_t)getpid() << 32 ^ (uint64_t)(clock_now() * 1e9);
    if (cfg->tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "--tls-cert: this libmicrohttpd was built without TLS");
            return -1;
        }
        if (!(ctx->tls_cert = read_pem("--tls-cert", cfg->tls_cert, err, errlen)) ||
            !(ctx->tls_key = read_pem("--tls-key", cfg->tls_key, err, errlen))) {
            free_tls(ctx);
            return -1;
        }
        flags |= MHD_USE_TLS;
    }
    if (start_lanes(ctx)) {
        free_tls(ctx);
        snprintf(err, errlen, "cannot start the worker threads (out of memory or threads)");
        return -1;
    }
    /* One listener per request thread when the kernel balances SO_REUSEPORT
     * sockets: a shared listening socket lets whichever pool thread wakes first
     * take each connection, which can leave one thread with most of them. */
    unsigned listeners = cfg->threads < SRV_MAX_LISTENERS ? cfg->threads : SRV_MAX_LISTENERS;
    unsigned port = cfg->port;
    if (probe_port(addr, cfg->port, &port)) {
        if (cfg->port)
            snprintf(err, errlen, "port %u is in use on %s (another server listens there)", cfg->port,
                     cfg->host && *cfg->host ? cfg->host : "*");
        else
            snprintf(err, errlen, "no free port on %s", cfg->host && *cfg->host ? cfg->host : "*");
        stop_lanes(ctx);
        free_lanes(ctx);
        free_tls(ctx);
        return -1;
    }
    if (start_reaper(ctx)) {
        snprintf(err, errlen, "cannot start the connection reaper thread");
        stop_lanes(ctx);
        free_lanes(ctx);
        free_tls(ctx);
        return -1;
    }
    if (start_daemons(ctx, flags, addr, listeners, 1, port) == 0) return 0;
    if (listeners > 1 && start_daemons(ctx, flags, addr, 1, cfg->threads, port) == 0) return 0;
    snprintf(err, errlen, "cannot listen on %s:%u (port in use, %s)", cfg->host && *cfg->host ? cfg->host : "*",
             cfg->port, ctx->tls_cert ? "or a certificate and key that do not match" : "or a bad option");
    stop_reaper(ctx);
    stop_lanes(ctx);
    free_lanes(ctx);
    free_tls(ctx);
    return -1;
}

void srv_http_quiesce(srv_ctx *ctx) {
    for (int i = 0; i < ctx->n_daemons; i++) {
        MHD_socket s = MHD_quiesce_daemon(ctx->daemons[i]);
        if (s != MHD_INVALID_SOCKET) close(s);
    }
}

void srv_http_stop(srv_ctx *ctx) {
    /* libmicrohttpd must not stop with a suspended connection: finish (or
     * cancel) the lanes' jobs first, then let the resumed ones go out. */
    stop_lanes(ctx);
    double end = clock_now() + 2;
    while (ctx->n_daemons && atomic_load(&ctx->in_flight) > 0 && clock_now() < end) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < ctx->n_daemons; i++) MHD_stop_daemon(ctx->daemons[i]);
    ctx->n_daemons = 0;
    stop_reaper(ctx);
    free_lanes(ctx);
    free_tls(ctx);
}
