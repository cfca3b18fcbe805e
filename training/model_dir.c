/* model_dir.c -- the files of an MLP model folder, and writing a folder whole or not at all. */
#define _GNU_SOURCE
#include "model_dir.h"
#include "errbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmnist.h"
#include "mlp_io.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int model_dir_mkdirs(const char *dir, char *err, size_t errlen) {
    char path[4096];
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) {
        errbuf_set(err, errlen, "path too long: %s", dir);
        return -1;
    }
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST) {
                errbuf_set(err, errlen, "cannot create %s: %s", path, strerror(errno));
                return -1;
            }
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}

/* ==== Durable files ==== */

/* fsync the file or folder at path. Returns 0, or -1 with errno set. */
static int sync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Write len bytes to path.tmp, fsync it and rename it to path. On error the
 * temporary file is removed and the message names it with the reason
 * (e.g. "No space left on device"). */
static int write_whole(const char *path, const char *data, size_t len, char *err, size_t errlen) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errbuf_set(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        errbuf_set(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) goto fail;
        done += (size_t)n;
    }
    if (fsync(fd)) goto fail;
    if (close(fd)) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path)) {
        errbuf_set(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
fail:
    errbuf_set(err, errlen, "cannot write %s: %s", tmp, strerror(errno ? errno : EIO));
    if (fd >= 0) close(fd);
    remove(tmp);
    return -1;
}

int model_dir_write_json(const char *path, json_t *doc, char *err, size_t errlen) {
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_REAL_PRECISION(9));
    if (!text) {
        errbuf_set(err, errlen, "out of memory writing %s", path);
        return -1;
    }
    int rc = write_whole(path, text, strlen(text), err, errlen);
    free(text);
    return rc;
}

/* ==== Folders written whole ==== */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0; /* go on: remove what can be removed */
}

/* rm -r path, without following links. */
static void remove_tree(const char *path) {
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int sync_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)ftw;
    if (flag != FTW_F && flag != FTW_DP) return 0;
    if (flag == FTW_F && !S_ISREG(st->st_mode)) return 0;
    return sync_path(path) ? -1 : 0;
}

/* The folder path's parent and last component, trailing slashes ignored.
 * Returns -1 when path names no folder a writer could replace ("", "/", ".", ".."). */
static int split_path(const char *path, char *parent, size_t plen, char *base, size_t blen) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t bl = n - b;
    if (bl == 0 || (bl == 1 && path[b] == '.') || (bl == 2 && !strncmp(path + b, "..", 2))) return -1;
    if (bl >= blen || b + 2 > plen) return -1;
    memcpy(base, path + b, bl);
    base[bl] = 0;
    if (b == 0) {
        snprintf(parent, plen, ".");
    } else {
        size_t pl = b > 1 ? b - 1 : 1; /* "/x" has the parent "/" */
        memcpy(parent, path, pl);
        parent[pl] = 0;
    }
    return 0;
}

/* dir, or the folder it names when it is a symbolic link (into buf): a link to
 * a folder is kept, and the folder it points to is the one replaced. */
static const char *resolve_link(const char *dir, char *buf) {
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISLNK(st.st_mode) && realpath(dir, buf) ? buf : dir;
}

