/* core_reg.c -- model registry: load folders, keep an immutable snapshot, swap it under a mutex. */
#include "core_reg.h"
#include "core_ops.h"
#include "clock.h"
#include "core_engine.h"
#include "core_samples.h"
#include "errbuf.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mlp_io.h"
#include "log.h"

struct core_store {
    atomic_int refs;
    int n;
    core_model **models;   /* [n], sorted by name; the store holds one reference each */
    core_model *def;       /* borrowed from models, or NULL */
};

struct core_reg {
    char *dir;
    char *default_name;
    pthread_mutex_t lock;        /* guards cur: held only to read or swap the pointer */
    pthread_mutex_t reload_lock; /* one reload at a time */
    core_store *cur;
    int warm_batch;              /* warm-up batch size besides 1; 0 = no warm-up */
};

/* ==== Models ==== */

static char *path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static void model_free(core_model *m) {
    if (!m) return;
    free(m->name);
    free(m->dir);
    free(m->kind);
    if (m->classes)
        for (int i = 0; i < m->n_classes; i++) free(m->classes[i]);
    free(m->classes);
    mlp_free(m->net);
    lt_model_free(m->cnn);
    free(m->layers_json);
    free(m->summary_json);
    free(m->detail_json);
    core_mistakes_free(atomic_load(&m->mistakes));
    free(m);
}

void core_model_retain(core_model *m) {
    if (m) atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void core_model_release(core_model *m) {
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) model_free(m);
}

/* An optional JSON file of the folder: NULL when absent; a parse error of a
 * file that exists is reported in err and also returns NULL. */
static json_t *load_optional(const char *dir, const char *file, char *err, size_t errlen) {
    char *p = path_join(dir, file);
    if (!p) return NULL;
    json_t *j = NULL;
    struct stat st;
    if (stat(p, &st) == 0) {
        json_error_t je;
        j = json_load_file(p, JSON_REJECT_DUPLICATES, &je);
        if (!j) errbuf_set(err, errlen, "%s: line %d: %s", file, je.line, je.text);
    }
    free(p);
    return j;
}

static int get_int(json_t *obj, const char *key, int lo, int hi, int *out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return -1;
    *out = (int)x;
    return 0;
}

static int nomem(char *err, size_t errlen) {
    errbuf_set(err, errlen, "out of memory");
    return -1;
}

/* input.mean / input.std: a number, or an array of one (broadcast) or of
 * `channels` numbers; absent means 0 and 1. */
static int get_norm(json_t *input, int channels, core_model *m, char *err, size_t errlen) {
    static const char *const keys[2] = {"mean", "std"};
    for (int k = 0; k < 2; k++) {
        float *dst = k ? m->std_c : m->mean_c;
        json_t *v = json_object_get(input, keys[k]);
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if (v && n != 1 && n != (size_t)channels) {
            errbuf_set(err, errlen, "model.json: input.%s has %zu values for %d channels", keys[k], n, channels);
            return -1;
        }
        for (int c = 0; c < channels; c++) {
            json_t *e = json_is_array(v) ? json_array_get(v, n == 1 ? 0 : (size_t)c) : v;
            double d = k ? 1.0 : 0.0;
            /* Checked as the floats they become: 1e39 is a finite double but an
             * infinite float, and a std of 1e-50 a zero one. */
            if (v && (!json_is_number(e) || !isfinite(d = json_number_value(e)) || fabs(d) > FLT_MAX ||
                      (k && !((float)d > 0)))) {
                errbuf_set(err, errlen, "model.json: input mean/std must be finite float32 numbers, std > 0");
                return -1;
            }
            dst[c] = (float)d;
        }
    }
    m->mean = m->mean_c[0];
    m->std = m->std_c[0];
    return 0;
}

/* input.resize: how an upload reaches height x width. MLPs take the whole
 * image area-averaged; CNNs say "pad" (Fashion-MNIST's 28x28, padded) or
 * "resize_crop" (resize_to, then a centre crop of height x width). */
