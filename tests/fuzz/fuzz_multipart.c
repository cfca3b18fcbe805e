/* fuzz_multipart.c -- libFuzzer target: multipart/form-data uploads, through libmicrohttpd's post processor.
 *
 * Input: the first line is the Content-Type header's value (the boundary
 * and its parameters are the client's), the rest is the body. The daemon
 * parses multipart with MHD_PostProcessor, which only exists on a live
 * connection, so this target runs libmicrohttpd in-process without a
 * listening socket or threads: each input becomes one POST on a socketpair
 * (MHD_add_connection), driven by MHD_run until the request completes. The
 * handler does what server/srv_http.c does for an image route (a post
 * processor of 16 KiB; only the `image` field kept, bounded by the body
 * limit; a refusal on a malformed body), then hands the field's bytes to
 * core_input_pixels and core_input_from_body as the daemon's worker does. */
#include "fuzz_common.h"
#include "fuzz_model.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core_input.h"

#define MAX_BODY (1u << 20) /* the image field's limit here (the daemon's --max-body) */

typedef struct {
    struct MHD_PostProcessor *pp;
    unsigned char *field; /* the `image` field's bytes */
    size_t len;
    int seen, bad;
} upload;

static struct MHD_Daemon *g_daemon;
static int g_done;

/* The post processor's callback: what srv_http.c's post_iter keeps. */
static enum MHD_Result field_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                  const char *content_type, const char *transfer_encoding, const char *data,
                                  uint64_t off, size_t size) {
    upload *u = cls;
    (void)kind, (void)filename, (void)content_type, (void)transfer_encoding, (void)off;
    if (!key || strcmp(key, "image")) return MHD_YES;
    u->seen = 1;
    if (!size) return MHD_YES;
    if (u->len + size > MAX_BODY) return MHD_NO;
    unsigned char *nb = realloc(u->field, u->len + size);
    if (!nb) return MHD_NO;
    memcpy(nb + u->len, data, size);
    u->field = nb;
    u->len += size;
    return MHD_YES;
}

static enum MHD_Result answer(struct MHD_Connection *conn, unsigned status) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    upload *u = *con_cls;
    (void)cls, (void)url, (void)method, (void)version;
    if (!u) {
        if (!(u = calloc(1, sizeof *u))) return MHD_NO;
        *con_cls = u;
        u->pp = MHD_create_post_processor(conn, 16384, field_iter, u);
        if (!u->pp) u->bad = 1; /* no usable boundary: 400 once the body is in */
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!u->bad && MHD_post_process(u->pp, upload_data, *upload_data_size) != MHD_YES) u->bad = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (u->pp) {
        MHD_destroy_post_processor(u->pp);
        u->pp = NULL;
    }
    if (u->bad || !u->seen) return answer(conn, 400);
    core_model m;
    fuzz_model_init(&m, 0);
    img_limits lim = img_default_limits();
    lim.max_pixels = 4u * 1000u * 1000u;
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    (void)core_input_pixels(ct, 1, u->field, u->len);
    core_input in;
    core_fail f;
    if (u->len && !core_input_from_body(&m, &lim, ct, 1, u->field, u->len, IMG_INVERT_AUTO, &in, &f))
        core_input_free(&in);
    return answer(conn, 200);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    upload *u = *con_cls;
    (void)cls, (void)conn, (void)toe;
    if (u) {
        if (u->pp) MHD_destroy_post_processor(u->pp);
        free(u->field);
        free(u);
        *con_cls = NULL;
    }
    g_done = 1;
}

static unsigned connections(void) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i ? i->num_connections : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_daemon) {
        g_daemon = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, on_request, NULL,
                                    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_END);
        if (!g_daemon) {
            fprintf(stderr, "MHD_start_daemon failed\n");
            exit(1);
        }
    }
    if (size > 60000) return 0; /* the whole request must fit the socket's buffer */
    char *ct = fuzz_take_line(&data, &size);
    if (!ct) return 0;
    ct[strcspn(ct, "\r")] = 0;
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\nContent-Type: %.900s\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      ct, size);
    free(ct);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 0;
    int big = 1 << 18;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    if (write(sv[1], head, (size_t)hn) != hn || (size && write(sv[1], data, size) != (ssize_t)size)) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    struct sockaddr_in peer = {0};
    peer.sin_family = AF_INET;
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_done = 0;
    if (MHD_add_connection(g_daemon, sv[0], (struct sockaddr *)&peer, sizeof peer) != MHD_YES) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    char sink[4096];
    for (int i = 0; i < 1000 && !g_done; i++) {
        MHD_run(g_daemon);
        while (read(sv[1], sink, sizeof sink) > 0) {}
    }
    /* Hang up; libmicrohttpd closes its end on the next runs. */
    close(sv[1]);
    for (int i = 0; i < 1000 && connections(); i++) MHD_run(g_daemon);
    return 0;
}
