/* fuzz_paths.c -- libFuzzer target: static file and report path resolution (srv_static.c, srv_reports.c).
 *
 * The handlers run on a request built in memory (no connection: they only
 * read the path or the route's {...} segments and fill the response) over a
 * tree made once in a temporary folder: static/, docs/ and reports/ with
 * symlinks inside them, out of them (to outside/, whose files say LEAKED),
 * up through ../, in loops, and a FIFO. Input: byte 0 picks the route, the
 * rest is what the client controls, as libmicrohttpd hands it over (decoded;
 * a NUL ends it):
 *   0: GET <path> of the static fallback (srv_static_serve), /docs/... too;
 *   1: GET /v1/reports/{name} (srv_h_report);
 *   2: GET /v1/reports/{name}/figures/{file} (srv_h_report_figure), name
 *      and file separated by '\n'.
 * Oracle: any file served must be a regular file whose real path is inside
 * its folder, and no successful answer may carry a byte of outside/. */
#include "fuzz_common.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "srv_reports.h"
#include "srv_static.h"

static srv_config g_cfg;
static srv_ctx g_ctx;
static char g_root[PATH_MAX], g_reports[PATH_MAX + 16];

static void mk(const char *rel, const char *text) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", g_root, rel);
    if (!text) {
        mkdir(p, 0755);
        return;
    }
    if (fuzz_write_file(g_root, rel, text, strlen(text))) {
        perror(p);
        exit(1);
    }
}

static void ln(const char *target, const char *rel) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", g_root, rel);
    if (symlink(target, p)) {
        perror(p);
        exit(1);
    }
}

static void setup(void) {
    snprintf(g_root, sizeof g_root, "%s", fuzz_tmpdir("paths"));
    char real[PATH_MAX];
    if (!realpath(g_root, real)) exit(1);
    snprintf(g_root, sizeof g_root, "%s", real);
    const char *dirs[] = {"static", "static/sub", "static/.hidden", "docs", "docs/guide", "reports", "reports/r1",
                          "reports/r1/figures", "reports/r2", "reports/r3", "outside", "outside/rep",
                          "outside/figs"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) mk(dirs[i], NULL);
    mk("static/index.html", "<p>index</p>");
    mk("static/app.js", "let x = 1;");
    mk("static/sub/page.html", "page");
    mk("static/.hidden/x.html", "hidden");
    mk("docs/api.md", "# api");
    mk("docs/guide/a.md", "guide");
    mk("reports/r1/report.json", "{\"date\": \"2026-11-30\", \"figures\": [\"a.png\", \"link_out.png\"]}");
    mk("reports/r1/report.md", "# report");
    mk("reports/r1/figures/a.png", "PNG");
    mk("outside/secret.html", "LEAKED");
    mk("outside/secret.png", "LEAKED");
    mk("outside/rep/report.json", "{\"LEAKED\": 1}");
    mk("outside/rep/report.md", "LEAKED");
    mk("outside/figs/a.png", "LEAKED");
    ln("index.html", "static/link_in");
    ln("../outside/secret.html", "static/link_out");
    ln("../../outside/secret.html", "static/sub/link_up");
    ln("link_loop", "static/link_loop");
    ln("../outside", "static/out_dir");
    ln("../outside/secret.html", "docs/link_out.md");
    ln("../../../outside/secret.png", "reports/r1/figures/link_out.png");
    ln("../outside/rep", "reports/evil");
    ln("../../outside/rep/report.json", "reports/r2/report.json");
    ln("../../outside/rep/report.md", "reports/r1/report2.md");
    ln("../../outside/figs", "reports/r3/figures");
    mk("reports/r3/report.json", "{}");
    char fifo[PATH_MAX + 32];
    snprintf(fifo, sizeof fifo, "%s/static/pipe.html", g_root);
    mkfifo(fifo, 0644);
    snprintf(g_ctx.static_root, sizeof g_ctx.static_root, "%s/static", g_root);
    snprintf(g_ctx.docs_root, sizeof g_ctx.docs_root, "%s/docs", g_root);
    snprintf(g_reports, sizeof g_reports, "%s/reports", g_root);
    g_cfg.reports_dir = g_reports;
    g_ctx.cfg = &g_cfg;
}

/* 1 when dir/ is a prefix of path. */
static int inside(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && path[n] == '/';
}

/* The response's file must be a regular file inside root; no body may quote outside/. */
static void check(const srv_req *r, const char *root) {
    if (r->resp.fd >= 0) {
        char link[64], real[PATH_MAX];
        struct stat st;
        snprintf(link, sizeof link, "/proc/self/fd/%d", r->resp.fd);
        ssize_t n = readlink(link, real, sizeof real - 1);
        if (n < 0) __builtin_trap();
        real[n] = 0;
        if (!inside(real, root) || fstat(r->resp.fd, &st) || !S_ISREG(st.st_mode)) __builtin_trap();
        char buf[16] = "";
        ssize_t k = pread(r->resp.fd, buf, sizeof buf - 1, 0);
        if (k > 0 && strstr(buf, "LEAKED")) __builtin_trap();
    }
    /* Error messages quote what the client sent, which may say LEAKED too. */
    if (r->resp.status == 200 && r->resp.body && memmem(r->resp.body, r->resp.len, "LEAKED", 6)) __builtin_trap();
    if (!r->resp.set) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ctx.cfg) setup();
    if (!size) return 0;
    int route = data[0] % 3;
    /* What the client controls, up to a NUL, with room for a leading '/'. */
    char *s = malloc(size + 2);
    if (!s) return 0;
    memcpy(s + 1, data + 1, size - 1);
    s[size] = 0;
    srv_req r;
    memset(&r, 0, sizeof r);
    r.ctx = &g_ctx;
    r.method = "GET";
    r.resp.fd = -1;
    const char *root;
    if (route == 0) {
        /* As req_begin makes it: a leading '/', no trailing ones. */
        char *p = s + 1;
        if (*p != '/') *--p = '/';
        size_t n = strlen(p);
        while (n > 1 && p[n - 1] == '/') p[--n] = 0;
        r.path = p;
        root = !strncmp(p, "/docs/", 6) ? g_ctx.docs_root : g_ctx.static_root;
        srv_static_serve(&r);
    } else {
        /* The route's segments: split at '/', so neither holds one. */
        char *name = s + 1, *file = strchr(name, '\n');
        if (file) *file++ = 0;
        name[strcspn(name, "/")] = 0;
        if (file) file[strcspn(file, "/\n")] = 0;
        r.path = (char *)"/v1/reports";
        r.param[0] = name;
        r.param[1] = file ? file : "";
        root = g_reports;
        if (route == 1) srv_h_report(&r);
        else srv_h_report_figure(&r);
    }
    check(&r, root);
    free(r.resp.body);
    if (r.resp.fd >= 0) close(r.resp.fd);
    free(s);
    return 0;
}