static int get_resize(json_t *input, int is_cnn, core_model *m, char *err, size_t errlen) {
    const char *rs = json_string_value(json_object_get(input, "resize"));
    m->src_w = m->width;
    m->src_h = m->height;
    m->resize = CORE_RESIZE_AREA;
    if (!is_cnn || !rs || !strcmp(rs, "area")) return 0;
    if (!strcmp(rs, "pad")) {
        /* The images the model was trained on are 28x28 (source_size may say otherwise). */
        int side = 28;
        if (json_object_get(input, "source_size") && get_int(input, "source_size", 1, 4096, &side)) {
            errbuf_set(err, errlen, "model.json: input.source_size must be a whole number in [1,4096]");
            return -1;
        }
        m->resize = CORE_RESIZE_PAD;
        m->src_w = side < m->width ? side : m->width;
        m->src_h = side < m->height ? side : m->height;
        return 0;
    }
    if (!strcmp(rs, "resize_crop")) {
        if (get_int(input, "resize_to", 1, 4096, &m->resize_to) || m->resize_to < m->width ||
            m->resize_to < m->height) {
            errbuf_set(err, errlen, "model.json: \"resize_crop\" needs input.resize_to >= width and height");
            return -1;
        }
        m->resize = CORE_RESIZE_CROP;
        m->src_w = m->src_h = 28; /* JSON pixels: a Fashion-MNIST image, resized as the trainer does */
        return 0;
    }
    errbuf_set(err, errlen, "model.json: input.resize \"%s\" is not \"pad\" or \"resize_crop\"", rs);
    return -1;
}

/* Kind "torchscript": model.ts through the shim, and the layer table the
 * visualisation routes use (the manifest's names, the shim's types and shapes). */
static int load_cnn(core_model *m, json_t *manifest, const char *dir, char *err, size_t errlen) {
    char lerr[CORE_ERR_LEN] = "";
    lt_model_params p = lt_model_default_params();
    p.channels = m->channels;
    p.height = m->height;
    p.width = m->width;
    for (int c = 0; c < m->channels; c++) {
        p.mean[c] = m->mean_c[c];
        p.std[c] = m->std_c[c];
    }
    char *path = path_join(dir, "model.ts");
    if (!path) return nomem(err, errlen);
    m->cnn = lt_model_load(path, &p, lerr, sizeof lerr);
    free(path);
    if (!m->cnn) {
        errbuf_set(err, errlen, "model.ts: %s", lerr);
        return -1;
    }
    if (lt_model_n_classes(m->cnn) != m->n_classes) {
        errbuf_set(err, errlen, "model.ts has %d outputs for %d classes", lt_model_n_classes(m->cnn), m->n_classes);
        return -1;
    }
    json_t *mlayers = json_object_get(manifest, "layers");
    json_t *layers = json_array();
    if (!layers) return nomem(err, errlen);
    int nl = lt_model_n_layers(m->cnn);
    for (int i = 0; i < nl; i++) {
        lt_layer_info li;
        if (lt_layer_get_info(m->cnn, i, &li, lerr, sizeof lerr)) {
            json_decref(layers);
            errbuf_set(err, errlen, "model.ts: %s", lerr);
            return -1;
        }
        char dflt[32];
        snprintf(dflt, sizeof dflt, "features.%d", i);
        const char *name = NULL;
        size_t j;
        json_t *e;
        json_array_foreach(mlayers, j, e) {
            if (json_integer_value(json_object_get(e, "index")) == i && json_is_integer(json_object_get(e, "index")))
                name = json_string_value(json_object_get(e, "name"));
        }
        if (json_array_append_new(layers, json_pack("{s:i, s:s, s:s, s:b, s:i, s:i, s:i}", "index", i, "name",
                                                    name ? name : dflt, "type", li.type, "conv", li.is_conv,
                                                    "channels", li.channels, "height", li.height, "width",
                                                    li.width))) {
            json_decref(layers);
            return nomem(err, errlen);
        }
    }
    m->layers_json = json_dumps(layers, JSON_COMPACT);
    json_decref(layers);
    return m->layers_json ? 0 : nomem(err, errlen);
}

