/* srv_training.c -- the trainings route: status files read whole, checked field by field, stale ones left out. */
#include "srv_training.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATUS_MAX (64u << 10) /* bytes: the largest status file read */
#define TRAININGS_MAX 64       /* status files looked at by one listing */

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 255) return 0;
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e) return 0;
    return 1;
}

json_t *srv_training_entry(const json_t *st, double now) {
    if (!json_is_object(st)) return NULL;
    const json_t *name = json_object_get(st, "name"), *phase = json_object_get(st, "phase"),
                 *epoch = json_object_get(st, "epoch"), *epochs = json_object_get(st, "epochs"),
                 *progress = json_object_get(st, "progress"), *eta = json_object_get(st, "eta_seconds"),
                 *started = json_object_get(st, "started"), *updated = json_object_get(st, "updated");
    if (!json_is_string(name) || !name_ok(json_string_value(name))) return NULL;
    const char *ph = json_string_value(phase);
    if (!ph || (strcmp(ph, "training") && strcmp(ph, "testing") && strcmp(ph, "exporting"))) return NULL;
    if (!json_is_integer(epoch) || json_integer_value(epoch) < 0) return NULL;
    if (!json_is_null(epochs) && (!json_is_integer(epochs) || json_integer_value(epochs) < 1)) return NULL;
    if (!json_is_number(progress) || !(json_number_value(progress) >= 0 && json_number_value(progress) <= 1))
        return NULL;
    if (!json_is_null(eta) && (!json_is_number(eta) || !(json_number_value(eta) >= 0))) return NULL;
    if (!json_is_number(started) || !json_is_number(updated)) return NULL;
    double age = now - json_number_value(updated);
    if (age < 0) age = 0; /* a clock step, or written by another machine */
    if (age > SRV_TRAINING_STALE_S) return NULL;
    double elapsed = now - json_number_value(started);
    json_t *eta_now = json_null();
    if (json_is_number(eta)) {
        double left = json_number_value(eta) - age;
        eta_now = json_integer(left > 0 ? (json_int_t)(left + 0.5) : 0);
    }
    return json_pack("{s:O, s:s, s:O, s:O, s:f, s:o, s:I, s:I}", "name", name, "phase", ph, "epoch", epoch,
                     "epochs", epochs, "progress", json_number_value(progress), "eta_seconds", eta_now,
                     "elapsed_seconds", (json_int_t)(elapsed > 0 ? elapsed + 0.5 : 0), "updated_seconds_ago",
                     (json_int_t)(age + 0.5));
}

/* The document of dir/file when it is a regular file of at most STATUS_MAX
 * bytes holding JSON; NULL otherwise (being replaced, too large, not JSON). */
static json_t *read_status(int dir_fd, const char *file) {
    int fd = openat(dir_fd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return NULL;
    struct stat st;
    json_t *doc = NULL;
    char *buf = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > (off_t)STATUS_MAX) goto out;
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) goto out;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto out;
        got += (size_t)n;
    }
    doc = json_loadb(buf, got, 0, NULL);
out:
    free(buf);
    close(fd);
    return doc;
}

static int by_name(const void *a, const void *b) {
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "name")), json_string_value(json_object_get(y, "name")));
}

void srv_h_training(srv_req *r) {
    json_t *list = json_array();
    json_t *entries[TRAININGS_MAX];
    size_t n = 0;
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/%s", r->ctx->cfg->models_dir, SRV_TRAINING_DIR);
    DIR *d = len > 0 && (size_t)len < sizeof path ? opendir(path) : NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    struct dirent *e;
    while (d && n < TRAININGS_MAX && (e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        /* Hidden names are the writers' temporary files. */
        if (e->d_name[0] == '.' || nl < 6 || strcmp(e->d_name + nl - 5, ".json")) continue;
        json_t *st = read_status(dirfd(d), e->d_name);
        json_t *entry = srv_training_entry(st, now);
        json_decref(st);
        if (entry) entries[n++] = entry;
    }
    if (d) closedir(d);
    qsort(entries, n, sizeof entries[0], by_name);
    for (size_t i = 0; i < n; i++) {
        if (list) json_array_append(list, entries[i]);
        json_decref(entries[i]);
    }
    srv_reply_json(r, 200, list ? json_pack("{s:o}", "trainings", list) : NULL);
}
