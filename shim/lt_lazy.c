/* lt_lazy.c -- lt.h for builds with libtorch: loads the libtorch shim (libloupe_shim_torch.so)
 * on first use, so commands that never touch a TorchScript model (train-mlp, eval, an MLP-only
 * store) do not pay libtorch's start-up (about half a second) or its memory. */
#define _GNU_SOURCE
#include "lt.h"

#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Every function of lt.h: return type, name, parameters, argument names. */
#define LT_FUNCTIONS(X)                                                                        \
    X(int, lt_available, (void), ())                                                           \
    X(lt_model_params, lt_model_default_params, (void), ())                                    \
    X(lt_viz_params, lt_viz_default_params, (void), ())                                        \
    X(int, lt_set_threads, (int a, int b, char *e, size_t el), (a, b, e, el))                  \
    X(lt_model *, lt_model_load, (const char *p, const lt_model_params *q, char *e, size_t el), \
      (p, q, e, el))                                                                           \
    X(void, lt_model_free, (lt_model *m), (m))                                                 \
    X(lt_model_params, lt_model_input, (const lt_model *m), (m))                               \
    X(int, lt_model_n_classes, (const lt_model *m), (m))                                       \
    X(int, lt_model_n_layers, (const lt_model *m), (m))                                        \
    X(int, lt_layer_get_info, (const lt_model *m, int l, lt_layer_info *i, char *e, size_t el), \
      (m, l, i, e, el))                                                                        \
    X(int, lt_forward, (lt_model *m, const float *x, int n, float *o, char *e, size_t el),     \
      (m, x, n, o, e, el))                                                                     \
    X(int, lt_activations, (lt_model *m, const float *x, int l, float *o, size_t ol, char *e, \
                            size_t el), (m, x, l, o, ol, e, el))                               \
    X(int, lt_viz_n_frames, (const lt_viz_params *p), (p))                                     \
    X(int, lt_filter_viz, (lt_model *m, int l, int f, const float *s, const lt_viz_params *p, \
                           float *fr, size_t fl, float *tr, char *e, size_t el),               \
      (m, l, f, s, p, fr, fl, tr, e, el))                                                   \
    X(int, lt_model_splits, (const lt_model *m, char *e, size_t el), (m, e, el))              \
    X(int, lt_cam_default_layer, (const lt_model *m), (m))                                     \
    X(int, lt_explain_pass, (lt_model *m, const float *x, int n, int t, int gd, float *g,      \
                             float *o, int *ts, char *e, size_t el),                           \
      (m, x, n, t, gd, g, o, ts, e, el))                                                       \
    X(int, lt_gradcam, (lt_model *m, const float *x, int l, int t, float *lm, size_t lml,      \
                        float *c, float *o, int *to, char *e, size_t el),                      \
      (m, x, l, t, lm, lml, c, o, to, e, el))

#define DECLARE(ret, name, params, args) static ret(*p_##name) params;
LT_FUNCTIONS(DECLARE)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int loaded;               /* 1 once every symbol resolved */
/* lt_set_threads before the shim is loaded: applied as it loads, so a daemon
 * can choose torch's threads at start without loading libtorch for a store of
 * MLPs. Written only before the first load (start-up, one thread). */
static int want_threads, want_intra, want_inter;
static char why[512] = "the libtorch shim was not loaded";

/* The shim beside the running binary (installed: <prefix>/lib/loupe; the build tree: ../shim),
 * else where the build put it. Installed copies come first, so that an installed binary never
 * loads a build tree's shim that happens to still be there. */
static void *open_shim(void) {
    void *h;
    int failed = 0;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0 && (size_t)n < sizeof exe - 1) {
        exe[n] = '\0';
        const char *dir = dirname(exe);
        const char *tries[] = {"%s/../lib/loupe/libloupe_shim_torch.so", "%s/libloupe_shim_torch.so",
                               "%s/../shim/libloupe_shim_torch.so"};
        for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
            char path[PATH_MAX + 64];
            snprintf(path, sizeof path, tries[i], dir);
            if (access(path, F_OK)) continue;
            if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL))) return h;
            if (!failed++) snprintf(why, sizeof why, "cannot load the libtorch shim: %s", dlerror());
        }
    }
    if ((h = dlopen(LOUPE_SHIM_SO, RTLD_NOW | RTLD_LOCAL))) return h;
    /* The first shim found and refused says more than the build's path missing. */
    if (!failed) snprintf(why, sizeof why, "cannot load the libtorch shim: %s", dlerror());
    return NULL;
}

