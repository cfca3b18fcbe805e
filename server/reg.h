/* reg.h -- the model registry: model folders loaded from the store, reference-counted, swapped atomically on reload. */
#ifndef LOUPE_REG_H
#define LOUPE_REG_H

#include <stdatomic.h>
#include <stddef.h>

#include <jansson.h>

#include "lt.h"
#include "mlp.h"

#define REG_ERR_LEN 512

/* One loaded model. Every field is read-only once reg has published it, so
 * any number of request threads may use it at once; only the reference count
 * changes (reg_model_retain/release). */
/* How an upload is brought to the model's input size (model.json input.resize). */
typedef enum {
    REG_RESIZE_AREA,  /* MLPs: area-average the whole image to width x height */
    REG_RESIZE_PAD,   /* "pad": area-average to src_w x src_h (28x28), pad with black, centred */
    REG_RESIZE_CROP   /* "resize_crop": bilinear to resize_to x resize_to, centre crop */
} reg_resize;

typedef struct reg_model {
    char *name;               /* the folder's name */
    char *dir;                /* the folder's path */
    char *kind;               /* "mlp" or "torchscript" */
    int n_classes;
    char **classes;           /* [n_classes], names in index order */
    int channels, height, width;
    float mean, std;          /* channel 0's: x = (pixel in [0,1] - mean) / std */
    float mean_c[LT_MAX_CHANNELS], std_c[LT_MAX_CHANNELS]; /* [channels], the same per channel */
    reg_resize resize;
    int src_w, src_h;         /* the gray grid before padding/resizing; JSON pixels come at this size */
    int resize_to;            /* REG_RESIZE_CROP: the square side before the crop */
    mlp *net;                 /* kind "mlp": sizes[0] = channels*height*width, outputs = n_classes; else NULL */
    lt_model *cnn;            /* kind "torchscript": the shim's model; else NULL */
    char *layers_json;        /* GET /v1/models/{m}/layers: [{index,name,type,conv,channels,height,width}] */
    int has_accuracy;
    double test_accuracy;     /* fraction in [0,1] from metrics.json, if has_accuracy */
    char *summary_json;       /* entry of GET /v1/models, rendered at load */
    char *detail_json;        /* GET /v1/models/{m}: manifest + metrics + history */
    atomic_int refs;
} reg_model;

/* A snapshot of the store: the models of one load, sorted by name. */
typedef struct reg_store reg_store;

typedef struct reg reg;

/* A registry over the model store `dir`. default_name chooses the model behind
 * /predict (NULL = the best test accuracy). Nothing is loaded until reg_reload.
 * Returns NULL on allocation failure. The strings are copied. */
reg *reg_new(const char *dir, const char *default_name);
/* Free the registry and its current store; in-flight holders keep their references. */
void reg_free(reg *r);

/* Rescan the store and swap the new set of models in atomically. A folder that
 * fails to load is skipped with a line on stderr and in the report. Requests
 * holding models of the old set keep them until they release them.
 * Returns the number of models loaded, or -1 (the old set stays) when the
 * store cannot be read, with a message in err. *report, when given, receives
 * {"loaded": [names], "skipped": [{"name", "error"}]} (caller decrefs). */
int reg_reload(reg *r, json_t **report, char *err, size_t errlen);

/* The current snapshot, retained; never NULL after reg_new. Release it with
 * reg_store_release. */
reg_store *reg_acquire(reg *r);
void reg_store_release(reg_store *s);
int reg_store_count(const reg_store *s);
reg_model *reg_store_at(const reg_store *s, int i);             /* borrowed from s */
reg_model *reg_store_find(const reg_store *s, const char *name); /* borrowed, NULL if absent */
/* The default model of the snapshot (borrowed), or NULL (empty store, or the
 * configured default is absent). */
reg_model *reg_store_default(const reg_store *s);
const char *reg_default_name(const reg *r);                      /* configured name or NULL */

/* The model called name (NULL: the default model), retained; NULL when there is
 * none. Release it with reg_model_release. */
reg_model *reg_get(reg *r, const char *name);
void reg_model_retain(reg_model *m);
void reg_model_release(reg_model *m);

/* Load one model folder (exposed for tests). Returns NULL with a reason in err. */
reg_model *reg_model_load(const char *dir, const char *name, char *err, size_t errlen);

#endif