/* Kind "mlp": weights.safetensors checked against the manifest's sizes. */
static int load_mlp(core_model *m, json_t *manifest, const char *dir, char *err, size_t errlen) {
    char merr[MLP_ERR_LEN] = "";
    json_t *jm = json_object_get(manifest, "mlp");
    json_t *sizes = json_object_get(jm, "sizes");
    const char *act_name = json_string_value(json_object_get(jm, "activation"));
    mlp_act act;
    if (!json_is_object(jm) || !json_is_array(sizes) || !act_name) {
        errbuf_set(err, errlen, "model.json: \"mlp\" needs \"activation\" and \"sizes\"");
        return -1;
    }
    if (mlp_act_parse(act_name, &act)) {
        errbuf_set(err, errlen, "model.json: unknown activation \"%s\"", act_name);
        return -1;
    }
    char *path = path_join(dir, "weights.safetensors");
    if (!path) return nomem(err, errlen);
    m->net = mlp_load(path, act, 0, merr, sizeof merr);
    free(path);
    if (!m->net) {
        errbuf_set(err, errlen, "weights.safetensors: %s", merr);
        return -1;
    }
    int nl = mlp_n_layers(m->net);
    if ((int)json_array_size(sizes) != nl + 1) {
        errbuf_set(err, errlen, "model.json lists %zu sizes, weights.safetensors has %d layers",
                json_array_size(sizes), nl);
        return -1;
    }
    for (int i = 0; i <= nl; i++) {
        json_t *s = json_array_get(sizes, (size_t)i);
        if (!json_is_integer(s) || json_integer_value(s) != mlp_size(m->net, i)) {
            errbuf_set(err, errlen, "model.json sizes[%d] does not match weights.safetensors (%d)", i,
                    mlp_size(m->net, i));
            return -1;
        }
    }
    if (mlp_n_inputs(m->net) != m->channels * m->height * m->width) {
        errbuf_set(err, errlen, "the network takes %d inputs, the input is %dx%dx%d", mlp_n_inputs(m->net),
                m->channels, m->height, m->width);
        return -1;
    }
    if (mlp_n_outputs(m->net) != m->n_classes) {
        errbuf_set(err, errlen, "the network has %d outputs for %d classes", mlp_n_outputs(m->net), m->n_classes);
        return -1;
    }
    if (!mlp_params_finite(m->net)) {
        errbuf_set(err, errlen, "weights.safetensors holds non-finite parameters");
        return -1;
    }

    return 0;
}

