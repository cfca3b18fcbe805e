/* srv_reports.c -- the reports routes: names validated at the edge, then every real path must stay under the reports folder's. */
#include "srv_reports.h"
#include "srv_static.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPORT_FILE_MAX (16u << 20) /* bytes: the largest report.json or report.md read */
#define REPORTS_MAX 4096            /* folders looked at by one listing */
#define SHOWN_MAX 80                /* characters of a bad name echoed in an error message */

/* ==== Names and paths ==== */

int srv_reports_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 255 || s[0] == '.' || strstr(s, "..")) return 0;
    for (; *s; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '-';
        if (!ok) return 0;
    }
    return 1;
}

static int is_png_name(const char *s) {
    size_t n = strlen(s);
    return srv_reports_name_ok(s) && n > 4 && !strcmp(s + n - 4, ".png");
}

/* A copy of s fit for an error message: printable ASCII only (the message must
 * be valid UTF-8 for Jansson), at most SHOWN_MAX characters. */
static const char *shown(const char *s, char *buf, size_t len) {
    size_t i = 0;
    for (; s[i] && i + 1 < len && i < SHOWN_MAX; i++) buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    buf[i] = 0;
    return buf;
}

/* The real path of --reports into root (PATH_MAX bytes); -1 when it is not a folder.
 * Resolved per request, so a reports folder made after start-up is served. */
static int reports_root(const srv_ctx *ctx, char *root) {
    const char *dir = ctx->cfg->reports_dir;
    struct stat st;
    if (!dir || !*dir || !realpath(dir, root)) return -1;
    return stat(root, &st) || !S_ISDIR(st.st_mode) ? -1 : 0;
}

/* root/name/file, or root/name/sub/file, resolved with symlinks followed into out
 * (PATH_MAX bytes), its stat in *st. Returns 0 when that is a regular file whose
 * real path lies under root, else -1. The components must have passed srv_reports_name_ok.
 * Open the result with srv_open_resolved(out, st, ...): only that file. */
static int resolve(const char *root, const char *name, const char *sub, const char *file, char *out,
                   struct stat *st) {
    char joined[PATH_MAX];
    int n = sub ? snprintf(joined, sizeof joined, "%s/%s/%s/%s", root, name, sub, file)
                : snprintf(joined, sizeof joined, "%s/%s/%s", root, name, file);
    if (n < 0 || (size_t)n >= sizeof joined || !realpath(joined, out)) return -1;
    size_t rl = strlen(root);
    if (strncmp(out, root, rl) || (rl > 1 && out[rl] != '/')) return -1;
    return stat(out, st) || !S_ISREG(st->st_mode) ? -1 : 0;
}

/* The whole of the regular file resolve found (path, seen) if it has at most
 * max bytes, NUL-terminated, in a malloc'd buffer the caller frees; its length
 * in *len. NULL with the reason in err. */
static char *read_small_file(const char *path, const struct stat *seen, size_t max, size_t *len, char *err,
                             size_t errlen) {
    char *buf = NULL;
    struct stat st;
    int fd = srv_open_resolved(path, seen, &st);
    if (fd < 0) {
        snprintf(err, errlen, "%s", errno == ENOENT ? "replaced while being opened" : strerror(errno));
        return NULL;
    }
    if ((unsigned long long)st.st_size > max) {
        snprintf(err, errlen, "larger than %zu bytes", max);
        goto fail;
    }
    size_t want = (size_t)st.st_size, got = 0;
    buf = malloc(want + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    while (got < want) {
        ssize_t k = read(fd, buf + got, want - got);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            goto fail;
        }
        if (k == 0) break; /* the file shrank since fstat: what is there */
        got += (size_t)k;
    }
    close(fd);
    buf[got] = 0;
    *len = got;
    return buf;
fail:
    free(buf);
    close(fd);
    return NULL;
}

/* The parsed report.json of report name (a new reference), or NULL with
 * *missing = 1 when the report has none, *missing = 0 and the reason in err
 * when it is unreadable or not a JSON object. */