static void load(void) {
    void *h = open_shim();
    if (!h) return;
#define RESOLVE(ret, name, params, args)                                                     \
    *(void **)&p_##name = dlsym(h, #name);                                                   \
    if (!p_##name) {                                                                         \
        snprintf(why, sizeof why, "the libtorch shim lacks %s", #name);                      \
        return;                                                                              \
    }
    LT_FUNCTIONS(RESOLVE)
    loaded = 1;
    /* Before any model exists, setting torch's threads cannot fail for a reason
     * a caller could act on; the shim's own default (one thread) stands if it does. */
    if (want_threads) p_lt_set_threads(want_intra, want_inter, NULL, 0);
}

static int ready(char *err, size_t err_len) {
    pthread_once(&once, load);
    if (!loaded && err && err_len) snprintf(err, err_len, "%s", why);
    return loaded;
}

/* ==== The API: each call forwards to the shim, loading it the first time ==== */

int lt_available(void) { return ready(NULL, 0) && p_lt_available(); }

lt_model_params lt_model_default_params(void) {
    lt_model_params p;
    if (ready(NULL, 0)) return p_lt_model_default_params();
    memset(&p, 0, sizeof p);
    return p;
}

lt_viz_params lt_viz_default_params(void) {
    lt_viz_params p;
    if (ready(NULL, 0)) return p_lt_viz_default_params();
    memset(&p, 0, sizeof p);
    return p;
}

int lt_set_threads(int a, int b, char *e, size_t el) {
    if (!loaded) {
        want_threads = 1;
        want_intra = a;
        want_inter = b;
        return LT_OK;
    }
    return p_lt_set_threads(a, b, e, el);
}

lt_model *lt_model_load(const char *p, const lt_model_params *q, char *e, size_t el) {
    return ready(e, el) ? p_lt_model_load(p, q, e, el) : NULL;
}

/* A model exists only once the shim is loaded: these forward directly. */
void lt_model_free(lt_model *m) { if (m && ready(NULL, 0)) p_lt_model_free(m); }
lt_model_params lt_model_input(const lt_model *m) { ready(NULL, 0); return p_lt_model_input(m); }
int lt_model_n_classes(const lt_model *m) { return ready(NULL, 0) ? p_lt_model_n_classes(m) : 0; }
int lt_model_n_layers(const lt_model *m) { return ready(NULL, 0) ? p_lt_model_n_layers(m) : 0; }
int lt_layer_get_info(const lt_model *m, int l, lt_layer_info *i, char *e, size_t el) {
    return ready(e, el) ? p_lt_layer_get_info(m, l, i, e, el) : LT_ENOTORCH;
}
int lt_forward(lt_model *m, const float *x, int n, float *o, char *e, size_t el) {
    return ready(e, el) ? p_lt_forward(m, x, n, o, e, el) : LT_ENOTORCH;
}
int lt_activations(lt_model *m, const float *x, int l, float *o, size_t ol, char *e, size_t el) {
    return ready(e, el) ? p_lt_activations(m, x, l, o, ol, e, el) : LT_ENOTORCH;
}
int lt_viz_n_frames(const lt_viz_params *p) { return ready(NULL, 0) ? p_lt_viz_n_frames(p) : 0; }
int lt_filter_viz(lt_model *m, int l, int f, const float *s, const lt_viz_params *p, float *fr, size_t fl,
                  float *tr, char *e, size_t el) {
    return ready(e, el) ? p_lt_filter_viz(m, l, f, s, p, fr, fl, tr, e, el) : LT_ENOTORCH;
}
int lt_model_splits(const lt_model *m, char *e, size_t el) {
    return ready(e, el) ? p_lt_model_splits(m, e, el) : 0;
}
int lt_cam_default_layer(const lt_model *m) { return ready(NULL, 0) ? p_lt_cam_default_layer(m) : -1; }
int lt_explain_pass(lt_model *m, const float *x, int n, int t, int gd, float *g, float *o, int *ts, char *e,
                    size_t el) {
    return ready(e, el) ? p_lt_explain_pass(m, x, n, t, gd, g, o, ts, e, el) : LT_ENOTORCH;
}
int lt_gradcam(lt_model *m, const float *x, int l, int t, float *lm, size_t lml, float *c, float *o, int *to,
               char *e, size_t el) {
    return ready(e, el) ? p_lt_gradcam(m, x, l, t, lm, lml, c, o, to, e, el) : LT_ENOTORCH;
}
