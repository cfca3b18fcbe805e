/* core_reg.h -- the model registry: model folders loaded from the store, reference-counted, swapped atomically on reload. */
#ifndef LOUPE_CORE_REG_H
#define LOUPE_CORE_REG_H

#include <stdatomic.h>
#include <stddef.h>

#include <jansson.h>

#include "lt.h"
#include "mlp.h"

#define CORE_ERR_LEN 512

/* One loaded model. Every field is read-only once reg has published it, so
 * any number of request threads may use it at once; only the reference count
 * changes (core_model_retain/release). */
/* How an upload is brought to the model's input size (model.json input.resize). */
typedef enum {
    CORE_RESIZE_AREA,  /* MLPs: area-average the whole image to width x height */
    CORE_RESIZE_PAD,   /* "pad": area-average to src_w x src_h (28x28), pad with black, centred */
    CORE_RESIZE_CROP   /* "resize_crop": bilinear to resize_to x resize_to, centre crop */
} core_resize;

typedef struct core_model {
    char *name;               /* the folder's name */
    char *dir;                /* the folder's path */
    char *kind;               /* "mlp" or "torchscript" */
    int n_classes;
    char **classes;           /* [n_classes], names in index order */
    int channels, height, width;
    float mean, std;          /* channel 0's: x = (pixel in [0,1] - mean) / std */
    float mean_c[LT_MAX_CHANNELS], std_c[LT_MAX_CHANNELS]; /* [channels], the same per channel */
    core_resize resize;
    int src_w, src_h;         /* the gray grid before padding/resizing; JSON pixels come at this size */
    int resize_to;            /* CORE_RESIZE_CROP: the square side before the crop */
    mlp *net;                 /* kind "mlp": sizes[0] = channels*height*width, outputs = n_classes; else NULL */
    lt_model *cnn;            /* kind "torchscript": the shim's model; else NULL */
    const struct core_engine *engine; /* the kind's forward/gradient functions (core_engine.h) */
    double warm_ms;           /* the warm-up's time at load; 0 when none ran */
    int chunk;                /* images per engine call the warm-up found cheapest; 0 = the engine's */
    char *layers_json;        /* GET /v1/models/{m}/layers: [{index,name,type,conv,channels,height,width}] */
    int has_accuracy;
    double test_accuracy;     /* fraction in [0,1] from metrics.json, if has_accuracy */
    char *summary_json;       /* entry of GET /v1/models, rendered at load */
    char *detail_json;        /* GET /v1/models/{m}: manifest + metrics + history */
    /* core_samples.h: the test images this version gets wrong, set once on first use; owned */
    _Atomic(struct core_mistakes *) mistakes;
    atomic_int refs;
} core_model;

/* A snapshot of the store: the models of one load, sorted by name. */
typedef struct core_store core_store;

typedef struct core_reg core_reg;

/* A registry over the model store `dir`. default_name chooses the model behind
 * /predict (NULL = the best test accuracy). Nothing is loaded until core_reg_reload.
 * Returns NULL on allocation failure. The strings are copied. */
core_reg *core_reg_new(const char *dir, const char *default_name);
/* Free the registry and its current store; in-flight holders keep their references. */
void core_reg_free(core_reg *r);

/* Warm every model a reload loads with forward passes of batch 1 and of
 * max_batch (the largest the batcher forms) before it is published, so
 * /readyz and the first requests see a warm model. 0 (the default) turns it off. */
void core_reg_set_warmup(core_reg *r, int max_batch);

/* Rescan the store and swap the new set of models in atomically. Names that
 * start with '.' are never looked at (the writers' temporary folders). A folder
 * that fails to load (corrupt, half-written, gone since the scan listed it) is
 * skipped with a line on stderr and in the report; when the old set served a
 * model of that name, that version stays in the new set ("kept"). Every other
 * folder is loaded afresh; models whose folder is gone leave the set. Requests
 * holding models of the old set keep them until they release them.
 * Returns the number of models in the new set, or -1 (the old set stays) when
 * the store cannot be read, with a message in err. *report, when given, receives
 * {"ok": no folder failed, "loaded": [names loaded from disk],
 *  "skipped": [{"name", "error", "kept"}], "removed": [names no longer served],
 *  "models": [names served now]} (caller decrefs). */
int core_reg_reload(core_reg *r, json_t **report, char *err, size_t errlen);

/* The current snapshot, retained; never NULL after core_reg_new. Release it with
 * core_store_release. */
core_store *core_reg_acquire(core_reg *r);
void core_store_release(core_store *s);
int core_store_count(const core_store *s);
core_model *core_store_at(const core_store *s, int i);             /* borrowed from s */
core_model *core_store_find(const core_store *s, const char *name); /* borrowed, NULL if absent */
/* The default model of the snapshot (borrowed), or NULL (empty store, or the
 * configured default is absent). */
core_model *core_store_default(const core_store *s);
const char *core_reg_default_name(const core_reg *r);                      /* configured name or NULL */

/* The model called name (NULL: the default model), retained; NULL when there is
 * none. Release it with core_model_release. */
core_model *core_reg_get(core_reg *r, const char *name);
void core_model_retain(core_model *m);
void core_model_release(core_model *m);

/* Load one model folder (exposed for tests). Returns NULL with a reason in err. */
core_model *core_model_load(const char *dir, const char *name, char *err, size_t errlen);

#endif