core_model *core_model_load(const char *dir, const char *name, char *err, size_t errlen) {
    json_t *manifest = NULL, *metrics = NULL, *history = NULL, *summary = NULL, *detail = NULL;
    char *path = NULL;
    core_model *m = calloc(1, sizeof *m);
    if (!m) goto nomem;
    atomic_init(&m->refs, 1);
    m->name = strdup(name);
    m->dir = strdup(dir);
    if (!m->name || !m->dir) goto nomem;

    path = path_join(dir, "model.json");
    if (!path) goto nomem;
    json_error_t je;
    manifest = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!manifest) {
        errbuf_set(err, errlen, "model.json: line %d: %s", je.line, je.text);
        goto fail;
    }
    if (!json_is_object(manifest)) {
        errbuf_set(err, errlen, "model.json is not a JSON object");
        goto fail;
    }
    const char *kind = json_string_value(json_object_get(manifest, "kind"));
    if (!kind) {
        errbuf_set(err, errlen, "model.json has no \"kind\"");
        goto fail;
    }
    if (strcmp(kind, "mlp") && strcmp(kind, "torchscript")) {
        errbuf_set(err, errlen, "kind \"%s\" is not supported by this daemon (\"mlp\" or \"torchscript\")", kind);
        goto fail;
    }
    if (!strcmp(kind, "torchscript") && !lt_available()) {
        errbuf_set(err, errlen, "this build has no libtorch (LOUPE_WITH_TORCH=OFF or libtorch-dev missing): "
                              "TorchScript models are not served; MLPs still are");
        goto fail;
    }
    if (!(m->kind = strdup(kind))) goto nomem;

    json_t *classes = json_object_get(manifest, "classes");
    if (!json_is_array(classes) || json_array_size(classes) < 2 || json_array_size(classes) > 100000) {
        errbuf_set(err, errlen, "model.json: \"classes\" must be an array of at least 2 names");
        goto fail;
    }
    m->n_classes = (int)json_array_size(classes);
    if (!(m->classes = calloc((size_t)m->n_classes, sizeof *m->classes))) goto nomem;
    for (int i = 0; i < m->n_classes; i++) {
        const char *c = json_string_value(json_array_get(classes, (size_t)i));
        if (!c) {
            errbuf_set(err, errlen, "model.json: classes[%d] is not a string", i);
            goto fail;
        }
        if (!(m->classes[i] = strdup(c))) goto nomem;
    }

    json_t *input = json_object_get(manifest, "input");
    if (!json_is_object(input) || get_int(input, "channels", 1, LT_MAX_CHANNELS, &m->channels) ||
        get_int(input, "height", 1, 4096, &m->height) || get_int(input, "width", 1, 4096, &m->width)) {
        errbuf_set(err, errlen, "model.json: \"input\" needs integer channels (1..%d), height and width",
                LT_MAX_CHANNELS);
        goto fail;
    }
    if (get_norm(input, m->channels, m, err, errlen)) goto fail;
    int is_cnn = !strcmp(kind, "torchscript");
    if (!is_cnn && m->channels != 1) {
        errbuf_set(err, errlen, "model.json: input has %d channels; MLPs here take grayscale (1)", m->channels);
        goto fail;
    }
    if (get_resize(input, is_cnn, m, err, errlen)) goto fail;

    if (is_cnn ? load_cnn(m, manifest, dir, err, errlen) : load_mlp(m, manifest, dir, err, errlen)) goto fail;
    m->engine = is_cnn ? &core_engine_torch : &core_engine_mlp;

    /* Optional files: a broken one is logged and left out, the model still serves. */
    char oerr[256] = "";
    metrics = load_optional(dir, "metrics.json", oerr, sizeof oerr);
    if (oerr[0]) log_line("model %s: ignoring %s", name, oerr);
    oerr[0] = 0;
    history = load_optional(dir, "history.json", oerr, sizeof oerr);
    if (oerr[0]) log_line("model %s: ignoring %s", name, oerr);
    json_t *acc = json_object_get(metrics, "test_accuracy");
    if (json_is_number(acc) && json_number_value(acc) >= 0 && json_number_value(acc) <= 1) {
        m->has_accuracy = 1;
        m->test_accuracy = json_number_value(acc);
    }

    summary = json_pack("{s:s, s:s, s:O, s:O, s:o}", "name", name, "kind", kind, "classes", classes, "input",
                        input, "test_accuracy", m->has_accuracy ? json_real(m->test_accuracy) : json_null());
    if (!summary) goto nomem;
    if (m->net && (json_object_set_new(summary, "parameters", json_integer((json_int_t)mlp_n_params(m->net))) ||
                   json_object_set_new(summary, "mlp", json_pack("{s:s, s:O}", "activation",
                                                                 mlp_act_name(mlp_activation(m->net)), "sizes",
                                                                 json_object_get(json_object_get(manifest, "mlp"),
                                                                                 "sizes")))))
        goto nomem;
    if (m->cnn && json_object_set_new(summary, "layers", json_integer(lt_model_n_layers(m->cnn)))) goto nomem;
    if (json_object_set_new(summary, "explain", core_explain_info(m))) goto nomem;
    detail = json_deep_copy(summary);
    if (!detail) goto nomem;
    if (json_object_set(detail, "manifest", manifest) ||
        json_object_set_new(detail, "metrics", metrics ? json_incref(metrics) : json_null()) ||
        json_object_set_new(detail, "history", history ? json_incref(history) : json_null()))
        goto nomem;
    m->summary_json = json_dumps(summary, JSON_COMPACT | JSON_REAL_PRECISION(15));
    m->detail_json = json_dumps(detail, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (!m->summary_json || !m->detail_json) goto nomem;

    json_decref(manifest);
    json_decref(metrics);
    json_decref(history);
    json_decref(summary);
    json_decref(detail);
    free(path);
    return m;

nomem:
    errbuf_set(err, errlen, "out of memory");
fail:
    json_decref(manifest);
    json_decref(metrics);
    json_decref(history);
    json_decref(summary);
    json_decref(detail);
    free(path);
    model_free(m);
    return NULL;
}

/* ==== Stores ==== */

static void store_free(core_store *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) core_model_release(s->models[i]);
    free(s->models);
    free(s);
}

void core_store_release(core_store *s) {
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) store_free(s);
}

int core_store_count(const core_store *s) {
    return s ? s->n : 0;
}

core_model *core_store_at(const core_store *s, int i) {
    return s && i >= 0 && i < s->n ? s->models[i] : NULL;
}

