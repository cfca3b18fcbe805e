/* model_dir.c -- the files of an MLP model folder. */
#include "model_dir.h"
#include "errbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fmnist.h"
#include "mlp_io.h"

int model_dir_mkdirs(const char *dir, char *err, size_t errlen) {
    char path[4096];
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

int model_dir_write_json(const char *path, json_t *doc, char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (json_dump_file(doc, tmp, JSON_INDENT(1) | JSON_REAL_PRECISION(9)) != 0) {
        errbuf_set(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        remove(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        errbuf_set(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

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

int model_dir_write(const char *dir, const char *name, const mlp *net, json_t *training,
                    json_t *history, json_t *metrics, char *err, size_t errlen) {
    char path[4200];
    if (model_dir_mkdirs(dir, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if (mlp_save(net, path, err, errlen)) return -1;
    json_t *m = manifest(name, net, training);
    if (!m) { errbuf_set(err, errlen, "out of memory building model.json"); return -1; }
    snprintf(path, sizeof path, "%s/model.json", dir);
    int rc = model_dir_write_json(path, m, err, errlen);
    json_decref(m);
    if (rc) return -1;
    if (history) {
        snprintf(path, sizeof path, "%s/history.json", dir);
        if (model_dir_write_json(path, history, err, errlen)) return -1;
    }
    if (metrics) {
        snprintf(path, sizeof path, "%s/metrics.json", dir);
        if (model_dir_write_json(path, metrics, err, errlen)) return -1;
    }
    return 0;
}
