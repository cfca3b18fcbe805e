/* srv_static.c -- static files: validated segments, then realpath must stay under the folder's realpath. */
#include "srv_static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {".html", "text/html; charset=utf-8"},  {".htm", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"}, {".json", "application/json"},
    {".map", "application/json"},           {".png", "image/png"},
    {".jpg", "image/jpeg"},                 {".jpeg", "image/jpeg"},
    {".gif", "image/gif"},                  {".svg", "image/svg+xml"},
    {".ico", "image/x-icon"},               {".webp", "image/webp"},
    {".wasm", "application/wasm"},          {".txt", "text/plain; charset=utf-8"},
    {".md", "text/markdown; charset=utf-8"}, {".woff2", "font/woff2"},
    {".yaml", "application/yaml"},          {".yml", "application/yaml"},
};

const char *srv_static_content_type(const char *path) {
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++)
            if (!strcasecmp(dot, content_types[i].ext)) return content_types[i].type;
    return "application/octet-stream";
}

/* Every segment non-empty, not starting with '.', free of backslashes. */
static int safe_relpath(const char *rel) {
    if (!*rel) return 0;
    const char *s = rel;
    for (;;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || s[0] == '.' || memchr(s, '\\', n)) return 0;
        if (!e) return 1;
        s = e + 1;
    }
}

int srv_static_resolve(const srv_ctx *ctx, const char *path, char *out, size_t outlen, struct stat *st_out) {
    const char *root = ctx->static_root, *rel = path;
    if (!strncmp(path, "/docs/", 6)) {
        root = ctx->docs_root;
        rel = path + 6;
    } else {
        rel = path + (path[0] == '/');
    }
    if (!root[0] || !safe_relpath(rel)) return -1;
    size_t rl = strlen(root), ll = strlen(rel);
    if (rl + 1 + ll >= PATH_MAX) return -1;
    char joined[PATH_MAX], real[PATH_MAX];
    memcpy(joined, root, rl);
    joined[rl] = '/';
    memcpy(joined + rl + 1, rel, ll + 1);
    if (!realpath(joined, real)) return -1;
    /* The real path must be the root plus "/..." (root itself is a folder anyway). */
    if (strncmp(real, root, rl) || real[rl] != '/') return -1;
    struct stat st;
    if (stat(real, &st) || !S_ISREG(st.st_mode)) return -1;
    if (st_out) *st_out = st;
    if (out) {
        if (strlen(real) >= outlen) return -1;
        strcpy(out, real);
    }
    return 0;
}

int srv_open_resolved(const char *real, const struct stat *seen, struct stat *st) {
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return -1;
    /* Between the resolution and the open, the file (or a folder above it) may
     * have been replaced; only the one that was checked is served. */
    if (fstat(fd, st) || !S_ISREG(st->st_mode) || st->st_dev != seen->st_dev || st->st_ino != seen->st_ino) {
        close(fd);
        errno = ENOENT;
        return -1;
    }
    /* Reads of a regular file never block; sendfile wants a plain descriptor. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

void srv_static_serve(srv_req *r) {
    char real[PATH_MAX];
    struct stat seen, st;
    int fd = -1;
    int found = !srv_static_resolve(r->ctx, r->path, real, sizeof real, &seen);
    unsigned delay = r->ctx->cfg->test_open_delay_ms;
    if (found && delay) {
        /* Tests only: widen the window in which a file can be swapped after its check. */
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    if (!found || (fd = srv_open_resolved(real, &seen, &st)) < 0) {
        srv_reply_error(r, CORE_E_NOT_FOUND, "no route or file %s", r->path);
        return;
    }
    srv_reply_fd(r, srv_static_content_type(real), fd, (uint64_t)st.st_size);
}