core_model *core_store_find(const core_store *s, const char *name) {
    if (!s || !name) return NULL;
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->models[mid]->name, name);
        if (!c) return s->models[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

core_model *core_store_default(const core_store *s) {
    return s ? s->def : NULL;
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(core_model *const *)a)->name, (*(core_model *const *)b)->name);
}

static void choose_default(core_store *s, const char *default_name) {
    s->def = NULL;
    if (default_name) {
        s->def = core_store_find(s, default_name);
        return;
    }
    for (int i = 0; i < s->n; i++) {
        core_model *m = s->models[i];
        if (!s->def || (m->has_accuracy && (!s->def->has_accuracy || m->test_accuracy > s->def->test_accuracy)))
            s->def = m;
    }
}

/* ==== The registry ==== */

core_reg *core_reg_new(const char *dir, const char *default_name) {
    core_reg *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->dir = strdup(dir);
    r->default_name = default_name ? strdup(default_name) : NULL;
    r->cur = calloc(1, sizeof *r->cur);
    if (!r->dir || (default_name && !r->default_name) || !r->cur) goto fail;
    atomic_init(&r->cur->refs, 1);
    if (pthread_mutex_init(&r->lock, NULL)) goto fail;
    if (pthread_mutex_init(&r->reload_lock, NULL)) {
        pthread_mutex_destroy(&r->lock);
        goto fail;
    }
    return r;
fail:
    free(r->dir);
    free(r->default_name);
    free(r->cur);
    free(r);
    return NULL;
}

void core_reg_free(core_reg *r) {
    if (!r) return;
    core_store_release(r->cur);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->reload_lock);
    free(r->dir);
    free(r->default_name);
    free(r);
}

void core_reg_set_warmup(core_reg *r, int max_batch) {
    r->warm_batch = max_batch;
}

const char *core_reg_default_name(const core_reg *r) {
    return r->default_name;
}

core_store *core_reg_acquire(core_reg *r) {
    pthread_mutex_lock(&r->lock);
    core_store *s = r->cur;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&r->lock);
    return s;
}

core_model *core_reg_get(core_reg *r, const char *name) {
    pthread_mutex_lock(&r->lock);
    core_model *m = name ? core_store_find(r->cur, name) : r->cur->def;
    core_model_retain(m);
    pthread_mutex_unlock(&r->lock);
    return m;
}

/* Add {"name", "error", "kept"} to the report's skipped list; a failed append only loses the report line. */
static void report_skip(json_t *report, const char *name, const char *why, int kept) {
    if (report)
        json_array_append_new(json_object_get(report, "skipped"),
                              json_pack("{s:s, s:s, s:b}", "name", name, "error", why, "kept", kept));
}

static void report_add(json_t *report, const char *list, const char *name) {
    if (report) json_array_append_new(json_object_get(report, list), json_string(name));
}

/* Room for one more model in s; -1 when the array cannot grow. */
static int store_reserve(core_store *s, int *cap) {
    if (s->n < *cap) return 0;
    int ncap = *cap ? *cap * 2 : 8;
    core_model **nm = realloc(s->models, (size_t)ncap * sizeof *nm);
    if (!nm) return -1;
    s->models = nm;
    *cap = ncap;
    return 0;
}

/* The model a store entry `name` of the folder sub becomes in the new set: a
 * fresh load, or, when the folder fails to load (corrupt, half-written, gone
 * since readdir listed it), the version prev served, retained. NULL (with the
 * reason logged and reported) when it fails and prev had none; NULL silently
 * for an entry that is no folder and was never served. */
