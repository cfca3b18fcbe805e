/* model_dir.h -- write an MLP model folder of the model store (the contract: docs/model-folder.md). */
#ifndef LOUPE_MODEL_DIR_H
#define LOUPE_MODEL_DIR_H

#include <jansson.h>
#include <stddef.h>

#include "mlp.h"

/* Create dir (and its parents) and write model.json (built here from net, name
 * and training), weights.safetensors, history.json and metrics.json (each when
 * not NULL). Every file is written whole under a temporary name and renamed.
 * Returns 0, or -1 with a message in err. Borrows every argument. */
int model_dir_write(const char *dir, const char *name, const mlp *net, json_t *training,
                    json_t *history, json_t *metrics, char *err, size_t errlen);

/* Write a JSON document to path atomically (temporary file + rename). */
int model_dir_write_json(const char *path, json_t *doc, char *err, size_t errlen);

/* mkdir -p. Returns 0, or -1 with a message in err. */
int model_dir_mkdirs(const char *dir, char *err, size_t errlen);

#endif