int model_dir_begin(const char *dir, char *tmp, size_t tmplen, char *err, size_t errlen) {
    char parent[PATH_MAX], base[NAME_MAX + 1], target[PATH_MAX];
    dir = resolve_link(dir, target);
    if (split_path(dir, parent, sizeof parent, base, sizeof base)) {
        errbuf_set(err, errlen, "cannot write a model folder at \"%s\"", dir);
        return -1;
    }
    if (model_dir_mkdirs(parent, err, errlen)) return -1;
    if (snprintf(tmp, tmplen, "%s/.%s.tmp-%ld", parent, base, (long)getpid()) >= (int)tmplen) {
        errbuf_set(err, errlen, "path too long: %s", dir);
        return -1;
    }
    remove_tree(tmp); /* left by a killed writer that had this process id */
    if (mkdir(tmp, 0755)) {
        errbuf_set(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    return 0;
}

void model_dir_abort(const char *tmp) {
    if (tmp && tmp[0]) remove_tree(tmp);
}

/* Move dir/name to to/name when there is one; 1 if moved, 0 if absent, -1 on error. */
static int carry_entry(const char *from, const char *to, const char *name, char *err, size_t errlen) {
    char src[PATH_MAX], dst[PATH_MAX];
    struct stat st;
    snprintf(src, sizeof src, "%s/%s", from, name);
    snprintf(dst, sizeof dst, "%s/%s", to, name);
    if (lstat(src, &st)) return 0;
    if (lstat(dst, &st) == 0) return 0; /* the new folder has its own */
    if (rename(src, dst)) {
        errbuf_set(err, errlen, "cannot move %s into the new folder: %s", src, strerror(errno));
        return -1;
    }
    return 1;
}

int model_dir_commit(const char *tmp, const char *dir, const char *const *carry, char *err, size_t errlen) {
    char parent[PATH_MAX], base[NAME_MAX + 1], target[PATH_MAX], aside[PATH_MAX + NAME_MAX + 64];
    int moved[8] = {0}, n_carry = 0;
    struct stat st;
    dir = resolve_link(dir, target);
    if (split_path(dir, parent, sizeof parent, base, sizeof base)) {
        errbuf_set(err, errlen, "cannot write a model folder at \"%s\"", dir);
        goto fail;
    }
    int exists = stat(dir, &st) == 0;
    if (exists && !S_ISDIR(st.st_mode)) {
        errbuf_set(err, errlen, "%s exists and is not a folder", dir);
        goto fail;
    }
    /* Every byte on disk before the folder becomes visible under its name. */
    if (nftw(tmp, sync_entry, 16, FTW_DEPTH | FTW_PHYS)) {
        errbuf_set(err, errlen, "cannot sync %s: %s", tmp, strerror(errno));
        goto fail;
    }
    for (; exists && carry && n_carry < 8 && carry[n_carry]; n_carry++) {
        moved[n_carry] = carry_entry(dir, tmp, carry[n_carry], err, errlen);
        if (moved[n_carry] < 0) goto restore;
    }
    if (!exists) {
        if (rename(tmp, dir)) {
            errbuf_set(err, errlen, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
            goto restore;
        }
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        /* One step: the old folder now has the temporary name. */
        remove_tree(tmp);
    } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        /* A file system without the exchange: the old folder aside, the new one
         * in, the old one removed. A crash between the two renames leaves no
         * folder under the name and the old one whole at .NAME.old-PID. */
        snprintf(aside, sizeof aside, "%s/.%s.old-%ld", parent, base, (long)getpid());
        remove_tree(aside);
        if (rename(dir, aside)) {
            errbuf_set(err, errlen, "cannot move %s aside: %s", dir, strerror(errno));
            goto restore;
        }
        if (rename(tmp, dir)) {
            errbuf_set(err, errlen, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
            rename(aside, dir);
            goto restore;
        }
        remove_tree(aside);
    } else {
        errbuf_set(err, errlen, "cannot replace %s: %s", dir, strerror(errno));
        goto restore;
    }
    /* The rename itself durable; a failure here changes nothing a reader sees. */
    sync_path(parent);
    return 0;

restore:
    for (int i = 0; i < n_carry; i++)
        if (moved[i] > 0) carry_entry(tmp, dir, carry[i], NULL, 0);
fail:
    remove_tree(tmp);
    return -1;
}

/* ==== MLP folders ==== */

static json_t *manifest(const char *name, const mlp *net, json_t *training) {
    json_t *classes = json_array(), *sizes = json_array();
    for (int i = 0; i < FMNIST_CLASSES; i++) json_array_append_new(classes, json_string(fmnist_class_names[i]));
    for (int i = 0; i <= mlp_n_layers(net); i++) json_array_append_new(sizes, json_integer(mlp_size(net, i)));
    return json_pack("{s:s, s:s, s:o, s:{s:i, s:i, s:i, s:[f], s:[f], s:s, s:s}, s:{s:s, s:o}, s:[], s:O}",
                     "name", name, "kind", "mlp", "classes", classes,
                     "input", "channels", 1, "height", 28, "width", 28, "mean", 0.0, "std", 1.0,
                     "resize", "area", "invert", "auto",
                     "mlp", "activation", mlp_act_name(mlp_activation(net)), "sizes", sizes,
                     "layers", "training", training ? training : json_null());
}

/* The files of the folder, written into tmp. */
static int write_files(const char *tmp, const char *name, const mlp *net, json_t *training, json_t *history,
                       json_t *metrics, char *err, size_t errlen) {
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/weights.safetensors", tmp);
    if (mlp_save(net, path, err, errlen)) return -1;
    json_t *m = manifest(name, net, training);
    if (!m) {
        errbuf_set(err, errlen, "out of memory building model.json");
        return -1;
    }
    snprintf(path, sizeof path, "%s/model.json", tmp);
    int rc = model_dir_write_json(path, m, err, errlen);
    json_decref(m);
    if (rc) return -1;
    if (history) {
        snprintf(path, sizeof path, "%s/history.json", tmp);
        if (model_dir_write_json(path, history, err, errlen)) return -1;
    }
    if (metrics) {
        snprintf(path, sizeof path, "%s/metrics.json", tmp);
        if (model_dir_write_json(path, metrics, err, errlen)) return -1;
    }
    return 0;
}

int model_dir_write(const char *dir, const char *name, const mlp *net, json_t *training,
                    json_t *history, json_t *metrics, char *err, size_t errlen) {
    /* The trainer's own checkpoints (--checkpoint-at) live in the folder it replaces. */
    static const char *const carry[] = {"checkpoints", NULL};
    char tmp[PATH_MAX], why[512] = "";
    if (model_dir_begin(dir, tmp, sizeof tmp, why, sizeof why)) goto fail;
    if (write_files(tmp, name, net, training, history, metrics, why, sizeof why)) {
        model_dir_abort(tmp);
        goto fail;
    }
    if (model_dir_commit(tmp, dir, carry, why, sizeof why)) goto fail;
    return 0;
fail:
    errbuf_set(err, errlen, "writing the model folder %s: %s (the folder was left as it was)", dir, why);
    return -1;
}