static core_model *reload_one(core_reg *r, const core_store *prev, const char *sub, const char *name,
                              json_t *report) {
    core_model *old = core_store_find(prev, name), *m = NULL;
    char merr[CORE_ERR_LEN] = "";
    struct stat st;
    if (stat(sub, &st)) {
        if (!old) return NULL;
        errbuf_set(merr, sizeof merr, "the folder cannot be read: %s", strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        if (!old) return NULL;
        errbuf_set(merr, sizeof merr, "it is no longer a folder");
    } else {
        m = core_model_load(sub, name, merr, sizeof merr);
    }
    if (!m) {
        /* A folder caught half-written must not take a working model away: the
         * old version serves until a reload loads the folder whole. */
        log_line("model %s: skipped: %s%s", name, merr, old ? "; the version loaded before keeps serving" : "");
        report_skip(report, name, merr, old != NULL);
        core_model_retain(old);
        return old;
    }
    /* Warm before it is published: the first passes of a model (libtorch's
     * profiling runs, first-touch page faults) are not a client's to wait for. */
    core_fail wf;
    double tw = clock_now();
    if (r->warm_batch > 0 && core_model_warm(m, r->warm_batch, &wf))
        log_line("model %s: warm-up failed (%s); serving it cold", m->name, wf.msg);
    else if (r->warm_batch > 0)
        m->warm_ms = (clock_now() - tw) * 1e3;
    return m;
}

int core_reg_reload(core_reg *r, json_t **report_out, char *err, size_t errlen) {
    json_t *report = NULL;
    if (report_out) {
        report = json_pack("{s:[], s:[], s:[], s:[]}", "loaded", "skipped", "removed", "models");
        *report_out = NULL;
    }
    core_store *s = calloc(1, sizeof *s), *prev = NULL;
    DIR *d = NULL;
    int cap = 0;
    if (!s) goto nomem;
    atomic_init(&s->refs, 1);

    pthread_mutex_lock(&r->reload_lock);
    /* Only this reload can swap r->cur until it unlocks: prev is the set it replaces. */
    prev = core_reg_acquire(r);
    d = opendir(r->dir);
    if (!d) {
        errbuf_set(err, errlen, "cannot read the model store %s: %s", r->dir, strerror(errno));
        core_store_release(prev);
        pthread_mutex_unlock(&r->reload_lock);
        goto fail;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        /* Hidden names are the writers' temporary folders (.NAME.tmp-PID), never models. */
        if (e->d_name[0] == '.') continue;
        if (store_reserve(s, &cap)) {
            log_line("model %s: skipped: out of memory", e->d_name);
            report_skip(report, e->d_name, "out of memory", 0);
            continue;
        }
        char *sub = path_join(r->dir, e->d_name);
        if (!sub) continue;
        core_model *m = reload_one(r, prev, sub, e->d_name, report);
        free(sub);
        if (m) s->models[s->n++] = m;
    }
    closedir(d);
    if (s->n) qsort(s->models, (size_t)s->n, sizeof *s->models, by_name);
    choose_default(s, r->default_name);

    pthread_mutex_lock(&r->lock);
    core_store *old = r->cur;
    r->cur = s;
    pthread_mutex_unlock(&r->lock);
    core_store_release(old);

    for (int i = 0; i < s->n; i++) {
        core_model *m = s->models[i];
        report_add(report, "models", m->name);
        if (core_store_find(prev, m->name) == m) continue; /* kept: logged as skipped above */
        char size[64], acc[64] = "";
        if (m->net) snprintf(size, sizeof size, "%zu parameters", mlp_n_params(m->net));
        else snprintf(size, sizeof size, "%d layers, input %dx%dx%d", m->cnn ? lt_model_n_layers(m->cnn) : 0,
                      m->channels, m->height, m->width);
        if (m->has_accuracy) snprintf(acc, sizeof acc, ", test accuracy %.4f", m->test_accuracy);
        char chunk[48] = "";
        if (m->chunk) snprintf(chunk, sizeof chunk, ", %d images per pass at most", m->chunk);
        log_line("model %s: loaded (%s, %s%s)%s, warmed up in %.1f ms%s", m->name, m->kind, size, acc,
                 m == s->def ? ", default" : "", m->warm_ms, chunk);
        report_add(report, "loaded", m->name);
    }
    for (int i = 0; i < core_store_count(prev); i++) {
        const char *name = core_store_at(prev, i)->name;
        if (core_store_find(s, name)) continue;
        log_line("model %s: removed (its folder is gone)", name);
        report_add(report, "removed", name);
    }
    core_store_release(prev);
    if (r->default_name && !s->def) log_line("default model %s is not in the store", r->default_name);
    if (report) json_object_set_new(report, "ok", json_boolean(json_array_size(json_object_get(report, "skipped")) == 0));
    int n = s->n;
    /* Only now: s belongs to r->cur, which another reload could release. */
    pthread_mutex_unlock(&r->reload_lock);
    if (report_out) *report_out = report;
    return n;

nomem:
    errbuf_set(err, errlen, "out of memory");
fail:
    free(s);
    json_decref(report);
    return -1;
}