static json_t *load_report(const char *root, const char *name, int *missing, char *err, size_t errlen) {
    char path[PATH_MAX];
    struct stat seen;
    *missing = 0;
    if (resolve(root, name, NULL, "report.json", path, &seen)) {
        *missing = 1;
        snprintf(err, errlen, "no report.json");
        return NULL;
    }
    size_t len;
    char why[128];
    char *text = read_small_file(path, &seen, REPORT_FILE_MAX, &len, why, sizeof why);
    if (!text) {
        snprintf(err, errlen, "report.json: %s", why);
        return NULL;
    }
    json_error_t je;
    json_t *doc = json_loadb(text, len, 0, &je);
    free(text);
    if (!doc) {
        snprintf(err, errlen, "report.json: line %d: %s", je.line, je.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        snprintf(err, errlen, "report.json is not a JSON object");
        return NULL;
    }
    return doc;
}

/* ==== Handlers ==== */

/* The listing's entry of one report: the figures report.json names that exist. */
static json_t *summary(const char *root, const char *name, json_t *rep) {
    json_t *figs = json_array();
    if (!figs) return NULL;
    size_t i;
    json_t *v;
    char path[PATH_MAX];
    struct stat seen;
    json_array_foreach(json_object_get(rep, "figures"), i, v) {
        const char *f = json_string_value(v);
        if (f && is_png_name(f) && !resolve(root, name, "figures", f, path, &seen) && json_array_append(figs, v)) {
            json_decref(figs);
            return NULL;
        }
    }
    return json_pack("{s:s, s:O?, s:O?, s:b, s:o}", "name", name, "date", json_object_get(rep, "date"), "commit",
                     json_object_get(rep, "commit"), "quick", json_is_true(json_object_get(rep, "quick")),
                     "figures", figs);
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void srv_h_reports(srv_req *r) {
    char root[PATH_MAX];
    json_t *list = json_array(), *skipped = json_array();
    char **names = NULL;
    size_t n = 0;
    if (!list || !skipped) goto nomem;
    DIR *d = reports_root(r->ctx, root) ? NULL : opendir(root);
    if (d) {
        names = malloc(REPORTS_MAX * sizeof *names);
        struct dirent *e;
        while (names && n < REPORTS_MAX && (e = readdir(d)))
            if (srv_reports_name_ok(e->d_name) && (names[n] = strdup(e->d_name))) n++;
        closedir(d);
        if (!names) goto nomem;
        qsort(names, n, sizeof *names, cmp_names);
    }
    for (size_t i = 0; i < n; i++) {
        char err[256];
        int missing;
        json_t *rep = load_report(root, names[i], &missing, err, sizeof err);
        if (!rep) {
            /* A folder without report.json is not a report (a run's output, say); a broken one is said. */
            if (!missing && json_array_append_new(skipped, json_pack("{s:s, s:s}", "name", names[i], "error", err)))
                goto nomem;
            continue;
        }
        json_t *s = summary(root, names[i], rep);
        json_decref(rep);
        if (json_array_append_new(list, s)) goto nomem;
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    srv_reply_json(r, 200, json_pack("{s:o, s:o}", "reports", list, "skipped", skipped));
    return;
nomem:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    json_decref(list);
    json_decref(skipped);
    srv_reply_error(r, CORE_E_NOMEM, "out of memory listing the reports");
}

/* The report named by the route's first parameter: its root in root, or -1
 * after answering 400 (a bad name) or 404 (no such report). */
static int route_report(srv_req *r, char *root) {
    const char *name = r->param[0];
    char buf[SHOWN_MAX + 1], path[PATH_MAX];
    struct stat seen;
    if (!srv_reports_name_ok(name)) {
        srv_reply_error(r, CORE_E_BAD_REQUEST,
                        "'%s' is not a report name (letters, digits, '.', '_' and '-', not starting with '.', no '..')",
                        shown(name, buf, sizeof buf));
        return -1;
    }
    if (reports_root(r->ctx, root) || resolve(root, name, NULL, "report.json", path, &seen)) {
        srv_reply_error(r, CORE_E_NOT_FOUND, "no report named '%s' (GET /v1/reports lists them)", name);
        return -1;
    }
    return 0;
}

void srv_h_report(srv_req *r) {
    char root[PATH_MAX], path[PATH_MAX], err[256];
    if (route_report(r, root)) return;
    const char *name = r->param[0];
    int missing;
    json_t *rep = load_report(root, name, &missing, err, sizeof err);
    if (!rep) {
        if (missing) srv_reply_error(r, CORE_E_NOT_FOUND, "no report named '%s' (GET /v1/reports lists them)", name);
        else srv_reply_error(r, CORE_E_INTERNAL, "report '%s' is unreadable: %s", name, err);
        return;
    }
    json_t *md = NULL;
    struct stat seen;
    if (resolve(root, name, NULL, "report.md", path, &seen)) {
        md = json_null();
    } else {
        size_t len;
        char *text = read_small_file(path, &seen, REPORT_FILE_MAX, &len, err, sizeof err);
        if (!text) {
            json_decref(rep);
            srv_reply_error(r, CORE_E_INTERNAL, "report '%s': report.md: %s", name, err);
            return;
        }
        md = json_stringn(text, len);
        free(text);
        if (!md) {
            json_decref(rep);
            srv_reply_error(r, CORE_E_INTERNAL, "report '%s': report.md is not UTF-8 text", name);
            return;
        }
    }
    if (json_object_set_new(rep, "name", json_string(name)) || json_object_set_new(rep, "markdown", md)) {
        json_decref(rep);
        srv_reply_error(r, CORE_E_NOMEM, "out of memory");
        return;
    }
    srv_reply_json(r, 200, rep);
}

void srv_h_report_figure(srv_req *r) {
    char root[PATH_MAX], path[PATH_MAX], buf[SHOWN_MAX + 1];
    const char *file = r->param[1];
    if (!is_png_name(file)) {
        srv_reply_error(r, CORE_E_BAD_REQUEST,
                        "'%s' is not a figure name (letters, digits, '.', '_' and '-', ending in .png, "
                        "not starting with '.', no '..')",
                        shown(file, buf, sizeof buf));
        return;
    }
    if (route_report(r, root)) return;
    const char *name = r->param[0];
    struct stat seen, st;
    int fd = -1;
    if (resolve(root, name, "figures", file, path, &seen) || (fd = srv_open_resolved(path, &seen, &st)) < 0) {
        srv_reply_error(r, CORE_E_NOT_FOUND, "report '%s' has no figure '%s'", name, file);
        return;
    }
    srv_reply_fd(r, "image/png", fd, (uint64_t)st.st_size);
}
